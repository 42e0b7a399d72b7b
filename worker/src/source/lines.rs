//! Line-oriented inputs from files or standard input (`-`): NDJSON events, or access logs
//! through [`AccessLogParser`]. One reader, so both locate and count bad lines the same way.

use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::Context;

use super::access::AccessLogParser;
use super::{EventSource, IngestReport};
use crate::model::event::{parse_event, EventError};
use crate::model::Event;

/// Reads several inputs one after another.
pub struct LineSource {
    inputs: Vec<PathBuf>,
    /// `None`: NDJSON events.
    access: Option<AccessLogParser>,
    /// Where every skipped line goes, with its place and reason (created at the first one).
    rejects_path: Option<PathBuf>,
    rejects: Option<BufWriter<File>>,
    next_input: usize,
    current: Option<(String, Box<dyn BufRead + Send>, u64)>,
    line: Vec<u8>,
    report: IngestReport,
}

impl LineSource {
    /// NDJSON events.
    pub fn new(inputs: Vec<PathBuf>) -> Self {
        LineSource {
            inputs,
            access: None,
            rejects_path: None,
            rejects: None,
            next_input: 0,
            current: None,
            line: Vec::with_capacity(1024),
            report: IngestReport::default(),
        }
    }

    /// Access-log lines instead of NDJSON.
    pub fn with_access_log(mut self, parser: AccessLogParser) -> Self {
        self.access = Some(parser);
        self
    }

    /// Writes every skipped line to `path` as NDJSON (`file`, `line`, `reason`, `text`), so
    /// nothing is lost: the report keeps counts and the first few, this file keeps them all.
    pub fn with_rejects(mut self, path: PathBuf) -> Self {
        self.rejects_path = Some(path);
        self
    }

    fn reject(&mut self, path: &Path, file: &str, line: u64, err: &EventError) -> anyhow::Result<()> {
        if self.rejects.is_none() {
            let f = File::create(path).with_context(|| format!("cannot create {} for the skipped lines", path.display()))?;
            self.rejects = Some(BufWriter::new(f));
        }
        let w = self.rejects.as_mut().expect("created above");
        let doc = serde_json::json!({
            "file": file,
            "line": line,
            "reason": err.to_string(),
            "text": String::from_utf8_lossy(self.line.trim_ascii_end()),
        });
        serde_json::to_writer(&mut *w, &doc)?;
        w.write_all(b"\n")?;
        Ok(())
    }

    /// From an in-memory reader (tests, benchmarks).
    pub fn from_reader(name: &str, r: Box<dyn BufRead + Send>) -> Self {
        let mut s = Self::new(Vec::new());
        s.current = Some((name.to_owned(), r, 0));
        s
    }

    fn open_next(&mut self) -> anyhow::Result<bool> {
        let Some(path) = self.inputs.get(self.next_input).cloned() else {
            return Ok(false);
        };
        self.next_input += 1;
        let reader: Box<dyn BufRead + Send> = if path.as_os_str() == "-" {
            Box::new(BufReader::with_capacity(1 << 20, io::stdin()))
        } else {
            let f = File::open(&path).with_context(|| format!("cannot open input {}", path.display()))?;
            Box::new(BufReader::with_capacity(1 << 20, f))
        };
        let name = if path.as_os_str() == "-" {
            "<stdin>".to_owned()
        } else {
            path.display().to_string()
        };
        self.current = Some((name, reader, 0));
        Ok(true)
    }
}

impl EventSource for LineSource {
    fn next_batch(&mut self, batch: &mut Vec<Event>, max: usize) -> anyhow::Result<bool> {
        let mut produced = 0;
        while produced < max {
            if self.current.is_none() && !self.open_next()? {
                return Ok(false);
            }
            let (name, reader, lineno) = self.current.as_mut().expect("opened above");
            self.line.clear();
            let n = reader
                .read_until(b'\n', &mut self.line)
                .with_context(|| format!("cannot read {name} after line {lineno}"))?;
            if n == 0 {
                self.current = None;
                if let Some(w) = self.rejects.as_mut() {
                    w.flush().context("cannot write the skipped lines")?;
                }
                continue;
            }
            *lineno += 1;
            self.report.lines += 1;
            let trimmed = self.line.trim_ascii();
            if trimmed.is_empty() {
                self.report.blank += 1;
                continue;
            }
            let parsed = match &self.access {
                None => parse_event(trimmed),
                Some(p) => match std::str::from_utf8(trimmed) {
                    Ok(text) => p.parse(text),
                    Err(e) => Err(EventError::Json(format!("not UTF-8 at byte {}", e.valid_up_to()))),
                },
            };
            match parsed {
                Ok(e) => {
                    self.report.events += 1;
                    batch.push(e);
                    produced += 1;
                }
                Err(err) => {
                    match &err {
                        EventError::Json(_) | EventError::Pattern(_) => self.report.malformed += 1,
                        EventError::Missing(_) => self.report.missing_field += 1,
                        EventError::BadValue { .. } => self.report.bad_value += 1,
                    }
                    let (name, lineno) = (name.clone(), *lineno);
                    self.report.note(&name, lineno, &err);
                    if let Some(path) = self.rejects_path.clone() {
                        self.reject(&path, &name, lineno, &err)?;
                    }
                }
            }
        }
        Ok(true)
    }

    fn report(&self) -> &IngestReport {
        &self.report
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_lines_are_counted_located_and_skipped() {
        let good = r#"{"@timestamp":"2026-03-02T06:00:00Z","service.name":"a","cloud.provider":"aws","http.request.method":"GET","url.path":"/x","http.response.status_code":200,"event.duration":1000}"#;
        let text = format!(
            "{good}\nnot json\n\n{}\n{good}\n{}\n{good}",
            good.replace(r#""service.name":"a","#, ""),
            good.replace("200", "\"OK\"")
        );
        let mut s = LineSource::from_reader("t.ndjson", Box::new(io::Cursor::new(text.into_bytes())));
        let mut batch = Vec::new();
        while s.next_batch(&mut batch, 2).unwrap() {}
        assert_eq!(batch.len(), 3, "every valid line is kept");
        let r = s.report();
        assert_eq!((r.lines, r.blank, r.malformed, r.missing_field, r.bad_value), (7, 1, 1, 1, 1));
        assert!(r.samples[0].starts_with("t.ndjson:2: not valid JSON"), "{:?}", r.samples);
        assert!(
            r.samples[1].contains(":4: missing required field `service.name`"),
            "{:?}",
            r.samples
        );
        assert!(r.samples[2].contains(":6: field `http.response.status_code`"), "{:?}", r.samples);
    }

    #[test]
    fn missing_file_names_the_file() {
        let mut s = LineSource::new(vec!["/no/such/file.ndjson".into()]);
        let err = s.next_batch(&mut Vec::new(), 10).unwrap_err();
        assert!(format!("{err:#}").contains("/no/such/file.ndjson"));
    }
}
