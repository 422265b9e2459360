//! Resource bounds under load, against the real binary in a child process
//! so that its memory is its own (read from /proc/<pid>/status): 10,000
//! idle connections, then a 1 GiB upload and a 1 GiB download streamed
//! through it. Linux only (/proc); elsewhere the tests say so and pass.

use crate::common::closed_port;
use bytes::Bytes;
use futures_util::stream;
use http::{Request, Response, StatusCode};
use http_body::Frame;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, TcpStream};

const GIB: u64 = 1 << 30;
const CHUNK: usize = 64 * 1024;

/// The gateway binary, serving `apis` on loopback with an admin listener.
struct Gateway {
    child: tokio::process::Child,
    addr: SocketAddr,
    admin: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Gateway {
    async fn start(limits: &str, upstream: SocketAddr) -> Gateway {
        let dir = tempfile::tempdir().expect("tempdir");
        let addr = closed_port().await;
        let admin = closed_port().await;
        let config = format!(
            "version: 1\nlisten: {addr}\nadmin: {{ listen: {admin} }}\nlimits: {limits}\n\
             apis:\n  - name: bulk\n    upstream: http://{upstream}\n    operations:\n\
             \x20     - {{ id: upload, method: POST, path: /upload }}\n\
             \x20     - {{ id: download, method: GET, path: \"/download/{{bytes}}\" }}\n\
             \x20     - {{ id: ping, method: GET, path: /ping }}\n"
        );
        let file = dir.path().join("tollgate.yaml");
        std::fs::write(&file, config).expect("write config");
        let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_tollgate"))
            .args(["serve", "-c"])
            .arg(&file)
            .env("RUST_LOG", "warn")
            .kill_on_drop(true)
            .spawn()
            .expect("spawn tollgate");
        let gw = Gateway {
            child,
            addr,
            admin,
            _dir: dir,
        };
        let up = tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                if get(gw.admin, "/healthz").await == Some(StatusCode::OK) {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await;
        assert!(up.is_ok(), "the gateway did not come up");
        gw
    }

    /// `VmRSS` (now) and `VmHWM` (peak) in KiB.
    fn memory_kib(&self) -> Option<(u64, u64)> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()?)).ok()?;
        let field = |name: &str| {
            status
                .lines()
                .find(|l| l.starts_with(name))?
                .split_whitespace()
                .nth(1)?
                .parse::<u64>()
                .ok()
        };
        Some((field("VmRSS:")?, field("VmHWM:")?))
    }
}

async fn get(addr: SocketAddr, path: &str) -> Option<StatusCode> {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let request = Request::get(format!("http://{addr}{path}"))
        .body(Full::default())
        .ok()?;
    let response = client.request(request).await.ok()?;
    let status = response.status();
    response.into_body().collect().await.ok()?;
    Some(status)
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// Lifts the soft open-file limit to the hard one (the child inherits it).
fn raise_nofile(needed: u64) -> u64 {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current.is_some_and(|c| c < needed) {
        limit.current = limit.maximum;
        let _ = setrlimit(Resource::Nofile, limit);
    }
    getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX)
}

// === streaming data and its checksum ===

/// Chunk `i` of a stream: 64 KiB of noise, its first 8 bytes the index, so
/// a lost, repeated or reordered chunk changes the checksum.
fn chunk(i: u64) -> Bytes {
    static NOISE: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    let noise = NOISE.get_or_init(|| {
        let mut x = 0x9e37_79b9_7f4a_7c15_u64;
        (0..CHUNK)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    });
    let mut bytes = noise.clone();
    bytes[..8].copy_from_slice(&i.to_le_bytes());
    Bytes::from(bytes)
}

fn chunks(total: u64) -> impl futures_util::Stream<Item = Result<Frame<Bytes>, Infallible>> {
    stream::iter((0..total / CHUNK as u64).map(|i| Ok(Frame::data(chunk(i)))))
}

/// An order-sensitive checksum over 8-byte words, fed in pieces of any size.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Sum {
    bytes: u64,
    hash: u64,
    pending: [u8; 8],
}

impl Sum {
    fn update(&mut self, mut data: &[u8]) {
        let filled = (self.bytes % 8) as usize;
        self.bytes += data.len() as u64;
        if filled > 0 {
            let take = (8 - filled).min(data.len());
            self.pending[filled..filled + take].copy_from_slice(&data[..take]);
            data = &data[take..];
            if filled + take < 8 {
                return;
            }
            self.word(u64::from_le_bytes(self.pending));
        }
        let mut words = data.chunks_exact(8);
        for w in &mut words {
            let mut word = [0u8; 8];
            word.copy_from_slice(w);
            self.word(u64::from_le_bytes(word));
        }
        let rest = words.remainder();
        self.pending[..rest.len()].copy_from_slice(rest);
    }

    fn word(&mut self, w: u64) {
        self.hash = (self.hash ^ w)
            .wrapping_mul(0x0000_0100_0000_01b3)
            .rotate_left(7);
    }

    fn finish(self) -> (u64, u64) {
        let tail = (self.bytes % 8) as usize;
        let mut last = self.hash;
        if tail > 0 {
            let mut word = [0u8; 8];
            word[..tail].copy_from_slice(&self.pending[..tail]);
            last = (last ^ u64::from_le_bytes(word)).wrapping_mul(0x0000_0100_0000_01b3);
        }
        (self.bytes, last)
    }
}

fn expected(total: u64) -> (u64, u64) {
    let mut sum = Sum::default();
    for i in 0..total / CHUNK as u64 {
        sum.update(&chunk(i));
    }
    sum.finish()
}

