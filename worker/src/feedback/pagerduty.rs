//! Acknowledgements made in PagerDuty, flowing back: a PagerDuty v3 webhook subscription posts
//! `incident.acknowledged` and `incident.resolved` events to the worker (`POST /hooks/pagerduty`,
//! [`crate::serve`]). An incident a person resolved by hand is answered as acknowledged too
//! (seen and handled: not notified again), with a note that says so; apiwatch's alert itself
//! still resolves on its evidence, and that resolution is still sent. A resolution PagerDuty
//! or an integration made (apiwatch's own resolve event among them) is nothing to record.
//! Each request is signed: `X-PagerDuty-Signature: v1=<hex HMAC-SHA256 of the raw body>`, with
//! several comma-separated signatures while PagerDuty rotates the subscription's secret. An
//! incident apiwatch opened carries the alert in its key (`apiwatch-<alert id>`, the dedup key
//! [`crate::notify::pagerduty::PagerDutyChannel::dedup_key`] sends), so the acknowledgement
//! becomes the same record `apiwatch ack` writes, by `pagerduty (<who>)`, with an id from
//! PagerDuty's event id: a redelivered event writes nothing twice.

use hmac::Mac;
use serde_json::Value;

use super::link::SigningKey;

use crate::model::time::{parse_rfc3339, Millis};

/// The webhook subscription's signing secret (`APIWATCH_PAGERDUTY_WEBHOOK_SECRET`); never shown.
#[derive(Clone, Debug)]
pub struct WebhookSecret(SigningKey);

impl WebhookSecret {
    pub fn new(secret: &str) -> Result<Self, String> {
        if secret.trim().is_empty() {
            return Err(
                "APIWATCH_PAGERDUTY_WEBHOOK_SECRET is empty: set it to the secret PagerDuty showed when the webhook subscription was made"
                    .into(),
            );
        }
        Ok(WebhookSecret(SigningKey::new(secret)))
    }
}

/// Why a webhook request was refused.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum HookRefusal {
    #[error("no X-PagerDuty-Signature header with a v1= signature")]
    Unsigned,
    #[error("no v1 signature matches this body with the configured secret (another subscription's secret, or an altered body)")]
    BadSignature,
    #[error("the body is not a PagerDuty v3 webhook event: {0}")]
    Malformed(String),
}

/// Checks the signature header against the raw body (constant-time per signature).
pub fn verify(secret: &WebhookSecret, body: &[u8], header: Option<&str>) -> Result<(), HookRefusal> {
    let sigs: Vec<Vec<u8>> = header
        .unwrap_or_default()
        .split(',')
        .filter_map(|s| s.trim().strip_prefix("v1="))
        .filter_map(|h| hex::decode(h).ok())
        .collect();
    if sigs.is_empty() {
        return Err(HookRefusal::Unsigned);
    }
    let mac = || {
        let mut m = secret.0.mac();
        m.update(body);
        m
    };
    if sigs.iter().any(|s| mac().verify_slice(s).is_ok()) {
        Ok(())
    } else {
        Err(HookRefusal::BadSignature)
    }
}

/// What an event asks of apiwatch.
#[derive(Debug, PartialEq)]
pub enum HookEvent {
    /// An apiwatch incident was acknowledged, or resolved by a person.
    Acknowledged {
        alert_id: String,
        /// PagerDuty's event id (one record per event, however often it is delivered).
        event_id: String,
        /// Who acknowledged it, as PagerDuty names them.
        by: String,
        at: Option<Millis>,
        /// The incident's number and URL, for the record's note.
        incident: String,
        /// Resolved by hand rather than acknowledged.
        resolved: bool,
    },
    /// Nothing for apiwatch (another event type, or an incident apiwatch did not open).
    Ignored(String),
}

/// Reads one webhook body.
pub fn parse(body: &[u8]) -> Result<HookEvent, HookRefusal> {
    let v: Value = serde_json::from_slice(body).map_err(|e| HookRefusal::Malformed(e.to_string()))?;
    let event = v.get("event").ok_or_else(|| HookRefusal::Malformed("no `event` object".into()))?;
    let kind = event["event_type"]
        .as_str()
        .ok_or_else(|| HookRefusal::Malformed("no `event.event_type`".into()))?;
    let resolved = match kind {
        "incident.acknowledged" => false,
        "incident.resolved" => true,
        _ => return Ok(HookEvent::Ignored(format!("event type {kind}"))),
    };
    let agent = &event["agent"];
    if resolved && agent["type"].as_str() != Some("user_reference") {
        // apiwatch's own resolve event comes back this way, as does an auto-resolution.
        return Ok(HookEvent::Ignored(
            "an incident resolved by PagerDuty or an integration, not by a person".into(),
        ));
    }
    let data = &event["data"];
    let key = data["incident_key"].as_str().unwrap_or_default();
    let Some(alert_id) = crate::notify::pagerduty::PagerDutyChannel::alert_of_dedup_key(key) else {
        return Ok(HookEvent::Ignored(format!("incident key `{key}` is not an apiwatch alert's")));
    };
    let event_id = event["id"]
        .as_str()
        .filter(|s| !s.is_empty())
        .ok_or_else(|| HookRefusal::Malformed("no `event.id`".into()))?;
    let by = agent["summary"]
        .as_str()
        .or_else(|| agent["name"].as_str())
        .or_else(|| agent["id"].as_str())
        .unwrap_or("someone");
    let number = data["number"].as_u64().map(|n| format!("#{n}")).unwrap_or_default();
    let url = data["html_url"].as_str().unwrap_or_default();
    Ok(HookEvent::Acknowledged {
        alert_id: alert_id.to_owned(),
        event_id: event_id.to_owned(),
        by: format!("pagerduty ({by})"),
        at: event["occurred_at"].as_str().and_then(parse_rfc3339),
        incident: format!("incident {number} {url}").split_whitespace().collect::<Vec<_>>().join(" "),
        resolved,
    })
}

