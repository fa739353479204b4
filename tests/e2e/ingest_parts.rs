//! Ingest in partitions on the embedded default, against a one-pass ingest of the same file:
//! the same version, schema, rows (in order), rejected rows with the same line numbers, and
//! profile — counts, missing values, min, max, mean, standard deviation (exact sums),
//! frequencies and histograms identical, quantiles within the KLL sketch's stated rank
//! error — whether the first rows' guess holds or the whole file overturns it (a second
//! round). A duplicated partition message counts nothing twice; a file replaced while its
//! partitions run is refused.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use arrow_array::RecordBatch;
use bytes::Bytes;
use lambdaml::dataset::sketch::KLL_RANK_ERROR;
use lambdaml::dataset::{DatasetManifest, Profile};
use lambdaml::layout;
use lambdaml::message::{IngestPartitionRequest, Message, Stage, StageMessage};
use lambdaml::queue::{Queues, open_queues};
use lambdaml::stage::{DrainOptions, Handled, StageHandler, drain};
use lambdaml::store::{FileStore, ObjectKey, ObjectStore, ObjectStoreExt};
use lambdaml_e2e::s3_notification;
use lambdaml_ingest::{Ingest, IngestPlan};

const SPEC: &str = r#"
[model]
name = "parts"

[dataset]
name = "parts"
label = "label"

[dataset.columns.label]
type = "categorical"
values = ["0", "1"]
nullable = false

[task]
kind = "binary"
positive_class = "1"

[train]
family = "logistic"
"#;

struct Side {
    _dir: tempfile::TempDir,
    store: Arc<dyn ObjectStore>,
    queues: Queues,
}

impl Side {
    async fn new(csv: &[u8]) -> Side {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn ObjectStore> =
            Arc::new(FileStore::open(dir.path().join("store")).unwrap());
        Side::with_store(dir, store, csv).await
    }

    /// A side over `store` (an S3 bucket on the emulator), its queues in `dir`.
    async fn with_store(dir: tempfile::TempDir, store: Arc<dyn ObjectStore>, csv: &[u8]) -> Side {
        let queues = open_queues(
            &format!("file://{}", dir.path().join("queues").display()),
            3,
        )
        .await
        .unwrap();
        store
            .put(&layout::spec("parts").unwrap(), Bytes::from(SPEC))
            .await
            .unwrap();
        store.put(&raw(), Bytes::from(csv.to_vec())).await.unwrap();
        Side {
            _dir: dir,
            store,
            queues,
        }
    }

    /// The ingest handler: in one pass, or in partitions of `partition_bytes`.
    async fn handler(&self, partition_bytes: Option<u64>) -> Arc<dyn StageHandler> {
        let preprocess = self.queues.get(Stage::Preprocess).await.unwrap();
        let ingest = Ingest::new(self.store.clone(), preprocess);
        Arc::new(match partition_bytes {
            Some(bytes) => {
                ingest.with_partitions(self.queues.get(Stage::Ingest).await.unwrap(), bytes)
            }
            None => ingest,
        })
    }

    async fn send(&self, body: String) {
        let queue = self.queues.get(Stage::Ingest).await.unwrap();
        queue.send(&body).await.unwrap();
    }

    /// Drains the ingest queue with two workers.
    async fn drain(&self, handler: &Arc<dyn StageHandler>) -> Vec<Handled> {
        let options = DrainOptions {
            workers: 2,
            ..DrainOptions::default()
        };
        drain(
            &self.queues,
            std::slice::from_ref(handler),
            &options,
            &|_| {},
        )
        .await
        .unwrap()
    }

    /// Ingests the raw file through the queue; returns the version written.
    async fn ingest(&self, partition_bytes: Option<u64>) -> (String, Vec<Handled>) {
        let handler = self.handler(partition_bytes).await;
        self.send(s3_notification("local", raw().as_str()).to_string())
            .await;
        let handled = self.drain(&handler).await;
        let versions = self
            .store
            .list_all(&layout::dataset_versions("parts"))
            .await
            .unwrap();
        let manifest = versions
            .iter()
            .find(|m| m.key.as_str().ends_with("/manifest.json"))
            .unwrap_or_else(|| panic!("no version written: {handled:#?}"));
        let m: DatasetManifest = self.store.get_json(&manifest.key).await.unwrap();
        (m.version, handled)
    }

    async fn file(&self, version: &str, name: &str) -> Bytes {
        let key = layout::dataset_file("parts", version, name).unwrap();
        self.store.get(&key).await.unwrap().bytes
    }

    async fn rows(&self, version: &str) -> Vec<RecordBatch> {
        let bytes = self.file(version, "data.parquet").await;
        parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(bytes)
            .unwrap()
            .build()
            .unwrap()
            .map(Result::unwrap)
            .collect()
    }
}

