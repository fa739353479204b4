//! The backtest's references — the first version never retrained, a version retrained on the
//! spec's window before every period, persistence — and the summary against them.

use anyhow::{Context, Result};
use bytes::Bytes;
use lambdaml::layout;
use lambdaml::spec::{ModelSpec, RetrainData};

use super::{BacktestArgs, BacktestReport, PeriodLine, Replay, Totals, csv_of, metric_of};
use crate::ctx::Ctx;

/// The references' metrics on one period's rows.
pub(super) struct References {
    pub never: f64,
    pub every: f64,
    pub persistence: f64,
}

impl References {
    /// Scores period `p`'s rows with the first version and a version retrained on the rows
    /// before them, and the persistence baseline.
    #[allow(clippy::too_many_arguments)]
    pub async fn of(
        ctx: &Ctx,
        replay: &Replay,
        args: &BacktestArgs,
        quiet: &axum::Router,
        every: Option<&Every>,
        (model, first_version): (&str, &str),
        p: usize,
    ) -> Result<Self> {
        let first = args.initial + p * args.period;
        let last = (first + args.period).min(replay.rows.rows.len());
        let rows = &replay.rows.rows[first..last];
        let never = replay
            .score(
                quiet,
                &format!("/invocations?model={model}&version={first_version}"),
                None,
                p,
                rows,
            )
            .await?;
        let every_metric = match every {
            Some(every) => {
                // Only rows whose labels have arrived by now: with labels `labels_delay`
                // periods late, the last of them end that many periods back.
                let labelled_to = first
                    .saturating_sub(args.labels_delay.saturating_mul(args.period))
                    .max(args.initial);
                let version = every
                    .retrain(ctx, replay, labelled_to, first_version)
                    .await?;
                let scored = replay
                    .score(
                        quiet,
                        &format!("/invocations?model={}&version={version}", every.model),
                        None,
                        p,
                        rows,
                    )
                    .await?;
                replay.metric(rows, &scored.predictions)
            }
            None => f64::NAN,
        };
        let truth: Vec<&str> = rows.iter().map(|r| r[replay.label].as_str()).collect();
        let previous = |i: usize| replay.rows.rows[first + i - 1][replay.label].as_str();
        Ok(References {
            never: replay.metric(rows, &never.predictions),
            every: every_metric,
            persistence: metric_of(
                replay.classification,
                truth.iter().copied(),
                (0..rows.len()).map(previous),
            ),
        })
    }
}

/// The retrain-every-period reference: the same spec under another model name, trained on
/// the spec's window of the rows before each period, its newest version serving the period
/// whatever the deploy rule says.
pub(super) struct Every {
    pub model: String,
    spec: ModelSpec,
}

impl Every {
    pub async fn open(ctx: &Ctx, model: &str) -> Result<Self> {
        let spec_key = layout::spec(model)?;
        let text = String::from_utf8(ctx.store.get(&spec_key).await?.bytes.to_vec())?;
        let every_model = format!("{model}-every-period");
        let mut doc: toml::Table = text.parse().context("re-reading the spec")?;
        let dataset = format!("{model}-every-period");
        if let Some(toml::Value::Table(m)) = doc.get_mut("model") {
            m.insert("name".into(), toml::Value::String(every_model.clone()));
        }
        if let Some(toml::Value::Table(d)) = doc.get_mut("dataset") {
            d.insert("name".into(), toml::Value::String(dataset.clone()));
        }
        // Only the pipeline runs; no monitor schedule or rollout applies to a reference.
        doc.remove("rollout");
        let spec = ctx
            .put_spec(&toml::to_string(&doc)?, "the every-period reference's spec")
            .await?;
        Ok(Every {
            model: every_model,
            spec,
        })
    }

    /// Trains on the spec's window of the rows before `first`; returns the version made.
    async fn retrain(
        &self,
        ctx: &Ctx,
        replay: &Replay,
        first: usize,
        fallback: &str,
    ) -> Result<String> {
        let from = match self.spec.retrain.data {
            RetrainData::Sliding => first.saturating_sub(self.spec.retrain.window_rows),
            RetrainData::All => 0,
        };
        let raw = layout::raw(&self.spec.dataset.name, &format!("rows-{from}-{first}.csv"))?;
        ctx.store
            .put(
                &raw,
                Bytes::from(csv_of(&replay.rows.header, &replay.rows.rows[from..first])?),
            )
            .await?;
        ctx.ingest_key(raw, None).await?;
        let handled = ctx.drain().await?;
        let made = handled
            .iter()
            .rev()
            .find(|h| h.stage == lambdaml::message::Stage::Evaluate && h.outcome == "ok")
            .and_then(|h| h.detail["version"].as_str().map(str::to_string));
        Ok(made.unwrap_or_else(|| fallback.to_string()))
    }
}

fn totals(
    classification: bool,
    per_period: &[f64],
    rows: &[usize],
    persistence_overall: f64,
    retrains: usize,
) -> Totals {
    let mean = per_period.iter().sum::<f64>() / per_period.len().max(1) as f64;
    // Overall: accuracy weighs periods by rows; RMSE pools squared errors.
    let total: usize = rows.iter().sum();
    let overall = if classification {
        per_period
            .iter()
            .zip(rows)
            .map(|(m, n)| m * *n as f64)
            .sum::<f64>()
            / total.max(1) as f64
    } else {
        (per_period
            .iter()
            .zip(rows)
            .map(|(m, n)| m * m * *n as f64)
            .sum::<f64>()
            / total.max(1) as f64)
            .sqrt()
    };
    Totals {
        mean,
        overall,
        kappa_temporal: (classification && persistence_overall < 1.0)
            .then(|| (overall - persistence_overall) / (1.0 - persistence_overall)),
        retrains,
    }
}

pub(super) fn summarise(
    replay: &Replay,
    args: &BacktestArgs,
    model: &str,
    store: &str,
    lines: Vec<PeriodLine>,
    seconds: f64,
) -> BacktestReport {
    let c = replay.classification;
    let rows: Vec<usize> = lines.iter().map(|l| l.rows).collect();
    let pick = |f: fn(&PeriodLine) -> f64| -> Vec<f64> { lines.iter().map(f).collect() };
    let persistence = totals(c, &pick(|l| l.persistence), &rows, f64::NAN, 0);
    let p = persistence.overall;
    let monitored = totals(
        c,
        &pick(|l| l.metric),
        &rows,
        p,
        lines.iter().filter(|l| l.retrain == "sent").count(),
    );
    let pairs: Vec<f64> = lines
        .iter()
        .filter_map(|l| Some((l.estimated? - l.realized?).abs()))
        .collect();
    BacktestReport {
        file: args.file.display().to_string(),
        model: model.to_string(),
        metric: if c { "accuracy" } else { "rmse" }.into(),
        store: store.to_string(),
        initial: args.initial,
        period: args.period,
        periods: lines.len(),
        labels_delay: args.labels_delay,
        monitored,
        never_retrained: totals(c, &pick(|l| l.never), &rows, p, 0),
        every_period: totals(c, &pick(|l| l.every), &rows, p, lines.len()),
        persistence: Totals {
            kappa_temporal: c.then_some(0.0),
            ..persistence
        },
        promoted: lines
            .iter()
            .filter(|l| matches!(l.verdict.as_deref(), Some("promote" | "shadow" | "canary")))
            .count(),
        estimate_error: (!pairs.is_empty()).then(|| pairs.iter().sum::<f64>() / pairs.len() as f64),
        seconds,
        html: String::new(),
        lines,
    }
}
