//! Scoring a partition: the version's fitted pipeline validates and encodes each row (a row
//! it refuses is rejected with its reasons, the rest go on), the weights predict in blocks.

use std::sync::Arc;
use std::time::Instant;

use arrow_array::cast::AsArray;
use arrow_array::types::{
    Float32Type, Float64Type, Int8Type, Int16Type, Int32Type, Int64Type, UInt8Type, UInt16Type,
    UInt32Type, UInt64Type,
};
use arrow_array::{Array, ArrayRef, BooleanArray};
use arrow_schema::DataType;
use lambdaml::batch::{
    LineCounter, MAX_REJECTED_TEXT, PartManifest, PartSource, Plan, PlannedPart, RejectReason,
    RejectedRow,
};
use lambdaml::features::{FeaturePipeline, RawValue};
use lambdaml::layout;
use lambdaml::message::BatchPartitionRequest;
use lambdaml::model::{DenseModel, ModelManifest};
use lambdaml::registry::{RegistryStore, VersionStatus};
use lambdaml::stage::{StageError, run_blocking};
use lambdaml::store::{ObjectKey, ObjectStore, ObjectStoreExt, StoreError};
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use crate::read::{PartData, ReadError, Sparse};
use crate::write::{InputColumns, Output};
use crate::{Batch, BatchOutcome};

/// Rows encoded and predicted together.
pub(crate) const BLOCK_ROWS: usize = 4096;

/// A model version ready to score batches: the same manifest, pipeline and weights the
/// score function loads.
#[derive(Debug)]
pub struct Scorer {
    /// The model.
    pub model: String,
    /// The version.
    pub version: String,
    pub(crate) pipeline: FeaturePipeline,
    pub(crate) dense: DenseModel,
    classes: Option<Vec<String>>,
}

impl Scorer {
    /// The version from its manifest and weights.
    pub fn new(manifest: ModelManifest, weights: &[u8]) -> Result<Self, String> {
        let dense = DenseModel::from_safetensors(manifest.architecture.clone(), weights)
            .map_err(|e| e.to_string())?;
        let pipeline = manifest.pipeline;
        let classes = lambdaml::model::check_pairing(&dense, &pipeline)?;
        Ok(Scorer {
            model: manifest.model,
            version: manifest.version,
            pipeline,
            dense,
            classes,
        })
    }

    /// The input columns, in the model's order.
    pub fn input_names(&self) -> impl Iterator<Item = &str> {
        self.pipeline.inputs.iter().map(|f| f.name.as_str())
    }

    /// The classes, in output order (classification).
    pub fn classes(&self) -> Option<&[String]> {
        self.classes.as_deref()
    }

    fn width(&self) -> usize {
        self.pipeline.inputs.len()
    }

