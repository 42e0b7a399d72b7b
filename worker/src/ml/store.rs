//! The model store: `DIR/<model>/<version>/{model.onnx, card.json, fixtures.json}` and
//! `DIR/<model>/CURRENT` naming the live version. Installing writes a new version directory and
//! then replaces `CURRENT` by a rename, so a reader sees the old version or the new one, never a
//! half-written one; workers compare `CURRENT` at each window and reload when it changed.

use std::path::{Path, PathBuf};

use super::card::invalid;
use super::{MlError, ModelCard};

#[derive(Clone, Debug)]
pub struct ModelStore {
    pub dir: PathBuf,
}

/// One version of one model on disk.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelVersion {
    pub name: String,
    pub version: String,
    pub dir: PathBuf,
}

impl ModelVersion {
    pub fn model_path(&self) -> PathBuf {
        self.dir.join("model.onnx")
    }
    pub fn card_path(&self) -> PathBuf {
        self.dir.join("card.json")
    }
    pub fn card(&self) -> Result<ModelCard, MlError> {
        ModelCard::read(&self.card_path())
    }
}

impl ModelStore {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        ModelStore { dir: dir.into() }
    }

    /// The store in the configured directory, else `APIWATCH_MODELS`, else the first
    /// `onnx-models` directory above the working directory or the executable.
    pub fn locate(explicit: Option<&Path>) -> Option<Self> {
        if let Some(p) = explicit {
            return Some(ModelStore::new(p));
        }
        if let Some(p) = std::env::var_os("APIWATCH_MODELS").filter(|p| !p.is_empty()) {
            return Some(ModelStore::new(PathBuf::from(p)));
        }
        super::search_dirs()
            .iter()
            .map(|d| d.join("onnx-models"))
            .find(|d| d.is_dir())
            .map(ModelStore::new)
    }

    /// The live version of `name`.
    pub fn current(&self, name: &str) -> Result<ModelVersion, MlError> {
        let pointer = self.dir.join(name).join("CURRENT");
        let version = std::fs::read_to_string(&pointer)
            .map_err(|e| MlError::ModelMissing {
                dir: self.dir.clone(),
                name: name.to_owned(),
                message: format!("cannot read {}: {e}", pointer.display()),
            })?
            .trim()
            .to_owned();
        if version.is_empty() || version.contains('/') || version.contains("..") {
            return Err(invalid(&pointer, format!("`{version}` is not a version name")));
        }
        let dir = self.dir.join(name).join(&version);
        if !dir.join("model.onnx").is_file() {
            return Err(invalid(
                &pointer,
                format!("names version `{version}`, but {} has no model.onnx", dir.display()),
            ));
        }
        Ok(ModelVersion {
            name: name.to_owned(),
            version,
            dir,
        })
    }

    /// The name `CURRENT` holds now (cheap: one small read), to notice a new version.
    pub fn current_name(&self, name: &str) -> Option<String> {
        std::fs::read_to_string(self.dir.join(name).join("CURRENT"))
            .ok()
            .map(|s| s.trim().to_owned())
    }

    /// The live version of `name` loaded by `load`, when it is not `running` and not a version
    /// refused before; a version that fails to load is warned about once and remembered in
    /// `refused`, and the caller keeps its running model.
    pub fn newer<M>(
        &self,
        name: &str,
        running: &str,
        refused: &mut Option<String>,
        load: impl FnOnce(&ModelVersion) -> Result<M, MlError>,
    ) -> Option<M> {
        let current = self.current_name(name)?;
        if current == running || refused.as_deref() == Some(current.as_str()) {
            return None;
        }
        match self.current(name).and_then(|v| load(&v)) {
            Ok(m) => {
                tracing::info!(model = name, from = running, to = %current, "model reloaded");
                Some(m)
            }
            Err(e) => {
                tracing::warn!(model = name, version = %current, error = %e, "new model version refused; keeping the running one");
                *refused = Some(current);
                None
            }
        }
    }

    /// Copies a trained model directory in as the next version and makes it live. The caller
    /// validates it first.
    pub fn install(&self, name: &str, from: &Path) -> Result<ModelVersion, MlError> {
        for file in ["model.onnx", "card.json"] {
            if !from.join(file).is_file() {
                return Err(invalid(&from.join(file), "missing from the trained model"));
            }
        }
        let root = self.dir.join(name);
        std::fs::create_dir_all(&root).map_err(|e| invalid(&root, e.to_string()))?;
        let next = std::fs::read_dir(&root)
            .map_err(|e| invalid(&root, e.to_string()))?
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                e.file_name()
                    .to_str()
                    .and_then(|n| n.strip_prefix('v'))
                    .and_then(|n| n.parse::<u32>().ok())
            })
            .max()
            .unwrap_or(0)
            + 1;
        let version = format!("v{next}");
        let dir = root.join(&version);
        std::fs::create_dir_all(&dir).map_err(|e| invalid(&dir, e.to_string()))?;
        for file in ["model.onnx", "card.json", "fixtures.json"] {
            let src = from.join(file);
            if src.is_file() {
                std::fs::copy(&src, dir.join(file)).map_err(|e| invalid(&src, format!("cannot copy: {e}")))?;
            }
        }
        let tmp = root.join("CURRENT.tmp");
        std::fs::write(&tmp, format!("{version}\n")).map_err(|e| invalid(&tmp, e.to_string()))?;
        std::fs::rename(&tmp, root.join("CURRENT")).map_err(|e| invalid(&tmp, e.to_string()))?;
        Ok(ModelVersion {
            name: name.to_owned(),
            version,
            dir,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn install_adds_a_version_and_switches_current() {
        let d = tempfile::tempdir().unwrap();
        let store = ModelStore::new(d.path().join("models"));
        let trained = d.path().join("trained");
        std::fs::create_dir_all(&trained).unwrap();
        std::fs::write(trained.join("model.onnx"), b"x").unwrap();
        std::fs::write(trained.join("card.json"), b"{}").unwrap();
        assert!(matches!(store.current("ae"), Err(MlError::ModelMissing { .. })));
        assert_eq!(store.install("ae", &trained).unwrap().version, "v1");
        assert_eq!(store.install("ae", &trained).unwrap().version, "v2");
        assert_eq!(store.current("ae").unwrap().version, "v2");
        assert_eq!(store.current_name("ae").as_deref(), Some("v2"));
        std::fs::remove_file(trained.join("card.json")).unwrap();
        assert!(store.install("ae", &trained).is_err());
    }

    #[test]
    fn a_current_pointing_outside_is_refused() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("ae")).unwrap();
        std::fs::write(d.path().join("ae/CURRENT"), "../../etc\n").unwrap();
        let err = ModelStore::new(d.path()).current("ae").unwrap_err().to_string();
        assert!(err.contains("not a version name"), "{err}");
    }
}
