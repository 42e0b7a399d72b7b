//! The API-call event of `shared/spec/events.md`, and its writer (the dotted form). The reader
//! is a source's business: [`crate::source::json`].

use serde::ser::SerializeMap;
use serde::{Serialize, Serializer};

use super::time::{format_rfc3339, Millis};

/// Text of an event field: short values (names, ids, addresses) are stored inline, without
/// a heap allocation, which matters at hundreds of thousands of events per second.
pub type Text = compact_str::CompactString;

/// One API call (one span of a request journey).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Event {
    pub timestamp: Millis,
    pub service: Text,
    pub provider: Text,
    pub region: Option<Text>,
    pub host: Option<Text>,
    pub method: Text,
    pub path: Text,
    pub status: u16,
    /// How long the call took; `None` where the source says nothing of time (a default nginx
    /// log): traffic, errors, sequences and journeys are judged, latency is not.
    pub duration_ns: Option<u64>,
    pub outcome: Option<Text>,
    pub trace_id: Option<Text>,
    pub span_id: Option<Text>,
    pub parent_id: Option<Text>,
    pub user_id: Option<Text>,
    pub client_ip: Option<Text>,
    pub user_agent: Option<Text>,
    pub request_bytes: Option<u64>,
    pub response_bytes: Option<u64>,
    /// `Some` when this is the caller's record of the call (an exit span: `span.kind: client`,
    /// or an Elastic APM span document), `None` for the callee's (a server span, an APM
    /// transaction, an access-log line): the default.
    pub client: Option<Box<ClientSide>>,
}

/// What a caller's record of a call adds: whom it called, and from which of its own calls.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ClientSide {
    /// The service called (`service.target.name`, else APM's
    /// `span.destination.service.resource`).
    pub target: Option<Text>,
    /// The caller's own call (server span, APM transaction) this one was made from
    /// (`transaction.id`); the caller's record may hang under an internal span of it instead.
    pub transaction_id: Option<Text>,
}

impl Event {
    /// The call's latency in milliseconds, where the source gave one.
    pub fn duration_ms(&self) -> Option<f64> {
        self.duration_ns.map(|ns| ns as f64 / 1e6)
    }
    pub fn is_5xx(&self) -> bool {
        self.status >= 500
    }
    pub fn is_4xx(&self) -> bool {
        (400..500).contains(&self.status)
    }
}

impl Serialize for Event {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("@timestamp", &format_rfc3339(self.timestamp))?;
        m.serialize_entry("service.name", &self.service)?;
        m.serialize_entry("cloud.provider", &self.provider)?;
        if let Some(v) = &self.region {
            m.serialize_entry("cloud.region", v)?;
        }
        if let Some(v) = &self.host {
            m.serialize_entry("host.name", v)?;
        }
        m.serialize_entry("http.request.method", &self.method)?;
        m.serialize_entry("url.path", &self.path)?;
        m.serialize_entry("http.response.status_code", &self.status)?;
        if let Some(ns) = self.duration_ns {
            m.serialize_entry("event.duration", &ns)?;
        }
        if let Some(v) = &self.outcome {
            m.serialize_entry("event.outcome", v)?;
        }
        let opt = [
            ("trace.id", &self.trace_id),
            ("span.id", &self.span_id),
            ("parent.id", &self.parent_id),
            ("user.id", &self.user_id),
            ("client.ip", &self.client_ip),
            ("user_agent.original", &self.user_agent),
        ];
        for (k, v) in opt {
            if let Some(v) = v {
                m.serialize_entry(k, v)?;
            }
        }
        if let Some(v) = self.request_bytes {
            m.serialize_entry("http.request.bytes", &v)?;
        }
        if let Some(v) = self.response_bytes {
            m.serialize_entry("http.response.bytes", &v)?;
        }
        if let Some(c) = &self.client {
            m.serialize_entry("span.kind", "client")?;
            if let Some(v) = &c.target {
                m.serialize_entry("service.target.name", v)?;
            }
            if let Some(v) = &c.transaction_id {
                m.serialize_entry("transaction.id", v)?;
            }
        }
        m.end()
    }
}

/// Longest call duration accepted: a day. Longer is a wrong unit or a wrong clock, not a call.
pub const MAX_DURATION_NS: u64 = 86_400 * 1_000_000_000;
