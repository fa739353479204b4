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

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// `Pr(D_{n,n} >= h/n)`, Horner form of the alternating binomial sum (scipy's
/// `_compute_prob_outside_square`).
fn prob_outside_square(n: i64, h: i64) -> f64 {
    let mut p = 0.0;
    let mut k = n / h;
    while k >= 0 {
        let mut p1 = 1.0;
        for j in 0..h {
            p1 = (n - k * h - j) as f64 * p1 / (n + k * h + j + 1) as f64;
        }
        p = p1 * (1.0 - p);
        k -= 1;
    }
    2.0 * p
}

/// The share of lattice paths from (0,0) to (m,n) that leave the band
/// `|x/m − y/n| < h / lcm(m, n)`, by the "1 − p" inside recursion (scipy's
/// `_compute_outer_prob_inside_method`, after Hodges and Viehmann).
fn outer_prob_inside(m: i64, n: i64, g: i64, h: i64) -> f64 {
    let (m, n) = if m < n { (n, m) } else { (m, n) };
    let (mg, ng) = (m / g, n / g);
    let mut minj: i64 = 0;
    let mut maxj: i64 = ((h as f64 / mg as f64).ceil() as i64).min(n + 1);
    let mut curlen = maxj - minj;
    let len_a = (2 * maxj + 2).min(n + 1).max(1) as usize;
    let mut a = vec![1.0f64; len_a];
    for v in a.iter_mut().take(maxj.max(0) as usize) {
        *v = 0.0;
    }
    for i in 1..=m {
        let (lastminj, lastlen) = (minj, curlen);
        minj = ((((ng * i - h) as f64) / mg as f64).floor() as i64 + 1).max(0);
        minj = minj.min(n);
        maxj = ((((ng * i + h) as f64) / mg as f64).ceil() as i64).min(n + 1);
        if maxj <= minj {
            return 1.0;
        }
        let mut val = if minj == 0 { 0.0 } else { 1.0 };
        for jj in 0..(maxj - minj) {
            let j = jj + minj;
            let prev = a
                .get((jj + minj - lastminj) as usize)
                .copied()
                .unwrap_or(1.0);
            val = (prev * i as f64 + val * j as f64) / (i + j) as f64;
            if let Some(slot) = a.get_mut(jj as usize) {
                *slot = val;
            }
        }
        curlen = maxj - minj;
        if lastlen > curlen {
            let from = (maxj - minj) as usize;
            let to = (from + (lastlen - curlen) as usize).min(a.len());
            for v in a.iter_mut().take(to).skip(from) {
                *v = 1.0;
            }
        }
    }
    a.get((maxj - minj - 1).max(0) as usize)
        .copied()
        .unwrap_or(f64::NAN)
}

/// The survival function of the two-sided one-sample Kolmogorov statistic `D_n` at `x`
/// (`scipy.stats.kstwo.sf(x, n)`, Simard & L'Ecuyer's choice of algorithm by region).
pub fn kolmogorov_sf(n: u64, x: f64) -> f64 {
    if n == 0 || x.is_nan() {
        return f64::NAN;
    }
    let nf = n as f64;
    if x >= 1.0 {
        return 0.0;
    }
    if x <= 0.0 {
        return 1.0;
    }
    let t = nf * x;
    if t <= 1.0 {
        if t <= 0.5 {
            return 1.0;
        }
        let prob = if n <= 140 {
            (1..=n).fold(1.0, |p, i| p * (i as f64 * (1.0 / nf) * (2.0 * t - 1.0)))
        } else {
            (log_nfactorial_div_n_pow_n(nf) + nf * (2.0 * t - 1.0).ln()).exp()
        };
        return (1.0 - prob).clamp(0.0, 1.0);
    }
    if t >= nf - 1.0 {
        return (2.0 * (1.0 - x).powf(nf)).clamp(0.0, 1.0);
    }
    if x >= 0.5 {
        return (2.0 * smirnov_sf(n, x)).clamp(0.0, 1.0);
    }
    let nxsquared = t * x;
    if n <= 140 {
        if nxsquared <= 0.754_693 {
            return (1.0 - durbin_mtw_cdf(n, x)).clamp(0.0, 1.0);
        }
        if nxsquared <= 4.0 {
            return (1.0 - pomeranz_cdf(n, x)).clamp(0.0, 1.0);
        }
        return (2.0 * smirnov_sf(n, x)).clamp(0.0, 1.0);
    }
    if nxsquared >= 370.0 {
        return 0.0;
    }
    if nxsquared >= 2.2 {
        return (2.0 * smirnov_sf(n, x)).clamp(0.0, 1.0);
    }
    let cdf = if n <= 100_000 && nf * x.powf(1.5) <= 1.4 {
        durbin_mtw_cdf(n, x)
    } else {
        pelz_good_cdf(nf, x)
    };
    (1.0 - cdf).clamp(0.0, 1.0)
}

