//! A partition's output: its scores as Parquet (`file`, `row`, `prediction`, one `p_<class>`
//! per class, then the input columns when the job asked for them) and its rejected rows as
//! JSON lines. Both are deterministic for a partition, so a redelivery rewrites nothing.

use std::sync::Arc;

use arrow_array::builder::StringBuilder;
use arrow_array::{ArrayRef, Float64Array, RecordBatch, StringArray, UInt64Array};
use arrow_schema::{Field, Schema};
use bytes::Bytes;
use lambdaml::batch::{Plan, PlannedPart};
use lambdaml::layout;
use lambdaml::stage::{StageError, run_blocking};
use lambdaml::store::{ObjectKey, ObjectStoreExt, StoreError};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, Encoding};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;

use crate::Batch;
use crate::score::{Scored, Scorer};

/// The input columns an output carries.
pub(crate) enum InputColumns {
    /// From CSV: the fields as read.
    Text(Vec<StringBuilder>),
    /// From Parquet: the original arrays, filtered to the rows scored.
    Arrow(Vec<Vec<ArrayRef>>),
}

impl InputColumns {
    pub(crate) fn text(width: usize) -> Self {
        InputColumns::Text((0..width).map(|_| StringBuilder::new()).collect())
    }

    pub(crate) fn arrow(width: usize) -> Self {
        InputColumns::Arrow((0..width).map(|_| Vec::new()).collect())
    }

    /// Appends one CSV row's input fields (`field(c)` for each input column `c`): the
    /// field as read, or null when it is empty or not UTF-8.
    pub(crate) fn push_text<'a>(&mut self, columns: &[usize], field: impl Fn(usize) -> &'a [u8]) {
        if let InputColumns::Text(cols) = self {
            for (col, &c) in cols.iter_mut().zip(columns) {
                match std::str::from_utf8(field(c)) {
                    Ok(s) if !s.is_empty() => col.append_value(s),
                    _ => col.append_null(),
                }
            }
        }
    }
}

/// The scored rows of a partition, column by column.
pub(crate) struct Output {
    file: String,
    rows: Vec<u64>,
    /// Classification: the predicted class per row.
    labels: Vec<u32>,
    /// The model's outputs, row-major: probabilities (rows × classes) or values.
    values: Vec<f64>,
    width: usize,
    pub(crate) inputs: Option<InputColumns>,
}

impl Output {
    pub(crate) fn new(file: String, inputs: Option<InputColumns>) -> Self {
        Output {
            file,
            rows: Vec::new(),
            labels: Vec::new(),
            values: Vec::new(),
            width: 0,
            inputs,
        }
    }

    /// Appends a block's predictions (`width` per row).
    pub(crate) fn push_predictions(&mut self, outputs: &[f64], width: usize, classes: bool) {
        self.width = width;
        self.values.extend_from_slice(outputs);
        if classes {
            for p in outputs.chunks_exact(width.max(1)) {
                let mut best = 0;
                for (i, v) in p.iter().enumerate() {
                    if *v > p[best] {
                        best = i;
                    }
                }
                self.labels.push(best as u32);
            }
        }
    }

    /// Appends the input row id of the next scored row.
    pub(crate) fn push_row(&mut self, row: u64) {
        self.rows.push(row);
    }

