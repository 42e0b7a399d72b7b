//! `apiwatch run` and `apiwatch backfill`: the polling loop around the pipeline.
//!
//! A job (the live worker, or one backfill range) owns a checkpoint in the state index. Each
//! poll reads `[checkpoint, now − ingest delay)` in window-sized slices (several fetched in
//! parallel, scored in order), lets the pipeline close every window that ended, bulk-writes the
//! documents, and only then moves the checkpoint together with the pipeline's learned state. So
//! a crash or a kill at any point resumes from the last checkpoint with the same state: windows
//! already written are written again with the same ids (no duplicate), none is skipped (no gap).
//! SIGTERM/SIGINT finish the current slice, checkpoint and exit. An unreachable server makes the
//! worker wait and retry from its last checkpoint, losing nothing.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::{json, Value};

use crate::es::client::EsClient;
use crate::es::names::IndexNames;
use crate::es::state::{StateStore, StateStoreError};
use crate::model::time::{format_rfc3339, parse_rfc3339, Millis, MINUTE_MS};
use crate::model::Alert;
use crate::notify::Notifier;
use crate::pipeline::{Pipeline, PipelineSetup, StateError};
use crate::serve::WorkerStatus;
use crate::sink::elasticsearch::{BulkWriter, WriteStats};
use crate::source::elasticsearch::{search_pattern, Documents, LogSource, SliceMsg, SliceReader};
use crate::source::IngestReport;

/// How the worker talks to Elasticsearch and paces itself (the `[elasticsearch]` section).
#[derive(Clone, Debug)]
pub struct WorkerSettings {
    pub names: IndexNames,
    pub poll_interval: Duration,
    /// Events are read only once they are this old (shippers and refreshes lag).
    pub ingest_delay: Millis,
    /// Width of a read slice (a multiple of the window is natural).
    pub slice: Millis,
    /// Slices fetched in parallel.
    pub readers: usize,
    pub page_size: usize,
    /// Checkpoint at least this often while catching up.
    pub checkpoint_every: Duration,
    pub lease_ttl: Millis,
    /// Where a job without a checkpoint starts: `None` = the live edge after a warm start,
    /// or the oldest event in the log indices when they hold nothing that recent.
    pub since: Option<Millis>,
    /// A live job without a checkpoint first learns from this much of the log indices before
    /// its start, writing nothing (`0`: off).
    pub warm_start: Millis,
    pub job: String,
    pub worker_id: String,
    /// Partitions the job is split into (`1`: scored whole by one worker at a time).
    pub partitions: u32,
    /// `[[elasticsearch.sources]]`: index patterns with their formats; empty = our ECS events
    /// in `names.logs`.
    pub sources: Vec<LogSource>,
    /// Signs the answering links written into open alerts' documents (`alert.link.*`), for
    /// Kibana's alert table; `None` when links are not set up.
    pub action_links: Option<crate::feedback::link::ActionLinks>,
    /// Checks PagerDuty's webhooks (`POST /hooks/pagerduty`); `None`: off.
    pub pagerduty_webhook: Option<crate::feedback::pagerduty::WebhookSecret>,
}

impl WorkerSettings {
    /// The log sources as configured, or our ECS events in `names.logs`.
    pub fn log_sources(&self) -> Vec<LogSource> {
        if self.sources.is_empty() {
            vec![LogSource::ecs(&self.names.logs)]
        } else {
            self.sources.clone()
        }
    }

    /// What reading the log sources searches (no parser built).
    pub fn log_pattern(&self) -> String {
        search_pattern(&self.log_sources())
    }

    /// The log sources, ready to read hits.
    pub fn documents(&self) -> anyhow::Result<Arc<Documents>> {
        Ok(Arc::new(Documents::new(&self.log_sources())?))
    }
}

impl Default for WorkerSettings {
    fn default() -> Self {
        WorkerSettings {
            names: IndexNames::default(),
            poll_interval: Duration::from_secs(10),
            ingest_delay: 10_000,
            slice: 5 * MINUTE_MS,
            readers: 2,
            page_size: 5000,
            checkpoint_every: Duration::from_secs(30),
            lease_ttl: 2 * MINUTE_MS,
            since: None,
            warm_start: 24 * crate::model::time::HOUR_MS,
            job: "live".into(),
            worker_id: default_worker_id(),
            partitions: 1,
            sources: Vec::new(),
            action_links: None,
            pagerduty_webhook: None,
        }
    }
}

pub fn default_worker_id() -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "worker".into());
    format!("{host}-{}", std::process::id())
}

/// What a run did.
#[derive(Debug, Default, Clone, Serialize)]
pub struct RunSummary {
    pub job: String,
    pub from: Option<String>,
    pub until: Option<String>,
    pub polls: u64,
    pub events: u64,
    pub read_bytes: u64,
    pub anomalies: u64,
    pub alerts_raised: u64,
    pub skipped_documents: u64,
    pub skipped_samples: Vec<String>,
    /// Documents that are not API calls (Elastic APM internal spans): left out, not errors.
    pub not_calls: u64,
    /// Callers' records of calls (exit spans) read: they time hops, they are not calls served.
    pub client_records: u64,
    pub writes: WriteStats,
    pub checkpoints: u64,
    pub resumed: bool,
    pub already_complete: bool,
    pub seconds: f64,
    pub events_per_sec: f64,
    pub notifications_sent: u64,
    /// Events that arrived after their time range was read, scored as late (live runs).
    pub late_scored: u64,
    /// Events that arrived later than the allowed lateness: counted, not scored.
    pub late_unscored: u64,
    /// What feedback did (records in effect and refused, alerts silenced and acknowledged,
    /// anomalies held by verdicts), and feedback documents that are not records (logged with
    /// their ids).
    pub feedback: crate::feedback::FeedbackCounts,
    pub feedback_refused: u64,
    /// What a live job without a checkpoint learned from before its start.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub warm_start: Option<WarmStart>,
}

/// A warm start: the history a new live job learned from, writing nothing.
#[derive(Debug, Default, Clone, Serialize)]
pub struct WarmStart {
    pub from: String,
    pub until: String,
    pub events: u64,
    /// Anomalies history raised (judged with what was learned until then; not written).
    pub anomalies: u64,
    pub seconds: f64,
}

