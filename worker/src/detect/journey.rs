//! Request journeys. Spans are gathered by trace id until the journey has been quiet for
//! [`JOURNEY_TIMEOUT`]; then each call hop (caller → callee, from parent and span ids) gets its
//! latency and its share of the journey's end-to-end latency. A hop far slower than its own
//! baseline, or the deepest failing call when the journey failed, marks the journey and names
//! that hop. Marked journeys are counted per hop and window, and a hop that marks a material share
//! of the journeys through it is reported, with example traces and the hops' latency shares.
//!
//! A hop also has a *wait*: how long the caller waited beyond the callee's own time, derived from
//! trace structure when only the callee's records exist (from the callee's end to the caller's
//! next call). A delay on the callee's outgoing packets, or on the
//! network between the two, leaves the callee's own duration unchanged and shows only here, so a
//! wait far above its baseline marks the hop and is attributed to the callee.
//!
//! After a caller's *last* call (a proxy or gateway has only one) the wait is the caller's end
//! minus the callee's end: the answer's way back, but also whatever the caller does last. One
//! trace cannot tell the two apart; a window can. When the calls of one caller route wait long
//! after one callee's answer while the same route's calls to its other callees do not, the time
//! is lost between that callee and the caller, and is attributed to the callee (a *tail wait*).
//! A caller slow at its own last step waits long after every callee it ends with.

use rustc_hash::FxHashMap;

use super::stats::{score_from_z, share_evidence, Ewm, WINDOW_EVIDENCE};
use super::{entity_label, fmt_ms, CallContext, Detector, Evicted, Finding, WindowContext};
use crate::model::anomaly::{Anomaly, AnomalyKind, Contributor};
use crate::model::time::Millis;
use crate::model::{EntityKey, HopRecord, Interner, JourneyRecord, Sym};

/// Quiet time after which a journey is considered complete.
pub const JOURNEY_TIMEOUT: Millis = 30_000;
/// Spans kept per journey (a runaway trace cannot grow memory without limit).
const MAX_SPANS: usize = 256;
/// Flagged journeys written per window (the anomaly counts them all).
const MAX_FLAGGED_PER_WINDOW: usize = 50;
/// The metric of a hop-wait finding (the alert manager knows it cannot be explained by callees).
pub const HOP_WAIT_METRIC: &str = "journey.hop_wait";
/// Calls a hop's wait baseline needs before it judges.
const WAIT_MIN_CALLS: u64 = 30;
/// A wait is marked when it is this many deviations above its usual (log scale) ...
const WAIT_Z: f64 = 4.0;
/// ... and at least this much longer, in milliseconds (a 2 ms wait becoming 9 ms is noise).
const WAIT_MIN_EXCESS_MS: f64 = 50.0;
/// Marked waits a hop needs in one window before it is reported.
const WAIT_MIN_MARKED: u64 = 3;
/// The sequential wait test (a hop with a call or two a minute never has three marked waits in
/// one window): marked waits are binomial with the hop's usual marked rate against
/// max(50%, 4x usual), a CUSUM with the traffic test's threshold (e^12), one window adding at
/// most a third of it.
const WAIT_SUM_THRESHOLD: f64 = 12.0;
pub const HOP_WAIT_SEQUENTIAL_METRIC: &str = "journey.hop_wait.sequential";
/// A caller's measured waits on one hop are long, for telling a starved caller, when their
/// median is this many times the hop's usual wait ...
const STARVED_FACTOR: f64 = 4.0;
/// ... and this much longer, in milliseconds.
const STARVED_MIN_EXCESS_MS: f64 = 20.0;

/// What a wait beyond the callee's own time is, when it can be told from the caller's.
const OUTSIDE: &str = ": time spent outside the service — its network or its pod's outgoing traffic";
/// The metric of a tail wait after the only callee of a caller route: the caller's own time or
/// the callee's answer on its way back, which records of the callee's side cannot tell apart.
/// It names the callee as a suspect beside the caller, never alone.
pub const UNRESOLVED_WAIT_METRIC: &str = "journey.tail_wait.unresolved";

/// Whether a finding is a tail wait that could be the caller's own time (see
/// [`UNRESOLVED_WAIT_METRIC`]).
pub fn is_unresolved_wait(a: &Anomaly) -> bool {
    a.metric.as_deref() == Some(UNRESOLVED_WAIT_METRIC)
}

/// Whether a finding is about time a hop's callers waited outside the callee (one window's or
/// the sequential test's).
pub fn is_hop_wait(a: &Anomaly) -> bool {
    matches!(a.metric.as_deref(), Some(HOP_WAIT_METRIC | HOP_WAIT_SEQUENTIAL_METRIC))
}

/// What is learned per hop.
#[derive(serde::Serialize, serde::Deserialize, Clone, Default)]
struct HopState {
    key: Option<EntityKey>,
    /// Log-latency of the callee's own duration.
    lat: Ewm,
    /// Failure rate.
    fail: Ewm,
    /// Log of (1 + the caller's wait beyond the callee's time, ms).
    wait: Ewm,
    /// How often a wait is marked in normal times (the false-mark rate a window is judged by).
    wait_marked: Ewm,
    /// The same two for the tail wait (after the caller's last call).
    #[serde(default)]
    tail_wait: Ewm,
    #[serde(default)]
    tail_marked: Ewm,
    /// The sequential wait test: its sum, the windows since it left zero, and the waits and
    /// marked waits in them.
    #[serde(default)]
    wait_sum: f64,
    #[serde(default)]
    wait_run: u32,
    #[serde(default)]
    run_waited: u64,
    #[serde(default)]
    run_marked: u64,
}

impl HopState {
    /// Adds a window of `marked` long waits among `waited` to the sequential test; the sum when
    /// it is past its threshold.
    fn add_waits(&mut self, waited: u64, marked: u64) -> Option<f64> {
        if waited == 0 || self.wait.n < WAIT_MIN_CALLS {
            return None;
        }
        let p0 = self.wait_marked.mean.clamp(0.005, 0.5);
        let p1 = (4.0 * p0).clamp(0.5, 0.95);
        let llr = super::sequential::binomial_llr(marked, waited, p0, p1);
        self.wait_sum = (self.wait_sum + llr.min(WAIT_SUM_THRESHOLD / 3.0)).clamp(0.0, 1.5 * WAIT_SUM_THRESHOLD);
        if self.wait_sum == 0.0 {
            (self.wait_run, self.run_waited, self.run_marked) = (0, 0, 0);
            return None;
        }
        self.wait_run += 1;
        self.run_waited += waited;
        self.run_marked += marked;
        (self.wait_sum >= WAIT_SUM_THRESHOLD).then_some(self.wait_sum)
    }
}

