//! The bucket layout: every key lambdaml reads or writes is spelled here and nowhere else.
//!
//! ```text
//! specs/<model>.toml                                 the model spec a user uploads
//! specs/history/<model>/<sha256[..16]>.toml          the snapshot a run trained from
//! raw/<dataset>/<file>                               raw files (S3 ObjectCreated → ingest)
//! retrain/<dataset>/<model>-<sha[..16]>.csv          retraining data the monitor asked for
//! datasets/<dataset>/<version>/{data.parquet, schema.json, profile.json, rejected.jsonl,
//!                               manifest.json}      a dataset version
//! quarantine/<dataset>/<version>/<file>              rows and files ingest refused
//! ingest-parts/<dataset>/<version>/{plan.json, round-R.json}   a partitioned ingest's plan
//! ingest-parts/<dataset>/<version>/rR/part-NNNNN.{parquet,jsonl,json}   a partition's
//!                                                    rows, rejected rows and report
//! ingest-parts/<dataset>/<version>/rR/merger         the partition that merges round R
//! runs/<run>/{manifest.json, pipeline.json, train.*, holdout.*, …}   a preprocess run
//! runs/<run>/record.json                             a pipeline run's record (s3-…, retrain-…)
//! models/<model>/<version>/{model.safetensors, manifest.json, evaluation.json,
//!                           baseline.json, baseline.samples, error.json,
//!                           checkpoints/<step>.*}    a model version
//! registry/<model>.json                              the only mutable document
//! captures/<model>/<YYYY-MM-DD>/<HH>/<id>.jsonl      what the score function saw
//! feedback/<model>/<YYYY-MM-DD>/<HH>/<id>.jsonl      ground truth sent back
//! monitoring/<model>/<time>-<salt>/report.{json,html}, labelled.csv   a monitor run
//! monitoring/<model>/retrain-state.json              the retrain cooldown's state
//! monitoring/<model>/concept-state.json              the concept-drift detector between runs
//! batch/<model>/<job>/input/<file>                   a batch job's inputs (S3 ObjectCreated → batch)
//! batch/<model>/<job>/job.json                      its options (optional; put before the inputs)
//! batch/<model>/<job>/{plan.json, manifest.json, rejected.jsonl}   its plan and outcome
//! batch/<model>/<job>/output/part-NNNNN.{parquet,json}   a partition's scores and manifest
//! batch/<model>/<job>/rejected/part-NNNNN.jsonl      a partition's rejected rows
//! batch/<model>/<job>/staged/part-NNNNN.csv          a gzip input's partitions, as plain CSV
//! ```
//!
//! Functions returning an [`ObjectKey`] check the key rules (a model or dataset name with a
//! `/` or `..` is refused there); functions returning a `String` give a listing prefix,
//! which always ends with `/`.

use chrono::{DateTime, Utc};

use crate::store::{ObjectKey, StoreError};

/// Where users put specs.
pub const SPECS: &str = "specs/";
/// Where registry documents live.
pub const REGISTRY: &str = "registry/";
/// Where dataset versions live.
pub const DATASETS: &str = "datasets/";
/// The folder of scored requests.
pub const CAPTURES: &str = "captures";
/// The folder of ground-truth feedback.
pub const FEEDBACK: &str = "feedback";

fn key(text: String) -> Result<ObjectKey, StoreError> {
    ObjectKey::new(text)
}

/// `specs/<model>.toml`.
pub fn spec(model: &str) -> Result<ObjectKey, StoreError> {
    key(format!("{SPECS}{model}.toml"))
}

/// `specs/history/<model>/<sha[..16]>.toml`: a spec snapshot, content-addressed.
pub fn spec_snapshot(model: &str, spec_sha256: &str) -> Result<ObjectKey, StoreError> {
    let short = spec_sha256.get(..16).unwrap_or(spec_sha256);
    key(format!("{SPECS}history/{model}/{short}.toml"))
}

/// `raw/<dataset>/<file>`.
pub fn raw(dataset: &str, file: &str) -> Result<ObjectKey, StoreError> {
    key(format!("raw/{dataset}/{file}"))
}

/// `retrain/<dataset>/<model>-<sha[..16]>.csv`: a retraining dataset the monitor asked
/// for, built by ingest outside `raw/` so no bucket notification ingests it twice.
pub fn retrain_data(dataset: &str, model: &str, sha256: &str) -> Result<ObjectKey, StoreError> {
    let short = sha256.get(..16).unwrap_or(sha256);
    key(format!("retrain/{dataset}/{model}-{short}.csv"))
}

