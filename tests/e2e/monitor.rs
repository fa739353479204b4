//! The monitor and the retraining loop, end to end on the embedded default: real traffic
//! through the score router (with a set clock), feedback, the monitor's report, retrain
//! messages through the local queues to a new version; the retrain-storm guard; every kind
//! of bad input with its stated outcome; and the HTML report in headless Chromium.

#![allow(clippy::unwrap_used, clippy::print_stderr)]

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Instant;

use axum::body::Body;
use axum::http::Request;
use chrono::{DateTime, Duration, Utc};
use lambdaml::baseline::Baseline;
use lambdaml::capture::{CaptureRecord, CapturedValue, Clock};
use lambdaml::dataset::SplitMix64;
use lambdaml::message::{Message, Stage, StageMessage};
use lambdaml::monitoring::Report;
use lambdaml::queue::{Queues, open_queues};
use lambdaml::store::{ObjectKey, ObjectStore, ObjectStoreExt};
use lambdaml_e2e::{MIXED_SPEC, deploy_model, handlers, mixed_csv};
use lambdaml_monitor::{Monitor, MonitorRequest};
use lambdaml_score::{ScoreConfig, ScoreState, router};
use tower::ServiceExt;

pub(crate) fn t0() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2030-01-01T00:00:00Z")
        .unwrap()
        .with_timezone(&Utc)
}

/// Rows like [`mixed_csv`]'s, from another seed; `shift` moves `amount` up and makes most
/// colors blue (a drifted stream). Returns (CSV without the label, labels).
pub(crate) fn traffic(rows: usize, seed: u64, shift: bool) -> (String, Vec<String>) {
    let mut rng = SplitMix64::new(seed);
    let mut csv = String::from("amount,count,member,color\n");
    let mut labels = Vec::new();
    let colors = ["red", "green", "blue"];
    for _ in 0..rows {
        let mut amount = rng.next_f64() * 100.0;
        let count = (rng.next_f64() * 10.0) as i64;
        let member = rng.next_f64() < 0.4;
        let mut color = colors[(rng.next_f64() * 3.0) as usize % 3];
        if shift {
            amount = amount * 0.5 + 60.0;
            if rng.next_f64() < 0.8 {
                color = "blue";
            }
        }
        let score = amount / 50.0 - count as f64 / 5.0
            + if member { 1.0 } else { -0.5 }
            + if color == "red" { 0.8 } else { 0.0 }
            + (rng.next_f64() - 0.5) * 1.5;
        // After the shift the relation changes too (concept drift): membership flips sign.
        let score = if shift {
            score - if member { 2.0 } else { -1.0 }
        } else {
            score
        };
        labels.push(u8::from(score > 0.5).to_string());
        csv.push_str(&format!("{amount:.3},{count},{member},{color}\n"));
    }
    (csv, labels)
}

pub(crate) struct Deployment {
    _dir: tempfile::TempDir,
    pub store: Arc<dyn ObjectStore>,
    pub queues: Queues,
    pub version: String,
}

impl Deployment {
    /// The folder holding the store (`store/`) and the queues (`queues/`).
    pub(crate) fn root(&self) -> &std::path::Path {
        self._dir.path()
    }
}

pub(crate) async fn deploy(spec: &str) -> Deployment {
    let dir = tempfile::tempdir().unwrap();
    let (store, version) =
        deploy_model(dir.path(), spec, "mixed", mixed_csv(1500).as_bytes()).await;
    let queues = open_queues(
        &format!("file://{}", dir.path().join("queues").display()),
        3,
    )
    .await
    .unwrap();
    Deployment {
        _dir: dir,
        store,
        queues,
        version,
    }
}

/// Serves `csv` through the score router in requests of `per_request` rows, one request a
/// minute from `start`, then posts the labels as feedback at the end (none when `labels` is
/// empty). Returns the request ids.
pub(crate) async fn serve(
    store: &Arc<dyn ObjectStore>,
    csv: &str,
    labels: &[String],
    start: DateTime<Utc>,
    per_request: usize,
) -> Vec<String> {
    serve_model(store, "mixed", csv, labels, start, per_request).await
}

