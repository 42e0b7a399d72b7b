//! Per-request AutoEncoder. Every call's feature vector (the same [`RequestFeaturizer`] the
//! isolation forest uses) goes through the ONNX AutoEncoder in batches; a call whose
//! reconstruction error is above the card's calibrated threshold is unusual, and its
//! per-feature errors say why. Routes whose share of unusual calls stands out are reported by
//! the shared [`UnusualTally`], naming the features that were hardest to reconstruct.
//!
//! Scoring runs on a thread of its own ([`Offload`]): the pipeline sends full batches and goes
//! on; a window's scores are all in before the window is judged.
//!
//! The model is trained offline (`apiwatch train`); a new version installed in the model store
//! is picked up at the next window without a restart.

use std::collections::VecDeque;

use crate::ml::autoencoder::AutoencoderModel;
use crate::ml::offload::Offload;
use crate::ml::{MlError, ModelStore};
use crate::model::anomaly::Anomaly;
use crate::model::time::{Millis, MINUTE_MS};
use crate::model::EntityKey;

use super::request::{RequestFeaturizer, UnusualTally, FEATURES};
use super::{CallContext, Detector, Evicted, Persist, WindowContext};

const NF: usize = FEATURES.len();
/// Calls scored per ONNX run.
const BATCH: usize = 2048;
/// A route is judged once it has this many calls and this much history: before that its norms,
/// clients and agents are all new, and their novelty is not an anomaly.
const MIN_ROUTE_CALLS: u64 = 300;
const MIN_ROUTE_AGE: Millis = 15 * MINUTE_MS;
/// Windows a judged route's usual share of unusual calls is learned before it can be reported.
const WARMUP_WINDOWS: u64 = 30;

/// The features of a call the AutoEncoder judges (its route is known well enough), else `None`.
/// The training export uses the same gate, so the model learns what it will be shown.
pub fn judged_features(featurizer: &mut RequestFeaturizer, c: &CallContext<'_>) -> Option<[f64; NF]> {
    let x = featurizer.features(c)?;
    let (calls, first_seen) = featurizer.route_age(c.route_entity)?;
    (calls >= MIN_ROUTE_CALLS && c.event.timestamp - first_seen >= MIN_ROUTE_AGE).then_some(x)
}

#[derive(serde::Serialize, serde::Deserialize)]
struct PendingCall {
    route_entity: u32,
    key: EntityKey,
    x: [f32; NF],
    trace: Option<String>,
    user: Option<u64>,
}

#[derive(serde::Serialize, serde::Deserialize, Default)]
struct State {
    featurizer: RequestFeaturizer,
    tally: UnusualTally,
    pending: Vec<PendingCall>,
    judged: u64,
    unusual: u64,
    failed_batches: u64,
}

/// What the inference thread is asked to do.
enum Job {
    Score(Vec<f32>),
    Swap(Box<AutoencoderModel>),
}

/// What it answers: per-feature errors and scores of a batch, or that the model was swapped.
enum Done {
    Scored(Result<(Vec<f32>, Vec<f32>), MlError>),
    Swapped,
}

fn serve(model: &mut AutoencoderModel, job: Job) -> Done {
    match job {
        Job::Score(rows) => {
            let (mut errors, mut scores) = (Vec::new(), Vec::new());
            Done::Scored(model.score(&rows, &mut errors, &mut scores).map(|()| (errors, scores)))
        }
        Job::Swap(m) => {
            *model = *m;
            Done::Swapped
        }
    }
}

/// The calibration the detector judges scores with (the model itself lives on the thread).
struct Calibration {
    version: String,
    threshold: f32,
    /// Each feature's usual reconstruction error on normal data.
    usual: [f64; NF],
}

impl Calibration {
    fn of(m: &AutoencoderModel) -> Self {
        Calibration {
            version: m.version.clone(),
            threshold: m.threshold,
            usual: std::array::from_fn(|j| m.card.feature_error_mean.get(j).copied().unwrap_or(0.0)),
        }
    }
}

pub struct AutoencoderDetector {
    scorer: Offload<Job, Done>,
    calibration: Calibration,
    store: ModelStore,
    env: &'static ort::environment::Environment,
    st: State,
    /// Batches sent to the thread, oldest first, waiting for their scores.
    in_flight: VecDeque<Vec<PendingCall>>,
    refused_version: Option<String>,
}

impl AutoencoderDetector {
    pub const MODEL: &'static str = "autoencoder";

    pub fn load(env: &'static ort::environment::Environment, store: &ModelStore) -> Result<Self, MlError> {
        let v = store.current(Self::MODEL)?;
        let model = AutoencoderModel::load(env, &v, &FEATURES)?;
        let calibration = Calibration::of(&model);
        let scorer =
            Offload::spawn("autoencoder", model, serve).map_err(|e| MlError::Ort(format!("cannot start the inference thread: {e}")))?;
        Ok(AutoencoderDetector {
            scorer,
            calibration,
            store: store.clone(),
            env,
            st: State {
                tally: UnusualTally::with_warmup(WARMUP_WINDOWS),
                ..State::default()
            },
            in_flight: VecDeque::new(),
            refused_version: None,
        })
    }

