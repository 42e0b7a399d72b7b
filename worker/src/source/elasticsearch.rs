//! Reading API-call events from the log indices: one time range at a time, in `@timestamp`
//! order, through a point-in-time and `search_after` (consistent while new documents arrive,
//! no scroll contexts left behind). Each hit's `_source` goes through the same event reader as
//! file mode; a document that is not a valid event is counted and located by index and id.
//! [`SliceReader`] fetches several slices of a range in parallel threads and hands them over in
//! order, so network and JSON work overlap with scoring.
//!
//! What the documents are is said per index pattern ([`LogSource`], `[[elasticsearch.sources]]`):
//! our ECS events, a provider's JSON or an integration's document through a field map, or a raw
//! line (`event.original` / `message`) parsed as its format, so an index is read as it is.

use std::collections::{HashMap, HashSet};
use std::sync::{mpsc, Arc};
use std::thread;

use serde_json::{json, value::RawValue, Value};

use crate::es::client::{EsClient, EsError};
use crate::model::time::{format_rfc3339, Millis};
use crate::model::Event;
use crate::source::fields::lookup;
use crate::source::formats::{InputFormat, LineParser, LogFormat};
use crate::source::json::{DroppedField, EventError};
use crate::source::IngestReport;

/// One index pattern and how its documents read: checked with the rest of the configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct LogSource {
    /// An index pattern, data stream or alias (`logs-aws.elb_logs-*`).
    pub index: String,
    /// The format (`json` = our ECS events) with the user's field map and defaults.
    pub input: InputFormat,
    /// Where a text format's line is, tried in order (default `event.original`, then `message`).
    pub message_fields: Vec<String>,
}

impl LogSource {
    /// Our own ECS events in `index`: what `--logs` / `[elasticsearch] logs` say.
    pub fn ecs(index: &str) -> Self {
        LogSource {
            index: index.to_owned(),
            input: InputFormat {
                format: LogFormat::Json,
                ..InputFormat::default()
            },
            message_fields: Vec::new(),
        }
    }

    /// Whether the documents hold a raw line rather than fields: always for the text formats;
    /// for Envoy (text, or Istio's JSON) when a message field is named.
    pub fn reads_lines(format: LogFormat, message_field_named: bool) -> bool {
        matches!(format, LogFormat::Nginx | LogFormat::Apache | LogFormat::AwsAlb) || (format == LogFormat::Envoy && message_field_named)
    }

    /// The fields a raw line is looked for in.
    pub fn line_fields(&self) -> Vec<String> {
        if self.message_fields.is_empty() {
            vec!["event.original".to_owned(), "message".to_owned()]
        } else {
            self.message_fields.clone()
        }
    }
}

/// How one source's documents become events.
enum DocShape {
    /// Fields: ECS, a provider's JSON or an integration's document through a field map.
    Fields(LineParser),
    /// A raw line in one of these fields, parsed as its format.
    Line(Vec<String>, LineParser),
}

/// The log sources of a job, ready to read hits: the comma-joined pattern searched and, per
/// hit, the source its index belongs to.
pub struct Documents {
    pattern: String,
    sources: Vec<(String, DocShape)>,
}

impl Documents {
    pub fn new(sources: &[LogSource]) -> anyhow::Result<Self> {
        anyhow::ensure!(!sources.is_empty(), "no log index to read");
        let mut built = Vec::new();
        for s in sources {
            let parser =
                LineParser::new(s.input.format, &s.input).map_err(|e| anyhow::anyhow!("elasticsearch source `{}`: {e}", s.index))?;
            let shape = if LogSource::reads_lines(s.input.format, !s.message_fields.is_empty()) {
                DocShape::Line(s.line_fields(), parser)
            } else {
                DocShape::Fields(parser)
            };
            built.push((s.index.clone(), shape));
        }
        Ok(Documents {
            pattern: search_pattern(sources),
            sources: built,
        })
    }

    /// Our ECS events in `index`.
    pub fn ecs(index: &str) -> Self {
        Documents::new(&[LogSource::ecs(index)]).unwrap_or_else(|_| unreachable!("ECS JSON needs nothing"))
    }

