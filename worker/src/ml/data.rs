//! Training data with the worker's own feature code: the pipeline runs with the feature
//! export as its only detector, so the models learn exactly the features they will be shown.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::detect::export::{ExportReport, FeatureExport};
use crate::model::features::REQUEST_FEATURES as FEATURES;
use crate::pipeline::{Pipeline, PipelineConfig};
use crate::sink::MemorySink;
use crate::source::EventSource;

/// Writes `requests.csv` (one row in `every`) and `sessions.txt` into `dir` from `source`.
pub fn export_features(source: &mut dyn EventSource, dir: &Path, every: u64, progress: impl FnMut(u64)) -> anyhow::Result<ExportReport> {
    let (export, report, _) = FeatureExport::create(dir, every)?;
    let mut sink = MemorySink::default();
    let mut p = Pipeline::with_detectors(PipelineConfig::default(), vec![Box::new(export)]);
    p.run_source(source, &mut sink, progress)?;
    p.finish(&mut sink)?;
    let r = report.lock().map_err(|_| anyhow::anyhow!("export report poisoned"))?.clone();
    if let Some(e) = &r.error {
        anyhow::bail!("writing the training data in {} failed: {e}", dir.display());
    }
    let ingest = source.report();
    if ingest.skipped() > 0 {
        tracing::warn!(
            skipped = ingest.skipped(),
            first = %ingest.samples.join("; "),
            "input lines or documents skipped (malformed or incomplete)"
        );
    }
    Ok(r)
}

/// Joins several `apiwatch features` outputs into one (one CSV header, which must be this
/// worker's feature list).
pub fn concat_features(dirs: &[PathBuf], out: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    for (file, header) in [("requests.csv", true), ("sessions.txt", false)] {
        let path = out.join(file);
        let mut w = BufWriter::new(File::create(&path).with_context(|| format!("cannot create {}", path.display()))?);
        for (i, d) in dirs.iter().enumerate() {
            let text = std::fs::read_to_string(d.join(file)).with_context(|| format!("cannot read {}", d.join(file).display()))?;
            let mut lines = text.lines();
            if header {
                let h = lines.next().unwrap_or_default();
                anyhow::ensure!(
                    h == FEATURES.join(","),
                    "{}: the header is not this worker's feature list",
                    d.join(file).display()
                );
                if i == 0 {
                    writeln!(w, "{h}")?;
                }
            }
            for l in lines {
                writeln!(w, "{l}")?;
            }
        }
        w.flush().with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}
