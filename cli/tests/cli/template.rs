//! template.yaml, checked as a security reviewer would: every policy as narrow as the
//! functions allow, nothing public, everything encrypted, every route authorized when the
//! parameter says IAM — and each check shown to fail on a template that breaks it. Also:
//! every sample event in events/ is used by a test.

#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};

use lambdaml_cli::template::{Stack, StackContext, Template};
use serde_json::Value;

const TEMPLATE: &str = include_str!("../../../template.yaml");

fn stack(text: &str, overrides: &[(&str, &str)]) -> Stack {
    let mut ctx = StackContext::new("sec");
    ctx.region = "us-east-1".to_string();
    for (k, v) in overrides {
        ctx.overrides.insert(k.to_string(), v.to_string());
    }
    Stack::new(Template::parse(text).unwrap(), ctx).unwrap()
}

fn list(v: &Value) -> Vec<String> {
    match v {
        Value::Array(items) => items
            .iter()
            .map(|i| i.as_str().unwrap_or("?").to_string())
            .collect(),
        Value::String(s) => vec![s.clone()],
        _ => Vec::new(),
    }
}

/// The queues each function may send to: the next stage's (train also its own, to continue
/// after a checkpoint) and its own dead-letter queue, where it parks what never succeeds.
fn allowed_sends() -> BTreeMap<&'static str, Vec<&'static str>> {
    BTreeMap::from([
        (
            "IngestFunction",
            // A large file's partitions: one message each on its own queue.
            vec!["PreprocessQueue", "IngestQueue", "IngestDeadLetterQueue"],
        ),
        (
            "PreprocessFunction",
            vec!["TrainQueue", "PreprocessDeadLetterQueue"],
        ),
        (
            "TrainFunction",
            vec!["EvaluateQueue", "TrainQueue", "TrainDeadLetterQueue"],
        ),
        (
            "EvaluateFunction",
            vec!["DeployQueue", "EvaluateDeadLetterQueue", "DeploymentsQueue"],
        ),
        (
            "DeployFunction",
            vec!["DeploymentsQueue", "DeployDeadLetterQueue"],
        ),
        ("ScoreFunction", vec![]),
        // Retrains go to ingest; a large window's parts to its own queue.
        (
            "MonitorFunction",
            vec![
                "IngestQueue",
                "DeploymentsQueue",
                "MonitorQueue",
                "MonitorDeadLetterQueue",
            ],
        ),
        // The planner sends one message per partition to its own queue.
        ("BatchFunction", vec!["BatchQueue", "BatchDeadLetterQueue"]),
    ])
}

