//! Field maps: any JSON record read into the event contract by naming, for each contract field,
//! where it comes from. The same mechanism reads a shop's own JSON (`[input.fields]`, `--field`)
//! and the cloud formats apiwatch knows (`formats/*.toml` are field maps too), so a field map a
//! user writes is checked, converted and reported exactly like a built-in one.
//!
//! A source name is a path: `resp_ms`, `properties.httpMethod` (nested objects or a dotted key,
//! or any mix), tried in order when several are given. Values convert by the target: times by
//! [`TimeFormat`], durations by [`DurationUnit`] (a string such as `"0.012s"` says its own unit),
//! numbers from numbers or numeric strings, a full URL to its path. An optional `regex` keeps its
//! first capture group (`targetgroup/([^/]+)/` names a service from an ARN); `value` is a
//! constant (`cloud.provider = { value = "aws" }`).

use std::borrow::Cow;

use chrono::{DateTime, NaiveDateTime};
use serde_json::Value;

use crate::model::event::{Event, Text, MAX_DURATION_NS};
use crate::model::time::{epoch_int_to_millis, epoch_to_millis, parse_rfc3339, Millis};
use crate::source::json::{DroppedField, EventError};

/// The contract's fields, as a field map names them (events.md).
pub const TARGETS: [&str; 18] = [
    "@timestamp",
    "service.name",
    "cloud.provider",
    "cloud.region",
    "host.name",
    "http.request.method",
    "url.path",
    "http.response.status_code",
    "event.duration",
    "event.outcome",
    "trace.id",
    "span.id",
    "parent.id",
    "user.id",
    "client.ip",
    "user_agent.original",
    "http.request.bytes",
    "http.response.bytes",
];

/// Index of a target in [`TARGETS`].
fn target_index(name: &str) -> Option<usize> {
    TARGETS.iter().position(|t| *t == name)
}

const TIMESTAMP: usize = 0;
const DURATION: usize = 8;

/// The unit of a duration field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DurationUnit {
    Ns,
    Us,
    Ms,
    S,
}

impl DurationUnit {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "ns" => DurationUnit::Ns,
            "us" | "µs" => DurationUnit::Us,
            "ms" => DurationUnit::Ms,
            "s" => DurationUnit::S,
            _ => return None,
        })
    }
    fn nanos(self) -> f64 {
        match self {
            DurationUnit::Ns => 1.0,
            DurationUnit::Us => 1e3,
            DurationUnit::Ms => 1e6,
            DurationUnit::S => 1e9,
        }
    }
}

/// How a time field is written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TimeFormat {
    /// RFC 3339 text, a number read as epoch seconds, milliseconds or microseconds by its
    /// magnitude, or an access log's `02/Mar/2026:07:00:01 +0100`.
    Auto,
    EpochS,
    EpochMs,
    EpochUs,
    EpochNs,
    /// A strftime pattern (chrono's), with or without an offset (`%z`); without one it is UTC.
    Pattern(String),
}

impl TimeFormat {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "rfc3339" | "auto" => TimeFormat::Auto,
            "epoch_s" => TimeFormat::EpochS,
            "epoch_ms" => TimeFormat::EpochMs,
            "epoch_us" => TimeFormat::EpochUs,
            "epoch_ns" => TimeFormat::EpochNs,
            p if p.contains('%') => TimeFormat::Pattern(p.to_owned()),
            _ => return None,
        })
    }
}

/// Where one contract field comes from.
#[derive(Clone, Debug)]
pub struct FieldSpec {
    /// Source paths, tried in order.
    pub from: Vec<String>,
    /// A constant instead of (or, after `from`, as the fallback for) a source.
    pub value: Option<String>,
    pub unit: Option<DurationUnit>,
    pub time: Option<TimeFormat>,
    pub regex: Option<regex::Regex>,
}

impl PartialEq for FieldSpec {
    fn eq(&self, o: &Self) -> bool {
        self.from == o.from
            && self.value == o.value
            && self.unit == o.unit
            && self.time == o.time
            && self.regex.as_ref().map(regex::Regex::as_str) == o.regex.as_ref().map(regex::Regex::as_str)
    }
}

/// A field map: for each contract field, where it comes from (or nothing).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FieldMap {
    specs: Vec<Option<FieldSpec>>,
}

