//! `apiwatch report`: one self-contained HTML page from a directory `detect` wrote.
//!
//! The page carries its data as JSON inside the HTML and draws its charts in the browser with
//! inline SVG (no network, no library): per-service traffic, error-rate and p95-latency
//! timelines with alert spans and anomaly markers, the alert list, and a waterfall of example
//! journeys. The data model is built here, so what the page shows is decided (and tested) in Rust;
//! the script only draws it. Everything from the logs (service names, reasons) reaches the DOM as
//! text, never as markup.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::model::service::ServiceRecord;
use crate::model::time::{format_rfc3339, Millis};
use crate::model::{Alert, AlertStatus, Anomaly, AnomalyKind, JourneyRecord, ServiceMetrics};

/// Points per timeline above which windows are merged (a week of 1-minute windows stays light).
const MAX_POINTS: usize = 1500;
/// Anomaly markers kept (the highest scores); the page says how many there were.
const MAX_MARKERS: usize = 3000;
/// Example journeys offered in the waterfall.
const MAX_JOURNEYS: usize = 8;

const PAGE: &str = include_str!("page.html");
const STYLE: &str = include_str!("report.css");
const SCRIPT: &str = include_str!("report.js");

/// The file name the report is written under, in the output directory.
pub const REPORT_FILE: &str = "index.html";

/// What the page draws.
#[derive(Serialize, Debug)]
pub struct ReportData {
    pub title: String,
    pub generated: String,
    pub source: String,
    pub from: Millis,
    pub to: Millis,
    /// Width of one timeline point, in ms (a window, or several merged).
    pub step_ms: Millis,
    pub services: Vec<ServiceSeries>,
    pub alerts: Vec<AlertRow>,
    pub anomalies: Vec<AnomalyMark>,
    pub anomalies_total: usize,
    pub journeys: Vec<JourneyView>,
    pub onboarded: Vec<OnboardedRow>,
    pub rejected_lines: u64,
}

/// One (service, provider)'s timelines, aligned on the report's grid (`None` = no data).
#[derive(Serialize, Debug)]
pub struct ServiceSeries {
    pub service: String,
    pub provider: String,
    pub calls: Vec<Option<u64>>,
    /// 5xx share of calls, percent.
    pub error_pct: Vec<Option<f64>>,
    pub p95_ms: Vec<Option<f64>>,
    pub total_calls: u64,
    /// Alerts whose origin or scope includes this service.
    pub alerts: usize,
}

#[derive(Serialize, Debug)]
pub struct AlertRow {
    pub id: String,
    pub priority: String,
    pub status: String,
    pub start: Millis,
    pub end: Option<Millis>,
    pub raised: Millis,
    pub service: String,
    pub provider: String,
    pub route: Option<String>,
    /// `service/provider` of the origin and of every anomaly behind the alert (origin first).
    pub scope: Vec<String>,
    pub title: String,
    pub summary: String,
    pub kinds: Vec<AnomalyKind>,
    pub predicted: bool,
    pub impact_calls: u64,
    pub impact_users: u64,
}

#[derive(Serialize, Debug)]
pub struct AnomalyMark {
    pub start: Millis,
    pub end: Millis,
    pub service: String,
    pub provider: String,
    pub kind: AnomalyKind,
    /// Which timeline the marker sits on: `traffic`, `errors`, `latency` or `calls` (a strip for
    /// findings about single calls and call orders).
    pub lane: &'static str,
    pub detector: String,
    pub severity: String,
    pub score: f64,
    pub reason: String,
    pub route: Option<String>,
    /// Index into `alerts` of the alert this anomaly is evidence for.
    pub alert: Option<usize>,
}

#[derive(Serialize, Debug)]
pub struct JourneyView {
    pub id: String,
    pub trace_id: String,
    /// Why this journey is shown ("evidence for alert …", "slowest of its window", …).
    pub why: String,
    pub start: Millis,
    pub duration_ms: f64,
    pub failed: bool,
    pub route: String,
    pub bars: Vec<WaterfallBar>,
}

#[derive(Serialize, Debug)]
pub struct WaterfallBar {
    /// `service/provider` of the callee (the entry service for the first bar).
    pub label: String,
    pub caller: Option<String>,
    pub provider: String,
    pub start_ms: f64,
    pub duration_ms: f64,
    pub failed: bool,
    pub cross_provider: bool,
    pub marked: bool,
}