/// Everything wrong with the stack, one line each.
fn findings(s: &Stack) -> Vec<String> {
    let mut out = Vec::new();
    let bucket_ids = s.template.of_kind("AWS::S3::Bucket");
    let bucket_arns: BTreeSet<String> = bucket_ids
        .iter()
        .map(|id| s.physical(id).unwrap().attributes["Arn"].clone())
        .collect();
    let functions = s.template.of_kind("AWS::Serverless::Function");
    for id in &functions {
        let props = s.properties(id).unwrap();
        if props.get("Role").is_some() {
            out.push(format!(
                "{id}: uses an external Role the template cannot check"
            ));
        }
        for m in list(props.get("ManagedPolicyArns").unwrap_or(&Value::Null)) {
            out.push(format!("{id}: managed policy {m} (not least privilege)"));
        }
        let mut sends = BTreeSet::new();
        for policy in props["Policies"].as_array().into_iter().flatten() {
            let Some(statements) = policy.get("Statement").and_then(Value::as_array) else {
                out.push(format!(
                    "{id}: policy {policy} is not an inline statement list"
                ));
                continue;
            };
            for st in statements {
                if st["Effect"] != "Allow" {
                    continue;
                }
                let actions = list(&st["Action"]);
                let resources = list(&st["Resource"]);
                for a in &actions {
                    if a == "*" || a.ends_with(":*") {
                        out.push(format!("{id}: Action {a}"));
                    }
                }
                for r in &resources {
                    if r == "*" {
                        out.push(format!("{id}: Resource \"*\" for {actions:?}"));
                    }
                    // S3 objects only under a named prefix, never the whole bucket.
                    for arn in &bucket_arns {
                        if r == &format!("{arn}/*") {
                            out.push(format!("{id}: {actions:?} on every object of the bucket"));
                        }
                    }
                }
                // s3:ListBucket on the bucket alone (no prefix condition on purpose: S3
                // answers a missing object with 404 only to callers that may list).
                if actions.iter().any(|a| a == "s3:ListBucket")
                    && resources.iter().any(|r| !bucket_arns.contains(r))
                {
                    out.push(format!("{id}: s3:ListBucket beyond the artifacts bucket"));
                }
                if actions.iter().any(|a| a == "sqs:SendMessage") {
                    for r in &resources {
                        match s.by_attribute("Arn", r) {
                            Some(q) => {
                                sends.insert(q);
                            }
                            None => out.push(format!(
                                "{id}: sqs:SendMessage to {r}, not a queue of the stack"
                            )),
                        }
                    }
                }
            }
        }
        let allowed: BTreeSet<String> = allowed_sends()
            .get(id)
            .map(|v| v.iter().map(|s| s.to_string()).collect())
            .unwrap_or_default();
        for q in sends.difference(&allowed) {
            out.push(format!(
                "{id}: may send to {q}, which is not its next stage"
            ));
        }
    }
    for id in &bucket_ids {
        let props = s.properties(id).unwrap();
        let block = &props["PublicAccessBlockConfiguration"];
        for key in [
            "BlockPublicAcls",
            "BlockPublicPolicy",
            "IgnorePublicAcls",
            "RestrictPublicBuckets",
        ] {
            if block[key] != true {
                out.push(format!("{id}: {key} is not true (public bucket)"));
            }
        }
        if props
            .get("AccessControl")
            .is_some_and(|a| a.as_str().is_some_and(|a| a.starts_with("Public")))
        {
            out.push(format!("{id}: public AccessControl"));
        }
        let sse = props
            .pointer("/BucketEncryption/ServerSideEncryptionConfiguration/0/ServerSideEncryptionByDefault/SSEAlgorithm")
            .and_then(Value::as_str);
        if !matches!(sse, Some("AES256" | "aws:kms" | "aws:kms:dsse")) {
            out.push(format!("{id}: not encrypted"));
        }
        let tls_only = s.template.of_kind("AWS::S3::BucketPolicy").iter().any(|p| {
            let props = s.properties(p).unwrap();
            props["Bucket"] == s.physical(id).unwrap().reference.as_str()
                && props["PolicyDocument"]["Statement"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|st| {
                        st["Effect"] == "Deny"
                            && st.pointer("/Condition/Bool/aws:SecureTransport")
                                == Some(&Value::String("false".into()))
                    })
        });
        if !tls_only {
            out.push(format!(
                "{id}: no bucket policy denying requests without TLS"
            ));
        }
    }
    for id in s.template.of_kind("AWS::SQS::Queue") {
        let props = s.properties(id).unwrap();
        if props["SqsManagedSseEnabled"] != true && props.get("KmsMasterKeyId").is_none() {
            out.push(format!("{id}: not encrypted"));
        }
    }
    for id in s.template.of_kind("AWS::SQS::QueuePolicy") {
        let props = s.properties(id).unwrap();
        for st in props["PolicyDocument"]["Statement"]
            .as_array()
            .into_iter()
            .flatten()
        {
            if st["Effect"] == "Allow"
                && (st["Principal"] == "*"
                    || st.pointer("/Principal/AWS") == Some(&Value::String("*".into())))
                && st.get("Condition").is_none()
            {
                out.push(format!("{id}: anyone may use the queue"));
            }
        }
    }
    let iam = s.parameter("ScoreAuth") == Some("AWS_IAM");
    for route in s.routes().unwrap() {
        if iam && route.authorization != "AWS_IAM" {
            out.push(format!(
                "{}: {} {} is not IAM-authorized though ScoreAuth=AWS_IAM",
                route.id, route.method, route.path
            ));
        }
    }
    for source in s.event_sources().unwrap() {
        if !source.report_batch_item_failures {
            out.push(format!(
                "{}: no ReportBatchItemFailures (one bad record fails its batch)",
                source.id
            ));
        }
    }
    for q in s.queues().unwrap() {
        let is_dlq = s
            .queues()
            .unwrap()
            .iter()
            .any(|o| o.redrive.as_ref().is_some_and(|(d, _)| d == &q.id));
        let consumed = s.event_sources().unwrap().iter().any(|e| e.queue == q.id);
        if consumed && q.redrive.is_none() && !is_dlq {
            out.push(format!("{}: consumed without a dead-letter queue", q.id));
        }
    }
    out
}

#[test]
fn the_template_passes_every_security_check() {
    let findings = findings(&stack(TEMPLATE, &[]));
    assert!(findings.is_empty(), "{findings:#?}");
    // Switching authorization off is the parameter's job, and only its.
    let open = stack(TEMPLATE, &[("ScoreAuth", "NONE")]);
    assert!(
        open.routes()
            .unwrap()
            .iter()
            .all(|r| r.authorization == "NONE")
    );
    assert!(findings_of(&open).is_empty());
}

fn findings_of(s: &Stack) -> Vec<String> {
    findings(s)
}

