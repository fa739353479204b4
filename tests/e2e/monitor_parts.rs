//! The monitor's fan-out: a window aggregated in parts (whole capture hours, one message
//! each on the monitor queue, merged by the last part) writes the report one invocation
//! writes for the same window — counts, the drift tests' sample, the labelled rows and every
//! statistic on them identical; the estimators' floating-point sums within rounding — and
//! redelivered, stray or stale part messages are answered without a second report.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::sync::Arc;

use chrono::Duration;
use lambdaml::message::{Message, MonitorPartRequest, StageMessage};
use lambdaml::queue::open_queues;
use lambdaml::stage::{DrainOptions, StageHandler, drain};
use lambdaml::store::{FileStore, ObjectKey, ObjectStore, ObjectStoreExt};
use lambdaml_e2e::MIXED_SPEC;
use lambdaml_monitor::parts::PartOutcome;
use lambdaml_monitor::{Monitor, MonitorConfig, Started};
use serde_json::Value;

use crate::monitor::{deploy, request, serve, t0, traffic};

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// A copy of the store and queues under `root` (`store/`, `queues/`), opened.
async fn twin_of(
    root: &Path,
) -> (
    tempfile::TempDir,
    Arc<dyn ObjectStore>,
    lambdaml::queue::Queues,
) {
    let twin = tempfile::tempdir().unwrap();
    copy_dir(root, twin.path());
    let store: Arc<dyn ObjectStore> = Arc::new(FileStore::open(twin.path().join("store")).unwrap());
    let queues = open_queues(
        &format!("file://{}", twin.path().join("queues").display()),
        3,
    )
    .await
    .unwrap();
    (twin, store, queues)
}

/// Every number of `a` and `b` within `tolerance` (relative), everything else equal;
/// the first difference's path.
fn close(a: &Value, b: &Value, tolerance: f64, path: &str) -> Result<(), String> {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            let (x, y) = (x.as_f64().unwrap(), y.as_f64().unwrap());
            let scale = x.abs().max(y.abs()).max(1e-300);
            if (x - y).abs() / scale <= tolerance {
                Ok(())
            } else {
                Err(format!("{path}: {x} vs {y}"))
            }
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            for (i, (x, y)) in x.iter().zip(y).enumerate() {
                close(x, y, tolerance, &format!("{path}[{i}]"))?;
            }
            Ok(())
        }
        (Value::Object(x), Value::Object(y)) if x.len() == y.len() => {
            for (k, v) in x {
                let w = y.get(k).ok_or_else(|| format!("{path}.{k}: missing"))?;
                close(v, w, tolerance, &format!("{path}.{k}"))?;
            }
            Ok(())
        }
        _ if a == b => Ok(()),
        _ => Err(format!("{path}: {a} vs {b}")),
    }
}

