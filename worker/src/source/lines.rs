//! Line-oriented inputs from files or standard input (`-`): NDJSON events, or access logs
//! through [`AccessLogParser`]. One reader, so both locate and count bad lines the same way.
//!
//! What a file may be is read from its first bytes: gzip is decompressed, a UTF-8 byte-order
//! mark is skipped, UTF-16 and other compressions are named with what to do. Lines end at `\n`,
//! `\r\n` or a lone `\r`; a line longer than [`MAX_LINE_BYTES`] is skipped without being held
//! in memory. Timestamps outside the accepted range and events from a wrong clock
//! ([`SkewGuard`]) are refused with their place, like any other bad line.

use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Read, Write};
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;

use super::formats::{recognise, InputFormat, LineParser, LogFormat};
use super::skew::{Outcome, SkewGuard};
use super::{EventSource, IngestReport, InputSettings};
use crate::model::time::now_millis;
use crate::model::Event;
use crate::source::json::EventError;

/// Lines of each input read to recognise its format (`auto`) or check the one named.
const SAMPLE_LINES: usize = 20;

/// The longest line read as an event; longer ones are skipped (and not held in memory).
pub const MAX_LINE_BYTES: usize = 4 << 20;

/// Text of a refused line kept in the rejects file, at most.
const MAX_REJECT_TEXT: usize = 64 << 10;

/// The rejects file (`rejected.ndjson`): every skipped line with its place and reason, created
/// at the first one; shared by the sources of merged inputs.
#[derive(Clone)]
pub struct Rejects(Arc<std::sync::Mutex<(PathBuf, Option<BufWriter<File>>)>>);

impl Rejects {
    pub fn new(path: PathBuf) -> Self {
        Rejects(Arc::new(std::sync::Mutex::new((path, None))))
    }

    fn write(&self, file: &str, line: u64, reason: &str, text: &str) -> anyhow::Result<()> {
        let mut g = self.0.lock().map_err(|_| anyhow::anyhow!("the rejects file's writer panicked"))?;
        let (path, slot) = &mut *g;
        let w = match slot {
            Some(w) => w,
            None => {
                let f = File::create(&*path).with_context(|| format!("cannot create {} for the skipped lines", path.display()))?;
                slot.insert(BufWriter::new(f))
            }
        };
        let mut end = text.len().min(MAX_REJECT_TEXT);
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        let doc = serde_json::json!({ "file": file, "line": line, "reason": reason, "text": &text[..end] });
        serde_json::to_writer(&mut *w, &doc).with_context(|| format!("cannot write {}", path.display()))?;
        w.write_all(b"\n").with_context(|| format!("cannot write {}", path.display()))?;
        Ok(())
    }

    fn flush(&self) -> anyhow::Result<()> {
        let mut g = self.0.lock().map_err(|_| anyhow::anyhow!("the rejects file's writer panicked"))?;
        if let Some(w) = g.1.as_mut() {
            w.flush().context("cannot write the skipped lines")?;
        }
        Ok(())
    }
}

/// Where a held event came from, to report it if it is refused later.
struct Place {
    file: Arc<str>,
    line: u64,
    text: String,
}

/// One open input.
struct Input {
    name: Arc<str>,
    reader: Box<dyn BufRead + Send>,
    line: u64,
    /// The last line ended with `\r`: a `\n` right after it belongs to that line ending.
    after_cr: bool,
}

/// A built parser's format, service and provider defaults.
type ParserKey = (LogFormat, Option<String>, Option<String>);

/// Reads several inputs one after another.
pub struct LineSource {
    inputs: Vec<PathBuf>,
    /// What the lines are (`auto`: recognised per input).
    format: InputFormat,
    /// The current input's parser.
    parser: Arc<LineParser>,
    /// Parsers built so far, by format and service default.
    parsers: Vec<(ParserKey, Arc<LineParser>)>,
    settings: InputSettings,
    /// Where every skipped line goes, with its place and reason (created at the first one).
    rejects: Option<Rejects>,
    next_input: usize,
    current: Option<Input>,
    line: Vec<u8>,
    guard: SkewGuard<Place>,
    /// The guard has been told the inputs ended.
    finished: bool,
    report: IngestReport,
}

