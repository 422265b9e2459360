//! The black-box test harness: a real upstream and a real gateway on
//! 127.0.0.1 (port 0), a client, and raw-socket helpers. No fixed ports,
//! no sleeps.
#![allow(dead_code)]

pub mod browser;
pub mod redis_server;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use tollgate::access_log::{self, AccessLog, Destination};
use tollgate::clock::SharedClock;
use tollgate::gateway::{Deps, Gateway};
use tollgate::server::RunningServer;

/// One request as the upstream received it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: Method,
    /// Path and query, as received.
    pub uri: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// A real HTTP upstream that records what reaches it. It answers:
/// - `.../status/{code}`: that status;
/// - `.../big/{n}`: `n` bytes of body;
/// - `/hang`: never (for timeouts);
/// - `/gate`: once the test calls `release()` (signals `arrived()` first);
/// - anything else: 200 with a JSON echo `{"method","uri","body_len","seq"}`
///   (`seq`: how many requests the upstream had received, this one included,
///   so every answer it makes is told apart from every other).
///
/// A query parameter `h-NAME=VALUE` adds the response header `NAME: VALUE`
/// (percent-decoded) to any of these answers.
pub struct Upstream {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    gate: Arc<Gate>,
}

/// Holds `/gate` requests until released, so a test can act while a
/// request is in flight without sleeping.
struct Gate {
    arrived: tokio::sync::Notify,
    release: tokio::sync::Semaphore,
}

impl Upstream {
    pub async fn start() -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind upstream");
        let addr = listener.local_addr().expect("addr");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let gate = Arc::new(Gate {
            arrived: tokio::sync::Notify::new(),
            release: tokio::sync::Semaphore::new(0),
        });
        let log = seen.clone();
        let server_gate = gate.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let log = log.clone();
                let gate = server_gate.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let log = log.clone();
                        let gate = gate.clone();
                        async move { Ok::<_, Infallible>(upstream_answer(req, log, gate).await) }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Upstream { addr, seen, gate }
    }

    /// Waits until a `/gate` request has arrived.
    pub async fn arrived(&self) {
        self.gate.arrived.notified().await;
    }

    /// Lets one held `/gate` request answer.
    pub fn release(&self) {
        self.gate.release.add_permits(1);
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().expect("lock").clone()
    }

    pub fn count(&self) -> usize {
        self.seen.lock().expect("lock").len()
    }

    pub fn last(&self) -> Seen {
        self.seen().pop().expect("the upstream received a request")
    }
}

async fn upstream_answer(
    req: Request<Incoming>,
    log: Arc<Mutex<Vec<Seen>>>,
    gate: Arc<Gate>,
) -> Response<Full<Bytes>> {
    let asked: Vec<(String, String)> = req
        .uri()
        .query()
        .unwrap_or("")
        .split('&')
        .filter_map(|pair| pair.strip_prefix("h-")?.split_once('='))
        .map(|(name, value)| {
            let decode = |s: &str| {
                percent_encoding::percent_decode_str(s)
                    .decode_utf8_lossy()
                    .into_owned()
            };
            (decode(name), decode(value))
        })
        .collect();
    let mut response = upstream_answer_body(req, log, gate).await;
    for (name, value) in asked {
        if let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(name.as_bytes()),
            http::HeaderValue::from_str(&value),
        ) {
            response.headers_mut().append(name, value);
        }
    }
    response
}

