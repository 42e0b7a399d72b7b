//! Model commands: export training data, train and install the AutoEncoder and LSTM, check
//! the installed models, and measure them (sessions benchmark, inference speed).

use std::path::{Path, PathBuf};

use anyhow::Context;

use super::args::{connect, range_flags, EsArgs, SimArgs};
use super::{lab::simulate_file, spinner};
use crate::detect::export::ExportReport;
use crate::model::time::format_rfc3339;
use crate::source::{LineSource, LogFormat, ReadAhead};

#[derive(clap::Subcommand)]
pub enum ModelCommand {
    /// Export training data with the worker's feature code: requests.csv (AutoEncoder rows) and
    /// sessions.txt (LSTM sessions). From files, or simulated normal traffic when none is given.
    Features {
        #[arg(long = "input", short)]
        inputs: Vec<PathBuf>,
        #[arg(long, short)]
        output: PathBuf,
        /// Keep one request row in this many.
        #[arg(long, default_value_t = 1)]
        every: u64,
        #[command(flatten)]
        sim: SimArgs,
        #[command(flatten)]
        range: EsRangeArgs,
    },
    /// Train the AutoEncoder and/or the LSTM on your traffic, check them, and install them as
    /// new versions in the model store (running workers pick them up at their next window).
    Train(TrainArgs),
    /// List the installed models and check each against its card and fixtures.
    Models {
        #[arg(long)]
        models: Option<PathBuf>,
        #[arg(long)]
        onnx_runtime: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// The LSTM on labelled sessions (e.g. HDFS log keys): precision, recall, F1, µs per call.
    EvalSessions {
        /// A trained LSTM directory (model.onnx, card.json).
        #[arg(long)]
        model: PathBuf,
        /// Normal sessions, one a line (not used in training).
        #[arg(long)]
        normal: PathBuf,
        /// Abnormal sessions, one a line.
        #[arg(long)]
        abnormal: PathBuf,
        /// Top-k instead of the card's calibrated k (e.g. DeepLog's 9).
        #[arg(long)]
        top_k: Vec<usize>,
        /// Also project precision and F1 onto a normal test set of this many sessions.
        #[arg(long)]
        project_normal: Option<u64>,
        #[arg(long)]
        onnx_runtime: Option<PathBuf>,
    },
    /// Inference speed of the installed models on one thread (AutoEncoder rows/s, LSTM µs per
    /// call with carried state), beside Python's onnxruntime on the same models.
    BenchModels {
        #[arg(long, default_value_t = 2_000_000)]
        rows: usize,
        #[arg(long, default_value_t = 4096)]
        batch: usize,
        #[arg(long, default_value_t = 256)]
        sessions: usize,
        #[arg(long)]
        models: Option<PathBuf>,
        #[arg(long)]
        onnx_runtime: Option<PathBuf>,
        #[arg(long)]
        python: Option<PathBuf>,
    },
}

/// `apiwatch train`'s flags.
#[derive(clap::Args)]
pub struct TrainArgs {
    /// Which models [default: both].
    #[arg(long, value_delimiter = ',')]
    pub model: Vec<TrainModel>,
    /// Events to learn from (NDJSON); simulated normal traffic when none is given.
    #[arg(long = "input", short)]
    pub inputs: Vec<PathBuf>,
    #[command(flatten)]
    pub sim: SimArgs,
    /// Where the exported data and trained candidates go.
    #[arg(long, default_value = ".cache/train")]
    pub work: PathBuf,
    /// Python with numpy, onnx, onnxruntime [default: .cache/venv-train/bin/python].
    #[arg(long)]
    pub python: Option<PathBuf>,
    /// The trainer [default: scripts/train/train.py].
    #[arg(long)]
    pub trainer: Option<PathBuf>,
    /// Training epochs (the trainer's default when absent).
    #[arg(long)]
    pub epochs: Option<u32>,
    /// Keep one request row in this many for the AutoEncoder.
    #[arg(long, default_value_t = 1)]
    pub every: u64,
    /// Train on directories `apiwatch features` wrote (concatenated) instead of exporting.
    #[arg(long, value_delimiter = ',')]
    pub from_features: Vec<PathBuf>,
    #[command(flatten)]
    pub range: EsRangeArgs,
    #[arg(long)]
    pub models: Option<PathBuf>,
    #[arg(long)]
    pub onnx_runtime: Option<PathBuf>,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq)]
