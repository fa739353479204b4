//! The registry under contention: 50 concurrent promotions through compare-and-swap, on the
//! file store and on S3 (moto under `make test`), leave 50 history entries and one
//! consistent production pointer.

#![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.

use crate::common;

use std::collections::BTreeMap;
use std::sync::Arc;

use lambdaml::registry::{Action, RegistryStore, VersionEntry, VersionStatus};
use lambdaml::store::{FileStore, ObjectStore, S3Store};

fn entry(i: usize) -> VersionEntry {
    VersionEntry {
        version: format!("v{i:03}"),
        number: 0,
        status: VersionStatus::Candidate,
        run_id: format!("run-{i}"),
        dataset_version: "d".into(),
        manifest: format!("models/m/v{i:03}/manifest.json"),
        metrics: BTreeMap::from([("roc_auc".to_string(), 0.5 + i as f64 / 1000.0)]),
        registered_at: String::new(),
    }
}

async fn fifty_concurrent_promotions(store: Arc<dyn ObjectStore>) {
    let registry = RegistryStore::new(store);
    for i in 0..50 {
        registry
            .update("m", |r| Ok(r.register(entry(i), "test")))
            .await
            .unwrap();
    }
    let mut tasks = Vec::new();
    for i in 0..50 {
        let registry = registry.clone();
        tasks.push(tokio::spawn(async move {
            registry
                .update("m", |r| {
                    r.promote(&format!("v{i:03}"), "deploy", "concurrent")
                })
                .await
                .unwrap();
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let r = registry.get("m").await.unwrap();
    let promotions = r
        .history
        .iter()
        .filter(|h| h.action == Action::Promote)
        .count();
    assert_eq!(promotions, 50, "every promotion is in the history");
    let in_production: Vec<&VersionEntry> = r
        .versions
        .values()
        .filter(|v| v.status == VersionStatus::Production)
        .collect();
    assert_eq!(in_production.len(), 1, "exactly one version serves");
    assert_eq!(
        r.production.as_deref(),
        Some(in_production[0].version.as_str())
    );
    assert_eq!(
        r.history.last().unwrap().version,
        in_production[0].version,
        "the pointer is the last promotion's"
    );
    // Each promotion names the version it replaced: the chain is unbroken.
    let chain: Vec<(Option<String>, String)> = r
        .history
        .iter()
        .filter(|h| h.action == Action::Promote)
        .map(|h| (h.previous.clone(), h.version.clone()))
        .collect();
    for pair in chain.windows(2) {
        assert_eq!(pair[1].0.as_deref(), Some(pair[0].1.as_str()));
    }
    assert_eq!(
        r.versions
            .values()
            .filter(|v| v.status == VersionStatus::Archived)
            .count(),
        49
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_concurrent_promotions_on_the_file_store() {
    let dir = tempfile::tempdir().unwrap();
    fifty_concurrent_promotions(Arc::new(FileStore::open(dir.path()).unwrap())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_concurrent_promotions_on_the_emulator() {
    if common::emulator("fifty_concurrent_promotions_on_the_emulator").is_none() {
        return;
    }
    let bucket = common::unique("registry");
    let store = S3Store::from_env(&bucket, "").await;
    store
        .client()
        .create_bucket()
        .bucket(&bucket)
        .send()
        .await
        .unwrap();
    fifty_concurrent_promotions(Arc::new(store)).await;
}
