//! Partitioned jobs on the cluster: `apiwatch backfill --partitions N`, started by as many
//! processes as wanted (`--worker-id` each), shares one range among them.
//!
//! Each round a worker heartbeats and takes its share of the partitions
//! ([`crate::job::partition::Coordinator`]). For every partition it holds it runs that
//! partition's job ([`JobRun`] under the name `<job>~p<i>of<n>`): the events of its services
//! only, callers looked up across partitions, its own checkpoint, and each closed window
//! written to the state index as a digest (anomalies, calls, call edges) instead of alerts. A
//! partition yields after a while (checkpointed) so that the worker renews its leases in time;
//! a worker that stopped answering loses its partitions when their leases run out, and whoever
//! takes one resumes from its checkpoint, rewriting the same documents.
//!
//! The worker holding the correlator lease ([`Correlator`]) reads the digests of the windows every
//! partition has checkpointed past, merges each window's in partition order, runs the alert
//! manager and writes the anomalies (marked with what held them back) and alerts, then
//! checkpoints the alert manager under `<job>~correlator` and deletes the digests it consumed.
//! So the documents do not depend on which worker did what, nor when. A worker exits once the
//! correlator's checkpoint has reached the end of the range, whoever did each part.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::elasticsearch::{backfill_job, Hooks, JobRun, RunSummary, WorkerError, WorkerSettings};
use super::partition::{correlator_job, parse_job, partition_job, Coordinator};
use crate::alert::correlate::{correlate, DigestMerger, WindowDigest};
use crate::alert::AlertManager;
use crate::es::client::EsClient;
use crate::es::lease::EsLeaseBook;
use crate::es::state::StateStore;
use crate::model::time::{format_rfc3339, Millis};
use crate::pipeline::{PipelineSetup, StateError};
use crate::sink::elasticsearch::BulkWriter;
use crate::sink::ResultSink;

/// Rounds in a row whose leases could not be read or written before the worker gives up (with
/// growing pauses: about a minute of a cluster recovering).
const ROUND_RETRIES: u32 = 15;

/// Whether a failure may pass (the cluster busy, a node lost): Elasticsearch said so.
fn transient(e: &WorkerError) -> bool {
    match e {
        WorkerError::Other(e) => super::elasticsearch::is_transient(e),
        WorkerError::State(crate::es::state::StateStoreError::Es(e)) => e.is_transient(),
        _ => false,
    }
}

/// How long a round of turns lasts at most (beyond one slice per partition).
const ROUND: Duration = Duration::from_secs(2);

/// Digests read per search page (each holds a window's anomalies and calls of one partition).
const DIGEST_PAGE: usize = 500;

