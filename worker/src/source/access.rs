//! Access logs (nginx, Apache) read directly, so a newcomer can point `apiwatch detect` at
//! `/var/log/nginx/access.log` without Logstash. The patterns are Logstash's own: the grok file
//! `logstash/patterns/apiwatch` is compiled here with the `grok` crate (which reads Logstash's
//! pattern syntax and ships the standard patterns), so the worker and the Logstash pipeline
//! cannot disagree about what a line means.
//!
//! The format is combined log format plus optional `key=value` extras (request time, upstream
//! time, request length, trace ids, epoch time with milliseconds, service, cloud, region); the
//! pattern file's header gives the nginx `log_format` and Apache `LogFormat` lines.

use chrono::DateTime;

use crate::model::event::{Event, Text, MAX_DURATION_NS};
use crate::model::time::{epoch_int_to_millis, epoch_to_millis, Millis};
use crate::source::formats::LogFormat;
use crate::source::json::EventError;

/// The grok patterns shared with Logstash.
pub const PATTERNS: &str = include_str!("../../../logstash/patterns/apiwatch");

/// What a line does not say and the input's configuration does (`--service`, `--provider`).
#[derive(Clone, Debug, Default)]
pub struct AccessDefaults {
    pub service: Option<String>,
    pub provider: Option<String>,
}

/// Reads `NAME regex` lines (Logstash's patterns_dir format) into `grok`.
pub fn add_patterns(grok: &mut grok::Grok, text: &str) {
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some((name, pattern)) = line.split_once(' ') {
            grok.add_pattern(name.trim(), pattern.trim());
        }
    }
}

/// One format's compiled pattern, turning lines into events.
pub struct AccessLogParser {
    pattern: grok::Pattern,
    format: LogFormat,
    defaults: AccessDefaults,
}

impl AccessLogParser {
    pub fn new(format: LogFormat, defaults: AccessDefaults) -> anyhow::Result<Self> {
        let name = format
            .pattern_name()
            .ok_or_else(|| anyhow::anyhow!("JSON input has no access-log pattern"))?;
        let mut grok = grok::Grok::with_default_patterns();
        add_patterns(&mut grok, PATTERNS);
        // Anchored: Logstash's pipeline anchors the same way, so a line either is the format or
        // goes to the dead letters; a prefix that happens to match is not an event.
        let pattern = grok
            .compile(&format!("^%{{{name}}}$"), false)
            .map_err(|e| anyhow::anyhow!("logstash/patterns/apiwatch: {name} does not compile: {e}"))?;
        Ok(AccessLogParser { pattern, format, defaults })
    }

    pub fn format(&self) -> LogFormat {
        self.format
    }

    pub fn parse(&self, line: &str) -> Result<Event, EventError> {
        let m = self
            .pattern
            .match_against(line)
            .ok_or(EventError::Pattern(self.format.pattern_name().unwrap_or("?")))?;
        let get = |k: &str| m.get(k).filter(|v| !v.is_empty() && *v != "-");
        let bad = |field: &'static str, why: &str| EventError::BadValue {
            field,
            why: why.to_owned(),
        };

