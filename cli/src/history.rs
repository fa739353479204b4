//! Reading what the loop left in the store — run records, registries, monitoring reports —
//! for `lambdaml runs`, `lambdaml lineage` and `lambdaml ui`. A document that is corrupt or
//! from a newer schema is returned as [`Unreadable`] with the reason, never an error that
//! hides the rest.

use std::collections::BTreeMap;

use anyhow::Result;
use lambdaml::layout;
use lambdaml::monitoring::{Report, SCHEMA_VERSION};
use lambdaml::record::{RECORD_SCHEMA, RunRecord};
use lambdaml::registry::Registry;
use lambdaml::store::{ObjectKey, ObjectStore};
use serde::Serialize;

/// A document that could not be shown, and why.
#[derive(Debug, Clone, Serialize)]
pub struct Unreadable {
    /// Its key.
    pub key: String,
    /// Why: does not parse, or a newer schema.
    pub reason: String,
}

/// `bytes` as a `T` whose `field` schema is at most `current`.
fn parse_versioned<T: serde::de::DeserializeOwned>(
    key: &str,
    bytes: &[u8],
    field: &str,
    current: u32,
) -> Result<T, Unreadable> {
    let unreadable = |reason: String| Unreadable {
        key: key.to_string(),
        reason,
    };
    let value: serde_json::Value = serde_json::from_slice(bytes)
        .map_err(|e| unreadable(format!("corrupt: not JSON ({e})")))?;
    if let Some(schema) = value.get(field).and_then(serde_json::Value::as_u64)
        && schema > u64::from(current)
    {
        return Err(unreadable(format!(
            "written by a newer lambdaml ({field} {schema}; this build reads {current})"
        )));
    }
    serde_json::from_value(value).map_err(|e| unreadable(format!("corrupt: {e}")))
}

async fn read<T: serde::de::DeserializeOwned>(
    store: &dyn ObjectStore,
    key: &ObjectKey,
    field: &str,
    current: u32,
) -> Result<Option<Result<T, Unreadable>>> {
    match store.get(key).await {
        Ok(o) => Ok(Some(parse_versioned(
            key.as_str(),
            &o.bytes,
            field,
            current,
        ))),
        Err(lambdaml::store::StoreError::NotFound(_)) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// One run's record, `None` when there is none.
pub async fn record(
    store: &dyn ObjectStore,
    run: &str,
) -> Result<Option<Result<RunRecord, Unreadable>>> {
    read(store, &layout::run_record(run)?, "schema", RECORD_SCHEMA).await
}

/// Every run record, newest first.
pub async fn records(store: &dyn ObjectStore) -> Result<Vec<Result<RunRecord, Unreadable>>> {
    let mut out = Vec::new();
    for meta in store.list_all(layout::RUNS).await? {
        if meta.key.as_str().ends_with("/record.json")
            && let Some(r) = read(store, &meta.key, "schema", RECORD_SCHEMA).await?
        {
            out.push(r);
        }
    }
    out.sort_by(|a, b| created(b).cmp(created(a)));
    Ok(out)
}

fn created(r: &Result<RunRecord, Unreadable>) -> &str {
    match r {
        Ok(r) => &r.created_at,
        Err(_) => "",
    }
}

/// Every model with a registry, by name.
pub async fn registries(
    store: &dyn ObjectStore,
) -> Result<BTreeMap<String, Result<Registry, Unreadable>>> {
    let mut out = BTreeMap::new();
    for meta in store.list_all(layout::REGISTRY).await? {
        let Some(model) = layout::registry_model(meta.key.as_str()) else {
            continue;
        };
        if let Some(r) = read(store, &meta.key, "schema_version", u32::MAX).await? {
            out.insert(model.to_string(), r);
        }
    }
    Ok(out)
}

/// One model's registry, `None` when it has none.
pub async fn registry(
    store: &dyn ObjectStore,
    model: &str,
) -> Result<Option<Result<Registry, Unreadable>>> {
    read(store, &layout::registry(model)?, "schema_version", u32::MAX).await
}

/// A monitoring report and where it lies.
#[derive(Debug, Clone)]
pub struct StoredReport {
    /// `monitoring/<model>/<run>/report.json`.
    pub key: String,
    /// Its HTML beside it.
    pub html_key: String,
    /// The report.
    pub report: Report,
}

/// The report at `key`, `None` when it is gone.
async fn stored(
    store: &dyn ObjectStore,
    key: &ObjectKey,
) -> Result<Option<Result<StoredReport, Unreadable>>> {
    let read = read::<Report>(store, key, "schema_version", SCHEMA_VERSION).await?;
    Ok(read.map(|r| {
        r.map(|report| StoredReport {
            key: key.to_string(),
            html_key: layout::report_html_beside(key.as_str()),
            report,
        })
    }))
}

/// A model's monitoring reports, oldest first (by the time they judged).
pub async fn reports(
    store: &dyn ObjectStore,
    model: &str,
) -> Result<Vec<Result<StoredReport, Unreadable>>> {
    let mut out = Vec::new();
    for meta in store.list_all(&layout::monitoring(model)).await? {
        if layout::is_report_json(meta.key.as_str())
            && let Some(r) = stored(store, &meta.key).await?
        {
            out.push(r);
        }
    }
    out.sort_by(|a, b| at(a).cmp(at(b)));
    Ok(out)
}

/// A model's newest report (its folder names the time it judged, so the greatest key),
/// reading that one only.
pub async fn latest_report(
    store: &dyn ObjectStore,
    model: &str,
) -> Result<Option<Result<StoredReport, Unreadable>>> {
    let newest = store
        .list_all(&layout::monitoring(model))
        .await?
        .into_iter()
        .map(|m| m.key)
        .filter(|k| layout::is_report_json(k.as_str()))
        .max();
    match newest {
        Some(key) => stored(store, &key).await,
        None => Ok(None),
    }
}

fn at(r: &Result<StoredReport, Unreadable>) -> &str {
    match r {
        Ok(r) => &r.report.at,
        Err(_) => "",
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn corrupt_and_newer_documents_are_named_not_fatal() {
        let e = parse_versioned::<RunRecord>("runs/x/record.json", b"{not json", "schema", 1)
            .unwrap_err();
        assert!(e.reason.starts_with("corrupt"), "{}", e.reason);
        let e = parse_versioned::<RunRecord>(
            "runs/x/record.json",
            br#"{"schema": 9, "run": "x"}"#,
            "schema",
            1,
        )
        .unwrap_err();
        assert!(
            e.reason.contains("newer lambdaml (schema 9"),
            "{}",
            e.reason
        );
        let e = parse_versioned::<RunRecord>("k", br#"{"schema": 1}"#, "schema", 1).unwrap_err();
        assert!(e.reason.contains("missing field"), "{}", e.reason);
    }
}
