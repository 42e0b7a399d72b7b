//! `apiwatch bench --es URL`: the Elasticsearch-mode measurements, each beside its limit in the
//! same run. (1) Bulk-load N simulated events (ingest rate). (2) The peer: a raw point-in-time
//! read of the same documents by the same reader code (fetch and parse, nothing else), then the
//! worker end to end (read, score, write, checkpoint) over the same range; the ratio of the two.
//! (3) Live: traffic paced in real time at a target rate while `run` polls, sampling how far the
//! written documents (everything scored and bulk-written) trail the wall clock.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::client::EsClient;
use super::names::IndexNames;
use crate::job::elasticsearch::{self, nonempty_slices, RunOptions, WorkerSettings};
use crate::model::time::{parse_rfc3339, Millis, HOUR_MS};
use crate::pipeline::PipelineConfig;
use crate::simulate::SimConfig;
use crate::source::elasticsearch::{SliceMsg, SliceReader};

#[derive(Debug, Default, Serialize)]
pub struct EsBenchReport {
    pub events: u64,
    pub load_events_per_s: f64,
    pub raw_read_events_per_s: f64,
    pub end_to_end_events_per_s: f64,
    pub end_to_end_to_raw_read: f64,
    pub documents_written: u64,
    pub live: Option<LiveReport>,
}

#[derive(Debug, Default, Serialize)]
pub struct LiveReport {
    pub seconds: f64,
    pub target_events_per_s: f64,
    pub ingested_events_per_s: f64,
    pub scored_events: u64,
    pub poll_interval_s: f64,
    pub ingest_delay_s: f64,
    /// How far the written documents trailed the wall clock (median, max), minus the ingest
    /// delay, sampled every 250 ms.
    pub lag_median_s: f64,
    pub lag_max_s: f64,
    /// The same, in poll intervals: anomalies of a window are written once the written mark
    /// passes its end, so this bounds how late they are.
    pub lag_max_polls: f64,
    pub caught_up_after_load_s: f64,
    /// Events that arrived after their range was read (the loader fell behind real time by
    /// more than the ingest delay): scored as late within the lateness, else only counted.
    pub late_scored: u64,
    pub late_unscored: u64,
}

/// Raw read of `[from, to)`: same slices, same reader threads, same parsing; nothing else.
fn raw_read(client: &EsClient, settings: &WorkerSettings, from: Millis, to: Millis) -> anyhow::Result<(u64, f64)> {
    let t = Instant::now();
    let docs = settings.documents()?;
    let slices = nonempty_slices(client, docs.pattern(), from, to, settings.slice)?;
    let mut r = SliceReader::start(client, &docs, slices, (settings.readers, settings.page_size), None);
    let mut n = 0;
    while let Some((_, msg)) = r.next_message() {
        match msg {
            SliceMsg::Page(p) => n += p.events.len() as u64,
            SliceMsg::Failed(e) => return Err(e.into()),
            SliceMsg::Done => {}
        }
    }
    Ok((n, t.elapsed().as_secs_f64()))
}

pub fn run(client: &EsClient, base: &WorkerSettings, events: u64, live_secs: u64, live_rate: f64) -> anyhow::Result<EsBenchReport> {
    let tag = format!("bench{}", chrono::Utc::now().timestamp());
    let mut report = EsBenchReport::default();
    let stream = format!("logs-apiwatch.calls-{tag}");
    super::templates::setup(client, &IndexNames::with_prefix(&tag))?;

    // (1) Load: a busy bank platform until `events` events.
    let start = parse_rfc3339("2026-03-02T00:00:00Z").unwrap_or_default();
    let rate = 200.0;
    let sim = SimConfig {
        seed: 5,
        topology: "bank".into(),
        start,
        duration: ((events as f64 / (rate * 0.9) / 3600.0).max(0.5) * HOUR_MS as f64) as Millis,
        rate,
        incidents: true,
        max_events: Some(events),
        routines: false,
        family: Default::default(),
        latency_follows_load: 0.0,
    };
    eprintln!("loading {events} events into {stream} ...");
    let (load, _) = super::loader::load(client, &stream, sim.clone(), |_| {})?;
    report.events = load.events;
    report.load_events_per_s = load.events as f64 / load.seconds;
    let to = start + sim.duration;

    // (2) Raw read, then the worker end to end, over the same documents.
    let mut settings = base.clone();
    settings.names = IndexNames::with_prefix(&tag);
    settings.names.logs = stream.clone();
    // The raw read runs before and after, and the faster counts, so caches never favour the
    // worker.
    eprintln!("raw point-in-time read ...");
    let (n_raw, raw_s) = raw_read(client, &settings, start, to)?;
    eprintln!("end to end (read, score, write, checkpoint) ...");
    let stop = Arc::new(AtomicBool::new(false));
    let s = elasticsearch::backfill(client, &settings, PipelineConfig::default(), (start, to), true, stop, |_, _| {})?;
    eprintln!("raw point-in-time read again ...");
    let (n_raw2, raw_s2) = raw_read(client, &settings, start, to)?;
    report.raw_read_events_per_s = (n_raw as f64 / raw_s).max(n_raw2 as f64 / raw_s2);
    report.end_to_end_events_per_s = s.events as f64 / s.seconds;
    report.end_to_end_to_raw_read = report.end_to_end_events_per_s / report.raw_read_events_per_s;
    report.documents_written = s.writes.written;

    // (3) Live.
    if live_secs > 0 {
        report.live = Some(live(client, base, &tag, live_secs, live_rate)?);
    }
    Ok(report)
}

