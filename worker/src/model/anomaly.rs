//! Anomaly and alert documents, in the shapes of `shared/spec/outputs.md` (dotted field names).

use serde::{Deserialize, Serialize};

use super::time::{serde_rfc3339, Millis};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum AnomalyKind {
    Latency,
    Errors,
    Traffic,
    Request,
    Sequence,
    Journey,
    Forecast,
}

impl AnomalyKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            AnomalyKind::Latency => "latency",
            AnomalyKind::Errors => "errors",
            AnomalyKind::Traffic => "traffic",
            AnomalyKind::Request => "request",
            AnomalyKind::Sequence => "sequence",
            AnomalyKind::Journey => "journey",
            AnomalyKind::Forecast => "forecast",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Low,
    Medium,
    High,
    Critical,
}

impl Severity {
    /// Severity bands on the common 0-100 score.
    pub fn from_score(score: f64) -> Severity {
        if score >= 85.0 {
            Severity::Critical
        } else if score >= 65.0 {
            Severity::High
        } else if score >= 40.0 {
            Severity::Medium
        } else {
            Severity::Low
        }
    }
}

/// A feature, metric or hop that contributed to a finding, with its share (0-1).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Contributor {
    pub name: String,
    pub share: f64,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub actual: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub expected: Option<f64>,
}

/// How much a finding counts on its own when anomalies are grouped into alerts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Weight {
    /// Enough, at the raising score, to raise an alert.
    #[default]
    Raises,
    /// Adds weight to an incident but does not raise one: a detector reading the same
    /// statistics as another (the window forest beside the baselines).
    Corroborates,
}

/// One finding of one detector.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Anomaly {
    #[serde(rename = "@timestamp", with = "serde_rfc3339")]
    pub timestamp: Millis,
    #[serde(rename = "anomaly.id")]
    pub id: String,
    #[serde(rename = "anomaly.kind")]
    pub kind: AnomalyKind,
    #[serde(rename = "anomaly.detector")]
    pub detector: String,
    #[serde(rename = "anomaly.score")]
    pub score: f64,
    #[serde(rename = "anomaly.severity")]
    pub severity: Severity,
    #[serde(rename = "anomaly.window.start", with = "serde_rfc3339")]
    pub window_start: Millis,
    #[serde(rename = "anomaly.window.end", with = "serde_rfc3339")]
    pub window_end: Millis,
    #[serde(rename = "service.name")]
    pub service: String,
    #[serde(rename = "cloud.provider")]
    pub provider: String,
    #[serde(rename = "http.route", skip_serializing_if = "Option::is_none", default)]
    pub route: Option<String>,
    /// The metric the finding is about (`latency.p95`, `errors.5xx_rate`, ...): an extension.
    #[serde(rename = "anomaly.metric", skip_serializing_if = "Option::is_none", default)]
    pub metric: Option<String>,
    /// The rule that kept this anomaly, at or above the raising score, from becoming an alert
    /// (`dependency_change`, `forecast_needs_two_windows`); absent when nothing held it.
    #[serde(rename = "anomaly.held_by", skip_serializing_if = "Option::is_none", default)]
    pub held_by: Option<String>,
    /// The alert (or the incident not yet raised) the alert manager put this anomaly in, and
    /// the rule by which (`new`, `same_service`, `origin`, `shared_trace`, `effect`, `cause`,
    /// `echo`, ...; see `alert::group`): why a finding became part of what it did. Absent where
    /// no alert manager saw it (held back by its detector, a partition's document).
    #[serde(rename = "anomaly.alert.id", skip_serializing_if = "Option::is_none", default)]
    pub alert_id: Option<String>,
    #[serde(rename = "anomaly.alert.grouped_by", skip_serializing_if = "Option::is_none", default)]
    pub grouped_by: Option<String>,
    /// Set by the detector; used while grouping, not part of the document.
    #[serde(skip)]
    pub weight: Weight,
    #[serde(rename = "anomaly.actual", skip_serializing_if = "Option::is_none", default)]
    pub actual: Option<f64>,
    #[serde(rename = "anomaly.expected", skip_serializing_if = "Option::is_none", default)]
    pub expected: Option<f64>,
    #[serde(rename = "anomaly.reason")]
    pub reason: String,
    #[serde(rename = "anomaly.contributors", default)]
    pub contributors: Vec<Contributor>,
    /// Caller of a hop finding, `service/provider`: an extension.
    #[serde(rename = "anomaly.hop.from", skip_serializing_if = "Option::is_none", default)]
    pub hop_from: Option<String>,
    /// Calls and users affected in the evidence window: extensions used for alert priority.
    #[serde(rename = "anomaly.impact.calls", default)]
    pub impact_calls: u64,
    #[serde(rename = "anomaly.impact.users", default)]
    pub impact_users: u64,
    /// For forecasts: when the limit is expected to be crossed.
    #[serde(
        rename = "anomaly.eta",
        with = "serde_rfc3339::option",
        skip_serializing_if = "Option::is_none",
        default
    )]
    pub eta: Option<Millis>,
    /// For findings that weigh a run of windows (sequential tests): where the run began, so an
    /// echo of an alert that ended can be told from a problem that began after it.
    #[serde(
        rename = "anomaly.evidence.start",
        with = "serde_rfc3339::option",
        skip_serializing_if = "Option::is_none",
        default
    )]
    pub evidence_start: Option<Millis>,
    #[serde(rename = "trace.id", default)]
    pub trace_ids: Vec<String>,
    #[serde(rename = "user.id", default)]
    pub user_ids: Vec<String>,
}

