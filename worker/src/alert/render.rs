//! What a person reads: origin, priority, title and summary of an incident.

use rustc_hash::{FxHashMap, FxHashSet};

use super::{Incident, NodeEvidence};
use crate::model::anomaly::{Alert, AlertStatus, AnomalyKind, Severity, Suspect};
use crate::model::time::{format_hhmm, format_rfc3339};

type Graph = FxHashMap<String, FxHashSet<String>>;

/// Suspects written with an alert.
const MAX_SUSPECTS: usize = 5;

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

/// A node of an incident with its blame (see [`suspects`]).
#[derive(Clone, Debug)]
pub(crate) struct Blame {
    pub node: String,
    pub score: f64,
    pub why: String,
    /// A deviating neighbour may explain it: it ranks after every node none explains.
    pub explained: bool,
}

/// Evidence weight of a kind for an incident whose dominant kind is `dominant`: the kinds that
/// travel the same way count fully, the others half; a hop finding (attributed to the callee,
/// and for waits measured outside the callee's own time) points at one node, so it counts more.
fn kind_weight(k: AnomalyKind, dominant: AnomalyKind) -> f64 {
    let travels_down = |k: AnomalyKind| k == AnomalyKind::Traffic;
    let same_way = travels_down(k) == travels_down(dominant);
    match (k, same_way) {
        (AnomalyKind::Journey, true) => 1.5,
        (_, true) => 1.0,
        (_, false) => 0.5,
    }
}

/// The incident's nodes ranked by blame, most likely origin first. A node's blame is its own
/// evidence; when the nodes its deviation could come from deviate too it is discounted and
/// ranked after every node whose deviation nothing in the incident explains: latency and errors
/// propagate from callee to caller, so for them those are its callees; lost traffic propagates
/// from caller to callee, so for it they are its callers.
pub(crate) fn suspects(inc: &Incident, callers: &Graph, callees: &Graph) -> Vec<Blame> {
    let kind = dominant_kind(inc);
    // (node, evidence a deviating neighbour may explain, evidence measured outside the node,
    // waits after its answers that may be its caller's own time)
    let own: Vec<(&String, f64, f64, f64)> = inc
        .nodes
        .iter()
        .map(|(n, e)| {
            let weighted: f64 = e.by_kind.iter().map(|(k, s)| s * kind_weight(*k, kind)).sum();
            let outside = e.outside * kind_weight(AnomalyKind::Journey, kind);
            let unresolved = e.unresolved * kind_weight(AnomalyKind::Journey, kind);
            (n, (weighted - outside - unresolved).max(0.0), outside, unresolved)
        })
        .collect();
    let strongest = own.iter().map(|c| c.1 + c.2).fold(0.0, f64::max);
    // Only nodes with material evidence count as deviating neighbours (an unresolved wait is
    // not: it may be the caller's own time).
    let deviating = |n: &str| own.iter().any(|(m, s, o, _)| m.as_str() == n && s + o >= 0.15 * strongest);
    let upstream = if kind == AnomalyKind::Traffic { "caller" } else { "callee" };
    let mut out: Vec<Blame> = own
        .iter()
        .map(|&(n, score, outside, unresolved)| {
            let neighbours = match kind {
                AnomalyKind::Traffic => callers.get(n.as_str()),
                AnomalyKind::Sequence => None,
                _ => callees.get(n.as_str()),
            };
            let mut explaining: Vec<&str> = neighbours
                .map(|ns| ns.iter().filter(|m| *m != n && deviating(m)).map(String::as_str).collect())
                .unwrap_or_default();
            // A callee found silent under this node's failures explains them, however much
            // more evidence the failures piled up than the silence; and its silence is not
            // explained by the callers failing over it (they did not stop calling it).
            for (m, e) in &inc.nodes {
                if m != n && e.silent_under.contains(n.as_str()) && !explaining.contains(&m.as_str()) {
                    explaining.push(m.as_str());
                }
            }
            explaining.retain(|m| !inc.nodes[n].silent_under.contains(*m));
            explaining.sort_unstable();
            let ev = &inc.nodes[n];
            let top_kind = ev.by_kind.iter().max_by(|a, b| a.1.total_cmp(b.1)).map_or(kind, |(k, _)| *k);
            let route = top_route(ev).map(|r| format!(" on {r}")).unwrap_or_default();
            let mut what = format!("{}{route}", kind_phrase(top_kind));
            if outside > 0.0 {
                what.push_str("; its callers waited on it beyond its own time");
            }
            // Half weight: the caller may have spent that time itself.
            let maybe = 0.5 * unresolved;
            if score + outside == 0.0 && unresolved > 0.0 {
                what = format!(
                    "its callers waited long after its answers{route}, their only call: its answers' way back or the \
                     callers' own last step, which the callee's records alone cannot tell apart"
                );
            }
            if explaining.is_empty() {
                Blame {
                    node: n.clone(),
                    score: (score + outside + maybe).round(),
                    why: format!("{what}; no {upstream} of it deviates"),
                    explained: false,
                }
            } else {
                Blame {
                    node: n.clone(),
                    score: (score * 0.3 + outside + maybe).round(),
                    why: format!(
                        "{what}; may follow its {upstream}{} {}",
                        if explaining.len() == 1 { "" } else { "s" },
                        explaining.iter().take(3).copied().collect::<Vec<_>>().join(", ")
                    ),
                    // Evidence outside the node's own time is its own, whatever its neighbours do.
                    explained: outside < score * 0.3,
                }
            }
        })
        .collect();
    out.sort_by(|a, b| {
        a.explained
            .cmp(&b.explained)
            .then_with(|| b.score.total_cmp(&a.score))
            .then_with(|| a.node.cmp(&b.node))
    });
    out
}

