//! Call-order anomalies. Each user's entry calls (calls with no parent span: what the client
//! asked for) form a session, split on inactivity. A next-call model, behind [`NextCallModel`],
//! says how likely each call is after the one before; calls it has rarely or never seen in that
//! position (a client that skips a step every normal flow has) are counted per target route and
//! window, and a window whose count of such calls stands out from the background is reported.
//! The Markov model here learns online; the LSTM of the ONNX issue plugs into the same trait.
//!
//! On quiet traffic one window holds too few sessions for a count to stand out (a client that
//! skips a step in one session of three a minute makes one rare call a minute), so each target
//! also keeps a sequential test over the run of windows: a Poisson CUSUM of its rare calls
//! against its background ([`RareRun`]), reported once the sum crosses and rare calls came from
//! several users.
//!
//! A call the model finds rare is learned only after [`QUARANTINE`]: otherwise a context seen a
//! few hundred times stops calling a skipped step rare after its second or third occurrence, and
//! a change on quiet traffic never builds evidence. Half an hour later it is learned, so a lasting
//! change (a deploy's new flow) becomes the new normal instead of an alert for ever. Only a
//! context seen at least [`QUARANTINE_SUPPORT`] times quarantines, after the first hour, and at most
//! [`QUARANTINE_PER_CALL`] of one transition wait: busy traffic shows a change in one window, and
//! a legitimate transition near the rarity line must not count as rare for half an hour.

use rustc_hash::FxHashMap;

use super::stats::{score_from_z, Ewm};
use super::{node_label, CallContext, Detector, Evicted, Finding, WindowContext};
use crate::model::anomaly::{Anomaly, AnomalyKind, Contributor};
use crate::model::time::{Millis, MINUTE_MS};
use crate::model::{EntityKey, Sym};

/// A route token: (service, route) symbols packed.
pub type Token = u64;
pub const START: Token = u64::MAX;

pub(crate) fn token(service: Sym, route: Sym) -> Token {
    (u64::from(service.0) << 32) | u64::from(route.0)
}

pub(crate) fn untoken(t: Token) -> (Sym, Sym) {
    (Sym((t >> 32) as u32), Sym(t as u32))
}

/// The calls before the next one, oldest first (`START` where the session is shorter).
pub type Context = [Token; 2];

/// A model of which call follows which.
pub trait NextCallModel: Send + serde::Serialize + serde::de::DeserializeOwned {
    /// Probability of `next` after `context`, or `None` while the model knows too little.
    fn probability(&self, context: &Context, next: Token) -> Option<f64>;
    /// Learns one observed call.
    fn learn(&mut self, context: &Context, next: Token);
    /// How many calls the model has seen after `context` (what its probability rests on).
    fn support(&self, context: &Context) -> u32;
    /// How many calls to `next` the model has learned, when it counts them: a route it has
    /// hardly seen is new (a deploy's `/v2`, onboarding's business), not a rare call order.
    fn target_calls(&self, _next: Token) -> Option<u32> {
        None
    }
}

/// Calls to a route learned before its place in sessions' order is judged (a new route's
/// first calls follow whatever came before; none of them is rare).
const NEW_ROUTE_CALLS: u32 = 40;

/// Markov chain over route tokens: second order where the two-call context has been seen
/// enough, first order otherwise, with add-half smoothing. The second order catches a skipped
/// step whose shortcut exists elsewhere (`login → files` is normal in one flow, `login → files
/// → upload` in none).
#[derive(serde::Serialize, serde::Deserialize, Default)]
pub struct MarkovModel {
    first: FxHashMap<(Token, Token), u32>,
    first_totals: FxHashMap<Token, u32>,
    second: FxHashMap<(Token, Token, Token), u32>,
    second_totals: FxHashMap<(Token, Token), u32>,
    /// Calls learned per target (absent from checkpoints written before it: rebuilt from
    /// `first` at the next call learned).
    #[serde(default)]
    targets: FxHashMap<Token, u32>,
}

impl MarkovModel {
    /// Transitions seen from a context before the model speaks about it.
    const MIN_CONTEXT: u32 = 40;
}

