//! Where events come from. Every source yields parsed events in batches and keeps an
//! [`IngestReport`] of what it could not use, so the pipeline has one code path whatever the
//! source (files today, Elasticsearch next).

pub mod access;
mod lines;
mod read_ahead;

pub use access::{AccessDefaults, AccessLogParser, LogFormat};
pub use lines::LineSource;
pub use read_ahead::ReadAhead;

use crate::model::Event;

/// A stream of API-call events.
pub trait EventSource {
    /// Appends up to `max` events to `batch`. Returns `false` once the source is exhausted.
    fn next_batch(&mut self, batch: &mut Vec<Event>, max: usize) -> anyhow::Result<bool>;
    /// What was read and what was skipped, so far.
    fn report(&self) -> &IngestReport;
}

/// How many lines a source read, used and skipped, with the first few problems located.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct IngestReport {
    pub lines: u64,
    pub events: u64,
    pub blank: u64,
    pub malformed: u64,
    pub missing_field: u64,
    pub bad_value: u64,
    /// `file:line: problem`, the first [`IngestReport::MAX_SAMPLES`] of them.
    pub samples: Vec<String>,
}

impl IngestReport {
    pub const MAX_SAMPLES: usize = 10;

    pub fn skipped(&self) -> u64 {
        self.malformed + self.missing_field + self.bad_value
    }

    /// Adds another report's counts (and samples, up to the limit).
    pub fn absorb(&mut self, other: &IngestReport) {
        self.lines += other.lines;
        self.events += other.events;
        self.blank += other.blank;
        self.malformed += other.malformed;
        self.missing_field += other.missing_field;
        self.bad_value += other.bad_value;
        let room = Self::MAX_SAMPLES.saturating_sub(self.samples.len());
        self.samples.extend(other.samples.iter().take(room).cloned());
    }

    pub(crate) fn note(&mut self, location: &str, line: u64, problem: &dyn std::fmt::Display) {
        if self.samples.len() < Self::MAX_SAMPLES {
            self.samples.push(format!("{location}:{line}: {problem}"));
        }
    }
}