fn live(client: &EsClient, base: &WorkerSettings, tag: &str, secs: u64, target: f64) -> anyhow::Result<LiveReport> {
    let prefix = format!("{tag}-live");
    super::templates::setup(client, &IndexNames::with_prefix(&prefix))?;
    let stream = format!("logs-apiwatch.calls-{tag}_live");
    let now = chrono::Utc::now().timestamp_millis();
    let mut settings = base.clone();
    settings.names = IndexNames::with_prefix(&prefix);
    settings.names.logs = stream.clone();
    settings.poll_interval = Duration::from_secs(5);
    settings.ingest_delay = 5_000;
    settings.since = Some(now);
    settings.job = "live".into();
    let stop = Arc::new(AtomicBool::new(false));
    let written_until = Arc::new(AtomicI64::new(now));
    let worker = {
        let client = client.clone();
        let settings = settings.clone();
        let stop = stop.clone();
        let progress = Some(written_until.clone());
        std::thread::spawn(move || {
            elasticsearch::run(
                &client,
                &settings,
                PipelineConfig::default(),
                RunOptions {
                    once: false,
                    stop,
                    notifier: None,
                    now: None,
                    progress,
                    status: None,
                },
            )
        })
    };
    // Sample how far the written documents trail the wall clock while traffic flows.
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = {
        let sampling = sampling.clone();
        let written_until = written_until.clone();
        std::thread::spawn(move || {
            let mut lags = Vec::new();
            while sampling.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(250));
                let until = written_until.load(Ordering::Relaxed);
                lags.push((chrono::Utc::now().timestamp_millis() - until) as f64 / 1000.0);
            }
            lags
        })
    };
    // About 1.47 events per entry call in the bank topology, scaled by the simulator's
    // time-of-day load factor so the target holds at any hour.
    let sim = SimConfig {
        seed: 9,
        topology: "bank".into(),
        start: now,
        duration: secs as Millis * 1000,
        rate: target / 1.47 / crate::simulate::diurnal(now + secs as Millis * 500),
        incidents: false,
        max_events: None,
        routines: false,
        family: Default::default(),
        latency_follows_load: 0.0,
    };
    eprintln!("live: {secs} s of traffic at about {target:.0} events/s while the worker polls ...");
    let t = Instant::now();
    let (load, _) = super::loader::load_paced(client, &stream, sim, true, |_| {})?;
    let load_s = t.elapsed().as_secs_f64();
    let end = now + secs as Millis * 1000;
    let t2 = Instant::now();
    while written_until.load(Ordering::Relaxed) < end && t2.elapsed() < Duration::from_secs(300) {
        std::thread::sleep(Duration::from_millis(100));
    }
    let caught_up = t2.elapsed().as_secs_f64();
    sampling.store(false, Ordering::Relaxed);
    stop.store(true, Ordering::Relaxed);
    let mut lags = sampler.join().map_err(|_| anyhow::anyhow!("sampler panicked"))?;
    let summary = worker.join().map_err(|_| anyhow::anyhow!("worker panicked"))??;
    let delay = settings.ingest_delay as f64 / 1000.0;
    lags.iter_mut().for_each(|l| *l = (*l - delay).max(0.0));
    lags.sort_by(f64::total_cmp);
    let median = lags.get(lags.len() / 2).copied().unwrap_or(f64::NAN);
    let max = lags.last().copied().unwrap_or(f64::NAN);
    let poll = settings.poll_interval.as_secs_f64();
    Ok(LiveReport {
        seconds: load_s,
        target_events_per_s: target,
        ingested_events_per_s: load.events as f64 / load_s,
        scored_events: summary.events,
        poll_interval_s: poll,
        ingest_delay_s: delay,
        lag_median_s: median,
        lag_max_s: max,
        lag_max_polls: max / poll,
        caught_up_after_load_s: caught_up,
        late_scored: summary.late_scored,
        late_unscored: summary.late_unscored,
    })
}
