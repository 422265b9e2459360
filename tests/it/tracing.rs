//! OpenTelemetry traces end to end: a real OTLP/HTTP receiver on
//! 127.0.0.1, decoding `ExportTraceServiceRequest` with the official
//! protobuf definitions (`opentelemetry-proto`), a real gateway and a real
//! upstream. The gateway's exporter is flushed (`Tracing::flush`) before
//! the receiver is read, so no test waits on a timer.

use crate::common::redis_server::RedisServer;
use crate::common::*;
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{any_value, KeyValue};
use prost::Message;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use tokio::net::TcpListener;
use tollgate::gateway::{Deps, Gateway};

const KEY: &str = "tk_live_tracing_reader_0123";
/// A caller's trace: trace id, parent span id, sampled.
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_ID: &str = "00f067aa0ba902b7";

fn traceparent() -> String {
    format!("00-{TRACE_ID}-{PARENT_ID}-01")
}

/// One span as the receiver decoded it.
#[derive(Debug, Clone)]
struct ReceivedSpan {
    service: String,
    name: String,
    kind: i32,
    trace_id: String,
    span_id: String,
    parent_span_id: String,
    attributes: BTreeMap<String, String>,
    /// Each event's name and attributes.
    events: Vec<(String, BTreeMap<String, String>)>,
}

const SERVER: i32 = 2;
const CLIENT: i32 = 3;

/// A real OTLP/HTTP receiver: `POST /v1/traces` with a protobuf body. When
/// `answering` is false it takes each export and never answers.
struct Receiver {
    addr: SocketAddr,
    spans: Arc<Mutex<Vec<ReceivedSpan>>>,
    exports: Arc<Mutex<usize>>,
    arrived: Arc<tokio::sync::Notify>,
}

impl Receiver {
    async fn start(answering: bool) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let spans = Arc::new(Mutex::new(Vec::new()));
        let exports = Arc::new(Mutex::new(0));
        let arrived = Arc::new(tokio::sync::Notify::new());
        let (kept, counted, told) = (spans.clone(), exports.clone(), arrived.clone());
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (kept, counted, told) = (kept.clone(), counted.clone(), told.clone());
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let (kept, counted, told) = (kept.clone(), counted.clone(), told.clone());
                        async move {
                            Ok::<_, Infallible>(receive(req, answering, kept, counted, told).await)
                        }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Receiver {
            addr,
            spans,
            exports,
            arrived,
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn spans(&self) -> Vec<ReceivedSpan> {
        self.spans.lock().expect("lock").clone()
    }

    fn exports(&self) -> usize {
        *self.exports.lock().expect("lock")
    }

    /// The one span of this kind in the trace.
    fn span(&self, trace_id: &str, kind: i32) -> ReceivedSpan {
        let found: Vec<_> = self
            .spans()
            .into_iter()
            .filter(|s| s.trace_id == trace_id && s.kind == kind)
            .collect();
        assert_eq!(found.len(), 1, "spans of kind {kind}: {found:#?}");
        found[0].clone()
    }
}

async fn receive(
    req: Request<Incoming>,
    answering: bool,
    spans: Arc<Mutex<Vec<ReceivedSpan>>>,
    exports: Arc<Mutex<usize>>,
    arrived: Arc<tokio::sync::Notify>,
) -> Response<Full<Bytes>> {
    assert_eq!(req.uri().path(), "/v1/traces");
    assert_eq!(
        req.headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("application/x-protobuf")
    );
    *exports.lock().expect("lock") += 1;
    arrived.notify_one();
    if !answering {
        std::future::pending::<()>().await;
    }
    let body = req.into_body().collect().await.expect("body").to_bytes();
    let export = ExportTraceServiceRequest::decode(body).expect("an ExportTraceServiceRequest");
    let mut decoded = Vec::new();
    for resource_spans in export.resource_spans {
        let resource = resource_spans
            .resource
            .map(|r| attributes(&r.attributes))
            .unwrap_or_default();
        let service = resource.get("service.name").cloned().unwrap_or_default();
        for scope in resource_spans.scope_spans {
            for span in scope.spans {
                decoded.push(ReceivedSpan {
                    service: service.clone(),
                    name: span.name,
                    kind: span.kind,
                    trace_id: hex::encode(&span.trace_id),
                    span_id: hex::encode(&span.span_id),
                    parent_span_id: hex::encode(&span.parent_span_id),
                    attributes: attributes(&span.attributes),
                    events: span
                        .events
                        .iter()
                        .map(|e| (e.name.clone(), attributes(&e.attributes)))
                        .collect(),
                });
            }
        }
    }
    spans.lock().expect("lock").extend(decoded);
    let mut response = Response::new(Full::new(Bytes::from(
        ExportTraceServiceResponse::default().encode_to_vec(),
    )));
    response.headers_mut().insert(
        "content-type",
        http::HeaderValue::from_static("application/x-protobuf"),
    );
    response
}

fn attributes(list: &[KeyValue]) -> BTreeMap<String, String> {
    list.iter()
        .map(|kv| {
            let value = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                Some(any_value::Value::StringValue(s)) => s.clone(),
                Some(any_value::Value::IntValue(i)) => i.to_string(),
                Some(any_value::Value::BoolValue(b)) => b.to_string(),
                Some(any_value::Value::DoubleValue(d)) => d.to_string(),
                other => format!("{other:?}"),
            };
            (kv.key.clone(), value)
        })
        .collect()
}