/// `apiwatch backfill --partitions N`: this worker's part of scoring `[from, to)` as
/// `settings.partitions` partitions, until the whole range is done (by whichever workers).
pub fn backfill(
    client: &EsClient,
    settings: &WorkerSettings,
    setup: impl Into<PipelineSetup>,
    (from, to): (Millis, Millis),
    restart: bool,
    stop: Arc<AtomicBool>,
    mut progress: impl FnMut(Millis, Millis),
) -> Result<RunSummary, WorkerError> {
    let started = Instant::now();
    let setup: PipelineSetup = setup.into();
    let mut settings = settings.clone();
    settings.job = backfill_job(from, to);
    let settings = &settings;
    let count = settings.partitions.max(1);
    if restart {
        forget(client, settings, count)?;
    }
    let mut summary = RunSummary {
        job: settings.job.clone(),
        from: Some(format_rfc3339(from)),
        ..Default::default()
    };
    let correlator_store = StateStore::new(
        client.clone(),
        &settings.names.state,
        &correlator_job(&settings.job),
        &settings.worker_id,
    );
    if correlator_store.status()?.data_until.is_some_and(|t| t >= to) {
        summary.already_complete = true;
        summary.until = Some(format_rfc3339(to));
        return Ok(summary);
    }
    let book = EsLeaseBook::new(client.clone(), &settings.names.state);
    let mut coordinator = Coordinator::new(book, &settings.job, &settings.worker_id, count, settings.lease_ttl);
    let mut runs: BTreeMap<u32, JobRun> = BTreeMap::new();
    let mut correlator: Option<Correlator> = None;
    let mut done = Counters::default();
    let mut failures = 0u32;
    // Rounds come every couple of seconds (so that a worker joining gets its share soon), and
    // well within a third of the lease (when leases are renewed): each partition yields at its
    // first slice end past the round's deadline, and checkpoints only when one is due.
    let turn = Duration::from_millis((settings.lease_ttl / 4).max(1) as u64).min(ROUND);
    loop {
        let now = chrono::Utc::now().timestamp_millis();
        let share = match coordinator.round(now).map_err(|e| WorkerError::Other(e.into())) {
            Ok(share) => {
                failures = 0;
                share
            }
            Err(e) if transient(&e) && failures < ROUND_RETRIES && !stop.load(Ordering::Relaxed) => {
                failures += 1;
                tracing::warn!(error = %e, attempt = failures, "Elasticsearch unavailable for the leases; trying again");
                std::thread::sleep(Duration::from_secs(u64::from(failures.min(5))));
                continue;
            }
            Err(e) => return Err(e),
        };
        for p in &share.lost {
            tracing::warn!(
                partition = p,
                "lost a partition's lease to another worker; it resumes from the last checkpoint"
            );
            if let Some(run) = runs.remove(p) {
                done.add(&run);
            }
        }
        for &p in &share.surplus {
            // Handed over from where it stands: checkpointed first, then released.
            if let Some(mut run) = runs.remove(&p) {
                keep_or_give_up(run.checkpoint_now())?;
                done.add(&run);
            }
            if let Err(e) = coordinator.release(p) {
                tracing::warn!(partition = p, error = %e, "could not release a partition: it is free once its lease runs out");
            }
        }
        let deadline = Instant::now() + turn;
        // Leases were written to run out at `now + lease`; writes stop a fifth earlier.
        let fence = now + settings.lease_ttl - settings.lease_ttl / 5;
        let mut worked = false;
        for &p in share.held.iter().filter(|p| !share.surplus.contains(p)) {
            let part = Partition { index: p, count, from, to };
            match turn_of(&mut runs, &mut done, part, (deadline, fence), (client, settings, &setup, &stop)) {
                Ok(w) => worked |= w,
                Err(e) if transient(&e) => {
                    tracing::warn!(partition = p, error = %e, "Elasticsearch unavailable; the partition goes on from its checkpoint next round");
                    runs.remove(&p);
                }
                Err(e) => return Err(e),
            }
        }
        if share.correlator {
            worked |= correlator_turn(&mut correlator, (client, settings, &setup), (count, from, to), fence, &mut progress)?;
        } else {
            correlator = None;
        }
        let complete = match &correlator {
            Some(c) => c.position >= to,
            None => range_done(&correlator_store, to),
        };
        if complete || stop.load(Ordering::Relaxed) {
            break;
        }
        if !worked {
            std::thread::sleep(settings.poll_interval.min(Duration::from_secs(1)));
        }
    }
    for run in runs.values_mut() {
        // A stop between turns: what was scored since the last checkpoint is kept.
        keep_or_give_up(run.checkpoint_now())?;
        done.add(run);
    }
    // Leaving hands every partition and the correlator over at once.
    coordinator.leave().map_err(anyhow::Error::from)?;
    summary.polls = 1;
    summary.events = done.events;
    summary.read_bytes = done.read_bytes;
    summary.checkpoints = done.checkpoints;
    if let Some(c) = &correlator {
        summary.anomalies = c.anomalies;
        summary.alerts_raised = c.alerts.raised();
        summary.until = Some(format_rfc3339(c.position));
    }
    summary.seconds = started.elapsed().as_secs_f64();
    summary.events_per_sec = summary.events as f64 / summary.seconds.max(1e-9);
    Ok(summary)
}

