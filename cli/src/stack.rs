//! Creating the resources template.yaml declares on an AWS emulator (moto, LocalStack) at
//! `AWS_ENDPOINT_URL` — what `make emulator-up` and `lambdaml local` do, so that the
//! emulated system has the template's shape: every queue with its visibility timeout,
//! retention and redrive policy (dead-letter queue and maxReceiveCount); every bucket with
//! default encryption, public access blocked and its queue notifications (event, prefix,
//! suffix). Creating is idempotent: an existing queue gets the template's attributes again.
//! Not applied on the emulator: queue encryption, bucket versioning and lifecycle, the
//! bucket and queue policies, IAM (emulators do not enforce it; the security and access
//! tests check those parts of the template).

use std::collections::HashMap;

use anyhow::{Context, Result, anyhow};
use aws_sdk_s3::error::ProvideErrorMetadata;
use aws_sdk_sqs::types::QueueAttributeName;

use crate::template::{Physical, Stack};

/// What was created (or found).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Created {
    /// Bucket names.
    pub buckets: Vec<String>,
    /// Queue name → URL.
    pub queues: Vec<(String, String)>,
}

/// Creates the stack's queues and buckets on the endpoint and records their URLs and ARNs
/// in `stack`.
pub async fn up(stack: &mut Stack) -> Result<Created> {
    let config = lambdaml::store::sdk_config().await;
    let sqs = aws_sdk_sqs::Client::new(&config);
    let mut queues = stack.queues()?;
    // Dead-letter queues first: the others name them in their redrive policies.
    queues.sort_by_key(|q| q.redrive.is_some());
    let mut created = Created {
        buckets: Vec::new(),
        queues: Vec::new(),
    };
    let mut arns: HashMap<String, String> = HashMap::new();
    for queue in &queues {
        let (url, arn) = create_queue(&sqs, queue, &arns).await?;
        arns.insert(queue.id.clone(), arn.clone());
        stack.set_physical(
            &queue.id,
            Physical {
                reference: url.clone(),
                attributes: [
                    ("Arn".to_string(), arn),
                    ("QueueName".to_string(), queue.name.clone()),
                ]
                .into(),
            },
        );
        created.queues.push((queue.name.clone(), url));
    }

    for bucket in stack.buckets()? {
        create_bucket(&bucket, &stack.context.region, &arns).await?;
        created.buckets.push(bucket.name.clone());
    }
    Ok(created)
}

/// Creates (or updates) one queue, its redrive policy naming a dead-letter queue created
/// before it; returns its URL and ARN.
async fn create_queue(
    sqs: &aws_sdk_sqs::Client,
    queue: &crate::template::QueueDef,
    arns: &HashMap<String, String>,
) -> Result<(String, String)> {
    let mut attributes = HashMap::from([
        (
            QueueAttributeName::VisibilityTimeout,
            queue.visibility_timeout.to_string(),
        ),
        (
            QueueAttributeName::MessageRetentionPeriod,
            queue.retention.to_string(),
        ),
    ]);
    if queue.fifo {
        attributes.insert(QueueAttributeName::FifoQueue, "true".to_string());
    }
    if let Some((dlq, max)) = &queue.redrive {
        let arn = arns
            .get(dlq)
            .ok_or_else(|| anyhow!("{}: dead-letter queue {dlq} was not created", queue.id))?;
        attributes.insert(
            QueueAttributeName::RedrivePolicy,
            serde_json::json!({"deadLetterTargetArn": arn, "maxReceiveCount": max}).to_string(),
        );
    }
    let url = match sqs
        .create_queue()
        .queue_name(&queue.name)
        .set_attributes(Some(attributes.clone()))
        .send()
        .await
    {
        Ok(out) => out.queue_url().unwrap_or_default().to_string(),
        Err(e) if e.code() == Some("QueueAlreadyExists") || e.code() == Some("QueueNameExists") => {
            let url = sqs
                .get_queue_url()
                .queue_name(&queue.name)
                .send()
                .await
                .with_context(|| format!("finding the queue {}", queue.name))?
                .queue_url()
                .unwrap_or_default()
                .to_string();
            attributes.remove(&QueueAttributeName::FifoQueue);
            sqs.set_queue_attributes()
                .queue_url(&url)
                .set_attributes(Some(attributes))
                .send()
                .await
                .with_context(|| format!("updating the queue {}", queue.name))?;
            url
        }
        Err(e) => {
            return Err(anyhow!(
                "creating the queue {} at {}: {}",
                queue.name,
                endpoint(),
                e.message()
                    .map(str::to_string)
                    .unwrap_or_else(|| format!("{e:?}"))
            ));
        }
    };
    let arn = lambdaml::queue::SqsQueue::new(sqs.clone(), &url)
        .arn()
        .await
        .with_context(|| format!("reading the ARN of {}", queue.name))?;
    Ok((url, arn))
}