/// [`serve`] for any model.
pub(crate) async fn serve_model(
    store: &Arc<dyn ObjectStore>,
    model: &str,
    csv: &str,
    labels: &[String],
    start: DateTime<Utc>,
    per_request: usize,
) -> Vec<String> {
    let now = Arc::new(AtomicI64::new(start.timestamp_millis()));
    let clock_now = now.clone();
    let state = ScoreState::with_clock(
        store.clone(),
        ScoreConfig {
            default_model: Some(model.into()),
            ..ScoreConfig::default()
        },
        Instant::now(),
        Clock::new(move || {
            DateTime::<Utc>::from_timestamp_millis(clock_now.load(Ordering::Relaxed)).unwrap()
        }),
    );
    let app = router(state.clone());
    let mut lines = csv.lines();
    let header = lines.next().unwrap();
    let rows: Vec<&str> = lines.collect();
    let mut ids = Vec::new();
    let mut feedback = Vec::new();
    for (i, chunk) in rows.chunks(per_request).enumerate() {
        now.store(
            (start + Duration::minutes(i as i64)).timestamp_millis(),
            Ordering::Relaxed,
        );
        let body = format!("{header}\n{}\n", chunk.join("\n"));
        let response = app
            .clone()
            .oneshot(
                Request::post("/invocations")
                    .header("content-type", "text/csv")
                    .body(Body::from(body))
                    .unwrap(),
            )
            .await
            .unwrap();
        assert!(response.status().is_success());
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        let answer: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        let id = answer["request_id"].as_str().unwrap().to_string();
        let first = i * per_request;
        if !labels.is_empty() {
            feedback.push(serde_json::json!({
                "request_id": id,
                "labels": labels[first..first + chunk.len()],
            }));
        }
        ids.push(id);
    }
    now.store(
        (start + Duration::minutes(rows.len().div_ceil(per_request) as i64)).timestamp_millis(),
        Ordering::Relaxed,
    );
    for item in feedback {
        let response = app
            .clone()
            .oneshot(
                Request::post(format!("/v2/models/{model}/feedback"))
                    .header("content-type", "application/json")
                    .body(Body::from(item.to_string()))
                    .unwrap(),
            )
            .await
            .unwrap();
        assert!(response.status().is_success());
    }
    state.capture.flush().await;
    ids
}

pub(crate) fn request(from: DateTime<Utc>, to: DateTime<Utc>) -> MonitorRequest {
    MonitorRequest {
        model: "mixed".into(),
        window: None,
        from: Some(from.to_rfc3339()),
        to: Some(to.to_rfc3339()),
        at: None,
        retrain: true,
    }
}

