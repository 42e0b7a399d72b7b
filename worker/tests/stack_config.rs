//! The stack's configuration files agree with the index templates: every field the Logstash
//! pipeline writes exists in the template of the index it writes to, and every field its grok
//! patterns capture is mapped or dropped (none leaks into a dynamic field). Logstash itself is
//! not installable here, so this is checked statically; the patterns themselves run in
//! `access_logs.rs` through the grok crate.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed step in a test is its failure

use std::path::{Path, PathBuf};

mod common;
use common::template_fields;

use apiwatch::source::access::{add_patterns, PATTERNS};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// `[a][b][c]` references in a Logstash config, as `a.b.c`.
fn field_references(conf: &str) -> Vec<String> {
    let mut refs = Vec::new();
    let b = conf.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'[' {
            let mut parts = Vec::new();
            let mut j = i;
            while j < b.len() && b[j] == b'[' {
                let Some(end) = conf[j + 1..].find(']') else { break };
                let part = &conf[j + 1..j + 1 + end];
                if part.is_empty() || !part.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '@') {
                    break;
                }
                parts.push(part.to_owned());
                j += end + 2;
            }
            if !parts.is_empty() {
                refs.push(parts.join("."));
                i = j;
                continue;
            }
        }
        i += 1;
    }
    refs
}

/// Fields the useragent filter writes under its target in ECS v8 mode.
const USERAGENT_OUTPUTS: [&str; 6] = ["name", "version", "os.name", "os.version", "os.full", "device.name"];

#[test]
fn every_field_the_logstash_pipeline_writes_is_in_the_templates() {
    let conf = std::fs::read_to_string(repo().join("logstash/pipeline/apiwatch.conf")).unwrap();
    let calls = template_fields("apiwatch-calls-mappings");
    let dead = template_fields("apiwatch-deadletter-mappings");
    let known = |f: &str| {
        [&calls, &dead]
            .iter()
            .any(|m| m.contains_key(f) || m.keys().any(|k| k.starts_with(&format!("{f}."))))
    };
    let captures = grok_captures();
    let refs = field_references(&conf);
    assert!(refs.len() > 30, "the pipeline's references were found: {refs:?}");
    let mut unknown: Vec<&String> = refs
        .iter()
        // @metadata never leaves Logstash; fields.* is what Beats sends in, and is removed;
        // flat names are grok's captures, read before they are renamed or dropped.
        .filter(|r| !r.starts_with("@metadata") && !r.starts_with("fields") && r.as_str() != "tags" && r.as_str() != "message")
        .filter(|r| r.contains('.') || !captures.contains(*r))
        .filter(|r| r.starts_with(|c: char| c.is_ascii_alphabetic() || c == '@'))
        .filter(|r| !known(r))
        .collect();
    unknown.dedup();
    assert!(unknown.is_empty(), "fields the pipeline writes that no template maps: {unknown:?}");
    // Dead letters carry exactly the strict mapping's fields.
    for f in ["deadletter.index", "deadletter.reason", "deadletter.document", "deadletter.worker"] {
        assert!(refs.iter().any(|r| r == f) && dead.contains_key(f), "{f}");
    }
    for f in USERAGENT_OUTPUTS {
        assert_eq!(
            calls.get(&format!("user_agent.{f}")).map(String::as_str),
            Some("keyword"),
            "user_agent.{f}"
        );
    }
    // Types the pipeline converts to must be numeric in the template.
    for f in [
        "http.response.status_code",
        "http.response.bytes",
        "http.request.bytes",
        "event.duration",
    ] {
        assert!(matches!(calls[f].as_str(), "integer" | "long"), "{f} is {}", calls[f]);
    }
}

/// The named captures (the lower-case aliases; upper-case names are the patterns themselves).
fn captures_of(name: &str) -> Vec<String> {
    let mut grok = grok::Grok::with_default_patterns();
    add_patterns(&mut grok, PATTERNS);
    let p = grok.compile(&format!("^%{{{name}}}$"), false).unwrap();
    p.capture_names()
        .filter(|c| c.chars().any(|ch| ch.is_ascii_lowercase()))
        .map(str::to_owned)
        .collect()
}

fn grok_captures() -> Vec<String> {
    let mut all = captures_of("NGINX_APIWATCH");
    all.extend(captures_of("APACHE_APIWATCH"));
    all
}

#[test]
fn every_grok_capture_is_mapped_or_dropped_by_the_pipeline() {
    let conf = std::fs::read_to_string(repo().join("logstash/pipeline/apiwatch.conf")).unwrap();
    for name in ["NGINX_APIWATCH", "APACHE_APIWATCH"] {
        let captures = captures_of(name);
        assert!(captures.len() >= 15, "{name}: {captures:?}");
        for c in captures {
            assert!(
                conf.contains(&format!("\"{c}\"")),
                "{name} captures `{c}`, which the pipeline neither maps nor drops"
            );
        }
        assert!(
            conf.contains(&format!("^%{{{name}}}$")),
            "the pipeline anchors {name} as the worker does"
        );
    }
}

/// The worker's configuration in the compose stack is accepted by the worker's own parser and
/// validation (the compose file's names are checked in scripts/compose/test_compose.py).
#[test]
fn the_compose_worker_config_is_valid() {
    let path = repo().join("scripts/compose/apiwatch.toml");
    let app = apiwatch::config::load_app(Some(&path), &|_| None, &Default::default()).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(app.es.url.as_deref(), Some("https://elasticsearch:9200"));
    assert_eq!(app.es.ca_cert.as_deref(), Some(Path::new("/certs/ca/ca.crt")));
    let email = app.channels.email.expect("the stack mails alerts to its mail catcher");
    assert_eq!((email.smtp_host.as_str(), email.smtp_port), ("mailcatcher", 1025));
    assert!(!email.routes.is_empty());
}