/// Creates one bucket (encrypted, public access blocked) with its notifications to the
/// queues in `arns`.
async fn create_bucket(
    bucket: &crate::template::BucketDef,
    region: &str,
    arns: &HashMap<String, String>,
) -> Result<()> {
    let store = lambdaml::store::S3Store::from_env(&bucket.name, "").await;
    let s3 = store.client();
    let mut create = s3.create_bucket().bucket(&bucket.name);
    if region != "us-east-1" {
        create = create.create_bucket_configuration(
            aws_sdk_s3::types::CreateBucketConfiguration::builder()
                .location_constraint(aws_sdk_s3::types::BucketLocationConstraint::from(region))
                .build(),
        );
    }
    match create.send().await {
        Ok(_) => {}
        Err(e)
            if matches!(
                e.code(),
                Some("BucketAlreadyOwnedByYou" | "BucketAlreadyExists")
            ) => {}
        Err(e) => {
            return Err(anyhow!(
                "creating the bucket {} at {}: {}",
                bucket.name,
                endpoint(),
                e.message()
                    .map(str::to_string)
                    .unwrap_or_else(|| format!("{e:?}"))
            ));
        }
    }
    use aws_sdk_s3::types::*;
    s3.put_bucket_encryption()
        .bucket(&bucket.name)
        .server_side_encryption_configuration(
            ServerSideEncryptionConfiguration::builder()
                .rules(
                    ServerSideEncryptionRule::builder()
                        .apply_server_side_encryption_by_default(
                            ServerSideEncryptionByDefault::builder()
                                .sse_algorithm(ServerSideEncryption::Aes256)
                                .build()?,
                        )
                        .build(),
                )
                .build()?,
        )
        .send()
        .await
        .with_context(|| format!("encrypting the bucket {}", bucket.name))?;
    s3.put_public_access_block()
        .bucket(&bucket.name)
        .public_access_block_configuration(
            PublicAccessBlockConfiguration::builder()
                .block_public_acls(true)
                .block_public_policy(true)
                .ignore_public_acls(true)
                .restrict_public_buckets(true)
                .build(),
        )
        .send()
        .await
        .with_context(|| format!("blocking public access to {}", bucket.name))?;
    let mut notifications = NotificationConfiguration::builder();
    for n in &bucket.notifications {
        let mut rules = Vec::new();
        if !n.prefix.is_empty() {
            rules.push(
                FilterRule::builder()
                    .name(FilterRuleName::Prefix)
                    .value(&n.prefix)
                    .build(),
            );
        }
        if !n.suffix.is_empty() {
            rules.push(
                FilterRule::builder()
                    .name(FilterRuleName::Suffix)
                    .value(&n.suffix)
                    .build(),
            );
        }
        let arn = arns.get(&n.queue).ok_or_else(|| {
            anyhow!(
                "{}: notification queue {} was not created",
                bucket.id,
                n.queue
            )
        })?;
        notifications = notifications.queue_configurations(
            QueueConfiguration::builder()
                .queue_arn(arn)
                .events(Event::from(n.event.as_str()))
                .filter(
                    NotificationConfigurationFilter::builder()
                        .key(S3KeyFilter::builder().set_filter_rules(Some(rules)).build())
                        .build(),
                )
                .build()?,
        );
    }
    s3.put_bucket_notification_configuration()
        .bucket(&bucket.name)
        .notification_configuration(notifications.build())
        .send()
        .await
        .with_context(|| format!("configuring the notifications of {}", bucket.name))?;
    Ok(())
}

/// The emulator endpoint, for messages.
pub fn endpoint() -> String {
    std::env::var("AWS_ENDPOINT_URL").unwrap_or_else(|_| "AWS".to_string())
}
