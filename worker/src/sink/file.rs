//! File-mode output: `anomalies.ndjson`, `journeys.ndjson` and `metrics.ndjson` (each service's
//! statistics per window, for reports) streamed, `alerts.ndjson` with each alert's final state,
//! `services.json` with the onboarded services.

use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::Context;
use rustc_hash::FxHashMap;

use super::ResultSink;
use crate::model::service::ServiceRecord;
use crate::model::{Alert, Anomaly, JourneyRecord, ServiceMetrics};

pub struct FileSink {
    dir: PathBuf,
    anomalies: BufWriter<File>,
    journeys: BufWriter<File>,
    metrics: BufWriter<File>,
    alerts: FxHashMap<String, Alert>,
    pub anomaly_count: u64,
}

impl FileSink {
    pub fn create(dir: &Path) -> anyhow::Result<Self> {
        fs::create_dir_all(dir).with_context(|| format!("cannot create output directory {}", dir.display()))?;
        let path = dir.join("anomalies.ndjson");
        let f = File::create(&path).with_context(|| format!("cannot create {}", path.display()))?;
        let path = dir.join("journeys.ndjson");
        let j = File::create(&path).with_context(|| format!("cannot create {}", path.display()))?;
        let path = dir.join("metrics.ndjson");
        let m = File::create(&path).with_context(|| format!("cannot create {}", path.display()))?;
        Ok(FileSink {
            dir: dir.to_owned(),
            anomalies: BufWriter::new(f),
            journeys: BufWriter::new(j),
            metrics: BufWriter::new(m),
            alerts: FxHashMap::default(),
            anomaly_count: 0,
        })
    }

    pub fn alerts(&self) -> Vec<Alert> {
        let mut v: Vec<Alert> = self.alerts.values().cloned().collect();
        v.sort_by(|a, b| (a.timestamp, &a.id).cmp(&(b.timestamp, &b.id)));
        v
    }
}

/// Writes documents as NDJSON; a failure (a full disk) names the file.
fn write_lines<T: serde::Serialize>(w: &mut BufWriter<File>, docs: &[T], dir: &Path, name: &str) -> anyhow::Result<()> {
    let mut write = || -> std::io::Result<()> {
        for d in docs {
            serde_json::to_writer(&mut *w, d)?;
            w.write_all(b"\n")?;
        }
        Ok(())
    };
    write().with_context(|| format!("cannot write {}", dir.join(name).display()))
}

impl ResultSink for FileSink {
    fn write_anomalies(&mut self, anomalies: &[Anomaly]) -> anyhow::Result<()> {
        write_lines(&mut self.anomalies, anomalies, &self.dir, "anomalies.ndjson")?;
        self.anomaly_count += anomalies.len() as u64;
        Ok(())
    }

    fn write_alerts(&mut self, alerts: &[Alert]) -> anyhow::Result<()> {
        for a in alerts {
            self.alerts.insert(a.id.clone(), a.clone());
        }
        Ok(())
    }

    fn write_journeys(&mut self, journeys: &[JourneyRecord]) -> anyhow::Result<()> {
        write_lines(&mut self.journeys, journeys, &self.dir, "journeys.ndjson")
    }

    fn write_metrics(&mut self, metrics: &[ServiceMetrics]) -> anyhow::Result<()> {
        write_lines(&mut self.metrics, metrics, &self.dir, "metrics.ndjson")
    }

    fn finish(&mut self, services: &[ServiceRecord]) -> anyhow::Result<()> {
        self.anomalies.flush().context("cannot write anomalies.ndjson")?;
        self.journeys.flush().context("cannot write journeys.ndjson")?;
        self.metrics.flush().context("cannot write metrics.ndjson")?;
        let path = self.dir.join("alerts.ndjson");
        let mut w = BufWriter::new(File::create(&path).with_context(|| format!("cannot create {}", path.display()))?);
        write_lines(&mut w, &self.alerts(), &self.dir, "alerts.ndjson")?;
        w.flush().with_context(|| format!("cannot write {}", path.display()))?;
        let path = self.dir.join("services.json");
        let f = File::create(&path).with_context(|| format!("cannot create {}", path.display()))?;
        let mut w = BufWriter::new(f);
        serde_json::to_writer_pretty(&mut w, services).with_context(|| format!("cannot write {}", path.display()))?;
        w.flush().with_context(|| format!("cannot write {}", path.display()))?;
        Ok(())
    }
}
