//! `lambdaml backtest`: replays a file through the whole loop and says what the monitor and
//! retraining would have done, against references computed in the same run on the same rows.
//!
//! The first `--initial` rows (in `--order-by` order, else the file's) train the first
//! version through the normal pipeline. Then each `--period` rows arrive as traffic through
//! the score router with capture, the clock set to the period (each period is
//! `--period-time` of simulated time, so cooldowns and daily caps count as they would);
//! the period's labels are posted as feedback at the end of the period `--labels-delay`
//! periods later (late labels re-judge their window, see the monitor); the monitor runs on
//! the period, and a retrain it sends runs through the queues, the deploy rule deciding.
//! References, on the same rows: the first version never retrained; a version retrained on
//! the spec's window before every period; for a classifier the persistence baseline (the
//! previous row's label) and κ-temporal. Everything runs in a fresh store folder unless
//! `--store` names one.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Instant;

use anyhow::{Context, Result, anyhow, bail};
use bytes::Bytes;
use chrono::{DateTime, Duration, Utc};
use clap::Args;
use lambdaml::layout;
use lambdaml::registry::RegistryStore;
use lambdaml::spec::{ModelSpec, TaskKind};
use lambdaml::store::ObjectStoreExt;
use serde::Serialize;

use crate::ctx::Ctx;

mod references;
mod render;
mod replay;

pub(crate) use replay::post;
pub(crate) use replay::{Replay, Rows};
use replay::{Scored, csv_of, metric_of, read_rows};

use references::{Every, References, summarise};

/// Rows per scoring request.
pub(crate) const BATCH: usize = 100;

/// `lambdaml backtest`.
#[derive(Debug, Args)]
pub struct BacktestArgs {
    /// The history to replay: a CSV file (or gzip CSV) with the spec's label column.
    pub file: PathBuf,
    /// The model spec (TOML).
    #[arg(long)]
    pub spec: PathBuf,
    /// Rows that train the first version.
    #[arg(long)]
    pub initial: usize,
    /// Rows per period (one monitor run each).
    #[arg(long)]
    pub period: usize,
    /// Order the rows by this column first (numbers numerically, else as text; ties keep
    /// the file's order).
    #[arg(long)]
    pub order_by: Option<String>,
    /// Periods after which a period's labels arrive (0: at its end; longer than the stream:
    /// never, so only estimates and drift can act).
    #[arg(long, default_value_t = 0)]
    pub labels_delay: usize,
    /// Simulated time per period, e.g. `12h`, `7d`, `365d` (cooldowns and caps count in it).
    #[arg(long, default_value = "7d")]
    pub period_time: String,
    /// Write the HTML report here (default: backtest.html in the backtest's folder).
    #[arg(long)]
    pub html: Option<PathBuf>,
}

/// One period of the replay.
#[derive(Debug, Clone, Serialize)]
pub struct PeriodLine {
    /// 1-based.
    pub period: usize,
    /// Rows scored.
    pub rows: usize,
    /// The version that served it.
    pub version: String,
    /// The task's metric on its rows (accuracy, or RMSE).
    pub metric: f64,
    /// The monitor's estimate of it without labels (CBPE or DLE).
    pub estimated: Option<f64>,
    /// The monitor's realized value from the labels it had.
    pub realized: Option<f64>,
    /// Labels the monitor joined.
    pub labelled: u64,
    /// Drifted / tested features.
    pub drifted: u64,
    /// Features tested.
    pub tested: u64,
    /// Multivariate drift outside its band.
    pub multivariate: bool,
    /// Whether the monitor found a breach, and its kinds.
    pub breach: bool,
    /// The breach's kinds.
    pub kinds: Vec<String>,
    /// The retrain decision (`sent`, `suppressed`, …).
    pub retrain: String,
    /// The deploy rule's verdict on the retrained version.
    pub verdict: Option<String>,
    /// Earlier windows re-judged with late labels.
    pub late_windows: usize,
    /// Dataset drift (the drifted share reached `drift_share`).
    pub dataset_drift: bool,
    /// The labelled section's status (`assessed`, `no_labels`, …).
    pub performance: String,
    /// The live metric's drop against the holdout, when assessed.
    pub drop: Option<f64>,
    /// Why a retrain was not sent, when it was not.
    pub retrain_detail: String,
    /// The retrained version.
    pub new_version: Option<String>,
    /// The monitor's decision on a shadow or canary this period, with its evidence.
    pub rollout: Option<String>,
    /// The period's monitor report.
    pub report: String,
    /// The first version's metric on these rows.
    pub never: f64,
    /// The retrained-every-period version's metric on these rows.
    pub every: f64,
    /// The persistence baseline's metric on these rows.
    pub persistence: f64,
}