#[tokio::test]
async fn a_window_in_parts_reports_what_one_invocation_reports() {
    let d = deploy(MIXED_SPEC).await;
    // Six hours of traffic, a request a minute of 4 rows (1,440 rows), drifted in the last
    // three hours, every row labelled.
    let (first, first_labels) = traffic(720, 11, false);
    let (second, second_labels) = traffic(720, 12, true);
    serve(&d.store, &first, &first_labels, t0(), 4).await;
    serve(
        &d.store,
        &second,
        &second_labels,
        t0() + Duration::hours(3),
        4,
    )
    .await;
    // A twin of the store, so each run starts from the same state (concept-drift and
    // late-label state are written by a run).
    let (twin, twin_store, twin_queues) = twin_of(d.root()).await;
    // Samples smaller than the window, so that which rows they keep matters.
    let config = MonitorConfig {
        sample_rows: 500,
        ..MonitorConfig::default()
    };
    let mut ask = request(t0(), t0() + Duration::hours(6));
    ask.retrain = false;

    let whole = Monitor::new(d.store.clone(), None)
        .with_config(config)
        .run(&ask)
        .await
        .unwrap();
    assert!(
        whole.report.captures.sampled,
        "the sample is smaller than the window"
    );
    assert!(whole.report.feedback.joined > 1000);

    // Parts of at most 40 KiB: a capture hour or two each.
    let queue = twin_queues
        .get(lambdaml::message::Stage::Monitor)
        .await
        .unwrap();
    let monitor = Monitor::new(twin_store.clone(), None)
        .with_config(config)
        .with_parts(Some(queue.clone()), 40 * 1024);
    let planned = match monitor.start(&ask).await.unwrap() {
        Started::Planned(p) => p,
        Started::Done(_) => panic!("a window over the part size is planned in parts"),
    };
    assert!(planned.parts >= 3, "{planned:?}");
    assert_eq!(queue.stats().await.unwrap().visible, planned.parts as u64);
    let handlers: Vec<Arc<dyn StageHandler>> = vec![Arc::new(monitor.clone())];
    let options = DrainOptions {
        workers: 2,
        ..DrainOptions::default()
    };
    let handled = drain(&twin_queues, &handlers, &options, &|_| {})
        .await
        .unwrap();
    assert_eq!(handled.len(), planned.parts);
    let reported: Vec<&Value> = handled
        .iter()
        .map(|h| &h.detail)
        .filter(|d| d["step"] == "reported")
        .collect();
    assert_eq!(reported.len(), 1, "exactly one part merges: {handled:?}");
    assert_eq!(reported[0]["report"], planned.report.as_str());
    let parted: lambdaml::monitoring::Report = twin_store
        .get_json(&ObjectKey::new(planned.report.as_str()).unwrap())
        .await
        .unwrap();

    // Both as stored (serde_json reads some numbers back one unit in the last place off,
    // the same way for both).
    let whole: lambdaml::monitoring::Report = d
        .store
        .get_json(&ObjectKey::new(whole.report_key.as_str()).unwrap())
        .await
        .unwrap();
    // Exact: what the report counts and tests.
    assert_eq!(parted.captures, whole.captures);
    assert_eq!(parted.feedback, whole.feedback);
    assert_eq!(parted.data_drift, whole.data_drift);
    assert_eq!(parted.prediction_drift, whole.prediction_drift);
    assert_eq!(parted.data_quality, whole.data_quality);
    assert_eq!(parted.processing, whole.processing);
    assert_eq!(parted.verdict, whole.verdict);
    assert_eq!(parted.performance.metrics, whole.performance.metrics);
    assert!(whole.data_drift.drifted > 0, "the drifted half is seen");
    // The rest, the estimators' sums included, within rounding.
    let strip = |r: &lambdaml::monitoring::Report| {
        let mut v = serde_json::to_value(r).unwrap();
        for k in ["generated_at", "timings_ms"] {
            v.as_object_mut().unwrap().remove(k);
        }
        v
    };
    close(&strip(&whole), &strip(&parted), 1e-9, "report").unwrap();
    assert!(parted.performance.metrics.contains_key("accuracy"));

    // A redelivered part: nothing is written twice.
    let again = monitor
        .handle_part(&MonitorPartRequest {
            model: "mixed".into(),
            run: planned.run.clone(),
            part: 0,
        })
        .await
        .unwrap();
    assert!(
        matches!(again, PartOutcome::AlreadyReported { ref report, .. } if *report == planned.report),
        "{again:?}"
    );
    // A merge that stopped between the report's JSON and its HTML: the next delivery of any
    // part renders the HTML from the stored report.
    let html_key = ObjectKey::new(planned.report.replace("report.json", "report.html")).unwrap();
    std::fs::remove_file(twin.path().join("store").join(html_key.as_str())).unwrap();
    let again = monitor
        .handle_part(&MonitorPartRequest {
            model: "mixed".into(),
            run: planned.run.clone(),
            part: 1,
        })
        .await
        .unwrap();
    assert!(
        matches!(again, PartOutcome::AlreadyReported { .. }),
        "{again:?}"
    );
    assert!(
        twin_store.exists(&html_key).await.unwrap(),
        "the HTML is rendered again"
    );
    // A part the plan does not have, and a run never planned: refused, naming why.
    let bad = |run: &str, part: usize| MonitorPartRequest {
        model: "mixed".into(),
        run: run.into(),
        part,
    };
    let e = monitor
        .handle_part(&bad(&planned.run, 99))
        .await
        .unwrap_err();
    assert!(
        !e.is_retryable() && e.reason().contains("not a part 99"),
        "{e}"
    );
    let e = monitor
        .handle_part(&bad("20300101T000000.000Z-abcdef", 0))
        .await
        .unwrap_err();
    assert!(!e.is_retryable() && e.reason().contains("no plan"), "{e}");
    let e = monitor
        .handle_part(&bad("../../registry", 0))
        .await
        .unwrap_err();
    assert!(
        !e.is_retryable() && e.reason().contains("invalid monitor part"),
        "{e}"
    );
    // Through the queue too: a stray message is dead-lettered with its reason.
    let stray = Message::new(
        "direct-x",
        Some("mixed".into()),
        StageMessage::MonitorPart(bad(&planned.run, 99)),
    );
    queue.send(&stray.to_body()).await.unwrap();
    let handled = drain(&twin_queues, &handlers, &options, &|_| {})
        .await
        .unwrap();
    assert_eq!(handled.len(), 1);
    assert_eq!(handled[0].outcome, "dead_letter", "{handled:?}");
}

#[tokio::test]
async fn a_window_whose_production_changes_midway_fails_with_the_reason() {
    let d = deploy(MIXED_SPEC).await;
    let (csv, labels) = traffic(480, 21, false);
    serve(&d.store, &csv, &labels, t0(), 4).await;
    let queue = d
        .queues
        .get(lambdaml::message::Stage::Monitor)
        .await
        .unwrap();
    let monitor = Monitor::new(d.store.clone(), None).with_parts(Some(queue), 20 * 1024);
    let mut ask = request(t0(), t0() + Duration::hours(2));
    ask.retrain = false;
    let Started::Planned(planned) = monitor.start(&ask).await.unwrap() else {
        panic!("planned in parts");
    };
    // Production moves to another version between the plan and its parts.
    let plan_key = ObjectKey::new(planned.plan.as_str()).unwrap();
    let mut plan: Value = d.store.get_json(&plan_key).await.unwrap();
    plan["version"] = Value::String("v-older".into());
    d.store
        .put(&plan_key, serde_json::to_vec(&plan).unwrap().into())
        .await
        .unwrap();
    let e = monitor
        .handle_part(&MonitorPartRequest {
            model: "mixed".into(),
            run: planned.run.clone(),
            part: 0,
        })
        .await
        .unwrap_err();
    assert!(
        !e.is_retryable() && e.reason().contains("changed from v-older"),
        "{e}"
    );
}

