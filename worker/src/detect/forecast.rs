//! Forecasts: per service and metric (p95 latency, 5xx rate), a robust linear trend (Theil-Sen
//! over the last [`TREND_POINTS`] points) projected forward to the metric's limit. When the
//! projection crosses the limit within the horizon, and the rise is both consistent and already
//! material, the detector raises a `forecast` anomaly with the expected time of the breach, so
//! someone can act before users notice.
//!
//! A point is one window where the service has at least [`POINT_CALLS`] calls; a quieter service's
//! consecutive windows are pooled until they hold that many (at most [`MAX_POOL_WINDOWS`]), so a
//! service with a few calls a minute is forecast on points of a few minutes each instead of never.
//! The trend is fitted against each point's time, so points of different lengths (night and
//! day) weigh as the time they cover.
//!
//! The latency limit is [`LATENCY_LIMIT_FACTOR`] times a slow reference level (a long-memory
//! average that a gradual drift barely moves); the error-rate limit is [`ERROR_RATE_LIMIT`].

use std::collections::VecDeque;

use rustc_hash::FxHashMap;

use super::stats::{median, median_in_place};
use super::{entity_label, fmt_ms, fmt_pct, Detector, Evicted, Finding, WindowContext};
use crate::model::anomaly::{Anomaly, AnomalyKind};
use crate::model::time::{format_hhmm, Millis, MINUTE_MS};
use crate::model::window::CallLatencies;
use crate::model::{EntityKind, WindowStat};

pub const LATENCY_LIMIT_FACTOR: f64 = 3.0;
pub const ERROR_RATE_LIMIT: f64 = 0.05;
/// Points of trend looked at.
const TREND_POINTS: usize = 20;
/// Points before the reference is trusted.
const REFERENCE_POINTS: usize = 20;
/// How far ahead a breach is announced.
const HORIZON_MIN: f64 = 90.0;
/// Calls (and timed calls, for latency) one point rests on: on fewer than 20 calls a p95 is the
/// slowest call, and a service whose windows hold 10-20 calls flips between its latency modes
/// from window to window (tried: 10, the old per-window minimum, raised twice the forecast false
/// alerts on the tuning seeds).
const POINT_CALLS: u64 = 20;
/// The most windows pooled into one point: a service quieter than [`POINT_CALLS`] in this many
/// windows is not forecast (its points would lag the trend they are meant to show).
const MAX_POOL_WINDOWS: i64 = 10;
/// The reference's memory, in windows (about half a day of one-minute windows).
const REFERENCE_MEMORY_WINDOWS: f64 = 720.0;

#[derive(serde::Serialize, serde::Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Metric {
    P95,
    Rate5xx,
}

