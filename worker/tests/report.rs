//! The HTML report in a real browser: Debian's Chromium, headless, loads the page written from a
//! real `detect` run and from hostile input, and must draw what the data holds without a script
//! error. scripts/test.sh installs Chromium; `APIWATCH_TEST_CHROMIUM` may name another binary.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed step in a test is its failure

mod common;
use common::apiwatch_ok;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

fn chromium() -> PathBuf {
    if let Ok(p) = std::env::var("APIWATCH_TEST_CHROMIUM") {
        return PathBuf::from(p);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        for name in ["chromium", "chromium-browser", "google-chrome"] {
            let p = dir.join(name);
            if p.is_file() {
                return p;
            }
        }
    }
    panic!("no Chromium found: install Debian's `chromium` package (scripts/test.sh does) or set APIWATCH_TEST_CHROMIUM")
}

/// What the browser made of a page: the DOM after the scripts ran, and the script errors seen
/// (recorded by the page on <html data-errors> and logged by Chromium to stderr).
struct Loaded {
    dom: String,
    errors: Vec<String>,
}

fn load(page: &Path) -> Loaded {
    let profile = tempfile::tempdir().unwrap();
    let o = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--enable-logging=stderr",
            "--v=0",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(["--window-size=1400,1000", "--virtual-time-budget=5000", "--dump-dom"])
        .arg(format!("file://{}", page.canonicalize().unwrap().display()))
        .output()
        .expect("cannot run chromium");
    assert!(o.status.success(), "chromium failed: {}", String::from_utf8_lossy(&o.stderr));
    let dom = String::from_utf8(o.stdout).unwrap();
    let mut errors: Vec<String> = String::from_utf8_lossy(&o.stderr)
        .lines()
        .filter(|l| l.contains(":CONSOLE") && (l.contains("Uncaught") || l.contains("Error")))
        .map(str::to_owned)
        .collect();
    if let Some(e) = attr(&dom, "html", "data-errors") {
        errors.push(e);
    }
    Loaded { dom, errors }
}