#[tokio::test]
async fn the_loop_detects_drift_retrains_and_a_new_version_serves() {
    let d = deploy(MIXED_SPEC).await;
    let baseline: Baseline = d
        .store
        .get_json(&ObjectKey::new(format!("models/mixed/{}/baseline.json", d.version)).unwrap())
        .await
        .unwrap();
    assert_eq!(
        baseline
            .features
            .iter()
            .map(|f| f.name.as_str())
            .collect::<Vec<_>>(),
        ["amount", "count", "member", "color"]
    );
    assert_eq!(baseline.train_rows, 1200, "80 % of 1,500 rows");
    let ingest = d.queues.get(Stage::Ingest).await.unwrap();
    let monitor = Monitor::new(d.store.clone(), Some(ingest.clone()));

    // A calm hour: the same distribution as training.
    let (csv, labels) = traffic(600, 11, false);
    serve(&d.store, &csv, &labels, t0(), 10).await;
    let calm = monitor
        .run(&request(t0(), t0() + Duration::hours(1)))
        .await
        .unwrap();
    let r = &calm.report;
    assert_eq!(r.version, d.version);
    assert_eq!(r.processing.requests, 60);
    assert_eq!(r.processing.rows, 600);
    assert_eq!(r.captures.rows_scored, 600);
    assert_eq!(r.feedback.joined, 600);
    assert_eq!(r.performance.status, "assessed");
    let auc = r.performance.metrics["roc_auc"];
    assert!(
        (auc - baseline.metrics["roc_auc"]).abs() < 0.05,
        "live AUC {auc}"
    );
    assert!(!r.data_drift.dataset_drift, "{:?}", r.data_drift.features);
    assert!(!r.verdict.breach, "{:?}", r.verdict);
    assert_eq!(r.retrain.decision, "not_needed");
    // Every feature is tested by the large-reference default (1,200 training rows > 1,000).
    for f in &r.data_drift.features {
        assert!(f.score.is_some(), "{f:?}");
        let expected = if f.kind == "categorical" || f.note.is_some() {
            "jensen_shannon"
        } else {
            "wasserstein"
        };
        assert_eq!(f.method, expected, "{}", f.name);
    }
    assert!(
        d.store
            .head(&ObjectKey::new(&calm.html_key).unwrap())
            .await
            .unwrap()
            .is_some()
    );
    let emf: serde_json::Value = serde_json::from_str(&calm.emf[0]).unwrap();
    assert_eq!(emf["Breach"], 0);
    assert_eq!(emf["_aws"]["CloudWatchMetrics"][0]["Namespace"], "lambdaml");
    assert_eq!(calm.emf.len(), 1 + 4, "one line per run and per feature");

    // A drifting hour: amount shifted, colors skewed, the label relation changed.
    let start = t0() + Duration::hours(1);
    let (csv, labels) = traffic(600, 12, true);
    serve(&d.store, &csv, &labels, start, 10).await;
    let drift = monitor
        .run(&request(start, start + Duration::hours(1)))
        .await
        .unwrap();
    let r = &drift.report;
    assert!(r.data_drift.dataset_drift, "{:?}", r.data_drift);
    let by_name = |n: &str| r.data_drift.features.iter().find(|f| f.name == n).unwrap();
    assert!(by_name("amount").drifted && by_name("color").drifted);
    assert!(r.performance.breach, "{:?}", r.performance);
    assert!(r.verdict.breach);
    assert_eq!(r.retrain.decision, "sent", "{:?}", r.retrain);
    assert_eq!(r.retrain.labelled_rows, 600);
    assert!(r.prediction_drift.drifted);

    // The retrain message runs the normal pipeline: a new dataset version from the training
    // rows plus the 600 labelled captured rows, and a new model version.
    let handled = lambdaml::stage::drain(
        &d.queues,
        &handlers(&d.store, &d.queues).await,
        &lambdaml::stage::DrainOptions::default(),
        &|_| {},
    )
    .await
    .unwrap();
    let ingest_out = handled
        .iter()
        .find(|h| h.stage == Stage::Ingest && h.outcome == "ok")
        .unwrap_or_else(|| panic!("{handled:?}"));
    assert_eq!(
        ingest_out.detail["rows"],
        1500 + 600,
        "all old rows + the window's"
    );
    let registry = lambdaml::registry::RegistryStore::new(d.store.clone())
        .get("mixed")
        .await
        .unwrap();
    assert_eq!(registry.versions.len(), 2, "{registry:?}");
    let deployed = handled
        .iter()
        .rfind(|h| h.stage == Stage::Deploy && h.outcome == "ok")
        .unwrap();
    // The deploy rule decides: a retrained model on the new relation beats the old one on
    // the new rows' holdout.
    assert_eq!(deployed.detail["verdict"], "promote", "{}", deployed.detail);
    assert_ne!(registry.production.as_deref(), Some(d.version.as_str()));
}

/// A spec whose retraining is bounded: 4 h cooldown, at most 2 a day.
fn storm_spec() -> String {
    format!(
        "{MIXED_SPEC}\n[monitor]\ndrift_share = 0.5\nmin_samples = 50\n\n[retrain]\ncooldown = \"4h\"\nmax_per_day = 2\n"
    )
}

