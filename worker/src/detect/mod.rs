//! Detectors. Each one sits behind the small [`Detector`] trait: it observes calls as they pass
//! (in time order) and, when a window closes, reports what it found as [`Anomaly`] documents.
//!
//! Adding a detector: implement [`Detector`] in a new module, add a variant to
//! [`DetectorKind`], and build it in [`build_detectors`]. Nothing else changes: the pipeline
//! feeds it, and the alert manager groups its findings with everyone else's.

pub mod autoencoder;
pub mod baseline;
pub mod context_memory;
pub mod export;
pub mod forecast;
pub mod iforest;
pub mod journey;
pub mod lstm;
pub mod pattern;
pub mod request;
pub mod sequence;
pub mod sequential;
pub mod static_rule;
pub mod stats;
pub mod window_forest;

use crate::model::anomaly::{Anomaly, AnomalyKind, Contributor, Severity, Weight};
use crate::model::time::Millis;
use crate::model::{EntityKey, Event, Interner, Sym, WindowStat};

/// One call, with what the pipeline derived for it.
pub struct CallContext<'a> {
    pub event: &'a Event,
    pub service: Sym,
    pub provider: Sym,
    pub route: Sym,
    pub route_entity: u32,
    /// The caller (service, provider) and the hop entity, when the parent span was seen.
    pub caller: Option<(Sym, Sym)>,
    pub hop_entity: Option<u32>,
    /// Hashes of ids, so detectors key maps by integers.
    pub user: Option<u64>,
    pub trace: Option<u64>,
    pub span: Option<u64>,
    pub parent: Option<u64>,
    /// How long the caller waited for this call, from the caller's own record of it (an exit
    /// span), when there is one: the hop as the caller saw it.
    pub caller_waited_ms: Option<f64>,
    /// The caller was scored by another partition of the job (told by
    /// [`crate::pipeline::Pipeline::know_caller`]), not by this pipeline.
    pub caller_elsewhere: bool,
    pub names: &'a Interner,
}

/// A closed window: the statistics of every active entity.
pub struct WindowContext<'a> {
    pub start: Millis,
    pub end: Millis,
    pub stats: &'a [WindowStat],
    pub names: &'a Interner,
    /// False for a window cut short by the end of the data.
    pub complete: bool,
}

/// A detector's learned state, saved with checkpoints so a restarted worker resumes where it
/// stopped. Every detector whose fields are serde types gets it for free.
pub trait Persist {
    fn save_state(&mut self) -> anyhow::Result<Vec<u8>>;
    fn load_state(&mut self, bytes: &[u8]) -> anyhow::Result<()>;
}

impl<T: serde::Serialize + serde::de::DeserializeOwned> Persist for T {
    fn save_state(&mut self) -> anyhow::Result<Vec<u8>> {
        Ok(rmp_serde::to_vec_named(self)?)
    }
    fn load_state(&mut self, bytes: &[u8]) -> anyhow::Result<()> {
        *self = rmp_serde::from_slice(bytes)?;
        Ok(())
    }
}

/// Entities the pipeline stopped following (idle longer than `limits.evict_idle_after_secs`).
/// Their ids go to new entities afterwards, so a detector must drop everything it holds under
/// an evicted id (and may drop what it holds under an evicted key).
pub struct Evicted {
    ids: rustc_hash::FxHashSet<u32>,
    keys: rustc_hash::FxHashSet<EntityKey>,
}

impl Evicted {
    pub fn new(entities: &[(u32, EntityKey)]) -> Self {
        Evicted {
            ids: entities.iter().map(|e| e.0).collect(),
            keys: entities.iter().map(|e| e.1).collect(),
        }
    }

    /// Whether the entity with this id was evicted.
    pub fn id(&self, id: u32) -> bool {
        self.ids.contains(&id)
    }