impl PeriodLine {
    /// The line of period `p` from its monitor report and references.
    #[allow(clippy::too_many_arguments)]
    fn of(
        p: usize,
        rows: usize,
        version: String,
        metric: f64,
        outcome: &lambdaml_monitor::MonitorOutcome,
        (new_version, verdict): (Option<String>, Option<String>),
        refs: &References,
        classification: bool,
    ) -> Self {
        let r = &outcome.report;
        let rollout = r.rollout.as_ref().map(|ro| {
            let evidence = ro.comparison.as_ref().map_or(String::new(), |c| {
                format!(
                    " ({} {:+.4} [{:+.4}, {:+.4}], agreement {:.2})",
                    c.metric,
                    c.improvement,
                    c.interval[0],
                    c.interval[1],
                    ro.agreement.label_agreement.unwrap_or(f64::NAN)
                )
            });
            let what = match ro.decision.as_str() {
                "promote" => "promoted",
                "end" => "retired",
                other => other,
            };
            format!("{} {} {what}{evidence}", ro.role, ro.candidate.version)
        });
        let task_metric = if classification { "accuracy" } else { "rmse" };
        PeriodLine {
            period: p + 1,
            rows,
            version,
            metric,
            estimated: r
                .performance
                .estimated
                .as_ref()
                .and_then(|e| e.metrics.get(task_metric))
                .map(|e| e.value),
            realized: r.performance.metrics.get(task_metric).copied(),
            labelled: r.performance.labelled_rows,
            drifted: r.data_drift.drifted,
            tested: r.data_drift.tested,
            multivariate: r.multivariate_drift.as_ref().is_some_and(|m| m.drifted),
            breach: r.verdict.breach,
            kinds: r.verdict.kinds.clone(),
            retrain: r.retrain.decision.clone(),
            verdict,
            late_windows: r.late_labels.len(),
            dataset_drift: r.data_drift.dataset_drift,
            performance: r.performance.status.clone(),
            drop: r.performance.drop,
            retrain_detail: r.retrain.detail.clone(),
            new_version,
            rollout,
            report: outcome.html_key.clone(),
            never: refs.never,
            every: refs.every,
            persistence: refs.persistence,
        }
    }
}

/// One approach's totals.
#[derive(Debug, Clone, Serialize)]
pub struct Totals {
    /// The mean of the per-period metric.
    pub mean: f64,
    /// The metric over every replayed row.
    pub overall: f64,
    /// κ-temporal over every row (classification): the gain over persistence.
    pub kappa_temporal: Option<f64>,
    /// Retrains.
    pub retrains: usize,
}

/// `lambdaml backtest`'s result.
#[derive(Debug, Clone, Serialize)]
pub struct BacktestReport {
    /// The replayed file.
    pub file: String,
    /// The model.
    pub model: String,
    /// `accuracy` or `rmse`.
    pub metric: String,
    /// The store the backtest ran in.
    pub store: String,
    /// Initial rows, period rows, periods, label delay.
    pub initial: usize,
    /// Rows per period.
    pub period: usize,
    /// Periods replayed.
    pub periods: usize,
    /// The labels' delay in periods.
    pub labels_delay: usize,
    /// Per period.
    pub lines: Vec<PeriodLine>,
    /// The loop as the spec runs it.
    pub monitored: Totals,
    /// The first version, never retrained.
    pub never_retrained: Totals,
    /// Retrained on the spec's window before every period.
    pub every_period: Totals,
    /// The previous row's label.
    pub persistence: Totals,
    /// Retrained versions the deploy rule promoted (or put in front as shadow/canary).
    pub promoted: usize,
    /// Mean |estimated − realized| over periods with both.
    pub estimate_error: Option<f64>,
    /// Wall time.
    pub seconds: f64,
    /// The HTML report.
    pub html: String,
}

/// `--period-time`, read as the spec reads its durations (`7d`, `12h`, `30m`, `90s`).
fn duration(text: &str) -> Result<Duration> {
    let secs = lambdaml::spec::parse_duration_secs(text)
        .ok_or_else(|| anyhow!("--period-time {text:?}: expected a number and d, h, m or s"))?;
    let d = i64::try_from(secs)
        .ok()
        .and_then(Duration::try_seconds)
        .ok_or_else(|| anyhow!("--period-time {text:?} is too long"))?;
    if d > Duration::zero() {
        Ok(d)
    } else {
        bail!("--period-time must be positive")
    }
}

