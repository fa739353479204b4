//! SQS (or an SQS emulator) through `aws-sdk-sqs`.
//!
//! Redelivery and dead-lettering after N receives are SQS's own, configured by the queue's
//! redrive policy (template.yaml, or `infra/` for the emulator). A message dead-lettered by
//! a handler is sent to the queue's dead-letter queue with its reason as the
//! `lambdaml-reason` message attribute and then deleted from the source queue.

use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_sqs::Client;
use aws_sdk_sqs::config::http::HttpResponse;
use aws_sdk_sqs::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_sqs::types::{MessageAttributeValue, MessageSystemAttributeName, QueueAttributeName};
use tokio::sync::OnceCell;

use super::{DeadLetter, Queue, QueueError, QueueStats, Received};

const REASON_ATTRIBUTE: &str = "lambdaml-reason";

/// One SQS queue. See the module docs.
#[derive(Debug)]
pub struct SqsQueue {
    client: Client,
    url: String,
    dlq_url: OnceCell<String>,
}

fn backend<E>(queue: &str, err: SdkError<E, HttpResponse>) -> QueueError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let failure = crate::ports::aws::failure(err);
    QueueError::Backend {
        queue: queue.to_string(),
        kind: failure.kind,
        message: failure.summary,
        source: failure.cause,
    }
}

fn secs(d: Duration) -> i32 {
    d.as_secs_f64().ceil().clamp(0.0, 43_200.0) as i32
}

impl SqsQueue {
    /// The queue at `url`.
    pub fn new(client: Client, url: &str) -> Self {
        SqsQueue {
            client,
            url: url.to_string(),
            dlq_url: OnceCell::new(),
        }
    }

    /// The queue named `name`, resolved to its URL.
    pub async fn by_name(client: Client, name: &str) -> Result<Self, QueueError> {
        let out = client
            .get_queue_url()
            .queue_name(name)
            .send()
            .await
            .map_err(|e| backend(name, e))?;
        let url = out
            .queue_url()
            .ok_or_else(|| QueueError::unavailable(name, "GetQueueUrl returned no URL"))?;
        Ok(Self::new(client, url))
    }

    /// The queue's ARN (what S3 notifications, redrive policies and EventBridge rules name).
    pub async fn arn(&self) -> Result<String, QueueError> {
        let attrs = self
            .client
            .get_queue_attributes()
            .queue_url(&self.url)
            .attribute_names(QueueAttributeName::QueueArn)
            .send()
            .await
            .map_err(|e| backend(&self.url, e))?;
        attrs
            .attributes()
            .and_then(|a| a.get(&QueueAttributeName::QueueArn))
            .cloned()
            .ok_or_else(|| QueueError::unavailable(self.url.as_str(), "the queue has no QueueArn"))
    }

    /// The dead-letter queue's URL: from the redrive policy, else the `-dlq` naming rule.
    async fn dlq_url(&self) -> Result<&str, QueueError> {
        self.dlq_url
            .get_or_try_init(|| async {
                let attrs = self
                    .client
                    .get_queue_attributes()
                    .queue_url(&self.url)
                    .attribute_names(QueueAttributeName::RedrivePolicy)
                    .send()
                    .await
                    .map_err(|e| backend(&self.url, e))?;
                let from_policy = attrs
                    .attributes()
                    .and_then(|a| a.get(&QueueAttributeName::RedrivePolicy))
                    .and_then(|p| serde_json::from_str::<serde_json::Value>(p).ok())
                    .and_then(|v| {
                        v.get("deadLetterTargetArn")
                            .and_then(|a| a.as_str())
                            .and_then(|arn| arn.rsplit(':').next())
                            .map(str::to_string)
                    });
                let name = match from_policy {
                    Some(name) => name,
                    None => format!("{}-dlq", self.url.rsplit('/').next().unwrap_or_default()),
                };
                let out = self
                    .client
                    .get_queue_url()
                    .queue_name(&name)
                    .send()
                    .await
                    .map_err(|e| backend(&name, e))?;
                Ok(out.queue_url().unwrap_or_default().to_string())
            })
            .await
            .map(String::as_str)
    }

    fn map_receipt_error<E>(&self, receipt: &str, err: SdkError<E, HttpResponse>) -> QueueError
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        match err.code() {
            Some("ReceiptHandleIsInvalid" | "InvalidParameterValue") => {
                QueueError::StaleReceipt(receipt.to_string())
            }
            _ => backend(&self.url, err),
        }
    }
}

#[async_trait]
impl Queue for SqsQueue {
    async fn send(&self, body: &str) -> Result<String, QueueError> {
        let out = self
            .client
            .send_message()
            .queue_url(&self.url)
            .message_body(body)
            .send()
            .await
            .map_err(|e| backend(&self.url, e))?;
        Ok(out.message_id().unwrap_or_default().to_string())
    }