/// A gateway with a `tracing:` section, and the handles a test reads.
struct Traced {
    gateway: TestGateway,
    deps: Deps,
}

async fn traced(up: &Upstream, tracing: &str) -> Traced {
    traced_with(up, "", 100, tracing).await
}

/// As [`traced`], with more top-level config (`before`) first and a
/// per-client rate limit of `limit` calls a minute.
async fn traced_with(up: &Upstream, before: &str, limit: u32, tracing: &str) -> Traced {
    let extra = format!(
        "{before}roles: [reader, admin]\nclients:\n  - id: hr\n    roles: [reader]\n    api_keys: [{{ sha256: {}, id: hr-2027 }}]\n\
         policies:\n  key: {{ type: auth, methods: [api_key] }}\n  \
         admins: {{ type: roles, allow: [admin], report_only: true }}\n  \
         per-client: {{ type: rate_limit, limit: {limit}, window: 1m, key: client }}\n\
         apply: [key, admins, per-client]\ntracing:\n{tracing}",
        hex::encode(Sha256::digest(KEY.as_bytes()))
    );
    let yaml = simple_config(&up.url(), &extra);
    let loaded = tollgate::config::load_str(Path::new("tollgate-test.yaml"), &yaml)
        .unwrap_or_else(|e| panic!("{e:?}"));
    let deps = test_deps(&loaded, tollgate::clock::SystemClock::shared())
        .unwrap_or_else(|e| panic!("{e:?}"));
    let gateway = Gateway::compile(loaded, &deps).unwrap_or_else(|e| panic!("{e:?}"));
    Traced {
        gateway: serve(gateway).await,
        deps,
    }
}

/// The traceparent the upstream received: (trace id, parent id, flags).
fn upstream_traceparent(seen: &Seen) -> (String, String, String) {
    let value = seen
        .headers
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .expect("the upstream got a traceparent");
    let parts: Vec<&str> = value.split('-').collect();
    assert_eq!(parts.len(), 4, "{value}");
    assert_eq!(parts[0], "00");
    (parts[1].into(), parts[2].into(), parts[3].into())
}