/// What the first bytes of an input say it is.
fn sniff(head: &[u8]) -> Result<bool, String> {
    const TO_UTF8: &str = "convert it first, for example with `iconv -f UTF-16 -t UTF-8`";
    match head {
        [0x1f, 0x8b, ..] => Ok(true),
        [0xff, 0xfe, ..] | [0xfe, 0xff, ..] => Err(format!(
            "is UTF-16 text (it starts with a UTF-16 byte-order mark); apiwatch reads UTF-8: {TO_UTF8}"
        )),
        [a, 0, b, 0, ..] if *a != 0 && *b != 0 => Err(format!(
            "looks like UTF-16 text (every other byte is zero); apiwatch reads UTF-8: {TO_UTF8}"
        )),
        [0x28, 0xb5, 0x2f, 0xfd, ..] => Err("is zstd-compressed: decompress it first (`zstd -dc FILE | apiwatch detect -i -`)".into()),
        [b'B', b'Z', b'h', ..] => Err("is bzip2-compressed: decompress it first (`bzip2 -dc FILE | apiwatch detect -i -`)".into()),
        [0xfd, b'7', b'z', b'X', b'Z', 0, ..] => Err("is xz-compressed: decompress it first (`xz -dc FILE | apiwatch detect -i -`)".into()),
        _ => Ok(false),
    }
}

/// Wraps an opened input: gzip is decompressed; encodings apiwatch does not read are named.
fn decode(name: &str, raw: Box<dyn Read + Send>) -> anyhow::Result<Box<dyn BufRead + Send>> {
    let mut r = BufReader::with_capacity(1 << 20, raw);
    let head = r.fill_buf().with_context(|| format!("cannot read {name}"))?;
    match sniff(head) {
        Ok(true) => Ok(Box::new(BufReader::with_capacity(1 << 20, flate2::read::MultiGzDecoder::new(r)))),
        Ok(false) => Ok(Box::new(r)),
        Err(why) => anyhow::bail!("{name} {why}"),
    }
}

impl LineSource {
    /// NDJSON events.
    pub fn new(inputs: Vec<PathBuf>) -> Self {
        let format = InputFormat {
            format: LogFormat::Json,
            ..InputFormat::default()
        };
        LineSource {
            inputs,
            parser: Arc::new(LineParser::new(LogFormat::Json, &format).unwrap_or_else(|_| unreachable!("ECS JSON needs nothing"))),
            format,
            parsers: Vec::new(),
            settings: InputSettings::default(),
            rejects: None,
            next_input: 0,
            current: None,
            line: Vec::with_capacity(1024),
            guard: SkewGuard::new(InputSettings::default().skew),
            finished: false,
            report: IngestReport::default(),
        }
    }

    /// How the lines are read (the configuration's `[input]` format, fields and defaults).
    pub fn with_format(mut self, format: InputFormat) -> anyhow::Result<Self> {
        if format.format != LogFormat::Auto {
            self.parser = self.parser_for(format.format, None, &format)?;
        }
        self.format = format;
        Ok(self)
    }

    /// The parser of `format`, built once per format and defaults. A `--service` or
    /// `--provider` of `{file}` is the input's file name up to its first dot, `{dir}` the name
    /// of its directory (`aws/gateway.access.log`: gateway on aws).
    fn parser_for(&mut self, format: LogFormat, file: Option<&str>, settings: &InputFormat) -> anyhow::Result<Arc<LineParser>> {
        let path = file.map(std::path::Path::new);
        let fill = |v: Option<&str>| -> Option<String> {
            let v = v?;
            let file = path
                .and_then(|p| p.file_name())
                .and_then(|n| n.to_str())
                .map(|n| n.split('.').next().unwrap_or(n));
            let dir = path
                .and_then(|p| p.canonicalize().ok())
                .and_then(|p| p.parent().and_then(|d| d.file_name()).map(|d| d.to_string_lossy().into_owned()));
            Some(
                v.replace("{file}", file.unwrap_or("stdin"))
                    .replace("{dir}", dir.as_deref().unwrap_or("-")),
            )
        };
        let (service, provider) = (fill(settings.service.as_deref()), fill(settings.provider.as_deref()));
        let key = (format, service.clone(), provider.clone());
        if let Some((_, p)) = self.parsers.iter().find(|(k, _)| *k == key) {
            return Ok(Arc::clone(p));
        }
        let p = Arc::new(LineParser::new(
            format,
            &InputFormat {
                service,
                provider,
                ..settings.clone()
            },
        )?);
        self.parsers.push((key, Arc::clone(&p)));
        Ok(p)
    }