fn raw() -> ObjectKey {
    layout::raw("parts", "data.csv").unwrap()
}

/// A file with every column kind, rows that fail (a short row, a word in a number column,
/// an unknown label), a blank line and a quoted field holding a line feed. `turn` rows in,
/// the integer column `count` starts having decimals.
fn csv(rows: usize, turn: usize) -> String {
    let mut rng = lambdaml::dataset::SplitMix64::new(11);
    let mut out = String::from("amount,count,member,color,note,label\n");
    let colors = ["red", "green", "blue", "teal"];
    for i in 0..rows {
        let amount = rng.next_f64() * 1000.0 - 200.0;
        let count = (rng.next_f64() * 40.0) as i64;
        let member = rng.next_f64() < 0.4;
        let color = colors[rng.below(4) as usize];
        let label = u8::from(amount / 300.0 + count as f64 / 20.0 > 1.5);
        let count = if i >= turn {
            format!("{count}.5")
        } else {
            count.to_string()
        };
        let amount = if i % 97 == 5 {
            String::new()
        } else {
            format!("{amount:.4}")
        };
        match i % 1_013 {
            17 => out.push_str(&format!("{amount},{count},{member}\n")),
            301 => out.push_str(&format!("lots,{count},{member},{color},x,{label}\n")),
            555 => out.push_str(&format!("{amount},{count},{member},{color},x,maybe\n")),
            700 => out.push('\n'),
            800 => out.push_str(&format!(
                "{amount},{count},{member},{color},\"two\nlines\",{label}\n"
            )),
            _ => out.push_str(&format!(
                "{amount},{count},{member},{color},n{},{label}\n",
                i % 3
            )),
        }
    }
    out
}

/// Checks a partitioned version against the one-pass one: see the module docs.
async fn compare(one: &Side, v1: &str, parts: &Side, v2: &str) {
    let plan: IngestPlan = parts
        .store
        .get_json(&layout::ingest_plan("parts", v2).unwrap())
        .await
        .unwrap();
    assert!(plan.parts.len() >= 3, "{} partitions", plan.parts.len());

    for name in ["schema.json", "rejected.jsonl"] {
        assert_eq!(
            String::from_utf8_lossy(&one.file(v1, name).await),
            String::from_utf8_lossy(&parts.file(v2, name).await),
            "{name}"
        );
    }
    let (a, b) = (one.rows(v1).await, parts.rows(v2).await);
    let concat = |batches: &[RecordBatch]| {
        arrow_select::concat::concat_batches(&batches[0].schema(), batches).unwrap()
    };
    assert_eq!(concat(&a), concat(&b), "the same rows in the same order");

    let m1: DatasetManifest = serde_json::from_slice(&one.file(v1, "manifest.json").await).unwrap();
    let m2: DatasetManifest =
        serde_json::from_slice(&parts.file(v2, "manifest.json").await).unwrap();
    assert_eq!((m1.rows, m1.rejected), (m2.rows, m2.rejected));
    assert!(m1.rejected > 0);

    let p1: Profile = serde_json::from_slice(&one.file(v1, "profile.json").await).unwrap();
    let p2: Profile = serde_json::from_slice(&parts.file(v2, "profile.json").await).unwrap();
    assert_eq!((p1.rows, p1.rejected), (p2.rows, p2.rejected));
    let data = concat(&a);
    for (name, c1) in &p1.columns {
        let c2 = &p2.columns[name];
        assert_eq!(c1.count, c2.count, "{name}");
        assert_eq!(c1.missing, c2.missing, "{name}");
        assert_eq!(c1.mean, c2.mean, "{name}: exact sums give the same mean");
        assert_eq!(c1.std, c2.std, "{name}: and the same standard deviation");
        assert_eq!((c1.min, c1.max), (c2.min, c2.max), "{name}");
        assert_eq!(c1.frequencies, c2.frequencies, "{name}");
        assert_eq!(c1.histogram, c2.histogram, "{name}");
        if c1.quantiles.is_empty() {
            continue;
        }
        assert_eq!(
            c1.quantiles_exact,
            Some(true),
            "{name}: one pass keeps every value"
        );
        assert_eq!(c2.quantiles_exact, Some(false), "{name}: partitions sketch");
        assert_eq!(c2.quantile_rank_error, Some(KLL_RANK_ERROR));
        let mut values = numbers(&data, name);
        values.sort_by(f64::total_cmp);
        let n = values.len() as f64;
        for (q, x) in &c2.quantiles {
            let q: f64 = q.parse().unwrap();
            let lo = values.partition_point(|v| v < x) as f64;
            let hi = values.partition_point(|v| v <= x) as f64;
            let target = q * (n - 1.0);
            let err = (lo - target).max(target - hi).max(0.0) / n;
            assert!(err <= KLL_RANK_ERROR, "{name} q{q}: rank error {err}");
        }
    }
}

