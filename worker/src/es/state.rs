//! Worker state in the state index: per job (the live worker, or one backfill), a checkpoint
//! document (data time reached, generation, configuration) written with optimistic concurrency
//! (`if_seq_no`/`if_primary_term`), the pipeline's learned state as compressed chunks of that
//! generation, and a lease so that two workers never run the same job at once.
//!
//! Order of a checkpoint: new chunks first, then the checkpoint document (the commit point),
//! then old chunks are deleted. A crash at any step leaves the previous checkpoint valid.

use base64::Engine;
use serde_json::{json, Value};

use super::client::{EsClient, EsError};
use crate::model::time::{format_rfc3339, parse_rfc3339, Millis};

/// Learned state is split into documents of at most this many bytes (before base64).
const CHUNK_BYTES: usize = 4 << 20;

/// A stored checkpoint.
#[derive(Debug, Clone)]
pub struct Checkpoint {
    /// Every event before this data time has been scored and its documents written.
    pub until: Millis,
    pub generation: u64,
    pub state: Vec<u8>,
    /// Extra JSON the worker keeps with the checkpoint (notifier state, ingest marks).
    pub extra: Value,
    pub seq_no: u64,
    pub primary_term: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum StateStoreError {
    #[error(transparent)]
    Es(#[from] EsError),
    #[error("another worker moved checkpoint `{job}` (version conflict): this worker stops so that two workers never write the same job")]
    Conflict { job: String },
    #[error("checkpoint `{job}` is damaged: {why}; delete its documents in the state index to start the job afresh")]
    Damaged { job: String, why: String },
}

/// Who holds a job's lease, and until when (workers renew it every poll).
#[derive(Debug, Clone, PartialEq)]
pub struct Lease {
    pub worker: String,
    pub until: Millis,
}

/// A job's lease and checkpoint times.
#[derive(Debug, Clone, PartialEq)]
pub struct JobStatus {
    pub lease: Option<Lease>,
    /// Wall-clock time of the last checkpoint.
    pub checkpoint_saved: Option<Millis>,
    /// Data time up to which everything is scored.
    pub data_until: Option<Millis>,
}

/// A document's `(seq_no, primary_term)`, for the next optimistic write.
pub(super) fn version_of(doc: &Value) -> (u64, u64) {
    (
        doc["_seq_no"].as_u64().unwrap_or_default(),
        doc["_primary_term"].as_u64().unwrap_or_default(),
    )
}

/// A lease (`kind` "lease") or a worker's heartbeat (`kind` "worker") on `job` until `until`:
/// the one shape `apiwatch status` reads.
pub(super) fn lease_doc(kind: &str, job: &str, worker: &str, now: Millis, until: Millis) -> Value {
    json!({
        "@timestamp": format_rfc3339(now),
        "state.kind": kind,
        "state.job": job,
        "state.worker": worker,
        "state.lease_until": format_rfc3339(until),
    })
}

/// After a version conflict: whether document `id` holds exactly what was `written` (a request
/// that landed on a node which died before answering, sent again to another node, meets its own
/// first write), and its version if so.
pub(super) fn own_write_landed(client: &EsClient, index: &str, id: &str, written: &Value) -> Result<Option<(u64, u64)>, EsError> {
    let path = format!("/{index}/_doc/{}", crate::http::url_encode(id));
    let (status, doc) = client.json_status("GET", &path, None)?;
    if status != 200 || doc.get("_source") != Some(written) {
        return Ok(None);
    }
    tracing::info!(document = %id, "a write sent again after a node failure had landed the first time");
    Ok(Some(version_of(&doc)))
}

pub struct StateStore {
    client: EsClient,
    index: String,
    job: String,
    worker: String,
    /// (seq_no, primary_term) of the checkpoint as last read or written.
    version: Option<(u64, u64)>,
    generation: u64,
}

impl StateStore {
    pub fn new(client: EsClient, index: &str, job: &str, worker: &str) -> Self {
        StateStore {
            client,
            index: index.to_owned(),
            job: job.to_owned(),
            worker: worker.to_owned(),
            version: None,
            generation: 0,
        }
    }

    /// The job (or partition) whose checkpoint this is.
    pub fn job(&self) -> &str {
        &self.job
    }

    fn checkpoint_id(&self) -> String {
        format!("checkpoint-{}", self.job)
    }

    fn chunk_id(&self, generation: u64, i: usize) -> String {
        format!("chunk-{}-{generation}-{i}", self.job)
    }

    /// Reads the job's checkpoint, if any.
    pub fn load(&mut self) -> Result<Option<Checkpoint>, StateStoreError> {
        let path = format!("/{}/_doc/{}", self.index, self.checkpoint_id());
        let (status, doc) = self.client.json_status("GET", &path, None)?;
        if status == 404 {
            self.version = None;
            return Ok(None);
        }
        if status != 200 {
            return Err(EsError::status(status, "GET", path, doc.to_string()).into());
        }
        let damaged = |why: &str| StateStoreError::Damaged {
            job: self.job.clone(),
            why: why.to_owned(),
        };
        let src = &doc["_source"];
        let until = src["state.checkpoint"]
            .as_str()
            .and_then(parse_rfc3339)
            .ok_or_else(|| damaged("no checkpoint time"))?;
        let generation = src["state.generation"].as_u64().ok_or_else(|| damaged("no generation"))?;
        let chunks = src["state.chunks"].as_u64().ok_or_else(|| damaged("no chunk count"))? as usize;
        let extra = src.get("state.stats").cloned().unwrap_or(Value::Null);
        let mut state = Vec::new();
        for i in 0..chunks {
            let path = format!("/{}/_doc/{}", self.index, self.chunk_id(generation, i));
            let chunk = self
                .client
                .json("GET", &path, None)
                .map_err(|e| damaged(&format!("chunk {i}: {e}")))?;
            let data = chunk["_source"]["state.data"]
                .as_str()
                .ok_or_else(|| damaged(&format!("chunk {i} has no data")))?;
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(data)
                .map_err(|e| damaged(&format!("chunk {i}: {e}")))?;
            state.extend_from_slice(&bytes);
        }
        let (seq_no, primary_term) = version_of(&doc);
        self.version = Some((seq_no, primary_term));
        self.generation = generation;
        Ok(Some(Checkpoint {
            until,
            generation,
            state,
            extra,
            seq_no,
            primary_term,
        }))
    }

    /// Writes a new checkpoint; fails with [`StateStoreError::Conflict`] if another writer moved
    /// it since this store last read or wrote it.
    pub fn save(&mut self, until: Millis, state: &[u8], extra: &Value, config: &str) -> Result<(), StateStoreError> {
        let generation = self.generation + 1;
        let chunks: Vec<&[u8]> = if state.is_empty() {
            Vec::new()
        } else {
            state.chunks(CHUNK_BYTES).collect()
        };
        let now = format_rfc3339(chrono::Utc::now().timestamp_millis());
        for (i, c) in chunks.iter().enumerate() {
            let doc = json!({
                "@timestamp": now,
                "state.kind": "chunk",
                "state.job": self.job,
                "state.generation": generation,
                "state.chunk": i,
                "state.data": base64::engine::general_purpose::STANDARD.encode(c),
            });
            self.client
                .json("PUT", &format!("/{}/_doc/{}", self.index, self.chunk_id(generation, i)), Some(&doc))?;
        }
        let doc = json!({
            "@timestamp": now,
            "state.kind": "checkpoint",
            "state.job": self.job,
            "state.worker": self.worker,
            "state.checkpoint": format_rfc3339(until),
            "state.generation": generation,
            "state.chunks": chunks.len(),
            "state.bytes": state.len(),
            "state.config": config,
            "state.stats": extra,
        });
        let mut path = format!("/{}/_doc/{}?refresh=false", self.index, self.checkpoint_id());
        match self.version {
            Some((seq, term)) => path.push_str(&format!("&if_seq_no={seq}&if_primary_term={term}")),
            None => path.push_str("&op_type=create"),
        }
        let (status, resp) = self.client.json_status("PUT", &path, Some(&doc))?;
        let (seq, term) = match status {
            409 => own_write_landed(&self.client, &self.index, &self.checkpoint_id(), &doc)?
                .ok_or_else(|| StateStoreError::Conflict { job: self.job.clone() })?,
            200..=299 => version_of(&resp),
            _ => return Err(EsError::status(status, "PUT", path, resp.to_string()).into()),
        };
        let old = self.generation;
        self.version = Some((seq, term));
        self.generation = generation;
        if old > 0 {
            self.delete_generation(old);
        }
        Ok(())
    }

    /// Removes a superseded generation's chunks (best effort: leftovers are harmless).
    fn delete_generation(&self, generation: u64) {
        for i in 0.. {
            let path = format!("/{}/_doc/{}", self.index, self.chunk_id(generation, i));
            match self.client.json_status("DELETE", &path, None) {
                Ok((200, _)) => continue,
                _ => break,
            }
        }
    }

    /// The job's lease and checkpoint as stored, without loading the learned state: what
    /// `apiwatch health` reports.
    pub fn status(&self) -> Result<JobStatus, StateStoreError> {
        let get = |id: String| -> Result<Option<Value>, StateStoreError> {
            let path = format!("/{}/_doc/{id}", self.index);
            match self.client.json_status("GET", &path, None)? {
                (200, doc) => Ok(Some(doc["_source"].clone())),
                (404, _) => Ok(None),
                (status, doc) => Err(EsError::status(status, "GET", path, doc.to_string()).into()),
            }
        };
        let time = |v: &Value, field: &str| v[field].as_str().and_then(parse_rfc3339);
        let lease = get(format!("lease-{}", self.job))?.and_then(|l| {
            Some(Lease {
                worker: l["state.worker"].as_str()?.to_owned(),
                until: time(&l, "state.lease_until")?,
            })
        });
        let checkpoint = get(self.checkpoint_id())?;
        Ok(JobStatus {
            lease,
            checkpoint_saved: checkpoint.as_ref().and_then(|c| time(c, "@timestamp")),
            data_until: checkpoint.as_ref().and_then(|c| time(c, "state.checkpoint")),
        })
    }

    /// Takes or renews the job's lease for `ttl`. Returns the holder if another live worker
    /// has it.
    pub fn acquire_lease(&self, ttl: Millis) -> Result<Option<String>, StateStoreError> {
        let path = format!("/{}/_doc/lease-{}", self.index, self.job);
        let now = chrono::Utc::now().timestamp_millis();
        let (status, doc) = self.client.json_status("GET", &path, None)?;
        let mut cas = "&op_type=create".to_owned();
        if status == 200 {
            let holder = doc["_source"]["state.worker"].as_str().unwrap_or_default().to_owned();
            let until = doc["_source"]["state.lease_until"].as_str().and_then(parse_rfc3339).unwrap_or(0);
            if holder != self.worker && until > now {
                return Ok(Some(holder));
            }
            let (seq, term) = version_of(&doc);
            cas = format!("&if_seq_no={seq}&if_primary_term={term}");
        }
        let body = lease_doc("lease", &self.job, &self.worker, now, now + ttl);
        let (status, _) = self.client.json_status("PUT", &format!("{path}?refresh=false{cas}"), Some(&body))?;
        match status {
            200..=299 => Ok(None),
            409 if own_write_landed(&self.client, &self.index, &format!("lease-{}", self.job), &body)?.is_some() => Ok(None),
            409 => Ok(Some("another worker (it took the lease just now)".into())),
            _ => Err(EsError::status(status, "PUT", path, "lease").into()),
        }
    }

    /// Gives the lease up (on a clean stop) so a standby worker can take over at once.
    pub fn release_lease(&self) {
        let path = format!("/{}/_doc/lease-{}", self.index, self.job);
        if let Ok((200, doc)) = self.client.json_status("GET", &path, None) {
            if doc["_source"]["state.worker"].as_str() == Some(self.worker.as_str()) {
                let (seq, term) = version_of(&doc);
                let _ = self
                    .client
                    .json_status("DELETE", &format!("{path}?if_seq_no={seq}&if_primary_term={term}"), None);
            }
        }
    }

    /// Forgets the job (its checkpoint and chunks), for `backfill --restart`.
    pub fn reset(&mut self) -> Result<(), StateStoreError> {
        if let Some(cp) = self.load()? {
            self.delete_generation(cp.generation);
        }
        let _ = self
            .client
            .json_status("DELETE", &format!("/{}/_doc/{}", self.index, self.checkpoint_id()), None)?;
        self.version = None;
        self.generation = 0;
        Ok(())
    }
}
