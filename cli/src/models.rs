//! `lambdaml train` and `lambdaml models …`.

use std::path::PathBuf;

use anyhow::{Context, Result, anyhow};
use clap::{Args, Subcommand};
use lambdaml::events::RegistryEvent;
use lambdaml::layout;
use lambdaml::message::{Message, PreprocessRequest, Stage, StageMessage};
use lambdaml::record::{TriggerKind, new_run_id};
use lambdaml::registry::{Action, Registry, RegistryStore, Role};
use lambdaml::stage::Handled;
use lambdaml::store::ObjectStoreExt;
use lambdaml_deploy::Deploy;
use serde::Serialize;

use crate::commands::latest_version;
use crate::ctx::Ctx;
use crate::output::emit;
use crate::render::render_handled;

/// `lambdaml train`.
#[derive(Debug, Args)]
pub struct TrainArgs {
    /// The model spec (TOML).
    #[arg(long)]
    pub spec: PathBuf,
    /// Ingest this file first (else the dataset's latest version is used).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Preprocess and train again even when a run with the same inputs and spec sections
    /// exists (a new version; nothing earlier is reused). Trains the dataset's latest
    /// version: ingest a new file first (`lambdaml ingest`), then train with it.
    #[arg(long, conflicts_with = "data")]
    pub no_cache: bool,
}

#[derive(Serialize)]
struct TrainReport {
    dataset_version: String,
    handled: Vec<Handled>,
    registry: Option<Registry>,
}

/// Queues a preprocess of `spec_text` on the dataset's latest version and drains every stage.
pub async fn train_spec(
    ctx: &Ctx,
    spec_text: &str,
    origin: &str,
    no_cache: bool,
) -> Result<(String, Vec<Handled>)> {
    let spec = ctx.put_spec(spec_text, origin).await?;
    let dataset = latest_version(ctx.store.as_ref(), &spec.dataset.name).await?;
    let sha = lambdaml::sha256_hex(spec_text.as_bytes());
    let snapshot = layout::spec_snapshot(&spec.model.name, &sha)?;
    ctx.store
        .put_immutable(&snapshot, bytes::Bytes::from(spec_text.to_string()))
        .await?;
    let message = Message::new(
        new_run_id(TriggerKind::Manual),
        Some(spec.model.name.clone()),
        StageMessage::Preprocess(PreprocessRequest {
            dataset: spec.dataset.name.clone(),
            dataset_version: dataset.version.clone(),
            spec: snapshot,
            // A forced run: nothing earlier is reused.
            salt: no_cache.then(|| uuid::Uuid::new_v4().simple().to_string()),
        }),
    );
    let queue = ctx.queues.get(Stage::Preprocess).await?;
    lambdaml::recorder::send(ctx.store.as_ref(), queue.as_ref(), &message).await?;
    Ok((dataset.version, ctx.drain().await?))
}

fn data_name(args: &TrainArgs) -> Result<String> {
    args.data
        .as_ref()
        .and_then(|d| d.file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| anyhow!("--data has no file name"))
}