impl Anomaly {
    /// The node it is about, `service/provider`, as the alert manager and the messages name it.
    pub fn node(&self) -> String {
        format!("{}/{}", self.service, self.provider)
    }

    /// A deterministic id from what identifies the finding (detector, entity, metric, window).
    pub fn make_id(parts: &[&str]) -> String {
        // FNV-1a, 128 bits as two 64-bit lanes: stable across runs and platforms.
        let mut a: u64 = 0xcbf2_9ce4_8422_2325;
        let mut b: u64 = 0x8422_2325_cbf2_9ce4;
        for p in parts {
            for &x in p.as_bytes().iter().chain(std::iter::once(&0x1f)) {
                a = (a ^ u64::from(x)).wrapping_mul(0x100_0000_01b3);
                b = (b ^ u64::from(x)).wrapping_mul(0x100_0000_01b3).rotate_left(5);
            }
        }
        format!("{a:016x}{b:016x}")
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertStatus {
    Open,
    Resolved,
}

/// What a person is told: related anomalies grouped, with the most likely origin.
/// A candidate origin of an alert: where the deviation most likely starts, with the blame score
/// (the node's own evidence, discounted when its callees — or, for lost traffic, its callers —
/// deviate too) and why.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Suspect {
    pub service: String,
    pub provider: String,
    pub score: f64,
    pub why: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    #[serde(rename = "@timestamp", with = "serde_rfc3339")]
    pub timestamp: Millis,
    #[serde(rename = "alert.id")]
    pub id: String,
    #[serde(rename = "alert.status")]
    pub status: AlertStatus,
    #[serde(rename = "alert.priority")]
    pub priority: String,
    #[serde(rename = "alert.start", with = "serde_rfc3339")]
    pub start: Millis,
    #[serde(
        rename = "alert.end",
        with = "serde_rfc3339::option",
        skip_serializing_if = "Option::is_none",
        default
    )]
    pub end: Option<Millis>,
    #[serde(rename = "service.name")]
    pub service: String,
    #[serde(rename = "cloud.provider")]
    pub provider: String,
    #[serde(rename = "http.route", skip_serializing_if = "Option::is_none", default)]
    pub route: Option<String>,
    /// Every service the grouped anomalies touch, most to blame first (see `suspects`).
    #[serde(rename = "alert.services")]
    pub services: Vec<String>,
    /// Candidate origins ranked by blame (an extension of the alert document): the first is
    /// `service.name`.
    #[serde(rename = "alert.suspects", default)]
    pub suspects: Vec<Suspect>,
    #[serde(rename = "alert.kinds")]
    pub kinds: Vec<AnomalyKind>,
    #[serde(rename = "alert.predicted")]
    pub predicted: bool,
    #[serde(
        rename = "alert.eta",
        with = "serde_rfc3339::option",
        skip_serializing_if = "Option::is_none",
        default
    )]
    pub eta: Option<Millis>,
    #[serde(rename = "alert.title")]
    pub title: String,
    #[serde(rename = "alert.summary")]
    pub summary: String,
    #[serde(rename = "alert.anomaly_ids")]
    pub anomaly_ids: Vec<String>,
    /// How many times a person was told (first raise plus re-alerts): an extension.
    #[serde(rename = "alert.notifications", default)]
    pub notifications: u32,
    #[serde(rename = "alert.impact.calls", default)]
    pub impact_calls: u64,
    #[serde(rename = "alert.impact.users", default)]
    pub impact_users: u64,
    #[serde(rename = "trace.id", default)]
    pub trace_ids: Vec<String>,
    /// Who acknowledged it and when (feedback; an extension): not notified again until it
    /// resolves.
    #[serde(rename = "alert.acknowledged.by", skip_serializing_if = "Option::is_none", default)]
    pub acknowledged_by: Option<String>,
    #[serde(
        rename = "alert.acknowledged.at",
        with = "serde_rfc3339::option",
        skip_serializing_if = "Option::is_none",
        default
    )]
    pub acknowledged_at: Option<Millis>,
    /// The silence holding it back from every channel (feedback; an extension).
    #[serde(rename = "alert.silence.id", skip_serializing_if = "Option::is_none", default)]
    pub silenced_by: Option<String>,
    /// Signed links that answer an open alert (an extension), for Kibana's alert table.
    #[serde(flatten, default)]
    pub links: AlertLinks,
}

