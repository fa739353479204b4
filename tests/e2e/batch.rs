//! Batch scoring on the embedded default: a CSV, a gzip CSV and a Parquet file planned into
//! partitions, scored by two concurrent workers over the batch queue, equal to what the
//! score function answers for the same rows; bad rows rejected with their lines; a
//! redelivered partition writes nothing; a worker killed between its output and its
//! manifest finishes on redelivery with one output; a version rejected midway and an input
//! replaced midway stop the job with the reason in its manifest.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use arrow_array::{Array, BooleanArray, Float64Array, Int64Array, RecordBatch, StringArray};
use bytes::Bytes;
use lambdaml::batch::{JobManifest, JobStatus, Plan, RejectedRow};
use lambdaml::layout;
use lambdaml::message::{BatchJobRequest, BatchPartitionRequest, Message, Stage, StageMessage};
use lambdaml::pipeline::wire;
use lambdaml::queue::{Queues, open_queues};
use lambdaml::registry::RegistryStore;
use lambdaml::stage::{DrainOptions, Handled, StageHandler, drain};
use lambdaml::store::{ObjectStore, ObjectStoreExt};
use lambdaml_batch::{Batch, BatchOutcome};
use lambdaml_e2e::{MIXED_SPEC, deploy_model, mixed_csv};

struct Setup {
    dir: tempfile::TempDir,
    store: Arc<dyn ObjectStore>,
    queues: Queues,
    version: String,
}

async fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let (store, version) =
        deploy_model(dir.path(), MIXED_SPEC, "mixed", mixed_csv(1500).as_bytes()).await;
    let queues = open_queues(
        &format!("file://{}", dir.path().join("queues").display()),
        3,
    )
    .await
    .unwrap();
    Setup {
        dir,
        store,
        queues,
        version,
    }
}

impl Setup {
    async fn handler(&self) -> Batch {
        wire::<Batch>(self.store.clone(), &self.queues)
            .await
            .unwrap()
            .0
    }

    async fn put(&self, job: &str, name: &str, bytes: Vec<u8>) {
        let key = layout::batch_input_file("mixed", job, name).unwrap();
        self.store.put(&key, Bytes::from(bytes)).await.unwrap();
    }

    /// Sends the job and drains the batch queue with `workers` workers.
    async fn run(&self, job: &str, partition_rows: u64, workers: usize) -> Vec<Handled> {
        let message = Message::new(
            format!("batch-{job}"),
            Some("mixed".into()),
            StageMessage::BatchJob(BatchJobRequest {
                model: "mixed".into(),
                job: job.into(),
                version: None,
                partition_rows: Some(partition_rows),
                include_inputs: true,
            }),
        );
        let queue = self.queues.get(Stage::Batch).await.unwrap();
        queue.send(&message.to_body()).await.unwrap();
        self.drain(workers).await
    }

    async fn drain(&self, workers: usize) -> Vec<Handled> {
        let handler: Arc<dyn StageHandler> = Arc::new(self.handler().await);
        let options = DrainOptions {
            workers,
            retry_delay: Duration::from_millis(10),
            ..DrainOptions::default()
        };
        drain(&self.queues, &[handler], &options, &|_| {})
            .await
            .unwrap()
    }

    async fn manifest(&self, job: &str) -> Option<JobManifest> {
        self.store
            .get_json(&layout::batch_manifest("mixed", job).unwrap())
            .await
            .ok()
    }

    async fn plan(&self, job: &str) -> Plan {
        self.store
            .get_json(&layout::batch_plan("mixed", job).unwrap())
            .await
            .unwrap()
    }