/// Why a field map is not valid: the key (`input.fields."event.duration"`) and the problem.
#[derive(Debug, PartialEq)]
pub struct FieldMapError {
    pub key: String,
    pub problem: String,
}

impl std::fmt::Display for FieldMapError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "`{}` {}", self.key, self.problem)
    }
}

impl FieldMap {
    /// The identity map: every field from its ECS name (what `json` reads, as a base that a
    /// user's map overrides field by field).
    pub fn ecs() -> Self {
        FieldMap {
            specs: TARGETS
                .iter()
                .map(|t| {
                    Some(FieldSpec {
                        from: vec![(*t).to_owned()],
                        value: None,
                        unit: (*t == "event.duration").then_some(DurationUnit::Ns),
                        time: (*t == "@timestamp").then_some(TimeFormat::Auto),
                        regex: None,
                    })
                })
                .collect(),
        }
    }

    /// Reads a map from a TOML table (`[input.fields]`, or a format's file); `key` prefixes the
    /// names in errors.
    pub fn from_toml(table: &toml::Table, key: &str) -> Result<Self, FieldMapError> {
        let mut map = FieldMap::default();
        map.merge_toml(table, key)?;
        Ok(map)
    }

    /// Sets the fields `table` names, over what the map has.
    pub fn merge_toml(&mut self, table: &toml::Table, key: &str) -> Result<(), FieldMapError> {
        self.specs.resize(TARGETS.len(), None);
        for (target, v) in table {
            let at = format!("{key}.\"{target}\"");
            let err = |problem: String| FieldMapError { key: at.clone(), problem };
            let i = target_index(target).ok_or_else(|| {
                err(format!(
                    "is not a field of the event contract; the fields are {}",
                    TARGETS.join(", ")
                ))
            })?;
            let spec = spec_from_toml(v, i).map_err(err)?;
            self.specs[i] = Some(spec);
        }
        Ok(())
    }

    /// Sets fields over this map from another (a user's map over a format's).
    pub fn overlay(&mut self, other: &FieldMap) {
        self.specs.resize(TARGETS.len(), None);
        for (i, s) in other.specs.iter().enumerate() {
            if let Some(s) = s {
                self.specs[i] = Some(s.clone());
            }
        }
    }

    /// Gives `target` the constant `value` where its sources say nothing (`--service`).
    pub fn fallback(&mut self, target: &str, value: Option<&str>) {
        let (Some(i), Some(v)) = (target_index(target), value) else {
            return;
        };
        self.specs.resize(TARGETS.len(), None);
        let spec = self.specs[i].get_or_insert_with(|| FieldSpec {
            from: Vec::new(),
            value: None,
            unit: None,
            time: None,
            regex: None,
        });
        if spec.value.is_none() {
            spec.value = Some(v.to_owned());
        }
    }

    pub fn is_empty(&self) -> bool {
        self.specs.iter().all(Option::is_none)
    }

    /// Whether the map says where a duration comes from.
    pub fn has_duration(&self) -> bool {
        self.specs.get(DURATION).is_some_and(Option::is_some)
    }

    /// One `--field TARGET=SOURCE[:UNIT|:TIME]` flag as the TOML entry it stands for.
    pub fn flag_entry(flag: &str) -> Result<(String, toml::Value), String> {
        let (target, rest) = flag
            .split_once('=')
            .ok_or_else(|| format!("`{flag}` is not TARGET=SOURCE (for example `event.duration=resp_ms:ms`)"))?;
        let mut t = toml::Table::new();
        let (source, option) = match rest.split_once(':') {
            Some((s, o)) => (s, Some(o)),
            None => (rest, None),
        };
        t.insert("from".into(), toml::Value::String(source.to_owned()));
        match (target, option) {
            (_, None) => {}
            ("event.duration", Some(u)) => {
                t.insert("unit".into(), toml::Value::String(u.to_owned()));
            }
            ("@timestamp", Some(f)) => {
                t.insert("time".into(), toml::Value::String(f.to_owned()));
            }
            (_, Some(o)) => {
                return Err(format!(
                    "`{flag}`: `:{o}` applies to event.duration (a unit) or @timestamp (a time format) only"
                ))
            }
        }
        Ok((target.to_owned(), toml::Value::Table(t)))
    }