    /// The output's columns, and how to write them: row ids and scores are (nearly) all
    /// distinct, so a dictionary for them is work thrown away when the writer falls back
    /// to plain pages; row ids are a run of consecutive integers (delta encoding stores
    /// them in a few bytes, no compression needed) and scores are random doubles (snappy
    /// only spends time on them). One partition is one row group: statistics per column
    /// chunk, not per page.
    fn batch(
        self,
        scorer: &Scorer,
        input_names: &[String],
    ) -> Result<(RecordBatch, WriterProperties), String> {
        let n = self.rows.len();
        let mut props = WriterProperties::builder()
            .set_compression(Compression::SNAPPY)
            .set_statistics_enabled(EnabledStatistics::Chunk)
            .set_column_encoding(ColumnPath::from("row"), Encoding::DELTA_BINARY_PACKED);
        let mut plain = vec!["row".to_string()];
        let mut fields = vec![
            Field::new("file", arrow_schema::DataType::Utf8, false),
            Field::new("row", arrow_schema::DataType::UInt64, false),
        ];
        let mut columns: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from_iter_values(std::iter::repeat_n(
                self.file.as_str(),
                n,
            ))),
            Arc::new(UInt64Array::from(self.rows)),
        ];
        match scorer.classes() {
            Some(classes) => {
                fields.push(Field::new(
                    "prediction",
                    arrow_schema::DataType::Utf8,
                    false,
                ));
                columns.push(Arc::new(StringArray::from_iter_values(
                    self.labels.iter().map(|&l| classes[l as usize].as_str()),
                )));
                for (c, class) in classes.iter().enumerate() {
                    plain.push(format!("p_{class}"));
                    fields.push(Field::new(
                        format!("p_{class}"),
                        arrow_schema::DataType::Float64,
                        false,
                    ));
                    let p: Float64Array = (0..n).map(|r| self.values[r * self.width + c]).collect();
                    columns.push(Arc::new(p));
                }
            }
            None => {
                plain.push("prediction".to_string());
                fields.push(Field::new(
                    "prediction",
                    arrow_schema::DataType::Float64,
                    false,
                ));
                let v: Float64Array = (0..n).map(|r| self.values[r * self.width.max(1)]).collect();
                columns.push(Arc::new(v));
            }
        }
        let taken: std::collections::BTreeSet<String> =
            fields.iter().map(|f| f.name().clone()).collect();
        let name_of = |name: &str| {
            if taken.contains(name) {
                format!("input_{name}")
            } else {
                name.to_string()
            }
        };
        match self.inputs {
            Some(InputColumns::Text(builders)) => {
                for (mut b, name) in builders.into_iter().zip(input_names) {
                    fields.push(Field::new(
                        name_of(name),
                        arrow_schema::DataType::Utf8,
                        true,
                    ));
                    columns.push(Arc::new(b.finish()));
                }
            }
            Some(InputColumns::Arrow(parts)) => {
                for (arrays, name) in parts.into_iter().zip(input_names) {
                    let refs: Vec<&dyn arrow_array::Array> =
                        arrays.iter().map(|a| a.as_ref()).collect();
                    let array = if refs.is_empty() {
                        arrow_array::new_null_array(&arrow_schema::DataType::Null, 0)
                    } else {
                        arrow_select::concat::concat(&refs).map_err(|e| e.to_string())?
                    };
                    fields.push(Field::new(name_of(name), array.data_type().clone(), true));
                    columns.push(array);
                }
            }
            None => {}
        }
        for name in plain {
            let column = ColumnPath::from(name);
            props = props
                .set_column_dictionary_enabled(column.clone(), false)
                .set_column_compression(column, Compression::UNCOMPRESSED);
        }
        let batch = RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)
            .map_err(|e| e.to_string())?;
        Ok((batch, props.build()))
    }
}

/// What a partition wrote.
pub(crate) struct Written {
    pub rows_in: u64,
    pub rows_out: u64,
    pub rejected: u64,
    pub output: ObjectKey,
    pub rejected_key: Option<ObjectKey>,
}

/// Writes a partition's output and rejected rows (its manifest is the caller's, last).
pub(crate) async fn write_partition(
    batch: &Batch,
    plan: &Plan,
    scorer: &Arc<Scorer>,
    part: &PlannedPart,
    scored: Scored,
) -> Result<Written, StageError> {
    let output = layout::batch_part_output(&plan.model, &plan.job, part.index)
        .map_err(StageError::invalid)?;
    let rows_out = scored.output.rows.len() as u64;
    let rejected_rows = scored.rejected;
    let input_names: Vec<String> = scorer.input_names().map(str::to_string).collect();
    let scorer2 = scorer.clone();
    let out = scored.output;
    let parquet = run_blocking("writing a batch partition's output", move || {
        let (batch, props) = out.batch(&scorer2, &input_names)?;
        let mut bytes = Vec::new();
        let mut writer = ArrowWriter::try_new(&mut bytes, batch.schema(), Some(props))
            .map_err(|e| e.to_string())?;
        writer.write(&batch).map_err(|e| e.to_string())?;
        writer.close().map_err(|e| e.to_string())?;
        Ok::<_, String>(Bytes::from(bytes))
    })
    .await?
    .map_err(|e| StageError::permanent(format!("writing {output}: {e}")))?;
    put_once(batch, &output, parquet).await?;
    let rejected_key = if rejected_rows.is_empty() {
        None
    } else {
        let key = layout::batch_part_rejected(&plan.model, &plan.job, part.index)
            .map_err(StageError::invalid)?;
        let mut lines = Vec::new();
        for r in &rejected_rows {
            serde_json::to_writer(&mut lines, r).map_err(StageError::invalid)?;
            lines.push(b'\n');
        }
        put_once(batch, &key, Bytes::from(lines)).await?;
        Some(key)
    };
    Ok(Written {
        rows_in: scored.rows_in,
        rows_out,
        rejected: rejected_rows.len() as u64,
        output,
        rejected_key,
    })
}

/// Writes an immutable partition artifact. Different bytes already there (an earlier
/// delivery of a build that wrote them differently) stand: the first write wins.
async fn put_once(batch: &Batch, key: &ObjectKey, bytes: Bytes) -> Result<(), StageError> {
    match batch.store.put_immutable(key, bytes).await {
        Ok(_) => Ok(()),
        Err(StoreError::AlreadyExists(_)) => {
            tracing::warn!(%key, "a partition artifact was already written with other bytes; keeping it");
            Ok(())
        }
        Err(e) => Err(StageError::context(format!("writing {key}"), e)),
    }
}