#[derive(Serialize, Debug)]
pub struct OnboardedRow {
    pub service: String,
    pub provider: String,
    pub first_seen: Millis,
    pub calls: u64,
    pub routes: usize,
    pub baseline: String,
}

/// What a `detect` output directory holds.
pub struct DetectOutput {
    pub dir: PathBuf,
    pub metrics: Vec<ServiceMetrics>,
    pub anomalies: Vec<Anomaly>,
    pub alerts: Vec<Alert>,
    pub journeys: Vec<JourneyRecord>,
    pub services: Vec<ServiceRecord>,
    pub rejected_lines: u64,
}

impl DetectOutput {
    /// Reads the files `detect` writes. `metrics.ndjson` is required (it holds the timelines);
    /// a bad line is an error naming the file and line.
    pub fn read(dir: &Path) -> anyhow::Result<Self> {
        anyhow::ensure!(
            dir.is_dir(),
            "{} is not a directory: give the directory `apiwatch detect -o` wrote",
            dir.display()
        );
        let metrics_path = dir.join("metrics.ndjson");
        anyhow::ensure!(
            metrics_path.is_file(),
            "{} is missing: it is written by `apiwatch detect` from this version on; run detect again into {}",
            metrics_path.display(),
            dir.display()
        );
        let services_path = dir.join("services.json");
        let services = if services_path.is_file() {
            let f = File::open(&services_path).with_context(|| format!("cannot open {}", services_path.display()))?;
            serde_json::from_reader(BufReader::new(f)).with_context(|| format!("{} is not a services list", services_path.display()))?
        } else {
            Vec::new()
        };
        let rejected = dir.join("rejected.ndjson");
        let rejected_lines = if rejected.is_file() {
            let f = File::open(&rejected).with_context(|| format!("cannot open {}", rejected.display()))?;
            BufReader::new(f).lines().count() as u64
        } else {
            0
        };
        Ok(DetectOutput {
            dir: dir.to_owned(),
            metrics: read_ndjson(&metrics_path)?,
            anomalies: read_ndjson_if_present(&dir.join("anomalies.ndjson"))?,
            alerts: read_ndjson_if_present(&dir.join("alerts.ndjson"))?,
            journeys: read_ndjson_if_present(&dir.join("journeys.ndjson"))?,
            services,
            rejected_lines,
        })
    }
}

fn read_ndjson_if_present<T: DeserializeOwned>(path: &Path) -> anyhow::Result<Vec<T>> {
    if path.is_file() {
        read_ndjson(path)
    } else {
        Ok(Vec::new())
    }
}

/// Reads documents apiwatch wrote, one per line; a bad line names the file and its number.
pub(crate) fn read_ndjson<T: DeserializeOwned>(path: &Path) -> anyhow::Result<Vec<T>> {
    let f = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut out = Vec::new();
    for (i, line) in BufReader::new(f).lines().enumerate() {
        let line = line.with_context(|| format!("cannot read {} line {}", path.display(), i + 1))?;
        if line.trim().is_empty() {
            continue;
        }
        out.push(serde_json::from_str(&line).with_context(|| {
            format!(
                "{} line {}: not a document apiwatch wrote; was the file edited or truncated?",
                path.display(),
                i + 1
            )
        })?);
    }
    Ok(out)
}

fn label(service: &str, provider: &str) -> String {
    format!("{service}/{provider}")
}

fn priority_rank(p: &str) -> u8 {
    match p {
        "P1" => 1,
        "P2" => 2,
        "P3" => 3,
        "P4" => 4,
        _ => 9,
    }
}

/// The timeline a finding belongs on.
fn lane(a: &Anomaly) -> &'static str {
    match a.kind {
        AnomalyKind::Journey if a.metric.as_deref().is_some_and(|m| m.contains("failing")) => "errors",
        AnomalyKind::Latency | AnomalyKind::Journey => "latency",
        AnomalyKind::Errors => "errors",
        AnomalyKind::Traffic => "traffic",
        AnomalyKind::Request | AnomalyKind::Sequence => "calls",
        AnomalyKind::Forecast => {
            let m = a.metric.as_deref().unwrap_or_default();
            if m.contains("error") || m.contains("5xx") {
                "errors"
            } else if m.contains("latency") || m.contains("p95") || m.contains("p99") {
                "latency"
            } else {
                "traffic"
            }
        }
    }
}

