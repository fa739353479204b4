//! The train Lambda: configuration from the environment, adapters built once, then the
//! runtime loop. All logic is in the library.

use std::sync::Arc;

use lambdaml::config::FunctionConfig;
use lambdaml::message::Stage;
use lambdaml::queue::open_queues;
use lambdaml::stage::serve_lambda;
use lambdaml::store::open_store;
use lambdaml::telemetry::{self, LogFormat};
use lambdaml_train::Train;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    telemetry::init(LogFormat::detect(), "info");
    let config = FunctionConfig::from_env()?;
    let store = open_store(&config.store).await?;
    let queues = open_queues(&config.queues, config.max_receives).await?;
    let handler = Train::new(
        store,
        queues.get(Stage::Evaluate).await?,
        queues.get(Stage::Train).await?,
    );
    // Records that can never succeed are parked in this queue's dead-letter queue.
    let own_queue = queues.get(Stage::Train).await?;
    serve_lambda(Arc::new(handler), Some(own_queue), config.max_receives).await
}