    /// What is searched: the sources' patterns, comma-joined.
    pub fn pattern(&self) -> &str {
        &self.pattern
    }

    /// The source a hit's index belongs to: the first pattern that matches the index or, for a
    /// data stream's backing index (`.ds-<stream>-<date>-<generation>`), the stream.
    fn source_of(&self, index: &str) -> Option<usize> {
        let stream = index.strip_prefix(".ds-");
        self.sources.iter().position(|(pattern, _)| {
            pattern.split(',').any(|p| {
                glob(p, index) || stream.is_some_and(|s| glob(p, s) || s.strip_prefix(p).is_some_and(|rest| rest.starts_with('-')))
            })
        })
    }

    fn read(&self, source: usize, doc: &[u8]) -> Result<(Event, Vec<DroppedField>), EventError> {
        match &self.sources[source].1 {
            DocShape::Fields(p) => p.parse(doc),
            DocShape::Line(fields, p) => {
                let v: Value = serde_json::from_slice(doc).map_err(|e| EventError::Json(e.to_string()))?;
                let line = fields
                    .iter()
                    .find_map(|f| lookup(&v, f).and_then(Value::as_str))
                    .ok_or_else(|| EventError::Layout {
                        format: p.format().name(),
                        why: format!("no {} field holding the line", fields.join(" or ")),
                    })?;
                p.parse(line.as_bytes())
            }
        }
    }
}

/// What reading `sources` searches: their patterns, comma-joined.
pub fn search_pattern(sources: &[LogSource]) -> String {
    sources.iter().map(|s| s.index.as_str()).collect::<Vec<_>>().join(",")
}

/// `*` matches any run of characters; everything else matches itself.
fn glob(pattern: &str, name: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or_default();
    let Some(mut rest) = name.strip_prefix(first) else { return false };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else {
        return rest.is_empty();
    };
    for part in middle {
        match rest.find(part) {
            Some(i) => rest = &rest[i + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

/// A page of events, and what could not be used in it.
#[derive(Default, Debug)]
pub struct Page {
    pub events: Vec<Event>,
    /// Hashes of the events' document ids (`index/_id`), in the same order.
    pub ids: Vec<u64>,
    pub report: IngestReport,
    pub bytes: u64,
}

#[derive(serde::Deserialize)]
struct SearchResponse<'a> {
    pit_id: Option<String>,
    /// `filter_path` drops `hits.hits` when it is empty.
    #[serde(borrow, default)]
    hits: Hits<'a>,
}

#[derive(serde::Deserialize, Default)]
struct Hits<'a> {
    #[serde(borrow, default)]
    hits: Vec<Hit<'a>>,
}

#[derive(serde::Deserialize)]
struct Hit<'a> {
    #[serde(rename = "_index")]
    index: &'a str,
    #[serde(rename = "_id")]
    id: &'a str,
    #[serde(rename = "_source", borrow)]
    source: Option<&'a RawValue>,
    sort: Vec<Value>,
}

/// Pages through `[from, to)` of `index` in time order.
pub struct RangeReader<'c> {
    client: &'c EsClient,
    docs: Arc<Documents>,
    /// The source of each index seen (hits of one index read alike).
    source_of: HashMap<String, Option<usize>>,
    from: Millis,
    to: Millis,
    page_size: usize,
    pit: Option<String>,
    after: Option<Vec<Value>>,
    /// The `@timestamp` sort value of the last hit handed over, and the documents handed over
    /// with that very timestamp: where a new point-in-time resumes without loss or repeat.
    last_time: Option<Value>,
    seen_at_last_time: HashSet<u64>,
    /// Points-in-time reopened after the one in use failed: in all, and since the last success.
    reopened: u32,
    failed_in_a_row: u32,
    done: bool,
    /// A filter clause besides the time range (one partition's keys).
    filter: Option<Arc<Value>>,
}

/// How often in a row a range's point-in-time is reopened before its failure is the caller's:
/// each reopening follows the client's own retries and a growing pause, so this spans a minute
/// or more of a cluster recovering.
const MAX_PIT_REOPENS: u32 = 8;

