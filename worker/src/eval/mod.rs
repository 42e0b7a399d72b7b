//! Scores alerts against the simulator's labels: incidents detected, with the right origin,
//! false alerts per day, alerts per incident, detection delay, and lead time before the breach
//! for predicted alerts.

pub mod explain;
pub mod feedback;
pub mod nab;
pub mod suite;

use std::collections::BTreeMap;

use serde::Serialize;

use crate::model::anomaly::Alert;
use crate::model::time::{Millis, DAY_MS, MINUTE_MS};
use crate::simulate::incidents::{IncidentKind, LabelledIncident, Labels};

/// An alert counts for an incident if it was active from this long before the incident began ...
pub(crate) const EARLY_SLACK: Millis = 2 * MINUTE_MS;
/// ... until this long after it ended.
pub(crate) const LATE_SLACK: Millis = 5 * MINUTE_MS;

#[derive(Clone, Debug, Serialize)]
pub struct IncidentResult {
    pub id: String,
    pub kind: IncidentKind,
    pub origin: String,
    pub detected: bool,
    pub right_origin: bool,
    pub alerts: usize,
    /// Seconds from the incident's start to the first matching alert.
    pub delay_s: Option<f64>,
    /// Minutes from the first matching alert to the breach (gradual degradation).
    pub lead_min: Option<f64>,
    /// Hour of day (UTC) of the breach (gradual degradation): leads at night and at the peak.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub breach_hour: Option<f64>,
    pub alerted_origin: Option<String>,
    /// The origin of every alert matched to it, in order (more than one: the incident was split).
    pub alert_origins: Vec<String>,
    /// The ids of those alerts, in the same order.
    pub alert_ids: Vec<String>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct EvalReport {
    pub incidents: usize,
    pub detected: usize,
    pub detected_right_origin: usize,
    pub alerts: usize,
    pub false_alerts: usize,
    pub days: f64,
    pub false_alerts_per_day: f64,
    pub alerts_per_incident: f64,
    pub median_delay_s: Option<f64>,
    pub delays_s: Vec<f64>,
    pub lead_times_min: Vec<f64>,
    pub new_service_alerts: usize,
    pub by_kind: BTreeMap<String, (usize, usize, usize)>,
    pub results: Vec<IncidentResult>,
    pub false_alert_titles: Vec<String>,
    /// Every false alert's id (what an analyst replaying the labels marks).
    pub false_alert_ids: Vec<String>,
}

pub(crate) fn overlaps(a: &Alert, inc: &LabelledIncident) -> bool {
    let a_end = a.end.unwrap_or(Millis::MAX).max(a.timestamp);
    let (lo, hi) = (inc.start - EARLY_SLACK, inc.end + LATE_SLACK);
    a.start.max(a.timestamp.min(a.start)) <= hi && a_end >= lo && a.timestamp <= hi
}

fn origin_matches(a: &Alert, inc: &LabelledIncident) -> bool {
    a.service == inc.service && a.provider == inc.provider
}

/// Scores `alerts` against `labels`.
pub fn evaluate(labels: &Labels, alerts: &[Alert]) -> EvalReport {
    let mut matched: Vec<Vec<usize>> = vec![Vec::new(); labels.incidents.len()];
    let mut false_alerts = Vec::new();
    let mut new_service_alerts = 0;
    for (ai, a) in alerts.iter().enumerate() {
        let candidates: Vec<usize> = (0..labels.incidents.len()).filter(|&i| overlaps(a, &labels.incidents[i])).collect();
        // Prefer an alerting incident whose origin matches, then any alerting one.
        let pick = candidates
            .iter()
            .copied()
            .filter(|&i| labels.incidents[i].expect_alert)
            .max_by_key(|&i| {
                (
                    origin_matches(a, &labels.incidents[i]),
                    -(a.start - labels.incidents[i].start).abs(),
                )
            });
        match pick {
            Some(i) => matched[i].push(ai),
            None => {
                if candidates
                    .iter()
                    .any(|&i| labels.incidents[i].kind == IncidentKind::NewService && origin_matches(a, &labels.incidents[i]))
                {
                    new_service_alerts += 1;
                }
                false_alerts.push(ai);
            }
        }
    }
    let mut r = EvalReport {
        alerts: alerts.len(),
        false_alerts: false_alerts.len(),
        new_service_alerts,
        ..Default::default()
    };
    r.days = ((labels.end - labels.start) as f64 / DAY_MS as f64).max(1e-9);
    r.false_alerts_per_day = r.false_alerts as f64 / r.days;
    r.false_alert_ids = false_alerts.iter().map(|&i| alerts[i].id.clone()).collect();
    r.false_alert_titles = false_alerts
        .iter()
        .take(20)
        .map(|&i| format!("{} {}", crate::model::time::format_rfc3339(alerts[i].timestamp), alerts[i].title))
        .collect();
    let mut matched_alerts = 0;
    for (inc, m) in labels.incidents.iter().zip(&matched) {
        if !inc.expect_alert {
            continue;
        }
        r.incidents += 1;
        let detected = !m.is_empty();
        let right = m.iter().any(|&ai| origin_matches(&alerts[ai], inc));
        let first = m.iter().map(|&ai| alerts[ai].timestamp).min();
        let delay_s = first.map(|t| (t - inc.start).max(0) as f64 / 1000.0);
        let lead_min = match (inc.breach_at, first) {
            (Some(b), Some(t)) => Some((b - t) as f64 / MINUTE_MS as f64),
            _ => None,
        };
        if detected {
            r.detected += 1;
            matched_alerts += m.len();
            if inc.kind != IncidentKind::GradualDegradation {
                r.delays_s.extend(delay_s);
            }
        }
        if right {
            r.detected_right_origin += 1;
        }
        r.lead_times_min.extend(lead_min);
        let e = r.by_kind.entry(format!("{:?}", inc.kind)).or_default();
        e.0 += 1;
        e.1 += usize::from(detected);
        e.2 += usize::from(right);
        r.results.push(IncidentResult {
            id: inc.id.clone(),
            kind: inc.kind,
            origin: format!("{}/{}", inc.service, inc.provider),
            detected,
            right_origin: right,
            alerts: m.len(),
            delay_s,
            lead_min,
            breach_hour: inc.breach_at.map(crate::model::time::hour_of_day),
            alerted_origin: m.first().map(|&ai| format!("{}/{}", alerts[ai].service, alerts[ai].provider)),
            alert_origins: m
                .iter()
                .map(|&ai| {
                    format!(
                        "{}/{} at {}",
                        alerts[ai].service,
                        alerts[ai].provider,
                        crate::model::time::format_hhmm(alerts[ai].timestamp)
                    )
                })
                .collect(),
            alert_ids: m.iter().map(|&ai| alerts[ai].id.clone()).collect(),
        });
    }
    r.alerts_per_incident = if r.detected > 0 {
        matched_alerts as f64 / r.detected as f64
    } else {
        0.0
    };
    r.median_delay_s = (!r.delays_s.is_empty()).then(|| crate::detect::stats::median(&r.delays_s));
    r
}

/// Sums several reports (several seeds and topologies).
pub fn combine(reports: &[EvalReport]) -> EvalReport {
    let mut r = EvalReport::default();
    let mut matched = 0.0;
    for x in reports {
        r.incidents += x.incidents;
        r.detected += x.detected;
        r.detected_right_origin += x.detected_right_origin;
        r.alerts += x.alerts;
        r.false_alerts += x.false_alerts;
        r.days += x.days;
        r.delays_s.extend(&x.delays_s);
        r.lead_times_min.extend(&x.lead_times_min);
        r.new_service_alerts += x.new_service_alerts;
        matched += x.alerts_per_incident * x.detected as f64;
        for (k, v) in &x.by_kind {
            let e = r.by_kind.entry(k.clone()).or_default();
            e.0 += v.0;
            e.1 += v.1;
            e.2 += v.2;
        }
        r.results.extend(x.results.iter().cloned());
        r.false_alert_titles.extend(x.false_alert_titles.iter().cloned());
        r.false_alert_ids.extend(x.false_alert_ids.iter().cloned());
    }
    r.false_alerts_per_day = r.false_alerts as f64 / r.days.max(1e-9);
    r.alerts_per_incident = if r.detected > 0 { matched / r.detected as f64 } else { 0.0 };
    r.median_delay_s = (!r.delays_s.is_empty()).then(|| crate::detect::stats::median(&r.delays_s));
    r
}

impl EvalReport {
    pub fn right_origin_share(&self) -> f64 {
        self.detected_right_origin as f64 / self.incidents.max(1) as f64
    }

