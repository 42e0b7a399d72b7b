//! The bulk writer: the Elasticsearch [`ResultSink`]. Documents are buffered as `_bulk` lines
//! with deterministic `_id`s (a rerun overwrites, never duplicates) and sent on [`flush`]. Every
//! item's result is checked: items refused with 429 or 5xx are sent again with jittered backoff;
//! an item refused for good (a mapping conflict, say) is logged with its reason and parked in
//! the dead-letter index with the document, and counted. Nothing is dropped silently: if even
//! parking fails, the flush fails and the worker does not move its checkpoint.
//!
//! [`flush`]: BulkWriter::flush

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::json;

use crate::es::client::{is_retryable_status, EsClient, EsError};
use crate::es::names::IndexNames;
use crate::model::service::ServiceRecord;
use crate::model::time::{format_rfc3339, Millis};
use crate::model::{Alert, Anomaly};
use crate::sink::{JourneyRecord, ResultSink};

/// Flush on its own once the buffer holds this much.
const FLUSH_BYTES: usize = 4 << 20;
/// Rounds of re-sending items refused with a transient status.
const ITEM_RETRIES: u32 = 8;

/// One pending bulk operation.
struct Op {
    /// What kind of document (`anomalies`, `alerts`, ...), for the counts.
    family: &'static str,
    index: String,
    id: String,
    source: String,
}

/// What the writer did, for summaries and tests.
#[derive(Debug, Default, Clone, Serialize)]
pub struct WriteStats {
    pub written: u64,
    pub by_index: BTreeMap<String, u64>,
    pub retried_items: u64,
    pub parked: u64,
    /// `index/_doc/id: reason` of the first few parked documents.
    pub parked_samples: Vec<String>,
    pub bulk_requests: u64,
}

pub struct BulkWriter {
    client: EsClient,
    names: IndexNames,
    worker: String,
    ops: Vec<Op>,
    bytes: usize,
    pub stats: WriteStats,
    /// Alerts written in the last flush, for the notifier (only what is stored is mailed).
    written_alerts: Vec<Alert>,
    pending_alerts: Vec<Alert>,
    /// Anomalies kept for the notifier's evidence, when there is one.
    keep_anomalies: bool,
    written_anomalies: Vec<Anomaly>,
    pending_anomalies: Vec<Anomaly>,
    /// Signs the answering links of open alerts' documents (`alert.link.*`).
    action_links: Option<crate::feedback::link::ActionLinks>,
    /// The partition this writer writes window digests for (its job name in the state index).
    partition: Option<String>,
}

impl BulkWriter {
    /// The same writer, writing signed answering links into open alerts (`via` Kibana).
    pub fn with_links(mut self, links: Option<crate::feedback::link::ActionLinks>) -> Self {
        self.action_links = links;
        self
    }

    /// A writer; `keep_anomalies` keeps what it wrote for a notifier's evidence too.
    pub fn new(client: EsClient, names: IndexNames, worker: &str, keep_anomalies: bool) -> Self {
        BulkWriter {
            client,
            names,
            worker: worker.to_owned(),
            ops: Vec::new(),
            bytes: 0,
            stats: WriteStats::default(),
            written_alerts: Vec::new(),
            pending_alerts: Vec::new(),
            keep_anomalies,
            written_anomalies: Vec::new(),
            pending_anomalies: Vec::new(),
            action_links: None,
            partition: None,
        }
    }

    /// The same writer, for one partition of a job: closed windows go to the state index as
    /// digests for the correlator (`state.kind: digest`, one per window, id from the window).
    pub fn for_partition(mut self, job: &str) -> Self {
        self.partition = Some(job.to_owned());
        self
    }

    fn push<T: Serialize>(&mut self, family: &'static str, index: String, id: String, doc: &T) -> anyhow::Result<()> {
        let source = serde_json::to_string(doc)?;
        self.bytes += source.len() + index.len() + id.len() + 48;
        self.ops.push(Op { family, index, id, source });
        if self.bytes >= FLUSH_BYTES {
            self.flush()?;
        }
        Ok(())
    }

    /// Alerts and anomalies stored by flushes since the last call.
    pub fn take_written(&mut self) -> (Vec<Alert>, Vec<Anomaly>) {
        (
            std::mem::take(&mut self.written_alerts),
            std::mem::take(&mut self.written_anomalies),
        )
    }

    /// Sends everything buffered; returns once every item is stored or parked.
    pub fn flush(&mut self) -> Result<(), EsError> {
        let mut ops = std::mem::take(&mut self.ops);
        self.bytes = 0;
        let mut round = 0;
        while !ops.is_empty() {
            let body = bulk_body(&ops);
            self.stats.bulk_requests += 1;
            let items = self.client.bulk(&body)?;
            if items.len() != ops.len() {
                return Err(EsError::Decode {
                    method: "POST",
                    path: "/_bulk".into(),
                    reason: format!("{} items answered for {} sent", items.len(), ops.len()),
                });
            }
            let mut retry = Vec::new();
            let mut refused = Vec::new();
            for (op, item) in ops.into_iter().zip(items) {
                if (200..300).contains(&item.status) {
                    self.stats.written += 1;
                    *self.stats.by_index.entry(op.family.to_owned()).or_default() += 1;
                } else if is_retryable_status(item.status) && round < ITEM_RETRIES {
                    retry.push(op);
                } else {
                    refused.push((op, item.status, item.error.unwrap_or_else(|| format!("status {}", item.status))));
                }
            }
            if !refused.is_empty() {
                self.park(refused)?;
            }
            if !retry.is_empty() {
                self.stats.retried_items += retry.len() as u64;
                round += 1;
                let wait = self.client.options().retry.delay(round);
                tracing::warn!(
                    items = retry.len(),
                    round,
                    wait_ms = wait.as_millis() as u64,
                    "bulk items refused for now (busy); sending again"
                );
                std::thread::sleep(wait);
            }
            ops = retry;
        }
        self.written_alerts.append(&mut self.pending_alerts);
        self.written_anomalies.append(&mut self.pending_anomalies);
        Ok(())
    }

