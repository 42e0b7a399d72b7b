//! Many simulated runs, each detected twice (apiwatch and the static-threshold rule) and
//! scored against its labels: what `apiwatch eval-suite` and `demo` report.

use crate::pipeline::{Pipeline, PipelineSetup, RunStats};
use crate::simulate::incidents::Labels;
use crate::simulate::{self, SimConfig};
use crate::sink::MemorySink;

use super::explain::{explain, Explanation};
use super::{evaluate, EvalReport};

/// Simulates and detects in memory (as one job, or as `partitions` partitions of one);
/// returns the labels, what was written and the run's counters.
pub fn simulate_and_detect(sim: SimConfig, setup: PipelineSetup, partitions: u32) -> anyhow::Result<(Labels, MemorySink, RunStats)> {
    let (events, labels) = simulate::simulate_events(sim)?;
    if partitions > 1 {
        let mut sink = MemorySink::default();
        let mut p = crate::pipeline::partitions::PartitionedPipeline::new(&setup, partitions)?;
        for e in events {
            p.push(e, &mut sink)?;
        }
        let stats = p.finish(&mut sink)?;
        return Ok((labels, sink, stats));
    }
    let (sink, p) = detect_in_memory(events, setup, Vec::new())?;
    Ok((labels, sink, p.stats))
}

/// Detects `events` in memory with `feedback` replayed on the events' clock; returns what was
/// written and the finished pipeline.
pub fn detect_in_memory(
    events: impl IntoIterator<Item = crate::model::Event>,
    setup: PipelineSetup,
    feedback: Vec<crate::feedback::FeedbackRecord>,
) -> anyhow::Result<(MemorySink, Pipeline)> {
    let mut sink = MemorySink::default();
    let mut p = Pipeline::new(setup)?;
    let refused = p.offer_feedback(feedback, false);
    anyhow::ensure!(refused.is_empty(), "feedback refused: {refused:?}");
    for e in events {
        p.push(e, &mut sink)?;
    }
    p.finish(&mut sink)?;
    Ok((sink, p))
}

/// The scores of every run, for apiwatch and for the rule, in the order of the runs, and why
/// apiwatch missed, misnamed or raised falsely what it did (see [`super::explain`]).
#[derive(Default)]
pub struct SuiteReports {
    pub ours: Vec<EvalReport>,
    pub rule: Vec<EvalReport>,
    pub explanations: Vec<Explanation>,
}

/// Runs every simulation through `ours` (as `partitions` partitions of a job when more than
/// one) and `rule`; `progress` hears each detection done (`ours` says whose it was).
pub fn run(
    runs: &[SimConfig],
    (ours, partitions): (&PipelineSetup, u32),
    rule: &PipelineSetup,
    mut progress: impl FnMut(&SimConfig, bool, &EvalReport),
) -> anyhow::Result<SuiteReports> {
    let mut out = SuiteReports::default();
    for sim in runs {
        for (is_ours, cfg, reports) in [(true, ours, &mut out.ours), (false, rule, &mut out.rule)] {
            let parts = if is_ours { partitions } else { 1 };
            let (labels, sink, _) = simulate_and_detect(sim.clone(), cfg.clone(), parts)?;
            let alerts = sink.alerts();
            let report = evaluate(&labels, &alerts);
            if is_ours {
                let raise = cfg.cfg.alerts.raise_single;
                out.explanations.extend(explain(&report, &labels, &alerts, &sink.anomalies, raise));
            }
            progress(sim, is_ours, &report);
            reports.push(report);
        }
    }
    Ok(out)
}