pub async fn train(ctx: &Ctx, args: TrainArgs) -> Result<()> {
    if let Some(data) = &args.data
        && !data.is_file()
    {
        anyhow::bail!("{} is not a file", data.display());
    }
    let text = std::fs::read_to_string(&args.spec)
        .with_context(|| format!("reading the spec {}", args.spec.display()))?;
    let origin = args.spec.display().to_string();
    let spec = ctx.put_spec(&text, &origin).await?;
    if let Some(data) = &args.data {
        let name = data
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .ok_or_else(|| anyhow!("{} has no file name", data.display()))?;
        let key = layout::raw(&spec.dataset.name, &name)?;
        ctx.store.put_file(&key, data).await?;
    }
    let (dataset_version, handled) = match &args.data {
        // Ingest asks every spec of the dataset (this one included) to preprocess.
        Some(_) => {
            let outcome = ctx
                .ingest_key(layout::raw(&spec.dataset.name, &data_name(&args)?)?, None)
                .await?;
            (outcome.version, ctx.drain().await?)
        }
        None => train_spec(ctx, &text, &origin, args.no_cache).await?,
    };
    let registry = RegistryStore::new(ctx.store.clone())
        .load(&spec.model.name)
        .await?
        .map(|(r, _)| r);
    let failures: Vec<&Handled> = handled.iter().filter(|h| h.outcome != "ok").collect();
    emit(
        ctx.json,
        &TrainReport {
            dataset_version,
            handled: handled.clone(),
            registry: registry.clone(),
        },
        |r| {
            let mut s = render_handled(&r.handled);
            if let Some(reg) = &r.registry {
                s.push_str(&format!(
                    "production: {}\n",
                    reg.production.as_deref().unwrap_or("none")
                ));
            }
            s
        },
    );
    if let Some(f) = failures.first() {
        anyhow::bail!("the {} stage failed: {}", f.stage, f.detail);
    }
    Ok(())
}

/// `lambdaml models …`.
#[derive(Debug, Subcommand)]
pub enum ModelsCommand {
    /// Every model with its production version.
    List,
    /// One model's versions (or one version's manifest and evaluation).
    Show {
        /// The model.
        model: String,
        /// A version.
        #[arg(long)]
        version: Option<String>,
    },
    /// Approve a version waiting for approval: it goes to production.
    Approve {
        /// The model.
        model: String,
        /// The version.
        version: String,
    },
    /// Put a version in production by hand.
    Promote {
        /// The model.
        model: String,
        /// The version.
        version: String,
        /// Why (recorded in the history).
        #[arg(long, default_value = "promoted by hand")]
        reason: String,
    },
    /// Return production to the previous version (or `--to` a named one).
    Rollback {
        /// The model.
        model: String,
        /// The version to return to.
        #[arg(long)]
        to: Option<String>,
        /// Why (recorded in the history).
        #[arg(long, default_value = "rolled back by hand")]
        reason: String,
    },
    /// Every promotion, rejection and rollback, oldest first.
    History {
        /// The model.
        model: String,
    },
    /// Let a version score a copy of the live traffic beside production (its answers are
    /// captured with role `shadow`, never returned); the monitor compares the two.
    Shadow {
        /// The model.
        model: String,
        /// The version.
        version: String,
        /// The share of requests it scores, in (0, 1].
        #[arg(long, default_value_t = 1.0)]
        share: f64,
        /// Why (recorded in the history).
        #[arg(long)]
        reason: Option<String>,
    },
    /// Let a version answer a share of the live traffic (sticky per `x-lambdaml-key`); the
    /// same command with the canary's own version changes its weight.
    Canary {
        /// The model.
        model: String,
        /// The version.
        version: String,
        /// The share of requests it answers, in (0, 1).
        #[arg(long)]
        weight: f64,
        /// Why (recorded in the history).
        #[arg(long)]
        reason: Option<String>,
    },
    /// End the rollout: the shadow and canary versions (or `--role` one) are retired and
    /// production serves alone.
    EndRollout {
        /// The model.
        model: String,
        /// Only this role (`shadow` or `canary`).
        #[arg(long)]
        role: Option<String>,
        /// Why (recorded in the history).
        #[arg(long, default_value = "rollout ended by hand")]
        reason: String,
    },
    /// Print registry events (registered, promoted, shadowed, canary step, retired, …) from
    /// the deployments queue as they arrive. Events are consumed: one reader at a time.
    Watch {
        /// Print what is waiting and exit instead of following.
        #[arg(long)]
        once: bool,
    },
}

fn actor() -> String {
    format!(
        "cli:{}",
        std::env::var("USER").unwrap_or_else(|_| "unknown".into())
    )
}

