//! The rollout section: production against its shadow or canary version on the window's
//! live traffic, and the decision the spec's `[rollout]` rule takes on it.
//!
//! A shadow scores copies of production's requests under the same request ids, so the two
//! are compared row by row: agreement of the predicted labels (or the distribution of the
//! differences), and the metric difference on the labelled rows both scored with a paired
//! bootstrap interval. A canary answers other requests, so its labelled rows and
//! production's are resampled independently. Latency and error rates come from the capture
//! records. The rule:
//!
//! - fewer than `min_rows` rows on either side, or fewer than `min_labelled` labelled rows:
//!   `wait`;
//! - the candidate's error rate above `max_error_rate`, or (a canary) its median latency
//!   above `max_latency_ratio` times production's: `end`;
//! - the interval of the improvement wholly below `-margin` (worse by more than the margin,
//!   with the rollout's confidence): `end`;
//! - its lower bound at or above `-margin` (not worse by more than the margin): `promote`
//!   a shadow; `step` a canary to its next weight, or `promote` it after the last;
//! - otherwise `wait` for more evidence.

use std::collections::HashMap;

use lambdaml::dataset::SplitMix64;
use lambdaml::metrics::higher_is_better;
use lambdaml::monitoring::{RolloutAgreement, RolloutComparison, RolloutReport, RolloutSide};
use lambdaml::registry::{Registry, Role};
use lambdaml::spec::RolloutSection;

use crate::window::Line;

/// Rows kept per side for pairing and the metric (a window larger than this compares a
/// prefix; the report's row counts stay exact).
const KEEP_ROWS: usize = 500_000;
/// Labelled rows the bootstrap resamples at most (a random subset beyond).
const BOOTSTRAP_ROWS: usize = 5_000;
/// Bootstrap resamples.
const RESAMPLES: u32 = 400;
/// A shadow's request production took but the shadow could not: it lacks a feature.
pub const SKIPPED_STATUS: u16 = 424;

/// One scored row of a side.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Row {
    /// The predicted class index, or the predicted value.
    predicted: f64,
    outputs: Vec<f64>,
    truth: Option<f64>,
    /// Capture time: rows are resampled in (time, request id, row) order, the same on
    /// every replay of the same traffic.
    at_ms: i64,
}

#[derive(Debug, Default)]
struct Side {
    version: String,
    requests: u64,
    rows: u64,
    errors: u64,
    latencies_us: Vec<u64>,
    kept: HashMap<(String, usize), Row>,
}

impl Side {
    fn report(&self) -> RolloutSide {
        let mut lat = self.latencies_us.clone();
        lat.sort_unstable();
        let q = |p: f64| -> Option<f64> {
            (!lat.is_empty()).then(|| {
                let i = ((lat.len() - 1) as f64 * p).round() as usize;
                lat[i] as f64 / 1e3
            })
        };
        RolloutSide {
            version: self.version.clone(),
            requests: self.requests,
            rows: self.rows,
            errors: self.errors,
            error_rate: if self.requests == 0 {
                0.0
            } else {
                self.errors as f64 / self.requests as f64
            },
            labelled: self.kept.values().filter(|r| r.truth.is_some()).count() as u64,
            metric: None,
            interval: None,
            latency_p50_ms: q(0.5),
            latency_p95_ms: q(0.95),
        }
    }
}

/// One side of a part's rollout accumulator.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub(crate) struct SidePart {
    version: String,
    requests: u64,
    rows: u64,
    errors: u64,
    latencies_us: Vec<u64>,
    kept: Vec<((String, usize), Row)>,
}

/// A part's rollout accumulator, as its summary carries it.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub(crate) struct RolloutPart {
    role: Role,
    version: String,
    production: SidePart,
    candidate: SidePart,
    skipped: u64,
}

