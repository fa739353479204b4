//! A part of a window, summarized for the merge: what [`Scan`] folded, as counts, sums and
//! histograms that add up, the labelled rows it joined, and its samples as rows sorted by
//! [`row_key`](crate::window::row_key) (a separate binary object, read by the merge only
//! as far as the smallest keys of all parts reach).
//!
//! Merged in the window's order, the parts give the accumulators one invocation reading the
//! whole window gives: the same counts, the same sample rows (the smallest keys), the same
//! labelled rows. Sums of floating-point values (CBPE's expected confusion matrix, the
//! reconstruction and loss sums) are added per part, so they may differ from one pass in
//! the last bits.

use lambdaml::estimate::CbpeAcc;
use lambdaml::estimate::dle::DleAcc;
use lambdaml::estimate::pca::ErrorAcc;
use lambdaml::stage::StageError;
use serde::{Deserialize, Serialize};

use super::Scan;
use crate::report::CaptureSummary;
use crate::rollout::RolloutPart;
use crate::window::{FeatureAcc, Labelled, LatencyHistogram};

/// Every this many sample rows, a part's summary records the row's key (a fence), so the
/// merge can tell how far into each part's rows the smallest keys of all parts reach.
pub(crate) const FENCE: usize = 1024;

/// A labelled row a part joined.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct PartLabel {
    /// Request id and row.
    pub id: (String, usize),
    /// Class index or value.
    pub truth: f64,
    /// The row's outputs.
    pub outputs: Vec<f64>,
    /// Capture time, epoch milliseconds.
    pub at_ms: i64,
    /// Its line of the labelled CSV (the features as text, then the label).
    pub csv: Vec<String>,
}

/// A part's sample rows: how many, how wide, and the fences.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct SampleMeta {
    /// Rows (each a key and `width` values, little-endian).
    pub rows: u64,
    /// Values per row.
    pub width: usize,
    /// The key of every [`FENCE`]th row.
    pub fences: Vec<u64>,
}

impl SampleMeta {
    /// Bytes per row.
    pub fn row_bytes(&self) -> u64 {
        8 * (1 + self.width as u64)
    }
}

/// What a part folded (CBOR: exact floats, NaN included).
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Partial {
    pub captures: CaptureSummary,
    features: Vec<FeatureAcc>,
    predicted: Vec<u64>,
    rows_seen: u64,
    status: std::collections::BTreeMap<u16, u64>,
    latency: LatencyHistogram,
    validation_errors: u64,
    labels: Vec<PartLabel>,
    attempted: Vec<(String, usize)>,
    invalid_labels: u64,
    cbpe: Option<CbpeAcc>,
    reconstruction: Option<ErrorAcc>,
    dle: Option<DleAcc>,
    estimation_seen: u64,
    estimation_skipped: u64,
    rollout: Option<RolloutPart>,
    /// The drift sample: per row the numeric features' values, then the score.
    pub sample: SampleMeta,
    /// The estimator's sample: per row the outputs.
    pub estimation_sample: SampleMeta,
}

impl Partial {
    /// As stored.
    pub fn to_bytes(&self) -> Result<Vec<u8>, StageError> {
        let mut out = Vec::new();
        ciborium::into_writer(self, &mut out).map_err(StageError::invalid)?;
        Ok(out)
    }

    /// From its stored bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, StageError> {
        ciborium::from_reader(bytes).map_err(|e| {
            StageError::permanent(format!("a monitor part's summary is unreadable: {e}"))
        })
    }
}

/// Writes rows sorted by key to `out` (each the key, then `width` values, little-endian)
/// and answers their [`SampleMeta`].
fn encode(
    keys: &[u64],
    width: usize,
    value: impl Fn(usize, usize) -> f64,
    out: &mut impl std::io::Write,
) -> std::io::Result<SampleMeta> {
    for (i, k) in keys.iter().enumerate() {
        out.write_all(&k.to_le_bytes())?;
        for j in 0..width {
            out.write_all(&value(i, j).to_le_bytes())?;
        }
    }
    out.flush()?;
    let fences = keys
        .iter()
        .skip(FENCE - 1)
        .step_by(FENCE)
        .copied()
        .collect();
    Ok(SampleMeta {
        rows: keys.len() as u64,
        width,
        fences,
    })
}

/// [`encode`] into a temporary file (a part's sample is up to the whole sample's size, so
/// it is not copied in memory).
fn encode_file(
    keys: &[u64],
    width: usize,
    value: impl Fn(usize, usize) -> f64,
) -> Result<(tempfile::NamedTempFile, SampleMeta), StageError> {
    let file = tempfile::NamedTempFile::new().map_err(StageError::transient)?;
    let mut out = std::io::BufWriter::new(file.reopen().map_err(StageError::transient)?);
    let meta = encode(keys, width, value, &mut out).map_err(StageError::transient)?;
    Ok((file, meta))
}

