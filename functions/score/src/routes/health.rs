//! Health and metadata routes: `GET /v2`, `/v2/health/*`, `/v2/models[/…]`, `/ping`,
//! `/version`, `/metrics`.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::Value;

use crate::error::ApiError;
use crate::loader::LoadedModel;
use crate::metrics::Outcome;
use crate::respond::{error_response, json_response, new_request_id, to_json, with_outcome};
use crate::state::ScoreState;

pub(crate) async fn server_metadata() -> Response {
    let body = serde_json::json!({
        "name": "lambdaml",
        "version": lambdaml::VERSION,
        "extensions": ["binary_tensor_data"],
    });
    with_outcome(
        json_response(StatusCode::OK, to_json(&body), None),
        Outcome {
            route: "health",
            ..Outcome::default()
        },
    )
}

pub(crate) async fn live() -> Response {
    with_outcome(
        json_response(StatusCode::OK, br#"{"live":true}"#.to_vec(), None),
        Outcome {
            route: "health",
            ..Outcome::default()
        },
    )
}

pub(crate) async fn ready(State(state): State<Arc<ScoreState>>) -> Response {
    let outcome = Outcome {
        route: "health",
        ..Outcome::default()
    };
    let resp = match &state.config.default_model {
        None => json_response(StatusCode::OK, br#"{"ready":true}"#.to_vec(), None),
        Some(model) => match state.production(model).await {
            Ok(_) => json_response(StatusCode::OK, br#"{"ready":true}"#.to_vec(), None),
            Err(e) => error_response(
                &ApiError::unavailable(format!("not ready: {}", e.error)),
                &new_request_id(),
            ),
        },
    };
    with_outcome(resp, outcome)
}

pub(crate) async fn ping(State(state): State<Arc<ScoreState>>) -> Response {
    let outcome = Outcome {
        route: "health",
        ..Outcome::default()
    };
    let resp = match &state.config.default_model {
        None => (StatusCode::OK, "\n").into_response(),
        Some(model) => match state.production(model).await {
            Ok(_) => (StatusCode::OK, "\n").into_response(),
            Err(e) => error_response(&e, &new_request_id()),
        },
    };
    with_outcome(resp, outcome)
}

/// MLflow's `/version`: the server's version as bare text, as MLflow's scoring server
/// answers it.
pub(crate) async fn version() -> Response {
    with_outcome(
        (StatusCode::OK, lambdaml::VERSION).into_response(),
        Outcome {
            route: "health",
            ..Outcome::default()
        },
    )
}

pub(crate) async fn prometheus(State(state): State<Arc<ScoreState>>) -> Response {
    let text = state.metrics.render(&state.gauges());
    let mut resp = (StatusCode::OK, text).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    with_outcome(
        resp,
        Outcome {
            route: "metrics",
            ..Outcome::default()
        },
    )
}

#[derive(Serialize)]
pub(crate) struct TensorSpec<'a> {
    name: &'a str,
    datatype: &'static str,
    shape: Vec<i64>,
}

/// The V2 metadata of a loaded version.
pub fn metadata(model: &LoadedModel) -> Value {
    use lambdaml::dataset::ColumnType;
    let inputs: Vec<TensorSpec<'_>> = model
        .manifest
        .pipeline
        .inputs
        .iter()
        .map(|f| TensorSpec {
            name: &f.name,
            datatype: match f.kind {
                ColumnType::Categorical => "BYTES",
                ColumnType::Boolean => "BOOL",
                ColumnType::Integer => "INT64",
                ColumnType::Float => "FP64",
            },
            shape: vec![-1],
        })
        .collect();
    let outputs: Vec<TensorSpec<'_>> = match &model.classes {
        Some(classes) => vec![
            TensorSpec {
                name: "label",
                datatype: "BYTES",
                shape: vec![-1],
            },
            TensorSpec {
                name: "probabilities",
                datatype: "FP64",
                shape: vec![-1, classes.len() as i64],
            },
        ],
        None => vec![TensorSpec {
            name: "prediction",
            datatype: "FP64",
            shape: vec![-1],
        }],
    };
    serde_json::json!({
        "name": model.name,
        "versions": [model.version],
        "platform": "lambdaml",
        "inputs": inputs,
        "outputs": outputs,
    })
}

pub(crate) async fn metadata_for(
    state: &ScoreState,
    model: &str,
    version: Option<&str>,
) -> Response {
    let id = new_request_id();
    let resp = match state.resolve(model, version).await {
        Ok(m) => json_response(StatusCode::OK, to_json(&metadata(&m)), Some(&id)),
        Err(e) => error_response(&e, &id),
    };
    with_outcome(
        resp,
        Outcome {
            route: "metadata",
            ..Outcome::default()
        },
    )
}

pub(crate) async fn model_metadata(
    State(state): State<Arc<ScoreState>>,
    Path(model): Path<String>,
) -> Response {
    metadata_for(&state, &model, None).await
}

pub(crate) async fn version_metadata(
    State(state): State<Arc<ScoreState>>,
    Path((model, version)): Path<(String, String)>,
) -> Response {
    metadata_for(&state, &model, Some(&version)).await
}

pub(crate) async fn ready_for(state: &ScoreState, model: &str, version: Option<&str>) -> Response {
    let id = new_request_id();
    let resp = match state.resolve(model, version).await {
        Ok(m) => json_response(
            StatusCode::OK,
            to_json(&serde_json::json!({"name": m.name, "version": m.version, "ready": true})),
            Some(&id),
        ),
        Err(e) => error_response(&e, &id),
    };
    with_outcome(
        resp,
        Outcome {
            route: "metadata",
            ..Outcome::default()
        },
    )
}

pub(crate) async fn model_ready(
    State(state): State<Arc<ScoreState>>,
    Path(model): Path<String>,
) -> Response {
    ready_for(&state, &model, None).await
}

pub(crate) async fn version_ready(
    State(state): State<Arc<ScoreState>>,
    Path((model, version)): Path<(String, String)>,
) -> Response {
    ready_for(&state, &model, Some(&version)).await
}

pub(crate) async fn list_models(State(state): State<Arc<ScoreState>>) -> Response {
    let id = new_request_id();
    let resp = match lambdaml::registry::RegistryStore::new(state.store.clone())
        .models()
        .await
    {
        Ok(models) => json_response(
            StatusCode::OK,
            to_json(&serde_json::json!({ "models": models })),
            Some(&id),
        ),
        Err(e) => error_response(&ApiError::internal(format!("listing models: {e}")), &id),
    };
    with_outcome(
        resp,
        Outcome {
            route: "metadata",
            ..Outcome::default()
        },
    )
}
