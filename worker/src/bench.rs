//! Measurements that need no test harness: `detect` throughput and peak memory against a peer
//! (reading and parsing the same file with no detection: the limit any detector can approach),
//! and the isolation forest on a CSV table, for side-by-side runs with scikit-learn.

use std::io::BufRead;
use std::path::Path;
use std::time::Instant;

use anyhow::Context;
use ndarray::Array2;

use crate::detect::iforest::{roc_auc, ForestParams, IsolationForest};
use crate::source::{EventSource, LineSource};

/// Peak resident memory of this process so far, in MiB (Linux).
pub fn peak_rss_mib() -> Option<f64> {
    status_mib("VmHWM:")
}

/// Current resident memory of this process, in MiB (Linux).
fn rss_mib() -> Option<f64> {
    status_mib("VmRSS:")
}

/// A memory line of `/proc/self/status` (given in kB), in MiB.
fn status_mib(key: &str) -> Option<f64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with(key))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// CPU seconds this process has used (user + system), from `/proc/self/stat` (Linux).
pub fn cpu_seconds() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which may hold spaces) start after its `)`.
    let rest = s.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let (utime, stime): (f64, f64) = (f.get(11)?.parse().ok()?, f.get(12)?.parse().ok()?);
    // USER_HZ is 100 on every Linux architecture apiwatch builds for.
    Some((utime + stime) / 100.0)
}

/// Reads and parses every event of `path` and does nothing else; returns (events, seconds).
pub fn parse_only(path: &Path) -> anyhow::Result<(u64, f64)> {
    parse_only_as(path, &crate::source::InputFormat::default()).map(|(n, s, _)| (n, s))
}

/// [`parse_only`] in a given format; returns (events, seconds, CPU seconds).
pub fn parse_only_as(path: &Path, format: &crate::source::InputFormat) -> anyhow::Result<(u64, f64, f64)> {
    let cpu = cpu_seconds().unwrap_or(0.0);
    let t = Instant::now();
    let mut src = LineSource::new(vec![path.to_owned()]).with_format(format.clone())?;
    let mut batch = Vec::with_capacity(4096);
    let mut n = 0u64;
    loop {
        batch.clear();
        let more = src.next_batch(&mut batch, 4096)?;
        n += batch.len() as u64;
        if !more {
            break;
        }
    }
    Ok((n, t.elapsed().as_secs_f64(), cpu_seconds().unwrap_or(0.0) - cpu))
}

/// Parsing throughput of one format beside the ECS JSON reader's, on the same calls.
#[derive(serde::Serialize)]
pub struct FormatBench {
    pub format: &'static str,
    pub events: u64,
    pub bytes_per_event: f64,
    /// Medians over the repeats.
    pub events_per_cpu_s: f64,
    pub json_events_per_cpu_s: f64,
    pub ratio_to_json: f64,
}

