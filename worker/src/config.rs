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

use std::path::Path;

use serde::Deserialize;

use crate::detect::routes::RouteLimits;
use crate::detect::DetectorKind;
use crate::model::time::Millis;
use crate::pipeline::PipelineConfig;

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("{path}: {message}")]
    Parse { path: String, message: String },
    #[error("{path}: `{key}` {problem}")]
    Invalid { path: String, key: &'static str, problem: String },
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    windows: RawWindows,
    #[serde(default)]
    detectors: RawDetectors,
    #[serde(default)]
    alerts: RawAlerts,
    #[serde(default)]
    routes: RawRoutes,
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
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoutes {
    max_literals_per_position: Option<usize>,
    max_routes_per_service: Option<usize>,
    max_nodes_per_service: Option<usize>,
}

/// Reads and validates a configuration file.
pub fn load(path: &Path) -> Result<PipelineConfig, ConfigError> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: name.clone(),
        source,
    })?;
    parse(&text, &name)
}

/// Parses and validates configuration text (`origin` names it in errors).
pub fn parse(text: &str, origin: &str) -> Result<PipelineConfig, ConfigError> {
    let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
        path: origin.to_owned(),
        message: e.to_string(),
    })?;
    validate(raw, origin)
}

fn secs(v: Option<u64>, default: Millis) -> Millis {
    v.map_or(default, |s| s as Millis * 1000)
}

fn validate(raw: RawConfig, origin: &str) -> Result<PipelineConfig, ConfigError> {
    let invalid = |key: &'static str, problem: &str| ConfigError::Invalid {
        path: origin.to_owned(),
        key,
        problem: problem.to_owned(),
    };
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
}
