//! The Elasticsearch client: the official `elasticsearch` crate's transport on tokio, with JSON
//! requests, `_bulk` with per-item results, and retries with jittered exponential backoff for
//! what is worth retrying (transport errors, 429, 502-504). Credentials come from the
//! environment and are never printed. Synchronous callers (the job loop and its reader and
//! writer threads) wait for it through [`block_on`].
//!
//! Several node URLs (`--es URL1,URL2`) make a [`NodePool`]: requests go round the nodes that
//! answer; a node that fails at the transport level is left out for a back-off and the request
//! goes to the next one at once, so a node dying costs no retry wait while another is up.

use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use bytes::Bytes;
use elasticsearch::cert::{Certificate, CertificateValidation};
use elasticsearch::http::headers::{HeaderMap, HeaderValue, CONTENT_TYPE};
use elasticsearch::http::transport::{Connection, ConnectionPool, Transport, TransportBuilder};
use elasticsearch::http::{Method, Url};
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
    #[error("the client's async runtime could not start: {0} (out of threads or memory?)")]
    Runtime(String),
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

    /// The same credentials for the official client.
    fn official(&self) -> Option<elasticsearch::auth::Credentials> {
        match self {
            Credentials::None => None,
            Credentials::Basic { username, password } => Some(elasticsearch::auth::Credentials::Basic(username.clone(), password.clone())),
            Credentials::ApiKey(k) => Some(elasticsearch::auth::Credentials::EncodedApiKey(k.clone())),
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
    /// The official client's handle on the node.
    connection: Connection,
    /// `scheme://host:port`, to recognise the node in a failed request's URL.
    origin: String,
    /// Milliseconds since the pool was made until which the node is left out (0: in).
    out_until: AtomicU64,
    /// Transport failures in a row.
    failures: AtomicU32,
}

/// The cluster's nodes as the client sees them: round-robin over those that answer; a node that
/// fails is left out for 1 s, doubling with each failure in a row up to 60 s. When every node is
/// out, the one due back first is tried (the caller's retry policy paces the attempts).
///
/// The official client's pools either stay on one node or go round all of them without ever
/// leaving one out, so this is the pool its transport draws from (see [`FailoverPool`]).
#[derive(Debug)]
pub struct NodePool {
    nodes: Vec<Node>,
    turn: AtomicUsize,
    epoch: Instant,
}

impl NodePool {
    const MAX_OUT_MS: u64 = 60_000;

    /// The nodes of a comma-separated URL list.
    pub fn new(urls: &str) -> Result<Self, EsError> {
        let mut nodes = Vec::new();
        for u in urls.split(',').map(|u| u.trim().trim_end_matches('/')).filter(|u| !u.is_empty()) {
            let parsed = Url::parse(u).map_err(|e| EsError::Unreachable {
                url: u.to_owned(),
                reason: format!("not a URL: {e}"),
            })?;
            nodes.push(Node {
                url: u.to_owned(),
                origin: parsed.origin().ascii_serialization(),
                connection: Connection::new(parsed),
                out_until: AtomicU64::new(0),
                failures: AtomicU32::new(0),
            });
        }
        Ok(NodePool {
            nodes,
            turn: AtomicUsize::new(0),
            epoch: Instant::now(),
        })
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

    /// The node a request went to, from its URL.
    fn node_of(&self, url: &Url) -> Option<usize> {
        let origin = url.origin().ascii_serialization();
        self.nodes.iter().position(|n| n.origin == origin)
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

/// The official client's [`ConnectionPool`] over a [`NodePool`]: the transport asks it for the
/// next connection; [`EsClient`] tells the node pool which node failed or answered.
#[derive(Debug, Clone)]
struct FailoverPool(Arc<NodePool>);

impl ConnectionPool for FailoverPool {
    fn next(&self) -> Connection {
        self.0.nodes[self.0.pick()].connection.clone()
    }
}

/// The one async runtime the Elasticsearch transport runs on (its connections belong to it).
fn runtime() -> Result<&'static tokio::runtime::Runtime, EsError> {
    static RUNTIME: std::sync::OnceLock<Result<tokio::runtime::Runtime, String>> = std::sync::OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .thread_name("apiwatch-es")
                .enable_all()
                .build()
                .map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(|e| EsError::Runtime(e.clone()))
}

/// Runs a future on `rt` to completion from synchronous code (the job loop, readers and
/// writers run on their own threads; CPU work stays off the runtime). Inside an async context
/// the current worker thread is handed over to blocking first.
fn block_on<F: std::future::Future>(rt: &tokio::runtime::Runtime, fut: F) -> F::Output {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => tokio::task::block_in_place(|| rt.block_on(fut)),
        _ => rt.block_on(fut),
    }
}

/// The Elasticsearch client: the official `elasticsearch` crate's transport on tokio, over a
/// [`NodePool`], with what the crate does not do: retries of transient failures with the shared
/// jittered backoff, failover to the next node, statuses as values, errors that say what to do.
#[derive(Clone)]
pub struct EsClient {
    transport: Transport,
    rt: &'static tokio::runtime::Runtime,
    opts: Arc<ClientOptions>,
    pool: Arc<NodePool>,
}

impl std::fmt::Debug for EsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "EsClient({}, {})", self.opts.url, self.opts.credentials.describe())
    }
}

