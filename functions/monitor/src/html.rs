//! `report.html`: the report for people — one self-contained page, inline SVG plots, no
//! scripts or fonts from the network. A few lines of inline script only count the plots
//! the browser drew (`data-plots-rendered` on `<body>`), which the test command checks in
//! headless Chromium.

use std::fmt::Write;

use crate::report::{Distribution, FeatureDrift, Report};

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn num(v: Option<f64>) -> String {
    match v {
        None => "—".into(),
        Some(v) if v != 0.0 && (v.abs() < 1e-3 || v.abs() >= 1e5) => format!("{v:.3e}"),
        Some(v) => format!("{v:.4}"),
    }
}

/// How far past its threshold a feature is: > 1 means drifted.
fn ratio(f: &FeatureDrift) -> f64 {
    match f.score {
        None => 0.0,
        Some(s) if f.method == "ks" || f.method == "chi_squared" => {
            if s <= 0.0 {
                10.0
            } else {
                (f.threshold / s).min(10.0)
            }
        }
        Some(s) => (s / f.threshold).min(10.0),
    }
}

const W: f64 = 640.0;

fn bars(id: &str, title: &str, items: &[(String, f64, bool)], line_at: Option<f64>) -> String {
    let h = 24.0 * items.len() as f64 + 40.0;
    let max = items
        .iter()
        .map(|i| i.1)
        .fold(line_at.unwrap_or(0.0), f64::max)
        .max(1e-12);
    let left = 170.0;
    let scale = (W - left - 60.0) / max;
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<figure><figcaption>{}</figcaption><svg class="plot" data-plot="{}" width="{W}" height="{h}" viewBox="0 0 {W} {h}" role="img">"#,
        esc(title),
        esc(id)
    );
    for (i, (label, v, hot)) in items.iter().enumerate() {
        let y = 10.0 + 24.0 * i as f64;
        let _ = write!(
            s,
            r#"<text x="{}" y="{}" text-anchor="end" class="lbl">{}</text><rect x="{left}" y="{y}" width="{:.1}" height="16" class="{}"/><text x="{:.1}" y="{}" class="val">{}</text>"#,
            left - 6.0,
            y + 12.0,
            esc(label),
            (v * scale).max(1.0),
            if *hot { "bar hot" } else { "bar" },
            left + (v * scale).max(1.0) + 4.0,
            y + 12.0,
            num(Some(*v))
        );
    }
    if let Some(l) = line_at {
        let x = left + l * scale;
        let _ = write!(
            s,
            r#"<line x1="{x:.1}" x2="{x:.1}" y1="4" y2="{}" class="limit"/>"#,
            h - 20.0
        );
    }
    s.push_str("</svg></figure>");
    s
}

fn distribution(id: &str, title: &str, d: &Distribution) -> String {
    let n = d.labels.len().max(1) as f64;
    let h = 220.0;
    let (left, bottom) = (40.0, 170.0);
    let group = (W - left - 10.0) / n;
    let max = d
        .reference
        .iter()
        .chain(&d.current)
        .fold(0.0f64, |a, b| a.max(*b))
        .max(1e-12);
    let scale = (bottom - 20.0) / max;
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<figure><figcaption>{} <span class="key ref">training</span> <span class="key cur">window</span></figcaption><svg class="plot" data-plot="{}" width="{W}" height="{h}" viewBox="0 0 {W} {h}" role="img">"#,
        esc(title),
        esc(id)
    );
    for (i, label) in d.labels.iter().enumerate() {
        let x = left + group * i as f64;
        let bw = (group / 2.0 - 2.0).max(1.0);
        let r = d.reference.get(i).copied().unwrap_or(0.0);
        let c = d.current.get(i).copied().unwrap_or(0.0);
        let _ = write!(
            s,
            r#"<rect x="{:.1}" y="{:.1}" width="{bw:.1}" height="{:.1}" class="ref"><title>{} training {:.3}</title></rect><rect x="{:.1}" y="{:.1}" width="{bw:.1}" height="{:.1}" class="cur"><title>{} window {:.3}</title></rect><text x="{:.1}" y="{}" class="tick" transform="rotate(35 {:.1} {})">{}</text>"#,
            x + 1.0,
            bottom - r * scale,
            (r * scale).max(0.5),
            esc(label),
            r,
            x + 1.0 + bw + 1.0,
            bottom - c * scale,
            (c * scale).max(0.5),
            esc(label),
            c,
            x + 2.0,
            bottom + 12.0,
            x + 2.0,
            bottom + 12.0,
            esc(&label.chars().take(14).collect::<String>())
        );
    }
    let _ = write!(
        s,
        r#"<line x1="{left}" x2="{W}" y1="{bottom}" y2="{bottom}" class="axis"/></svg></figure>"#
    );
    s
}

