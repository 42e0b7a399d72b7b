//! Several inputs read side by side and merged by time: one log per service or host (nginx on
//! each machine, a load balancer's file per node) is how access logs come, and reading them one
//! after another would make every file after the first hours late. Each input keeps its own
//! reader, format and clock guard; the merge hands on the earliest event first.

use std::collections::VecDeque;
use std::path::PathBuf;

use super::formats::InputFormat;
use super::lines::Rejects;
use super::{EventSource, IngestReport, InputSettings, LineSource};
use crate::model::Event;

/// Events read ahead from each input.
const PART_BATCH: usize = 1024;

struct Part {
    source: LineSource,
    buffered: VecDeque<Event>,
    done: bool,
}

/// Inputs merged by event time.
pub struct MergedSource {
    parts: Vec<Part>,
    inputs: Vec<PathBuf>,
    report: IngestReport,
}

impl MergedSource {
    /// Opens every input now (so nothing is created for a run whose input cannot be read).
    pub fn open(inputs: &[PathBuf], settings: InputSettings, format: &InputFormat) -> anyhow::Result<Self> {
        let mut parts = Vec::with_capacity(inputs.len());
        for input in inputs {
            let mut source = LineSource::new(vec![input.clone()])
                .with_settings(settings)
                .with_format(format.clone())?;
            source.open_first()?;
            parts.push(Part {
                source,
                buffered: VecDeque::new(),
                done: false,
            });
        }
        let mut merged = MergedSource {
            parts,
            inputs: inputs.to_vec(),
            report: IngestReport::default(),
        };
        merged.sum_reports();
        Ok(merged)
    }

    /// Every input's skipped lines into one rejects file.
    pub fn with_rejects(mut self, path: PathBuf) -> Self {
        let rejects = Rejects::new(path);
        self.parts = self
            .parts
            .into_iter()
            .map(|p| Part {
                source: p.source.with_shared_rejects(rejects.clone()),
                ..p
            })
            .collect();
        self
    }

    pub fn inputs(&self) -> &[PathBuf] {
        &self.inputs
    }

    fn sum_reports(&mut self) {
        let mut r = IngestReport::default();
        for p in &self.parts {
            r.absorb(p.source.report());
        }
        self.report = r;
    }
}

impl EventSource for MergedSource {
    fn next_batch(&mut self, batch: &mut Vec<Event>, max: usize) -> anyhow::Result<bool> {
        let before = batch.len();
        let mut more = true;
        while batch.len() - before < max {
            for p in self.parts.iter_mut().filter(|p| !p.done && p.buffered.is_empty()) {
                let mut read = Vec::with_capacity(PART_BATCH);
                p.done = !p.source.next_batch(&mut read, PART_BATCH)?;
                p.buffered.extend(read);
            }
            let heads = self
                .parts
                .iter()
                .enumerate()
                .filter_map(|(i, p)| p.buffered.front().map(|e| (e.timestamp, i)));
            let mut order: Vec<(i64, usize)> = heads.collect();
            order.sort_unstable();
            let Some(&(_, first)) = order.first() else {
                more = false;
                break;
            };
            // Take from the earliest input up to the next input's head (ties to the first).
            let bound = order.get(1).map_or(i64::MAX, |&(t, _)| t);
            let part = &mut self.parts[first];
            while batch.len() - before < max {
                match part.buffered.front() {
                    Some(e) if e.timestamp <= bound || batch.len() == before => {
                        if let Some(e) = part.buffered.pop_front() {
                            batch.push(e);
                        }
                    }
                    _ => break,
                }
                if part.buffered.is_empty() && !part.done {
                    break; // refill before going on: its next event may be earlier than the bound
                }
            }
        }
        self.sum_reports();
        Ok(more || self.parts.iter().any(|p| !p.done || !p.buffered.is_empty()))
    }

    fn report(&self) -> &IngestReport {
        &self.report
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(service: &str, minute: i64) -> String {
        format!(
            r#"{{"@timestamp":"2026-03-02T06:{minute:02}:00Z","service.name":"{service}","cloud.provider":"aws","http.request.method":"GET","url.path":"/x","http.response.status_code":200,"event.duration":1000}}"#
        )
    }

    #[test]
    fn concurrent_files_come_out_in_time_order_with_every_line_counted() {
        let dir = tempfile::tempdir().unwrap();
        let a: Vec<String> = (0..50).map(|m| line("a", m)).collect();
        let mut b: Vec<String> = (0..50).filter(|m| m % 2 == 0).map(|m| line("b", m)).collect();
        b.insert(3, "not json".into());
        let (pa, pb) = (dir.path().join("a.ndjson"), dir.path().join("b.ndjson"));
        std::fs::write(&pa, a.join("\n")).unwrap();
        std::fs::write(&pb, b.join("\n")).unwrap();
        let rejects = dir.path().join("rejected.ndjson");
        let mut s = MergedSource::open(&[pa, pb], InputSettings::default(), &InputFormat::default())
            .unwrap()
            .with_rejects(rejects.clone());
        let mut events = Vec::new();
        while s.next_batch(&mut events, 7).unwrap() {}
        assert_eq!(events.len(), 75);
        assert!(events.windows(2).all(|w| w[0].timestamp <= w[1].timestamp), "merged by time");
        let r = s.report();
        assert_eq!((r.lines, r.events, r.malformed), (76, 75, 1));
        assert_eq!(r.formats.len(), 2, "{:?}", r.formats);
        let rejected = std::fs::read_to_string(rejects).unwrap();
        assert!(rejected.contains("b.ndjson") && rejected.contains("\"line\":4"), "{rejected}");
    }
}
