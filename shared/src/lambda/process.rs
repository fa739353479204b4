//! A stage function's handler as a plain process, beside the Lambda runtime: for work that
//! outgrows Lambda's 15 minutes and 10 GB (training on AWS Batch or ECS Fargate), the same
//! binary handles one message given on the command line or drains its own queue.
//!
//! ```text
//! train                          the Lambda runtime loop (when AWS_LAMBDA_RUNTIME_API is set)
//! train --message FILE|-         one message (a stage message or the direct form) from a file
//! train --message-json JSON      one message given inline (AWS Batch: Ref::message)
//! train --queue                  every message of its own queue, until it is empty
//!       --deadline-secs N        checkpoint and re-queue before N seconds (the job's timeout)
//! ```
//!
//! `LAMBDAML_MESSAGE` stands for `--message-json`, `LAMBDAML_DEADLINE_SECS` for
//! `--deadline-secs`. The answer is printed as JSON on stdout; the exit status says what
//! failed: 0 handled, 1 refused for good (the message is bad), 75 (`EX_TEMPFAIL`) may succeed
//! when retried, 64 (`EX_USAGE`) a bad command line.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::pipeline::{Wire, Wired};
use crate::stage::{DrainOptions, StageError, StageHandler, drain, with_deadline};

/// How a process run was asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProcessMode {
    /// One message, as JSON text.
    Message(String),
    /// Drain the function's own queue.
    Queue,
}

/// A parsed command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessArgs {
    /// What to handle.
    pub mode: ProcessMode,
    /// Seconds before which a long handler checkpoints.
    pub deadline: Option<Duration>,
}

/// Exit statuses.
pub mod exit {
    /// Handled.
    pub const OK: u8 = 0;
    /// Refused for good.
    pub const PERMANENT: u8 = 1;
    /// A bad command line.
    pub const USAGE: u8 = 64;
    /// May succeed when retried.
    pub const RETRY: u8 = 75;
}

/// Reads the command line (`args` without the program name) and the environment; `None`
/// when neither asks for a process run (the Lambda runtime should run).
pub fn parse_args(
    args: &[String],
    env: impl Fn(&str) -> Option<String>,
) -> Result<Option<ProcessArgs>, String> {
    let mut mode = None;
    let mut deadline = env("LAMBDAML_DEADLINE_SECS");
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let mut value = |name: &str| {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{name} needs a value"))
        };
        match arg.as_str() {
            "--message" => {
                let path = value("--message")?;
                let text = if path == "-" {
                    let mut s = String::new();
                    std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)
                        .map_err(|e| format!("reading the message from stdin: {e}"))?;
                    s
                } else {
                    std::fs::read_to_string(&path)
                        .map_err(|e| format!("reading the message {path}: {e}"))?
                };
                mode = Some(ProcessMode::Message(text));
            }
            "--message-json" => mode = Some(ProcessMode::Message(value("--message-json")?)),
            "--queue" => mode = Some(ProcessMode::Queue),
            "--deadline-secs" => deadline = Some(value("--deadline-secs")?),
            "-h" | "--help" => {
                return Err(
                    "usage: [--message FILE|- | --message-json JSON | --queue] [--deadline-secs N]"
                        .to_string(),
                );
            }
            other => return Err(format!("unknown argument {other:?} (see --help)")),
        }
    }
    if mode.is_none()
        && let Some(message) = env("LAMBDAML_MESSAGE")
    {
        mode = Some(ProcessMode::Message(message));
    }
    let deadline = match deadline {
        Some(d) => Some(Duration::from_secs(d.trim().parse::<u64>().map_err(
            |_| format!("the deadline {d:?} is not a whole number of seconds"),
        )?)),
        None => None,
    };
    match mode {
        Some(mode) => Ok(Some(ProcessArgs { mode, deadline })),
        None if deadline.is_some() => {
            Err("--deadline-secs needs --message, --message-json or --queue".to_string())
        }
        None => Ok(None),
    }
}

/// Runs `handler` as `args` says; answers the exit status.
pub async fn run_process(
    handler: Arc<dyn StageHandler>,
    wired: &Wired,
    queues: &crate::queue::Queues,
    args: ProcessArgs,
) -> u8 {
    let started = Instant::now();
    // Leave a margin (a tenth, at most five minutes) to write the checkpoint and re-queue
    // before the job's own timeout kills the process.
    let deadline = args
        .deadline
        .map(|d| started + d - (d / 10).min(Duration::from_secs(300)));
    match args.mode {
        ProcessMode::Message(text) => {
            let payload: serde_json::Value = match serde_json::from_str(&text) {
                Ok(v) => v,
                Err(e) => {
                    tracing::error!(error = %e, "the message is not JSON");
                    return exit::PERMANENT;
                }
            };
            let handled = async {
                match handler.handle_direct_action(&payload).await {
                    Some(result) => result,
                    None => {
                        let message = handler.message_from_direct(payload)?;
                        handler.handle(message).await
                    }
                }
            };
            let result: Result<serde_json::Value, StageError> = match deadline {
                Some(d) => with_deadline(d, handled).await,
                None => handled.await,
            };
            match result {
                Ok(answer) => {
                    println_json(&answer);
                    exit::OK
                }
                Err(e) => {
                    tracing::error!(error = %e.reason(), retryable = e.is_retryable(), "the message failed");
                    println_json(
                        &serde_json::json!({"error": e.reason(), "retryable": e.is_retryable()}),
                    );
                    if e.is_retryable() {
                        exit::RETRY
                    } else {
                        exit::PERMANENT
                    }
                }
            }
        }
        ProcessMode::Queue => {
            let _ = wired;
            let options = DrainOptions::default();
            let drained = match deadline {
                Some(d) => with_deadline(d, drain(queues, &[handler], &options, &|_| {})).await,
                None => drain(queues, &[handler], &options, &|_| {}).await,
            };
            match drained {
                Ok(handled) => {
                    let failed = handled.iter().filter(|h| h.outcome != "ok").count();
                    println_json(&serde_json::json!({"handled": handled.len(), "failed": failed}));
                    if failed == 0 {
                        exit::OK
                    } else {
                        exit::PERMANENT
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "the queue failed");
                    exit::RETRY
                }
            }
        }
    }
}

