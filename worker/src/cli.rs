//! The `apiwatch` commands. Each subcommand parses its flags, builds what it needs from the
//! library and prints a short, readable result; errors come back as `anyhow` chains.

use std::fs::File;
use std::io::{BufWriter, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};

use crate::bench;
use crate::detect::iforest::ForestParams;
use crate::detect::DetectorKind;
use crate::es::worker::{RunOptions, RunSummary, WorkerSettings};
use crate::es::{ClientOptions, EsClient, IndexNames};
use crate::eval::{self, EvalReport};
use crate::model::anomaly::Alert;
use crate::model::time::{format_hhmm, format_rfc3339, parse_rfc3339, Millis, HOUR_MS, MINUTE_MS};
use crate::onboard::ServiceRecord;
use crate::pipeline::{Pipeline, PipelineConfig, RunStats};
use crate::simulate::incidents::Labels;
use crate::simulate::{self, SimConfig};
use crate::sink::{FileSink, MemorySink};
use crate::source::{AccessDefaults, AccessLogParser, EventSource, IngestReport, LineSource, LogFormat, ReadAhead};

#[derive(Parser)]
#[command(
    name = "apiwatch",
    version,
    about = "AI-powered monitoring of API calls: anomalies, journeys, forecasts and grouped alerts"
)]
struct Cli {
    /// Log filter (also RUST_LOG), e.g. `info`, `apiwatch=debug`.
    #[arg(long, global = true, env = "APIWATCH_LOG", default_value = "warn")]
    log: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args, Clone)]
struct InputFormatArgs {
    /// What the input lines are: NDJSON events, or nginx/Apache access logs in the format of
    /// logstash/patterns/apiwatch.
    #[arg(long, value_enum, default_value = "json")]
    format: LogFormat,
    /// Service of access-log lines that carry no `svc=`.
    #[arg(long)]
    service: Option<String>,
    /// Cloud provider of access-log lines that carry no `cloud=` (onprem, aws, azure, gcp...).
    #[arg(long)]
    provider: Option<String>,
}

impl InputFormatArgs {
    fn source(&self, inputs: &[PathBuf]) -> anyhow::Result<LineSource> {
        let source = LineSource::new(inputs.to_vec());
        if self.format == LogFormat::Json {
            anyhow::ensure!(
                self.service.is_none() && self.provider.is_none(),
                "--service and --provider apply to access logs (--format nginx|apache); JSON events carry their own"
            );
            return Ok(source);
        }
        let defaults = AccessDefaults {
            service: self.service.clone(),
            provider: self.provider.clone(),
        };
        Ok(source.with_access_log(AccessLogParser::new(self.format, defaults)?))
    }
}

#[derive(clap::Args, Clone)]
struct DetectArgs {
    /// Configuration file (TOML; see apiwatch.example.toml). Flags below override it.
    #[arg(long, env = "APIWATCH_CONFIG")]
    config: Option<PathBuf>,
    /// Window width in seconds [default: 60].
    #[arg(long)]
    window_secs: Option<u64>,
    /// Allowed lateness of events in seconds [default: 120].
    #[arg(long)]
    lateness_secs: Option<u64>,
    /// Detectors to run (default: all but the static rule).
    #[arg(long, value_delimiter = ',')]
    detectors: Option<Vec<DetectorKind>>,
    /// Seed for the randomised models (isolation forests) [default: 42].
    #[arg(long)]
    model_seed: Option<u64>,
    /// Model store (or `models.dir`, APIWATCH_MODELS) [default: the repository's onnx-models/].
    #[arg(long)]
    models: Option<PathBuf>,
    /// libonnxruntime.so (or `models.runtime`, ORT_DYLIB_PATH) [default: .cache/onnxruntime/].
    #[arg(long)]
    onnx_runtime: Option<PathBuf>,
    /// Run without the AutoEncoder and LSTM even where they are available.
    #[arg(long)]
    no_models: bool,
}

impl DetectArgs {
    fn config(&self) -> anyhow::Result<PipelineConfig> {
        let cfg = match &self.config {
            Some(path) => crate::config::load(path)?,
            None => PipelineConfig::default(),
        };
        self.apply(cfg)
    }

    /// The whole configuration (file, then environment, then these flags).
    fn app(&self) -> anyhow::Result<crate::config::AppConfig> {
        let mut app = crate::config::load_app(self.config.as_deref(), &|k| std::env::var(k).ok())?;
        app.pipeline = self.apply(app.pipeline)?;
        Ok(app)
    }

    fn apply(&self, mut cfg: PipelineConfig) -> anyhow::Result<PipelineConfig> {
        if let Some(w) = self.window_secs {
            anyhow::ensure!((10..=3600).contains(&w), "--window-secs must be between 10 and 3600");
            cfg.window = w as Millis * 1000;
        }
        if let Some(l) = self.lateness_secs {
            anyhow::ensure!(l <= 3600, "--lateness-secs must be at most 3600");
            cfg.lateness = l as Millis * 1000;
        }
        if let Some(seed) = self.model_seed {
            cfg.seed = seed;
        }
        if let Some(d) = &self.detectors {
            anyhow::ensure!(!d.is_empty(), "--detectors needs at least one detector");
            cfg.detectors = d.clone();
        }
        if let Some(m) = &self.models {
            cfg.model_settings.dir = Some(m.clone());
        }
        if let Some(r) = &self.onnx_runtime {
            cfg.model_settings.runtime = Some(r.clone());
        }
        if self.no_models {
            cfg.model_settings.enabled = false;
        }
        cfg.resolve_models()?;
        // The static rule is the per-service rule shops use: no grouping across services.
        if cfg.detectors == [DetectorKind::StaticRule] {
            cfg.alerts.group_related_services = false;
            cfg.alerts.raise_single = 60.0;
        }
        Ok(cfg)
    }
}

/// A range of the log indices to learn from, instead of files.
#[derive(clap::Args, Clone)]
struct EsRangeArgs {
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
    fn export(&self, dir: &Path, every: u64) -> anyhow::Result<Option<crate::detect::export::ExportReport>> {
        let (Some(from), Some(to)) = (&self.from, &self.to) else {
            return Ok(None);
        };
        let from = parse_rfc3339(from).with_context(|| format!("--from `{from}` is not an RFC 3339 time"))?;
        let to = parse_rfc3339(to).with_context(|| format!("--to `{to}` is not an RFC 3339 time"))?;
        anyhow::ensure!(from < to, "--from must be before --to");
        let app = crate::config::load_app(None, &|k| std::env::var(k).ok())?;
        let (client, settings) = self.es.connect(&app)?;
        let mut source = crate::es::reader::RangeSource::new(&client, &settings.names.logs, from, to);
        let r = export_features(&mut source, dir, every)?;
        anyhow::ensure!(
            r.requests > 0,
            "no calls in {} between {} and {}: check --logs and the range",
            settings.names.logs,
            format_rfc3339(from),
            format_rfc3339(to)
        );
        Ok(Some(r))
    }
}

/// Where Elasticsearch is and which names to use (flags override the configuration file).
#[derive(clap::Args, Clone)]
struct EsArgs {
    /// Elasticsearch URL (or `elasticsearch.url` in the config, or APIWATCH_ES_URL).
    #[arg(long = "es")]
    url: Option<String>,
    /// Prefix of the result and state indices [default: apiwatch].
    #[arg(long)]
    prefix: Option<String>,
    /// Index pattern of the API-call logs [default: logs-apiwatch.calls-*].
    #[arg(long)]
    logs: Option<String>,
    /// PEM file of the CA that signed the cluster's certificate.
    #[arg(long)]
    ca_cert: Option<PathBuf>,
}

