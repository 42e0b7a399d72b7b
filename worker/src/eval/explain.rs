//! Why each incident was missed or named the wrong origin, and what raised each false alert,
//! read from what the worker wrote (its anomalies and alerts): `apiwatch eval --explain`.
//!
//! A miss has one cause, the first that applies of: an alert overlapping it was counted for
//! another incident; an anomaly on the origin strong enough to raise joined another alert; one
//! was held back by a rule (`anomaly.held_by`); the origin's anomalies stayed below the raising
//! score; nothing anomalous was found on the origin. The causes are tags a suite can count.

use std::collections::BTreeMap;

use rustc_hash::FxHashMap;
use serde::Serialize;

use super::{overlaps, EvalReport, EARLY_SLACK, LATE_SLACK};
use crate::model::anomaly::{Alert, Anomaly};
use crate::model::time::{format_hhmm, Millis};
use crate::simulate::incidents::{LabelledIncident, Labels};

/// The causes an explanation is tagged with.
pub mod cause {
    /// An alert overlapping the incident was counted for another incident at the same time.
    pub const ALERT_COUNTED_ELSEWHERE: &str = "alert_counted_elsewhere";
    /// An anomaly on the origin strong enough to raise joined an alert that does not overlap
    /// the incident (raised too late) or names another origin.
    pub const JOINED_OTHER_ALERT: &str = "joined_other_alert";
    /// An anomaly on the origin strong enough to raise is in no alert and held by no rule.
    pub const STRONG_BUT_NOT_RAISED: &str = "strong_but_not_raised";
    /// Anomalies on the origin were held back by a rule (`anomaly.held_by`).
    pub const HELD_BACK: &str = "held_back";
    /// The origin's anomalies were all below the raising score and did not add up.
    pub const BELOW_THRESHOLD: &str = "below_threshold";
    /// No anomaly on the origin in the incident's window.
    pub const NO_ANOMALY_ON_ORIGIN: &str = "no_anomaly_on_origin";
    /// The alert named another service first; the origin is among its suspects.
    pub const ORIGIN_RANKED_LOWER: &str = "origin_ranked_lower";
    /// The alert named another service; the origin is not among its suspects.
    pub const ORIGIN_NOT_IN_ALERT: &str = "origin_not_in_alert";
    /// A false alert: what raised it.
    pub const RAISED_BY: &str = "raised_by";
}

/// What was wrong with one incident or alert, and why.
#[derive(Clone, Debug, Serialize)]
pub struct Explanation {
    /// `topology seed` of the run.
    pub run: String,
    /// The incident's id, or the false alert's.
    pub subject: String,
    /// The incident's kind (`LatencySpike`); absent for a false alert.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// `missed`, `wrong_origin` or `false_alert`.
    pub verdict: &'static str,
    /// One of [`cause`].
    pub cause: &'static str,
    pub why: String,
}

/// Explains every miss, wrong origin and false alert of `report` (scored from `labels` and
/// `alerts`) from the `anomalies` the same run wrote. `raise_single` is the score at which one
/// anomaly raises an alert alone.
pub fn explain(report: &EvalReport, labels: &Labels, alerts: &[Alert], anomalies: &[Anomaly], raise_single: f64) -> Vec<Explanation> {
    let run = format!("{} {}", labels.topology, labels.seed);
    let by_id: FxHashMap<&str, &Anomaly> = anomalies.iter().map(|a| (a.id.as_str(), a)).collect();
    // Which alert holds each anomaly (the first that lists it).
    let mut holder: FxHashMap<&str, &Alert> = FxHashMap::default();
    for a in alerts {
        for id in &a.anomaly_ids {
            holder.entry(id.as_str()).or_insert(a);
        }
    }
    let ctx = Context {
        alerts,
        anomalies,
        by_id: &by_id,
        holder: &holder,
        raise_single,
    };
    let mut out = Vec::new();
    let incidents: FxHashMap<&str, &LabelledIncident> = labels.incidents.iter().map(|i| (i.id.as_str(), i)).collect();
    for r in &report.results {
        let Some(inc) = incidents.get(r.id.as_str()) else { continue };
        let (verdict, (cause, why)) = if !r.detected {
            ("missed", ctx.miss(inc, report))
        } else if !r.right_origin {
            ("wrong_origin", ctx.wrong_origin(inc, &r.alert_ids))
        } else {
            continue;
        };
        out.push(Explanation {
            run: run.clone(),
            subject: r.id.clone(),
            kind: Some(format!("{:?}", r.kind)),
            verdict,
            cause,
            why,
        });
    }
    for id in &report.false_alert_ids {
        let Some(a) = alerts.iter().find(|a| &a.id == id) else { continue };
        out.push(Explanation {
            run: run.clone(),
            subject: id.clone(),
            kind: None,
            verdict: "false_alert",
            cause: cause::RAISED_BY,
            why: ctx.raised_by(a, labels),
        });
    }
    out
}