/// The rollout's accumulator over a window's records.
#[derive(Debug)]
pub(crate) struct RolloutAcc {
    role: Role,
    weight: f64,
    production: Side,
    candidate: Side,
    skipped: u64,
    /// Output width per row: the classes (classification) or 1.
    width: usize,
    classification: bool,
    /// For each of production's classes, the candidate's output holding it (None: the
    /// candidate does not know the class).
    candidate_order: Option<Vec<Option<usize>>>,
    /// The candidate's output width.
    candidate_width: usize,
}

impl RolloutAcc {
    /// The accumulator of the registry's rollout (the shadow first when both run), or
    /// `None` when none is in progress.
    pub(crate) fn new(
        registry: &Registry,
        classes: Option<&[String]>,
        candidate_classes: Option<&[String]>,
    ) -> Option<Self> {
        let production = registry.production.clone()?;
        let (role, slot) = [Role::Shadow, Role::Canary]
            .into_iter()
            .find_map(|r| registry.slot(r).map(|s| (r, s.clone())))?;
        Some(RolloutAcc {
            role,
            weight: slot.weight,
            production: Side {
                version: production,
                ..Side::default()
            },
            candidate: Side {
                version: slot.version,
                ..Side::default()
            },
            skipped: 0,
            width: classes.map_or(1, <[String]>::len).max(1),
            classification: classes.is_some(),
            candidate_order: match (classes, candidate_classes) {
                (Some(p), Some(c)) if p != c => Some(
                    p.iter()
                        .map(|name| c.iter().position(|x| x == name))
                        .collect(),
                ),
                _ => None,
            },
            candidate_width: candidate_classes
                .map_or(classes.map_or(1, <[String]>::len), <[String]>::len)
                .max(1),
        })
    }

    /// What this part of a window saw, for the merge (the monitor's fan-out).
    pub(crate) fn part(&self) -> RolloutPart {
        let side = |s: &Side| SidePart {
            version: s.version.clone(),
            requests: s.requests,
            rows: s.rows,
            errors: s.errors,
            latencies_us: s.latencies_us.clone(),
            kept: s.kept.iter().map(|(k, r)| (k.clone(), r.clone())).collect(),
        };
        RolloutPart {
            role: self.role,
            version: self.candidate.version.clone(),
            production: side(&self.production),
            candidate: side(&self.candidate),
            skipped: self.skipped,
        }
    }

    /// Whether `part` judged the same rollout (role and candidate) as this window.
    pub(crate) fn judges(&self, part: &RolloutPart) -> bool {
        part.role == self.role
            && part.version == self.candidate.version
            && part.production.version == self.production.version
    }

    /// Adds a later part of the window: the same as having folded its records here while
    /// fewer than `KEEP_ROWS` rows per side are kept.
    pub(crate) fn absorb(&mut self, part: RolloutPart) {
        let add = |s: &mut Side, p: SidePart| {
            s.requests += p.requests;
            s.rows += p.rows;
            s.errors += p.errors;
            s.latencies_us.extend(p.latencies_us);
            for (k, r) in p.kept {
                if s.kept.len() < KEEP_ROWS || s.kept.contains_key(&k) {
                    s.kept.insert(k, r);
                }
            }
        };
        add(&mut self.production, part.production);
        add(&mut self.candidate, part.candidate);
        self.skipped += part.skipped;
    }

    /// The candidate version.
    pub(crate) fn candidate(&self) -> &str {
        &self.candidate.version
    }

    /// The role.
    pub(crate) fn role(&self) -> Role {
        self.role
    }

