//! Pattern memory per service: a [`ContextMemory`] over each service's call volume and p95
//! latency, window by window. Where the baseline asks "is this value far from the recent
//! median?", this asks "has this series ever moved like this?": a level that is normal at noon
//! but new after a quiet step, a rhythm that stops. It is the detector that scores 69.6 on NAB
//! (`apiwatch eval-nab`).
//!
//! A series first spends [`WARMUP`] windows learning its range (log scale, widened by half its
//! width on each side, at least [`MIN_SPAN`]): NAB hands its detectors each file's range, a
//! worker must learn it. A memory that outgrows [`MAX_CONTEXTS`] starts over from its recent
//! windows, so state stays bounded on a worker that runs for months.

use rustc_hash::FxHashMap;

use super::context_memory::ContextMemory;
use super::stats::{median, Ring};
use super::{entity_label, fmt_ms, Detector, Evicted, Finding, WindowContext};
use crate::model::anomaly::{Anomaly, AnomalyKind};
use crate::model::{EntityKind, WindowStat};

/// Windows a series learns its range over before it is scored.
pub const WARMUP: usize = 60;
/// The narrowest range (natural log): a level step of about 7% on a flat series.
pub const MIN_SPAN: f64 = 0.5;
/// Contexts a memory may hold before it starts over (about 95 bytes each in a checkpoint; pure
/// noise fills 10,000 in about two weeks of one-minute windows).
pub const MAX_CONTEXTS: usize = 10_000;
/// Calls a window needs for its p95 to count.
const MIN_CALLS: u64 = 8;

#[derive(serde::Serialize, serde::Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Metric {
    Calls,
    P95,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Series {
    /// Recent values (log scale): the warm-up, the range of a restart, the "usual" of a finding.
    recent: Ring,
    memory: Option<ContextMemory>,
    /// Times the memory outgrew its bound and started over.
    restarts: u32,
}

impl Series {
    fn new() -> Self {
        Series {
            recent: Ring::new(WARMUP),
            memory: None,
            restarts: 0,
        }
    }

    /// A fresh memory over the recent values' range, taught them in order.
    fn learn(&mut self) {
        let values = self.recent.ordered();
        let low = values.iter().copied().fold(f64::INFINITY, f64::min);
        let high = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let span = (high - low).max(MIN_SPAN);
        let centre = (high + low) / 2.0;
        let mut memory = ContextMemory::new(centre - span, centre + span, WARMUP / 5);
        for &v in &values {
            memory.score(v);
        }
        self.memory = Some(memory);
    }

    /// Scores a value (log scale), learning first when needed.
    fn score(&mut self, value: f64, max_contexts: usize) -> Option<f64> {
        let usable = self.memory.as_ref().is_some_and(|m| m.len() <= max_contexts);
        if !usable {
            if self.memory.is_none() && self.recent.len() < WARMUP {
                self.recent.push(value);
                return None;
            }
            if self.memory.is_some() {
                self.restarts += 1;
                tracing::debug!(restarts = self.restarts, "pattern memory full, starting over from recent windows");
            }
            self.learn();
        }
        let s = self.memory.as_mut()?.score(value);
        self.recent.push(value);
        Some(s)
    }
}

/// The pattern-memory detector.
#[derive(serde::Serialize, serde::Deserialize)]
pub struct PatternDetector {
    series: FxHashMap<(u32, Metric), Series>,
    max_contexts: usize,
}

impl Default for PatternDetector {
    fn default() -> Self {
        PatternDetector {
            series: FxHashMap::default(),
            max_contexts: MAX_CONTEXTS,
        }
    }
}

impl PatternDetector {
    /// (score, value, usual, whether the value is beyond every recent one).
    fn check(&mut self, st: &WindowStat, metric: Metric, complete: bool) -> Option<(f64, f64, f64, bool)> {
        let value = match metric {
            // A partial window (the end of the data) says nothing about volume.
            Metric::Calls if complete => st.count as f64,
            Metric::P95 if st.latencies.len() >= MIN_CALLS => st.p95_ms,
            _ => return None,
        };
        let series = self.series.entry((st.entity, metric)).or_insert_with(Series::new);
        // Order does not matter for the median and the bounds: the ring as it lies.
        let recent = series.recent.values();
        let usual = median(recent).exp();
        let x = value.max(1e-3).ln();
        let beyond = recent.iter().all(|&r| r < x) || recent.iter().all(|&r| r > x);
        let score = series.score(x, self.max_contexts)?;
        Some((score, value, usual, beyond))
    }
}

