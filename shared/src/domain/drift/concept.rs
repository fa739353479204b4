//! Concept-drift detectors on a model's error stream, as River 0.26 implements them (the
//! reference values in the tests come from `concept_reference.py`, kept beside this file):
//!
//! - [`Adwin`] (Bifet & Gavaldà's adaptive windowing, River's `drift.ADWIN` with its
//!   defaults: delta 0.002, clock 32, 5 buckets per row, sub-windows of at least 5, a grace
//!   period of 10) — on any real-valued stream (0/1 errors, absolute errors);
//! - [`Ddm`] (Gama et al.'s drift detection method, River's `drift.binary.DDM`: a warm start
//!   of 30, warning at 2 and drift at 3 standard deviations above the best error rate) — on
//!   0/1 errors.
//!
//! Both keep their whole state in a serialisable value, so the monitor carries it from one
//! run to the next, and both start over after a detection exactly as River does (on the
//! next update), so the positions they report match River's on the same sequence.

use serde::{Deserialize, Serialize};

/// One row of ADWIN's exponential histogram: up to `max_buckets + 1` entries, each the
/// total and the sum of squared deviations of `2^row` consecutive items, oldest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Row {
    totals: Vec<f64>,
    variances: Vec<f64>,
}

impl Row {
    fn new() -> Self {
        Row {
            totals: Vec::new(),
            variances: Vec::new(),
        }
    }

    fn len(&self) -> usize {
        self.totals.len()
    }

    fn push(&mut self, total: f64, variance: f64) {
        self.totals.push(total);
        self.variances.push(variance);
    }

    /// Drops the `n` oldest entries.
    fn drop_oldest(&mut self, n: usize) {
        self.totals.drain(..n);
        self.variances.drain(..n);
    }
}

/// ADWIN's parameters (River's defaults by [`Default`]).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct AdwinParams {
    /// Confidence of a cut; smaller is more conservative.
    pub delta: f64,
    /// A cut is looked for every `clock` items.
    pub clock: u32,
    /// Entries per histogram row before two merge (at least 2).
    pub max_buckets: usize,
    /// Items each sub-window needs.
    pub min_window_length: f64,
    /// No cut is looked for before the window holds more items than this.
    pub grace_period: f64,
}

impl Default for AdwinParams {
    fn default() -> Self {
        AdwinParams {
            delta: 0.002,
            clock: 32,
            max_buckets: 5,
            min_window_length: 5.0,
            grace_period: 10.0,
        }
    }
}

/// ADWIN. See the module docs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Adwin {
    params: AdwinParams,
    rows: Vec<Row>,
    total: f64,
    /// Sum of squared deviations of the window.
    variance: f64,
    width: f64,
    tick: u64,
    /// The previous update detected a change: this one starts over.
    detected: bool,
}

impl Default for Adwin {
    fn default() -> Self {
        Adwin::new(AdwinParams::default())
    }
}

impl Adwin {
    /// A detector with `params` (`max_buckets` at least 2).
    pub fn new(mut params: AdwinParams) -> Self {
        params.max_buckets = params.max_buckets.max(2);
        params.clock = params.clock.max(1);
        Adwin {
            params,
            rows: vec![Row::new()],
            total: 0.0,
            variance: 0.0,
            width: 0.0,
            tick: 0,
            detected: false,
        }
    }

    /// Items in the window.
    pub fn width(&self) -> f64 {
        self.width
    }

    /// The window's mean.
    pub fn estimation(&self) -> f64 {
        if self.width == 0.0 {
            0.0
        } else {
            self.total / self.width
        }
    }

    /// Adds `x`; true when a change is detected at this item.
    pub fn update(&mut self, x: f64) -> bool {
        if self.detected {
            *self = Adwin::new(self.params);
        }
        self.insert(x);
        self.detected = self.detect();
        self.detected
    }

    fn insert(&mut self, value: f64) {
        self.rows[0].push(value, 0.0);
        self.width += 1.0;
        let mut incremental = 0.0;
        if self.width > 1.0 {
            let d = value - self.total / (self.width - 1.0);
            incremental = (self.width - 1.0) * d * d / self.width;
        }
        self.variance += incremental;
        self.total += value;
        self.compress();
    }

