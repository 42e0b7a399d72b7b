//! The worker's own HTTP endpoints (`apiwatch run --listen ADDR`, `[http] listen`): `GET
//! /health` for load balancers and orchestrators, `GET /metrics` in the Prometheus text format
//! for the Prometheus or Elastic Agent that watches everything else.
//!
//! The polling loop publishes a [`WorkerStatus`] snapshot after every slice it scores; the
//! server only reads the latest snapshot (cloned under a short lock, never held across an
//! `.await`), so serving never slows scoring and scoring never waits for a scrape. The server
//! runs on its own small tokio runtime in its own thread, on axum. Given an Elasticsearch
//! client it also serves the write API of [`api`] (acknowledge, silence, verdicts), the
//! answering links' pages ([`link_pages`]) and the webhooks of [`hooks`] (PagerDuty).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use serde::Serialize;

use crate::model::time::{format_rfc3339, Millis};

pub mod api;
pub mod hooks;
pub mod link_pages;

/// What the worker last published about itself.
#[derive(Clone, Debug, Default, Serialize)]
pub struct WorkerSnapshot {
    pub job: String,
    pub worker_id: String,
    /// Whether this worker holds the job's lease (it scores only then).
    pub lease_held: bool,
    /// Wall time of the last scored slice or finished poll.
    pub last_progress: Option<Millis>,
    /// Data time up to which events are scored and their documents written.
    pub position: Option<Millis>,
    /// Wall time of the last checkpoint saved.
    pub checkpoint_saved: Option<Millis>,
    /// Why the last poll failed, while it is failing.
    pub failing: Option<String>,
    /// A poll is overdue when nothing progressed for this long.
    pub stale_after_ms: Millis,
    pub polls: u64,
    pub events_scored: u64,
    pub read_bytes: u64,
    pub documents_skipped: u64,
    pub events_refused: u64,
    pub late_scored: u64,
    pub late_unscored: u64,
    pub anomalies: u64,
    pub anomalies_by_detector: BTreeMap<String, u64>,
    pub alerts_raised: u64,
    pub alerts_by_priority: BTreeMap<String, u64>,
    pub alerts_held_by_rule: BTreeMap<String, u64>,
    /// What feedback did: alert changes silenced and acknowledged, records in effect and refused.
    pub feedback_alerts: BTreeMap<String, u64>,
    pub feedback_records_applied: u64,
    pub feedback_records_refused: u64,
    pub notifications_sent: u64,
    pub documents_written: BTreeMap<String, u64>,
    pub bulk_requests: u64,
    pub bulk_retried_items: u64,
    pub dead_letters: u64,
    pub entities: usize,
    pub entities_evicted: u64,
    /// The partitions this worker scores (a partitioned job), by index.
    pub partitions: BTreeMap<u32, PartitionProgress>,
}

/// Where one partition held by this worker stands.
#[derive(Clone, Debug, Default, Serialize)]
pub struct PartitionProgress {
    /// Data time up to which its events are scored and its documents written.
    pub scored_until: Millis,
    /// Data time of its last checkpoint (how far the correlator can go on its account).
    pub checkpoint_until: Millis,
    /// Its events scored by this worker since it took the partition.
    pub events_scored: u64,
}

/// The snapshot shared between the polling loop (writer) and the server (reader).
#[derive(Default)]
pub struct WorkerStatus {
    snapshot: Mutex<WorkerSnapshot>,
}

impl WorkerStatus {
    pub fn new(job: &str, worker_id: &str, stale_after: Duration) -> Arc<Self> {
        Arc::new(WorkerStatus {
            snapshot: Mutex::new(WorkerSnapshot {
                job: job.to_owned(),
                worker_id: worker_id.to_owned(),
                stale_after_ms: stale_after.as_millis() as Millis,
                ..WorkerSnapshot::default()
            }),
        })
    }

