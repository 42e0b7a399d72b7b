//! The reproducers of odd and hostile input, through the real binary: each one once hung,
//! wrapped, re-dated, lost events or panicked. Now each is refused or kept with a reason.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed step in a test is its failure

mod common;
use common::simulate;

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_apiwatch"))
}

const GOOD: &str = r#"{"@timestamp":"2026-03-02T06:00:00Z","service.name":"a","cloud.provider":"aws","http.request.method":"GET","url.path":"/x","http.response.status_code":200,"event.duration":1000}"#;

/// Runs `detect --no-models` on `input` into `out`, waiting at most a minute (a hang fails the
/// test instead of blocking the run): (exit status, stdout, stderr).
fn detect(input: &Path, out: &Path) -> (std::process::ExitStatus, String, String) {
    let mut child = bin()
        .args(["detect", "--no-models", "--input"])
        .arg(input)
        .arg("--output")
        .arg(out)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if started.elapsed() > Duration::from_secs(60) {
            child.kill().unwrap();
            panic!("apiwatch detect {} did not finish: a hang", input.display());
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stdout = String::new();
    let mut stderr = String::new();
    child.stdout.take().unwrap().read_to_string(&mut stdout).unwrap();
    child.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
    (status, stdout, stderr)
}

fn rejected(out: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(out.join("rejected.ndjson"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn a_first_event_at_the_largest_time_is_refused_not_spun_on() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("max.ndjson");
    let first = GOOD.replace(r#""2026-03-02T06:00:00Z""#, "9223372036854775807");
    std::fs::write(&input, format!("{first}\n{GOOD}\n{GOOD}\n")).unwrap();
    let (status, stdout, stderr) = detect(&input, &dir.path().join("out"));
    assert!(status.success(), "{stdout}{stderr}");
    assert!(stdout.contains("read 3 lines: 2 used, 1 skipped, 0 blank"), "{stdout}");
    let r = rejected(&dir.path().join("out"));
    assert_eq!(r[0]["line"], 1);
    assert!(r[0]["reason"].as_str().unwrap().contains("ahead of the wall clock"), "{r:?}");
}

#[test]
fn integer_seconds_and_impossible_dates_follow_the_documented_rules() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("times.ndjson");
    let seconds = GOOD.replace(r#""2026-03-02T06:00:00Z""#, "1772409600");
    let feb30 = GOOD.replace("2026-03-02", "2026-02-30");
    std::fs::write(&input, format!("{seconds}\n{feb30}\n")).unwrap();
    let out = dir.path().join("out");
    let (status, stdout, _) = detect(&input, &out);
    assert!(status.success());
    assert!(stdout.contains("1 used, 1 skipped"), "{stdout}");
    let metrics = std::fs::read_to_string(out.join("metrics.ndjson")).unwrap();
    assert!(metrics.contains("2026-03-02T00:00:00"), "epoch seconds read as seconds: {metrics}");
    assert!(rejected(&out)[0]["reason"].as_str().unwrap().contains("not an RFC 3339 time"));
}

/// The same stream with and without events from a wrong clock gives the same alerts, and the
/// wrong ones are refused with their line.
#[test]
fn a_wrong_clock_in_the_middle_changes_no_alert() {
    let dir = tempfile::tempdir().unwrap();
    let (clean, _) = simulate(dir.path(), "bank", 313, 3.0);
    let text = std::fs::read_to_string(&clean).unwrap();
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    let mid = lines.len() / 2;
    let skewed_hours = lines[mid].replace("T0", "T2");
    let ahead_days = lines[mid + 10].replace("2026-03-02T", "2026-03-04T");
    lines.insert(mid, skewed_hours);
    lines.insert(mid + 11, ahead_days);
    let skewed = dir.path().join("skewed.ndjson");
    std::fs::write(&skewed, lines.join("\n")).unwrap();

    let (a, b) = (dir.path().join("clean"), dir.path().join("skewed"));
    let (s1, o1, e1) = detect(&clean, &a);
    let (s2, o2, e2) = detect(&skewed, &b);
    assert!(s1.success() && s2.success(), "{o1}{e1}{o2}{e2}");
    let ids = |out: &Path| -> Vec<String> {
        std::fs::read_to_string(out.join("alerts.ndjson"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["alert"]["id"].to_string())
            .collect()
    };
    assert!(!ids(&a).is_empty(), "the stream has incidents to alert on");
    assert_eq!(ids(&a), ids(&b));
    assert!(o2.contains("2 from a wrong clock"), "{o2}");
    let r = rejected(&b);
    assert_eq!(r.len(), 2);
    assert_eq!(r[1]["line"], mid as u64 + 12);
    assert!(r.iter().all(|d| d["reason"].as_str().unwrap().starts_with("clock skew:")), "{r:?}");
}

#[test]
fn an_output_is_never_an_input_and_a_missing_input_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (events, _) = simulate(dir.path(), "saas", 2, 1.0);
    let out = dir.path().join("out");
    let (status, ..) = detect(&events, &out);
    assert!(status.success());
    let anomalies = out.join("anomalies.ndjson");
    let before = std::fs::read(&anomalies).unwrap();
    let (status, _, stderr) = detect(&anomalies, &out);
    assert!(!status.success());
    assert!(stderr.contains("is one of the files this run writes"), "{stderr}");
    assert_eq!(std::fs::read(&anomalies).unwrap(), before, "the input was not touched");

    let nowhere = dir.path().join("never");
    let (status, _, stderr) = detect(&dir.path().join("missing.ndjson"), &nowhere);
    assert!(!status.success());
    assert!(stderr.contains("missing.ndjson"), "{stderr}");
    assert!(!nowhere.exists(), "no output directory for a run that could not start");
}

#[test]
fn a_closed_stdout_ends_quietly_without_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let (events, _) = simulate(dir.path(), "saas", 3, 1.0);
    let mut child = bin()
        .args(["detect", "--no-models", "--input"])
        .arg(&events)
        .arg("--output")
        .arg(dir.path().join("out"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The reader goes away before anything is printed, as `| head -0` does.
    drop(child.stdout.take());
    let o = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(o.status.code(), Some(141), "{stderr}");
}

#[test]
fn utf16_and_gzip_inputs_are_recognised() {
    let dir = tempfile::tempdir().unwrap();
    let utf16 = dir.path().join("utf16.ndjson");
    let bytes: Vec<u8> = [0xff, 0xfe]
        .into_iter()
        .chain(GOOD.encode_utf16().flat_map(u16::to_le_bytes))
        .collect();
    std::fs::write(&utf16, bytes).unwrap();
    let (status, _, stderr) = detect(&utf16, &dir.path().join("o1"));
    assert!(!status.success());
    assert!(stderr.contains("is UTF-16") && stderr.contains("iconv"), "{stderr}");

    let gz = dir.path().join("calls.ndjson.gz");
    let mut z = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut z, format!("{GOOD}\r{GOOD}\r").as_bytes()).unwrap();
    std::fs::write(&gz, z.finish().unwrap()).unwrap();
    let (status, stdout, _) = detect(&gz, &dir.path().join("o2"));
    assert!(status.success());
    assert!(stdout.contains("read 2 lines: 2 used"), "{stdout}");
}
