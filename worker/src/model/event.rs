//! The API-call event of `shared/spec/events.md`, with a reader that accepts dotted keys
//! (`"service.name"`), nested objects (`"service": {"name": ..}`) and any mix of the two, and a
//! writer that emits the dotted form.

use std::fmt;

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::time::{format_rfc3339, parse_rfc3339, Millis};

/// One API call (one span of a request journey).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Event {
    pub timestamp: Millis,
    pub service: String,
    pub provider: String,
    pub region: Option<String>,
    pub host: Option<String>,
    pub method: String,
    pub path: String,
    pub status: u16,
    pub duration_ns: u64,
    pub outcome: Option<String>,
    pub trace_id: Option<String>,
    pub span_id: Option<String>,
    pub parent_id: Option<String>,
    pub user_id: Option<String>,
    pub client_ip: Option<String>,
    pub user_agent: Option<String>,
    pub request_bytes: Option<u64>,
    pub response_bytes: Option<u64>,
}

impl Event {
    pub fn duration_ms(&self) -> f64 {
        self.duration_ns as f64 / 1e6
    }
    pub fn is_5xx(&self) -> bool {
        self.status >= 500
    }
    pub fn is_4xx(&self) -> bool {
        (400..500).contains(&self.status)
    }
}

/// Why a line could not become an event.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum EventError {
    #[error("not valid JSON: {0}")]
    Json(String),
    #[error("missing required field `{0}`")]
    Missing(&'static str),
    #[error("field `{field}` has a bad value: {why}")]
    BadValue { field: &'static str, why: String },
}

/// Parses one NDJSON line into an event.
pub fn parse_event(line: &[u8]) -> Result<Event, EventError> {
    let mut raw = RawEvent::default();
    let mut path = String::with_capacity(48);
    let mut de = serde_json::Deserializer::from_slice(line);
    FieldsSeed { raw: &mut raw, path: &mut path }
        .deserialize(&mut de)
        .map_err(|e| match raw.bad.take() {
            Some(b) => b,
            None => EventError::Json(e.to_string()),
        })?;
    de.end().map_err(|e| EventError::Json(e.to_string()))?;
    raw.finish()
}

#[derive(Default)]
struct RawEvent {
    timestamp: Option<Millis>,
    service: Option<String>,
    provider: Option<String>,
    region: Option<String>,
    host: Option<String>,
    method: Option<String>,
    path: Option<String>,
    status: Option<u16>,
    duration_ns: Option<u64>,
    outcome: Option<String>,
    trace_id: Option<String>,
    span_id: Option<String>,
    parent_id: Option<String>,
    user_id: Option<String>,
    client_ip: Option<String>,
    user_agent: Option<String>,
    request_bytes: Option<u64>,
    response_bytes: Option<u64>,
    bad: Option<EventError>,
}

impl RawEvent {
    fn finish(self) -> Result<Event, EventError> {
        Ok(Event {
            timestamp: self.timestamp.ok_or(EventError::Missing("@timestamp"))?,
            service: self.service.ok_or(EventError::Missing("service.name"))?,
            provider: self.provider.ok_or(EventError::Missing("cloud.provider"))?,
            method: self.method.ok_or(EventError::Missing("http.request.method"))?,
            path: self.path.ok_or(EventError::Missing("url.path"))?,
            status: self.status.ok_or(EventError::Missing("http.response.status_code"))?,
            duration_ns: self.duration_ns.ok_or(EventError::Missing("event.duration"))?,
            region: self.region,
            host: self.host,
            outcome: self.outcome,
            trace_id: self.trace_id,
            span_id: self.span_id,
            parent_id: self.parent_id,
            user_id: self.user_id,
            client_ip: self.client_ip,
            user_agent: self.user_agent,
            request_bytes: self.request_bytes,
            response_bytes: self.response_bytes,
        })
    }
}

/// Which event field a dotted path names.
#[derive(Clone, Copy)]
enum Field {
    Timestamp,
    Service,
    Provider,
    Region,
    Host,
    Method,
    Path,
    Status,
    Duration,
    Outcome,
    Trace,
    Span,
    Parent,
    User,
    ClientIp,
    UserAgent,
    ReqBytes,
    RespBytes,
}

fn field_of(path: &str) -> Option<Field> {
    Some(match path {
        "@timestamp" => Field::Timestamp,
        "service.name" => Field::Service,
        "cloud.provider" => Field::Provider,
        "cloud.region" => Field::Region,
        "host.name" => Field::Host,
        "http.request.method" => Field::Method,
        "url.path" => Field::Path,
        "http.response.status_code" => Field::Status,
        "event.duration" => Field::Duration,
        "event.outcome" => Field::Outcome,
        "trace.id" => Field::Trace,
        "span.id" => Field::Span,
        "parent.id" => Field::Parent,
        "user.id" => Field::User,
        "client.ip" => Field::ClientIp,
        "user_agent.original" => Field::UserAgent,
        "http.request.bytes" | "http.request.body.bytes" => Field::ReqBytes,
        "http.response.bytes" | "http.response.body.bytes" => Field::RespBytes,
        _ => return None,
    })
}

/// Whether some known field lives below this dotted prefix (so a nested object is worth walking).
fn is_prefix(path: &str) -> bool {
    matches!(
        path,
        "service"
            | "cloud"
            | "host"
            | "http"
            | "http.request"
            | "http.response"
            | "http.request.body"
            | "http.response.body"
            | "url"
            | "event"
            | "trace"
            | "span"
            | "parent"
            | "user"
            | "client"
            | "user_agent"
    )
}

struct FieldsSeed<'a> {
    raw: &'a mut RawEvent,
    path: &'a mut String,
}

