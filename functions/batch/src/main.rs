//! The batch Lambda: its queue and store wired from the environment by
//! [`lambdaml::pipeline`], then the runtime loop. All logic is in the library.

use lambdaml_batch::Batch;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    lambdaml::pipeline::serve_stage::<Batch>().await
}