/// `datasets/<dataset>/`: every version of a dataset.
pub fn dataset_versions(dataset: &str) -> String {
    format!("{DATASETS}{dataset}/")
}

/// `datasets/<dataset>/<version>` (no trailing slash): a version's folder, as manifests
/// record it.
pub fn dataset_version(dataset: &str, version: &str) -> String {
    format!("{DATASETS}{dataset}/{version}")
}

/// `datasets/<dataset>/<version>/<file>`.
pub fn dataset_file(dataset: &str, version: &str, file: &str) -> Result<ObjectKey, StoreError> {
    key(format!("{}/{file}", dataset_version(dataset, version)))
}

/// `quarantine/<dataset>/<version>/<file>`.
pub fn quarantine_file(dataset: &str, version: &str, file: &str) -> Result<ObjectKey, StoreError> {
    key(format!("quarantine/{dataset}/{version}/{file}"))
}

/// `ingest-parts/`: partitioned ingests' working files (expired by a bucket lifecycle rule).
pub const INGEST_PARTS: &str = "ingest-parts/";

/// `ingest-parts/<dataset>/<version>/`: one partitioned ingest's working files.
pub fn ingest_parts(dataset: &str, version: &str) -> String {
    format!("{INGEST_PARTS}{dataset}/{version}/")
}

/// `ingest-parts/<dataset>/<version>/plan.json`: the partitions and the guessed schema.
pub fn ingest_plan(dataset: &str, version: &str) -> Result<ObjectKey, StoreError> {
    key(format!("{}plan.json", ingest_parts(dataset, version)))
}

/// `ingest-parts/<dataset>/<version>/round-R.json`: the schema round `R` (≥ 2) checks
/// against.
pub fn ingest_round(dataset: &str, version: &str, round: u32) -> Result<ObjectKey, StoreError> {
    key(format!(
        "{}round-{round}.json",
        ingest_parts(dataset, version)
    ))
}

/// `ingest-parts/<dataset>/<version>/rR/`: round `R`'s partition files.
pub fn ingest_round_parts(dataset: &str, version: &str, round: u32) -> String {
    format!("{}r{round}/", ingest_parts(dataset, version))
}

/// `ingest-parts/<dataset>/<version>/rR/merger`: the partition that merges round `R` (the
/// first to see every report claims it).
pub fn ingest_round_merger(
    dataset: &str,
    version: &str,
    round: u32,
) -> Result<ObjectKey, StoreError> {
    key(format!(
        "{}merger",
        ingest_round_parts(dataset, version, round)
    ))
}

/// `ingest-parts/<dataset>/<version>/rR/part-NNNNN.<ext>`: a partition's `parquet` rows,
/// `jsonl` rejected rows or `json` report (written last).
pub fn ingest_part_file(
    dataset: &str,
    version: &str,
    round: u32,
    part: usize,
    ext: &str,
) -> Result<ObjectKey, StoreError> {
    key(format!(
        "{}part-{part:05}.{ext}",
        ingest_round_parts(dataset, version, round)
    ))
}

/// Whether `key` is a partition's report ([`ingest_part_file`] with `json`), the file whose
/// presence says the partition is done.
pub fn is_ingest_part_report(key: &str) -> bool {
    key.rsplit('/')
        .next()
        .is_some_and(|name| name.starts_with("part-") && name.ends_with(".json"))
}

/// `runs/<run>/<file>`.
pub fn run_file(run: &str, file: &str) -> Result<ObjectKey, StoreError> {
    key(format!("runs/{run}/{file}"))
}

/// `runs/<run>/manifest.json`.
pub fn run_manifest(run: &str) -> Result<ObjectKey, StoreError> {
    run_file(run, "manifest.json")
}

/// `runs/`: every run's folder.
pub const RUNS: &str = "runs/";

/// `runs/<run>` (no trailing slash): a run's folder.
pub fn run_folder(run: &str) -> String {
    format!("{RUNS}{run}")
}

/// `runs/<run>/record.json`: a pipeline run's record (see [`crate::record`]).
pub fn run_record(run: &str) -> Result<ObjectKey, StoreError> {
    run_file(run, "record.json")
}

/// `models/<model>/<version>` (no trailing slash).
pub fn model_version(model: &str, version: &str) -> String {
    format!("models/{model}/{version}")
}