#[tokio::test]
async fn a_trusted_callers_trace_runs_through_the_gateway_span_to_the_upstream() {
    let receiver = Receiver::start(true).await;
    let up = Upstream::start().await;
    let traced = traced(
        &up,
        &format!(
            "  endpoint: {}\n  service_name: tollgate-test\n  trusted_callers: [127.0.0.1/32]",
            receiver.url()
        ),
    )
    .await;
    let logs = capture_logs();
    let got = traced
        .gateway
        .get_with(
            "/employees/7",
            &[
                ("x-api-key", KEY),
                ("traceparent", &traceparent()),
                ("tracestate", "vendor=abc"),
            ],
        )
        .await;
    assert_eq!(got.status, StatusCode::OK, "{:?}", got.body);
    // No key: refused by `key`.
    let refused = traced
        .gateway
        .get_with("/employees/8", &[("traceparent", &traceparent())])
        .await;
    refused.assert_problem(401, "unauthenticated");
    traced.deps.tracing.flush().await;

    // The upstream continues the caller's trace, as a child of the
    // gateway's upstream span, with the caller's tracestate.
    let seen = up.last();
    let (trace_id, parent_id, flags) = upstream_traceparent(&seen);
    assert_eq!(trace_id, TRACE_ID);
    assert_eq!(flags, "01");
    assert_eq!(
        seen.headers.get("tracestate").and_then(|v| v.to_str().ok()),
        Some("vendor=abc")
    );
    let requests: Vec<_> = receiver
        .spans()
        .into_iter()
        .filter(|s| s.kind == SERVER && s.trace_id == TRACE_ID)
        .collect();
    assert_eq!(requests.len(), 2, "{requests:#?}");
    let server = requests
        .iter()
        .find(|s| {
            s.attributes
                .get("http.response.status_code")
                .map(String::as_str)
                == Some("200")
        })
        .cloned()
        .expect("the answered call's span");
    let upstream = receiver.span(TRACE_ID, CLIENT);
    assert_eq!(server.parent_span_id, PARENT_ID, "{server:#?}");
    assert_eq!(upstream.parent_span_id, server.span_id, "{upstream:#?}");
    assert_eq!(
        parent_id, upstream.span_id,
        "the upstream's parent is the upstream span"
    );
    assert_eq!(server.service, "tollgate-test");
    assert_eq!(server.name, "GET getEmployee");
    let attr = |span: &ReceivedSpan, key: &str| span.attributes.get(key).cloned();
    assert_eq!(attr(&server, "tollgate.api").as_deref(), Some("directory"));
    assert_eq!(
        attr(&server, "tollgate.operation").as_deref(),
        Some("getEmployee")
    );
    assert_eq!(attr(&server, "tollgate.client").as_deref(), Some("hr"));
    assert_eq!(attr(&server, "tollgate.key_id").as_deref(), Some("hr-2027"));
    assert_eq!(
        attr(&server, "http.response.status_code").as_deref(),
        Some("200")
    );
    assert_eq!(
        attr(&server, "tollgate.rate_limit.decision").as_deref(),
        Some("allowed")
    );
    assert_eq!(
        attr(&server, "tollgate.rate_limit.policy").as_deref(),
        Some("per-client")
    );
    assert_eq!(
        attr(&server, "tollgate.rate_limit.remaining").as_deref(),
        Some("99")
    );
    assert_eq!(
        attr(&upstream, "http.response.status_code").as_deref(),
        Some("200")
    );
    // The key is never recorded, anywhere.
    for span in receiver.spans() {
        assert!(!format!("{span:?}").contains(KEY), "{span:#?}");
    }
    // The report-only `admins` would have refused: an event, not a refusal.
    let event = |span: &ReceivedSpan, name: &str| {
        span.events
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, a)| (a["tollgate.policy"].clone(), a["tollgate.code"].clone()))
    };
    assert_eq!(
        event(&server, "policy.would_refuse"),
        Some(("admins".into(), "forbidden_role".into()))
    );
    assert_eq!(event(&server, "policy.refused"), None);
    // The refused call: its own server span (same caller trace), the
    // refusal as an event, and no upstream span.
    let refusal = requests
        .iter()
        .find(|s| s.span_id != server.span_id)
        .expect("the refused call's span");
    assert_eq!(refusal.trace_id, TRACE_ID);
    assert_eq!(
        event(refusal, "policy.refused"),
        Some(("key".into(), "unauthenticated".into()))
    );
    assert_eq!(
        attr(refusal, "tollgate.code").as_deref(),
        Some("unauthenticated")
    );
    assert_eq!(
        attr(refusal, "http.response.status_code").as_deref(),
        Some("401")
    );

    // The trace id is in the access log line.
    let access = logs.access();
    assert_eq!(access.len(), 2, "{access:?}");
    assert!(
        access.iter().all(|l| l["trace_id"] == TRACE_ID),
        "{access:?}"
    );
    print_trace(&receiver.spans());
}

/// The spans as the receiver got them (shown with `--nocapture`; the
/// README's example trace is this output).
fn print_trace(spans: &[ReceivedSpan]) {
    for span in spans {
        println!(
            "{} kind={} trace={} span={} parent={} service={}",
            span.name, span.kind, span.trace_id, span.span_id, span.parent_span_id, span.service
        );
        for (key, value) in &span.attributes {
            println!("    {key} = {value}");
        }
        for (name, attributes) in &span.events {
            println!("    event {name} {attributes:?}");
        }
    }
}

