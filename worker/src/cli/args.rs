//! Flags shared by several commands. Flags that stand for configuration keys become
//! [`Overrides`] and are checked with the file by [`crate::config`], never here.

use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::config::{AppConfig, Overrides};
use crate::detect::DetectorKind;
use crate::es::{ClientOptions, EsClient};
use crate::job::elasticsearch::WorkerSettings;
use crate::model::time::{parse_rfc3339, Millis, HOUR_MS};
use crate::pipeline::PipelineSetup;
use crate::simulate::incidents::Family;
use crate::simulate::SimConfig;
use crate::source::LogFormat;

/// Parses a flag value by the type's own (serde) names, `-` read as `_`: the domain types
/// know nothing of clap, and a flag accepts exactly what the configuration file does.
pub fn serde_value<T: serde::de::DeserializeOwned>(s: &str) -> Result<T, String> {
    serde_json::from_value(serde_json::Value::String(s.to_owned()))
        .or_else(|_| serde_json::from_value(serde_json::Value::String(s.replace('-', "_"))))
        .map_err(|e| e.to_string())
}

#[derive(clap::Args, Clone, Default)]
pub struct InputFormatArgs {
    /// What the input lines are (or `input.format`): `auto` recognises each input from its first
    /// lines; `json` (ECS events, or any JSON with --field), `nginx`, `apache` (with or without
    /// timing), `envoy`, `aws-alb`, `aws-apigw`, `gcp-lb`, `azure-appgw`, `azure-apim` [default: auto].
    #[arg(long, value_parser = serde_value::<LogFormat>)]
    pub format: Option<LogFormat>,
    /// Service of lines that do not say theirs (`input.service`); `{file}` is each input's file
    /// name up to its first dot (`payments.access.log`: payments), `{dir}` its directory's name.
    #[arg(long)]
    pub service: Option<String>,
    /// Cloud provider of lines that do not say theirs (`input.provider`): onprem, aws, azure,
    /// gcp...; `{dir}` is each input's directory name (`aws/gateway.access.log`: aws).
    #[arg(long)]
    pub provider: Option<String>,
    /// Where a contract field comes from in JSON lines, TARGET=SOURCE[:UNIT|:TIME] (repeat; or
    /// `[input.fields]`), e.g. `--field @timestamp=ts:epoch_ms --field event.duration=resp_ms:ms
    /// --field service.name=svc`.
    #[arg(long = "field", value_parser = parse_field_flag)]
    pub fields: Vec<(String, toml::Value)>,
}

fn parse_field_flag(s: &str) -> Result<(String, toml::Value), String> {
    crate::source::fields::FieldMap::flag_entry(s)
}

impl InputFormatArgs {
    /// The configuration keys these flags set.
    pub fn overrides(&self) -> Overrides {
        Overrides {
            input_format: self.format.map(|f| f.name().to_owned()),
            input_service: self.service.clone(),
            input_provider: self.provider.clone(),
            input_fields: self.fields.clone(),
            ..Overrides::default()
        }
    }
}

#[derive(clap::Args, Clone, Default)]
pub struct DetectArgs {
    /// Configuration file (TOML; see apiwatch.example.toml). Flags below override it.
    #[arg(long, env = "APIWATCH_CONFIG")]
    pub config: Option<PathBuf>,
    /// Window width in seconds [default: 60].
    #[arg(long)]
    pub window_secs: Option<u64>,
    /// Allowed lateness of events in seconds [default: 120].
    #[arg(long)]
    pub lateness_secs: Option<u64>,
    /// Detectors to run, by their names in `detectors.enabled` (default: all but the static rule).
    #[arg(long, value_parser = serde_value::<DetectorKind>, value_delimiter = ',')]
    pub detectors: Option<Vec<DetectorKind>>,
    /// Seed for the randomised models (isolation forests) [default: 42].
    #[arg(long)]
    pub model_seed: Option<u64>,
    /// Model store (or `models.dir`, APIWATCH_MODELS) [default: the repository's onnx-models/].
    #[arg(long)]
    pub models: Option<PathBuf>,
    /// libonnxruntime.so (or `models.runtime`, ORT_DYLIB_PATH) [default: .cache/onnxruntime/].
    #[arg(long)]
    pub onnx_runtime: Option<PathBuf>,
    /// Run without the AutoEncoder and LSTM even where they are available.
    #[arg(long)]
    pub no_models: bool,
}

