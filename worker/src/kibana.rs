//! `apiwatch setup --kibana URL`: imports the bundled saved objects (data views, Lens
//! visualizations, saved searches, the five dashboards; `kibana/apiwatch-saved-objects.ndjson`)
//! through Kibana's saved-objects import API, overwriting earlier versions of the same ids.
//! Credentials are Elasticsearch's (`APIWATCH_ES_*`), which Kibana accepts for its API.

use std::path::Path;
use std::time::Duration;

use anyhow::Context;

use crate::es::client::Credentials;

/// The saved objects, compiled in so the binary alone can set Kibana up.
pub const SAVED_OBJECTS: &str = include_str!("../../kibana/apiwatch-saved-objects.ndjson");

/// What Kibana said about an import.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportOutcome {
    pub imported: u64,
    /// `type/id: why` of every object Kibana refused.
    pub refused: Vec<String>,
}

/// Sends the saved objects to `url`'s `/api/saved_objects/_import?overwrite=true`.
pub fn import_saved_objects(url: &str, credentials: &Credentials, ca_cert: Option<&Path>) -> anyhow::Result<ImportOutcome> {
    let agent = crate::http::agent(Duration::from_secs(60), ca_cert)?;
    let boundary = "apiwatch-saved-objects-7f3a9c";
    let mut body = Vec::new();
    body.extend_from_slice(
        format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"apiwatch-saved-objects.ndjson\"\r\nContent-Type: application/ndjson\r\n\r\n"
        )
        .as_bytes(),
    );
    body.extend_from_slice(SAVED_OBJECTS.as_bytes());
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    let endpoint = format!("{}/api/saved_objects/_import?overwrite=true", url.trim_end_matches('/'));
    let mut req = agent
        .post(&endpoint)
        // Kibana refuses API writes without it (its CSRF guard).
        .header("kbn-xsrf", "apiwatch")
        .header("Content-Type", &format!("multipart/form-data; boundary={boundary}"));
    if let Some(a) = credentials.header() {
        req = req.header("Authorization", &a);
    }
    let mut resp = req
        .send(&body[..])
        .with_context(|| format!("cannot reach Kibana at {url}: is it running, and is the URL right?"))?;
    let status = resp.status().as_u16();
    let text = resp.body_mut().read_to_string().unwrap_or_default();
    anyhow::ensure!(
        status == 200,
        "Kibana at {url} refused the import with HTTP {status}: {}{}",
        text.chars().take(500).collect::<String>(),
        if status == 401 || status == 403 {
            " (set APIWATCH_ES_USERNAME/PASSWORD or APIWATCH_ES_API_KEY)"
        } else {
            ""
        }
    );
    parse_outcome(&text).with_context(|| format!("Kibana at {url} answered the import with something unexpected"))
}

fn parse_outcome(text: &str) -> anyhow::Result<ImportOutcome> {
    let v: serde_json::Value = serde_json::from_str(text)?;
    let imported = v["successCount"].as_u64().context("no successCount")?;
    let refused = v["errors"]
        .as_array()
        .map(|errs| {
            errs.iter()
                .map(|e| {
                    format!(
                        "{}/{}: {}",
                        e["type"].as_str().unwrap_or("?"),
                        e["id"].as_str().unwrap_or("?"),
                        e["error"]["type"].as_str().unwrap_or("refused")
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    Ok(ImportOutcome { imported, refused })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_http::receiver;

    #[test]
    fn the_import_sends_every_object_as_kibana_expects_and_reads_the_answer() {
        let (url, h) = receiver(vec![(200, r#"{"success":true,"successCount":28,"successResults":[]}"#)]);
        let creds = Credentials::Basic {
            username: "elastic".into(),
            password: "pw".into(),
        };
        let out = import_saved_objects(&url, &creds, None).unwrap();
        assert_eq!(
            out,
            ImportOutcome {
                imported: 28,
                refused: vec![]
            }
        );
        let got = h.join().unwrap();
        let r = &got[0];
        assert!(r.head.starts_with("POST /api/saved_objects/_import?overwrite=true "), "{}", r.head);
        assert_eq!(r.header("kbn-xsrf").as_deref(), Some("apiwatch"));
        assert!(r.header("authorization").unwrap().starts_with("Basic "));
        assert!(r.header("content-type").unwrap().starts_with("multipart/form-data; boundary="));
        let body = String::from_utf8(r.body.clone()).unwrap();
        assert!(body.contains("name=\"file\"; filename=\"apiwatch-saved-objects.ndjson\""));
        assert!(body.contains(SAVED_OBJECTS));
    }

    #[test]
    fn refusals_are_reported_by_object() {
        let (url, h) = receiver(vec![
            (
                200,
                r#"{"success":false,"successCount":27,"errors":[{"id":"apiwatch-calls","type":"index-pattern","error":{"type":"conflict"}}]}"#,
            ),
            (401, r#"{"statusCode":401}"#),
        ]);
        let out = import_saved_objects(&url, &Credentials::None, None).unwrap();
        assert_eq!(out.refused, vec!["index-pattern/apiwatch-calls: conflict".to_owned()]);
        let err = import_saved_objects(&url, &Credentials::None, None).unwrap_err().to_string();
        assert!(err.contains("HTTP 401") && err.contains("APIWATCH_ES_USERNAME"), "{err}");
        h.join().unwrap();
    }
}
