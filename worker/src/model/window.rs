//! Entities (what a window is about) and the per-window statistics computed for each.

use super::intern::Sym;
use sketches_ddsketch::{Config, DDSketch};

use super::time::{serde_rfc3339, Millis};

/// The three kinds of entity that get windows.
#[derive(serde::Serialize, serde::Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EntityKind {
    Service,
    Route,
    Hop,
}

/// What a window describes: a service in one provider, one of its routes, or a call hop from a
/// caller (service, provider) to a callee (service, provider).
#[derive(serde::Serialize, serde::Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EntityKey {
    Service { service: Sym, provider: Sym },
    Route { service: Sym, provider: Sym, route: Sym },
    Hop { from: (Sym, Sym), to: (Sym, Sym) },
}

impl EntityKey {
    pub fn kind(&self) -> EntityKind {
        match self {
            EntityKey::Service { .. } => EntityKind::Service,
            EntityKey::Route { .. } => EntityKind::Route,
            EntityKey::Hop { .. } => EntityKind::Hop,
        }
    }

    /// The (service, provider) a finding on this entity is attributed to: for a hop, the callee.
    pub fn owner(&self) -> (Sym, Sym) {
        match *self {
            EntityKey::Service { service, provider } => (service, provider),
            EntityKey::Route { service, provider, .. } => (service, provider),
            EntityKey::Hop { to, .. } => to,
        }
    }

    pub fn route(&self) -> Option<Sym> {
        match *self {
            EntityKey::Route { route, .. } => Some(route),
            _ => None,
        }
    }
}

/// Statistics of one entity over one window.
#[derive(Clone, Debug)]
pub struct WindowStat {
    pub entity: u32,
    pub key: EntityKey,
    pub start: Millis,
    pub end: Millis,
    pub count: u64,
    pub errors_4xx: u64,
    pub errors_5xx: u64,
    /// Latency quantiles in milliseconds (0 when the window is empty).
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    /// The p95 where the window holds enough calls for one to mean something, else the latency
    /// that the slowest [`TAIL_CALLS`] calls reach: on 13 calls a p95 is one call, and one slow
    /// call is not a slow service. Equal to `p95_ms` from 60 calls on.
    pub tail_ms: f64,
    /// Every call's latency in the window, as a sketch (1% relative accuracy): how many calls
    /// passed a given time, for tests that weigh a window by its sample size.
    pub latencies: CallLatencies,
    pub mean_request_bytes: f64,
    pub mean_response_bytes: f64,
    pub users: u64,
    /// A few trace ids seen in the window, for examples in alerts.
    pub example_traces: Vec<String>,
}

/// The latencies of a window's calls (milliseconds).
#[derive(Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct CallLatencies(Option<DDSketch>);

impl std::fmt::Debug for CallLatencies {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CallLatencies({} calls)", self.len())
    }
}

impl CallLatencies {
    pub fn new(sketch: DDSketch) -> Self {
        CallLatencies(Some(sketch))
    }

    /// Latencies of `n` calls each (for tests and synthetic windows).
    pub fn of(values: &[(f64, u64)]) -> Self {
        let mut s = DDSketch::new(Config::defaults());
        for &(v, n) in values {
            (0..n).for_each(|_| s.add(v));
        }
        CallLatencies(Some(s))
    }

    pub fn len(&self) -> u64 {
        self.0.as_ref().map_or(0, |s| s.count() as u64)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Adds `other`'s calls (windows pooled into one sample).
    pub fn merge(&mut self, other: &CallLatencies) {
        let Some(o) = &other.0 else { return };
        match &mut self.0 {
            // Both sketches use the default configuration, so merging cannot fail.
            Some(s) => s.merge(o).unwrap_or_default(),
            None => self.0 = Some(o.clone()),
        }
    }

    /// The latency at quantile `q` (0 when there are no calls).
    pub fn quantile(&self, q: f64) -> f64 {
        self.0.as_ref().and_then(|s| s.quantile(q).ok().flatten()).unwrap_or(0.0)
    }

    /// The latency of the call at `rank` (0 = fastest) of `n`.
    fn at(s: &DDSketch, rank: u64, n: u64) -> f64 {
        let q = if rank + 1 >= n { 1.0 } else { (rank as f64 + 0.5) / (n - 1) as f64 };
        s.quantile(q.min(1.0)).ok().flatten().unwrap_or(0.0)
    }

    /// Every call's latency, fastest first (within the sketch's accuracy).
    pub fn values(&self) -> impl Iterator<Item = f64> + '_ {
        let n = self.len();
        self.0.iter().flat_map(move |s| (0..n).map(move |rank| Self::at(s, rank, n)))
    }

