//! The eight functions, built in-process from the environment a Lambda would give them —
//! what `lambdaml invoke` and `lambdaml local` run instead of a container.
//!
//! Each function is built exactly as its Lambda binary's `main` builds it (store and queues
//! from `LAMBDAML_STORE` / `LAMBDAML_QUEUES`, records that can never succeed parked in the
//! function's own queue), then handed events as the Lambda runtime would hand them.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result, anyhow, bail};
use base64::Engine;
use base64::prelude::BASE64_STANDARD;
use lambdaml::config::FunctionConfig;
use lambdaml::pipeline::{Function as PipelineFunction, Wire, Wired};
use lambdaml::queue::{Queue, Queues, open_queues};
use lambdaml::stage::{SqsSource, StageHandler, handle_lambda_event};
use lambdaml::store::{ObjectStore, open_store};
use lambdaml_score::{ScoreConfig, ScoreState};
use serde_json::Value;
use tower::ServiceExt;

/// The function names, as binaries and as `lambdaml invoke` takes them.
pub const NAMES: [&str; 8] = [
    PipelineFunction::Ingest.name(),
    PipelineFunction::Preprocess.name(),
    PipelineFunction::Train.name(),
    PipelineFunction::Evaluate.name(),
    PipelineFunction::Deploy.name(),
    PipelineFunction::Score.name(),
    PipelineFunction::Monitor.name(),
    PipelineFunction::Batch.name(),
];

/// What a function is made of.
#[derive(Clone)]
pub enum Handler {
    /// A pipeline stage.
    Stage(Arc<dyn StageHandler>),
    /// The score function's router state.
    Score(Arc<ScoreState>),
    /// The monitor.
    Monitor(Arc<lambdaml_monitor::Monitor>),
}

impl std::fmt::Debug for Handler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Handler::Stage(_) => "Stage",
            Handler::Score(_) => "Score",
            Handler::Monitor(_) => "Monitor",
        })
    }
}

/// One function, ready to take events.
#[derive(Debug, Clone)]
pub struct Function {
    /// `ingest`, …, `monitor`.
    pub name: String,
    /// Its handler.
    pub handler: Handler,
    /// The store it was given.
    pub store: Arc<dyn ObjectStore>,
    /// The queue its SQS events come from (stages), where it parks what can never succeed.
    pub own_queue: Option<Arc<dyn Queue>>,
    /// `LAMBDAML_MAX_RECEIVES`.
    pub max_receives: u32,
}

/// Builds function `name` from `env` (its Lambda environment).
pub async fn build(name: &str, env: &BTreeMap<String, String>) -> Result<Function> {
    let config = FunctionConfig::from_lookup(|k| env.get(k).cloned())
        .with_context(|| format!("the {name} function's environment"))?;
    let store = open_store(&config.store)
        .await
        .with_context(|| format!("opening the store {}", config.store))?;
    let queues = open_queues(&config.queues, config.max_receives)
        .await
        .with_context(|| format!("opening the queues {}", config.queues))?;
    build_with(name, store, &queues, env, config.max_receives).await
}

/// Builds function `name` over an open store and queues, wired by [`lambdaml::pipeline`].
pub async fn build_with(
    name: &str,
    store: Arc<dyn ObjectStore>,
    queues: &Queues,
    env: &BTreeMap<String, String>,
    max_receives: u32,
) -> Result<Function> {
    let Some(function) = lambdaml::pipeline::Function::named(name) else {
        bail!(
            "unknown function {name:?}; the functions are {}",
            NAMES.join(", ")
        );
    };
    let wired = Wired::open(function, store.clone(), queues)
        .await?
        .with_bus(lambdaml::events::bus_from_env().await?);
    async fn stage<H: Wire + StageHandler + 'static>(wired: &Wired) -> Result<Handler> {
        Ok(Handler::Stage(Arc::new(H::wire(wired)?)))
    }
    let handler = match function {
        PipelineFunction::Ingest => {
            // The function's environment (the template's) decides its partition size.
            let var = lambdaml_ingest::PARTITION_MIB_VAR;
            let setting = env.get(var).cloned().or_else(|| std::env::var(var).ok());
            let ingest = <lambdaml_ingest::Ingest as Wire>::wire(&wired)?
                .with_partition_setting(wired.own_queue(), setting.as_deref());
            Handler::Stage(Arc::new(ingest))
        }
        PipelineFunction::Preprocess => stage::<lambdaml_preprocess::Preprocess>(&wired).await?,
        PipelineFunction::Train => stage::<lambdaml_train::Train>(&wired).await?,
        PipelineFunction::Evaluate => stage::<lambdaml_evaluate::Evaluate>(&wired).await?,
        PipelineFunction::Deploy => stage::<lambdaml_deploy::Deploy>(&wired).await?,
        PipelineFunction::Batch => stage::<lambdaml_batch::Batch>(&wired).await?,
        PipelineFunction::Score => {
            let mut config = ScoreConfig::from_lookup(|k| env.get(k).cloned())
                .map_err(|e| anyhow!("the score function's environment: {e}"))?;
            // As in Lambda: every request's captures are written before it is answered.
            config.flush_each_request = true;
            config.emf = false;
            Handler::Score(ScoreState::new(store.clone(), config, Instant::now()))
        }
        PipelineFunction::Monitor => {
            // The function's environment (the template's) decides its part size.
            let var = lambdaml_monitor::parts::PARTITION_MIB_VAR;
            let setting = env.get(var).cloned().or_else(|| std::env::var(var).ok());
            let bytes = lambdaml_monitor::parts::part_bytes(setting.as_deref())
                .map_err(|e| anyhow!("the monitor function's environment: {e}"))?;
            let monitor =
                lambdaml_monitor::Monitor::from_wiring(&wired).with_parts(wired.own_queue(), bytes);
            Handler::Monitor(Arc::new(monitor))
        }
    };
    Ok(Function {
        name: name.to_string(),
        handler,
        store,
        own_queue: wired.own_queue(),
        max_receives,
    })
}

