//! The spec's parsing, defaults and validation.

use super::*;

const MINIMAL: &str = r#"
[model]
name = "weather-rain"
[dataset]
name = "weather"
label = "rain"
[task]
kind = "binary"
"#;

#[test]
fn a_minimal_spec_gets_the_documented_defaults() {
    let spec = ModelSpec::parse(MINIMAL).unwrap();
    assert_eq!(spec.split.holdout, 0.2);
    assert_eq!(spec.split.seed, 42);
    assert_eq!(spec.train.family, Family::Logistic);
    assert_eq!(spec.optimizer(), Optimizer::Lbfgs);
    assert_eq!(spec.monitor.drift_share, 0.5);
    assert!(spec.is_feature("temperature"));
    assert!(!spec.is_feature("rain"));
}

#[test]
fn the_family_and_metric_left_out_follow_the_task() {
    let regression = ModelSpec::parse(&MINIMAL.replace("binary", "regression")).unwrap();
    assert_eq!(regression.train.family, Family::Linear);
    assert_eq!(regression.promotion.metric, "rmse");
    let multiclass = ModelSpec::parse(&MINIMAL.replace("binary", "multiclass")).unwrap();
    assert_eq!(multiclass.train.family, Family::Softmax);
    // What a spec says is kept, and still checked against the task.
    let mlp = format!("{MINIMAL}[train]\nfamily = \"mlp\"\n[promotion]\nmetric = \"accuracy\"\n");
    let mlp = ModelSpec::parse(&mlp).unwrap();
    assert_eq!(
        (mlp.train.family, mlp.promotion.metric.as_str()),
        (Family::Mlp, "accuracy")
    );
    let wrong = format!(
        "{}[train]\nfamily = \"logistic\"\n",
        MINIMAL.replace("binary", "regression")
    );
    let err = ModelSpec::parse(&wrong).unwrap_err().to_string();
    assert!(err.contains("train.family"), "{err}");
}

#[test]
fn ddm_watches_classifiers_only() {
    let regression = format!(
        "{}[monitor]\ntrigger = \"ddm\"\n",
        MINIMAL.replace("binary", "regression")
    );
    match ModelSpec::parse(&regression) {
        Err(SpecError::Invalid { key, reason }) => {
            assert_eq!(key, "monitor.trigger");
            assert!(reason.contains("adwin"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    let adwin = format!(
        "{}[monitor]\ntrigger = \"adwin\"\n",
        MINIMAL.replace("binary", "regression")
    );
    assert_eq!(
        ModelSpec::parse(&adwin).unwrap().monitor.trigger,
        Trigger::Adwin
    );
}

#[test]
fn the_bundled_example_specs_parse() {
    for text in [
        include_str!("../../../../examples/specs/weather.toml"),
        include_str!("../../../../examples/specs/breast_cancer.toml"),
    ] {
        ModelSpec::parse(text).unwrap();
    }
}

#[test]
fn unknown_keys_are_errors_naming_the_key() {
    let err = ModelSpec::parse(&format!("{MINIMAL}\n[split]\nholdut = 0.3\n")).unwrap_err();
    assert!(err.to_string().contains("holdut"), "{err}");
    let err = ModelSpec::parse(&format!("{MINIMAL}\n[trian]\nepochs = 3\n")).unwrap_err();
    assert!(err.to_string().contains("trian"), "{err}");
}

fn invalid_key(extra: &str) -> String {
    match ModelSpec::parse(&format!("{MINIMAL}\n{extra}\n")) {
        Err(SpecError::Invalid { key, .. }) => key,
        other => panic!("expected an invalid key for {extra:?}, got {other:?}"),
    }
}

#[test]
fn out_of_range_values_name_their_key() {
    assert_eq!(invalid_key("[split]\nholdout = -0.2"), "split.holdout");
    assert_eq!(invalid_key("[split]\nholdout = 1.0"), "split.holdout");
    assert_eq!(invalid_key("[train]\nepochs = 0"), "train.epochs");
    assert_eq!(
        invalid_key("[train]\nlearning_rate = -0.1"),
        "train.learning_rate"
    );
    assert_eq!(invalid_key("[train]\nhidden = []"), "train.hidden");
    assert_eq!(invalid_key("[train]\nhidden = [16, 0]"), "train.hidden");
    assert_eq!(invalid_key("[train]\ndropout = 1.0"), "train.dropout");
    assert_eq!(invalid_key("[train]\nfamily = \"linear\""), "train.family");
    assert_eq!(
        invalid_key("[promotion]\nmetric = \"rmse\""),
        "promotion.metric"
    );
    assert_eq!(
        invalid_key("[promotion]\nmetric = \"auc\""),
        "promotion.metric"
    );
    assert_eq!(
        invalid_key("[monitor]\ndrift_share = 0"),
        "monitor.drift_share"
    );
    assert_eq!(
        invalid_key("[rollout]\nsteps = [0.5, 0.25]"),
        "rollout.steps"
    );
    assert_eq!(invalid_key("[rollout]\nsteps = []"), "rollout.steps");
    assert_eq!(
        invalid_key("[rollout]\nshadow_share = 0"),
        "rollout.shadow_share"
    );
    assert_eq!(
        invalid_key("[rollout]\nconfidence = 1.0"),
        "rollout.confidence"
    );
    assert_eq!(
        invalid_key("[rollout]\nmetric = \"rmse\""),
        "rollout.metric"
    );
    assert_eq!(invalid_key("[rollout]\nmargin = -1"), "rollout.margin");
    assert_eq!(
        invalid_key("[retrain]\ncooldown = \"soon\""),
        "retrain.cooldown"
    );
    assert_eq!(
        invalid_key("[retrain]\nmax_per_day = 0"),
        "retrain.max_per_day"
    );
    assert_eq!(
        invalid_key("[dataset.columns.x]\ntype = \"float\"\nmin = 3\nmax = 1"),
        "dataset.columns.x.min"
    );
}

#[test]
fn names_must_be_key_safe() {
    let err = ModelSpec::parse(&MINIMAL.replace("weather-rain", "../x")).unwrap_err();
    assert!(err.to_string().contains("model.name"), "{err}");
}

#[test]
fn durations_parse() {
    assert_eq!(parse_duration_secs("24h"), Some(86_400));
    assert_eq!(parse_duration_secs("30m"), Some(1800));
    assert_eq!(parse_duration_secs("7d"), Some(604_800));
    assert_eq!(parse_duration_secs("h"), None);
    assert_eq!(parse_duration_secs("5w"), None);
}
