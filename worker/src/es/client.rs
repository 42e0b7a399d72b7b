//! A small blocking Elasticsearch client over HTTP(S): JSON requests, `_bulk` with per-item
//! results, and retries with jittered exponential backoff for what is worth retrying (transport
//! errors, 429, 502-504). Credentials come from the environment and are never printed.
//!
//! Several node URLs (`--es URL1,URL2`) make a [`NodePool`]: requests go round the nodes that
//! answer; a node that fails at the transport level is left out for a back-off and the request
//! goes to the next one at once, so a node dying costs no retry wait while another is up.

use std::io::Read;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::Value;

pub use crate::retry::{is_retryable_status, RetryPolicy};

/// Why a request failed, so callers can tell "wait and retry" from "fix something".
#[derive(Debug, thiserror::Error)]
pub enum EsError {
    #[error("Elasticsearch at {url} is unreachable: {reason} (is it running? check the URL and the network)")]
    Unreachable { url: String, reason: String },
    #[error("Elasticsearch refused the credentials ({status}) for {method} {path}: set APIWATCH_ES_API_KEY or APIWATCH_ES_USERNAME/APIWATCH_ES_PASSWORD")]
    Auth { status: u16, method: &'static str, path: String },
    #[error("{method} {path} failed with {status}: {reason}")]
    Status {
        status: u16,
        method: &'static str,
        path: String,
        reason: String,
    },
    #[error("{method} {path}: unreadable response: {reason}")]
    Decode {
        method: &'static str,
        path: String,
        reason: String,
    },
    #[error("TLS setup: {0}")]
    Tls(String),
    #[error("a bundled template is not valid JSON ({0}): this build is broken, report it")]
    Template(String),
}

impl EsError {
    pub fn status(status: u16, method: &'static str, path: impl Into<String>, reason: impl Into<String>) -> Self {
        EsError::Status {
            status,
            method,
            path: path.into(),
            reason: reason.into(),
        }
    }

    /// Errors that a later attempt may not meet (server busy or away).
    pub fn is_transient(&self) -> bool {
        match self {
            EsError::Unreachable { .. } => true,
            EsError::Status { status, .. } => is_retryable_status(*status),
            _ => false,
        }
    }
}

/// How to authenticate.
#[derive(Clone, Default)]
pub enum Credentials {
    #[default]
    None,
    Basic {
        username: String,
        password: String,
    },
    ApiKey(String),
}

impl Credentials {
    /// From `APIWATCH_ES_API_KEY`, or `APIWATCH_ES_USERNAME` and `APIWATCH_ES_PASSWORD`.
    pub fn from_env() -> Self {
        let get = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        if let Some(key) = get("APIWATCH_ES_API_KEY") {
            return Credentials::ApiKey(key);
        }
        match (get("APIWATCH_ES_USERNAME"), get("APIWATCH_ES_PASSWORD")) {
            (Some(username), Some(password)) => Credentials::Basic { username, password },
            _ => Credentials::None,
        }
    }

    pub(crate) fn header(&self) -> Option<String> {
        match self {
            Credentials::None => None,
            Credentials::Basic { username, password } => Some(format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"))
            )),
            Credentials::ApiKey(k) => Some(format!("ApiKey {k}")),
        }
    }

    /// What kind of credentials, for logs (never the secret).
    pub fn describe(&self) -> &'static str {
        match self {
            Credentials::None => "no credentials",
            Credentials::Basic { .. } => "user/password",
            Credentials::ApiKey(_) => "API key",
        }
    }
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.describe())
    }
}

/// How a client connects.
#[derive(Clone, Debug)]
pub struct ClientOptions {
    pub url: String,
    pub credentials: Credentials,
    /// PEM file of the CA that signed the server's certificate (self-managed clusters).
    pub ca_cert: Option<std::path::PathBuf>,
    pub timeout: Duration,
    /// Tries for a transient failure before giving up (the live worker then waits and
    /// starts the poll again), and the waits between them.
    pub retry: RetryPolicy,
}

