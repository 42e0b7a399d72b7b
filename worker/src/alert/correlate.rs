//! The seam between scoring and alerting. Closing a window, a pipeline hands the alert manager
//! one [`WindowDigest`]: the window's anomalies, the calls each entity had, and the call edges
//! and dependency changes learned since the last window. A whole pipeline passes it on at once
//! ([`correlate`]). A partition of a job (a pipeline that scores only some services) writes it
//! instead, and the correlator, which alone needs the whole picture, merges the partitions'
//! digests of one window ([`DigestMerger`], in partition order, only once every partition has
//! passed the window) and runs the alert manager on the merged digest. So alerts do not depend
//! on which worker scored which partition, nor when.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::AlertManager;
use crate::model::anomaly::{Alert, Anomaly, Weight};
use crate::model::time::Millis;

/// What the alert manager needs of one closed window.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct WindowDigest {
    pub start: Millis,
    pub end: Millis,
    pub anomalies: Vec<Anomaly>,
    /// Indexes in `anomalies` of the findings that only corroborate (their weight is not part
    /// of the anomaly document).
    #[serde(default)]
    pub corroborating: Vec<usize>,
    /// Calls each entity had in the window, labelled as [`crate::detect::entity_label`] does.
    #[serde(default)]
    pub calls: Vec<(String, u64)>,
    /// Caller → callee edges first seen since the last window.
    #[serde(default)]
    pub edges: Vec<(String, String)>,
    /// Nodes that started calling a brand-new service, and when.
    #[serde(default)]
    pub changes: Vec<(String, Millis)>,
}

impl WindowDigest {
    /// Records each anomaly's weight (which the document does not carry) in `corroborating`.
    pub fn note_weights(&mut self) {
        self.corroborating = (self.anomalies.iter().enumerate())
            .filter(|(_, a)| a.weight == Weight::Corroborates)
            .map(|(i, _)| i)
            .collect();
    }

    /// Puts the weights recorded by [`WindowDigest::note_weights`] back on the anomalies.
    fn restore_weights(&mut self) {
        for &i in &self.corroborating {
            if let Some(a) = self.anomalies.get_mut(i) {
                a.weight = Weight::Corroborates;
            }
        }
    }

    /// Appends `other` (a later partition's digest of the same window).
    fn absorb(&mut self, mut other: WindowDigest) {
        let offset = self.anomalies.len();
        self.anomalies.append(&mut other.anomalies);
        self.corroborating.extend(other.corroborating.iter().map(|i| i + offset));
        self.calls.append(&mut other.calls);
        self.edges.append(&mut other.edges);
        self.changes.append(&mut other.changes);
    }
}

/// Runs one window through the alert manager: edges and changes first, then feedback, the
/// recurrences, the calls seen (for recovery), the anomalies, and which rule held back each one
/// that was held.
/// Returns the alerts that changed; the digest's anomalies come back marked.
pub fn correlate(alerts: &mut AlertManager, digest: &mut WindowDigest) -> Vec<Alert> {
    digest.restore_weights();
    for (caller, callee) in digest.edges.drain(..) {
        alerts.add_edge(caller, callee);
    }
    for (node, t) in digest.changes.drain(..) {
        alerts.note_change(node, t);
    }
    alerts.apply_feedback(&mut digest.anomalies, digest.end);
    alerts.hold_recurrences(&mut digest.anomalies, digest.end);
    if alerts.has_open_alerts() {
        alerts.observe_calls(std::mem::take(&mut digest.calls));
    }
    let changed = alerts.ingest(&digest.anomalies, digest.end);
    alerts.mark_grouping(&mut digest.anomalies);
    alerts.explain_holds(&mut digest.anomalies);
    changed
}

/// The correlator's buffer: digests by window until every partition has passed the window.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct DigestMerger {
    /// Per partition, the data time before which it has handed over every window it closed.
    passed: Vec<Millis>,
    /// Per window start, the partitions' digests by partition index.
    waiting: BTreeMap<Millis, BTreeMap<u32, WindowDigest>>,
}

