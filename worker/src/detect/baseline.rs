//! Robust statistical baselines per entity and metric. Each series keeps its recent values; a new
//! window is compared with their median and MAD (log scale for latency and payload sizes), with a
//! binomial test for error rates and a Poisson-style test for call counts. It starts scoring after
//! [`MIN_HISTORY`] windows with a wider tolerance that narrows as history grows (useful within the
//! first minutes of a new entity). Once a series has a day of history, a time-of-day profile shifts
//! the expectation by the usual change between the recent past and this hour.
//! Anomalous values enter the history clamped, so an incident does not teach itself as normal.
//! A service's mean response size mixes its routes': a window it deviates in is not reported when
//! what its routes usually answer, weighted by this window's calls to each, explains it.

use rustc_hash::FxHashMap;

use super::stats::{median_mad, score_from_z, share_evidence, Ring, WINDOW_EVIDENCE};
use super::{entity_label, fmt_bytes, fmt_ms, fmt_pct, Detector, Evicted, Finding, WindowContext};
use crate::model::anomaly::{Anomaly, AnomalyKind};
use crate::model::time::{Millis, DAY_MS, HOUR_MS};
use crate::model::window::tail_quantile;
use crate::model::{EntityKey, EntityKind, Sym, WindowStat};

/// Windows of history before a series is scored.
pub const MIN_HISTORY: usize = 5;
/// Windows of history kept.
const HISTORY: usize = 45;
/// Minimum calls in a window for its quantiles and rates to mean something.
const MIN_CALLS: u64 = 8;
/// A route's payload sizes need fewer too: one route's sizes vary little call to call, and the
/// history the window is judged against is of windows as small (their spread widens the
/// tolerance), so on a route with a few calls a minute a response several times its usual
/// size is seen. A service's mean mixes its routes, and a few calls are a few routes: it keeps
/// [`MIN_CALLS`].
const MIN_ROUTE_PAYLOAD_CALLS: u64 = 3;
/// Latency needs fewer: its tail rests on at least three calls and is flagged only when enough
/// calls pass the usual single-call p95 ([`CallQuantile::evidence`]); four of four is e^-12.
pub(crate) const MIN_LATENCY_CALLS: u64 = crate::model::window::TAIL_CALLS + 1;

#[derive(serde::Serialize, serde::Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Metric {
    Count,
    Rate5xx,
    Rate4xx,
    P95,
    RespBytes,
    ReqBytes,
}

impl Metric {
    fn name(self) -> &'static str {
        match self {
            Metric::Count => "calls",
            Metric::Rate5xx => "errors.5xx_rate",
            Metric::Rate4xx => "errors.4xx_rate",
            Metric::P95 => "latency.p95",
            Metric::RespBytes => "payload.response_bytes",
            Metric::ReqBytes => "payload.request_bytes",
        }
    }
    fn for_kind(kind: EntityKind) -> &'static [Metric] {
        match kind {
            EntityKind::Service => &[Metric::Count, Metric::Rate5xx, Metric::Rate4xx, Metric::P95, Metric::RespBytes],
            EntityKind::Route => &[Metric::Rate5xx, Metric::P95, Metric::RespBytes, Metric::ReqBytes],
            EntityKind::Hop => &[Metric::Rate5xx, Metric::P95],
        }
    }
}

/// Hourly profile of a series' level (log scale), learned as the days pass.
#[derive(serde::Serialize, serde::Deserialize, Clone, Debug)]
struct DayProfile {
    slots: [f64; 24],
    seen: [u32; 24],
}

impl DayProfile {
    fn update(&mut self, t: Millis, v: f64) {
        let h = (t.rem_euclid(DAY_MS) / HOUR_MS) as usize;
        self.seen[h] += 1;
        let a = (1.0 / f64::from(self.seen[h])).max(0.05);
        self.slots[h] += a * (v - self.slots[h]);
    }
    /// Profile level at `t`, interpolated between hour centres.
    fn at(&self, t: Millis) -> f64 {
        let h = (t.rem_euclid(DAY_MS) as f64 / HOUR_MS as f64) - 0.5;
        let h0 = h.floor().rem_euclid(24.0) as usize;
        let h1 = (h0 + 1) % 24;
        let f = h - h.floor();
        self.slots[h0] * (1.0 - f) + self.slots[h1] * f
    }
}

