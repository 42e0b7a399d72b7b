//! The log formats apiwatch reads, and how it tells them apart. Each format is a layout (ECS
//! JSON, a grok pattern, a token list or provider JSON) and a mapping to the event contract:
//! the provider formats are field maps written down in this directory (`aws-alb.toml`, ...), read
//! by the same [`FieldMap`] a user's `[input.fields]` is, so the table of what each field becomes
//! is the file itself.
//!
//! `auto` (the default) reads the first lines of each input and takes the format most of them
//! are; a format given by name that the lines are not is reported with the one they look like.

mod text;
pub mod write;

use std::collections::HashMap;

use serde_json::Value;

use super::access::{AccessDefaults, AccessLogParser};
use super::fields::{lookup, FieldMap};
use super::json::{parse_event_lenient, DroppedField, EventError};
use crate::model::Event;

/// What the input lines are.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LogFormat {
    /// Recognised from each input's first lines.
    #[default]
    Auto,
    /// NDJSON events in the ECS shape (events.md), or any JSON through `[input.fields]`.
    Json,
    /// nginx access log: combined, with or without the apiwatch extras (`rt=`, ...).
    Nginx,
    /// Apache httpd access log: combined, with or without `%D` and the apiwatch extras.
    Apache,
    /// Envoy's default text access log, Istio's text or JSON access log.
    Envoy,
    /// AWS Application Load Balancer access log.
    AwsAlb,
    /// Amazon API Gateway JSON access log.
    AwsApigw,
    /// Google Cloud Application Load Balancer request log (Cloud Logging JSON).
    GcpLb,
    /// Azure Application Gateway access log (diagnostic JSON).
    AzureAppgw,
    /// Azure API Management gateway log (diagnostic JSON).
    AzureApim,
    /// An ALB log as Elastic's AWS integration indexes it (`logs-aws.elb_logs-*`).
    ElasticAwsElb,
}

impl LogFormat {
    /// Every format a user can name, `auto` first.
    pub const ALL: [LogFormat; 11] = [
        LogFormat::Auto,
        LogFormat::Json,
        LogFormat::Nginx,
        LogFormat::Apache,
        LogFormat::Envoy,
        LogFormat::AwsAlb,
        LogFormat::AwsApigw,
        LogFormat::GcpLb,
        LogFormat::AzureAppgw,
        LogFormat::AzureApim,
        LogFormat::ElasticAwsElb,
    ];

    /// The name a flag and the configuration use.
    pub fn name(self) -> &'static str {
        match self {
            LogFormat::Auto => "auto",
            LogFormat::Json => "json",
            LogFormat::Nginx => "nginx",
            LogFormat::Apache => "apache",
            LogFormat::Envoy => "envoy",
            LogFormat::AwsAlb => "aws-alb",
            LogFormat::AwsApigw => "aws-apigw",
            LogFormat::GcpLb => "gcp-lb",
            LogFormat::AzureAppgw => "azure-appgw",
            LogFormat::AzureApim => "azure-apim",
            LogFormat::ElasticAwsElb => "elastic-aws-elb",
        }
    }

    /// The top-level grok pattern of an access-log format.
    pub fn pattern_name(self) -> Option<&'static str> {
        match self {
            LogFormat::Nginx => Some("NGINX_APIWATCH"),
            LogFormat::Apache => Some("APACHE_APIWATCH"),
            _ => None,
        }
    }

    /// The mapping file of a provider format.
    fn preset(self) -> Option<&'static str> {
        Some(match self {
            LogFormat::Envoy => include_str!("envoy.toml"),
            LogFormat::AwsAlb => include_str!("aws-alb.toml"),
            LogFormat::AwsApigw => include_str!("aws-apigw.toml"),
            LogFormat::GcpLb => include_str!("gcp-lb.toml"),
            LogFormat::AzureAppgw => include_str!("azure-appgw.toml"),
            LogFormat::AzureApim => include_str!("azure-apim.toml"),
            LogFormat::ElasticAwsElb => include_str!("elastic-aws-elb.toml"),
            _ => return None,
        })
    }

    /// What would give this format's events a duration, where a line has none.
    pub fn timing_hint(self) -> &'static str {
        match self {
            LogFormat::Nginx => "add `rt=$request_time` to the nginx log_format (logstash/patterns/apiwatch has the whole line)",
            LogFormat::Apache => "add `%D` after the user agent in the Apache LogFormat (logstash/patterns/apiwatch)",
            LogFormat::AwsApigw => "add `\"responseLatency\":\"$context.responseLatency\"` to the API Gateway access log format",
            LogFormat::AwsAlb => "AWS writes -1 where a request never reached a target; nothing to add",
            _ => "map a duration field with `--field event.duration=NAME:ms` (or `[input.fields]`)",
        }
    }
}

/// How input lines are read: the format, a user's field map over it, and what lines do not
/// say (`--service`, `--provider`). Checked with the rest of the configuration.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct InputFormat {
    pub format: LogFormat,
    /// `[input.fields]` / `--field`: over the format's own map (or over ECS names for JSON).
    pub fields: FieldMap,
    pub service: Option<String>,
    pub provider: Option<String>,
}

