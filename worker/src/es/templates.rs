//! The index templates in `es-templates/` (compiled into the binary) and `apiwatch setup`, which
//! installs them idempotently: it reads what the cluster offers, picks the basic variant or the
//! full one (ILM policies for clusters that have ILM), compares each template's `_meta.version`
//! and body with what is there, and says what it did.

use serde_json::{json, Value};

use super::client::{EsClient, EsError};
use super::names::IndexNames;

/// Bumped whenever a template changes; stored in every template's `_meta.version`.
pub const TEMPLATE_VERSION: u64 = 6;

/// (name, JSON) of every file in `es-templates/`, by kind.
pub const COMPONENTS: &[(&str, &str)] = &[
    (
        "calls-mappings",
        include_str!("../../../es-templates/component/apiwatch-calls-mappings.json"),
    ),
    (
        "anomalies-mappings",
        include_str!("../../../es-templates/component/apiwatch-anomalies-mappings.json"),
    ),
    (
        "alerts-mappings",
        include_str!("../../../es-templates/component/apiwatch-alerts-mappings.json"),
    ),
    (
        "journeys-mappings",
        include_str!("../../../es-templates/component/apiwatch-journeys-mappings.json"),
    ),
    (
        "services-mappings",
        include_str!("../../../es-templates/component/apiwatch-services-mappings.json"),
    ),
    (
        "state-mappings",
        include_str!("../../../es-templates/component/apiwatch-state-mappings.json"),
    ),
    (
        "deadletter-mappings",
        include_str!("../../../es-templates/component/apiwatch-deadletter-mappings.json"),
    ),
    (
        "feedback-mappings",
        include_str!("../../../es-templates/component/apiwatch-feedback-mappings.json"),
    ),
    ("settings", include_str!("../../../es-templates/component/apiwatch-settings.json")),
    (
        "settings-ilm",
        include_str!("../../../es-templates/component/apiwatch-settings-ilm.json"),
    ),
    ("calls-ilm", include_str!("../../../es-templates/component/apiwatch-calls-ilm.json")),
];

pub const INDEX_TEMPLATES: &[(&str, &str)] = &[
    (
        "logs-apiwatch.calls",
        include_str!("../../../es-templates/index/logs-apiwatch.calls.json"),
    ),
    ("anomalies", include_str!("../../../es-templates/index/apiwatch-anomalies.json")),
    ("alerts", include_str!("../../../es-templates/index/apiwatch-alerts.json")),
    ("journeys", include_str!("../../../es-templates/index/apiwatch-journeys.json")),
    ("services", include_str!("../../../es-templates/index/apiwatch-services.json")),
    ("state", include_str!("../../../es-templates/index/apiwatch-state.json")),
    ("deadletter", include_str!("../../../es-templates/index/apiwatch-deadletter.json")),
    ("feedback", include_str!("../../../es-templates/index/apiwatch-feedback.json")),
];

pub const ILM_POLICIES: &[(&str, &str)] = &[
    ("results", include_str!("../../../es-templates/ilm/apiwatch-results.json")),
    ("calls", include_str!("../../../es-templates/ilm/apiwatch-calls.json")),
];

/// What the cluster offers, read once.
#[derive(Debug, Clone, Default)]
pub struct Capabilities {
    pub version: String,
    pub ilm: bool,
    pub modules: Vec<String>,
}

impl Capabilities {
    pub fn detect(client: &EsClient) -> Result<Self, EsError> {
        let v = client.json("GET", "/_nodes/plugins?filter_path=nodes.*.version,nodes.*.modules.name", None)?;
        let mut caps = Capabilities::default();
        if let Some(nodes) = v.get("nodes").and_then(Value::as_object) {
            for n in nodes.values() {
                if let Some(ver) = n.get("version").and_then(Value::as_str) {
                    caps.version = ver.to_owned();
                }
                for m in n.get("modules").and_then(Value::as_array).into_iter().flatten() {
                    if let Some(name) = m.get("name").and_then(Value::as_str) {
                        caps.modules.push(name.to_owned());
                    }
                }
            }
        }
        caps.modules.sort();
        caps.modules.dedup();
        caps.ilm = caps.modules.iter().any(|m| m == "x-pack-ilm");
        Ok(caps)
    }

