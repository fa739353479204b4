//! The `lambdaml` binary as the CLI suites run it: in a folder, on `file://store`, with
//! `--json`.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

/// `lambdaml --store file://store --json ARGS…` in `dir`: success, stdout, stderr.
pub fn lambdaml(dir: &Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_lambdaml"))
        .current_dir(dir)
        .env("RAYON_NUM_THREADS", "1")
        .args(["--store", "file://store", "--json"])
        .args(args)
        .output()
        .expect("the lambdaml binary runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The JSON a command that must succeed printed.
pub fn ok(dir: &Path, args: &[&str]) -> Value {
    let (success, stdout, stderr) = lambdaml(dir, args);
    assert!(success, "lambdaml {args:?} failed: {stdout}{stderr}");
    serde_json::from_str(stdout.lines().last().unwrap_or_default())
        .expect("--json prints one JSON object")
}

/// The repository root (the bundled data and example specs).
pub fn repo() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Trains the breast-cancer model on the bundled data (`lambdaml train`) in `dir`.
pub fn train_breast_cancer(dir: &Path) -> Value {
    let data = repo().join("data/sklearn_breast_cancer.csv");
    let spec = repo().join("examples/specs/breast_cancer.toml");
    ok(
        dir,
        &[
            "train",
            "--spec",
            spec.to_str().unwrap_or_default(),
            "--data",
            data.to_str().unwrap_or_default(),
        ],
    )
}

/// Every file under `dir`, sorted.
pub fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out.sort();
    out
}
