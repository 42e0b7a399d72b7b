//! Operator commands: install, run and check the Elasticsearch worker, detect on files, and
//! read what a run wrote.

use std::path::{Path, PathBuf};

use anyhow::Context;

use super::args::{connect, range_flags, time_flag, DetectArgs, EsArgs, InputFormatArgs};
use super::{bar, count, rate_message, read_json, spinner};
use crate::job::elasticsearch::{RunOptions, RunSummary};
use crate::job::files::{FilesRun, REJECTED_FILE};
use crate::model::service::ServiceRecord;
use crate::model::time::{format_hhmm, format_rfc3339, Millis};

#[derive(clap::Subcommand)]
pub enum OperateCommand {
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
        /// Where a first run starts (RFC 3339) [default: the live edge when the log indices
        /// hold events within the warm start, else their oldest event].
        #[arg(long)]
        since: Option<String>,
        /// Hours of the log indices before a first run's start to learn from, writing nothing
        /// (or `elasticsearch.warm_start_hours`; 0 turns it off) [default: 24].
        #[arg(long, value_name = "HOURS")]
        warm_start_hours: Option<u64>,
        /// Do not send email even if [email] is configured.
        #[arg(long)]
        no_email: bool,
        /// Print the run summary as JSON on stdout.
        #[arg(long)]
        json: bool,
        /// Serve GET /health and /metrics (Prometheus) on this address, e.g. 127.0.0.1:9464
        /// (or `[http] listen`); port 0 picks a free one, logged at start.
        #[arg(long, value_name = "ADDR")]
        listen: Option<String>,
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
    /// Detect anomalies and alerts in API-call logs (files or `-` for stdin): ECS JSON events,
    /// nginx, Apache, Envoy, AWS ALB and API Gateway, Google Cloud and Azure gateway logs
    /// (recognised from their first lines), or any JSON with `--field`.
    Detect {
        /// A log file to read, plain or gzip (repeat for more; `-` reads standard input).
        #[arg(long = "input", short, required = true)]
        inputs: Vec<PathBuf>,
        /// The directory to write anomalies, alerts, journeys, metrics and services into
        /// (created once the input opens).
        #[arg(long, short)]
        output: PathBuf,
        #[command(flatten)]
        input: InputFormatArgs,
        #[command(flatten)]
        args: DetectArgs,
        /// Acknowledgements, silences and verdicts (NDJSON feedback records, as in the
        /// feedback index), each applied from its @timestamp on the events' clock (repeat).
        #[arg(long)]
        feedback: Vec<PathBuf>,
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
    /// Every job in the state index (the live worker, each backfill): who holds its lease and
    /// until when, its checkpoint, lag behind the clock or progress, and the workers seen.
    Status {
        #[command(flatten)]
        es: EsArgs,
        /// Configuration file (TOML) for the Elasticsearch settings.
        #[arg(long)]
        config: Option<PathBuf>,
        #[arg(long)]
        json: bool,
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
    /// List onboarded services from a `detect` output directory.
    Services {
        #[arg(long, default_value = "out/demo")]
        from: PathBuf,
    },
}

/// Runs one operator command.
pub fn run(cmd: OperateCommand) -> anyhow::Result<()> {
    match cmd {
        OperateCommand::Detect {
            inputs,
            output,
            input,
            args,
            feedback,
        } => {
            let cfg = args.config_with(&input)?;
            let mut records = Vec::new();
            for f in &feedback {
                records.extend(crate::feedback::read_ndjson(f)?);
            }
            let pb = spinner("detecting");
            let run = crate::job::files::detect_files(&inputs, &output, cfg, records, rate_message(&pb, "detecting"))?;
            pb.finish_and_clear();
            print_detect_summary(&run, &output)
        }
        OperateCommand::Health { es, config, job } => es_health(&es, config.as_deref(), job.as_deref()),
        OperateCommand::Status { es, config, json } => es_status(&es, config.as_deref(), json),
        OperateCommand::Report { input, output, title } => {
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
        OperateCommand::Setup {
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
        OperateCommand::Run {
            es,
            args,
            once,
            since,
            warm_start_hours,
            no_email,
            json,
            listen,
        } => es_run(
            &es,
            &args,
            RunFlags {
                once,
                since,
                warm_start_hours,
                no_email,
                json,
                listen,
            },
        ),
        OperateCommand::Backfill {
            es,
            args,
            from,
            to,
            restart,
            json,
        } => es_backfill(&es, &args, &from, &to, restart, json),
        OperateCommand::Services { from } => services(&from),
    }
}

fn services(from: &Path) -> anyhow::Result<()> {
    let path = from.join("services.json");
    let recs: Vec<ServiceRecord> = read_json(&path).with_context(|| format!("run `apiwatch detect --output {}` first", from.display()))?;
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

/// What a file-mode run read, skipped, held back and found, and where it wrote it.
pub fn print_detect_summary(run: &FilesRun, output: &Path) -> anyhow::Result<()> {
    let (stats, alerts) = (&run.stats, &run.sink.alerts());
    print_ingest(&run.ingest, output)?;
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
    if stats.evicted_entities > 0 {
        outln!(
            "  {} (services, routes, hops) forgotten after limits.evict_idle_after_secs without a call",
            count(stats.evicted_entities, "entity", "entities")
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
        if rule == crate::feedback::HELD_BY_VERDICT {
            outln!(
                "  {} held back by what false-positive verdicts taught (`{rule}`; marked anomaly.held_by)",
                count(*n, "anomaly", "anomalies")
            );
            continue;
        }
        if rule == crate::alert::recurrence::RECURRING {
            outln!(
                "  {} held back as one more short episode its entity keeps having by itself (`{rule}`; marked \
                 anomaly.held_by, with the episodes in the reason)",
                count(*n, "anomaly", "anomalies")
            );
            continue;
        }
        outln!(
            "  {} strong enough to raise an alert held back by `{rule}` (marked anomaly.held_by in anomalies.ndjson)",
            count(*n, "anomaly", "anomalies")
        );
    }
    let fb = &stats.feedback;
    if fb.applied + fb.refused > 0 {
        outln!(
            "  feedback: {} in effect ({} refused); {} marked silenced (not sent), {} marked acknowledged",
            count(fb.applied, "record", "records"),
            fb.refused,
            count(fb.alerts_silenced, "alert change", "alert changes"),
            fb.alerts_acknowledged
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

fn es_setup(es: &EsArgs, config: Option<&Path>) -> anyhow::Result<()> {
    let (client, settings) = connect(&es.app(config, None)?)?;
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

/// `apiwatch run`'s own flags.
struct RunFlags {
    once: bool,
    since: Option<String>,
    warm_start_hours: Option<u64>,
    no_email: bool,
    json: bool,
    listen: Option<String>,
}

fn es_run(es: &EsArgs, args: &DetectArgs, flags: RunFlags) -> anyhow::Result<()> {
    let (app, setup) = args.app_for_run(es, flags.listen, flags.warm_start_hours)?;
    let (client, mut settings) = connect(&app)?;
    settings.since = flags.since.as_deref().map(|s| time_flag("--since", s)).transpose()?;
    let mut notifier = match flags.no_email {
        true => None,
        false => crate::notify::channels(&app.channels)?,
    };
    let stop = stop_flag()?;
    let status = app.listen.map(|_| {
        // Stale when nothing progressed for three polls and a minute (a long catch-up slice).
        let stale = settings.poll_interval * 3 + std::time::Duration::from_secs(60);
        crate::serve::WorkerStatus::new(&settings.job, &settings.worker_id, stale)
    });
    let _server = match (app.listen, &status) {
        (Some(addr), Some(status)) => {
            let api = crate::serve::api::ApiContext::new(
                client.clone(),
                settings.names.clone(),
                std::env::var("APIWATCH_API_TOKEN").ok(),
                settings.action_links.clone(),
                settings.pagerduty_webhook.clone(),
            );
            Some(crate::serve::Server::start(addr, status.clone(), Some(api), stop.clone())?)
        }
        _ => None,
    };
    let opts = RunOptions {
        once: flags.once,
        stop,
        notifier: notifier.as_mut().map(|n| n.as_mut() as &mut dyn crate::notify::Notifier),
        now: None,
        progress: None,
        status,
    };
    let summary = match settings.partitions {
        1 => crate::job::elasticsearch::run(&client, &settings, setup, opts)?,
        _ => crate::job::partitioned::run(&client, &settings, setup, opts)?,
    };
    print_run_summary(&summary, flags.json)
}

fn es_health(es: &EsArgs, config: Option<&Path>, job: Option<&str>) -> anyhow::Result<()> {
    let (client, settings) = connect(&es.app(config, job)?)?;
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

fn es_status(es: &EsArgs, config: Option<&Path>, json: bool) -> anyhow::Result<()> {
    let (client, settings) = connect(&es.app(config, None)?)?;
    let now = chrono::Utc::now().timestamp_millis();
    let mut report = crate::es::status::read(&client, &settings.names.state, now)?;
    match crate::es::feedback::read_since(&client, &settings.names, None) {
        Ok(read) => report.feedback = Some(crate::feedback::FeedbackBook::summary_of(read.records, now)),
        Err(e) => tracing::warn!(error = %e, index = %settings.names.feedback, "could not read the feedback in effect"),
    }
    if json {
        outln!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    outln!(
        "{} at {}: {}",
        report.state_index,
        report.now,
        count(report.jobs.len() as u64, "job", "jobs")
    );
    for j in &report.jobs {
        outln!("job `{}`", j.job);
        if let Some(p) = &j.partition_of {
            outln!("  partition {} of {} (numbered from 0) of job `{}`", p.index, p.count, p.job);
        }
        match &j.lease {
            Some(l) if l.held => outln!("  lease: {} holds it until {} (in {} s)", l.worker, l.until, l.expires_in_s),
            Some(l) => outln!("  lease: none held (worker {}'s ran out {} s ago)", l.worker, -l.expires_in_s),
            None => outln!("  lease: none (released at a clean stop, or never taken)"),
        }
        match &j.checkpoint {
            Some(c) => {
                let how_far = match (j.progress, j.lag_s) {
                    (Some(p), _) => format!("{:.0}% of the range", p * 100.0),
                    (_, Some(lag)) => format!("{lag} s behind the clock"),
                    _ => String::new(),
                };
                outln!(
                    "  checkpoint: scored up to {} ({how_far}); saved {} s ago by {}, generation {}, state {} bytes",
                    c.data_until,
                    c.saved_s_ago,
                    c.worker,
                    c.generation,
                    c.state_bytes
                );
                outln!(
                    "  totals: {} events, {} anomalies, {} alerts raised, {} documents skipped, {} late events unscored",
                    c.events,
                    c.anomalies,
                    c.alerts_raised,
                    c.skipped_documents,
                    c.late_unscored
                );
                outln!(
                    "  entities: {} followed, {} evicted after limits.evict_idle_after_secs idle",
                    c.entities,
                    c.evicted_entities
                );
            }
            None => outln!("  checkpoint: none yet"),
        }
    }
    for w in &report.workers {
        let holds = if w.holds.is_empty() {
            "holds nothing".to_owned()
        } else {
            format!("holds {}", w.holds.join(", "))
        };
        outln!("worker {}: last seen {} s ago, {holds}", w.worker, w.last_seen_s_ago);
    }
    if let Some(f) = &report.feedback {
        print_feedback(f, &settings.names.feedback)?;
    }
    Ok(())
}

fn print_feedback(f: &crate::feedback::FeedbackSummary, index: &str) -> anyhow::Result<()> {
    outln!(
        "feedback ({index}): {}, {} acknowledged, {}",
        count(f.silences.len() as u64, "silence", "silences"),
        f.acknowledged,
        count(f.verdicts as u64, "verdict", "verdicts")
    );
    for s in &f.silences {
        let why = s.reason.as_deref().map(|r| format!(": {r}")).unwrap_or_default();
        outln!("  silence {} {} until {} by {}{why}", s.id, s.matches, s.until, s.by);
    }
    for l in &f.learned {
        outln!(
            "  learned: {}/{} {} {} held up to score {:.1} within an hour of {} (from {} false finding(s), strongest {:.1}; verdicts {})",
            l.service,
            l.provider,
            l.kind.as_str(),
            l.detector,
            l.level,
            l.times_of_day
                .iter()
                .map(|t| format!("{:02}:{:02}", t / 3_600_000, t % 3_600_000 / 60_000))
                .collect::<Vec<_>>()
                .join(", "),
            l.false_findings,
            l.max_false_score,
            l.verdicts.join(", ")
        );
    }
    Ok(())
}

fn es_backfill(es: &EsArgs, args: &DetectArgs, from: &str, to: &str, restart: bool, json: bool) -> anyhow::Result<()> {
    let (app, setup) = args.app(es)?;
    let (client, settings) = connect(&app)?;
    let (from, to) = range_flags(from, to)?;
    let stop = stop_flag()?;
    let pb = bar(1000, "backfill");
    let report = |done: Millis, total: Millis| pb.set_position((done as f64 / total.max(1) as f64 * 1000.0) as u64);
    let summary = if settings.partitions > 1 {
        crate::job::partitioned::backfill(&client, &settings, setup, (from, to), restart, stop, report)?
    } else {
        crate::job::elasticsearch::backfill(&client, &settings, setup, (from, to), restart, stop, report)?
    };
    pb.finish_and_clear();
    print_run_summary(&summary, json)
}

/// What was read: formats, used and skipped lines with their first places, dropped fields,
/// events without a duration.
fn print_ingest(report: &crate::source::IngestReport, output: &Path) -> anyhow::Result<()> {
    for f in &report.formats {
        outln!("reading {f}");
    }
    for n in &report.notes {
        outln!("  note: {n}");
    }
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
    if report.not_calls > 0 {
        outln!(
            "  left out {} Elastic APM span(s) that call no other service (internal spans: not API calls)",
            report.not_calls
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
    let says = |field: &str| {
        report
            .samples
            .iter()
            .any(|s| s.contains(&format!("missing required field `{field}`")))
    };
    if says("service.name") || says("cloud.provider") {
        outln!("  lines that do not say their service or provider take them from --service and --provider (input.service, input.provider)");
    }
    if report.untimed > 0 {
        outln!(
            "  {} without a duration: traffic, errors, sequences and journeys judged, latency not ({})",
            count(report.untimed, "event", "events"),
            report.timing_hint.as_deref().unwrap_or("the source has no timing")
        );
    }
    for (field, d) in &report.dropped_fields {
        outln!(
            "  kept {} without `{field}` (a bad value; first at {})",
            count(d.count, "event", "events"),
            d.example
        );
    }
    Ok(())
}
