//! What a person reads: origin, priority, title and summary of an incident.

use rustc_hash::{FxHashMap, FxHashSet};

use super::Incident;
use crate::model::anomaly::{Alert, AlertStatus, AnomalyKind, Severity};
use crate::model::time::{format_hhmm, format_rfc3339};

type Graph = FxHashMap<String, FxHashSet<String>>;

/// The incident's dominant kind: the one with most evidence (forecasts only when alone).
pub(crate) fn dominant_kind(inc: &Incident) -> AnomalyKind {
    let mut by_kind: std::collections::BTreeMap<AnomalyKind, f64> = Default::default();
    for n in inc.nodes.values() {
        for (k, s) in &n.by_kind {
            *by_kind.entry(*k).or_default() += s;
        }
    }
    let non_forecast = by_kind
        .iter()
        .filter(|(k, _)| **k != AnomalyKind::Forecast)
        .max_by(|a, b| a.1.total_cmp(b.1));
    match non_forecast {
        Some((k, _)) => *k,
        None => AnomalyKind::Forecast,
    }
}

/// The most likely origin node (`service/provider`) and its most anomalous route.
pub(crate) fn origin(inc: &Incident, callers: &Graph, callees: &Graph) -> (String, Option<String>) {
    let kind = dominant_kind(inc);
    let candidates: Vec<(&String, f64)> = inc.nodes.iter().map(|(n, e)| (n, e.score)).collect();
    let strongest = candidates.iter().map(|c| c.1).fold(0.0, f64::max);
    // Only nodes with material evidence count as "anomalous" neighbours.
    let anomalous = |n: &str| inc.nodes.get(n).is_some_and(|e| e.score >= 0.15 * strongest);
    let filtered: Vec<&(&String, f64)> = candidates
        .iter()
        .filter(|(n, _)| {
            let neighbours = match kind {
                AnomalyKind::Traffic => callers.get(n.as_str()),
                AnomalyKind::Sequence => None,
                _ => callees.get(n.as_str()),
            };
            !neighbours.is_some_and(|ns| ns.iter().any(|m| m != *n && anomalous(m)))
        })
        .collect();
    let pool: Vec<&(&String, f64)> = if filtered.is_empty() {
        candidates.iter().collect()
    } else {
        filtered
    };
    let best = pool
        .iter()
        .max_by(|a, b| {
            let ka = inc.nodes[a.0].by_kind.get(&kind).copied().unwrap_or(0.0);
            let kb = inc.nodes[b.0].by_kind.get(&kind).copied().unwrap_or(0.0);
            (ka + a.1).total_cmp(&(kb + b.1)).then_with(|| b.0.cmp(a.0))
        })
        .map(|c| c.0.clone())
        .unwrap_or_default();
    let route = inc
        .nodes
        .get(&best)
        .and_then(|e| e.routes.iter().max_by(|a, b| a.1.total_cmp(b.1)).map(|r| r.0.clone()));
    (best, route)
}

/// P1 (page now) .. P4 (look later), from severity and impact.
pub(crate) fn priority(inc: &Incident) -> u8 {
    if inc.only_forecast_when_raised {
        let soon = match (inc.eta, inc.raised_at) {
            (Some(eta), Some(r)) => eta - r <= 30 * 60_000,
            _ => false,
        };
        return if soon { 2 } else { 3 };
    }
    let mut p: i32 = match inc.max_severity {
        Severity::Critical => 1,
        Severity::High => 2,
        Severity::Medium => 3,
        Severity::Low => 4,
    };
    if inc.impact_users >= 100 || inc.impact_calls >= 2000 {
        p -= 1;
    }
    if inc.impact_users < 5 && inc.impact_calls < 50 {
        p += 1;
    }
    p.clamp(1, 4) as u8
}

fn kind_phrase(k: AnomalyKind) -> &'static str {
    match k {
        AnomalyKind::Latency => "latency",
        AnomalyKind::Errors => "errors",
        AnomalyKind::Traffic => "traffic change",
        AnomalyKind::Request => "unusual requests",
        AnomalyKind::Sequence => "unusual call order",
        AnomalyKind::Journey => "slow or failing hop",
        AnomalyKind::Forecast => "breach predicted",
    }
}

