//! The whole event-driven system on the AWS emulator, run by `lambdaml local` from
//! template.yaml: a CSV put under raw/ → S3 notification → ingest → preprocess → train →
//! evaluate → deploy through real SQS queues → score and feedback over the HTTP API →
//! the scheduled monitor → a retrain message, handled. Then: the runner killed mid-pipeline
//! and restarted finishes with no duplicate or orphaned version, a duplicated delivery
//! creates nothing, a poison message lands in the dead-letter queue with its reason. And
//! `lambdaml invoke` on every sample event.

#![allow(clippy::unwrap_used, clippy::print_stderr)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use lambdaml::queue::{Queue, SqsQueue};
use lambdaml::registry::RegistryStore;
use lambdaml::store::{ObjectKey, ObjectStore, ObjectStoreExt, S3Store};
use lambdaml_e2e::{HttpClient, emulator};
use serde_json::Value;

const SPEC: &str = include_str!("../../../examples/specs/breast_cancer.toml");
const CSV: &str = include_str!("../../../data/sklearn_breast_cancer.csv");

fn template() -> String {
    format!("{}/../template.yaml", env!("CARGO_MANIFEST_DIR"))
}

/// A running `lambdaml local`, its activity lines on a channel.
struct Runner {
    child: Child,
    lines: mpsc::Receiver<Value>,
    /// Registry events seen while waiting for something else.
    registry: Vec<Value>,
    http: std::net::SocketAddr,
    _dir: tempfile::TempDir,
}

impl Runner {
    fn start(stack: &str, extra: &[&str]) -> Runner {
        let dir = tempfile::tempdir().unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_lambdaml"))
            .current_dir(dir.path())
            .args([
                "--json",
                "local",
                "--template",
                &template(),
                "--stack-name",
                stack,
            ])
            .args([
                "--addr",
                "127.0.0.1:0",
                "--poll",
                "100ms",
                "--max-visibility",
                "3s",
            ])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if let Ok(v) = serde_json::from_str::<Value>(&line)
                    && tx.send(v).is_err()
                {
                    return;
                }
            }
        });
        let mut runner = Runner {
            child,
            lines,
            registry: Vec::new(),
            http: "127.0.0.1:1".parse().unwrap(),
            _dir: dir,
        };
        let ready = runner.wait_for("ready", |v| v["kind"] == "ready", 60);
        let http = ready["detail"]["http"].as_str().unwrap();
        runner.http = http.trim_start_matches("http://").parse().unwrap();
        runner
    }

    /// A registry event seen so far (they arrive beside other activity) or within `secs`.
    fn registry_event(&mut self, name: &str, what: impl Fn(&Value) -> bool, secs: u64) -> Value {
        if let Some(v) = self.registry.iter().find(|v| what(v)) {
            return v.clone();
        }
        self.wait_for(name, |v| v["kind"] == "registry" && what(v), secs)
    }

    /// The first activity line matching `what`, within `secs`.
    fn wait_for(&mut self, name: &str, what: impl Fn(&Value) -> bool, secs: u64) -> Value {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(v) if what(&v) => return v,
                Ok(v) if v["kind"] == "registry" => self.registry.push(v),
                Ok(v) => {
                    if v["kind"] == "error" {
                        eprintln!("runner: {v}");
                    }
                }
                Err(_) => panic!("timed out waiting for {name}"),
            }
        }
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Stops it as Ctrl-C would.
    fn stop(&mut self) {
        let _ = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                assert!(status.success(), "lambdaml local exited with {status}");
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.kill();
        panic!("lambdaml local did not stop on SIGINT");
    }
}

impl Drop for Runner {
    fn drop(&mut self) {
        self.kill();
    }
}

fn key(k: &str) -> ObjectKey {
    ObjectKey::new(k.to_string()).unwrap()
}

async fn bucket(stack: &str) -> Arc<dyn ObjectStore> {
    Arc::new(S3Store::from_env(&format!("{stack}-123456789012-us-east-1"), "").await)
}

async fn queue(stack: &str, name: &str) -> SqsQueue {
    let config = lambdaml::store::sdk_config().await;
    SqsQueue::by_name(
        aws_sdk_sqs::Client::new(&config),
        &format!("{stack}-{name}"),
    )
    .await
    .unwrap()
}

/// Waits until `check` holds, polling every 200 ms.
async fn eventually<F, Fut>(what: &str, secs: u64, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("timed out waiting for {what}");
}

async fn production(store: &Arc<dyn ObjectStore>) -> Option<String> {
    RegistryStore::new(store.clone())
        .get("breast-cancer")
        .await
        .ok()
        .and_then(|r| r.production)
}

