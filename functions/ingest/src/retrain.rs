//! The retraining data: a base version's rows and the labelled captured rows, as one CSV.

use std::path::Path;

use lambdaml::dataset::read_parquet;
use lambdaml::spec::RetrainData;
use lambdaml::stage::StageError;

/// Writes the retraining CSV; returns (rows, sha256 hex of the file).
pub(crate) fn build_retrain_csv(
    base: &Path,
    schema: &lambdaml::dataset::Schema,
    labelled: Option<&[u8]>,
    data: RetrainData,
    window_rows: usize,
    delimiter: u8,
    out: &Path,
) -> Result<(usize, String), StageError> {
    use lambdaml::dataset::ColumnType;
    let table = read_parquet(base).map_err(StageError::invalid)?;
    let kinds: Vec<Option<ColumnType>> = table
        .names
        .iter()
        .map(|n| schema.column(n).map(|c| c.kind))
        .collect();
    // One form per type, whatever the source wrote: `true`/`false`, `3`, `2.0`.
    let normalize = |kind: Option<ColumnType>, text: &str| -> String {
        let t = text.trim();
        if t.is_empty() {
            return String::new();
        }
        match kind {
            Some(ColumnType::Boolean) => {
                match lambdaml::features::parse_numeric_text(t, ColumnType::Boolean) {
                    Some(x) if x != 0.0 => "true".into(),
                    Some(_) => "false".into(),
                    None => t.to_string(),
                }
            }
            Some(ColumnType::Float) => match t.parse::<f64>() {
                Ok(x) if x.is_finite() && x.fract() == 0.0 && x.abs() < 1e15 => format!("{x:.1}"),
                Ok(x) if x.is_finite() => x.to_string(),
                _ => t.to_string(),
            },
            Some(ColumnType::Integer) => match t.parse::<f64>() {
                Ok(x) if x.is_finite() && x.fract() == 0.0 => format!("{}", x as i64),
                _ => t.to_string(),
            },
            _ => t.to_string(),
        }
    };
    let base_rows = table.columns.first().map(column_len).unwrap_or(0);
    let mut extra: Vec<Vec<String>> = Vec::new();
    if let Some(bytes) = labelled {
        let mut reader = csv::ReaderBuilder::new().from_reader(bytes);
        let header: Vec<String> = reader
            .headers()
            .map_err(|e| StageError::permanent(format!("labelled rows: {e}")))?
            .iter()
            .map(str::to_string)
            .collect();
        let index: Vec<Option<usize>> = table
            .names
            .iter()
            .map(|n| header.iter().position(|h| h == n))
            .collect();
        for record in reader.records() {
            let record =
                record.map_err(|e| StageError::permanent(format!("labelled rows: {e}")))?;
            extra.push(
                index
                    .iter()
                    .map(|i| i.and_then(|i| record.get(i)).unwrap_or("").to_string())
                    .collect(),
            );
        }
    }
    let total = base_rows + extra.len();
    let skip = match data {
        RetrainData::Sliding => total.saturating_sub(window_rows),
        RetrainData::All => 0,
    };
    let file = std::fs::File::create(out).map_err(StageError::from)?;
    let mut writer = csv::WriterBuilder::new()
        .delimiter(delimiter)
        .from_writer(std::io::BufWriter::new(file));
    let io = StageError::transient::<csv::Error>;
    writer.write_record(&table.names).map_err(io)?;
    for row in skip.min(base_rows)..base_rows {
        writer
            .write_record(
                table
                    .columns
                    .iter()
                    .zip(&kinds)
                    .map(|(c, k)| normalize(*k, &c.text(row).unwrap_or_default())),
            )
            .map_err(io)?;
    }
    for row in extra.iter().skip(skip.saturating_sub(base_rows)) {
        writer
            .write_record(row.iter().zip(&kinds).map(|(v, k)| normalize(*k, v)))
            .map_err(io)?;
    }
    writer.flush().map_err(StageError::from)?;
    drop(writer);
    let bytes = std::fs::read(out).map_err(StageError::from)?;
    Ok((total - skip, lambdaml::sha256_hex(&bytes)))
}

fn column_len(c: &lambdaml::dataset::Column) -> usize {
    match c {
        lambdaml::dataset::Column::Numeric(v) => v.len(),
        lambdaml::dataset::Column::Categorical { codes, .. } => codes.len(),
    }
}
