//! Contract checks of a model version before it is used or installed: the card matches the
//! session and the worker's feature code (done by the loaders), and the fixtures the trainer
//! computed with Python's onnxruntime come out the same through `ort` (within 1e-5).

use super::autoencoder::AutoencoderModel;
use super::card::invalid;
use super::lstm::LstmModel;
use super::{MlError, ModelVersion};
use crate::model::features::REQUEST_FEATURES as FEATURES;

/// Largest allowed difference between Python's and Rust's outputs.
pub const TOLERANCE: f32 = 1e-5;

#[derive(serde::Deserialize)]
struct Tensor {
    shape: Vec<usize>,
    data: Vec<f64>,
}

#[derive(serde::Deserialize)]
struct Case {
    inputs: std::collections::BTreeMap<String, Tensor>,
    outputs: std::collections::BTreeMap<String, Tensor>,
}

#[derive(serde::Deserialize)]
struct Fixtures {
    #[serde(default)]
    inputs: Option<std::collections::BTreeMap<String, Tensor>>,
    #[serde(default)]
    outputs: Option<std::collections::BTreeMap<String, Tensor>>,
    #[serde(default)]
    steps: Vec<Case>,
}

/// What a check found.
#[derive(Debug, Clone, serde::Serialize)]
pub struct VerifyReport {
    pub model: String,
    pub version: String,
    pub kind: String,
    pub cases: usize,
    pub values: usize,
    pub max_abs_diff: f32,
}

fn compare(
    v: &ModelVersion,
    expected: &std::collections::BTreeMap<String, Tensor>,
    got: &[(String, Vec<f32>)],
    max: &mut f32,
    values: &mut usize,
) -> Result<(), MlError> {
    for (name, t) in expected {
        let Some((_, actual)) = got.iter().find(|(n, _)| n == name) else {
            return Err(invalid(&v.dir.join("fixtures.json"), format!("the model has no output `{name}`")));
        };
        if actual.len() != t.data.len() || t.shape.iter().product::<usize>() != t.data.len() {
            return Err(invalid(
                &v.dir.join("fixtures.json"),
                format!("output `{name}`: {} values, expected {}", actual.len(), t.data.len()),
            ));
        }
        for (i, (a, e)) in actual.iter().zip(&t.data).enumerate() {
            let d = (a - *e as f32).abs();
            *max = max.max(d);
            if !d.is_finite() || d > TOLERANCE {
                return Err(invalid(
                    &v.dir.join("fixtures.json"),
                    format!("output `{name}`[{i}] is {a} through ort but {e} through Python's onnxruntime"),
                ));
            }
        }
        *values += actual.len();
    }
    Ok(())
}

fn f32s(t: &Tensor) -> Vec<f32> {
    t.data.iter().map(|&x| x as f32).collect()
}

/// Loads the version as the worker would and replays its fixtures.
pub fn verify(env: &ort::environment::Environment, v: &ModelVersion) -> Result<VerifyReport, MlError> {
    let card = v.card()?;
    let path = v.dir.join("fixtures.json");
    let text = std::fs::read_to_string(&path).map_err(|e| invalid(&path, format!("cannot read: {e}")))?;
    let fx: Fixtures = serde_json::from_str(&text).map_err(|e| invalid(&path, format!("not a fixtures file: {e}")))?;
    let (mut max, mut values, mut cases) = (0f32, 0usize, 0usize);
    match card.kind.as_str() {
        "autoencoder" => {
            let mut m = AutoencoderModel::load(env, v, &FEATURES)?;
            let (Some(inputs), Some(outputs)) = (&fx.inputs, &fx.outputs) else {
                return Err(invalid(&path, "no `inputs`/`outputs`"));
            };
            let x = inputs.get("features").ok_or_else(|| invalid(&path, "no `features` input"))?;
            let got = m.run_raw((&x.shape, &f32s(x)))?;
            compare(v, outputs, &got, &mut max, &mut values)?;
            cases += x.shape.first().copied().unwrap_or(0);
        }
        "lstm" => {
            let mut m = LstmModel::load(env, v)?;
            if fx.steps.is_empty() {
                return Err(invalid(&path, "no `steps`"));
            }
            for step in &fx.steps {
                let get = |n: &str| step.inputs.get(n).ok_or_else(|| invalid(&path, format!("a step has no `{n}`")));
                let tokens: Vec<i64> = get("token")?.data.iter().map(|&t| t as i64).collect();
                let (h, c) = (get("h_in")?, get("c_in")?);
                let got = m.run_raw(&tokens, (&h.shape, &f32s(h)), (&c.shape, &f32s(c)))?;
                compare(v, &step.outputs, &got, &mut max, &mut values)?;
                cases += tokens.len();
            }
        }
        other => return Err(invalid(&v.card_path(), format!("unknown model kind `{other}`"))),
    }
    Ok(VerifyReport {
        model: v.name.clone(),
        version: v.version.clone(),
        kind: card.kind,
        cases,
        values,
        max_abs_diff: max,
    })
}
