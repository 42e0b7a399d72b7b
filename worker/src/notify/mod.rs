//! Telling people: a [`Notifier`] receives every stored alert change and decides what deserves
//! a message (a new alert, a re-alert of one still open, its resolution), to whom (routes by
//! service and priority), and how often (per-alert throttle and an hourly cap). Channels:
//! `email` (the default path), `webhook` (generic JSON or Slack-compatible) and `pagerduty`
//! (Events API v2). Each channel runs in a [`dispatch::Dispatcher`], which owns what they share
//! (throttle, evidence, outbox, retries); [`Fanout`] runs several side by side.

pub mod dispatch;
pub mod email;
pub mod pagerduty;
pub mod render;
pub mod settings;
pub mod webhook;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::model::{Alert, AlertStatus, Anomaly};

/// A channel that tells people about alerts.
pub trait Notifier {
    /// Offers stored alert changes; returns how many messages went out.
    fn notify(&mut self, alerts: &[Alert]) -> anyhow::Result<u64>;
    /// Makes anomalies available for the details of later messages.
    fn remember(&mut self, _anomalies: &[Anomaly]) {}
    /// What must survive a restart (who was told what), as JSON for the checkpoint.
    fn save(&self) -> serde_json::Value {
        serde_json::Value::Null
    }
    fn load(&mut self, _state: &serde_json::Value) {}
}

/// Where a message links to: Kibana's Discover on the anomalies index, and the worker's signed
/// answering links when `[http] public_url` and `APIWATCH_LINK_SECRET` are set.
#[derive(Clone, Debug, Default)]
pub struct Links {
    pub kibana_url: Option<String>,
    pub anomalies_index: String,
    pub actions: Option<crate::feedback::link::ActionLinks>,
}

/// Every channel's settings (`[email]`, `[webhook]`, `[pagerduty]`), checked; `None` = not
/// configured.
#[derive(Clone, Debug, Default)]
pub struct ChannelSettings {
    pub email: Option<email::EmailSettings>,
    pub webhook: Option<webhook::WebhookSettings>,
    pub pagerduty: Option<pagerduty::PagerDutySettings>,
}

/// Reads each channel's section (`[email]`, `[webhook]`, `[pagerduty]`) from the top-level
/// tables the configuration did not know; any other leftover is an unknown section.
pub fn parse_channels(mut sections: toml::Table, links: &Links, origin: &str) -> Result<ChannelSettings, crate::config::ConfigError> {
    fn section<T: serde::de::DeserializeOwned>(
        sections: &mut toml::Table,
        name: &str,
        origin: &str,
    ) -> Result<Option<T>, crate::config::ConfigError> {
        sections
            .remove(name)
            .map(|v| {
                v.try_into().map_err(|e| crate::config::ConfigError::Parse {
                    path: origin.to_owned(),
                    message: format!("[{name}]: {e}"),
                })
            })
            .transpose()
    }
    let cx = settings::Section { origin, links };
    let out = ChannelSettings {
        email: section(&mut sections, "email", origin)?
            .map(|raw| email::from_section(raw, &cx))
            .transpose()?,
        webhook: section(&mut sections, "webhook", origin)?
            .map(|raw| webhook::from_section(raw, &cx))
            .transpose()?,
        pagerduty: section(&mut sections, "pagerduty", origin)?
            .map(|raw| pagerduty::from_section(raw, &cx))
            .transpose()?,
    };
    if let Some(name) = sections.keys().next() {
        return Err(crate::config::ConfigError::Parse {
            path: origin.to_owned(),
            message: format!("unknown field `{name}`: not a section apiwatch knows (see apiwatch.example.toml)"),
        });
    }
    Ok(out)
}

