//! Training data for the learned models, computed by the worker's own feature code so that
//! Python never re-implements a feature (`apiwatch features`). It rides the pipeline like a
//! detector and writes:
//! - `requests.csv`: one row per call the AutoEncoder would judge, columns in [`FEATURES`] order;
//! - `sessions.txt`: one session a line (a user's entry calls, split on inactivity), tokens
//!   `service:route` separated by spaces, as the LSTM detector names them.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rustc_hash::FxHashMap;

use super::autoencoder::judged_features;
use super::request::{RequestFeaturizer, FEATURES};
use super::{CallContext, Detector, Evicted, Persist, WindowContext};
use crate::model::anomaly::Anomaly;
use crate::model::time::{Millis, MINUTE_MS};

/// What an export wrote, readable after the run.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct ExportReport {
    pub requests: u64,
    pub sessions: u64,
    pub session_calls: u64,
    pub error: Option<String>,
}

pub struct FeatureExport {
    featurizer: RequestFeaturizer,
    requests: BufWriter<File>,
    sessions: BufWriter<File>,
    open: FxHashMap<u64, (Millis, Vec<String>)>,
    every: u64,
    seen: u64,
    session_gap: Millis,
    report: Arc<Mutex<ExportReport>>,
}

impl FeatureExport {
    /// Creates `dir/requests.csv` and `dir/sessions.txt`; keeps one request row in `every`.
    pub fn create(dir: &Path, every: u64) -> anyhow::Result<(Self, Arc<Mutex<ExportReport>>, [PathBuf; 2])> {
        std::fs::create_dir_all(dir).map_err(|e| anyhow::anyhow!("cannot create {}: {e}", dir.display()))?;
        let paths = [dir.join("requests.csv"), dir.join("sessions.txt")];
        let open = |p: &Path| {
            File::create(p)
                .map(BufWriter::new)
                .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", p.display()))
        };
        let mut requests = open(&paths[0])?;
        writeln!(requests, "{}", FEATURES.join(","))?;
        let report = Arc::new(Mutex::new(ExportReport::default()));
        Ok((
            FeatureExport {
                featurizer: RequestFeaturizer::default(),
                requests,
                sessions: open(&paths[1])?,
                open: FxHashMap::default(),
                every: every.max(1),
                seen: 0,
                session_gap: 30 * MINUTE_MS,
                report: report.clone(),
            },
            report,
            paths,
        ))
    }

    fn fail(&self, e: std::io::Error) {
        if let Ok(mut r) = self.report.lock() {
            r.error.get_or_insert_with(|| e.to_string());
        }
    }

    fn write_session(&mut self, calls: &[String]) {
        let result = writeln!(self.sessions, "{}", calls.join(" "));
        match result {
            Ok(()) => {
                if let Ok(mut r) = self.report.lock() {
                    r.sessions += 1;
                    r.session_calls += calls.len() as u64;
                }
            }
            Err(e) => self.fail(e),
        }
    }
}

impl Persist for FeatureExport {
    fn save_state(&mut self) -> anyhow::Result<Vec<u8>> {
        anyhow::bail!("the feature export is a one-shot run and is not checkpointed")
    }
    fn load_state(&mut self, _: &[u8]) -> anyhow::Result<()> {
        anyhow::bail!("the feature export is a one-shot run and is not checkpointed")
    }
}

impl Detector for FeatureExport {
    fn name(&self) -> &'static str {
        "feature_export"
    }

    fn forget(&mut self, evicted: &Evicted) {
        self.featurizer.forget(evicted);
    }

    fn observe(&mut self, c: &CallContext<'_>) {
        if let Some(x) = judged_features(&mut self.featurizer, c) {
            self.seen += 1;
            if self.seen % self.every == 0 {
                let line = x.iter().map(|v| format!("{v:.6}")).collect::<Vec<_>>().join(",");
                match writeln!(self.requests, "{line}") {
                    Ok(()) => {
                        if let Ok(mut r) = self.report.lock() {
                            r.requests += 1;
                        }
                    }
                    Err(e) => self.fail(e),
                }
            }
        }
        if c.event.parent_id.is_some() {
            return;
        }
        let Some(user) = c.user else { return };
        let t = c.event.timestamp;
        let tok = format!("{}:{}", c.names.name(c.service), c.names.name(c.route));
        let ended = match self.open.get_mut(&user) {
            Some((seen, calls)) if t - *seen <= self.session_gap => {
                *seen = t;
                calls.push(tok);
                None
            }
            _ => self.open.insert(user, (t, vec![tok])).map(|(_, calls)| calls),
        };
        if let Some(calls) = ended {
            self.write_session(&calls);
        }
    }

    fn close_window(&mut self, w: &WindowContext<'_>, _out: &mut Vec<Anomaly>) {
        let gap = self.session_gap;
        let mut done: Vec<(u64, Millis)> = self
            .open
            .iter()
            .filter(|(_, (seen, _))| !w.complete || w.end - *seen > gap)
            .map(|(u, (seen, _))| (*u, *seen))
            .collect();
        // Deterministic output order: by last activity, then user.
        done.sort_by_key(|&(u, seen)| (seen, u));
        for (u, _) in done {
            if let Some((_, calls)) = self.open.remove(&u) {
                self.write_session(&calls);
            }
        }
        if !w.complete {
            for e in [self.requests.flush(), self.sessions.flush()] {
                if let Err(e) = e {
                    self.fail(e);
                }
            }
        }
    }
}
