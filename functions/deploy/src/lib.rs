//! The deploy function: applies the spec's promotion rule, or rolls back.
//!
//! A newly evaluated version is promoted when there is no champion, or when it beats the
//! champion on the spec's metric by at least `min_improvement` on the same holdout rows and
//! no guardrail trips (no class's recall drops by more than `max_recall_drop`). With
//! `manual_approval` a passing version waits for a person instead. With `[rollout] mode =
//! "shadow"` (or `"canary"`) a passing version that has a champion to replace becomes the
//! shadow (the canary, on the first step's weight) instead, and the monitor promotes or
//! retires it from live evidence; a shadow already there is retired in its favour. Every
//! decision is one compare-and-swap on the registry with its reason and metrics, and is
//! announced as a registry event ([`lambdaml::events`]). A version already decided is left
//! alone, so a redelivered message changes nothing. Rollback returns production to the
//! previous (or a named) version; `shadow`, `canary` and `end_rollout` change the rollout
//! roles by hand.

use std::sync::Arc;

use async_trait::async_trait;
use lambdaml::evaluation::Evaluation;
use lambdaml::events::Announcer;
use lambdaml::layout;
use lambdaml::message::{DeployRequest, Envelope};
use lambdaml::metrics::higher_is_better;
use lambdaml::pipeline::{Function, NoQueue, Wire, Wired};
use lambdaml::queue::Queue;
use lambdaml::registry::{Action, Registry, RegistryError, RegistryStore, Role, VersionStatus};
use lambdaml::spec::{PromotionRule, PromotionSection, RolloutMode, RolloutSection};
use lambdaml::stage::{Handler, StageError};
use lambdaml::store::{JsonError, ObjectStore, ObjectStoreExt};
use serde::{Deserialize, Serialize};
use tracing::{info, instrument};

/// The deploy handler. It needs the store and the deployments queue.
#[derive(Clone)]
pub struct Deploy {
    store: Arc<dyn ObjectStore>,
    announcer: Announcer,
}

impl std::fmt::Debug for Deploy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deploy")
            .field("store", &self.store.url())
            .finish()
    }
}

/// The rule's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Goes to production.
    Promote,
    /// Waits for a person.
    Pending,
    /// Refused.
    Reject,
    /// Passed; scores a copy of the traffic as the shadow until the monitor decides.
    Shadow,
    /// Passed; answers a share of the traffic as the canary until the monitor decides.
    Canary,
}

/// A decision and its reason.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    /// The model.
    pub model: String,
    /// The version decided on.
    pub version: String,
    /// The verdict.
    pub verdict: Verdict,
    /// Why.
    pub reason: String,
    /// The production version after the decision.
    pub production: Option<String>,
    /// False when the version had been decided already (a redelivery).
    pub changed: bool,
}

/// The refusal of `max_recall_drop`, when a class's recall drops by more.
fn recall_guardrail(
    rule: &PromotionSection,
    evaluation: &Evaluation,
    champion: &lambdaml::evaluation::Scored,
) -> Option<(Verdict, String)> {
    let max_drop = rule.max_recall_drop?;
    let before = champion.metrics.recalls();
    for (class, recall) in evaluation.metrics.recalls() {
        if let Some(old) = before.get(&class)
            && old - recall > max_drop
        {
            return Some((
                Verdict::Reject,
                format!(
                    "guardrail: recall of class {class:?} drops from {old:.4} to {recall:.4}, more than {max_drop}"
                ),
            ));
        }
    }
    None
}