/// The configured channels, each in its [`dispatch::Dispatcher`]: email alone keeps its
/// checkpoint format; with others too, each channel's memory is kept under its name.
pub fn channels(settings: &ChannelSettings) -> anyhow::Result<Option<Box<dyn Notifier>>> {
    use dispatch::Dispatcher;
    let mut channels: Vec<(&'static str, Box<dyn Notifier>)> = Vec::new();
    if let Some(e) = &settings.email {
        let channel = email::EmailChannel::new(e.clone())?;
        channels.push(("email", Box::new(Dispatcher::new("email", Box::new(channel), e.pacing))));
    }
    if let Some(w) = &settings.webhook {
        let channel = webhook::WebhookChannel::new(w.clone())?;
        channels.push(("webhook", Box::new(Dispatcher::new("webhook", Box::new(channel), w.pacing))));
    }
    if let Some(p) = &settings.pagerduty {
        let channel = pagerduty::PagerDutyChannel::new(p.clone())?;
        channels.push(("pagerduty", Box::new(Dispatcher::new("pagerduty", Box::new(channel), p.pacing))));
    }
    Ok(match channels.len() {
        0 => None,
        1 => channels.pop().map(|(_, c)| c),
        _ => Some(Box::new(Fanout { channels })),
    })
}

/// Several channels side by side; each keeps its own memory of who was told what.
pub struct Fanout {
    pub channels: Vec<(&'static str, Box<dyn Notifier>)>,
}

impl Notifier for Fanout {
    fn notify(&mut self, alerts: &[Alert]) -> anyhow::Result<u64> {
        let mut sent = 0;
        let mut errors = Vec::new();
        // Every channel gets its chance even if another one is down.
        for (name, c) in &mut self.channels {
            match c.notify(alerts) {
                Ok(n) => sent += n,
                Err(e) => errors.push(format!("{name}: {e:#}")),
            }
        }
        match errors.is_empty() {
            true => Ok(sent),
            false => Err(anyhow::anyhow!("{} ({sent} messages sent)", errors.join("; "))),
        }
    }
    fn remember(&mut self, anomalies: &[Anomaly]) {
        for (_, c) in &mut self.channels {
            c.remember(anomalies);
        }
    }
    fn save(&self) -> serde_json::Value {
        serde_json::Value::Object(self.channels.iter().map(|(n, c)| ((*n).to_owned(), c.save())).collect())
    }
    fn load(&mut self, state: &serde_json::Value) {
        for (n, c) in &mut self.channels {
            if let Some(s) = state.get(*n) {
                c.load(s);
            }
        }
    }
}

/// Who hears about which alerts.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    /// Service names; `*` at the end matches a prefix; empty = every service.
    #[serde(default)]
    pub services: Vec<String>,
    /// `P1`..`P4`; empty = every priority.
    #[serde(default)]
    pub priorities: Vec<String>,
    pub to: Vec<String>,
}

impl Route {
    fn matches(&self, a: &Alert) -> bool {
        route_matches(&self.services, &self.priorities, a)
    }
}

/// A route's filter: the alert touches one of `services` (empty = any) at one of
/// `priorities` (empty = any). Shared by email and webhook routes.
pub(crate) fn route_matches(services: &[String], priorities: &[String], a: &Alert) -> bool {
    let service_ok = services.is_empty()
        || services.iter().any(|p| {
            let names = std::iter::once(&a.service).chain(a.services.iter());
            names.into_iter().any(|s| match p.strip_suffix('*') {
                Some(prefix) => s.starts_with(prefix),
                None => s == p || s.split('/').next() == Some(p.as_str()),
            })
        });
    let prio_ok = priorities.is_empty() || priorities.iter().any(|p| p.eq_ignore_ascii_case(&a.priority));
    service_ok && prio_ok
}

/// Recipients of an alert: every matching route's, deduplicated, in route order.
pub fn recipients(routes: &[Route], a: &Alert) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for r in routes.iter().filter(|r| r.matches(a)) {
        for to in &r.to {
            if !out.contains(to) {
                out.push(to.clone());
            }
        }
    }
    out
}

/// What kind of message an alert change calls for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MessageKind {
    Opened,
    StillOpen,
    Resolved,
}

/// What was last told about one alert.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Told {
    pub status: String,
    pub notifications: u32,
    /// Wall-clock ms of the last message.
    pub at: i64,
    pub priority: String,
}

/// The shared decision: given an alert change and what was told before, is a message due?
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Throttle {
    pub told: BTreeMap<String, Told>,
    /// Wall-clock ms of messages in the last hour.
    pub recent: Vec<i64>,
    #[serde(skip)]
    pub min_interval_ms: i64,
    #[serde(skip)]
    pub max_per_hour: usize,
    pub suppressed: u64,
    /// Open-alert messages not sent because the alert was silenced, or acknowledged.
    #[serde(default)]
    pub silenced: u64,
    #[serde(default)]
    pub acknowledged: u64,
}

impl Throttle {
    pub fn new(min_interval_ms: i64, max_per_hour: usize) -> Self {
        Throttle {
            min_interval_ms,
            max_per_hour,
            ..Default::default()
        }
    }

