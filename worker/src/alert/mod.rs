//! Alerts: related anomalies become one incident, an incident with enough evidence becomes an
//! alert, and the alert names the most likely origin, a priority, and resolves when things are
//! quiet again.
//!
//! Related means close in time and linked the way problems travel, not merely connected: the same
//! service, the same journeys (shared trace ids), or propagation in the right direction. Latency
//! and errors travel from callee to caller, so a caller's anomaly joins an incident its callee is
//! in (an effect), and a callee's anomaly joins one whose start it shares (a cause found late);
//! lost traffic travels from caller to callee, the other way round, and two services fed by the
//! same caller that lose traffic together share one loss upstream. In a dense mesh where
//! everything calls everything, adjacency alone would let one alert absorb a day.
//!
//! A finding that weighs a run of windows (a sequential test) says where its run began: if
//! before the last evidence of an alert that has ended, on one of its services, it is still
//! counting that alert's evidence and reopens it (an echo); if after, it is new.
//!
//! Suspects are ranked by blame ([`render::suspects`]): a node's own evidence, discounted when the
//! nodes its deviation could come from deviate too. The first suspect is the origin.
//!
//! An alert resolves when its evidence stops: as soon as every node of it has been judged normal
//! (enough calls, no anomaly) for long enough that the problem, showing as often as it did,
//! would have shown again ([`NodeEvidence::recovered`]; *recovered*: what comes back later is a
//! new problem and gets a new alert), else after `quiet_to_resolve` without an anomaly (a quiet
//! that proves less on few calls: what comes back soon reopens the alert).
//!
//! Incidents are bounded: an alert open longer than `max_alert_age`, or grown to `max_nodes`
//! services, stops taking in new services or is closed (counted in [`AlertManager::bounds`]), so
//! that a new problem gets an alert of its own.

pub mod correlate;
pub mod recurrence;
pub mod render;

use std::collections::{BTreeMap, BTreeSet};

use rustc_hash::{FxHashMap, FxHashSet};

use crate::feedback::{FeedbackBook, FeedbackRecord};
use crate::model::anomaly::{Alert, Anomaly, AnomalyKind, Severity, Weight};
use crate::model::time::{Millis, MINUTE_MS};

/// Grouping and raising rules.
#[derive(serde::Serialize, serde::Deserialize, Clone, Debug)]
pub struct AlertConfig {
    /// Anomalies within this time of an incident's last activity may join it.
    pub join_gap: Millis,
    /// A single anomaly at least this score raises at once.
    pub raise_single: f64,
    /// Or this much summed score over at least two windows.
    pub raise_total: f64,
    /// A pending incident that gathers no more evidence for this long is dropped.
    pub pending_timeout: Millis,
    /// An alert with no new anomaly for this long is resolved.
    pub quiet_to_resolve: Millis,
    /// An open alert that is still active is notified again after this long.
    pub realert_interval: Millis,
    /// A resolved alert whose origin acts up again within this time is reopened, not duplicated.
    pub reopen_within: Millis,
    /// Group across services along the dependency graph (false: one alert per service).
    pub group_related_services: bool,
    /// An alert open this long is closed at the next quiet-enough window even if anomalies keep
    /// coming (counted); what still deviates then opens a new alert if it is strong enough alone.
    #[serde(default = "default_max_alert_age")]
    pub max_alert_age: Millis,
    /// An incident with this many services takes in no new one (counted).
    #[serde(default = "default_max_nodes")]
    pub max_nodes: usize,
    /// Hold back a finding that is one more short episode its entity keeps having by itself
    /// (see [`recurrence`]).
    #[serde(default = "default_hold_recurring")]
    pub hold_recurring: bool,
}

fn default_hold_recurring() -> bool {
    true
}

fn default_max_alert_age() -> Millis {
    120 * MINUTE_MS
}

fn default_max_nodes() -> usize {
    12
}

impl Default for AlertConfig {
    fn default() -> Self {
        AlertConfig {
            join_gap: 5 * MINUTE_MS,
            raise_single: 65.0,
            raise_total: 110.0,
            pending_timeout: 10 * MINUTE_MS,
            quiet_to_resolve: 6 * MINUTE_MS,
            realert_interval: 60 * MINUTE_MS,
            reopen_within: 15 * MINUTE_MS,
            group_related_services: true,
            max_alert_age: default_max_alert_age(),
            max_nodes: default_max_nodes(),
            hold_recurring: default_hold_recurring(),
        }
    }
}

/// Evidence gathered for one node (`service/provider`) of an incident.
#[derive(serde::Serialize, serde::Deserialize, Clone, Debug, Default)]
pub(crate) struct NodeEvidence {
    /// The first window start and the last window end with evidence on this node.
    #[serde(default)]
    pub first: Millis,
    #[serde(default)]
    pub last: Millis,
    pub score: f64,
    /// Evidence measured outside the node's own time (its callers' wait beyond it): no callee
    /// of it can explain that.
    #[serde(default)]
    pub outside: f64,
    /// Evidence of waits after its answers that may as well be its caller's own time (see
    /// [`crate::detect::journey::UNRESOLVED_WAIT_METRIC`]): it makes the node a suspect beside
    /// its caller, never the reason to blame it alone or to excuse the caller.
    #[serde(default)]
    pub unresolved: f64,
    /// The largest latency excess (ms above usual) of its latency and hop findings.
    #[serde(default)]
    pub latency_excess_ms: f64,
    pub by_kind: BTreeMap<AnomalyKind, f64>,
    pub routes: BTreeMap<String, f64>,
    /// Windows since its last evidence in which it had calls enough to be judged
    /// ([`RECOVERY_CALLS`]) and none deviated.
    #[serde(default)]
    pub normal_windows: u32,
    /// Windows with evidence on it, and judged windows without between them: how often the
    /// problem showed while it lasted.
    #[serde(default)]
    pub evidence_windows: u32,
    #[serde(default)]
    pub gaps: u32,
    /// What the evidence was about (the service, its routes, hops into it), as entity labels:
    /// a window is judged on their calls.
    #[serde(default)]
    pub scopes: BTreeSet<String>,
    /// Callers whose failures it was found silent under
    /// ([`crate::detect::sequential::SILENT_CALLEE_METRIC`]): it explains theirs.
    #[serde(default)]
    pub silent_under: BTreeSet<String>,
}

impl NodeEvidence {
    /// Whether `a` is evidence of a kind this node has not shown: another anomaly kind, or time
    /// lost outside it (a hop wait, a kind of its own) where it had none.
    fn is_new_kind(&self, a: &Anomaly) -> bool {
        !self.by_kind.contains_key(&a.kind) || (crate::detect::journey::is_hop_wait(a) && self.outside == 0.0)
    }

    /// Whether the node has been judged normal long enough that, were the problem still there
    /// and showing as often as it did (one window more counted as a gap, so that a problem seen
    /// once is not taken to show every time), it would have shown with probability at least
    /// 1 - [`RECOVERY_MISS`]: a problem found in every window is over after a few quiet ones, an
    /// intermittent one needs more (and usually resolves by quiet first).
    fn recovered(&self) -> bool {
        let shown = f64::from(self.evidence_windows) / f64::from(self.evidence_windows + self.gaps + 1);
        let needed = (RECOVERY_MISS.ln() / (1.0 - shown).ln()).ceil();
        f64::from(self.normal_windows) >= needed.max(f64::from(MIN_RECOVERED_WINDOWS))
    }
}

#[derive(serde::Serialize, serde::Deserialize, Clone, Debug)]
pub(crate) struct Incident {
    pub id: String,
    pub anomalies: Vec<Anomaly>,
    pub anomaly_count: usize,
    pub nodes: BTreeMap<String, NodeEvidence>,
    /// Example traces of its anomalies, with the end of the last window that named each.
    pub traces: FxHashMap<String, Millis>,
    pub windows: BTreeSet<Millis>,
    pub forecast_windows: BTreeSet<Millis>,
    pub start: Millis,
    pub last_activity: Millis,
    pub evidence: f64,
    /// Evidence from detectors that can raise an alert by accumulation (see
    /// [`is_corroborating_only`]).
    pub primary_evidence: f64,
    pub max_score: f64,
    pub max_severity: Severity,
    pub impact_calls: u64,
    pub impact_users: u64,
    pub raised_at: Option<Millis>,
    pub resolved_at: Option<Millis>,
    pub last_notified: Millis,
    pub notifications: u32,
    pub eta: Option<Millis>,
    pub only_forecast_when_raised: bool,
    /// A forecast was part of the evidence when the alert was raised.
    pub predicted: bool,
    /// Closed at its age bound: not reopened by what follows.
    #[serde(default)]
    pub bounded: bool,
    /// Resolved because every node was seen normal on enough calls (not merely quiet): not
    /// reopened by what follows.
    #[serde(default)]
    pub recovered: bool,
}

const KEEP_ANOMALIES: usize = 200;

