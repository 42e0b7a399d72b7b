//! Call-order anomalies. Each user's entry calls (calls with no parent span: what the client
//! asked for) form a session, split on inactivity. A next-call model, behind [`NextCallModel`],
//! says how likely each call is after the one before; calls it has rarely or never seen in that
//! position (a client that skips a step every normal flow has) are counted per target route and
//! window, and a window whose count of such calls stands out from the background is reported.
//! The Markov model here learns online; the LSTM of the ONNX issue plugs into the same trait.

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
}

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
    fn learn(&mut self, ctx: &Context, next: Token) {
        let [p2, p1] = *ctx;
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
}

impl RareTally {
    /// Drops the tallies and backgrounds of evicted target routes.
    pub fn forget(&mut self, evicted: &super::Evicted) {
        self.window.retain(|t, _| !evicted.route(*t));
        self.background.retain(|t, _| !evicted.route(*t));
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
        for key in keys {
            let tw = self.window.remove(&key).unwrap_or_default();
            let bg = self.background.entry(key).or_default();
            let expected = bg.mean.max(0.2);
            let rare = tw.rare as f64;
            let z = (rare - expected) / expected.sqrt().max(1.0);
            let flagged = tw.users.len() >= 4 && rare >= (4.0 * expected).max(5.0) && z >= 4.0;
            // Background learns from quiet windows only, so a long incident stays visible.
            bg.update(if flagged { expected } else { rare }, 0.02);
            if !flagged {
                continue;
            }
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
            f.score = score_from_z(z);
            f.metric = "sequence.rare_calls";
            f.actual = Some(rare);
            f.expected = Some(expected);
            f.reason = format!(
                "{} calls to {} {} from {} users came in an order sessions rarely follow{model} (most often `{}` straight after `{}`), against about {:.1} per window usually",
                tw.rare,
                node_label(names, (service, provider)),
                names.name(route),
                tw.users.len(),
                label(top.1),
                path(&top.0),
                expected
            );
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
        if let Some(p) = self.model.probability(&ctx, next) {
            if p < self.rare_probability {
                let target = (c.service, c.provider, c.route);
                self.tally
                    .record(target, user, ctx, next, c.event.trace_id.as_deref(), c.event.user_id.as_deref());
            }
        }
        self.model.learn(&ctx, next);
    }

    fn untracked_sessions(&self) -> u64 {
        self.untracked
    }

    fn close_window(&mut self, w: &WindowContext<'_>, out: &mut Vec<Anomaly>) {
        self.tally.close(w, "markov", "", out);
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

    #[test]
    fn tokens_round_trip() {
        assert_eq!(untoken(token(Sym(7), Sym(42))), (Sym(7), Sym(42)));
    }
}
