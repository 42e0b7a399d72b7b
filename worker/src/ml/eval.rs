//! Measurements of the learned models on their own: the LSTM on labelled sessions (HDFS log-key
//! sessions, DeepLog's benchmark) and inference throughput with the same code the detectors use.

use std::time::Instant;

use super::autoencoder::AutoencoderModel;
use super::lstm::{is_rare, rank_of, LstmModel};
use super::MlError;

/// Precision, recall and false-positive rate of session-level detection.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SessionEval {
    pub top_k: usize,
    pub normal_sessions: usize,
    pub abnormal_sessions: usize,
    pub false_positives: usize,
    pub true_positives: usize,
    pub false_positive_rate: f64,
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    /// Abnormal sessions caught by a key the model never saw in training.
    pub caught_by_unknown_key: usize,
    pub calls: u64,
    pub micros_per_call: f64,
    /// Precision and F1 had the normal test set been this large with the same false-positive
    /// rate (DeepLog's HDFS test set has 553,366 normal sessions; ours is a hold-out).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub projected: Option<Projection>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Projection {
    pub normal_sessions: u64,
    pub false_positives: f64,
    pub precision: f64,
    pub f1: f64,
}

impl SessionEval {
    pub fn project(&mut self, normal_sessions: u64) {
        let fp = self.false_positive_rate * normal_sessions as f64;
        let tp = self.true_positives as f64;
        let precision = tp / (tp + fp).max(1.0);
        let f1 = if precision + self.recall > 0.0 {
            2.0 * precision * self.recall / (precision + self.recall)
        } else {
            0.0
        };
        self.projected = Some(Projection {
            normal_sessions,
            false_positives: fp.round(),
            precision,
            f1,
        });
    }
}

