//! Ingest of a raw file (CSV, gzip CSV or Parquet, detected from the bytes) with the mixed
//! spec: any file is ingested with its bad rows rejected, or refused with a reason — never a
//! panic, whatever it declares.
#![no_main]

use std::sync::OnceLock;

use lambdaml::dataset::{Format, IngestConfig, ingest_file};
use libfuzzer_sys::fuzz_target;

const SPEC: &str = include_str!("../fixtures/mixed.toml");

fn config() -> &'static IngestConfig {
    static CONFIG: OnceLock<IngestConfig> = OnceLock::new();
    CONFIG.get_or_init(|| {
        IngestConfig::from_spec(&lambdaml::spec::ModelSpec::parse(SPEC).expect("the fixture spec"))
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(dir) = tempfile::tempdir() else {
        return;
    };
    let path = dir.path().join("input");
    if std::fs::write(&path, data).is_err() {
        return;
    }
    let Ok(format) = Format::detect(&path, "input") else {
        return;
    };
    let out = dir.path().join("out");
    let _ = std::fs::create_dir_all(&out);
    let _ = ingest_file(&path, format, config(), &out, &|_| {});
});