impl<'c> RangeReader<'c> {
    pub fn new(client: &'c EsClient, docs: &Arc<Documents>, from: Millis, to: Millis, page_size: usize) -> Self {
        RangeReader {
            client,
            docs: Arc::clone(docs),
            source_of: HashMap::new(),
            from,
            to,
            page_size,
            pit: None,
            after: None,
            last_time: None,
            seen_at_last_time: HashSet::new(),
            reopened: 0,
            failed_in_a_row: 0,
            done: from >= to,
            filter: None,
        }
    }

    /// Reads only the documents matching `filter` too (a query clause: one partition's keys).
    pub fn with_filter(mut self, filter: Option<Arc<Value>>) -> Self {
        self.filter = filter;
        self
    }

    /// The point-in-time being read, if one is open.
    pub fn point_in_time(&self) -> Option<&str> {
        self.pit.as_deref()
    }

    /// How often a failed point-in-time was replaced.
    pub fn reopened(&self) -> u32 {
        self.reopened
    }

    /// The next page, or `None` at the end of the range.
    ///
    /// A point-in-time lives on the nodes holding its shard copies: when one of them dies (or
    /// the point-in-time expires behind a slow consumer) searches on it fail for good, however
    /// often they are retried. So a failed search opens a new point-in-time and resumes after the
    /// last timestamp handed over, skipping the documents of that timestamp already handed
    /// over (`_shard_doc` positions do not carry from one point-in-time to another).
    pub fn next_page(&mut self) -> Result<Option<Page>, EsError> {
        loop {
            if self.done {
                return Ok(None);
            }
            let Some(raw) = self.fetch()? else {
                return Ok(None);
            };
            let (page, repeated) = self.read_hits(&raw)?;
            // A page wholly read before the point-in-time was replaced is no progress: the next
            // one is (so losing the point-in-time after every page still ends).
            if page.report.lines > 0 || repeated == 0 || self.done {
                return Ok(Some(page));
            }
        }
    }

