//! A sink that keeps nothing and counts what it was given: a warm start's history (learned
//! from, never written) and the benchmarks that measure the pipeline alone.

use super::ResultSink;
use crate::alert::correlate::WindowDigest;
use crate::model::service::ServiceRecord;
use crate::model::{Alert, Anomaly};

/// Counts anomalies, alert changes and window digests, and drops them.
#[derive(Debug, Default, Clone, Copy)]
pub struct CountingSink {
    pub anomalies: u64,
    pub alert_changes: u64,
    pub digests: u64,
}

impl ResultSink for CountingSink {
    fn write_anomalies(&mut self, anomalies: &[Anomaly]) -> anyhow::Result<()> {
        self.anomalies += anomalies.len() as u64;
        Ok(())
    }
    fn write_alerts(&mut self, alerts: &[Alert]) -> anyhow::Result<()> {
        self.alert_changes += alerts.len() as u64;
        Ok(())
    }
    fn write_digest(&mut self, _digest: &WindowDigest) -> anyhow::Result<()> {
        self.digests += 1;
        Ok(())
    }
    fn finish(&mut self, _services: &[ServiceRecord]) -> anyhow::Result<()> {
        Ok(())
    }
}
