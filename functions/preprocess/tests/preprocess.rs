//! Preprocess, from the outside: splits, the fitted pipeline, idempotence, bad requests.

#![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use lambdaml::features::{Encoder, FeaturePipeline};
use lambdaml::matrix::Matrix;
use lambdaml::message::{IngestRequest, Message, PreprocessRequest, StageMessage};
use lambdaml::queue::{LocalQueue, Queue};
use lambdaml::run::RunManifest;
use lambdaml::stage::{StageError, handle_lambda_event};
use lambdaml::store::{MemoryStore, ObjectKey, ObjectStore, ObjectStoreExt};
use lambdaml_ingest::Ingest;
use lambdaml_preprocess::Preprocess;

const BREAST_CANCER: &[u8] = include_bytes!("../../../data/sklearn_breast_cancer.csv");
const BREAST_SPEC: &str = include_str!("../../../examples/specs/breast_cancer.toml");
const WEATHER: &[u8] = include_bytes!("../../../data/weather_noaa.csv");
const WEATHER_SPEC: &str = include_str!("../../../examples/specs/weather.toml");

fn key(k: &str) -> ObjectKey {
    ObjectKey::new(k).unwrap()
}

struct Env {
    store: Arc<dyn ObjectStore>,
    preprocess_queue: Arc<LocalQueue>,
    train_queue: Arc<LocalQueue>,
    preprocess: Preprocess,
    _dir: tempfile::TempDir,
}

/// Ingests `data` with `spec` and returns the environment and the preprocess request it sent.
async fn ingested(spec: &str, dataset: &str, data: &'static [u8]) -> (Env, PreprocessRequest) {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn ObjectStore> = Arc::new(MemoryStore::new());
    let preprocess_queue = Arc::new(LocalQueue::open(dir.path().join("p"), 3).unwrap());
    let train_queue = Arc::new(LocalQueue::open(dir.path().join("t"), 3).unwrap());
    let model = lambdaml::spec::ModelSpec::parse(spec).unwrap().model.name;
    store
        .put(
            &key(&format!("specs/{model}.toml")),
            Bytes::from(spec.to_string()),
        )
        .await
        .unwrap();
    let raw = key(&format!("raw/{dataset}/data.csv"));
    store.put(&raw, Bytes::from_static(data)).await.unwrap();
    Ingest::new(store.clone(), preprocess_queue.clone())
        .ingest(&IngestRequest {
            key: raw,
            dataset: None,
        })
        .await
        .unwrap();
    let sent = preprocess_queue
        .receive(1, Duration::from_secs(5))
        .await
        .unwrap();
    let request = match Message::parse(&sent[0].body).unwrap().body {
        StageMessage::Preprocess(r) => r,
        other => panic!("{other:?}"),
    };
    let preprocess = Preprocess::new(store.clone(), train_queue.clone());
    (
        Env {
            store,
            preprocess_queue,
            train_queue,
            preprocess,
            _dir: dir,
        },
        request,
    )
}