/// One partition of a range.
#[derive(Clone, Copy)]
struct Partition {
    index: u32,
    count: u32,
    from: Millis,
    to: Millis,
}

/// Scores partition `part` until the round's `deadline` (opening it from its checkpoint the
/// first time); whether there was anything left to score. A transient failure rolls it back to
/// its checkpoint for the next round; a checkpoint moved by another worker gives it up.
fn turn_of<'a>(
    runs: &mut BTreeMap<u32, JobRun<'a>>,
    done: &mut Counters,
    part: Partition,
    (deadline, fence): (Instant, Millis),
    (client, settings, setup, stop): (&'a EsClient, &'a WorkerSettings, &PipelineSetup, &Arc<AtomicBool>),
) -> Result<bool, WorkerError> {
    let run = match runs.entry(part.index) {
        std::collections::btree_map::Entry::Occupied(o) => o.into_mut(),
        std::collections::btree_map::Entry::Vacant(v) => {
            let job = partition_job(&settings.job, part.index, part.count);
            let store = StateStore::new(client.clone(), &settings.names.state, &job, &settings.worker_id);
            let hooks = Hooks::partition(part.index, part.count);
            v.insert(JobRun::open(
                client,
                settings,
                setup.clone(),
                store,
                hooks,
                stop.clone(),
                part.from,
            )?)
        }
    };
    if run.until() >= part.to {
        return Ok(false);
    }
    run.yield_at = Some(deadline);
    run.fence = Some(fence);
    match run.advance(part.to, true, |_| {}) {
        Ok(_) => {}
        Err(WorkerError::LeaseRanOut { job }) => {
            // Rolled back to its checkpoint: scored again next round if the lease was renewed.
            tracing::warn!(%job, "a turn outlasted the partition's lease: nothing more written; next round goes on from the checkpoint");
        }
        Err(WorkerError::Other(e)) if super::elasticsearch::is_transient(&e) => {
            tracing::warn!(partition = part.index, error = %e, "Elasticsearch unavailable; the partition rolled back to its checkpoint and goes on next round");
        }
        Err(WorkerError::State(crate::es::state::StateStoreError::Conflict { job })) => {
            tracing::warn!(%job, "another worker moved this partition's checkpoint: it is theirs now");
            if let Some(run) = runs.remove(&part.index) {
                done.add(&run);
            }
        }
        Err(e) => return Err(e),
    }
    Ok(true)
}

/// The correlator's turn (opened from its checkpoint the first time): whether it moved. A
/// transient failure closes it, to go on from its checkpoint next round.
fn correlator_turn<'a>(
    correlator: &mut Option<Correlator<'a>>,
    (client, settings, setup): (&'a EsClient, &'a WorkerSettings, &PipelineSetup),
    (count, from, to): (u32, Millis, Millis),
    fence: Millis,
    progress: &mut impl FnMut(Millis, Millis),
) -> Result<bool, WorkerError> {
    let mut step = || {
        if correlator.is_none() {
            *correlator = Some(Correlator::open(client, settings, setup, count, from)?);
        }
        let Some(c) = correlator.as_mut() else { return Ok(false) };
        c.fence = fence;
        let before = c.position;
        c.step(to)?;
        progress(c.position - from, to - from);
        Ok::<bool, WorkerError>(c.position > before)
    };
    match step() {
        Err(WorkerError::LeaseRanOut { job }) => {
            tracing::warn!(%job, "the correlator's step outlasted its lease: nothing more written; it goes on from its checkpoint");
            *correlator = None;
            Ok(false)
        }
        Err(WorkerError::State(crate::es::state::StateStoreError::Conflict { job })) => {
            tracing::warn!(%job, "another worker moved the correlator's checkpoint: it goes on from there");
            *correlator = None;
            Ok(false)
        }
        Err(e) if transient(&e) => {
            // What was correlated since the checkpoint is done again from it.
            tracing::warn!(error = %e, "Elasticsearch unavailable; the correlator goes on from its checkpoint next round");
            *correlator = None;
            Ok(false)
        }
        other => other,
    }
}

