//! What an entity does by itself, again and again: short episodes of the same finding that came
//! and went on their own. A service whose latency jumps 15x for a minute every half hour (a
//! batch, a cache refresh, a garbage collector) is chronically noisy, not broken each time; an
//! operator paged for the tenth such minute learns to ignore the tool. The alert manager holds
//! back a finding that is one more of those, says so in its reason, marks it
//! `held_by: recurring` and counts it, so nothing is dropped unseen; one beyond them is news.
//!
//! An *episode* is a run of consecutive windows with a finding of one key (detector, metric and
//! entity), ended by a window without one. Episodes of at most [`EPISODE_WINDOWS`] windows are
//! remembered for a day. A finding is one more of them when
//! - the episodes went as far, in score and in deviation from usual (a score saturates at 95;
//!   the measure does not), so it is within what the entity did by itself (worse is news at
//!   once), and at least [`MIN_EPISODES`] episodes ended in the last day, enough for the
//!   furthest of them to bound the next one with 90% predictive confidence (a pattern, not a
//!   coincidence: a second or third fault in a row on one service is news),
//! - its run has not lasted longer than those episodes make plausible: the chance that one of
//!   them lasts as long, from their lengths and their number
//!   ([`crate::detect::sequential`]'s predictive tail, as for a service's learned pauses), is at
//!   least [`LEVEL`], and the run is no longer than [`EPISODE_WINDOWS`].
//!
//! Findings that sum past windows are never held: a forecast is about what comes, not what
//! recurs, and a sequential test's run is one accumulating piece of evidence whose crossings
//! and dips are not episodes (learned pauses judge its traffic drops); nor are findings
//! another rule already held. State: a few numbers per key that had a finding in the last day.

use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};

use crate::model::anomaly::Anomaly;
use crate::model::time::{Millis, DAY_MS};

/// What marks a finding held back as one more episode its entity is known for.
pub const RECURRING: &str = "recurring";
/// The longest run remembered as an episode, in windows: the longest a service's pause can be
/// (about the time an alert takes to resolve: anything longer is not something that comes and goes).
pub const EPISODE_WINDOWS: u32 = crate::detect::sequential::PAUSE_WINDOWS;
/// Episodes in the last day before a finding can be one more of them: the highest of `n`
/// exchangeable episodes bounds the next one with chance `n / (n + 1)`, so nine make the range
/// a 90% predictive bound; fewer know too little of what the entity does (and the second and
/// third fault in a row on one service are news).
pub const MIN_EPISODES: usize = 9;
/// A run is held only while an episode would last as long with at least this chance (as a pause).
const LEVEL: f64 = crate::detect::sequential::PAUSE_LEVEL;
/// Episodes remembered per key (the most recent).
const KEPT: usize = 16;

/// A run of windows with a finding of one key.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct Run {
    /// End of the last window with a finding.
    last: Millis,
    windows: u32,
    peak: Peak,
}

/// How far a run went: its highest score, and its largest deviation from usual (a score
/// saturates; the measured deviation does not).
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
struct Peak {
    score: f64,
    deviation: f64,
}

impl Peak {
    fn of(a: &Anomaly) -> Self {
        Peak {
            score: a.score,
            deviation: deviation(a),
        }
    }

    fn widen(&mut self, other: &Peak) {
        self.score = self.score.max(other.score);
        self.deviation = self.deviation.max(other.deviation);
    }

    fn covers(&self, other: &Peak) -> bool {
        other.score <= self.score && other.deviation <= self.deviation
    }
}

/// How far a finding's measure is from its usual, as the absolute log of their ratio (a drop
/// to a tenth as far as a rise tenfold); 0 when it has no measure.
fn deviation(a: &Anomaly) -> f64 {
    match (a.actual, a.expected) {
        (Some(x), Some(e)) if x > 0.0 && e > 0.0 => (x / e).ln().abs(),
        (Some(x), Some(e)) if x != e => f64::INFINITY,
        _ => 0.0,
    }
}

/// One key's ongoing run and remembered episodes.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Track {
    run: Option<Run>,
    /// (end, windows, peak) of recent episodes, oldest first.
    episodes: Vec<(Millis, u32, Peak)>,
    /// End of the window the track last saw (to tell a new window from the same one).
    seen: Option<Millis>,
}

/// Episodes per key, and what they hold back.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RecurrenceBook {
    tracks: FxHashMap<String, Track>,
}

/// The key a finding's episodes are tracked under: its detector, metric and entity.
fn key_of(a: &Anomaly) -> String {
    format!(
        "{}|{}|{}|{}/{}|{}|{}",
        a.detector,
        a.kind.as_str(),
        a.metric.as_deref().unwrap_or(""),
        a.service,
        a.provider,
        a.route.as_deref().unwrap_or(""),
        a.hop_from.as_deref().unwrap_or("")
    )
}

