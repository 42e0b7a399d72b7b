//! The window loop, in one place, whatever the source: events are reordered within the allowed
//! lateness, enriched (route template, entities, caller hop), fed to the window aggregator and to
//! every detector; when a window closes, the detectors report, the alert manager groups, and the
//! sink receives anomalies and alert changes.

pub mod limits;
pub mod partitions;
pub mod reorder;
pub mod routes;
mod state;
pub mod windows;

pub use limits::EntityLimits;
pub use state::{StateError, StateKey};

use rustc_hash::FxHashMap;

use crate::alert::correlate::{correlate, WindowDigest};
use crate::alert::{AlertConfig, AlertManager};
use crate::detect::{build_detectors, entity_label, node_label, CallContext, Detector, DetectorKind, WindowContext};
use crate::model::hash_str;
use crate::model::time::{Millis, MINUTE_MS};
use crate::model::{EntityKey, Event, Interner, ServiceMetrics, Sym, WindowStat};
use crate::onboard::ServiceRegistry;
use crate::pipeline::routes::{RouteLearner, RouteLimits};
use crate::sink::ResultSink;
use crate::source::{EventSource, InputSettings};
use limits::{EntityNames, Folded};
use reorder::ReorderBuffer;
use windows::WindowAggregator;

/// Windows closed after the last event before the clock jumps over a silence.
const QUIET_WINDOWS: Millis = 60;

/// Idle entities are evicted after a week without a call by default: a weekly batch keeps its
/// baselines, an estate that renames or retires services does not grow forever.
pub const DEFAULT_EVICT_IDLE_AFTER: Millis = 7 * crate::model::time::DAY_MS;

/// How often (in data time, on the hour) idle entities are looked for.
const EVICTION_EVERY: Millis = crate::model::time::HOUR_MS;

/// Eviction never comes closer than this many windows after the last call: an entity is still
/// reported (with zero calls, for silence detection) for 60 windows, and calls of the current
/// window may still be in flight to a model under its id.
const EVICT_AFTER_WINDOWS_AT_LEAST: Millis = 120;

/// How long after a service first appears its callers count as changed.
const NEW_SERVICE_CHANGE: Millis = 10 * MINUTE_MS;

/// The times the pipeline itself accepts, whatever the source: years 1900 to 9999. Sources
/// refuse much narrower ranges with the event's place ([`crate::model::time::TimeRange`]);
/// this bound only guarantees that no time arithmetic downstream can overflow.
const PIPELINE_TIMES: std::ops::RangeInclusive<Millis> = -2_208_988_800_000..=253_402_300_799_999;

/// How a run works (the checked form of the configuration).
#[derive(Clone, Debug)]
pub struct PipelineConfig {
    pub window: Millis,
    pub lateness: Millis,
    pub detectors: Vec<DetectorKind>,
    pub seed: u64,
    pub alerts: AlertConfig,
    pub routes: RouteLimits,
    /// How many services, providers, sessions and journeys are followed.
    pub limits: EntityLimits,
    /// Entities (services, routes, hops) without a call for this long are evicted with what
    /// every detector learned of them; 0 = never. Not part of the state key: changing it
    /// between runs changes only when eviction happens.
    pub evict_idle_after: Millis,
    /// What the file sources accept (time range, clock skew).
    pub input: InputSettings,
    /// How file inputs are read: format, field map, service and provider defaults.
    pub input_format: crate::source::InputFormat,
    /// Where the learned models and their runtime are, and whether to use them by default.
    pub model_settings: ModelSettings,
}

/// What a pipeline is built from: the checked configuration and, loaded as a step of its own
/// ([`PipelineConfig::load_models`]), the ONNX runtime and models its learned detectors need.
/// A configuration alone converts into a setup without models.
#[derive(Clone, Debug)]
pub struct PipelineSetup {
    pub cfg: PipelineConfig,
    pub models: Option<crate::ml::Models>,
}

impl From<PipelineConfig> for PipelineSetup {
    fn from(cfg: PipelineConfig) -> Self {
        PipelineSetup { cfg, models: None }
    }
}

/// Where the ONNX models and runtime are (`[models]` in the configuration).
#[derive(Clone, Debug)]
pub struct ModelSettings {
    /// Run the learned detectors by default when their runtime and models are found.
    pub enabled: bool,
    pub dir: Option<std::path::PathBuf>,
    pub runtime: Option<std::path::PathBuf>,
}

impl Default for ModelSettings {
    fn default() -> Self {
        ModelSettings {
            enabled: true,
            dir: None,
            runtime: None,
        }
    }
}

