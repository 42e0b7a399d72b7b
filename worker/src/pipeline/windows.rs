//! Window aggregation: per entity, call counts, 4xx/5xx counts, a DDSketch of latencies (for
//! p50/p95/p99), payload sizes and distinct users. Memory is one accumulator per entity, reset
//! at each window close: it depends on the number of entities, not on the number of events.
//! Entities idle for long are evicted ([`WindowAggregator::evict_idle`]); their ids go to new
//! entities, so every detector is told to forget them first.

use rustc_hash::{FxHashMap, FxHashSet};
use sketches_ddsketch::{Config, DDSketch};

use crate::model::time::Millis;
use crate::model::window::{tail_quantile, CallLatencies};
use crate::model::{EntityKey, Event, WindowStat};

/// Windows an entity stays reported (with zero calls) after its last call.
const KEEP_IDLE_WINDOWS: i64 = 60;
const EXAMPLE_TRACES: usize = 3;

#[derive(serde::Serialize, serde::Deserialize)]
struct Acc {
    count: u64,
    e4: u64,
    e5: u64,
    sketch: DDSketch,
    req_sum: f64,
    req_n: u64,
    resp_sum: f64,
    resp_n: u64,
    users: FxHashSet<u64>,
    traces: Vec<String>,
    last_active: Millis,
}

impl Acc {
    fn new() -> Self {
        Acc {
            count: 0,
            e4: 0,
            e5: 0,
            sketch: DDSketch::new(Config::defaults()),
            req_sum: 0.0,
            req_n: 0,
            resp_sum: 0.0,
            resp_n: 0,
            users: FxHashSet::default(),
            traces: Vec::new(),
            last_active: Millis::MIN,
        }
    }
}

/// Per-entity accumulators for the current window.
#[derive(serde::Serialize, serde::Deserialize, Default)]
pub struct WindowAggregator {
    keys: Vec<EntityKey>,
    pub(super) index: FxHashMap<EntityKey, u32>,
    accs: Vec<Acc>,
    /// Ids of evicted entities, handed to new entities first.
    #[serde(default)]
    free: Vec<u32>,
}

impl WindowAggregator {
    /// The id of an entity, registering it on first sight.
    pub fn entity(&mut self, key: EntityKey) -> (u32, bool) {
        if let Some(&id) = self.index.get(&key) {
            return (id, false);
        }
        let id = match self.free.pop() {
            Some(id) => {
                self.keys[id as usize] = key;
                id
            }
            None => {
                self.keys.push(key);
                self.accs.push(Acc::new());
                self.keys.len() as u32 - 1
            }
        };
        self.index.insert(key, id);
        (id, true)
    }