impl DetectArgs {
    /// The configuration keys these flags set.
    pub fn overrides(&self) -> Overrides {
        Overrides {
            window_secs: self.window_secs,
            lateness_secs: self.lateness_secs,
            detectors: self.detectors.clone(),
            model_seed: self.model_seed,
            models_enabled: self.no_models.then_some(false),
            models_dir: self.models.clone(),
            models_runtime: self.onnx_runtime.clone(),
            ..Overrides::default()
        }
    }

    /// The pipeline's configuration (file, environment, then these flags), models loaded.
    pub fn config(&self) -> anyhow::Result<PipelineSetup> {
        self.config_with(&InputFormatArgs::default())
    }

    /// [`DetectArgs::config`] with the input-format flags too.
    pub fn config_with(&self, input: &InputFormatArgs) -> anyhow::Result<PipelineSetup> {
        let i = input.overrides();
        let flags = Overrides {
            input_format: i.input_format,
            input_service: i.input_service,
            input_provider: i.input_provider,
            input_fields: i.input_fields,
            ..self.overrides()
        };
        crate::config::load_app(self.config.as_deref(), &env, &flags)?
            .pipeline
            .load_models()
    }

    /// The whole configuration with these flags and the Elasticsearch ones, and the pipeline's
    /// setup with its models loaded.
    pub fn app(&self, es: &EsArgs) -> anyhow::Result<(AppConfig, PipelineSetup)> {
        self.app_for_run(es, None, None)
    }

    /// [`Self::app`] with `apiwatch run`'s own flags: `--listen` (its address for `/health` and
    /// `/metrics`) and `--warm-start-hours`.
    pub fn app_for_run(
        &self,
        es: &EsArgs,
        listen: Option<String>,
        warm_start_hours: Option<u64>,
    ) -> anyhow::Result<(AppConfig, PipelineSetup)> {
        let es = es.overrides();
        let flags = Overrides {
            listen,
            es_warm_start_hours: warm_start_hours,
            es_url: es.es_url,
            es_cloud_id: es.es_cloud_id,
            es_prefix: es.es_prefix,
            es_logs: es.es_logs,
            es_ca_cert: es.es_ca_cert,
            es_worker_id: es.es_worker_id,
            es_lease_secs: es.es_lease_secs,
            es_partitions: es.es_partitions,
            ..self.overrides()
        };
        let app = crate::config::load_app(self.config.as_deref(), &env, &flags)?;
        let setup = app.pipeline.clone().load_models()?;
        Ok((app, setup))
    }
}

/// The process environment, as the configuration reads it.
pub fn env(key: &str) -> Option<String> {
    std::env::var(key).ok()
}

/// Where Elasticsearch is and which names to use (flags override the configuration file).
#[derive(clap::Args, Clone)]
pub struct EsArgs {
    /// Elasticsearch URL, or several nodes comma-separated (or `elasticsearch.url`/`urls` in the
    /// config, or APIWATCH_ES_URL); a node that fails is left out while the others answer.
    #[arg(long = "es")]
    pub url: Option<String>,
    /// An Elastic Cloud deployment's id instead of a URL (or `elasticsearch.cloud_id`, or
    /// APIWATCH_ES_CLOUD_ID).
    #[arg(long, conflicts_with = "url")]
    pub cloud_id: Option<String>,
    /// Prefix of the result and state indices [default: apiwatch].
    #[arg(long)]
    pub prefix: Option<String>,
    /// Index pattern of the API-call logs [default: logs-apiwatch.calls-*].
    #[arg(long)]
    pub logs: Option<String>,
    /// PEM file of the CA that signed the cluster's certificate.
    #[arg(long)]
    pub ca_cert: Option<PathBuf>,
    /// This worker's name among the workers of a job (or `elasticsearch.worker_id`)
    /// [default: host and process id].
    #[arg(long)]
    pub worker_id: Option<String>,
    /// How long a worker's lease on a job or partition lasts unrenewed (or
    /// `elasticsearch.lease_secs`) [default: 120].
    #[arg(long)]
    pub lease_secs: Option<u64>,
    /// Split the job into this many partitions by service, shared by every worker started on
    /// it (or `elasticsearch.partitions`) [default: 1, one worker scores the whole job].
    #[arg(long)]
    pub partitions: Option<u32>,
}

impl EsArgs {
    /// The configuration keys these flags set.
    pub fn overrides(&self) -> Overrides {
        Overrides {
            es_url: self.url.clone(),
            es_cloud_id: self.cloud_id.clone(),
            es_prefix: self.prefix.clone(),
            es_logs: self.logs.clone(),
            es_ca_cert: self.ca_cert.clone(),
            es_worker_id: self.worker_id.clone(),
            es_lease_secs: self.lease_secs,
            es_partitions: self.partitions,
            ..Overrides::default()
        }
    }