#[tokio::test]
async fn a_drifting_stream_cannot_cause_a_retrain_storm() {
    let d = deploy(&storm_spec()).await;
    let ingest = d.queues.get(Stage::Ingest).await.unwrap();
    let monitor = Monitor::new(d.store.clone(), Some(ingest.clone()));
    let mut decisions = Vec::new();
    // Twenty hours of drifted traffic, monitored every hour.
    for hour in 0..20 {
        let start = t0() + Duration::hours(hour);
        let (csv, labels) = traffic(100, 100 + hour as u64, true);
        serve(&d.store, &csv, &labels, start, 20).await;
        let out = monitor
            .run(&request(start, start + Duration::hours(1)))
            .await
            .unwrap();
        assert!(
            out.report.verdict.breach,
            "hour {hour}: {:?}",
            out.report.verdict
        );
        decisions.push((
            out.report.retrain.decision.clone(),
            out.report.retrain.detail.clone(),
        ));
    }
    let sent: Vec<usize> = decisions
        .iter()
        .enumerate()
        .filter(|(_, d)| d.0 == "sent")
        .map(|(i, _)| i)
        .collect();
    // Hour 0 sends; the cooldown holds hours 1–3; hour 4 sends; then the daily cap of 2.
    assert_eq!(sent, [0, 4], "{decisions:?}");
    assert!(decisions[1].1.starts_with("cooldown"), "{decisions:?}");
    assert!(decisions[9].1.starts_with("cap"), "{decisions:?}");
    // Running a window again that already retrained is deduplicated.
    let again = monitor
        .run(&request(t0(), t0() + Duration::hours(1)))
        .await
        .unwrap();
    assert_eq!(again.report.retrain.decision, "suppressed");
    assert!(
        again.report.retrain.detail.contains("overlapping window"),
        "{:?}",
        again.report.retrain
    );
    // An operator switches retraining off in the live spec: it applies at once, and a change
    // to the retrain settings alone is not a "changed spec".
    let off = storm_spec().replace("max_per_day = 2", "max_per_day = 2\nenabled = false");
    d.store
        .put(
            &ObjectKey::new("specs/mixed.toml").unwrap(),
            bytes::Bytes::from(off),
        )
        .await
        .unwrap();
    let start = t0() + Duration::days(2);
    let (csv, labels) = traffic(100, 300, true);
    serve(&d.store, &csv, &labels, start, 20).await;
    let out = monitor
        .run(&request(start, start + Duration::hours(1)))
        .await
        .unwrap();
    assert_eq!(
        out.report.retrain.decision, "disabled",
        "{:?}",
        out.report.retrain
    );
    assert!(
        !out.report
            .verdict
            .reasons
            .iter()
            .any(|r| r.contains("spec")),
        "{:?}",
        out.report.verdict
    );
    // A change to the features is: "rebuild with new features".
    let rebuilt = storm_spec().replace(
        "unknown = \"reject\"",
        "unknown = \"reject\"\nexclude = [\"count\"]",
    );
    d.store
        .put(
            &ObjectKey::new("specs/mixed.toml").unwrap(),
            bytes::Bytes::from(rebuilt),
        )
        .await
        .unwrap();
    let out = monitor
        .run(&request(start, start + Duration::hours(1)))
        .await
        .unwrap();
    assert!(
        out.report
            .verdict
            .reasons
            .iter()
            .any(|r| r.contains("rebuild with the new features")),
        "{:?}",
        out.report.verdict
    );
    assert_eq!(out.report.retrain.mode.as_deref(), Some("new_features"));

    // Exactly three retrain messages reached the queue, each with its reason: two for the
    // drift, one for the rebuilt spec.
    let received = ingest
        .receive(10, std::time::Duration::from_secs(60))
        .await
        .unwrap();
    let reasons: Vec<String> = received
        .iter()
        .map(|m| match Message::parse(&m.body).unwrap().body {
            StageMessage::Retrain(r) => r.reason,
            other => panic!("not a retrain message: {other:?}"),
        })
        .collect();
    assert_eq!(reasons.len(), 3, "{reasons:?}");
    assert_eq!(
        reasons
            .iter()
            .filter(|r| r.contains("dataset drift"))
            .count(),
        3
    );
    assert_eq!(reasons.iter().filter(|r| r.contains("rebuild")).count(), 1);
}

