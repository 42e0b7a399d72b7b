//! The window loop, in one place, whatever the source: events are reordered within the allowed
//! lateness, enriched (route template, entities, caller hop), fed to the window aggregator and to
//! every detector; when a window closes, the detectors report, the alert manager groups, and the
//! sink receives anomalies and alert changes.

pub mod reorder;
pub mod windows;

use rustc_hash::FxHashMap;

use crate::alert::{AlertConfig, AlertManager};
use crate::detect::request::hash_str;
use crate::detect::routes::{RouteLearner, RouteLimits};
use crate::detect::{build_detectors, node_label, CallContext, Detector, DetectorKind, WindowContext};
use crate::model::time::{Millis, MINUTE_MS};
use crate::model::{EntityKey, Event, Interner, Sym, WindowStat};
use crate::onboard::ServiceRegistry;
use crate::sink::ResultSink;
use crate::source::EventSource;
use reorder::ReorderBuffer;
use windows::WindowAggregator;

/// How long after a service first appears its callers count as changed.
const NEW_SERVICE_CHANGE: Millis = 10 * MINUTE_MS;

/// How a run works (the checked form of the configuration).
#[derive(Clone, Debug)]
pub struct PipelineConfig {
    pub window: Millis,
    pub lateness: Millis,
    pub detectors: Vec<DetectorKind>,
    pub seed: u64,
    pub alerts: AlertConfig,
    pub routes: RouteLimits,
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
        }
    }
}

/// Counters of a run, readable by tests and printed in summaries.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct RunStats {
    pub events: u64,
    pub late_events: u64,
    pub windows: u64,
    pub entities: usize,
    pub services: usize,
    pub anomalies: u64,
    pub anomalies_by_detector: std::collections::BTreeMap<String, u64>,
    pub alerts_raised: u64,
    pub first_event: Option<Millis>,
    pub last_event: Option<Millis>,
}

/// Span ids of recent calls, to find a call's caller. Two generations, rotated each window, so
/// memory covers about two windows of spans.
#[derive(Default)]
struct SpanIndex {
    current: FxHashMap<u64, (Sym, Sym)>,
    previous: FxHashMap<u64, (Sym, Sym)>,
}

impl SpanIndex {
    fn get(&self, span: u64) -> Option<(Sym, Sym)> {
        self.current.get(&span).or_else(|| self.previous.get(&span)).copied()
    }
    fn rotate(&mut self) {
        self.previous = std::mem::take(&mut self.current);
    }
}

pub struct Pipeline {
    cfg: PipelineConfig,
    pub names: Interner,
    routes: RouteLearner,
    pub registry: ServiceRegistry,
    reorder: ReorderBuffer,
    windows: WindowAggregator,
    spans: SpanIndex,
    detectors: Vec<Box<dyn Detector>>,
    pub alerts: AlertManager,
    window_start: Option<Millis>,
    stats_buf: Vec<WindowStat>,
    anomalies: Vec<crate::model::Anomaly>,
    /// Events released by the reorder buffer, reused across pushes.
    ready: Vec<Event>,
    pub stats: RunStats,
}

impl Pipeline {
    pub fn new(cfg: PipelineConfig) -> Self {
        let detectors = build_detectors(&cfg.detectors, cfg.seed);
        Pipeline {
            names: Interner::default(),
            routes: RouteLearner::new(cfg.routes),
            registry: ServiceRegistry::default(),
            reorder: ReorderBuffer::new(cfg.lateness),
            windows: WindowAggregator::default(),
            spans: SpanIndex::default(),
            alerts: AlertManager::new(cfg.alerts.clone()),
            detectors,
            window_start: None,
            stats_buf: Vec::new(),
            anomalies: Vec::new(),
            ready: Vec::new(),
            stats: RunStats::default(),
            cfg,
        }
    }

    /// Feeds one event (any order within the allowed lateness).
    pub fn push(&mut self, ev: Event, sink: &mut dyn ResultSink) -> anyhow::Result<()> {
        let mut ready = std::mem::take(&mut self.ready);
        self.reorder.push(ev, |e| ready.push(e));
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
            // Let quiet periods elapse so that alerts whose problem ended can resolve.
            let quiet = self.cfg.alerts.quiet_to_resolve;
            let changed = self.alerts.tick(start + self.cfg.window + quiet);
            sink.write_alerts(&changed)?;
        }
        self.stats.late_events = self.reorder.late;
        self.stats.entities = self.windows.len();
        self.stats.services = self.registry.len();
        sink.finish(&self.registry.records(&self.names))?;
        Ok(self.stats.clone())
    }

    fn process(&mut self, ev: Event, sink: &mut dyn ResultSink) -> anyhow::Result<()> {
        let t = ev.timestamp;
        let width = self.cfg.window;
        let start = *self.window_start.get_or_insert(t.div_euclid(width) * width);
        if t >= start + width {
            self.close_window(start, sink)?;
            let mut next = start + width;
            // Emit empty windows for short gaps; jump over long ones.
            while t >= next + width {
                if t - next > 60 * width {
                    next = t.div_euclid(width) * width;
                    break;
                }
                self.close_window(next, sink)?;
                next += width;
            }
            self.window_start = Some(next);
        }
        self.stats.events += 1;
        self.stats.first_event.get_or_insert(t);
        self.stats.last_event = Some(self.stats.last_event.map_or(t, |l| l.max(t)));

        let service = self.names.intern(&ev.service);
        let provider = self.names.intern(&ev.provider);
        let route = self.routes.template(service, &ev.path, &mut self.names);
        self.registry.record(service, provider, route, t, &self.names);
        let user = ev.user_id.as_deref().map(hash_str);
        let trace = ev.trace_id.as_deref().map(hash_str);
        let span = ev.span_id.as_deref().map(hash_str);
        let parent = ev.parent_id.as_deref().map(hash_str);
        if let Some(s) = span {
            self.spans.current.insert(s, (service, provider));
        }
        let caller = parent.and_then(|p| self.spans.get(p));

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
                self.alerts.add_edge(caller.clone(), node_label(&self.names, (service, provider)));
                // A caller that starts calling a brand-new service has changed (a deployment):
                // its shift in latency is expected, not an incident.
                if self
                    .registry
                    .first_seen(service, provider)
                    .is_some_and(|f| t - f <= NEW_SERVICE_CHANGE)
                {
                    self.alerts.note_change(caller, t);
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
            names: &self.names,
        };
        for d in &mut self.detectors {
            d.observe(&ctx);
        }
        Ok(())
    }

    fn close_window(&mut self, start: Millis, sink: &mut dyn ResultSink) -> anyhow::Result<()> {
        self.close_window_inner(start, true, sink)
    }

    fn close_window_inner(&mut self, start: Millis, complete: bool, sink: &mut dyn ResultSink) -> anyhow::Result<()> {
        let end = start + self.cfg.window;
        self.stats_buf.clear();
        self.windows.close(start, end, &mut self.stats_buf);
        self.registry.close_window();
        self.spans.rotate();
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
        sink.write_anomalies(&self.anomalies)?;
        let changed = self.alerts.ingest(&self.anomalies, end);
        self.stats.alerts_raised = self.alerts.raised();
        sink.write_alerts(&changed)?;
        Ok(())
    }
}
