//! The call log (`record:`, `GET /admin/calls`): a real gateway with its
//! admin listener, a real echo upstream, and (for the shared log) a real
//! redis-server. What the client and the upstream see is checked beside
//! what the log holds: recording changes neither.

use crate::common::redis_server::RedisServer;
use crate::common::*;
use bytes::Bytes;
use futures_util::stream;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tollgate::clock::{ManualClock, SharedClock};
use tollgate::state::SECOND;

const HR_KEY: &str = "hr-partner-key-0123456789";
const OPS_KEY: &str = "ops-partner-key-9876543210";
const T0: u64 = 1_767_225_600 * SECOND; // 2026-01-01T00:00:00Z

/// One request as the echo upstream got it.
#[derive(Debug, Clone)]
struct Received {
    uri: String,
    headers: http::HeaderMap,
    body: Bytes,
}

/// An upstream that answers:
/// - `POST` anything: the request body, with its `Content-Type`, and a
///   `Set-Cookie`;
/// - `GET /stream/{n}`: `n` bytes of `y`, streamed in 4 KiB chunks with no
///   length;
/// - `GET /status/{code}`: that status;
/// - `GET /headers`: the request headers as a JSON object (credentials
///   included, as a careless workflow would);
/// - any other `GET`: `{"path": ...}`.
struct Echo {
    addr: std::net::SocketAddr,
    received: Arc<Mutex<Vec<Received>>>,
}

impl Echo {
    async fn start() -> Echo {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let received = Arc::new(Mutex::new(Vec::new()));
        let log = received.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let log = log.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let log = log.clone();
                        async move { Ok::<_, Infallible>(echo(req, log).await) }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Echo { addr, received }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn last(&self) -> Received {
        self.received
            .lock()
            .expect("lock")
            .last()
            .cloned()
            .expect("the upstream got a request")
    }
}

type EchoBody = http_body_util::combinators::BoxBody<Bytes, Infallible>;

async fn echo(req: Request<Incoming>, log: Arc<Mutex<Vec<Received>>>) -> Response<EchoBody> {
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let path = parts.uri.path().to_string();
    log.lock().expect("lock").push(Received {
        uri: parts.uri.to_string(),
        headers: parts.headers.clone(),
        body: body.clone(),
    });
    let full = |b: Bytes| Full::new(b).boxed();
    if parts.method == http::Method::POST {
        let mut r = Response::new(full(body));
        if let Some(ct) = parts.headers.get("content-type") {
            r.headers_mut().insert("content-type", ct.clone());
        }
        r.headers_mut().insert(
            "set-cookie",
            http::HeaderValue::from_static("session=upstream-session-secret"),
        );
        return r;
    }
    if let Some(n) = path
        .strip_prefix("/stream/")
        .and_then(|n| n.parse::<usize>().ok())
    {
        let chunks: Vec<Result<Frame<Bytes>, Infallible>> = (0..n)
            .step_by(4096)
            .map(|at| Ok(Frame::data(Bytes::from(vec![b'y'; (n - at).min(4096)]))))
            .collect();
        return Response::new(StreamBody::new(stream::iter(chunks)).boxed());
    }
    if let Some(code) = path
        .strip_prefix("/status/")
        .and_then(|c| c.parse::<u16>().ok())
    {
        let mut r = Response::new(full(Bytes::from_static(b"{}")));
        *r.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::OK);
        return r;
    }
    let json = if path == "/headers" {
        let headers: serde_json::Map<String, Value> = parts
            .headers
            .iter()
            .map(|(k, v)| (k.to_string(), Value::from(v.to_str().unwrap_or(""))))
            .collect();
        Value::Object(headers)
    } else {
        json!({ "path": path })
    };
    let mut r = Response::new(full(Bytes::from(json.to_string())));
    r.headers_mut().insert(
        "content-type",
        http::HeaderValue::from_static("application/json"),
    );
    r
}