/// Two monitor runs on the same breached window at once (two schedules, or a schedule and
/// an operator): the retrain rules are checked inside the compare-and-swap that reserves the
/// retrain, so exactly one message is sent and the other run says why it did not send.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_concurrent_monitor_runs_send_one_retrain() {
    let d = deploy(&storm_spec()).await;
    let ingest = d.queues.get(Stage::Ingest).await.unwrap();
    let monitor = Monitor::new(d.store.clone(), Some(ingest.clone()));
    let start = t0();
    let (csv, labels) = traffic(200, 77, true);
    serve(&d.store, &csv, &labels, start, 20).await;
    let end = start + Duration::hours(1);
    let at = |s: i64| MonitorRequest {
        at: Some((end + Duration::seconds(s)).to_rfc3339()),
        ..request(start, end)
    };
    let (first, second) = (at(1), at(2));
    let (one, two) = tokio::join!(monitor.run(&first), monitor.run(&second));
    let (one, two) = (one.unwrap(), two.unwrap());
    let mut decisions = [
        one.report.retrain.decision.as_str(),
        two.report.retrain.decision.as_str(),
    ];
    decisions.sort_unstable();
    assert_eq!(
        decisions,
        ["sent", "suppressed"],
        "{:?} {:?}",
        one.report.retrain,
        two.report.retrain
    );
    let received = ingest
        .receive(10, std::time::Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(received.len(), 1, "one retrain message");
    let state: lambdaml_monitor::RetrainState = d
        .store
        .get_json(&ObjectKey::new("monitoring/mixed/retrain-state.json").unwrap())
        .await
        .unwrap();
    assert_eq!(state.retrains.len(), 1);
    assert!(!state.retrains[0].sending, "the send was confirmed");
}

/// Writes capture records (already in JSONL) as one capture file in the hour of `at`.
async fn put_capture_file(
    store: &Arc<dyn ObjectStore>,
    at: DateTime<Utc>,
    name: &str,
    lines: &str,
) {
    let key = format!(
        "captures/mixed/{}/{}/{name}.jsonl",
        at.format("%Y-%m-%d"),
        at.format("%H")
    );
    store
        .put(
            &ObjectKey::new(key).unwrap(),
            bytes::Bytes::from(lines.to_string()),
        )
        .await
        .unwrap();
}

fn record(
    id: &str,
    at: DateTime<Utc>,
    version: &str,
    rows: Vec<Vec<CapturedValue>>,
    p1: f64,
) -> CaptureRecord {
    let n = rows.len();
    CaptureRecord {
        request_id: id.into(),
        client_id: None,
        timestamp: lambdaml::capture::millis(at),
        model: "mixed".into(),
        version: Some(version.into()),
        role: None,
        protocol: "v2".into(),
        status: 200,
        latency_us: 250,
        rows: n,
        inputs: rows,
        labels: vec!["1".into(); n],
        outputs: (0..n).flat_map(|_| [1.0 - p1, p1]).collect(),
        errors: Vec::new(),
        body: None,
        body_bytes: 100,
    }
}

fn row(amount: f64, color: &str) -> Vec<CapturedValue> {
    vec![
        CapturedValue::Number(amount),
        CapturedValue::Number(3.0),
        CapturedValue::Text("true".into()),
        CapturedValue::Text(color.into()),
    ]
}

