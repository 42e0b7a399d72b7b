//! Clock skew: an event stamped far ahead of the stream (a host with a wrong clock) must not
//! move time, or every later event becomes "late" and lands in the wrong window. An event more
//! than `max_skew` ahead of the newest accepted time is held, not accepted. What follows decides:
//! if the stream goes on at the new time (the data really jumped over a silence), the held events
//! are accepted in time order; if it goes on at the old time, they are refused with the reason.
//! The vote is by counts of events, so a file and its replay decide the same way. At most
//! `confirm` events are ever held.
//!
//! The stream's starting time is the median of its first `confirm` events, so a wrong clock on
//! the very first line cannot set the time either.

use crate::model::time::{format_duration, Millis};
use crate::model::Event;

/// How far ahead an event may be, and how many events settle a jump.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SkewSettings {
    /// An event more than this ahead of the newest accepted time is held (default 10 minutes).
    pub max_skew: Millis,
    /// Events that settle whether the held ones are a jump of the whole stream (default 8).
    pub confirm: usize,
}

impl Default for SkewSettings {
    fn default() -> Self {
        SkewSettings {
            max_skew: 10 * crate::model::time::MINUTE_MS,
            confirm: 8,
        }
    }
}

/// Holds events stamped ahead of the stream until the stream says whether they are right.
/// `T` is what the caller needs to report a refused event (its file and line, say).
pub struct SkewGuard<T> {
    settings: SkewSettings,
    /// The newest accepted time; `None` until the start is known.
    watermark: Option<Millis>,
    /// The first events, while the start is being found.
    start: Vec<(Event, T)>,
    /// Events ahead of the watermark by more than the allowed skew.
    held: Vec<(Event, T)>,
    /// Events at the old time since the first held one (votes against a jump).
    against: usize,
}

/// What happened to one event the guard gave back.
pub enum Outcome<T> {
    Accepted(Event),
    /// Refused: the event, its tag, and the reason.
    Refused(Event, T, String),
}

impl<T> SkewGuard<T> {
    pub fn new(settings: SkewSettings) -> Self {
        SkewGuard {
            settings: SkewSettings {
                confirm: settings.confirm.max(1),
                ..settings
            },
            watermark: None,
            start: Vec::new(),
            held: Vec::new(),
            against: 0,
        }
    }

    /// Whether an event at `t` is accepted at once, with nothing held to judge (the common
    /// case: the caller can skip keeping what a refusal would need).
    pub fn accepts_now(&self, t: Millis) -> bool {
        self.held.is_empty() && self.watermark.is_some_and(|w| t <= w.saturating_add(self.settings.max_skew))
    }

    /// Offers an event; every event the guard settles (this one or held ones) goes to `out`.
    pub fn offer(&mut self, ev: Event, tag: T, out: &mut impl FnMut(Outcome<T>)) {
        if self.watermark.is_none() {
            self.start.push((ev, tag));
            if self.start.len() >= self.settings.confirm {
                self.settle_start(out);
            }
            return;
        }
        self.judge(ev, tag, out);
    }

    /// The input ended: settles everything still held.
    pub fn finish(&mut self, out: &mut impl FnMut(Outcome<T>)) {
        if self.watermark.is_none() && !self.start.is_empty() {
            self.settle_start(out);
        }
        if !self.held.is_empty() {
            // Nothing came after to contradict a jump made by more events than spoke against it.
            if self.held.len() >= self.against {
                self.accept_jump(out);
            } else {
                self.refuse_held(out);
            }
        }
    }

    fn settle_start(&mut self, out: &mut impl FnMut(Outcome<T>)) {
        let mut times: Vec<Millis> = self.start.iter().map(|(e, _)| e.timestamp).collect();
        times.sort_unstable();
        // The lower median: with two events, a wrong clock on either cannot set the start.
        let median = times[(times.len() - 1) / 2];
        self.watermark = Some(median);
        for (ev, tag) in std::mem::take(&mut self.start) {
            self.judge(ev, tag, out);
        }
    }

    fn judge(&mut self, ev: Event, tag: T, out: &mut impl FnMut(Outcome<T>)) {
        let watermark = self.watermark.unwrap_or(ev.timestamp);
        if ev.timestamp > watermark.saturating_add(self.settings.max_skew) {
            self.held.push((ev, tag));
        } else {
            if !self.held.is_empty() {
                self.against += 1;
            }
            self.watermark = Some(watermark.max(ev.timestamp));
            out(Outcome::Accepted(ev));
        }
        let (held, against, confirm) = (self.held.len(), self.against, self.settings.confirm);
        if held >= confirm && held >= against {
            self.accept_jump(out);
        } else if against >= confirm && against > held {
            self.refuse_held(out);
        }
    }

