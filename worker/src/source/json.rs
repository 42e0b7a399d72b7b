//! The JSON event reader: accepts dotted keys (`"service.name"`), nested objects
//! (`"service": {"name": ..}`) and any mix of the two, refuses what the contract requires
//! (`shared/spec/events.md`) with the field's name, and keeps an event whose optional field is
//! bad without that field (counted). Hand-written rather than serde: one pass, no allocation
//! for the fields it skips, and errors that name the field.

use std::borrow::Cow;

use crate::model::event::{ClientSide, Event, Text, MAX_DURATION_NS};
use crate::model::time::{epoch_int_to_millis, epoch_to_millis, parse_rfc3339, Millis};

/// The provider of an Elastic APM document without `cloud.provider` (agents name one only
/// where they run in a cloud).
pub const APM_DEFAULT_PROVIDER: &str = "onprem";

/// Why a line could not become an event.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum EventError {
    #[error("not valid JSON: {0}")]
    Json(String),
    #[error("missing required field `{0}`")]
    Missing(&'static str),
    #[error("field `{field}` has a bad value: {why}")]
    BadValue { field: &'static str, why: String },
    /// An access-log line that is not the format (the grok pattern named).
    #[error("does not match the access-log pattern {0} (logstash/patterns/apiwatch)")]
    Pattern(&'static str),
    /// A provider line that is not its format's layout.
    #[error("not a {format} line: {why}")]
    Layout { format: &'static str, why: String },
    /// A record that is not an API call: an Elastic APM span that calls nobody (an internal
    /// span, `span.kind: internal`). Counted apart from errors; nothing is wrong with it.
    #[error("not an API call: {0}")]
    NotACall(&'static str),
}

/// An optional field whose value was wrong: dropped from the event, which is kept.
#[derive(Debug, Clone, PartialEq)]
pub struct DroppedField {
    pub field: &'static str,
    pub why: String,
}

/// Parses one NDJSON line into an event (optional fields with bad values are dropped quietly;
/// [`parse_event_lenient`] says which).
pub fn parse_event(line: &[u8]) -> Result<Event, EventError> {
    parse_event_lenient(line).map(|(e, _)| e)
}

/// Parses one NDJSON line into an event and the optional fields it had to drop.
///
/// A small dedicated JSON reader rather than a generic deserializer: the line is checked as
/// UTF-8 once, keys are matched against the known dotted paths as they are read, strings are
/// borrowed unless they hold escapes, and everything else is skipped without being built. It
/// accepts exactly JSON (RFC 8259) and reports where a line stops being JSON.
pub fn parse_event_lenient(line: &[u8]) -> Result<(Event, Vec<DroppedField>), EventError> {
    let text = std::str::from_utf8(line).map_err(|e| EventError::Json(format!("not UTF-8 at byte {}", e.valid_up_to())))?;
    let mut raw = RawEvent::default();
    let mut r = Reader {
        b: text.as_bytes(),
        s: text,
        i: 0,
    };
    let mut path = String::with_capacity(48);
    r.ws();
    if r.peek() != Some(b'{') {
        return Err(r.error("expected a JSON object"));
    }
    r.object(&mut raw, &mut path, 0)?;
    r.ws();
    if r.i != r.b.len() {
        return Err(r.error("trailing characters after the object"));
    }
    raw.finish()
}

/// Nesting of the known field paths walked recursively (the deepest, `http.request.body.bytes`,
/// is four levels); anything else is skipped by [`Reader::skip`], which keeps its own stack and
/// so takes any depth a line holds.
const MAX_DEPTH: usize = 64;

struct Reader<'a> {
    b: &'a [u8],
    s: &'a str,
    i: usize,
}

impl<'a> Reader<'a> {
    fn error(&self, what: &str) -> EventError {
        EventError::Json(format!("{what} at byte {}", self.i + 1))
    }
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }
    fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.i += 1;
        }
    }
    fn expect(&mut self, c: u8, what: &str) -> Result<(), EventError> {
        self.ws();
        if self.peek() == Some(c) {
            self.i += 1;
            Ok(())
        } else {
            Err(self.error(what))
        }
    }

    /// Walks an object (`close` = `}`) or array (`]`) whose opening bracket is next: checks
    /// keys, colons and commas, and hands each member to `item` (with its key, for objects).
    fn list(
        &mut self,
        depth: usize,
        close: u8,
        mut item: impl FnMut(&mut Self, Option<Cow<'a, str>>) -> Result<(), EventError>,
    ) -> Result<(), EventError> {
        if depth >= MAX_DEPTH {
            return Err(self.error("nested too deeply"));
        }
        self.i += 1;
        self.ws();
        if self.peek() == Some(close) {
            self.i += 1;
            return Ok(());
        }
        loop {
            self.ws();
            let key = if close == b'}' {
                if self.peek() != Some(b'"') {
                    return Err(self.error("expected a key"));
                }
                let key = self.string()?;
                self.expect(b':', "expected `:` after a key")?;
                self.ws();
                Some(key)
            } else {
                None
            };
            item(self, key)?;
            self.ws();
            match self.peek() {
                Some(b',') => self.i += 1,
                Some(c) if c == close => {
                    self.i += 1;
                    return Ok(());
                }
                _ => {
                    return Err(self.error(if close == b'}' {
                        "expected `,` or `}`"
                    } else {
                        "expected `,` or `]`"
                    }))
                }
            }
        }
    }

    /// Reads an object whose `{` is next; known fields go into `raw`.
    fn object(&mut self, raw: &mut RawEvent, path: &mut String, depth: usize) -> Result<(), EventError> {
        let base = path.len();
        self.list(depth, b'}', |r, key| {
            if base > 0 {
                path.push('.');
            }
            path.push_str(&key.unwrap_or_default());
            if let Some(field) = field_of(path) {
                let v = r.scalar()?;
                if let Err(why) = raw.set(field, v) {
                    if is_required(field) {
                        return Err(EventError::BadValue {
                            field: name_of(field),
                            why,
                        });
                    }
                    raw.dropped.push(DroppedField {
                        field: name_of(field),
                        why,
                    });
                }
            } else if is_prefix(path) && r.peek() == Some(b'{') {
                r.object(raw, path, depth + 1)?;
            } else {
                r.skip()?;
            }
            path.truncate(base);
            Ok(())
        })
    }

    /// Reads a string whose `"` is next; borrowed unless it holds escapes.
    fn string(&mut self) -> Result<Cow<'a, str>, EventError> {
        self.i += 1;
        let start = self.i;
        // Most keys and values are short: a plain scan beats a vectorised search's set-up.
        let rest = &self.b[start..];
        let n = rest.iter().position(|&c| c == b'"' || c == b'\\' || c < 0x20).unwrap_or(rest.len());
        self.i = start + n;
        match rest.get(n) {
            None => Err(self.error("unterminated string")),
            Some(b'"') => {
                self.i += 1;
                Ok(Cow::Borrowed(&self.s[start..self.i - 1]))
            }
            Some(b'\\') => self.escaped(start).map(Cow::Owned),
            Some(_) => Err(self.error("control character in a string")),
        }
    }

    fn escaped(&mut self, start: usize) -> Result<String, EventError> {
        let mut out = String::from(&self.s[start..self.i]);
        while let Some(&c) = self.b.get(self.i) {
            match c {
                b'"' => {
                    self.i += 1;
                    return Ok(out);
                }
                b'\\' => {
                    let e = *self.b.get(self.i + 1).ok_or_else(|| self.error("unterminated escape"))?;
                    self.i += 2;
                    match e {
                        b'"' => out.push('"'),
                        b'\\' => out.push('\\'),
                        b'/' => out.push('/'),
                        b'b' => out.push('\u{8}'),
                        b'f' => out.push('\u{c}'),
                        b'n' => out.push('\n'),
                        b'r' => out.push('\r'),
                        b't' => out.push('\t'),
                        b'u' => {
                            let hi = self.hex4()?;
                            let code = if (0xD800..0xDC00).contains(&hi)
                                && self.b.get(self.i) == Some(&b'\\')
                                && self.b.get(self.i + 1) == Some(&b'u')
                            {
                                self.i += 2;
                                let lo = self.hex4()?;
                                if !(0xDC00..0xE000).contains(&lo) {
                                    return Err(self.error("bad surrogate pair"));
                                }
                                0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00)
                            } else {
                                hi
                            };
                            out.push(char::from_u32(code).unwrap_or('\u{fffd}'));
                        }
                        _ => return Err(self.error("bad escape")),
                    }
                }
                0..=0x1f => return Err(self.error("control character in a string")),
                _ => {
                    // Copy a run of plain characters at once (the line is valid UTF-8).
                    let run = self.i;
                    while let Some(&c) = self.b.get(self.i) {
                        if c == b'"' || c == b'\\' || c < 0x20 {
                            break;
                        }
                        self.i += 1;
                    }
                    out.push_str(&self.s[run..self.i]);
                }
            }
        }
        Err(self.error("unterminated string"))
    }

    fn hex4(&mut self) -> Result<u32, EventError> {
        let h = self.s.get(self.i..self.i + 4).ok_or_else(|| self.error("short \\u escape"))?;
        let v = u32::from_str_radix(h, 16).map_err(|_| self.error("bad \\u escape"))?;
        self.i += 4;
        Ok(v)
    }

    fn number(&mut self) -> Result<Scalar<'a>, EventError> {
        let start = self.i;
        if self.peek() == Some(b'-') {
            self.i += 1;
        }
        let digits = self.i;
        while let Some(b'0'..=b'9') = self.peek() {
            self.i += 1;
        }
        if self.i == digits {
            return Err(self.error("expected a value"));
        }
        if self.b[digits] == b'0' && self.i - digits > 1 {
            return Err(self.error("leading zero in a number"));
        }
        let mut integral = true;
        if self.peek() == Some(b'.') {
            integral = false;
            self.i += 1;
            let f = self.i;
            while let Some(b'0'..=b'9') = self.peek() {
                self.i += 1;
            }
            if self.i == f {
                return Err(self.error("expected digits after `.`"));
            }
        }
        if let Some(b'e' | b'E') = self.peek() {
            integral = false;
            self.i += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.i += 1;
            }
            let e = self.i;
            while let Some(b'0'..=b'9') = self.peek() {
                self.i += 1;
            }
            if self.i == e {
                return Err(self.error("expected an exponent"));
            }
        }
        let text = &self.s[start..self.i];
        if integral {
            if let Ok(v) = text.parse::<i64>() {
                return Ok(Scalar::Int(v));
            }
        }
        text.parse::<f64>().map(Scalar::Float).map_err(|_| self.error("bad number"))
    }

    fn literal(&mut self, word: &str) -> Result<(), EventError> {
        if self.b[self.i..].starts_with(word.as_bytes()) {
            self.i += word.len();
            Ok(())
        } else {
            Err(self.error("expected a value"))
        }
    }

    /// Reads a value as a scalar (objects and arrays are skipped and reported as composite).
    fn scalar(&mut self) -> Result<Scalar<'a>, EventError> {
        match self.peek() {
            Some(b'"') => self.string().map(Scalar::Str),
            Some(b't') => self.literal("true").map(|_| Scalar::Bool),
            Some(b'f') => self.literal("false").map(|_| Scalar::Bool),
            Some(b'n') => self.literal("null").map(|_| Scalar::Null),
            Some(b'{' | b'[') => self.skip().map(|_| Scalar::Composite),
            _ => self.number(),
        }
    }

    /// Reads `"key":` inside an object being skipped.
    fn skipped_key(&mut self) -> Result<(), EventError> {
        self.ws();
        if self.peek() != Some(b'"') {
            return Err(self.error("expected a key"));
        }
        self.string()?;
        self.expect(b':', "expected `:` after a key")
    }

    /// Skips any value, checking it is JSON. Iterative, with its own stack of open brackets, so
    /// an unknown field nested deeper than anything the reader walks costs memory in proportion
    /// to the line, never stack depth, and never loses the event.
    fn skip(&mut self) -> Result<(), EventError> {
        let mut open: Vec<u8> = Vec::new();
        loop {
            self.ws();
            match self.peek() {
                Some(b'{') => {
                    self.i += 1;
                    self.ws();
                    if self.peek() == Some(b'}') {
                        self.i += 1;
                    } else {
                        open.push(b'}');
                        self.skipped_key()?;
                        continue;
                    }
                }
                Some(b'[') => {
                    self.i += 1;
                    self.ws();
                    if self.peek() == Some(b']') {
                        self.i += 1;
                    } else {
                        open.push(b']');
                        continue;
                    }
                }
                _ => {
                    self.scalar()?;
                }
            }
            // After a value: close what ends here, then expect the next member.
            loop {
                let Some(&close) = open.last() else {
                    return Ok(());
                };
                self.ws();
                match self.peek() {
                    Some(b',') => {
                        self.i += 1;
                        if close == b'}' {
                            self.skipped_key()?;
                        }
                        break;
                    }
                    Some(c) if c == close => {
                        self.i += 1;
                        open.pop();
                    }
                    _ => {
                        return Err(self.error(if close == b'}' {
                            "expected `,` or `}`"
                        } else {
                            "expected `,` or `]`"
                        }))
                    }
                }
            }
        }
    }
}