impl NextCallModel for MarkovModel {
    fn probability(&self, ctx: &Context, next: Token) -> Option<f64> {
        let [p2, p1] = *ctx;
        if let Some(&total) = self.second_totals.get(&(p2, p1)).filter(|&&t| t >= Self::MIN_CONTEXT) {
            let c = self.second.get(&(p2, p1, next)).copied().unwrap_or(0);
            return Some((f64::from(c) + 0.5) / (f64::from(total) + 1.0));
        }
        let total = *self.first_totals.get(&p1)?;
        if total < Self::MIN_CONTEXT {
            return None;
        }
        let c = self.first.get(&(p1, next)).copied().unwrap_or(0);
        Some((f64::from(c) + 0.5) / (f64::from(total) + 1.0))
    }
    fn support(&self, ctx: &Context) -> u32 {
        let [p2, p1] = *ctx;
        match self.second_totals.get(&(p2, p1)) {
            Some(&t) if t >= Self::MIN_CONTEXT => t,
            _ => self.first_totals.get(&p1).copied().unwrap_or(0),
        }
    }
    fn target_calls(&self, next: Token) -> Option<u32> {
        if self.targets.is_empty() {
            return Some(self.first.iter().filter(|((_, n), _)| *n == next).map(|(_, c)| c).sum());
        }
        Some(self.targets.get(&next).copied().unwrap_or(0))
    }
    fn learn(&mut self, ctx: &Context, next: Token) {
        let [p2, p1] = *ctx;
        if self.targets.is_empty() {
            for (&(_, n), &c) in &self.first {
                *self.targets.entry(n).or_default() += c;
            }
        }
        *self.targets.entry(next).or_default() += 1;
        *self.first.entry((p1, next)).or_default() += 1;
        *self.first_totals.entry(p1).or_default() += 1;
        *self.second.entry((p2, p1, next)).or_default() += 1;
        *self.second_totals.entry((p2, p1)).or_default() += 1;
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Session {
    context: Context,
    last_seen: Millis,
}

#[derive(serde::Serialize, serde::Deserialize, Default)]
struct TargetWindow {
    rare: u64,
    users: FxHashMap<u64, ()>,
    transitions: FxHashMap<(Context, Token), u64>,
    traces: Vec<String>,
    user_ids: Vec<String>,
}

/// Rare calls per target route and window against their background; a window whose count
/// stands out is reported with the transitions that made it. Shared by the Markov and LSTM
/// sequence detectors.
#[derive(serde::Serialize, serde::Deserialize, Default)]
pub struct RareTally {
    /// Rare calls this window, by target (service, provider, route).
    window: FxHashMap<(Sym, Sym, Sym), TargetWindow>,
    /// Background rare calls per window and target.
    background: FxHashMap<(Sym, Sym, Sym), Ewm>,
    /// The sequential test of each target with rare calls lately.
    #[serde(default)]
    runs: FxHashMap<(Sym, Sym, Sym), RareRun>,
    /// Windows closed so far: a target's background starts at zero with this much history,
    /// not at its first rare call.
    #[serde(default)]
    windows: u64,
    /// Each target's rare calls over about a day ([`SlowRate`]), for how low its usual rate
    /// can be believed to be.
    #[serde(default)]
    slow: FxHashMap<(Sym, Sym, Sym), SlowRate>,
}

/// A target's rare calls and windows over a long memory (about [`SLOW_MEMORY_WINDOWS`]),
/// decayed alike, since its first rare call: what bounds its usual rate from above when rare
/// calls are too few for the background's short memory to say anything (no rare call in the
/// last 50 windows says the rate is under about 0.06; none in a day, under about 0.003).
#[derive(serde::Serialize, serde::Deserialize, Default, Clone, Copy)]
struct SlowRate {
    calls: f64,
    windows: f64,
}

/// The long memory of [`SlowRate`], in windows (a day of one-minute windows).
const SLOW_MEMORY_WINDOWS: f64 = 1440.0;

impl SlowRate {
    fn learn(&mut self, rare: f64) {
        let keep = 1.0 - 1.0 / SLOW_MEMORY_WINDOWS;
        self.calls = self.calls * keep + rare;
        self.windows = self.windows * keep + 1.0;
    }

    /// An upper bound (about 95%) on the rate per window: `(c + 3 + 2√c) / n` approximates
    /// Poisson's exact bound (3/n with no call, the rule of three). None until half the memory
    /// has passed since the target's first rare call: a deploy's new route keeps making rare
    /// calls for hours while the model learns its place, and that is no trickle.
    fn upper(&self) -> f64 {
        if self.windows < SLOW_MEMORY_WINDOWS / 2.0 {
            return f64::INFINITY;
        }
        (self.calls + 3.0 + 2.0 * self.calls.sqrt()) / self.windows
    }
}

/// A Poisson CUSUM of one target's rare calls per window: usual rate λ0 (its background, at
/// least [`RARE_FLOOR`] unless a day of history bounds it lower) against λ1 = max(4·λ0,
/// [`RARE_ALTERNATIVE`]), the evidence divided by the background's dispersion (rare calls come
/// in sessions), floored at zero and capped.
#[derive(serde::Serialize, serde::Deserialize, Default, Clone)]
struct RareRun {
    sum: f64,
    /// Rare calls and windows since the sum last left zero.
    rare: u64,
    windows: u32,
    /// Distinct users behind them (hashes, at most [`RUN_USERS`]).
    users: Vec<u64>,
}

/// The log-likelihood ratio a rare-call sum must reach (as the traffic test's, e^12: a false
/// crossing about once in 10^5 windows per target).
const RARE_THRESHOLD: f64 = 12.0;
/// The least usual rate of rare calls a target is judged against (per window) while its long
/// memory cannot bound it lower: about what 50 windows without a rare call can say.
const RARE_FLOOR: f64 = 0.05;
/// The least rate of rare calls the test looks for (per window): one every two minutes (a
/// client skipping a step on a flow of a few sessions a minute).
const RARE_ALTERNATIVE: f64 = 0.5;
/// Windows the tally has seen before its sequential test speaks.
const RARE_MIN_WINDOWS: u64 = 30;
/// Users remembered per run; the test needs [`RUN_MIN_USERS`].
const RUN_USERS: usize = 8;
const RUN_MIN_USERS: usize = 4;
/// Windows after which a run of rare calls is taken as the new normal and ends (two hours:
/// call-order incidents last minutes, a deploy's new flow lasts).
const LASTING_RUN_WINDOWS: u32 = 120;

impl RareRun {
    /// Adds a window of `rare` calls from `users` against background `bg`; whether the sum is
    /// past the threshold with enough users.
    fn add(&mut self, rare: u64, users: impl Iterator<Item = u64>, bg: &Ewm, lambda0: f64) -> bool {
        let lambda1 = (4.0 * lambda0).max(RARE_ALTERNATIVE);
        let dispersion = (bg.var / bg.mean.max(RARE_FLOOR)).max(1.0);
        let llr = (rare as f64 * (lambda1 / lambda0).ln() - (lambda1 - lambda0)) / dispersion;
        self.sum = (self.sum + llr).clamp(0.0, 1.5 * RARE_THRESHOLD);
        if self.sum == 0.0 {
            *self = RareRun::default();
            return false;
        }
        self.rare += rare;
        self.windows += 1;
        for u in users {
            if self.users.len() < RUN_USERS && !self.users.contains(&u) {
                self.users.push(u);
            }
        }
        self.sum >= RARE_THRESHOLD && self.users.len() >= RUN_MIN_USERS
    }
}

/// Learns a target's window into its background; whether its run lasted long enough to be
/// taken as the background, and ends. A run that goes on past [`LASTING_RUN_WINDOWS`] is how
/// the sessions go now (a deploy's new route whose transitions the model's long counts take
/// hours to call usual): its rate becomes the background at once, instead of holding alerts
/// open all day. Otherwise the background learns from quiet windows only, so an incident
/// stays visible.
fn learn_background((bg, slow): (&mut Ewm, &mut SlowRate), (rare, expected, flagged): (f64, f64, bool), run: Option<&RareRun>) -> bool {
    if let Some(r) = run.filter(|r| r.windows >= LASTING_RUN_WINDOWS) {
        let rate = r.rare as f64 / f64::from(r.windows);
        bg.mean = bg.mean.max(rate);
        bg.var = bg.var.max(rate);
        slow.learn(rare);
        return true;
    }
    let building = run.is_some_and(|r| r.sum >= RARE_THRESHOLD / 2.0);
    let learned = match (flagged, building) {
        (true, _) => expected,
        (false, true) => bg.mean,
        (false, false) => rare,
    };
    bg.update(learned, 0.02);
    slow.learn(learned);
    false
}

impl RareTally {
    /// Drops the tallies and backgrounds of evicted target routes.
    pub fn forget(&mut self, evicted: &super::Evicted) {
        self.window.retain(|t, _| !evicted.route(*t));
        self.background.retain(|t, _| !evicted.route(*t));
        self.runs.retain(|t, _| !evicted.route(*t));
        self.slow.retain(|t, _| !evicted.route(*t));
    }

    /// Counts one rare call to `target` after `ctx`.
    pub fn record(&mut self, target: (Sym, Sym, Sym), user: u64, ctx: Context, next: Token, trace: Option<&str>, user_id: Option<&str>) {
        let w = self.window.entry(target).or_default();
        w.rare += 1;
        w.users.insert(user, ());
        *w.transitions.entry((ctx, next)).or_default() += 1;
        if w.traces.len() < 3 {
            if let Some(tid) = trace {
                w.traces.push(tid.to_owned());
            }
            if let Some(uid) = user_id {
                w.user_ids.push(uid.to_owned());
            }
        }
    }

    /// Reports this window's targets whose rare calls stood out; `model` names who judged.
    pub fn close(&mut self, w: &WindowContext<'_>, detector: &'static str, model: &str, out: &mut Vec<Anomaly>) {
        let names = w.names;
        let label = |t: Token| {
            if t == START {
                "(session start)".to_owned()
            } else {
                let (s, r) = untoken(t);
                format!("{} {}", names.name(s), names.name(r))
            }
        };
        // `a -> b`, leaving out the session start when there was a call after it.
        let path = |ctx: &Context| {
            if ctx[0] == START && ctx[1] != START {
                label(ctx[1])
            } else if ctx[0] == START {
                label(START)
            } else {
                format!("{} -> {}", label(ctx[0]), label(ctx[1]))
            }
        };
        let mut keys: Vec<_> = self.background.keys().copied().collect();
        keys.extend(self.window.keys().copied());
        keys.sort();
        keys.dedup();
        let history = self.windows;
        self.windows += 1;
        for key in keys {
            let tw = self.window.remove(&key).unwrap_or_default();
            // A target's first rare call does not make its background: it had none until then.
            let bg = self.background.entry(key).or_insert(Ewm {
                n: history,
                ..Ewm::default()
            });
            // Counted from the target's first rare call, not from the start: a route that did
            // not exist (a deploy's `/v2`) had no rare calls and that says nothing.
            let slow = self.slow.entry(key).or_default();
            let usual = bg.mean.max(RARE_FLOOR.min(slow.upper()));
            let expected = bg.mean.max(0.2);
            let rare = tw.rare as f64;
            let z = (rare - expected) / expected.sqrt().max(1.0);
            let flagged = tw.users.len() >= 4 && rare >= (4.0 * expected).max(5.0) && z >= 4.0;
            // The run of windows: judged once the tally has some history, and kept only while
            // its sum is above zero.
            let mut crossed = false;
            let mut run = None;
            if history >= RARE_MIN_WINDOWS && (tw.rare > 0 || self.runs.contains_key(&key)) {
                let r = self.runs.entry(key).or_default();
                crossed = r.add(tw.rare, tw.users.keys().copied(), bg, usual);
                if r.sum == 0.0 {
                    self.runs.remove(&key);
                } else {
                    run = Some(r.clone());
                }
            }
            if learn_background((bg, slow), (rare, expected, flagged), run.as_ref()) {
                self.runs.remove(&key);
                continue;
            }
            // The window's own count, or the run's when this window added to a crossed sum.
            let run = match (flagged, crossed, run) {
                (true, _, _) => None,
                (false, true, Some(r)) if tw.rare > 0 => Some(r),
                _ => continue,
            };
            let (service, provider, route) = key;
            let mut trans: Vec<_> = tw.transitions.into_iter().collect();
            trans.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
            let top = &trans[0].0;
            let mut f = Finding::new(
                AnomalyKind::Sequence,
                detector,
                EntityKey::Route { service, provider, route },
                (w.start, w.end),
            );
            let what = |calls: u64, users: usize| {
                format!(
                    "{calls} calls to {} {} from {users} users came in an order sessions rarely follow{model} (most often `{}` straight after `{}`)",
                    node_label(names, (service, provider)),
                    names.name(route),
                    label(top.1),
                    path(&top.0),
                )
            };
            match &run {
                None => {
                    f.score = score_from_z(z);
                    f.metric = "sequence.rare_calls";
                    f.actual = Some(rare);
                    f.expected = Some(expected);
                    f.reason = format!("{}, against about {expected:.1} per window usually", what(tw.rare, tw.users.len()));
                }
                Some(r) => {
                    let usual_run = usual * f64::from(r.windows);
                    f.score = super::sequential::score_of(r.sum, RARE_THRESHOLD);
                    f.metric = "sequence.rare_calls.sequential";
                    f.run_of(r.windows);
                    f.actual = Some(r.rare as f64);
                    f.expected = Some(usual_run);
                    f.reason = format!(
                        "{} over the last {} windows, against about {usual_run:.1} usually (sequential test: evidence e^{:.0})",
                        what(r.rare, r.users.len()),
                        r.windows,
                        r.sum
                    );
                }
            }
            f.contributors = trans
                .iter()
                .take(3)
                .map(|((p, n), c)| Contributor {
                    name: format!("{} -> {}", path(p), label(*n)),
                    share: *c as f64 / rare,
                    actual: None,
                    expected: None,
                })
                .collect();
            f.impact_calls = tw.rare;
            f.impact_users = tw.users.len() as u64;
            f.trace_ids = tw.traces;
            f.user_ids = tw.user_ids;
            out.push(f.into_anomaly(names));
        }
    }
}

/// How long a call the model found rare waits before the model learns it.
pub const QUARANTINE: Millis = 30 * MINUTE_MS;
/// At most this many rare calls wait; beyond it they are learned at once (memory stays bounded
/// when a deploy makes every call rare).
const QUARANTINE_MAX: usize = 50_000;
/// At most this many of one transition wait: enough for the run of windows on quiet traffic;
/// on busy traffic a change shows in one window, and a legitimate transition near the rarity
/// line would otherwise count as rare for half an hour.
const QUARANTINE_PER_CALL: u32 = 16;
/// Only a context seen this often quarantines, and only once the detector has closed
/// [`QUARANTINE_AFTER_WINDOWS`]: a young model learns at once, as it always did (its
/// probabilities move with every call anyway, and busy traffic passes 100 in seconds).
const QUARANTINE_SUPPORT: u32 = 100;
const QUARANTINE_AFTER_WINDOWS: u64 = 60;

/// The sequence detector, generic over its next-call model.
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(bound = "")]
pub struct SequenceDetector<M: NextCallModel> {
    model: M,
    sessions: FxHashMap<u64, Session>,
    tally: RareTally,
    pub session_gap: Millis,
    pub rare_probability: f64,
    /// Open sessions at most (`limits.max_sessions`): a user beyond it is not followed until
    /// sessions end, and the calls are counted in `untracked`.
    pub max_sessions: usize,
    pub untracked: u64,
    /// Rare calls not learned yet, oldest first: (time, context, call).
    #[serde(default)]
    quarantine: std::collections::VecDeque<(Millis, Context, Token)>,
    /// How many of each transition wait in `quarantine`.
    #[serde(default)]
    waiting: FxHashMap<(Context, Token), u32>,
}

impl<M: NextCallModel> SequenceDetector<M> {
    pub fn new(model: M) -> Self {
        SequenceDetector {
            model,
            sessions: FxHashMap::default(),
            tally: RareTally::default(),
            session_gap: 30 * MINUTE_MS,
            rare_probability: 0.01,
            max_sessions: crate::pipeline::EntityLimits::default().max_sessions,
            untracked: 0,
            quarantine: std::collections::VecDeque::new(),
            waiting: FxHashMap::default(),
        }
    }
}

impl<M: NextCallModel> SequenceDetector<M> {
    /// Whether `next` after `ctx` is rare; learns it now, or after [`QUARANTINE`] when rare.
    fn is_rare(&mut self, t: Millis, ctx: Context, next: Token) -> bool {
        // A route with fewer calls than the rare share of this context's is rare after it in
        // any order: its rarity is the route's (a new one, or one hardly used), not the order's.
        let support = f64::from(self.model.support(&ctx));
        if self
            .model
            .target_calls(next)
            .is_some_and(|n| n < NEW_ROUTE_CALLS || f64::from(n) < self.rare_probability * support)
        {
            self.model.learn(&ctx, next);
            return false;
        }
        let rare = self.model.probability(&ctx, next).is_some_and(|p| p < self.rare_probability);
        let waiting = self.waiting.get(&(ctx, next)).copied().unwrap_or(0);
        if rare
            && self.quarantine.len() < QUARANTINE_MAX
            && waiting < QUARANTINE_PER_CALL
            && self.tally.windows >= QUARANTINE_AFTER_WINDOWS
            && self.model.support(&ctx) >= QUARANTINE_SUPPORT
        {
            self.quarantine.push_back((t, ctx, next));
            self.waiting.insert((ctx, next), waiting + 1);
        } else {
            self.model.learn(&ctx, next);
        }
        rare
    }

