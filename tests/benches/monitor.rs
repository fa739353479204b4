//! Monitor benchmarks (run by `bench/monitor.sh`, which runs the Python peers on the same
//! data and prints the comparison). One binary, parts chosen by `BENCH_PART`:
//!
//! - `drift`: KS + PSI of 1,000,000 vs 1,000,000 values × 20 features (sorting included),
//!   one thread, as `scipy.stats.ks_2samp` + numpy PSI do; writes the samples to
//!   `$BENCH_OUT/drift_{ref,cur}.f64` for the Python side.
//! - `run`: a whole monitor run on 100,000 captured rows × 20 features (reading and parsing
//!   the capture files, every test, the report); writes the reference and current data as
//!   CSV and the verdicts as JSON for Evidently's `DataDriftPreset`.
//! - `gen10m` then `rss10m`: 10,000,000 captured rows written, then monitored in a fresh
//!   process (the script reads its peak RSS from `/usr/bin/time -v`).
//! - `genparts`: `BENCH_ROWS` captured rows over `BENCH_HOURS` hours, which
//!   `bench/monitor_parts.sh` monitors in parts, one process per part.

#![allow(clippy::unwrap_used, clippy::print_stdout)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Duration, Utc};
use lambdaml::capture::{CaptureConfig, CaptureRecord, CaptureWriter, CapturedValue};
use lambdaml::dataset::SplitMix64;
use lambdaml::drift::{ks_2samp, psi, sort_values};
use lambdaml::store::{FileStore, ObjectStore};
use lambdaml_monitor::{Monitor, MonitorRequest};

const FEATURES: usize = 20;

