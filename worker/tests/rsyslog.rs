//! One real shipper end to end: Debian's rsyslog (imfile → mmjsonparse → omelasticsearch, with
//! the config of scripts/rsyslog/apiwatch.conf, started by scripts/rsyslog.sh) tails a JSON log
//! while it grows, into the real Elasticsearch started by scripts/test.sh. Bad lines must land in
//! the dead-letter index with their reason and text; then the worker backfills what arrived and
//! must find the incidents, as file mode does on the same lines.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed step in a test is its failure

mod common;
use common::apiwatch_ok;

use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use apiwatch::es::{ClientOptions, Credentials, EsClient};
use apiwatch::eval::evaluate;
use apiwatch::model::Alert;
use apiwatch::simulate::incidents::Labels;
use serde_json::{json, Value};

fn es_url() -> String {
    std::env::var("APIWATCH_TEST_ES_URL")
        .expect("APIWATCH_TEST_ES_URL is not set: run the tests with scripts/test.sh, which starts Elasticsearch")
}

fn rsyslog(args: &[&str]) -> String {
    let o = Command::new(common::repo_root().join("scripts/rsyslog.sh"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "scripts/rsyslog.sh {args:?}: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).trim().to_owned()
}

fn count(c: &EsClient, index: &str) -> u64 {
    c.json(
        "POST",
        &format!("/{index}/_refresh?ignore_unavailable=true&allow_no_indices=true"),
        None,
    )
    .unwrap();
    let (status, v) = c
        .json_status(
            "GET",
            &format!("/{index}/_count?ignore_unavailable=true&allow_no_indices=true"),
            None,
        )
        .unwrap();
    if status == 404 {
        return 0;
    }
    v["count"].as_u64().unwrap_or(0)
}

fn sources(c: &EsClient, index: &str) -> Vec<Value> {
    c.json("POST", &format!("/{index}/_refresh"), None).unwrap();
    let v = c.json("POST", &format!("/{index}/_search"), Some(&json!({"size": 1000}))).unwrap();
    v["hits"]["hits"].as_array().unwrap().iter().map(|h| h["_source"].clone()).collect()
}

/// Stops the rsyslog instance even when an assertion fails.
struct Instance(String);
impl Drop for Instance {
    fn drop(&mut self) {
        let _ = Command::new(common::repo_root().join("scripts/rsyslog.sh"))
            .args(["stop", "--name", &self.0])
            .output();
    }
}

#[test]
fn rsyslog_ships_a_growing_json_log_and_the_worker_finds_its_incidents() {
    let url = es_url();
    let mut o = ClientOptions::new(&url);
    o.credentials = Credentials::None;
    let es = EsClient::new(o).unwrap();
    let run = format!("rs{}x{}", std::process::id(), chrono::Utc::now().timestamp() % 100_000);
    let stream = format!("logs-apiwatch.calls-{run}");
    let prefix = format!("{run}-w");
    let deadletter = format!("{prefix}-deadletter");
    apiwatch_ok(&["setup", "--es", &url, "--prefix", &prefix]);

    // Two simulated hours of the bank topology: the 45-60 minutes the simulator keeps clean for
    // warm-up, then the hour with its incident (seed 237: a slowed cross-provider hop at 00:49).
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("events.ndjson");
    let labels_path = dir.path().join("labels.json");
    apiwatch_ok(&[
        "simulate",
        "-o",
        events.to_str().unwrap(),
        "--labels",
        labels_path.to_str().unwrap(),
        "--topology",
        "bank",
        "--seed",
        "237",
        "--hours",
        "2",
        "--rate",
        "10",
    ]);
    let labels: Labels = serde_json::from_str(&std::fs::read_to_string(&labels_path).unwrap()).unwrap();
    assert!(
        labels.incidents.iter().any(|i| i.expect_alert),
        "the simulated hours hold no incident to find"
    );
    let text = std::fs::read_to_string(&events).unwrap();
    let good: Vec<&str> = text.lines().collect();

    // The application's log, empty when rsyslog starts; it grows in chunks while rsyslog tails it,
    // with three lines Elasticsearch must not get as calls.
    let log = dir.path().join("app.json");
    std::fs::File::create(&log).unwrap();
    let name = format!("test-{run}");
    let work = rsyslog(&[
        "start",
        "--name",
        &name,
        "--file",
        log.to_str().unwrap(),
        "--es",
        &url,
        "--calls",
        &stream,
        "--deadletter",
        &deadletter,
    ]);
    let _instance = Instance(name.clone());
    let bad = [
        (3, "{\"@timestamp\": \"2026-03-02T00:20:00Z\", truncated".to_owned()),
        (
            7,
            r#"{"service.name":"payments","cloud.provider":"aws","event.duration":1000}"#.to_owned(),
        ),
        (
            11,
            r#"{"@timestamp":"2026-03-02T00:40:00Z","service.name":"payments","cloud.provider":"aws","event.duration":"slow"}"#.to_owned(),
        ),
    ];
    let not_json_offset = append_in_chunks(&log, &good, &bad);

    wait_until_shipped(&es, (&stream, good.len() as u64), (&deadletter, bad.len() as u64), &work);
    rsyslog(&["stop", "--name", &name]);

    // Each bad line is a dead letter with its reason and its text, whole.
    let dead = sources(&es, &deadletter);
    let find = |text: &str| {
        dead.iter()
            .find(|d| d["deadletter"]["document"] == text)
            .unwrap_or_else(|| panic!("no dead letter holds {text}: {dead:?}"))
    };
    let d = find(&bad[0].1);
    let why = d["deadletter"]["reason"].as_str().unwrap();
    assert!(why.contains("not a JSON object") && why.contains(log.to_str().unwrap()), "{why}");
    assert!(
        why.contains(&format!("byte {not_json_offset}")),
        "{why} (expected byte {not_json_offset})"
    );
    let why = find(&bad[1].1)["deadletter"]["reason"].as_str().unwrap().to_owned();
    assert!(why.contains("@timestamp"), "{why}");
    let d = find(&bad[2].1);
    assert!(d["deadletter"]["reason"].as_str().unwrap().contains("event.duration"), "{d}");
    assert_eq!(d["deadletter"]["status"], 400);

    // The worker reads what rsyslog shipped and finds the incidents, with the same alerts as file
    // mode on the same lines (nothing lost or changed on the way).
    let summary = apiwatch_ok(&[
        "backfill",
        "--es",
        &url,
        "--prefix",
        &prefix,
        "--logs",
        &stream,
        "--from",
        "2026-03-02T00:00:00Z",
        "--to",
        "2026-03-02T02:00:00Z",
        "--json",
    ]);
    let summary: Value = serde_json::from_str(&summary).unwrap();
    assert_eq!(summary["events"].as_u64(), Some(good.len() as u64), "{summary}");
    let alerts: Vec<Alert> = sources(&es, &format!("{prefix}-alerts"))
        .into_iter()
        .map(|a| serde_json::from_value(a).unwrap())
        .collect();
    let r = evaluate(&labels, &alerts);
    let expected = labels.incidents.iter().filter(|i| i.expect_alert).count();
    assert_eq!(r.detected_right_origin, expected, "{:?}", r.summary_lines());
    assert_eq!(r.false_alerts, 0, "{:?}", r.false_alert_titles);

    let out = dir.path().join("file-mode");
    apiwatch_ok(&["detect", "-i", events.to_str().unwrap(), "-o", out.to_str().unwrap()]);
    let mut file_mode: Vec<(String, String)> = std::fs::read_to_string(out.join("alerts.ndjson"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Alert>(l).unwrap())
        .map(|a| (a.id, a.title))
        .collect();
    let mut shipped: Vec<(String, String)> = alerts.into_iter().map(|a| (a.id, a.title)).collect();
    file_mode.sort();
    shipped.sort();
    assert_eq!(shipped, file_mode);
}

/// Appends the good lines to `log` in twenty chunks (rsyslog tails it as it grows), each bad
/// line after the chunk it names; returns the byte offset of the line that is not JSON.
fn append_in_chunks(log: &Path, good: &[&str], bad: &[(usize, String)]) -> u64 {
    let mut file = std::fs::OpenOptions::new().append(true).open(log).unwrap();
    let mut offset = 0u64;
    let mut not_json_offset = 0;
    let chunk = good.len().div_ceil(20);
    for (i, lines) in good.chunks(chunk).enumerate() {
        let mut buf = String::new();
        for l in lines {
            buf.push_str(l);
            buf.push('\n');
        }
        if let Some((_, b)) = bad.iter().find(|(at, _)| *at == i) {
            if i == 3 {
                not_json_offset = offset + buf.len() as u64;
            }
            buf.push_str(b);
            buf.push('\n');
        }
        file.write_all(buf.as_bytes()).unwrap();
        file.flush().unwrap();
        offset += buf.len() as u64;
        std::thread::sleep(Duration::from_millis(100));
    }
    not_json_offset
}

/// Waits (at most 240 s) until the calls and the dead letters are all in Elasticsearch, and
/// fails with rsyslog's own log if they are not.
fn wait_until_shipped(es: &EsClient, (stream, good): (&str, u64), (deadletter, bad): (&str, u64), work: &str) {
    let started = Instant::now();
    loop {
        let (calls, dead) = (count(es, stream), count(es, deadletter));
        if calls >= good && dead >= bad {
            assert_eq!((calls, dead), (good, bad), "more documents than lines");
            break;
        }
        if started.elapsed() > Duration::from_secs(240) {
            let logs = std::fs::read_to_string(Path::new(work).join("rsyslog.log")).unwrap_or_default();
            let errors = std::fs::read_to_string(Path::new(work).join("work/es-errors.json")).unwrap_or_default();
            panic!(
                "after 240 s: {calls} of {} calls and {dead} of {} dead letters\nrsyslog: {logs}\nerrors: {}",
                good,
                bad,
                &errors[..errors.len().min(2000)]
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}