/// Applies a promotion rule to an evaluation. Pure: the registry is not touched.
pub fn apply_rule(rule: &PromotionSection, evaluation: &Evaluation) -> (Verdict, String) {
    let metric = rule.metric.as_str();
    let Some(challenger) = evaluation.metrics.get(metric) else {
        return (
            Verdict::Reject,
            format!("{metric} is not defined for this version's holdout"),
        );
    };
    let pass = |reason: String| {
        if rule.manual_approval {
            (
                Verdict::Pending,
                format!("{reason}; waiting for manual approval"),
            )
        } else {
            (Verdict::Promote, reason)
        }
    };
    let Some(champion) = &evaluation.champion else {
        return pass(format!(
            "first version: {metric} {challenger:.4} on {} holdout rows",
            evaluation.holdout_rows
        ));
    };
    let Some(incumbent) = champion.metrics.get(metric) else {
        return pass(format!(
            "the champion has no {metric}; {metric} {challenger:.4}"
        ));
    };
    let improvement = if higher_is_better(metric) {
        challenger - incumbent
    } else {
        incumbent - challenger
    };
    let bootstrap = match (rule.rule, &evaluation.comparison) {
        (PromotionRule::Bootstrap, Some(c)) if c.metric == metric => Some(c),
        _ => None,
    };
    if let Some(c) = bootstrap {
        // Non-inferiority on the interval: noise neither promotes nor refuses.
        let interval = format!(
            "{metric} {challenger:.4} vs champion {} {incumbent:.4} on the same {} rows: difference {:+.4}, {:.0} % interval [{:+.4}, {:+.4}] ({} paired resamples)",
            champion.version,
            c.rows,
            c.difference,
            100.0 * c.confidence,
            c.lower,
            c.upper,
            c.resamples
        );
        if c.lower < -rule.margin {
            return (
                Verdict::Reject,
                format!(
                    "{interval}: it may be worse by more than the margin {}",
                    rule.margin
                ),
            );
        }
        if let Some(refused) = recall_guardrail(rule, evaluation, champion) {
            return refused;
        }
        return pass(format!(
            "{interval}: not worse than the champion by more than {}",
            rule.margin
        ));
    }
    if improvement < rule.min_improvement {
        return (
            Verdict::Reject,
            format!(
                "{metric} {challenger:.4} vs champion {} {incumbent:.4} on the same {} rows: improvement {improvement:+.4} is below the required {}",
                champion.version, evaluation.holdout_rows, rule.min_improvement
            ),
        );
    }
    if let Some(refused) = recall_guardrail(rule, evaluation, champion) {
        return refused;
    }
    pass(format!(
        "{metric} {challenger:.4} beats champion {} {incumbent:.4} by {improvement:+.4}",
        champion.version
    ))
}

impl Deploy {
    /// A handler over `store`, announcing on `deployments`.
    pub fn new(store: Arc<dyn ObjectStore>, deployments: Arc<dyn Queue>) -> Self {
        Deploy {
            store,
            announcer: Announcer::new(Some(deployments), None),
        }
    }

    /// A handler over `store`, announcing with `announcer`.
    pub fn with_announcer(store: Arc<dyn ObjectStore>, announcer: Announcer) -> Self {
        Deploy { store, announcer }
    }

    /// Announces the changes `registry.history[from..]`.
    async fn announce_since(&self, registry: &Registry, from: usize) -> Result<(), StageError> {
        self.announcer.announce_since(registry, from).await?;
        Ok(())
    }

    /// `evaluation.json` of a version (a direct request carries none).
    async fn evaluation(&self, model: &str, version: &str) -> Result<Evaluation, StageError> {
        self.store
            .get_json(&layout::evaluation(model, version)?)
            .await
            .map_err(|e| match e {
                // Missing or corrupt is permanent; a throttled or failing store is retried.
                JsonError::Store(s) if s.is_retryable() => StageError::from(s),
                other => {
                    StageError::permanent(format!("{model} {version} has no evaluation: {other}"))
                }
            })
    }

    /// The promotion rule and rollout of the spec `version` was trained with (a direct
    /// request carries neither): its manifest's, else (an evaluation with no manifest
    /// beside it) that of the run it was evaluated from.
    async fn rules(
        &self,
        model: &str,
        version: &str,
        run_id: &str,
    ) -> Result<(PromotionSection, RolloutSection), StageError> {
        let manifest = self
            .store
            .get_json::<lambdaml::model::ModelManifest>(&layout::model_manifest(model, version)?)
            .await;
        let spec = match manifest {
            Ok(m) => lambdaml::run::trained_spec(self.store.as_ref(), &m).await?,
            Err(JsonError::Store(lambdaml::store::StoreError::NotFound(_))) => {
                lambdaml::run::RunManifest::read(self.store.as_ref(), run_id)
                    .await?
                    .spec(self.store.as_ref())
                    .await?
            }
            Err(e) => return Err(e.into()),
        };
        Ok((spec.promotion, spec.rollout))
    }