#[derive(Default)]
struct RawEvent {
    timestamp: Option<Millis>,
    service: Option<Text>,
    provider: Option<Text>,
    region: Option<Text>,
    host: Option<Text>,
    method: Option<Text>,
    path: Option<Text>,
    status: Option<u16>,
    duration_ns: Option<u64>,
    outcome: Option<Text>,
    trace_id: Option<Text>,
    span_id: Option<Text>,
    parent_id: Option<Text>,
    user_id: Option<Text>,
    client_ip: Option<Text>,
    user_agent: Option<Text>,
    request_bytes: Option<u64>,
    response_bytes: Option<u64>,
    /// Elastic APM's own forms: `transaction.duration.us` / `span.duration.us`, `url.original`,
    /// `processor.event`, `transaction.id`; and which side of the call this is.
    duration_us: Option<u64>,
    url_original: Option<Text>,
    processor_event: Option<Text>,
    span_kind: Option<Text>,
    target: Option<Text>,
    destination: Option<Text>,
    transaction_id: Option<Text>,
    dropped: Vec<DroppedField>,
}

impl RawEvent {
    /// Whose record this is: `Ok(true)` the caller's, `Ok(false)` the callee's (the default).
    /// `span.kind` says it where present (OpenTelemetry's kinds, any case); otherwise an APM
    /// `span` document is the caller's record when it names whom it called, and an internal
    /// span when it does not.
    fn is_client_side(&self) -> Result<bool, EventError> {
        if let Some(kind) = &self.span_kind {
            return match kind.to_ascii_lowercase().as_str() {
                "client" | "producer" => Ok(true),
                "internal" => Err(EventError::NotACall("an internal span (`span.kind: internal`)")),
                _ => Ok(false),
            };
        }
        match self.processor_event.as_deref() {
            Some("span") if self.target.is_some() || self.destination.is_some() => Ok(true),
            Some("span") => Err(EventError::NotACall(
                "an Elastic APM span that calls no other service (no `service.target.name` or `span.destination`)",
            )),
            _ => Ok(false),
        }
    }