/// Explanations counted by verdict, incident kind and cause (`missed TrafficDrop:
/// below_threshold`).
pub fn count_causes(explanations: &[Explanation]) -> BTreeMap<String, usize> {
    let mut n = BTreeMap::new();
    for e in explanations {
        let kind = e.kind.as_deref().map(|k| format!(" {k}")).unwrap_or_default();
        *n.entry(format!("{}{kind}: {}", e.verdict, e.cause)).or_default() += 1;
    }
    n
}

struct Context<'a> {
    alerts: &'a [Alert],
    anomalies: &'a [Anomaly],
    by_id: &'a FxHashMap<&'a str, &'a Anomaly>,
    holder: &'a FxHashMap<&'a str, &'a Alert>,
    raise_single: f64,
}

/// One anomaly in a line: score, kind, metric, where and when, and its reason.
fn describe(a: &Anomaly) -> String {
    format!(
        "{:.0} {} {}{} on {}{} at {}: {}",
        a.score,
        a.kind.as_str(),
        a.detector,
        a.metric.as_deref().map(|m| format!(" {m}")).unwrap_or_default(),
        a.service,
        a.route.as_deref().map(|r| format!(" {r}")).unwrap_or_default(),
        format_hhmm(a.window_start),
        a.reason
    )
}

fn strongest<'a>(it: impl Iterator<Item = &'a Anomaly>) -> Option<&'a Anomaly> {
    it.max_by(|x, y| x.score.total_cmp(&y.score))
}

