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

use super::elasticsearch::{
    backfill_job, notify, sleep_unless_stopped, Hooks, JobRun, RunOptions, RunSummary, WorkerError, WorkerSettings,
};
use super::partition::{correlator_job, parse_job, partition_job, Coordinator};
use crate::alert::correlate::{correlate, DigestMerger, WindowDigest};
use crate::alert::AlertManager;
use crate::es::client::EsClient;
use crate::es::lease::EsLeaseBook;
use crate::es::state::StateStore;
use crate::model::time::{format_rfc3339, Millis};
use crate::notify::Notifier;
use crate::pipeline::{PipelineSetup, StateError};
use crate::serve::WorkerStatus;
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
    progress: impl FnMut(Millis, Millis),
) -> Result<RunSummary, WorkerError> {
    let mut settings = settings.clone();
    settings.job = backfill_job(from, to);
    let settings = &settings;
    if restart {
        forget(client, settings, settings.partitions.max(1))?;
    }
    let correlator_store = StateStore::new(
        client.clone(),
        &settings.names.state,
        &correlator_job(&settings.job),
        &settings.worker_id,
    );
    if correlator_store.status()?.data_until.is_some_and(|t| t >= to) {
        return Ok(RunSummary {
            job: settings.job.clone(),
            from: Some(format_rfc3339(from)),
            until: Some(format_rfc3339(to)),
            already_complete: true,
            ..Default::default()
        });
    }
    let roles = Roles {
        stop,
        notifier: None,
        status: None,
        live: false,
        notifications_sent: 0,
    };
    share(client, settings, setup.into(), (from, Reach::Until(to)), roles, progress)
}

/// `apiwatch run --partitions N`: this worker's part of the live job `settings.job` as
/// `settings.partitions` partitions, until stopped (with `once`: until every partition and
/// the correlator have reached the live edge as it was at the start). Whichever worker holds
/// the correlator tells people about alerts, with the notifier's memory in its checkpoint.
pub fn run<'a>(
    client: &'a EsClient,
    settings: &'a WorkerSettings,
    setup: impl Into<PipelineSetup>,
    opts: RunOptions<'a>,
) -> Result<RunSummary, WorkerError> {
    let now = || opts.now.unwrap_or_else(|| chrono::Utc::now().timestamp_millis());
    refuse_whole_holder(client, settings, now())?;
    let start = super::elasticsearch::live_start(client, settings, now())?;
    let reach = match opts.once {
        true => Reach::Until(now() - settings.ingest_delay),
        false => Reach::Live { pinned_now: opts.now },
    };
    let roles = Roles {
        stop: opts.stop,
        notifier: opts.notifier,
        status: opts.status,
        live: true,
        notifications_sent: 0,
    };
    let position = opts.progress;
    share(client, settings, setup.into(), (start, reach), roles, |done, _| {
        if let Some(p) = &position {
            p.store(start + done, Ordering::Relaxed);
        }
    })
}

/// A partitioned job and a whole one under the same name would both write its documents.
fn refuse_whole_holder(client: &EsClient, settings: &WorkerSettings, now: Millis) -> Result<(), WorkerError> {
    let whole = StateStore::new(client.clone(), &settings.names.state, &settings.job, &settings.worker_id);
    match whole.status()?.lease {
        Some(l) if l.until > now => Err(WorkerError::Leased {
            job: settings.job.clone(),
            holder: format!("{} (scoring it whole, without partitions)", l.worker),
        }),
        _ => Ok(()),
    }
}

/// How far a partitioned job goes.
#[derive(Clone, Copy)]
enum Reach {
    /// To this data time, then done (a backfill, `run --once`).
    Until(Millis),
    /// The live edge (`now - ingest_delay`) each round, until stopped.
    Live { pinned_now: Option<Millis> },
}

impl Reach {
    /// The data time this round scores up to.
    fn upper(self, ingest_delay: Millis) -> Millis {
        match self {
            Reach::Until(to) => to,
            Reach::Live { pinned_now } => pinned_now.unwrap_or_else(|| chrono::Utc::now().timestamp_millis()) - ingest_delay,
        }
    }
}

/// What a live job adds to the worker's roles: who is told about alerts (by the correlator),
/// who reads the worker's health, and feedback read as it comes.
struct Roles<'a> {
    stop: Arc<AtomicBool>,
    notifier: Option<&'a mut dyn Notifier>,
    status: Option<Arc<WorkerStatus>>,
    live: bool,
    /// Messages sent as correlator, over every time this worker held the role.
    notifications_sent: u64,
}

