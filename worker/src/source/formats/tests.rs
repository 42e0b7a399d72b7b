//! Each format against lines written from its provider's documentation (the corpus in
//! `worker/tests/data/formats/`), recognition of every corpus, and generated logs of every
//! format read back.

use super::*;
use crate::model::time::parse_rfc3339;

fn corpus(name: &str) -> &'static str {
    match name {
        "aws-alb" => include_str!("../../../tests/data/formats/aws-alb.log"),
        "envoy" => include_str!("../../../tests/data/formats/envoy.log"),
        "aws-apigw" => include_str!("../../../tests/data/formats/aws-apigw.log"),
        "gcp-lb" => include_str!("../../../tests/data/formats/gcp-lb.log"),
        "azure-appgw" => include_str!("../../../tests/data/formats/azure-appgw.log"),
        "azure-apim" => include_str!("../../../tests/data/formats/azure-apim.log"),
        "nginx-default" => include_str!("../../../tests/data/formats/nginx-default.log"),
        "nginx" => include_str!("../../../tests/data/formats/nginx.log"),
        "apache" => include_str!("../../../tests/data/formats/apache.log"),
        "json" => include_str!("../../../tests/data/formats/json.log"),
        "elastic-aws-elb" => include_str!("../../../tests/data/formats/elastic-aws-elb.log"),
        other => panic!("no corpus {other}"),
    }
}

fn parse_all(format: LogFormat, text: &str, input: &InputFormat) -> Vec<Event> {
    let p = LineParser::new(format, input).unwrap();
    text.lines()
        .enumerate()
        .map(|(i, l)| {
            p.parse(l.as_bytes())
                .unwrap_or_else(|e| panic!("{}:{}: {e}", format.name(), i + 1))
                .0
        })
        .collect()
}

fn read(format: LogFormat) -> Vec<Event> {
    parse_all(format, corpus(format.name()), &InputFormat::default())
}

fn t(s: &str) -> i64 {
    parse_rfc3339(s).unwrap()
}

#[test]
fn alb_lines_map_as_aws_documents_them() {
    let e = read(LogFormat::AwsAlb);
    assert_eq!(
        e[0].timestamp,
        t("2018-07-02T22:22:48.364Z"),
        "request_creation_time: when it arrived"
    );
    assert_eq!(
        (e[0].service.as_str(), e[0].provider.as_str(), e[0].region.as_deref()),
        ("my-targets", "aws", Some("us-east-2"))
    );
    assert_eq!((e[0].method.as_str(), e[0].path.as_str(), e[0].status), ("GET", "/", 200));
    assert_eq!(e[0].duration_ns, Some(1_000_000));
    assert_eq!(e[0].trace_id.as_deref(), Some("1-58337262-36d228ad5d99923122bbe354"));
    assert_eq!(
        (e[0].client_ip.as_deref(), e[0].host.as_deref()),
        (Some("192.168.131.39"), Some("10.0.0.1"))
    );
    assert_eq!((e[0].request_bytes, e[0].response_bytes), (Some(34), Some(366)));
    assert_eq!(e[1].path.as_str(), "/api/v1/accounts/42");
    assert_eq!(e[1].duration_ns, Some(171_000_000), "the three processing times added");
    assert_eq!(e[1].user_agent.as_deref(), Some("Mozilla/5.0 \"quoted\" (X11)"));
    assert_eq!(
        (e[2].client_ip.as_deref(), e[2].region.as_deref(), e[2].status),
        (Some("2001:db8:85a3::8a2e:370:7334"), Some("eu-west-1"), 503)
    );
    assert_eq!(
        (e[3].duration_ns, e[3].status, e[3].host.as_deref()),
        (None, 502, None),
        "-1: never reached a target"
    );
    assert_eq!(
        (e[4].service.as_str(), e[4].path.as_str(), e[4].user_agent.as_deref()),
        ("chat", "/socket", None)
    );
}