    /// Folds one record of the window; `label` finds a row's truth (class index or value).
    pub(crate) fn fold(
        &mut self,
        record: &Line<'_>,
        at_ms: i64,
        label: impl Fn(&str, usize) -> Option<f64>,
    ) {
        let Some(version) = record.version.as_deref() else {
            return;
        };
        let (side, width, order) = match record.role {
            None if version == self.production.version => (&mut self.production, self.width, None),
            Some(r) if r == self.role && version == self.candidate.version => (
                &mut self.candidate,
                self.candidate_width,
                self.candidate_order.as_ref(),
            ),
            _ => return,
        };
        let shadow = record.role == Some(Role::Shadow);
        if shadow && record.status == SKIPPED_STATUS {
            self.skipped += 1;
            return;
        }
        // A client's mistake (4xx) is both sides' to see; a shadow refusing a request
        // production took is the shadow's failure.
        if record.status >= 500 || (shadow && record.status >= 400) {
            side.requests += 1;
            side.errors += 1;
            return;
        }
        if record.status >= 400 {
            return;
        }
        side.requests += 1;
        side.latencies_us.push(record.latency_us);
        let rows = record.outputs.len() / width;
        side.rows += rows as u64;
        for r in 0..rows {
            if side.kept.len() >= KEEP_ROWS {
                break;
            }
            let own = &record.outputs[r * width..(r + 1) * width];
            // In production's class order, so both sides' outputs mean the same.
            let outputs: Vec<f64> = match order {
                Some(order) => order
                    .iter()
                    .map(|j| j.and_then(|j| own.get(j).copied()).unwrap_or(0.0))
                    .collect(),
                None => own.to_vec(),
            };
            let predicted = if self.classification {
                let mut best = 0;
                for (i, v) in outputs.iter().enumerate() {
                    if *v > outputs[best] {
                        best = i;
                    }
                }
                best as f64
            } else {
                outputs[0]
            };
            side.kept.insert(
                (record.request_id.to_string(), r),
                Row {
                    predicted,
                    truth: label(&record.request_id, r),
                    outputs,
                    at_ms,
                },
            );
        }
    }

    /// The section, with the rule's decision (not yet applied).
    pub(crate) fn finish(
        self,
        rule: &RolloutSection,
        metric: &str,
        classes: Option<&[String]>,
    ) -> RolloutReport {
        let mut production = self.production.report();
        let mut candidate = self.candidate.report();
        let agreement = self.agreement();
        let shadow = self.role == Role::Shadow;
        // The labelled rows each side's metric is computed on; a shadow's are the rows both
        // scored, so the difference is paired.
        let (p_rows, c_rows): (Vec<&Row>, Vec<&Row>) = if shadow {
            let mut keys: Vec<&(String, usize)> = self
                .production
                .kept
                .iter()
                .filter(|(k, r)| r.truth.is_some() && self.candidate.kept.contains_key(*k))
                .map(|(k, _)| k)
                .collect();
            keys.sort_by_key(|k| (self.production.kept[*k].at_ms, *k));
            keys.iter()
                .map(|k| (&self.production.kept[*k], &self.candidate.kept[*k]))
                .unzip()
        } else {
            (labelled(&self.production), labelled(&self.candidate))
        };
        let score = |rows: &[&Row]| metric_of(rows, metric, classes);
        production.metric = score(&p_rows);
        candidate.metric = score(&c_rows);
        let comparison = if p_rows.len().min(c_rows.len()) >= rule.min_labelled {
            let (p_int, c_int, diff) =
                bootstrap(&p_rows, &c_rows, shadow, metric, classes, rule.confidence);
            production.interval = p_int;
            candidate.interval = c_int;
            match (production.metric, candidate.metric, diff) {
                (Some(p), Some(c), Some(interval)) => Some(RolloutComparison {
                    metric: metric.to_string(),
                    improvement: if higher_is_better(metric) {
                        c - p
                    } else {
                        p - c
                    },
                    interval,
                    confidence: rule.confidence,
                    rows: c_rows.len().min(p_rows.len()) as u64,
                    resamples: RESAMPLES,
                }),
                _ => None,
            }
        } else {
            None
        };
        let mut report = RolloutReport {
            role: self.role.name().to_string(),
            weight: self.weight,
            production,
            candidate,
            skipped_requests: self.skipped,
            agreement,
            comparison,
            decision: String::new(),
            detail: String::new(),
            next_weight: None,
            applied: false,
        };
        decide(&mut report, rule, metric);
        report
    }