async fn upstream_answer_body(
    req: Request<Incoming>,
    log: Arc<Mutex<Vec<Seen>>>,
    gate: Arc<Gate>,
) -> Response<Full<Bytes>> {
    let (parts, body) = req.into_parts();
    let uri = parts
        .uri
        .path_and_query()
        .map(|pq| pq.to_string())
        .unwrap_or_default();
    let body = match body.collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => Bytes::from_static(b"<broken body>"),
    };
    let path = parts.uri.path().to_string();
    let seq = {
        let mut log = log.lock().expect("lock");
        log.push(Seen {
            method: parts.method.clone(),
            uri: uri.clone(),
            headers: parts.headers.clone(),
            body: body.clone(),
        });
        log.len()
    };
    if path == "/hang" {
        std::future::pending::<()>().await;
    }
    if path == "/gate" {
        gate.arrived.notify_one();
        if let Ok(permit) = gate.release.acquire().await {
            permit.forget();
        }
    }
    if let Some(code) = path
        .rsplit_once("/status/")
        .map(|(_, c)| c)
        .and_then(|c| c.parse::<u16>().ok())
    {
        let mut r = Response::new(Full::new(Bytes::from_static(b"{}")));
        *r.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::OK);
        return r;
    }
    if let Some(n) = path
        .rsplit_once("/big/")
        .and_then(|(_, n)| n.parse::<usize>().ok())
    {
        return Response::new(Full::new(Bytes::from(vec![b'x'; n])));
    }
    let json = serde_json::json!({
        "method": parts.method.as_str(),
        "uri": uri,
        "body_len": body.len(),
        "seq": seq,
    });
    let mut r = Response::new(Full::new(Bytes::from(json.to_string())));
    r.headers_mut().insert(
        "content-type",
        http::HeaderValue::from_static("application/json"),
    );
    r.headers_mut()
        .insert("connection", http::HeaderValue::from_static("keep-alive"));
    r.headers_mut()
        .insert("keep-alive", http::HeaderValue::from_static("timeout=5"));
    r
}

/// A gateway running on 127.0.0.1:0.
pub struct TestGateway {
    pub addr: SocketAddr,
    pub server: RunningServer,
    client: Client<HttpConnector, Full<Bytes>>,
}

/// Starts a gateway from YAML text (its `listen` should be 127.0.0.1:0).
pub async fn gateway(yaml: &str) -> TestGateway {
    gateway_in(
        Path::new("tollgate-test.yaml"),
        yaml,
        tollgate::clock::SystemClock::shared(),
    )
    .await
}

/// Starts a gateway with an injected clock.
pub async fn gateway_with_clock(yaml: &str, clock: SharedClock) -> TestGateway {
    gateway_in(Path::new("tollgate-test.yaml"), yaml, clock).await
}

/// Serves a compiled gateway on 127.0.0.1:0.
pub async fn serve(gateway: Gateway) -> TestGateway {
    let server = RunningServer::start(gateway).await.expect("start gateway");
    TestGateway {
        addr: server.addr,
        server,
        client: Client::builder(TokioExecutor::new()).build_http(),
    }
}

/// Starts a gateway whose config file is `file` (includes resolve beside it).
pub async fn gateway_in(file: &Path, yaml: &str, clock: SharedClock) -> TestGateway {
    let gateway = compile(file, yaml, clock)
        .unwrap_or_else(|errors| panic!("config did not compile:\n{}", errors.join("\n")));
    serve(gateway).await
}

/// Loads and compiles YAML text; errors as `FILE:LINE:COL: ...` strings.
pub fn compile(file: &Path, yaml: &str, clock: SharedClock) -> Result<Gateway, Vec<String>> {
    let strings = |errors: Vec<tollgate::config::ConfigError>| {
        errors.iter().map(|e| e.to_string()).collect::<Vec<_>>()
    };
    let loaded = tollgate::config::load_str(file, yaml).map_err(strings)?;
    let deps = test_deps(&loaded, clock).map_err(strings)?;
    Gateway::compile(loaded, &deps).map_err(strings)
}

/// What the client got.
#[derive(Debug)]
pub struct Got {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Got {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {:?}", self.body))
    }