    /// Changes the snapshot in place.
    pub fn update(&self, f: impl FnOnce(&mut WorkerSnapshot)) {
        // A poisoned lock only means a panic elsewhere mid-update: the data is still counters.
        let mut s = self.snapshot.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut s);
    }

    pub fn snapshot(&self) -> WorkerSnapshot {
        self.snapshot.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }
}

/// Whether the worker is ready (holds its lease, progressed recently, its last poll did not
/// fail), and why not.
pub fn readiness(s: &WorkerSnapshot, now: Millis) -> Result<(), String> {
    if let Some(why) = &s.failing {
        return Err(format!("the last poll failed: {why}"));
    }
    if !s.lease_held {
        return Err(format!(
            "job `{}` is not held by this worker (standing by, or not started yet)",
            s.job
        ));
    }
    match s.last_progress {
        None => Err("no poll has finished yet".to_owned()),
        Some(t) if now - t > s.stale_after_ms => Err(format!(
            "no progress for {} s (last at {}): the poll is stuck or Elasticsearch is slow",
            (now - t) / 1000,
            format_rfc3339(t)
        )),
        Some(_) => Ok(()),
    }
}

/// The Prometheus text exposition (format 0.0.4) of a snapshot.
pub fn render_metrics(s: &WorkerSnapshot, now: Millis) -> String {
    let mut m = Exposition {
        out: String::new(),
        job: escape_label(&s.job),
    };
    let flag = |b: bool| f64::from(u8::from(b));
    m.single(
        "apiwatch_up",
        "gauge",
        "1 while the worker is ready (holds its lease, progressing).",
        flag(readiness(s, now).is_ok()),
    );
    m.single(
        "apiwatch_lease_held",
        "gauge",
        "1 while this worker holds the job's lease.",
        flag(s.lease_held),
    );
    m.single("apiwatch_polls_total", "counter", "Polls of the log indices.", s.polls as f64);
    m.single(
        "apiwatch_events_scored_total",
        "counter",
        "API-call events scored.",
        s.events_scored as f64,
    );
    m.single(
        "apiwatch_read_bytes_total",
        "counter",
        "Bytes of search responses read.",
        s.read_bytes as f64,
    );
    m.single(
        "apiwatch_documents_skipped_total",
        "counter",
        "Log documents that are not valid API-call events (skipped, sampled in the log).",
        s.documents_skipped as f64,
    );
    m.single(
        "apiwatch_events_refused_total",
        "counter",
        "Events refused by the pipeline (a time out of any plausible range).",
        s.events_refused as f64,
    );
    m.family(
        "apiwatch_events_late_total",
        "counter",
        "Events that arrived after their range was read: scored within the lateness, counted beyond it.",
    );
    m.sample("apiwatch_events_late_total", &[("scored", "true")], s.late_scored as f64);
    m.sample("apiwatch_events_late_total", &[("scored", "false")], s.late_unscored as f64);
    m.single("apiwatch_anomalies_total", "counter", "Anomalies found.", s.anomalies as f64);
    m.by(
        "apiwatch_anomalies_by_detector_total",
        "Anomalies found, by the detector that found them.",
        "detector",
        &s.anomalies_by_detector,
    );
    alerts_and_writes(&mut m, s);
    progress(&mut m, s, now);
    model_time(&mut m);
    m.out
}

/// Time in ONNX Runtime by model (process-wide: [`crate::ml::inference_time`]).
fn model_time(m: &mut Exposition) {
    let totals = crate::ml::inference_time::totals();
    type Pick = fn(&(&str, f64, u64, u64)) -> f64;
    let families: [(&str, &str, Pick); 3] = [
        (
            "apiwatch_model_inference_seconds_total",
            "Seconds spent running each learned model (ONNX Runtime).",
            |t| t.1,
        ),
        (
            "apiwatch_model_inference_runs_total",
            "Runs of each learned model (one batch each).",
            |t| t.2 as f64,
        ),
        (
            "apiwatch_model_inference_rows_total",
            "Inputs scored by each learned model (windows or calls).",
            |t| t.3 as f64,
        ),
    ];
    for (name, help, pick) in families {
        m.family(name, "counter", help);
        for t in &totals {
            m.sample(name, &[("model", t.0)], pick(t));
        }
    }
}

