//! Monitoring before the labels arrive, end to end: a version's baseline carries its CBPE
//! estimator (fitted on the holdout) and its PCA reconstruction model (fitted on the
//! training rows); the monitor estimates every window's performance from the live
//! probabilities alone, and an estimated drop with no labels to judge it is a breach that
//! retrains.

#![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.

use chrono::Duration;
use lambdaml::baseline::Baseline;
use lambdaml::dataset::SplitMix64;
use lambdaml::message::Stage;
use lambdaml::store::{ObjectKey, ObjectStoreExt};
use lambdaml_e2e::MIXED_SPEC;
use lambdaml_monitor::Monitor;

use crate::monitor::{deploy, request, serve, t0, traffic};

/// Rows on the model's decision boundary: `amount` chosen so the true score sits at the
/// threshold, the noise alone deciding the label. The model is unsure of every row, and
/// `amount` now moves with the other features. Returns (CSV without the label, labels).
fn boundary(rows: usize, seed: u64) -> (String, Vec<String>) {
    let mut rng = SplitMix64::new(seed);
    let mut csv = String::from("amount,count,member,color\n");
    let mut labels = Vec::new();
    let colors = ["red", "green", "blue"];
    while labels.len() < rows {
        let count = (rng.next_f64() * 10.0) as i64;
        let member = rng.next_f64() < 0.4;
        let color = colors[(rng.next_f64() * 3.0) as usize % 3];
        let rest = -(count as f64) / 5.0
            + if member { 1.0 } else { -0.5 }
            + if color == "red" { 0.8 } else { 0.0 };
        let amount = 50.0 * (0.5 - rest);
        if !(0.0..=100.0).contains(&amount) {
            continue;
        }
        let score = amount / 50.0 + rest + (rng.next_f64() - 0.5) * 1.5;
        labels.push(u8::from(score > 0.5).to_string());
        csv.push_str(&format!("{amount:.3},{count},{member},{color}\n"));
    }
    (csv, labels)
}