impl PipelineConfig {
    /// Loads the ONNX runtime and models the detectors need. Detectors listed explicitly must
    /// load (an error says what to run); with the default list, the learned detectors join
    /// when their runtime and models are found, and a warning says how to enable them if not.
    pub fn load_models(mut self) -> anyhow::Result<PipelineSetup> {
        let explicit = self.detectors.iter().any(|k| k.needs_models());
        let by_default = self.detectors == DetectorKind::DEFAULT && self.model_settings.enabled;
        if !explicit && !by_default {
            return Ok(self.into());
        }
        let s = &self.model_settings;
        match crate::ml::Models::open(s.runtime.as_deref(), s.dir.as_deref()) {
            Ok(m) => {
                if !explicit {
                    for k in DetectorKind::MODELS {
                        match m.store.current(k.model_name()) {
                            Ok(_) => self.detectors.push(k),
                            Err(e) => tracing::warn!(error = %e, "the {} detector is off", k.model_name()),
                        }
                    }
                }
                Ok(PipelineSetup {
                    cfg: self,
                    models: Some(m),
                })
            }
            Err(e) if explicit => {
                Err(anyhow::Error::new(e).context("the AutoEncoder and LSTM detectors need the ONNX Runtime and their models"))
            }
            Err(e) => {
                tracing::warn!("the AutoEncoder and LSTM detectors are off: {e}");
                Ok(self.into())
            }
        }
    }
}

impl Default for PipelineConfig {
    fn default() -> Self {
        PipelineConfig {
            window: MINUTE_MS,
            lateness: 2 * MINUTE_MS,
            detectors: DetectorKind::DEFAULT.to_vec(),
            seed: 42,
            alerts: AlertConfig::default(),
            routes: RouteLimits::default(),
            limits: EntityLimits::default(),
            evict_idle_after: DEFAULT_EVICT_IDLE_AFTER,
            input: InputSettings::default(),
            input_format: crate::source::InputFormat::default(),
            model_settings: ModelSettings::default(),
        }
    }
}

/// Counters of a run, readable by tests and printed in summaries.
#[derive(serde::Deserialize, Debug, Default, Clone, serde::Serialize)]
pub struct RunStats {
    pub events: u64,
    pub late_events: u64,
    pub windows: u64,
    pub entities: usize,
    pub services: usize,
    pub anomalies: u64,
    pub anomalies_by_detector: std::collections::BTreeMap<String, u64>,
    pub alerts_raised: u64,
    /// Alerts raised, by the priority they were raised with.
    #[serde(default)]
    pub alerts_by_priority: std::collections::BTreeMap<String, u64>,
    /// Events whose time no source should have let through (outside years 1900-9999): refused
    /// by the pipeline itself, counted here.
    #[serde(default)]
    pub refused_events: u64,
    /// Calls whose service or provider was beyond its cap, folded into `(other)`.
    #[serde(default)]
    pub folded: Folded,
    /// Entities (services, routes, hops) evicted after `limits.evict_idle_after_secs` idle.
    #[serde(default)]
    pub evicted_entities: u64,
    /// Calls not followed as sessions or journeys because those were at their caps.
    #[serde(default)]
    pub untracked_session_calls: u64,
    #[serde(default)]
    pub untracked_journey_calls: u64,
    /// Callers' records of calls (exit spans) read: they time hops, they are not calls served.
    #[serde(default)]
    pub client_records: u64,
    /// Anomalies strong enough to raise an alert that a rule held back, by rule.
    #[serde(default)]
    pub held_by_rule: std::collections::BTreeMap<String, u64>,
    /// Times an incident reached one of its bounds (`age`, `size`; see `alert::bound`).
    #[serde(default)]
    pub alert_bounds: std::collections::BTreeMap<String, u64>,
    /// What feedback (acknowledgements, silences, verdicts) did.
    #[serde(default)]
    pub feedback: crate::feedback::FeedbackCounts,
    pub first_event: Option<Millis>,
    pub last_event: Option<Millis>,
}

/// Span ids of recent calls, to find a call's caller. Two generations, rotated each window, so
/// memory covers about two windows of spans.
#[derive(serde::Serialize, serde::Deserialize, Default)]
struct SpanIndex {
    current: FxHashMap<u64, (Sym, Sym)>,
    previous: FxHashMap<u64, (Sym, Sym)>,
    /// Callers' records of their calls (exit spans) by span id: the caller's own call they were
    /// made from, and how long the caller waited.
    #[serde(default)]
    exits: FxHashMap<u64, ExitRecord>,
    #[serde(default)]
    exits_previous: FxHashMap<u64, ExitRecord>,
    /// Callers scored by other partitions of the job, told by [`Pipeline::know_caller`], with
    /// the time of the call they were looked up for (kept until the call is surely processed).
    #[serde(default)]
    foreign: FxHashMap<u64, (Sym, Sym, Millis)>,
}

