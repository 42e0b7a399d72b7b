//! Space-separated provider lines (AWS ALB, Envoy) split into tokens and named as their
//! documentation names them, so that the format's field map reads them like JSON.

use serde_json::{Map, Value};

use crate::model::time::parse_rfc3339;
use crate::source::json::EventError;

/// Splits a line into tokens: bare words, `"quoted strings"` (with `\"` and `\\` inside) and,
/// when `brackets`, a `[bracketed]` first token (a bracket later is an IPv6 address's).
fn tokens(line: &str, brackets: bool) -> Result<Vec<String>, String> {
    let mut out = Vec::with_capacity(32);
    let mut it = line.char_indices().peekable();
    while let Some(&(i, c)) = it.peek() {
        match c {
            ' ' | '\t' => {
                it.next();
            }
            '"' => {
                it.next();
                let mut s = String::new();
                let mut closed = false;
                while let Some((_, c)) = it.next() {
                    match c {
                        '\\' => match it.next() {
                            Some((_, e)) => s.push(e),
                            None => break,
                        },
                        '"' => {
                            closed = true;
                            break;
                        }
                        c => s.push(c),
                    }
                }
                if !closed {
                    return Err(format!("a quoted field opened at byte {} is not closed", i + 1));
                }
                out.push(s);
            }
            '[' if brackets && out.is_empty() => {
                let end = line[i..].find(']').ok_or_else(|| format!("`[` at byte {} is not closed", i + 1))?;
                out.push(line[i + 1..i + end].to_owned());
                while it.peek().is_some_and(|&(j, _)| j <= i + end) {
                    it.next();
                }
            }
            _ => {
                let end = line[i..].find([' ', '\t']).map_or(line.len(), |e| i + e);
                out.push(line[i..end].to_owned());
                while it.peek().is_some_and(|&(j, _)| j < end) {
                    it.next();
                }
            }
        }
    }
    Ok(out)
}

fn layout(format: &'static str, why: impl Into<String>) -> EventError {
    EventError::Layout { format, why: why.into() }
}

/// The ALB fields in the documented order (fields AWS appends later are ignored).
const ALB_FIELDS: [&str; 30] = [
    "type",
    "time",
    "elb",
    "client_port",
    "target_port",
    "request_processing_time",
    "target_processing_time",
    "response_processing_time",
    "elb_status_code",
    "target_status_code",
    "received_bytes",
    "sent_bytes",
    "request",
    "user_agent",
    "ssl_cipher",
    "ssl_protocol",
    "target_group_arn",
    "trace_id",
    "domain_name",
    "chosen_cert_arn",
    "matched_rule_priority",
    "request_creation_time",
    "actions_executed",
    "redirect_url",
    "error_reason",
    "target_port_list",
    "target_status_code_list",
    "classification",
    "classification_reason",
    "conn_trace_id",
];

/// The request types an ALB writes first.
const ALB_TYPES: [&str; 6] = ["http", "https", "h2", "grpcs", "ws", "wss"];

/// `ip:port` or `[ipv6]:port` without the port.
fn without_port(s: &str) -> &str {
    if let Some(rest) = s.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match s.rsplit_once(':') {
        Some((ip, port)) if port.bytes().all(|b| b.is_ascii_digit()) && !ip.contains(':') => ip,
        Some((ip, port)) if port.bytes().all(|b| b.is_ascii_digit()) && ip.matches(':').count() >= 2 && s.matches(':').count() == 8 => ip,
        _ => s,
    }
}

