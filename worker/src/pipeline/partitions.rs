//! One job scored as partitions, in one process: what several workers do on a cluster, laid out
//! on a stream (`detect --partitions N`, and the tests that hold the partitioned job to the
//! whole one).
//!
//! Each event goes to the pipeline of its service's partition
//! ([`crate::job::partition::partition_of`] on `service.name`): windows, baselines, forests,
//! forecasts and models of a service live in one partition only. A call's caller is a span that
//! another partition may have scored; the router remembers recent spans' services (as a worker
//! reads them from the cluster) and tells the callee's partition before handing it the call.
//! Closed windows come back as digests; the correlator (one alert manager) takes each window once
//! every partition has passed it, merged in partition order. All partitions move with the
//! stream's watermark, so a quiet partition does not hold the others' windows back.
//!
//! What a partition cannot see: a journey or a session whose calls fall in several partitions
//! is followed in each partition by its own calls only, and the window and request forests are
//! fitted per partition on its services. So a partitioned job's findings differ from a whole
//! job's there; they do not depend on which worker scores which partition.

use rustc_hash::FxHashMap;

use super::{Pipeline, PipelineSetup, RunStats};
use crate::alert::correlate::{correlate, DigestMerger, WindowDigest};
use crate::alert::AlertManager;
use crate::job::partition::partition_of;
use crate::model::service::ServiceRecord;
use crate::model::time::Millis;
use crate::model::{hash_str, Alert, Anomaly, Event, JourneyRecord, ServiceMetrics};
use crate::sink::ResultSink;

/// Events between two moves of every partition to the stream's watermark.
const ADVANCE_EVERY: u64 = 4096;

/// The partitions of one job and their correlator.
pub struct PartitionedPipeline {
    parts: Vec<Pipeline>,
    merger: DigestMerger,
    alerts: AlertManager,
    /// Recent spans' `(service, provider, partition)`, two generations by time.
    spans: [FxHashMap<u64, (String, String, u32)>; 2],
    /// Parents named before their own record came (a caller logs when its call ends, after its
    /// callees): the partitions of their children, told when the parent arrives (the child
    /// waits in its partition's reordering for as long as the lateness).
    awaited: [FxHashMap<u64, Vec<u32>>; 2],
    generation_end: Millis,
    newest: Millis,
    pushed: u64,
    lateness: Millis,
    window: Millis,
    quiet_to_resolve: Millis,
    /// Alerts raised and anomalies written by the correlator.
    pub alerts_raised: u64,
}

impl PartitionedPipeline {
    pub fn new(setup: &PipelineSetup, count: u32) -> Result<Self, crate::ml::MlError> {
        let count = count.max(1);
        let parts = (0..count)
            .map(|_| {
                let mut p = Pipeline::new(setup.clone())?;
                p.hand_windows_to_correlator();
                Ok(p)
            })
            .collect::<Result<Vec<_>, crate::ml::MlError>>()?;
        Ok(PartitionedPipeline {
            parts,
            merger: DigestMerger::new(count),
            alerts: AlertManager::new(setup.cfg.alerts.clone()),
            spans: [FxHashMap::default(), FxHashMap::default()],
            awaited: [FxHashMap::default(), FxHashMap::default()],
            generation_end: Millis::MIN,
            newest: Millis::MIN,
            pushed: 0,
            lateness: setup.cfg.lateness,
            window: setup.cfg.window,
            quiet_to_resolve: setup.cfg.alerts.quiet_to_resolve,
            alerts_raised: 0,
        })
    }

    /// Takes acknowledgements, silences and verdicts in (the correlator applies them).
    pub fn offer_feedback(&mut self, records: Vec<crate::feedback::FeedbackRecord>) -> Vec<crate::feedback::FeedbackError> {
        self.alerts.offer_feedback(records, false)
    }