    fn accept_jump(&mut self, out: &mut impl FnMut(Outcome<T>)) {
        let mut held = std::mem::take(&mut self.held);
        held.sort_by_key(|(e, _)| e.timestamp);
        self.against = 0;
        for (ev, _) in held {
            self.watermark = Some(self.watermark.map_or(ev.timestamp, |w| w.max(ev.timestamp)));
            out(Outcome::Accepted(ev));
        }
    }

    fn refuse_held(&mut self, out: &mut impl FnMut(Outcome<T>)) {
        let watermark = self.watermark.unwrap_or_default();
        let against = std::mem::take(&mut self.against);
        for (ev, tag) in std::mem::take(&mut self.held) {
            let why = format!(
                "clock skew: {} ahead of the stream (more than input.max_skew_secs = {}), and the next {against} events went on at the old time",
                format_duration(ev.timestamp.saturating_sub(watermark)),
                format_duration(self.settings.max_skew),
            );
            out(Outcome::Refused(ev, tag, why));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::time::MINUTE_MS;

    fn ev(t: Millis) -> Event {
        Event {
            timestamp: t,
            ..Default::default()
        }
    }

    /// Runs times through a guard: (accepted times in order, refused times).
    fn run(times: &[Millis]) -> (Vec<Millis>, Vec<Millis>) {
        let mut g = SkewGuard::new(SkewSettings::default());
        let (mut ok, mut refused) = (Vec::new(), Vec::new());
        let mut out = |o: Outcome<()>| match o {
            Outcome::Accepted(e) => ok.push(e.timestamp),
            Outcome::Refused(e, (), why) => {
                assert!(why.starts_with("clock skew:"), "{why}");
                refused.push(e.timestamp)
            }
        };
        for &t in times {
            g.offer(ev(t), (), &mut out);
        }
        g.finish(&mut out);
        (ok, refused)
    }

    const YEAR: Millis = 365 * 24 * 60 * MINUTE_MS;

    #[test]
    fn an_event_from_a_wrong_clock_is_refused_and_time_does_not_move() {
        let mut times: Vec<Millis> = (0..100).map(|i| i * 1000).collect();
        times.insert(50, 3 * YEAR);
        times.insert(70, 3 * YEAR + 5);
        let (ok, refused) = run(&times);
        assert_eq!(refused, [3 * YEAR, 3 * YEAR + 5]);
        assert_eq!(ok, (0..100).map(|i| i * 1000).collect::<Vec<_>>());
    }

    #[test]
    fn a_real_jump_over_a_silence_is_accepted() {
        let mut times: Vec<Millis> = (0..50).map(|i| i * 1000).collect();
        times.extend((0..50).map(|i| 5 * 60 * MINUTE_MS + i * 1000));
        let (ok, refused) = run(&times);
        assert!(refused.is_empty());
        assert_eq!(ok, times);
    }

    #[test]
    fn a_wrong_first_line_does_not_set_the_start() {
        let mut times = vec![2 * YEAR];
        times.extend((0..30).map(|i| i * 1000));
        let (ok, refused) = run(&times);
        assert_eq!(refused, [2 * YEAR]);
        assert_eq!(ok.len(), 30);
    }

    #[test]
    fn a_short_stream_ending_after_a_jump_keeps_it() {
        let (ok, refused) = run(&[0, 1000, 2000, 9 * 60 * MINUTE_MS, 9 * 60 * MINUTE_MS + 1]);
        assert!(refused.is_empty());
        assert_eq!(ok.len(), 5);
    }

    #[test]
    fn held_events_stay_bounded_under_a_steady_skewed_host() {
        let mut g = SkewGuard::new(SkewSettings::default());
        let mut refused = 0;
        for i in 0..10_000 {
            let t = if i % 3 == 0 { YEAR + i } else { i * 100 };
            g.offer(ev(t), (), &mut |o| {
                if matches!(o, Outcome::Refused(..)) {
                    refused += 1
                }
            });
            assert!(g.held.len() <= g.settings.confirm);
        }
        assert!(refused > 3000, "{refused}");
    }
}
