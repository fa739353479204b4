//! Registry events: every change of a model's registry (registered, approved, rejected,
//! promoted, shadowed, canary step, rolled back, retired), published to every
//! [`EventSink`] of an [`Announcer`]: the deployments queue ([`QueueSink`]) — which
//! `lambdaml local` and `lambdaml models watch` read — and, when a bus is configured
//! (`LAMBDAML_EVENT_BUS`), Amazon EventBridge ([`EventBridgeBus`]: `source = "lambdaml"`,
//! `detail-type = "lambdaml registry change"`, the event as `detail`; the `eventbridge`
//! feature). The sinks' one contract suite is `shared/tests/contracts/events.rs`.
//!
//! An event is derived from the registry's history, so it says exactly what the
//! compare-and-swap recorded: the action, the version, the role it left and the role it
//! took, the production version before, who, why, with which metrics, when. Its
//! `event_id` is the same on every announcement of one change (a redelivered message
//! announces again), so readers drop what they have seen.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::queue::{Queue, QueueError};
use crate::registry::{Action, HistoryEntry, Registry};

/// EventBridge's `source` of every lambdaml event.
pub const EVENT_SOURCE: &str = "lambdaml";
/// EventBridge's `detail-type` of a registry change.
pub const DETAIL_TYPE: &str = "lambdaml registry change";

/// One registry change, as announced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegistryEvent {
    /// The same on every announcement of one change: `model/version/action/at`.
    pub event_id: String,
    /// `registered`, `promoted`, `rejected`, `pending`, `rolled_back`, `shadowed`,
    /// `canary_step` or `retired`.
    pub event: String,
    /// The history action (`register`, `promote`, `reject`, `pending`, `rollback`,
    /// `shadow`, `canary`, `retire`).
    pub action: String,
    /// The model.
    pub model: String,
    /// The version concerned.
    pub version: String,
    /// The role or status the version had before (`candidate`, `shadow`, …), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_role: Option<String>,
    /// The role or status it has now.
    pub to_role: String,
    /// The production version before, when the change is about production.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<String>,
    /// Who or what decided (`deploy`, `monitor`, `cli:alice`).
    pub actor: String,
    /// Why.
    pub reason: String,
    /// The metrics the decision looked at (a canary's `weight` among them).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metrics: BTreeMap<String, f64>,
    /// RFC 3339 time of the change.
    pub at: String,
}

/// The role a history action leaves its version in.
fn role_after(entry: &HistoryEntry) -> &'static str {
    match entry.action {
        Action::Register => "candidate",
        Action::Promote | Action::Rollback => "production",
        Action::Reject => "rejected",
        Action::Pending => "pending_approval",
        Action::Shadow => "shadow",
        Action::Canary => "canary",
        Action::Retire => "archived",
    }
}

impl RegistryEvent {
    /// The event of `registry.history[index]`.
    pub fn of(registry: &Registry, index: usize) -> Option<RegistryEvent> {
        let entry = registry.history.get(index)?;
        let action = serde_json::to_value(entry.action)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        let from_role = registry.history[..index]
            .iter()
            .rev()
            .find(|h| h.version == entry.version)
            .map(|h| role_after(h).to_string());
        Some(RegistryEvent {
            event_id: format!(
                "{}/{}/{}/{}/{index}",
                registry.model, entry.version, action, entry.at
            ),
            event: entry.action.event().to_string(),
            action,
            model: registry.model.clone(),
            version: entry.version.clone(),
            from_role,
            to_role: role_after(entry).to_string(),
            previous: entry.previous.clone(),
            actor: entry.actor.clone(),
            reason: entry.reason.clone(),
            metrics: entry.metrics.clone(),
            at: entry.at.clone(),
        })
    }

    /// The events of every history entry from `from` on (the changes one swap made).
    pub fn since(registry: &Registry, from: usize) -> Vec<RegistryEvent> {
        (from..registry.history.len())
            .filter_map(|i| Self::of(registry, i))
            .collect()
    }
}

/// Where events go besides the deployments queue.
#[async_trait]
pub trait EventSink: Send + Sync + std::fmt::Debug {
    /// Publishes `events` (in order).
    async fn publish(&self, events: &[RegistryEvent]) -> Result<(), QueueError>;
}

/// A queue as an event sink: one message per event, the event as its body (the deployments
/// queue; `lambdaml models watch` reads it).
#[derive(Debug, Clone)]
pub struct QueueSink {
    queue: Arc<dyn Queue>,
}

impl QueueSink {
    /// Events as messages of `queue`.
    pub fn new(queue: Arc<dyn Queue>) -> Self {
        QueueSink { queue }
    }
}

#[async_trait]
impl EventSink for QueueSink {
    async fn publish(&self, events: &[RegistryEvent]) -> Result<(), QueueError> {
        for e in events {
            let body = serde_json::to_string(e).map_err(|err| QueueError::Corrupt {
                path: self.queue.name().to_string(),
                reason: err.to_string(),
            })?;
            self.queue.send(&body).await?;
        }
        Ok(())
    }
}

/// Announces registry events to every sink it holds: the deployments queue, and a bus.
#[derive(Debug, Clone, Default)]
pub struct Announcer {
    sinks: Vec<Arc<dyn EventSink>>,
}

impl Announcer {
    /// Announces to `queue` and `bus` (either may be absent).
    pub fn new(queue: Option<Arc<dyn Queue>>, bus: Option<Arc<dyn EventSink>>) -> Self {
        let queue = queue.map(|q| Arc::new(QueueSink::new(q)) as Arc<dyn EventSink>);
        Announcer {
            sinks: queue.into_iter().chain(bus).collect(),
        }
    }

