//! Timestamps: milliseconds since the Unix epoch, with a fast RFC 3339 parser for the common
//! `YYYY-MM-DDTHH:MM:SS.fffZ` shape and a chrono fallback for everything else.

use chrono::{DateTime, SecondsFormat, Utc};

/// Milliseconds since the Unix epoch, UTC.
pub type Millis = i64;

pub const MINUTE_MS: Millis = 60_000;
pub const HOUR_MS: Millis = 3_600_000;
pub const DAY_MS: Millis = 86_400_000;

/// Days since 1970-01-01 for a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

/// Days in a month of the proleptic Gregorian calendar (`2026-02-30` is refused, not rolled over).
fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if is_leap(y) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

fn digits(b: &[u8]) -> Option<i64> {
    let mut v = 0i64;
    for &c in b {
        if !c.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_add(i64::from(c - b'0'))?;
    }
    Some(v)
}

/// Parses an RFC 3339 timestamp into epoch milliseconds.
pub fn parse_rfc3339(s: &str) -> Option<Millis> {
    let b = s.as_bytes();
    // Fast path: 2026-03-02T06:00:00[.fff...]Z
    if b.len() >= 20
        && b[4] == b'-'
        && b[7] == b'-'
        && (b[10] == b'T' || b[10] == b't' || b[10] == b' ')
        && b[13] == b':'
        && b[16] == b':'
        && (b[b.len() - 1] == b'Z' || b[b.len() - 1] == b'z')
    {
        let (y, mo, d) = (digits(&b[0..4])?, digits(&b[5..7])?, digits(&b[8..10])?);
        let (h, mi, se) = (digits(&b[11..13])?, digits(&b[14..16])?, digits(&b[17..19])?);
        if !(1..=12).contains(&mo) || d < 1 || d > days_in_month(y, mo) || h > 23 || mi > 59 || se > 60 {
            return None;
        }
        let frac = &b[19..b.len() - 1];
        let mut ms = 0i64;
        if !frac.is_empty() {
            if frac[0] != b'.' || frac.len() < 2 {
                return None;
            }
            let f = &frac[1..];
            // Any number of fraction digits is valid; only the first three count.
            if !f.iter().all(u8::is_ascii_digit) {
                return None;
            }
            for i in 0..3 {
                ms = ms * 10 + f.get(i).map_or(0, |c| i64::from(c - b'0'));
            }
        }
        let days = days_from_civil(y, mo, d);
        return Some(((days * 24 + h) * 60 + mi) * 60_000 + se * 1000 + ms);
    }
    DateTime::parse_from_rfc3339(s).ok().map(|t| t.timestamp_millis())
}

/// What unit an integer epoch time is in, by its magnitude: below 10^11 seconds (up to year
/// 5138), below 10^14 milliseconds, below 10^17 microseconds, else nanoseconds. An epoch time
/// in milliseconds below 10^11 is before 1973-03-03 and one in seconds above it after year 5138,
/// so the rule is unambiguous for every time in [`TimeRange::default`].
pub fn epoch_to_millis(v: f64) -> Option<Millis> {
    if !v.is_finite() {
        return None;
    }
    let a = v.abs();
    let ms = if a < 1e11 {
        v * 1e3
    } else if a < 1e14 {
        v
    } else if a < 1e17 {
        v / 1e3
    } else {
        v / 1e6
    };
    // Whole milliseconds; beyond ±2^53 ms (year 287,000) nothing is a real time.
    (ms.abs() < 9.0e15).then(|| ms.round() as Millis)
}

/// [`epoch_to_millis`] for an integer (exact, no float rounding below 2^53).
pub fn epoch_int_to_millis(v: i64) -> Option<Millis> {
    let a = v.unsigned_abs();
    if a < 100_000_000_000 {
        v.checked_mul(1000)
    } else if a < 100_000_000_000_000 {
        Some(v)
    } else if a < 100_000_000_000_000_000 {
        Some(v / 1000)
    } else {
        Some(v / 1_000_000)
    }
}

/// The times an event may carry (`[input]` in the configuration): a timestamp outside is a wrong
/// clock or a wrong unit, refused with the reason rather than moving the windows to year 9999.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimeRange {
    /// The earliest accepted time (default 2000-01-01).
    pub earliest: Millis,
    /// How far past the wall clock an event may be (default one day: time zones written as UTC
    /// and drifting clocks, not years).
    pub max_ahead: Millis,
}

impl Default for TimeRange {
    fn default() -> Self {
        TimeRange {
            earliest: 946_684_800_000,
            max_ahead: DAY_MS,
        }
    }
}

impl TimeRange {
    /// Why `t` is refused, or `None` when it is accepted (`now` is the wall clock).
    pub fn check(&self, t: Millis, now: Millis) -> Option<String> {
        if t < self.earliest {
            return Some(format!(
                "{} is before the earliest accepted time {} (input.earliest)",
                format_rfc3339(t),
                format_rfc3339(self.earliest)
            ));
        }
        let latest = now.saturating_add(self.max_ahead);
        (t > latest).then(|| {
            format!(
                "{} is more than {} ahead of the wall clock (input.max_ahead_secs)",
                format_rfc3339(t),
                format_duration(self.max_ahead)
            )
        })
    }
}

/// The wall clock in epoch milliseconds.
pub fn now_millis() -> Millis {
    Utc::now().timestamp_millis()
}