        let timestamp = match get("epoch") {
            Some(ts) => parse_epoch(ts).ok_or_else(|| bad("@timestamp", "ts= is not an epoch time"))?,
            None => {
                let t = get("time_local").ok_or(EventError::Missing("@timestamp"))?;
                parse_httpdate(t).ok_or_else(|| bad("@timestamp", "not a [dd/Mon/yyyy:hh:mm:ss +zzzz] time"))?
            }
        };
        // A log without timing (nginx's and Apache's own default formats) gives untimed events.
        let duration_ns = match (get("request_time"), get("duration_us")) {
            (Some(s), _) => Some(seconds_to_ns(s).ok_or_else(|| bad("event.duration", "rt= is not a number of seconds up to a day"))?),
            (None, Some(us)) => Some(
                us.parse::<u64>()
                    .ok()
                    .and_then(|us| us.checked_mul(1000))
                    .filter(|&ns| ns <= MAX_DURATION_NS)
                    .ok_or_else(|| bad("event.duration", "%D is not a number of microseconds up to a day"))?,
            ),
            (None, None) => None,
        };
        let service = get("service")
            .or(self.defaults.service.as_deref())
            .ok_or(EventError::Missing("service.name"))?;
        let provider = get("cloud")
            .or(self.defaults.provider.as_deref())
            .ok_or(EventError::Missing("cloud.provider"))?;
        let target = get("request_target").ok_or(EventError::Missing("url.path"))?;
        let path = target.split(['?', '#']).next().unwrap_or(target);
        if !path.starts_with('/') {
            return Err(bad("url.path", "the request target is not a path"));
        }
        let status = get("status")
            .and_then(|s| s.parse::<u16>().ok())
            .filter(|s| (100..600).contains(s))
            .ok_or_else(|| bad("http.response.status_code", "not an HTTP status"))?;
        let number = |k: &str| get(k).and_then(|v| v.parse::<u64>().ok());
        let text = |k: &str| get(k).map(Text::from);
        let user_agent = get("user_agent").map(|ua| Text::from(ua.replace("\\x22", "\"")));
        Ok(Event {
            timestamp,
            service: service.into(),
            provider: provider.into(),
            region: text("region"),
            host: None,
            method: get("method").ok_or(EventError::Missing("http.request.method"))?.into(),
            path: path.into(),
            status,
            duration_ns,
            outcome: None,
            trace_id: text("trace_id").or_else(|| text("tp_trace_id")),
            span_id: text("span_id"),
            parent_id: text("parent_id").or_else(|| text("tp_parent_id")),
            user_id: text("remote_user"),
            client_ip: text("client_ip"),
            user_agent,
            request_bytes: number("request_length"),
            response_bytes: number("body_bytes"),
            client: None,
        })
    }
}

fn seconds_to_ns(s: &str) -> Option<u64> {
    let v: f64 = s.parse().ok()?;
    let ns = v * 1e9;
    (ns.is_finite() && ns >= 0.0 && ns <= MAX_DURATION_NS as f64).then(|| ns.round() as u64)
}

/// nginx's `$msec` (seconds with a fraction) or Apache's `%{msec}t` (whole milliseconds): the
/// magnitude rule of [`epoch_to_millis`], without wrapping at the extremes.
fn parse_epoch(s: &str) -> Option<Millis> {
    if s.contains(['.', 'e', 'E']) {
        epoch_to_millis(s.parse().ok()?)
    } else {
        epoch_int_to_millis(s.parse().ok()?)
    }
}

/// `10/Oct/2026:13:55:36 -0700`.
pub fn parse_httpdate(s: &str) -> Option<Millis> {
    DateTime::parse_from_str(s, "%d/%b/%Y:%H:%M:%S %z")
        .ok()
        .map(|t| t.timestamp_millis())
}