/// Waits of one hop within one window: derived, marked, their values, example traces.
#[derive(serde::Serialize, serde::Deserialize, Default)]
struct WaitTally {
    waited: u64,
    marked: u64,
    waits: Vec<f64>,
    traces: Vec<String>,
    /// Tail waits whose caller made other calls too in its journey (so the route does not
    /// call this service alone).
    #[serde(default)]
    besides: u64,
}

/// A caller node and the route it served: tail waits are compared within one.
type CallerRoute = ((Sym, Sym), Sym);

#[derive(serde::Serialize, serde::Deserialize, Clone, Copy)]
struct Span {
    span: u64,
    node: (Sym, Sym),
    route: Sym,
    parent: Option<u64>,
    hop: Option<u32>,
    /// When the call started (for the waterfall of a journey document).
    start: Millis,
    duration_ms: f64,
    failed: bool,
    /// What the caller waited beyond this call's own time, from the caller's record of the call
    /// (network and the callee's queue): measured, so neither derived nor ambiguous.
    #[serde(default)]
    measured_wait: Option<f64>,
    /// Its caller was scored by another partition of the job.
    #[serde(default)]
    caller_elsewhere: bool,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Journey {
    trace_id: String,
    user_id: Option<String>,
    start: Millis,
    last_seen: Millis,
    spans: Vec<Span>,
    /// A span came without a duration (a log with no timing): the journey's paths and failures
    /// are judged, its times are not.
    #[serde(default)]
    untimed: bool,
}

/// A completed journey kept for a document until the window closes.
#[derive(serde::Serialize, serde::Deserialize)]
struct Kept {
    journey: Journey,
    total_ms: f64,
    failed: bool,
    /// The flagged hop, and whether it failed (else: slow).
    marked: Option<(u32, bool)>,
}

#[derive(serde::Serialize, serde::Deserialize, Default)]
struct HopWindow {
    journeys: u64,
    slow: u64,
    failing: u64,
    durations: Vec<f64>,
    shares: Vec<f64>,
    /// Calls whose wait could be derived, those marked, and the waits (ms).
    waited: u64,
    slow_wait: u64,
    waits: Vec<f64>,
    wait_traces: Vec<String>,
    /// Of `waited`, those measured from the caller's record of the call.
    #[serde(default)]
    measured: u64,
    traces: Vec<String>,
    users: FxHashMap<String, ()>,
    /// The first marked journey's hops: (hop entity, duration ms, share of the journey), so the
    /// anomaly can show where one example journey spent its time.
    example: Vec<(u32, f64, f64)>,
}

/// The journey detector.
#[derive(serde::Serialize, serde::Deserialize)]
pub struct JourneyDetector {
    open: FxHashMap<u64, Journey>,
    /// Open journeys at most (`limits.max_open_journeys`): spans of a new trace beyond it are
    /// not followed (counted in `untracked`) until journeys finish.
    pub max_open: usize,
    pub untracked: u64,
    /// Per hop entity: the hop's key, log-latency baseline and failure-rate baseline.
    hops: FxHashMap<u32, HopState>,
    window: FxHashMap<u32, HopWindow>,
    /// Tail waits of this window, per caller route and hop.
    #[serde(default)]
    tails: FxHashMap<(CallerRoute, u32), WaitTally>,
    scratch: Vec<bool>,
    /// Flagged journeys of this window (capped), and the slowest per entry service.
    flagged: Vec<Kept>,
    slowest: FxHashMap<(Sym, Sym), Kept>,
    records: Vec<JourneyRecord>,
}

impl Default for JourneyDetector {
    fn default() -> Self {
        JourneyDetector {
            open: FxHashMap::default(),
            max_open: crate::pipeline::EntityLimits::default().max_open_journeys,
            untracked: 0,
            hops: FxHashMap::default(),
            window: FxHashMap::default(),
            tails: FxHashMap::default(),
            scratch: Vec::new(),
            flagged: Vec::new(),
            slowest: FxHashMap::default(),
            records: Vec::new(),
        }
    }
}

/// The entry call: the span whose parent is not in the journey.
fn root_of(spans: &[Span]) -> Option<&Span> {
    spans.iter().find(|s| s.parent.is_none_or(|p| !spans.iter().any(|x| x.span == p)))
}

impl JourneyDetector {
    /// Keeps a finished journey for a document if it was flagged or is its entry's slowest yet.
    fn keep(&mut self, j: &Journey, total_ms: f64, failed: bool, marked: Option<(u32, bool)>) {
        let Some(root) = root_of(&j.spans) else { return };
        // A part of a journey entered in another partition: the partition holding the entry
        // writes the journey's document (one per journey, whoever scored which part).
        if root.caller_elsewhere {
            return;
        }
        let kept = || Kept {
            journey: Journey {
                trace_id: j.trace_id.clone(),
                user_id: j.user_id.clone(),
                start: j.start,
                last_seen: j.last_seen,
                spans: j.spans.clone(),
                untimed: j.untimed,
            },
            total_ms,
            failed,
            marked,
        };
        if marked.is_some() {
            if self.flagged.len() < MAX_FLAGGED_PER_WINDOW {
                self.flagged.push(kept());
            }
            return;
        }
        let slower = self.slowest.get(&root.node).is_none_or(|k| total_ms > k.total_ms);
        if slower {
            self.slowest.insert(root.node, kept());
        }
    }

    fn record(&self, k: Kept, names: &Interner) -> JourneyRecord {
        let j = k.journey;
        let label = |n: (Sym, Sym)| super::node_label(names, n);
        let root = root_of(&j.spans).copied();
        let mut services: Vec<String> = Vec::new();
        let mut providers: Vec<String> = Vec::new();
        for s in &j.spans {
            let l = label(s.node);
            if !services.contains(&l) {
                services.push(l);
            }
            let p = names.name(s.node.1).to_owned();
            if !providers.contains(&p) {
                providers.push(p);
            }
        }
        let mut hops = Vec::new();
        let mut cross = 0;
        for s in &j.spans {
            let Some(hop) = s.hop else { continue };
            let Some(HopState {
                key: Some(EntityKey::Hop { from, to }),
                ..
            }) = self.hops.get(&hop)
            else {
                continue;
            };
            let cross_provider = from.1 != to.1;
            cross += u32::from(cross_provider);
            hops.push(HopRecord {
                from: label(*from),
                to: label(*to),
                start_ms: (s.start - j.start) as f64,
                duration_ms: super::round3(s.duration_ms),
                share: super::round3(s.duration_ms / k.total_ms),
                failed: s.failed,
                cross_provider,
            });
        }
        let (marked, marked_hop) = match k.marked {
            Some((hop, failing)) => (
                if failing { "failing_hop" } else { "slow_hop" },
                self.hops.get(&hop).and_then(|h| h.key.as_ref()).map(|key| entity_label(names, key)),
            ),
            None => ("slowest", None),
        };
        let (node, route) = root.map_or(((Sym(0), Sym(0)), Sym(0)), |r| (r.node, r.route));
        JourneyRecord {
            timestamp: j.start,
            id: Anomaly::make_id(&["journey", &j.trace_id, &j.start.to_string()]),
            trace_id: j.trace_id,
            user_id: j.user_id,
            service: names.name(node.0).to_owned(),
            provider: names.name(node.1).to_owned(),
            route: names.name(route).to_owned(),
            duration_ms: super::round3(k.total_ms),
            spans: j.spans.len() as u32,
            services,
            providers,
            cross_provider_hops: cross,
            failed: k.failed,
            marked: marked.to_owned(),
            marked_hop,
            hops,
        }
    }