    pub fn version(&self) -> &str {
        &self.calibration.version
    }

    /// Sends the pending calls to the inference thread.
    fn submit(&mut self) {
        if self.st.pending.is_empty() {
            return;
        }
        let batch = std::mem::take(&mut self.st.pending);
        let mut rows = Vec::with_capacity(batch.len() * NF);
        for p in &batch {
            rows.extend_from_slice(&p.x);
        }
        match self.scorer.submit(Job::Score(rows)) {
            Ok(()) => self.in_flight.push_back(batch),
            Err(e) => self.failed(batch.len(), &e.to_string()),
        }
    }

    fn failed(&mut self, calls: usize, error: &str) {
        // Counted and reported; the other detectors still see these calls.
        self.st.failed_batches += 1;
        tracing::warn!(error, calls, "the AutoEncoder could not score a batch");
    }

    /// Records the scores of the oldest batch in flight.
    fn record(&mut self, done: Done) {
        let Done::Scored(result) = done else { return };
        let Some(batch) = self.in_flight.pop_front() else { return };
        let (errors, scores) = match result {
            Ok(r) => r,
            Err(e) => return self.failed(batch.len(), &e.to_string()),
        };
        let cal = &self.calibration;
        for (i, p) in batch.into_iter().enumerate() {
            let unusual = scores[i] > cal.threshold;
            // A feature's share of the blame is its error above what it usually costs (some,
            // like the hour of day, are never reconstructed well and would otherwise always lead).
            let excess: [f64; NF] = std::array::from_fn(|j| (f64::from(errors[i * NF + j]) - cal.usual[j]).max(0.0));
            self.st.judged += 1;
            self.st.unusual += u64::from(unusual);
            self.st
                .tally
                .record(p.route_entity, p.key, unusual, &excess, p.trace.as_deref(), p.user);
        }
    }

    /// Waits for every batch in flight and records it.
    fn drain(&mut self) {
        loop {
            match self.scorer.take() {
                Ok(Some(done)) => self.record(done),
                Ok(None) => break,
                Err(e) => {
                    let lost: usize = self.in_flight.drain(..).map(|b| b.len()).sum();
                    self.failed(lost, &e.to_string());
                    break;
                }
            }
        }
    }

    /// Loads a newly installed version, keeping the old one if the new one does not pass.
    fn reload_if_changed(&mut self) {
        let env = self.env;
        if let Some(m) = self
            .store
            .newer(Self::MODEL, &self.calibration.version, &mut self.refused_version, |v| {
                AutoencoderModel::load(env, v, &FEATURES)
            })
        {
            let calibration = Calibration::of(&m);
            match self.scorer.call(Job::Swap(Box::new(m))) {
                Ok((earlier, _)) => {
                    // Batches sent before the swap were scored by the old model: judge them so.
                    for done in earlier {
                        self.record(done);
                    }
                    self.calibration = calibration;
                }
                Err(e) => tracing::warn!(error = %e, "the AutoEncoder could not take the new model"),
            }
        }
    }
}

impl Persist for AutoencoderDetector {
    fn save_state(&mut self) -> anyhow::Result<Vec<u8>> {
        self.drain();
        Ok(rmp_serde::to_vec_named(&self.st)?)
    }
    fn load_state(&mut self, bytes: &[u8]) -> anyhow::Result<()> {
        self.drain();
        self.st = rmp_serde::from_slice(bytes)?;
        Ok(())
    }
}

impl Detector for AutoencoderDetector {
    fn name(&self) -> &'static str {
        "autoencoder"
    }

    fn forget(&mut self, evicted: &Evicted) {
        self.st.featurizer.forget(evicted);
        self.st.tally.forget(evicted);
    }

    fn observe(&mut self, c: &CallContext<'_>) {
        let Some(x) = judged_features(&mut self.st.featurizer, c) else {
            return;
        };
        self.st.pending.push(PendingCall {
            route_entity: c.route_entity,
            key: EntityKey::Route {
                service: c.service,
                provider: c.provider,
                route: c.route,
            },
            x: x.map(|v| v as f32),
            trace: c.event.trace_id.as_deref().map(str::to_owned),
            user: c.user,
        });
        if self.st.pending.len() >= BATCH {
            self.submit();
            while let Some(done) = self.scorer.try_take() {
                self.record(done);
            }
        }
    }

    fn close_window(&mut self, w: &WindowContext<'_>, out: &mut Vec<Anomaly>) {
        self.submit();
        self.drain();
        self.st.tally.close(w, "autoencoder", "AutoEncoder", out);
        self.reload_if_changed();
    }
}
