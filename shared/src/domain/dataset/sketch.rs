//! Mergeable summaries: what a partition of a file (or of a window) reports so that the
//! parts add up to the whole.
//!
//! - [`ExactSum`]: a floating-point sum kept exactly (Shewchuk's non-overlapping partials,
//!   as Python's `math.fsum`) and rounded once, correctly, when read. Its value does not
//!   depend on the order of the additions or on how they were split into parts, so a mean
//!   or a standard deviation merged from parts is bit for bit the one-pass result.
//! - [`WideSum`]: the same exact sum in a fixed-point accumulator as wide as every finite
//!   double (a few integer operations an add), read through [`ExactSum`]; [`Moments`] keeps
//!   Σx and Σx² in it, so exact sums cost ingest's profile next to nothing.
//! - [`Kll`]: the KLL quantile sketch (Karnin, Lang, Liberty 2016) with compactor capacity
//!   [`KLL_K`]: about `3 × KLL_K` values whatever the stream's length, mergeable, exact
//!   while nothing was compacted, and within [`KLL_RANK_ERROR`] of the true rank otherwise
//!   (the normalized rank error: a reported q-quantile lies between the true
//!   (q − ε)- and (q + ε)-quantiles). KLL's analysis bounds the error by O(1/k) with high
//!   probability (Apache DataSketches' KLL, the same compactors, states 0.53 % at 99 %
//!   confidence for k = 512); the tests below measure at most 0.25 % on streams of several
//!   shapes whole and split in parts of several sizes, and hold the sketch to 1 %.

use serde::{Deserialize, Serialize};

use super::profile::{SplitMix64, quantile_sorted};

/// An exactly kept sum of finite `f64` values.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ExactSum {
    /// Non-overlapping partials in increasing magnitude; their exact sum is the value.
    partials: Vec<f64>,
}

impl ExactSum {
    /// Zero.
    pub fn new() -> Self {
        ExactSum::default()
    }

    /// Adds `x` exactly (`x` finite; a sum that overflows `f64` is not exact).
    #[inline]
    pub fn add(&mut self, mut x: f64) {
        let mut i = 0;
        for j in 0..self.partials.len() {
            let mut y = self.partials[j];
            if x.abs() < y.abs() {
                std::mem::swap(&mut x, &mut y);
            }
            let hi = x + y;
            let lo = y - (hi - x);
            if lo != 0.0 {
                self.partials[i] = lo;
                i += 1;
            }
            x = hi;
        }
        self.partials.truncate(i);
        self.partials.push(x);
    }

    /// Adds another sum exactly.
    pub fn merge(&mut self, other: &ExactSum) {
        for &p in &other.partials {
            self.add(p);
        }
    }

    /// The sum, correctly rounded to `f64` (Python's `fsum` final step).
    pub fn value(&self) -> f64 {
        let p = &self.partials;
        let mut n = p.len();
        if n == 0 {
            return 0.0;
        }
        n -= 1;
        let mut hi = p[n];
        let mut lo = 0.0;
        while n > 0 {
            let x = hi;
            n -= 1;
            let y = p[n];
            hi = x + y;
            let yr = hi - x;
            lo = y - yr;
            if lo != 0.0 {
                break;
            }
        }
        // Round half to even across the partials below: when the rest pushes the
        // half-way case one way, take it.
        if n > 0 && ((lo < 0.0 && p[n - 1] < 0.0) || (lo > 0.0 && p[n - 1] > 0.0)) {
            let y = lo * 2.0;
            let x = hi + y;
            let yr = x - hi;
            if y == yr {
                hi = x;
            }
        }
        hi
    }
}

/// Bits per chunk of a [`WideSum`].
const CHUNK_BITS: u32 = 32;
/// Chunks of a [`WideSum`]: every finite double's bits (2^-1074 to 2^1024) plus carries.
const CHUNKS: usize = 68;
/// Adds between carry propagations: each add puts less than 2^32 into a chunk.
const ADDS_BEFORE_CARRY: u32 = 1 << 29;

/// An exact sum of finite `f64` values in a fixed-point accumulator wide enough for all of
/// them (Neal's "small superaccumulator"): an add is a few integer operations whatever the
/// values, where [`ExactSum`]'s cost grows with its partials; read as [`ExactSum`] does,
/// correctly rounded. Equal sums give equal bits whatever the order and the parts.
#[derive(Debug, Clone, PartialEq)]
pub struct WideSum {
    /// Chunk `i` counts units of 2^(32·i − 1074).
    chunks: Box<[i64; CHUNKS]>,
    adds: u32,
}