    /// Calls slower than `ms` (within the sketch's accuracy).
    pub fn above(&self, ms: f64) -> u64 {
        let Some(s) = &self.0 else { return 0 };
        let n = s.count() as u64;
        if n == 0 {
            return 0;
        }
        let at = |rank: u64| Self::at(s, rank, n);
        // The first rank whose latency passes `ms`; ranks are in increasing latency.
        let (mut lo, mut hi) = (0u64, n);
        while lo < hi {
            let mid = (lo + hi) / 2;
            if at(mid) > ms {
                hi = mid;
            } else {
                lo = mid + 1;
            }
        }
        n - lo
    }
}

/// Calls a window's tail latency ([`WindowStat::tail_ms`]) must rest on.
pub const TAIL_CALLS: u64 = 3;

/// The quantile that [`WindowStat::tail_ms`] reads on a window of `count` calls: 0.95, or lower
/// so that at least [`TAIL_CALLS`] calls lie at or above it.
pub fn tail_quantile(count: u64) -> f64 {
    if count <= TAIL_CALLS {
        return 0.0;
    }
    (1.0 - TAIL_CALLS as f64 / count as f64).min(0.95)
}

impl WindowStat {
    /// How many calls the tail latency rests on (at least [`TAIL_CALLS`], about 5% of a busy
    /// window), for reason texts.
    pub fn tail_calls(&self) -> u64 {
        ((self.count as f64 * (1.0 - tail_quantile(self.count))).round() as u64).max(TAIL_CALLS.min(self.count))
    }

    pub fn rate_4xx(&self) -> f64 {
        if self.count == 0 {
            0.0
        } else {
            self.errors_4xx as f64 / self.count as f64
        }
    }
    pub fn rate_5xx(&self) -> f64 {
        if self.count == 0 {
            0.0
        } else {
            self.errors_5xx as f64 / self.count as f64
        }
    }
}

/// One service's traffic, errors and latency over one window: what `detect` writes to
/// `metrics.ndjson`, so a report can draw timelines without reading the events again.
#[derive(serde::Serialize, serde::Deserialize, Clone, Debug, PartialEq)]
pub struct ServiceMetrics {
    /// The window's start.
    #[serde(rename = "@timestamp", with = "serde_rfc3339")]
    pub start: Millis,
    #[serde(rename = "service.name")]
    pub service: String,
    #[serde(rename = "cloud.provider")]
    pub provider: String,
    pub calls: u64,
    pub errors_4xx: u64,
    pub errors_5xx: u64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_above_a_latency_are_counted_from_the_sketch() {
        let l = CallLatencies::of(&[(5.0, 90), (22.0, 8), (1000.0, 2)]);
        assert_eq!(l.len(), 100);
        assert_eq!(l.above(10.0), 10);
        assert_eq!(l.above(100.0), 2);
        assert_eq!(l.above(2000.0), 0);
        assert_eq!(l.above(1.0), 100);
        assert_eq!(CallLatencies::default().above(1.0), 0);
    }

    #[test]
    fn the_tail_rests_on_three_calls_until_a_p95_does() {
        assert_eq!(tail_quantile(3), 0.0);
        assert!((tail_quantile(12) - 0.75).abs() < 1e-9);
        assert_eq!(tail_quantile(60), 0.95);
        assert_eq!(tail_quantile(1000), 0.95);
    }
}