/// One row per alert, most urgent first, with every place its anomalies touched.
fn alert_rows(out: &DetectOutput, alerts: &[&Alert]) -> Vec<AlertRow> {
    // An alert names related services without their provider; its anomalies carry both.
    let anomaly_place: BTreeMap<&str, String> = out
        .anomalies
        .iter()
        .map(|a| (a.id.as_str(), label(&a.service, &a.provider)))
        .collect();
    alerts
        .iter()
        .map(|a| {
            let mut scope = vec![label(&a.service, &a.provider)];
            for id in &a.anomaly_ids {
                if let Some(place) = anomaly_place.get(id.as_str()) {
                    if !scope.contains(place) {
                        scope.push(place.clone());
                    }
                }
            }
            AlertRow {
                id: a.id.clone(),
                priority: a.priority.clone(),
                status: match a.status {
                    AlertStatus::Open => "open".to_owned(),
                    AlertStatus::Resolved => "resolved".to_owned(),
                },
                start: a.start,
                end: a.end,
                raised: a.timestamp,
                service: a.service.clone(),
                provider: a.provider.clone(),
                route: a.route.clone(),
                scope,
                title: a.title.clone(),
                summary: a.summary.clone(),
                kinds: a.kinds.clone(),
                predicted: a.predicted,
                impact_calls: a.impact_calls,
                impact_users: a.impact_users,
            }
        })
        .collect()
}

/// The anomalies drawn on the timelines: those behind alerts first, then the strongest, at
/// most [`MAX_MARKERS`], in time order.
fn anomaly_marks(out: &DetectOutput, alerts: &[&Alert]) -> Vec<AnomalyMark> {
    let alert_of: BTreeMap<&str, usize> = alerts
        .iter()
        .enumerate()
        .flat_map(|(i, a)| a.anomaly_ids.iter().map(move |id| (id.as_str(), i)))
        .collect();
    let mut marks: Vec<&Anomaly> = out.anomalies.iter().collect();
    // Keep the findings behind alerts, then the highest scores.
    marks.sort_by(|a, b| {
        let ka = alert_of.contains_key(a.id.as_str());
        let kb = alert_of.contains_key(b.id.as_str());
        kb.cmp(&ka)
            .then(b.score.total_cmp(&a.score))
            .then(a.window_start.cmp(&b.window_start))
    });
    marks.truncate(MAX_MARKERS);
    marks.sort_by(|a, b| (a.window_start, &a.id).cmp(&(b.window_start, &b.id)));
    marks
        .into_iter()
        .map(|a| AnomalyMark {
            start: a.window_start,
            end: a.window_end,
            service: a.service.clone(),
            provider: a.provider.clone(),
            kind: a.kind,
            lane: lane(a),
            detector: a.detector.clone(),
            severity: format!("{:?}", a.severity).to_lowercase(),
            score: a.score,
            reason: a.reason.clone(),
            route: a.route.clone(),
            alert: alert_of.get(a.id.as_str()).copied(),
        })
        .collect()
}