    /// Decides on one evaluated version. See the crate docs.
    #[instrument(skip(self))]
    pub async fn deploy(&self, request: &DeployRequest) -> Result<Decision, StageError> {
        let (model, version) = (request.model.clone(), request.version.clone());
        let evaluation = match &request.evaluation {
            Some(e) => (**e).clone(),
            None => self.evaluation(&model, &version).await?,
        };
        // The production version the rule's comparison was made against.
        let against: Option<Option<String>> = match &evaluation.against {
            Some(a) => Some(a.production.clone()),
            None => evaluation
                .champion
                .as_ref()
                .map(|c| Some(c.version.clone())),
        };
        let (promotion, rollout) = match &request.promotion {
            Some(p) => (p.clone(), request.rollout.clone().unwrap_or_default()),
            None => self.rules(&model, &version, &evaluation.run_id).await?,
        };
        let (rule_verdict, rule_reason) = apply_rule(&promotion, &evaluation);
        let registry = RegistryStore::new(self.store.clone());
        let mut start = 0;
        let (after, changed) = registry
            .update(&model, |r| {
                start = r.history.len();
                let status = r.versions.get(&version).map(|v| v.status).ok_or_else(|| {
                    RegistryError::UnknownVersion {
                        model: model.clone(),
                        version: version.clone(),
                    }
                })?;
                if status != VersionStatus::Candidate {
                    return Ok(false);
                }
                // Re-checked inside the compare-and-swap: a passing verdict stands only
                // while production is the version it was compared with. Two candidates
                // evaluated against one champion cannot both be promoted; the later one
                // waits for a person (or a fresh evaluation) instead.
                let (verdict, reason) = match &against {
                    Some(then) if *then != r.production && rule_verdict != Verdict::Reject => (
                        Verdict::Pending,
                        format!(
                            "{rule_reason}; but production changed from {} to {} since the evaluation, so the comparison is stale: waiting for manual approval",
                            then.as_deref().unwrap_or("none"),
                            r.production.as_deref().unwrap_or("none")
                        ),
                    ),
                    _ => (rule_verdict, rule_reason.clone()),
                };
                // A version with a champion to replace reaches traffic as the spec's rollout
                // says; the first version of a model has nothing to be compared with live.
                let role = match (verdict, rollout.mode, &r.production) {
                    (Verdict::Promote, RolloutMode::Shadow, Some(_)) => Some(Role::Shadow),
                    (Verdict::Promote, RolloutMode::Canary, Some(_)) => Some(Role::Canary),
                    _ => None,
                };
                match (verdict, role) {
                    (Verdict::Promote, Some(role)) => {
                        let weight = match role {
                            Role::Shadow => rollout.shadow_share,
                            Role::Canary => rollout.first_step(),
                        };
                        r.start_rollout(
                            role,
                            &version,
                            weight,
                            true,
                            "deploy",
                            &format!(
                                "{reason}; enters as the {role} on {weight} of the traffic until the monitor decides from live evidence"
                            ),
                        )?;
                    }
                    (Verdict::Promote, None) => r.promote(&version, "deploy", &reason)?,
                    (Verdict::Pending, _) => r.mark_pending(&version, "deploy", &reason)?,
                    (_, _) => r.reject(&version, "deploy", &reason)?,
                }
                Ok(true)
            })
            .await
            .map_err(StageError::from)?;
        // The rule's recorded decision (not a later manual change). Announced on every
        // delivery, so an announcement lost after the swap is made on the redelivery;
        // `event_id` lets readers drop the repeats.
        let last = after
            .history
            .iter()
            .rposition(|h| h.version == version && h.actor == "deploy");
        if changed {
            self.announce_since(&after, start).await?;
        } else if let Some(i) = last {
            self.announce_since(&after, i).await?;
        }
        let last = last.map(|i| &after.history[i]);
        let verdict = match last.map(|h| h.action) {
            Some(Action::Promote) => Verdict::Promote,
            Some(Action::Pending) => Verdict::Pending,
            Some(Action::Shadow) => Verdict::Shadow,
            Some(Action::Canary) => Verdict::Canary,
            _ => Verdict::Reject,
        };
        let reason = last.map(|h| h.reason.clone()).unwrap_or_default();
        info!(%model, %version, ?verdict, %reason, changed, "deploy decision");
        Ok(Decision {
            model,
            version,
            verdict,
            reason,
            production: after.production.clone(),
            changed,
        })
    }