    /// Chooses (`auto`) or checks (a named format) the parser of an input from its first lines,
    /// and says so in the report.
    fn choose_parser(&mut self, name: &str, head: &[u8]) -> anyhow::Result<()> {
        let text = String::from_utf8_lossy(&head[..head.len().min(256 << 10)]);
        let mut lines: Vec<&str> = text.split(['\n', '\r']).filter(|l| !l.trim().is_empty()).collect();
        if lines.len() > 1 && !text.ends_with(['\n', '\r']) {
            lines.pop(); // perhaps cut by the end of what was buffered
        }
        lines.truncate(SAMPLE_LINES);
        if lines.is_empty() {
            return Ok(());
        }
        let first = lines[0].strip_prefix('\u{feff}').unwrap_or(lines[0]);
        lines[0] = first;
        let seen = recognise(lines.iter().copied());
        let settings = self.format.clone();
        let (format, how) = match (settings.format, seen.format) {
            (LogFormat::Auto, Some(f)) => (f, format!("recognised in {} of its first {} lines", seen.matched, seen.sampled)),
            (LogFormat::Auto, None) if !settings.fields.is_empty() && first.trim_start().starts_with('{') => {
                (LogFormat::Json, "JSON read by the field map".to_owned())
            }
            (LogFormat::Auto, None) => {
                let hint = format!("{name}: {}", seen.unknown_hint());
                tracing::info!("{hint}");
                self.report.notes.push(hint);
                (LogFormat::Json, "read as JSON events: no known format recognised".to_owned())
            }
            (named, seen_as) => {
                let parser = self.parser_for(named, Some(name), &settings)?;
                let fails = lines
                    .iter()
                    .filter(|l| {
                        matches!(
                            parser.parse(l.trim().as_bytes()),
                            Err(EventError::Json(_) | EventError::Pattern(_) | EventError::Layout { .. })
                        )
                    })
                    .count();
                if fails * 2 > lines.len() {
                    let looks = match seen_as {
                        Some(f) if f != named => format!("they look like {}: try --format {} (or leave --format out)", f.name(), f.name()),
                        _ => seen.unknown_hint(),
                    };
                    let note = format!(
                        "{name}: {fails} of its first {} lines are not {}; {looks}",
                        lines.len(),
                        named.name()
                    );
                    tracing::info!("{note}");
                    self.report.notes.push(note);
                }
                (named, "as given".to_owned())
            }
        };
        self.parser = self.parser_for(format, Some(name), &settings)?;
        self.report.formats.push(format!("{name}: {} ({how})", format.name()));
        Ok(())
    }

    /// The accepted time range and clock skew.
    pub fn with_settings(mut self, settings: InputSettings) -> Self {
        self.settings = settings;
        self.guard = SkewGuard::new(settings.skew);
        self
    }

    /// Writes every skipped line to `path` as NDJSON (`file`, `line`, `reason`, `text`), so
    /// nothing is lost: the report keeps counts and the first few, this file keeps them all.
    pub fn with_rejects(self, path: PathBuf) -> Self {
        self.with_shared_rejects(Rejects::new(path))
    }

    /// Writes skipped lines into a rejects file other sources write too (merged inputs).
    pub fn with_shared_rejects(mut self, rejects: Rejects) -> Self {
        self.rejects = Some(rejects);
        self
    }

    /// The inputs, to check they are not among the outputs.
    pub fn inputs(&self) -> &[PathBuf] {
        &self.inputs
    }

    /// Opens the first input now (a FIFO waits here for its writer), so that nothing is created
    /// for a run whose input cannot be read.
    pub fn open_first(&mut self) -> anyhow::Result<()> {
        if self.current.is_none() {
            self.open_next()?;
        }
        Ok(())
    }

    fn write_reject(&mut self, file: &str, line: u64, reason: &str, text: &str) -> anyhow::Result<()> {
        match &self.rejects {
            Some(r) => r.write(file, line, reason, text),
            None => Ok(()),
        }
    }

    /// From an in-memory reader (tests, benchmarks).
    pub fn from_reader(name: &str, r: Box<dyn BufRead + Send>) -> Self {
        let mut s = Self::new(Vec::new());
        s.current = Some(Input {
            name: name.into(),
            reader: r,
            line: 0,
            after_cr: false,
        });
        s
    }