/// Why a run stopped early.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error(transparent)]
    State(#[from] StateStoreError),
    #[error("{0}")]
    Restore(#[from] StateError),
    #[error("job `{job}` is held by worker {holder}; this worker stands by (or stop the other one)")]
    Leased { job: String, holder: String },
    /// A partition's (or the correlator's) lease may have run out: nothing more is written
    /// for it until the worker's next round renews it.
    #[error("the lease of `{job}` may have run out before this write; it waits for the next round")]
    LeaseRanOut { job: String },
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

/// A range read by a poll: its document count when read, and the ids read while the range is
/// within the allowed lateness (dropped after, to bound memory).
struct RecentRead {
    from: Millis,
    to: Millis,
    seen: u64,
    ids: Option<rustc_hash::FxHashSet<u64>>,
}

/// How long ranges are watched for late arrivals (counted; scored within the lateness).
/// Waits between polls while Elasticsearch is unavailable: 1 s doubling, at most 30 s.
const UNAVAILABLE_RETRY: crate::retry::RetryPolicy = crate::retry::RetryPolicy {
    max_attempts: u32::MAX,
    base_delay: Duration::from_secs(1),
    max_delay: Duration::from_secs(30),
};

const LATE_WATCH: Millis = crate::model::time::HOUR_MS;

/// What a live run adds to a job: who is told about alerts, who watches its progress, and
/// whether the ids read are kept to score late arrivals once.
#[derive(Default)]
pub(super) struct Hooks<'a> {
    notifier: Option<&'a mut dyn Notifier>,
    progress: Option<Arc<AtomicI64>>,
    status: Option<Arc<WorkerStatus>>,
    track_ids: bool,
    /// `(index, count)` when the job is one partition of a partitioned job.
    partition: Option<(u32, u32)>,
}

impl Hooks<'_> {
    /// Partition `index` of `count` of a job; a live job's keeps the ids it read, to score
    /// late arrivals once.
    pub(super) fn partition(index: u32, count: u32, live: bool) -> Self {
        Hooks {
            partition: Some((index, count)),
            track_ids: live,
            ..Hooks::default()
        }
    }
}

/// One running job (or one partition of a job): pipeline, writer, state and counters.
pub(super) struct JobRun<'a> {
    client: &'a EsClient,
    settings: &'a WorkerSettings,
    /// The log sources, ready to read hits.
    docs: Arc<Documents>,
    setup: PipelineSetup,
    store: StateStore,
    pipeline: Pipeline,
    writer: BulkWriter,
    /// The last saved checkpoint (time and state), to roll back to after a failed poll.
    saved: (Millis, Vec<u8>),
    /// Everything before this data time is scored and its documents written (ahead of the
    /// checkpoint between checkpoints).
    position: Millis,
    last_checkpoint: Instant,
    progress: Option<Arc<AtomicI64>>,
    status: Option<Arc<WorkerStatus>>,
    /// Live runs remember the ids read within the lateness, to score late arrivals once.
    track_ids: bool,
    /// Ranges read recently, with how many documents they held when read and (within the
    /// allowed lateness) which, to find events that arrive after their range was scored.
    recent_reads: std::collections::VecDeque<RecentRead>,
    report: IngestReport,
    summary: RunSummary,
    notifier: Option<&'a mut dyn Notifier>,
    stop: Arc<AtomicBool>,
    /// The newest feedback record read (`None`: read all on the next poll).
    feedback_read: Option<Millis>,
    /// `(index, count)` when this is one partition of a job: it reads its services' events
    /// only, looks their callers up, and hands closed windows to the correlator.
    partition: Option<(u32, u32)>,
    /// Stop at the first slice end after this instant, with a checkpoint (a partition yields
    /// so that its worker renews its leases).
    pub(super) yield_at: Option<Instant>,
    /// Wall-clock time (ms) after which a partition writes nothing: its lease, renewed by the
    /// worker's rounds, may be another worker's by then (a worker slowed past its lease must
    /// not overwrite what the taker wrote).
    pub(super) fence: Option<Millis>,
    /// Width of this run's read slices: the job's, narrowed for a partition whose slice
    /// outlasted its lease (so that a slow machine still gets through a slice in a turn).
    slice: Millis,
    /// Turns in a row that kept to their lease since the slices were last narrowed or widened.
    calm_turns: u32,
    /// Events the pipeline had scored when the run opened (from its checkpoint).
    events_at_open: u64,
    /// A partition's reading plan up to an upper bound: the slices holding events and its
    /// filter, listed once per upper bound (a partition yields and resumes many times on the
    /// way to a backfill's end; what is left is a part of what was listed).
    plan: Option<ReadingPlan>,
}

/// Up to `upper`: the slices holding events, and the filter of a partition's services.
#[derive(Clone)]
struct ReadingPlan {
    upper: Millis,
    slices: Vec<(Millis, Millis)>,
    filter: Option<Arc<Value>>,
}

impl<'a> JobRun<'a> {
    /// Takes the job's lease, or says who holds it.
    fn lease(client: &EsClient, settings: &WorkerSettings) -> Result<StateStore, WorkerError> {
        let store = StateStore::new(client.clone(), &settings.names.state, &settings.job, &settings.worker_id);
        match store.acquire_lease(settings.lease_ttl)? {
            Some(holder) => Err(WorkerError::Leased {
                job: settings.job.clone(),
                holder,
            }),
            None => Ok(store),
        }
    }