pub enum TrainModel {
    Autoencoder,
    Lstm,
}

/// A range of the log indices to learn from, instead of files.
#[derive(clap::Args, Clone)]
pub struct EsRangeArgs {
    #[command(flatten)]
    es: EsArgs,
    /// Learn from Elasticsearch: the calls from this time on (RFC 3339; with --to).
    #[arg(long, requires = "to", conflicts_with = "inputs")]
    from: Option<String>,
    /// End of that range (exclusive).
    #[arg(long, requires = "from")]
    to: Option<String>,
}

impl EsRangeArgs {
    /// Exports the training data of the range, or `None` when no range was asked for.
    fn export(&self, dir: &Path, every: u64) -> anyhow::Result<Option<ExportReport>> {
        let (Some(from), Some(to)) = (&self.from, &self.to) else {
            return Ok(None);
        };
        let (from, to) = range_flags(from, to)?;
        let (client, settings) = connect(&self.es.app(None, None)?)?;
        let docs = settings.documents()?;
        let mut source = crate::source::elasticsearch::RangeSource::new(&client, &docs, from, to);
        let r = export_features(&mut source, dir, every)?;
        anyhow::ensure!(
            r.requests > 0,
            "no calls in {} between {} and {}: check --logs (or [[elasticsearch.sources]]) and the range",
            docs.pattern(),
            format_rfc3339(from),
            format_rfc3339(to)
        );
        Ok(Some(r))
    }
}

/// Runs one model command.
pub fn run(cmd: ModelCommand) -> anyhow::Result<()> {
    match cmd {
        ModelCommand::Features {
            inputs,
            output,
            every,
            sim,
            range,
        } => {
            let r = export_training(&range, &inputs, &sim, &output, &output, every)?;
            outln!(
                "wrote {} request rows to {} and {} sessions ({} calls) to {}",
                r.requests,
                output.join("requests.csv").display(),
                r.sessions,
                r.session_calls,
                output.join("sessions.txt").display()
            );
            Ok(())
        }
        ModelCommand::Train(args) => train(args),
        ModelCommand::Models {
            models,
            onnx_runtime,
            json,
        } => check_models(models.as_deref(), onnx_runtime.as_deref(), json),
        ModelCommand::EvalSessions {
            model,
            normal,
            abnormal,
            top_k,
            project_normal,
            onnx_runtime,
        } => {
            let env = crate::ml::environment(onnx_runtime.as_deref())?;
            let v = crate::ml::ModelVersion {
                name: "lstm".into(),
                version: "given".into(),
                dir: model,
            };
            let mut lstm = crate::ml::lstm::LstmModel::load(env, &v)?;
            let (n, a) = (crate::ml::eval::read_sessions(&normal)?, crate::ml::eval::read_sessions(&abnormal)?);
            let ks = if top_k.is_empty() { vec![lstm.top_k] } else { top_k };
            let mut out = Vec::new();
            for k in ks {
                let mut r = crate::ml::eval::eval_sessions(&mut lstm, &n, &a, k)?;
                if let Some(p) = project_normal {
                    r.project(p);
                }
                out.push(r);
            }
            outln!("{}", serde_json::to_string_pretty(&out)?);
            Ok(())
        }
        ModelCommand::BenchModels {
            rows,
            batch,
            sessions,
            models,
            onnx_runtime,
            python,
        } => {
            let report =
                crate::ml::eval::bench_models(rows, batch, sessions, models.as_deref(), onnx_runtime.as_deref(), python.as_deref())?;
            outln!("{}", serde_json::to_string_pretty(&report)?);
            Ok(())
        }
    }
}