    fn finish(&mut self, j: Journey) {
        // Journeys are small: a linear scan finds a parent faster than building a map.
        let index_of = |span: u64| j.spans.iter().position(|s| s.span == span);
        let Some(root) = root_of(&j.spans) else { return };
        let total = root.duration_ms.max(1e-3);
        let failed_journey = root.failed;
        // The deepest failing call: failed, and none of its children failed.
        let has_failing_child = &mut self.scratch;
        has_failing_child.clear();
        has_failing_child.resize(j.spans.len(), false);
        if failed_journey {
            for s in j.spans.iter().filter(|s| s.failed) {
                if let Some(pi) = s.parent.and_then(index_of) {
                    has_failing_child[pi] = true;
                }
            }
        }
        let has_failing_child = std::mem::take(has_failing_child);
        // What each call took beyond its usual, and what its caller waited beyond the usual
        // wait; a call's *own* excess is its excess minus what its callees explain, so the slow
        // hop named is where the time was lost, not the first caller that had to wait for it.
        let waits = waits_of(&j.spans);
        let usual_excess = |s: &Span, wait: Option<f64>| -> (f64, f64) {
            let Some(h) = s.hop.and_then(|hop| self.hops.get(&hop)) else {
                return (0.0, 0.0);
            };
            let own = if h.lat.n >= 50 {
                (s.duration_ms - h.lat.mean.exp()).max(0.0)
            } else {
                0.0
            };
            let wait = match wait {
                Some(w) if h.wait.n >= WAIT_MIN_CALLS => (w - h.wait.mean.exp_m1()).max(0.0),
                _ => 0.0,
            };
            (own, wait)
        };
        let excess: Vec<(f64, f64)> = j.spans.iter().zip(&waits).map(|(s, w)| usual_excess(s, *w)).collect();
        let mut explained = vec![0.0; j.spans.len()];
        for (s, (own, wait)) in j.spans.iter().zip(&excess) {
            if let Some(pi) = s.parent.and_then(index_of) {
                explained[pi] += own + wait;
            }
        }
        let mut marked: Option<(u32, bool)> = None;
        let mut worst_excess = 0.0;
        for (i, s) in j.spans.iter().enumerate() {
            let Some(hop) = s.hop else { continue };
            let Some(HopState { lat, fail, .. }) = self.hops.get(&hop) else {
                continue;
            };
            let w = self.window.entry(hop).or_default();
            w.journeys += 1;
            if !j.untimed {
                w.durations.push(s.duration_ms);
                w.shares.push(s.duration_ms / total);
            }
            if j.untimed {
                // Without times only a failure can be placed; warm by the hop's own failure count.
                if fail.n >= 50 && failed_journey && s.failed && !has_failing_child[i] && fail.mean < 0.2 && marked.is_none_or(|(_, f)| !f)
                {
                    marked = Some((hop, true));
                }
                continue;
            }
            if lat.n < 50 {
                continue;
            }
            let ln = s.duration_ms.max(1e-3).ln();
            let z = (ln - lat.mean) / lat.std().max(0.15);
            let excess = excess[i].0 - explained[i];
            if z >= 4.0 && excess > 20.0 && excess > worst_excess {
                worst_excess = excess;
                marked = Some((hop, false));
            }
            if failed_journey && s.failed && !has_failing_child[i] && fail.mean < 0.2 && marked.is_none_or(|(_, f)| !f) {
                marked = Some((hop, true));
            }
        }
        for s in &j.spans {
            let Some(hop) = s.hop else { continue };
            if let Some(HopState { lat, fail, .. }) = self.hops.get_mut(&hop) {
                let is_marked = marked.is_some_and(|(h, _)| h == hop);
                if !is_marked && !j.untimed {
                    lat.update(s.duration_ms.max(1e-3).ln(), 0.01);
                }
                fail.update(if s.failed { 1.0 } else { 0.0 }, 0.01);
            }
        }
        self.scratch = has_failing_child;
        if !j.untimed {
            self.judge_waits(&j, &waits);
            self.judge_tails(&j);
        }
        self.keep(&j, total, failed_journey, marked);
        if let Some((hop, failing)) = marked {
            let w = self.window.entry(hop).or_default();
            if failing {
                w.failing += 1;
            } else {
                w.slow += 1;
            }
            if w.traces.len() < 3 {
                w.traces.push(j.trace_id.clone());
            }
            if w.example.is_empty() {
                w.example = j
                    .spans
                    .iter()
                    .filter_map(|s| s.hop.map(|h| (h, s.duration_ms, s.duration_ms / total)))
                    .collect();
            }
            if let Some(u) = &j.user_id {
                w.users.insert(u.clone(), ());
            }
        }
    }
}

/// Each span's wait (see the module doc): from its end to its caller's next call that starts
/// after it. `None` for the entry call and for a caller's last call: what a caller does after
/// its last call returns is as likely its own work as a late answer.
fn waits_of(spans: &[Span]) -> Vec<Option<f64>> {
    let end = |s: &Span| s.start as f64 + s.duration_ms;
    spans
        .iter()
        .map(|s| {
            s.parent?;
            if s.measured_wait.is_some() {
                return s.measured_wait;
            }
            let done = end(s);
            let next = spans
                .iter()
                .filter(|c| c.parent == s.parent && c.span != s.span && c.start as f64 >= done)
                .map(|c| c.start as f64)
                .reduce(f64::min)?;
            Some((next - done).max(0.0))
        })
        .collect()
}

/// Each span's tail wait: when it is its caller's last call, the caller's end minus its end.
fn tails_of(spans: &[Span]) -> Vec<Option<(usize, f64)>> {
    let end = |s: &Span| s.start as f64 + s.duration_ms;
    spans
        .iter()
        .map(|s| {
            if s.measured_wait.is_some() {
                // Measured: nothing to tell apart (see `waits_of`).
                return None;
            }
            let parent = s.parent?;
            let pi = spans.iter().position(|c| c.span == parent)?;
            let done = end(s);
            let later = spans
                .iter()
                .any(|c| c.parent == s.parent && c.span != s.span && c.start as f64 >= done);
            if later {
                return None;
            }
            Some((pi, (end(&spans[pi]) - done).max(0.0)))
        })
        .collect()
}

/// Whether a wait is far beyond a hop's usual (see [`WAIT_Z`], [`WAIT_MIN_EXCESS_MS`]).
fn is_long_wait(usual: &Ewm, wait: f64) -> bool {
    usual.n >= WAIT_MIN_CALLS
        && (wait.ln_1p() - usual.mean) / usual.std().max(0.25) >= WAIT_Z
        && wait - usual.mean.exp_m1() >= WAIT_MIN_EXCESS_MS
}

impl JourneyDetector {
    /// Callers whose measured waits were long on most of the hops they called this window (at
    /// least two): a caller starved of CPU or connections queues every request it sends, so
    /// its records of its calls grow whoever it calls. A hop's waits are long when their median
    /// is at least [`STARVED_FACTOR`] times its usual and [`STARVED_MIN_EXCESS_MS`] more. Only
    /// measured waits count here; derived ones are told apart within each journey
    /// (`judge_waits`).
    fn discount_starved_callers(&self, hops: &mut [(u32, HopWindow)]) {
        let starved = self.starved_callers(hops);
        if starved.is_empty() {
            return;
        }
        for (hop, hw) in hops {
            if let Some(EntityKey::Hop { from, .. }) = self.hops.get(hop).and_then(|h| h.key) {
                if starved.contains(&from) {
                    // The caller's own queue: its waits say nothing of this callee.
                    hw.slow_wait = 0;
                    hw.wait_traces.clear();
                }
            }
        }
    }