/// Each check catches what it is for: the template, broken one way at a time.
#[test]
fn each_check_fails_on_a_template_that_breaks_it() {
    let cases: [(&str, &str, &str); 10] = [
        (
            "Action: s3:ListBucket\n              Resource: !Sub arn:${AWS::Partition}:s3:::${AWS::StackName}-${AWS::AccountId}-${AWS::Region}\n",
            "Action: s3:ListBucket\n              Resource: !Sub arn:${AWS::Partition}:s3:::*\n",
            "beyond the artifacts bucket",
        ),
        (
            "Action: s3:GetObject\n              Resource:\n                - !Sub arn:${AWS::Partition}:s3:::${AWS::StackName}-${AWS::AccountId}-${AWS::Region}/raw/*",
            "Action: \"*\"\n              Resource:\n                - !Sub arn:${AWS::Partition}:s3:::${AWS::StackName}-${AWS::AccountId}-${AWS::Region}/raw/*",
            "Action *",
        ),
        (
            "Resource:\n                - !Sub arn:${AWS::Partition}:s3:::${AWS::StackName}-${AWS::AccountId}-${AWS::Region}/registry/*\n                - !Sub arn:${AWS::Partition}:s3:::${AWS::StackName}-${AWS::AccountId}-${AWS::Region}/runs/*/record.json",
            "Resource: \"*\"",
            "Resource \"*\"",
        ),
        ("/raw/*", "/*", "every object of the bucket"),
        (
            "BlockPublicPolicy: true",
            "BlockPublicPolicy: false",
            "public bucket",
        ),
        (
            "SSEAlgorithm: AES256",
            "SSEAlgorithm: none",
            "ArtifactsBucket: not encrypted",
        ),
        (
            "QueueName: !Sub ${AWS::StackName}-train-dlq\n      MessageRetentionPeriod: 1209600\n      SqsManagedSseEnabled: true",
            "QueueName: !Sub ${AWS::StackName}-train-dlq\n      MessageRetentionPeriod: 1209600\n      SqsManagedSseEnabled: false",
            "TrainDeadLetterQueue: not encrypted",
        ),
        (
            "RouteKey: POST /v2/models/{model}/feedback\n      AuthorizationType: !If [ScoreUsesIam, AWS_IAM, NONE]",
            "RouteKey: POST /v2/models/{model}/feedback\n      AuthorizationType: NONE",
            "is not IAM-authorized",
        ),
        (
            "Resource: !GetAtt PreprocessQueue.Arn",
            "Resource: !GetAtt DeployQueue.Arn",
            "not its next stage",
        ),
        (
            "                aws:SecureTransport: \"false\"",
            "                aws:SecureTransport: \"true\"",
            "without TLS",
        ),
    ];
    for (from, to, expected) in cases {
        assert!(
            TEMPLATE.contains(from),
            "the template no longer has {from:?}"
        );
        let broken = TEMPLATE.replacen(from, to, 1);
        let found = findings(&stack(&broken, &[]));
        assert!(
            found.iter().any(|f| f.contains(expected)),
            "breaking {from:?} → {to:?} should report {expected:?}: {found:#?}"
        );
    }
}

#[test]
fn every_stage_queue_dead_letters_after_the_parameter() {
    let s = stack(TEMPLATE, &[("MaxReceiveCount", "7")]);
    let queues = s.queues().unwrap();
    for stage in [
        "Ingest",
        "Preprocess",
        "Train",
        "Evaluate",
        "Deploy",
        "Batch",
    ] {
        let q = queues
            .iter()
            .find(|q| q.id == format!("{stage}Queue"))
            .unwrap();
        assert_eq!(
            q.redrive,
            Some((format!("{stage}DeadLetterQueue"), 7)),
            "{q:?}"
        );
        let consumer = s
            .functions()
            .unwrap()
            .into_iter()
            .find(|f| f.id == format!("{stage}Function"))
            .unwrap();
        assert!(
            u64::from(q.visibility_timeout) >= consumer.timeout_secs * 6,
            "{stage}: visibility {} < 6 × timeout {}",
            q.visibility_timeout,
            consumer.timeout_secs
        );
        assert_eq!(consumer.environment["LAMBDAML_MAX_RECEIVES"], "7");
    }
    let train = s
        .functions()
        .unwrap()
        .into_iter()
        .find(|f| f.binary == "train")
        .unwrap();
    let most = s
        .functions()
        .unwrap()
        .iter()
        .map(|f| f.memory_mb)
        .max()
        .unwrap();
    assert_eq!(
        (train.memory_mb, train.timeout_secs),
        (most, 900),
        "train gets the most memory and 15 minutes"
    );
}
