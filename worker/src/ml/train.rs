//! `apiwatch train`: export training data with the worker's feature code, run the Python
//! trainer, check the result against its card and fixtures, and install it as a new version
//! (running workers pick it up at their next window).

use std::path::{Path, PathBuf};
use std::process::Command;

use super::card::invalid;
use super::verify::{verify, VerifyReport};
use super::{MlError, ModelStore, ModelVersion};

fn find_up(rel: &str) -> Option<PathBuf> {
    super::search_dirs().iter().map(|d| d.join(rel)).find(|p| p.exists())
}

/// The trainer's interpreter: `--python`, APIWATCH_PYTHON, or the venv `scripts/train/setup.sh` makes.
pub fn find_python(explicit: Option<&Path>) -> Result<PathBuf, MlError> {
    if let Some(p) = explicit {
        return Ok(p.to_path_buf());
    }
    if let Some(p) = std::env::var_os("APIWATCH_PYTHON").filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(p));
    }
    find_up(".cache/venv-train/bin/python").ok_or_else(|| MlError::ModelMissing {
        dir: PathBuf::from(".cache/venv-train"),
        name: "trainer".into(),
        message: "no trainer environment: run `scripts/train/setup.sh` (numpy, onnx, onnxruntime from PyPI), or pass --python".into(),
    })
}

/// `scripts/train/train.py`, found above the working directory or the executable.
pub fn find_trainer(explicit: Option<&Path>) -> Result<PathBuf, MlError> {
    if let Some(p) = explicit {
        return Ok(p.to_path_buf());
    }
    find_up("scripts/train/train.py").ok_or_else(|| MlError::ModelMissing {
        dir: PathBuf::from("scripts/train"),
        name: "trainer".into(),
        message: "train.py not found: run from the repository or pass --trainer".into(),
    })
}

/// Runs `train.py <kind> <args>`; its progress bars go to this process's stderr.
pub fn run_trainer(python: &Path, trainer: &Path, kind: &str, args: &[String]) -> Result<(), MlError> {
    let status = Command::new(python)
        .arg(trainer)
        .arg(kind)
        .args(args)
        .status()
        .map_err(|e| invalid(python, format!("cannot run the trainer: {e}")))?;
    if !status.success() {
        return Err(invalid(trainer, format!("the trainer failed ({status}); its message is above")));
    }
    Ok(())
}

/// Checks a freshly trained model directory, installs it, and checks the installed copy.
pub fn install_checked(
    env: &ort::environment::Environment,
    store: &ModelStore,
    name: &str,
    trained: &Path,
) -> Result<(ModelVersion, VerifyReport), MlError> {
    let candidate = ModelVersion {
        name: name.to_owned(),
        version: "candidate".into(),
        dir: trained.to_path_buf(),
    };
    verify(env, &candidate)?;
    let installed = store.install(name, trained)?;
    let report = verify(env, &installed)?;
    Ok((installed, report))
}