/// Writes `events` simulated calls in every format and parses each, alternating with the JSON
/// reader on the same calls `repeats` times (medians: this machine's noise is about 15%).
pub fn formats(events: u64, repeats: usize, mut progress: impl FnMut(&str)) -> anyhow::Result<Vec<FormatBench>> {
    use crate::source::formats::{write, LogFormat};
    use crate::source::InputFormat;
    let sim = crate::simulate::SimConfig {
        seed: 11,
        duration: 48 * crate::model::time::HOUR_MS,
        max_events: Some(events),
        ..Default::default()
    };
    let (calls, _) = crate::simulate::simulate_events(sim)?;
    let dir = tempfile_dir()?;
    let write_as = |format: LogFormat| -> anyhow::Result<(std::path::PathBuf, u64)> {
        let path = dir.join(format!("{}.log", format.name()));
        let mut w = std::io::BufWriter::new(std::fs::File::create(&path)?);
        for e in &calls {
            std::io::Write::write_all(&mut w, write::line(e, format).as_bytes())?;
            std::io::Write::write_all(&mut w, b"\n")?;
        }
        std::io::Write::flush(&mut w)?;
        let bytes = std::fs::metadata(&path)?.len();
        Ok((path, bytes))
    };
    let (json_path, _) = write_as(LogFormat::Json)?;
    let settings = |format| InputFormat {
        format,
        provider: Some("onprem".into()),
        ..InputFormat::default()
    };
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let mut out = Vec::new();
    for format in LogFormat::ALL.into_iter().skip(1) {
        progress(format.name());
        let (path, bytes) = write_as(format)?;
        let (mut mine, mut peer) = (Vec::new(), Vec::new());
        let mut n = 0;
        for _ in 0..repeats.max(1) {
            let (k, _, cpu) = parse_only_as(&path, &settings(format))?;
            let (j, _, jcpu) = parse_only_as(&json_path, &settings(LogFormat::Json))?;
            n = k;
            mine.push(k as f64 / cpu.max(1e-3));
            peer.push(j as f64 / jcpu.max(1e-3));
        }
        let (r, p) = (median(mine), median(peer));
        out.push(FormatBench {
            format: format.name(),
            events: n,
            bytes_per_event: rounded(bytes as f64 / calls.len().max(1) as f64, 1),
            events_per_cpu_s: r.round(),
            json_events_per_cpu_s: p.round(),
            ratio_to_json: rounded(r / p, 3),
        });
        if format != LogFormat::Json {
            let _ = std::fs::remove_file(&path);
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(out)
}

fn tempfile_dir() -> anyhow::Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("apiwatch-bench-formats-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    Ok(dir)
}

/// `detect` on a file beside its parse-only peer, in the same process (`apiwatch bench`).
#[derive(serde::Serialize)]
pub struct DetectBench {
    pub file: String,
    pub events: u64,
    pub detect_s: f64,
    pub detect_events_per_s: f64,
    pub parse_only_events_per_s: f64,
    pub ratio_to_parse_only: f64,
    pub peak_rss_mib: f64,
    pub parse_only_peak_rss_mib: f64,
    pub anomalies: u64,
}

/// Measures the parse-only peer, then file-mode detection, on `path`.
pub fn detect_vs_parse_only(path: &Path, setup: crate::pipeline::PipelineSetup) -> anyhow::Result<DetectBench> {
    let (n_peer, peer_s) = parse_only(path)?;
    let rss_after_peer = peak_rss_mib();
    let out = std::env::temp_dir().join(format!("apiwatch-bench-{}", std::process::id()));
    let started = Instant::now();
    let run = crate::job::files::detect_files(&[path.to_owned()], &out, setup, Vec::new(), |_| {})?;
    let secs = started.elapsed().as_secs_f64();
    let _ = std::fs::remove_dir_all(&out);
    let rate = run.stats.events as f64 / secs;
    let peer_rate = n_peer as f64 / peer_s;
    Ok(DetectBench {
        file: path.display().to_string(),
        events: run.stats.events,
        detect_s: rounded(secs, 3),
        detect_events_per_s: rate.round(),
        parse_only_events_per_s: peer_rate.round(),
        ratio_to_parse_only: rounded(rate / peer_rate, 3),
        peak_rss_mib: rounded(peak_rss_mib().unwrap_or(0.0), 1),
        parse_only_peak_rss_mib: rounded(rss_after_peer.unwrap_or(0.0), 1),
        anomalies: run.stats.anomalies,
    })
}

/// What one partition's learned state costs per entity, and what idle eviction gives back.
#[derive(serde::Serialize)]
pub struct EntityMemory {
    pub services: usize,
    pub routes_per_service: usize,
    /// Entities followed after the load phase (services + routes).
    pub entities: usize,
    /// Entity-metrics: one per metric the baseline judges on each entity (5 per service, 4 per
    /// route), the unit a per-metric figure divides by.
    pub entity_metrics: usize,
    pub windows: u64,
    pub events: u64,
    pub events_per_cpu_s: f64,
    /// Resident memory added by the pipeline (after minus before), per entity and per
    /// entity-metric.
    pub rss_added_mib: f64,
    pub rss_bytes_per_entity: f64,
    pub rss_bytes_per_entity_metric: f64,
    /// The checkpointed state (what a checkpoint writes), per entity.
    pub state_bytes: usize,
    pub state_bytes_per_entity: f64,
    /// After `idle_hours` of traffic on one service in a hundred, with eviction after
    /// `evict_after_hours`: entities evicted, entities left, state left.
    pub idle_hours: i64,
    pub evict_after_hours: i64,
    pub evicted: u64,
    pub entities_after_eviction: usize,
    pub state_bytes_after_eviction: usize,
    pub rss_after_eviction_mib: f64,
}

/// Loads one pipeline with about `entities` entities (services of 100 routes each, ten calls
/// per route and window for `windows` windows: enough calls for every route's rates and
/// quantiles to be judged, every series past its warm-up), measures its
/// memory and state, then lets all but one service in a hundred fall idle past the eviction
/// time and measures again.
pub fn entity_memory(
    entities: usize,
    windows: u64,
    mut setup: crate::pipeline::PipelineSetup,
    mut progress: impl FnMut(&str),
) -> anyhow::Result<EntityMemory> {
    use crate::model::time::{HOUR_MS, MINUTE_MS};
    use crate::model::Event;
    const ROUTES: usize = 100;
    const CALLS: usize = 10;
    const EVICT_AFTER: i64 = 2;
    const IDLE: i64 = 4;
    let services = (entities / (ROUTES + 1)).max(1);
    let cfg = &mut setup.cfg;
    cfg.window = MINUTE_MS;
    cfg.evict_idle_after = EVICT_AFTER * HOUR_MS;
    cfg.limits.max_services = cfg.limits.max_services.max(services + 1);
    let service_names: Vec<String> = (0..services).map(|s| format!("svc-{s:05}")).collect();
    let paths: Vec<String> = (0..ROUTES).map(|r| format!("/a{}/b{}", r / 10, r % 10)).collect();
    let event = |s: usize, r: usize, t: i64| Event {
        timestamp: t,
        service: service_names[s].as_str().into(),
        provider: "onprem".into(),
        method: "GET".into(),
        path: paths[r].as_str().into(),
        status: if (s + r + t as usize / 60_000) % 97 == 0 { 503 } else { 200 },
        duration_ns: Some(((10 + (s * 7 + r * 13) % 90) as u64 + (t as u64 / 60_000) % 5) * 1_000_000),
        request_bytes: Some(200),
        response_bytes: Some(1000 + r as u64),
        ..Default::default()
    };
    let rss_before = rss_mib().unwrap_or(0.0);
    let mut p = crate::pipeline::Pipeline::new(setup)?;
    let mut sink = crate::sink::CountingSink::default();
    let cpu = cpu_seconds().unwrap_or(0.0);
    let mut events = 0u64;
    let start = 1_767_225_600_000; // 2026-01-01T00:00:00Z, on the hour
    for w in 0..windows as i64 {
        let t0 = start + w * MINUTE_MS;
        // In time order, spread over the window (out-of-order input is the reorder buffer's
        // cost, measured elsewhere).
        let per_window = (CALLS * services * ROUTES) as i64;
        for k in 0..per_window {
            let (s, r) = ((k as usize / ROUTES) % services, k as usize % ROUTES);
            p.push(event(s, r, t0 + k * MINUTE_MS / per_window), &mut sink)?;
            events += 1;
        }
        progress(&format!("loading: window {}/{windows}", w + 1));
    }
    let end = start + windows as i64 * MINUTE_MS;
    p.advance_to(end, &mut sink)?;
    let cpu_s = cpu_seconds().unwrap_or(0.0) - cpu;
    let rss_loaded = rss_mib().unwrap_or(0.0);
    let followed = p.entity_count();
    let entity_metrics = p
        .entities()
        .map(|k| crate::detect::baseline::metrics_per_entity(k.kind()))
        .sum::<usize>();
    let state_bytes = p.save_state()?.len();
    // Idle phase: one service in a hundred keeps calling.
    for w in 0..IDLE * 60 {
        let t0 = end + w * MINUTE_MS;
        for r in 0..ROUTES {
            for s in (0..services).step_by(100) {
                p.push(event(s, r, t0 + (r * 500) as i64), &mut sink)?;
            }
        }
        if w % 10 == 0 {
            progress(&format!("idle: minute {w}/{}", IDLE * 60));
        }
    }
    p.advance_to(end + IDLE * HOUR_MS, &mut sink)?;
    let state_after = p.save_state()?.len();
    let added = rss_loaded - rss_before;
    let mib = 1024.0 * 1024.0;
    Ok(EntityMemory {
        services,
        routes_per_service: ROUTES,
        entities: followed,
        entity_metrics,
        windows,
        events,
        events_per_cpu_s: (events as f64 / cpu_s.max(1e-9)).round(),
        rss_added_mib: rounded(added, 1),
        rss_bytes_per_entity: (added * mib / followed.max(1) as f64).round(),
        rss_bytes_per_entity_metric: (added * mib / entity_metrics.max(1) as f64).round(),
        state_bytes,
        state_bytes_per_entity: (state_bytes as f64 / followed.max(1) as f64).round(),
        idle_hours: IDLE,
        evict_after_hours: EVICT_AFTER,
        evicted: p.stats.evicted_entities,
        entities_after_eviction: p.entity_count(),
        state_bytes_after_eviction: state_after,
        rss_after_eviction_mib: rounded(rss_mib().unwrap_or(0.0), 1),
    })
}

/// `x` to `decimals` places, for reports read by people.
fn rounded(x: f64, decimals: i32) -> f64 {
    let scale = 10f64.powi(decimals);
    (x * scale).round() / scale
}

/// A numeric CSV whose last column is the 0/1 label; a header line is skipped.
pub fn read_labelled_csv(path: &Path) -> anyhow::Result<(Array2<f64>, Vec<bool>)> {
    let rows = read_csv_rows(path)?;
    let nc = rows.first().map_or(0, Vec::len);
    anyhow::ensure!(nc >= 2, "{}: needs feature columns and a label column", path.display());
    let data = Array2::from_shape_fn((rows.len(), nc - 1), |(i, j)| rows[i][j]);
    let labels = rows.iter().map(|r| r[nc - 1] > 0.5).collect();
    Ok((data, labels))
}

/// A CSV of numbers (an optional header line is skipped), every row as long as the first.
pub fn read_csv(path: &Path) -> anyhow::Result<Array2<f64>> {
    let rows = read_csv_rows(path)?;
    let nc = rows.first().map_or(0, Vec::len);
    anyhow::ensure!(nc >= 1, "{}: no rows", path.display());
    Ok(Array2::from_shape_fn((rows.len(), nc), |(i, j)| rows[i][j]))
}

fn read_csv_rows(path: &Path) -> anyhow::Result<Vec<Vec<f64>>> {
    let f = std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut rows: Vec<Vec<f64>> = Vec::new();
    for (i, line) in std::io::BufReader::new(f).lines().enumerate() {
        let line = line?;
        let vals: Result<Vec<f64>, _> = line.split(',').map(|x| x.trim().parse::<f64>()).collect();
        match vals {
            Ok(v) if !v.is_empty() => rows.push(v),
            _ if i == 0 => continue,
            _ => anyhow::bail!("{}:{}: not a row of numbers", path.display(), i + 1),
        }
        if rows.len() > 1 && rows[rows.len() - 1].len() != rows[0].len() {
            anyhow::bail!(
                "{}:{}: {} columns, the first row has {}",
                path.display(),
                i + 1,
                rows[rows.len() - 1].len(),
                rows[0].len()
            );
        }
    }
    Ok(rows)
}

#[derive(Debug, serde::Serialize)]
pub struct ForestBench {
    pub rows: usize,
    pub features: usize,
    pub auc: f64,
    pub fit_s: f64,
    pub score_s: f64,
}

/// Fits on all rows and scores all rows (unsupervised), timing each step; AUC over seeds' mean.
pub fn forest_bench(data: &Array2<f64>, labels: &[bool], params: ForestParams, repeats: usize) -> ForestBench {
    let (mut auc, mut fit_s, mut score_s) = (0.0, 0.0, 0.0);
    for r in 0..repeats.max(1) {
        let p = ForestParams {
            seed: params.seed + r as u64,
            ..params
        };
        let t = Instant::now();
        let f = IsolationForest::fit(data.view(), p);
        fit_s += t.elapsed().as_secs_f64();
        let t = Instant::now();
        let s = f.score_rows(data.view());
        score_s += t.elapsed().as_secs_f64();
        auc += roc_auc(&s, labels);
    }
    let k = repeats.max(1) as f64;
    ForestBench {
        rows: data.nrows(),
        features: data.ncols(),
        auc: auc / k,
        fit_s: fit_s / k,
        score_s: score_s / k,
    }
}
