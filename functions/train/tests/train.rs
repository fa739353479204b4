//! Train, evaluate and deploy, from the outside: every family on real data, parity with
//! scikit-learn, determinism, checkpoints, the promotion rule, and the bad inputs.

#![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use lambdaml::message::{
    DeployRequest, EvaluateRequest, IngestRequest, Message, Stage, StageMessage,
};
use lambdaml::pipeline::{Wire, wire};
use lambdaml::queue::{DEPLOYMENTS, Queues, open_queues};
use lambdaml::registry::{Action, RegistryStore, VersionStatus};
use lambdaml::stage::{DrainOptions, Handled, StageError, StageHandler, drain, with_deadline};
use lambdaml::store::{MemoryStore, ObjectKey, ObjectStore};
use lambdaml_deploy::Deploy;
use lambdaml_evaluate::Evaluate;
use lambdaml_ingest::Ingest;
use lambdaml_preprocess::Preprocess;
use lambdaml_train::Train;

const BREAST_CANCER: &[u8] = include_bytes!("../../../data/sklearn_breast_cancer.csv");
const BREAST_SPEC: &str = include_str!("../../../examples/specs/breast_cancer.toml");
const IRIS: &[u8] = include_bytes!("../../../data/sklearn_iris.csv");
const DIABETES: &[u8] = include_bytes!("../../../data/sklearn_diabetes.csv");

fn key(k: &str) -> ObjectKey {
    ObjectKey::new(k).unwrap()
}

struct Env {
    store: Arc<dyn ObjectStore>,
    queues: Queues,
    _dir: tempfile::TempDir,
}

impl Env {
    async fn new() -> Env {
        let dir = tempfile::tempdir().unwrap();
        let queues = open_queues(&format!("file://{}", dir.path().display()), 3)
            .await
            .unwrap();
        Env {
            store: Arc::new(MemoryStore::new()),
            queues,
            _dir: dir,
        }
    }

    async fn handlers(&self) -> Vec<Arc<dyn StageHandler>> {
        self.handlers_with_budget(None).await
    }

    async fn handlers_with_budget(&self, budget: Option<u32>) -> Vec<Arc<dyn StageHandler>> {
        let (mut train, _) = wire::<Train>(self.store.clone(), &self.queues)
            .await
            .unwrap();
        if let Some(b) = budget {
            train = train.with_step_budget(b);
        }
        vec![
            self.one::<Ingest>().await,
            self.one::<Preprocess>().await,
            Arc::new(train),
            self.one::<Evaluate>().await,
            self.one::<Deploy>().await,
        ]
    }

    /// Handler `H` as every deployment wires it.
    async fn one<H: Wire + StageHandler + 'static>(&self) -> Arc<dyn StageHandler> {
        Arc::new(wire::<H>(self.store.clone(), &self.queues).await.unwrap().0)
    }

    async fn deploy(&self) -> Deploy {
        wire::<Deploy>(self.store.clone(), &self.queues)
            .await
            .unwrap()
            .0
    }

    /// Puts the spec and the data in the store and runs every stage to the end.
    async fn run(&self, spec: &str, dataset: &str, data: &'static [u8]) -> Vec<Handled> {
        let model = lambdaml::spec::ModelSpec::parse(spec).unwrap().model.name;
        self.store
            .put(
                &key(&format!("specs/{model}.toml")),
                Bytes::from(spec.to_string()),
            )
            .await
            .unwrap();
        let raw = key(&format!("raw/{dataset}/{model}.csv"));
        self.store
            .put(&raw, Bytes::from_static(data))
            .await
            .unwrap();
        let message = Message::new(
            "t",
            None,
            StageMessage::Ingest(IngestRequest {
                key: raw,
                dataset: None,
            }),
        );
        self.queues
            .get(Stage::Ingest)
            .await
            .unwrap()
            .send(&message.to_body())
            .await
            .unwrap();
        self.drain().await
    }

    async fn drain(&self) -> Vec<Handled> {
        drain(
            &self.queues,
            &self.handlers().await,
            &DrainOptions::default(),
            &|_| {},
        )
        .await
        .unwrap()
    }

    async fn metric(&self, model: &str, name: &str) -> f64 {
        let r = RegistryStore::new(self.store.clone())
            .get(model)
            .await
            .unwrap();
        r.production_entry().unwrap().metrics[name]
    }
}

fn spec(name: &str, dataset: &str, label: &str, task: &str, extra: &str) -> String {
    format!(
        "[model]\nname = \"{name}\"\n[dataset]\nname = \"{dataset}\"\nlabel = \"{label}\"\n[task]\nkind = \"{task}\"\n{extra}"
    )
}

