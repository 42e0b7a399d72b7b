//! A contextual sequence memory for one numeric series: it learns which patterns follow which,
//! and scores a value by how little of it the memory foresaw.
//!
//! The method is the Contextual Anomaly Detector (M. Smirnov, "CAD OSE", second on the NAB
//! scoreboard), written afresh here. Each value is quantised to a few levels of its expected
//! range and spelt as *facts* (one per bit). The memory holds *contexts*: a left half (the facts
//! of the previous step plus the contexts that were active then, which carries longer history)
//! and a right half (facts that followed). Each step
//!
//! 1. checks which contexts whose left half matched last step also see their right half now
//!    (the share of them that do is how familiar this step is);
//! 2. stores what is new: the whole (previous step, this step) pair and the overlaps of partly
//!    matched contexts with it (the share of candidates that really were new is how novel it is);
//! 3. predicts the next facts from the most reliable contexts whose left half matches now.
//!
//! A step whose facts were all predicted scores 0; otherwise `(1 − familiar + novel) / 2`.
//! After a score of [`ContextMemory::ALERT_LEVEL`] or more, the memory stays quiet for its rest
//! period: one change, one alert.

use std::collections::VecDeque;

use rustc_hash::FxHashMap;

/// Offset of the facts that stand for active contexts (sensor facts are small numbers).
const CONTEXT_FACT: u32 = 1 << 31;

/// The halves of contexts seen from one side, indexed by fact for crossing.
#[derive(Default, serde::Serialize, serde::Deserialize)]
struct Side {
    ids: FxHashMap<Vec<u32>, u32>,
    halves: Vec<Half>,
    by_fact: FxHashMap<u32, Vec<u32>>,
    /// Halves that shared at least one fact with the last crossing.
    crossed: Vec<u32>,
}

#[derive(Default, serde::Serialize, serde::Deserialize)]
struct Half {
    len: usize,
    /// Facts of this half present in the last crossing (in the crossing's order).
    matched: Vec<u32>,
    /// Left halves only: right half → context.
    contexts: FxHashMap<u32, u32>,
}

impl Side {
    /// The id of the half with exactly `facts` (sorted), creating it when new.
    fn intern(&mut self, facts: &[u32]) -> u32 {
        if let Some(&id) = self.ids.get(facts) {
            return id;
        }
        let id = self.halves.len() as u32;
        self.halves.push(Half {
            len: facts.len(),
            ..Half::default()
        });
        for &f in facts {
            self.by_fact.entry(f).or_default().push(id);
        }
        self.ids.insert(facts.to_vec(), id);
        id
    }

