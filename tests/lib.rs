//! Helpers for the end-to-end tests: building a whole local or emulated deployment.

#![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.

use std::sync::Arc;

use lambdaml::message::Stage;
use lambdaml::pipeline::{Wire, wire};
use lambdaml::queue::Queues;
use lambdaml::stage::StageHandler;
use lambdaml::store::ObjectStore;
use lambdaml_deploy::Deploy;
use lambdaml_evaluate::Evaluate;
use lambdaml_ingest::Ingest;
use lambdaml_preprocess::Preprocess;
use lambdaml_train::Train;

/// The stage handlers over one store and one set of queues, as every deployment wires them
/// ([`lambdaml::pipeline`]).
pub async fn handlers(store: &Arc<dyn ObjectStore>, queues: &Queues) -> Vec<Arc<dyn StageHandler>> {
    async fn one<H: Wire + StageHandler + 'static>(
        store: &Arc<dyn ObjectStore>,
        queues: &Queues,
    ) -> Arc<dyn StageHandler> {
        Arc::new(wire::<H>(store.clone(), queues).await.unwrap().0)
    }
    vec![
        one::<Ingest>(store, queues).await,
        one::<Preprocess>(store, queues).await,
        one::<Train>(store, queues).await,
        one::<Evaluate>(store, queues).await,
        one::<Deploy>(store, queues).await,
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

/// The ARN of the queue at `url` (on the emulator).
pub async fn queue_arn(sqs: &aws_sdk_sqs::Client, url: &str) -> String {
    lambdaml::queue::SqsQueue::new(sqs.clone(), url)
        .arn()
        .await
        .expect("the queue has an ARN")
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

/// Runs the whole pipeline on `csv` with `spec` (TOML) in a file store under `dir`, and
/// returns the store and the production version of the spec's model.
pub async fn deploy_model(
    dir: &std::path::Path,
    spec: &str,
    dataset: &str,
    csv: &[u8],
) -> (Arc<dyn ObjectStore>, String) {
    use bytes::Bytes;
    use lambdaml::store::{FileStore, ObjectKey};
    let store: Arc<dyn ObjectStore> = Arc::new(FileStore::open(dir.join("store")).unwrap());
    let queues =
        lambdaml::queue::open_queues(&format!("file://{}", dir.join("queues").display()), 3)
            .await
            .unwrap();
    let parsed = lambdaml::spec::ModelSpec::parse(spec).unwrap();
    let model = parsed.model.name.clone();
    store
        .put(
            &ObjectKey::new(format!("specs/{model}.toml")).unwrap(),
            Bytes::from(spec.to_string()),
        )
        .await
        .unwrap();
    let raw = format!("raw/{dataset}/data.csv");
    store
        .put(
            &ObjectKey::new(raw.clone()).unwrap(),
            Bytes::from(csv.to_vec()),
        )
        .await
        .unwrap();
    queues
        .get(Stage::Ingest)
        .await
        .unwrap()
        .send(&s3_notification("local", &raw).to_string())
        .await
        .unwrap();
    let handlers = handlers(&store, &queues).await;
    lambdaml::stage::drain(
        &queues,
        &handlers,
        &lambdaml::stage::DrainOptions::default(),
        &|_| {},
    )
    .await
    .unwrap();
    let registry = lambdaml::registry::RegistryStore::new(store.clone())
        .get(&model)
        .await
        .unwrap();
    let version = registry
        .production
        .clone()
        .unwrap_or_else(|| panic!("{model} has no production version: {registry:?}"));
    (store, version)
}

/// A small real dataset with every feature type: two numeric features, a boolean and a
/// categorical one; the label depends on all of them. Deterministic.
pub fn mixed_csv(rows: usize) -> String {
    let mut rng = lambdaml::dataset::SplitMix64::new(7);
    let mut out = String::from("amount,count,member,color,label\n");
    let colors = ["red", "green", "blue"];
    for _ in 0..rows {
        let amount = rng.next_f64() * 100.0;
        let count = (rng.next_f64() * 10.0) as i64;
        let member = rng.next_f64() < 0.4;
        let color = colors[(rng.next_f64() * 3.0) as usize % 3];
        let score = amount / 50.0 - count as f64 / 5.0
            + if member { 1.0 } else { -0.5 }
            + if color == "red" { 0.8 } else { 0.0 }
            + (rng.next_f64() - 0.5) * 1.5;
        let label = u8::from(score > 0.5);
        out.push_str(&format!("{amount:.3},{count},{member},{color},{label}\n"));
    }
    out
}

/// The spec of [`mixed_csv`]: unknown features rejected, unseen categories an error.
pub const MIXED_SPEC: &str = r#"
[model]
name = "mixed"

[dataset]
name = "mixed"
label = "label"

[dataset.columns.label]
type = "categorical"
values = ["0", "1"]
nullable = false

[task]
kind = "binary"
positive_class = "1"

[features]
unknown = "reject"

[split]
method = "random"
holdout = 0.2
seed = 1

[preprocess]
unseen_category = "error"

[train]
family = "logistic"
epochs = 100

[promotion]
metric = "roc_auc"
"#;

/// A minimal HTTP/1.1 client on one kept-alive connection (what load generators and SDKs
/// do), so tests exercise the real server without an HTTP client dependency.
#[derive(Debug)]
pub struct HttpClient {
    stream: tokio::io::BufStream<tokio::net::TcpStream>,
}

/// A response: status, headers (lower-case names) and body.
#[derive(Debug)]
pub struct HttpResponse {
    /// Status code.
    pub status: u16,
    /// Headers.
    pub headers: Vec<(String, String)>,
    /// Body.
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    /// A header.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

impl HttpClient {
    /// Connects to `addr`.
    pub async fn connect(addr: std::net::SocketAddr) -> Self {
        let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        HttpClient {
            stream: tokio::io::BufStream::new(stream),
        }
    }

    /// Sends one request and reads its response (panics on a connection error).
    pub async fn send(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> HttpResponse {
        self.try_send(method, path, headers, body)
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }

    /// Sends one request and reads its response, or the connection's error (a server
    /// killed mid-request).
    pub async fn try_send(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> std::io::Result<HttpResponse> {
        use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
        let bad = |what: String| std::io::Error::new(std::io::ErrorKind::InvalidData, what);
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-length: {}\r\n",
            body.len()
        );
        for (n, v) in headers {
            head.push_str(&format!("{n}: {v}\r\n"));
        }
        head.push_str("\r\n");
        self.stream.write_all(head.as_bytes()).await?;
        self.stream.write_all(body).await?;
        self.stream.flush().await?;
        let mut line = String::new();
        self.stream.read_line(&mut line).await?;
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| bad(format!("bad status line {line:?}")))?;
        let mut headers = Vec::new();
        let mut length = 0usize;
        loop {
            let mut h = String::new();
            if self.stream.read_line(&mut h).await? == 0 {
                return Err(bad("the connection closed in the headers".into()));
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            let (n, v) = h
                .split_once(':')
                .ok_or_else(|| bad(format!("bad header {h:?}")))?;
            let (n, v) = (n.trim().to_ascii_lowercase(), v.trim().to_string());
            if n == "content-length" {
                length = v.parse().map_err(|_| bad(format!("bad length {v:?}")))?;
            }
            headers.push((n, v));
        }
        let mut body = vec![0; length];
        self.stream.read_exact(&mut body).await?;
        Ok(HttpResponse {
            status,
            headers,
            body,
        })
    }
}
