//! `lambdaml local`: the event sources of template.yaml, emulated — what neither SAM nor
//! LocalStack does without Docker.
//!
//! Against an endpoint (`AWS_ENDPOINT_URL`: moto, LocalStack) it creates the template's
//! queues and bucket if missing ([`crate::stack::up`]), then for each SQS event source
//! mapping polls the queue with the mapping's batch size and the queue's visibility timeout,
//! hands the batch to the function as a Lambda SQS event, deletes the records that
//! succeeded and leaves the reported failures for redelivery (and, after maxReceiveCount,
//! the dead-letter queue); fires each schedule event; and serves the HTTP API's routes on
//! 127.0.0.1 (an `AWS_IAM` route checks the request's SigV4 signature against this
//! environment's AWS credentials and refuses it, as API Gateway would, when it is missing or
//! wrong; see [`crate::sigv4`]). S3 notifications are the emulator's own.
//!
//! Without an endpoint it runs on the embedded default: the store's files and local queues
//! (a template queue `<prefix><stage>` is the local queue `<stage>`), and it plays the
//! bucket's notifications itself by watching the store's `raw/` for new objects.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::response::IntoResponse;
use lambdaml::queue::{Queue, QueueError, Received, SqsQueue, open_queues};
use serde_json::Value;
use tokio::sync::watch;
use tower::ServiceExt;

use crate::functions::{self, Function, Handler};
use crate::template::{
    BucketDef, EventSourceDef, FunctionDef, QueueDef, RouteDef, Stack, StackContext, Template,
};

/// How to run.
#[derive(Debug, Clone)]
pub struct LocalOptions {
    /// The template.
    pub template: std::path::PathBuf,
    /// `AWS::StackName`.
    pub stack_name: String,
    /// Parameter overrides.
    pub overrides: BTreeMap<String, String>,
    /// Where to serve the HTTP API (port 0: any free port).
    pub addr: SocketAddr,
    /// The embedded default's store and queues, used when there is no endpoint.
    pub embedded: Option<(String, String)>,
    /// Pause between empty polls.
    pub poll: Duration,
    /// Receive with at most this visibility timeout, kept alive by a heartbeat while the
    /// function runs (so a stopped runner's messages come back quickly).
    pub max_visibility: Option<Duration>,
    /// Fire schedules at this period instead of their expression's.
    pub schedule_every: Option<Duration>,
    /// The most pollers of one event source mapping (those with a
    /// `ScalingConfig.MaximumConcurrency`; the others have one).
    pub workers: usize,
}

/// One line of what happened, for the log (and `--json`).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Activity {
    /// Seconds since start.
    pub t: f64,
    /// `ready`, `invoke`, `result`, `error`, `notify`, `http`.
    pub kind: &'static str,
    /// The function's logical id (or the route, the bucket).
    pub function: String,
    /// What triggered it: an event source mapping, a schedule, a route.
    pub trigger: String,
    /// Details.
    pub detail: Value,
}

/// What runs: the resolved stack and its functions.
#[derive(Debug)]
pub struct Local {
    /// The stack.
    pub stack: Stack,
    /// Its resources, resolved once.
    pub resolved: Resolved,
    /// Functions by logical id.
    pub functions: BTreeMap<String, Function>,
    endpoint: Option<String>,
    embedded_queues: Option<lambdaml::queue::Queues>,
}

/// The template's resources as `lambdaml local` uses them, resolved once when it starts.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// The queues.
    pub queues: Vec<QueueDef>,
    /// The functions.
    pub functions: Vec<FunctionDef>,
    /// The SQS event source mappings.
    pub event_sources: Vec<EventSourceDef>,
    /// The buckets and their notifications.
    pub buckets: Vec<BucketDef>,
    /// The HTTP API's routes.
    pub routes: Vec<RouteDef>,
    /// The prefix of the functions' queue names (`LAMBDAML_QUEUES=sqs://<prefix>`).
    queue_prefix: String,
}