#[tokio::test]
async fn bad_input_gets_a_stated_outcome_and_never_a_panic() {
    let d = deploy(MIXED_SPEC).await;
    let monitor = Monitor::new(d.store.clone(), None);
    let hour = t0();

    // An empty window.
    let empty = monitor
        .run(&request(hour, hour + Duration::hours(1)))
        .await
        .unwrap();
    assert_eq!(empty.report.captures.records_in_window, 0);
    assert!(!empty.report.verdict.breach);
    assert_eq!(empty.report.performance.status, "no_labels");
    assert!(
        empty
            .report
            .notes
            .iter()
            .any(|n| n.contains("no capture records")),
        "{:?}",
        empty.report.notes
    );

    // A file with: good records (a constant `amount`, only class "1" in the labels), a
    // truncated line, a record of a version the registry does not know, and a category the
    // baseline never had.
    let mut lines = String::new();
    for i in 0..300 {
        let r = record(
            &format!("r{i}"),
            hour + Duration::seconds(i),
            &d.version,
            vec![row(42.0, "red")],
            0.9,
        );
        lines.push_str(&serde_json::to_string(&r).unwrap());
        lines.push('\n');
    }
    lines.push_str("{\"request_id\":\"cut\",\"timestamp\":\"2030-01-01T00:10");
    lines.push('\n');
    let ghost = record(
        "ghost",
        hour + Duration::seconds(5),
        "0123456789ab",
        vec![row(1.0, "red")],
        0.5,
    );
    lines.push_str(&serde_json::to_string(&ghost).unwrap());
    lines.push('\n');
    let purple = record(
        "purple",
        hour + Duration::seconds(6),
        &d.version,
        vec![row(50.0, "purple")],
        0.5,
    );
    lines.push_str(&serde_json::to_string(&purple).unwrap());
    lines.push('\n');
    put_capture_file(&d.store, hour, "bad", &lines).await;
    // Feedback: every good row labelled "1" (one class), a duplicate, an unknown request id,
    // a label the model cannot predict.
    let mut fb = String::new();
    for i in 0..300 {
        fb.push_str(&format!(
            "{{\"request_id\":\"r{i}\",\"row\":0,\"label\":\"1\",\"received_at\":\"2030-01-01T00:30:00.000Z\",\"source\":\"test\"}}\n"
        ));
    }
    fb.push_str("{\"request_id\":\"r0\",\"row\":0,\"label\":\"0\",\"received_at\":\"2030-01-01T00:30:00.000Z\",\"source\":\"test\"}\n");
    fb.push_str("{\"request_id\":\"nobody\",\"row\":0,\"label\":\"1\",\"received_at\":\"2030-01-01T00:30:00.000Z\",\"source\":\"test\"}\n");
    fb.push_str("{\"request_id\":\"purple\",\"row\":0,\"label\":\"7\",\"received_at\":\"2030-01-01T00:30:00.000Z\",\"source\":\"test\"}\n");
    fb.push_str("not json\n");
    d.store
        .put(
            &ObjectKey::new("feedback/mixed/2030-01-01/00/x.jsonl").unwrap(),
            bytes::Bytes::from(fb),
        )
        .await
        .unwrap();
    // The baseline loses its reference values of `count` (a feature absent from the baseline).
    let bkey = lambdaml::layout::baseline("mixed", &d.version).unwrap();
    let skey = lambdaml::layout::baseline_samples("mixed", &d.version).unwrap();
    let mut baseline = Baseline::decode(
        &d.store.get(&bkey).await.unwrap().bytes,
        &d.store.get(&skey).await.unwrap().bytes,
    )
    .unwrap();
    assert!(!baseline.features[1].sample.is_empty());
    baseline.features[1].sample.clear();
    let (json, samples) = baseline.encode();
    d.store.put(&bkey, bytes::Bytes::from(json)).await.unwrap();
    d.store
        .put(&skey, bytes::Bytes::from(samples))
        .await
        .unwrap();
    let out = monitor
        .run(&request(hour, hour + Duration::hours(1)))
        .await
        .unwrap();
    let r: &Report = &out.report;
    let notes = r.notes.join("\n");
    assert_eq!(r.captures.malformed_lines, 1, "{notes}");
    assert!(notes.contains("truncated or corrupt"), "{notes}");
    assert_eq!(r.captures.unknown_versions.get("0123456789ab"), Some(&1));
    assert!(notes.contains("0123456789ab"), "{notes}");
    assert_eq!(r.captures.rows_scored, 301);
    assert_eq!(r.feedback.duplicates, 1);
    assert!(notes.contains("duplicate feedback"), "{notes}");
    assert_eq!(r.feedback.unmatched, 1, "{:?}", r.feedback);
    assert!(notes.contains("match no captured row"), "{notes}");
    assert_eq!(r.feedback.invalid, 1);
    assert_eq!(r.feedback.malformed_lines, 1);
    assert_eq!(r.feedback.joined, 300);
    // One class among the labels: ROC AUC is undefined, accuracy judges.
    assert_eq!(r.performance.metric, "accuracy", "{:?}", r.performance);
    assert!(
        r.performance.note.contains("only one class"),
        "{}",
        r.performance.note
    );
    // A constant feature is tested (and drifts), without a panic.
    let amount = &r.data_drift.features[0];
    assert!(amount.drifted, "{amount:?}");
    // The feature without reference values is stated, not tested.
    assert!(
        notes.contains("count: the baseline has no values"),
        "{notes}"
    );
    let color = &r.data_quality.features[3];
    assert_eq!(color.unseen, 1);
    assert_eq!(color.unseen_examples.get("purple"), Some(&1));
    assert!(r.data_quality.warnings.iter().any(|w| w.contains("purple")));

    // Three requests are not enough for a verdict: statistics, no drift, no retrain.
    let later = hour + Duration::hours(3);
    let mut few = String::new();
    for i in 0..3 {
        let r = record(
            &format!("few{i}"),
            later + Duration::seconds(i),
            &d.version,
            vec![row(99.0, "blue")],
            0.5,
        );
        few.push_str(&serde_json::to_string(&r).unwrap());
        few.push('\n');
    }
    put_capture_file(&d.store, later, "few", &few).await;
    let out = monitor
        .run(&request(later, later + Duration::hours(1)))
        .await
        .unwrap();
    let r = &out.report;
    assert_eq!(r.captures.rows_scored, 3);
    assert!(
        !r.data_drift.dataset_drift && !r.verdict.breach,
        "{:?}",
        r.data_drift
    );
    let amount = &r.data_drift.features[0];
    assert!(amount.score.is_none() && !amount.drifted, "{amount:?}");
    assert!(
        amount
            .note
            .as_deref()
            .unwrap_or("")
            .contains("fewer than monitor.min_samples"),
        "{amount:?}"
    );
    assert!(
        amount.statistics["wasserstein"].is_some(),
        "the statistics stay in the report"
    );

    // Requests the monitor refuses: with a clear error, never a panic.
    for bad in [
        MonitorRequest {
            model: "nope".into(),
            ..request(hour, hour + Duration::hours(1))
        },
        MonitorRequest {
            model: "../x".into(),
            ..request(hour, hour + Duration::hours(1))
        },
        request(hour + Duration::hours(1), hour),
        MonitorRequest {
            window: Some("soon".into()),
            ..MonitorRequest::new("mixed")
        },
    ] {
        let e = monitor.run(&bad).await.unwrap_err();
        assert!(!e.is_retryable(), "{e}");
    }
}

