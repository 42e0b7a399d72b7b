//! Email through SMTP (lettre): STARTTLS, implicit TLS or plain (local relays and tests), with
//! credentials from the environment (`APIWATCH_SMTP_USERNAME`, `APIWATCH_SMTP_PASSWORD`).
//! Every alert gets one thread: the first message's Message-ID is derived from the alert id and
//! later messages (still open, resolved) reply to it.

use std::collections::VecDeque;
use std::time::Duration;

use anyhow::Context;
use lettre::message::{header, Mailbox, MultiPart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{Message, SmtpTransport, Transport};
use serde::Deserialize;

use super::render::{header_safe, render};
use super::{by_urgency, recipients, Evidence, Notifier, Route, Throttle};
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
    pub kibana_url: Option<String>,
    pub anomalies_index: String,
    pub min_interval: Duration,
    pub max_per_hour: usize,
}

/// Sends alert mail.
pub struct EmailNotifier {
    settings: EmailSettings,
    transport: SmtpTransport,
    from: Mailbox,
    throttle: Throttle,
    /// Recent anomalies, for the evidence table.
    evidence: Evidence,
    /// Messages that could not be sent yet (server down), tried again first next time.
    outbox: VecDeque<(Alert, super::MessageKind)>,
    pub sent: u64,
    pub failed: u64,
}

/// Messages kept for a server that is down; beyond this the oldest are dropped, with an error.
const OUTBOX_LIMIT: usize = 200;

impl EmailNotifier {
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
        let throttle = Throttle::new(settings.min_interval.as_millis() as i64, settings.max_per_hour);
        Ok(EmailNotifier {
            transport: builder.build(),
            from,
            throttle,
            settings,
            evidence: Evidence::default(),
            outbox: VecDeque::new(),
            sent: 0,
            failed: 0,
        })
    }

    fn thread_id(a: &Alert) -> String {
        format!("<alert-{}@apiwatch>", a.id)
    }

    fn build(&self, a: &Alert, kind: super::MessageKind, to: &[String]) -> anyhow::Result<Message> {
        let evidence = self.evidence.strongest(a, 5);
        let r = render(
            a,
            kind,
            &evidence,
            self.settings.kibana_url.as_deref(),
            &self.settings.anomalies_index,
        );
        let mut b = Message::builder()
            .from(self.from.clone())
            .subject(header_safe(&r.subject))
            .header(header::ContentTransferEncoding::QuotedPrintable);
        for t in to {
            b = b.to(t.parse().with_context(|| format!("recipient `{t}` is not an email address"))?);
        }
        let thread = Self::thread_id(a);
        b = match kind {
            super::MessageKind::Opened => b.message_id(Some(thread)),
            _ => b.in_reply_to(thread.clone()).references(thread),
        };
        Ok(b.multipart(MultiPart::alternative_plain_html(r.text, r.html))?)
    }
}

impl Notifier for EmailNotifier {
    fn remember(&mut self, anomalies: &[Anomaly]) {
        self.evidence.remember(anomalies);
    }

    fn notify(&mut self, alerts: &[Alert]) -> anyhow::Result<u64> {
        let now = chrono::Utc::now().timestamp_millis();
        // Decide first (urgent first), then send the outbox in order: what failed before goes
        // out before anything new.
        for a in by_urgency(alerts) {
            if recipients(&self.settings.routes, a).is_empty() {
                continue;
            }
            if let Some(kind) = self.throttle.decide(a, now) {
                self.outbox.push_back((a.clone(), kind));
            }
        }
        while self.outbox.len() > OUTBOX_LIMIT {
            if let Some((a, _)) = self.outbox.pop_front() {
                self.failed += 1;
                tracing::error!(alert = %a.id, "alert mail dropped: the SMTP server has been unreachable for too long");
            }
        }
        let mut sent = 0;
        while let Some((a, kind)) = self.outbox.pop_front() {
            let to = recipients(&self.settings.routes, &a);
            let msg = match self.build(&a, kind, &to) {
                Ok(m) => m,
                Err(e) => {
                    self.failed += 1;
                    tracing::error!(alert = %a.id, error = %e, "cannot build the alert mail");
                    continue;
                }
            };
            match self.transport.send(&msg) {
                Ok(_) => {
                    sent += 1;
                    self.sent += 1;
                    tracing::info!(alert = %a.id, priority = %a.priority, recipients = to.len(), ?kind, "alert mail sent");
                }
                Err(e) => {
                    // Keep it (and everything after it) for the next round; the server is
                    // likely down, so do not hammer it now.
                    self.outbox.push_front((a, kind));
                    let queued = self.outbox.len();
                    return Err(anyhow::Error::from(e).context(format!(
                        "SMTP {}:{} ({} sent, {queued} kept for the next attempt)",
                        self.settings.smtp_host, self.settings.smtp_port, sent
                    )));
                }
            }
        }
        Ok(sent)
    }

    fn save(&self) -> serde_json::Value {
        serde_json::to_value(&self.throttle).unwrap_or_default()
    }

    fn load(&mut self, state: &serde_json::Value) {
        self.throttle.restore(state);
    }
}
