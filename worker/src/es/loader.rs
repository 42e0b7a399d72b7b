//! `apiwatch simulate --es URL`: bulk-loads simulated API-call events into the log data stream
//! (`create` operations with ids derived from the span, so loading twice adds nothing), with a
//! sender thread so generation and network overlap.

use std::sync::mpsc;

use serde_json::json;

use super::client::{is_retryable_status, EsClient};
use crate::model::Event;
use crate::simulate::{SimConfig, Simulator};

/// Events per bulk request.
const BATCH: usize = 5000;
/// Bulk requests in flight.
const SENDERS: usize = 2;

#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct LoadStats {
    pub events: u64,
    pub created: u64,
    pub already_there: u64,
    pub refused: u64,
    pub refused_samples: Vec<String>,
    pub seconds: f64,
}

fn doc_id(e: &Event, n: u64) -> String {
    match (&e.trace_id, &e.span_id) {
        (Some(t), Some(s)) => format!("{t}-{s}"),
        _ => format!("{}-{n}", e.timestamp),
    }
}

/// Loads one simulation into `index` (a data stream name such as `logs-apiwatch.calls-default`).
pub fn load(
    client: &EsClient,
    index: &str,
    sim: SimConfig,
    progress: impl FnMut(u64),
) -> anyhow::Result<(LoadStats, crate::simulate::incidents::Labels)> {
    load_paced(client, index, sim, false, progress)
}

/// Like [`load`]; with `paced`, each event is sent no earlier than its own timestamp (a
/// simulation starting now becomes live traffic, for measuring a running worker).
pub fn load_paced(
    client: &EsClient,
    index: &str,
    sim: SimConfig,
    paced: bool,
    mut progress: impl FnMut(u64),
) -> anyhow::Result<(LoadStats, crate::simulate::incidents::Labels)> {
    let started = std::time::Instant::now();
    // Two senders: one bulk request is in flight while the next is being indexed.
    let (tx, rx) = mpsc::sync_channel::<Vec<u8>>(4);
    let rx = std::sync::Arc::new(std::sync::Mutex::new(rx));
    let senders: Vec<_> = (0..SENDERS)
        .map(|_| {
            let client = client.clone();
            let rx = rx.clone();
            std::thread::spawn(move || -> anyhow::Result<LoadStats> {
                let mut stats = LoadStats::default();
                loop {
                    let next = rx.lock().map_err(|_| anyhow::anyhow!("a bulk sender panicked"))?.recv();
                    let Ok(body) = next else { break };
                    send(&client, body, &mut stats)?;
                }
                Ok(stats)
            })
        })
        .collect();
    let mut sim = Simulator::new(sim)?;
    let mut body = Vec::with_capacity(BATCH * 600);
    let mut in_batch = 0;
    let mut n = 0u64;
    let mut ingested = crate::model::time::format_rfc3339(chrono::Utc::now().timestamp_millis());
    // Paced loads send small batches often, as shippers do.
    let batch = if paced { 2000 } else { BATCH };
    let result = sim.run(
        |e| {
            if paced && in_batch == 0 {
                let wait = e.timestamp - chrono::Utc::now().timestamp_millis();
                if wait > 0 {
                    std::thread::sleep(std::time::Duration::from_millis(wait as u64));
                }
                ingested = crate::model::time::format_rfc3339(chrono::Utc::now().timestamp_millis());
            }
            n += 1;
            let action = json!({"create": {"_index": index, "_id": doc_id(e, n)}});
            body.extend_from_slice(action.to_string().as_bytes());
            body.push(b'\n');
            let mut doc = serde_json::to_value(e)?;
            doc["event.ingested"] = json!(ingested);
            body.extend_from_slice(doc.to_string().as_bytes());
            body.push(b'\n');
            in_batch += 1;
            if in_batch == batch {
                in_batch = 0;
                progress(n);
                tx.send(std::mem::replace(&mut body, Vec::with_capacity(BATCH * 600)))
                    .map_err(|_| anyhow::anyhow!("the bulk sender stopped"))?;
            }
            Ok(())
        },
        |_| {},
    );
    if in_batch > 0 {
        let _ = tx.send(body);
    }
    drop(tx);
    let mut stats = LoadStats::default();
    for h in senders {
        let s = h.join().map_err(|_| anyhow::anyhow!("a bulk sender panicked"))??;
        stats.created += s.created;
        stats.already_there += s.already_there;
        stats.refused += s.refused;
        stats.refused_samples.extend(s.refused_samples);
    }
    result?;
    stats.events = n;
    stats.seconds = started.elapsed().as_secs_f64();
    let labels = sim.labels(n);
    client.json("POST", &format!("/{index}/_refresh"), None)?;
    Ok((stats, labels))
}

fn send(client: &EsClient, body: Vec<u8>, stats: &mut LoadStats) -> anyhow::Result<()> {
    let mut body = body;
    for round in 1..=8 {
        let items = client.bulk(&body)?;
        let lines: Vec<&[u8]> = body.split(|b| *b == b'\n').filter(|l| !l.is_empty()).collect();
        let mut retry = Vec::new();
        for (i, item) in items.iter().enumerate() {
            match item.status {
                200..=299 => stats.created += 1,
                409 => stats.already_there += 1,
                s if is_retryable_status(s) => {
                    retry.extend_from_slice(lines[2 * i]);
                    retry.push(b'\n');
                    retry.extend_from_slice(lines[2 * i + 1]);
                    retry.push(b'\n');
                }
                _ => {
                    stats.refused += 1;
                    if stats.refused_samples.len() < 10 {
                        stats.refused_samples.push(format!(
                            "{}/_doc/{}: {}",
                            item.index,
                            item.id,
                            item.error.clone().unwrap_or_default()
                        ));
                    }
                }
            }
        }
        if retry.is_empty() {
            return Ok(());
        }
        std::thread::sleep(client.options().retry.delay(round));
        body = retry;
    }
    anyhow::bail!("Elasticsearch stayed busy: bulk items still refused after 8 rounds")
}
