//! The mutation harness behind `apiwatch fuzz` and the bounded run in the tests: realistic lines
//! (simulated calls written as NDJSON or an access-log format) are mutated at random — bytes
//! flipped, inserted, deleted, chunks repeated — and spiked with the inputs that broke apiwatch
//! before (extreme numbers, impossible dates, byte-order marks, lone `\r`, deep nesting, NUL,
//! invalid UTF-8), then read by the real [`LineSource`] and run through a real [`Pipeline`].
//!
//! It checks what must hold for any input: no panic, no hang (a watchdog aborts with the chunk
//! written out if one takes too long), exact line accounting (every line the harness wrote is
//! read once, and is used, skipped or blank), and every used event reaching the pipeline.
//! Stable Rust, no sanitizer: a coverage-guided fuzzer finds more per hour, this finds the same
//! classes of defect on any toolchain and in CI.

use std::io::Cursor;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::formats::{InputFormat, LogFormat};
use super::{EventSource, LineSource};
use crate::pipeline::{Pipeline, PipelineConfig};
use crate::sink::MemorySink;

/// Inputs that broke apiwatch before, or break parsers in general.
const SPIKES: &[&str] = &[
    "9223372036854775807",
    "-9223372036854775808",
    "18446744073709552",
    "18446744073709551616",
    "9999999999999999.9",
    "1e308",
    "-1e308",
    "-0",
    "0.0000000001",
    "1772409600",
    "2026-02-30T00:00:00Z",
    "9999-12-31T23:59:59Z",
    "0000-01-01T00:00:00Z",
    "\u{feff}",
    "\r",
    "\r\n",
    "\0",
    "\"",
    "\\",
    "\\u0000",
    "\\ud800",
    "{",
    "}",
    "[",
    "\"-\"",
    "null",
    "true",
    "{\"a\":{\"b\":{\"c\":[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]}}}",
    "😀",
    "\u{202e}",
    " ",
    "\t",
];

/// What a harness run saw.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct MutationReport {
    pub format: String,
    /// Lines written by the harness (after mutation: a mutation may split or join lines).
    pub lines_written: u64,
    pub lines_read: u64,
    pub used: u64,
    pub skipped: u64,
    pub blank: u64,
    /// Events that reached the pipeline (used events minus none).
    pub events_in_pipeline: u64,
    pub panics: u64,
    /// The first panic's message and the first line of its chunk.
    pub first_panic: Option<String>,
    /// Chunks whose accounting did not add up (should be 0).
    pub accounting_errors: u64,
    pub seconds: f64,
}

/// Lines as the harness counts them: ended by `\n`, `\r\n` or a lone `\r`, the last one
/// possibly unterminated (the reader's rule, written independently).
fn count_lines(bytes: &[u8]) -> u64 {
    let mut n = 0;
    let mut i = 0;
    let mut in_line = false;
    while i < bytes.len() {
        match bytes[i] {
            b'\n' => {
                n += 1;
                in_line = false;
            }
            b'\r' => {
                n += 1;
                in_line = false;
                if bytes.get(i + 1) == Some(&b'\n') {
                    i += 1;
                }
            }
            _ => in_line = true,
        }
        i += 1;
    }
    n + u64::from(in_line)
}

fn mutate(line: &str, rng: &mut ChaCha8Rng) -> Vec<u8> {
    let mut b = line.as_bytes().to_vec();
    for _ in 0..rng.gen_range(0..4) {
        if b.is_empty() {
            b.push(b'{');
        }
        let i = rng.gen_range(0..b.len());
        match rng.gen_range(0..7) {
            0 => b[i] = rng.gen(),
            1 => b.insert(i, rng.gen()),
            2 => {
                b.remove(i);
            }
            3 => {
                let end = (i + rng.gen_range(1..16)).min(b.len());
                let chunk = b[i..end].to_vec();
                b.splice(i..i, chunk);
            }
            4 => {
                // Replace a run of digits (a number or a time) with a spike.
                let spike = SPIKES[rng.gen_range(0..SPIKES.len())].as_bytes();
                let start = b[i..].iter().position(u8::is_ascii_digit).map_or(i, |p| i + p);
                let end = b[start..].iter().position(|c| !c.is_ascii_digit()).map_or(b.len(), |p| start + p);
                b.splice(start..end, spike.iter().copied());
            }
            5 => {
                let spike = SPIKES[rng.gen_range(0..SPIKES.len())].as_bytes();
                b.splice(i..i, spike.iter().copied());
            }
            _ => b.push(0xff),
        }
    }
    b
}

/// Base lines: simulated calls in the given format.
fn base_lines(format: LogFormat, seed: u64) -> anyhow::Result<Vec<String>> {
    let sim = crate::simulate::SimConfig {
        seed,
        duration: 20 * crate::model::time::MINUTE_MS,
        rate: 2.0,
        max_events: Some(5_000),
        ..Default::default()
    };
    let (events, _) = crate::simulate::simulate_events(sim)?;
    Ok(events.iter().map(|e| crate::source::formats::write::line(e, format)).collect())
}

/// How long one chunk may take before the harness calls it a hang.
const HANG_AFTER: Duration = Duration::from_secs(60);
const CHUNK_LINES: u64 = 20_000;