/// The per-window isolation forest looks at the same window statistics as the baselines: its
/// weak findings add weight to an incident, but a pile of them alone is not raised (one very
/// isolated window still can be, through the single-anomaly rule).
fn is_corroborating_only(a: &Anomaly) -> bool {
    a.weight == Weight::Corroborates
}
/// Calls an effect may travel from its cause (see [`AlertManager::reaches`]).
const PROPAGATION_HOPS: usize = 3;
/// How long after a deliberate change its effects are expected.
const CHANGE_EXPLAINS: Millis = 30 * MINUTE_MS;
/// A window in which a node had this many calls and no anomaly was judged normal: the fewest
/// calls any window baseline judges (latency).
const RECOVERY_CALLS: u64 = crate::detect::baseline::MIN_LATENCY_CALLS;
/// The fewest windows every node of an alert must be judged normal in for it to resolve as
/// recovered ([`NodeEvidence::recovered`] asks more of an intermittent problem): findings lag
/// what they find (a sequential test crosses after two or three windows, a hop needs three
/// marked calls, a baseline that took some of the problem into its history skips a window or
/// two), so fewer quiet windows say little even about a problem that showed every window.
/// Chosen on the tuning seeds (2 and 3 split some simulated incidents in two).
const MIN_RECOVERED_WINDOWS: u32 = 4;
/// The chance, at most, that a problem still there would have stayed unseen that long.
const RECOVERY_MISS: f64 = 0.05;
/// How long a resolved alert is remembered for the findings still counting its evidence (see
/// [`AlertManager::reopenable`]); a run of windows that outlasts it raises an alert of its own.
const ECHO_MEMORY: Millis = 2 * 60 * MINUTE_MS;

impl Incident {
    fn new(a: &Anomaly) -> Self {
        Incident {
            id: Anomaly::make_id(&["alert", &a.id]),
            anomalies: Vec::new(),
            anomaly_count: 0,
            nodes: BTreeMap::new(),
            traces: FxHashMap::default(),
            windows: BTreeSet::new(),
            forecast_windows: BTreeSet::new(),
            start: a.window_start,
            last_activity: a.window_end,
            evidence: 0.0,
            primary_evidence: 0.0,
            max_score: 0.0,
            max_severity: Severity::Low,
            impact_calls: 0,
            impact_users: 0,
            raised_at: None,
            resolved_at: None,
            last_notified: 0,
            notifications: 0,
            eta: None,
            only_forecast_when_raised: false,
            predicted: false,
            bounded: false,
            recovered: false,
        }
    }

    fn add(&mut self, a: &Anomaly) {
        let node = a.node();
        let ev = self.nodes.entry(node).or_insert_with(|| NodeEvidence {
            first: a.window_start,
            ..NodeEvidence::default()
        });
        if a.window_end > ev.last {
            ev.evidence_windows += 1;
        }
        ev.last = ev.last.max(a.window_end);
        ev.gaps += std::mem::take(&mut ev.normal_windows);
        ev.scopes.insert(scope_of(a));
        ev.score += a.score;
        if crate::detect::journey::is_hop_wait(a) {
            ev.outside += a.score;
        }
        if crate::detect::journey::is_unresolved_wait(a) {
            ev.unresolved += a.score;
        }
        if let Some(caller) = a.hop_from.as_ref().filter(|_| is_silent_callee(a)) {
            ev.silent_under.insert(caller.clone());
        }
        if let Some(x) = latency_excess(a) {
            ev.latency_excess_ms = ev.latency_excess_ms.max(x);
        }
        *ev.by_kind.entry(a.kind).or_default() += a.score;
        if let Some(r) = &a.route {
            *ev.routes.entry(r.clone()).or_default() += a.score;
        }
        for t in a.trace_ids.iter().take(3) {
            self.traces.insert(t.clone(), a.window_end);
        }
        self.windows.insert(a.window_start);
        if a.kind == AnomalyKind::Forecast {
            self.forecast_windows.insert(a.window_end);
            self.eta = a.eta.or(self.eta);
        }
        self.start = self.start.min(a.window_start);
        self.last_activity = self.last_activity.max(a.window_end);
        self.evidence += a.score;
        if !is_corroborating_only(a) {
            self.primary_evidence += a.score;
        }
        self.max_score = self.max_score.max(a.score);
        self.max_severity = self.max_severity.max(a.severity);
        self.impact_calls += a.impact_calls;
        self.impact_users = self.impact_users.max(a.impact_users);
        self.anomaly_count += 1;
        if self.anomalies.len() < KEEP_ANOMALIES {
            self.anomalies.push(a.clone());
        }
    }

    fn has_forecast(&self) -> bool {
        !self.forecast_windows.is_empty()
    }

    /// Whether all its evidence is waits that may be a caller's own time (nothing to raise).
    fn only_unresolved(&self) -> bool {
        self.nodes.values().all(|n| n.unresolved >= n.score)
    }

    fn only_forecast(&self) -> bool {
        self.nodes.values().all(|n| n.by_kind.keys().all(|k| *k == AnomalyKind::Forecast))
    }
}

/// Groups anomalies into alerts.
#[derive(serde::Serialize, serde::Deserialize)]
pub struct AlertManager {
    cfg: AlertConfig,
    /// Caller → callees, `service/provider` labels.
    callees: FxHashMap<String, FxHashSet<String>>,
    callers: FxHashMap<String, FxHashSet<String>>,
    active: Vec<Incident>,
    resolved: Vec<Incident>,
    raised: u64,
    /// Alerts raised, by the priority they were raised with.
    #[serde(default)]
    raised_by_priority: std::collections::BTreeMap<String, u64>,
    /// Nodes that changed on purpose (started calling a new service), and when.
    changes: FxHashMap<String, Millis>,
    /// Anomalies at or above the raising score that a rule kept from becoming an alert, by rule.
    #[serde(default)]
    held: BTreeMap<String, u64>,
    /// Per anomaly of the window last ingested: the incident it went to and by which rule.
    #[serde(skip)]
    grouped: Vec<Option<(String, &'static str)>>,
    /// Times an incident reached a bound, by bound (see [`bound`]).
    #[serde(default)]
    bounds: BTreeMap<String, u64>,
    /// Acknowledgements, silences and what verdicts taught.
    #[serde(default)]
    feedback: FeedbackBook,
    /// Short episodes each entity's findings came and went in, and what they hold back.
    #[serde(default)]
    recurrences: recurrence::RecurrenceBook,
    /// Calls per entity label in the window being ingested ([`AlertManager::observe_calls`]).
    #[serde(skip)]
    window_calls: FxHashMap<String, u64>,
}

/// The explicit bounds of an incident.
pub mod bound {
    /// An alert open for `max_alert_age` was closed though anomalies kept coming.
    pub const AGE: &str = "age";
    /// An anomaly on a new service did not join an incident that had `max_nodes` services.
    pub const SIZE: &str = "size";
}

/// Milliseconds above usual, for findings about time (p95 latency, a hop's own time or wait).
fn latency_excess(a: &Anomaly) -> Option<f64> {
    let timed = matches!(
        a.metric.as_deref(),
        Some(
            "latency.p95"
                | "journey.slow_hop"
                | crate::detect::journey::HOP_WAIT_METRIC
                | crate::detect::journey::HOP_WAIT_SEQUENTIAL_METRIC
        )
    );
    match (timed, a.actual, a.expected) {
        (true, Some(x), Some(e)) => Some((x - e).max(0.0)),
        _ => None,
    }
}

/// Whether a finding is a callee's silence under its failing caller.
fn is_silent_callee(a: &Anomaly) -> bool {
    a.metric.as_deref() == Some(crate::detect::sequential::SILENT_CALLEE_METRIC)
}

/// The entity a finding is about, labelled as [`crate::detect::entity_label`] labels it.
fn scope_of(a: &Anomaly) -> String {
    let node = a.node();
    match (&a.route, &a.hop_from) {
        (Some(route), _) => format!("{node} {route}"),
        (None, Some(from)) => format!("{from} → {node}"),
        (None, None) => node,
    }
}

/// Whether a finding weighs the evidence of past windows (a sequential test, a trend): after an
/// alert recovered, such a finding may still be counting what that alert saw, so it cannot by
/// itself say that a new problem began.
pub(crate) fn sums_past_windows(a: &Anomaly) -> bool {
    a.kind == AnomalyKind::Forecast || a.metric.as_deref().is_some_and(|m| m.ends_with(".sequential"))
}

/// Whether `a`, on `node`, is still counting the evidence of incident `inc`: a finding that
/// sums past windows whose run began before the incident's last evidence, on one of its nodes.
fn is_echo_of(a: &Anomaly, node: &str, inc: &Incident) -> bool {
    sums_past_windows(a) && inc.nodes.contains_key(node) && a.evidence_start.is_some_and(|s| s < inc.last_activity)
}

/// Whether problems of this kind travel from caller to callee (lost traffic) rather than from
/// callee to caller (latency, errors, slow hops).
fn travels_down(k: AnomalyKind) -> bool {
    k == AnomalyKind::Traffic
}

/// Why an anomaly strong enough to raise an alert did not.
pub mod hold {
    /// The incident's nodes had just started calling a new service (a deployment) and the
    /// anomalies are of the kinds such a change causes.
    pub const DEPENDENCY_CHANGE: &str = "dependency_change";
    /// A forecast alone raises only when two windows running predict the breach.
    pub const FORECAST_NEEDS_TWO_WINDOWS: &str = "forecast_needs_two_windows";
    /// A wait after a callee's answer that may be the caller's own time names a suspect beside
    /// an alert on the caller; alone it raises nothing.
    pub const UNRESOLVED_WAIT_ALONE: &str = "unresolved_wait_alone";
}

/// The rules by which an anomaly went to the incident it did (`anomaly.alert.grouped_by`): what
/// the module doc says, named.
pub mod group {
    /// Nothing open was related, nothing ended was reopened: a new incident.
    pub const NEW: &str = "new";
    /// The same service while its evidence is still coming (within the join gap).
    pub const SAME_SERVICE: &str = "same_service";
    /// The incident's origin acting up again, whatever the gap.
    pub const ORIGIN: &str = "origin";
    /// A wait that may be the caller's own time, with the caller's evidence.
    pub const CALLER_WAIT: &str = "caller_wait";
    /// A callee silent while its caller fails, with the caller's failures (it is their cause).
    pub const FAILING_CALLER: &str = "failing_caller";
    /// Lost traffic whose run began with the incident's own while that goes on.
    pub const LOSS_ONSET: &str = "loss_onset";
    /// Lost traffic on a service that calls, directly or not, one of the incident's services
    /// still losing traffic: the loss upstream, found late because it was milder there.
    pub const UPSTREAM_LOSS: &str = "upstream_loss";
    /// A journey the incident's anomalies named (a shared trace id).
    pub const SHARED_TRACE: &str = "shared_trace";
    /// It suffers what a service of the incident has, the way problems travel.
    pub const EFFECT: &str = "effect";
    /// It is what a service of the incident suffers from, found near the start.
    pub const CAUSE: &str = "cause";
    /// Lost traffic on a service fed by the same caller as one of the incident's.
    pub const SHARED_CALLER: &str = "shared_caller";
    /// A run of windows that began before an ended alert's last evidence: still counting it
    /// (the alert is reopened).
    pub const ECHO: &str = "echo";
    /// The origin of an alert resolved by quiet acting up again within `reopen_within`.
    pub const ORIGIN_AGAIN: &str = "origin_again";
    /// A finding summing past windows from an unknown start on a recovered alert's service.
    pub const STILL_COUNTING: &str = "still_counting";
}

impl AlertManager {
    pub fn new(cfg: AlertConfig) -> Self {
        AlertManager {
            cfg,
            callees: FxHashMap::default(),
            callers: FxHashMap::default(),
            active: Vec::new(),
            resolved: Vec::new(),
            raised: 0,
            raised_by_priority: std::collections::BTreeMap::new(),
            changes: FxHashMap::default(),
            held: BTreeMap::new(),
            grouped: Vec::new(),
            bounds: BTreeMap::new(),
            feedback: FeedbackBook::default(),
            recurrences: recurrence::RecurrenceBook::default(),
            window_calls: FxHashMap::default(),
        }
    }

