//! Integration tests against a real Elasticsearch (and a real SMTP server), started by
//! `scripts/test.sh` (`scripts/elasticsearch.sh`, `scripts/maildev.sh`), which passes their
//! addresses in `APIWATCH_TEST_*` variables. Every test uses its own index names.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed step in a test is its failure

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use apiwatch::es::{ClientOptions, Credentials, EsClient};
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_apiwatch");
/// The simulated data: 3 hours of the bank topology with an error burst at 00:57.
const FROM: &str = "2026-03-02T00:00:00Z";
const TO: &str = "2026-03-02T03:00:00Z";

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: run the tests with scripts/test.sh, which starts Elasticsearch and maildev and sets it")
    })
}

fn es_url() -> String {
    env("APIWATCH_TEST_ES_URL")
}

fn client() -> EsClient {
    let mut o = ClientOptions::new(&es_url());
    o.credentials = Credentials::None;
    EsClient::new(o).unwrap()
}

/// A name unique to this test process and test.
fn unique(name: &str) -> String {
    static RUN: OnceLock<String> = OnceLock::new();
    let run = RUN.get_or_init(|| format!("it{}x{}", std::process::id(), chrono::Utc::now().timestamp() % 100_000));
    format!("{run}-{name}")
}

/// The simulated traffic of the shared log data stream.
const LOGS_TRAFFIC: [&str; 8] = ["--topology", "bank", "--seed", "3", "--hours", "3", "--rate", "10"];

/// The shared log data stream, loaded once per test process.
fn logs() -> &'static str {
    static LOGS: OnceLock<String> = OnceLock::new();
    LOGS.get_or_init(|| {
        let stream = format!("logs-apiwatch.calls-{}", unique("data").replace('-', "_"));
        apiwatch_ok(&["setup", "--es", &es_url(), "--prefix", &unique("setup0")]);
        let out = apiwatch_ok(
            &["simulate", "--es", &es_url(), "--index", &stream]
                .into_iter()
                .chain(LOGS_TRAFFIC)
                .collect::<Vec<_>>(),
        );
        assert!(out.contains("0 refused"), "{out}");
        stream
    })
}

fn apiwatch(args: &[&str], envs: &[(&str, &str)]) -> Output {
    let mut c = Command::new(BIN);
    c.args(args)
        .env_remove("APIWATCH_ES_USERNAME")
        .env_remove("APIWATCH_ES_PASSWORD")
        .env_remove("APIWATCH_ES_API_KEY");
    for (k, v) in envs {
        c.env(k, v);
    }
    c.output().unwrap()
}

fn apiwatch_ok(args: &[&str]) -> String {
    let out = apiwatch(args, &[]);
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "apiwatch {args:?} failed:\n{text}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn summary(args: &[&str]) -> Value {
    let mut a = args.to_vec();
    a.push("--json");
    serde_json::from_str(&apiwatch_ok(&a)).unwrap()
}

fn setup(prefix: &str) {
    apiwatch_ok(&["setup", "--es", &es_url(), "--prefix", prefix]);
}

fn search_all(c: &EsClient, index: &str) -> Vec<Value> {
    c.json(
        "POST",
        &format!("/{index}/_refresh?ignore_unavailable=true&allow_no_indices=true"),
        None,
    )
    .unwrap();
    let body = json!({"size": 10000});
    let (status, v) = c
        .json_status(
            "POST",
            &format!("/{index}/_search?ignore_unavailable=true&allow_no_indices=true"),
            Some(&body),
        )
        .unwrap();
    assert_eq!(status, 200, "{v}");
    let mut hits = v["hits"]["hits"].as_array().cloned().unwrap_or_default();
    hits.sort_by(|a, b| a["_id"].as_str().cmp(&b["_id"].as_str()));
    hits
}

fn ids(hits: &[Value]) -> BTreeSet<String> {
    hits.iter().map(|h| h["_id"].as_str().unwrap().to_owned()).collect()
}

fn run_once(prefix: &str, extra: &[&str]) -> Value {
    let url = es_url();
    let mut args = vec!["run", "--es", &url, "--prefix", prefix, "--logs", logs(), "--once"];
    args.extend_from_slice(extra);
    summary(&args)
}

/// `backfill` of the test range on `prefix`'s indices, reading the test logs.
fn backfill_args(prefix: &str) -> Vec<String> {
    [
        "backfill",
        "--es",
        &es_url(),
        "--prefix",
        prefix,
        "--logs",
        logs(),
        "--from",
        FROM,
        "--to",
        TO,
    ]
    .map(str::to_owned)
    .to_vec()
}

fn backfill(prefix: &str, extra: &[&str]) -> Value {
    let args = backfill_args(prefix);
    let mut args: Vec<&str> = args.iter().map(String::as_str).collect();
    args.extend_from_slice(extra);
    summary(&args)
}

#[test]
fn setup_installs_templates_once_and_reports_what_it_did() {
    let prefix = unique("setup");
    let first = apiwatch_ok(&["setup", "--es", &es_url(), "--prefix", &prefix]);
    assert!(first.contains("installed component template"), "{first}");
    assert!(first.contains("basic (no ILM on this cluster)"), "{first}");
    let second = apiwatch_ok(&["setup", "--es", &es_url(), "--prefix", &prefix]);
    // What this prefix owns is left as it is. The logs' data stream template is one per cluster
    // and the tests running beside this one set it up for their own prefixes, so it may change.
    let own: Vec<&str> = second.lines().filter(|l| l.contains(prefix.as_str())).collect();
    assert!(own.len() >= 10, "{second}");
    assert!(
        own.iter()
            .all(|l| l.trim_start().starts_with("unchanged") || l.trim_start().starts_with("exists")),
        "the second setup changes nothing of its own:\n{second}"
    );
    let c = client();
    let t = c.json("GET", &format!("/_index_template/{prefix}-anomalies"), None).unwrap();
    assert_eq!(
        t["index_templates"][0]["index_template"]["_meta"]["version"],
        apiwatch::es::templates::TEMPLATE_VERSION
    );
    for index in ["alerts", "services", "state", "deadletter", "feedback"] {
        let (status, _) = c.json_status("GET", &format!("/{prefix}-{index}"), None).unwrap();
        assert_eq!(status, 200, "{prefix}-{index} exists");
    }
}

#[test]
fn run_once_writes_anomalies_alerts_journeys_and_services_with_the_contract_fields() {
    let prefix = unique("run");
    setup(&prefix);
    let s = run_once(&prefix, &[]);
    assert!(s["events"].as_u64().unwrap() > 100_000, "{s}");
    assert_eq!(s["writes"]["parked"], 0, "{s}");
    assert_eq!(s["skipped_documents"], 0, "{s}");
    let c = client();
    let anomalies = search_all(&c, &format!("{prefix}-anomalies"));
    assert!(anomalies.len() >= 10, "{}", anomalies.len());
    for h in &anomalies {
        let d = &h["_source"];
        for f in [
            "@timestamp",
            "anomaly.id",
            "anomaly.kind",
            "anomaly.detector",
            "anomaly.score",
            "anomaly.severity",
            "anomaly.window.start",
            "anomaly.window.end",
            "service.name",
            "cloud.provider",
            "anomaly.reason",
        ] {
            assert!(!d[f].is_null(), "anomaly without {f}: {d}");
        }
        assert_eq!(h["_id"], d["anomaly.id"], "the document id is the anomaly id");
        assert!(h["_index"].as_str().unwrap().starts_with(&format!("{prefix}-anomalies-2026.03")));
    }
    let alerts = search_all(&c, &format!("{prefix}-alerts"));
    assert!(!alerts.is_empty());
    // The error burst at 00:57 is found and alerted.
    assert!(
        alerts.iter().any(|a| {
            let d = &a["_source"];
            let start = d["alert.start"].as_str().unwrap();
            d["alert.kinds"].as_array().unwrap().iter().any(|k| k == "errors") && ("2026-03-02T00:55"..="2026-03-02T01:10").contains(&start)
        }),
        "no error alert near 00:57: {alerts:?}"
    );
    for a in &alerts {
        let d = &a["_source"];
        for f in [
            "alert.id",
            "alert.status",
            "alert.priority",
            "alert.start",
            "alert.title",
            "alert.summary",
            "alert.anomaly_ids",
        ] {
            assert!(!d[f].is_null(), "alert without {f}: {d}");
        }
    }
    // Every anomaly behind an alert says so, and by which grouping rule.
    let by_id: BTreeMap<&str, &Value> = anomalies.iter().map(|h| (h["_id"].as_str().unwrap(), &h["_source"])).collect();
    let mut grouped = 0;
    for a in &alerts {
        let d = &a["_source"];
        for id in d["alert.anomaly_ids"].as_array().unwrap() {
            let Some(x) = by_id.get(id.as_str().unwrap()) else { continue };
            assert_eq!(x["anomaly.alert.id"], d["alert.id"], "{x}");
            assert!(x["anomaly.alert.grouped_by"].is_string(), "{x}");
            grouped += 1;
        }
    }
    assert!(grouped > 0, "no anomaly of an alert found in the anomaly index");
    let journeys = search_all(&c, &format!("{prefix}-journeys"));
    assert!(!journeys.is_empty());
    assert!(journeys.iter().all(|j| j["_source"]["journey.hops"].is_array()));
    let services = search_all(&c, &format!("{prefix}-services"));
    assert!(services.len() >= 5, "{services:?}");
}