#[allow(clippy::print_stdout)]
fn println_json(value: &serde_json::Value) {
    println!("{value}");
}

/// A stage function's `main`: a process run when the command line or `LAMBDAML_MESSAGE`
/// asks for one ([`parse_args`]), else the Lambda runtime loop
/// ([`crate::pipeline::serve_stage`]).
#[cfg(feature = "lambda")]
pub async fn serve_stage_or_process<H>() -> std::process::ExitCode
where
    H: Wire + StageHandler + 'static,
{
    use crate::telemetry::{self, LogFormat};
    let args: Vec<String> = std::env::args().skip(1).collect();
    let parsed = match parse_args(&args, |k| std::env::var(k).ok()) {
        Ok(p) => p,
        Err(e) => {
            #[allow(clippy::print_stderr)]
            {
                eprintln!("{e}");
            }
            return std::process::ExitCode::from(exit::USAGE);
        }
    };
    let Some(parsed) = parsed else {
        return match crate::pipeline::serve_stage::<H>().await {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(e) => {
                #[allow(clippy::print_stderr)]
                {
                    eprintln!("{e}");
                }
                std::process::ExitCode::FAILURE
            }
        };
    };
    telemetry::init(LogFormat::detect(), "info");
    let wiring = async {
        let config = crate::config::FunctionConfig::from_env()?;
        let store = crate::store::open_store(&config.store).await?;
        let queues = crate::queue::open_queues(&config.queues, config.max_receives).await?;
        let bus = crate::events::bus_from_env().await?;
        let wired = Wired::open(H::FUNCTION, store, &queues)
            .await?
            .with_bus(bus);
        let handler = H::wire(&wired)?;
        Ok::<_, Box<dyn std::error::Error + Send + Sync>>((handler, wired, queues))
    };
    match wiring.await {
        Ok((handler, wired, queues)) => {
            let code = run_process(Arc::new(handler), &wired, &queues, parsed).await;
            std::process::ExitCode::from(code)
        }
        Err(e) => {
            tracing::error!(error = %e, "wiring the function from its environment failed");
            std::process::ExitCode::from(exit::RETRY)
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn parse(args: &[&str], env: &[(&str, &str)]) -> Result<Option<ProcessArgs>, String> {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let env: std::collections::BTreeMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        parse_args(&args, |k| env.get(k).cloned())
    }

    #[test]
    fn the_command_line_and_the_environment_choose_the_mode() {
        assert_eq!(parse(&[], &[]).unwrap(), None);
        assert_eq!(
            parse(&["--message-json", "{}"], &[]).unwrap(),
            Some(ProcessArgs {
                mode: ProcessMode::Message("{}".into()),
                deadline: None
            })
        );
        assert_eq!(
            parse(&["--queue", "--deadline-secs", "3600"], &[]).unwrap(),
            Some(ProcessArgs {
                mode: ProcessMode::Queue,
                deadline: Some(Duration::from_secs(3600))
            })
        );
        assert_eq!(
            parse(
                &[],
                &[
                    ("LAMBDAML_MESSAGE", "{\"a\":1}"),
                    ("LAMBDAML_DEADLINE_SECS", "60")
                ]
            )
            .unwrap(),
            Some(ProcessArgs {
                mode: ProcessMode::Message("{\"a\":1}".into()),
                deadline: Some(Duration::from_secs(60))
            })
        );
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("m.json");
        std::fs::write(&file, "{\"key\":\"raw/x/y.csv\"}").unwrap();
        assert_eq!(
            parse(&["--message", file.to_str().unwrap()], &[])
                .unwrap()
                .unwrap()
                .mode,
            ProcessMode::Message("{\"key\":\"raw/x/y.csv\"}".into())
        );
        assert!(
            parse(&["--message", "/no/such/file"], &[])
                .unwrap_err()
                .contains("/no/such/file")
        );
        assert!(
            parse(&["--deadline-secs", "x", "--queue"], &[])
                .unwrap_err()
                .contains("\"x\"")
        );
        assert!(
            parse(&["--deadline-secs", "5"], &[])
                .unwrap_err()
                .contains("needs --message")
        );
        assert!(
            parse(&["--mesage", "x"], &[])
                .unwrap_err()
                .contains("unknown argument")
        );
        assert!(
            parse(&["--message"], &[])
                .unwrap_err()
                .contains("needs a value")
        );
    }
}