impl Default for WideSum {
    fn default() -> Self {
        WideSum {
            chunks: Box::new([0; CHUNKS]),
            adds: 0,
        }
    }
}

impl WideSum {
    /// Adds `x` exactly (`x` finite; a non-finite value is not counted).
    #[inline]
    pub fn add(&mut self, x: f64) {
        let bits = x.to_bits();
        let exp = ((bits >> 52) & 0x7ff) as u32;
        if exp == 0x7ff {
            return;
        }
        let frac = bits & ((1u64 << 52) - 1);
        // x = mantissa × 2^(shift − 1074).
        let (mantissa, shift) = if exp == 0 {
            (frac, 0)
        } else {
            (frac | (1u64 << 52), exp - 1)
        };
        if mantissa == 0 {
            return;
        }
        let at = (shift / CHUNK_BITS) as usize;
        let wide = u128::from(mantissa) << (shift % CHUNK_BITS);
        let parts = [
            (wide & 0xffff_ffff) as i64,
            ((wide >> 32) & 0xffff_ffff) as i64,
            (wide >> 64) as i64,
        ];
        let chunks = &mut self.chunks[at..at + 3];
        if bits >> 63 == 1 {
            chunks.iter_mut().zip(parts).for_each(|(c, p)| *c -= p);
        } else {
            chunks.iter_mut().zip(parts).for_each(|(c, p)| *c += p);
        }
        self.adds += 1;
        if self.adds >= ADDS_BEFORE_CARRY {
            self.carry();
        }
    }

    /// Moves each chunk's overflow into the next: every chunk but the last in
    /// [−2^31, 2^31), so the highest non-zero chunk is where the sum's magnitude is (a
    /// negative sum does not borrow from the top chunk).
    fn carry(&mut self) {
        for i in 0..CHUNKS - 1 {
            let c = (self.chunks[i] + (1 << (CHUNK_BITS - 1))) >> CHUNK_BITS;
            self.chunks[i] -= c << CHUNK_BITS;
            self.chunks[i + 1] += c;
        }
        self.adds = 0;
    }

    /// Adds another sum exactly.
    pub fn merge(&mut self, other: &WideSum) {
        self.carry();
        let mut other = other.clone();
        other.carry();
        for (a, b) in self.chunks.iter_mut().zip(other.chunks.iter()) {
            *a += b;
        }
        self.carry();
    }

    /// The sum as exact `f64` terms (one per non-zero chunk), smallest first; `None` when it
    /// is beyond `f64`'s range.
    fn terms(&self) -> Option<Vec<f64>> {
        let mut sum = self.clone();
        sum.carry();
        let mut terms = Vec::new();
        for (i, &c) in sum.chunks.iter().enumerate() {
            if c == 0 {
                continue;
            }
            let e = (i as i32) * CHUNK_BITS as i32 - 1074;
            if e > 1023 {
                return None;
            }
            let unit = if e >= -1022 {
                f64::from_bits(((e + 1023) as u64) << 52)
            } else {
                f64::from_bits(1u64 << (e + 1074))
            };
            let term = c as f64 * unit;
            if !term.is_finite() {
                return None;
            }
            terms.push(term);
        }
        Some(terms)
    }

    /// The sum, correctly rounded to `f64` (infinite beyond its range).
    pub fn value(&self) -> f64 {
        if let Some(terms) = self.terms() {
            let mut exact = ExactSum::new();
            terms.iter().for_each(|&t| exact.add(t));
            return exact.value();
        }
        let mut sum = self.clone();
        sum.carry();
        match sum.chunks.iter().rev().find(|&&c| c != 0) {
            Some(&c) if c < 0 => f64::NEG_INFINITY,
            _ => f64::INFINITY,
        }
    }
}

/// How a [`WideSum`] is written: its non-zero chunks after carrying, as `[index, value]`.
impl Serialize for WideSum {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut sum = self.clone();
        sum.carry();
        let pairs: Vec<(usize, i64)> = sum
            .chunks
            .iter()
            .enumerate()
            .filter(|(_, c)| **c != 0)
            .map(|(i, c)| (i, *c))
            .collect();
        pairs.serialize(s)
    }
}