    /// Whether an alert is open (only then do [`AlertManager::observe_calls`] matter).
    pub fn has_open_alerts(&self) -> bool {
        self.active.iter().any(|inc| inc.raised_at.is_some())
    }

    /// The calls each entity (labelled as [`crate::detect::entity_label`] labels it) had in the
    /// window about to be ingested: a node whose evidence was about entities that had enough
    /// calls together, and no anomaly, counts the window towards its alert's recovery. Call
    /// before [`AlertManager::ingest`]; without it alerts resolve by quiet alone.
    pub fn observe_calls(&mut self, calls: impl IntoIterator<Item = (String, u64)>) {
        self.window_calls.clear();
        self.window_calls.extend(calls);
    }

    /// Counts the window just ingested (ending at `now`) towards each open alert's recovery.
    fn count_normal_windows(&mut self, now: Millis) {
        if self.window_calls.is_empty() {
            return;
        }
        for inc in self.active.iter_mut().filter(|inc| inc.raised_at.is_some()) {
            for (node, ev) in &mut inc.nodes {
                let calls = |label: &String| self.window_calls.get(label).copied().unwrap_or(0);
                let seen: u64 = if ev.scopes.is_empty() {
                    calls(node)
                } else {
                    ev.scopes.iter().map(calls).sum()
                };
                if ev.last < now && seen >= RECOVERY_CALLS {
                    ev.normal_windows += 1;
                }
            }
        }
        self.window_calls.clear();
    }

    /// Takes feedback records in, at the next window or (`at_once` false) once the stream
    /// reaches each one's time. Returns the refused ones with why.
    pub fn offer_feedback(
        &mut self,
        records: impl IntoIterator<Item = FeedbackRecord>,
        at_once: bool,
    ) -> Vec<crate::feedback::FeedbackError> {
        self.feedback.offer(records, at_once)
    }

    /// The feedback in effect and what it did.
    pub fn feedback(&self) -> &FeedbackBook {
        &self.feedback
    }

    /// Puts the feedback due by event time `now` into effect and holds back the anomalies a
    /// false-positive verdict taught to keep quiet (marked with the rule and the verdicts;
    /// [`AlertManager::ingest`] counts them). Call before `ingest`.
    pub fn apply_feedback(&mut self, anomalies: &mut [Anomaly], now: Millis) {
        self.feedback.advance(now);
        for a in anomalies.iter_mut().filter(|a| a.held_by.is_none()) {
            if let Some(s) = self.feedback.suppression_for(a) {
                a.reason = format!(
                    "{} (held back: scores up to {:.0} on this were judged not a problem, by {})",
                    a.reason,
                    s.level,
                    s.verdicts.join(", ")
                );
                a.held_by = Some(crate::feedback::HELD_BY_VERDICT.to_owned());
                self.feedback.counts.anomalies_held += 1;
            }
        }
    }

    /// Holds back the findings of the window ending at `now` that are one more short episode
    /// their entity keeps having by itself (see [`recurrence`]; marked, and counted by
    /// [`AlertManager::ingest`]). Call before `ingest`.
    pub fn hold_recurrences(&mut self, anomalies: &mut [Anomaly], now: Millis) {
        if self.cfg.hold_recurring {
            self.recurrences.judge(anomalies, now);
        }
    }

    /// Marks alert changes with their acknowledgement and silence, and adds the open alerts
    /// newly acknowledged so their documents say so at once.
    fn with_feedback(&mut self, mut changed: Vec<Alert>, now: Millis) -> Vec<Alert> {
        for id in self.feedback.take_new_acks() {
            if changed.iter().any(|a| a.id == id) {
                continue;
            }
            if let Some(inc) = self.active.iter().find(|inc| inc.id == id && inc.raised_at.is_some()) {
                changed.push(render::to_alert(inc, &self.callers, &self.callees));
            }
        }
        for a in &mut changed {
            self.feedback.annotate(a, now);
        }
        changed
    }

    /// Incidents that reached a bound so far, by bound (see [`bound`]).
    pub fn bounds(&self) -> &BTreeMap<String, u64> {
        &self.bounds
    }

    /// Anomalies held back so far, by rule (see [`hold`]).
    pub fn held(&self) -> &BTreeMap<String, u64> {
        &self.held
    }

    /// Marks each anomaly of the window just ingested with the incident it went to and the rule
    /// by which ([`group`]). Call after [`AlertManager::ingest`], on the same slice.
    pub fn mark_grouping(&self, anomalies: &mut [Anomaly]) {
        for (a, g) in anomalies.iter_mut().zip(&self.grouped) {
            if let Some((id, rule)) = g {
                a.alert_id = Some(id.clone());
                a.grouped_by = Some((*rule).to_owned());
            }
        }
    }