    /// The configuration from `config` (or defaults), the environment and these flags.
    pub fn app(&self, config: Option<&Path>, job: Option<&str>) -> anyhow::Result<AppConfig> {
        let flags = Overrides {
            job: job.map(str::to_owned),
            ..self.overrides()
        };
        Ok(crate::config::load_app(config, &env, &flags)?)
    }
}

/// The client and worker settings of a checked configuration.
pub fn connect(app: &AppConfig) -> anyhow::Result<(EsClient, WorkerSettings)> {
    let url = app
        .es
        .url
        .clone()
        .context("no Elasticsearch URL: pass --es URL (or --cloud-id ID), set APIWATCH_ES_URL (or APIWATCH_ES_CLOUD_ID), or elasticsearch.url (or cloud_id) in the config")?;
    let mut opts = ClientOptions::new(&url);
    opts.ca_cert = app.es.ca_cert.clone();
    let client = EsClient::new(opts)?;
    let settings = app.es.worker.clone();
    tracing::info!(url = %url, credentials = client.credentials(), prefix = %settings.names.prefix, "Elasticsearch");
    Ok((client, settings))
}

/// An RFC 3339 time given to `flag`.
pub fn time_flag(flag: &str, value: &str) -> anyhow::Result<Millis> {
    parse_rfc3339(value).with_context(|| format!("{flag} `{value}` is not an RFC 3339 time"))
}

/// A `[from, to)` range given to `--from` and `--to`.
pub fn range_flags(from: &str, to: &str) -> anyhow::Result<(Millis, Millis)> {
    let (from, to) = (time_flag("--from", from)?, time_flag("--to", to)?);
    anyhow::ensure!(from < to, "--from must be before --to");
    Ok((from, to))
}

#[derive(clap::Args, Clone)]
pub struct SimArgs {
    #[arg(long, default_value = "bank")]
    pub topology: String,
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// Length of the simulated traffic, in hours.
    #[arg(long, default_value_t = 6.0)]
    pub hours: f64,
    /// Mean entry calls per second.
    #[arg(long, default_value_t = 20.0)]
    pub rate: f64,
    /// Start time (RFC 3339).
    #[arg(long, default_value = "2026-03-02T00:00:00Z")]
    pub start: String,
    /// No incidents (a new service still appears).
    #[arg(long)]
    pub no_incidents: bool,
    /// Add daily routines that look like problems and are not (a nightly batch, a scheduled
    /// probe), labelled as not to be alerted: what feedback is for.
    #[arg(long)]
    pub routines: bool,
    /// Scenario family: `classic` (the first) or `ops` (outages, failing dependencies, retry
    /// storms, benign deploys, incidents at the daily trough, quieter weekends).
    #[arg(long, value_enum, default_value_t = Family::Classic)]
    pub family: Family,
    /// Services' own time follows the load: durations scale by load^X (0, the default: not at
    /// all; 0.5: the afternoon peak's latency about 1.9x the night's).
    #[arg(long, default_value_t = 0.0, value_name = "X")]
    pub latency_follows_load: f64,
}

impl SimArgs {
    /// The simulator's settings for `topology` and `seed`, otherwise the flags' defaults.
    pub fn with(topology: &str, seed: u64, hours: f64, rate: f64) -> Self {
        SimArgs {
            topology: topology.to_owned(),
            seed,
            hours,
            rate,
            start: "2026-03-02T00:00:00Z".into(),
            no_incidents: false,
            routines: false,
            family: Family::Classic,
            latency_follows_load: 0.0,
        }
    }

    pub fn config(&self) -> anyhow::Result<SimConfig> {
        anyhow::ensure!(self.hours > 0.0 && self.hours <= 24.0 * 60.0, "--hours must be in (0, 1440]");
        anyhow::ensure!(self.rate > 0.0 && self.rate <= 100_000.0, "--rate must be in (0, 100000]");
        anyhow::ensure!(
            (0.0..=2.0).contains(&self.latency_follows_load),
            "--latency-follows-load must be in [0, 2]"
        );
        Ok(SimConfig {
            seed: self.seed,
            topology: self.topology.clone(),
            start: time_flag("--start", &self.start)?,
            duration: (self.hours * HOUR_MS as f64) as Millis,
            rate: self.rate,
            incidents: !self.no_incidents,
            max_events: None,
            routines: self.routines,
            family: self.family,
            latency_follows_load: self.latency_follows_load,
        })
    }
}
