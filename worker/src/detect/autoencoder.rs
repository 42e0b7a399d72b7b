//! Per-request AutoEncoder. Every call's feature vector (the same [`RequestFeaturizer`] the
//! isolation forest uses) goes through the ONNX AutoEncoder in batches; a call whose
//! reconstruction error is above the card's calibrated threshold is unusual, and its
//! per-feature errors say why. Routes whose share of unusual calls stands out are reported by
//! the shared [`UnusualTally`], naming the features that were hardest to reconstruct.
//!
//! The model is trained offline (`apiwatch train`); a new version installed in the model store
//! is picked up at the next window without a restart.

use crate::ml::autoencoder::AutoencoderModel;
use crate::ml::{MlError, ModelStore};
use crate::model::anomaly::Anomaly;
use crate::model::time::{Millis, MINUTE_MS};
use crate::model::EntityKey;

use super::request::{RequestFeaturizer, UnusualTally, FEATURES};
use super::{CallContext, Detector, Persist, WindowContext};

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

pub struct AutoencoderDetector {
    model: AutoencoderModel,
    store: ModelStore,
    env: &'static ort::environment::Environment,
    st: State,
    rows: Vec<f32>,
    errors: Vec<f32>,
    scores: Vec<f32>,
    refused_version: Option<String>,
}

impl AutoencoderDetector {
    pub const MODEL: &'static str = "autoencoder";

    pub fn load(env: &'static ort::environment::Environment, store: &ModelStore) -> Result<Self, MlError> {
        let v = store.current(Self::MODEL)?;
        let model = AutoencoderModel::load(env, &v, &FEATURES)?;
        Ok(AutoencoderDetector {
            model,
            store: store.clone(),
            env,
            st: State {
                tally: UnusualTally::with_warmup(WARMUP_WINDOWS),
                ..State::default()
            },
            rows: Vec::new(),
            errors: Vec::new(),
            scores: Vec::new(),
            refused_version: None,
        })
    }

    pub fn version(&self) -> &str {
        &self.model.version
    }

    /// Scores the pending calls and counts them per route.
    fn flush(&mut self) {
        if self.st.pending.is_empty() {
            return;
        }
        self.rows.clear();
        for p in &self.st.pending {
            self.rows.extend_from_slice(&p.x);
        }
        if let Err(e) = self.model.score(&self.rows, &mut self.errors, &mut self.scores) {
            // Counted and reported; the other detectors still see these calls.
            self.st.failed_batches += 1;
            tracing::warn!(error = %e, calls = self.st.pending.len(), "the AutoEncoder could not score a batch");
            self.st.pending.clear();
            return;
        }
        let threshold = self.model.threshold;
        // A feature's share of the blame is its error above what it usually costs (some, like
        // the hour of day, are never reconstructed well and would otherwise always lead).
        let usual: [f64; NF] = std::array::from_fn(|j| self.model.card.feature_error_mean.get(j).copied().unwrap_or(0.0));
        for (i, p) in self.st.pending.drain(..).enumerate() {
            let unusual = self.scores[i] > threshold;
            let excess: [f64; NF] = std::array::from_fn(|j| (f64::from(self.errors[i * NF + j]) - usual[j]).max(0.0));
            self.st.judged += 1;
            self.st.unusual += u64::from(unusual);
            self.st
                .tally
                .record(p.route_entity, p.key, unusual, &excess, p.trace.as_deref(), p.user);
        }
    }

    /// Loads a newly installed version, keeping the old one if the new one does not pass.
    fn reload_if_changed(&mut self) {
        let env = self.env;
        if let Some(m) = self.store.newer(Self::MODEL, &self.model.version, &mut self.refused_version, |v| {
            AutoencoderModel::load(env, v, &FEATURES)
        }) {
            self.model = m;
        }
    }
}

impl Persist for AutoencoderDetector {
    fn save_state(&self) -> anyhow::Result<Vec<u8>> {
        Ok(rmp_serde::to_vec_named(&self.st)?)
    }
    fn load_state(&mut self, bytes: &[u8]) -> anyhow::Result<()> {
        self.st = rmp_serde::from_slice(bytes)?;
        Ok(())
    }
}

impl Detector for AutoencoderDetector {
    fn name(&self) -> &'static str {
        "autoencoder"
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
            self.flush();
        }
    }

    fn close_window(&mut self, w: &WindowContext<'_>, out: &mut Vec<Anomaly>) {
        self.flush();
        self.st.tally.close(w, "autoencoder", "AutoEncoder", out);
        self.reload_if_changed();
    }
}
