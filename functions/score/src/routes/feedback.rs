//! Ground truth: `POST /v2/models/{m}/feedback`, joined to captures by request id and row.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use lambdaml::capture::{FeedbackRecord, millis, write_feedback};
use serde_json::Value;

use crate::error::{ApiError, Errors};
use crate::loader::check_name;
use crate::metrics::Outcome;
use crate::respond::{
    content_type, error_response, json_response, new_request_id, parse_json, read_body, to_json,
    with_outcome,
};
use crate::state::ScoreState;

/// Reads ground-truth feedback for `model` from a JSON body:
/// `{"request_id", "label"}`, `{"request_id", "labels": [...]}` (one per row), or
/// `{"feedback": [{"request_id", "row"?, "label"}, ...]}`. Labels are checked against the
/// classes (classification) or must be numbers (regression).
pub fn feedback_records(
    classes: Option<&[String]>,
    body: &Value,
    source: &str,
    received_at: &str,
) -> Result<Vec<FeedbackRecord>, ApiError> {
    let received_at = received_at.to_string();
    let mut out = Vec::new();
    let mut errors = Errors::default();
    let mut add =
        |errors: &mut Errors, item: usize, request_id: &Value, row: usize, label: &Value| {
            let request_id = match request_id {
                Value::String(s) if !s.is_empty() && s.len() <= 128 => s.clone(),
                other => {
                    errors.push(
                        Some(item),
                        Some("request_id"),
                        format!("expected the request id the score function returned, got {other}"),
                    );
                    return;
                }
            };
            let label = match label_text(classes, label) {
                Ok(l) => l,
                Err(reason) => {
                    errors.push(Some(item), Some("label"), reason);
                    return;
                }
            };
            out.push(FeedbackRecord {
                request_id,
                row,
                label,
                received_at: received_at.clone(),
                source: source.to_string(),
            });
        };
    let Value::Object(obj) = body else {
        return Err(ApiError::bad_request(
            "expected a JSON object: {\"request_id\", \"label\"}, {\"request_id\", \"labels\"} or {\"feedback\": [...]}",
        ));
    };
    if let Some(items) = obj.get("feedback") {
        let Value::Array(items) = items else {
            return Err(ApiError::field(
                StatusCode::BAD_REQUEST,
                Some("feedback"),
                "expected an array of {request_id, row, label}",
            ));
        };
        for (i, item) in items.iter().enumerate() {
            let row = match item.get("row") {
                None | Some(Value::Null) => Some(0),
                Some(v) => v.as_u64().map(|r| r as usize),
            };
            let Some(row) = row else {
                errors.push(Some(i), Some("row"), "expected a row number");
                continue;
            };
            add(
                &mut errors,
                i,
                item.get("request_id").unwrap_or(&Value::Null),
                row,
                item.get("label").unwrap_or(&Value::Null),
            );
        }
    } else {
        let id = obj.get("request_id").unwrap_or(&Value::Null);
        match (obj.get("label"), obj.get("labels")) {
            (Some(label), None) => add(&mut errors, 0, id, 0, label),
            (None, Some(Value::Array(labels))) => {
                for (row, label) in labels.iter().enumerate() {
                    add(&mut errors, row, id, row, label);
                }
            }
            _ => {
                return Err(ApiError::field(
                    StatusCode::BAD_REQUEST,
                    Some("label"),
                    "expected label (one row) or labels (an array, one per row), or a feedback array",
                ));
            }
        }
    }
    if !errors.is_empty() {
        return Err(ApiError::invalid(errors));
    }
    if out.is_empty() {
        return Err(ApiError::bad_request("no feedback in the request"));
    }
    Ok(out)
}

pub(crate) fn label_text(classes: Option<&[String]>, label: &Value) -> Result<String, String> {
    let text = match label {
        Value::String(s) => s.clone(),
        Value::Number(n) => match n.as_i64() {
            Some(i) => i.to_string(),
            None => n.to_string(),
        },
        Value::Bool(b) => b.to_string(),
        other => return Err(format!("expected a label, got {other}")),
    };
    match classes {
        Some(classes) if !classes.contains(&text) => Err(format!(
            "{text:?} is not a class of this model ({})",
            classes.join(", ")
        )),
        Some(_) => Ok(text),
        None => match text.trim().parse::<f64>() {
            Ok(x) if x.is_finite() => Ok(text),
            _ => Err(format!(
                "expected a number (a regression target), got {text:?}"
            )),
        },
    }
}

pub(crate) async fn feedback(
    State(state): State<Arc<ScoreState>>,
    Path(model_name): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let request_id = new_request_id();
    let outcome = |model: Option<String>, rows: usize, errors: usize| Outcome {
        route: "feedback",
        model,
        version: None,
        rows,
        validation_errors: errors,
    };
    let result = async {
        check_name("model", &model_name)?;
        // Labels flow into retraining data, so a body a browser may send cross-site without
        // asking (no content type, text/plain, a form) is refused before it is read.
        match content_type(&headers).as_deref() {
            Some("application/json") => {}
            other => {
                return Err(ApiError::unsupported(format!(
                    "content type {}: feedback takes application/json",
                    other.map_or("missing".to_string(), |o| format!("{o:?}"))
                )));
            }
        }
        let bytes = read_body(body, &headers, state.config.max_body_bytes).await?;
        let model = state.production(&model_name).await?;
        // A feedback item is a small object: budget it as a row of a few fields.
        let json = parse_json(&bytes, state.json_budget(4))?;
        let records = feedback_records(
            model.classes.as_deref(),
            &json,
            "http",
            &millis(state.clock.now()),
        )?;
        let key = write_feedback(state.store.as_ref(), &model.name, &records)
            .await
            .map_err(|e| ApiError::internal(format!("writing feedback: {e}")))?;
        Ok::<_, ApiError>((records.len(), key))
    }
    .await;
    match result {
        Ok((n, key)) => with_outcome(
            json_response(
                StatusCode::OK,
                to_json(&serde_json::json!({
                    "accepted": n, "stored": key.as_str(), "request_id": request_id
                })),
                Some(&request_id),
            ),
            outcome(Some(model_name), n, 0),
        ),
        Err(e) => {
            let errors = e.details_total.max(1);
            with_outcome(error_response(&e, &request_id), outcome(None, 0, errors))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn feedback_labels_are_checked_against_the_classes() {
        let classes = vec!["0".to_string(), "1".to_string()];
        let ok = feedback_records(
            Some(&classes),
            &serde_json::json!({"request_id": "r1", "labels": [1, "0"]}),
            "http",
            "2026-01-01T00:00:00.000Z",
        )
        .unwrap();
        assert_eq!(ok.len(), 2);
        assert_eq!((ok[0].row, ok[0].label.as_str()), (0, "1"));
        assert_eq!((ok[1].row, ok[1].label.as_str()), (1, "0"));
        let e = feedback_records(
            Some(&classes),
            &serde_json::json!({"feedback": [{"request_id": "r", "label": "2"}, {"label": "1"}]}),
            "http",
            "2026-01-01T00:00:00.000Z",
        )
        .unwrap_err();
        assert_eq!(e.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(e.details_total, 2);
        assert_eq!(e.details[0].field.as_deref(), Some("label"));
        assert_eq!(e.details[1].field.as_deref(), Some("request_id"));
        let e = feedback_records(
            None,
            &serde_json::json!({"request_id": "r", "label": "x"}),
            "cli",
            "2026-01-01T00:00:00.000Z",
        )
        .unwrap_err();
        assert!(e.error.contains("regression"), "{}", e.error);
    }
}
