//! `lambdaml ingest` of a file over the partition size, as a user runs it: the real weather
//! data checked in partitions gives the version a one-pass ingest gives; a partition size
//! that is not a number is refused before anything runs.

#![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

fn ingest(dir: &Path, partition_mib: &str) -> (bool, String, String) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = Command::new(env!("CARGO_BIN_EXE_lambdaml"))
        .current_dir(dir)
        .env("RAYON_NUM_THREADS", "1")
        .env("LAMBDAML_INGEST_PARTITION_MIB", partition_mib)
        .args(["--store", "file://store", "--json", "ingest"])
        .arg(root.join("data/weather_noaa.csv"))
        .arg("--spec")
        .arg(root.join("examples/specs/weather.toml"))
        .arg("--no-run")
        .output()
        .expect("the lambdaml binary runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn json(out: &(bool, String, String)) -> Value {
    assert!(out.0, "{}{}", out.1, out.2);
    serde_json::from_str(out.1.lines().last().unwrap_or_default()).unwrap()
}

#[test]
fn a_large_file_is_ingested_in_partitions_into_the_one_pass_version() {
    let (a, b, c) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let parts = json(&ingest(a.path(), "0.1"))["ingest"].clone();
    let one = json(&ingest(b.path(), "0"))["ingest"].clone();
    assert!(
        parts["partitioned"]["partitions"].as_u64().unwrap() >= 7,
        "{parts}"
    );
    assert_eq!(parts["created"], true);
    assert!(one.get("partitioned").is_none(), "{one}");
    for field in ["version", "rows", "rejected", "models"] {
        assert_eq!(parts[field], one[field], "{field}");
    }
    assert_eq!(one["rows"], 18_157);

    let (success, stdout, stderr) = ingest(c.path(), "lots");
    assert!(!success);
    let said = format!("{stdout}{stderr}");
    assert!(
        said.contains("LAMBDAML_INGEST_PARTITION_MIB") && said.contains("is not a size in MiB"),
        "{said}"
    );
    assert!(!c.path().join("store").join("datasets").exists());
}
