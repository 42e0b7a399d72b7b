//! An in-memory sink, for tests and for commands (`demo`, `eval`) that read results back.

use rustc_hash::FxHashMap;

use super::ResultSink;
use crate::model::service::ServiceRecord;
use crate::model::{Alert, Anomaly, JourneyRecord, ServiceMetrics};

#[derive(Default)]
pub struct MemorySink {
    pub anomalies: Vec<Anomaly>,
    alerts: FxHashMap<String, Alert>,
    pub services: Vec<ServiceRecord>,
    pub journeys: Vec<JourneyRecord>,
    pub metrics: Vec<ServiceMetrics>,
}

impl MemorySink {
    /// Final state of each alert, in order of raising.
    pub fn alerts(&self) -> Vec<Alert> {
        let mut v: Vec<Alert> = self.alerts.values().cloned().collect();
        v.sort_by(|a, b| (a.timestamp, &a.id).cmp(&(b.timestamp, &b.id)));
        v
    }
}

impl ResultSink for MemorySink {
    fn write_anomalies(&mut self, anomalies: &[Anomaly]) -> anyhow::Result<()> {
        self.anomalies.extend_from_slice(anomalies);
        Ok(())
    }
    fn write_alerts(&mut self, alerts: &[Alert]) -> anyhow::Result<()> {
        for a in alerts {
            self.alerts.insert(a.id.clone(), a.clone());
        }
        Ok(())
    }
    fn write_journeys(&mut self, journeys: &[JourneyRecord]) -> anyhow::Result<()> {
        self.journeys.extend_from_slice(journeys);
        Ok(())
    }
    fn write_metrics(&mut self, metrics: &[ServiceMetrics]) -> anyhow::Result<()> {
        self.metrics.extend_from_slice(metrics);
        Ok(())
    }
    fn finish(&mut self, services: &[ServiceRecord]) -> anyhow::Result<()> {
        self.services = services.to_vec();
        Ok(())
    }
}