/// What the pipeline keeps of a caller's record until the callee's record arrives.
#[derive(serde::Serialize, serde::Deserialize, Clone, Copy)]
struct ExitRecord {
    /// The caller's own call (hashed span id), where the record said.
    from: Option<u64>,
    duration_ns: Option<u64>,
}

impl SpanIndex {
    fn get(&self, span: u64) -> Option<(Sym, Sym)> {
        let foreign = || self.foreign.get(&span).map(|&(s, p, _)| (s, p));
        self.current
            .get(&span)
            .or_else(|| self.previous.get(&span))
            .copied()
            .or_else(foreign)
    }
    /// Known only as another partition's call.
    fn elsewhere(&self, span: u64) -> bool {
        !self.current.contains_key(&span) && !self.previous.contains_key(&span) && self.foreign.contains_key(&span)
    }
    fn exit(&self, span: u64) -> Option<ExitRecord> {
        self.exits.get(&span).or_else(|| self.exits_previous.get(&span)).copied()
    }
    fn rotate(&mut self, forget_foreign_before: Millis) {
        self.previous = std::mem::take(&mut self.current);
        self.exits_previous = std::mem::take(&mut self.exits);
        if !self.foreign.is_empty() {
            self.foreign.retain(|_, &mut (_, _, t)| t >= forget_foreign_before);
        }
    }
}

/// The service-level rows of a closed window's statistics, named.
fn service_metrics(stats: &[WindowStat], names: &Interner) -> Vec<ServiceMetrics> {
    stats
        .iter()
        .filter_map(|w| match w.key {
            EntityKey::Service { service, provider } => Some(ServiceMetrics {
                start: w.start,
                service: names.name(service).to_owned(),
                provider: names.name(provider).to_owned(),
                calls: w.count,
                errors_4xx: w.errors_4xx,
                errors_5xx: w.errors_5xx,
                p50_ms: w.p50_ms,
                p95_ms: w.p95_ms,
                p99_ms: w.p99_ms,
            }),
            _ => None,
        })
        .collect()
}

pub struct Pipeline {
    cfg: PipelineConfig,
    pub names: Interner,
    entity_names: EntityNames,
    routes: RouteLearner,
    pub registry: ServiceRegistry,
    reorder: ReorderBuffer,
    windows: WindowAggregator,
    spans: SpanIndex,
    detectors: Vec<Box<dyn Detector>>,
    pub alerts: AlertManager,
    /// What the alert manager learns between windows (call edges, dependency changes), handed
    /// over with the next closed window.
    pending: WindowDigest,
    /// `false` in a partition of a job: closed windows go to the sink as digests for the
    /// correlator instead of through this pipeline's alert manager.
    correlate_here: bool,
    window_start: Option<Millis>,
    /// After a warm start, the time judging began: journeys that started before it are
    /// history (learned from, not written).
    judged_from: Option<Millis>,
    stats_buf: Vec<WindowStat>,
    anomalies: Vec<crate::model::Anomaly>,
    /// Events released by the reorder buffer, reused across pushes.
    ready: Vec<Event>,
    pub stats: RunStats,
}

impl Pipeline {
    /// Builds the pipeline; fails only when a learned detector's model cannot be loaded.
    pub fn new(setup: impl Into<PipelineSetup>) -> Result<Self, crate::ml::MlError> {
        let PipelineSetup { cfg, models } = setup.into();
        let detectors = build_detectors(&cfg.detectors, cfg.seed, models.as_ref(), &cfg.limits)?;
        Ok(Self::with_detectors(cfg, detectors))
    }

    /// A pipeline feeding the given detectors (the feature export, tests).
    pub fn with_detectors(cfg: PipelineConfig, detectors: Vec<Box<dyn Detector>>) -> Self {
        Pipeline {
            names: Interner::default(),
            entity_names: EntityNames::default(),
            routes: RouteLearner::new(cfg.routes),
            registry: ServiceRegistry::default(),
            reorder: ReorderBuffer::new(cfg.lateness),
            windows: WindowAggregator::default(),
            spans: SpanIndex::default(),
            alerts: AlertManager::new(cfg.alerts.clone()),
            pending: WindowDigest::default(),
            correlate_here: true,
            detectors,
            window_start: None,
            judged_from: None,
            stats_buf: Vec::new(),
            anomalies: Vec::new(),
            ready: Vec::new(),
            stats: RunStats::default(),
            cfg,
        }
    }

