//! The `<prefix>-feedback` index: acknowledgements, silences and verdicts written by the CLI
//! (and the worker's API), read back by every worker each poll — only what changed since its
//! last read. Each record is stored under its `feedback.id`, so withdrawing one overwrites it
//! with `feedback.removed` and a new `@timestamp`, which the next read picks up.

use serde_json::{json, Value};

use super::client::{error_reason, EsClient, EsError};
use super::names::IndexNames;
use crate::feedback::{findings_of, FeedbackRecord, Finding};
use crate::http::url_encode;
use crate::model::anomaly::{Alert, Anomaly};
use crate::model::time::{format_rfc3339, Millis};

/// Records are read in pages of this many.
const PAGE: usize = 500;

/// A read starts this long before the newest record seen, for records indexed (refreshed) out
/// of order; what was already applied is recognised by id and time.
const OVERLAP: Millis = 5 * 60_000;

/// Why feedback could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum FeedbackStoreError {
    #[error(transparent)]
    Es(#[from] EsError),
    #[error("{index}: document {id} is not a feedback record: {reason}")]
    Malformed { index: String, id: String, reason: String },
    #[error("no alert {id} in {index}: check the id (it is in the message, the alert document and `apiwatch status`)")]
    NoSuchAlert { index: String, id: String },
}

/// Stores a record (create or replace by id), visible to searches when this returns.
pub fn write(client: &EsClient, names: &IndexNames, r: &FeedbackRecord) -> Result<(), FeedbackStoreError> {
    let body = serde_json::to_value(r).map_err(|e| EsError::Template(e.to_string()))?;
    let path = format!("/{}/_doc/{}?refresh=wait_for", names.feedback, url_encode(&r.id));
    let (status, v) = client.json_status("PUT", &path, Some(&body))?;
    if !(200..300).contains(&status) {
        return Err(EsError::status(status, "PUT", path, error_reason(v.to_string().as_bytes())).into());
    }
    Ok(())
}

/// One record by id, `None` when there is none.
pub fn get(client: &EsClient, names: &IndexNames, id: &str) -> Result<Option<FeedbackRecord>, FeedbackStoreError> {
    let path = format!("/{}/_doc/{}", names.feedback, url_encode(id));
    let (status, v) = client.json_status("GET", &path, None)?;
    match status {
        404 => Ok(None),
        200..=299 => parse(names, id, v.get("_source").cloned().unwrap_or(Value::Null)).map(Some),
        _ => Err(EsError::status(status, "GET", path, error_reason(v.to_string().as_bytes())).into()),
    }
}

/// What one read of the feedback index found.
#[derive(Debug, Default)]
pub struct FeedbackRead {
    /// Records, oldest first.
    pub records: Vec<FeedbackRecord>,
    /// Documents that are not usable records, each with its id and why.
    pub malformed: Vec<FeedbackStoreError>,
    /// The newest record time seen: the next read's `since`.
    pub newest: Option<Millis>,
}

/// Records written since `since` (all when `None`). A missing index is no feedback yet. A
/// malformed document is skipped and reported with its id (the caller counts it), never fatal
/// for the worker.
pub fn read_since(client: &EsClient, names: &IndexNames, since: Option<Millis>) -> Result<FeedbackRead, FeedbackStoreError> {
    let mut read = FeedbackRead {
        newest: since,
        ..FeedbackRead::default()
    };
    let mut after: Option<Value> = None;
    loop {
        let mut body = json!({
            "size": PAGE,
            "sort": [{"@timestamp": "asc"}, {"feedback.id": "asc"}],
            "query": {"range": {"@timestamp": {"gte": format_rfc3339(since.map_or(0, |t| t - OVERLAP))}}},
        });
        if let Some(a) = &after {
            body["search_after"] = a.clone();
        }
        let path = format!("/{}/_search?ignore_unavailable=true&allow_no_indices=true", names.feedback);
        let (status, v) = client.json_status("POST", &path, Some(&body))?;
        if status == 404 {
            return Ok(read);
        }
        if !(200..300).contains(&status) {
            return Err(EsError::status(status, "POST", path, error_reason(v.to_string().as_bytes())).into());
        }
        let hits = v.pointer("/hits/hits").and_then(Value::as_array).cloned().unwrap_or_default();
        for h in &hits {
            let id = h.get("_id").and_then(Value::as_str).unwrap_or_default();
            match parse(names, id, h.get("_source").cloned().unwrap_or(Value::Null)) {
                Ok(r) => {
                    read.newest = Some(read.newest.map_or(r.timestamp, |n| n.max(r.timestamp)));
                    read.records.push(r);
                }
                Err(e) => read.malformed.push(e),
            }
        }
        if hits.len() < PAGE {
            return Ok(read);
        }
        after = hits.last().and_then(|h| h.get("sort")).cloned();
    }
}

fn parse(names: &IndexNames, id: &str, source: Value) -> Result<FeedbackRecord, FeedbackStoreError> {
    let r: FeedbackRecord = serde_json::from_value(source).map_err(|e| FeedbackStoreError::Malformed {
        index: names.feedback.clone(),
        id: id.to_owned(),
        reason: e.to_string(),
    })?;
    r.validate().map_err(|e| FeedbackStoreError::Malformed {
        index: names.feedback.clone(),
        id: id.to_owned(),
        reason: e.to_string(),
    })?;
    Ok(r)
}

/// An alert document as stored.
pub fn alert(client: &EsClient, names: &IndexNames, alert_id: &str) -> Result<Alert, FeedbackStoreError> {
    let path = format!("/{}/_doc/{}", names.alerts, url_encode(alert_id));
    let (status, v) = client.json_status("GET", &path, None)?;
    if status == 404 || v.get("found") == Some(&Value::Bool(false)) {
        return Err(FeedbackStoreError::NoSuchAlert {
            index: names.alerts.clone(),
            id: alert_id.to_owned(),
        });
    }
    if !(200..300).contains(&status) {
        return Err(EsError::status(status, "GET", path, error_reason(v.to_string().as_bytes())).into());
    }
    let alert: Alert =
        serde_json::from_value(v.get("_source").cloned().unwrap_or(Value::Null)).map_err(|e| FeedbackStoreError::Malformed {
            index: names.alerts.clone(),
            id: alert_id.to_owned(),
            reason: e.to_string(),
        })?;
    Ok(alert)
}

/// An alert document and the findings that raised it (read from its anomalies), for a verdict.
pub fn alert_with_findings(client: &EsClient, names: &IndexNames, alert_id: &str) -> Result<(Alert, Vec<Finding>), FeedbackStoreError> {
    let alert = alert(client, names, alert_id)?;
    let body = json!({
        "size": alert.anomaly_ids.len().min(10_000),
        "query": {"terms": {"anomaly.id": alert.anomaly_ids}},
    });
    // The alert may have been written a moment ago: make its anomalies searchable first.
    let _ = client.json_status(
        "POST",
        &format!("/{}/_refresh?ignore_unavailable=true&allow_no_indices=true", names.anomalies),
        None,
    );
    let path = format!("/{}/_search?ignore_unavailable=true&allow_no_indices=true", names.anomalies);
    let v = client.json("POST", &path, Some(&body))?;
    let anomalies: Vec<Anomaly> = v
        .pointer("/hits/hits")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|h| serde_json::from_value(h.get("_source")?.clone()).ok())
        .collect();
    let findings = findings_of(&alert, &anomalies);
    Ok((alert, findings))
}
