//! `lambdaml`: the whole loop on the embedded default, and every function by hand.
//!
//! Every command works against a store and a set of stage queues chosen by URL
//! (`--store`, `--queues`), defaulting to files under `./.lambdaml`. Commands that report a
//! result print it for people, or as one JSON object on stdout with `--json`.

#![allow(clippy::print_stdout, clippy::print_stderr)]

mod backtest;
mod batch;
mod captures;
mod commands;
mod ctx;
mod demo;
mod emulate;
mod history;
mod lineage;
mod models;
mod monitor;
mod output;
mod render;
mod runs;
mod serve;
mod ui;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Operationalize ML models on AWS Lambda — or on this machine, with no cloud at all.
#[derive(Debug, Parser)]
#[command(name = "lambdaml", version, about, long_about = None)]
pub struct Cli {
    /// Object store URL: file://PATH, memory://, or s3://BUCKET[/PREFIX].
    #[arg(
        long,
        global = true,
        env = "LAMBDAML_STORE",
        default_value = "file://./.lambdaml"
    )]
    pub store: String,

    /// Stage queues URL: file://DIR or sqs://QUEUE-NAME-PREFIX. Defaults to DIR/.queues
    /// inside a file:// store.
    #[arg(long, global = true, env = "LAMBDAML_QUEUES")]
    pub queues: Option<String>,

    /// Print the result as one JSON object on stdout.
    #[arg(long, global = true)]
    pub json: bool,

    /// Log what the stages do (-v), or everything (-vv); logs go to stderr.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the loop on the bundled weather data, with no cloud: ingest to a deployed model.
    Demo(demo::DemoArgs),
    /// Replay a file through the whole loop (score, feedback, monitor, retrain) and compare
    /// it with never retraining, retraining every period and persistence; in a fresh store
    /// folder unless --store is given.
    Backtest(backtest::BacktestArgs),
    /// Upload a raw file and a model spec, ingest the file, and run the stages it triggers.
    Ingest(commands::IngestArgs),
    /// Split a dataset version and fit a model spec's feature pipeline.
    Preprocess(commands::PreprocessArgs),
    /// Drain the stage queues, running each stage in-process, until they are empty.
    Run(commands::RunArgs),
    /// List and inspect dataset versions.
    Datasets {
        #[command(subcommand)]
        command: commands::DatasetsCommand,
    },
    /// Show queue depths and dead letters.
    Queues(commands::QueuesArgs),
    /// Preprocess, train, evaluate and deploy a model spec on its dataset.
    Train(models::TrainArgs),
    /// The registry: list, show, approve, promote, rollback, history.
    Models {
        #[command(subcommand)]
        command: models::ModelsCommand,
    },
    /// Serve models over HTTP (KServe V2 and MLflow protocols) on 127.0.0.1, as the score
    /// Lambda does.
    Serve(serve::ServeArgs),
    /// Score a CSV or JSON file with a model, in-process, through the score function.
    Predict(serve::PredictArgs),
    /// Store ground-truth labels for scored requests (by request id) for the monitor.
    Feedback(serve::FeedbackArgs),
    /// Compare a window of live traffic and feedback with the production baseline: drift,
    /// data quality, performance; retrain on a breach.
    Monitor(monitor::MonitorArgs),
    /// Pipeline runs: every stage's status, times, inputs, outputs and failures.
    Runs {
        #[command(subcommand)]
        command: runs::RunsCommand,
    },
    /// Where a model version came from and what became of it (or start from a request id).
    Lineage(lineage::LineageArgs),
    /// A read-only web dashboard of the store: models, versions, monitoring over time, runs,
    /// lineage, reports (on 127.0.0.1:8090).
    Ui(ui::UiArgs),
    /// Show (or --open) the newest monitoring report of a model.
    Report(monitor::ReportArgs),
    /// Captured requests and answers: export them as CSV or Parquet.
    Captures {
        #[command(subcommand)]
        command: captures::CapturesCommand,
    },
    /// Run template.yaml's event sources here, without Docker: poll its SQS event sources,
    /// fire its schedules, serve its HTTP API on 127.0.0.1 — against AWS_ENDPOINT_URL (moto,
    /// LocalStack) or the embedded default.
    Local(emulate::LocalArgs),
    /// Run one function's handler in-process on an event (a file from events/), against the
    /// configured store and queues; print its response (what `sam local invoke` does,
    /// without Docker).
    Invoke(emulate::InvokeArgs),
    /// Batch scoring: a file or folder (CSV, gzip CSV, Parquet) scored in partitions over
    /// the batch queue by concurrent workers; a job's progress; resuming a job.
    Batch {
        #[command(subcommand)]
        command: batch::BatchCommand,
    },
    /// Create (up) or print (show) template.yaml's resources on an AWS emulator.
    Stack {
        #[command(subcommand)]
        command: emulate::StackCommand,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    let started = std::time::Instant::now();
    let matches = <Cli as clap::CommandFactory>::command().get_matches();
    let cli = match <Cli as clap::FromArgMatches>::from_arg_matches(&matches) {
        Ok(c) => c,
        Err(e) => e.exit(),
    };
    // Only a --store on the command line counts as naming one (the backtest's rule).
    let store_given = matches.value_source("store") == Some(clap::parser::ValueSource::CommandLine);
    // Errors reach the user as the command's own message; logs are for -v.
    let level = match cli.verbose {
        // An invocation prints its function's logs, as `sam local invoke` does.
        0 if matches!(cli.command, Command::Invoke(_)) => "info",
        // `local` prints one line per invocation itself; its functions' logs need -v.
        0 if matches!(cli.command, Command::Local(_)) => "warn",
        0 => "error",
        1 => "info",
        _ => "debug",
    };
    lambdaml::telemetry::init(lambdaml::telemetry::LogFormat::Text, level);
    let json = cli.json;
    match commands::run(cli, store_given, started).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            if json {
                println!("{}", serde_json::json!({"error": format!("{err:#}")}));
            } else {
                eprintln!("error: {err:#}");
            }
            ExitCode::FAILURE
        }
    }
}
