//! The shapes of Lambda events, and how a stage handler answers them.
//!
//! A function receives one of: a direct JSON payload (`aws lambda invoke`, `sam local
//! invoke`, `lambdaml invoke`); an S3 event notification; or an SQS batch, whose records
//! carry either a pipeline [`Message`] or a wrapped S3 notification (the S3 → SQS → Lambda
//! pattern). SQS batches are answered with `batchItemFailures`, so one bad record is
//! retried (and eventually dead-lettered) alone, never with the whole batch. S3 keys arrive
//! URL-encoded (`+` for spaces, `%XX` escapes) and are decoded here, once.
//!
//! These are plain serde types rather than an AWS events crate, so the shapes stay
//! lenient about fields lambdaml does not read.

use percent_encoding::percent_decode_str;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One object named by an S3 notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Object {
    /// The bucket.
    pub bucket: String,
    /// The key, decoded.
    pub key: String,
    /// What makes this notification one upload: the object's etag and the event's
    /// sequencer (a redelivered notification has the same; a re-upload does not).
    pub version: String,
}

/// One record of an SQS event.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SqsRecord {
    /// The message id (the batch failure's `itemIdentifier`).
    pub message_id: String,
    /// The body.
    pub body: String,
    /// The receipt handle.
    #[serde(default)]
    pub receipt_handle: String,
    /// SQS's attributes (`ApproximateReceiveCount`, `SentTimestamp`, …).
    #[serde(default)]
    pub attributes: std::collections::HashMap<String, String>,
}

impl SqsRecord {
    /// How many times the record has been delivered, this time included (1 when unknown).
    pub fn receive_count(&self) -> u32 {
        self.attributes
            .get("ApproximateReceiveCount")
            .and_then(|c| c.parse().ok())
            .unwrap_or(1)
    }
}

/// What kind of event arrived.
#[derive(Debug, Clone, PartialEq)]
pub enum Incoming {
    /// A direct payload.
    Direct(Value),
    /// An S3 notification.
    S3(Vec<S3Object>),
    /// An SQS batch.
    Sqs(Vec<SqsRecord>),
}

/// An event that cannot be read at all.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EventError {
    /// `Records` is present but not an array, or a record is malformed.
    #[error("malformed event: {0}")]
    Malformed(String),
    /// A record from a source lambdaml does not handle.
    #[error("unknown event source {0:?}")]
    UnknownSource(String),
}

/// `{"batchItemFailures": [{"itemIdentifier": …}]}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BatchResponse {
    /// The records to retry.
    pub batch_item_failures: Vec<BatchItemFailure>,
}

/// One failed record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BatchItemFailure {
    /// The record's message id.
    pub item_identifier: String,
}

/// The Lambda SQS event an event source mapping would deliver for `messages` received from
/// the queue `source_arn` (what `lambdaml local` hands a function).
pub fn sqs_event(messages: &[crate::queue::Received], source_arn: &str) -> Value {
    let region = source_arn.split(':').nth(3).unwrap_or("us-east-1");
    let records: Vec<Value> = messages
        .iter()
        .map(|m| {
            serde_json::json!({
                "messageId": m.id,
                "receiptHandle": m.receipt,
                "body": m.body,
                "attributes": {"ApproximateReceiveCount": m.receive_count.to_string()},
                "messageAttributes": {},
                "eventSource": "aws:sqs",
                "eventSourceARN": source_arn,
                "awsRegion": region,
            })
        })
        .collect();
    serde_json::json!({ "Records": records })
}

/// A key as S3 notifications carry it: form-encoded (`+` for a space, `%XX` for every byte
/// outside `A–Z a–z 0–9 - _ . ~ /`). [`decode_s3_key`] reads it back.
pub fn encode_s3_key(key: &str) -> String {
    const KEEP: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'_')
        .remove(b'.')
        .remove(b'~')
        .remove(b'/')
        .remove(b' ');
    percent_encoding::utf8_percent_encode(key, KEEP)
        .to_string()
        .replace(' ', "+")
}

/// Decodes an S3 event key: `+` is a space, then percent escapes.
pub fn decode_s3_key(key: &str) -> String {
    let plus = key.replace('+', " ");
    percent_decode_str(&plus).decode_utf8_lossy().into_owned()
}