/// The value of an attribute of the first element whose opening tag starts with `<tag` or holds
/// `tag` (e.g. `id="waterfall"`).
fn attr(dom: &str, tag: &str, name: &str) -> Option<String> {
    let start = match dom.find(&format!("<{tag}")) {
        Some(i) => i,
        None => dom[..dom.find(tag)?].rfind('<')?,
    };
    let end = start + dom[start..].find('>')?;
    let re = regex::Regex::new(&format!(r#"\s{}="([^"]*)""#, regex::escape(name))).unwrap();
    re.captures(&dom[start..end]).map(|c| c[1].to_owned())
}

fn body_count(dom: &str, name: &str) -> usize {
    attr(dom, "body", name)
        .unwrap_or_else(|| panic!("<body> has no {name}"))
        .parse()
        .unwrap()
}

fn ndjson(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn the_report_of_a_detect_run_loads_and_draws_every_service_alert_and_journey() {
    let dir = tempfile::tempdir().unwrap();
    let (events, _) = common::simulate(dir.path(), "bank", 232, 3.0);
    let out = dir.path().join("out");
    let rep = dir.path().join("report");
    apiwatch_ok(&["detect", "-i", events.to_str().unwrap(), "-o", out.to_str().unwrap()]);
    let said = apiwatch_ok(&["report", "-i", out.to_str().unwrap(), "-o", rep.to_str().unwrap()]);
    assert!(said.contains("index.html"), "{said}");
    let page = rep.join("index.html");
    let html = std::fs::read_to_string(&page).unwrap();
    // Self-contained: nothing to fetch.
    for outside in ["src=\"http", "href=\"http", "<link", "<script src", "url(http", "@import"] {
        assert!(!html.contains(outside), "the page refers outside itself: {outside}");
    }

    let metrics = ndjson(&out.join("metrics.ndjson"));
    let mut windows: BTreeMap<(String, String), usize> = BTreeMap::new();
    for m in &metrics {
        let key = (
            m["service.name"].as_str().unwrap().to_owned(),
            m["cloud.provider"].as_str().unwrap().to_owned(),
        );
        *windows.entry(key).or_default() += 1;
    }
    let alerts = ndjson(&out.join("alerts.ndjson"));
    let anomalies = ndjson(&out.join("anomalies.ndjson"));
    assert!(
        !alerts.is_empty() && anomalies.len() < 3000,
        "{} alerts, {} anomalies",
        alerts.len(),
        anomalies.len()
    );

    let l = load(&page);
    assert!(l.errors.is_empty(), "script errors: {:?}", l.errors);
    assert_eq!(attr(&l.dom, "body", "data-status").as_deref(), Some("ok"));
    assert_eq!(body_count(&l.dom, "data-cards"), windows.len());
    assert_eq!(body_count(&l.dom, "data-charts"), 3 * windows.len());
    assert_eq!(body_count(&l.dom, "data-alert-rows"), alerts.len());
    assert_eq!(body_count(&l.dom, "data-markers"), anomalies.len());
    // Every line has a point per window its service had, in every lane.
    let line = regex::Regex::new(r#"<div class="card[^"]*" data-service="([^"]+)">(?s:.*?)</svg>"#).unwrap();
    let points = regex::Regex::new(r#"class="line (traffic|errors|latency)"[^>]*data-points="(\d+)""#).unwrap();
    let mut cards = 0;
    for c in line.captures_iter(&l.dom) {
        let (service, provider) = c[1].rsplit_once('/').unwrap();
        let n = windows[&(service.to_owned(), provider.to_owned())];
        let drawn: Vec<(String, usize)> = points
            .captures_iter(&c[0])
            .map(|p| (p[1].to_owned(), p[2].parse().unwrap()))
            .collect();
        assert_eq!(drawn.len(), 3, "{}", &c[1]);
        // Latency and error rate have no point for a window without calls.
        assert_eq!(drawn[0].1, n, "{} traffic", &c[1]);
        assert!(drawn.iter().all(|(_, k)| *k <= n && *k + 5 >= n), "{}: {drawn:?} of {n}", &c[1]);
        cards += 1;
    }
    assert_eq!(cards, windows.len());
    // Every alert has its span drawn on at least the origin's timelines.
    let band = regex::Regex::new(r#"<rect class="band (P\d)[^"]*"[^>]*data-alert="(\d+)""#).unwrap();
    let banded: BTreeSet<usize> = band.captures_iter(&l.dom).map(|c| c[2].parse().unwrap()).collect();
    assert_eq!(banded, (0..alerts.len()).collect());
    assert_eq!(body_count(&l.dom, "data-bands"), band.find_iter(&l.dom).count());
    // The waterfall shows the entry call and every hop of the journey it names.
    let journey = attr(&l.dom, "id=\"waterfall\"", "data-journey").expect("no waterfall drawn");
    let j = ndjson(&out.join("journeys.ndjson"))
        .into_iter()
        .find(|j| j["journey.id"] == journey.as_str())
        .expect("the waterfall's journey is in journeys.ndjson");
    let hops = j["journey.hops"].as_array().unwrap().len();
    assert_eq!(l.dom.matches("<rect class=\"bar ").count(), hops + 1);
    assert_eq!(body_count(&l.dom, "data-waterfall-bars"), hops + 1);
}

/// A detect directory written by hand: one service whose name, route and alert text are markup.
fn hostile_output(dir: &Path) -> PathBuf {
    let out = dir.join("hostile");
    std::fs::create_dir_all(&out).unwrap();
    let name = r#"</script><img src=x onerror="document.title='owned'">"#;
    let mut metrics = String::new();
    for i in 0..30 {
        let m = serde_json::json!({
            "@timestamp": format!("2026-03-02T00:{i:02}:00Z"), "service.name": name, "cloud.provider": "aws",
            "calls": 100 + i, "errors_4xx": 0, "errors_5xx": i % 3, "p50_ms": 10.0, "p95_ms": 20.0 + i as f64, "p99_ms": 30.0
        });
        metrics.push_str(&format!("{m}\n"));
    }
    std::fs::write(out.join("metrics.ndjson"), metrics).unwrap();
    let alert = serde_json::json!({
        "@timestamp": "2026-03-02T00:12:00Z", "alert.id": "x", "alert.status": "open", "alert.priority": "P1",
        "alert.start": "2026-03-02T00:10:00Z", "service.name": name, "cloud.provider": "aws",
        "alert.services": [name], "alert.kinds": ["errors"], "alert.predicted": false,
        "alert.title": "<b onmouseover=alert(1)>title</b>", "alert.summary": "<iframe src=x></iframe>",
        "alert.anomaly_ids": [], "trace.id": []
    });
    std::fs::write(out.join("alerts.ndjson"), format!("{alert}\n")).unwrap();
    out
}

#[test]
fn text_from_the_logs_stays_text_in_the_page() {
    let dir = tempfile::tempdir().unwrap();
    let out = hostile_output(dir.path());
    let rep = dir.path().join("report");
    apiwatch_ok(&[
        "report",
        "-i",
        out.to_str().unwrap(),
        "-o",
        rep.to_str().unwrap(),
        "--title",
        "<i>t</i>",
    ]);
    let l = load(&rep.join("index.html"));
    assert!(l.errors.is_empty(), "script errors: {:?}", l.errors);
    assert_eq!(attr(&l.dom, "body", "data-status").as_deref(), Some("ok"));
    assert_eq!(body_count(&l.dom, "data-cards"), 1);
    assert_eq!(body_count(&l.dom, "data-alert-rows"), 1);
    for element in ["<img", "<iframe", "<b ", "<i>"] {
        assert!(!l.dom.contains(element), "markup from the data became an element: {element}");
    }
    assert!(l.dom.contains("&lt;iframe src=x&gt;"), "the summary is not shown as text");
    assert!(!l.dom.contains("<title>owned"));
    // No journeys and no services.json: said, not broken.
    assert!(l.dom.contains("No journeys were reconstructed"));
}

/// The checks above can fail: a page with a script error, or with data it cannot read, is caught.
#[test]
fn a_broken_page_is_caught() {
    let dir = tempfile::tempdir().unwrap();
    let out = hostile_output(dir.path());
    let rep = dir.path().join("report");
    apiwatch_ok(&["report", "-i", out.to_str().unwrap(), "-o", rep.to_str().unwrap()]);
    let html = std::fs::read_to_string(rep.join("index.html")).unwrap();

    let thrown = rep.join("thrown.html");
    std::fs::write(&thrown, html.replace("</body>", "<script>undefinedFunction()</script></body>")).unwrap();
    let l = load(&thrown);
    assert!(l.errors.iter().any(|e| e.contains("undefinedFunction")), "{:?}", l.errors);

    let unreadable = rep.join("unreadable.html");
    let start = html.find("id=\"apiwatch-data\">").unwrap() + "id=\"apiwatch-data\">".len();
    std::fs::write(&unreadable, format!("{}{{\"services\": 3{}", &html[..start], &html[start + 1..])).unwrap();
    let l = load(&unreadable);
    assert_eq!(attr(&l.dom, "body", "data-status").as_deref(), Some("failed"));
    assert!(!l.errors.is_empty());
}
