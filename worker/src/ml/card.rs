//! Model cards: what the trainer promises about a model (inputs, outputs, feature order,
//! vocabulary, calibrated thresholds, training data), checked against the ONNX session and the
//! worker's own feature code before a model is used.

use std::path::{Path, PathBuf};

use ort::session::Session;
use ort::value::TensorElementType;

use super::MlError;

/// One input or output tensor as the card describes it (`-1` = any size).
#[derive(serde::Deserialize, serde::Serialize, Clone, Debug, PartialEq)]
pub struct TensorSpec {
    pub name: String,
    pub shape: Vec<i64>,
    pub dtype: String,
}

#[derive(serde::Deserialize, serde::Serialize, Clone, Debug)]
pub struct ModelCard {
    pub name: String,
    pub kind: String,
    pub inputs: Vec<TensorSpec>,
    pub outputs: Vec<TensorSpec>,
    /// AutoEncoder: feature names in input order.
    #[serde(default)]
    pub features: Vec<String>,
    /// AutoEncoder: the score above which a call is unusual.
    #[serde(default)]
    pub threshold: Option<f64>,
    /// AutoEncoder: mean error of each feature on held-out normal rows.
    #[serde(default)]
    pub feature_error_mean: Vec<f64>,
    /// LSTM: token strings by id.
    #[serde(default)]
    pub vocabulary: Vec<String>,
    #[serde(default)]
    pub unknown_token: Option<usize>,
    #[serde(default)]
    pub start_token: Option<usize>,
    #[serde(default)]
    pub end_token: Option<usize>,
    #[serde(default)]
    pub top_k: Option<usize>,
    /// LSTM: a call below this probability is rare even inside the top k.
    #[serde(default)]
    pub min_probability: Option<f64>,
    #[serde(default)]
    pub layers: Option<usize>,
    #[serde(default)]
    pub hidden: Option<usize>,
    #[serde(default)]
    pub training: serde_json::Value,
    #[serde(default)]
    pub validation: serde_json::Value,
    #[serde(default)]
    pub model_sha256: Option<String>,
}

impl ModelCard {
    pub fn read(path: &Path) -> Result<Self, MlError> {
        let text = std::fs::read_to_string(path).map_err(|e| invalid(path, format!("cannot read the card: {e}")))?;
        serde_json::from_str(&text).map_err(|e| invalid(path, format!("not a model card: {e}")))
    }

    /// Checks that the session has exactly the card's inputs and outputs (names, element types,
    /// ranks, fixed sizes).
    pub fn check_session(&self, session: &Session, path: &Path) -> Result<(), MlError> {
        let list = |outlets: &[ort::value::Outlet]| -> Vec<TensorSpec> {
            outlets
                .iter()
                .map(|o| TensorSpec {
                    name: o.name().to_owned(),
                    shape: o.dtype().tensor_shape().map(|s| s.to_vec()).unwrap_or_default(),
                    dtype: match o.dtype().tensor_type() {
                        Some(TensorElementType::Float32) => "float32".into(),
                        Some(TensorElementType::Int64) => "int64".into(),
                        other => format!("{other:?}"),
                    },
                })
                .collect()
        };
        for (what, card, actual) in [
            ("input", &self.inputs, list(session.inputs())),
            ("output", &self.outputs, list(session.outputs())),
        ] {
            if card.len() != actual.len() {
                return Err(invalid(
                    path,
                    format!("the card lists {} {what}s, the model has {}", card.len(), actual.len()),
                ));
            }
            for (c, a) in card.iter().zip(&actual) {
                let same_dims = c.shape.len() == a.shape.len() && c.shape.iter().zip(&a.shape).all(|(x, y)| *x < 0 || *y < 0 || x == y);
                if c.name != a.name || c.dtype != a.dtype || !same_dims {
                    return Err(invalid(
                        path,
                        format!(
                            "{what} `{}` {:?} {} in the card, but the model has `{}` {:?} {}",
                            c.name, c.shape, c.dtype, a.name, a.shape, a.dtype
                        ),
                    ));
                }
            }
        }
        Ok(())
    }
}

pub(crate) fn invalid(path: &Path, message: impl Into<String>) -> MlError {
    MlError::Invalid {
        path: PathBuf::from(path),
        message: message.into(),
    }
}