    /// Entities followed now (evicted ones not counted).
    pub fn len(&self) -> usize {
        self.index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// Evicts every entity whose last call was in a window that started before `before` and
    /// that has no call in the current window: its accumulator is reset and its id freed.
    /// The evicted ids and keys are appended to `out`.
    pub fn evict_idle(&mut self, before: Millis, out: &mut Vec<(u32, EntityKey)>) {
        for (id, a) in self.accs.iter_mut().enumerate() {
            // A fresh accumulator (never closed with calls) is either free or brand new.
            if a.count > 0 || a.last_active == Millis::MIN || a.last_active >= before {
                continue;
            }
            let key = self.keys[id];
            self.index.remove(&key);
            *a = Acc::new();
            self.free.push(id as u32);
            out.push((id as u32, key));
        }
    }

    /// Adds a call to an entity's current window.
    pub fn add(&mut self, id: u32, ev: &Event, user: Option<u64>, track_users: bool) {
        let a = &mut self.accs[id as usize];
        a.count += 1;
        if ev.is_5xx() {
            a.e5 += 1;
        } else if ev.is_4xx() {
            a.e4 += 1;
        }
        if let Some(ms) = ev.duration_ms() {
            a.sketch.add(ms.max(1e-6));
        }
        if let Some(b) = ev.request_bytes {
            a.req_sum += b as f64;
            a.req_n += 1;
        }
        if let Some(b) = ev.response_bytes {
            a.resp_sum += b as f64;
            a.resp_n += 1;
        }
        if track_users {
            if let Some(u) = user {
                a.users.insert(u);
            }
        }
        if a.traces.len() < EXAMPLE_TRACES {
            if let Some(t) = &ev.trace_id {
                a.traces.push(t.to_string());
            }
        }
    }

    /// Closes the window `[start, end)`: writes the stats of every recently active entity to `out`
    /// and resets the accumulators.
    pub fn close(&mut self, start: Millis, end: Millis, out: &mut Vec<WindowStat>) {
        let width = end - start;
        for (id, a) in self.accs.iter_mut().enumerate() {
            if a.count > 0 {
                a.last_active = start;
            } else if a.last_active == Millis::MIN || start - a.last_active > KEEP_IDLE_WINDOWS * width {
                continue;
            }
            let q = |q: f64| a.sketch.quantile(q).ok().flatten().unwrap_or(0.0);
            out.push(WindowStat {
                entity: id as u32,
                key: self.keys[id],
                start,
                end,
                count: a.count,
                errors_4xx: a.e4,
                errors_5xx: a.e5,
                p50_ms: q(0.5),
                p95_ms: q(0.95),
                p99_ms: q(0.99),
                tail_ms: q(tail_quantile(a.count)),
                latencies: if a.count > 0 {
                    CallLatencies::new(std::mem::replace(&mut a.sketch, DDSketch::new(Config::defaults())))
                } else {
                    CallLatencies::default()
                },
                mean_request_bytes: if a.req_n > 0 { a.req_sum / a.req_n as f64 } else { 0.0 },
                mean_response_bytes: if a.resp_n > 0 { a.resp_sum / a.resp_n as f64 } else { 0.0 },
                users: a.users.len() as u64,
                example_traces: std::mem::take(&mut a.traces),
            });
            if a.count > 0 {
                a.count = 0;
                a.e4 = 0;
                a.e5 = 0;
                a.req_sum = 0.0;
                a.req_n = 0;
                a.resp_sum = 0.0;
                a.resp_n = 0;
                a.users.clear();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Interner, Sym};

    #[test]
    fn quantiles_and_rates() {
        let mut names = Interner::default();
        let key = EntityKey::Service {
            service: names.intern("a"),
            provider: names.intern("aws"),
        };
        let mut w = WindowAggregator::default();
        let (id, new) = w.entity(key);
        assert!(new);
        for i in 1..=1000u64 {
            let ev = Event {
                duration_ns: Some(i * 1_000_000),
                status: if i % 10 == 0 { 503 } else { 200 },
                ..Default::default()
            };
            w.add(id, &ev, Some(i % 7), true);
        }
        let mut out = Vec::new();
        w.close(0, 60_000, &mut out);
        let s = &out[0];
        assert_eq!((s.count, s.errors_5xx, s.users), (1000, 100, 7));
        assert!((s.p95_ms - 950.0).abs() / 950.0 < 0.02, "p95 {}", s.p95_ms);
        assert!((s.p50_ms - 500.0).abs() / 500.0 < 0.02);
        // Next window: empty but still reported, for traffic-drop detection.
        out.clear();
        w.close(60_000, 120_000, &mut out);
        assert_eq!(out[0].count, 0);
        let _ = Sym(0);
    }

    #[test]
    fn idle_entities_are_evicted_and_their_ids_reused_by_new_ones() {
        let mut names = Interner::default();
        let mut key = |n: &str| EntityKey::Service {
            service: names.intern(n),
            provider: Sym(0),
        };
        let (a, b, c) = (key("a"), key("b"), key("c"));
        let mut w = WindowAggregator::default();
        let (ida, _) = w.entity(a);
        let (idb, _) = w.entity(b);
        let ev = Event::default();
        w.add(ida, &ev, None, false);
        w.add(idb, &ev, None, false);
        let mut out = Vec::new();
        w.close(0, 60_000, &mut out);
        // Only `a` is called again.
        for t in 1..10 {
            w.add(ida, &ev, None, false);
            w.close(t * 60_000, (t + 1) * 60_000, &mut out);
        }
        let mut evicted = Vec::new();
        w.evict_idle(5 * 60_000, &mut evicted);
        assert_eq!(evicted, vec![(idb, b)]);
        assert_eq!(w.len(), 1);
        // Evicting again finds nothing; the freed id goes to the next new entity, fresh.
        evicted.clear();
        w.evict_idle(5 * 60_000, &mut evicted);
        assert!(evicted.is_empty());
        assert_eq!(w.entity(c), (idb, true));
        assert_eq!(w.entity(a), (ida, false));
        out.clear();
        w.close(10 * 60_000, 11 * 60_000, &mut out);
        assert_eq!(out.len(), 1, "the new entity has had no call: not reported");
        assert_eq!(out[0].key, a);
    }
}