impl DigestMerger {
    pub fn new(partitions: u32) -> Self {
        DigestMerger {
            passed: vec![Millis::MIN; partitions as usize],
            waiting: BTreeMap::new(),
        }
    }

    /// Takes partition `index`'s digest of a window.
    pub fn offer(&mut self, index: u32, digest: WindowDigest) {
        self.waiting.entry(digest.start).or_default().insert(index, digest);
    }

    /// Partition `index` has handed over every window ending at or before `t`.
    pub fn passed(&mut self, index: u32, t: Millis) {
        if let Some(p) = self.passed.get_mut(index as usize) {
            *p = (*p).max(t);
        }
    }

    /// The windows every partition has passed, merged in partition order, oldest first.
    pub fn ready(&mut self) -> Vec<WindowDigest> {
        let all = self.passed.iter().copied().min().unwrap_or(Millis::MIN);
        let mut out = Vec::new();
        while let Some(entry) = self.waiting.first_entry() {
            let end = entry.get().values().next().map_or(Millis::MIN, |d| d.end);
            if end > all {
                break;
            }
            out.push(merge(entry.remove()));
        }
        out
    }

    /// Every window still waiting, merged (the end of a bounded run: nothing more will come).
    pub fn drain(&mut self) -> Vec<WindowDigest> {
        std::mem::take(&mut self.waiting).into_values().map(merge).collect()
    }
}

fn merge(parts: BTreeMap<u32, WindowDigest>) -> WindowDigest {
    let mut parts = parts.into_values();
    let mut first = parts.next().unwrap_or_default();
    for d in parts {
        first.absorb(d);
    }
    first
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(start: Millis, ids: &[&str]) -> WindowDigest {
        let anomalies = ids
            .iter()
            .map(|id| Anomaly {
                id: (*id).to_owned(),
                weight: if id.starts_with('c') {
                    Weight::Corroborates
                } else {
                    Weight::Raises
                },
                ..crate::alert::tests::anomaly("svc", crate::model::anomaly::AnomalyKind::Latency, 80.0, start)
            })
            .collect();
        let mut d = WindowDigest {
            start,
            end: start + 60_000,
            anomalies,
            ..Default::default()
        };
        d.note_weights();
        d
    }

    #[test]
    fn windows_are_merged_in_partition_order_once_every_partition_passed_them() {
        let mut m = DigestMerger::new(2);
        m.offer(1, digest(0, &["b1", "c1"]));
        m.passed(1, 120_000);
        assert!(m.ready().is_empty(), "partition 0 has not passed the window");
        m.offer(0, digest(0, &["a0"]));
        m.offer(1, digest(60_000, &["b2"]));
        m.passed(0, 60_000);
        let ready = m.ready();
        assert_eq!(ready.len(), 1, "only the first window is passed by both");
        let ids: Vec<&str> = ready[0].anomalies.iter().map(|a| a.id.as_str()).collect();
        assert_eq!(ids, ["a0", "b1", "c1"]);
        assert_eq!(ready[0].corroborating, [2], "weights follow their anomalies");
        let rest = m.drain();
        assert_eq!(rest.len(), 1);
        assert_eq!(rest[0].start, 60_000);
    }

    #[test]
    fn a_digest_survives_a_round_trip_through_json() {
        let mut d = digest(0, &["a", "c"]);
        d.calls = vec![("svc/onprem".into(), 7)];
        d.edges = vec![("a/onprem".into(), "b/onprem".into())];
        let back: WindowDigest = serde_json::from_str(&serde_json::to_string(&d).unwrap()).unwrap();
        let mut expected = d.clone();
        // The weight is not serialized; the index list carries it.
        for a in &mut expected.anomalies {
            a.weight = Weight::Raises;
        }
        assert_eq!(back, expected);
        let mut back = back;
        back.restore_weights();
        assert_eq!(back.anomalies[1].weight, Weight::Corroborates);
    }
}
