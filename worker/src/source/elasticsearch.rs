//! Reading API-call events from the log indices: one time range at a time, in `@timestamp`
//! order, through a point-in-time and `search_after` (consistent while new documents arrive,
//! no scroll contexts left behind). Each hit's `_source` goes through the same event reader as
//! file mode; a document that is not a valid event is counted and located by index and id.
//! [`SliceReader`] fetches several slices of a range in parallel threads and hands them over in
//! order, so network and JSON work overlap with scoring.

use std::sync::mpsc;
use std::thread;

use serde_json::{json, value::RawValue, Value};

use crate::es::client::{EsClient, EsError};
use crate::model::time::{format_rfc3339, Millis};
use crate::model::Event;
use crate::source::json::parse_event_lenient;
use crate::source::IngestReport;

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
    index: String,
    from: Millis,
    to: Millis,
    page_size: usize,
    pit: Option<String>,
    after: Option<Vec<Value>>,
    done: bool,
}

impl<'c> RangeReader<'c> {
    pub fn new(client: &'c EsClient, index: &str, from: Millis, to: Millis, page_size: usize) -> Self {
        RangeReader {
            client,
            index: index.to_owned(),
            from,
            to,
            page_size,
            pit: None,
            after: None,
            done: from >= to,
        }
    }

    /// The next page, or `None` at the end of the range.
    pub fn next_page(&mut self) -> Result<Option<Page>, EsError> {
        if self.done {
            return Ok(None);
        }
        if self.pit.is_none() {
            let path = format!("/{}/_pit?keep_alive=2m&ignore_unavailable=true&allow_no_indices=true", self.index);
            let (status, v) = self.client.json_status("POST", &path, None)?;
            if status == 404 {
                // No log index yet: nothing to read.
                self.done = true;
                return Ok(None);
            }
            if !(200..300).contains(&status) {
                return Err(EsError::status(status, "POST", path, v.to_string()));
            }
            self.pit = v.get("id").and_then(Value::as_str).map(str::to_owned);
        }
        let mut body = json!({
            "size": self.page_size,
            "track_total_hits": false,
            "pit": {"id": self.pit, "keep_alive": "2m"},
            "query": {"range": {"@timestamp": {
                "gte": format_rfc3339(self.from),
                "lt": format_rfc3339(self.to),
                "format": "strict_date_optional_time"
            }}},
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
        let mut page = Page {
            bytes: raw.len() as u64,
            ..Page::default()
        };
        let resp: SearchResponse = serde_json::from_slice(&raw).map_err(|e| EsError::Decode {
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
            page.report.lines += 1;
            let Some(src) = hit.source else {
                page.report.missing_field += 1;
                page.report.note(hit.index, 0, &format!("document {}: no _source", hit.id));
                continue;
            };
            match parse_event_lenient(src.get().as_bytes()) {
                Ok((ev, dropped)) => {
                    for d in &dropped {
                        page.report
                            .dropped(d.field, hit.index, 0, &format!("document {}: {}", hit.id, d.why));
                    }
                    page.report.events += 1;
                    page.events.push(ev);
                    page.ids
                        .push(crate::model::hash_str(hit.index) ^ crate::model::hash_str(hit.id).rotate_left(1));
                }
                Err(e) => {
                    match e {
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
        Ok(Some(page))
    }

    fn finish(&mut self) {
        self.done = true;
        if let Some(pit) = self.pit.take() {
            // Best effort: the point-in-time expires by itself anyway.
            let _ = self.client.json_status("DELETE", "/_pit", Some(&json!({ "id": pit })));
        }
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
    pub fn new(client: &'c EsClient, index: &str, from: Millis, to: Millis) -> Self {
        RangeSource {
            reader: RangeReader::new(client, index, from, to, 5_000),
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
    pub fn start(client: &EsClient, index: &str, slices: Vec<(Millis, Millis)>, threads: usize, page_size: usize) -> Self {
        let threads = threads.clamp(1, slices.len().max(1));
        let mut receivers = Vec::new();
        let mut handles = Vec::new();
        let n = slices.len();
        for t in 0..threads {
            let (tx, rx) = mpsc::sync_channel::<(usize, SliceMsg)>(4);
            let mine: Vec<(usize, (Millis, Millis))> = slices.iter().copied().enumerate().filter(|(i, _)| i % threads == t).collect();
            let client = client.clone();
            let index = index.to_owned();
            handles.push(thread::spawn(move || {
                for (i, (from, to)) in mine {
                    let mut r = RangeReader::new(&client, &index, from, to, page_size);
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
