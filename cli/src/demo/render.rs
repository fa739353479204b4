//! The demo's printout: what happened before the stream, then the stream's table, the
//! versions, the queues and what to run next.

use lambdaml::layout;
use lambdaml::message::Stage;

use super::{DemoHead, DemoReport};
use crate::render::render_stats;

pub(super) fn render(r: &DemoHead<'_>) -> String {
    let d = &r.dataset;
    let prefix = layout::dataset_version(&d.dataset, &d.version);
    let mut s = format!(
        "1. ingest    dataset {} version {}{} in {:.2}s\n             {} valid rows → {prefix}/data.parquet, {} quarantined → rejected.jsonl\n",
        d.dataset,
        d.version,
        if d.created {
            ""
        } else {
            " (already in the store: nothing rewritten)"
        },
        r.ingest_seconds,
        d.rows,
        d.rejected,
    );
    for row in r.first_rejected {
        let reasons: Vec<String> = row["reasons"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|x| {
                format!(
                    "{}: {}",
                    x["column"].as_str().unwrap_or("row"),
                    x["reason"].as_str().unwrap_or_default()
                )
            })
            .collect();
        s.push_str(&format!(
            "             quarantined line {}: {}\n",
            row["line"],
            reasons.join("; ")
        ));
    }
    s.push_str("             schema: ");
    s.push_str(
        &r.schema
            .columns
            .iter()
            .map(|c| format!("{} {:?}", c.name, c.kind).to_lowercase())
            .collect::<Vec<_>>()
            .join(", "),
    );
    s.push('\n');
    if let Some(rain) = r.profile.columns.get(&r.schema.label) {
        let total: u64 = rain.frequencies.values().sum();
        let shares: Vec<String> = rain
            .frequencies
            .iter()
            .map(|(k, n)| format!("{k}: {:.1} %", 100.0 * *n as f64 / total.max(1) as f64))
            .collect();
        s.push_str(&format!(
            "             label {}: {}\n",
            r.schema.label,
            shares.join(", ")
        ));
    }
    for run in r.runs {
        s.push_str(&format!(
            "2. preprocess run {} ({:.2}s): time-ordered split {} train / {} holdout rows,\n             {} features fitted on the training split only → runs/{}/\n",
            run.run_id, r.pipeline_seconds, run.train_rows, run.holdout_rows, run.features, run.run_id
        ));
        for d in &run.dropped {
            s.push_str(&format!("             dropped {d}\n"));
        }
    }
    s.push_str(&format!(
        "3. redelivery the same file again → version {} ({}), no second dataset version or run\n",
        r.redelivery.version,
        if r.redelivery.created {
            "written again!"
        } else {
            "nothing written"
        }
    ));
    let reg = &r.registry;
    if let Some(v) = reg.versions.get(r.champion) {
        s.push_str(&format!(
            "4. train      {} {}: logistic regression by L-BFGS → models/{}/{}/\n   evaluate   on the {} held-out days: {}\n   deploy     promoted (first version)\n",
            reg.model,
            v.version,
            reg.model,
            v.version,
            r.runs.first().map(|run| run.holdout_rows).unwrap_or_default(),
            metric_line(&v.metrics),
        ));
    }
    s.push_str(&format!(
        "5. challenger the same model on `visibility` alone → {}: {} — {}\n",
        r.challenger["version"].as_str().unwrap_or_default(),
        r.challenger["verdict"].as_str().unwrap_or_default(),
        r.challenger["reason"].as_str().unwrap_or_default(),
    ));
    s.push_str(&format!(
        "6. rollback   an operator promoted it by hand anyway; `lambdaml models rollback {}` → {} is back in production\n",
        reg.model,
        reg.production.as_deref().unwrap_or("none"),
    ));
    s.push('\n');
    s
}

pub(super) fn render_tail(
    r: &DemoReport,
    store_url: &str,
    stats: &[(Stage, lambdaml::queue::QueueStats)],
) -> String {
    let st = &r.stream;
    let every = st.periods.len();
    let mut s = format!(
        "\n   {} days in {} yearly periods ({:.1}s): mean accuracy {:.4} with {} retrains; each passing version\n   entered as the shadow ([rollout] mode = \"shadow\") and the monitor, comparing it with production on\n   the next year's live days, promoted {} and retired {};\n   the first version never retrained: {:.4}; retraining every year would be {} retrains.\n",
        st.days,
        every,
        st.seconds,
        st.mean_accuracy,
        st.retrains,
        st.shadows_promoted,
        st.shadows_retired,
        st.never_retrained_accuracy,
        every
    );
    s.push_str(&format!(
        "   {} requests captured → captures/weather-rain/…, {} true labels → feedback/weather-rain/…\n",
        st.captured, st.feedback_labels
    ));
    s.push_str(&format!(
        "   a typo is refused with 422: {}\n",
        st.rejected_example["error"].as_str().unwrap_or_default()
    ));
    let html = match store_url.strip_prefix("file://") {
        Some(root) => std::path::Path::new(root)
            .join(&st.last_report)
            .display()
            .to_string(),
        None => st.last_report.clone(),
    };
    s.push_str(&format!("   last report: {html}\n"));
    s.push_str(&super::batch::render_batch(&r.batch, &r.registry.model));
    s.push('\n');
    let reg = &r.registry;
    s.push_str("model versions:\n");
    let mut versions: Vec<_> = reg.versions.values().collect();
    versions.sort_by_key(|v| v.number);
    for v in versions {
        s.push_str(&format!(
            "  #{} {}  {:<12} {}\n",
            v.number,
            v.version,
            format!("{:?}", v.status).to_lowercase(),
            metric_line(&v.metrics)
        ));
    }
    s.push('\n');
    s.push_str(&render_stats(stats));
    let store = if store_url == "file://./.lambdaml" {
        String::new()
    } else {
        format!(" --store {store_url}")
    };
    let production = reg.production.as_deref().unwrap_or("VERSION");
    s.push_str(&format!(
        "\nInspect: lambdaml report --model weather-rain --open · lambdaml runs list · lambdaml lineage weather-rain {production}\n\
         Serve:   lambdaml serve   then   curl 127.0.0.1:8080/v2/models/weather-rain   (its inputs; README shows a request)\n\
         Look:    lambdaml{store} ui   then open http://127.0.0.1:8090/   (the loop at a glance: versions, monitoring over time, runs, lineage)\n"
    ));
    s
}

fn metric_line(metrics: &std::collections::BTreeMap<String, f64>) -> String {
    ["roc_auc", "accuracy", "f1_macro", "log_loss"]
        .iter()
        .filter_map(|k| metrics.get(*k).map(|v| format!("{k} {v:.4}")))
        .collect::<Vec<_>>()
        .join(", ")
}