/// Two clients, a partner-key `auth` policy (header, query and bearer;
/// the credential forwarded, so the upstream can echo it back), an API
/// with `record` (a YAML flow mapping, or empty for none) and `top` lines.
fn config(upstream: &str, record: &str, top: &str) -> String {
    let hash = |key: &str| hex::encode(Sha256::digest(key.as_bytes()));
    let record = if record.is_empty() {
        String::new()
    } else {
        format!("record: {record}")
    };
    format!(
        r#"version: 1
listen: 127.0.0.1:0
admin: {{ listen: 127.0.0.1:0 }}
{top}
clients:
  - id: hr
    api_keys: [{{ sha256: {hr} }}]
  - id: ops
    api_keys: [{{ sha256: {ops} }}]
policies:
  partner-key:
    type: auth
    methods: [api_key]
    api_key: {{ header: X-Partner-Key, query: key, bearer: true }}
    forward_credentials: true
apis:
  - name: echo
    base_path: /echo
    upstream: {upstream}
    apply: [partner-key]
    {record}
    operations:
      - id: echoPost
        method: POST
        path: /
      - id: echoGet
        method: GET
        path: /{{name}}
      - id: echoStream
        method: GET
        path: /stream/{{n}}
      - id: echoStatus
        method: GET
        path: /status/{{code}}
      - id: quiet
        method: GET
        path: /quiet/{{name}}
        record: {{ enabled: false }}
"#,
        hr = hash(HR_KEY),
        ops = hash(OPS_KEY),
    )
}

fn client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

fn manual_clock() -> (Arc<ManualClock>, SharedClock) {
    let clock = ManualClock::new(T0);
    (clock.clone(), clock)
}

async fn post(app: &App, path: &str, headers: &[(&str, &str)], body: impl Into<Bytes>) -> Got {
    let mut req = Request::post(format!("http://{}{path}", app.running.addr));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    exchange(
        &client(),
        req.body(Full::new(body.into())).expect("request"),
    )
    .await
}

/// The `X-Request-Id` the client got.
fn request_id(got: &Got) -> String {
    got.header("x-request-id")
        .expect("x-request-id")
        .to_string()
}

/// `GET /admin/calls?{query}`, as JSON.
async fn calls(app: &App, query: &str) -> Value {
    let got = app.admin_get(&format!("/admin/calls?{query}")).await;
    assert_eq!(got.status, 200, "{:?}", got.body);
    got.json()
}

/// The request ids of a page, newest first.
fn ids(page: &Value) -> Vec<String> {
    page["calls"]
        .as_array()
        .expect("calls")
        .iter()
        .map(|c| c["request_id"].as_str().unwrap_or("").to_string())
        .collect()
}

/// `GET /admin/calls/{id}`, as JSON (200 asserted).
async fn call(app: &App, id: &str) -> Value {
    let got = app.admin_get(&format!("/admin/calls/{id}")).await;
    assert_eq!(got.status, 200, "{:?}", got.body);
    got.json()
}

#[tokio::test]
async fn recording_is_off_by_default() {
    let up = Echo::start().await;
    let (_, clock) = manual_clock();
    let app = App::start(&config(&up.url(), "", ""), clock).await;
    let got = app
        .get_with("/echo/one", &[("x-partner-key", HR_KEY)])
        .await;
    assert_eq!(got.status, 200);
    assert_eq!(
        calls(&app, "").await,
        json!({ "calls": [], "next_cursor": null })
    );
    app.admin_get(&format!("/admin/calls/{}", request_id(&got)))
        .await
        .assert_problem(404, "call_not_found");
    app.shutdown().await;
}

