//! Reading ahead on a second thread. Parsing JSON is about a third of file-mode detection;
//! done on its own thread it overlaps with the pipeline instead of adding to it. Batches come
//! back in order, with the source's report as it stood after each, so nothing about what was
//! read or skipped changes.

use std::sync::mpsc::{self, Receiver};
use std::thread::JoinHandle;

use super::{EventSource, IngestReport};
use crate::model::Event;

/// Batches parsed ahead of the pipeline before the reader waits.
const DEPTH: usize = 8;
/// Events per batch handed over.
const BATCH: usize = 4096;

type Parsed = anyhow::Result<(Vec<Event>, bool, IngestReport)>;

/// Wraps a source so that it is read on a thread of its own.
pub struct ReadAhead {
    rx: Option<Receiver<Parsed>>,
    report: IngestReport,
    done: bool,
    handle: Option<JoinHandle<()>>,
}

impl ReadAhead {
    pub fn spawn<S: EventSource + Send + 'static>(mut source: S) -> std::io::Result<Self> {
        let (tx, rx) = mpsc::sync_channel::<Parsed>(DEPTH);
        let handle = std::thread::Builder::new().name("apiwatch-reader".into()).spawn(move || loop {
            let mut batch = Vec::with_capacity(BATCH);
            let parsed = source.next_batch(&mut batch, BATCH);
            let stop = !matches!(parsed, Ok(true));
            // A closed channel means the pipeline stopped early: nothing left to do.
            if tx.send(parsed.map(|more| (batch, more, source.report().clone()))).is_err() || stop {
                return;
            }
        })?;
        Ok(ReadAhead {
            rx: Some(rx),
            report: IngestReport::default(),
            done: false,
            handle: Some(handle),
        })
    }
}

impl EventSource for ReadAhead {
    fn next_batch(&mut self, batch: &mut Vec<Event>, _max: usize) -> anyhow::Result<bool> {
        if self.done {
            return Ok(false);
        }
        let Some(rx) = &self.rx else { return Ok(false) };
        match rx.recv() {
            Ok(Ok((mut events, more, report))) => {
                if batch.is_empty() {
                    std::mem::swap(batch, &mut events);
                } else {
                    batch.append(&mut events);
                }
                self.report = report;
                self.done = !more;
                Ok(more)
            }
            Ok(Err(e)) => {
                self.done = true;
                Err(e)
            }
            Err(_) => {
                self.done = true;
                anyhow::bail!("the reader thread stopped without finishing its input")
            }
        }
    }

    fn report(&self) -> &IngestReport {
        &self.report
    }
}

impl Drop for ReadAhead {
    fn drop(&mut self) {
        // Closing the channel lets a reader blocked on a full queue finish.
        self.rx.take();
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::LineSource;

    #[test]
    fn reads_the_same_events_and_report_as_the_source_itself() {
        let mut text = String::new();
        for i in 0..10_000 {
            if i % 1000 == 7 {
                text.push_str("{not json\n");
            } else {
                text.push_str(&format!(
                    "{{\"@timestamp\":\"2026-03-02T00:00:{:02}.000Z\",\"service.name\":\"s\",\"cloud.provider\":\"aws\",\"http.request.method\":\"GET\",\"url.path\":\"/a/{i}\",\"http.response.status_code\":200,\"event.duration\":1000000}}\n",
                    i % 60
                ));
            }
        }
        let open = || LineSource::from_reader("t.ndjson", Box::new(std::io::Cursor::new(text.clone().into_bytes())));
        let drain = |s: &mut dyn EventSource| {
            let mut all = Vec::new();
            let mut batch = Vec::new();
            loop {
                batch.clear();
                let more = s.next_batch(&mut batch, 4096).unwrap();
                all.extend(batch.drain(..).map(|e| (e.timestamp, e.path.to_string())));
                if !more {
                    return all;
                }
            }
        };
        let mut direct = open();
        let mut ahead = ReadAhead::spawn(open()).unwrap();
        assert_eq!(drain(&mut direct), drain(&mut ahead));
        let (a, b) = (direct.report(), ahead.report());
        assert_eq!((a.lines, a.events, a.malformed), (b.lines, b.events, b.malformed));
        assert_eq!((b.events, b.malformed), (9_990, 10));
        assert_eq!(a.samples, b.samples);
    }

    #[test]
    fn dropping_it_early_stops_the_reader() {
        let text = "{\"@timestamp\":\"2026-03-02T00:00:00.000Z\",\"service.name\":\"s\",\"cloud.provider\":\"aws\",\"http.request.method\":\"GET\",\"url.path\":\"/a\",\"http.response.status_code\":200,\"event.duration\":1000000}\n".repeat(100_000);
        let mut ahead = ReadAhead::spawn(LineSource::from_reader("t", Box::new(std::io::Cursor::new(text.into_bytes())))).unwrap();
        let mut batch = Vec::new();
        let more = ahead.next_batch(&mut batch, 4096).unwrap();
        assert!(more, "{} events, {:?}", batch.len(), ahead.report());
        assert_eq!(batch.len(), 4096);
        // Returns (joining a reader that was blocked on a full queue) instead of hanging.
        drop(ahead);
    }
}