fn line_chart(id: &str, title: &str, points: &[(String, f64)], reference: Option<f64>) -> String {
    let h = 220.0;
    let (left, right, top, bottom) = (50.0, W - 10.0, 10.0, 180.0);
    let lo = points
        .iter()
        .map(|p| p.1)
        .chain(reference)
        .fold(f64::INFINITY, f64::min);
    let hi = points
        .iter()
        .map(|p| p.1)
        .chain(reference)
        .fold(f64::NEG_INFINITY, f64::max);
    let (lo, hi) = if hi > lo {
        (lo, hi)
    } else {
        (lo - 0.5, hi + 0.5)
    };
    let pad = (hi - lo) * 0.1;
    let (lo, hi) = (lo - pad, hi + pad);
    let y = |v: f64| bottom - (v - lo) / (hi - lo) * (bottom - top);
    let step = if points.len() > 1 {
        (right - left) / (points.len() - 1) as f64
    } else {
        0.0
    };
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<figure><figcaption>{}</figcaption><svg class="plot" data-plot="{}" width="{W}" height="{h}" viewBox="0 0 {W} {h}" role="img">"#,
        esc(title),
        esc(id)
    );
    let path: Vec<String> = points
        .iter()
        .enumerate()
        .map(|(i, p)| format!("{:.1},{:.1}", left + step * i as f64, y(p.1)))
        .collect();
    let _ = write!(
        s,
        r#"<polyline points="{}" class="series"/>"#,
        path.join(" ")
    );
    for (i, p) in points.iter().enumerate() {
        let _ = write!(
            s,
            r#"<circle cx="{:.1}" cy="{:.1}" r="3" class="dot"><title>{} {:.4}</title></circle>"#,
            left + step * i as f64,
            y(p.1),
            esc(&p.0),
            p.1
        );
    }
    if let Some(r) = reference {
        let _ = write!(
            s,
            r#"<line x1="{left}" x2="{right}" y1="{:.1}" y2="{:.1}" class="limit"/><text x="{right}" y="{:.1}" text-anchor="end" class="val">holdout {:.4}</text>"#,
            y(r),
            y(r),
            y(r) - 4.0,
            r
        );
    }
    let _ = write!(
        s,
        r#"<text x="4" y="{:.1}" class="val">{:.3}</text><text x="4" y="{:.1}" class="val">{:.3}</text>"#,
        top + 8.0,
        hi,
        bottom,
        lo
    );
    if let (Some(first), Some(last)) = (points.first(), points.last()) {
        let _ = write!(
            s,
            r#"<text x="{left}" y="{}" class="tick">{}</text><text x="{right}" y="{}" text-anchor="end" class="tick">{}</text>"#,
            bottom + 18.0,
            esc(&first.0),
            bottom + 18.0,
            esc(&last.0)
        );
    }
    s.push_str("</svg></figure>");
    s
}

