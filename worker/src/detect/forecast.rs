//! Forecasts: per service and metric (p95 latency, 5xx rate), a robust linear trend (Theil-Sen
//! over the last half hour) projected forward to the metric's limit. When the projection crosses
//! the limit within the horizon, and the rise is both consistent and already material, the
//! detector raises a `forecast` anomaly with the expected time of the breach, so someone can act
//! before users notice.
//!
//! The latency limit is [`LATENCY_LIMIT_FACTOR`] times a slow reference level (a long-memory
//! average that a gradual drift barely moves); the error-rate limit is [`ERROR_RATE_LIMIT`].

use rustc_hash::FxHashMap;

use super::stats::{median, median_in_place, Ring};
use super::{entity_label, fmt_ms, fmt_pct, Detector, Evicted, Finding, WindowContext};
use crate::model::anomaly::{Anomaly, AnomalyKind};
use crate::model::time::{format_hhmm, Millis, MINUTE_MS};
use crate::model::{EntityKind, WindowStat};

pub const LATENCY_LIMIT_FACTOR: f64 = 3.0;
pub const ERROR_RATE_LIMIT: f64 = 0.05;
/// Windows of trend looked at.
const TREND_WINDOWS: usize = 20;
/// Windows before the reference is trusted.
const REFERENCE_WINDOWS: usize = 20;
/// How far ahead a breach is announced.
const HORIZON_MIN: f64 = 90.0;

#[derive(serde::Serialize, serde::Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Metric {
    P95,
    Rate5xx,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Series {
    recent: Ring,
    reference: Option<f64>,
    warmup: Vec<f64>,
}

/// The trend forecaster.
#[derive(serde::Serialize, serde::Deserialize, Default)]
pub struct ForecastDetector {
    series: FxHashMap<(u32, Metric), Series>,
}

/// Theil-Sen slope (per step) and intercept at x = 0, and the share of pairwise slopes > 0.
pub fn theil_sen(ys: &[f64]) -> (f64, f64, f64) {
    let n = ys.len();
    let mut slopes = Vec::with_capacity(n * (n - 1) / 2);
    for i in 0..n {
        for j in i + 1..n {
            slopes.push((ys[j] - ys[i]) / (j - i) as f64);
        }
    }
    if slopes.is_empty() {
        return (0.0, ys.first().copied().unwrap_or(0.0), 0.0);
    }
    let positive = slopes.iter().filter(|&&s| s > 0.0).count() as f64 / slopes.len() as f64;
    let slope = median_in_place(&mut slopes);
    let mut resid: Vec<f64> = ys.iter().enumerate().map(|(i, y)| y - slope * i as f64).collect();
    let intercept = median_in_place(&mut resid);
    (slope, intercept, positive)
}

impl ForecastDetector {
    fn step(&mut self, st: &WindowStat, metric: Metric, w: &WindowContext<'_>, out: &mut Vec<Anomaly>) {
        if st.count < 10 {
            return;
        }
        let value = match metric {
            Metric::P95 if st.latencies.len() < 10 => return,
            Metric::P95 => st.p95_ms,
            Metric::Rate5xx => st.rate_5xx(),
        };
        let s = self.series.entry((st.entity, metric)).or_insert_with(|| Series {
            recent: Ring::new(TREND_WINDOWS),
            reference: None,
            warmup: Vec::new(),
        });
        s.recent.push(value);
        let Some(reference) = s.reference else {
            s.warmup.push(value);
            if s.warmup.len() >= REFERENCE_WINDOWS {
                s.reference = Some(median(&s.warmup));
                s.warmup = Vec::new();
            }
            return;
        };
        let (limit, floor) = match metric {
            Metric::P95 => (LATENCY_LIMIT_FACTOR * reference, 1.3 * reference),
            Metric::Rate5xx => (ERROR_RATE_LIMIT, (3.0 * reference).max(0.01)),
        };
        // The reference follows only values near it, with a memory of about half a day.
        if value < floor {
            let r = match metric {
                Metric::P95 => (reference.ln() + (value.max(1e-9).ln() - reference.ln()) / 720.0).exp(),
                Metric::Rate5xx => reference + (value - reference) / 720.0,
            };
            s.reference = Some(r);
        }
        if s.recent.len() < TREND_WINDOWS {
            return;
        }
        let ys = s.recent.ordered();
        let (slope_long, _, positive) = theil_sen(&ys);
        // A trend that just started (or accelerates) is underestimated by the long fit: take
        // the steeper of the long and the recent slope, the cautious choice when warning.
        let recent = &ys[ys.len() - TREND_WINDOWS / 2..];
        let (slope_recent, _, _) = theil_sen(recent);
        let slope = slope_long.max(slope_recent);
        let mut resid: Vec<f64> = recent
            .iter()
            .enumerate()
            .map(|(i, y)| y - slope * (i as f64 - (recent.len() - 1) as f64))
            .collect();
        let level = median_in_place(&mut resid);
        let recent_level = median(&ys[ys.len() - 5..]);
        if slope <= 0.0 || positive < 0.75 || level >= limit || recent_level < floor || level < floor {
            return;
        }
        let step_min = (w.end - w.start) as f64 / MINUTE_MS as f64;
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
        let mut f = Finding::new(
            AnomalyKind::Forecast,
            "forecast",
            st.key,
            (w.end - TREND_WINDOWS as Millis * (w.end - w.start), w.end),
        );
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
        f.reason = format!(
            "{kind_word} of {label} is rising by {rate} (now {now}, usually {usual}) and will cross its limit of {lim} at about {} (in {:.0} min)",
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
    }
    fn close_window(&mut self, w: &WindowContext<'_>, out: &mut Vec<Anomaly>) {
        for st in w.stats.iter().filter(|s| s.key.kind() == EntityKind::Service) {
            self.step(st, Metric::P95, w, out);
            self.step(st, Metric::Rate5xx, w, out);
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
        let (slope, intercept, pos) = theil_sen(&ys);
        assert!((slope - 2.0).abs() < 1e-9 && (intercept - 1.0).abs() < 1e-9 && pos > 0.9);
    }

    fn feed(values: &[f64]) -> Vec<(usize, Anomaly)> {
        let mut names = Interner::default();
        let key = EntityKey::Service {
            service: names.intern("ledger"),
            provider: names.intern("onprem"),
        };
        let mut d = ForecastDetector::default();
        let mut found = Vec::new();
        for (i, &p95) in values.iter().enumerate() {
            let t = i as Millis * 60_000;
            let st = WindowStat {
                entity: 0,
                key,
                start: t,
                end: t + 60_000,
                count: 100,
                errors_4xx: 0,
                errors_5xx: 0,
                p50_ms: p95 / 2.0,
                p95_ms: p95,
                p99_ms: p95,
                tail_ms: p95,
                latencies: crate::model::window::CallLatencies::of(&[(p95 / 2.0, 90), (p95, 10)]),
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
}