    /// Whether the route (service, provider, route) was evicted.
    pub fn route(&self, (service, provider, route): (Sym, Sym, Sym)) -> bool {
        self.keys.contains(&EntityKey::Route { service, provider, route })
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}

/// A detector: watches calls and windows, reports anomalies when a window closes.
pub trait Detector: Send + Persist {
    fn name(&self) -> &'static str;
    /// Called for every call, in time order.
    fn observe(&mut self, _call: &CallContext<'_>) {}
    /// Called when a window closes; findings go to `out`.
    fn close_window(&mut self, window: &WindowContext<'_>, out: &mut Vec<Anomaly>);
    /// Drops what is held for evicted entities (required: a detector that kept state under a
    /// freed id would hand it to the next new entity).
    fn forget(&mut self, evicted: &Evicted);
    /// Journeys completed by the last [`Detector::close_window`] that are worth a document.
    fn take_journeys(&mut self, _out: &mut Vec<crate::model::JourneyRecord>) {}
    /// Calls not followed as sessions because open sessions were at `limits.max_sessions`.
    fn untracked_sessions(&self) -> u64 {
        0
    }
    /// Calls not followed as journeys because open journeys were at `limits.max_open_journeys`.
    fn untracked_journeys(&self) -> u64 {
        0
    }
}

/// The detectors a run can use (`--detectors`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DetectorKind {
    Baseline,
    /// Sequential tests (CUSUM) per service: traffic drops and error rates that build up over
    /// windows, for quiet services where one window says too little.
    Sequential,
    IsolationForest,
    Sequence,
    Journey,
    Forecast,
    /// Pattern memory of each service's call volume and p95 latency (the NAB detector).
    Pattern,
    /// The rule shops use today, for comparison: p95 > 3x warm-up p95 or 5xx rate > 5%.
    StaticRule,
    /// The ONNX AutoEncoder over request features (needs the ONNX Runtime and a model).
    Autoencoder,
    /// The ONNX LSTM over session call orders (needs the ONNX Runtime and a model).
    Lstm,
}

impl DetectorKind {
    pub const DEFAULT: [DetectorKind; 6] = [
        DetectorKind::Baseline,
        DetectorKind::Sequential,
        DetectorKind::IsolationForest,
        DetectorKind::Sequence,
        DetectorKind::Journey,
        DetectorKind::Forecast,
    ];
    /// The learned models, on by default where the ONNX Runtime and the models are found.
    pub const MODELS: [DetectorKind; 2] = [DetectorKind::Autoencoder, DetectorKind::Lstm];

    pub fn needs_models(self) -> bool {
        Self::MODELS.contains(&self)
    }