impl Resolved {
    fn of(stack: &Stack) -> Result<Self> {
        let functions = stack.functions()?;
        let queue_prefix = functions
            .iter()
            .find_map(|f| f.environment.get("LAMBDAML_QUEUES").cloned())
            .and_then(|u| u.strip_prefix("sqs://").map(str::to_string))
            .unwrap_or_default();
        Ok(Resolved {
            queues: stack.queues()?,
            event_sources: stack.event_sources()?,
            buckets: stack.buckets()?,
            routes: stack.routes()?,
            functions,
            queue_prefix,
        })
    }
}

type Activities = Arc<dyn Fn(&'static str, &str, &str, Value) + Send + Sync>;

type Report = Arc<dyn Fn(Activity) + Send + Sync>;

impl Local {
    /// Resolves the template, creates the stack's resources on the endpoint (or opens the
    /// embedded default) and builds every function.
    pub async fn open(options: &LocalOptions) -> Result<Self> {
        let template = Template::load(&options.template)?;
        let mut context = StackContext::new(&options.stack_name);
        context.overrides = options.overrides.clone();
        let mut stack = Stack::new(template, context)?;
        let endpoint = std::env::var("AWS_ENDPOINT_URL")
            .ok()
            .filter(|e| !e.is_empty());
        let mut functions = BTreeMap::new();
        let mut embedded_queues = None;
        match (&endpoint, &options.embedded) {
            (Some(_), _) => {
                crate::stack::up(&mut stack).await?;
                for def in stack.functions()? {
                    let function = functions::build(&def.binary, &def.environment)
                        .await
                        .with_context(|| format!("building {}", def.id))?;
                    functions.insert(def.id.clone(), function);
                }
            }
            (None, Some((store_url, queues_url))) => {
                let store = lambdaml::store::open_store(store_url).await?;
                // Local queues dead-letter after the template's maxReceiveCount.
                let max_receives = stack
                    .queues()?
                    .iter()
                    .filter_map(|q| q.redrive.as_ref().map(|(_, n)| *n))
                    .max()
                    .unwrap_or(5);
                let queues = open_queues(queues_url, max_receives).await?;
                for def in stack.functions()? {
                    let max_receives = def
                        .environment
                        .get("LAMBDAML_MAX_RECEIVES")
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(5);
                    let function = functions::build_with(
                        &def.binary,
                        store.clone(),
                        &queues,
                        &def.environment,
                        max_receives,
                    )
                    .await
                    .with_context(|| format!("building {}", def.id))?;
                    functions.insert(def.id.clone(), function);
                }
                embedded_queues = Some(queues);
            }
            (None, None) => bail!(
                "no AWS_ENDPOINT_URL and no embedded store: set AWS_ENDPOINT_URL (moto, LocalStack) or use a file:// store"
            ),
        }
        Ok(Local {
            resolved: Resolved::of(&stack)?,
            stack,
            functions,
            endpoint,
            embedded_queues,
        })
    }

    /// The queue a template queue is, for polling and notifying.
    async fn queue(&self, id: &str) -> Result<Arc<dyn Queue>> {
        let physical = self
            .stack
            .physical(id)
            .ok_or_else(|| anyhow!("no queue {id}"))?;
        match &self.embedded_queues {
            None => {
                let config = lambdaml::store::sdk_config().await;
                Ok(Arc::new(SqsQueue::new(
                    aws_sdk_sqs::Client::new(&config),
                    &physical.reference,
                )))
            }
            Some(queues) => {
                let name = physical
                    .attributes
                    .get("QueueName")
                    .ok_or_else(|| anyhow!("{id} is not a queue of the template"))?;
                // The functions name queues `<prefix><stage>` (LAMBDAML_QUEUES=sqs://<prefix>).
                let local = name
                    .strip_prefix(&self.resolved.queue_prefix)
                    .unwrap_or(name);
                Ok(queues.named(local).await?)
            }
        }
    }

    /// Runs until `shutdown` turns true: the SQS event sources, the schedules, the bucket's
    /// notifications (embedded default) and the HTTP API, each as the template says.
    pub async fn run(
        self,
        options: LocalOptions,
        mut shutdown: watch::Receiver<bool>,
        report: Report,
    ) -> Result<()> {
        let started = Instant::now();
        let this = Arc::new(self);
        let activity: Activities = Arc::new(
            move |kind: &'static str, function: &str, trigger: &str, detail: Value| {
                report(Activity {
                    t: started.elapsed().as_secs_f64(),
                    kind,
                    function: function.to_string(),
                    trigger: trigger.to_string(),
                    detail,
                })
            },
        );
        let mut tasks = this
            .clone()
            .event_sources(&options, &shutdown, &activity)
            .await?;
        tasks.extend(this.schedules(&options, &shutdown, &activity)?);
        tasks.extend(this.notifications(&options, &shutdown, &activity).await?);
        tasks.extend(this.registry_events(&options, &shutdown, &activity).await?);
        let app = this.http_api(&activity)?;
        let listener = tokio::net::TcpListener::bind(options.addr)
            .await
            .with_context(|| format!("listening on {}", options.addr))?;
        let addr = listener.local_addr()?;
        let r = &this.resolved;
        activity(
            "ready",
            "",
            "",
            serde_json::json!({
                "http": format!("http://{addr}"),
                "routes": r.routes.iter().map(|r| format!("{} {} ({})", r.method, r.path, r.authorization)).collect::<Vec<_>>(),
                "event_sources": r.event_sources.iter().map(|e| format!("{} → {} (batch {})", e.queue, e.function, e.batch_size)).collect::<Vec<_>>(),
                "schedules": r.functions.iter().flat_map(|f| f.schedules.iter().filter(|s| s.enabled).map(move |s| format!("{} → {}", s.expression, f.id))).collect::<Vec<_>>(),
                "endpoint": this.endpoint.clone().unwrap_or_else(|| "embedded default".to_string()),
                "template": options.template.display().to_string(),
            }),
        );
        let mut stop = shutdown.clone();
        let server = axum::serve(listener, app).with_graceful_shutdown(async move {
            while !*stop.borrow() {
                if stop.changed().await.is_err() {
                    return;
                }
            }
        });
        server.await.context("serving the HTTP API")?;
        let _ = shutdown.changed().await;
        for task in tasks {
            let _ = task.await;
        }
        Ok(())
    }

    /// One polling task per enabled SQS event source mapping.
    async fn event_sources(
        self: Arc<Self>,
        options: &LocalOptions,
        shutdown: &watch::Receiver<bool>,
        activity: &Activities,
    ) -> Result<Vec<tokio::task::JoinHandle<()>>> {
        let mut tasks = Vec::new();
        for source in self
            .resolved
            .event_sources
            .iter()
            .filter(|s| s.enabled)
            .cloned()
        {
            let function = self
                .functions
                .get(&source.function)
                .ok_or_else(|| anyhow!("{}: no function {}", source.id, source.function))?
                .clone();
            let def = self
                .resolved
                .queues
                .iter()
                .find(|q| q.id == source.queue)
                .ok_or_else(|| anyhow!("{}: no queue {}", source.id, source.queue))?;
            let mut visibility = Duration::from_secs(u64::from(def.visibility_timeout.max(1)));
            if let Some(max) = options.max_visibility {
                visibility = visibility.min(max.max(Duration::from_secs(1)));
            }
            let timeout = self
                .resolved
                .functions
                .iter()
                .find(|f| f.id == source.function)
                .map(|f| Duration::from_secs(f.timeout_secs))
                .unwrap_or(Duration::from_secs(900));
            let queue = self.queue(&source.queue).await?;
            let arn = self
                .stack
                .physical(&source.queue)
                .map(|p| p.attributes["Arn"].clone())
                .unwrap_or_default();
            // Lambda runs up to MaximumConcurrency invocations of a mapping at once; so do
            // its pollers here (one each for mappings without it).
            let pollers = source
                .max_concurrency
                .map_or(1, |m| m.min(options.workers))
                .max(1);
            for _ in 0..pollers {
                let activity = activity.clone();
                let mut stop = shutdown.clone();
                let poll = options.poll;
                let (source, queue, function, arn) =
                    (source.clone(), queue.clone(), function.clone(), arn.clone());
                tasks.push(tokio::spawn(async move {
                    loop {
                        if *stop.borrow() {
                            return;
                        }
                        let received = match queue.receive(source.batch_size, visibility).await {
                            Ok(r) => r,
                            Err(e) => {
                                activity(
                                    "error",
                                    &source.function,
                                    &source.id,
                                    Value::String(e.to_string()),
                                );
                                Vec::new()
                            }
                        };
                        if received.is_empty() {
                            tokio::select! {
                                _ = tokio::time::sleep(poll) => {}
                                _ = stopped(&mut stop) => return,
                            }
                            continue;
                        }
                        poll_once(
                            &function,
                            &source,
                            queue.as_ref(),
                            &arn,
                            received,
                            visibility,
                            timeout,
                            activity.as_ref(),
                        )
                        .await;
                    }
                }));
            }
        }
        Ok(tasks)
    }

    /// One task per enabled schedule, firing EventBridge scheduled events.
    fn schedules(
        &self,
        options: &LocalOptions,
        shutdown: &watch::Receiver<bool>,
        activity: &Activities,
    ) -> Result<Vec<tokio::task::JoinHandle<()>>> {
        let mut tasks = Vec::new();
        for def in &self.resolved.functions {
            for schedule in def.schedules.iter().filter(|s| s.enabled) {
                let Some(function) = self.functions.get(&def.id).cloned() else {
                    bail!("no function {}", def.id);
                };
                let period = options.schedule_every.unwrap_or_else(|| {
                    lambdaml_monitor::schedule_period(&schedule.expression)
                        .to_std()
                        .unwrap_or(Duration::from_secs(3600))
                });
                let activity = activity.clone();
                let mut stop = shutdown.clone();
                let (id, trigger) = (def.id.clone(), format!("{}.{}", def.id, schedule.name));
                let region = self.stack.context.region.clone();
                let account = self.stack.context.account.clone();
                tasks.push(tokio::spawn(async move {
                    loop {
                        tokio::select! {
                            _ = tokio::time::sleep(period) => {}
                            _ = stopped(&mut stop) => return,
                        }
                        let event = scheduled_event(&region, &account, &trigger);
                        activity("invoke", &id, &trigger, Value::Null);
                        let t = Instant::now();
                        match function.invoke(event).await {
                            Ok(out) => activity(
                                "result",
                                &id,
                                &trigger,
                                serde_json::json!({
                                "ms": t.elapsed().as_millis() as u64, "response": out.response}),
                            ),
                            Err(e) => {
                                activity("error", &id, &trigger, Value::String(format!("{e:#}")))
                            }
                        }
                    }
                }));
            }
        }

        Ok(tasks)
    }

    /// The HTTP API: API Gateway's route selection over the template's routes, then the
    /// request, untouched, to the route's function.
    fn http_api(&self, activity: &Activities) -> Result<Router> {
        let mut targets = Vec::new();
        for route in &self.resolved.routes {
            let function = self.functions.get(&route.function).ok_or_else(|| {
                anyhow!(
                    "route {} targets {}, which is not a function of the template",
                    route.id,
                    route.function
                )
            })?;
            let Handler::Score(state) = &function.handler else {
                bail!(
                    "route {} {} targets {}, which is not an HTTP function",
                    route.method,
                    route.path,
                    route.function
                );
            };
            targets.push((
                route.clone(),
                (
                    lambdaml_score::router(state.clone()),
                    state.config.max_body_bytes,
                ),
            ));
        }
        let targets = Arc::new(targets);
        // The credentials IAM routes check signatures against, loaded at the first signed
        // request (the default chain may probe for instance metadata).
        let credentials: Arc<tokio::sync::OnceCell<Option<aws_credential_types::Credentials>>> =
            Arc::new(tokio::sync::OnceCell::new());
        let app = {
            let activity = activity.clone();
            Router::new().fallback(move |request: Request<Body>| {
                let targets = targets.clone();
                let activity = activity.clone();
                let credentials = credentials.clone();
                async move {
                    let path = request.uri().path().to_string();
                    let method = request.method().as_str().to_string();
                    let Some((route, (router, route_body_limit))) =
                        select_route(&targets, &method, &path)
                    else {
                        return (
                            StatusCode::NOT_FOUND,
                            [("content-type", "application/json")],
                            r#"{"message":"Not Found"}"#,
                        )
                            .into_response();
                    };
                    let request = if route.authorization == "NONE" {
                        request
                    } else {
                        // The body is part of what is signed: read it (within the
                        // function's body limit) and hand the same bytes on.
                        let (parts, body) = request.into_parts();
                        let Ok(bytes) = axum::body::to_bytes(body, *route_body_limit).await else {
                            return (
                                StatusCode::PAYLOAD_TOO_LARGE,
                                [("content-type", "application/json")],
                                r#"{"message":"Request Entity Too Large"}"#,
                            )
                                .into_response();
                        };
                        let creds = credentials
                            .get_or_init(|| async {
                                use aws_credential_types::provider::ProvideCredentials;
                                let config = lambdaml::store::sdk_config().await;
                                match config.credentials_provider() {
                                    Some(p) => p.provide_credentials().await.ok(),
                                    None => None,
                                }
                            })
                            .await;
                        let path = parts
                            .uri
                            .path_and_query()
                            .map_or(parts.uri.path(), |p| p.as_str());
                        if let Err(reason) = crate::sigv4::verify(
                            creds.as_ref(),
                            parts.method.as_str(),
                            path,
                            &parts.headers,
                            &bytes,
                            std::time::SystemTime::now(),
                        ) {
                            activity(
                                "http",
                                &route.function,
                                &format!("{} {}", route.method, route.path),
                                serde_json::json!({"status": 403, "reason": format!("{reason} (the route's authorization is {})", route.authorization)}),
                            );
                            return (
                                StatusCode::FORBIDDEN,
                                [("content-type", "application/json")],
                                r#"{"message":"Forbidden"}"#,
                            )
                                .into_response();
                        }
                        Request::from_parts(parts, Body::from(bytes))
                    };
                    match router.clone().oneshot(request).await {
                        Ok(response) => response,
                        Err(never) => match never {},
                    }
                }
            })
        };
        Ok(app)
    }
}