/// Exports (or joins) training data, trains each model asked for, checks it and installs it.
fn train(args: TrainArgs) -> anyhow::Result<()> {
    let TrainArgs {
        model,
        inputs,
        sim,
        work,
        python,
        trainer,
        epochs,
        every,
        from_features,
        range,
        models,
        onnx_runtime,
    } = args;
    let kinds = if model.is_empty() {
        vec![TrainModel::Autoencoder, TrainModel::Lstm]
    } else {
        model
    };
    let m = crate::ml::Models::open(onnx_runtime.as_deref(), models.as_deref())?;
    let python = crate::ml::train::find_python(python.as_deref())?;
    let trainer = crate::ml::train::find_trainer(trainer.as_deref())?;
    let data = work.join("data");
    if !from_features.is_empty() {
        crate::ml::data::concat_features(&from_features, &data)?;
    } else {
        let r = export_training(&range, &inputs, &sim, &work, &data, every)?;
        eprintln!("exported {} request rows and {} sessions", r.requests, r.sessions);
    }
    for k in kinds {
        let (name, kind, flag, file) = match k {
            TrainModel::Autoencoder => ("autoencoder", "autoencoder", "--features", "requests.csv"),
            TrainModel::Lstm => ("lstm", "lstm", "--sessions", "sessions.txt"),
        };
        let out = work.join(name);
        let mut args = vec![
            flag.to_owned(),
            data.join(file).display().to_string(),
            "--out".into(),
            out.display().to_string(),
        ];
        if let Some(e) = epochs {
            args.extend(["--epochs".into(), e.to_string()]);
        }
        crate::ml::train::run_trainer(&python, &trainer, kind, &args)?;
        let (v, report) = crate::ml::train::install_checked(m.env, &m.store, name, &out)?;
        outln!(
            "installed {name} {} in {} ({} fixture values match Python within {}; max diff {:.1e})",
            v.version,
            v.dir.display(),
            report.values,
            crate::ml::verify::TOLERANCE,
            report.max_abs_diff
        );
    }
    Ok(())
}

/// Lists the installed models, checking each against its card and fixtures.
fn check_models(models: Option<&Path>, onnx_runtime: Option<&Path>, json: bool) -> anyhow::Result<()> {
    let m = crate::ml::Models::open(onnx_runtime, models)?;
    let mut reports = Vec::new();
    for name in [
        crate::detect::autoencoder::AutoencoderDetector::MODEL,
        crate::detect::lstm::LstmDetector::MODEL,
    ] {
        let v = m.store.current(name)?;
        let card = v.card()?;
        let r = crate::ml::verify::verify(m.env, &v)?;
        if !json {
            outln!(
                "{name} {} ({}): {} bytes; checks pass ({} fixture values, max diff {:.1e}); trained {}",
                v.version,
                v.dir.display(),
                std::fs::metadata(v.model_path()).map(|m| m.len()).unwrap_or(0),
                r.values,
                r.max_abs_diff,
                card.training
            );
        }
        reports.push(r);
    }
    if json {
        outln!("{}", serde_json::to_string_pretty(&reports)?);
    }
    Ok(())
}

/// The events a training run learns from: the given files, or simulated normal traffic
/// written to `work/events.ndjson`.
fn training_events(inputs: &[PathBuf], sim: &SimArgs, work: &Path) -> anyhow::Result<Vec<PathBuf>> {
    if !inputs.is_empty() {
        return Ok(inputs.to_vec());
    }
    let mut cfg = sim.config()?;
    cfg.incidents = false;
    std::fs::create_dir_all(work).with_context(|| format!("cannot create {}", work.display()))?;
    let path = work.join("events.ndjson");
    let labels = simulate_file(&cfg, &path, None, LogFormat::Json)?;
    eprintln!(
        "simulated {:.1} h of normal {} traffic: {} events",
        sim.hours, labels.topology, labels.events
    );
    Ok(vec![path])
}

/// Exports training data to `dir` from the Elasticsearch range when one was given, else from
/// the files, else from simulated normal traffic written to `sim_dir`.
fn export_training(
    range: &EsRangeArgs,
    inputs: &[PathBuf],
    sim: &SimArgs,
    sim_dir: &Path,
    dir: &Path,
    every: u64,
) -> anyhow::Result<ExportReport> {
    if let Some(r) = range.export(dir, every)? {
        return Ok(r);
    }
    let events = training_events(inputs, sim, sim_dir)?;
    export_features(&mut ReadAhead::spawn(LineSource::new(events))?, dir, every)
}

/// The feature export with a spinner.
fn export_features(source: &mut dyn crate::source::EventSource, dir: &Path, every: u64) -> anyhow::Result<ExportReport> {
    let pb = spinner("exporting features");
    let r = crate::ml::data::export_features(source, dir, every, |n| {
        if n % 65_536 < 4096 {
            pb.set_message(format!("exporting features: {n} events"));
        }
    });
    pb.finish_and_clear();
    r
}