    fn open_next(&mut self) -> anyhow::Result<bool> {
        let Some(path) = self.inputs.get(self.next_input).cloned() else {
            return Ok(false);
        };
        self.next_input += 1;
        let (name, raw): (Arc<str>, Box<dyn Read + Send>) = if path.as_os_str() == "-" {
            ("<stdin>".into(), Box::new(io::stdin()))
        } else {
            let f = File::open(&path).with_context(|| format!("cannot open input {}", path.display()))?;
            if f.metadata().is_ok_and(|m| m.is_dir()) {
                anyhow::bail!("input {} is a directory: name the log files in it", path.display());
            }
            (path.display().to_string().into(), Box::new(f))
        };
        let mut reader = decode(&name, raw)?;
        let head = reader.fill_buf().with_context(|| format!("cannot read {name}"))?.to_vec();
        self.choose_parser(&name, &head)?;
        self.current = Some(Input {
            name,
            reader,
            line: 0,
            after_cr: false,
        });
        Ok(true)
    }

    /// Reads the next line of the current input into `self.line`, without its ending. `None` at
    /// the end of the input; `Some(true)` when the line was longer than [`MAX_LINE_BYTES`] (only
    /// its start is kept).
    fn read_line(&mut self) -> anyhow::Result<Option<bool>> {
        let Some(input) = self.current.as_mut() else {
            return Ok(None);
        };
        self.line.clear();
        let (mut any, mut too_long) = (false, false);
        loop {
            let buf = match input.reader.fill_buf() {
                Ok(b) => b,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e).with_context(|| format!("cannot read {} after line {}", input.name, input.line)),
            };
            if buf.is_empty() {
                return Ok(any.then_some(too_long));
            }
            if input.after_cr {
                input.after_cr = false;
                if buf[0] == b'\n' {
                    input.reader.consume(1);
                    continue;
                }
            }
            any = true;
            let end = buf.iter().position(|&c| c == b'\n' || c == b'\r');
            let take = end.unwrap_or(buf.len());
            let room = MAX_LINE_BYTES.saturating_sub(self.line.len());
            self.line.extend_from_slice(&buf[..take.min(room)]);
            too_long |= take > room;
            match end {
                Some(i) => {
                    input.after_cr = buf[i] == b'\r';
                    input.reader.consume(i + 1);
                    return Ok(Some(too_long));
                }
                None => {
                    let n = buf.len();
                    input.reader.consume(n);
                }
            }
        }
    }

    /// Counts and records one skipped line.
    fn skip(&mut self, file: &str, line: u64, err: &EventError, text: &str) -> anyhow::Result<()> {
        match err {
            EventError::Json(_) | EventError::Pattern(_) | EventError::Layout { .. } => self.report.malformed += 1,
            EventError::Missing(_) => self.report.missing_field += 1,
            EventError::BadValue { .. } => self.report.bad_value += 1,
            EventError::NotACall(_) => {
                self.report.not_calls += 1;
                return Ok(());
            }
        }
        self.report.note(file, line, err);
        self.write_reject(file, line, &err.to_string(), text)
    }

    /// Passes what the skew guard settled: accepted events to the batch, refused ones to the
    /// rejects.
    fn settle(&mut self, outcomes: Vec<Outcome<Place>>, batch: &mut Vec<Event>) -> anyhow::Result<()> {
        for o in outcomes {
            match o {
                Outcome::Accepted(e) => {
                    self.report.events += 1;
                    batch.push(e);
                }
                Outcome::Refused(_, place, why) => {
                    self.report.clock_skew += 1;
                    self.report.note(&place.file, place.line, &why);
                    self.write_reject(&place.file, place.line, &why, &place.text)?;
                }
            }
        }
        Ok(())
    }

    /// Parses the line in `self.line` (line `lineno` of `name`) and offers it to the guard.
    fn take_line(&mut self, name: &Arc<str>, lineno: u64, too_long: bool, batch: &mut Vec<Event>) -> anyhow::Result<()> {
        self.report.lines += 1;
        let mut text = self.line.as_slice();
        if lineno == 1 {
            text = text.strip_prefix(b"\xef\xbb\xbf").unwrap_or(text);
        }
        let text = text.trim_ascii();
        if too_long {
            let err = EventError::Json(format!("line longer than {} MiB", MAX_LINE_BYTES >> 20));
            let text = String::from_utf8_lossy(text).into_owned();
            return self.skip(name, lineno, &err, &text);
        }
        if text.is_empty() {
            self.report.blank += 1;
            return Ok(());
        }
        let parsed = self.parser.parse(text);
        let (ev, dropped) = match parsed {
            Ok(p) => p,
            Err(err) => {
                let text = String::from_utf8_lossy(text).into_owned();
                return self.skip(name, lineno, &err, &text);
            }
        };
        if let Some(why) = self.settings.time_range.check(ev.timestamp, now_millis()) {
            let err = EventError::BadValue { field: "@timestamp", why };
            let text = String::from_utf8_lossy(text).into_owned();
            return self.skip(name, lineno, &err, &text);
        }
        for d in &dropped {
            self.report.dropped(d.field, name, lineno, &d.why);
        }
        if ev.duration_ns.is_none() {
            self.report.untimed += 1;
            if self.report.timing_hint.is_none() {
                self.report.timing_hint = Some(self.parser.format().timing_hint().to_owned());
            }
        }
        if self.guard.accepts_now(ev.timestamp) {
            let place = Place {
                file: Arc::clone(name),
                line: lineno,
                text: String::new(),
            };
            self.report.events += 1;
            self.guard.offer(ev, place, &mut |o| {
                if let Outcome::Accepted(e) = o {
                    batch.push(e);
                }
            });
            return Ok(());
        }
        let place = Place {
            file: Arc::clone(name),
            line: lineno,
            text: String::from_utf8_lossy(text).into_owned(),
        };
        let mut outcomes = Vec::new();
        self.guard.offer(ev, place, &mut |o| outcomes.push(o));
        self.settle(outcomes, batch)
    }
}