/// Checks the arguments, the spec and the file before any store is opened or created.
pub fn validate(args: &BacktestArgs) -> Result<()> {
    let spec = read_spec(&args.spec)?.1;
    duration(&args.period_time)?;
    let rows = read_rows(&args.file)?;
    check(args, &spec, &rows).map(|_| ())
}

fn read_spec(path: &std::path::Path) -> Result<(String, ModelSpec)> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the spec {}", path.display()))?;
    let spec =
        ModelSpec::parse(&text).with_context(|| format!("reading the spec {}", path.display()))?;
    Ok((text, spec))
}

/// Where a backtest runs when `--store` is not given: a fresh folder.
pub fn fresh_store(spec: &std::path::Path) -> Result<String> {
    let name = read_spec(spec)?.1.model.name;
    let stamp = Utc::now().format("%Y%m%dT%H%M%S%.3f");
    let parent = std::env::current_dir()?.join("lambdaml-backtest");
    std::fs::create_dir_all(&parent).with_context(|| format!("creating {}", parent.display()))?;
    let dir = parent.join(format!("{name}-{stamp}"));
    // Never an existing folder: a second backtest in the same millisecond is refused.
    std::fs::create_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(format!("file://{}", dir.display()))
}

/// Where a backtest's simulated clock starts.
fn replay_start() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2001-01-01T00:00:00Z")
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or_default()
}

/// Checks the arguments against the file and the spec before anything runs.
fn check(args: &BacktestArgs, spec: &ModelSpec, rows: &Rows) -> Result<(usize, Option<usize>)> {
    let label = rows
        .header
        .iter()
        .position(|h| *h == spec.dataset.label)
        .ok_or_else(|| {
            anyhow!(
                "{} has no column {:?}, the spec's label ([dataset] label); its columns: {}",
                args.file.display(),
                spec.dataset.label,
                rows.header.join(", ")
            )
        })?;
    let order = match &args.order_by {
        None => None,
        Some(c) => Some(rows.header.iter().position(|h| h == c).ok_or_else(|| {
            anyhow!(
                "--order-by {c:?}: {} has no such column; its columns: {}",
                args.file.display(),
                rows.header.join(", ")
            )
        })?),
    };
    if args.period == 0 {
        bail!("--period must be at least 1 row");
    }
    if args.initial < 10 {
        bail!("--initial must be at least 10 rows to train a first version");
    }
    let n = rows.rows.len();
    if args.initial >= n {
        bail!(
            "--initial {} leaves nothing to replay: {} has {n} rows",
            args.initial,
            args.file.display()
        );
    }
    let periods = (n - args.initial).div_ceil(args.period.max(1));
    let span = duration(&args.period_time)?;
    let fits = i32::try_from(periods + 1)
        .ok()
        .and_then(|k| span.checked_mul(k))
        .and_then(|t| replay_start().checked_add_signed(t))
        .is_some();
    if !fits {
        bail!(
            "--period-time {} × {periods} periods runs past the calendar's end",
            args.period_time
        );
    }
    if args.period > n - args.initial {
        bail!(
            "--period {} is longer than the stream: {} has {} rows after the {} initial ones",
            args.period,
            args.file.display(),
            n - args.initial,
            args.initial
        );
    }
    Ok((label, order))
}

/// Sorts the rows by `column` (numbers numerically, else as text; stable).
fn order_rows(rows: &mut [Vec<String>], column: usize) {
    // Numbers when every non-blank value is one (blanks last), else text.
    let numeric = rows.iter().all(|r| {
        let t = r[column].trim();
        t.is_empty() || t.parse::<f64>().is_ok()
    });
    if numeric {
        let key = |r: &Vec<String>| r[column].trim().parse::<f64>().unwrap_or(f64::INFINITY);
        rows.sort_by(|a, b| key(a).total_cmp(&key(b)));
    } else {
        rows.sort_by(|a, b| a[column].cmp(&b[column]));
    }
}

