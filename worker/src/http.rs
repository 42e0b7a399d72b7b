//! The one HTTP agent every outgoing call outside Elasticsearch uses (Kibana, webhooks,
//! PagerDuty; Elasticsearch goes through the official client in `es::client`): the project's
//! user agent, a timeout, statuses as values (callers decide what an error is), and a private
//! CA for self-managed servers; and the one percent-encoder for URL parts and document ids.

use std::time::Duration;

/// Why an agent could not be built.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct TlsError(pub String);

/// An agent with `timeout` for a whole request and, when given, the PEM CA `ca_cert`.
pub fn agent(timeout: Duration, ca_cert: Option<&std::path::Path>) -> Result<ureq::Agent, TlsError> {
    let mut cfg = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(timeout))
        .max_idle_connections_per_host(8)
        .user_agent(concat!("apiwatch/", env!("CARGO_PKG_VERSION")));
    if let Some(path) = ca_cert {
        let pem = std::fs::read(path).map_err(|e| TlsError(format!("cannot read CA certificate {}: {e}", path.display())))?;
        let certs: Vec<_> = ureq::tls::parse_pem(&pem)
            .filter_map(|item| match item {
                Ok(ureq::tls::PemItem::Certificate(c)) => Some(c),
                _ => None,
            })
            .collect();
        if certs.is_empty() {
            return Err(TlsError(format!("{} holds no PEM certificate", path.display())));
        }
        let tls = ureq::tls::TlsConfig::builder()
            .root_certs(ureq::tls::RootCerts::new_with_certs(&certs))
            .build();
        cfg = cfg.tls_config(tls);
    }
    Ok(cfg.build().into())
}

/// Percent-encoding for a URL component or an Elasticsearch document id in a path (RFC 3986
/// unreserved characters pass).
pub fn url_encode(s: &str) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}