    fn spec(&self, i: usize) -> Option<&FieldSpec> {
        self.specs.get(i).and_then(Option::as_ref)
    }

    /// The first value a target's sources give, as text (after the regex), or its constant.
    fn text<'v>(&'v self, record: &'v Value, i: usize) -> Option<Cow<'v, str>> {
        let spec = self.spec(i)?;
        for path in &spec.from {
            let Some(v) = lookup(record, path) else { continue };
            let Some(t) = scalar_text(v) else { continue };
            match &spec.regex {
                None => return Some(t),
                Some(re) => {
                    if let Some(c) = re.captures(&t) {
                        // The first group that took part (alternatives each have their own).
                        let m = c
                            .iter()
                            .skip(1)
                            .flatten()
                            .next()
                            .or_else(|| c.get(0))
                            .map(|m| m.as_str().to_owned());
                        if let Some(m) = m.filter(|m| !m.is_empty()) {
                            return Some(Cow::Owned(m));
                        }
                    }
                }
            }
        }
        spec.value.as_deref().map(Cow::Borrowed)
    }

    /// Reads one record into an event. `duration` says what a missing duration means: the
    /// event is untimed (`None`), which a caller counts.
    pub fn event(&self, record: &Value) -> Result<(Event, Vec<DroppedField>), EventError> {
        let mut dropped = Vec::new();
        let req = |i: usize| -> Result<Cow<'_, str>, EventError> { self.text(record, i).ok_or(EventError::Missing(TARGETS[i])) };
        let bad = |i: usize, why: String| EventError::BadValue { field: TARGETS[i], why };
        let timestamp = {
            let spec_time = self.spec(TIMESTAMP).and_then(|s| s.time.clone()).unwrap_or(TimeFormat::Auto);
            let t = req(TIMESTAMP)?;
            parse_time(&t, &spec_time)
                .ok_or_else(|| bad(TIMESTAMP, format!("`{t}` is not a time of the format {}", time_name(&spec_time))))?
        };
        let path = {
            let p = req(6)?;
            url_path(&p)
                .ok_or_else(|| bad(6, format!("`{p}` is neither a path nor a URL")))?
                .into()
        };
        let status = {
            let s = req(7)?;
            s.trim()
                .parse::<f64>()
                .ok()
                .filter(|v| v.fract() == 0.0 && (100.0..600.0).contains(v))
                .map(|v| v as u16)
                .ok_or_else(|| bad(7, format!("`{s}` is not an HTTP status")))?
        };
        let duration_ns = match self.text(record, DURATION) {
            None => None,
            Some(d) => {
                let unit = self.spec(DURATION).and_then(|s| s.unit).unwrap_or(DurationUnit::Ns);
                match parse_duration(&d, unit) {
                    Ok(v) => v,
                    Err(why) => return Err(bad(DURATION, why)),
                }
            }
        };
        let opt_text = |i: usize| self.text(record, i).map(|t| Text::from(t.as_ref()));
        let mut bytes = |i: usize| {
            let t = self.text(record, i)?;
            match t.trim().parse::<u64>() {
                Ok(v) => Some(v),
                Err(_) => {
                    dropped.push(DroppedField {
                        field: TARGETS[i],
                        why: format!("`{t}` is not a number of bytes"),
                    });
                    None
                }
            }
        };
        let request_bytes = bytes(16);
        let response_bytes = bytes(17);
        let event = Event {
            timestamp,
            service: req(1)?.as_ref().into(),
            provider: req(2)?.as_ref().into(),
            region: opt_text(3),
            host: opt_text(4),
            method: req(5)?.as_ref().into(),
            path,
            status,
            duration_ns,
            outcome: opt_text(9),
            trace_id: opt_text(10),
            span_id: opt_text(11),
            parent_id: opt_text(12),
            user_id: opt_text(13),
            client_ip: opt_text(14),
            user_agent: opt_text(15),
            request_bytes,
            response_bytes,
            client: None,
        };
        Ok((event, dropped))
    }
}

