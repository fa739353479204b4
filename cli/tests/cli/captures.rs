//! `lambdaml captures export` on real captures: a model trained on the breast-cancer data,
//! its rows scored through the score function with capture on, one refused request, and
//! the export read back as CSV and as Parquet.

use std::path::Path;

use serde_json::Value;

use crate::bin::{lambdaml, ok, repo, train_breast_cancer};

/// `lambdaml captures export --model breast-cancer --out OUT EXTRA…`, which must succeed.
fn export(dir: &Path, out: &str, extra: &[&str]) -> Value {
    let mut args = vec![
        "captures",
        "export",
        "--model",
        "breast-cancer",
        "--out",
        out,
    ];
    args.extend(extra);
    ok(dir, &args)
}

#[test]
fn captures_export_to_csv_and_parquet_with_feature_names_and_refused_requests() {
    let dir = tempfile::tempdir().unwrap();
    train_breast_cancer(dir.path());
    let data = repo().join("data/sklearn_breast_cancer.csv");
    // 20 rows scored, then a file whose feature is not a number (refused, captured).
    let text = std::fs::read_to_string(&data).unwrap();
    let rows: Vec<&str> = text.lines().take(21).collect();
    std::fs::write(dir.path().join("rows.csv"), rows.join("\n")).unwrap();
    let mut bad: Vec<String> = text.lines().take(2).map(str::to_string).collect();
    bad[1] = bad[1].replacen("17.99", "lots", 1);
    std::fs::write(dir.path().join("bad.csv"), bad.join("\n")).unwrap();
    ok(
        dir.path(),
        &["predict", "--model", "breast-cancer", "--input", "rows.csv"],
    );
    let (refused, _, _) = lambdaml(
        dir.path(),
        &["predict", "--model", "breast-cancer", "--input", "bad.csv"],
    );
    assert!(!refused, "a non-numeric feature must be refused");

    let done = export(dir.path(), "captures.csv", &[]);
    assert_eq!(done["rows"], 21, "{done}");
    assert_eq!(done["requests"], 2, "{done}");
    assert_eq!(done["refused"], 1, "{done}");
    let mut csv = csv::Reader::from_path(dir.path().join("captures.csv")).unwrap();
    let header: Vec<String> = csv.headers().unwrap().iter().map(str::to_string).collect();
    for column in [
        "request_id",
        "version",
        "status",
        "mean radius",
        "worst symmetry",
        "label",
        "error",
    ] {
        assert!(
            header.contains(&column.to_string()),
            "{column} missing from {header:?}"
        );
    }
    let at = |name: &str| header.iter().position(|h| h == name).unwrap();
    let records: Vec<csv::StringRecord> = csv.records().map(Result::unwrap).collect();
    assert_eq!(records.len(), 21);
    let scored: Vec<&csv::StringRecord> = records
        .iter()
        .filter(|r| &r[at("status")] == "200")
        .collect();
    assert_eq!(scored.len(), 20);
    // The first scored row is the file's first row, under the feature names.
    assert_eq!(&scored[0][at("mean radius")], "17.99");
    assert_eq!(&scored[0][at("row")], "0");
    assert!(["0", "1"].contains(&&scored[0][at("label")]));
    let p: f64 = scored[0][at("p(0)")].parse::<f64>().unwrap()
        + scored[0][at("p(1)")].parse::<f64>().unwrap();
    assert!((p - 1.0).abs() < 1e-9, "probabilities sum to {p}");
    let refused: Vec<&csv::StringRecord> = records
        .iter()
        .filter(|r| &r[at("status")] != "200")
        .collect();
    assert_eq!(refused.len(), 1);
    assert!(
        refused[0][at("error")].contains("mean radius"),
        "{:?}",
        &refused[0][at("error")]
    );

    // The same table as Parquet, numbers as doubles.
    let parquet_done = export(dir.path(), "captures.parquet", &[]);
    // CSV requests are captured as the text sent; every value of them is a number.
    assert_eq!(parquet_done["non_numeric_values"], 0, "{parquet_done}");
    let file = std::fs::File::open(dir.path().join("captures.parquet")).unwrap();
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
        .unwrap()
        .build()
        .unwrap();
    let batches: Vec<_> = reader.map(Result::unwrap).collect();
    assert_eq!(batches.iter().map(|b| b.num_rows()).sum::<usize>(), 21);
    let schema = batches[0].schema();
    let radius = schema.field_with_name("mean radius").unwrap();
    assert_eq!(radius.data_type(), &arrow_schema::DataType::Float64);
    let status = batches[0].column_by_name("status").unwrap();
    let status = status
        .as_any()
        .downcast_ref::<arrow_array::Int64Array>()
        .unwrap();
    let first = (0..status.len()).find(|&i| status.value(i) == 200).unwrap();
    let radius = batches[0].column_by_name("mean radius").unwrap();
    let radius = radius
        .as_any()
        .downcast_ref::<arrow_array::Float64Array>()
        .unwrap();
    assert_eq!(radius.value(first), 17.99);

    // A window that ends before the traffic: nothing but the header.
    let done = export(dir.path(), "none.csv", &["--to", "2000-01-01T00:00:00Z"]);
    assert_eq!(done["rows"], 0);
    // Mistakes a user makes: an unknown model, an unknown extension, a bad time.
    for (args, says) in [
        (
            vec!["--model", "breast-cancr", "--out", "x.csv"],
            "no model",
        ),
        (
            vec!["--model", "breast-cancer", "--out", "x.xlsx"],
            ".csv or .parquet",
        ),
        (
            vec![
                "--model",
                "breast-cancer",
                "--out",
                "x.csv",
                "--from",
                "yesterday",
            ],
            "RFC 3339",
        ),
    ] {
        let mut all = vec!["captures", "export"];
        all.extend(args);
        let (success, stdout, stderr) = lambdaml(dir.path(), &all);
        assert!(!success);
        assert!(
            format!("{stdout}{stderr}").contains(says),
            "{all:?}: {stdout}{stderr}"
        );
    }
}
