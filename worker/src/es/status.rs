//! `apiwatch status`: every job the state index holds (the live worker, each backfill range),
//! who holds its lease and until when, how far its checkpoint has come and how far behind the
//! wall clock that is, and the workers seen. A partitioned job shows as one entry per partition
//! (`<job>~p<i>of<n>`, naming the job and the partition) and its correlator lease; workers'
//! heartbeats count as seen. Read-only: leases and checkpoints are read as
//! stored, the learned-state chunks are never fetched. The feedback in effect (silences,
//! acknowledgements, verdicts and what they taught) is derived from the feedback index.

use serde::Serialize;
use serde_json::{json, Value};

use super::client::{EsClient, EsError};
use crate::job::elasticsearch::backfill_range;
use crate::job::partition::parse_job;
use crate::model::time::{format_rfc3339, parse_rfc3339, Millis};

/// A job's lease as stored.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct LeaseView {
    pub worker: String,
    pub until: String,
    /// Whether the lease is still running (a worker renews it every poll).
    pub held: bool,
    /// Seconds until it runs out (negative: ran out that long ago).
    pub expires_in_s: i64,
}

/// A job's checkpoint as stored.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct CheckpointView {
    /// Every event before this data time is scored and its documents written.
    pub data_until: String,
    /// Wall-clock time of the checkpoint, and how long ago.
    pub saved: String,
    pub saved_s_ago: i64,
    pub worker: String,
    pub generation: u64,
    /// Size of the learned state, uncompressed bytes as stored.
    pub state_bytes: u64,
    pub events: u64,
    pub anomalies: u64,
    pub alerts_raised: u64,
    pub skipped_documents: u64,
    pub late_unscored: u64,
    /// Entities (services, routes, hops) followed at the checkpoint, and evicted so far.
    pub entities: u64,
    pub evicted_entities: u64,
}

/// Which partition of which job a stored job is.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct PartitionView {
    pub job: String,
    pub index: u32,
    pub count: u32,
}

/// One job.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct JobView {
    pub job: String,
    pub lease: Option<LeaseView>,
    pub checkpoint: Option<CheckpointView>,
    /// A partition: the job it is part of, its index and the partition count.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub partition_of: Option<PartitionView>,
    /// A backfill's range, from its name.
    pub range: Option<(String, String)>,
    /// A backfill: the share of its range scored (0-1).
    pub progress: Option<f64>,
    /// A live job: how far the scored data trails the wall clock, seconds.
    pub lag_s: Option<i64>,
}

/// A worker that left a lease or a checkpoint.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct WorkerView {
    pub worker: String,
    /// The latest lease renewal or checkpoint it wrote.
    pub last_seen: String,
    pub last_seen_s_ago: i64,
    /// Jobs whose lease it holds now.
    pub holds: Vec<String>,
}

/// What `apiwatch status` reports.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct StatusReport {
    pub state_index: String,
    pub now: String,
    pub jobs: Vec<JobView>,
    pub workers: Vec<WorkerView>,
    /// Silences, acknowledgements and verdicts in effect, and what the verdicts taught (from
    /// the feedback index, derived as every worker derives them).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub feedback: Option<crate::feedback::FeedbackSummary>,
}

/// Reads every lease and checkpoint of `index` (the state index) as of `now`.
pub fn read(client: &EsClient, index: &str, now: Millis) -> Result<StatusReport, EsError> {
    let body = json!({
        "size": 10_000,
        "query": {"terms": {"state.kind": ["lease", "checkpoint", "worker"]}},
        "_source": {"excludes": ["state.data"]},
    });
    // Leases and checkpoints are written without a refresh (the state index refreshes every
    // few seconds); make the latest visible. Best effort: a read-only user may not refresh.
    if let Err(e) = client.json_status("POST", &format!("/{index}/_refresh?ignore_unavailable=true"), None) {
        tracing::debug!(error = %e, "could not refresh the state index; status may be a few seconds old");
    }
    let path = format!("/{index}/_search");
    let (status, v) = client.json_status("POST", &path, Some(&body))?;
    if status == 404 {
        return Err(EsError::status(
            404,
            "POST",
            path,
            format!("no state index `{index}`: no worker has run with this prefix (check --prefix; `apiwatch run` creates it)"),
        ));
    }
    if !(200..300).contains(&status) {
        return Err(EsError::status(status, "POST", path, v.to_string()));
    }
    let docs: Vec<Value> = v
        .pointer("/hits/hits")
        .and_then(Value::as_array)
        .map(|h| h.iter().map(|d| d["_source"].clone()).collect())
        .unwrap_or_default();
    Ok(assemble(index, &docs, now))
}

