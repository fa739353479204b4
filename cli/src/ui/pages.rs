//! The dashboard's pages, each built from what the store holds when it is asked.

use std::collections::BTreeMap;
use std::fmt::Write;

use lambdaml::record::{RunRecord, StepStatus};
use lambdaml::registry::{Action, Registry};
use lambdaml::store::ObjectStore;

use super::plot::{Mark, Series, seconds, time_plot};
use super::{Page, PageError, esc};
use crate::history::{self, StoredReport};

/// The holdout metric a version table leads with.
fn lead_metric(metrics: &BTreeMap<String, f64>) -> Option<(&'static str, f64)> {
    ["accuracy", "roc_auc", "rmse", "r2", "mae"]
        .into_iter()
        .find_map(|m| metrics.get(m).map(|v| (m, *v)))
}

fn status_class(status: &str) -> &'static str {
    match status {
        "succeeded" | "skipped-cached" | "production" | "promote" => "ok",
        "failed" | "dead-lettered" | "rejected" => "bad",
        "running" | "queued" | "retrying" | "shadow" | "canary" => "warn",
        _ => "",
    }
}

fn run_link(run: &str) -> String {
    format!(r#"<a href="/runs/{0}">{0}</a>"#, esc(run))
}

fn fmt_metrics(m: &BTreeMap<String, f64>) -> String {
    m.iter()
        .map(|(k, v)| format!("{k} {v:.4}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn runs_table(records: &[&RunRecord]) -> String {
    if records.is_empty() {
        return r#"<p class="empty">no runs recorded yet</p>"#.into();
    }
    let mut s = String::from(
        "<table><tr><th>run</th><th>status</th><th>trigger</th><th>models</th><th>steps</th><th>started</th><th>seconds</th><th>failure</th></tr>",
    );
    for r in records {
        let failure = r
            .steps
            .iter()
            .find(|st| {
                matches!(
                    st.status,
                    StepStatus::DeadLettered | StepStatus::Failed | StepStatus::Retrying
                )
            })
            .map(|st| {
                format!(
                    "{} {}: {}",
                    st.stage,
                    st.model.as_deref().unwrap_or(""),
                    st.reason.as_deref().unwrap_or("")
                )
            })
            .unwrap_or_default();
        let status = r.status();
        let _ = write!(
            s,
            r#"<tr><td>{}</td><td class="{}">{}</td><td>{:?}: {}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.1}</td><td class="bad">{}</td></tr>"#,
            run_link(&r.run),
            status_class(status.as_str()),
            status,
            r.trigger.kind,
            esc(&r.trigger.detail),
            esc(&r.models().join(", ")),
            r.steps.len(),
            esc(&r.created_at),
            r.seconds(),
            esc(&failure)
        );
    }
    s.push_str("</table>");
    s
}

fn unreadable(items: &[history::Unreadable]) -> String {
    if items.is_empty() {
        return String::new();
    }
    let mut s = String::from("<h2>Unreadable documents</h2><ul>");
    for u in items {
        let _ = write!(
            s,
            "<li><code>{}</code>: {}</li>",
            esc(&u.key),
            esc(&u.reason)
        );
    }
    s.push_str("</ul>");
    s
}

pub async fn index(store: &dyn ObjectStore) -> Page {
    let registries = history::registries(store).await?;
    let mut bad = Vec::new();
    let mut s = String::from("<h1>Models</h1>");
    if registries.is_empty() {
        s.push_str(r#"<p class="empty">no models registered yet: <code>lambdaml demo</code> or <code>lambdaml train --spec SPEC --data FILE</code></p>"#);
    } else {
        s.push_str("<table><tr><th>model</th><th>production</th><th>shadow</th><th>canary</th><th>versions</th><th>latest decision</th><th>latest monitoring</th></tr>");
    }
    for (model, registry) in &registries {
        let r = match registry {
            Ok(r) => r,
            Err(u) => {
                bad.push(u.clone());
                continue;
            }
        };
        let slot = |slot: &Option<lambdaml::registry::RolloutSlot>| {
            slot.as_ref()
                .map(|s| format!("{} ({:.0} %)", esc(&s.version), s.weight * 100.0))
                .unwrap_or_else(|| "—".into())
        };
        let latest = r
            .history
            .last()
            .map(|h| format!("{} {} {}", esc(&h.at), h.action.event(), esc(&h.version)));
        let monitoring = match history::latest_report(store, model).await? {
            Some(Ok(rep)) => format!(
                r#"{}: drift share {:.2}, <span class="{}">{}</span> — <a href="/report/{}">report</a>"#,
                esc(&rep.report.at),
                rep.report.data_drift.drift_share,
                if rep.report.verdict.breach {
                    "bad"
                } else {
                    "ok"
                },
                if rep.report.verdict.breach {
                    "breach"
                } else {
                    "healthy"
                },
                esc(&rep.html_key)
            ),
            Some(Err(u)) => format!("unreadable: {}", esc(&u.reason)),
            None => "none yet".into(),
        };
        let _ = write!(
            s,
            r#"<tr><td><a href="/models/{0}">{0}</a></td><td class="ok">{1}</td><td>{2}</td><td>{3}</td><td>{4}</td><td>{5}</td><td>{6}</td></tr>"#,
            esc(model),
            r.production
                .as_deref()
                .map(|v| format!(r#"<a href="/lineage/{}/{1}">{1}</a>"#, esc(model), esc(v)))
                .unwrap_or_else(|| "none".into()),
            slot(&r.shadow),
            slot(&r.canary),
            r.versions.len(),
            latest.unwrap_or_default(),
            monitoring
        );
    }
    if !registries.is_empty() {
        s.push_str("</table>");
    }
    let records = history::records(store).await?;
    let ok: Vec<&RunRecord> = records.iter().filter_map(|r| r.as_ref().ok()).collect();
    s.push_str(r#"<h2>Recent runs</h2>"#);
    s.push_str(&runs_table(
        &ok.iter().take(10).copied().collect::<Vec<_>>(),
    ));
    let _ = write!(s, r#"<p><a href="/runs">all {} runs</a></p>"#, ok.len());
    bad.extend(records.into_iter().filter_map(Result::err));
    s.push_str(&unreadable(&bad));
    Ok(s)
}

fn version_plot(r: &Registry) -> String {
    let mut points = Vec::new();
    let mut name = "holdout metric";
    for v in r.versions.values() {
        if let (Some(t), Some((m, value))) = (seconds(&v.registered_at), lead_metric(&v.metrics)) {
            points.push((t, value));
            name = m;
        }
    }
    let marks: Vec<Mark> = r
        .history
        .iter()
        .filter_map(|h| {
            let class = match h.action {
                Action::Promote => "promote",
                Action::Rollback | Action::Retire => "rollback",
                _ => return None,
            };
            Some(Mark {
                at: seconds(&h.at)?,
                label: format!("{} {} {}", h.at, h.action.event(), h.version),
                class,
            })
        })
        .collect();
    time_plot(
        "versions",
        "Versions: holdout metric when registered; green promoted, amber rolled back or retired",
        &[Series {
            name: format!("holdout {name}"),
            class: "ref",
            points,
        }],
        &marks,
        None,
    )
}

fn monitoring_plots(reports: &[&StoredReport]) -> String {
    let at = |r: &StoredReport| seconds(&r.report.at);
    let retrains: Vec<Mark> = reports
        .iter()
        .filter(|r| r.report.retrain.decision == "sent")
        .filter_map(|r| {
            Some(Mark {
                at: at(r)?,
                label: format!("{} retrain: {}", r.report.at, r.report.retrain.detail),
                class: "retrain",
            })
        })
        .collect();
    let metric_name = reports
        .iter()
        .map(|r| r.report.performance.metric.clone())
        .find(|m| !m.is_empty())
        .unwrap_or_else(|| "metric".into());
    let live: Vec<(f64, f64)> = reports
        .iter()
        .filter_map(|r| Some((at(r)?, r.report.performance.current?)))
        .collect();
    let baseline: Vec<(f64, f64)> = reports
        .iter()
        .filter_map(|r| Some((at(r)?, r.report.performance.baseline?)))
        .collect();
    let drift: Vec<(f64, f64)> = reports
        .iter()
        .filter_map(|r| Some((at(r)?, r.report.data_drift.drift_share)))
        .collect();
    let threshold = reports
        .last()
        .map(|r| r.report.data_drift.drift_share_threshold);
    let mut s = time_plot(
        "live-metric",
        &format!("Live {metric_name} per monitoring window; red lines are retrains"),
        &[
            Series {
                name: "live".into(),
                class: "cur",
                points: live,
            },
            Series {
                name: "holdout of the version".into(),
                class: "ref",
                points: baseline,
            },
        ],
        &retrains,
        None,
    );
    s.push_str(&time_plot(
        "drift-share",
        "Share of features drifted per window",
        &[Series {
            name: "drift share".into(),
            class: "alt",
            points: drift,
        }],
        &retrains,
        threshold.map(|t| (t, "threshold")),
    ));
    s
}

pub async fn model(store: &dyn ObjectStore, model: &str) -> Page {
    let registry = match history::registry(store, model).await? {
        Some(Ok(r)) => r,
        Some(Err(u)) => {
            return Ok(format!("<h1>{}</h1>{}", esc(model), unreadable(&[u])));
        }
        None => {
            let models: Vec<String> = history::registries(store).await?.into_keys().collect();
            return Err(PageError::NotFound(format!(
                "there is no model {model:?}; the models are: {}",
                if models.is_empty() {
                    "none yet".into()
                } else {
                    models.join(", ")
                }
            )));
        }
    };
    let reports = history::reports(store, model).await?;
    let ok: Vec<&StoredReport> = reports.iter().filter_map(|r| r.as_ref().ok()).collect();
    let mut s = format!(
        "<h1>{}</h1><p>production <b>{}</b>",
        esc(model),
        esc(registry.production.as_deref().unwrap_or("none"))
    );
    for (role, slot) in [("shadow", &registry.shadow), ("canary", &registry.canary)] {
        if let Some(slot) = slot {
            let _ = write!(
                s,
                "; {role} <b>{}</b> ({:.0} %, since {})",
                esc(&slot.version),
                slot.weight * 100.0,
                esc(&slot.since)
            );
        }
    }
    s.push_str("</p>");
    s.push_str(&version_plot(&registry));
    s.push_str(&monitoring_plots(&ok));

    s.push_str("<h2>Versions</h2><table><tr><th>#</th><th>version</th><th>status</th><th>registered</th><th>holdout metrics</th><th>dataset version</th></tr>");
    let mut versions: Vec<_> = registry.versions.values().collect();
    versions.sort_by_key(|v| std::cmp::Reverse(v.number));
    for v in versions {
        let status = format!("{:?}", v.status).to_lowercase();
        let _ = write!(
            s,
            r#"<tr><td>{}</td><td><a href="/lineage/{}/{}">{}</a></td><td class="{}">{}</td><td>{}</td><td>{}</td><td>{}</td></tr>"#,
            v.number,
            esc(model),
            esc(&v.version),
            esc(&v.version),
            status_class(&status),
            status,
            esc(&v.registered_at),
            esc(&fmt_metrics(&v.metrics)),
            esc(&v.dataset_version)
        );
    }
    s.push_str("</table><h2>Registry history</h2><table><tr><th>at</th><th>action</th><th>version</th><th>previous</th><th>by</th><th>why</th></tr>");
    for h in registry.history.iter().rev() {
        let _ = write!(
            s,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&h.at),
            h.action.event(),
            esc(&h.version),
            esc(h.previous.as_deref().unwrap_or("")),
            esc(&h.actor),
            esc(&h.reason)
        );
    }
    s.push_str("</table><h2>Monitoring reports</h2>");
    if ok.is_empty() {
        s.push_str(
            r#"<p class="empty">no monitoring reports yet: <code>lambdaml monitor</code></p>"#,
        );
    } else {
        s.push_str("<table><tr><th>at</th><th>version</th><th>requests</th><th>drift share</th><th>live metric</th><th>verdict</th><th>decision</th><th></th></tr>");
        for r in ok.iter().rev() {
            let rep = &r.report;
            let _ = write!(
                s,
                r#"<tr><td>{}</td><td>{}</td><td>{}</td><td>{:.2}</td><td>{}</td><td class="{}">{}</td><td>{}</td><td><a href="/report/{}">report</a></td></tr>"#,
                esc(&rep.at),
                esc(&rep.version),
                rep.captures.records_in_window,
                rep.data_drift.drift_share,
                rep.performance
                    .current
                    .map(|m| format!("{m:.4}"))
                    .unwrap_or_else(|| "—".into()),
                if rep.verdict.breach { "bad" } else { "ok" },
                esc(&if rep.verdict.breach {
                    rep.verdict.reasons.join("; ")
                } else {
                    "healthy".into()
                }),
                esc(&rep.retrain.decision),
                esc(&r.html_key)
            );
        }
        s.push_str("</table>");
    }
    let records = history::records(store).await?;
    let mine: Vec<&RunRecord> = records
        .iter()
        .filter_map(|r| r.as_ref().ok())
        .filter(|r| r.models().iter().any(|m| m == model))
        .take(20)
        .collect();
    s.push_str("<h2>Runs</h2>");
    s.push_str(&runs_table(&mine));
    let bad: Vec<history::Unreadable> = reports.into_iter().filter_map(Result::err).collect();
    s.push_str(&unreadable(&bad));
    Ok(s)
}

pub async fn runs(store: &dyn ObjectStore) -> Page {
    let records = history::records(store).await?;
    let ok: Vec<&RunRecord> = records.iter().filter_map(|r| r.as_ref().ok()).collect();
    let failed = ok
        .iter()
        .filter(|r| r.status() == lambdaml::record::RunStatus::Failed)
        .count();
    let mut s = format!("<h1>Runs</h1><p>{} runs, {} failed</p>", ok.len(), failed);
    s.push_str(&runs_table(&ok));
    let bad: Vec<history::Unreadable> = records
        .iter()
        .filter_map(|r| r.as_ref().err().cloned())
        .collect();
    s.push_str(&unreadable(&bad));
    Ok(s)
}

pub async fn run(store: &dyn ObjectStore, run: &str) -> Page {
    if !lambdaml::record::is_pipeline_run(run) {
        return Err(PageError::NotFound(format!(
            "{run:?} is not a run id (s3-…, retrain-…, manual-…, direct-…)"
        )));
    }
    let r = match history::record(store, run).await? {
        Some(Ok(r)) => r,
        Some(Err(u)) => return Ok(format!("<h1>{}</h1>{}", esc(run), unreadable(&[u]))),
        None => return Err(PageError::NotFound(format!("there is no run {run:?}"))),
    };
    let status = r.status();
    let mut s = format!(
        r#"<h1>Run {}</h1><p class="{}">{}</p><p>{:?}: {}{}</p><p class="muted">created {}, updated {}</p>"#,
        esc(&r.run),
        status_class(status.as_str()),
        status,
        r.trigger.kind,
        esc(&r.trigger.detail),
        r.trigger
            .report
            .as_deref()
            .map(|k| format!(
                r#" — asked for by <a href="/report/{}">{}</a>"#,
                esc(&lambdaml::layout::report_html_beside(k)),
                esc(k)
            ))
            .unwrap_or_default(),
        esc(&r.created_at),
        esc(&r.updated_at)
    );
    s.push_str("<table><tr><th>stage</th><th>model</th><th>status</th><th>queued</th><th>started</th><th>ended</th><th>seconds</th><th>attempts</th><th>inputs</th><th>outputs</th><th>reason</th></tr>");
    for st in &r.steps {
        let outputs = match &st.reused_run {
            Some(reused) => format!(
                "{}<br>made by {}",
                esc(&st.outputs.join(" ")),
                run_link(reused)
            ),
            None => esc(&st.outputs.join(" ")),
        };
        let outputs = match (
            st.stage,
            &st.model,
            st.summary
                .as_ref()
                .and_then(|v| v.get("version"))
                .and_then(|v| v.as_str()),
        ) {
            (lambdaml::message::Stage::Train, Some(m), Some(v)) => {
                format!(
                    r#"{outputs}<br><a href="/lineage/{}/{1}">lineage of {1}</a>"#,
                    esc(m),
                    esc(v)
                )
            }
            _ => outputs,
        };
        let _ = write!(
            s,
            r#"<tr><td>{}</td><td>{}</td><td class="{}">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.2}</td><td>{}</td><td>{}</td><td>{}</td><td class="bad">{}</td></tr>"#,
            st.stage,
            esc(st.model.as_deref().unwrap_or("")),
            status_class(st.status.as_str()),
            st.status,
            esc(st.queued_at.as_deref().unwrap_or("")),
            esc(st.started_at.as_deref().unwrap_or("")),
            esc(st.ended_at.as_deref().unwrap_or("")),
            st.seconds,
            st.attempts,
            esc(&st.inputs.join(" ")),
            outputs,
            esc(st.reason.as_deref().unwrap_or(""))
        );
    }
    s.push_str("</table><h2>The message that started it</h2><pre>");
    s.push_str(&esc(
        &serde_json::to_string_pretty(&r.trigger.message).unwrap_or_default()
    ));
    s.push_str("</pre>");
    Ok(s)
}

pub async fn lineage(store: &dyn ObjectStore, model: &str, version: &str) -> Page {
    let l = match crate::lineage::lineage(store, model, version).await {
        Ok(l) => l,
        Err(e) => return Err(PageError::NotFound(format!("{e:#}"))),
    };
    let mut s = format!(
        r#"<h1>Lineage of <a href="/models/{0}">{0}</a> {1}</h1>"#,
        esc(model),
        esc(version)
    );
    if let Some(run) = &l.pipeline_run {
        let _ = write!(s, "<p>trained in run {}</p>", run_link(run));
    }
    s.push_str("<pre>");
    s.push_str(&esc(&crate::lineage::render(&l)));
    s.push_str("</pre>");
    if !l.served.is_empty() {
        s.push_str("<h2>Windows it served</h2><table><tr><th>from</th><th>to</th><th>requests</th><th>drift share</th><th>live metric</th><th>decision</th><th></th></tr>");
        for w in &l.served {
            let _ = write!(
                s,
                r#"<tr><td>{}</td><td>{}</td><td>{}</td><td>{:.2}</td><td>{}</td><td>{}</td><td><a href="/report/{}">report</a></td></tr>"#,
                esc(&w.from),
                esc(&w.to),
                w.requests,
                w.drift_share,
                w.metric
                    .map(|m| format!("{m:.4}"))
                    .unwrap_or_else(|| "—".into()),
                esc(&w.decision),
                esc(&w.html)
            );
        }
        s.push_str("</table>");
    }
    for r in &l.retrains {
        if let Some(run) = &r.run {
            let _ = write!(
                s,
                "<p>retrain run {} made {}</p>",
                run_link(run),
                esc(&r.versions.join(", "))
            );
        }
    }
    Ok(s)
}
