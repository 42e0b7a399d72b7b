//! Events written as each format's lines, following the provider's documented layout: what the
//! simulator writes with `--format`, what the format tests read back, and what the parsing
//! benchmark reads. A format that cannot carry a field leaves it out (the provider's `-`).

use chrono::DateTime;
use serde_json::json;

use super::LogFormat;
use crate::model::time::Millis;
use crate::model::Event;
use crate::source::access::format_line;

/// A stable pseudo-random hex id from an event, for ids a provider always writes.
fn hex_of(e: &Event, len: usize) -> String {
    let h = crate::model::hash_str(&format!("{}{}{}", e.timestamp, e.path, e.span_id.as_deref().unwrap_or_default()));
    format!("{h:016x}{:016x}", h.rotate_left(17))[..len].to_owned()
}

fn iso(t: Millis, micros: bool) -> String {
    let Some(d) = DateTime::from_timestamp_millis(t) else {
        return "-".into();
    };
    if micros {
        d.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
    } else {
        d.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
    }
}

fn or_dash(v: Option<&str>) -> &str {
    v.filter(|s| !s.is_empty()).unwrap_or("-")
}

/// Escapes a value for a double-quoted field of a space-separated log.
fn quoted(v: Option<&str>) -> String {
    format!("\"{}\"", or_dash(v).replace('\\', "\\\\").replace('"', "\\\""))
}

fn secs(ns: Option<u64>) -> Option<f64> {
    ns.map(|ns| ns as f64 / 1e9)
}

/// One event as a line of `format` (`auto` and `json` write ECS JSON).
pub fn line(e: &Event, format: LogFormat) -> String {
    match format {
        LogFormat::Auto | LogFormat::Json => serde_json::to_string(e).unwrap_or_default(),
        LogFormat::Nginx | LogFormat::Apache => format_line(e, format),
        LogFormat::AwsAlb => alb(e),
        LogFormat::Envoy => envoy(e),
        LogFormat::AwsApigw => apigw(e),
        LogFormat::GcpLb => gcp(e),
        LogFormat::AzureAppgw => appgw(e),
        LogFormat::AzureApim => apim(e),
        LogFormat::ElasticAwsElb => elastic_elb(e),
    }
}

fn alb(e: &Event) -> String {
    let region = e.region.as_deref().unwrap_or("us-east-1");
    let client = e.client_ip.as_deref().map_or("-".to_owned(), |ip| {
        if ip.contains(':') {
            format!("[{ip}]:{}", 1024 + e.timestamp % 60000)
        } else {
            format!("{ip}:{}", 1024 + e.timestamp % 60000)
        }
    });
    let host = e.host.as_deref().unwrap_or("10.0.1.17");
    let total = secs(e.duration_ns);
    let (rq, tg, rs) = match total {
        Some(t) => ("0.000".to_owned(), format!("{t:.6}"), "0.000".to_owned()),
        None => ("-1".to_owned(), "-1".to_owned(), "-1".to_owned()),
    };
    let end = e.timestamp + e.duration_ns.map_or(0, |ns| (ns / 1_000_000) as Millis);
    let trace = e.trace_id.as_deref().map(|t| format!("Root={t}"));
    format!(
        "https {} app/edge-lb/50dc6c495c0c9188 {client} {host}:8080 {rq} {tg} {rs} {st} {st} {} {} {} {} ECDHE-RSA-AES128-GCM-SHA256 TLSv1.2 \
         arn:aws:elasticloadbalancing:{region}:123456789012:targetgroup/{}/73e2d6bc24d8a067 {} \"api.example.com\" \
         \"arn:aws:acm:{region}:123456789012:certificate/12345678-1234-1234-1234-123456789012\" 1 {} \"forward\" \"-\" \"-\" \"{host}:8080\" \"{st}\" \"-\" \"-\" TID_{}",
        iso(end, true),
        e.request_bytes.unwrap_or(0),
        e.response_bytes.unwrap_or(0),
        quoted(Some(&format!("{} https://api.example.com:443{} HTTP/1.1", e.method, e.path))),
        quoted(e.user_agent.as_deref()),
        e.service,
        quoted(trace.as_deref()),
        iso(e.timestamp, true),
        hex_of(e, 16),
        st = e.status,
    )
}

