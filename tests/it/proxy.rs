//! Forwarding and the gateway's own errors, end to end: a real upstream and
//! a real gateway on loopback; each test checks what reached the upstream
//! and what the client saw (DESIGN §4, §5).

use crate::common::*;
use bytes::Bytes;
use futures_util::stream;
use http::{Method, Request};
use http_body::Frame;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::time::Duration;

#[tokio::test]
async fn a_get_reaches_the_upstream_with_path_query_and_forwarding_headers() {
    let up = Upstream::start().await;
    let gw = gateway(&simple_config(&up.url(), "")).await;
    let got = gw.get("/employees/42?fields=name&x=%20y").await;
    assert_eq!(got.status, 200, "{:?}", got.body);
    assert_eq!(got.json()["uri"], "/42?fields=name&x=%20y");
    let seen = up.last();
    assert_eq!(seen.method, "GET");
    assert_eq!(seen.headers["x-forwarded-for"], "127.0.0.1");
    assert_eq!(seen.headers["x-forwarded-proto"], "http");
    assert_eq!(
        seen.headers["x-forwarded-host"],
        gw.addr.to_string().as_str()
    );
    assert_eq!(seen.headers["x-tollgate-operation"], "getEmployee");
    assert_eq!(seen.headers["host"], up.addr.to_string().as_str());
    let id = got.header("x-request-id").expect("request id").to_string();
    assert_eq!(seen.headers["x-request-id"], id.as_str());
    assert_eq!(id.len(), 32);
    // Hop-by-hop headers of the upstream's response do not reach the client.
    assert!(got.headers.get("keep-alive").is_none());
    gw.shutdown().await;
}

#[tokio::test]
async fn an_operation_upstream_template_gets_params_and_both_queries() {
    let up = Upstream::start().await;
    let gw = gateway(&simple_config(&up.url(), "")).await;
    let req = Request::post(gw.url("/wf/onboard-hire/run?dry=1"))
        .body(Full::new(Bytes::from_static(b"{\"name\":\"Ada\"}")))
        .expect("request");
    let got = gw.send(req).await;
    assert_eq!(got.status, 200);
    let seen = up.last();
    assert_eq!(seen.method, Method::POST);
    assert_eq!(
        seen.uri,
        "/workflows/onboard-hire/trigger?source=tollgate&dry=1"
    );
    assert_eq!(seen.body, "{\"name\":\"Ada\"}");
    assert_eq!(seen.headers["x-tollgate-operation"], "runWorkflow");
    gw.shutdown().await;
}

#[tokio::test]
async fn a_catch_all_parameter_forwards_the_rest_of_the_path() {
    let up = Upstream::start().await;
    let gw = gateway(&simple_config(&up.url(), "")).await;
    assert_eq!(gw.get("/employees/files/a/b/c.txt").await.status, 200);
    assert_eq!(up.last().uri, "/files/a/b/c.txt");
    gw.shutdown().await;
}

