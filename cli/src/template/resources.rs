//! What the stack declares, as lambdaml uses it: queues, buckets and their notifications,
//! functions with their environment and schedules, SQS event source mappings, HTTP routes.

use std::collections::BTreeMap;

use anyhow::{Context, Result, anyhow};
use serde_json::Value;

use super::Stack;

impl Stack {
    /// The SQS queues.
    pub fn queues(&self) -> Result<Vec<QueueDef>> {
        let mut out = Vec::new();
        for id in self.template.of_kind("AWS::SQS::Queue") {
            let props = self.properties(id)?;
            let name = self.physical[id].attributes["QueueName"].clone();
            let redrive = match props.get("RedrivePolicy") {
                Some(policy) => {
                    let policy = match policy {
                        Value::String(s) => serde_json::from_str(s)?,
                        other => other.clone(),
                    };
                    let arn = policy
                        .get("deadLetterTargetArn")
                        .map(scalar_string)
                        .ok_or_else(|| {
                            anyhow!("{id}: RedrivePolicy without deadLetterTargetArn")
                        })?;
                    let dlq = self.by_attribute("Arn", &arn).ok_or_else(|| {
                        anyhow!("{id}: dead-letter queue {arn} is not in the template")
                    })?;
                    let max: u32 = policy
                        .get("maxReceiveCount")
                        .map(scalar_string)
                        .unwrap_or_default()
                        .parse()
                        .with_context(|| format!("{id}: maxReceiveCount"))?;
                    Some((dlq, max))
                }
                None => None,
            };
            let number = |key: &str| {
                props
                    .get(key)
                    .map(scalar_string)
                    .and_then(|s| s.parse().ok())
            };
            out.push(QueueDef {
                id: id.to_string(),
                name,
                visibility_timeout: number("VisibilityTimeout").unwrap_or(30),
                retention: number("MessageRetentionPeriod").unwrap_or(345_600),
                redrive,
                fifo: props.get("FifoQueue").map(scalar_string).as_deref() == Some("true"),
            });
        }
        Ok(out)
    }

    /// The logical id of the resource whose attribute `name` is `value`.
    pub fn by_attribute(&self, name: &str, value: &str) -> Option<String> {
        self.physical
            .iter()
            .find(|(_, p)| p.attributes.get(name).map(String::as_str) == Some(value))
            .map(|(id, _)| id.clone())
    }

    /// The logical id of the resource whose `!Ref` is `value`.
    pub fn by_reference(&self, value: &str) -> Option<String> {
        self.physical
            .iter()
            .find(|(_, p)| p.reference == value)
            .map(|(id, _)| id.clone())
    }