    /// After a warm start's history up to `until`: the detectors keep what they learned, the
    /// alert manager forgets the incidents history opened, journeys begun before `until` are
    /// not written, and the counters begin again (they count what the job scores, not what it
    /// learned from).
    pub fn forget_history(&mut self, until: Millis) {
        self.alerts.forget_incidents();
        self.judged_from = Some(until);
        // The last event's time stays: when the clock may jump over a quiet stretch depends on
        // the data, and a job that scored the history would know it.
        self.stats = RunStats {
            last_event: self.stats.last_event,
            ..RunStats::default()
        };
    }

    /// Makes this pipeline one partition of a job: each closed window goes to the sink as a
    /// [`WindowDigest`] (anomalies, calls, edges) for the correlator, and no alert is raised here.
    pub fn hand_windows_to_correlator(&mut self) {
        self.correlate_here = false;
    }

    /// Tells a partition who made a call it is about to be given: the caller's span was scored
    /// by another partition (`service`/`provider` as that event named them). `at` is the call's
    /// time; the knowledge is kept until such a call is surely processed.
    pub fn know_caller(&mut self, span_id: &str, service: &str, provider: &str, at: Millis) {
        let service = self.entity_names.service(service, &mut self.names, &self.cfg.limits);
        let provider = self.entity_names.provider(provider, &mut self.names, &self.cfg.limits);
        self.spans.foreign.insert(hash_str(span_id), (service, provider, at));
    }

    /// Takes acknowledgements, silences and verdicts in: read live (`at_once`), from the next
    /// window; replayed, once the stream reaches each one's time (see [`crate::feedback`]).
    /// Returns the refused ones with why.
    pub fn offer_feedback(
        &mut self,
        records: impl IntoIterator<Item = crate::feedback::FeedbackRecord>,
        at_once: bool,
    ) -> Vec<crate::feedback::FeedbackError> {
        let refused = self.alerts.offer_feedback(records, at_once);
        self.stats.feedback.clone_from(&self.alerts.feedback().counts);
        refused
    }

    /// The feedback in effect and what verdicts taught (for `status` and the summary).
    pub fn feedback(&self) -> &crate::feedback::FeedbackBook {
        self.alerts.feedback()
    }

    pub fn push(&mut self, ev: Event, sink: &mut dyn ResultSink) -> anyhow::Result<()> {
        if !PIPELINE_TIMES.contains(&ev.timestamp) {
            if self.stats.refused_events == 0 {
                tracing::warn!(
                    time = ev.timestamp,
                    service = %ev.service,
                    "refused an event dated outside years 1900-9999 (its source let it through; counted as refused)"
                );
            }
            self.stats.refused_events += 1;
            return Ok(());
        }
        let mut ready = std::mem::take(&mut self.ready);
        self.reorder.push(ev, |e| ready.push(e));
        self.process_ready(ready, sink)
    }

    /// Processes released events in order; keeps the buffer for reuse.
    fn process_ready(&mut self, mut ready: Vec<Event>, sink: &mut dyn ResultSink) -> anyhow::Result<()> {
        let mut result = Ok(());
        for e in ready.drain(..) {
            if result.is_ok() {
                result = self.process(e, sink);
            }
        }
        self.ready = ready;
        result
    }

    /// Reads a whole source through the pipeline.
    pub fn run_source(
        &mut self,
        source: &mut dyn EventSource,
        sink: &mut dyn ResultSink,
        mut progress: impl FnMut(u64),
    ) -> anyhow::Result<()> {
        let mut batch = Vec::with_capacity(4096);
        loop {
            batch.clear();
            let more = source.next_batch(&mut batch, 4096)?;
            for ev in batch.drain(..) {
                self.push(ev, sink)?;
            }
            progress(self.stats.events);
            if !more {
                return Ok(());
            }
        }
    }

    /// Flushes held events, closes the last window and finishes the sink.
    pub fn finish(&mut self, sink: &mut dyn ResultSink) -> anyhow::Result<RunStats> {
        let mut ready = Vec::new();
        self.reorder.flush(|e| ready.push(e));
        for e in ready {
            self.process(e, sink)?;
        }
        if let Some(start) = self.window_start {
            self.close_window_inner(start, false, sink)?;
        }
        if let Some(start) = self.window_start.filter(|_| self.correlate_here) {
            // Let quiet periods elapse so that alerts whose problem ended can resolve.
            let quiet = self.cfg.alerts.quiet_to_resolve;
            let changed = self.alerts.tick(start.saturating_add(self.cfg.window).saturating_add(quiet));
            sink.write_alerts(&changed)?;
            self.stats.feedback.clone_from(&self.alerts.feedback().counts);
        }
        self.stats.late_events = self.reorder.late;
        self.stats.folded = self.entity_names.folded.clone();
        self.stats.untracked_session_calls = self.untracked(|d| d.untracked_sessions());
        self.stats.untracked_journey_calls = self.untracked(|d| d.untracked_journeys());
        self.stats.entities = self.windows.len();
        self.stats.services = self.registry.len();
        sink.finish(&self.registry.records(&self.names))?;
        Ok(self.stats.clone())
    }