#[test]
fn envoy_and_istio_text_and_json_lines_read_alike() {
    let e = parse_all(
        LogFormat::Envoy,
        corpus("envoy"),
        &InputFormat {
            provider: Some("onprem".into()),
            ..InputFormat::default()
        },
    );
    assert_eq!(
        (e[0].service.as_str(), e[0].provider.as_str()),
        ("locations", "onprem"),
        ":authority names the service"
    );
    assert_eq!(
        (e[0].method.as_str(), e[0].path.as_str(), e[0].status),
        ("POST", "/api/v1/locations", 204)
    );
    assert_eq!(
        (e[0].duration_ns, e[0].request_bytes, e[0].response_bytes),
        (Some(226_000_000), Some(154), Some(0))
    );
    assert_eq!(e[0].host.as_deref(), Some("10.0.2.1"));
    assert_eq!(e[1].service.as_str(), "httpbin", "the outbound cluster names the service");
    assert_eq!(
        (e[1].status, e[1].duration_ns, e[1].client_ip.as_deref()),
        (418, Some(4_000_000), Some("10.44.1.23"))
    );
    assert_eq!(e[2].service.as_str(), "reviews", "an inbound cluster does not: the authority does");
    assert_eq!((e[2].path.as_str(), e[2].client_ip.as_deref()), ("/reviews/0", Some("2001:db8::5")));
    assert_eq!(e[2].user_agent.as_deref(), Some("Mozilla/5.0 \"beta\""));
    let (text, json) = (&e[1], &e[3]);
    assert_eq!(text, json, "Istio's JSON encoding of the same call reads the same");
}

#[test]
fn api_gateway_lines_map_with_and_without_latency() {
    let e = parse_all(
        LogFormat::AwsApigw,
        corpus("aws-apigw"),
        &InputFormat {
            service: Some("petstore".into()),
            ..InputFormat::default()
        },
    );
    assert_eq!(e[0].timestamp, t("2026-11-27T16:04:05Z"));
    assert_eq!(
        (e[0].service.as_str(), e[0].provider.as_str()),
        ("petstore", "aws"),
        "--service where the line has no api id"
    );
    assert_eq!(
        (e[0].path.as_str(), e[0].duration_ns, e[0].response_bytes),
        ("/pets/{petId}", None, Some(43))
    );
    assert_eq!(e[1].timestamp, 1_795_795_446_123, "requestTimeEpoch first");
    assert_eq!(
        (e[1].service.as_str(), e[1].path.as_str(), e[1].status),
        ("a1b2c3d4e5", "/orders", 502)
    );
    assert_eq!(e[1].duration_ns, Some(29_012_000_000));
    assert_eq!(e[1].trace_id.as_deref(), Some("1-6566d1c6-5b1e3f4c7d9e0a1b2c3d4e5f"));
    assert_eq!((e[1].client_ip.as_deref(), e[1].response_bytes), (Some("2001:db8::7"), None));
    assert_eq!(
        (e[2].service.as_str(), e[2].path.as_str(), e[2].user_id.as_deref()),
        ("api.example.com", "/prod/pets/7", Some("alice"))
    );
}

#[test]
fn google_cloud_load_balancer_entries_map() {
    let e = read(LogFormat::GcpLb);
    assert_eq!(e[0].timestamp, t("2026-11-27T16:04:05.123Z"));
    assert_eq!(
        (e[0].service.as_str(), e[0].provider.as_str(), e[0].region.as_deref()),
        ("cart-backend", "gcp", Some("global"))
    );
    assert_eq!(
        (e[0].path.as_str(), e[0].status, e[0].duration_ns),
        ("/api/cart", 200, Some(12_345_000))
    );
    assert_eq!(
        (e[0].request_bytes, e[0].response_bytes),
        (Some(523), Some(1845)),
        "int64 sizes come as text"
    );
    assert_eq!(e[0].trace_id.as_deref(), Some("4bf92f3577b34da6a3ce929d0e0e4736"));
    assert_eq!(e[0].span_id.as_deref(), Some("00f067aa0ba902b7"));
    assert_eq!(e[1].service.as_str(), "shop-map", "no backend service: the URL map");
    assert_eq!(
        (e[1].region.as_deref(), e[1].status, e[1].client_ip.as_deref()),
        (Some("europe-west1"), 502, Some("2001:db8::a"))
    );
    assert_eq!(e[1].duration_ns, Some(5_002_003_000));
}

