//! The concept-drift trigger end to end: the labelled error stream of each monitor run fed
//! to ADWIN, its state carried in the store from run to run, a change a breach.

#![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.

use lambdaml::store::{ObjectKey, ObjectStoreExt};
use lambdaml_e2e::MIXED_SPEC;

use crate::rollout::{run_monitor, traffic_with, whole_store};
use crate::score::{fixture, state_with, test_config};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adwin_on_the_error_stream_breaches_when_the_labels_turn_and_keeps_its_state() {
    let f = fixture();
    let (dir, store) = whole_store("[monitor]\ntrigger = \"adwin\"").await;
    let state = state_with(store.clone(), test_config());
    // A first stretch the model gets mostly right: fed, no change, no breach from it.
    traffic_with(&state, 400, false).await;
    let first = run_monitor(dir.path(), &store).await.report;
    let c = first.concept_drift.clone().expect("the adwin section");
    assert_eq!(
        (c.detector.as_str(), c.fed, c.fed_total),
        ("adwin", 400, 400)
    );
    assert_eq!(c.version, f.mixed[0]);
    assert!(c.changes.is_empty(), "{c:?}");
    assert!(c.mean_error.unwrap() < 0.3, "{c:?}");
    assert!(
        !first
            .verdict
            .reasons
            .iter()
            .any(|r| r.contains("concept drift")),
        "{:?}",
        first.verdict.reasons
    );
    // Then the world turns: every label flips. The second run's window holds both
    // stretches; only the new rows are fed, and the change is found in them.
    traffic_with(&state, 400, true).await;
    let second = run_monitor(dir.path(), &store).await.report;
    let c = second.concept_drift.clone().expect("the adwin section");
    assert_eq!((c.fed, c.fed_total), (400, 800), "{c:?}");
    assert!(!c.changes.is_empty(), "{c:?}");
    assert!(c.changes.iter().all(|ch| ch.position >= 400), "{c:?}");
    assert!(second.verdict.breach);
    assert!(
        second
            .verdict
            .reasons
            .iter()
            .any(|r| r.starts_with("concept drift: adwin found a change")),
        "{:?}",
        second.verdict.reasons
    );
    let saved: serde_json::Value = store
        .get_json(&ObjectKey::new("monitoring/mixed/concept-state.json").unwrap())
        .await
        .unwrap();
    assert_eq!(saved["fed"], 800);
    assert_eq!(saved["detector"], "adwin");
    // A typo in the trigger is refused with the field named.
    let bad =
        lambdaml::spec::ModelSpec::parse(&format!("{MIXED_SPEC}\n[monitor]\ntrigger = \"adwn\"\n"))
            .unwrap_err();
    assert!(bad.to_string().contains("adwn"), "{bad}");
}
