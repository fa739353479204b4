//! The preprocess Lambda: its queues and store wired from the environment by
//! [`lambdaml::pipeline`] (the one table of which stage feeds which), then the runtime
//! loop. All logic is in the library.

use lambdaml_preprocess::Preprocess;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    lambdaml::pipeline::serve_stage::<Preprocess>().await
}