impl EsArgs {
    /// The client and worker settings, from the configuration and these flags.
    fn connect(&self, app: &crate::config::AppConfig) -> anyhow::Result<(EsClient, WorkerSettings)> {
        let url = self
            .url
            .clone()
            .or_else(|| app.es.url.clone())
            .context("no Elasticsearch URL: pass --es URL, set APIWATCH_ES_URL, or elasticsearch.url in the config")?;
        let mut opts = ClientOptions::new(&url);
        opts.ca_cert = self.ca_cert.clone().or_else(|| app.es.ca_cert.clone());
        let client = EsClient::new(opts)?;
        let mut settings = app.es.worker.clone();
        if let Some(p) = &self.prefix {
            let logs = settings.names.logs.clone();
            settings.names = IndexNames::with_prefix(p);
            settings.names.logs = logs;
        }
        if let Some(l) = &self.logs {
            settings.names.logs = l.clone();
        }
        tracing::info!(url = %url, credentials = client.credentials(), prefix = %settings.names.prefix, "Elasticsearch");
        Ok((client, settings))
    }
}

#[derive(Subcommand)]
enum Command {
    /// Install the index templates (and ILM policies where the cluster has ILM) idempotently.
    Setup {
        #[command(flatten)]
        es: EsArgs,
        #[arg(long, env = "APIWATCH_CONFIG")]
        config: Option<PathBuf>,
        /// Also import the dashboards, visualizations and data views into this Kibana
        /// (kibana/apiwatch-saved-objects.ndjson; same credentials as Elasticsearch).
        #[arg(long, env = "APIWATCH_KIBANA_URL")]
        kibana: Option<String>,
        /// Only Kibana: skip the Elasticsearch templates.
        #[arg(long, requires = "kibana")]
        kibana_only: bool,
    },
    /// Poll the log indices and score new events until stopped (SIGTERM: finish, checkpoint, exit).
    Run {
        #[command(flatten)]
        es: EsArgs,
        #[command(flatten)]
        args: DetectArgs,
        /// Process what is ready, checkpoint and exit.
        #[arg(long)]
        once: bool,
        /// Where a first run starts (RFC 3339) [default: the oldest event in the log indices].
        #[arg(long)]
        since: Option<String>,
        /// Do not send email even if [email] is configured.
        #[arg(long)]
        no_email: bool,
        /// Print the run summary as JSON on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Score a past range [from, to) and write the same documents a live run would have.
    Backfill {
        #[command(flatten)]
        es: EsArgs,
        #[command(flatten)]
        args: DetectArgs,
        #[arg(long)]
        from: String,
        #[arg(long)]
        to: String,
        /// Forget this range's checkpoint and score it again (same documents, same ids).
        #[arg(long)]
        restart: bool,
        #[arg(long)]
        json: bool,
    },
    /// Detect anomalies and alerts in API-call logs (files or `-` for stdin): NDJSON events,
    /// or nginx/Apache access logs with `--format`.
    Detect {
        #[arg(long = "input", short, required = true)]
        inputs: Vec<PathBuf>,
        #[arg(long, short)]
        output: PathBuf,
        #[command(flatten)]
        input: InputFormatArgs,
        #[command(flatten)]
        args: DetectArgs,
    },
    /// Is the job being worked? Exits 0 when a worker holds its lease (renewed every poll) and
    /// 1 otherwise, saying why (for container health checks and the operator at 3 a.m.).
    Health {
        #[command(flatten)]
        es: EsArgs,
        /// Configuration file (TOML) for the Elasticsearch settings and the job name.
        #[arg(long)]
        config: Option<PathBuf>,
        /// The job to check [default: the config's, or `live`].
        #[arg(long)]
        job: Option<String>,
    },
    /// Write a self-contained HTML report (timelines, alerts, a journey waterfall) of a directory
    /// `detect` wrote.
    Report {
        /// The directory `apiwatch detect -o` wrote.
        #[arg(long, short)]
        input: PathBuf,
        /// Where to write index.html (defaults to <input>/report).
        #[arg(long, short)]
        output: Option<PathBuf>,
        #[arg(long, default_value = "apiwatch report")]
        title: String,
    },
    /// Simulate multi-environment API traffic with labelled incidents (to a file, or into
    /// Elasticsearch with --es).
    Simulate {
        /// Events NDJSON (`-` for stdout).
        #[arg(long, short, required_unless_present = "es")]
        output: Option<PathBuf>,
        /// Bulk-load into this Elasticsearch instead of writing a file.
        #[arg(long)]
        es: Option<String>,
        /// The data stream to load into.
        #[arg(long, default_value = "logs-apiwatch.calls-default")]
        index: String,
        /// PEM file of the CA that signed the cluster's certificate.
        #[arg(long)]
        ca_cert: Option<PathBuf>,
        /// Labels JSON (incidents injected).
        #[arg(long)]
        labels: Option<PathBuf>,
        /// Write NDJSON events, or nginx/Apache access-log lines (files only).
        #[arg(long, value_enum, default_value = "json")]
        format: LogFormat,
        #[command(flatten)]
        sim: SimArgs,
    },
    /// Simulate a few hours, detect, and show alerts beside the incidents injected.
    Demo {
        #[arg(long, default_value = "out/demo")]
        dir: PathBuf,
        #[command(flatten)]
        sim: SimArgs,
        #[command(flatten)]
        args: DetectArgs,
    },
    /// Score alerts against labels.
    Eval {
        #[arg(long)]
        labels: PathBuf,
        #[arg(long)]
        alerts: PathBuf,
        /// Print the full report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Simulate, detect and score many runs; compare with the static-threshold rule.
    EvalSuite {
        #[arg(long, value_delimiter = ',', default_value = "saas")]
        topologies: Vec<String>,
        #[arg(long, value_delimiter = ',', default_value = "101,102,103")]
        seeds: Vec<u64>,
        #[arg(long, default_value_t = 24.0)]
        hours: f64,
        #[arg(long, default_value_t = 20.0)]
        rate: f64,
        /// Also list every incident and false alert.
        #[arg(long)]
        verbose: bool,
        #[command(flatten)]
        args: DetectArgs,
    },
    /// List onboarded services from a `detect` output directory.
    Services {
        #[arg(long, default_value = "out/demo")]
        from: PathBuf,
    },
    /// Measure detect throughput and peak memory against a parse-only peer.
    Bench {
        /// An events file; simulated (and cached) when absent.
        #[arg(long)]
        input: Option<PathBuf>,
        /// Events to simulate when no input is given.
        #[arg(long, default_value_t = 1_000_000)]
        events: u64,
        /// Measure Elasticsearch mode against this cluster instead: bulk load, raw
        /// point-in-time read vs the worker end to end, and a live run.
        #[arg(long)]
        es: Option<String>,
        /// Live phase (with --es): seconds of real-time traffic (0 to skip).
        #[arg(long, default_value_t = 60)]
        live_secs: u64,
        /// Live phase (with --es): target ingest rate, events/s.
        #[arg(long, default_value_t = 20_000.0)]
        live_rate: f64,
        #[command(flatten)]
        args: DetectArgs,
    },
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
    Train {
        /// Which models [default: both].
        #[arg(long, value_delimiter = ',')]
        model: Vec<TrainModel>,
        /// Events to learn from (NDJSON); simulated normal traffic when none is given.
        #[arg(long = "input", short)]
        inputs: Vec<PathBuf>,
        #[command(flatten)]
        sim: SimArgs,
        /// Where the exported data and trained candidates go.
        #[arg(long, default_value = ".cache/train")]
        work: PathBuf,
        /// Python with numpy, onnx, onnxruntime [default: .cache/venv-train/bin/python].
        #[arg(long)]
        python: Option<PathBuf>,
        /// The trainer [default: scripts/train/train.py].
        #[arg(long)]
        trainer: Option<PathBuf>,
        /// Training epochs (the trainer's default when absent).
        #[arg(long)]
        epochs: Option<u32>,
        /// Keep one request row in this many for the AutoEncoder.
        #[arg(long, default_value_t = 1)]
        every: u64,
        /// Train on directories `apiwatch features` wrote (concatenated) instead of exporting.
        #[arg(long, value_delimiter = ',')]
        from_features: Vec<PathBuf>,
        #[command(flatten)]
        range: EsRangeArgs,
        #[arg(long)]
        models: Option<PathBuf>,
        #[arg(long)]
        onnx_runtime: Option<PathBuf>,
    },
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
    /// The Numenta Anomaly Benchmark: the series rule on all its series, scored by the
    /// project's NAB-compatible scorer for each profile.
    EvalNab {
        /// NAB's directory (data/, labels/combined_windows.json, profiles.json).
        #[arg(long, default_value = "../shared/benchmarks/nab")]
        data: PathBuf,
        /// Series detectors to score (all by default).
        #[arg(long, value_enum, value_delimiter = ',')]
        detector: Vec<crate::eval::nab::SeriesDetector>,
    },
    /// Mutated log lines through the reader and a pipeline: panics, hangs and line
    /// accounting, as JSON (the bounded run is a test; this is the long run).
    Fuzz {
        /// json, nginx or apache.
        #[arg(long, value_enum, default_value = "json")]
        format: LogFormat,
        /// Mutated lines to read.
        #[arg(long, default_value_t = 1_000_000)]
        lines: u64,
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// Isolation forest on a labelled CSV (last column 0/1): AUC and timings as JSON.
    Forest {
        #[arg(long, required_unless_present = "fit_csv")]
        csv: Option<PathBuf>,
        /// Fit on this CSV of features (no label) and print the scores of --score-csv's rows.
        #[arg(long, requires = "score_csv")]
        fit_csv: Option<PathBuf>,
        #[arg(long)]
        score_csv: Option<PathBuf>,
        #[arg(long, default_value_t = 100)]
        trees: usize,
        #[arg(long, default_value_t = 256)]
        samples: usize,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        #[arg(long, default_value_t = 5)]
        repeats: usize,
    },
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq)]
enum TrainModel {
    Autoencoder,
    Lstm,
}

#[derive(clap::Args, Clone)]
struct SimArgs {
    #[arg(long, default_value = "bank")]
    topology: String,
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Length of the simulated traffic, in hours.
    #[arg(long, default_value_t = 6.0)]
    hours: f64,
    /// Mean entry calls per second.
    #[arg(long, default_value_t = 20.0)]
    rate: f64,
    /// Start time (RFC 3339).
    #[arg(long, default_value = "2026-03-02T00:00:00Z")]
    start: String,
    /// No incidents (a new service still appears).
    #[arg(long)]
    no_incidents: bool,
}

impl SimArgs {
    fn config(&self) -> anyhow::Result<SimConfig> {
        anyhow::ensure!(self.hours > 0.0 && self.hours <= 24.0 * 60.0, "--hours must be in (0, 1440]");
        anyhow::ensure!(self.rate > 0.0 && self.rate <= 100_000.0, "--rate must be in (0, 100000]");
        let start = parse_rfc3339(&self.start).with_context(|| format!("--start `{}` is not an RFC 3339 time", self.start))?;
        Ok(SimConfig {
            seed: self.seed,
            topology: self.topology.clone(),
            start,
            duration: (self.hours * HOUR_MS as f64) as Millis,
            rate: self.rate,
            incidents: !self.no_incidents,
            max_events: None,
        })
    }
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&cli.log));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let (code, say) = crate::output::exit_code(&e);
            if say {
                eprintln!("error: {e:#}");
            }
            code
        }
    }
}