/// Builds the report from the stored documents (separate from the search, to test it alone).
fn assemble(index: &str, docs: &[Value], now: Millis) -> StatusReport {
    let time = |d: &Value, f: &str| d[f].as_str().and_then(parse_rfc3339);
    let text = |d: &Value, f: &str| d[f].as_str().unwrap_or_default().to_owned();
    let mut jobs: std::collections::BTreeMap<String, JobView> = Default::default();
    let mut seen: std::collections::BTreeMap<String, (Millis, Vec<String>)> = Default::default();
    for d in docs {
        let job = text(d, "state.job");
        let worker = text(d, "state.worker");
        let written = time(d, "@timestamp").unwrap_or(0);
        let entry = seen.entry(worker.clone()).or_insert((written, Vec::new()));
        entry.0 = entry.0.max(written);
        if d["state.kind"].as_str() == Some("worker") {
            // A heartbeat: the worker is seen; it is not a job of its own.
            continue;
        }
        let (base, partition) = parse_job(&job);
        let range = backfill_range(base);
        let view = jobs.entry(job.clone()).or_insert_with(|| JobView {
            range: range.map(|(f, t)| (format_rfc3339(f), format_rfc3339(t))),
            partition_of: partition.map(|(index, count)| PartitionView {
                job: base.to_owned(),
                index,
                count,
            }),
            job: job.clone(),
            lease: None,
            checkpoint: None,
            progress: None,
            lag_s: None,
        });
        match d["state.kind"].as_str() {
            Some("lease") => {
                let until = time(d, "state.lease_until").unwrap_or(0);
                if until > now {
                    entry.1.push(job.clone());
                }
                view.lease = Some(LeaseView {
                    worker,
                    until: format_rfc3339(until),
                    held: until > now,
                    expires_in_s: (until - now).div_euclid(1000),
                });
            }
            Some("checkpoint") => {
                let until = time(d, "state.checkpoint").unwrap_or(0);
                let stat = |k: &str| d["state.stats"][k].as_u64().unwrap_or(0);
                view.checkpoint = Some(CheckpointView {
                    data_until: format_rfc3339(until),
                    saved: format_rfc3339(written),
                    saved_s_ago: (now - written).div_euclid(1000),
                    worker,
                    generation: d["state.generation"].as_u64().unwrap_or(0),
                    state_bytes: d["state.bytes"].as_u64().unwrap_or(0),
                    events: stat("events"),
                    anomalies: stat("anomalies"),
                    alerts_raised: stat("alerts_raised"),
                    skipped_documents: stat("skipped_documents"),
                    late_unscored: stat("late_unscored"),
                    entities: stat("entities"),
                    evicted_entities: stat("evicted_entities"),
                });
                match range {
                    Some((from, to)) if to > from => {
                        view.progress = Some(((until - from) as f64 / (to - from) as f64).clamp(0.0, 1.0));
                    }
                    Some(_) => {}
                    None => view.lag_s = Some((now - until).div_euclid(1000)),
                }
            }
            _ => {}
        }
    }
    let workers = seen
        .into_iter()
        .filter(|(w, _)| !w.is_empty())
        .map(|(worker, (last, holds))| WorkerView {
            worker,
            last_seen: format_rfc3339(last),
            last_seen_s_ago: (now - last).div_euclid(1000),
            holds,
        })
        .collect();
    StatusReport {
        state_index: index.to_owned(),
        now: format_rfc3339(now),
        jobs: jobs.into_values().collect(),
        workers,
        feedback: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Millis {
        parse_rfc3339(s).unwrap()
    }

    #[test]
    fn jobs_show_their_lease_checkpoint_lag_or_progress_and_workers_what_they_hold() {
        let now = at("2026-03-02T12:00:00Z");
        let docs = vec![
            json!({"@timestamp": "2026-03-02T11:59:55Z", "state.kind": "lease", "state.job": "live", "state.worker": "a-1", "state.lease_until": "2026-03-02T12:01:55Z"}),
            json!({"@timestamp": "2026-03-02T11:59:50Z", "state.kind": "checkpoint", "state.job": "live", "state.worker": "a-1",
                   "state.checkpoint": "2026-03-02T11:59:40Z", "state.generation": 7, "state.bytes": 1234,
                   "state.stats": {"events": 500, "anomalies": 3, "alerts_raised": 1, "entities": 40, "evicted_entities": 2}}),
            json!({"@timestamp": "2026-03-02T10:00:00Z", "state.kind": "lease", "state.job": "backfill-2026-03-01T00:00:00.000Z-2026-03-01T04:00:00.000Z",
                   "state.worker": "b-2", "state.lease_until": "2026-03-02T10:02:00Z"}),
            json!({"@timestamp": "2026-03-02T10:00:00Z", "state.kind": "checkpoint", "state.job": "backfill-2026-03-01T00:00:00.000Z-2026-03-01T04:00:00.000Z",
                   "state.worker": "b-2", "state.checkpoint": "2026-03-01T01:00:00.000Z", "state.generation": 2, "state.bytes": 10}),
        ];
        let r = assemble("apiwatch-state", &docs, now);
        assert_eq!(r.jobs.len(), 2);
        assert!(r.jobs.iter().all(|j| j.partition_of.is_none()));
        let backfill = &r.jobs[0];
        assert_eq!(backfill.progress, Some(0.25));
        assert_eq!(backfill.lag_s, None);
        let lease = backfill.lease.as_ref().unwrap();
        assert!(!lease.held && lease.expires_in_s == -(118 * 60), "{lease:?}");
        let live = &r.jobs[1];
        assert_eq!(live.job, "live");
        assert_eq!(live.lag_s, Some(20));
        assert!(live.lease.as_ref().unwrap().held);
        let cp = live.checkpoint.as_ref().unwrap();
        assert_eq!((cp.generation, cp.events, cp.saved_s_ago), (7, 500, 10));
        assert_eq!((cp.entities, cp.evicted_entities), (40, 2));
        assert_eq!(r.workers.len(), 2);
        assert_eq!(r.workers[0].holds, ["live"]);
        assert!(r.workers[1].holds.is_empty() && r.workers[1].last_seen_s_ago == 7200);
    }

    #[test]
    fn partitions_name_their_job_and_heartbeats_count_as_seen() {
        let now = at("2026-03-02T12:00:00Z");
        let range = "backfill-2026-03-01T00:00:00.000Z-2026-03-01T04:00:00.000Z";
        let docs = vec![
            json!({"@timestamp": "2026-03-02T11:59:58Z", "state.kind": "worker", "state.job": range, "state.worker": "w-1", "state.lease_until": "2026-03-02T12:01:58Z"}),
            json!({"@timestamp": "2026-03-02T11:59:58Z", "state.kind": "lease", "state.job": format!("{range}~p1of4"), "state.worker": "w-1", "state.lease_until": "2026-03-02T12:01:58Z"}),
            json!({"@timestamp": "2026-03-02T11:59:50Z", "state.kind": "checkpoint", "state.job": format!("{range}~p1of4"), "state.worker": "w-1",
                   "state.checkpoint": "2026-03-01T03:00:00.000Z", "state.generation": 3, "state.bytes": 10}),
            json!({"@timestamp": "2026-03-02T11:59:40Z", "state.kind": "worker", "state.job": range, "state.worker": "w-2", "state.lease_until": "2026-03-02T12:01:40Z"}),
        ];
        let r = assemble("apiwatch-state", &docs, now);
        assert_eq!(r.jobs.len(), 1, "a heartbeat is not a job: {r:?}");
        let p = &r.jobs[0];
        assert_eq!(
            p.partition_of,
            Some(PartitionView {
                job: range.into(),
                index: 1,
                count: 4
            })
        );
        assert_eq!(p.progress, Some(0.75), "a partition's progress is over its job's range");
        assert_eq!(r.workers.len(), 2);
        assert_eq!(r.workers[1].worker, "w-2");
        assert_eq!(r.workers[1].last_seen_s_ago, 20);
        assert!(r.workers[1].holds.is_empty());
    }
}