/// Whether the correlator's checkpoint (another worker's) has reached the end of the range.
fn range_done(correlator_store: &StateStore, to: Millis) -> bool {
    match correlator_store.status() {
        Ok(s) => s.data_until.is_some_and(|t| t >= to),
        Err(e) => {
            tracing::warn!(error = %e, "could not read the correlator's checkpoint; asking again next round");
            false
        }
    }
}

/// A checkpoint's outcome, where a version conflict (another worker took the partition over
/// and wrote first: its work stands) is not this worker's failure.
fn keep_or_give_up(saved: Result<(), WorkerError>) -> Result<(), WorkerError> {
    match saved {
        Err(WorkerError::LeaseRanOut { job }) => {
            tracing::warn!(%job, "the partition's lease may have run out: not checkpointed here; its next holder goes on from the last checkpoint");
            Ok(())
        }
        Err(WorkerError::State(crate::es::state::StateStoreError::Conflict { job })) => {
            tracing::warn!(%job, "another worker moved this partition's checkpoint: it is theirs now");
            Ok(())
        }
        other => other,
    }
}

/// What the partitions this worker ran did (a partition handed over keeps its counts here).
#[derive(Default)]
struct Counters {
    events: u64,
    read_bytes: u64,
    checkpoints: u64,
}

impl Counters {
    fn add(&mut self, run: &JobRun) {
        let (events, read_bytes, checkpoints) = run.counters();
        self.events += events;
        self.read_bytes += read_bytes;
        self.checkpoints += checkpoints;
    }
}

/// Forgets a partitioned range: every partition's checkpoint, the correlator's, the digests.
fn forget(client: &EsClient, settings: &WorkerSettings, count: u32) -> Result<(), WorkerError> {
    let names = (0..count)
        .map(|p| partition_job(&settings.job, p, count))
        .chain(std::iter::once(correlator_job(&settings.job)));
    for job in names {
        StateStore::new(client.clone(), &settings.names.state, &job, &settings.worker_id).reset()?;
    }
    // Whatever digests are left of an earlier run, page by page.
    loop {
        let body = json!({"size": DIGEST_PAGE, "_source": false, "query": digests_query(settings, count, Millis::MIN, Millis::MAX)});
        let index = &settings.names.state;
        let v = client
            .json("POST", &format!("/{index}/_search?ignore_unavailable=true"), Some(&body))
            .map_err(anyhow::Error::from)?;
        let ids: Vec<String> = (v.pointer("/hits/hits").and_then(Value::as_array).into_iter().flatten())
            .filter_map(|h| h["_id"].as_str().map(str::to_owned))
            .collect();
        if ids.is_empty() {
            return Ok(());
        }
        delete_digests(client, index, &ids).map_err(anyhow::Error::from)?;
    }
}

/// The query that finds a job's digests of windows ending after `after` and by `until`.
fn digests_query(settings: &WorkerSettings, count: u32, after: Millis, until: Millis) -> Value {
    let jobs: Vec<String> = (0..count).map(|p| partition_job(&settings.job, p, count)).collect();
    let mut range = json!({"format": "strict_date_optional_time"});
    if after > Millis::MIN {
        range["gt"] = json!(format_rfc3339(after));
    }
    if until < Millis::MAX {
        range["lte"] = json!(format_rfc3339(until));
    }
    json!({"bool": {"filter": [
        {"term": {"state.kind": "digest"}},
        {"terms": {"state.job": jobs}},
        {"range": {"state.checkpoint": range}},
    ]}})
}