/// Runs the backtest (see the module docs) in `ctx`'s store.
pub async fn backtest(ctx: &Ctx, store_url: &str, args: BacktestArgs) -> Result<()> {
    let started = Instant::now();
    let (spec_text, spec) = read_spec(&args.spec)?;
    let period_time = duration(&args.period_time)?;
    let mut rows = read_rows(&args.file)?;
    let (label, order) = check(&args, &spec, &rows)?;
    if let Some(c) = order {
        order_rows(&mut rows.rows, c);
    }
    let classification = spec.task.kind != TaskKind::Regression;
    let model = spec.model.name.clone();
    let n = rows.rows.len();
    let periods = (n - args.initial).div_ceil(args.period);
    let late_limit = spec.monitor.late_labels;
    if args.labels_delay > late_limit && args.labels_delay < periods && !ctx.json {
        println!(
            "note: labels {} periods late reach past monitor.late_labels = {late_limit}: they are counted, never joined",
            args.labels_delay
        );
    }
    // The first version, through the normal pipeline.
    ctx.put_spec(&spec_text, &args.spec.display().to_string())
        .await?;
    let raw = layout::raw(&spec.dataset.name, "backtest_initial.csv")?;
    ctx.store
        .put(
            &raw,
            Bytes::from(csv_of(&rows.header, &rows.rows[..args.initial])?),
        )
        .await?;
    ctx.ingest_key(raw, None).await?;
    let handled = ctx.drain().await?;
    let registry = RegistryStore::new(ctx.store.clone());
    let Some(first_version) = registry.get(&model).await.ok().and_then(|r| r.production) else {
        let why = handled
            .iter()
            .rev()
            .find(|h| h.outcome != "ok")
            .map_or("no stage said why".to_string(), |h| {
                format!("{} {}: {}", h.stage, h.outcome, h.detail)
            });
        bail!(
            "the first {} rows did not deploy a first version: {why}",
            args.initial
        );
    };
    let manifest: lambdaml::model::ModelManifest = ctx
        .store
        .get_json(&layout::model_manifest(&model, &first_version)?)
        .await?;
    let start = replay_start();
    let replay = Replay::new(
        rows,
        label,
        &manifest.pipeline,
        classification,
        start,
        period_time,
    );
    let options = PlayOptions {
        every_period: true,
        batch: BATCH,
        printer: render::line,
    };
    let lines = play(ctx, &replay, &args, &model, &first_version, &options)
        .await?
        .lines;
    let report = summarise(
        &replay,
        &args,
        &model,
        store_url,
        lines,
        started.elapsed().as_secs_f64(),
    );
    let html_path = match &args.html {
        Some(p) => p.clone(),
        None => match store_url.strip_prefix("file://") {
            Some(dir) => PathBuf::from(dir).join("backtest.html"),
            None => PathBuf::from("backtest.html"),
        },
    };
    let mut report = report;
    report.html = html_path.display().to_string();
    std::fs::write(&html_path, render::html(&report))
        .with_context(|| format!("writing {}", html_path.display()))?;
    crate::output::emit(ctx.json, &report, render::text);
    Ok(())
}

/// Posts the labels of every scored period whose delay ends at period `p` (dropping them
/// from `pending`).
async fn post_due_labels(
    app: &axum::Router,
    replay: &Replay,
    args: &BacktestArgs,
    model: &str,
    p: usize,
    pending: &mut Vec<(usize, Scored)>,
) -> Result<usize> {
    let mut feedback = Vec::new();
    pending.retain(|(q, s)| {
        if q.saturating_add(args.labels_delay) != p {
            return true;
        }
        let mut row = args.initial + q * args.period;
        for (id, count) in &s.requests {
            for r in 0..*count {
                feedback.push(serde_json::json!({
                    "request_id": id, "row": r, "label": replay.rows.rows[row][replay.label]
                }));
                row += 1;
            }
        }
        false
    });
    for chunk in feedback.chunks(10_000) {
        let (status, answer) = post(
            app,
            &format!("/v2/models/{model}/feedback"),
            &serde_json::json!({ "feedback": chunk }),
        )
        .await?;
        if !status.is_success() {
            bail!("posting feedback failed: {answer}");
        }
    }
    Ok(feedback.len())
}

/// The replay proper: every period through the loop, then the references.
/// The router the loop scores through (capture on, its clock `now_ms`, a retrained version
/// live for the very next request) with its state, and one for the references (no capture).
fn routers(
    ctx: &Ctx,
    model: &str,
    now_ms: Arc<AtomicI64>,
) -> (Arc<lambdaml_score::ScoreState>, axum::Router, axum::Router) {
    use lambdaml::capture::Clock;
    use lambdaml_score::{ScoreConfig, ScoreState, router};
    let state = ScoreState::with_clock(
        ctx.store.clone(),
        ScoreConfig {
            default_model: Some(model.to_string()),
            refresh: std::time::Duration::ZERO,
            ..ScoreConfig::default()
        },
        Instant::now(),
        Clock::new(move || {
            DateTime::<Utc>::from_timestamp_millis(now_ms.load(Ordering::Relaxed))
                .unwrap_or_default()
        }),
    );
    let app = router(state.clone());
    let quiet = router(ScoreState::new(
        ctx.store.clone(),
        ScoreConfig {
            default_model: Some(model.to_string()),
            capture: lambdaml::capture::CaptureConfig {
                sample_rate: 0.0,
                ..lambdaml::capture::CaptureConfig::default()
            },
            ..ScoreConfig::default()
        },
        Instant::now(),
    ));
    (state, app, quiet)
}