impl ClientOptions {
    pub fn new(url: &str) -> Self {
        ClientOptions {
            url: url.split(',').map(|u| u.trim().trim_end_matches('/')).collect::<Vec<_>>().join(","),
            credentials: Credentials::from_env(),
            ca_cert: None,
            timeout: Duration::from_secs(60),
            retry: RetryPolicy {
                max_attempts: 6,
                base_delay: Duration::from_millis(200),
                max_delay: Duration::from_secs(30),
            },
        }
    }
}

/// The result of one `_bulk` item.
#[derive(Debug, Clone)]
pub struct BulkItem {
    pub status: u16,
    pub index: String,
    pub id: String,
    /// `type: reason` when the item failed.
    pub error: Option<String>,
}

/// One node of the pool, and since when it is left out.
#[derive(Debug)]
struct Node {
    url: String,
    /// Milliseconds since the pool was made until which the node is left out (0: in).
    out_until: AtomicU64,
    /// Transport failures in a row.
    failures: AtomicU32,
}

/// The cluster's nodes as the client sees them: round-robin over those that answer; a node that
/// fails is left out for 1 s, doubling with each failure in a row up to 60 s. When every node is
/// out, the one due back first is tried (the caller's retry policy paces the attempts).
#[derive(Debug)]
pub struct NodePool {
    nodes: Vec<Node>,
    turn: AtomicUsize,
    epoch: Instant,
}

impl NodePool {
    const MAX_OUT_MS: u64 = 60_000;

    /// The nodes of a comma-separated URL list.
    pub fn new(urls: &str) -> Self {
        NodePool {
            nodes: urls
                .split(',')
                .map(|u| u.trim().trim_end_matches('/'))
                .filter(|u| !u.is_empty())
                .map(|u| Node {
                    url: u.to_owned(),
                    out_until: AtomicU64::new(0),
                    failures: AtomicU32::new(0),
                })
                .collect(),
            turn: AtomicUsize::new(0),
            epoch: Instant::now(),
        }
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The node to send the next request to.
    fn pick(&self) -> usize {
        let n = self.nodes.len();
        if n <= 1 {
            return 0;
        }
        let now = self.now_ms();
        let first = self.turn.fetch_add(1, Ordering::Relaxed);
        (0..n)
            .map(|k| (first + k) % n)
            .find(|&i| self.nodes[i].out_until.load(Ordering::Relaxed) <= now)
            .unwrap_or_else(|| (0..n).min_by_key(|&i| self.nodes[i].out_until.load(Ordering::Relaxed)).unwrap_or(0))
    }

    fn failed(&self, i: usize) {
        let node = &self.nodes[i];
        let failures = node.failures.fetch_add(1, Ordering::Relaxed).min(16);
        let out = (1000u64 << failures).min(Self::MAX_OUT_MS);
        node.out_until.store(self.now_ms() + out, Ordering::Relaxed);
        if self.nodes.len() > 1 {
            tracing::warn!(node = %node.url, out_ms = out, "Elasticsearch node unreachable: left out, the others take its requests");
        }
    }

    fn answered(&self, i: usize) {
        let node = &self.nodes[i];
        if node.failures.swap(0, Ordering::Relaxed) > 0 {
            node.out_until.store(0, Ordering::Relaxed);
            if self.nodes.len() > 1 {
                tracing::info!(node = %node.url, "Elasticsearch node answers again");
            }
        }
    }

    /// The nodes currently left out.
    #[cfg(test)]
    fn out(&self) -> Vec<&str> {
        let now = self.now_ms();
        self.nodes
            .iter()
            .filter(|n| n.out_until.load(Ordering::Relaxed) > now)
            .map(|n| n.url.as_str())
            .collect()
    }
}

#[derive(Clone)]
pub struct EsClient {
    agent: ureq::Agent,
    opts: Arc<ClientOptions>,
    auth: Option<String>,
    pool: Arc<NodePool>,
}

impl std::fmt::Debug for EsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "EsClient({}, {})", self.opts.url, self.opts.credentials.describe())
    }
}