impl Context<'_> {
    /// The anomalies on the incident's origin within its window (with the scorer's slack).
    fn on_origin(&self, inc: &LabelledIncident) -> Vec<&Anomaly> {
        let (lo, hi) = window(inc);
        self.anomalies
            .iter()
            .filter(|a| a.window_end > lo && a.window_start <= hi && a.service == inc.service && a.provider == inc.provider)
            .collect()
    }

    fn miss(&self, inc: &LabelledIncident, report: &EvalReport) -> (&'static str, String) {
        let origin = format!("{}/{}", inc.service, inc.provider);
        // An alert overlapping it that the scorer gave to another incident of the same time.
        if let Some(a) = self.alerts.iter().find(|a| overlaps(a, inc)) {
            let other = report
                .results
                .iter()
                .find(|r| r.alert_ids.contains(&a.id))
                .map_or("a concurrent incident".to_owned(), |r| {
                    format!("{} ({:?} on {})", r.id, r.kind, r.origin)
                });
            return (
                cause::ALERT_COUNTED_ELSEWHERE,
                format!(
                    "alert {} (origin {}/{}, raised {}) overlaps it but was counted for {other}",
                    a.id,
                    a.service,
                    a.provider,
                    format_hhmm(a.timestamp)
                ),
            );
        }
        let found = self.on_origin(inc);
        let (lo, hi) = window(inc);
        let span = format!("{}-{}", format_hhmm(lo), format_hhmm(hi));
        let Some(best) = strongest(found.iter().copied()) else {
            let elsewhere = strongest(self.anomalies.iter().filter(|a| a.window_end > lo && a.window_start <= hi));
            return (
                cause::NO_ANOMALY_ON_ORIGIN,
                match elsewhere {
                    Some(a) => format!("no anomaly on {origin} in {span}; the strongest elsewhere: {}", describe(a)),
                    None => format!("no anomaly on {origin} in {span}, nor anywhere else"),
                },
            );
        };
        let strong: Vec<&Anomaly> = found.iter().copied().filter(|a| a.score >= self.raise_single).collect();
        if let Some(a) = strong.iter().find(|a| a.held_by.is_none()) {
            return match self.holder.get(a.id.as_str()) {
                Some(alert) => (
                    cause::JOINED_OTHER_ALERT,
                    format!(
                        "{} joined alert {} (origin {}/{}, raised {}), which does not overlap it",
                        describe(a),
                        alert.id,
                        alert.service,
                        alert.provider,
                        format_hhmm(alert.timestamp)
                    ),
                ),
                None => (
                    cause::STRONG_BUT_NOT_RAISED,
                    format!("{} is in no alert and no rule held it", describe(a)),
                ),
            };
        }
        let held: Vec<&Anomaly> = found.iter().copied().filter(|a| a.held_by.is_some()).collect();
        if let Some(a) = strongest(held.iter().copied()) {
            let mut rules: BTreeMap<&str, usize> = BTreeMap::new();
            for h in &held {
                *rules.entry(h.held_by.as_deref().unwrap_or_default()).or_default() += 1;
            }
            let rules: Vec<String> = rules.iter().map(|(r, n)| format!("{r} ({n})")).collect();
            return (
                cause::HELD_BACK,
                format!("held back by {}; the strongest held: {}", rules.join(", "), describe(a)),
            );
        }
        let windows: std::collections::BTreeSet<Millis> = found.iter().map(|a| a.window_start).collect();
        let total: f64 = found.iter().map(|a| a.score).sum();
        (
            cause::BELOW_THRESHOLD,
            format!(
                "{} anomalies on {origin} over {} windows in {span}, summing {total:.0}, none reaching {:.0}; the strongest: {}",
                found.len(),
                windows.len(),
                self.raise_single,
                describe(best)
            ),
        )
    }

    fn wrong_origin(&self, inc: &LabelledIncident, alert_ids: &[String]) -> (&'static str, String) {
        let origin = format!("{}/{}", inc.service, inc.provider);
        let Some(alert) = alert_ids.first().and_then(|id| self.alerts.iter().find(|a| &a.id == id)) else {
            return (cause::ORIGIN_NOT_IN_ALERT, "its alert is not in the alerts read".to_owned());
        };
        let named = alert.suspects.first().map_or_else(
            || format!("{}/{}", alert.service, alert.provider),
            |s| format!("{}/{} ({:.0}: {})", s.service, s.provider, s.score, s.why),
        );
        if let Some(rank) = alert
            .suspects
            .iter()
            .position(|s| s.service == inc.service && s.provider == inc.provider)
        {
            let s = &alert.suspects[rank];
            return (
                cause::ORIGIN_RANKED_LOWER,
                format!(
                    "alert {} named {named} first; {origin} ranked {} of {} ({:.0}: {})",
                    alert.id,
                    rank + 1,
                    alert.suspects.len(),
                    s.score,
                    s.why
                ),
            );
        }
        let found = self.on_origin(inc);
        let on_origin = match strongest(found.iter().copied()) {
            None => "no anomaly on the origin in its window".to_owned(),
            Some(a) => match self.holder.get(a.id.as_str()) {
                Some(other) if other.id != alert.id => format!("the origin's strongest, {}, joined alert {}", describe(a), other.id),
                _ => format!("the origin's strongest, {}, joined no alert", describe(a)),
            },
        };
        (cause::ORIGIN_NOT_IN_ALERT, format!("alert {} named {named}; {on_origin}", alert.id))
    }

    fn raised_by(&self, alert: &Alert, labels: &Labels) -> String {
        let mut found: Vec<&Anomaly> = alert
            .anomaly_ids
            .iter()
            .filter_map(|id| self.by_id.get(id.as_str()).copied())
            .collect();
        found.sort_by(|x, y| y.score.total_cmp(&x.score));
        let mut why = format!(
            "{} {} ({}/{}): ",
            format_hhmm(alert.timestamp),
            alert.priority,
            alert.service,
            alert.provider
        );
        if found.is_empty() {
            why.push_str("none of its anomalies is in the anomalies read");
        } else {
            let top: Vec<String> = found.iter().take(3).map(|a| describe(a)).collect();
            why.push_str(&format!("{} anomalies, the strongest: {}", found.len(), top.join("; ")));
        }
        // During a labelled change that expects no alert (a benign deploy), say so.
        if let Some(inc) = labels.incidents.iter().find(|i| !i.expect_alert && overlaps(alert, i)) {
            why.push_str(&format!(
                " (during {} {:?} on {}, which expects no alert)",
                inc.id, inc.kind, inc.service
            ));
        }
        why
    }
}