/// Builds the page's data from a detect output.
pub fn build(out: &DetectOutput, title: &str) -> ReportData {
    let window = infer_window(&out.metrics);
    let from = out.metrics.iter().map(|m| m.start).min().unwrap_or(0);
    let last = out.metrics.iter().map(|m| m.start).max().unwrap_or(0);
    let windows = if out.metrics.is_empty() {
        0
    } else {
        ((last - from) / window) as usize + 1
    };
    // Merge neighbouring windows so no timeline exceeds MAX_POINTS.
    let merge = windows.div_ceil(MAX_POINTS).max(1);
    let points = windows.div_ceil(merge);
    let step_ms = window * merge as i64;

    let mut alerts: Vec<&Alert> = out.alerts.iter().collect();
    alerts.sort_by(|a, b| (priority_rank(&a.priority), a.start, &a.id).cmp(&(priority_rank(&b.priority), b.start, &b.id)));
    let alert_rows = alert_rows(out, &alerts);

    let mut series: BTreeMap<(String, String), Acc> = BTreeMap::new();
    for m in &out.metrics {
        let acc = series
            .entry((m.service.clone(), m.provider.clone()))
            .or_insert_with(|| Acc::new(points));
        let i = (((m.start - from) / window) as usize) / merge;
        acc.add(i, m);
    }
    let mut services: Vec<ServiceSeries> = series
        .into_iter()
        .map(|((service, provider), acc)| {
            let l = label(&service, &provider);
            let alerts = alert_rows.iter().filter(|a| a.scope.contains(&l)).count();
            acc.finish(service, provider, alerts)
        })
        .collect();
    // Services with alerts first (most alerts first), then the busiest.
    services.sort_by(|a, b| (b.alerts, b.total_calls, &a.service, &a.provider).cmp(&(a.alerts, a.total_calls, &b.service, &b.provider)));

    let anomalies = anomaly_marks(out, &alerts);

    let to = out
        .metrics
        .iter()
        .map(|m| m.start + window)
        .max()
        .unwrap_or(from)
        .max(out.alerts.iter().filter_map(|a| a.end).max().unwrap_or(0));
    ReportData {
        title: title.to_owned(),
        generated: format_rfc3339(chrono::Utc::now().timestamp_millis()),
        source: out.dir.display().to_string(),
        from,
        to,
        step_ms,
        services,
        journeys: pick_journeys(&out.journeys, &alerts),
        alerts: alert_rows,
        anomalies,
        anomalies_total: out.anomalies.len(),
        onboarded: out
            .services
            .iter()
            .map(|s| OnboardedRow {
                service: s.service.clone(),
                provider: s.provider.clone(),
                first_seen: s.first_seen,
                calls: s.calls,
                routes: s.routes.len(),
                baseline: s.baseline.clone(),
            })
            .collect(),
        rejected_lines: out.rejected_lines,
    }
}

/// The window width: the smallest gap between consecutive window starts of one service.
fn infer_window(metrics: &[ServiceMetrics]) -> Millis {
    let mut last: BTreeMap<(&str, &str), Millis> = BTreeMap::new();
    let mut best = Millis::MAX;
    for m in metrics {
        if let Some(prev) = last.insert((&m.service, &m.provider), m.start) {
            if m.start > prev {
                best = best.min(m.start - prev);
            }
        }
    }
    if best == Millis::MAX {
        crate::model::time::MINUTE_MS
    } else {
        best
    }
}

/// Accumulates one service's windows into (possibly merged) timeline points.
struct Acc {
    calls: Vec<Option<u64>>,
    errors: Vec<u64>,
    /// Latency of a merged point: the worst p95 of its windows (a spike must stay visible).
    p95: Vec<Option<f64>>,
}

impl Acc {
    fn new(points: usize) -> Self {
        Acc {
            calls: vec![None; points],
            errors: vec![0; points],
            p95: vec![None; points],
        }
    }

    fn add(&mut self, i: usize, m: &ServiceMetrics) {
        let c = self.calls[i].get_or_insert(0);
        *c += m.calls;
        self.errors[i] += m.errors_5xx;
        if m.calls > 0 {
            let p = self.p95[i].get_or_insert(0.0);
            *p = p.max(m.p95_ms);
        }
    }

    fn finish(self, service: String, provider: String, alerts: usize) -> ServiceSeries {
        let error_pct = self
            .calls
            .iter()
            .zip(&self.errors)
            .map(|(c, e)| c.filter(|&c| c > 0).map(|c| round2(100.0 * *e as f64 / c as f64)))
            .collect();
        ServiceSeries {
            total_calls: self.calls.iter().flatten().sum(),
            calls: self.calls,
            error_pct,
            p95_ms: self.p95.into_iter().map(|p| p.map(round2)).collect(),
            service,
            provider,
            alerts,
        }
    }
}

fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

/// Journeys worth a waterfall: those carrying the trace ids of the highest-priority alerts, then
/// flagged ones by duration, then the slowest of their windows.
fn pick_journeys(journeys: &[JourneyRecord], alerts_by_priority: &[&Alert]) -> Vec<JourneyView> {
    let mut picked: Vec<(usize, String)> = Vec::new();
    let take = |i: usize, why: String, picked: &mut Vec<(usize, String)>| {
        if picked.len() < MAX_JOURNEYS && !picked.iter().any(|(j, _)| *j == i) {
            picked.push((i, why));
        }
    };
    for a in alerts_by_priority {
        if let Some(i) = journeys.iter().position(|j| a.trace_ids.contains(&j.trace_id)) {
            take(i, format!("an example trace of {} alert: {}", a.priority, a.title), &mut picked);
        }
    }
    let mut by_duration: Vec<usize> = (0..journeys.len()).collect();
    by_duration.sort_by(|&a, &b| journeys[b].duration_ms.total_cmp(&journeys[a].duration_ms));
    for &i in &by_duration {
        if journeys[i].marked != "slowest" {
            let j = &journeys[i];
            let what = if j.marked == "failing_hop" { "a failing hop" } else { "a slow hop" };
            let hop = j.marked_hop.as_deref().unwrap_or("?");
            take(i, format!("flagged for {what} ({hop})"), &mut picked);
        }
    }
    for &i in &by_duration {
        take(i, "the slowest journey of its window".to_owned(), &mut picked);
    }
    picked.into_iter().map(|(i, why)| journey_view(&journeys[i], why)).collect()
}