/// Ingests `csv` both ways and checks the partitioned version against the one-pass one.
async fn both_ways(csv: &str, partition_bytes: u64) -> (Side, String, Vec<Handled>) {
    let one = Side::new(csv.as_bytes()).await;
    let (v1, _) = one.ingest(None).await;
    let parts = Side::new(csv.as_bytes()).await;
    let (v2, handled) = parts.ingest(Some(partition_bytes)).await;
    assert_eq!(v1, v2, "one version, one content hash rule");

    compare(&one, &v1, &parts, &v2).await;
    (parts, v2, handled)
}

fn numbers(batch: &RecordBatch, name: &str) -> Vec<f64> {
    use arrow_array::cast::AsArray;
    use arrow_array::types::{Float64Type, Int64Type};
    let column = batch.column_by_name(name).unwrap();
    if let Some(ints) = column.as_primitive_opt::<Int64Type>() {
        ints.iter().flatten().map(|x| x as f64).collect()
    } else {
        column
            .as_primitive::<Float64Type>()
            .iter()
            .flatten()
            .collect()
    }
}

/// The partitioned steps the handled messages report (an S3 notification's answer nests
/// its records' outcomes).
fn steps(handled: &[Handled]) -> Vec<String> {
    fn walk(v: &serde_json::Value, out: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(m) => {
                if let Some(step) = m
                    .get("partitioned")
                    .and_then(|p| p.get("step"))
                    .and_then(|s| s.as_str())
                {
                    out.push(step.to_string());
                }
                m.values().for_each(|v| walk(v, out));
            }
            serde_json::Value::Array(a) => a.iter().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    handled.iter().for_each(|h| walk(&h.detail, &mut out));
    out
}

/// Plans the raw file by a direct call of `handler`; its partition messages wait in the
/// queue.
async fn plan(handler: &Arc<dyn StageHandler>, run: &str) {
    let planned = handler
        .handle(Message::new(
            run.to_string(),
            None,
            StageMessage::Ingest(lambdaml::message::IngestRequest {
                key: raw(),
                dataset: None,
            }),
        ))
        .await
        .unwrap();
    assert_eq!(planned["partitioned"]["step"], "planned", "{planned}");
}

/// The partitions on S3 (the emulator): byte ranges read under the object's etag, listings
/// of the reports, the merge, against a one-pass ingest on the embedded default; a file
/// replaced after planning refused under S3's own etags.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitions_read_their_ranges_from_s3_on_the_emulator() {
    if lambdaml_e2e::emulator("partitions_read_their_ranges_from_s3_on_the_emulator").is_none() {
        return;
    }
    let text = csv(6_000, usize::MAX);
    let one = Side::new(text.as_bytes()).await;
    let (v1, _) = one.ingest(None).await;
    let s3_side = || async {
        let id = &uuid::Uuid::new_v4().simple().to_string()[..10];
        let bucket = format!("parts-{id}");
        let s3 = lambdaml::store::S3Store::from_env(&bucket, "").await;
        s3.client()
            .create_bucket()
            .bucket(&bucket)
            .send()
            .await
            .unwrap();
        Side::with_store(tempfile::tempdir().unwrap(), Arc::new(s3), text.as_bytes()).await
    };
    let parts = s3_side().await;
    let (v2, handled) = parts.ingest(Some(40_000)).await;
    assert_eq!(v1, v2);
    assert!(
        steps(&handled).contains(&"written".to_string()),
        "{handled:#?}"
    );
    compare(&one, &v1, &parts, &v2).await;

    let side = s3_side().await;
    let handler = side.handler(Some(40_000)).await;
    plan(&handler, "run-s3-replaced").await;
    side.store
        .put(&raw(), Bytes::from(text.replace("red", "RED")))
        .await
        .unwrap();
    let handled = side.drain(&handler).await;
    assert!(
        handled
            .iter()
            .any(|h| h.outcome == "dead_letter" && h.detail.as_str().unwrap().contains("changed")),
        "{handled:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_in_partitions_is_the_one_pass_version() {
    let (_, _, handled) = both_ways(&csv(12_000, usize::MAX), 60_000).await;
    let steps = steps(&handled);
    assert_eq!(steps.iter().filter(|s| *s == "planned").count(), 1);
    assert_eq!(
        steps.iter().filter(|s| *s == "written").count(),
        1,
        "{steps:?}"
    );
    assert!(!steps.contains(&"recheck".to_string()), "{steps:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guess_the_whole_file_overturns_is_checked_again_in_every_partition() {
    // 66,000 rows: the first 65,536 (the guess) hold whole numbers in `count`, the rest
    // decimals, so the whole file makes it a float column.
    let (parts, version, handled) = both_ways(&csv(66_000, 65_900), 600_000).await;
    let steps = steps(&handled);
    assert_eq!(
        steps.iter().filter(|s| *s == "recheck").count(),
        1,
        "{steps:?}"
    );
    let schema: lambdaml::dataset::Schema = parts
        .store
        .get_json(&layout::dataset_file("parts", &version, "schema.json").unwrap())
        .await
        .unwrap();
    let count = schema.columns.iter().find(|c| c.name == "count").unwrap();
    assert_eq!(count.kind, lambdaml::dataset::ColumnType::Float);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicated_partition_counts_once_and_a_replaced_file_is_refused() {
    let text = csv(6_000, usize::MAX);
    let one = Side::new(text.as_bytes()).await;
    let (v1, _) = one.ingest(None).await;
    let m1: DatasetManifest =
        serde_json::from_slice(&one.file(&v1, "manifest.json").await).unwrap();

    // Planned, then partition 1's message delivered twice.
    let side = Side::new(text.as_bytes()).await;
    let handler = side.handler(Some(40_000)).await;
    side.send(s3_notification("local", raw().as_str()).to_string())
        .await;
    let partition = |i: usize| {
        Message::new(
            "run-dup".to_string(),
            None,
            StageMessage::IngestPartition(IngestPartitionRequest {
                dataset: "parts".into(),
                dataset_version: v1.clone(),
                round: 1,
                partition: i,
            }),
        )
        .to_body()
    };
    let handled = side.drain(&handler).await;
    side.send(partition(1)).await;
    let again = side.drain(&handler).await;
    assert_eq!(steps(&again), vec!["stopped"], "{again:#?}");
    let m2: DatasetManifest =
        serde_json::from_slice(&side.file(&v1, "manifest.json").await).unwrap();
    assert_eq!(
        (m1.rows, m1.rejected),
        (m2.rows, m2.rejected),
        "{handled:#?}"
    );

    // A duplicate while the round runs: the second delivery finds the report.
    let side = Side::new(text.as_bytes()).await;
    let handler = side.handler(Some(40_000)).await;
    plan(&handler, "run-dup").await;
    side.send(partition(0)).await;
    side.send(partition(0)).await;
    let handled = side.drain(&handler).await;
    let steps = steps(&handled);
    assert!(steps.contains(&"already_checked".to_string()), "{steps:?}");
    let m3: DatasetManifest =
        serde_json::from_slice(&side.file(&v1, "manifest.json").await).unwrap();
    assert_eq!((m1.rows, m1.rejected), (m3.rows, m3.rejected));

    // Replaced after planning: the partitions refuse to mix two files.
    let side = Side::new(text.as_bytes()).await;
    let handler = side.handler(Some(40_000)).await;
    plan(&handler, "run-replaced").await;
    side.store
        .put(&raw(), Bytes::from(text.replace("red", "RED")))
        .await
        .unwrap();
    let handled = side.drain(&handler).await;
    let refused: Vec<&Handled> = handled
        .iter()
        .filter(|h| h.outcome == "dead_letter")
        .collect();
    assert!(!refused.is_empty(), "{handled:#?}");
    assert!(
        refused[0].detail.as_str().unwrap().contains("changed"),
        "{:?}",
        refused[0].detail
    );
    assert!(
        !side
            .store
            .exists(&layout::dataset_file("parts", &v1, "manifest.json").unwrap())
            .await
            .unwrap()
    );
}

/// Partition boundaries where they are hardest: right before a blank line (which belongs to
/// neither side), inside a quoted field holding a line feed (the split must wait for its
/// record to end), and partitions of a few rows each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn boundaries_at_a_blank_line_inside_quotes_and_every_few_rows_change_nothing() {
    let text = csv(3_000, usize::MAX);
    let header_end = text.find('\n').unwrap() + 1;
    // The record before the first blank line ends at `blank + 1`; a partition of exactly
    // that many bytes ends there.
    let blank = text.find("\n\n").unwrap();
    let quoted = text.find("\"two\nlines\"").unwrap();
    for size in [
        (blank + 1 - header_end) as u64,
        (quoted + 5 - header_end) as u64,
        2_500,
    ] {
        let (_, _, handled) = both_ways(&text, size).await;
        assert_eq!(
            steps(&handled).iter().filter(|s| *s == "written").count(),
            1,
            "partition size {size}"
        );
    }
}
