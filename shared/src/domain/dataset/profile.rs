//! Column profiles: the baseline statistics the monitor compares live traffic with.
//!
//! Numeric columns get count, missing, mean, standard deviation (ddof = 1, as pandas'
//! `describe`), min, max, quantiles and a 20-bin histogram; categorical and boolean columns
//! get their value frequencies. Everything is computed in one streaming pass with memory
//! bounded per column: quantiles are exact (numpy's default linear interpolation) up to
//! [`RESERVOIR`] values and come from a seeded uniform reservoir sample of that size beyond
//! it (`quantiles_exact` says which). The mean and standard deviation come from exact sums
//! ([`super::sketch::Moments`]), so a file ingested in partitions, whose parts report
//! mergeable summaries ([`NumericSummary`], [`CategorySummary`]), gets the same values bit
//! for bit; its quantiles come from a KLL sketch with a stated rank error.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::ColumnType;
use super::sketch::{KLL_RANK_ERROR, Kll, Moments};

/// Values kept per numeric column for quantiles.
pub const RESERVOIR: usize = 100_000;
/// Histogram bins per numeric column.
pub const BINS: usize = 20;
/// Distinct categories counted per column; rarer newcomers beyond it are counted as
/// `__other__`.
pub const MAX_TRACKED_CATEGORIES: usize = 10_000;
/// The quantile levels reported.
pub const QUANTILE_LEVELS: [f64; 7] = [0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99];

/// A histogram with explicit bin edges (`edges.len() == counts.len() + 1`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Histogram {
    /// Bin edges, increasing.
    pub edges: Vec<f64>,
    /// Values per bin; the last bin includes its right edge.
    pub counts: Vec<u64>,
}

/// One column's profile.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ColumnProfile {
    /// The column type.
    #[serde(rename = "type")]
    pub kind: ColumnType,
    /// Non-missing values.
    pub count: u64,
    /// Missing values.
    pub missing: u64,
    /// Mean (numeric).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mean: Option<f64>,
    /// Sample standard deviation, ddof = 1 (numeric).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub std: Option<f64>,
    /// Minimum (numeric).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    /// Maximum (numeric).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
    /// Quantiles by level, e.g. `"0.5"` (numeric).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub quantiles: BTreeMap<String, f64>,
    /// Whether the quantiles are exact or estimated (a reservoir sample, or a KLL sketch
    /// when the file was ingested in partitions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quantiles_exact: Option<bool>,
    /// The normalized rank error the quantiles stay within, when they come from a KLL
    /// sketch ([`super::sketch::KLL_RANK_ERROR`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quantile_rank_error: Option<f64>,
    /// Histogram (numeric).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub histogram: Option<Histogram>,
    /// Value frequencies (categorical, boolean).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub frequencies: BTreeMap<String, u64>,
}

/// The profile of a dataset version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Profile {
    /// Valid rows.
    pub rows: u64,
    /// Rejected rows.
    pub rejected: u64,
    /// Per column, in name order.
    pub columns: BTreeMap<String, ColumnProfile>,
}

/// numpy's default (`linear`) quantile of sorted `values`.
pub fn quantile_sorted(values: &[f64], q: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    let pos = q * (values.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    let frac = pos - lo as f64;
    values[lo] + (values[hi] - values[lo]) * frac
}

/// A small, fast, seedable generator (SplitMix64) so sampling and splits are reproducible
/// across platforms and crate versions.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator from `seed`.
    pub fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    /// The generator's state: `SplitMix64::new(g.state())` continues exactly where `g` is.
    pub fn state(&self) -> u64 {
        self.0
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0), by Lemire's multiply-shift.
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// Uniform in [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

/// The histogram bin of `x` over `(lo, hi)`: values outside are clamped into the end bins.
pub(crate) fn bin_of(x: f64, (lo, hi): (f64, f64)) -> usize {
    if hi > lo {
        (((x - lo) / (hi - lo)) * BINS as f64)
            .floor()
            .clamp(0.0, (BINS - 1) as f64) as usize
    } else {
        0
    }
}

/// Where a numeric column's quantiles come from.
#[derive(Debug, Clone)]
pub(crate) enum QuantileSource {
    /// A seeded uniform reservoir of [`RESERVOIR`] values: exact up to that many values
    /// (one pass over a whole file).
    Reservoir { values: Vec<f64>, rng: SplitMix64 },
    /// A mergeable KLL sketch (a partition of a file, merged with the others').
    Sketch(Kll),
}

/// Streaming accumulator for one numeric column.
#[derive(Debug, Clone)]
pub(crate) struct NumericAcc {
    kind: ColumnType,
    missing: u64,
    /// Count, Σx and Σx², exactly: the same bits whatever the order and the parts.
    moments: Moments,
    min: f64,
    max: f64,
    quantiles: QuantileSource,
    edges: Option<(f64, f64)>,
    bins: [u64; BINS],
}

/// What a partition's numeric column reports: everything but the histogram, whose range is
/// known only once every partition has reported.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NumericSummary {
    /// The column type.
    #[serde(rename = "type")]
    pub kind: ColumnType,
    /// Missing values.
    pub missing: u64,
    /// Count, Σx and Σx², exactly.
    pub moments: Moments,
    /// Minimum, when there is a value.
    pub min: Option<f64>,
    /// Maximum, when there is a value.
    pub max: Option<f64>,
    /// The quantile sketch.
    pub sketch: Kll,
}