#[tokio::test]
async fn bodies_are_recorded_and_truncated_at_the_bound_while_all_of_them_pass() {
    let up = Echo::start().await;
    let (_, clock) = manual_clock();
    let record = "{ bodies: true, max_body_bytes: 64 }";
    let app = App::start(&config(&up.url(), record, ""), clock).await;
    let key = ("x-partner-key", HR_KEY);

    // A small JSON body: recorded whole, as JSON, both ways.
    let small = json!({ "name": "Ada", "team": "eng" }).to_string();
    let got = post(
        &app,
        "/echo/",
        &[key, ("content-type", "application/json")],
        small.clone(),
    )
    .await;
    assert_eq!(got.status, 200);
    assert_eq!(got.body, small);
    let entry = call(&app, &request_id(&got)).await;
    assert_eq!(entry["operation"], "echoPost");
    assert_eq!(entry["client"], "hr");
    assert_eq!(entry["status"], 200);
    assert_eq!(entry["request"]["method"], "POST");
    assert_eq!(entry["request"]["path"], "/echo/");
    let body = json!({ "size": small.len(), "truncated": false, "json": { "name": "Ada", "team": "eng" } });
    assert_eq!(entry["request"]["body"], body, "{entry}");
    assert_eq!(entry["response"]["body"], body, "{entry}");

    // 1000 bytes of text: the first 64 are recorded, all 1000 pass.
    let long = "z".repeat(1000);
    let got = post(
        &app,
        "/echo/",
        &[key, ("content-type", "text/plain")],
        long.clone(),
    )
    .await;
    assert_eq!(got.body, long);
    assert_eq!(got.header("content-length"), Some("1000"));
    assert_eq!(up.last().body, long);
    assert_eq!(up.last().headers["content-length"], "1000");
    let entry = call(&app, &request_id(&got)).await;
    let cut = json!({ "size": 1000, "truncated": true, "text": "z".repeat(64) });
    assert_eq!(entry["request"]["body"], cut, "{entry}");
    assert_eq!(entry["response"]["body"], cut, "{entry}");

    // A streamed answer of 300,000 bytes reaches the client whole; the
    // log keeps its first 64.
    let got = app.get_with("/echo/stream/300000", &[key]).await;
    assert_eq!(got.body.len(), 300_000);
    assert!(got.body.iter().all(|b| *b == b'y'));
    let entry = call(&app, &request_id(&got)).await;
    assert_eq!(
        entry["response"]["body"],
        json!({ "size": 300000, "truncated": true, "text": "y".repeat(64) }),
        "{entry}"
    );
    assert_eq!(
        entry["request"].get("body"),
        None,
        "no request body: {entry}"
    );
    app.shutdown().await;
}

#[tokio::test]
async fn named_headers_and_json_pointers_are_redacted_in_requests_and_responses() {
    let up = Echo::start().await;
    let (_, clock) = manual_clock();
    let record = "{ bodies: true, redact_headers: [X-Customer-Token], \
                  redact_json: [/password, /card/number, '/items/*/iban'] }";
    let app = App::start(&config(&up.url(), record, ""), clock).await;
    let sent = json!({
        "user": "ada",
        "password": "hunter2-hunter2",
        "card": { "number": "4111111111111111", "exp": "12/30" },
        "items": [{ "iban": "DE89370400440532013000", "amount": 5 }],
    });
    let headers = [
        ("x-partner-key", HR_KEY),
        ("content-type", "application/json"),
        ("x-customer-token", "customer-token-abc"),
        ("x-trace-note", "kept"),
    ];
    let got = post(&app, "/echo/", &headers, sent.to_string()).await;
    assert_eq!(got.status, 200);
    // Neither the upstream nor the client saw anything redacted.
    let upstream: Value = serde_json::from_slice(&up.last().body).expect("json");
    assert_eq!(upstream, sent);
    assert_eq!(up.last().headers["x-customer-token"], "customer-token-abc");
    assert_eq!(
        serde_json::from_slice::<Value>(&got.body).expect("json"),
        sent
    );

    let entry = call(&app, &request_id(&got)).await;
    let redacted = json!({
        "user": "ada",
        "password": "[redacted]",
        "card": { "number": "[redacted]", "exp": "12/30" },
        "items": [{ "iban": "[redacted]", "amount": 5 }],
    });
    assert_eq!(entry["request"]["body"]["json"], redacted, "{entry}");
    assert_eq!(entry["response"]["body"]["json"], redacted, "{entry}");
    assert_eq!(
        entry["request"]["headers"]["x-customer-token"],
        "[redacted]"
    );
    assert_eq!(entry["request"]["headers"]["x-trace-note"], "kept");
    // The upstream's cookie is a credential too.
    assert_eq!(entry["response"]["headers"]["set-cookie"], "[redacted]");
    let text = entry.to_string();
    for secret in [
        "hunter2-hunter2",
        "4111111111111111",
        "DE8937040044",
        "customer-token-abc",
        "upstream-session-secret",
    ] {
        assert!(!text.contains(secret), "{secret} in {text}");
    }

    // With pointers set, a body that is not JSON is left out.
    let got = post(
        &app,
        "/echo/",
        &[("x-partner-key", HR_KEY)],
        "password=hunter2-hunter2",
    )
    .await;
    assert_eq!(got.body, "password=hunter2-hunter2");
    let entry = call(&app, &request_id(&got)).await;
    let omitted = &entry["request"]["body"];
    assert_eq!(omitted["size"], 24, "{entry}");
    assert!(
        omitted["omitted"]
            .as_str()
            .is_some_and(|s| s.contains("redact_json")),
        "{entry}"
    );
    assert!(!entry.to_string().contains("hunter2"), "{entry}");
    app.shutdown().await;
}