    /// Changes production by hand: `promote`, `approve`, `reject` or `rollback` (to the
    /// previous version, or `version`), recorded with `actor` and `reason`, and announced.
    pub async fn manual(
        &self,
        action: Action,
        model: &str,
        version: Option<&str>,
        actor: &str,
        reason: &str,
    ) -> Result<Registry, StageError> {
        let need = |v: Option<&str>| {
            v.map(str::to_string)
                .ok_or_else(|| StageError::permanent("a version is required"))
        };
        self.change(model, |r| {
                match action {
                    Action::Promote => r.promote(
                        &need(version).map_err(|e| RegistryError::Invalid(e.to_string()))?,
                        actor,
                        reason,
                    )?,
                    Action::Pending => r.approve(
                        &need(version).map_err(|e| RegistryError::Invalid(e.to_string()))?,
                        actor,
                    )?,
                    Action::Reject => r.reject(
                        &need(version).map_err(|e| RegistryError::Invalid(e.to_string()))?,
                        actor,
                        reason,
                    )?,
                    Action::Rollback => {
                        r.rollback(version, actor, reason)?;
                    }
                    Action::Register
                    | Action::Shadow
                    | Action::Canary
                    | Action::Retire => {
                        return Err(RegistryError::Invalid(format!(
                            "{action:?} is not a manual production change (register happens on evaluation; use rollout and end_rollout for roles)"
                        ).to_lowercase()));
                    }
                }
                Ok(())
            })
            .await
    }

    /// One change of an existing model's registry by compare-and-swap, announced.
    async fn change<T>(
        &self,
        model: &str,
        mut edit: impl FnMut(&mut Registry) -> Result<T, RegistryError>,
    ) -> Result<Registry, StageError> {
        let registry = RegistryStore::new(self.store.clone());
        registry.get(model).await.map_err(StageError::from)?;
        let mut start = 0;
        let (after, _) = registry
            .update(model, |r| {
                start = r.history.len();
                edit(r)
            })
            .await
            .map_err(StageError::from)?;
        self.announce_since(&after, start).await?;
        Ok(after)
    }

    /// Puts `version` in `role` on `weight` of the traffic by hand. Refused (nothing
    /// changed) when another version holds the role, or the version is unknown, rejected
    /// or in production.
    pub async fn rollout(
        &self,
        model: &str,
        role: Role,
        version: &str,
        weight: f64,
        actor: &str,
        reason: &str,
    ) -> Result<Registry, StageError> {
        self.change(model, |r| {
                if r.production.is_none() {
                    return Err(RegistryError::Invalid(format!(
                        "model {model} has no production version to compare a {role} with; promote one first"
                    )));
                }
                match (role, r.canary.as_ref()) {
                    // The canary's own version: a new weight is a step.
                    (Role::Canary, Some(c)) if c.version == version => {
                        r.step_canary(weight, actor, reason)
                    }
                    _ => r.start_rollout(role, version, weight, false, actor, reason),
                }
            })
            .await
    }

    /// Ends the rollout in `role` (or every rollout): the versions are retired, production
    /// serves alone.
    pub async fn end_rollout(
        &self,
        model: &str,
        role: Option<Role>,
        actor: &str,
        reason: &str,
    ) -> Result<Registry, StageError> {
        self.change(model, |r| r.end_rollout(role, actor, reason))
            .await
    }
}

/// The direct form of a registry change: `rollback`, `shadow`, `canary` or `end_rollout`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DirectChange {
    action: String,
    model: String,
    /// Rollback's target.
    #[serde(default)]
    to: Option<String>,
    /// The version put in a role.
    #[serde(default)]
    version: Option<String>,
    /// A shadow's share or a canary's weight.
    #[serde(default)]
    weight: Option<f64>,
    /// The role `end_rollout` ends (default: every one).
    #[serde(default)]
    role: Option<Role>,
    #[serde(default)]
    reason: Option<String>,
    /// Who asked (default `invoke`).
    #[serde(default)]
    actor: Option<String>,
}

