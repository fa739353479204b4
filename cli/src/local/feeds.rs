//! What `lambdaml local` plays besides the event sources and schedules: the bucket's
//! notifications (on the embedded default) and the registry events the functions announce.

use std::collections::HashSet;
use std::time::Duration;

use anyhow::{Result, anyhow};
use serde_json::Value;
use tokio::sync::watch;

use super::{Activities, Local, LocalOptions, s3_event, stopped};

impl Local {
    /// The bucket's notifications, played from the file store on the embedded default (an
    /// emulator sends its own).
    pub(super) async fn notifications(
        &self,
        options: &LocalOptions,
        shutdown: &watch::Receiver<bool>,
        activity: &Activities,
    ) -> Result<Vec<tokio::task::JoinHandle<()>>> {
        let mut tasks = Vec::new();
        if self.embedded_queues.is_none() {
            return Ok(tasks);
        }
        for bucket in &self.resolved.buckets {
            for n in bucket.notifications.clone() {
                let queue = self.queue(&n.queue).await?;
                let store = self
                    .functions
                    .values()
                    .next()
                    .map(|f| f.store.clone())
                    .ok_or_else(|| anyhow!("no functions"))?;
                let activity = activity.clone();
                let mut stop = shutdown.clone();
                let poll = options.poll;
                let bucket_name = bucket.name.clone();
                tasks.push(tokio::spawn(async move {
                    let mut seen: HashSet<(String, u64)> = HashSet::new();
                    let mut first = true;
                    loop {
                        if let Ok(objects) = store.list_all(&n.prefix).await {
                            for o in objects {
                                let key = o.key.as_str().to_string();
                                if !key.ends_with(&n.suffix)
                                    || !seen.insert((key.clone(), o.size))
                                    || first
                                {
                                    continue;
                                }
                                let event = s3_event(&bucket_name, &key, o.size);
                                match queue.send(&event.to_string()).await {
                                    Ok(_) => activity(
                                        "notify",
                                        &bucket_name,
                                        &n.queue,
                                        Value::String(key),
                                    ),
                                    Err(e) => activity(
                                        "error",
                                        &bucket_name,
                                        &n.queue,
                                        Value::String(e.to_string()),
                                    ),
                                }
                            }
                        }
                        first = false;
                        tokio::select! {
                            _ = tokio::time::sleep(poll) => {}
                            _ = stopped(&mut stop) => return,
                        }
                    }
                }));
            }
        }
        Ok(tasks)
    }

    /// The registry events the functions announce on the template's `DeploymentsQueue`
    /// (registered, promoted, shadowed, canary step, retired, …), shown as `registry`
    /// activity and consumed, as a subscriber of the EventBridge bus would see them.
    pub(super) async fn registry_events(
        &self,
        options: &LocalOptions,
        shutdown: &watch::Receiver<bool>,
        activity: &Activities,
    ) -> Result<Vec<tokio::task::JoinHandle<()>>> {
        const ID: &str = "DeploymentsQueue";
        if !self.template_has_queue(ID) {
            return Ok(Vec::new());
        }
        let queue = self.queue(ID).await?;
        let activity = activity.clone();
        let mut stop = shutdown.clone();
        let poll = options.poll;
        Ok(vec![tokio::spawn(async move {
            let mut seen = HashSet::new();
            loop {
                if *stop.borrow() {
                    return;
                }
                let received = queue
                    .receive(10, Duration::from_secs(30))
                    .await
                    .unwrap_or_default();
                if received.is_empty() {
                    tokio::select! {
                        _ = tokio::time::sleep(poll) => {}
                        _ = stopped(&mut stop) => return,
                    }
                    continue;
                }
                for m in received {
                    if let Ok(e) = serde_json::from_str::<lambdaml::events::RegistryEvent>(&m.body)
                        && seen.insert(e.event_id.clone())
                    {
                        let detail = serde_json::to_value(&e).unwrap_or(Value::Null);
                        activity("registry", &e.model, &e.event, detail);
                    }
                    let _ = queue.delete(&m.receipt).await;
                }
            }
        })])
    }

    fn template_has_queue(&self, id: &str) -> bool {
        self.stack.template.of_kind("AWS::SQS::Queue").contains(&id)
    }
}