impl EsClient {
    pub fn new(opts: ClientOptions) -> Result<Self, EsError> {
        let pool = Arc::new(NodePool::new(&opts.url)?);
        if pool.is_empty() {
            return Err(EsError::Unreachable {
                url: opts.url.clone(),
                reason: "no node URL given".into(),
            });
        }
        let mut builder = TransportBuilder::new(FailoverPool(pool.clone())).timeout(opts.timeout);
        if let Some(c) = opts.credentials.official() {
            builder = builder.auth(c);
        }
        if let Some(path) = &opts.ca_cert {
            let pem = std::fs::read(path).map_err(|e| EsError::Tls(format!("cannot read CA certificate {}: {e}", path.display())))?;
            if !String::from_utf8_lossy(&pem).contains("-----BEGIN CERTIFICATE-----") {
                return Err(EsError::Tls(format!("{} holds no PEM certificate", path.display())));
            }
            let cert = Certificate::from_pem(&pem).map_err(|e| EsError::Tls(format!("CA certificate {}: {e}", path.display())))?;
            builder = builder.cert_validation(CertificateValidation::Full(cert));
        }
        // Building the HTTP client needs the runtime's context (its connection pool lives there).
        let rt = runtime()?;
        let transport = {
            let _guard = rt.enter();
            builder.build().map_err(|e| EsError::Tls(e.to_string()))?
        };
        Ok(EsClient {
            transport,
            rt,
            opts: Arc::new(opts),
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
    async fn once(&self, method: &'static str, path: &str, body: Option<&(Bytes, &'static str)>) -> Result<(u16, Bytes), EsError> {
        let mut last = None;
        for _ in 0..self.pool.len() {
            match self.once_at_next(method, path, body).await {
                Err((e @ EsError::Unreachable { .. }, Some(i))) => {
                    self.pool.failed(i);
                    last = Some(e);
                }
                Err((e, _)) => return Err(e),
                Ok((i, status, bytes)) => {
                    if let Some(i) = i {
                        self.pool.answered(i);
                    }
                    return Ok((status, bytes));
                }
            }
        }
        Err(last.unwrap_or_else(|| EsError::Unreachable {
            url: self.opts.url.clone(),
            reason: "no node URL given".into(),
        }))
    }

    /// Sends through the transport, which takes the next node from the pool; says which node
    /// that was, from the response's or the error's URL.
    #[allow(clippy::type_complexity)]
    async fn once_at_next(
        &self,
        method: &'static str,
        path: &str,
        body: Option<&(Bytes, &'static str)>,
    ) -> Result<(Option<usize>, u16, Bytes), (EsError, Option<usize>)> {
        let verb = match method {
            "GET" => Method::Get,
            "PUT" => Method::Put,
            "DELETE" => Method::Delete,
            "HEAD" => Method::Head,
            _ => Method::Post,
        };
        let mut headers = HeaderMap::new();
        if let Some((_, ctype)) = body {
            headers.insert(CONTENT_TYPE, HeaderValue::from_static(ctype));
        }
        let sent = self
            .transport
            .send(verb, path, headers, None::<&()>, body.map(|(b, _)| b.clone()), None)
            .await;
        let response = match sent {
            Ok(r) => r,
            Err(e) => {
                let url = transport_error_url(&e);
                let node = url.and_then(|u| self.pool.node_of(u));
                let url = node.map_or_else(|| self.opts.url.clone(), |i| self.pool.nodes[i].url.clone());
                return Err((
                    EsError::Unreachable {
                        url,
                        reason: error_chain(&e),
                    },
                    node,
                ));
            }
        };
        let node = self.pool.node_of(response.url());
        let status = response.status_code().as_u16();
        let bytes = response.bytes().await.map_err(|e| {
            (
                EsError::Unreachable {
                    url: node.map_or_else(|| self.opts.url.clone(), |i| self.pool.nodes[i].url.clone()),
                    reason: format!("reading the response: {}", error_chain(&e)),
                },
                None,
            )
        })?;
        Ok((node, status, bytes))
    }

    /// A request with retries for transient failures, on the async runtime. Returns the status
    /// and the body; a non-2xx status that is not transient comes back as a value, for callers
    /// that expect it (404 on a missing document, 409 on a version conflict).
    pub async fn send(&self, method: &'static str, path: &str, body: Option<(Bytes, &'static str)>) -> Result<(u16, Bytes), EsError> {
        let body = body.as_ref();
        let result = self
            .opts
            .retry
            .run_async(
                |_| self.once(method, path, body),
                |result| match result {
                    Err(e) => e.is_transient(),
                    Ok((status, _)) => is_retryable_status(*status),
                },
                |result, attempt, wait| match result {
                    Err(e) => tracing::warn!(%e, attempt, wait_ms = wait.as_millis() as u64, "retrying"),
                    Ok((status, _)) => tracing::warn!(status, method, path, attempt, wait_ms = wait.as_millis() as u64, "busy, retrying"),
                },
            )
            .await;
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

    /// [`EsClient::send`] from synchronous code.
    pub fn send_raw(&self, method: &'static str, path: &str, body: Option<(&[u8], &'static str)>) -> Result<(u16, Bytes), EsError> {
        self.send_blocking(method, path, body.map(|(b, t)| (Bytes::copy_from_slice(b), t)))
    }

    /// Runs the request as a task of the runtime and waits for its end: the connection's reads
    /// and the task's wake-ups stay on the runtime's threads (one hand-over per request, not one
    /// per packet as when the caller's thread polls the request itself).
    fn send_blocking(&self, method: &'static str, path: &str, body: Option<(Bytes, &'static str)>) -> Result<(u16, Bytes), EsError> {
        let client = self.clone();
        let owned_path = path.to_owned();
        let task = self.rt.spawn(async move { client.send(method, &owned_path, body).await });
        block_on(self.rt, task).unwrap_or_else(|e| {
            Err(EsError::Unreachable {
                url: self.opts.url.clone(),
                reason: format!("the request to {path} ended abnormally: {e}"),
            })
        })
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
        let text = body.map(|b| Bytes::from(serde_json::to_vec(b).unwrap_or_default()));
        let (status, bytes) = self.send_blocking(method, path, text.map(|t| (t, "application/json")))?;
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

/// The URL a failed request went to, when the HTTP layer knows it.
fn transport_error_url(e: &elasticsearch::Error) -> Option<&Url> {
    std::error::Error::source(e)
        .and_then(|s| s.downcast_ref::<reqwest::Error>())
        .and_then(reqwest::Error::url)
}

/// An error with its causes, on one line (the HTTP layer's own message is terse).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cause = c.source();
    }
    out
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
        let pool = NodePool::new("http://a:9200/, http://b:9200,http://c:9200").unwrap();
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
