//! Late labels end to end: labels that arrive after their window was judged re-judge that
//! window in the next run (its report kept as judged, `late-labels.json` beside it) and join
//! the next retrain's data.

#![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::http::Request;
use chrono::{DateTime, Duration, Utc};
use lambdaml::capture::Clock;
use lambdaml::message::Stage;
use lambdaml::monitoring::LateUpdate;
use lambdaml::store::{ObjectKey, ObjectStore, ObjectStoreExt};
use lambdaml_e2e::MIXED_SPEC;
use lambdaml_monitor::Monitor;
use lambdaml_score::{ScoreConfig, ScoreState, router};
use tower::ServiceExt;

use crate::monitor::{deploy, request, serve, t0, traffic};

/// Posts `labels` for the rows of requests `ids` (`per_request` rows each) as if at `at`.
async fn post_labels_at(
    store: &Arc<dyn ObjectStore>,
    ids: &[String],
    labels: &[String],
    per_request: usize,
    at: DateTime<Utc>,
) {
    let state = ScoreState::with_clock(
        store.clone(),
        ScoreConfig {
            default_model: Some("mixed".into()),
            ..ScoreConfig::default()
        },
        Instant::now(),
        Clock::new(move || at),
    );
    let app = router(state.clone());
    for (i, id) in ids.iter().enumerate() {
        let chunk = &labels[i * per_request..((i + 1) * per_request).min(labels.len())];
        let body = serde_json::json!({ "request_id": id, "labels": chunk });
        let response = app
            .clone()
            .oneshot(
                Request::post("/v2/models/mixed/feedback")
                    .header("content-type", "application/json")
                    .body(Body::from(body.to_string()))
                    .unwrap(),
            )
            .await
            .unwrap();
        assert!(response.status().is_success());
    }
    state.capture.flush().await;
}

#[tokio::test]
async fn late_labels_re_judge_their_window_and_join_the_next_retrain() {
    let d = deploy(MIXED_SPEC).await;
    let ingest = d.queues.get(Stage::Ingest).await.unwrap();
    let monitor = Monitor::new(d.store.clone(), Some(ingest));

    // Hour 1: traffic whose labels will turn out to follow another relation, no labels yet.
    let (csv, labels) = traffic(400, 41, false);
    let flipped: Vec<String> = labels
        .iter()
        .map(|l| if l == "1" { "0".into() } else { "1".into() })
        .collect();
    let ids = serve(&d.store, &csv, &[], t0(), 10).await;
    let first = monitor
        .run(&request(t0(), t0() + Duration::hours(1)))
        .await
        .unwrap();
    assert_eq!(first.report.performance.status, "no_labels");
    assert!(first.report.late_labels.is_empty());

    // Hour 2: drifted traffic, no labels of its own; hour 1's labels arrive during it.
    let start = t0() + Duration::hours(1);
    let (csv2, _) = traffic(300, 42, true);
    serve(&d.store, &csv2, &[], start, 10).await;
    post_labels_at(&d.store, &ids, &flipped, 10, start + Duration::minutes(45)).await;
    let second = monitor
        .run(&request(start, start + Duration::hours(1)))
        .await
        .unwrap();
    let r = &second.report;
    assert_eq!(r.feedback.joined, 0, "none of them are this window's rows");
    assert_eq!(r.late_labels.len(), 1, "{:?}", r.late_labels);
    let late = &r.late_labels[0];
    assert_eq!(late.report, first.report_key);
    assert_eq!(
        (late.late_rows, late.labelled_then, late.labelled_now),
        (400, 0, 400)
    );
    assert_eq!(
        (late.status_then.as_str(), late.status_now.as_str()),
        ("no_labels", "assessed")
    );
    assert!(late.then.is_none());
    assert!(late.now.unwrap() < 0.3, "flipped labels: {late:?}");
    assert!(late.breach_now);
    assert!(
        r.notes
            .iter()
            .any(|n| n.contains("arrived after their window was judged"))
    );
    // The earlier report stays as judged; the update sits beside it.
    let kept: lambdaml::monitoring::Report = d
        .store
        .get_json(&ObjectKey::new(&first.report_key).unwrap())
        .await
        .unwrap();
    assert_eq!(kept.performance.status, "no_labels");
    let update: LateUpdate = d
        .store
        .get_json(&lambdaml::layout::late_labels(&first.report_key).unwrap())
        .await
        .unwrap();
    assert_eq!(update.by_report, second.report_key);
    assert_eq!(update.now.labelled_rows, 400);
    assert_eq!(update.then.status, "no_labels");
    // Hour 2 drifted: the retrain it sends learns from the 400 late-labelled rows.
    assert!(r.verdict.breach, "{:?}", r.verdict);
    assert_eq!(r.retrain.decision, "sent", "{:?}", r.retrain);
    assert_eq!(r.retrain.labelled_rows, 400);
    let html = String::from_utf8(
        d.store
            .get(&ObjectKey::new(&second.html_key).unwrap())
            .await
            .unwrap()
            .bytes
            .to_vec(),
    )
    .unwrap();
    assert!(html.contains("<h2>Late labels</h2>"));

    // Turned off, the same late labels are only counted as unmatched.
    let spec = format!("{MIXED_SPEC}\n[monitor]\nlate_labels = 0\n");
    d.store
        .put(
            &ObjectKey::new("specs/mixed.toml").unwrap(),
            bytes::Bytes::from(spec),
        )
        .await
        .unwrap();
    let third = monitor
        .run(&request(start, start + Duration::hours(1)))
        .await
        .unwrap();
    assert!(third.report.late_labels.is_empty());
    assert_eq!(third.report.feedback.unmatched, 400);
}