/// Deletes digests by id with one bulk request (`_delete_by_query` is an optional module).
fn delete_digests(client: &EsClient, index: &str, ids: &[String]) -> Result<(), crate::es::EsError> {
    let mut body = String::new();
    for id in ids {
        body.push_str(&json!({"delete": {"_index": index, "_id": id}}).to_string());
        body.push('\n');
    }
    let path = "/_bulk?refresh=true";
    let (status, raw) = client.send_raw("POST", path, Some((body.as_bytes(), "application/x-ndjson")))?;
    if !(200..300).contains(&status) {
        return Err(crate::es::EsError::status(
            status,
            "POST",
            path,
            crate::es::client::error_reason(&raw),
        ));
    }
    Ok(())
}

/// The correlator role: the alert manager over every partition's digests.
struct Correlator<'a> {
    client: &'a EsClient,
    settings: &'a WorkerSettings,
    count: u32,
    store: StateStore,
    alerts: AlertManager,
    /// Every window ending by this time has been correlated.
    position: Millis,
    writer: BulkWriter,
    anomalies: u64,
    /// Wall-clock time (ms) after which the correlator writes nothing (see `JobRun::fence`).
    fence: Millis,
}

impl<'a> Correlator<'a> {
    fn open(
        client: &'a EsClient,
        settings: &'a WorkerSettings,
        setup: &PipelineSetup,
        count: u32,
        from: Millis,
    ) -> Result<Self, WorkerError> {
        let mut store = StateStore::new(
            client.clone(),
            &settings.names.state,
            &correlator_job(&settings.job),
            &settings.worker_id,
        );
        let (mut alerts, position) = match store.load()? {
            Some(cp) => (decode(&cp.state)?, cp.until),
            None => (AlertManager::new(setup.cfg.alerts.clone()), from),
        };
        // What is known now applies to the range scored, as in a whole backfill.
        match crate::es::feedback::read_since(client, &settings.names, None) {
            Ok(read) => {
                for e in alerts.offer_feedback(read.records, true) {
                    tracing::warn!(error = %e, "feedback record refused");
                }
            }
            Err(e) => tracing::warn!(error = %e, "could not read feedback; correlating without it"),
        }
        tracing::info!(job = %settings.job, position = %format_rfc3339(position), "correlating the partitions' windows");
        Ok(Correlator {
            client,
            settings,
            count,
            store,
            alerts,
            position,
            writer: BulkWriter::new(client.clone(), settings.names.clone(), &settings.worker_id, false),
            anomalies: 0,
            fence: Millis::MAX,
        })
    }

    /// Where every partition has checkpointed to (a partition never checkpointed: the start).
    fn partitions_passed(&self) -> Result<Millis, WorkerError> {
        let mut passed = Millis::MAX;
        for p in 0..self.count {
            let store = StateStore::new(
                self.client.clone(),
                &self.settings.names.state,
                &partition_job(&self.settings.job, p, self.count),
                &self.settings.worker_id,
            );
            passed = passed.min(store.status()?.data_until.unwrap_or(self.position));
        }
        Ok(passed)
    }

