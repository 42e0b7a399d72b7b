//! Message bodies: subject, plain text and HTML for one alert, with its strongest anomalies
//! (expected vs actual, top contributors), example trace ids and a Kibana Discover link. Every
//! value that came from logs is escaped for HTML and stripped of line breaks in headers, so a
//! hostile service name or path cannot inject headers or markup. An open alert's message also
//! carries the signed links that answer it ([`crate::feedback::link`]), when they are set up.

use std::fmt::Write;

use crate::model::time::format_rfc3339;
use crate::model::{Alert, AlertStatus, Anomaly};

use super::{Links, MessageKind};
use crate::feedback::link::ActionLink;

/// A rendered message.
#[derive(Debug, Clone)]
pub struct Rendered {
    pub subject: String,
    pub text: String,
    pub html: String,
    /// The answering links (acknowledge, silence, not a problem): on open alerts only.
    pub actions: Vec<ActionLink>,
}

/// Text for a header: no control characters (CR/LF would start a new header), bounded length.
pub fn header_safe(s: &str) -> String {
    let cleaned: String = s.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    let mut out: String = cleaned.split_whitespace().collect::<Vec<_>>().join(" ");
    if out.chars().count() > 180 {
        out = out.chars().take(179).collect::<String>() + "…";
    }
    out
}

pub fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

/// A Discover link showing the alert's anomalies around its time span.
pub fn discover_link(kibana: &str, anomalies_index: &str, a: &Alert) -> String {
    let from = format_rfc3339(a.start - 15 * 60_000);
    let to = format_rfc3339(a.end.unwrap_or(a.timestamp) + 15 * 60_000);
    let services: Vec<String> = a
        .services
        .iter()
        .map(|s| s.split('/').next().unwrap_or(s).replace('\\', "\\\\").replace('"', "\\\""))
        .map(|s| format!("\"{s}\""))
        .collect();
    let query = format!("service.name:({})", services.join(" or "));
    let rison_query = query.replace('!', "!!").replace('\'', "!'");
    let g = format!("(time:(from:'{from}',to:'{to}'))");
    let app = format!("(index:'{anomalies_index}',query:(language:kuery,query:'{rison_query}'))");
    format!(
        "{}/app/discover#/?_g={}&_a={}",
        kibana.trim_end_matches('/'),
        crate::http::url_encode(&g),
        crate::http::url_encode(&app)
    )
}

fn fmt_num(x: f64) -> String {
    if x.abs() >= 100.0 {
        format!("{x:.0}")
    } else if x.abs() >= 1.0 {
        format!("{x:.2}")
    } else {
        format!("{x:.4}")
    }
}

/// The links that answer `a`, for a message of `kind` sent by channel `via` now.
pub fn action_links(a: &Alert, kind: MessageKind, links: &Links, via: &str) -> Vec<ActionLink> {
    match (&links.actions, kind) {
        (Some(l), MessageKind::Opened | MessageKind::StillOpen) => l.all(&a.id, via, chrono::Utc::now().timestamp_millis()),
        _ => Vec::new(),
    }
}

