//! The backtest for people: one line per period as it runs, the summary, and a
//! self-contained HTML page (inline SVG, no network).

use std::fmt::Write;

use super::{BacktestReport, PeriodLine, Totals};

fn opt(v: Option<f64>) -> String {
    v.map_or("—".into(), |x| format!("{x:.4}"))
}

/// One period's line (the column header first when `header`).
pub fn line(l: &PeriodLine, header: bool) -> String {
    let mut s = String::new();
    if header {
        s.push_str(
            "period  rows   version        metric  estimated  realized  labelled  drift   breach                    decision\n",
        );
    }
    let decision = match (l.retrain.as_str(), &l.verdict) {
        ("sent", Some(v)) => format!("retrain → {v}"),
        ("sent", None) => "retrain".into(),
        ("not_needed", _) => "—".into(),
        (d, _) => d.to_string(),
    };
    let late = if l.late_windows > 0 {
        format!(" (+late labels for {} window(s))", l.late_windows)
    } else {
        String::new()
    };
    let _ = writeln!(
        s,
        "{:>6}  {:>5}  {:<13}  {:.4}  {:>9}  {:>8}  {:>8}  {:>2}/{:<2}{}  {:<24}  {}{}",
        l.period,
        l.rows,
        l.version.chars().take(13).collect::<String>(),
        l.metric,
        opt(l.estimated),
        opt(l.realized),
        l.labelled,
        l.drifted,
        l.tested,
        if l.multivariate { "m" } else { " " },
        if l.breach {
            l.kinds.join(",")
        } else {
            "no".into()
        },
        decision,
        late
    );
    s
}

fn totals_line(name: &str, t: &Totals, metric: &str) -> String {
    format!(
        "  {name:<34} mean {metric} {:.4}   over all rows {:.4}{}   retrains {}\n",
        t.mean,
        t.overall,
        t.kappa_temporal
            .map_or(String::new(), |k| format!("   κ-temporal {k:+.3}")),
        t.retrains
    )
}

/// The summary after the lines.
pub fn text(r: &BacktestReport) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "\n{} periods of {} rows after {} initial rows ({:.1} s); labels {}:",
        r.periods,
        r.period,
        r.initial,
        r.seconds,
        match r.labels_delay {
            0 => "at each period's end".to_string(),
            d if d >= r.periods => "withheld (never arrive)".to_string(),
            d => format!("{d} period(s) late"),
        }
    );
    s.push_str(&totals_line(
        "the loop (monitor + retrain)",
        &r.monitored,
        &r.metric,
    ));
    s.push_str(&totals_line(
        "first version, never retrained",
        &r.never_retrained,
        &r.metric,
    ));
    s.push_str(&totals_line(
        "retrained before every period",
        &r.every_period,
        &r.metric,
    ));
    s.push_str(&totals_line(
        "persistence (previous label)",
        &r.persistence,
        &r.metric,
    ));
    let _ = writeln!(
        s,
        "  retrained versions the deploy rule put in front: {} of {}",
        r.promoted, r.monitored.retrains
    );
    if let Some(e) = r.estimate_error {
        let _ = writeln!(
            s,
            "  estimated vs realized {} (periods with both): mean |difference| {e:.4}",
            r.metric
        );
    }
    let _ = writeln!(s, "store: {}   report: {}", r.store, r.html);
    s
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A line plot of series over the periods.
fn plot(title: &str, series: &[(&str, &str, Vec<Option<f64>>)]) -> String {
    let (w, h, pad) = (760.0, 260.0, 40.0);
    let values: Vec<f64> = series
        .iter()
        .flat_map(|(_, _, v)| v.iter().flatten().copied())
        .filter(|v| v.is_finite())
        .collect();
    let n = series.first().map_or(0, |s| s.2.len());
    if values.is_empty() || n == 0 {
        return String::new();
    }
    let lo = values.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let span = if hi > lo { hi - lo } else { 1.0 };
    let x = |i: usize| pad + (w - 2.0 * pad) * i as f64 / (n.max(2) - 1) as f64;
    let y = |v: f64| h - pad - (h - 2.0 * pad) * (v - lo) / span;
    let mut s = format!(
        "<h2>{}</h2><svg class=\"plot\" width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\" role=\"img\">\
         <text x=\"4\" y=\"{}\" font-size=\"11\">{lo:.3}</text><text x=\"4\" y=\"{}\" font-size=\"11\">{hi:.3}</text>",
        esc(title),
        h - pad,
        pad
    );
    for (name, color, points) in series {
        let mut d = String::new();
        let mut pen = 'M';
        for (i, v) in points.iter().enumerate() {
            match v {
                Some(v) if v.is_finite() => {
                    let _ = write!(d, "{pen}{:.1},{:.1} ", x(i), y(*v));
                    pen = 'L';
                }
                _ => pen = 'M',
            }
        }
        let _ = write!(
            s,
            "<path d=\"{d}\" fill=\"none\" stroke=\"{color}\" stroke-width=\"1.6\"><title>{}</title></path>",
            esc(name)
        );
    }
    s.push_str("</svg><p>");
    for (name, color, _) in series {
        let _ = write!(
            s,
            "<span style=\"color:{color}\">━ {}</span> &nbsp; ",
            esc(name)
        );
    }
    s.push_str("</p>");
    s
}