/// `models/<model>/<version>/<file>`.
pub fn model_file(model: &str, version: &str, file: &str) -> Result<ObjectKey, StoreError> {
    key(format!("{}/{file}", model_version(model, version)))
}

/// `models/<model>/<version>/manifest.json`.
pub fn model_manifest(model: &str, version: &str) -> Result<ObjectKey, StoreError> {
    model_file(model, version, "manifest.json")
}

/// `models/<model>/<version>/evaluation.json`.
pub fn evaluation(model: &str, version: &str) -> Result<ObjectKey, StoreError> {
    model_file(model, version, "evaluation.json")
}

/// `models/<model>/<version>/model.safetensors`.
pub fn weights(model: &str, version: &str) -> Result<ObjectKey, StoreError> {
    model_file(model, version, "model.safetensors")
}

/// `models/<model>/<version>/model.evaluated.safetensors`: with `train.refit = "all"`, the
/// split fit the holdout evaluated (the served weights are the refit).
pub fn evaluated_weights(model: &str, version: &str) -> Result<ObjectKey, StoreError> {
    model_file(model, version, "model.evaluated.safetensors")
}

/// `models/<model>/<version>/error.json`: why training failed.
pub fn train_error(model: &str, version: &str) -> Result<ObjectKey, StoreError> {
    model_file(model, version, "error.json")
}

/// `models/<model>/<version>/baseline.json`.
pub fn baseline(model: &str, version: &str) -> Result<ObjectKey, StoreError> {
    model_file(model, version, "baseline.json")
}

/// `models/<model>/<version>/baseline.samples`, next to `baseline.json`.
pub fn baseline_samples(model: &str, version: &str) -> Result<ObjectKey, StoreError> {
    model_file(model, version, "baseline.samples")
}

/// `models/<model>/<version>/checkpoints/<step, six digits>`: a checkpoint's stem, which
/// train messages carry.
pub fn checkpoint(model: &str, version: &str, step: u64) -> Result<ObjectKey, StoreError> {
    key(format!(
        "{}/checkpoints/{step:06}",
        model_version(model, version)
    ))
}

/// `<stem>.json`: a checkpoint's state.
pub fn checkpoint_state(stem: &ObjectKey) -> Result<ObjectKey, StoreError> {
    key(format!("{stem}.json"))
}

/// `<stem>.safetensors`: a checkpoint's tensors.
pub fn checkpoint_tensors(stem: &ObjectKey) -> Result<ObjectKey, StoreError> {
    key(format!("{stem}.safetensors"))
}

/// `registry/<model>.json`.
pub fn registry(model: &str) -> Result<ObjectKey, StoreError> {
    key(format!("{REGISTRY}{model}.json"))
}

/// The model named by a registry document's key, if `key` is one.
pub fn registry_model(key: &str) -> Option<&str> {
    key.strip_prefix(REGISTRY)?.strip_suffix(".json")
}

/// `<root>/`: every model's records (`root` is [`CAPTURES`] or [`FEEDBACK`]).
pub fn records_of_all(root: &str) -> String {
    format!("{root}/")
}

/// `<root>/<model>/` (`root` is [`CAPTURES`] or [`FEEDBACK`]).
pub fn records_of(root: &str, model: &str) -> String {
    format!("{root}/{model}/")
}

/// `<root>/<model>/<YYYY-MM-DD>/`.
pub fn records_of_day(root: &str, model: &str, day: chrono::NaiveDate) -> String {
    format!("{root}/{model}/{}/", day.format("%Y-%m-%d"))
}

/// `<root>/<model>/<YYYY-MM-DD>/<HH>/`: the folder an hour's records are written to.
pub fn records_of_hour(root: &str, model: &str, at: DateTime<Utc>) -> String {
    format!("{root}/{model}/{}/", at.format("%Y-%m-%d/%H"))
}