    /// Lines for a terminal or a README.
    pub fn summary_lines(&self) -> Vec<String> {
        let lead = if self.lead_times_min.is_empty() {
            "n/a".to_owned()
        } else {
            format!(
                "median {:.0} min, min {:.0} min ({} predicted)",
                crate::detect::stats::median(&self.lead_times_min),
                self.lead_times_min.iter().copied().fold(f64::INFINITY, f64::min),
                self.lead_times_min.len()
            )
        };
        vec![
            format!(
                "incidents detected with the right origin: {}/{} ({:.0}%), detected at all: {}",
                self.detected_right_origin,
                self.incidents,
                100.0 * self.right_origin_share(),
                self.detected
            ),
            format!(
                "false alerts: {} over {:.2} days = {:.2}/day (new-service alerts: {})",
                self.false_alerts, self.days, self.false_alerts_per_day, self.new_service_alerts
            ),
            format!("alerts per detected incident: {:.2}", self.alerts_per_incident),
            format!(
                "median detection delay: {}",
                self.median_delay_s.map_or("n/a".into(), |d| format!("{:.0} s", d))
            ),
            format!("lead time before breach (gradual degradation): {lead}"),
        ]
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::model::anomaly::AlertStatus;

    pub(crate) fn inc(id: &str, start: Millis, service: &str) -> LabelledIncident {
        LabelledIncident {
            id: id.into(),
            kind: IncidentKind::LatencySpike,
            start,
            end: start + 10 * MINUTE_MS,
            service: service.into(),
            provider: "aws".into(),
            route: None,
            hop_from: None,
            breach_at: None,
            expect_alert: true,
            description: String::new(),
        }
    }

    pub(crate) fn alert(t: Millis, service: &str) -> Alert {
        Alert {
            timestamp: t,
            id: format!("a{t}"),
            status: AlertStatus::Resolved,
            priority: "P2".into(),
            start: t - MINUTE_MS,
            end: Some(t + 5 * MINUTE_MS),
            service: service.into(),
            provider: "aws".into(),
            route: None,
            services: vec![service.into()],
            suspects: vec![],
            kinds: vec![],
            predicted: false,
            eta: None,
            title: "t".into(),
            summary: "s".into(),
            anomaly_ids: vec![],
            notifications: 1,
            impact_calls: 0,
            impact_users: 0,
            trace_ids: vec![],
            acknowledged_by: None,
            acknowledged_at: None,
            silenced_by: None,
            links: Default::default(),
        }
    }

    #[test]
    fn scores_detection_origin_and_false_alerts() {
        let h = 3_600_000;
        let labels = Labels {
            seed: 1,
            topology: "t".into(),
            start: 0,
            end: DAY_MS,
            family: Default::default(),
            events: 0,
            incidents: vec![inc("a", h, "payments"), inc("b", 5 * h, "ledger"), inc("c", 9 * h, "fraud")],
        };
        let alerts = vec![
            alert(h + 2 * MINUTE_MS, "payments"),
            alert(h + 4 * MINUTE_MS, "payments"),
            alert(5 * h + MINUTE_MS, "gateway"),
            alert(7 * h, "ledger"),
        ];
        let r = evaluate(&labels, &alerts);
        assert_eq!((r.incidents, r.detected, r.detected_right_origin, r.false_alerts), (3, 2, 1, 1));
        assert!((r.alerts_per_incident - 1.5).abs() < 1e-9);
        assert!((r.false_alerts_per_day - 1.0).abs() < 1e-9);
        assert_eq!(r.median_delay_s, Some(90.0));
    }
}