#[tokio::test]
async fn a_large_body_streams_through_unchanged() {
    let up = Upstream::start().await;
    let gw = gateway(&simple_config(&up.url(), "limits: { max_body: 8MiB }")).await;
    let body: Vec<u8> = (0..4 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    let req = Request::post(gw.url("/employees/"))
        .body(Full::new(Bytes::from(body.clone())))
        .expect("request");
    let got = gw.send(req).await;
    assert_eq!(got.status, 200);
    assert_eq!(up.last().body, body);
    // A large response streams back too.
    let big = gw.get("/employees/files/big/3000000").await;
    assert_eq!(big.status, 200);
    assert_eq!(big.body.len(), 3_000_000);
    gw.shutdown().await;
}

fn chunked(
    chunks: Vec<&'static [u8]>,
) -> http_body_util::combinators::BoxBody<Bytes, std::io::Error> {
    StreamBody::new(stream::iter(
        chunks
            .into_iter()
            .map(|c| Ok::<_, std::io::Error>(Frame::data(Bytes::from_static(c)))),
    ))
    .boxed()
}

#[tokio::test]
async fn a_chunked_body_is_forwarded_whole() {
    let up = Upstream::start().await;
    let gw = gateway(&simple_config(&up.url(), "")).await;
    let client = Client::builder(TokioExecutor::new()).build_http();
    let req = Request::post(gw.url("/employees/"))
        .body(chunked(vec![b"first,", b"second,", b"third"]))
        .expect("request");
    let response = client.request(req).await.expect("answer");
    assert_eq!(response.status(), 200);
    assert_eq!(up.last().body, "first,second,third");
    gw.shutdown().await;
}

#[tokio::test]
async fn a_chunked_body_over_max_body_is_refused_with_413() {
    let up = Upstream::start().await;
    let gw = gateway(&simple_config(&up.url(), "limits: { max_body: 10 }")).await;
    let client = Client::builder(TokioExecutor::new()).build_http();
    let req = Request::post(gw.url("/employees/"))
        .body(chunked(vec![b"0123456", b"789abc"]))
        .expect("request");
    let response = client.request(req).await.expect("answer");
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    assert_eq!(status, 413, "{body:?}");
    let json: serde_json::Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(json["code"], "body_too_large");
    // The upstream may have seen the start of the stream, but never the whole.
    assert!(up.seen().iter().all(|s| s.body != "0123456789abc"));
    gw.shutdown().await;
}

#[tokio::test]
async fn a_declared_body_over_max_body_is_refused_before_forwarding() {
    let up = Upstream::start().await;
    let gw = gateway(&simple_config(&up.url(), "limits: { max_body: 1KiB }")).await;
    let req = Request::post(gw.url("/employees/"))
        .body(Full::new(Bytes::from(vec![b'a'; 2048])))
        .expect("request");
    gw.send(req).await.assert_problem(413, "body_too_large");
    assert_eq!(up.count(), 0);
    gw.shutdown().await;
}

#[tokio::test]
async fn hop_by_hop_and_spoofed_identity_headers_never_reach_the_upstream() {
    let up = Upstream::start().await;
    let gw = gateway(&simple_config(&up.url(), "")).await;
    let got = gw
        .get_with(
            "/employees/1",
            &[
                ("connection", "x-private"),
                ("x-private", "secret"),
                ("te", "trailers"),
                ("x-tollgate-client", "admin"),
                ("x-tollgate-operation", "deleteEverything"),
                ("x-forwarded-for", "6.6.6.6"),
                ("x-forwarded-host", "evil.example"),
                ("x-request-id", "chosen-by-caller"),
                ("forwarded", "for=6.6.6.6"),
                ("x-custom", "kept"),
            ],
        )
        .await;
    assert_eq!(got.status, 200);
    let seen = up.last();
    for gone in ["x-private", "te", "x-tollgate-client", "forwarded"] {
        assert!(
            seen.headers.get(gone).is_none(),
            "{gone} reached the upstream"
        );
    }
    assert_eq!(seen.headers["x-tollgate-operation"], "getEmployee");
    assert_eq!(seen.headers["x-forwarded-for"], "127.0.0.1");
    assert_eq!(
        seen.headers["x-forwarded-host"],
        gw.addr.to_string().as_str()
    );
    assert_ne!(seen.headers["x-request-id"], "chosen-by-caller");
    assert_eq!(seen.headers["x-custom"], "kept");
    gw.shutdown().await;
}

#[tokio::test]
async fn a_trusted_proxy_keeps_its_forwarding_headers_and_request_id() {
    let up = Upstream::start().await;
    let gw = gateway(&simple_config(&up.url(), "trusted_proxies: [127.0.0.1]")).await;
    let got = gw
        .get_with(
            "/employees/1",
            &[
                ("x-forwarded-for", "203.0.113.9"),
                ("x-forwarded-proto", "https"),
                ("x-request-id", "edge-123"),
                ("x-tollgate-client", "admin"),
            ],
        )
        .await;
    assert_eq!(got.header("x-request-id"), Some("edge-123"));
    let seen = up.last();
    assert_eq!(seen.headers["x-forwarded-for"], "203.0.113.9, 127.0.0.1");
    assert_eq!(seen.headers["x-forwarded-proto"], "https");
    assert_eq!(seen.headers["x-request-id"], "edge-123");
    // Even a trusted proxy cannot name the client.
    assert!(seen.headers.get("x-tollgate-client").is_none());
    gw.shutdown().await;
}

#[tokio::test]
async fn unknown_paths_are_404_and_wrong_methods_405_with_allow() {
    let up = Upstream::start().await;
    let gw = gateway(&simple_config(&up.url(), "")).await;
    gw.get("/nowhere")
        .await
        .assert_problem(404, "route_not_found");
    gw.get("/EMPLOYEES/1")
        .await
        .assert_problem(404, "route_not_found");
    let req = Request::delete(gw.url("/employees/1"))
        .body(Full::default())
        .expect("request");
    let got = gw.send(req).await;
    got.assert_problem(405, "method_not_allowed");
    assert_eq!(got.header("allow"), Some("GET, HEAD"));
    assert_eq!(up.count(), 0);
    gw.shutdown().await;
}

#[tokio::test]
async fn paths_are_normalised_before_routing_and_forwarded_normalised() {
    let up = Upstream::start().await;
    let gw = gateway(&simple_config(&up.url(), "")).await;
    for (path, expect) in [
        ("/employees/../employees/42", "/42"),
        ("//employees//42", "/42"),
        ("/employees/./x/%2e%2e/42", "/42"),
        ("/employees/%34%32", "/42"),
    ] {
        let reply = raw_exchange(
            gw.addr,
            format!("GET {path} HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n").as_bytes(),
            Duration::from_secs(5),
        )
        .await;
        assert!(reply.starts_with("HTTP/1.1 200"), "{path}: {reply}");
        assert_eq!(up.last().uri, expect, "{path}");
    }
    gw.shutdown().await;
}

#[tokio::test]
async fn encoded_slashes_nul_and_broken_escapes_are_400_invalid_path() {
    let up = Upstream::start().await;
    let gw = gateway(&simple_config(&up.url(), "")).await;
    for path in [
        "/employees/a%2Fb",
        "/employees/a%5cb",
        "/employees/%00",
        "/employees/%zz",
        "/employees/%4",
    ] {
        let reply = raw_exchange(
            gw.addr,
            format!("GET {path} HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n").as_bytes(),
            Duration::from_secs(5),
        )
        .await;
        assert!(reply.starts_with("HTTP/1.1 400"), "{path}: {reply}");
        assert!(
            reply.contains("\"code\":\"invalid_path\""),
            "{path}: {reply}"
        );
        assert!(
            reply.contains("application/problem+json"),
            "{path}: {reply}"
        );
    }
    assert_eq!(up.count(), 0);
    gw.shutdown().await;
}

#[tokio::test]
async fn headers_over_max_header_bytes_are_431() {
    let up = Upstream::start().await;
    let gw = gateway(&simple_config(
        &up.url(),
        "limits: { max_header_bytes: 1KiB }",
    ))
    .await;
    let big = "v".repeat(1500);
    gw.get_with("/employees/1", &[("x-big", &big)])
        .await
        .assert_problem(431, "headers_too_large");
    assert_eq!(up.count(), 0);
    // Far past the limit, the connection layer refuses it too, never the upstream.
    let huge = "v".repeat(64 * 1024);
    let reply = raw_exchange(
        gw.addr,
        format!("GET /employees/1 HTTP/1.1\r\nhost: t\r\nx-huge: {huge}\r\n\r\n").as_bytes(),
        Duration::from_secs(5),
    )
    .await;
    assert!(reply.starts_with("HTTP/1.1 431"), "{reply}");
    assert_eq!(up.count(), 0);
    gw.shutdown().await;
}

#[tokio::test]
async fn an_unreachable_upstream_is_502() {
    let dead = closed_port().await;
    let gw = gateway(&simple_config(&format!("http://{dead}"), "")).await;
    gw.get("/employees/1")
        .await
        .assert_problem(502, "upstream_unavailable");
    gw.shutdown().await;
}

#[tokio::test]
async fn an_upstream_slower_than_its_timeout_is_504() {
    let up = Upstream::start().await;
    let gw = gateway(&simple_config(&up.url(), "")).await;
    let json = gw
        .get("/wf/hang")
        .await
        .assert_problem(504, "upstream_timeout");
    assert!(json["detail"].as_str().is_some());
    assert_eq!(up.count(), 1);
    gw.shutdown().await;
}

#[tokio::test]
async fn a_request_with_content_length_and_chunked_cannot_smuggle_a_second_request() {
    let up = Upstream::start().await;
    let gw = gateway(&simple_config(&up.url(), "")).await;
    // The body per Content-Length would end inside the chunked framing; per
    // Transfer-Encoding the chunked body ends at `0`, and what follows would
    // be a second request if the connection were kept.
    let attack = "POST /employees/ HTTP/1.1\r\nhost: t\r\ncontent-length: 50\r\ntransfer-encoding: chunked\r\n\r\n\
                  3\r\nabc\r\n0\r\n\r\nGET /employees/smuggled HTTP/1.1\r\nhost: t\r\n\r\n";
    let reply = raw_exchange(gw.addr, attack.as_bytes(), Duration::from_secs(2)).await;
    assert_eq!(reply.matches("HTTP/1.1 ").count(), 1, "{reply}");
    let seen = up.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].body, "abc");
    assert!(seen[0]
        .headers
        .get("content-length")
        .map_or(true, |v| v == "3"));
    assert!(seen.iter().all(|s| !s.uri.contains("smuggled")));
    gw.shutdown().await;
}

