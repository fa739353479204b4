//! Drift statistics: the numbers a monitor compares a live window with its baseline by.
//!
//! Every statistic here is defined as a named scipy / numpy computation and equals it on the
//! same inputs to 1e-9 (the tests carry reference values and the Python that produced them):
//!
//! | function | equals |
//! |---|---|
//! | [`ks_2samp`] | `scipy.stats.ks_2samp(a, b)` (two-sided, `method="auto"`: exact below 10,000 values a side, else `kstwo.sf` as scipy) |
//! | [`psi`] | numpy PSI over 10 bins from the baseline's deciles (see below) |
//! | [`wasserstein`] | `scipy.stats.wasserstein_distance(reference, current)` |
//! | [`jensen_shannon`] | `scipy.spatial.distance.jensenshannon(p, q)` (natural log) |
//! | [`chi_squared`] | `scipy.stats.chisquare(current_counts, reference_counts * n_cur / n_ref)` |
//! | [`l_infinity`] | `np.max(np.abs(p - q))` over the union of categories |
//!
//! PSI: interior edges are `np.unique(np.quantile(reference, [0.1, …, 0.9]))`, outer edges
//! −∞ and +∞, counts by `np.histogram`, proportions `count / n`, and an empty bin's
//! proportion replaced by `1e-4` (the smoothing Evidently and most PSI write-ups use) so the
//! logarithm stays finite; `psi = Σ (cur − ref) · ln(cur / ref)`.
//!
//! Inputs to the numeric tests are sorted value slices without missing values; [`sort_values`]
//! is a radix sort, several times faster than a comparison sort on the million-value windows a
//! monitor sees.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::dataset::quantile_sorted;

pub mod concept;
mod ks;

use ks::{gcd, outer_prob_inside, prob_outside_square};
pub use ks::{kolmogorov_sf, ln_gamma, smirnov_sf};

/// The proportion an empty PSI bin is given.
pub const PSI_EMPTY_BIN: f64 = 1e-4;
/// PSI bins (deciles of the baseline).
pub const PSI_BINS: usize = 10;
/// Beyond this many values on either side `ks_2samp`'s `auto` method is asymptotic.
pub const KS_EXACT_MAX_N: usize = 10_000;

/// Sorts finite values ascending (an LSD radix sort on the IEEE-754 bits; `-0.0` sorts before
/// `0.0`, which no statistic here can tell apart).
pub fn sort_values(values: &mut [f64]) {
    if values.len() < 512 {
        values.sort_unstable_by(f64::total_cmp);
        return;
    }
    const BITS: u32 = 11;
    const BUCKETS: usize = 1 << BITS;
    let key = |x: f64| {
        let b = x.to_bits();
        if b >> 63 == 1 { !b } else { b | (1 << 63) }
    };
    let mut keys: Vec<u64> = values.iter().map(|x| key(*x)).collect();
    let mut scratch = vec![0u64; keys.len()];
    const PASSES: usize = 64_usize.div_ceil(BITS as usize);
    // Every pass's histogram in one read of the keys.
    let mut counts = vec![[0usize; BUCKETS]; PASSES];
    for k in &keys {
        for (p, c) in counts.iter_mut().enumerate() {
            c[((k >> (p as u32 * BITS)) as usize) & (BUCKETS - 1)] += 1;
        }
    }
    for (p, c) in counts.iter_mut().enumerate() {
        // A pass where every key has the same digit moves nothing.
        if c.contains(&keys.len()) {
            continue;
        }
        let shift = p as u32 * BITS;
        let mut total = 0;
        for slot in c.iter_mut() {
            let n = *slot;
            *slot = total;
            total += n;
        }
        for k in &keys {
            let d = ((k >> shift) as usize) & (BUCKETS - 1);
            scratch[c[d]] = *k;
            c[d] += 1;
        }
        std::mem::swap(&mut keys, &mut scratch);
    }
    for (v, k) in values.iter_mut().zip(keys) {
        let b = if k >> 63 == 1 { k & !(1 << 63) } else { !k };
        *v = f64::from_bits(b);
    }
}

/// How a KS p-value was computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KsMethod {
    /// Exact path counting.
    Exact,
    /// The Kolmogorov distribution of `round(n1·n2 / (n1 + n2))`.
    Asymp,
}

/// A two-sample Kolmogorov–Smirnov test.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct KsResult {
    /// The largest distance between the two empirical CDFs.
    pub statistic: f64,
    /// Two-sided p-value.
    pub pvalue: f64,
    /// How the p-value was computed.
    pub method: KsMethod,
}