/// Runs `lines` mutated lines of `format` through the reader and a pipeline; `progress` gets
/// the lines done so far.
pub fn run(format: LogFormat, lines: u64, seed: u64, mut progress: impl FnMut(u64)) -> anyhow::Result<MutationReport> {
    let base = base_lines(format, seed)?;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut report = MutationReport {
        format: format!("{format:?}").to_lowercase(),
        ..Default::default()
    };
    let started = Instant::now();
    // The watchdog: a chunk that has not finished after HANG_AFTER is a hang.
    let chunk_started = Arc::new(AtomicU64::new(0));
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let current_chunk: Arc<std::sync::Mutex<Arc<[u8]>>> = Arc::new(std::sync::Mutex::new(Arc::from(Vec::new())));
    let watchdog = {
        let (chunk_started, done, current_chunk) = (Arc::clone(&chunk_started), Arc::clone(&done), Arc::clone(&current_chunk));
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(200));
                let began = chunk_started.load(Ordering::Relaxed);
                let now = started.elapsed().as_millis() as u64;
                if began > 0 && now.saturating_sub(began) > HANG_AFTER.as_millis() as u64 {
                    let path = std::env::temp_dir().join("apiwatch-fuzz-hang.log");
                    if let Ok(chunk) = current_chunk.lock() {
                        let _ = std::fs::write(&path, &chunk[..]);
                    }
                    eprintln!(
                        "a chunk of mutated lines ran for over {HANG_AFTER:?}: a hang; its lines are in {}",
                        path.display()
                    );
                    std::process::abort();
                }
            }
        })
    };
    let previous_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let mut written = 0;
    while written < lines {
        let n = CHUNK_LINES.min(lines - written);
        let mut bytes = Vec::with_capacity(n as usize * 300);
        for _ in 0..n {
            let line = &base[rng.gen_range(0..base.len())];
            bytes.extend(mutate(line, &mut rng));
            bytes.push(b'\n');
        }
        written += n;
        report.lines_written += count_lines(&bytes);
        // Shared with the watchdog, not copied: it writes the chunk out only on a hang.
        let bytes: Arc<[u8]> = Arc::from(bytes);
        if let Ok(mut c) = current_chunk.lock() {
            *c = Arc::clone(&bytes);
        }
        chunk_started.store(started.elapsed().as_millis().max(1) as u64, Ordering::Relaxed);
        // Each chunk is a fresh run: its warnings (caps reached...) would repeat per chunk.
        let outcome = std::panic::catch_unwind(|| {
            tracing::subscriber::with_default(tracing::subscriber::NoSubscriber::default(), || read_chunk(format, bytes))
        });
        chunk_started.store(0, Ordering::Relaxed);
        match outcome {
            Ok(Ok((r, in_pipeline))) => {
                report.lines_read += r.lines;
                report.used += r.events;
                report.skipped += r.skipped();
                report.blank += r.blank;
                report.events_in_pipeline += in_pipeline;
                if r.lines != r.events + r.skipped() + r.blank || in_pipeline != r.events {
                    report.accounting_errors += 1;
                }
            }
            Ok(Err(e)) => {
                // An error ends a real run with a message; here it is a defect to look at.
                report.accounting_errors += 1;
                tracing::warn!("a chunk ended with an error: {e:#}");
            }
            Err(p) => {
                report.panics += 1;
                if report.first_panic.is_none() {
                    let msg = p
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| p.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                        .unwrap_or_default();
                    report.first_panic = Some(msg);
                }
            }
        }
        progress(written);
    }
    std::panic::set_hook(previous_hook);
    done.store(true, Ordering::Relaxed);
    let _ = watchdog.join();
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// Reads one chunk through a [`LineSource`] into a pipeline (the baseline detector: the
/// harness is about input, and the windows' arithmetic is where time broke before).
fn read_chunk(format: LogFormat, bytes: Arc<[u8]>) -> anyhow::Result<(super::IngestReport, u64)> {
    let mut source = LineSource::from_reader("fuzz", Box::new(Cursor::new(bytes))).with_format(InputFormat {
        format,
        service: Some("fuzz".into()),
        provider: Some("onprem".into()),
        ..InputFormat::default()
    })?;
    let cfg = PipelineConfig {
        detectors: vec![crate::detect::DetectorKind::Baseline],
        ..Default::default()
    };
    let mut pipeline = Pipeline::new(cfg)?;
    let mut sink = MemorySink::default();
    pipeline.run_source(&mut source, &mut sink, |_| {})?;
    let stats = pipeline.finish(&mut sink)?;
    Ok((source.report().clone(), stats.events + stats.refused_events))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_counter_agrees_with_the_reader_rule() {
        assert_eq!(count_lines(b"a\nb\r\nc\rd"), 4);
        assert_eq!(count_lines(b"a\n\n"), 2);
        assert_eq!(count_lines(b"\r\n\r"), 2);
        assert_eq!(count_lines(b""), 0);
    }

    /// The bounded run CI does on every format (the 10M-line runs are `apiwatch fuzz`).
    #[test]
    fn mutated_lines_never_panic_hang_or_lose_count() {
        for format in LogFormat::ALL.into_iter().skip(1) {
            let r = run(format, 20_000, 19, |_| {}).unwrap();
            assert_eq!(r.panics, 0, "{r:?}");
            assert_eq!(r.accounting_errors, 0, "{r:?}");
            assert_eq!(r.lines_read, r.lines_written, "{r:?}");
            assert!(r.used > r.lines_written / 10 && r.skipped > 0, "{r:?}");
        }
    }
}