    /// Marks each anomaly of the window just ingested that could have raised an alert alone but
    /// did not with the rule that held it, and counts it. Call after [`AlertManager::ingest`].
    pub fn explain_holds(&mut self, anomalies: &mut [Anomaly]) {
        // The strong anomalies by id, and one pass over the incidents to find which holds each
        // (first incident wins): linear, where a search per anomaly was quadratic in a mass
        // outage (thousands of anomalies a window, one incident holding them).
        let mut strong: FxHashMap<&str, Vec<usize>> = FxHashMap::default();
        for (i, a) in anomalies.iter().enumerate().filter(|(_, a)| a.score >= self.cfg.raise_single) {
            strong.entry(a.id.as_str()).or_default().push(i);
        }
        let mut holds: Vec<(usize, &'static str)> = Vec::new();
        for inc in &self.active {
            if strong.is_empty() {
                break;
            }
            let mut rule = None;
            for x in &inc.anomalies {
                let Some(found) = strong.remove(x.id.as_str()) else { continue };
                if inc.raised_at.is_some() {
                    continue;
                }
                let rule = *rule.get_or_insert_with(|| {
                    if self.explained_by_change(inc) {
                        Some(hold::DEPENDENCY_CHANGE)
                    } else if inc.only_forecast() {
                        Some(hold::FORECAST_NEEDS_TWO_WINDOWS)
                    } else if inc.only_unresolved() {
                        Some(hold::UNRESOLVED_WAIT_ALONE)
                    } else {
                        None
                    }
                });
                if let Some(rule) = rule {
                    holds.extend(found.into_iter().map(|i| (i, rule)));
                }
            }
        }
        for (i, rule) in holds {
            let a = &mut anomalies[i];
            tracing::debug!(anomaly = %a.id, rule, "held back");
            a.held_by = Some(rule.to_owned());
            *self.held.entry(rule.to_owned()).or_default() += 1;
        }
    }

    /// Records that `caller` calls `callee`.
    pub fn add_edge(&mut self, caller: String, callee: String) {
        self.callers.entry(callee.clone()).or_default().insert(caller.clone());
        self.callees.entry(caller).or_default().insert(callee);
    }

    /// Records a deliberate change of a node (it started calling a new service) at `t`.
    pub fn note_change(&mut self, node: String, t: Millis) {
        tracing::info!(%node, "dependency change: starts calling a new service");
        self.changes.insert(node, t);
    }

    /// Whether every node of the incident changed on purpose shortly before it began, and every
    /// anomaly is of a kind such a change causes: slower calls and hops, or different payload
    /// sizes. Never new clients, new user agents, a new call order, errors or lost traffic.
    fn explained_by_change(&self, inc: &Incident) -> bool {
        let caused_by_change = |a: &Anomaly| match a.kind {
            AnomalyKind::Latency | AnomalyKind::Journey => true,
            AnomalyKind::Request => a.metric.as_deref().is_some_and(|m| m.starts_with("payload.")),
            _ => false,
        };
        inc.anomalies.iter().all(caused_by_change)
            && inc.nodes.keys().all(|n| {
                self.changes
                    .get(n)
                    .is_some_and(|&c| inc.start >= c - 2 * MINUTE_MS && inc.start <= c + CHANGE_EXPLAINS)
            })
    }

    /// Alerts raised so far.
    /// After a warm start's history: the incidents it opened or resolved and the counts it
    /// made are dropped (nobody is told about history), what it taught stays (who calls whom,
    /// recent deliberate changes, recurring episodes, feedback).
    pub fn forget_incidents(&mut self) {
        self.active.clear();
        self.resolved.clear();
        self.raised = 0;
        self.raised_by_priority.clear();
        self.held.clear();
        self.bounds.clear();
        self.grouped.clear();
    }

    pub fn raised(&self) -> u64 {
        self.raised
    }

    /// Alerts raised so far, by the priority they were raised with.
    pub fn raised_by_priority(&self) -> &std::collections::BTreeMap<String, u64> {
        &self.raised_by_priority
    }

    fn calls(&self, caller: &str, callee: &str) -> bool {
        self.callees.get(caller).is_some_and(|s| s.contains(callee))
    }

    /// Whether `caller` reaches `callee` through at most [`PROPAGATION_HOPS`] calls: a slow
    /// service slows its callers' callers too, even when the one between says too little to be
    /// flagged (quiet traffic).
    fn reaches(&self, caller: &str, callee: &str) -> bool {
        let mut frontier: Vec<&str> = vec![caller];
        let mut seen: FxHashSet<&str> = FxHashSet::default();
        for _ in 0..PROPAGATION_HOPS {
            let mut next = Vec::new();
            for n in frontier {
                for m in self.callees.get(n).into_iter().flatten() {
                    if m == callee {
                        return true;
                    }
                    if seen.insert(m.as_str()) {
                        next.push(m.as_str());
                    }
                }
            }
            frontier = next;
        }
        false
    }

    /// Whether anomaly `a` on `node` belongs to incident `inc` (see the module doc), and by
    /// which rule ([`group`]).
    fn related(&self, inc: &Incident, a: &Anomaly, node: &str) -> Option<&'static str> {
        if a.window_start > inc.last_activity + self.cfg.join_gap {
            return None;
        }
        // A wait that may be the caller's own time goes with the caller's evidence only.
        // (Both hop findings below name their caller: whether it has evidence in the incident.)
        let caller_recent = || {
            (a.hop_from.as_ref())
                .and_then(|c| inc.nodes.get(c))
                .is_some_and(|e| a.window_start <= e.last + self.cfg.join_gap)
        };
        if crate::detect::journey::is_unresolved_wait(a) {
            return caller_recent().then_some(group::CALLER_WAIT);
        }
        // A callee silent while its caller fails is the cause of the failures, however late
        // its silence was proven: it goes where they are.
        if is_silent_callee(a) && caller_recent() {
            return Some(group::FAILING_CALLER);
        }
        // The same service while its evidence is still coming, or the incident's origin whatever
        // the gap; another member that went quiet and acts up again is judged like any other
        // service (it may be a new problem).
        if let Some(e) = inc.nodes.get(node) {
            // After a break, a kind of evidence the service has not shown in this incident is a
            // new problem on it (a network delay after a CPU contention), not more of the same.
            let after_break = a.window_start >= e.last + self.cfg.quiet_to_resolve / 2;
            if after_break && e.is_new_kind(a) {
                return None;
            }
            if a.window_start <= e.last + self.cfg.join_gap {
                return Some(group::SAME_SERVICE);
            }
            if render::origin(inc, &self.callers, &self.callees).0 == node {
                return Some(group::ORIGIN);
            }
        }
        if !self.cfg.group_related_services {
            return None;
        }
        let down = travels_down(a.kind);
        let near_start = a.window_start <= inc.start + self.cfg.join_gap;
        // Lost traffic whose run began with the incident's, while the incident's own lost
        // traffic goes on: one loss upstream (a change of load, a balancer) that reached
        // services no caller links, found late on the quieter ones. Onset, not adjacency.
        if a.kind == AnomalyKind::Traffic {
            let began_together = a
                .evidence_start
                .is_some_and(|s| s <= inc.start + self.cfg.join_gap && s + self.cfg.join_gap >= inc.start);
            let losing = |e: &NodeEvidence| e.by_kind.contains_key(&AnomalyKind::Traffic) && a.window_start <= e.last + self.cfg.join_gap;
            if began_together && inc.nodes.values().any(losing) {
                return Some(group::LOSS_ONSET);
            }
            // Lost traffic travels from caller to callee: a loss on a service upstream of the
            // incident's ongoing losses is where they come from, however late it is found.
            if inc.nodes.iter().any(|(n, e)| n != node && losing(e) && self.reaches(node, n)) {
                return Some(group::UPSTREAM_LOSS);
            }
        }
        // Shared journeys join, but not a service downstream of the incident that acts up
        // later: a request passes through cause and effects alike, and latency does not travel
        // from caller to callee, so that is a new problem (a late-found cause joins only near
        // the start, below).
        let downstream_late = !down && !near_start && inc.nodes.keys().any(|n| n != node && self.reaches(n, node));
        let recent_trace = |t: &String| inc.traces.get(t).is_some_and(|&end| a.window_start <= end + self.cfg.join_gap);
        if !downstream_late && a.trace_ids.iter().any(recent_trace) {
            return Some(group::SHARED_TRACE);
        }
        // A wait outside a node is evidence about that node, never the echo of another.
        let can_be_effect = !crate::detect::journey::is_hop_wait(a);
        let strongest = inc.nodes.values().map(|e| e.score).fold(0.0, f64::max);
        let excess = latency_excess(a);
        inc.nodes.iter().find_map(|(n, e)| {
            // Only a node with material evidence can have effects: a chain of weak findings
            // across a mesh is not propagation. And a cause must be big enough: a callee a few
            // milliseconds slower cannot explain a caller seconds slower.
            let big_enough = match excess {
                Some(x) => e.latency_excess_ms >= 0.25 * x,
                None => true,
            };
            let recent = a.window_start <= e.last + self.cfg.join_gap && e.score >= 0.15 * strongest && big_enough && can_be_effect;
            let same_way = e.by_kind.keys().any(|k| travels_down(*k) == down);
            // `node` suffers what `n` has (an effect), or causes it and began with it.
            let (effect, cause) = if down {
                (self.reaches(n, node), self.calls(node, n))
            } else {
                (self.reaches(node, n), self.calls(n, node))
            };
            // Lost traffic on two services fed by the same caller, together: one loss upstream
            // (demand, a balancer, the caller itself) that neither of them causes.
            let siblings = down && recent && self.share_a_caller(n, node);
            if !same_way {
                None
            } else if effect && recent {
                Some(group::EFFECT)
            } else if cause && near_start {
                Some(group::CAUSE)
            } else if siblings {
                Some(group::SHARED_CALLER)
            } else {
                None
            }
        })
    }

    /// Whether some service calls both `a` and `b`.
    fn share_a_caller(&self, a: &str, b: &str) -> bool {
        match (self.callers.get(a), self.callers.get(b)) {
            (Some(x), Some(y)) => x.iter().any(|c| y.contains(c)),
            _ => false,
        }
    }

    /// The resolved alert anomaly `a` on `node` reopens, if any: one whose evidence `a` is still
    /// counting (an echo: a finding whose run of windows began before that alert's last evidence,
    /// on one of its services), however long ago it resolved; within `reopen_within`, one that
    /// resolved by quiet and whose origin acts up again, or one that recovered whose services a
    /// finding summing past windows from an unknown start may be counting.
    ///
    /// `fresh` holds the nodes with evidence of this window alone: on a node of an alert that
    /// recovered (judged normal long enough), that proves a problem now, and a run of windows
    /// reaching back across the recovery is more likely the new problem's than the old one's.
    fn reopenable(&self, a: &Anomaly, node: &str, fresh: &FxHashSet<String>) -> Option<(usize, &'static str)> {
        self.resolved.iter().enumerate().find_map(|(k, inc)| {
            let echo = is_echo_of(a, node, inc) && !(inc.recovered && fresh.contains(node));
            let recent = inc.resolved_at.is_some_and(|r| a.window_start <= r + self.cfg.reopen_within);
            // A recovered alert's services may still be counted by a finding that cannot say
            // where its run began (a forecast); one that can is an echo or new (above).
            // The origin acting up again with evidence of a kind it had not shown is a new problem
            // on it (a network delay after a CPU contention), as it is within an open alert.
            let same = if inc.recovered {
                sums_past_windows(a) && a.evidence_start.is_none() && inc.nodes.contains_key(node)
            } else {
                render::origin(inc, &self.callers, &self.callees).0 == node && inc.nodes.get(node).is_some_and(|e| !e.is_new_kind(a))
            };
            if inc.bounded {
                None
            } else if echo {
                Some((k, group::ECHO))
            } else if recent && same && inc.recovered {
                Some((k, group::STILL_COUNTING))
            } else if recent && same {
                Some((k, group::ORIGIN_AGAIN))
            } else {
                None
            }
        })
    }