    /// The starved callers of this window (see `discount_starved_callers`), sorted.
    fn starved_callers(&self, hops: &[(u32, HopWindow)]) -> Vec<(Sym, Sym)> {
        let mut per_caller: FxHashMap<(Sym, Sym), (u32, u32)> = FxHashMap::default();
        for (hop, hw) in hops {
            if hw.measured == 0 || 2 * hw.measured < hw.waited {
                continue;
            }
            let Some(h) = self.hops.get(hop).filter(|h| h.wait.n >= WAIT_MIN_CALLS) else {
                continue;
            };
            let Some(EntityKey::Hop { from, .. }) = h.key else { continue };
            let usual = h.wait.mean.exp_m1();
            let median = super::stats::median_in_place(&mut hw.waits.clone());
            let e = per_caller.entry(from).or_default();
            e.0 += 1;
            e.1 += u32::from(median >= STARVED_FACTOR * usual && median - usual >= STARVED_MIN_EXCESS_MS);
        }
        let mut out: Vec<(Sym, Sym)> = per_caller
            .into_iter()
            .filter(|&(_, (hops, long))| long >= 2 && 2 * long >= hops)
            .map(|(c, _)| c)
            .collect();
        out.sort_unstable();
        out
    }

    /// Tallies and learns the tail waits of a finished journey (judged per window, see the
    /// module doc).
    fn judge_tails(&mut self, j: &Journey) {
        // Calls each span made, counted once for the journey.
        let mut calls_made: FxHashMap<u64, u32> = FxHashMap::default();
        for parent in j.spans.iter().filter_map(|c| c.parent) {
            *calls_made.entry(parent).or_default() += 1;
        }
        for (s, tail) in j.spans.iter().zip(tails_of(&j.spans)) {
            let (Some(hop), Some((pi, wait))) = (s.hop, tail) else { continue };
            let Some(h) = self.hops.get_mut(&hop) else { continue };
            let marked = is_long_wait(&h.tail_wait, wait);
            if !marked {
                h.tail_wait.update(wait.ln_1p(), 0.01);
            }
            if h.tail_wait.n >= WAIT_MIN_CALLS {
                h.tail_marked.update(if marked { 1.0 } else { 0.0 }, 0.01);
            }
            let caller = &j.spans[pi];
            let t = self.tails.entry(((caller.node, caller.route), hop)).or_default();
            t.waited += 1;
            t.besides += u64::from(calls_made.get(&caller.span).copied().unwrap_or(0) > 1);
            t.waits.push(wait);
            if marked {
                t.marked += 1;
                if t.traces.len() < 3 {
                    t.traces.push(j.trace_id.clone());
                }
            }
        }
    }

    /// Tail-wait findings of the window: a hop whose caller route waited long after its answers
    /// while the same route's calls to other callees did not.
    fn tail_findings(&mut self, w: &WindowContext<'_>, reported: &[u32], out: &mut Vec<Anomaly>) {
        let mut tails: Vec<_> = std::mem::take(&mut self.tails).into_iter().collect();
        tails.sort_by_key(|((caller, hop), _)| (*caller, *hop));
        for i in 0..tails.len() {
            let ((caller, hop), t) = &tails[i];
            if reported.contains(hop) || t.marked < WAIT_MIN_MARKED || (t.marked as f64) < 0.2 * t.waited as f64 {
                continue;
            }
            let (others_n, others_marked) = tails
                .iter()
                .filter(|((c, h), _)| c == caller && h != hop)
                .fold((0, 0), |(n, k), (_, o)| (n + o.waited, k + o.marked));
            let share = t.marked as f64 / t.waited as f64;
            let others_share = others_marked as f64 / others_n.max(1) as f64;
            // The other callees must have been answered often enough to show they were not
            // waited on, and clearly less than this one. A route that calls no other service
            // cannot tell: the wait is reported as unresolved (below).
            let alone = others_n == 0 && t.besides == 0;
            if !alone && (others_n < 2 * WAIT_MIN_MARKED || others_share >= 0.2 || others_share >= 0.5 * share) {
                continue;
            }
            let Some(h) = self.hops.get(hop) else { continue };
            let tally = WaitTally {
                waited: t.waited,
                marked: t.marked,
                waits: t.waits.clone(),
                traces: t.traces.clone(),
                besides: t.besides,
            };
            let after = if alone {
                "after its answer, the only service the caller route called; the caller's own last step or this \
                 answer's way back, which records of the callee's side alone cannot tell apart (the caller's \
                 client-side records would)"
                    .to_owned()
            } else {
                format!(
                    "after its answer, as the caller's last call; the same caller route's calls to other services waited \
                     so on {others_marked} of {others_n}{OUTSIDE}"
                )
            };
            if let Some(mut a) = wait_finding(h, tally, (&h.tail_wait, &h.tail_marked), &after, w) {
                if alone {
                    // A suspect beside the caller, never an alert of its own.
                    a.metric = Some(UNRESOLVED_WAIT_METRIC.to_owned());
                    a.weight = crate::model::anomaly::Weight::Corroborates;
                }
                out.push(a);
            }
        }
    }

