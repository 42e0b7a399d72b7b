//! Call-order anomalies by an LSTM (DeepLog-style next-call prediction with top-k). Sessions
//! are the same as the Markov detector's (a user's entry calls, split on inactivity); each keeps
//! the LSTM's hidden and cell state, so a new call costs one step of a batched ONNX run, not a
//! re-run of its history. A call outside the model's top-k predictions for that point of the
//! session is rare; rare calls go to the shared [`RareTally`], which reports a target route
//! whose rare calls stand out from its background.
//!
//! Routes the model never saw map to its unknown token: the session still steps, but a call to
//! or from an unknown route is not judged (the online Markov detector covers routes that are
//! new since training). `apiwatch train` retrains on the current routes; a new version is
//! picked up at the next window.

use rustc_hash::FxHashMap;

use crate::ml::lstm::{is_rare, LstmModel};
use crate::ml::{MlError, ModelStore};
use crate::model::anomaly::Anomaly;
use crate::model::time::{Millis, MINUTE_MS};
use crate::model::Sym;

use super::sequence::{token, Context, RareTally, Token, START};
use super::{CallContext, Detector, Persist, WindowContext};

/// Pending calls that trigger a flush (more sessions per ONNX run, fewer runs).
const BATCH: usize = 2048;
/// A flush before the window closes steps a round only if it holds this many sessions; the
/// rest waits for the next flush, so ONNX runs stay large (a run costs tens of microseconds
/// however few rows it has).
const MIN_ROUND: usize = 128;

#[derive(serde::Serialize, serde::Deserialize)]
struct Session {
    h: Vec<f32>,
    c: Vec<f32>,
}

/// What is known of a session at once (its carried state catches up at the next flush).
#[derive(serde::Serialize, serde::Deserialize, Clone, Copy)]
struct Last {
    id: i64,
    seen: Millis,
    /// The last two calls, for explanations.
    context: Context,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct PendingStep {
    user: u64,
    /// The session starts again at this call (zero state).
    reset: bool,
    input: i64,
    next: i64,
    context: Context,
    next_token: Token,
    target: (Sym, Sym, Sym),
    trace: Option<String>,
    user_id: Option<String>,
}

#[derive(serde::Serialize, serde::Deserialize, Default)]
struct State {
    sessions: FxHashMap<u64, Session>,
    last: FxHashMap<u64, Last>,
    pending: Vec<PendingStep>,
    tally: RareTally,
    steps: u64,
    judged: u64,
    rare: u64,
    unknown: u64,
    failed_batches: u64,
}

pub struct LstmDetector {
    model: LstmModel,
    store: ModelStore,
    env: &'static ort::environment::Environment,
    st: State,
    ids: FxHashMap<Token, i64>,
    refused_version: Option<String>,
    pub session_gap: Millis,
}

impl LstmDetector {
    pub const MODEL: &'static str = "lstm";

    pub fn load(env: &'static ort::environment::Environment, store: &ModelStore) -> Result<Self, MlError> {
        let v = store.current(Self::MODEL)?;
        let model = LstmModel::load(env, &v)?;
        Ok(LstmDetector {
            model,
            store: store.clone(),
            env,
            st: State::default(),
            ids: FxHashMap::default(),
            refused_version: None,
            session_gap: 30 * MINUTE_MS,
        })
    }

    fn token_id(&mut self, c: &CallContext<'_>, t: Token) -> i64 {
        if let Some(&id) = self.ids.get(&t) {
            return id;
        }
        let id = self
            .model
            .token_id(&format!("{}:{}", c.names.name(c.service), c.names.name(c.route)));
        self.ids.insert(t, id);
        id
    }