/// The self-contained HTML report.
pub fn html(r: &BacktestReport) -> String {
    let mut s = String::from(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>lambdaml backtest</title>\
         <style>body{font:14px system-ui,sans-serif;margin:2em;max-width:70em}table{border-collapse:collapse}\
         td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}th{background:#f4f4f4}</style></head><body>",
    );
    let _ = write!(
        s,
        "<h1>Backtest of {}</h1><p>{} — {} periods of {} rows after {} initial rows; labels {} period(s) late.</p>",
        esc(&r.model),
        esc(&r.file),
        r.periods,
        r.period,
        r.initial,
        r.labels_delay
    );
    s.push_str("<table><tr><th>approach</th><th>mean</th><th>over all rows</th><th>κ-temporal</th><th>retrains</th></tr>");
    for (name, t) in [
        ("the loop (monitor + retrain)", &r.monitored),
        ("first version, never retrained", &r.never_retrained),
        ("retrained before every period", &r.every_period),
        ("persistence (previous label)", &r.persistence),
    ] {
        let _ = write!(
            s,
            "<tr><td style=\"text-align:left\">{name}</td><td>{:.4}</td><td>{:.4}</td><td>{}</td><td>{}</td></tr>",
            t.mean,
            t.overall,
            t.kappa_temporal.map_or("—".into(), |k| format!("{k:+.3}")),
            t.retrains
        );
    }
    s.push_str("</table>");
    let col = |f: fn(&PeriodLine) -> Option<f64>| r.lines.iter().map(f).collect::<Vec<_>>();
    s.push_str(&plot(
        &format!("{} per period", r.metric),
        &[
            ("the loop", "#1f77b4", col(|l| Some(l.metric))),
            ("never retrained", "#d62728", col(|l| Some(l.never))),
            ("every period", "#2ca02c", col(|l| Some(l.every))),
            ("persistence", "#999999", col(|l| Some(l.persistence))),
        ],
    ));
    s.push_str(&plot(
        &format!("estimated vs realized {} (the monitor's view)", r.metric),
        &[
            ("estimated (no labels)", "#9467bd", col(|l| l.estimated)),
            ("realized (labels)", "#ff7f0e", col(|l| l.realized)),
            ("actual", "#1f77b4", col(|l| Some(l.metric))),
        ],
    ));
    s.push_str("<h2>Periods</h2><table><tr><th>period</th><th>rows</th><th>version</th><th>metric</th><th>estimated</th><th>realized</th><th>drifted</th><th>breach</th><th>decision</th><th>never</th><th>every</th></tr>");
    for l in &r.lines {
        let _ = write!(
            s,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{:.4}</td><td>{}</td><td>{}</td><td>{}/{}{}</td><td>{}</td><td>{}</td><td>{:.4}</td><td>{:.4}</td></tr>",
            l.period,
            l.rows,
            esc(&l.version),
            l.metric,
            opt(l.estimated),
            opt(l.realized),
            l.drifted,
            l.tested,
            if l.multivariate { " m" } else { "" },
            if l.breach {
                esc(&l.kinds.join(", "))
            } else {
                "no".into()
            },
            esc(&format!(
                "{} {}",
                l.retrain,
                l.verdict.clone().unwrap_or_default()
            )),
            l.never,
            l.every
        );
    }
    s.push_str("</table></body></html>\n");
    s
}
