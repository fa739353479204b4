//! Streaming a window of captures: per-feature accumulators in memory bounded by the sample
//! size, never by the window.

use std::collections::{BTreeMap, BinaryHeap, HashMap};

use lambdaml::baseline::{Baseline, FeatureKind, argmax};
use std::borrow::Cow;

use lambdaml::dataset::ColumnType;
use lambdaml::features::{format_number, parse_numeric_text};
use serde::{Deserialize, Serialize};

/// One capture line as the monitor reads it: borrowed from the file's bytes, only the
/// fields it uses (serde skips the rest), and values without `serde(untagged)`'s buffering —
/// parsing is most of a monitor run's work.
#[derive(Debug, Deserialize)]
pub struct Line<'a> {
    /// The request id.
    #[serde(borrow)]
    pub request_id: Cow<'a, str>,
    /// RFC 3339 time.
    #[serde(borrow)]
    pub timestamp: Cow<'a, str>,
    /// The model version that answered.
    #[serde(default, borrow)]
    pub version: Option<Cow<'a, str>>,
    /// Its rollout role (`shadow`, `canary`); absent for production.
    #[serde(default)]
    pub role: Option<lambdaml::registry::Role>,
    /// HTTP status.
    pub status: u16,
    /// Latency in microseconds.
    #[serde(default)]
    pub latency_us: u64,
    /// Input rows in the version's pipeline order.
    #[serde(default, borrow)]
    pub inputs: Vec<Vec<Val<'a>>>,
    /// Probabilities (row-major) or values.
    #[serde(default)]
    pub outputs: Vec<f64>,
    /// Field errors of a refused request.
    #[serde(default)]
    pub errors: Vec<serde::de::IgnoredAny>,
}

/// A captured input value.
#[derive(Debug, Clone, PartialEq)]
pub enum Val<'a> {
    /// Null or absent.
    Null,
    /// A number (booleans as 0/1).
    Number(f64),
    /// Text.
    Text(Cow<'a, str>),
}

impl<'de: 'a, 'a> Deserialize<'de> for Val<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Val<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("null, a number or a string")
            }
            fn visit_unit<E>(self) -> Result<Val<'de>, E> {
                Ok(Val::Null)
            }
            fn visit_none<E>(self) -> Result<Val<'de>, E> {
                Ok(Val::Null)
            }
            fn visit_bool<E>(self, v: bool) -> Result<Val<'de>, E> {
                Ok(Val::Number(f64::from(u8::from(v))))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Val<'de>, E> {
                Ok(Val::Number(v))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Val<'de>, E> {
                Ok(Val::Number(v as f64))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Val<'de>, E> {
                Ok(Val::Number(v as f64))
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Val<'de>, E> {
                Ok(Val::Text(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Val<'de>, E> {
                Ok(Val::Text(Cow::Owned(v.to_string())))
            }
            fn visit_string<E>(self, v: String) -> Result<Val<'de>, E> {
                Ok(Val::Text(Cow::Owned(v)))
            }
        }
        d.deserialize_any(V)
    }
}

/// Distinct categories tracked per feature; unseen newcomers beyond it count as [`OTHER`].
pub const MAX_CATEGORIES: usize = 10_000;
/// The key unseen categories beyond [`MAX_CATEGORIES`] are counted under.
pub const OTHER: &str = "\u{0}other";
/// Distinct numeric values remembered per feature, to tell a "numeric" 0/1 flag from a
/// measurement (Evidently's rule: five or fewer distinct values are tested as categories).
const DISTINCT_PROBE: usize = 6;

/// A latency histogram: exact below 1,024 µs, 512 sub-buckets per power of two above
/// (relative error under 0.2 %), a few kilobytes for any number of requests.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LatencyHistogram {
    counts: BTreeMap<u32, u64>,
    total: u64,
    max: u64,
}

impl LatencyHistogram {
    fn bucket(v: u64) -> u32 {
        if v < 1024 {
            return v as u32;
        }
        let e = 63 - v.leading_zeros(); // >= 10
        1024 + (e - 10) * 512 + ((v >> (e - 9)) & 511) as u32
    }

