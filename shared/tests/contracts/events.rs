//! The event-sink contract, run against every adapter: the deployments queue as a sink over
//! the durable local queue and over SQS, and EventBridge (a bus, a rule, a queue target) —
//! SQS and EventBridge on the emulator (moto under `make test`).

#![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use lambdaml::events::{Announcer, EventBridgeBus, EventSink, QueueSink, RegistryEvent};
use lambdaml::queue::{LocalQueue, Queue, SqsQueue};
use lambdaml::registry::{Registry, Role, VersionEntry, VersionStatus};

use crate::common;

/// A registry whose history makes five events: a version registered and promoted, a
/// second registered, shadowed and promoted from the shadow.
fn history() -> Registry {
    let entry = |v: &str| VersionEntry {
        version: v.into(),
        number: 0,
        status: VersionStatus::Candidate,
        run_id: "r".into(),
        dataset_version: "d".into(),
        manifest: String::new(),
        metrics: BTreeMap::from([("roc_auc".to_string(), 0.9)]),
        registered_at: String::new(),
    };
    let mut r = Registry::new("m");
    r.register(entry("a"), "evaluate");
    r.promote("a", "deploy", "first").unwrap();
    r.register(entry("b"), "evaluate");
    r.start_rollout(Role::Shadow, "b", 1.0, false, "deploy", "passed")
        .unwrap();
    r.promote("b", "monitor", "better live").unwrap();
    r
}