#[derive(serde::Serialize, serde::Deserialize, Clone, Debug)]
struct Series {
    history: Ring,
    first: Millis,
    profile: DayProfile,
    /// Latency only: the usual 95th percentile of single calls (log ms), tracked from how many
    /// calls of each window pass it (see [`CallQuantile`]).
    #[serde(default)]
    per_call: Option<f64>,
}

/// Tracks the usual 95th percentile of single calls, whatever the window sizes: each window
/// moves the estimate up when more than 5% of its calls passed it and down when fewer did, by
/// a step that grows with the window's calls (stochastic approximation). A window's p95 cannot
/// do this: on ten calls it is the second slowest call, and on a service with two latency modes
/// it jumps between them from one minute to the next.
struct CallQuantile;

impl CallQuantile {
    const Q: f64 = 0.95;
    /// Largest step, in log ms, of a window with [`CallQuantile::FULL_STEP_CALLS`] calls or more.
    const STEP: f64 = 0.05;
    const FULL_STEP_CALLS: f64 = 20.0;

    fn update(per_call: &mut Option<f64>, st: &WindowStat) {
        let n = st.latencies.len();
        if n == 0 {
            return;
        }
        let Some(t) = per_call else {
            *per_call = Some(st.p95_ms.max(1e-6).ln());
            return;
        };
        let tail = 1.0 - Self::Q;
        let passed = st.latencies.above(t.exp()) as f64 / n as f64;
        let weight = (n as f64 / Self::FULL_STEP_CALLS).min(1.0);
        *t += (Self::STEP * weight * (passed - tail) / tail).clamp(-0.5, 0.5);
    }

    /// How strongly `passed` of `n` calls over the usual 95th percentile say the tail moved
    /// (see [`share_evidence`]).
    fn evidence(passed: u64, n: u64) -> f64 {
        share_evidence(passed, n, 1.0 - Self::Q)
    }
}

impl Series {
    fn new(t: Millis) -> Self {
        Series {
            history: Ring::new(HISTORY),
            first: t,
            profile: DayProfile {
                slots: [0.0; 24],
                seen: [0; 24],
            },
            per_call: None,
        }
    }
    /// Seasonal shift (log scale) between the centre of the recent history and `t`.
    fn seasonal_shift(&self, t: Millis, width: Millis) -> f64 {
        if t - self.first < DAY_MS || self.profile.seen.contains(&0) {
            return 0.0;
        }
        let centre = t - width * self.history.len() as Millis / 2;
        (self.profile.at(t) - self.profile.at(centre)).clamp(-0.7, 0.7)
    }
}

/// How many metrics the baseline judges per entity of a kind (a series each).
pub fn metrics_per_entity(kind: EntityKind) -> usize {
    Metric::for_kind(kind).len()
}

/// The statistical baseline detector.
#[derive(serde::Serialize, serde::Deserialize, Default)]
pub struct BaselineDetector {
    series: FxHashMap<(u32, Metric), Series>,
}

struct Verdict {
    z: f64,
    actual: f64,
    expected: f64,
    /// The value to remember (clamped when anomalous).
    remember: f64,
    flagged: bool,
}

fn log_metric(series: &Series, x: f64, shift: f64, min_ratio: f64, both_ways: bool) -> Option<Verdict> {
    let h = series.history.values();
    let (m, s) = median_mad(h);
    let m = m + shift;
    let sigma = s.max(0.08) * (1.0 + 4.0 / h.len() as f64);
    let lx = x.max(1e-9).ln();
    let z = (lx - m) / sigma;
    let ratio = (lx - m).exp();
    let up = z >= 4.5 && ratio >= min_ratio;
    let down = both_ways && z <= -4.5 && ratio <= 1.0 / min_ratio;
    let remember = lx.clamp(m - 3.0 * sigma, m + 3.0 * sigma) - shift;
    Some(Verdict {
        z: z.abs(),
        actual: x,
        expected: m.exp(),
        remember,
        flagged: up || down,
    })
}

