//! Signed action links: the "Acknowledge", "Silence 1 h" and "Not a problem" links a message
//! carries to the worker's URL (`[http] public_url`). Each link allows one action on one alert
//! until it expires: its query holds the channel it was sent by, its expiry and an HMAC-SHA256
//! over all of these with a secret from `APIWATCH_LINK_SECRET`. Changing any part (another
//! alert, another action, a later expiry) breaks the signature. After a rotation the previous
//! secret (`APIWATCH_LINK_SECRET_PREVIOUS`) still verifies the links it signed until they expire.
//! The secret is never printed:
//! [`SigningKey`]'s `Debug` hides it, and refusals say why without echoing the signature.

use std::fmt;
use std::sync::Arc;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::model::time::{format_rfc3339, Millis, HOUR_MS};

/// How long a silence made by a link lasts.
pub const LINK_SILENCE: Millis = HOUR_MS;
/// The shortest secret accepted (bytes): shorter ones are guessable.
pub const MIN_SECRET_LEN: usize = 16;
/// Default lifetime of a link.
pub const DEFAULT_TTL: Millis = 24 * HOUR_MS;

/// What a link does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkAction {
    Ack,
    Silence,
    NotAProblem,
}

impl LinkAction {
    pub const ALL: [LinkAction; 3] = [LinkAction::Ack, LinkAction::Silence, LinkAction::NotAProblem];

    /// The path segment.
    pub fn as_str(self) -> &'static str {
        match self {
            LinkAction::Ack => "ack",
            LinkAction::Silence => "silence",
            LinkAction::NotAProblem => "not-a-problem",
        }
    }

    /// What the message shows.
    pub fn label(self) -> &'static str {
        match self {
            LinkAction::Ack => "Acknowledge",
            LinkAction::Silence => "Silence 1 h",
            LinkAction::NotAProblem => "Not a problem",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.as_str() == s)
    }
}

/// A secret that signs with HMAC-SHA256 (answering links, PagerDuty's webhooks); never shown.
#[derive(Clone)]
pub struct SigningKey(Arc<[u8]>);

impl SigningKey {
    pub fn new(secret: &str) -> Self {
        SigningKey(secret.as_bytes().into())
    }

    /// A MAC keyed with this secret, ready for the signed bytes.
    pub fn mac(&self) -> Hmac<Sha256> {
        Hmac::<Sha256>::new_from_slice(&self.0).unwrap_or_else(|_| unreachable!("HMAC takes any key length"))
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SigningKey(<hidden>)")
    }
}

/// Why a link was refused.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum LinkRefusal {
    #[error("this link is incomplete ({0}): open it from the message again")]
    Malformed(&'static str),
    #[error("this link was not signed by this apiwatch for this alert and action (altered, forged, or signed with another secret)")]
    Forged,
    #[error("this link expired at {0}: answer the alert with `apiwatch ack`, `silence` or `feedback`, or from Kibana")]
    Expired(String),
}

/// One link in a message.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct ActionLink {
    pub action: &'static str,
    pub label: &'static str,
    pub url: String,
}

/// Makes and checks links (`[http] public_url`, `link_ttl_secs`, `APIWATCH_LINK_SECRET`).
#[derive(Clone, Debug)]
pub struct ActionLinks {
    /// The worker's URL as people reach it, without a trailing `/`.
    pub public_url: String,
    key: SigningKey,
    /// The secret before a rotation: links it signed still verify; new ones use `key`.
    previous: Option<SigningKey>,
    pub ttl: Millis,
}

/// A link's query: the channel it came by, its expiry (Unix seconds) and its signature (hex).
#[derive(Clone, Debug, Default, serde::Deserialize)]
pub struct LinkQuery {
    pub via: Option<String>,
    pub exp: Option<i64>,
    pub sig: Option<String>,
}

