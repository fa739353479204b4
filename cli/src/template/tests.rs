//! Resolving the template like CloudFormation.

#![allow(clippy::unwrap_used)]
use super::*;

const TEMPLATE: &str = include_str!("../../../template.yaml");

fn stack(overrides: &[(&str, &str)]) -> Stack {
    let mut ctx = StackContext::new("lml");
    ctx.region = "eu-west-1".to_string();
    for (k, v) in overrides {
        ctx.overrides.insert(k.to_string(), v.to_string());
    }
    Stack::new(Template::parse(TEMPLATE).unwrap(), ctx).unwrap()
}

#[test]
fn the_template_resolves_to_the_pipeline() {
    let s = stack(&[]);
    let queues = s.queues().unwrap();
    let ingest = queues.iter().find(|q| q.id == "IngestQueue").unwrap();
    assert_eq!(ingest.name, "lml-ingest");
    assert_eq!(
        ingest.redrive,
        Some(("IngestDeadLetterQueue".to_string(), 5))
    );
    let buckets = s.buckets().unwrap();
    assert_eq!(buckets[0].name, "lml-123456789012-eu-west-1");
    assert_eq!(buckets[0].notifications[0].queue, "IngestQueue");
    assert_eq!(buckets[0].notifications[0].prefix, "raw/");
    let functions = s.functions().unwrap();
    let binaries: Vec<&str> = functions.iter().map(|f| f.binary.as_str()).collect();
    for b in [
        "ingest",
        "preprocess",
        "train",
        "evaluate",
        "deploy",
        "score",
        "monitor",
        "batch",
    ] {
        assert!(binaries.contains(&b), "{binaries:?}");
    }
    assert_eq!(buckets[0].notifications[1].queue, "BatchQueue");
    assert_eq!(buckets[0].notifications[1].prefix, "batch/");
    let train = functions.iter().find(|f| f.binary == "train").unwrap();
    assert_eq!((train.memory_mb, train.timeout_secs), (10240, 900));
    assert_eq!(
        train.environment["LAMBDAML_STORE"],
        "s3://lml-123456789012-eu-west-1"
    );
    assert_eq!(train.environment["LAMBDAML_QUEUES"], "sqs://lml-");
    let score = functions.iter().find(|f| f.binary == "score").unwrap();
    assert!(
        !score.environment.contains_key("LAMBDAML_MODEL"),
        "NoValue drops it"
    );
    let monitor = functions.iter().find(|f| f.binary == "monitor").unwrap();
    assert_eq!(monitor.schedules[0].expression, "rate(1 hour)");
    let sources = s.event_sources().unwrap();
    assert_eq!(sources.len(), 7);
    assert!(sources.iter().all(|e| e.report_batch_item_failures));
    let batch = sources.iter().find(|e| e.queue == "BatchQueue").unwrap();
    assert_eq!(
        batch.max_concurrency,
        Some(10),
        "BatchConcurrency's default"
    );
    assert!(sources.iter().any(|e| e.queue == "TrainQueue"));
    let parts = sources.iter().find(|e| e.queue == "MonitorQueue").unwrap();
    assert_eq!(parts.function, "MonitorFunction");
    assert_eq!(
        parts.max_concurrency,
        Some(10),
        "MonitorConcurrency's default"
    );
    assert_eq!(
        monitor.environment["LAMBDAML_MONITOR_PARTITION_MIB"], "256",
        "MonitorPartitionMiB's default"
    );
    // The resources of TrainCompute=batch are not in a stack that trains on Lambda.
    for id in ["TrainPipe", "TrainJobQueue", "TrainJobDefinition"] {
        assert!(!s.template.resources.contains_key(id), "{id}");
    }
    let routes = s.routes().unwrap();
    assert!(routes.iter().all(|r| r.authorization == "AWS_IAM"));
    assert!(
        routes
            .iter()
            .any(|r| r.method == "POST" && r.path == "/v2/models/{model}/feedback")
    );
    assert!(routes.iter().all(|r| r.function == "ScoreFunction"));
}