    /// This announcer with `bus` as well.
    pub fn with_bus(mut self, bus: Option<Arc<dyn EventSink>>) -> Self {
        self.sinks.extend(bus);
        self
    }

    /// Whether it announces anywhere.
    pub fn is_empty(&self) -> bool {
        self.sinks.is_empty()
    }

    /// Announces `events` to every sink, in order.
    pub async fn announce(&self, events: &[RegistryEvent]) -> Result<(), QueueError> {
        if events.is_empty() {
            return Ok(());
        }
        for sink in &self.sinks {
            sink.publish(events).await?;
        }
        Ok(())
    }

    /// Announces the changes `registry.history[from..]`.
    pub async fn announce_since(&self, registry: &Registry, from: usize) -> Result<(), QueueError> {
        self.announce(&RegistryEvent::since(registry, from)).await
    }
}

/// The bus named by `LAMBDAML_EVENT_BUS`, when it is set (and the `eventbridge` feature is
/// built); `Ok(None)` otherwise.
pub async fn bus_from_env() -> Result<Option<Arc<dyn EventSink>>, QueueError> {
    let Some(name) = std::env::var("LAMBDAML_EVENT_BUS")
        .ok()
        .filter(|n| !n.trim().is_empty())
    else {
        return Ok(None);
    };
    #[cfg(feature = "eventbridge")]
    {
        let config = crate::ports::aws::sdk_config().await;
        Ok(Some(Arc::new(EventBridgeBus::new(
            aws_sdk_eventbridge::Client::new(&config),
            name,
        ))))
    }
    #[cfg(not(feature = "eventbridge"))]
    {
        Err(QueueError::InvalidUrl {
            url: name,
            reason: "LAMBDAML_EVENT_BUS is set but this binary was built without the eventbridge feature".into(),
        })
    }
}

/// Amazon EventBridge (`PutEvents`), or an emulator at `AWS_ENDPOINT_URL`.
#[cfg(feature = "eventbridge")]
#[derive(Debug, Clone)]
pub struct EventBridgeBus {
    client: aws_sdk_eventbridge::Client,
    bus: String,
}

#[cfg(feature = "eventbridge")]
impl EventBridgeBus {
    /// Publishes to the bus named (or ARN) `bus` with `client`.
    pub fn new(client: aws_sdk_eventbridge::Client, bus: impl Into<String>) -> Self {
        EventBridgeBus {
            client,
            bus: bus.into(),
        }
    }
}

#[cfg(feature = "eventbridge")]
#[async_trait]
impl EventSink for EventBridgeBus {
    async fn publish(&self, events: &[RegistryEvent]) -> Result<(), QueueError> {
        use aws_sdk_eventbridge::types::PutEventsRequestEntry;
        // PutEvents takes at most 10 entries per call.
        for chunk in events.chunks(10) {
            let mut call = self.client.put_events();
            for e in chunk {
                let detail = serde_json::to_string(e).map_err(|err| QueueError::Corrupt {
                    path: self.bus.clone(),
                    reason: err.to_string(),
                })?;
                call = call.entries(
                    PutEventsRequestEntry::builder()
                        .event_bus_name(&self.bus)
                        .source(EVENT_SOURCE)
                        .detail_type(DETAIL_TYPE)
                        .resources(format!("lambdaml:model/{}", e.model))
                        .detail(detail)
                        .build(),
                );
            }
            let out = call.send().await.map_err(|err| {
                let failure = crate::ports::aws::failure(err);
                QueueError::Backend {
                    queue: self.bus.clone(),
                    kind: failure.kind,
                    message: failure.summary,
                    source: failure.cause,
                }
            })?;
            if out.failed_entry_count() > 0 {
                let why: Vec<String> = out
                    .entries()
                    .iter()
                    .filter_map(|r| {
                        r.error_code()
                            .map(|c| format!("{c}: {}", r.error_message().unwrap_or_default()))
                    })
                    .collect();
                return Err(QueueError::unavailable(
                    self.bus.clone(),
                    format!(
                        "EventBridge refused {} of {} events: {}",
                        out.failed_entry_count(),
                        chunk.len(),
                        why.join("; ")
                    ),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::Role;

    fn entry(v: &str) -> crate::registry::VersionEntry {
        crate::registry::tests::entry(v, 0.9)
    }

    #[test]
    fn events_carry_the_roles_a_version_left_and_took() {
        let mut r = Registry::new("m");
        r.register(entry("a"), "train");
        r.promote("a", "deploy", "first").unwrap();
        r.register(entry("b"), "train");
        let before = r.history.len();
        r.start_rollout(Role::Shadow, "b", 1.0, false, "cli:ann", "try it")
            .unwrap();
        r.promote("b", "monitor", "better live").unwrap();
        let events = RegistryEvent::since(&r, before);
        assert_eq!(events.len(), 2);
        assert_eq!(events[0].event, "shadowed");
        assert_eq!(events[0].from_role.as_deref(), Some("candidate"));
        assert_eq!(events[0].to_role, "shadow");
        assert_eq!(events[0].actor, "cli:ann");
        assert_eq!(events[0].metrics["weight"], 1.0);
        assert_eq!(events[1].event, "promoted");
        assert_eq!(events[1].from_role.as_deref(), Some("shadow"));
        assert_eq!(events[1].previous.as_deref(), Some("a"));
        assert_ne!(events[0].event_id, events[1].event_id);
        let all = RegistryEvent::since(&r, 0);
        assert_eq!(all[0].event, "registered");
        assert_eq!(all[0].from_role, None);
        assert_eq!(
            RegistryEvent::of(&r, before + 1).unwrap().event_id,
            events[1].event_id,
            "the id is a function of the change"
        );
    }
}