// scipy's literals, kept digit for digit.
#[allow(clippy::excessive_precision)]
const STIRLING: [f64; 8] = [
    -2.955_065_359_477_124_183e-2,
    6.410_256_410_256_410_256_4e-3,
    -1.917_526_917_526_917_526_9e-3,
    8.417_508_417_508_417_508_4e-4,
    -5.952_380_952_380_952_381e-4,
    7.936_507_936_507_936_507_9e-4,
    -2.777_777_777_777_777_777_8e-3,
    8.333_333_333_333_333_333_3e-2,
];

fn log_nfactorial_div_n_pow_n(n: f64) -> f64 {
    let rn = 1.0 / n;
    let poly = STIRLING.iter().fold(0.0, |acc, c| acc * (rn / n) + c);
    n.ln() / 2.0 - n + (2.0 * std::f64::consts::PI).ln() / 2.0 + rn * poly
}

const EP128: f64 = 340_282_366_920_938_463_463_374_607_431_768_211_456.0; // 2^128
const EM128: f64 = 1.0 / EP128;

/// `Pr(D_n <= d)` by the Durbin matrix (Marsaglia, Tsang & Wang), scipy's `_kolmogn_DMTW`.
fn durbin_mtw_cdf(n: u64, d: f64) -> f64 {
    let nf = n as f64;
    if d >= 1.0 {
        return 1.0;
    }
    let nd = nf * d;
    if nd <= 0.5 {
        return 0.0;
    }
    let k = nd.ceil() as usize;
    let h = k as f64 - nd;
    let m = 2 * k - 1;
    let mut hm = vec![0.0f64; m * m];
    let mut v: Vec<f64> = (1..=m).map(|i| 1.0 - h.powi(i as i32)).collect();
    let mut w = vec![0.0f64; m];
    let mut fac = 1.0;
    for j in 1..=m {
        w[j - 1] = fac;
        fac /= j as f64;
        v[j - 1] *= fac;
    }
    let tt = (2.0 * h - 1.0).max(0.0).powi(m as i32) - 2.0 * h.powi(m as i32);
    v[m - 1] = (1.0 + tt) * fac;
    for i in 1..m {
        for r in (i - 1)..m {
            hm[r * m + i] = w[r - (i - 1)];
        }
    }
    for r in 0..m {
        hm[r * m] = v[r];
    }
    for c in 0..m {
        hm[(m - 1) * m + c] = v[m - 1 - c];
    }
    let matmul = |a: &[f64], b: &[f64]| {
        let mut out = vec![0.0f64; m * m];
        for r in 0..m {
            for kk in 0..m {
                let x = a[r * m + kk];
                if x == 0.0 {
                    continue;
                }
                for c in 0..m {
                    out[r * m + c] += x * b[kk * m + c];
                }
            }
        }
        out
    };
    let mut pwr = vec![0.0f64; m * m];
    for i in 0..m {
        pwr[i * m + i] = 1.0;
    }
    let (mut nn, mut expnt, mut hexpnt) = (n, 0i64, 0i64);
    while nn > 0 {
        if nn % 2 == 1 {
            pwr = matmul(&pwr, &hm);
            expnt += hexpnt;
        }
        hm = matmul(&hm, &hm);
        hexpnt *= 2;
        if hm[(k - 1) * m + (k - 1)].abs() > EP128 {
            for x in hm.iter_mut() {
                *x /= EP128;
            }
            hexpnt += 128;
        }
        nn /= 2;
    }
    let mut p = pwr[(k - 1) * m + (k - 1)];
    for i in 1..=n {
        p = i as f64 * p / nf;
        if p.abs() < EM128 {
            p *= EP128;
            expnt -= 128;
        }
    }
    if expnt != 0 {
        p *= 2f64.powi(expnt as i32);
    }
    p.clamp(0.0, 1.0)
}

