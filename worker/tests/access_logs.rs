//! Access logs read directly (`detect --format nginx|apache`) with the grok patterns Logstash
//! uses (logstash/patterns/apiwatch): a hand-written corpus of real-looking lines, good and
//! bad, and a generated hour of nginx traffic with broken lines mixed in.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed step in a test is its failure

use std::path::{Path, PathBuf};
use std::process::Command;

use apiwatch::eval::evaluate;
use apiwatch::model::anomaly::Alert;
use apiwatch::model::time::HOUR_MS;
use apiwatch::simulate::{simulate_to_writer_as, SimConfig};
use apiwatch::source::LogFormat;

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/access").join(name)
}

/// Runs detect; returns (stdout, the rejected lines' numbers and reasons).
fn detect(format: &str, input: &Path, out: &Path) -> (String, Vec<(u64, String)>) {
    let o = Command::new(env!("CARGO_BIN_EXE_apiwatch"))
        .args(["detect", "--format", format, "--input"])
        .arg(input)
        .arg("--output")
        .arg(out)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(o.status.success(), "{stdout}{}", String::from_utf8_lossy(&o.stderr));
    let rejected = std::fs::read_to_string(out.join("rejected.ndjson"))
        .unwrap_or_default()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (v["line"].as_u64().unwrap(), v["reason"].as_str().unwrap().to_owned())
        })
        .collect();
    (stdout, rejected)
}

fn lines(path: &Path) -> usize {
    std::fs::read_to_string(path).unwrap().lines().count()
}

#[test]
fn the_corpus_good_lines_parse_and_every_bad_line_is_reported_where_it_is() {
    let dir = tempfile::tempdir().unwrap();
    for format in ["nginx", "apache"] {
        let good = data(&format!("{format}-good.log"));
        let (out, rejected) = detect(format, &good, &dir.path().join(format!("{format}-good")));
        assert!(rejected.is_empty(), "{format}: good lines rejected: {rejected:?}");
        let n = lines(&good);
        assert!(out.contains(&format!("read {n} lines: {n} used, 0 skipped, 0 blank")), "{out}");

        let bad = data(&format!("{format}-bad.log"));
        let (out, rejected) = detect(format, &bad, &dir.path().join(format!("{format}-bad")));
        let n = lines(&bad) as u64;
        let numbers: Vec<u64> = rejected.iter().map(|r| r.0).collect();
        assert_eq!(numbers, (1..=n).collect::<Vec<_>>(), "{format}: {out}");
        assert!(rejected.iter().all(|(_, why)| !why.is_empty()));
        assert!(out.contains(&format!("{n} skipped")), "{out}");
    }
}

/// Six generated hours of nginx logs (bank, seed 221, not used elsewhere) with broken lines every
/// 997 lines: every generated line parses (the floor is 99.9%), each broken one is rejected at
/// its own line number, and detection on the access log finds what detection on the same
/// calls as JSON finds.
#[test]
fn a_generated_nginx_log_parses_and_detects_like_its_json() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = SimConfig {
        seed: 221,
        topology: "bank".into(),
        duration: 6 * HOUR_MS,
        rate: 20.0,
        ..Default::default()
    };
    let write = |format: LogFormat, name: &str| {
        let mut buf = Vec::new();
        let labels = simulate_to_writer_as(cfg.clone(), &mut buf, format, |_| {}).unwrap();
        (String::from_utf8(buf).unwrap(), labels, dir.path().join(name))
    };
    let (nginx, labels, nginx_path) = write(LogFormat::Nginx, "access.log");
    let (json, _, json_path) = write(LogFormat::Json, "events.ndjson");
    std::fs::write(&json_path, json).unwrap();

    let broken = [
        "GET /health 200",
        "10.0.0.1 - - [02/Mar/2026:00:00:05 +0000] \"GET /x HTTP/1.1\" 999 1 \"-\" \"-\" rt=0.1 svc=a cloud=aws",
        "\u{16}\u{3}\u{1} binary",
    ];
    let mut mixed = String::new();
    let mut injected = Vec::new();
    let mut generated = 0u64;
    for (i, line) in nginx.lines().enumerate() {
        mixed.push_str(line);
        mixed.push('\n');
        generated += 1;
        if i % 997 == 996 {
            mixed.push_str(broken[injected.len() % broken.len()]);
            mixed.push('\n');
            injected.push(generated + injected.len() as u64 + 1);
        }
    }
    std::fs::write(&nginx_path, mixed).unwrap();

    let (out, rejected) = detect("nginx", &nginx_path, &dir.path().join("nginx-out"));
    let numbers: Vec<u64> = rejected.iter().map(|r| r.0).collect();
    assert_eq!(numbers, injected, "{out}");
    let used = generated;
    assert!(
        out.contains(&format!("{} used, {} skipped", used, injected.len())),
        "every generated line parses (>= 99.9% is the floor): {out}"
    );

    let (json_out, _) = detect("json", &json_path, &dir.path().join("json-out"));
    let read_alerts = |d: &str| -> Vec<Alert> {
        std::fs::read_to_string(dir.path().join(d).join("alerts.ndjson"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let from_log = evaluate(&labels, &read_alerts("nginx-out"));
    let from_json = evaluate(&labels, &read_alerts("json-out"));
    assert!(from_json.detected > 0, "{json_out}");
    // nginx logs durations in whole milliseconds; the incidents found must not depend on it.
    assert_eq!(from_log.detected, from_json.detected, "{out}\n{json_out}");
}