/// A provider format's mapping file.
struct Preset {
    map: FieldMap,
    /// `path` or `path=value` conditions a JSON record of the format meets.
    signature: Vec<(String, Option<String>)>,
}

fn preset(format: LogFormat) -> anyhow::Result<Option<Preset>> {
    let Some(text) = format.preset() else { return Ok(None) };
    let file = format!("worker/src/source/formats/{}.toml", format.name());
    let table: toml::Table = toml::from_str(text).map_err(|e| anyhow::anyhow!("{file}: {e}"))?;
    let fields = table
        .get("fields")
        .and_then(toml::Value::as_table)
        .ok_or_else(|| anyhow::anyhow!("{file}: no [fields]"))?;
    let map = FieldMap::from_toml(fields, "fields").map_err(|e| anyhow::anyhow!("{file}: {e}"))?;
    let signature = table
        .get("signature")
        .and_then(toml::Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(toml::Value::as_str)
                .map(|c| match c.split_once('=') {
                    Some((p, v)) => (p.to_owned(), Some(v.to_owned())),
                    None => (c.to_owned(), None),
                })
                .collect()
        })
        .unwrap_or_default();
    Ok(Some(Preset { map, signature }))
}

/// How one line becomes an event.
enum Shape {
    /// The ECS reader (fast path, no field map).
    Ecs,
    Access(Box<AccessLogParser>),
    /// JSON records through a field map.
    MappedJson,
    /// ALB tokens named as AWS documents them, through a field map.
    Alb,
    /// Envoy text tokens, or Istio JSON, through a field map.
    Envoy,
}

/// A ready parser for one format.
pub struct LineParser {
    format: LogFormat,
    shape: Shape,
    map: FieldMap,
}

impl LineParser {
    /// Builds the parser of a (named, not `auto`) format with the user's map and defaults.
    pub fn new(format: LogFormat, input: &InputFormat) -> anyhow::Result<Self> {
        let defaults = || AccessDefaults {
            service: input.service.clone(),
            provider: input.provider.clone(),
        };
        let (shape, mut map) = match format {
            LogFormat::Auto => anyhow::bail!("`auto` is resolved per input before a parser is built"),
            LogFormat::Json if input.fields.is_empty() => (Shape::Ecs, FieldMap::default()),
            LogFormat::Json => (Shape::MappedJson, FieldMap::ecs()),
            LogFormat::Nginx | LogFormat::Apache => {
                anyhow::ensure!(
                    input.fields.is_empty(),
                    "[input.fields] / --field map JSON fields; {} lines are read by their pattern (logstash/patterns/apiwatch)",
                    format.name()
                );
                (
                    Shape::Access(Box::new(AccessLogParser::new(format, defaults())?)),
                    FieldMap::default(),
                )
            }
            LogFormat::AwsAlb => (Shape::Alb, preset_map(format)?),
            LogFormat::Envoy => (Shape::Envoy, preset_map(format)?),
            _ => (Shape::MappedJson, preset_map(format)?),
        };
        map.overlay(&input.fields);
        if !matches!(shape, Shape::Ecs | Shape::Access(_)) {
            // What a line does not say comes from the flags; what it says wins.
            map.fallback("service.name", input.service.as_deref());
            map.fallback("cloud.provider", input.provider.as_deref());
        }
        Ok(LineParser { format, shape, map })
    }

    pub fn format(&self) -> LogFormat {
        self.format
    }

    /// One line (without its ending) as an event and the optional fields it dropped.
    pub fn parse(&self, line: &[u8]) -> Result<(Event, Vec<DroppedField>), EventError> {
        let utf8 = || std::str::from_utf8(line).map_err(|e| EventError::Json(format!("not UTF-8 at byte {}", e.valid_up_to() + 1)));
        match &self.shape {
            Shape::Ecs => parse_event_lenient(line),
            Shape::Access(p) => p.parse(utf8()?).map(|e| (e, Vec::new())),
            Shape::MappedJson => self.map.event(&json_record(line)?),
            Shape::Alb => self.map.event(&text::alb(utf8()?)?),
            Shape::Envoy => {
                if line.first() == Some(&b'{') {
                    self.map.event(&json_record(line)?)
                } else {
                    self.map.event(&text::envoy(utf8()?)?)
                }
            }
        }
    }
}

fn preset_map(format: LogFormat) -> anyhow::Result<FieldMap> {
    Ok(preset(format)?.map(|p| p.map).unwrap_or_default())
}

fn json_record(line: &[u8]) -> Result<Value, EventError> {
    let v: Value = serde_json::from_slice(line).map_err(|e| EventError::Json(format!("{e}")))?;
    if !v.is_object() {
        return Err(EventError::Json("expected a JSON object".into()));
    }
    Ok(v)
}

/// What the first lines of an input are.
#[derive(Debug, Clone, PartialEq)]
pub struct Recognition {
    /// The format most sampled lines are (`None`: none the sample is).
    pub format: Option<LogFormat>,
    /// Sampled lines of that format, of all sampled.
    pub matched: usize,
    pub sampled: usize,
    /// For JSON that is no known layout: the keys of its first record, to map.
    pub json_keys: Vec<String>,
}