    /// Routes one event to its partition (telling it the caller when another partition has it).
    pub fn push(&mut self, ev: Event, sink: &mut dyn ResultSink) -> anyhow::Result<()> {
        let count = self.parts.len() as u32;
        let index = partition_of(&ev.service, count);
        let t = ev.timestamp;
        if t > self.newest {
            self.newest = t;
        }
        // Spans are kept for the lateness plus two windows, as a pipeline keeps its own.
        if t >= self.generation_end {
            let [current, previous] = &mut self.spans;
            *previous = std::mem::take(current);
            let [current, previous] = &mut self.awaited;
            *previous = std::mem::take(current);
            self.generation_end = t.saturating_add(self.lateness + 2 * self.window);
        }
        if let Some(parent) = ev.parent_id.as_deref() {
            let key = hash_str(parent);
            let known = self.spans[0].get(&key).or_else(|| self.spans[1].get(&key));
            match known {
                Some((service, provider, p)) if *p != index => {
                    self.parts[index as usize].know_caller(parent, service, provider, t);
                }
                Some(_) => {}
                None => self.awaited[0].entry(key).or_default().push(index),
            }
        }
        if let Some(span) = ev.span_id.as_deref() {
            let key = hash_str(span);
            for waiting in [self.awaited[0].remove(&key), self.awaited[1].remove(&key)].into_iter().flatten() {
                for p in waiting.into_iter().filter(|&p| p != index) {
                    self.parts[p as usize].know_caller(span, &ev.service, &ev.provider, t);
                }
            }
            self.spans[0].insert(key, (ev.service.to_string(), ev.provider.to_string(), index));
        }
        let mut part_sink = PartitionSink {
            index,
            sink,
            digests: Vec::new(),
        };
        self.parts[index as usize].push(ev, &mut part_sink)?;
        let digests = std::mem::take(&mut part_sink.digests);
        self.take_digests(index, digests);
        self.pushed += 1;
        if self.pushed % ADVANCE_EVERY == 0 {
            self.advance_all(self.newest.saturating_sub(self.lateness), sink)?;
        }
        self.correlate_ready(sink)
    }

    /// Moves every partition to `t` (every event before it has been pushed).
    fn advance_all(&mut self, t: Millis, sink: &mut dyn ResultSink) -> anyhow::Result<()> {
        for index in 0..self.parts.len() as u32 {
            let mut part_sink = PartitionSink {
                index,
                sink,
                digests: Vec::new(),
            };
            self.parts[index as usize].advance_to(t, &mut part_sink)?;
            let digests = std::mem::take(&mut part_sink.digests);
            self.take_digests(index, digests);
        }
        Ok(())
    }

    fn take_digests(&mut self, index: u32, digests: Vec<WindowDigest>) {
        for d in digests {
            self.merger.offer(index, d);
        }
        if let Some(open) = self.parts[index as usize].window_start() {
            self.merger.passed(index, open);
        }
    }

    fn correlate_ready(&mut self, sink: &mut dyn ResultSink) -> anyhow::Result<()> {
        for mut digest in self.merger.ready() {
            self.correlate_one(&mut digest, sink)?;
        }
        Ok(())
    }

    fn correlate_one(&mut self, digest: &mut WindowDigest, sink: &mut dyn ResultSink) -> anyhow::Result<()> {
        let changed = correlate(&mut self.alerts, digest);
        sink.write_anomalies(&digest.anomalies)?;
        sink.write_alerts(&changed)?;
        self.alerts_raised = self.alerts.raised();
        Ok(())
    }