    /// Learns the rare calls that have waited [`QUARANTINE`] by `now`.
    fn learn_quarantined(&mut self, now: Millis) {
        while let Some(&(t, ctx, next)) = self.quarantine.front() {
            if now - t < QUARANTINE {
                break;
            }
            self.quarantine.pop_front();
            if let Some(n) = self.waiting.get_mut(&(ctx, next)) {
                *n -= 1;
                if *n == 0 {
                    self.waiting.remove(&(ctx, next));
                }
            }
            self.model.learn(&ctx, next);
        }
    }
}

impl<M: NextCallModel> Detector for SequenceDetector<M> {
    fn name(&self) -> &'static str {
        "sequence"
    }

    fn forget(&mut self, evicted: &Evicted) {
        self.tally.forget(evicted);
    }

    fn observe(&mut self, c: &CallContext<'_>) {
        if c.event.parent_id.is_some() {
            return;
        }
        let Some(user) = c.user else { return };
        let t = c.event.timestamp;
        let next = token(c.service, c.route);
        let ctx = match self.sessions.get(&user) {
            Some(s) if t - s.last_seen <= self.session_gap => s.context,
            Some(_) => [START, START],
            None if self.sessions.len() >= self.max_sessions => {
                if self.untracked == 0 {
                    tracing::warn!(
                        max = self.max_sessions,
                        "open user sessions reached limits.max_sessions: new users are not followed until sessions end (counted)"
                    );
                }
                self.untracked += 1;
                return;
            }
            None => [START, START],
        };
        self.sessions.insert(
            user,
            Session {
                context: [ctx[1], next],
                last_seen: t,
            },
        );
        if self.is_rare(t, ctx, next) {
            let target = (c.service, c.provider, c.route);
            self.tally
                .record(target, user, ctx, next, c.event.trace_id.as_deref(), c.event.user_id.as_deref());
        }
    }