    fn compress(&mut self) {
        let mut idx = 0;
        loop {
            if self.rows[idx].len() != self.params.max_buckets + 1 {
                break;
            }
            let n1 = (1u64 << idx) as f64;
            let (t0, t1) = (self.rows[idx].totals[0], self.rows[idx].totals[1]);
            let (v0, v1) = (self.rows[idx].variances[0], self.rows[idx].variances[1]);
            let mu1 = t0 / n1;
            let mu2 = t1 / n1;
            let total12 = t0 + t1;
            let temp = n1 * 0.5 * (mu1 - mu2) * (mu1 - mu2);
            let v12 = v0 + v1 + temp;
            if idx + 1 >= self.rows.len() {
                self.rows.push(Row::new());
            }
            self.rows[idx + 1].push(total12, v12);
            self.rows[idx].drop_oldest(2);
            if self.rows[idx + 1].len() <= self.params.max_buckets {
                break;
            }
            idx += 1;
        }
    }

    fn detect(&mut self) -> bool {
        let mut change = false;
        self.tick += 1;
        if self.tick.is_multiple_of(u64::from(self.params.clock))
            && self.width > self.params.grace_period
        {
            let mut reduce = true;
            while reduce {
                reduce = false;
                let mut exit = false;
                let (mut n0, mut n1) = (0.0f64, self.width);
                let (mut u0, mut u1) = (0.0f64, self.total);
                'outer: for idx in (0..self.rows.len()).rev() {
                    if exit {
                        break;
                    }
                    let size = (1u64 << idx) as f64;
                    let len = self.rows[idx].len();
                    for k in 0..len {
                        n0 += size;
                        n1 -= size;
                        let t = self.rows[idx].totals[k];
                        u0 += t;
                        u1 -= t;
                        if idx == 0 && k == len - 1 {
                            exit = true;
                            break;
                        }
                        let delta_mean = (u0 / n0) - (u1 / n1);
                        if n1 >= self.params.min_window_length
                            && n0 >= self.params.min_window_length
                            && self.cut(n0, n1, delta_mean)
                        {
                            reduce = true;
                            change = true;
                            if self.width > 0.0 {
                                self.delete_oldest();
                                break 'outer;
                            }
                        }
                    }
                }
            }
        }
        change
    }

    fn cut(&self, n0: f64, n1: f64, delta_mean: f64) -> bool {
        let mwl = self.params.min_window_length;
        let delta_prime = (2.0 * self.width.ln() / self.params.delta).ln();
        let m_recip = 1.0 / (n0 - mwl + 1.0) + 1.0 / (n1 - mwl + 1.0);
        let epsilon = (2.0 * m_recip * (self.variance / self.width) * delta_prime).sqrt()
            + 2.0 / 3.0 * delta_prime * m_recip;
        delta_mean.abs() > epsilon
    }

    fn delete_oldest(&mut self) {
        let last = self.rows.len() - 1;
        let n = (1u64 << last) as f64;
        let (u, v) = (self.rows[last].totals[0], self.rows[last].variances[0]);
        let mu = u / n;
        self.width -= n;
        self.total -= u;
        let mu_window = self.total / self.width;
        let inc = v + n * self.width * (mu - mu_window) * (mu - mu_window) / (n + self.width);
        self.variance -= inc;
        self.rows[last].drop_oldest(1);
        if self.rows[last].len() == 0 && self.rows.len() > 1 {
            self.rows.pop();
        }
    }
}

/// DDM's parameters (River's defaults by [`Default`]).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct DdmParams {
    /// Items before any verdict.
    pub warm_start: f64,
    /// Warning at this many standard deviations above the best error rate.
    pub warning_threshold: f64,
    /// Drift at this many.
    pub drift_threshold: f64,
}

impl Default for DdmParams {
    fn default() -> Self {
        DdmParams {
            warm_start: 30.0,
            warning_threshold: 2.0,
            drift_threshold: 3.0,
        }
    }
}

/// DDM. See the module docs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ddm {
    params: DdmParams,
    n: f64,
    p: f64,
    p_min: f64,
    s_min: f64,
    ps_min: f64,
    warning: bool,
    detected: bool,
}

impl Default for Ddm {
    fn default() -> Self {
        Ddm::new(DdmParams::default())
    }
}

impl Ddm {
    /// A detector with `params`.
    pub fn new(params: DdmParams) -> Self {
        Ddm {
            params,
            n: 0.0,
            p: 0.0,
            p_min: 0.0,
            s_min: 0.0,
            ps_min: f64::INFINITY,
            warning: false,
            detected: false,
        }
    }

    /// Whether the last update was in the warning zone.
    pub fn warning(&self) -> bool {
        self.warning
    }

    /// The error rate since the last start.
    pub fn error_rate(&self) -> f64 {
        self.p
    }

