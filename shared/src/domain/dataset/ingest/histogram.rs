//! The numeric columns' histograms, counted after the pass over the rows (their range is
//! the whole file's).

use std::fs::File;
use std::path::Path;

use super::pipeline::parse_threads;
use super::{Acc, CHUNK_ROWS, Inference};
use crate::dataset::profile::{BINS, bin_of};
use crate::dataset::{ColumnSchema, DatasetError};

/// The numeric columns' histograms, over each column's range (its inferred span within its
/// declared bounds), from the values written to `data_path`: the range is known only once
/// every row was read. The row groups are shared among [`parse_threads`] threads.
pub(super) fn histograms(
    data_path: &Path,
    columns: &[ColumnSchema],
    inference: &[Inference],
    accs: &mut [Acc],
) -> Result<(), DatasetError> {
    use arrow_array::cast::AsArray;
    use arrow_array::types::{Float64Type, Int64Type};
    use parquet::arrow::ProjectionMask;
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

    let ranged: Vec<(usize, (f64, f64))> = columns
        .iter()
        .zip(inference)
        .enumerate()
        .filter(|(_, (c, _))| c.kind.is_numeric())
        .filter_map(|(i, (c, s))| {
            let mut lo = s.min;
            let mut hi = s.max;
            if let Some(m) = c.min {
                lo = lo.max(m);
            }
            if let Some(m) = c.max {
                hi = hi.min(m);
            }
            (lo.is_finite() && hi.is_finite() && lo <= hi).then_some((i, (lo, hi)))
        })
        .collect();
    if ranged.is_empty() {
        return Ok(());
    }
    let groups = ParquetRecordBatchReaderBuilder::try_new(File::open(data_path)?)?
        .metadata()
        .num_row_groups();
    // Thread `t` counts row groups t, t + threads, ...: each reads its groups' ranged
    // columns once.
    let count = |t: usize, threads: usize| -> Result<Vec<[u64; BINS]>, DatasetError> {
        let builder = ParquetRecordBatchReaderBuilder::try_new(File::open(data_path)?)?
            .with_batch_size(CHUNK_ROWS)
            .with_row_groups((t..groups).step_by(threads).collect());
        let mask = ProjectionMask::roots(builder.parquet_schema(), ranged.iter().map(|r| r.0));
        let mut counts = vec![[0u64; BINS]; ranged.len()];
        for batch in builder.with_projection(mask).build()? {
            let batch = batch?;
            for ((array, &(_, range)), counts) in
                batch.columns().iter().zip(&ranged).zip(counts.iter_mut())
            {
                if let Some(ints) = array.as_primitive_opt::<Int64Type>() {
                    for x in ints.iter().flatten() {
                        counts[bin_of(x as f64, range)] += 1;
                    }
                } else if let Some(floats) = array.as_primitive_opt::<Float64Type>() {
                    for x in floats.iter().flatten() {
                        counts[bin_of(x, range)] += 1;
                    }
                }
            }
        }
        Ok(counts)
    };
    let threads = parse_threads().min(groups.max(1));
    let results: Vec<Result<Vec<[u64; BINS]>, DatasetError>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let count = &count;
                scope.spawn(move || count(t, threads))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join().unwrap_or_else(|_| {
                    Err(DatasetError::Parquet(
                        parquet::errors::ParquetError::General(
                            "the histogram thread failed".into(),
                        ),
                    ))
                })
            })
            .collect()
    });
    for &(i, range) in &ranged {
        if let Acc::Numeric(a) = &mut accs[i] {
            a.set_range(Some(range));
        }
    }
    for part in results {
        for (&(i, _), counts) in ranged.iter().zip(part?) {
            if let Acc::Numeric(a) = &mut accs[i] {
                a.add_bins(&counts);
            }
        }
    }
    Ok(())
}
