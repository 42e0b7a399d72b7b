//! PagerDuty through its Events API v2: an alert opens an incident (`trigger`), a re-alert
//! updates it (`trigger` with the same dedup key, which PagerDuty folds into the incident),
//! and its resolution resolves it (`resolve`). The dedup key is derived from the alert id, so
//! a repeated delivery after a restart never opens a second incident. Routes pick an
//! integration's routing key by service and priority; a route without a key takes it from
//! `APIWATCH_PAGERDUTY_ROUTING_KEY`.

use std::time::Duration;

use serde::Deserialize;
use serde_json::{json, Value};

use super::dispatch::{post_json, Channel, Failure, Outgoing, Pacing};
use super::settings::{self, Section};
use crate::config::{invalid, ConfigError};

use super::render::{discover_link, render};
use super::{route_matches, Links, MessageKind};
use crate::model::time::format_rfc3339;
use crate::model::Alert;

/// The public endpoint of the Events API v2.
pub const EVENTS_URL: &str = "https://events.pagerduty.com/v2/enqueue";

/// One integration (routing key) and which alerts it hears about.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PagerDutyRoute {
    #[serde(default)]
    pub services: Vec<String>,
    #[serde(default)]
    pub priorities: Vec<String>,
    /// The integration key of a PagerDuty service (Events API v2).
    pub routing_key: String,
}

/// The `[pagerduty]` section, checked.
#[derive(Clone, Debug)]
pub struct PagerDutySettings {
    pub routes: Vec<PagerDutyRoute>,
    /// The Events API endpoint (a proxy or a test receiver may stand in for PagerDuty's).
    pub events_url: String,
    pub links: Links,
    pub timeout: Duration,
    pub pacing: Pacing,
}

/// What every apiwatch incident key starts with.
const DEDUP_PREFIX: &str = "apiwatch-";

/// Sends Events API v2 events, one per matching route.
pub struct PagerDutyChannel {
    settings: PagerDutySettings,
    agent: ureq::Agent,
}

impl PagerDutyChannel {
    pub fn new(settings: PagerDutySettings) -> anyhow::Result<Self> {
        let agent = crate::http::agent(settings.timeout, None)?;
        Ok(PagerDutyChannel { settings, agent })
    }

    /// The dedup key of an alert: the same alert is always the same incident.
    pub fn dedup_key(a: &Alert) -> String {
        format!("{DEDUP_PREFIX}{}", a.id)
    }

    /// The alert an incident key names, if apiwatch made it ([`Self::dedup_key`] inverted).
    pub fn alert_of_dedup_key(key: &str) -> Option<&str> {
        key.strip_prefix(DEDUP_PREFIX).filter(|id| !id.is_empty())
    }

    /// The event for one alert change.
    pub fn event(&self, msg: &Outgoing<'_>, routing_key: &str) -> Value {
        let a = msg.alert;
        let dedup_key = Self::dedup_key(a);
        if msg.kind == MessageKind::Resolved {
            return json!({"routing_key": routing_key, "event_action": "resolve", "dedup_key": dedup_key});
        }
        let links = &self.settings.links;
        let r = render(a, msg.kind, msg.evidence, links, "pagerduty");
        let severity = match a.priority.as_str() {
            "P1" => "critical",
            "P2" => "error",
            "P3" => "warning",
            _ => "info",
        };
        let evidence: Vec<&str> = msg.evidence.iter().map(|e| e.reason.as_str()).collect();
        let mut event = json!({
            "routing_key": routing_key,
            "event_action": "trigger",
            "dedup_key": dedup_key,
            "client": "apiwatch",
            "payload": {
                // PagerDuty cuts summaries at 1024 characters.
                "summary": r.subject.chars().take(1024).collect::<String>(),
                "source": format!("{}/{}", a.service, a.provider),
                "severity": severity,
                "timestamp": format_rfc3339(a.start),
                "component": a.service,
                "group": a.provider,
                "class": a.kinds.iter().map(|k| k.as_str()).collect::<Vec<_>>().join(","),
                "custom_details": {
                    "priority": a.priority,
                    "summary": a.summary,
                    "services": a.services,
                    "suspects": a.suspects,
                    "evidence": evidence,
                    "impact_calls": a.impact_calls,
                    "impact_users": a.impact_users,
                    "alert_id": a.id,
                },
            },
        });
        let mut hrefs: Vec<Value> = Vec::new();
        if let Some(k) = links.kibana_url.as_deref() {
            let link = discover_link(k, &links.anomalies_index, a);
            event["client_url"] = json!(link);
            hrefs.push(json!({"href": link, "text": "Evidence in Kibana"}));
        }
        hrefs.extend(r.actions.iter().map(|l| json!({"href": l.url, "text": l.label})));
        if !hrefs.is_empty() {
            event["links"] = Value::Array(hrefs);
        }
        event
    }