    /// Stores refused documents in the dead-letter index, with the reason.
    fn park(&mut self, refused: Vec<(Op, u16, String)>) -> Result<(), EsError> {
        let now = chrono::Utc::now().timestamp_millis();
        let mut ops = Vec::new();
        for (op, status, reason) in refused {
            tracing::error!(index = %op.index, id = %op.id, status, %reason, "Elasticsearch refused a document for good; parked in {}", self.names.deadletter);
            if self.stats.parked_samples.len() < 10 {
                self.stats.parked_samples.push(format!("{}/_doc/{}: {reason}", op.index, op.id));
            }
            self.stats.parked += 1;
            let doc = json!({
                "@timestamp": format_rfc3339(now),
                "deadletter.index": op.index,
                "deadletter.id": op.id,
                "deadletter.status": status,
                "deadletter.reason": reason,
                "deadletter.document": op.source,
                "deadletter.worker": self.worker,
            });
            ops.push(Op {
                family: "deadletter",
                index: self.names.deadletter.clone(),
                id: format!("{}-{}", op.index, op.id),
                source: doc.to_string(),
            });
        }
        let items = self.client.bulk(&bulk_body(&ops))?;
        if let Some(bad) = items.iter().find(|i| !(200..300).contains(&i.status)) {
            return Err(EsError::status(
                bad.status,
                "POST",
                format!("/{}/_bulk", self.names.deadletter),
                format!("could not park a refused document: {}", bad.error.clone().unwrap_or_default()),
            ));
        }
        Ok(())
    }
}

fn bulk_body(ops: &[Op]) -> Vec<u8> {
    let mut body = Vec::with_capacity(ops.iter().map(|o| o.source.len() + 64).sum());
    for op in ops {
        let action = json!({"index": {"_index": op.index, "_id": op.id}});
        body.extend_from_slice(action.to_string().as_bytes());
        body.push(b'\n');
        body.extend_from_slice(op.source.as_bytes());
        body.push(b'\n');
    }
    body
}

/// The id of partition `job`'s digest of the window starting at `start`.
pub fn digest_id(job: &str, start: Millis) -> String {
    format!("digest-{job}-{start}")
}

/// A stable document id for a service record.
pub fn service_doc_id(s: &ServiceRecord) -> String {
    format!("{}@{}", s.service, s.provider)
}

impl ResultSink for BulkWriter {
    fn write_anomalies(&mut self, anomalies: &[Anomaly]) -> anyhow::Result<()> {
        for a in anomalies {
            self.push("anomalies", self.names.anomalies_index(a.timestamp), a.id.clone(), a)?;
        }
        if self.keep_anomalies {
            self.pending_anomalies.extend_from_slice(anomalies);
        }
        Ok(())
    }

    fn write_alerts(&mut self, alerts: &[Alert]) -> anyhow::Result<()> {
        let now = chrono::Utc::now().timestamp_millis();
        for a in alerts {
            match (&self.action_links, a.status) {
                // Written again at every change, so an open alert's links stay fresh.
                (Some(links), crate::model::AlertStatus::Open) => {
                    let mut linked = a.clone();
                    linked.links = crate::model::anomaly::AlertLinks::signed(links, &a.id, "kibana", now);
                    self.push("alerts", self.names.alerts.clone(), a.id.clone(), &linked)?;
                }
                _ => self.push("alerts", self.names.alerts.clone(), a.id.clone(), a)?,
            }
            self.pending_alerts.push(a.clone());
        }
        Ok(())
    }

    fn write_journeys(&mut self, journeys: &[JourneyRecord]) -> anyhow::Result<()> {
        for j in journeys {
            self.push("journeys", self.names.journeys_index(j.timestamp), j.id.clone(), j)?;
        }
        Ok(())
    }

    fn write_digest(&mut self, digest: &crate::alert::correlate::WindowDigest) -> anyhow::Result<()> {
        let Some(job) = self.partition.clone() else {
            anyhow::bail!("a window digest for a writer that writes no partition");
        };
        let doc = json!({
            "@timestamp": format_rfc3339(digest.start),
            "state.kind": "digest",
            "state.job": job,
            "state.checkpoint": format_rfc3339(digest.end),
            "state.stats": digest,
        });
        let id = digest_id(&job, digest.start);
        self.push("digests", self.names.state.clone(), id, &doc)
    }

    fn finish(&mut self, services: &[ServiceRecord]) -> anyhow::Result<()> {
        self.write_services(services)?;
        self.flush()?;
        Ok(())
    }
}

impl BulkWriter {
    /// Upserts the onboarded services (one document each, `@timestamp` = last seen).
    pub fn write_services(&mut self, services: &[ServiceRecord]) -> anyhow::Result<()> {
        for s in services {
            let mut doc = serde_json::to_value(s)?;
            doc["@timestamp"] = json!(format_rfc3339(s.last_seen as Millis));
            self.push("services", self.names.services.clone(), service_doc_id(s), &doc)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bulk_bodies_are_ndjson_pairs() {
        let ops = [Op {
            family: "x",
            index: "i".into(),
            id: "a\"b".into(),
            source: "{\"x\":1}".into(),
        }];
        let body = String::from_utf8(bulk_body(&ops)).unwrap();
        let lines: Vec<&str> = body.lines().collect();
        assert_eq!(lines.len(), 2);
        let action: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
        assert_eq!(action["index"]["_id"], "a\"b");
        assert!(body.ends_with('\n'));
    }
}