#[tokio::test]
async fn api_keys_and_bearer_tokens_are_never_in_the_log() {
    let up = Echo::start().await;
    let (_, clock) = manual_clock();
    // The config asks to redact nothing: credentials go all the same.
    let record = "{ bodies: true, redact_headers: [] }";
    let app = App::start(&config(&up.url(), record, ""), clock).await;
    let by_header = app
        .get_with("/echo/headers", &[("x-partner-key", HR_KEY)])
        .await;
    let bearer = format!("Bearer {OPS_KEY}");
    let by_bearer = app
        .get_with("/echo/headers", &[("authorization", bearer.as_str())])
        .await;
    let by_query = app
        .get_with(&format!("/echo/headers?key={HR_KEY}&x=1"), &[])
        .await;
    assert_eq!(up.last().uri, format!("/headers?key={HR_KEY}&x=1"));
    let with_cookie = post(
        &app,
        "/echo/",
        &[
            ("x-partner-key", HR_KEY),
            ("cookie", "sid=browser-cookie-secret"),
        ],
        format!("my key is {HR_KEY}"),
    )
    .await;
    for got in [&by_header, &by_bearer, &by_query, &with_cookie] {
        assert_eq!(got.status, 200, "{:?}", got.body);
    }
    // The upstream got (and echoed) the credentials: they were forwarded.
    assert!(String::from_utf8_lossy(&by_bearer.body).contains(OPS_KEY));
    assert!(up.last().body.ends_with(HR_KEY.as_bytes()));

    let page = app.admin_get("/admin/calls").await;
    assert_eq!(page.status, 200);
    let text = String::from_utf8_lossy(&page.body).into_owned();
    assert_eq!(ids(&page.json()).len(), 4, "{text}");
    for secret in [HR_KEY, OPS_KEY, "browser-cookie-secret"] {
        assert!(!text.contains(secret), "{secret} in {text}");
    }
    let header = call(&app, &request_id(&by_header)).await;
    assert_eq!(header["request"]["headers"]["x-partner-key"], "[redacted]");
    assert_eq!(header["client"], "hr");
    let bearer = call(&app, &request_id(&by_bearer)).await;
    assert_eq!(bearer["request"]["headers"]["authorization"], "[redacted]");
    assert_eq!(bearer["client"], "ops");
    let query = call(&app, &request_id(&by_query)).await;
    assert_eq!(query["request"]["query"], "key=[redacted]&x=1");
    let posted = call(&app, &request_id(&with_cookie)).await;
    assert_eq!(posted["request"]["headers"]["cookie"], "[redacted]");
    assert_eq!(posted["request"]["body"]["text"], "my key is [redacted]");
    app.shutdown().await;
}

