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
use crate::source::{EventSource, IngestReport, NdjsonSource};

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
        // The static rule is the per-service rule shops use: no grouping across services.
        if cfg.detectors == [DetectorKind::StaticRule] {
            cfg.alerts.group_related_services = false;
            cfg.alerts.raise_single = 60.0;
        }
        Ok(cfg)
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
    /// Detect anomalies and alerts in NDJSON API-call events (files or `-` for stdin).
    Detect {
        #[arg(long = "input", short, required = true)]
        inputs: Vec<PathBuf>,
        #[arg(long, short)]
        output: PathBuf,
        #[command(flatten)]
        args: DetectArgs,
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
        #[command(flatten)]
        sim: SimArgs,
    },
    /// Simulate a few hours, detect, and show alerts beside the incidents injected.
    Demo {
        #[arg(long, default_value = "out/demo")]
        dir: PathBuf,
        #[command(flatten)]
        sim: SimArgs,
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
    },
    /// Isolation forest on a labelled CSV (last column 0/1): AUC and timings as JSON.
    Forest {
        #[arg(long)]
        csv: PathBuf,
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
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
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
        Command::Detect { inputs, output, args } => {
            let cfg = args.config()?;
            let (stats, report, sink) = detect_files(&inputs, &output, cfg)?;
            print_detect_summary(&stats, &report, &sink.alerts(), &output);
            Ok(())
        }
        Command::Setup { es, config } => es_setup(&es, config.as_deref()),
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
        } => es_simulate(&url, &index, ca_cert, labels.as_deref(), &sim),
        Command::Simulate { output, labels, sim, .. } => {
            let output = output.context("--output or --es is required")?;
            let cfg = sim.config()?;
            let labels_out = simulate_files(&cfg, &output, labels.as_deref())?;
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
        Command::Demo { dir, sim } => demo(&dir, &sim),
        Command::Eval { labels, alerts, json } => {
            let l: Labels = read_json(&labels)?;
            let a = read_alerts(&alerts)?;
            let r = eval::evaluate(&l, &a);
            if json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                print_eval(&r, true);
            }
            Ok(())
        }
        Command::EvalSuite {
            topologies,
            seeds,
            hours,
            rate,
            verbose,
        } => eval_suite(&topologies, &seeds, hours, rate, verbose),
        Command::Services { from } => {
            let path = from.join("services.json");
            let recs: Vec<ServiceRecord> =
                read_json(&path).with_context(|| format!("run `apiwatch detect --output {}` first", from.display()))?;
            println!(
                "{:<16} {:<8} {:<24} {:>10} {:>7} {:>7}  baseline",
                "service", "provider", "first seen", "calls", "routes", "windows"
            );
            for r in recs {
                println!(
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
            println!("{}", serde_json::to_string_pretty(&report)?);
            Ok(())
        }
        Command::Bench { input, events, .. } => bench_detect(input, events),
        Command::Forest {
            csv,
            trees,
            samples,
            seed,
            repeats,
        } => {
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
            println!("{}", serde_json::to_string(&r)?);
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

/// Runs file-mode detection; the sink keeps the alerts for the summary.
pub fn detect_files(inputs: &[PathBuf], output: &Path, cfg: PipelineConfig) -> anyhow::Result<(RunStats, IngestReport, FileSink)> {
    let mut source = NdjsonSource::new(inputs.to_vec());
    let mut sink = FileSink::create(output)?;
    let mut pipeline = Pipeline::new(cfg);
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

fn print_detect_summary(stats: &RunStats, report: &IngestReport, alerts: &[Alert], output: &Path) {
    println!(
        "read {} lines: {} events used, {} skipped ({} malformed, {} missing a required field, {} with a bad value), {} late",
        report.lines,
        report.events,
        report.skipped(),
        report.malformed,
        report.missing_field,
        report.bad_value,
        stats.late_events
    );
    for s in &report.samples {
        println!("  skipped {s}");
    }
    if report.skipped() > report.samples.len() as u64 {
        println!("  ... and {} more", report.skipped() - report.samples.len() as u64);
    }
    println!(
        "{} windows, {} services, {} entities; {} anomalies; {} alerts",
        stats.windows,
        stats.services,
        stats.entities,
        stats.anomalies,
        alerts.len()
    );
    for a in alerts.iter().take(30) {
        println!(
            "  {} {:<8} {}",
            format_hhmm(a.timestamp),
            format!("{:?}", a.status).to_lowercase(),
            a.title
        );
    }
    println!("wrote {}/anomalies.ndjson, alerts.ndjson, services.json", output.display());
}

fn simulate_files(cfg: &SimConfig, output: &Path, labels: Option<&Path>) -> anyhow::Result<Labels> {
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
    let l = simulate::simulate_to_writer(cfg.clone(), &mut w, |t| pb.set_position(((t - start) / 1000) as u64))?;
    pb.finish_and_clear();
    if let Some(p) = labels {
        let f = File::create(p).with_context(|| format!("cannot create {}", p.display()))?;
        serde_json::to_writer_pretty(BufWriter::new(f), &l)?;
    }
    Ok(l)
}

fn demo(dir: &Path, sim: &SimArgs) -> anyhow::Result<()> {
    let cfg = sim.config()?;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let events = dir.join("events.ndjson");
    let labels_path = dir.join("labels.json");
    let started = Instant::now();
    let labels = simulate_files(&cfg, &events, Some(&labels_path))?;
    println!(
        "simulated {:.1} h of {} traffic: {} events, {} incidents injected ({:.1} s)",
        sim.hours,
        labels.topology,
        labels.events,
        labels.incidents.len(),
        started.elapsed().as_secs_f64()
    );
    let out = dir.join("detect");
    let started = Instant::now();
    let (stats, report, sink) = detect_files(std::slice::from_ref(&events), &out, PipelineConfig::default())?;
    let secs = started.elapsed().as_secs_f64();
    println!(
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
    println!();
    println!(
        "{:<7} {:<21} {:<24} {:>6}  {:<5} first alert",
        "inc", "kind", "origin", "start", "found"
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
        println!(
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
        println!("{:<7} {:<21} {:<24} {:>6}  {:<5} {}", "-", "(no incident)", "", "", "false", t);
    }
    println!();
    print_eval(&r, false);
    println!(
        "\nresults in {}; list services with `apiwatch services --from {}`",
        out.display(),
        out.display()
    );
    Ok(())
}

fn print_eval(r: &EvalReport, details: bool) {
    for l in r.summary_lines() {
        println!("{l}");
    }
    if details {
        for x in &r.results {
            println!(
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
            println!("  false alert: {t}");
        }
    }
}

/// Simulates and detects in memory; returns the alerts.
pub fn simulate_and_detect(sim: SimConfig, cfg: PipelineConfig) -> anyhow::Result<(Labels, Vec<Alert>, RunStats)> {
    let (events, labels) = simulate::simulate_events(sim)?;
    let mut sink = MemorySink::default();
    let mut p = Pipeline::new(cfg);
    for e in events {
        p.push(e, &mut sink)?;
    }
    let stats = p.finish(&mut sink)?;
    Ok((labels, sink.alerts(), stats))
}

fn eval_suite(topologies: &[String], seeds: &[u64], hours: f64, rate: f64, verbose: bool) -> anyhow::Result<()> {
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
        let (labels, alerts, _) = simulate_and_detect(sim.clone(), PipelineConfig::default())?;
        ours.push(eval::evaluate(&labels, &alerts));
        pb.inc(1);
        let static_cfg = DetectArgs {
            config: None,
            window_secs: None,
            lateness_secs: None,
            detectors: Some(vec![DetectorKind::StaticRule]),
            model_seed: None,
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
    println!(
        "runs: {} ({} topologies x {} seeds, {hours} h each at {rate} entry calls/s)",
        runs.len(),
        topologies.join(","),
        seeds.len()
    );
    println!("| measure | apiwatch | static rule (p95 > 3x warm-up, 5xx > 5%) |");
    println!("|---|---|---|");
    println!(
        "| incidents detected with the right origin | {}/{} ({:.0}%) | {}/{} ({:.0}%) |",
        o.detected_right_origin,
        o.incidents,
        100.0 * o.right_origin_share(),
        s.detected_right_origin,
        s.incidents,
        100.0 * s.right_origin_share()
    );
    println!(
        "| incidents detected at all | {}/{} | {}/{} |",
        o.detected, o.incidents, s.detected, s.incidents
    );
    println!(
        "| false alerts per day | {:.2} | {:.2} |",
        o.false_alerts_per_day, s.false_alerts_per_day
    );
    println!(
        "| alerts per detected incident | {:.2} | {:.2} |",
        o.alerts_per_incident, s.alerts_per_incident
    );
    println!(
        "| median detection delay | {} | {} |",
        o.median_delay_s.map_or("n/a".into(), |d| format!("{d:.0} s")),
        s.median_delay_s.map_or("n/a".into(), |d| format!("{d:.0} s"))
    );
    println!("| lead time before breach (gradual) | {} | {} |", lead(&o), lead(&s));
    println!("\nby incident kind (apiwatch: total / detected / right origin; static rule likewise):");
    for (k, v) in &o.by_kind {
        let w = s.by_kind.get(k).copied().unwrap_or_default();
        println!("  {k:<20} {}/{}/{}   {}/{}/{}", v.0, v.1, v.2, w.0, w.1, w.2);
    }
    if verbose {
        for x in o.results.iter().filter(|x| !x.right_origin) {
            println!("  missed or moved: {} {:?} {} -> {:?}", x.id, x.kind, x.origin, x.alerted_origin);
        }
        for t in &o.false_alert_titles {
            println!("  false alert: {t}");
        }
    }
    Ok(())
}

fn bench_detect(input: Option<PathBuf>, events: u64) -> anyhow::Result<()> {
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
    let (stats, _, _) = detect_files(std::slice::from_ref(&path), &out, PipelineConfig::default())?;
    let secs = started.elapsed().as_secs_f64();
    let _ = std::fs::remove_dir_all(&out);
    let rate = stats.events as f64 / secs;
    let peer_rate = n_peer as f64 / peer_s;
    println!(
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
    println!(
        "Elasticsearch {} at {}: {} variant",
        if caps.version.is_empty() { "?" } else { &caps.version },
        client.url(),
        caps.variant()
    );
    for s in &steps {
        println!("  {:<9} {}", s.outcome, s.what);
    }
    let changed = steps.iter().filter(|s| s.outcome != "unchanged" && s.outcome != "exists").count();
    println!(
        "{changed} of {} changed (template version {}). Logs go to data streams matching logs-apiwatch.calls-*.",
        steps.len(),
        crate::es::templates::TEMPLATE_VERSION
    );
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
        println!("{}", serde_json::to_string_pretty(s)?);
        return Ok(());
    }
    if s.already_complete {
        println!(
            "job {}: already complete up to {}; nothing to do (use --restart to score it again)",
            s.job,
            s.until.as_deref().unwrap_or("?")
        );
        return Ok(());
    }
    println!(
        "job {}: {} → {}{}",
        s.job,
        s.from.as_deref().unwrap_or("?"),
        s.until.as_deref().unwrap_or("?"),
        if s.resumed { " (resumed from its checkpoint)" } else { "" }
    );
    println!(
        "  {} events in {:.1} s ({:.0}/s), {} anomalies, {} alerts raised, {} checkpoints",
        s.events, s.seconds, s.events_per_sec, s.anomalies, s.alerts_raised, s.checkpoints
    );
    let by: Vec<String> = s.writes.by_index.iter().map(|(k, v)| format!("{k} {v}")).collect();
    println!("  written: {} documents ({})", s.writes.written, by.join(", "));
    if s.writes.parked > 0 {
        println!(
            "  PARKED {} documents Elasticsearch refused (see the dead-letter index):",
            s.writes.parked
        );
        for p in &s.writes.parked_samples {
            println!("    {p}");
        }
    }
    if s.skipped_documents > 0 {
        println!("  skipped {} log documents that are not valid events:", s.skipped_documents);
        for p in &s.skipped_samples {
            println!("    {p}");
        }
    }
    if s.late_scored > 0 {
        println!("  {} events arrived after their time range was read; scored as late", s.late_scored);
    }
    if s.late_unscored > 0 {
        println!(
            "  {} events arrived later than the allowed lateness (counted, not scored): raise elasticsearch.ingest_delay_secs",
            s.late_unscored
        );
    }
    if s.notifications_sent > 0 {
        println!("  {} alert mails sent", s.notifications_sent);
    }
    Ok(())
}

fn es_run(es: &EsArgs, args: &DetectArgs, once: bool, since: Option<&str>, no_email: bool, json: bool) -> anyhow::Result<()> {
    let app = args.app()?;
    let (client, mut settings) = es.connect(&app)?;
    if let Some(s) = since {
        settings.since = Some(parse_rfc3339(s).with_context(|| format!("--since `{s}` is not an RFC 3339 time"))?);
    }
    let mut email = match (&app.email, no_email) {
        (Some(e), false) => Some(crate::notify::email::EmailNotifier::new(e.clone())?),
        _ => None,
    };
    let stop = stop_flag()?;
    let opts = RunOptions {
        once,
        stop,
        notifier: email.as_mut().map(|e| e as &mut dyn crate::notify::Notifier),
        now: None,
        progress: None,
    };
    let summary = crate::es::worker::run(&client, &settings, app.pipeline, opts)?;
    print_run_summary(&summary, json)
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
    println!(
        "{} events into {index} in {:.1} s ({:.0}/s): {} created, {} already there, {} refused",
        stats.events,
        stats.seconds,
        stats.events as f64 / stats.seconds.max(1e-9),
        stats.created,
        stats.already_there,
        stats.refused
    );
    for s in &stats.refused_samples {
        println!("  refused: {s}");
    }
    anyhow::ensure!(stats.refused == 0, "{} events were refused (see above)", stats.refused);
    Ok(())
}