fn envoy(e: &Event) -> String {
    let ms = e.duration_ns.map_or("-".to_owned(), |ns| (ns / 1_000_000).to_string());
    let up = e.host.as_deref().unwrap_or("10.0.2.1");
    let remote = e.client_ip.as_deref().map_or("-".to_owned(), |ip| {
        if ip.contains(':') {
            format!("[{ip}]:45112")
        } else {
            format!("{ip}:45112")
        }
    });
    // Istio's text layout (22 fields): the one a mesh writes, with the upstream cluster.
    format!(
        "[{}] \"{} {} HTTP/1.1\" {} - via_upstream - \"-\" {} {} {ms} {ms} \"-\" {} {} \"{}:8080\" \"{up}:8080\" \
         outbound|8080||{}.default.svc.cluster.local 10.0.0.5:51234 10.0.0.5:8080 {remote} - default",
        iso(e.timestamp, false),
        e.method,
        e.path,
        e.status,
        e.request_bytes.unwrap_or(0),
        e.response_bytes.unwrap_or(0),
        quoted(e.user_agent.as_deref()),
        quoted(e.span_id.as_deref().or(Some(&hex_of(e, 32)))),
        e.service,
        e.service,
    )
}

fn apigw(e: &Event) -> String {
    json!({
        "requestId": e.span_id.as_deref().map_or_else(|| hex_of(e, 32), str::to_owned),
        "ip": or_dash(e.client_ip.as_deref()),
        "caller": "-",
        "user": or_dash(e.user_id.as_deref()),
        "requestTime": DateTime::from_timestamp_millis(e.timestamp).map(|d| d.format("%d/%b/%Y:%H:%M:%S +0000").to_string()),
        "requestTimeEpoch": e.timestamp,
        "httpMethod": e.method.as_str(),
        "resourcePath": e.path.as_str(),
        "path": e.path.as_str(),
        "status": e.status.to_string(),
        "protocol": "HTTP/1.1",
        "responseLength": e.response_bytes.map_or("-".to_owned(), |b| b.to_string()),
        "responseLatency": e.duration_ns.map_or("-".to_owned(), |ns| (ns / 1_000_000).to_string()),
        "apiId": e.service.as_str(),
        "xrayTraceId": e.trace_id.as_deref().map_or("-".to_owned(), |t| format!("Root={t}")),
    })
    .to_string()
}

fn gcp(e: &Event) -> String {
    let mut http = json!({
        "requestMethod": e.method.as_str(),
        "requestUrl": format!("https://api.example.com{}", e.path),
        "status": e.status,
        "remoteIp": or_dash(e.client_ip.as_deref()),
        "serverIp": "10.128.0.7",
    });
    if let Some(ns) = e.duration_ns {
        http["latency"] = json!(format!("{:.6}s", ns as f64 / 1e9));
    }
    if let Some(b) = e.request_bytes {
        http["requestSize"] = json!(b.to_string());
    }
    if let Some(b) = e.response_bytes {
        http["responseSize"] = json!(b.to_string());
    }
    if let Some(ua) = &e.user_agent {
        http["userAgent"] = json!(ua.as_str());
    }
    let mut entry = json!({
        "insertId": hex_of(e, 12),
        "jsonPayload": {"@type": "type.googleapis.com/google.cloud.loadbalancing.type.LoadBalancerLogEntry", "statusDetails": "response_sent_by_backend"},
        "httpRequest": http,
        "resource": {"type": "http_load_balancer", "labels": {
            "backend_service_name": e.service.as_str(), "forwarding_rule_name": "edge-fr", "project_id": "bank-prod",
            "target_proxy_name": "edge-proxy", "url_map_name": "edge-map", "zone": e.region.as_deref().unwrap_or("global")}},
        "timestamp": iso(e.timestamp, true),
        "severity": if e.status >= 500 { "ERROR" } else { "INFO" },
        "logName": "projects/bank-prod/logs/requests",
        "receiveTimestamp": iso(e.timestamp + 900, true),
    });
    if let Some(t) = &e.trace_id {
        entry["trace"] = json!(format!("projects/bank-prod/traces/{t}"));
    }
    if let Some(s) = &e.span_id {
        entry["spanId"] = json!(s.as_str());
    }
    entry.to_string()
}

fn appgw(e: &Event) -> String {
    json!({
        "timeStamp": iso(e.timestamp, false),
        "resourceId": "/SUBSCRIPTIONS/00000000-0000-0000-0000-000000000000/RESOURCEGROUPS/BANK/PROVIDERS/MICROSOFT.NETWORK/APPLICATIONGATEWAYS/EDGE-GW",
        "listenerName": "https-listener",
        "ruleName": "api-rule",
        "backendPoolName": e.service.as_str(),
        "backendSettingName": "https-settings",
        "operationName": "ApplicationGatewayAccess",
        "category": "ApplicationGatewayAccessLog",
        "location": e.region.as_deref().unwrap_or("westeurope"),
        "properties": {
            "instanceId": e.host.as_deref().unwrap_or("appgw_0"),
            "clientIP": or_dash(e.client_ip.as_deref()),
            "clientPort": 50123,
            "httpMethod": e.method.as_str(),
            "originalRequestUriWithArgs": e.path.as_str(),
            "requestUri": e.path.as_str(),
            "requestQuery": "",
            "userAgent": or_dash(e.user_agent.as_deref()),
            "httpStatus": e.status,
            "httpVersion": "HTTP/1.1",
            "receivedBytes": e.request_bytes.unwrap_or(0),
            "sentBytes": e.response_bytes.unwrap_or(0),
            "timeTaken": e.duration_ns.map(|ns| (ns as f64 / 1e6).round() / 1e3),
            "transactionId": e.trace_id.as_deref().map_or_else(|| hex_of(e, 32), str::to_owned),
            "sslEnabled": "on",
            "serverRouted": "10.1.0.4:443",
            "serverStatus": e.status.to_string(),
            "serverResponseLatency": e.duration_ns.map_or("-".to_owned(), |ns| format!("{:.3}", ns as f64 / 1e9)),
            "host": "api.example.com",
        }
    })
    .to_string()
}

