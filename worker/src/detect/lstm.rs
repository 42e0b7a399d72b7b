//! Call-order anomalies by an LSTM (DeepLog-style next-call prediction with top-k). Sessions
//! are the same as the Markov detector's (a user's entry calls, split on inactivity); each keeps
//! the LSTM's hidden and cell state, so a new call costs one step of a batched ONNX run, not a
//! re-run of its history. A call outside the model's top-k predictions for that point of the
//! session is rare; rare calls go to the shared [`RareTally`], which reports a target route
//! whose rare calls stand out from its background.
//!
//! The model and the sessions' state live on an inference thread ([`Offload`]); the pipeline
//! sends calls in batches and goes on, and a window's steps are all in before it is judged.
//!
//! Routes the model never saw map to its unknown token: the session still steps, but a call to
//! or from an unknown route is not judged (the online Markov detector covers routes that are
//! new since training). `apiwatch train` retrains on the current routes; a new version is
//! picked up at the next window.

use rustc_hash::FxHashMap;

use crate::ml::lstm::{is_rare, LstmModel};
use crate::ml::offload::{Offload, Stopped};
use crate::ml::{MlError, ModelStore};
use crate::model::anomaly::Anomaly;
use crate::model::time::{Millis, MINUTE_MS};
use crate::model::Sym;

use super::sequence::{token, Context, RareTally, Token, START};
use super::{CallContext, Detector, Evicted, Persist, WindowContext};

/// Pending calls that trigger a flush (more sessions per ONNX run, fewer runs).
const BATCH: usize = 2048;
/// A flush before the window closes steps a round only if it holds this many sessions; the
/// rest waits for the next flush, so ONNX runs stay large (a run costs tens of microseconds
/// however few rows it has).
const MIN_ROUND: usize = 128;

#[derive(serde::Serialize, serde::Deserialize, Clone)]
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

#[derive(serde::Serialize, serde::Deserialize, Clone)]
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

/// The checkpointed state. `sessions` and the older part of `pending` live on the inference
/// thread and are gathered here only to be saved or restored.
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

/// The inference thread's side: the model, every session's carried state, and calls that wait
/// for a round large enough to be worth a run.
struct Stepper {
    model: LstmModel,
    sessions: FxHashMap<u64, Session>,
    pending: Vec<PendingStep>,
}

enum Job {
    /// New calls; step them (all of them with `all`, else only large rounds).
    Step {
        calls: Vec<PendingStep>,
        all: bool,
    },
    /// Sessions that ended.
    Expire(Vec<u64>),
    Swap(Box<LstmModel>),
    Save,
    Load {
        sessions: FxHashMap<u64, Session>,
        pending: Vec<PendingStep>,
    },
}

#[derive(Default)]
struct Stepped {
    rare: Vec<PendingStep>,
    steps: u64,
    judged: u64,
    unknown: u64,
    failed_batches: u64,
}

enum Done {
    Stepped(Stepped),
    Saved {
        sessions: FxHashMap<u64, Session>,
        pending: Vec<PendingStep>,
    },
    Ok,
}

impl Stepper {
    fn serve(&mut self, job: Job) -> Done {
        match job {
            Job::Step { calls, all } => {
                self.pending.extend(calls);
                Done::Stepped(self.flush(all))
            }
            Job::Expire(users) => {
                for u in users {
                    self.sessions.remove(&u);
                }
                Done::Ok
            }
            Job::Swap(m) => {
                self.model = *m;
                // A new model's state means nothing to the old one: sessions start over.
                self.sessions.clear();
                Done::Ok
            }
            Job::Save => Done::Saved {
                sessions: self.sessions.clone(),
                pending: self.pending.clone(),
            },
            Job::Load { sessions, pending } => {
                // State saved under a model of another size cannot be carried on.
                let per = self.model.state_len();
                self.sessions = if sessions.values().any(|s| s.h.len() != per) {
                    FxHashMap::default()
                } else {
                    sessions
                };
                self.pending = pending;
                Done::Ok
            }
        }
    }