/// Rows from bytes [`encode`] wrote (a whole number of rows).
pub(crate) fn decode(bytes: &[u8], width: usize) -> Vec<(u64, Vec<f64>)> {
    let word = |c: &[u8]| {
        let mut b = [0u8; 8];
        b.copy_from_slice(c);
        b
    };
    bytes
        .chunks_exact(8 * (1 + width))
        .map(|row| {
            let key = u64::from_le_bytes(word(&row[..8]));
            let values = row[8..]
                .chunks_exact(8)
                .map(|c| f64::from_le_bytes(word(c)))
                .collect();
            (key, values)
        })
        .collect()
}

/// How many leading rows of each part's sorted sample to read so that the `cap` smallest
/// keys of all parts are among them: the smallest fence below which at least `cap` rows are
/// known to lie bounds every key the merged sample keeps, and a part's rows under it end
/// before its first fence above it.
pub(crate) fn prefixes(metas: &[&SampleMeta], cap: usize) -> Vec<u64> {
    let mut fences: Vec<u64> = metas
        .iter()
        .flat_map(|m| m.fences.iter().copied())
        .collect();
    fences.sort_unstable();
    let bound = fences.get(cap.div_ceil(FENCE).saturating_sub(1)).copied();
    metas
        .iter()
        .map(|m| match bound {
            None => m.rows,
            Some(t) => {
                let below = m.fences.partition_point(|f| *f <= t) as u64;
                ((below + 1) * FENCE as u64).min(m.rows)
            }
        })
        .collect()
}

impl<'f> Scan<'f> {
    /// A scan of one part of a window: it keeps its labelled rows for the merge.
    pub(crate) fn for_part(mut self) -> Self {
        self.part_labels = Some(Vec::new());
        self
    }

    /// The part's summary, and the files of its drift sample rows and its estimator's
    /// sample rows.
    pub(crate) fn into_partial(
        mut self,
    ) -> Result<(Partial, tempfile::NamedTempFile, tempfile::NamedTempFile), StageError> {
        self.acc.seal();
        let numeric = self.acc.numeric_columns();
        let (sample, sample_meta) = {
            let acc = &self.acc;
            encode_file(acc.slots.keys(), numeric.len() + 1, |i, j| {
                match numeric.get(j) {
                    Some(f) => acc.sample[*f][i],
                    None => acc.score_sample[i],
                }
            })?
        };
        let est = &self.acc.estimation;
        let width = est.sample.first().map_or(0, Vec::len);
        let (estimation, estimation_meta) = encode_file(est.slots.keys(), width, |i, j| {
            est.sample[i].get(j).copied().unwrap_or(f64::NAN)
        })?;
        let (cbpe, reconstruction, dle) = est.sums();
        let partial = Partial {
            captures: self.captures.clone(),
            features: self.acc.features.clone(),
            predicted: self.acc.predicted.clone(),
            rows_seen: self.acc.rows_seen,
            status: self.acc.status.clone(),
            latency: self.acc.latency.clone(),
            validation_errors: self.acc.validation_errors,
            labels: self.part_labels.take().unwrap_or_default(),
            attempted: self.attempted.iter().cloned().collect(),
            invalid_labels: self.labels.summary.invalid,
            cbpe: cbpe.cloned(),
            reconstruction: reconstruction.copied(),
            dle: dle.copied(),
            estimation_seen: est.seen,
            estimation_skipped: est.skipped,
            rollout: self.rollout.as_ref().map(crate::rollout::RolloutAcc::part),
            sample: sample_meta,
            estimation_sample: estimation_meta,
        };
        Ok((partial, sample, estimation))
    }

