//! The deploy function: applies the spec's promotion rule, or rolls back.
//!
//! A newly evaluated version is promoted when there is no champion, or when it beats the
//! champion on the spec's metric by at least `min_improvement` on the same holdout rows and
//! no guardrail trips (no class's recall drops by more than `max_recall_drop`). With
//! `manual_approval` a passing version waits for a person instead. Every decision is one
//! compare-and-swap on the registry with its reason and metrics, and is announced on the
//! deployments queue. A version already decided is left alone, so a redelivered message
//! changes nothing. Rollback returns production to the previous (or a named) version.

use std::sync::Arc;

use async_trait::async_trait;
use lambdaml::evaluation::Evaluation;
use lambdaml::layout;
use lambdaml::message::{DeployRequest, Envelope};
use lambdaml::metrics::higher_is_better;
use lambdaml::pipeline::{Function, NoQueue, Wire, Wired};
use lambdaml::queue::Queue;
use lambdaml::registry::{
    Action, HistoryEntry, Registry, RegistryError, RegistryStore, VersionStatus,
};
use lambdaml::run::RunManifest;
use lambdaml::spec::PromotionSection;
use lambdaml::stage::{Handler, StageError};
use lambdaml::store::{JsonError, ObjectStore, ObjectStoreExt};
use serde::{Deserialize, Serialize};
use tracing::{info, instrument};

/// The deploy handler. It needs the store and the deployments queue.
#[derive(Clone)]
pub struct Deploy {
    store: Arc<dyn ObjectStore>,
    deployments: Arc<dyn Queue>,
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

/// Announced on the deployments queue after every change of production.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeploymentEvent {
    /// `promote`, `rollback`, `reject` or `pending`.
    pub action: String,
    /// The model.
    pub model: String,
    /// The version concerned.
    pub version: String,
    /// The production version before.
    pub previous: Option<String>,
    /// Who or what decided.
    pub actor: String,
    /// Why.
    pub reason: String,
    /// RFC 3339 time.
    pub at: String,
    /// The same for every delivery of one decision (`model/version/action/at`): a decision is
    /// announced again when its message is redelivered, and readers drop what they have seen.
    #[serde(default)]
    pub event_id: String,
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
    if improvement < rule.min_improvement {
        return (
            Verdict::Reject,
            format!(
                "{metric} {challenger:.4} vs champion {} {incumbent:.4} on the same {} rows: improvement {improvement:+.4} is below the required {}",
                champion.version, evaluation.holdout_rows, rule.min_improvement
            ),
        );
    }
    if let Some(max_drop) = rule.max_recall_drop {
        let before = champion.metrics.recalls();
        for (class, recall) in evaluation.metrics.recalls() {
            if let Some(old) = before.get(&class)
                && old - recall > max_drop
            {
                return (
                    Verdict::Reject,
                    format!(
                        "guardrail: recall of class {class:?} drops from {old:.4} to {recall:.4}, more than {max_drop}"
                    ),
                );
            }
        }
    }
    pass(format!(
        "{metric} {challenger:.4} beats champion {} {incumbent:.4} by {improvement:+.4}",
        champion.version
    ))
}

impl Deploy {
    /// A handler over `store`, announcing on `deployments`.
    pub fn new(store: Arc<dyn ObjectStore>, deployments: Arc<dyn Queue>) -> Self {
        Deploy { store, deployments }
    }

    /// Announces the registry's latest change.
    async fn announce(&self, registry: &Registry) -> Result<(), StageError> {
        match registry.history.last() {
            Some(last) => self.announce_entry(&registry.model, last).await,
            None => Ok(()),
        }
    }