    /// Judges and learns the wait of every hop of a finished journey.
    fn judge_waits(&mut self, j: &Journey, waits: &[Option<f64>]) {
        let is_long = |h: &HopState, wait: f64| is_long_wait(&h.wait, wait);
        let long: Vec<bool> = j
            .spans
            .iter()
            .zip(waits)
            .map(|(s, w)| match (s.hop.and_then(|hop| self.hops.get(&hop)), w) {
                (Some(h), Some(w)) => is_long(h, *w),
                _ => false,
            })
            .collect();
        for (i, (s, wait)) in j.spans.iter().zip(waits.iter().copied()).enumerate() {
            let (Some(hop), Some(wait)) = (s.hop, wait) else { continue };
            // A caller can have lost the time itself after a call returned as well as waited for
            // the answer. Only a caller with several calls tells the two apart: a long wait after
            // one of them, the others as usual, is the callee's; long waits after most of them are
            // the caller's own slowness (its latency is judged as its own).
            // A measured wait needs no sibling to be told apart from the caller's own work (its
            // record covers the call only), but long waits on most calls of one caller are still
            // the caller's (a starved client queues every request).
            let siblings: Vec<usize> = (0..j.spans.len()).filter(|&k| j.spans[k].parent == s.parent).collect();
            let long_siblings = siblings.iter().filter(|&&k| long[k]).count();
            let alone = siblings.len() < 2 && s.measured_wait.is_none();
            if alone || (long_siblings >= 2 && 2 * long_siblings >= siblings.len()) {
                continue;
            }
            let Some(h) = self.hops.get_mut(&hop) else { continue };
            let x = wait.ln_1p();
            let marked = long[i];
            let w = self.window.entry(hop).or_default();
            w.waited += 1;
            w.measured += u64::from(s.measured_wait.is_some());
            w.waits.push(wait);
            if marked {
                w.slow_wait += 1;
                if w.wait_traces.len() < 3 {
                    w.wait_traces.push(j.trace_id.clone());
                }
            } else {
                h.wait.update(x, 0.01);
            }
            if h.wait.n >= WAIT_MIN_CALLS {
                h.wait_marked.update(if marked { 1.0 } else { 0.0 }, 0.01);
            }
        }
    }
}

/// A hop whose callers waited far longer than usual beyond the callee's own time, on more calls
/// than its usual rate of such waits explains. `usual` holds the hop's wait baseline and its
/// usual rate of marked waits; `where_` says which wait it is.
fn wait_finding(h: &HopState, mut tally: WaitTally, usual: (&Ewm, &Ewm), where_: &str, w: &WindowContext<'_>) -> Option<Anomaly> {
    let (wait, wait_marked) = usual;
    let k = tally.marked;
    let n = tally.waited;
    if k < WAIT_MIN_MARKED || (k as f64) < 0.2 * n as f64 {
        return None;
    }
    let key = h.key?;
    let p0 = wait_marked.mean.clamp(0.005, 0.5);
    // A few long waits a window are what a busy hop has now and then (a pause, a retransmit);
    // they add up in the sequential test instead.
    if share_evidence(k, n, p0) < WINDOW_EVIDENCE {
        return None;
    }
    let z = (k as f64 - n as f64 * p0) / (n as f64 * p0 * (1.0 - p0)).sqrt();
    let med = super::stats::median_in_place(&mut tally.waits);
    let typical = wait.mean.exp_m1();
    // How far the typical wait moved (log scale, as latency is judged), weighed by the share
    // of calls that waited; and no more than the count of such waits supports.
    let shift = (med.ln_1p() - wait.mean) / wait.std().max(0.25);
    let z = z.min(shift.max(0.0) * (k as f64 / n as f64).sqrt() + 4.0);
    let mut f = Finding::new(AnomalyKind::Journey, "journey", key, (w.start, w.end));
    f.score = score_from_z(z.min(40.0)).max(40.0);
    f.metric = HOP_WAIT_METRIC;
    f.actual = Some(med);
    f.expected = Some(typical);
    let label = entity_label(w.names, &key);
    let callee = super::node_label(w.names, key.owner());
    f.reason = format!(
        "on {k} of {n} calls over the hop {label} the caller waited {} beyond {callee}'s own time (usually {}){where_}",
        fmt_ms(med),
        fmt_ms(typical)
    );
    f.sole_contributor(med, typical);
    f.contributors[0].name = format!("wait on {label}");
    f.impact_calls = k;
    f.trace_ids = tally.traces;
    Some(f.into_anomaly(w.names))
}

/// A hop whose long waits added up over the run of windows (see [`WAIT_SUM_THRESHOLD`]).
fn sequential_wait_finding(h: &HopState, sum: f64, median: f64, traces: Vec<String>, w: &WindowContext<'_>) -> Option<Anomaly> {
    let key = h.key?;
    let typical = h.wait.mean.exp_m1();
    let mut f = Finding::new(AnomalyKind::Journey, "journey", key, (w.start, w.end));
    f.score = super::sequential::score_of(sum, WAIT_SUM_THRESHOLD);
    f.metric = HOP_WAIT_SEQUENTIAL_METRIC;
    f.actual = Some(median);
    f.expected = Some(typical);
    let label = entity_label(w.names, &key);
    let callee = super::node_label(w.names, key.owner());
    f.reason = format!(
        "on {} of {} calls over the hop {label} in the last {} windows the caller waited far beyond {callee}'s own time \
         (this window's median wait {}, usually {}; usually {:.1}% of waits are that long; sequential test: evidence e^{sum:.0}): \
         time spent outside the service — its network or its pod's outgoing traffic",
        h.run_marked,
        h.run_waited,
        h.wait_run,
        fmt_ms(median),
        fmt_ms(typical),
        h.wait_marked.mean * 100.0
    );
    f.sole_contributor(median, typical);
    f.contributors[0].name = format!("wait on {label}");
    f.run_of(h.wait_run);
    f.impact_calls = h.run_marked;
    f.trace_ids = traces;
    Some(f.into_anomaly(w.names))
}

impl Detector for JourneyDetector {
    fn name(&self) -> &'static str {
        "journey"
    }

    fn forget(&mut self, evicted: &Evicted) {
        // Open journeys last seconds to minutes; eviction waits far longer, so none refers to
        // an evicted hop.
        self.hops.retain(|id, _| !evicted.id(*id));
        self.window.retain(|id, _| !evicted.id(*id));
        self.tails.retain(|(_, id), _| !evicted.id(*id));
    }

    fn take_journeys(&mut self, out: &mut Vec<JourneyRecord>) {
        out.append(&mut self.records);
    }

    fn untracked_journeys(&self) -> u64 {
        self.untracked
    }

