//! Reorders slightly late events: events are held until the watermark (the newest timestamp seen
//! minus the allowed lateness) passes them, then released in time order. An event older than what
//! was already released is "late": it is still used (never dropped), counted, and treated as
//! belonging to the current window.

use std::collections::BTreeMap;

use crate::model::time::Millis;
use crate::model::Event;

/// Orders events with the same timestamp by their content, not by when they arrived, so the same
/// events give the same results in any arrival order: a journey's entry call (no parent) first,
/// then by span id.
fn tie_break(e: &Event) -> u64 {
    let child = u64::from(e.parent_id.is_some()) << 63;
    let key = e.span_id.as_deref().unwrap_or(&e.path);
    child | (crate::model::hash_str(key) >> 1)
}

/// Held events: (timestamp, tie-break, arrival) → slot.
type HeldQueue = BTreeMap<(Millis, u64, u64), u32>;

#[derive(serde::Serialize, serde::Deserialize)]
pub struct ReorderBuffer {
    lateness: Millis,
    /// Held events by (timestamp, tie-break, arrival), to their slot: O(log n) whatever the
    /// disorder (a sorted list cost a scan and a shift per event, 14x slower on streams
    /// interleaved over seconds). Saved as the sorted list of (timestamp, tie-break, slot), the
    /// format of earlier versions.
    #[serde(with = "queue_as_list")]
    queue: HeldQueue,
    /// Arrival counter: equal (timestamp, tie-break) pairs leave in arrival order.
    #[serde(skip)]
    arrivals: u64,
    #[serde(with = "held_events")]
    slots: Vec<Option<Event>>,
    free: Vec<u32>,
    max_seen: Millis,
    released: Millis,
    pub late: u64,
}

impl ReorderBuffer {
    pub fn new(lateness: Millis) -> Self {
        ReorderBuffer {
            lateness,
            queue: BTreeMap::new(),
            arrivals: 0,
            slots: Vec::new(),
            free: Vec::new(),
            max_seen: Millis::MIN,
            released: Millis::MIN,
            late: 0,
        }
    }

    /// Adds an event; calls `emit` for every event now ready, in time order.
    pub fn push(&mut self, mut ev: Event, mut emit: impl FnMut(Event)) {
        if ev.timestamp < self.released {
            // Too late to reorder: use it now, in the current window.
            self.late += 1;
            ev.timestamp = self.released;
            emit(ev);
            return;
        }
        self.max_seen = self.max_seen.max(ev.timestamp);
        let slot = match self.free.pop() {
            Some(i) => {
                self.slots[i as usize] = Some(ev);
                i
            }
            None => {
                self.slots.push(Some(ev));
                (self.slots.len() - 1) as u32
            }
        };
        let (t, tie) = self.slots[slot as usize].as_ref().map_or((0, 0), |e| (e.timestamp, tie_break(e)));
        // Restored queues are numbered from 0 in order; new arrivals come after them.
        self.arrivals = self.arrivals.max(self.queue.len() as u64) + 1;
        self.queue.insert((t, tie, self.arrivals), slot);
        let watermark = self.max_seen.saturating_sub(self.lateness);
        self.release_until(watermark, &mut emit);
    }

    /// Releases everything still held.
    pub fn flush(&mut self, mut emit: impl FnMut(Event)) {
        self.release_until(Millis::MAX, &mut emit);
    }

    /// Releases every held event older than `t` and marks time before `t` as passed: the caller
    /// knows no more events before `t` will come (a polled range is complete), so a later one
    /// is late.
    pub fn release_before(&mut self, t: Millis, mut emit: impl FnMut(Event)) {
        self.release_until(t - 1, &mut emit);
        self.released = self.released.max(t - 1);
        self.max_seen = self.max_seen.max(t - 1);
    }

