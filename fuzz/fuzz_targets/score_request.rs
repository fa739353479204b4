//! Every scoring request parser over a real fitted model (the mixed model: two numeric
//! features, a boolean and a categorical one): V2 JSON, V2 with the binary tensor extension,
//! MLflow JSON (streamed records, then the tree), CSV, and feedback. The first byte picks
//! the form (and, for binary, the next two the JSON part's length). Whatever parses is scored. Never a panic, never a 5xx for a
//! client's bytes, and never an allocation by a declared size (libFuzzer's -rss_limit_mb
//! and -malloc_limit_mb catch one).
#![no_main]

use std::sync::OnceLock;

use lambdaml_score::loader::LoadedModel;
use lambdaml_score::parse::{self, Limits};
use libfuzzer_sys::fuzz_target;

const MANIFEST: &[u8] = include_bytes!("../fixtures/mixed-manifest.json");
const WEIGHTS: &[u8] = include_bytes!("../fixtures/mixed-model.safetensors");
const LIMITS: Limits = Limits { max_rows: 1000 };

fn model() -> &'static LoadedModel {
    static MODEL: OnceLock<LoadedModel> = OnceLock::new();
    MODEL.get_or_init(|| {
        let manifest = serde_json::from_slice(MANIFEST).expect("the fixture manifest");
        LoadedModel::new(manifest, WEIGHTS).expect("the fixture model")
    })
}

fn client_error(e: &lambdaml_score::error::ApiError) {
    assert!(
        e.status.is_client_error(),
        "{} for a client's bytes: {}",
        e.status,
        e.error
    );
}

fuzz_target!(|data: &[u8]| {
    let Some((&form, rest)) = data.split_first() else {
        return;
    };
    let model = model();
    let budget = lambdaml_score::budget::for_rows(LIMITS.max_rows, model.width());
    let json = |bytes: &[u8]| -> Option<serde_json::Value> {
        lambdaml_score::budget::check(bytes, budget).ok()?;
        serde_json::from_slice(bytes).ok()
    };
    let scored = |frame: &parse::Frame<'_>| {
        if let Err(e) = lambdaml_score::score_frame(model, frame) {
            client_error(&e);
        }
    };
    match form % 5 {
        0 => {
            if let Some(v) = json(rest) {
                match parse::v2_request(model, &v, &[], LIMITS) {
                    Ok(r) => scored(&r.frame),
                    Err(e) => client_error(&e),
                }
            }
        }
        1 => {
            if rest.len() < 2 {
                return;
            }
            let n = usize::from(u16::from_le_bytes([rest[0], rest[1]]));
            let body = &rest[2..];
            match parse::split_binary(body, Some(&n.to_string())) {
                Ok((head, binary)) => {
                    if let Some(v) = json(head) {
                        match parse::v2_request(model, &v, binary, LIMITS) {
                            Ok(r) => scored(&r.frame),
                            Err(e) => client_error(&e),
                        }
                    }
                }
                Err(e) => client_error(&e),
            }
        }
        2 => {
            // The streaming records parser first, as the server does; then the tree.
            let mut owned = Vec::new();
            match lambdaml_score::stream::records(model, rest, LIMITS, &mut owned) {
                Some(Ok(pending)) => scored(&pending.resolve(&owned)),
                Some(Err(e)) => client_error(&e),
                None => {}
            }
            if let Some(v) = json(rest) {
                match parse::mlflow_json(model, &v, LIMITS) {
                    Ok(frame) => scored(&frame),
                    Err(e) => client_error(&e),
                }
            }
        }
        3 => match parse::read_csv(rest, LIMITS) {
            Ok(csv) => match parse::csv_frame(model, &csv, LIMITS) {
                Ok(frame) => scored(&frame),
                Err(e) => client_error(&e),
            },
            Err(e) => client_error(&e),
        },
        _ => {
            if let Some(v) = json(rest)
                && let Err(e) = lambdaml_score::feedback_records(
                    model.classes.as_deref(),
                    &v,
                    "fuzz",
                    "2026-01-01T00:00:00Z",
                )
            {
                client_error(&e);
            }
        }
    }
});