impl Recognition {
    /// What to tell the user about lines no format reads.
    pub fn unknown_hint(&self) -> String {
        if self.json_keys.is_empty() {
            format!(
                "its first lines are none of the formats apiwatch reads ({}); name one with --format, or ship the log through Logstash",
                LogFormat::ALL[1..].iter().map(|f| f.name()).collect::<Vec<_>>().join(", ")
            )
        } else {
            format!(
                "it is JSON, but not ECS events or a provider's log (keys: {}); map its fields with --field TARGET=SOURCE or [input.fields], for example --field @timestamp=ts --field event.duration=resp_ms:ms",
                self.json_keys.join(", ")
            )
        }
    }
}

/// The format of one line, if it is one apiwatch recognises.
fn line_format(line: &str, presets: &HashMap<LogFormat, Preset>) -> (Option<LogFormat>, Vec<String>) {
    let line = line.trim();
    if line.starts_with('{') {
        let Ok(v) = serde_json::from_str::<Value>(line) else {
            return (None, Vec::new());
        };
        for f in [
            LogFormat::ElasticAwsElb,
            LogFormat::AzureAppgw,
            LogFormat::AzureApim,
            LogFormat::GcpLb,
            LogFormat::AwsApigw,
            LogFormat::Envoy,
        ] {
            let Some(p) = presets.get(&f) else { continue };
            let meets = |(path, want): &(String, Option<String>)| match (lookup(&v, path), want) {
                (Some(x), Some(w)) => x.as_str() == Some(w.as_str()),
                (Some(_), None) => true,
                (None, _) => false,
            };
            if !p.signature.is_empty() && p.signature.iter().all(meets) {
                return (Some(f), Vec::new());
            }
        }
        if lookup(&v, "@timestamp").is_some() && lookup(&v, "service.name").is_some() {
            return (Some(LogFormat::Json), Vec::new());
        }
        let keys = v.as_object().map(|o| o.keys().take(20).cloned().collect()).unwrap_or_default();
        return (None, keys);
    }
    if text::alb(line).is_ok() {
        return (Some(LogFormat::AwsAlb), Vec::new());
    }
    if text::envoy(line).is_ok() {
        return (Some(LogFormat::Envoy), Vec::new());
    }
    (access_format(line), Vec::new())
}

/// nginx or Apache: Apache's `%D` is a bare number after the user agent, nginx's time is `rt=`;
/// a plain combined line (neither) reads the same either way and is called nginx.
fn access_format(line: &str) -> Option<LogFormat> {
    static PARSERS: std::sync::OnceLock<Option<(AccessLogParser, AccessLogParser)>> = std::sync::OnceLock::new();
    let (nginx, apache) = PARSERS
        .get_or_init(|| {
            let d = AccessDefaults {
                service: Some("-".into()),
                provider: Some("-".into()),
            };
            Some((
                AccessLogParser::new(LogFormat::Nginx, d.clone()).ok()?,
                AccessLogParser::new(LogFormat::Apache, d).ok()?,
            ))
        })
        .as_ref()?;
    let matches = |p: &AccessLogParser| !matches!(p.parse(line), Err(EventError::Pattern(_)));
    let untimed = |p: &AccessLogParser| p.parse(line).is_ok_and(|e| e.duration_ns.is_none());
    match (matches(nginx), matches(apache)) {
        (true, true) if untimed(nginx) && !untimed(apache) => Some(LogFormat::Apache),
        (true, _) => Some(LogFormat::Nginx),
        (false, true) => Some(LogFormat::Apache),
        (false, false) => None,
    }
}

/// Recognises the format of sampled lines (blank ones ignored): the one most of them are.
pub fn recognise<'a>(lines: impl IntoIterator<Item = &'a str>) -> Recognition {
    static PRESETS: std::sync::OnceLock<HashMap<LogFormat, Preset>> = std::sync::OnceLock::new();
    let presets = PRESETS.get_or_init(|| {
        LogFormat::ALL
            .iter()
            .filter_map(|&f| preset(f).ok().flatten().map(|p| (f, p)))
            .collect()
    });
    let mut votes: HashMap<LogFormat, usize> = HashMap::new();
    let (mut sampled, mut json_keys) = (0, Vec::new());
    for line in lines.into_iter().filter(|l| !l.trim().is_empty()) {
        sampled += 1;
        let (f, keys) = line_format(line, presets);
        match f {
            Some(f) => *votes.entry(f).or_default() += 1,
            None if json_keys.is_empty() => json_keys = keys,
            None => {}
        }
    }
    let best = LogFormat::ALL
        .iter()
        .filter_map(|f| votes.get(f).map(|&n| (*f, n)))
        .max_by_key(|&(f, n)| (n, std::cmp::Reverse(f as u8)));
    Recognition {
        format: best.map(|(f, _)| f),
        matched: best.map_or(0, |(_, n)| n),
        sampled,
        json_keys,
    }
}

#[cfg(test)]
mod tests;
