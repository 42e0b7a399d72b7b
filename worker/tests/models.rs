//! The learned models through the real ONNX Runtime (scripts/onnxruntime.sh fetches it; the
//! test script does): the shipped models' contracts, Rust `ort` against Python's onnxruntime
//! on the trainer's fixtures, refusals of models that do not fit, hot reload, the detectors on
//! unseen simulated traffic, and `apiwatch train` end to end on a tiny set.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed step in a test is its failure

mod common;
use common::simulate;

use std::path::{Path, PathBuf};
use std::process::Command;

use apiwatch::detect::autoencoder::AutoencoderDetector;
use apiwatch::detect::lstm::LstmDetector;
use apiwatch::detect::request::FEATURES;
use apiwatch::detect::{Detector, WindowContext};
use apiwatch::ml::{self, MlError, ModelStore};
use apiwatch::model::anomaly::Anomaly;
use apiwatch::model::Interner;
use apiwatch::simulate::incidents::IncidentKind;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

fn env() -> &'static ort::environment::Environment {
    ml::environment(None).unwrap_or_else(|e| panic!("{e} (the test script runs scripts/onnxruntime.sh)"))
}

fn shipped() -> ModelStore {
    ModelStore::new(repo().join("onnx-models"))
}

/// A copy of the shipped store to change freely.
fn store_copy(dir: &Path) -> ModelStore {
    for name in ["autoencoder", "lstm"] {
        let v = shipped().current(name).unwrap();
        let to = dir.join(name).join(&v.version);
        std::fs::create_dir_all(&to).unwrap();
        for f in ["model.onnx", "card.json", "fixtures.json"] {
            std::fs::copy(v.dir.join(f), to.join(f)).unwrap();
        }
        std::fs::write(dir.join(name).join("CURRENT"), format!("{}\n", v.version)).unwrap();
    }
    ModelStore::new(dir)
}

#[test]
fn shipped_models_match_their_cards_the_feature_code_and_python() {
    let env = env();
    for name in ["autoencoder", "lstm"] {
        let v = shipped().current(name).unwrap();
        let card = v.card().unwrap();
        let r = ml::verify::verify(env, &v).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(r.values > 50, "{name}: only {} fixture values", r.values);
        assert!(r.max_abs_diff <= ml::verify::TOLERANCE);
        let size = std::fs::metadata(v.model_path()).unwrap().len();
        assert!(size < 512 * 1024, "{name} is {size} bytes: the defaults must stay small");
        assert!(
            card.training["sha256"].as_str().is_some_and(|h| h.len() == 64),
            "{name}: no training-data hash"
        );
        match name {
            "autoencoder" => {
                assert_eq!(card.features, FEATURES.map(str::to_owned).to_vec());
                assert_eq!(card.inputs[0].name, "features");
                assert_eq!(card.inputs[0].shape, vec![-1, FEATURES.len() as i64]);
                assert!(card.threshold.is_some_and(|t| t > 0.0));
            }
            _ => {
                let vocab = card.vocabulary.len() as i64;
                assert_eq!(
                    card.inputs.iter().map(|i| i.name.as_str()).collect::<Vec<_>>(),
                    ["token", "h_in", "c_in"]
                );
                assert_eq!(card.outputs[0].shape, vec![-1, vocab]);
                assert!(card.top_k.is_some_and(|k| k >= 1 && (k as i64) < vocab));
                // Tokens are `service:route`, as the detector names them.
                assert!(card.vocabulary[2..].iter().all(|t| t.contains(":/")), "{:?}", card.vocabulary);
            }
        }
    }
}

#[test]
fn a_fixture_python_disagrees_with_is_caught() {
    let env = env();
    let dir = tempfile::tempdir().unwrap();
    let store = store_copy(dir.path());
    let v = store.current("autoencoder").unwrap();
    let path = v.dir.join("fixtures.json");
    let mut fx: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let x = fx["outputs"]["score"]["data"][3].as_f64().unwrap();
    fx["outputs"]["score"]["data"][3] = serde_json::json!(x + 1e-3);
    std::fs::write(&path, fx.to_string()).unwrap();
    let err = ml::verify::verify(env, &v).unwrap_err().to_string();
    assert!(err.contains("`score`[3]") && err.contains("Python"), "{err}");
}