fn rate_metric(series: &Series, k: u64, n: u64) -> Option<Verdict> {
    let h = series.history.values();
    let p0 = (h.iter().sum::<f64>() / h.len() as f64).max(0.002);
    let n_f = n as f64;
    let rate = k as f64 / n_f;
    let sd = (n_f * p0 * (1.0 - p0)).sqrt().max(1e-9);
    let z = (k as f64 - n_f * p0) / sd;
    // Small counts make the normal approximation generous: ask for several failures, a clear
    // multiple of the usual rate, and a material absolute rise.
    let flagged = z >= 6.0 && k >= 6 && rate >= 4.0 * p0 && rate - p0 >= 0.03;
    let remember = rate.min(p0 + 3.0 * (p0 * (1.0 - p0) / n_f).sqrt());
    Some(Verdict {
        z,
        actual: rate,
        expected: p0,
        remember,
        flagged,
    })
}

fn count_metric(series: &Series, k: u64, shift: f64) -> Option<Verdict> {
    let h = series.history.values();
    let (m, s) = median_mad(h);
    let lambda = m * shift.exp();
    if lambda < 20.0 {
        return Some(Verdict {
            z: 0.0,
            actual: k as f64,
            expected: lambda,
            remember: k as f64,
            flagged: false,
        });
    }
    let sigma = lambda.sqrt().max(s) * (1.0 + 4.0 / h.len() as f64);
    let k_f = k as f64;
    let z = (k_f - lambda) / sigma;
    let drop = k_f <= 0.5 * lambda && z <= -5.0;
    let spike = k_f >= 3.0 * lambda && z >= 6.0;
    let remember = k_f.clamp(lambda - 3.0 * sigma, lambda + 3.0 * sigma) / shift.exp();
    Some(Verdict {
        z: z.abs(),
        actual: k_f,
        expected: lambda,
        remember,
        flagged: drop || spike,
    })
}

impl BaselineDetector {
    /// What each service's mean response size would be this window if each of its routes
    /// answered as usual: its calls weighted by their routes' usual sizes, when every call was
    /// to a route whose sizes are known.
    fn expected_by_mix(&self, stats: &[WindowStat]) -> FxHashMap<(Sym, Sym), (u64, f64)> {
        // Per service: calls to routes, calls to routes with a usual size, and their weighted sum.
        let mut mix: FxHashMap<(Sym, Sym), (u64, u64, f64)> = FxHashMap::default();
        for st in stats.iter().filter(|st| st.key.kind() == EntityKind::Route) {
            let e = mix.entry(st.key.owner()).or_default();
            e.0 += st.count;
            let known = self
                .series
                .get(&(st.entity, Metric::RespBytes))
                .filter(|s| s.history.len() >= MIN_HISTORY);
            if let Some(series) = known {
                e.1 += st.count;
                e.2 += st.count as f64 * median_mad(series.history.values()).0.exp();
            }
        }
        mix.into_iter()
            .filter(|(_, (calls, known, _))| *calls > 0 && known == calls)
            .map(|(owner, (calls, _, sum))| (owner, (calls, sum / calls as f64)))
            .collect()
    }