    fn routing_key<'a>(&self, route: &'a PagerDutyRoute) -> Result<std::borrow::Cow<'a, str>, Failure> {
        if !route.routing_key.is_empty() {
            return Ok(route.routing_key.as_str().into());
        }
        std::env::var("APIWATCH_PAGERDUTY_ROUTING_KEY")
            .ok()
            .filter(|k| !k.is_empty())
            .map(Into::into)
            .ok_or_else(|| Failure::Refused("a pagerduty route has no routing_key and APIWATCH_PAGERDUTY_ROUTING_KEY is not set".into()))
    }
}

impl Channel for PagerDutyChannel {
    fn destinations(&self, a: &Alert) -> Vec<usize> {
        let routes = &self.settings.routes;
        (0..routes.len())
            .filter(|&i| route_matches(&routes[i].services, &routes[i].priorities, a))
            .collect()
    }

    fn deliver(&mut self, msg: &Outgoing<'_>) -> Result<(), Failure> {
        let route = &self.settings.routes[msg.destination];
        let key = self.routing_key(route)?;
        // PagerDuty answers 429 when an integration sends too fast and 5xx when it is in
        // trouble; a 400 is an event it will never take (a bad key or field).
        post_json(&self.agent, &self.settings.events_url, &self.event(msg, &key))
    }
}

/// The `[pagerduty]` section as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPagerDuty {
    events_url: Option<String>,
    min_interval_secs: Option<u64>,
    max_per_hour: Option<usize>,
    max_attempts: Option<u32>,
    backoff_ms: Option<u64>,
    timeout_secs: Option<u64>,
    #[serde(default)]
    routes: Vec<PagerDutyRoute>,
}

