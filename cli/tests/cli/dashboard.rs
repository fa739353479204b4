//! Runs, lineage, caching and the dashboard, used as a person uses them: a loop driven by
//! the `lambdaml` binary on a file store — train, a `[monitor]` change (nothing retrains), a
//! `[train]` change (exactly one training), a spec that fails (dead-lettered), drifted
//! traffic with labels, a monitor run that retrains — then `lambdaml runs`, `lambdaml
//! lineage` (forward and from a request id) and every page of `lambdaml ui` loaded in
//! headless Chromium (plots drawn, no console messages, screenshots kept).

#![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use serde_json::Value;

use crate::bin::{lambdaml, ok, walk};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The breast-cancer spec with `extra` sections written before `[promotion]`.
fn spec(dir: &Path, name: &str, extra: &str, replace: (&str, &str)) -> String {
    let base = std::fs::read_to_string(root().join("examples/specs/breast_cancer.toml")).unwrap();
    let text = base
        .replacen("[promotion]", &format!("{extra}\n[promotion]"), 1)
        .replacen(replace.0, replace.1, 1);
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_string()
}

fn newest_run(dir: &Path) -> Value {
    ok(dir, &["runs", "list"])["runs"][0].clone()
}

fn step<'a>(record: &'a Value, stage: &str) -> &'a Value {
    record["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["stage"] == stage)
        .unwrap_or_else(|| panic!("no {stage} step in {record}"))
}

fn versions(dir: &Path) -> usize {
    let registry: Value = serde_json::from_slice(
        &std::fs::read(dir.join("store/registry/breast-cancer.json")).unwrap(),
    )
    .unwrap();
    registry["versions"].as_object().unwrap().len()
}

