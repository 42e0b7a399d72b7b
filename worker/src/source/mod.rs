//! Where events come from. Every source yields parsed events in batches and keeps an
//! [`IngestReport`] of what it could not use, so the pipeline has one code path whatever the
//! source: files and stdin (NDJSON or access logs), or the log indices through
//! [`elasticsearch`] (point-in-time pages).

pub mod access;
pub mod elasticsearch;
pub mod fields;
pub mod formats;
pub mod json;
mod lines;
mod merge;
pub mod mutate;
mod read_ahead;
pub mod skew;

pub use access::{AccessDefaults, AccessLogParser};
pub use formats::{InputFormat, LogFormat};
pub use lines::{LineSource, Rejects};
pub use merge::MergedSource;
pub use read_ahead::ReadAhead;
pub use skew::SkewSettings;

use std::collections::BTreeMap;

use crate::model::time::TimeRange;

use crate::model::Event;

/// A stream of API-call events.
pub trait EventSource {
    /// Appends up to `max` events to `batch`. Returns `false` once the source is exhausted.
    fn next_batch(&mut self, batch: &mut Vec<Event>, max: usize) -> anyhow::Result<bool>;
    /// What was read and what was skipped, so far.
    fn report(&self) -> &IngestReport;
}

/// What a line source accepts (`[input]` in the configuration).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct InputSettings {
    /// Timestamps outside are refused with the reason.
    pub time_range: TimeRange,
    /// Events far ahead of the stream are held and judged (see [`skew`]).
    pub skew: SkewSettings,
}

/// How many lines a source read, used and skipped, with the first few problems located.
/// Every line read is exactly one of: used (`events`), `blank`, or skipped (see
/// [`IngestReport::skipped`]).
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct IngestReport {
    pub lines: u64,
    pub events: u64,
    pub blank: u64,
    pub malformed: u64,
    pub missing_field: u64,
    pub bad_value: u64,
    /// Events refused as stamped far ahead of the stream (a wrong clock).
    pub clock_skew: u64,
    /// Events kept without a duration (the log has no timing): latency is not judged for them.
    pub untimed: u64,
    /// Records that are not API calls (Elastic APM internal spans): left out, not errors.
    pub not_calls: u64,
    /// What would add timing, for the summary (set with the first untimed event).
    pub timing_hint: Option<String>,
    /// Per input, the format it was read as and why (`access.log: nginx (recognised ...)`).
    pub formats: Vec<String>,
    /// What the user should know about the inputs (a format that does not fit, and which does).
    pub notes: Vec<String>,
    /// `file:line: problem`, the first [`IngestReport::MAX_SAMPLES`] of them.
    pub samples: Vec<String>,
    /// Optional fields dropped from events that were kept, by field: how often, and the first
    /// place with its reason.
    pub dropped_fields: BTreeMap<String, DroppedFieldCount>,
}

/// How often one optional field was dropped, and where first.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct DroppedFieldCount {
    pub count: u64,
    pub example: String,
}

impl IngestReport {
    pub const MAX_SAMPLES: usize = 10;

    pub fn skipped(&self) -> u64 {
        self.malformed + self.missing_field + self.bad_value + self.clock_skew
    }

    /// Adds another report's counts (and samples, up to the limit).
    pub fn absorb(&mut self, other: &IngestReport) {
        self.lines += other.lines;
        self.events += other.events;
        self.blank += other.blank;
        self.malformed += other.malformed;
        self.missing_field += other.missing_field;
        self.bad_value += other.bad_value;
        self.clock_skew += other.clock_skew;
        self.untimed += other.untimed;
        self.not_calls += other.not_calls;
        if self.timing_hint.is_none() {
            self.timing_hint.clone_from(&other.timing_hint);
        }
        self.formats.extend(other.formats.iter().cloned());
        self.notes.extend(other.notes.iter().cloned());
        let room = Self::MAX_SAMPLES.saturating_sub(self.samples.len());
        self.samples.extend(other.samples.iter().take(room).cloned());
        for (field, d) in &other.dropped_fields {
            let mine = self.dropped_fields.entry(field.clone()).or_default();
            if mine.count == 0 {
                mine.example.clone_from(&d.example);
            }
            mine.count += d.count;
        }
    }

    /// Counts an optional field dropped at `location:line`.
    pub(crate) fn dropped(&mut self, field: &str, location: &str, line: u64, why: &str) {
        let d = self.dropped_fields.entry(field.to_owned()).or_default();
        if d.count == 0 {
            d.example = format!("{location}:{line}: {why}");
        }
        d.count += 1;
    }

    pub(crate) fn note(&mut self, location: &str, line: u64, problem: &dyn std::fmt::Display) {
        if self.samples.len() < Self::MAX_SAMPLES {
            self.samples.push(format!("{location}:{line}: {problem}"));
        }
    }
}