    /// Encodes `rows` rows of `values` (row-major, [`Scorer::width`] per row); rows the
    /// pipeline refuses go to `rejected` (with `describe(row)`'s row, line and text), the
    /// rest are predicted into `out`.
    fn score_block(
        &self,
        values: &[RawValue<'_>],
        rows: usize,
        describe: &dyn Fn(usize) -> RejectedRow,
        out: &mut Output,
        rejected: &mut Vec<RejectedRow>,
        kept: &mut Vec<usize>,
    ) -> Result<(), StageError> {
        let (width, dim) = (self.width(), self.pipeline.output_dim);
        let mut x = vec![0.0f32; rows * dim];
        kept.clear();
        let mut filled = 0;
        for row in 0..rows {
            let slot = &mut x[filled * dim..(filled + 1) * dim];
            let mut reasons = Vec::new();
            let ok = self.pipeline.transform_checked(
                &values[row * width..(row + 1) * width],
                slot,
                |e| {
                    reasons.push(RejectReason {
                        column: Some(e.field),
                        reason: e.reason,
                    });
                },
            );
            if ok {
                kept.push(row);
                filled += 1;
            } else {
                let mut r = describe(row);
                r.reasons = reasons;
                rejected.push(r);
            }
        }
        x.truncate(filled * dim);
        let mut outputs = Vec::with_capacity(filled * self.dense.output_width());
        self.dense
            .predict_into(&x, filled, &mut outputs)
            .map_err(|e| StageError::permanent(format!("prediction failed: {e}")))?;
        out.push_predictions(&outputs, self.dense.output_width(), self.classes.is_some());
        Ok(())
    }
}

/// The version a job scores with: the one named (if it can be used), or production.
pub(crate) async fn resolve_version(
    batch: &Batch,
    model: &str,
    version: Option<&str>,
) -> Result<String, StageError> {
    let version = match version {
        Some(v) => v.to_string(),
        None => {
            let registry = RegistryStore::new(batch.store.clone());
            let Some((registry, _)) = registry.load(model).await.map_err(StageError::from)? else {
                return Err(StageError::permanent(format!(
                    "model {model} has no registry: train and deploy it first"
                )));
            };
            registry.production.ok_or_else(|| {
                StageError::permanent(format!(
                    "model {model} has no production version: name one (--version)"
                ))
            })?
        }
    };
    if let Some(problem) = version_problem(&batch.store, model, &version).await? {
        return Err(StageError::permanent(problem));
    }
    Ok(version)
}

/// Why `version` of `model` can no longer score a job (rejected, gone from the registry,
/// its artifacts deleted), or `None` when it can.
pub(crate) async fn version_problem(
    store: &Arc<dyn ObjectStore>,
    model: &str,
    version: &str,
) -> Result<Option<String>, StageError> {
    let registry = RegistryStore::new(store.clone());
    let entry = registry
        .load(model)
        .await
        .map_err(StageError::from)?
        .and_then(|(r, _)| r.versions.get(version).cloned());
    let Some(entry) = entry else {
        return Ok(Some(format!(
            "version {version} of model {model} is not in its registry (deleted or never \
             registered)"
        )));
    };
    if entry.status == VersionStatus::Rejected {
        return Ok(Some(format!(
            "version {version} of model {model} was rejected; score with another version"
        )));
    }
    let manifest = layout::model_manifest(model, version).map_err(StageError::invalid)?;
    if !store.exists(&manifest).await? {
        return Ok(Some(format!(
            "version {version} of model {model} has no manifest ({manifest}): its artifacts \
             were deleted"
        )));
    }
    Ok(None)
}

/// The version's scorer (the last one loaded when it is the same).
pub(crate) async fn load_scorer(
    batch: &Batch,
    model: &str,
    version: &str,
) -> Result<Arc<Scorer>, StageError> {
    if let Some(s) = batch
        .scorer
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .as_ref()
        .filter(|s| s.model == model && s.version == version)
    {
        return Ok(s.clone());
    }
    let key = layout::model_manifest(model, version).map_err(StageError::invalid)?;
    let manifest: ModelManifest = batch
        .store
        .get_json(&key)
        .await
        .map_err(|e| StageError::context(format!("reading {key}"), e))?;
    let weights_key = manifest
        .artifacts
        .get("weights")
        .cloned()
        .map(ObjectKey::new)
        .unwrap_or_else(|| layout::weights(model, version))
        .map_err(StageError::invalid)?;
    let weights = batch
        .store
        .get(&weights_key)
        .await
        .map_err(|e| StageError::context(format!("reading {weights_key}"), e))?;
    let scorer = Scorer::new(manifest, &weights.bytes)
        .map_err(|e| StageError::permanent(format!("loading {model}/{version}: {e}")))?;
    let scorer = Arc::new(scorer);
    *batch
        .scorer
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(scorer.clone());
    Ok(scorer)
}

/// What scoring a partition made.
pub(crate) struct Scored {
    pub rows_in: u64,
    pub output: Output,
    pub rejected: Vec<RejectedRow>,
}

pub(crate) async fn score_partition(
    batch: &Batch,
    request: &BatchPartitionRequest,
) -> Result<BatchOutcome, StageError> {
    let started_at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let (model, job, index) = (
        request.model.as_str(),
        request.job.as_str(),
        request.partition,
    );
    let plan = batch.load_plan(model, job).await?;
    let Some(part) = plan.partitions.get(index).cloned() else {
        return Err(StageError::permanent(format!(
            "batch job {job} has {} partitions; there is no partition {index}",
            plan.partitions.len()
        )));
    };
    if let Some(manifest) = batch.job_manifest(model, job).await? {
        return Ok(match manifest.reason {
            Some(reason) => BatchOutcome::Stopped {
                model: model.to_string(),
                job: job.to_string(),
                partition: Some(index),
                reason,
            },
            None => BatchOutcome::AlreadyScored {
                model: model.to_string(),
                job: job.to_string(),
                partition: index,
                job_status: Some(manifest.status),
            },
        });
    }
    let manifest_key =
        layout::batch_part_manifest(model, job, index).map_err(StageError::invalid)?;
    if batch.store.exists(&manifest_key).await? {
        // A redelivery: the output is written; the job may not have been finished.
        let job_status = crate::finish::maybe_finish(batch, &plan).await?;
        return Ok(BatchOutcome::AlreadyScored {
            model: model.to_string(),
            job: job.to_string(),
            partition: index,
            job_status,
        });
    }
    if let Some(problem) = version_problem(&batch.store, model, &plan.version).await? {
        return crate::fail_job(batch, &plan, Some(index), problem).await;
    }
    let scorer = load_scorer(batch, model, &plan.version).await?;
    let clock = Instant::now();
    let data = match crate::read::read_part(batch, &plan, &part).await {
        Ok(data) => data,
        Err(ReadError::Job(reason)) => {
            return crate::fail_job(batch, &plan, Some(index), reason).await;
        }
        Err(ReadError::Stage(e)) => return Err(e),
    };
    let read_seconds = clock.elapsed().as_secs_f64();
    let clock = Instant::now();
    let (plan2, scorer2, part2) = (plan.clone(), scorer.clone(), part.clone());
    let scored = run_blocking("scoring a batch partition", move || {
        score_data(&scorer2, &plan2, &part2, data)
    })
    .await??;
    let score_seconds = clock.elapsed().as_secs_f64();
    // What is left is writing: encoding the Parquet (a few ms) and waiting for the disk (the
    // output's and the manifest's fsyncs). A local runner may start its next partition
    // meanwhile.
    lambdaml::stage::release_slot();
    let clock = Instant::now();
    let written = crate::write::write_partition(batch, &plan, &scorer, &part, scored).await?;
    let write_seconds = clock.elapsed().as_secs_f64();
    let manifest = PartManifest {
        index,
        rows_in: written.rows_in,
        rows_out: written.rows_out,
        rejected: written.rejected,
        output: written.output.clone(),
        rejected_key: written.rejected_key,
        started_at,
        finished_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        read_seconds,
        score_seconds,
        write_seconds,
    };
    match batch
        .store
        .put_if_absent(&manifest_key, lambdaml::store::to_json_bytes(&manifest))
        .await
    {
        Ok(_) | Err(StoreError::AlreadyExists(_)) => {}
        Err(e) => return Err(StageError::context(format!("writing {manifest_key}"), e)),
    }
    let job_status = crate::finish::maybe_finish(batch, &plan).await?;
    Ok(BatchOutcome::Scored {
        model: model.to_string(),
        job: job.to_string(),
        partition: index,
        rows_in: manifest.rows_in,
        rows_out: manifest.rows_out,
        rejected: manifest.rejected,
        output: written.output,
        job_status,
    })
}

fn score_data(
    scorer: &Scorer,
    plan: &Plan,
    part: &PlannedPart,
    data: PartData,
) -> Result<Scored, StageError> {
    let input = &plan.inputs[part.input];
    match data {
        PartData::Csv(bytes) => {
            let header = crate::read::header_names(input.header.as_deref().unwrap_or_default())
                .map_err(StageError::permanent)?;
            score_csv(scorer, plan, part, &header, &bytes)
        }
        PartData::Parquet(sparse) => score_parquet(scorer, plan, part, sparse),
    }
}

pub(crate) fn text_of(record: &csv::ByteRecord) -> String {
    let mut text = record
        .iter()
        .map(String::from_utf8_lossy)
        .collect::<Vec<_>>()
        .join(",");
    if text.len() > MAX_REJECTED_TEXT {
        let mut cut = MAX_REJECTED_TEXT;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push('…');
    }
    text
}

/// Why a record cannot be scored before encoding: a field count other than the header's,
/// or an input field that is not UTF-8.
pub(crate) fn record_problem(
    record: &csv::ByteRecord,
    header: &[String],
    columns: &[usize],
) -> Option<RejectReason> {
    if record.len() != header.len() {
        return Some(RejectReason {
            column: None,
            reason: format!(
                "expected {} fields (the header's), found {}",
                header.len(),
                record.len()
            ),
        });
    }
    columns.iter().find_map(|&c| {
        std::str::from_utf8(record.get(c).unwrap_or_default())
            .is_err()
            .then(|| RejectReason {
                column: Some(header[c].clone()),
                reason: "not UTF-8 text".to_string(),
            })
    })
}

fn score_csv(
    scorer: &Scorer,
    plan: &Plan,
    part: &PlannedPart,
    header: &[String],
    bytes: &[u8],
) -> Result<Scored, StageError> {
    let input = &plan.inputs[part.input];
    let width = scorer.width();
    let columns: Vec<usize> = scorer
        .input_names()
        .map(|name| header.iter().position(|h| h == name))
        .collect::<Option<_>>()
        .ok_or_else(|| {
            StageError::permanent(format!("{}: a model input is not in the header", input.key))
        })?;
    let mut out = Output::new(
        input.name.clone(),
        plan.include_inputs.then(|| InputColumns::text(width)),
    );
    if crate::fast::eligible(bytes) {
        return crate::fast::score_partition(
            scorer,
            part,
            header,
            &columns,
            &input.name,
            bytes,
            out,
        );
    }
    let mut rejected = Vec::new();
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(bytes);
    let mut block: Vec<csv::ByteRecord> = (0..BLOCK_ROWS).map(|_| csv::ByteRecord::new()).collect();
    let mut ids: Vec<(u64, u64)> = Vec::with_capacity(BLOCK_ROWS);
    let mut kept = Vec::with_capacity(BLOCK_ROWS);
    let mut rows_in = 0u64;
    let mut lines = LineCounter::new(part.first_line.unwrap_or(2));
    let mut more = true;
    while more {
        ids.clear();
        let mut n = 0;
        while n < BLOCK_ROWS {
            // A byte record of a flexible reader over memory cannot fail.
            if !reader.read_byte_record(&mut block[n]).map_err(|e| {
                StageError::permanent(format!("{}: partition {}: {e}", input.key, part.index))
            })? {
                more = false;
                break;
            }
            let record = &block[n];
            let start = record.position().map_or(0, |p| p.byte() as usize);
            let line = lines.line_at(bytes, start);
            let row = part.first_row + rows_in;
            rows_in += 1;
            if let Some(reason) = record_problem(record, header, &columns) {
                rejected.push(RejectedRow {
                    file: input.name.clone(),
                    row,
                    line: Some(line),
                    reasons: vec![reason],
                    record: Some(text_of(record)),
                });
                continue;
            }
            ids.push((row, line));
            n += 1;
        }
        if n == 0 {
            continue;
        }
        let block = &block[..n];
        let mut values: Vec<RawValue<'_>> = Vec::with_capacity(n * width);
        for record in block {
            for &c in &columns {
                // Checked to be UTF-8 by `record_problem`.
                let field = std::str::from_utf8(record.get(c).unwrap_or_default())
                    .unwrap_or_default()
                    .trim();
                values.push(if field.is_empty() {
                    RawValue::Missing
                } else {
                    RawValue::Text(field)
                });
            }
        }
        let describe = |r: usize| RejectedRow {
            file: input.name.clone(),
            row: ids[r].0,
            line: Some(ids[r].1),
            reasons: Vec::new(),
            record: Some(text_of(&block[r])),
        };
        scorer.score_block(&values, n, &describe, &mut out, &mut rejected, &mut kept)?;
        for &k in &kept {
            out.push_row(ids[k].0);
            if let Some(inputs) = &mut out.inputs {
                inputs.push_text(&columns, |c| block[k].get(c).unwrap_or_default());
            }
        }
    }
    Ok(Scored {
        rows_in,
        output: out,
        rejected,
    })
}

fn score_parquet(
    scorer: &Scorer,
    plan: &Plan,
    part: &PlannedPart,
    sparse: Sparse,
) -> Result<Scored, StageError> {
    let input = &plan.inputs[part.input];
    let bad = |e: parquet::errors::ParquetError| {
        StageError::permanent(format!(
            "{}: reading partition {}: {e}",
            input.key, part.index
        ))
    };
    let PartSource::RowGroups { groups, .. } = &part.source else {
        return Err(StageError::permanent(
            "a Parquet partition without row groups",
        ));
    };
    let builder = ParquetRecordBatchReaderBuilder::try_new(sparse).map_err(bad)?;
    let roots: Vec<usize> = {
        let schema = builder.parquet_schema();
        let names: Vec<String> = schema
            .root_schema()
            .get_fields()
            .iter()
            .map(|f| f.name().to_string())
            .collect();
        scorer
            .input_names()
            .filter_map(|n| names.iter().position(|c| c == n))
            .collect()
    };
    let mask = ProjectionMask::roots(builder.parquet_schema(), roots);
    let reader = builder
        .with_row_groups(groups.clone())
        .with_projection(mask)
        .with_batch_size(BLOCK_ROWS)
        .build()
        .map_err(bad)?;
    let width = scorer.width();
    let mut out = Output::new(
        input.name.clone(),
        plan.include_inputs.then(|| InputColumns::arrow(width)),
    );
    let mut rejected = Vec::new();
    let mut kept = Vec::with_capacity(BLOCK_ROWS);
    let mut rows_in = 0u64;
    for batch in reader {
        let batch = batch.map_err(|e| {
            StageError::permanent(format!(
                "{}: reading partition {}: {e}",
                input.key, part.index
            ))
        })?;
        let rows = batch.num_rows();
        let columns: Vec<&ArrayRef> = scorer
            .input_names()
            .map(|n| {
                batch
                    .column_by_name(n)
                    .ok_or_else(|| StageError::permanent(format!("{}: no column {n}", input.key)))
            })
            .collect::<Result<_, _>>()?;
        let mut values = vec![RawValue::Missing; rows * width];
        for (i, column) in columns.iter().enumerate() {
            fill_column(column, i, width, &mut values).map_err(|t| {
                StageError::permanent(format!(
                    "{}: column {} is {t}; batch scoring reads numbers, booleans and strings",
                    input.key, scorer.pipeline.inputs[i].name
                ))
            })?;
        }
        let first = part.first_row + rows_in;
        let describe = |r: usize| RejectedRow {
            file: input.name.clone(),
            row: first + r as u64,
            line: None,
            reasons: Vec::new(),
            record: None,
        };
        scorer.score_block(&values, rows, &describe, &mut out, &mut rejected, &mut kept)?;
        for &k in &kept {
            out.push_row(first + k as u64);
        }
        if let Some(InputColumns::Arrow(cols)) = &mut out.inputs {
            let mut mask = vec![false; rows];
            for &k in &kept {
                mask[k] = true;
            }
            let mask = BooleanArray::from(mask);
            for (col, column) in cols.iter_mut().zip(&columns) {
                let filtered = arrow_select::filter::filter(column.as_ref(), &mask)
                    .map_err(|e| StageError::permanent(format!("filtering inputs: {e}")))?;
                col.push(filtered);
            }
        }
        rows_in += rows as u64;
    }
    Ok(Scored {
        rows_in,
        output: out,
        rejected,
    })
}

/// Column `i` of every row of a block as raw values; `Err` names an unsupported type.
fn fill_column<'a>(
    column: &'a ArrayRef,
    i: usize,
    width: usize,
    values: &mut [RawValue<'a>],
) -> Result<(), String> {
    macro_rules! numbers {
        ($t:ty) => {{
            let a = column.as_primitive::<$t>();
            for (r, v) in a.iter().enumerate() {
                values[r * width + i] = v.map_or(RawValue::Missing, |v| RawValue::Number(v as f64));
            }
        }};
    }
    match column.data_type() {
        DataType::Float64 => numbers!(Float64Type),
        DataType::Float32 => numbers!(Float32Type),
        DataType::Int64 => numbers!(Int64Type),
        DataType::Int32 => numbers!(Int32Type),
        DataType::Int16 => numbers!(Int16Type),
        DataType::Int8 => numbers!(Int8Type),
        DataType::UInt64 => numbers!(UInt64Type),
        DataType::UInt32 => numbers!(UInt32Type),
        DataType::UInt16 => numbers!(UInt16Type),
        DataType::UInt8 => numbers!(UInt8Type),
        DataType::Boolean => {
            for (r, v) in column.as_boolean().iter().enumerate() {
                values[r * width + i] = v.map_or(RawValue::Missing, |b| {
                    RawValue::Number(f64::from(u8::from(b)))
                });
            }
        }
        DataType::Utf8 => {
            for (r, v) in column.as_string::<i32>().iter().enumerate() {
                values[r * width + i] = text(v);
            }
        }
        DataType::LargeUtf8 => {
            for (r, v) in column.as_string::<i64>().iter().enumerate() {
                values[r * width + i] = text(v);
            }
        }
        DataType::Utf8View => {
            for (r, v) in column.as_string_view().iter().enumerate() {
                values[r * width + i] = text(v);
            }
        }
        DataType::Null => {}
        other => return Err(other.to_string()),
    }
    Ok(())
}

fn text(v: Option<&str>) -> RawValue<'_> {
    match v.map(str::trim) {
        None | Some("") => RawValue::Missing,
        Some(s) => RawValue::Text(s),
    }
}