#[test]
fn runs_lineage_caching_and_the_dashboard_over_a_whole_loop() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let data = root().join("data/sklearn_breast_cancer.csv");
    let base = root().join("examples/specs/breast_cancer.toml");

    // 1. A successful run: every stage recorded under one run id.
    ok(
        d,
        &[
            "train",
            "--spec",
            base.to_str().unwrap(),
            "--data",
            data.to_str().unwrap(),
        ],
    );
    let first = newest_run(d);
    let first_id = first["run"].as_str().unwrap().to_string();
    assert_eq!(first["status"], "succeeded", "{first}");
    assert_eq!(first["trigger"], "manual", "{first}");
    let record = ok(d, &["runs", "show", &first_id]);
    let stages: Vec<&str> = record["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["stage"].as_str().unwrap())
        .collect();
    assert_eq!(
        stages,
        ["ingest", "preprocess", "train", "evaluate", "deploy"],
        "{record}"
    );
    for s in record["steps"].as_array().unwrap() {
        assert_eq!(s["status"], "succeeded", "{s}");
        assert_eq!(s["attempts"], 1, "{s}");
        assert!(
            s["started_at"].is_string() && s["ended_at"].is_string(),
            "{s}"
        );
    }
    let version = step(&record, "train")["summary"]["version"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(versions(d), 1);

    // 2. A [monitor] change: the run reuses everything; nothing trains.
    let monitor_only = spec(
        d,
        "monitor.toml",
        "[monitor]\ndrift_share = 0.3\n",
        ("", ""),
    );
    ok(d, &["train", "--spec", &monitor_only]);
    let cached = ok(d, &["runs", "show", newest_run(d)["run"].as_str().unwrap()]);
    for stage in ["preprocess", "train", "evaluate"] {
        let s = step(&cached, stage);
        assert_eq!(s["status"], "skipped-cached", "{stage}: {s}");
    }
    assert_eq!(step(&cached, "train")["reused_run"], first_id.as_str());
    assert_eq!(versions(d), 1, "a [monitor] change never retrains");

    // 3. A [train] change: preprocess reused, exactly one training.
    let train_change = spec(
        d,
        "train.toml",
        "[monitor]\ndrift_share = 0.3\n",
        ("tolerance = 1e-6", "tolerance = 1e-7"),
    );
    ok(d, &["train", "--spec", &train_change]);
    let retrained = ok(d, &["runs", "show", newest_run(d)["run"].as_str().unwrap()]);
    assert_eq!(step(&retrained, "preprocess")["status"], "skipped-cached");
    assert_eq!(step(&retrained, "train")["status"], "succeeded");
    assert_eq!(versions(d), 2, "a [train] change trains exactly once");
    // The same again is cached; --no-cache trains anyway.
    ok(d, &["train", "--spec", &train_change]);
    assert_eq!(versions(d), 2);
    ok(d, &["train", "--spec", &train_change, "--no-cache"]);
    assert_eq!(versions(d), 3, "--no-cache forces a run");
    // Back to the first spec's sections, with the monitor settings the loop below uses.
    ok(d, &["train", "--spec", &monitor_only]);

    // 4. Drifted traffic with its labels, then a monitor run that retrains.
    let text = std::fs::read_to_string(&data).unwrap();
    let mut lines = text.lines();
    let header = lines.next().unwrap();
    let label_at = header.split(',').position(|h| h == "target").unwrap();
    let mut drifted = vec![header.to_string()];
    let mut labels = Vec::new();
    for line in lines.take(200) {
        let mut cells: Vec<String> = line.split(',').map(str::to_string).collect();
        labels.push(cells[label_at].clone());
        for c in cells.iter_mut().take(10) {
            *c = (c.parse::<f64>().unwrap() * 2.5).to_string();
        }
        drifted.push(cells.join(","));
    }
    std::fs::write(d.join("drifted.csv"), drifted.join("\n")).unwrap();
    ok(
        d,
        &[
            "predict",
            "--model",
            "breast-cancer",
            "--input",
            "drifted.csv",
        ],
    );
    let capture = walk(&d.join("store/captures/breast-cancer"))
        .into_iter()
        .find(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .unwrap();
    let first_line = std::fs::read_to_string(&capture).unwrap();
    let captured: Value = serde_json::from_str(first_line.lines().next().unwrap()).unwrap();
    let request_id = captured["request_id"].as_str().unwrap().to_string();
    let mut feedback = String::from("request_id,row,label\n");
    for (i, label) in labels.iter().enumerate() {
        feedback.push_str(&format!("{request_id},{i},{label}\n"));
    }
    std::fs::write(d.join("labels.csv"), feedback).unwrap();
    ok(
        d,
        &[
            "feedback",
            "--model",
            "breast-cancer",
            "--file",
            "labels.csv",
        ],
    );
    let monitored = ok(
        d,
        &[
            "monitor",
            "--model",
            "breast-cancer",
            "--window",
            "1h",
            "--run",
        ],
    );
    assert_eq!(
        monitored["report"]["retrain"]["decision"], "sent",
        "{}",
        monitored["report"]["verdict"]
    );
    let runs = ok(d, &["runs", "list"]);
    let retrain = runs["runs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["trigger"] == "retrain")
        .unwrap_or_else(|| panic!("a retrain run is recorded: {runs}"));
    let retrain_record = ok(d, &["runs", "show", retrain["run"].as_str().unwrap()]);
    assert_eq!(retrain["status"], "succeeded", "{retrain_record}");
    assert!(
        retrain_record["trigger"]["report"]
            .as_str()
            .unwrap()
            .ends_with("/report.json"),
        "{retrain_record}"
    );

    // 5. Lineage forward, and from the request id.
    let production = captured["version"].as_str().unwrap().to_string();
    let lineage = ok(d, &["lineage", "breast-cancer", &production]);
    assert_eq!(
        lineage["raw"]["key"], "raw/breast-cancer/sklearn_breast_cancer.csv",
        "{lineage}"
    );
    assert_eq!(lineage["dataset"]["rows"], 569);
    assert!(lineage["preprocess"]["run_id"].is_string());
    assert!(lineage["training"]["training"]["steps"].as_u64().unwrap() > 0);
    assert!(
        lineage["evaluation"]["metrics"]["roc_auc"]
            .as_f64()
            .unwrap()
            > 0.9
    );
    assert!(
        lineage["decisions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|h| h["action"] == "promote"),
        "{lineage}"
    );
    let served = &lineage["served"][0];
    assert_eq!(served["rows"], 200, "{lineage}");
    assert_eq!(
        lineage["retrains"][0]["run"], retrain["run"],
        "the retrain it caused: {lineage}"
    );
    let production_lineage = ok(d, &["lineage", "breast-cancer"]);
    assert!(
        production_lineage["version"].is_string(),
        "no VERSION: production's lineage"
    );
    let from_request = ok(d, &["lineage", "--request-id", &request_id]);
    assert_eq!(from_request["version"], production.as_str());
    assert_eq!(from_request["lineage"]["version"], production.as_str());
    let (found, stdout, stderr) = lambdaml(d, &["lineage", "breast-cancer", "nope"]);
    let stderr = format!("{stdout}{stderr}");
    assert!(!found);
    assert!(stderr.contains(&version), "names the versions: {stderr}");
    let (found, stdout, stderr) = lambdaml(d, &["lineage", "--request-id", "no-such-request"]);
    let stderr = format!("{stdout}{stderr}");
    assert!(!found && stderr.contains("no captured request"), "{stderr}");

    // 6. A failing run: dead-lettered, with the reason, and listed as failed (last: its
    // spec, left in specs/, makes the dataset ambiguous for any later ingest).
    let broken = spec(
        d,
        "broken.toml",
        "",
        ("label = \"target\"", "label = \"diagnosis\""),
    )
    .to_string();
    let text = std::fs::read_to_string(&broken)
        .unwrap()
        .replacen("name = \"breast-cancer\"", "name = \"bc-broken\"", 1)
        .replace("[dataset.columns.target]", "[dataset.columns.diagnosis]");
    std::fs::write(&broken, text).unwrap();
    let (success, _, _) = lambdaml(d, &["train", "--spec", &broken]);
    assert!(!success, "a spec naming a missing label column fails");
    let failed = ok(d, &["runs", "list", "--status", "failed"]);
    let failed_run = failed["runs"][0]["run"].as_str().unwrap().to_string();
    assert_eq!(failed["runs"].as_array().unwrap().len(), 1, "{failed}");
    let failed_record = ok(d, &["runs", "show", &failed_run]);
    let s = step(&failed_record, "preprocess");
    assert_eq!(s["status"], "dead-lettered", "{s}");
    assert!(
        s["reason"].as_str().unwrap().contains("diagnosis"),
        "the reason names the column: {s}"
    );

    // 7. A corrupt record and one from a newer lambdaml are named, never fatal.
    for (run, body) in [
        ("manual-corrupt", "{".to_string()),
        (
            "manual-future",
            r#"{"schema": 99, "run": "manual-future"}"#.to_string(),
        ),
    ] {
        let folder = d.join("store/runs").join(run);
        std::fs::create_dir_all(&folder).unwrap();
        std::fs::write(folder.join("record.json"), body).unwrap();
    }
    let listing = ok(d, &["runs", "list"]);
    let unreadable = listing["unreadable"].to_string();
    assert!(
        unreadable.contains("corrupt") && unreadable.contains("newer lambdaml"),
        "{listing}"
    );

    // 8. The dashboard, in headless Chromium.
    let (refused, stdout, stderr) = lambdaml(d, &["ui", "--addr", "nonsense"]);
    assert!(!refused && format!("{stdout}{stderr}").contains("HOST:PORT"));
    let (refused, stdout, stderr) = lambdaml(d, &["ui", "--addr", "0.0.0.0:0"]);
    let stderr = format!("{stdout}{stderr}");
    assert!(!refused && stderr.contains("--public"), "{stderr}");
    let ui = Ui::start(d);
    let report_html = monitored["html_key"].as_str().unwrap().to_string();
    let pages = [
        ("index", "/".to_string(), 0),
        ("model", "/models/breast-cancer".to_string(), 3),
        ("runs", "/runs".to_string(), 0),
        ("run", format!("/runs/{first_id}"), 0),
        ("failed-run", format!("/runs/{failed_run}"), 0),
        ("lineage", format!("/lineage/breast-cancer/{production}"), 0),
        ("report", format!("/report/{report_html}"), 6),
    ];
    for (name, path, min_plots) in &pages {
        let (status, body) = ui.get(path);
        assert_eq!(status, 200, "{path}: {body}");
        assert!(
            !body.contains("http://") && !body.contains("https://"),
            "{path} fetches nothing"
        );
        check_in_chromium(&ui.url(path), name, *min_plots);
    }
    let (_, index) = ui.get("/");
    assert!(
        index.contains(&production) && index.contains("Unreadable"),
        "{index}"
    );
    let (_, failed_page) = ui.get(&format!("/runs/{failed_run}"));
    assert!(failed_page.contains("dead-lettered") && failed_page.contains("diagnosis"));
    let (status, body) = ui.get("/models/nope");
    assert_eq!(status, 404);
    assert!(body.contains("breast-cancer"), "names the models: {body}");
    let (status, _) = ui.get("/report/registry/breast-cancer.json");
    assert_eq!(status, 404, "only monitoring reports are served");
    let (status, _) = ui.request("POST / HTTP/1.1");
    assert_eq!(status, 405, "read-only");
}

/// `lambdaml ui` on a free loopback port, stopped when dropped.
struct Ui {
    child: Child,
    addr: String,
}

impl Ui {
    fn start(dir: &Path) -> Ui {
        let mut child = Command::new(env!("CARGO_BIN_EXE_lambdaml"))
            .current_dir(dir)
            .args(["--store", "file://store", "ui", "--addr", "127.0.0.1:0"])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let addr = line
            .split("http://")
            .nth(1)
            .and_then(|s| s.split('/').next())
            .unwrap_or_else(|| panic!("the first line names the address: {line}"))
            .to_string();
        Ui { child, addr }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn request(&self, line: &str) -> (u16, String) {
        let mut stream = std::net::TcpStream::connect(&self.addr).unwrap();
        write!(
            stream,
            "{line}\r\nHost: {}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
            self.addr
        )
        .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        let status = response
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let body = response
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default();
        (status, body)
    }

    fn get(&self, path: &str) -> (u16, String) {
        self.request(&format!("GET {path} HTTP/1.1"))
    }
}

impl Drop for Ui {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Loads `url` in headless Chromium: every plot drawn (at least `min_plots`), no console
/// message at all (the pages log nothing, so any is an error), a screenshot kept under the
/// target directory.
fn check_in_chromium(url: &str, name: &str, min_plots: usize) {
    let chromium = ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|c| Command::new(c).arg("--version").output().is_ok());
    let Some(chromium) = chromium else {
        assert!(
            std::env::var_os("LAMBDAML_REQUIRE_CHROMIUM").is_none(),
            "LAMBDAML_REQUIRE_CHROMIUM is set but no chromium is installed"
        );
        let _ = writeln!(
            std::io::stderr(),
            "\n*** SKIPPED the dashboard's Chromium check of {url}: no chromium. `make test` installs it and runs it. ***\n"
        );
        return;
    };
    let profile = tempfile::tempdir().unwrap();
    let shots = Path::new(env!("CARGO_TARGET_TMPDIR")).join("ui-screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    let common = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--hide-scrollbars",
        "--virtual-time-budget=5000",
        "--enable-logging=stderr",
        "--v=0",
    ];
    let dom = Command::new(chromium)
        .args(common)
        .arg(format!(
            "--user-data-dir={}",
            profile.path().join("a").display()
        ))
        .arg("--dump-dom")
        .arg(url)
        .output()
        .unwrap();
    let html = String::from_utf8_lossy(&dom.stdout);
    let stderr = String::from_utf8_lossy(&dom.stderr);
    let console: Vec<&str> = stderr.lines().filter(|l| l.contains(":CONSOLE")).collect();
    assert!(console.is_empty(), "{url}: console messages: {console:#?}");
    let attr = |name: &str| -> Option<usize> {
        let i = html.find(&format!("{name}=\""))? + name.len() + 2;
        html[i..].split('"').next()?.parse().ok()
    };
    let (rendered, total) = (attr("data-plots-rendered"), attr("data-plots-total"));
    assert_eq!(
        rendered, total,
        "{url}: Chromium drew {rendered:?} of {total:?} plots"
    );
    assert!(
        total.unwrap_or(0) >= min_plots,
        "{url}: {total:?} plots, expected at least {min_plots}"
    );
    let shot = shots.join(format!("{name}.png"));
    let out = Command::new(chromium)
        .args(common)
        .arg(format!(
            "--user-data-dir={}",
            profile.path().join("b").display()
        ))
        .arg("--window-size=1280,1800")
        .arg(format!("--screenshot={}", shot.display()))
        .arg(url)
        .output()
        .unwrap();
    assert!(
        shot.is_file(),
        "{url}: no screenshot; {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The dashboard after the demo's loop (45 years of the weather stream, retrains, a
/// shadow): every page in headless Chromium, the plots drawn, the retrains on the model
/// page, a retrain's run and the production version's lineage.
#[test]
fn the_dashboard_after_the_demo() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let out = Command::new(env!("CARGO_BIN_EXE_lambdaml"))
        .current_dir(d)
        .env("RAYON_NUM_THREADS", "1")
        .args(["--store", "file://store", "demo"])
        .output()
        .unwrap();
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{printed}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        printed.contains("lambdaml --store file://store ui"),
        "the demo ends with the ui command: {printed}"
    );
    let runs = ok(d, &["runs", "list", "--limit", "100"]);
    let runs = runs["runs"].as_array().unwrap();
    let retrains: Vec<&Value> = runs.iter().filter(|r| r["trigger"] == "retrain").collect();
    assert!(retrains.len() >= 5, "{runs:?}");
    assert!(runs.iter().all(|r| r["status"] == "succeeded"), "{runs:?}");
    let registry: Value =
        serde_json::from_slice(&std::fs::read(d.join("store/registry/weather-rain.json")).unwrap())
            .unwrap();
    let production = registry["production"].as_str().unwrap();
    let lineage = ok(d, &["lineage", "weather-rain", production]);
    assert!(
        lineage["pipeline_run"]
            .as_str()
            .unwrap()
            .starts_with("retrain-"),
        "{lineage}"
    );

    let ui = Ui::start(d);
    let (_, model_page) = ui.get("/models/weather-rain");
    let retrain_marks = model_page.matches("class=\"mark retrain\"").count();
    assert!(
        retrain_marks >= 2 * retrains.len(),
        "retrains marked on both monitoring plots: {retrain_marks}"
    );
    let report = model_page
        .split("href=\"/report/")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .unwrap()
        .to_string();
    let pages = [
        ("demo-index", "/".to_string(), 0),
        ("demo-model", "/models/weather-rain".to_string(), 3),
        ("demo-runs", "/runs".to_string(), 0),
        (
            "demo-retrain-run",
            format!("/runs/{}", retrains[0]["run"].as_str().unwrap()),
            0,
        ),
        (
            "demo-lineage",
            format!("/lineage/weather-rain/{production}"),
            0,
        ),
        ("demo-report", format!("/report/{report}"), 6),
    ];
    for (name, path, min_plots) in &pages {
        let (status, body) = ui.get(path);
        assert_eq!(status, 200, "{path}: {body}");
        check_in_chromium(&ui.url(path), name, *min_plots);
    }
}
