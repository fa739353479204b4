//! Least privilege, checked against what the functions really do: the whole loop (a bad
//! file and a good one ingested, preprocess, train, evaluate, deploy, scoring and feedback,
//! the monitor's breach and retrain, the retrain through the pipeline again) runs with each
//! function's store recording every key it reads, writes and lists. Every access must be
//! allowed by that function's statements in template.yaml — and every S3 grant in the
//! template must be used by the loop, so the template grants nothing the code does not need.

#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use lambdaml::queue::open_queues;
use lambdaml::store::{
    ByteStream, FileStore, ListPage, Object, ObjectKey, ObjectMeta, ObjectStore, StoreError,
};
use lambdaml_cli::functions::{Function, Handler, build_with};
use lambdaml_cli::template::{Stack, StackContext, Template};
use serde_json::Value;
use tower::ServiceExt;

const SPEC: &str = include_str!("../../../examples/specs/breast_cancer.toml");
const CSV: &str = include_str!("../../../data/sklearn_breast_cancer.csv");

type Log = Arc<Mutex<BTreeSet<(String, &'static str, String)>>>;

/// A store that records (function, action, key or prefix) for every call.
#[derive(Debug)]
struct Recording {
    inner: Arc<dyn ObjectStore>,
    function: String,
    log: Log,
}

impl Recording {
    fn note(&self, action: &'static str, key: &str) {
        self.log
            .lock()
            .unwrap()
            .insert((self.function.clone(), action, key.to_string()));
    }
}

#[async_trait]
impl ObjectStore for Recording {
    async fn get(&self, key: &ObjectKey) -> Result<Object, StoreError> {
        self.note("s3:GetObject", key.as_str());
        self.inner.get(key).await
    }
    async fn get_stream(&self, key: &ObjectKey) -> Result<ByteStream, StoreError> {
        self.note("s3:GetObject", key.as_str());
        self.inner.get_stream(key).await
    }
    async fn put(&self, key: &ObjectKey, bytes: Bytes) -> Result<ObjectMeta, StoreError> {
        self.note("s3:PutObject", key.as_str());
        self.inner.put(key, bytes).await
    }
    async fn put_file(&self, key: &ObjectKey, path: &Path) -> Result<ObjectMeta, StoreError> {
        self.note("s3:PutObject", key.as_str());
        self.inner.put_file(key, path).await
    }
    async fn put_if_absent(&self, key: &ObjectKey, bytes: Bytes) -> Result<ObjectMeta, StoreError> {
        self.note("s3:PutObject", key.as_str());
        self.inner.put_if_absent(key, bytes).await
    }
    async fn put_if_match(
        &self,
        key: &ObjectKey,
        bytes: Bytes,
        etag: &str,
    ) -> Result<ObjectMeta, StoreError> {
        self.note("s3:PutObject", key.as_str());
        self.inner.put_if_match(key, bytes, etag).await
    }
    async fn head(&self, key: &ObjectKey) -> Result<Option<ObjectMeta>, StoreError> {
        self.note("s3:GetObject", key.as_str());
        self.inner.head(key).await
    }
    async fn list_page(
        &self,
        prefix: &str,
        token: Option<String>,
        limit: usize,
    ) -> Result<ListPage, StoreError> {
        self.note("s3:ListBucket", prefix);
        self.inner.list_page(prefix, token, limit).await
    }
    async fn list_all(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError> {
        self.note("s3:ListBucket", prefix);
        self.inner.list_all(prefix).await
    }
    fn url(&self) -> String {
        self.inner.url()
    }
}

/// `*` matches any run of characters, as in IAM resource patterns.
fn glob(pattern: &str, text: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == text,
        Some((head, tail)) => {
            text.starts_with(head)
                && (0..=text.len() - head.len()).any(|i| {
                    text.is_char_boundary(head.len() + i) && glob(tail, &text[head.len() + i..])
                })
        }
    }
}

/// (action, resource pattern) pairs a function's statements allow.
fn grants(stack: &Stack, function: &str) -> Vec<(String, String)> {
    let props = stack.properties(function).unwrap();
    let mut out = Vec::new();
    for policy in props["Policies"].as_array().into_iter().flatten() {
        for st in policy["Statement"].as_array().into_iter().flatten() {
            if st["Effect"] != "Allow" {
                continue;
            }
            let list = |v: &Value| match v {
                Value::Array(a) => a.iter().map(|x| x.as_str().unwrap().to_string()).collect(),
                Value::String(s) => vec![s.clone()],
                _ => Vec::<String>::new(),
            };
            for a in list(&st["Action"]) {
                for r in list(&st["Resource"]) {
                    out.push((a.clone(), r));
                }
            }
        }
    }
    out
}

async fn drain(functions: &BTreeMap<&str, Function>) {
    let order = [
        "ingest",
        "preprocess",
        "train",
        "evaluate",
        "deploy",
        "batch",
        "monitor",
    ];
    loop {
        let mut progressed = false;
        for name in order {
            let f = &functions[name];
            let queue = f.own_queue.as_ref().unwrap();
            let received = queue
                .receive(1, std::time::Duration::from_secs(60))
                .await
                .unwrap();
            if received.is_empty() {
                continue;
            }
            progressed = true;
            let event =
                lambdaml::lambda::sqs_event(&received, "arn:aws:sqs:us-east-1:123456789012:q");
            let out = f.invoke(event).await.unwrap();
            assert_eq!(
                out.response["batchItemFailures"],
                serde_json::json!([]),
                "{name}"
            );
            for m in received {
                queue.delete(&m.receipt).await.unwrap();
            }
        }
        if !progressed {
            return;
        }
    }
}

async fn http(function: &Function, method: &str, path: &str, body: String) -> Value {
    let Handler::Score(state) = &function.handler else {
        panic!("not score")
    };
    let request = axum::http::Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", "application/json")
        .body(axum::body::Body::from(body))
        .unwrap();
    let response = lambdaml_score::router(state.clone())
        .oneshot(request)
        .await
        .unwrap();
    assert!(
        response.status().is_success(),
        "{path}: {}",
        response.status()
    );
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

/// A window over the monitor's part size (about 1 KiB in the function's environment):
/// planned in parts of one capture hour each, the parts aggregated from the monitor queue
/// and merged into the report. The hour before holds a copy of the captures, an hour
/// earlier.
async fn monitor_in_parts(
    base: &Arc<dyn ObjectStore>,
    stack: &Stack,
    queues: &lambdaml::queue::Queues,
    log: &Log,
    functions: &BTreeMap<&str, Function>,
) {
    let copies = base.list_all("captures/breast-cancer/").await.unwrap();
    for (i, meta) in copies.iter().enumerate() {
        let text = base.get(&meta.key).await.unwrap().bytes;
        let hour = lambdaml::layout::record_hour(meta.key.as_str()).unwrap();
        let earlier = hour - chrono::Duration::hours(1);
        let mut shifted = String::new();
        for line in String::from_utf8_lossy(&text).lines() {
            let mut record: Value = serde_json::from_str(line).unwrap();
            let at = chrono::DateTime::parse_from_rfc3339(record["timestamp"].as_str().unwrap())
                .unwrap()
                - chrono::Duration::hours(1);
            record["timestamp"] =
                Value::String(at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true));
            record["request_id"] = Value::String(format!("early-{}", record["request_id"]));
            shifted.push_str(&format!("{record}\n"));
        }
        let folder = earlier.format("%Y-%m-%d/%H");
        let key = format!("captures/breast-cancer/{folder}/early-{i}.jsonl");
        let key = ObjectKey::new(key).unwrap();
        base.put(&key, Bytes::from(shifted)).await.unwrap();
    }
    let mut def = stack
        .functions()
        .unwrap()
        .into_iter()
        .find(|d| d.binary == "monitor")
        .unwrap();
    def.environment.insert(
        lambdaml_monitor::parts::PARTITION_MIB_VAR.into(),
        "0.001".into(),
    );
    let parted = build_with(
        "monitor",
        Arc::new(Recording {
            inner: base.clone(),
            function: def.id.clone(),
            log: log.clone(),
        }),
        queues,
        &def.environment,
        3,
    )
    .await
    .unwrap();
    let planned = parted
        .invoke(serde_json::json!({"model": "breast-cancer", "window": "3h", "retrain": false}))
        .await
        .unwrap();
    let report = planned.response["runs"][0]["report"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        planned.response["runs"][0]["parts"].as_u64() >= Some(2),
        "{}",
        planned.response
    );
    drain(functions).await;
    let merged: Value = serde_json::from_slice(
        &base
            .get(&ObjectKey::new(report).unwrap())
            .await
            .unwrap()
            .bytes,
    )
    .unwrap();
    assert!(
        merged["captures"]["rows_scored"].as_u64() > Some(0),
        "{merged}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_key_each_function_touches_is_granted_and_every_grant_is_used() {
    let dir = tempfile::tempdir().unwrap();
    let base: Arc<dyn ObjectStore> = Arc::new(FileStore::open(dir.path().join("store")).unwrap());
    let queues = open_queues(
        &format!("file://{}", dir.path().join("queues").display()),
        3,
    )
    .await
    .unwrap();
    let mut ctx = StackContext::new("acc");
    ctx.region = "us-east-1".to_string();
    let stack = Stack::new(
        Template::parse(include_str!("../../../template.yaml")).unwrap(),
        ctx,
    )
    .unwrap();
    let log: Log = Arc::default();
    let mut functions = BTreeMap::new();
    let mut ids = BTreeMap::new();
    for def in stack.functions().unwrap() {
        let store: Arc<dyn ObjectStore> = Arc::new(Recording {
            inner: base.clone(),
            function: def.id.clone(),
            log: log.clone(),
        });
        let f = build_with(&def.binary, store, &queues, &def.environment, 3)
            .await
            .unwrap();
        ids.insert(def.binary.clone(), def.id.clone());
        functions.insert(
            [
                "ingest",
                "preprocess",
                "train",
                "evaluate",
                "deploy",
                "score",
                "monitor",
                "batch",
            ]
            .into_iter()
            .find(|n| *n == def.binary)
            .unwrap(),
            f,
        );
    }
    let put = |k: &str, v: String| {
        let base = base.clone();
        let k = ObjectKey::new(k.to_string()).unwrap();
        async move { base.put(&k, Bytes::from(v)).await.unwrap() }
    };
    // What a user does: a spec, a file without the label column (quarantined), the data.
    put("specs/breast-cancer.toml", SPEC.to_string()).await;
    let no_label: String = CSV
        .lines()
        .map(|l| l.rsplit_once(',').unwrap().0.to_string() + "\n")
        .collect();
    put("raw/breast-cancer/no-label.csv", no_label).await;
    put("raw/breast-cancer/data.csv", CSV.to_string()).await;
    let ingest = &functions["ingest"];
    let event = lambdaml_cli::local::s3_event("b", "raw/breast-cancer/no-label.csv", 1);
    assert!(ingest.invoke(event).await.is_err(), "refused whole");
    let event = lambdaml_cli::local::s3_event("b", "raw/breast-cancer/data.csv", 1);
    ingest.invoke(event).await.unwrap();
    drain(&functions).await;
    // An operator asks deploy to decide a version by hand (events/deploy-direct.json): a
    // direct request carries no evaluation, so deploy reads it and the run's spec.
    let (registry, _) = lambdaml::registry::RegistryStore::new(base.clone())
        .load("breast-cancer")
        .await
        .unwrap()
        .unwrap();
    let production = registry.production.clone().unwrap();
    let direct = serde_json::json!({"model_name": "breast-cancer", "model_version": production});
    functions["deploy"].invoke(direct).await.unwrap();

    // A batch job dropped in the bucket: planned from its S3 notification, its two
    // partitions scored from the batch queue, the job's manifest written.
    put("batch/breast-cancer/acc/input/rows.csv", CSV.to_string()).await;
    put(
        "batch/breast-cancer/acc/job.json",
        serde_json::json!({"partition_rows": 300, "inputs": ["rows.csv"]}).to_string(),
    )
    .await;
    let event = lambdaml_cli::local::s3_event("b", "batch/breast-cancer/acc/input/rows.csv", 1);
    let planned = functions["batch"].invoke(event).await.unwrap();
    assert_eq!(planned.response[0]["partitions"], 2, "{}", planned.response);
    drain(&functions).await;
    let manifest: Value = serde_json::from_slice(
        &base
            .get(&ObjectKey::new("batch/breast-cancer/acc/manifest.json").unwrap())
            .await
            .unwrap()
            .bytes,
    )
    .unwrap();
    assert_eq!(manifest["rows_out"], 569, "{manifest}");

    // Scoring (drifted rows) and wrong labels, then the monitor's breach and retrain.
    let score = &functions["score"];
    let mut lines = CSV.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let rows: Vec<Vec<f64>> = lines
        .take(250)
        .map(|l| {
            l.split(',')
                .take(header.len() - 1)
                .map(|c| c.parse::<f64>().unwrap() * 3.0)
                .collect()
        })
        .collect();
    let labels: Vec<&str> = CSV
        .lines()
        .skip(1)
        .take(250)
        .map(|l| if l.ends_with(",1") { "0" } else { "1" })
        .collect();
    let body = serde_json::json!({"dataframe_split": {"columns": &header[..header.len() - 1], "data": rows}});
    let scored = http(
        score,
        "POST",
        "/invocations?model=breast-cancer",
        body.to_string(),
    )
    .await;
    let feedback = serde_json::json!({"request_id": scored["request_id"], "labels": labels});
    http(
        score,
        "POST",
        "/v2/models/breast-cancer/feedback",
        feedback.to_string(),
    )
    .await;
    http(score, "GET", "/v2/models/breast-cancer", String::new()).await;
    let monitor = &functions["monitor"];
    let out = monitor
        .invoke(serde_json::json!({"model": "breast-cancer", "window": "1h"}))
        .await
        .unwrap();
    assert_eq!(
        out.response["runs"][0]["retrain"], "sent",
        "{}",
        out.response
    );
    drain(&functions).await;

    // A rollout: the other version scores a copy of the traffic as the shadow (started by a
    // direct invocation of deploy), and the next monitor run decides it.
    let registry = lambdaml::registry::RegistryStore::new(base.clone());
    let production = registry
        .get("breast-cancer")
        .await
        .unwrap()
        .production
        .unwrap();
    let (after, _) = registry
        .update("breast-cancer", |r| {
            let other = r
                .versions
                .keys()
                .find(|v| **v != production)
                .cloned()
                .expect("the retrain made a second version");
            // Whatever the rule said of it, an operator wants it compared live.
            if let Some(v) = r.versions.get_mut(&other) {
                v.status = lambdaml::registry::VersionStatus::Candidate;
            }
            Ok(other)
        })
        .await
        .unwrap();
    let other = after
        .versions
        .keys()
        .find(|v| **v != production)
        .cloned()
        .unwrap();
    functions["deploy"]
        .invoke(serde_json::json!({"action": "shadow", "model": "breast-cancer", "version": other}))
        .await
        .unwrap();
    put(
        "specs/breast-cancer.toml",
        format!("{SPEC}\n[rollout]\nmin_rows = 10\nmin_labelled = 10\nmargin = 1.0\nmax_error_rate = 1.0\n"),
    )
    .await;
    // A fresh score function reads the roles at once (as after its refresh interval).
    let score_def = stack
        .functions()
        .unwrap()
        .into_iter()
        .find(|d| d.binary == "score")
        .unwrap();
    let score: Arc<Function> = Arc::new(
        build_with(
            "score",
            Arc::new(Recording {
                inner: base.clone(),
                function: score_def.id.clone(),
                log: log.clone(),
            }),
            &queues,
            &score_def.environment,
            3,
        )
        .await
        .unwrap(),
    );
    let scored = http(
        &score,
        "POST",
        "/invocations?model=breast-cancer",
        body.to_string(),
    )
    .await;
    let feedback = serde_json::json!({"request_id": scored["request_id"], "labels": labels});
    http(
        &score,
        "POST",
        "/v2/models/breast-cancer/feedback",
        feedback.to_string(),
    )
    .await;
    let out = monitor
        .invoke(serde_json::json!({"model": "breast-cancer", "window": "1h"}))
        .await
        .unwrap();
    let rollout = &out.response["runs"][0]["rollout"];
    assert_eq!(rollout["decision"], "promote", "{}", out.response);
    assert_eq!(rollout["applied"], true, "{}", out.response);
    monitor
        .invoke(
            serde_json::from_str(include_str!("../../../events/monitor-schedule.json")).unwrap(),
        )
        .await
        .unwrap();

    monitor_in_parts(&base, &stack, &queues, &log, &functions).await;

    // A file over the ingest partition size (set to 40 KiB in the function's environment):
    // planned, its partitions checked from the ingest queue and merged into one version.
    let mut def = stack
        .functions()
        .unwrap()
        .into_iter()
        .find(|d| d.binary == "ingest")
        .unwrap();
    def.environment
        .insert(lambdaml_ingest::PARTITION_MIB_VAR.into(), "0.04".into());
    let partitioned = build_with(
        "ingest",
        Arc::new(Recording {
            inner: base.clone(),
            function: def.id.clone(),
            log: log.clone(),
        }),
        &queues,
        &def.environment,
        3,
    )
    .await
    .unwrap();
    let doubled: String = CSV
        .lines()
        .chain(CSV.lines().skip(1))
        .map(|l| format!("{l}\n"))
        .collect();
    put("raw/breast-cancer/doubled.csv", doubled).await;
    let event = lambdaml_cli::local::s3_event("b", "raw/breast-cancer/doubled.csv", 1);
    let planned = partitioned.invoke(event).await.unwrap();
    assert!(
        planned.response.to_string().contains("\"planned\""),
        "{}",
        planned.response
    );
    drain(&functions).await;
    let mut doubled_rows = None;
    for meta in base.list_all("datasets/breast-cancer/").await.unwrap() {
        if meta.key.as_str().ends_with("/manifest.json") {
            let m: Value =
                serde_json::from_slice(&base.get(&meta.key).await.unwrap().bytes).unwrap();
            if m["source"]["key"] == "raw/breast-cancer/doubled.csv" {
                doubled_rows = m["rows"].as_u64();
            }
        }
    }
    assert_eq!(doubled_rows, Some(2 * 569), "the doubled file's version");

    let bucket = "arn:aws:s3:::acc-123456789012-us-east-1";
    let log = log.lock().unwrap().clone();
    let mut denied = Vec::new();
    let mut used: BTreeSet<(String, String, String)> = BTreeSet::new();
    for (function, action, key) in &log {
        let resource = if *action == "s3:ListBucket" {
            bucket.to_string()
        } else {
            format!("{bucket}/{key}")
        };
        let grants = grants(&stack, function);
        match grants
            .iter()
            .find(|(a, r)| a == action && glob(r, &resource))
        {
            Some((a, r)) => {
                used.insert((function.clone(), a.clone(), r.clone()));
            }
            None => denied.push(format!("{function}: {action} {key}")),
        }
    }
    assert!(
        denied.is_empty(),
        "the template does not allow:\n{}",
        denied.join("\n")
    );
    let mut unused = Vec::new();
    for id in ids.values() {
        // s3:ListBucket also makes S3 answer a missing object with 404 instead of 403: a
        // function that reads needs it even when it never lists.
        let reads = log.iter().any(|(f, a, _)| f == id && *a == "s3:GetObject");
        for (a, r) in grants(&stack, id) {
            if a == "s3:ListBucket" && reads {
                continue;
            }
            if a.starts_with("s3:") && !used.contains(&(id.clone(), a.clone(), r.clone())) {
                unused.push(format!("{id}: {a} {r}"));
            }
        }
    }
    assert!(
        unused.is_empty(),
        "granted but never used by the loop:\n{}",
        unused.join("\n")
    );
}

#[test]
fn globs_match_like_iam() {
    assert!(glob("arn:b/raw/*", "arn:b/raw/x/y.csv"));
    assert!(!glob("arn:b/raw/*", "arn:b/runs/x"));
    assert!(glob("a*c*e", "abcde"));
    assert!(!glob("a*c", "ab"));
}