fn render_registry(r: &Registry) -> String {
    let mut s = format!(
        "model {} — production: {}\n",
        r.model,
        r.production.as_deref().unwrap_or("none")
    );
    s.push_str(&render_roles(r));
    s.push_str(&format!(
        "  {:>3}  {:<12}  {:<16}  {:<20}  metrics\n",
        "#", "version", "status", "registered"
    ));
    let mut versions: Vec<_> = r.versions.values().collect();
    versions.sort_by_key(|v| v.number);
    for v in versions {
        let metrics: Vec<String> = v
            .metrics
            .iter()
            .map(|(k, x)| format!("{k} {x:.4}"))
            .collect();
        s.push_str(&format!(
            "  {:>3}  {:<12}  {:<16}  {:<20}  {}\n",
            v.number,
            v.version,
            format!("{:?}", v.status).to_lowercase(),
            v.registered_at,
            metrics.join(", ")
        ));
    }
    s
}

fn render_roles(r: &Registry) -> String {
    let mut s = String::new();
    for role in [Role::Shadow, Role::Canary] {
        if let Some(slot) = r.slot(role) {
            s.push_str(&format!(
                "{role}: {} on {} % of the traffic since {}\n",
                slot.version,
                percent(slot.weight),
                slot.since
            ));
        }
    }
    s
}

/// A weight as a percentage without trailing zeros: 0.05 → "5", 0.125 → "12.5".
fn percent(weight: f64) -> String {
    let p = (weight * 1e4).round() / 100.0;
    format!("{p}")
}

fn render_event(e: &RegistryEvent) -> String {
    format!(
        "{}  {:<12} {} {}{}  by {}: {}\n",
        e.at,
        e.event,
        e.model,
        e.version,
        match &e.from_role {
            Some(f) => format!(" ({f} → {})", e.to_role),
            None => format!(" (→ {})", e.to_role),
        },
        e.actor,
        e.reason
    )
}

fn render_history(r: &Registry) -> String {
    let mut s = String::new();
    for h in &r.history {
        s.push_str(&format!(
            "{}  {:<8}  {}{}  by {}: {}\n",
            h.at,
            format!("{:?}", h.action).to_lowercase(),
            h.version,
            h.previous
                .as_ref()
                .map(|p| format!(" (was {p})"))
                .unwrap_or_default(),
            h.actor,
            h.reason
        ));
    }
    s
}

/// `lambdaml models list`.
async fn list(ctx: &Ctx, registry: &RegistryStore) -> Result<()> {
    let mut all = Vec::new();
    for model in registry.models().await? {
        all.push(registry.get(&model).await?);
    }
    emit(ctx.json, &serde_json::json!({"models": all}), |_| {
        if all.is_empty() {
            return "no models yet: try `lambdaml demo` or `lambdaml train --spec SPEC`\n".into();
        }
        all.iter()
            .map(|r| {
                format!(
                    "{:<24} production {:<12} {} versions\n",
                    r.model,
                    r.production.as_deref().unwrap_or("none"),
                    r.versions.len()
                )
            })
            .collect()
    });
    Ok(())
}