/// The worker's loop on a partitioned job from `from`: rounds of leases, turns of the
/// partitions it holds, and the correlator's step when it holds that role.
fn share<'a>(
    client: &'a EsClient,
    settings: &'a WorkerSettings,
    setup: PipelineSetup,
    (from, reach): (Millis, Reach),
    mut roles: Roles<'a>,
    mut progress: impl FnMut(Millis, Millis),
) -> Result<RunSummary, WorkerError> {
    let started = Instant::now();
    let count = settings.partitions.max(1);
    let stop = roles.stop.clone();
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
    // A live job waits a poll between rounds that found nothing new; a range goes on at once.
    let idle = match reach {
        Reach::Live { .. } => settings.poll_interval,
        Reach::Until(_) => settings.poll_interval.min(Duration::from_secs(1)),
    };
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
                if let Some(s) = &roles.status {
                    s.update(|s| s.failing = Some(format!("{e:#}")));
                }
                std::thread::sleep(Duration::from_secs(u64::from(failures.min(5))));
                continue;
            }
            Err(e) => return Err(e),
        };
        summary.polls += 1;
        hand_over(&share, &mut runs, &mut done, &mut coordinator)?;
        let deadline = Instant::now() + turn;
        // Leases were written to run out at `now + lease`; writes stop a fifth earlier.
        let fence = now + settings.lease_ttl - settings.lease_ttl / 5;
        let upper = reach.upper(settings.ingest_delay).max(from);
        let mut worked = false;
        if !share.correlator {
            correlator = None;
        }
        for (nth, unit) in rotated(&Unit::of(&share), summary.polls).into_iter().enumerate() {
            if nth > 0 && Instant::now() >= deadline {
                // A turn begun this late would end past the fence (and be rolled back): the
                // rest wait for the next round, which begins with them.
                worked = true;
                continue;
            }
            match unit {
                Unit::Partition(p) => {
                    let part = Partition {
                        index: p,
                        count,
                        from,
                        to: upper,
                        live_window: matches!(reach, Reach::Live { .. }).then_some(setup.cfg.window),
                    };
                    match turn_of(&mut runs, &mut done, part, (deadline, fence), (client, settings, &setup, &stop)) {
                        Ok(w) => worked |= w,
                        Err(e) if transient(&e) => {
                            tracing::warn!(partition = p, error = %e, "Elasticsearch unavailable; the partition goes on from its checkpoint next round");
                            runs.remove(&p);
                        }
                        Err(e) => return Err(e),
                    }
                }
                Unit::Correlator => {
                    let notifier = roles.notifier.as_deref_mut();
                    worked |= correlator_turn(
                        &mut correlator,
                        (client, settings, &setup, notifier, roles.live),
                        (count, from, upper),
                        (deadline, fence, &mut roles.notifications_sent),
                        &mut progress,
                    )?;
                }
            }
        }
        if let Some(status) = &roles.status {
            let counts = (summary.polls, roles.notifications_sent);
            report_status(status, &share, &runs, &done, correlator.as_ref(), counts);
        }
        let complete = match reach {
            Reach::Live { .. } => false,
            Reach::Until(to) => match &correlator {
                Some(c) => c.position >= to,
                None => range_done(&correlator_store, to),
            },
        };
        if complete || stop.load(Ordering::Relaxed) {
            break;
        }
        if !worked {
            sleep_unless_stopped(idle, &stop);
        }
    }
    leave(&mut runs, &mut done, &mut coordinator)?;
    summary.events = done.events;
    summary.read_bytes = done.read_bytes;
    summary.checkpoints = done.checkpoints;
    (summary.late_scored, summary.late_unscored) = (done.late_scored, done.late_unscored);
    summary.notifications_sent = roles.notifications_sent;
    if let Some(c) = &correlator {
        summary.anomalies = c.anomalies;
        summary.alerts_raised = c.alerts.raised();
        summary.until = Some(format_rfc3339(c.position));
    }
    summary.seconds = started.elapsed().as_secs_f64();
    summary.events_per_sec = summary.events as f64 / summary.seconds.max(1e-9);
    Ok(summary)
}