    fn lower(b: u32) -> u64 {
        if b < 1024 {
            return u64::from(b);
        }
        let e = (b - 1024) / 512 + 10;
        let m = u64::from((b - 1024) % 512);
        (1u64 << e) + (m << (e - 9))
    }

    /// Adds one latency in microseconds (a corrupt one is clamped to about 146,000 years).
    pub fn add(&mut self, us: u64) {
        let us = us.min(1 << 62);
        *self.counts.entry(Self::bucket(us)).or_insert(0) += 1;
        self.total += 1;
        self.max = self.max.max(us);
    }

    /// The `q` quantile (nearest rank) in microseconds.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        if self.total == 0 {
            return None;
        }
        let rank = ((q * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0;
        for (b, c) in &self.counts {
            seen += c;
            if seen >= rank {
                let lo = Self::lower(*b);
                let hi = Self::lower(b + 1).max(lo + 1);
                return Some(((lo + hi - 1) as f64 / 2.0).min(self.max as f64));
            }
        }
        Some(self.max as f64)
    }

    /// The largest latency seen.
    pub fn max(&self) -> u64 {
        self.max
    }

    /// Adds another histogram's latencies.
    pub fn merge(&mut self, other: &LatencyHistogram) {
        for (b, c) in &other.counts {
            *self.counts.entry(*b).or_insert(0) += c;
        }
        self.total += other.total;
        self.max = self.max.max(other.max);
    }
}

/// Where a captured row stands in the sample: a hash of where it was captured (the capture
/// file's key, the line, the row), so the rows a window's sample keeps do not depend on how
/// the window was read — the same rows whether one invocation read it or its parts were
/// merged.
pub fn row_key(file: u64, line: u64, row: u64) -> u64 {
    mix64(file ^ mix64(line.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ row))
}

/// The hash of a capture file's key, for [`row_key`].
pub fn file_key_hash(key: &str) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325_u64;
    for b in key.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    mix64(h)
}

/// SplitMix64's finalizer.
fn mix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A bottom-k sample's slots: the rows with the `cap` smallest [`row_key`]s. Such a sample
/// is uniform, and two samples merge into the sample of the union by keeping the smallest
/// keys of both.
#[derive(Debug, Clone, Default)]
pub struct Slots {
    keys: Vec<u64>,
    /// Once full: the largest kept key on top.
    heap: BinaryHeap<(u64, usize)>,
    cap: usize,
}

impl Slots {
    /// Room for `cap` rows.
    pub fn new(cap: usize) -> Self {
        Slots {
            keys: Vec::new(),
            heap: BinaryHeap::new(),
            cap: cap.max(1),
        }
    }

    /// Where a row keyed `key` goes: `Some(None)` appended, `Some(Some(j))` replacing slot
    /// `j`, `None` not kept.
    pub fn offer(&mut self, key: u64) -> Option<Option<usize>> {
        if self.keys.len() < self.cap {
            self.keys.push(key);
            if self.keys.len() == self.cap {
                self.heap = self.keys.iter().copied().zip(0..).collect();
            }
            return Some(None);
        }
        let &(top, j) = self.heap.peek()?;
        if key >= top {
            return None;
        }
        self.heap.pop();
        self.heap.push((key, j));
        self.keys[j] = key;
        Some(Some(j))
    }

    /// The slots in key order; the slots themselves are then in that order.
    pub fn sort(&mut self) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.keys.len()).collect();
        order.sort_unstable_by_key(|&i| self.keys[i]);
        self.keys = order.iter().map(|&i| self.keys[i]).collect();
        if self.keys.len() == self.cap {
            self.heap = self.keys.iter().copied().zip(0..).collect();
        }
        order
    }

    /// The kept keys, slot by slot.
    pub fn keys(&self) -> &[u64] {
        &self.keys
    }

    /// Replaces the slots with already merged, sorted keys.
    pub fn set_sorted(&mut self, keys: Vec<u64>) {
        self.keys = keys;
        self.heap = if self.keys.len() == self.cap {
            self.keys.iter().copied().zip(0..).collect()
        } else {
            BinaryHeap::new()
        };
    }

    /// The most rows kept.
    pub fn cap(&self) -> usize {
        self.cap
    }
}