    async fn receive(&self, max: usize, visibility: Duration) -> Result<Vec<Received>, QueueError> {
        let out = self
            .client
            .receive_message()
            .queue_url(&self.url)
            .max_number_of_messages(max.clamp(1, 10) as i32)
            .visibility_timeout(secs(visibility))
            .wait_time_seconds(0)
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
            .send()
            .await
            .map_err(|e| backend(&self.url, e))?;
        Ok(out
            .messages()
            .iter()
            .map(|m| Received {
                id: m.message_id().unwrap_or_default().to_string(),
                receipt: m.receipt_handle().unwrap_or_default().to_string(),
                body: m.body().unwrap_or_default().to_string(),
                receive_count: m
                    .attributes()
                    .and_then(|a| a.get(&MessageSystemAttributeName::ApproximateReceiveCount))
                    .and_then(|c| c.parse().ok())
                    .unwrap_or(1),
            })
            .collect())
    }

    async fn delete(&self, receipt: &str) -> Result<(), QueueError> {
        self.client
            .delete_message()
            .queue_url(&self.url)
            .receipt_handle(receipt)
            .send()
            .await
            .map_err(|e| self.map_receipt_error(receipt, e))?;
        Ok(())
    }

    async fn release(&self, receipt: &str, error: &str, delay: Duration) -> Result<(), QueueError> {
        tracing::warn!(queue = %self.url, error, "message released for redelivery");
        self.client
            .change_message_visibility()
            .queue_url(&self.url)
            .receipt_handle(receipt)
            .visibility_timeout(secs(delay))
            .send()
            .await
            .map_err(|e| self.map_receipt_error(receipt, e))?;
        Ok(())
    }

    async fn extend(&self, receipt: &str, timeout: Duration) -> Result<(), QueueError> {
        self.client
            .change_message_visibility()
            .queue_url(&self.url)
            .receipt_handle(receipt)
            .visibility_timeout(secs(timeout))
            .send()
            .await
            .map_err(|e| self.map_receipt_error(receipt, e))?;
        Ok(())
    }

    async fn dead_letter(&self, message: &Received, reason: &str) -> Result<(), QueueError> {
        let dlq = self.dlq_url().await?.to_string();
        let reason_value = MessageAttributeValue::builder()
            .data_type("String")
            .string_value(reason)
            .build()
            .map_err(|e| QueueError::Backend {
                queue: dlq.clone(),
                kind: crate::error::BackendKind::Refused,
                message: e.to_string(),
                source: std::sync::Arc::new(e),
            })?;
        self.client
            .send_message()
            .queue_url(&dlq)
            .message_body(&message.body)
            .message_attributes(REASON_ATTRIBUTE, reason_value)
            .send()
            .await
            .map_err(|e| backend(&dlq, e))?;
        self.delete(&message.receipt).await
    }

    async fn dead_letters(&self, max: usize) -> Result<Vec<DeadLetter>, QueueError> {
        let dlq = self.dlq_url().await?.to_string();
        let out = self
            .client
            .receive_message()
            .queue_url(&dlq)
            .max_number_of_messages(max.clamp(1, 10) as i32)
            .visibility_timeout(0)
            .message_attribute_names("All")
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
            .send()
            .await
            .map_err(|e| backend(&dlq, e))?;
        Ok(out
            .messages()
            .iter()
            .map(|m| DeadLetter {
                id: m.message_id().unwrap_or_default().to_string(),
                body: m.body().unwrap_or_default().to_string(),
                receive_count: m
                    .attributes()
                    .and_then(|a| a.get(&MessageSystemAttributeName::ApproximateReceiveCount))
                    .and_then(|c| c.parse().ok())
                    .unwrap_or(0),
                reason: m
                    .message_attributes()
                    .and_then(|a| a.get(REASON_ATTRIBUTE))
                    .and_then(|v| v.string_value())
                    .unwrap_or("exceeded the queue's maxReceiveCount (SQS redrive)")
                    .to_string(),
            })
            .collect())
    }

    async fn stats(&self) -> Result<QueueStats, QueueError> {
        let count = |url: String| async move {
            let out = self
                .client
                .get_queue_attributes()
                .queue_url(&url)
                .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
                .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
                .send()
                .await
                .map_err(|e| backend(&url, e))?;
            let get = |name: QueueAttributeName| {
                out.attributes()
                    .and_then(|a| a.get(&name))
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(0)
            };
            Ok::<_, QueueError>((
                get(QueueAttributeName::ApproximateNumberOfMessages),
                get(QueueAttributeName::ApproximateNumberOfMessagesNotVisible),
            ))
        };
        let (visible, in_flight) = count(self.url.clone()).await?;
        let dead = match self.dlq_url().await {
            Ok(dlq) => {
                let (v, f) = count(dlq.to_string()).await?;
                v + f
            }
            Err(_) => 0,
        };
        Ok(QueueStats {
            visible,
            in_flight,
            dead,
        })
    }

    fn name(&self) -> String {
        self.url.clone()
    }
}