/// Reads the objects of an S3 notification, `None` when `event` is not one. The S3 test
/// event (`"Event": "s3:TestEvent"`) is an S3 notification with no objects.
pub fn s3_objects(event: &Value) -> Option<Result<Vec<S3Object>, EventError>> {
    if event.get("Event").and_then(Value::as_str) == Some("s3:TestEvent") {
        return Some(Ok(Vec::new()));
    }
    let records = event.get("Records")?.as_array()?;
    let is_s3 = |r: &Value| r.get("eventSource").and_then(Value::as_str) == Some("aws:s3");
    if records.is_empty() || !records.iter().all(is_s3) {
        return None;
    }
    Some(
        records
            .iter()
            .map(|r| {
                let bucket = r.pointer("/s3/bucket/name").and_then(Value::as_str);
                let key = r.pointer("/s3/object/key").and_then(Value::as_str);
                match (bucket, key) {
                    (Some(bucket), Some(key)) => Ok(S3Object {
                        bucket: bucket.to_string(),
                        key: decode_s3_key(key),
                        version: ["/s3/object/eTag", "/s3/object/sequencer", "/eventTime"]
                            .iter()
                            .filter_map(|p| r.pointer(p).and_then(Value::as_str))
                            .collect::<Vec<_>>()
                            .join("/"),
                    }),
                    _ => Err(EventError::Malformed(
                        "S3 record without s3.bucket.name or s3.object.key".to_string(),
                    )),
                }
            })
            .collect(),
    )
}

/// Classifies an event.
pub fn classify(event: Value) -> Result<Incoming, EventError> {
    if let Some(objects) = s3_objects(&event) {
        return objects.map(Incoming::S3);
    }
    let Some(records) = event.get("Records") else {
        return Ok(Incoming::Direct(event));
    };
    let records = records
        .as_array()
        .ok_or_else(|| EventError::Malformed("`Records` is not an array".to_string()))?;
    if records.is_empty() {
        return Err(EventError::Malformed("`Records` is empty".to_string()));
    }
    let mut sqs = Vec::with_capacity(records.len());
    for r in records {
        match r.get("eventSource").and_then(Value::as_str) {
            Some("aws:sqs") => sqs.push(
                serde_json::from_value(r.clone())
                    .map_err(|e| EventError::Malformed(format!("SQS record: {e}")))?,
            ),
            Some(other) => return Err(EventError::UnknownSource(other.to_string())),
            None => {
                return Err(EventError::Malformed(
                    "a record has no eventSource".to_string(),
                ));
            }
        }
    }
    Ok(Incoming::Sqs(sqs))
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        #[test]
        fn encoded_keys_decode_to_themselves(key in "\\PC{0,40}") {
            let encoded = encode_s3_key(&key);
            proptest::prop_assert!(!encoded.contains(' '));
            proptest::prop_assert_eq!(decode_s3_key(&encoded), key);
        }
    }

    #[test]
    fn s3_keys_are_encoded_as_s3_sends_them() {
        assert_eq!(
            encode_s3_key("raw/w/my file(2).csv"),
            "raw/w/my+file%282%29.csv"
        );
        assert_eq!(
            encode_s3_key("raw/a/été+x.csv"),
            "raw/a/%C3%A9t%C3%A9%2Bx.csv"
        );
    }

    #[test]
    fn s3_keys_are_url_decoded() {
        assert_eq!(
            decode_s3_key("raw/weather/my+file%282%29.csv"),
            "raw/weather/my file(2).csv"
        );
        assert_eq!(decode_s3_key("raw/a/%C3%A9t%C3%A9.csv"), "raw/a/été.csv");
    }

    #[test]
    fn events_are_classified() {
        let s3 = serde_json::json!({"Records": [{"eventSource": "aws:s3",
            "s3": {"bucket": {"name": "b"}, "object": {"key": "raw/w/a+b.csv"}}}]});
        assert_eq!(
            classify(s3).unwrap(),
            Incoming::S3(vec![S3Object {
                bucket: "b".into(),
                key: "raw/w/a b.csv".into(),
                version: String::new(),
            }])
        );
        let sqs = serde_json::json!({"Records": [{"eventSource": "aws:sqs", "messageId": "m1",
            "body": "{}", "receiptHandle": "r"}]});
        assert!(matches!(classify(sqs).unwrap(), Incoming::Sqs(r) if r[0].message_id == "m1"));
        let direct = serde_json::json!({"key": "raw/w/a.csv"});
        assert!(matches!(classify(direct).unwrap(), Incoming::Direct(_)));
        let other = serde_json::json!({"Records": [{"eventSource": "aws:kinesis"}]});
        assert!(matches!(classify(other), Err(EventError::UnknownSource(_))));
        let bad = serde_json::json!({"Records": 3});
        assert!(matches!(classify(bad), Err(EventError::Malformed(_))));
        let test_event = serde_json::json!({"Event": "s3:TestEvent", "Bucket": "b"});
        assert_eq!(classify(test_event).unwrap(), Incoming::S3(vec![]));
    }
}