/// What became of the anomalies: alerts, notifications, documents written.
fn alerts_and_writes(m: &mut Exposition, s: &WorkerSnapshot) {
    m.single("apiwatch_alerts_raised_total", "counter", "Alerts raised.", s.alerts_raised as f64);
    m.by(
        "apiwatch_alerts_by_priority_total",
        "Alerts raised, by the priority they were raised with.",
        "priority",
        &s.alerts_by_priority,
    );
    m.by(
        "apiwatch_alerts_held_total",
        "Anomalies strong enough to alert that a rule held back, by rule.",
        "rule",
        &s.alerts_held_by_rule,
    );
    m.by(
        "apiwatch_feedback_alert_changes_total",
        "Alert changes marked by feedback (silenced: sent to no channel; acknowledged: not repeated).",
        "effect",
        &s.feedback_alerts,
    );
    m.single(
        "apiwatch_feedback_records_total",
        "counter",
        "Acknowledgements, silences and verdicts taken into effect.",
        s.feedback_records_applied as f64,
    );
    m.single(
        "apiwatch_feedback_records_refused_total",
        "counter",
        "Feedback documents refused (malformed or unusable; logged with their ids).",
        s.feedback_records_refused as f64,
    );
    m.single(
        "apiwatch_notifications_sent_total",
        "counter",
        "Notifications sent on all channels.",
        s.notifications_sent as f64,
    );
    m.by(
        "apiwatch_documents_written_total",
        "Documents written, by index.",
        "index",
        &s.documents_written,
    );
    m.single(
        "apiwatch_bulk_requests_total",
        "counter",
        "Bulk requests sent.",
        s.bulk_requests as f64,
    );
    m.single(
        "apiwatch_bulk_retried_items_total",
        "counter",
        "Bulk items retried after a transient refusal.",
        s.bulk_retried_items as f64,
    );
    m.single(
        "apiwatch_dead_letters_total",
        "counter",
        "Documents refused for good, parked in the dead-letter index with their reason.",
        s.dead_letters as f64,
    );
}

/// How much the worker holds and how far behind it is.
fn progress(m: &mut Exposition, s: &WorkerSnapshot, now: Millis) {
    m.single(
        "apiwatch_entities",
        "gauge",
        "Services, routes and hops the worker holds state for.",
        s.entities as f64,
    );
    m.single(
        "apiwatch_entities_evicted_total",
        "counter",
        "Entities evicted after being idle.",
        s.entities_evicted as f64,
    );
    if let Some(p) = s.position {
        m.single(
            "apiwatch_scored_until_seconds",
            "gauge",
            "Data time (Unix seconds) up to which events are scored and their documents written.",
            p as f64 / 1000.0,
        );
        m.single(
            "apiwatch_lag_seconds",
            "gauge",
            "How far scoring is behind the wall clock.",
            (now - p).max(0) as f64 / 1000.0,
        );
    }
    if let Some(c) = s.checkpoint_saved {
        m.single(
            "apiwatch_checkpoint_age_seconds",
            "gauge",
            "Seconds since the last checkpoint was saved.",
            (now - c).max(0) as f64 / 1000.0,
        );
    }
    partitions(m, s, now);
}