/// `values` reordered by `order`.
pub fn permute<T: Clone>(values: &[T], order: &[usize]) -> Vec<T> {
    order.iter().map(|&i| values[i].clone()).collect()
}

/// What one feature saw in the window.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FeatureAcc {
    /// Scored rows where it was missing.
    pub missing: u64,
    /// Unreadable values.
    pub invalid: u64,
    /// Outside the training range.
    pub out_of_range: u64,
    /// Categories not in training.
    pub unseen: u64,
    /// Category counts (categorical).
    pub counts: BTreeMap<String, u64>,
    /// Unseen category counts (first few).
    pub unseen_examples: BTreeMap<String, u64>,
    /// Distinct numeric values seen, up to a few.
    pub distinct: Vec<f64>,
}

impl FeatureAcc {
    /// Adds what the same feature saw in a later part of the window. Exact while fewer than
    /// [`MAX_CATEGORIES`] distinct categories and ten distinct unseen ones arrive; beyond,
    /// which newcomers are named individually depends on how the window was split (their
    /// totals do not).
    pub fn merge(&mut self, other: &FeatureAcc, known: &std::collections::HashSet<String>) {
        self.missing += other.missing;
        self.invalid += other.invalid;
        self.out_of_range += other.out_of_range;
        self.unseen += other.unseen;
        for (t, c) in &other.counts {
            if let Some(n) = self.counts.get_mut(t) {
                *n += c;
            } else if self.counts.len() < MAX_CATEGORIES || known.contains(t) || t == OTHER {
                self.counts.insert(t.clone(), *c);
            } else {
                *self.counts.entry(OTHER.to_string()).or_insert(0) += c;
            }
        }
        for (t, c) in &other.unseen_examples {
            if let Some(n) = self.unseen_examples.get_mut(t) {
                *n += c;
            } else if self.unseen_examples.len() < 10 {
                self.unseen_examples.insert(t.clone(), *c);
            }
        }
        for x in &other.distinct {
            if self.distinct.len() < DISTINCT_PROBE && !self.distinct.contains(x) {
                self.distinct.push(*x);
            }
        }
    }
}

/// One labelled row for live metrics.
#[derive(Debug, Clone)]
pub struct Labelled {
    /// Class index or value.
    pub truth: f64,
    /// The row's outputs (probabilities or one value).
    pub outputs: Vec<f64>,
    /// Capture time, epoch milliseconds.
    pub at_ms: i64,
}

/// Every accumulator of a window.
#[derive(Debug)]
pub struct WindowAcc {
    /// Per baseline feature.
    pub features: Vec<FeatureAcc>,
    /// Per baseline feature: sampled values (NaN when missing); only numeric features fill it.
    pub sample: Vec<Vec<f64>>,
    /// Sampled prediction scores (NaN when none).
    pub score_sample: Vec<f64>,
    /// Predicted class counts, or nothing for regression.
    pub predicted: Vec<u64>,
    /// Rows offered to the sample.
    pub rows_seen: u64,
    /// The sample's slots (its rows' keys).
    pub slots: Slots,
    /// Requests, by status.
    pub status: BTreeMap<u16, u64>,
    /// Latencies.
    pub latency: LatencyHistogram,
    /// Field errors of refused requests.
    pub validation_errors: u64,
    /// Labelled rows.
    pub labelled: Vec<Labelled>,
    /// Performance estimation and multivariate drift over production's rows.
    pub estimation: crate::estimation::EstimationAcc,
    kinds: Vec<FeatureKind>,
    column_types: Vec<ColumnType>,
    mins: Vec<Option<f64>>,
    maxs: Vec<Option<f64>>,
    known: Vec<std::collections::HashSet<String>>,
    classes: Option<Vec<String>>,
}