    fn finish(self) -> Result<(Event, Vec<DroppedField>), EventError> {
        let client_side = self.is_client_side()?;
        let apm = self.processor_event.is_some();
        let duration = match (self.duration_ns, self.duration_us) {
            (Some(ns), _) => ns,
            (None, Some(us)) if us.saturating_mul(1_000) <= MAX_DURATION_NS => us * 1_000,
            (None, Some(us)) => {
                return Err(EventError::BadValue {
                    field: "transaction.duration.us",
                    why: format!("{us} µs is longer than a day"),
                })
            }
            (None, None) => return Err(EventError::Missing("event.duration")),
        };
        let path = match (self.path, &self.url_original) {
            (Some(p), _) => p,
            (None, Some(url)) => crate::source::fields::url_path(url)
                .map(Text::from)
                .ok_or(EventError::Missing("url.path"))?,
            (None, None) => return Err(EventError::Missing("url.path")),
        };
        // APM agents report `cloud.provider` only where they run in a cloud.
        let provider = match self.provider {
            Some(p) => p,
            None if apm => Text::from(APM_DEFAULT_PROVIDER),
            None => return Err(EventError::Missing("cloud.provider")),
        };
        let (span_id, client) = if client_side {
            let side = ClientSide {
                target: self.target.or(self.destination),
                transaction_id: self.transaction_id,
            };
            (self.span_id, Some(Box::new(side)))
        } else {
            // An APM transaction's own id is `transaction.id`.
            (self.span_id.or(self.transaction_id), None)
        };
        let event = Event {
            timestamp: self.timestamp.ok_or(EventError::Missing("@timestamp"))?,
            service: self.service.ok_or(EventError::Missing("service.name"))?,
            provider,
            method: self.method.ok_or(EventError::Missing("http.request.method"))?,
            path,
            status: self.status.ok_or(EventError::Missing("http.response.status_code"))?,
            duration_ns: Some(duration),
            region: self.region,
            host: self.host,
            outcome: self.outcome,
            trace_id: self.trace_id,
            span_id,
            parent_id: self.parent_id,
            user_id: self.user_id,
            client_ip: self.client_ip,
            user_agent: self.user_agent,
            request_bytes: self.request_bytes,
            response_bytes: self.response_bytes,
            client,
        };
        Ok((event, self.dropped))
    }
}

