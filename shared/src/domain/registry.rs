//! The model registry: one document per model, changed only by compare-and-swap.
//!
//! `registry/<model>.json` lists every version with its status (candidate, pending
//! approval, production, rejected, archived), the production pointer, and the full history
//! of decisions — who or what, when, why, with which metrics. It is the one mutable object
//! in the store: every change reads the document with its etag, applies a pure edit, and
//! writes it back with `put_if_match` (`put_if_absent` for the first), retrying on conflict,
//! so concurrent deployers never lose each other's changes. A document that does not parse
//! is reported and never overwritten.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::store::{ObjectStore, StoreError, to_json_bytes};

/// Registry failures.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RegistryError {
    /// The document exists but is not a registry; it is left as it is.
    #[error("registry document {key} is corrupt and was not modified: {reason}")]
    Corrupt {
        /// The document's key.
        key: String,
        /// The parse error.
        reason: String,
    },
    /// No such model.
    #[error("model {0:?} has no registry entry")]
    UnknownModel(String),
    /// No such version.
    #[error("model {model:?} has no version {version:?}")]
    UnknownVersion {
        /// The model.
        model: String,
        /// The version asked for.
        version: String,
    },
    /// The change does not apply in the current state.
    #[error("{0}")]
    Invalid(String),
    /// Too many concurrent writers.
    #[error("registry {0}: gave up after repeated concurrent updates")]
    Contention(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl crate::error::Classify for RegistryError {
    /// The store's failures as the store classifies them, and contention (another writer
    /// kept winning) is worth a retry; everything else is about the request itself.
    fn retry(&self) -> crate::error::Retry {
        match self {
            RegistryError::Store(e) => crate::error::Classify::retry(e),
            RegistryError::Contention(_) => crate::error::Retry::Retryable,
            _ => crate::error::Retry::Permanent,
        }
    }
}

/// A version's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VersionStatus {
    /// Trained and evaluated, no decision yet.
    Candidate,
    /// Passed the rule; waits for a person.
    PendingApproval,
    /// Serving.
    Production,
    /// Refused by the rule or a person.
    Rejected,
    /// Served before; replaced.
    Archived,
    /// Scores a copy of live traffic; its answers are never returned.
    Shadow,
    /// Answers a share of live traffic.
    Canary,
}

/// One version in the registry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VersionEntry {
    /// The version id (a content-derived hash).
    pub version: String,
    /// Registration order, from 1.
    pub number: u32,
    /// Current status.
    pub status: VersionStatus,
    /// The run it was trained on.
    pub run_id: String,
    /// The dataset version of that run.
    pub dataset_version: String,
    /// The model manifest's key.
    pub manifest: String,
    /// Holdout metrics (named scalars).
    pub metrics: BTreeMap<String, f64>,
    /// RFC 3339 registration time.
    pub registered_at: String,
}

/// What a history entry records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// A new version was registered.
    Register,
    /// A version went to production.
    Promote,
    /// A version was refused.
    Reject,
    /// A version waits for approval.
    Pending,
    /// Production went back to an earlier version.
    Rollback,
    /// A version became the shadow.
    Shadow,
    /// A version became the canary, or the canary's weight changed (a step).
    Canary,
    /// A shadow or canary version was taken off traffic without being promoted.
    Retire,
}

impl Action {
    /// The event name of this action (`registered`, `promoted`, `shadowed`, …).
    pub fn event(self) -> &'static str {
        match self {
            Action::Register => "registered",
            Action::Promote => "promoted",
            Action::Reject => "rejected",
            Action::Pending => "pending",
            Action::Rollback => "rolled_back",
            Action::Shadow => "shadowed",
            Action::Canary => "canary_step",
            Action::Retire => "retired",
        }
    }
}

/// The two rollout roles beside production.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Scores a copy of the traffic; never answers.
    Shadow,
    /// Answers a share of the traffic.
    Canary,
}

