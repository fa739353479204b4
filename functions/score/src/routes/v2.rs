//! The Open Inference Protocol (KServe V2) inference route:
//! `POST /v2/models/{m}[/versions/{v}]/infer`.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::Response;
use serde::ser::SerializeSeq;
use serde::{Serialize, Serializer};
use serde_json::Value;

use crate::error::ApiError;
use crate::loader::LoadedModel;
use crate::parse;
use crate::respond::{content_type, parse_json, read_body, to_json};
use crate::scoring::{Call, Scored, off_worker, score_frame};
use crate::state::{ScoreState, Target, header_key};

#[derive(Serialize)]
pub(crate) struct V2Output<'a> {
    name: &'static str,
    datatype: &'static str,
    shape: Vec<usize>,
    data: V2Data<'a>,
}

pub(crate) enum V2Data<'a> {
    Labels(&'a [usize], &'a [String]),
    Numbers(&'a [f64]),
}

impl Serialize for V2Data<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            V2Data::Labels(idx, classes) => {
                let mut seq = s.serialize_seq(Some(idx.len()))?;
                for i in *idx {
                    seq.serialize_element(&classes[*i])?;
                }
                seq.end()
            }
            V2Data::Numbers(x) => x.serialize(s),
        }
    }
}

#[derive(Serialize)]
pub(crate) struct V2Response<'a> {
    model_name: &'a str,
    model_version: &'a str,
    id: &'a str,
    parameters: RequestIdParam<'a>,
    outputs: Vec<V2Output<'a>>,
}

#[derive(Serialize)]
pub(crate) struct RequestIdParam<'a> {
    request_id: &'a str,
}

/// The V2 `infer` response body for `scored` (all outputs when `wanted` is empty).
pub fn v2_response(
    model: &LoadedModel,
    scored: &Scored,
    id: &str,
    request_id: &str,
    wanted: &[&str],
) -> Vec<u8> {
    let want = |name: &str| wanted.is_empty() || wanted.contains(&name);
    let mut outputs = Vec::with_capacity(2);
    match &model.classes {
        Some(classes) => {
            if want("label") {
                outputs.push(V2Output {
                    name: "label",
                    datatype: "BYTES",
                    shape: vec![scored.rows],
                    data: V2Data::Labels(&scored.labels, classes),
                });
            }
            if want("probabilities") {
                outputs.push(V2Output {
                    name: "probabilities",
                    datatype: "FP64",
                    shape: vec![scored.rows, classes.len()],
                    data: V2Data::Numbers(&scored.outputs),
                });
            }
        }
        None => outputs.push(V2Output {
            name: "prediction",
            datatype: "FP64",
            shape: vec![scored.rows],
            data: V2Data::Numbers(&scored.outputs),
        }),
    }
    to_json(&V2Response {
        model_name: &model.name,
        model_version: &model.version,
        id,
        parameters: RequestIdParam { request_id },
        outputs,
    })
}

pub(crate) async fn infer(
    State(state): State<Arc<ScoreState>>,
    Path(model): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    infer_common(&state, model, None, headers, body).await
}

pub(crate) async fn infer_version(
    State(state): State<Arc<ScoreState>>,
    Path((model, version)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    infer_common(&state, model, Some(version), headers, body).await
}

pub(crate) async fn infer_common(
    state: &ScoreState,
    model_name: String,
    version: Option<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let mut call = Call::new(state, "v2");
    let bytes = match read_body(body, &headers, state.config.max_body_bytes).await {
        Ok(b) => b,
        Err(e) => return call.reject(e, &[]),
    };
    let target = match state.target(&model_name, version.as_deref()).await {
        Ok(t) => t,
        Err(e) => return call.reject(e, &bytes),
    };
    // Until the body names a key, a refusal is production's (or the version asked for).
    let fallback = target.pick(None);
    call.model = Some(fallback.model.name.clone());
    call.version = Some(match &target {
        Target::Version(m) => m.version.clone(),
        Target::Serving(s) => s.production.version.clone(),
    });
    let key = header_key(&headers);
    let header_len = headers
        .get("inference-header-content-length")
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    match content_type(&headers).as_deref() {
        None | Some("application/json" | "application/octet-stream") => {}
        Some(other) => {
            return call.reject(
                ApiError::unsupported(format!(
                    "content type {other:?}: infer takes application/json (or the binary tensor extension); with curl add -H 'Content-Type: application/json'"
                )),
                &bytes,
            );
        }
    }
    off_worker(bytes.len(), || {
        v2_body(&mut call, &target, key, &bytes, header_len.as_deref())
    })
}

/// Parses, scores and answers a V2 infer body (synchronous: CPU only).
///
/// The version that answers is picked once the body is read: a canary split follows the
/// `x-lambdaml-key` header or the request's `parameters.key`.
pub(crate) fn v2_body(
    call: &mut Call<'_>,
    target: &Target,
    key: Option<String>,
    bytes: &Bytes,
    header_len: Option<&str>,
) -> Response {
    let state = call.state;
    let (json_part, binary) = match parse::split_binary(bytes, header_len) {
        Ok(parts) => parts,
        Err(e) => return call.reject(e, bytes),
    };
    let json = match parse_json(json_part, state.json_budget(target.width())) {
        Ok(v) => v,
        Err(e) => return call.reject(e, bytes),
    };
    let key = key.or_else(|| {
        json.get("parameters")
            .and_then(|p| p.get("key"))
            .and_then(|k| match k {
                Value::String(s) => Some(s.clone()),
                Value::Number(n) => Some(n.to_string()),
                _ => None,
            })
    });
    let model = call.routed(target.pick(key.as_deref()));
    let model = model.as_ref();
    let request = match parse::v2_request(model, &json, binary, state.limits()) {
        Ok(r) => r,
        Err(e) => {
            call.client_id = json.get("id").and_then(Value::as_str).map(str::to_string);
            return call.reject(e, bytes);
        }
    };
    call.client_id = request.id.map(str::to_string);
    match score_frame(model, &request.frame) {
        Ok(scored) => {
            let id = request.id.unwrap_or(&call.request_id);
            let body = v2_response(model, &scored, id, &call.request_id, &request.outputs);
            call.accept(model, &request.frame, scored, bytes.len(), body)
        }
        Err(e) => call.reject(e, bytes),
    }
}
