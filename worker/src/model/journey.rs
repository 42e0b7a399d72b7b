//! The journey document: one request followed across services and environments by its trace id
//! (the `apiwatch-journeys` index and `journeys.ndjson`). Only journeys worth looking at are
//! written: those a detector flagged, and the slowest one per entry service and window.

use serde::{Deserialize, Serialize};

use super::time::{serde_rfc3339, Millis};

/// One call hop of a journey.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HopRecord {
    pub from: String,
    pub to: String,
    /// When the call started, in milliseconds after the journey's first call (an extension of
    /// the journey document, for waterfalls).
    #[serde(default)]
    pub start_ms: f64,
    pub duration_ms: f64,
    /// Share of the journey's end-to-end latency.
    pub share: f64,
    pub failed: bool,
    pub cross_provider: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JourneyRecord {
    /// When the journey started.
    #[serde(rename = "@timestamp", with = "serde_rfc3339")]
    pub timestamp: Millis,
    #[serde(rename = "journey.id")]
    pub id: String,
    #[serde(rename = "trace.id")]
    pub trace_id: String,
    #[serde(rename = "user.id", skip_serializing_if = "Option::is_none", default)]
    pub user_id: Option<String>,
    /// The entry call.
    #[serde(rename = "service.name")]
    pub service: String,
    #[serde(rename = "cloud.provider")]
    pub provider: String,
    #[serde(rename = "http.route")]
    pub route: String,
    #[serde(rename = "journey.duration_ms")]
    pub duration_ms: f64,
    #[serde(rename = "journey.spans")]
    pub spans: u32,
    /// `service/provider` of every call, distinct, in order of first call.
    #[serde(rename = "journey.services")]
    pub services: Vec<String>,
    #[serde(rename = "journey.providers")]
    pub providers: Vec<String>,
    #[serde(rename = "journey.cross_provider_hops")]
    pub cross_provider_hops: u32,
    #[serde(rename = "journey.failed")]
    pub failed: bool,
    /// `slow_hop`, `failing_hop`, or `slowest` (the slowest of its window, not flagged).
    #[serde(rename = "journey.marked")]
    pub marked: String,
    #[serde(rename = "journey.marked_hop", skip_serializing_if = "Option::is_none", default)]
    pub marked_hop: Option<String>,
    #[serde(rename = "journey.hops")]
    pub hops: Vec<HopRecord>,
}