    /// Every output row: (file, row) → (prediction, p_1, input columns).
    async fn outputs(&self, job: &str) -> BTreeMap<(String, u64), (String, f64, String)> {
        let mut out = BTreeMap::new();
        for o in self
            .store
            .list_all(&layout::batch_outputs("mixed", job))
            .await
            .unwrap()
        {
            if !o.key.as_str().ends_with(".parquet") {
                continue;
            }
            let bytes = self.store.get(&o.key).await.unwrap().bytes;
            let reader =
                parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(bytes)
                    .unwrap()
                    .build()
                    .unwrap();
            for batch in reader {
                let batch: RecordBatch = batch.unwrap();
                let col = |n: &str| batch.column_by_name(n).unwrap().clone();
                let file = col("file");
                let file = file.as_any().downcast_ref::<StringArray>().unwrap();
                let row = col("row");
                let row = row
                    .as_any()
                    .downcast_ref::<arrow_array::UInt64Array>()
                    .unwrap();
                let pred = col("prediction");
                let pred = pred.as_any().downcast_ref::<StringArray>().unwrap();
                let p1 = col("p_1");
                let p1 = p1.as_any().downcast_ref::<Float64Array>().unwrap();
                let color = batch
                    .column_by_name("color")
                    .map(|c| arrow_array::cast::AsArray::as_string::<i32>(c.as_ref()).clone());
                for r in 0..batch.num_rows() {
                    let key = (file.value(r).to_string(), row.value(r));
                    let value = (
                        pred.value(r).to_string(),
                        p1.value(r),
                        color
                            .as_ref()
                            .map(|c| c.value(r).to_string())
                            .unwrap_or_default(),
                    );
                    assert!(out.insert(key.clone(), value).is_none(), "{key:?} twice");
                }
            }
        }
        out
    }
}

/// The mixed data with an id, the label, a free-text column with quoted commas and line
/// breaks, and four bad rows at known lines.
fn input_csv(rows: usize) -> (String, Vec<u64>) {
    let data = mixed_csv(rows);
    let mut out = String::from("id,amount,count,member,color,label,note\n");
    let mut line = 1u64;
    let mut bad = Vec::new();
    for (i, row) in data.lines().skip(1).enumerate() {
        line += 1;
        match i {
            10 => {
                // A field short.
                out.push_str(&format!("{i},1.0,2,true,red,1\n"));
                bad.push(line);
            }
            20 => {
                out.push_str(&format!("{i},abc,2,true,red,1,x\n"));
                bad.push(line);
            }
            30 => {
                out.push_str(&format!("{i},3.5,2,true,purple,1,x\n"));
                bad.push(line);
            }
            _ if i % 7 == 0 => {
                // Two physical lines.
                out.push_str(&format!("{i},{row},\"says \"\"hi\"\",\nthen bye\"\n"));
                line += 1;
            }
            _ => out.push_str(&format!("{i},{row},plain\n")),
        }
    }
    // Its amount's first byte is made invalid UTF-8 by the test.
    out.push_str("999999,\u{ff}-not-utf8,1,true,red,1,x\n");
    (out, bad)
}