impl WindowAcc {
    /// The most rows the sample keeps.
    pub fn sample_cap(&self) -> usize {
        self.slots.cap()
    }

    /// Puts the sample in key order, whatever order its rows arrived in (so a window's
    /// sample is the same vectors however it was read).
    pub fn seal(&mut self) {
        let order = self.slots.sort();
        for column in &mut self.sample {
            if !column.is_empty() {
                *column = permute(column, &order);
            }
        }
        self.score_sample = permute(&self.score_sample, &order);
        self.estimation.seal();
    }

    /// Adds a later part's counts (the monitor's fan-out; samples are merged apart).
    pub fn merge_counts(
        &mut self,
        features: &[FeatureAcc],
        predicted: &[u64],
        rows_seen: u64,
        status: &BTreeMap<u16, u64>,
        latency: &LatencyHistogram,
        validation_errors: u64,
    ) {
        for (f, (acc, other)) in self.features.iter_mut().zip(features).enumerate() {
            acc.merge(other, &self.known[f]);
        }
        for (a, b) in self.predicted.iter_mut().zip(predicted) {
            *a += b;
        }
        self.rows_seen += rows_seen;
        for (code, n) in status {
            *self.status.entry(*code).or_insert(0) += n;
        }
        self.latency.merge(latency);
        self.validation_errors += validation_errors;
    }

    /// The features whose values the sample keeps (the numeric ones), in order.
    pub fn numeric_columns(&self) -> Vec<usize> {
        (0..self.kinds.len())
            .filter(|f| self.kinds[*f] == FeatureKind::Numeric)
            .collect()
    }

    /// The categories the baseline knows, per feature.
    pub fn known(&self, f: usize) -> &std::collections::HashSet<String> {
        &self.known[f]
    }

    /// Accumulators for `baseline`, sampling at most `cap` rows.
    pub fn new(baseline: &Baseline, column_types: Vec<ColumnType>, cap: usize) -> Self {
        let n = baseline.features.len();
        let classes = match &baseline.prediction {
            lambdaml::baseline::PredictionBaseline::Classification { classes, .. } => {
                Some(classes.clone())
            }
            lambdaml::baseline::PredictionBaseline::Regression { .. } => None,
        };
        WindowAcc {
            features: vec![FeatureAcc::default(); n],
            sample: baseline
                .features
                .iter()
                .map(|f| {
                    if f.kind == FeatureKind::Numeric {
                        Vec::with_capacity(cap.min(1 << 16))
                    } else {
                        Vec::new()
                    }
                })
                .collect(),
            score_sample: Vec::with_capacity(cap.min(1 << 16)),
            predicted: vec![0; classes.as_ref().map_or(0, Vec::len)],
            rows_seen: 0,
            slots: Slots::new(cap),
            status: BTreeMap::new(),
            latency: LatencyHistogram::default(),
            validation_errors: 0,
            labelled: Vec::new(),
            estimation: crate::estimation::EstimationAcc::new(baseline, &column_types, cap),
            kinds: baseline.features.iter().map(|f| f.kind).collect(),
            column_types,
            mins: baseline.features.iter().map(|f| f.min).collect(),
            maxs: baseline.features.iter().map(|f| f.max).collect(),
            known: baseline
                .features
                .iter()
                .map(|f| f.frequencies.keys().cloned().collect())
                .collect(),
            classes,
        }
    }

    /// The classes of a classification model.
    pub fn classes(&self) -> Option<&[String]> {
        self.classes.as_deref()
    }

    /// Counts a request (any status).
    pub fn request(&mut self, record: &Line<'_>) {
        *self.status.entry(record.status).or_insert(0) += 1;
        self.latency.add(record.latency_us);
        if record.status >= 400 {
            self.validation_errors += record.errors.len() as u64;
        }
    }