#[test]
fn azure_gateway_and_api_management_logs_map() {
    let g = read(LogFormat::AzureAppgw);
    assert_eq!(g[0].timestamp, t("2021-10-14T22:17:11Z"));
    assert_eq!(
        (g[0].service.as_str(), g[0].provider.as_str(), g[0].host.as_deref()),
        ("StaticStorageAccount", "azure", Some("appgw_2"))
    );
    assert_eq!(
        (g[0].status, g[0].duration_ns, g[0].trace_id.as_deref()),
        (200, Some(34_000_000), Some("592d1649f75a8d480a3c4dc6a975309d"))
    );
    assert_eq!(
        (g[1].region.as_deref(), g[1].path.as_str(), g[1].status),
        (Some("westeurope"), "/payments/77", 504)
    );
    assert_eq!((g[1].response_bytes, g[1].user_agent.as_deref()), (None, None));
    let m = read(LogFormat::AzureApim);
    assert_eq!(m[0].timestamp, t("2026-11-27T16:04:05.123Z"));
    assert_eq!(
        (m[0].service.as_str(), m[0].region.as_deref(), m[0].path.as_str()),
        ("echo-api", Some("West Europe"), "/echo/resource")
    );
    assert_eq!(
        (m[0].duration_ns, m[0].user_id.as_deref(), m[0].response_bytes),
        (Some(152_000_000), Some("master"), Some(820))
    );
    assert_eq!(
        (m[1].service.as_str(), m[1].status, m[1].duration_ns, m[1].user_id.as_deref()),
        ("payments-api", 500, Some(30_001_000_000), None)
    );
}

#[test]
fn alb_documents_as_elastics_aws_integration_indexes_them_map_like_the_lines() {
    let e = read(LogFormat::ElasticAwsElb);
    assert_eq!(e[0].timestamp, t("2026-03-02T08:15:04.186Z"));
    assert_eq!(
        (e[0].service.as_str(), e[0].provider.as_str(), e[0].region.as_deref()),
        ("payments-api", "aws", Some("eu-west-1"))
    );
    assert_eq!(
        (e[0].method.as_str(), e[0].path.as_str(), e[0].status, e[0].duration_ns),
        ("POST", "/v1/payments", 200, Some(21_000_000))
    );
    assert_eq!(e[0].trace_id.as_deref(), Some("5833726236d228ad5d99923122bbe354"));
    assert_eq!(
        (e[0].client_ip.as_deref(), e[0].host.as_deref()),
        (Some("192.168.131.39"), Some("10.0.0.1"))
    );
    assert_eq!((e[1].status, e[1].duration_ns), (503, None), "-1: never reached a target, untimed");
    assert_eq!(e[1].client_ip.as_deref(), Some("2001:db8::7"));
    assert_eq!(
        (e[2].service.as_str(), e[2].path.as_str(), e[2].region.as_deref()),
        ("bank-edge", "/robots.txt", None),
        "no target group: the balancer names it; the path from the full URL"
    );
}

#[test]
fn a_default_nginx_log_gives_untimed_events() {
    let e = parse_all(
        LogFormat::Nginx,
        corpus("nginx-default"),
        &InputFormat {
            service: Some("web".into()),
            provider: Some("onprem".into()),
            ..InputFormat::default()
        },
    );
    assert!(e.iter().all(|e| e.duration_ns.is_none()));
    assert_eq!(
        (e[1].client_ip.as_deref(), e[1].user_id.as_deref(), e[1].status),
        (Some("2001:db8::1"), Some("alice"), 401)
    );
    assert_eq!(e[1].user_agent.as_deref(), Some("Mozilla/5.0 \"quoted\" (X11)"));
}