const STYLE: &str = r#"
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px auto;max-width:1000px;color:#1d2430;padding:0 16px}
h1{font-size:22px;margin-bottom:4px}h2{font-size:17px;margin-top:28px;border-bottom:1px solid #dde;padding-bottom:4px}
.verdict{padding:10px 14px;border-radius:6px;margin:12px 0}.ok{background:#e7f6ec}.bad{background:#fde8e8}
table{border-collapse:collapse;width:100%;margin:8px 0}td,th{border-bottom:1px solid #eef;padding:4px 8px;text-align:left;font-variant-numeric:tabular-nums}
th{background:#f5f6fa}.yes{color:#b42318;font-weight:600}.muted{color:#667}
figure{margin:12px 0}figcaption{font-weight:600;margin-bottom:4px}
svg .bar{fill:#7a93c8}svg .bar.hot{fill:#d9534f}svg .ref{fill:#9aa9c4}svg .cur{fill:#e08a3c}
svg .lbl,svg .val,svg .tick{font-size:11px;fill:#333}svg .limit{stroke:#b42318;stroke-dasharray:4 3}
svg .axis{stroke:#888}svg .series{fill:none;stroke:#3559a8;stroke-width:2}svg .dot{fill:#3559a8}
.key{display:inline-block;padding:0 6px;border-radius:3px;font-weight:400;font-size:12px}.key.ref{background:#9aa9c4}.key.cur{background:#e08a3c}
"#;

/// Renders the report: one self-contained page, a section per part of the report.
pub fn render(r: &Report) -> String {
    let mut s = String::new();
    header(&mut s, r);
    data_drift(&mut s, r);
    prediction_drift(&mut s, r);
    multivariate(&mut s, r);
    performance(&mut s, r);
    estimated(&mut s, r);
    late_labels(&mut s, r);
    concept(&mut s, r);
    rollout(&mut s, r);
    data_quality(&mut s, r);
    processing(&mut s, r);
    input(&mut s, r);
    s
}

/// The page's head, title and verdict.
fn header(s: &mut String, r: &Report) {
    let _ = write!(
        s,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>lambdaml monitoring: {} {}</title><style>{STYLE}</style></head><body>",
        esc(&r.model),
        esc(&r.window.to)
    );
    let _ = write!(
        s,
        "<h1>Monitoring report — {} (version {})</h1><div class=\"muted\">window {} to {} · evaluated at {} · generated {}</div>",
        esc(&r.model),
        esc(&r.version),
        esc(&r.window.from),
        esc(&r.window.to),
        esc(&r.at),
        esc(&r.generated_at)
    );
    let _ = write!(
        s,
        "<div class=\"verdict {}\"><b>{}</b>{}<br>Retraining: <b>{}</b> — {}</div>",
        if r.verdict.breach { "bad" } else { "ok" },
        if r.verdict.breach {
            "Breach"
        } else {
            "No breach"
        },
        r.verdict
            .reasons
            .iter()
            .map(|x| format!("<br>• {}", esc(x)))
            .collect::<String>(),
        esc(&r.retrain.decision),
        esc(&r.retrain.detail)
    );
}

/// Data drift: the dataset verdict, each feature's test, the distributions that matter.
fn data_drift(s: &mut String, r: &Report) {
    let d = &r.data_drift;
    let _ = write!(
        s,
        "<h2>Data drift</h2><p>{} of {} features drifted (share {:.2}; dataset drift at {:.2}): <b>{}</b>.</p>",
        d.drifted,
        d.tested,
        d.drift_share,
        d.drift_share_threshold,
        if d.dataset_drift {
            "dataset drift"
        } else {
            "no dataset drift"
        }
    );
    let items: Vec<(String, f64, bool)> = d
        .features
        .iter()
        .map(|f| (f.name.clone(), ratio(f), f.drifted))
        .collect();
    s.push_str(&bars(
        "drift-scores",
        "Drift score / threshold per feature (past the dashed line: drifted; p-values as threshold / p)",
        &items,
        Some(1.0),
    ));
    s.push_str("<table><tr><th>feature</th><th>kind</th><th>method</th><th>score</th><th>threshold</th><th>drifted</th><th>KS p</th><th>PSI</th><th>Wasserstein</th><th>JS</th><th>window values</th></tr>");
    for f in &d.features {
        let st = |k: &str| f.statistics.get(k).copied().flatten();
        let _ = write!(
            s,
            "<tr><td>{}</td><td>{}</td><td>{} <span class=\"muted\">({})</span></td><td>{}</td><td>{}</td><td class=\"{}\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&f.name),
            esc(&f.kind),
            esc(&f.method),
            esc(&f.source),
            num(f.score),
            num(Some(f.threshold)),
            if f.drifted { "yes" } else { "" },
            if f.drifted { "yes" } else { "no" },
            num(st("ks_pvalue").or(st("chi_squared_pvalue"))),
            num(st("psi")),
            num(st("wasserstein")),
            num(st("jensen_shannon")),
            f.current_values
        );
    }
    s.push_str("</table>");
    // Distributions: the drifted features, or the three closest to drifting.
    let mut shown: Vec<&FeatureDrift> = d.features.iter().filter(|f| f.drifted).collect();
    if shown.is_empty() {
        shown = d.features.iter().collect();
        shown.sort_by(|a, b| ratio(b).total_cmp(&ratio(a)));
        shown.truncate(3);
    }
    for f in shown.iter().take(20) {
        s.push_str(&distribution(
            &format!("distribution-{}", f.name),
            &format!(
                "{}: training vs window ({} {})",
                f.name,
                f.method,
                num(f.score)
            ),
            &f.distribution,
        ));
    }
}

/// Prediction drift: the outputs and scores against the holdout's.
fn prediction_drift(s: &mut String, r: &Report) {
    let p = &r.prediction_drift;
    let _ = write!(
        s,
        "<h2>Prediction drift</h2><p><b>{}</b></p>",
        if p.drifted { "drifted" } else { "no drift" }
    );
    for f in p.output.iter().chain(p.scores.iter()) {
        s.push_str(&distribution(
            &format!("prediction-{}", f.name.replace(' ', "-")),
            &format!(
                "{}: holdout vs window ({} {}{})",
                f.name,
                f.method,
                num(f.score),
                if f.drifted { ", drifted" } else { "" }
            ),
            &f.distribution,
        ));
    }
}

/// Live performance on the labelled rows, against the holdout, over time.
fn performance(s: &mut String, r: &Report) {
    let perf = &r.performance;
    let _ = write!(
        s,
        "<h2>Predictive performance</h2><p>Status: <b>{}</b> · labelled rows {} (minimum {}) · {}</p>",
        esc(&perf.status),
        perf.labelled_rows,
        perf.min_samples,
        esc(&perf.note)
    );
    if !perf.metrics.is_empty() {
        s.push_str("<table><tr><th>metric</th><th>window</th><th>holdout</th></tr>");
        for (k, v) in &perf.metrics {
            let _ = write!(
                s,
                "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(k),
                num(Some(*v)),
                num(perf.baseline_metrics.get(k).copied())
            );
        }
        s.push_str("</table>");
    }
    if !perf.over_time.is_empty() {
        let classification = r.prediction_drift.scores.is_some();
        let pts: Vec<(String, f64)> = perf
            .over_time
            .iter()
            .map(|m| (m.from.chars().take(10).collect(), m.value))
            .collect();
        s.push_str(&line_chart(
            "performance-over-time",
            if classification {
                "Live accuracy over the window"
            } else {
                "Live RMSE over the window"
            },
            &pts,
            perf.baseline_metrics
                .get(if classification { "accuracy" } else { "rmse" })
                .copied(),
        ));
    }
}

/// Multivariate drift: the window's PCA reconstruction error against the training band.
fn multivariate(s: &mut String, r: &Report) {
    let Some(m) = &r.multivariate_drift else {
        return;
    };
    let _ = write!(
        s,
        "<h2>Multivariate drift (PCA reconstruction)</h2><p><b>{}</b>{} · {} features, {} components explaining {:.1} % of the training variance · {}</p>\
         <table><tr><th>rows</th><th>mean error</th><th>± 3 SE</th><th>lower</th><th>upper</th><th>training chunks ({} rows)</th></tr>\
         <tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr></table>",
        if m.drifted { "drifted" } else { "no drift" },
        if m.breach { " (a breach)" } else { "" },
        m.features,
        m.components,
        100.0 * m.explained,
        esc(&m.note),
        m.chunk_size,
        m.rows,
        num(m.value),
        num(m.sampling_error.map(|e| 3.0 * e)),
        num(m.lower),
        num(m.upper),
        m.reference_chunks
            .iter()
            .map(|v| format!("{v:.4}"))
            .collect::<Vec<_>>()
            .join(" ")
    );
}

/// Performance estimated without labels, beside the realized values.
fn estimated(s: &mut String, r: &Report) {
    let Some(e) = &r.performance.estimated else {
        return;
    };
    let _ = write!(
        s,
        "<h2>Estimated performance ({}, no labels)</h2><p>{} production rows · {} · judged on <b>{}</b>{} · {}</p>\
         <table><tr><th>metric</th><th>estimated</th><th>band (± 3 SE)</th><th>realized (labelled rows)</th><th>holdout</th></tr>",
        esc(&e.method.to_uppercase()),
        e.rows,
        match (e.method.as_str(), e.calibrated) {
            ("cbpe", true) => "probabilities recalibrated on the holdout (isotonic)",
            ("cbpe", false) => "probabilities used as they are (calibration would not help)",
            _ =>
                "each row's loss predicted from its inputs and prediction (boosted trees fitted on the holdout)",
        },
        esc(&e.metric),
        match (e.breach, e.decides) {
            (true, true) => ": a breach",
            (true, false) => ": dropped, not deciding",
            _ => "",
        },
        esc(&e.note)
    );
    for (k, v) in &e.metrics {
        let _ = write!(
            s,
            "<tr><td>{}</td><td>{}</td><td>{} – {}</td><td>{}</td><td>{}</td></tr>",
            esc(k),
            num(Some(v.value)),
            num(v.lower),
            num(v.upper),
            num(e.realized.get(k).copied()),
            num(r.performance.baseline_metrics.get(k).copied())
        );
    }
    s.push_str("</table>");
}

/// Earlier windows re-judged with labels that arrived after them.
fn late_labels(s: &mut String, r: &Report) {
    if r.late_labels.is_empty() {
        return;
    }
    s.push_str(
        "<h2>Late labels</h2><p>Labels that arrived after their window was judged; each window's report stays as judged, its performance now is in <code>late-labels.json</code> beside it.</p>\
         <table><tr><th>window</th><th>late rows</th><th>labelled then → now</th><th>metric</th><th>then</th><th>now</th><th>status now</th></tr>",
    );
    for l in &r.late_labels {
        let _ = write!(
            s,
            "<tr><td>{} – {}</td><td>{}</td><td>{} → {}</td><td>{}</td><td>{}</td><td>{}</td><td>{}{}</td></tr>",
            esc(&l.window.from),
            esc(&l.window.to),
            l.late_rows,
            l.labelled_then,
            l.labelled_now,
            esc(&l.metric),
            num(l.then),
            num(l.now),
            esc(&l.status_now),
            if l.breach_now {
                " (dropped beyond the threshold)"
            } else {
                ""
            }
        );
    }
    s.push_str("</table>");
}

/// Data quality: missing, out-of-range, invalid and unseen values per feature.
/// The concept-drift detector on the error stream.
fn concept(s: &mut String, r: &Report) {
    let Some(c) = &r.concept_drift else {
        return;
    };
    let _ = write!(
        s,
        "<h2>Concept drift ({})</h2><p>{} labelled rows fed this run ({} since the detector started on version {}), mean error {}{}: <b>{}</b>{}</p>",
        esc(&c.detector),
        c.fed,
        c.fed_total,
        esc(&c.version),
        num(c.mean_error),
        if c.warning {
            ", in the warning zone"
        } else {
            ""
        },
        if c.changes.is_empty() {
            "no change".to_string()
        } else {
            c.changes
                .iter()
                .map(|ch| format!("change at row {} ({})", ch.position, esc(&ch.at)))
                .collect::<Vec<_>>()
                .join(", ")
        },
        c.restarted
            .as_ref()
            .map_or(String::new(), |w| format!(" — {}", esc(w)))
    );
}

/// Production against its shadow or canary, and the decision.
fn rollout(s: &mut String, r: &Report) {
    let Some(ro) = &r.rollout else {
        return;
    };
    let _ = write!(
        s,
        "<h2>Rollout: {} {}</h2><p>Decision: <b>{}</b>{} — {}</p><table><tr><th></th><th>version</th><th>requests</th><th>rows</th><th>errors</th><th>labelled</th><th>metric</th><th>interval</th><th>latency p50 / p95 ms</th></tr>",
        esc(&ro.role),
        esc(&ro.candidate.version),
        esc(&ro.decision),
        if ro.applied { " (applied)" } else { "" },
        esc(&ro.detail)
    );
    for (name, side) in [
        ("production", &ro.production),
        (ro.role.as_str(), &ro.candidate),
    ] {
        let _ = write!(
            s,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{} ({:.2} %)</td><td>{}</td><td>{}</td><td>{}</td><td>{} / {}</td></tr>",
            esc(name),
            esc(&side.version),
            side.requests,
            side.rows,
            side.errors,
            100.0 * side.error_rate,
            side.labelled,
            num(side.metric),
            side.interval
                .map_or("—".into(), |[lo, hi]| format!("[{lo:.4}, {hi:.4}]")),
            num(side.latency_p50_ms),
            num(side.latency_p95_ms)
        );
    }
    s.push_str("</table>");
    let a = &ro.agreement;
    let _ = write!(
        s,
        "<p>Paired rows {} · label agreement {} · prediction drift ({}) {}: <b>{}</b> · weight {} · requests skipped by the shadow {}</p>",
        a.paired_rows,
        num(a.label_agreement),
        esc(&a.drift_method),
        num(a.drift_score),
        if a.drifted { "drifted" } else { "no drift" },
        ro.weight,
        ro.skipped_requests
    );
    if let Some(c) = &ro.comparison {
        let _ = write!(
            s,
            "<p>{}: improvement {:+.4}, {:.0} % interval [{:+.4}, {:+.4}] on {} rows ({} bootstrap resamples).</p>",
            esc(&c.metric),
            c.improvement,
            100.0 * c.confidence,
            c.interval[0],
            c.interval[1],
            c.rows,
            c.resamples
        );
    }
}

fn data_quality(s: &mut String, r: &Report) {
    let q = &r.data_quality;
    let _ = write!(
        s,
        "<h2>Data quality</h2><p>Refused requests: {:.2} % ({} field errors).</p>",
        100.0 * q.validation_error_rate,
        q.validation_errors
    );
    for w in &q.warnings {
        let _ = write!(s, "<p class=\"yes\">{}</p>", esc(w));
    }
    s.push_str("<table><tr><th>feature</th><th>missing</th><th>missing in training</th><th>out of range</th><th>invalid</th><th>unseen categories</th></tr>");
    for f in &q.features {
        let _ = write!(
            s,
            "<tr><td>{}</td><td>{:.2} %</td><td>{:.2} %</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&f.name),
            100.0 * f.missing_rate,
            100.0 * f.baseline_missing_rate,
            f.out_of_range,
            f.invalid,
            f.unseen
        );
    }
    s.push_str("</table>");
}

/// Processing: requests, errors, latency.
fn processing(s: &mut String, r: &Report) {
    let pr = &r.processing;
    let _ = write!(
        s,
        "<h2>Processing</h2><p>{} requests, {} rows, error rate {:.2} % (server errors {:.2} %).</p>",
        pr.requests,
        pr.rows,
        100.0 * pr.error_rate,
        100.0 * pr.server_error_rate
    );
    let lat: Vec<(String, f64, bool)> = ["p50", "p95", "p99", "max"]
        .iter()
        .filter_map(|k| {
            pr.latency_ms
                .get(*k)
                .map(|v| (format!("{k} (ms)"), *v, false))
        })
        .collect();
    if !lat.is_empty() {
        s.push_str(&bars(
            "latency",
            "Request latency percentiles (ms)",
            &lat,
            None,
        ));
    }
}

/// What was read, the notes, and the check the browser test reads.
fn input(s: &mut String, r: &Report) {
    let c = &r.captures;
    let _ = write!(
        s,
        "<h2>Input</h2><p>{} capture files, {} records ({} in the window), {} rows scored, {} tested{}; feedback: {} labels, {} joined, {} duplicates, {} unmatched, {} invalid.</p>",
        c.files,
        c.records,
        c.records_in_window,
        c.rows_scored,
        c.rows_tested,
        if c.sampled { " (a uniform sample)" } else { "" },
        r.feedback.records,
        r.feedback.joined,
        r.feedback.duplicates,
        r.feedback.unmatched,
        r.feedback.invalid
    );
    if !r.notes.is_empty() {
        s.push_str("<h2>Notes</h2><ul>");
        for n in &r.notes {
            let _ = write!(s, "<li>{}</li>", esc(n));
        }
        s.push_str("</ul>");
    }
    s.push_str(
        "<script>window.addEventListener('load',function(){var n=0;document.querySelectorAll('svg.plot').forEach(function(g){var b=g.getBoundingClientRect();if(b.width>0&&b.height>0&&g.querySelector('rect,polyline,circle'))n++;});document.body.setAttribute('data-plots-rendered',String(n));document.body.setAttribute('data-plots-total',String(document.querySelectorAll('svg.plot').length));});</script></body></html>",
    );
}