/// An open alert's answering links as stored (`alert.link.*`; see
/// [`crate::feedback::link`]): written by a worker that has `[http] public_url` and a secret.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AlertLinks {
    #[serde(rename = "alert.link.ack", skip_serializing_if = "Option::is_none", default)]
    pub ack: Option<String>,
    #[serde(rename = "alert.link.silence", skip_serializing_if = "Option::is_none", default)]
    pub silence: Option<String>,
    #[serde(rename = "alert.link.not_a_problem", skip_serializing_if = "Option::is_none", default)]
    pub not_a_problem: Option<String>,
}

impl AlertLinks {
    /// Every action's link for alert `id`, sent by `via`, at wall time `now`.
    pub fn signed(links: &crate::feedback::link::ActionLinks, id: &str, via: &str, now: Millis) -> Self {
        use crate::feedback::link::LinkAction;
        let url = |a| Some(links.link(a, id, via, now).url);
        AlertLinks {
            ack: url(LinkAction::Ack),
            silence: url(LinkAction::Silence),
            not_a_problem: url(LinkAction::NotAProblem),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_deterministic_and_distinct() {
        let a = Anomaly::make_id(&["baseline", "payments", "aws", "1000"]);
        assert_eq!(a, Anomaly::make_id(&["baseline", "payments", "aws", "1000"]));
        assert_ne!(a, Anomaly::make_id(&["baseline", "payments", "aws", "1001"]));
        // Part boundaries matter: ("ab","c") is not ("a","bc").
        assert_ne!(Anomaly::make_id(&["ab", "c"]), Anomaly::make_id(&["a", "bc"]));
        assert_eq!(a.len(), 32);
    }

    #[test]
    fn severity_bands() {
        assert_eq!(Severity::from_score(10.0), Severity::Low);
        assert_eq!(Severity::from_score(50.0), Severity::Medium);
        assert_eq!(Severity::from_score(70.0), Severity::High);
        assert_eq!(Severity::from_score(99.0), Severity::Critical);
    }
}