fn pomeranz_j1j2(i: i64, n: i64, ll: i64, ceilf: i64, roundf: i64) -> (i64, i64) {
    let (j1, j2) = if i == 0 {
        (-ll - ceilf - 1, ll + ceilf - 1)
    } else {
        let (ip1div2, ip1mod2) = ((i + 1) / 2, (i + 1) % 2);
        if ip1mod2 == 0 {
            if ip1div2 == n + 1 {
                (n - ll - ceilf - 1, n + ll + ceilf - 1)
            } else {
                (ip1div2 - 1 - ll - roundf - 1, ip1div2 + ll - 1 + ceilf - 1)
            }
        } else {
            (ip1div2 - 1 - ll - 1, ip1div2 + ll + roundf - 1)
        }
    };
    ((j1 + 2).max(0), j2.min(n))
}

/// `Pr(D_n <= x)` by Pomeranz's recursion, scipy's `_kolmogn_Pomeranz`.
fn pomeranz_cdf(n: u64, x: f64) -> f64 {
    let ni = n as i64;
    let nf = n as f64;
    let t = nf * x;
    let ll = t.floor() as i64;
    let f = t - ll as f64;
    let g = f.min(1.0 - f);
    let ceilf = i64::from(f > 0.0);
    let roundf = i64::from(f > 0.5);
    let npwrs = (2 * (ll + 1)) as usize;
    let mut gpower = vec![1.0f64; npwrs];
    let mut twogpower = vec![1.0f64; npwrs];
    let mut onem2gpower = vec![1.0f64; npwrs];
    let (g_n, two_g_n, one_m2g_n) = (g / nf, 2.0 * g / nf, (1.0 - 2.0 * g) / nf);
    for m in 1..npwrs {
        gpower[m] = gpower[m - 1] * g_n / m as f64;
        twogpower[m] = twogpower[m - 1] * two_g_n / m as f64;
        onem2gpower[m] = onem2gpower[m - 1] * one_m2g_n / m as f64;
    }
    let mut v0 = vec![0.0f64; npwrs];
    let mut v1 = vec![0.0f64; npwrs];
    v1[0] = 1.0;
    let (mut v0s, mut v1s) = (0i64, 0i64);
    let mut expnt = 0i64;
    let mut j1 = pomeranz_j1j2(0, ni, ll, ceilf, roundf).0;
    for i in 1..(2 * ni + 2) {
        let k1 = j1;
        std::mem::swap(&mut v0, &mut v1);
        std::mem::swap(&mut v0s, &mut v1s);
        v1.iter_mut().for_each(|x| *x = 0.0);
        let j2;
        (j1, j2) = pomeranz_j1j2(i, ni, ll, ceilf, roundf);
        let pwrs = if i == 1 || i == 2 * ni + 1 {
            &gpower
        } else if i % 2 == 1 {
            &twogpower
        } else {
            &onem2gpower
        };
        let ln2 = j2 - k1 + 1;
        if ln2 > 0 {
            let ln2u = ln2 as usize;
            let start = (k1 - v0s) as usize;
            let seg: Vec<f64> = (0..ln2u)
                .map(|q| v0.get(start + q).copied().unwrap_or(0.0))
                .collect();
            let conv_start = (j1 - k1) as usize;
            let conv_len = (j2 - j1 + 1).max(0) as usize;
            for out in 0..conv_len {
                let idx = conv_start + out;
                // Full convolution term `idx` of seg * pwrs[..ln2].
                let mut s = 0.0;
                let lo = idx.saturating_sub(ln2u - 1);
                for (q, v) in seg.iter().enumerate().take(idx.min(ln2u - 1) + 1).skip(lo) {
                    s += v * pwrs.get(idx - q).copied().unwrap_or(0.0);
                }
                if let Some(slot) = v1.get_mut(out) {
                    *slot = s;
                }
            }
            let mx = v1.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            if 0.0 < mx && mx < EM128 {
                v1.iter_mut().for_each(|x| *x *= EP128);
                expnt -= 128;
            }
            v1s = v0s + j1 - k1;
        }
    }
    let mut ans = v1.get((ni - v1s) as usize).copied().unwrap_or(0.0);
    for m in 1..=n {
        if ans.abs() > EP128 {
            ans *= EM128;
            expnt += 128;
        }
        ans *= m as f64;
    }
    if expnt != 0 {
        ans *= 2f64.powi(expnt as i32);
    }
    ans.clamp(0.0, 1.0)
}