    fn observe(&mut self, c: &CallContext<'_>) {
        let (Some(trace), Some(span)) = (c.trace, c.span) else { return };
        if let (Some(hop), Some(caller)) = (c.hop_entity, c.caller) {
            self.hops.entry(hop).or_insert_with(|| HopState {
                key: Some(EntityKey::Hop {
                    from: caller,
                    to: (c.service, c.provider),
                }),
                ..HopState::default()
            });
        }
        if self.open.len() >= self.max_open && !self.open.contains_key(&trace) {
            if self.untracked == 0 {
                tracing::warn!(
                    max = self.max_open,
                    "open journeys reached limits.max_open_journeys: new traces are not followed until journeys finish (counted)"
                );
            }
            self.untracked += 1;
            return;
        }
        let j = self.open.entry(trace).or_insert_with(|| Journey {
            trace_id: c.event.trace_id.as_deref().unwrap_or_default().to_owned(),
            user_id: None,
            start: c.event.timestamp,
            last_seen: c.event.timestamp,
            spans: Vec::with_capacity(8),
            untimed: false,
        });
        j.untimed |= c.event.duration_ns.is_none();
        j.last_seen = j.last_seen.max(c.event.timestamp);
        if j.user_id.is_none() {
            j.user_id = c.event.user_id.as_deref().map(str::to_owned);
        }
        if j.spans.len() < MAX_SPANS {
            j.spans.push(Span {
                span,
                node: (c.service, c.provider),
                route: c.route,
                parent: c.parent,
                hop: c.hop_entity,
                start: c.event.timestamp,
                duration_ms: c.event.duration_ms().unwrap_or(0.0),
                failed: c.event.is_5xx(),
                measured_wait: c
                    .caller_waited_ms
                    .zip(c.event.duration_ms())
                    .map(|(waited, own)| (waited - own).max(0.0)),
                caller_elsewhere: c.caller_elsewhere,
            });
        }
    }

