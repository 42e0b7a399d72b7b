//! The onboarding documents: one per service and provider, with its routes (the
//! `<prefix>-services` index and `services.json`; `../shared/spec/outputs.md`).

use serde::{Deserialize, Serialize};

use crate::model::time::{serde_rfc3339, Millis};

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct RouteRecord {
    #[serde(rename = "http.route")]
    pub route: String,
    #[serde(with = "serde_rfc3339")]
    pub first_seen: Millis,
    pub calls: u64,
}

/// One onboarded service in one provider (the `apiwatch-services` document).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ServiceRecord {
    #[serde(rename = "service.name")]
    pub service: String,
    #[serde(rename = "cloud.provider")]
    pub provider: String,
    #[serde(with = "serde_rfc3339")]
    pub first_seen: Millis,
    #[serde(with = "serde_rfc3339")]
    pub last_seen: Millis,
    pub calls: u64,
    /// Windows with traffic so far.
    pub windows: u64,
    /// `warming`, `early`, `ready` or `seasonal`.
    pub baseline: String,
    pub routes: Vec<RouteRecord>,
}