/// A stop between turns: what each partition scored since its checkpoint is kept, and every
/// partition and the correlator are handed over at once (leases that could not be given up
/// run out by themselves; the work is done or checkpointed either way).
fn leave<B: crate::job::partition::LeaseBook>(
    runs: &mut BTreeMap<u32, JobRun>,
    done: &mut Counters,
    coordinator: &mut Coordinator<B>,
) -> Result<(), WorkerError> {
    for run in runs.values_mut() {
        keep_or_give_up(run.checkpoint_now())?;
        done.add(run);
    }
    if let Err(e) = coordinator.leave() {
        tracing::warn!(error = %e, "could not give the leases up: they run out by themselves within the lease period");
    }
    Ok(())
}

/// What a worker takes turns at within a round.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Unit {
    Partition(u32),
    Correlator,
}

impl Unit {
    /// The partitions this worker keeps (not those it is handing over), then the correlator
    /// when it holds that role.
    fn of(share: &super::partition::Assignment) -> Vec<Unit> {
        let partitions = (share.held.iter())
            .filter(|p| !share.surplus.contains(p))
            .map(|&p| Unit::Partition(p));
        partitions.chain(share.correlator.then_some(Unit::Correlator)).collect()
    }
}

/// `units` beginning at the `round`-th (modulo their number): when a round runs out of time
/// before its last units, the next round begins with another, so none is starved.
fn rotated<T: Copy>(units: &[T], round: u64) -> Vec<T> {
    if units.is_empty() {
        return Vec::new();
    }
    let first = (round % units.len() as u64) as usize;
    units[first..].iter().chain(&units[..first]).copied().collect()
}

/// Stops working on the partitions another worker took (their checkpoints are the taker's now)
/// and hands over those beyond this worker's quota: checkpointed where they stand, released.
fn hand_over<B: crate::job::partition::LeaseBook>(
    share: &super::partition::Assignment,
    runs: &mut BTreeMap<u32, JobRun>,
    done: &mut Counters,
    coordinator: &mut Coordinator<B>,
) -> Result<(), WorkerError> {
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
    Ok(())
}

/// Publishes this worker's share and counters for `/health` and `/metrics`: it is ready while
/// it holds a partition or the correlator; counts are of what it scored and correlated.
fn report_status(
    status: &WorkerStatus,
    share: &super::partition::Assignment,
    runs: &BTreeMap<u32, JobRun>,
    done: &Counters,
    correlator: Option<&Correlator>,
    (rounds, notifications_sent): (u64, u64),
) {
    let now = chrono::Utc::now().timestamp_millis();
    let mut total = done.clone();
    for run in runs.values() {
        total.add(run);
    }
    status.update(|s| {
        s.lease_held = !share.held.is_empty() || share.correlator;
        s.failing = None;
        s.last_progress = Some(now);
        s.polls = rounds;
        s.events_scored = total.events;
        s.read_bytes = total.read_bytes;
        (s.late_scored, s.late_unscored) = (total.late_scored, total.late_unscored);
        s.partitions = (runs.iter())
            .map(|(&index, run)| {
                let progress = crate::serve::PartitionProgress {
                    scored_until: run.position(),
                    checkpoint_until: run.until(),
                    events_scored: run.counters().0,
                };
                (index, progress)
            })
            .collect();
        s.position = match correlator {
            Some(c) => Some(c.position),
            None => runs.values().map(JobRun::position).min(),
        };
        if let Some(c) = correlator {
            s.anomalies = c.anomalies;
            s.alerts_raised = c.alerts.raised();
            s.alerts_by_priority.clone_from(c.alerts.raised_by_priority());
            s.alerts_held_by_rule.clone_from(c.alerts.held());
        }
        s.notifications_sent = notifications_sent;
    });
}