/// The start of the hour folder a record file lies in (`<root>/<model>/<YYYY-MM-DD>/<HH>/<file>`,
/// as [`record_file`] names it), or `None` for a key of another shape.
pub fn record_hour(key: &str) -> Option<DateTime<Utc>> {
    let parts: Vec<&str> = key.split('/').collect();
    if parts.len() != 5 {
        return None;
    }
    DateTime::parse_from_rfc3339(&format!("{}T{}:00:00Z", parts[2], parts[3]))
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// `<hour folder><YYYYMMDDTHHMMSS.mmmZ>-<id>.jsonl`: one batch of records, time first so
/// listings sort by time.
pub fn record_file(
    hour_folder: &str,
    now: DateTime<Utc>,
    id: &str,
) -> Result<ObjectKey, StoreError> {
    key(format!(
        "{hour_folder}{}-{id}.jsonl",
        now.format("%Y%m%dT%H%M%S%.3fZ")
    ))
}

/// `monitoring/<model>/`: every monitor run of a model.
pub fn monitoring(model: &str) -> String {
    format!("monitoring/{model}/")
}

/// `monitoring/<model>/<stamp>-<salt>` (no trailing slash): one monitor run's folder.
pub fn monitor_run(model: &str, stamp: &str, salt: &str) -> String {
    format!("monitoring/{model}/{stamp}-{salt}")
}

/// Where monitor runs planned in parts keep their working files (expired by a lifecycle
/// rule in the template).
pub const MONITOR_PARTS: &str = "monitor-parts/";

/// `monitor-parts/<model>/<run>/`: one monitor run's parts (`run` is `<stamp>-<salt>`, the
/// name its report folder gets).
pub fn monitor_parts(model: &str, run: &str) -> String {
    format!("{MONITOR_PARTS}{model}/{run}/")
}

/// `monitor-parts/<model>/<run>/plan.json`: the window, its request and its parts' keys.
pub fn monitor_plan(model: &str, run: &str) -> Result<ObjectKey, StoreError> {
    key(format!("{}plan.json", monitor_parts(model, run)))
}

/// `monitor-parts/<model>/<run>/merger`: the part that merges (written once).
pub fn monitor_merger(model: &str, run: &str) -> Result<ObjectKey, StoreError> {
    key(format!("{}merger", monitor_parts(model, run)))
}

/// `monitor-parts/<model>/<run>/part-NNNNN.<ext>`: a part's `sample` and `estimation`
/// rows and its `json` summary (written last, the file whose presence says it is done).
pub fn monitor_part_file(
    model: &str,
    run: &str,
    part: usize,
    ext: &str,
) -> Result<ObjectKey, StoreError> {
    key(format!("{}part-{part:05}.{ext}", monitor_parts(model, run)))
}

/// `<run folder>/report.json`: a monitor run's report.
pub fn report_json(run_prefix: &str) -> Result<ObjectKey, StoreError> {
    in_folder(run_prefix, "report.json")
}

/// `<run folder>/report.html`: the report for people.
pub fn report_html(run_prefix: &str) -> Result<ObjectKey, StoreError> {
    in_folder(run_prefix, "report.html")
}

/// Whether `key` is a monitor run's `report.json`.
pub fn is_report_json(key: &str) -> bool {
    key.starts_with("monitoring/") && key.ends_with("/report.json")
}

/// Whether `key` is a monitor run's `report.html`.
pub fn is_report_html(key: &str) -> bool {
    key.starts_with("monitoring/") && key.ends_with("/report.html")
}

/// The `report.html` beside a `report.json` key.
pub fn report_html_beside(report_json: &str) -> String {
    format!(
        "{}/report.html",
        report_json.trim_end_matches("/report.json")
    )
}

/// `<run folder>/late-labels.json` beside `report_json`: the window's realized performance
/// with labels that arrived after it was judged.
pub fn late_labels(report_json: &str) -> Result<ObjectKey, StoreError> {
    key(format!(
        "{}/late-labels.json",
        report_json.trim_end_matches("/report.json")
    ))
}

/// `monitoring/<model>/retrain-state.json`.
pub fn retrain_state(model: &str) -> Result<ObjectKey, StoreError> {
    key(format!("monitoring/{model}/retrain-state.json"))
}

/// `monitoring/<model>/concept-state.json`: the concept-drift detector's state between
/// monitor runs.
pub fn concept_state(model: &str) -> Result<ObjectKey, StoreError> {
    key(format!("monitoring/{model}/concept-state.json"))
}

/// Where batch jobs live.
pub const BATCH: &str = "batch/";

/// `batch/<model>/<job>/`: everything of one batch job.
pub fn batch_job(model: &str, job: &str) -> String {
    format!("{BATCH}{model}/{job}/")
}

/// `batch/<model>/<job>/input/`: a batch job's inputs.
pub fn batch_input(model: &str, job: &str) -> String {
    format!("{}input/", batch_job(model, job))
}

/// `batch/<model>/<job>/input/<name>`.
pub fn batch_input_file(model: &str, job: &str, name: &str) -> Result<ObjectKey, StoreError> {
    key(format!("{}{name}", batch_input(model, job)))
}

/// `batch/<model>/<job>/plan.json`.
pub fn batch_plan(model: &str, job: &str) -> Result<ObjectKey, StoreError> {
    key(format!("{}plan.json", batch_job(model, job)))
}

/// `batch/<model>/<job>/job.json`: the job's options ([`crate::batch::JobOptions`]).
pub fn batch_options(model: &str, job: &str) -> Result<ObjectKey, StoreError> {
    key(format!("{}job.json", batch_job(model, job)))
}

/// `batch/<model>/<job>/manifest.json`: how the job ended.
pub fn batch_manifest(model: &str, job: &str) -> Result<ObjectKey, StoreError> {
    key(format!("{}manifest.json", batch_job(model, job)))
}

/// `batch/<model>/<job>/rejected.jsonl`: every partition's rejected rows.
pub fn batch_rejected(model: &str, job: &str) -> Result<ObjectKey, StoreError> {
    key(format!("{}rejected.jsonl", batch_job(model, job)))
}

/// `batch/<model>/<job>/output/`: the partitions' outputs and manifests.
pub fn batch_outputs(model: &str, job: &str) -> String {
    format!("{}output/", batch_job(model, job))
}

/// `batch/<model>/<job>/output/part-NNNNN.parquet`.
pub fn batch_part_output(model: &str, job: &str, part: usize) -> Result<ObjectKey, StoreError> {
    key(format!(
        "{}part-{part:05}.parquet",
        batch_outputs(model, job)
    ))
}

/// `batch/<model>/<job>/output/part-NNNNN.json`: written after the partition's output.
pub fn batch_part_manifest(model: &str, job: &str, part: usize) -> Result<ObjectKey, StoreError> {
    key(format!("{}part-{part:05}.json", batch_outputs(model, job)))
}

/// Whether `key` is a partition manifest ([`batch_part_manifest`]).
pub fn is_batch_part_manifest(key: &str) -> bool {
    batch_part_of_manifest(key).is_some()
}

/// The partition a partition manifest's key ([`batch_part_manifest`]) names.
pub fn batch_part_of_manifest(key: &str) -> Option<usize> {
    key.rsplit('/')
        .next()?
        .strip_prefix("part-")?
        .strip_suffix(".json")?
        .parse()
        .ok()
}

/// Whether `key` is the plan ([`batch_plan`]) of a job named `job`.
pub fn is_batch_plan_of(key: &str, job: &str) -> bool {
    matches!(batch_key(key), Some((_, j, false)) if j == job)
        && key.ends_with("/plan.json")
        && key.matches('/').count() == 3
}

/// `batch/<model>/<job>/rejected/part-NNNNN.jsonl`.
pub fn batch_part_rejected(model: &str, job: &str, part: usize) -> Result<ObjectKey, StoreError> {
    key(format!(
        "{}rejected/part-{part:05}.jsonl",
        batch_job(model, job)
    ))
}

/// `batch/<model>/<job>/staged/part-NNNNN.csv`: a gzip input's partition as plain CSV.
pub fn batch_staged(model: &str, job: &str, part: usize) -> Result<ObjectKey, StoreError> {
    key(format!(
        "{}staged/part-{part:05}.csv",
        batch_job(model, job)
    ))
}

/// What a key under `batch/` is: `(model, job, whether it is an input)`, or `None` for a
/// key that is not in a job's folder.
pub fn batch_key(key: &str) -> Option<(&str, &str, bool)> {
    let rest = key.strip_prefix(BATCH)?;
    let mut parts = rest.splitn(4, '/');
    let (model, job, kind) = (parts.next()?, parts.next()?, parts.next()?);
    let file = parts.next();
    if model.is_empty() || job.is_empty() {
        return None;
    }
    let input = kind == "input" && file.is_some_and(|f| !f.is_empty() && !f.ends_with('/'));
    Some((model, job, input))
}

/// `<folder>/<file>`: a file in a folder this module named.
pub fn in_folder(folder: &str, file: &str) -> Result<ObjectKey, StoreError> {
    key(format!("{}/{file}", folder.trim_end_matches('/')))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_keys_name_their_job_and_inputs() {
        let input = batch_input_file("m", "j1", "day 1.csv").unwrap();
        assert_eq!(input.as_str(), "batch/m/j1/input/day 1.csv");
        assert_eq!(batch_key(input.as_str()), Some(("m", "j1", true)));
        let out = batch_part_output("m", "j1", 7).unwrap();
        assert_eq!(out.as_str(), "batch/m/j1/output/part-00007.parquet");
        assert_eq!(batch_key(out.as_str()), Some(("m", "j1", false)));
        let manifest = batch_part_manifest("m", "j1", 7).unwrap();
        assert!(is_batch_part_manifest(manifest.as_str()));
        assert_eq!(batch_part_of_manifest(manifest.as_str()), Some(7));
        let plan = batch_plan("m", "j1").unwrap();
        assert!(is_batch_plan_of(plan.as_str(), "j1"));
        assert!(!is_batch_plan_of(plan.as_str(), "j"));
        assert!(!is_batch_plan_of("batch/m/j1/input/plan.json", "j1"));
        assert!(!is_batch_part_manifest(out.as_str()));
        assert_eq!(batch_key("batch/m/j1/input/"), Some(("m", "j1", false)));
        assert_eq!(batch_key("batch/m"), None);
        assert_eq!(batch_key("raw/m/j/input/x.csv"), None);
        assert!(batch_plan("m", "../x").is_err());
    }

    #[test]
    fn a_partition_report_is_told_from_its_rows_and_the_merger_claim() {
        let report = ingest_part_file("d", "v1", 2, 7, "json").unwrap();
        assert_eq!(report.as_str(), "ingest-parts/d/v1/r2/part-00007.json");
        assert!(is_ingest_part_report(report.as_str()));
        let rows = ingest_part_file("d", "v1", 2, 7, "parquet").unwrap();
        assert!(!is_ingest_part_report(rows.as_str()));
        let merger = ingest_round_merger("d", "v1", 2).unwrap();
        assert!(!is_ingest_part_report(merger.as_str()));
        assert!(
            merger
                .as_str()
                .starts_with(&ingest_round_parts("d", "v1", 2))
        );
    }

    #[test]
    fn a_record_file_key_gives_back_its_hour() {
        let at = DateTime::parse_from_rfc3339("2031-02-03T04:05:06.789Z")
            .unwrap()
            .with_timezone(&Utc);
        let file = record_file(&records_of_hour(CAPTURES, "m", at), at, "id").unwrap();
        let hour = DateTime::parse_from_rfc3339("2031-02-03T04:00:00Z").unwrap();
        assert_eq!(record_hour(file.as_str()), Some(hour.with_timezone(&Utc)));
        assert_eq!(record_hour("captures/m/2031-02-03/file.jsonl"), None);
        assert_eq!(record_hour("captures/m/not-a-day/04/f.jsonl"), None);
    }

    #[test]
    fn keys_follow_the_documented_layout() {
        assert_eq!(spec("m").unwrap().as_str(), "specs/m.toml");
        assert_eq!(
            spec_snapshot("m", &"ab".repeat(32)).unwrap().as_str(),
            "specs/history/m/abababababababab.toml"
        );
        assert_eq!(raw("w", "a b.csv").unwrap().as_str(), "raw/w/a b.csv");
        assert_eq!(
            dataset_file("w", "v1", "data.parquet").unwrap().as_str(),
            "datasets/w/v1/data.parquet"
        );
        assert_eq!(
            model_manifest("m", "3").unwrap().as_str(),
            "models/m/3/manifest.json"
        );
        let stem = checkpoint("m", "3", 42).unwrap();
        assert_eq!(stem.as_str(), "models/m/3/checkpoints/000042");
        assert_eq!(
            checkpoint_state(&stem).unwrap().as_str(),
            "models/m/3/checkpoints/000042.json"
        );
        assert_eq!(registry("m").unwrap().as_str(), "registry/m.json");
        assert_eq!(registry_model("registry/m.json"), Some("m"));
        assert_eq!(registry_model("registry/m.txt"), None);
        let at = DateTime::from_timestamp(3600 * 30, 0).unwrap();
        assert_eq!(
            records_of_hour(CAPTURES, "m", at),
            "captures/m/1970-01-02/06/"
        );
        assert_eq!(
            in_folder(&monitor_run("m", "t", "s"), "report.json")
                .unwrap()
                .as_str(),
            "monitoring/m/t-s/report.json"
        );
    }

    #[test]
    fn names_that_escape_their_folder_are_refused() {
        assert!(spec("../x").is_err());
        assert!(model_manifest("m", "..").is_err());
        assert!(raw("w", "/etc/passwd").is_err());
    }
}
