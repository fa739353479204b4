//! `lambdaml runs list` and `lambdaml runs show RUN`: the pipeline runs' records.

use anyhow::{Result, bail};
use clap::Subcommand;
use lambdaml::record::{RunRecord, RunStatus, TriggerKind};
use serde::Serialize;

use crate::ctx::Ctx;
use crate::history::{self, Unreadable};
use crate::output::emit;

/// `lambdaml runs …`.
#[derive(Debug, Subcommand)]
pub enum RunsCommand {
    /// Every pipeline run, newest first: trigger, status, models, steps.
    List {
        /// Only runs with a step for this model.
        #[arg(long)]
        model: Option<String>,
        /// Only runs with this status: running, succeeded or failed.
        #[arg(long, value_parser = ["running", "succeeded", "failed"])]
        status: Option<String>,
        /// At most this many runs.
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// One run's steps: status, times, attempts, inputs, outputs, reasons.
    Show {
        /// The run id (`lambdaml runs list` shows them).
        run: String,
    },
}

#[derive(Serialize)]
struct RunLine {
    run: String,
    status: RunStatus,
    trigger: TriggerKind,
    detail: String,
    models: Vec<String>,
    steps: usize,
    created_at: String,
    seconds: f64,
}

#[derive(Serialize)]
struct Listing {
    runs: Vec<RunLine>,
    unreadable: Vec<Unreadable>,
}

fn line(r: &RunRecord) -> RunLine {
    RunLine {
        run: r.run.clone(),
        status: r.status(),
        trigger: r.trigger.kind,
        detail: r.trigger.detail.clone(),
        models: r.models(),
        steps: r.steps.len(),
        created_at: r.created_at.clone(),
        seconds: r.seconds(),
    }
}

pub async fn runs(ctx: &Ctx, command: RunsCommand) -> Result<()> {
    match command {
        RunsCommand::List {
            model,
            status,
            limit,
        } => {
            let mut listing = Listing {
                runs: Vec::new(),
                unreadable: Vec::new(),
            };
            for r in history::records(ctx.store.as_ref()).await? {
                match r {
                    Ok(r) => {
                        let wanted = model.as_ref().is_none_or(|m| r.models().contains(m))
                            && status.as_deref().is_none_or(|s| r.status().as_str() == s);
                        if wanted && listing.runs.len() < limit {
                            listing.runs.push(line(&r));
                        }
                    }
                    Err(u) => listing.unreadable.push(u),
                }
            }
            emit(ctx.json, &listing, render_listing);
            Ok(())
        }
        RunsCommand::Show { run } => match history::record(ctx.store.as_ref(), &run).await? {
            Some(Ok(record)) => {
                emit(ctx.json, &record, render_record);
                Ok(())
            }
            Some(Err(u)) => bail!("{}: {}", u.key, u.reason),
            None => {
                let known: Vec<String> = history::records(ctx.store.as_ref())
                    .await?
                    .into_iter()
                    .filter_map(Result::ok)
                    .take(5)
                    .map(|r| r.run)
                    .collect();
                if known.is_empty() {
                    bail!("there is no run {run:?}; this store has no runs yet")
                }
                bail!(
                    "there is no run {run:?}; the newest are: {} (`lambdaml runs list`)",
                    known.join(", ")
                )
            }
        },
    }
}

fn render_listing(l: &Listing) -> String {
    let mut s = String::new();
    if l.runs.is_empty() {
        s.push_str("no runs\n");
    } else {
        s.push_str(&format!(
            "{:<44} {:<10} {:<9} {:>5} {:>8}  {:<22} {}\n",
            "run", "status", "trigger", "steps", "seconds", "models", "detail"
        ));
    }
    for r in &l.runs {
        let mut detail: String = r.detail.chars().take(57).collect();
        if r.detail.chars().count() > 57 {
            detail.push_str("...");
        }
        s.push_str(&format!(
            "{:<44} {:<10} {:<9} {:>5} {:>8.1}  {:<22} {}\n",
            r.run,
            r.status.as_str(),
            r.trigger.prefix(),
            r.steps,
            r.seconds,
            r.models.join(","),
            detail
        ));
    }
    for u in &l.unreadable {
        s.push_str(&format!("unreadable {}: {}\n", u.key, u.reason));
    }
    s
}

pub fn render_record(r: &RunRecord) -> String {
    let mut s = format!(
        "run {} — {} ({:?}: {})\ncreated {}, updated {}\n\n",
        r.run,
        r.status(),
        r.trigger.kind,
        r.trigger.detail,
        r.created_at,
        r.updated_at
    );
    if let Some(report) = &r.trigger.report {
        s.push_str(&format!("asked for by the monitoring report {report}\n\n"));
    }
    s.push_str(&format!(
        "{:<12} {:<22} {:<15} {:>8} {:>8}  {}\n",
        "stage", "model", "status", "attempts", "seconds", "outputs / reason"
    ));
    for step in &r.steps {
        let what = match (&step.reason, &step.reused_run) {
            (Some(reason), _) => reason.clone(),
            (None, Some(run)) => format!("{} (made by run {run})", step.outputs.join(" ")),
            (None, None) => step.outputs.join(" "),
        };
        s.push_str(&format!(
            "{:<12} {:<22} {:<15} {:>8} {:>8.2}  {}\n",
            step.stage.as_str(),
            step.model.as_deref().unwrap_or("-"),
            step.status.as_str(),
            step.attempts,
            step.seconds,
            what
        ));
    }
    s
}
