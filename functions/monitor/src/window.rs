//! Streaming a window of captures: per-feature accumulators in memory bounded by the sample
//! size, never by the window.

use std::collections::{BTreeMap, HashMap};

use lambdaml::baseline::{Baseline, FeatureKind, argmax};
use std::borrow::Cow;

use lambdaml::dataset::{ColumnType, SplitMix64};
use lambdaml::features::{format_number, parse_numeric_text};
use serde::Deserialize;

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
#[derive(Debug, Clone, Default)]
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
}

/// What one feature saw in the window.
#[derive(Debug, Clone, Default)]
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
    cap: usize,
    rng: SplitMix64,
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
        self.cap
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
            cap: cap.max(1),
            rng: SplitMix64::new(0x006d_6f6e_6974_6f72),
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

    /// Adds one scored row. `values[f]` is the row's value for baseline feature `f` (`None`
    /// when this version does not have the feature).
    pub fn row(&mut self, values: &[Option<&Val<'_>>], outputs: &[f64]) {
        // Decide the row's sample slot once, so sampled rows stay whole.
        let slot = if (self.rows_seen as usize) < self.cap {
            Some(None)
        } else {
            let j = self.rng.below(self.rows_seen + 1) as usize;
            (j < self.cap).then_some(Some(j))
        };
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