/// What an invocation printed besides its response (the monitor's EMF lines).
#[derive(Debug, Clone, Default)]
pub struct Invoked {
    /// The response, as Lambda would return it.
    pub response: Value,
    /// Lines the function wrote to stdout (CloudWatch EMF).
    pub stdout: Vec<String>,
}

impl Function {
    /// A direct, S3 or SQS event for a stage handler (SQS records from the function's own
    /// queue, answered with `batchItemFailures`).
    async fn stage_event(&self, handler: &dyn StageHandler, event: Value) -> Result<Invoked> {
        let source = self.own_queue.as_deref().map(|queue| SqsSource {
            queue,
            max_receives: self.max_receives,
        });
        let response = handle_lambda_event(handler, event, source)
            .await
            .map_err(|e| anyhow!("{}", e.reason()))?;
        Ok(Invoked {
            response,
            stdout: Vec::new(),
        })
    }

    /// Hands `event` to the function as the Lambda runtime would, and returns its response;
    /// an `Err` is what Lambda reports as a function error.
    pub async fn invoke(&self, event: Value) -> Result<Invoked> {
        match &self.handler {
            Handler::Stage(handler) => self.stage_event(handler.as_ref(), event).await,
            // The parts of a window planned in parts, from the monitor's own queue.
            Handler::Monitor(monitor) if event.get("Records").is_some() => {
                self.stage_event(monitor.as_ref(), event).await
            }
            Handler::Monitor(monitor) => {
                let invocation = monitor
                    .handle_event(event)
                    .await
                    .map_err(|e| anyhow!("{}", e.reason()))?;
                Ok(Invoked {
                    response: invocation.response,
                    stdout: invocation.emf,
                })
            }
            Handler::Score(state) => {
                let text = event.to_string();
                let request = lambda_http::request::from_str(&text).map_err(|e| {
                    anyhow!("the score function takes HTTP events (API Gateway HTTP API v2, REST API, ALB, function URL): {e}")
                })?;
                let response = lambdaml_score::router(state.clone())
                    .oneshot(request)
                    .await
                    .map_err(|e| anyhow!("{e}"))?;
                Ok(Invoked {
                    response: http_api_response(response).await?,
                    stdout: Vec::new(),
                })
            }
        }
    }
}

/// An axum response as the API Gateway HTTP API (payload 2.0) response a Lambda returns.
async fn http_api_response(response: axum::response::Response) -> Result<Value> {
    let (parts, body) = response.into_parts();
    let bytes = axum::body::to_bytes(body, usize::MAX)
        .await
        .map_err(|e| anyhow!("reading the response body: {e}"))?;
    let mut headers = serde_json::Map::new();
    for (name, value) in &parts.headers {
        headers.insert(
            name.to_string(),
            Value::String(value.to_str().unwrap_or_default().to_string()),
        );
    }
    let (body, base64) = match std::str::from_utf8(&bytes) {
        Ok(text) => (text.to_string(), false),
        Err(_) => (BASE64_STANDARD.encode(&bytes), true),
    };
    Ok(serde_json::json!({
        "statusCode": parts.status.as_u16(),
        "headers": headers,
        "body": body,
        "isBase64Encoded": base64,
    }))
}