/// `scipy.stats.ks_2samp(a, b)` on sorted, non-empty samples; `None` when either is empty.
pub fn ks_2samp(a: &[f64], b: &[f64]) -> Option<KsResult> {
    let (n1, n2) = (a.len(), b.len());
    if n1 == 0 || n2 == 0 {
        return None;
    }
    let (mut i, mut j) = (0usize, 0usize);
    let (mut max_s, mut min_s) = (f64::NEG_INFINITY, f64::INFINITY);
    let (f1, f2) = (n1 as f64, n2 as f64);
    while i < n1 || j < n2 {
        let x = match (a.get(i), b.get(j)) {
            (Some(p), Some(q)) => p.min(*q),
            (Some(p), None) => *p,
            (None, Some(q)) => *q,
            (None, None) => break,
        };
        while i < n1 && a[i] <= x {
            i += 1;
        }
        while j < n2 && b[j] <= x {
            j += 1;
        }
        let d = i as f64 / f1 - j as f64 / f2;
        max_s = max_s.max(d);
        min_s = min_s.min(d);
    }
    let min_s = (-min_s).clamp(0.0, 1.0);
    let mut d = if min_s > max_s { min_s } else { max_s };
    let g = gcd(n1 as u64, n2 as u64);
    let mut method = if n1.max(n2) <= KS_EXACT_MAX_N {
        KsMethod::Exact
    } else {
        KsMethod::Asymp
    };
    let mut prob = f64::NAN;
    if method == KsMethod::Exact {
        let lcm = (n1 as u64 / g) * n2 as u64;
        let h = (d * lcm as f64).round_ties_even() as i64;
        d = h as f64 / lcm as f64;
        if h == 0 {
            prob = 1.0;
        } else {
            prob = if n1 == n2 {
                prob_outside_square(n1 as i64, h)
            } else {
                outer_prob_inside(n1 as i64, n2 as i64, g as i64, h)
            };
            if !(0.0..=1.0).contains(&prob) {
                method = KsMethod::Asymp;
            }
        }
    }
    if method == KsMethod::Asymp {
        let (m, n) = (f1.max(f2), f1.min(f2));
        let en = m * n / (m + n);
        prob = kolmogorov_sf(en.round_ties_even() as u64, d);
    }
    Some(KsResult {
        statistic: d,
        pvalue: prob.clamp(0.0, 1.0),
        method,
    })
}

/// `scipy.stats.wasserstein_distance(a, b)` on sorted, non-empty samples.
pub fn wasserstein(a: &[f64], b: &[f64]) -> Option<f64> {
    let (n1, n2) = (a.len(), b.len());
    if n1 == 0 || n2 == 0 {
        return None;
    }
    let (f1, f2) = (n1 as f64, n2 as f64);
    let (mut i, mut j) = (0usize, 0usize);
    let mut prev = a[0].min(b[0]);
    let mut sum = 0.0;
    loop {
        while i < n1 && a[i] <= prev {
            i += 1;
        }
        while j < n2 && b[j] <= prev {
            j += 1;
        }
        let next = match (a.get(i), b.get(j)) {
            (Some(p), Some(q)) => p.min(*q),
            (Some(p), None) => *p,
            (None, Some(q)) => *q,
            (None, None) => break,
        };
        sum += (i as f64 / f1 - j as f64 / f2).abs() * (next - prev);
        prev = next;
    }
    Some(sum)
}

/// Population standard deviation (`np.std`, ddof = 0).
pub fn std_pop(values: &[f64]) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    (values.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n).sqrt()
}

/// The PSI bin edges of a sorted reference: `np.unique(np.quantile(ref, [0.1 … 0.9]))`
/// (the interior edges; the outer ones are ±∞).
pub fn psi_edges(reference: &[f64]) -> Vec<f64> {
    let mut edges: Vec<f64> = (1..PSI_BINS)
        .map(|i| quantile_sorted(reference, i as f64 / PSI_BINS as f64))
        .collect();
    edges.dedup_by(|a, b| a == b);
    edges
}

/// Counts of sorted `values` in the bins `(-∞, e0), [e0, e1), …, [e_last, ∞)`.
pub fn bin_counts_sorted(values: &[f64], interior_edges: &[f64]) -> Vec<u64> {
    let mut counts = Vec::with_capacity(interior_edges.len() + 1);
    let mut start = 0usize;
    for e in interior_edges {
        let end = start + values[start..].partition_point(|v| v < e);
        counts.push((end - start) as u64);
        start = end;
    }
    counts.push((values.len() - start) as u64);
    counts
}

/// PSI of two histograms over the same bins (see the module docs for the smoothing).
pub fn psi_from_counts(reference: &[u64], current: &[u64]) -> Option<f64> {
    let (nr, nc): (u64, u64) = (reference.iter().sum(), current.iter().sum());
    if nr == 0 || nc == 0 || reference.len() != current.len() {
        return None;
    }
    let smooth = |p: f64| if p == 0.0 { PSI_EMPTY_BIN } else { p };
    Some(
        reference
            .iter()
            .zip(current)
            .map(|(r, c)| {
                let (r, c) = (smooth(*r as f64 / nr as f64), smooth(*c as f64 / nc as f64));
                (c - r) * (c / r).ln()
            })
            .sum(),
    )
}

/// PSI of two sorted samples, bins from the reference's deciles.
pub fn psi(reference: &[f64], current: &[f64]) -> Option<f64> {
    if reference.is_empty() || current.is_empty() {
        return None;
    }
    let edges = psi_edges(reference);
    psi_from_counts(
        &bin_counts_sorted(reference, &edges),
        &bin_counts_sorted(current, &edges),
    )
}