#[tokio::test]
async fn calls_are_filtered_and_paged_newest_first() {
    let up = Echo::start().await;
    let (time, clock) = manual_clock();
    let app = App::start(&config(&up.url(), "{}", ""), clock).await;
    let hr = ("x-partner-key", HR_KEY);
    let ops = ("x-partner-key", OPS_KEY);
    let mut made = Vec::new();
    for (path, who) in [
        ("/echo/a", hr),
        ("/echo/b", ops),
        ("/echo/status/404", hr),
        ("/echo/c", ops),
        ("/echo/status/503", ops),
    ] {
        let got = app.get_with(path, &[who]).await;
        made.push((request_id(&got), got.status.as_u16()));
        time.advance(Duration::from_secs(1));
    }
    // Not recorded: its operation turns the API's `record:` off.
    let quiet = app.get_with("/echo/quiet/x", &[hr]).await;
    assert_eq!(quiet.status, 200);
    // A refused call is a call like any other: recorded, anonymous.
    let refused = app
        .get_with("/echo/d", &[("x-partner-key", "wrong-key-000000")])
        .await;
    assert_eq!(refused.status, 401);

    let id = |i: usize| made[i].0.clone();
    let all = calls(&app, "").await;
    assert_eq!(
        ids(&all),
        [request_id(&refused), id(4), id(3), id(2), id(1), id(0)]
    );
    assert_eq!(all["calls"][0]["code"], "invalid_credentials");
    assert_eq!(all["calls"][0]["client"], Value::Null);
    assert_eq!(ids(&calls(&app, "client=hr").await), [id(2), id(0)]);
    assert_eq!(ids(&calls(&app, "client=ops&status=5xx").await), [id(4)]);
    assert_eq!(ids(&calls(&app, "status=404").await), [id(2)]);
    assert_eq!(ids(&calls(&app, "client=").await), [request_id(&refused)]);
    assert_eq!(
        ids(&calls(&app, "operation=echoPost").await),
        Vec::<String>::new()
    );
    // `since`: the calls answered at T0+3s and later.
    let since = calls(&app, "since=2026-01-01T00:00:03Z").await;
    assert_eq!(ids(&since), [request_id(&refused), id(4), id(3)]);
    let since = calls(&app, "since=2026-01-01T00:00:03Z&operation=echoGet").await;
    assert_eq!(ids(&since), [request_id(&refused), id(3)]);
    assert_eq!(
        ids(&calls(&app, "operation=echoStatus").await),
        [id(4), id(2)]
    );

    // Pages of two, by cursor, until none is left.
    let mut seen = Vec::new();
    let mut query = "limit=2".to_string();
    loop {
        let page = calls(&app, &query).await;
        let got = ids(&page);
        assert!(got.len() <= 2);
        seen.extend(got);
        match page["next_cursor"].as_str() {
            Some(cursor) => query = format!("limit=2&cursor={cursor}"),
            None => break,
        }
    }
    assert_eq!(seen, ids(&all));

    app.admin_get("/admin/calls?status=6xx")
        .await
        .assert_problem(400, "invalid_query");
    app.admin_get("/admin/calls?clinet=hr")
        .await
        .assert_problem(400, "invalid_query");
    app.shutdown().await;
}

#[tokio::test]
async fn the_request_id_of_the_access_log_finds_the_entry_and_the_status_page_shows_it() {
    let logs = capture_logs();
    let up = Echo::start().await;
    let (_, clock) = manual_clock();
    let app = App::start(&config(&up.url(), "{}", ""), clock).await;
    let got = app
        .get_with("/echo/found", &[("x-partner-key", HR_KEY)])
        .await;
    assert_eq!(got.status, 200);
    let id = request_id(&got);
    assert_eq!(up.last().headers["x-request-id"], id.as_str());
    assert!(app
        .running
        .reloader
        .deps()
        .access_log
        .flush(Duration::from_secs(10)));
    let line = logs
        .access()
        .into_iter()
        .find(|l| l["path"] == "/echo/found")
        .expect("an access line");
    let logged = line["request_id"].as_str().expect("request_id");
    assert_eq!(logged, id);
    let entry = call(&app, logged).await;
    assert_eq!(entry["request_id"], id);
    assert_eq!(entry["time"], "2026-01-01T00:00:00Z");
    assert_eq!(entry["response"]["headers"]["x-request-id"], id);
    app.admin_get("/admin/calls/not-a-recorded-id")
        .await
        .assert_problem(404, "call_not_found");

    let page = app.admin_get("/").await;
    let html = String::from_utf8_lossy(&page.body);
    assert!(html.contains("<h2>Recent calls</h2>"), "{html}");
    assert!(html.contains(&format!("<code>{id}</code>")), "{html}");
    app.shutdown().await;
}

#[tokio::test]
async fn the_total_cap_evicts_the_oldest_calls_first() {
    let up = Echo::start().await;
    let (_, clock) = manual_clock();
    let top = "call_log: { max_bytes: 8KiB }";
    let record = "{ bodies: true, max_body_bytes: 1KiB }";
    let app = App::start(&config(&up.url(), record, top), clock).await;
    let mut made = Vec::new();
    for i in 0..20 {
        let body = format!("{i:04}").repeat(100);
        let got = post(&app, "/echo/", &[("x-partner-key", HR_KEY)], body.clone()).await;
        assert_eq!(got.body, body);
        made.push(request_id(&got));
    }
    let page = calls(&app, "limit=500").await;
    let kept = ids(&page);
    let bytes: usize = page["calls"]
        .as_array()
        .expect("calls")
        .iter()
        .map(|c| c.to_string().len())
        .sum();
    // Some, not all, fit in 8KiB; the ones kept are the newest, in order.
    assert!(!kept.is_empty() && kept.len() < 20, "{kept:?}");
    assert!(bytes <= 8 << 10, "{bytes}");
    let newest: Vec<String> = made.iter().rev().take(kept.len()).cloned().collect();
    assert_eq!(kept, newest);
    app.admin_get(&format!("/admin/calls/{}", made[0]))
        .await
        .assert_problem(404, "call_not_found");
    app.shutdown().await;
}

