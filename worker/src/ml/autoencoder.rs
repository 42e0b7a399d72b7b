//! The AutoEncoder model: per-request feature rows in, per-feature reconstruction errors and a
//! score out, in batches.

use ort::session::Session;
use ort::value::TensorRef;

use super::card::invalid;
use super::{open_session, MlError, ModelCard, ModelVersion};

pub struct AutoencoderModel {
    session: Session,
    pub card: ModelCard,
    pub version: String,
    pub threshold: f32,
    pub width: usize,
}

impl AutoencoderModel {
    /// Loads a version and checks it against its card and the worker's feature names.
    pub fn load(env: &ort::environment::Environment, v: &ModelVersion, features: &[&str]) -> Result<Self, MlError> {
        let card = v.card()?;
        let path = v.model_path();
        let session = open_session(env, &path)?;
        card.check_session(&session, &path)?;
        if card.kind != "autoencoder" {
            return Err(invalid(&v.card_path(), format!("kind `{}`, expected `autoencoder`", card.kind)));
        }
        if card.features != features {
            return Err(invalid(
                &v.card_path(),
                format!(
                    "trained on features {:?}, but this worker computes {:?}: retrain with `apiwatch train`",
                    card.features, features
                ),
            ));
        }
        let threshold = card.threshold.ok_or_else(|| invalid(&v.card_path(), "no calibrated `threshold`"))? as f32;
        Ok(AutoencoderModel {
            session,
            width: features.len(),
            card,
            version: v.version.clone(),
            threshold,
        })
    }

    /// Scores `rows` (row-major, `width` columns): fills `errors` (same layout) and `scores`.
    pub fn score(&mut self, rows: &[f32], errors: &mut Vec<f32>, scores: &mut Vec<f32>) -> Result<(), MlError> {
        let n = rows.len() / self.width;
        errors.clear();
        scores.clear();
        if n == 0 {
            return Ok(());
        }
        let input = TensorRef::from_array_view(([n, self.width], rows))?;
        let started = std::time::Instant::now();
        let out = self.session.run(ort::inputs!["features" => input])?;
        super::inference_time::record(0, n, started.elapsed());
        let (_, e) = out["feature_errors"].try_extract_tensor::<f32>()?;
        let (_, s) = out["score"].try_extract_tensor::<f32>()?;
        errors.extend_from_slice(e);
        scores.extend_from_slice(s);
        Ok(())
    }

    /// Runs raw named inputs (the contract tests' fixtures).
    pub fn run_raw(&mut self, features: (&[usize], &[f32])) -> Result<Vec<(String, Vec<f32>)>, MlError> {
        let input = TensorRef::from_array_view((features.0.to_vec(), features.1))?;
        let out = self.session.run(ort::inputs!["features" => input])?;
        let mut v = Vec::new();
        for (name, value) in out.iter() {
            v.push((name.to_owned(), value.try_extract_tensor::<f32>()?.1.to_vec()));
        }
        Ok(v)
    }
}