    fn release_until(&mut self, watermark: Millis, emit: &mut impl FnMut(Event)) {
        while let Some(entry) = self.queue.first_entry() {
            let t = entry.key().0;
            if t > watermark {
                break;
            }
            let slot = entry.remove();
            if let Some(ev) = self.slots[slot as usize].take() {
                self.free.push(slot);
                self.released = self.released.max(t);
                emit(ev);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn held_callers_records_survive_a_checkpoint_and_older_states_still_load() {
        let mut r = ReorderBuffer::new(10_000);
        let mut exit = ev(5_000);
        exit.client = Some(Box::new(crate::model::event::ClientSide {
            target: Some("payments".into()),
            transaction_id: Some("gw1".into()),
        }));
        r.push(exit.clone(), |_| ());
        r.push(ev(6_000), |_| ());
        let raw = rmp_serde::to_vec_named(&r).unwrap();
        let mut back: ReorderBuffer = rmp_serde::from_slice(&raw).unwrap();
        let mut out = Vec::new();
        back.flush(|e| out.push(e));
        assert_eq!(out, vec![exit, ev(6_000)]);

        // A state written before callers' records were read: events as four-element lists.
        #[derive(serde::Serialize)]
        struct Before {
            lateness: Millis,
            queue: Vec<(Millis, u64, u32)>,
            #[allow(clippy::type_complexity)]
            slots: Vec<Option<(i64, [String; 4], [Option<String>; 9], (u16, Option<u64>, Option<u64>, Option<u64>))>>,
            free: Vec<u32>,
            max_seen: Millis,
            released: Millis,
            late: u64,
        }
        let fields = (
            7_000,
            ["api".into(), "aws".into(), "GET".into(), "/x".into()],
            Default::default(),
            (200, Some(1), None, None),
        );
        let before = Before {
            lateness: 10_000,
            queue: vec![(7_000, 0, 0)],
            slots: vec![Some(fields)],
            free: vec![],
            max_seen: 7_000,
            released: Millis::MIN,
            late: 0,
        };
        let mut old: ReorderBuffer = rmp_serde::from_slice(&rmp_serde::to_vec_named(&before).unwrap()).unwrap();
        let mut out = Vec::new();
        old.flush(|e| out.push(e));
        assert_eq!(out.len(), 1);
        assert_eq!(
            (out[0].service.as_str(), out[0].path.as_str(), out[0].client.is_none()),
            ("api", "/x", true)
        );
    }

    fn ev(t: Millis) -> Event {
        Event {
            timestamp: t,
            ..Default::default()
        }
    }

    #[test]
    fn out_of_order_within_lateness_comes_out_sorted() {
        let mut r = ReorderBuffer::new(100);
        let mut out = Vec::new();
        for t in [10, 5, 50, 20, 130, 40, 300] {
            r.push(ev(t), |e| out.push(e.timestamp));
        }
        r.flush(|e| out.push(e.timestamp));
        assert_eq!(out, vec![5, 10, 20, 40, 50, 130, 300]);
        assert_eq!(r.late, 0);
    }

    #[test]
    fn a_saved_buffer_releases_what_it_held_in_the_same_order_as_the_original() {
        // Equal times and tie-breaks (no span ids, one path) leave in arrival order, before
        // and after a save.
        let input: Vec<Event> = (0..200)
            .map(|i| Event {
                timestamp: (i * 7919) % 50,
                status: i as u16,
                ..Default::default()
            })
            .collect();
        let run = |restore_at: Option<usize>| {
            let mut r = ReorderBuffer::new(100);
            let mut out = Vec::new();
            for (i, e) in input.iter().enumerate() {
                if restore_at == Some(i) {
                    let bytes = rmp_serde::to_vec_named(&r).unwrap();
                    r = rmp_serde::from_slice(&bytes).unwrap();
                }
                r.push(e.clone(), |e| out.push((e.timestamp, e.status)));
            }
            r.flush(|e| out.push((e.timestamp, e.status)));
            out
        };
        let original = run(None);
        assert!(original.windows(2).all(|w| w[0].0 <= w[1].0));
        assert_eq!(run(Some(120)), original);
    }

    #[test]
    fn equal_timestamps_come_out_in_the_same_order_whatever_the_arrival() {
        let mk = |span: &str, parent: Option<&str>| Event {
            timestamp: 7,
            span_id: Some(span.into()),
            parent_id: parent.map(Into::into),
            ..Default::default()
        };
        let events = [mk("a", None), mk("b", Some("a")), mk("c", Some("a")), mk("d", Some("b"))];
        let order = |input: Vec<Event>| {
            let mut r = ReorderBuffer::new(100);
            let mut out = Vec::new();
            for e in input {
                r.push(e, |e| out.push(e.span_id.clone().unwrap()));
            }
            r.flush(|e| out.push(e.span_id.clone().unwrap()));
            out
        };
        let forward = order(events.to_vec());
        let mut rev = events.to_vec();
        rev.reverse();
        assert_eq!(forward, order(rev));
        assert_eq!(forward[0], "a", "the entry call first");
    }

    #[test]
    fn too_late_events_are_kept_and_counted() {
        let mut r = ReorderBuffer::new(10);
        let mut out = Vec::new();
        for t in [100, 200, 50] {
            r.push(ev(t), |e| out.push(e.timestamp));
        }
        r.flush(|e| out.push(e.timestamp));
        assert_eq!(out.len(), 3, "nothing is dropped");
        assert_eq!(r.late, 1);
        assert!(out.windows(2).all(|w| w[0] <= w[1]));
    }
}

/// Held events in a checkpoint: every field, as plain values (the ECS form of [`Event`] is for
/// documents, not for state).
/// The queue saved as a sorted list of (timestamp, tie-break, slot) and restored with arrival
/// numbers in that order.
mod queue_as_list {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use super::HeldQueue;
    use crate::model::time::Millis;

    pub fn serialize<S: Serializer>(q: &HeldQueue, s: S) -> Result<S::Ok, S::Error> {
        let list: Vec<(Millis, u64, u32)> = q.iter().map(|(&(t, tie, _), &slot)| (t, tie, slot)).collect();
        list.serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<HeldQueue, D::Error> {
        let list: Vec<(Millis, u64, u32)> = Vec::deserialize(d)?;
        Ok(list
            .into_iter()
            .enumerate()
            .map(|(i, (t, tie, slot))| ((t, tie, i as u64), slot))
            .collect())
    }
}

mod held_events {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use crate::model::event::{ClientSide, Text};
    use crate::model::Event;

    type Fields = (i64, [Text; 4], [Option<Text>; 9], (u16, Option<u64>, Option<u64>, Option<u64>));
    /// A caller's record adds whom it called and from which call (`ClientSide`).
    type Client = Option<(Option<Text>, Option<Text>)>;

    /// States saved before callers' records were read hold four-element events.
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Saved {
        WithSide(Fields, Client),
        Plain(Fields),
    }

    fn to_fields(e: &Event) -> (Fields, Client) {
        let client = e.client.as_ref().map(|c| (c.target.clone(), c.transaction_id.clone()));
        let fields = (
            e.timestamp,
            [e.service.clone(), e.provider.clone(), e.method.clone(), e.path.clone()],
            [
                e.region.clone(),
                e.host.clone(),
                e.outcome.clone(),
                e.trace_id.clone(),
                e.span_id.clone(),
                e.parent_id.clone(),
                e.user_id.clone(),
                e.client_ip.clone(),
                e.user_agent.clone(),
            ],
            (e.status, e.duration_ns, e.request_bytes, e.response_bytes),
        );
        (fields, client)
    }

    fn from_fields(saved: Saved) -> Event {
        let (fields, client) = match saved {
            Saved::WithSide(f, c) => (f, c),
            Saved::Plain(f) => (f, None),
        };
        let (timestamp, [service, provider, method, path], opt, (status, duration_ns, request_bytes, response_bytes)) = fields;
        let client = client.map(|(target, transaction_id)| Box::new(ClientSide { target, transaction_id }));
        let [region, host, outcome, trace_id, span_id, parent_id, user_id, client_ip, user_agent] = opt;
        Event {
            timestamp,
            service,
            provider,
            region,
            host,
            method,
            path,
            status,
            duration_ns,
            outcome,
            trace_id,
            span_id,
            parent_id,
            user_id,
            client_ip,
            user_agent,
            request_bytes,
            response_bytes,
            client,
        }
    }

    pub fn serialize<S: Serializer>(slots: &[Option<Event>], s: S) -> Result<S::Ok, S::Error> {
        let v: Vec<Option<(Fields, Client)>> = slots.iter().map(|e| e.as_ref().map(to_fields)).collect();
        v.serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Option<Event>>, D::Error> {
        let v: Vec<Option<Saved>> = Vec::deserialize(d)?;
        Ok(v.into_iter().map(|f| f.map(from_fields)).collect())
    }
}
