//! The learned models (AutoEncoder, LSTM), run by ONNX Runtime through `ort`.
//!
//! The runtime is a shared library loaded at run time (`ort`'s `load-dynamic`): nothing is
//! downloaded at build time. It is found at the configured path, then `ORT_DYLIB_PATH`, then
//! `.cache/onnxruntime/libonnxruntime.so` above the working directory or the executable
//! (`scripts/onnxruntime.sh` puts it there). Models live in a [`store::ModelStore`]: one
//! directory per model, versions side by side, a `CURRENT` file naming the live one, so a new
//! version is installed by one rename and picked up by running workers.

pub mod autoencoder;
pub mod card;
pub mod data;
pub mod eval;
pub mod lstm;
pub mod offload;
pub mod store;
pub mod train;
pub mod verify;

/// Time spent in ONNX Runtime since the process started, by model (for `/metrics`): process
/// wide, like a Prometheus client's default registry, since every pipeline's sessions add to it.
pub mod inference_time {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::Duration;

    /// The models timed.
    pub const MODELS: [&str; 2] = ["autoencoder", "lstm"];
    static NANOS: [AtomicU64; 2] = [AtomicU64::new(0), AtomicU64::new(0)];
    static RUNS: [AtomicU64; 2] = [AtomicU64::new(0), AtomicU64::new(0)];
    static ROWS: [AtomicU64; 2] = [AtomicU64::new(0), AtomicU64::new(0)];

    /// Adds one run of `model` (an index into [`MODELS`]) over `rows` inputs that took `took`.
    pub fn record(model: usize, rows: usize, took: Duration) {
        NANOS[model].fetch_add(took.as_nanos() as u64, Ordering::Relaxed);
        RUNS[model].fetch_add(1, Ordering::Relaxed);
        ROWS[model].fetch_add(rows as u64, Ordering::Relaxed);
    }

    /// `(model, seconds, runs, rows)` for each model.
    pub fn totals() -> Vec<(&'static str, f64, u64, u64)> {
        MODELS
            .iter()
            .enumerate()
            .map(|(i, m)| {
                (
                    *m,
                    NANOS[i].load(Ordering::Relaxed) as f64 / 1e9,
                    RUNS[i].load(Ordering::Relaxed),
                    ROWS[i].load(Ordering::Relaxed),
                )
            })
            .collect()
    }
}

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use ort::environment::Environment;
use ort::session::builder::GraphOptimizationLevel;
use ort::session::Session;

pub use card::ModelCard;
pub use store::{ModelStore, ModelVersion};

/// What can go wrong with the models; callers branch on a missing runtime (run without models).
#[derive(Debug, thiserror::Error)]
pub enum MlError {
    #[error("the ONNX Runtime library was not found (looked at {}); run `scripts/onnxruntime.sh`, or set ORT_DYLIB_PATH or `models.runtime` to a libonnxruntime.so 1.31", looked.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", "))]
    RuntimeMissing { looked: Vec<PathBuf> },
    #[error("could not load the ONNX Runtime library {path}: {message}")]
    RuntimeLoad { path: PathBuf, message: String },
    #[error("no model `{name}` in {dir}: {message}")]
    ModelMissing { dir: PathBuf, name: String, message: String },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("ONNX Runtime: {0}")]
    Ort(String),
}

impl From<ort::Error> for MlError {
    fn from(e: ort::Error) -> Self {
        MlError::Ort(e.to_string())
    }
}

static ENVIRONMENT: OnceLock<Result<Environment, String>> = OnceLock::new();

/// Where the runtime library is looked for, in order.
pub fn runtime_candidates(explicit: Option<&Path>) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Some(p) = explicit {
        out.push(p.to_path_buf());
    }
    if let Some(p) = std::env::var_os("ORT_DYLIB_PATH").filter(|p| !p.is_empty()) {
        out.push(PathBuf::from(p));
    }
    for dir in search_dirs() {
        let p = dir.join(".cache/onnxruntime/libonnxruntime.so");
        if !out.contains(&p) {
            out.push(p);
        }
    }
    out
}

/// The working directory, the executable's directory, and every directory above them: where
/// the runtime, the model store and the trainer are looked for when no path is configured.
pub fn search_dirs() -> Vec<PathBuf> {
    let mut bases = Vec::new();
    if let Ok(cwd) = std::env::current_dir() {
        bases.push(cwd);
    }
    if let Some(dir) = std::env::current_exe().ok().and_then(|e| e.parent().map(Path::to_path_buf)) {
        bases.push(dir);
    }
    bases.iter().flat_map(|b| b.ancestors().map(Path::to_path_buf)).collect()
}

/// Loads the runtime once per process; later calls return the same environment (the first
/// caller's path wins, as a process can hold one runtime).
pub fn environment(explicit: Option<&Path>) -> Result<&'static Environment, MlError> {
    let looked = runtime_candidates(explicit);
    let entry = ENVIRONMENT.get_or_init(|| {
        let Some(path) = looked.iter().find(|p| p.is_file()) else {
            return Err(String::new());
        };
        let env = ort::init_from(path)
            .map_err(|e| format!("{}: {e}", path.display()))?
            .with_name("apiwatch")
            .build()
            .map_err(|e| format!("{}: {e}", path.display()))?;
        tracing::info!(library = %path.display(), "ONNX Runtime loaded");
        Ok(env)
    });
    match entry {
        Ok(env) => Ok(env),
        Err(m) if m.is_empty() => Err(MlError::RuntimeMissing { looked }),
        Err(m) => Err(MlError::RuntimeLoad {
            path: looked.iter().find(|p| p.is_file()).cloned().unwrap_or_default(),
            message: m.clone(),
        }),
    }
}

/// A session on one thread: the worker scores in batches on its own thread, and intra-op
/// threads would fight the pipeline for the same cores.
pub fn open_session(env: &Environment, model: &Path) -> Result<Session, MlError> {
    let session = Session::builder(env)?
        .with_intra_threads(1)
        .map_err(|e| MlError::Ort(e.to_string()))?
        .with_inter_threads(1)
        .map_err(|e| MlError::Ort(e.to_string()))?
        .with_optimization_level(GraphOptimizationLevel::Level3)
        .map_err(|e| MlError::Ort(e.to_string()))?
        .commit_from_file(model)
        .map_err(|e| MlError::Invalid {
            path: model.to_path_buf(),
            message: e.to_string(),
        })?;
    Ok(session)
}

/// The runtime and the model store, as the detectors need them.
#[derive(Clone)]
pub struct Models {
    pub env: &'static Environment,
    pub store: ModelStore,
}

/// The runtime has no Debug of its own; the store says where the models are.
impl std::fmt::Debug for Models {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Models({:?})", self.store)
    }
}

impl Models {
    /// Loads the runtime and finds the store (see [`runtime_candidates`], [`ModelStore::locate`]).
    pub fn open(runtime: Option<&Path>, dir: Option<&Path>) -> Result<Self, MlError> {
        let env = environment(runtime)?;
        let store = ModelStore::locate(dir).ok_or_else(|| MlError::ModelMissing {
            dir: dir.map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("onnx-models")),
            name: "any".into(),
            message: "no model directory found; set `models.dir` or APIWATCH_MODELS, or run from the repository".into(),
        })?;
        Ok(Models { env, store })
    }
}