    fn process(&mut self, ev: Event, sink: &mut dyn ResultSink) -> anyhow::Result<()> {
        let t = ev.timestamp;
        self.roll_windows(t, sink)?;
        self.stats.events += 1;
        self.stats.first_event.get_or_insert(t);
        self.stats.last_event = Some(self.stats.last_event.map_or(t, |l| l.max(t)));

        let service = self.entity_names.service(&ev.service, &mut self.names, &self.cfg.limits);
        let provider = self.entity_names.provider(&ev.provider, &mut self.names, &self.cfg.limits);
        let span = ev.span_id.as_deref().map(hash_str);
        let mut parent = ev.parent_id.as_deref().map(hash_str);
        if let Some(client) = &ev.client {
            // The caller's record of a call (an exit span): not a call `service` served. It names
            // the caller of the callee's record that will point at it, and what the caller waited.
            self.stats.client_records += 1;
            if let Some(s) = span {
                self.spans.current.insert(s, (service, provider));
                let from = client.transaction_id.as_deref().map(hash_str).or(parent);
                let record = ExitRecord {
                    from,
                    duration_ns: ev.duration_ns,
                };
                self.spans.exits.insert(s, record);
            }
            return Ok(());
        }
        let route = self.routes.template(service, &ev.path, &mut self.names);
        self.registry.record(service, provider, route, t, &self.names);
        let user = ev.user_id.as_deref().map(hash_str);
        let trace = ev.trace_id.as_deref().map(hash_str);
        if let Some(s) = span {
            self.spans.current.insert(s, (service, provider));
        }
        let caller = parent.and_then(|p| self.spans.get(p));
        let caller_elsewhere = parent.is_some_and(|p| self.spans.elsewhere(p));
        // Called through a caller's record: the journey links the callee to the caller's own
        // call and takes the time lost outside the callee as measured, not derived.
        let exit = parent.and_then(|p| self.spans.exit(p));
        if let Some(x) = exit {
            parent = x.from;
        }

        let (svc_entity, _) = self.windows.entity(EntityKey::Service { service, provider });
        let (route_entity, _) = self.windows.entity(EntityKey::Route { service, provider, route });
        self.windows.add(svc_entity, &ev, user, true);
        self.windows.add(route_entity, &ev, user, true);
        let hop_entity = caller.map(|from| {
            let (id, new) = self.windows.entity(EntityKey::Hop {
                from,
                to: (service, provider),
            });
            if new {
                let caller = node_label(&self.names, from);
                self.pending
                    .edges
                    .push((caller.clone(), node_label(&self.names, (service, provider))));
                // A caller that starts calling a brand-new service has changed (a deployment):
                // its shift in latency is expected, not an incident.
                if self
                    .registry
                    .first_seen(service, provider)
                    .is_some_and(|f| t - f <= NEW_SERVICE_CHANGE)
                {
                    self.pending.changes.push((caller, t));
                }
            }
            self.windows.add(id, &ev, None, false);
            id
        });
        let ctx = CallContext {
            event: &ev,
            service,
            provider,
            route,
            route_entity,
            caller,
            hop_entity,
            user,
            trace,
            span,
            parent,
            caller_waited_ms: exit.and_then(|x| x.duration_ns).map(|ns| ns as f64 / 1e6),
            caller_elsewhere,
            names: &self.names,
        };
        for d in &mut self.detectors {
            d.observe(&ctx);
        }
        Ok(())
    }

    /// Closes every window that ends at or before `t`, so that `t` falls in the current one.
    fn roll_windows(&mut self, t: Millis, sink: &mut dyn ResultSink) -> anyhow::Result<()> {
        let width = self.cfg.window;
        let start = *self.window_start.get_or_insert(t.div_euclid(width) * width);
        let mut next = start;
        // Empty windows close one by one (silence is news) until the data has been quiet for
        // QUIET_WINDOWS; then the clock jumps to `t`. The rule depends on the data only, not on
        // how the time was advanced, so a live worker and a backfill close the same windows.
        // Checked: `next + width` near the largest time must end the loop, not wrap and spin.
        while next.checked_add(width).is_some_and(|end| t >= end) {
            let last = self.stats.last_event.unwrap_or(next);
            if next.saturating_sub(last) > QUIET_WINDOWS * width {
                next = t.div_euclid(width) * width;
                break;
            }
            self.close_window(next, sink)?;
            next += width;
        }
        self.window_start = Some(next);
        Ok(())
    }

