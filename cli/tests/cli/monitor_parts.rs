//! `lambdaml monitor` over a window larger than the part size, as a user runs it: real
//! captures of the breast-cancer model (scored through the score function, then laid over
//! four capture hours) aggregated in parts by the local monitor queue give the report one
//! invocation gives; a part size that is not a number is refused before anything runs.

#![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

use crate::bin::{ok, repo, train_breast_cancer, walk};

/// `lambdaml --json monitor …` over the four hours with parts of `mib`.
fn monitor(dir: &Path, mib: &str) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_lambdaml"))
        .current_dir(dir)
        .env("RAYON_NUM_THREADS", "1")
        .env("LAMBDAML_MONITOR_PARTITION_MIB", mib)
        .args(["--store", "file://store", "--json", "monitor"])
        .args(["--model", "breast-cancer", "--no-retrain"])
        .args([
            "--from",
            "2030-01-01T00:00:00Z",
            "--to",
            "2030-01-01T04:00:00Z",
        ])
        .output()
        .expect("the lambdaml binary runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The stored report a `monitor --json` output names.
fn stored(dir: &Path, out: &(bool, String, String)) -> Value {
    assert!(out.0, "{}{}", out.1, out.2);
    let answer: Value = serde_json::from_str(out.1.lines().last().unwrap()).unwrap();
    let key = answer["report_key"].as_str().unwrap();
    serde_json::from_slice(&std::fs::read(dir.join("store").join(key)).unwrap()).unwrap()
}

#[test]
fn a_window_over_the_part_size_is_monitored_in_parts_into_the_same_report() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    train_breast_cancer(d);
    let data = repo().join("data/sklearn_breast_cancer.csv");
    // Every row scored, 50 per request, captured now…
    let text = std::fs::read_to_string(&data).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    for (i, chunk) in lines[1..].chunks(50).enumerate() {
        let file = d.join(format!("rows-{i}.csv"));
        std::fs::write(&file, format!("{}\n{}\n", lines[0], chunk.join("\n"))).unwrap();
        ok(
            d,
            &[
                "predict",
                "--model",
                "breast-cancer",
                "--input",
                file.to_str().unwrap(),
            ],
        );
    }
    let mut captured = Vec::new();
    for entry in walk(&d.join("store/captures/breast-cancer")) {
        captured.extend(
            std::fs::read_to_string(entry)
                .unwrap()
                .lines()
                .map(|l| serde_json::from_str::<Value>(l).unwrap()),
        );
    }
    assert_eq!(captured.len(), 12, "12 requests captured");
    // …then laid over four hours of 2030, a request every few minutes.
    for hour in 0..4 {
        let folder = d.join(format!("store/captures/breast-cancer/2030-01-01/{hour:02}"));
        std::fs::create_dir_all(&folder).unwrap();
        let mut out = String::new();
        for (i, record) in captured.iter().enumerate() {
            let mut r = record.clone();
            r["timestamp"] = Value::String(format!("2030-01-01T{hour:02}:{:02}:00.000Z", i * 4));
            r["request_id"] = Value::String(format!("h{hour}-{i}"));
            out.push_str(&format!("{r}\n"));
        }
        std::fs::write(folder.join("20300101T000000Z-laid.jsonl"), out).unwrap();
    }

    let whole = stored(d, &monitor(d, "0"));
    let out = monitor(d, "0.15");
    let parted = stored(d, &out);
    assert!(
        out.2.contains("parts") || out.1.contains("report_key"),
        "{}{}",
        out.1,
        out.2
    );
    let parts = std::fs::read_dir(d.join("store/monitor-parts/breast-cancer"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let summaries = std::fs::read_dir(&parts)
        .unwrap()
        .filter(|e| {
            let name = e.as_ref().unwrap().file_name();
            let name = name.to_string_lossy();
            name.starts_with("part-") && name.ends_with(".json")
        })
        .count();
    assert!(
        summaries >= 2,
        "the window was aggregated in {summaries} parts"
    );
    for section in [
        "captures",
        "feedback",
        "data_drift",
        "prediction_drift",
        "data_quality",
        "processing",
        "verdict",
    ] {
        assert_eq!(parted[section], whole[section], "{section}");
    }
    assert_eq!(whole["captures"]["rows_scored"], 4 * 569);

    // A part size that is not a number: refused, naming the variable.
    let (success, stdout, stderr) = monitor(d, "lots");
    assert!(!success);
    assert!(
        format!("{stdout}{stderr}").contains("LAMBDAML_MONITOR_PARTITION_MIB"),
        "{stdout}{stderr}"
    );
}
