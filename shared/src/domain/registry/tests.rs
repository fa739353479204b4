//! The registry's transitions, roles and compare-and-swap.

use super::*;

/// A candidate `v` with ROC AUC `auc` (for tests of the registry and its events).
pub(crate) fn entry(v: &str, auc: f64) -> VersionEntry {
    VersionEntry {
        version: v.into(),
        number: 0,
        status: VersionStatus::Candidate,
        run_id: "r".into(),
        dataset_version: "d".into(),
        manifest: format!("models/m/{v}/manifest.json"),
        metrics: BTreeMap::from([("roc_auc".to_string(), auc)]),
        registered_at: String::new(),
    }
}

#[test]
fn promote_archive_and_rollback() {
    let mut r = Registry::new("m");
    assert!(r.register(entry("a", 0.9), "train"));
    assert!(
        !r.register(entry("a", 0.9), "train"),
        "registering twice changes nothing"
    );
    r.register(entry("b", 0.95), "train");
    r.promote("a", "deploy", "first").unwrap();
    r.promote("b", "deploy", "better").unwrap();
    assert_eq!(r.versions["a"].status, VersionStatus::Archived);
    assert_eq!(r.production.as_deref(), Some("b"));
    assert_eq!(r.rollback(None, "cli", "bad outputs").unwrap(), "a");
    assert_eq!(r.versions["b"].status, VersionStatus::Archived);
    assert_eq!(r.versions["a"].status, VersionStatus::Production);
    assert_eq!(r.history.last().unwrap().action, Action::Rollback);
    assert_eq!(r.history.last().unwrap().previous.as_deref(), Some("b"));
    assert!(r.rollback(Some("zzz"), "cli", "x").is_err());
    assert!(
        r.approve("b", "cli").is_err(),
        "only pending versions are approved"
    );
}

#[test]
fn rollout_roles_are_exclusive_and_end_in_promotion_or_retirement() {
    let mut r = Registry::new("m");
    for (v, auc) in [("a", 0.9), ("b", 0.91), ("c", 0.92), ("d", 0.5)] {
        r.register(entry(v, auc), "train");
    }
    r.promote("a", "deploy", "first").unwrap();
    r.reject("d", "deploy", "worse").unwrap();
    // Refusals name what is wrong and change nothing.
    let before = r.clone();
    let e = r
        .start_rollout(Role::Shadow, "d", 1.0, false, "cli", "x")
        .unwrap_err();
    assert!(e.to_string().contains("rejected"), "{e}");
    let e = r
        .start_rollout(Role::Shadow, "a", 1.0, false, "cli", "x")
        .unwrap_err();
    assert!(e.to_string().contains("production"), "{e}");
    let e = r
        .start_rollout(Role::Canary, "b", 1.0, false, "cli", "x")
        .unwrap_err();
    assert!(e.to_string().contains("(0, 1)"), "{e}");
    assert!(
        r.start_rollout(Role::Shadow, "zz", 1.0, false, "cli", "x")
            .is_err()
    );
    assert!(r.end_rollout(None, "cli", "x").is_err(), "nothing to end");
    assert_eq!(r, before);

    r.start_rollout(Role::Shadow, "b", 1.0, false, "cli", "try b")
        .unwrap();
    assert_eq!(r.versions["b"].status, VersionStatus::Shadow);
    assert_eq!(r.role_of("b"), Some(Role::Shadow));
    let e = r
        .start_rollout(Role::Shadow, "c", 1.0, false, "cli", "x")
        .unwrap_err();
    assert!(
        e.to_string().contains("already has shadow version b"),
        "{e}"
    );
    let e = r
        .start_rollout(Role::Canary, "b", 0.1, false, "cli", "x")
        .unwrap_err();
    assert!(e.to_string().contains("is the shadow"), "{e}");
    // Replacing retires the old shadow.
    r.start_rollout(Role::Shadow, "c", 0.5, true, "deploy", "fresher")
        .unwrap();
    assert_eq!(r.versions["b"].status, VersionStatus::Archived);
    assert_eq!(r.shadow.as_ref().unwrap().version, "c");
    let n = r.history.len();
    assert_eq!(r.history[n - 2].action, Action::Retire);
    assert_eq!(r.history[n - 1].action, Action::Shadow);
    // A canary beside the shadow, stepped, then promoted: its role is cleared.
    r.start_rollout(Role::Canary, "b", 0.05, false, "cli", "canary b")
        .unwrap();
    r.step_canary(0.25, "monitor", "step").unwrap();
    assert_eq!(r.canary.as_ref().unwrap().weight, 0.25);
    assert_eq!(r.history.last().unwrap().metrics["weight"], 0.25);
    r.promote("b", "monitor", "won").unwrap();
    assert!(r.canary.is_none());
    assert_eq!(r.production.as_deref(), Some("b"));
    assert_eq!(r.versions["a"].status, VersionStatus::Archived);
    assert!(r.step_canary(0.5, "monitor", "step").is_err());
    // Ending the rollout retires the shadow.
    assert_eq!(
        r.end_rollout(None, "cli", "enough").unwrap(),
        vec!["c".to_string()]
    );
    assert!(r.shadow.is_none());
    assert_eq!(r.versions["c"].status, VersionStatus::Archived);
    assert_eq!(r.history.last().unwrap().action.event(), "retired");
    // A document written before roles existed still reads.
    let old = r#"{"model":"m","production":null,"versions":{},"history":[]}"#;
    let parsed: Registry = serde_json::from_str(old).unwrap();
    assert!(parsed.shadow.is_none() && parsed.canary.is_none());
}