    /// Opens a leased job: from its checkpoint when there is one, else fresh from `start`.
    pub(super) fn open(
        client: &'a EsClient,
        settings: &'a WorkerSettings,
        setup: PipelineSetup,
        mut store: StateStore,
        hooks: Hooks<'a>,
        stop: Arc<AtomicBool>,
        start: Millis,
    ) -> Result<Self, WorkerError> {
        let mut summary = RunSummary {
            job: settings.job.clone(),
            ..Default::default()
        };
        let (mut pipeline, until, resumed_extra) = match store.load()? {
            Some(cp) => {
                summary.resumed = true;
                let p = Pipeline::restore(setup.clone(), &cp.state)?;
                tracing::info!(job = %settings.job, until = %format_rfc3339(cp.until), generation = cp.generation, "resuming from checkpoint");
                (p, cp.until, cp.extra)
            }
            None => (Pipeline::new(setup.clone()).map_err(StateError::from)?, start, Value::Null),
        };
        let Hooks {
            notifier,
            progress,
            status,
            track_ids,
            partition,
        } = hooks;
        if partition.is_some() {
            pipeline.hand_windows_to_correlator();
        }
        // Who was told what survives a restart with the learned state.
        let mut notifier = notifier;
        if let (Some(n), Some(state)) = (notifier.as_deref_mut(), resumed_extra.get("notifier")) {
            n.load(state);
        }
        let saved = (until, pipeline.save_state()?);
        let writer = new_writer(client, settings, notifier.is_some(), partition);
        summary.from = Some(format_rfc3339(until));
        let events_at_open = pipeline.stats.events;
        Ok(JobRun {
            client,
            settings,
            docs: settings.documents().map_err(WorkerError::Other)?,
            setup,
            store,
            pipeline,
            writer,
            position: saved.0,
            saved,
            last_checkpoint: Instant::now(),
            progress,
            status,
            recent_reads: std::collections::VecDeque::new(),
            track_ids,
            report: IngestReport::default(),
            summary,
            notifier,
            stop,
            feedback_read: None,
            partition,
            yield_at: None,
            fence: None,
            slice: settings.slice.max(1000),
            calm_turns: 0,
            events_at_open,
            plan: None,
        })
    }

    /// Takes in the acknowledgements, silences and verdicts written since the last read; a
    /// malformed record is reported with its id and skipped. Failing to read is not fatal: the
    /// alerts still go out, feedback follows on a later poll.
    fn read_feedback(&mut self) {
        match crate::es::feedback::read_since(self.client, &self.settings.names, self.feedback_read) {
            Ok(read) => {
                for e in &read.malformed {
                    tracing::warn!(error = %e, "feedback record skipped: fix or delete the document");
                }
                self.summary.feedback_refused += read.malformed.len() as u64;
                let (records, newest) = (read.records, read.newest);
                // Refused records are counted by the pipeline (`feedback.refused`).
                for e in self.pipeline.offer_feedback(records, true) {
                    tracing::warn!(error = %e, "feedback record refused");
                }
                self.feedback_read = newest;
            }
            Err(e) => {
                tracing::warn!(error = %e, index = %self.settings.names.feedback, "could not read feedback; will try again next poll")
            }
        }
    }

    /// Where the last checkpoint stands.
    pub(super) fn until(&self) -> Millis {
        self.saved.0
    }

    /// Where scoring stands (ahead of the checkpoint between checkpoints).
    pub(super) fn position(&self) -> Millis {
        self.position
    }

    /// Checkpoints where the run stands (before a partition is handed to another worker).
    pub(super) fn checkpoint_now(&mut self) -> Result<(), WorkerError> {
        if self.saved.0 < self.position {
            self.checkpoint(self.position)?;
        }
        Ok(())
    }

    /// Events scored, bytes read and checkpoints saved by this run (not before its checkpoint).
    pub(super) fn counters(&self) -> (u64, u64, u64) {
        let events = self.pipeline.stats.events.saturating_sub(self.events_at_open);
        (events, self.summary.read_bytes, self.summary.checkpoints)
    }

    /// Scores `[position, upper)` and writes its documents; checkpoints when one is due (every
    /// `checkpoint_every`, at a stop, and at the end when `final_checkpoint`). On a failure, the
    /// pipeline is rolled back to the last checkpoint so the caller can retry.
    pub(super) fn advance(&mut self, upper: Millis, final_checkpoint: bool, mut progress: impl FnMut(Millis)) -> Result<bool, WorkerError> {
        match self.advance_inner(upper, final_checkpoint, &mut progress) {
            Ok(stopped) => Ok(stopped),
            Err(e) => {
                self.pipeline = Pipeline::restore(self.setup.clone(), &self.saved.1)?;
                if self.partition.is_some() {
                    self.pipeline.hand_windows_to_correlator();
                }
                self.position = self.saved.0;
                // Feedback taken in since the checkpoint was rolled back with it: read it again.
                self.feedback_read = None;
                self.writer = new_writer(self.client, self.settings, self.notifier.is_some(), self.partition);
                Err(e)
            }
        }
    }

    /// Reads narrower slices from now on (half as wide, in whole windows, a window at least):
    /// the new width, or `None` when it is a window already. Slices are still cut on multiples
    /// of the width, so a run resumed by another worker cuts on the same boundaries.
    pub(super) fn narrow_slices(&mut self) -> Option<Millis> {
        let narrower = narrower_slice(self.slice, self.setup.cfg.window);
        if narrower >= self.slice {
            return None;
        }
        self.slice = narrower;
        self.plan = None;
        self.calm_turns = 0;
        Some(narrower)
    }

    /// A turn kept to its lease: after [`CALM_TURNS`] in a row the slices are read twice as
    /// wide again (up to the job's width); the new width, if wider. Narrowed slices cost a
    /// search each; a machine that was only slow for a while gets its throughput back.
    pub(super) fn turn_kept_to_lease(&mut self) -> Option<Millis> {
        self.calm_turns += 1;
        if self.calm_turns < CALM_TURNS {
            return None;
        }
        self.calm_turns = 0;
        let wider = (self.slice * 2).min(self.settings.slice.max(1000));
        if wider <= self.slice {
            return None;
        }
        self.slice = wider;
        self.plan = None;
        Some(wider)
    }

    /// The slices of `[from, upper)` holding events, and (for a partition) the filter of its
    /// services' events. A partition keeps the plan for its upper bound and reuses what is left
    /// of it when it resumes after yielding.
    fn reading_plan(&mut self, from: Millis, upper: Millis) -> Result<ReadingPlan, WorkerError> {
        if let Some(plan) = self.plan.as_ref().filter(|p| p.upper == upper) {
            let slices = (plan.slices.iter().copied())
                .filter(|&(_, end)| end > from)
                .map(|(start, end)| (start.max(from), end))
                .collect();
            let filter = plan.filter.clone();
            return Ok(ReadingPlan { upper, slices, filter });
        }
        let slices = nonempty_slices(self.client, self.docs.pattern(), from, upper, self.slice)?;
        let Some((index, count)) = self.partition else {
            return Ok(ReadingPlan {
                upper,
                slices,
                filter: None,
            });
        };
        let range = json!({"range": {"@timestamp": {"gte": format_rfc3339(from), "lt": format_rfc3339(upper), "format": "strict_date_optional_time"}}});
        let keys = crate::es::partition::keys(self.client, self.docs.pattern(), PARTITION_KEY, &range).map_err(anyhow::Error::from)?;
        let filter = Some(Arc::new(crate::es::partition::filter(PARTITION_KEY, &keys, index, count)));
        let plan = ReadingPlan { upper, slices, filter };
        self.plan = Some(plan.clone());
        Ok(plan)
    }

