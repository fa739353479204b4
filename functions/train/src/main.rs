//! The train function: its queues and store wired from the environment by
//! [`lambdaml::pipeline`] (the one table of which stage feeds which). In Lambda it runs the
//! runtime loop; as a plain process (`train --message FILE|-`, `--message-json JSON`,
//! `--queue`; AWS Batch or ECS Fargate when a spec outgrows Lambda's 15 minutes and 10 GB)
//! it handles one message or drains its queue ([`lambdaml::process`]). All logic is in the
//! library.

use lambdaml_train::Train;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    lambdaml::process::serve_stage_or_process::<Train>().await
}
