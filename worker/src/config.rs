//! The configuration file (TOML): what to watch and how to judge it. Parsed into raw structs that
//! reject unknown keys, then validated into the checked [`PipelineConfig`]; flags on the command
//! line say how to run. Every key is optional: an absent key keeps its default.
//!
//! ```toml
//! [windows]
//! width_secs = 60
//! lateness_secs = 120
//! ```
//! See `apiwatch.example.toml` at the top of the repository for every key.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::detect::DetectorKind;
use crate::es::IndexNames;
use crate::job::elasticsearch::WorkerSettings;
use crate::model::time::Millis;
use crate::notify::{ChannelSettings, Links};
use crate::pipeline::routes::RouteLimits;
use crate::pipeline::PipelineConfig;

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The OS error is part of the message, not a source: printed once.
    #[error("cannot read {path}: {reason}")]
    Read { path: String, reason: std::io::Error },
    #[error("{path}: {message}")]
    Parse { path: String, message: String },
    #[error("{path}: `{key}` {problem}")]
    Invalid { path: String, key: &'static str, problem: String },
}

/// Unknown keys inside a section are refused by the section; unknown sections land in
/// `sections` with the channels', and are refused there (`notify::parse_channels`).
#[derive(Debug, Default, Deserialize)]
struct RawConfig {
    #[serde(default)]
    windows: RawWindows,
    #[serde(default)]
    detectors: RawDetectors,
    #[serde(default)]
    alerts: RawAlerts,
    #[serde(default)]
    routes: RawRoutes,
    #[serde(default)]
    elasticsearch: RawEs,
    #[serde(default)]
    models: RawModels,
    #[serde(default)]
    input: RawInput,
    #[serde(default)]
    limits: RawLimits,
    #[serde(default)]
    http: RawHttp,
    /// The channels' sections (`[email]`, `[webhook]`, ...), read by each channel.
    #[serde(flatten)]
    sections: toml::Table,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInput {
    earliest: Option<String>,
    max_ahead_secs: Option<u64>,
    max_skew_secs: Option<u64>,
    format: Option<String>,
    service: Option<String>,
    provider: Option<String>,
    fields: Option<toml::Table>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHttp {
    listen: Option<String>,
    /// The worker's URL as people reach it: where the answering links in messages point.
    public_url: Option<String>,
    link_ttl_secs: Option<u64>,
    /// From `APIWATCH_LINK_SECRET` only: a secret does not belong in a file.
    #[serde(skip)]
    link_secret: Option<String>,
    /// From `APIWATCH_LINK_SECRET_PREVIOUS` only: the secret before a rotation, still accepted
    /// (never used to sign) so that links already sent keep working until they expire.
    #[serde(skip)]
    link_secret_previous: Option<String>,
    /// From `APIWATCH_PAGERDUTY_WEBHOOK_SECRET` only: turns on `POST /hooks/pagerduty`.
    #[serde(skip)]
    pagerduty_webhook_secret: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    max_services: Option<usize>,
    max_providers: Option<usize>,
    max_sessions: Option<usize>,
    max_open_journeys: Option<usize>,
    evict_idle_after_secs: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawModels {
    enabled: Option<bool>,
    dir: Option<PathBuf>,
    runtime: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEs {
    url: Option<String>,
    /// Several nodes (the same as `url` with commas).
    urls: Option<Vec<String>>,
    /// An Elastic Cloud deployment's id (instead of `url`).
    cloud_id: Option<String>,
    ca_cert: Option<PathBuf>,
    prefix: Option<String>,
    logs: Option<String>,
    poll_interval_secs: Option<u64>,
    ingest_delay_secs: Option<u64>,
    slice_secs: Option<u64>,
    readers: Option<usize>,
    page_size: Option<usize>,
    checkpoint_every_secs: Option<u64>,
    lease_secs: Option<u64>,
    /// Hours of history a new live job learns from before its start (0: off).
    warm_start_hours: Option<u64>,
    job: Option<String>,
    /// This worker's name among the workers of a job (default: host and process id).
    worker_id: Option<String>,
    /// Partitions a job is split into (1: one worker scores it whole).
    partitions: Option<u32>,
    kibana_url: Option<String>,
    /// `[[elasticsearch.sources]]`: index patterns read as they are.
    sources: Option<Vec<RawEsSource>>,
}

/// One `[[elasticsearch.sources]]` table.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEsSource {
    index: String,
    format: Option<String>,
    service: Option<String>,
    provider: Option<String>,
    message_field: Option<StringOrList>,
    fields: Option<toml::Table>,
}

/// One name, or several tried in order.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum StringOrList {
    One(String),
    Many(Vec<String>),
}

/// Elasticsearch settings, checked. Secrets are not here: they come from the environment only.
#[derive(Clone, Debug)]
pub struct EsSettings {
    pub url: Option<String>,
    pub ca_cert: Option<PathBuf>,
    pub kibana_url: Option<String>,
    pub worker: WorkerSettings,
}

/// The whole configuration, checked.
#[derive(Clone, Debug)]
pub struct AppConfig {
    pub pipeline: PipelineConfig,
    pub es: EsSettings,
    /// Who is told about alerts, and how.
    pub channels: ChannelSettings,
    /// Where the worker serves `/health` and `/metrics` (`[http] listen`, `--listen`); off when
    /// `None`.
    pub listen: Option<std::net::SocketAddr>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWindows {
    width_secs: Option<u64>,
    lateness_secs: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDetectors {
    enabled: Option<Vec<DetectorKind>>,
    model_seed: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAlerts {
    join_gap_secs: Option<u64>,
    raise_single_score: Option<f64>,
    raise_total_score: Option<f64>,
    pending_timeout_secs: Option<u64>,
    quiet_to_resolve_secs: Option<u64>,
    realert_interval_secs: Option<u64>,
    reopen_within_secs: Option<u64>,
    group_related_services: Option<bool>,
    max_alert_age_secs: Option<u64>,
    max_services_per_alert: Option<usize>,
    hold_recurring: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoutes {
    max_literals_per_position: Option<usize>,
    max_routes_per_service: Option<usize>,
    max_nodes_per_service: Option<usize>,
}

/// Values given on the command line for configuration keys. They are written into the raw
/// configuration (after the file and the environment) before anything is checked, so a flag
/// is validated exactly as its key would be; an error names the flag.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub window_secs: Option<u64>,
    pub lateness_secs: Option<u64>,
    pub detectors: Option<Vec<DetectorKind>>,
    pub model_seed: Option<u64>,
    pub models_enabled: Option<bool>,
    pub models_dir: Option<PathBuf>,
    pub models_runtime: Option<PathBuf>,
    pub es_url: Option<String>,
    pub es_cloud_id: Option<String>,
    pub es_ca_cert: Option<PathBuf>,
    pub es_prefix: Option<String>,
    pub es_logs: Option<String>,
    pub job: Option<String>,
    pub es_worker_id: Option<String>,
    pub es_lease_secs: Option<u64>,
    pub es_warm_start_hours: Option<u64>,
    pub es_partitions: Option<u32>,
    pub listen: Option<String>,
    pub input_format: Option<String>,
    pub input_service: Option<String>,
    pub input_provider: Option<String>,
    /// `--field` flags, already in their TOML form ([`crate::source::fields::FieldMap::flag_entry`]).
    pub input_fields: Vec<(String, toml::Value)>,
}

impl Overrides {
    /// Writes the given values into `raw`; returns which keys a flag set, with the flag's name.
    fn apply(&self, raw: &mut RawConfig) -> Vec<(&'static str, &'static str)> {
        fn set<T: Clone>(
            given: &Option<T>,
            slot: &mut Option<T>,
            key: &'static str,
            flag: &'static str,
            by: &mut Vec<(&'static str, &'static str)>,
        ) {
            if let Some(v) = given {
                *slot = Some(v.clone());
                by.push((key, flag));
            }
        }
        let mut by = Vec::new();
        set(
            &self.window_secs,
            &mut raw.windows.width_secs,
            "windows.width_secs",
            "--window-secs",
            &mut by,
        );
        set(
            &self.lateness_secs,
            &mut raw.windows.lateness_secs,
            "windows.lateness_secs",
            "--lateness-secs",
            &mut by,
        );
        set(
            &self.detectors,
            &mut raw.detectors.enabled,
            "detectors.enabled",
            "--detectors",
            &mut by,
        );
        set(
            &self.model_seed,
            &mut raw.detectors.model_seed,
            "detectors.model_seed",
            "--model-seed",
            &mut by,
        );
        set(
            &self.models_enabled,
            &mut raw.models.enabled,
            "models.enabled",
            "--no-models",
            &mut by,
        );
        set(&self.models_dir, &mut raw.models.dir, "models.dir", "--models", &mut by);
        set(
            &self.models_runtime,
            &mut raw.models.runtime,
            "models.runtime",
            "--onnx-runtime",
            &mut by,
        );
        let es = &mut raw.elasticsearch;
        if self.es_url.is_some() || self.es_cloud_id.is_some() {
            // The flag's nodes replace the file's, whichever key that used.
            (es.url, es.urls, es.cloud_id) = (None, None, None);
        }
        set(&self.es_url, &mut es.url, "elasticsearch.url", "--es", &mut by);
        set(&self.es_cloud_id, &mut es.cloud_id, "elasticsearch.cloud_id", "--cloud-id", &mut by);
        set(&self.es_ca_cert, &mut es.ca_cert, "elasticsearch.ca_cert", "--ca-cert", &mut by);
        set(&self.es_prefix, &mut es.prefix, "elasticsearch.prefix", "--prefix", &mut by);
        set(&self.es_logs, &mut es.logs, "elasticsearch.logs", "--logs", &mut by);
        set(&self.job, &mut es.job, "elasticsearch.job", "--job", &mut by);
        set(
            &self.es_worker_id,
            &mut es.worker_id,
            "elasticsearch.worker_id",
            "--worker-id",
            &mut by,
        );
        set(
            &self.es_lease_secs,
            &mut es.lease_secs,
            "elasticsearch.lease_secs",
            "--lease-secs",
            &mut by,
        );
        set(
            &self.es_warm_start_hours,
            &mut es.warm_start_hours,
            "elasticsearch.warm_start_hours",
            "--warm-start-hours",
            &mut by,
        );
        set(
            &self.es_partitions,
            &mut es.partitions,
            "elasticsearch.partitions",
            "--partitions",
            &mut by,
        );
        set(&self.listen, &mut raw.http.listen, "http.listen", "--listen", &mut by);
        let input = &mut raw.input;
        set(&self.input_format, &mut input.format, "input.format", "--format", &mut by);
        set(&self.input_service, &mut input.service, "input.service", "--service", &mut by);
        set(&self.input_provider, &mut input.provider, "input.provider", "--provider", &mut by);
        if !self.input_fields.is_empty() {
            let fields = input.fields.get_or_insert_with(toml::Table::new);
            for (k, v) in &self.input_fields {
                fields.insert(k.clone(), v.clone());
            }
            by.push(("input.fields", "--field"));
        }
        by
    }
}

/// Reads and validates the whole configuration; no file means every default. `env` supplies
/// the environment overrides (`APIWATCH_ES_URL`, `APIWATCH_ES_PREFIX`, `APIWATCH_KIBANA_URL`,
/// `APIWATCH_SMTP_HOST`, `APIWATCH_SMTP_PORT`); `flags` win over both.
pub fn load_app(path: Option<&Path>, env: &dyn Fn(&str) -> Option<String>, flags: &Overrides) -> Result<AppConfig, ConfigError> {
    let (text, name) = match path {
        Some(p) => {
            let name = p.display().to_string();
            let text = std::fs::read_to_string(p).map_err(|reason| ConfigError::Read {
                path: name.clone(),
                reason,
            })?;
            (text, name)
        }
        None => (String::new(), "(defaults)".to_owned()),
    };
    parse_with(&text, &name, env, flags)
}

/// Parses and validates configuration text (`origin` names it in errors).
pub fn parse(text: &str, origin: &str) -> Result<PipelineConfig, ConfigError> {
    Ok(parse_app(text, origin, &|_| None)?.pipeline)
}

/// Parses and validates the whole configuration, with environment overrides.
pub fn parse_app(text: &str, origin: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<AppConfig, ConfigError> {
    parse_with(text, origin, env, &Overrides::default())
}

/// The keys a format section's errors name: `[input]` or `[[elasticsearch.sources]]`.
struct FormatKeys {
    format: &'static str,
    fields: &'static str,
    service: &'static str,
    provider: &'static str,
}

/// The longest warm start (30 days: a month of history is read before the first window).
const MAX_WARM_START_HOURS: u64 = 720;

const INPUT_KEYS: FormatKeys = FormatKeys {
    format: "input.format",
    fields: "input.fields",
    service: "input.service",
    provider: "input.provider",
};

const SOURCE_KEYS: FormatKeys = FormatKeys {
    format: "elasticsearch.sources.format",
    fields: "elasticsearch.sources.fields",
    service: "elasticsearch.sources.service",
    provider: "elasticsearch.sources.provider",
};

/// A format, its defaults and field map (`[input]` or one source), checked.
fn input_format(
    origin: &str,
    keys: &FormatKeys,
    format: Option<String>,
    service: Option<String>,
    provider: Option<String>,
    fields: Option<&toml::Table>,
) -> Result<crate::source::InputFormat, ConfigError> {
    use crate::source::{fields::FieldMap, LogFormat};
    let format = match format {
        None => LogFormat::Auto,
        Some(name) => LogFormat::ALL.into_iter().find(|f| f.name() == name).ok_or_else(|| {
            let names: Vec<&str> = LogFormat::ALL.iter().map(|f| f.name()).collect();
            invalid(
                origin,
                keys.format,
                &format!("`{name}` is not a format apiwatch reads: {}", names.join(", ")),
            )
        })?,
    };
    let fields = match fields {
        None => FieldMap::default(),
        Some(t) => FieldMap::from_toml(t, keys.fields).map_err(|e| {
            let field = e.key.trim_start_matches(keys.fields).trim_start_matches('.');
            invalid(origin, keys.fields, &format!("{field} {}", e.problem))
        })?,
    };
    if matches!(format, LogFormat::Nginx | LogFormat::Apache) && !fields.is_empty() {
        return Err(invalid(
            origin,
            keys.fields,
            "maps JSON fields; nginx and Apache lines are read by their pattern (logstash/patterns/apiwatch)",
        ));
    }
    for (key, v) in [(keys.service, &service), (keys.provider, &provider)] {
        if v.as_deref().is_some_and(|v| v.trim().is_empty()) {
            return Err(invalid(origin, key, "must not be empty"));
        }
    }
    Ok(crate::source::InputFormat {
        format,
        fields,
        service,
        provider,
    })
}

/// serde's type names in a TOML error ("expected u64") in the words of the file.
fn plain_type_words(message: &str) -> String {
    let mut m = message.to_owned();
    for (rust, words) in [
        ("expected u64", "expected a whole number (no quotes)"),
        ("expected u32", "expected a whole number (no quotes)"),
        ("expected u16", "expected a whole number (no quotes)"),
        ("expected usize", "expected a whole number (no quotes)"),
        ("expected i64", "expected a whole number (no quotes)"),
        ("expected f64", "expected a number (no quotes)"),
        ("expected f32", "expected a number (no quotes)"),
        ("expected a boolean", "expected true or false"),
        ("expected a string", "expected text in quotes"),
        ("invalid type: string", "found text"),
        ("invalid type: integer", "found the number"),
        ("invalid type: floating point", "found the number"),
        ("invalid type: boolean", "found"),
        ("invalid type: sequence", "found a list"),
        ("invalid type: map", "found a table"),
    ] {
        m = m.replace(rust, words);
    }
    m
}

/// Parses, applies the environment and then the flags, and validates once.
pub fn parse_with(text: &str, origin: &str, env: &dyn Fn(&str) -> Option<String>, flags: &Overrides) -> Result<AppConfig, ConfigError> {
    let mut raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
        path: origin.to_owned(),
        message: plain_type_words(&e.to_string()),
    })?;
    let env = |k: &str| env(k).filter(|v| !v.is_empty());
    let (env_url, env_cloud) = (env("APIWATCH_ES_URL"), env("APIWATCH_ES_CLOUD_ID"));
    if env_url.is_some() || env_cloud.is_some() {
        // The environment's nodes replace the file's, whichever key that used.
        let es = &mut raw.elasticsearch;
        (es.url, es.urls, es.cloud_id) = (env_url, None, env_cloud);
    }
    if let Some(v) = env("APIWATCH_ES_PREFIX") {
        raw.elasticsearch.prefix = Some(v);
    }
    if let Some(v) = env("APIWATCH_KIBANA_URL") {
        raw.elasticsearch.kibana_url = Some(v);
    }
    raw.http.link_secret = env("APIWATCH_LINK_SECRET");
    raw.http.link_secret_previous = env("APIWATCH_LINK_SECRET_PREVIOUS");
    raw.http.pagerduty_webhook_secret = env("APIWATCH_PAGERDUTY_WEBHOOK_SECRET");
    let mut email = |key: &str, value: toml::Value| {
        if let Some(t) = raw
            .sections
            .entry("email")
            .or_insert_with(|| toml::Table::new().into())
            .as_table_mut()
        {
            t.insert(key.to_owned(), value);
        }
    };
    if let Some(v) = env("APIWATCH_SMTP_HOST") {
        email("smtp_host", v.into());
    }
    if let Some(v) = env("APIWATCH_SMTP_PORT") {
        let port: u16 = v.parse().map_err(|_| ConfigError::Invalid {
            path: "APIWATCH_SMTP_PORT".into(),
            key: "email.smtp_port",
            problem: format!("`{v}` is not a port number"),
        })?;
        email("smtp_port", i64::from(port).into());
    }
    let by_flag = flags.apply(&mut raw);
    // A value a flag gave is refused under the flag's name, with the same words as in a file.
    let named = |e: ConfigError| match e {
        ConfigError::Invalid { key, problem, path } => match by_flag.iter().find(|(k, _)| *k == key) {
            Some((_, flag)) => ConfigError::Invalid {
                path: format!("{flag} (over {path})"),
                key,
                problem,
            },
            None => ConfigError::Invalid { path, key, problem },
        },
        other => other,
    };
    validate_all(raw, origin).map_err(named)
}

fn validate_all(mut raw: RawConfig, origin: &str) -> Result<AppConfig, ConfigError> {
    let es = std::mem::take(&mut raw.elasticsearch);
    let sections = std::mem::take(&mut raw.sections);
    let listen = match raw.http.listen.take() {
        None => None,
        Some(a) => Some(a.parse::<std::net::SocketAddr>().map_err(|_| {
            invalid(
                origin,
                "http.listen",
                &format!("`{a}` is not an address and port (such as 127.0.0.1:9464; port 0 picks a free one)"),
            )
        })?),
    };
    let action_links = validate_links(&mut raw.http, origin)?;
    let pagerduty_webhook = raw
        .http
        .pagerduty_webhook_secret
        .take()
        .map(|s| crate::feedback::pagerduty::WebhookSecret::new(&s))
        .transpose()
        .map_err(|problem| invalid("APIWATCH_PAGERDUTY_WEBHOOK_SECRET", "http.pagerduty_webhook_secret", &problem))?;
    let pipeline = validate(raw, origin)?;
    let mut es = validate_es(es, origin)?;
    let links = Links {
        kibana_url: es.kibana_url.clone(),
        anomalies_index: es.worker.names.anomalies.clone(),
        actions: action_links.clone(),
    };
    // The worker signs its alerts' links and checks followed ones with these same keys.
    es.worker.action_links = action_links;
    es.worker.pagerduty_webhook = pagerduty_webhook;
    let channels = crate::notify::parse_channels(sections, &links, origin)?;
    Ok(AppConfig {
        pipeline,
        es,
        channels,
        listen,
    })
}

/// The answering links: on with `public_url` and a secret. A URL without a secret leaves them
/// off, with a warning; a secret without a URL (set for the whole environment) is unused.
fn validate_links(raw: &mut RawHttp, origin: &str) -> Result<Option<crate::feedback::link::ActionLinks>, ConfigError> {
    use crate::feedback::link::{ActionLinks, DEFAULT_TTL};
    let ttl = match raw.link_ttl_secs.take() {
        Some(0) => return Err(invalid(origin, "http.link_ttl_secs", "must be more than zero")),
        Some(s) => (s as i64).saturating_mul(1000),
        None => DEFAULT_TTL,
    };
    let (url, secret) = (raw.public_url.take(), raw.link_secret.take());
    let (Some(url), Some(secret)) = (url.clone(), secret) else {
        if url.is_some() {
            tracing::warn!("http.public_url is set but APIWATCH_LINK_SECRET is not: messages go out without answering links");
        }
        return Ok(None);
    };
    if !crate::notify::settings::is_http_url(&url) {
        return Err(invalid(
            origin,
            "http.public_url",
            &format!("`{url}` must be an http:// or https:// URL (the worker's address as people reach it)"),
        ));
    }
    let links = ActionLinks::new(&url, &secret, ttl).map_err(|problem| invalid("APIWATCH_LINK_SECRET", "http.link_secret", &problem))?;
    match raw.link_secret_previous.take() {
        None => Ok(Some(links)),
        Some(previous) => links
            .with_previous(&previous)
            .map(Some)
            .map_err(|problem| invalid("APIWATCH_LINK_SECRET_PREVIOUS", "http.link_secret_previous", &problem)),
    }
}

fn validate_es(raw: RawEs, origin: &str) -> Result<EsSettings, ConfigError> {
    let invalid = |key: &'static str, problem: &str| invalid(origin, key, problem);
    let d = WorkerSettings::default();
    let prefix = raw.prefix.unwrap_or_else(|| d.names.prefix.clone());
    let name_ok = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-_.".contains(c));
    if !name_ok(&prefix) {
        return Err(invalid(
            "elasticsearch.prefix",
            "must be lowercase letters, digits, `-`, `_` or `.`",
        ));
    }
    let mut names = IndexNames::with_prefix(&prefix);
    let sources = match raw.sources {
        None => Vec::new(),
        Some(_) if raw.logs.is_some() => {
            return Err(invalid(
                "elasticsearch.logs",
                "is set by each [[elasticsearch.sources]] `index` when there are sources: remove one of the two",
            ))
        }
        Some(list) => es_sources(list, origin)?,
    };
    if let Some(logs) = raw.logs {
        if logs.is_empty() || logs.contains(' ') {
            return Err(invalid(
                "elasticsearch.logs",
                "must be an index pattern such as logs-apiwatch.calls-*",
            ));
        }
        names.logs = logs;
    }
    let url = match (raw.url, raw.urls) {
        (Some(_), Some(_)) => return Err(invalid("elasticsearch.urls", "and `url` are the same setting: keep one")),
        (None, Some(list)) if list.is_empty() => return Err(invalid("elasticsearch.urls", "is empty")),
        (None, Some(list)) => Some(list.join(",")),
        (url, None) => url,
    };
    let url =
        match (url, raw.cloud_id) {
            (Some(_), Some(_)) => return Err(invalid(
                "elasticsearch.cloud_id",
                "and `url` both say where the cluster is (in the file, APIWATCH_ES_URL/APIWATCH_ES_CLOUD_ID or --es/--cloud-id): keep one",
            )),
            (None, Some(id)) => Some(cloud_url(&id).map_err(|why| invalid("elasticsearch.cloud_id", &why))?),
            (url, None) => url,
        };
    for node in url.iter().flat_map(|u| u.split(',')).map(str::trim) {
        if !(node.starts_with("http://") || node.starts_with("https://")) {
            return Err(invalid(
                "elasticsearch.url",
                &format!("`{node}` must start with http:// or https:// (several nodes: comma-separated, or `urls = [...]`)"),
            ));
        }
        if node.contains('@') {
            return Err(invalid(
                "elasticsearch.url",
                "must not hold credentials: use APIWATCH_ES_API_KEY or APIWATCH_ES_USERNAME/APIWATCH_ES_PASSWORD",
            ));
        }
    }
    let secs = |v: Option<u64>, d: Duration| v.map_or(d, Duration::from_secs);
    let worker = WorkerSettings {
        names,
        poll_interval: secs(raw.poll_interval_secs, d.poll_interval),
        ingest_delay: raw.ingest_delay_secs.map_or(d.ingest_delay, |s| s as Millis * 1000),
        slice: raw.slice_secs.map_or(d.slice, |s| s as Millis * 1000),
        readers: raw.readers.unwrap_or(d.readers),
        page_size: raw.page_size.unwrap_or(d.page_size),
        checkpoint_every: secs(raw.checkpoint_every_secs, d.checkpoint_every),
        lease_ttl: raw.lease_secs.map_or(d.lease_ttl, |s| s as Millis * 1000),
        warm_start: match raw.warm_start_hours {
            Some(h) if h > MAX_WARM_START_HOURS => {
                return Err(invalid(
                    "elasticsearch.warm_start_hours",
                    &format!("must be at most {MAX_WARM_START_HOURS} (0 turns the warm start off)"),
                ))
            }
            Some(h) => h as Millis * crate::model::time::HOUR_MS,
            None => d.warm_start,
        },
        job: raw.job.unwrap_or(d.job),
        worker_id: raw.worker_id.unwrap_or(d.worker_id),
        partitions: raw.partitions.unwrap_or(d.partitions),
        sources,
        ..d
    };
    if !(1..=1024).contains(&worker.partitions) {
        return Err(invalid("elasticsearch.partitions", "must be between 1 and 1024"));
    }
    if worker.worker_id.is_empty() || worker.worker_id.contains(char::is_whitespace) {
        return Err(invalid("elasticsearch.worker_id", "must be a name without spaces"));
    }
    if worker.poll_interval.is_zero() || worker.poll_interval > Duration::from_secs(3600) {
        return Err(invalid("elasticsearch.poll_interval_secs", "must be between 1 and 3600"));
    }
    if !(10_000..=86_400_000).contains(&worker.slice) {
        return Err(invalid("elasticsearch.slice_secs", "must be between 10 and 86400"));
    }
    if !(1..=16).contains(&worker.readers) {
        return Err(invalid("elasticsearch.readers", "must be between 1 and 16"));
    }
    if !(100..=10_000).contains(&worker.page_size) {
        return Err(invalid(
            "elasticsearch.page_size",
            "must be between 100 and 10000 (Elasticsearch's default result window)",
        ));
    }
    if worker.lease_ttl < 2 * worker.poll_interval.as_millis() as Millis {
        return Err(invalid("elasticsearch.lease_secs", "must be at least two poll intervals"));
    }
    Ok(EsSettings {
        url,
        ca_cert: raw.ca_cert,
        kibana_url: raw.kibana_url,
        worker,
    })
}

/// `[[elasticsearch.sources]]`, checked: each an index pattern with a named format (documents
/// are not sampled: `auto` is for files) and, for text formats, where the line is.
fn es_sources(list: Vec<RawEsSource>, origin: &str) -> Result<Vec<crate::source::elasticsearch::LogSource>, ConfigError> {
    use crate::source::elasticsearch::LogSource;
    use crate::source::LogFormat;
    if list.is_empty() {
        return Err(invalid(
            origin,
            "elasticsearch.sources",
            "is empty: give at least one source, or none",
        ));
    }
    let mut out: Vec<LogSource> = Vec::new();
    for (i, raw) in list.into_iter().enumerate() {
        let at = format!("{origin}, [[elasticsearch.sources]] #{} (index `{}`)", i + 1, raw.index);
        if raw.index.is_empty() || raw.index.contains(' ') || raw.index.contains(',') {
            return Err(invalid(
                &at,
                "elasticsearch.sources.index",
                "must be one index pattern, data stream or alias such as logs-aws.elb_logs-* (one source per pattern)",
            ));
        }
        if out.iter().any(|s| s.index == raw.index) {
            return Err(invalid(&at, "elasticsearch.sources.index", "is given twice"));
        }
        let input = input_format(
            &at,
            &SOURCE_KEYS,
            raw.format.or_else(|| Some("json".into())),
            raw.service,
            raw.provider,
            raw.fields.as_ref(),
        )?;
        if input.format == LogFormat::Auto {
            return Err(invalid(
                &at,
                "elasticsearch.sources.format",
                "`auto` reads a file's first lines; name the format of an index's documents",
            ));
        }
        let message_fields = match raw.message_field {
            None => Vec::new(),
            Some(StringOrList::One(f)) => vec![f],
            Some(StringOrList::Many(v)) => v,
        };
        if !message_fields.is_empty() && !LogSource::reads_lines(input.format, true) {
            return Err(invalid(
                &at,
                "elasticsearch.sources.message_field",
                &format!(
                    "names where a raw line is; `{}` documents are read by their fields (nginx, apache, aws-alb and envoy read a line)",
                    input.format.name()
                ),
            ));
        }
        if message_fields.iter().any(String::is_empty) {
            return Err(invalid(&at, "elasticsearch.sources.message_field", "must not be empty"));
        }
        out.push(LogSource {
            index: raw.index,
            input,
            message_fields,
        });
    }
    Ok(out)
}

/// What one static-rule hit scores, so that it raises an alert alone.
const STATIC_RULE_RAISE_SINGLE: f64 = 60.0;

/// An invalid value of `key` in `origin`.
pub(crate) fn invalid(origin: &str, key: &'static str, problem: &str) -> ConfigError {
    ConfigError::Invalid {
        path: origin.to_owned(),
        key,
        problem: problem.to_owned(),
    }
}

/// The HTTPS endpoint of an Elastic Cloud deployment, from its cloud id (`name:base64`).
fn cloud_url(id: &str) -> Result<String, String> {
    let parsed = elasticsearch::http::transport::CloudId::parse(id.trim())
        .map_err(|e| format!("is not an Elastic Cloud id ({e}); copy it from the deployment's page"))?;
    Ok(parsed.url.as_str().trim_end_matches('/').to_owned())
}

fn secs(v: Option<u64>, default: Millis) -> Millis {
    v.map_or(default, |s| s as Millis * 1000)
}

fn validate(raw: RawConfig, origin: &str) -> Result<PipelineConfig, ConfigError> {
    let invalid = |key: &'static str, problem: &str| invalid(origin, key, problem);
    let d = PipelineConfig::default();
    let mut cfg = d.clone();
    cfg.window = secs(raw.windows.width_secs, d.window);
    if !(10_000..=3_600_000).contains(&cfg.window) {
        return Err(invalid("windows.width_secs", "must be between 10 and 3600"));
    }
    cfg.lateness = secs(raw.windows.lateness_secs, d.lateness);
    if cfg.lateness > 3_600_000 {
        return Err(invalid("windows.lateness_secs", "must be at most 3600"));
    }
    if let Some(list) = raw.detectors.enabled {
        if list.is_empty() {
            return Err(invalid("detectors.enabled", "needs at least one detector"));
        }
        cfg.detectors = list;
    }
    cfg.seed = raw.detectors.model_seed.unwrap_or(d.seed);
    cfg.model_settings = crate::pipeline::ModelSettings {
        enabled: raw.models.enabled.unwrap_or(true),
        dir: raw.models.dir,
        runtime: raw.models.runtime,
    };
    let a = raw.alerts;
    let da = &d.alerts;
    cfg.alerts.join_gap = secs(a.join_gap_secs, da.join_gap);
    cfg.alerts.pending_timeout = secs(a.pending_timeout_secs, da.pending_timeout);
    cfg.alerts.quiet_to_resolve = secs(a.quiet_to_resolve_secs, da.quiet_to_resolve);
    cfg.alerts.realert_interval = secs(a.realert_interval_secs, da.realert_interval);
    cfg.alerts.reopen_within = secs(a.reopen_within_secs, da.reopen_within);
    cfg.alerts.raise_single = a.raise_single_score.unwrap_or(da.raise_single);
    cfg.alerts.raise_total = a.raise_total_score.unwrap_or(da.raise_total);
    cfg.alerts.group_related_services = a.group_related_services.unwrap_or(da.group_related_services);
    if cfg.detectors == [DetectorKind::StaticRule] {
        // The static rule is the per-service rule shops use: unless `[alerts]` says otherwise,
        // it alerts per service, on one rule hit.
        cfg.alerts.group_related_services = a.group_related_services.unwrap_or(false);
        cfg.alerts.raise_single = a.raise_single_score.unwrap_or(STATIC_RULE_RAISE_SINGLE);
    }
    // The static rule alerts on every hit, as shops configure it: it learns nothing by default.
    let static_rule = cfg.detectors == [DetectorKind::StaticRule];
    cfg.alerts.hold_recurring = a.hold_recurring.unwrap_or(da.hold_recurring && !static_rule);
    cfg.alerts.max_alert_age = secs(a.max_alert_age_secs, da.max_alert_age);
    cfg.alerts.max_nodes = a.max_services_per_alert.unwrap_or(da.max_nodes);
    if cfg.alerts.max_nodes == 0 {
        return Err(invalid("alerts.max_services_per_alert", "must be at least 1"));
    }
    for (key, v) in [
        ("alerts.raise_single_score", cfg.alerts.raise_single),
        ("alerts.raise_total_score", cfg.alerts.raise_total),
    ] {
        if !(0.0..=1000.0).contains(&v) {
            return Err(invalid(key, "must be a score between 0 and 1000"));
        }
    }
    if cfg.alerts.quiet_to_resolve < cfg.window {
        return Err(invalid("alerts.quiet_to_resolve_secs", "must be at least one window"));
    }
    if cfg.alerts.max_alert_age < cfg.alerts.quiet_to_resolve {
        return Err(invalid(
            "alerts.max_alert_age_secs",
            "must be at least alerts.quiet_to_resolve_secs",
        ));
    }
    let r = raw.routes;
    let dr = RouteLimits::default();
    cfg.routes = RouteLimits {
        max_literals_per_position: r.max_literals_per_position.unwrap_or(dr.max_literals_per_position),
        max_routes_per_service: r.max_routes_per_service.unwrap_or(dr.max_routes_per_service),
        max_nodes_per_service: r.max_nodes_per_service.unwrap_or(dr.max_nodes_per_service),
    };
    if cfg.routes.max_literals_per_position < 2 || cfg.routes.max_routes_per_service < 1 || cfg.routes.max_nodes_per_service < 16 {
        return Err(invalid("routes", "limits too small (literals >= 2, routes >= 1, nodes >= 16)"));
    }
    let i = raw.input;
    if let Some(text) = &i.earliest {
        cfg.input.time_range.earliest = crate::model::time::parse_rfc3339(text)
            .ok_or_else(|| invalid("input.earliest", "must be an RFC 3339 time such as 2000-01-01T00:00:00Z"))?;
    }
    if let Some(v) = i.max_ahead_secs {
        if v > 10 * 365 * 86_400 {
            return Err(invalid("input.max_ahead_secs", "must be at most ten years"));
        }
        cfg.input.time_range.max_ahead = v as Millis * 1000;
    }
    if let Some(v) = i.max_skew_secs {
        if !(60..=7 * 86_400).contains(&v) {
            return Err(invalid("input.max_skew_secs", "must be between 60 and 604800 (a week)"));
        }
        cfg.input.skew.max_skew = v as Millis * 1000;
    }
    cfg.input_format = input_format(origin, &INPUT_KEYS, i.format, i.service, i.provider, i.fields.as_ref())?;
    let l = raw.limits;
    let dl = d.limits;
    cfg.limits = crate::pipeline::EntityLimits {
        max_services: l.max_services.unwrap_or(dl.max_services),
        max_providers: l.max_providers.unwrap_or(dl.max_providers),
        max_sessions: l.max_sessions.unwrap_or(dl.max_sessions),
        max_open_journeys: l.max_open_journeys.unwrap_or(dl.max_open_journeys),
    };
    if let Some(v) = l.evict_idle_after_secs {
        if v != 0 && !(3600..=366 * 86_400).contains(&v) {
            return Err(invalid(
                "limits.evict_idle_after_secs",
                "must be 0 (never evict) or between 3600 (an hour) and 31622400 (a year)",
            ));
        }
        cfg.evict_idle_after = v as Millis * 1000;
    }
    for (key, v) in [
        ("limits.max_services", cfg.limits.max_services),
        ("limits.max_providers", cfg.limits.max_providers),
        ("limits.max_sessions", cfg.limits.max_sessions),
        ("limits.max_open_journeys", cfg.limits.max_open_journeys),
    ] {
        if !(1..=10_000_000).contains(&v) {
            return Err(invalid(key, "must be between 1 and 10000000"));
        }
    }
    Ok(cfg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_in_the_repository_parses_to_the_defaults() {
        let text = include_str!("../../apiwatch.example.toml");
        let cfg = parse(text, "apiwatch.example.toml").unwrap();
        let d = PipelineConfig::default();
        assert_eq!((cfg.window, cfg.lateness, cfg.seed), (d.window, d.lateness, d.seed));
        assert_eq!(cfg.detectors, d.detectors);
        assert_eq!(cfg.alerts.quiet_to_resolve, d.alerts.quiet_to_resolve);
        assert_eq!(cfg.routes.max_routes_per_service, d.routes.max_routes_per_service);
    }

    #[test]
    fn answering_links_need_a_url_and_a_long_enough_secret_from_the_environment() {
        let file = "[http]\npublic_url = \"https://aw.example/\"\nlink_ttl_secs = 600\n";
        let secret = |v: &'static str| move |k: &str| (k == "APIWATCH_LINK_SECRET").then(|| v.to_owned());
        let app = parse_app(file, "t", &secret("0123456789abcdef0123")).unwrap();
        let links = app.es.worker.action_links.expect("on with both");
        assert_eq!((links.public_url.as_str(), links.ttl), ("https://aw.example", 600_000));
        let email_links = "[email]\nsmtp_host = \"m\"\n[[email.routes]]\nto = [\"a@b\"]\n";
        let app = parse_app(&format!("{file}{email_links}"), "t", &secret("0123456789abcdef0123")).unwrap();
        assert!(app.channels.email.unwrap().links.actions.is_some(), "the channels sign with it");
        assert!(
            parse_app(file, "t", &|_| None).unwrap().es.worker.action_links.is_none(),
            "off without a secret"
        );
        assert!(parse_app("", "t", &secret("0123456789abcdef0123"))
            .unwrap()
            .es
            .worker
            .action_links
            .is_none());
        let e = parse_app(file, "t", &secret("short")).unwrap_err().to_string();
        assert!(
            e.contains("APIWATCH_LINK_SECRET") && e.contains("at least 16") && !e.contains("short`"),
            "{e}"
        );
        let e = parse_app("[http]\npublic_url = \"aw.example\"\n", "t", &secret("0123456789abcdef0123"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("http.public_url"), "{e}");
        let e = parse_app("[http]\nlink_ttl_secs = 0\n", "t", &|_| None).unwrap_err().to_string();
        assert!(e.contains("http.link_ttl_secs"), "{e}");
    }

    #[test]
    fn the_listen_address_is_read_checked_and_overridden_by_its_flag() {
        let app = parse_app("[http]\nlisten = \"127.0.0.1:9464\"\n", "t", &|_| None).unwrap();
        assert_eq!(app.listen, Some("127.0.0.1:9464".parse().unwrap()));
        assert_eq!(parse_app("", "t", &|_| None).unwrap().listen, None, "off unless asked");
        let e = parse_app("[http]\nlisten = \"localhost\"\n", "t", &|_| None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("http.listen") && e.contains("not an address and port"), "{e}");
        let flags = Overrides {
            listen: Some("127.0.0.1:x".into()),
            ..Overrides::default()
        };
        let e = parse_with("[http]\nlisten = \"127.0.0.1:1\"\n", "t", &|_| None, &flags)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("--listen"), "the flag is named: {e}");
    }

    #[test]
    fn input_and_limits_are_read_and_checked() {
        let cfg = parse(
            "[input]\nearliest = \"2020-01-01T00:00:00Z\"\nmax_ahead_secs = 3600\nmax_skew_secs = 300\n[limits]\nmax_services = 50\n",
            "t",
        )
        .unwrap();
        assert_eq!(cfg.input.time_range.earliest, 1_577_836_800_000);
        assert_eq!(cfg.input.time_range.max_ahead, 3_600_000);
        assert_eq!(cfg.input.skew.max_skew, 300_000);
        assert_eq!(cfg.limits.max_services, 50);
        for bad in [
            "[input]\nearliest = \"soon\"",
            "[input]\nmax_skew_secs = 1",
            "[limits]\nmax_services = 0",
        ] {
            assert!(matches!(parse(bad, "t"), Err(ConfigError::Invalid { .. })), "{bad}");
        }
    }

    #[test]
    fn the_example_sets_elasticsearch_and_email() {
        let text = include_str!("../../apiwatch.example.toml");
        let app = parse_app(text, "apiwatch.example.toml", &|_| None).unwrap();
        assert_eq!(app.es.worker.names.anomalies, "apiwatch-anomalies");
        assert_eq!(app.es.worker.names.logs, "logs-apiwatch.calls-*");
        let hooks = app.channels.webhook.as_ref().expect("the example has a [webhook] section");
        assert_eq!(hooks.routes.len(), 2);
        assert_eq!(hooks.routes[0].format, crate::notify::webhook::WebhookFormat::Slack);
        let email = app.channels.email.expect("the example has an [email] section");
        assert!(!email.routes.is_empty());
        assert_eq!(email.security, crate::notify::email::SmtpSecurity::Starttls);
    }

    #[test]
    fn the_environment_overrides_the_file() {
        let env = |k: &str| match k {
            "APIWATCH_ES_URL" => Some("http://es:9200".to_owned()),
            "APIWATCH_ES_PREFIX" => Some("team-a".to_owned()),
            "APIWATCH_SMTP_PORT" => Some("2525".to_owned()),
            _ => None,
        };
        let text = "[elasticsearch]\nurl = \"http://x:1\"\n[email]\nsmtp_host = \"m\"\n[[email.routes]]\nto = [\"a@b\"]\n";
        let app = parse_app(text, "x.toml", &env).unwrap();
        assert_eq!(app.es.url.as_deref(), Some("http://es:9200"));
        assert_eq!(app.es.worker.names.state, "team-a-state");
        assert_eq!(app.channels.email.unwrap().smtp_port, 2525);
    }

    #[test]
    fn pagerduty_routes_and_pacing_are_read_and_checked() {
        let example = include_str!("../../apiwatch.example.toml");
        let section = example.split("# [pagerduty]").nth(1).expect("the example documents [pagerduty]");
        let text: String = format!("[pagerduty]{section}")
            .lines()
            .map(|l| l.trim_start_matches("# "))
            .collect::<Vec<_>>()
            .join("\n");
        let pd = parse_app(&text, "x.toml", &|_| None)
            .unwrap()
            .channels
            .pagerduty
            .expect("a [pagerduty] section");
        assert_eq!(pd.routes.len(), 1);
        assert_eq!(pd.routes[0].priorities, vec!["P1", "P2"]);
        assert_eq!((pd.pacing.retry.max_attempts, pd.pacing.min_interval.as_secs()), (4, 300));
        for (bad, key) in [
            ("[pagerduty]\n", "pagerduty.routes"),
            (
                "[pagerduty]\nmax_attempts = 0\n[[pagerduty.routes]]\nrouting_key = \"k\"\n",
                "pagerduty.max_attempts",
            ),
            (
                "[[pagerduty.routes]]\nrouting_key = \"k\"\npriorities = [\"P9\"]\n",
                "pagerduty.routes.priorities",
            ),
            (
                "[pagerduty]\nevents_url = \"ftp://x\"\n[[pagerduty.routes]]\nrouting_key = \"k\"\n",
                "pagerduty.events_url",
            ),
        ] {
            match parse_app(bad, "x.toml", &|_| None) {
                Err(ConfigError::Invalid { key: k, .. }) => assert_eq!(k, key, "{bad}"),
                other => panic!("{bad}: {other:?}"),
            }
        }
    }

    #[test]
    fn the_warm_start_is_a_day_unless_set_and_bounded() {
        let hours = |text: &str, flag: Option<u64>| {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("c.toml");
            std::fs::write(&path, text).unwrap();
            let flags = Overrides {
                es_warm_start_hours: flag,
                ..Overrides::default()
            };
            load_app(Some(&path), &|_| None, &flags).map(|a| a.es.worker.warm_start / crate::model::time::HOUR_MS)
        };
        assert_eq!(hours("", None).unwrap(), 24);
        assert_eq!(hours("[elasticsearch]\nwarm_start_hours = 0\n", None).unwrap(), 0);
        assert_eq!(
            hours("[elasticsearch]\nwarm_start_hours = 0\n", Some(6)).unwrap(),
            6,
            "the flag wins"
        );
        let err = hours("[elasticsearch]\nwarm_start_hours = 1000\n", None).unwrap_err().to_string();
        assert!(err.contains("elasticsearch.warm_start_hours") && err.contains("720"), "{err}");
        let err = hours("", Some(1000)).unwrap_err().to_string();
        assert!(err.contains("--warm-start-hours"), "a flag's value is blamed on the flag: {err}");
    }

    #[test]
    fn credentials_in_the_url_are_refused() {
        let err = parse_app("[elasticsearch]\nurl = \"https://elastic:pw@x:9200\"\n", "x.toml", &|_| None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("APIWATCH_ES_PASSWORD") && !err.contains("pw@"), "{err}");
    }

    #[test]
    fn an_unknown_key_is_refused_by_name() {
        let err = parse("[windows]\nwidth_sec = 30\n", "x.toml").unwrap_err().to_string();
        assert!(err.contains("x.toml") && err.contains("unknown field `width_sec`"), "{err}");
        let err = parse("[alert]\n", "x.toml").unwrap_err().to_string();
        assert!(err.contains("unknown field `alert`"), "{err}");
    }

    #[test]
    fn values_are_checked() {
        let err = parse("[windows]\nwidth_secs = 5\n", "x.toml").unwrap_err().to_string();
        assert!(err.contains("`windows.width_secs` must be between 10 and 3600"), "{err}");
        let err = parse("[detectors]\nenabled = []\n", "x.toml").unwrap_err().to_string();
        assert!(err.contains("needs at least one detector"), "{err}");
        let err = parse("[detectors]\nenabled = [\"magic\"]\n", "x.toml").unwrap_err().to_string();
        assert!(err.contains("magic"), "{err}");
        let cfg = parse(
            "[detectors]\nenabled = [\"baseline\", \"journey\"]\n[windows]\nwidth_secs = 30\n",
            "x.toml",
        )
        .unwrap();
        assert_eq!(cfg.detectors, vec![DetectorKind::Baseline, DetectorKind::Journey]);
        assert_eq!(cfg.window, 30_000);
    }

    #[test]
    fn several_node_urls_are_read_and_each_is_checked() {
        let es = |text: &str| parse_app(text, "x.toml", &|_| None).map(|c| c.es.url);
        assert_eq!(
            es("[elasticsearch]\nurls = [\"http://a:9200\", \"http://b:9200\"]\n")
                .unwrap()
                .as_deref(),
            Some("http://a:9200,http://b:9200")
        );
        let err = es("[elasticsearch]\nurl = \"http://a:9200, b:9200\"\n").unwrap_err().to_string();
        assert!(err.contains("`b:9200` must start with http://"), "{err}");
        let err = es("[elasticsearch]\nurl = \"http://a:1\"\nurls = [\"http://b:1\"]\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("keep one"), "{err}");
    }

    #[test]
    fn an_elastic_cloud_id_names_the_deployment_and_replaces_the_file_s_url() {
        use base64::Engine;
        let id = format!(
            "prod:{}",
            base64::engine::general_purpose::STANDARD.encode("eu-west-1.aws.found.io$abc123$kib456")
        );
        let file = "[elasticsearch]\nurl = \"http://a:9200\"\n";
        let env_id = id.clone();
        let env = move |k: &str| (k == "APIWATCH_ES_CLOUD_ID").then(|| env_id.clone());
        let cfg = parse_app(file, "x.toml", &env).unwrap();
        assert_eq!(cfg.es.url.as_deref(), Some("https://abc123.eu-west-1.aws.found.io"));
        let both = format!("[elasticsearch]\nurl = \"http://a:9200\"\ncloud_id = \"{id}\"\n");
        let err = parse_app(&both, "x.toml", &|_| None).unwrap_err().to_string();
        assert!(err.contains("keep one"), "{err}");
        let err = parse_app("[elasticsearch]\ncloud_id = \"nonsense\"\n", "x.toml", &|_| None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("not an Elastic Cloud id"), "{err}");
    }

    #[test]
    fn elasticsearch_sources_are_read_and_checked() {
        use crate::source::LogFormat;
        let text = r#"
[elasticsearch]
url = "http://x:9200"
[[elasticsearch.sources]]
index = "logs-aws.elb_logs-*"
format = "elastic-aws-elb"
[[elasticsearch.sources]]
index = "web-nginx-*"
format = "nginx"
service = "web"
provider = "onprem"
message_field = "log.original"
[[elasticsearch.sources]]
index = "payments"
[elasticsearch.sources.fields]
"event.duration" = { from = "resp_ms", unit = "ms" }
"service.name" = "svc"
"#;
        let s = parse_app(text, "x.toml", &|_| None).unwrap().es.worker.sources;
        assert_eq!(s.len(), 3);
        assert_eq!(
            (s[0].index.as_str(), s[0].input.format),
            ("logs-aws.elb_logs-*", LogFormat::ElasticAwsElb)
        );
        assert_eq!(
            (s[1].input.format, s[1].input.service.as_deref(), s[1].line_fields()),
            (LogFormat::Nginx, Some("web"), vec!["log.original".to_owned()])
        );
        assert_eq!(
            (s[2].input.format, s[2].input.fields.is_empty()),
            (LogFormat::Json, false),
            "json by default, with its map"
        );
        let refused = |extra: &str| {
            parse_app(&format!("[elasticsearch]\n{extra}"), "x.toml", &|_| None)
                .unwrap_err()
                .to_string()
        };
        let err = refused("[[elasticsearch.sources]]\nindex = \"a-*\"\nformat = \"auto\"\n");
        assert!(err.contains("#1 (index `a-*`)") && err.contains("name the format"), "{err}");
        let err = refused("logs = \"x-*\"\n[[elasticsearch.sources]]\nindex = \"a-*\"\n");
        assert!(err.contains("elasticsearch.logs") && err.contains("remove one"), "{err}");
        let err = refused("[[elasticsearch.sources]]\nindex = \"a-*,b-*\"\n");
        assert!(err.contains("one source per pattern"), "{err}");
        let err = refused("[[elasticsearch.sources]]\nindex = \"a-*\"\nformat = \"gcp-lb\"\nmessage_field = \"m\"\n");
        assert!(err.contains("message_field") && err.contains("read by their fields"), "{err}");
        let err = refused("[[elasticsearch.sources]]\nindex = \"a-*\"\n[elasticsearch.sources.fields]\n\"event.duration\" = { from = \"x\", unit = \"hours\" }\n");
        assert!(
            err.contains("elasticsearch.sources.fields") && err.contains("event.duration"),
            "{err}"
        );
    }
}
