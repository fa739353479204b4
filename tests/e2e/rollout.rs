//! Safe rollout end to end: a canary answering its weight's share (sticky per key), a
//! shadow that never answers and never fails a request, and the monitor deciding both from
//! live evidence, every change announced as a registry event.

#![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use lambdaml::events::RegistryEvent;
use lambdaml::layout;
use lambdaml::pipeline::{Function, Wired};
use lambdaml::queue::{DEPLOYMENTS, open_queues};
use lambdaml::registry::{RegistryStore, Role, VersionStatus};
use lambdaml::store::{ObjectKey, ObjectStore, ObjectStoreExt};
use lambdaml_e2e::{MIXED_SPEC, mixed_csv};
use lambdaml_monitor::{Monitor, MonitorRequest};
use serde_json::{Value, json};

use crate::score::{
    call, captures, fixture, own_store_with_mixed, post_json, state_with, test_config,
};

/// Registers a copy of version `from` as `to` whose colour categories are `colors` (the
/// same weights): with `unseen_category = "error"` it refuses every row whose colour is not
/// among them.
async fn variant(store: &Arc<dyn ObjectStore>, from: &str, to: &str, colors: [&str; 3]) {
    let map: Vec<(&str, &str)> = ["red", "green", "blue"].into_iter().zip(colors).collect();
    renamed(store, from, to, &map).await;
}

/// Registers a copy of version `from` as `to` with the strings of its pipeline renamed by
/// `map` (the same weights).
async fn renamed(store: &Arc<dyn ObjectStore>, from: &str, to: &str, map: &[(&str, &str)]) {
    let key = layout::model_manifest("mixed", from).unwrap();
    let mut manifest: Value = store.get_json(&key).await.unwrap();
    fn rename(v: &mut Value, map: &BTreeMap<&str, &str>) {
        match v {
            Value::String(s) => {
                if let Some(n) = map.get(s.as_str()) {
                    *s = n.to_string();
                }
            }
            Value::Array(a) => a.iter_mut().for_each(|x| rename(x, map)),
            Value::Object(o) => o.values_mut().for_each(|x| rename(x, map)),
            _ => {}
        }
    }
    let map: BTreeMap<&str, &str> = map.iter().copied().collect();
    rename(&mut manifest["pipeline"], &map);
    manifest["version"] = json!(to);
    store
        .put(
            &layout::model_manifest("mixed", to).unwrap(),
            Bytes::from(manifest.to_string()),
        )
        .await
        .unwrap();
    RegistryStore::new(store.clone())
        .update("mixed", |r| {
            let mut entry = r.versions[from].clone();
            entry.version = to.to_string();
            r.register(entry, "test");
            if let Some(v) = r.versions.get_mut(to) {
                v.status = VersionStatus::Candidate;
            }
            Ok(())
        })
        .await
        .unwrap();
}

/// The fixture's second version as an undecided candidate (the deploy rule may have
/// rejected it, and a rejected version takes no live traffic).
pub(crate) async fn undecided(store: &Arc<dyn ObjectStore>, version: &str) {
    RegistryStore::new(store.clone())
        .update("mixed", |r| {
            if let Some(v) = r.versions.get_mut(version) {
                v.status = VersionStatus::Candidate;
            }
            Ok(())
        })
        .await
        .unwrap();
}