    pub fn variant(&self) -> &'static str {
        if self.ilm {
            "full (ILM policies)"
        } else {
            "basic (no ILM on this cluster)"
        }
    }
}

/// A template's JSON with the project's names replaced by the configured ones.
fn render(text: &str, names: &IndexNames) -> Result<Value, EsError> {
    let text = text.replace("\"apiwatch-", &format!("\"{}-", names.prefix));
    serde_json::from_str(&text).map_err(|e| EsError::Template(e.to_string()))
}

/// One line of the setup report.
#[derive(Debug, Clone)]
pub struct SetupStep {
    pub what: String,
    pub outcome: &'static str,
}

/// Installs everything; returns what was done, step by step.
pub fn setup(client: &EsClient, names: &IndexNames) -> Result<(Capabilities, Vec<SetupStep>), EsError> {
    client.health()?;
    let caps = Capabilities::detect(client)?;
    let mut steps = Vec::new();
    if caps.ilm {
        for (name, text) in ILM_POLICIES {
            let full = format!("{}-{name}", names.prefix);
            let body = render(text, names)?;
            let outcome = put_if_changed(client, &format!("/_ilm/policy/{full}"), &body, |v| {
                v.get(&full).and_then(|p| p.get("policy"))
            })?;
            steps.push(SetupStep {
                what: format!("ILM policy {full}"),
                outcome,
            });
        }
    }
    for (name, text) in COMPONENTS {
        if !caps.ilm && name.ends_with("ilm") {
            continue;
        }
        let full = format!("{}-{name}", names.prefix);
        let body = render(text, names)?;
        let outcome = put_if_changed(client, &format!("/_component_template/{full}"), &body, |v| {
            v.get("component_templates")?.as_array()?.first()?.get("component_template")
        })?;
        steps.push(SetupStep {
            what: format!("component template {full}"),
            outcome,
        });
    }
    for (name, text) in INDEX_TEMPLATES {
        let mut body = render(text, names)?;
        let full = if name.starts_with("logs-") {
            (*name).to_owned()
        } else {
            format!("{}-{name}", names.prefix)
        };
        if caps.ilm {
            let extra = if name.starts_with("logs-") { "calls-ilm" } else { "settings-ilm" };
            if let Some(list) = body.get_mut("composed_of").and_then(Value::as_array_mut) {
                list.push(json!(format!("{}-{extra}", names.prefix)));
            }
        }
        let outcome = put_if_changed(client, &format!("/_index_template/{full}"), &body, |v| {
            v.get("index_templates")?.as_array()?.first()?.get("index_template")
        })?;
        steps.push(SetupStep {
            what: format!("index template {full}"),
            outcome,
        });
    }
    // Indices that are written by id from the first run: create them now so that a mistake in a
    // template shows at setup, not in the middle of a run.
    for index in [&names.alerts, &names.services, &names.state, &names.deadletter, &names.feedback] {
        let (status, body) = client.json_status("PUT", &format!("/{index}"), Some(&json!({})))?;
        let outcome = match status {
            200..=299 => "created",
            400 if body.to_string().contains("resource_already_exists_exception") => {
                update_mapping(client, index)?;
                "exists, mapping brought up to date"
            }
            _ => {
                return Err(EsError::status(
                    status,
                    "PUT",
                    format!("/{index}"),
                    super::client::error_reason(body.to_string().as_bytes()),
                ))
            }
        };
        steps.push(SetupStep {
            what: format!("index {index}"),
            outcome,
        });
    }
    Ok((caps, steps))
}