    /// Declares that every event before `t` has been pushed (a polled range is complete): held
    /// events before `t` are processed and every window ending by `t` closes, so its anomalies
    /// come out now rather than when the next event arrives. Later events before `t` count as
    /// late and are still scored.
    pub fn advance_to(&mut self, t: Millis, sink: &mut dyn ResultSink) -> anyhow::Result<()> {
        let mut ready = std::mem::take(&mut self.ready);
        self.reorder.release_before(t, |e| ready.push(e));
        self.process_ready(ready, sink)?;
        if self.window_start.is_some() {
            self.roll_windows(t, sink)?;
        }
        Ok(())
    }

    /// The entities (services, routes, hops) followed now.
    pub fn entities(&self) -> impl Iterator<Item = &EntityKey> {
        self.windows.index.keys()
    }

    /// How many entities are followed now (without walking them).
    pub fn entity_count(&self) -> usize {
        self.windows.len()
    }

    /// The end of the last closed window, if any: where a checkpoint stands in data time.
    pub fn window_start(&self) -> Option<Millis> {
        self.window_start
    }

    /// Evicts the entities idle for longer than `evict_idle_after`, from the window aggregator
    /// and from every detector (before their ids can be handed out again).
    fn evict_idle(&mut self, now: Millis) {
        let idle = self.cfg.evict_idle_after.max(EVICT_AFTER_WINDOWS_AT_LEAST * self.cfg.window);
        let mut evicted = Vec::new();
        self.windows.evict_idle(now.saturating_sub(idle), &mut evicted);
        if evicted.is_empty() {
            return;
        }
        let evicted = crate::detect::Evicted::new(&evicted);
        for d in &mut self.detectors {
            d.forget(&evicted);
        }
        self.stats.evicted_entities += evicted.len() as u64;
        tracing::info!(
            evicted = evicted.len(),
            followed = self.windows.len(),
            idle_hours = idle / crate::model::time::HOUR_MS,
            "stopped following entities without a call for {} h (limits.evict_idle_after_secs)",
            idle / crate::model::time::HOUR_MS
        );
    }

    /// A sum over the detectors of one of their "not followed" counters.
    fn untracked(&self, count: impl Fn(&dyn Detector) -> u64) -> u64 {
        self.detectors.iter().map(|d| count(d.as_ref())).sum()
    }

    fn close_window(&mut self, start: Millis, sink: &mut dyn ResultSink) -> anyhow::Result<()> {
        self.close_window_inner(start, true, sink)
    }