    fn close_window(&mut self, w: &WindowContext<'_>, out: &mut Vec<Anomaly>) {
        let cutoff = w.end - JOURNEY_TIMEOUT;
        let mut done: Vec<(Millis, u64)> = self
            .open
            .iter()
            .filter(|(_, j)| j.last_seen < cutoff)
            .map(|(k, j)| (j.last_seen, *k))
            .collect();
        // In a fixed order, not the map's: a map rebuilt from a checkpoint iterates differently,
        // and the order decides the examples kept and the order of baseline updates.
        done.sort_unstable();
        for (_, k) in done {
            if let Some(j) = self.open.remove(&k) {
                self.finish(j);
            }
        }
        let mut kept = std::mem::take(&mut self.flagged);
        let mut slowest: Vec<Kept> = std::mem::take(&mut self.slowest).into_values().collect();
        slowest.sort_by(|a, b| (a.journey.start, &a.journey.trace_id).cmp(&(b.journey.start, &b.journey.trace_id)));
        kept.append(&mut slowest);
        for k in kept {
            let r = self.record(k, w.names);
            self.records.push(r);
        }
        let mut hops: Vec<_> = std::mem::take(&mut self.window).into_iter().collect();
        hops.sort_by_key(|(h, _)| *h);
        self.discount_starved_callers(&mut hops);
        let mut reported = Vec::new();
        for (hop, mut hw) in hops {
            let tally = WaitTally {
                waited: hw.waited,
                marked: hw.slow_wait,
                waits: std::mem::take(&mut hw.waits),
                traces: std::mem::take(&mut hw.wait_traces),
                besides: 0,
            };
            if let Some(h) = self.hops.get_mut(&hop) {
                // The run's finding needs this window's waits after `wait_finding` took them:
                // copied only when the run crossed with a long wait in this window.
                let crossed = h
                    .add_waits(tally.waited, tally.marked)
                    .filter(|_| tally.marked > 0)
                    .map(|sum| (sum, super::stats::median_in_place(&mut tally.waits.clone()), tally.traces.clone()));
                let h = &*h;
                if let Some(a) = wait_finding(h, tally, (&h.wait, &h.wait_marked), OUTSIDE, w) {
                    reported.push(hop);
                    out.push(a);
                } else if let Some((sum, median, traces)) = crossed {
                    if let Some(a) = sequential_wait_finding(h, sum, median, traces, w) {
                        reported.push(hop);
                        out.push(a);
                    }
                }
            }
            let marked = hw.slow + hw.failing;
            if hw.journeys == 0 || marked < 5 || (marked as f64) < 0.2 * hw.journeys as f64 {
                continue;
            }
            let Some(HopState {
                key: Some(key), lat, fail, ..
            }) = self.hops.get(&hop)
            else {
                continue;
            };
            let frac = marked as f64 / hw.journeys as f64;
            let med = super::stats::median_in_place(&mut hw.durations);
            let share = super::stats::median_in_place(&mut hw.shares);
            let usual = lat.mean.exp();
            let label = entity_label(w.names, key);
            let cross = match key {
                EntityKey::Hop { from, to } if from.1 != to.1 => " cross-provider",
                _ => "",
            };
            let mut f = Finding::new(AnomalyKind::Journey, "journey", *key, (w.start, w.end));
            let z = frac * (hw.journeys as f64).sqrt() / (fail.mean.max(0.01)).sqrt();
            f.score = score_from_z(z.min(40.0)).max(40.0);
            if hw.failing >= hw.slow {
                f.metric = "journey.failing_hop";
                f.actual = Some(frac);
                f.expected = Some(fail.mean);
                f.reason = format!(
                    "in {marked} of {} journeys through the{cross} hop {label} this hop was the first to fail (usually {:.1}% of its calls fail)",
                    hw.journeys,
                    fail.mean * 100.0
                );
            } else {
                f.metric = "journey.slow_hop";
                f.actual = Some(med);
                f.expected = Some(usual);
                f.reason = format!(
                    "in {marked} of {} journeys the{cross} hop {label} was the slow step: median {} (usually {}), {:.0}% of the journey's latency",
                    hw.journeys,
                    fmt_ms(med),
                    fmt_ms(usual),
                    share * 100.0
                );
            }
            // The flagged hop across the window, then the hops of one example journey (the first
            // trace id) by their share of its latency, each against its own baseline.
            let mut example = hw.example;
            example.sort_by(|a, b| b.2.total_cmp(&a.2));
            f.contributors = std::iter::once(Contributor {
                name: label,
                share: super::round3(share),
                actual: Some(super::round3(med)),
                expected: Some(super::round3(usual)),
            })
            .chain(example.iter().take(4).filter_map(|&(h, d, sh)| {
                let HopState { key: Some(key), lat, .. } = self.hops.get(&h)? else {
                    return None;
                };
                Some(Contributor {
                    name: format!("example journey: {}", entity_label(w.names, key)),
                    share: super::round3(sh),
                    actual: Some(super::round3(d)),
                    expected: Some(super::round3(lat.mean.exp())),
                })
            }))
            .collect();
            f.impact_calls = marked;
            f.impact_users = hw.users.len() as u64;
            f.trace_ids = hw.traces;
            out.push(f.into_anomaly(w.names));
        }
        self.tail_findings(w, &reported, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Event, Interner, WindowStat};

    /// One call of a test journey: `node` called by `caller` over `hop` (its entity), started
    /// at `t`, taking `ms`; span ids are `trace * 10 + span`.
    struct Call {
        node: (Sym, Sym),
        caller: Option<(Sym, Sym)>,
        hop: Option<u32>,
        parent: Option<u64>,
        t: Millis,
        ms: f64,
        span: u64,
        /// The caller's record of the call: how long it waited.
        waited: Option<f64>,
    }

    fn observe(d: &mut JourneyDetector, names: &Interner, route: Sym, trace: u64, c: Call) {
        let ev = Event {
            timestamp: c.t,
            trace_id: Some(format!("t{trace}").into()),
            duration_ns: Some((c.ms * 1e6) as u64),
            status: 200,
            ..Default::default()
        };
        d.observe(&CallContext {
            event: &ev,
            service: c.node.0,
            provider: c.node.1,
            route,
            route_entity: 0,
            caller: c.caller,
            hop_entity: c.hop,
            user: None,
            trace: Some(trace),
            span: Some(trace * 10 + c.span),
            parent: c.parent.map(|p| trace * 10 + p),
            caller_waited_ms: c.waited,
            caller_elsewhere: false,
            names,
        });
    }

    /// Closes the window of `minute`.
    fn close_minute(d: &mut JourneyDetector, names: &Interner, minute: i64, out: &mut Vec<Anomaly>) {
        let stats: Vec<WindowStat> = Vec::new();
        let w = WindowContext {
            start: minute * 60_000,
            end: (minute + 1) * 60_000,
            stats: &stats,
            names,
            complete: true,
        };
        d.close_window(&w, out);
    }

    /// Feeds journeys gateway/onprem → payments/aws → ledger/onprem; `slow_payments` adds
    /// latency on the first hop from minute 30 on.
    fn run(slow_payments: f64) -> Vec<Anomaly> {
        let mut names = Interner::default();
        let gw = (names.intern("gateway"), names.intern("onprem"));
        let pay = (names.intern("payments"), names.intern("aws"));
        let led = (names.intern("ledger"), names.intern("onprem"));
        let route = names.intern("/x");
        let mut d = JourneyDetector::default();
        let mut out = Vec::new();
        for minute in 0..40i64 {
            for k in 0..30u64 {
                let t = minute * 60_000 + k as i64 * 1000;
                let trace = minute as u64 * 1000 + k;
                let jitter = (k % 5) as f64;
                let extra = if minute >= 30 { slow_payments } else { 0.0 };
                let pay_ms = 60.0 + jitter + extra;
                let spans = [
                    (gw, None, None, 10.0 + pay_ms, 1u64),
                    (pay, Some(gw), Some(1u64), pay_ms, 2u64),
                    (led, Some(pay), Some(2u64), 20.0 + jitter, 3u64),
                ];
                for (i, (node, caller, parent, ms, span)) in spans.into_iter().enumerate() {
                    let hop = caller.map(|c: (Sym, Sym)| if c == gw { 1 } else { 2 });
                    let call = Call {
                        node,
                        caller,
                        hop,
                        parent,
                        t: t + i as i64,
                        ms,
                        span,
                        waited: None,
                    };
                    observe(&mut d, &names, route, trace, call);
                }
            }
            close_minute(&mut d, &names, minute, &mut out);
        }
        out
    }

    use crate::model::Sym;

    /// Journeys gateway → {auth, orders}: gateway calls auth, then orders, then ends. From
    /// minute 30 the answer of `late` reaches gateway `delay` ms after `late` finished, while
    /// every service's own duration stays the same.
    fn run_waits(late: &str, delay: f64) -> Vec<Anomaly> {
        run_waits_of(late, delay, 20, (40, 30))
    }

    /// `per_minute` journeys a minute for `minutes`, `late` delayed from minute `from`.
    fn run_waits_of(late: &str, delay: f64, per_minute: u64, (minutes, from): (i64, i64)) -> Vec<Anomaly> {
        let mut names = Interner::default();
        let p = names.intern("onprem");
        let gw = (names.intern("gateway"), p);
        let auth = (names.intern("auth"), p);
        let orders = (names.intern("orders"), p);
        let route = names.intern("/x");
        let mut d = JourneyDetector::default();
        let mut out = Vec::new();
        for minute in 0..minutes {
            for k in 0..per_minute {
                let t = minute * 60_000 + k as i64 * 2000;
                let trace = minute as u64 * 1000 + k;
                let jitter = ((minute as u64 + k) % 4) as i64;
                let extra = |who: &str| if minute >= from && who == late { delay as i64 } else { 0 };
                // (node, caller, parent span, start offset ms, duration ms, span)
                let auth_start = 2 + jitter;
                let auth_end = auth_start + 10;
                let orders_start = auth_end + 2 + extra("auth");
                let orders_end = orders_start + 30;
                let gw_end = orders_end + 3 + extra("orders");
                let spans = [
                    (gw, None, None, 0, gw_end, 1u64),
                    (auth, Some(gw), Some(1u64), auth_start, 10, 2u64),
                    (orders, Some(gw), Some(1u64), orders_start, 30, 3u64),
                ];
                for (node, caller, parent, offset, ms, span) in spans {
                    let hop = caller.map(|_: (Sym, Sym)| if node == auth { 1 } else { 2 });
                    let call = Call {
                        node,
                        caller,
                        hop,
                        parent,
                        t: t + offset,
                        ms: ms as f64,
                        span,
                        waited: None,
                    };
                    observe(&mut d, &names, route, trace, call);
                }
            }
            close_minute(&mut d, &names, minute, &mut out);
        }
        out
    }

    /// One or two journeys a minute never have three marked waits in a window; the run of
    /// windows has, within a few minutes, and steady journeys add nothing up.
    #[test]
    fn waits_on_a_quiet_hop_add_up_over_windows() {
        for per_minute in [1, 2] {
            assert!(run_waits_of("auth", 0.0, per_minute, (240, 200)).is_empty(), "steady: nothing");
            let found = run_waits_of("auth", 400.0, per_minute, (240, 200));
            assert!(
                found.iter().all(|a| a.metric.as_deref() != Some(HOP_WAIT_METRIC)),
                "no window alone has enough: {found:?}"
            );
            let seq: Vec<&Anomaly> = found
                .iter()
                .filter(|a| a.metric.as_deref() == Some(HOP_WAIT_SEQUENTIAL_METRIC))
                .collect();
            let first = seq.first().unwrap_or_else(|| panic!("{per_minute} a minute: not found: {found:?}"));
            // Journeys finish 30 s after their last span, so a minute's waits are judged in the next.
            let at = first.window_start / 60_000;
            assert!((200..=206).contains(&at), "{per_minute} a minute: found at minute {at}");
            assert_eq!(first.service, "auth", "{}", first.reason);
            assert!(first.reason.contains("sequential test"), "{}", first.reason);
        }
    }

    #[test]
    fn a_wait_outside_the_callee_is_found_and_blamed_on_it() {
        assert!(run_waits("auth", 0.0).is_empty(), "steady journeys raise nothing");
        let found = run_waits("auth", 400.0);
        let waits: Vec<&Anomaly> = found.iter().filter(|a| a.metric.as_deref() == Some(HOP_WAIT_METRIC)).collect();
        assert!(!waits.is_empty(), "{found:?}");
        assert!(waits.iter().all(|a| a.service == "auth"), "{waits:?}");
        assert!(waits[0].reason.contains("waited"), "{}", waits[0].reason);
        assert!(waits[0].actual.unwrap() >= 400.0, "{:?}", waits[0].actual);
        // No callee's own duration changed: no slow hop is named.
        assert!(found.iter().all(|a| a.metric.as_deref() != Some("journey.slow_hop")), "{found:?}");
        // Time lost after the caller's last call may be the caller's own work: not blamed on it.
        let after_last = run_waits("orders", 400.0);
        assert!(after_last.iter().all(|a| a.service != "orders"), "{after_last:?}");
    }

    /// A gateway that only forwards: each request of its route goes to one of three services,
    /// and the gateway ends a few ms after the answer. From minute 30 the answer of `late`
    /// reaches the gateway `delay` ms late (or, with `late` = "gateway", the gateway itself is
    /// slow to finish after every answer).
    fn run_proxy(late: &str, delay: f64) -> Vec<Anomaly> {
        run_proxy_of(late, delay, false)
    }

    /// The same, where `measured` adds the gateway's own record of each call (an exit span):
    /// from minute 30 `late`'s answers take `delay` ms longer to reach the gateway (with
    /// `late` = "gateway", the gateway's requests queue that long in the gateway itself).
    fn run_proxy_of(late: &str, delay: f64, measured: bool) -> Vec<Anomaly> {
        let mut names = Interner::default();
        let p = names.intern("onprem");
        let gw = (names.intern("gateway"), p);
        let backends = [(names.intern("auth"), p), (names.intern("orders"), p), (names.intern("search"), p)];
        let route = names.intern("/*");
        let mut d = JourneyDetector::default();
        let mut out = Vec::new();
        for minute in 0..40i64 {
            for k in 0..30u64 {
                let t = minute * 60_000 + k as i64 * 2000;
                let trace = minute as u64 * 1000 + k;
                let b = (k % 3) as usize;
                let name = ["auth", "orders", "search"][b];
                let extra = if minute >= 30 && (late == name || late == "gateway") {
                    delay as i64
                } else {
                    0
                };
                let ms = 10 + (k % 4) as i64;
                let gw_end = 1 + ms + 2 + (k % 3) as i64 + extra;
                observe(
                    &mut d,
                    &names,
                    route,
                    trace,
                    Call {
                        node: gw,
                        caller: None,
                        hop: None,
                        parent: None,
                        t,
                        ms: gw_end as f64,
                        span: 1,
                        waited: None,
                    },
                );
                let call = Call {
                    node: backends[b],
                    caller: Some(gw),
                    hop: Some(b as u32 + 1),
                    parent: Some(1),
                    t: t + 1,
                    ms: ms as f64,
                    span: 2,
                    waited: measured.then_some((ms + 1 + extra) as f64),
                };
                observe(&mut d, &names, route, trace, call);
            }
            close_minute(&mut d, &names, minute, &mut out);
        }
        out
    }

    #[test]
    fn a_late_answer_to_a_proxy_is_blamed_on_the_one_callee_it_waited_on() {
        assert!(run_proxy("orders", 0.0).is_empty(), "steady journeys raise nothing");
        let found = run_proxy("orders", 800.0);
        let waits: Vec<&Anomaly> = found.iter().filter(|a| a.metric.as_deref() == Some(HOP_WAIT_METRIC)).collect();
        assert!(!waits.is_empty(), "{found:?}");
        assert!(waits.iter().all(|a| a.service == "orders"), "{waits:?}");
        assert!(waits[0].reason.contains("last call"), "{}", waits[0].reason);
        // A gateway slow to finish after every answer is its own problem, not its callees'.
        let slow_gateway = run_proxy("gateway", 800.0);
        assert!(
            slow_gateway.iter().all(|a| a.metric.as_deref() != Some(HOP_WAIT_METRIC)),
            "{slow_gateway:?}"
        );
    }

    #[test]
    fn a_measured_wait_is_blamed_on_the_callee_and_a_starved_caller_on_none() {
        assert!(run_proxy_of("orders", 0.0, true).is_empty(), "steady journeys raise nothing");
        let found = run_proxy_of("orders", 800.0, true);
        let waits: Vec<&Anomaly> = found.iter().filter(|a| is_hop_wait(a)).collect();
        assert!(!waits.is_empty(), "{found:?}");
        assert!(waits.iter().all(|a| a.service == "orders"), "{waits:?}");
        assert!(waits.iter().any(|a| a.actual.unwrap() >= 800.0), "{waits:?}");
        assert!(!waits[0].reason.contains("last call"), "measured, not derived: {}", waits[0].reason);
        // A gateway whose every request queues in its own client: its callees are not to blame.
        let starved = run_proxy_of("gateway", 800.0, true);
        assert!(starved.iter().all(|a| !is_hop_wait(a)), "{starved:?}");
    }

    #[test]
    fn a_slow_hop_is_named_with_its_share() {
        assert!(run(0.0).is_empty(), "steady journeys raise nothing");
        let found = run(300.0);
        let a = found.first().expect("the slow hop is reported");
        assert_eq!((a.service.as_str(), a.provider.as_str()), ("payments", "aws"));
        assert_eq!(a.hop_from.as_deref(), Some("gateway/onprem"));
        assert!(
            a.reason.contains("cross-provider hop gateway/onprem → payments/aws"),
            "{}",
            a.reason
        );
        assert!(a.contributors[0].share > 0.9, "{:?}", a.contributors);
        assert!(a.contributors.iter().any(|c| c.name.contains("payments/aws → ledger/onprem")));
    }
}