#[tokio::test]
async fn a_full_queue_drops_and_counts_entries_and_never_holds_a_call() {
    let up = Echo::start().await;
    let (_, clock) = manual_clock();
    // A queue of one byte: no entry ever fits.
    let app = App::start(&config(&up.url(), "{}", "call_log: { queue: 1 }"), clock).await;
    for _ in 0..3 {
        let got = app.get_with("/echo/x", &[("x-partner-key", HR_KEY)]).await;
        assert_eq!(got.status, 200);
    }
    assert_eq!(ids(&calls(&app, "").await), Vec::<String>::new());
    let metrics = app.metrics().await;
    assert_eq!(
        sample(&metrics, "tollgate_call_log_dropped_total"),
        Some(3.0),
        "{metrics}"
    );
    app.shutdown().await;
}

#[tokio::test]
async fn two_gateways_on_one_redis_server_show_one_log() {
    let redis = RedisServer::start().await;
    let up = Echo::start().await;
    let (_, clock) = manual_clock();
    let top = format!(
        "state: {{ store: redis, redis_url: \"{}\", timeout: 2s }}",
        redis.url()
    );
    let yaml = config(&up.url(), "{ bodies: true }", &top);
    let a = App::start(&yaml, clock.clone()).await;
    let b = App::start(&yaml, clock).await;
    // Each instance writes its own queue out before it reads.
    let from_a = a.get_with("/echo/on-a", &[("x-partner-key", HR_KEY)]).await;
    assert_eq!(ids(&calls(&a, "").await), [request_id(&from_a)]);
    let from_b = b
        .get_with("/echo/on-b", &[("x-partner-key", OPS_KEY)])
        .await;
    assert_eq!((from_a.status.as_u16(), from_b.status.as_u16()), (200, 200));
    let both = [request_id(&from_b), request_id(&from_a)];
    assert_eq!(ids(&calls(&b, "").await), both);
    assert_eq!(ids(&calls(&a, "").await), both);
    let seen_by_b = call(&b, &request_id(&from_a)).await;
    assert_eq!(seen_by_b["request"]["path"], "/echo/on-a");
    assert_eq!(seen_by_b["client"], "hr");
    assert_eq!(
        seen_by_b["response"]["body"]["json"],
        json!({ "path": "/on-a" })
    );
    a.shutdown().await;
    b.shutdown().await;
}

#[test]
fn record_mistakes_are_reported_at_their_line_and_key() {
    let refused = |record: &str, key: &str| {
        let yaml = config("http://127.0.0.1:9", record, "");
        let line = yaml
            .lines()
            .position(|l| l.trim_start().starts_with("record: {"))
            .expect("the record line")
            + 1;
        let column = yaml
            .lines()
            .nth(line - 1)
            .and_then(|l| l.find(key))
            .expect("key")
            + 1;
        let errors = compile(
            std::path::Path::new("tollgate-test.yaml"),
            &yaml,
            tollgate::clock::SystemClock::shared(),
        )
        .err()
        .expect("refused");
        (
            errors.join("\n"),
            format!("tollgate-test.yaml:{line}:{column}: "),
        )
    };
    let (text, at) = refused("{ bodies: true, max_body_bytes: 2MiB }", "max_body_bytes");
    assert!(
        text.starts_with(&format!("{at}apis[0].record.max_body_bytes: at most 1MiB")),
        "{text}"
    );
    let (text, _) = refused("{ redact_json: [/ok, password] }", "redact_json");
    assert!(
        text.contains("apis[0].record.redact_json[1]: `password` is not a JSON pointer"),
        "{text}"
    );
    let (text, _) = refused("{ redact_headers: ['bad header'] }", "redact_headers");
    assert!(
        text.contains("apis[0].record.redact_headers[0]: `bad header` is not a header name"),
        "{text}"
    );
}