/// One point of a series: the time it covers and its value.
#[derive(serde::Serialize, serde::Deserialize, Clone, Copy, Debug)]
struct Point {
    start: Millis,
    end: Millis,
    value: f64,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Series {
    /// The last [`TREND_POINTS`] points, oldest first. (A checkpoint from before points had
    /// times holds none: its trend restarts, its reference is kept.)
    #[serde(default)]
    points: VecDeque<Point>,
    reference: Option<f64>,
    warmup: Vec<f64>,
}

/// A service's calls since its last point.
#[derive(serde::Serialize, serde::Deserialize, Default)]
struct Pool {
    start: Millis,
    windows: u32,
    count: u64,
    errors_5xx: u64,
    latencies: CallLatencies,
}

/// The trend forecaster.
#[derive(serde::Serialize, serde::Deserialize, Default)]
pub struct ForecastDetector {
    series: FxHashMap<(u32, Metric), Series>,
    #[serde(default)]
    pools: FxHashMap<u32, Pool>,
}

/// Theil-Sen of `ys` against increasing `xs`: slope per unit of x, intercept at x = 0, and the
/// share of pairwise slopes > 0.
pub fn theil_sen_at(xs: &[f64], ys: &[f64]) -> (f64, f64, f64) {
    let n = ys.len().min(xs.len());
    let mut slopes = Vec::with_capacity(n * n.saturating_sub(1) / 2);
    for i in 0..n {
        for j in i + 1..n {
            if xs[j] > xs[i] {
                slopes.push((ys[j] - ys[i]) / (xs[j] - xs[i]));
            }
        }
    }
    if slopes.is_empty() {
        return (0.0, ys.first().copied().unwrap_or(0.0), 0.0);
    }
    let positive = slopes.iter().filter(|&&s| s > 0.0).count() as f64 / slopes.len() as f64;
    let slope = median_in_place(&mut slopes);
    let mut resid: Vec<f64> = (0..n).map(|i| ys[i] - slope * xs[i]).collect();
    let intercept = median_in_place(&mut resid);
    (slope, intercept, positive)
}

impl Pool {
    fn add(&mut self, st: &WindowStat) {
        if self.windows == 0 {
            self.start = st.start;
        }
        self.windows += 1;
        self.count += st.count;
        self.errors_5xx += st.errors_5xx;
        self.latencies.merge(&st.latencies);
    }
}

impl ForecastDetector {
    /// Adds a service's window to its pool, and steps its series when the pool holds a point.
    fn pool(&mut self, st: &WindowStat, w: &WindowContext<'_>, out: &mut Vec<Anomaly>) {
        if st.count == 0 {
            return;
        }
        let width = (w.end - w.start).max(1);
        let pool = self.pools.entry(st.entity).or_default();
        if pool.windows > 0 && st.start - pool.start >= MAX_POOL_WINDOWS * width {
            *pool = Pool::default();
        }
        pool.add(st);
        if pool.count < POINT_CALLS {
            return;
        }
        let pool = std::mem::take(pool);
        let span = Point {
            start: pool.start,
            end: st.end,
            value: 0.0,
        };
        if pool.latencies.len() >= POINT_CALLS {
            // A one-window pool's sketch is the window's own, so this is its p95.
            self.step(
                st,
                Metric::P95,
                Point {
                    value: pool.latencies.quantile(0.95),
                    ..span
                },
                w,
                out,
            );
        }
        let rate = pool.errors_5xx as f64 / pool.count as f64;
        self.step(st, Metric::Rate5xx, Point { value: rate, ..span }, w, out);
    }