fn journey_view(j: &JourneyRecord, why: String) -> JourneyView {
    let entry = label(&j.service, &j.provider);
    let mut bars = vec![WaterfallBar {
        label: entry,
        caller: None,
        provider: j.provider.clone(),
        start_ms: 0.0,
        duration_ms: j.duration_ms,
        failed: j.failed && j.hops.iter().all(|h| !h.failed),
        cross_provider: false,
        marked: false,
    }];
    let mut hops: Vec<_> = j.hops.iter().collect();
    hops.sort_by(|a, b| a.start_ms.total_cmp(&b.start_ms));
    for h in hops {
        let provider = h.to.rsplit('/').next().unwrap_or_default().to_owned();
        let edge = format!("{} → {}", h.from, h.to);
        bars.push(WaterfallBar {
            label: h.to.clone(),
            caller: Some(h.from.clone()),
            provider,
            start_ms: h.start_ms,
            duration_ms: h.duration_ms,
            failed: h.failed,
            cross_provider: h.cross_provider,
            marked: j.marked_hop.as_deref() == Some(edge.as_str()),
        });
    }
    JourneyView {
        id: j.id.clone(),
        trace_id: j.trace_id.clone(),
        why,
        start: j.timestamp,
        duration_ms: j.duration_ms,
        failed: j.failed,
        route: j.route.clone(),
        bars,
    }
}

/// The page: the template with the style, the data and the script inlined.
pub fn render(data: &ReportData) -> anyhow::Result<String> {
    let json = embed_json(&serde_json::to_string(data)?);
    Ok(PAGE
        .replace("{{title}}", &escape_html(&data.title))
        .replace("/*{{style}}*/", STYLE)
        .replace("{{data}}", &json)
        .replace("/*{{script}}*/", SCRIPT))
}

/// JSON made safe inside a `<script>` element: no `<`, `>` or `&` can end it or open a comment.
/// Inside JSON those characters only occur in strings, where `\uXXXX` means the same.
fn embed_json(json: &str) -> String {
    json.replace('<', "\\u003c").replace('>', "\\u003e").replace('&', "\\u0026")
}