    /// The model-store name of a learned detector's model (empty for the others).
    pub fn model_name(self) -> &'static str {
        match self {
            DetectorKind::Lstm => lstm::LstmDetector::MODEL,
            DetectorKind::Autoencoder => autoencoder::AutoencoderDetector::MODEL,
            _ => "",
        }
    }
}

/// Builds the chosen detectors. The learned ones need `models` (see [`crate::ml::Models`]).
pub fn build_detectors(
    kinds: &[DetectorKind],
    seed: u64,
    models: Option<&crate::ml::Models>,
    limits: &crate::pipeline::EntityLimits,
) -> Result<Vec<Box<dyn Detector>>, crate::ml::MlError> {
    let mut v: Vec<Box<dyn Detector>> = Vec::new();
    let need = |k: DetectorKind| {
        models.ok_or_else(|| crate::ml::MlError::ModelMissing {
            dir: Default::default(),
            name: format!("{k:?}").to_lowercase(),
            message: "no model store configured".into(),
        })
    };
    for k in kinds {
        match k {
            DetectorKind::Baseline => v.push(Box::new(baseline::BaselineDetector::default())),
            DetectorKind::Sequential => v.push(Box::new(sequential::SequentialDetector::default())),
            DetectorKind::IsolationForest => {
                v.push(Box::new(request::RequestForestDetector::new(seed)));
                v.push(Box::new(window_forest::WindowForestDetector::new(seed ^ 0x5eed)));
            }
            DetectorKind::Sequence => {
                let mut d = sequence::SequenceDetector::new(sequence::MarkovModel::default());
                d.max_sessions = limits.max_sessions;
                v.push(Box::new(d));
            }
            DetectorKind::Journey => {
                let mut d = journey::JourneyDetector::default();
                d.max_open = limits.max_open_journeys;
                v.push(Box::new(d));
            }
            DetectorKind::Forecast => v.push(Box::new(forecast::ForecastDetector::default())),
            DetectorKind::Pattern => v.push(Box::new(pattern::PatternDetector::default())),
            DetectorKind::StaticRule => v.push(Box::new(static_rule::StaticRuleDetector::default())),
            DetectorKind::Autoencoder => {
                let m = need(*k)?;
                v.push(Box::new(autoencoder::AutoencoderDetector::load(m.env, &m.store)?));
            }
            DetectorKind::Lstm => {
                let m = need(*k)?;
                v.push(Box::new(lstm::LstmDetector::load(m.env, &m.store)?));
            }
        }
    }
    Ok(v)
}

/// `service/provider`.
pub fn node_label(names: &Interner, (s, p): (Sym, Sym)) -> String {
    format!("{}/{}", names.name(s), names.name(p))
}

/// A human label for an entity: `payments/aws`, `payments/aws /pay`, `gateway/onprem → payments/aws`.
pub fn entity_label(names: &Interner, key: &EntityKey) -> String {
    match *key {
        EntityKey::Service { service, provider } => node_label(names, (service, provider)),
        EntityKey::Route { service, provider, route } => {
            format!("{} {}", node_label(names, (service, provider)), names.name(route))
        }
        EntityKey::Hop { from, to } => format!("{} → {}", node_label(names, from), node_label(names, to)),
    }
}

/// What a detector knows about a finding; [`Finding::into_anomaly`] fills in ids and names.
pub struct Finding {
    pub kind: AnomalyKind,
    pub detector: &'static str,
    pub score: f64,
    pub window_start: Millis,
    pub window_end: Millis,
    pub entity: EntityKey,
    pub metric: &'static str,
    pub actual: Option<f64>,
    pub expected: Option<f64>,
    pub reason: String,
    pub contributors: Vec<Contributor>,
    pub impact_calls: u64,
    pub impact_users: u64,
    pub trace_ids: Vec<String>,
    pub user_ids: Vec<String>,
    pub eta: Option<Millis>,
    /// For findings that sum past windows: the start of the first window of their run.
    pub evidence_start: Option<Millis>,
    pub weight: Weight,
}

impl Finding {
    pub fn new(kind: AnomalyKind, detector: &'static str, entity: EntityKey, window: (Millis, Millis)) -> Self {
        Finding {
            kind,
            detector,
            score: 0.0,
            window_start: window.0,
            window_end: window.1,
            entity,
            metric: "",
            actual: None,
            expected: None,
            reason: String::new(),
            contributors: Vec::new(),
            impact_calls: 0,
            impact_users: 0,
            trace_ids: Vec::new(),
            user_ids: Vec::new(),
            eta: None,
            evidence_start: None,
            weight: Weight::Raises,
        }
    }

    /// The finding's own metric as its only contributor.
    pub fn sole_contributor(&mut self, actual: f64, expected: f64) {
        self.contributors = vec![Contributor {
            name: self.metric.to_owned(),
            share: 1.0,
            actual: Some(round3(actual)),
            expected: Some(round3(expected)),
        }];
    }

    /// Marks a finding that weighs a run of `windows` windows ending with this one.
    pub fn run_of(&mut self, windows: u32) {
        let width = self.window_end - self.window_start;
        self.evidence_start = Some(self.window_start - Millis::from(windows.saturating_sub(1)) * width);
    }

    /// Calls, users and example traces of the window the finding is about.
    pub fn impact_of(&mut self, st: &WindowStat) {
        self.impact_calls = st.count;
        self.impact_users = st.users;
        self.trace_ids = st.example_traces.clone();
    }