    fn step(&mut self, st: &WindowStat, metric: Metric, point: Point, w: &WindowContext<'_>, out: &mut Vec<Anomaly>) {
        let width = (w.end - w.start).max(1) as f64;
        let value = point.value;
        let s = self.series.entry((st.entity, metric)).or_insert_with(|| Series {
            points: VecDeque::with_capacity(TREND_POINTS),
            reference: None,
            warmup: Vec::new(),
        });
        if s.points.len() == TREND_POINTS {
            s.points.pop_front();
        }
        s.points.push_back(point);
        let Some(reference) = s.reference else {
            s.warmup.push(value);
            if s.warmup.len() >= REFERENCE_POINTS {
                s.reference = Some(median(&s.warmup));
                s.warmup = Vec::new();
            }
            return;
        };
        let (limit, floor) = match metric {
            Metric::P95 => (LATENCY_LIMIT_FACTOR * reference, 1.3 * reference),
            Metric::Rate5xx => (ERROR_RATE_LIMIT, (3.0 * reference).max(0.01)),
        };
        // The reference follows only values near it, with a memory of about half a day (a
        // pooled point moves it as much as the windows it covers).
        if value < floor {
            let weight = ((point.end - point.start) as f64 / width).max(1.0) / REFERENCE_MEMORY_WINDOWS;
            let r = match metric {
                Metric::P95 => (reference.ln() + (value.max(1e-9).ln() - reference.ln()) * weight).exp(),
                Metric::Rate5xx => reference + (value - reference) * weight,
            };
            s.reference = Some(r);
        }
        if s.points.len() < TREND_POINTS {
            return;
        }
        // x in windows since the oldest point's end: whole numbers for one-window points.
        let first = s.points[0];
        let xs: Vec<f64> = s.points.iter().map(|p| (p.end - first.end) as f64 / width).collect();
        let ys: Vec<f64> = s.points.iter().map(|p| p.value).collect();
        let (slope_long, _, positive) = theil_sen_at(&xs, &ys);
        // A trend that just started (or accelerates) is underestimated by the long fit: take
        // the steeper of the long and the recent slope, the cautious choice when warning.
        let half = ys.len() - TREND_POINTS / 2;
        let (recent_x, recent) = (&xs[half..], &ys[half..]);
        let (slope_recent, _, _) = theil_sen_at(recent_x, recent);
        let slope = slope_long.max(slope_recent);
        let last_x = xs[xs.len() - 1];
        let mut resid: Vec<f64> = recent.iter().zip(recent_x).map(|(y, x)| y - slope * (x - last_x)).collect();
        let level = median_in_place(&mut resid);
        let recent_level = median(&ys[ys.len() - 5..]);
        if slope <= 0.0 || positive < 0.75 || level >= limit || recent_level < floor || level < floor {
            return;
        }
        let step_min = width / MINUTE_MS as f64;
        let eta_min = (limit - level) / slope * step_min;
        if eta_min > HORIZON_MIN {
            return;
        }
        let eta = w.end + (eta_min * MINUTE_MS as f64) as Millis;
        let label = entity_label(w.names, &st.key);
        let (kind_word, now, usual, lim, rate) = match metric {
            Metric::P95 => (
                "p95 latency",
                fmt_ms(level),
                fmt_ms(reference),
                fmt_ms(limit),
                format!("{}/min", fmt_ms(slope / step_min)),
            ),
            Metric::Rate5xx => (
                "5xx rate",
                fmt_pct(level),
                fmt_pct(reference),
                fmt_pct(limit),
                format!("{} points/min", fmt_pct(slope / step_min)),
            ),
        };
        let mut f = Finding::new(AnomalyKind::Forecast, "forecast", st.key, (first.start, w.end));
        f.score = if eta_min <= 15.0 {
            80.0
        } else if eta_min <= 30.0 {
            68.0
        } else if eta_min <= 60.0 {
            55.0
        } else {
            45.0
        };
        f.metric = match metric {
            Metric::P95 => "latency.p95",
            Metric::Rate5xx => "errors.5xx_rate",
        };
        f.actual = Some(level);
        f.expected = Some(reference);
        f.eta = Some(eta);
        let pooled_min = (w.end - first.start) as f64 / TREND_POINTS as f64 / MINUTE_MS as f64;
        let pooled = if pooled_min >= 1.5 * step_min {
            format!(" (quiet: each point pools about {pooled_min:.0} min of calls)")
        } else {
            String::new()
        };
        f.reason = format!(
            "{kind_word} of {label} is rising by {rate} (now {now}, usually {usual}) and will cross its limit of {lim} at about {} (in {:.0} min){pooled}",
            format_hhmm(eta),
            eta_min
        );
        f.sole_contributor(level, limit);
        f.impact_of(st);
        out.push(f.into_anomaly(w.names));
    }
}

impl Detector for ForecastDetector {
    fn name(&self) -> &'static str {
        "forecast"
    }