    /// Tells the partition's pipeline who made the calls of a page: callers are looked up in
    /// the log indices by span id (another partition scores them), except those in the page.
    fn tell_callers(&mut self, events: &[crate::model::Event]) -> Result<(), WorkerError> {
        if self.partition.is_none() {
            return Ok(());
        }
        let in_page: rustc_hash::FxHashSet<&str> = events.iter().filter_map(|e| e.span_id.as_deref()).collect();
        let mut wanted: Vec<String> = (events.iter())
            .filter_map(|e| e.parent_id.as_deref())
            .filter(|p| !in_page.contains(p))
            .map(str::to_owned)
            .collect();
        if wanted.is_empty() {
            return Ok(());
        }
        wanted.sort_unstable();
        wanted.dedup();
        let first = events.iter().map(|e| e.timestamp).min().unwrap_or_default();
        let last = events.iter().map(|e| e.timestamp).max().unwrap_or_default();
        // A caller starts before its call, within the spans a pipeline remembers.
        let cfg = &self.setup.cfg;
        let range = (first - cfg.lateness - 2 * cfg.window, last + cfg.lateness);
        let found = crate::es::partition::callers(self.client, self.docs.pattern(), &wanted, range).map_err(anyhow::Error::from)?;
        for (span, service, provider) in found {
            self.pipeline.know_caller(&span, &service, &provider, last);
        }
        Ok(())
    }

    /// Reads `slices` of this job's log indices with its readers and page size (a live turn, a
    /// backfill range or a warm start's history).
    fn slice_reader(&self, slices: Vec<(Millis, Millis)>, filter: Option<Arc<Value>>) -> SliceReader {
        SliceReader::start(
            self.client,
            &self.docs,
            slices,
            (self.settings.readers, self.settings.page_size),
            filter,
        )
    }

    fn checkpoint_due(&self) -> bool {
        self.last_checkpoint.elapsed() >= self.settings.checkpoint_every
    }

    fn advance_inner(&mut self, upper: Millis, final_checkpoint: bool, progress: &mut impl FnMut(Millis)) -> Result<bool, WorkerError> {
        let from = self.position;
        if upper <= from {
            if final_checkpoint && self.saved.0 < self.position {
                self.checkpoint(self.position)?;
            }
            return Ok(false);
        }
        let ReadingPlan { slices, filter, .. } = self.reading_plan(from, upper)?;
        let mut reader = self.slice_reader(slices.clone(), filter);
        let mut stopped = false;
        let mut read = 0u64;
        let mut ids = rustc_hash::FxHashSet::default();
        while let Some((i, msg)) = reader.next_message() {
            match msg {
                SliceMsg::Page(page) => {
                    read += page.report.lines;
                    if self.track_ids {
                        ids.extend(page.ids.iter().copied());
                    }
                    self.summary.read_bytes += page.bytes;
                    merge_report(&mut self.report, &page.report);
                    self.tell_callers(&page.events)?;
                    for ev in page.events {
                        self.pipeline.push(ev, &mut self.writer)?;
                    }
                }
                SliceMsg::Failed(e) => return Err(anyhow::Error::from(e).into()),
                SliceMsg::Done => {
                    let end = slices[i].1;
                    self.pipeline.advance_to(end, &mut self.writer)?;
                    self.position = end;
                    progress(end);
                    // A partition yields to its worker's next round without a checkpoint (one
                    // is saved when due, and before the partition is handed over).
                    let yielding = self.yield_at.is_some_and(|at| Instant::now() >= at);
                    let stop = self.stop.load(Ordering::Relaxed);
                    if stop || self.checkpoint_due() {
                        self.checkpoint(end)?;
                    } else if yielding {
                        self.publish()?;
                    }
                    if (stop || yielding) && end < upper {
                        stopped = true;
                        break;
                    }
                }
            }
        }
        if !stopped {
            // Empty stretches after the last slice still pass: windows close, alerts resolve.
            self.pipeline.advance_to(upper, &mut self.writer)?;
            self.recent_reads.push_back(RecentRead {
                from,
                to: upper,
                seen: read,
                ids: self.track_ids.then_some(ids),
            });
            self.position = upper;
            progress(upper);
            if final_checkpoint || self.stop.load(Ordering::Relaxed) || self.checkpoint_due() {
                self.checkpoint(upper)?;
            } else {
                self.publish()?;
            }
        }
        Ok(stopped)
    }

    /// Warm start: learns from `[from, position)` (the history before a new live job's start)
    /// writing nothing, forgets the incidents that history opened, and checkpoints at the
    /// start, so that the first live window is judged against baselines, forests, routes and
    /// norms that know the recent traffic, and a restart does not learn it twice.
    /// `None` when the log indices hold nothing in that range.
    pub(super) fn warm_start(&mut self, from: Millis) -> Result<Option<WarmStart>, WorkerError> {
        let started = Instant::now();
        let until = self.position;
        let ReadingPlan { slices, filter, .. } = self.reading_plan(from, until)?;
        self.plan = None;
        if slices.is_empty() {
            return Ok(None);
        }
        tracing::info!(job = %self.settings.job, from = %format_rfc3339(from), until = %format_rfc3339(until), slices = slices.len(), "warm start: learning from the log indices before the first live window (nothing is written)");
        let mut sink = crate::sink::CountingSink::default();
        let mut reader = self.slice_reader(slices.clone(), filter);
        let mut told = Instant::now();
        while let Some((i, msg)) = reader.next_message() {
            match msg {
                SliceMsg::Page(page) => {
                    self.summary.read_bytes += page.bytes;
                    merge_report(&mut self.report, &page.report);
                    self.tell_callers(&page.events)?;
                    for ev in page.events {
                        self.pipeline.push(ev, &mut sink)?;
                    }
                }
                SliceMsg::Failed(e) => return Err(anyhow::Error::from(e).into()),
                SliceMsg::Done => {
                    let end = slices[i].1;
                    self.pipeline.advance_to(end, &mut sink)?;
                    if told.elapsed() >= WARM_START_PROGRESS_EVERY {
                        told = Instant::now();
                        let done = (end - from) as f64 / (until - from).max(1) as f64;
                        tracing::info!(learned_up_to = %format_rfc3339(end), percent = (100.0 * done).round(), events = self.pipeline.stats.events, "warm start");
                    }
                }
            }
            if self.stop.load(Ordering::Relaxed) {
                return Err(anyhow::anyhow!("stopped during the warm start: the next start learns again (nothing was written)").into());
            }
        }
        self.pipeline.advance_to(until, &mut sink)?;
        let learned = WarmStart {
            from: format_rfc3339(from),
            until: format_rfc3339(until),
            events: self.pipeline.stats.events,
            anomalies: sink.anomalies,
            seconds: started.elapsed().as_secs_f64(),
        };
        self.pipeline.forget_history(until);
        self.events_at_open = 0;
        self.checkpoint(until)?;
        tracing::info!(
            events = learned.events,
            seconds = learned.seconds,
            anomalies_not_written = learned.anomalies,
            "warm start done: judging from the first live window"
        );
        self.summary.warm_start = Some(learned.clone());
        Ok(Some(learned))
    }