    fn agreement(&self) -> RolloutAgreement {
        let mut a = RolloutAgreement::default();
        if self.role == Role::Shadow {
            let pairs: Vec<(f64, f64)> = self
                .production
                .kept
                .iter()
                .filter_map(|(k, p)| {
                    self.candidate
                        .kept
                        .get(k)
                        .map(|c| (p.predicted, c.predicted))
                })
                .collect();
            a.paired_rows = pairs.len() as u64;
            if !pairs.is_empty() {
                if self.classification {
                    let same = pairs.iter().filter(|(p, c)| p == c).count();
                    a.label_agreement = Some(same as f64 / pairs.len() as f64);
                } else {
                    let n = pairs.len() as f64;
                    a.mean_difference = Some(pairs.iter().map(|(p, c)| c - p).sum::<f64>() / n);
                    let mut abs: Vec<f64> = pairs.iter().map(|(p, c)| (c - p).abs()).collect();
                    abs.sort_by(f64::total_cmp);
                    let q = |p: f64| abs[((abs.len() - 1) as f64 * p).round() as usize];
                    a.abs_difference_p50_p95 = Some([q(0.5), q(0.95)]);
                }
            }
        }
        let predictions = |s: &Side| -> Vec<f64> { s.kept.values().map(|r| r.predicted).collect() };
        let (p, c) = (predictions(&self.production), predictions(&self.candidate));
        if self.classification {
            a.drift_method = "jensen_shannon".into();
            let freq = |v: &[f64]| {
                let mut f = vec![0.0; self.width];
                for x in v {
                    if let Some(slot) = f.get_mut(*x as usize) {
                        *slot += 1.0;
                    }
                }
                f
            };
            a.drift_score = lambdaml::drift::jensen_shannon(&freq(&p), &freq(&c));
            a.drifted = a.drift_score.is_some_and(|d| d > 0.1);
        } else {
            a.drift_method = "ks".into();
            a.drift_score = lambdaml::drift::ks_2samp(&p, &c).map(|k| k.pvalue);
            a.drifted = a.drift_score.is_some_and(|pv| pv < 0.05);
        }
        a
    }
}

/// A side's labelled rows, in key order.
fn labelled(s: &Side) -> Vec<&Row> {
    let mut v: Vec<(&(String, usize), &Row)> =
        s.kept.iter().filter(|(_, r)| r.truth.is_some()).collect();
    v.sort_by(|a, b| (a.1.at_ms, a.0).cmp(&(b.1.at_ms, b.0)));
    v.into_iter().map(|(_, r)| r).collect()
}

/// The metric on `rows` (None when it is not defined, e.g. AUC with one class).
fn metric_of(rows: &[&Row], metric: &str, classes: Option<&[String]>) -> Option<f64> {
    if rows.is_empty() {
        return None;
    }
    let m = crate::analysis::metrics_of(
        classes,
        rows.iter()
            .map(|r| (r.truth.unwrap_or(f64::NAN), r.outputs.as_slice())),
    );
    m.get(metric).filter(|v| v.is_finite())
}