    fn evaluate(&mut self, st: &WindowStat, metric: Metric, width: Millis, by_mix: Option<f64>) -> Option<Verdict> {
        let series = self.series.entry((st.entity, metric)).or_insert_with(|| Series::new(st.start));
        let enough = st.count >= MIN_CALLS;
        let payload_enough = enough || (st.key.kind() == EntityKind::Route && st.count >= MIN_ROUTE_PAYLOAD_CALLS);
        let value = match metric {
            Metric::Count => Some(st.count as f64),
            Metric::P95 if st.latencies.len() >= MIN_LATENCY_CALLS => Some(st.tail_ms),
            Metric::RespBytes if payload_enough && st.mean_response_bytes > 0.0 => Some(st.mean_response_bytes),
            Metric::ReqBytes if payload_enough && st.mean_request_bytes > 0.0 => Some(st.mean_request_bytes),
            Metric::Rate5xx | Metric::Rate4xx if enough => Some(0.0),
            _ => None,
        }?;
        let log_scale = matches!(metric, Metric::Count | Metric::P95 | Metric::RespBytes | Metric::ReqBytes);
        if series.history.len() < MIN_HISTORY {
            let v = match metric {
                Metric::Count => value,
                Metric::Rate5xx => st.rate_5xx(),
                Metric::Rate4xx => st.rate_4xx(),
                _ => value.max(1e-9).ln(),
            };
            series.history.push(v);
            if log_scale {
                series.profile.update(st.start, value.max(1e-9).ln());
            }
            if metric == Metric::P95 {
                CallQuantile::update(&mut series.per_call, st);
            }
            return None;
        }
        let shift = if log_scale { series.seasonal_shift(st.start, width) } else { 0.0 };
        let mut verdict = match metric {
            Metric::Count => count_metric(series, st.count, shift),
            Metric::Rate5xx => rate_metric(series, st.errors_5xx, st.count),
            Metric::Rate4xx => rate_metric(series, st.errors_4xx, st.count),
            Metric::P95 => log_metric(series, value, shift, 1.6, false),
            Metric::RespBytes | Metric::ReqBytes => log_metric(series, value, shift, 2.5, true),
        }?;
        // A service's mean size mixes its routes': a window that what its mix of routes predicts
        // explains is not a payload anomaly (a minute of mostly small answers). Only to explain:
        // one call of a route whose sizes vary widely is no measure of that route's usual mean.
        if let Some(mean) = by_mix.filter(|_| metric == Metric::RespBytes && verdict.flagged) {
            let mix_shift = mean.max(1e-9).ln() - median_mad(series.history.values()).0;
            verdict.flagged = log_metric(series, value, mix_shift, 2.5, true).is_some_and(|v| v.flagged);
        }
        if metric == Metric::P95 {
            // The window's tail is far above its usual; do enough of its calls say so? One slow
            // call in ten is what a p95 is made of.
            if let Some(t) = series.per_call {
                if verdict.flagged && !st.latencies.is_empty() {
                    let passed = st.latencies.above(t.exp());
                    // Calls over the usual single-call p95 must be unlikely by chance, whatever
                    // the window's quantiles say: the bar of every per-window share test.
                    verdict.flagged = CallQuantile::evidence(passed, st.latencies.len()) >= WINDOW_EVIDENCE;
                }
            }
            if !verdict.flagged {
                CallQuantile::update(&mut series.per_call, st);
            }
        }
        series.history.push(verdict.remember);
        if log_scale && !verdict.flagged {
            series.profile.update(st.start, value.max(1e-9).ln());
        }
        Some(verdict)
    }
}

impl Detector for BaselineDetector {
    fn name(&self) -> &'static str {
        "baseline"
    }

    fn forget(&mut self, evicted: &Evicted) {
        self.series.retain(|(id, _), _| !evicted.id(*id));
    }

    fn close_window(&mut self, w: &WindowContext<'_>, out: &mut Vec<Anomaly>) {
        let width = w.end - w.start;
        let by_mix = self.expected_by_mix(w.stats);
        for st in w.stats {
            let mix = match st.key {
                EntityKey::Service { service, provider } => by_mix
                    .get(&(service, provider))
                    .filter(|(calls, _)| *calls == st.count)
                    .map(|&(_, mean)| mean),
                _ => None,
            };
            for &metric in Metric::for_kind(st.key.kind()) {
                // A partial window (the end of the data) says nothing about traffic volume.
                if metric == Metric::Count && !w.complete {
                    continue;
                }
                let Some(v) = self.evaluate(st, metric, width, mix) else { continue };
                if !v.flagged {
                    continue;
                }
                let label = entity_label(w.names, &st.key);
                let (kind, reason) = describe(metric, &label, &v, st);
                let mut f = Finding::new(kind, "baseline", st.key, (w.start, w.end));
                f.score = score_from_z(v.z) * if metric == Metric::Rate4xx { 0.7 } else { 1.0 };
                f.metric = metric.name();
                f.actual = Some(v.actual);
                f.expected = Some(v.expected);
                f.reason = reason;
                f.sole_contributor(v.actual, v.expected);
                f.impact_of(st);
                f.impact_calls = match metric {
                    Metric::Rate5xx => st.errors_5xx,
                    Metric::Rate4xx => st.errors_4xx,
                    Metric::Count => (v.expected - v.actual).abs().round() as u64,
                    _ => st.count,
                };
                out.push(f.into_anomaly(w.names));
            }
        }
    }
}