/// The fields without which a line is not an event (events.md); a bad value in any other field
/// drops that field only.
fn is_required(f: Field) -> bool {
    matches!(
        f,
        Field::Timestamp
            | Field::Service
            | Field::Provider
            | Field::Method
            | Field::Path
            | Field::Status
            | Field::Duration
            | Field::DurationUs
    )
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
    DurationUs,
    UrlOriginal,
    ProcessorEvent,
    SpanKind,
    Target,
    Destination,
    Transaction,
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
        "transaction.duration.us" | "span.duration.us" => Field::DurationUs,
        "url.original" => Field::UrlOriginal,
        "processor.event" => Field::ProcessorEvent,
        "span.kind" => Field::SpanKind,
        "service.target.name" => Field::Target,
        "span.destination.service.resource" => Field::Destination,
        "transaction.id" => Field::Transaction,
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
            | "transaction"
            | "transaction.duration"
            | "span.duration"
            | "span.destination"
            | "span.destination.service"
            | "service.target"
            | "processor"
    )
}

/// A JSON scalar; logs often carry numbers as strings and ids as numbers, so both are accepted.
enum Scalar<'a> {
    Str(Cow<'a, str>),
    Int(i64),
    Float(f64),
    Bool,
    Null,
    Composite,
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
        Field::DurationUs => "transaction.duration.us",
        Field::UrlOriginal => "url.original",
        Field::ProcessorEvent => "processor.event",
        Field::SpanKind => "span.kind",
        Field::Target => "service.target.name",
        Field::Destination => "span.destination.service.resource",
        Field::Transaction => "transaction.id",
    }
}