    /// Finishes every partition, correlates what is left, lets alerts resolve; the counters
    /// of all partitions added up.
    pub fn finish(&mut self, sink: &mut dyn ResultSink) -> anyhow::Result<RunStats> {
        let mut total = RunStats::default();
        let mut services: Vec<ServiceRecord> = Vec::new();
        for index in 0..self.parts.len() as u32 {
            let mut part_sink = PartitionSink {
                index,
                sink,
                digests: Vec::new(),
            };
            let stats = self.parts[index as usize].finish(&mut part_sink)?;
            let digests = std::mem::take(&mut part_sink.digests);
            self.take_digests(index, digests);
            services.extend(self.parts[index as usize].registry.records(&self.parts[index as usize].names));
            add_stats(&mut total, &stats);
        }
        let mut last_end = None;
        for mut digest in self.merger.drain() {
            last_end = Some(digest.end);
            self.correlate_one(&mut digest, sink)?;
        }
        if let Some(end) = last_end {
            let changed = self.alerts.tick(end.saturating_add(self.quiet_to_resolve));
            sink.write_alerts(&changed)?;
        }
        services.sort_by(|a, b| (&a.service, &a.provider).cmp(&(&b.service, &b.provider)));
        sink.finish(&services)?;
        total.alerts_raised = self.alerts.raised();
        total.alerts_by_priority.clone_from(self.alerts.raised_by_priority());
        total.held_by_rule.clone_from(self.alerts.held());
        total.alert_bounds.clone_from(self.alerts.bounds());
        total.feedback.clone_from(&self.alerts.feedback().counts);
        Ok(total)
    }
}

/// The counters of a run over all partitions.
fn add_stats(total: &mut RunStats, part: &RunStats) {
    total.events += part.events;
    total.late_events += part.late_events;
    total.windows = total.windows.max(part.windows);
    total.entities += part.entities;
    total.services += part.services;
    total.anomalies += part.anomalies;
    for (k, v) in &part.anomalies_by_detector {
        *total.anomalies_by_detector.entry(k.clone()).or_default() += v;
    }
    total.refused_events += part.refused_events;
    total.evicted_entities += part.evicted_entities;
    total.untracked_session_calls += part.untracked_session_calls;
    total.untracked_journey_calls += part.untracked_journey_calls;
    total.client_records += part.client_records;
    total.first_event = match (total.first_event, part.first_event) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    total.last_event = total.last_event.max(part.last_event);
}

/// What a partition writes: its metrics and journeys go straight out; its digests are kept for
/// the correlator; anomalies and alerts come only from the correlator.
struct PartitionSink<'a> {
    index: u32,
    sink: &'a mut dyn ResultSink,
    digests: Vec<WindowDigest>,
}

