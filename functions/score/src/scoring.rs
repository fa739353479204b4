//! Scoring a validated frame with a loaded model, and what every scoring route shares: the
//! per-request [`Call`] (validation, capture, outcome) and running large bodies off the
//! async workers.

use std::sync::Arc;
use std::time::Instant;

use axum::http::{HeaderValue, StatusCode};
use axum::response::Response;
use lambdaml::capture::{CaptureRecord, CaptureWriter, CapturedValue, FieldError, millis};
use lambdaml::features::RawValue;
use lambdaml::registry::Role;

use crate::error::{ApiError, Errors};
use crate::loader::LoadedModel;
use crate::metrics::Outcome;
use crate::parse::Frame;
use crate::respond::{error_response, json_response, new_request_id, with_outcome};
use crate::state::ScoreState;

/// The predictions for a frame.
#[derive(Debug)]
pub struct Scored {
    /// Rows.
    pub rows: usize,
    /// Probabilities (rows × classes) or values (rows).
    pub outputs: Vec<f64>,
    /// Predicted class index per row (classification).
    pub labels: Vec<usize>,
}

/// Validates and encodes the frame with the version's fitted pipeline, then predicts.
pub fn score_frame(model: &LoadedModel, frame: &Frame<'_>) -> Result<Scored, ApiError> {
    let width = model.width();
    let dim = model.manifest.pipeline.output_dim;
    let mut x = vec![0.0f32; frame.rows * dim];
    let mut errors = Errors::default();
    for (row, (values, out)) in frame
        .values
        .chunks_exact(width.max(1))
        .zip(x.chunks_exact_mut(dim.max(1)))
        .enumerate()
    {
        model.manifest.pipeline.transform_checked(values, out, |e| {
            errors.push(Some(row), Some(&e.field), e.reason);
        });
    }
    if !errors.is_empty() {
        return Err(ApiError::invalid(errors));
    }
    let mut outputs = Vec::with_capacity(frame.rows * model.dense.output_width());
    model
        .dense
        .predict_into(&x, frame.rows, &mut outputs)
        .map_err(|e| ApiError::internal(format!("prediction failed: {e}")))?;
    let labels = match &model.classes {
        Some(classes) => outputs
            .chunks_exact(classes.len().max(1))
            .map(|p| {
                let mut best = 0;
                for (i, v) in p.iter().enumerate() {
                    if *v > p[best] {
                        best = i;
                    }
                }
                best
            })
            .collect(),
        None => Vec::new(),
    };
    Ok(Scored {
        rows: frame.rows,
        outputs,
        labels,
    })
}

pub(crate) fn captured_inputs(frame: &Frame<'_>, width: usize) -> Vec<Vec<CapturedValue>> {
    frame
        .values
        .chunks_exact(width.max(1))
        .map(|row| {
            row.iter()
                .map(|v| match v {
                    RawValue::Missing => CapturedValue::Null,
                    RawValue::Number(x) => CapturedValue::Number(*x),
                    RawValue::Text(t) => CapturedValue::Text((*t).to_string()),
                })
                .collect()
        })
        .collect()
}

/// What a scoring call carries to its capture record and answer.
pub(crate) struct Call<'a> {
    pub(crate) state: &'a ScoreState,
    pub(crate) request_id: String,
    pub(crate) timestamp: String,
    pub(crate) started: Instant,
    pub(crate) protocol: &'static str,
    pub(crate) model: Option<String>,
    pub(crate) version: Option<String>,
    pub(crate) client_id: Option<String>,
    /// The answering version's rollout role (None: production or an explicit version).
    pub(crate) role: Option<Role>,
    /// The shadow that also scores this request, when it is in the shadow's share.
    pub(crate) shadow: Option<crate::loader::ShadowRun>,
}

impl<'a> Call<'a> {
    pub(crate) fn new(state: &'a ScoreState, protocol: &'static str) -> Self {
        Call {
            state,
            request_id: new_request_id(),
            timestamp: millis(state.clock.now()),
            started: Instant::now(),
            protocol,
            model: None,
            version: None,
            client_id: None,
            role: None,
            shadow: None,
        }
    }

    /// Answers with `model` (and its `role`), mirrored to `shadow`.
    pub(crate) fn routed(&mut self, picked: crate::state::Picked) -> Arc<LoadedModel> {
        self.model = Some(picked.model.name.clone());
        self.version = Some(picked.model.version.clone());
        self.role = picked.role;
        self.shadow = picked.shadow;
        picked.model
    }

    pub(crate) fn capture(&self, record: &CaptureRecord) {
        if self.state.capture.record(record) && !self.state.config.flush_each_request {
            let writer = self.state.capture.clone();
            tokio::spawn(async move { writer.flush_due().await });
        }
    }

