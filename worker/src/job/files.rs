//! File mode: lines from files (or stdin) through the pipeline into an output directory, with
//! every line that could not be used kept, with its place and reason, in `rejected.ndjson`.

use std::path::{Path, PathBuf};

use crate::pipeline::{Pipeline, PipelineSetup, RunStats};
use crate::sink::FileSink;
use crate::source::{EventSource, IngestReport, MergedSource, ReadAhead};

/// Where `detect` puts the lines it could not use.
pub const REJECTED_FILE: &str = "rejected.ndjson";

/// Every file `detect` writes into its output directory.
pub const OUTPUT_FILES: [&str; 7] = [
    "anomalies.ndjson",
    "alerts.ndjson",
    "journeys.ndjson",
    "metrics.ndjson",
    "services.json",
    REJECTED_FILE,
    "report",
];

/// What a file-mode run counted; the sink keeps the alerts for the summary.
pub struct FilesRun {
    pub stats: RunStats,
    pub ingest: IngestReport,
    pub sink: FileSink,
}

/// Runs file-mode detection over log files (merged by time when there are several);
/// `progress` hears the events read so far.
pub fn detect_files(
    inputs: &[PathBuf],
    output: &Path,
    setup: PipelineSetup,
    feedback: Vec<crate::feedback::FeedbackRecord>,
    progress: impl FnMut(u64),
) -> anyhow::Result<FilesRun> {
    check_inputs_are_not_outputs(inputs, output)?;
    // Open the inputs before creating anything: a missing file or a FIFO nobody writes to must
    // not leave empty outputs behind.
    let source = MergedSource::open(inputs, setup.cfg.input, &setup.cfg.input_format)?;
    let mut sink = FileSink::create(output)?;
    let rejected = output.join(REJECTED_FILE);
    // A rerun into the same directory must not show the last run's rejects.
    let _ = std::fs::remove_file(&rejected);
    let mut source = ReadAhead::spawn(source.with_rejects(rejected))?;
    let mut pipeline = Pipeline::new(setup)?;
    // Records were checked when read; none is refused here.
    let _ = pipeline.offer_feedback(feedback, false);
    pipeline.run_source(&mut source, &mut sink, progress)?;
    let stats = pipeline.finish(&mut sink)?;
    Ok(FilesRun {
        stats,
        ingest: source.report().clone(),
        sink,
    })
}

/// Refuses an input that is one of the files the run would write (it would be truncated
/// before it is read).
fn check_inputs_are_not_outputs(inputs: &[PathBuf], output: &Path) -> anyhow::Result<()> {
    let Ok(out) = output.canonicalize() else {
        return Ok(()); // the output directory does not exist yet: nothing in it can be an input
    };
    for input in inputs.iter().filter(|i| i.as_os_str() != "-") {
        let Ok(path) = input.canonicalize() else { continue };
        let collides =
            path.parent() == Some(out.as_path()) && path.file_name().and_then(|n| n.to_str()).is_some_and(|n| OUTPUT_FILES.contains(&n));
        anyhow::ensure!(
            !collides,
            "input {} is one of the files this run writes into {}: choose another --output directory",
            input.display(),
            output.display()
        );
    }
    Ok(())
}