impl NumericAcc {
    /// `range` is the span the histogram covers (from the inference pass); values outside it
    /// are clamped into the end bins.
    pub(crate) fn new(kind: ColumnType, range: Option<(f64, f64)>, seed: u64) -> Self {
        NumericAcc {
            kind,
            missing: 0,
            moments: Moments::default(),
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
            quantiles: QuantileSource::Reservoir {
                values: Vec::new(),
                rng: SplitMix64::new(seed),
            },
            edges: range,
            bins: [0; BINS],
        }
    }

    /// An accumulator whose quantiles come from a KLL sketch (see [`NumericSummary`]).
    pub(crate) fn sketched(kind: ColumnType, seed: u64) -> Self {
        NumericAcc {
            quantiles: QuantileSource::Sketch(Kll::new(seed)),
            ..NumericAcc::new(kind, None, seed)
        }
    }

    #[inline]
    pub(crate) fn push(&mut self, value: Option<f64>) {
        let Some(x) = value else {
            self.missing += 1;
            return;
        };
        self.moments.push(x);
        self.min = self.min.min(x);
        self.max = self.max.max(x);
        match &mut self.quantiles {
            QuantileSource::Reservoir { values, rng } => {
                if values.len() < RESERVOIR {
                    values.push(x);
                } else {
                    let j = rng.below(self.moments.count) as usize;
                    if j < RESERVOIR {
                        values[j] = x;
                    }
                }
            }
            QuantileSource::Sketch(sketch) => sketch.push(x),
        }
        if let Some(range) = self.edges {
            self.bins[bin_of(x, range)] += 1;
        }
    }

    /// What a sketched accumulator reports for merging (`None` for a reservoir one).
    pub(crate) fn summary(&self) -> Option<NumericSummary> {
        let QuantileSource::Sketch(sketch) = &self.quantiles else {
            return None;
        };
        let has = self.moments.count > 0;
        Some(NumericSummary {
            kind: self.kind,
            missing: self.missing,
            moments: self.moments.clone(),
            min: has.then_some(self.min),
            max: has.then_some(self.max),
            sketch: sketch.clone(),
        })
    }

    /// Adds a later partition's summary to this sketched accumulator.
    pub(crate) fn merge(&mut self, other: &NumericSummary) {
        self.missing += other.missing;
        self.moments.merge(&other.moments);
        if let Some(m) = other.min {
            self.min = self.min.min(m);
        }
        if let Some(m) = other.max {
            self.max = self.max.max(m);
        }
        if let QuantileSource::Sketch(sketch) = &mut self.quantiles {
            sketch.merge(&other.sketch);
        }
    }

    /// Sets the histogram's span after the values were pushed without one; the counts then
    /// come from [`NumericAcc::add_bins`] (a later pass over the values).
    pub(crate) fn set_range(&mut self, range: Option<(f64, f64)>) {
        self.edges = range;
        self.bins = [0; BINS];
    }

    /// Adds histogram counts made with [`bin_of`] over this column's range.
    pub(crate) fn add_bins(&mut self, counts: &[u64; BINS]) {
        for (b, c) in self.bins.iter_mut().zip(counts) {
            *b += c;
        }
    }

