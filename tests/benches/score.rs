//! The score function in-process, one breast-cancer row (30 features) per request:
//! - `handler/v2_one_row`: parse the V2 JSON body → validate against the fitted pipeline →
//!   transform → predict → serialize the response;
//! - `router/v2_one_row`: the same through the whole axum router, with capture on (the
//!   record built and buffered) and the metrics layer.
//!
//!     cargo bench -p lambdaml-e2e --bench score

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::http::Request;
use criterion::{Criterion, criterion_group, criterion_main};
use lambdaml_score::parse::{self, Limits};
use lambdaml_score::{ScoreConfig, ScoreState, router, score_frame, v2_response};
use tower::ServiceExt;

const BREAST_CANCER: &[u8] = include_bytes!("../../data/sklearn_breast_cancer.csv");
const BREAST_SPEC: &str = include_str!("../../examples/specs/breast_cancer.toml");
const BODY: &str = r#"{"inputs":[{"name":"input","shape":[1,30],"datatype":"FP64","data":[17.99,10.38,122.8,1001.0,0.1184,0.2776,0.3001,0.1471,0.2419,0.07871,1.095,0.9053,8.589,153.4,0.006399,0.04904,0.05373,0.01587,0.03003,0.006193,25.38,17.33,184.6,2019.0,0.1622,0.6656,0.7119,0.2654,0.4601,0.1189]}]}"#;

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = rt.block_on(lambdaml_e2e::deploy_model(
        dir.path(),
        BREAST_SPEC,
        "breast-cancer",
        BREAST_CANCER,
    ));
    let state = ScoreState::new(
        store,
        ScoreConfig {
            default_model: Some("breast-cancer".into()),
            ..ScoreConfig::default()
        },
        Instant::now(),
    );
    let model = rt.block_on(state.production("breast-cancer")).unwrap();
    let limits = Limits { max_rows: 10_000 };

    c.bench_function("handler/v2_one_row", |b| {
        b.iter(|| {
            let json: serde_json::Value = serde_json::from_slice(BODY.as_bytes()).unwrap();
            let request = parse::v2_request(&model, &json, &[], limits).unwrap();
            let scored = score_frame(&model, &request.frame).unwrap();
            v2_response(&model, &scored, "id", "request", &[])
        });
    });

    let app = router(state.clone());
    c.bench_function("router/v2_one_row_capture_on", |b| {
        b.to_async(&rt).iter(|| {
            let app = app.clone();
            async move {
                let request = Request::post("/v2/models/breast-cancer/infer")
                    .header("content-type", "application/json")
                    .body(Body::from(BODY))
                    .unwrap();
                let response = app.oneshot(request).await.unwrap();
                assert_eq!(response.status(), 200);
                axum::body::to_bytes(response.into_body(), usize::MAX)
                    .await
                    .unwrap()
            }
        });
    });
    let _keep: Arc<ScoreState> = state;
}

criterion_group!(benches, bench);
criterion_main!(benches);