/// Per partition the worker holds (partitioned jobs only): how far, how far behind, how much.
fn partitions(m: &mut Exposition, s: &WorkerSnapshot, now: Millis) {
    if s.partitions.is_empty() {
        return;
    }
    type Pick = fn(&PartitionProgress, Millis) -> f64;
    let families: [(&str, &str, &str, Pick); 4] = [
        (
            "apiwatch_partition_scored_until_seconds",
            "gauge",
            "Data time (Unix seconds) up to which a partition's events are scored.",
            |p, _| p.scored_until as f64 / 1000.0,
        ),
        (
            "apiwatch_partition_lag_seconds",
            "gauge",
            "How far a partition's scoring is behind the wall clock.",
            |p, now| (now - p.scored_until).max(0) as f64 / 1000.0,
        ),
        (
            "apiwatch_partition_checkpoint_until_seconds",
            "gauge",
            "Data time (Unix seconds) of a partition's last checkpoint: the correlator goes as far as every partition's.",
            |p, _| p.checkpoint_until as f64 / 1000.0,
        ),
        (
            "apiwatch_partition_events_scored_total",
            "counter",
            "A partition's events scored by this worker since it took the partition.",
            |p, _| p.events_scored as f64,
        ),
    ];
    for (name, kind, help, pick) in families {
        m.family(name, kind, help);
        for (index, p) in &s.partitions {
            m.sample(name, &[("partition", &index.to_string())], pick(p, now));
        }
    }
}

/// Text exposition being written; every sample carries the job's label.
struct Exposition {
    out: String,
    job: String,
}

impl Exposition {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.out, "# HELP {name} {help}");
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        let _ = write!(self.out, "{name}{{job=\"{}\"", self.job);
        for (k, v) in labels {
            let _ = write!(self.out, ",{k}=\"{}\"", escape_label(v));
        }
        let _ = writeln!(self.out, "}} {value}");
    }

    fn single(&mut self, name: &str, kind: &str, help: &str, value: f64) {
        self.family(name, kind, help);
        self.sample(name, &[], value);
    }

    fn by(&mut self, name: &str, help: &str, key: &str, counts: &BTreeMap<String, u64>) {
        self.family(name, "counter", help);
        for (k, v) in counts {
            self.sample(name, &[(key, k)], *v as f64);
        }
    }
}

fn escape_label(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

fn now_ms() -> Millis {
    chrono::Utc::now().timestamp_millis()
}

async fn health(State(status): State<Arc<WorkerStatus>>) -> impl IntoResponse {
    let s = status.snapshot();
    let now = now_ms();
    let ready = readiness(&s, now);
    let body = serde_json::json!({
        "live": true,
        "ready": ready.is_ok(),
        "reason": ready.as_ref().err(),
        "job": s.job,
        "worker": s.worker_id,
        "scored_until": s.position.map(format_rfc3339),
        "lag_s": s.position.map(|p| (now - p) / 1000),
    });
    let code = if ready.is_ok() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, axum::Json(body))
}

async fn live() -> impl IntoResponse {
    (StatusCode::OK, "live\n")
}

async fn metrics(State(status): State<Arc<WorkerStatus>>) -> impl IntoResponse {
    let text = render_metrics(&status.snapshot(), now_ms());
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], text)
}

/// The routes served.
pub fn router(status: Arc<WorkerStatus>) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/health/live", get(live))
        .route("/health/ready", get(health))
        .route("/metrics", get(metrics))
        .with_state(status)
}

/// A running server: its address, and its thread (which ends within 200 ms of `stop`; the
/// process may also exit with it running).
pub struct Server {
    pub addr: SocketAddr,
    _thread: std::thread::JoinHandle<()>,
}