impl<'de> DeserializeSeed<'de> for FieldsSeed<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for FieldsSeed<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let base = self.path.len();
        while let Some(key) = map.next_key::<KeyStr<'de>>()? {
            if base > 0 {
                self.path.push('.');
            }
            self.path.push_str(key.as_str());
            if let Some(field) = field_of(self.path) {
                let v: Scalar = map.next_value()?;
                if let Err(e) = self.raw.set(field, v, self.path) {
                    self.raw.bad = Some(e);
                    return Err(de::Error::custom("bad value"));
                }
            } else if is_prefix(self.path) {
                // A nested object, or a scalar where an object was expected (kept and ignored).
                map.next_value_seed(MaybeObject {
                    inner: FieldsSeed { raw: self.raw, path: self.path },
                })?;
            } else {
                map.next_value::<IgnoredAny>()?;
            }
            self.path.truncate(base);
        }
        Ok(())
    }
}

struct MaybeObject<'a> {
    inner: FieldsSeed<'a>,
}

impl<'de> DeserializeSeed<'de> for MaybeObject<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for MaybeObject<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any value")
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<(), A::Error> {
        self.inner.visit_map(map)
    }
    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(())
    }
}

/// A map key, borrowed when the input allows it.
struct KeyStr<'de>(std::borrow::Cow<'de, str>);

impl KeyStr<'_> {
    fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for KeyStr<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = KeyStr<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string key")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(KeyStr(v.into()))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(KeyStr(v.to_owned().into()))
            }
        }
        d.deserialize_str(V)
    }
}

/// A JSON scalar; logs often carry numbers as strings and ids as numbers, so both are accepted.
enum Scalar {
    Str(String),
    Int(i64),
    Float(f64),
    Bool,
    Null,
    Composite,
}

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Scalar;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a scalar")
            }
            fn visit_str<E>(self, v: &str) -> Result<Scalar, E> {
                Ok(Scalar::Str(v.to_owned()))
            }
            fn visit_string<E>(self, v: String) -> Result<Scalar, E> {
                Ok(Scalar::Str(v))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Scalar, E> {
                Ok(Scalar::Int(v))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Scalar, E> {
                Ok(i64::try_from(v).map_or(Scalar::Float(v as f64), Scalar::Int))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Scalar, E> {
                Ok(Scalar::Float(v))
            }
            fn visit_bool<E>(self, _: bool) -> Result<Scalar, E> {
                Ok(Scalar::Bool)
            }
            fn visit_unit<E>(self) -> Result<Scalar, E> {
                Ok(Scalar::Null)
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Scalar, A::Error> {
                while m.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Scalar::Composite)
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut s: A) -> Result<Scalar, A::Error> {
                while s.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Scalar::Composite)
            }
        }
        d.deserialize_any(V)
    }
}