    /// Adds one outcome (true: an error); true when a drift is detected at this item.
    pub fn update(&mut self, error: bool) -> bool {
        if self.detected {
            *self = Ddm::new(self.params);
        }
        let x = if error { 1.0 } else { 0.0 };
        self.n += 1.0;
        self.p += (1.0 / self.n) * (x - self.p);
        let s = (self.p * (1.0 - self.p) / self.n).sqrt();
        if self.n > self.params.warm_start {
            if self.p + s <= self.ps_min {
                self.p_min = self.p;
                self.s_min = s;
                self.ps_min = self.p_min + self.s_min;
            }
            self.warning = self.p + s > self.p_min + self.params.warning_threshold * self.s_min;
            if self.p + s > self.p_min + self.params.drift_threshold * self.s_min {
                self.detected = true;
                self.warning = false;
            }
        }
        self.detected
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sequence(text: &str) -> Vec<f64> {
        text.lines().map(|l| l.trim().parse().unwrap()).collect()
    }

    fn adwin_detections(values: &[f64], params: AdwinParams) -> Vec<usize> {
        let mut a = Adwin::new(params);
        values
            .iter()
            .enumerate()
            .filter_map(|(i, x)| a.update(*x).then_some(i))
            .collect()
    }

    fn ddm_detections(values: &[f64]) -> (Vec<usize>, Vec<usize>) {
        let mut d = Ddm::default();
        let (mut drifts, mut warnings) = (Vec::new(), Vec::new());
        for (i, x) in values.iter().enumerate() {
            if d.update(*x == 1.0) {
                drifts.push(i);
            }
            if d.warning() {
                warnings.push(i);
            }
        }
        (drifts, warnings)
    }

    const A: &str = include_str!("testdata/seq_a.txt");
    const B: &str = include_str!("testdata/seq_b.txt");
    const C: &str = include_str!("testdata/seq_c.txt");
    const D: &str = include_str!("testdata/seq_d.txt");
    const DETECTIONS: &str = include_str!("testdata/concept_detections.json");

    /// River 0.26.1's detections on the same sequences (`concept_reference.py`).
    #[test]
    fn adwin_and_ddm_detect_where_river_does() {
        let reference: serde_json::Value = serde_json::from_str(DETECTIONS).unwrap();
        let indices = |v: &serde_json::Value| -> Vec<usize> {
            v.as_array()
                .unwrap()
                .iter()
                .map(|i| i.as_u64().unwrap() as usize)
                .collect()
        };
        for (name, text) in [("a", A), ("b", B), ("c", C), ("d", D)] {
            let values = sequence(text);
            assert_eq!(
                adwin_detections(&values, AdwinParams::default()),
                indices(&reference["adwin"][name]),
                "ADWIN on sequence {name}"
            );
            let clock1 = AdwinParams {
                clock: 1,
                ..AdwinParams::default()
            };
            assert_eq!(
                adwin_detections(&values, clock1),
                indices(&reference["extra"]["adwin_clock1"][name]),
                "ADWIN (clock 1) on sequence {name}"
            );
            if name != "d" {
                let (drifts, warnings) = ddm_detections(&values);
                assert_eq!(
                    drifts,
                    indices(&reference["ddm"][name]["drift"]),
                    "DDM drifts on {name}"
                );
                assert_eq!(
                    warnings,
                    indices(&reference["ddm"][name]["warning"]),
                    "DDM warnings on {name}"
                );
            }
        }
    }

    #[test]
    fn state_survives_a_round_trip_between_runs() {
        let values = sequence(A);
        let (first, rest) = values.split_at(700);
        let mut a = Adwin::default();
        for x in first {
            a.update(*x);
        }
        let mut resumed: Adwin = serde_json::from_str(&serde_json::to_string(&a).unwrap()).unwrap();
        let at: Vec<usize> = rest
            .iter()
            .enumerate()
            .filter_map(|(i, x)| resumed.update(*x).then_some(i + 700))
            .collect();
        assert_eq!(at, adwin_detections(&values, AdwinParams::default()));
        let mut d = Ddm::default();
        for x in first {
            d.update(*x == 1.0);
        }
        let mut resumed: Ddm = serde_json::from_str(&serde_json::to_string(&d).unwrap()).unwrap();
        let at: Vec<usize> = rest
            .iter()
            .enumerate()
            .filter_map(|(i, x)| resumed.update(*x == 1.0).then_some(i + 700))
            .collect();
        assert_eq!(at, ddm_detections(&values).0);
    }
}