impl Role {
    /// `shadow` or `canary`.
    pub fn name(self) -> &'static str {
        match self {
            Role::Shadow => "shadow",
            Role::Canary => "canary",
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A version in a rollout role: which, on what share of the traffic, since when.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RolloutSlot {
    /// The version.
    pub version: String,
    /// The share of requests it scores (shadow) or answers (canary), in (0, 1].
    pub weight: f64,
    /// RFC 3339 time it took the role.
    pub since: String,
}

/// One decision in the history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryEntry {
    /// RFC 3339 time.
    pub at: String,
    /// What happened.
    pub action: Action,
    /// The version concerned.
    pub version: String,
    /// The production version before, if the pointer moved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<String>,
    /// Who or what decided (`deploy`, `cli:alice`, `monitor`).
    pub actor: String,
    /// Why.
    pub reason: String,
    /// The metrics the decision looked at.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metrics: BTreeMap<String, f64>,
}

/// The registry document of one model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Registry {
    /// The model.
    pub model: String,
    /// The production version.
    pub production: Option<String>,
    /// Every version by id.
    pub versions: BTreeMap<String, VersionEntry>,
    /// Every decision, oldest first.
    pub history: Vec<HistoryEntry>,
    /// The shadow version: scores a copy of the traffic, never answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shadow: Option<RolloutSlot>,
    /// The canary version: answers its weight's share of the traffic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<RolloutSlot>,
}

impl Registry {
    /// An empty registry.
    pub fn new(model: &str) -> Self {
        Registry {
            model: model.to_string(),
            production: None,
            versions: BTreeMap::new(),
            history: Vec::new(),
            shadow: None,
            canary: None,
        }
    }

    /// The version in `role`, if any.
    pub fn slot(&self, role: Role) -> Option<&RolloutSlot> {
        match role {
            Role::Shadow => self.shadow.as_ref(),
            Role::Canary => self.canary.as_ref(),
        }
    }

    fn slot_mut(&mut self, role: Role) -> &mut Option<RolloutSlot> {
        match role {
            Role::Shadow => &mut self.shadow,
            Role::Canary => &mut self.canary,
        }
    }

    /// The role `version` holds, if it holds one.
    pub fn role_of(&self, version: &str) -> Option<Role> {
        [Role::Shadow, Role::Canary]
            .into_iter()
            .find(|r| self.slot(*r).is_some_and(|s| s.version == version))
    }

    /// Puts `version` in `role` on `weight` of the traffic. The version must be registered,
    /// not rejected and not in production or the other role; a role already held by another
    /// version is refused (naming it) unless `replace`, which retires that version first.
    pub fn start_rollout(
        &mut self,
        role: Role,
        version: &str,
        weight: f64,
        replace: bool,
        actor: &str,
        reason: &str,
    ) -> Result<(), RegistryError> {
        let max = match role {
            Role::Shadow => 1.0,
            Role::Canary => 1.0 - f64::EPSILON,
        };
        if !(weight > 0.0 && weight <= max) {
            return Err(RegistryError::Invalid(match role {
                Role::Shadow => format!("a shadow's share must be in (0, 1], got {weight}"),
                Role::Canary => format!("a canary's weight must be in (0, 1), got {weight}"),
            }));
        }
        let model = self.model.clone();
        let status = self.entry(version)?.status;
        match status {
            VersionStatus::Rejected => {
                return Err(RegistryError::Invalid(format!(
                    "version {version} of {model} was rejected; it cannot take live traffic"
                )));
            }
            VersionStatus::Production => {
                return Err(RegistryError::Invalid(format!(
                    "version {version} is already in production"
                )));
            }
            _ => {}
        }
        if let Some(held) = self.role_of(version) {
            if held == role {
                return Err(RegistryError::Invalid(format!(
                    "version {version} is already the {role}"
                )));
            }
            return Err(RegistryError::Invalid(format!(
                "version {version} is the {held}; end that rollout first"
            )));
        }
        if let Some(current) = self.slot(role).cloned() {
            if !replace {
                return Err(RegistryError::Invalid(format!(
                    "model {model} already has {role} version {} (on {} of the traffic since {}); end the rollout first (`lambdaml models end-rollout {model}`)",
                    current.version, current.weight, current.since
                )));
            }
            self.retire(role, actor, &format!("replaced by {version}"))?;
        }
        self.entry(version)?.status = match role {
            Role::Shadow => VersionStatus::Shadow,
            Role::Canary => VersionStatus::Canary,
        };
        *self.slot_mut(role) = Some(RolloutSlot {
            version: version.to_string(),
            weight,
            since: crate::now_rfc3339(),
        });
        let metrics = self.entry(version)?.metrics.clone();
        let action = match role {
            Role::Shadow => Action::Shadow,
            Role::Canary => Action::Canary,
        };
        let mut metrics = metrics;
        metrics.insert("weight".into(), weight);
        let previous = self.production.clone();
        self.record(action, version, previous, actor, reason, metrics);
        Ok(())
    }

