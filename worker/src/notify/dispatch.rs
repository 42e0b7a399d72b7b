//! The one delivery loop every channel shares. A [`Channel`] only knows its destinations and
//! how to render and send one message; the [`Dispatcher`] around it owns the rest: which alert
//! changes deserve a message (the [`Throttle`]), the evidence shown with them, the outbox kept
//! in order while a server is down, retries with the shared backoff, counters, and the memory
//! saved with each checkpoint.

use std::collections::VecDeque;

use super::{by_urgency, Evidence, MessageKind, Notifier, Throttle};
use crate::model::{Alert, Anomaly};
use crate::retry::RetryPolicy;

/// One message to send.
pub struct Outgoing<'a> {
    pub alert: &'a Alert,
    pub kind: MessageKind,
    /// Which of the channel's destinations (see [`Channel::destinations`]).
    pub destination: usize,
    /// The alert's strongest anomalies still remembered, strongest first.
    pub evidence: &'a [&'a Anomaly],
}

/// Why a message did not go out.
#[derive(Debug, PartialEq, Eq)]
pub enum Failure {
    /// Worth another try (server down, busy or erring); the text names the server.
    Retry(String),
    /// Trying again will not help (bad address, refused payload); the text says why.
    Refused(String),
}

/// A way of telling people: email, a webhook, PagerDuty.
pub trait Channel: Send {
    /// The destinations that hear about `alert` (indices the channel understands, usually its
    /// routes); empty when nobody does.
    fn destinations(&self, alert: &Alert) -> Vec<usize>;
    /// Renders and sends one message.
    fn deliver(&mut self, msg: &Outgoing<'_>) -> Result<(), Failure>;
}

/// POSTs a JSON document, the way HTTP channels deliver: 2xx is done; 429 and 5xx (a busy or
/// erring endpoint) and transport errors are worth another try; any other status is a refusal
/// (a bad URL, key or payload), with the endpoint's answer.
pub fn post_json(agent: &ureq::Agent, url: &str, body: &serde_json::Value) -> Result<(), Failure> {
    let body = body.to_string();
    let mut resp = agent
        .post(url)
        .header("Content-Type", "application/json")
        .send(body.as_bytes())
        .map_err(|e| Failure::Retry(format!("{url}: {e}")))?;
    let status = resp.status().as_u16();
    if (200..300).contains(&status) {
        return Ok(());
    }
    let text: String = resp.body_mut().read_to_string().unwrap_or_default().chars().take(300).collect();
    let why = format!("{url}: HTTP {status}: {text}");
    match status == 429 || status >= 500 {
        true => Err(Failure::Retry(why)),
        false => Err(Failure::Refused(why)),
    }
}

/// How a channel is paced: the per-alert throttle, the hourly cap and the retries.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Pacing {
    pub min_interval: std::time::Duration,
    pub max_per_hour: usize,
    pub retry: RetryPolicy,
    /// Messages kept for a destination that is down; beyond this the oldest are dropped,
    /// counted and logged.
    pub outbox_limit: usize,
}

/// A channel with its throttle, evidence, outbox and counters.
pub struct Dispatcher {
    name: &'static str,
    channel: Box<dyn Channel>,
    pacing: Pacing,
    throttle: Throttle,
    evidence: Evidence,
    outbox: VecDeque<(Alert, MessageKind, usize)>,
    pub sent: u64,
    pub failed: u64,
}

impl Dispatcher {
    pub fn new(name: &'static str, channel: Box<dyn Channel>, pacing: Pacing) -> Self {
        Dispatcher {
            name,
            channel,
            throttle: Throttle::new(pacing.min_interval.as_millis() as i64, pacing.max_per_hour),
            pacing,
            evidence: Evidence::default(),
            outbox: VecDeque::new(),
            sent: 0,
            failed: 0,
        }
    }

    /// Messages waiting for a destination that was down.
    pub fn queued(&self) -> usize {
        self.outbox.len()
    }

    /// Sends one queued message, retrying what is worth it.
    fn send(&mut self, a: &Alert, kind: MessageKind, destination: usize) -> Result<(), Failure> {
        let evidence = self.evidence.strongest(a, 5);
        let msg = Outgoing {
            alert: a,
            kind,
            destination,
            evidence: &evidence,
        };
        let (name, channel) = (self.name, &mut self.channel);
        self.pacing.retry.run(
            |_| channel.deliver(&msg),
            |r| matches!(r, Err(Failure::Retry(_))),
            |r, attempt, wait| {
                if let Err(Failure::Retry(why)) = r {
                    tracing::warn!(channel = name, alert = %a.id, %why, attempt, wait_ms = wait.as_millis() as u64, "delivery failed, retrying");
                }
            },
        )
    }
}