/// Every published event arrives whole (as a set: queues do not promise order), and
/// publishing the same change again carries the same event id.
async fn delivers_every_event<F, Fut>(sink: &dyn EventSink, expected: &[RegistryEvent], read: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Vec<RegistryEvent>>,
{
    sink.publish(expected).await.unwrap();
    let mut got = Vec::new();
    for _ in 0..20 {
        got.extend(read().await);
        if got.len() >= expected.len() {
            break;
        }
    }
    let ids = |v: &[RegistryEvent]| -> BTreeSet<String> {
        v.iter().map(|e| e.event_id.clone()).collect()
    };
    assert_eq!(got.len(), expected.len(), "{got:?}");
    assert_eq!(ids(&got), ids(expected));
    for e in expected {
        let same = got.iter().find(|g| g.event_id == e.event_id).unwrap();
        assert_eq!(same, e, "the event arrives whole");
    }
    let again = RegistryEvent::since(&history(), 0);
    assert_eq!(ids(&again), ids(&RegistryEvent::since(&history(), 0)));
}

/// Reads (and deletes) what `queue` holds, as events.
async fn read_queue(queue: &dyn Queue) -> Vec<RegistryEvent> {
    let mut out = Vec::new();
    for m in queue.receive(10, Duration::from_secs(30)).await.unwrap() {
        out.push(serde_json::from_str(&m.body).unwrap());
        queue.delete(&m.receipt).await.unwrap();
    }
    out
}

#[tokio::test]
async fn the_local_queue_sink_meets_the_contract() {
    let dir = tempfile::tempdir().unwrap();
    let queue: Arc<dyn Queue> = Arc::new(LocalQueue::open(dir.path().join("q"), 3).unwrap());
    let events = RegistryEvent::since(&history(), 0);
    let sink = QueueSink::new(queue.clone());
    delivers_every_event(&sink, &events, || read_queue(queue.as_ref())).await;
    // Through an announcer: every sink gets the changes of one swap, in order.
    Announcer::new(Some(queue.clone()), None)
        .announce_since(&history(), 3)
        .await
        .unwrap();
    let names: Vec<String> = read_queue(queue.as_ref())
        .await
        .into_iter()
        .map(|e| e.event)
        .collect();
    assert_eq!(names, ["shadowed", "promoted"]);
}

async fn sqs_queue(client: &aws_sdk_sqs::Client) -> (String, String) {
    let url = client
        .create_queue()
        .queue_name(common::unique("events"))
        .send()
        .await
        .unwrap()
        .queue_url()
        .unwrap()
        .to_string();
    let arn = common::queue_arn(client, &url).await;
    (url, arn)
}

#[tokio::test]
async fn the_sqs_queue_sink_meets_the_contract_on_the_emulator() {
    if common::emulator("the_sqs_queue_sink_meets_the_contract_on_the_emulator").is_none() {
        return;
    }
    let config = lambdaml::store::sdk_config().await;
    let client = aws_sdk_sqs::Client::new(&config);
    let (url, _) = sqs_queue(&client).await;
    let queue: Arc<dyn Queue> = Arc::new(SqsQueue::new(client, &url));
    let sink = QueueSink::new(queue.clone());
    let events = RegistryEvent::since(&history(), 0);
    delivers_every_event(&sink, &events, || read_queue(queue.as_ref())).await;
}

#[tokio::test]
async fn eventbridge_meets_the_contract_on_the_emulator() {
    if common::emulator("eventbridge_meets_the_contract_on_the_emulator").is_none() {
        return;
    }
    use aws_sdk_eventbridge::types::Target;
    let config = lambdaml::store::sdk_config().await;
    let events = aws_sdk_eventbridge::Client::new(&config);
    let sqs = aws_sdk_sqs::Client::new(&config);
    let bus = common::unique("registry");
    events.create_event_bus().name(&bus).send().await.unwrap();
    // The template's sample rule: rollout decisions only, to a queue.
    let (url, arn) = sqs_queue(&sqs).await;
    let rule = common::unique("rollout");
    events
        .put_rule()
        .name(&rule)
        .event_bus_name(&bus)
        .event_pattern(
            serde_json::json!({"source": ["lambdaml"], "detail-type": ["lambdaml registry change"],
                   "detail": {"event": ["shadowed", "canary_step", "promoted", "retired", "rolled_back"]}})
            .to_string(),
        )
        .send()
        .await
        .unwrap();
    events
        .put_targets()
        .rule(&rule)
        .event_bus_name(&bus)
        .targets(Target::builder().id("q").arn(arn).build().unwrap())
        .send()
        .await
        .unwrap();
    let queue = SqsQueue::new(sqs, &url);
    let read = || async {
        let mut out = Vec::new();
        for m in queue.receive(10, Duration::from_secs(30)).await.unwrap() {
            let envelope: serde_json::Value = serde_json::from_str(&m.body).unwrap();
            assert_eq!(envelope["source"], "lambdaml");
            assert_eq!(envelope["detail-type"], "lambdaml registry change");
            out.push(serde_json::from_value(envelope["detail"].clone()).unwrap());
            queue.delete(&m.receipt).await.unwrap();
        }
        out
    };
    // The rule lets the rollout decisions through, not the registrations.
    let all = RegistryEvent::since(&history(), 0);
    let decisions: Vec<RegistryEvent> = all
        .iter()
        .filter(|e| e.event != "registered")
        .cloned()
        .collect();
    assert_eq!(decisions.len(), 3);
    let sink = EventBridgeBus::new(events.clone(), bus.clone());
    sink.publish(&all).await.unwrap();
    let mut got: Vec<RegistryEvent> = Vec::new();
    for _ in 0..20 {
        got.extend(read().await);
        if got.len() >= decisions.len() {
            break;
        }
    }
    let mut names: Vec<&str> = got.iter().map(|e| e.event.as_str()).collect();
    names.sort_unstable();
    assert_eq!(names, ["promoted", "promoted", "shadowed"], "{got:?}");
    let from_shadow = got
        .iter()
        .find(|e| e.from_role.as_deref() == Some("shadow"))
        .expect("the promotion from the shadow");
    assert_eq!(from_shadow.actor, "monitor");
    assert_eq!(from_shadow.previous.as_deref(), Some("a"));
    // The whole contract on exactly the events the rule passes.
    delivers_every_event(&sink, &decisions, read).await;
    // A bus that does not exist: a clear error, not a silent loss.
    let missing = EventBridgeBus::new(events, common::unique("nope"));
    assert!(missing.publish(&all).await.is_err());
}
