//! Ingest, from the outside: real data, every event shape, and the bad inputs a user sends.

#![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use lambdaml::dataset::{DatasetManifest, Profile, Schema, read_parquet};
use lambdaml::message::{IngestRequest, Message, Stage, StageMessage};
use lambdaml::queue::{LocalQueue, Queue, open_queues};
use lambdaml::stage::{
    DrainOptions, SqsSource, StageError, StageHandler, drain, handle_lambda_event,
};
use lambdaml::store::{MemoryStore, ObjectKey, ObjectStore, ObjectStoreExt};
use lambdaml_ingest::Ingest;

const BREAST_CANCER: &[u8] = include_bytes!("../../../data/sklearn_breast_cancer.csv");
const BREAST_SPEC: &str = include_str!("../../../examples/specs/breast_cancer.toml");

/// A tiny spec for hand-written files: label `y`, binary, columns inferred.
const TINY_SPEC: &str = r#"
[model]
name = "tiny"
[dataset]
name = "tiny"
label = "y"
[dataset.columns.y]
type = "categorical"
values = ["0", "1"]
nullable = false
[task]
kind = "binary"
"#;

struct Env {
    store: Arc<dyn ObjectStore>,
    preprocess: Arc<LocalQueue>,
    ingest: Ingest,
    _dir: tempfile::TempDir,
}

async fn env(spec: &str) -> Env {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn ObjectStore> = Arc::new(MemoryStore::new());
    let preprocess = Arc::new(LocalQueue::open(dir.path().join("preprocess"), 3).unwrap());
    // A spec that does not parse is stored by the test itself, under the name it wants.
    if let Ok(parsed) = lambdaml::spec::ModelSpec::parse(spec) {
        let k = key(&format!("specs/{}.toml", parsed.model.name));
        store.put(&k, Bytes::from(spec.to_string())).await.unwrap();
    }
    let ingest = Ingest::new(store.clone(), preprocess.clone());
    Env {
        store,
        preprocess,
        ingest,
        _dir: dir,
    }
}

fn key(k: &str) -> ObjectKey {
    ObjectKey::new(k).unwrap()
}

impl Env {
    async fn put_raw(&self, k: &str, bytes: impl Into<Bytes>) -> ObjectKey {
        let k = key(k);
        self.store.put(&k, bytes.into()).await.unwrap();
        k
    }

    async fn ingest(
        &self,
        k: &str,
        bytes: impl Into<Bytes>,
    ) -> Result<lambdaml_ingest::IngestOutcome, StageError> {
        let k = self.put_raw(k, bytes).await;
        self.ingest
            .ingest(&IngestRequest {
                key: k,
                dataset: None,
            })
            .await
    }

    async fn rejected(&self, outcome: &lambdaml_ingest::IngestOutcome) -> Vec<serde_json::Value> {
        let text = self
            .store
            .get(&key(&format!(
                "datasets/{}/{}/rejected.jsonl",
                outcome.dataset, outcome.version
            )))
            .await
            .unwrap()
            .bytes;
        String::from_utf8(text.to_vec())
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    async fn schema(&self, outcome: &lambdaml_ingest::IngestOutcome) -> Schema {
        self.store
            .get_json(&key(&format!(
                "datasets/{}/{}/schema.json",
                outcome.dataset, outcome.version
            )))
            .await
            .unwrap()
    }

    async fn all_keys(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for m in self.store.list_all("").await.unwrap() {
            let etag = self.store.head(&m.key).await.unwrap().unwrap().etag;
            out.push((m.key.to_string(), etag));
        }
        out
    }
}

#[tokio::test]
async fn breast_cancer_is_ingested_whole_with_a_profile_and_readable_parquet() {
    let env = env(BREAST_SPEC).await;
    let out = env
        .ingest("raw/breast-cancer/sklearn_breast_cancer.csv", BREAST_CANCER)
        .await
        .unwrap();
    assert!(out.created);
    assert_eq!((out.rows, out.rejected), (569, 0));
    assert_eq!(out.models, vec!["breast-cancer"]);

    let prefix = format!("datasets/breast-cancer/{}", out.version);
    let manifest: DatasetManifest = env
        .store
        .get_json(&key(&format!("{prefix}/manifest.json")))
        .await
        .unwrap();
    assert_eq!(manifest.columns.len(), 31);
    assert_eq!(manifest.source.bytes, BREAST_CANCER.len() as u64);

    let schema = env.schema(&out).await;
    assert!(
        schema.columns[..30]
            .iter()
            .all(|c| c.kind == lambdaml::dataset::ColumnType::Float)
    );
    assert_eq!(
        schema.column("target").unwrap().kind,
        lambdaml::dataset::ColumnType::Categorical
    );

    // pandas: df = pd.read_csv("data/sklearn_breast_cancer.csv"); df["mean radius"].describe()
    //   mean 14.127292, std 3.524049, min 6.981, 50% 13.37, max 28.11
    let profile: Profile = env
        .store
        .get_json(&key(&format!("{prefix}/profile.json")))
        .await
        .unwrap();
    let radius = &profile.columns["mean radius"];
    assert!((radius.mean.unwrap() - 14.127_291_739_894_552).abs() < 1e-9);
    assert!((radius.std.unwrap() - 3.524_048_826_212_077_5).abs() < 1e-9);
    assert_eq!(radius.min, Some(6.981));
    assert_eq!(radius.quantiles["0.5"], 13.37);
    assert_eq!(
        radius
            .histogram
            .as_ref()
            .unwrap()
            .counts
            .iter()
            .sum::<u64>(),
        569
    );
    assert_eq!(profile.columns["target"].frequencies["1"], 357);

    // The Parquet file reads back with the same rows.
    let data = env
        .store
        .get(&key(&format!("{prefix}/data.parquet")))
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("d.parquet"), &data.bytes).unwrap();
    let table = read_parquet(&dir.path().join("d.parquet")).unwrap();
    assert_eq!(table.rows, 569);
    assert_eq!(table.names.len(), 31);