/// Percentile bootstrap intervals of each side's metric and of the improvement (paired:
/// the same resampled indices on both sides).
#[allow(clippy::type_complexity)]
fn bootstrap(
    p_rows: &[&Row],
    c_rows: &[&Row],
    paired: bool,
    metric: &str,
    classes: Option<&[String]>,
    confidence: f64,
) -> (Option<[f64; 2]>, Option<[f64; 2]>, Option<[f64; 2]>) {
    let mut rng = SplitMix64::new(0x005e_ed0f_b007);
    let subset = |rows: &[&Row], rng: &mut SplitMix64| -> Vec<usize> {
        if rows.len() <= BOOTSTRAP_ROWS {
            (0..rows.len()).collect()
        } else {
            (0..BOOTSTRAP_ROWS)
                .map(|_| rng.below(rows.len() as u64) as usize)
                .collect()
        }
    };
    let p_base = subset(p_rows, &mut rng);
    let c_base = if paired {
        p_base.clone()
    } else {
        subset(c_rows, &mut rng)
    };
    let sign = if higher_is_better(metric) { 1.0 } else { -1.0 };
    let (mut ps, mut cs, mut ds) = (Vec::new(), Vec::new(), Vec::new());
    let mut p_sample: Vec<&Row> = Vec::with_capacity(p_base.len());
    let mut c_sample: Vec<&Row> = Vec::with_capacity(c_base.len());
    for _ in 0..RESAMPLES {
        p_sample.clear();
        c_sample.clear();
        for _ in 0..p_base.len() {
            let i = p_base[rng.below(p_base.len() as u64) as usize];
            p_sample.push(p_rows[i]);
            if paired {
                c_sample.push(c_rows[i]);
            }
        }
        if !paired {
            for _ in 0..c_base.len() {
                let i = c_base[rng.below(c_base.len() as u64) as usize];
                c_sample.push(c_rows[i]);
            }
        }
        let (p, c) = (
            metric_of(&p_sample, metric, classes),
            metric_of(&c_sample, metric, classes),
        );
        if let Some(p) = p {
            ps.push(p);
        }
        if let Some(c) = c {
            cs.push(c);
        }
        if let (Some(p), Some(c)) = (p, c) {
            ds.push(sign * (c - p));
        }
    }
    let alpha = (1.0 - confidence) / 2.0;
    let interval = |mut v: Vec<f64>| -> Option<[f64; 2]> {
        if v.len() < (RESAMPLES as usize) / 2 {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
        Some([at(alpha), at(1.0 - alpha)])
    };
    (interval(ps), interval(cs), interval(ds))
}

/// Applies the spec's rule to the section (see the module docs).
fn decide(report: &mut RolloutReport, rule: &RolloutSection, metric: &str) {
    let role = report.role.clone();
    let (p, c) = (&report.production, &report.candidate);
    let set = |report: &mut RolloutReport, d: &str, detail: String| {
        report.decision = d.to_string();
        report.detail = detail;
    };
    if c.requests > 0 && c.error_rate > rule.max_error_rate {
        let detail = format!(
            "the {role} failed {} of {} requests ({:.2}%), over max_error_rate {}",
            c.errors,
            c.requests,
            100.0 * c.error_rate,
            rule.max_error_rate
        );
        return set(report, "end", detail);
    }
    if role == "canary"
        && let (Some(pl), Some(cl)) = (p.latency_p50_ms, c.latency_p50_ms)
        && c.rows as usize >= rule.min_rows
        && cl > rule.max_latency_ratio * pl.max(0.001)
    {
        let detail = format!(
            "the canary's median latency {cl:.3} ms is over {} × production's {pl:.3} ms",
            rule.max_latency_ratio
        );
        return set(report, "end", detail);
    }
    if (p.rows as usize) < rule.min_rows || (c.rows as usize) < rule.min_rows {
        let detail = format!(
            "{} rows by production and {} by the {role}: each needs min_rows = {}",
            p.rows, c.rows, rule.min_rows
        );
        return set(report, "wait", detail);
    }
    let Some(cmp) = report.comparison.clone() else {
        let detail = format!(
            "{} labelled rows by production and {} by the {role} (paired for a shadow): each needs min_labelled = {}",
            p.labelled, c.labelled, rule.min_labelled
        );
        return set(report, "wait", detail);
    };
    let [lo, hi] = cmp.interval;
    let margin = rule.margin;
    let summary = format!(
        "{metric} {:.4} ({role}) vs {:.4} (production) on {} rows: improvement {:+.4}, {:.0}% interval [{lo:+.4}, {hi:+.4}], margin {margin}",
        c.metric.unwrap_or(f64::NAN),
        p.metric.unwrap_or(f64::NAN),
        cmp.rows,
        cmp.improvement,
        100.0 * cmp.confidence
    );
    if hi < -margin {
        return set(
            report,
            "end",
            format!("{summary}: worse than production by more than the margin"),
        );
    }
    if lo >= -margin {
        if role == "canary"
            && let Some(next) = rule.next_step(report.weight)
        {
            report.next_weight = Some(next);
            return set(
                report,
                "step",
                format!("{summary}: no worse than production; the canary moves to {next}"),
            );
        }
        return set(
            report,
            "promote",
            format!("{summary}: no worse than production by more than the margin"),
        );
    }
    set(
        report,
        "wait",
        format!("{summary}: the interval straddles the margin; waiting for more evidence"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(predicted: f64, p1: f64, truth: f64) -> Row {
        Row {
            predicted,
            outputs: vec![1.0 - p1, p1],
            truth: Some(truth),
            at_ms: 0,
        }
    }

    fn acc(role: Role) -> RolloutAcc {
        RolloutAcc {
            role,
            weight: if role == Role::Canary { 0.05 } else { 1.0 },
            production: Side {
                version: "p".into(),
                ..Side::default()
            },
            candidate: Side {
                version: "c".into(),
                ..Side::default()
            },
            skipped: 0,
            width: 2,
            classification: true,
            candidate_order: None,
            candidate_width: 2,
        }
    }

    /// Rows where production is right with probability `p_right` and the candidate with
    /// `c_right` (deterministic patterns), keyed alike on both sides.
    fn fill(a: &mut RolloutAcc, n: usize, p_right: usize, c_right: usize) {
        for i in 0..n {
            let truth = (i % 2) as f64;
            let p_ok = i % 10 < p_right;
            let c_ok = (i * 7) % 10 < c_right;
            let guess = |ok: bool| if ok { truth } else { 1.0 - truth };
            let key = (format!("r{i}"), 0);
            let pp = guess(p_ok);
            let cp = guess(c_ok);
            a.production.kept.insert(
                key.clone(),
                row(pp, if pp == 1.0 { 0.8 } else { 0.2 }, truth),
            );
            a.candidate
                .kept
                .insert(key, row(cp, if cp == 1.0 { 0.8 } else { 0.2 }, truth));
        }
        for s in [&mut a.production, &mut a.candidate] {
            s.requests = n as u64;
            s.rows = n as u64;
            s.latencies_us = vec![100; n];
        }
    }

    fn classes() -> Vec<String> {
        vec!["0".into(), "1".into()]
    }

    #[test]
    fn a_better_shadow_is_promoted_a_worse_one_ended_and_too_few_rows_wait() {
        let rule = RolloutSection::default();
        let mut better = acc(Role::Shadow);
        fill(&mut better, 1000, 7, 9);
        let r = better.finish(&rule, "accuracy", Some(&classes()));
        assert_eq!(r.decision, "promote", "{}", r.detail);
        let cmp = r.comparison.unwrap();
        assert!((cmp.improvement - 0.2).abs() < 1e-9, "{cmp:?}");
        assert!(cmp.interval[0] > 0.0 && cmp.interval[1] > cmp.interval[0]);
        assert_eq!(r.agreement.paired_rows, 1000);

        let mut worse = acc(Role::Shadow);
        fill(&mut worse, 1000, 9, 7);
        let r = worse.finish(&rule, "accuracy", Some(&classes()));
        assert_eq!(r.decision, "end", "{}", r.detail);

        let mut few = acc(Role::Shadow);
        fill(&mut few, 50, 7, 9);
        let r = few.finish(&rule, "accuracy", Some(&classes()));
        assert_eq!(r.decision, "wait");
        assert!(r.detail.contains("min_rows"), "{}", r.detail);
    }

    #[test]
    fn a_good_canary_steps_then_is_promoted_and_a_failing_one_ends() {
        let rule = RolloutSection::default();
        let mut c = acc(Role::Canary);
        fill(&mut c, 1000, 8, 9);
        let r = c.finish(&rule, "accuracy", Some(&classes()));
        assert_eq!(r.decision, "step", "{}", r.detail);
        assert_eq!(r.next_weight, Some(0.25));
        let mut last = acc(Role::Canary);
        last.weight = 0.5;
        fill(&mut last, 1000, 8, 9);
        let r = last.finish(&rule, "accuracy", Some(&classes()));
        assert_eq!(r.decision, "promote", "after the last step below 1");
        // As good as production, on too few rows to tell: more evidence is needed.
        let mut even = acc(Role::Canary);
        fill(&mut even, 1000, 8, 8);
        let r = even.finish(&rule, "accuracy", Some(&classes()));
        assert_eq!(r.decision, "wait", "{}", r.detail);
        let mut failing = acc(Role::Canary);
        fill(&mut failing, 1000, 8, 9);
        failing.candidate.errors = 50;
        failing.candidate.requests = 1050;
        let r = failing.finish(&rule, "accuracy", Some(&classes()));
        assert_eq!(r.decision, "end");
        assert!(r.detail.contains("max_error_rate"), "{}", r.detail);
        let mut slow = acc(Role::Canary);
        fill(&mut slow, 1000, 8, 9);
        slow.candidate.latencies_us = vec![1000; 1000];
        let r = slow.finish(&rule, "accuracy", Some(&classes()));
        assert_eq!(r.decision, "end");
        assert!(r.detail.contains("latency"), "{}", r.detail);
    }

    #[test]
    fn records_fold_by_role_version_and_status() {
        let mut a = acc(Role::Shadow);
        fn line(json: &'static str) -> Line<'static> {
            serde_json::from_str(json).unwrap()
        }
        let none = |_: &str, _: usize| None;
        let truth = |_: &str, _: usize| Some(1.0);
        a.fold(
            &line(r#"{"request_id":"r1","timestamp":"t","version":"p","status":200,"latency_us":900,"outputs":[0.2,0.8]}"#),
            0,
            truth,
        );
        a.fold(
            &line(r#"{"request_id":"r1","timestamp":"t","version":"c","role":"shadow","status":200,"latency_us":50,"outputs":[0.6,0.4]}"#),
            0,
            truth,
        );
        // Skipped (a feature production's request lacks), failed, another version, and a
        // client's mistake on production's side.
        a.fold(
            &line(
                r#"{"request_id":"r2","timestamp":"t","version":"c","role":"shadow","status":424}"#,
            ),
            0,
            none,
        );
        a.fold(
            &line(
                r#"{"request_id":"r3","timestamp":"t","version":"c","role":"shadow","status":422}"#,
            ),
            0,
            none,
        );
        a.fold(
            &line(r#"{"request_id":"r4","timestamp":"t","version":"zz","status":200,"outputs":[0.5,0.5]}"#),
            0,
            none,
        );
        a.fold(
            &line(r#"{"request_id":"r5","timestamp":"t","version":"p","status":400}"#),
            0,
            none,
        );
        assert_eq!(a.skipped, 1);
        assert_eq!((a.production.requests, a.production.rows), (1, 1));
        assert_eq!(
            (a.candidate.requests, a.candidate.rows, a.candidate.errors),
            (2, 1, 1)
        );
        let r = a.finish(&RolloutSection::default(), "accuracy", Some(&classes()));
        assert_eq!(r.agreement.paired_rows, 1);
        assert_eq!(r.agreement.label_agreement, Some(0.0), "1 vs 0");
        assert_eq!(r.production.labelled, 1);
        assert_eq!(r.skipped_requests, 1);
        assert_eq!(r.candidate.error_rate, 0.5);
        assert_eq!(r.decision, "end", "half its requests failed: {}", r.detail);
    }
}