#[tokio::test]
async fn http2_prior_knowledge_is_served_and_forwarded_as_http1() {
    let up = Upstream::start().await;
    let gw = gateway(&simple_config(&up.url(), "")).await;
    let client = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http::<Full<Bytes>>();
    let response = client
        .request(
            Request::get(gw.url("/employees/9"))
                .body(Full::default())
                .expect("request"),
        )
        .await
        .expect("h2 answer");
    assert_eq!(response.version(), http::Version::HTTP_2);
    assert_eq!(response.status(), 200);
    assert_eq!(up.last().uri, "/9");
    assert_eq!(
        up.last().headers["x-forwarded-host"],
        gw.addr.to_string().as_str()
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn shutdown_finishes_the_request_in_flight_and_refuses_new_connections() {
    let up = Upstream::start().await;
    let gw = gateway(&simple_config(&up.url(), "")).await;
    let addr = gw.addr;
    let url = gw.url("/wf/gate");
    let in_flight = tokio::spawn(async move {
        let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
        let response = client
            .request(Request::get(url).body(Full::default()).expect("request"))
            .await;
        response.map(|r| r.status())
    });
    up.arrived().await;
    let stopping = tokio::spawn(gw.shutdown());
    // The listener closes while the request is still held upstream.
    let refused = async {
        loop {
            if tokio::net::TcpStream::connect(addr).await.is_err() {
                break;
            }
            tokio::task::yield_now().await;
        }
    };
    tokio::time::timeout(Duration::from_secs(5), refused)
        .await
        .expect("listener closed");
    up.release();
    let status = in_flight
        .await
        .expect("task")
        .expect("in-flight request answered");
    assert_eq!(status, 200);
    tokio::time::timeout(Duration::from_secs(5), stopping)
        .await
        .expect("drained")
        .expect("task");
}

// === upstream connections ===

use hyper_util::rt::TokioIo;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// A plain HTTP/1.1 upstream that answers `ok` and counts the connections
/// it accepts. `close_idle()` makes it close every open connection between
/// requests, as an upstream's keep-alive timeout would; `closed(n)` waits
/// until `n` of its connections have ended.
struct KeepAliveUpstream {
    addr: std::net::SocketAddr,
    accepted: Arc<AtomicUsize>,
    requests: Arc<AtomicUsize>,
    close_idle: watch::Sender<u64>,
    closed: watch::Receiver<usize>,
}

impl KeepAliveUpstream {
    async fn start() -> KeepAliveUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let accepted = Arc::new(AtomicUsize::new(0));
        let requests = Arc::new(AtomicUsize::new(0));
        let (close_idle, close_rx) = watch::channel(0u64);
        let (closed_tx, closed) = watch::channel(0usize);
        let closed_tx = Arc::new(closed_tx);
        let (count, served) = (accepted.clone(), requests.clone());
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                let served = served.clone();
                let closed_tx = closed_tx.clone();
                let mut close = close_rx.clone();
                close.mark_unchanged();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |_req| {
                        served.fetch_add(1, Ordering::SeqCst);
                        async {
                            Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(
                                Bytes::from_static(b"ok"),
                            )))
                        }
                    });
                    let conn = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc);
                    tokio::pin!(conn);
                    tokio::select! {
                        _ = conn.as_mut() => {}
                        _ = close.changed() => {
                            // Idle between requests: closed at once.
                            conn.as_mut().graceful_shutdown();
                            let _ = conn.await;
                        }
                    }
                    closed_tx.send_modify(|n| *n += 1);
                });
            }
        });
        KeepAliveUpstream {
            addr,
            accepted,
            requests,
            close_idle,
            closed,
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }

    fn close_idle(&self) {
        self.close_idle.send_modify(|g| *g += 1);
    }

    async fn closed(&self, n: usize) {
        let mut closed = self.closed.clone();
        tokio::time::timeout(Duration::from_secs(10), closed.wait_for(|c| *c >= n))
            .await
            .expect("the upstream's connections closed in time")
            .expect("upstream alive");
    }
}

