//! The logs people have, through the binary as a user runs it: every provider format
//! recognised without `--format`, broken lines reported where they are, a default nginx log
//! without timing still alerting, and any JSON read by a field map giving the alerts its ECS
//! twin gives.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed step in a test is its failure

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use apiwatch::model::time::{HOUR_MS, MINUTE_MS};
use apiwatch::simulate::incidents::{IncidentKind, Labels};
use apiwatch::simulate::{simulate_events, simulate_to_writer_as, SimConfig};
use apiwatch::source::formats::write;
use apiwatch::source::LogFormat;

fn corpus(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/formats")
        .join(format!("{name}.log"))
}

/// Runs `apiwatch detect ARGS`; returns stdout (the run must succeed).
fn detect(args: &[&str]) -> String {
    let o = Command::new(env!("CARGO_BIN_EXE_apiwatch"))
        .arg("detect")
        .args(args)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(o.status.success(), "{stdout}{}", String::from_utf8_lossy(&o.stderr));
    stdout
}

fn alert_ids(dir: &Path) -> BTreeSet<String> {
    std::fs::read_to_string(dir.join("alerts.ndjson"))
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["alert.id"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect()
}

fn alerts(dir: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(dir.join("alerts.ndjson"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn every_corpus_is_recognised_without_format_and_read_whole() {
    let dir = tempfile::tempdir().unwrap();
    for (name, format) in [
        ("aws-alb", "aws-alb"),
        ("envoy", "envoy"),
        ("aws-apigw", "aws-apigw"),
        ("gcp-lb", "gcp-lb"),
        ("azure-appgw", "azure-appgw"),
        ("azure-apim", "azure-apim"),
        ("nginx-default", "nginx"),
        ("nginx", "nginx"),
        ("apache", "apache"),
        ("json", "json"),
    ] {
        let input = corpus(name);
        let out = dir.path().join(name);
        let n = std::fs::read_to_string(&input).unwrap().lines().count();
        let text = detect(&[
            "-i",
            input.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
            "--service",
            "edge",
            "--provider",
            "onprem",
            "--no-models",
        ]);
        assert!(
            text.contains(&format!("{name}.log: {format} (recognised in {n} of its first {n} lines)")),
            "{name}: {text}"
        );
        assert!(text.contains(&format!("{n} used, 0 skipped")), "{name}: {text}");
    }
}

#[test]
fn a_named_format_that_does_not_fit_says_which_does() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("o");
    let text = detect(&[
        "-i",
        corpus("gcp-lb").to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--format",
        "aws-alb",
        "--no-models",
    ]);
    assert!(text.contains("they look like gcp-lb: try --format gcp-lb"), "{text}");
    assert!(text.contains("0 used, 2 skipped"), "{text}");
    let other = dir.path().join("other.log");
    std::fs::write(&other, "{\"ts\": 1772431201123, \"svc\": \"payments\", \"resp_ms\": 12}\n").unwrap();
    let text = detect(&["-i", other.to_str().unwrap(), "-o", out.to_str().unwrap(), "--no-models"]);
    assert!(text.contains("map its fields with --field"), "{text}");
    assert!(
        ["ts", "svc", "resp_ms"].iter().all(|k| text.contains(k)),
        "the keys seen are named: {text}"
    );
}

/// 10,000 simulated calls (seed 908, not used elsewhere) written in every format with a broken
/// line every 997: every written call is read (the floor is 99.9%) and each broken line is
/// rejected at its own line number with a reason.
#[test]
fn generated_logs_of_every_format_parse_and_broken_lines_are_placed() {
    let dir = tempfile::tempdir().unwrap();
    let sim = SimConfig {
        seed: 908,
        duration: 30 * MINUTE_MS,
        rate: 8.0,
        max_events: Some(10_000),
        ..Default::default()
    };
    let (events, _) = simulate_events(sim).unwrap();
    for format in LogFormat::ALL.into_iter().skip(1) {
        let mut text = String::new();
        let mut injected = Vec::new();
        let mut line = 0u64;
        for (i, e) in events.iter().enumerate() {
            text.push_str(&write::line(e, format));
            text.push('\n');
            line += 1;
            if i % 997 == 996 {
                text.push_str("garbage \"unclosed\n");
                line += 1;
                injected.push(line);
            }
        }
        let input = dir.path().join(format!("{}.log", format.name()));
        std::fs::write(&input, text).unwrap();
        let out = dir.path().join(format!("{}-out", format.name()));
        let stdout = detect(&[
            "-i",
            input.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
            "--provider",
            "onprem",
            "--no-models",
        ]);
        assert!(stdout.contains(&format!(": {} (recognised", format.name())), "{stdout}");
        assert!(
            stdout.contains(&format!("{} used, {} skipped", events.len(), injected.len())),
            "{}: {stdout}",
            format.name()
        );
        let rejected: Vec<(u64, String)> = std::fs::read_to_string(out.join("rejected.ndjson"))
            .unwrap()
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                (v["line"].as_u64().unwrap(), v["reason"].as_str().unwrap().to_owned())
            })
            .collect();
        assert_eq!(rejected.iter().map(|r| r.0).collect::<Vec<_>>(), injected, "{}", format.name());
        assert!(rejected.iter().all(|(_, why)| !why.is_empty()));
    }
}

/// Six hours of the bank estate (seed 502, first run here) with an error burst on fraud/gcp and
/// a traffic drop on gateway/onprem, written as nginx's default `combined` log (no request
/// time, no service) in one file per host, `<provider>/<service>.access.log`: both incidents
/// are alerted, on the right service.
#[test]
fn a_default_nginx_log_without_timing_still_finds_errors_and_drops() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = SimConfig {
        seed: 502,
        duration: 6 * HOUR_MS,
        rate: 10.0,
        ..Default::default()
    };
    let (events, labels) = simulate_events(cfg).unwrap();
    let mut files: std::collections::BTreeMap<(String, String), String> = Default::default();
    for e in &events {
        let line = write::line(e, LogFormat::Nginx);
        // Keep the combined part only: what nginx writes by default.
        let combined = line.split(" rt=").next().unwrap();
        let f = files.entry((e.provider.to_string(), e.service.to_string())).or_default();
        f.push_str(combined);
        f.push('\n');
    }
    let mut args: Vec<String> = Vec::new();
    for ((provider, service), text) in &files {
        let p = dir.path().join(provider);
        std::fs::create_dir_all(&p).unwrap();
        let path = p.join(format!("{service}.access.log"));
        std::fs::write(&path, text).unwrap();
        args.extend(["-i".into(), path.display().to_string()]);
    }
    let out = dir.path().join("out");
    args.extend(
        [
            "-o",
            out.to_str().unwrap(),
            "--service",
            "{file}",
            "--provider",
            "{dir}",
            "--no-models",
        ]
        .iter()
        .map(|s| (*s).to_owned()),
    );
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let text = detect(&args);
    assert!(text.contains("without a duration") && text.contains("rt=$request_time"), "{text}");
    let found = alerts(&out);
    for kind in [IncidentKind::ErrorBurst, IncidentKind::TrafficDrop] {
        let inc = labels.incidents.iter().find(|i| i.kind == kind).unwrap();
        let hit = found.iter().any(|a| {
            let t = apiwatch::model::time::parse_rfc3339(a["@timestamp"].as_str().unwrap()).unwrap();
            t >= inc.start - 2 * MINUTE_MS
                && t <= inc.end
                && a["service.name"] == inc.service.as_str()
                && a["cloud.provider"] == inc.provider.as_str()
        });
        assert!(hit, "{kind:?} on {}/{} not alerted: {text}", inc.service, inc.provider);
    }
}

