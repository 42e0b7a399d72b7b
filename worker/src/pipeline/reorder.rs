//! Reorders slightly late events: events are held until the watermark (the newest timestamp seen
//! minus the allowed lateness) passes them, then released in time order. An event older than what
//! was already released is "late": it is still used (never dropped), counted, and treated as
//! belonging to the current window.

use std::collections::VecDeque;

use crate::model::time::Millis;
use crate::model::Event;

pub struct ReorderBuffer {
    lateness: Millis,
    /// Held events' (timestamp, slot), sorted by timestamp, ties in arrival order. Input is
    /// nearly sorted, so inserting from the back costs next to nothing.
    queue: VecDeque<(Millis, u32)>,
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
            queue: VecDeque::new(),
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
        let t = self.slots[slot as usize].as_ref().map_or(0, |e| e.timestamp);
        let mut at = self.queue.len();
        while at > 0 && self.queue[at - 1].0 > t {
            at -= 1;
        }
        self.queue.insert(at, (t, slot));
        let watermark = self.max_seen.saturating_sub(self.lateness);
        self.release_until(watermark, &mut emit);
    }

    /// Releases everything still held.
    pub fn flush(&mut self, mut emit: impl FnMut(Event)) {
        self.release_until(Millis::MAX, &mut emit);
    }

    pub fn held(&self) -> usize {
        self.queue.len()
    }

    fn release_until(&mut self, watermark: Millis, emit: &mut impl FnMut(Event)) {
        while let Some(&(t, slot)) = self.queue.front() {
            if t > watermark {
                break;
            }
            self.queue.pop_front();
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