/// Puts the mapping the templates now give `index` on the existing index, so that fields a
/// newer version added (always additions: a template never changes a field's type) can be
/// written to it under its strict mapping.
fn update_mapping(client: &EsClient, index: &str) -> Result<(), EsError> {
    let sim = client.json("POST", &format!("/_index_template/_simulate_index/{index}"), None)?;
    let Some(mapping) = sim.pointer("/template/mappings") else {
        return Ok(());
    };
    let path = format!("/{index}/_mapping");
    let (status, body) = client.json_status("PUT", &path, Some(mapping))?;
    if (200..300).contains(&status) {
        Ok(())
    } else {
        Err(EsError::status(
            status,
            "PUT",
            path,
            format!(
                "{} (the index was made by an older apiwatch with a field this version maps differently: reindex it, or use a new --prefix)",
                super::client::error_reason(body.to_string().as_bytes())
            ),
        ))
    }
}

/// PUTs `body` at `path` unless what is there has the same `_meta.version` and content.
fn put_if_changed(
    client: &EsClient,
    path: &str,
    body: &Value,
    current: impl Fn(&Value) -> Option<&Value>,
) -> Result<&'static str, EsError> {
    let (status, existing) = client.json_status("GET", path, None)?;
    let mut outcome = "installed";
    if status == 200 {
        if let Some(cur) = current(&existing) {
            let same_version = cur.pointer("/_meta/version") == body.pointer("/_meta/version");
            if same_version && contains(cur, body) {
                return Ok("unchanged");
            }
            outcome = "updated";
        }
    }
    client.json("PUT", path, Some(body))?;
    Ok(outcome)
}

/// Whether every value in `want` is present in `have` (Elasticsearch adds defaults and
/// normalises some values, so equality is too strict).
fn contains(have: &Value, want: &Value) -> bool {
    match (have, want) {
        (Value::Object(h), Value::Object(w)) => w.iter().all(|(k, wv)| h.get(k).is_some_and(|hv| contains(hv, wv))),
        (Value::Array(h), Value::Array(w)) => h.len() == w.len() && h.iter().zip(w).all(|(a, b)| contains(a, b)),
        (Value::String(h), w) if !w.is_string() => same_text(h, w),
        (h, Value::String(w)) if !h.is_string() => same_text(w, h),
        _ => have == want,
    }
}