impl<'de> Deserialize<'de> for WideSum {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let pairs = Vec::<(usize, i64)>::deserialize(d)?;
        let mut sum = WideSum::default();
        for (i, c) in pairs {
            let slot = sum
                .chunks
                .get_mut(i)
                .ok_or_else(|| serde::de::Error::custom(format!("chunk {i} out of range")))?;
            *slot = c;
        }
        Ok(sum)
    }
}

/// The exact sums behind a column's mean and standard deviation: Σx and Σx² (each square
/// split exactly into two doubles with a fused multiply-add).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Moments {
    /// Values summed.
    pub count: u64,
    /// Σx.
    pub sum: WideSum,
    /// Σx², exactly.
    pub sum_squares: WideSum,
}

impl Moments {
    /// Adds a value.
    #[inline]
    pub fn push(&mut self, x: f64) {
        self.count += 1;
        self.sum.add(x);
        let sq = x * x;
        self.sum_squares.add(sq);
        self.sum_squares.add(x.mul_add(x, -sq));
    }

    /// Adds another part's values.
    pub fn merge(&mut self, other: &Moments) {
        self.count += other.count;
        self.sum.merge(&other.sum);
        self.sum_squares.merge(&other.sum_squares);
    }

    /// The mean, when there is a value.
    pub fn mean(&self) -> Option<f64> {
        (self.count > 0).then(|| self.sum.value() / self.count as f64)
    }

    /// The sample standard deviation (ddof = 1), when there are two values: the numerator
    /// n·Σx² − (Σx)² is formed exactly and rounded once.
    pub fn std(&self) -> Option<f64> {
        if self.count < 2 {
            return None;
        }
        let n = self.count as f64;
        let (Some(squares), Some(s)) = (self.sum_squares.terms(), self.sum.terms()) else {
            return Some(f64::INFINITY);
        };
        let mut numerator = ExactSum::new();
        for &q in &squares {
            let p = n * q;
            numerator.add(p);
            numerator.add(n.mul_add(q, -p));
        }
        for &a in &s {
            for &b in &s {
                let p = a * b;
                numerator.add(-p);
                numerator.add(-(a.mul_add(b, -p)));
            }
        }
        let variance = numerator.value().max(0.0) / (n * (n - 1.0));
        Some(variance.sqrt())
    }
}

/// Compactor capacity of [`Kll`] sketches.
pub const KLL_K: usize = 512;
/// The normalized rank error [`Kll`] quantiles stay within (see the module docs).
pub const KLL_RANK_ERROR: f64 = 0.01;
/// Each lower level's capacity is this share of the one above.
const KLL_C: f64 = 2.0 / 3.0;

/// A KLL quantile sketch of finite values.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Kll {
    /// Values summarised.
    n: u64,
    /// `levels[h]` holds values of weight 2^h.
    levels: Vec<Vec<f64>>,
    /// The coin for compactions (a SplitMix64 state), so a sketch is reproducible.
    rng: u64,
}

impl Kll {
    /// An empty sketch whose coin starts at `seed`.
    pub fn new(seed: u64) -> Self {
        Kll {
            n: 0,
            levels: vec![Vec::new()],
            rng: seed,
        }
    }

    /// Values summarised.
    pub fn count(&self) -> u64 {
        self.n
    }

    /// Whether no value was compacted away (the quantiles are then exact).
    pub fn is_exact(&self) -> bool {
        self.levels.len() == 1
    }

    /// Values kept (memory is about this many `f64`s).
    pub fn retained(&self) -> usize {
        self.levels.iter().map(Vec::len).sum()
    }

    fn capacity(&self, h: usize) -> usize {
        let depth = (self.levels.len() - 1 - h) as i32;
        ((KLL_K as f64) * KLL_C.powi(depth)).ceil().max(2.0) as usize
    }

    fn total_capacity(&self) -> usize {
        (0..self.levels.len()).map(|h| self.capacity(h)).sum()
    }

    /// Adds a value.
    #[inline]
    pub fn push(&mut self, x: f64) {
        self.n += 1;
        self.levels[0].push(x);
        if self.levels[0].len() > self.capacity(0) {
            self.compress();
        }
    }

    /// Adds another sketch's values.
    pub fn merge(&mut self, other: &Kll) {
        while self.levels.len() < other.levels.len() {
            self.levels.push(Vec::new());
        }
        for (mine, theirs) in self.levels.iter_mut().zip(&other.levels) {
            mine.extend_from_slice(theirs);
        }
        self.n += other.n;
        self.compress();
    }

