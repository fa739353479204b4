//! How the commands show stage outcomes and queue counts to people.

use lambdaml::message::Stage;
use lambdaml::queue::QueueStats;
use lambdaml::stage::Handled;

pub fn stats_map(stats: &[(Stage, QueueStats)]) -> serde_json::Value {
    serde_json::Value::Object(
        stats
            .iter()
            .map(|(s, q)| (s.to_string(), serde_json::to_value(q).unwrap_or_default()))
            .collect(),
    )
}

pub fn render_handled(handled: &[Handled]) -> String {
    let mut s = String::new();
    if handled.is_empty() {
        s.push_str("no messages were waiting\n");
    }
    for h in handled {
        let detail = match &h.detail {
            serde_json::Value::String(text) => text.clone(),
            other => summarize(other),
        };
        s.push_str(&format!("{:<10} {:<11} {}\n", h.stage, h.outcome, detail));
    }
    s
}

fn summarize(v: &serde_json::Value) -> String {
    let field = |k: &str| {
        v.get(k)
            .map(|x| x.to_string().trim_matches('"').to_string())
    };
    if let Some(verdict) = field("verdict") {
        format!(
            "{} {}: {verdict} — {}",
            field("model").unwrap_or_default(),
            field("version").unwrap_or_default(),
            field("reason").unwrap_or_default()
        )
    } else if let Some(status) = field("status") {
        format!(
            "{} {}: {status} ({} steps, loss {})",
            field("model").unwrap_or_default(),
            field("version").unwrap_or_default(),
            field("steps").unwrap_or_default(),
            field("loss").unwrap_or_default()
        )
    } else if let (Some(rows), Some(_)) = (field("holdout_rows"), v.get("metrics")) {
        format!(
            "{} {}: {rows} holdout rows, metrics {}{}",
            field("model").unwrap_or_default(),
            field("version").unwrap_or_default(),
            v.get("metrics").map(|m| m.to_string()).unwrap_or_default(),
            v.get("champion")
                .filter(|c| !c.is_null())
                .map(|c| format!(", champion {c}"))
                .unwrap_or_default()
        )
    } else if let Some(run) = field("run_id") {
        format!(
            "run {run}: {} train / {} holdout rows, {} features",
            field("train_rows").unwrap_or_default(),
            field("holdout_rows").unwrap_or_default(),
            field("features").unwrap_or_default()
        )
    } else if let Some(version) = field("version") {
        format!(
            "dataset {} version {version}: {} rows, {} rejected",
            field("dataset").unwrap_or_default(),
            field("rows").unwrap_or_default(),
            field("rejected").unwrap_or_default()
        )
    } else {
        v.to_string()
    }
}

pub fn render_stats(stats: &[(Stage, QueueStats)]) -> String {
    let mut s = String::from("queue       waiting  in-flight  dead-lettered\n");
    for (stage, q) in stats {
        s.push_str(&format!(
            "{:<11} {:>7}  {:>9}  {:>13}\n",
            stage.as_str(),
            q.visible,
            q.in_flight,
            q.dead
        ));
    }
    s
}