#[async_trait]
impl Handler for Deploy {
    type Request = DeployRequest;
    /// `{"model_name", "model_version"}` to decide.
    type Direct = DeployRequest;
    type Outcome = Decision;

    async fn handle_request(
        &self,
        _envelope: &Envelope,
        request: DeployRequest,
    ) -> Result<Decision, StageError> {
        self.deploy(&request).await
    }

    fn run_records(&self) -> Option<&dyn ObjectStore> {
        Some(self.store.as_ref())
    }

    /// `{"action": "rollback" | "shadow" | "canary" | "end_rollout", "model", …}` changes
    /// the registry by hand (see [`direct_change`]).
    async fn direct_action(
        &self,
        payload: &serde_json::Value,
    ) -> Option<Result<serde_json::Value, StageError>> {
        direct_change(self, payload).await
    }
}

impl Wire for Deploy {
    const FUNCTION: Function = Function::Deploy;
    /// Announces every registry change on the deployments queue.
    fn wire(wired: &Wired) -> Result<Self, NoQueue> {
        wired.next()?;
        Ok(Deploy::with_announcer(
            wired.store.clone(),
            wired.announcer(),
        ))
    }
}

/// The actions [`direct_change`] takes.
pub const DIRECT_ACTIONS: [&str; 4] = ["rollback", "shadow", "canary", "end_rollout"];

/// Handles a direct registry change: `{"action": "rollback", "model", "to"?}`,
/// `{"action": "shadow", "model", "version", "weight"?}` (weight: the share of requests it
/// scores, default 1), `{"action": "canary", "model", "version", "weight"}` (a new weight
/// for the canary's own version is a step), `{"action": "end_rollout", "model", "role"?}`;
/// each with `"reason"?` and `"actor"?`. `None` when the payload is none of these.
pub async fn direct_change(
    deploy: &Deploy,
    payload: &serde_json::Value,
) -> Option<Result<serde_json::Value, StageError>> {
    let action = payload.get("action").and_then(|a| a.as_str())?;
    if !DIRECT_ACTIONS.contains(&action) {
        return None;
    }
    let request: DirectChange = match serde_json::from_value(payload.clone()) {
        Ok(r) => r,
        Err(e) => {
            return Some(Err(StageError::permanent(format!(
                "invalid {action} request: {e}"
            ))));
        }
    };
    Some(apply_direct(deploy, request).await)
}

async fn apply_direct(
    deploy: &Deploy,
    request: DirectChange,
) -> Result<serde_json::Value, StageError> {
    let actor = request.actor.clone().unwrap_or_else(|| "invoke".into());
    let reason = request
        .reason
        .clone()
        .unwrap_or_else(|| format!("{} requested", request.action));
    let model = request.model.as_str();
    let version = || {
        request
            .version
            .clone()
            .ok_or_else(|| StageError::permanent(format!("{} needs a \"version\"", request.action)))
    };
    let after = match request.action.as_str() {
        "rollback" => {
            deploy
                .manual(
                    Action::Rollback,
                    model,
                    request.to.as_deref(),
                    &actor,
                    &reason,
                )
                .await?
        }
        "shadow" => {
            let weight = request.weight.unwrap_or(1.0);
            deploy
                .rollout(model, Role::Shadow, &version()?, weight, &actor, &reason)
                .await?
        }
        "canary" => {
            let weight = request.weight.ok_or_else(|| {
                StageError::permanent("canary needs a \"weight\" in (0, 1), e.g. 0.1")
            })?;
            deploy
                .rollout(model, Role::Canary, &version()?, weight, &actor, &reason)
                .await?
        }
        _ => {
            deploy
                .end_rollout(model, request.role, &actor, &reason)
                .await?
        }
    };
    Ok(serde_json::json!({
        "model": after.model,
        "production": after.production,
        "shadow": after.shadow,
        "canary": after.canary,
    }))
}
