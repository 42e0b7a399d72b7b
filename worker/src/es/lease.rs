//! Partition leases and worker heartbeats in the state index: the Elasticsearch
//! [`LeaseBook`]. A lease is the document `lease-<job>~p<i>of<n>` (the same shape as a whole
//! job's lease, so `apiwatch status` reads both), written only with `op_type=create` or
//! `if_seq_no`/`if_primary_term`; a heartbeat is `worker-<job>-<worker>`. Leases are read
//! with `_mget`, which is real-time (no refresh needed); heartbeats are searched, so writing or
//! deleting one refreshes the state index at once (`refresh=true`: the index refreshes only
//! every few seconds otherwise, and waiting for that would hold up a round; a heartbeat comes
//! once a round, a third of a lease period).

use serde_json::{json, Value};

use super::client::{EsClient, EsError};
use super::state::{lease_doc, own_write_landed, version_of};
use crate::http::url_encode;
use crate::job::partition::{LeaseBook, LeaseBookError, StoredLease, Version};
use crate::model::time::{parse_rfc3339, Millis};

/// Heartbeats read back per search; far more workers than one job ever has.
const MAX_MEMBERS: usize = 1000;

pub struct EsLeaseBook {
    client: EsClient,
    index: String,
}

impl EsLeaseBook {
    pub fn new(client: EsClient, state_index: &str) -> Self {
        EsLeaseBook {
            client,
            index: state_index.to_owned(),
        }
    }

    fn lease_path(&self, name: &str) -> String {
        format!("/{}/_doc/{}", self.index, url_encode(&format!("lease-{name}")))
    }

    fn heartbeat_path(&self, job: &str, worker: &str) -> String {
        format!("/{}/_doc/{}", self.index, url_encode(&format!("worker-{job}-{worker}")))
    }
}

impl LeaseBook for EsLeaseBook {
    fn heartbeat(&self, job: &str, worker: &str, until: Millis) -> Result<(), LeaseBookError> {
        let body = lease_doc("worker", job, worker, chrono::Utc::now().timestamp_millis(), until);
        let path = format!("{}?refresh=true", self.heartbeat_path(job, worker));
        match self.client.json_status("PUT", &path, Some(&body))? {
            (200..=299, _) => Ok(()),
            (status, v) => Err(EsError::status(status, "PUT", path, v.to_string()).into()),
        }
    }

    fn members(&self, job: &str) -> Result<Vec<(String, Millis)>, LeaseBookError> {
        let body = json!({
            "size": MAX_MEMBERS,
            "query": {"bool": {"filter": [
                {"term": {"state.kind": "worker"}},
                {"term": {"state.job": job}},
            ]}},
            "_source": ["state.worker", "state.lease_until"],
        });
        let path = format!("/{}/_search", self.index);
        let (status, v) = self.client.json_status("POST", &path, Some(&body))?;
        if !(200..300).contains(&status) {
            return Err(EsError::status(status, "POST", path, v.to_string()).into());
        }
        let hits = v.pointer("/hits/hits").and_then(Value::as_array).cloned().unwrap_or_default();
        Ok(hits
            .iter()
            .filter_map(|h| {
                let s = &h["_source"];
                let until = s["state.lease_until"].as_str().and_then(parse_rfc3339)?;
                Some((s["state.worker"].as_str()?.to_owned(), until))
            })
            .collect())
    }

    fn leases(&self, names: &[String]) -> Result<Vec<Option<StoredLease>>, LeaseBookError> {
        let ids: Vec<String> = names.iter().map(|n| format!("lease-{n}")).collect();
        let path = format!("/{}/_mget", self.index);
        let (status, v) = self.client.json_status("POST", &path, Some(&json!({"ids": ids})))?;
        if !(200..300).contains(&status) {
            return Err(EsError::status(status, "POST", path, v.to_string()).into());
        }
        let docs = v["docs"].as_array().cloned().unwrap_or_default();
        if docs.len() != names.len() {
            return Err(EsError::status(
                status,
                "POST",
                path,
                format!("asked for {} leases, got {}", names.len(), docs.len()),
            )
            .into());
        }
        Ok(docs
            .iter()
            .map(|d| {
                if d["found"] != Value::Bool(true) {
                    return None;
                }
                let s = &d["_source"];
                Some(StoredLease {
                    worker: s["state.worker"].as_str().unwrap_or_default().to_owned(),
                    // A lease without a readable expiry counts as run out: it can be taken.
                    until: s["state.lease_until"].as_str().and_then(parse_rfc3339).unwrap_or(0),
                    version: version_of(d),
                })
            })
            .collect())
    }

    fn write(&self, name: &str, worker: &str, until: Millis, expected: Option<Version>) -> Result<bool, LeaseBookError> {
        let body = lease_doc("lease", name, worker, chrono::Utc::now().timestamp_millis(), until);
        let cas = match expected {
            Some((seq, term)) => format!("if_seq_no={seq}&if_primary_term={term}"),
            None => "op_type=create".to_owned(),
        };
        let path = format!("{}?refresh=false&{cas}", self.lease_path(name));
        match self.client.json_status("PUT", &path, Some(&body))? {
            (200..=299, _) => Ok(true),
            (409, _) => Ok(own_write_landed(&self.client, &self.index, &format!("lease-{name}"), &body)?.is_some()),
            (status, v) => Err(EsError::status(status, "PUT", path, v.to_string()).into()),
        }
    }

    fn remove(&self, name: &str, (seq, term): Version) -> Result<(), LeaseBookError> {
        let path = format!("{}?if_seq_no={seq}&if_primary_term={term}", self.lease_path(name));
        match self.client.json_status("DELETE", &path, None)? {
            // 404: gone already; 409: someone else's now. Either way not this worker's.
            (200..=299 | 404 | 409, _) => Ok(()),
            (status, v) => Err(EsError::status(status, "DELETE", path, v.to_string()).into()),
        }
    }

    fn leave(&self, job: &str, worker: &str) -> Result<(), LeaseBookError> {
        let path = format!("{}?refresh=true", self.heartbeat_path(job, worker));
        match self.client.json_status("DELETE", &path, None)? {
            (200..=299 | 404, _) => Ok(()),
            (status, v) => Err(EsError::status(status, "DELETE", path, v.to_string()).into()),
        }
    }
}