impl Server {
    /// Binds `addr` now (so a taken port is an error at start, naming it) and serves from a
    /// thread of its own until `stop` is set.
    pub fn start(
        addr: SocketAddr,
        status: Arc<WorkerStatus>,
        api: Option<Arc<api::ApiContext>>,
        stop: Arc<AtomicBool>,
    ) -> anyhow::Result<Self> {
        let listener = std::net::TcpListener::bind(addr)
            .map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e} (is the port taken? choose another with --listen)"))?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()
            .map_err(|e| anyhow::anyhow!("the HTTP server's runtime could not start: {e}"))?;
        let thread = std::thread::Builder::new().name("apiwatch-http".into()).spawn(move || {
            runtime.block_on(async move {
                let listener = match tokio::net::TcpListener::from_std(listener) {
                    Ok(l) => l,
                    Err(e) => {
                        tracing::error!(error = %e, %addr, "the HTTP server could not take its socket");
                        return;
                    }
                };
                let shutdown = async move {
                    while !stop.load(Ordering::Relaxed) {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                };
                let app = match api {
                    Some(ctx) => router(status).merge(api::routes(ctx)),
                    None => router(status),
                };
                if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(shutdown).await {
                    tracing::error!(error = %e, %addr, "the HTTP server stopped");
                }
            });
        })?;
        // Said whatever the log level: with port 0 this is the only way to learn the port.
        {
            use std::io::Write as _;
            let _ = writeln!(
                std::io::stderr(),
                "apiwatch: serving /health, /metrics, /api and /act on http://{addr}"
            );
        }
        Ok(Server { addr, _thread: thread })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ready_snapshot() -> WorkerSnapshot {
        WorkerSnapshot {
            job: "live".into(),
            lease_held: true,
            last_progress: Some(1_000_000),
            position: Some(990_000),
            stale_after_ms: 60_000,
            ..WorkerSnapshot::default()
        }
    }

    #[test]
    fn ready_only_with_the_lease_recent_progress_and_no_failure() {
        let s = ready_snapshot();
        assert!(readiness(&s, 1_030_000).is_ok());
        let stale = readiness(&s, 1_100_000).unwrap_err();
        assert!(stale.contains("no progress for 100 s"), "{stale}");
        let standby = WorkerSnapshot {
            lease_held: false,
            ..s.clone()
        };
        assert!(readiness(&standby, 1_000_000).unwrap_err().contains("not held"));
        let failing = WorkerSnapshot {
            failing: Some("node down".into()),
            ..s
        };
        assert!(readiness(&failing, 1_000_000).unwrap_err().contains("node down"));
    }

    #[test]
    fn metrics_name_every_family_once_with_escaped_labels() {
        let mut s = ready_snapshot();
        s.job = "a\"b\\c".into();
        s.events_scored = 42;
        s.anomalies_by_detector.insert("baseline".into(), 3);
        let text = render_metrics(&s, 1_010_000);
        assert!(text.contains("apiwatch_events_scored_total{job=\"a\\\"b\\\\c\"} 42\n"), "{text}");
        assert!(
            text.contains("apiwatch_anomalies_by_detector_total{job=\"a\\\"b\\\\c\",detector=\"baseline\"} 3\n"),
            "{text}"
        );
        assert!(text.contains("apiwatch_lag_seconds{job=\"a\\\"b\\\\c\"} 20\n"), "{text}");
        assert!(!text.contains("apiwatch_partition_"), "a whole job has no partition series");
        s.partitions.insert(
            3,
            PartitionProgress {
                scored_until: 1_000_000,
                checkpoint_until: 960_000,
                events_scored: 7,
            },
        );
        let text = render_metrics(&s, 1_010_000);
        assert!(
            text.contains("apiwatch_partition_lag_seconds{job=\"a\\\"b\\\\c\",partition=\"3\"} 10\n"),
            "{text}"
        );
        assert!(text.contains("apiwatch_partition_checkpoint_until_seconds{job=\"a\\\"b\\\\c\",partition=\"3\"} 960\n"));
        assert!(text.contains("apiwatch_partition_events_scored_total{job=\"a\\\"b\\\\c\",partition=\"3\"} 7\n"));
        let mut types = std::collections::HashSet::new();
        for line in text.lines().filter(|l| l.starts_with("# TYPE ")) {
            assert!(types.insert(line.split(' ').nth(2).unwrap().to_owned()), "{line} twice");
        }
    }
}