impl Scalar<'_> {
    /// Text of a string or number field; empty and `null` mean absent; booleans, objects and
    /// arrays are bad values.
    fn into_string(self) -> Result<Option<Text>, String> {
        match self {
            Scalar::Str(s) if !s.is_empty() => Ok(Some(Text::from(s.as_ref()))),
            Scalar::Str(_) | Scalar::Null => Ok(None),
            Scalar::Int(i) => Ok(Some(Text::from(i.to_string()))),
            Scalar::Float(f) => Ok(Some(Text::from(f.to_string()))),
            Scalar::Bool => Err("expected a string, found a boolean".into()),
            Scalar::Composite => Err("expected a string, found an object or array".into()),
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
    /// Stores one field; `Err` says why its value is wrong (the caller decides whether that
    /// loses the event or only the field).
    fn set(&mut self, f: Field, v: Scalar<'_>) -> Result<(), String> {
        match f {
            Field::Timestamp => {
                let t = match v {
                    Scalar::Str(s) => match parse_rfc3339(&s) {
                        Some(t) => t,
                        // Epoch numbers written as strings, as some shippers do.
                        None => s
                            .trim()
                            .parse::<i64>()
                            .ok()
                            .and_then(epoch_int_to_millis)
                            .or_else(|| s.trim().parse::<f64>().ok().and_then(epoch_to_millis))
                            .ok_or_else(|| format!("`{s}` is not an RFC 3339 time (nor an epoch number)"))?,
                    },
                    // Epoch numbers: seconds, milliseconds, microseconds or nanoseconds by
                    // magnitude (see `epoch_to_millis`).
                    Scalar::Int(i) => epoch_int_to_millis(i).ok_or_else(|| format!("{i} is not an epoch time"))?,
                    Scalar::Float(x) => epoch_to_millis(x).ok_or_else(|| format!("{x} is not an epoch time"))?,
                    _ => return Err("expected an RFC 3339 string or an epoch number".into()),
                };
                self.timestamp = Some(t);
            }
            Field::Status => {
                if let Some(s) = v.as_u64()? {
                    if !(100..=599).contains(&s) {
                        return Err(format!("{s} is not an HTTP status"));
                    }
                    self.status = Some(s as u16);
                }
            }
            Field::Duration => {
                let d = v.as_u64()?;
                if d.is_some_and(|d| d > MAX_DURATION_NS) {
                    return Err(format!("{} ns is longer than a day", d.unwrap_or_default()));
                }
                self.duration_ns = d;
            }
            Field::ReqBytes => self.request_bytes = v.as_u64()?,
            Field::RespBytes => self.response_bytes = v.as_u64()?,
            Field::Service => self.service = v.into_string()?,
            Field::Provider => {
                self.provider = v.into_string()?.map(|mut s| {
                    s.make_ascii_lowercase();
                    s
                })
            }
            Field::Region => self.region = v.into_string()?,
            Field::Host => self.host = v.into_string()?,
            Field::Method => {
                self.method = v.into_string()?.map(|mut s| {
                    s.make_ascii_uppercase();
                    s
                })
            }
            Field::Path => self.path = v.into_string()?,
            Field::Outcome => self.outcome = v.into_string()?,
            Field::Trace => self.trace_id = v.into_string()?,
            Field::Span => self.span_id = v.into_string()?,
            Field::Parent => self.parent_id = v.into_string()?,
            Field::User => self.user_id = v.into_string()?,
            Field::ClientIp => self.client_ip = v.into_string()?,
            Field::UserAgent => self.user_agent = v.into_string()?,
            Field::DurationUs => self.duration_us = v.as_u64()?,
            Field::UrlOriginal => self.url_original = v.into_string()?,
            Field::ProcessorEvent => self.processor_event = v.into_string()?,
            Field::SpanKind => self.span_kind = v.into_string()?,
            Field::Target => self.target = v.into_string()?,
            Field::Destination => self.destination = v.into_string()?,
            Field::Transaction => self.transaction_id = v.into_string()?,
        }
        Ok(())
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
        assert_eq!(e.duration_ns, Some(33_430_856));
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

    /// Elastic APM documents as APM Server writes them into `traces-apm*` (nested; durations
    /// in µs; no `cloud.provider` on premises).
    const APM_TRANSACTION: &str = r#"{"@timestamp":"2026-03-02T06:00:00.815Z","processor":{"event":"transaction"},"service":{"name":"payments","environment":"prod"},"transaction":{"id":"tx1","name":"POST /pay/{id}","type":"request","duration":{"us":41250}},"trace":{"id":"tr1"},"parent":{"id":"ex1"},"http":{"request":{"method":"POST"},"response":{"status_code":201}},"url":{"path":"/pay/9","original":"https://pay.internal/pay/9"},"event":{"outcome":"success"}}"#;
    const APM_EXIT_SPAN: &str = r#"{"@timestamp":"2026-03-02T06:00:00.800Z","processor":{"event":"span"},"service":{"name":"gateway","target":{"name":"payments","type":"http"}},"transaction":{"id":"gw1"},"parent":{"id":"gw1"},"span":{"id":"ex1","type":"external","subtype":"http","duration":{"us":52000},"destination":{"service":{"resource":"pay.internal:443"}}},"trace":{"id":"tr1"},"http":{"request":{"method":"POST"},"response":{"status_code":201}},"url":{"original":"https://pay.internal/pay/9?x=1"},"cloud":{"provider":"aws"}}"#;

    #[test]
    fn elastic_apm_documents_read_as_they_are() {
        let tx = parse_event(APM_TRANSACTION.as_bytes()).unwrap();
        assert_eq!(tx.client, None, "a transaction is the callee's record");
        assert_eq!(tx.duration_ns, Some(41_250_000));
        assert_eq!(tx.span_id.as_deref(), Some("tx1"), "a transaction's id is its span id");
        assert_eq!(tx.parent_id.as_deref(), Some("ex1"));
        assert_eq!(tx.provider, "onprem", "APM agents name a provider only in a cloud");
        assert_eq!((tx.path.as_str(), tx.status), ("/pay/9", 201));

        let exit = parse_event(APM_EXIT_SPAN.as_bytes()).unwrap();
        let client = exit.client.as_deref().expect("an exit span is the caller's record");
        assert_eq!(
            client.target.as_deref(),
            Some("payments"),
            "service.target.name before the resource"
        );
        assert_eq!(client.transaction_id.as_deref(), Some("gw1"));
        assert_eq!(exit.span_id.as_deref(), Some("ex1"));
        assert_eq!(exit.duration_ns, Some(52_000_000));
        assert_eq!(exit.path, "/pay/9", "the path of url.original");
        assert_eq!(exit.provider, "aws");
        // Without service.target (APM before 8.x) the destination resource names the callee.
        let old = APM_EXIT_SPAN.replace(r#","target":{"name":"payments","type":"http"}"#, "");
        let client = parse_event(old.as_bytes()).unwrap().client.unwrap();
        assert_eq!(client.target.as_deref(), Some("pay.internal:443"));
        // Written back (rejected or held output), it reads the same.
        let again = serde_json::to_string(&exit).unwrap();
        assert_eq!(parse_event(again.as_bytes()).unwrap(), exit, "{again}");
    }

    #[test]
    fn spans_that_call_nobody_are_not_calls_and_span_kind_decides() {
        let internal = APM_EXIT_SPAN
            .replace(r#","target":{"name":"payments","type":"http"}"#, "")
            .replace(r#","destination":{"service":{"resource":"pay.internal:443"}}"#, "");
        assert!(matches!(parse_event(internal.as_bytes()), Err(EventError::NotACall(_))));
        let otel_internal = DOTTED.replace("\"span.id\"", "\"span.kind\":\"INTERNAL\",\"span.id\"");
        assert!(matches!(parse_event(otel_internal.as_bytes()), Err(EventError::NotACall(_))));
        let client = DOTTED.replace("\"span.id\"", "\"span.kind\":\"client\",\"span.id\"");
        assert!(parse_event(client.as_bytes()).unwrap().client.is_some());
        let server = DOTTED.replace("\"span.id\"", "\"span.kind\":\"SERVER\",\"span.id\"");
        assert_eq!(parse_event(server.as_bytes()).unwrap(), parse_event(DOTTED.as_bytes()).unwrap());
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
    fn escapes_and_unicode_are_decoded() {
        let line = DOTTED.replace(r#""url.path":"/api/v1/login""#, r#""url.path":"/caf\u00e9/\"x\"\/\ud83d\ude00""#);
        assert_eq!(parse_event(line.as_bytes()).unwrap().path, "/café/\"x\"/😀");
        let line = DOTTED.replace(r#""user.id":"u82006968""#, r#""user.id":"ü""#);
        assert_eq!(parse_event(line.as_bytes()).unwrap().user_id.as_deref(), Some("ü"));
    }

    #[test]
    fn agrees_with_serde_json_on_what_is_json() {
        for bad in [
            r#"{"a":01}"#.to_owned(),
            r#"{"a":1,}"#.to_owned(),
            r#"{"a" 1}"#.to_owned(),
            r#"{"a":tru}"#.to_owned(),
            r#"{"a":"\x"}"#.to_owned(),
            "{\"a\":\"\u{1}\"}".to_owned(),
            format!("{}{}", "[".repeat(100), "]".repeat(100)),
        ] {
            assert!(
                serde_json::from_str::<serde_json::Value>(&bad).is_err() || bad.starts_with('['),
                "{bad}"
            );
            assert!(matches!(parse_event(bad.as_bytes()), Err(EventError::Json(_))), "{bad}");
        }
        // Unclosed deep nesting is still not JSON, whatever the depth.
        let open = format!("{{\"x\":{}1{}}}", "[".repeat(5000), "]".repeat(4999));
        assert!(matches!(parse_event(open.as_bytes()), Err(EventError::Json(_))));
    }

    #[test]
    fn a_deep_unknown_field_does_not_lose_the_event() {
        for depth in [65, 1000, 100_000] {
            let deep = format!("{}1{}", "[{\"a\":".repeat(depth), "}]".repeat(depth));
            let line = DOTTED.replace(r#""trace.id""#, &format!(r#""extra":{deep},"trace.id""#));
            assert_eq!(parse_event(line.as_bytes()), parse_event(DOTTED.as_bytes()), "depth {depth}");
        }
    }

    #[test]
    fn a_bad_optional_field_is_dropped_and_the_event_kept() {
        let line = DOTTED.replace(
            r#""client.ip""#,
            r#""http.response.bytes":"-","user_agent.original":{"x":1},"client.ip""#,
        );
        let (e, dropped) = parse_event_lenient(line.as_bytes()).unwrap();
        assert_eq!(e, parse_event(DOTTED.as_bytes()).unwrap());
        let fields: Vec<_> = dropped.iter().map(|d| d.field).collect();
        assert_eq!(fields, ["http.response.bytes", "user_agent.original"]);
        assert!(dropped[0].why.contains("`-` is not a non-negative number"), "{dropped:?}");
        // A required field with a bad value still refuses the line, naming it.
        let line = DOTTED.replace(r#""gateway""#, "true");
        assert!(matches!(
            parse_event(line.as_bytes()),
            Err(EventError::BadValue { field: "service.name", .. })
        ));
    }

    #[test]
    fn epoch_timestamps_follow_the_magnitude_rule() {
        let want = parse_event(DOTTED.as_bytes()).unwrap().timestamp;
        for ts in [
            "1772431200815",
            "1772431200.815",
            "\"1772431200815\"",
            "1772431200815000",
            "1772431200815000000",
        ] {
            let line = DOTTED.replace(r#""2026-03-02T06:00:00.815Z""#, ts);
            assert_eq!(parse_event(line.as_bytes()).unwrap().timestamp, want, "{ts}");
        }
        let secs = DOTTED.replace(r#""2026-03-02T06:00:00.815Z""#, "1772431200");
        assert_eq!(parse_event(secs.as_bytes()).unwrap().timestamp, want - 815);
        for bad in ["\"2026-02-30T00:00:00Z\"", "1e400"] {
            let line = DOTTED.replace(r#""2026-03-02T06:00:00.815Z""#, bad);
            assert!(parse_event(line.as_bytes()).is_err(), "{bad}");
        }
    }

    #[test]
    fn durations_beyond_a_day_are_refused() {
        let line = DOTTED.replace("33430856", "18446744073709551615");
        assert!(matches!(
            parse_event(line.as_bytes()),
            Err(EventError::BadValue {
                field: "event.duration",
                ..
            })
        ));
    }

    #[test]
    fn mutated_lines_never_panic_and_valid_json_agrees_with_serde() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
        let alphabet = br#"{}[]:,"\\ 0123456789.-+eEtrufalsn@/abcxyz"#;
        for _ in 0..50_000 {
            let mut b = DOTTED.as_bytes().to_vec();
            for _ in 0..rng.gen_range(1..4) {
                let i = rng.gen_range(0..b.len());
                match rng.gen_range(0..3) {
                    0 => b[i] = alphabet[rng.gen_range(0..alphabet.len())],
                    1 => {
                        b.remove(i);
                    }
                    _ => b.insert(i, alphabet[rng.gen_range(0..alphabet.len())]),
                }
            }
            let ours = parse_event(&b);
            // Whatever we accept must be JSON.
            if ours.is_ok() {
                assert!(
                    serde_json::from_slice::<serde_json::Value>(&b).is_ok(),
                    "{}",
                    String::from_utf8_lossy(&b)
                );
            }
            // And JSON we reject must be rejected for a reason other than syntax.
            if serde_json::from_slice::<serde_json::Value>(&b).is_ok_and(|v| v.is_object()) {
                assert!(
                    !matches!(ours, Err(EventError::Json(_))),
                    "{}: {ours:?}",
                    String::from_utf8_lossy(&b)
                );
            }
        }
    }

    #[test]
    fn writer_round_trips() {
        let e = parse_event(DOTTED.as_bytes()).unwrap();
        let line = serde_json::to_string(&e).unwrap();
        assert_eq!(parse_event(line.as_bytes()).unwrap(), e);
    }
}