    /// The raw response of the next search, on a new point-in-time where the last one failed;
    /// `None` when there is no log index to read.
    fn fetch(&mut self) -> Result<Option<bytes::Bytes>, EsError> {
        loop {
            let attempt = match self.pit {
                Some(_) => self.search(),
                None => match self.open_pit() {
                    Ok(true) => self.search(),
                    Ok(false) => return Ok(None),
                    Err(e) => Err(e),
                },
            };
            match attempt {
                Ok(raw) => {
                    self.failed_in_a_row = 0;
                    return Ok(Some(raw));
                }
                Err(e) if self.failed_in_a_row < MAX_PIT_REOPENS && reopening_may_help(&e) => {
                    self.reopened += 1;
                    self.failed_in_a_row += 1;
                    tracing::warn!(
                        error = %e,
                        index = %self.docs.pattern(),
                        from = %format_rfc3339(self.from),
                        to = %format_rfc3339(self.to),
                        attempt = self.failed_in_a_row,
                        "search on a point-in-time failed: opening a new one and resuming after the last event read"
                    );
                    self.drop_pit();
                    self.after = self.last_time.as_ref().map(|t| vec![t.clone(), json!(-1)]);
                    // At once the first time (the point-in-time alone was lost); then a growing
                    // pause while the cluster recovers.
                    std::thread::sleep(std::time::Duration::from_millis(1000 * u64::from(self.failed_in_a_row - 1)));
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// The events of a response, and how many of its hits had been handed over already.
    fn read_hits(&mut self, raw: &[u8]) -> Result<(Page, usize), EsError> {
        let mut repeated = 0;
        let mut page = Page {
            bytes: raw.len() as u64,
            ..Page::default()
        };
        let resp: SearchResponse = serde_json::from_slice(raw).map_err(|e| EsError::Decode {
            method: "POST",
            path: "/_search".to_owned(),
            reason: e.to_string(),
        })?;
        if let Some(p) = resp.pit_id {
            self.pit = Some(p);
        }
        let n = resp.hits.hits.len();
        page.events.reserve(n);
        for hit in &resp.hits.hits {
            let id = crate::model::hash_str(hit.index) ^ crate::model::hash_str(hit.id).rotate_left(1);
            let time = hit.sort.first();
            if time.is_some() && time == self.last_time.as_ref() {
                if !self.seen_at_last_time.insert(id) {
                    // Handed over before the point-in-time was reopened.
                    repeated += 1;
                    continue;
                }
            } else {
                self.last_time = time.cloned();
                self.seen_at_last_time.clear();
                self.seen_at_last_time.insert(id);
            }
            page.report.lines += 1;
            let Some(src) = hit.source else {
                page.report.missing_field += 1;
                page.report.note(hit.index, 0, &format!("document {}: no _source", hit.id));
                continue;
            };
            // One source reads every hit (an alias may point anywhere); several go by index.
            let source = if self.docs.sources.len() == 1 {
                Some(0)
            } else {
                match self.source_of.get(hit.index) {
                    Some(s) => *s,
                    None => {
                        let s = self.docs.source_of(hit.index);
                        self.source_of.insert(hit.index.to_owned(), s);
                        s
                    }
                }
            };
            let Some(source) = source else {
                page.report.bad_value += 1;
                page.report.note(
                    hit.index,
                    0,
                    &format!(
                        "document {}: its index matches none of the sources ({}): add a source for it",
                        hit.id,
                        self.docs.pattern()
                    ),
                );
                continue;
            };
            match self.docs.read(source, src.get().as_bytes()) {
                Ok((ev, dropped)) => {
                    for d in &dropped {
                        page.report
                            .dropped(d.field, hit.index, 0, &format!("document {}: {}", hit.id, d.why));
                    }
                    page.report.events += 1;
                    page.events.push(ev);
                    page.ids.push(id);
                }
                Err(e) => {
                    match e {
                        crate::source::json::EventError::NotACall(_) => {
                            page.report.not_calls += 1;
                            continue;
                        }
                        crate::source::json::EventError::Missing(_) => page.report.missing_field += 1,
                        crate::source::json::EventError::Json(_) => page.report.malformed += 1,
                        _ => page.report.bad_value += 1,
                    }
                    if page.report.samples.len() < IngestReport::MAX_SAMPLES {
                        page.report.samples.push(format!("{}/_doc/{}: {e}", hit.index, hit.id));
                    }
                }
            }
        }
        match resp.hits.hits.last() {
            Some(last) if n >= self.page_size => self.after = Some(last.sort.clone()),
            _ => self.finish(),
        }
        Ok((page, repeated))
    }

    /// Opens the point-in-time; `false` when there is no log index yet (nothing to read).
    fn open_pit(&mut self) -> Result<bool, EsError> {
        let path = format!(
            "/{}/_pit?keep_alive=2m&ignore_unavailable=true&allow_no_indices=true",
            self.docs.pattern()
        );
        let (status, v) = self.client.json_status("POST", &path, None)?;
        if status == 404 {
            self.done = true;
            return Ok(false);
        }
        if !(200..300).contains(&status) {
            return Err(EsError::status(status, "POST", path, v.to_string()));
        }
        self.pit = v.get("id").and_then(Value::as_str).map(str::to_owned);
        Ok(true)
    }

    /// One page of hits on the point-in-time, as the raw response.
    fn search(&self) -> Result<bytes::Bytes, EsError> {
        let range = json!({"range": {"@timestamp": {
            "gte": format_rfc3339(self.from),
            "lt": format_rfc3339(self.to),
            "format": "strict_date_optional_time"
        }}});
        let query = match &self.filter {
            Some(f) => json!({"bool": {"filter": [range, f.as_ref()]}}),
            None => range,
        };
        let mut body = json!({
            "size": self.page_size,
            "track_total_hits": false,
            "pit": {"id": self.pit, "keep_alive": "2m"},
            "query": query,
            "sort": [{"@timestamp": {"order": "asc", "format": "strict_date_optional_time_nanos"}}, {"_shard_doc": "asc"}],
        });
        if let Some(after) = &self.after {
            body["search_after"] = json!(after);
        }
        let bytes = serde_json::to_vec(&body).unwrap_or_default();
        let path = "/_search?filter_path=pit_id,hits.hits._index,hits.hits._id,hits.hits._source,hits.hits.sort";
        let (status, raw) = self.client.send_raw("POST", path, Some((&bytes, "application/json")))?;
        if !(200..300).contains(&status) {
            return Err(EsError::status(status, "POST", "/_search", crate::es::client::error_reason(&raw)));
        }
        Ok(raw)
    }

    fn drop_pit(&mut self) {
        if let Some(pit) = self.pit.take() {
            // Best effort: the point-in-time expires by itself anyway.
            let _ = self.client.json_status("DELETE", "/_pit", Some(&json!({ "id": pit })));
        }
    }

    fn finish(&mut self) {
        self.done = true;
        self.drop_pit();
    }
}

/// Whether a failed search may succeed on a new point-in-time: the point-in-time is gone (404),
/// or shards on it failed (a node left, the cluster is busy or recovering).
fn reopening_may_help(e: &EsError) -> bool {
    match e {
        EsError::Status { status, .. } => *status == 404 || e.is_transient() || *status >= 500,
        _ => false,
    }
}

impl Drop for RangeReader<'_> {
    fn drop(&mut self) {
        self.finish();
    }
}

/// A time range of the log indices as an [`EventSource`](crate::source::EventSource), in time
/// order: what `features --es` and `train --es` learn from.
pub struct RangeSource<'c> {
    reader: RangeReader<'c>,
    pending: std::collections::VecDeque<Event>,
    report: IngestReport,
}

impl<'c> RangeSource<'c> {
    pub fn new(client: &'c EsClient, docs: &Arc<Documents>, from: Millis, to: Millis) -> Self {
        RangeSource {
            reader: RangeReader::new(client, docs, from, to, 5_000),
            pending: Default::default(),
            report: IngestReport::default(),
        }
    }
}

impl crate::source::EventSource for RangeSource<'_> {
    fn next_batch(&mut self, batch: &mut Vec<Event>, max: usize) -> anyhow::Result<bool> {
        while self.pending.len() < max {
            match self.reader.next_page()? {
                Some(page) => {
                    self.report.absorb(&page.report);
                    self.pending.extend(page.events);
                }
                None => break,
            }
        }
        let n = max.min(self.pending.len());
        batch.extend(self.pending.drain(..n));
        Ok(!self.pending.is_empty() || !self.reader.done)
    }

    fn report(&self) -> &IngestReport {
        &self.report
    }
}

/// One slice's pages, in order, ending with `Done` or an error.
pub enum SliceMsg {
    Page(Page),
    Done,
    Failed(EsError),
}

/// Reads consecutive slices of a range with `threads` readers in parallel; slices come out in
/// time order. Memory is bounded: each reader holds at most `depth` pages not yet taken.
pub struct SliceReader {
    receivers: Vec<mpsc::Receiver<(usize, SliceMsg)>>,
    handles: Vec<thread::JoinHandle<()>>,
    slices: usize,
    current: usize,
}

impl SliceReader {
    /// `filter`: a query clause every document read must match too (one partition's keys).
    pub fn start(
        client: &EsClient,
        docs: &Arc<Documents>,
        slices: Vec<(Millis, Millis)>,
        (threads, page_size): (usize, usize),
        filter: Option<Arc<Value>>,
    ) -> Self {
        let threads = threads.clamp(1, slices.len().max(1));
        let mut receivers = Vec::new();
        let mut handles = Vec::new();
        let n = slices.len();
        for t in 0..threads {
            let (tx, rx) = mpsc::sync_channel::<(usize, SliceMsg)>(4);
            let mine: Vec<(usize, (Millis, Millis))> = slices.iter().copied().enumerate().filter(|(i, _)| i % threads == t).collect();
            let client = client.clone();
            let docs = Arc::clone(docs);
            let filter = filter.clone();
            handles.push(thread::spawn(move || {
                for (i, (from, to)) in mine {
                    let mut r = RangeReader::new(&client, &docs, from, to, page_size).with_filter(filter.clone());
                    loop {
                        match r.next_page() {
                            Ok(Some(p)) => {
                                if tx.send((i, SliceMsg::Page(p))).is_err() {
                                    return;
                                }
                            }
                            Ok(None) => {
                                if tx.send((i, SliceMsg::Done)).is_err() {
                                    return;
                                }
                                break;
                            }
                            Err(e) => {
                                let _ = tx.send((i, SliceMsg::Failed(e)));
                                return;
                            }
                        }
                    }
                }
            }));
            receivers.push(rx);
        }
        SliceReader {
            receivers,
            handles,
            slices: n,
            current: 0,
        }
    }