fn time_name(f: &TimeFormat) -> &str {
    match f {
        TimeFormat::Auto => "rfc3339 (or an epoch number)",
        TimeFormat::EpochS => "epoch_s",
        TimeFormat::EpochMs => "epoch_ms",
        TimeFormat::EpochUs => "epoch_us",
        TimeFormat::EpochNs => "epoch_ns",
        TimeFormat::Pattern(p) => p,
    }
}

/// A field's spec from its TOML value: `"src"`, `["a", "b"]` or a table.
fn spec_from_toml(v: &toml::Value, target: usize) -> Result<FieldSpec, String> {
    let mut spec = FieldSpec {
        from: Vec::new(),
        value: None,
        unit: None,
        time: None,
        regex: None,
    };
    let paths = |v: &toml::Value| -> Result<Vec<String>, String> {
        match v {
            toml::Value::String(s) if !s.is_empty() => Ok(vec![s.clone()]),
            toml::Value::Array(a) if !a.is_empty() => a
                .iter()
                .map(|x| x.as_str().filter(|s| !s.is_empty()).map(str::to_owned))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| "lists source names: each must be non-empty text".to_owned()),
            _ => Err("must be a source name, a list of them, or a table with `from` or `value`".to_owned()),
        }
    };
    match v {
        toml::Value::Table(t) => {
            for (k, x) in t {
                let text = || x.as_str().map(str::to_owned).ok_or_else(|| format!("`{k}` must be text in quotes"));
                match k.as_str() {
                    "from" => spec.from = paths(x)?,
                    "value" => spec.value = Some(text()?),
                    "unit" if target == DURATION => {
                        let u = text()?;
                        spec.unit = Some(DurationUnit::parse(&u).ok_or_else(|| format!("unit `{u}` is not one of ns, us, ms, s"))?);
                    }
                    "time" if target == TIMESTAMP => {
                        let f = text()?;
                        spec.time = Some(TimeFormat::parse(&f).ok_or_else(|| {
                            format!("time `{f}` is not rfc3339, epoch_s, epoch_ms, epoch_us, epoch_ns or a strftime pattern such as `%d/%b/%Y:%H:%M:%S %z`")
                        })?);
                    }
                    "regex" => {
                        let r = text()?;
                        spec.regex = Some(regex::Regex::new(&r).map_err(|e| format!("regex `{r}` does not compile: {e}"))?);
                    }
                    "unit" | "time" => return Err(format!("`{k}` applies to event.duration (unit) or @timestamp (time) only")),
                    other => return Err(format!("has an unknown key `{other}` (from, value, unit, time, regex)")),
                }
            }
            if spec.from.is_empty() && spec.value.is_none() {
                return Err("needs `from` (source names) or `value` (a constant)".to_owned());
            }
        }
        other => spec.from = paths(other)?,
    }
    Ok(spec)
}

/// The value at `path` in `v`: a key may hold dots itself (`"service.name"`) or be nested
/// (`service: {name}`), in any mix.
pub fn lookup<'v>(v: &'v Value, path: &str) -> Option<&'v Value> {
    let obj = v.as_object()?;
    if let Some(x) = obj.get(path) {
        return Some(x);
    }
    let mut from = 0;
    while let Some(dot) = path[from..].find('.') {
        let at = from + dot;
        if let Some(inner) = obj.get(&path[..at]) {
            if let Some(x) = lookup(inner, &path[at + 1..]) {
                return Some(x);
            }
        }
        from = at + 1;
    }
    None
}

/// A scalar as text; `null`, empty text and `-` (a log's "no value") are nothing.
fn scalar_text(v: &Value) -> Option<Cow<'_, str>> {
    let t = match v {
        Value::String(s) => Cow::Borrowed(s.as_str()),
        Value::Number(n) => Cow::Owned(n.to_string()),
        Value::Bool(b) => Cow::Owned(b.to_string()),
        _ => return None,
    };
    (!t.is_empty() && t != "-").then_some(t)
}