    /// Finds events that arrived after the range holding them was read (shipping lag beyond
    /// the ingest delay): a range whose document count grew is read again and the documents not
    /// seen before are scored, as late events in the current window, while the range is within
    /// the allowed lateness; later than that they are counted and a warning says how to avoid
    /// them (a longer `ingest_delay_secs`).
    pub(super) fn sweep_late_arrivals(&mut self) -> Result<(), WorkerError> {
        let lateness = self.setup.cfg.lateness.max(self.settings.ingest_delay);
        let horizon = self.position - LATE_WATCH;
        while self.recent_reads.front().is_some_and(|r| r.to <= horizon) {
            self.recent_reads.pop_front();
        }
        let expired = self.position - lateness;
        for r in self.recent_reads.iter_mut().filter(|r| r.to <= expired) {
            r.ids = None;
        }
        if self.recent_reads.is_empty() {
            return Ok(());
        }
        let ranges: Vec<Value> = self
            .recent_reads
            .iter()
            .map(|r| json!({"from": format_rfc3339(r.from), "to": format_rfc3339(r.to)}))
            .collect();
        let filter = self.late_filter()?;
        let mut body = json!({"size": 0, "aggs": {"reads": {"date_range": {"field": "@timestamp", "format": "strict_date_optional_time", "ranges": ranges}}}});
        if let Some(f) = &filter {
            body["query"] = f.as_ref().clone();
        }
        let Some(v) = search_logs(self.client, self.docs.pattern(), &body, "checking for late arrivals")? else {
            return Ok(());
        };
        let buckets = v
            .pointer("/aggregations/reads/buckets")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        // Buckets come back in the order of the ranges asked.
        let grown: Vec<(usize, u64)> = buckets
            .iter()
            .take(self.recent_reads.len())
            .enumerate()
            .filter_map(|(i, b)| {
                let now = b.get("doc_count").and_then(Value::as_u64).unwrap_or(0);
                (now > self.recent_reads[i].seen).then_some((i, now))
            })
            .collect();
        for (i, now) in grown {
            let RecentRead { from, to, seen, .. } = self.recent_reads[i];
            let mut scored = 0;
            if let Some(mut ids) = self.recent_reads[i].ids.take() {
                let mut reader = crate::source::elasticsearch::RangeReader::new(self.client, &self.docs, from, to, self.settings.page_size)
                    .with_filter(filter.clone());
                while let Some(page) = reader.next_page().map_err(anyhow::Error::from)? {
                    for (ev, id) in page.events.into_iter().zip(page.ids) {
                        if ids.insert(id) {
                            scored += 1;
                            self.pipeline.push(ev, &mut self.writer)?;
                        }
                    }
                }
                self.recent_reads[i].ids = Some(ids);
            }
            let unscored = (now - seen).saturating_sub(scored);
            self.summary.late_scored += scored;
            self.summary.late_unscored += unscored;
            self.recent_reads[i].seen = now;
            if unscored > 0 {
                tracing::warn!(
                    from = %format_rfc3339(from),
                    to = %format_rfc3339(to),
                    events = unscored,
                    "events arrived later than the allowed lateness; counted, not scored: raise elasticsearch.ingest_delay_secs above the shipping lag"
                );
            } else {
                tracing::info!(from = %format_rfc3339(from), to = %format_rfc3339(to), events = scored, "scored late arrivals");
            }
        }
        Ok(())
    }

    /// A partition's filter over the ranges watched for late arrivals, from the services
    /// present now (a late event may bring one its range did not have when read).
    fn late_filter(&self) -> Result<Option<Arc<Value>>, WorkerError> {
        let (Some((index, count)), Some(first), Some(last)) = (self.partition, self.recent_reads.front(), self.recent_reads.back()) else {
            return Ok(None);
        };
        let range = json!({"range": {"@timestamp": {"gte": format_rfc3339(first.from), "lt": format_rfc3339(last.to), "format": "strict_date_optional_time"}}});
        let keys = crate::es::partition::keys(self.client, self.docs.pattern(), PARTITION_KEY, &range).map_err(anyhow::Error::from)?;
        Ok(Some(Arc::new(crate::es::partition::filter(PARTITION_KEY, &keys, index, count))))
    }

    /// Late events scored, and counted unscored (beyond the lateness), by this run.
    pub(super) fn late_counts(&self) -> (u64, u64) {
        (self.summary.late_scored, self.summary.late_unscored)
    }

    /// Refuses a write once the fence has passed (see [`JobRun::fence`]).
    fn check_fence(&self) -> Result<(), WorkerError> {
        match self.fence {
            Some(t) if chrono::Utc::now().timestamp_millis() >= t => Err(WorkerError::LeaseRanOut {
                job: self.store.job().to_owned(),
            }),
            _ => Ok(()),
        }
    }

    /// Writes everything scored so far and tells people about stored alert changes.
    fn publish(&mut self) -> Result<(), WorkerError> {
        self.check_fence()?;
        self.writer.flush().map_err(anyhow::Error::from)?;
        let (alerts, anomalies) = self.writer.take_written();
        if let Some(n) = self.notifier.as_deref_mut() {
            n.remember(&anomalies);
            self.summary.notifications_sent += notify(n, &alerts);
        }
        if let Some(p) = &self.progress {
            p.store(self.position, Ordering::Relaxed);
        }
        self.report_status();
        Ok(())
    }