    /// Records which facts of `facts` (sorted) each half holds.
    fn cross(&mut self, facts: &[u32]) {
        for &h in &self.crossed {
            self.halves[h as usize].matched.clear();
        }
        self.crossed.clear();
        for &f in facts {
            if let Some(hs) = self.by_fact.get(&f) {
                for &h in hs {
                    let half = &mut self.halves[h as usize];
                    if half.matched.is_empty() {
                        self.crossed.push(h);
                    }
                    half.matched.push(f);
                }
            }
        }
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Context {
    /// Facts the context predicted, summed over the steps its left half matched.
    predicted: f64,
    /// Of those, facts that came.
    came: f64,
    /// Steps on which its whole right half came.
    complete: u32,
    right_facts: Vec<u32>,
    /// Stored whole from one (previous step, this step) pair, not as an overlap.
    whole_pair: bool,
}

/// The sequence memory of one series.
#[derive(serde::Serialize, serde::Deserialize)]
pub struct ContextMemory {
    low: f64,
    step: f64,
    bits: u32,
    max_left: usize,
    max_active: usize,
    rest: usize,
    left: Side,
    right: Side,
    contexts: Vec<Context>,
    /// Facts of the previous step: its levels and its active contexts.
    previous: Vec<u32>,
    predicted: Vec<u32>,
    /// The context stored this step, which must not be judged on the step that made it.
    just_stored: Option<u32>,
    recent: VecDeque<f64>,
}

impl ContextMemory {
    /// A score at or above this starts the rest period.
    pub const ALERT_LEVEL: f64 = 0.75;

    /// A memory for values expected within `[low, high]` (values outside count as the nearest
    /// end), quiet for `rest` steps after an alert-level score.
    pub fn new(low: f64, high: f64, rest: usize) -> Self {
        let bits = 3;
        let levels = f64::from((1u32 << bits) - 1);
        let range = if high > low { high - low } else { levels };
        ContextMemory {
            low,
            step: range / levels,
            bits,
            max_left: 7,
            max_active: 15,
            rest: rest.max(1),
            left: Side::default(),
            right: Side::default(),
            contexts: Vec::new(),
            previous: Vec::new(),
            predicted: Vec::new(),
            just_stored: None,
            // Quiet from the start, as after an alert: the first steps are all news.
            recent: VecDeque::from([1.0]),
        }
    }

    /// Scores the next value: 0 (foreseen, or resting) to 1 (nothing like it was seen).
    pub fn score(&mut self, value: f64) -> f64 {
        let max_level = (1u32 << self.bits) - 1;
        let level = if value.is_finite() {
            ((value - self.low) / self.step).floor().clamp(0.0, f64::from(max_level)) as u32
        } else {
            max_level
        };
        let facts: Vec<u32> = (0..self.bits).map(|b| b * 2 + ((level >> b) & 1)).collect();
        // How much of the value was not predicted, weighting high bits more.
        let missed: u32 = facts.iter().filter(|f| !self.predicted.contains(f)).map(|f| 1u32 << (f / 2)).sum();
        let (familiar, novel) = self.step(&facts);
        let raw = if missed > 0 { (1.0 - familiar + novel) / 2.0 } else { 0.0 };
        let resting = self.recent.iter().any(|&s| s >= Self::ALERT_LEVEL);
        if self.recent.len() == self.rest {
            self.recent.pop_front();
        }
        self.recent.push_back(raw);
        if resting {
            0.0
        } else {
            raw
        }
    }

    /// Stores a context unless known; returns its id and whether it was new.
    fn store(&mut self, left: &[u32], right: &[u32], whole_pair: bool) -> (u32, bool) {
        let l = self.left.intern(left);
        let r = self.right.intern(right);
        let next = self.contexts.len() as u32;
        let id = *self.left.halves[l as usize].contexts.entry(r).or_insert(next);
        if id == next {
            self.contexts.push(Context {
                predicted: 0.0,
                came: 0.0,
                complete: 0,
                right_facts: right.to_vec(),
                whole_pair,
            });
            (id, true)
        } else {
            if whole_pair {
                self.contexts[id as usize].whole_pair = true;
            }
            (id, false)
        }
    }

    /// One step on the sensor facts (sorted): (share of expected contexts that came, share of
    /// candidate contexts that were new).
    fn step(&mut self, facts: &[u32]) -> (f64, f64) {
        // Overlaps of partly matched contexts with this step: candidates for new contexts.
        let mut overlaps: Vec<(Vec<u32>, Vec<u32>)> = Vec::new();
        let mut pair_is_new = false;
        if !self.previous.is_empty() {
            let previous = std::mem::take(&mut self.previous);
            let (id, new) = self.store(&previous, facts, true);
            self.previous = previous;
            pair_is_new = new;
            self.just_stored = new.then_some(id);
        }

        // 1. Judge the contexts whose left half matched last step.
        self.right.cross(facts);
        let mut expected = 0usize;
        let mut active: Vec<(u32, u32, u32, u32)> = Vec::new();
        for &l in &self.left.crossed {
            let left = &self.left.halves[l as usize];
            let whole_left = left.matched.len() == left.len;
            for (&r, &c) in &left.contexts {
                if self.just_stored == Some(c) {
                    continue;
                }
                let right = &self.right.halves[r as usize];
                let came = right.matched.len();
                let context = &mut self.contexts[c as usize];
                let overlap_is_candidate = context.whole_pair && pair_is_new && left.matched.len() <= self.max_left;
                if whole_left {
                    expected += 1;
                    context.predicted += right.len as f64;
                    if came > 0 {
                        context.came += came as f64;
                        if came == right.len {
                            context.complete += 1;
                            active.push((context.complete, l, r, c));
                        } else if overlap_is_candidate {
                            overlaps.push((left.matched.clone(), right.matched.clone()));
                        }
                    }
                } else if came > 0 && overlap_is_candidate {
                    overlaps.push((left.matched.clone(), right.matched.clone()));
                }
            }
        }
        self.just_stored = None;
        let familiar = if expected > 0 { active.len() as f64 / expected as f64 } else { 0.0 };

        // 2. The next left half: these facts and the most proven active contexts.
        active.sort_unstable();
        let mut next: Vec<u32> = facts.to_vec();
        next.extend(active.iter().rev().take(self.max_active).map(|a| CONTEXT_FACT + a.3));
        next.sort_unstable();
        next.dedup();

        // 3. Store the new overlaps; count how many candidates really were new.
        overlaps.sort_unstable();
        overlaps.dedup();
        let pair_counted = !self.previous.is_empty() && !overlaps.iter().any(|(l, r)| *l == self.previous && r.as_slice() == facts);
        let candidates = overlaps.len() + usize::from(pair_counted);
        let mut stored_new = usize::from(pair_is_new);
        for (l, r) in &overlaps {
            if self.store(l, r, false).1 {
                stored_new += 1;
            }
        }
        let novel = if pair_is_new && candidates > 0 {
            stored_new as f64 / candidates as f64
        } else {
            0.0
        };

        // 4. Predict from the most reliable contexts whose left half matches now.
        self.left.cross(&next);
        let mut best = 0.0;
        let mut predicted: Vec<u32> = Vec::new();
        for &l in &self.left.crossed {
            let left = &self.left.halves[l as usize];
            if left.matched.len() != left.len {
                continue;
            }
            for &c in left.contexts.values() {
                let context = &self.contexts[c as usize];
                let weight = if context.predicted > 0.0 {
                    context.came / context.predicted
                } else {
                    0.0
                };
                if weight > best {
                    best = weight;
                    predicted.clear();
                }
                if weight >= best {
                    predicted.extend_from_slice(&context.right_facts);
                }
            }
        }
        predicted.sort_unstable();
        predicted.dedup();
        self.predicted = predicted;
        self.previous = next;
        (familiar, novel)
    }
}

impl ContextMemory {
    /// Contexts stored so far (the memory's size).
    pub fn len(&self) -> usize {
        self.contexts.len()
    }
    pub fn is_empty(&self) -> bool {
        self.contexts.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sawtooth over the eight levels of [0, 7], period 8.
    fn saw(i: usize) -> f64 {
        (i % 8) as f64
    }

    #[test]
    fn a_learnt_pattern_scores_nothing_and_a_new_one_alerts_once() {
        let mut m = ContextMemory::new(0.0, 7.0, 50);
        let learnt: Vec<f64> = (0..3000).map(|i| m.score(saw(i))).collect();
        assert!(learnt[..8].iter().all(|&s| s == 0.0), "quiet while resting at the start");
        assert!(learnt[2000..].iter().all(|&s| s == 0.0), "every step of a known cycle is foreseen");
        // The cycle runs backwards: every transition is new.
        let changed: Vec<f64> = (0..200).map(|i| m.score(7.0 - saw(i))).collect();
        let first = changed
            .iter()
            .position(|&s| s >= ContextMemory::ALERT_LEVEL)
            .expect("the change alerts");
        assert!(first < 4, "alerts within a few steps, not at {first}");
        assert!(changed[first + 1..first + 50].iter().all(|&s| s == 0.0), "then rests");
        assert!(changed.iter().filter(|&&s| s >= ContextMemory::ALERT_LEVEL).count() <= 2);
    }

    #[test]
    fn the_memory_is_deterministic_and_survives_a_checkpoint() {
        let values: Vec<f64> = (0..1500).map(|i| ((i * 7919) % 97) as f64 * 0.1 + (i / 500) as f64).collect();
        let mut a = ContextMemory::new(0.0, 12.0, 30);
        let mut b = ContextMemory::new(0.0, 12.0, 30);
        for &v in &values[..1000] {
            assert_eq!(a.score(v), b.score(v));
        }
        let bytes = rmp_serde::to_vec_named(&a).unwrap();
        let mut restored: ContextMemory = rmp_serde::from_slice(&bytes).unwrap();
        assert!(!restored.is_empty());
        for &v in &values[1000..] {
            assert_eq!(a.score(v), restored.score(v));
        }
    }

    #[test]
    fn values_outside_the_range_or_not_numbers_are_scored_not_fatal() {
        let mut m = ContextMemory::new(10.0, 10.0, 5);
        for v in [f64::NAN, -1e300, 1e300, f64::INFINITY, 10.0, 10.0] {
            let s = m.score(v);
            assert!((0.0..=1.0).contains(&s));
        }
    }
}
