//! The pipeline end to end: a file dropped in `raw/` flows through ingest and preprocess
//! by way of real queues — on the embedded default, and on the AWS emulator (S3 bucket
//! notifications into SQS, real SQS queues with dead-letter queues).

#![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.

use std::sync::Arc;

use bytes::Bytes;
use lambdaml::dataset::DatasetManifest;
use lambdaml::message::Stage;
use lambdaml::queue::{DEPLOYMENTS, open_queues};
use lambdaml::registry::{Action, RegistryStore};
use lambdaml::run::RunManifest;
use lambdaml::stage::{DrainOptions, drain};
use lambdaml::store::{FileStore, ObjectKey, ObjectStore, ObjectStoreExt, S3Store};
use lambdaml_e2e::{emulator, handlers, s3_notification};

const BREAST_CANCER: &[u8] = include_bytes!("../../data/sklearn_breast_cancer.csv");
const BREAST_SPEC: &str = include_str!("../../examples/specs/breast_cancer.toml");

fn key(k: &str) -> ObjectKey {
    ObjectKey::new(k).unwrap()
}

/// What every deployment must have produced for the breast-cancer file.
async fn assert_pipeline_output(store: &dyn ObjectStore) -> RunManifest {
    let manifests: Vec<_> = store
        .list_all("datasets/breast-cancer/")
        .await
        .unwrap()
        .into_iter()
        .filter(|m| m.key.as_str().ends_with("manifest.json"))
        .collect();
    assert_eq!(manifests.len(), 1, "exactly one dataset version");
    let dataset: DatasetManifest = store.get_json(&manifests[0].key).await.unwrap();
    assert_eq!((dataset.rows, dataset.rejected), (569, 0));
    for artifact in dataset.artifacts.values() {
        assert!(
            store.exists(&key(artifact)).await.unwrap(),
            "{artifact} missing"
        );
    }
    let runs: Vec<_> = store
        .list_all("runs/")
        .await
        .unwrap()
        .into_iter()
        .filter(|m| m.key.as_str().ends_with("manifest.json"))
        .collect();
    assert_eq!(runs.len(), 1, "exactly one run");
    let run: RunManifest = store.get_json(&runs[0].key).await.unwrap();
    assert_eq!(
        (run.train_rows, run.holdout_rows, run.features),
        (455, 114, 30)
    );
    assert_eq!(run.dataset_version, dataset.version);
    for artifact in run.artifacts.values() {
        assert!(
            store.exists(&key(artifact)).await.unwrap(),
            "{artifact} missing"
        );
    }
    run
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_file_flows_to_a_preprocessed_run_on_the_embedded_default() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn ObjectStore> = Arc::new(FileStore::open(dir.path().join("store")).unwrap());
    let queues = open_queues(
        &format!("file://{}", dir.path().join("queues").display()),
        3,
    )
    .await
    .unwrap();
    store
        .put(
            &key("specs/breast-cancer.toml"),
            Bytes::from_static(BREAST_SPEC.as_bytes()),
        )
        .await
        .unwrap();
    let raw = "raw/breast-cancer/upload 2026-11-27.csv";
    store
        .put(&key(raw), Bytes::from_static(BREAST_CANCER))
        .await
        .unwrap();
    // The notification arrives twice (at-least-once) and once as a poison message.
    let ingest = queues.get(Stage::Ingest).await.unwrap();
    let notification = s3_notification("local", raw).to_string();
    ingest.send(&notification).await.unwrap();
    ingest.send(&notification).await.unwrap();
    ingest
        .send(r#"{"version": 99, "stage": "ingest"}"#)
        .await
        .unwrap();

    let handlers = handlers(&store, &queues).await;
    let report = drain(&queues, &handlers, &DrainOptions::default(), &|_| {})
        .await
        .unwrap();
    let outcomes: Vec<(Stage, &str)> = report.iter().map(|h| (h.stage, h.outcome)).collect();
    assert_eq!(
        outcomes
            .iter()
            .filter(|o| **o == (Stage::Ingest, "ok"))
            .count(),
        2
    );
    assert_eq!(
        outcomes
            .iter()
            .filter(|o| **o == (Stage::Ingest, "dead_letter"))
            .count(),
        1
    );
    assert_eq!(
        outcomes
            .iter()
            .filter(|o| **o == (Stage::Preprocess, "ok"))
            .count(),
        2
    );

    let run = assert_pipeline_output(store.as_ref()).await;
    // Both deliveries reach train, evaluate and deploy; the second changes nothing.
    for stage in [Stage::Train, Stage::Evaluate, Stage::Deploy] {
        assert_eq!(
            outcomes.iter().filter(|o| **o == (stage, "ok")).count(),
            2,
            "{stage}"
        );
    }
    let registry = RegistryStore::new(store.clone())
        .get("breast-cancer")
        .await
        .unwrap();
    let production = registry
        .production_entry()
        .expect("a version is in production");
    assert_eq!(production.run_id, run.run_id);
    assert_eq!(
        registry.versions.len(),
        1,
        "one version despite the redelivery"
    );
    let actions: Vec<Action> = registry.history.iter().map(|h| h.action).collect();
    assert_eq!(actions, vec![Action::Register, Action::Promote]);
    // scikit-learn on the same split (train_test_split(test_size=0.2, random_state=42),
    // StandardScaler, LogisticRegression()): accuracy 0.9736842105263158, AUC 0.99737962659679.
    assert!((production.metrics["accuracy"] - 0.973_684_210_526_315_8).abs() < 0.005);
    assert!((production.metrics["roc_auc"] - 0.997_379_626_596_79).abs() < 0.001);
    let deployments = queues.named(DEPLOYMENTS).await.unwrap();
    let events = deployments
        .receive(10, std::time::Duration::from_secs(5))
        .await
        .unwrap();
    // Each delivery of the evaluate and deploy messages announces its change (an
    // announcement lost after the swap is made by the redelivery); the repeats carry one
    // event id.
    let mut ids: std::collections::BTreeMap<String, std::collections::BTreeSet<String>> =
        Default::default();
    for e in &events {
        let v: serde_json::Value = serde_json::from_str(&e.body).unwrap();
        ids.entry(v["event"].as_str().unwrap().to_string())
            .or_default()
            .insert(v["event_id"].as_str().unwrap().to_string());
    }
    assert_eq!(ids["promoted"].len(), 1, "one promotion: {ids:?}");
    assert_eq!(ids["registered"].len(), 1, "one registration: {ids:?}");
    assert_eq!(ids.len(), 2, "{ids:?}");
    for stage in Stage::ALL {
        let stats = queues.get(stage).await.unwrap().stats().await.unwrap();
        assert_eq!(stats.visible + stats.in_flight, 0, "{stage} queue drained");
    }
    let dead = ingest.dead_letters(10).await.unwrap();
    assert!(
        dead[0].reason.contains("unsupported message version 99"),
        "{dead:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_uploaded_to_s3_flows_through_sqs_on_the_emulator() {
    if emulator("a_file_uploaded_to_s3_flows_through_sqs_on_the_emulator").is_none() {
        return;
    }
    use aws_sdk_s3::types::{
        Event, FilterRule, FilterRuleName, NotificationConfiguration,
        NotificationConfigurationFilter, QueueConfiguration, S3KeyFilter,
    };
    use aws_sdk_sqs::types::QueueAttributeName;
    let config = lambdaml::store::sdk_config().await;
    let sqs = aws_sdk_sqs::Client::new(&config);
    let id = &uuid::Uuid::new_v4().simple().to_string()[..10];
    let prefix = format!("e2e{id}-");
    // One queue per stage, each with its dead-letter queue (redrive after 3 receives).
    let mut ingest_arn = String::new();
    sqs.create_queue()
        .queue_name(format!("{prefix}{DEPLOYMENTS}"))
        .send()
        .await
        .unwrap();
    for stage in Stage::ALL {
        let dlq = sqs
            .create_queue()
            .queue_name(format!("{prefix}{stage}-dlq"))
            .send()
            .await
            .unwrap();
        let dlq_arn = lambdaml_e2e::queue_arn(&sqs, dlq.queue_url().unwrap()).await;
        let q = sqs
            .create_queue()
            .queue_name(format!("{prefix}{stage}"))
            .attributes(
                QueueAttributeName::RedrivePolicy,
                serde_json::json!({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": 3})
                    .to_string(),
            )
            .send()
            .await
            .unwrap();
        if stage == Stage::Ingest {
            ingest_arn = lambdaml_e2e::queue_arn(&sqs, q.queue_url().unwrap()).await;
        }
    }
    let bucket = format!("e2e-{id}");
    let s3 = S3Store::from_env(&bucket, "").await;
    s3.client()
        .create_bucket()
        .bucket(&bucket)
        .send()
        .await
        .unwrap();
    let filter = NotificationConfigurationFilter::builder()
        .key(
            S3KeyFilter::builder()
                .filter_rules(
                    FilterRule::builder()
                        .name(FilterRuleName::Prefix)
                        .value("raw/")
                        .build(),
                )
                .build(),
        )
        .build();
    s3.client()
        .put_bucket_notification_configuration()
        .bucket(&bucket)
        .notification_configuration(
            NotificationConfiguration::builder()
                .queue_configurations(
                    QueueConfiguration::builder()
                        .queue_arn(&ingest_arn)
                        .events(Event::S3ObjectCreated)
                        .filter(filter)
                        .build()
                        .unwrap(),
                )
                .build(),
        )
        .send()
        .await
        .unwrap();
    let store: Arc<dyn ObjectStore> = Arc::new(s3);
    store
        .put(
            &key("specs/breast-cancer.toml"),
            Bytes::from_static(BREAST_SPEC.as_bytes()),
        )
        .await
        .unwrap();
    // The upload itself is the trigger: S3 notifies the ingest queue (key URL-encoded).
    store
        .put(
            &key("raw/breast-cancer/first upload (1).csv"),
            Bytes::from_static(BREAST_CANCER),
        )
        .await
        .unwrap();

    let queues = open_queues(&format!("sqs://{prefix}"), 3).await.unwrap();
    let handlers = handlers(&store, &queues).await;
    let report = drain(&queues, &handlers, &DrainOptions::default(), &|_| {})
        .await
        .unwrap();
    assert!(
        report
            .iter()
            .any(|h| h.stage == Stage::Preprocess && h.outcome == "ok"),
        "{report:?}"
    );
    assert_pipeline_output(store.as_ref()).await;

    // A poison message goes to the ingest dead-letter queue with its reason.
    let ingest = queues.get(Stage::Ingest).await.unwrap();
    ingest
        .send(r#"{"version": 7, "stage": "ingest"}"#)
        .await
        .unwrap();
    drain(&queues, &handlers, &DrainOptions::default(), &|_| {})
        .await
        .unwrap();
    let dead = ingest.dead_letters(10).await.unwrap();
    assert!(
        dead.iter()
            .any(|d| d.reason.contains("unsupported message version 7")),
        "{dead:?}"
    );
    let registry = RegistryStore::new(store.clone())
        .get("breast-cancer")
        .await
        .unwrap();
    assert!(
        registry.production.is_some(),
        "the model reached production through SQS"
    );
}
