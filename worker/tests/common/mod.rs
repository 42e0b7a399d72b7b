//! Helpers shared by the integration tests (each test crate uses some of them).
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use apiwatch::model::time::HOUR_MS;
use apiwatch::simulate::incidents::Labels;
use apiwatch::simulate::{simulate_to_writer, SimConfig};

/// Simulates `hours` of a topology into `dir/events.ndjson`; returns the file and the labels.
pub fn simulate(dir: &Path, topology: &str, seed: u64, hours: f64) -> (PathBuf, Labels) {
    let path = dir.join("events.ndjson");
    let mut w = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
    let cfg = SimConfig {
        seed,
        topology: topology.into(),
        duration: (hours * HOUR_MS as f64) as i64,
        ..Default::default()
    };
    let labels = simulate_to_writer(cfg, &mut w, |_| {}).unwrap();
    drop(w);
    (path, labels)
}

/// The repository's top directory.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// Dotted field name → type, from a component template's mappings.
pub fn template_fields(component: &str) -> BTreeMap<String, String> {
    let path = repo_root().join("es-templates/component").join(format!("{component}.json"));
    let t: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let mut out = BTreeMap::new();
    fn walk(props: &serde_json::Value, prefix: &str, out: &mut BTreeMap<String, String>) {
        for (k, v) in props.as_object().unwrap() {
            let name = format!("{prefix}{k}");
            match v.get("properties") {
                Some(p) => walk(p, &format!("{name}."), out),
                None => {
                    out.insert(name, v["type"].as_str().unwrap_or("object").to_owned());
                }
            }
        }
    }
    walk(&t["template"]["mappings"]["properties"], "", &mut out);
    out
}

/// Runs the apiwatch binary (without ES credentials from the caller's environment); panics
/// with its output unless it succeeds; returns its standard output.
pub fn apiwatch_ok(args: &[&str]) -> String {
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_apiwatch"))
        .args(args)
        .env_remove("APIWATCH_ES_USERNAME")
        .env_remove("APIWATCH_ES_PASSWORD")
        .env_remove("APIWATCH_ES_API_KEY")
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(o.status.success(), "apiwatch {args:?}: {out}{}", String::from_utf8_lossy(&o.stderr));
    out
}