    /// Decides for one alert change at wall time `now`; records the message if one is due.
    pub fn decide(&mut self, a: &Alert, now: i64) -> Option<MessageKind> {
        self.recent.retain(|t| now - t < 3_600_000);
        // Feedback: a silenced alert goes to no channel while open, an acknowledged one is not
        // repeated; either's resolution still goes to whoever was told it opened.
        if a.status == AlertStatus::Open {
            if a.silenced_by.is_some() {
                self.silenced += 1;
                return None;
            }
            if a.acknowledged_by.is_some() && self.told.get(&a.id).is_some_and(|p| p.status == "open") {
                self.acknowledged += 1;
                return None;
            }
        }
        let prev = self.told.get(&a.id);
        let kind = match (a.status, prev) {
            (AlertStatus::Open, None) => MessageKind::Opened,
            (AlertStatus::Open, Some(p)) if p.status == "resolved" => MessageKind::Opened,
            (AlertStatus::Open, Some(p)) if a.notifications > p.notifications && now - p.at >= self.min_interval_ms => {
                MessageKind::StillOpen
            }
            (AlertStatus::Resolved, Some(p)) if p.status == "open" => MessageKind::Resolved,
            _ => return None,
        };
        // Resolutions always go out (they close a thread someone is watching); the hourly cap
        // holds back only new and repeated alarms, lowest priority first by the caller's order.
        if kind != MessageKind::Resolved && self.recent.len() >= self.max_per_hour {
            self.suppressed += 1;
            return None;
        }
        self.recent.push(now);
        self.told.insert(
            a.id.clone(),
            Told {
                status: if a.status == AlertStatus::Open { "open" } else { "resolved" }.into(),
                notifications: a.notifications,
                at: now,
                priority: a.priority.clone(),
            },
        );
        // Forget resolved alerts after a week.
        self.told.retain(|_, t| t.status == "open" || now - t.at < 7 * 86_400_000);
        Some(kind)
    }
}

/// Recent anomalies by id (bounded), so a message can show an alert's strongest evidence.
#[derive(Default)]
pub struct Evidence {
    by_id: rustc_hash::FxHashMap<String, Anomaly>,
    order: std::collections::VecDeque<String>,
}

impl Evidence {
    const REMEMBERED: usize = 20_000;

    pub fn remember(&mut self, anomalies: &[Anomaly]) {
        for a in anomalies {
            if self.by_id.insert(a.id.clone(), a.clone()).is_none() {
                self.order.push_back(a.id.clone());
            }
        }
        while self.order.len() > Self::REMEMBERED {
            if let Some(old) = self.order.pop_front() {
                self.by_id.remove(&old);
            }
        }
    }

    /// The alert's `n` highest-scoring anomalies still remembered.
    pub fn strongest(&self, a: &Alert, n: usize) -> Vec<&Anomaly> {
        let mut v: Vec<&Anomaly> = a.anomaly_ids.iter().filter_map(|id| self.by_id.get(id)).collect();
        v.sort_by(|x, y| y.score.total_cmp(&x.score).then_with(|| x.id.cmp(&y.id)));
        v.truncate(n);
        v
    }
}

impl Throttle {
    /// Takes back what was told from a checkpoint, keeping the configured limits.
    pub fn restore(&mut self, state: &serde_json::Value) {
        if let Ok(t) = serde_json::from_value::<Throttle>(state.clone()) {
            let (min, max) = (self.min_interval_ms, self.max_per_hour);
            *self = t;
            self.min_interval_ms = min;
            self.max_per_hour = max;
        }
    }
}