    /// Asserts a problem+json answer with this status and code.
    pub fn assert_problem(&self, status: u16, code: &str) -> serde_json::Value {
        assert_eq!(self.status.as_u16(), status, "body: {:?}", self.body);
        assert_eq!(
            self.headers
                .get("content-type")
                .and_then(|v| v.to_str().ok()),
            Some("application/problem+json")
        );
        let json = self.json();
        assert_eq!(json["code"], code, "{json}");
        assert_eq!(json["status"], status);
        let id = self
            .headers
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .expect("x-request-id");
        assert_eq!(json["request_id"], id);
        json
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

impl TestGateway {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub async fn get(&self, path: &str) -> Got {
        self.send(
            Request::get(self.url(path))
                .body(Full::default())
                .expect("request"),
        )
        .await
    }

    /// GET with extra headers.
    pub async fn get_with(&self, path: &str, headers: &[(&str, &str)]) -> Got {
        self.send(get_request(self.url(path), headers)).await
    }

    pub async fn send(&self, req: Request<Full<Bytes>>) -> Got {
        exchange(&self.client, req).await
    }

    pub async fn shutdown(self) {
        self.server.shutdown().await;
    }
}

/// Sends `req` and reads the whole answer.
pub async fn exchange(
    client: &Client<HttpConnector, Full<Bytes>>,
    req: Request<Full<Bytes>>,
) -> Got {
    let response = client.request(req).await.expect("gateway answered");
    let (parts, body) = response.into_parts();
    let body = body.collect().await.expect("body").to_bytes();
    Got {
        status: parts.status,
        headers: parts.headers,
        body,
    }
}

/// A GET of `url` with extra headers.
fn get_request(url: String, headers: &[(&str, &str)]) -> Request<Full<Bytes>> {
    let mut req = Request::get(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.body(Full::default()).expect("request")
}

/// A gateway started as `tollgate serve` starts it — public and admin
/// listeners, reload — from a config file in its own directory (which
/// `rewrite` changes for a reload to read), with an injected clock. The one
/// harness of the suites that need the admin listener.
pub struct App {
    pub running: tollgate::app::Running,
    pub dir: tempfile::TempDir,
    /// The admin token `admin` sends, when the test set one.
    token: Option<String>,
    pub client: Client<HttpConnector, Full<Bytes>>,
}

impl App {
    /// Writes `yaml` (its `listen` and `admin.listen` on 127.0.0.1:0) to
    /// `tollgate.yaml` in a new directory and starts it.
    pub async fn start(yaml: &str, clock: SharedClock) -> App {
        Self::try_start(yaml, clock, None)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// [`App::start`] on the system clock, sending `token` on admin calls.
    pub async fn with_token(yaml: &str, token: Option<&str>) -> App {
        Self::try_start(yaml, tollgate::clock::SystemClock::shared(), token)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Starts it, or says why it did not (config errors, one per line).
    pub async fn try_start(
        yaml: &str,
        clock: SharedClock,
        token: Option<&str>,
    ) -> Result<App, String> {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("tollgate.yaml");
        std::fs::write(&file, yaml).expect("write config");
        let strings = |errors: Vec<tollgate::config::ConfigError>| {
            errors
                .iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join("\n")
        };
        let loaded = tollgate::config::load_file(&file).map_err(strings)?;
        let deps = test_deps(&loaded, clock).map_err(strings)?;
        let gateway = Gateway::compile(loaded, &deps).map_err(strings)?;
        let running = tollgate::app::start(file, gateway, deps).await?;
        Ok(App {
            running,
            dir,
            token: token.map(str::to_string),
            client: Client::builder(TokioExecutor::new()).build_http(),
        })
    }

    /// The config file a reload re-reads.
    pub fn file(&self) -> std::path::PathBuf {
        self.dir.path().join("tollgate.yaml")
    }

    /// Replaces the config file (a reload then reads it).
    pub fn rewrite(&self, yaml: &str) {
        std::fs::write(self.file(), yaml).expect("rewrite config");
    }

    pub async fn send(&self, req: Request<Full<Bytes>>) -> Got {
        exchange(&self.client, req).await
    }

    /// A public GET with extra headers.
    pub async fn get_with(&self, path: &str, headers: &[(&str, &str)]) -> Got {
        let url = format!("http://{}{path}", self.running.addr);
        exchange(&self.client, get_request(url, headers)).await
    }

    /// A public GET, with `X-API-Key: key` when given.
    pub async fn call(&self, path: &str, key: Option<&str>) -> Got {
        let headers: Vec<(&str, &str)> = key.map(|k| ("x-api-key", k)).into_iter().collect();
        self.get_with(path, &headers).await
    }

    pub fn admin_url(&self, path: &str) -> String {
        let addr = self.running.admin_addr.expect("admin listener");
        format!("http://{addr}{path}")
    }

    /// An admin request carrying the token (when the test set one).
    pub async fn admin(&self, method: http::Method, path: &str) -> Got {
        let mut req = Request::builder().method(method).uri(self.admin_url(path));
        if let Some(token) = &self.token {
            req = req.header("authorization", format!("Bearer {token}"));
        }
        self.send(req.body(Full::default()).expect("request")).await
    }

    /// An admin GET (with the token, when the test set one).
    pub async fn admin_get(&self, path: &str) -> Got {
        self.admin(http::Method::GET, path).await
    }

    /// An admin GET with exactly this `Authorization` (or none).
    pub async fn bare_admin(&self, path: &str, auth: Option<&str>) -> Got {
        let mut req = Request::get(self.admin_url(path));
        if let Some(auth) = auth {
            req = req.header("authorization", auth);
        }
        self.send(req.body(Full::default()).expect("request")).await
    }

    /// The `/metrics` text of the admin listener.
    pub async fn metrics(&self) -> String {
        let got = self.admin_get("/metrics").await;
        assert_eq!(got.status, 200);
        String::from_utf8(got.body.to_vec()).expect("utf-8")
    }

    pub async fn shutdown(self) {
        self.running.shutdown().await;
    }
}

/// The value of the sample `series` (name and labels exactly) in a
/// Prometheus text, if present.
pub fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// The deps a test gateway runs with: those of the config, except that an
/// access log going to stderr goes to this thread's [`test_access_log`]
/// instead, for [`capture_logs`] to read.
pub fn test_deps(
    loaded: &tollgate::config::LoadedConfig,
    clock: SharedClock,
) -> Result<Deps, Vec<tollgate::config::ConfigError>> {
    let mut deps = Deps::for_config(loaded, clock)?;
    let config = &loaded.config.access_log;
    if config.enabled && config.path.is_none() {
        deps.access_log = test_access_log();
    }
    Ok(deps)
}

thread_local! {
    /// Every access-log line of the gateways this thread started, as
    /// `--log-format json` writes them.
    static ACCESS_LINES: Arc<Mutex<Vec<u8>>> = Arc::default();
    static TEST_ACCESS_LOG: AccessLog = AccessLog::new(
        Destination::Writer(Box::new(SharedBuffer(ACCESS_LINES.with(Arc::clone)))),
        access_log::Format::Json,
        16 << 20,
        Default::default(),
    );
}

/// The access-log sink of the gateways this test thread starts.
pub fn test_access_log() -> AccessLog {
    TEST_ACCESS_LOG.with(AccessLog::clone)
}

/// How long a capture waits for the access log's writer.
const ACCESS_LOG_FLUSH: Duration = Duration::from_secs(10);

/// Everything the gateway logs (at debug and above) while the capture
/// lives, formatted as `--log-format json` formats it: the tracing events,
/// and the access-log lines of the gateways this thread started (through
/// [`test_deps`]). The capture is the test thread's default subscriber, so
/// it sees the gateways of a `#[tokio::test]` on the (default)
/// current-thread runtime, and no other test's.
pub struct LogCapture {
    buffer: Arc<Mutex<Vec<u8>>>,
    access_log: AccessLog,
    access_lines: Arc<Mutex<Vec<u8>>>,
    /// Where this capture's access lines start in `access_lines`.
    access_from: usize,
    _guard: tracing::subscriber::DefaultGuard,
}

#[derive(Clone)]
struct SharedBuffer(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for SharedBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("lock").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

pub fn capture_logs() -> LogCapture {
    let buffer = Arc::new(Mutex::new(Vec::new()));
    let writer = SharedBuffer(buffer.clone());
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("tollgate=debug"))
        .event_format(tollgate::telemetry::JsonLine)
        .with_writer(move || writer.clone())
        .finish();
    // Lines recorded before the capture are not its own.
    let access_log = test_access_log();
    assert!(
        access_log.flush(ACCESS_LOG_FLUSH),
        "the access log did not flush"
    );
    let access_lines = ACCESS_LINES.with(Arc::clone);
    let access_from = access_lines.lock().expect("lock").len();
    LogCapture {
        buffer,
        access_log,
        access_lines,
        access_from,
        _guard: tracing::subscriber::set_default(subscriber),
    }
}

impl LogCapture {
    /// All lines logged so far: the tracing events, then the access log.
    pub fn text(&self) -> String {
        let mut text = String::from_utf8_lossy(&self.buffer.lock().expect("lock")).into_owned();
        text.push_str(&self.access_text());
        text
    }

    /// The access-log lines recorded since the capture began, once written.
    fn access_text(&self) -> String {
        assert!(
            self.access_log.flush(ACCESS_LOG_FLUSH),
            "the access log did not flush"
        );
        let lines = self.access_lines.lock().expect("lock");
        String::from_utf8_lossy(&lines[self.access_from..]).into_owned()
    }

    /// The access-log objects logged so far, in order.
    pub fn access(&self) -> Vec<serde_json::Value> {
        self.access_text()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v["target"] == "tollgate::access")
            .collect()
    }
}

/// Writes raw bytes to `addr` and reads until the peer closes or goes
/// quiet for `quiet`; returns everything read.
pub async fn raw_exchange(addr: SocketAddr, request: &[u8], quiet: Duration) -> String {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(request).await.expect("write");
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match tokio::time::timeout(quiet, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// An address on which nothing listens (bound, then closed).
pub async fn closed_port() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    drop(l);
    addr
}

/// A gateway config with one API over `upstream`, plus `extra` YAML at the
/// top level (policies, limits...).
pub fn simple_config(upstream: &str, extra: &str) -> String {
    format!(
        r#"version: 1
listen: 127.0.0.1:0
{extra}
apis:
  - name: directory
    base_path: /employees
    upstream: {upstream}
    operations:
      - id: getEmployee
        method: GET
        path: /{{employeeId}}
      - id: createEmployee
        method: POST
        path: /
      - id: anyFile
        method: GET
        path: /files/{{*rest}}
  - name: workflows
    base_path: /wf
    operations:
      - id: runWorkflow
        method: POST
        path: /{{name}}/run
        upstream: {upstream}/workflows/{{name}}/trigger?source=tollgate
      - id: gated
        method: GET
        path: /gate
        upstream: {upstream}/gate
      - id: hang
        method: GET
        path: /hang
        upstream: {upstream}/hang
        upstream_timeout: 300ms
"#
    )
}

/// The deps (clock, upstream client, state store) for YAML text. Compile
/// several gateways with the same deps to test what a reload keeps.
pub fn deps_for(yaml: &str, clock: SharedClock) -> Deps {
    let loaded = tollgate::config::load_str(Path::new("tollgate-test.yaml"), yaml)
        .unwrap_or_else(|e| panic!("config did not load: {e:?}"));
    test_deps(&loaded, clock).unwrap_or_else(|e| panic!("deps: {e:?}"))
}

/// Compiles YAML text with existing deps (as a reload does).
pub fn compile_with_deps(yaml: &str, deps: &Deps) -> Result<Gateway, Vec<String>> {
    let strings = |errors: Vec<tollgate::config::ConfigError>| {
        errors.iter().map(|e| e.to_string()).collect::<Vec<_>>()
    };
    let loaded =
        tollgate::config::load_str(Path::new("tollgate-test.yaml"), yaml).map_err(strings)?;
    Gateway::compile(loaded, deps).map_err(strings)
}

/// Starts a gateway compiled with existing deps.
pub async fn gateway_with_deps(yaml: &str, deps: &Deps) -> TestGateway {
    let gateway = compile_with_deps(yaml, deps)
        .unwrap_or_else(|errors| panic!("config did not compile:\n{}", errors.join("\n")));
    serve(gateway).await
}
