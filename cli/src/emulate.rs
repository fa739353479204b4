//! `lambdaml local`, `lambdaml invoke` and `lambdaml stack`: the deployment of
//! template.yaml, run here (see `lambdaml_cli::local`).

use std::collections::BTreeMap;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use clap::{Args, Subcommand};
use lambdaml_cli::functions::{self, NAMES};
use lambdaml_cli::local::{Activity, Local, LocalOptions};
use lambdaml_cli::template::{Stack, StackContext, Template};

use crate::ctx::Ctx;

fn duration(text: &str) -> Result<Duration, String> {
    lambdaml_score::parse_interval(text)
        .ok_or_else(|| format!("{text:?} is not a duration like 500ms, 10s, 5m"))
}

fn parameter(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("{text:?} is not KEY=VALUE"))
}

/// What names the stack.
#[derive(Debug, Args)]
pub struct StackArgs {
    /// The SAM template.
    #[arg(long, default_value = "template.yaml")]
    pub template: PathBuf,
    /// The stack name (AWS::StackName): queue and bucket names derive from it.
    #[arg(long, default_value = "lambdaml")]
    pub stack_name: String,
    /// Template parameters, as `sam deploy --parameter-overrides` takes them: KEY=VALUE.
    #[arg(long = "parameter-overrides", value_parser = parameter, num_args = 1..)]
    pub overrides: Vec<(String, String)>,
}

/// `lambdaml local`.
#[derive(Debug, Args)]
pub struct LocalArgs {
    #[command(flatten)]
    pub stack: StackArgs,
    /// Where to serve the HTTP API's routes (loopback only unless you say otherwise).
    #[arg(long, default_value = "127.0.0.1:3000")]
    pub addr: SocketAddr,
    /// Pause between polls of an empty queue.
    #[arg(long, default_value = "500ms", value_parser = duration)]
    pub poll: Duration,
    /// Receive with at most this visibility timeout (a heartbeat keeps it while the
    /// function runs), so that a stopped runner's messages come back this soon rather than
    /// after the template's timeout.
    #[arg(long, value_parser = duration)]
    pub max_visibility: Option<Duration>,
    /// Fire the template's schedules at this period instead of their own.
    #[arg(long, value_parser = duration)]
    pub schedule_every: Option<Duration>,
    /// Concurrent invocations of an event source mapping that has a
    /// `ScalingConfig.MaximumConcurrency` (the batch queue): at most that many and at most
    /// this many (default: the core count).
    #[arg(long)]
    pub workers: Option<usize>,
}

/// `lambdaml invoke`.
#[derive(Debug, Args)]
pub struct InvokeArgs {
    /// The function: ingest, preprocess, train, evaluate, deploy, score, monitor, batch (or
    /// its template name, e.g. IngestFunction).
    pub function: String,
    /// The event (a file from events/, or - for stdin).
    #[arg(long, short)]
    pub event: PathBuf,
}

/// `lambdaml stack`.
#[derive(Debug, Subcommand)]
pub enum StackCommand {
    /// Create the template's bucket, notification, queues, dead-letter queues and redrive on
    /// the emulator at AWS_ENDPOINT_URL (idempotent).
    Up(StackArgs),
    /// Print what the template resolves to for a stack name: queues, bucket, functions,
    /// event sources, routes, schedules.
    Show(StackArgs),
}

fn resolve(args: &StackArgs) -> Result<Stack> {
    let template = Template::load(&args.template)?;
    let mut context = StackContext::new(&args.stack_name);
    context.overrides = args.overrides.iter().cloned().collect::<BTreeMap<_, _>>();
    Stack::new(template, context)
}