    /// Compacts the lowest full level until the sketch is within its capacity.
    fn compress(&mut self) {
        while self.retained() > self.total_capacity() {
            // Some level is over its capacity when the whole is.
            let Some(h) = (0..self.levels.len()).find(|&h| self.levels[h].len() > self.capacity(h))
            else {
                break;
            };
            if h + 1 == self.levels.len() {
                self.levels.push(Vec::new());
            }
            let mut level = std::mem::take(&mut self.levels[h]);
            level.sort_by(f64::total_cmp);
            // An odd value out stays at its level.
            let odd = (level.len() % 2 == 1).then(|| level.remove(0));
            let mut coin = SplitMix64::new(self.rng);
            let offset = (coin.next_u64() & 1) as usize;
            self.rng = coin.state();
            let promoted: Vec<f64> = level.iter().skip(offset).step_by(2).copied().collect();
            self.levels[h + 1].extend(promoted);
            self.levels[h] = odd.into_iter().collect();
        }
    }

    /// The `q`-quantile: numpy's linear interpolation while exact, else the value whose
    /// weighted rank is `q·(n − 1)`.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        if self.n == 0 {
            return None;
        }
        if self.is_exact() {
            let mut values = self.levels[0].clone();
            values.sort_by(f64::total_cmp);
            return Some(quantile_sorted(&values, q));
        }
        let mut weighted: Vec<(f64, u64)> = self
            .levels
            .iter()
            .enumerate()
            .flat_map(|(h, level)| level.iter().map(move |&x| (x, 1u64 << h)))
            .collect();
        weighted.sort_by(|a, b| a.0.total_cmp(&b.0));
        let target = q * (self.n - 1) as f64;
        let mut below = 0u64;
        let mut answer = weighted[0].0;
        for (x, w) in weighted {
            if below as f64 > target {
                break;
            }
            answer = x;
            below += w;
        }
        Some(answer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exact_rank(sorted: &[f64], x: f64) -> (usize, usize) {
        let lo = sorted.partition_point(|&v| v < x);
        let hi = sorted.partition_point(|&v| v <= x);
        (lo, hi)
    }

    #[test]
    fn exact_sum_is_order_free_and_correctly_rounded() {
        // math.fsum([0.1] * 10) == 1.0; sum() gives 0.9999999999999999.
        let mut s = ExactSum::new();
        for _ in 0..10 {
            s.add(0.1);
        }
        assert_eq!(s.value(), 1.0);
        // math.fsum([1e100, 1.0, -1e100, 1e-100]) == 1.0
        let mut s = ExactSum::new();
        for x in [1e100, 1.0, -1e100, 1e-100] {
            s.add(x);
        }
        assert_eq!(s.value(), 1.0);
        // Split in parts and merged in another order: the same value.
        let mut rng = SplitMix64::new(3);
        let values: Vec<f64> = (0..10_000)
            .map(|_| (rng.next_f64() - 0.5) * 10f64.powi((rng.below(30) as i32) - 15))
            .collect();
        let mut whole = ExactSum::new();
        values.iter().for_each(|&x| whole.add(x));
        let mut parts: Vec<ExactSum> = Vec::new();
        for chunk in values.chunks(777) {
            let mut p = ExactSum::new();
            chunk.iter().rev().for_each(|&x| p.add(x));
            parts.push(p);
        }
        let mut merged = ExactSum::new();
        for p in parts.iter().rev() {
            merged.merge(p);
        }
        assert_eq!(merged.value(), whole.value());
    }

    #[test]
    fn wide_sum_equals_the_exact_sum_whatever_the_values_and_parts() {
        let mut rng = SplitMix64::new(5);
        let values: Vec<f64> = (0..20_000)
            .map(|i| {
                let x = (rng.next_f64() - 0.5) * 10f64.powi((rng.below(600) as i32) - 300);
                match i % 500 {
                    0 => f64::MIN_POSITIVE * 0.25, // subnormal
                    1 => -1e300,
                    2 => 1e300,
                    _ => x,
                }
            })
            .collect();
        let mut exact = ExactSum::new();
        let mut wide = WideSum::default();
        values.iter().for_each(|&x| {
            exact.add(x);
            wide.add(x);
        });
        assert_eq!(wide.value(), exact.value());
        let mut merged = WideSum::default();
        for chunk in values.chunks(3_001) {
            let mut part = WideSum::default();
            chunk.iter().rev().for_each(|&x| part.add(x));
            let text = serde_json::to_string(&part).unwrap();
            merged.merge(&serde_json::from_str(&text).unwrap());
        }
        assert_eq!(merged.value(), exact.value());
        // math.fsum([0.1] * 10) == 1.0
        let mut w = WideSum::default();
        (0..10).for_each(|_| w.add(0.1));
        assert_eq!(w.value(), 1.0);
        assert_eq!(WideSum::default().value(), 0.0);
        let mut w = WideSum::default();
        w.add(f64::MAX);
        w.add(f64::MAX);
        assert_eq!(w.value(), f64::INFINITY);
    }

    #[test]
    fn moments_merge_to_the_one_pass_values_bit_for_bit() {
        // pandas: pd.Series([2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0]).std() == 2.138089935299395
        let mut m = Moments::default();
        for x in [2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0] {
            m.push(x);
        }
        assert_eq!(m.mean(), Some(5.0));
        assert_eq!(m.std(), Some(2.138_089_935_299_395));
        // A large offset does not cancel the variance away.
        let mut m = Moments::default();
        for x in [1e9 + 1.0, 1e9 + 2.0, 1e9 + 3.0] {
            m.push(x);
        }
        assert_eq!(m.std(), Some(1.0));
        let mut rng = SplitMix64::new(9);
        let values: Vec<f64> = (0..50_000).map(|_| rng.next_f64() * 1e4 - 3.0).collect();
        let mut whole = Moments::default();
        values.iter().for_each(|&x| whole.push(x));
        let mut merged = Moments::default();
        for chunk in values.chunks(4_999) {
            let mut p = Moments::default();
            chunk.iter().for_each(|&x| p.push(x));
            merged.merge(&p);
        }
        assert_eq!(merged.mean(), whole.mean());
        assert_eq!(merged.std(), whole.std());
        assert_eq!(merged.count, 50_000);
    }

    #[test]
    fn kll_is_exact_while_small() {
        let mut k = Kll::new(1);
        for x in [1.0, 2.0, 3.0, 4.0, 10.0] {
            k.push(x);
        }
        assert!(k.is_exact());
        // numpy: np.quantile([1, 2, 3, 4, 10], 0.9) -> 7.6
        assert!((k.quantile(0.9).unwrap() - 7.6).abs() < 1e-12);
        assert_eq!(Kll::new(1).quantile(0.5), None);
    }

    /// The stated bound on streams of several shapes, whole and merged from parts of
    /// several sizes: every reported quantile's true rank is within ε·n of q·n.
    #[test]
    fn kll_stays_within_its_rank_error_whole_and_merged() {
        let n = 300_000;
        let mut worst = 0.0f64;
        for (shape, seed) in [(0u8, 1u64), (1, 2), (2, 3), (0, 4)] {
            let mut rng = SplitMix64::new(seed);
            let values: Vec<f64> = (0..n)
                .map(|i| match shape {
                    0 => rng.next_f64(),
                    1 => (i % 1000) as f64, // sorted runs with ties
                    _ => (-rng.next_f64().ln()).powi(3), // heavy tail
                })
                .collect();
            let mut sorted = values.clone();
            sorted.sort_by(f64::total_cmp);
            let mut whole = Kll::new(seed);
            values.iter().for_each(|&x| whole.push(x));
            let mut sketches = vec![whole];
            for part in [1_000usize, 37_000, 150_000] {
                let mut merged = Kll::new(seed);
                for (i, chunk) in values.chunks(part).enumerate() {
                    let mut p = Kll::new(seed + i as u64);
                    chunk.iter().for_each(|&x| p.push(x));
                    merged.merge(&p);
                }
                sketches.push(merged);
            }
            for sketch in &sketches {
                assert_eq!(sketch.count(), n as u64);
                assert!(!sketch.is_exact(), "300,000 values are sketched");
                assert!(sketch.retained() < 4 * KLL_K, "{}", sketch.retained());
                for q in [0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99] {
                    let x = sketch.quantile(q).unwrap();
                    let (lo, hi) = exact_rank(&sorted, x);
                    let target = q * (n - 1) as f64;
                    let err = if target < lo as f64 {
                        lo as f64 - target
                    } else if target > hi as f64 {
                        target - hi as f64
                    } else {
                        0.0
                    } / n as f64;
                    worst = worst.max(err);
                    assert!(err <= KLL_RANK_ERROR, "shape {shape} q {q}: error {err}");
                }
            }
        }
        // Measured when written: at most 0.0025, a quarter of the stated bound.
        assert!(worst < KLL_RANK_ERROR, "{worst}");
    }
}