#[tokio::test]
async fn an_untrusted_callers_traceparent_starts_a_new_trace() {
    let receiver = Receiver::start(true).await;
    let up = Upstream::start().await;
    let traced = traced(
        &up,
        &format!(
            "  endpoint: {}/v1/traces\n  trusted_callers: [10.0.0.0/8]",
            receiver.url()
        ),
    )
    .await;
    let got = traced
        .gateway
        .get_with(
            "/employees/7",
            &[
                ("x-api-key", KEY),
                ("traceparent", &traceparent()),
                ("tracestate", "vendor=abc"),
            ],
        )
        .await;
    assert_eq!(got.status, StatusCode::OK, "{:?}", got.body);
    traced.deps.tracing.flush().await;

    let seen = up.last();
    let (trace_id, parent_id, _) = upstream_traceparent(&seen);
    assert_ne!(trace_id, TRACE_ID, "the caller's trace is not continued");
    assert!(
        seen.headers.get("tracestate").is_none(),
        "{:?}",
        seen.headers
    );
    let server = receiver.span(&trace_id, SERVER);
    let upstream = receiver.span(&trace_id, CLIENT);
    assert_eq!(server.parent_span_id, "", "a root span: {server:#?}");
    assert_eq!(server.service, "tollgate");
    assert_eq!(upstream.parent_span_id, server.span_id);
    assert_eq!(parent_id, upstream.span_id);
    assert!(receiver.spans().iter().all(|s| s.trace_id != TRACE_ID));
}

#[tokio::test]
async fn a_sampling_ratio_of_zero_exports_nothing_and_still_propagates() {
    let receiver = Receiver::start(true).await;
    let up = Upstream::start().await;
    let traced = traced(
        &up,
        &format!("  endpoint: {}\n  sampling_ratio: 0", receiver.url()),
    )
    .await;
    for id in 0..3 {
        let got = traced
            .gateway
            .get_with(&format!("/employees/{id}"), &[("x-api-key", KEY)])
            .await;
        assert_eq!(got.status, StatusCode::OK);
    }
    traced.deps.tracing.flush().await;
    assert_eq!(receiver.exports(), 0, "{:#?}", receiver.spans());
    // The upstream still gets a (not sampled) trace context.
    let (trace_id, _, flags) = upstream_traceparent(&up.last());
    assert_eq!(trace_id.len(), 32);
    assert_eq!(flags, "00");
}

#[tokio::test]
async fn a_collector_that_never_answers_neither_slows_nor_fails_requests() {
    let receiver = Receiver::start(false).await;
    let up = Upstream::start().await;
    let traced = traced(
        &up,
        &format!(
            "  endpoint: {}\n  max_queue: 2\n  max_batch: 1\n  export_timeout: 2s",
            receiver.url()
        ),
    )
    .await;
    let got = traced
        .gateway
        .get_with("/employees/1", &[("x-api-key", KEY)])
        .await;
    assert_eq!(got.status, StatusCode::OK);
    // A batch of one is exported at once; the collector holds it.
    receiver.arrived.notified().await;
    for id in 0..10 {
        let got = traced
            .gateway
            .get_with(&format!("/employees/{id}"), &[("x-api-key", KEY)])
            .await;
        assert_eq!(got.status, StatusCode::OK);
    }
    // Two spans per call, two waiting at most while the export hangs.
    let metrics = traced.deps.metrics.render(None);
    let dropped = sample(&metrics, "tollgate_trace_spans_dropped_total").unwrap_or(0.0);
    assert!(dropped >= 18.0, "dropped {dropped}:\n{metrics}");
}

#[tokio::test]
async fn a_redis_store_call_is_a_child_span_of_the_request() {
    let redis = RedisServer::start().await;
    let receiver = Receiver::start(true).await;
    let up = Upstream::start().await;
    let traced = traced_with(
        &up,
        &format!("state: {{store: redis, redis_url: \"{}\"}}\n", redis.url()),
        100,
        &format!("  endpoint: {}", receiver.url()),
    )
    .await;
    let got = traced
        .gateway
        .get_with("/employees/7", &[("x-api-key", KEY)])
        .await;
    assert_eq!(got.status, StatusCode::OK, "{:?}", got.body);
    traced.deps.tracing.flush().await;
    let (trace_id, _, _) = upstream_traceparent(&up.last());
    let server = receiver.span(&trace_id, SERVER);
    let spans = receiver.spans();
    let gcra: Vec<_> = spans.iter().filter(|s| s.name == "gcra").collect();
    assert_eq!(gcra.len(), 1, "{spans:#?}");
    assert_eq!(gcra[0].kind, CLIENT);
    assert_eq!(gcra[0].trace_id, trace_id);
    assert_eq!(gcra[0].parent_span_id, server.span_id);
    assert_eq!(gcra[0].attributes["db.system.name"], "redis");
    assert_eq!(
        attr_of(&server, "tollgate.rate_limit.remaining").as_deref(),
        Some("99")
    );
}