    async fn announce_entry(&self, model: &str, entry: &HistoryEntry) -> Result<(), StageError> {
        let action = format!("{:?}", entry.action).to_lowercase();
        let event = DeploymentEvent {
            event_id: format!("{model}/{}/{action}/{}", entry.version, entry.at),
            action,
            model: model.to_string(),
            version: entry.version.clone(),
            previous: entry.previous.clone(),
            actor: entry.actor.clone(),
            reason: entry.reason.clone(),
            at: entry.at.clone(),
        };
        self.deployments
            .send(&serde_json::to_string(&event).map_err(StageError::invalid)?)
            .await?;
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

    /// The promotion rule of the spec run `run_id` trained with (a direct request carries
    /// none).
    async fn promotion(&self, run_id: &str) -> Result<PromotionSection, StageError> {
        let run = RunManifest::read(self.store.as_ref(), run_id).await?;
        Ok(run.spec(self.store.as_ref()).await?.promotion)
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
        let promotion = match &request.promotion {
            Some(p) => p.clone(),
            None => self.promotion(&evaluation.run_id).await?,
        };
        let (rule_verdict, rule_reason) = apply_rule(&promotion, &evaluation);
        let registry = RegistryStore::new(self.store.clone());
        let (after, changed) = registry
            .update(&model, |r| {
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
                match verdict {
                    Verdict::Promote => r.promote(&version, "deploy", &reason)?,
                    Verdict::Pending => r.mark_pending(&version, "deploy", &reason)?,
                    Verdict::Reject => r.reject(&version, "deploy", &reason)?,
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
            .rev()
            .find(|h| h.version == version && h.actor == "deploy");
        if let Some(entry) = last {
            self.announce_entry(&model, entry).await?;
        }
        let verdict = match last.map(|h| h.action) {
            Some(Action::Promote) => Verdict::Promote,
            Some(Action::Pending) => Verdict::Pending,
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
        let registry = RegistryStore::new(self.store.clone());
        let need = |v: Option<&str>| {
            v.map(str::to_string)
                .ok_or_else(|| StageError::permanent("a version is required"))
        };
        registry.get(model).await.map_err(StageError::from)?;
        let (after, ()) = registry
            .update(model, |r| {
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
                    Action::Register => {
                        return Err(RegistryError::Invalid(
                            "register happens on evaluation".into(),
                        ));
                    }
                }
                Ok(())
            })
            .await
            .map_err(StageError::from)?;
        self.announce(&after).await?;
        Ok(after)
    }
}

/// The direct form: a deploy request, or a rollback.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Rollback {
    action: String,
    model: String,
    #[serde(default)]
    to: Option<String>,
    #[serde(default)]
    reason: Option<String>,
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

    /// `{"action": "rollback", "model", "to"?, "reason"?}` rolls back.
    async fn direct_action(
        &self,
        payload: &serde_json::Value,
    ) -> Option<Result<serde_json::Value, StageError>> {
        direct_rollback(self, payload).await
    }
}

impl Wire for Deploy {
    const FUNCTION: Function = Function::Deploy;
    /// Announces every registry change on the deployments queue.
    fn wire(wired: &Wired) -> Result<Self, NoQueue> {
        Ok(Deploy::new(wired.store.clone(), wired.next()?))
    }
}

/// Handles a direct rollback payload `{"action": "rollback", "model", "to"?, "reason"?}`;
/// `None` when the payload is not a rollback.
pub async fn direct_rollback(
    deploy: &Deploy,
    payload: &serde_json::Value,
) -> Option<Result<serde_json::Value, StageError>> {
    if payload.get("action").and_then(|a| a.as_str()) != Some("rollback") {
        return None;
    }
    let request: Rollback = match serde_json::from_value(payload.clone()) {
        Ok(r) => r,
        Err(e) => {
            return Some(Err(StageError::permanent(format!(
                "invalid rollback request: {e}"
            ))));
        }
    };
    let _ = &request.action;
    let reason = request
        .reason
        .clone()
        .unwrap_or_else(|| "rollback requested".into());
    Some(
        deploy
            .manual(
                Action::Rollback,
                &request.model,
                request.to.as_deref(),
                "invoke",
                &reason,
            )
            .await
            .map(|r| serde_json::json!({"model": r.model, "production": r.production})),
    )
}