    fn close_window_inner(&mut self, start: Millis, complete: bool, sink: &mut dyn ResultSink) -> anyhow::Result<()> {
        let end = start + self.cfg.window;
        self.stats_buf.clear();
        self.windows.close(start, end, &mut self.stats_buf);
        if self.cfg.evict_idle_after > 0 && start.rem_euclid(EVICTION_EVERY) == 0 {
            self.evict_idle(start);
        }
        self.registry.close_window();
        self.spans.rotate(start - self.cfg.lateness - 2 * self.cfg.window);
        self.anomalies.clear();
        let ctx = WindowContext {
            start,
            end,
            stats: &self.stats_buf,
            names: &self.names,
            complete,
        };
        for d in &mut self.detectors {
            let before = self.anomalies.len();
            d.close_window(&ctx, &mut self.anomalies);
            let n = (self.anomalies.len() - before) as u64;
            if n > 0 {
                *self.stats.anomalies_by_detector.entry(d.name().to_owned()).or_default() += n;
            }
        }
        self.stats.windows += 1;
        self.stats.anomalies += self.anomalies.len() as u64;
        let mut digest = std::mem::take(&mut self.pending);
        (digest.start, digest.end) = (start, end);
        digest.anomalies = std::mem::take(&mut self.anomalies);
        digest.note_weights();
        // Calls matter to open alerts only: a partition cannot know, so it always hands them on.
        if !self.correlate_here || self.alerts.has_open_alerts() {
            digest.calls = (self.stats_buf.iter())
                .map(|w| (entity_label(&self.names, &w.key), w.count))
                .collect();
        }
        sink.write_metrics(&service_metrics(&self.stats_buf, &self.names))?;
        let changed = if self.correlate_here {
            // The alert manager sees the window first, so that every anomaly it holds back is
            // written with the rule that held it.
            let changed = correlate(&mut self.alerts, &mut digest);
            self.stats.held_by_rule.clone_from(self.alerts.held());
            self.stats.alert_bounds.clone_from(self.alerts.bounds());
            self.stats.feedback.clone_from(&self.alerts.feedback().counts);
            sink.write_anomalies(&digest.anomalies)?;
            changed
        } else {
            sink.write_digest(&digest)?;
            Vec::new()
        };
        self.anomalies = std::mem::take(&mut digest.anomalies);
        let mut journeys = Vec::new();
        for d in &mut self.detectors {
            d.take_journeys(&mut journeys);
        }
        if let Some(t) = self.judged_from {
            journeys.retain(|j| j.timestamp >= t);
        }
        if !journeys.is_empty() {
            sink.write_journeys(&journeys)?;
        }
        if self.correlate_here {
            self.stats.alerts_raised = self.alerts.raised();
            self.stats.alerts_by_priority.clone_from(self.alerts.raised_by_priority());
            sink.write_alerts(&changed)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::simulate::{simulate_events, SimConfig};
    use crate::sink::MemorySink;

    fn outputs(sink: &MemorySink) -> (Vec<String>, Vec<(String, String)>) {
        let mut a: Vec<String> = sink.anomalies.iter().map(|a| a.id.clone()).collect();
        a.sort();
        let alerts = sink
            .alerts()
            .into_iter()
            .map(|a| (a.id.clone(), serde_json::to_string(&a).unwrap()))
            .collect();
        (a, alerts)
    }

    #[test]
    fn a_restored_pipeline_continues_exactly_as_the_original() {
        let sim = SimConfig {
            seed: 7,
            duration: 4 * crate::model::time::HOUR_MS,
            rate: 8.0,
            ..Default::default()
        };
        let (events, _) = simulate_events(sim).unwrap();
        let cut = events.len() / 2;

        let mut whole = Pipeline::new(PipelineConfig::default()).unwrap();
        let mut whole_sink = MemorySink::default();
        for e in events.iter().cloned() {
            whole.push(e, &mut whole_sink).unwrap();
        }
        whole.finish(&mut whole_sink).unwrap();

        let mut first = Pipeline::new(PipelineConfig::default()).unwrap();
        let mut sink = MemorySink::default();
        for e in events[..cut].iter().cloned() {
            first.push(e, &mut sink).unwrap();
        }
        let saved = first.save_state().unwrap();
        drop(first);
        let mut second = Pipeline::restore(PipelineConfig::default(), &saved).unwrap();
        for e in events[cut..].iter().cloned() {
            second.push(e, &mut sink).unwrap();
        }
        second.finish(&mut sink).unwrap();

        assert!(!whole_sink.anomalies.is_empty() && !whole_sink.alerts().is_empty());
        assert_eq!(outputs(&whole_sink), outputs(&sink));
    }

    #[test]
    fn a_state_from_another_configuration_is_refused() {
        let mut p = Pipeline::new(PipelineConfig::default()).unwrap();
        let saved = p.save_state().unwrap();
        let other = PipelineConfig {
            seed: 43,
            ..Default::default()
        };
        let err = Pipeline::restore(other, &saved).err().expect("another seed refuses the state");
        assert!(
            matches!(&err, StateError::ConfigChanged { changed } if changed == "detectors.model_seed"),
            "{err}"
        );
        // Alert settings are not part of the state: changing them keeps what was learned.
        let mut alerts = PipelineConfig::default();
        alerts.alerts.raise_single += 5.0;
        assert!(Pipeline::restore(alerts, &saved).is_ok());
        assert!(matches!(
            Pipeline::restore(PipelineConfig::default(), b"junk"),
            Err(StateError::Corrupt(_))
        ));
    }

    /// Calls of one service every `every` ms in `[from, to)` taking about `ms`, failing half
    /// the time in `burst`.
    fn calls(service: &str, (every, ms): (Millis, u64), (from, to): (Millis, Millis), burst: (Millis, Millis)) -> Vec<Event> {
        (from / every..to / every)
            .map(|i| {
                let t = i * every;
                let fail = (burst.0..burst.1).contains(&t) && i % 2 == 0;
                Event {
                    timestamp: t,
                    service: service.into(),
                    provider: "aws".into(),
                    method: "GET".into(),
                    path: "/x".into(),
                    status: if fail { 503 } else { 200 },
                    duration_ns: Some((ms + (i.wrapping_mul(7919) % 13) as u64) * 1_000_000),
                    ..Default::default()
                }
            })
            .collect()
    }

    #[test]
    fn an_entity_evicted_when_idle_leaves_nothing_to_the_one_that_reuses_its_id() {
        use crate::model::time::HOUR_MS;
        let cfg = PipelineConfig {
            detectors: vec![DetectorKind::Baseline, DetectorKind::Sequential, DetectorKind::Forecast],
            evict_idle_after: HOUR_MS,
            ..Default::default()
        };
        let none = (0, 0);
        // `a` calls for 3 h then stops; `b` keeps the clock going; `c` appears at 8 h, after
        // `a` was evicted (2 h at least, the floor of 120 windows), and has a burst at 10 h.
        // `a` is five times busier and far faster than `c`: any of its learned state left to `c`
        // would show as slow calls there.
        let c = calls(
            "c",
            (10_000, 100),
            (8 * HOUR_MS, 12 * HOUR_MS),
            (10 * HOUR_MS, 10 * HOUR_MS + 600_000),
        );
        let mut all = calls("a", (2_000, 2), (0, 3 * HOUR_MS), none);
        all.extend(calls("b", (10_000, 20), (0, 12 * HOUR_MS), none));
        all.extend(c.iter().cloned());
        all.sort_by_key(|e| e.timestamp);
        let run = |events: &[Event]| {
            let mut p = Pipeline::new(cfg.clone()).unwrap();
            let mut sink = MemorySink::default();
            for e in events {
                p.push(e.clone(), &mut sink).unwrap();
            }
            p.finish(&mut sink).unwrap();
            (p, sink)
        };
        let (p, sink) = run(&all);
        assert_eq!(p.stats.evicted_entities, 2, "a's service and route");
        let c_ids: Vec<u32> = p
            .windows
            .index
            .iter()
            .filter(|(k, _)| p.names.name(k.owner().0) == "c")
            .map(|(_, &id)| id)
            .collect();
        assert!(c_ids.iter().all(|&id| id < 2), "c took a's freed ids: {c_ids:?}");
        // What was found on `c` is exactly what a run on `c` alone finds: nothing of `a` leaked.
        let on_c = |sink: &MemorySink| {
            let mut v: Vec<String> = sink
                .anomalies
                .iter()
                .filter(|a| a.service == "c")
                .map(|a| {
                    format!(
                        "{} {} {:?} {:?} {:?} {}",
                        a.window_start, a.detector, a.route, a.metric, a.kind, a.score
                    )
                })
                .collect();
            v.sort();
            v
        };
        let (_, alone) = run(&c);
        assert!(!on_c(&alone).is_empty(), "the burst on c is found");
        assert_eq!(on_c(&sink), on_c(&alone));
    }

    /// A plain successful call to service `a` at `t`.
    fn call_at(t: Millis) -> Event {
        Event {
            timestamp: t,
            service: "a".into(),
            provider: "aws".into(),
            method: "GET".into(),
            path: "/x".into(),
            status: 200,
            duration_ns: Some(1_000_000),
            ..Default::default()
        }
    }

    #[test]
    fn advancing_closes_windows_without_waiting_for_the_next_event() {
        let mut p = Pipeline::new(PipelineConfig::default()).unwrap();
        let mut sink = MemorySink::default();
        p.push(call_at(30_000), &mut sink).unwrap();
        assert_eq!(p.stats.windows, 0);
        p.advance_to(3 * MINUTE_MS, &mut sink).unwrap();
        assert_eq!(p.stats.events, 1);
        assert_eq!(p.stats.windows, 3);
        assert_eq!(p.window_start(), Some(3 * MINUTE_MS));
    }

    #[test]
    fn after_a_warm_start_a_quiet_stretch_is_jumped_as_before() {
        let mut sink = MemorySink::default();
        let mut primed = Pipeline::new(PipelineConfig::default()).unwrap();
        for i in 0..100 {
            primed.push(call_at(i * 6_000), &mut sink).unwrap();
        }
        primed.advance_to(10 * MINUTE_MS, &mut sink).unwrap();
        primed.forget_history(10 * MINUTE_MS);
        assert_eq!((primed.stats.events, primed.stats.windows), (0, 0), "counters begin again");
        // A year without data: the few windows that tell the silence, then the clock jumps.
        primed.advance_to(365 * 24 * 60 * MINUTE_MS, &mut sink).unwrap();
        assert!(
            primed.stats.windows <= QUIET_WINDOWS as u64 + 1,
            "{} windows closed one by one",
            primed.stats.windows
        );
    }
}
