//! The score function end to end: real models trained by the pipeline, served by the real
//! router — in-process, over TCP with `serve`, and through `lambda_http`'s event conversion.

#![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::Request;
use lambdaml::capture::{CaptureConfig, CaptureRecord, FeedbackRecord};
use lambdaml::features::RawValue;
use lambdaml::model::{Model, ModelManifest};
use lambdaml::registry::RegistryStore;
use lambdaml::store::{ObjectKey, ObjectStore, ObjectStoreExt};
use lambdaml_e2e::{HttpClient, MIXED_SPEC, deploy_model, mixed_csv};
use lambdaml_score::{ScoreConfig, ScoreState, router};
use serde_json::{Value, json};
use tower::ServiceExt;

const BREAST_CANCER: &[u8] = include_bytes!("../../data/sklearn_breast_cancer.csv");
const BREAST_SPEC: &str = include_str!("../../examples/specs/breast_cancer.toml");
const CORPUS: &str = include_str!("../corpus/score_bad_requests.json");

pub(crate) struct Fixture {
    _dir: tempfile::TempDir,
    pub(crate) store: Arc<dyn ObjectStore>,
    breast: String,
    pub(crate) mixed: Vec<String>,
}

/// Trains once per test binary (on its own runtime): breast cancer, and the mixed model
/// twice (two versions, the first in production).
pub(crate) fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        std::thread::spawn(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap()
                .block_on(async {
                    let dir = tempfile::tempdir().unwrap();
                    let (store, breast) =
                        deploy_model(dir.path(), BREAST_SPEC, "breast-cancer", BREAST_CANCER).await;
                    let (_, first) =
                        deploy_model(dir.path(), MIXED_SPEC, "mixed", mixed_csv(400).as_bytes())
                            .await;
                    // A second version from other data; whatever deploy decided, put the
                    // first back in production so tests start from a known state.
                    let (_, _) = deploy_model(
                        dir.path(),
                        &MIXED_SPEC.replace("seed = 1", "seed = 2"),
                        "mixed",
                        mixed_csv(600).as_bytes(),
                    )
                    .await;
                    let registry = RegistryStore::new(store.clone());
                    let (r, _) = registry
                        .update("mixed", |r| {
                            if r.production.as_deref() != Some(first.as_str()) {
                                r.promote(&first, "test", "known state")?;
                            }
                            Ok(())
                        })
                        .await
                        .unwrap();
                    let mut mixed: Vec<String> = r.versions.keys().cloned().collect();
                    mixed.sort_by_key(|v| v != &first);
                    assert_eq!(mixed.len(), 2, "two versions of mixed: {r:?}");
                    Fixture {
                        _dir: dir,
                        store,
                        breast,
                        mixed,
                    }
                })
        })
        .join()
        .unwrap()
    })
}

pub(crate) fn test_config() -> ScoreConfig {
    ScoreConfig {
        default_model: Some("mixed".into()),
        max_rows: 100,
        max_body_bytes: 64 * 1024,
        refresh: Duration::from_secs(3600),
        ..ScoreConfig::default()
    }
}

pub(crate) fn state_with(store: Arc<dyn ObjectStore>, config: ScoreConfig) -> Arc<ScoreState> {
    ScoreState::new(store, config, Instant::now())
}

pub(crate) struct Answer {
    pub(crate) status: u16,
    pub(crate) headers: axum::http::HeaderMap,
    pub(crate) body: Vec<u8>,
}

impl Answer {
    pub(crate) fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
}