/// Sorts alert changes so the most urgent are decided (and sent) first.
pub fn by_urgency(alerts: &[Alert]) -> Vec<&Alert> {
    let mut v: Vec<&Alert> = alerts.iter().collect();
    v.sort_by(|a, b| (&a.priority, a.timestamp, &a.id).cmp(&(&b.priority, b.timestamp, &b.id)));
    v
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn alert(id: &str, service: &str, prio: &str, status: AlertStatus, notifications: u32) -> Alert {
        Alert {
            timestamp: 1_000,
            id: id.into(),
            status,
            priority: prio.into(),
            start: 0,
            end: None,
            service: service.into(),
            provider: "aws".into(),
            route: None,
            services: vec![format!("{service}/aws")],
            suspects: vec![],
            kinds: vec![],
            predicted: false,
            eta: None,
            title: "t".into(),
            summary: "s".into(),
            anomaly_ids: vec![],
            notifications,
            impact_calls: 0,
            impact_users: 0,
            trace_ids: vec![],
            acknowledged_by: None,
            acknowledged_at: None,
            silenced_by: None,
            links: Default::default(),
        }
    }

    #[test]
    fn routes_match_by_service_and_priority() {
        let routes = vec![
            Route {
                services: vec!["pay*".into()],
                priorities: vec!["P1".into(), "P2".into()],
                to: vec!["payments@x".into()],
            },
            Route {
                services: vec![],
                priorities: vec!["P1".into()],
                to: vec!["oncall@x".into(), "payments@x".into()],
            },
        ];
        let a = alert("a", "payments", "P1", AlertStatus::Open, 1);
        assert_eq!(recipients(&routes, &a), vec!["payments@x", "oncall@x"]);
        let b = alert("b", "ledger", "P2", AlertStatus::Open, 1);
        assert!(recipients(&routes, &b).is_empty());
        let c = alert("c", "payments", "P3", AlertStatus::Open, 1);
        assert!(recipients(&routes, &c).is_empty());
    }

    #[test]
    fn one_message_per_change_that_matters() {
        let mut t = Throttle::new(900_000, 100);
        let open = alert("a", "s", "P2", AlertStatus::Open, 1);
        assert_eq!(t.decide(&open, 0), Some(MessageKind::Opened));
        assert_eq!(t.decide(&open, 10), None, "the same state is not told twice");
        let again = alert("a", "s", "P2", AlertStatus::Open, 2);
        assert_eq!(t.decide(&again, 60_000), None, "re-alert inside the throttle interval");
        assert_eq!(t.decide(&again, 1_000_000), Some(MessageKind::StillOpen));
        let resolved = alert("a", "s", "P2", AlertStatus::Resolved, 2);
        assert_eq!(t.decide(&resolved, 1_000_001), Some(MessageKind::Resolved));
        assert_eq!((t.silenced, t.acknowledged), (0, 0));
        assert_eq!(t.decide(&resolved, 1_000_002), None);
        // Never told about it: no resolution mail out of the blue.
        let unknown = alert("b", "s", "P2", AlertStatus::Resolved, 1);
        assert_eq!(t.decide(&unknown, 0), None);
    }

    #[test]
    fn an_acknowledged_alert_is_not_repeated_and_a_silenced_one_not_sent_but_resolutions_go() {
        let mut t = Throttle::new(0, 100);
        let open = alert("a", "s", "P2", AlertStatus::Open, 1);
        assert_eq!(t.decide(&open, 0), Some(MessageKind::Opened));
        let mut again = alert("a", "s", "P2", AlertStatus::Open, 2);
        again.acknowledged_by = Some("ana".into());
        assert_eq!(t.decide(&again, 1_000_000), None, "acknowledged: no re-alert");
        let mut resolved = alert("a", "s", "P2", AlertStatus::Resolved, 2);
        resolved.acknowledged_by = Some("ana".into());
        assert_eq!(t.decide(&resolved, 1_000_001), Some(MessageKind::Resolved));
        let mut quiet = alert("b", "s", "P1", AlertStatus::Open, 1);
        quiet.silenced_by = Some("silence-1".into());
        assert_eq!(t.decide(&quiet, 5), None, "silenced");
        // Never told it opened: its resolution is not sent either.
        assert_eq!(t.decide(&alert("b", "s", "P1", AlertStatus::Resolved, 1), 6), None);
        assert_eq!((t.silenced, t.acknowledged), (1, 1));
    }

    #[test]
    fn the_hourly_cap_holds_alarms_but_not_resolutions() {
        let mut t = Throttle::new(0, 2);
        for (i, id) in ["a", "b", "c"].iter().enumerate() {
            let d = t.decide(&alert(id, "s", "P3", AlertStatus::Open, 1), i as i64);
            assert_eq!(d.is_some(), i < 2);
        }
        assert_eq!(t.suppressed, 1);
        assert_eq!(
            t.decide(&alert("a", "s", "P3", AlertStatus::Resolved, 1), 5),
            Some(MessageKind::Resolved)
        );
        // An hour later the cap has room again.
        assert!(t.decide(&alert("c", "s", "P3", AlertStatus::Open, 1), 3_700_000).is_some());
    }

    #[test]
    fn urgent_first() {
        let v = [
            alert("x", "s", "P3", AlertStatus::Open, 1),
            alert("y", "s", "P1", AlertStatus::Open, 1),
        ];
        assert_eq!(by_urgency(&v)[0].id, "y");
    }
}