#[tokio::test]
async fn calls_in_sequence_reuse_one_upstream_connection() {
    let up = KeepAliveUpstream::start().await;
    let gw = gateway(&simple_config(&up.url(), "workers: 1")).await;
    for i in 0..20 {
        let got = gw.get(&format!("/employees/{i}")).await;
        assert_eq!(got.status, 200, "call {i}: {:?}", got.body);
        assert_eq!(got.body, "ok", "call {i}");
    }
    assert_eq!(up.requests(), 20);
    assert_eq!(up.accepted(), 1, "every call after the first reused it");
    gw.shutdown().await;
}

#[tokio::test]
async fn an_idle_connection_the_upstream_closed_is_not_reused() {
    let up = KeepAliveUpstream::start().await;
    let gw = gateway(&simple_config(&up.url(), "workers: 1")).await;
    assert_eq!(gw.get("/employees/1").await.status, 200);
    assert_eq!(up.accepted(), 1);
    // The upstream drops its idle keep-alive connection (its own timeout).
    up.close_idle();
    up.closed(1).await;
    // The next calls are not failed with a 502 on the dead connection: they
    // go over a new one, which is then kept.
    for i in 2..6 {
        let got = gw.get(&format!("/employees/{i}")).await;
        assert_eq!(got.status, 200, "call {i}: {:?}", got.body);
        assert_eq!(got.body, "ok", "call {i}");
    }
    assert_eq!(up.requests(), 5);
    assert_eq!(up.accepted(), 2);
    gw.shutdown().await;
}