/// Reads and checks the `[pagerduty]` section.
pub(crate) fn from_section(raw: RawPagerDuty, cx: &Section<'_>) -> Result<PagerDutySettings, ConfigError> {
    if raw.routes.is_empty() {
        return Err(invalid(
            cx.origin,
            "pagerduty.routes",
            "needs at least one [[pagerduty.routes]] (with a `routing_key`, or APIWATCH_PAGERDUTY_ROUTING_KEY set)",
        ));
    }
    settings::check_priorities(
        "pagerduty.routes.priorities",
        raw.routes.iter().flat_map(|r| &r.priorities),
        cx.origin,
    )?;
    let events_url = raw.events_url.unwrap_or_else(|| EVENTS_URL.to_owned());
    if !settings::is_http_url(&events_url) {
        return Err(invalid(cx.origin, "pagerduty.events_url", "must be an http:// or https:// URL"));
    }
    let pacing = settings::pacing(
        settings::RawPacing {
            // PagerDuty folds repeats into one incident: updates may come as often as alerts change.
            min_interval_secs: Some(raw.min_interval_secs.unwrap_or(300)),
            max_per_hour: raw.max_per_hour,
            max_attempts: raw.max_attempts,
            backoff_ms: raw.backoff_ms,
        },
        "pagerduty.max_attempts",
        4,
        500,
        cx.origin,
    )?;
    Ok(PagerDutySettings {
        routes: raw.routes,
        events_url,
        links: cx.links.clone(),
        timeout: Duration::from_secs(raw.timeout_secs.unwrap_or(10)),
        pacing,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::AlertStatus;
    use crate::notify::dispatch::Dispatcher;
    use crate::notify::tests::alert;
    use crate::notify::Notifier;
    use crate::test_http::receiver;

    fn dispatcher(events_url: String, routes: Vec<PagerDutyRoute>) -> Dispatcher {
        let pacing = Pacing {
            min_interval: Duration::from_secs(0),
            max_per_hour: 30,
            retry: crate::retry::RetryPolicy {
                max_attempts: 3,
                base_delay: Duration::from_millis(5),
                max_delay: Duration::from_millis(20),
            },
            outbox_limit: 100,
        };
        let settings = PagerDutySettings {
            routes,
            events_url,
            links: Links {
                kibana_url: Some("http://kibana:5601".into()),
                anomalies_index: "apiwatch-anomalies-*".into(),
                actions: None,
            },
            timeout: Duration::from_secs(5),
            pacing,
        };
        Dispatcher::new("pagerduty", Box::new(PagerDutyChannel::new(settings).unwrap()), pacing)
    }

    fn route(priorities: &[&str], key: &str) -> PagerDutyRoute {
        PagerDutyRoute {
            services: vec![],
            priorities: priorities.iter().map(|p| (*p).to_owned()).collect(),
            routing_key: key.into(),
        }
    }

    #[test]
    fn an_alert_triggers_updates_and_resolves_one_incident_by_its_dedup_key() {
        // The endpoint is busy once (429), then takes every event (202, as PagerDuty answers).
        let accepted = r#"{"status":"success","message":"Event processed","dedup_key":"x"}"#;
        let (url, got) = receiver(vec![(429, "{}"), (202, accepted), (202, accepted), (202, accepted)]);
        let mut d = dispatcher(
            format!("{url}/v2/enqueue"),
            vec![route(&["P1", "P2"], "key-oncall"), route(&["P4"], "key-low")],
        );
        let open = alert("a1", "payments", "P1", AlertStatus::Open, 1);
        assert_eq!(d.notify(std::slice::from_ref(&open)).unwrap(), 1);
        let again = alert("a1", "payments", "P1", AlertStatus::Open, 2);
        assert_eq!(d.notify(&[again]).unwrap(), 1);
        let resolved = alert("a1", "payments", "P1", AlertStatus::Resolved, 2);
        assert_eq!(d.notify(&[resolved]).unwrap(), 1);
        let got = got.join().unwrap();
        assert_eq!(got.len(), 4);
        assert_eq!(got[0].path(), "/v2/enqueue");
        assert_eq!(got[0].body, got[1].body, "the busy answer is retried with the same event");
        let (trigger, update, resolve) = (got[1].json(), got[2].json(), got[3].json());
        assert_eq!(trigger["event_action"], "trigger");
        assert_eq!(trigger["routing_key"], "key-oncall");
        assert_eq!(trigger["payload"]["severity"], "critical");
        assert_eq!(trigger["payload"]["source"], "payments/aws");
        assert!(
            trigger["links"][0]["href"].as_str().unwrap().starts_with("http://kibana:5601/"),
            "{trigger}"
        );
        assert_eq!(update["event_action"], "trigger");
        assert_eq!(resolve["event_action"], "resolve");
        for e in [&trigger, &update, &resolve] {
            assert_eq!(e["dedup_key"], "apiwatch-a1");
        }
    }

    #[test]
    fn a_refused_event_is_counted_and_not_retried_and_unrouted_alerts_send_nothing() {
        let (url, got) = receiver(vec![(400, r#"{"status":"invalid event","errors":["routing_key is invalid"]}"#)]);
        let mut d = dispatcher(url, vec![route(&["P1"], "bad-key")]);
        let p3 = alert("a3", "ledger", "P3", AlertStatus::Open, 1);
        let p1 = alert("a1", "payments", "P1", AlertStatus::Open, 1);
        assert_eq!(d.notify(&[p3, p1]).unwrap(), 0);
        assert_eq!((d.sent, d.failed, d.queued()), (0, 1, 0));
        assert_eq!(got.join().unwrap().len(), 1, "only the P1 alert was routed, and it was not retried");
    }
}