#[tokio::test]
async fn a_rate_limited_call_records_the_decision_and_the_refusal() {
    let receiver = Receiver::start(true).await;
    let up = Upstream::start().await;
    let traced = traced_with(&up, "", 1, &format!("  endpoint: {}", receiver.url())).await;
    let first = traced
        .gateway
        .get_with("/employees/1", &[("x-api-key", KEY)])
        .await;
    assert_eq!(first.status, StatusCode::OK);
    let second = traced
        .gateway
        .get_with("/employees/2", &[("x-api-key", KEY)])
        .await;
    second.assert_problem(429, "rate_limited");
    traced.deps.tracing.flush().await;
    let servers: Vec<_> = receiver
        .spans()
        .into_iter()
        .filter(|s| s.kind == SERVER)
        .collect();
    assert_eq!(servers.len(), 2, "{servers:#?}");
    let by_status = |status: &str| {
        servers
            .iter()
            .find(|s| attr_of(s, "http.response.status_code").as_deref() == Some(status))
            .cloned()
            .unwrap_or_else(|| panic!("no {status} span: {servers:#?}"))
    };
    let (allowed, limited) = (by_status("200"), by_status("429"));
    assert_eq!(
        attr_of(&allowed, "tollgate.rate_limit.decision").as_deref(),
        Some("allowed")
    );
    assert_eq!(
        attr_of(&allowed, "tollgate.rate_limit.remaining").as_deref(),
        Some("0")
    );
    assert_eq!(
        attr_of(&limited, "tollgate.rate_limit.decision").as_deref(),
        Some("limited")
    );
    assert_eq!(
        attr_of(&limited, "tollgate.code").as_deref(),
        Some("rate_limited")
    );
    let refusal = limited
        .events
        .iter()
        .find(|(name, _)| name == "policy.refused")
        .map(|(_, a)| (a["tollgate.policy"].as_str(), a["tollgate.code"].as_str()));
    assert_eq!(refusal, Some(("per-client", "rate_limited")));
    // The refused call never reached the upstream: no span for it.
    let clients = receiver.spans().iter().filter(|s| s.kind == CLIENT).count();
    assert_eq!(clients, 1);
}

fn attr_of(span: &ReceivedSpan, key: &str) -> Option<String> {
    span.attributes.get(key).cloned()
}

#[test]
fn tracing_config_mistakes_are_reported_at_their_line() {
    let yaml = simple_config(
        "http://127.0.0.1:9",
        "tracing:\n  endpoint: ftp://collector\n  sampling_ratio: 2\n  trusted_callers: [not-a-cidr]",
    );
    let errors = compile(
        Path::new("tollgate-test.yaml"),
        &yaml,
        tollgate::clock::SystemClock::shared(),
    )
    .err()
    .expect("refused");
    let text = errors.join("\n");
    for expected in [
        "tollgate-test.yaml:4:3: tracing.endpoint: `ftp://collector` is not an http:// or https:// URL",
        "tollgate-test.yaml:5:3: tracing.sampling_ratio: the sampling ratio is a share from 0 to 1, not 2",
        "tollgate-test.yaml:6:21: tracing.trusted_callers[0]: `not-a-cidr` is not a CIDR",
    ] {
        assert!(text.contains(expected), "{expected}\nnot in:\n{text}");
    }
}

#[test]
fn a_reload_refuses_a_bad_tracing_section() {
    let path = Path::new("tollgate-test.yaml");
    let running = tollgate::config::load_str(path, &simple_config("http://127.0.0.1:9", ""))
        .unwrap_or_else(|e| panic!("{e:?}"));
    let deps = test_deps(&running, tollgate::clock::SystemClock::shared())
        .unwrap_or_else(|e| panic!("{e:?}"));
    let reloaded = tollgate::config::load_str(
        path,
        &simple_config("http://127.0.0.1:9", "tracing:\n  endpoint: collector:4318"),
    )
    .unwrap_or_else(|e| panic!("{e:?}"));
    let errors: Vec<String> = Gateway::compile(reloaded, &deps)
        .err()
        .expect("refused")
        .iter()
        .map(|e| e.to_string())
        .collect();
    assert_eq!(
        errors,
        ["tollgate-test.yaml:4:3: tracing.endpoint: `collector:4318` is not an http:// or https:// URL"]
    );
}