    /// Moves the canary to `weight` (a step of its rollout).
    pub fn step_canary(
        &mut self,
        weight: f64,
        actor: &str,
        reason: &str,
    ) -> Result<(), RegistryError> {
        let model = self.model.clone();
        let Some(slot) = self.canary.as_mut() else {
            return Err(RegistryError::Invalid(format!(
                "model {model} has no canary version"
            )));
        };
        if !(weight > 0.0 && weight < 1.0) {
            return Err(RegistryError::Invalid(format!(
                "a canary's weight must be in (0, 1), got {weight}; promote it to give it all the traffic"
            )));
        }
        slot.weight = weight;
        let version = slot.version.clone();
        let mut metrics = BTreeMap::new();
        metrics.insert("weight".into(), weight);
        let previous = self.production.clone();
        self.record(Action::Canary, &version, previous, actor, reason, metrics);
        Ok(())
    }

    /// Takes the version in `role` off traffic (archived, not promoted).
    pub fn retire(
        &mut self,
        role: Role,
        actor: &str,
        reason: &str,
    ) -> Result<String, RegistryError> {
        let model = self.model.clone();
        let Some(slot) = self.slot_mut(role).take() else {
            return Err(RegistryError::Invalid(format!(
                "model {model} has no {role} version"
            )));
        };
        self.entry(&slot.version)?.status = VersionStatus::Archived;
        let metrics = self.entry(&slot.version)?.metrics.clone();
        self.record(Action::Retire, &slot.version, None, actor, reason, metrics);
        Ok(slot.version)
    }

    /// Ends every rollout of the model (`role` None) or one; returns the versions retired.
    pub fn end_rollout(
        &mut self,
        role: Option<Role>,
        actor: &str,
        reason: &str,
    ) -> Result<Vec<String>, RegistryError> {
        let roles: Vec<Role> = match role {
            Some(r) => vec![r],
            None => [Role::Shadow, Role::Canary]
                .into_iter()
                .filter(|r| self.slot(*r).is_some())
                .collect(),
        };
        if roles.is_empty() {
            return Err(RegistryError::Invalid(format!(
                "model {} has no rollout in progress (no shadow or canary version)",
                self.model
            )));
        }
        roles
            .into_iter()
            .map(|r| self.retire(r, actor, reason))
            .collect()
    }

    /// The production version's entry.
    pub fn production_entry(&self) -> Option<&VersionEntry> {
        self.production.as_ref().and_then(|v| self.versions.get(v))
    }

    fn entry(&mut self, version: &str) -> Result<&mut VersionEntry, RegistryError> {
        let model = self.model.clone();
        self.versions
            .get_mut(version)
            .ok_or_else(|| RegistryError::UnknownVersion {
                model,
                version: version.to_string(),
            })
    }

    fn record(
        &mut self,
        action: Action,
        version: &str,
        previous: Option<String>,
        actor: &str,
        reason: &str,
        metrics: BTreeMap<String, f64>,
    ) {
        self.history.push(HistoryEntry {
            at: crate::now_rfc3339(),
            action,
            version: version.to_string(),
            previous,
            actor: actor.to_string(),
            reason: reason.to_string(),
            metrics,
        });
    }