    pub fn into_anomaly(self, names: &Interner) -> Anomaly {
        let (service, provider) = self.entity.owner();
        let route = self.entity.route().map(|r| names.name(r).to_owned());
        let hop_from = match self.entity {
            EntityKey::Hop { from, .. } => Some(node_label(names, from)),
            _ => None,
        };
        let score = (self.score.clamp(0.0, 100.0) * 10.0).round() / 10.0;
        let id = Anomaly::make_id(&[
            self.detector,
            self.kind.as_str(),
            &entity_label(names, &self.entity),
            self.metric,
            &self.window_start.to_string(),
        ]);
        Anomaly {
            timestamp: self.window_start,
            id,
            kind: self.kind,
            detector: self.detector.to_owned(),
            score,
            severity: Severity::from_score(score),
            window_start: self.window_start,
            window_end: self.window_end,
            service: names.name(service).to_owned(),
            provider: names.name(provider).to_owned(),
            route,
            metric: (!self.metric.is_empty()).then(|| self.metric.to_owned()),
            held_by: None,
            alert_id: None,
            grouped_by: None,
            weight: self.weight,
            actual: self.actual.map(round3),
            expected: self.expected.map(round3),
            reason: self.reason,
            contributors: self.contributors,
            hop_from,
            impact_calls: self.impact_calls,
            impact_users: self.impact_users,
            eta: self.eta,
            evidence_start: self.evidence_start,
            trace_ids: self.trace_ids,
            user_ids: self.user_ids,
        }
    }
}

/// Rounds to 3 significant decimals for readable documents.
pub fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// `820 ms`, `1.2 s`.
pub fn fmt_ms(ms: f64) -> String {
    if ms >= 1000.0 {
        format!("{:.1} s", ms / 1000.0)
    } else if ms >= 10.0 {
        format!("{ms:.0} ms")
    } else {
        format!("{ms:.1} ms")
    }
}

/// `4.2%`.
pub fn fmt_pct(r: f64) -> String {
    if r < 0.01 {
        format!("{:.2}%", r * 100.0)
    } else {
        format!("{:.1}%", r * 100.0)
    }
}

/// `12 KB`.
pub fn fmt_bytes(b: f64) -> String {
    if b >= 1_048_576.0 {
        format!("{:.1} MB", b / 1_048_576.0)
    } else if b >= 1024.0 {
        format!("{:.1} KB", b / 1024.0)
    } else {
        format!("{b:.0} B")
    }
}

#[cfg(test)]
pub(crate) mod testing {
    //! Helpers for the detectors' unit tests.
    use super::*;

    /// A one-minute window of the `payments/aws` service starting at `t`.
    pub fn service_window(names: &mut Interner, t: Millis, count: u64, errors_5xx: u64, p95: f64) -> WindowStat {
        WindowStat {
            entity: 0,
            key: EntityKey::Service {
                service: names.intern("payments"),
                provider: names.intern("aws"),
            },
            start: t,
            end: t + 60_000,
            count,
            errors_4xx: 0,
            errors_5xx,
            p50_ms: p95 / 2.0,
            p95_ms: p95,
            p99_ms: p95 * 1.5,
            tail_ms: p95,
            // Most calls at half the p95, the slowest 6% at it.
            latencies: crate::model::window::CallLatencies::of(&[
                (p95 / 2.0, count - (count * 6).div_ceil(100).min(count)),
                (p95, (count * 6).div_ceil(100).min(count)),
            ]),
            mean_request_bytes: 500.0,
            mean_response_bytes: 2000.0,
            users: count / 2,
            example_traces: vec!["t1".into()],
        }
    }

    /// Closes one complete window holding `st` alone; what `d` found in it.
    pub fn close_one(d: &mut dyn Detector, names: &Interner, st: WindowStat) -> Vec<Anomaly> {
        let mut out = Vec::new();
        d.close_window(
            &WindowContext {
                start: st.start,
                end: st.end,
                stats: &[st],
                names,
                complete: true,
            },
            &mut out,
        );
        out
    }
}