#[cfg(test)]
mod tests {
    use hmac::Hmac;
    use sha2::Sha256;

    use super::*;

    const SECRET: &str = "whsec-apiwatch-test";

    fn sign(body: &[u8], secret: &str) -> String {
        let mut m = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
        m.update(body);
        format!("v1={}", hex::encode(m.finalize().into_bytes()))
    }

    fn ack_body(key: &str) -> Vec<u8> {
        event_body(key, "incident.acknowledged", "user_reference")
    }

    fn event_body(key: &str, kind: &str, agent: &str) -> Vec<u8> {
        serde_json::json!({"event": {
            "id": "01DRF6BV78DEFGHIJK56789", "event_type": kind, "resource_type": "incident",
            "occurred_at": "2026-03-02T10:31:30Z",
            "agent": {"id": "P123ABC", "summary": "Dana Ops", "type": agent},
            "data": {"id": "Q2KURS8", "type": "incident", "number": 42, "status": "acknowledged",
                     "html_url": "https://acme.pagerduty.com/incidents/Q2KURS8", "incident_key": key}
        }})
        .to_string()
        .into_bytes()
    }

    #[test]
    fn only_a_body_signed_with_the_secret_passes_and_rotation_signatures_are_tried_in_turn() {
        let secret = WebhookSecret::new(SECRET).unwrap();
        let body = ack_body("apiwatch-a-1");
        assert_eq!(verify(&secret, &body, Some(&sign(&body, SECRET))), Ok(()));
        let rotating = format!("{}, {}", sign(&body, "the-old-secret"), sign(&body, SECRET));
        assert_eq!(verify(&secret, &body, Some(&rotating)), Ok(()));
        assert_eq!(
            verify(&secret, &body, Some(&sign(&body, "another"))),
            Err(HookRefusal::BadSignature)
        );
        let mut altered = body.clone();
        altered[10] ^= 1;
        assert_eq!(
            verify(&secret, &altered, Some(&sign(&body, SECRET))),
            Err(HookRefusal::BadSignature)
        );
        assert_eq!(verify(&secret, &body, None), Err(HookRefusal::Unsigned));
        assert_eq!(verify(&secret, &body, Some("v0=abc")), Err(HookRefusal::Unsigned));
        assert!(!format!("{secret:?}").contains(SECRET));
        assert!(WebhookSecret::new(" ").is_err());
    }

    #[test]
    fn an_apiwatch_incidents_acknowledgement_names_the_alert_and_who_and_the_rest_is_ignored() {
        match parse(&ack_body("apiwatch-a-1")).unwrap() {
            HookEvent::Acknowledged {
                alert_id,
                event_id,
                by,
                at,
                incident,
                resolved,
            } => {
                assert!(!resolved);
                assert_eq!(alert_id, "a-1");
                assert_eq!(event_id, "01DRF6BV78DEFGHIJK56789");
                assert_eq!(by, "pagerduty (Dana Ops)");
                assert_eq!(at, parse_rfc3339("2026-03-02T10:31:30Z"));
                assert_eq!(incident, "incident #42 https://acme.pagerduty.com/incidents/Q2KURS8");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(parse(&ack_body("another-tools-key")).unwrap(), HookEvent::Ignored(_)));
        let reassigned = br#"{"event": {"id": "x", "event_type": "incident.reassigned", "data": {}}}"#;
        assert!(matches!(parse(reassigned).unwrap(), HookEvent::Ignored(w) if w.contains("incident.reassigned")));
        // Resolved by a person: answered as acknowledged; by PagerDuty or an integration
        // (apiwatch's own resolve event coming back): nothing to record.
        let by_hand = parse(&event_body("apiwatch-a-1", "incident.resolved", "user_reference")).unwrap();
        assert!(matches!(by_hand, HookEvent::Acknowledged { resolved: true, ref alert_id, .. } if alert_id == "a-1"));
        for agent in ["service_reference", "integration_reference"] {
            let auto = parse(&event_body("apiwatch-a-1", "incident.resolved", agent)).unwrap();
            assert!(
                matches!(auto, HookEvent::Ignored(ref w) if w.contains("not by a person")),
                "{auto:?}"
            );
        }
        assert!(matches!(parse(b"{}"), Err(HookRefusal::Malformed(_))));
        assert!(matches!(parse(b"not json"), Err(HookRefusal::Malformed(_))));
    }
}