    /// Publishes where the job is and its counters, for `/health` and `/metrics`.
    fn report_status(&self) {
        let Some(status) = &self.status else { return };
        let now = chrono::Utc::now().timestamp_millis();
        let stats = &self.pipeline.stats;
        let writes = &self.writer.stats;
        status.update(|s| {
            s.lease_held = true;
            s.failing = None;
            s.last_progress = Some(now);
            s.position = Some(self.position);
            s.checkpoint_saved = (self.summary.checkpoints > 0).then(|| now - self.last_checkpoint.elapsed().as_millis() as Millis);
            s.polls = self.summary.polls;
            s.events_scored = stats.events;
            s.read_bytes = self.summary.read_bytes;
            s.documents_skipped = self.report.skipped();
            s.events_refused = stats.refused_events;
            s.feedback_alerts = [
                ("silenced".to_owned(), stats.feedback.alerts_silenced),
                ("acknowledged".to_owned(), stats.feedback.alerts_acknowledged),
            ]
            .into();
            s.feedback_records_applied = stats.feedback.applied;
            s.feedback_records_refused = self.summary.feedback_refused + stats.feedback.refused;
            s.late_scored = self.summary.late_scored;
            s.late_unscored = self.summary.late_unscored;
            s.anomalies = stats.anomalies;
            s.anomalies_by_detector.clone_from(&stats.anomalies_by_detector);
            s.alerts_raised = stats.alerts_raised;
            s.alerts_by_priority.clone_from(&stats.alerts_by_priority);
            s.alerts_held_by_rule.clone_from(&stats.held_by_rule);
            s.notifications_sent = self.summary.notifications_sent;
            s.documents_written.clone_from(&writes.by_index);
            s.bulk_requests = writes.bulk_requests;
            s.bulk_retried_items = writes.retried_items;
            s.dead_letters = writes.parked;
            s.entities = self.pipeline.entity_count();
            s.entities_evicted = stats.evicted_entities;
        });
    }

    /// Writes everything out, then moves the checkpoint to `until` with the learned state.
    /// The notifier's memory (who was told what) is saved with it; a crash between a send and
    /// the next checkpoint may repeat that message at the restart (at least once, never lost).
    fn checkpoint(&mut self, until: Millis) -> Result<(), WorkerError> {
        self.check_fence()?;
        let services = self.pipeline.registry.records(&self.pipeline.names);
        self.writer.write_services(&services)?;
        self.publish()?;
        let state = self.pipeline.save_state()?;
        let notifier_state = self.notifier.as_deref().map_or(Value::Null, |n| n.save());
        let extra = json!({
            "events": self.pipeline.stats.events,
            "anomalies": self.pipeline.stats.anomalies,
            "alerts_raised": self.pipeline.stats.alerts_raised,
            "skipped_documents": self.report.skipped(),
            "late_scored": self.summary.late_scored,
            "late_unscored": self.summary.late_unscored,
            "entities": self.pipeline.entity_count(),
            "evicted_entities": self.pipeline.stats.evicted_entities,
            "notifier": notifier_state,
        });
        self.store.save(until, &state, &extra, &format!("{:?}", self.setup.cfg.detectors))?;
        self.saved = (until, state);
        self.last_checkpoint = Instant::now();
        self.summary.checkpoints += 1;
        self.report_status();
        Ok(())
    }

    fn summary(mut self, started: Instant) -> RunSummary {
        let s = &mut self.summary;
        s.until = Some(format_rfc3339(self.saved.0));
        s.events = self.pipeline.stats.events;
        s.anomalies = self.pipeline.stats.anomalies;
        s.alerts_raised = self.pipeline.stats.alerts_raised;
        s.feedback = self.pipeline.stats.feedback.clone();
        s.skipped_documents = self.report.skipped();
        s.skipped_samples = self.report.samples.clone();
        s.not_calls = self.report.not_calls;
        s.client_records = self.pipeline.stats.client_records;
        s.writes = self.writer.stats.clone();
        s.seconds = started.elapsed().as_secs_f64();
        s.events_per_sec = s.events as f64 / s.seconds.max(1e-9);
        self.store.release_lease();
        self.summary
    }
}

/// The field a partitioned job divides its events by: the callee service, which owns the state
/// of windows, baselines, forests, models and forecasts.
pub const PARTITION_KEY: &str = "service.name";

/// A bulk writer for a job, or for one partition of it (whose windows go out as digests).
fn new_writer(client: &EsClient, settings: &WorkerSettings, keep_anomalies: bool, partition: Option<(u32, u32)>) -> BulkWriter {
    let writer = BulkWriter::new(client.clone(), settings.names.clone(), &settings.worker_id, keep_anomalies)
        .with_links(settings.action_links.clone());
    match partition {
        Some((index, count)) => writer.for_partition(&crate::job::partition::partition_job(&settings.job, index, count)),
        None => writer,
    }
}

pub(super) fn notify(n: &mut dyn Notifier, alerts: &[Alert]) -> u64 {
    match n.notify(alerts) {
        Ok(sent) => sent,
        Err(e) => {
            tracing::error!(error = %e, "notification failed; the alert documents are stored and the next change will be mailed");
            0
        }
    }
}

fn merge_report(total: &mut IngestReport, page: &IngestReport) {
    let room = IngestReport::MAX_SAMPLES.saturating_sub(total.samples.len());
    for s in page.samples.iter().take(room) {
        tracing::warn!(document = %s, "skipped a log document that is not a valid API-call event");
    }
    total.absorb(page);
}

/// How often a warm start logs how far it is.
const WARM_START_PROGRESS_EVERY: Duration = Duration::from_secs(10);

/// Turns in a row within their lease before a partition's narrowed slices widen again.
const CALM_TURNS: u32 = 20;

/// Half of `slice` rounded down to whole windows, never under one window (nor under a second).
fn narrower_slice(slice: Millis, window: Millis) -> Millis {
    let window = window.max(1000);
    ((slice / 2) / window * window).max(window).min(slice)
}