    fn untracked_sessions(&self) -> u64 {
        self.untracked
    }

    fn close_window(&mut self, w: &WindowContext<'_>, out: &mut Vec<Anomaly>) {
        self.tally.close(w, "markov", "", out);
        self.learn_quarantined(w.end);
        // Forget sessions that ended, so memory follows active users only.
        let gap = self.session_gap;
        self.sessions.retain(|_, s| w.end - s.last_seen <= gap);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markov_needs_context_then_scores() {
        let mut m = MarkovModel::default();
        assert_eq!(m.probability(&[START, 1], 2), None);
        for _ in 0..100 {
            m.learn(&[START, 1], 2);
        }
        assert!(m.probability(&[START, 1], 2).unwrap() > 0.99);
        assert!(m.probability(&[START, 1], 3).unwrap() < 0.01);
        // An unseen two-call context falls back to the first order.
        assert!(m.probability(&[7, 1], 2).unwrap() > 0.99);
    }

    #[test]
    fn second_order_catches_a_shortcut_that_exists_elsewhere() {
        // Flow A: 1 2 3 4; flow B: 1 3 5. Skipping 2 in A gives 1 3 4: `1 -> 3` is normal (B),
        // `1 -> 3 -> 4` is not.
        let mut m = MarkovModel::default();
        for _ in 0..200 {
            for (ctx, next) in [([START, START], 1), ([START, 1], 2), ([1, 2], 3), ([2, 3], 4)] {
                m.learn(&ctx, next);
            }
            for (ctx, next) in [([START, START], 1), ([START, 1], 3), ([1, 3], 5)] {
                m.learn(&ctx, next);
            }
        }
        assert!(m.probability(&[START, 1], 3).unwrap() > 0.3);
        assert!(m.probability(&[1, 3], 4).unwrap() < 0.01);
    }

    /// Closes `windows` minutes of a tally; window `i` gets `rare(i)` rare calls to one target,
    /// each from a new user. Returns the windows with a finding and the findings' metrics.
    fn tally_run(windows: usize, rare: impl Fn(usize) -> u64) -> Vec<(usize, String)> {
        let mut names = crate::model::Interner::default();
        let (s, p, r) = (names.intern("api"), names.intern("aws"), names.intern("/pay"));
        let login = token(names.intern("api"), names.intern("/login"));
        let mut tally = RareTally::default();
        let mut user = 0;
        let mut found = Vec::new();
        for i in 0..windows {
            for _ in 0..rare(i) {
                user += 1;
                tally.record((s, p, r), user, [START, START], login, None, None);
            }
            let t = i as i64 * MINUTE_MS;
            let w = WindowContext {
                start: t,
                end: t + MINUTE_MS,
                stats: &[],
                names: &names,
                complete: true,
            };
            let mut out = Vec::new();
            tally.close(&w, "markov", "", &mut out);
            found.extend(out.into_iter().map(|a| (i, a.metric.unwrap_or_default())));
        }
        found
    }

    #[test]
    fn a_trickle_of_rare_calls_on_quiet_traffic_adds_up_and_a_stray_one_does_not() {
        // One rare call an hour (the background), then one a minute from minute 120: no window
        // holds enough alone, the run does within ten minutes.
        let background = |i: usize| u64::from(i % 60 == 7);
        let found = tally_run(180, |i| if i >= 120 { 1 } else { background(i) });
        let first = found.first().expect("the trickle is found");
        assert!((120..130).contains(&first.0), "{found:?}");
        assert_eq!(first.1, "sequence.rare_calls.sequential");
        assert!(tally_run(600, background).is_empty(), "a stray rare call an hour is background");
        // Three at once from three users, then nothing: too few users, too short.
        assert!(tally_run(180, |i| if i == 100 { 3 } else { background(i) }).is_empty());
    }

    #[test]
    fn a_day_without_rare_calls_makes_a_slower_trickle_count() {
        // A rare call every four hours for a day, then one in two or three windows (a client
        // skipping a step on a flow of a few sessions a minute): a day of history bounds the
        // usual rate far below the short memory's floor, so the trickle is found within twenty
        // windows (with the floor and one call a window as the alternative, as before, not within
        // sixty). After an hour of history the floor holds and it takes longer.
        let trickle = |from: usize| move |i: usize| u64::from(if i >= from { i % 5 == 0 || i % 5 == 2 } else { i % 240 == 7 });
        let found = tally_run(1560, trickle(1500));
        let first = found.first().expect("the trickle is found");
        assert!((1500..1520).contains(&first.0), "{found:?}");
        let early = tally_run(120, trickle(60));
        assert!(early.first().is_none_or(|f| f.0 >= 75), "{early:?}");
        // One rare call every half hour for two days is background, not a trickle.
        assert!(tally_run(2880, |i| u64::from(i % 30 == 7)).is_empty());
    }

    /// A skipped step once a minute on a context seen a few hundred times: without the
    /// quarantine the model would stop calling it rare after two or three; with it, it stays
    /// rare while it waits (at most 16 of one transition, at most half an hour) and is then
    /// learned.
    #[test]
    fn a_repeated_rare_call_stays_rare_for_the_quarantine_then_is_learned() {
        let mut d = SequenceDetector::new(MarkovModel::default());
        d.tally.windows = QUARANTINE_AFTER_WINDOWS;
        let flow = [([START, START], 1), ([START, 1], 2), ([1, 2], 3)];
        for _ in 0..300 {
            for (ctx, next) in flow {
                assert!(!d.is_rare(0, ctx, next) || d.model.probability(&ctx, next).is_some());
            }
        }
        // The skip: 1 -> 3.
        let mut rare = 0;
        for minute in 0..QUARANTINE_PER_CALL {
            let t = i64::from(minute) * MINUTE_MS;
            rare += u32::from(d.is_rare(t, [START, 1], 3));
            d.learn_quarantined(t);
        }
        assert_eq!(rare, QUARANTINE_PER_CALL, "every skip within the quarantine is rare");
        // Beyond the per-transition cap one is learned at once (busy traffic).
        assert_eq!(d.waiting[&([START, 1], 3)], QUARANTINE_PER_CALL);
        // Learned once it has waited: a new flow becomes the normal one.
        d.learn_quarantined(20 * MINUTE_MS + QUARANTINE);
        assert!(d.quarantine.is_empty() && d.waiting.is_empty());
        for _ in 0..20 {
            d.is_rare(21 * MINUTE_MS + QUARANTINE, [START, 1], 3);
        }
        assert!(
            !d.is_rare(22 * MINUTE_MS + QUARANTINE, [START, 1], 3),
            "learned after the quarantine"
        );
        // A young model (a context seen under 100 times) learns at once.
        let mut young = SequenceDetector::new(MarkovModel::default());
        young.tally.windows = QUARANTINE_AFTER_WINDOWS;
        for _ in 0..50 {
            for (ctx, next) in flow {
                young.is_rare(0, ctx, next);
            }
        }
        assert!(young.is_rare(0, [START, 1], 3) && young.quarantine.is_empty());
        // So does a detector in its first hour, however often the context was seen.
        let mut first_hour = SequenceDetector::new(MarkovModel::default());
        for _ in 0..300 {
            for (ctx, next) in flow {
                first_hour.is_rare(0, ctx, next);
            }
        }
        assert!(first_hour.is_rare(0, [START, 1], 3) && first_hour.quarantine.is_empty());
    }

    /// A deploy opens a `/v2` route that takes a share of a step's calls: its first calls come
    /// after contexts that never led to it, and are learned, not tallied as rare.
    #[test]
    fn a_new_route_s_first_calls_are_learned_not_rare() {
        let mut d = SequenceDetector::new(MarkovModel::default());
        d.tally.windows = QUARANTINE_AFTER_WINDOWS;
        let flow = [([START, START], 1), ([START, 1], 2), ([1, 2], 3)];
        for _ in 0..300 {
            for (ctx, next) in flow {
                d.is_rare(0, ctx, next);
            }
        }
        // Route 9 is new: after `1`, a third of sessions now call it instead of `2`; none of
        // its calls is rare while they are under the rare share of the context's.
        for _ in 0..10_000 {
            d.is_rare(0, [START, START], 1);
        }
        let rare = (0..NEW_ROUTE_CALLS).filter(|_| d.is_rare(0, [START, 1], 9)).count();
        assert_eq!(rare, 0);
        assert!(!d.is_rare(0, [START, START], 9), "40 calls, under 1% of the 10,300 from the start");
        assert!(d.quarantine.is_empty());
        // A known route where it never came (a skipped step) is still rare.
        assert!(d.is_rare(0, [START, 1], 3));
        // A checkpoint written before counts were kept restores none: they come from the chain.
        let mut restored = std::mem::take(&mut d.model);
        let nine = restored.target_calls(9);
        restored.targets.clear();
        assert_eq!((restored.target_calls(3), restored.target_calls(9)), (Some(300), nine));
        restored.learn(&[START, 1], 2);
        assert_eq!(restored.targets[&3], 300);
    }

    #[test]
    fn tokens_round_trip() {
        assert_eq!(untoken(token(Sym(7), Sym(42))), (Sym(7), Sym(42)));
    }
}