impl EsClient {
    pub fn new(opts: ClientOptions) -> Result<Self, EsError> {
        let agent = crate::http::agent(opts.timeout, opts.ca_cert.as_deref()).map_err(|e| EsError::Tls(e.0))?;
        let auth = opts.credentials.header();
        let pool = Arc::new(NodePool::new(&opts.url));
        if pool.is_empty() {
            return Err(EsError::Unreachable {
                url: opts.url.clone(),
                reason: "no node URL given".into(),
            });
        }
        Ok(EsClient {
            agent,
            opts: Arc::new(opts),
            auth,
            pool,
        })
    }

    /// The options the client was made with (its retry policy, for callers' own retries).
    pub fn options(&self) -> &ClientOptions {
        &self.opts
    }

    /// The node URLs as given (comma-separated when several).
    pub fn url(&self) -> &str {
        &self.opts.url
    }

    /// What kind of credentials this client sends (never the secret).
    pub fn credentials(&self) -> &'static str {
        self.opts.credentials.describe()
    }

    /// One attempt: (status, body). A node that cannot be reached hands the request to the next
    /// node at once (each node at most once per attempt).
    fn once(&self, method: &'static str, path: &str, body: Option<(&[u8], &str)>) -> Result<(u16, Vec<u8>), EsError> {
        let mut last = None;
        for _ in 0..self.pool.len() {
            let i = self.pool.pick();
            match self.once_at(&self.pool.nodes[i].url, method, path, body) {
                Err(e @ EsError::Unreachable { .. }) => {
                    self.pool.failed(i);
                    last = Some(e);
                }
                result => {
                    self.pool.answered(i);
                    return result;
                }
            }
        }
        Err(last.unwrap_or_else(|| EsError::Unreachable {
            url: self.opts.url.clone(),
            reason: "no node URL given".into(),
        }))
    }

    fn once_at(&self, node: &str, method: &'static str, path: &str, body: Option<(&[u8], &str)>) -> Result<(u16, Vec<u8>), EsError> {
        let url = format!("{node}{path}");
        let unreachable = |e: ureq::Error| EsError::Unreachable {
            url: node.to_owned(),
            reason: e.to_string(),
        };
        let result = match method {
            "GET" | "DELETE" | "HEAD" if body.is_none() => {
                let mut b = match method {
                    "GET" => self.agent.get(&url),
                    "HEAD" => self.agent.head(&url),
                    _ => self.agent.delete(&url),
                };
                if let Some(a) = &self.auth {
                    b = b.header("Authorization", a);
                }
                b.call()
            }
            _ => {
                let mut b = match method {
                    "PUT" => self.agent.put(&url),
                    "GET" => self.agent.get(&url).force_send_body(),
                    "DELETE" => self.agent.delete(&url).force_send_body(),
                    _ => self.agent.post(&url),
                };
                if let Some(a) = &self.auth {
                    b = b.header("Authorization", a);
                }
                let (bytes, ctype) = body.unwrap_or((b"", "application/json"));
                b.header("Content-Type", ctype).send(bytes)
            }
        };
        let mut resp = result.map_err(unreachable)?;
        let status = resp.status().as_u16();
        let mut out = Vec::new();
        resp.body_mut()
            .with_config()
            .limit(1 << 30)
            .reader()
            .read_to_end(&mut out)
            .map_err(|e| EsError::Unreachable {
                url: node.to_owned(),
                reason: format!("reading the response: {e}"),
            })?;
        Ok((status, out))
    }

    /// A request with retries for transient failures. Returns the status and the body; a
    /// non-2xx status that is not transient comes back as a value, for callers that expect it
    /// (404 on a missing document, 409 on a version conflict).
    pub fn send_raw(&self, method: &'static str, path: &str, body: Option<(&[u8], &str)>) -> Result<(u16, Vec<u8>), EsError> {
        let result = self.opts.retry.run(
            |_| self.once(method, path, body),
            |result| match result {
                Err(e) => e.is_transient(),
                Ok((status, _)) => is_retryable_status(*status),
            },
            |result, attempt, wait| match result {
                Err(e) => tracing::warn!(%e, attempt, wait_ms = wait.as_millis() as u64, "retrying"),
                Ok((status, _)) => tracing::warn!(status, method, path, attempt, wait_ms = wait.as_millis() as u64, "busy, retrying"),
            },
        );
        let (status, bytes) = result?;
        if status == 401 || status == 403 {
            return Err(EsError::Auth {
                status,
                method,
                path: path.to_owned(),
            });
        }
        Ok((status, bytes))
    }

    /// A JSON request that must succeed (2xx).
    pub fn json(&self, method: &'static str, path: &str, body: Option<&Value>) -> Result<Value, EsError> {
        let (status, v) = self.json_status(method, path, body)?;
        if !(200..300).contains(&status) {
            return Err(EsError::status(
                status,
                method,
                path.to_owned(),
                v.get("error").map_or_else(|| v.to_string(), describe_error),
            ));
        }
        Ok(v)
    }

    /// A JSON request; the status comes back with the parsed body whatever it is.
    pub fn json_status(&self, method: &'static str, path: &str, body: Option<&Value>) -> Result<(u16, Value), EsError> {
        let text = body.map(|b| serde_json::to_vec(b).unwrap_or_default());
        let (status, bytes) = self.send_raw(method, path, text.as_deref().map(|t| (t, "application/json")))?;
        if bytes.is_empty() {
            return Ok((status, Value::Null));
        }
        let v = serde_json::from_slice(&bytes).map_err(|e| EsError::Decode {
            method,
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
        Ok((status, v))
    }

    /// Sends an NDJSON `_bulk` body; returns every item's result in order.
    pub fn bulk(&self, body: &[u8]) -> Result<Vec<BulkItem>, EsError> {
        let (status, bytes) = self.send_raw("POST", "/_bulk", Some((body, "application/x-ndjson")))?;
        if !(200..300).contains(&status) {
            return Err(EsError::status(status, "POST", "/_bulk", error_reason(&bytes)));
        }
        #[derive(serde::Deserialize)]
        struct Resp {
            items: Vec<std::collections::HashMap<String, ItemResp>>,
        }
        #[derive(serde::Deserialize)]
        struct ItemResp {
            status: u16,
            #[serde(default, rename = "_index")]
            index: String,
            #[serde(default, rename = "_id")]
            id: String,
            error: Option<Value>,
        }
        let r: Resp = serde_json::from_slice(&bytes).map_err(|e| EsError::Decode {
            method: "POST",
            path: "/_bulk".into(),
            reason: e.to_string(),
        })?;
        Ok(r.items
            .into_iter()
            .filter_map(|m| m.into_values().next())
            .map(|i| BulkItem {
                status: i.status,
                index: i.index,
                id: i.id,
                error: i.error.map(|e| describe_error(&e)),
            })
            .collect())
    }

    /// Waits until the cluster answers and is at least yellow.
    pub fn health(&self) -> Result<Value, EsError> {
        self.json("GET", "/_cluster/health?wait_for_status=yellow&timeout=30s", None)
    }
}

/// `type: reason` from an Elasticsearch error body.
pub fn error_reason(bytes: &[u8]) -> String {
    match serde_json::from_slice::<Value>(bytes) {
        Ok(v) => match v.get("error") {
            Some(e) => describe_error(e),
            None => truncate(&String::from_utf8_lossy(bytes), 300),
        },
        Err(_) => truncate(&String::from_utf8_lossy(bytes), 300),
    }
}

fn describe_error(e: &Value) -> String {
    match e {
        Value::String(s) => s.clone(),
        _ => {
            let kind = e.get("type").and_then(Value::as_str).unwrap_or("error");
            let reason = e.get("reason").and_then(Value::as_str).unwrap_or("");
            let cause = e
                .get("caused_by")
                .and_then(|c| c.get("reason"))
                .and_then(Value::as_str)
                .map(|c| format!(" (caused by: {c})"))
                .unwrap_or_default();
            format!("{kind}: {reason}{cause}")
        }
    }
}

fn truncate(s: &str, n: usize) -> String {
    if s.len() <= n {
        s.to_owned()
    } else {
        let mut end = n;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}…", &s[..end])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_do_not_show_in_debug_output() {
        let c = Credentials::Basic {
            username: "elastic".into(),
            password: "hunter2-secret".into(),
        };
        let opts = ClientOptions {
            credentials: c,
            ..ClientOptions::new("http://127.0.0.1:1")
        };
        let client = EsClient::new(opts.clone()).unwrap();
        for text in [format!("{opts:?}"), format!("{client:?}")] {
            assert!(!text.contains("hunter2"), "{text}");
            assert!(text.contains("user/password"), "{text}");
        }
    }

    #[test]
    fn error_bodies_become_one_line() {
        let body = br#"{"error":{"type":"mapper_parsing_exception","reason":"failed to parse field [http.response.status_code]","caused_by":{"type":"number_format_exception","reason":"For input string: \"abc\""}},"status":400}"#;
        let r = error_reason(body);
        assert!(r.starts_with("mapper_parsing_exception: failed to parse field"), "{r}");
        assert!(r.contains("For input string"), "{r}");
        assert_eq!(error_reason(b"plain text"), "plain text");
    }

    #[test]
    fn an_unreachable_server_is_a_transient_error_naming_the_url() {
        let opts = ClientOptions {
            retry: RetryPolicy {
                max_attempts: 2,
                base_delay: Duration::from_millis(1),
                max_delay: Duration::from_millis(1),
            },
            timeout: Duration::from_secs(2),
            ..ClientOptions::new("http://127.0.0.1:9")
        };
        let err = EsClient::new(opts).unwrap().health().unwrap_err();
        assert!(err.is_transient());
        assert!(err.to_string().contains("127.0.0.1:9"), "{err}");
    }

    #[test]
    fn a_failing_node_is_left_out_with_a_growing_back_off_and_taken_back_when_it_answers() {
        let pool = NodePool::new("http://a:9200/, http://b:9200,http://c:9200");
        assert_eq!(pool.len(), 3);
        let picks: Vec<usize> = (0..6).map(|_| pool.pick()).collect();
        assert_eq!(picks, [0, 1, 2, 0, 1, 2], "round-robin while all answer");
        pool.failed(1);
        assert_eq!(pool.out(), ["http://b:9200"]);
        assert!((0..6).map(|_| pool.pick()).all(|i| i != 1), "b is left out");
        let first = pool.nodes[1].out_until.load(Ordering::Relaxed);
        pool.failed(1);
        assert!(
            pool.nodes[1].out_until.load(Ordering::Relaxed) >= first + 1000,
            "the back-off doubles"
        );
        pool.failed(0);
        pool.failed(2);
        // All out: the one due back first is tried rather than none.
        let due_first = (0..3).min_by_key(|&i| pool.nodes[i].out_until.load(Ordering::Relaxed)).unwrap();
        assert_eq!(pool.pick(), due_first);
        pool.answered(1);
        assert!(!pool.out().contains(&"http://b:9200"));
        assert_eq!(pool.nodes[1].failures.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn a_request_goes_to_the_next_node_when_one_is_down() {
        // Node 1 refuses connections (nothing listens); node 2 is a one-shot HTTP responder.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            use std::io::Write;
            let (mut s, _) = listener.accept().unwrap();
            let mut buf = [0u8; 4096];
            let _ = std::io::Read::read(&mut s, &mut buf);
            let body = r#"{"status":"green"}"#;
            write!(
                s,
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            )
            .unwrap();
        });
        let opts = ClientOptions {
            timeout: Duration::from_secs(5),
            ..ClientOptions::new(&format!("http://127.0.0.1:9,http://127.0.0.1:{port}"))
        };
        let client = EsClient::new(opts).unwrap();
        let v = client.json("GET", "/_cluster/health", None).unwrap();
        assert_eq!(v["status"], "green");
        assert_eq!(client.pool.out(), ["http://127.0.0.1:9"]);
        server.join().unwrap();
    }
}
