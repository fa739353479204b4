//! Helpers for the end-to-end tests: building a whole local or emulated deployment.

#![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.

use std::sync::Arc;

use lambdaml::message::Stage;
use lambdaml::queue::DEPLOYMENTS;
use lambdaml::queue::Queues;
use lambdaml::stage::StageHandler;
use lambdaml::store::ObjectStore;
use lambdaml_deploy::Deploy;
use lambdaml_evaluate::Evaluate;
use lambdaml_ingest::Ingest;
use lambdaml_preprocess::Preprocess;
use lambdaml_train::Train;

/// The stage handlers over one store and one set of queues, as every deployment wires them.
pub async fn handlers(store: &Arc<dyn ObjectStore>, queues: &Queues) -> Vec<Arc<dyn StageHandler>> {
    let q = |s: Stage| queues.get(s);
    vec![
        Arc::new(Ingest::new(
            store.clone(),
            q(Stage::Preprocess).await.unwrap(),
        )),
        Arc::new(Preprocess::new(
            store.clone(),
            q(Stage::Train).await.unwrap(),
        )),
        Arc::new(Train::new(
            store.clone(),
            q(Stage::Evaluate).await.unwrap(),
            q(Stage::Train).await.unwrap(),
        )),
        Arc::new(Evaluate::new(
            store.clone(),
            q(Stage::Deploy).await.unwrap(),
        )),
        Arc::new(Deploy::new(
            store.clone(),
            queues.named(DEPLOYMENTS).await.unwrap(),
        )),
    ]
}

/// The emulator endpoint, or `None` with a loud notice outside `make test` (where
/// `LAMBDAML_REQUIRE_EMULATOR` makes a missing emulator a failure).
pub fn emulator(test: &str) -> Option<String> {
    match std::env::var("AWS_ENDPOINT_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            assert!(
                std::env::var_os("LAMBDAML_REQUIRE_EMULATOR").is_none(),
                "{test}: LAMBDAML_REQUIRE_EMULATOR is set but AWS_ENDPOINT_URL is not"
            );
            use std::io::Write;
            let _ = writeln!(
                std::io::stderr(),
                "\n*** SKIPPED {test}: no AWS emulator (AWS_ENDPOINT_URL unset). `make test` starts moto and runs it. ***\n"
            );
            None
        }
    }
}

/// An S3 `ObjectCreated` notification for `key` (URL-encoded, as S3 sends it).
pub fn s3_notification(bucket: &str, key: &str) -> serde_json::Value {
    let encoded: String = key
        .split('/')
        .map(|seg| {
            seg.bytes()
                .map(|b| match b {
                    b' ' => "+".to_string(),
                    b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => {
                        (b as char).to_string()
                    }
                    other => format!("%{other:02X}"),
                })
                .collect::<String>()
        })
        .collect::<Vec<_>>()
        .join("/");
    serde_json::json!({"Records": [{
        "eventVersion": "2.1", "eventSource": "aws:s3", "eventName": "ObjectCreated:Put",
        "s3": {"bucket": {"name": bucket}, "object": {"key": encoded}}
    }]})
}
