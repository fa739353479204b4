//! A dataset version in memory, column by column, as preprocess and training need it.

use std::collections::HashMap;
use std::fs::File;
use std::path::Path;

use arrow_array::Array;
use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, Int64Type};
use arrow_schema::DataType;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use super::DatasetError;

/// Missing categorical value code.
pub const MISSING_CODE: u32 = u32::MAX;

/// One column in memory.
#[derive(Debug, Clone, PartialEq)]
pub enum Column {
    /// Integers, floats and booleans (as 0/1); `NaN` marks a missing value.
    Numeric(Vec<f64>),
    /// Categories as codes into `dictionary`; [`MISSING_CODE`] marks a missing value.
    Categorical {
        /// Per-row codes.
        codes: Vec<u32>,
        /// The distinct strings, in first-seen order.
        dictionary: Vec<String>,
    },
}

impl Column {
    /// The value of row `i` as text (`None` when missing), for either kind.
    pub fn text(&self, i: usize) -> Option<String> {
        match self {
            Column::Numeric(v) => (!v[i].is_nan()).then(|| v[i].to_string()),
            Column::Categorical { codes, dictionary } => dictionary.get(codes[i] as usize).cloned(),
        }
    }
}

/// A table: named columns of equal length.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Table {
    /// Column names in order.
    pub names: Vec<String>,
    /// The columns.
    pub columns: Vec<Column>,
    /// Row count.
    pub rows: usize,
}

impl Table {
    /// The column named `name`.
    pub fn column(&self, name: &str) -> Result<&Column, DatasetError> {
        self.names
            .iter()
            .position(|n| n == name)
            .map(|i| &self.columns[i])
            .ok_or_else(|| DatasetError::UnknownColumn(name.to_string()))
    }
}

/// Reads a Parquet file written by ingest into memory.
pub fn read_parquet(path: &Path) -> Result<Table, DatasetError> {
    let builder = ParquetRecordBatchReaderBuilder::try_new(File::open(path)?)?;
    let schema = builder.schema().clone();
    let names: Vec<String> = schema.fields().iter().map(|f| f.name().clone()).collect();
    let mut columns: Vec<Column> = Vec::with_capacity(names.len());
    let mut lookups: Vec<HashMap<String, u32>> = Vec::with_capacity(names.len());
    for field in schema.fields() {
        columns.push(match field.data_type() {
            DataType::Int64 | DataType::Float64 | DataType::Boolean => Column::Numeric(Vec::new()),
            DataType::Utf8 => Column::Categorical {
                codes: Vec::new(),
                dictionary: Vec::new(),
            },
            other => {
                return Err(DatasetError::UnsupportedColumn {
                    column: field.name().clone(),
                    kind: other.to_string(),
                });
            }
        });
        lookups.push(HashMap::new());
    }
    let mut rows = 0;
    for batch in builder.build()? {
        let batch = batch?;
        rows += batch.num_rows();
        for ((array, column), lookup) in batch.columns().iter().zip(&mut columns).zip(&mut lookups)
        {
            match (column, array.data_type()) {
                (Column::Numeric(out), DataType::Int64) => {
                    let a = array.as_primitive::<Int64Type>();
                    out.extend((0..a.len()).map(|i| {
                        if a.is_null(i) {
                            f64::NAN
                        } else {
                            a.value(i) as f64
                        }
                    }));
                }
                (Column::Numeric(out), DataType::Float64) => {
                    let a = array.as_primitive::<Float64Type>();
                    out.extend(
                        (0..a.len()).map(|i| if a.is_null(i) { f64::NAN } else { a.value(i) }),
                    );
                }
                (Column::Numeric(out), DataType::Boolean) => {
                    let a = array.as_boolean();
                    out.extend((0..a.len()).map(|i| {
                        if a.is_null(i) {
                            f64::NAN
                        } else if a.value(i) {
                            1.0
                        } else {
                            0.0
                        }
                    }));
                }
                (Column::Categorical { codes, dictionary }, DataType::Utf8) => {
                    let a = array.as_string::<i32>();
                    for i in 0..a.len() {
                        if a.is_null(i) {
                            codes.push(MISSING_CODE);
                            continue;
                        }
                        let v = a.value(i);
                        let code = match lookup.get(v) {
                            Some(&c) => c,
                            None => {
                                let c = dictionary.len() as u32;
                                dictionary.push(v.to_string());
                                lookup.insert(v.to_string(), c);
                                c
                            }
                        };
                        codes.push(code);
                    }
                }
                (_, other) => {
                    return Err(DatasetError::UnsupportedColumn {
                        column: String::new(),
                        kind: other.to_string(),
                    });
                }
            }
        }
    }
    Ok(Table {
        names,
        columns,
        rows,
    })
}