    pub(crate) fn finish(self) -> ColumnProfile {
        let count = self.moments.count;
        let has = count > 0;
        let (mean, std) = (self.moments.mean(), self.moments.std());
        let (quantiles, exact, rank_error) = match self.quantiles {
            QuantileSource::Reservoir { mut values, .. } => {
                values.sort_by(f64::total_cmp);
                let q = QUANTILE_LEVELS
                    .iter()
                    .filter(|_| has)
                    .map(|&q| (q.to_string(), quantile_sorted(&values, q)))
                    .collect();
                (q, count as usize <= RESERVOIR, None)
            }
            QuantileSource::Sketch(sketch) => {
                let q = QUANTILE_LEVELS
                    .iter()
                    .filter_map(|&q| Some((q.to_string(), sketch.quantile(q)?)))
                    .collect();
                let exact = sketch.is_exact();
                (q, exact, (!exact).then_some(KLL_RANK_ERROR))
            }
        };
        let histogram = self.edges.filter(|_| has).map(|(lo, hi)| {
            let width = (hi - lo) / BINS as f64;
            Histogram {
                edges: (0..=BINS).map(|i| lo + width * i as f64).collect(),
                counts: self.bins.to_vec(),
            }
        });
        ColumnProfile {
            kind: self.kind,
            count,
            missing: self.missing,
            mean,
            std,
            min: has.then_some(self.min),
            max: has.then_some(self.max),
            quantiles,
            quantiles_exact: has.then_some(exact),
            quantile_rank_error: rank_error.filter(|_| has),
            histogram,
            frequencies: BTreeMap::new(),
        }
    }
}

/// What a partition's categorical or boolean column reports.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CategorySummary {
    /// The column type.
    #[serde(rename = "type")]
    pub kind: ColumnType,
    /// Missing values.
    pub missing: u64,
    /// Value counts.
    pub counts: BTreeMap<String, u64>,
}

/// Streaming accumulator for a categorical or boolean column.
#[derive(Debug, Clone)]
pub(crate) struct CategoryAcc {
    kind: ColumnType,
    missing: u64,
    counts: BTreeMap<String, u64>,
}

impl CategoryAcc {
    pub(crate) fn new(kind: ColumnType) -> Self {
        CategoryAcc {
            kind,
            missing: 0,
            counts: BTreeMap::new(),
        }
    }

    pub(crate) fn push(&mut self, value: Option<&str>) {
        match value {
            None => self.missing += 1,
            Some(v) => {
                if let Some(c) = self.counts.get_mut(v) {
                    *c += 1;
                } else if self.counts.len() < MAX_TRACKED_CATEGORIES {
                    self.counts.insert(v.to_string(), 1);
                } else {
                    *self.counts.entry("__other__".to_string()).or_insert(0) += 1;
                }
            }
        }
    }

    /// What a partition reports for merging.
    pub(crate) fn summary(&self) -> CategorySummary {
        CategorySummary {
            kind: self.kind,
            missing: self.missing,
            counts: self.counts.clone(),
        }
    }

    /// Adds a later partition's counts: as if its values had come next (a newcomer beyond
    /// [`MAX_TRACKED_CATEGORIES`] is counted as `__other__`).
    pub(crate) fn merge(&mut self, other: &CategorySummary) {
        self.missing += other.missing;
        for (value, &n) in &other.counts {
            if let Some(c) = self.counts.get_mut(value) {
                *c += n;
            } else if self.counts.len() < MAX_TRACKED_CATEGORIES {
                self.counts.insert(value.clone(), n);
            } else {
                *self.counts.entry("__other__".to_string()).or_insert(0) += n;
            }
        }
    }