#[test]
fn models_that_do_not_fit_the_worker_are_refused_with_the_reason() {
    let env = env();
    let dir = tempfile::tempdir().unwrap();
    let store = store_copy(dir.path());
    // Features in another order: the worker computes something else than what it learned.
    let v = store.current("autoencoder").unwrap();
    let mut card: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(v.card_path()).unwrap()).unwrap();
    card["features"].as_array_mut().unwrap().swap(0, 1);
    std::fs::write(v.card_path(), card.to_string()).unwrap();
    let err = AutoencoderDetector::load(env, &store).err().expect("refused").to_string();
    assert!(err.contains("retrain"), "{err}");
    // A card whose outputs do not match the graph.
    let v = store.current("lstm").unwrap();
    let mut card: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(v.card_path()).unwrap()).unwrap();
    card["outputs"][0]["name"] = serde_json::json!("probs");
    std::fs::write(v.card_path(), card.to_string()).unwrap();
    let err = LstmDetector::load(env, &store).err().expect("refused").to_string();
    assert!(err.contains("`probs`") && err.contains("`probabilities`"), "{err}");
    // No model at all.
    let empty = ModelStore::new(dir.path().join("none"));
    assert!(matches!(AutoencoderDetector::load(env, &empty), Err(MlError::ModelMissing { .. })));
}

#[test]
fn a_running_detector_picks_up_a_new_version_and_keeps_its_own_if_the_new_one_is_bad() {
    let env = env();
    let dir = tempfile::tempdir().unwrap();
    let store = store_copy(dir.path());
    let mut det = AutoencoderDetector::load(env, &store).unwrap();
    let first = det.version().to_owned();
    let names = Interner::default();
    let close = |d: &mut AutoencoderDetector| {
        let mut out: Vec<Anomaly> = Vec::new();
        d.close_window(
            &WindowContext {
                start: 0,
                end: 60_000,
                stats: &[],
                names: &names,
                complete: true,
            },
            &mut out,
        );
    };
    let trained = store.current("autoencoder").unwrap().dir;
    let good = store.install("autoencoder", &trained).unwrap();
    assert_ne!(good.version, first);
    close(&mut det);
    assert_eq!(det.version(), good.version);
    // A broken version is refused; the running one stays.
    let broken = dir.path().join("broken");
    std::fs::create_dir_all(&broken).unwrap();
    std::fs::write(broken.join("model.onnx"), b"not a model").unwrap();
    std::fs::copy(trained.join("card.json"), broken.join("card.json")).unwrap();
    let bad = store.install("autoencoder", &broken).unwrap();
    close(&mut det);
    assert_eq!(det.version(), good.version, "kept the working model, not {}", bad.version);
}

