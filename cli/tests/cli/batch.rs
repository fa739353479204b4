//! `lambdaml batch` as a user meets it on the embedded default: a file scored with the
//! progress and summary, `status` and `resume` on it, and the mistakes (a model that does
//! not exist, a version it does not have, a file without the model's columns, a job name
//! used twice, a file that is not CSV or Parquet) refused naming what is wrong — before
//! anything is uploaded where that can be known.

#![allow(clippy::unwrap_used)]

use crate::bin::{lambdaml, ok};

const SPEC: &str = include_str!("../../../examples/specs/breast_cancer.toml");
const CSV: &str = include_str!("../../../data/sklearn_breast_cancer.csv");

#[test]
fn batch_score_status_resume_and_the_mistakes_a_user_makes() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("spec.toml"), SPEC).unwrap();
    std::fs::write(d.join("data.csv"), CSV).unwrap();
    ok(d, &["train", "--spec", "spec.toml", "--data", "data.csv"]);
    let done = ok(
        d,
        &[
            "batch",
            "score",
            "--model",
            "breast-cancer",
            "--input",
            "data.csv",
            "--job",
            "j1",
            "--partition-rows",
            "100",
            "--workers",
            "2",
        ],
    );
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(
        (&done["partitions"], &done["rows_out"]),
        (&6.into(), &569.into())
    );
    let status = ok(d, &["batch", "status", "j1"]);
    assert_eq!(status["rows_out"], 569);
    // Resuming a finished job sends nothing and reports it again.
    let resumed = ok(d, &["batch", "resume", "j1"]);
    assert_eq!(resumed["status"], "succeeded");
    // Parquet output with one row per input row.
    let outputs = std::fs::read_dir(d.join("store/batch/breast-cancer/j1/output"))
        .unwrap()
        .filter(|e| e.as_ref().unwrap().path().extension().unwrap() == "parquet")
        .count();
    assert_eq!(outputs, 6);

    let refused = |args: &[&str], needle: &str| {
        let (success, stdout, stderr) = lambdaml(d, args);
        assert!(!success, "{args:?} succeeded: {stdout}");
        // Under --json the error is a JSON line on stdout.
        let said = format!("{stdout}{stderr}").replace("\\\"", "\"");
        assert!(said.contains(needle), "{args:?}: {said}");
    };
    refused(
        &[
            "batch",
            "score",
            "--model",
            "breast-cancr",
            "--input",
            "data.csv",
        ],
        "no model \"breast-cancr\"",
    );
    refused(
        &[
            "batch",
            "score",
            "--model",
            "breast-cancer",
            "--input",
            "data.csv",
            "--version",
            "abc",
        ],
        "has no version \"abc\"",
    );
    refused(
        &[
            "batch",
            "score",
            "--model",
            "breast-cancer",
            "--input",
            "data.csv",
            "--job",
            "j1",
        ],
        "exists",
    );
    std::fs::write(d.join("notes.txt"), "hello").unwrap();
    refused(
        &[
            "batch",
            "score",
            "--model",
            "breast-cancer",
            "--input",
            "notes.txt",
        ],
        ".csv, .csv.gz and .parquet",
    );
    let renamed = CSV.replacen("mean radius", "mean_radius", 1);
    std::fs::write(d.join("renamed.csv"), renamed).unwrap();
    refused(
        &[
            "batch",
            "score",
            "--model",
            "breast-cancer",
            "--input",
            "renamed.csv",
        ],
        "mean radius (the file has \"mean_radius\")",
    );
    refused(&["batch", "status", "nope"], "no batch job nope");
}