#[test]
fn backfill_is_idempotent_and_writes_what_a_live_run_writes() {
    let c = client();
    let prefix = unique("backfill");
    setup(&prefix);
    let first = backfill(&prefix, &[]);
    assert!(first["anomalies"].as_u64().unwrap() > 0, "{first}");
    let anomalies = ids(&search_all(&c, &format!("{prefix}-anomalies")));
    let alerts = search_all(&c, &format!("{prefix}-alerts"));
    assert!(!alerts.is_empty());

    let second = backfill(&prefix, &[]);
    assert_eq!(second["already_complete"], true, "{second}");
    let again = backfill(&prefix, &["--restart"]);
    assert_eq!(again["already_complete"], false);
    assert_eq!(
        ids(&search_all(&c, &format!("{prefix}-anomalies"))),
        anomalies,
        "rescoring gives the same documents"
    );
    assert_eq!(
        search_all(&c, &format!("{prefix}-alerts")),
        alerts,
        "and the same alerts, field for field"
    );

    // A live run over the same data writes the same anomalies for the same range.
    let live = unique("backfill-live");
    setup(&live);
    run_once(&live, &[]);
    let live_ids: BTreeSet<String> = search_all(&c, &format!("{live}-anomalies"))
        .iter()
        .filter(|h| h["_source"]["@timestamp"].as_str().unwrap() < "2026-03-02T03:00")
        .filter(|h| h["_source"]["anomaly.window.end"].as_str().unwrap() <= "2026-03-02T03:00:00.000Z")
        .map(|h| h["_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(live_ids, anomalies);
}

/// Waits until the job's first checkpoint is stored, then stops the worker with `signal`.
fn interrupt_after_first_checkpoint(prefix: &str, config: &PathBuf, signal: &str) -> std::process::ExitStatus {
    let c = client();
    let mut child = Command::new(BIN)
        .args(["run", "--es", &es_url(), "--prefix", prefix, "--logs", logs(), "--config"])
        .arg(config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    loop {
        let (status, _) = c
            .json_status("GET", &format!("/{prefix}-state/_doc/checkpoint-live"), None)
            .unwrap();
        if status == 200 {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(120), "no checkpoint after 2 minutes");
        std::thread::sleep(Duration::from_millis(20));
    }
    Command::new("kill").args([signal, &child.id().to_string()]).status().unwrap();
    child.wait().unwrap()
}

#[test]
fn a_killed_worker_resumes_with_no_gap_and_no_duplicate() {
    let c = client();
    let reference = unique("kill-ref");
    setup(&reference);
    run_once(&reference, &[]);
    let want: Vec<Value> = search_all(&c, &format!("{reference}-anomalies"))
        .into_iter()
        .map(|h| h["_source"].clone())
        .collect();

    // Small slices and a checkpoint after each, so the kill lands in the middle of the data.
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("apiwatch.toml");
    std::fs::write(
        &config,
        "[elasticsearch]\nslice_secs = 60\ncheckpoint_every_secs = 0\nreaders = 1\npage_size = 500\npoll_interval_secs = 1\nlease_secs = 2\n",
    )
    .unwrap();
    for (name, signal) in [("kill9", "-KILL"), ("term", "-TERM")] {
        let prefix = unique(name);
        setup(&prefix);
        let status = interrupt_after_first_checkpoint(&prefix, &config, signal);
        if signal == "-TERM" {
            assert!(status.success(), "SIGTERM: finish the slice, checkpoint, exit 0 ({status})");
        }
        let cp = c.json("GET", &format!("/{prefix}-state/_doc/checkpoint-live"), None).unwrap();
        let until = cp["_source"]["state.checkpoint"].as_str().unwrap().to_owned();
        assert!(
            until.as_str() < "2026-03-02T03:00",
            "{name}: interrupted mid-data (checkpoint {until})"
        );
        // A killed worker's lease must expire first (2 s here); a clean stop releases it.
        if signal == "-KILL" {
            std::thread::sleep(Duration::from_millis(2500));
        }
        let s = run_once(&prefix, &["--config", config.to_str().unwrap()]);
        assert_eq!(s["resumed"], true, "{s}");
        let got: Vec<Value> = search_all(&c, &format!("{prefix}-anomalies"))
            .into_iter()
            .map(|h| h["_source"].clone())
            .collect();
        assert_eq!(got.len(), want.len(), "{name}: same number of anomalies as an uninterrupted run");
        assert_eq!(got, want, "{name}: the same anomalies, field for field");
    }
}

#[test]
fn health_says_whether_a_worker_holds_the_job() {
    let prefix = unique("health");
    setup(&prefix);
    let url = es_url();
    let health = || {
        let o = apiwatch(&["health", "--es", &url, "--prefix", &prefix], &[]);
        let text = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
        (o.status.success(), text)
    };
    let (ok, text) = health();
    assert!(!ok && text.contains("no lease") && text.contains("apiwatch run"), "{text}");

    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("apiwatch.toml");
    std::fs::write(
        &config,
        "[elasticsearch]\npoll_interval_secs = 1\nlease_secs = 2\ncheckpoint_every_secs = 1\n",
    )
    .unwrap();
    let mut child = Command::new(BIN)
        .args(["run", "--es", &url, "--prefix", &prefix, "--logs", logs(), "--config"])
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let text = loop {
        let (ok, text) = health();
        if ok {
            break text;
        }
        assert!(started.elapsed() < Duration::from_secs(120), "never healthy: {text}");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(text.contains("holds the lease"), "{text}");
    // `status` names the worker (host-pid) holding the live job and, once it has
    // checkpointed, how far it has scored.
    let status = || {
        let o = apiwatch(&["status", "--es", &url, "--prefix", &prefix, "--json"], &[]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let v: Value = serde_json::from_slice(&o.stdout).unwrap();
        v["jobs"].as_array().unwrap().iter().find(|j| j["job"] == "live").cloned()
    };
    let worker_suffix = format!("-{}", child.id());
    let live = loop {
        let live = status();
        // Held and checkpointed (a lease of 2 s can lapse during the first, long poll).
        if let Some(live) = live.as_ref().filter(|l| !l["checkpoint"].is_null() && l["lease"]["held"] == true) {
            break live.clone();
        }
        assert!(started.elapsed() < Duration::from_secs(120), "never checkpointed: {live:?}");
        std::thread::sleep(Duration::from_millis(300));
    };
    assert!(
        live["lease"]["held"] == true && live["lease"]["worker"].as_str().unwrap().ends_with(&worker_suffix),
        "{live}"
    );
    assert!(
        live["checkpoint"]["data_until"].is_string() && live["lag_s"].as_i64().is_some(),
        "{live}"
    );
    // Killed without a clean stop: unhealthy once its lease runs out.
    Command::new("kill").args(["-KILL", &child.id().to_string()]).status().unwrap();
    child.wait().unwrap();
    std::thread::sleep(Duration::from_millis(2500));
    let (ok, text) = health();
    assert!(!ok && text.contains("ran out"), "{text}");
    let live = status().expect("the live job is still listed");
    assert!(
        live["lease"]["held"] == false && live["lease"]["expires_in_s"].as_i64().unwrap() < 0,
        "{live}"
    );
}

#[test]
fn a_refused_document_is_parked_with_its_reason_while_the_others_land() {
    let c = client();
    let prefix = unique("parked");
    setup(&prefix);
    // A conflicting mapping: alert.priority as a number. Every alert document is refused.
    c.json("DELETE", &format!("/{prefix}-alerts"), None).unwrap();
    c.json(
        "PUT",
        &format!("/{prefix}-alerts"),
        Some(&json!({"mappings": {"properties": {"alert": {"properties": {"priority": {"type": "integer"}}}}}})),
    )
    .unwrap();
    let s = run_once(&prefix, &[]);
    let parked = s["writes"]["parked"].as_u64().unwrap();
    assert!(parked > 0, "{s}");
    assert!(s["writes"]["parked_samples"][0].as_str().unwrap().contains("priority"), "{s}");
    let dead = search_all(&c, &format!("{prefix}-deadletter"));
    // One parked copy per refused document (its latest version; an alert is written again as
    // it changes), and every refused write counted.
    let refused_alerts: BTreeSet<String> = dead
        .iter()
        .map(|d| d["_source"]["deadletter.id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(refused_alerts.len(), dead.len());
    assert!(!dead.is_empty() && dead.len() as u64 <= parked);
    assert_eq!(search_all(&c, &format!("{prefix}-alerts")).len(), 0, "no alert got in");
    let d = &dead[0]["_source"];
    assert_eq!(d["deadletter.status"], 400);
    assert!(d["deadletter.reason"].as_str().unwrap().contains("[alert.priority]"), "{d}");
    let original: Value = serde_json::from_str(d["deadletter.document"].as_str().unwrap()).unwrap();
    assert!(original["alert.id"].is_string(), "the parked copy is the whole document");
    assert!(
        !search_all(&c, &format!("{prefix}-anomalies")).is_empty(),
        "the other documents landed"
    );
}

#[test]
fn an_unreachable_server_is_reported_clearly() {
    let out = apiwatch(&["run", "--es", "http://127.0.0.1:9", "--once"], &[]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("127.0.0.1:9") && err.contains("unreachable"), "{err}");
}

#[test]
fn with_security_on_credentials_from_the_environment_work_and_never_show() {
    let url = env("APIWATCH_TEST_ES_SECURE_URL");
    let ca = env("APIWATCH_TEST_ES_SECURE_CA");
    let password = env("APIWATCH_TEST_ES_SECURE_PASSWORD");
    assert!(url.starts_with("https://"));
    let prefix = unique("secure");

    // No credentials: refused, with what to set.
    let out = apiwatch(&["setup", "--es", &url, "--ca-cert", &ca, "--prefix", &prefix], &[]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("APIWATCH_ES_USERNAME"));
    // No CA: the certificate is not trusted.
    let auth = [("APIWATCH_ES_USERNAME", "elastic"), ("APIWATCH_ES_PASSWORD", password.as_str())];
    let out = apiwatch(&["setup", "--es", &url, "--prefix", &prefix], &auth);
    assert!(!out.status.success(), "an unknown CA must be refused");

    let check = |out: &Output| {
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "{text}");
        assert!(!text.contains(&password), "the password leaked into the output");
        text
    };
    check(&apiwatch(
        &["setup", "--es", &url, "--ca-cert", &ca, "--prefix", &prefix, "--log", "debug"],
        &auth,
    ));
    let stream = format!("logs-apiwatch.calls-{}", prefix.replace('-', "_"));
    check(&apiwatch(
        &[
            "simulate",
            "--es",
            &url,
            "--ca-cert",
            &ca,
            "--index",
            &stream,
            "--hours",
            "1",
            "--rate",
            "5",
            "--log",
            "debug",
        ],
        &auth,
    ));
    let run_args = [
        "run",
        "--es",
        &url,
        "--ca-cert",
        &ca,
        "--prefix",
        &prefix,
        "--logs",
        &stream,
        "--once",
        "--log",
        "debug",
    ];
    let text = check(&apiwatch(&run_args, &auth));
    assert!(text.contains("events"), "{text}");

    // An API key goes in the `ApiKey` header. This server cannot mint keys (the test zip lacks
    // the analysis module its security index needs), so check that a wrong key is refused by
    // the server with a clear message, and that the key never shows.
    let key = "YXBpd2F0Y2gtdGVzdDpub3QtYS1yZWFsLWtleQ==";
    let out = apiwatch(&run_args, &[("APIWATCH_ES_API_KEY", key)]);
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(!out.status.success());
    assert!(text.contains("refused the credentials (401)"), "{text}");
    assert!(!text.contains(key), "the API key leaked into the output");
}

#[test]
fn an_alert_mail_arrives_with_subject_body_and_thread() {
    let [port, web, ca, user, pass] = maildev();
    let prefix = unique("mail");
    let rcpt = format!("{prefix}@oncall.test");
    setup(&prefix);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("apiwatch.toml");
    std::fs::write(
        &config,
        format!(
            "[elasticsearch]\nkibana_url = \"http://kibana.test:5601\"\n[email]\nsmtp_host = \"127.0.0.1\"\nsmtp_port = {port}\nsecurity = \"tls\"\nca_cert = \"{ca}\"\nfrom = \"apiwatch@test.local\"\n[[email.routes]]\nto = [\"{rcpt}\"]\n"
        ),
    )
    .unwrap();
    let url = es_url();
    let out = apiwatch(
        &[
            "run",
            "--es",
            &url,
            "--prefix",
            &prefix,
            "--logs",
            logs(),
            "--once",
            "--json",
            "--config",
            config.to_str().unwrap(),
        ],
        &[("APIWATCH_SMTP_USERNAME", user.as_str()), ("APIWATCH_SMTP_PASSWORD", pass.as_str())],
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let s: Value = serde_json::from_slice(&out.stdout).unwrap();
    let sent = s["notifications_sent"].as_u64().unwrap();
    assert!(sent >= 1, "{s}");

    let mails = mails_to(&web, &rcpt);
    assert_eq!(mails.len() as u64, sent, "every mail sent arrived");
    let first = mails
        .iter()
        .find(|m| !m["subject"].as_str().unwrap().starts_with("Re:"))
        .expect("an opening mail");
    let subject = first["subject"].as_str().unwrap();
    assert!(subject.starts_with("[apiwatch]") && subject.contains("[P"), "{subject}");
    let html = first["html"].as_str().unwrap();
    let text = first["text"].as_str().unwrap();
    assert!(text.contains("Origin:") && text.contains("Evidence"), "{text}");
    assert!(html.contains("http://kibana.test:5601/app/discover#/"), "{html}");
    assert!(html.contains("<th>expected</th>"), "{html}");
    let thread = first["headers"]["message-id"].as_str().unwrap();
    assert!(thread.starts_with("<alert-"), "{thread}");
    // Later mails about the same alert reply in its thread.
    for m in mails.iter().filter(|m| m["subject"].as_str().unwrap().starts_with("Re:")) {
        assert!(m["headers"]["in-reply-to"].as_str().is_some(), "{m}");
    }
}

#[test]
fn events_arriving_late_within_the_lateness_are_still_scored_once() {
    late_events_scored_once(1);
}

#[test]
fn a_partition_scores_its_own_late_events_once_and_counts_no_other_partitions() {
    late_events_scored_once(3);
}

/// A live job (whole, or in `partitions`) that has written past `now` sees ten events dated
/// two seconds before it arrive: each is scored once, as late, by the partition that owns
/// their service (no other partition counts them, scored or not).
fn late_events_scored_once(partitions: u32) {
    use apiwatch::es::IndexNames;
    use apiwatch::job::elasticsearch::{run, RunOptions, WorkerSettings};
    use apiwatch::job::partition::partition_of;
    use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
    use std::sync::Arc;

    let c = client();
    let prefix = unique(&format!("late{partitions}"));
    setup(&prefix);
    let stream = format!("logs-apiwatch.calls-{}", prefix.replace('-', "_"));
    // Two services in different partitions: only the first gets late events.
    let late = "late-svc";
    let steady = (0..)
        .map(|i| format!("steady-svc-{i}"))
        .find(|s| partitions == 1 || partition_of(s, partitions) != partition_of(late, partitions))
        .unwrap();
    let doc = |t: i64, service: &str, i: usize| {
        json!({"@timestamp": apiwatch::model::time::format_rfc3339(t), "service.name": service, "cloud.provider": "aws",
               "http.request.method": "GET", "url.path": format!("/items/{i}"), "http.response.status_code": 200, "event.duration": 1_000_000})
    };
    let now = chrono::Utc::now().timestamp_millis();
    for service in [late, steady.as_str()] {
        c.json("POST", &format!("/{stream}/_doc?refresh=true"), Some(&doc(now - 5_000, service, 0)))
            .unwrap();
    }

    let mut names = IndexNames::with_prefix(&prefix);
    names.logs = stream.clone();
    let settings = WorkerSettings {
        names,
        poll_interval: Duration::from_millis(500),
        ingest_delay: 0,
        since: Some(now - 60_000),
        partitions,
        ..WorkerSettings::default()
    };
    // Windows of 2 s: a live partition checkpoints when it closes one, and the correlator
    // (whose position is what `progress` reports) follows the checkpoints.
    let cfg = apiwatch::pipeline::PipelineConfig {
        window: 2_000,
        ..Default::default()
    };
    let stop = Arc::new(AtomicBool::new(false));
    let written = Arc::new(AtomicI64::new(0));
    let worker = {
        let (client, settings, stop, written) = (c.clone(), settings.clone(), stop.clone(), written.clone());
        std::thread::spawn(move || {
            let opts = RunOptions {
                once: false,
                stop,
                notifier: None,
                now: None,
                progress: Some(written),
                status: None,
            };
            match partitions {
                1 => run(&client, &settings, cfg, opts),
                _ => apiwatch::job::partitioned::run(&client, &settings, cfg, opts),
            }
        })
    };
    // Once the worker has written past `now`, ten events dated two seconds before it arrive
    // (within the two-minute lateness); polls keep going, and each must score them once.
    let started = Instant::now();
    while written.load(Ordering::Relaxed) < now + 1_000 {
        assert!(started.elapsed() < Duration::from_secs(60), "the worker did not advance");
        std::thread::sleep(Duration::from_millis(50));
    }
    for i in 1..=10 {
        c.json("POST", &format!("/{stream}/_doc"), Some(&doc(now - 2_000, late, i)))
            .unwrap();
    }
    c.json("POST", &format!("/{stream}/_refresh"), None).unwrap();
    std::thread::sleep(Duration::from_secs(3));
    stop.store(true, Ordering::Relaxed);
    let s = worker.join().unwrap().unwrap();
    assert_eq!(s.late_scored, 10, "{s:?}");
    assert_eq!(s.late_unscored, 0, "{s:?}");
    assert_eq!(s.events, 12, "each late event scored once: {s:?}");
}

/// `args` reading the shared log data stream's range from the server at `url`.
fn with_range<'a>(args: &[&'a str], url: &'a str) -> Vec<&'a str> {
    let mut v = args.to_vec();
    v.extend(["--es", url, "--logs", logs(), "--from", FROM, "--to", TO]);
    v
}

#[test]
fn training_data_read_from_elasticsearch_matches_the_same_calls_read_from_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("calls.ndjson");
    let file_s = file.display().to_string();
    // The same simulated traffic `logs()` loaded into the data stream.
    let simulate: Vec<&str> = ["simulate", "--output", &file_s].into_iter().chain(LOGS_TRAFFIC).collect();
    apiwatch_ok(&simulate);
    let from_file = dir.path().join("from-file");
    let from_es = dir.path().join("from-es");
    apiwatch_ok(&["features", "--input", &file_s, "--output", &from_file.display().to_string()]);
    let url = es_url();
    let from_es_s = from_es.display().to_string();
    let out = apiwatch_ok(&with_range(&["features", "--output", &from_es_s], &url));
    assert!(out.contains("request rows"), "{out}");
    let lines = |d: &PathBuf, f: &str| -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_to_string(d.join(f)).unwrap().lines().map(str::to_owned).collect();
        v.sort();
        v
    };
    for f in ["requests.csv", "sessions.txt"] {
        let (a, b) = (lines(&from_file, f), lines(&from_es, f));
        assert!(a.len() > 1000, "{f}: {} rows", a.len());
        assert_eq!(a.len(), b.len(), "{f}: as many rows from Elasticsearch as from the file");
        let same = a.iter().zip(&b).filter(|(x, y)| x == y).count();
        assert!(same * 100 >= a.len() * 99, "{f}: only {same} of {} rows agree", a.len());
    }

    // An empty range says so instead of training on nothing.
    let out = apiwatch(
        &[
            "features",
            "--es",
            &url,
            "--logs",
            logs(),
            "--from",
            "2020-01-01T00:00:00Z",
            "--to",
            "2020-01-02T00:00:00Z",
            "--output",
            &dir.path().join("empty").display().to_string(),
        ],
        &[],
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no calls in"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `apiwatch train` learning from a range of the log indices: export, train, check, install.
#[test]
fn train_learns_from_a_range_in_elasticsearch() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let python = root.join(".cache/venv-train/bin/python");
    assert!(
        python.exists(),
        "no trainer environment: the test script runs scripts/train/setup.sh"
    );
    let dir = tempfile::tempdir().unwrap();
    let models = dir.path().join("models");
    let copied = Command::new("cp")
        .arg("-r")
        .arg(root.join("onnx-models"))
        .arg(&models)
        .status()
        .unwrap();
    assert!(copied.success());
    let url = es_url();
    let (work, python, models_s) = (
        dir.path().join("work").display().to_string(),
        python.display().to_string(),
        models.display().to_string(),
    );
    let args = [
        "train",
        "--model",
        "autoencoder",
        "--every",
        "5",
        "--epochs",
        "1",
        "--work",
        &work,
        "--python",
        &python,
        "--models",
        &models_s,
    ];
    let out = apiwatch_ok(&with_range(&args, &url));
    assert!(out.contains("installed autoencoder v2"), "{out}");
    let card: Value = serde_json::from_str(&std::fs::read_to_string(models.join("autoencoder/v2/card.json")).unwrap()).unwrap();
    // Trained on what the range holds (a row in five of about 100,000 calls).
    assert!(
        card["training"]["rows_in_source"].as_u64().unwrap() > 10_000,
        "{}",
        card["training"]
    );
}

/// Indices as shops have them, read through `[[elasticsearch.sources]]`: ALB documents as
/// Elastic's AWS integration indexes them, and a web tier's nginx lines in `message` as a
/// shipper without a pipeline leaves them; one run reads both by time and finds the error burst
/// on the service it is on.
/// Sends one `_bulk` body and checks that every item landed.
fn bulk_ok(c: &EsClient, body: &str) {
    let (status, raw) = c
        .send_raw("POST", "/_bulk", Some((body.as_bytes(), "application/x-ndjson")))
        .unwrap();
    let v: Value = serde_json::from_slice(&raw).unwrap();
    assert!(
        status == 200 && v["errors"] == false,
        "bulk: {status} {}",
        String::from_utf8_lossy(&raw)
    );
}

#[test]
fn indices_as_they_are_are_read_through_sources_with_their_formats() {
    let dir = tempfile::tempdir().unwrap();
    let traffic = ["--topology", "bank", "--seed", "3", "--hours", "2", "--rate", "4"];
    let sim = |format: &str, name: &str| -> Vec<String> {
        let path = dir.path().join(name).display().to_string();
        let mut args = vec!["simulate", "--output", &path, "--format", format];
        args.extend(traffic);
        apiwatch_ok(&args);
        std::fs::read_to_string(&path).unwrap().lines().map(str::to_owned).collect()
    };
    let (ecs, elb, nginx) = (
        sim("json", "ecs.ndjson"),
        sim("elastic-aws-elb", "elb.ndjson"),
        sim("nginx", "web.log"),
    );
    assert_eq!((ecs.len(), elb.len()), (nginx.len(), ecs.len()), "the same calls in each format");

    let c = client();
    let u = unique("sources");
    let (elb_index, web_index) = (format!("{u}-elb-prod"), format!("{u}-web-nginx"));
    for index in [&elb_index, &web_index] {
        let mapping = json!({"mappings": {"properties": {"@timestamp": {"type": "date"}, "message": {"type": "text"}}}});
        c.json("PUT", &format!("/{index}"), Some(&mapping)).unwrap();
    }
    let mut web_calls = 0;
    for chunk in ecs.iter().zip(&elb).zip(&nginx).collect::<Vec<_>>().chunks(4000) {
        let mut body = String::new();
        for ((e, elb), web) in chunk {
            let e: Value = serde_json::from_str(e).unwrap();
            if e["service.name"] == "gateway" {
                web_calls += 1;
                let doc = json!({"@timestamp": e["@timestamp"], "message": web, "agent": {"type": "filebeat"}});
                body.push_str(&format!("{}\n{doc}\n", json!({"index": {"_index": web_index}})));
            } else {
                body.push_str(&format!("{}\n{elb}\n", json!({"index": {"_index": elb_index}})));
            }
        }
        bulk_ok(&c, &body);
    }
    assert!(web_calls > 1000, "{web_calls} gateway calls");
    c.json("POST", &format!("/{u}-*/_refresh"), None).unwrap();

    let prefix = unique("sources-out");
    let config = dir.path().join("apiwatch.toml");
    std::fs::write(
        &config,
        format!(
            "[elasticsearch]\nurl = \"{}\"\nprefix = \"{prefix}\"\n\n\
             [[elasticsearch.sources]]\nindex = \"{u}-elb-*\"\nformat = \"elastic-aws-elb\"\n\n\
             [[elasticsearch.sources]]\nindex = \"{web_index}\"\nformat = \"nginx\"\n",
            es_url()
        ),
    )
    .unwrap();
    let config = config.display().to_string();
    apiwatch_ok(&["setup", "--config", &config]);
    let s = summary(&["backfill", "--config", &config, "--from", FROM, "--to", "2026-03-02T02:00:00Z"]);
    assert_eq!(s["events"].as_u64(), Some(ecs.len() as u64), "every document read as an event: {s}");
    assert_eq!(s["skipped_documents"], 0, "{s}");

    let alerts = search_all(&c, &format!("{prefix}-alerts"));
    assert!(
        alerts.iter().any(|a| {
            let d = &a["_source"];
            let start = d["alert.start"].as_str().unwrap();
            d["alert.kinds"].as_array().unwrap().iter().any(|k| k == "errors")
                && d["service.name"] == "fraud"
                && ("2026-03-02T00:55"..="2026-03-02T01:10").contains(&start)
        }),
        "no error alert on fraud near 00:57: {alerts:?}"
    );
    let services: BTreeSet<String> = search_all(&c, &format!("{prefix}-services"))
        .iter()
        .filter_map(|h| h["_source"]["service.name"].as_str().map(str::to_owned))
        .collect();
    assert!(
        services.contains("gateway") && services.contains("fraud"),
        "services from both sources: {services:?}"
    );

    // A document whose index matches no source, and a line that is not nginx, are counted
    // and located, never silently dropped.
    let stray = json!({"@timestamp": "2026-03-02T02:30:00Z", "message": "not an access log line"});
    c.json("POST", &format!("/{web_index}/_doc?refresh=true"), Some(&stray)).unwrap();
    let out = apiwatch(
        &[
            "backfill",
            "--config",
            &config,
            "--from",
            "2026-03-02T02:00:00Z",
            "--to",
            "2026-03-02T03:00:00Z",
            "--json",
        ],
        &[],
    );
    let s: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(&out.stderr)));
    assert_eq!(s["skipped_documents"], 1, "{s}");
    let text = s.to_string();
    assert!(text.contains(&web_index) && text.contains("access-log pattern"), "{text}");
}

/// A simulated call as Elastic APM Server writes it into `traces-apm*`: the callee's
/// transaction, and (for a call with a caller) the caller's exit span, `wait_ms` longer than the
/// callee's own time.
fn apm_documents(call: &Value, caller: Option<(&str, &str)>, wait_ms: f64) -> Vec<Value> {
    let us = call["event.duration"].as_u64().unwrap() / 1_000;
    let span = call["span.id"].as_str().unwrap();
    let mut tx = json!({
        "@timestamp": call["@timestamp"], "processor": {"event": "transaction"},
        "service": {"name": call["service.name"]}, "cloud": {"provider": call["cloud.provider"]},
        "transaction": {"id": span, "type": "request", "duration": {"us": us}},
        "trace": {"id": call["trace.id"]}, "user": {"id": call["user.id"]},
        "http": {"request": {"method": call["http.request.method"]}, "response": {"status_code": call["http.response.status_code"]}},
        "url": {"path": call["url.path"]}, "event": {"outcome": call["event.outcome"]},
    });
    let Some((caller, caller_provider)) = caller else { return vec![tx] };
    let parent = call["parent.id"].as_str().unwrap();
    let exit_id = format!("x{span}");
    tx["parent"] = json!({"id": exit_id});
    let exit = json!({
        "@timestamp": call["@timestamp"], "processor": {"event": "span"},
        "service": {"name": caller, "target": {"name": call["service.name"], "type": "http"}},
        "cloud": {"provider": caller_provider},
        "span": {"id": exit_id, "type": "external", "subtype": "http",
                 "duration": {"us": us + (wait_ms * 1_000.0) as u64},
                 "destination": {"service": {"resource": call["service.name"]}}},
        "transaction": {"id": parent}, "parent": {"id": parent}, "trace": {"id": call["trace.id"]},
        "http": {"request": {"method": call["http.request.method"]}, "response": {"status_code": call["http.response.status_code"]}},
        "url": {"original": format!("http://{}{}", call["service.name"].as_str().unwrap(), call["url.path"].as_str().unwrap())},
    });
    vec![exit, tx]
}

#[test]
fn elastic_apm_documents_are_read_as_they_are_and_time_hops_from_the_callers_side() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("calls.ndjson").display().to_string();
    apiwatch_ok(&[
        "simulate",
        "--output",
        &path,
        "--format",
        "json",
        "--topology",
        "bank",
        "--seed",
        "4",
        "--hours",
        "2",
        "--rate",
        "4",
    ]);
    let calls: Vec<Value> = std::fs::read_to_string(&path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let by_span: std::collections::HashMap<&str, (&str, &str)> = calls
        .iter()
        .map(|c| {
            let who = (c["service.name"].as_str().unwrap(), c["cloud.provider"].as_str().unwrap());
            (c["span.id"].as_str().unwrap(), who)
        })
        .collect();
    // From 01:20 to 01:40 ledger's answers reach its callers 300 ms late; its own time does not
    // change, so only the callers' records show it. Every 50th transaction has an internal span.
    let late = |c: &Value| {
        let t = c["@timestamp"].as_str().unwrap();
        c["service.name"] == "ledger" && ("2026-03-02T01:20".."2026-03-02T01:40").contains(&t)
    };
    let (mut docs, mut exits, mut internal) = (Vec::new(), 0u64, 0u64);
    for (i, c) in calls.iter().enumerate() {
        let caller = c["parent.id"].as_str().and_then(|p| by_span.get(p).copied());
        let wait = if late(c) { 300.0 } else { 1.5 };
        let d = apm_documents(c, caller, wait);
        exits += d.len() as u64 - 1;
        docs.extend(d);
        if i % 50 == 0 {
            internal += 1;
            docs.push(json!({
                "@timestamp": c["@timestamp"], "processor": {"event": "span"}, "service": {"name": c["service.name"]},
                "span": {"id": format!("i{i}"), "type": "app", "duration": {"us": 100}}, "trace": {"id": c["trace.id"]},
                "transaction": {"id": c["span.id"]}, "parent": {"id": c["span.id"]},
            }));
        }
    }
    assert!(exits > 10_000, "{exits} exit spans");

    let c = client();
    let u = unique("apm");
    let index = format!("{u}-traces-apm-default");
    c.json(
        "PUT",
        &format!("/{index}"),
        Some(&json!({"mappings": {"properties": {"@timestamp": {"type": "date"}}}})),
    )
    .unwrap();
    for chunk in docs.chunks(5000) {
        let mut body = String::new();
        for d in chunk {
            body.push_str(&format!("{}\n{d}\n", json!({"index": {"_index": index}})));
        }
        bulk_ok(&c, &body);
    }
    c.json("POST", &format!("/{index}/_refresh"), None).unwrap();

    let prefix = unique("apm-out");
    let config = dir.path().join("apiwatch.toml");
    std::fs::write(
        &config,
        format!(
            "[elasticsearch]\nurl = \"{}\"\nprefix = \"{prefix}\"\n\n[[elasticsearch.sources]]\nindex = \"{u}-traces-apm-*\"\n",
            es_url()
        ),
    )
    .unwrap();
    let config = config.display().to_string();
    apiwatch_ok(&["setup", "--config", &config]);
    let s = summary(&["backfill", "--config", &config, "--from", FROM, "--to", "2026-03-02T02:00:00Z"]);
    assert_eq!(
        s["events"].as_u64(),
        Some(calls.len() as u64 + exits),
        "transactions and exit spans: {s}"
    );
    assert_eq!(s["client_records"].as_u64(), Some(exits), "{s}");
    assert_eq!(s["not_calls"].as_u64(), Some(internal), "internal spans left out and counted: {s}");
    assert_eq!(s["skipped_documents"], 0, "{s}");

    // The delay is found on ledger from its callers' records, and an alert names it first.
    let anomalies = search_all(&c, &format!("{prefix}-anomalies"));
    let waits: Vec<&Value> = anomalies
        .iter()
        .map(|h| &h["_source"])
        .filter(|a| a["anomaly.metric"].as_str().is_some_and(|m| m.starts_with("journey.hop_wait")))
        .collect();
    assert!(
        waits.iter().any(|a| a["service.name"] == "ledger"
            && ("2026-03-02T01:20".."2026-03-02T01:40").contains(&a["anomaly.window.start"].as_str().unwrap())),
        "no hop wait on ledger in 01:20-01:40: {waits:?}"
    );
    assert!(
        waits.iter().all(|a| a["service.name"] == "ledger"),
        "only ledger's callers waited: {waits:?}"
    );
    let alerts = search_all(&c, &format!("{prefix}-alerts"));
    assert!(
        alerts.iter().any(|h| {
            let d = &h["_source"];
            d["service.name"] == "ledger" && ("2026-03-02T01:20"..="2026-03-02T01:30").contains(&d["alert.start"].as_str().unwrap())
        }),
        "no alert naming ledger near 01:20: {alerts:?}"
    );
}

/// Reads `[FROM, FROM + 1 h)` of `index` in pages of 3, the ids in the order read; with
/// `lose_pit`, the reader's point-in-time is deleted after every page (as when a node holding
/// it dies), so every page after the first is read from a new one.
fn read_ids(c: &EsClient, index: &str, lose_pit: bool) -> (Vec<u64>, u32) {
    use apiwatch::source::elasticsearch::{Documents, LogSource, RangeReader};
    let docs = std::sync::Arc::new(Documents::new(&[LogSource::ecs(index)]).unwrap());
    let from = chrono::DateTime::parse_from_rfc3339(FROM).unwrap().timestamp_millis();
    let mut reader = RangeReader::new(c, &docs, from, from + 3_600_000, 3);
    let mut ids = Vec::new();
    while let Some(page) = reader.next_page().unwrap() {
        assert_eq!(page.report.events, page.ids.len() as u64, "{:?}", page.report.samples);
        ids.extend(page.ids);
        if lose_pit {
            if let Some(pit) = reader.point_in_time() {
                c.json("DELETE", "/_pit", Some(&json!({ "id": pit }))).unwrap();
            }
        }
    }
    (ids, reader.reopened())
}

/// A point-in-time that fails under the reader (deleted here; in production a node holding it
/// died) is replaced and reading resumes where it was: every document once, in the same order,
/// also when the documents around the break share one timestamp (five per millisecond here, read
/// three at a time, so most breaks fall inside a timestamp).
#[test]
fn a_range_read_resumes_on_a_new_point_in_time_with_no_gap_and_no_repeat() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("calls.ndjson").display().to_string();
    apiwatch_ok(&[
        "simulate",
        "--output",
        &path,
        "--topology",
        "bank",
        "--seed",
        "3",
        "--hours",
        "1",
        "--rate",
        "2",
    ]);
    let lines: Vec<String> = std::fs::read_to_string(&path)
        .unwrap()
        .lines()
        .take(60)
        .map(str::to_owned)
        .collect();
    assert_eq!(lines.len(), 60);

    let c = client();
    let index = unique("pit-resume");
    let mapping = json!({"settings": {"number_of_shards": 2}, "mappings": {"properties": {"@timestamp": {"type": "date"}}}});
    c.json("PUT", &format!("/{index}"), Some(&mapping)).unwrap();
    let mut body = String::new();
    for (i, line) in lines.iter().enumerate() {
        let mut e: Value = serde_json::from_str(line).unwrap();
        e["@timestamp"] = json!(format!("2026-03-02T00:00:{:02}.000Z", i / 5));
        body.push_str(&format!("{}\n{e}\n", json!({"index": {"_index": index}})));
    }
    let (status, raw) = c
        .send_raw("POST", "/_bulk?refresh=true", Some((body.as_bytes(), "application/x-ndjson")))
        .unwrap();
    assert!(
        status == 200 && !String::from_utf8_lossy(&raw).contains("\"errors\":true"),
        "bulk: {status}"
    );

    let (straight, reopened_straight) = read_ids(&c, &index, false);
    assert_eq!(reopened_straight, 0);
    assert_eq!(straight.len(), 60, "every document read");
    let (resumed, reopened) = read_ids(&c, &index, true);
    assert!(reopened >= 10, "the point-in-time was lost and replaced ({reopened} times)");
    assert_eq!(resumed.len(), 60, "none lost, none twice");
    assert_eq!(resumed, straight, "the same documents in the same order");
}

/// A worker started with `--listen 127.0.0.1:0`: its stderr, read as it comes, and the address
/// it logged.
struct Listening {
    child: std::process::Child,
    addr: String,
    stderr: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Listening {
    fn start(args: &[&str]) -> Self {
        Self::start_with(args, &[])
    }

    fn start_with(args: &[&str], envs: &[(&str, &str)]) -> Self {
        Self::start_on(args, envs, "127.0.0.1:0")
    }

    fn start_on(args: &[&str], envs: &[(&str, &str)], listen: &str) -> Self {
        use std::io::BufRead;
        let mut child = Command::new(BIN)
            .args(args)
            .args(["--listen", listen])
            .envs(envs.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let lines = std::io::BufReader::new(child.stderr.take().unwrap());
        let log = stderr.clone();
        std::thread::spawn(move || {
            for line in lines.lines().map_while(Result::ok) {
                // Only the worker's own line: at debug level others name Elasticsearch's URL.
                if let Some(at) = line.find("http://127.0.0.1:").filter(|_| line.starts_with("apiwatch: serving")) {
                    let addr: String = line[at + 7..]
                        .chars()
                        .take_while(|c| c.is_ascii_digit() || *c == '.' || *c == ':')
                        .collect();
                    let _ = tx.send(addr);
                }
                log.lock().unwrap().push_str(&line);
                log.lock().unwrap().push('\n');
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| panic!("the worker never said where it listens:\n{}", stderr.lock().unwrap()));
        Listening { child, addr, stderr }
    }

    /// Status and body of `GET path`.
    fn get(&self, path: &str) -> (u16, String) {
        let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
        let mut resp = agent.get(format!("http://{}{path}", self.addr)).call().unwrap();
        (resp.status().as_u16(), resp.body_mut().read_to_string().unwrap())
    }

    /// Stops it with SIGTERM (leases released) and returns what it logged.
    fn stop(mut self) -> String {
        Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status().unwrap();
        self.child.wait().unwrap();
        let log = self.stderr.lock().unwrap().clone();
        log
    }
}

/// The samples of a Prometheus text exposition, by metric name and labels (as `k=v,` pairs,
/// sorted); the parse fails the test where the text is not valid exposition.
fn scrape(text: &str) -> BTreeMap<(String, String), f64> {
    let lines = text.lines().map(|l| Ok(l.to_owned()));
    let scrape = prometheus_parse::Scrape::parse(lines).expect("valid Prometheus text");
    scrape
        .samples
        .into_iter()
        .map(|s| {
            let mut labels: Vec<String> = s.labels.iter().map(|(k, v)| format!("{k}={v},")).collect();
            labels.sort();
            let value = match s.value {
                prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Gauge(v) | prometheus_parse::Value::Untyped(v) => v,
                other => panic!("{} is not a counter or gauge: {other:?}", s.metric),
            };
            ((s.metric, labels.concat()), value)
        })
        .collect()
}

/// `run --listen`: `/health` is 200 once the worker holds its job and progresses, 503 with the
/// reason on a worker standing by; `/metrics` is valid Prometheus text whose counters agree with
/// the run's own summary.
#[test]
fn the_worker_serves_health_and_metrics_that_agree_with_its_summary() {
    let prefix = unique("serve");
    setup(&prefix);
    let url = es_url();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("apiwatch.toml");
    std::fs::write(&config, "[elasticsearch]\npoll_interval_secs = 1\ncheckpoint_every_secs = 1\n").unwrap();
    let config = config.display().to_string();
    let args = [
        "run",
        "--es",
        &url,
        "--prefix",
        &prefix,
        "--logs",
        logs(),
        "--config",
        &config,
        "--json",
        "--no-email",
    ];
    let worker = Listening::start(&args);
    let (live, _) = worker.get("/health/live");
    assert_eq!(live, 200);
    let started = Instant::now();
    let metrics = loop {
        let (code, body) = worker.get("/health");
        let (_, text) = worker.get("/metrics");
        let m = scrape(&text);
        let job = |name: &str| m.get(&(name.to_owned(), "job=live,".to_owned())).copied();
        // Two polls done: the whole stream is scored and the worker is idle.
        if code == 200 && job("apiwatch_polls_total").unwrap_or(0.0) >= 2.0 {
            let health: Value = serde_json::from_str(&body).unwrap();
            assert_eq!(health["ready"], true, "{health}");
            assert_eq!(job("apiwatch_up"), Some(1.0), "{text}");
            assert_eq!(job("apiwatch_lease_held"), Some(1.0), "{text}");
            assert!(job("apiwatch_lag_seconds").is_some_and(|l| l < 120.0), "{text}");
            break m;
        }
        assert!(
            started.elapsed() < Duration::from_secs(180),
            "never ready after two polls: {code} {body}\n{text}\n{}",
            worker.stderr.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(300));
    };

    // A second worker on the same job stands by: alive, not ready, and says why.
    let mut standby = Listening::start(&args);
    let (code, body) = standby.get("/health");
    assert_eq!(code, 503, "{body}");
    let health: Value = serde_json::from_str(&body).unwrap();
    assert!(health["reason"].as_str().unwrap().contains("not held by this worker"), "{health}");
    assert_eq!(standby.get("/health/live").0, 200);
    standby.child.kill().unwrap();
    standby.child.wait().unwrap();

    Command::new("kill")
        .args(["-TERM", &worker.child.id().to_string()])
        .status()
        .unwrap();
    let out = worker.child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", worker.stderr.lock().unwrap());
    let summary: Value = serde_json::from_slice(&out.stdout).unwrap();
    let counter = |name: &str| metrics.get(&(name.to_owned(), "job=live,".to_owned())).copied().unwrap_or(-1.0);
    for (metric, key) in [
        ("apiwatch_events_scored_total", "events"),
        ("apiwatch_anomalies_total", "anomalies"),
        ("apiwatch_alerts_raised_total", "alerts_raised"),
        ("apiwatch_documents_skipped_total", "skipped_documents"),
    ] {
        assert_eq!(
            counter(metric),
            summary[key].as_f64().unwrap(),
            "{metric} and the summary's {key}: {summary}"
        );
    }
    assert!(counter("apiwatch_events_scored_total") > 10_000.0, "{summary}");
    let by_detector: f64 = metrics
        .iter()
        .filter(|((name, _), _)| name == "apiwatch_anomalies_by_detector_total")
        .map(|(_, v)| v)
        .sum();
    assert_eq!(by_detector, counter("apiwatch_anomalies_total"), "the detectors' counts add up");
    let sum_of = |family: &str| -> f64 { metrics.iter().filter(|((name, _), _)| name == family).map(|(_, v)| v).sum() };
    assert_eq!(
        sum_of("apiwatch_alerts_by_priority_total"),
        counter("apiwatch_alerts_raised_total"),
        "the priorities' counts add up"
    );
    // The models ran (the test script installs ONNX Runtime) and their time is counted.
    for family in ["apiwatch_model_inference_runs_total", "apiwatch_model_inference_seconds_total"] {
        assert!(sum_of(family) > 0.0, "{family}: {metrics:?}");
    }
    let written: f64 = metrics
        .iter()
        .filter(|((name, _), _)| name == "apiwatch_documents_written_total")
        .map(|(_, v)| v)
        .sum();
    // The stop's last checkpoint writes the service records once more after the scrape.
    let final_written = summary["writes"]["written"].as_f64().unwrap();
    assert!(
        written > 0.0 && written <= final_written,
        "{written} written by the scrape, {final_written} at the end"
    );
}

/// The first word after `word` in `text`.
fn word_after<'a>(text: &'a str, word: &str) -> &'a str {
    let mut it = text.split_whitespace();
    it.find(|w| *w == word).unwrap_or_else(|| panic!("`{word}` in {text}"));
    it.next().unwrap().trim_end_matches(':')
}

#[test]
fn feedback_from_the_cli_marks_silenced_and_acknowledged_alerts_and_a_verdict_changes_the_next_run() {
    let url = es_url();
    let c = client();
    // What the data raises with no feedback.
    let first = unique("fb1");
    setup(&first);
    run_once(&first, &[]);
    let alerts = search_all(&c, &format!("{first}-alerts"));
    assert!(!alerts.is_empty(), "the data raises alerts");
    let target = &alerts[0]["_source"];
    let alert_id = target["alert.id"].as_str().unwrap().to_owned();
    let service = target["service.name"].as_str().unwrap().to_owned();

    // A silence over the data's span on the target's origin, and an acknowledgement, before the run.
    let second = unique("fb2");
    setup(&second);
    let said = apiwatch_ok(&[
        "silence",
        "--es",
        &url,
        "--prefix",
        &second,
        "--service",
        &service,
        "--from",
        FROM,
        "--for",
        "3h",
        "--reason",
        "maintenance",
        "--by",
        "ops",
    ]);
    let silence_id = word_after(&said, "silence").to_owned();
    let listed = apiwatch_ok(&["silence", "--es", &url, "--prefix", &second, "--list"]);
    assert!(
        listed.contains(&silence_id) && listed.contains("ended") && listed.contains("maintenance"),
        "{listed}"
    );
    apiwatch_ok(&[
        "ack", &alert_id, "--es", &url, "--prefix", &second, "--note", "on it", "--by", "ana",
    ]);
    let s = run_once(&second, &[]);
    assert!(s["feedback"]["alerts_silenced"].as_u64().unwrap() >= 1, "{s}");
    assert_eq!(s["feedback_refused"], 0, "{s}");
    let alerts2 = search_all(&c, &format!("{second}-alerts"));
    assert_eq!(ids(&alerts2), ids(&alerts), "silenced alerts are still written, with the same ids");
    for h in &alerts2 {
        let d = &h["_source"];
        let silenced = d.get("alert.silence.id").and_then(Value::as_str);
        if d["service.name"] == service.as_str() {
            assert_eq!(silenced, Some(silence_id.as_str()), "{d}");
        } else {
            assert_eq!(silenced, None, "a silence holds only what it matches: {d}");
        }
        let acked = d.get("alert.acknowledged.by").and_then(Value::as_str);
        assert_eq!(acked.is_some(), d["alert.id"] == alert_id.as_str(), "{d}");
    }
    // A backfill of the range reads the same feedback: the same alerts, marked the same way.
    let backfilled = backfill(&second, &[]);
    assert!(backfilled["feedback"]["alerts_silenced"].as_u64().unwrap() >= 1, "{backfilled}");
    let alerts3 = search_all(&c, &format!("{second}-alerts"));
    let marks = |hits: &[Value]| -> Vec<(String, Option<String>, Option<String>)> {
        hits.iter()
            .map(|h| {
                let d = &h["_source"];
                let text = |k: &str| d.get(k).and_then(Value::as_str).map(str::to_owned);
                (text("alert.id").unwrap(), text("alert.silence.id"), text("alert.acknowledged.by"))
            })
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect()
    };
    assert_eq!(marks(&alerts3), marks(&alerts2), "a backfill marks alerts as the live run did");
    let removed = apiwatch_ok(&["silence", "--es", &url, "--prefix", &second, "--remove", &silence_id]);
    assert!(removed.contains("removed"), "{removed}");
    let listed = apiwatch_ok(&["silence", "--es", &url, "--prefix", &second, "--list"]);
    assert!(!listed.contains(&silence_id), "{listed}");

    // "Not a problem" on the first run's alert, read from its own anomalies, teaches a fresh run.
    let said = apiwatch_ok(&[
        "feedback",
        &alert_id,
        "--false-positive",
        "--es",
        &url,
        "--prefix",
        &first,
        "--by",
        "ana",
    ]);
    assert!(said.contains("false positive") && said.contains(&service), "{said}");
    let verdicts = search_all(&c, &format!("{first}-feedback"));
    assert_eq!(verdicts.len(), 1);
    let verdict_id = verdicts[0]["_id"].as_str().unwrap();
    assert!(!verdicts[0]["_source"]["feedback.findings"].as_array().unwrap().is_empty());
    let third = unique("fb3");
    setup(&third);
    c.json(
        "PUT",
        &format!("/{third}-feedback/_doc/{verdict_id}?refresh=true"),
        Some(&verdicts[0]["_source"]),
    )
    .unwrap();
    let s = run_once(&third, &[]);
    assert!(s["feedback"]["anomalies_held"].as_u64().unwrap() > 0, "{s}");
    // `status` shows what the verdict taught, and names it.
    let status = apiwatch_ok(&["status", "--es", &url, "--prefix", &third]);
    assert!(status.contains("1 verdict"), "{status}");
    let learned = status
        .lines()
        .find(|l| l.contains("learned:"))
        .unwrap_or_else(|| panic!("{status}"));
    assert!(learned.contains(verdict_id) && learned.contains("held up to score"), "{learned}");
    let alerts3 = search_all(&c, &format!("{third}-alerts"));
    assert!(
        !ids(&alerts3).contains(&alert_id),
        "the alert judged not a problem is not raised again"
    );
    let held: Vec<Value> = search_all(&c, &format!("{third}-anomalies"))
        .into_iter()
        .filter(|h| h["_source"]["anomaly.held_by"] == "learned_false_positive")
        .collect();
    assert!(!held.is_empty());
    assert!(held
        .iter()
        .all(|h| h["_source"]["anomaly.reason"].as_str().unwrap().contains(verdict_id)));
}

/// Status and JSON body of a request to a worker's API.
fn api(worker: &Listening, method: &str, path: &str, body: Option<Value>, token: Option<&str>) -> (u16, Value) {
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let url = format!("http://{}{path}", worker.addr);
    let auth = token.map(|t| format!("Bearer {t}"));
    let mut resp = match (method, body) {
        ("GET", _) => agent.get(&url).call(),
        ("DELETE", _) => {
            let mut r = agent.delete(&url);
            if let Some(a) = &auth {
                r = r.header("Authorization", a);
            }
            r.call()
        }
        (_, body) => {
            let mut r = agent.post(&url);
            if let Some(a) = &auth {
                r = r.header("Authorization", a);
            }
            r.header("Content-Type", "application/json")
                .send(body.unwrap_or(json!({})).to_string())
        }
    }
    .unwrap();
    let text = resp.body_mut().read_to_string().unwrap();
    (resp.status().as_u16(), serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

#[test]
fn the_write_api_needs_its_token_and_writes_what_the_cli_writes() {
    let prefix = unique("api");
    setup(&prefix);
    let url = es_url();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("apiwatch.toml");
    std::fs::write(&config, "[elasticsearch]\npoll_interval_secs = 1\ncheckpoint_every_secs = 1\n").unwrap();
    let config = config.display().to_string();
    let token = "t0ken-of-the-api-test";
    let args = [
        "run",
        "--es",
        &url,
        "--prefix",
        &prefix,
        "--logs",
        logs(),
        "--config",
        &config,
        "--no-email",
        "--log",
        "debug",
    ];
    let pd_secret = "whsec-of-the-api-test";
    let mut worker = Listening::start_with(
        &args,
        &[("APIWATCH_API_TOKEN", token), ("APIWATCH_PAGERDUTY_WEBHOOK_SECRET", pd_secret)],
    );
    let silence = json!({"service": "payments", "for_secs": 3600, "reason": "deploy", "by": "ops"});
    let (code, refused) = api(&worker, "POST", "/api/silences", Some(silence.clone()), None);
    assert_eq!(code, 401, "{refused}");
    assert_eq!(api(&worker, "POST", "/api/silences", Some(silence.clone()), Some("wrong")).0, 401);
    let (code, made) = api(&worker, "POST", "/api/silences", Some(silence), Some(token));
    assert_eq!(code, 200, "{made}");
    let silence_id = made["feedback.id"].as_str().unwrap().to_owned();
    assert_eq!(made["user.name"], "ops");
    let (code, list) = api(&worker, "GET", "/api/silences", None, None);
    assert_eq!(code, 200);
    assert!(
        list.as_array().unwrap().iter().any(|s| s["feedback.id"] == silence_id.as_str()),
        "{list}"
    );
    // A worker without a token serves no writes, and says how to turn them on.
    let mut standby = Listening::start(&args);
    let (code, refused) = api(&standby, "POST", "/api/alerts/x/ack", None, Some(token));
    // ... and, without the webhook secret, takes no PagerDuty webhooks.
    let (hook_code, _) = pagerduty_hook(&standby, &pagerduty_ack("x", "apiwatch-x"), "whatever");
    standby.child.kill().unwrap();
    standby.child.wait().unwrap();
    assert_eq!(code, 403);
    assert!(refused["error"].as_str().unwrap().contains("APIWATCH_API_TOKEN"), "{refused}");
    assert_eq!(hook_code, 404);

    // Once the worker has scored the stream, its alerts can be read, acknowledged and judged.
    let started = Instant::now();
    let alerts = loop {
        let (code, v) = api(&worker, "GET", "/api/alerts", None, None);
        assert_eq!(code, 200, "{v}");
        if !v.as_array().unwrap().is_empty() {
            break v;
        }
        assert!(
            started.elapsed() < Duration::from_secs(180),
            "no alert: {}",
            worker.stderr.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    let alert_id = alerts[0]["alert.id"].as_str().unwrap().to_owned();
    pagerduty_acknowledges(
        &worker,
        &prefix,
        alerts.as_array().unwrap().last().unwrap()["alert.id"].as_str().unwrap(),
        pd_secret,
    );
    let (code, open) = api(&worker, "GET", "/api/alerts?status=open", None, None);
    assert_eq!(code, 200);
    assert!(open.as_array().unwrap().iter().all(|a| a["alert.status"] == "open"), "{open}");
    let (code, acked) = api(
        &worker,
        "POST",
        &format!("/api/alerts/{alert_id}/ack"),
        Some(json!({"note": "on it"})),
        Some(token),
    );
    assert_eq!(code, 200, "{acked}");
    assert_eq!(acked["user.name"], "api");
    let (code, judged) = api(
        &worker,
        "POST",
        "/api/feedback",
        Some(json!({"alert_id": alert_id, "verdict": "false_positive", "by": "ana"})),
        Some(token),
    );
    assert_eq!(code, 200, "{judged}");
    assert!(!judged["feedback.findings"].as_array().unwrap().is_empty(), "{judged}");
    let (code, missing) = api(
        &worker,
        "POST",
        "/api/feedback",
        Some(json!({"alert_id": "nope", "verdict": "true_positive"})),
        Some(token),
    );
    assert_eq!(code, 404, "{missing}");
    let (code, _) = api(&worker, "DELETE", &format!("/api/silences/{silence_id}"), None, Some(token));
    assert_eq!(code, 200);
    let (_, list) = api(&worker, "GET", "/api/silences", None, None);
    assert!(list.as_array().unwrap().is_empty(), "{list}");

    let records = search_all(&client(), &format!("{prefix}-feedback"));
    let kinds: BTreeSet<String> = records
        .iter()
        .map(|r| r["_source"]["feedback.type"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(kinds, ["ack", "silence", "verdict"].iter().map(|s| s.to_string()).collect());
    Command::new("kill")
        .args(["-TERM", &worker.child.id().to_string()])
        .status()
        .unwrap();
    worker.child.wait().unwrap();
    let log = worker.stderr.lock().unwrap();
    assert!(!log.contains(token), "the token never shows, even at debug level");
    assert!(!log.contains(pd_secret), "nor the webhook secret");
    assert!(log.contains("refused a PagerDuty webhook"), "a refused webhook is logged");
}

/// A PagerDuty v3 `incident.acknowledged` event for the incident with key `key`.
fn pagerduty_ack(event_id: &str, key: &str) -> String {
    pagerduty_event(event_id, key, "incident.acknowledged", "user_reference")
}

fn pagerduty_event(event_id: &str, key: &str, kind: &str, agent: &str) -> String {
    json!({"event": {
        "id": event_id, "event_type": kind, "resource_type": "incident",
        "occurred_at": chrono::Utc::now().to_rfc3339(),
        "agent": {"id": "PDANA01", "summary": "Dana Ops", "type": agent},
        "data": {"id": "Q1", "type": "incident", "number": 7, "status": "acknowledged", "incident_key": key,
                 "html_url": "https://example.pagerduty.com/incidents/Q1"}
    }})
    .to_string()
}

/// Posts `body` to the worker's PagerDuty webhook, signed with `secret` as PagerDuty signs.
fn pagerduty_hook(worker: &Listening, body: &str, secret: &str) -> (u16, Value) {
    use hmac::Mac;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body.as_bytes());
    let signature = format!("v1={}", hex::encode(mac.finalize().into_bytes()));
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let mut resp = agent
        .post(&format!("http://{}/hooks/pagerduty", worker.addr))
        .header("Content-Type", "application/json")
        .header("X-PagerDuty-Signature", &signature)
        .send(body)
        .unwrap();
    let text = resp.body_mut().read_to_string().unwrap();
    (resp.status().as_u16(), serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

/// An acknowledgement made in PagerDuty comes back as an `ack` record by `pagerduty (<who>)`,
/// once however often PagerDuty delivers it; other tools' incidents and other events are
/// answered 200 and write nothing; a body signed with another secret is refused.
fn pagerduty_acknowledges(worker: &Listening, prefix: &str, alert_id: &str, secret: &str) {
    let body = pagerduty_ack("01PDEVENTACK", &format!("apiwatch-{alert_id}"));
    let (code, v) = pagerduty_hook(worker, &body, "not-the-secret");
    assert_eq!(code, 403, "{v}");
    let (code, v) = pagerduty_hook(worker, &body, secret);
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["acknowledged"], "pagerduty-01PDEVENTACK", "{v}");
    let (code, v) = pagerduty_hook(worker, &body, secret);
    assert_eq!((code, &v["already"]), (200, &json!("pagerduty-01PDEVENTACK")), "redelivered: {v}");
    let (code, v) = pagerduty_hook(worker, &pagerduty_ack("01PDOTHER", "another-tools-key"), secret);
    assert!(code == 200 && v["ignored"].is_string(), "{v}");
    // apiwatch's own resolve event comes back from PagerDuty as an integration's: nothing to
    // record. A person resolving the incident by hand is recorded, as an acknowledgement.
    let key = format!("apiwatch-{alert_id}");
    let own = pagerduty_event("01PDRESOLVEDAUTO", &key, "incident.resolved", "service_reference");
    let (code, v) = pagerduty_hook(worker, &own, secret);
    assert!(code == 200 && v["ignored"].is_string(), "{v}");
    let by_hand = pagerduty_event("01PDRESOLVEDHAND", &key, "incident.resolved", "user_reference");
    let (code, v) = pagerduty_hook(worker, &by_hand, secret);
    assert_eq!((code, &v["acknowledged"]), (200, &json!("pagerduty-01PDRESOLVEDHAND")), "{v}");
    let records = search_all(&client(), &format!("{prefix}-feedback"));
    let from_pd: Vec<&Value> = records
        .iter()
        .map(|r| &r["_source"])
        .filter(|r| r["user.name"].as_str().is_some_and(|u| u.starts_with("pagerduty")))
        .collect();
    assert_eq!(from_pd.len(), 2, "{records:?}");
    for r in &from_pd {
        assert_eq!(r["feedback.type"], "ack");
        assert_eq!(r["user.name"], "pagerduty (Dana Ops)");
        assert_eq!(r["alert.id"], alert_id);
    }
    let notes: BTreeSet<&str> = from_pd.iter().map(|r| r["feedback.note"].as_str().unwrap_or_default()).collect();
    assert!(notes.iter().any(|n| n.starts_with("resolved by hand in PagerDuty")), "{notes:?}");
}

/// maildev's SMTP port, web port, CA and credentials (`APIWATCH_TEST_SMTP`).
fn maildev() -> [String; 5] {
    let smtp = env("APIWATCH_TEST_SMTP");
    ["SMTP_PORT", "WEB_PORT", "CA", "USER", "PASS"].map(|k| {
        smtp.split_whitespace()
            .find_map(|kv| kv.strip_prefix(&format!("{k}=")))
            .unwrap_or_else(|| panic!("{k} in APIWATCH_TEST_SMTP"))
            .to_owned()
    })
}

/// The mails maildev holds for `rcpt`, oldest first.
fn mails_to(web: &str, rcpt: &str) -> Vec<Value> {
    let body = ureq::get(&format!("http://127.0.0.1:{web}/api/email"))
        .call()
        .unwrap()
        .body_mut()
        .read_to_string()
        .unwrap();
    serde_json::from_str::<Vec<Value>>(&body)
        .unwrap()
        .into_iter()
        .filter(|m| m["to"][0]["address"] == rcpt)
        .collect()
}

/// The alert a mail is about (its last line says `alert.id ID`).
fn mail_alert(m: &Value) -> String {
    let text = m["text"].as_str().unwrap();
    text.lines()
        .rev()
        .find_map(|l| l.trim().strip_prefix("alert.id "))
        .unwrap_or_else(|| panic!("no alert.id in {text}"))
        .to_owned()
}

/// The subjects of the mails about alert `id`, oldest first.
fn subjects_of(mails: &[Value], id: &str) -> Vec<String> {
    mails
        .iter()
        .filter(|m| mail_alert(m) == id)
        .map(|m| m["subject"].as_str().unwrap().to_owned())
        .collect()
}

/// The link a mail's text gives for `label` (`  Acknowledge: URL`).
fn mail_link(m: &Value, label: &str) -> String {
    let text = m["text"].as_str().unwrap();
    text.lines()
        .find_map(|l| l.trim().strip_prefix(&format!("{label}: ")))
        .unwrap_or_else(|| panic!("no {label} link in {text}"))
        .to_owned()
}

/// Status and body of a request to a full URL.
fn follow(method: &str, url: &str) -> (u16, String) {
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let mut resp = match method {
        "GET" => agent.get(url).call().unwrap(),
        _ => agent.post(url).send_empty().unwrap(),
    };
    (resp.status().as_u16(), resp.body_mut().read_to_string().unwrap())
}

#[test]
fn the_mails_links_answer_their_alert_once_and_an_acknowledged_alert_is_not_mailed_again() {
    let [port, web, ca, user, pass] = maildev();
    let smtp_env = [
        ("APIWATCH_SMTP_USERNAME", user.as_str()),
        ("APIWATCH_SMTP_PASSWORD", pass.as_str()),
        ("APIWATCH_LINK_SECRET", "links-test-secret-0123456789"),
    ];
    let secret = smtp_env[2].1;
    // public_url must name the port before the worker that serves the links starts.
    let http_port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let public = format!("http://127.0.0.1:{http_port}");
    let dir = tempfile::tempdir().unwrap();
    let config = |name: &str, job: &str, rcpt: &str| {
        let path = dir.path().join(name);
        std::fs::write(
            &path,
            format!(
                "[alerts]\nrealert_interval_secs = 120\n[elasticsearch]\njob = \"{job}\"\npoll_interval_secs = 1\n[http]\npublic_url = \"{public}\"\n[email]\nsmtp_host = \"127.0.0.1\"\nsmtp_port = {port}\nsecurity = \"tls\"\nca_cert = \"{ca}\"\nfrom = \"apiwatch@test.local\"\nmin_interval_secs = 0\nmax_per_hour = 10000\n[[email.routes]]\nto = [\"{rcpt}\"]\n"
            ),
        )
        .unwrap();
        path.display().to_string()
    };
    let url = es_url();
    let run_once = |prefix: &str, rcpt: &str| -> Value {
        setup(prefix);
        let cfg = config(&format!("{prefix}.toml"), "live", rcpt);
        let fixed = ["run", "--once", "--json", "--logs", logs()];
        let args: Vec<&str> = fixed
            .into_iter()
            .chain(["--es", &url, "--prefix", prefix, "--config", &cfg])
            .collect();
        let out = apiwatch(&args, &smtp_env);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).unwrap()
    };

    // Without feedback: an alert that is mailed open, again while still open (a re-alert every
    // two minutes of event time while anomalies keep coming), and resolved.
    let (control, answered) = (unique("links-a"), unique("links-b"));
    let rcpt = format!("{control}@oncall.test");
    run_once(&control, &rcpt);
    let mails = mails_to(&web, &rcpt);
    let repeated = mails
        .iter()
        .map(mail_alert)
        .find(|id| {
            let s = subjects_of(&mails, id);
            s.iter().any(|s| s.ends_with("(still open)")) && s.iter().any(|s| s.ends_with("(resolved)"))
        })
        .expect("an alert mailed again while open, then resolved");
    let opened = mails
        .iter()
        .find(|m| mail_alert(m) == repeated && !m["subject"].as_str().unwrap().starts_with("Re:"))
        .unwrap();
    let other = mails.iter().map(mail_alert).find(|id| *id != repeated).expect("a second alert");
    mails_keep_the_secret(&mails, secret);
    let ack = mail_link(opened, "Acknowledge");
    assert!(ack.starts_with(&format!("{public}/act/ack/")), "{ack}");
    assert!(
        opened["html"].as_str().unwrap().contains("data-action=\"ack\""),
        "the HTML has the buttons"
    );

    // A worker on another prefix serves the links (its own job, no logs of its own).
    setup(&answered);
    let serving_config = config("serving.toml", "links", "nobody@oncall.test");
    let fixed = "run --no-email --log debug --logs logs-apiwatch.calls-links_test_none".split(' ');
    let serving_args: Vec<&str> = fixed
        .chain(["--es", &url, "--prefix", &answered, "--config", &serving_config])
        .collect();
    let listen = format!("127.0.0.1:{http_port}");
    let serving = Listening::start_on(&serving_args, &smtp_env, &listen);
    let feedback_index = format!("{answered}-feedback");
    let records = || {
        let c = client();
        let _ = c.json_status("POST", &format!("/{feedback_index}/_refresh"), None);
        search_all(&c, &feedback_index)
    };
    // GET shows what the link will do and changes nothing; POST does it, once.
    let (code, page) = follow("GET", &ack);
    assert_eq!(code, 200, "{page}");
    assert!(page.contains("<form method=\"post\"") && page.contains("Acknowledge"), "{page}");
    assert!(records().is_empty(), "a GET (a mail scanner's preview) changes nothing");
    let (code, page) = follow("POST", &ack);
    assert_eq!(code, 200, "{page}");
    assert!(page.contains("Acknowledged"), "{page}");
    let (code, page) = follow("POST", &ack);
    assert_eq!((code, page.contains("Already done")), (200, true), "{page}");
    let written = records();
    assert_eq!(written.len(), 1, "one record for one link followed twice: {written:?}");
    assert_eq!(written[0]["_source"]["feedback.type"], "ack");
    assert_eq!(written[0]["_source"]["user.name"], "link (email)");
    assert_eq!(written[0]["_source"]["alert.id"], repeated.as_str());

    refuse_links(&ack, &repeated, &other, &public, secret);
    assert_eq!(records().len(), 1, "nothing refused was written");
    let log = serving.stop();
    assert!(log.contains("refused an answering link"), "refusals are logged");
    assert!(!log.contains(secret), "the secret never shows, even at debug level");
    assert!(!log.contains(ack.rsplit("sig=").next().unwrap()), "nor a link's signature");

    // The same stream with the acknowledgement: mailed open and resolved, never again while open.
    let rcpt_b = format!("{answered}@oncall.test");
    let summary = run_once(&answered, &rcpt_b);
    let mails_b = mails_to(&web, &rcpt_b);
    let subjects = subjects_of(&mails_b, &repeated);
    assert!(!subjects.is_empty() && !subjects[0].starts_with("Re:"), "{subjects:?}");
    assert!(subjects.iter().all(|s| !s.ends_with("(still open)")), "{subjects:?}");
    assert!(subjects.iter().any(|s| s.ends_with("(resolved)")), "{subjects:?}");
    assert!(summary["feedback"]["alerts_acknowledged"].as_u64().unwrap() >= 1, "{summary}");
    let doc = client().json("GET", &format!("/{answered}-alerts/_doc/{repeated}"), None).unwrap();
    assert_eq!(doc["_source"]["alert.acknowledged.by"], "link (email)", "{doc}");
    alerts_carry_their_links(&format!("{answered}-alerts"), &public);
    let others_b: usize = mails_b.iter().filter(|m| mail_alert(m) != repeated).count();
    let others_a: usize = mails.iter().filter(|m| mail_alert(m) != repeated).count();
    assert_eq!(others_b, others_a, "every other alert is mailed as before");

    // Silence 1 h and Not a problem act on the alert they came with.
    let serving = Listening::start_on(&serving_args, &smtp_env, &listen);
    for label in ["Silence 1 h", "Not a problem"] {
        let (code, page) = follow("POST", &mail_link(opened, label));
        assert_eq!(code, 200, "{label}: {page}");
    }
    serving.stop();
    silence_and_verdict_from_links(&records(), &doc["_source"], &repeated);
}

/// Links for another alert, another action, with an altered signature or expired are refused,
/// each with a page saying why.
fn refuse_links(ack: &str, alert: &str, other: &str, public: &str, secret: &str) {
    let elsewhere = ack.replace(&format!("/act/ack/{alert}?"), &format!("/act/ack/{other}?"));
    let (code, page) = follow("POST", &elsewhere);
    assert_eq!(code, 403, "{page}");
    assert!(page.contains("not signed by this apiwatch for this alert"), "{page}");
    let (code, _) = follow("GET", &ack.replace("/act/ack/", "/act/not-a-problem/"));
    assert_eq!(code, 403, "another action");
    // Flip the last character to one it is not, so the signature is always altered.
    let flipped = if ack.ends_with('0') { '1' } else { '0' };
    let (code, _) = follow("GET", &format!("{}{flipped}", &ack[..ack.len() - 1]));
    assert_eq!(code, 403, "an altered signature");
    let links = apiwatch::feedback::link::ActionLinks::new(public, secret, 60_000).unwrap();
    let old = links.link(
        apiwatch::feedback::link::LinkAction::Ack,
        alert,
        "email",
        chrono::Utc::now().timestamp_millis() - 120_000,
    );
    let (code, page) = follow("POST", &old.url);
    assert_eq!(code, 410, "{page}");
    assert!(page.contains("expired"), "{page}");
}

/// The records a followed "Silence 1 h" and "Not a problem" wrote: a one-hour silence on the
/// alert's origin and a verdict with the alert's findings.
fn silence_and_verdict_from_links(written: &[Value], alert_doc: &Value, alert: &str) {
    let of = |kind: &str| {
        written
            .iter()
            .map(|r| &r["_source"])
            .find(|r| r["feedback.type"] == kind)
            .unwrap_or_else(|| panic!("no {kind} in {written:?}"))
            .clone()
    };
    let silence = of("silence");
    assert_eq!(silence["service.name"], alert_doc["service.name"]);
    assert_eq!(silence["cloud.provider"], alert_doc["cloud.provider"]);
    let span = |k: &str| apiwatch::model::time::parse_rfc3339(silence[k].as_str().unwrap()).unwrap();
    assert_eq!(span("silence.end") - span("silence.start"), 3_600_000);
    let verdict = of("verdict");
    assert_eq!(verdict["feedback.verdict"], "false_positive");
    assert_eq!(verdict["alert.id"], alert);
    assert!(!verdict["feedback.findings"].as_array().unwrap().is_empty(), "{verdict}");
}

/// Kibana's alert table: open alerts carry their own links (via kibana), resolved ones none.
fn alerts_carry_their_links(index: &str, public: &str) {
    for a in search_all(&client(), index) {
        let a = &a["_source"];
        let link = a["alert.link.ack"].as_str();
        match a["alert.status"].as_str().unwrap() {
            "open" => {
                let id = a["alert.id"].as_str().unwrap();
                let link = link.unwrap_or_else(|| panic!("an open alert has its links: {a}"));
                assert!(link.starts_with(&format!("{public}/act/ack/{id}?via=kibana&")), "{link}");
            }
            _ => assert!(link.is_none(), "a resolved alert needs no answer: {a}"),
        }
    }
}

/// No mail shows the secret, and a resolution carries no answering links.
fn mails_keep_the_secret(mails: &[Value], secret: &str) {
    for m in mails {
        let text = format!("{}{}", m["text"], m["html"]);
        assert!(!text.contains(secret), "the secret is never in a mail");
        if m["subject"].as_str().unwrap().ends_with("(resolved)") {
            assert!(!text.contains("/act/"), "a resolution carries no answering links");
        }
    }
}

/// The partitions' queries divide the documents exactly as the worker's hash does, for every
/// name (ASCII, accented, outside the Basic Multilingual Plane, empty, too long to be indexed,
/// absent): each document once, none missing.
#[test]
fn partition_queries_divide_the_documents_as_the_workers_hash_does() {
    use apiwatch::es::partition::{keys, narrow};
    use apiwatch::job::partition::partition_of;
    let index = unique("partitions");
    let c = client();
    c.json(
        "PUT",
        &format!("/{index}"),
        Some(&json!({"mappings": {"properties": {
            "service.name": {"type": "keyword", "ignore_above": 24},
            "n": {"type": "long"},
        }}})),
    )
    .unwrap();
    let mut names: Vec<String> = (0..60).map(|i| format!("svc-{i}")).collect();
    names.extend(["gateway", "zahlung-€", "𝒮ervice-ü", "", "a-service-name-longer-than-ignore-above"].map(String::from));
    let mut bulk = String::new();
    for (n, name) in names.iter().enumerate() {
        bulk.push_str(&format!(
            "{{\"index\":{{\"_index\":\"{index}\"}}}}\n{}\n",
            json!({"service.name": name, "n": n})
        ));
    }
    let absent = names.len();
    bulk.push_str(&format!("{{\"index\":{{\"_index\":\"{index}\"}}}}\n{}\n", json!({"n": absent})));
    let items = c.bulk(bulk.as_bytes()).unwrap();
    assert!(items.iter().all(|i| i.status < 300), "{items:?}");
    c.json("POST", &format!("/{index}/_refresh"), None).unwrap();

    let present = keys(&c, &index, "service.name", &json!({"match_all": {}})).unwrap();
    assert_eq!(present.len(), names.len() - 1, "every indexed name once: {present:?}");
    let count = 5;
    let mut seen = BTreeSet::new();
    for p in 0..count {
        let mut body = json!({"size": 1000, "_source": ["n"]});
        narrow(&mut body, "service.name", &present, p, count);
        let v = c.json("POST", &format!("/{index}/_search"), Some(&body)).unwrap();
        for h in v["hits"]["hits"].as_array().unwrap() {
            let n = h["_source"]["n"].as_u64().unwrap() as usize;
            let key = names.get(n).filter(|k| k.len() <= 24).map_or("", String::as_str);
            assert_eq!(partition_of(key, count), p, "document {n} ({:?}) in partition {p}", names.get(n));
            assert!(seen.insert(n), "document {n} in two partitions");
        }
    }
    assert_eq!(seen.len(), names.len() + 1, "every document in one partition");
}

/// Workers on one job, each in its own thread with its own client, as separate processes would
/// be: they divide the partitions evenly (one correlator), a silent worker's partitions are
/// taken within two lease periods, a joining worker gets its share, and one leaving cleanly
/// frees its partitions at once.
#[test]
fn workers_divide_a_jobs_partitions_take_over_a_silent_ones_and_share_with_a_newcomer() {
    use apiwatch::es::lease::EsLeaseBook;
    use apiwatch::job::partition::{Assignment, Coordinator};
    use std::sync::atomic::{AtomicU8, Ordering};
    use std::sync::{Arc, Mutex};

    const COUNT: u32 = 12;
    const TTL: i64 = 6_000;
    /// What a worker thread does next: run rounds, stop silently (as if killed), or leave.
    const RUN: u8 = 0;
    const DIE: u8 = 1;
    const LEAVE: u8 = 2;
    let prefix = unique("lease");
    setup(&prefix);
    let state = format!("{prefix}-state");
    let job = "live";
    type Shares = Arc<Mutex<BTreeMap<String, Assignment>>>;
    let shares: Shares = Arc::default();
    let start = |name: &str| -> (Arc<AtomicU8>, std::thread::JoinHandle<()>) {
        let signal = Arc::new(AtomicU8::new(RUN));
        let (s, shares, state, name) = (signal.clone(), shares.clone(), state.clone(), name.to_owned());
        let handle = std::thread::spawn(move || {
            let mut c = Coordinator::new(EsLeaseBook::new(client(), &state), job, &name, COUNT, TTL);
            loop {
                match s.load(Ordering::SeqCst) {
                    DIE => {
                        shares.lock().unwrap().remove(&name);
                        return;
                    }
                    LEAVE => {
                        c.leave().unwrap();
                        shares.lock().unwrap().remove(&name);
                        return;
                    }
                    _ => {}
                }
                let a = c.round(chrono::Utc::now().timestamp_millis()).unwrap();
                for &p in &a.surplus {
                    c.release(p).unwrap();
                }
                shares.lock().unwrap().insert(name.clone(), a);
                std::thread::sleep(Duration::from_millis(250));
            }
        });
        (signal, handle)
    };
    // Even: the live workers' shares are disjoint, cover every partition, differ by at most one,
    // and one of them correlates.
    let even = |workers: &[&str]| -> bool {
        let s = shares.lock().unwrap();
        if s.len() != workers.len() || !workers.iter().all(|w| s.contains_key(*w)) {
            return false;
        }
        let mut all = BTreeSet::new();
        let sizes: Vec<usize> = s.values().map(|a| a.held.len() - a.surplus.len()).collect();
        let disjoint = s.values().all(|a| a.held.iter().all(|p| all.insert(*p)));
        disjoint
            && all.len() as u32 == COUNT
            && sizes.iter().max().unwrap() - sizes.iter().min().unwrap() <= 1
            && s.values().filter(|a| a.correlator).count() == 1
    };
    let wait_even = |workers: &[&str], within: Duration, what: &str| -> Duration {
        let t0 = Instant::now();
        while !even(workers) {
            assert!(
                t0.elapsed() < within,
                "{what}: not even after {within:?}: {:?}",
                shares.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        t0.elapsed()
    };
    let stored_holders = || -> BTreeMap<String, String> {
        let ids: Vec<String> = (0..COUNT).map(|i| format!("lease-{job}~p{i}of{COUNT}")).collect();
        let v = client()
            .json("POST", &format!("/{state}/_mget"), Some(&json!({"ids": ids})))
            .unwrap();
        v["docs"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|d| d["found"] == true)
            .map(|d| {
                (
                    d["_id"].as_str().unwrap().to_owned(),
                    d["_source"]["state.worker"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    };

    let mut threads: BTreeMap<&str, (Arc<AtomicU8>, std::thread::JoinHandle<()>)> = BTreeMap::new();
    for w in ["w-a", "w-b", "w-c"] {
        threads.insert(w, start(w));
    }
    wait_even(&["w-a", "w-b", "w-c"], Duration::from_secs(60), "three workers");
    // A lease handed over between workers is absent for a moment between its release and its
    // next take: what the workers hold is stored within a renewal or two.
    let t0 = Instant::now();
    while (stored_holders().len() as u32) < COUNT && t0.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(stored_holders().len() as u32, COUNT, "every partition's lease is stored");

    // w-b goes silent: its partitions move within two lease periods.
    let (signal, handle) = threads.remove("w-b").unwrap();
    signal.store(DIE, Ordering::SeqCst);
    handle.join().unwrap();
    let took = wait_even(&["w-a", "w-c"], Duration::from_millis(2 * TTL as u64), "after a worker went silent");
    eprintln!("a silent worker's partitions were taken over in {took:?} (lease {TTL} ms)");
    assert!(stored_holders().values().all(|w| w != "w-b"));

    // A newcomer gets its share; the others shed to it.
    threads.insert("w-d", start("w-d"));
    wait_even(&["w-a", "w-c", "w-d"], Duration::from_secs(60), "after a worker joined");

    // w-a leaves cleanly (SIGTERM): nothing of it stays stored, and the others take its share.
    let (signal, handle) = threads.remove("w-a").unwrap();
    signal.store(LEAVE, Ordering::SeqCst);
    handle.join().unwrap();
    assert!(
        stored_holders().values().all(|w| w != "w-a"),
        "released at once: {:?}",
        stored_holders()
    );
    let took = wait_even(&["w-c", "w-d"], Duration::from_secs(60), "after a worker left");
    eprintln!("a leaving worker's partitions were taken in {took:?} (lease {TTL} ms)");
    for (_, (signal, handle)) in threads {
        signal.store(LEAVE, Ordering::SeqCst);
        handle.join().unwrap();
    }
    assert!(stored_holders().is_empty(), "every lease released at the end");
}

/// `backfill --partitions 4` on `prefix` as worker `id`, started (not awaited).
fn partitioned_backfill(prefix: &str, config: &std::path::Path, id: &str) -> std::process::Child {
    spawn_logged(
        Command::new(BIN)
            .args(backfill_args(prefix))
            .args(["--partitions", "4", "--lease-secs", "3", "--worker-id", id, "--json", "--config"])
            .arg(config)
            .stdout(Stdio::piped()),
    )
}

/// Spawns `cmd` with its log in a file named after its process (read back by [`finished`] when
/// it fails; a pipe left unread could fill and stall the worker).
fn spawn_logged(cmd: &mut Command) -> std::process::Child {
    let dir = std::env::temp_dir().join("apiwatch-test-workers");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(unique("spawning"));
    let file = std::fs::File::create(&path).unwrap();
    let child = cmd.stderr(Stdio::from(file)).spawn().unwrap();
    std::fs::rename(&path, log_of(child.id())).unwrap();
    child
}

/// The log file of worker `pid`.
fn log_of(pid: u32) -> std::path::PathBuf {
    std::env::temp_dir().join("apiwatch-test-workers").join(format!("{pid}.log"))
}

/// A worker's summary, once it exited 0 (its log's end when it did not).
fn finished(child: std::process::Child, who: &str) -> Value {
    let pid = child.id();
    let out = child.wait_with_output().unwrap();
    let log = std::fs::read_to_string(log_of(pid)).unwrap_or_default();
    let tail: Vec<&str> = log.lines().rev().take(30).collect();
    assert!(
        out.status.success(),
        "worker {who} failed: {}; its log ends:\n{}",
        out.status,
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Every anomaly, alert and journey document of `prefix`, by id, and the window digests left.
fn results(c: &EsClient, prefix: &str) -> (Vec<(String, Value)>, usize) {
    let mut docs = Vec::new();
    for family in ["anomalies", "alerts", "journeys", "services"] {
        for h in search_all(c, &format!("{prefix}-{family}*")) {
            docs.push((format!("{family}/{}", h["_id"].as_str().unwrap()), h["_source"].clone()));
        }
    }
    (docs, digests_left(c, prefix))
}

/// The window digests in `prefix`'s state index (written by partitions, deleted once correlated).
fn digests_left(c: &EsClient, prefix: &str) -> usize {
    search_all(c, &format!("{prefix}-state"))
        .iter()
        .filter(|h| h["_source"]["state.kind"] == "digest")
        .count()
}

/// Fails naming the documents that differ (by id, with the fields that differ), not just that
/// something does.
fn assert_same_documents(got: &[(String, Value)], want: &[(String, Value)]) {
    let want_by_id: BTreeMap<&str, &Value> = want.iter().map(|(id, v)| (id.as_str(), v)).collect();
    let got_by_id: BTreeMap<&str, &Value> = got.iter().map(|(id, v)| (id.as_str(), v)).collect();
    let mut differences = Vec::new();
    for (id, w) in &want_by_id {
        match got_by_id.get(id) {
            None => differences.push(format!("{id}: missing")),
            Some(g) if g != w => {
                let fields: Vec<String> = w
                    .as_object()
                    .into_iter()
                    .flatten()
                    .filter(|(k, v)| g.get(k.as_str()) != Some(v))
                    .map(|(k, v)| format!("{k}: want {v}, got {}", g.get(k.as_str()).unwrap_or(&Value::Null)))
                    .chain(
                        g.as_object()
                            .into_iter()
                            .flatten()
                            .filter(|(k, _)| w.get(k.as_str()).is_none())
                            .map(|(k, v)| format!("{k}: unexpected {v}")),
                    )
                    .collect();
                differences.push(format!("{id}: {}", fields.join("; ")));
            }
            Some(_) => {}
        }
    }
    for id in got_by_id.keys().filter(|id| !want_by_id.contains_key(*id)) {
        differences.push(format!("{id}: not in one worker's"));
    }
    assert!(
        differences.is_empty(),
        "{} of {} documents differ from one worker's:\n{}",
        differences.len(),
        want.len(),
        differences.iter().take(20).cloned().collect::<Vec<_>>().join("\n")
    );
}

#[test]
fn workers_share_a_partitioned_backfill_and_a_killed_ones_partitions_are_taken_over() {
    let c = client();
    // Short slices, a checkpoint at each, and a 3 s lease: turns of under a second, so that
    // several workers divide the range and a kill lands mid-run.
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("apiwatch.toml");
    std::fs::write(
        &config,
        "[elasticsearch]\nslice_secs = 600\ncheckpoint_every_secs = 0\npoll_interval_secs = 1\n",
    )
    .unwrap();

    let solo = unique("parts-solo");
    setup(&solo);
    let alone = finished(partitioned_backfill(&solo, &config, "solo"), "solo");
    let events = alone["events"].as_u64().unwrap();
    assert!(events > 100_000, "one worker scores every partition: {alone}");
    let (want, left) = results(&c, &solo);
    assert_eq!(left, 0, "the correlator deletes the digests it consumed");
    assert!(want.iter().any(|(id, _)| id.starts_with("alerts/")), "the incidents raise alerts");
    assert!(want.iter().any(|(id, _)| id.starts_with("anomalies/")));
    let again = finished(partitioned_backfill(&solo, &config, "solo"), "solo");
    assert_eq!(again["already_complete"], true, "{again}");

    // Three workers at once: each scores a share, the documents are the single worker's.
    let shared = unique("parts-three");
    setup(&shared);
    let children: Vec<_> = ["a", "b", "c"]
        .iter()
        .map(|id| (*id, partitioned_backfill(&shared, &config, id)))
        .collect();
    let summaries: Vec<Value> = children.into_iter().map(|(id, child)| finished(child, id)).collect();
    let scored: Vec<u64> = summaries.iter().map(|s| s["events"].as_u64().unwrap()).collect();
    // At least once: a partition whose lease ran out under load is scored again by its taker.
    assert!(scored.iter().sum::<u64>() >= events, "every event scored: {scored:?}");
    assert!(
        scored.iter().filter(|&&n| n > 0).count() >= 2,
        "the partitions were shared: {scored:?}"
    );
    assert_like_one_workers(&c, &shared, &want, "as many documents as one worker wrote");

    // A worker SIGKILLed after its first checkpoint: the other takes its partitions over once
    // their leases run out and finishes; nothing missing, nothing twice.
    let killed = unique("parts-kill");
    setup(&killed);
    let survivor = partitioned_backfill(&killed, &config, "k1");
    let mut victim = partitioned_backfill(&killed, &config, "k2");
    wait_for_checkpoint(&c, &killed, "k2");
    victim.kill().unwrap();
    victim.wait().unwrap();
    let s = finished(survivor, "k1");
    assert_eq!(s["until"], "2026-03-02T03:00:00.000Z", "the survivor finished the range: {s}");
    assert_like_one_workers(&c, &killed, &want, "no document missing or twice after the kill");

    // A worker frozen mid-turn (SIGSTOP: a pause longer than its leases) while the other
    // takes its partitions over: woken up, it writes nothing over the taker's documents.
    let paused = unique("parts-pause");
    setup(&paused);
    let taker = partitioned_backfill(&paused, &config, "p1");
    let sleeper = partitioned_backfill(&paused, &config, "p2");
    wait_for_checkpoint(&c, &paused, "p2");
    let signal = |sig: &str| {
        let ok = Command::new("kill")
            .args([sig, &sleeper.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill {sig}");
    };
    signal("-STOP");
    std::thread::sleep(Duration::from_secs(8));
    signal("-CONT");
    let ends = [finished(taker, "p1"), finished(sleeper, "p2")].map(|s| s["until"].clone());
    assert!(
        ends.contains(&json!("2026-03-02T03:00:00.000Z")),
        "the range was finished: {ends:?}"
    );
    assert_like_one_workers(&c, &paused, &want, "no window digest written after the range was correlated");
}

/// `prefix`'s documents are `want` (one worker's), field for field, and no digest is left.
fn assert_like_one_workers(c: &EsClient, prefix: &str, want: &[(String, Value)], why: &str) {
    let (got, left) = results(c, prefix);
    assert_eq!(left, 0, "{why}: window digests left");
    assert_eq!(got.len(), want.len(), "{why}");
    assert_same_documents(&got, want);
}

/// Waits until worker `who` saved a partition checkpoint of `prefix`.
fn wait_for_checkpoint(c: &EsClient, prefix: &str, who: &str) {
    let started = Instant::now();
    loop {
        let body = json!({"size": 1, "query": {"bool": {"filter": [
            {"term": {"state.kind": "checkpoint"}}, {"term": {"state.worker": who}}]}}});
        let (status, v) = c
            .json_status("POST", &format!("/{prefix}-state/_search?ignore_unavailable=true"), Some(&body))
            .unwrap();
        if status == 200 && v["hits"]["hits"].as_array().is_some_and(|h| !h.is_empty()) {
            return;
        }
        assert!(started.elapsed() < Duration::from_secs(120), "worker {who} never checkpointed");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `run --partitions 4` (live) on `prefix` as worker `id`, mailing alerts to `rcpt`; started,
/// not awaited.
fn partitioned_live(prefix: &str, config: &std::path::Path, id: &str, once: bool) -> std::process::Child {
    let [_, _, _, user, pass] = maildev();
    let mut c = Command::new(BIN);
    c.args(["run", "--es", &es_url(), "--prefix", prefix, "--logs", logs()])
        .args(["--partitions", "4", "--lease-secs", "3", "--worker-id", id, "--json", "--config"])
        .arg(config)
        .env("APIWATCH_SMTP_USERNAME", &user)
        .env("APIWATCH_SMTP_PASSWORD", &pass)
        .stdout(Stdio::piped());
    if once {
        c.arg("--once");
    }
    spawn_logged(&mut c)
}

/// The subjects of the mails `rcpt` received, sorted.
fn subjects(web: &str, rcpt: &str) -> Vec<String> {
    let mut s: Vec<String> = mails_to(web, rcpt)
        .iter()
        .map(|m| m["subject"].as_str().unwrap().to_owned())
        .collect();
    s.sort();
    s
}

#[test]
fn a_live_job_in_partitions_is_shared_told_once_and_released_at_sigterm() {
    let c = client();
    let [port, web, ca, _, _] = maildev();
    let dir = tempfile::tempdir().unwrap();
    let config_for = |rcpt: &str| {
        let path = dir.path().join(format!("{rcpt}.toml"));
        std::fs::write(
            &path,
            format!(
                "[elasticsearch]\nslice_secs = 600\ncheckpoint_every_secs = 0\npoll_interval_secs = 1\n[email]\nsmtp_host = \"127.0.0.1\"\nsmtp_port = {port}\nsecurity = \"tls\"\nca_cert = \"{ca}\"\nfrom = \"apiwatch@test.local\"\nmin_interval_secs = 0\nmax_per_hour = 10000\n[[email.routes]]\nto = [\"{rcpt}\"]\n"
            ),
        )
        .unwrap();
        path
    };

    // One worker alone holds every partition and the correlator: up to the live edge, once.
    let solo = unique("live-parts-solo");
    setup(&solo);
    let solo_rcpt = format!("{solo}@oncall.test");
    let alone = finished(partitioned_live(&solo, &config_for(&solo_rcpt), "solo", true), "solo");
    assert!(alone["events"].as_u64().unwrap() > 100_000, "{alone}");
    let (want, left) = results(&c, &solo);
    assert_eq!(left, 0, "the correlator consumed every digest");
    assert!(want.iter().any(|(id, _)| id.starts_with("alerts/")), "the incidents raise alerts");
    let told = alone["notifications_sent"].as_u64().unwrap();
    assert!(told >= 1, "the correlator mails the alerts: {alone}");
    let want_mails = subjects(&web, &solo_rcpt);
    assert_eq!(want_mails.len() as u64, told, "every mail sent arrived");

    // Two live workers share the job until SIGTERM: each scores a share, the documents are the
    // single worker's, every alert change is mailed once by whoever correlates, and stopping
    // releases every lease at once.
    let shared = unique("live-parts-two");
    setup(&shared);
    let rcpt = format!("{shared}@oncall.test");
    let config = config_for(&rcpt);
    let workers = [
        ("a", partitioned_live(&shared, &config, "a", false)),
        ("b", partitioned_live(&shared, &config, "b", false)),
    ];
    wait_for_correlator_past(&c, &shared, TO);
    let summaries: Vec<Value> = workers
        .into_iter()
        .map(|(id, child)| {
            let ok = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
            assert!(ok.success());
            finished(child, id)
        })
        .collect();
    let scored: Vec<u64> = summaries.iter().map(|s| s["events"].as_u64().unwrap()).collect();
    assert!(scored.iter().sum::<u64>() >= alone["events"].as_u64().unwrap(), "{scored:?}");
    assert!(scored.iter().all(|&n| n > 0), "both workers scored a share: {scored:?}");
    eprintln!(
        "live partitions: {} documents and {told} mails alone; two workers scored {scored:?} events",
        want.len()
    );
    assert_like_one_workers(&c, &shared, &want, "a live job shared by two workers");
    // Every alert the lone worker mailed is mailed. Not message for message: changes that
    // fall in one correlator step are told as one (an alert opened at P3 and raised to P1 in
    // the same step is mailed once, at P1), and how many windows a step takes depends on how
    // the workers' checkpoints interleave; and at least once: a correlator that lost its
    // lease between a send and its checkpoint leaves that message to the next holder.
    let alerts_mailed = |rcpt: &str| mails_to(&web, rcpt).iter().map(mail_alert).collect::<BTreeSet<String>>();
    assert_eq!(alerts_mailed(&rcpt), alerts_mailed(&solo_rcpt), "every alert mailed");
    let leases = search_all(&c, &format!("{shared}-state"))
        .into_iter()
        .filter(|h| h["_source"]["state.kind"] == "lease")
        .map(|h| h["_id"].as_str().unwrap().to_owned())
        .collect::<Vec<_>>();
    assert!(leases.is_empty(), "SIGTERM released every lease: {leases:?}");

    // A live worker SIGKILLed after its first checkpoint: the other takes its partitions over
    // once their leases run out; nothing missing, nothing twice.
    let killed = unique("live-parts-kill");
    setup(&killed);
    let config = config_for(&format!("{killed}@oncall.test"));
    let survivor = partitioned_live(&killed, &config, "k1", false);
    let mut victim = partitioned_live(&killed, &config, "k2", false);
    wait_for_checkpoint(&c, &killed, "k2");
    victim.kill().unwrap();
    victim.wait().unwrap();
    wait_for_correlator_past(&c, &killed, TO);
    Command::new("kill").args(["-TERM", &survivor.id().to_string()]).status().unwrap();
    finished(survivor, "k1");
    assert_like_one_workers(&c, &killed, &want, "a live job after a worker was killed");

    serves_health_per_partition_and_refuses_a_whole_worker(&shared, &config);
}

/// Waits until the live job's correlator on `prefix` has checkpointed past `time` and taken in
/// every window digest the partitions wrote (a correlator far behind takes a few windows a
/// step, so passing `time` is not enough).
fn wait_for_correlator_past(c: &EsClient, prefix: &str, time: &str) {
    let started = Instant::now();
    loop {
        let (status, v) = c
            .json_status("GET", &format!("/{prefix}-state/_doc/checkpoint-live~correlator"), None)
            .unwrap();
        let until = v["_source"]["state.checkpoint"].as_str().unwrap_or_default().to_owned();
        let left = match status == 200 && until.as_str() > time {
            true => digests_left(c, prefix),
            false => usize::MAX,
        };
        if left == 0 {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "the live correlator did not pass {time} ({until}) with every digest taken in ({left} left)"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A partitioned live worker resuming `prefix` alone serves its health and a series per
/// partition it holds; a whole worker on the job is refused while it runs.
fn serves_health_per_partition_and_refuses_a_whole_worker(shared: &str, config: &std::path::Path) {
    // A partitioned live worker serves its health and a series per partition it holds; a
    // whole worker on a job scored in partitions is refused.
    let [_, _, _, user, pass] = maildev();
    let url = es_url();
    let config_s = config.display().to_string();
    let args = [
        "run",
        "--es",
        &url,
        "--prefix",
        shared,
        "--logs",
        logs(),
        "--partitions",
        "4",
        "--lease-secs",
        "3",
        "--worker-id",
        "c",
        "--json",
        "--config",
        &config_s,
    ];
    let worker = Listening::start_with(
        &args,
        &[("APIWATCH_SMTP_USERNAME", user.as_str()), ("APIWATCH_SMTP_PASSWORD", pass.as_str())],
    );
    let t0 = Instant::now();
    let metrics = loop {
        let (code, body) = worker.get("/health");
        let m = scrape(&worker.get("/metrics").1);
        let held = (0..4)
            .filter(|p| m.contains_key(&("apiwatch_partition_lag_seconds".to_owned(), format!("job=live,partition={p},"))))
            .count();
        if code == 200 && held == 4 {
            break m;
        }
        assert!(t0.elapsed() < Duration::from_secs(60), "not ready with 4 partitions: {code} {body}");
        std::thread::sleep(Duration::from_millis(300));
    };
    for p in 0..4 {
        let lag = metrics[&("apiwatch_partition_lag_seconds".to_owned(), format!("job=live,partition={p},"))];
        assert!(lag < 120.0, "partition {p} is {lag} s behind");
    }
    assert_eq!(metrics[&("apiwatch_up".to_owned(), "job=live,".to_owned())], 1.0);
    let t0 = Instant::now();
    let refused = loop {
        let out = apiwatch(&["run", "--es", &es_url(), "--prefix", shared, "--logs", logs(), "--once"], &[]);
        if !out.status.success() {
            break String::from_utf8_lossy(&out.stderr).into_owned();
        }
        assert!(t0.elapsed() < Duration::from_secs(60), "a whole worker ran beside partitioned ones");
        std::thread::sleep(Duration::from_millis(500));
    };
    worker.stop();
    assert!(refused.contains("in partitions"), "{refused}");
}

/// Events of the shared logs in `[from, to)`.
fn events_between(c: &EsClient, from: &str, to: &str) -> u64 {
    let body = json!({"query": {"range": {"@timestamp": {"gte": from, "lt": to}}}});
    let v = c.json("POST", &format!("/{}/_count", logs()), Some(&body)).unwrap();
    v["count"].as_u64().unwrap()
}

/// What was found where, whichever alert it went to: `(window start, entity, metric, detector,
/// score)` of every anomaly of `prefix` from `since` on.
fn findings_from(c: &EsClient, prefix: &str, since: &str) -> BTreeSet<String> {
    search_all(c, &format!("{prefix}-anomalies*"))
        .iter()
        .map(|h| &h["_source"])
        .filter(|a| a["anomaly.window.start"].as_str().unwrap() >= since)
        .map(|a| {
            let field = |k: &str| a[k].as_str().unwrap_or_default().to_owned();
            format!(
                "{} {} {} {} {} {:.3}",
                field("anomaly.window.start"),
                field("service.name"),
                field("http.route"),
                field("anomaly.metric"),
                field("anomaly.detector"),
                a["anomaly.score"].as_f64().unwrap()
            )
        })
        .collect()
}

#[test]
fn a_new_live_job_learns_from_the_hours_before_its_start_and_writes_nothing_for_them() {
    let c = client();
    let start = "2026-03-02T02:00:00Z";
    // Warm: learns from the two hours before 02:00 (all the shared logs have there), judges
    // from 02:00. Whole: scores the logs from their start. Cold: judges from 02:00 knowing nothing.
    let [warm, whole, cold] = ["warm", "whole", "cold"].map(|n| {
        let prefix = unique(&format!("warm-start-{n}"));
        setup(&prefix);
        prefix
    });
    let learned = run_once(&warm, &["--since", start]);
    run_once(&whole, &["--since", FROM]);
    let cold_run = run_once(&cold, &["--since", start, "--warm-start-hours", "0"]);

    let history = events_between(&c, FROM, start);
    assert!(history > 10_000, "{history}");
    assert_eq!(learned["warm_start"]["events"].as_u64(), Some(history), "{learned}");
    assert_eq!(learned["warm_start"]["until"], "2026-03-02T02:00:00.000Z", "{learned}");
    assert!(cold_run.get("warm_start").is_none(), "0 turns it off: {cold_run}");
    for run in [&learned, &cold_run] {
        assert_eq!(
            run["events"].as_u64(),
            Some(events_between(&c, start, TO)),
            "only the live part is counted: {run}"
        );
    }
    // Nothing written for the history: no anomaly, alert or journey before the start.
    for family in ["anomalies", "alerts", "journeys"] {
        let early: Vec<Value> = search_all(&c, &format!("{warm}-{family}*"))
            .into_iter()
            .filter(|h| h["_source"]["@timestamp"].as_str().unwrap() < start)
            .collect();
        assert!(early.is_empty(), "{family} written for the warm start's history: {early:?}");
    }
    // What the live part finds is what a job that scored the history would have found there,
    // and not what a job starting cold finds.
    let (found, want, cold_found) = (
        findings_from(&c, &warm, start),
        findings_from(&c, &whole, start),
        findings_from(&c, &cold, start),
    );
    assert!(!want.is_empty());
    assert_eq!(found, want, "a warm start judges as if it had scored its history");
    assert_ne!(cold_found, want, "a cold start judges the same hour differently");
    // The checkpoint sits at the start: a second run goes on from there, learning nothing again.
    let again = run_once(&warm, &[]);
    assert!(again.get("warm_start").is_none(), "{again}");
    assert_eq!(again["resumed"], true, "{again}");
}