fn failures(handled: &[Handled]) -> Vec<String> {
    handled
        .iter()
        .filter(|h| h.outcome != "ok")
        .map(|h| format!("{} {}: {}", h.stage, h.outcome, h.detail))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn softmax_on_iris_and_linear_regression_on_diabetes_match_sklearn() {
    let env = Env::new().await;
    // scikit-learn: train_test_split(test_size=0.2, random_state=42), StandardScaler,
    // LogisticRegression() -> accuracy 1.0, OvR AUC 1.0 on iris (120 training rows, so
    // l2 = 1/120); LinearRegression() -> R² 0.4526027629719195, RMSE 53.85344583676593 on
    // diabetes.
    let iris = spec(
        "iris",
        "iris",
        "target",
        "multiclass",
        "[train]\nfamily = \"softmax\"\nl2 = 0.008333333333333333\n[promotion]\nmetric = \"accuracy\"\n",
    );
    let handled = env.run(&iris, "iris", IRIS).await;
    assert!(failures(&handled).is_empty(), "{:?}", failures(&handled));
    assert_eq!(env.metric("iris", "accuracy").await, 1.0);
    assert!((env.metric("iris", "roc_auc").await - 1.0).abs() < 1e-9);

    let diabetes = spec(
        "diabetes",
        "diabetes",
        "target",
        "regression",
        "[train]\nfamily = \"linear\"\nl2 = 0.0\nepochs = 500\n[promotion]\nmetric = \"r2\"\n",
    );
    let handled = env.run(&diabetes, "diabetes", DIABETES).await;
    assert!(failures(&handled).is_empty(), "{:?}", failures(&handled));
    assert!((env.metric("diabetes", "r2").await - 0.452_602_762_971_919_5).abs() < 1e-3);
    assert!((env.metric("diabetes", "rmse").await - 53.853_445_836_765_93).abs() < 0.05);
}

const MLP: &str = "[train]\nfamily = \"mlp\"\nhidden = [16]\nepochs = 150\npatience = 1000\nlearning_rate = 0.01\nbatch_size = 32\ndropout = 0.1\nseed = 7\n";

async fn mlp_weights(budget: Option<u32>) -> (Vec<u8>, Vec<Handled>) {
    let env = Env::new().await;
    let spec = spec(
        "bc-mlp",
        "breast-cancer",
        "target",
        "binary",
        &format!(
            "[dataset.columns.target]\ntype = \"categorical\"\nvalues = [\"0\", \"1\"]\n{MLP}"
        ),
    );
    let model = "bc-mlp";
    env.store
        .put(&key(&format!("specs/{model}.toml")), Bytes::from(spec))
        .await
        .unwrap();
    let raw = key("raw/breast-cancer/bc.csv");
    env.store
        .put(&raw, Bytes::from_static(BREAST_CANCER))
        .await
        .unwrap();
    let message = Message::new(
        "t",
        None,
        StageMessage::Ingest(IngestRequest {
            key: raw,
            dataset: None,
        }),
    );
    env.queues
        .get(Stage::Ingest)
        .await
        .unwrap()
        .send(&message.to_body())
        .await
        .unwrap();
    // Each invocation may run `budget` epochs, then checkpoints and re-queues itself.
    let handlers = env.handlers_with_budget(budget).await;
    let handled = drain(&env.queues, &handlers, &DrainOptions::default(), &|_| {})
        .await
        .unwrap();
    let registry = RegistryStore::new(env.store.clone())
        .get(model)
        .await
        .unwrap();
    let entry = registry.production_entry().unwrap();
    let weights = env
        .store
        .get(&key(&format!(
            "models/{model}/{}/model.safetensors",
            entry.version
        )))
        .await
        .unwrap();
    assert!(entry.metrics["roc_auc"] > 0.98, "{:?}", entry.metrics);
    (weights.bytes.to_vec(), handled)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mlp_is_deterministic_and_resumes_from_a_checkpoint_exactly() {
    let (first, _) = mlp_weights(None).await;
    let (second, _) = mlp_weights(None).await;
    assert_eq!(first, second, "same data and seed, same weights");
    let (resumed, handled) = mlp_weights(Some(40)).await;
    let checkpointed = handled
        .iter()
        .filter(|h| h.stage == Stage::Train && h.detail["status"] == "checkpointed")
        .count();
    assert_eq!(
        checkpointed, 3,
        "150 epochs at 40 per invocation: 3 pauses, 4 invocations"
    );
    assert_eq!(
        resumed, first,
        "a run that spans invocations ends where an uninterrupted one does"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_deadline_checkpoints_instead_of_losing_the_work() {
    let env = Env::new().await;
    let s = spec("bc-deadline", "breast-cancer", "target", "binary", MLP);
    env.store
        .put(&key("specs/bc-deadline.toml"), Bytes::from(s))
        .await
        .unwrap();
    let raw = key("raw/breast-cancer/bc.csv");
    env.store
        .put(&raw, Bytes::from_static(BREAST_CANCER))
        .await
        .unwrap();
    let ingest = Message::new(
        "t",
        None,
        StageMessage::Ingest(IngestRequest {
            key: raw,
            dataset: None,
        }),
    );
    env.queues
        .get(Stage::Ingest)
        .await
        .unwrap()
        .send(&ingest.to_body())
        .await
        .unwrap();
    let handlers = env.handlers().await;
    // Ingest and preprocess only; the train message waits.
    drain(
        &env.queues,
        &handlers[..2],
        &DrainOptions::default(),
        &|_| {},
    )
    .await
    .unwrap();
    let train_queue = env.queues.get(Stage::Train).await.unwrap();
    let message = train_queue
        .receive(1, Duration::from_secs(60))
        .await
        .unwrap()
        .remove(0);
    // One invocation whose deadline is (nearly) here: train keeps a 20 s margin.
    let out = with_deadline(
        Instant::now() + Duration::from_secs(10),
        lambdaml::stage::dispatch(handlers[2].as_ref(), &message.body),
    )
    .await
    .unwrap();
    train_queue.delete(&message.receipt).await.unwrap();
    assert_eq!(out["status"], "checkpointed", "{out}");
    let checkpoints = env.store.list_all("models/bc-deadline/").await.unwrap();
    assert!(
        checkpoints
            .iter()
            .any(|m| m.key.as_str().contains("/checkpoints/")),
        "{checkpoints:?}"
    );
    // A second invocation with no time at all makes no progress either: a clear error
    // instead of re-queueing forever.
    let resume = train_queue
        .receive(1, Duration::from_secs(60))
        .await
        .unwrap()
        .remove(0);
    let err = with_deadline(
        Instant::now(),
        lambdaml::stage::dispatch(handlers[2].as_ref(), &resume.body),
    )
    .await
    .unwrap_err();
    assert!(err.reason().contains("timeout leaves no time"), "{err}");
    train_queue
        .release(&resume.receipt, "retry", Duration::ZERO)
        .await
        .unwrap();
    // A fresh invocation with time resumes from the checkpoint and finishes the job.
    let handled = env.drain().await;
    assert!(
        handled
            .iter()
            .any(|h| h.stage == Stage::Deploy && h.detail["verdict"] == "promote"),
        "{handled:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn divergence_stops_with_a_clear_error_and_nothing_promotable() {
    let env = Env::new().await;
    let bad = spec(
        "bc-diverge",
        "breast-cancer",
        "target",
        "binary",
        "[train]\nfamily = \"mlp\"\nlearning_rate = 1e30\nepochs = 5\n",
    );
    let handled = env.run(&bad, "breast-cancer", BREAST_CANCER).await;
    let train = handled.iter().find(|h| h.stage == Stage::Train).unwrap();
    assert_eq!(train.outcome, "dead_letter");
    assert!(
        train.detail.as_str().unwrap().contains("diverged"),
        "{}",
        train.detail
    );
    let keys: Vec<String> = env
        .store
        .list_all("models/bc-diverge/")
        .await
        .unwrap()
        .iter()
        .map(|m| m.key.to_string())
        .collect();
    assert!(keys.iter().any(|k| k.ends_with("error.json")), "{keys:?}");
    assert!(
        !keys.iter().any(|k| k.ends_with("manifest.json")),
        "{keys:?}"
    );
    assert!(
        RegistryStore::new(env.store.clone())
            .load("bc-diverge")
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_training_split_with_one_class_is_refused() {
    let env = Env::new().await;
    // The first 80 % of rows (the time split's training part) are all class 0.
    let mut csv = String::from("x,y\n");
    for i in 0..40 {
        csv.push_str(&format!("{i},{}\n", if i < 32 { 0 } else { 1 }));
    }
    let data: &'static [u8] = Box::leak(csv.into_bytes().into_boxed_slice());
    let one = spec("one", "one", "y", "binary", "[split]\nmethod = \"time\"\n");
    let handled = env.run(&one, "one", data).await;
    let train = handled.iter().find(|h| h.stage == Stage::Train).unwrap();
    assert_eq!(train.outcome, "dead_letter");
    assert!(
        train.detail.as_str().unwrap().contains("1 class"),
        "{}",
        train.detail
    );
}

#[tokio::test]
async fn a_regression_label_that_is_not_a_number_is_refused_whole() {
    let env = Env::new().await;
    let reg = spec(
        "reg",
        "reg",
        "y",
        "regression",
        "[train]\nfamily = \"linear\"\n[promotion]\nmetric = \"rmse\"\n",
    );
    let handled = env.run(&reg, "reg", b"x,y\n1,high\n2,low\n").await;
    assert_eq!(handled[0].outcome, "dead_letter");
    assert!(
        handled[0]
            .detail
            .as_str()
            .unwrap()
            .contains("cannot read \\\"high\\\" as a number")
            || handled[0].detail.as_str().unwrap().contains("as a number"),
        "{}",
        handled[0].detail
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupted_weights_unknown_versions_and_a_corrupt_registry_are_clear_errors() {
    let env = Env::new().await;
    let handled = env.run(BREAST_SPEC, "breast-cancer", BREAST_CANCER).await;
    assert!(failures(&handled).is_empty(), "{:?}", failures(&handled));
    let registry = RegistryStore::new(env.store.clone())
        .get("breast-cancer")
        .await
        .unwrap();
    let version = registry.production.clone().unwrap();
    let evaluate = Evaluate::new(
        env.store.clone(),
        env.queues.get(Stage::Deploy).await.unwrap(),
    );

    // A version that does not exist.
    let err = evaluate
        .evaluate(&EvaluateRequest {
            model: "breast-cancer".into(),
            version: "nope".into(),
            spec: None,
        })
        .await
        .unwrap_err();
    assert!(err.reason().contains("has no version nope"), "{err}");
    let err = env
        .deploy()
        .await
        .deploy(&DeployRequest::new("breast-cancer", "nope"))
        .await
        .unwrap_err();
    assert!(matches!(err, StageError::Permanent { .. }), "{err}");

    // Truncated weights.
    let weights = key(&format!("models/breast-cancer/{version}/model.safetensors"));
    let bytes = env.store.get(&weights).await.unwrap().bytes;
    env.store
        .put(&weights, bytes.slice(..bytes.len() / 2))
        .await
        .unwrap();
    let err = Evaluate::load(env.store.as_ref(), "breast-cancer", &version)
        .await
        .unwrap_err();
    assert!(err.reason().contains("invalid model weights"), "{err}");
    env.store
        .put(&weights, Bytes::from_static(b"not safetensors at all"))
        .await
        .unwrap();
    assert!(
        Evaluate::load(env.store.as_ref(), "breast-cancer", &version)
            .await
            .is_err()
    );

    // A corrupt registry is reported and left exactly as it is.
    let reg_key = key("registry/breast-cancer.json");
    env.store
        .put(&reg_key, Bytes::from_static(b"{\"model\": truncated"))
        .await
        .unwrap();
    let err = env
        .deploy()
        .await
        .manual(Action::Rollback, "breast-cancer", None, "test", "x")
        .await
        .unwrap_err();
    assert!(err.reason().contains("corrupt"), "{err}");
    assert_eq!(
        &env.store.get(&reg_key).await.unwrap().bytes[..],
        b"{\"model\": truncated"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worse_challenger_is_refused_and_rollback_restores_the_champion() {
    let env = Env::new().await;
    let handled = env.run(BREAST_SPEC, "breast-cancer", BREAST_CANCER).await;
    assert!(failures(&handled).is_empty(), "{:?}", failures(&handled));
    let champion = RegistryStore::new(env.store.clone())
        .get("breast-cancer")
        .await
        .unwrap()
        .production
        .unwrap();
    // The same model on one weak feature: evaluated against the champion on the same rows.
    let worse = BREAST_SPEC.replace(
        "[split]",
        "[features]\ninclude = [\"mean fractal dimension\"]\n\n[split]",
    );
    let handled = env.run(&worse, "breast-cancer", BREAST_CANCER).await;
    let decision = handled
        .iter()
        .rev()
        .find(|h| h.stage == Stage::Deploy)
        .unwrap();
    assert_eq!(decision.detail["verdict"], "reject", "{}", decision.detail);
    assert!(
        decision.detail["reason"]
            .as_str()
            .unwrap()
            .contains(&champion),
        "{}",
        decision.detail
    );
    let registry = RegistryStore::new(env.store.clone())
        .get("breast-cancer")
        .await
        .unwrap();
    assert_eq!(registry.production.as_deref(), Some(champion.as_str()));
    let challenger = registry
        .versions
        .values()
        .find(|v| v.version != champion)
        .unwrap()
        .version
        .clone();
    assert_eq!(
        registry.versions[&challenger].status,
        VersionStatus::Rejected
    );

    // An operator forces it live anyway, then rolls back.
    let deploy = env.deploy().await;
    let err = deploy
        .manual(Action::Rollback, "breast-cancer", None, "cli:test", "oops")
        .await
        .unwrap_err();
    assert!(
        err.reason().contains("replaced no earlier version"),
        "{err}"
    );
    deploy
        .manual(
            Action::Promote,
            "breast-cancer",
            Some(&challenger),
            "cli:test",
            "override",
        )
        .await
        .unwrap();
    let after = deploy
        .manual(
            Action::Rollback,
            "breast-cancer",
            None,
            "cli:test",
            "bad call",
        )
        .await
        .unwrap();
    assert_eq!(after.production.as_deref(), Some(champion.as_str()));
    let actions: Vec<Action> = after.history.iter().map(|h| h.action).collect();
    assert_eq!(
        actions,
        vec![
            Action::Register,
            Action::Promote,
            Action::Register,
            Action::Reject,
            Action::Promote,
            Action::Rollback
        ]
    );
    // Every change was announced.
    let events = env
        .queues
        .named(DEPLOYMENTS)
        .await
        .unwrap()
        .receive(10, Duration::from_secs(5))
        .await
        .unwrap();
    let names: Vec<String> = events
        .iter()
        .map(|e| {
            serde_json::from_str::<serde_json::Value>(&e.body).unwrap()["event"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(
        names,
        [
            "registered",
            "promoted",
            "registered",
            "rejected",
            "promoted",
            "rolled_back"
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manual_approval_leaves_the_version_pending_until_approved() {
    let env = Env::new().await;
    let gated = BREAST_SPEC.replace(
        "metric = \"roc_auc\"",
        "metric = \"roc_auc\"\nmanual_approval = true",
    );
    let handled = env.run(&gated, "breast-cancer", BREAST_CANCER).await;
    let decision = handled
        .iter()
        .rev()
        .find(|h| h.stage == Stage::Deploy)
        .unwrap();
    assert_eq!(decision.detail["verdict"], "pending");
    let registry = RegistryStore::new(env.store.clone())
        .get("breast-cancer")
        .await
        .unwrap();
    assert!(registry.production.is_none());
    let version = registry.versions.keys().next().unwrap().clone();
    let after = env
        .deploy()
        .await
        .manual(
            Action::Pending,
            "breast-cancer",
            Some(&version),
            "cli:alice",
            "approved",
        )
        .await
        .unwrap();
    assert_eq!(after.production.as_deref(), Some(version.as_str()));
    assert_eq!(after.history.last().unwrap().actor, "cli:alice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn train_evaluate_and_deploy_answer_their_sample_events() {
    use lambdaml::stage::handle_lambda_event;
    let env = Env::new().await;
    let handled = env.run(BREAST_SPEC, "breast-cancer", BREAST_CANCER).await;
    assert!(failures(&handled).is_empty(), "{:?}", failures(&handled));
    let handlers = env.handlers().await;
    let event = |text: &str| serde_json::from_str::<serde_json::Value>(text).unwrap();

    // The sample events name the real run and version of the bundled data and spec.
    let out = handle_lambda_event(
        handlers[2].as_ref(),
        event(include_str!("../../../events/train-direct.json")),
        None,
    )
    .await
    .unwrap();
    assert_eq!(
        out["status"], "exists",
        "events/train-direct.json is stale: {out}"
    );
    let out = handle_lambda_event(
        handlers[2].as_ref(),
        event(include_str!("../../../events/train-sqs.json")),
        None,
    )
    .await
    .unwrap();
    assert_eq!(
        out,
        serde_json::json!({"batchItemFailures": [{"itemIdentifier": "train-msg-2"}]})
    );

    let out = handle_lambda_event(
        handlers[3].as_ref(),
        event(include_str!("../../../events/evaluate-direct.json")),
        None,
    )
    .await
    .unwrap();
    assert_eq!(out["holdout_rows"], 114);
    let out = handle_lambda_event(
        handlers[3].as_ref(),
        event(include_str!("../../../events/evaluate-sqs.json")),
        None,
    )
    .await
    .unwrap();
    assert_eq!(
        out,
        serde_json::json!({"batchItemFailures": [{"itemIdentifier": "evaluate-msg-2"}]}),
        "an unknown version fails alone"
    );

    let out = handle_lambda_event(
        handlers[4].as_ref(),
        event(include_str!("../../../events/deploy-direct.json")),
        None,
    )
    .await
    .unwrap();
    assert_eq!(
        (out["verdict"].as_str(), out["changed"].as_bool()),
        (Some("promote"), Some(false))
    );
    let out = handle_lambda_event(
        handlers[4].as_ref(),
        event(include_str!("../../../events/deploy-sqs.json")),
        None,
    )
    .await
    .unwrap();
    assert_eq!(out, serde_json::json!({"batchItemFailures": []}));
    // Nothing to roll back to yet: a clear error, not a crash.
    let deploy = env.deploy().await;
    let err = lambdaml_deploy::direct_change(
        &deploy,
        &event(include_str!("../../../events/deploy-rollback.json")),
    )
    .await
    .unwrap()
    .unwrap_err();
    assert!(
        err.reason().contains("replaced no earlier version"),
        "{err}"
    );
}

/// Two candidates evaluated against the same champion: the rule passes both, but only the
/// first to reach the registry is promoted — the second's comparison is stale once
/// production has moved, so it waits for a person instead (the check runs inside the
/// registry's compare-and-swap).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_candidates_evaluated_against_one_champion_are_not_both_promoted() {
    use lambdaml::store::ObjectStoreExt;
    let env = Env::new().await;
    let handled = env.run(BREAST_SPEC, "breast-cancer", BREAST_CANCER).await;
    assert!(failures(&handled).is_empty(), "{:?}", failures(&handled));
    let registry = RegistryStore::new(env.store.clone());
    let champion = registry.get("breast-cancer").await.unwrap();
    let a = champion.production.clone().unwrap();
    let entry = champion.versions[&a].clone();
    let evaluation: lambdaml_evaluate::Evaluation = env
        .store
        .get_json(&key(&format!("models/breast-cancer/{a}/evaluation.json")))
        .await
        .unwrap();
    // Two challengers, each evaluated while A was production and each better than A on
    // the same rows (A's own metrics, made slightly worse, stand in as the champion's).
    let mut worse = evaluation.metrics.clone();
    let lambdaml::metrics::Metrics::Classification(m) = &mut worse else {
        panic!("breast cancer is a classification");
    };
    m.accuracy -= 0.05;
    if let Some(auc) = m.roc_auc.as_mut() {
        *auc -= 0.05;
    }
    for v in ["challenger-b", "challenger-c"] {
        let mut e = evaluation.clone();
        e.version = v.to_string();
        e.champion = Some(lambdaml_evaluate::Scored {
            version: a.clone(),
            metrics: worse.clone(),
        });
        e.against = Some(lambdaml_evaluate::Against {
            production: Some(a.clone()),
        });
        env.store
            .put(
                &key(&format!("models/breast-cancer/{v}/evaluation.json")),
                Bytes::from(serde_json::to_vec(&e).unwrap()),
            )
            .await
            .unwrap();
        registry
            .update("breast-cancer", |r| {
                let mut x = entry.clone();
                x.version = v.to_string();
                r.register(x, "test");
                Ok(())
            })
            .await
            .unwrap();
    }
    let deploy = env.deploy().await;
    let request = |v: &str| DeployRequest::new("breast-cancer", v);
    let (rb, rc) = (request("challenger-b"), request("challenger-c"));
    let (b, c) = tokio::join!(deploy.deploy(&rb), deploy.deploy(&rc));
    let (b, c) = (b.unwrap(), c.unwrap());
    let after = registry.get("breast-cancer").await.unwrap();
    let promoted: Vec<&str> = [&b, &c]
        .iter()
        .filter(|d| d.verdict == lambdaml_deploy::Verdict::Promote)
        .map(|d| d.version.as_str())
        .collect();
    assert_eq!(promoted.len(), 1, "exactly one promoted: {b:?} {c:?}");
    assert_eq!(after.production.as_deref(), Some(promoted[0]));
    let other = [&b, &c]
        .into_iter()
        .find(|d| d.verdict != lambdaml_deploy::Verdict::Promote)
        .unwrap();
    assert_eq!(
        other.verdict,
        lambdaml_deploy::Verdict::Pending,
        "{other:?}"
    );
    assert!(other.reason.contains("stale"), "{}", other.reason);
    assert_eq!(
        after.versions[&other.version].status,
        VersionStatus::PendingApproval
    );
    // A redelivery of either message changes nothing and reports the recorded decision.
    let again = deploy.deploy(&request(&other.version)).await.unwrap();
    assert!(!again.changed);
    assert_eq!(again.verdict, lambdaml_deploy::Verdict::Pending);
    assert_eq!(
        registry.get("breast-cancer").await.unwrap().production,
        after.production
    );
}

/// `promotion.rule = "bootstrap"`: a retrained version that is the champion within the noise
/// of 114 holdout rows is promoted (the threshold rule with a margin refuses it on its point
/// estimate), and a clearly worse one is refused, each with the paired interval in its
/// reason and the comparison in `evaluation.json`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bootstrap_rule_decides_on_the_interval_not_the_point_estimate() {
    let env = Env::new().await;
    let handled = env.run(BREAST_SPEC, "breast-cancer", BREAST_CANCER).await;
    assert!(failures(&handled).is_empty(), "{:?}", failures(&handled));
    let decision = |handled: &[Handled]| {
        handled
            .iter()
            .rev()
            .find(|h| h.stage == Stage::Deploy)
            .unwrap()
            .detail
            .clone()
    };
    // A [train] change: a new version, the same model within the noise.
    let retrained = |tolerance: &str, promotion: &str| {
        BREAST_SPEC
            .replace("tolerance = 1e-6", &format!("tolerance = {tolerance}"))
            .replace("[promotion]\n", &format!("[promotion]\n{promotion}\n"))
    };
    let strict = retrained("1e-7", "min_improvement = 0.005");
    let d = decision(&env.run(&strict, "breast-cancer", BREAST_CANCER).await);
    assert_eq!(d["verdict"], "reject", "threshold: {d}");
    let noise = retrained("1e-8", "rule = \"bootstrap\"\nmargin = 0.01");
    let d = decision(&env.run(&noise, "breast-cancer", BREAST_CANCER).await);
    assert_eq!(d["verdict"], "promote", "bootstrap: {d}");
    let reason = d["reason"].as_str().unwrap();
    assert!(
        reason.contains("95 % interval") && reason.contains("114 rows"),
        "{reason}"
    );
    let version = d["version"].as_str().unwrap();
    let evaluation: serde_json::Value = serde_json::from_slice(
        &env.store
            .get(&key(&format!(
                "models/breast-cancer/{version}/evaluation.json"
            )))
            .await
            .unwrap()
            .bytes,
    )
    .unwrap();
    let c = &evaluation["comparison"];
    assert_eq!(c["metric"], "roc_auc", "{evaluation}");
    assert_eq!(c["rows"], 114);
    let (lo, diff, hi) = (
        c["lower"].as_f64().unwrap(),
        c["difference"].as_f64().unwrap(),
        c["upper"].as_f64().unwrap(),
    );
    assert!(lo <= diff && diff <= hi && lo >= -0.01, "{c}");
    // One weak feature: worse beyond the margin.
    let worse = BREAST_SPEC
        .replace(
            "[split]",
            "[features]\ninclude = [\"mean fractal dimension\"]\n\n[split]",
        )
        .replace("[promotion]\n", "[promotion]\nrule = \"bootstrap\"\n");
    let d = decision(&env.run(&worse, "breast-cancer", BREAST_CANCER).await);
    assert_eq!(d["verdict"], "reject", "{d}");
    assert!(
        d["reason"]
            .as_str()
            .unwrap()
            .contains("worse by more than the margin"),
        "{d}"
    );
}

/// `train.refit = "all"`: the version serves weights fitted again on the training split and
/// the holdout, and carries the split fit's evaluation — the same metrics the same spec
/// without the refit gets.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refit_all_serves_the_whole_window_and_keeps_the_split_fits_evaluation() {
    let env = Env::new().await;
    let handled = env.run(BREAST_SPEC, "breast-cancer", BREAST_CANCER).await;
    assert!(failures(&handled).is_empty(), "{:?}", failures(&handled));
    let refit_spec = BREAST_SPEC.replace("tolerance = 1e-6", "tolerance = 1e-6\nrefit = \"all\"");
    let handled = env.run(&refit_spec, "breast-cancer", BREAST_CANCER).await;
    assert!(failures(&handled).is_empty(), "{:?}", failures(&handled));
    let versions = |h: &[Handled]| -> String {
        h.iter()
            .rev()
            .find(|h| h.stage == Stage::Train)
            .unwrap()
            .detail["version"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let refit = versions(&handled);
    let json = |k: String| {
        let env = &env;
        async move {
            serde_json::from_slice::<serde_json::Value>(
                &env.store.get(&key(&k)).await.unwrap().bytes,
            )
            .unwrap()
        }
    };
    let manifest = json(format!("models/breast-cancer/{refit}/manifest.json")).await;
    assert_eq!(manifest["training"]["refit_rows"], 569, "{manifest}");
    assert_eq!(manifest["training"]["rows"], 455);
    let (served, evaluated) = (
        manifest["artifacts"]["weights"]
            .as_str()
            .unwrap()
            .to_string(),
        manifest["artifacts"]["evaluated_weights"]
            .as_str()
            .unwrap()
            .to_string(),
    );
    let bytes = |k: String| {
        let env = &env;
        async move { env.store.get(&key(&k)).await.unwrap().bytes }
    };
    assert_ne!(
        bytes(served).await,
        bytes(evaluated).await,
        "the refit saw more rows"
    );
    // The evaluation is the split fit's: equal to the first version's, trained the same way.
    let registry = RegistryStore::new(env.store.clone())
        .get("breast-cancer")
        .await
        .unwrap();
    let first = registry
        .versions
        .values()
        .find(|v| v.version != refit)
        .unwrap()
        .version
        .clone();
    let a = json(format!("models/breast-cancer/{first}/evaluation.json")).await;
    let b = json(format!("models/breast-cancer/{refit}/evaluation.json")).await;
    assert_eq!(a["metrics"], b["metrics"]);
    // A spec that does not say keeps its version id (the default is left out of the key).
    let split = lambdaml::spec::ModelSpec::parse(BREAST_SPEC).unwrap();
    let said = lambdaml::spec::ModelSpec::parse(
        &BREAST_SPEC.replace("tolerance = 1e-6", "tolerance = 1e-6\nrefit = \"split\""),
    )
    .unwrap();
    assert_eq!(split.train_key(), said.train_key());
}

/// The train binary as a plain process (AWS Batch, ECS Fargate): a message given on the
/// command line, a deadline that makes it checkpoint and re-queue, then `--queue` resuming
/// from the checkpoint to the end; bad messages and command lines refused with their exit
/// status.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_train_binary_runs_a_message_as_a_process_and_resumes_from_its_checkpoint() {
    use lambdaml::store::FileStore;
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn ObjectStore> = Arc::new(FileStore::open(dir.path().join("store")).unwrap());
    let queues_url = format!("file://{}", dir.path().join("queues").display());
    let queues = open_queues(&queues_url, 3).await.unwrap();
    store
        .put(
            &key("specs/breast-cancer.toml"),
            Bytes::from_static(BREAST_SPEC.as_bytes()),
        )
        .await
        .unwrap();
    let raw = key("raw/breast-cancer/data.csv");
    store
        .put(&raw, Bytes::from_static(BREAST_CANCER))
        .await
        .unwrap();
    let message = Message::new(
        "p",
        None,
        StageMessage::Ingest(IngestRequest {
            key: raw,
            dataset: None,
        }),
    );
    queues
        .get(Stage::Ingest)
        .await
        .unwrap()
        .send(&message.to_body())
        .await
        .unwrap();
    // Ingest and preprocess here; the train message is left for the process.
    let upstream: Vec<Arc<dyn StageHandler>> = vec![
        Arc::new(wire::<Ingest>(store.clone(), &queues).await.unwrap().0),
        Arc::new(wire::<Preprocess>(store.clone(), &queues).await.unwrap().0),
    ];
    drain(&queues, &upstream, &DrainOptions::default(), &|_| {})
        .await
        .unwrap();
    let train_queue = queues.get(Stage::Train).await.unwrap();
    let received = train_queue
        .receive(1, Duration::from_secs(60))
        .await
        .unwrap();
    let body = received[0].body.clone();
    train_queue.delete(&received[0].receipt).await.unwrap();
    let run = |args: &[&str], env: &[(&str, &str)]| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_train"));
        cmd.args(args)
            .env(
                "LAMBDAML_STORE",
                format!("file://{}", dir.path().join("store").display()),
            )
            .env("LAMBDAML_QUEUES", &queues_url)
            .env("LAMBDAML_MAX_RECEIVES", "3")
            .env_remove("AWS_LAMBDA_RUNTIME_API")
            .env_remove("LAMBDAML_MESSAGE")
            .env_remove("LAMBDAML_DEADLINE_SECS");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = cmd.output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        (
            out.status.code(),
            stdout,
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    // A deadline already here: one step, a checkpoint, the continuation on the train queue.
    let (code, stdout, stderr) = run(&["--message-json", &body, "--deadline-secs", "0"], &[]);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    let answer: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(answer["status"], "checkpointed", "{answer}");
    let version = answer["version"].as_str().unwrap().to_string();
    assert_eq!(train_queue.stats().await.unwrap().visible, 1);
    // The queue mode resumes from the checkpoint and finishes: the version, and evaluate's
    // message.
    let (code, stdout, stderr) = run(&["--queue"], &[]);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    let answer: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(answer, serde_json::json!({"handled": 1, "failed": 0}));
    assert!(
        store
            .head(&key(&format!(
                "models/breast-cancer/{version}/manifest.json"
            )))
            .await
            .unwrap()
            .is_some()
    );
    assert_eq!(
        queues
            .get(Stage::Evaluate)
            .await
            .unwrap()
            .stats()
            .await
            .unwrap()
            .visible,
        1
    );
    // The same message again (LAMBDAML_MESSAGE, as a job's environment may give it): the
    // version exists, nothing is trained.
    let (code, stdout, _) = run(&[], &[("LAMBDAML_MESSAGE", &body)]);
    assert_eq!(code, Some(0));
    assert!(stdout.contains("\"exists\""), "{stdout}");
    // Refused for good (exit 1): a run that does not exist, a message that is not JSON.
    let (code, stdout, _) = run(
        &[
            "--message-json",
            r#"{"run_manifest": "runs/none/manifest.json"}"#,
        ],
        &[],
    );
    assert_eq!(code, Some(1), "{stdout}");
    assert!(stdout.contains("\"retryable\":false"), "{stdout}");
    let (code, _, _) = run(&["--message-json", "not json"], &[]);
    assert_eq!(code, Some(1));
    // A bad command line (exit 64).
    let (code, _, stderr) = run(&["--mesage", "x"], &[]);
    assert_eq!(code, Some(64));
    assert!(stderr.contains("unknown argument"), "{stderr}");
}
