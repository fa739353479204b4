//! MLflow scoring: `POST /invocations` (`dataframe_split`, `dataframe_records`,
//! `instances`, `inputs`, `text/csv`).

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Deserialize, Serialize, Serializer};

use crate::error::ApiError;
use crate::loader::LoadedModel;
use crate::parse::{Frame, Limits};
use crate::respond::{content_type, parse_json, read_body, to_json};
use crate::scoring::{Call, Scored, off_worker, score_frame};
use crate::state::{ScoreState, header_key};
use crate::{parse, stream};

/// `?model=&version=` on `/invocations`.
#[derive(Debug, Deserialize)]
pub struct Target {
    model: Option<String>,
    version: Option<String>,
    /// The routing key of a canary split (also the `x-lambdaml-key` header).
    key: Option<String>,
}

pub(crate) struct MlflowPredictions<'a> {
    scored: &'a Scored,
    classes: Option<&'a [String]>,
}

pub(crate) struct ClassRow<'a> {
    label: &'a str,
    classes: &'a [String],
    probabilities: &'a [f64],
}

pub(crate) struct Probabilities<'a>(&'a [String], &'a [f64]);

impl Serialize for Probabilities<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (c, p) in self.0.iter().zip(self.1) {
            map.serialize_entry(c, p)?;
        }
        map.end()
    }
}

impl Serialize for ClassRow<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(2))?;
        map.serialize_entry("label", self.label)?;
        map.serialize_entry(
            "probabilities",
            &Probabilities(self.classes, self.probabilities),
        )?;
        map.end()
    }
}

impl Serialize for MlflowPredictions<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.scored.rows))?;
        match self.classes {
            Some(classes) => {
                for (label, p) in self
                    .scored
                    .labels
                    .iter()
                    .zip(self.scored.outputs.chunks_exact(classes.len().max(1)))
                {
                    seq.serialize_element(&ClassRow {
                        label: &classes[*label],
                        classes,
                        probabilities: p,
                    })?;
                }
            }
            None => {
                for v in &self.scored.outputs {
                    seq.serialize_element(v)?;
                }
            }
        }
        seq.end()
    }
}

#[derive(Serialize)]
pub(crate) struct MlflowResponse<'a> {
    predictions: MlflowPredictions<'a>,
    model_name: &'a str,
    model_version: &'a str,
    request_id: &'a str,
}

pub(crate) async fn invocations(
    State(state): State<Arc<ScoreState>>,
    Query(target): Query<Target>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let mut call = Call::new(&state, "mlflow");
    let bytes = match read_body(body, &headers, state.config.max_body_bytes).await {
        Ok(b) => b,
        Err(e) => return call.reject(e, &[]),
    };
    let Some(model_name) = target.model.or_else(|| state.config.default_model.clone()) else {
        return call.reject(
            ApiError::field(
                StatusCode::BAD_REQUEST,
                Some("model"),
                "this server has no default model; name one with ?model=NAME",
            ),
            &bytes,
        );
    };
    let routed = match state.target(&model_name, target.version.as_deref()).await {
        Ok(t) => t,
        Err(e) => return call.reject(e, &bytes),
    };
    let key = header_key(&headers).or(target.key);
    let model = call.routed(routed.pick(key.as_deref()));
    let limits = state.limits();
    off_worker(bytes.len(), || {
        mlflow_body(&call, &model, &headers, &bytes, limits)
    })
}

/// Parses, scores and answers an MLflow body (synchronous: CPU only).
pub(crate) fn mlflow_body(
    call: &Call<'_>,
    model: &LoadedModel,
    headers: &HeaderMap,
    bytes: &Bytes,
    limits: Limits,
) -> Response {
    let state = call.state;
    let respond = |frame: &Frame<'_>| -> Response {
        match score_frame(model, frame) {
            Ok(scored) => {
                let body = to_json(&MlflowResponse {
                    predictions: MlflowPredictions {
                        scored: &scored,
                        classes: model.classes.as_deref(),
                    },
                    model_name: &model.name,
                    model_version: &model.version,
                    request_id: &call.request_id,
                });
                call.accept(model, frame, scored, bytes.len(), body)
            }
            Err(e) => call.reject(e, bytes),
        }
    };
    match content_type(headers).as_deref() {
        Some("application/json") => {
            // Records stream straight into the frame; other forms are parsed as a tree.
            let mut owned = Vec::new();
            match stream::records(model, bytes, limits, &mut owned) {
                Some(Ok(pending)) => return respond(&pending.resolve(&owned)),
                Some(Err(e)) => return call.reject(e, bytes),
                None => {}
            }
            let json = match parse_json(bytes, state.json_budget(model.width())) {
                Ok(v) => v,
                Err(e) => return call.reject(e, bytes),
            };
            match parse::mlflow_json(model, &json, limits) {
                Ok(frame) => respond(&frame),
                Err(e) => call.reject(e, bytes),
            }
        }
        Some("text/csv") => {
            let csv = match parse::read_csv(bytes, limits) {
                Ok(c) => c,
                Err(e) => return call.reject(e, bytes),
            };
            match parse::csv_frame(model, &csv, limits) {
                Ok(frame) => respond(&frame),
                Err(e) => call.reject(e, bytes),
            }
        }
        other => call.reject(
            ApiError::unsupported(format!(
                "content type {}: /invocations takes application/json or text/csv (curl: -H 'Content-Type: application/json')",
                other.map_or("missing".to_string(), |o| format!("{o:?}"))
            )),
            bytes,
        ),
    }
}