/// Seed 313 was never used to train the shipped models (901-903) or to tune anything; it is
/// the first seed whose 6 hours hold both a call-order change and a payload anomaly.
#[test]
fn detect_with_the_models_catches_call_order_and_payload_incidents() {
    let dir = tempfile::tempdir().unwrap();
    let (events, labels) = simulate(dir.path(), "retail", 313, 6.0);
    let out = dir.path().join("out");
    let status = Command::new(env!("CARGO_BIN_EXE_apiwatch"))
        .args(["detect", "--input"])
        .arg(&events)
        .arg("--output")
        .arg(&out)
        .arg("--models")
        .arg(repo().join("onnx-models"))
        .status()
        .unwrap();
    assert!(status.success());
    let anomalies: Vec<Anomaly> = std::fs::read_to_string(out.join("anomalies.ndjson"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let found = |kind: IncidentKind, detector: &str| {
        let inc = labels
            .incidents
            .iter()
            .find(|i| i.kind == kind)
            .expect("the incident is in the plan");
        anomalies
            .iter()
            .filter(|a| a.detector == detector && a.window_start >= inc.start && a.window_start <= inc.end)
            .filter(|a| a.service == inc.service)
            .count()
    };
    assert!(
        found(IncidentKind::CallOrderChange, "lstm") >= 1,
        "the LSTM missed the call-order change"
    );
    assert!(
        found(IncidentKind::PayloadAnomaly, "autoencoder") >= 1,
        "the AutoEncoder missed the payload anomaly"
    );
    // And the AutoEncoder names the payload as the reason.
    let payload = labels.incidents.iter().find(|i| i.kind == IncidentKind::PayloadAnomaly).unwrap();
    let ae = anomalies
        .iter()
        .find(|a| a.detector == "autoencoder" && a.window_start >= payload.start && a.window_start <= payload.end)
        .unwrap();
    assert!(ae.contributors[0].name.contains("bytes"), "{:?}", ae.contributors);
}

/// `apiwatch train` end to end on a tiny set: export, train (Python), check, install.
#[test]
fn train_exports_trains_checks_and_installs_a_new_version() {
    let python = repo().join(".cache/venv-train/bin/python");
    assert!(
        python.exists(),
        "no trainer environment: the test script runs scripts/train/setup.sh"
    );
    let dir = tempfile::tempdir().unwrap();
    let store = store_copy(&dir.path().join("models"));
    let out = Command::new(env!("CARGO_BIN_EXE_apiwatch"))
        .args(["train", "--topology", "saas", "--seed", "5", "--hours", "1", "--epochs", "1"])
        .arg("--work")
        .arg(dir.path().join("work"))
        .arg("--python")
        .arg(&python)
        .arg("--models")
        .arg(&store.dir)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        text.contains("installed autoencoder v2") && text.contains("installed lstm v2"),
        "{text}"
    );
    let env = env();
    for name in ["autoencoder", "lstm"] {
        let v = store.current(name).unwrap();
        assert_eq!(v.version, "v2");
        ml::verify::verify(env, &v).unwrap();
        assert!(v.card().unwrap().training["sha256"].as_str().is_some());
    }
}

/// Inference runs on threads of their own, with batches in flight and sessions' state kept on
/// the LSTM's thread: a checkpoint taken mid-stream must still carry all of it, so a restored
/// pipeline ends exactly where the uninterrupted one does (retail seed 313, as above).
#[test]
fn a_pipeline_with_the_models_restored_from_a_checkpoint_continues_exactly() {
    use apiwatch::detect::DetectorKind;
    use apiwatch::pipeline::{Pipeline, PipelineConfig};
    use apiwatch::simulate::{simulate_events, SimConfig};
    use apiwatch::sink::MemorySink;

    env();
    let (events, _) = simulate_events(SimConfig {
        seed: 313,
        topology: "retail".into(),
        duration: 6 * apiwatch::model::time::HOUR_MS,
        ..Default::default()
    })
    .unwrap();
    let mut cfg = PipelineConfig {
        detectors: DetectorKind::DEFAULT.iter().chain(&DetectorKind::MODELS).copied().collect(),
        ..Default::default()
    };
    cfg.model_settings.dir = Some(repo().join("onnx-models"));
    let cfg = cfg.load_models().unwrap();
    assert!(cfg.models.is_some(), "the models load");
    let outputs = |sink: &MemorySink| {
        let mut a: Vec<String> = sink.anomalies.iter().map(|a| serde_json::to_string(a).unwrap()).collect();
        a.sort();
        a
    };

    let mut whole = Pipeline::new(cfg.clone()).unwrap();
    let mut whole_sink = MemorySink::default();
    for e in events.iter().cloned() {
        whole.push(e, &mut whole_sink).unwrap();
    }
    whole.finish(&mut whole_sink).unwrap();

    // A cut that is not on a window boundary: batches are in flight when the state is saved.
    let cut = events.len() * 2 / 3 + 17;
    let mut first = Pipeline::new(cfg.clone()).unwrap();
    let mut sink = MemorySink::default();
    for e in events[..cut].iter().cloned() {
        first.push(e, &mut sink).unwrap();
    }
    let saved = first.save_state().unwrap();
    drop(first);
    let mut second = Pipeline::restore(cfg, &saved).unwrap();
    for e in events[cut..].iter().cloned() {
        second.push(e, &mut sink).unwrap();
    }
    second.finish(&mut sink).unwrap();

    let by = |s: &MemorySink, d: &str| s.anomalies.iter().filter(|a| a.detector == d).count();
    assert!(
        by(&whole_sink, "lstm") > 0 && by(&whole_sink, "autoencoder") > 0,
        "both models report in 6 h of retail: {} lstm, {} autoencoder, {} in all",
        by(&whole_sink, "lstm"),
        by(&whole_sink, "autoencoder"),
        whole_sink.anomalies.len()
    );
    let (a, b) = (outputs(&whole_sink), outputs(&sink));
    let only_whole: Vec<&String> = a.iter().filter(|x| !b.contains(x)).collect();
    let only_restored: Vec<&String> = b.iter().filter(|x| !a.contains(x)).collect();
    assert!(
        only_whole.is_empty() && only_restored.is_empty(),
        "{} anomalies only without the restart, {} only with it; first: {:?} / {:?}",
        only_whole.len(),
        only_restored.len(),
        only_whole.first(),
        only_restored.first()
    );
}