    pub(crate) fn base_record(&self, status: u16, body_bytes: usize) -> CaptureRecord {
        CaptureRecord {
            request_id: self.request_id.clone(),
            client_id: self.client_id.clone(),
            timestamp: self.timestamp.clone(),
            model: self
                .model
                .clone()
                .unwrap_or_else(|| "_unrouted".to_string()),
            version: self.version.clone(),
            role: self.role,
            protocol: self.protocol.to_string(),
            status,
            latency_us: self.started.elapsed().as_micros() as u64,
            rows: 0,
            inputs: Vec::new(),
            labels: Vec::new(),
            outputs: Vec::new(),
            errors: Vec::new(),
            body: None,
            body_bytes,
        }
    }

    /// Answers and captures a rejected request.
    pub(crate) fn reject(&self, e: ApiError, body: &[u8]) -> Response {
        let mut record = self.base_record(e.status.as_u16(), body.len());
        record.errors = if e.details.is_empty() {
            vec![lambdaml::capture::FieldError::new(
                None,
                None,
                e.error.clone(),
            )]
        } else {
            e.details.clone()
        };
        const KEEP: usize = 64 << 10;
        record.body = Some(String::from_utf8_lossy(&body[..body.len().min(KEEP)]).into_owned());
        self.capture(&record);
        let resp = error_response(&e, &self.request_id);
        with_outcome(
            resp,
            Outcome {
                route: self.protocol,
                model: self.model.clone(),
                version: self.version.clone(),
                rows: 0,
                validation_errors: e.details_total.max(1),
            },
        )
    }

    /// Answers and captures an accepted request.
    pub(crate) fn accept(
        &self,
        model: &LoadedModel,
        frame: &Frame<'_>,
        scored: Scored,
        body_bytes: usize,
        response: Vec<u8>,
    ) -> Response {
        let mut record = self.base_record(200, body_bytes);
        record.rows = scored.rows;
        record.inputs = captured_inputs(frame, model.width());
        if let Some(classes) = &model.classes {
            record.labels = scored.labels.iter().map(|i| classes[*i].clone()).collect();
        }
        record.outputs = scored.outputs;
        self.capture(&record);
        if let Some(shadow) = self.shadow.clone() {
            ShadowJob {
                capture: self.state.capture.clone(),
                flush_async: !self.state.config.flush_each_request,
                shadow: shadow.model,
                positions: shadow.inputs,
                width: model.width(),
                // Captured already: the shadow takes the rows instead of a copy.
                inputs: std::mem::take(&mut record.inputs),
                base: self.base_record(200, body_bytes),
                guard: self.state.shadows.enter(),
            }
            .start();
        }
        let mut resp = json_response(StatusCode::OK, response, Some(&self.request_id));
        if let Some(v) = &model.version_header {
            resp.headers_mut().insert("x-lambdaml-version", v.clone());
        }
        resp.headers_mut().insert(
            "x-lambdaml-role",
            HeaderValue::from_static(self.role.map_or("production", Role::name)),
        );
        with_outcome(
            resp,
            Outcome {
                route: self.protocol,
                model: Some(model.name.clone()),
                version: Some(model.version.clone()),
                rows: scored.rows,
                validation_errors: 0,
            },
        )
    }
}

/// A production request scored again by the shadow, off the response path: its answer is
/// captured under the same request id with role `shadow` and never returned. Whatever the
/// shadow does — refuse a row, fail, panic — the caller's answer was production's alone.
pub(crate) struct ShadowJob {
    capture: Arc<CaptureWriter>,
    /// Whether flushing is left to a background task (false in Lambda, where the
    /// invocation's end writes every buffer).
    flush_async: bool,
    shadow: Arc<LoadedModel>,
    /// Where each of the shadow's inputs is among production's (the order of `inputs`).
    positions: Arc<[Option<usize>]>,
    /// Production's input count.
    width: usize,
    inputs: Vec<Vec<CapturedValue>>,
    /// The production record's request id, time, model, protocol and client id.
    base: CaptureRecord,
    /// Counted in flight until the record is captured.
    guard: InFlightGuard,
}

/// Shadow jobs started and not finished: what [`ScoreState::settle`] waits for, so a
/// shutdown or the end of a simulated period writes every shadow record.
#[derive(Debug, Default)]
pub struct InFlight {
    n: std::sync::atomic::AtomicUsize,
    done: tokio::sync::Notify,
    /// Shadow outcomes so far: scored, refused (the shadow failed a request production
    /// took), skipped (the request lacks a feature the shadow takes).
    outcomes: [std::sync::atomic::AtomicU64; 3],
}

/// Counts one job in flight until dropped.
pub(crate) struct InFlightGuard(Arc<InFlight>);

impl InFlight {
    pub(crate) fn enter(self: &Arc<Self>) -> InFlightGuard {
        self.n.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        InFlightGuard(self.clone())
    }

    /// Shadow requests scored, refused and skipped so far.
    pub fn outcomes(&self) -> [u64; 3] {
        self.outcomes
            .each_ref()
            .map(|c| c.load(std::sync::atomic::Ordering::Relaxed))
    }