fn name_of(f: Field) -> &'static str {
    match f {
        Field::Timestamp => "@timestamp",
        Field::Service => "service.name",
        Field::Provider => "cloud.provider",
        Field::Region => "cloud.region",
        Field::Host => "host.name",
        Field::Method => "http.request.method",
        Field::Path => "url.path",
        Field::Status => "http.response.status_code",
        Field::Duration => "event.duration",
        Field::Outcome => "event.outcome",
        Field::Trace => "trace.id",
        Field::Span => "span.id",
        Field::Parent => "parent.id",
        Field::User => "user.id",
        Field::ClientIp => "client.ip",
        Field::UserAgent => "user_agent.original",
        Field::ReqBytes => "http.request.bytes",
        Field::RespBytes => "http.response.bytes",
    }
}

impl Scalar {
    fn into_string(self) -> Option<String> {
        match self {
            Scalar::Str(s) if !s.is_empty() => Some(s),
            Scalar::Int(i) => Some(i.to_string()),
            Scalar::Float(f) => Some(f.to_string()),
            _ => None,
        }
    }
    fn as_u64(&self) -> Result<Option<u64>, String> {
        match self {
            Scalar::Int(i) if *i >= 0 => Ok(Some(*i as u64)),
            Scalar::Float(f) if *f >= 0.0 && f.is_finite() => Ok(Some(f.round() as u64)),
            Scalar::Str(s) => s
                .trim()
                .parse::<f64>()
                .ok()
                .filter(|f| *f >= 0.0 && f.is_finite())
                .map(|f| Some(f.round() as u64))
                .ok_or_else(|| format!("`{s}` is not a non-negative number")),
            Scalar::Null => Ok(None),
            Scalar::Int(i) => Err(format!("{i} is negative")),
            Scalar::Float(f) => Err(format!("{f} is not a non-negative number")),
            Scalar::Bool | Scalar::Composite => Err("expected a number".into()),
        }
    }
}

impl RawEvent {
    fn set(&mut self, f: Field, v: Scalar, _path: &str) -> Result<(), EventError> {
        let bad = |why: String| EventError::BadValue { field: name_of(f), why };
        match f {
            Field::Timestamp => match v {
                Scalar::Str(s) => {
                    self.timestamp =
                        Some(parse_rfc3339(&s).ok_or_else(|| bad(format!("`{s}` is not RFC 3339")))?)
                }
                // Epoch milliseconds, as some shippers write them.
                Scalar::Int(i) => self.timestamp = Some(i),
                _ => return Err(bad("expected an RFC 3339 string".into())),
            },
            Field::Status => {
                let s = v.as_u64().map_err(bad)?;
                if let Some(s) = s {
                    if !(100..=599).contains(&s) {
                        return Err(bad(format!("{s} is not an HTTP status")));
                    }
                    self.status = Some(s as u16);
                }
            }
            Field::Duration => self.duration_ns = v.as_u64().map_err(bad)?,
            Field::ReqBytes => self.request_bytes = v.as_u64().map_err(bad)?,
            Field::RespBytes => self.response_bytes = v.as_u64().map_err(bad)?,
            Field::Service => self.service = v.into_string(),
            Field::Provider => self.provider = v.into_string().map(|s| s.to_ascii_lowercase()),
            Field::Region => self.region = v.into_string(),
            Field::Host => self.host = v.into_string(),
            Field::Method => self.method = v.into_string().map(|s| s.to_ascii_uppercase()),
            Field::Path => self.path = v.into_string(),
            Field::Outcome => self.outcome = v.into_string(),
            Field::Trace => self.trace_id = v.into_string(),
            Field::Span => self.span_id = v.into_string(),
            Field::Parent => self.parent_id = v.into_string(),
            Field::User => self.user_id = v.into_string(),
            Field::ClientIp => self.client_ip = v.into_string(),
            Field::UserAgent => self.user_agent = v.into_string(),
        }
        Ok(())
    }
}