#[test]
fn train_compute_batch_swaps_the_train_mapping_for_a_pipe_to_aws_batch() {
    let s = stack(&[("TrainCompute", "batch"), ("TrainImage", "123.dkr.ecr/x:1")]);
    let sources = s.event_sources().unwrap();
    assert!(
        !sources.iter().any(|e| e.queue == "TrainQueue"),
        "the pipe, not the function, consumes the train queue: {sources:?}"
    );
    for id in [
        "TrainPipe",
        "TrainJobQueue",
        "TrainJobDefinition",
        "TrainComputeEnvironment",
    ] {
        assert!(s.template.resources.contains_key(id), "{id}");
    }
    let pipe = s.properties("TrainPipe").unwrap();
    assert_eq!(
        pipe["Source"],
        s.physical("TrainQueue").unwrap().attributes["Arn"].as_str()
    );
    assert_eq!(
        pipe["TargetParameters"]["BatchJobParameters"]["Parameters"]["message"],
        "$.body"
    );
    let job = s.properties("TrainJobDefinition").unwrap();
    assert_eq!(
        job["ContainerProperties"]["Command"],
        serde_json::json!(["--message-json", "Ref::message"])
    );
    assert_eq!(job["ContainerProperties"]["Image"], "123.dkr.ecr/x:1");
    let mut ctx = StackContext::new("lml");
    ctx.overrides.insert("TrainCompute".into(), "ecs".into());
    let err = Stack::new(Template::parse(TEMPLATE).unwrap(), ctx).unwrap_err();
    assert!(err.to_string().contains("TrainCompute"), "{err}");
}

#[test]
fn parameters_switch_what_they_say() {
    let s = stack(&[
        ("ScoreAuth", "NONE"),
        ("MaxReceiveCount", "2"),
        ("ScoreModel", "weather-rain"),
    ]);
    assert!(
        s.routes()
            .unwrap()
            .iter()
            .all(|r| r.authorization == "NONE")
    );
    let q = s.queues().unwrap();
    assert!(
        q.iter()
            .filter_map(|q| q.redrive.as_ref())
            .all(|(_, n)| *n == 2)
    );
    let f = s.functions().unwrap();
    let score = f.iter().find(|f| f.binary == "score").unwrap();
    assert_eq!(score.environment["LAMBDAML_MODEL"], "weather-rain");
    let mut ctx = StackContext::new("lml");
    ctx.overrides.insert("ScoreAuth".into(), "OPEN".into());
    let err = Stack::new(Template::parse(TEMPLATE).unwrap(), ctx).unwrap_err();
    assert!(err.to_string().contains("ScoreAuth"), "{err}");
    let mut ctx = StackContext::new("lml");
    ctx.overrides.insert("MaxReceiveCount".into(), "0".into());
    let err = Stack::new(Template::parse(TEMPLATE).unwrap(), ctx).unwrap_err();
    assert!(
        err.to_string()
            .contains("MaxReceiveCount=0 is outside 1..=1000"),
        "{err}"
    );
    let mut ctx = StackContext::new("lml");
    ctx.overrides.insert("ScoreAuht".into(), "NONE".into());
    let err = Stack::new(Template::parse(TEMPLATE).unwrap(), ctx).unwrap_err();
    assert!(
        err.to_string().contains("unknown parameter \"ScoreAuht\""),
        "{err}"
    );
}

#[test]
fn intrinsics_resolve_like_cloudformation() {
    let t = Template::parse(
        "Parameters:\n  P: {Type: String, Default: a}\nConditions:\n  IsA: !Equals [!Ref P, a]\nResources:\n  Q:\n    Type: AWS::SQS::Queue\n    Properties:\n      QueueName: !Join ['-', [!Ref 'AWS::StackName', !Select [1, !Split [',', 'x,y']]]]\n      Tags:\n        - {Key: k, Value: !If [IsA, !Sub '${!Literal}-${Q.Arn}', other]}\n        - !If [IsA, !Ref 'AWS::NoValue', {Key: gone}]\n      Long: {\"Fn::Sub\": [\"${X}!\", {X: !Ref P}]}\n",
    )
    .unwrap();
    let mut ctx = StackContext::new("st");
    ctx.region = "us-east-1".to_string();
    let s = Stack::new(t, ctx).unwrap();
    let p = s.properties("Q").unwrap();
    assert_eq!(p["QueueName"], "st-y");
    assert_eq!(
        p["Tags"],
        serde_json::json!([{"Key": "k", "Value": "${Literal}-arn:aws:sqs:us-east-1:123456789012:st-y"}])
    );
    assert_eq!(p["Long"], "a!");
    let bad =
        Template::parse("Resources:\n  Q:\n    Type: X\n    Properties:\n      A: !Ref Nope\n")
            .unwrap();
    let s = Stack::new(bad, StackContext::new("st")).unwrap();
    let err = s.properties("Q").unwrap_err();
    assert!(format!("{err:#}").contains("!Ref Nope"), "{err:#}");
}
