//! The queue contract, run against every adapter: the durable local queue, and SQS on the
//! emulator (moto under `make test`).

#![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.

use crate::common;

use std::collections::HashSet;
use std::time::Duration;

use lambdaml::queue::{LocalQueue, Queue, QueueError, SqsQueue};

const SHORT: Duration = Duration::from_secs(1);

async fn drain_all(queue: &dyn Queue) -> Vec<lambdaml::queue::Received> {
    let mut out = Vec::new();
    // SQS may return fewer messages than are visible; ask a few times.
    for _ in 0..5 {
        let batch = queue.receive(10, Duration::from_secs(30)).await.unwrap();
        out.extend(batch);
    }
    out
}

async fn send_receive_delete(queue: &dyn Queue) {
    for body in ["a", "b", "c"] {
        queue.send(body).await.unwrap();
    }
    let got = drain_all(queue).await;
    let bodies: HashSet<&str> = got.iter().map(|m| m.body.as_str()).collect();
    assert_eq!(bodies, HashSet::from(["a", "b", "c"]));
    assert!(got.iter().all(|m| m.receive_count == 1));
    for m in &got {
        queue.delete(&m.receipt).await.unwrap();
    }
    assert!(queue.receive(10, SHORT).await.unwrap().is_empty());
    let stats = queue.stats().await.unwrap();
    assert_eq!((stats.visible, stats.in_flight), (0, 0));
}

async fn visibility_timeout(queue: &dyn Queue) {
    queue.send("v").await.unwrap();
    let first = queue.receive(1, SHORT).await.unwrap();
    assert_eq!(first.len(), 1);
    assert!(
        queue.receive(1, SHORT).await.unwrap().is_empty(),
        "a received message is invisible until its timeout"
    );
    tokio::time::sleep(Duration::from_millis(1600)).await;
    let again = queue.receive(1, Duration::from_secs(30)).await.unwrap();
    assert_eq!(again.len(), 1, "a message not deleted reappears");
    assert_eq!(again[0].id, first[0].id);
    assert_eq!(again[0].receive_count, 2);
    queue.delete(&again[0].receipt).await.unwrap();
}

/// A heartbeat keeps a message in work invisible past the timeout it was received with, and
/// its receipt stays valid.
async fn extend_keeps_it_invisible(queue: &dyn Queue) {
    queue.send("x").await.unwrap();
    let got = queue.receive(1, SHORT).await.unwrap();
    assert_eq!(got.len(), 1);
    queue
        .extend(&got[0].receipt, Duration::from_secs(30))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1600)).await;
    assert!(
        queue.receive(1, SHORT).await.unwrap().is_empty(),
        "extended past its first timeout"
    );
    queue.delete(&got[0].receipt).await.unwrap();
}

async fn release_and_dead_letter(queue: &dyn Queue) {
    queue.send("r").await.unwrap();
    let m = queue
        .receive(1, Duration::from_secs(30))
        .await
        .unwrap()
        .remove(0);
    queue
        .release(&m.receipt, "transient", Duration::ZERO)
        .await
        .unwrap();
    let m = queue
        .receive(1, Duration::from_secs(30))
        .await
        .unwrap()
        .remove(0);
    assert_eq!(m.body, "r", "a released message is visible again");
    queue
        .dead_letter(&m, "unsupported message version 9")
        .await
        .unwrap();
    assert!(queue.receive(10, SHORT).await.unwrap().is_empty());
    let dead = queue.dead_letters(10).await.unwrap();
    let parked = dead
        .iter()
        .find(|d| d.body == "r")
        .expect("the message is in the dead-letter area");
    assert!(
        parked.reason.contains("unsupported message version 9"),
        "{parked:?}"
    );
}

/// With max receives 2: received twice without a delete, the message moves to the
/// dead-letter area.
async fn dead_letter_after_max_receives(queue: &dyn Queue) {
    // A queue that says where it gives up (the runner parks on that delivery) says 2;
    // one that leaves it to the queue's own policy says nothing.
    assert!(
        matches!(queue.max_receives(), None | Some(2)),
        "{:?}",
        queue.max_receives()
    );
    queue.send("poison").await.unwrap();
    for _ in 0..2 {
        let got = queue.receive(1, SHORT).await.unwrap();
        assert_eq!(got.len(), 1);
        tokio::time::sleep(Duration::from_millis(1600)).await;
    }
    // The third receive finds it over the limit: SQS and the local queue both move it.
    assert!(queue.receive(10, SHORT).await.unwrap().is_empty());
    let dead = queue.dead_letters(10).await.unwrap();
    assert!(dead.iter().any(|d| d.body == "poison"), "{dead:?}");
}

#[tokio::test]
async fn local_queue_meets_the_contract() {
    let dir = tempfile::tempdir().unwrap();
    let queue = LocalQueue::open(dir.path().join("q"), 2).unwrap();
    send_receive_delete(&queue).await;
    visibility_timeout(&queue).await;
    extend_keeps_it_invisible(&queue).await;
    release_and_dead_letter(&queue).await;
    let poison = LocalQueue::open(dir.path().join("p"), 2).unwrap();
    assert_eq!(poison.max_receives(), Some(2));
    dead_letter_after_max_receives(&poison).await;
    let dead = poison.dead_letters(10).await.unwrap();
    assert!(dead[0].reason.contains("received 2 times"), "{dead:?}");
}