pub async fn models(ctx: &Ctx, command: ModelsCommand) -> Result<()> {
    let registry = RegistryStore::new(ctx.store.clone());
    let deploy = ctx.wire::<Deploy>().await?;
    let manual = |action: Action, model: String, version: Option<String>, reason: String| {
        let deploy = deploy.clone();
        async move {
            deploy
                .manual(action, &model, version.as_deref(), &actor(), &reason)
                .await
                .map_err(|e| anyhow!("{}", e.reason()))
        }
    };
    match command {
        ModelsCommand::List => list(ctx, &registry).await?,
        ModelsCommand::Show {
            model,
            version: None,
        } => {
            let r = registry.get(&model).await?;
            emit(ctx.json, &r, render_registry);
        }
        ModelsCommand::Show {
            model,
            version: Some(v),
        } => {
            let manifest: serde_json::Value = ctx
                .store
                .get_json(&layout::model_manifest(&model, &v)?)
                .await
                .with_context(|| format!("model {model} version {v}"))?;
            let evaluation: Option<serde_json::Value> = ctx
                .store
                .get_json(&layout::evaluation(&model, &v)?)
                .await
                .ok();
            let view = serde_json::json!({"manifest": manifest, "evaluation": evaluation});
            emit(ctx.json, &view, |v| {
                serde_json::to_string_pretty(v).unwrap_or_default() + "\n"
            });
        }
        ModelsCommand::Approve { model, version } => {
            let r = manual(Action::Pending, model, Some(version), "approved".into()).await?;
            emit(ctx.json, &r, render_registry);
        }
        ModelsCommand::Promote {
            model,
            version,
            reason,
        } => {
            let r = manual(Action::Promote, model, Some(version), reason).await?;
            emit(ctx.json, &r, render_registry);
        }
        ModelsCommand::Rollback { model, to, reason } => {
            let r = manual(Action::Rollback, model, to, reason).await?;
            emit(ctx.json, &r, render_registry);
        }
        ModelsCommand::Shadow {
            model,
            version,
            share,
            reason,
        } => {
            let r = rollout(&deploy, &model, Role::Shadow, &version, share, reason).await?;
            emit(ctx.json, &r, render_registry);
        }
        ModelsCommand::Canary {
            model,
            version,
            weight,
            reason,
        } => {
            let r = rollout(&deploy, &model, Role::Canary, &version, weight, reason).await?;
            emit(ctx.json, &r, render_registry);
        }
        ModelsCommand::EndRollout {
            model,
            role,
            reason,
        } => {
            let role = match role.as_deref() {
                None => None,
                Some("shadow") => Some(Role::Shadow),
                Some("canary") => Some(Role::Canary),
                Some(other) => {
                    anyhow::bail!("--role {other:?}: expected shadow or canary")
                }
            };
            let r = deploy
                .end_rollout(&model, role, &actor(), &reason)
                .await
                .map_err(|e| anyhow!("{}", e.reason()))?;
            emit(ctx.json, &r, render_registry);
        }
        ModelsCommand::Watch { once } => watch(ctx, once).await?,
        ModelsCommand::History { model } => {
            let r = registry.get(&model).await?;
            emit(
                ctx.json,
                &serde_json::json!({"model": r.model, "history": r.history}),
                |_| render_history(&r),
            );
        }
    }
    Ok(())
}

/// `models shadow` / `models canary`: `version` in `role` on `weight` of the traffic.
async fn rollout(
    deploy: &Deploy,
    model: &str,
    role: Role,
    version: &str,
    weight: f64,
    reason: Option<String>,
) -> Result<Registry> {
    let reason = reason
        .unwrap_or_else(|| format!("{role} on {} % of the traffic, by hand", percent(weight)));
    deploy
        .rollout(model, role, version, weight, &actor(), &reason)
        .await
        .map_err(|e| anyhow!("{}", e.reason()))
}

/// `lambdaml models watch`: prints (and consumes) the deployments queue's registry events.
async fn watch(ctx: &Ctx, once: bool) -> Result<()> {
    let queue = ctx.queues.named(lambdaml::queue::DEPLOYMENTS).await?;
    let wait = std::time::Duration::from_secs(if once { 1 } else { 10 });
    let mut seen = std::collections::HashSet::new();
    loop {
        let received = queue
            .receive(10, std::time::Duration::from_secs(30))
            .await?;
        if received.is_empty() {
            if once {
                return Ok(());
            }
            tokio::time::sleep(wait).await;
            continue;
        }
        for m in received {
            match serde_json::from_str::<RegistryEvent>(&m.body) {
                // A redelivered decision is announced again with the same id.
                Ok(e) if !seen.insert(e.event_id.clone()) => {}
                Ok(e) => emit(ctx.json, &e, render_event),
                Err(err) => eprintln!("not a registry event ({err}): {}", m.body),
            }
            queue.delete(&m.receipt).await?;
        }
    }
}
