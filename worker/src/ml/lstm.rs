//! The LSTM next-call model, one step at a time with carried state: each session keeps its
//! hidden and cell state, so a new call costs one batched step, not a re-run of its history.

use ort::session::Session;
use ort::value::TensorRef;
use rustc_hash::FxHashMap;

use super::card::invalid;
use super::{open_session, MlError, ModelCard, ModelVersion};

pub struct LstmModel {
    session: Session,
    pub card: ModelCard,
    pub version: String,
    pub layers: usize,
    pub hidden: usize,
    pub top_k: usize,
    pub min_probability: f32,
    pub start: i64,
    pub unknown: i64,
    pub end: Option<i64>,
    index: FxHashMap<String, i64>,
    // Reused step buffers.
    h: Vec<f32>,
    c: Vec<f32>,
}

impl LstmModel {
    pub fn load(env: &ort::environment::Environment, v: &ModelVersion) -> Result<Self, MlError> {
        let card = v.card()?;
        let path = v.model_path();
        let session = open_session(env, &path)?;
        card.check_session(&session, &path)?;
        let cp = v.card_path();
        if card.kind != "lstm" {
            return Err(invalid(&cp, format!("kind `{}`, expected `lstm`", card.kind)));
        }
        let need = |x: Option<usize>, what: &str| x.ok_or_else(|| invalid(&cp, format!("no `{what}`")));
        let layers = need(card.layers, "layers")?;
        let hidden = need(card.hidden, "hidden")?;
        let top_k = need(card.top_k, "top_k")?;
        let start = need(card.start_token, "start_token")? as i64;
        let unknown = need(card.unknown_token, "unknown_token")? as i64;
        let vocab = card.vocabulary.len();
        if vocab == 0 || start as usize >= vocab || unknown as usize >= vocab {
            return Err(invalid(&cp, "vocabulary and special tokens disagree"));
        }
        let probs = card.outputs.iter().find(|o| o.name == "probabilities");
        if probs.is_none_or(|o| o.shape.last() != Some(&(vocab as i64))) {
            return Err(invalid(&cp, format!("`probabilities` must end in the vocabulary size {vocab}")));
        }
        let index = card.vocabulary.iter().enumerate().map(|(i, t)| (t.clone(), i as i64)).collect();
        Ok(LstmModel {
            session,
            layers,
            hidden,
            top_k,
            min_probability: card.min_probability.unwrap_or(0.0) as f32,
            start,
            unknown,
            end: card.end_token.map(|e| e as i64),
            index,
            version: v.version.clone(),
            card,
            h: Vec::new(),
            c: Vec::new(),
        })
    }

    pub fn vocabulary(&self) -> usize {
        self.card.vocabulary.len()
    }

    /// Token string to id, for callers that look tokens up away from the model.
    pub fn index(&self) -> &FxHashMap<String, i64> {
        &self.index
    }

    /// The id of a token string (`unknown` when the model never saw it).
    pub fn token_id(&self, token: &str) -> i64 {
        self.index.get(token).copied().unwrap_or(self.unknown)
    }

    /// Floats of one session's state (hidden or cell).
    pub fn state_len(&self) -> usize {
        self.layers * self.hidden
    }

    /// One step for a batch. `h` and `c` hold each session's state one after the other
    /// (`layers × hidden` floats per session, layer-major) and are updated in place;
    /// `each(i, probabilities)` sees the next-token distribution after `tokens[i]`.
    pub fn step(&mut self, tokens: &[i64], h: &mut [f32], c: &mut [f32], mut each: impl FnMut(usize, &[f32])) -> Result<(), MlError> {
        let b = tokens.len();
        if b == 0 {
            return Ok(());
        }
        let (l, hd) = (self.layers, self.hidden);
        let per = l * hd;
        debug_assert_eq!(h.len(), b * per);
        // The model wants [layers, batch, hidden]; sessions keep [layer, hidden] each.
        self.h.clear();
        self.h.resize(l * b * hd, 0.0);
        self.c.clear();
        self.c.resize(l * b * hd, 0.0);
        for i in 0..b {
            for layer in 0..l {
                let dst = (layer * b + i) * hd;
                let src = i * per + layer * hd;
                self.h[dst..dst + hd].copy_from_slice(&h[src..src + hd]);
                self.c[dst..dst + hd].copy_from_slice(&c[src..src + hd]);
            }
        }
        let started = std::time::Instant::now();
        let out = self.session.run(ort::inputs![
            "token" => TensorRef::from_array_view(([b], tokens))?,
            "h_in" => TensorRef::from_array_view(([l, b, hd], &self.h[..]))?,
            "c_in" => TensorRef::from_array_view(([l, b, hd], &self.c[..]))?,
        ])?;
        super::inference_time::record(1, b, started.elapsed());
        let (_, probs) = out["probabilities"].try_extract_tensor::<f32>()?;
        let (_, ho) = out["h_out"].try_extract_tensor::<f32>()?;
        let (_, co) = out["c_out"].try_extract_tensor::<f32>()?;
        let v = probs.len() / b;
        for i in 0..b {
            for layer in 0..l {
                let src = (layer * b + i) * hd;
                let dst = i * per + layer * hd;
                h[dst..dst + hd].copy_from_slice(&ho[src..src + hd]);
                c[dst..dst + hd].copy_from_slice(&co[src..src + hd]);
            }
            each(i, &probs[i * v..(i + 1) * v]);
        }
        Ok(())
    }

    /// Raw step for the contract tests: returns every output flattened.
    pub fn run_raw(&mut self, tokens: &[i64], h: (&[usize], &[f32]), c: (&[usize], &[f32])) -> Result<Vec<(String, Vec<f32>)>, MlError> {
        let out = self.session.run(ort::inputs![
            "token" => TensorRef::from_array_view(([tokens.len()], tokens))?,
            "h_in" => TensorRef::from_array_view((h.0.to_vec(), h.1))?,
            "c_in" => TensorRef::from_array_view((c.0.to_vec(), c.1))?,
        ])?;
        let mut v = Vec::new();
        for (name, value) in out.iter() {
            v.push((name.to_owned(), value.try_extract_tensor::<f32>()?.1.to_vec()));
        }
        Ok(v)
    }
}

/// The card's rule: outside the top k, or less likely than the calibrated floor.
pub fn is_rare(probabilities: &[f32], token: i64, top_k: usize, floor: f32) -> bool {
    probabilities[token as usize] < floor || rank_of(probabilities, token) >= top_k
}

/// The rank of `token` in `probabilities` (0 = the model's first choice).
pub fn rank_of(probabilities: &[f32], token: i64) -> usize {
    let p = probabilities[token as usize];
    probabilities.iter().filter(|&&q| q > p).count()
}