/// `90 s`, `10 min`, `4.5 h`, `2 d`: a span for messages, to about two figures.
pub fn format_duration(ms: Millis) -> String {
    let s = ms as f64 / 1000.0;
    let (v, unit) = if s >= 2.0 * 86_400.0 {
        (s / 86_400.0, "d")
    } else if s >= 2.0 * 3600.0 {
        (s / 3600.0, "h")
    } else if s >= 120.0 {
        (s / 60.0, "min")
    } else {
        (s, "s")
    };
    let text = if v >= 10.0 { format!("{v:.0}") } else { format!("{v:.1}") };
    format!("{} {unit}", text.trim_end_matches(".0"))
}

/// Formats epoch milliseconds as RFC 3339 UTC with millisecond precision.
pub fn format_rfc3339(ms: Millis) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(SecondsFormat::Millis, true))
        .unwrap_or_else(|| ms.to_string())
}

/// Short human form, `06:05 UTC`, for titles.
pub fn format_hhmm(ms: Millis) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .map(|t| t.format("%H:%M UTC").to_string())
        .unwrap_or_default()
}

/// Hour of day (0..24, fractional) in UTC.
pub fn hour_of_day(ms: Millis) -> f64 {
    (ms.rem_euclid(DAY_MS)) as f64 / HOUR_MS as f64
}

/// Serde helper writing millis as RFC 3339 strings and reading them back.
pub mod serde_rfc3339 {
    use super::*;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &Millis, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format_rfc3339(*v))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Millis, D::Error> {
        let s = String::deserialize(d)?;
        parse_rfc3339(&s).ok_or_else(|| serde::de::Error::custom(format!("bad timestamp `{s}`")))
    }
    /// The same for `Option<Millis>`.
    pub mod option {
        use super::*;
        pub fn serialize<S: Serializer>(v: &Option<Millis>, s: S) -> Result<S::Ok, S::Error> {
            match v {
                Some(v) => s.serialize_str(&format_rfc3339(*v)),
                None => s.serialize_none(),
            }
        }
        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Millis>, D::Error> {
            let s = Option::<String>::deserialize(d)?;
            match s {
                None => Ok(None),
                Some(s) => parse_rfc3339(&s)
                    .map(Some)
                    .ok_or_else(|| serde::de::Error::custom(format!("bad timestamp `{s}`"))),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_path_agrees_with_chrono() {
        for s in [
            "2026-03-02T06:00:00.815Z",
            "1999-12-31T23:59:59Z",
            "2024-02-29T12:00:00.1Z",
            "2026-11-23T00:00:00.123456789Z",
            // More fraction digits than an i64 holds (a mutated line once overflowed here).
            "2026-11-23T00:00:00.1234567890123456789012345Z",
        ] {
            let want = DateTime::parse_from_rfc3339(s).unwrap().timestamp_millis();
            assert_eq!(parse_rfc3339(s), Some(want), "{s}");
        }
    }

    #[test]
    fn offsets_go_through_chrono() {
        assert_eq!(parse_rfc3339("2026-03-02T07:00:00+01:00"), parse_rfc3339("2026-03-02T06:00:00Z"));
    }

    #[test]
    fn garbage_is_rejected() {
        for s in ["", "yesterday", "2026-13-02T06:00:00Z", "2026-03-02T06:00:00.Z"] {
            assert_eq!(parse_rfc3339(s), None, "{s}");
        }
    }

    #[test]
    fn impossible_dates_are_refused() {
        for s in [
            "2026-02-30T00:00:00Z",
            "2026-04-31T00:00:00Z",
            "2025-02-29T00:00:00Z",
            "2026-00-10T00:00:00Z",
        ] {
            assert_eq!(parse_rfc3339(s), None, "{s}");
        }
        assert!(parse_rfc3339("2024-02-29T00:00:00Z").is_some());
        assert!(parse_rfc3339("2000-02-29T00:00:00Z").is_some());
        assert_eq!(parse_rfc3339("1900-02-29T00:00:00Z"), None);
    }

    #[test]
    fn epoch_units_follow_the_magnitude_rule() {
        let t = 1_772_409_600_000; // 2026-03-02T00:00:00Z
        assert_eq!(epoch_int_to_millis(1_772_409_600), Some(t));
        assert_eq!(epoch_int_to_millis(t), Some(t));
        assert_eq!(epoch_int_to_millis(t * 1000 + 999), Some(t));
        assert_eq!(epoch_int_to_millis(t * 1_000_000), Some(t));
        assert_eq!(epoch_to_millis(1_772_409_600.25), Some(t + 250));
        assert_eq!(epoch_to_millis(t as f64), Some(t));
        // The extremes neither wrap nor panic; the range check refuses them.
        for v in [i64::MAX, i64::MIN, i64::MIN + 1] {
            let ms = epoch_int_to_millis(v);
            assert!(ms.is_none_or(|ms| TimeRange::default().check(ms, t).is_some()), "{v}");
        }
        for v in [f64::NAN, f64::INFINITY, 1e300, -1e300] {
            assert_eq!(epoch_to_millis(v), None, "{v}");
        }
    }

    #[test]
    fn the_time_range_refuses_with_the_reason() {
        let now = 1_772_409_600_000;
        let r = TimeRange::default();
        assert_eq!(r.check(now, now), None);
        assert_eq!(r.check(now + DAY_MS, now), None);
        assert!(r.check(now + DAY_MS + 1, now).unwrap().contains("more than 24 h ahead"));
        assert!(r.check(0, now).unwrap().contains("before the earliest"));
        assert!(r.check(i64::MAX, i64::MAX).is_none(), "the bound saturates, it does not wrap");
    }

    #[test]
    fn format_round_trips() {
        let ms = parse_rfc3339("2026-03-02T06:00:00.815Z").unwrap();
        assert_eq!(format_rfc3339(ms), "2026-03-02T06:00:00.815Z");
    }
}