#[test]
fn auto_recognises_every_corpus() {
    for (name, want) in [
        ("aws-alb", LogFormat::AwsAlb),
        ("envoy", LogFormat::Envoy),
        ("aws-apigw", LogFormat::AwsApigw),
        ("gcp-lb", LogFormat::GcpLb),
        ("azure-appgw", LogFormat::AzureAppgw),
        ("azure-apim", LogFormat::AzureApim),
        ("nginx-default", LogFormat::Nginx),
        ("nginx", LogFormat::Nginx),
        ("apache", LogFormat::Apache),
        ("json", LogFormat::Json),
        ("elastic-aws-elb", LogFormat::ElasticAwsElb),
    ] {
        let r = recognise(corpus(name).lines());
        assert_eq!(r.format, Some(want), "{name}: {r:?}");
        assert_eq!(r.matched, r.sampled, "{name}: every line recognised: {r:?}");
    }
    let other = recognise([r#"{"ts": 1772431201123, "svc": "payments", "resp_ms": 12}"#]);
    assert_eq!(other.format, None);
    assert!(
        other.unknown_hint().contains("keys: ts, svc, resp_ms") || other.unknown_hint().contains("resp_ms"),
        "{}",
        other.unknown_hint()
    );
    assert!(recognise(["GET / 200", "hello"]).unknown_hint().contains("none of the formats"));
}

#[test]
fn every_preset_file_reads_and_names_contract_fields_only() {
    for f in LogFormat::ALL {
        if let Some(p) = preset(f).unwrap() {
            assert!(!p.map.is_empty(), "{}", f.name());
            assert!(p.map.has_duration(), "{} maps a duration", f.name());
        }
    }
}

#[test]
fn generated_logs_of_every_format_read_back_what_they_carry() {
    let sim = crate::simulate::SimConfig {
        seed: 907,
        duration: 30 * crate::model::time::MINUTE_MS,
        rate: 8.0,
        max_events: Some(10_000),
        ..Default::default()
    };
    let (events, _) = crate::simulate::simulate_events(sim).unwrap();
    assert!(events.len() >= 10_000);
    for format in LogFormat::ALL.into_iter().skip(1) {
        let text: Vec<String> = events.iter().map(|e| write::line(e, format)).collect();
        let seen = recognise(text.iter().take(20).map(String::as_str));
        assert_eq!(seen.format, Some(format), "{}: {seen:?}", format.name());
        let input = InputFormat {
            provider: Some("onprem".into()),
            ..InputFormat::default()
        };
        let p = LineParser::new(format, &input).unwrap();
        let mut parsed = 0;
        for (e, line) in events.iter().zip(&text) {
            let Ok((back, _)) = p.parse(line.as_bytes()) else { continue };
            parsed += 1;
            let what = || format!("{}: {line}", format.name());
            assert_eq!(back.timestamp, e.timestamp, "{}", what());
            assert_eq!(
                (back.method.as_str(), back.path.as_str(), back.status),
                (e.method.as_str(), e.path.as_str(), e.status),
                "{}",
                what()
            );
            assert_eq!(back.service, e.service, "{}", what());
            let (a, b) = (back.duration_ns.unwrap_or(0) as f64 / 1e6, e.duration_ns.unwrap_or(0) as f64 / 1e6);
            assert!((a - b).abs() <= 1.0, "{}: {a} ms against {b} ms", what());
        }
        assert!(
            parsed * 1000 >= events.len() * 999,
            "{}: {parsed} of {} parsed",
            format.name(),
            events.len()
        );
    }
}