/// One ALB access-log line as a record.
pub fn alb(line: &str) -> Result<Value, EventError> {
    const F: &str = "aws-alb";
    let t = tokens(line, false).map_err(|why| layout(F, why))?;
    if t.len() < 17 {
        return Err(layout(F, format!("{} fields, an ALB line has at least 17", t.len())));
    }
    if !ALB_TYPES.contains(&t[0].as_str()) || parse_rfc3339(&t[1]).is_none() {
        return Err(layout(
            F,
            "it does not start with a request type (http, https, h2, ...) and an ISO 8601 time",
        ));
    }
    let mut m = Map::with_capacity(40);
    for (name, v) in ALB_FIELDS.iter().zip(&t) {
        m.insert((*name).to_owned(), Value::String(v.clone()));
    }
    let mut request = t[12].splitn(3, ' ');
    let (method, url) = (request.next().unwrap_or_default(), request.next().unwrap_or_default());
    m.insert("request_method".into(), Value::String(method.to_owned()));
    m.insert("request_url".into(), Value::String(url.to_owned()));
    m.insert("client_ip".into(), Value::String(without_port(&t[3]).to_owned()));
    let times: Option<Vec<f64>> = t[5..8].iter().map(|x| x.parse::<f64>().ok()).collect();
    let duration = match times {
        Some(ts) if ts.iter().all(|&x| x >= 0.0) => format!("{:.6}", ts.iter().sum::<f64>()),
        Some(_) => "-1".to_owned(),
        None => return Err(layout(F, "the processing times are not numbers")),
    };
    m.insert("duration".into(), Value::String(duration));
    Ok(Value::Object(m))
}

/// Envoy's default text format, then Istio's (the fields as Istio's JSON names them).
const ENVOY_FIELDS: [&str; 13] = [
    "start_time",
    "request",
    "response_code",
    "response_flags",
    "bytes_received",
    "bytes_sent",
    "duration",
    "upstream_service_time",
    "x_forwarded_for",
    "user_agent",
    "request_id",
    "authority",
    "upstream_host",
];
const ISTIO_FIELDS: [&str; 22] = [
    "start_time",
    "request",
    "response_code",
    "response_flags",
    "response_code_details",
    "connection_termination_details",
    "upstream_transport_failure_reason",
    "bytes_received",
    "bytes_sent",
    "duration",
    "upstream_service_time",
    "x_forwarded_for",
    "user_agent",
    "request_id",
    "authority",
    "upstream_host",
    "upstream_cluster",
    "upstream_local_address",
    "downstream_local_address",
    "downstream_remote_address",
    "requested_server_name",
    "route_name",
];

/// One Envoy or Istio text access-log line as a record.
pub fn envoy(line: &str) -> Result<Value, EventError> {
    const F: &str = "envoy";
    if !line.starts_with('[') {
        return Err(layout(F, "it does not start with [START_TIME]"));
    }
    let t = tokens(line, true).map_err(|why| layout(F, why))?;
    let names: &[&str] = match t.len() {
        13 => &ENVOY_FIELDS,
        22 => &ISTIO_FIELDS,
        n => return Err(layout(F, format!("{n} fields: Envoy's default format has 13, Istio's 22"))),
    };
    if parse_rfc3339(&t[0]).is_none() {
        return Err(layout(F, format!("`{}` is not an ISO 8601 start time", t[0])));
    }
    let mut m = Map::with_capacity(28);
    for (name, v) in names.iter().zip(&t) {
        m.insert((*name).to_owned(), Value::String(v.clone()));
    }
    let mut request = t[1].splitn(3, ' ');
    for key in ["method", "path", "protocol"] {
        m.insert(key.into(), Value::String(request.next().unwrap_or_default().to_owned()));
    }
    Ok(Value::Object(m))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_keep_quoted_spaces_escapes_and_brackets() {
        let t = tokens(r#"[2026-03-02T06:00:00.000Z] "GET /a b HTTP/1.1" 200 "say \"hi\"" - "#, true).unwrap();
        assert_eq!(t, ["2026-03-02T06:00:00.000Z", "GET /a b HTTP/1.1", "200", "say \"hi\"", "-"]);
        assert!(tokens(r#"x "open"#, false).unwrap_err().contains("not closed"));
    }

    #[test]
    fn ports_are_removed_from_v4_and_bracketed_v6_addresses() {
        assert_eq!(without_port("192.168.131.39:2817"), "192.168.131.39");
        assert_eq!(without_port("[2001:db8::1]:443"), "2001:db8::1");
        assert_eq!(without_port("2001:db8::1"), "2001:db8::1");
        assert_eq!(without_port("-"), "-");
    }
}