#[tokio::test]
async fn breast_cancer_splits_like_sklearn_and_standardizes_on_train_only() {
    let (env, request) = ingested(BREAST_SPEC, "breast-cancer", BREAST_CANCER).await;
    let out = env.preprocess.preprocess(&request).await.unwrap();
    assert!(out.created);
    // train_test_split(test_size=0.2) holds out ceil(569 * 0.2) = 114 rows.
    assert_eq!(
        (out.train_rows, out.holdout_rows, out.features),
        (455, 114, 30)
    );

    let manifest: RunManifest = env.store.get_json(&key(&out.manifest)).await.unwrap();
    let load = |name: &str| {
        let k = key(&manifest.artifacts[name]);
        let store = env.store.clone();
        async move { Matrix::from_safetensors(&store.get(&k).await.unwrap().bytes).unwrap() }
    };
    let train = load("train").await;
    let holdout = load("holdout").await;
    assert_eq!((train.rows, train.cols), (455, 30));
    assert_eq!((holdout.rows, holdout.cols), (114, 30));
    // Standardized with the training split's statistics: each training column has mean 0
    // and (population) variance 1; the holdout's are close but not exact.
    for c in 0..30 {
        let col: Vec<f64> = (0..train.rows)
            .map(|r| f64::from(train.row(r)[c]))
            .collect();
        let mean = col.iter().sum::<f64>() / col.len() as f64;
        let var = col.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / col.len() as f64;
        assert!(mean.abs() < 1e-5, "column {c} mean {mean}");
        assert!((var - 1.0).abs() < 1e-4, "column {c} variance {var}");
    }
    assert!(train.y.iter().all(|y| *y == 0.0 || *y == 1.0));
    let pipeline: FeaturePipeline = env
        .store
        .get_json(&key(&manifest.artifacts["pipeline"]))
        .await
        .unwrap();
    assert!(
        pipeline
            .inputs
            .iter()
            .all(|f| matches!(f.encoder, Encoder::Numeric { .. }))
    );

    let sent = env
        .train_queue
        .receive(10, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(sent.len(), 1);
    assert!(sent[0].body.contains(&out.manifest));
}

#[tokio::test]
async fn weather_holds_out_the_most_recent_days() {
    let (env, request) = ingested(WEATHER_SPEC, "weather", WEATHER).await;
    let out = env.preprocess.preprocess(&request).await.unwrap();
    // 18,159 rows less the 2 impossible pressure readings quarantined by the spec's bounds.
    assert_eq!(out.train_rows + out.holdout_rows, 18_157);
    assert_eq!(out.holdout_rows, (18_157f64 * 0.2).ceil() as usize);
    let manifest: RunManifest = env.store.get_json(&key(&out.manifest)).await.unwrap();
    let holdout = Matrix::from_safetensors(
        &env.store
            .get(&key(&manifest.artifacts["holdout"]))
            .await
            .unwrap()
            .bytes,
    )
    .unwrap();
    // The last day of the file is the holdout's last row: the split kept time order.
    // Its temperature (the last line of the CSV) standardizes back to the raw value.
    let pipeline: FeaturePipeline = env
        .store
        .get_json(&key(&manifest.artifacts["pipeline"]))
        .await
        .unwrap();
    let last_line = std::str::from_utf8(WEATHER)
        .unwrap()
        .trim_end()
        .lines()
        .last()
        .unwrap();
    let temperature: f64 = last_line.split(',').next().unwrap().parse().unwrap();
    let Encoder::Numeric { center, scale, .. } = pipeline.inputs[0].encoder else {
        panic!()
    };
    let encoded = f64::from(holdout.row(holdout.rows - 1)[0]);
    assert!(
        (encoded * scale + center - temperature).abs() < 1e-3,
        "{encoded} vs {temperature}"
    );
}

#[tokio::test]
async fn a_redelivered_message_creates_no_second_run() {
    let (env, request) = ingested(BREAST_SPEC, "breast-cancer", BREAST_CANCER).await;
    let first = env.preprocess.preprocess(&request).await.unwrap();
    let before = env.store.list_all("runs/").await.unwrap();
    let second = env.preprocess.preprocess(&request).await.unwrap();
    assert!(!second.created);
    assert_eq!(first.run_id, second.run_id);
    assert_eq!(env.store.list_all("runs/").await.unwrap(), before);
    // Both deliveries ask train to run; train is idempotent on the run id.
    assert_eq!(env.train_queue.stats().await.unwrap().visible, 2);
    let _ = &env.preprocess_queue;
}

fn permanent(result: Result<impl std::fmt::Debug, StageError>) -> String {
    match result {
        Err(StageError::Permanent { reason, .. }) => reason,
        other => panic!("expected a permanent error, got {other:?}"),
    }
}

#[tokio::test]
async fn missing_versions_specs_and_columns_are_clear_errors() {
    let (env, request) = ingested(BREAST_SPEC, "breast-cancer", BREAST_CANCER).await;
    let mut missing = request.clone();
    missing.dataset_version = "0000000000000000".into();
    let reason = permanent(env.preprocess.preprocess(&missing).await);
    assert!(
        reason.contains("version 0000000000000000 does not exist"),
        "{reason}"
    );

    let mut no_spec = request.clone();
    no_spec.spec = key("specs/history/breast-cancer/nope.toml");
    let reason = permanent(env.preprocess.preprocess(&no_spec).await);
    assert!(reason.contains("does not exist"), "{reason}");

    let wrong_column = BREAST_SPEC.replace(
        "[split]",
        "[features]\ninclude = [\"mean radius\", \"mean radiuss\"]\n\n[split]",
    );
    let k = key("specs/history/breast-cancer/typo.toml");
    env.store.put(&k, Bytes::from(wrong_column)).await.unwrap();
    let reason = permanent(
        env.preprocess
            .preprocess(&PreprocessRequest { spec: k, ..request })
            .await,
    );
    assert!(
        reason.contains("features.include") && reason.contains("mean radiuss"),
        "{reason}"
    );
}

#[tokio::test]
async fn lambda_events_from_events_dir() {
    let (env, request) = ingested(BREAST_SPEC, "breast-cancer", BREAST_CANCER).await;
    // The sample events name the real version and spec snapshot of the bundled data.
    let direct: serde_json::Value =
        serde_json::from_str(include_str!("../../../events/preprocess-direct.json")).unwrap();
    assert_eq!(
        direct["dataset_version"],
        request.dataset_version.as_str(),
        "events/preprocess-direct.json is stale"
    );
    assert_eq!(direct["spec"], request.spec.as_str());
    let out = handle_lambda_event(&env.preprocess, direct, None)
        .await
        .unwrap();
    assert_eq!(out["train_rows"], 455);

    let batch: serde_json::Value =
        serde_json::from_str(include_str!("../../../events/preprocess-sqs.json")).unwrap();
    let out = handle_lambda_event(&env.preprocess, batch, None)
        .await
        .unwrap();
    assert_eq!(out, serde_json::json!({"batchItemFailures": []}));

    // An ingest message on the preprocess function is refused, not run.
    let wrong =
        serde_json::json!({"version": 1, "run_id": "r", "stage": "ingest", "key": "raw/a/b.csv"});
    let reason = permanent(handle_lambda_event(&env.preprocess, wrong, None).await);
    assert!(
        reason.contains("ingest message reached the preprocess stage"),
        "{reason}"
    );
}