/// Writes an event as one access-log line of `format` (the simulator's access logs; the
/// inverse of [`AccessLogParser::parse`] for everything the format carries).
pub fn format_line(e: &Event, format: LogFormat) -> String {
    use std::fmt::Write;
    let dash = |v: Option<&str>| v.filter(|s| !s.is_empty()).unwrap_or("-").to_owned();
    let time = DateTime::from_timestamp_millis(e.timestamp)
        .map(|t| t.format("%d/%b/%Y:%H:%M:%S +0000").to_string())
        .unwrap_or_default();
    let mut s = format!(
        "{} - {} [{time}] \"{} {} HTTP/1.1\" {} {} \"-\" \"{}\"",
        dash(e.client_ip.as_deref()),
        dash(e.user_id.as_deref()),
        e.method,
        e.path,
        e.status,
        e.response_bytes.map_or("-".to_owned(), |b| b.to_string()),
        dash(e.user_agent.as_deref()).replace('"', "\\x22"),
    );
    match (format, e.duration_ns) {
        (_, None) => {}
        (LogFormat::Apache, Some(ns)) => {
            let _ = write!(s, " {}", ns / 1000);
        }
        (_, Some(ns)) => {
            let secs = ns as f64 / 1e9;
            let _ = write!(s, " rt={secs:.3} urt={secs:.3}");
        }
    }
    let _ = write!(
        s,
        " rl={} trace={} span={} parent={} tp=\"-\"",
        e.request_bytes.map_or("-".to_owned(), |b| b.to_string()),
        dash(e.trace_id.as_deref()),
        dash(e.span_id.as_deref()),
        dash(e.parent_id.as_deref()),
    );
    match format {
        LogFormat::Apache => {
            let _ = write!(s, " ts={}", e.timestamp);
        }
        _ => {
            let _ = write!(s, " ts={}.{:03}", e.timestamp.div_euclid(1000), e.timestamp.rem_euclid(1000));
        }
    }
    let _ = write!(s, " svc={} cloud={}", e.service, e.provider);
    if let Some(r) = &e.region {
        let _ = write!(s, " region={r}");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nginx() -> AccessLogParser {
        AccessLogParser::new(LogFormat::Nginx, AccessDefaults::default()).unwrap()
    }

    /// A parser whose lines need not say their service and provider.
    fn with_defaults(format: LogFormat, service: &str, provider: &str) -> AccessLogParser {
        let defaults = AccessDefaults {
            service: Some(service.into()),
            provider: Some(provider.into()),
        };
        AccessLogParser::new(format, defaults).unwrap()
    }

    #[test]
    fn a_full_nginx_line_maps_to_an_event() {
        let line = r#"10.1.2.3 - u-42 [02/Mar/2026:06:00:01 +0100] "POST /payments/123?x=1 HTTP/1.1" 502 17 "-" "okhttp/4.9" rt=0.250 urt=0.249, 0.001 rl=512 trace=4bf92f3577b34da6a3ce929d0e0e4736 span=00f067aa0ba902b7 parent=- tp="-" ts=1772427601.123 svc=payments cloud=aws region=eu-west-1"#;
        let e = nginx().parse(line).unwrap();
        assert_eq!(e.timestamp, 1_772_427_601_123);
        assert_eq!(
            (e.service.as_str(), e.provider.as_str(), e.region.as_deref()),
            ("payments", "aws", Some("eu-west-1"))
        );
        assert_eq!((e.method.as_str(), e.path.as_str(), e.status), ("POST", "/payments/123", 502));
        assert_eq!(e.duration_ns, Some(250_000_000));
        assert_eq!((e.request_bytes, e.response_bytes), (Some(512), Some(17)));
        assert_eq!(e.trace_id.as_deref(), Some("4bf92f3577b34da6a3ce929d0e0e4736"));
        assert_eq!((e.span_id.as_deref(), e.parent_id.as_deref()), (Some("00f067aa0ba902b7"), None));
        assert_eq!(e.user_id.as_deref(), Some("u-42"));
        assert_eq!(e.user_agent.as_deref(), Some("okhttp/4.9"));
    }

    #[test]
    fn the_time_falls_back_to_time_local_with_its_offset_and_traceparent_gives_the_parent() {
        let line = r#"10.1.2.3 - - [02/Mar/2026:07:00:01 +0100] "GET /x HTTP/2.0" 200 - "-" "-" rt=0.004 tp="00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01""#;
        let p = with_defaults(LogFormat::Nginx, "edge", "onprem");
        let e = p.parse(line).unwrap();
        assert_eq!(e.timestamp, 1_772_431_201_000);
        assert_eq!(e.service.as_str(), "edge");
        assert_eq!(e.parent_id.as_deref(), Some("00f067aa0ba902b7"));
        assert_eq!(e.trace_id.as_deref(), Some("4bf92f3577b34da6a3ce929d0e0e4736"));
        assert_eq!(e.response_bytes, None);
    }

    #[test]
    fn extreme_numbers_are_refused_not_wrapped() {
        let base = r#"10.1.2.3 - - [02/Mar/2026:07:00:01 +0100] "GET /x HTTP/1.1" 200 5 "-" "curl/8""#;
        let apache = with_defaults(LogFormat::Apache, "a", "aws");
        // %D of 18446744073709552 µs wrapped to 384 ns before.
        let err = apache.parse(&format!("{base} 18446744073709552")).unwrap_err();
        assert!(
            matches!(
                err,
                EventError::BadValue {
                    field: "event.duration",
                    ..
                }
            ),
            "{err:?}"
        );
        assert_eq!(apache.parse(&format!("{base} 2500")).unwrap().duration_ns, Some(2_500_000));
        let p = nginx();
        for ts in ["-9223372036854775808", "9999999999999999.9", "9223372036854775807"] {
            let line = format!("{base} rt=0.1 ts={ts} svc=a cloud=aws");
            match p.parse(&line) {
                // Either refused here or given a time the range check refuses: never 1970 by wrapping.
                Ok(e) => assert!(
                    crate::model::time::TimeRange::default()
                        .check(e.timestamp, 1_772_409_600_000)
                        .is_some(),
                    "{ts} -> {}",
                    e.timestamp
                ),
                Err(e) => assert!(matches!(e, EventError::BadValue { field: "@timestamp", .. }), "{e:?}"),
            }
        }
        let secs = p.parse(&format!("{base} rt=0.1 ts=1772409600 svc=a cloud=aws")).unwrap();
        assert_eq!(secs.timestamp, 1_772_409_600_000);
        let err = p.parse(&format!("{base} rt=99999999.5 svc=a cloud=aws")).unwrap_err();
        assert!(
            matches!(
                err,
                EventError::BadValue {
                    field: "event.duration",
                    ..
                }
            ),
            "{err:?}"
        );
    }

    #[test]
    fn bad_lines_say_what_is_wrong() {
        let p = nginx();
        assert!(matches!(p.parse("GET / 200"), Err(EventError::Pattern("NGINX_APIWATCH"))));
        // A plain combined line has no service; with one, it is an event without a duration.
        let plain = r#"10.1.2.3 - - [02/Mar/2026:07:00:01 +0100] "GET /x HTTP/1.1" 200 5 "-" "curl/8""#;
        assert!(matches!(p.parse(plain), Err(EventError::Missing("service.name"))));
        let untimed = with_defaults(LogFormat::Nginx, "web", "onprem").parse(plain).unwrap();
        assert_eq!((untimed.duration_ns, untimed.status), (None, 200));
        let bad_time = r#"10.1.2.3 - - [31/Feb/2026:07:00:01 +0100] "GET /x HTTP/1.1" 200 5 "-" "curl/8" rt=0.1 svc=a cloud=aws"#;
        assert!(matches!(p.parse(bad_time), Err(EventError::BadValue { field: "@timestamp", .. })));
        let proxy =
            r#"10.1.2.3 - - [02/Mar/2026:07:00:01 +0100] "CONNECT example.com:443 HTTP/1.1" 200 5 "-" "curl/8" rt=0.1 svc=a cloud=aws"#;
        assert!(matches!(p.parse(proxy), Err(EventError::BadValue { field: "url.path", .. })));
    }

    #[test]
    fn apache_durations_are_microseconds() {
        let p = AccessLogParser::new(LogFormat::Apache, AccessDefaults::default()).unwrap();
        let line = r#"192.0.2.7 - - [02/Mar/2026:06:00:01 +0000] "GET /accounts/9 HTTP/1.1" 200 2326 "https://bank.example/" "Mozilla/5.0 (X11; Linux x86_64)" 15234 rl=301 ts=1772431201123 svc=accounts cloud=onprem"#;
        let e = p.parse(line).unwrap();
        assert_eq!(e.duration_ns, Some(15_234_000));
        assert_eq!(e.timestamp, 1_772_431_201_123);
        assert_eq!(e.user_agent.as_deref(), Some("Mozilla/5.0 (X11; Linux x86_64)"));
    }

    #[test]
    fn what_the_simulator_writes_reads_back_the_same() {
        let e = Event {
            timestamp: 1_772_431_201_007,
            service: "payments".into(),
            provider: "azure".into(),
            region: Some("westeurope".into()),
            host: None,
            method: "PUT".into(),
            path: "/payments/7".into(),
            status: 201,
            duration_ns: Some(12_000_000),
            outcome: None,
            trace_id: Some("aa11".into()),
            span_id: Some("bb22".into()),
            parent_id: Some("cc33".into()),
            user_id: Some("u-7".into()),
            client_ip: Some("2001:db8::1".into()),
            user_agent: Some("app \"beta\"/1.2".into()),
            request_bytes: Some(10),
            response_bytes: Some(20),
            client: None,
        };
        for f in [LogFormat::Nginx, LogFormat::Apache] {
            let p = AccessLogParser::new(f, AccessDefaults::default()).unwrap();
            let line = format_line(&e, f);
            let back = p.parse(&line).unwrap_or_else(|err| panic!("{f:?}: {err}: {line}"));
            assert_eq!(back, e, "{f:?}: {line}");
        }
    }
}
