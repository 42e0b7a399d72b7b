//! Lab commands: simulated traffic, the demo, scoring against labels, the public benchmarks
//! and throughput measurements.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;

use super::args::{serde_value, DetectArgs, SimArgs};
use super::{bar, count, rate_message, read_json, spinner};
use crate::bench;
use crate::detect::iforest::ForestParams;
use crate::detect::DetectorKind;
use crate::es::{ClientOptions, EsClient};
use crate::eval::{self, EvalReport};
use crate::job::elasticsearch::WorkerSettings;
use crate::model::anomaly::Alert;
use crate::model::time::{format_hhmm, MINUTE_MS};
use crate::pipeline::PipelineSetup;
use crate::simulate::incidents::Labels;
use crate::simulate::{self, SimConfig};
use crate::source::LogFormat;

#[derive(clap::Subcommand)]
pub enum LabCommand {
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
        /// Write ECS events (`json`), or the lines of any format detect reads (files only):
        /// nginx, apache, envoy, aws-alb, aws-apigw, gcp-lb, azure-appgw, azure-apim.
        #[arg(long, value_parser = serde_value::<LogFormat>, default_value = "json")]
        format: LogFormat,
        /// Stop after this many events (the size is announced before writing).
        #[arg(long)]
        max_events: Option<u64>,
        #[command(flatten)]
        sim: SimArgs,
    },
    /// Simulate a few hours, detect, and show alerts beside the incidents injected.
    Demo {
        #[arg(long, default_value = "out/demo")]
        dir: PathBuf,
        /// Keep the simulated events (events.ndjson, about 300 MB for the default 6 hours).
        #[arg(long)]
        keep_events: bool,
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
        /// Say why each incident was missed or got the wrong origin and what raised each false
        /// alert, from the anomalies the same run wrote.
        #[arg(long)]
        explain: bool,
        /// The run's anomalies (with --explain; default: anomalies.ndjson beside the alerts).
        #[arg(long, requires = "explain")]
        anomalies: Option<PathBuf>,
        /// The score at which one anomaly raises an alert, as the run was configured.
        #[arg(long, default_value_t = crate::alert::AlertConfig::default().raise_single)]
        raise_single: f64,
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
        /// Scenario family: `classic` or `ops` (see `simulate --help`).
        #[arg(long, value_enum, default_value_t = crate::simulate::incidents::Family::Classic)]
        family: crate::simulate::incidents::Family,
        /// Services' own time follows the load (see `simulate --help`).
        #[arg(long, default_value_t = 0.0, value_name = "X")]
        latency_follows_load: f64,
        /// Also list every incident and false alert.
        #[arg(long)]
        verbose: bool,
        /// Say why each incident was missed or got the wrong origin and what raised each false
        /// alert (apiwatch's), counted by cause.
        #[arg(long)]
        explain: bool,
        /// Score each run as this many partitions of one job (by service, with one correlator),
        /// as several workers would: what partitioning changes in detection.
        #[arg(long, default_value_t = 1)]
        partitions: u32,
        #[command(flatten)]
        args: DetectArgs,
    },
    /// Does feedback teach? Detect a multi-day run with daily routines that look like problems
    /// (a nightly batch, a scheduled probe), mark the first day's false alerts `false_positive`
    /// as an analyst would (from the labels), detect again: false alerts after day 1 before and
    /// after, and any incident no longer found.
    EvalFeedback {
        #[arg(long, value_delimiter = ',', default_value = "bank,retail")]
        topologies: Vec<String>,
        #[arg(long, value_delimiter = ',', default_value = "611")]
        seeds: Vec<u64>,
        #[arg(long, default_value_t = 48.0)]
        hours: f64,
        #[arg(long, default_value_t = 20.0)]
        rate: f64,
        /// Minutes after a false alert ends that the analyst marks it.
        #[arg(long, default_value_t = 30)]
        reaction_min: u64,
        /// Days whose false alerts the analyst marks (as they come); the days after are scored.
        #[arg(long, default_value_t = 1)]
        marked_days: u32,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        args: DetectArgs,
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
        /// Parsing throughput of every log format beside the JSON reader's, on `--events`
        /// simulated calls (median of `--repeats` alternating runs), instead of detection.
        #[arg(long)]
        formats: bool,
        #[arg(long, default_value_t = 5)]
        repeats: usize,
        /// Memory per entity instead: one pipeline loaded with about this many entities
        /// (services of 100 routes), then idle eviction.
        #[arg(long)]
        entities: Option<usize>,
        /// Windows of traffic loaded with --entities (past every series' warm-up).
        #[arg(long, default_value_t = 50)]
        windows: u64,
        #[command(flatten)]
        args: DetectArgs,
    },
    /// The Numenta Anomaly Benchmark: the series rule on all its series, scored by the
    /// project's NAB-compatible scorer for each profile.
    EvalNab {
        /// NAB's directory (data/, labels/combined_windows.json, profiles.json).
        #[arg(long, default_value = "../shared/benchmarks/nab")]
        data: PathBuf,
        /// Series detectors to score (all by default).
        #[arg(long, value_parser = serde_value::<crate::eval::nab::SeriesDetector>, value_delimiter = ',')]
        detector: Vec<crate::eval::nab::SeriesDetector>,
    },
    /// Mutated log lines through the reader and a pipeline: panics, hangs and line
    /// accounting, as JSON (the bounded run is a test; this is the long run).
    Fuzz {
        /// json, nginx or apache.
        #[arg(long, value_parser = serde_value::<LogFormat>, default_value = "json")]
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

/// Runs one lab command.
pub fn run(cmd: LabCommand) -> anyhow::Result<()> {
    match cmd {
        LabCommand::Simulate {
            output: None,
            es: Some(url),
            index,
            ca_cert,
            labels,
            sim,
            format,
            ..
        } => {
            anyhow::ensure!(
                format == LogFormat::Json,
                "--es loads ECS events; --format writes another format's lines to a file"
            );
            es_simulate(&url, &index, ca_cert, labels.as_deref(), &sim)
        }
        LabCommand::Simulate {
            output,
            labels,
            format,
            max_events,
            sim,
            ..
        } => {
            let output = output.context("--output or --es is required")?;
            simulate_command(&sim, &output, labels.as_deref(), format, max_events)
        }
        LabCommand::Demo {
            dir,
            keep_events,
            sim,
            args,
        } => demo(&dir, &sim, args.config()?, keep_events),
        LabCommand::Eval {
            labels,
            alerts,
            json,
            explain,
            anomalies,
            raise_single,
        } => eval_alerts(&labels, &alerts, json, explain.then_some((anomalies, raise_single))),
        LabCommand::EvalSuite {
            topologies,
            seeds,
            hours,
            rate,
            family,
            latency_follows_load,
            verbose,
            explain,
            partitions,
            args,
        } => eval_suite(
            &topologies,
            &seeds,
            (hours, rate, family, latency_follows_load),
            (verbose, explain),
            (args.config()?, partitions),
        ),
        LabCommand::EvalFeedback {
            topologies,
            seeds,
            hours,
            rate,
            reaction_min,
            marked_days,
            json,
            args,
        } => {
            let runs: Vec<SimConfig> = topologies
                .iter()
                .flat_map(|t| {
                    seeds.iter().map(move |&s| {
                        let mut args = SimArgs::with(t, s, hours, rate);
                        args.routines = true;
                        args.config()
                    })
                })
                .collect::<anyhow::Result<_>>()?;
            eval_feedback(&runs, &args.config()?, (reaction_min as i64 * MINUTE_MS, marked_days), json)
        }
        bench @ LabCommand::Bench { .. } => run_bench(bench),
        LabCommand::EvalNab { data, detector } => eval_nab(&data, detector),
        LabCommand::Fuzz { format, lines, seed } => {
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
        LabCommand::Forest {
            csv,
            fit_csv,
            score_csv,
            trees,
            samples,
            seed,
            repeats,
        } => {
            let params = ForestParams {
                n_trees: trees,
                max_samples: samples,
                seed,
            };
            forest(csv.as_deref(), fit_csv.as_deref().zip(score_csv.as_deref()), params, repeats)
        }
    }
}

/// `apiwatch bench`: detection against parse-only, Elasticsearch mode, log formats, or
/// memory per entity.
fn run_bench(cmd: LabCommand) -> anyhow::Result<()> {
    match cmd {
        LabCommand::Bench {
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
        LabCommand::Bench {
            formats: true,
            events,
            repeats,
            ..
        } => {
            let pb = spinner("formats");
            let report = bench::formats(events, repeats, |f| pb.set_message(format!("parsing {f}")))?;
            pb.finish_and_clear();
            for r in report {
                outln!("{}", serde_json::to_string(&r)?);
            }
            Ok(())
        }
        LabCommand::Bench {
            entities: Some(entities),
            windows,
            args,
            ..
        } => {
            let pb = spinner("entities");
            let report = bench::entity_memory(entities, windows, args.config()?, |m| pb.set_message(m.to_owned()))?;
            pb.finish_and_clear();
            outln!("{}", serde_json::to_string_pretty(&report)?);
            Ok(())
        }
        LabCommand::Bench { input, events, args, .. } => {
            let path = match input {
                Some(p) => p,
                None => cached_bench_events(events)?,
            };
            let report = bench::detect_vs_parse_only(&path, args.config()?)?;
            outln!("{}", serde_json::to_string(&report)?);
            Ok(())
        }
        _ => anyhow::bail!("run_bench is called with `bench` only"),
    }
}

/// The isolation forest on a labelled CSV (AUC, timings), or fitted on one CSV and scoring
/// another's rows.
fn forest(csv: Option<&Path>, fit_and_score: Option<(&Path, &Path)>, params: ForestParams, repeats: usize) -> anyhow::Result<()> {
    if let Some((fit, score)) = fit_and_score {
        let forest = crate::detect::iforest::IsolationForest::fit(bench::read_csv(fit)?.view(), params);
        let scores = forest.score_rows(bench::read_csv(score)?.view());
        outln!("{}", serde_json::json!({ "scores": scores }));
        return Ok(());
    }
    let csv = csv.context("--csv is required")?;
    let (data, labels) = bench::read_labelled_csv(csv)?;
    outln!("{}", serde_json::to_string(&bench::forest_bench(&data, &labels, params, repeats))?);
    Ok(())
}

fn eval_nab(data: &Path, mut detector: Vec<crate::eval::nab::SeriesDetector>) -> anyhow::Result<()> {
    if detector.is_empty() {
        detector = crate::eval::nab::SeriesDetector::ALL.to_vec();
    }
    let series = crate::eval::nab::load(data)?;
    let profiles: std::collections::BTreeMap<String, serde_json::Value> = read_json(&data.join("profiles.json"))?;
    let mut out = Vec::new();
    for &d in &detector {
        let scores: Vec<Vec<f64>> = series.iter().map(|s| d.scores(&s.values)).collect();
        for (name, p) in &profiles {
            let cost: crate::eval::nab::CostMatrix =
                serde_json::from_value(p["CostMatrix"].clone()).with_context(|| format!("profiles.json: `{name}` has no CostMatrix"))?;
            out.push(crate::eval::nab::run(&series, &scores, d, name, cost));
        }
    }
    outln!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}

/// `simulate --output`: the size announced, then the traffic written.
fn simulate_command(sim: &SimArgs, output: &Path, labels: Option<&Path>, format: LogFormat, max_events: Option<u64>) -> anyhow::Result<()> {
    let base = sim.config()?;
    let cfg = SimConfig {
        max_events: max_events.or(base.max_events),
        ..base
    };
    announce_size(&cfg, format, output);
    let written = simulate_file(&cfg, output, labels, format)?;
    eprintln!(
        "simulated {} events ({} topology, seed {}, {} incidents) into {}",
        written.events,
        written.topology,
        written.seed,
        written.incidents.len(),
        output.display()
    );
    Ok(())
}

/// Says how much a simulation will write before it does (a day at the default rate is
/// gigabytes): about 1.3 events per entry call, at the format's bytes per event.
fn announce_size(cfg: &SimConfig, format: LogFormat, output: &Path) {
    let calls = cfg.rate * cfg.duration as f64 / 1000.0 * 1.3;
    let events = cfg.max_events.map_or(calls, |m| calls.min(m as f64));
    let per_event = match format {
        LogFormat::Nginx | LogFormat::Apache | LogFormat::Envoy => 330.0,
        LogFormat::GcpLb | LogFormat::AzureAppgw => 950.0,
        LogFormat::AzureApim | LogFormat::AwsAlb => 700.0,
        LogFormat::ElasticAwsElb => 1000.0,
        _ => 560.0,
    };
    let mb = events * per_event / 1e6;
    if output.as_os_str() != "-" {
        eprintln!(
            "writing about {} events ({:.0} MB) to {}{}",
            events.round() as u64,
            mb,
            output.display(),
            if mb > 500.0 && cfg.max_events.is_none() {
                "; --max-events caps it"
            } else {
                ""
            }
        );
    }
}

/// Simulates into a file with a progress bar.
pub(super) fn simulate_file(cfg: &SimConfig, output: &Path, labels: Option<&Path>, format: LogFormat) -> anyhow::Result<Labels> {
    let pb = bar(cfg.duration as u64 / 1000, "simulating");
    let start = cfg.start;
    let l = simulate::to_file(cfg.clone(), output, labels, format, |t| {
        pb.set_position(((t - start) / 1000) as u64)
    })?;
    pb.finish_and_clear();
    Ok(l)
}

/// The simulated events `bench` measures when given none, written once into `.cache/bench`.
fn cached_bench_events(events: u64) -> anyhow::Result<PathBuf> {
    let dir = PathBuf::from(".cache/bench");
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let p = dir.join(format!("events-{events}.ndjson"));
    if !p.exists() {
        // A busy platform: 200 entry calls/s (about 450 events/s), for as long as it takes to
        // write `events` events.
        let rate = 200.0;
        let hours = (events as f64 / (rate * 0.9) / 3600.0).max(0.5);
        let mut cfg = SimArgs::with("bank", 5, hours, rate).config()?;
        cfg.max_events = Some(events);
        let tmp = p.with_extension("tmp");
        simulate_file(&cfg, &tmp, None, LogFormat::Json)?;
        std::fs::rename(&tmp, &p).with_context(|| format!("cannot rename {} to {}", tmp.display(), p.display()))?;
    }
    Ok(p)
}

fn demo(dir: &Path, sim: &SimArgs, detect_cfg: PipelineSetup, keep_events: bool) -> anyhow::Result<()> {
    let cfg = sim.config()?;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let events = dir.join("events.ndjson");
    let labels_path = dir.join("labels.json");
    let started = Instant::now();
    let labels = simulate_file(&cfg, &events, Some(&labels_path), LogFormat::Json)?;
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
    let pb = spinner("detecting");
    let run = crate::job::files::detect_files(
        std::slice::from_ref(&events),
        &out,
        detect_cfg,
        Vec::new(),
        rate_message(&pb, "detecting"),
    )?;
    pb.finish_and_clear();
    if !keep_events {
        // Hundreds of MB nobody asked to keep; the same seed writes them again.
        let size = std::fs::metadata(&events).map_or(0, |m| m.len());
        std::fs::remove_file(&events).with_context(|| format!("cannot remove {}", events.display()))?;
        outln!(
            "removed the simulated events ({} MB): `apiwatch demo --keep-events` keeps them, `apiwatch simulate --topology {} --seed {} --hours {} --rate {} -o events.ndjson` writes them again",
            size >> 20,
            sim.topology,
            cfg.seed,
            sim.hours,
            sim.rate
        );
    }
    let (stats, report, alerts) = (&run.stats, &run.ingest, run.sink.alerts());
    let secs = started.elapsed().as_secs_f64();
    outln!(
        "detected in {:.1} s ({:.0} events/s): {} anomalies, {} alerts, {} services onboarded, {} skipped lines",
        secs,
        stats.events as f64 / secs,
        stats.anomalies,
        alerts.len(),
        stats.services,
        report.skipped()
    );
    let r = eval::evaluate(&labels, &alerts);
    outln!();
    outln!(
        "{:<7} {:<21} {:<24} {:>6}  {:<5} alert naming the origin",
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
        // The alert that names the incident's origin (else the first in its span), and how many
        // other alerts the incident raised beside it.
        let during: Vec<&Alert> = alerts
            .iter()
            .filter(|a| result.is_some() && a.timestamp >= inc.start - 2 * MINUTE_MS && a.timestamp <= inc.end + 5 * MINUTE_MS)
            .collect();
        let naming = during
            .iter()
            .filter(|a| a.service == inc.service && a.provider == inc.provider)
            .min_by_key(|a| a.timestamp)
            .or_else(|| during.iter().min_by_key(|a| a.timestamp));
        let shown = match naming {
            Some(a) => {
                let side = during.len() - 1;
                let side = if side > 0 {
                    format!("; {} beside it", count(side as u64, "side alert", "side alerts"))
                } else {
                    String::new()
                };
                format!("{} {}{side}", format_hhmm(a.timestamp), a.title)
            }
            None if !inc.expect_alert => "none, as it should: a new service is onboarded, not alerted".to_owned(),
            None => String::new(),
        };
        outln!(
            "{:<7} {:<21} {:<24} {:>6}  {:<5} {}",
            inc.id,
            format!("{:?}", inc.kind),
            format!("{}/{}", inc.service, inc.provider),
            format_hhmm(inc.start).trim_end_matches(" UTC"),
            if inc.expect_alert { found } else { "n/a".to_owned() },
            shown
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

/// `analyst`: how long after a false alert it is marked, and for how many days.
fn eval_feedback(runs: &[SimConfig], setup: &PipelineSetup, analyst: (crate::model::time::Millis, u32), json: bool) -> anyhow::Result<()> {
    let pb = bar(runs.len() as u64, "detecting twice");
    let mut results = Vec::new();
    for sim in runs {
        results.push(eval::feedback::run(sim, setup, analyst.0, analyst.1)?);
        pb.inc(1);
    }
    pb.finish_and_clear();
    if json {
        outln!("{}", serde_json::to_string_pretty(&results)?);
        return Ok(());
    }
    let days = match analyst.1.max(1) {
        1 => "day 1".to_owned(),
        n => format!("days 1-{n}"),
    };
    outln!("| run | false alerts of {days} (marked) | false alerts after {days}: before → after | detected (right origin): before → after | incidents lost | anomalies held |");
    outln!("|---|---|---|---|---|---|");
    for r in &results {
        outln!(
            "| {} {} | {} | {} → {} | {} ({}) → {} ({}) of {} | {} | {} |",
            r.topology,
            r.seed,
            r.marked_false,
            r.later_false_before,
            r.later_false_after,
            r.detected_before,
            r.right_origin_before,
            r.detected_after,
            r.right_origin_after,
            r.incidents,
            if r.lost.is_empty() { "none".to_owned() } else { r.lost.join(", ") },
            r.anomalies_held
        );
    }
    for r in &results {
        for s in &r.suppressions {
            outln!("  {} {}: learned {s}", r.topology, r.seed);
        }
        for t in &r.later_false_titles {
            outln!("  {} {}: false alert left: {t}", r.topology, r.seed);
        }
        for t in &r.routines {
            outln!("  {} {}: {t}", r.topology, r.seed);
        }
    }
    Ok(())
}

/// `eval`: the score of a run's alerts against its labels; with `explain` (the anomalies file,
/// default beside the alerts, and the raising score), why each went wrong.
fn eval_alerts(labels: &Path, alerts: &Path, json: bool, explain: Option<(Option<PathBuf>, f64)>) -> anyhow::Result<()> {
    let l: Labels = read_json(labels)?;
    let a: Vec<Alert> = crate::report::read_ndjson(alerts)?;
    let r = eval::evaluate(&l, &a);
    let explanations = match &explain {
        Some((anomalies, raise_single)) => {
            let path = anomalies.clone().unwrap_or_else(|| alerts.with_file_name("anomalies.ndjson"));
            let found: Vec<crate::model::Anomaly> =
                crate::report::read_ndjson(&path).context("--explain reads the run's anomalies (--anomalies FILE)")?;
            eval::explain::explain(&r, &l, &a, &found, *raise_single)
        }
        None => Vec::new(),
    };
    if json {
        let mut doc = serde_json::to_value(&r)?;
        if explain.is_some() {
            doc["explanations"] = serde_json::to_value(&explanations)?;
        }
        outln!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        print_eval(&r, true)?;
        if explain.is_some() {
            print_explanations(&explanations)?;
        }
    }
    Ok(())
}

/// Explanations, counted by cause, then each on its line.
fn print_explanations(explanations: &[eval::explain::Explanation]) -> anyhow::Result<()> {
    outln!("\nwhy (by cause):");
    for (cause, n) in eval::explain::count_causes(explanations) {
        outln!("  {n:>4}  {cause}");
    }
    for e in explanations {
        let kind = e.kind.as_deref().map(|k| format!(" {k}")).unwrap_or_default();
        outln!("  {} {} {}{kind} [{}]: {}", e.run, e.verdict, e.subject, e.cause, e.why);
    }
    Ok(())
}

/// Leads before breach (minutes) as their median and least; `None` when there are none.
fn lead_text(leads: &[f64]) -> Option<String> {
    let least = leads.iter().copied().reduce(f64::min)?;
    Some(format!("{:.0} min (min {least:.0})", crate::detect::stats::median(leads)))
}

/// Gradual degradations' leads (minutes, median and least) by when they breached: the night's
/// trough, the day's rise and fall, and the afternoon peak (where a usual level that follows
/// the hour matters most).
fn leads_by_hour(r: &EvalReport) -> String {
    let part = |h: f64| match h {
        h if !(6.0..22.0).contains(&h) => 0,
        h if (12.0..18.0).contains(&h) => 2,
        _ => 1,
    };
    ["night 22-06", "day 06-12 and 18-22", "peak 12-18"]
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let leads: Vec<f64> = r
                .results
                .iter()
                .filter_map(|x| Some((x.breach_hour?, x.lead_min?)))
                .filter(|&(h, _)| part(h) == i)
                .map(|(_, lead)| lead)
                .collect();
            match lead_text(&leads) {
                Some(text) => format!("{name}: {text} of {}", leads.len()),
                None => format!("{name}: none"),
            }
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// `(verbose, explain)`: list incidents and false alerts; say why each went wrong.
fn eval_suite(
    topologies: &[String],
    seeds: &[u64],
    (hours, rate, family, latency_follows_load): (f64, f64, crate::simulate::incidents::Family, f64),
    (verbose, explain): (bool, bool),
    (cfg, partitions): (PipelineSetup, u32),
) -> anyhow::Result<()> {
    let runs: Vec<SimConfig> = topologies
        .iter()
        .flat_map(|t| {
            seeds.iter().map(move |&s| {
                let mut args = SimArgs::with(t, s, hours, rate);
                args.family = family;
                args.latency_follows_load = latency_follows_load;
                args.config()
            })
        })
        .collect::<anyhow::Result<_>>()?;
    let rule_cfg = DetectArgs {
        detectors: Some(vec![DetectorKind::StaticRule]),
        no_models: true,
        ..DetectArgs::default()
    }
    .config()?;
    let pb = bar(runs.len() as u64 * 2, "evaluating");
    let reports = eval::suite::run(&runs, (&cfg, partitions), &rule_cfg, |sim, ours, r| {
        pb.inc(1);
        if verbose && ours {
            eprintln!("{} seed {}: ours {:?}", sim.topology, sim.seed, r.summary_lines());
        }
    })?;
    pb.finish_and_clear();
    let (ours, rule) = (&reports.ours, &reports.rule);
    let (o, s) = (eval::combine(ours), eval::combine(rule));
    let lead = |r: &EvalReport| lead_text(&r.lead_times_min).unwrap_or_else(|| "none predicted".to_owned());
    outln!(
        "runs: {} ({} topologies x {} seeds, {hours} h each at {rate} entry calls/s, {family:?} family{})",
        runs.len(),
        topologies.join(","),
        seeds.len(),
        if latency_follows_load > 0.0 {
            format!(", services' own time x load^{latency_follows_load}")
        } else {
            String::new()
        }
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
    outln!("\napiwatch's lead before breach by the breach's hour (UTC): {}", leads_by_hour(&o));
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
    if explain {
        print_explanations(&reports.explanations)?;
    }
    Ok(())
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
        simulate::write_labels(&l, path)?;
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
