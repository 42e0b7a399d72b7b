//! Helpers shared by the integration tests.

use std::path::{Path, PathBuf};

use apiwatch::model::time::HOUR_MS;
use apiwatch::simulate::incidents::Labels;
use apiwatch::simulate::{simulate_to_writer, SimConfig};

/// Simulates `hours` of a topology into `dir/events.ndjson`; returns the file and the labels.
pub fn simulate(dir: &Path, topology: &str, seed: u64, hours: f64) -> (PathBuf, Labels) {
    let path = dir.join("events.ndjson");
    let mut w = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
    let cfg = SimConfig {
        seed,
        topology: topology.into(),
        duration: (hours * HOUR_MS as f64) as i64,
        ..Default::default()
    };
    let labels = simulate_to_writer(cfg, &mut w, |_| {}).unwrap();
    drop(w);
    (path, labels)
}