/// Copies every record file of `model` under `root` (`captures`, `feedback`) an hour earlier
/// when `earlier`, else into its own hour: request ids prefixed `early-`, capture times moved
/// with the file.
async fn copy_records(store: &Arc<dyn ObjectStore>, root: &str, model: &str, earlier: bool) {
    let shift = if earlier {
        Duration::hours(1)
    } else {
        Duration::zero()
    };
    let metas = store.list_all(&format!("{root}/{model}/")).await.unwrap();
    for (i, meta) in metas.iter().enumerate() {
        let text = store.get(&meta.key).await.unwrap().bytes;
        let hour = lambdaml::layout::record_hour(meta.key.as_str()).unwrap() - shift;
        let mut out = String::new();
        for line in String::from_utf8_lossy(&text).lines() {
            let mut record: Value = serde_json::from_str(line).unwrap();
            if let Some(t) = record.get("timestamp").and_then(Value::as_str) {
                let at = chrono::DateTime::parse_from_rfc3339(t).unwrap() - shift;
                record["timestamp"] =
                    Value::String(at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true));
            }
            let id = record["request_id"].as_str().unwrap().to_string();
            record["request_id"] = Value::String(format!("early-{id}"));
            out.push_str(&format!("{record}\n"));
        }
        let folder = hour.format("%Y-%m-%d/%H");
        let key = ObjectKey::new(format!("{root}/{model}/{folder}/early-{i}.jsonl")).unwrap();
        store.put(&key, out.into()).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shadow_rollout_in_parts_is_judged_as_in_one_invocation() {
    use lambdaml::registry::{RegistryStore, Role};
    let b = crate::score::fixture().mixed[1].clone();
    let (dir, store) =
        crate::rollout::whole_store("[rollout]\nmin_rows = 100\nmin_labelled = 100").await;
    crate::rollout::undecided(&store, &b).await;
    RegistryStore::new(store.clone())
        .update("mixed", |r| {
            r.start_rollout(Role::Shadow, &b, 1.0, false, "test", "try b")
        })
        .await
        .unwrap();
    let state = crate::score::state_with(store.clone(), crate::score::test_config());
    crate::rollout::traffic_with(&state, 300, false).await;
    // The same traffic and labels again, an hour earlier: two capture hours, two parts.
    copy_records(&store, "captures", "mixed", true).await;
    copy_records(&store, "feedback", "mixed", false).await;
    let (_twin, twin_store, twin_queues) = twin_of(dir.path()).await;
    let now = chrono::Utc::now();
    let ask = lambdaml_monitor::MonitorRequest {
        model: "mixed".into(),
        window: None,
        from: Some((now - Duration::hours(3)).to_rfc3339()),
        to: Some((now + Duration::minutes(1)).to_rfc3339()),
        at: Some((now + Duration::minutes(1)).to_rfc3339()),
        retrain: false,
    };
    let whole = Monitor::new(store.clone(), None).run(&ask).await.unwrap();
    let whole: lambdaml::monitoring::Report = store
        .get_json(&ObjectKey::new(whole.report_key.as_str()).unwrap())
        .await
        .unwrap();
    let queue = twin_queues
        .get(lambdaml::message::Stage::Monitor)
        .await
        .unwrap();
    let monitor = Monitor::new(twin_store.clone(), None).with_parts(Some(queue), 1024);
    let Started::Planned(planned) = monitor.start(&ask).await.unwrap() else {
        panic!("planned in parts");
    };
    assert!(planned.parts >= 2, "{planned:?}");
    let handlers: Vec<Arc<dyn StageHandler>> = vec![Arc::new(monitor.clone())];
    drain(&twin_queues, &handlers, &DrainOptions::default(), &|_| {})
        .await
        .unwrap();
    let parted: lambdaml::monitoring::Report = twin_store
        .get_json(&ObjectKey::new(planned.report.as_str()).unwrap())
        .await
        .unwrap();
    let rollout = whole.rollout.clone().expect("a rollout section");
    assert_eq!(rollout.agreement.paired_rows, 600, "{rollout:?}");
    assert!(rollout.comparison.is_some(), "{rollout:?}");
    assert_eq!(parted.rollout, whole.rollout);
    assert_eq!(parted.captures, whole.captures);
    assert_eq!(parted.feedback, whole.feedback);
    assert_eq!(parted.performance.metrics, whole.performance.metrics);
}