    pub(crate) fn finish(self) -> ColumnProfile {
        ColumnProfile {
            kind: self.kind,
            count: self.counts.values().sum(),
            missing: self.missing,
            mean: None,
            std: None,
            min: None,
            max: None,
            quantiles: BTreeMap::new(),
            quantiles_exact: None,
            quantile_rank_error: None,
            histogram: None,
            frequencies: self.counts,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_match_numpy_linear() {
        // numpy: np.quantile([1, 2, 3, 4, 10], [0.25, 0.5, 0.9]) -> [2.0, 3.0, 7.6]
        let v = [1.0, 2.0, 3.0, 4.0, 10.0];
        assert_eq!(quantile_sorted(&v, 0.25), 2.0);
        assert_eq!(quantile_sorted(&v, 0.5), 3.0);
        assert!((quantile_sorted(&v, 0.9) - 7.6).abs() < 1e-12);
    }

    #[test]
    fn numeric_profile_matches_pandas_describe() {
        // pandas: pd.Series([2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0]).describe()
        //   mean 5.0, std 2.138090, min 2, 25% 4.0, 50% 4.5, 75% 5.5, max 9
        let mut acc = NumericAcc::new(ColumnType::Float, Some((2.0, 9.0)), 1);
        for x in [2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0] {
            acc.push(Some(x));
        }
        acc.push(None);
        let p = acc.finish();
        assert_eq!(p.count, 8);
        assert_eq!(p.missing, 1);
        assert_eq!(p.mean, Some(5.0));
        assert!((p.std.unwrap() - 2.138_089_935_299_395).abs() < 1e-12);
        assert_eq!(p.quantiles["0.25"], 4.0);
        assert_eq!(p.quantiles["0.5"], 4.5);
        assert_eq!(p.quantiles["0.75"], 5.5);
        let h = p.histogram.unwrap();
        assert_eq!(h.counts.iter().sum::<u64>(), 8);
        assert_eq!(h.edges.len(), BINS + 1);
        assert_eq!(
            *h.counts.last().unwrap(),
            1,
            "the max falls in the last bin"
        );
        assert_eq!(p.quantiles_exact, Some(true));
    }

    #[test]
    fn reservoir_keeps_memory_bounded_and_quantiles_close() {
        let mut acc = NumericAcc::new(ColumnType::Float, Some((0.0, 1.0)), 7);
        let n = RESERVOIR * 5;
        for i in 0..n {
            acc.push(Some(i as f64 / n as f64));
        }
        assert!(
            matches!(&acc.quantiles, QuantileSource::Reservoir { values, .. } if values.len() == RESERVOIR)
        );
        let p = acc.finish();
        assert_eq!(p.quantiles_exact, Some(false));
        assert!((p.quantiles["0.5"] - 0.5).abs() < 0.01, "{:?}", p.quantiles);
    }

    #[test]
    fn category_counts() {
        let mut acc = CategoryAcc::new(ColumnType::Categorical);
        for v in [Some("a"), Some("b"), Some("a"), None] {
            acc.push(v);
        }
        let p = acc.finish();
        assert_eq!(p.count, 3);
        assert_eq!(p.missing, 1);
        assert_eq!(p.frequencies["a"], 2);
    }
}

/// The Mersenne Twister MT19937 as numpy's legacy `RandomState(seed)` seeds and draws it,
/// so a permutation here is the permutation numpy (and scikit-learn's
/// `train_test_split(random_state=seed)`) would produce.
#[derive(Debug, Clone)]
pub struct Mt19937 {
    state: Box<[u32; 624]>,
    index: usize,
}

impl Mt19937 {
    /// `np.random.RandomState(seed)` for a seed below 2³².
    pub fn new(seed: u32) -> Self {
        let mut state = Box::new([0u32; 624]);
        state[0] = seed;
        for i in 1..624 {
            let prev = state[i - 1];
            state[i] = 1_812_433_253u32
                .wrapping_mul(prev ^ (prev >> 30))
                .wrapping_add(i as u32);
        }
        Mt19937 { state, index: 624 }
    }

    /// The next 32 random bits (`genrand_int32`).
    pub fn next_u32(&mut self) -> u32 {
        if self.index >= 624 {
            for i in 0..624 {
                let y = (self.state[i] & 0x8000_0000) | (self.state[(i + 1) % 624] & 0x7fff_ffff);
                let mut next = self.state[(i + 397) % 624] ^ (y >> 1);
                if y & 1 != 0 {
                    next ^= 0x9908_b0df;
                }
                self.state[i] = next;
            }
            self.index = 0;
        }
        let mut y = self.state[self.index];
        self.index += 1;
        y ^= y >> 11;
        y ^= (y << 7) & 0x9d2c_5680;
        y ^= (y << 15) & 0xefc6_0000;
        y ^ (y >> 18)
    }

    /// numpy's `random_interval(max)`: uniform in `0..=max` by masked rejection.
    fn interval(&mut self, max: u32) -> u32 {
        if max == 0 {
            return 0;
        }
        let mut mask = max;
        for shift in [1, 2, 4, 8, 16] {
            mask |= mask >> shift;
        }
        loop {
            let value = self.next_u32() & mask;
            if value <= max {
                return value;
            }
        }
    }

    /// `RandomState.permutation(n)`: a Fisher–Yates shuffle of `0..n` from the end.
    pub fn permutation(&mut self, n: usize) -> Vec<usize> {
        let mut v: Vec<usize> = (0..n).collect();
        for i in (1..n).rev() {
            let j = self.interval(i as u32) as usize;
            v.swap(i, j);
        }
        v
    }
}

#[cfg(test)]
mod mt_tests {
    use super::Mt19937;

    #[test]
    fn matches_numpy_random_state() {
        // struct.unpack("<3I", np.random.RandomState(42).bytes(12))
        //   -> (1608637542, 3421126067, 4083286876)
        let mut mt = Mt19937::new(42);
        assert_eq!(
            [mt.next_u32(), mt.next_u32(), mt.next_u32()],
            [1_608_637_542, 3_421_126_067, 4_083_286_876]
        );
        // np.random.RandomState(42).permutation(10) -> [8 1 5 0 7 2 9 4 3 6]
        assert_eq!(
            Mt19937::new(42).permutation(10),
            vec![8, 1, 5, 0, 7, 2, 9, 4, 3, 6]
        );
    }
}