    /// The S3 buckets and the queue notifications they send.
    pub fn buckets(&self) -> Result<Vec<BucketDef>> {
        let mut out = Vec::new();
        for id in self.template.of_kind("AWS::S3::Bucket") {
            let props = self.properties(id)?;
            let mut notifications = Vec::new();
            for n in props
                .pointer("/NotificationConfiguration/QueueConfigurations")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let arn = n.get("Queue").map(scalar_string).unwrap_or_default();
                let queue = self.by_attribute("Arn", &arn).ok_or_else(|| {
                    anyhow!("{id}: notification queue {arn} is not in the template")
                })?;
                let mut prefix = String::new();
                let mut suffix = String::new();
                for rule in n
                    .pointer("/Filter/S3Key/Rules")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    let value = rule.get("Value").map(scalar_string).unwrap_or_default();
                    match rule
                        .get("Name")
                        .map(scalar_string)
                        .unwrap_or_default()
                        .to_lowercase()
                        .as_str()
                    {
                        "prefix" => prefix = value,
                        "suffix" => suffix = value,
                        _ => {}
                    }
                }
                notifications.push(NotificationDef {
                    event: n.get("Event").map(scalar_string).unwrap_or_default(),
                    queue,
                    prefix,
                    suffix,
                });
            }
            out.push(BucketDef {
                id: id.to_string(),
                name: self.physical[id].reference.clone(),
                notifications,
            });
        }
        Ok(out)
    }

    /// The functions, with their merged environment and schedules.
    pub fn functions(&self) -> Result<Vec<FunctionDef>> {
        let globals = self
            .resolve(&self.template.globals_function)?
            .unwrap_or(Value::Null);
        let mut out = Vec::new();
        for id in self.template.of_kind("AWS::Serverless::Function") {
            let props = self.properties(id)?;
            let metadata = self
                .resolve(&self.template.resources[id].metadata)?
                .unwrap_or(Value::Null);
            let binary = metadata
                .pointer("/BuildProperties/Binary")
                .map(scalar_string)
                .ok_or_else(|| anyhow!("{id}: no Metadata.BuildProperties.Binary"))?;
            let mut environment = BTreeMap::new();
            for source in [&globals, &props] {
                if let Some(vars) = source
                    .pointer("/Environment/Variables")
                    .and_then(Value::as_object)
                {
                    for (k, v) in vars {
                        environment.insert(k.clone(), scalar_string(v));
                    }
                }
            }
            let setting = |key: &str, default: u64| {
                props
                    .get(key)
                    .or_else(|| globals.get(key))
                    .map(scalar_string)
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(default)
            };
            let mut schedules = Vec::new();
            if let Some(events) = props.get("Events").and_then(Value::as_object) {
                for (name, event) in events {
                    let kind = event.get("Type").map(scalar_string).unwrap_or_default();
                    if kind == "Schedule" || kind == "ScheduleV2" {
                        let p = event.get("Properties").cloned().unwrap_or(Value::Null);
                        let expression = p
                            .get("Schedule")
                            .or_else(|| p.get("ScheduleExpression"))
                            .map(scalar_string)
                            .ok_or_else(|| anyhow!("{id}.Events.{name}: no Schedule"))?;
                        let enabled = match (p.get("State"), p.get("Enabled")) {
                            (Some(state), _) => scalar_string(state) == "ENABLED",
                            (None, Some(e)) => scalar_string(e) == "true",
                            (None, None) => true,
                        };
                        schedules.push(ScheduleDef {
                            name: name.clone(),
                            expression,
                            enabled,
                        });
                    }
                }
            }
            out.push(FunctionDef {
                id: id.to_string(),
                binary,
                environment,
                memory_mb: setting("MemorySize", 128),
                timeout_secs: setting("Timeout", 3),
                schedules,
            });
        }
        Ok(out)
    }

    /// The SQS event source mappings.
    pub fn event_sources(&self) -> Result<Vec<EventSourceDef>> {
        let mut out = Vec::new();
        for id in self.template.of_kind("AWS::Lambda::EventSourceMapping") {
            let props = self.properties(id)?;
            let function_ref = props
                .get("FunctionName")
                .map(scalar_string)
                .unwrap_or_default();
            let function = self
                .by_reference(&function_ref)
                .or_else(|| self.by_attribute("Arn", &function_ref))
                .ok_or_else(|| anyhow!("{id}: function {function_ref} is not in the template"))?;
            let arn = props
                .get("EventSourceArn")
                .map(scalar_string)
                .unwrap_or_default();
            let queue = self.by_attribute("Arn", &arn).ok_or_else(|| {
                anyhow!("{id}: event source {arn} is not a queue of the template")
            })?;
            out.push(EventSourceDef {
                id: id.to_string(),
                function,
                queue,
                batch_size: props
                    .get("BatchSize")
                    .map(scalar_string)
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(10),
                report_batch_item_failures: props
                    .get("FunctionResponseTypes")
                    .and_then(Value::as_array)
                    .is_some_and(|t| t.iter().any(|t| t == "ReportBatchItemFailures")),
                enabled: props.get("Enabled").map(scalar_string).as_deref() != Some("false"),
                max_concurrency: props
                    .get("ScalingConfig")
                    .and_then(|c| c.get("MaximumConcurrency"))
                    .map(scalar_string)
                    .and_then(|s| s.parse().ok()),
            });
        }
        Ok(out)
    }

    /// The HTTP API routes and the function each reaches.
    pub fn routes(&self) -> Result<Vec<RouteDef>> {
        let mut out = Vec::new();
        for id in self.template.of_kind("AWS::ApiGatewayV2::Route") {
            let props = self.properties(id)?;
            let key = props.get("RouteKey").map(scalar_string).unwrap_or_default();
            let (method, path) = key
                .split_once(' ')
                .map(|(m, p)| (m.to_string(), p.to_string()))
                .unwrap_or(("ANY".to_string(), key.clone()));
            let target = props.get("Target").map(scalar_string).unwrap_or_default();
            let integration = target.strip_prefix("integrations/").unwrap_or(&target);
            let integration = self
                .by_reference(integration)
                .ok_or_else(|| anyhow!("{id}: integration {integration} is not in the template"))?;
            let uri = self
                .properties(&integration)?
                .get("IntegrationUri")
                .map(scalar_string)
                .unwrap_or_default();
            let function = self.by_attribute("Arn", &uri).ok_or_else(|| {
                anyhow!("{integration}: IntegrationUri {uri} is not a function of the template")
            })?;
            out.push(RouteDef {
                id: id.to_string(),
                method,
                path,
                authorization: props
                    .get("AuthorizationType")
                    .map(scalar_string)
                    .unwrap_or_else(|| "NONE".to_string()),
                function,
            });
        }
        Ok(out)
    }
}