/// The slices of `[from, to)` that hold events, cut on multiples of `slice` so that every run
/// cuts the same way: one date histogram instead of a search per empty slice.
pub fn nonempty_slices(client: &EsClient, logs: &str, from: Millis, to: Millis, slice: Millis) -> anyhow::Result<Vec<(Millis, Millis)>> {
    let mut out = Vec::new();
    // Elasticsearch caps buckets per search; ask in spans well under the cap.
    let span = slice * 50_000;
    let mut lo = from;
    while lo < to {
        let hi = (lo + span).min(to);
        let body = json!({
            "size": 0,
            "query": {"range": {"@timestamp": {"gte": format_rfc3339(lo), "lt": format_rfc3339(hi), "format": "strict_date_optional_time"}}},
            "aggs": {"slices": {"date_histogram": {"field": "@timestamp", "fixed_interval": format!("{slice}ms"), "min_doc_count": 1}}}
        });
        let Some(v) = search_logs(client, logs, &body, "listing the slices that hold events")? else {
            return Ok(out);
        };
        for b in v
            .pointer("/aggregations/slices/buckets")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let Some(start) = b.get("key").and_then(Value::as_i64) else {
                continue;
            };
            out.push((start.max(lo), (start + slice).min(hi)));
        }
        lo = hi;
    }
    Ok(out)
}

/// A search over the log indices; `None` when there are none yet. A shard that cannot answer
/// (its node just died) fails the search instead of leaving its documents out of the answer:
/// a slice list or a key list with holes would skip events silently.
fn search_logs(client: &EsClient, logs: &str, body: &Value, what: &str) -> anyhow::Result<Option<Value>> {
    let (status, v) = client.json_status(
        "POST",
        &format!("/{logs}/_search?ignore_unavailable=true&allow_no_indices=true&allow_partial_search_results=false"),
        Some(body),
    )?;
    if status == 404 {
        return Ok(None);
    }
    anyhow::ensure!((200..300).contains(&status), "{what} in {logs}: {v}");
    Ok(Some(v))
}

/// The oldest event's time in the log indices, if any.
pub fn oldest_event(client: &EsClient, logs: &str) -> anyhow::Result<Option<Millis>> {
    event_time(client, logs, "min")
}

/// The newest event's time in the log indices, if any.
fn newest_event(client: &EsClient, logs: &str) -> anyhow::Result<Option<Millis>> {
    event_time(client, logs, "max")
}

/// The `min` or `max` of the events' `@timestamp` in the log indices (`None`: no event).
fn event_time(client: &EsClient, logs: &str, bound: &str) -> anyhow::Result<Option<Millis>> {
    let body = json!({"size": 0, "aggs": {"t": {bound: {"field": "@timestamp", "format": "strict_date_optional_time"}}}});
    let what = format!("reading the {} event", if bound == "min" { "oldest" } else { "newest" });
    let Some(v) = search_logs(client, logs, &body, &what)? else {
        return Ok(None);
    };
    Ok(v.pointer("/aggregations/t/value_as_string")
        .and_then(Value::as_str)
        .and_then(parse_rfc3339))
}

/// Options of `apiwatch run`.
pub struct RunOptions<'a> {
    pub once: bool,
    pub stop: Arc<AtomicBool>,
    pub notifier: Option<&'a mut dyn Notifier>,
    /// Now, for tests that pin the clock; `None` = the wall clock.
    pub now: Option<Millis>,
    /// Set to the data time up to which documents are written, after every poll (benchmarks).
    pub progress: Option<Arc<AtomicI64>>,
    /// Where the worker publishes its health and counters (`--listen`).
    pub status: Option<Arc<WorkerStatus>>,
}

/// `apiwatch run`: polls until stopped (or once).
pub fn run<'a>(
    client: &'a EsClient,
    settings: &'a WorkerSettings,
    setup: impl Into<PipelineSetup>,
    opts: RunOptions<'a>,
) -> Result<RunSummary, WorkerError> {
    let started = Instant::now();
    let (start, learn_from) = live_plan(client, settings, now_ms(opts.now))?;
    refuse_partitioned(client, settings, now_ms(opts.now))?;
    let stop = opts.stop.clone();
    let store = loop {
        match JobRun::lease(client, settings) {
            Err(WorkerError::Leased { job, holder }) if !opts.once && !stop.load(Ordering::Relaxed) => {
                tracing::info!(%job, %holder, "standing by: another worker holds the job");
                sleep_unless_stopped(settings.poll_interval, &stop);
            }
            other => break other?,
        }
    };
    let status = opts.status.clone();
    let hooks = Hooks {
        notifier: opts.notifier,
        progress: opts.progress,
        status: opts.status,
        track_ids: true,
        partition: None,
    };
    let mut job = JobRun::open(client, settings, setup.into(), store, hooks, stop.clone(), start)?;
    if let (false, Some(from)) = (job.summary.resumed, learn_from) {
        job.warm_start(from)?;
    }
    let mut failures = 0u32;
    loop {
        job.summary.polls += 1;
        if let Err(e) = job.sweep_late_arrivals() {
            tracing::warn!(error = %e, "could not check for late arrivals");
        }
        job.read_feedback();
        let upper = now_ms(opts.now) - settings.ingest_delay;
        match job.advance(upper, opts.once, |_| {}) {
            Ok(stopped) => {
                failures = 0;
                // Keep the lease while working; losing it means another worker took over.
                if let Some(holder) = job.store.acquire_lease(settings.lease_ttl)? {
                    return Err(WorkerError::Leased {
                        job: settings.job.clone(),
                        holder,
                    });
                }
                job.report_status();
                if stopped || opts.once {
                    break;
                }
                if stop.load(Ordering::Relaxed) {
                    // Stopped between polls: make sure the last position is checkpointed.
                    job.advance(job.position, true, |_| {})?;
                    break;
                }
                sleep_unless_stopped(settings.poll_interval, &stop);
            }
            Err(WorkerError::Other(e)) if is_transient(&e) && !opts.once => {
                failures += 1;
                if let Some(s) = &status {
                    s.update(|s| s.failing = Some(format!("{e:#}")));
                }
                let wait = UNAVAILABLE_RETRY.delay(failures.min(5));
                tracing::warn!(error = %e, retry_in_s = wait.as_secs_f64(), "Elasticsearch unavailable; rolled back to the last checkpoint and will retry");
                sleep_unless_stopped(wait, &stop);
                if stop.load(Ordering::Relaxed) {
                    break;
                }
            }
            Err(e) => return Err(e),
        }
    }
    Ok(job.summary(started))
}