fn parse_time(t: &str, f: &TimeFormat) -> Option<Millis> {
    let num = || t.trim().parse::<f64>().ok().filter(|v| v.is_finite());
    let scaled = |k: f64| num().map(|v| (v * k).round()).filter(|v| v.abs() < 9.2e18).map(|v| v as Millis);
    match f {
        TimeFormat::Auto => parse_rfc3339(t)
            .or_else(|| {
                if t.contains(['.', 'e', 'E']) {
                    epoch_to_millis(num()?)
                } else {
                    epoch_int_to_millis(t.trim().parse().ok()?)
                }
            })
            .or_else(|| crate::source::access::parse_httpdate(t)),
        TimeFormat::EpochS => scaled(1e3),
        TimeFormat::EpochMs => scaled(1.0),
        TimeFormat::EpochUs => scaled(1e-3),
        TimeFormat::EpochNs => scaled(1e-6),
        TimeFormat::Pattern(p) => DateTime::parse_from_str(t, p)
            .map(|d| d.timestamp_millis())
            .ok()
            .or_else(|| NaiveDateTime::parse_from_str(t, p).ok().map(|d| d.and_utc().timestamp_millis())),
    }
}

/// A duration in `unit`, or with its own suffix (`"0.012s"`, `"12ms"`). A negative value is a
/// source's "not measured" (AWS writes -1 where a request never reached a target): untimed.
fn parse_duration(d: &str, unit: DurationUnit) -> Result<Option<u64>, String> {
    let t = d.trim();
    let (num, unit) = ["ns", "us", "µs", "ms", "s"]
        .iter()
        .find_map(|suffix| {
            let n = t.strip_suffix(suffix)?;
            (!n.is_empty() && n.ends_with(|c: char| c.is_ascii_digit() || c == '.')).then(|| (n, DurationUnit::parse(suffix)))
        })
        .map_or((t, Some(unit)), |(n, u)| (n, u));
    let unit = unit.unwrap_or(DurationUnit::Ns);
    let v: f64 = num.parse().map_err(|_| format!("`{d}` is not a number"))?;
    if !v.is_finite() {
        return Err(format!("`{d}` is not a number"));
    }
    if v < 0.0 {
        return Ok(None);
    }
    let ns = v * unit.nanos();
    if ns > MAX_DURATION_NS as f64 {
        return Err(format!("`{d}` is longer than a day (is the unit right?)"));
    }
    Ok(Some(ns.round() as u64))
}