/// Renders one message sent by channel `via`. `anomalies` are the alert's anomalies that are
/// known (strongest first).
pub fn render(a: &Alert, kind: MessageKind, anomalies: &[&Anomaly], links: &Links, via: &str) -> Rendered {
    let (kibana, anomalies_index) = (links.kibana_url.as_deref(), links.anomalies_index.as_str());
    let actions = action_links(a, kind, links, via);
    let tag = match kind {
        MessageKind::Opened if a.predicted => "predicted",
        MessageKind::Opened => "open",
        MessageKind::StillOpen => "still open",
        MessageKind::Resolved => "resolved",
    };
    // Titles already lead with the priority (`[P1] ...`).
    let subject_core = if a.title.starts_with('[') {
        format!("[apiwatch] {}", a.title)
    } else {
        format!("[apiwatch {}] {}", a.priority, a.title)
    };
    let subject = header_safe(&match kind {
        MessageKind::Resolved => format!("Re: {subject_core} (resolved)"),
        MessageKind::StillOpen => format!("Re: {subject_core} (still open)"),
        MessageKind::Opened => subject_core,
    });
    let since = format_rfc3339(a.start);
    let link = kibana.map(|k| discover_link(k, anomalies_index, a));

    let mut text = String::new();
    let _ = writeln!(text, "{} — {} ({tag})", a.priority, a.title);
    let _ = writeln!(text);
    let _ = writeln!(text, "{}", a.summary);
    let _ = writeln!(text);
    let _ = writeln!(text, "Origin:    {}/{}", a.service, a.provider);
    let _ = writeln!(text, "Since:     {since}");
    if let (AlertStatus::Resolved, Some(end)) = (a.status, a.end) {
        let _ = writeln!(text, "Ended:     {}", format_rfc3339(end));
    }
    if let Some(eta) = a.eta {
        let _ = writeln!(text, "Expected breach: {}", format_rfc3339(eta));
    }
    let _ = writeln!(text, "Services:  {}", a.services.join(", "));
    let _ = writeln!(text, "Impact:    {} calls, {} users", a.impact_calls, a.impact_users);
    if !anomalies.is_empty() {
        let _ = writeln!(text, "\nEvidence (strongest first):");
        for an in anomalies {
            let _ = write!(text, "- [{} {:.0}] {}", an.detector, an.score, an.reason);
            if let (Some(x), Some(e)) = (an.actual, an.expected) {
                let _ = write!(text, " (actual {}, expected {})", fmt_num(x), fmt_num(e));
            }
            let _ = writeln!(text);
            for c in an.contributors.iter().take(3) {
                let _ = writeln!(text, "    {} {:.0}%", c.name, c.share * 100.0);
            }
        }
    }
    if !a.trace_ids.is_empty() {
        let _ = writeln!(text, "\nExample traces: {}", a.trace_ids.join(", "));
    }
    if let Some(l) = &link {
        let _ = writeln!(text, "\nOpen in Kibana: {l}");
    }
    actions_text(&mut text, &actions);
    let _ = writeln!(text, "\nalert.id {}", a.id);

    let e = html_escape;
    let mut html = String::new();
    let color = match a.priority.as_str() {
        "P1" => "#b00020",
        "P2" => "#d35400",
        "P3" => "#b7950b",
        _ => "#555555",
    };
    let _ = write!(
        html,
        "<!doctype html><html><body style=\"font-family:sans-serif\"><h2><span style=\"color:{color}\">{}</span> {} <small>({})</small></h2><p>{}</p><table>",
        e(&a.priority),
        e(&a.title),
        e(tag),
        e(&a.summary)
    );
    let mut row = |k: &str, v: &str| {
        let _ = write!(html, "<tr><th align=\"left\">{}</th><td>{}</td></tr>", e(k), e(v));
    };
    row("Origin", &format!("{}/{}", a.service, a.provider));
    row("Since", &since);
    if let (AlertStatus::Resolved, Some(end)) = (a.status, a.end) {
        row("Ended", &format_rfc3339(end));
    }
    row("Services", &a.services.join(", "));
    row("Impact", &format!("{} calls, {} users", a.impact_calls, a.impact_users));
    html.push_str("</table>");
    if !anomalies.is_empty() {
        html.push_str("<h3>Evidence</h3><table border=\"1\" cellpadding=\"4\" style=\"border-collapse:collapse\"><tr><th>detector</th><th>score</th><th>what</th><th>actual</th><th>expected</th><th>top contributors</th></tr>");
        for an in anomalies {
            let contributors: Vec<String> = an
                .contributors
                .iter()
                .take(3)
                .map(|c| format!("{} {:.0}%", e(&c.name), c.share * 100.0))
                .collect();
            let _ = write!(
                html,
                "<tr><td>{}</td><td>{:.0}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                e(&an.detector),
                an.score,
                e(&an.reason),
                an.actual.map(fmt_num).unwrap_or_default(),
                an.expected.map(fmt_num).unwrap_or_default(),
                contributors.join("<br>")
            );
        }
        html.push_str("</table>");
    }
    if !a.trace_ids.is_empty() {
        let traces: Vec<String> = a.trace_ids.iter().map(|t| format!("<code>{}</code>", e(t))).collect();
        let _ = write!(html, "<p>Example traces: {}</p>", traces.join(", "));
    }
    if let Some(l) = &link {
        let _ = write!(html, "<p><a href=\"{}\">Open in Kibana Discover</a></p>", e(l));
    }
    actions_html(&mut html, &actions);
    let _ = write!(html, "<p style=\"color:#888\">alert.id {}</p></body></html>", e(&a.id));
    Rendered {
        subject,
        text,
        html,
        actions,
    }
}