impl RecurrenceBook {
    /// Takes the findings of the window ending at `now`: ends the runs that had none, extends
    /// the others, and marks each finding that is one more episode of its key with
    /// [`RECURRING`] and why ([`super::AlertManager::ingest`] counts them).
    pub fn judge(&mut self, anomalies: &mut [Anomaly], now: Millis) {
        let keys: Vec<String> = anomalies.iter().map(key_of).collect();
        // Runs with no finding in this window end (remembered when short).
        let seen: rustc_hash::FxHashSet<&str> = keys.iter().map(String::as_str).collect();
        for (k, t) in &mut self.tracks {
            if seen.contains(k.as_str()) {
                continue;
            }
            if let Some(run) = t.run.take() {
                if run.windows <= EPISODE_WINDOWS {
                    t.episodes.push((run.last, run.windows, run.peak));
                    if t.episodes.len() > KEPT {
                        t.episodes.remove(0);
                    }
                }
            }
        }
        for t in self.tracks.values_mut() {
            t.episodes.retain(|&(end, _, _)| now - end <= DAY_MS);
        }
        self.tracks.retain(|_, t| t.run.is_some() || !t.episodes.is_empty());
        for (a, key) in anomalies.iter_mut().zip(keys) {
            let t = self.tracks.entry(key).or_default();
            if t.seen != Some(now) {
                t.seen = Some(now);
                let run = t.run.get_or_insert(Run {
                    last: now,
                    windows: 0,
                    peak: Peak::default(),
                });
                run.windows += 1;
                run.last = now;
            }
            let Some(run) = t.run.as_mut() else { continue };
            run.peak.widen(&Peak::of(a));
            if a.held_by.is_some() || super::sums_past_windows(a) {
                continue;
            }
            let Some(why) = one_more(&t.episodes, run.windows, a) else {
                continue;
            };
            a.reason = format!("{} (held back: {why})", a.reason);
            a.held_by = Some(RECURRING.to_owned());
        }
    }
}

/// Why `finding`, in the `windows`-th window of its run is one more of the
/// `episodes` (end, windows, peak), or `None` when it is news.
fn one_more(episodes: &[(Millis, u32, Peak)], windows: u32, finding: &Anomaly) -> Option<String> {
    if episodes.len() < MIN_EPISODES || windows > EPISODE_WINDOWS {
        return None;
    }
    let this = Peak::of(finding);
    let peak = episodes.iter().fold(Peak::default(), |mut p, e| {
        p.widen(&e.2);
        p
    });
    if !peak.covers(&this) {
        return None;
    }
    let lengths: Vec<u32> = episodes.iter().map(|e| e.1).collect();
    let chance = crate::detect::sequential::pause_outlasts(&lengths, windows);
    (chance >= LEVEL).then(|| {
        format!(
            "the same finding came and went by itself {} times in the last day, scoring up to {:.0} and \
             reaching {:.1}x usual (or its inverse), lasting up to {} window(s); one like them lasts {windows} window(s) or more with chance {chance:.2}",
            episodes.len(),
            peak.score,
            peak.deviation.exp(),
            lengths.iter().max().copied().unwrap_or(0)
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::anomaly::AnomalyKind;
    use crate::model::time::MINUTE_MS;

    fn finding(score: f64) -> Anomaly {
        let mut a = crate::alert::tests::anomaly("order", AnomalyKind::Latency, score, 0);
        a.metric = Some("latency.p95".into());
        a
    }

    /// Feeds one window: `Some(score)` a finding, `None` none. Returns whether it was held.
    fn window(book: &mut RecurrenceBook, minute: i64, score: Option<f64>) -> bool {
        let mut found: Vec<Anomaly> = score.into_iter().map(finding).collect();
        book.judge(&mut found, minute * MINUTE_MS);
        found.first().is_some_and(|a| a.held_by.as_deref() == Some(RECURRING))
    }

    /// A one-minute spike every 20 minutes: the first nine are news, the next ones are held
    /// and say why; a stronger one, or one that outlasts the episodes, is news again.
    #[test]
    fn episodes_an_entity_is_known_for_are_held_and_worse_ones_are_not() {
        let mut book = RecurrenceBook::default();
        let mut held = Vec::new();
        for m in 0..300 {
            let score = (m % 20 == 0).then_some(70.0);
            if window(&mut book, m, score) {
                held.push(m);
            }
        }
        let want: Vec<i64> = (9..15).map(|k| k * 20).collect();
        assert_eq!(held, want, "the first nine are news");
        assert!(!window(&mut book, 300, Some(90.0)), "worse than any episode is news");
        window(&mut book, 301, None);
        let mut further = vec![finding(70.0)];
        further[0].actual = Some(10.0);
        book.judge(&mut further, 310 * MINUTE_MS);
        assert!(further[0].held_by.is_none(), "as strong but further from usual is news");
        window(&mut book, 311, None);
        let long: Vec<bool> = (320..330).map(|m| window(&mut book, m, Some(60.0))).collect();
        let first_news = long.iter().position(|h| !h).expect("a long run is news in the end");
        assert!(first_news >= 1 && first_news <= EPISODE_WINDOWS as usize, "{long:?}");
    }

    /// Other keys, forecasts (which sum past windows) and findings another rule held are not touched; a day without
    /// episodes forgets them.
    #[test]
    fn other_entities_forecasts_and_old_episodes_are_news() {
        let mut book = RecurrenceBook::default();
        for m in 0..200 {
            window(&mut book, m, (m % 20 == 0).then_some(70.0));
        }
        let mut other = finding(70.0);
        other.service = "payments".into();
        let mut forecast = finding(70.0);
        forecast.kind = AnomalyKind::Forecast;
        let mut same = finding(70.0);
        same.held_by = Some("dependency_change".into());
        let mut found = vec![other, forecast, same];
        book.judge(&mut found, 200 * MINUTE_MS);
        assert!(found[0].held_by.is_none());
        assert!(found[1].held_by.is_none());
        assert_eq!(found[2].held_by.as_deref(), Some("dependency_change"));
        assert!(window(&mut book, 220, Some(70.0)), "one more episode is held");
        assert!(
            !window(&mut book, 220 + DAY_MS / MINUTE_MS, Some(70.0)),
            "episodes a day old are forgotten"
        );
    }
}