/// Reads sessions, one a line, tokens separated by spaces.
pub fn read_sessions(path: &std::path::Path) -> anyhow::Result<Vec<Vec<String>>> {
    let text = std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
    Ok(text
        .lines()
        .map(|l| l.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
        .filter(|s| !s.is_empty())
        .collect())
}

/// Flags each session: some call (or the session's end, when the model learned ends) outside
/// the top-k predictions (or below the card's probability floor, when it has one), or a call the model never saw. Sessions step in lockstep batches with
/// carried state, one step per call. Returns (flag, caught by an unknown key) per session.
pub fn flag_sessions(
    model: &mut LstmModel,
    sessions: &[Vec<String>],
    top_k: usize,
    batch: usize,
    calls: &mut u64,
) -> Result<Vec<(bool, bool)>, MlError> {
    let per = model.state_len();
    let mut out = Vec::with_capacity(sessions.len());
    for chunk in sessions.chunks(batch.max(1)) {
        let ids: Vec<Vec<i64>> = chunk
            .iter()
            .map(|s| {
                let mut v: Vec<i64> = s.iter().map(|t| model.token_id(t)).collect();
                v.extend(model.end);
                v
            })
            .collect();
        let b = ids.len();
        let longest = ids.iter().map(Vec::len).max().unwrap_or(0);
        let mut h = vec![0f32; b * per];
        let mut c = vec![0f32; b * per];
        let mut tokens = vec![model.start; b];
        let mut flagged = vec![false; b];
        let mut unknown = vec![false; b];
        let (unk, floor) = (model.unknown, model.min_probability);
        for t in 0..longest {
            model.step(&tokens, &mut h, &mut c, |i, probs| {
                if let Some(&next) = ids[i].get(t) {
                    if next == unk {
                        unknown[i] = true;
                        flagged[i] = true;
                    } else if is_rare(probs, next, top_k, floor) {
                        flagged[i] = true;
                    }
                }
            })?;
            for (i, s) in ids.iter().enumerate() {
                if let Some(&next) = s.get(t) {
                    tokens[i] = next;
                    *calls += 1;
                }
            }
        }
        out.extend(flagged.into_iter().zip(unknown));
    }
    Ok(out)
}

/// Scores the model on held-out normal and on abnormal sessions.
pub fn eval_sessions(
    model: &mut LstmModel,
    normal: &[Vec<String>],
    abnormal: &[Vec<String>],
    top_k: usize,
) -> Result<SessionEval, MlError> {
    let mut calls = 0;
    let started = Instant::now();
    let n = flag_sessions(model, normal, top_k, 256, &mut calls)?;
    let a = flag_sessions(model, abnormal, top_k, 256, &mut calls)?;
    let secs = started.elapsed().as_secs_f64();
    let fp = n.iter().filter(|f| f.0).count();
    let tp = a.iter().filter(|f| f.0).count();
    let precision = tp as f64 / (tp + fp).max(1) as f64;
    let recall = tp as f64 / a.len().max(1) as f64;
    Ok(SessionEval {
        top_k,
        normal_sessions: n.len(),
        abnormal_sessions: a.len(),
        false_positives: fp,
        true_positives: tp,
        false_positive_rate: fp as f64 / n.len().max(1) as f64,
        precision,
        recall,
        f1: if precision + recall > 0.0 {
            2.0 * precision * recall / (precision + recall)
        } else {
            0.0
        },
        caught_by_unknown_key: a.iter().filter(|f| f.0 && f.1).count(),
        calls,
        micros_per_call: secs * 1e6 / calls.max(1) as f64,
        projected: None,
    })
}

/// Rows per second through the AutoEncoder on one thread, in batches of `batch`.
pub fn autoencoder_rows_per_sec(model: &mut AutoencoderModel, rows: usize, batch: usize) -> Result<f64, MlError> {
    let w = model.width;
    // Ordinary-looking rows: small offsets from the route norms, status 0, familiar clients.
    let data: Vec<f32> = (0..batch * w).map(|i| ((i * 7919) % 101) as f32 / 400.0 - 0.125).collect();
    let (mut e, mut s) = (Vec::new(), Vec::new());
    model.score(&data, &mut e, &mut s)?; // warm-up
    let runs = rows.div_ceil(batch).max(1);
    let started = Instant::now();
    for _ in 0..runs {
        model.score(&data, &mut e, &mut s)?;
    }
    Ok((runs * batch) as f64 / started.elapsed().as_secs_f64())
}

/// Microseconds per call of one LSTM step with carried state, `batch` sessions per run.
pub fn lstm_micros_per_call(model: &mut LstmModel, calls: usize, batch: usize) -> Result<f64, MlError> {
    let per = model.state_len();
    let v = model.vocabulary() as i64;
    let mut h = vec![0f32; batch * per];
    let mut c = vec![0f32; batch * per];
    let mut tokens: Vec<i64> = (0..batch as i64).map(|i| i % v).collect();
    model.step(&tokens, &mut h, &mut c, |_, _| {})?;
    let runs = calls.div_ceil(batch).max(1);
    let started = Instant::now();
    let mut sink = 0usize;
    for r in 0..runs {
        model.step(&tokens, &mut h, &mut c, |_, p| sink += rank_of(p, 2 % v))?;
        for (i, t) in tokens.iter_mut().enumerate() {
            *t = ((i + r) as i64 * 31 + 7) % v;
        }
    }
    std::hint::black_box(sink);
    Ok(started.elapsed().as_secs_f64() * 1e6 / (runs * batch) as f64)
}

/// AutoEncoder rows/s and LSTM µs per call through `ort`, beside Python's onnxruntime.
pub fn bench_models(
    rows: usize,
    batch: usize,
    sessions: usize,
    models: Option<&std::path::Path>,
    runtime: Option<&std::path::Path>,
    python: Option<&std::path::Path>,
) -> anyhow::Result<serde_json::Value> {
    use crate::detect::autoencoder::AutoencoderDetector;
    use crate::detect::lstm::LstmDetector;
    let m = crate::ml::Models::open(runtime, models)?;
    let ae_v = m.store.current(AutoencoderDetector::MODEL)?;
    let lstm_v = m.store.current(LstmDetector::MODEL)?;
    let mut ae = crate::ml::autoencoder::AutoencoderModel::load(m.env, &ae_v, &crate::model::features::REQUEST_FEATURES)?;
    let mut lstm = crate::ml::lstm::LstmModel::load(m.env, &lstm_v)?;
    let ae_rate = crate::ml::eval::autoencoder_rows_per_sec(&mut ae, rows, batch)?;
    let lstm_us = crate::ml::eval::lstm_micros_per_call(&mut lstm, rows / 20, sessions)?;
    let mut report = serde_json::json!({
        "autoencoder": {"model": ae_v.dir, "batch": batch, "rows_per_s": ae_rate.round()},
        "lstm": {"model": lstm_v.dir, "sessions_per_step": sessions, "micros_per_call": (lstm_us * 1000.0).round() / 1000.0},
        "threads": 1,
    });
    // The peer: Python's onnxruntime on the same files, same batches, one thread.
    let peer = crate::ml::train::find_python(python).ok().and_then(|py| {
        let script = crate::ml::train::find_trainer(None).ok()?.with_file_name("bench_peer.py");
        let out = std::process::Command::new(py)
            .arg(script)
            .args(["--autoencoder", &ae_v.model_path().display().to_string()])
            .args(["--lstm", &lstm_v.model_path().display().to_string()])
            .args([
                "--rows",
                &rows.to_string(),
                "--batch",
                &batch.to_string(),
                "--sessions",
                &sessions.to_string(),
            ])
            .output()
            .ok()?;
        serde_json::from_slice::<serde_json::Value>(&out.stdout).ok()
    });
    if let Some(p) = peer {
        let ratio = |a: f64, b: Option<f64>| b.filter(|b| *b > 0.0).map(|b| ((a / b) * 1000.0).round() / 1000.0);
        report["python_onnxruntime"] = p.clone();
        report["ratio_rows_per_s_vs_python"] = serde_json::json!(ratio(ae_rate, p["autoencoder_rows_per_s"].as_f64()));
        report["ratio_speed_lstm_vs_python"] = serde_json::json!(p["lstm_micros_per_call"]
            .as_f64()
            .map(|py| ((py / lstm_us) * 1000.0).round() / 1000.0));
    } else {
        report["python_onnxruntime"] = serde_json::json!("not measured: run scripts/train/setup.sh for the peer");
    }
    Ok(report)
}