    /// Correlates every window all partitions have passed (up to `to`), writes, checkpoints.
    fn step(&mut self, to: Millis) -> Result<(), WorkerError> {
        let ready = self.partitions_passed()?.min(to);
        if ready <= self.position {
            return Ok(());
        }
        // A correlator that outlasted its lease may have moved the checkpoint after this one
        // opened (and deleted the digests it consumed): this one must not write from behind.
        if self.store.status()?.data_until.is_some_and(|t| t > self.position) {
            return Err(crate::es::state::StateStoreError::Conflict {
                job: self.store.job().to_owned(),
            }
            .into());
        }
        let mut merger = DigestMerger::new(self.count);
        let mut consumed = Vec::new();
        for (id, index, digest) in self.read_digests(ready)? {
            consumed.push(id);
            merger.offer(index, digest);
        }
        for p in 0..self.count {
            merger.passed(p, ready);
        }
        for mut digest in merger.ready() {
            let changed = correlate(&mut self.alerts, &mut digest);
            self.anomalies += digest.anomalies.len() as u64;
            self.check_fence()?;
            self.writer.write_anomalies(&digest.anomalies)?;
            self.writer.write_alerts(&changed)?;
        }
        self.check_fence()?;
        self.writer.flush().map_err(anyhow::Error::from)?;
        let state = encode(&self.alerts)?;
        let extra = json!({"anomalies": self.anomalies, "alerts_raised": self.alerts.raised()});
        self.store.save(ready, &state, &extra, "correlator")?;
        self.position = ready;
        // A digest left behind (a failed delete, a partition re-run from an older checkpoint)
        // is never read again: reads start after the position.
        if let Err(e) = delete_digests(self.client, &self.settings.names.state, &consumed) {
            tracing::warn!(error = %e, "could not delete consumed window digests; they are not read again");
        }
        Ok(())
    }

    /// Alerts are updated in place: one written by a correlator slowed past its lease could
    /// overwrite a newer state written by the next holder.
    fn check_fence(&self) -> Result<(), WorkerError> {
        if chrono::Utc::now().timestamp_millis() >= self.fence {
            return Err(WorkerError::LeaseRanOut {
                job: self.store.job().to_owned(),
            });
        }
        Ok(())
    }

    /// The digests of windows ending after the position and by `until`, with their partition.
    fn read_digests(&self, until: Millis) -> Result<Vec<(String, u32, WindowDigest)>, WorkerError> {
        let index = &self.settings.names.state;
        self.client
            .json("POST", &format!("/{index}/_refresh?ignore_unavailable=true"), None)
            .map_err(anyhow::Error::from)?;
        let mut out = Vec::new();
        let mut after: Option<Value> = None;
        loop {
            let mut body = json!({
                "size": DIGEST_PAGE,
                "query": digests_query(self.settings, self.count, self.position, until),
                "sort": [{"@timestamp": "asc"}, {"state.job": "asc"}],
            });
            if let Some(a) = &after {
                body["search_after"] = a.clone();
            }
            let v = self
                .client
                .json("POST", &format!("/{index}/_search?allow_partial_search_results=false"), Some(&body))
                .map_err(anyhow::Error::from)?;
            let hits = v.pointer("/hits/hits").and_then(Value::as_array).cloned().unwrap_or_default();
            for hit in &hits {
                let src = &hit["_source"];
                let job = src["state.job"].as_str().unwrap_or_default();
                let (_, Some((p, _))) = parse_job(job) else {
                    continue;
                };
                let digest: WindowDigest = serde_json::from_value(src["state.stats"].clone()).map_err(|e| {
                    anyhow::anyhow!(
                        "window digest {} in {index} is unreadable ({e}): run the range again with --restart",
                        hit["_id"]
                    )
                })?;
                out.push((hit["_id"].as_str().unwrap_or_default().to_owned(), p, digest));
            }
            match hits.last() {
                Some(last) if hits.len() == DIGEST_PAGE => after = Some(last["sort"].clone()),
                _ => break,
            }
        }
        tracing::debug!(digests = out.len(), until = %format_rfc3339(until), "read window digests");
        Ok(out)
    }
}

fn encode(alerts: &AlertManager) -> anyhow::Result<Vec<u8>> {
    let raw = rmp_serde::to_vec_named(alerts)?;
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut z, &raw)?;
    Ok(z.finish()?)
}

fn decode(bytes: &[u8]) -> Result<AlertManager, StateError> {
    let mut raw = Vec::new();
    std::io::Read::read_to_end(&mut flate2::read::ZlibDecoder::new(bytes), &mut raw).map_err(|e| StateError::Corrupt(e.to_string()))?;
    rmp_serde::from_slice(&raw).map_err(|e| StateError::Corrupt(format!("correlator: {e}")))
}