impl Notifier for Dispatcher {
    fn notify(&mut self, alerts: &[Alert]) -> anyhow::Result<u64> {
        let now = chrono::Utc::now().timestamp_millis();
        // Decide first (urgent first), then send the outbox in order: what failed before goes
        // out before anything new.
        for a in by_urgency(alerts) {
            let destinations = self.channel.destinations(a);
            if destinations.is_empty() {
                continue;
            }
            if let Some(kind) = self.throttle.decide(a, now) {
                self.outbox.extend(destinations.into_iter().map(|d| (a.clone(), kind, d)));
            }
        }
        while self.outbox.len() > self.pacing.outbox_limit {
            if let Some((a, _, _)) = self.outbox.pop_front() {
                self.failed += 1;
                tracing::error!(channel = self.name, alert = %a.id, "message dropped: the destination has been unreachable for too long");
            }
        }
        let mut sent = 0;
        while let Some((a, kind, destination)) = self.outbox.pop_front() {
            match self.send(&a, kind, destination) {
                Ok(()) => {
                    sent += 1;
                    self.sent += 1;
                    tracing::info!(channel = self.name, alert = %a.id, priority = %a.priority, ?kind, "alert message sent");
                }
                Err(Failure::Refused(why)) => {
                    self.failed += 1;
                    tracing::error!(channel = self.name, alert = %a.id, %why, "message refused for good: check the channel's configuration");
                }
                Err(Failure::Retry(why)) => {
                    // Keep it (and everything after it) for the next round, in order.
                    self.outbox.push_front((a, kind, destination));
                    let queued = self.outbox.len();
                    anyhow::bail!(
                        "{}: {why} after {} tries ({sent} sent, {queued} kept for the next round)",
                        self.name,
                        self.pacing.retry.max_attempts
                    );
                }
            }
        }
        Ok(sent)
    }

    fn remember(&mut self, anomalies: &[Anomaly]) {
        self.evidence.remember(anomalies);
    }

    fn save(&self) -> serde_json::Value {
        serde_json::to_value(&self.throttle).unwrap_or_default()
    }

    fn load(&mut self, state: &serde_json::Value) {
        self.throttle.restore(state);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::AlertStatus;
    use crate::notify::tests::alert;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    /// A channel that answers from a script and records what it was asked to send.
    struct Scripted {
        answers: VecDeque<Result<(), Failure>>,
        log: Arc<Mutex<Vec<(String, usize)>>>,
    }

    impl Channel for Scripted {
        fn destinations(&self, a: &Alert) -> Vec<usize> {
            if a.priority == "P1" {
                vec![0, 1]
            } else {
                vec![1]
            }
        }
        fn deliver(&mut self, msg: &Outgoing<'_>) -> Result<(), Failure> {
            self.log.lock().unwrap().push((msg.alert.id.clone(), msg.destination));
            self.answers.pop_front().unwrap_or(Ok(()))
        }
    }

    type Sent = Arc<Mutex<Vec<(String, usize)>>>;

    fn dispatcher(answers: Vec<Result<(), Failure>>, max_attempts: u32, outbox_limit: usize) -> (Dispatcher, Sent) {
        let log = Arc::new(Mutex::new(Vec::new()));
        let channel = Scripted {
            answers: answers.into(),
            log: log.clone(),
        };
        let pacing = Pacing {
            min_interval: Duration::from_secs(900),
            max_per_hour: 30,
            retry: RetryPolicy {
                max_attempts,
                base_delay: Duration::from_millis(1),
                max_delay: Duration::from_millis(2),
            },
            outbox_limit,
        };
        (Dispatcher::new("test", Box::new(channel), pacing), log)
    }

    #[test]
    fn urgent_first_to_every_destination_with_retries_and_refusals_counted() {
        let (mut d, log) = dispatcher(
            vec![Err(Failure::Retry("busy".into())), Ok(()), Err(Failure::Refused("bad".into()))],
            3,
            10,
        );
        let p3 = alert("a3", "ledger", "P3", AlertStatus::Open, 1);
        let p1 = alert("a1", "payments", "P1", AlertStatus::Open, 1);
        let n = d.notify(&[p3, p1]);
        let sent: Vec<(String, usize)> = log.lock().unwrap().clone();
        assert_eq!(n.unwrap(), 2, "{sent:?}");
        let expect = [("a1", 0), ("a1", 0), ("a1", 1), ("a3", 1)];
        assert_eq!(sent, expect.map(|(a, i)| (a.to_owned(), i)).to_vec());
        assert_eq!((d.sent, d.failed), (2, 1));
    }

    #[test]
    fn a_destination_that_stays_down_keeps_the_message_in_order_and_the_outbox_is_bounded() {
        let down = || Err(Failure::Retry("down".into()));
        let (mut d, log) = dispatcher(vec![down(), down()], 2, 10);
        let a = alert("a", "s", "P2", AlertStatus::Open, 1);
        let err = d.notify(std::slice::from_ref(&a)).unwrap_err().to_string();
        assert!(err.contains("down after 2 tries") && err.contains("1 kept"), "{err}");
        assert_eq!(d.queued(), 1);
        assert_eq!(d.notify(&[]).unwrap(), 1, "the kept message goes out next round");
        assert_eq!(log.lock().unwrap().len(), 3);

        let (mut d, _) = dispatcher((0..10).map(|_| down()).collect(), 1, 2);
        for id in ["x", "y", "z"] {
            let _ = d.notify(&[alert(id, "s", "P2", AlertStatus::Open, 1)]);
        }
        assert_eq!((d.queued(), d.failed), (2, 1), "beyond the limit the oldest is dropped and counted");
    }
}