    /// Adds the next part of the window (parts in window order); its samples come
    /// separately ([`Scan::set_samples`]).
    pub(crate) fn absorb(&mut self, part: Partial) -> Result<(), StageError> {
        let c = &mut self.captures;
        let p = &part.captures;
        c.files += p.files;
        c.records += p.records;
        c.records_in_window += p.records_in_window;
        c.shadow_records += p.shadow_records;
        c.malformed_lines += p.malformed_lines;
        c.rows_scored += p.rows_scored;
        for (v, n) in &p.unknown_versions {
            *c.unknown_versions.entry(v.clone()).or_insert(0) += n;
        }
        for (v, n) in &p.other_versions {
            *c.other_versions.entry(v.clone()).or_insert(0) += n;
        }
        if part.features.len() != self.acc.features.len()
            || part.predicted.len() != self.acc.predicted.len()
        {
            return Err(StageError::permanent(
                "a monitor part was aggregated against another baseline: run the monitor again",
            ));
        }
        self.acc.merge_counts(
            &part.features,
            &part.predicted,
            part.rows_seen,
            &part.status,
            &part.latency,
            part.validation_errors,
        );
        for label in part.labels {
            if self.joined.insert(label.id) {
                self.labels.summary.joined += 1;
                self.acc.labelled.push(Labelled {
                    truth: label.truth,
                    outputs: label.outputs,
                    at_ms: label.at_ms,
                });
                self.csv
                    .write_record(&label.csv)
                    .map_err(StageError::transient)?;
                self.labelled_rows += 1;
            }
        }
        self.attempted.extend(part.attempted);
        self.labels.summary.invalid += part.invalid_labels;
        let est = &mut self.acc.estimation;
        if !est.merge_sums(
            part.cbpe.as_ref(),
            part.reconstruction.as_ref(),
            part.dle.as_ref(),
        ) {
            return Err(StageError::permanent(
                "a monitor part was aggregated with other estimators: run the monitor again",
            ));
        }
        est.seen += part.estimation_seen;
        est.skipped += part.estimation_skipped;
        match (&mut self.rollout, part.rollout) {
            (Some(acc), Some(p)) if acc.judges(&p) => acc.absorb(p),
            (None, None) => {}
            _ => {
                return Err(StageError::permanent(
                    "the model's rollout changed while its window was aggregated in parts: run the monitor again",
                ));
            }
        }
        Ok(())
    }

    /// The merged samples: the drift sample's rows and the estimator's, each sorted by key
    /// and at most its cap. Rows of another width than this window's (a part written for
    /// another baseline) are refused.
    pub(crate) fn set_samples(
        &mut self,
        sample: Vec<(u64, Vec<f64>)>,
        estimation: Vec<(u64, Vec<f64>)>,
    ) -> Result<(), StageError> {
        let numeric = self.acc.numeric_columns();
        if sample.iter().any(|(_, v)| v.len() != numeric.len() + 1) {
            return Err(StageError::permanent(
                "a monitor part's sample rows do not fit this baseline: run the monitor again",
            ));
        }
        let acc = &mut self.acc;
        for (j, f) in numeric.iter().enumerate() {
            acc.sample[*f] = sample.iter().map(|(_, v)| v[j]).collect();
        }
        acc.score_sample = sample.iter().map(|(_, v)| v[numeric.len()]).collect();
        acc.slots
            .set_sorted(sample.iter().map(|(k, _)| *k).collect());
        let est = &mut acc.estimation;
        est.slots
            .set_sorted(estimation.iter().map(|(k, _)| *k).collect());
        est.sample = estimation.into_iter().map(|(_, v)| v).collect();
        Ok(())
    }

    /// The drift sample's cap and the estimator's.
    pub(crate) fn caps(&self) -> (usize, usize) {
        (self.acc.sample_cap(), self.acc.estimation.slots.cap())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_reach_every_one_of_the_smallest_keys() {
        // Three parts with interleaved keys; whatever the cap, the prefixes hold the cap
        // smallest keys of all parts.
        let parts: Vec<Vec<u64>> = (0..3u64)
            .map(|p| (0..5000u64).map(|i| i * 7 + p * 3 + (i % 5) * 11).collect())
            .map(|mut v: Vec<u64>| {
                v.sort_unstable();
                v.dedup();
                v
            })
            .collect();
        let metas: Vec<SampleMeta> = parts
            .iter()
            .map(|k| encode(k, 0, |_, _| 0.0, &mut std::io::sink()).unwrap())
            .collect();
        let mut all: Vec<u64> = parts.iter().flatten().copied().collect();
        all.sort_unstable();
        for cap in [1, 500, 1024, 3000, 9000, 20_000] {
            let refs: Vec<&SampleMeta> = metas.iter().collect();
            let reach = prefixes(&refs, cap);
            let mut read: Vec<u64> = parts
                .iter()
                .zip(&reach)
                .flat_map(|(k, n)| k[..*n as usize].iter().copied())
                .collect();
            read.sort_unstable();
            read.truncate(cap);
            assert_eq!(read, all[..cap.min(all.len())], "cap {cap}");
            let total: u64 = reach.iter().sum();
            if cap <= 9000 {
                assert!(
                    total <= (cap + 3 * 2 * FENCE) as u64,
                    "cap {cap}: read {total} rows"
                );
            }
        }
    }

    #[test]
    fn rows_round_trip_bit_for_bit() {
        let keys = [3u64, 9, u64::MAX];
        let values = [[1.5, f64::NAN], [-0.0, 1e-300], [f64::INFINITY, 7.0]];
        let mut bytes = Vec::new();
        let meta = encode(&keys, 2, |i, j| values[i][j], &mut bytes).unwrap();
        assert_eq!(meta.rows, 3);
        let rows = decode(&bytes, 2);
        for (i, (k, v)) in rows.iter().enumerate() {
            assert_eq!(*k, keys[i]);
            for j in 0..2 {
                assert_eq!(v[j].to_bits(), values[i][j].to_bits());
            }
        }
    }
}