/// The Pelz–Good asymptotic `Pr(D_n <= x)`, scipy's `_kolmogn_PelzGood`.
fn pelz_good_cdf(n: f64, x: f64) -> f64 {
    use std::f64::consts::PI;
    if x <= 0.0 {
        return 0.0;
    }
    if x >= 1.0 {
        return 1.0;
    }
    let z = n.sqrt() * x;
    let (z2, z3, z4, z6) = (z * z, z.powi(3), z.powi(4), z.powi(6));
    let qlog = -PI * PI / 8.0 / z2;
    if qlog < -708.0 {
        return 0.0;
    }
    let q = qlog.exp();
    let (pi2, pi4, pi6) = (PI * PI, PI.powi(4), PI.powi(6));
    let k1a = -z2;
    let k1b = pi2 / 4.0;
    let k2a = 6.0 * z6 + 2.0 * z4;
    let k2b = (2.0 * z4 - 5.0 * z2) * pi2 / 4.0;
    let k2c = pi4 * (1.0 - 2.0 * z2) / 16.0;
    let k3d = pi6 * (5.0 - 30.0 * z2) / 64.0;
    let k3c = pi4 * (-60.0 * z2 + 212.0 * z4) / 16.0;
    let k3b = pi2 * (135.0 * z4 - 96.0 * z6) / 4.0;
    let k3a = -30.0 * z6 - 90.0 * z.powi(8);
    let mut k = [0.0f64; 4];
    let maxk = (16.0 * z / PI).ceil() as i64;
    for kk in (1..=maxk).rev() {
        let m = (2 * kk - 1) as f64;
        let (m2, m4, m6) = (m * m, m.powi(4), m.powi(6));
        let qpower = q.powf((8 * kk) as f64);
        let coeffs = [
            1.0,
            k1a + k1b * m2,
            k2a + k2b * m2 + k2c * m4,
            k3a + k3b * m2 + k3c * m4 + k3d * m6,
        ];
        for (v, c) in k.iter_mut().zip(coeffs) {
            *v = *v * qpower + c;
        }
    }
    let sqrt2pi = (2.0 * PI).sqrt();
    let divisors = [z, 6.0 * z4, 72.0 * z.powi(7), 6480.0 * z.powi(10)];
    for (v, d) in k.iter_mut().zip(divisors) {
        *v = *v * q * sqrt2pi / d;
    }
    let q2 = (-pi2 / 2.0 / z2).exp();
    let sqrt3z = 3f64.sqrt() * z;
    let (mut k2extra, mut k3extra) = (0.0, 0.0);
    for kk in (1..=maxk).rev() {
        let ks = kk as f64;
        let ks2 = ks * ks;
        let qp = q2.powf(ks2);
        k2extra += ks2 * qp;
        let kspi = PI * ks;
        k3extra += (sqrt3z + kspi) * (sqrt3z - kspi) * ks2 * qp;
    }
    k[2] += k2extra * pi2 * sqrt2pi / (-36.0 * z3);
    k[3] += k3extra * pi2 * sqrt2pi / (216.0 * z6);
    for (i, v) in k.iter_mut().enumerate() {
        *v /= n.powf(i as f64 / 2.0);
    }
    k.iter().sum()
}