    /// Registers a version as a candidate; registering it again changes nothing.
    pub fn register(&mut self, mut entry: VersionEntry, actor: &str) -> bool {
        if self.versions.contains_key(&entry.version) {
            return false;
        }
        entry.number = self.versions.len() as u32 + 1;
        entry.status = VersionStatus::Candidate;
        let (version, metrics) = (entry.version.clone(), entry.metrics.clone());
        self.versions.insert(version.clone(), entry);
        self.record(
            Action::Register,
            &version,
            None,
            actor,
            "trained and evaluated",
            metrics,
        );
        true
    }

    /// Puts `version` in production; the previous production version is archived.
    pub fn promote(
        &mut self,
        version: &str,
        actor: &str,
        reason: &str,
    ) -> Result<(), RegistryError> {
        let metrics = self.entry(version)?.metrics.clone();
        let previous = self.production.clone();
        if previous.as_deref() == Some(version) {
            return Err(RegistryError::Invalid(format!(
                "version {version} is already in production"
            )));
        }
        if let Some(prev) = &previous {
            self.entry(prev)?.status = VersionStatus::Archived;
        }
        // A shadow or canary promoted leaves its role.
        if let Some(role) = self.role_of(version) {
            *self.slot_mut(role) = None;
        }
        self.entry(version)?.status = VersionStatus::Production;
        self.production = Some(version.to_string());
        self.record(Action::Promote, version, previous, actor, reason, metrics);
        Ok(())
    }

    /// Refuses a version.
    pub fn reject(
        &mut self,
        version: &str,
        actor: &str,
        reason: &str,
    ) -> Result<(), RegistryError> {
        if self.entry(version)?.status == VersionStatus::Production {
            return Err(RegistryError::Invalid(format!(
                "version {version} is in production; roll back first"
            )));
        }
        // A shadow or canary rejected leaves its role.
        if let Some(role) = self.role_of(version) {
            *self.slot_mut(role) = None;
        }
        let entry = self.entry(version)?;
        entry.status = VersionStatus::Rejected;
        let metrics = entry.metrics.clone();
        self.record(Action::Reject, version, None, actor, reason, metrics);
        Ok(())
    }

    /// Leaves a version for a person to approve.
    pub fn mark_pending(
        &mut self,
        version: &str,
        actor: &str,
        reason: &str,
    ) -> Result<(), RegistryError> {
        let entry = self.entry(version)?;
        entry.status = VersionStatus::PendingApproval;
        let metrics = entry.metrics.clone();
        self.record(Action::Pending, version, None, actor, reason, metrics);
        Ok(())
    }

    /// Approves a pending version: it goes to production.
    pub fn approve(&mut self, version: &str, actor: &str) -> Result<(), RegistryError> {
        let status = self.entry(version)?.status;
        if status != VersionStatus::PendingApproval {
            return Err(RegistryError::Invalid(
                format!("version {version} is {status:?}, not pending approval").to_lowercase(),
            ));
        }
        self.promote(version, actor, "approved")
    }

    /// Returns production to `target`, or by default to the version that production
    /// replaced most recently. The current production version is archived.
    pub fn rollback(
        &mut self,
        target: Option<&str>,
        actor: &str,
        reason: &str,
    ) -> Result<String, RegistryError> {
        let current = self.production.clone().ok_or_else(|| {
            RegistryError::Invalid(format!("model {} has no production version", self.model))
        })?;
        let target = match target {
            Some(t) => t.to_string(),
            None => self
                .history
                .iter()
                .rev()
                .find(|h| {
                    matches!(h.action, Action::Promote | Action::Rollback) && h.version == current
                })
                .and_then(|h| h.previous.clone())
                .ok_or_else(|| {
                    RegistryError::Invalid(format!("version {current} replaced no earlier version"))
                })?,
        };
        if target == current {
            return Err(RegistryError::Invalid(format!(
                "version {target} is already in production"
            )));
        }
        let status = self.entry(&target)?.status;
        if status == VersionStatus::Rejected {
            return Err(RegistryError::Invalid(format!(
                "version {target} was rejected; promote it explicitly"
            )));
        }
        self.entry(&current)?.status = VersionStatus::Archived;
        if let Some(role) = self.role_of(&target) {
            *self.slot_mut(role) = None;
        }
        self.entry(&target)?.status = VersionStatus::Production;
        self.production = Some(target.clone());
        let metrics = self.entry(&target)?.metrics.clone();
        self.record(
            Action::Rollback,
            &target,
            Some(current),
            actor,
            reason,
            metrics,
        );
        Ok(target)
    }
}