impl Detector for PatternDetector {
    fn name(&self) -> &'static str {
        "pattern"
    }

    fn forget(&mut self, evicted: &Evicted) {
        self.series.retain(|(id, _), _| !evicted.id(*id));
    }

    fn close_window(&mut self, w: &WindowContext<'_>, out: &mut Vec<Anomaly>) {
        for st in w.stats.iter().filter(|st| st.key.kind() == EntityKind::Service) {
            for metric in [Metric::Calls, Metric::P95] {
                let Some((score, actual, usual, beyond)) = self.check(st, metric, w.complete) else {
                    continue;
                };
                // A new way of moving between known levels is worth a look on a dashboard, not a
                // finding (on per-minute API windows it is mostly noise); faster than usual is no
                // incident.
                if score < ContextMemory::ALERT_LEVEL || !beyond || (metric == Metric::P95 && actual <= usual) {
                    continue;
                }
                let label = entity_label(w.names, &st.key);
                let (kind, name, reason) = match metric {
                    Metric::Calls => (
                        AnomalyKind::Traffic,
                        "calls",
                        format!(
                            "{label} received {actual:.0} calls in the window, beyond every recent window and \
                             reached in a way its memory has not seen (usually about {usual:.0})"
                        ),
                    ),
                    Metric::P95 => (
                        AnomalyKind::Latency,
                        "latency.p95",
                        format!(
                            "p95 latency of {label} was {}, beyond every recent window and reached in a way \
                             its memory has not seen (usually about {}, {} calls in the window)",
                            fmt_ms(actual),
                            fmt_ms(usual),
                            st.count
                        ),
                    ),
                };
                let mut f = Finding::new(kind, "pattern", st.key, (w.start, w.end));
                f.score = 100.0 * score;
                f.metric = name;
                f.actual = Some(actual);
                f.expected = Some(usual);
                f.reason = reason;
                f.sole_contributor(actual, usual);
                f.impact_of(st);
                out.push(f.into_anomaly(w.names));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::Persist;
    use crate::model::time::Millis;
    use crate::model::Interner;

    fn window(d: &mut PatternDetector, names: &mut Interner, i: usize, count: u64, p95: f64) -> Vec<Anomaly> {
        let t = i as Millis * 60_000;
        let st = crate::detect::testing::service_window(names, t, count, 0, p95);
        crate::detect::testing::close_one(d, names, st)
    }

    /// Calls rise and fall in a 24-window cycle; p95 jitters around 120 ms.
    fn usual(i: usize) -> (u64, f64) {
        let phase = (i % 24) as f64 / 24.0 * std::f64::consts::TAU;
        (300 + (200.0 * phase.sin()) as u64, 120.0 + ((i * 7) % 5) as f64)
    }

    #[test]
    fn a_learnt_rhythm_is_quiet_and_a_latency_step_is_found_once() {
        let mut names = Interner::default();
        let mut d = PatternDetector::default();
        let mut quiet = 0;
        for i in 0..2000 {
            let (c, p) = usual(i);
            let out = window(&mut d, &mut names, i, c, p);
            if i >= 1000 {
                quiet += out.len();
            }
        }
        assert_eq!(quiet, 0, "a learnt rhythm raises nothing");

        // Save and restore mid-run: the restored detector continues as the original would.
        let bytes = d.save_state().unwrap();
        let mut restored = PatternDetector::default();
        restored.load_state(&bytes).unwrap();

        let found: Vec<Vec<Anomaly>> = (2000..2030).map(|i| window(&mut d, &mut names, i, usual(i).0, 900.0)).collect();
        let again: Vec<Vec<Anomaly>> = (2000..2030)
            .map(|i| window(&mut restored, &mut names, i, usual(i).0, 900.0))
            .collect();
        let latency: Vec<&Anomaly> = found.iter().flatten().filter(|a| a.kind == AnomalyKind::Latency).collect();
        assert_eq!(latency.len(), 1, "one finding for one step: {found:?}");
        assert!(found[..3].iter().flatten().any(|a| a.kind == AnomalyKind::Latency), "found at once");
        assert!(
            latency[0].reason.contains("p95 latency of payments/aws was 900 ms"),
            "{}",
            latency[0].reason
        );
        assert_eq!(format!("{found:?}"), format!("{again:?}"));
    }

    #[test]
    fn memory_stays_bounded_on_noise() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
        let mut names = Interner::default();
        let mut d = PatternDetector {
            max_contexts: 2_000,
            ..PatternDetector::default()
        };
        for i in 0..10_000 {
            window(&mut d, &mut names, i, rng.gen_range(100..1000), rng.gen_range(50.0..500.0));
        }
        for s in d.series.values() {
            assert!(s.restarts > 0, "noise fills the memory within 10,000 windows");
            assert!(s.memory.as_ref().is_some_and(|m| m.len() <= 2_000 + 100));
        }
    }
}