/// A JSON scalar as CloudFormation turns it into a string.
pub fn scalar_string(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// An SQS queue of the stack.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueDef {
    /// Logical id.
    pub id: String,
    /// Queue name.
    pub name: String,
    /// `VisibilityTimeout`, seconds.
    pub visibility_timeout: u32,
    /// `MessageRetentionPeriod`, seconds.
    pub retention: u32,
    /// The dead-letter queue's logical id and maxReceiveCount.
    pub redrive: Option<(String, u32)>,
    /// A FIFO queue.
    pub fifo: bool,
}

/// A bucket and its notifications.
#[derive(Debug, Clone, PartialEq)]
pub struct BucketDef {
    /// Logical id.
    pub id: String,
    /// Bucket name.
    pub name: String,
    /// Queue notifications.
    pub notifications: Vec<NotificationDef>,
}

/// One S3 → SQS notification.
#[derive(Debug, Clone, PartialEq)]
pub struct NotificationDef {
    /// `s3:ObjectCreated:*`, …
    pub event: String,
    /// The queue's logical id.
    pub queue: String,
    /// Key prefix filter.
    pub prefix: String,
    /// Key suffix filter.
    pub suffix: String,
}

/// A function of the stack.
#[derive(Debug, Clone, PartialEq)]
pub struct FunctionDef {
    /// Logical id.
    pub id: String,
    /// The binary (`Metadata.BuildProperties.Binary`): which lambdaml function it is.
    pub binary: String,
    /// Globals' variables, then the function's.
    pub environment: BTreeMap<String, String>,
    /// `MemorySize`.
    pub memory_mb: u64,
    /// `Timeout`, seconds.
    pub timeout_secs: u64,
    /// Schedule events.
    pub schedules: Vec<ScheduleDef>,
}

/// A schedule event.
#[derive(Debug, Clone, PartialEq)]
pub struct ScheduleDef {
    /// The event's name.
    pub name: String,
    /// `rate(...)` or `cron(...)`.
    pub expression: String,
    /// Whether it fires.
    pub enabled: bool,
}

/// An SQS event source mapping.
#[derive(Debug, Clone, PartialEq)]
pub struct EventSourceDef {
    /// Logical id.
    pub id: String,
    /// The function's logical id.
    pub function: String,
    /// The queue's logical id.
    pub queue: String,
    /// `BatchSize`.
    pub batch_size: usize,
    /// `FunctionResponseTypes` has `ReportBatchItemFailures`.
    pub report_batch_item_failures: bool,
    /// `Enabled`.
    pub enabled: bool,
    /// `ScalingConfig.MaximumConcurrency`: how many invocations Lambda runs at once for
    /// this mapping (`lambdaml local` runs that many pollers, at most `--workers`).
    pub max_concurrency: Option<usize>,
}

/// An HTTP API route.
#[derive(Debug, Clone, PartialEq)]
pub struct RouteDef {
    /// Logical id.
    pub id: String,
    /// `POST`, `GET`, `ANY`, …
    pub method: String,
    /// `/v2/models/{model}/infer`, `/v2/{proxy+}`, …
    pub path: String,
    /// `AWS_IAM`, `NONE`, `JWT`, `CUSTOM`.
    pub authorization: String,
    /// The function's logical id.
    pub function: String,
}