    fn reopen(&mut self, k: usize) {
        let mut inc = self.resolved.remove(k);
        inc.resolved_at = None;
        inc.recovered = false;
        self.active.push(inc);
    }

    /// Takes the anomalies of a window that ended at `now`; returns alerts that changed.
    pub fn ingest(&mut self, anomalies: &[Anomaly], now: Millis) -> Vec<Alert> {
        let mut touched: BTreeSet<usize> = BTreeSet::new();
        // Findings that sum past windows reopen the ended alert they may still be counting before
        // anything else in the window can start a new incident they would join; each joins the
        // alert it reopened (or that another finding of this window reopened and it is counting
        // too), however long that alert has been quiet.
        let mut reopened_by: FxHashMap<&str, (String, &'static str)> = FxHashMap::default();
        self.grouped.clear();
        self.grouped.resize(anomalies.len(), None);
        let fresh: FxHashSet<String> = (anomalies.iter())
            .filter(|a| a.held_by.is_none() && !is_corroborating_only(a) && !sums_past_windows(a))
            .filter(|a| !crate::detect::journey::is_unresolved_wait(a))
            .map(|a| a.node())
            .collect();
        for a in anomalies.iter().filter(|a| a.held_by.is_none() && sums_past_windows(a)) {
            let node = a.node();
            if self.active.iter().any(|inc| self.related(inc, a, &node).is_some()) {
                continue;
            }
            if let Some((k, rule)) = self.reopenable(a, &node, &fresh) {
                reopened_by.insert(a.id.as_str(), (self.resolved[k].id.clone(), rule));
                self.reopen(k);
            } else {
                let also = self
                    .active
                    .iter()
                    .find(|inc| reopened_by.values().any(|(id, _)| *id == inc.id) && is_echo_of(a, &node, inc));
                if let Some(inc) = also {
                    reopened_by.insert(a.id.as_str(), (inc.id.clone(), group::ECHO));
                }
            }
        }
        for (index, a) in anomalies.iter().enumerate() {
            // A detector held it back itself (and said why in its reason): counted, not grouped.
            if let Some(rule) = &a.held_by {
                *self.held.entry(rule.clone()).or_default() += 1;
                continue;
            }
            let node = a.node();
            let max_nodes = self.cfg.max_nodes;
            let mut at_size_bound = false;
            let best = (0..self.active.len())
                .filter_map(|i| Some((i, self.related(&self.active[i], a, &node)?)))
                .filter(|&(i, _)| {
                    let inc = &self.active[i];
                    let full = inc.nodes.len() >= max_nodes && !inc.nodes.contains_key(&node);
                    at_size_bound |= full;
                    !full
                })
                .max_by(|&(i, _), &(j, _)| self.active[i].evidence.total_cmp(&self.active[j].evidence))
                .or_else(|| {
                    let (id, rule) = reopened_by.get(a.id.as_str())?;
                    Some((self.active.iter().position(|inc| inc.id == *id)?, *rule))
                });
            if best.is_none() && at_size_bound {
                *self.bounds.entry(bound::SIZE.to_owned()).or_default() += 1;
            }
            let (i, rule) = match best {
                Some(found) => found,
                None => {
                    // A wait that may be its caller's time reopens nothing (it goes with the caller).
                    let reopens = if crate::detect::journey::is_unresolved_wait(a) {
                        None
                    } else {
                        self.reopenable(a, &node, &fresh)
                    };
                    let rule = match reopens {
                        Some((k, rule)) => {
                            self.reopen(k);
                            rule
                        }
                        None => {
                            self.active.push(Incident::new(a));
                            group::NEW
                        }
                    };
                    (self.active.len() - 1, rule)
                }
            };
            self.active[i].add(a);
            self.grouped[index] = Some((self.active[i].id.clone(), rule));
            touched.insert(i);
        }
        let mut changed = Vec::new();
        for &i in &touched {
            let inc = &mut self.active[i];
            if inc.raised_at.is_none() && self.should_raise(&self.active[i]) {
                let inc = &mut self.active[i];
                inc.raised_at = Some(now);
                inc.last_notified = now;
                inc.notifications = 1;
                inc.only_forecast_when_raised = inc.only_forecast();
                inc.predicted = inc.has_forecast();
                self.raised += 1;
            }
            let inc = &self.active[i];
            if inc.raised_at.is_some() {
                let alert = render::to_alert(inc, &self.callers, &self.callees);
                if inc.raised_at == Some(now) && inc.notifications == 1 {
                    *self.raised_by_priority.entry(alert.priority.clone()).or_default() += 1;
                }
                changed.push(alert);
            }
        }
        self.count_normal_windows(now);
        changed.extend(self.tick_inner(now, &touched));
        self.with_feedback(changed, now)
    }

    /// Advances time with no new anomalies (resolutions, re-alerts, dropped noise).
    pub fn tick(&mut self, now: Millis) -> Vec<Alert> {
        let changed = self.tick_inner(now, &BTreeSet::new());
        self.with_feedback(changed, now)
    }

    fn tick_inner(&mut self, now: Millis, touched: &BTreeSet<usize>) -> Vec<Alert> {
        let mut changed = Vec::new();
        let mut keep = Vec::with_capacity(self.active.len());
        for (i, mut inc) in std::mem::take(&mut self.active).into_iter().enumerate() {
            let quiet = now - inc.last_activity;
            match inc.raised_at {
                None if quiet > self.cfg.pending_timeout => {
                    tracing::debug!(incident = %inc.id, evidence = inc.evidence, "dropped weak evidence");
                }
                None => keep.push(inc),
                // Every node judged normal since its last evidence (which implies the quiet).
                Some(_) if inc.nodes.values().all(NodeEvidence::recovered) => {
                    inc.resolved_at = Some(inc.last_activity);
                    inc.recovered = true;
                    changed.push(render::to_alert(&inc, &self.callers, &self.callees));
                    self.resolved.push(inc);
                }
                Some(_) if quiet >= self.cfg.quiet_to_resolve => {
                    inc.resolved_at = Some(inc.last_activity);
                    changed.push(render::to_alert(&inc, &self.callers, &self.callees));
                    self.resolved.push(inc);
                }
                Some(raised) if now - raised >= self.cfg.max_alert_age => {
                    tracing::info!(incident = %inc.id, anomalies = inc.anomaly_count, "alert closed at its age bound");
                    *self.bounds.entry(bound::AGE.to_owned()).or_default() += 1;
                    inc.resolved_at = Some(now);
                    inc.bounded = true;
                    changed.push(render::to_alert(&inc, &self.callers, &self.callees));
                    self.resolved.push(inc);
                }
                Some(_) => {
                    if touched.contains(&i) && now - inc.last_notified >= self.cfg.realert_interval {
                        inc.last_notified = now;
                        inc.notifications += 1;
                        changed.push(render::to_alert(&inc, &self.callers, &self.callees));
                    }
                    keep.push(inc);
                }
            }
        }
        self.active = keep;
        let horizon = now - self.cfg.reopen_within.max(ECHO_MEMORY);
        self.resolved.retain(|inc| inc.resolved_at.is_some_and(|r| r >= horizon));
        changed
    }

    fn should_raise(&self, inc: &Incident) -> bool {
        if self.explained_by_change(inc) || inc.only_unresolved() {
            return false;
        }
        if inc.max_score >= self.cfg.raise_single && !inc.only_forecast() {
            return true;
        }
        if inc.has_forecast() && inc.forecast_windows.len() >= 2 {
            return true;
        }
        inc.primary_evidence >= self.cfg.raise_total && inc.windows.len() >= 2
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::model::anomaly::{AlertStatus, Severity};

    pub(crate) fn anomaly(service: &str, kind: AnomalyKind, score: f64, t: Millis) -> Anomaly {
        Anomaly {
            timestamp: t,
            id: Anomaly::make_id(&[service, kind.as_str(), &t.to_string()]),
            kind,
            detector: "baseline".into(),
            score,
            severity: Severity::from_score(score),
            window_start: t,
            window_end: t + MINUTE_MS,
            service: service.into(),
            provider: "aws".into(),
            route: None,
            metric: None,
            held_by: None,
            alert_id: None,
            grouped_by: None,
            weight: Default::default(),
            actual: Some(2.0),
            expected: Some(1.0),
            reason: format!("{service} is slow"),
            contributors: vec![],
            hop_from: None,
            impact_calls: 100,
            impact_users: 20,
            eta: None,
            evidence_start: None,
            trace_ids: vec![],
            user_ids: vec![],
        }
    }

    fn manager() -> AlertManager {
        let mut m = AlertManager::new(AlertConfig::default());
        m.add_edge("gateway/aws".into(), "orders/aws".into());
        m.add_edge("orders/aws".into(), "payments/aws".into());
        m
    }

    /// A callee down logs nothing while its caller fails: the caller's failures raise an alert
    /// at once (naming it: nothing else deviates), and the callee's silence, proven minutes
    /// later, joins that alert (past the join gap) and is named its origin, however much more
    /// evidence the failures piled up.
    #[test]
    fn a_callee_silent_under_its_failing_caller_joins_its_alert_and_is_named() {
        let silent = |t: Millis| {
            let mut a = anomaly("payments", AnomalyKind::Journey, 75.0, t);
            a.metric = Some(crate::detect::sequential::SILENT_CALLEE_METRIC.into());
            a.hop_from = Some("orders/aws".into());
            a
        };
        let mut m = manager();
        let mut alerts = Vec::new();
        for minute in 0..12 {
            let t = minute * MINUTE_MS;
            let mut batch = vec![
                anomaly("orders", AnomalyKind::Errors, 90.0, t),
                anomaly("orders", AnomalyKind::Errors, 85.0, t),
                anomaly("orders", AnomalyKind::Request, 80.0, t),
            ];
            if minute >= 8 {
                batch.push(silent(t));
            }
            alerts.extend(m.ingest(&batch, t + MINUTE_MS));
        }
        let ids: BTreeSet<&str> = alerts.iter().map(|a| a.id.as_str()).collect();
        assert_eq!(ids.len(), 1, "one alert: {:?}", alerts.iter().map(|a| &a.title).collect::<Vec<_>>());
        assert_eq!(alerts[0].service, "orders", "before the silence is proven");
        let last = alerts.last().unwrap();
        let names: Vec<&str> = last.suspects.iter().map(|s| s.service.as_str()).collect();
        assert_eq!(names, ["payments", "orders"], "{:?}", last.suspects);
        assert!(
            last.suspects[1].why.contains("may follow its callee payments"),
            "{}",
            last.suspects[1].why
        );
    }

    /// A wait after the only callee's answers, which may be the caller's own time: it names the
    /// callee beside the caller (after it, without excusing it), and alone raises nothing.
    #[test]
    fn an_unresolved_wait_names_the_callee_beside_its_caller_and_alone_raises_nothing() {
        let unresolved = |t: Millis| {
            let mut a = anomaly("payments", AnomalyKind::Journey, 90.0, t);
            a.metric = Some(crate::detect::journey::UNRESOLVED_WAIT_METRIC.into());
            a.weight = Weight::Corroborates;
            a.hop_from = Some("orders/aws".into());
            a
        };
        let mut m = manager();
        let mut last = None;
        for minute in 0..3 {
            let t = minute * MINUTE_MS;
            let batch = [anomaly("orders", AnomalyKind::Latency, 85.0, t), unresolved(t)];
            last = m.ingest(&batch, t + MINUTE_MS).pop().or(last);
        }
        let alert = last.expect("orders' latency raises an alert");
        assert_eq!(alert.service, "orders", "{:?}", alert.suspects);
        let names: Vec<&str> = alert.suspects.iter().map(|s| s.service.as_str()).collect();
        assert_eq!(names, ["orders", "payments"]);
        assert!(
            alert.suspects[0].why.contains("no callee of it deviates"),
            "{}",
            alert.suspects[0].why
        );
        assert!(alert.suspects[1].why.contains("cannot tell apart"), "{}", alert.suspects[1].why);

        let mut m = manager();
        let mut alone: Vec<Anomaly> = (0..3).map(|minute| unresolved(minute * MINUTE_MS)).collect();
        for (minute, a) in alone.iter_mut().enumerate() {
            let t = minute as Millis * MINUTE_MS;
            assert!(m.ingest(std::slice::from_ref(a), t + MINUTE_MS).is_empty());
            m.explain_holds(std::slice::from_mut(a));
        }
        assert!(alone.iter().all(|a| a.held_by.as_deref() == Some(hold::UNRESOLVED_WAIT_ALONE)));
    }

    #[test]
    fn a_dependency_change_holds_latency_but_never_a_new_call_order_and_says_so() {
        let mut m = manager();
        m.note_change("gateway/aws".into(), 0);
        let mut slow = [anomaly("gateway", AnomalyKind::Latency, 80.0, MINUTE_MS)];
        assert!(
            m.ingest(&slow, 2 * MINUTE_MS).is_empty(),
            "a deployment's latency shift is expected"
        );
        m.explain_holds(&mut slow);
        assert_eq!(slow[0].held_by.as_deref(), Some(hold::DEPENDENCY_CHANGE));
        assert_eq!(m.held()[hold::DEPENDENCY_CHANGE], 1);

        let mut m = manager();
        m.note_change("gateway/aws".into(), 0);
        let mut flow = [anomaly("gateway", AnomalyKind::Sequence, 75.0, MINUTE_MS)];
        let out = m.ingest(&flow, 2 * MINUTE_MS);
        assert_eq!(out.len(), 1, "a new call order is not something a new dependency explains");
        m.explain_holds(&mut flow);
        assert_eq!(flow[0].held_by, None);
        assert!(m.held().is_empty());
    }

    #[test]
    fn titles_quote_only_metric_findings() {
        let mut m = manager();
        let mut a = anomaly("payments", AnomalyKind::Latency, 90.0, 0);
        a.metric = Some("latency.p95".into());
        a.trace_ids = vec!["t-1".into()];
        let out = m.ingest(&[a], MINUTE_MS);
        assert!(out[0].title.contains("latency 2.0x usual on payments/aws"), "{}", out[0].title);
        assert!(out[0].summary.contains("Example traces: t-1"), "{}", out[0].summary);
        let mut b = anomaly("search", AnomalyKind::Latency, 90.0, 0);
        b.metric = Some("window.isolation".into());
        b.weight = Weight::Corroborates;
        let out = m.ingest(&[b], MINUTE_MS);
        assert!(out[0].title.contains("] latency on search/aws"), "{}", out[0].title);
    }

    #[test]
    fn a_caller_too_slow_to_be_an_echo_is_a_new_alert_and_suspects_rank_by_blame() {
        let mut m = manager();
        let p95 = |service: &str, score: f64, t: Millis, actual: f64, expected: f64| {
            let mut a = anomaly(service, AnomalyKind::Latency, score, t);
            a.metric = Some("latency.p95".into());
            a.actual = Some(actual);
            a.expected = Some(expected);
            a
        };
        // payments goes 40 ms slower and stays so; its caller orders follows at once: one alert,
        // payments blamed first and orders after it, as following its callee.
        let mut alerts = Vec::new();
        for minute in 0..30 {
            let t = minute * MINUTE_MS;
            let mut batch = vec![p95("payments", 80.0, t, 60.0, 20.0)];
            if minute < 3 {
                batch.push(p95("orders", 85.0, t, 90.0, 50.0));
            }
            // gateway, which reaches payments through orders, goes 3 s slower: 40 ms cannot
            // explain that, so it is a problem of its own.
            if minute >= 25 {
                batch.push(p95("gateway", 90.0, t, 3100.0, 100.0));
            }
            alerts.extend(m.ingest(&batch, t + MINUTE_MS));
        }
        let first = &alerts[0];
        assert_eq!(first.service, "payments", "{:?}", first.suspects);
        assert_eq!(first.suspects[0].service, "payments");
        assert_eq!(first.suspects[1].service, "orders");
        assert!(first.suspects[1].score < first.suspects[0].score);
        assert!(
            first.suspects[1].why.contains("may follow its callee payments/aws"),
            "{}",
            first.suspects[1].why
        );
        assert_eq!(first.services, vec!["payments".to_owned(), "orders".to_owned()]);
        let ids: BTreeSet<&str> = alerts.iter().map(|a| a.id.as_str()).collect();
        assert_eq!(ids.len(), 2, "gateway's deviation is an alert of its own");
        assert!(alerts
            .iter()
            .any(|a| a.service == "gateway" && a.services == vec!["gateway".to_owned()]));

        // The same caller 45 ms slower is payments' echo: it joins payments' alert.
        let mut m = manager();
        let mut ids = BTreeSet::new();
        for minute in 0..30 {
            let t = minute * MINUTE_MS;
            let mut batch = vec![p95("payments", 80.0, t, 60.0, 20.0)];
            if minute >= 25 {
                batch.push(p95("gateway", 90.0, t, 145.0, 100.0));
            }
            ids.extend(m.ingest(&batch, t + MINUTE_MS).into_iter().map(|a| a.id));
        }
        assert_eq!(ids.len(), 1);
    }

    #[test]
    fn an_alert_that_never_quiets_is_closed_at_its_age_bound_and_counted() {
        let mut m = AlertManager::new(AlertConfig {
            max_alert_age: 30 * MINUTE_MS,
            ..AlertConfig::default()
        });
        let mut out = Vec::new();
        for minute in 0..40 {
            let t = minute * MINUTE_MS;
            out.extend(m.ingest(&[anomaly("search", AnomalyKind::Latency, 90.0, t)], t + MINUTE_MS));
        }
        let closed: Vec<&Alert> = out.iter().filter(|a| a.status == AlertStatus::Resolved).collect();
        assert_eq!(closed.len(), 1, "closed once, at 30 minutes");
        assert_eq!(m.bounds()[bound::AGE], 1);
        let ids: BTreeSet<&str> = out.iter().map(|a| a.id.as_str()).collect();
        assert_eq!(
            ids.len(),
            2,
            "what still deviates raises a new alert rather than reopening the old one"
        );
    }

    #[test]
    fn a_cascade_is_one_alert_naming_the_deepest_service() {
        let mut m = manager();
        let t = 10 * MINUTE_MS;
        let batch = vec![
            anomaly("gateway", AnomalyKind::Latency, 80.0, t),
            anomaly("orders", AnomalyKind::Latency, 70.0, t),
            anomaly("payments", AnomalyKind::Latency, 60.0, t),
        ];
        let out = m.ingest(&batch, t + MINUTE_MS);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].service, "payments");
        assert_eq!(out[0].services.len(), 3);
        assert_eq!(out[0].status, AlertStatus::Open);
        assert_eq!(m.raised(), 1);
    }