impl ActionLinks {
    /// `secret` of at least [`MIN_SECRET_LEN`] bytes; `ttl` above zero.
    pub fn new(public_url: &str, secret: &str, ttl: Millis) -> Result<Self, String> {
        if secret.len() < MIN_SECRET_LEN {
            return Err(format!(
                "APIWATCH_LINK_SECRET must be at least {MIN_SECRET_LEN} bytes (it is {}): make one with `openssl rand -hex 32`",
                secret.len()
            ));
        }
        if ttl <= 0 {
            return Err("a link's lifetime must be more than zero".to_owned());
        }
        Ok(ActionLinks {
            public_url: public_url.trim_end_matches('/').to_owned(),
            key: SigningKey::new(secret),
            previous: None,
            ttl,
        })
    }

    /// Also accepts links signed with `previous` (the secret before a rotation) until they
    /// expire; nothing new is signed with it.
    pub fn with_previous(mut self, previous: &str) -> Result<Self, String> {
        if previous.len() < MIN_SECRET_LEN {
            return Err(format!("APIWATCH_LINK_SECRET_PREVIOUS must be at least {MIN_SECRET_LEN} bytes too"));
        }
        self.previous = Some(SigningKey::new(previous));
        Ok(self)
    }

    fn mac(&self, action: LinkAction, alert_id: &str, via: &str, exp: i64) -> Hmac<Sha256> {
        Self::mac_with(&self.key, action, alert_id, via, exp)
    }

    fn mac_with(key: &SigningKey, action: LinkAction, alert_id: &str, via: &str, exp: i64) -> Hmac<Sha256> {
        // Lengths first, so that no two different tuples sign the same bytes.
        let mut m = key.mac();
        for part in ["apiwatch-link-v1", action.as_str(), alert_id, via, &exp.to_string()] {
            m.update(&(part.len() as u64).to_be_bytes());
            m.update(part.as_bytes());
        }
        m
    }

    /// The link for `action` on `alert_id`, sent by channel `via`, made at wall time `now`.
    pub fn link(&self, action: LinkAction, alert_id: &str, via: &str, now: Millis) -> ActionLink {
        let exp = (now + self.ttl).div_euclid(1000);
        let sig = hex::encode(self.mac(action, alert_id, via, exp).finalize().into_bytes());
        let enc = crate::http::url_encode;
        ActionLink {
            action: action.as_str(),
            label: action.label(),
            url: format!(
                "{}/act/{}/{}?via={}&exp={exp}&sig={sig}",
                self.public_url,
                action.as_str(),
                enc(alert_id),
                enc(via)
            ),
        }
    }

    /// Every action's link for one alert.
    pub fn all(&self, alert_id: &str, via: &str, now: Millis) -> Vec<ActionLink> {
        LinkAction::ALL.iter().map(|&a| self.link(a, alert_id, via, now)).collect()
    }