fn describe(metric: Metric, label: &str, v: &Verdict, st: &WindowStat) -> (AnomalyKind, String) {
    let ratio = v.actual / v.expected.max(1e-9);
    match metric {
        Metric::P95 if tail_quantile(st.count) < 0.95 => (
            AnomalyKind::Latency,
            format!(
                "the slowest {} of {} calls to {label} took {} or more, expected about {} ({ratio:.1}x usual; \
                 a window this small has no p95 worth the name)",
                st.tail_calls(),
                st.count,
                fmt_ms(v.actual),
                fmt_ms(v.expected),
            ),
        ),
        Metric::P95 => (
            AnomalyKind::Latency,
            format!(
                "p95 latency of {label} was {}, expected about {} ({ratio:.1}x usual, {} calls in the window)",
                fmt_ms(v.actual),
                fmt_ms(v.expected),
                st.count
            ),
        ),
        Metric::Rate5xx | Metric::Rate4xx => (
            AnomalyKind::Errors,
            format!(
                "{} of {} calls to {label} failed with {} ({}), expected about {}",
                if metric == Metric::Rate5xx { st.errors_5xx } else { st.errors_4xx },
                st.count,
                if metric == Metric::Rate5xx { "5xx" } else { "4xx" },
                fmt_pct(v.actual),
                fmt_pct(v.expected)
            ),
        ),
        Metric::Count => (
            AnomalyKind::Traffic,
            format!(
                "{label} received {} calls in the window, expected about {:.0} ({})",
                v.actual,
                v.expected,
                if ratio < 1.0 {
                    format!("{:.0}% fewer", (1.0 - ratio) * 100.0)
                } else {
                    format!("{ratio:.1}x more")
                }
            ),
        ),
        Metric::RespBytes | Metric::ReqBytes => (
            AnomalyKind::Request,
            format!(
                "mean {} size of {label} was {}, expected about {} ({ratio:.1}x usual)",
                if metric == Metric::RespBytes { "response" } else { "request" },
                fmt_bytes(v.actual),
                fmt_bytes(v.expected)
            ),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{EntityKey, Interner};

    fn stat(names: &mut Interner, t: Millis, count: u64, e5: u64, p95: f64) -> WindowStat {
        crate::detect::testing::service_window(names, t, count, e5, p95)
    }

    fn run(d: &mut BaselineDetector, names: &mut Interner, windows: &[(u64, u64, f64)]) -> Vec<Vec<Anomaly>> {
        windows
            .iter()
            .enumerate()
            .map(|(i, &(c, e, p))| {
                let t = i as Millis * 60_000;
                let st = stat(names, t, c, e, p);
                crate::detect::testing::close_one(d, names, st)
            })
            .collect()
    }

    #[test]
    fn latency_spike_is_found_within_the_first_minutes() {
        let mut names = Interner::default();
        let mut d = BaselineDetector::default();
        let mut w: Vec<(u64, u64, f64)> = (0..8).map(|i| (200, 1, 100.0 + (i % 3) as f64 * 5.0)).collect();
        w.push((200, 1, 600.0));
        let out = run(&mut d, &mut names, &w);
        assert!(out[..8].iter().all(Vec::is_empty), "quiet warm-up: {out:?}");
        let last = &out[8];
        assert_eq!(last.len(), 1);
        assert_eq!(last[0].kind, AnomalyKind::Latency);
        assert!(
            last[0].reason.contains("p95 latency of payments/aws was 600 ms"),
            "{}",
            last[0].reason
        );
    }

    #[test]
    fn a_quiet_routes_payload_is_judged_and_a_quiet_services_mix_is_not() {
        // Three calls a minute whose mean response varies by ±10%, then ten times larger.
        let run_sizes = |route: bool| {
            let mut names = Interner::default();
            let mut d = BaselineDetector::default();
            (0..40)
                .map(|i| {
                    let mut st = stat(&mut names, i * 60_000, 3, 0, 100.0);
                    if route {
                        let (service, provider) = (names.intern("payments"), names.intern("aws"));
                        st.key = EntityKey::Route {
                            service,
                            provider,
                            route: names.intern("/pay"),
                        };
                    }
                    st.mean_response_bytes = if i == 39 {
                        20_000.0
                    } else {
                        2000.0 * (1.0 + 0.1 * ((i % 3) as f64 - 1.0))
                    };
                    crate::detect::testing::close_one(&mut d, &names, st)
                        .into_iter()
                        .filter(|a| a.metric.as_deref() == Some("payload.response_bytes"))
                        .map(|_| i)
                        .collect::<Vec<_>>()
                })
                .collect::<Vec<_>>()
                .concat()
        };
        assert_eq!(run_sizes(true), vec![39]);
        assert!(run_sizes(false).is_empty(), "three calls of a service are three of its routes");
    }

    #[test]
    fn a_services_mean_size_is_judged_against_its_mix_of_routes() {
        // Two routes, 20 KB pages and 200 B answers, ten calls each a minute; then a minute of
        // mostly small answers (the mean falls to a tenth: the mix, not a payload anomaly), then
        // a minute of the usual mix with every answer a tenth of its size.
        let mut names = Interner::default();
        let mut d = BaselineDetector::default();
        let (service, provider) = (names.intern("payments"), names.intern("aws"));
        let found: Vec<Vec<String>> = (0..42)
            .map(|i| {
                let t = i * 60_000;
                let (big, small, shrink) = match i {
                    40 => (1, 19, 1.0),
                    41 => (10, 10, 0.1),
                    _ => (10, 10, 1.0 + 0.05 * ((i % 3) as f64 - 1.0)),
                };
                let route = |id: u32, path: &str, calls: u64, bytes: f64, names: &mut Interner| {
                    let mut st = stat(names, t, calls, 0, 100.0);
                    st.entity = id;
                    st.key = EntityKey::Route {
                        service,
                        provider,
                        route: names.intern(path),
                    };
                    st.mean_response_bytes = bytes * shrink;
                    st
                };
                let routes = [
                    route(1, "/page", big, 20_000.0, &mut names),
                    route(2, "/ok", small, 200.0, &mut names),
                ];
                let mut svc = stat(&mut names, t, big + small, 0, 100.0);
                svc.mean_response_bytes = routes.iter().map(|r| r.count as f64 * r.mean_response_bytes).sum::<f64>() / svc.count as f64;
                let stats = [svc, routes[0].clone(), routes[1].clone()];
                let mut out = Vec::new();
                d.close_window(
                    &WindowContext {
                        start: t,
                        end: t + 60_000,
                        stats: &stats,
                        names: &names,
                        complete: true,
                    },
                    &mut out,
                );
                out.into_iter()
                    .filter(|a| a.metric.as_deref() == Some("payload.response_bytes"))
                    .map(|a| a.route.unwrap_or_else(|| "service".into()))
                    .collect()
            })
            .collect();
        assert!(found[..41].iter().all(Vec::is_empty), "{found:?}");
        assert!(found[41].contains(&"service".to_owned()), "{:?}", found[41]);
    }

    #[test]
    fn error_burst_and_traffic_drop() {
        let mut names = Interner::default();
        let mut d = BaselineDetector::default();
        let mut w: Vec<(u64, u64, f64)> = (0..20).map(|_| (300, 1, 100.0)).collect();
        w.push((300, 60, 100.0));
        w.push((40, 0, 100.0));
        let out = run(&mut d, &mut names, &w);
        assert!(out[..20].iter().all(Vec::is_empty));
        assert_eq!(out[20][0].kind, AnomalyKind::Errors);
        assert_eq!(out[21][0].kind, AnomalyKind::Traffic);
    }

    #[test]
    fn noise_alone_raises_nothing() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(9);
        let mut names = Interner::default();
        let mut d = BaselineDetector::default();
        let w: Vec<(u64, u64, f64)> = (0..600)
            .map(|_| (rng.gen_range(180..220), rng.gen_range(0..3), rng.gen_range(90.0..130.0)))
            .collect();
        let n: usize = run(&mut d, &mut names, &w).iter().map(Vec::len).sum();
        assert_eq!(n, 0);
    }

    /// A window of calls with these latencies, its quantiles read from them as the aggregator does.
    fn calls_window(names: &mut Interner, t: Millis, calls: &[f64]) -> WindowStat {
        use crate::model::window::{tail_quantile, CallLatencies};
        let mut sorted = calls.to_vec();
        sorted.sort_by(f64::total_cmp);
        let n = sorted.len();
        let q = |q: f64| sorted[(q * (n - 1) as f64) as usize];
        let mut st = stat(names, t, n as u64, 0, q(0.95));
        st.p50_ms = q(0.5);
        st.p99_ms = q(0.99);
        st.tail_ms = q(tail_quantile(n as u64));
        st.latencies = CallLatencies::of(&calls.iter().map(|&c| (c, 1)).collect::<Vec<_>>());
        st
    }

    /// A service with two latency modes (most calls about 5 ms, about 8% about 22 ms) and 10
    /// calls a minute: a window's p95 jumps between the modes, and three slow calls in one window
    /// happen every half hour or so. Neither is news; every call slowed by a network delay is.
    #[test]
    fn two_latency_modes_on_few_calls_are_not_news_and_a_shift_of_every_call_is() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(4);
        let call = |rng: &mut rand_chacha::ChaCha8Rng| {
            if rng.gen_bool(0.08) {
                rng.gen_range(18.0..30.0)
            } else {
                rng.gen_range(4.0..6.5)
            }
        };
        let mut names = Interner::default();
        let mut d = BaselineDetector::default();
        let mut flagged = Vec::new();
        for i in 0..600 {
            let calls: Vec<f64> = (0..10).map(|_| call(&mut rng)).collect();
            let st = calls_window(&mut names, i * 60_000, &calls);
            flagged.extend(crate::detect::testing::close_one(&mut d, &names, st).into_iter().map(|a| a.reason));
        }
        assert!(flagged.is_empty(), "two modes taken for an incident: {flagged:?}");
        // A delay of 1 s on every call, on a window of 6 calls.
        let calls: Vec<f64> = (0..6).map(|_| 1000.0 + call(&mut rng)).collect();
        let st = calls_window(&mut names, 600 * 60_000, &calls);
        let out = crate::detect::testing::close_one(&mut d, &names, st);
        assert!(out.iter().any(|a| a.kind == AnomalyKind::Latency), "{out:?}");
        assert!(out[0].reason.contains("the slowest 3 of 6 calls"), "{}", out[0].reason);
    }

    #[test]
    fn evidence_from_calls_over_the_usual_p95_knows_its_sample_size() {
        // One slow call of ten is what a p95 is made of; ten of ten, or 30 of 200, are not chance.
        assert!(CallQuantile::evidence(1, 10) < WINDOW_EVIDENCE);
        assert!(CallQuantile::evidence(2, 10) < WINDOW_EVIDENCE);
        assert!(CallQuantile::evidence(5, 5) >= WINDOW_EVIDENCE);
        assert!(CallQuantile::evidence(30, 200) >= WINDOW_EVIDENCE);
        assert!(CallQuantile::evidence(14, 200) < WINDOW_EVIDENCE);
        assert_eq!(CallQuantile::evidence(0, 0), 0.0);
    }

    #[test]
    fn day_profile_interpolates() {
        let mut p = DayProfile {
            slots: [0.0; 24],
            seen: [1; 24],
        };
        p.slots[1] = 1.0;
        // Centre of hour 1 is 01:30.
        assert!((p.at(90 * 60_000) - 1.0).abs() < 1e-9);
        assert!((p.at(60 * 60_000) - 0.5).abs() < 1e-9);
    }
}
