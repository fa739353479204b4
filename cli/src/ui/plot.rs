//! Inline SVG plots for the dashboard: time on x, one or more series, optional event marks
//! (retrains, promotions). No scripts, no fonts from the network.

use std::fmt::Write;

use super::esc;

const W: f64 = 760.0;
const H: f64 = 230.0;
const LEFT: f64 = 56.0;
const RIGHT: f64 = W - 16.0;
const TOP: f64 = 14.0;
const BOTTOM: f64 = 186.0;

/// One series: a name, a CSS class and its points (unix seconds, value).
#[derive(Debug, Clone)]
pub struct Series {
    pub name: String,
    pub class: &'static str,
    pub points: Vec<(f64, f64)>,
}

/// A vertical mark at a time, with a label (a retrain, a promotion).
#[derive(Debug, Clone)]
pub struct Mark {
    pub at: f64,
    pub label: String,
    pub class: &'static str,
}

/// Seconds since the epoch of an RFC 3339 time.
pub fn seconds(t: &str) -> Option<f64> {
    chrono::DateTime::parse_from_rfc3339(t)
        .ok()
        .map(|d| d.timestamp_millis() as f64 / 1000.0)
}

fn date(s: f64) -> String {
    stamp(s, "%Y-%m-%d")
}

fn stamp(s: f64, format: &str) -> String {
    chrono::DateTime::from_timestamp(s as i64, 0)
        .map(|d| d.format(format).to_string())
        .unwrap_or_default()
}

/// The x axis's end labels: dates, or times of day when the plot spans under two days.
fn ends(x0: f64, x1: f64) -> (String, String) {
    if x1 - x0 < 2.0 * 86_400.0 {
        let f = "%Y-%m-%d %H:%M:%S";
        (stamp(x0, f), stamp(x1, f))
    } else {
        (date(x0), date(x1))
    }
}

