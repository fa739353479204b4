//! The monitor Lambda: configuration from the environment, adapters built once, then the
//! runtime loop. A direct invocation names a model (`{"model": …}`); a scheduled
//! EventBridge event monitors every model in the registry
//! ([`lambdaml_monitor::Monitor::handle_event`]); an SQS batch from its own queue carries the
//! parts of a window planned in parts ([`lambdaml_monitor::parts`]), answered with
//! `batchItemFailures`. EMF lines go to stdout, where Lambda turns them into CloudWatch
//! metrics.

use std::io::Write;
use std::sync::Arc;

use lambda_runtime::{LambdaEvent, service_fn};
use lambdaml::config::FunctionConfig;
use lambdaml::pipeline::{Function, Wired};
use lambdaml::queue::open_queues;
use lambdaml::stage::{SqsSource, handle_lambda_event};
use lambdaml::store::open_store;
use lambdaml::telemetry::{self, LogFormat};
use lambdaml_monitor::Monitor;
use serde_json::Value;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    telemetry::init(LogFormat::detect(), "info");
    let config = FunctionConfig::from_env()?;
    let store = open_store(&config.store).await?;
    let queues = open_queues(&config.queues, config.max_receives).await?;
    let wired = Wired::open(Function::Monitor, store, &queues).await?;
    if let Err(e) = lambdaml_monitor::parts::part_bytes(
        std::env::var(lambdaml_monitor::parts::PARTITION_MIB_VAR)
            .ok()
            .as_deref(),
    ) {
        return Err(e.into());
    }
    let monitor = Arc::new(Monitor::from_wiring(&wired).with_emf_stdout());
    let own = wired.own_queue();
    let max_receives = config.max_receives;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| {
        let (monitor, own) = (monitor.clone(), own.clone());
        async move {
            if event.payload.get("Records").is_some() {
                let source = own.as_deref().map(|queue| SqsSource {
                    queue,
                    max_receives,
                });
                return handle_lambda_event(monitor.as_ref(), event.payload, source)
                    .await
                    .map_err(|e| lambda_runtime::Error::from(e.reason()));
            }
            let invocation = monitor.handle_event(event.payload).await?;
            let mut stdout = std::io::stdout().lock();
            for line in &invocation.emf {
                let _ = writeln!(stdout, "{line}");
            }
            Ok::<Value, lambda_runtime::Error>(invocation.response)
        }
    }))
    .await
}