    fn forget(&mut self, evicted: &Evicted) {
        self.series.retain(|(id, _), _| !evicted.id(*id));
        self.pools.retain(|id, _| !evicted.id(*id));
    }
    fn close_window(&mut self, w: &WindowContext<'_>, out: &mut Vec<Anomaly>) {
        for st in w.stats.iter().filter(|s| s.key.kind() == EntityKind::Service) {
            self.pool(st, w, out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{EntityKey, Interner};

    #[test]
    fn theil_sen_ignores_an_outlier() {
        let mut ys: Vec<f64> = (0..20).map(|i| 2.0 * i as f64 + 1.0).collect();
        ys[10] = 500.0;
        let xs: Vec<f64> = (0..ys.len()).map(|i| i as f64).collect();
        let (slope, intercept, pos) = theil_sen_at(&xs, &ys);
        assert!((slope - 2.0).abs() < 1e-9 && (intercept - 1.0).abs() < 1e-9 && pos > 0.9);
    }

    fn feed(values: &[f64]) -> Vec<(usize, Anomaly)> {
        let windows: Vec<Vec<f64>> = values
            .iter()
            .map(|&p95| {
                let mut calls = vec![p95 / 2.0; 90];
                calls.extend([p95; 10]);
                calls
            })
            .collect();
        feed_calls(&windows)
    }

    /// One window per entry, holding those calls' latencies.
    fn feed_calls(windows: &[Vec<f64>]) -> Vec<(usize, Anomaly)> {
        let mut names = Interner::default();
        let key = EntityKey::Service {
            service: names.intern("ledger"),
            provider: names.intern("onprem"),
        };
        let mut d = ForecastDetector::default();
        let mut found = Vec::new();
        for (i, calls) in windows.iter().enumerate() {
            let t = i as Millis * 60_000;
            let latencies = crate::model::window::CallLatencies::of(&calls.iter().map(|&v| (v, 1)).collect::<Vec<_>>());
            let st = WindowStat {
                entity: 0,
                key,
                start: t,
                end: t + 60_000,
                count: calls.len() as u64,
                errors_4xx: 0,
                errors_5xx: 0,
                p50_ms: latencies.quantile(0.5),
                p95_ms: latencies.quantile(0.95),
                p99_ms: latencies.quantile(0.99),
                tail_ms: latencies.quantile(0.95),
                latencies,
                mean_request_bytes: 0.0,
                mean_response_bytes: 0.0,
                users: 10,
                example_traces: vec![],
            };
            let out = crate::detect::testing::close_one(&mut d, &names, st);
            found.extend(out.into_iter().map(|a| (i, a)));
        }
        found
    }

    /// `per_min` calls a minute around `level(minute)` ms, log-normally spread (sd 0.3), from a
    /// fixed pseudo-random sequence.
    fn sparse(minutes: usize, per_min: usize, level: impl Fn(usize) -> f64) -> Vec<Vec<f64>> {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut uniform = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 11) as f64 / (1u64 << 53) as f64
        };
        (0..minutes)
            .map(|m| {
                (0..per_min)
                    .map(|_| {
                        // Sum of 12 uniforms: about normal, mean 6, sd 1.
                        let z: f64 = (0..12).map(|_| uniform()).sum::<f64>() - 6.0;
                        level(m) * (0.3 * z).exp()
                    })
                    .collect()
            })
            .collect()
    }

    #[test]
    fn a_ramp_is_predicted_before_it_breaches() {
        // 60 flat minutes at 100 ms, then +4 ms/min: crosses 300 ms at minute 110.
        let values: Vec<f64> = (0..110)
            .map(|i| {
                if i < 60 {
                    100.0 + (i % 4) as f64
                } else {
                    100.0 + 4.0 * (i - 60) as f64
                }
            })
            .collect();
        let found = feed(&values);
        let (first, a) = found.first().expect("a forecast");
        assert!(*first <= 90, "raised at minute {first}, breach at 110");
        assert_eq!(a.kind, AnomalyKind::Forecast);
        // The predicted time to breach is close to the true one.
        let eta_min = (a.eta.unwrap() - (*first as Millis + 1) * 60_000) as f64 / 60_000.0;
        let truth = 110.0 - (*first as f64 + 1.0);
        assert!((eta_min - truth).abs() <= 0.5 * truth, "eta in {eta_min} min, truly {truth}");
    }

    #[test]
    fn a_flat_noisy_series_predicts_nothing() {
        let values: Vec<f64> = (0..300).map(|i| 100.0 + ((i * 37) % 23) as f64).collect();
        assert!(feed(&values).is_empty());
    }

    #[test]
    fn a_quiet_service_s_ramp_is_predicted_from_pooled_windows() {
        // Three calls a minute: flat at 100 ms for four hours, then +1.5 ms/min. Its p95 (about
        // 1.6x the level) crosses 3x the usual p95 when the level reaches 300 ms, near minute 373.
        let windows = sparse(380, 3, |m| if m < 240 { 100.0 } else { 100.0 + 1.5 * (m - 240) as f64 });
        let found = feed_calls(&windows);
        let (first, a) = found.first().expect("a forecast on pooled windows");
        assert!(*first >= 240, "forecast at minute {first}, before the ramp began");
        assert!(*first <= 350, "forecast at minute {first}, breach near 373");
        assert!(a.reason.contains("pools"), "{}", a.reason);
    }

    #[test]
    fn a_quiet_flat_service_predicts_nothing() {
        for per_min in [1, 3, 7] {
            let found = feed_calls(&sparse(1440, per_min, |_| 100.0));
            assert!(
                found.is_empty(),
                "{per_min} calls a minute: {:?}",
                found.first().map(|(i, a)| (i, &a.reason))
            );
        }
    }
}