impl ResultSink for PartitionSink<'_> {
    fn write_anomalies(&mut self, _anomalies: &[Anomaly]) -> anyhow::Result<()> {
        anyhow::bail!("partition {} wrote anomalies itself: they go to the correlator", self.index)
    }
    fn write_alerts(&mut self, alerts: &[Alert]) -> anyhow::Result<()> {
        anyhow::ensure!(alerts.is_empty(), "partition {} raised alerts itself", self.index);
        Ok(())
    }
    fn write_journeys(&mut self, journeys: &[JourneyRecord]) -> anyhow::Result<()> {
        self.sink.write_journeys(journeys)
    }
    fn write_metrics(&mut self, metrics: &[ServiceMetrics]) -> anyhow::Result<()> {
        self.sink.write_metrics(metrics)
    }
    fn write_digest(&mut self, digest: &WindowDigest) -> anyhow::Result<()> {
        self.digests.push(digest.clone());
        Ok(())
    }
    fn finish(&mut self, _services: &[ServiceRecord]) -> anyhow::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::PipelineConfig;
    use crate::simulate::{simulate_events, SimConfig};
    use crate::sink::MemorySink;

    fn run_whole(cfg: &PipelineConfig, events: &[Event]) -> MemorySink {
        let mut sink = MemorySink::default();
        let mut p = Pipeline::new(cfg.clone()).unwrap();
        for e in events {
            p.push(e.clone(), &mut sink).unwrap();
        }
        p.finish(&mut sink).unwrap();
        sink
    }

    fn run_partitioned(cfg: &PipelineConfig, events: &[Event], count: u32) -> MemorySink {
        let mut sink = MemorySink::default();
        let mut p = PartitionedPipeline::new(&cfg.clone().into(), count).unwrap();
        for e in events {
            p.push(e.clone(), &mut sink).unwrap();
        }
        p.finish(&mut sink).unwrap();
        sink
    }

    fn ids(sink: &MemorySink) -> (Vec<String>, Vec<(String, Vec<String>)>) {
        let mut anomalies: Vec<String> = sink.anomalies.iter().map(|a| format!("{} {:?}", a.id, a.held_by)).collect();
        anomalies.sort();
        let alerts = sink.alerts().into_iter().map(|a| (a.id.clone(), a.services.clone())).collect();
        (anomalies, alerts)
    }

    fn events(seed: u64) -> Vec<Event> {
        let sim = SimConfig {
            seed,
            duration: 6 * crate::model::time::HOUR_MS,
            rate: 5.0,
            ..SimConfig::default()
        };
        simulate_events(sim).unwrap().0
    }

    /// The same simulated run (`seed`) through one whole pipeline and through `partitions`.
    fn whole_and_parted(seed: u64, partitions: u32) -> (MemorySink, MemorySink) {
        let (cfg, events) = (PipelineConfig::default(), events(seed));
        (run_whole(&cfg, &events), run_partitioned(&cfg, &events, partitions))
    }

    #[test]
    fn one_partition_is_the_whole_job() {
        let (whole, parted) = whole_and_parted(3, 1);
        assert!(!whole.alerts().is_empty(), "the simulated incidents raise alerts");
        assert_eq!(ids(&whole), ids(&parted), "the correlator's path is the pipeline's own");
        assert_eq!(whole.journeys.len(), parted.journeys.len());
    }

    #[test]
    fn partitions_find_the_incidents_and_follow_callers_across_partitions() {
        let (whole, parted) = whole_and_parted(3, 3);
        let hops = |s: &MemorySink| s.anomalies.iter().filter(|a| a.hop_from.is_some()).count();
        assert!(hops(&whole) > 0);
        assert!(hops(&parted) > 0, "callers scored by other partitions are known to their callees");
        let raised = |s: &MemorySink| s.alerts().len();
        assert!(raised(&parted) > 0);
        // Each alert of the whole job is about services an alert of the partitioned job names too.
        let named: std::collections::BTreeSet<String> = parted.alerts().iter().flat_map(|a| a.services.clone()).collect();
        for a in whole.alerts() {
            assert!(
                a.services.iter().any(|s| named.contains(s)),
                "alert on {:?} has no partitioned counterpart",
                a.services
            );
        }
        // Run twice, the same: nothing depends on the order partitions were driven in.
        assert_eq!(ids(&parted), ids(&whole_and_parted(3, 3).1));
    }

    #[test]
    fn a_journey_across_partitions_is_written_once_by_the_partition_of_its_entry() {
        let (whole, parted) = whole_and_parted(4, 3);
        let parts_of = |sink: &MemorySink, trace: &str| -> Vec<String> {
            (sink.journeys.iter().filter(|k| k.trace_id == trace))
                .map(|k| format!("{} {:?} {:?} {}", k.service, k.services, k.hops, k.timestamp))
                .collect()
        };
        let entries: std::collections::BTreeMap<&str, &str> =
            whole.journeys.iter().map(|j| (j.trace_id.as_str(), j.service.as_str())).collect();
        let mut traces = std::collections::BTreeSet::new();
        let mut across = 0;
        for j in &parted.journeys {
            assert!(
                traces.insert(j.trace_id.as_str()),
                "trace {} written twice: {:?}; whole: {:?}",
                j.trace_id,
                parts_of(&parted, &j.trace_id),
                parts_of(&whole, &j.trace_id)
            );
            // Each written journey starts where the whole job's starts (not at a callee whose
            // caller another partition scored).
            if let Some(entry) = entries.get(j.trace_id.as_str()) {
                assert_eq!(*entry, j.service, "trace {}", j.trace_id);
            }
            assert!(
                !j.hops.iter().any(|h| h.to == format!("{}/{}", j.service, j.provider)),
                "journey {} starts at a callee: {:?}",
                j.trace_id,
                j.hops
            );
            across += usize::from(
                whole
                    .journeys
                    .iter()
                    .any(|w| w.trace_id == j.trace_id && w.services.len() > j.services.len()),
            );
        }
        assert!(!parted.journeys.is_empty());
        assert!(across > 0, "some journeys cross partitions (so the test means something)");
    }
}