fn one_row(i: usize) -> Value {
    let colors = ["red", "green", "blue"];
    json!({"dataframe_records": [{"amount": (i % 97) as f64, "count": i % 10,
        "member": i.is_multiple_of(3), "color": colors[i % 3]}]})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_answers_its_weight_sticky_per_key_and_says_which_version_answered() {
    let f = fixture();
    let (_dir, store) = own_store_with_mixed(f).await;
    let (a, b) = (f.mixed[0].clone(), f.mixed[1].clone());
    undecided(&store, &b).await;
    let registry = RegistryStore::new(store.clone());
    registry
        .update("mixed", |r| {
            r.start_rollout(Role::Canary, &b, 0.1, false, "test", "ten percent")
        })
        .await
        .unwrap();
    let refresh = Duration::from_millis(300);
    let state = state_with(
        store.clone(),
        lambdaml_score::ScoreConfig {
            refresh,
            ..test_config()
        },
    );
    let mut by_key = Vec::new();
    let mut canary = 0;
    for i in 0..10_000 {
        let key = format!("user-{i}");
        let answer = crate::score::call(
            &state,
            "POST",
            "/invocations",
            Some("application/json"),
            &[("x-lambdaml-key", key.as_str())],
            one_row(i).to_string().into_bytes(),
        )
        .await;
        assert_eq!(
            answer.status,
            200,
            "{}",
            String::from_utf8_lossy(&answer.body)
        );
        let version = answer.json()["model_version"].as_str().unwrap().to_string();
        let role = answer.headers["x-lambdaml-role"]
            .to_str()
            .unwrap()
            .to_string();
        assert_eq!(
            answer.headers["x-lambdaml-version"].to_str().unwrap(),
            version
        );
        if version == b {
            canary += 1;
            assert_eq!(role, "canary");
        } else {
            assert_eq!(version, a);
            assert_eq!(role, "production");
        }
        if i < 300 {
            by_key.push((key, version));
        }
    }
    let share = canary as f64 / 10_000.0;
    assert!((share - 0.1).abs() <= 0.02, "canary share {share}");
    // Sticky: the same key gets the same version again, over either protocol.
    for (key, version) in &by_key {
        let again = call(
            &state,
            "POST",
            "/invocations",
            Some("application/json"),
            &[("x-lambdaml-key", key.as_str())],
            one_row(1).to_string().into_bytes(),
        )
        .await;
        assert_eq!(
            &again.json()["model_version"],
            version.as_str(),
            "key {key}"
        );
        let v2 = post_json(
            &state,
            "/v2/models/mixed/infer",
            &json!({"parameters": {"key": key},
                    "inputs": [{"name": "input", "shape": [1, 4], "datatype": "BYTES",
                                "data": ["50", "3", "true", "red"]}]}),
        )
        .await;
        assert_eq!(
            &v2.json()["model_version"],
            version.as_str(),
            "V2 key {key}"
        );
    }
    // Captures say which version answered and in which role.
    state.capture.flush().await;
    let records = captures(store.as_ref(), "captures/mixed/").await;
    let canary_records = records
        .iter()
        .filter(|r| r.version.as_deref() == Some(b.as_str()))
        .count();
    assert!(canary_records >= canary);
    assert!(
        records
            .iter()
            .all(|r| (r.version.as_deref() == Some(b.as_str())) == (r.role == Some(Role::Canary))),
        "every canary answer, and only those, carries role canary"
    );
    // Ending the rollout: the same server answers everyone with production once its
    // refresh interval has passed, as for a promotion.
    registry
        .update("mixed", |r| r.end_rollout(None, "test", "done"))
        .await
        .unwrap();
    tokio::time::sleep(refresh + Duration::from_millis(100)).await;
    post_json(&state, "/invocations", &one_row(0)).await;
    for (key, _) in by_key.iter().take(50) {
        let answer = call(
            &state,
            "POST",
            "/invocations",
            Some("application/json"),
            &[("x-lambdaml-key", key.as_str())],
            one_row(2).to_string().into_bytes(),
        )
        .await;
        assert_eq!(answer.json()["model_version"], a.as_str());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shadow_that_fails_every_row_leaves_every_answer_correct() {
    let f = fixture();
    let (_dir, store) = own_store_with_mixed(f).await;
    let (a, b) = (f.mixed[0].clone(), f.mixed[1].clone());
    variant(&store, &b, "broken", ["purple", "orange", "teal"]).await;
    let registry = RegistryStore::new(store.clone());
    registry
        .update("mixed", |r| {
            r.start_rollout(Role::Shadow, "broken", 1.0, false, "test", "x")
        })
        .await
        .unwrap();
    let state = state_with(store.clone(), test_config());
    // What production alone answers, asked by version (no rollout applies).
    let reference = state_with(store.clone(), test_config());
    for i in 0..60 {
        let answer = post_json(&state, "/invocations", &one_row(i)).await;
        assert_eq!(
            answer.status,
            200,
            "{}",
            String::from_utf8_lossy(&answer.body)
        );
        let expected = post_json(
            &reference,
            &format!("/invocations?version={a}"),
            &one_row(i),
        )
        .await;
        assert_eq!(answer.json()["model_version"], a.as_str());
        assert_eq!(
            answer.json()["predictions"],
            expected.json()["predictions"],
            "row {i}: the shadow changed nothing"
        );
        assert_eq!(answer.headers["x-lambdaml-role"], "production");
    }
    // The shadow's work is off the response path: wait for it, then flush.
    assert!(
        state.settle(Duration::from_secs(10)).await,
        "shadow jobs finish"
    );
    state.capture.flush().await;
    let records = captures(store.as_ref(), "captures/mixed/").await;
    let shadow: Vec<_> = records
        .iter()
        .filter(|r| r.role == Some(Role::Shadow))
        .collect();
    let production: Vec<_> = records
        .iter()
        .filter(|r| r.role.is_none() && r.version.as_deref() == Some(a.as_str()))
        .collect();
    assert_eq!(production.len(), 60);
    assert_eq!(shadow.len(), 60, "every request mirrored");
    assert!(
        shadow
            .iter()
            .all(|r| r.status == 422 && !r.errors.is_empty())
    );
    assert!(
        shadow
            .iter()
            .all(|r| r.version.as_deref() == Some("broken"))
    );
    let ids = |v: &[&lambdaml::capture::CaptureRecord]| {
        let mut ids: Vec<String> = v.iter().map(|r| r.request_id.clone()).collect();
        ids.sort();
        ids
    };
    assert_eq!(ids(&shadow), ids(&production), "same request ids");
    let metrics = call(&state, "GET", "/metrics", None, &[], Vec::new()).await;
    let text = String::from_utf8_lossy(&metrics.body);
    assert!(
        text.contains("lambdaml_shadow_requests_total{outcome=\"refused\"} 60"),
        "{text}"
    );
    assert!(text.contains("lambdaml_shadow_in_flight 0"), "{text}");

    // A shadow taking a feature production's requests do not carry (a spec change):
    // those requests are scored by production only, and the shadow's record says so.
    renamed(&store, &b, "renamed", &[("count", "visits")]).await;
    registry
        .update("mixed", |r| {
            r.end_rollout(None, "test", "next")?;
            r.start_rollout(Role::Shadow, "renamed", 1.0, false, "test", "x")
        })
        .await
        .unwrap();
    let state = state_with(store.clone(), test_config());
    for i in 0..5 {
        let answer = post_json(&state, "/invocations", &one_row(i)).await;
        assert_eq!(answer.status, 200);
        assert_eq!(answer.json()["model_version"], a.as_str());
    }
    assert!(
        state.settle(Duration::from_secs(10)).await,
        "shadow jobs finish"
    );
    state.capture.flush().await;
    let skipped: Vec<_> = captures(store.as_ref(), "captures/mixed/")
        .await
        .into_iter()
        .filter(|r| r.version.as_deref() == Some("renamed"))
        .collect();
    assert_eq!(skipped.len(), 5);
    assert!(
        skipped
            .iter()
            .all(|r| r.status == 424 && r.errors[0].reason.contains("visits")),
        "{skipped:?}"
    );

    // A shadow whose version cannot be loaded at all: production serves alone.
    registry
        .update("mixed", |r| {
            r.end_rollout(None, "test", "next")?;
            let mut entry = r.versions[&b].clone();
            entry.version = "missing".into();
            entry.status = VersionStatus::Candidate;
            r.register(entry, "test");
            r.start_rollout(Role::Shadow, "missing", 1.0, false, "test", "x")
        })
        .await
        .unwrap();
    let state = state_with(store.clone(), test_config());
    let answer = post_json(&state, "/invocations", &one_row(1)).await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.json()["model_version"], a.as_str());
}

/// Scores `rows` of the mixed data through `state` and posts their labels as feedback.
async fn traffic_with_labels(state: &Arc<lambdaml_score::ScoreState>, rows: usize) {
    traffic_with(state, rows, false).await;
}

/// Scores `rows` of the mixed data through `state` and posts their labels (each flipped
/// when `flip`: the world changed) as feedback.
pub(crate) async fn traffic_with(state: &Arc<lambdaml_score::ScoreState>, rows: usize, flip: bool) {
    let csv = mixed_csv(rows);
    let mut feedback = Vec::new();
    for line in csv.lines().skip(1) {
        let v: Vec<&str> = line.split(',').collect();
        let body = json!({"dataframe_records": [{"amount": v[0].parse::<f64>().unwrap(),
            "count": v[1].parse::<i64>().unwrap(), "member": v[2] == "true", "color": v[3]}]});
        let answer = post_json(state, "/invocations", &body).await;
        assert_eq!(
            answer.status,
            200,
            "{}",
            String::from_utf8_lossy(&answer.body)
        );
        let label = match (flip, v[4]) {
            (true, "1") => "0",
            (true, _) => "1",
            (false, l) => l,
        };
        feedback.push(json!({"request_id": answer.json()["request_id"], "row": 0, "label": label}));
    }
    let answer = post_json(
        state,
        "/v2/models/mixed/feedback",
        &json!({"feedback": feedback}),
    )
    .await;
    assert!(
        answer.status < 300,
        "{}",
        String::from_utf8_lossy(&answer.body)
    );
    assert!(
        state.settle(Duration::from_secs(10)).await,
        "shadow jobs finish"
    );
    state.capture.flush().await;
}

/// A store with everything of the fixture's (runs, specs, datasets, models) and `extra`
/// sections (`[rollout]`, `[monitor]`) in the live spec.
pub(crate) async fn whole_store(extra: &str) -> (tempfile::TempDir, Arc<dyn ObjectStore>) {
    let f = fixture();
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn ObjectStore> =
        Arc::new(lambdaml::store::FileStore::open(dir.path().join("store")).unwrap());
    for meta in f.store.list_all("").await.unwrap() {
        let key = meta.key.as_str();
        if key.starts_with("captures/")
            || key.starts_with("feedback/")
            || key.starts_with("monitoring/")
        {
            continue;
        }
        let bytes = f.store.get(&meta.key).await.unwrap().bytes;
        store.put(&meta.key, bytes).await.unwrap();
    }
    let spec = format!("{MIXED_SPEC}\n{extra}\n");
    store
        .put(
            &ObjectKey::new("specs/mixed.toml").unwrap(),
            Bytes::from(spec),
        )
        .await
        .unwrap();
    (dir, store)
}

pub(crate) async fn run_monitor(
    dir: &std::path::Path,
    store: &Arc<dyn ObjectStore>,
) -> lambdaml_monitor::MonitorOutcome {
    let queues = open_queues(&format!("file://{}", dir.join("queues").display()), 3)
        .await
        .unwrap();
    let wired = Wired::open(Function::Monitor, store.clone(), &queues)
        .await
        .unwrap();
    let now = chrono::Utc::now();
    Monitor::from_wiring(&wired)
        .run(&MonitorRequest {
            model: "mixed".into(),
            window: None,
            from: Some((now - chrono::Duration::hours(1)).to_rfc3339()),
            to: Some((now + chrono::Duration::minutes(1)).to_rfc3339()),
            at: Some((now + chrono::Duration::minutes(1)).to_rfc3339()),
            retrain: true,
        })
        .await
        .unwrap()
}

async fn events(dir: &std::path::Path) -> Vec<RegistryEvent> {
    let queues = open_queues(&format!("file://{}", dir.join("queues").display()), 3)
        .await
        .unwrap();
    let q = queues.named(DEPLOYMENTS).await.unwrap();
    let mut out = Vec::new();
    loop {
        let got = q.receive(10, Duration::from_secs(30)).await.unwrap();
        if got.is_empty() {
            return out;
        }
        for m in got {
            out.push(serde_json::from_str(&m.body).unwrap());
            q.delete(&m.receipt).await.unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_monitor_promotes_a_shadow_no_worse_than_production_and_ends_a_worse_one() {
    let f = fixture();
    let (a, b) = (f.mixed[0].clone(), f.mixed[1].clone());
    // A fair challenger: promoted once the paired interval clears the margin.
    let (dir, store) =
        whole_store("[rollout]\nmin_rows = 100\nmin_labelled = 100\nmargin = 0.05").await;
    undecided(&store, &b).await;
    let registry = RegistryStore::new(store.clone());
    registry
        .update("mixed", |r| {
            r.start_rollout(Role::Shadow, &b, 1.0, false, "test", "try b")
        })
        .await
        .unwrap();
    let state = state_with(store.clone(), test_config());
    traffic_with_labels(&state, 400).await;
    let outcome = run_monitor(dir.path(), &store).await;
    let section = outcome.report.rollout.clone().expect("a rollout section");
    assert_eq!(section.role, "shadow");
    assert_eq!(section.production.version, a);
    assert_eq!(section.candidate.version, b);
    assert_eq!(section.agreement.paired_rows, 400);
    assert!(
        section.agreement.label_agreement.unwrap() > 0.7,
        "{section:?}"
    );
    let cmp = section.comparison.clone().expect("enough labelled rows");
    assert_eq!(cmp.metric, "roc_auc");
    assert_eq!(cmp.rows, 400);
    assert!(cmp.interval[0] <= cmp.improvement && cmp.improvement <= cmp.interval[1]);
    assert_eq!(section.decision, "promote", "{}", section.detail);
    assert!(section.applied);
    assert_eq!(
        outcome.report.captures.shadow_records, 400,
        "the shadow's copies are not production's traffic"
    );
    let after = registry.get("mixed").await.unwrap();
    assert_eq!(after.production.as_deref(), Some(b.as_str()));
    assert!(after.shadow.is_none());
    let html = store
        .get(&ObjectKey::new(outcome.html_key.as_str()).unwrap())
        .await
        .unwrap()
        .bytes;
    assert!(String::from_utf8_lossy(&html).contains("Rollout"));
    let announced = events(dir.path()).await;
    let promoted = announced
        .iter()
        .find(|e| e.event == "promoted")
        .expect("the promotion is announced");
    assert_eq!(promoted.actor, "monitor");
    assert_eq!(promoted.from_role.as_deref(), Some("shadow"));
    assert_eq!(promoted.previous.as_deref(), Some(a.as_str()));

    // A shadow that answers the opposite class: ended, production untouched.
    let (dir, store) = whole_store("[rollout]\nmin_rows = 100\nmin_labelled = 100").await;
    variant(&store, &b, "inverted", ["red", "green", "blue"]).await;
    let key = layout::model_manifest("mixed", "inverted").unwrap();
    let mut manifest: Value = store.get_json(&key).await.unwrap();
    // Swap the label's classes: every probability now names the other class.
    let text = manifest["pipeline"]["label"].to_string();
    assert!(text.contains("\"0\"") && text.contains("\"1\""), "{text}");
    let swapped: Value = serde_json::from_str(
        &text
            .replace("\"0\"", "\"§\"")
            .replace("\"1\"", "\"0\"")
            .replace("\"§\"", "\"1\""),
    )
    .unwrap();
    manifest["pipeline"]["label"] = swapped;
    store
        .put(&key, Bytes::from(manifest.to_string()))
        .await
        .unwrap();
    let registry = RegistryStore::new(store.clone());
    registry
        .update("mixed", |r| {
            r.start_rollout(Role::Shadow, "inverted", 1.0, false, "test", "x")
        })
        .await
        .unwrap();
    let state = state_with(store.clone(), test_config());
    traffic_with_labels(&state, 300).await;
    let outcome = run_monitor(dir.path(), &store).await;
    let section = outcome.report.rollout.expect("a rollout section");
    assert_eq!(section.decision, "end", "{}", section.detail);
    assert!(section.agreement.label_agreement.unwrap() < 0.3);
    let after = registry.get("mixed").await.unwrap();
    assert_eq!(after.production.as_deref(), Some(a.as_str()));
    assert!(after.shadow.is_none());
    assert_eq!(after.versions["inverted"].status, VersionStatus::Archived);
    let retired = events(dir.path()).await;
    assert!(
        retired
            .iter()
            .any(|e| e.event == "retired" && e.version == "inverted")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollout_changes_by_hand_are_checked_and_announced() {
    let f = fixture();
    let (a, b) = (f.mixed[0].clone(), f.mixed[1].clone());
    let (dir, store) = whole_store("").await;
    undecided(&store, &b).await;
    let queues = open_queues(
        &format!("file://{}", dir.path().join("queues").display()),
        3,
    )
    .await
    .unwrap();
    let wired = Wired::open(Function::Deploy, store.clone(), &queues)
        .await
        .unwrap();
    let deploy = lambdaml_deploy::Deploy::with_announcer(store.clone(), wired.announcer());
    let direct = |v: Value| {
        let deploy = deploy.clone();
        async move { lambdaml_deploy::direct_change(&deploy, &v).await.unwrap() }
    };
    // Mistakes: a clear error, nothing changed.
    let before = RegistryStore::new(store.clone())
        .get("mixed")
        .await
        .unwrap();
    for (payload, expect) in [
        (
            json!({"action": "shadow", "model": "mixed", "version": "nope"}),
            "no version",
        ),
        (
            json!({"action": "shadow", "model": "mixed", "version": a}),
            "already in production",
        ),
        (
            json!({"action": "canary", "model": "mixed", "version": b}),
            "weight",
        ),
        (
            json!({"action": "canary", "model": "mixed", "version": b, "weight": 1.5}),
            "(0, 1)",
        ),
        (
            json!({"action": "end_rollout", "model": "mixed"}),
            "no rollout in progress",
        ),
        (
            json!({"action": "shadow", "model": "nope", "version": b}),
            "no registry entry",
        ),
        (
            json!({"action": "shadow", "model": "mixed", "versoin": b}),
            "unknown field",
        ),
    ] {
        let err = direct(payload.clone()).await.unwrap_err();
        assert!(err.reason().contains(expect), "{payload}: {}", err.reason());
    }
    assert_eq!(
        RegistryStore::new(store.clone())
            .get("mixed")
            .await
            .unwrap(),
        before
    );
    // A canary, stepped, then a second operator racing to start another: one conflict
    // naming the current state.
    direct(json!({"action": "canary", "model": "mixed", "version": b, "weight": 0.05}))
        .await
        .unwrap();
    let stepped =
        direct(json!({"action": "canary", "model": "mixed", "version": b, "weight": 0.25}))
            .await
            .unwrap();
    assert_eq!(stepped["canary"]["weight"], 0.25);
    variant(&store, &b, "other", ["red", "green", "blue"]).await;
    let err = deploy
        .rollout("mixed", Role::Canary, "other", 0.1, "cli:bob", "mine")
        .await
        .unwrap_err();
    assert!(
        err.reason()
            .contains(&format!("already has canary version {b}")),
        "{}",
        err.reason()
    );
    let ended = direct(json!({"action": "end_rollout", "model": "mixed", "reason": "enough"}))
        .await
        .unwrap();
    assert_eq!(ended["canary"], Value::Null);
    let names: Vec<String> = events(dir.path())
        .await
        .into_iter()
        .map(|e| e.event)
        .collect();
    assert_eq!(names, ["canary_step", "canary_step", "retired"]);
}