/// Version directories under models/breast-cancer/.
async fn model_dirs(store: &Arc<dyn ObjectStore>) -> std::collections::BTreeSet<String> {
    store
        .list_all("models/breast-cancer/")
        .await
        .unwrap()
        .iter()
        .filter_map(|o| o.key.as_str().split('/').nth(2).map(str::to_string))
        .collect()
}

fn stack_name(tag: &str) -> String {
    format!("{tag}{}", &uuid::Uuid::new_v4().simple().to_string()[..8])
}

/// Rows of the CSV as MLflow `dataframe_split`, every feature scaled by `scale`.
fn frame(rows: std::ops::Range<usize>, scale: f64) -> (String, Vec<String>) {
    let mut lines = CSV.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let label = header.iter().position(|h| *h == "target").unwrap();
    let columns: Vec<&str> = header
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != label)
        .map(|(_, h)| *h)
        .collect();
    let mut data = Vec::new();
    let mut labels = Vec::new();
    for line in lines.skip(rows.start).take(rows.len()) {
        let cells: Vec<&str> = line.split(',').collect();
        let row: Vec<f64> = cells
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != label)
            .map(|(_, c)| c.parse::<f64>().unwrap() * scale)
            .collect();
        data.push(row);
        labels.push(cells[label].to_string());
    }
    let body = serde_json::json!({"dataframe_split": {"columns": columns, "data": data}});
    (body.to_string(), labels)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_csv_in_raw_flows_to_scoring_monitoring_and_a_retrain_on_the_emulator() {
    if emulator("a_csv_in_raw_flows_to_scoring_monitoring_and_a_retrain_on_the_emulator").is_none()
    {
        return;
    }
    let stack = stack_name("flow");
    let mut runner = Runner::start(
        &stack,
        &[
            "--schedule-every",
            "2s",
            "--parameter-overrides",
            "ScoreAuth=NONE",
        ],
    );
    let store = bucket(&stack).await;
    store
        .put(&key("specs/breast-cancer.toml"), Bytes::from(SPEC))
        .await
        .unwrap();
    // The upload is the trigger: S3 → ingest queue (the key URL-encoded) → … → deploy.
    store
        .put(
            &key("raw/breast-cancer/first upload (1).csv"),
            Bytes::from(CSV),
        )
        .await
        .unwrap();
    for function in [
        "IngestFunction",
        "PreprocessFunction",
        "TrainFunction",
        "EvaluateFunction",
        "DeployFunction",
    ] {
        runner.wait_for(
            function,
            |v| {
                v["kind"] == "result"
                    && v["function"] == function
                    && v["detail"]["failed"] == 0
                    && v["detail"]["response"]["batchItemFailures"] == serde_json::json!([])
            },
            120,
        );
    }
    eventually("a production version", 30, || {
        let store = store.clone();
        async move { production(&store).await.is_some() }
    })
    .await;
    let version = production(&store).await.unwrap();
    // The upload is one recorded run on the bucket, every stage succeeded; the CLI reads it
    // (and the version's lineage, and the dashboard) from S3.
    let bucket_url = format!("s3://{stack}-123456789012-us-east-1");
    let cli = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_lambdaml"))
            .args([
                "--store",
                &bucket_url,
                "--queues",
                &format!("sqs://{stack}-"),
                "--json",
            ])
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<Value>(&out.stdout).unwrap()
    };
    let runs = cli(&["runs", "list"]);
    let upload = runs["runs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["trigger"] == "s3_object")
        .unwrap_or_else(|| panic!("the upload's run: {runs}"))
        .clone();
    assert!(
        upload["run"].as_str().unwrap().starts_with("s3-"),
        "{upload}"
    );
    assert_eq!(upload["detail"], "raw/breast-cancer/first upload (1).csv");
    let record = cli(&["runs", "show", upload["run"].as_str().unwrap()]);
    let statuses: Vec<(&str, &str)> = record["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["stage"].as_str().unwrap(), s["status"].as_str().unwrap()))
        .collect();
    assert_eq!(
        statuses,
        [
            ("ingest", "succeeded"),
            ("preprocess", "succeeded"),
            ("train", "succeeded"),
            ("evaluate", "succeeded"),
            ("deploy", "succeeded")
        ],
        "{record}"
    );
    let lineage = cli(&["lineage", "breast-cancer", &version]);
    assert_eq!(
        lineage["raw"]["key"],
        "raw/breast-cancer/first upload (1).csv"
    );
    assert_eq!(lineage["pipeline_run"], upload["run"]);
    // The registry's events reach the deployments queue and `lambdaml local` shows them.
    let promoted = runner.registry_event(
        "the promotion as a registry event",
        |v| v["trigger"] == "promoted",
        30,
    );
    assert_eq!(promoted["function"], "breast-cancer");
    assert_eq!(promoted["detail"]["version"], version.as_str());
    assert_eq!(promoted["detail"]["from_role"], "candidate");
    // The artifacts of the run.
    for name in [
        "model.safetensors",
        "manifest.json",
        "evaluation.json",
        "baseline.json",
        "baseline.samples",
    ] {
        store
            .head(&key(&format!("models/breast-cancer/{version}/{name}")))
            .await
            .unwrap();
    }
    // Batch scoring through the bucket: a CSV put under batch/<model>/<job>/input/ → S3
    // notification → the batch queue → plan → partition → the job's manifest.
    store
        .put(
            &key("batch/breast-cancer/drop-1/input/rows.csv"),
            Bytes::from(CSV),
        )
        .await
        .unwrap();
    let job_manifest = |job: &str| key(&format!("batch/breast-cancer/{job}/manifest.json"));
    eventually("the dropped batch job's manifest", 120, || {
        let (store, k) = (store.clone(), job_manifest("drop-1"));
        async move { store.exists(&k).await.unwrap() }
    })
    .await;
    let dropped: Value = store.get_json(&job_manifest("drop-1")).await.unwrap();
    assert_eq!(
        (
            &dropped["status"],
            &dropped["rows_out"],
            &dropped["rejected"]
        ),
        (
            &Value::from("succeeded"),
            &Value::from(569),
            &Value::from(0)
        ),
        "{dropped}"
    );
    assert_eq!(dropped["version"], version.as_str());
    // A job sent by `lambdaml batch score --no-wait` in six partitions, scored by the
    // batch function's two pollers (its mapping's MaximumConcurrency, at most --workers).
    let input = tempfile::NamedTempFile::with_suffix(".csv").unwrap();
    std::fs::write(input.path(), CSV).unwrap();
    let sent = cli(&[
        "batch",
        "score",
        "--model",
        "breast-cancer",
        "--input",
        input.path().to_str().unwrap(),
        "--job",
        "cli-1",
        "--partition-rows",
        "100",
        "--no-wait",
    ]);
    assert_eq!(sent["job"], "cli-1", "{sent}");
    eventually("the sent batch job's manifest", 120, || {
        let (store, k) = (store.clone(), job_manifest("cli-1"));
        async move { store.exists(&k).await.unwrap() }
    })
    .await;
    let status = cli(&["batch", "status", "cli-1"]);
    assert_eq!(status["status"], "succeeded", "{status}");
    assert_eq!(
        (
            &status["partitions"],
            &status["partitions_done"],
            &status["rows_out"]
        ),
        (&Value::from(6), &Value::from(6), &Value::from(569)),
        "{status}"
    );
    // A duplicated partition message (SQS delivers at least once) writes nothing.
    let before = store.list_all("batch/breast-cancer/cli-1/").await.unwrap();
    let duplicate = serde_json::json!({"version": 1, "run_id": "batch-cli-1", "stage": "batch_partition",
        "model_name": "breast-cancer", "job": "cli-1", "partition": 2});
    let batch_queue = Arc::new(queue(&stack, "batch").await);
    batch_queue.send(&duplicate.to_string()).await.unwrap();
    eventually("the duplicate to be handled", 60, || {
        let q = batch_queue.clone();
        async move {
            let s = q.stats().await.unwrap();
            s.visible == 0 && s.in_flight == 0
        }
    })
    .await;
    assert_eq!(
        store.list_all("batch/breast-cancer/cli-1/").await.unwrap(),
        before,
        "a duplicated partition wrote something"
    );
    let datasets = store.list_all("datasets/breast-cancer/").await.unwrap();
    assert!(
        datasets
            .iter()
            .any(|o| o.key.as_str().ends_with("/data.parquet")),
        "{datasets:?}"
    );
    let runs = store.list_all("runs/").await.unwrap();
    let manifest = runs
        .iter()
        .find(|o| o.key.as_str().ends_with("/manifest.json"))
        .unwrap();
    let run: Value = store.get_json(&manifest.key).await.unwrap();
    assert_eq!(run["model"], "breast-cancer", "{run}");

    // Score over the HTTP API: drifted rows (every feature × 3), then wrong labels.
    let mut http = HttpClient::connect(runner.http).await;
    let (body, labels) = frame(0..250, 3.0);
    let resp = http
        .send(
            "POST",
            "/invocations?model=breast-cancer",
            &[("content-type", "application/json")],
            body.as_bytes(),
        )
        .await;
    assert_eq!(resp.status, 200, "{}", String::from_utf8_lossy(&resp.body));
    let scored = resp.json();
    assert_eq!(scored["predictions"].as_array().unwrap().len(), 250);
    assert_eq!(scored["model_version"], version.as_str());
    let request_id = scored["request_id"].as_str().unwrap().to_string();
    let wrong: Vec<&str> = labels
        .iter()
        .map(|l| if l == "1" { "0" } else { "1" })
        .collect();
    let feedback = serde_json::json!({"request_id": request_id, "labels": wrong}).to_string();
    let resp = http
        .send(
            "POST",
            "/v2/models/breast-cancer/feedback",
            &[("content-type", "application/json")],
            feedback.as_bytes(),
        )
        .await;
    assert_eq!(resp.status, 200, "{}", String::from_utf8_lossy(&resp.body));
    let resp = http.send("GET", "/not/a/route", &[], b"").await;
    assert_eq!(
        (resp.status, resp.json()),
        (404, serde_json::json!({"message": "Not Found"}))
    );
    // Captured before the response left, as in Lambda.
    let captures = store.list_all("captures/breast-cancer/").await.unwrap();
    assert!(!captures.is_empty());
    assert!(
        !store
            .list_all("feedback/breast-cancer/")
            .await
            .unwrap()
            .is_empty()
    );

    // The schedule fires the monitor: drift and the performance drop breach, a retrain
    // goes to the ingest queue, and ingest builds the retraining dataset from it.
    let monitored = runner.wait_for(
        "a monitor run that sends a retrain",
        |v| {
            v["kind"] == "result"
                && v["function"] == "MonitorFunction"
                && v["detail"]["response"]["runs"][0]["breach"] == true
        },
        60,
    );
    let run = &monitored["detail"]["response"]["runs"][0];
    let reasons = run["reasons"].to_string();
    assert!(reasons.contains("drift"), "{run}");
    assert_eq!(run["retrain"], "sent", "{run}");
    store
        .head(&key(run["report"].as_str().unwrap()))
        .await
        .unwrap();
    store
        .head(&key(run["html"].as_str().unwrap()))
        .await
        .unwrap();
    eventually("ingest to build the retraining dataset", 60, || {
        let store = store.clone();
        async move {
            !store
                .list_all("retrain/breast-cancer/")
                .await
                .unwrap()
                .is_empty()
        }
    })
    .await;
    let retrain = store.list_all("retrain/breast-cancer/").await.unwrap();
    assert_eq!(retrain.len(), 1, "{retrain:?}");
    runner.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_runner_resumes_without_duplicates_and_poison_is_dead_lettered() {
    if emulator("a_killed_runner_resumes_without_duplicates_and_poison_is_dead_lettered").is_none()
    {
        return;
    }
    let stack = stack_name("kill");
    // Default parameters: the HTTP API is IAM-authorized.
    let mut runner = Runner::start(&stack, &["--parameter-overrides", "MaxReceiveCount=2"]);
    let mut http = HttpClient::connect(runner.http).await;
    let resp = http
        .send(
            "POST",
            "/invocations",
            &[("content-type", "application/json")],
            b"{}",
        )
        .await;
    assert_eq!(
        (resp.status, resp.json()),
        (403, serde_json::json!({"message": "Forbidden"}))
    );

    let store = bucket(&stack).await;
    store
        .put(&key("specs/breast-cancer.toml"), Bytes::from(SPEC))
        .await
        .unwrap();
    store
        .put(&key("raw/breast-cancer/data.csv"), Bytes::from(CSV))
        .await
        .unwrap();
    // Killed the moment training starts: its message is in flight, its output unfinished.
    runner.wait_for(
        "training to start",
        |v| v["kind"] == "invoke" && v["function"] == "TrainFunction",
        120,
    );
    runner.kill();
    assert!(production(&store).await.is_none(), "killed before deploy");

    // Started again, it finishes the run once the message's visibility runs out.
    let mut runner = Runner::start(&stack, &["--parameter-overrides", "MaxReceiveCount=2"]);
    eventually("a production version after the restart", 120, || {
        let store = store.clone();
        async move { production(&store).await.is_some() }
    })
    .await;
    let registry = RegistryStore::new(store.clone())
        .get("breast-cancer")
        .await
        .unwrap();
    assert_eq!(registry.versions.len(), 1, "{registry:?}");
    let dirs = model_dirs(&store).await;
    assert_eq!(dirs.len(), 1, "no orphaned model version: {dirs:?}");
    assert!(dirs.contains(registry.production.as_ref().unwrap()));
    // A request signed with this environment's credentials passes the IAM route; a forged
    // signature, another secret or a body changed after signing is refused.
    let mut http = HttpClient::connect(runner.http).await;
    let (body, _) = frame(0..2, 1.0);
    let path = "/invocations?model=breast-cancer";
    let secret = std::env::var("AWS_SECRET_ACCESS_KEY").unwrap();
    let forged = "AWS4-HMAC-SHA256 Credential=testing/20261127/us-east-1/execute-api/aws4_request, SignedHeaders=host, Signature=0";
    for (headers, expected) in [
        (sigv4_headers(&secret, path, body.as_bytes()), 200),
        (sigv4_headers("not-the-secret", path, body.as_bytes()), 403),
        (sigv4_headers(&secret, path, b"{\"instances\": []}"), 403),
        (vec![("authorization".to_string(), forged.to_string())], 403),
    ] {
        let mut all: Vec<(&str, &str)> = vec![("content-type", "application/json")];
        all.extend(headers.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        let resp = http.send("POST", path, &all, body.as_bytes()).await;
        assert_eq!(
            resp.status,
            expected,
            "{}",
            String::from_utf8_lossy(&resp.body)
        );
    }
    // Preprocess runs' files, not run records (the duplicate is a run of its own, below).
    let run_files = |store: Arc<dyn ObjectStore>| async move {
        let all = store.list_all("runs/").await.unwrap();
        let (records, files): (Vec<_>, Vec<_>) = all
            .into_iter()
            .partition(|m| m.key.as_str().ends_with("/record.json"));
        (files.len(), records)
    };
    let (runs_before, records_before) = run_files(store.clone()).await;
    let datasets_before = store.list_all("datasets/").await.unwrap().len();

    // The same notification delivered again (SQS is at-least-once): nothing new.
    let ingest = queue(&stack, "ingest").await;
    let notification = lambdaml_cli::local::s3_event(
        &format!("{stack}-123456789012-us-east-1"),
        "raw/breast-cancer/data.csv",
        CSV.len() as u64,
    );
    ingest.send(&notification.to_string()).await.unwrap();
    runner.wait_for(
        "the duplicate's ingest",
        |v| v["kind"] == "result" && v["function"] == "IngestFunction",
        60,
    );
    // Let anything it triggered drain.
    for q in ["preprocess", "train", "evaluate", "deploy"] {
        let q = queue(&stack, q).await;
        eventually("the queues to drain", 120, || {
            let q = &q;
            async move {
                let s = q.stats().await.unwrap();
                s.visible == 0 && s.in_flight == 0
            }
        })
        .await;
    }
    let registry = RegistryStore::new(store.clone())
        .get("breast-cancer")
        .await
        .unwrap();
    assert_eq!(
        registry.versions.len(),
        1,
        "a duplicate delivery made a version: {registry:?}"
    );
    assert_eq!(model_dirs(&store).await.len(), 1);
    assert_eq!(
        store.list_all("datasets/").await.unwrap().len(),
        datasets_before
    );
    // The duplicate's run found everything made: each of its steps is skipped-cached (its
    // record is final once deploy has ended, which the queues' depths can run ahead of).
    let new_record = || {
        let (store, records_before) = (store.clone(), records_before.clone());
        async move {
            let (_, after) = run_files(store.clone()).await;
            let new: Vec<_> = after
                .into_iter()
                .filter(|m| !records_before.iter().any(|b| b.key == m.key))
                .collect();
            assert!(new.len() <= 1, "one run for the duplicate: {new:?}");
            let record: lambdaml::record::RunRecord =
                store.get_json(&new.first()?.key).await.ok()?;
            Some(record)
        }
    };
    eventually("the duplicate's run to end", 60, || {
        let next = new_record();
        async move {
            next.await
                .is_some_and(|r| r.status() != lambdaml::record::RunStatus::Running)
        }
    })
    .await;
    let (runs_after, _) = run_files(store.clone()).await;
    assert_eq!(runs_after, runs_before);
    let record = new_record().await.unwrap();
    assert!(!record.steps.is_empty());
    for s in &record.steps {
        assert_eq!(
            s.status,
            lambdaml::record::StepStatus::SkippedCached,
            "{record:?}"
        );
    }

    // A poison message is parked in the stage's dead-letter queue with its reason.
    let preprocess = queue(&stack, "preprocess").await;
    preprocess.send("this is not a message").await.unwrap();
    eventually("the poison message in the dead-letter queue", 60, || {
        let q = &preprocess;
        async move { !q.dead_letters(10).await.unwrap().is_empty() }
    })
    .await;
    let dead = preprocess.dead_letters(10).await.unwrap();
    assert_eq!(dead[0].body, "this is not a message");
    assert!(dead[0].reason.contains("message is not JSON"), "{dead:?}");
    let s = preprocess.stats().await.unwrap();
    assert_eq!((s.visible, s.in_flight), (0, 0), "{s:?}");

    // Killed again, under load: four clients scoring as fast as they can. As in Lambda, the
    // score function writes a request's capture before it answers, so every answered
    // request is in the bucket; the restarted runner serves the same single version.
    let answered = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let mut clients = Vec::new();
    for _ in 0..4 {
        let answered = answered.clone();
        let (addr, secret, body) = (runner.http, secret.clone(), body.clone());
        clients.push(tokio::spawn(async move {
            let mut http = HttpClient::connect(addr).await;
            loop {
                let signed = sigv4_headers(&secret, path, body.as_bytes());
                let mut all: Vec<(&str, &str)> = vec![("content-type", "application/json")];
                all.extend(signed.iter().map(|(k, v)| (k.as_str(), v.as_str())));
                match http.try_send("POST", path, &all, body.as_bytes()).await {
                    Ok(resp) if resp.status == 200 => {
                        let id = resp.json()["request_id"].as_str().unwrap().to_string();
                        answered.lock().unwrap().push(id);
                    }
                    Ok(resp) => panic!("{}: {}", resp.status, String::from_utf8_lossy(&resp.body)),
                    Err(_) => return, // the runner is gone
                }
            }
        }));
    }
    eventually("load on the runner", 60, || {
        let answered = answered.clone();
        async move { answered.lock().unwrap().len() >= 50 }
    })
    .await;
    runner.kill();
    for c in clients {
        c.await.unwrap();
    }
    let answered = answered.lock().unwrap().clone();
    let mut captured = std::collections::HashSet::new();
    for meta in store.list_all("captures/breast-cancer/").await.unwrap() {
        let bytes = store.get(&meta.key).await.unwrap().bytes;
        for line in bytes.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            let record: Value = serde_json::from_slice(line).unwrap();
            captured.insert(record["request_id"].as_str().unwrap().to_string());
        }
    }
    let lost: Vec<&String> = answered
        .iter()
        .filter(|id| !captured.contains(*id))
        .collect();
    assert!(
        lost.is_empty(),
        "{} of {} answered requests have no capture: {:?}",
        lost.len(),
        answered.len(),
        &lost[..lost.len().min(5)]
    );
    let mut runner = Runner::start(&stack, &["--parameter-overrides", "MaxReceiveCount=2"]);
    let mut http = HttpClient::connect(runner.http).await;
    let signed = sigv4_headers(&secret, path, body.as_bytes());
    let mut all: Vec<(&str, &str)> = vec![("content-type", "application/json")];
    all.extend(signed.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    let resp = http.send("POST", path, &all, body.as_bytes()).await;
    assert_eq!(resp.status, 200, "{}", String::from_utf8_lossy(&resp.body));
    assert_eq!(
        resp.json()["model_version"],
        registry.production.clone().unwrap().as_str()
    );
    assert_eq!(model_dirs(&store).await.len(), 1);
    runner.stop();
}

/// `lambdaml invoke` takes every sample event: each is answered or refused with a clear
/// error — never a crash.
#[test]
fn invoke_takes_every_sample_event() {
    let dir = tempfile::tempdir().unwrap();
    let events = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../events");
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_lambdaml"))
            .current_dir(dir.path())
            .env_remove("AWS_ENDPOINT_URL")
            .env_remove("LAMBDAML_STORE")
            .env_remove("LAMBDAML_QUEUES")
            .args(args)
            .output()
            .unwrap()
    };
    // A deployed breast-cancer model to score and monitor, trained from the raw file the
    // sample events name (raw/breast-cancer/sklearn_breast_cancer.csv).
    std::fs::write(dir.path().join("spec.toml"), SPEC).unwrap();
    std::fs::write(dir.path().join("sklearn_breast_cancer.csv"), CSV).unwrap();
    let out = run(&[
        "train",
        "--spec",
        "spec.toml",
        "--data",
        "sklearn_breast_cancer.csv",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // What every sample event does here, by file: answered (and what the answer holds), or
    // refused with the reason named. The sample events name the run and version the
    // training above makes (training is deterministic), so the stage events find them.
    // The records a batch reported for redelivery: the poison ones (this runner cannot park
    // a record it did not receive itself, so they go back for the redrive policy).
    fn failed(r: &Value) -> Vec<&str> {
        r["batchItemFailures"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|f| f["itemIdentifier"].as_str())
                    .collect()
            })
            .unwrap_or_else(|| vec!["(not a batch answer)"])
    }
    const VERSION: &str = "510c7ffc31b6";
    type Check<'a> = &'a dyn Fn(&Value) -> bool;
    let table: Vec<(&str, Result<Check, &str>)> = vec![
        ("bad-s3-outside-raw.json", Err("is outside raw/")),
        // A job with nothing under its input folder.
        ("batch-direct.json", Err("batch job sample has no input")),
        // The job's own output, notified by S3: ignored.
        (
            "batch-s3.json",
            Ok(&|r: &Value| r[0]["outcome"] == "ignored"),
        ),
        // A partition of a job never planned is poison.
        (
            "batch-sqs.json",
            Ok(&|r: &Value| failed(r) == ["batch-msg-1"]),
        ),
        (
            "bad-unknown-source.json",
            Err("unknown event source \"aws:kinesis\""),
        ),
        (
            "bad-sqs-batch.json",
            Ok(&|r: &Value| {
                // bad-batch-4 is the good record among them.
                failed(r) == ["bad-batch-1", "bad-batch-2", "bad-batch-3", "bad-batch-5"]
            }),
        ),
        // The version trained above, already decided: nothing changes.
        (
            "deploy-direct.json",
            Ok(&|r: &Value| {
                r["version"] == VERSION && r["changed"] == false && r["production"] == VERSION
            }),
        ),
        ("deploy-rollback.json", Err("replaced no earlier version")),
        ("deploy-sqs.json", Ok(&|r: &Value| failed(r).is_empty())),
        (
            "evaluate-direct.json",
            Ok(&|r: &Value| {
                r["version"] == VERSION
                    && r["metrics"]["roc_auc"].as_f64().is_some_and(|a| a > 0.95)
            }),
        ),
        (
            "evaluate-sqs.json",
            Ok(&|r: &Value| failed(r) == ["evaluate-msg-2"]),
        ),
        // The same bytes again: the same dataset version, nothing written.
        (
            "ingest-direct.json",
            Ok(&|r: &Value| {
                r["dataset"] == "breast-cancer" && r["created"] == false && r["rows"] == 569
            }),
        ),
        // The key arrives URL-encoded and is decoded.
        (
            "ingest-s3.json",
            Err("raw object raw/breast-cancer/breast cancer (2026).csv does not exist"),
        ),
        (
            "ingest-sqs.json",
            // The notification is handled; the version-9 message is poison.
            Ok(&|r: &Value| failed(r) == ["4f1e2a1c-0002-4d3a-9d53-1a2b3c4d5e02"]),
        ),
        (
            "monitor-direct.json",
            Ok(&|r: &Value| r["runs"][0]["model"] == "breast-cancer"),
        ),
        (
            "monitor-schedule.json",
            Ok(&|r: &Value| r["runs"][0]["model"] == "breast-cancer"),
        ),
        // A part of a window never planned in parts is poison.
        (
            "monitor-sqs.json",
            Ok(&|r: &Value| failed(r) == ["monitor-msg-1"]),
        ),
        (
            "preprocess-direct.json",
            Ok(&|r: &Value| r["run_id"] == "breast-cancer-277f9ab0ec69" && r["created"] == false),
        ),
        ("preprocess-sqs.json", Ok(&|r: &Value| failed(r).is_empty())),
        (
            "score-feedback-http.json",
            Ok(&|r: &Value| r["statusCode"] == 200),
        ),
        ("score-http.json", Ok(&|r: &Value| r["statusCode"] == 200)),
        (
            "train-direct.json",
            Ok(&|r: &Value| r["version"] == VERSION && r["status"] == "exists"),
        ),
        (
            "train-sqs.json",
            Ok(&|r: &Value| failed(r) == ["train-msg-2"]),
        ),
    ];
    let mut names: Vec<String> = std::fs::read_dir(&events)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .filter(|n| n.ends_with(".json"))
        .collect();
    names.sort();
    let mut expected: Vec<String> = table.iter().map(|(n, _)| n.to_string()).collect();
    expected.sort();
    assert_eq!(
        names, expected,
        "every sample event has an expected outcome here, and every expectation its event"
    );
    let mut wrong = Vec::new();
    for (name, expect) in &table {
        let path = events.join(name);
        let function = match name.split('-').next().unwrap() {
            "bad" => "ingest",
            f => f,
        };
        let out = run(&["invoke", function, "--event", path.to_str().unwrap()]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(!stderr.contains("panicked"), "{name}: {stderr}");
        match (expect, out.status.success()) {
            (Ok(check), true) => match serde_json::from_str::<Value>(&stdout) {
                Ok(response) if check(&response) => {}
                Ok(response) => wrong.push(format!("{name}: unexpected answer {response}")),
                Err(e) => wrong.push(format!("{name}: not JSON ({e}): {stdout}")),
            },
            (Err(reason), false)
                if stderr.contains(&format!("error: {function} failed: "))
                    && stderr.contains(reason) => {}
            (_, true) => wrong.push(format!("{name}: answered {stdout}")),
            (_, false) => wrong.push(format!("{name}: refused: {}", stderr.trim())),
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    let score = run(&[
        "invoke",
        "score",
        "--event",
        events.join("score-http.json").to_str().unwrap(),
    ]);
    let response: Value = serde_json::from_slice(&score.stdout).unwrap();
    assert_eq!(response["statusCode"], 200, "{response}");
    let out = run(&[
        "invoke",
        "scorer",
        "--event",
        events.join("score-http.json").to_str().unwrap(),
    ]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown function \"scorer\""));
}

/// The SigV4 headers (`authorization`, `x-amz-date`) a client with this environment's
/// access key and `secret` sends for `POST path` with `body` to the local HTTP API.
fn sigv4_headers(secret: &str, path: &str, body: &[u8]) -> Vec<(String, String)> {
    use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
    let key = std::env::var("AWS_ACCESS_KEY_ID").unwrap();
    let identity = aws_credential_types::Credentials::new(key, secret, None, None, "test").into();
    let params = aws_sigv4::sign::v4::SigningParams::builder()
        .identity(&identity)
        .region("us-east-1")
        .name("execute-api")
        .time(std::time::SystemTime::now())
        .settings(SigningSettings::default())
        .build()
        .unwrap()
        .into();
    let headers = [("host", "127.0.0.1"), ("content-type", "application/json")];
    let request = SignableRequest::new(
        "POST",
        format!("http://127.0.0.1{path}"),
        headers.iter().copied(),
        SignableBody::Bytes(body),
    )
    .unwrap();
    let (instructions, _) = sign(request, &params).unwrap().into_parts();
    instructions
        .headers()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// `lambdaml serve` killed with SIGKILL while it serves: with `--capture-sync` every
/// answered request is in the store; without it, what was answered more than
/// `--capture-max-age` before the kill is in the store and only the requests after the last
/// write can be lost — the bound the README states.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_server_loses_no_capture_in_sync_mode_and_only_the_unwritten_window_otherwise() {
    let dir = tempfile::tempdir().unwrap();
    let store_url = format!("file://{}", dir.path().join("store").display());
    std::fs::write(dir.path().join("spec.toml"), SPEC).unwrap();
    std::fs::write(dir.path().join("breast_cancer.csv"), CSV).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_lambdaml"))
        .current_dir(dir.path())
        .env_remove("AWS_ENDPOINT_URL")
        .args([
            "--store",
            &store_url,
            "train",
            "--spec",
            "spec.toml",
            "--data",
            "breast_cancer.csv",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let store = lambdaml::store::FileStore::open(dir.path().join("store")).unwrap();
    let row: Vec<f64> = CSV
        .lines()
        .nth(1)
        .unwrap()
        .split(',')
        .take(30)
        .map(|v| v.parse().unwrap())
        .collect();
    let body = serde_json::json!({"instances": [row]}).to_string();
    let captured = || async {
        let mut n = 0;
        for meta in store.list_all("captures/breast-cancer/").await.unwrap() {
            let bytes = store.get(&meta.key).await.unwrap().bytes;
            n += bytes
                .split(|b| *b == b'\n')
                .filter(|l| !l.is_empty())
                .count();
        }
        n
    };
    // Starts `serve` with `extra` flags, answers `n` requests, waits `pause`, kills it.
    let serve_then_kill = |extra: &'static [&'static str], n: usize, pause: Duration| {
        let store_url = store_url.clone();
        let body = body.clone();
        async move {
            let mut child = Command::new(env!("CARGO_BIN_EXE_lambdaml"))
                .env_remove("AWS_ENDPOINT_URL")
                .args([
                    "--store",
                    &store_url,
                    "serve",
                    "--addr",
                    "127.0.0.1:0",
                    "--model",
                    "breast-cancer",
                ])
                .args(extra)
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            let mut stderr = BufReader::new(child.stderr.take().unwrap());
            let mut banner = String::new();
            stderr.read_line(&mut banner).unwrap();
            // Keep reading, so the server's later writes to stderr never meet a closed pipe.
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut stderr, &mut std::io::sink());
            });
            let addr: std::net::SocketAddr = banner
                .split("http://")
                .nth(1)
                .and_then(|r| r.split_whitespace().next())
                .unwrap_or_else(|| panic!("no address in {banner:?}"))
                .parse()
                .unwrap();
            let mut http = HttpClient::connect(addr).await;
            for _ in 0..n {
                let resp = http
                    .send(
                        "POST",
                        "/invocations",
                        &[("content-type", "application/json")],
                        body.as_bytes(),
                    )
                    .await;
                assert_eq!(resp.status, 200, "{}", String::from_utf8_lossy(&resp.body));
            }
            tokio::time::sleep(pause).await;
            child.kill().unwrap(); // SIGKILL: no shutdown, no final flush.
            child.wait().unwrap();
        }
    };
    serve_then_kill(&["--capture-sync"], 40, Duration::ZERO).await;
    assert_eq!(
        captured().await,
        40,
        "--capture-sync: every answered request"
    );
    serve_then_kill(
        &["--capture-max-age", "100ms"],
        30,
        Duration::from_millis(1500),
    )
    .await;
    assert_eq!(
        captured().await,
        70,
        "older than --capture-max-age: written before the kill"
    );
    serve_then_kill(&["--capture-max-age", "60s"], 25, Duration::ZERO).await;
    let after = captured().await;
    assert!(
        (70..=95).contains(&after),
        "at most the unwritten window is lost: {after}"
    );
}