/// One partition of a range.
#[derive(Clone, Copy)]
struct Partition {
    index: u32,
    count: u32,
    from: Millis,
    to: Millis,
    /// `Some(window width)` on a live job: a partition checkpoints when it closed a window
    /// since its last checkpoint (the correlator goes as far as every partition's checkpoint);
    /// `None` on a range: at the end of every turn that finished its part.
    live_window: Option<Millis>,
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
            let hooks = Hooks::partition(part.index, part.count, part.live_window.is_some());
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
    if part.live_window.is_some() {
        // Events that reached the log indices after their range was read: scored once within
        // the lateness, counted beyond it (as a whole live worker does).
        if let Err(e) = run.sweep_late_arrivals() {
            tracing::warn!(partition = part.index, error = %e, "could not check for late arrivals");
        }
    }
    let before = run.position();
    if before >= part.to {
        return Ok(false);
    }
    run.yield_at = Some(deadline);
    run.fence = Some(fence);
    let checkpoint = match part.live_window {
        Some(w) => part.to.div_euclid(w.max(1)) > run.until().div_euclid(w.max(1)),
        None => true,
    };
    match run.advance(part.to, checkpoint, |_| {}) {
        Ok(_) => {
            if let Some(width) = run.turn_kept_to_lease() {
                tracing::info!(
                    partition = part.index,
                    slice_secs = width / 1000,
                    "turns keep to the lease again: reading wider slices"
                );
            }
            return Ok(run.position() > before);
        }
        Err(WorkerError::LeaseRanOut { job }) => {
            // Rolled back to its checkpoint: scored again next round if the lease was renewed,
            // in narrower slices (the same slice again would outlast the lease again).
            match run.narrow_slices() {
                Some(width) => {
                    tracing::warn!(%job, slice_secs = width / 1000, "a turn outlasted the partition's lease: nothing more written; next round goes on from the checkpoint, in narrower slices")
                }
                None => {
                    tracing::warn!(%job, "a turn outlasted the partition's lease although it reads a window at a time: nothing more written; next round goes on from the checkpoint (a longer --lease-secs would give it time)")
                }
            }
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
    (client, settings, setup, mut notifier, live): (
        &'a EsClient,
        &'a WorkerSettings,
        &PipelineSetup,
        Option<&mut (dyn Notifier + '_)>,
        bool,
    ),
    (count, from, to): (u32, Millis, Millis),
    (deadline, fence, sent): (Instant, Millis, &mut u64),
    progress: &mut impl FnMut(Millis, Millis),
) -> Result<bool, WorkerError> {
    let mut step = || {
        if correlator.is_none() {
            let opened = Correlator::open(client, settings, setup, (count, from), notifier.as_deref_mut(), live)?;
            *correlator = Some(opened);
        }
        let Some(c) = correlator.as_mut() else { return Ok(false) };
        c.fence = fence;
        let before = c.position;
        c.step(to, deadline, notifier.as_deref_mut(), sent)?;
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
/// and wrote first: its work stands) is not this worker's failure, nor is Elasticsearch busy or
/// unreachable at that moment (what was scored since the last checkpoint is scored again by the
/// partition's next holder: nothing is lost).
fn keep_or_give_up(saved: Result<(), WorkerError>) -> Result<(), WorkerError> {
    match saved {
        Err(e) if transient(&e) => {
            tracing::warn!(error = %e, "Elasticsearch unavailable: not checkpointed here; the partition's next holder goes on from its last checkpoint");
            Ok(())
        }
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
#[derive(Default, Clone)]
struct Counters {
    events: u64,
    read_bytes: u64,
    checkpoints: u64,
    late_scored: u64,
    late_unscored: u64,
}

impl Counters {
    fn add(&mut self, run: &JobRun) {
        let (events, read_bytes, checkpoints) = run.counters();
        let (late_scored, late_unscored) = run.late_counts();
        self.events += events;
        self.read_bytes += read_bytes;
        self.checkpoints += checkpoints;
        self.late_scored += late_scored;
        self.late_unscored += late_unscored;
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
    /// A live job's correlator takes in feedback as it is written; a range's reads it once,
    /// when it opens.
    live: bool,
    /// The newest feedback record taken in (`None`: read all of it on the next step).
    feedback_read: Option<Millis>,
}

impl<'a> Correlator<'a> {
    fn open(
        client: &'a EsClient,
        settings: &'a WorkerSettings,
        setup: &PipelineSetup,
        (count, from): (u32, Millis),
        notifier: Option<&mut (dyn Notifier + '_)>,
        live: bool,
    ) -> Result<Self, WorkerError> {
        let mut store = StateStore::new(
            client.clone(),
            &settings.names.state,
            &correlator_job(&settings.job),
            &settings.worker_id,
        );
        let (alerts, position) = match store.load()? {
            Some(cp) => {
                // Who was told what moves with the role.
                if let (Some(n), Some(told)) = (notifier, cp.extra.get("notifier")) {
                    n.load(told);
                }
                (decode(&cp.state)?, cp.until)
            }
            None => (AlertManager::new(setup.cfg.alerts.clone()), from),
        };
        tracing::info!(job = %settings.job, position = %format_rfc3339(position), "correlating the partitions' windows");
        let writer =
            BulkWriter::new(client.clone(), settings.names.clone(), &settings.worker_id, live).with_links(settings.action_links.clone());
        let mut correlator = Correlator {
            client,
            settings,
            count,
            store,
            alerts,
            position,
            writer,
            anomalies: 0,
            fence: Millis::MAX,
            live,
            feedback_read: None,
        };
        if !live {
            // What is known now applies to the range scored, as in a whole backfill.
            correlator.read_feedback(None);
        }
        Ok(correlator)
    }

    /// Takes in the feedback records written since `since` (all with `None`); the newest
    /// record's time, to read from next. A failure to read is not fatal: alerts still go out.
    fn read_feedback(&mut self, since: Option<Millis>) -> Option<Millis> {
        match crate::es::feedback::read_since(self.client, &self.settings.names, since) {
            Ok(read) => {
                for e in &read.malformed {
                    tracing::warn!(error = %e, "feedback record skipped: fix or delete the document");
                }
                for e in self.alerts.offer_feedback(read.records, true) {
                    tracing::warn!(error = %e, "feedback record refused");
                }
                read.newest.or(since)
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not read feedback; correlating without what is new");
                since
            }
        }
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

    /// Correlates the windows all partitions have passed (up to `to`; those after the first
    /// that ends past `yield_at` are left for the next step), writes, checkpoints.
    fn step(
        &mut self,
        to: Millis,
        yield_at: Instant,
        notifier: Option<&mut (dyn Notifier + '_)>,
        sent: &mut u64,
    ) -> Result<(), WorkerError> {
        if self.live {
            self.feedback_read = self.read_feedback(self.feedback_read);
        }
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
        let mut read = Vec::new();
        for (id, index, digest) in self.read_digests(ready)? {
            read.push((id, digest.end));
            merger.offer(index, digest);
        }
        for p in 0..self.count {
            merger.passed(p, ready);
        }
        // A long way behind (a worker starting on hours of windows, a slow machine), a step
        // in one piece would outlast the lease and be rolled back, again and again: it ends
        // at a window boundary once its time is up, and the next goes on from there.
        let mut ready = ready;
        let mut windows = merger.ready().into_iter().peekable();
        while let Some(mut digest) = windows.next() {
            let changed = correlate(&mut self.alerts, &mut digest);
            self.anomalies += digest.anomalies.len() as u64;
            self.check_fence()?;
            self.writer.write_anomalies(&digest.anomalies)?;
            self.writer.write_alerts(&changed)?;
            if windows.peek().is_some() && Instant::now() >= yield_at {
                ready = digest.end;
                break;
            }
        }
        let consumed: Vec<String> = read.into_iter().filter(|&(_, end)| end <= ready).map(|(id, _)| id).collect();
        self.check_fence()?;
        self.writer.flush().map_err(anyhow::Error::from)?;
        // Told once the alerts are stored, and only while the role is surely this worker's (a
        // slow flush past the fence leaves the telling to the next holder, from the
        // checkpoint); a failure between a send and the checkpoint may repeat that message
        // when the role is taken up again (at least once, never lost).
        self.check_fence()?;
        let (stored, evidence) = self.writer.take_written();
        let mut told = Value::Null;
        if let Some(n) = notifier {
            n.remember(&evidence);
            *sent += notify(n, &stored);
            told = n.save();
        }
        let state = encode(&self.alerts)?;
        let extra = json!({"anomalies": self.anomalies, "alerts_raised": self.alerts.raised(), "notifier": told});
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_unit_begins_a_round_in_turn() {
        let units = [Unit::Partition(0), Unit::Partition(2), Unit::Correlator];
        let firsts: Vec<Unit> = (0..6).map(|round| rotated(&units, round)[0]).collect();
        assert_eq!(firsts, [units[0], units[1], units[2], units[0], units[1], units[2]]);
        // Each round still offers every unit once.
        for round in 0..3 {
            let mut all = rotated(&units, round);
            all.sort_by_key(|u| format!("{u:?}"));
            let mut want = units.to_vec();
            want.sort_by_key(|u| format!("{u:?}"));
            assert_eq!(all, want);
        }
        assert!(rotated::<Unit>(&[], 7).is_empty());
    }
}