fn escape_html(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Reads `input`, writes `output/index.html`, returns its path.
pub fn write(input: &Path, output: &Path, title: &str) -> anyhow::Result<(PathBuf, ReportData)> {
    let out = DetectOutput::read(input)?;
    let data = build(&out, title);
    let html = render(&data)?;
    std::fs::create_dir_all(output).with_context(|| format!("cannot create {}", output.display()))?;
    let path = output.join(REPORT_FILE);
    std::fs::write(&path, html).with_context(|| format!("cannot write {}", path.display()))?;
    Ok((path, data))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::time::MINUTE_MS;
    use crate::model::HopRecord;

    fn metric(t: Millis, service: &str, calls: u64, e5: u64, p95: f64) -> ServiceMetrics {
        ServiceMetrics {
            start: t,
            service: service.to_owned(),
            provider: "aws".to_owned(),
            calls,
            errors_4xx: 0,
            errors_5xx: e5,
            p50_ms: p95 / 2.0,
            p95_ms: p95,
            p99_ms: p95 * 1.5,
        }
    }

    fn output(metrics: Vec<ServiceMetrics>) -> DetectOutput {
        DetectOutput {
            dir: PathBuf::from("x"),
            metrics,
            anomalies: Vec::new(),
            alerts: Vec::new(),
            journeys: Vec::new(),
            services: Vec::new(),
            rejected_lines: 0,
        }
    }

    #[test]
    fn timelines_align_on_one_grid_with_gaps_where_a_service_was_absent() {
        let m = vec![
            metric(0, "a", 10, 1, 20.0),
            metric(MINUTE_MS, "a", 20, 0, 30.0),
            metric(3 * MINUTE_MS, "a", 40, 4, 50.0),
            metric(MINUTE_MS, "b", 5, 0, 7.0),
        ];
        let d = build(&output(m), "t");
        assert_eq!(d.step_ms, MINUTE_MS);
        assert_eq!((d.from, d.to), (0, 4 * MINUTE_MS));
        let a = d.services.iter().find(|s| s.service == "a").unwrap();
        assert_eq!(a.calls, vec![Some(10), Some(20), None, Some(40)]);
        assert_eq!(a.error_pct, vec![Some(10.0), Some(0.0), None, Some(10.0)]);
        assert_eq!(a.total_calls, 70);
        let b = d.services.iter().find(|s| s.service == "b").unwrap();
        assert_eq!(b.calls, vec![None, Some(5), None, None]);
        // The busiest first when neither has alerts.
        assert_eq!(d.services[0].service, "a");
    }

    #[test]
    fn long_runs_are_merged_keeping_sums_and_the_worst_latency() {
        let n = 2 * MAX_POINTS + 10;
        let m: Vec<_> = (0..n)
            .map(|i| metric(i as i64 * MINUTE_MS, "a", 10, u64::from(i == 7), if i == 5 { 900.0 } else { 10.0 }))
            .collect();
        let d = build(&output(m), "t");
        let s = &d.services[0];
        assert!(s.calls.len() <= MAX_POINTS, "{} points", s.calls.len());
        assert_eq!(d.step_ms, 3 * MINUTE_MS);
        assert_eq!(s.calls[1], Some(30));
        assert_eq!(s.p95_ms[1], Some(900.0));
        assert_eq!(s.error_pct[2], Some(round2(100.0 / 30.0)));
        assert_eq!(s.total_calls, 10 * n as u64);
    }

    #[test]
    fn log_text_cannot_close_the_script_element() {
        let mut out = output(vec![metric(0, "</script><img src=x onerror=alert(1)>", 1, 0, 1.0)]);
        out.dir = PathBuf::from("<b>&dir");
        let html = render(&build(&out, "<title>&")).unwrap();
        assert!(!html.contains("</script><img"), "the service name ended the data element");
        assert!(!html.contains("<img"));
        assert!(html.contains("&lt;title&gt;&amp;"));
        // The embedded JSON still means the same text.
        let start = html.find("id=\"apiwatch-data\">").unwrap() + "id=\"apiwatch-data\">".len();
        let end = start + html[start..].find("</script>").unwrap();
        let v: serde_json::Value = serde_json::from_str(&html[start..end]).unwrap();
        assert_eq!(v["services"][0]["service"], "</script><img src=x onerror=alert(1)>");
        assert_eq!(v["source"], "<b>&dir");
    }

    fn journey(trace: &str, marked: &str, duration: f64) -> JourneyRecord {
        JourneyRecord {
            timestamp: 0,
            id: format!("j-{trace}"),
            trace_id: trace.to_owned(),
            user_id: None,
            service: "gateway".to_owned(),
            provider: "onprem".to_owned(),
            route: "/pay".to_owned(),
            duration_ms: duration,
            spans: 3,
            services: vec![],
            providers: vec![],
            cross_provider_hops: 1,
            failed: false,
            marked: marked.to_owned(),
            marked_hop: Some("gateway/onprem → payments/aws".to_owned()),
            hops: vec![
                HopRecord {
                    from: "payments/aws".to_owned(),
                    to: "ledger/aws".to_owned(),
                    start_ms: 30.0,
                    duration_ms: 20.0,
                    share: 0.2,
                    failed: false,
                    cross_provider: false,
                },
                HopRecord {
                    from: "gateway/onprem".to_owned(),
                    to: "payments/aws".to_owned(),
                    start_ms: 5.0,
                    duration_ms: 80.0,
                    share: 0.8,
                    failed: false,
                    cross_provider: true,
                },
            ],
        }
    }

    fn anomaly(id: &str, service: &str, provider: &str, kind: AnomalyKind) -> Anomaly {
        Anomaly {
            timestamp: MINUTE_MS,
            id: id.to_owned(),
            kind,
            detector: "baseline".to_owned(),
            score: 80.0,
            severity: crate::model::Severity::High,
            window_start: 0,
            window_end: MINUTE_MS,
            service: service.to_owned(),
            provider: provider.to_owned(),
            route: None,
            metric: None,
            held_by: None,
            alert_id: None,
            grouped_by: None,
            weight: Default::default(),
            actual: None,
            expected: None,
            reason: "slow".to_owned(),
            contributors: vec![],
            hop_from: None,
            impact_calls: 0,
            impact_users: 0,
            eta: None,
            evidence_start: None,
            trace_ids: vec![],
            user_ids: vec![],
        }
    }

    #[test]
    fn an_alert_covers_the_places_of_its_anomalies_and_marks_them() {
        let mut out = output(vec![
            metric(0, "gateway", 100, 0, 10.0),
            metric(0, "payments", 10, 0, 10.0),
            ServiceMetrics {
                provider: "onprem".to_owned(),
                ..metric(0, "gateway", 500, 0, 10.0)
            },
        ]);
        out.anomalies = vec![
            anomaly("a1", "payments", "aws", AnomalyKind::Latency),
            anomaly("a2", "gateway", "aws", AnomalyKind::Errors),
            anomaly("a3", "gateway", "onprem", AnomalyKind::Sequence),
        ];
        out.alerts = vec![alert("P2", &["a1", "a2"])];
        let d = build(&out, "t");
        assert_eq!(d.alerts[0].scope, ["payments/aws", "gateway/aws"]);
        // Alerted services first, though gateway/onprem is the busiest.
        let order: Vec<String> = d.services.iter().map(|s| label(&s.service, &s.provider)).collect();
        assert_eq!(order, ["gateway/aws", "payments/aws", "gateway/onprem"]);
        let marks: Vec<(&str, Option<usize>)> = d.anomalies.iter().map(|m| (m.lane, m.alert)).collect();
        assert_eq!(marks, [("latency", Some(0)), ("errors", Some(0)), ("calls", None)]);
    }

    fn alert(priority: &str, anomaly_ids: &[&str]) -> Alert {
        Alert {
            timestamp: 0,
            id: format!("alert-{priority}"),
            status: AlertStatus::Open,
            priority: priority.to_owned(),
            start: 0,
            end: None,
            service: "payments".to_owned(),
            provider: "aws".to_owned(),
            route: None,
            services: vec!["gateway".to_owned(), "payments".to_owned()],
            suspects: vec![],
            kinds: vec![AnomalyKind::Journey],
            predicted: false,
            eta: None,
            title: "slow".to_owned(),
            summary: String::new(),
            anomaly_ids: anomaly_ids.iter().map(|s| s.to_string()).collect(),
            notifications: 1,
            impact_calls: 0,
            impact_users: 0,
            trace_ids: vec![],
            acknowledged_by: None,
            acknowledged_at: None,
            silenced_by: None,
            links: Default::default(),
        }
    }

    #[test]
    fn journeys_behind_alerts_come_first_and_bars_follow_start_times() {
        let js = vec![
            journey("t1", "slowest", 900.0),
            journey("t2", "slow_hop", 100.0),
            journey("t3", "slowest", 50.0),
        ];
        let alert = Alert {
            trace_ids: vec!["t3".to_owned()],
            ..alert("P2", &[])
        };
        let v = pick_journeys(&js, &[&alert]);
        let order: Vec<&str> = v.iter().map(|j| j.trace_id.as_str()).collect();
        assert_eq!(order, ["t3", "t2", "t1"]);
        let bars: Vec<(&str, f64)> = v[1].bars.iter().map(|b| (b.label.as_str(), b.start_ms)).collect();
        assert_eq!(bars, [("gateway/onprem", 0.0), ("payments/aws", 5.0), ("ledger/aws", 30.0)]);
        assert!(v[1].bars[1].marked && v[1].bars[1].cross_provider && !v[1].bars[2].marked);
    }

    #[test]
    fn a_missing_metrics_file_says_what_to_run() {
        let dir = tempfile::tempdir().unwrap();
        let e = DetectOutput::read(dir.path()).err().unwrap().to_string();
        assert!(e.contains("metrics.ndjson") && e.contains("run detect again"), "{e}");
        std::fs::write(dir.path().join("metrics.ndjson"), "{\"calls\": 1}\n").unwrap();
        let e = format!("{:#}", DetectOutput::read(dir.path()).err().unwrap());
        assert!(e.contains("metrics.ndjson line 1"), "{e}");
    }
}