    /// Every request goes gateway → orders → payments, so their anomalies share traces. A slow
    /// gateway is an incident; payments slowing down ten minutes later is a new problem, not an
    /// effect of the gateway, and gets its own alert although it shares the gateway's journeys.
    #[test]
    fn a_callee_acting_up_later_on_shared_journeys_is_a_new_alert() {
        let mut m = manager();
        let traced = |service: &str, t: Millis| {
            let mut a = anomaly(service, AnomalyKind::Latency, 80.0, t);
            a.trace_ids = vec!["trace-1".into(), "trace-2".into()];
            a
        };
        let mut raised = Vec::new();
        for minute in 0..12 {
            let t = minute * MINUTE_MS;
            let mut batch = vec![traced("gateway", t)];
            if minute >= 10 {
                batch.push(traced("payments", t));
            }
            raised.extend(m.ingest(&batch, t + MINUTE_MS).into_iter().map(|a| (a.id, a.service)));
        }
        let origins: std::collections::BTreeMap<_, _> = raised.into_iter().collect();
        assert_eq!(origins.len(), 2, "{origins:?}");
        assert!(origins.values().any(|s| s == "payments"), "{origins:?}");
        // Near its start, shared journeys still join: the same payments finding in the first
        // minute is part of the gateway's incident.
        let mut m = manager();
        let out = m.ingest(&[traced("gateway", 0), traced("payments", 0)], MINUTE_MS);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].services.len(), 2);
    }

    /// Evidence on orders for four minutes, three quiet minutes, then orders again: more of the
    /// same is the same alert; a new kind of evidence after the break (a slow hop after latency,
    /// a wait outside the service after its own slowness) is a new problem with its own alert.
    #[test]
    fn a_new_kind_of_evidence_after_a_break_is_a_new_alert_and_more_of_the_same_is_not() {
        let slow_hop = (AnomalyKind::Journey, Some("journey.slow_hop"));
        let hop_wait = (AnomalyKind::Journey, Some(crate::detect::journey::HOP_WAIT_METRIC));
        let latency = (AnomalyKind::Latency, None);
        for (first, later, alerts) in [
            (latency, latency, 1),
            (latency, slow_hop, 2),
            (slow_hop, slow_hop, 1),
            // A wait outside the service after its own slowness: its network this time.
            (slow_hop, hop_wait, 2),
            (hop_wait, hop_wait, 1),
        ] {
            let mut m = manager();
            let mut ids = BTreeSet::new();
            for minute in (0..4).chain([7]) {
                let t = minute * MINUTE_MS;
                let (kind, metric) = if minute < 7 { first } else { later };
                let mut a = anomaly("orders", kind, 80.0, t);
                a.metric = metric.map(str::to_owned);
                ids.extend(m.ingest(&[a], t + MINUTE_MS).into_iter().map(|a| a.id));
            }
            assert_eq!(ids.len(), alerts, "{first:?} then {later:?}");
        }
    }

    #[test]
    fn traffic_loss_points_at_the_caller() {
        let mut m = manager();
        let t = 0;
        let batch = vec![
            anomaly("orders", AnomalyKind::Traffic, 70.0, t),
            anomaly("gateway", AnomalyKind::Traffic, 60.0, t),
        ];
        let out = m.ingest(&batch, MINUTE_MS);
        assert_eq!(out[0].service, "gateway");
    }

    #[test]
    fn weak_window_forest_findings_alone_do_not_alert() {
        let mut m = manager();
        let weak = |t| {
            let mut a = anomaly("orders", AnomalyKind::Latency, 45.0, t);
            a.detector = "isolation_forest".into();
            a.metric = Some("window.isolation".into());
            a.weight = Weight::Corroborates;
            a
        };
        for k in 0..4 {
            assert!(m.ingest(&[weak(k * MINUTE_MS)], (k + 1) * MINUTE_MS).is_empty());
        }
        // Raising takes primary evidence: a baseline finding, then another.
        let out = m.ingest(
            &[weak(4 * MINUTE_MS), anomaly("orders", AnomalyKind::Latency, 60.0, 4 * MINUTE_MS)],
            5 * MINUTE_MS,
        );
        assert!(out.is_empty(), "one more moderate finding is not yet enough");
        let out = m.ingest(&[anomaly("orders", AnomalyKind::Latency, 55.0, 5 * MINUTE_MS)], 6 * MINUTE_MS);
        assert_eq!(out.len(), 1);
    }

    #[test]
    fn weak_single_anomalies_do_not_alert() {
        let mut m = manager();
        let out = m.ingest(&[anomaly("orders", AnomalyKind::Latency, 40.0, 0)], MINUTE_MS);
        assert!(out.is_empty());
        assert!(m.tick(30 * MINUTE_MS).is_empty());
        assert_eq!(m.raised(), 0);
    }

    #[test]
    fn persistent_moderate_evidence_alerts_then_resolves() {
        let mut m = manager();
        let mut raised = None;
        for k in 0..3 {
            let t = k * MINUTE_MS;
            let out = m.ingest(&[anomaly("orders", AnomalyKind::Errors, 45.0, t)], t + MINUTE_MS);
            if raised.is_none() && !out.is_empty() {
                raised = Some(k);
            }
        }
        assert_eq!(raised, Some(2));
        let out = m.tick(20 * MINUTE_MS);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].status, AlertStatus::Resolved);
        assert_eq!(out[0].end, Some(3 * MINUTE_MS));
    }

    #[test]
    fn unrelated_services_are_separate_alerts() {
        let mut m = manager();
        m.add_edge("gateway/aws".into(), "search/gcp".into());
        let mut a = anomaly("search", AnomalyKind::Errors, 90.0, 0);
        a.provider = "gcp".into();
        let out = m.ingest(&[anomaly("payments", AnomalyKind::Errors, 90.0, 0), a], MINUTE_MS);
        assert_eq!(out.len(), 2);
    }

    #[test]
    fn a_shift_after_starting_to_call_a_new_service_is_not_an_alert() {
        let mut m = manager();
        m.note_change("orders/aws".into(), 10 * MINUTE_MS);
        let out = m.ingest(&[anomaly("orders", AnomalyKind::Latency, 90.0, 11 * MINUTE_MS)], 12 * MINUTE_MS);
        assert!(out.is_empty());
        // Errors are not explained by a new dependency.
        let out = m.ingest(&[anomaly("orders", AnomalyKind::Errors, 90.0, 40 * MINUTE_MS)], 41 * MINUTE_MS);
        assert_eq!(out.len(), 1);
    }

    /// Three windows of errors on orders (100 calls a window), then `quiet` windows in which
    /// orders had `calls` calls and no anomaly; returns the first alert and what the quiet
    /// windows changed.
    fn errors_then_quiet(m: &mut AlertManager, calls: u64, quiet: i64) -> (Alert, Vec<Alert>) {
        let mut first = None;
        for k in 0..3 {
            m.observe_calls([("orders/aws".to_owned(), 100)]);
            let out = m.ingest(&[anomaly("orders", AnomalyKind::Errors, 90.0, k * MINUTE_MS)], (k + 1) * MINUTE_MS);
            first = first.or(out.into_iter().next());
        }
        let mut changed = Vec::new();
        for k in 3..3 + quiet {
            m.observe_calls([("orders/aws".to_owned(), calls)]);
            changed.extend(m.ingest(&[], (k + 1) * MINUTE_MS));
        }
        (first.expect("raised"), changed)
    }

    #[test]
    fn an_alert_judged_normal_on_enough_calls_recovers_and_what_follows_is_new() {
        let mut m = manager();
        let (first, changed) = errors_then_quiet(&mut m, 100, i64::from(MIN_RECOVERED_WINDOWS));
        assert_eq!(changed.len(), 1, "resolved after {MIN_RECOVERED_WINDOWS} windows judged normal");
        assert_eq!(changed[0].status, AlertStatus::Resolved);
        assert!(changed[0].summary.contains("judged normal"), "{}", changed[0].summary);
        // The same problem again two minutes later is a new alert, not the old one reopened.
        let t = 9 * MINUTE_MS;
        let again = m.ingest(&[anomaly("orders", AnomalyKind::Errors, 90.0, t)], t + MINUTE_MS);
        assert_eq!(again.len(), 1);
        assert_ne!(again[0].id, first.id);
    }

    #[test]
    fn quiet_windows_with_too_few_calls_prove_nothing_and_the_alert_resolves_by_quiet() {
        let mut m = manager();
        let (first, changed) = errors_then_quiet(&mut m, RECOVERY_CALLS - 1, i64::from(MIN_RECOVERED_WINDOWS));
        assert!(
            changed.is_empty(),
            "still open: three calls a window cannot show the problem is over"
        );
        let changed = m.tick(9 * MINUTE_MS);
        assert_eq!(changed[0].status, AlertStatus::Resolved);
        assert!(!changed[0].summary.contains("judged normal"));
        // Resolved by quiet alone: the problem back soon reopens the same alert.
        let t = 10 * MINUTE_MS;
        let again = m.ingest(&[anomaly("orders", AnomalyKind::Errors, 90.0, t)], t + MINUTE_MS);
        assert_eq!(again[0].id, first.id);
    }

    #[test]
    fn an_intermittent_problem_needs_more_normal_windows_than_a_steady_one() {
        let steady = NodeEvidence {
            evidence_windows: 3,
            normal_windows: MIN_RECOVERED_WINDOWS,
            ..NodeEvidence::default()
        };
        assert!(steady.recovered());
        // Seen in 3 of 9 windows: 4 quiet windows are what it did between findings anyway.
        let intermittent = NodeEvidence {
            evidence_windows: 3,
            gaps: 6,
            normal_windows: MIN_RECOVERED_WINDOWS,
            ..NodeEvidence::default()
        };
        assert!(!intermittent.recovered());
        assert!(NodeEvidence {
            normal_windows: 9,
            ..intermittent
        }
        .recovered());
    }

    #[test]
    fn a_sequential_finding_after_recovery_reopens_the_alert_it_still_counts() {
        let mut m = manager();
        let (first, changed) = errors_then_quiet(&mut m, 100, i64::from(MIN_RECOVERED_WINDOWS));
        assert_eq!(changed[0].status, AlertStatus::Resolved);
        // A caller's own finding in the same window comes first, and would start a new incident.
        let t = 8 * MINUTE_MS;
        let mut echo = anomaly("orders", AnomalyKind::Errors, 70.0, t);
        echo.metric = Some("errors.5xx_rate.sequential".into());
        echo.evidence_start = Some(2 * MINUTE_MS);
        let again = m.ingest(&[anomaly("gateway", AnomalyKind::Errors, 70.0, t), echo], t + MINUTE_MS);
        assert_eq!(again.len(), 1, "{again:?}");
        assert_eq!(again[0].id, first.id);
        assert_eq!(again[0].status, AlertStatus::Open);
    }

    #[test]
    fn fresh_evidence_after_recovery_is_a_new_problem_even_beside_a_run_reaching_back() {
        let mut m = manager();
        let (first, changed) = errors_then_quiet(&mut m, 100, i64::from(MIN_RECOVERED_WINDOWS));
        assert_eq!(changed[0].status, AlertStatus::Resolved);
        // The run began before the recovery, but this window's own evidence proves a problem now
        // on a service judged normal for long enough: a second fault, not the first one's echo.
        let t = 8 * MINUTE_MS;
        let mut run = anomaly("orders", AnomalyKind::Errors, 70.0, t);
        run.metric = Some("errors.5xx_rate.sequential".into());
        run.evidence_start = Some(2 * MINUTE_MS);
        let again = m.ingest(&[run, anomaly("orders", AnomalyKind::Errors, 90.0, t)], t + MINUTE_MS);
        assert_eq!(again.len(), 1, "{again:?}");
        assert_ne!(again[0].id, first.id);
        assert_eq!(again[0].anomaly_ids.len(), 2, "the run goes with the new problem");
        assert_eq!(m.raised(), 2);
    }

    #[test]
    fn every_grouped_anomaly_says_which_alert_and_why() {
        let mut m = manager();
        m.add_edge("gateway/aws".into(), "orders/aws".into());
        let mut first = [anomaly("orders", AnomalyKind::Errors, 90.0, 0)];
        let raised = m.ingest(&first, MINUTE_MS);
        m.mark_grouping(&mut first);
        assert_eq!(first[0].alert_id.as_deref(), Some(raised[0].id.as_str()));
        assert_eq!(first[0].grouped_by.as_deref(), Some(group::NEW));
        // The caller's errors a minute later are an effect; the origin's are more of the same.
        let mut next = [
            anomaly("gateway", AnomalyKind::Errors, 70.0, MINUTE_MS),
            anomaly("orders", AnomalyKind::Errors, 80.0, MINUTE_MS),
        ];
        m.ingest(&next, 2 * MINUTE_MS);
        m.mark_grouping(&mut next);
        let why: Vec<_> = next.iter().map(|a| (a.alert_id.as_deref(), a.grouped_by.as_deref())).collect();
        let id = Some(raised[0].id.as_str());
        assert_eq!(why, [(id, Some(group::EFFECT)), (id, Some(group::SAME_SERVICE))]);
        let doc = serde_json::to_value(&next[0]).unwrap();
        assert_eq!(doc["anomaly.alert.grouped_by"], "effect");
    }

    #[test]
    fn where_a_run_began_tells_an_echo_from_a_new_problem() {
        let late = AlertConfig::default().reopen_within + 10 * MINUTE_MS;
        let sequential = |t: Millis, began: Millis| {
            let mut a = anomaly("orders", AnomalyKind::Errors, 75.0, t);
            a.metric = Some("errors.5xx_rate.sequential".into());
            a.evidence_start = Some(began);
            a
        };
        // A run that began while the alert still had evidence: the same problem, however late.
        let mut m = manager();
        let (first, _) = errors_then_quiet(&mut m, 100, i64::from(MIN_RECOVERED_WINDOWS));
        let again = m.ingest(&[sequential(late, MINUTE_MS)], late + MINUTE_MS);
        assert_eq!(again.len(), 1, "{again:?}");
        assert_eq!((again[0].id.as_str(), again[0].status), (first.id.as_str(), AlertStatus::Open));
        assert_eq!(m.raised(), 1);
        // A run that began after it ended, that late, is a problem of its own.
        let mut m = manager();
        let (first, _) = errors_then_quiet(&mut m, 100, i64::from(MIN_RECOVERED_WINDOWS));
        let new = m.ingest(&[sequential(late, late - 5 * MINUTE_MS)], late + MINUTE_MS);
        assert_eq!(new.len(), 1, "{new:?}");
        assert_ne!(new[0].id, first.id);
        assert_eq!(m.raised(), 2);
    }

    #[test]
    fn services_fed_by_one_caller_that_lose_traffic_together_share_an_alert_but_not_latency() {
        let mut m = manager();
        m.add_edge("gateway/aws".into(), "search/aws".into());
        let at = |service: &str, kind| anomaly(service, kind, 90.0, 0);
        m.ingest(&[at("orders", AnomalyKind::Traffic), at("search", AnomalyKind::Traffic)], MINUTE_MS);
        assert_eq!(m.raised(), 1, "one loss upstream of both");
        let mut m = manager();
        m.add_edge("gateway/aws".into(), "search/aws".into());
        m.ingest(&[at("orders", AnomalyKind::Latency), at("search", AnomalyKind::Latency)], MINUTE_MS);
        assert_eq!(m.raised(), 2, "latency does not travel between siblings");
    }

    #[test]
    fn a_flapping_origin_reopens_the_same_alert() {
        let mut m = manager();
        let first = m.ingest(&[anomaly("orders", AnomalyKind::Errors, 90.0, 0)], MINUTE_MS);
        let resolved = m.tick(8 * MINUTE_MS);
        assert_eq!(resolved[0].status, AlertStatus::Resolved);
        let again = m.ingest(&[anomaly("orders", AnomalyKind::Errors, 90.0, 10 * MINUTE_MS)], 11 * MINUTE_MS);
        assert_eq!(again[0].id, first[0].id);
        assert_eq!(again[0].status, AlertStatus::Open);
        assert_eq!(m.raised(), 1);
    }

    /// Lost traffic that began with an incident's own, while that goes on, joins it even on a
    /// service no caller links; one that began later is its own problem.
    #[test]
    fn lost_traffic_that_began_together_is_one_loss() {
        for (began, alerts) in [(MINUTE_MS, 1), (8 * MINUTE_MS, 2)] {
            let mut m = manager();
            for i in 0..10 {
                let t = i * MINUTE_MS;
                let mut window = vec![anomaly("orders", AnomalyKind::Traffic, 90.0, t)];
                window[0].evidence_start = Some(0);
                if i == 9 {
                    let mut quiet = anomaly("search", AnomalyKind::Traffic, 90.0, t);
                    quiet.evidence_start = Some(began);
                    window.push(quiet);
                }
                m.ingest(&window, t + MINUTE_MS);
            }
            assert_eq!(m.raised(), alerts, "run began at {began}");
        }
    }

    /// Lost traffic on a service upstream of an alert's ongoing losses, however late its run
    /// began, is where they come from: it joins. The same on a service no path links to them is
    /// a problem of its own, and so is the upstream service's loss once theirs has ended.
    #[test]
    fn lost_traffic_upstream_of_an_alert_s_ongoing_losses_joins_it() {
        for (late, losing_until, alerts) in [("gateway", 20, 1), ("search", 20, 2), ("gateway", 5, 2)] {
            let mut m = manager();
            for i in 0..20 {
                let t = i * MINUTE_MS;
                let mut window = Vec::new();
                if i < losing_until {
                    let mut lost = anomaly("payments", AnomalyKind::Traffic, 90.0, t);
                    lost.evidence_start = Some(0);
                    window.push(lost);
                }
                if i >= 15 {
                    let mut upstream = anomaly(late, AnomalyKind::Traffic, 90.0, t);
                    upstream.evidence_start = Some(12 * MINUTE_MS);
                    window.push(upstream);
                }
                m.ingest(&window, t + MINUTE_MS);
            }
            assert_eq!(m.raised(), alerts, "{late}, payments losing until window {losing_until}");
        }
    }

    /// After a resolved alert, its origin acting up with evidence of another kind is a new
    /// problem on it (a network delay after a CPU contention), not the old one flapping.
    #[test]
    fn an_origin_acting_up_in_a_new_way_after_its_alert_resolved_gets_a_new_alert() {
        let mut m = manager();
        let first = m.ingest(&[anomaly("orders", AnomalyKind::Latency, 90.0, 0)], MINUTE_MS);
        assert_eq!(m.tick(8 * MINUTE_MS)[0].status, AlertStatus::Resolved);
        let again = m.ingest(&[anomaly("orders", AnomalyKind::Errors, 90.0, 10 * MINUTE_MS)], 11 * MINUTE_MS);
        assert_ne!(again[0].id, first[0].id);
        assert_eq!(m.raised(), 2);
    }
}