/// How [`play`] reports and what it computes besides the loop.
pub(crate) struct PlayOptions {
    /// Also retrain a reference version before every period (the demo leaves it out).
    pub every_period: bool,
    /// Rows per scoring request (the demo's story is one request a day).
    pub batch: usize,
    /// A period's line for people (the column header first when the flag says so).
    pub printer: fn(&PeriodLine, bool) -> String,
}

/// What [`play`] did.
pub(crate) struct Played {
    /// Per period.
    pub lines: Vec<PeriodLine>,
    /// Requests captured (production's and any shadow's).
    pub captured: u64,
    /// Labels posted.
    pub labels: usize,
}

/// The replay proper (see the module docs): every period through the loop and the
/// references on its rows.
pub(crate) async fn play(
    ctx: &Ctx,
    replay: &Replay,
    args: &BacktestArgs,
    model: &str,
    first_version: &str,
    options: &PlayOptions,
) -> Result<Played> {
    let periods = (replay.rows.rows.len() - args.initial).div_ceil(args.period);
    use lambdaml::pipeline::{Function, Wired};
    use lambdaml_monitor::{Monitor, MonitorRequest};

    let now_ms = Arc::new(AtomicI64::new(replay.start.timestamp_millis()));
    let (state, app, quiet) = routers(ctx, model, now_ms.clone());
    let wired = Wired::open(Function::Monitor, ctx.store.clone(), &ctx.queues).await?;
    let monitor = Monitor::from_wiring(&wired);
    let every = if options.every_period {
        Some(Every::open(ctx, model).await?)
    } else {
        None
    };
    let mut labels = 0;
    let mut pending: Vec<(usize, Scored)> = Vec::new();
    let mut lines = Vec::new();
    let bar = crate::output::spinner(ctx.json, "replaying; periods:");
    for p in 0..periods {
        let first = args.initial + p * args.period;
        let last = (first + args.period).min(replay.rows.rows.len());
        let rows = &replay.rows.rows[first..last];
        let scored = replay
            .score(
                &app,
                "/invocations",
                Some((&now_ms, options.batch)),
                p,
                rows,
            )
            .await?;
        let metric = replay.metric(rows, &scored.predictions);
        let version = scored.version.clone();
        pending.push((p, scored));
        // The labels due now arrive just before the period ends.
        let end = replay.period_start(p + 1);
        now_ms.store(end.timestamp_millis() - 1, Ordering::Relaxed);
        labels += post_due_labels(&app, replay, args, model, p, &mut pending).await?;
        state.settle(std::time::Duration::from_secs(30)).await;
        state.capture.flush().await;
        let outcome = monitor
            .run(&MonitorRequest {
                model: model.to_string(),
                window: None,
                from: Some(replay.period_start(p).to_rfc3339()),
                to: Some(end.to_rfc3339()),
                at: Some(end.to_rfc3339()),
                retrain: true,
            })
            .await
            .map_err(|e| anyhow!("monitor, period {}: {}", p + 1, e.reason()))?;
        let (mut new_version, mut verdict) = (None, None);
        if outcome.report.retrain.decision == "sent" {
            let handled = ctx.drain().await?;
            if let Some(d) = handled
                .iter()
                .rev()
                .find(|h| h.stage == lambdaml::message::Stage::Deploy && h.outcome == "ok")
            {
                new_version = d.detail["version"].as_str().map(str::to_string);
                verdict = d.detail["verdict"].as_str().map(str::to_string);
            }
        }
        let refs = References::of(
            ctx,
            replay,
            args,
            &quiet,
            every.as_ref(),
            (model, first_version),
            p,
        )
        .await?;
        lines.push(PeriodLine::of(
            p,
            rows.len(),
            version,
            metric,
            &outcome,
            (new_version, verdict),
            &refs,
            replay.classification,
        ));
        bar.inc(1);
        if !ctx.json {
            bar.suspend(|| print!("{}", (options.printer)(&lines[lines.len() - 1], p == 0)));
        }
    }
    bar.finish_and_clear();
    Ok(Played {
        lines,
        captured: state.capture.stats().written,
        labels,
    })
}