/// The answering links as text lines.
fn actions_text(text: &mut String, actions: &[ActionLink]) {
    if actions.is_empty() {
        return;
    }
    let _ = writeln!(text, "\nAnswer (these links act on this alert only, until they expire):");
    for l in actions {
        let _ = writeln!(text, "  {}: {}", l.label, l.url);
    }
}

/// The answering links as buttons.
fn actions_html(html: &mut String, actions: &[ActionLink]) {
    if actions.is_empty() {
        return;
    }
    let e = html_escape;
    html.push_str("<p>");
    for l in actions {
        let _ = write!(
            html,
            "<a class=\"apiwatch-action\" data-action=\"{}\" href=\"{}\" style=\"display:inline-block;margin-right:8px;padding:6px 12px;border:1px solid #888;border-radius:4px;text-decoration:none\">{}</a>",
            e(l.action),
            e(&l.url),
            e(l.label)
        );
    }
    html.push_str("</p>");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::tests::alert;

    #[test]
    fn hostile_log_values_cannot_inject_headers_or_markup() {
        let mut a = alert("id1", "pay\r\nBcc: evil@example.com", "P1", AlertStatus::Open, 1);
        a.title = "latency <script>alert(1)</script>\r\nX-Evil: 1".into();
        a.summary = "\"quoted\" & <b>bold</b>".into();
        let links = Links {
            kibana_url: Some("http://kibana:5601".into()),
            anomalies_index: "apiwatch-anomalies".into(),
            actions: None,
        };
        let r = render(&a, MessageKind::Opened, &[], &links, "email");
        assert!(r.actions.is_empty() && !r.text.contains("/act/"), "no links unless set up");
        assert!(!r.subject.contains('\r') && !r.subject.contains('\n'), "{}", r.subject);
        assert!(!r.html.contains("<script>"), "{}", r.html);
        assert!(r.html.contains("&lt;script&gt;"));
        assert!(r.html.contains("&quot;quoted&quot; &amp; &lt;b&gt;bold&lt;/b&gt;"));
        assert!(r.text.contains("evil@example.com"), "values stay visible in the body, as text");
    }

    #[test]
    fn a_resolution_replies_to_the_thread() {
        let a = alert("id1", "payments", "P2", AlertStatus::Resolved, 1);
        let r = render(&a, MessageKind::Resolved, &[], &answering(), "email");
        assert!(r.subject.starts_with("Re: [apiwatch P2]"), "{}", r.subject);
        assert!(r.subject.ends_with("(resolved)"));
        assert!(r.actions.is_empty(), "a resolved alert needs no answer");
    }

    fn answering() -> Links {
        Links {
            kibana_url: None,
            anomalies_index: "x".into(),
            actions: Some(
                crate::feedback::link::ActionLinks::new("https://aw.example:8443/", "a-test-secret-of-enough-bytes", 3_600_000).unwrap(),
            ),
        }
    }

    #[test]
    fn an_open_alert_carries_its_answering_links_in_text_and_html() {
        let a = alert("id<1>", "payments", "P1", AlertStatus::Open, 1);
        let r = render(&a, MessageKind::Opened, &[], &answering(), "email");
        let actions: Vec<&str> = r.actions.iter().map(|l| l.action).collect();
        assert_eq!(actions, ["ack", "silence", "not-a-problem"]);
        for l in &r.actions {
            assert!(
                l.url
                    .starts_with(&format!("https://aw.example:8443/act/{}/id%3C1%3E?via=email&exp=", l.action)),
                "{}",
                l.url
            );
            assert!(r.text.contains(&l.url), "{}", r.text);
            assert!(r.html.contains(&html_escape(&l.url)) && r.html.contains(l.label), "{}", r.html);
        }
        assert!(!r.text.contains("a-test-secret"), "the secret is never in a message");
    }

    #[test]
    fn discover_links_are_encoded() {
        let a = alert("id1", "pay'ments", "P2", AlertStatus::Open, 1);
        let l = discover_link("http://k:5601/", "apiwatch-anomalies", &a);
        assert!(l.starts_with("http://k:5601/app/discover#/?_g="), "{l}");
        assert!(!l.contains(' ') && !l.contains('\''), "{l}");
    }
}