/// What the score function answers for every good row of `csv` (by data row).
async fn expected(s: &Setup, csv: &str) -> BTreeMap<u64, f64> {
    use lambdaml_score::parse::{Limits, csv_frame, read_csv};
    let cache =
        lambdaml_score::loader::ModelCache::new(s.store.clone(), Duration::from_secs(60), 4);
    let model = cache.version("mixed", &s.version).await.unwrap();
    let mut reader = csv::ReaderBuilder::new().from_reader(csv.as_bytes());
    let mut out = BTreeMap::new();
    for (row, record) in reader.records().enumerate() {
        let Ok(record) = record else { continue };
        if record.len() != 7 {
            continue;
        }
        let body = format!(
            "amount,count,member,color\n{},{},{},{}\n",
            &record[1], &record[2], &record[3], &record[4]
        );
        let limits = Limits { max_rows: 10 };
        let Ok(parsed) = read_csv(body.as_bytes(), limits) else {
            continue;
        };
        let Ok(frame) = csv_frame(&model, &parsed, limits) else {
            continue;
        };
        if let Ok(scored) = lambdaml_score::score_frame(&model, &frame) {
            out.insert(row as u64, scored.outputs[1]);
        }
    }
    out
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

/// The mixed data as Parquet in row groups of 300.
fn parquet(rows: usize) -> Vec<u8> {
    let data = mixed_csv(rows);
    let mut amount = Vec::new();
    let mut count = Vec::new();
    let mut member = Vec::new();
    let mut color = Vec::new();
    for line in data.lines().skip(1) {
        let v: Vec<&str> = line.split(',').collect();
        amount.push(v[0].parse::<f64>().unwrap());
        count.push(v[1].parse::<i64>().unwrap());
        member.push(v[2] == "true");
        color.push(v[3].to_string());
    }
    let batch = RecordBatch::try_from_iter([
        (
            "amount",
            Arc::new(Float64Array::from(amount)) as Arc<dyn Array>,
        ),
        ("count", Arc::new(Int64Array::from(count))),
        ("member", Arc::new(BooleanArray::from(member))),
        ("color", Arc::new(StringArray::from(color))),
    ])
    .unwrap();
    let props = parquet::file::properties::WriterProperties::builder()
        .set_max_row_group_row_count(Some(300))
        .build();
    let mut out = Vec::new();
    let mut w =
        parquet::arrow::ArrowWriter::try_new(&mut out, batch.schema(), Some(props)).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csv_gzip_and_parquet_score_in_partitions_as_the_score_function_does() {
    let s = setup().await;
    let (csv, bad_lines) = input_csv(700);
    // The last line's amount is not UTF-8.
    let mut csv_bytes = csv.clone().into_bytes();
    let pos = csv_bytes.len() - csv.lines().last().unwrap().len() - 1 + 7;
    assert_eq!(csv_bytes[pos], 0xC3, "the marker's first byte");
    csv_bytes[pos] = 0xFF;
    csv_bytes.remove(pos + 1);
    s.put("j1", "a.csv", csv_bytes.clone()).await;
    s.put("j1", "b.csv.gz", gzip(&csv_bytes)).await;
    s.put("j1", "c.parquet", parquet(700)).await;
    let handled = s.run("j1", 128, 2).await;
    assert!(
        handled.iter().all(|h| h.outcome == "ok"),
        "{:#?}",
        handled
            .iter()
            .filter(|h| h.outcome != "ok")
            .collect::<Vec<_>>()
    );
    let plan = s.plan("j1").await;
    assert_eq!(plan.version, s.version);
    // 701 records each in the CSVs (128 a partition), row groups of 300 in the Parquet.
    let csv_parts = 701_usize.div_ceil(128);
    assert_eq!(plan.partitions.len(), 2 * csv_parts + 3, "{plan:#?}");
    let manifest = s.manifest("j1").await.unwrap();
    assert_eq!(manifest.status, JobStatus::Succeeded, "{manifest:#?}");
    assert_eq!(manifest.partitions_done, plan.partitions.len());
    assert_eq!(manifest.rows_in, 701 + 701 + 700);
    assert_eq!(manifest.rows_in, manifest.rows_out + manifest.rejected);
    assert_eq!(manifest.rejected, 2 * 4, "{manifest:#?}");
    // The rejected rows: their file, row, line and reason, in the job's rejected.jsonl.
    let rejected = s
        .store
        .get(manifest.rejected_key.as_ref().unwrap())
        .await
        .unwrap()
        .bytes;
    let rows: Vec<RejectedRow> = rejected
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice(l).unwrap())
        .collect();
    let last_line = csv.lines().count() as u64;
    for file in ["a.csv", "b.csv.gz"] {
        let mut lines: Vec<u64> = rows
            .iter()
            .filter(|r| r.file == file)
            .map(|r| r.line.unwrap())
            .collect();
        lines.sort_unstable();
        let mut want = bad_lines.clone();
        want.push(last_line);
        assert_eq!(lines, want, "{file}: {rows:#?}");
    }
    let reasons = serde_json::to_string(&rows).unwrap();
    for needle in ["expected 7 fields", "amount", "purple", "not UTF-8"] {
        assert!(reasons.contains(needle), "{needle}: {reasons}");
    }
    // Every good row scored once, equal to the score function's answer.
    let outputs = s.outputs("j1").await;
    assert_eq!(outputs.len() as u64, manifest.rows_out);
    let want = expected(&s, &csv).await;
    assert_eq!(want.len(), 701 - 4);
    for file in ["a.csv", "b.csv.gz"] {
        for (row, p) in &want {
            let got = outputs
                .get(&(file.to_string(), *row))
                .unwrap_or_else(|| panic!("{file} row {row} missing"));
            assert_eq!(got.1, *p, "{file} row {row}");
            assert_eq!(got.0, if *p >= 0.5 { "1" } else { "0" });
        }
    }
    let parquet_rows = outputs.keys().filter(|(f, _)| f == "c.parquet").count();
    assert_eq!(parquet_rows, 700);
    // The Parquet file is the same data: its rows score as the CSV's rows of the same data.
    let data = mixed_csv(700);
    let first: Vec<&str> = data.lines().nth(2).unwrap().split(',').collect();
    let (_, p, color) = &outputs[&("c.parquet".to_string(), 1)];
    assert_eq!(color, first[3]);
    let (_, p_csv, _) = &outputs[&("a.csv".to_string(), 1)];
    assert!((p - p_csv).abs() < 1e-12, "{p} vs {p_csv}");
    // `batch status`'s summary of the same job is the manifest.
    assert!(manifest.wall_seconds >= manifest.plan_seconds);
    assert!(manifest.worker_seconds > 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redelivered_and_killed_partitions_write_once() {
    let s = setup().await;
    s.put("j2", "a.csv", mixed_csv(500).into_bytes()).await;
    let batch = s.handler().await;
    let planned = batch
        .plan_job(&BatchJobRequest {
            model: "mixed".into(),
            job: "j2".into(),
            version: None,
            partition_rows: Some(100),
            include_inputs: false,
        })
        .await
        .unwrap();
    let BatchOutcome::Planned {
        partitions, sent, ..
    } = planned
    else {
        panic!("{planned:?}")
    };
    assert_eq!((partitions, sent), (5, 5));
    let part = |i| BatchPartitionRequest {
        model: "mixed".into(),
        job: "j2".into(),
        partition: i,
    };
    // Partition 0 scored, then "killed" after its output and before its manifest: the
    // manifest is gone, the output stays.
    batch.score_partition(&part(0)).await.unwrap();
    let root = s.dir.path().join("store");
    let manifest0 = root.join("batch/mixed/j2/output/part-00000.json");
    let output0 = layout::batch_part_output("mixed", "j2", 0).unwrap();
    let before = s.store.head(&output0).await.unwrap().unwrap();
    std::fs::remove_file(&manifest0).unwrap();
    let modified = std::fs::metadata(root.join(output0.as_str()))
        .unwrap()
        .modified()
        .unwrap();
    // The redelivery writes the same output (untouched) and the manifest.
    let again = batch.score_partition(&part(0)).await.unwrap();
    assert!(
        matches!(again, BatchOutcome::Scored { rows_out: 100, .. }),
        "{again:?}"
    );
    assert_eq!(s.store.head(&output0).await.unwrap().unwrap(), before);
    assert_eq!(
        std::fs::metadata(root.join(output0.as_str()))
            .unwrap()
            .modified()
            .unwrap(),
        modified,
        "the output was rewritten"
    );
    assert!(manifest0.exists());
    // A duplicated message for a scored partition writes nothing.
    let count = s.store.list_all("batch/mixed/j2/").await.unwrap().len();
    let dup = batch.score_partition(&part(0)).await.unwrap();
    assert!(matches!(dup, BatchOutcome::AlreadyScored { .. }), "{dup:?}");
    assert_eq!(
        s.store.list_all("batch/mixed/j2/").await.unwrap().len(),
        count
    );
    // The queue still holds the five partition messages (0 among them): draining scores the
    // rest and ends the job; its manifest counts every row once.
    let handled = s.drain(2).await;
    assert_eq!(handled.len(), 5, "{handled:#?}");
    let manifest = s.manifest("j2").await.unwrap();
    assert_eq!(manifest.status, JobStatus::Succeeded);
    assert_eq!((manifest.rows_in, manifest.rows_out), (500, 500));
    assert_eq!(s.outputs("j2").await.len(), 500);
    // Planning the job again (a duplicated notification, `batch resume`) sends nothing.
    let again = batch
        .plan_job(&BatchJobRequest {
            model: "mixed".into(),
            job: "j2".into(),
            version: None,
            partition_rows: None,
            include_inputs: false,
        })
        .await
        .unwrap();
    assert!(
        matches!(
            again,
            BatchOutcome::Planned {
                existing: true,
                sent: 0,
                ..
            }
        ),
        "{again:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_version_or_a_replaced_input_stops_the_job_with_its_reason() {
    let s = setup().await;
    let batch = s.handler().await;
    let request = |job: &str| BatchJobRequest {
        model: "mixed".into(),
        job: job.into(),
        version: None,
        partition_rows: Some(100),
        include_inputs: false,
    };
    let part = |job: &str, i| BatchPartitionRequest {
        model: "mixed".into(),
        job: job.into(),
        partition: i,
    };
    // An input replaced after planning.
    s.put("changed", "a.csv", mixed_csv(300).into_bytes()).await;
    batch.plan_job(&request("changed")).await.unwrap();
    batch.score_partition(&part("changed", 0)).await.unwrap();
    s.put("changed", "a.csv", mixed_csv(301).into_bytes()).await;
    let stopped = batch.score_partition(&part("changed", 1)).await.unwrap();
    let BatchOutcome::Stopped { reason, .. } = stopped else {
        panic!("{stopped:?}")
    };
    assert!(reason.contains("changed while the job ran"), "{reason}");
    let manifest = s.manifest("changed").await.unwrap();
    assert_eq!(manifest.status, JobStatus::Failed);
    assert_eq!(manifest.reason.as_deref(), Some(reason.as_str()));
    assert_eq!(manifest.partitions_done, 1);
    // The remaining partitions stop without scoring.
    let later = batch.score_partition(&part("changed", 2)).await.unwrap();
    assert!(matches!(later, BatchOutcome::Stopped { .. }), "{later:?}");
    assert!(
        !s.store
            .exists(&layout::batch_part_output("mixed", "changed", 2).unwrap())
            .await
            .unwrap()
    );

    // The version rejected midway.
    s.put("rejected", "a.csv", mixed_csv(300).into_bytes())
        .await;
    batch.plan_job(&request("rejected")).await.unwrap();
    batch.score_partition(&part("rejected", 0)).await.unwrap();
    RegistryStore::new(s.store.clone())
        .update("mixed", |r| {
            r.production = None;
            r.versions.get_mut(&s.version).unwrap().status =
                lambdaml::registry::VersionStatus::Rejected;
            Ok(())
        })
        .await
        .unwrap();
    let stopped = batch.score_partition(&part("rejected", 1)).await.unwrap();
    let BatchOutcome::Stopped { reason, .. } = stopped else {
        panic!("{stopped:?}")
    };
    assert!(reason.contains("was rejected"), "{reason}");
    assert_eq!(
        s.manifest("rejected").await.unwrap().status,
        JobStatus::Failed
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_jobs_are_refused_naming_what_is_wrong() {
    let s = setup().await;
    let batch = s.handler().await;
    let plan = |job: &str, rows: Option<u64>| {
        let batch = &batch;
        let job = job.to_string();
        async move {
            batch
                .plan_job(&BatchJobRequest {
                    model: "mixed".into(),
                    job,
                    version: None,
                    partition_rows: rows,
                    include_inputs: false,
                })
                .await
                .unwrap_err()
                .reason()
                .to_string()
        }
    };
    assert!(plan("empty", None).await.contains("has no input"));
    s.put(
        "typo",
        "a.csv",
        b"amount,cuont,member,color\n1,2,true,red\n".to_vec(),
    )
    .await;
    let e = plan("typo", None).await;
    assert!(e.contains("count (the file has \"cuont\")"), "{e}");
    s.put("json", "a.json", b"{}".to_vec()).await;
    assert!(plan("json", None).await.contains(".parquet"));
    s.put("zero", "a.csv", mixed_csv(3).into_bytes()).await;
    assert!(plan("zero", Some(0)).await.contains("between 1 and"));
    assert!(plan("../x", None).await.contains("invalid job name"));
    s.put("notparquet", "a.parquet", b"PAR1 but not really".to_vec())
        .await;
    assert!(
        plan("notparquet", None)
            .await
            .contains("not a Parquet file")
    );
    // A partition of a job that was never planned.
    let e = batch
        .score_partition(&BatchPartitionRequest {
            model: "mixed".into(),
            job: "never".into(),
            partition: 0,
        })
        .await
        .unwrap_err();
    assert!(e.reason().contains("has no plan"), "{e:?}");
    // The job's own outputs, notified by S3, are ignored.
    let object = serde_json::json!({"Records": [{"eventSource": "aws:s3", "eventName": "ObjectCreated:Put",
        "s3": {"bucket": {"name": "b"}, "object": {"key": "batch/mixed/j/output/part-00000.parquet"}}}]});
    let answer = lambdaml::stage::handle_lambda_event(&batch, object, None)
        .await
        .unwrap();
    assert_eq!(answer[0]["outcome"], "ignored", "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_job_waits_for_the_inputs_its_options_name() {
    let s = setup().await;
    let batch = s.handler().await;
    let notify = |key: &str| {
        serde_json::json!({"Records": [{"eventSource": "aws:s3", "eventName": "ObjectCreated:Put",
            "s3": {"bucket": {"name": "b"}, "object": {"key": key}}}]})
    };
    let options = layout::batch_options("mixed", "two").unwrap();
    s.store
        .put(
            &options,
            Bytes::from(r#"{"partition_rows": 50, "inputs": ["a.csv", "b.csv"]}"#),
        )
        .await
        .unwrap();
    s.put("two", "a.csv", mixed_csv(120).into_bytes()).await;
    let answer =
        lambdaml::stage::handle_lambda_event(&batch, notify("batch/mixed/two/input/a.csv"), None)
            .await
            .unwrap();
    assert_eq!(answer[0]["outcome"], "waiting", "{answer}");
    assert_eq!(answer[0]["missing"], serde_json::json!(["b.csv"]));
    s.put("two", "b.csv", mixed_csv(80).into_bytes()).await;
    let answer =
        lambdaml::stage::handle_lambda_event(&batch, notify("batch/mixed/two/input/b.csv"), None)
            .await
            .unwrap();
    assert_eq!(answer[0]["outcome"], "planned", "{answer}");
    // 120 rows in partitions of 50, and 80.
    assert_eq!(answer[0]["partitions"], 3 + 2, "{answer}");
    // The first notification again (S3 delivers at least once): the plan stands.
    let again =
        lambdaml::stage::handle_lambda_event(&batch, notify("batch/mixed/two/input/a.csv"), None)
            .await
            .unwrap();
    assert_eq!(again[0]["existing"], true, "{again}");
    s.drain(2).await;
    assert_eq!(s.manifest("two").await.unwrap().rows_out, 200);
    // A file that arrives after its job was planned is refused, naming why.
    s.put("two", "late.csv", mixed_csv(10).into_bytes()).await;
    let late = lambdaml::stage::handle_lambda_event(
        &batch,
        notify("batch/mixed/two/input/late.csv"),
        None,
    )
    .await
    .unwrap_err();
    assert!(
        late.reason()
            .contains("arrived after batch job two was planned"),
        "{late:?}"
    );
    // A typo in the options is named.
    s.store
        .put(
            &layout::batch_options("mixed", "typo").unwrap(),
            Bytes::from(r#"{"partiton_rows": 50}"#),
        )
        .await
        .unwrap();
    s.put("typo", "a.csv", mixed_csv(10).into_bytes()).await;
    let e =
        lambdaml::stage::handle_lambda_event(&batch, notify("batch/mixed/typo/input/a.csv"), None)
            .await
            .unwrap_err();
    assert!(e.reason().contains("partiton_rows"), "{e:?}");
}

/// The mixed data without a quote, in the shapes the numeric fast path must hand to the
/// general path: bad rows, numbers it does not parse itself, blank lines and CRLF ends.
/// With `quoted`, the note of every row is quoted, which sends every partition down the
/// `csv` reader's path instead; the values are the same.
fn unquoted_csv(rows: usize, quoted: bool) -> String {
    let data = mixed_csv(rows);
    let mut out = String::from("id,amount,count,member,color,label,note\n");
    let note = if quoted { "\"plain\"" } else { "plain" };
    for (i, row) in data.lines().skip(1).enumerate() {
        let v: Vec<&str> = row.split(',').collect();
        let (amount, count, member, color, label) = (v[0], v[1], v[2], v[3], v[4]);
        let line = match i % 50 {
            3 => format!("{i},{amount},{count},{member},{color},{label}"),
            5 => format!("{i},abc,{count},{member},{color},{label},{note}"),
            7 => format!("{i},{amount},{count},{member},purple,{label},{note}"),
            9 => format!("{i},{amount},{count},{member},{color},{label},{note},extra"),
            11 => format!("{i},1.5e1,{count},{member},{color},{label},{note}"),
            13 => format!("{i}, {amount} ,{count},{member}, {color},{label},{note}"),
            15 => format!("{i},,{count},{member},{color},{label},{note}"),
            17 => format!("{i},-{amount},{count},yes,{color},{label},{note}"),
            19 => {
                format!("{i},{amount}00000000000000000001,{count},{member},{color},{label},{note}")
            }
            21 => format!("{i},{amount},,{member},{color},{label},{note}"),
            23 => format!("{i},{amount},{count}.0,{member},{color},{label},{note}"),
            _ => format!("{i},{amount},{count},{member},{color},{label},{note}"),
        };
        out.push_str(&line);
        out.push_str(match i % 13 {
            0 => "\r\n",
            4 => "\n\n",
            8 => "\r\n\r\n",
            _ => "\n",
        });
    }
    out.push_str("999999,\u{ff}-not-utf8,1,true,red,1,");
    out.push_str(note);
    out.push('\n');
    out
}

/// Every rejected row of `file`, in row order.
async fn rejected_of(s: &Setup, job: &str, file: &str) -> Vec<RejectedRow> {
    let manifest = s.manifest(job).await.unwrap();
    let bytes = s
        .store
        .get(manifest.rejected_key.as_ref().unwrap())
        .await
        .unwrap()
        .bytes;
    let mut rows: Vec<RejectedRow> = bytes
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice(l).unwrap())
        .filter(|r: &RejectedRow| r.file == file)
        .collect();
    rows.sort_by_key(|r| r.row);
    rows
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_numeric_fast_path_scores_and_rejects_as_the_csv_reader_does() {
    let s = setup().await;
    let mut fast = unquoted_csv(900, false).into_bytes();
    let mut slow = unquoted_csv(900, true).into_bytes();
    // The last row's amount is not UTF-8.
    for bytes in [&mut fast, &mut slow] {
        let pos = bytes.len() - bytes.iter().rev().position(|&b| b == 0xC3).unwrap() - 1;
        bytes[pos] = 0xFF;
        bytes.remove(pos + 1);
    }
    assert!(!fast.contains(&b'"') && slow.contains(&b'"'));
    s.put("fp", "fast.csv", fast).await;
    s.put("fp", "slow.csv", slow).await;
    let handled = s.run("fp", 100, 2).await;
    assert!(handled.iter().all(|h| h.outcome == "ok"), "{handled:#?}");
    let manifest = s.manifest("fp").await.unwrap();
    assert_eq!(manifest.status, JobStatus::Succeeded, "{manifest:#?}");
    assert_eq!(manifest.rows_in, 2 * 901);
    // Every scored row the same, bit for bit, with the same input columns.
    let outputs = s.outputs("fp").await;
    let of = |file: &str| -> Vec<(u64, (String, u64, String))> {
        outputs
            .iter()
            .filter(|((f, _), _)| f == file)
            .map(|((_, row), (p, x, c))| (*row, (p.clone(), x.to_bits(), c.clone())))
            .collect()
    };
    let (fast_out, slow_out) = (of("fast.csv"), of("slow.csv"));
    assert!(fast_out.len() > 700, "{}", fast_out.len());
    assert_eq!(fast_out, slow_out);
    // Rows the fast path handed on: a number with spaces, a trailing zero, an exponent,
    // a boolean word, a missing amount, all scored (or refused) as the reader's path does.
    for row in [11, 13, 15, 17, 23] {
        assert!(fast_out.iter().any(|(r, _)| *r == row), "row {row} scored");
    }
    // The same rejections: rows, physical lines, reasons and text.
    let (fast_rej, slow_rej) = (
        rejected_of(&s, "fp", "fast.csv").await,
        rejected_of(&s, "fp", "slow.csv").await,
    );
    let strip = |rows: &[RejectedRow]| -> Vec<String> {
        rows.iter()
            .map(|r| {
                let mut r = r.clone();
                r.file.clear();
                r.record = r
                    .record
                    .map(|t| t.replace("\"plain\"", "plain").replace(",plain", ",note"));
                serde_json::to_string(&r).unwrap()
            })
            .collect()
    };
    assert_eq!(strip(&fast_rej), strip(&slow_rej));
    let reasons = serde_json::to_string(&fast_rej).unwrap();
    for needle in ["expected 7 fields", "abc", "purple", "not UTF-8"] {
        assert!(reasons.contains(needle), "{needle}: {reasons}");
    }
    // Lines count blank lines and CRLF ends: data row 9 (the row with a field too many)
    // is on line 13, after a blank line and a blank CRLF line.
    let long = fast_rej.iter().find(|r| r.row == 9).unwrap();
    assert_eq!(long.line, Some(13), "{long:?}");
}
