//! The monitor Lambda: configuration from the environment, adapters built once, then the
//! runtime loop. A direct invocation names a model (`{"model": …}`); a scheduled
//! EventBridge event monitors every model in the registry. EMF lines go to stdout, where
//! Lambda turns them into CloudWatch metrics.

use std::io::Write;
use std::sync::Arc;

use lambda_runtime::{LambdaEvent, service_fn};
use lambdaml::config::FunctionConfig;
use lambdaml::message::Stage;
use lambdaml::queue::open_queues;
use lambdaml::registry::RegistryStore;
use lambdaml::store::open_store;
use lambdaml::telemetry::{self, LogFormat};
use lambdaml_monitor::{Monitor, MonitorRequest};
use serde_json::Value;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    telemetry::init(LogFormat::detect(), "info");
    let config = FunctionConfig::from_env()?;
    let store = open_store(&config.store).await?;
    let queues = open_queues(&config.queues, config.max_receives).await?;
    let monitor = Arc::new(Monitor::new(
        store.clone(),
        Some(queues.get(Stage::Ingest).await?),
    ));
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| {
        let (monitor, store) = (monitor.clone(), store.clone());
        async move {
            let requests: Vec<MonitorRequest> = if event.payload.get("model").is_some() {
                vec![
                    serde_json::from_value(event.payload)
                        .map_err(|e| format!("invalid monitor request: {e}"))?,
                ]
            } else {
                RegistryStore::new(store)
                    .models()
                    .await?
                    .into_iter()
                    .map(MonitorRequest::new)
                    .collect()
            };
            let mut out = Vec::new();
            let mut failed = Vec::new();
            for request in &requests {
                // One model's failure (no baseline yet, say) does not stop the others.
                let outcome = match monitor.run(request).await {
                    Ok(o) => o,
                    Err(e) => {
                        tracing::error!(model = %request.model, error = %e, "monitor run failed");
                        failed.push(format!("{}: {e}", request.model));
                        continue;
                    }
                };
                let mut stdout = std::io::stdout().lock();
                for line in &outcome.emf {
                    let _ = writeln!(stdout, "{line}");
                }
                out.push(serde_json::json!({
                    "model": outcome.report.model,
                    "report": outcome.report_key,
                    "breach": outcome.report.verdict.breach,
                    "reasons": outcome.report.verdict.reasons,
                    "retrain": outcome.report.retrain.decision,
                }));
            }
            if !failed.is_empty() && requests.len() == 1 {
                return Err(failed.join("; ").into());
            }
            Ok::<Value, lambda_runtime::Error>(serde_json::json!({"runs": out, "failed": failed}))
        }
    }))
    .await
}