#[tokio::test]
async fn the_html_report_renders_every_plot_in_headless_chromium() {
    let d = deploy(MIXED_SPEC).await;
    let (csv, labels) = traffic(400, 21, true);
    serve(&d.store, &csv, &labels, t0(), 10).await;
    let out = Monitor::new(d.store.clone(), None)
        .run(&request(t0(), t0() + Duration::hours(1)))
        .await
        .unwrap();
    let html = d
        .store
        .get(&ObjectKey::new(&out.html_key).unwrap())
        .await
        .unwrap()
        .bytes;
    let text = String::from_utf8(html.to_vec()).unwrap();
    // Self-contained: nothing fetched from anywhere.
    assert!(!text.contains("http://") && !text.contains("https://") && !text.contains("src="));
    let plots = text.matches("<svg class=\"plot\"").count();
    assert!(
        plots >= 6,
        "drift scores, distributions, predictions, performance, latency: {plots}"
    );
    for id in [
        "drift-scores",
        "distribution-amount",
        "performance-over-time",
        "latency",
    ] {
        assert!(text.contains(&format!("data-plot=\"{id}\"")), "{id}");
    }

    let chromium = ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|c| {
            std::process::Command::new(c)
                .arg("--version")
                .output()
                .is_ok()
        });
    let Some(chromium) = chromium else {
        assert!(
            std::env::var_os("LAMBDAML_REQUIRE_CHROMIUM").is_none(),
            "LAMBDAML_REQUIRE_CHROMIUM is set but no chromium is installed"
        );
        eprintln!(
            "\n*** SKIPPED the Chromium check: no chromium. `make test` installs it and runs it. ***\n"
        );
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("report.html");
    std::fs::write(&path, &text).unwrap();
    let output = std::process::Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--virtual-time-budget=5000",
            &format!("--user-data-dir={}", dir.path().join("profile").display()),
            "--dump-dom",
        ])
        .arg(format!("file://{}", path.display()))
        .output()
        .unwrap();
    let dom = String::from_utf8_lossy(&output.stdout);
    let attr = |name: &str| -> Option<usize> {
        let i = dom.find(&format!("{name}=\""))? + name.len() + 2;
        dom[i..].split('"').next()?.parse().ok()
    };
    let (rendered, total) = (attr("data-plots-rendered"), attr("data-plots-total"));
    assert_eq!(
        (rendered, total),
        (Some(plots), Some(plots)),
        "Chromium drew {rendered:?} of {total:?} plots; stderr: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The monitor's sample events (events/): a direct request and an EventBridge schedule
/// reach the same runs; anything else is refused saying what was expected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_monitor_answers_its_sample_events() {
    let dir = tempfile::tempdir().unwrap();
    let spec = include_str!("../../examples/specs/breast_cancer.toml");
    let csv = include_bytes!("../../data/sklearn_breast_cancer.csv");
    let (store, version) = deploy_model(dir.path(), spec, "breast-cancer", csv).await;
    let monitor = Monitor::new(store.clone(), None);
    let event = |text: &str| serde_json::from_str::<serde_json::Value>(text).unwrap();

    let direct = monitor
        .handle_event(event(include_str!("../../events/monitor-direct.json")))
        .await
        .unwrap();
    let runs = direct.response["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 1, "{}", direct.response);
    assert_eq!(runs[0]["model"], "breast-cancer");
    let report = runs[0]["report"].as_str().unwrap();
    assert!(
        store
            .get_json::<Report>(&ObjectKey::new(report.to_string()).unwrap())
            .await
            .unwrap()
            .version
            == version
    );
    assert!(!direct.emf.is_empty(), "EMF lines for CloudWatch");

    let scheduled = monitor
        .handle_event(event(include_str!("../../events/monitor-schedule.json")))
        .await
        .unwrap();
    assert_eq!(scheduled.response["runs"][0]["model"], "breast-cancer");
    assert_eq!(scheduled.response["failed"], serde_json::json!([]));

    let err = monitor
        .handle_event(event(include_str!("../../events/ingest-s3.json")))
        .await
        .unwrap_err();
    assert!(err.reason().contains("no S3 events"), "{err}");
    let err = monitor
        .handle_event(serde_json::json!({"modle": "breast-cancer"}))
        .await
        .unwrap_err();
    assert!(err.reason().contains("expected {\"model\": NAME"), "{err}");
    let err = monitor
        .handle_event(serde_json::json!({"model": "nope"}))
        .await
        .unwrap_err();
    assert!(err.reason().contains("nope"), "{err}");
}
