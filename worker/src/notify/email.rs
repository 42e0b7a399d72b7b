//! Email through SMTP (lettre): STARTTLS, implicit TLS or plain (local relays and tests), with
//! credentials from the environment (`APIWATCH_SMTP_USERNAME`, `APIWATCH_SMTP_PASSWORD`).
//! Every alert gets one thread: the first message's Message-ID is derived from the alert id and
//! later messages (still open, resolved) reply to it.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use lettre::message::{header, Mailbox, MultiPart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{Message, SmtpTransport, Transport};
use serde::Deserialize;

use super::dispatch::{Channel, Failure, Outgoing, Pacing};
use super::settings::{self, Section};
use crate::config::{invalid, ConfigError};

use super::render::{header_safe, render};
use super::{recipients, Links, MessageKind, Route};
use crate::model::{Alert, Anomaly};

/// How the SMTP connection is secured.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SmtpSecurity {
    /// Plain connection upgraded with STARTTLS (port 587); refused if the server cannot.
    #[default]
    Starttls,
    /// TLS from the first byte (port 465).
    Tls,
    /// No encryption: only for a relay on localhost or a test server.
    None,
}

/// The `[email]` section, checked.
#[derive(Clone, Debug)]
pub struct EmailSettings {
    pub smtp_host: String,
    pub smtp_port: u16,
    pub security: SmtpSecurity,
    /// PEM of a private CA that signed the SMTP server's certificate.
    pub ca_cert: Option<std::path::PathBuf>,
    pub from: String,
    pub routes: Vec<Route>,
    pub links: Links,
    pub pacing: Pacing,
}

/// Alert mail through one SMTP server: one message per alert change to every recipient of
/// every matching route.
pub struct EmailChannel {
    settings: EmailSettings,
    transport: SmtpTransport,
    from: Mailbox,
}

impl EmailChannel {
    pub fn new(settings: EmailSettings) -> anyhow::Result<Self> {
        let from: Mailbox = settings
            .from
            .parse()
            .with_context(|| format!("email.from `{}` is not an email address", settings.from))?;
        let mut builder = SmtpTransport::builder_dangerous(&settings.smtp_host)
            .port(settings.smtp_port)
            .timeout(Some(Duration::from_secs(20)));
        if settings.security != SmtpSecurity::None {
            let mut tls = TlsParameters::builder(settings.smtp_host.clone());
            if let Some(ca) = &settings.ca_cert {
                let pem = std::fs::read(ca).with_context(|| format!("cannot read email.ca_cert {}", ca.display()))?;
                tls = tls.add_root_certificate(
                    Certificate::from_pem(&pem).with_context(|| format!("{} is not a PEM certificate", ca.display()))?,
                );
            }
            let tls = tls.build().context("TLS parameters for SMTP")?;
            builder = builder.tls(match settings.security {
                SmtpSecurity::Tls => Tls::Wrapper(tls),
                _ => Tls::Required(tls),
            });
        }
        let user = std::env::var("APIWATCH_SMTP_USERNAME").ok().filter(|s| !s.is_empty());
        let pass = std::env::var("APIWATCH_SMTP_PASSWORD").ok().filter(|s| !s.is_empty());
        if let (Some(u), Some(p)) = (user, pass) {
            builder = builder.credentials(Credentials::new(u, p));
        }
        Ok(EmailChannel {
            transport: builder.build(),
            from,
            settings,
        })
    }

    fn thread_id(a: &Alert) -> String {
        format!("<alert-{}@apiwatch>", a.id)
    }

    fn build(&self, a: &Alert, kind: MessageKind, evidence: &[&Anomaly], to: &[String]) -> anyhow::Result<Message> {
        let r = render(a, kind, evidence, &self.settings.links, "email");
        let mut b = Message::builder()
            .from(self.from.clone())
            .subject(header_safe(&r.subject))
            .header(header::ContentTransferEncoding::QuotedPrintable);
        for t in to {
            b = b.to(t.parse().with_context(|| format!("recipient `{t}` is not an email address"))?);
        }
        let thread = Self::thread_id(a);
        b = match kind {
            MessageKind::Opened => b.message_id(Some(thread)),
            _ => b.in_reply_to(thread.clone()).references(thread),
        };
        Ok(b.multipart(MultiPart::alternative_plain_html(r.text, r.html))?)
    }
}

impl Channel for EmailChannel {
    fn destinations(&self, a: &Alert) -> Vec<usize> {
        // One message to every recipient of every matching route.
        match recipients(&self.settings.routes, a).is_empty() {
            true => vec![],
            false => vec![0],
        }
    }

    fn deliver(&mut self, msg: &Outgoing<'_>) -> Result<(), Failure> {
        let to = recipients(&self.settings.routes, msg.alert);
        let mail = self
            .build(msg.alert, msg.kind, msg.evidence, &to)
            .map_err(|e| Failure::Refused(format!("cannot build the alert mail: {e:#}")))?;
        match self.transport.send(&mail) {
            Ok(_) => Ok(()),
            Err(e) => {
                let why = format!("SMTP {}:{}: {e}", self.settings.smtp_host, self.settings.smtp_port);
                // A permanent (5xx) answer will not change by trying again; anything else
                // (unreachable, 4xx) may.
                match e.is_permanent() {
                    true => Err(Failure::Refused(why)),
                    false => Err(Failure::Retry(why)),
                }
            }
        }
    }
}

/// The `[email]` section as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawEmail {
    smtp_host: Option<String>,
    smtp_port: Option<u16>,
    security: Option<SmtpSecurity>,
    ca_cert: Option<PathBuf>,
    from: Option<String>,
    min_interval_secs: Option<u64>,
    max_per_hour: Option<usize>,
    #[serde(default)]
    routes: Vec<Route>,
}

/// Reads and checks the `[email]` section.
pub(crate) fn from_section(raw: RawEmail, cx: &Section<'_>) -> Result<EmailSettings, ConfigError> {
    let invalid = |key: &'static str, problem: &str| invalid(cx.origin, key, problem);
    let smtp_host = raw
        .smtp_host
        .ok_or_else(|| invalid("email.smtp_host", "is required when [email] is present"))?;
    let from = raw.from.unwrap_or_else(|| "apiwatch@localhost".into());
    if !from.contains('@') {
        return Err(invalid("email.from", "must be an email address"));
    }
    if raw.routes.is_empty() {
        return Err(invalid("email.routes", "needs at least one [[email.routes]] with `to` addresses"));
    }
    if raw.routes.iter().any(|r| r.to.is_empty() || r.to.iter().any(|t| !t.contains('@'))) {
        return Err(invalid("email.routes.to", "must list email addresses"));
    }
    settings::check_priorities("email.routes.priorities", raw.routes.iter().flat_map(|r| &r.priorities), cx.origin)?;
    let security = raw.security.unwrap_or_default();
    // A mail server that does not answer is tried again at the next poll, not within one.
    let pacing = settings::pacing(
        settings::RawPacing {
            min_interval_secs: raw.min_interval_secs,
            max_per_hour: raw.max_per_hour,
            max_attempts: None,
            backoff_ms: None,
        },
        "email.max_attempts",
        1,
        200,
        cx.origin,
    )?;
    Ok(EmailSettings {
        smtp_port: raw.smtp_port.unwrap_or(match security {
            SmtpSecurity::Tls => 465,
            SmtpSecurity::Starttls => 587,
            SmtpSecurity::None => 25,
        }),
        smtp_host,
        security,
        ca_cert: raw.ca_cert,
        from,
        routes: raw.routes,
        links: cx.links.clone(),
        pacing,
    })
}