/// The incident's window with the scorer's slack.
fn window(inc: &LabelledIncident) -> (Millis, Millis) {
    (inc.start - EARLY_SLACK, inc.end + LATE_SLACK)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::tests::anomaly;
    use crate::eval::evaluate;
    use crate::eval::tests::{alert, inc};
    use crate::model::anomaly::AnomalyKind;
    use crate::model::time::{DAY_MS, MINUTE_MS};

    fn labels(incidents: Vec<LabelledIncident>) -> Labels {
        Labels {
            seed: 7,
            topology: "t".into(),
            start: 0,
            end: DAY_MS,
            family: Default::default(),
            events: 0,
            incidents,
        }
    }

    #[test]
    fn each_miss_gets_the_first_cause_that_applies() {
        let h = 3_600_000;
        let l = labels(vec![
            inc("quiet", h, "payments"),
            inc("weak", 3 * h, "ledger"),
            inc("held", 5 * h, "fraud"),
            inc("late", 7 * h, "cards"),
        ]);
        let weak = anomaly("ledger", AnomalyKind::Latency, 40.0, 3 * h + MINUTE_MS);
        let mut held = anomaly("fraud", AnomalyKind::Traffic, 90.0, 5 * h + MINUTE_MS);
        held.held_by = Some("learned_pause".into());
        let late = anomaly("cards", AnomalyKind::Errors, 80.0, 7 * h + MINUTE_MS);
        // The cards anomaly joined an alert raised long after the incident.
        let mut joined = alert(9 * h, "cards");
        joined.start = 9 * h - MINUTE_MS;
        joined.anomaly_ids = vec![late.id.clone()];
        let anomalies = vec![weak, held, late];
        let alerts = vec![joined];
        let r = evaluate(&l, &alerts);
        let e = explain(&r, &l, &alerts, &anomalies, 65.0);
        let causes: Vec<(&str, &str, &str)> = e.iter().map(|x| (x.subject.as_str(), x.verdict, x.cause)).collect();
        assert_eq!(
            causes,
            vec![
                ("quiet", "missed", cause::NO_ANOMALY_ON_ORIGIN),
                ("weak", "missed", cause::BELOW_THRESHOLD),
                ("held", "missed", cause::HELD_BACK),
                ("late", "missed", cause::JOINED_OTHER_ALERT),
                (alerts[0].id.as_str(), "false_alert", cause::RAISED_BY),
            ]
        );
        assert!(e[1].why.contains("none reaching 65"), "{}", e[1].why);
        assert!(e[2].why.contains("learned_pause (1)"), "{}", e[2].why);
        assert!(e[4].why.contains("80 errors"), "the false alert names what raised it: {}", e[4].why);
        assert_eq!(count_causes(&e)["missed LatencySpike: below_threshold"], 1);
    }

    #[test]
    fn a_wrong_origin_says_where_the_origin_ranked() {
        let h = 3_600_000;
        let l = labels(vec![inc("slow", h, "ledger")]);
        let mut a = alert(h + 2 * MINUTE_MS, "gateway");
        let suspect = |s: &str, score| crate::model::anomaly::Suspect {
            service: s.into(),
            provider: "aws".into(),
            score,
            why: format!("{s} deviates"),
        };
        a.suspects = vec![suspect("gateway", 90.0), suspect("ledger", 60.0)];
        let r = evaluate(&l, &[a.clone()]);
        let e = explain(&r, &l, &[a], &[], 65.0);
        assert_eq!((e[0].verdict, e[0].cause), ("wrong_origin", cause::ORIGIN_RANKED_LOWER));
        assert!(e[0].why.contains("ranked 2 of 2"), "{}", e[0].why);
    }
}