/// API Gateway's route selection: the routes whose method (or `ANY`) and path template
/// match, the most specific first — fewer greedy `{proxy+}` and `{param}` segments win.
fn select_route<'a, T>(
    targets: &'a [(crate::template::RouteDef, T)],
    method: &str,
    path: &str,
) -> Option<&'a (crate::template::RouteDef, T)> {
    targets
        .iter()
        .filter(|(r, _)| r.method == "ANY" || r.method.eq_ignore_ascii_case(method))
        .filter_map(|t| {
            route_score(&t.0.path, path)
                .map(|(greedy, params)| ((greedy, params, t.0.method == "ANY"), t))
        })
        .min_by_key(|(score, _)| *score)
        .map(|(_, t)| t)
}

/// `Some((greedy, params))` when `template` matches `path`, else `None`.
fn route_score(template: &str, path: &str) -> Option<(usize, usize)> {
    let pattern: Vec<&str> = template.trim_matches('/').split('/').collect();
    let actual: Vec<&str> = path.trim_matches('/').split('/').collect();
    let mut params = 0;
    for (i, seg) in pattern.iter().enumerate() {
        if seg.starts_with('{') && seg.ends_with("+}") {
            // Greedy: one or more remaining segments.
            return (actual.len() > i && !actual[i].is_empty()).then_some((1, params));
        }
        let got = actual.get(i)?;
        if seg.starts_with('{') && seg.ends_with('}') {
            if got.is_empty() {
                return None;
            }
            params += 1;
        } else if seg != got {
            return None;
        }
    }
    (pattern.len() == actual.len()).then_some((0, params))
}

struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Resolves once the runner is told to stop (or whoever could tell it is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    while !*stop.borrow() {
        if stop.changed().await.is_err() {
            return;
        }
    }
}

/// Hands one received batch to `function` and settles each record as Lambda's event source
/// mapping would.
#[allow(clippy::too_many_arguments)]
async fn poll_once(
    function: &Function,
    source: &crate::template::EventSourceDef,
    queue: &dyn Queue,
    arn: &str,
    received: Vec<Received>,
    visibility: Duration,
    timeout: Duration,
    activity: &(dyn Fn(&'static str, &str, &str, Value) + Send + Sync),
) {
    let event = lambdaml::lambda::sqs_event(&received, arn);
    activity(
        "invoke",
        &source.function,
        &source.id,
        serde_json::json!({"records": received.len(), "ids": received.iter().map(|r| r.id.clone()).collect::<Vec<_>>()}),
    );
    let started = Instant::now();
    // A heartbeat keeps the batch invisible while the function works on it; a record the
    // function parked (deleted) drops out of it.
    let mut receipts: Vec<String> = received.iter().map(|r| r.receipt.clone()).collect();
    let beat = async move {
        loop {
            tokio::time::sleep(visibility / 2).await;
            let mut live = Vec::with_capacity(receipts.len());
            for r in receipts.drain(..) {
                match queue.extend(&r, visibility).await {
                    Err(QueueError::StaleReceipt(_)) => {}
                    _ => live.push(r),
                }
            }
            receipts = live;
        }
    };
    let function = function.clone();
    // Aborted when dropped: a timed-out or abandoned invocation stops, as Lambda ends its
    // sandbox, instead of running on beside its redelivered messages.
    let mut task = AbortOnDrop(tokio::spawn(async move { function.invoke(event).await }));
    let invocation = async {
        match tokio::time::timeout(timeout, &mut task.0).await {
            Err(_) => Err(anyhow!(
                "Task timed out after {} seconds",
                timeout.as_secs()
            )),
            Ok(Err(panic)) => Err(anyhow!("the function crashed: {panic}")),
            Ok(Ok(result)) => result,
        }
    };
    let result = tokio::select! {
        r = invocation => r,
        () = beat => Err(anyhow!("the heartbeat stopped")),
    };
    let ms = started.elapsed().as_millis() as u64;
    match result {
        Ok(invoked) => {
            let failed: HashSet<String> = if source.report_batch_item_failures {
                invoked.response["batchItemFailures"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|f| f["itemIdentifier"].as_str().map(str::to_string))
                    .collect()
            } else {
                HashSet::new()
            };
            for message in &received {
                if failed.contains(&message.id) {
                    // Left for redelivery after its visibility timeout; SQS's redrive moves it
                    // to the dead-letter queue after maxReceiveCount deliveries.
                    continue;
                }
                match queue.delete(&message.receipt).await {
                    Ok(()) | Err(QueueError::StaleReceipt(_)) => {}
                    Err(e) => activity(
                        "error",
                        &source.function,
                        &source.id,
                        Value::String(format!("deleting {}: {e}", message.id)),
                    ),
                }
            }
            activity(
                "result",
                &source.function,
                &source.id,
                serde_json::json!({"ms": ms, "failed": failed.len(), "response": invoked.response}),
            );
        }
        Err(e) => {
            // A function error fails the whole batch: every record is redelivered.
            activity(
                "error",
                &source.function,
                &source.id,
                Value::String(format!("{e:#}")),
            );
        }
    }
}

/// An EventBridge scheduled event, as the rule delivers it.
pub fn scheduled_event(region: &str, account: &str, rule: &str) -> Value {
    serde_json::json!({
        "version": "0",
        "id": uuid::Uuid::new_v4().to_string(),
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": account,
        "time": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "region": region,
        "resources": [format!("arn:aws:events:{region}:{account}:rule/{rule}")],
        "detail": {}
    })
}

/// An S3 `ObjectCreated:Put` notification, the key URL-encoded as S3 sends it.
pub fn s3_event(bucket: &str, key: &str, size: u64) -> Value {
    let encoded = lambdaml::lambda::encode_s3_key(key);
    serde_json::json!({"Records": [{
        "eventVersion": "2.1", "eventSource": "aws:s3", "awsRegion": "us-east-1",
        "eventTime": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "eventName": "ObjectCreated:Put",
        "s3": {"s3SchemaVersion": "1.0", "bucket": {"name": bucket, "arn": format!("arn:aws:s3:::{bucket}")},
               "object": {"key": encoded, "size": size}}
    }]})
}

mod feeds;
#[cfg(test)]
mod tests;
