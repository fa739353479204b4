//! A run's window: the capture times `[from, to)` it reads and the evaluation time `at` its
//! retrain rules count from, resolved once from the request and the spec's schedule.

use chrono::{DateTime, Duration, Utc};
use lambdaml::spec::parse_duration_secs;
use lambdaml::stage::StageError;

use crate::{MAX_WINDOW_SECS, MonitorRequest};

/// The window of one run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Interval {
    /// The first capture time read.
    pub from: DateTime<Utc>,
    /// The end of the window, exclusive.
    pub to: DateTime<Utc>,
    /// The evaluation time: `at` as asked, else `to` when the window was explicit, else now.
    pub at: DateTime<Utc>,
}

impl Interval {
    /// The window `request` asks for: explicit `from` and `to`; or `window` (default: the
    /// `schedule`'s period) ending at `at` (default: `now`).
    pub fn resolve(
        request: &MonitorRequest,
        schedule: &str,
        now: DateTime<Utc>,
    ) -> Result<Self, StageError> {
        let (from, to) = match (&request.from, &request.to) {
            (Some(f), Some(t)) => (parse_time("from", f)?, parse_time("to", t)?),
            (None, None) => {
                let at = match &request.at {
                    Some(a) => parse_time("at", a)?,
                    None => now,
                };
                let length = match &request.window {
                    Some(w) => parse_duration_secs(w)
                        .filter(|s| *s <= MAX_WINDOW_SECS)
                        .map(|s| Duration::seconds(s as i64))
                        .ok_or_else(|| {
                            StageError::permanent(format!(
                                "window: {w:?} is not a duration like \"30m\", \"24h\" or \"7d\" (at most 10 years)"
                            ))
                        })?,
                    None => schedule_period(schedule),
                };
                let from = at.checked_sub_signed(length).ok_or_else(|| {
                    StageError::permanent("the window starts before any representable time")
                })?;
                (from, at)
            }
            _ => {
                return Err(StageError::permanent(
                    "give both `from` and `to`, or neither",
                ));
            }
        };
        if from >= to {
            return Err(StageError::permanent(format!(
                "the window is empty: from {from} is not before to {to}"
            )));
        }
        let at = match &request.at {
            Some(a) => parse_time("at", a)?,
            None if request.to.is_some() => to,
            None => now,
        };
        Ok(Interval { from, to, at })
    }
}

/// `text` as an RFC 3339 time; the error names the request field.
pub(crate) fn parse_time(name: &str, text: &str) -> Result<DateTime<Utc>, StageError> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| {
            StageError::permanent(format!("{name}: {text:?} is not an RFC 3339 time ({e})"))
        })
}

/// The length of a schedule expression's period: `rate(1 day)`, `rate(6 hours)`; a cron
/// expression counts as a day.
pub fn schedule_period(expr: &str) -> Duration {
    let inner = expr
        .trim()
        .strip_prefix("rate(")
        .and_then(|s| s.strip_suffix(')'));
    let Some(inner) = inner else {
        return Duration::days(1);
    };
    let mut parts = inner.split_whitespace();
    let n: i64 = parts
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1)
        .clamp(1, 3650);
    match parts.next().unwrap_or("day").trim_end_matches('s') {
        "minute" => Duration::minutes(n),
        "hour" => Duration::hours(n),
        _ => Duration::days(n),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        parse_time("t", s).unwrap()
    }

    #[test]
    fn schedules_give_their_period_and_anything_else_a_day() {
        assert_eq!(schedule_period("rate(6 hours)"), Duration::hours(6));
        assert_eq!(schedule_period("rate(1 hour)"), Duration::hours(1));
        assert_eq!(schedule_period("rate(15 minutes)"), Duration::minutes(15));
        assert_eq!(schedule_period("rate(2 days)"), Duration::days(2));
        assert_eq!(schedule_period("cron(0 3 * * ? *)"), Duration::days(1));
        assert_eq!(schedule_period("rate(0 hours)"), Duration::hours(1));
    }

    #[test]
    fn a_window_ends_at_at_or_now_and_defaults_to_the_schedule() {
        let now = t("2026-01-10T12:00:00Z");
        let mut r = MonitorRequest::new("m");
        let i = Interval::resolve(&r, "rate(6 hours)", now).unwrap();
        assert_eq!((i.from, i.to, i.at), (t("2026-01-10T06:00:00Z"), now, now));
        r.window = Some("2d".into());
        r.at = Some("2026-01-05T00:00:00Z".into());
        let i = Interval::resolve(&r, "rate(6 hours)", now).unwrap();
        assert_eq!(i.from, t("2026-01-03T00:00:00Z"));
        assert_eq!(i.to, t("2026-01-05T00:00:00Z"));
        assert_eq!(i.at, i.to);
    }

    #[test]
    fn an_explicit_window_is_evaluated_at_its_end_unless_at_is_given() {
        let now = t("2026-01-10T12:00:00Z");
        let mut r = MonitorRequest::new("m");
        r.from = Some("2026-01-01T00:00:00Z".into());
        r.to = Some("2026-01-02T00:00:00Z".into());
        let i = Interval::resolve(&r, "rate(1 day)", now).unwrap();
        assert_eq!(i.at, t("2026-01-02T00:00:00Z"));
        r.at = Some("2026-01-03T00:00:00Z".into());
        assert_eq!(
            Interval::resolve(&r, "rate(1 day)", now).unwrap().at,
            t("2026-01-03T00:00:00Z")
        );
    }

    #[test]
    fn bad_windows_are_permanent_errors_that_say_what_is_wrong() {
        let now = t("2026-01-10T12:00:00Z");
        let err = |r: &MonitorRequest| Interval::resolve(r, "rate(1 day)", now).unwrap_err();
        let mut r = MonitorRequest::new("m");
        r.from = Some("2026-01-01T00:00:00Z".into());
        assert!(err(&r).reason().contains("both `from` and `to`"));
        r.to = Some("2026-01-01T00:00:00Z".into());
        assert!(err(&r).reason().contains("the window is empty"));
        r.to = Some("yesterday".into());
        let e = err(&r);
        assert!(e.reason().starts_with("to: \"yesterday\""), "{e}");
        assert!(!e.is_retryable());
        let mut r = MonitorRequest::new("m");
        r.window = Some("forever".into());
        assert!(err(&r).reason().contains("\"forever\" is not a duration"));
        r.window = Some("4000d".into());
        assert!(err(&r).reason().contains("at most 10 years"));
    }
}
