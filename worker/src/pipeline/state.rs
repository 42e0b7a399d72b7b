//! What a checkpoint holds: everything the pipeline learned, under a [`StateKey`] naming exactly
//! the settings it depends on. A state restores only under the same key; any other setting
//! (alert thresholds, input checks) may change between runs without losing what was learned.

use serde::{Deserialize, Serialize};

use super::limits::{EntityLimits, EntityNames};
use super::reorder::ReorderBuffer;
use super::windows::WindowAggregator;
use super::{Pipeline, PipelineConfig, PipelineSetup, RunStats, SpanIndex};
use crate::alert::correlate::WindowDigest;
use crate::alert::AlertManager;
use crate::detect::DetectorKind;
use crate::model::time::Millis;
use crate::model::Interner;
use crate::onboard::ServiceRegistry;
use crate::pipeline::routes::{RouteLearner, RouteLimits};

/// Why a saved state could not be used.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("the saved state was made with other settings ({changed}); start fresh or restore the old configuration")]
    ConfigChanged { changed: String },
    #[error("the saved state is unreadable: {0}")]
    Corrupt(String),
    #[error(transparent)]
    Models(#[from] crate::ml::MlError),
}

/// The settings a saved state depends on, and the format's version.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StateKey {
    /// Bumped whenever the saved format or a detector's state changes meaning.
    pub version: u32,
    pub window: Millis,
    pub lateness: Millis,
    pub detectors: Vec<DetectorKind>,
    pub seed: u64,
    pub routes: RouteLimits,
    pub limits: EntityLimits,
}

impl StateKey {
    /// The format this build writes.
    pub const VERSION: u32 = 6;

    pub fn of(cfg: &PipelineConfig) -> Self {
        StateKey {
            version: Self::VERSION,
            window: cfg.window,
            lateness: cfg.lateness,
            detectors: cfg.detectors.clone(),
            seed: cfg.seed,
            routes: cfg.routes,
            limits: cfg.limits,
        }
    }

    /// The configuration keys that differ from `other`, empty when the state fits.
    pub fn changes(&self, other: &StateKey) -> Vec<&'static str> {
        let mut out = Vec::new();
        let mut differ = |same: bool, key: &'static str| {
            if !same {
                out.push(key);
            }
        };
        differ(self.version == other.version, "the state format (another apiwatch version)");
        differ(self.window == other.window, "windows.width_secs");
        differ(self.lateness == other.lateness, "windows.lateness_secs");
        differ(self.detectors == other.detectors, "detectors.enabled");
        differ(self.seed == other.seed, "detectors.model_seed");
        differ(self.routes == other.routes, "routes");
        differ(self.limits == other.limits, "limits");
        out
    }
}

#[derive(Serialize)]
struct StateRef<'a> {
    key: StateKey,
    names: &'a Interner,
    entity_names: &'a EntityNames,
    routes: &'a RouteLearner,
    registry: &'a ServiceRegistry,
    reorder: &'a ReorderBuffer,
    windows: &'a WindowAggregator,
    spans: &'a SpanIndex,
    alerts: &'a AlertManager,
    pending: &'a WindowDigest,
    window_start: Option<Millis>,
    judged_from: Option<Millis>,
    stats: &'a RunStats,
    detectors: Vec<(String, Vec<u8>)>,
}

/// The owned twin of [`StateRef`]. Unknown fields are refused, so a field written but not
/// read back fails the restore tests instead of being lost quietly.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StateOwned {
    key: StateKey,
    names: Interner,
    entity_names: EntityNames,
    routes: RouteLearner,
    registry: ServiceRegistry,
    reorder: ReorderBuffer,
    windows: WindowAggregator,
    spans: SpanIndex,
    alerts: AlertManager,
    #[serde(default)]
    pending: WindowDigest,
    window_start: Option<Millis>,
    #[serde(default)]
    judged_from: Option<Millis>,
    stats: RunStats,
    detectors: Vec<(String, Vec<u8>)>,
}

impl Pipeline {
    /// Everything learned so far, compressed, for a checkpoint. [`Pipeline::restore`] with the
    /// same configuration gives a pipeline that continues exactly as this one would. Mutable
    /// because detectors with inference in flight finish it first.
    pub fn save_state(&mut self) -> anyhow::Result<Vec<u8>> {
        let detectors = self
            .detectors
            .iter_mut()
            .map(|d| Ok((d.name().to_owned(), d.save_state()?)))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let state = StateRef {
            key: StateKey::of(&self.cfg),
            names: &self.names,
            entity_names: &self.entity_names,
            routes: &self.routes,
            registry: &self.registry,
            reorder: &self.reorder,
            windows: &self.windows,
            spans: &self.spans,
            alerts: &self.alerts,
            pending: &self.pending,
            window_start: self.window_start,
            judged_from: self.judged_from,
            stats: &self.stats,
            detectors,
        };
        let raw = rmp_serde::to_vec_named(&state)?;
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut z, &raw)?;
        Ok(z.finish()?)
    }

    /// Rebuilds a pipeline from [`Pipeline::save_state`]. Fails if the state was saved with a
    /// different configuration (windows, detectors, seed...), since its models would not fit.
    pub fn restore(setup: impl Into<PipelineSetup>, bytes: &[u8]) -> Result<Self, StateError> {
        let setup = setup.into();
        let mut raw = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::ZlibDecoder::new(bytes), &mut raw).map_err(|e| StateError::Corrupt(e.to_string()))?;
        let state: StateOwned = rmp_serde::from_slice(&raw).map_err(|e| StateError::Corrupt(e.to_string()))?;
        let changed = state.key.changes(&StateKey::of(&setup.cfg));
        if !changed.is_empty() {
            return Err(StateError::ConfigChanged {
                changed: changed.join(", "),
            });
        }
        let mut p = Pipeline::new(setup)?;
        let names: Vec<&str> = p.detectors.iter().map(|d| d.name()).collect();
        if names.len() != state.detectors.len() || names.iter().zip(&state.detectors).any(|(n, (saved, _))| n != saved) {
            return Err(StateError::ConfigChanged {
                changed: "detectors.enabled (the models available)".into(),
            });
        }
        for (d, (name, bytes)) in p.detectors.iter_mut().zip(&state.detectors) {
            d.load_state(bytes).map_err(|e| StateError::Corrupt(format!("{name}: {e}")))?;
        }
        p.names = state.names;
        p.entity_names = state.entity_names;
        p.routes = state.routes;
        p.registry = state.registry;
        p.reorder = state.reorder;
        p.windows = state.windows;
        p.spans = state.spans;
        p.alerts = state.alerts;
        p.pending = state.pending;
        p.window_start = state.window_start;
        p.judged_from = state.judged_from;
        p.stats = state.stats;
        Ok(p)
    }
}