fn describe(stack: &Stack) -> Result<serde_json::Value> {
    Ok(serde_json::json!({
        "queues": stack.queues()?.iter().map(|q| serde_json::json!({
            "id": q.id, "name": q.name, "visibility_timeout": q.visibility_timeout,
            "dead_letter": q.redrive.as_ref().map(|(d, n)| serde_json::json!({"queue": d, "max_receive_count": n})),
            "url": stack.physical(&q.id).map(|p| p.reference.clone()),
        })).collect::<Vec<_>>(),
        "buckets": stack.buckets()?.iter().map(|b| serde_json::json!({
            "name": b.name,
            "notifications": b.notifications.iter().map(|n| format!("{} {}* → {}", n.event, n.prefix, n.queue)).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "functions": stack.functions()?.iter().map(|f| serde_json::json!({
            "id": f.id, "binary": f.binary, "memory_mb": f.memory_mb, "timeout_s": f.timeout_secs,
            "schedules": f.schedules.iter().map(|s| format!("{} ({})", s.expression, if s.enabled {"enabled"} else {"disabled"})).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "event_sources": stack.event_sources()?.iter().map(|e| serde_json::json!({
            "queue": e.queue, "function": e.function, "batch_size": e.batch_size,
            "report_batch_item_failures": e.report_batch_item_failures,
        })).collect::<Vec<_>>(),
        "routes": stack.routes()?.iter().map(|r| format!("{} {} ({}) → {}", r.method, r.path, r.authorization, r.function)).collect::<Vec<_>>(),
    }))
}

/// `lambdaml stack up|show`.
pub async fn stack(json: bool, command: StackCommand) -> Result<()> {
    match command {
        StackCommand::Show(args) => {
            let stack = resolve(&args)?;
            print_json(json, &describe(&stack)?);
            Ok(())
        }
        StackCommand::Up(args) => {
            let endpoint = std::env::var("AWS_ENDPOINT_URL").unwrap_or_default();
            if endpoint.is_empty() {
                bail!(
                    "AWS_ENDPOINT_URL is not set: `lambdaml stack up` creates the template's resources on an emulator (moto, LocalStack). For AWS itself use `sam build && sam deploy --guided`."
                );
            }
            let mut stack = resolve(&args)?;
            let created = lambdaml_cli::stack::up(&mut stack).await?;
            let bucket = created.buckets.first().cloned().unwrap_or_default();
            let prefix = format!("{}-", args.stack_name);
            if json {
                print_json(
                    true,
                    &serde_json::json!({"endpoint": endpoint, "created": created,
                    "env": {"LAMBDAML_STORE": format!("s3://{bucket}"), "LAMBDAML_QUEUES": format!("sqs://{prefix}")}}),
                );
            } else {
                let mut err = std::io::stderr().lock();
                let _ = writeln!(err, "stack {} on {endpoint}:", args.stack_name);
                let _ = writeln!(
                    err,
                    "  bucket {bucket} (raw/ → {})",
                    stack
                        .buckets()?
                        .first()
                        .and_then(|b| b.notifications.first())
                        .map(|n| n.queue.clone())
                        .unwrap_or_default()
                );
                for (name, url) in &created.queues {
                    let _ = writeln!(err, "  queue  {name}  {url}");
                }
                drop(err);
                // The exports, on stdout, for `eval "$(lambdaml stack up)"`.
                let mut out = std::io::stdout().lock();
                let _ = writeln!(
                    out,
                    "export LAMBDAML_STORE=s3://{bucket} LAMBDAML_QUEUES=sqs://{prefix}"
                );
            }
            Ok(())
        }
    }
}

fn print_json(json: bool, value: &serde_json::Value) {
    let text = if json {
        value.to_string()
    } else {
        serde_json::to_string_pretty(value).unwrap_or_default()
    };
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{text}");
}

/// `lambdaml invoke`: one function's handler, in-process, on one event, against the
/// configured store and queues.
pub async fn invoke(ctx: &Ctx, args: InvokeArgs) -> Result<()> {
    let name = function_name(&args.function)?;
    let text = if args.event.as_os_str() == "-" {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)?;
        s
    } else {
        std::fs::read_to_string(&args.event)
            .with_context(|| format!("reading the event {}", args.event.display()))?
    };
    let event: serde_json::Value = serde_json::from_str(&text)
        .with_context(|| format!("the event {} is not JSON", args.event.display()))?;
    let env: BTreeMap<String, String> = std::env::vars().collect();
    let mut function =
        functions::build_with(&name, ctx.store.clone(), &ctx.queues, &env, 5).await?;
    // A sample event's receipts are not real: failed records are reported, not parked.
    function.own_queue = None;
    let invoked = function
        .invoke(event)
        .await
        .map_err(|e| anyhow!("{name} failed: {e:#}"))?;
    // What the function printed (CloudWatch EMF) goes with the logs; the response alone
    // goes to stdout, so it can be piped.
    let mut err = std::io::stderr().lock();
    for line in &invoked.stdout {
        let _ = writeln!(err, "{line}");
    }
    drop(err);
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "{}",
        if ctx.json {
            invoked.response.to_string()
        } else {
            serde_json::to_string_pretty(&invoked.response).unwrap_or_default()
        }
    );
    Ok(())
}

fn function_name(given: &str) -> Result<String> {
    let lower = given.to_lowercase();
    let name = lower.strip_suffix("function").unwrap_or(&lower);
    if NAMES.contains(&name) {
        Ok(name.to_string())
    } else {
        bail!(
            "unknown function {given:?}; the functions are {}",
            NAMES.join(", ")
        )
    }
}

/// `lambdaml local`.
pub async fn local(ctx: &Ctx, store_url: &str, args: LocalArgs) -> Result<()> {
    let endpoint = std::env::var("AWS_ENDPOINT_URL").unwrap_or_default();
    let options = LocalOptions {
        template: args.stack.template.clone(),
        stack_name: args.stack.stack_name.clone(),
        overrides: args.stack.overrides.iter().cloned().collect(),
        addr: args.addr,
        embedded: endpoint
            .is_empty()
            .then(|| (store_url.to_string(), ctx.queues.url().to_string())),
        poll: args.poll,
        max_visibility: args.max_visibility,
        schedule_every: args.schedule_every,
        workers: args
            .workers
            .unwrap_or_else(lambdaml_cli::default_workers)
            .max(1),
    };
    let local = Local::open(&options).await?;
    let json = ctx.json;
    let report = Arc::new(move |a: Activity| {
        if json {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{}", serde_json::to_string(&a).unwrap_or_default());
            let _ = out.flush();
        } else {
            let mut err = std::io::stderr().lock();
            let _ = writeln!(err, "{}", render(&a));
        }
    });
    let (stop, stopped) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        crate::serve::shutdown_signal().await;
        let _ = stop.send(true);
    });
    local.run(options, stopped, report).await
}

fn render(a: &Activity) -> String {
    match a.kind {
        "ready" => {
            let d = &a.detail;
            let list = |k: &str| {
                d[k].as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|v| v.as_str())
                    .map(|s| format!("    {s}"))
                    .collect::<Vec<_>>()
                    .join("\n")
            };
            format!(
                "lambdaml local — {} on {}\n  HTTP API {}\n{}\n  event sources\n{}\n  schedules\n{}\n  (-v shows the functions' logs; Ctrl-C stops; messages in flight come back after their visibility timeout)",
                d["template"].as_str().unwrap_or_default(),
                d["endpoint"].as_str().unwrap_or_default(),
                d["http"].as_str().unwrap_or_default(),
                list("routes"),
                list("event_sources"),
                list("schedules"),
            )
        }
        "invoke" => format!("{:>8.2}s  → {} ({})", a.t, a.function, a.trigger),
        "result" => format!(
            "{:>8.2}s  ✓ {} in {} ms{}",
            a.t,
            a.function,
            a.detail["ms"],
            match a.detail["failed"].as_u64() {
                Some(n) if n > 0 => format!(", {n} record(s) failed and will be redelivered"),
                _ => String::new(),
            }
        ),
        "error" => format!(
            "{:>8.2}s  ✗ {} ({}): {}",
            a.t,
            a.function,
            a.trigger,
            a.detail.as_str().unwrap_or_default()
        ),
        "notify" => format!(
            "{:>8.2}s  s3://{}/{} → {}",
            a.t,
            a.function,
            a.detail.as_str().unwrap_or_default(),
            a.trigger
        ),
        "registry" => format!(
            "{:>8.2}s  ⚑ {} {} {} by {}: {}",
            a.t,
            a.function,
            a.trigger,
            a.detail["version"].as_str().unwrap_or_default(),
            a.detail["actor"].as_str().unwrap_or_default(),
            a.detail["reason"].as_str().unwrap_or_default()
        ),
        _ => format!("{:>8.2}s  {} {} {}", a.t, a.kind, a.function, a.detail),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn function_names_take_both_forms() {
        assert_eq!(super::function_name("IngestFunction").unwrap(), "ingest");
        assert_eq!(super::function_name("score").unwrap(), "score");
        let err = super::function_name("scorer").unwrap_err();
        assert!(err.to_string().contains("ingest, preprocess"), "{err}");
    }
}