pub(crate) async fn call(
    state: &Arc<ScoreState>,
    method: &str,
    path: &str,
    content_type: Option<&str>,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> Answer {
    let mut request = Request::builder().method(method).uri(path);
    if let Some(ct) = content_type {
        request = request.header("content-type", ct);
    }
    for (n, v) in headers {
        request = request.header(*n, *v);
    }
    let response = router(state.clone())
        .oneshot(request.body(Body::from(body)).unwrap())
        .await
        .unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap()
        .to_vec();
    Answer {
        status,
        headers,
        body,
    }
}

pub(crate) async fn post_json(state: &Arc<ScoreState>, path: &str, body: &Value) -> Answer {
    call(
        state,
        "POST",
        path,
        Some("application/json"),
        &[],
        body.to_string().into_bytes(),
    )
    .await
}

fn breast_rows(n: usize) -> (Vec<String>, Vec<Vec<f64>>) {
    let text = std::str::from_utf8(BREAST_CANCER).unwrap();
    let mut lines = text.lines();
    let header: Vec<String> = lines
        .next()
        .unwrap()
        .split(',')
        .map(str::to_string)
        .collect();
    let rows = lines
        .take(n)
        .map(|l| l.split(',').map(|v| v.parse().unwrap()).collect())
        .collect();
    (header, rows)
}

/// The probability of class 1 per row, from either response shape.
fn probabilities(v: &Value) -> Vec<f64> {
    if let Some(preds) = v.get("predictions") {
        return preds
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["probabilities"]["1"].as_f64().unwrap())
            .collect();
    }
    let out = v["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["name"] == "probabilities")
        .unwrap();
    out["data"]
        .as_array()
        .unwrap()
        .chunks(2)
        .map(|p| p[1].as_f64().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_protocol_form_gives_the_models_own_predictions() {
    let f = fixture();
    let state = state_with(
        f.store.clone(),
        ScoreConfig {
            default_model: Some("breast-cancer".into()),
            ..ScoreConfig::default()
        },
    );
    let (header, rows) = breast_rows(5);
    let features = &header[..30];
    let rows: Vec<Vec<f64>> = rows.into_iter().map(|r| r[..30].to_vec()).collect();

    // What the model itself says, through the candle model and the fitted pipeline.
    let manifest: ModelManifest = f
        .store
        .get_json(
            &ObjectKey::new(format!("models/breast-cancer/{}/manifest.json", f.breast)).unwrap(),
        )
        .await
        .unwrap();
    let weights = f
        .store
        .get(&ObjectKey::new(manifest.artifacts["weights"].clone()).unwrap())
        .await
        .unwrap()
        .bytes;
    let model = Model::from_safetensors(manifest.architecture.clone(), &weights).unwrap();
    let mut x = vec![0.0f32; rows.len() * manifest.pipeline.output_dim];
    for (row, out) in rows.iter().zip(x.chunks_mut(manifest.pipeline.output_dim)) {
        let raw: Vec<RawValue<'_>> = manifest
            .pipeline
            .inputs
            .iter()
            .map(|i| RawValue::Number(row[features.iter().position(|f| *f == i.name).unwrap()]))
            .collect();
        manifest.pipeline.transform_into(&raw, out).unwrap();
    }
    let expected: Vec<f64> = model
        .predict_rows(&x, rows.len())
        .unwrap()
        .chunks(2)
        .map(|p| p[1])
        .collect();

    let records: Vec<Value> = rows
        .iter()
        .map(|r| {
            Value::Object(
                features
                    .iter()
                    .cloned()
                    .zip(r.iter().map(|v| json!(v)))
                    .collect(),
            )
        })
        .collect();
    let columns: serde_json::Map<String, Value> = features
        .iter()
        .enumerate()
        .map(|(i, f)| {
            (
                f.clone(),
                json!(rows.iter().map(|r| r[i]).collect::<Vec<_>>()),
            )
        })
        .collect();
    let per_feature: Vec<Value> = features
        .iter()
        .enumerate()
        .map(|(i, f)| {
            json!({"name": f, "shape": [rows.len()], "datatype": "FP64",
                   "data": rows.iter().map(|r| r[i]).collect::<Vec<_>>()})
        })
        .collect();
    let bodies = [
        (
            "/v2/models/breast-cancer/infer",
            json!({"id": "client-1", "inputs": per_feature}),
        ),
        (
            "/v2/models/breast-cancer/infer",
            json!({"inputs": [{"name": "input", "shape": [rows.len(), 30], "datatype": "FP64",
                               "data": rows}]}),
        ),
        (
            "/invocations",
            json!({"dataframe_split": {"columns": features, "data": rows}}),
        ),
        ("/invocations", json!({"dataframe_records": records})),
        ("/invocations", json!({"instances": records})),
        ("/invocations", json!({"instances": rows})),
        ("/invocations", json!({"inputs": columns})),
        (
            "/invocations?model=breast-cancer",
            json!({"inputs": rows, "params": {}}),
        ),
    ];
    for (path, body) in &bodies {
        let a = post_json(&state, path, body).await;
        assert_eq!(a.status, 200, "{path} {}", String::from_utf8_lossy(&a.body));
        let v = a.json();
        let got = probabilities(&v);
        assert_eq!(got.len(), expected.len());
        for (g, e) in got.iter().zip(&expected) {
            assert!((g - e).abs() < 1e-6, "{path}: {g} vs {e} ({body})");
        }
        let request_id = a.headers["x-request-id"].to_str().unwrap();
        let version = v.get("model_version").and_then(Value::as_str).unwrap();
        assert_eq!(version, f.breast);
        if path.starts_with("/v2") {
            assert_eq!(v["model_name"], "breast-cancer");
            assert_eq!(v["parameters"]["request_id"], request_id);
            let labels = &v["outputs"][0];
            assert_eq!(labels["name"], "label");
            for (l, p) in labels["data"].as_array().unwrap().iter().zip(&expected) {
                assert_eq!(l, if *p >= 0.5 { "1" } else { "0" });
            }
        } else {
            assert_eq!(v["request_id"], request_id);
        }
    }
    // The client's id is echoed, as the protocol says.
    let a = post_json(&state, bodies[0].0, &bodies[0].1).await;
    assert_eq!(a.json()["id"], "client-1");

    // CSV with the label column, as the dataset file has it (the label is ignored).
    let csv: String = std::str::from_utf8(BREAST_CANCER)
        .unwrap()
        .lines()
        .take(6)
        .map(|l| format!("{l}\n"))
        .collect();
    let a = call(
        &state,
        "POST",
        "/invocations",
        Some("text/csv"),
        &[],
        csv.into_bytes(),
    )
    .await;
    assert_eq!(a.status, 200, "{}", String::from_utf8_lossy(&a.body));
    for (g, e) in probabilities(&a.json()).iter().zip(&expected) {
        assert!((g - e).abs() < 1e-6);
    }

    // The binary tensor extension (tritonclient's default): one FP32 [5, 30] tensor.
    let header_json = json!({"inputs": [{"name": "input", "shape": [5, 30], "datatype": "FP32",
                                         "parameters": {"binary_data_size": 5 * 30 * 4}}]})
    .to_string();
    let mut body = header_json.clone().into_bytes();
    for r in &rows {
        for v in r {
            body.extend_from_slice(&(*v as f32).to_le_bytes());
        }
    }
    let len = header_json.len().to_string();
    let a = call(
        &state,
        "POST",
        "/v2/models/breast-cancer/infer",
        Some("application/octet-stream"),
        &[("inference-header-content-length", &len)],
        body,
    )
    .await;
    assert_eq!(a.status, 200, "{}", String::from_utf8_lossy(&a.body));
    for (g, e) in probabilities(&a.json()).iter().zip(&expected) {
        assert!((g - e).abs() < 1e-4, "f32 inputs: {g} vs {e}");
    }

    // Only the outputs asked for.
    let mut only = bodies[0].1.clone();
    only["outputs"] = json!([{"name": "label"}]);
    let v = post_json(&state, bodies[0].0, &only).await.json();
    assert_eq!(v["outputs"].as_array().unwrap().len(), 1);

    // Metadata describes the inputs and outputs the model really has.
    let meta = call(&state, "GET", "/v2/models/breast-cancer", None, &[], vec![]).await;
    assert_eq!(meta.status, 200);
    let meta = meta.json();
    let inputs: Vec<&str> = meta["inputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        inputs,
        features.iter().map(String::as_str).collect::<Vec<_>>()
    );
    assert_eq!(meta["outputs"][1]["shape"], json!([-1, 2]));
    assert_eq!(meta["versions"], json!([f.breast]));
    let path = format!("/v2/models/breast-cancer/versions/{}", f.breast);
    assert_eq!(
        call(&state, "GET", &path, None, &[], vec![]).await.status,
        200
    );
    for path in [
        "/v2",
        "/v2/health/live",
        "/v2/health/ready",
        "/v2/models/breast-cancer/ready",
        "/ping",
    ] {
        assert_eq!(
            call(&state, "GET", path, None, &[], vec![]).await.status,
            200,
            "{path}"
        );
    }
    let models = call(&state, "GET", "/v2/models", None, &[], vec![])
        .await
        .json();
    assert_eq!(models["models"], json!(["breast-cancer", "mixed"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_malformed_request_in_the_corpus_gets_its_4xx_naming_the_field() {
    let f = fixture();
    let state = state_with(f.store.clone(), test_config());
    // The corpus is about the requests; the good row must itself be accepted.
    let good = post_json(
        &state,
        "/invocations",
        &json!({"dataframe_records": [{"amount": 12.5, "count": 3, "member": true, "color": "red"}]}),
    )
    .await;
    assert_eq!(good.status, 200, "{}", String::from_utf8_lossy(&good.body));

    let cases: Vec<Value> = serde_json::from_str(CORPUS).unwrap();
    assert!(cases.len() >= 100, "at least 100 malformed requests");
    let mut failures = Vec::new();
    for c in &cases {
        let name = c["name"].as_str().unwrap();
        let mut body = c["body"].as_str().unwrap().to_string();
        if let Some(pad) = c.get("pad") {
            body.push_str(
                &pad["text"]
                    .as_str()
                    .unwrap()
                    .repeat(pad["times"].as_u64().unwrap() as usize),
            );
        }
        let headers: Vec<(String, String)> = c["headers"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.as_str().unwrap().to_string()))
            .collect();
        let headers: Vec<(&str, &str)> = headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let a = call(
            &state,
            c["method"].as_str().unwrap(),
            c["path"].as_str().unwrap(),
            c["content_type"].as_str(),
            &headers,
            body.into_bytes(),
        )
        .await;
        let expected = c["status"].as_u64().unwrap() as u16;
        let v: Value = match serde_json::from_slice(&a.body) {
            Ok(v) => v,
            Err(_) => {
                failures.push(format!(
                    "{name}: body is not JSON: {}",
                    String::from_utf8_lossy(&a.body)
                ));
                continue;
            }
        };
        if a.status != expected {
            failures.push(format!(
                "{name}: status {} (expected {expected}): {v}",
                a.status
            ));
            continue;
        }
        if v["error"].as_str().is_none_or(str::is_empty) || v["request_id"].as_str().is_none() {
            failures.push(format!("{name}: not the error shape: {v}"));
        }
        if let Some(field) = c["field"].as_str() {
            let named = v["details"]
                .as_array()
                .unwrap()
                .iter()
                .any(|d| d["field"] == field);
            if !named {
                failures.push(format!("{name}: details do not name {field:?}: {v}"));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );

    // Every scoring request was captured, the rejected ones with their errors and body.
    state.capture.flush().await;
    let scoring = cases
        .iter()
        .filter(|c| c["method"] == "POST")
        .filter(|c| {
            let p = c["path"].as_str().unwrap();
            !p.contains("/feedback") && !p.ends_with("/predict")
        })
        .count();
    let rejected: Vec<CaptureRecord> = captures(f.store.as_ref(), "captures/")
        .await
        .into_iter()
        .filter(|r| r.status >= 400)
        .collect();
    assert!(
        rejected.len() >= scoring,
        "{} rejections captured, {scoring} sent",
        rejected.len()
    );
    assert!(
        rejected
            .iter()
            .all(|r| !r.errors.is_empty() && r.body.is_some())
    );
}

pub(crate) async fn captures(store: &dyn ObjectStore, prefix: &str) -> Vec<CaptureRecord> {
    let mut out = Vec::new();
    for meta in store.list_all(prefix).await.unwrap() {
        let bytes = store.get(&meta.key).await.unwrap().bytes;
        for line in bytes.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            out.push(serde_json::from_slice(line).unwrap());
        }
    }
    out
}

/// A store of its own holding the mixed model (registry and versions copied), so a test can
/// count captures exactly or change the registry without disturbing the others.
pub(crate) async fn own_store_with_mixed(f: &Fixture) -> (tempfile::TempDir, Arc<dyn ObjectStore>) {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn ObjectStore> =
        Arc::new(lambdaml::store::FileStore::open(dir.path()).unwrap());
    for prefix in ["registry/mixed.json", "models/mixed/"] {
        for meta in f.store.list_all(prefix).await.unwrap() {
            let bytes = f.store.get(&meta.key).await.unwrap().bytes;
            store.put(&meta.key, bytes).await.unwrap();
        }
    }
    (dir, store)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_served_over_tcp_is_captured_including_at_shutdown() {
    let f = fixture();
    let (_dir, store) = own_store_with_mixed(f).await;
    let state = state_with(
        store.clone(),
        ScoreConfig {
            capture: CaptureConfig {
                sample_rate: 1.0,
                max_bytes: 8 * 1024,
                max_age: Duration::from_secs(3600),
                ..CaptureConfig::default()
            },
            ..test_config()
        },
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(lambdaml_score::serve(listener, state.clone(), async move {
        let _ = stopped.await;
    }));
    let mut ids = Vec::new();
    let mut tasks = Vec::new();
    for c in 0..4 {
        tasks.push(tokio::spawn(async move {
            let mut client = HttpClient::connect(addr).await;
            let mut ids = Vec::new();
            for i in 0..60 {
                let color = if i % 5 == 4 { "mauve" } else { "red" };
                let body = json!({"dataframe_records": [
                    {"amount": c * 10 + i, "count": 3, "member": i % 2 == 0, "color": color}]});
                let r = client
                    .send(
                        "POST",
                        "/invocations",
                        &[("content-type", "application/json")],
                        body.to_string().as_bytes(),
                    )
                    .await;
                assert_eq!(r.status, if color == "red" { 200 } else { 422 });
                ids.push(r.header("x-request-id").unwrap().to_string());
            }
            ids
        }));
    }
    for t in tasks {
        ids.extend(t.await.unwrap());
    }
    // Buffers over 8 KiB were written while serving (by a spawned flush: let it finish).
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = captures(store.as_ref(), "captures/mixed/").await.len();
    assert!(before > 0, "full buffers are written while serving");
    // Make sure some records are still only in memory, so shutdown has work to do.
    let mut client = HttpClient::connect(addr).await;
    while state.capture.stats().written == state.capture.stats().buffered {
        let body =
            json!({"instances": [{"amount": 1, "count": 1, "member": true, "color": "red"}]});
        let r = client
            .send(
                "POST",
                "/invocations",
                &[("content-type", "application/json")],
                body.to_string().as_bytes(),
            )
            .await;
        assert_eq!(r.status, 200);
        ids.push(r.header("x-request-id").unwrap().to_string());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(client);
    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
    let records = captures(store.as_ref(), "captures/mixed/").await;
    assert!(
        records.len() > before,
        "shutdown wrote the buffered records"
    );
    assert_eq!(records.len(), ids.len(), "captured == served");
    let mut captured: Vec<&str> = records.iter().map(|r| r.request_id.as_str()).collect();
    captured.sort_unstable();
    ids.sort();
    assert_eq!(captured, ids.iter().map(String::as_str).collect::<Vec<_>>());
    let accepted = records.iter().filter(|r| r.status == 200).count();
    assert_eq!(
        accepted,
        ids.len() - 48,
        "every fifth of the 240 was rejected"
    );
    for r in &records {
        assert_eq!(r.model, "mixed");
        assert_eq!(r.version.as_deref(), Some(f.mixed[0].as_str()));
        if r.status == 200 {
            assert_eq!(r.inputs.len(), 1);
            assert_eq!(r.inputs[0].len(), 4);
            assert_eq!(r.outputs.len(), 2);
            assert_eq!(r.labels.len(), 1);
            assert!(r.errors.is_empty());
        } else {
            assert_eq!(r.errors[0].field.as_deref(), Some("color"));
            assert!(r.body.as_deref().unwrap().contains("mauve"));
        }
    }
    assert_eq!(state.capture.stats().written, ids.len() as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_promotion_or_rollback_takes_effect_within_the_refresh_interval() {
    let f = fixture();
    let (_dir, store) = own_store_with_mixed(f).await;
    let refresh = Duration::from_millis(400);
    let state = state_with(
        store.clone(),
        ScoreConfig {
            refresh,
            ..test_config()
        },
    );
    let body = json!({"instances": [{"amount": 50, "count": 3, "member": true, "color": "red"}]});
    let version = |a: Answer| a.json()["model_version"].as_str().unwrap().to_string();
    let (a, b) = (&f.mixed[0], &f.mixed[1]);
    assert_eq!(&version(post_json(&state, "/invocations", &body).await), a);
    // Many requests within one interval cost at most one registry check each interval.
    let checks = state.cache.checks();
    let started = Instant::now();
    let mut n = 0;
    while started.elapsed() < refresh {
        post_json(&state, "/invocations", &body).await;
        n += 1;
    }
    assert!(n > 20);
    assert!(
        state.cache.checks() - checks <= 2,
        "{} checks for {n} requests",
        state.cache.checks() - checks
    );

    let registry = RegistryStore::new(store.clone());
    let served_within = |to: String, label: &'static str| {
        let state = state.clone();
        let body = body.clone();
        async move {
            let changed = Instant::now();
            loop {
                let a = post_json(&state, "/invocations", &body).await;
                if a.json()["model_version"] == to.as_str() {
                    return;
                }
                assert!(
                    changed.elapsed() < refresh + Duration::from_millis(600),
                    "{label} not served after {:?}",
                    changed.elapsed()
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    registry
        .update("mixed", |r| r.promote(b, "test", "a promotion"))
        .await
        .unwrap();
    served_within(b.clone(), "the promotion").await;
    registry
        .update("mixed", |r| r.rollback(None, "test", "a rollback"))
        .await
        .unwrap();
    served_within(a.clone(), "the rollback").await;
    // An explicit version is served on demand, without touching production.
    let path = format!("/v2/models/mixed/versions/{b}/infer");
    let v2 = json!({"inputs": [{"name": "input", "shape": [1, 4], "datatype": "BYTES",
                                "data": ["50", "3", "true", "red"]}]});
    let answer = post_json(&state, &path, &v2).await;
    assert_eq!(
        answer.status,
        200,
        "{}",
        String::from_utf8_lossy(&answer.body)
    );
    assert_eq!(
        &answer.json()["model_version"].as_str().unwrap().to_string(),
        b
    );
    assert_eq!(&version(post_json(&state, "/invocations", &body).await), a);
    assert_eq!(
        state.cache.loads(),
        2,
        "each version read from the store once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn feedback_is_stored_by_request_id_and_metrics_count_what_happened() {
    let f = fixture();
    let state = state_with(f.store.clone(), test_config());
    let body = json!({"dataframe_records": [
        {"amount": 80, "count": 1, "member": true, "color": "red"},
        {"amount": 5, "count": 9, "member": false, "color": "blue"}]});
    let a = post_json(&state, "/invocations", &body).await;
    assert_eq!(a.status, 200);
    let request_id = a.json()["request_id"].as_str().unwrap().to_string();
    let fb = post_json(
        &state,
        "/v2/models/mixed/feedback",
        &json!({"request_id": request_id, "labels": ["1", 0]}),
    )
    .await;
    assert_eq!(fb.status, 200, "{}", String::from_utf8_lossy(&fb.body));
    let stored = fb.json()["stored"].as_str().unwrap().to_string();
    assert!(stored.starts_with("feedback/mixed/"));
    let bytes = f
        .store
        .get(&ObjectKey::new(stored).unwrap())
        .await
        .unwrap()
        .bytes;
    let records: Vec<FeedbackRecord> = bytes
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice(l).unwrap())
        .collect();
    assert_eq!(records.len(), 2);
    assert_eq!(records[0].request_id, request_id);
    assert_eq!((records[1].row, records[1].label.as_str()), (1, "0"));

    let bad = post_json(
        &state,
        "/invocations",
        &json!({"instances": [{"amount": 1}]}),
    )
    .await;
    assert_eq!(bad.status, 422);
    let metrics = call(&state, "GET", "/metrics", None, &[], vec![]).await;
    assert_eq!(metrics.status, 200);
    let text = String::from_utf8(metrics.body).unwrap();
    let v = &f.mixed[0];
    for needle in [
        format!(
            "lambdaml_requests_total{{model=\"mixed\",version=\"{v}\",route=\"mlflow\",status=\"200\"}} 1"
        ),
        format!("lambdaml_rows_total{{model=\"mixed\",version=\"{v}\"}} 2"),
        format!("lambdaml_validation_errors_total{{model=\"mixed\",version=\"{v}\"}} 3"),
        format!("lambdaml_production_info{{model=\"mixed\",version=\"{v}\"}} 1"),
        "route=\"feedback\",status=\"200\"} 1".to_string(),
        "lambdaml_request_duration_seconds_count{model=\"mixed\"}".to_string(),
        "lambdaml_cold_start_seconds".to_string(),
    ] {
        assert!(text.contains(&needle), "{needle} not in\n{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_gateway_events_reach_the_same_router_through_lambda_http() {
    let f = fixture();
    let state = state_with(
        f.store.clone(),
        ScoreConfig {
            flush_each_request: true,
            ..test_config()
        },
    );
    let event = include_str!("../../events/score-http.json");
    let request = lambda_http::request::from_str(event).unwrap();
    assert_eq!(request.uri().path(), "/invocations");
    let response = router(state.clone()).oneshot(request).await.unwrap();
    assert_eq!(response.status(), 200);
    let body = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["predictions"].as_array().unwrap().len(), 2);
    assert_eq!(v["model_version"], f.breast.as_str());
    // In Lambda every invocation's captures are written before the response leaves.
    let id = v["request_id"].as_str().unwrap();
    let all = captures(f.store.as_ref(), "captures/breast-cancer/").await;
    assert!(
        all.iter().any(|r| r.request_id == id),
        "captured before returning"
    );

    let event = include_str!("../../events/score-feedback-http.json");
    let request = lambda_http::request::from_str(event).unwrap();
    let response = router(state).oneshot(request).await.unwrap();
    assert_eq!(response.status(), 200);
}

/// The Python with the stock V2 client, or `None` (loudly) outside `make test`.
fn python_with_tritonclient() -> Option<std::path::PathBuf> {
    python_with("tritonclient.http", "tritonclient[http]")
}

/// Serves the fixture's models over TCP and runs a stock client (`tests/clients/<script>`)
/// on four breast-cancer rows. Returns what it printed and the server's own probabilities
/// of class 1 for those rows (from `/invocations`).
async fn run_stock_client(python: &std::path::Path, script: &str) -> (Value, Vec<f64>) {
    let f = fixture();
    let state = state_with(f.store.clone(), ScoreConfig::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(lambdaml_score::serve(listener, state.clone(), async move {
        let _ = stopped.await;
    }));
    let (_, rows) = breast_rows(4);
    let rows: Vec<Vec<f64>> = rows.into_iter().map(|r| r[..30].to_vec()).collect();
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("clients")
        .join(script);
    let out = tokio::process::Command::new(python)
        .arg(&script)
        .arg(addr.to_string())
        .arg("breast-cancer")
        .arg(json!(rows).to_string())
        .output()
        .await
        .unwrap();
    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
    assert!(
        out.status.success(),
        "{} failed:\n{}",
        script.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let ours = post_json(
        &state,
        "/invocations?model=breast-cancer",
        &json!({"instances": rows}),
    )
    .await
    .json();
    (v, probabilities(&ours))
}

/// The client's probabilities (`json`: FP64 in JSON, `binary`: FP32 in the binary
/// extension) equal the server's own.
fn assert_same_probabilities(v: &Value, expected: &[f64]) {
    for (key, tolerance) in [("json", 1e-9), ("binary", 1e-4)] {
        let got: Vec<f64> = v[key]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p.as_f64().unwrap())
            .collect();
        assert_eq!(got.len(), 4, "{key}");
        for (g, e) in got.iter().zip(expected) {
            assert!((g - e).abs() < tolerance, "{key}: {g} vs {e}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stock_triton_v2_client_gets_predictions_from_the_server() {
    let Some(python) = python_with_tritonclient() else {
        return;
    };
    let (v, expected) = run_stock_client(&python, "triton_infer.py").await;
    let (header, _) = breast_rows(0);
    assert_eq!(v["inputs"], json!(header[..30]));
    assert_eq!(v["version"], fixture().breast.as_str());
    assert_eq!(v["id"], "triton-1");
    assert_same_probabilities(&v, &expected);
    let labels: Vec<&str> = expected
        .iter()
        .map(|p| if *p >= 0.5 { "1" } else { "0" })
        .collect();
    assert_eq!(v["labels"], json!(labels));
}

// ---------------------------------------------------------------------------------------
// Hostile input, stock clients, limits (the hardening findings, one test each)

/// A V2 request's JSON header and binary part with `Inference-Header-Content-Length`.
fn binary_body(header: &Value, binary: &[u8]) -> (Vec<u8>, String) {
    let mut body = header.to_string().into_bytes();
    let len = body.len().to_string();
    body.extend_from_slice(binary);
    (body, len)
}

/// The 150-byte request that aborted the server (a shape of 4,294,967,295 rows with no
/// data), its variants, and a 5.6 MB body of 700,000 tiny objects: each is refused with a
/// 4xx that names the problem, without allocating what it declares, and the server goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_requests_are_refused_without_allocating_what_they_declare() {
    let f = fixture();
    let state = state_with(
        f.store.clone(),
        ScoreConfig {
            max_rows: 10_000,
            max_body_bytes: 6 * 1024 * 1024,
            ..test_config()
        },
    );
    let infer = "/v2/models/breast-cancer/infer";
    for (shape, size, expected) in [
        (json!([4_294_967_295u64, 30]), 0, 413),
        (json!([4_294_967_296u64, 30]), 0, 413),
        (json!([1, 4_294_967_295u64]), 0, 400),
        (json!([3, 30]), 0, 400),
        (json!([2, 30]), 16, 400),
    ] {
        let header = json!({"inputs": [{"name": "input", "shape": shape, "datatype": "FP32",
            "parameters": {"binary_data_size": size}}]});
        let (body, len) = binary_body(&header, &vec![0u8; size]);
        let a = call(
            &state,
            "POST",
            infer,
            Some("application/octet-stream"),
            &[("inference-header-content-length", &len)],
            body,
        )
        .await;
        assert_eq!(
            a.status,
            expected,
            "{shape}: {}",
            String::from_utf8_lossy(&a.body)
        );
        assert!(!a.json()["error"].as_str().unwrap().is_empty());
    }
    // 700,000 `{"a":1}`: refused before a tree of them is built.
    let mut body = b"{\"dataframe_records\":[".to_vec();
    for i in 0..700_000 {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(b"{\"a\":1}");
    }
    body.extend_from_slice(b"]}");
    let started = Instant::now();
    let a = call(
        &state,
        "POST",
        "/invocations?model=breast-cancer",
        Some("application/json"),
        &[],
        body,
    )
    .await;
    assert_eq!(a.status, 413, "{}", String::from_utf8_lossy(&a.body));
    assert!(
        a.json()["error"]
            .as_str()
            .unwrap()
            .contains("split the batch")
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    // The server is still there and right.
    let (_, rows) = breast_rows(2);
    let ok = post_json(
        &state,
        "/invocations?model=breast-cancer",
        &json!({"instances": rows.iter().map(|r| r[..30].to_vec()).collect::<Vec<_>>()}),
    )
    .await;
    assert_eq!(ok.status, 200, "{}", String::from_utf8_lossy(&ok.body));
}

/// What stock clients send beyond the four V2 keys is accepted (the kserve SDK names the
/// model in the body); anything else is still refused, inside a tensor too. MLflow's
/// `/health` and `/version` answer as MLflow's scoring server does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stock_client_keys_are_accepted_and_mlflow_health_routes_exist() {
    let f = fixture();
    let state = state_with(f.store.clone(), test_config());
    let (_, rows) = breast_rows(2);
    let data: Vec<f64> = rows.iter().flat_map(|r| r[..30].to_vec()).collect();
    let tensor = json!({"name": "input", "shape": [2, 30], "datatype": "FP64", "data": data});
    let infer = "/v2/models/breast-cancer/infer";
    let a = post_json(
        &state,
        infer,
        &json!({"id": "k-1", "model_name": "breast-cancer", "inputs": [tensor]}),
    )
    .await;
    assert_eq!(a.status, 200, "{}", String::from_utf8_lossy(&a.body));
    assert_eq!(a.json()["id"], "k-1");
    let a = post_json(&state, infer, &json!({"inputs": [tensor], "colour": 1})).await;
    assert_eq!(a.status, 400);
    assert_eq!(a.json()["details"][0]["field"], "colour");
    let a = post_json(&state, infer, &json!({"inputs": [tensor], "model_name": 7})).await;
    assert_eq!(a.status, 400);
    let mut odd = tensor.clone();
    odd["colour"] = json!(1);
    let a = post_json(&state, infer, &json!({"inputs": [odd]})).await;
    assert_eq!(a.status, 400);
    assert_eq!(a.json()["details"][0]["field"], "input.colour");
    let health = call(&state, "GET", "/health", None, &[], vec![]).await;
    assert_eq!(health.status, 200);
    let version = call(&state, "GET", "/version", None, &[], vec![]).await;
    assert_eq!(version.status, 200);
    assert_eq!(String::from_utf8(version.body).unwrap(), lambdaml::VERSION);
}

/// Labels flow into retraining data: feedback must be JSON (a browser's cross-site "simple"
/// request carries no such content type), and request ids — what feedback is joined by —
/// are 128 random bits, not a counter.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn feedback_must_be_json_and_request_ids_cannot_be_guessed() {
    let f = fixture();
    let state = state_with(f.store.clone(), test_config());
    let body = json!({"request_id": "r", "label": "1"})
        .to_string()
        .into_bytes();
    for ct in [
        None,
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
    ] {
        let a = call(
            &state,
            "POST",
            "/v2/models/mixed/feedback",
            ct,
            &[],
            body.clone(),
        )
        .await;
        assert_eq!(a.status, 415, "{ct:?}");
        assert_eq!(a.json()["details"][0]["field"], "content-type");
    }
    let mut ids = Vec::new();
    for _ in 0..3 {
        let a = call(&state, "GET", "/v2/models/mixed", None, &[], vec![]).await;
        let id = a.headers["x-request-id"].to_str().unwrap().to_string();
        assert_eq!(id.len(), 32);
        assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));
        ids.push(id);
    }
    // A counter behind a fixed prefix shares its first half; random ids do not.
    assert_ne!(ids[0][..16], ids[1][..16]);
    assert_ne!(ids[1][..16], ids[2][..16]);
}

/// `lambdaml serve` refuses what a browser marks as cross-origin; other clients send no
/// Origin and are served. In Lambda (IAM decides) the check is off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_local_server_refuses_cross_origin_browser_requests() {
    let f = fixture();
    let local = state_with(
        f.store.clone(),
        ScoreConfig {
            same_origin_only: true,
            ..test_config()
        },
    );
    let body = json!({"request_id": "r", "label": "1"})
        .to_string()
        .into_bytes();
    let evil = [
        ("host", "127.0.0.1:8080"),
        ("origin", "https://evil.example"),
    ];
    let a = call(
        &local,
        "POST",
        "/v2/models/mixed/feedback",
        Some("application/json"),
        &evil,
        body.clone(),
    )
    .await;
    assert_eq!(a.status, 403);
    assert_eq!(a.json()["details"][0]["field"], "origin");
    let records =
        json!({"dataframe_records": [{"amount": 1, "count": 1, "member": true, "color": "red"}]});
    let a = call(
        &local,
        "POST",
        "/invocations",
        Some("application/json"),
        &evil,
        records.to_string().into_bytes(),
    )
    .await;
    assert_eq!(a.status, 403);
    let same = [
        ("host", "127.0.0.1:8080"),
        ("origin", "http://127.0.0.1:8080"),
    ];
    let a = call(
        &local,
        "POST",
        "/invocations",
        Some("application/json"),
        &same,
        records.to_string().into_bytes(),
    )
    .await;
    assert_eq!(a.status, 200, "{}", String::from_utf8_lossy(&a.body));
    let a = call(
        &local,
        "POST",
        "/invocations",
        Some("application/json"),
        &[],
        records.to_string().into_bytes(),
    )
    .await;
    assert_eq!(a.status, 200);
    let lambda = state_with(f.store.clone(), test_config());
    let a = call(
        &lambda,
        "POST",
        "/invocations",
        Some("application/json"),
        &evil,
        records.to_string().into_bytes(),
    )
    .await;
    assert_eq!(a.status, 200);
}

/// A corrupt artifact is the server's fault: the client gets a 500 with the request id to
/// quote, not the store's keys; the capture record keeps the cause.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_faults_tell_clients_the_request_id_not_the_store_details() {
    let f = fixture();
    let (_dir, store) = own_store_with_mixed(f).await;
    let v = &f.mixed[1];
    store
        .put(
            &ObjectKey::new(format!("models/mixed/{v}/manifest.json")).unwrap(),
            bytes::Bytes::from_static(b"{\"model\": \"mixed\", truncated"),
        )
        .await
        .unwrap();
    let state = state_with(store.clone(), test_config());
    let body =
        json!({"dataframe_records": [{"amount": 1, "count": 1, "member": true, "color": "red"}]});
    let a = post_json(&state, &format!("/invocations?version={v}"), &body).await;
    assert_eq!(a.status, 500);
    let text = String::from_utf8_lossy(&a.body).into_owned();
    assert!(
        !text.contains("manifest.json") && !text.contains("models/"),
        "{text}"
    );
    let id = a.json()["request_id"].as_str().unwrap().to_string();
    assert!(text.contains(&format!("request id {id}")), "{text}");
    state.capture.flush().await;
    // The version could not be loaded, so the request is kept with the unrouted ones.
    let kept = captures(store.as_ref(), "captures/_unrouted/").await;
    let record = kept.iter().find(|r| r.request_id == id).unwrap();
    assert!(
        record.errors[0].reason.contains("manifest.json"),
        "{record:?}"
    );
}

/// Over TCP: a client that trickles its headers is disconnected; with the one permit held by
/// a request whose body never arrives, the next request gets 503 at once with Retry-After;
/// the stalled request is answered 503 at the request timeout, and the server serves again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_local_server_bounds_slow_clients_and_requests_in_flight() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let f = fixture();
    let state = state_with(
        f.store.clone(),
        ScoreConfig {
            max_in_flight: 1,
            request_timeout: Duration::from_millis(800),
            header_timeout: Duration::from_millis(300),
            ..test_config()
        },
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(lambdaml_score::serve(listener, state.clone(), async move {
        let _ = stopped.await;
    }));
    async fn answer(stream: &mut tokio::net::TcpStream) -> String {
        let mut buf = vec![0u8; 4096];
        let mut got = Vec::new();
        loop {
            let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
                .await
                .expect("an answer within 5 s")
                .unwrap();
            got.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&got).into_owned();
            if n == 0 || text.contains("\r\n\r\n{") && text.ends_with('}') {
                return text;
            }
        }
    }
    // Slow headers: the connection is closed.
    let mut slow = tokio::net::TcpStream::connect(addr).await.unwrap();
    slow.write_all(b"GET /v2/health/live HTTP/1.1\r\nHo")
        .await
        .unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 256];
    let n = tokio::time::timeout(Duration::from_secs(5), slow.read(&mut buf))
        .await
        .expect("closed within 5 s")
        .unwrap_or(0);
    let _ = n;
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    // The stalled request holds the only permit.
    let mut stalled = tokio::net::TcpStream::connect(addr).await.unwrap();
    stalled
        .write_all(b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(150)).await;
    let mut next = tokio::net::TcpStream::connect(addr).await.unwrap();
    next.write_all(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let busy = answer(&mut next).await;
    assert!(busy.starts_with("HTTP/1.1 503"), "{busy}");
    assert!(
        busy.to_ascii_lowercase().contains("retry-after: 1"),
        "{busy}"
    );
    let late = answer(&mut stalled).await;
    assert!(late.starts_with("HTTP/1.1 503"), "{late}");
    assert!(late.contains("took longer"), "{late}");
    let mut again = tokio::net::TcpStream::connect(addr).await.unwrap();
    again
        .write_all(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let ok = answer(&mut again).await;
    assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
}

/// The Python with a stock client installed (`module`), or `None` (loudly) outside
/// `make test`.
fn python_with(module: &str, what: &str) -> Option<std::path::PathBuf> {
    let python = std::env::var_os("LAMBDAML_PYTHON")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python")
        });
    let ok = std::process::Command::new(&python)
        .args(["-c", &format!("import {module}, numpy")])
        .output()
        .is_ok_and(|o| o.status.success());
    if ok {
        return Some(python);
    }
    assert!(
        std::env::var_os("LAMBDAML_REQUIRE_EMULATOR").is_none(),
        "make test installs {what} into .venv, but {} cannot import {module}",
        python.display()
    );
    use std::io::Write;
    let _ = writeln!(
        std::io::stderr(),
        "\n*** SKIPPED the {what} test: {} has no {module}. `make test` installs it and runs it. ***\n",
        python.display()
    );
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kserve_sdk_rest_client_gets_predictions_from_the_server() {
    let Some(python) = python_with("kserve", "the kserve SDK") else {
        return;
    };
    let (v, expected) = run_stock_client(&python, "kserve_infer.py").await;
    assert_eq!(v["id"], "kserve-1");
    assert_eq!(v["model_name"], "breast-cancer");
    assert_same_probabilities(&v, &expected);
    let labels: Vec<&str> = expected
        .iter()
        .map(|p| if *p >= 0.5 { "1" } else { "0" })
        .collect();
    assert_eq!(v["json_labels"], json!(labels));
    assert_eq!(v["binary_labels"], json!(labels));
}

mod parsers {
    //! Property tests: no parser panics or answers a client's bytes with a 5xx, and what
    //! parses scores the same in every form.

    use super::*;
    use lambdaml_score::parse::{self, Limits};
    use lambdaml_score::stream;
    use proptest::prelude::*;

    fn mixed() -> &'static lambdaml_score::loader::LoadedModel {
        static MODEL: OnceLock<Arc<lambdaml_score::loader::LoadedModel>> = OnceLock::new();
        MODEL.get_or_init(|| {
            let f = fixture();
            let store = f.store.clone();
            let v = f.mixed[0].clone();
            std::thread::spawn(move || {
                tokio::runtime::Runtime::new()
                    .unwrap()
                    .block_on(async move {
                        lambdaml_score::loader::ModelCache::new(store, Duration::from_secs(60), 2)
                            .version("mixed", &v)
                            .await
                            .unwrap()
                    })
            })
            .join()
            .unwrap()
        })
    }

    const LIMITS: Limits = Limits { max_rows: 50 };

    fn client_error(e: &lambdaml_score::error::ApiError) -> bool {
        e.status.is_client_error() && !e.error.is_empty()
    }

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<f64>().prop_map(|x| json!(x)),
            any::<i64>().prop_map(|x| json!(x)),
            "[a-z ]{0,8}".prop_map(Value::String),
            prop_oneof![
                Just("amount"),
                Just("count"),
                Just("member"),
                Just("color"),
                Just("red"),
                Just("inputs"),
                Just("instances"),
                Just("dataframe_split"),
                Just("columns"),
                Just("data"),
                Just("name"),
                Just("shape"),
                Just("datatype"),
                Just("FP64"),
                Just("BYTES"),
                Just("dataframe_records")
            ]
            .prop_map(|s| Value::String(s.to_string())),
        ];
        leaf.prop_recursive(4, 48, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::vec(
                    (
                        prop_oneof![
                            Just("amount".to_string()),
                            Just("count".to_string()),
                            Just("member".to_string()),
                            Just("color".to_string()),
                            Just("inputs".to_string()),
                            Just("instances".to_string()),
                            Just("dataframe_split".to_string()),
                            Just("dataframe_records".to_string()),
                            Just("columns".to_string()),
                            Just("data".to_string()),
                            Just("name".to_string()),
                            Just("shape".to_string()),
                            Just("datatype".to_string()),
                            Just("outputs".to_string()),
                            "[a-z]{1,6}"
                        ],
                        inner
                    ),
                    0..6
                )
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
            ]
        })
    }

    /// The streaming and the tree parser answered alike: the same frame, or the same
    /// status, sentence and details.
    fn same_answer(
        streamed: Result<parse::Frame<'_>, lambdaml_score::error::ApiError>,
        tree: Result<parse::Frame<'_>, lambdaml_score::error::ApiError>,
    ) -> Result<(), TestCaseError> {
        match (streamed, tree) {
            (Ok(s), Ok(t)) => {
                prop_assert_eq!(s.rows, t.rows);
                prop_assert_eq!(&s.values, &t.values);
                prop_assert_eq!(&s.ignored, &t.ignored);
            }
            (Err(s), Err(t)) => {
                prop_assert_eq!(s.status, t.status);
                prop_assert_eq!(&s.error, &t.error);
                prop_assert_eq!(s.details_total, t.details_total);
                prop_assert_eq!(format!("{:?}", s.details), format!("{:?}", t.details));
            }
            (s, t) => prop_assert!(
                false,
                "streamed {:?}, tree {:?}",
                s.map(|_| ()),
                t.map(|_| ())
            ),
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

        #[test]
        fn mlflow_json_never_panics_and_rejects_with_a_4xx(v in json_value()) {
            let model = mixed();
            match parse::mlflow_json(model, &v, LIMITS) {
                Ok(frame) => {
                    prop_assert_eq!(frame.values.len(), frame.rows * model.width());
                    if let Err(e) = lambdaml_score::score_frame(model, &frame) {
                        prop_assert!(client_error(&e), "{:?}", e);
                    }
                }
                Err(e) => prop_assert!(client_error(&e), "{:?}", e),
            }
        }

        #[test]
        fn streamed_records_equal_the_tree_parser(v in json_value()) {
            // Whatever the streaming parser answers for, the tree parser answers the same:
            // the same frame, or the same status, sentence and details. (A serialized
            // `Map` has sorted, distinct keys: the tree's iteration order.)
            let model = mixed();
            let body = serde_json::to_vec(&v).unwrap();
            let mut owned = Vec::new();
            // The tree of the same text (serde_json's float parsing is not a round trip).
            let v: Value = serde_json::from_slice(&body).unwrap();
            if let Some(streamed) = stream::records(model, &body, LIMITS, &mut owned) {
                let tree = parse::mlflow_json(model, &v, LIMITS);
                same_answer(streamed.map(|p| p.resolve(&owned)), tree)?;
            }
        }

        #[test]
        fn records_with_any_strings_stream_as_the_tree_reads_them(rows in prop::collection::vec(
            (prop_oneof![any::<f64>().prop_map(|x| json!(x)), Just(Value::Null), any::<i64>().prop_map(|x| json!(x))],
             any::<String>(),
             prop_oneof![Just("red".to_string()), "[a-z\\\\\"\u{1}é\n]{0,6}"],
             prop::option::of(any::<String>())),
            1..60)) {
            // Escaped strings (quotes, backslashes, control characters, any Unicode) in values
            // and in unknown keys, and rows past the limit.
            let model = mixed();
            let records: Vec<Value> = rows.iter().map(|(a, m, c, extra)| {
                let mut r = json!({"amount": a, "count": 3, "member": m, "color": c});
                if let Some(k) = extra {
                    r[k.as_str()] = json!(1);
                }
                r
            }).collect();
            let v = json!({"dataframe_records": records, "params": {"x": [1, "\\"]}});
            let body = serde_json::to_vec(&v).unwrap();
            let mut owned = Vec::new();
            let streamed = stream::records(model, &body, LIMITS, &mut owned);
            prop_assert!(streamed.is_some(), "a records body is streamed");
            let v: Value = serde_json::from_slice(&body).unwrap();
            same_answer(
                streamed.unwrap().map(|p| p.resolve(&owned)),
                parse::mlflow_json(model, &v, LIMITS),
            )?;
        }

        #[test]
        fn v2_never_panics_and_rejects_with_a_4xx(v in json_value(), binary in prop::collection::vec(any::<u8>(), 0..64)) {
            let model = mixed();
            match parse::v2_request(model, &v, &binary, LIMITS) {
                Ok(r) => {
                    prop_assert_eq!(r.frame.values.len(), r.frame.rows * model.width());
                    if let Err(e) = lambdaml_score::score_frame(model, &r.frame) {
                        prop_assert!(client_error(&e), "{:?}", e);
                    }
                }
                Err(e) => prop_assert!(client_error(&e), "{:?}", e),
            }
        }

        #[test]
        fn csv_never_panics_and_rejects_with_a_4xx(body in prop::collection::vec(
            prop_oneof![Just(b'a'), Just(b','), Just(b'\n'), Just(b'"'), Just(b'1'), Just(b'.'),
                        Just(b'\r'), Just(b' '), any::<u8>()], 0..200),
            header in prop::bool::ANY) {
            let model = mixed();
            let mut full = if header { b"amount,count,member,color\n".to_vec() } else { Vec::new() };
            full.extend_from_slice(&body);
            match parse::read_csv(&full, LIMITS) {
                Ok(csv) => match parse::csv_frame(model, &csv, LIMITS) {
                    Ok(frame) => {
                        if let Err(e) = lambdaml_score::score_frame(model, &frame) {
                            prop_assert!(client_error(&e), "{:?}", e);
                        }
                    }
                    Err(e) => prop_assert!(client_error(&e), "{:?}", e),
                },
                Err(e) => prop_assert!(client_error(&e), "{:?}", e),
            }
        }

        #[test]
        fn valid_rows_score_the_same_in_every_form(rows in prop::collection::vec(
            (-1e6f64..1e6, 0i64..20, any::<bool>(), prop_oneof![Just("red"), Just("green"), Just("blue")]),
            1..20)) {
            let model = mixed();
            let names = ["amount", "count", "member", "color"];
            let records: Vec<Value> = rows.iter().map(|(a, c, m, col)|
                json!({"amount": a, "count": c, "member": m, "color": col})).collect();
            let split = json!({"dataframe_split": {"columns": names,
                "data": rows.iter().map(|(a, c, m, col)| json!([a, c, m, col])).collect::<Vec<_>>()}});
            let v2 = json!({"inputs": [
                {"name": "amount", "shape": [rows.len()], "datatype": "FP64", "data": rows.iter().map(|r| r.0).collect::<Vec<_>>()},
                {"name": "count", "shape": [rows.len(), 1], "datatype": "INT64", "data": rows.iter().map(|r| r.1).collect::<Vec<_>>()},
                {"name": "member", "shape": [rows.len()], "datatype": "BOOL", "data": rows.iter().map(|r| r.2).collect::<Vec<_>>()},
                {"name": "color", "shape": [rows.len()], "datatype": "BYTES", "data": rows.iter().map(|r| r.3).collect::<Vec<_>>()},
            ]});
            let csv: String = std::iter::once("amount,count,member,color\n".to_string())
                .chain(rows.iter().map(|(a, c, m, col)| format!("{a},{c},{m},{col}\n")))
                .collect();
            let a = lambdaml_score::score_frame(model, &parse::mlflow_json(model, &json!({"dataframe_records": records}), LIMITS).unwrap()).unwrap();
            let b = lambdaml_score::score_frame(model, &parse::mlflow_json(model, &split, LIMITS).unwrap()).unwrap();
            let c = lambdaml_score::score_frame(model, &parse::v2_request(model, &v2, &[], LIMITS).unwrap().frame).unwrap();
            let body = parse::read_csv(csv.as_bytes(), LIMITS).unwrap();
            let d = lambdaml_score::score_frame(model, &parse::csv_frame(model, &body, LIMITS).unwrap()).unwrap();
            for other in [&b, &c, &d] {
                prop_assert_eq!(&a.labels, &other.labels);
                for (x, y) in a.outputs.iter().zip(&other.outputs) {
                    prop_assert!((x - y).abs() < 1e-9, "{} vs {}", x, y);
                }
            }
        }
    }
}