    /// A row's values as text, for the labelled-rows file.
    pub fn texts(&self, values: &[Option<&Val<'_>>]) -> Vec<String> {
        values
            .iter()
            .enumerate()
            .map(|(f, v)| match v.unwrap_or(&Val::Null) {
                Val::Null => String::new(),
                Val::Number(x) if self.kinds[f] == FeatureKind::Numeric || x.is_finite() => {
                    format_number(*x)
                }
                Val::Number(_) => String::new(),
                Val::Text(t) => t.to_string(),
            })
            .collect()
    }

    /// Adds one scored row keyed `key` ([`row_key`]). `values[f]` is the row's value for
    /// baseline feature `f` (`None` when this version does not have the feature).
    pub fn row(&mut self, key: u64, values: &[Option<&Val<'_>>], outputs: &[f64]) {
        // Decide the row's sample slot once, so sampled rows stay whole.
        let slot = self.slots.offer(key);
        self.rows_seen += 1;
        for (f, value) in values.iter().enumerate() {
            let acc = &mut self.features[f];
            let value = value.unwrap_or(&Val::Null);
            match self.kinds[f] {
                FeatureKind::Numeric => {
                    let x = match value {
                        Val::Null => None,
                        Val::Number(x) if x.is_finite() => Some(*x),
                        Val::Number(_) => {
                            acc.invalid += 1;
                            None
                        }
                        Val::Text(t) => match parse_numeric_text(t, self.column_types[f]) {
                            Some(x) => Some(x),
                            None => {
                                acc.invalid += 1;
                                None
                            }
                        },
                    };
                    match x {
                        None => acc.missing += 1,
                        Some(x) => {
                            if self.mins[f].is_some_and(|m| x < m)
                                || self.maxs[f].is_some_and(|m| x > m)
                            {
                                acc.out_of_range += 1;
                            }
                            if acc.distinct.len() < DISTINCT_PROBE && !acc.distinct.contains(&x) {
                                acc.distinct.push(x);
                            }
                        }
                    }
                    let v = x.unwrap_or(f64::NAN);
                    match slot {
                        Some(None) => self.sample[f].push(v),
                        Some(Some(j)) => self.sample[f][j] = v,
                        None => {}
                    }
                }
                FeatureKind::Categorical => {
                    let number;
                    let text: Option<&str> = match value {
                        Val::Null => None,
                        Val::Number(x) => {
                            number = format_number(*x);
                            Some(&number)
                        }
                        Val::Text(t) => Some(t),
                    };
                    let Some(t) = text else {
                        acc.missing += 1;
                        continue;
                    };
                    if !self.known[f].contains(t) {
                        acc.unseen += 1;
                        if let Some(c) = acc.unseen_examples.get_mut(t) {
                            *c += 1;
                        } else if acc.unseen_examples.len() < 10 {
                            acc.unseen_examples.insert(t.to_string(), 1);
                        }
                    }
                    // Known categories are always counted; only a flood of newcomers is
                    // lumped together (under a key no category can have).
                    if let Some(c) = acc.counts.get_mut(t) {
                        *c += 1;
                    } else if acc.counts.len() < MAX_CATEGORIES || self.known[f].contains(t) {
                        acc.counts.insert(t.to_string(), 1);
                    } else {
                        *acc.counts.entry(OTHER.to_string()).or_insert(0) += 1;
                    }
                }
            }
        }
        let score = match &self.classes {
            Some(classes) if outputs.len() == classes.len() && !classes.is_empty() => {
                let (arg, top) = argmax(outputs);
                self.predicted[arg] += 1;
                if classes.len() == 2 { outputs[1] } else { top }
            }
            Some(_) => f64::NAN,
            None => outputs.first().copied().unwrap_or(f64::NAN),
        };
        match slot {
            Some(None) => self.score_sample.push(score),
            Some(Some(j)) => self.score_sample[j] = score,
            None => {}
        }
    }
}

/// Per version: how its capture rows map onto the baseline's features, and whether its
/// outputs are production's classes in production's order (`None`: an unknown version).
pub type VersionMaps = HashMap<String, Option<(Vec<Option<usize>>, bool)>>;