/// Four hours of the saas estate (seed 503, first run here) written as ECS events and as a JSON
/// log with other names (`ts` in epoch milliseconds, `resp_ms` in milliseconds, `svc`, ...):
/// read by `--field` flags and by `[input.fields]`, the log gives the very alerts, by id, of its
/// ECS twin.
#[test]
fn json_with_other_names_gives_the_alerts_of_its_ecs_twin() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = SimConfig {
        seed: 503,
        topology: "saas".into(),
        duration: 4 * HOUR_MS,
        rate: 10.0,
        ..Default::default()
    };
    let mut ecs = Vec::new();
    let _: Labels = simulate_to_writer_as(cfg.clone(), &mut ecs, LogFormat::Json, |_| {}).unwrap();
    let ecs_path = dir.path().join("ecs.ndjson");
    std::fs::write(&ecs_path, &ecs).unwrap();
    let mut other = String::new();
    for line in String::from_utf8(ecs).unwrap().lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let t = apiwatch::model::time::parse_rfc3339(v["@timestamp"].as_str().unwrap()).unwrap();
        let mut o = serde_json::json!({
            "ts": t,
            "svc": v["service.name"],
            "env": {"cloud": v["cloud.provider"], "region": v["cloud.region"]},
            "req": {"method": v["http.request.method"], "uri": format!("https://api.example.com{}?q=1", v["url.path"].as_str().unwrap())},
            "code": v["http.response.status_code"].to_string(),
            "resp_ms": v["event.duration"].as_u64().unwrap() as f64 / 1e6,
        });
        for (from, to) in [
            ("host.name", "host"),
            ("event.outcome", "outcome"),
            ("trace.id", "trace"),
            ("span.id", "span"),
            ("parent.id", "parent"),
            ("user.id", "user"),
            ("client.ip", "ip"),
            ("user_agent.original", "ua"),
            ("http.request.bytes", "in_b"),
            ("http.response.bytes", "out_b"),
        ] {
            if let Some(x) = v.get(from) {
                o[to] = x.clone();
            }
        }
        other.push_str(&o.to_string());
        other.push('\n');
    }
    let other_path = dir.path().join("app.json");
    std::fs::write(&other_path, other).unwrap();

    let ecs_out = dir.path().join("ecs-out");
    detect(&["-i", ecs_path.to_str().unwrap(), "-o", ecs_out.to_str().unwrap(), "--no-models"]);
    let want = alert_ids(&ecs_out);
    assert!(want.len() >= 3, "the run raises alerts to compare: {want:?}");

    let map = [
        ("@timestamp", "ts:epoch_ms"),
        ("service.name", "svc"),
        ("cloud.provider", "env.cloud"),
        ("cloud.region", "env.region"),
        ("http.request.method", "req.method"),
        ("url.path", "req.uri"),
        ("http.response.status_code", "code"),
        ("event.duration", "resp_ms:ms"),
        ("host.name", "host"),
        ("event.outcome", "outcome"),
        ("trace.id", "trace"),
        ("span.id", "span"),
        ("parent.id", "parent"),
        ("user.id", "user"),
        ("client.ip", "ip"),
        ("user_agent.original", "ua"),
        ("http.request.bytes", "in_b"),
        ("http.response.bytes", "out_b"),
    ];
    let flags_out = dir.path().join("flags-out");
    let mut args = vec![
        "-i".to_owned(),
        other_path.display().to_string(),
        "-o".into(),
        flags_out.display().to_string(),
        "--no-models".into(),
    ];
    for (t, s) in map {
        args.push("--field".into());
        args.push(format!("{t}={s}"));
    }
    let text = detect(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(text.contains("app.json: json (JSON read by the field map)"), "{text}");
    assert_eq!(alert_ids(&flags_out), want, "{text}");

    let mut toml = String::from("[input.fields]\n");
    for (t, s) in map {
        match s.split_once(':') {
            Some((src, "epoch_ms")) => toml.push_str(&format!("\"{t}\" = {{ from = \"{src}\", time = \"epoch_ms\" }}\n")),
            Some((src, unit)) => toml.push_str(&format!("\"{t}\" = {{ from = \"{src}\", unit = \"{unit}\" }}\n")),
            None => toml.push_str(&format!("\"{t}\" = \"{s}\"\n")),
        }
    }
    let config = dir.path().join("apiwatch.toml");
    std::fs::write(&config, toml).unwrap();
    let toml_out = dir.path().join("toml-out");
    detect(&[
        "-i",
        other_path.to_str().unwrap(),
        "-o",
        toml_out.to_str().unwrap(),
        "--config",
        config.to_str().unwrap(),
        "--no-models",
    ]);
    assert_eq!(alert_ids(&toml_out), want);
}