/// A streaming upstream: `POST /upload` answers with the byte count and
/// checksum of what it read, `GET /download/{n}` streams `n` bytes, and
/// `GET /ping` answers `pong`. Nothing is held whole.
async fn streaming_upstream() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(|req: Request<Incoming>| async move {
                    Ok::<_, Infallible>(stream_answer(req).await)
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

type AnyBody = http_body_util::combinators::BoxBody<Bytes, Infallible>;

async fn stream_answer(req: Request<Incoming>) -> Response<AnyBody> {
    let path = req.uri().path().to_string();
    if let Some(n) = path.strip_prefix("/download/") {
        let total = n.parse().unwrap_or(0);
        return Response::new(StreamBody::new(chunks(total)).boxed());
    }
    if path == "/upload" {
        let mut body = req.into_body();
        let mut sum = Sum::default();
        while let Some(Ok(frame)) = body.frame().await {
            if let Ok(data) = frame.into_data() {
                sum.update(&data);
            }
        }
        let (bytes, hash) = sum.finish();
        let json = format!("{{\"bytes\":{bytes},\"hash\":{hash}}}");
        return Response::new(Full::new(Bytes::from(json)).boxed());
    }
    Response::new(Full::new(Bytes::from_static(b"pong")).boxed())
}

// === the tests ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_idle_connections_leave_the_gateway_answering_in_bounded_memory() {
    const IDLE: usize = 10_000;
    let limit = raise_nofile(IDLE as u64 + 1_000);
    assert!(
        limit >= IDLE as u64 + 500,
        "the open-file limit is {limit}: raise it to run this test"
    );
    let upstream = streaming_upstream().await;
    let gw = Gateway::start(
        "{ max_connections: 10100, header_read_timeout: 60s }",
        upstream,
    )
    .await;
    let Some((before, _)) = gw.memory_kib() else {
        eprintln!("no /proc/<pid>/status: skipped");
        return;
    };
    let started = Instant::now();
    let mut idle = Vec::with_capacity(IDLE);
    for _ in 0..IDLE {
        idle.push(TcpStream::connect(gw.addr).await.expect("connect"));
    }
    let opened = started.elapsed();
    // Served after all of them were accepted (the accept queue is FIFO).
    assert_eq!(get(gw.addr, "/ping").await, Some(StatusCode::OK));
    assert_eq!(get(gw.admin, "/healthz").await, Some(StatusCode::OK));
    let (after, peak) = gw.memory_kib().expect("status");
    // They are still open: held, not dropped to make room.
    for stream in idle.iter().step_by(997) {
        let mut buf = [0u8; 1];
        assert!(
            matches!(stream.try_read(&mut buf), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
            "an idle connection was closed"
        );
    }
    let per_conn = (after.saturating_sub(before) * 1024) / IDLE as u64;
    println!(
        "{IDLE} idle connections opened in {opened:?}: gateway RSS {:.1} MiB -> {:.1} MiB \
         (peak {:.1} MiB), {per_conn} bytes per connection",
        mib(before),
        mib(after),
        mib(peak)
    );
    assert!(per_conn < 32 * 1024, "{per_conn} bytes per idle connection");
    drop(idle);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gib_streams_up_and_a_gib_streams_down_through_a_gateway_of_bounded_memory() {
    let upstream = streaming_upstream().await;
    // upstream_timeout runs until the upstream answers, and this one answers
    // once it has read the whole GiB: a loaded debug build may need more
    // than the default 30s.
    let gw = Gateway::start("{ max_body: 2GiB, upstream_timeout: 10m }", upstream).await;
    let Some((before, _)) = gw.memory_kib() else {
        eprintln!("no /proc/<pid>/status: skipped");
        return;
    };
    let want = expected(GIB);
    let client = Client::builder(TokioExecutor::new()).build_http::<AnyBody>();

    // Up: chunked, generated as it is sent.
    let started = Instant::now();
    let request = Request::post(format!("http://{}/upload", gw.addr))
        .body(StreamBody::new(chunks(GIB)).boxed())
        .expect("request");
    let response = client.request(request).await.expect("upload answered");
    assert_eq!(
        response.status(),
        StatusCode::OK,
        "after {:?}",
        started.elapsed()
    );
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    let json: serde_json::Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(
        (json["bytes"].as_u64(), json["hash"].as_u64()),
        (Some(want.0), Some(want.1))
    );
    let up_time = started.elapsed();
    let (_, up_peak) = gw.memory_kib().expect("status");

    // Down: read frame by frame, never held whole.
    let started = Instant::now();
    let request = Request::get(format!("http://{}/download/{GIB}", gw.addr))
        .body(Full::default().boxed())
        .expect("request");
    let response = client.request(request).await.expect("download answered");
    assert_eq!(response.status(), StatusCode::OK);
    let mut body = response.into_body();
    let mut sum = Sum::default();
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.expect("download frame").into_data() {
            sum.update(&data);
        }
    }
    assert_eq!(sum.finish(), want);
    let down_time = started.elapsed();
    let (_, down_peak) = gw.memory_kib().expect("status");

    let rate = |t: Duration| GIB as f64 / (1 << 20) as f64 / t.as_secs_f64();
    println!(
        "1 GiB up in {up_time:?} ({:.0} MiB/s), down in {down_time:?} ({:.0} MiB/s): gateway RSS \
         {:.1} MiB at start, peak {:.1} MiB after the upload, {:.1} MiB after the download",
        rate(up_time),
        rate(down_time),
        mib(before),
        mib(up_peak),
        mib(down_peak)
    );
    // Streamed, not buffered: the peak stays a small fraction of a GiB.
    assert!(mib(down_peak) < 128.0, "peak RSS {:.1} MiB", mib(down_peak));
}