#[tokio::test]
async fn an_estimated_drop_without_labels_breaches_and_retrains() {
    let d = deploy(MIXED_SPEC).await;
    let baseline: Baseline = d
        .store
        .get_json(&ObjectKey::new(format!("models/mixed/{}/baseline.json", d.version)).unwrap())
        .await
        .unwrap();
    let cbpe = baseline
        .estimator
        .as_ref()
        .expect("a classifier's estimator");
    assert_eq!((cbpe.classes, cbpe.reference_rows), (2, 300));
    let pca = baseline
        .reconstruction
        .as_ref()
        .expect("the reconstruction model");
    assert_eq!(pca.features.len(), 4);
    assert_eq!(pca.rows, 1200, "fitted on the training rows");
    let ingest = d.queues.get(Stage::Ingest).await.unwrap();
    let monitor = Monitor::new(d.store.clone(), Some(ingest));

    // A calm hour, no labels: estimated like the holdout, no breach.
    let (csv, _) = traffic(600, 21, false);
    serve(&d.store, &csv, &[], t0(), 10).await;
    let calm = monitor
        .run(&request(t0(), t0() + Duration::hours(1)))
        .await
        .unwrap()
        .report;
    assert_eq!(calm.performance.status, "no_labels");
    let e = calm
        .performance
        .estimated
        .clone()
        .expect("estimated section");
    assert_eq!((e.method.as_str(), e.rows), ("cbpe", 600));
    assert_eq!(e.metric, "roc_auc", "the promotion metric");
    let holdout_accuracy = baseline.metrics["accuracy"];
    let acc = e.metrics["accuracy"];
    assert!(
        (acc.value - holdout_accuracy).abs() < 0.05,
        "estimated {acc:?} vs holdout {holdout_accuracy}"
    );
    assert!(acc.sampling_error.unwrap() > 0.0 && acc.lower.unwrap() < acc.value);
    assert!(!e.breach && !e.decides, "{e:?}");
    assert!(e.realized.is_empty(), "no labels, nothing realized: {e:?}");
    let m = calm
        .multivariate_drift
        .clone()
        .expect("multivariate section");
    assert_eq!((m.rows, m.components as usize <= 4), (600, true));
    assert!(!m.drifted, "{m:?}");
    assert!(!calm.verdict.breach, "{:?}", calm.verdict);

    // An hour on the decision boundary, no labels: no single feature need drift much, but the
    // model is unsure of every row — the estimate drops, and that alone is a breach.
    let start = t0() + Duration::hours(1);
    let (csv, labels) = boundary(600, 22);
    serve(&d.store, &csv, &[], start, 10).await;
    let run = monitor
        .run(&request(start, start + Duration::hours(1)))
        .await
        .unwrap()
        .report;
    let e = run.performance.estimated.clone().unwrap();
    let acc = e.metrics["accuracy"].value;
    assert!(acc < holdout_accuracy - 0.15, "estimated accuracy {acc}");
    assert!(e.breach && e.decides, "{e:?}");
    assert!(
        run.verdict
            .kinds
            .contains(&"estimated_performance".to_string()),
        "{:?}",
        run.verdict
    );
    assert!(
        run.verdict
            .reasons
            .iter()
            .any(|r| r.starts_with("estimated performance drop")),
        "{:?}",
        run.verdict.reasons
    );
    assert_eq!(run.retrain.decision, "sent", "{:?}", run.retrain);
    // amount now follows the other features: the reconstruction error is outside its band.
    let m = run.multivariate_drift.clone().unwrap();
    assert!(m.drifted && !m.breach, "reported only by default: {m:?}");

    // The same boundary traffic with its labels: the labels judge the window, the estimate
    // is reported beside the realized accuracy and does not decide.
    let later = start + Duration::hours(2);
    serve(&d.store, &csv, &labels, later, 10).await;
    let outcome = monitor
        .run(&request(later, later + Duration::hours(1)))
        .await
        .unwrap();
    let labelled = outcome.report;
    assert_eq!(labelled.performance.status, "assessed");
    let e = labelled.performance.estimated.clone().unwrap();
    assert!(e.breach && !e.decides, "{e:?}");
    let realized = e.realized["accuracy"];
    // The drop was real: the labels show it too (CBPE, trusting the holdout's calibration
    // where training had few rows, is a little optimistic on this window).
    assert!(
        realized < holdout_accuracy - 0.15 && (realized - e.metrics["accuracy"].value).abs() < 0.15,
        "realized {realized} vs estimated {:?}",
        e.metrics["accuracy"]
    );
    assert!(
        !labelled
            .verdict
            .kinds
            .contains(&"estimated_performance".to_string())
    );
    let html = String::from_utf8(
        d.store
            .get(&ObjectKey::new(&outcome.html_key).unwrap())
            .await
            .unwrap()
            .bytes
            .to_vec(),
    )
    .unwrap();
    assert!(html.contains("Estimated performance (CBPE, no labels)"));
    assert!(html.contains("Multivariate drift (PCA reconstruction)"));

    // Typos in the new settings are refused with the value named.
    for bad in ["estimate = \"sometimes\"", "multivariate = \"alert\""] {
        let e = lambdaml::spec::ModelSpec::parse(&format!("{MIXED_SPEC}\n[monitor]\n{bad}\n"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("sometimes") || e.contains("alert"), "{e}");
    }
}

const NOISY_SPEC: &str = r#"
[model]
name = "noisy"

[dataset]
name = "noisy"
label = "y"

[task]
kind = "regression"

[split]
method = "random"
holdout = 0.3
seed = 3

[train]
family = "linear"

[promotion]
metric = "rmse"

[monitor]
min_samples = 100
"#;

/// `y = 3·x1 + 2·x2 + noise`, the noise six times wider in group `b` than in `a`;
/// `share_b` of the rows are in `b`. Returns (CSV with the label, CSV without, labels).
fn noisy(rows: usize, seed: u64, share_b: f64) -> (String, String, Vec<String>) {
    let mut rng = SplitMix64::new(seed);
    let mut with = String::from("x1,x2,group,y\n");
    let mut without = String::from("x1,x2,group\n");
    let mut labels = Vec::new();
    for _ in 0..rows {
        let (x1, x2) = (rng.next_f64() * 10.0, rng.next_f64() * 10.0);
        let b = rng.next_f64() < share_b;
        let u: f64 = (0..4).map(|_| rng.next_f64() - 0.5).sum();
        let y = 3.0 * x1 + 2.0 * x2 + u * if b { 12.0 } else { 2.0 };
        let group = if b { "b" } else { "a" };
        with.push_str(&format!("{x1:.4},{x2:.4},{group},{y:.4}\n"));
        without.push_str(&format!("{x1:.4},{x2:.4},{group}\n"));
        labels.push(format!("{y:.4}"));
    }
    (with, without, labels)
}

#[tokio::test]
async fn a_regressor_s_loss_is_estimated_without_labels() {
    let dir = tempfile::tempdir().unwrap();
    let (train, _, _) = noisy(2000, 31, 0.5);
    let (store, version) =
        lambdaml_e2e::deploy_model(dir.path(), NOISY_SPEC, "noisy", train.as_bytes()).await;
    let baseline: Baseline = store
        .get_json(&ObjectKey::new(format!("models/noisy/{version}/baseline.json")).unwrap())
        .await
        .unwrap();
    assert!(baseline.estimator.is_none(), "no CBPE for a regressor");
    let dle = baseline.loss_estimator.as_ref().expect("a regressor's DLE");
    assert_eq!(dle.reference_rows, 600);
    let holdout_rmse = baseline.metrics["rmse"];
    let monitor = Monitor::new(store.clone(), None);
    let run = |from: chrono::DateTime<chrono::Utc>| {
        let mut r = request(from, from + Duration::hours(1));
        r.model = "noisy".into();
        r
    };

    // The training mix, no labels: the estimated RMSE is the holdout's, give or take.
    let (_, csv, _) = noisy(400, 32, 0.5);
    crate::monitor::serve_model(&store, "noisy", &csv, &[], t0(), 10).await;
    let calm = monitor.run(&run(t0())).await.unwrap().report;
    let e = calm
        .performance
        .estimated
        .clone()
        .expect("estimated section");
    assert_eq!(
        (e.method.as_str(), e.metric.as_str(), e.rows),
        ("dle", "rmse", 400)
    );
    let rmse = e.metrics["rmse"].value;
    assert!(
        (rmse / holdout_rmse - 1.0).abs() < 0.2,
        "estimated {rmse} vs holdout {holdout_rmse}"
    );
    assert!(!e.breach, "{e:?}");

    // Mostly the noisy group, no labels: the inputs alone say the errors will be larger.
    let later = t0() + Duration::hours(1);
    let (_, csv, labels) = noisy(400, 33, 0.9);
    crate::monitor::serve_model(&store, "noisy", &csv, &[], later, 10).await;
    let noisy_run = monitor.run(&run(later)).await.unwrap().report;
    let e = noisy_run.performance.estimated.clone().unwrap();
    let rmse = e.metrics["rmse"].value;
    assert!(
        rmse > 1.3 * holdout_rmse,
        "estimated {rmse} vs holdout {holdout_rmse}"
    );
    assert!(e.breach && e.decides, "{e:?}");
    assert!(
        noisy_run
            .verdict
            .kinds
            .contains(&"estimated_performance".to_string())
    );
    // The labels, when they come, agree.
    let last = t0() + Duration::hours(2);
    crate::monitor::serve_model(&store, "noisy", &csv, &labels, last, 10).await;
    let labelled = monitor.run(&run(last)).await.unwrap().report;
    let e = labelled.performance.estimated.clone().unwrap();
    let realized = e.realized["rmse"];
    assert!(
        (e.metrics["rmse"].value / realized - 1.0).abs() < 0.2,
        "estimated {:?} vs realized {realized}",
        e.metrics["rmse"]
    );
}
