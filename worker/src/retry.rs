//! One retry policy for everything that talks to another server (Elasticsearch, webhooks,
//! PagerDuty, SMTP, Kibana): exponential backoff with full jitter, capped, a bounded number of
//! attempts, and the caller saying which failures are worth another try.

use std::time::Duration;

use rand::Rng;

/// How often and how patiently to try.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RetryPolicy {
    /// Tries in all, the first included (1 = never retry).
    pub max_attempts: u32,
    /// The first wait (before jitter); each later one doubles.
    pub base_delay: Duration,
    /// No wait is longer than this.
    pub max_delay: Duration,
}

impl RetryPolicy {
    /// The wait after failed attempt `attempt` (1-based): between half and all of
    /// `base * 2^attempt`, capped at `max_delay`.
    pub fn delay(&self, attempt: u32) -> Duration {
        let exp = self.base_delay.saturating_mul(1u32 << attempt.min(16)).min(self.max_delay);
        let ms = exp.as_millis().max(1) as u64;
        Duration::from_millis(rand::thread_rng().gen_range(ms / 2..=ms))
    }

    /// Runs `op` (given the attempt number) until it succeeds, fails for good, or the attempts
    /// run out; `retryable` says which outcomes deserve another try, `on_retry` hears each
    /// retry with the wait before it. Returns the last outcome.
    pub fn run<T>(&self, mut op: impl FnMut(u32) -> T, retryable: impl Fn(&T) -> bool, mut on_retry: impl FnMut(&T, u32, Duration)) -> T {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let outcome = op(attempt);
            if !retryable(&outcome) || attempt >= self.max_attempts {
                return outcome;
            }
            let wait = self.delay(attempt);
            on_retry(&outcome, attempt, wait);
            std::thread::sleep(wait);
        }
    }

    /// [`RetryPolicy::run`] for futures: the waits sleep on the async runtime's timer instead of
    /// blocking a thread.
    pub async fn run_async<T, F: std::future::Future<Output = T>>(
        &self,
        mut op: impl FnMut(u32) -> F,
        retryable: impl Fn(&T) -> bool,
        mut on_retry: impl FnMut(&T, u32, Duration),
    ) -> T {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let outcome = op(attempt).await;
            if !retryable(&outcome) || attempt >= self.max_attempts {
                return outcome;
            }
            let wait = self.delay(attempt);
            on_retry(&outcome, attempt, wait);
            tokio::time::sleep(wait).await;
        }
    }
}

/// HTTP statuses that say "busy or unavailable, try later": 429 and the gateway errors. A
/// plain 500 is left to the caller: from Elasticsearch it is usually a request it cannot
/// handle, from a webhook endpoint often a passing failure.
pub fn is_retryable_status(status: u16) -> bool {
    matches!(status, 429 | 502 | 503 | 504)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_grow_with_jitter_and_stay_capped() {
        let p = RetryPolicy {
            max_attempts: 5,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(30),
        };
        let first = p.delay(1);
        assert!(
            first >= Duration::from_millis(100) && first <= Duration::from_millis(200),
            "{first:?}"
        );
        assert!(p.delay(30) <= Duration::from_secs(30));
        assert!(p.delay(30) >= Duration::from_secs(15));
    }

    #[test]
    fn tries_until_success_or_a_final_failure_and_no_more_than_allowed() {
        let p = RetryPolicy {
            max_attempts: 4,
            base_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(2),
        };
        let mut retries = 0;
        let out = p.run(|n| if n < 3 { Err(503) } else { Ok(n) }, |r| r.is_err(), |_, _, _| retries += 1);
        assert_eq!((out, retries), (Ok(3), 2));
        let out: Result<u32, u16> = p.run(|_| Err(400), |r| matches!(r, Err(s) if is_retryable_status(*s)), |_, _, _| {});
        assert!(is_retryable_status(503) && !is_retryable_status(500));
        assert_eq!(out, Err(400), "a refusal is not retried");
        let mut calls = 0;
        let out: Result<u32, u16> = p.run(
            |_| {
                calls += 1;
                Err(500)
            },
            |r| r.is_err(),
            |_, _, _| {},
        );
        assert_eq!((out, calls), (Err(500), 4));
    }
}