fn out_dir() -> PathBuf {
    let dir = PathBuf::from(std::env::var("BENCH_OUT").unwrap_or_else(|_| "bench/out".into()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Feature `f`'s value: a sum of uniforms (bell-shaped), shifted by `shift · f` in the
/// current data so features drift from not at all to clearly.
fn value(g: &mut SplitMix64, f: usize, shift: f64) -> f64 {
    let base = g.next_f64() + g.next_f64() + g.next_f64() + g.next_f64();
    10.0 * base + f as f64 + shift * f as f64
}

fn drift_part() {
    const N: usize = 1_000_000;
    let mut g = SplitMix64::new(1);
    let reference: Vec<Vec<f64>> = (0..FEATURES)
        .map(|f| (0..N).map(|_| value(&mut g, f, 0.0)).collect())
        .collect();
    let current: Vec<Vec<f64>> = (0..FEATURES)
        .map(|f| (0..N).map(|_| value(&mut g, f, 0.02)).collect())
        .collect();
    let dir = out_dir();
    let write = |name: &str, data: &[Vec<f64>]| {
        let mut bytes = Vec::with_capacity(FEATURES * N * 8);
        for col in data {
            for v in col {
                bytes.extend_from_slice(&v.to_le_bytes());
            }
        }
        std::fs::write(dir.join(name), bytes).unwrap();
    };
    write("drift_ref.f64", &reference);
    write("drift_cur.f64", &current);
    let mut best = f64::INFINITY;
    let mut results = Vec::new();
    for _ in 0..3 {
        let (mut r, mut c) = (reference.clone(), current.clone());
        let started = Instant::now();
        results.clear();
        let (mut t_sort, mut t_ks) = (0.0, 0.0);
        for f in 0..FEATURES {
            let t = Instant::now();
            sort_values(&mut r[f]);
            sort_values(&mut c[f]);
            t_sort += t.elapsed().as_secs_f64();
            let t = Instant::now();
            let ks = ks_2samp(&r[f], &c[f]).unwrap();
            t_ks += t.elapsed().as_secs_f64();
            let p = psi(&r[f], &c[f]).unwrap();
            results.push((ks.statistic, ks.pvalue, p));
        }
        let total = started.elapsed().as_secs_f64();
        println!(
            "  sort {t_sort:.3} s, ks {t_ks:.3} s, psi {:.3} s",
            total - t_sort - t_ks
        );
        best = best.min(total);
    }
    let json = serde_json::json!({
        "part": "drift", "rows": N, "features": FEATURES, "seconds": best,
        "results": results.iter().map(|(d, p, s)| serde_json::json!({"ks": d, "p": p, "psi": s})).collect::<Vec<_>>(),
    });
    std::fs::write(dir.join("drift_rust.json"), json.to_string()).unwrap();
    println!("drift: KS + PSI, {N} vs {N} values x {FEATURES} features, one thread: {best:.3} s");
}

fn spec() -> String {
    let mut s = String::from(
        "[model]\nname = \"bench\"\n[dataset]\nname = \"bench\"\nlabel = \"label\"\n\
         [dataset.columns.label]\ntype = \"categorical\"\nvalues = [\"0\", \"1\"]\nnullable = false\n\
         [task]\nkind = \"binary\"\npositive_class = \"1\"\n[split]\nmethod = \"time\"\nholdout = 0.2\n\
         [train]\nfamily = \"logistic\"\nepochs = 50\n",
    );
    s.push_str("[retrain]\nenabled = false\n");
    s
}

fn training_csv(rows: usize) -> String {
    let mut g = SplitMix64::new(2);
    let mut out: String = (0..FEATURES).map(|f| format!("f{f:02},")).collect();
    out.push_str("label\n");
    for _ in 0..rows {
        let values: Vec<f64> = (0..FEATURES).map(|f| value(&mut g, f, 0.0)).collect();
        let z: f64 = values.iter().take(5).sum::<f64>() / 5.0 - 22.0 + (g.next_f64() - 0.5) * 4.0;
        for v in &values {
            out.push_str(&format!("{v:.4},"));
        }
        out.push_str(if z > 0.0 { "1\n" } else { "0\n" });
    }
    out
}

fn t0() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2030-01-01T00:00:00Z")
        .unwrap()
        .with_timezone(&Utc)
}

/// Deploys the 20-feature model into `dir` (the real pipeline) and returns its version.
async fn setup(dir: &Path) -> (Arc<dyn ObjectStore>, String) {
    lambdaml_e2e::deploy_model(dir, &spec(), "bench", training_csv(100_000).as_bytes()).await
}

/// Captures `rows` rows (100 per request) of drifted traffic over `hours` hours; returns
/// the values column by column when `keep`.
async fn capture(
    store: &Arc<dyn ObjectStore>,
    version: &str,
    rows: usize,
    keep: bool,
    shift: f64,
    hours: i64,
) -> Vec<Vec<f64>> {
    let writer = CaptureWriter::new(store.clone(), CaptureConfig::default());
    let mut g = SplitMix64::new(3);
    let mut kept = vec![Vec::new(); if keep { FEATURES } else { 0 }];
    let per = 100;
    let requests = rows / per;
    for r in 0..requests {
        let at = t0() + Duration::milliseconds((r as i64 * hours * 3_600_000) / requests as i64);
        let mut inputs = Vec::with_capacity(per);
        for _ in 0..per {
            let values: Vec<f64> = (0..FEATURES).map(|f| value(&mut g, f, shift)).collect();
            if keep {
                for (f, v) in values.iter().enumerate() {
                    kept[f].push((v * 1e4).round() / 1e4);
                }
            }
            inputs.push(
                values
                    .iter()
                    .map(|v| CapturedValue::Number((v * 1e4).round() / 1e4))
                    .collect(),
            );
        }
        let record = CaptureRecord {
            request_id: format!("req{r}"),
            client_id: None,
            timestamp: lambdaml::capture::millis(at),
            model: "bench".into(),
            version: Some(version.to_string()),
            role: None,
            protocol: "v2".into(),
            status: 200,
            latency_us: 300 + (r % 50) as u64,
            rows: per,
            inputs,
            labels: vec!["1".into(); per],
            outputs: (0..per)
                .flat_map(|i| {
                    let p = (i % 10) as f64 / 10.0;
                    [1.0 - p, p]
                })
                .collect(),
            errors: Vec::new(),
            body: None,
            body_bytes: 0,
        };
        if writer.record(&record) {
            writer.flush_due().await;
        }
    }
    writer.flush().await;
    kept
}

fn request() -> MonitorRequest {
    MonitorRequest {
        model: "bench".into(),
        window: None,
        from: Some(t0().to_rfc3339()),
        to: Some((t0() + Duration::hours(1)).to_rfc3339()),
        at: None,
        retrain: false,
    }
}

async fn run_part() {
    // Kept for bench/monitor.sh, which then times the whole `lambdaml monitor` command on it.
    let dir = out_dir().join("run-store");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let (store, version) = setup(&dir).await;
    let current = capture(&store, &version, 100_000, true, 0.06, 1).await;
    let monitor = Monitor::new(store.clone(), None);
    let mut times = Vec::new();
    let mut last = None;
    for _ in 0..5 {
        let started = Instant::now();
        let out = monitor.run(&request()).await.unwrap();
        times.push(started.elapsed().as_secs_f64());
        last = Some(out);
    }
    times.sort_by(f64::total_cmp);
    let out = last.unwrap();
    let report = &out.report;
    assert_eq!(report.captures.rows_scored, 100_000);
    let o = out_dir();
    // The same data for Evidently: the baseline's reference values and the captured rows.
    let baseline = lambdaml::baseline::Baseline::decode(
        &store
            .get(&lambdaml::layout::baseline("bench", &version).unwrap())
            .await
            .unwrap()
            .bytes,
        &store
            .get(&lambdaml::layout::baseline_samples("bench", &version).unwrap())
            .await
            .unwrap()
            .bytes,
    )
    .unwrap();
    let mut ref_csv: String = baseline
        .features
        .iter()
        .map(|f| f.name.clone())
        .collect::<Vec<_>>()
        .join(",");
    ref_csv.push('\n');
    let n = baseline.features[0].sample.len();
    for i in 0..n {
        let row: Vec<String> = baseline
            .features
            .iter()
            .map(|f| f.sample[i].to_string())
            .collect();
        ref_csv.push_str(&row.join(","));
        ref_csv.push('\n');
    }
    std::fs::write(o.join("run_ref.csv"), ref_csv).unwrap();
    let mut cur_csv: String = (0..FEATURES)
        .map(|f| format!("f{f:02}"))
        .collect::<Vec<_>>()
        .join(",");
    cur_csv.push('\n');
    for i in 0..current[0].len() {
        let row: Vec<String> = current.iter().map(|c| c[i].to_string()).collect();
        cur_csv.push_str(&row.join(","));
        cur_csv.push('\n');
    }
    std::fs::write(o.join("run_cur.csv"), cur_csv).unwrap();
    let verdicts: serde_json::Map<String, serde_json::Value> = report
        .data_drift
        .features
        .iter()
        .map(|f| {
            (
                f.name.clone(),
                serde_json::json!({"drifted": f.drifted, "method": f.method, "score": f.score}),
            )
        })
        .collect();
    let json = serde_json::json!({
        "part": "run", "rows": 100_000, "features": FEATURES, "median_seconds": times[2],
        "best_seconds": times[0], "reference_rows": n, "dataset_drift": report.data_drift.dataset_drift,
        "drift_share": report.data_drift.drift_share, "features_verdicts": verdicts,
        "store": dir.join("store").display().to_string(),
        "from": request().from, "to": request().to,
    });
    std::fs::write(o.join("run_rust.json"), json.to_string()).unwrap();
    println!("  timings (ms): {:?}", report.timings_ms);
    println!(
        "run: monitor on 100,000 captured rows x {FEATURES} features: median {:.3} s (best {:.3} s), {} of {} drifted",
        times[2], times[0], report.data_drift.drifted, report.data_drift.tested
    );
}

async fn gen10m() {
    let dir = out_dir().join("store10m");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let (store, version) = setup(&dir).await;
    capture(&store, &version, 10_000_000, false, 0.06, 1).await;
    println!("gen10m: 10,000,000 captured rows in {}", dir.display());
}

/// `BENCH_ROWS` captured rows (default 10,000,000) over `BENCH_HOURS` hours (default 10)
/// in `$BENCH_OUT/store-parts`, for `bench/monitor_parts.sh`.
async fn genparts() {
    let env = |k: &str, d: usize| {
        std::env::var(k)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(d)
    };
    let (rows, hours) = (env("BENCH_ROWS", 10_000_000), env("BENCH_HOURS", 10));
    let dir = out_dir().join("store-parts");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let (store, version) = setup(&dir).await;
    capture(&store, &version, rows, false, 0.06, hours as i64).await;
    println!(
        "genparts: {rows} captured rows over {hours} hours in {}",
        dir.display()
    );
}

async fn rss10m() {
    let dir = out_dir().join("store10m");
    let store: Arc<dyn ObjectStore> = Arc::new(FileStore::open(dir.join("store")).unwrap());
    let started = Instant::now();
    let out = Monitor::new(store, None).run(&request()).await.unwrap();
    println!(
        "rss10m: monitor on {} captured rows ({} tested) in {:.1} s",
        out.report.captures.rows_scored,
        out.report.captures.rows_tested,
        started.elapsed().as_secs_f64()
    );
}

/// The merge of a window of 100 parts: part 0 of the run `BENCH_RUN` in the store at
/// `BENCH_PARTS_STORE`, its files hard-linked as the 100 parts of a new run (its plan a
/// second later), whose last part then merges and writes the report.
async fn merge100() {
    const PARTS: usize = 100;
    let root = PathBuf::from(std::env::var("BENCH_PARTS_STORE").unwrap());
    let run = std::env::var("BENCH_RUN").unwrap();
    let (src, dst) = (
        root.join(format!("monitor-parts/bench/{run}")),
        root.join("monitor-parts/bench/merge100"),
    );
    let _ = std::fs::remove_dir_all(&dst);
    std::fs::create_dir_all(&dst).unwrap();
    let mut plan: serde_json::Value =
        serde_json::from_slice(&std::fs::read(src.join("plan.json")).unwrap()).unwrap();
    plan["parts"] = serde_json::Value::Array(vec![plan["parts"][0].clone(); PARTS]);
    let generated: DateTime<Utc> = plan["generated"].as_str().unwrap().parse().unwrap();
    plan["generated"] = serde_json::json!(generated + Duration::seconds(1));
    std::fs::write(dst.join("plan.json"), plan.to_string()).unwrap();
    for i in 0..PARTS {
        for ext in ["json", "sample", "estimation"] {
            std::fs::hard_link(
                src.join(format!("part-00000.{ext}")),
                dst.join(format!("part-{i:05}.{ext}")),
            )
            .unwrap();
        }
    }
    let store: Arc<dyn ObjectStore> = Arc::new(FileStore::open(&root).unwrap());
    let started = Instant::now();
    let out = Monitor::new(store, None)
        .handle_part(&lambdaml::message::MonitorPartRequest {
            model: "bench".into(),
            run: "merge100".into(),
            part: PARTS - 1,
        })
        .await
        .unwrap();
    println!(
        "merge100: {PARTS} parts merged in {:.2} s: {out:?}",
        started.elapsed().as_secs_f64()
    );
    std::fs::remove_dir_all(&dst).unwrap();
}

fn main() {
    let part = std::env::var("BENCH_PART").unwrap_or_else(|_| "drift,run".into());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    for p in part.split(',') {
        match p {
            "drift" => drift_part(),
            "run" => rt.block_on(run_part()),
            "gen10m" => rt.block_on(gen10m()),
            "rss10m" => rt.block_on(rss10m()),
            "genparts" => rt.block_on(genparts()),
            "merge100" => rt.block_on(merge100()),
            other => panic!("unknown BENCH_PART {other}"),
        }
    }
}