impl Serialize for Event {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("@timestamp", &format_rfc3339(self.timestamp))?;
        m.serialize_entry("service.name", &self.service)?;
        m.serialize_entry("cloud.provider", &self.provider)?;
        if let Some(v) = &self.region {
            m.serialize_entry("cloud.region", v)?;
        }
        if let Some(v) = &self.host {
            m.serialize_entry("host.name", v)?;
        }
        m.serialize_entry("http.request.method", &self.method)?;
        m.serialize_entry("url.path", &self.path)?;
        m.serialize_entry("http.response.status_code", &self.status)?;
        m.serialize_entry("event.duration", &self.duration_ns)?;
        if let Some(v) = &self.outcome {
            m.serialize_entry("event.outcome", v)?;
        }
        let opt = [
            ("trace.id", &self.trace_id),
            ("span.id", &self.span_id),
            ("parent.id", &self.parent_id),
            ("user.id", &self.user_id),
            ("client.ip", &self.client_ip),
            ("user_agent.original", &self.user_agent),
        ];
        for (k, v) in opt {
            if let Some(v) = v {
                m.serialize_entry(k, v)?;
            }
        }
        if let Some(v) = self.request_bytes {
            m.serialize_entry("http.request.bytes", &v)?;
        }
        if let Some(v) = self.response_bytes {
            m.serialize_entry("http.response.bytes", &v)?;
        }
        m.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOTTED: &str = r#"{"@timestamp":"2026-03-02T06:00:00.815Z","service.name":"gateway","cloud.provider":"onprem","http.request.method":"POST","url.path":"/api/v1/login","http.response.status_code":200,"event.duration":33430856,"trace.id":"68a6","span.id":"7718","user.id":"u82006968","client.ip":"86.117.192.172"}"#;

    #[test]
    fn dotted_form_parses() {
        let e = parse_event(DOTTED.as_bytes()).unwrap();
        assert_eq!(e.service, "gateway");
        assert_eq!(e.provider, "onprem");
        assert_eq!(e.method, "POST");
        assert_eq!(e.status, 200);
        assert_eq!(e.duration_ns, 33_430_856);
        assert_eq!(e.trace_id.as_deref(), Some("68a6"));
        assert_eq!(e.parent_id, None);
    }

    #[test]
    fn nested_and_mixed_forms_give_the_same_event() {
        let nested = r#"{"@timestamp":"2026-03-02T06:00:00.815Z","service":{"name":"gateway"},"cloud":{"provider":"onprem"},"http":{"request":{"method":"POST"},"response":{"status_code":200}},"url":{"path":"/api/v1/login"},"event":{"duration":33430856},"trace":{"id":"68a6"},"span":{"id":"7718"},"user":{"id":"u82006968"},"client":{"ip":"86.117.192.172"}}"#;
        let mixed = r#"{"@timestamp":"2026-03-02T06:00:00.815Z","service.name":"gateway","cloud":{"provider":"onprem"},"http":{"request.method":"POST","response":{"status_code":"200"}},"url.path":"/api/v1/login","event.duration":33430856,"trace":{"id":"68a6"},"span.id":"7718","user":{"id":"u82006968"},"client.ip":"86.117.192.172","extra":{"kept":[1,2]}}"#;
        let a = parse_event(DOTTED.as_bytes()).unwrap();
        assert_eq!(parse_event(nested.as_bytes()).unwrap(), a);
        assert_eq!(parse_event(mixed.as_bytes()).unwrap(), a);
    }

    #[test]
    fn missing_required_field_is_named() {
        let line = DOTTED.replace(r#""url.path":"/api/v1/login","#, "");
        assert_eq!(parse_event(line.as_bytes()), Err(EventError::Missing("url.path")));
    }

    #[test]
    fn bad_values_are_named() {
        let line = DOTTED.replace("33430856", "\"slow\"");
        match parse_event(line.as_bytes()) {
            Err(EventError::BadValue { field, .. }) => assert_eq!(field, "event.duration"),
            other => panic!("unexpected {other:?}"),
        }
        let line = DOTTED.replace("2026-03-02T06", "yesterday");
        assert!(matches!(
            parse_event(line.as_bytes()),
            Err(EventError::BadValue { field: "@timestamp", .. })
        ));
    }

    #[test]
    fn broken_json_is_an_error_not_a_panic() {
        for line in ["", "{", "[1,2]", "null", r#"{"a":1}{"#, "\u{0}"] {
            assert!(parse_event(line.as_bytes()).is_err(), "{line:?}");
        }
    }

    #[test]
    fn writer_round_trips() {
        let e = parse_event(DOTTED.as_bytes()).unwrap();
        let line = serde_json::to_string(&e).unwrap();
        assert_eq!(parse_event(line.as_bytes()).unwrap(), e);
    }
}