pub(crate) fn to_alert(inc: &Incident, callers: &Graph, callees: &Graph) -> Alert {
    let (node, route) = origin(inc, callers, callees);
    let (service, provider) = node
        .rsplit_once('/')
        .map_or((node.clone(), String::new()), |(s, p)| (s.to_owned(), p.to_owned()));
    let kind = dominant_kind(inc);
    let prio = priority(inc);
    let predicted = inc.predicted;
    let forecast_only = inc.only_forecast_when_raised;
    let mut services: Vec<String> = inc
        .nodes
        .keys()
        .filter_map(|n| n.rsplit_once('/').map(|(s, _)| s.to_owned()))
        .collect();
    services.sort();
    services.dedup();
    let mut kinds: Vec<AnomalyKind> = inc.nodes.values().flat_map(|n| n.by_kind.keys().copied()).collect();
    kinds.sort();
    kinds.dedup();
    // The strongest anomaly at the origin speaks for the alert.
    let lead = inc
        .anomalies
        .iter()
        .filter(|a| format!("{}/{}", a.service, a.provider) == node && (forecast_only || a.kind == kind || kind == AnomalyKind::Forecast))
        .max_by(|a, b| a.score.total_cmp(&b.score))
        .or_else(|| inc.anomalies.iter().max_by(|a, b| a.score.total_cmp(&b.score)));
    let status = if inc.resolved_at.is_some() {
        AlertStatus::Resolved
    } else {
        AlertStatus::Open
    };
    let others = services.len().saturating_sub(1);
    let title = format!(
        "[P{prio}] {}{} on {node}{}{}{}",
        kind_phrase(if forecast_only { AnomalyKind::Forecast } else { kind }),
        match (&lead, forecast_only) {
            // Only metric findings carry a number a title can quote.
            (Some(a), false) => match (a.actual, a.expected, a.metric.as_deref()) {
                (Some(x), Some(e), Some("latency.p95")) if e > 0.0 => format!(" {:.1}x usual", x / e),
                (Some(x), _, Some("errors.5xx_rate" | "errors.4xx_rate")) => format!(" {:.0}%", x * 100.0),
                _ => String::new(),
            },
            _ => String::new(),
        },
        route.as_deref().map(|r| format!(" {r}")).unwrap_or_default(),
        if others > 0 {
            format!(" (+{others} related service{})", if others == 1 { "" } else { "s" })
        } else {
            String::new()
        },
        match (predicted, inc.eta) {
            (true, Some(eta)) => format!(", breach expected {}", format_hhmm(eta)),
            _ => String::new(),
        }
    );
    let mut summary = String::new();
    if let Some(a) = lead {
        summary.push_str(&capitalise(&a.reason));
        summary.push_str(".\n");
    }
    summary.push_str(&format!(
        "Since {} ({}); {} anomalies from {} detector kind(s), about {} calls and {} users affected.\n",
        format_hhmm(inc.start),
        format_rfc3339(inc.start),
        inc.anomaly_count,
        kinds.len(),
        inc.impact_calls,
        inc.impact_users
    ));
    if let (true, Some(eta)) = (predicted, inc.eta) {
        let forecast = inc
            .anomalies
            .iter()
            .filter(|a| a.kind == AnomalyKind::Forecast)
            .max_by(|a, b| a.score.total_cmp(&b.score));
        if let Some(f) = forecast.filter(|_| !forecast_only) {
            summary.push_str(&capitalise(&f.reason));
            summary.push_str(".\n");
        }
        summary.push_str(&format!("Expected breach at about {}: act before then.\n", format_hhmm(eta)));
    }
    if others > 0 {
        summary.push_str(&format!(
            "Likely origin {node}; also affected: {}.\n",
            inc.nodes.keys().filter(|n| **n != node).cloned().collect::<Vec<_>>().join(", ")
        ));
    }
    let mut contributors: Vec<String> = Vec::new();
    for a in inc.anomalies.iter().filter(|a| format!("{}/{}", a.service, a.provider) == node) {
        for c in &a.contributors {
            if !contributors.contains(&c.name) && contributors.len() < 4 {
                contributors.push(c.name.clone());
            }
        }
    }
    if !contributors.is_empty() {
        summary.push_str(&format!("Top contributors: {}.\n", contributors.join(", ")));
    }
    let mut traces: Vec<String> = inc.anomalies.iter().flat_map(|a| a.trace_ids.iter().cloned()).collect();
    traces.dedup();
    traces.truncate(5);
    if !traces.is_empty() {
        summary.push_str(&format!("Example traces: {}.\n", traces.join(", ")));
    }
    if let Some(end) = inc.resolved_at {
        summary.push_str(&format!("Resolved: back to normal since {}.\n", format_hhmm(end)));
    }
    Alert {
        timestamp: inc.raised_at.unwrap_or(inc.last_activity),
        id: inc.id.clone(),
        status,
        priority: format!("P{prio}"),
        start: inc.start,
        end: inc.resolved_at,
        service,
        provider,
        route,
        services,
        kinds,
        predicted,
        eta: if predicted { inc.eta } else { None },
        title,
        summary: summary.trim_end().to_owned(),
        anomaly_ids: inc.anomalies.iter().map(|a| a.id.clone()).collect(),
        notifications: inc.notifications,
        impact_calls: inc.impact_calls,
        impact_users: inc.impact_users,
        trace_ids: traces,
    }
}

fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().collect::<String>() + c.as_str(),
        None => String::new(),
    }
}