fn spinner(what: &str) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new_spinner();
    pb.set_style(ProgressStyle::with_template("{spinner} {msg} [{elapsed}]").expect("valid template"));
    pb.set_message(what.to_owned());
    pb
}

fn bar(len: u64, what: &str) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new(len);
    pb.set_style(
        ProgressStyle::with_template("{msg} [{bar:30}] {percent}% eta {eta}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    pb.set_message(what.to_owned());
    pb
}

fn run(cmd: Command) -> anyhow::Result<()> {
    match cmd {
        Command::Detect {
            inputs,
            output,
            input,
            args,
        } => {
            let cfg = args.config()?;
            let (stats, report, sink) = detect_source(input.source(&inputs)?, &output, cfg)?;
            print_detect_summary(&stats, &report, &sink.alerts(), &output)
        }
        Command::Health { es, config, job } => es_health(&es, config.as_deref(), job.as_deref()),
        Command::Report { input, output, title } => {
            let output = output.unwrap_or_else(|| input.join("report"));
            let (path, data) = crate::report::write(&input, &output, &title)?;
            outln!(
                "wrote {} ({} services, {} alerts, {} anomalies, {} example journeys); open it in a browser",
                path.display(),
                data.services.len(),
                data.alerts.len(),
                data.anomalies_total,
                data.journeys.len()
            );
            Ok(())
        }
        Command::Setup {
            es,
            config,
            kibana,
            kibana_only,
        } => {
            if !kibana_only {
                es_setup(&es, config.as_deref())?;
            }
            match kibana {
                Some(url) => kibana_setup(&url, es.ca_cert.as_deref()),
                None => Ok(()),
            }
        }
        Command::Run {
            es,
            args,
            once,
            since,
            no_email,
            json,
        } => es_run(&es, &args, once, since.as_deref(), no_email, json),
        Command::Backfill {
            es,
            args,
            from,
            to,
            restart,
            json,
        } => es_backfill(&es, &args, &from, &to, restart, json),
        Command::Simulate {
            output: None,
            es: Some(url),
            index,
            ca_cert,
            labels,
            sim,
            format,
        } => {
            anyhow::ensure!(
                format == LogFormat::Json,
                "--es loads events; --format nginx|apache writes access logs to a file"
            );
            es_simulate(&url, &index, ca_cert, labels.as_deref(), &sim)
        }
        Command::Simulate {
            output,
            labels,
            format,
            sim,
            ..
        } => {
            let output = output.context("--output or --es is required")?;
            let cfg = sim.config()?;
            let labels_out = simulate_files_as(&cfg, &output, labels.as_deref(), format)?;
            eprintln!(
                "simulated {} events ({} topology, seed {}, {} incidents) into {}",
                labels_out.events,
                labels_out.topology,
                labels_out.seed,
                labels_out.incidents.len(),
                output.display()
            );
            Ok(())
        }
        Command::Demo { dir, sim, args } => demo(&dir, &sim, args.config()?),
        Command::Eval { labels, alerts, json } => {
            let l: Labels = read_json(&labels)?;
            let a = read_alerts(&alerts)?;
            let r = eval::evaluate(&l, &a);
            if json {
                outln!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                print_eval(&r, true)?;
            }
            Ok(())
        }
        Command::EvalSuite {
            topologies,
            seeds,
            hours,
            rate,
            verbose,
            args,
        } => eval_suite(&topologies, &seeds, hours, rate, verbose, args.config()?),
        Command::Services { from } => {
            let path = from.join("services.json");
            let recs: Vec<ServiceRecord> =
                read_json(&path).with_context(|| format!("run `apiwatch detect --output {}` first", from.display()))?;
            outln!(
                "{:<16} {:<8} {:<24} {:>10} {:>7} {:>7}  baseline",
                "service",
                "provider",
                "first seen",
                "calls",
                "routes",
                "windows"
            );
            for r in recs {
                outln!(
                    "{:<16} {:<8} {:<24} {:>10} {:>7} {:>7}  {}",
                    r.service,
                    r.provider,
                    format_rfc3339(r.first_seen),
                    r.calls,
                    r.routes.len(),
                    r.windows,
                    r.baseline
                );
            }
            Ok(())
        }
        Command::Bench {
            es: Some(url),
            events,
            live_secs,
            live_rate,
            ..
        } => {
            let client = EsClient::new(ClientOptions::new(&url))?;
            let report = crate::es::bench::run(&client, &WorkerSettings::default(), events, live_secs, live_rate)?;
            outln!("{}", serde_json::to_string_pretty(&report)?);
            Ok(())
        }
        Command::Bench { input, events, args, .. } => bench_detect(input, events, args.config()?),
        Command::Features {
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
        Command::Train {
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
        } => {
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
                concat_features(&from_features, &data)?;
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
        Command::Models {
            models,
            onnx_runtime,
            json,
        } => {
            let m = crate::ml::Models::open(onnx_runtime.as_deref(), models.as_deref())?;
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
        Command::EvalSessions {
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
        Command::BenchModels {
            rows,
            batch,
            sessions,
            models,
            onnx_runtime,
            python,
        } => bench_models(rows, batch, sessions, models, onnx_runtime, python),
        Command::EvalNab { data, mut detector } => {
            use clap::ValueEnum;
            if detector.is_empty() {
                detector = crate::eval::nab::SeriesDetector::value_variants().to_vec();
            }
            let series = crate::eval::nab::load(&data)?;
            let profiles: std::collections::BTreeMap<String, serde_json::Value> = read_json(&data.join("profiles.json"))?;
            let mut out = Vec::new();
            for &d in &detector {
                let scores: Vec<Vec<f64>> = series.iter().map(|s| d.scores(&s.values)).collect();
                for (name, p) in &profiles {
                    let cost: crate::eval::nab::CostMatrix = serde_json::from_value(p["CostMatrix"].clone())
                        .with_context(|| format!("profiles.json: `{name}` has no CostMatrix"))?;
                    out.push(crate::eval::nab::run(&series, &scores, d, name, cost));
                }
            }
            outln!("{}", serde_json::to_string_pretty(&out)?);
            Ok(())
        }
        Command::Fuzz { format, lines, seed } => {
            let pb = bar(lines, "mutated lines");
            let r = crate::source::mutate::run(format, lines, seed, |n| pb.set_position(n))?;
            pb.finish_and_clear();
            outln!("{}", serde_json::to_string(&r)?);
            anyhow::ensure!(
                r.panics == 0 && r.accounting_errors == 0 && r.lines_read == r.lines_written,
                "the harness found a defect (see above)"
            );
            Ok(())
        }
        Command::Forest {
            fit_csv: Some(fit),
            score_csv: Some(score),
            trees,
            samples,
            seed,
            ..
        } => {
            let forest = crate::detect::iforest::IsolationForest::fit(
                bench::read_csv(&fit)?.view(),
                ForestParams {
                    n_trees: trees,
                    max_samples: samples,
                    seed,
                },
            );
            let scores = forest.score_rows(bench::read_csv(&score)?.view());
            outln!("{}", serde_json::json!({ "scores": scores }));
            Ok(())
        }
        Command::Forest {
            csv,
            trees,
            samples,
            seed,
            repeats,
            ..
        } => {
            let csv = csv.context("--csv is required")?;
            let (data, labels) = bench::read_labelled_csv(&csv)?;
            let r = bench::forest_bench(
                &data,
                &labels,
                ForestParams {
                    n_trees: trees,
                    max_samples: samples,
                    seed,
                },
                repeats,
            );
            outln!("{}", serde_json::to_string(&r)?);
            Ok(())
        }
    }
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> anyhow::Result<T> {
    let f = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    serde_json::from_reader(std::io::BufReader::new(f)).with_context(|| format!("{} is not the expected JSON", path.display()))
}

fn read_alerts(path: &Path) -> anyhow::Result<Vec<Alert>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| serde_json::from_str(l).with_context(|| format!("{}:{}: not an alert document", path.display(), i + 1)))
        .collect()
}

/// Where `detect` puts the lines it could not use.
const REJECTED_FILE: &str = "rejected.ndjson";

/// Runs file-mode detection; the sink keeps the alerts for the summary.
pub fn detect_files(inputs: &[PathBuf], output: &Path, cfg: PipelineConfig) -> anyhow::Result<(RunStats, IngestReport, FileSink)> {
    detect_source(LineSource::new(inputs.to_vec()), output, cfg)
}

/// Every file `detect` writes into its output directory.
const OUTPUT_FILES: [&str; 7] = [
    "anomalies.ndjson",
    "alerts.ndjson",
    "journeys.ndjson",
    "metrics.ndjson",
    "services.json",
    REJECTED_FILE,
    "report",
];

/// Refuses an input that is one of the files the run would write (it would be truncated
/// before it is read).
fn check_inputs_are_not_outputs(inputs: &[PathBuf], output: &Path) -> anyhow::Result<()> {
    let Ok(out) = output.canonicalize() else {
        return Ok(()); // the output directory does not exist yet: nothing in it can be an input
    };
    for input in inputs.iter().filter(|i| i.as_os_str() != "-") {
        let Ok(path) = input.canonicalize() else { continue };
        let collides =
            path.parent() == Some(out.as_path()) && path.file_name().and_then(|n| n.to_str()).is_some_and(|n| OUTPUT_FILES.contains(&n));
        anyhow::ensure!(
            !collides,
            "input {} is one of the files this run writes into {}: choose another --output directory",
            input.display(),
            output.display()
        );
    }
    Ok(())
}

/// Runs file-mode detection over any line source.
fn detect_source(source: LineSource, output: &Path, cfg: PipelineConfig) -> anyhow::Result<(RunStats, IngestReport, FileSink)> {
    check_inputs_are_not_outputs(source.inputs(), output)?;
    // Open the input before creating anything: a missing file or a FIFO nobody writes to must
    // not leave empty outputs behind.
    let mut source = source.with_settings(cfg.input);
    source.open_first()?;
    let sink = FileSink::create(output)?;
    let rejected = output.join(REJECTED_FILE);
    // A rerun into the same directory must not show the last run's rejects.
    let _ = std::fs::remove_file(&rejected);
    let mut source = ReadAhead::spawn(source.with_rejects(rejected))?;
    let mut sink = sink;
    let mut pipeline = Pipeline::new(cfg)?;
    let pb = spinner("detecting");
    let started = Instant::now();
    pipeline.run_source(&mut source, &mut sink, |n| {
        if n % 65_536 < 4096 {
            pb.set_message(format!(
                "detecting: {n} events, {:.0}/s",
                n as f64 / started.elapsed().as_secs_f64().max(1e-9)
            ));
        }
    })?;
    let stats = pipeline.finish(&mut sink)?;
    pb.finish_and_clear();
    Ok((stats, source.report().clone(), sink))
}

/// `1 anomaly`, `2 anomalies`.
fn count(n: impl Into<u64>, one: &str, many: &str) -> String {
    let n = n.into();
    format!("{n} {}", if n == 1 { one } else { many })
}

fn print_detect_summary(stats: &RunStats, report: &IngestReport, alerts: &[Alert], output: &Path) -> anyhow::Result<()> {
    outln!(
        "read {}: {} used, {} skipped, {} blank",
        count(report.lines, "line", "lines"),
        report.events,
        report.skipped(),
        report.blank
    );
    if report.skipped() > 0 {
        outln!(
            "  skipped: {} malformed, {} missing a required field, {} with a bad value, {} from a wrong clock",
            report.malformed,
            report.missing_field,
            report.bad_value,
            report.clock_skew
        );
    }
    for s in &report.samples {
        outln!("  skipped {s}");
    }
    if report.skipped() > report.samples.len() as u64 {
        outln!("  ... and {} more", report.skipped() - report.samples.len() as u64);
    }
    if report.skipped() > 0 {
        outln!(
            "  every skipped line, with its place and reason: {}",
            output.join(REJECTED_FILE).display()
        );
    }
    for (field, d) in &report.dropped_fields {
        outln!(
            "  kept {} without `{field}` (a bad value; first at {})",
            count(d.count, "event", "events"),
            d.example
        );
    }
    if stats.late_events > 0 {
        outln!(
            "  {} arrived later than the allowed lateness and were scored in the window open when they arrived",
            count(stats.late_events, "event", "events")
        );
    }
    if stats.refused_events > 0 {
        outln!(
            "  {} dated outside years 1900-9999 refused",
            count(stats.refused_events, "event", "events")
        );
    }
    let f = &stats.folded;
    if let Some(first) = &f.first_service {
        outln!(
            "  {} from services beyond limits.max_services folded into `(other)` (first: {first})",
            count(f.service_calls, "call", "calls")
        );
    }
    if let Some(first) = &f.first_provider {
        outln!(
            "  {} from providers beyond limits.max_providers folded into `(other)` (first: {first})",
            count(f.provider_calls, "call", "calls")
        );
    }
    if stats.untracked_session_calls > 0 || stats.untracked_journey_calls > 0 {
        outln!(
            "  not followed at the caps: {} (limits.max_sessions), {} (limits.max_open_journeys)",
            count(stats.untracked_session_calls, "session call", "session calls"),
            count(stats.untracked_journey_calls, "journey call", "journey calls")
        );
    }
    for (rule, n) in &stats.held_by_rule {
        outln!(
            "  {} strong enough to raise an alert held back by `{rule}` (marked anomaly.held_by in anomalies.ndjson)",
            count(*n, "anomaly", "anomalies")
        );
    }
    for (bound, n) in &stats.alert_bounds {
        let what = match bound.as_str() {
            crate::alert::bound::AGE => "alert closed at its age bound (alerts.max_alert_age_secs)",
            crate::alert::bound::SIZE => "anomaly kept out of an incident at its size bound (alerts.max_services_per_alert)",
            other => other,
        };
        outln!("  {n} × {what}");
    }
    outln!(
        "{}, {}, {}; {}; {}",
        count(stats.windows, "window", "windows"),
        count(stats.services as u64, "service", "services"),
        count(stats.entities as u64, "entity", "entities"),
        count(stats.anomalies, "anomaly", "anomalies"),
        count(alerts.len() as u64, "alert", "alerts")
    );
    for a in alerts.iter().take(30) {
        outln!(
            "  {} {:<8} {}",
            format_hhmm(a.timestamp),
            format!("{:?}", a.status).to_lowercase(),
            a.title
        );
    }
    outln!(
        "wrote anomalies.ndjson, alerts.ndjson, journeys.ndjson, metrics.ndjson and services.json into {}; \
         `apiwatch report -i {}` draws them",
        output.display(),
        output.display()
    );
    Ok(())
}

fn simulate_files(cfg: &SimConfig, output: &Path, labels: Option<&Path>) -> anyhow::Result<Labels> {
    simulate_files_as(cfg, output, labels, LogFormat::Json)
}

fn simulate_files_as(cfg: &SimConfig, output: &Path, labels: Option<&Path>, format: LogFormat) -> anyhow::Result<Labels> {
    let mut w: Box<dyn Write> = if output.as_os_str() == "-" {
        Box::new(BufWriter::new(std::io::stdout().lock()))
    } else {
        if let Some(dir) = output.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        }
        Box::new(BufWriter::with_capacity(
            1 << 20,
            File::create(output).with_context(|| format!("cannot create {}", output.display()))?,
        ))
    };
    let pb = bar(cfg.duration as u64 / 1000, "simulating");
    let start = cfg.start;
    let l = simulate::simulate_to_writer_as(cfg.clone(), &mut w, format, |t| pb.set_position(((t - start) / 1000) as u64))?;
    pb.finish_and_clear();
    if let Some(p) = labels {
        let f = File::create(p).with_context(|| format!("cannot create {}", p.display()))?;
        serde_json::to_writer_pretty(BufWriter::new(f), &l)?;
    }
    Ok(l)
}

fn demo(dir: &Path, sim: &SimArgs, detect_cfg: PipelineConfig) -> anyhow::Result<()> {
    let cfg = sim.config()?;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let events = dir.join("events.ndjson");
    let labels_path = dir.join("labels.json");
    let started = Instant::now();
    let labels = simulate_files(&cfg, &events, Some(&labels_path))?;
    outln!(
        "simulated {:.1} h of {} traffic: {} events, {} incidents injected ({:.1} s)",
        sim.hours,
        labels.topology,
        labels.events,
        labels.incidents.len(),
        started.elapsed().as_secs_f64()
    );
    let out = dir.join("detect");
    let started = Instant::now();
    let (stats, report, sink) = detect_files(std::slice::from_ref(&events), &out, detect_cfg)?;
    let secs = started.elapsed().as_secs_f64();
    outln!(
        "detected in {:.1} s ({:.0} events/s): {} anomalies, {} alerts, {} services onboarded, {} skipped lines",
        secs,
        stats.events as f64 / secs,
        stats.anomalies,
        sink.alerts().len(),
        stats.services,
        report.skipped()
    );
    let alerts = sink.alerts();
    let r = eval::evaluate(&labels, &alerts);
    outln!();
    outln!(
        "{:<7} {:<21} {:<24} {:>6}  {:<5} first alert",
        "inc",
        "kind",
        "origin",
        "start",
        "found"
    );
    for inc in &labels.incidents {
        let result = r.results.iter().find(|x| x.id == inc.id);
        let found = match result {
            None => "-".to_owned(),
            Some(x) if x.right_origin => "yes".to_owned(),
            Some(x) if x.detected => "moved".to_owned(),
            Some(_) => "NO".to_owned(),
        };
        let first = alerts
            .iter()
            .filter(|a| result.is_some() && a.timestamp >= inc.start - 2 * MINUTE_MS && a.timestamp <= inc.end + 5 * MINUTE_MS)
            .min_by_key(|a| a.timestamp);
        outln!(
            "{:<7} {:<21} {:<24} {:>6}  {:<5} {}",
            inc.id,
            format!("{:?}", inc.kind),
            format!("{}/{}", inc.service, inc.provider),
            format_hhmm(inc.start).trim_end_matches(" UTC"),
            found,
            first
                .map(|a| format!("{} {}", format_hhmm(a.timestamp), a.title))
                .unwrap_or_default()
        );
    }
    for t in &r.false_alert_titles {
        outln!("{:<7} {:<21} {:<24} {:>6}  {:<5} {}", "-", "(no incident)", "", "", "false", t);
    }
    outln!();
    print_eval(&r, false)?;
    let title = format!("apiwatch demo: {:.1} h of simulated {} traffic", sim.hours, labels.topology);
    let (page, _) = crate::report::write(&out, &dir.join("report"), &title)?;
    outln!(
        "\nresults in {}; list services with `apiwatch services --from {}`",
        out.display(),
        out.display()
    );
    outln!("report: {} (open it in a browser)", page.display());
    Ok(())
}

fn print_eval(r: &EvalReport, details: bool) -> anyhow::Result<()> {
    for l in r.summary_lines() {
        outln!("{l}");
    }
    if details {
        for x in &r.results {
            outln!(
                "  {} {:?} {} detected={} right_origin={} alerts={} delay={} lead={}",
                x.id,
                x.kind,
                x.origin,
                x.detected,
                x.right_origin,
                x.alerts,
                x.delay_s.map_or("-".into(), |d| format!("{d:.0}s")),
                x.lead_min.map_or("-".into(), |d| format!("{d:.0}min")),
            );
        }
        for t in &r.false_alert_titles {
            outln!("  false alert: {t}");
        }
    }
    Ok(())
}

/// Simulates and detects in memory; returns the alerts.
pub fn simulate_and_detect(sim: SimConfig, cfg: PipelineConfig) -> anyhow::Result<(Labels, Vec<Alert>, RunStats)> {
    let (events, labels) = simulate::simulate_events(sim)?;
    let mut sink = MemorySink::default();
    let mut p = Pipeline::new(cfg)?;
    for e in events {
        p.push(e, &mut sink)?;
    }
    let stats = p.finish(&mut sink)?;
    Ok((labels, sink.alerts(), stats))
}

fn eval_suite(topologies: &[String], seeds: &[u64], hours: f64, rate: f64, verbose: bool, cfg: PipelineConfig) -> anyhow::Result<()> {
    let runs: Vec<(String, u64)> = topologies.iter().flat_map(|t| seeds.iter().map(move |s| (t.clone(), *s))).collect();
    let pb = bar(runs.len() as u64 * 2, "evaluating");
    let mut ours = Vec::new();
    let mut rule = Vec::new();
    for (topo, seed) in &runs {
        let sim = SimArgs {
            topology: topo.clone(),
            seed: *seed,
            hours,
            rate,
            start: "2026-03-02T00:00:00Z".into(),
            no_incidents: false,
        }
        .config()?;
        let (labels, alerts, _) = simulate_and_detect(sim.clone(), cfg.clone())?;
        ours.push(eval::evaluate(&labels, &alerts));
        pb.inc(1);
        let static_cfg = DetectArgs {
            config: None,
            window_secs: None,
            lateness_secs: None,
            detectors: Some(vec![DetectorKind::StaticRule]),
            model_seed: None,
            models: None,
            onnx_runtime: None,
            no_models: true,
        }
        .config()?;
        let (labels, alerts, _) = simulate_and_detect(sim, static_cfg)?;
        rule.push(eval::evaluate(&labels, &alerts));
        pb.inc(1);
        if verbose {
            eprintln!("{topo} seed {seed}: ours {:?}", ours.last().map(|r| r.summary_lines()));
        }
    }
    pb.finish_and_clear();
    let (o, s) = (eval::combine(&ours), eval::combine(&rule));
    let lead = |r: &EvalReport| {
        if r.lead_times_min.is_empty() {
            "none predicted".to_owned()
        } else {
            format!(
                "{:.0} min (min {:.0})",
                crate::detect::stats::median(&r.lead_times_min),
                r.lead_times_min.iter().copied().fold(f64::INFINITY, f64::min)
            )
        }
    };
    outln!(
        "runs: {} ({} topologies x {} seeds, {hours} h each at {rate} entry calls/s)",
        runs.len(),
        topologies.join(","),
        seeds.len()
    );
    outln!("| measure | apiwatch | static rule (p95 > 3x warm-up, 5xx > 5%) |");
    outln!("|---|---|---|");
    outln!(
        "| incidents detected with the right origin | {}/{} ({:.0}%) | {}/{} ({:.0}%) |",
        o.detected_right_origin,
        o.incidents,
        100.0 * o.right_origin_share(),
        s.detected_right_origin,
        s.incidents,
        100.0 * s.right_origin_share()
    );
    outln!(
        "| incidents detected at all | {}/{} | {}/{} |",
        o.detected,
        o.incidents,
        s.detected,
        s.incidents
    );
    outln!(
        "| false alerts per day | {:.2} | {:.2} |",
        o.false_alerts_per_day,
        s.false_alerts_per_day
    );
    outln!(
        "| alerts per detected incident | {:.2} | {:.2} |",
        o.alerts_per_incident,
        s.alerts_per_incident
    );
    outln!(
        "| median detection delay | {} | {} |",
        o.median_delay_s.map_or("n/a".into(), |d| format!("{d:.0} s")),
        s.median_delay_s.map_or("n/a".into(), |d| format!("{d:.0} s"))
    );
    outln!("| lead time before breach (gradual) | {} | {} |", lead(&o), lead(&s));
    outln!("\nby incident kind (apiwatch: total / detected / right origin; static rule likewise):");
    for (k, v) in &o.by_kind {
        let w = s.by_kind.get(k).copied().unwrap_or_default();
        outln!("  {k:<20} {}/{}/{}   {}/{}/{}", v.0, v.1, v.2, w.0, w.1, w.2);
    }
    if verbose {
        for x in o.results.iter().filter(|x| !x.right_origin) {
            outln!("  missed or moved: {} {:?} {} -> {:?}", x.id, x.kind, x.origin, x.alerted_origin);
        }
        for x in o.results.iter().filter(|x| x.alerts > 1) {
            outln!(
                "  split into {} alerts: {} {:?} {} -> {}",
                x.alerts,
                x.id,
                x.kind,
                x.origin,
                x.alert_origins.join(", ")
            );
        }
        for t in &o.false_alert_titles {
            outln!("  false alert: {t}");
        }
    }
    Ok(())
}

fn bench_detect(input: Option<PathBuf>, events: u64, detect_cfg: PipelineConfig) -> anyhow::Result<()> {
    let path = match input {
        Some(p) => p,
        None => {
            let dir = PathBuf::from(".cache/bench");
            std::fs::create_dir_all(&dir)?;
            let p = dir.join(format!("events-{events}.ndjson"));
            if !p.exists() {
                // A busy platform: 200 entry calls/s (about 450 events/s), for as long as it
                // takes to write `events` events.
                let rate = 200.0;
                let hours = (events as f64 / (rate * 0.9) / 3600.0).max(0.5);
                let mut cfg = SimArgs {
                    topology: "bank".into(),
                    seed: 5,
                    hours,
                    rate,
                    start: "2026-03-02T00:00:00Z".into(),
                    no_incidents: false,
                }
                .config()?;
                cfg.max_events = Some(events);
                let tmp = p.with_extension("tmp");
                simulate_files(&cfg, &tmp, None)?;
                std::fs::rename(&tmp, &p)?;
            }
            p
        }
    };
    let (n_peer, peer_s) = bench::parse_only(&path)?;
    let rss_after_peer = bench::peak_rss_mib();
    let out = std::env::temp_dir().join(format!("apiwatch-bench-{}", std::process::id()));
    let started = Instant::now();
    let (stats, _, _) = detect_files(std::slice::from_ref(&path), &out, detect_cfg)?;
    let secs = started.elapsed().as_secs_f64();
    let _ = std::fs::remove_dir_all(&out);
    let rate = stats.events as f64 / secs;
    let peer_rate = n_peer as f64 / peer_s;
    outln!(
        "{{\"file\":\"{}\",\"events\":{},\"detect_s\":{:.3},\"detect_events_per_s\":{:.0},\"parse_only_events_per_s\":{:.0},\"ratio_to_parse_only\":{:.3},\"peak_rss_mib\":{:.1},\"parse_only_peak_rss_mib\":{:.1},\"anomalies\":{}}}",
        path.display(),
        stats.events,
        secs,
        rate,
        peer_rate,
        rate / peer_rate,
        bench::peak_rss_mib().unwrap_or(0.0),
        rss_after_peer.unwrap_or(0.0),
        stats.anomalies
    );
    Ok(())
}

fn es_setup(es: &EsArgs, config: Option<&Path>) -> anyhow::Result<()> {
    let app = crate::config::load_app(config, &|k| std::env::var(k).ok())?;
    let (client, settings) = es.connect(&app)?;
    let (caps, steps) = crate::es::templates::setup(&client, &settings.names)?;
    outln!(
        "Elasticsearch {} at {}: {} variant",
        if caps.version.is_empty() { "?" } else { &caps.version },
        client.url(),
        caps.variant()
    );
    for s in &steps {
        outln!("  {:<9} {}", s.outcome, s.what);
    }
    let changed = steps.iter().filter(|s| s.outcome != "unchanged" && s.outcome != "exists").count();
    outln!(
        "{changed} of {} changed (template version {}). Logs go to data streams matching logs-apiwatch.calls-*.",
        steps.len(),
        crate::es::templates::TEMPLATE_VERSION
    );
    Ok(())
}

fn kibana_setup(url: &str, ca_cert: Option<&Path>) -> anyhow::Result<()> {
    let out = crate::kibana::import_saved_objects(url, &crate::es::client::Credentials::from_env(), ca_cert)?;
    outln!(
        "Kibana at {url}: {} saved objects imported (data views, visualizations, searches, 5 dashboards named \"apiwatch: ...\")",
        out.imported
    );
    for r in &out.refused {
        outln!("  refused {r}");
    }
    anyhow::ensure!(out.refused.is_empty(), "{} saved objects were refused (above)", out.refused.len());
    Ok(())
}

/// SIGTERM and SIGINT set the flag: the worker finishes its slice, checkpoints and exits.
fn stop_flag() -> anyhow::Result<std::sync::Arc<std::sync::atomic::AtomicBool>> {
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGTERM, stop.clone())?;
    signal_hook::flag::register(signal_hook::consts::SIGINT, stop.clone())?;
    Ok(stop)
}

fn print_run_summary(s: &RunSummary, json: bool) -> anyhow::Result<()> {
    if json {
        outln!("{}", serde_json::to_string_pretty(s)?);
        return Ok(());
    }
    if s.already_complete {
        outln!(
            "job {}: already complete up to {}; nothing to do (use --restart to score it again)",
            s.job,
            s.until.as_deref().unwrap_or("?")
        );
        return Ok(());
    }
    outln!(
        "job {}: {} → {}{}",
        s.job,
        s.from.as_deref().unwrap_or("?"),
        s.until.as_deref().unwrap_or("?"),
        if s.resumed { " (resumed from its checkpoint)" } else { "" }
    );
    outln!(
        "  {} events in {:.1} s ({:.0}/s), {} anomalies, {} alerts raised, {} checkpoints",
        s.events,
        s.seconds,
        s.events_per_sec,
        s.anomalies,
        s.alerts_raised,
        s.checkpoints
    );
    let by: Vec<String> = s.writes.by_index.iter().map(|(k, v)| format!("{k} {v}")).collect();
    outln!("  written: {} documents ({})", s.writes.written, by.join(", "));
    if s.writes.parked > 0 {
        outln!(
            "  PARKED {} documents Elasticsearch refused (see the dead-letter index):",
            s.writes.parked
        );
        for p in &s.writes.parked_samples {
            outln!("    {p}");
        }
    }
    if s.skipped_documents > 0 {
        outln!("  skipped {} log documents that are not valid events:", s.skipped_documents);
        for p in &s.skipped_samples {
            outln!("    {p}");
        }
    }
    if s.late_scored > 0 {
        outln!("  {} events arrived after their time range was read; scored as late", s.late_scored);
    }
    if s.late_unscored > 0 {
        outln!(
            "  {} events arrived later than the allowed lateness (counted, not scored): raise elasticsearch.ingest_delay_secs",
            s.late_unscored
        );
    }
    if s.notifications_sent > 0 {
        outln!("  {} alert mails sent", s.notifications_sent);
    }
    Ok(())
}

/// The configured channels: email alone keeps its checkpoint format; with webhooks too, each
/// channel's memory is kept under its name.
fn notifiers(app: &crate::config::AppConfig, no_email: bool) -> anyhow::Result<Option<Box<dyn crate::notify::Notifier>>> {
    use crate::notify::{email::EmailNotifier, webhook::WebhookNotifier, Fanout, Notifier};
    let mut channels: Vec<(&'static str, Box<dyn Notifier>)> = Vec::new();
    if let (Some(e), false) = (&app.email, no_email) {
        channels.push(("email", Box::new(EmailNotifier::new(e.clone())?)));
    }
    if let (Some(w), false) = (&app.webhook, no_email) {
        channels.push(("webhook", Box::new(WebhookNotifier::new(w.clone())?)));
    }
    Ok(match channels.len() {
        0 => None,
        1 => channels.pop().map(|(_, c)| c),
        _ => Some(Box::new(Fanout { channels })),
    })
}

fn es_run(es: &EsArgs, args: &DetectArgs, once: bool, since: Option<&str>, no_email: bool, json: bool) -> anyhow::Result<()> {
    let app = args.app()?;
    let (client, mut settings) = es.connect(&app)?;
    if let Some(s) = since {
        settings.since = Some(parse_rfc3339(s).with_context(|| format!("--since `{s}` is not an RFC 3339 time"))?);
    }
    let mut notifier = notifiers(&app, no_email)?;
    let stop = stop_flag()?;
    let opts = RunOptions {
        once,
        stop,
        notifier: notifier.as_mut().map(|n| n.as_mut() as &mut dyn crate::notify::Notifier),
        now: None,
        progress: None,
    };
    let summary = crate::es::worker::run(&client, &settings, app.pipeline, opts)?;
    print_run_summary(&summary, json)
}

fn es_health(es: &EsArgs, config: Option<&Path>, job: Option<&str>) -> anyhow::Result<()> {
    let app = crate::config::load_app(config, &|k| std::env::var(k).ok())?;
    let (client, mut settings) = es.connect(&app)?;
    if let Some(j) = job {
        settings.job = j.to_owned();
    }
    let store = crate::es::state::StateStore::new(client, &settings.names.state, &settings.job, &settings.worker_id);
    let status = store
        .status()
        .with_context(|| format!("cannot read job `{}` from {}", settings.job, settings.names.state))?;
    let now = chrono::Utc::now().timestamp_millis();
    let ago = |t: Millis| format!("{} ({} s ago)", format_rfc3339(t), (now - t) / 1000);
    if let (Some(saved), Some(until)) = (status.checkpoint_saved, status.data_until) {
        outln!(
            "job `{}`: checkpoint saved {}, events scored up to {}",
            settings.job,
            ago(saved),
            format_rfc3339(until)
        );
    }
    match status.lease {
        Some(l) if l.until > now => {
            outln!(
                "job `{}`: worker {} holds the lease until {}",
                settings.job,
                l.worker,
                format_rfc3339(l.until)
            );
            Ok(())
        }
        Some(l) => anyhow::bail!(
            "job `{}`: the lease of worker {} ran out at {}: no worker is polling (is it running? can it reach Elasticsearch?)",
            settings.job,
            l.worker,
            ago(l.until)
        ),
        None => anyhow::bail!(
            "job `{}` has no lease in {}: no worker has started it (run `apiwatch run`)",
            settings.job,
            settings.names.state
        ),
    }
}

fn es_backfill(es: &EsArgs, args: &DetectArgs, from: &str, to: &str, restart: bool, json: bool) -> anyhow::Result<()> {
    let app = args.app()?;
    let (client, settings) = es.connect(&app)?;
    let from = parse_rfc3339(from).with_context(|| format!("--from `{from}` is not an RFC 3339 time"))?;
    let to = parse_rfc3339(to).with_context(|| format!("--to `{to}` is not an RFC 3339 time"))?;
    anyhow::ensure!(from < to, "--from must be before --to");
    let stop = stop_flag()?;
    let pb = bar(1000, "backfill");
    let summary = crate::es::worker::backfill(&client, &settings, app.pipeline, (from, to), restart, stop, |done, total| {
        pb.set_position((done as f64 / total.max(1) as f64 * 1000.0) as u64);
    })?;
    pb.finish_and_clear();
    print_run_summary(&summary, json)
}

fn es_simulate(url: &str, index: &str, ca_cert: Option<PathBuf>, labels: Option<&Path>, sim: &SimArgs) -> anyhow::Result<()> {
    let mut opts = ClientOptions::new(url);
    opts.ca_cert = ca_cert;
    let client = EsClient::new(opts)?;
    let cfg = sim.config()?;
    let pb = spinner("loading simulated traffic");
    let (stats, l) = crate::es::loader::load(&client, index, cfg, |n| pb.set_message(format!("loaded {n} events")))?;
    pb.finish_and_clear();
    if let Some(path) = labels {
        let f = File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
        serde_json::to_writer_pretty(BufWriter::new(f), &l)?;
    }
    outln!(
        "{} events into {index} in {:.1} s ({:.0}/s): {} created, {} already there, {} refused",
        stats.events,
        stats.seconds,
        stats.events as f64 / stats.seconds.max(1e-9),
        stats.created,
        stats.already_there,
        stats.refused
    );
    for s in &stats.refused_samples {
        outln!("  refused: {s}");
    }
    anyhow::ensure!(stats.refused == 0, "{} events were refused (see above)", stats.refused);
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
    let labels = simulate_files(&cfg, &path, None)?;
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
) -> anyhow::Result<crate::detect::export::ExportReport> {
    if let Some(r) = range.export(dir, every)? {
        return Ok(r);
    }
    let events = training_events(inputs, sim, sim_dir)?;
    export_features(&mut ReadAhead::spawn(LineSource::new(events))?, dir, every)
}

/// Runs the pipeline with the feature export as its only detector.
fn export_features(source: &mut dyn EventSource, dir: &Path, every: u64) -> anyhow::Result<crate::detect::export::ExportReport> {
    let (export, report, _) = crate::detect::export::FeatureExport::create(dir, every)?;
    let mut sink = MemorySink::default();
    let mut p = Pipeline::with_detectors(PipelineConfig::default(), vec![Box::new(export)]);
    let pb = spinner("exporting features");
    p.run_source(source, &mut sink, |n| {
        if n % 65_536 < 4096 {
            pb.set_message(format!("exporting features: {n} events"));
        }
    })?;
    p.finish(&mut sink)?;
    pb.finish_and_clear();
    let r = report.lock().map_err(|_| anyhow::anyhow!("export report poisoned"))?.clone();
    if let Some(e) = &r.error {
        anyhow::bail!("writing the training data in {} failed: {e}", dir.display());
    }
    let ingest = source.report();
    if ingest.skipped() > 0 {
        eprintln!(
            "{} input lines or documents skipped (malformed or incomplete); the first: {}",
            ingest.skipped(),
            ingest.samples.join("; ")
        );
    }
    Ok(r)
}

/// AutoEncoder rows/s and LSTM µs per call through `ort`, beside Python's onnxruntime.
fn bench_models(
    rows: usize,
    batch: usize,
    sessions: usize,
    models: Option<PathBuf>,
    runtime: Option<PathBuf>,
    python: Option<PathBuf>,
) -> anyhow::Result<()> {
    use crate::detect::autoencoder::AutoencoderDetector;
    use crate::detect::lstm::LstmDetector;
    let m = crate::ml::Models::open(runtime.as_deref(), models.as_deref())?;
    let ae_v = m.store.current(AutoencoderDetector::MODEL)?;
    let lstm_v = m.store.current(LstmDetector::MODEL)?;
    let mut ae = crate::ml::autoencoder::AutoencoderModel::load(m.env, &ae_v, &crate::detect::request::FEATURES)?;
    let mut lstm = crate::ml::lstm::LstmModel::load(m.env, &lstm_v)?;
    let ae_rate = crate::ml::eval::autoencoder_rows_per_sec(&mut ae, rows, batch)?;
    let lstm_us = crate::ml::eval::lstm_micros_per_call(&mut lstm, rows / 20, sessions)?;
    let mut report = serde_json::json!({
        "autoencoder": {"model": ae_v.dir, "batch": batch, "rows_per_s": ae_rate.round()},
        "lstm": {"model": lstm_v.dir, "sessions_per_step": sessions, "micros_per_call": (lstm_us * 1000.0).round() / 1000.0},
        "threads": 1,
    });
    // The peer: Python's onnxruntime on the same files, same batches, one thread.
    let peer = crate::ml::train::find_python(python.as_deref()).ok().and_then(|py| {
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
    outln!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}

/// Joins several `apiwatch features` outputs into one (one CSV header).
fn concat_features(dirs: &[PathBuf], out: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    for (file, header) in [("requests.csv", true), ("sessions.txt", false)] {
        let mut w = BufWriter::new(File::create(out.join(file)).with_context(|| format!("cannot create {}", out.join(file).display()))?);
        for (i, d) in dirs.iter().enumerate() {
            let text = std::fs::read_to_string(d.join(file)).with_context(|| format!("cannot read {}", d.join(file).display()))?;
            let mut lines = text.lines();
            if header {
                let h = lines.next().unwrap_or_default();
                anyhow::ensure!(
                    h == crate::detect::request::FEATURES.join(","),
                    "{}: the header is not this worker's feature list",
                    d.join(file).display()
                );
                if i == 0 {
                    writeln!(w, "{h}")?;
                }
            }
            for l in lines {
                writeln!(w, "{l}")?;
            }
        }
        w.flush()?;
    }
    Ok(())
}