/// Reads and changes registry documents in a store.
#[derive(Debug, Clone)]
pub struct RegistryStore {
    store: Arc<dyn ObjectStore>,
}

impl RegistryStore {
    /// A registry over `store`.
    pub fn new(store: Arc<dyn ObjectStore>) -> Self {
        RegistryStore { store }
    }

    /// The document and its etag, or `None` when the model has none.
    pub async fn load(&self, model: &str) -> Result<Option<(Registry, String)>, RegistryError> {
        let key = crate::layout::registry(model)?;
        match self.store.get(&key).await {
            Ok(object) => {
                let registry: Registry =
                    serde_json::from_slice(&object.bytes).map_err(|e| RegistryError::Corrupt {
                        key: key.to_string(),
                        reason: e.to_string(),
                    })?;
                Ok(Some((registry, object.etag)))
            }
            Err(StoreError::NotFound(_)) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// The names of the models that have a registry document, sorted.
    pub async fn models(&self) -> Result<Vec<String>, RegistryError> {
        let mut names: Vec<String> = self
            .store
            .list_all(crate::layout::REGISTRY)
            .await?
            .into_iter()
            .filter_map(|meta| {
                let name = crate::layout::registry_model(meta.key.as_str())?;
                (!name.contains('/')).then(|| name.to_string())
            })
            .collect();
        names.sort();
        Ok(names)
    }

    /// The document, or [`RegistryError::UnknownModel`].
    pub async fn get(&self, model: &str) -> Result<Registry, RegistryError> {
        self.load(model)
            .await?
            .map(|(r, _)| r)
            .ok_or_else(|| RegistryError::UnknownModel(model.to_string()))
    }

    /// Applies `edit` by compare-and-swap, retrying on conflict with a fresh read. `edit`
    /// may run several times; it must be a pure function of the document. An edit that
    /// fails leaves the document untouched.
    pub async fn update<T>(
        &self,
        model: &str,
        mut edit: impl FnMut(&mut Registry) -> Result<T, RegistryError>,
    ) -> Result<(Registry, T), RegistryError> {
        let key = crate::layout::registry(model)?;
        for attempt in 0..200u32 {
            let current = self.load(model).await?;
            let (mut registry, etag) = match current {
                Some((r, etag)) => (r, Some(etag)),
                None => (Registry::new(model), None),
            };
            let out = edit(&mut registry)?;
            let bytes: Bytes = to_json_bytes(&registry);
            let written = match &etag {
                Some(etag) => self.store.put_if_match(&key, bytes, etag).await,
                None => self.store.put_if_absent(&key, bytes).await,
            };
            match written {
                Ok(_) => return Ok((registry, out)),
                Err(StoreError::PreconditionFailed { .. } | StoreError::AlreadyExists(_)) => {
                    // Back off a little, more as contention persists, with jitter so
                    // writers do not collide in lockstep.
                    let jitter = u64::from(uuid::Uuid::new_v4().as_bytes()[0]) % 10;
                    tokio::time::sleep(Duration::from_millis(
                        u64::from(attempt.min(20)) * 2 + jitter,
                    ))
                    .await;
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(RegistryError::Contention(key.to_string()))
    }
}

#[cfg(test)]
pub(crate) mod tests;