    // One preprocess message per spec of the dataset.
    let sent = env
        .preprocess
        .receive(10, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(sent.len(), 1);
    let message = Message::parse(&sent[0].body).unwrap();
    assert!(
        matches!(message.body, StageMessage::Preprocess(ref p) if p.dataset_version == out.version)
    );
}

#[tokio::test]
async fn the_same_bytes_twice_are_the_same_version_and_write_nothing() {
    let env = env(BREAST_SPEC).await;
    let first = env
        .ingest("raw/breast-cancer/a.csv", BREAST_CANCER)
        .await
        .unwrap();
    let before = env.all_keys().await;
    let second = env
        .ingest
        .ingest(&IngestRequest {
            key: key("raw/breast-cancer/a.csv"),
            dataset: None,
        })
        .await
        .unwrap();
    assert_eq!(first.version, second.version);
    assert!(!second.created);
    assert_eq!(env.all_keys().await, before, "no object added or rewritten");
    // Another name for the same bytes is still the same version.
    let third = env
        .ingest("raw/breast-cancer/copy.csv", BREAST_CANCER)
        .await
        .unwrap();
    assert_eq!(third.version, first.version);
    assert_eq!(env.store.list_all("datasets/").await.unwrap().len(), 5);
}

#[tokio::test]
async fn gzip_and_parquet_inputs_give_the_same_rows() {
    use std::io::Write;
    let env = env(BREAST_SPEC).await;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(BREAST_CANCER).unwrap();
    let out = env
        .ingest("raw/breast-cancer/bc.csv.gz", gz.finish().unwrap())
        .await
        .unwrap();
    assert_eq!((out.rows, out.rejected), (569, 0));
    let parquet = env
        .store
        .get(&key(&format!(
            "datasets/breast-cancer/{}/data.parquet",
            out.version
        )))
        .await
        .unwrap()
        .bytes;
    let again = env
        .ingest("raw/breast-cancer/bc.parquet", parquet)
        .await
        .unwrap();
    assert_eq!((again.rows, again.rejected), (569, 0));
    let s1 = env.schema(&out).await;
    let s2 = env.schema(&again).await;
    assert_eq!(
        s1.columns.iter().map(|c| c.kind).collect::<Vec<_>>(),
        s2.columns.iter().map(|c| c.kind).collect::<Vec<_>>()
    );
}

fn permanent(result: Result<lambdaml_ingest::IngestOutcome, StageError>) -> String {
    match result {
        Err(StageError::Permanent { reason, .. }) => reason,
        other => panic!("expected a permanent error, got {other:?}"),
    }
}

#[tokio::test]
async fn empty_and_header_only_files_are_rejected_whole_and_recorded() {
    let env = env(TINY_SPEC).await;
    let reason = permanent(env.ingest("raw/tiny/empty.csv", Bytes::new()).await);
    assert!(reason.contains("empty"), "{reason}");
    let reason = permanent(env.ingest("raw/tiny/header.csv", "a,b,y\n").await);
    assert!(reason.contains("no data rows"), "{reason}");
    // The reason is kept in the quarantine area.
    let errors = env.store.list_all("quarantine/tiny/").await.unwrap();
    assert_eq!(
        errors
            .iter()
            .filter(|m| m.key.as_str().ends_with("error.json"))
            .count(),
        2
    );
}

#[tokio::test]
async fn bom_crlf_quotes_and_embedded_newlines_are_read_correctly() {
    let env = env(TINY_SPEC).await;
    let text = "\u{feff}a,note,y\r\n1.5,\"red, and blue\",1\r\n2.5,\"two\r\nlines\",0\r\n3.5,plain,1\r\n4.5,plain,oops\r\n";
    let out = env.ingest("raw/tiny/crlf.csv", text).await.unwrap();
    assert_eq!((out.rows, out.rejected), (3, 1));
    let schema = env.schema(&out).await;
    assert_eq!(
        schema.columns[0].name, "a",
        "the BOM is not part of the first column name"
    );
    assert_eq!(schema.columns[0].kind, lambdaml::dataset::ColumnType::Float);
    let values = schema.column("note").unwrap().values.clone().unwrap();
    assert!(values.contains(&"red, and blue".to_string()));
    assert!(values.contains(&"two\r\nlines".to_string()));
    let rejected = env.rejected(&out).await;
    // The quoted newline makes the bad row start on line 6.
    assert_eq!(rejected[0]["line"], 6);
    assert!(
        rejected[0]["reasons"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("not in the declared domain")
    );
}

#[tokio::test]
async fn bad_rows_are_quarantined_with_line_and_reason() {
    let env = env(TINY_SPEC).await;
    let mut text = b"a,b,y\n1,x,1\n2,y\n3,z,1\ninf,w,0\nNaN,v,1\n4,u,\n5,".to_vec();
    text.extend_from_slice(&[0xff, 0xfe]);
    text.extend_from_slice(b",0\n6,");
    text.extend(std::iter::repeat_n(b'q', 1 << 20));
    text.extend_from_slice(b",1\n7,t,0\n");
    let out = env.ingest("raw/tiny/bad.csv", text).await.unwrap();
    let rejected = env.rejected(&out).await;
    let by_line = |line: u64| {
        rejected
            .iter()
            .find(|r| r["line"] == line)
            .unwrap_or_else(|| panic!("line {line} not quarantined: {rejected:?}"))
    };
    let reason = |line: u64| {
        by_line(line)["reasons"][0]["reason"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(reason(3), "expected 3 fields, found 2");
    assert!(reason(5).contains("non-finite"), "{}", reason(5));
    assert_eq!(reason(7), "missing label");
    assert_eq!(reason(8), "not valid UTF-8");
    assert_eq!(
        by_line(8)["fields"][1],
        "\\xFF\\xFE",
        "the raw bytes are kept"
    );
    assert!(
        reason(9).contains("over the 65536-byte limit"),
        "{}",
        reason(9)
    );
    assert_eq!(
        by_line(9)["fields"][1].as_str().unwrap().len(),
        1 << 20,
        "nothing is lost"
    );
    assert_eq!(rejected.len(), 5);
    // NaN is a missing value, not a bad one: rows 2, 4, 6 and 10 are kept.
    assert_eq!(out.rows, 4);
    let schema = env.schema(&out).await;
    assert!(schema.column("a").unwrap().nullable);
}

/// A record longer than the record limit that does end is one rejected row (its start
/// kept, the rest skipped unread); the rows after it are read, on their own lines.
#[tokio::test]
async fn a_record_past_the_limit_is_a_rejected_row_and_the_rest_is_read() {
    let env = env(TINY_SPEC).await;
    let mut text = b"a,b,y\n1,x,1\n2,\"".to_vec();
    let long = usize::try_from(lambdaml::dataset::MAX_RECORD_BYTES).unwrap() + (1 << 20);
    for i in 0..long / 64 {
        text.extend_from_slice(&[b'q'; 63]);
        text.push(if i % 1024 == 0 { b'\n' } else { b'q' });
    }
    text.extend_from_slice(b"\",1\n3,z,0\n");
    let out = env.ingest("raw/tiny/long.csv", text).await.unwrap();
    assert_eq!((out.rows, out.rejected), (2, 1));
    let rejected = env.rejected(&out).await;
    assert_eq!(rejected[0]["line"], 3);
    let reason = rejected[0]["reasons"][0]["reason"].as_str().unwrap();
    assert!(reason.contains("longer than 16777216 bytes"), "{reason}");
    assert!(
        rejected[0]["fields"][1].as_str().unwrap().len() <= 256,
        "a cut record keeps its start only"
    );
}

#[tokio::test]
async fn a_file_without_the_label_column_is_rejected_naming_it() {
    let env = env(TINY_SPEC).await;
    let reason = permanent(env.ingest("raw/tiny/nolabel.csv", "a,b\n1,2\n").await);
    assert!(
        reason.contains("\"y\"") && reason.contains("a, b"),
        "{reason}"
    );
}

#[tokio::test]
async fn a_file_whose_rows_are_all_bad_is_rejected_and_its_rows_kept() {
    let env = env(TINY_SPEC).await;
    let reason = permanent(env.ingest("raw/tiny/allbad.csv", "a,y\n1,7\n2,8\n").await);
    assert!(reason.contains("all 2 data rows were rejected"), "{reason}");
    let kept = env.store.list_all("quarantine/tiny/").await.unwrap();
    assert!(
        kept.iter()
            .any(|m| m.key.as_str().ends_with("rejected.jsonl"))
    );
}

#[tokio::test]
async fn spec_mistakes_are_errors_naming_the_key() {
    let typo = TINY_SPEC.replace("[task]", "[split]\nholdut = 0.2\n[task]");
    let env = env(&typo).await;
    // The broken spec is stored under its model name by hand, as a user would upload it.
    env.store
        .put(&key("specs/tiny.toml"), Bytes::from(typo.clone()))
        .await
        .unwrap();
    let reason = permanent(env.ingest("raw/tiny/a.csv", "a,y\n1,0\n2,1\n").await);
    assert!(
        reason.contains("specs/tiny.toml") && reason.contains("holdut"),
        "{reason}"
    );

    let negative = TINY_SPEC.replace("[task]", "[split]\nholdout = -0.2\n[task]");
    env.store
        .put(&key("specs/tiny.toml"), Bytes::from(negative))
        .await
        .unwrap();
    let reason = permanent(env.ingest("raw/tiny/a.csv", "a,y\n1,0\n2,1\n").await);
    assert!(reason.contains("split.holdout"), "{reason}");
}

#[tokio::test]
async fn no_spec_for_the_dataset_is_a_clear_error() {
    let env = env(TINY_SPEC).await;
    let reason = permanent(env.ingest("raw/other/a.csv", "a,y\n1,0\n").await);
    assert!(
        reason.contains("no model spec names dataset \"other\""),
        "{reason}"
    );
}

#[tokio::test]
async fn keys_with_dot_dot_or_outside_raw_are_refused() {
    let env = env(TINY_SPEC).await;
    let err = env
        .ingest
        .message_from_direct(serde_json::json!({"key": "raw/tiny/../../etc/passwd"}))
        .unwrap_err();
    assert!(err.reason().contains(".."), "{err}");
    let err = handle_lambda_event(
        &env.ingest,
        serde_json::json!({"key": "models/x/y.csv"}),
        None,
    )
    .await
    .unwrap_err();
    assert!(err.reason().contains("outside raw/"), "{err}");
}

#[tokio::test]
async fn direct_and_s3_events_from_events_dir() {
    let env = env(BREAST_SPEC).await;
    env.put_raw("raw/breast-cancer/sklearn_breast_cancer.csv", BREAST_CANCER)
        .await;
    // The S3 notification's key is URL-encoded: "breast cancer (2026).csv".
    env.put_raw("raw/breast-cancer/breast cancer (2026).csv", BREAST_CANCER)
        .await;

    let direct: serde_json::Value =
        serde_json::from_str(include_str!("../../../events/ingest-direct.json")).unwrap();
    let out = handle_lambda_event(&env.ingest, direct, None)
        .await
        .unwrap();
    assert_eq!(out["rows"], 569);

    let s3: serde_json::Value =
        serde_json::from_str(include_str!("../../../events/ingest-s3.json")).unwrap();
    let out = handle_lambda_event(&env.ingest, s3, None).await.unwrap();
    assert_eq!(out[0]["rows"], 569);
    assert_eq!(out[0]["created"], false, "same bytes, same version");
}

#[tokio::test]
async fn an_sqs_batch_reports_only_its_failed_record() {
    let env = env(BREAST_SPEC).await;
    env.put_raw("raw/breast-cancer/sklearn_breast_cancer.csv", BREAST_CANCER)
        .await;
    let batch: serde_json::Value =
        serde_json::from_str(include_str!("../../../events/ingest-sqs.json")).unwrap();
    // Without a dead-letter queue the future-version record is reported for redelivery.
    let out = handle_lambda_event(&env.ingest, batch.clone(), None)
        .await
        .unwrap();
    assert_eq!(
        out,
        serde_json::json!({"batchItemFailures": [{"itemIdentifier": "4f1e2a1c-0002-4d3a-9d53-1a2b3c4d5e02"}]})
    );
    // Delivered from a real queue, it is parked in that queue's dead-letter area with its
    // reason (the body intact, so it can be redriven), and the batch succeeds.
    let dir = tempfile::tempdir().unwrap();
    let queue = LocalQueue::open(dir.path(), 3).unwrap();
    for record in batch["Records"].as_array().unwrap() {
        queue.send(record["body"].as_str().unwrap()).await.unwrap();
    }
    let received = queue.receive(10, Duration::from_secs(60)).await.unwrap();
    assert_eq!(received.len(), 2);
    let event = lambdaml::lambda::sqs_event(&received, "arn:aws:sqs:us-east-1:123456789012:q");
    let source = SqsSource {
        queue: &queue,
        max_receives: 3,
    };
    let out = handle_lambda_event(&env.ingest, event, Some(source))
        .await
        .unwrap();
    assert_eq!(out, serde_json::json!({"batchItemFailures": []}));
    let parked = queue.dead_letters(10).await.unwrap();
    assert_eq!(parked.len(), 1, "{parked:?}");
    assert!(
        parked[0].reason.contains("unsupported message version 9"),
        "{parked:?}"
    );
    assert!(parked[0].body.contains(r#""version": 9"#), "{parked:?}");
}

#[tokio::test]
async fn malformed_events_are_clear_errors() {
    let env = env(TINY_SPEC).await;
    for (event, expected) in [
        (serde_json::json!({"Records": "x"}), "not an array"),
        (
            serde_json::json!({"Records": [{"eventSource": "aws:kinesis"}]}),
            "unknown event source",
        ),
        (serde_json::json!({"bucket": "b"}), "invalid ingest request"),
    ] {
        let err = handle_lambda_event(&env.ingest, event, None)
            .await
            .unwrap_err();
        assert!(err.reason().contains(expected), "{err}");
    }
    // An SQS record whose body is not a message fails alone.
    let batch = serde_json::json!({"Records": [{"eventSource": "aws:sqs", "messageId": "m1", "body": "hello"}]});
    let out = handle_lambda_event(&env.ingest, batch, None).await.unwrap();
    assert_eq!(out["batchItemFailures"][0]["itemIdentifier"], "m1");
}

#[tokio::test]
async fn malformed_events_from_events_dir_fail_alone_with_their_reason() {
    let env = env(BREAST_SPEC).await;
    env.put_raw("raw/breast-cancer/sklearn_breast_cancer.csv", BREAST_CANCER)
        .await;
    let event = |text: &str| serde_json::from_str::<serde_json::Value>(text).unwrap();
    let err = handle_lambda_event(
        &env.ingest,
        event(include_str!("../../../events/bad-unknown-source.json")),
        None,
    )
    .await
    .unwrap_err();
    assert!(
        err.reason()
            .contains("unknown event source \"aws:kinesis\""),
        "{err}"
    );
    let err = handle_lambda_event(
        &env.ingest,
        event(include_str!("../../../events/bad-s3-outside-raw.json")),
        None,
    )
    .await
    .unwrap_err();
    assert!(err.reason().contains("outside raw/"), "{err}");
    assert!(
        err.reason().contains("model (1).safetensors"),
        "decoded: {err}"
    );

    // One batch, four bad records and a good one: only the bad ones fail.
    let batch = event(include_str!("../../../events/bad-sqs-batch.json"));
    let out = handle_lambda_event(&env.ingest, batch.clone(), None)
        .await
        .unwrap();
    let failed: Vec<&str> = out["batchItemFailures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["itemIdentifier"].as_str().unwrap())
        .collect();
    assert_eq!(
        failed,
        ["bad-batch-1", "bad-batch-2", "bad-batch-3", "bad-batch-5"]
    );
    // Delivered from a queue, each bad record is parked with the reason it failed.
    let dir = tempfile::tempdir().unwrap();
    let queue = LocalQueue::open(dir.path(), 3).unwrap();
    for record in batch["Records"].as_array().unwrap() {
        queue.send(record["body"].as_str().unwrap()).await.unwrap();
    }
    let received = queue.receive(10, Duration::from_secs(60)).await.unwrap();
    let event = lambdaml::lambda::sqs_event(&received, "arn:aws:sqs:us-east-1:123456789012:q");
    let source = SqsSource {
        queue: &queue,
        max_receives: 3,
    };
    let out = handle_lambda_event(&env.ingest, event, Some(source))
        .await
        .unwrap();
    assert_eq!(out, serde_json::json!({"batchItemFailures": []}));
    let parked = queue.dead_letters(10).await.unwrap();
    let reason = |needle: &str| {
        parked
            .iter()
            .find(|d| d.body.contains(needle))
            .map(|d| d.reason.clone())
            .unwrap_or_else(|| panic!("{needle} not parked: {parked:?}"))
    };
    assert_eq!(parked.len(), 4, "{parked:?}");
    assert!(
        reason("this is not a message").contains("message is not JSON"),
        "{parked:?}"
    );
    assert!(
        reason("Amazon S3").contains("no `version` field"),
        "{parked:?}"
    );
    assert!(
        reason("quarantine/").contains("is outside raw/"),
        "{parked:?}"
    );
    assert!(
        reason(r#""stage": "train""#).contains("unknown field `run`"),
        "{parked:?}"
    );
}

#[tokio::test]
async fn an_unknown_message_version_is_dead_lettered_with_its_reason() {
    let env = env(TINY_SPEC).await;
    let dir = tempfile::tempdir().unwrap();
    let queues = open_queues(&format!("file://{}", dir.path().display()), 3)
        .await
        .unwrap();
    let ingest_queue = queues.get(Stage::Ingest).await.unwrap();
    ingest_queue
        .send(r#"{"version":2,"run_id":"r","stage":"ingest","key":"raw/tiny/a.csv"}"#)
        .await
        .unwrap();
    let handlers: Vec<Arc<dyn StageHandler>> = vec![Arc::new(env.ingest.clone())];
    let report = drain(&queues, &handlers, &DrainOptions::default(), &|_| {})
        .await
        .unwrap();
    assert_eq!(report.len(), 1);
    assert_eq!(report[0].outcome, "dead_letter");
    let dead = ingest_queue.dead_letters(10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert!(
        dead[0].reason.contains("unsupported message version 2"),
        "{}",
        dead[0].reason
    );
}

#[tokio::test]
async fn a_redelivered_queue_message_creates_no_second_version() {
    let env = env(BREAST_SPEC).await;
    let raw = env.put_raw("raw/breast-cancer/bc.csv", BREAST_CANCER).await;
    let dir = tempfile::tempdir().unwrap();
    let queues = open_queues(&format!("file://{}", dir.path().display()), 3)
        .await
        .unwrap();
    let message = Message::new(
        "r",
        None,
        StageMessage::Ingest(IngestRequest {
            key: raw,
            dataset: None,
        }),
    );
    let q = queues.get(Stage::Ingest).await.unwrap();
    q.send(&message.to_body()).await.unwrap();
    q.send(&message.to_body()).await.unwrap();
    let ingest = Ingest::new(
        env.store.clone(),
        queues.get(Stage::Preprocess).await.unwrap(),
    );
    let handlers: Vec<Arc<dyn StageHandler>> = vec![Arc::new(ingest)];
    let report = drain(&queues, &handlers, &DrainOptions::default(), &|_| {})
        .await
        .unwrap();
    let created: Vec<bool> = report
        .iter()
        .map(|h| h.detail["created"].as_bool().unwrap())
        .collect();
    assert_eq!(created, vec![true, false]);
    let manifests = env.store.list_all("datasets/breast-cancer/").await.unwrap();
    assert_eq!(
        manifests
            .iter()
            .filter(|m| m.key.as_str().ends_with("manifest.json"))
            .count(),
        1
    );
}
