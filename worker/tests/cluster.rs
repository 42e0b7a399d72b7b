//! Integration tests against a real three-node Elasticsearch cluster, started by
//! `scripts/test.sh` (`scripts/elasticsearch.sh start --nodes 3`), which passes the node URLs in
//! `APIWATCH_TEST_ES_CLUSTER` and the cluster's name in `APIWATCH_TEST_ES_CLUSTER_NAME`. The
//! test kills a node, so the cluster serves this one test.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed step in a test is its failure

use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use apiwatch::es::{ClientOptions, Credentials, EsClient};
use common::apiwatch_ok;
use serde_json::{json, Value};

mod common;

const BIN: &str = env!("CARGO_BIN_EXE_apiwatch");
const FROM: &str = "2026-03-02T00:00:00Z";
const TO: &str = "2026-03-02T02:00:00Z";

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set: run the tests with scripts/test.sh, which starts the cluster"))
}

fn client(urls: &str) -> EsClient {
    let mut o = ClientOptions::new(urls);
    o.credentials = Credentials::None;
    EsClient::new(o).unwrap()
}

/// Every document of `index`, by id (at most 10,000: the test's data stays well under).
fn docs(c: &EsClient, index: &str) -> Vec<(String, Value)> {
    c.json("POST", &format!("/{index}/_refresh"), None).unwrap();
    let v = c
        .json(
            "POST",
            &format!("/{index}/_search"),
            Some(&json!({"size": 10000, "sort": ["_doc"]})),
        )
        .unwrap();
    let mut out: Vec<(String, Value)> = v["hits"]["hits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| (h["_id"].as_str().unwrap().to_owned(), h["_source"].clone()))
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// The `kind` documents under prefix `got` are those under `want`: same ids, none twice, field
/// for field.
fn assert_same(c: &EsClient, kind: &str, want: &str, got: &str) {
    let want = docs(c, &format!("{want}-{kind}"));
    let got = docs(c, &format!("{got}-{kind}"));
    assert!(!want.is_empty(), "{kind}: the reference run wrote some");
    let ids = |d: &[(String, Value)]| d.iter().map(|(id, _)| id.clone()).collect::<BTreeSet<_>>();
    assert_eq!(ids(&got), ids(&want), "{kind}: the same ids, none missing, none extra");
    assert_eq!(got.len(), ids(&got).len(), "{kind}: none twice");
    assert_eq!(got, want, "{kind}: the same documents, field for field");
}

/// Waits until a job under `prefix` has saved a checkpoint (two minutes at most).
fn wait_for_a_checkpoint(c: &EsClient, prefix: &str, started: Instant) {
    loop {
        let _ = c.json_status("POST", &format!("/{prefix}-state/_refresh"), None);
        let query = json!({"query": {"term": {"state.kind": "checkpoint"}}});
        let (status, v) = c.json_status("POST", &format!("/{prefix}-state/_search"), Some(&query)).unwrap();
        if status == 200 && v["hits"]["hits"].as_array().is_some_and(|h| !h.is_empty()) {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "{prefix}: no checkpoint after 2 minutes"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The output of `who`, which must exit 0 within 10 minutes of `since`.
fn finish_within(mut child: std::process::Child, since: Instant, c: &EsClient, who: &str) -> std::process::Output {
    while child.try_wait().unwrap().is_none() {
        if since.elapsed() > Duration::from_secs(600) {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            let health = c.json("GET", "/_cluster/health", None).map(|v| v.to_string()).unwrap_or_default();
            panic!(
                "{who} did not finish within 10 minutes of the kill (cluster: {health}):\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{who} gave up after the node died:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A backfill over all three nodes in which one node is killed (SIGKILL) after the worker's
/// first checkpoint: the worker carries on through the others and ends with exactly the
/// anomalies, alerts and journeys of a run on the whole cluster: none missing, none twice. Two
/// workers sharing the same range as partitions, running when the node dies, do the same.
#[test]
fn a_node_killed_under_a_running_worker_loses_nothing() {
    let urls = env("APIWATCH_TEST_ES_CLUSTER");
    let name = env("APIWATCH_TEST_ES_CLUSTER_NAME");
    assert_eq!(urls.split(',').count(), 3, "three nodes: {urls}");
    let c = client(&urls);
    let stream = "logs-apiwatch.calls-cluster";
    apiwatch_ok(&["setup", "--es", &urls, "--prefix", "ref"]);
    apiwatch_ok(&[
        "simulate",
        "--es",
        &urls,
        "--index",
        stream,
        "--topology",
        "bank",
        "--seed",
        "3",
        "--hours",
        "2",
        "--rate",
        "4",
    ]);
    // Every shard with its replica on another node before a node goes.
    c.json("GET", "/_cluster/health?wait_for_status=green&timeout=60s", None).unwrap();

    // Small slices and a checkpoint after each, so the kill lands in the middle of the data.
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("apiwatch.toml");
    std::fs::write(
        &config,
        "[elasticsearch]\nslice_secs = 60\ncheckpoint_every_secs = 0\nreaders = 1\npage_size = 500\n",
    )
    .unwrap();
    let config = config.display().to_string();
    let backfill = |prefix: &str| {
        vec![
            "backfill".to_owned(),
            "--es".into(),
            urls.clone(),
            "--prefix".into(),
            prefix.into(),
            "--logs".into(),
            stream.into(),
            "--config".into(),
            config.clone(),
            "--from".into(),
            FROM.into(),
            "--to".into(),
            TO.into(),
            "--json".into(),
        ]
    };
    let args = backfill("ref");
    apiwatch_ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let partitioned = |prefix: &str, worker: &str| {
        let mut args = backfill(prefix);
        args.extend(["--partitions", "4", "--worker-id", worker].map(str::to_owned));
        args
    };
    apiwatch_ok(&["setup", "--es", &urls, "--prefix", "pref"]);
    apiwatch_ok(&partitioned("pref", "solo").iter().map(String::as_str).collect::<Vec<_>>());
    apiwatch_ok(&["setup", "--es", &urls, "--prefix", "pfail"]);
    let sharing: Vec<_> = ["w1", "w2"]
        .iter()
        .map(|w| {
            Command::new(BIN)
                .args(partitioned("pfail", w))
                .env("APIWATCH_LOG", "warn")
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();

    apiwatch_ok(&["setup", "--es", &urls, "--prefix", "failover"]);
    let child = Command::new(BIN)
        .args(backfill("failover"))
        .env("APIWATCH_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    for prefix in ["failover", "pfail"] {
        wait_for_a_checkpoint(&c, prefix, started);
    }
    // The indices the worker created on its first writes (monthly anomalies and journeys) have
    // their replicas started before a node goes: a primary without a copy elsewhere would be
    // lost with its node (a red index: the worker waits for it, as it should, and so would this
    // test).
    c.json("GET", "/_cluster/health?wait_for_status=green&timeout=60s", None).unwrap();
    let mut child = child;
    assert!(
        child.try_wait().unwrap().is_none(),
        "the backfill ended before the kill: the test proves nothing (smaller slices?)"
    );
    let mut sharing = sharing;
    assert!(
        sharing.iter_mut().any(|w| w.try_wait().unwrap().is_none()),
        "the partitioned backfill ended before the kill: the test proves nothing"
    );
    let killed = Command::new("bash")
        .args(["../scripts/elasticsearch.sh", "kill", "--name", &name, "--node", "2"])
        .status()
        .unwrap();
    assert!(killed.success(), "could not kill node 2");
    // Bounded: a worker that waits forever fails the test instead of hanging it.
    let waited = Instant::now();
    let out = finish_within(child, waited, &c, "the backfill");
    for (i, w) in sharing.into_iter().enumerate() {
        finish_within(w, waited, &c, &format!("partitioned worker {i}"));
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    let summary: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["already_complete"], false, "{summary}");
    assert!(
        stderr.contains("left out") || stderr.contains("retrying"),
        "the node's loss was noticed and said:\n{stderr}"
    );

    for kind in ["anomalies", "alerts", "journeys"] {
        assert_same(&c, kind, "ref", "failover");
        assert_same(&c, kind, "pref", "pfail");
    }
}
