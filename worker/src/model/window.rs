//! Entities (what a window is about) and the per-window statistics computed for each.

use super::intern::Sym;
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
    pub mean_request_bytes: f64,
    pub mean_response_bytes: f64,
    pub users: u64,
    /// A few trace ids seen in the window, for examples in alerts.
    pub example_traces: Vec<String>,
}

impl WindowStat {
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