    /// Checks a followed link at wall time `now`; the signature is checked first (in constant
    /// time), so a forged link is called forged whatever its expiry says.
    pub fn verify(&self, action: LinkAction, alert_id: &str, q: &LinkQuery, now: Millis) -> Result<(), LinkRefusal> {
        let via = q.via.as_deref().ok_or(LinkRefusal::Malformed("no via"))?;
        let exp = q.exp.ok_or(LinkRefusal::Malformed("no exp"))?;
        let sig = q.sig.as_deref().ok_or(LinkRefusal::Malformed("no sig"))?;
        let sig = hex::decode(sig).map_err(|_| LinkRefusal::Malformed("sig is not hex"))?;
        let signed_by = |key: &SigningKey| Self::mac_with(key, action, alert_id, via, exp).verify_slice(&sig).is_ok();
        if !(signed_by(&self.key) || self.previous.as_ref().is_some_and(signed_by)) {
            return Err(LinkRefusal::Forged);
        }
        if exp.saturating_mul(1000) <= now {
            return Err(LinkRefusal::Expired(format_rfc3339(exp.saturating_mul(1000))));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "0123456789abcdef-test-secret";

    fn query(url: &str) -> LinkQuery {
        let q = url.split_once('?').map(|(_, q)| q).unwrap_or_default();
        let get = |k: &str| q.split('&').find_map(|kv| kv.strip_prefix(&format!("{k}="))).map(str::to_owned);
        LinkQuery {
            via: get("via"),
            exp: get("exp").and_then(|e| e.parse().ok()),
            sig: get("sig"),
        }
    }

    #[test]
    fn a_link_allows_its_action_on_its_alert_until_it_expires_and_nothing_else() {
        let links = ActionLinks::new("https://apiwatch.example/", SECRET, HOUR_MS).unwrap();
        let now = 1_700_000_000_000;
        let l = links.link(LinkAction::Ack, "alert-1", "email", now);
        assert!(
            l.url.starts_with("https://apiwatch.example/act/ack/alert-1?via=email&exp="),
            "{}",
            l.url
        );
        let q = query(&l.url);
        assert_eq!(links.verify(LinkAction::Ack, "alert-1", &q, now + 1000), Ok(()));
        // Replayed for another alert, or for another action.
        assert_eq!(links.verify(LinkAction::Ack, "alert-2", &q, now), Err(LinkRefusal::Forged));
        assert_eq!(links.verify(LinkAction::NotAProblem, "alert-1", &q, now), Err(LinkRefusal::Forged));
        // A later expiry or another channel breaks the signature.
        let mut later = q.clone();
        later.exp = later.exp.map(|e| e + 3600);
        assert_eq!(links.verify(LinkAction::Ack, "alert-1", &later, now), Err(LinkRefusal::Forged));
        let mut other = q.clone();
        other.via = Some("webhook".into());
        assert_eq!(links.verify(LinkAction::Ack, "alert-1", &other, now), Err(LinkRefusal::Forged));
        // Another secret does not verify it; expiry is checked after the signature.
        let stranger = ActionLinks::new("https://apiwatch.example", "another-secret-of-16+", HOUR_MS).unwrap();
        assert_eq!(stranger.verify(LinkAction::Ack, "alert-1", &q, now), Err(LinkRefusal::Forged));
        assert!(matches!(
            links.verify(LinkAction::Ack, "alert-1", &q, now + HOUR_MS),
            Err(LinkRefusal::Expired(_))
        ));
        let mut bare = q.clone();
        bare.sig = Some("zz".into());
        assert_eq!(
            links.verify(LinkAction::Ack, "alert-1", &bare, now),
            Err(LinkRefusal::Malformed("sig is not hex"))
        );
    }

    #[test]
    fn after_a_rotation_links_signed_with_the_previous_secret_still_verify_and_new_ones_use_the_new() {
        let now = 1_700_000_000_000;
        let old = ActionLinks::new("https://w", SECRET, HOUR_MS).unwrap();
        let sent = query(&old.link(LinkAction::Ack, "a-1", "email", now).url);
        let rotated = ActionLinks::new("https://w", "the-new-secret-0123", HOUR_MS).unwrap();
        assert_eq!(rotated.verify(LinkAction::Ack, "a-1", &sent, now), Err(LinkRefusal::Forged));
        let rotated = rotated.with_previous(SECRET).unwrap();
        assert_eq!(rotated.verify(LinkAction::Ack, "a-1", &sent, now), Ok(()));
        let fresh = query(&rotated.link(LinkAction::Ack, "a-1", "email", now).url);
        assert_eq!(
            old.verify(LinkAction::Ack, "a-1", &fresh, now),
            Err(LinkRefusal::Forged),
            "new links use the new secret"
        );
        assert!(rotated.clone().with_previous("short").is_err());
        assert!(!format!("{rotated:?}").contains(SECRET));
    }

    #[test]
    fn the_secret_is_never_shown_and_a_short_one_is_refused() {
        let links = ActionLinks::new("http://w:1", SECRET, HOUR_MS).unwrap();
        let shown = format!("{links:?}");
        assert!(!shown.contains(SECRET) && shown.contains("<hidden>"), "{shown}");
        let e = ActionLinks::new("http://w:1", "short", HOUR_MS).unwrap_err();
        assert!(e.contains("at least 16") && !e.contains("short"), "{e}");
        for a in LinkAction::ALL {
            assert_eq!(LinkAction::parse(a.as_str()), Some(a));
        }
    }

    #[test]
    fn alert_ids_are_encoded_in_the_path() {
        let links = ActionLinks::new("http://w:1", SECRET, HOUR_MS).unwrap();
        let l = links.link(LinkAction::Silence, "a/b c", "slack webhook", 0);
        assert!(l.url.contains("/act/silence/a%2Fb%20c?via=slack%20webhook&"), "{}", l.url);
    }
}