/// `ln Γ(x)` for `x > 0` (statrs; NaN elsewhere).
pub fn ln_gamma(x: f64) -> f64 {
    if x <= 0.0 || x.is_nan() {
        return f64::NAN;
    }
    statrs::function::gamma::ln_gamma(x)
}

/// The one-sided Smirnov survival function `Pr(D+_n >= x)` (`scipy.special.smirnov(n, x)`),
/// by the Birnbaum–Tingey lower sum in log space with scipy's early stop.
pub fn smirnov_sf(n: u64, x: f64) -> f64 {
    if !(n > 0 && (0.0..=1.0).contains(&x)) {
        return f64::NAN;
    }
    let nf = n as f64;
    if n == 1 {
        return 1.0 - x;
    }
    if x == 0.0 {
        return 1.0;
    }
    if x == 1.0 {
        return 0.0;
    }
    let nx = nf * x;
    let mut nxfl = nx.floor() as i64;
    let mut alpha = nx - nxfl as f64;
    if alpha >= 1.0 {
        nxfl += 1;
        alpha = 0.0;
    }
    if nxfl == 0 || (nxfl == 1 && alpha == 0.0) {
        let t = (1.0 + x).powf(nf - 1.0);
        return 1.0 - x * t;
    }
    if -2.0 * nf * x * x < -708.396_418_532_264_1 {
        return 0.0;
    }
    let ni = n as i64;
    if nxfl >= ni - 1 {
        return (1.0 - x).powf(nf);
    }
    if n > 1_000_000 {
        let logp = -(6.0 * nf * x + 1.0).powi(2) / 18.0 / nf;
        return if logp < -std::f64::consts::LN_2 {
            logp.exp()
        } else {
            1.0 + logp.exp_m1()
        };
    }
    let mut n1mxfl = ni - nxfl - i64::from(alpha != 0.0);
    if alpha == 0.0 {
        n1mxfl -= 1;
    }
    let n_terms = n1mxfl + 1;
    let ln_n1 = ln_gamma(nf + 1.0);
    let exact_log_c = |v: f64| ln_n1 - ln_gamma(v + 1.0) - ln_gamma(nf - v + 1.0);
    let mut sum = 0.0f64;
    let vmid = ni / 2;
    // ln C(n, v) advances by ln((n − v + 1) / v) a term, re-anchored on ln Γ every 512 terms
    // so rounding cannot accumulate: one logarithm a term instead of three ln Γ.
    let mut log_c = 0.0f64;
    for v in 0..n_terms {
        let vf = v as f64;
        if v % 512 == 0 {
            log_c = exact_log_c(vf);
        } else {
            log_c += ((nf - vf + 1.0) / vf).ln();
        }
        let lower = (nf - vf) / nf - x;
        let upper = vf / nf + x;
        let log_a = log_c + (nf - vf) * lower.ln() + (vf - 1.0) * upper.ln();
        let a = if log_a < -745.0 { 0.0 } else { log_a.exp() };
        if a.is_finite() {
            sum += a;
        }
        if a != 0.0 {
            if 4.0 * (n_terms - v) as f64 * a.abs() < f64::EPSILON * sum && v != n_terms - 1 {
                break;
            }
        } else if v > vmid {
            break;
        }
    }
    (x * sum).clamp(0.0, 1.0)
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