    /// Steps pending calls in order per session, batching across sessions: round r holds each
    /// session's r-th pending call. With `all` false, rounds smaller than [`MIN_ROUND`] (and
    /// everything after them) stay pending.
    fn flush(&mut self, all: bool) -> Stepped {
        let mut done = Stepped::default();
        let pending = std::mem::take(&mut self.pending);
        if pending.is_empty() {
            return done;
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
        let mut rare = Vec::new();
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
                match self.sessions.get(&p.user).filter(|_| !p.reset) {
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
            let result = self.model.step(&tokens, &mut h, &mut c, |j, probs| {
                let p = &pending[members[j]];
                let judged = p.input != unknown && p.next != unknown;
                if judged && is_rare(probs, p.next, top_k, floor) {
                    rare.push(members[j]);
                }
            });
            if let Err(e) = result {
                done.failed_batches += 1;
                tracing::warn!(error = %e, calls = members.len(), "the LSTM could not score a batch");
                continue;
            }
            done.steps += members.len() as u64;
            for (j, &i) in members.iter().enumerate() {
                let p = &pending[i];
                let s = self.sessions.entry(p.user).or_insert_with(|| Session {
                    h: Vec::new(),
                    c: Vec::new(),
                });
                s.h.clear();
                s.h.extend_from_slice(&h[j * per..(j + 1) * per]);
                s.c.clear();
                s.c.extend_from_slice(&c[j * per..(j + 1) * per]);
                if p.input == unknown || p.next == unknown {
                    done.unknown += 1;
                } else {
                    done.judged += 1;
                }
            }
        }
        rare.sort_unstable();
        done.rare = rare.iter().map(|&i| pending[i].clone()).collect();
        if let Some(r) = stopped_at {
            self.pending = pending.into_iter().zip(rounds).filter(|(_, pr)| *pr >= r).map(|(p, _)| p).collect();
        }
        done
    }
}

/// Token ids the pipeline side looks up (the model itself lives on the inference thread).
struct Vocabulary {
    version: String,
    index: FxHashMap<String, i64>,
    start: i64,
}

impl Vocabulary {
    fn of(m: &LstmModel) -> Self {
        Vocabulary {
            version: m.version.clone(),
            index: m.index().clone(),
            start: m.start,
        }
    }
}

pub struct LstmDetector {
    stepper: Offload<Job, Done>,
    vocabulary: Vocabulary,
    unknown: i64,
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
        let vocabulary = Vocabulary::of(&model);
        let unknown = model.unknown;
        let stepper = Stepper {
            model,
            sessions: FxHashMap::default(),
            pending: Vec::new(),
        };
        let stepper =
            Offload::spawn("lstm", stepper, Stepper::serve).map_err(|e| MlError::Ort(format!("cannot start the inference thread: {e}")))?;
        Ok(LstmDetector {
            stepper,
            vocabulary,
            unknown,
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
        let name = format!("{}:{}", c.names.name(c.service), c.names.name(c.route));
        let id = self.vocabulary.index.get(&name).copied().unwrap_or(self.unknown);
        self.ids.insert(t, id);
        id
    }

    /// Sends the calls gathered so far to the inference thread.
    fn submit(&mut self, all: bool) {
        let calls = std::mem::take(&mut self.st.pending);
        let n = calls.len();
        if let Err(e) = self.stepper.submit(Job::Step { calls, all }) {
            self.failed(n, &e);
        }
    }

    fn failed(&mut self, calls: usize, e: &Stopped) {
        self.st.failed_batches += 1;
        tracing::warn!(error = %e, calls, "the LSTM could not score a batch");
    }

    fn record(&mut self, done: Done) {
        let Done::Stepped(s) = done else { return };
        self.st.steps += s.steps;
        self.st.judged += s.judged;
        self.st.unknown += s.unknown;
        self.st.failed_batches += s.failed_batches;
        for p in s.rare {
            self.st.rare += 1;
            self.st
                .tally
                .record(p.target, p.user, p.context, p.next_token, p.trace.as_deref(), p.user_id.as_deref());
        }
    }

    /// Waits for every answer outstanding and records it.
    fn drain(&mut self) {
        loop {
            match self.stepper.take() {
                Ok(Some(done)) => self.record(done),
                Ok(None) => break,
                Err(e) => {
                    self.failed(0, &e);
                    break;
                }
            }
        }
    }

    /// Sends `job` and waits for its answer, recording the answers before it.
    fn call(&mut self, job: Job) -> Result<Done, Stopped> {
        let (earlier, done) = self.stepper.call(job)?;
        for d in earlier {
            self.record(d);
        }
        Ok(done)
    }

    fn reload_if_changed(&mut self) {
        let env = self.env;
        if let Some(m) = self
            .store
            .newer(Self::MODEL, &self.vocabulary.version, &mut self.refused_version, |v| {
                LstmModel::load(env, v)
            })
        {
            let (vocabulary, unknown) = (Vocabulary::of(&m), m.unknown);
            match self.call(Job::Swap(Box::new(m))) {
                Ok(_) => {
                    self.vocabulary = vocabulary;
                    self.unknown = unknown;
                    self.ids.clear();
                }
                Err(e) => tracing::warn!(error = %e, "the LSTM could not take the new model"),
            }
        }
    }
}

impl Persist for LstmDetector {
    fn save_state(&mut self) -> anyhow::Result<Vec<u8>> {
        let Done::Saved { sessions, mut pending } = self.call(Job::Save)? else {
            anyhow::bail!("the LSTM inference thread answered a save with something else");
        };
        // The thread's waiting calls came first, then the ones not sent yet.
        pending.extend(self.st.pending.iter().cloned());
        let saved = State {
            sessions,
            pending,
            ..std::mem::take(&mut self.st)
        };
        let bytes = rmp_serde::to_vec_named(&saved);
        self.st = State {
            sessions: FxHashMap::default(),
            pending: std::mem::take(&mut self.st.pending),
            ..saved
        };
        Ok(bytes?)
    }
    fn load_state(&mut self, bytes: &[u8]) -> anyhow::Result<()> {
        let mut st: State = rmp_serde::from_slice(bytes)?;
        let sessions = std::mem::take(&mut st.sessions);
        let pending = std::mem::take(&mut st.pending);
        self.call(Job::Load { sessions, pending })?;
        self.st = st;
        Ok(())
    }
}

impl Detector for LstmDetector {
    fn name(&self) -> &'static str {
        "lstm"
    }

    fn forget(&mut self, evicted: &Evicted) {
        // Sessions are per user and end by themselves; only the per-route tally is per entity.
        self.st.tally.forget(evicted);
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
            _ => (true, self.vocabulary.start, [START, START]),
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
            self.submit(false);
            while let Some(done) = self.stepper.try_take() {
                self.record(done);
            }
        }
    }

    fn close_window(&mut self, w: &WindowContext<'_>, out: &mut Vec<Anomaly>) {
        self.submit(true);
        self.drain();
        self.st.tally.close(w, "lstm", " according to the LSTM", out);
        let gap = self.session_gap;
        let mut ended = Vec::new();
        self.st.last.retain(|&u, l| {
            let live = w.end - l.seen <= gap;
            if !live {
                ended.push(u);
            }
            live
        });
        if !ended.is_empty() {
            if let Err(e) = self.stepper.submit(Job::Expire(ended)) {
                self.failed(0, &e);
            }
        }
        self.reload_if_changed();
    }
}