#[tokio::test]
async fn local_queue_survives_a_restart_and_refuses_stale_receipts() {
    let dir = tempfile::tempdir().unwrap();
    {
        let queue = LocalQueue::open(dir.path(), 5).unwrap();
        queue.send("durable").await.unwrap();
        let m = queue
            .receive(1, Duration::from_millis(50))
            .await
            .unwrap()
            .remove(0);
        tokio::time::sleep(Duration::from_millis(100)).await;
        let again = queue
            .receive(1, Duration::from_secs(30))
            .await
            .unwrap()
            .remove(0);
        let stale = queue.delete(&m.receipt).await;
        assert!(
            matches!(stale, Err(QueueError::StaleReceipt(_))),
            "{stale:?}"
        );
        queue
            .release(&again.receipt, "crash", Duration::ZERO)
            .await
            .unwrap();
    }
    // A new process opening the same directory sees the message, with its history.
    let queue = LocalQueue::open(dir.path(), 5).unwrap();
    let m = queue
        .receive(1, Duration::from_secs(30))
        .await
        .unwrap()
        .remove(0);
    assert_eq!(m.body, "durable");
    assert_eq!(m.receive_count, 3);
    assert!(matches!(
        queue.delete("../../etc#x").await,
        Err(QueueError::InvalidReceipt(_))
    ));
}

/// One unparseable message file (a crash mid-write on a full disk, a hand edit) must not
/// stop the queue: the good messages are still received, the bad file is kept in the
/// dead-letter folder with its bytes and the reason, and temporary files a crash left are
/// gone once the queue is opened again.
#[tokio::test]
async fn local_queue_buries_an_unreadable_message_and_clears_crash_leftovers() {
    let dir = tempfile::tempdir().unwrap();
    let queue = LocalQueue::open(dir.path(), 5).unwrap();
    queue.send("first").await.unwrap();
    std::fs::write(
        dir.path()
            .join("messages/000000000000000000000001-broken.json"),
        b"{\"id\": \"trunc",
    )
    .unwrap();
    queue.send("second").await.unwrap();
    std::fs::write(dir.path().join("tmp/leftover.json"), b"half a write").unwrap();
    let stats = queue.stats().await.unwrap();
    assert_eq!((stats.visible, stats.dead), (2, 1), "{stats:?}");
    let got: Vec<String> = queue
        .receive(10, Duration::from_secs(30))
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.body)
        .collect();
    assert_eq!(got, ["first", "second"]);
    let dead = queue.dead_letters(10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].body, "{\"id\": \"trunc");
    assert!(dead[0].reason.contains("unreadable"), "{dead:?}");
    // A crash between writing a temporary file and renaming it leaves the file behind;
    // the next open removes it once it is older than any send in progress could be, and
    // leaves a fresh one (another process's send, which holds no lock) alone.
    let old = std::fs::File::options()
        .write(true)
        .open(dir.path().join("tmp/leftover.json"))
        .unwrap();
    old.set_modified(std::time::SystemTime::now() - Duration::from_secs(3600))
        .unwrap();
    std::fs::write(dir.path().join("tmp/sending.json"), b"being written").unwrap();
    let _reopened = LocalQueue::open(dir.path(), 5).unwrap();
    let left: Vec<String> = std::fs::read_dir(dir.path().join("tmp"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left, ["sending.json"]);
}

async fn sqs_queue(max_receives: u32) -> SqsQueue {
    let config = lambdaml::store::sdk_config().await;
    let client = aws_sdk_sqs::Client::new(&config);
    let name = common::unique("contract");
    let dlq = client
        .create_queue()
        .queue_name(format!("{name}-dlq"))
        .send()
        .await
        .unwrap();
    let dlq_arn = common::queue_arn(&client, dlq.queue_url().unwrap()).await;
    let policy =
        serde_json::json!({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": max_receives});
    let queue = client
        .create_queue()
        .queue_name(&name)
        .attributes(
            aws_sdk_sqs::types::QueueAttributeName::RedrivePolicy,
            policy.to_string(),
        )
        .send()
        .await
        .unwrap();
    SqsQueue::new(client, queue.queue_url().unwrap())
}

#[tokio::test]
async fn sqs_queue_meets_the_contract_on_the_emulator() {
    if common::emulator("sqs_queue_meets_the_contract_on_the_emulator").is_none() {
        return;
    }
    let queue = sqs_queue(2).await;
    send_receive_delete(&queue).await;
    visibility_timeout(&queue).await;
    extend_keeps_it_invisible(&queue).await;
    release_and_dead_letter(&queue).await;
    let poison = sqs_queue(2).await;
    dead_letter_after_max_receives(&poison).await;
}