    fn outcome(&self, status: u16) {
        let i = match status {
            200 => 0,
            424 => 2,
            _ => 1,
        };
        self.outcomes[i].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// Jobs in flight now.
    pub fn count(&self) -> usize {
        self.n.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Waits until no job is in flight.
    pub async fn settled(&self) {
        loop {
            let notified = self.done.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.count() == 0 {
                return;
            }
            notified.await;
        }
    }
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        if self.0.n.fetch_sub(1, std::sync::atomic::Ordering::AcqRel) == 1 {
            self.0.done.notify_waiters();
        }
    }
}

/// Rows × inputs from which a shadow's scoring leaves the async workers.
const SHADOW_INLINE_VALUES: usize = 4096;

impl ShadowJob {
    /// Runs the job: on a blocking thread for large frames, as a task for small ones, and
    /// in place in Lambda (the invocation's end must find its capture record; the
    /// response is already built).
    pub(crate) fn start(self) {
        let values = self.inputs.len() * self.width;
        let runtime = tokio::runtime::Handle::try_current();
        match runtime {
            Ok(rt) if self.flush_async => {
                if values > SHADOW_INLINE_VALUES {
                    rt.spawn_blocking(move || self.run());
                } else {
                    rt.spawn(async move { self.run() });
                }
            }
            _ => {
                let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.run()));
            }
        }
    }

    /// Scores the inputs with the shadow and captures the result.
    pub(crate) fn run(self) {
        let started = Instant::now();
        let ShadowJob {
            capture,
            flush_async,
            shadow,
            positions,
            inputs,
            base: mut record,
            guard,
            ..
        } = self;
        record.version = Some(shadow.version.clone());
        record.role = Some(Role::Shadow);
        // A spec change may have added features production's requests do not carry.
        let missing: Vec<&str> = shadow
            .manifest
            .pipeline
            .inputs
            .iter()
            .zip(positions.iter())
            .filter(|(_, p)| p.is_none())
            .map(|(f, _)| f.name.as_str())
            .collect();
        if !missing.is_empty() {
            // 424: the request lacked what the shadow depends on (not the shadow's fault;
            // the monitor counts it as skipped).
            record.status = 424;
            record.errors = vec![FieldError::new(
                None,
                None,
                format!(
                    "skipped: the shadow takes {} that production's requests do not carry; scored by production only",
                    missing.join(", ")
                ),
            )];
        } else {
            // Production's values in the shadow's input order, borrowed.
            let values: Vec<RawValue<'_>> = inputs
                .iter()
                .flat_map(|row| {
                    positions
                        .iter()
                        .map(move |p| match p.and_then(|p| row.get(p)) {
                            None | Some(CapturedValue::Null) => RawValue::Missing,
                            Some(CapturedValue::Number(x)) => RawValue::Number(*x),
                            Some(CapturedValue::Text(t)) => RawValue::Text(t),
                        })
                })
                .collect();
            let frame = Frame {
                rows: inputs.len(),
                values,
                ignored: Vec::new(),
            };
            match score_frame(&shadow, &frame) {
                Ok(scored) => {
                    record.rows = scored.rows;
                    if let Some(classes) = &shadow.classes {
                        record.labels = scored.labels.iter().map(|i| classes[*i].clone()).collect();
                    }
                    // The inputs are production's record's (the same request id): a shadow
                    // record carries only what the shadow answered, half the capture cost.
                    record.outputs = scored.outputs;
                }
                Err(e) => {
                    record.status = e.status.as_u16();
                    record.errors = if e.details.is_empty() {
                        vec![FieldError::new(None, None, e.error.clone())]
                    } else {
                        e.details.clone()
                    };
                }
            }
        }
        record.latency_us = started.elapsed().as_micros() as u64;
        guard.0.outcome(record.status);
        if capture.record(&record)
            && flush_async
            && let Ok(rt) = tokio::runtime::Handle::try_current()
        {
            rt.spawn(async move { capture.flush_due().await });
        }
        drop(guard);
    }
}

/// Bodies from this size up are parsed and scored with [`tokio::task::block_in_place`], so
/// a large batch does not hold an async worker that other connections' requests (health
/// checks, one-row scoring) are waiting on. Smaller bodies take microseconds and stay put.
pub(crate) const OFF_WORKER_BYTES: usize = 64 * 1024;

/// Runs CPU-bound request work off the async worker when the body is large and the runtime
/// has other workers to hand the worker's tasks to (a current-thread runtime — tests, some
/// embedders — runs it in place).
pub(crate) fn off_worker<R>(body_len: usize, work: impl FnOnce() -> R) -> R {
    let multi = tokio::runtime::Handle::try_current()
        .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
    if body_len >= OFF_WORKER_BYTES && multi {
        tokio::task::block_in_place(work)
    } else {
        work()
    }
}