    /// Steps pending calls in order per session, batching across sessions: round r holds each
    /// session's r-th pending call. With `all` false, rounds smaller than [`MIN_ROUND`] (and
    /// everything after them) stay pending.
    fn flush(&mut self, all: bool) {
        let pending = std::mem::take(&mut self.st.pending);
        if pending.is_empty() {
            return;
        }
        let per = self.model.state_len();
        let mut seen: FxHashMap<u64, usize> = FxHashMap::default();
        let rounds: Vec<usize> = pending
            .iter()
            .map(|p| {
                let r = seen.entry(p.user).or_default();
                *r += 1;
                *r - 1
            })
            .collect();
        let max_round = rounds.iter().copied().max().unwrap_or(0);
        let mut by_round: Vec<Vec<usize>> = vec![Vec::new(); max_round + 1];
        for (i, &r) in rounds.iter().enumerate() {
            by_round[r].push(i);
        }
        let mut tokens = Vec::new();
        let mut h = Vec::new();
        let mut c = Vec::new();
        let mut stopped_at = None;
        for (round, members) in by_round.iter().enumerate() {
            if !all && members.len() < MIN_ROUND {
                stopped_at = Some(round);
                break;
            }
            tokens.clear();
            h.clear();
            c.clear();
            for &i in members {
                let p = &pending[i];
                tokens.push(p.input);
                match self.st.sessions.get(&p.user).filter(|_| !p.reset) {
                    Some(s) => {
                        h.extend_from_slice(&s.h);
                        c.extend_from_slice(&s.c);
                    }
                    None => {
                        h.resize(h.len() + per, 0.0);
                        c.resize(c.len() + per, 0.0);
                    }
                }
            }
            let unknown = self.model.unknown;
            let (floor, top_k) = (self.model.min_probability, self.model.top_k);
            let mut rare = Vec::new();
            let result = self.model.step(&tokens, &mut h, &mut c, |j, probs| {
                let p = &pending[members[j]];
                let judged = p.input != unknown && p.next != unknown;
                if judged && is_rare(probs, p.next, top_k, floor) {
                    rare.push(members[j]);
                }
            });
            if let Err(e) = result {
                self.st.failed_batches += 1;
                tracing::warn!(error = %e, calls = members.len(), "the LSTM could not score a batch");
                continue;
            }
            self.st.steps += members.len() as u64;
            for (j, &i) in members.iter().enumerate() {
                let p = &pending[i];
                let s = self.st.sessions.entry(p.user).or_insert_with(|| Session {
                    h: Vec::new(),
                    c: Vec::new(),
                });
                s.h.clear();
                s.h.extend_from_slice(&h[j * per..(j + 1) * per]);
                s.c.clear();
                s.c.extend_from_slice(&c[j * per..(j + 1) * per]);
                if p.input == unknown || p.next == unknown {
                    self.st.unknown += 1;
                } else {
                    self.st.judged += 1;
                }
            }
            for i in rare {
                let p = &pending[i];
                self.st.rare += 1;
                self.st
                    .tally
                    .record(p.target, p.user, p.context, p.next_token, p.trace.as_deref(), p.user_id.as_deref());
            }
        }
        if let Some(r) = stopped_at {
            self.st.pending = pending.into_iter().zip(rounds).filter(|(_, pr)| *pr >= r).map(|(p, _)| p).collect();
        }
    }

    fn reload_if_changed(&mut self) {
        let env = self.env;
        if let Some(m) = self.store.newer(Self::MODEL, &self.model.version, &mut self.refused_version, |v| {
            LstmModel::load(env, v)
        }) {
            self.model = m;
            self.ids.clear();
            // A new model's state means nothing to the old one: sessions start over.
            self.st.sessions.clear();
        }
    }
}

impl Persist for LstmDetector {
    fn save_state(&self) -> anyhow::Result<Vec<u8>> {
        Ok(rmp_serde::to_vec_named(&self.st)?)
    }
    fn load_state(&mut self, bytes: &[u8]) -> anyhow::Result<()> {
        self.st = rmp_serde::from_slice(bytes)?;
        // State saved under a model of another size cannot be carried on.
        let per = self.model.state_len();
        if self.st.sessions.values().any(|s| s.h.len() != per) {
            self.st.sessions.clear();
        }
        Ok(())
    }
}

impl Detector for LstmDetector {
    fn name(&self) -> &'static str {
        "lstm"
    }

    fn observe(&mut self, c: &CallContext<'_>) {
        if c.event.parent_id.is_some() {
            return;
        }
        let Some(user) = c.user else { return };
        let t = c.event.timestamp;
        let next_token = token(c.service, c.route);
        let next = self.token_id(c, next_token);
        let (reset, input, context) = match self.st.last.get(&user) {
            Some(l) if t - l.seen <= self.session_gap => (false, l.id, l.context),
            _ => (true, self.model.start, [START, START]),
        };
        self.st.last.insert(
            user,
            Last {
                id: next,
                seen: t,
                context: [context[1], next_token],
            },
        );
        self.st.pending.push(PendingStep {
            user,
            reset,
            input,
            next,
            context,
            next_token,
            target: (c.service, c.provider, c.route),
            trace: c.event.trace_id.as_deref().map(str::to_owned),
            user_id: c.event.user_id.as_deref().map(str::to_owned),
        });
        if self.st.pending.len() >= BATCH {
            self.flush(false);
        }
    }

    fn close_window(&mut self, w: &WindowContext<'_>, out: &mut Vec<Anomaly>) {
        self.flush(true);
        self.st.tally.close(w, "lstm", " according to the LSTM", out);
        let gap = self.session_gap;
        self.st.last.retain(|_, l| w.end - l.seen <= gap);
        let live = &self.st.last;
        self.st.sessions.retain(|u, _| live.contains_key(u));
        self.reload_if_changed();
    }
}