/// The most likely origin node (`service/provider`) and its most anomalous route.
pub(crate) fn origin(inc: &Incident, callers: &Graph, callees: &Graph) -> (String, Option<String>) {
    let best = suspects(inc, callers, callees)
        .into_iter()
        .next()
        .map(|b| b.node)
        .unwrap_or_default();
    let route = inc.nodes.get(&best).and_then(top_route).cloned();
    (best, route)
}

/// The route with most evidence on a node.
fn top_route(e: &NodeEvidence) -> Option<&String> {
    e.routes.iter().max_by(|a, b| a.1.total_cmp(b.1)).map(|r| r.0)
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
    let ranked = suspects(inc, callers, callees);
    let node = ranked.first().map(|b| b.node.clone()).unwrap_or_default();
    let route = inc.nodes.get(&node).and_then(top_route).cloned();
    let (service, provider) = node
        .rsplit_once('/')
        .map_or((node.clone(), String::new()), |(s, p)| (s.to_owned(), p.to_owned()));
    let kind = dominant_kind(inc);
    let prio = priority(inc);
    let predicted = inc.predicted;
    let forecast_only = inc.only_forecast_when_raised;
    let (services, suspect_list) = blame_lists(&ranked);
    let mut kinds: Vec<AnomalyKind> = inc.nodes.values().flat_map(|n| n.by_kind.keys().copied()).collect();
    kinds.sort();
    kinds.dedup();
    // The strongest anomaly at the origin speaks for the alert.
    let lead = inc
        .anomalies
        .iter()
        .filter(|a| a.node() == node && (forecast_only || a.kind == kind || kind == AnomalyKind::Forecast))
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
        "Since {} ({}); {} {} from {} detector {}, about {} calls and {} users affected.\n",
        format_hhmm(inc.start),
        format_rfc3339(inc.start),
        inc.anomaly_count,
        if inc.anomaly_count == 1 { "anomaly" } else { "anomalies" },
        kinds.len(),
        if kinds.len() == 1 { "kind" } else { "kinds" },
        inc.impact_calls,
        inc.impact_users
    ));
    if let (true, Some(eta)) = (predicted, inc.eta) {
        // The forecast the title quotes (the latest eta), so title and summary agree.
        let forecast = inc
            .anomalies
            .iter()
            .filter(|a| a.kind == AnomalyKind::Forecast)
            .filter(|a| a.eta == Some(eta))
            .max_by_key(|a| a.timestamp)
            .or_else(|| {
                inc.anomalies
                    .iter()
                    .filter(|a| a.kind == AnomalyKind::Forecast)
                    .max_by_key(|a| a.timestamp)
            });
        if let Some(f) = forecast.filter(|_| !forecast_only) {
            summary.push_str(&capitalise(&f.reason));
            summary.push_str(".\n");
        }
        summary.push_str(&format!("Expected breach at about {}: act before then.\n", format_hhmm(eta)));
    }
    if others > 0 {
        summary.push_str(&format!(
            "Likely origin {node}; also affected, most to blame first: {}.\n",
            ranked.iter().skip(1).map(|b| b.node.as_str()).collect::<Vec<_>>().join(", ")
        ));
    }
    let traces = evidence_lines(inc, &node, &mut summary);
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
        suspects: suspect_list,
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
        acknowledged_by: None,
        acknowledged_at: None,
        silenced_by: None,
        links: Default::default(),
    }
}

/// The services in blame order (each once), and the first suspects with why.
fn blame_lists(ranked: &[Blame]) -> (Vec<String>, Vec<Suspect>) {
    let mut services: Vec<String> = Vec::new();
    for b in ranked {
        let s = b.node.rsplit_once('/').map_or(b.node.as_str(), |(s, _)| s);
        if !services.iter().any(|x| x == s) {
            services.push(s.to_owned());
        }
    }
    let suspects = ranked
        .iter()
        .take(MAX_SUSPECTS)
        .map(|b| {
            let (s, p) = b.node.rsplit_once('/').unwrap_or((b.node.as_str(), ""));
            Suspect {
                service: s.to_owned(),
                provider: p.to_owned(),
                score: b.score,
                why: b.why.clone(),
            }
        })
        .collect();
    (services, suspects)
}

/// The summary's closing lines (top contributors at the origin, example traces, resolution);
/// returns the example traces.
fn evidence_lines(inc: &Incident, node: &str, summary: &mut String) -> Vec<String> {
    let mut contributors: Vec<String> = Vec::new();
    for a in inc.anomalies.iter().filter(|a| a.node() == node) {
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
        let how = if inc.recovered {
            let windows = inc.nodes.values().map(|n| n.normal_windows).min().unwrap_or(0);
            format!(" (every service in it judged normal for at least {windows} windows)")
        } else {
            String::new()
        };
        summary.push_str(&format!("Resolved: back to normal since {}{how}.\n", format_hhmm(end)));
    }
    traces
}

fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().collect::<String>() + c.as_str(),
        None => String::new(),
    }
}
