//! Webhooks beside email: a generic JSON document (the alert as stored, its strongest evidence,
//! a Kibana link) or a Slack-compatible message (text + blocks, which Slack, Mattermost and
//! Teams' Slack-compatible hooks accept). Routes by service and priority like email; the same
//! throttle decides what is due. A delivery is retried with backoff on a transport error, 429
//! or 5xx; what still fails stays in the outbox for the next round, in order. A 4xx other than
//! 429 is a configuration problem: reported with the endpoint's answer, counted, not retried.

use std::time::Duration;

use serde::Deserialize;
use serde_json::{json, Value};

use super::dispatch::{post_json, Channel, Failure, Outgoing, Pacing};
use super::settings::{self, Section};
use crate::config::{invalid, ConfigError};

use super::render::{discover_link, render};
use super::{route_matches, Links, MessageKind};
use crate::model::{Alert, Anomaly};

/// Payload shape of one endpoint.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WebhookFormat {
    #[default]
    Json,
    Slack,
}

/// One endpoint and which alerts it hears about.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookRoute {
    #[serde(default)]
    pub services: Vec<String>,
    #[serde(default)]
    pub priorities: Vec<String>,
    pub url: String,
    #[serde(default)]
    pub format: WebhookFormat,
}

impl WebhookRoute {
    fn matches(&self, a: &Alert) -> bool {
        route_matches(&self.services, &self.priorities, a)
    }
}

#[derive(Clone, Debug)]
pub struct WebhookSettings {
    pub routes: Vec<WebhookRoute>,
    pub links: Links,
    pub timeout: Duration,
    pub pacing: Pacing,
}

/// Posts alert changes to the matching routes' endpoints, one delivery per route.
pub struct WebhookChannel {
    settings: WebhookSettings,
    agent: ureq::Agent,
}

impl WebhookChannel {
    pub fn new(settings: WebhookSettings) -> anyhow::Result<Self> {
        let agent = crate::http::agent(settings.timeout, None)?;
        Ok(WebhookChannel { agent, settings })
    }

    /// The document sent for one alert change.
    pub fn payload(&self, a: &Alert, kind: MessageKind, evidence: &[&Anomaly], format: WebhookFormat) -> Value {
        let links = &self.settings.links;
        let via = match format {
            WebhookFormat::Json => "webhook",
            WebhookFormat::Slack => "slack",
        };
        let r = render(a, kind, evidence, links, via);
        let link = links.kibana_url.as_deref().map(|k| discover_link(k, &links.anomalies_index, a));
        let event = match kind {
            MessageKind::Opened => "opened",
            MessageKind::StillOpen => "still_open",
            MessageKind::Resolved => "resolved",
        };
        match format {
            WebhookFormat::Json => json!({
                "event": event,
                "title": r.subject,
                "text": r.text,
                "alert": a,
                "evidence": evidence,
                "kibana": link,
                "actions": r.actions,
            }),
            WebhookFormat::Slack => {
                let icon = match (kind, a.priority.as_str()) {
                    (MessageKind::Resolved, _) => ":white_check_mark:",
                    (_, "P1") => ":rotating_light:",
                    (_, "P2") => ":warning:",
                    _ => ":information_source:",
                };
                let mut blocks = vec![
                    json!({"type": "header", "text": {"type": "plain_text", "text": r.subject.chars().take(150).collect::<String>()}}),
                    json!({"type": "section", "text": {"type": "mrkdwn", "text": format!("{icon} *{}* {}\n{}", a.priority, slack_escape(&a.title), slack_escape(&a.summary))}}),
                ];
                let reasons: Vec<String> = evidence.iter().take(3).map(|e| format!("• {}", slack_escape(&e.reason))).collect();
                if !reasons.is_empty() {
                    blocks.push(json!({"type": "section", "text": {"type": "mrkdwn", "text": reasons.join("\n")}}));
                }
                blocks.push(json!({"type": "context", "elements": [{"type": "mrkdwn", "text": format!("services: {} · {} calls, {} users affected · alert {}", a.services.join(", "), a.impact_calls, a.impact_users, a.id)}]}));
                let mut buttons: Vec<Value> = link
                    .iter()
                    .map(|l| json!({"type": "button", "text": {"type": "plain_text", "text": "Open in Kibana"}, "url": l}))
                    .collect();
                buttons.extend(
                    r.actions
                        .iter()
                        .map(|l| json!({"type": "button", "text": {"type": "plain_text", "text": l.label}, "url": l.url})),
                );
                if !buttons.is_empty() {
                    blocks.push(json!({"type": "actions", "elements": buttons}));
                }
                json!({"text": r.subject, "blocks": blocks})
            }
        }
    }
}

/// Slack's mrkdwn treats `&`, `<` and `>` as markup.
fn slack_escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

impl Channel for WebhookChannel {
    fn destinations(&self, a: &Alert) -> Vec<usize> {
        (0..self.settings.routes.len())
            .filter(|&i| self.settings.routes[i].matches(a))
            .collect()
    }

    fn deliver(&mut self, msg: &Outgoing<'_>) -> Result<(), Failure> {
        let route = &self.settings.routes[msg.destination];
        let body = self.payload(msg.alert, msg.kind, msg.evidence, route.format);
        post_json(&self.agent, &route.url, &body)
    }
}

/// The `[webhook]` section as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawWebhook {
    min_interval_secs: Option<u64>,
    max_per_hour: Option<usize>,
    max_attempts: Option<u32>,
    backoff_ms: Option<u64>,
    timeout_secs: Option<u64>,
    #[serde(default)]
    routes: Vec<WebhookRoute>,
}

