//! `ingest_file` on small files: what it keeps, what it refuses and why, and the schema it
//! learns. (The ingest function's end-to-end behaviour, with the store and the queue, is in
//! functions/ingest/tests.)

use super::*;
use crate::dataset::profile::BINS;
use crate::dataset::{DatasetError, Format};

fn config(label: &str, task: TaskKind) -> IngestConfig {
    IngestConfig {
        label: label.to_string(),
        task,
        delimiter: b',',
        null_values: vec![String::new(), "NA".to_string()],
        columns: BTreeMap::new(),
    }
}

/// Ingests `csv` and returns the output (its files gone) and the rejected lines.
fn ingest(csv: &str, config: &IngestConfig) -> Result<(IngestOutput, Vec<String>), DatasetError> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("in.csv");
    std::fs::write(&path, csv).unwrap();
    let out = ingest_file(&path, Format::Csv, config, dir.path(), &|_| {})?;
    let rejected = std::fs::read_to_string(&out.rejected_path)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    // The directory goes with this function; the schema and profile are in memory.
    Ok((out, rejected))
}

#[test]
fn bad_rows_are_rejected_with_their_line_and_column_and_the_rest_kept() {
    // 200 good rows, then a word where x is a number (under 1 %, so x is still numeric)
    // and a row one field short.
    let mut csv = String::from("x,color,y\n");
    for i in 0..200 {
        let color = if i % 2 == 0 { "red" } else { "blue" };
        csv.push_str(&format!("{}.5,{color},{}\n", i + 1, i % 2));
    }
    csv.push_str("oops,red,1\n3.5,red\n");
    let (out, rejected) = ingest(&csv, &config("y", TaskKind::Binary)).unwrap();
    assert_eq!(out.profile.rows, 200);
    assert_eq!(out.profile.rejected, 2);
    assert_eq!(rejected.len(), 2);
    let first: serde_json::Value = serde_json::from_str(&rejected[0]).unwrap();
    assert_eq!(first["line"], 202, "{first}");
    assert_eq!(first["reasons"][0]["column"], "x", "{first}");
    let second: serde_json::Value = serde_json::from_str(&rejected[1]).unwrap();
    assert_eq!(second["line"], 203, "{second}");
    assert_eq!(second["reasons"][0]["reason"], "expected 3 fields, found 2");
    let x = out.schema.column("x").unwrap();
    assert!(x.kind.is_numeric(), "{x:?}");
    assert_eq!(
        (x.min, x.max),
        (Some(1.5), Some(200.5)),
        "bounds learned from the rows"
    );
    let color = out.schema.column("color").unwrap();
    assert_eq!(
        color.values.as_deref(),
        Some(&["blue".to_string(), "red".to_string()][..])
    );
}

#[test]
fn a_missing_label_or_declared_column_is_refused_naming_what_exists() {
    let csv = "a,b\n1,2\n";
    match ingest(csv, &config("y", TaskKind::Binary)) {
        Err(DatasetError::MissingLabel { label, available }) => {
            assert_eq!(label, "y");
            assert_eq!(available, "a, b");
        }
        other => panic!("{:?}", other.map(|o| o.0.profile)),
    }
    let mut declared = config("a", TaskKind::Regression);
    declared
        .columns
        .insert("c".to_string(), toml::from_str("type = \"float\"").unwrap());
    match ingest(csv, &declared) {
        Err(DatasetError::MissingColumn { column, .. }) => assert_eq!(column, "c"),
        other => panic!("{:?}", other.map(|o| o.0.profile)),
    }
}

#[test]
fn a_file_with_no_valid_row_or_one_class_is_refused_whole() {
    // x is declared a float: words in it are refused row by row, and here every row.
    let mut declared = config("y", TaskKind::Binary);
    declared
        .columns
        .insert("x".to_string(), toml::from_str("type = \"float\"").unwrap());
    let csv = "x,y\nbad,1\nworse,0\n";
    match ingest(csv, &declared) {
        Err(DatasetError::NoValidRows {
            rejected,
            first_line,
            ..
        }) => assert_eq!((rejected, first_line), (2, 2)),
        other => panic!("{:?}", other.map(|o| o.0.profile)),
    }
    let one_class = "x,y\n1,1\n2,1\n";
    match ingest(one_class, &config("y", TaskKind::Binary)) {
        Err(e @ DatasetError::LabelClasses { .. }) => {
            assert!(e.to_string().contains("exactly 2"), "{e}");
        }
        other => panic!("{:?}", other.map(|o| o.0.profile)),
    }
}

#[test]
fn a_schema_the_first_rows_mislead_is_corrected_by_the_whole_file() {
    // Past the rows the schema is guessed from: x gains decimals, z its first missing values,
    // and bad labels land in several batches of the parallel pass.
    let rows = GUESS_ROWS as usize + 10_000;
    let mut csv = String::from("x,z,y\n");
    let mut bad_lines = Vec::new();
    for i in 0..rows {
        let x = if i > GUESS_ROWS as usize + 100 && i % 7 == 0 {
            format!("{}.5", i % 100)
        } else {
            (i % 100).to_string()
        };
        let z = if i > GUESS_ROWS as usize && i % 11 == 0 {
            "NA".to_string()
        } else {
            (i % 3).to_string()
        };
        let y = if i % 9_000 == 4_000 {
            bad_lines.push(i as u64 + 2);
            ""
        } else if i % 2 == 0 {
            "a"
        } else {
            "b"
        };
        csv.push_str(&format!("{x},{z},{y}\n"));
    }
    let (out, rejected) = ingest(&csv, &config("y", TaskKind::Binary)).unwrap();
    let column = |name: &str| out.schema.columns.iter().find(|c| c.name == name).unwrap();
    assert_eq!(column("x").kind, ColumnType::Float);
    assert!(!column("x").nullable);
    assert_eq!(column("z").kind, ColumnType::Integer);
    assert!(column("z").nullable);
    // Rejected rows come out in file order, each with its line.
    let lines: Vec<u64> = rejected
        .iter()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["line"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(lines, bad_lines);
    assert_eq!(out.profile.rows, (rows - bad_lines.len()) as u64);
    let x = &out.profile.columns["x"];
    assert_eq!(x.max, Some(99.5));
    let histogram = x.histogram.as_ref().unwrap();
    assert_eq!(histogram.counts.iter().sum::<u64>(), x.count);
    assert_eq!((histogram.edges[0], histogram.edges[BINS]), (0.0, 99.5));
    let z = &out.profile.columns["z"];
    assert!(z.missing > 0);
    assert_eq!(z.count + z.missing, out.profile.rows);
}