/// A number or boolean that the server stored as text (`"0"` for `0`).
fn same_text(text: &str, v: &Value) -> bool {
    match v {
        Value::Number(n) => n.as_f64().is_some_and(|x| text.parse::<f64>() == Ok(x)),
        Value::Bool(b) => text.parse::<bool>() == Ok(*b),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Leaf field paths (`anomaly.window.start`) of a component template's mappings, with types.
    fn mapped_fields(component: &str) -> Vec<(String, String)> {
        let v: Value = serde_json::from_str(component).unwrap();
        let mut out = Vec::new();
        if let Some(props) = v.pointer("/template/mappings/properties") {
            walk(props, "", &mut out);
        }
        out
    }

    fn walk(props: &Value, prefix: &str, out: &mut Vec<(String, String)>) {
        let Some(map) = props.as_object() else { return };
        for (k, m) in map {
            let path = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
            let ty = m.get("type").and_then(Value::as_str).unwrap_or("object");
            if let Some(p) = m.get("properties") {
                if ty == "object" && m.get("enabled") != Some(&Value::Bool(false)) {
                    out.push((path.clone(), "object".into()));
                    walk(p, &path, out);
                    continue;
                }
            }
            out.push((path, ty.to_owned()));
        }
    }

    #[test]
    fn every_bundled_file_is_json_with_the_current_version() {
        for (name, text) in COMPONENTS.iter().chain(INDEX_TEMPLATES).chain(ILM_POLICIES) {
            let v: Value = serde_json::from_str(text).unwrap_or_else(|e| panic!("{name}: {e}"));
            let version = v.pointer("/_meta/version").or_else(|| v.pointer("/policy/_meta/version"));
            assert_eq!(version.and_then(Value::as_u64), Some(TEMPLATE_VERSION), "{name}");
        }
    }

    #[test]
    fn index_templates_compose_only_bundled_components() {
        let names = IndexNames::with_prefix("t1");
        for (name, text) in INDEX_TEMPLATES {
            let v = render(text, &names).unwrap();
            for c in v["composed_of"].as_array().unwrap() {
                let c = c.as_str().unwrap();
                let short = c.strip_prefix("t1-").unwrap_or_else(|| panic!("{name}: {c} not renamed"));
                assert!(COMPONENTS.iter().any(|(n, _)| *n == short), "{name}: unknown component {c}");
            }
        }
    }

    #[test]
    fn names_are_rewritten_for_a_prefix() {
        let names = IndexNames::with_prefix("team-a");
        let v = render(INDEX_TEMPLATES[1].1, &names).unwrap();
        assert_eq!(v["index_patterns"][0], "team-a-anomalies-*");
        assert!(v["template"]["aliases"].get("team-a-anomalies").is_some());
    }

    /// Leaf paths of a document as Elasticsearch sees them (dots split, arrays flattened).
    fn leaf_paths(v: &Value, prefix: &str, out: &mut std::collections::BTreeSet<String>) {
        match v {
            Value::Object(m) => {
                for (k, x) in m {
                    let p = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                    leaf_paths(x, &p, out);
                }
            }
            Value::Array(a) => a.iter().for_each(|x| leaf_paths(x, prefix, out)),
            Value::Null => {}
            _ => {
                out.insert(prefix.to_owned());
            }
        }
    }

    #[test]
    fn every_field_the_worker_writes_is_mapped() {
        use crate::pipeline::{Pipeline, PipelineConfig};
        use crate::simulate::{simulate_events, SimConfig};
        use crate::sink::MemorySink;
        let sim = SimConfig {
            seed: 3,
            duration: 3 * crate::model::time::HOUR_MS,
            rate: 6.0,
            ..Default::default()
        };
        let (events, _) = simulate_events(sim.clone()).unwrap();
        let mut p = Pipeline::new(PipelineConfig::default()).unwrap();
        let mut sink = MemorySink::default();
        for e in events.iter().cloned() {
            p.push(e, &mut sink).unwrap();
        }
        p.finish(&mut sink).unwrap();
        let docs: Vec<(&str, Vec<Value>)> = vec![
            (
                "anomalies-mappings",
                sink.anomalies.iter().map(|a| serde_json::to_value(a).unwrap()).collect(),
            ),
            (
                "alerts-mappings",
                sink.alerts().iter().map(|a| serde_json::to_value(a).unwrap()).collect(),
            ),
            (
                "journeys-mappings",
                sink.journeys.iter().map(|j| serde_json::to_value(j).unwrap()).collect(),
            ),
            (
                "services-mappings",
                sink.services
                    .iter()
                    .map(|s| {
                        let mut v = serde_json::to_value(s).unwrap();
                        v["@timestamp"] = json!("2026-03-02T00:00:00Z");
                        v
                    })
                    .collect(),
            ),
            (
                "calls-mappings",
                events.iter().take(1000).map(|e| serde_json::to_value(e).unwrap()).collect(),
            ),
        ];
        for (component, docs) in docs {
            assert!(!docs.is_empty(), "{component}: the run produced documents");
            let text = COMPONENTS.iter().find(|(n, _)| *n == component).unwrap().1;
            let mapped: std::collections::BTreeMap<String, String> = mapped_fields(text).into_iter().collect();
            let mut seen = std::collections::BTreeSet::new();
            for d in &docs {
                leaf_paths(d, "", &mut seen);
            }
            for path in &seen {
                let ty = mapped
                    .get(path)
                    .unwrap_or_else(|| panic!("{component}: `{path}` is written but not mapped"));
                assert_ne!(ty, "object", "{component}: `{path}` is a value but mapped as an object");
            }
        }
    }

    #[test]
    fn containment_ignores_what_the_server_adds() {
        let have = json!({"a": {"b": 1, "c": "2"}, "d": [1, 2], "e": "x"});
        assert!(contains(&have, &json!({"a": {"c": 2}, "d": [1, 2]})));
        assert!(!contains(&have, &json!({"a": {"b": 2}})));
        assert!(!contains(&have, &json!({"z": 1})));
    }
}