/// A time plot of `series` with `marks`; `limit` draws a dashed horizontal line (a
/// threshold). A plot with no points says so instead of drawing an empty frame.
pub fn time_plot(
    id: &str,
    title: &str,
    series: &[Series],
    marks: &[Mark],
    limit: Option<(f64, &str)>,
) -> String {
    let points: Vec<(f64, f64)> = series
        .iter()
        .flat_map(|s| s.points.iter().copied())
        .filter(|p| p.0.is_finite() && p.1.is_finite())
        .collect();
    if points.is_empty() {
        return format!(
            r#"<figure><figcaption>{}</figcaption><p class="empty">nothing to plot yet</p></figure>"#,
            esc(title)
        );
    }
    let xs = points.iter().map(|p| p.0).chain(marks.iter().map(|m| m.at));
    let (x0, x1) = xs.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), x| {
        (a.min(x), b.max(x))
    });
    let (x0, x1) = if x1 > x0 {
        (x0, x1)
    } else {
        (x0 - 1.0, x1 + 1.0)
    };
    let ys = points.iter().map(|p| p.1).chain(limit.map(|l| l.0));
    let (y0, y1) = ys.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), y| {
        (a.min(y), b.max(y))
    });
    let (y0, y1) = if y1 > y0 {
        (y0, y1)
    } else {
        (y0 - 0.5, y1 + 0.5)
    };
    let pad = (y1 - y0) * 0.08;
    let (y0, y1) = (y0 - pad, y1 + pad);
    let x = |v: f64| LEFT + (v - x0) / (x1 - x0) * (RIGHT - LEFT);
    let y = |v: f64| BOTTOM - (v - y0) / (y1 - y0) * (BOTTOM - TOP);

    let mut s = String::new();
    let legend: Vec<String> = series
        .iter()
        .map(|s| format!(r#"<span class="key {}">{}</span>"#, s.class, esc(&s.name)))
        .collect();
    let _ = write!(
        s,
        r#"<figure><figcaption>{} {}</figcaption><svg class="plot" data-plot="{}" width="{W}" height="{H}" viewBox="0 0 {W} {H}" role="img">"#,
        esc(title),
        legend.join(" "),
        esc(id)
    );
    axes(
        &mut s,
        [y0 + pad, (y0 + y1) / 2.0, y1 - pad].map(|v| (y(v), v)),
        (x0, x1),
    );
    for m in marks {
        let _ = write!(
            s,
            r#"<line x1="{0:.1}" x2="{0:.1}" y1="{TOP}" y2="{BOTTOM}" class="mark {1}"><title>{2}</title></line>"#,
            x(m.at),
            m.class,
            esc(&m.label)
        );
    }
    if let Some((v, label)) = limit {
        let _ = write!(
            s,
            r#"<line x1="{LEFT}" x2="{RIGHT}" y1="{0:.1}" y2="{0:.1}" class="limit"/><text x="{RIGHT}" y="{1:.1}" text-anchor="end" class="tick">{2} {3}</text>"#,
            y(v),
            if y(v) < TOP + 16.0 {
                y(v) + 14.0
            } else {
                y(v) - 4.0
            },
            esc(label),
            short(v)
        );
    }
    for series in series {
        let mut pts: Vec<(f64, f64)> = series
            .points
            .iter()
            .copied()
            .filter(|p| p.0.is_finite() && p.1.is_finite())
            .collect();
        pts.sort_by(|a, b| a.0.total_cmp(&b.0));
        let path: Vec<String> = pts
            .iter()
            .map(|p| format!("{:.1},{:.1}", x(p.0), y(p.1)))
            .collect();
        let _ = write!(
            s,
            r#"<polyline points="{}" class="series {}"/>"#,
            path.join(" "),
            series.class
        );
        for p in &pts {
            let _ = write!(
                s,
                r#"<circle cx="{:.1}" cy="{:.1}" r="2.5" class="dot {}"><title>{} {} {}</title></circle>"#,
                x(p.0),
                y(p.1),
                series.class,
                esc(&series.name),
                date(p.0),
                short(p.1)
            );
        }
    }
    s.push_str("</svg></figure>");
    s
}

/// The axes, three value ticks (position, value) and the first and last dates.
fn axes(s: &mut String, ticks: [(f64, f64); 3], (x0, x1): (f64, f64)) {
    let (first, last) = ends(x0, x1);
    let _ = write!(
        s,
        r#"<line x1="{LEFT}" x2="{RIGHT}" y1="{BOTTOM}" y2="{BOTTOM}" class="axis"/><line x1="{LEFT}" x2="{LEFT}" y1="{TOP}" y2="{BOTTOM}" class="axis"/>"#
    );
    for (at, v) in ticks {
        let _ = write!(
            s,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="end" class="tick">{}</text>"#,
            LEFT - 4.0,
            at + 4.0,
            short(v)
        );
    }
    let _ = write!(
        s,
        r#"<text x="{LEFT}" y="{:.1}" class="tick">{}</text><text x="{RIGHT}" y="{:.1}" text-anchor="end" class="tick">{}</text>"#,
        BOTTOM + 16.0,
        first,
        BOTTOM + 16.0,
        last
    );
}

fn short(v: f64) -> String {
    if v != 0.0 && (v.abs() < 1e-2 || v.abs() >= 1e5) {
        format!("{v:.2e}")
    } else {
        format!("{v:.3}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plots_draw_every_point_and_mark_and_escape_labels() {
        let svg = time_plot(
            "p",
            "accuracy <live>",
            &[Series {
                name: "live".into(),
                class: "cur",
                points: vec![(0.0, 0.5), (86400.0, 0.7), (2.0 * 86400.0, f64::NAN)],
            }],
            &[Mark {
                at: 86400.0,
                label: "retrain".into(),
                class: "retrain",
            }],
            Some((0.6, "limit")),
        );
        assert!(svg.contains(r#"data-plot="p""#));
        assert!(svg.contains("accuracy &lt;live&gt;"));
        assert_eq!(svg.matches("<circle").count(), 2, "NaN points are left out");
        assert_eq!(svg.matches("class=\"mark retrain\"").count(), 1);
        assert!(svg.contains("1970-01-01") && svg.contains("1970-01-03"));
        assert_eq!(
            ends(0.0, 60.0).1,
            "1970-01-01 00:01:00",
            "times within two days"
        );
        let empty = time_plot("e", "t", &[], &[], None);
        assert!(!empty.contains("<svg") && empty.contains("nothing to plot"));
    }
}