fn rel_entr(x: f64, y: f64) -> f64 {
    if x > 0.0 && y > 0.0 {
        x * (x / y).ln()
    } else if x == 0.0 && y >= 0.0 {
        0.0
    } else {
        f64::INFINITY
    }
}

/// `scipy.spatial.distance.jensenshannon(p, q)` (natural log) of two weight vectors.
pub fn jensen_shannon(p: &[f64], q: &[f64]) -> Option<f64> {
    let (sp, sq): (f64, f64) = (p.iter().sum(), q.iter().sum());
    if p.len() != q.len() || sp <= 0.0 || sq <= 0.0 {
        return None;
    }
    let mut js = 0.0;
    for (a, b) in p.iter().zip(q) {
        let (a, b) = (a / sp, b / sq);
        let m = (a + b) / 2.0;
        js += rel_entr(a, m) + rel_entr(b, m);
    }
    Some((js / 2.0).max(0.0).sqrt())
}

/// A chi-squared goodness-of-fit test.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ChiSquared {
    /// The statistic (`None`, meaning +∞, when the current window has a category the
    /// reference never had).
    pub statistic: Option<f64>,
    /// The p-value.
    pub pvalue: f64,
    /// Degrees of freedom.
    pub dof: usize,
}

/// `scipy.stats.chisquare(f_obs=current, f_exp=reference · n_cur / n_ref)` over the union
/// of categories (Evidently's categorical test).
pub fn chi_squared(reference: &[u64], current: &[u64]) -> Option<ChiSquared> {
    let (nr, nc): (u64, u64) = (reference.iter().sum(), current.iter().sum());
    if nr == 0 || nc == 0 || reference.len() != current.len() || reference.is_empty() {
        return None;
    }
    let k_norm = nc as f64 / nr as f64;
    let mut stat = 0.0;
    for (r, c) in reference.iter().zip(current) {
        let expected = *r as f64 * k_norm;
        let diff = *c as f64 - expected;
        if expected == 0.0 {
            if diff != 0.0 {
                stat = f64::INFINITY;
            }
            continue;
        }
        stat += diff * diff / expected;
    }
    let dof = reference.len() - 1;
    let pvalue = if stat.is_infinite() {
        0.0
    } else {
        chi2_sf(stat, dof as f64)
    };
    Some(ChiSquared {
        statistic: stat.is_finite().then_some(stat),
        pvalue,
        dof,
    })
}

/// The chi-squared survival function, `scipy.stats.chi2.sf(x, k)` (`Q(k/2, x/2)`). With no
/// degrees of freedom (one category) the distribution is a point mass at 0: 1.0 at `x = 0`.
pub fn chi2_sf(x: f64, k: f64) -> f64 {
    if k <= 0.0 {
        return if x > 0.0 { 0.0 } else { 1.0 };
    }
    gamma_q(k / 2.0, x / 2.0)
}

/// The regularised upper incomplete gamma function `Q(a, x)` (statrs), for `a > 0`.
pub fn gamma_q(a: f64, x: f64) -> f64 {
    if x <= 0.0 {
        return 1.0;
    }
    if x.is_infinite() {
        return 0.0;
    }
    statrs::function::gamma::gamma_ur(a, x).clamp(0.0, 1.0)
}

/// `max |p_i − q_i|` of two frequency vectors after normalising each to sum 1.
pub fn l_infinity(p: &[f64], q: &[f64]) -> Option<f64> {
    let (sp, sq): (f64, f64) = (p.iter().sum(), q.iter().sum());
    if p.len() != q.len() || sp <= 0.0 || sq <= 0.0 {
        return None;
    }
    Some(
        p.iter()
            .zip(q)
            .map(|(a, b)| (a / sp - b / sq).abs())
            .fold(0.0, f64::max),
    )
}

/// Aligns two category → count maps on the union of their keys (sorted).
pub fn align_counts(
    reference: &BTreeMap<String, u64>,
    current: &BTreeMap<String, u64>,
) -> (Vec<String>, Vec<u64>, Vec<u64>) {
    let mut keys: Vec<String> = reference.keys().chain(current.keys()).cloned().collect();
    keys.sort();
    keys.dedup();
    let r = keys
        .iter()
        .map(|k| reference.get(k).copied().unwrap_or(0))
        .collect();
    let c = keys
        .iter()
        .map(|k| current.get(k).copied().unwrap_or(0))
        .collect();
    (keys, r, c)
}

/// Histogram counts of two sorted samples on the same interior edges, as weights for
/// [`jensen_shannon`] on numeric data (the PSI bins).
pub fn binned_weights(reference: &[f64], current: &[f64]) -> (Vec<f64>, Vec<f64>) {
    let edges = psi_edges(reference);
    let to_f = |c: Vec<u64>| c.into_iter().map(|v| v as f64).collect::<Vec<f64>>();
    (
        to_f(bin_counts_sorted(reference, &edges)),
        to_f(bin_counts_sorted(current, &edges)),
    )
}

#[cfg(test)]
mod tests;
