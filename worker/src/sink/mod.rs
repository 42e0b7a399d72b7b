//! Where results go: anomalies as they are found, alert state changes, journeys, per-window
//! service metrics, onboarded services.
//! File mode writes NDJSON ([`FileSink`]); the Elasticsearch bulk writer ([`elasticsearch`])
//! writes the same documents; tests and the evaluation keep them in memory ([`MemorySink`]);
//! a warm start's history and the benchmarks only count them ([`CountingSink`]).

mod counting;
pub mod elasticsearch;
mod file;
mod memory;

pub use counting::CountingSink;
pub use file::FileSink;
pub use memory::MemorySink;

use crate::alert::correlate::WindowDigest;
use crate::model::service::ServiceRecord;
pub use crate::model::JourneyRecord;
use crate::model::{Alert, Anomaly, ServiceMetrics};

/// A destination for the pipeline's documents.
pub trait ResultSink {
    fn write_anomalies(&mut self, anomalies: &[Anomaly]) -> anyhow::Result<()>;
    /// A new or changed alert (same `alert.id` means the same alert, updated).
    fn write_alerts(&mut self, alerts: &[Alert]) -> anyhow::Result<()>;
    /// Reconstructed journeys worth keeping (flagged, or the slowest of their window).
    fn write_journeys(&mut self, _journeys: &[JourneyRecord]) -> anyhow::Result<()> {
        Ok(())
    }
    /// Each service's statistics for a closed window (file mode keeps them for reports).
    fn write_metrics(&mut self, _metrics: &[ServiceMetrics]) -> anyhow::Result<()> {
        Ok(())
    }
    /// A closed window handed to the correlator (by a pipeline that is one partition of a job).
    fn write_digest(&mut self, _digest: &WindowDigest) -> anyhow::Result<()> {
        anyhow::bail!("this output does not take partitions' window digests: run the job whole")
    }
    /// Called once at the end of a run, with the onboarded services.
    fn finish(&mut self, services: &[ServiceRecord]) -> anyhow::Result<()>;
}
