//! `lambdaml backtest` as a user runs it: bad input refused before anything runs, a fresh
//! store folder by default (the default store untouched), labels withheld so only the
//! estimates and drift can act, and the references on the same rows.

#![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

use crate::bin::{lambdaml, ok};

const WEATHER: &str = include_str!("../../../data/weather_noaa.csv");
const SPEC: &str = include_str!("../../../examples/specs/weather.toml");

/// The weather stream's first `rows` days, and the spec, written into `dir`.
fn files(dir: &Path, rows: usize) {
    let text: String = WEATHER
        .lines()
        .take(rows + 1)
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(dir.join("weather.csv"), text).unwrap();
    std::fs::write(dir.join("weather.toml"), SPEC).unwrap();
}

/// `lambdaml --json backtest ARGS…` in `dir` with no --store (the default rule).
fn backtest_default(dir: &Path, args: &[&str]) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_lambdaml"))
        .current_dir(dir)
        .env("RAYON_NUM_THREADS", "1")
        .env_remove("LAMBDAML_STORE")
        .args(["--json", "backtest"])
        .args(args)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.lines().last().unwrap()).unwrap()
}

#[test]
fn a_backtest_refuses_bad_input_before_it_runs() {
    let dir = tempfile::tempdir().unwrap();
    files(dir.path(), 1200);
    let base = [
        "backtest",
        "weather.csv",
        "--spec",
        "weather.toml",
        "--initial",
        "800",
        "--period",
        "200",
    ];
    let fails = |extra: &[&str], spec: Option<&str>, wanted: &str| {
        if let Some(s) = spec {
            std::fs::write(dir.path().join("bad.toml"), s).unwrap();
        }
        let mut args: Vec<&str> = base.to_vec();
        if spec.is_some() {
            args[3] = "bad.toml";
        }
        if extra.first() == Some(&"--period") {
            args.truncate(6);
        }
        args.extend_from_slice(extra);
        let (success, stdout, stderr) = lambdaml(dir.path(), &args);
        assert!(!success, "{args:?} should fail: {stdout}");
        assert!(
            stdout.contains(wanted) || stderr.contains(wanted),
            "{args:?}: wanted {wanted:?} in {stdout}{stderr}"
        );
    };
    fails(
        &[],
        Some(&SPEC.replace("label = \"rain\"", "label = \"rainfall\"")),
        "no column \\\"rainfall\\\"",
    );
    fails(&["--order-by", "dayz"], None, "--order-by \\\"dayz\\\"");
    fails(&["--period", "5000"], None, "longer than the stream");
    fails(&["--period-time", "7 weeks"], None, "--period-time");
    fails(&["--period-time", "200000000000d"], None, "too long");
    fails(
        &["--period-time", "100000000d"],
        None,
        "past the calendar's end",
    );
    fails(
        &[],
        Some(&SPEC.replace("performance_drop = 0.05", "performance_dorp = 0.05")),
        "performance_dorp",
    );
    // Nothing was created by any of them.
    assert!(!dir.path().join("store").exists());
    assert!(!dir.path().join("lambdaml-backtest").exists());
}

#[test]
fn a_backtest_with_labels_withheld_runs_in_a_fresh_folder_against_its_references() {
    let dir = tempfile::tempdir().unwrap();
    files(dir.path(), 2100);
    let r = backtest_default(
        dir.path(),
        &[
            "weather.csv",
            "--spec",
            "weather.toml",
            "--initial",
            "1000",
            "--period",
            "300",
            "--period-time",
            "365d",
            "--labels-delay",
            "100",
        ],
    );
    // A fresh folder, the default store untouched.
    let store = r["store"].as_str().unwrap();
    assert!(
        store.contains("/lambdaml-backtest/weather-rain-"),
        "{store}"
    );
    assert!(!dir.path().join(".lambdaml").exists());
    assert!(Path::new(r["html"].as_str().unwrap()).exists());
    let html = std::fs::read_to_string(r["html"].as_str().unwrap()).unwrap();
    assert!(html.contains("<svg") && html.contains("Backtest of weather-rain"));
    assert_eq!(r["periods"], 4);
    assert_eq!(r["metric"], "accuracy");
    let lines = r["lines"].as_array().unwrap();
    assert_eq!(lines.len(), 4);
    assert_eq!(lines[3]["rows"], 200, "the last period is what is left");
    for l in lines {
        assert_eq!(l["labelled"], 0, "labels withheld: {l}");
        assert!(l["realized"].is_null());
        let est = l["estimated"].as_f64().expect("estimated without labels");
        assert!((0.5..1.0).contains(&est), "{l}");
        let acc = l["metric"].as_f64().unwrap();
        assert!((0.5..1.0).contains(&acc), "{l}");
        for k in l["kinds"].as_array().unwrap() {
            assert_ne!(k, "performance", "no labels, no realized breach: {l}");
        }
    }
    for t in [
        "monitored",
        "never_retrained",
        "every_period",
        "persistence",
    ] {
        let mean = r[t]["mean"].as_f64().unwrap();
        assert!((0.5..1.0).contains(&mean), "{t}: {}", r[t]);
        assert!(r[t]["kappa_temporal"].is_number(), "{t}");
    }
    assert_eq!(r["every_period"]["retrains"], 4);
    assert_eq!(r["persistence"]["kappa_temporal"], 0.0);
}

#[test]
fn a_backtest_in_a_named_store_joins_labels_and_matches_its_own_scoring() {
    let dir = tempfile::tempdir().unwrap();
    // The first 1,800 days, shuffled out of order with their day number in a column the
    // model does not take: --order-by puts them back.
    let mut lines: Vec<String> = WEATHER
        .lines()
        .skip(1)
        .take(1800)
        .enumerate()
        .map(|(i, l)| format!("{l},{i}"))
        .collect();
    lines.reverse();
    lines.swap(3, 900);
    let header = format!("{},day\n", WEATHER.lines().next().unwrap());
    let body: String = lines.iter().map(|l| format!("{l}\n")).collect();
    std::fs::write(dir.path().join("weather.csv"), header + &body).unwrap();
    std::fs::write(
        dir.path().join("weather.toml"),
        SPEC.replace("exclude = []", "exclude = [\"day\"]"),
    )
    .unwrap();
    let r = ok(
        dir.path(),
        &[
            "backtest",
            "weather.csv",
            "--spec",
            "weather.toml",
            "--initial",
            "1000",
            "--period",
            "400",
            "--period-time",
            "365d",
            "--order-by",
            "day",
        ],
    );
    assert_eq!(r["store"], "file://store");
    assert!(dir.path().join("store/registry").exists() || dir.path().join("store").exists());
    for l in r["lines"].as_array().unwrap() {
        // Labels at each period's end: the monitor's realized accuracy is the line's own.
        let (acc, realized) = (
            l["metric"].as_f64().unwrap(),
            l["realized"].as_f64().unwrap(),
        );
        assert!((acc - realized).abs() < 1e-9, "{l}");
        assert_eq!(l["labelled"], l["rows"]);
    }
    // The never-retrained reference served by the first version equals the loop's first
    // period (the same version on the same rows).
    let first = &r["lines"][0];
    assert!((first["metric"].as_f64().unwrap() - first["never"].as_f64().unwrap()).abs() < 1e-12);
}
