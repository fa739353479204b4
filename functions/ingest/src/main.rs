//! The ingest Lambda: configuration from the environment, adapters built once, then the
//! runtime loop. All logic is in the library.

use lambda_runtime::{LambdaEvent, service_fn};
use lambdaml::config::FunctionConfig;
use lambdaml::message::Stage;
use lambdaml::queue::{open_queue, open_queues};
use lambdaml::stage::handle_lambda_event;
use lambdaml::store::open_store;
use lambdaml::telemetry::{self, LogFormat};
use lambdaml_ingest::Ingest;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    telemetry::init(LogFormat::detect(), "info");
    let config = FunctionConfig::from_env()?;
    let store = open_store(&config.store).await?;
    let queues = open_queues(&config.queues, config.max_receives).await?;
    let handler = Ingest::new(store, queues.get(Stage::Preprocess).await?);
    let dlq = match &config.dlq_url {
        Some(url) => Some(open_queue(url, config.max_receives).await?),
        None => None,
    };
    lambda_runtime::run(service_fn(|event: LambdaEvent<serde_json::Value>| {
        let (handler, dlq) = (&handler, dlq.as_deref());
        let span = telemetry::invocation_span(&event.context.request_id);
        tracing::Instrument::instrument(
            async move {
                handle_lambda_event(handler, event.payload, dlq)
                    .await
                    .map_err(lambda_runtime::Error::from)
            },
            span,
        )
    }))
    .await
}
