//! Where results go: anomalies as they are found, alert state changes, onboarded services.
//! File mode writes NDJSON; the Elasticsearch sink (next) writes the same documents.

mod file;
mod memory;

pub use file::FileSink;
pub use memory::MemorySink;

use crate::model::{Alert, Anomaly};
use crate::onboard::ServiceRecord;

/// A destination for the pipeline's documents.
pub trait ResultSink {
    fn write_anomalies(&mut self, anomalies: &[Anomaly]) -> anyhow::Result<()>;
    /// A new or changed alert (same `alert.id` means the same alert, updated).
    fn write_alerts(&mut self, alerts: &[Alert]) -> anyhow::Result<()>;
    /// Called once at the end of a run, with the onboarded services.
    fn finish(&mut self, services: &[ServiceRecord]) -> anyhow::Result<()>;
}