fn apim(e: &Event) -> String {
    json!({
        "Level": 4,
        "isRequestSuccess": e.status < 400,
        "time": iso(e.timestamp, false),
        "operationName": "Microsoft.ApiManagement/GatewayLogs",
        "category": "GatewayLogs",
        "durationMs": e.duration_ns.map(|ns| ns / 1_000_000),
        "callerIpAddress": or_dash(e.client_ip.as_deref()),
        "correlationId": e.trace_id.as_deref().map_or_else(|| hex_of(e, 32), str::to_owned),
        "location": e.region.as_deref().unwrap_or("West Europe"),
        "properties": {
            "method": e.method.as_str(),
            "url": format!("https://bank.azure-api.net{}", e.path),
            "backendResponseCode": e.status,
            "responseCode": e.status,
            "responseSize": e.response_bytes.unwrap_or(0),
            "cache": "none",
            "requestSize": e.request_bytes.unwrap_or(0),
            "apiId": e.service.as_str(),
            "operationId": "op",
            "apimSubscriptionId": or_dash(e.user_id.as_deref()),
            "clientProtocol": "HTTP/1.1",
            "backendProtocol": "HTTP/1.1",
            "apiRevision": "1",
            "clientTlsVersion": "1.2",
        },
        "resourceId": "/SUBSCRIPTIONS/00000000-0000-0000-0000-000000000000/RESOURCEGROUPS/BANK/PROVIDERS/MICROSOFT.APIMANAGEMENT/SERVICE/BANK-APIM",
    })
    .to_string()
}

/// The document Elastic's AWS integration makes of an ALB line (its ingest pipeline's ECS and
/// `aws.elb.*` fields; `event.original` only where the integration preserves it, so not here).
fn elastic_elb(e: &Event) -> String {
    let region = e.region.as_deref().unwrap_or("us-east-1");
    let arn = format!(
        "arn:aws:elasticloadbalancing:{region}:123456789012:targetgroup/{}/73e2d6bc24d8a067",
        e.service
    );
    let mut doc = json!({
        "@timestamp": iso(e.timestamp, false),
        "data_stream": {"type": "logs", "dataset": "aws.elb_logs", "namespace": "default"},
        "event": {"dataset": "aws.elb_logs", "kind": "event", "category": ["web"],
                  "outcome": if e.status >= 400 { "failure" } else { "success" }},
        "cloud": {"provider": "aws", "region": region},
        "aws": {"elb": {
            "name": "app/edge-lb/50dc6c495c0c9188",
            "type": "http",
            "protocol": "http",
            "target_group": {"arn": arn},
            "request_processing_time": {"sec": 0.0},
            "backend_processing_time": {"sec": secs(e.duration_ns).unwrap_or(-1.0)},
            "response_processing_time": {"sec": 0.0},
            "backend": {"ip": e.host.as_deref().unwrap_or("10.0.1.17"), "port": "8080",
                        "http": {"response": {"status_code": e.status}}},
        }},
        "http": {
            "version": "1.1",
            "request": {"method": e.method.as_str(), "body": {"bytes": e.request_bytes.unwrap_or(0)}},
            "response": {"status_code": e.status, "body": {"bytes": e.response_bytes.unwrap_or(0)}},
        },
        "url": {"path": e.path.as_str(), "original": format!("https://api.example.com:443{}", e.path),
                "domain": "api.example.com", "scheme": "https", "port": 443},
        "source": {"ip": or_dash(e.client_ip.as_deref())},
        "tags": ["forwarded", "aws-elb-logs"],
    });
    if let Some(t) = &e.trace_id {
        doc["trace"] = json!({"id": t.as_str()});
    }
    if let Some(ua) = &e.user_agent {
        doc["user_agent"] = json!({"original": ua.as_str()});
    }
    doc.to_string()
}