    /// The next message: a page of the current slice, the end of a slice (with its index), or a
    /// failure. `None` once every slice is done.
    pub fn next_message(&mut self) -> Option<(usize, SliceMsg)> {
        if self.current >= self.slices {
            return None;
        }
        let rx = &self.receivers[self.current % self.receivers.len()];
        match rx.recv() {
            Ok((i, msg)) => {
                if matches!(msg, SliceMsg::Done) {
                    self.current += 1;
                }
                Some((i, msg))
            }
            Err(_) => {
                self.current = self.slices;
                None
            }
        }
    }
}

impl Drop for SliceReader {
    fn drop(&mut self) {
        // Dropping the receivers stops the readers at their next send.
        self.receivers.clear();
        for h in self.handles.drain(..) {
            let _ = h.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_index_names() {
        assert!(glob("logs-aws.elb_logs-*", "logs-aws.elb_logs-default"));
        assert!(glob("*", "anything"));
        assert!(glob("a*c*e", "abcde"));
        assert!(!glob("a*c*e", "abcd"));
        assert!(glob("exact", "exact"));
        assert!(!glob("exact", "exactly"));
        assert!(!glob("x-*-y", "x-y"));
    }

    fn sources() -> Documents {
        let nginx = LogSource {
            index: "web-nginx".into(),
            input: InputFormat {
                format: LogFormat::Nginx,
                service: Some("web".into()),
                provider: Some("onprem".into()),
                ..InputFormat::default()
            },
            message_fields: Vec::new(),
        };
        let elb = LogSource {
            index: "logs-aws.elb_logs-*".into(),
            input: InputFormat {
                format: LogFormat::ElasticAwsElb,
                ..InputFormat::default()
            },
            message_fields: Vec::new(),
        };
        Documents::new(&[LogSource::ecs("logs-apiwatch.calls-*"), nginx, elb]).unwrap()
    }

    #[test]
    fn each_hit_is_read_by_the_source_its_index_belongs_to() {
        let d = sources();
        assert_eq!(d.pattern(), "logs-apiwatch.calls-*,web-nginx,logs-aws.elb_logs-*");
        assert_eq!(d.source_of(".ds-logs-apiwatch.calls-default-2026.03.02-000001"), Some(0));
        assert_eq!(
            d.source_of(".ds-web-nginx-2026.03.02-000003"),
            Some(1),
            "a data stream named exactly"
        );
        assert_eq!(d.source_of("logs-aws.elb_logs-prod"), Some(2));
        assert_eq!(d.source_of("unrelated"), None);
        let line = r#"203.0.113.5 - - [02/Mar/2026:08:15:04 +0000] "GET /api/cart HTTP/1.1" 503 12 "-" "curl/8""#;
        let doc = serde_json::json!({"@timestamp": "2026-03-02T08:15:04Z", "event": {"original": line}, "message": "other"});
        let (e, _) = d.read(1, doc.to_string().as_bytes()).unwrap();
        assert_eq!(
            (e.service.as_str(), e.path.as_str(), e.status, e.duration_ns),
            ("web", "/api/cart", 503, None)
        );
        let doc = serde_json::json!({"@timestamp": "2026-03-02T08:15:04Z", "message": line});
        assert_eq!(
            d.read(1, doc.to_string().as_bytes()).unwrap().0.status,
            503,
            "message when there is no event.original"
        );
        let err = d.read(1, br#"{"@timestamp": "2026-03-02T08:15:04Z"}"#).unwrap_err().to_string();
        assert!(err.contains("no event.original or message field"), "{err}");
        let elb = include_str!("../../tests/data/formats/elastic-aws-elb.log").lines().next().unwrap();
        let (e, _) = d.read(2, elb.as_bytes()).unwrap();
        assert_eq!((e.service.as_str(), e.duration_ns), ("payments-api", Some(21_000_000)));
    }
}
