//! Does feedback teach? A multi-day simulated run is detected once; an analyst played from the
//! labels marks every false alert of the first day (or of the first `marked_days`: an analyst
//! answering alerts as they come) `false_positive`, some time after it ended, with the findings
//! it carried; the same stream is detected again with those verdicts. Scored: false alerts
//! after the marked days before and after, and every incident found before that is no longer
//! found (`apiwatch eval-feedback`).

use serde::Serialize;

use super::{evaluate, EvalReport};
use crate::feedback::{findings_of, FeedbackRecord, Verdict};
use crate::model::anomaly::Alert;
use crate::model::time::{Millis, DAY_MS};
use crate::pipeline::{Pipeline, PipelineSetup};
use crate::simulate::incidents::{IncidentKind, LabelledIncident, Labels};
use crate::simulate::{self, SimConfig};
use crate::sink::MemorySink;

/// One run's result.
#[derive(Clone, Debug, Serialize)]
pub struct FeedbackEval {
    pub topology: String,
    pub seed: u64,
    /// Days whose false alerts were marked.
    pub marked_days: u32,
    /// False alerts of the marked days (all marked), and of the days after, without and with
    /// the verdicts.
    pub marked_false: usize,
    pub later_false_before: usize,
    pub later_false_after: usize,
    /// Incidents detected (with the right origin) over the whole run, before and after.
    pub detected_before: usize,
    pub detected_after: usize,
    pub right_origin_before: usize,
    pub right_origin_after: usize,
    pub incidents: usize,
    /// Incidents detected before and not after (ids): must stay empty.
    pub lost: Vec<String>,
    /// Anomalies the verdicts held back in the second detection.
    pub anomalies_held: u64,
    /// What the analyst's verdicts taught, as `entity kind detector ≤ level` lines.
    pub suppressions: Vec<String>,
    /// The false alerts of the later days left after feedback.
    pub later_false_titles: Vec<String>,
    /// Each routine (labelled not to alert) with the false alerts active during it, before →
    /// after: what was marked, and what learning changed.
    pub routines: Vec<String>,
}

/// `routine-01 09:05 pricing/gcp: [P2 pricing/gcp] → []` for each routine label.
fn routine_lines(labels: &Labels, before: (&EvalReport, &[Alert]), after: (&EvalReport, &[Alert])) -> Vec<String> {
    let during = |(r, alerts): (&EvalReport, &[Alert]), inc: &LabelledIncident| -> String {
        let v: Vec<String> = alerts
            .iter()
            .filter(|a| r.false_alert_ids.contains(&a.id) && super::overlaps(a, inc))
            .map(|a| format!("{} {}/{}", a.priority, a.service, a.provider))
            .collect();
        format!("[{}]", v.join(", "))
    };
    labels
        .incidents
        .iter()
        .filter(|i| i.kind == IncidentKind::Routine)
        .map(|i| {
            format!(
                "{} {} {}: {} → {}",
                i.id,
                crate::model::time::format_rfc3339(i.start),
                i.description,
                during(before, i),
                during(after, i)
            )
        })
        .collect()
}

fn detect(events: &[crate::model::Event], setup: &PipelineSetup, feedback: Vec<FeedbackRecord>) -> anyhow::Result<(MemorySink, Pipeline)> {
    super::suite::detect_in_memory(events.iter().cloned(), setup.clone(), feedback)
}

fn false_after<'a>(r: &EvalReport, alerts: &'a [Alert], from: Millis) -> Vec<&'a Alert> {
    alerts
        .iter()
        .filter(|a| a.timestamp >= from && r.false_alert_ids.contains(&a.id))
        .collect()
}

/// An alert with the strongest findings that raised it: what learning did not cover.
fn explain(a: &Alert, anomalies: &[crate::model::Anomaly]) -> String {
    let strongest: Vec<String> = findings_of(a, anomalies)
        .iter()
        .take(4)
        .map(|f| format!("{}/{} {} {} {:.1}", f.service, f.provider, f.kind.as_str(), f.detector, f.score))
        .collect();
    format!(
        "{} {} (strongest: {})",
        crate::model::time::format_rfc3339(a.timestamp),
        a.title,
        strongest.join("; ")
    )
}

/// Runs `sim` (at least one day more than `marked_days`) with `setup`; the analyst answers each
/// false alert of the first `marked_days` `reaction` after it ended (or was raised, when it
/// never ended).
pub fn run(sim: &SimConfig, setup: &PipelineSetup, reaction: Millis, marked_days: u32) -> anyhow::Result<FeedbackEval> {
    let marked = i64::from(marked_days.max(1)) * DAY_MS;
    anyhow::ensure!(
        sim.duration >= marked + DAY_MS,
        "a feedback evaluation needs a day after the marked ones (--hours {})",
        (marked + DAY_MS) / crate::model::time::HOUR_MS
    );
    let (events, labels) = simulate::simulate_events(sim.clone())?;
    let day2 = labels.start + marked;
    let (before, _) = detect(&events, setup, Vec::new())?;
    let alerts = before.alerts();
    let report = evaluate(&labels, &alerts);
    let day1: Vec<&Alert> = alerts
        .iter()
        .filter(|a| a.timestamp < day2 && report.false_alert_ids.contains(&a.id))
        .collect();
    let verdicts: Vec<FeedbackRecord> = day1
        .iter()
        .map(|a| {
            let at = a.end.unwrap_or(a.timestamp).max(a.timestamp) + reaction;
            FeedbackRecord::verdict(
                &a.id,
                Verdict::FalsePositive,
                findings_of(a, &before.anomalies),
                "analyst (labels)",
                at,
                None,
            )
        })
        .collect();
    let (after_sink, after_pipeline) = detect(&events, setup, verdicts)?;
    let after = after_sink.alerts();
    let report_after = evaluate(&labels, &after);
    let found = |r: &EvalReport| -> Vec<String> { r.results.iter().filter(|x| x.detected).map(|x| x.id.clone()).collect() };
    let found_after = found(&report_after);
    let lost = found(&report).into_iter().filter(|id| !found_after.contains(id)).collect();
    let later_left = false_after(&report_after, &after, day2);
    Ok(FeedbackEval {
        topology: sim.topology.clone(),
        seed: sim.seed,
        marked_days: marked_days.max(1),
        marked_false: day1.len(),
        later_false_before: false_after(&report, &alerts, day2).len(),
        later_false_after: later_left.len(),
        detected_before: report.detected,
        detected_after: report_after.detected,
        right_origin_before: report.detected_right_origin,
        right_origin_after: report_after.detected_right_origin,
        incidents: report.incidents,
        lost,
        anomalies_held: after_pipeline.stats.feedback.anomalies_held,
        suppressions: after_pipeline
            .feedback()
            .suppressions()
            .map(|s| format!("{}/{} {} {} ≤ {:.1}", s.service, s.provider, s.kind.as_str(), s.detector, s.level))
            .collect(),
        routines: routine_lines(&labels, (&report, &alerts), (&report_after, &after)),
        later_false_titles: later_left.iter().map(|a| explain(a, &after_sink.anomalies)).collect(),
    })
}