impl EventSource for LineSource {
    fn next_batch(&mut self, batch: &mut Vec<Event>, max: usize) -> anyhow::Result<bool> {
        let before = batch.len();
        while batch.len() - before < max {
            if self.current.is_none() && !self.open_next()? {
                if !self.finished {
                    self.finished = true;
                    let mut outcomes = Vec::new();
                    self.guard.finish(&mut |o| outcomes.push(o));
                    self.settle(outcomes, batch)?;
                }
                if let Some(r) = &self.rejects {
                    r.flush()?;
                }
                return Ok(false);
            }
            let Some(too_long) = self.read_line()? else {
                self.current = None;
                if let Some(r) = &self.rejects {
                    r.flush()?;
                }
                continue;
            };
            let Some(input) = self.current.as_mut() else {
                continue;
            };
            input.line += 1;
            let (name, lineno) = (Arc::clone(&input.name), input.line);
            self.take_line(&name, lineno, too_long, batch)?;
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

    const GOOD: &str = r#"{"@timestamp":"2026-03-02T06:00:00Z","service.name":"a","cloud.provider":"aws","http.request.method":"GET","url.path":"/x","http.response.status_code":200,"event.duration":1000}"#;

    fn at(minute: i64) -> String {
        GOOD.replace("06:00:00Z", &format!("{:02}:{:02}:00Z", 6 + minute / 60, minute % 60))
    }

    /// Reads bytes to the end: (events, report, rejects file lines).
    fn read_all(bytes: Vec<u8>) -> (Vec<Event>, IngestReport, Vec<serde_json::Value>) {
        let dir = tempfile::tempdir().unwrap();
        let rejects = dir.path().join("rejected.ndjson");
        let mut s = LineSource::from_reader("t.log", Box::new(io::Cursor::new(bytes))).with_rejects(rejects.clone());
        let mut batch = Vec::new();
        while s.next_batch(&mut batch, 3).unwrap() {}
        let r = s.report().clone();
        assert_eq!(
            r.lines,
            r.events + r.skipped() + r.blank,
            "every line is used, skipped or blank: {r:?}"
        );
        let text = std::fs::read_to_string(&rejects).unwrap_or_default();
        let rejected = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        (batch, r, rejected)
    }

    #[test]
    fn cr_crlf_and_lf_endings_and_a_bom_all_split_lines() {
        for sep in ["\n", "\r\n", "\r"] {
            let text = format!("\u{feff}{}{sep}{}{sep}{sep}{}", at(0), at(1), at(2));
            let (events, r, _) = read_all(text.into_bytes());
            assert_eq!((events.len(), r.lines, r.blank), (3, 4, 1), "{sep:?}");
        }
    }

    #[test]
    fn gzip_is_read_and_utf16_is_named() {
        let mut z = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        z.write_all(format!("{}\n{}\n", at(0), at(1)).as_bytes()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let gz = dir.path().join("calls.ndjson.gz");
        std::fs::write(&gz, z.finish().unwrap()).unwrap();
        let mut s = LineSource::new(vec![gz]);
        let mut batch = Vec::new();
        while s.next_batch(&mut batch, 10).unwrap() {}
        assert_eq!(batch.len(), 2);

        let utf16: Vec<u8> = [0xff, 0xfe]
            .into_iter()
            .chain(at(0).encode_utf16().flat_map(u16::to_le_bytes))
            .collect();
        let path = dir.path().join("calls-utf16.ndjson");
        std::fs::write(&path, utf16).unwrap();
        let err = LineSource::new(vec![path]).next_batch(&mut Vec::new(), 10).unwrap_err();
        let msg = format!("{err:#}");
        assert!(msg.contains("calls-utf16.ndjson is UTF-16") && msg.contains("iconv"), "{msg}");
    }

    #[test]
    fn an_overlong_line_is_skipped_without_being_held() {
        let long = format!("{{\"x\":\"{}\"}}", "a".repeat(MAX_LINE_BYTES + 10));
        let (events, r, rejected) = read_all(format!("{}\n{long}\n{}\n", at(0), at(1)).into_bytes());
        assert_eq!((events.len(), r.malformed), (2, 1));
        assert_eq!(rejected[0]["line"], 2);
        assert!(rejected[0]["reason"].as_str().unwrap().contains("longer than 4 MiB"));
        assert!(rejected[0]["text"].as_str().unwrap().len() <= MAX_REJECT_TEXT);
    }

    #[test]
    fn times_out_of_range_and_wrong_clocks_are_refused_with_their_place() {
        let mut lines: Vec<String> = (0..40).map(at).collect();
        lines.insert(20, GOOD.replace("2026-03-02T06:00:00Z", "2099-01-01T00:00:00Z"));
        lines.insert(10, GOOD.replace(r#""2026-03-02T06:00:00Z""#, "9223372036854775807"));
        lines.insert(30, GOOD.replace("2026-03-02T06:00:00Z", "1999-12-31T23:59:59Z"));
        // A wrong clock a few hours ahead, inside the accepted range.
        lines.insert(25, at(5 * 60));
        let (events, r, rejected) = read_all(lines.join("\n").into_bytes());
        assert_eq!(events.len(), 40);
        assert!(
            events.windows(2).all(|w| w[0].timestamp <= w[1].timestamp),
            "time never moved ahead"
        );
        assert_eq!((r.bad_value, r.clock_skew), (3, 1), "{r:?}");
        let places: Vec<(u64, &str)> = rejected
            .iter()
            .map(|d| (d["line"].as_u64().unwrap(), d["reason"].as_str().unwrap()))
            .collect();
        assert!(
            places.iter().any(|(l, why)| *l == 11 && why.contains("ahead of the wall clock")),
            "{places:?}"
        );
        assert!(
            places
                .iter()
                .any(|(l, why)| *l == 26 && why.starts_with("clock skew: 4.5 h ahead of the stream")),
            "{places:?}"
        );
        assert!(
            places.iter().any(|(_, why)| why.contains("before the earliest accepted time")),
            "{places:?}"
        );
    }

    #[test]
    fn a_bad_optional_field_is_counted_once_per_field_and_the_event_kept() {
        let bad = GOOD.replace(r#""event.duration":1000"#, r#""event.duration":1000,"http.response.bytes":"-""#);
        let (events, r, _) = read_all(format!("{bad}\n{bad}\n{}", at(1)).into_bytes());
        assert_eq!(events.len(), 3);
        let d = &r.dropped_fields["http.response.bytes"];
        assert_eq!(d.count, 2);
        assert!(d.example.starts_with("t.log:1: `-` is not"), "{}", d.example);
    }

    #[test]
    fn missing_file_names_the_file() {
        let mut s = LineSource::new(vec!["/no/such/file.ndjson".into()]);
        let err = s.next_batch(&mut Vec::new(), 10).unwrap_err();
        assert!(format!("{err:#}").contains("/no/such/file.ndjson"));
    }
}