/// Reads and checks the `[webhook]` section.
pub(crate) fn from_section(raw: RawWebhook, cx: &Section<'_>) -> Result<WebhookSettings, ConfigError> {
    if raw.routes.is_empty() {
        return Err(invalid(
            cx.origin,
            "webhook.routes",
            "needs at least one [[webhook.routes]] with a `url`",
        ));
    }
    if raw.routes.iter().any(|r| !settings::is_http_url(&r.url)) {
        return Err(invalid(cx.origin, "webhook.routes.url", "must be an http:// or https:// URL"));
    }
    settings::check_priorities(
        "webhook.routes.priorities",
        raw.routes.iter().flat_map(|r| &r.priorities),
        cx.origin,
    )?;
    let pacing = settings::pacing(
        settings::RawPacing {
            min_interval_secs: raw.min_interval_secs,
            max_per_hour: raw.max_per_hour,
            max_attempts: raw.max_attempts,
            backoff_ms: raw.backoff_ms,
        },
        "webhook.max_attempts",
        4,
        500,
        cx.origin,
    )?;
    Ok(WebhookSettings {
        routes: raw.routes,
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

    fn settings(routes: Vec<WebhookRoute>, max_attempts: u32) -> WebhookSettings {
        WebhookSettings {
            routes,
            links: Links {
                kibana_url: Some("http://kibana:5601".into()),
                anomalies_index: "apiwatch-anomalies-*".into(),
                actions: None,
            },
            timeout: Duration::from_secs(5),
            pacing: Pacing {
                min_interval: Duration::from_secs(900),
                max_per_hour: 30,
                retry: crate::retry::RetryPolicy {
                    max_attempts,
                    base_delay: Duration::from_millis(10),
                    max_delay: Duration::from_millis(40),
                },
                outbox_limit: 500,
            },
        }
    }

    fn dispatcher(settings: WebhookSettings) -> Dispatcher {
        let pacing = settings.pacing;
        Dispatcher::new("webhook", Box::new(WebhookChannel::new(settings).unwrap()), pacing)
    }

    #[test]
    fn routes_by_priority_in_each_endpoints_format_and_retries_a_failing_endpoint() {
        // Slack hears P1 only; the JSON endpoint hears everything. The JSON endpoint fails
        // once with 503, then accepts: delivered on the second try.
        let (slack, slack_h) = receiver(vec![(200, "ok")]);
        let (generic, generic_h) = receiver(vec![(503, "busy"), (200, "{}"), (200, "{}")]);
        let mut n = dispatcher(settings(
            vec![
                WebhookRoute {
                    services: vec![],
                    priorities: vec!["P1".into()],
                    url: format!("{slack}/hooks/T0/B0/x"),
                    format: WebhookFormat::Slack,
                },
                WebhookRoute {
                    services: vec![],
                    priorities: vec![],
                    url: format!("{generic}/apiwatch"),
                    format: WebhookFormat::Json,
                },
            ],
            3,
        ));
        let p1 = alert("a1", "payments", "P1", AlertStatus::Open, 1);
        let p3 = alert("a3", "ledger", "P3", AlertStatus::Open, 1);
        assert_eq!(n.notify(&[p3, p1]).unwrap(), 3);
        let slack_got = slack_h.join().unwrap();
        assert_eq!(slack_got[0].path(), "/hooks/T0/B0/x");
        let s = slack_got[0].json();
        assert!(s["text"].as_str().unwrap().contains("P1"), "{s}");
        assert_eq!(s["blocks"][0]["type"], "header");
        assert!(s["blocks"].as_array().unwrap().iter().any(|b| b["type"] == "actions"));
        let generic_got = generic_h.join().unwrap();
        assert_eq!(generic_got.len(), 3);
        // Most urgent first, and the retried delivery is the same document.
        assert_eq!(generic_got[0].body, generic_got[1].body);
        let first = generic_got[1].json();
        assert_eq!(
            (first["event"].as_str(), first["alert"]["alert.id"].as_str()),
            (Some("opened"), Some("a1"))
        );
        assert_eq!(generic_got[2].json()["alert"]["alert.priority"], "P3");
        assert_eq!(n.sent, 3);
    }

    #[test]
    fn an_endpoint_that_stays_down_keeps_the_delivery_for_the_next_round_and_a_refusal_is_not_retried() {
        let (down, down_h) = receiver(vec![(500, "x"), (500, "x"), (200, "{}")]);
        let mut n = dispatcher(settings(
            vec![WebhookRoute {
                services: vec![],
                priorities: vec![],
                url: down.clone(),
                format: WebhookFormat::Json,
            }],
            2,
        ));
        let a = alert("a1", "payments", "P2", AlertStatus::Open, 1);
        let err = n.notify(std::slice::from_ref(&a)).unwrap_err().to_string();
        assert!(err.contains("HTTP 500") && err.contains("1 kept"), "{err}");
        // Next round: nothing new, the kept delivery goes out.
        assert_eq!(n.notify(&[]).unwrap(), 1);
        assert_eq!(down_h.join().unwrap().len(), 3);

        let (bad, bad_h) = receiver(vec![(400, "invalid_payload")]);
        let mut n = dispatcher(settings(
            vec![WebhookRoute {
                services: vec![],
                priorities: vec![],
                url: bad,
                format: WebhookFormat::Slack,
            }],
            3,
        ));
        assert_eq!(n.notify(&[a]).unwrap(), 0);
        assert_eq!(n.failed, 1);
        assert_eq!(bad_h.join().unwrap().len(), 1);
    }
}