/// The path of a request target or URL: scheme and authority, query and fragment removed.
pub fn url_path(s: &str) -> Option<&str> {
    let s = s.trim();
    let rest = match s.find("://") {
        Some(i) if s[..i].bytes().all(|c| c.is_ascii_alphanumeric() || c == b'+') => {
            let after = &s[i + 3..];
            match after.find(['/', '?', '#']) {
                Some(j) if after.as_bytes()[j] == b'/' => &after[j..],
                _ => "/",
            }
        }
        _ => s,
    };
    let path = rest.split(['?', '#']).next().unwrap_or(rest);
    path.starts_with('/').then_some(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(text: &str) -> FieldMap {
        let t: toml::Table = toml::from_str(text).unwrap();
        FieldMap::from_toml(&t, "input.fields").unwrap()
    }

    #[test]
    fn a_json_log_with_other_names_reads_into_the_contract() {
        let mut m = FieldMap::ecs();
        m.overlay(&map(r#"
            "@timestamp" = { from = "ts", time = "epoch_ms" }
            "event.duration" = { from = "resp_ms", unit = "ms" }
            "service.name" = "svc"
            "cloud.provider" = { from = "env", value = "onprem" }
            "url.path" = ["req.uri", "path"]
            "http.response.status_code" = "code"
            "http.request.method" = "req.method"
            "#));
        let rec = serde_json::json!({"ts": 1772431201123_i64, "resp_ms": 12.5, "svc": "payments",
            "req": {"method": "POST", "uri": "https://api.example.com:8443/pay/7?x=1"}, "code": "502",
            "trace.id": "abc", "http": {"response": {"bytes": "-"}}});
        let (e, dropped) = m.event(&rec).unwrap();
        assert_eq!(e.timestamp, 1_772_431_201_123);
        assert_eq!(e.duration_ns, Some(12_500_000));
        assert_eq!((e.service.as_str(), e.provider.as_str()), ("payments", "onprem"));
        assert_eq!((e.method.as_str(), e.path.as_str(), e.status), ("POST", "/pay/7", 502));
        assert_eq!(e.trace_id.as_deref(), Some("abc"), "unmapped fields keep their ECS names");
        assert!(dropped.is_empty(), "`-` is no value: {dropped:?}");
    }

    #[test]
    fn mistakes_in_a_map_name_the_key_and_what_is_allowed() {
        let err = |text: &str| {
            let t: toml::Table = toml::from_str(text).unwrap();
            FieldMap::from_toml(&t, "input.fields").unwrap_err().to_string()
        };
        assert!(err(r#""latency" = "x""#).contains("`input.fields.\"latency\"` is not a field of the event contract"));
        assert!(err(r#""event.duration" = { from = "x", unit = "min" }"#).contains("unit `min` is not one of ns, us, ms, s"));
        assert!(err(r#""@timestamp" = { from = "x", time = "unix" }"#).contains("strftime"));
        assert!(err(r#""service.name" = { regex = "(" , from = "x"}"#).contains("does not compile"));
        assert!(err(r#""service.name" = { unit = "ms" }"#).contains("applies to event.duration"));
        assert!(err(r#""service.name" = 3"#).contains("must be a source name"));
    }

    #[test]
    fn times_durations_and_urls_convert_by_their_declared_forms() {
        assert_eq!(parse_time("1772431201", &TimeFormat::EpochS), Some(1_772_431_201_000));
        assert_eq!(parse_time("1772431201123456", &TimeFormat::EpochUs), Some(1_772_431_201_123));
        assert_eq!(parse_time("1772431201.5", &TimeFormat::Auto), Some(1_772_431_201_500));
        let clf = TimeFormat::Pattern("%d/%b/%Y:%H:%M:%S %z".into());
        assert_eq!(parse_time("02/Mar/2026:07:00:01 +0100", &clf), Some(1_772_431_201_000));
        let naive = TimeFormat::Pattern("%Y-%m-%d %H:%M:%S".into());
        assert_eq!(parse_time("2026-03-02 06:00:01", &naive), Some(1_772_431_201_000));
        assert_eq!(parse_time("yesterday", &TimeFormat::Auto), None);
        assert_eq!(parse_duration("0.012345s", DurationUnit::Ms), Ok(Some(12_345_000)));
        assert_eq!(parse_duration("250", DurationUnit::Ms), Ok(Some(250_000_000)));
        assert_eq!(parse_duration("-1", DurationUnit::S), Ok(None));
        assert!(parse_duration("90000", DurationUnit::S).unwrap_err().contains("longer than a day"));
        assert!(parse_duration("fast", DurationUnit::S).is_err());
        assert_eq!(url_path("https://h.example:443/a/b?c#d"), Some("/a/b"));
        assert_eq!(url_path("http://[2001:db8::1]:80/x"), Some("/x"));
        assert_eq!(url_path("https://h.example"), Some("/"));
        assert_eq!(url_path("/p?q"), Some("/p"));
        assert_eq!(url_path("example.com:443"), None);
    }

    #[test]
    fn flags_are_the_toml_entries_they_stand_for() {
        let (k, v) = FieldMap::flag_entry("event.duration=resp_ms:ms").unwrap();
        assert_eq!(k, "event.duration");
        assert_eq!(v.to_string(), r#"{ from = "resp_ms", unit = "ms" }"#);
        let (_, v) = FieldMap::flag_entry("@timestamp=time:%Y-%m-%d %H:%M:%S").unwrap();
        assert_eq!(v.get("time").and_then(|t| t.as_str()), Some("%Y-%m-%d %H:%M:%S"));
        assert!(FieldMap::flag_entry("service.name=svc:ms").unwrap_err().contains("applies to"));
        assert!(FieldMap::flag_entry("svc").unwrap_err().contains("TARGET=SOURCE"));
    }

    #[test]
    fn lookup_takes_dotted_nested_and_mixed_paths() {
        let v = serde_json::json!({"a": {"b.c": {"d": 1}}, "x.y": 2, "p": {"q": 3}});
        assert_eq!(lookup(&v, "a.b.c.d"), Some(&serde_json::json!(1)));
        assert_eq!(lookup(&v, "x.y"), Some(&serde_json::json!(2)));
        assert_eq!(lookup(&v, "p.q"), Some(&serde_json::json!(3)));
        assert_eq!(lookup(&v, "p.r"), None);
    }
}
