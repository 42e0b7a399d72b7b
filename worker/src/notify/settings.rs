//! What every channel's configuration section shares: pacing keys (throttle, hourly cap,
//! retries), route priorities, URLs, where messages link to. Each channel reads its own section
//! with these (`<channel>::from_section`); [`super::parse_channels`] hands the sections out.

use std::time::Duration;

use super::dispatch::Pacing;
use super::Links;
use crate::config::{invalid, ConfigError};
use crate::retry::RetryPolicy;

/// Where a section was read and what its messages link to.
pub struct Section<'a> {
    pub origin: &'a str,
    pub links: &'a Links,
}

/// The pacing keys every channel section has, checked the same way.
pub struct RawPacing {
    pub min_interval_secs: Option<u64>,
    pub max_per_hour: Option<usize>,
    pub max_attempts: Option<u32>,
    pub backoff_ms: Option<u64>,
}

/// `attempts_key` names the section's `max_attempts` in errors.
pub fn pacing(
    raw: RawPacing,
    attempts_key: &'static str,
    default_attempts: u32,
    outbox_limit: usize,
    origin: &str,
) -> Result<Pacing, ConfigError> {
    let max_attempts = raw.max_attempts.unwrap_or(default_attempts);
    if !(1..=10).contains(&max_attempts) {
        return Err(invalid(origin, attempts_key, "must be between 1 and 10"));
    }
    Ok(Pacing {
        min_interval: Duration::from_secs(raw.min_interval_secs.unwrap_or(900)),
        max_per_hour: raw.max_per_hour.unwrap_or(30),
        retry: RetryPolicy {
            max_attempts,
            base_delay: Duration::from_millis(raw.backoff_ms.unwrap_or(500)),
            // Deliveries run on the worker's thread: no single wait longer than this.
            max_delay: Duration::from_secs(5),
        },
        outbox_limit,
    })
}

/// The filters every channel's routes have: `priorities` among P1-P4.
pub fn check_priorities<'a>(key: &'static str, mut priorities: impl Iterator<Item = &'a String>, origin: &str) -> Result<(), ConfigError> {
    match priorities.any(|p| !["P1", "P2", "P3", "P4"].contains(&p.to_uppercase().as_str())) {
        true => Err(invalid(origin, key, "must be among P1, P2, P3, P4")),
        false => Ok(()),
    }
}

pub fn is_http_url(url: &str) -> bool {
    url.starts_with("http://") || url.starts_with("https://")
}