/// Where a whole live job without a checkpoint starts, and where its warm start learns from:
/// `--since`, else the live edge when the log indices hold events within the warm start before
/// it, else (a replay of older history, or nothing yet) where [`live_start`] says; on a slice
/// boundary. The warm start covers the `warm_start` before the start (`None`: off).
fn live_plan(client: &EsClient, settings: &WorkerSettings, now: Millis) -> anyhow::Result<(Millis, Option<Millis>)> {
    if settings.warm_start <= 0 {
        return Ok((live_start(client, settings, now)?, None));
    }
    let edge = (now - settings.ingest_delay).div_euclid(settings.slice) * settings.slice;
    let start = match settings.since {
        Some(_) => live_start(client, settings, now)?,
        None if newest_event(client, &settings.log_pattern())?.is_some_and(|t| t >= edge - settings.warm_start) => edge,
        None => live_start(client, settings, now)?,
    };
    Ok((start, Some(start - settings.warm_start)))
}

/// Where a live job starts when it has no checkpoint: `--since`, else the oldest event, else
/// the live edge; on a slice boundary, so that every run cuts the same slices.
pub(super) fn live_start(client: &EsClient, settings: &WorkerSettings, now: Millis) -> anyhow::Result<Millis> {
    let start = match settings.since {
        Some(t) => t,
        None => oldest_event(client, &settings.log_pattern())?.unwrap_or(now - settings.ingest_delay),
    };
    Ok(start.div_euclid(settings.slice) * settings.slice)
}

/// A whole worker and partitioned ones under the same job name would both write its documents.
fn refuse_partitioned(client: &EsClient, settings: &WorkerSettings, now: Millis) -> Result<(), WorkerError> {
    use crate::job::partition::LeaseBook;
    let book = crate::es::lease::EsLeaseBook::new(client.clone(), &settings.names.state);
    let members = match book.members(&settings.job) {
        Ok(m) => m,
        Err(e) => {
            tracing::debug!(error = %e, "no partitioned workers listed (no state index yet?)");
            return Ok(());
        }
    };
    let live: Vec<String> = members.into_iter().filter(|(_, until)| *until > now).map(|(w, _)| w).collect();
    match live.is_empty() {
        true => Ok(()),
        false => Err(WorkerError::Leased {
            job: settings.job.clone(),
            holder: format!(
                "{} (scoring it in partitions: start this worker with the same --partitions)",
                live.join(", ")
            ),
        }),
    }
}

pub(super) fn is_transient(e: &anyhow::Error) -> bool {
    e.chain()
        .any(|c| c.downcast_ref::<crate::es::client::EsError>().is_some_and(|e| e.is_transient()))
}

/// `apiwatch backfill`: scores `[from, to)` as one resumable job; a second run of a completed
/// range does nothing (and `restart` redoes it, writing the same documents).
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
    let mut settings = settings.clone();
    settings.job = backfill_job(from, to);
    if restart {
        StateStore::new(client.clone(), &settings.names.state, &settings.job, &settings.worker_id).reset()?;
    }
    let store = JobRun::lease(client, &settings)?;
    let mut job = JobRun::open(client, &settings, setup.into(), store, Hooks::default(), stop, from)?;
    if job.until() >= to {
        job.summary.already_complete = true;
        return Ok(job.summary(started));
    }
    // What is known now applies to the range re-scored: silences over their own span of event
    // time, acknowledgements to the alerts they name, verdicts to what they judged (a backfill
    // re-scores the past with today's knowledge; `detect --feedback` replays records on the
    // events' clock instead, for evaluations that must not learn from the future).
    job.read_feedback();
    job.summary.polls = 1;
    // A failure Elasticsearch may recover from (a node lost, the cluster busy) rolls back to the
    // last checkpoint and goes on from there, as a live worker does; for a bounded time, since a
    // backfill has someone waiting for its answer.
    let mut failures = 0u32;
    loop {
        match job.advance(to, true, |t| progress(t - from, to - from)) {
            Ok(_) => break,
            Err(WorkerError::Other(e)) if is_transient(&e) && failures < BACKFILL_RETRIES && !job.stop.load(Ordering::Relaxed) => {
                failures += 1;
                let wait = UNAVAILABLE_RETRY.delay(failures.min(5));
                tracing::warn!(error = %e, attempt = failures, retry_in_s = wait.as_secs_f64(), "Elasticsearch unavailable; rolled back to the last checkpoint and will retry");
                sleep_unless_stopped(wait, &job.stop);
                job.summary.polls += 1;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(job.summary(started))
}

/// Failures in a row a backfill rolls back from before giving up (about five minutes of waits).
const BACKFILL_RETRIES: u32 = 12;

/// The job name of a backfill range: `backfill-FROM-TO` with RFC 3339 times ending in `Z`.
pub fn backfill_job(from: Millis, to: Millis) -> String {
    format!("backfill-{}-{}", format_rfc3339(from), format_rfc3339(to))
}

/// The range of a job named by [`backfill_job`]; `None` for any other job.
pub fn backfill_range(job: &str) -> Option<(Millis, Millis)> {
    let rest = job.strip_prefix("backfill-")?;
    let (from, to) = rest.split_once("Z-")?;
    Some((parse_rfc3339(&format!("{from}Z"))?, parse_rfc3339(to)?))
}

fn now_ms(pinned: Option<Millis>) -> Millis {
    pinned.unwrap_or_else(|| chrono::Utc::now().timestamp_millis())
}

pub(super) fn sleep_unless_stopped(d: Duration, stop: &AtomicBool) {
    let until = Instant::now() + d;
    while Instant::now() < until && !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(100).min(until - Instant::now()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slice_narrows_by_halves_in_whole_windows_down_to_one_window() {
        let w = 60_000;
        let mut slice = 600_000;
        let mut widths = vec![slice];
        loop {
            let next = narrower_slice(slice, w);
            if next == slice {
                break;
            }
            slice = next;
            widths.push(slice);
        }
        assert_eq!(widths, [600_000, 300_000, 120_000, 60_000]);
        assert!(widths.iter().all(|s| s % w == 0));
        // A job whose slice is under a window keeps it.
        assert_eq!(narrower_slice(30_000, w), 30_000);
    }
}
