//! Upstream connections, kept per thread. Plain `http://` upstreams, the
//! common and hot case, get raw `hyper::client::conn::http1` connections
//! from a pool of this thread's own; `https://` upstreams (rustls, HTTP/2
//! when the upstream offers it by ALPN) go through a hyper-util pooled
//! client, also one per thread.
//!
//! How a plain-http call gets its connection (per thread, per upstream
//! `host:port`):
//! - the most recently returned idle connection that is ready is taken.
//!   The thread's pool is a `RefCell` touched only between awaits: no lock,
//!   no channel, no task beyond hyper's own per connection;
//! - else a new connection is opened (within [`CONNECT_TIMEOUT`]) and its
//!   connection task spawned on the thread's runtime (a worker's
//!   current-thread runtime, or whichever runtime the caller runs on);
//! - it goes back when the response body has been read to its end. A body
//!   that failed, or was dropped before its end, closes it instead;
//! - at most [`MAX_IDLE_PER_HOST`] idle connections per upstream and
//!   thread are kept; a connection idle for [`IDLE_TIMEOUT`] is closed by
//!   its own task; a closed one is dropped when the pool next meets it;
//! - a request whose reused connection turned out closed before a byte of
//!   it was written is sent again on another connection, as hyper-util's
//!   client does: its body has not been touched.

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::uri::{Authority, Scheme, Uri};
use http::{Request, Response};
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use thread_local::ThreadLocal;
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::body::Body;

/// How long opening an upstream connection may take (name lookup
/// included), split evenly over the addresses a name resolves to.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// An upstream connection idle this long is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// Idle connections kept per upstream and thread; one returned past this
/// is closed.
pub const MAX_IDLE_PER_HOST: usize = 256;

/// The pooled client for https upstreams: keep-alive, rustls, HTTP/2 to
/// upstreams that offer it.
pub type HttpClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Body>;

/// The bounds of the plain-http pool.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PoolSettings {
    pub max_idle_per_host: usize,
    pub idle_timeout: Duration,
    pub connect_timeout: Duration,
}

impl Default for PoolSettings {
    fn default() -> Self {
        PoolSettings {
            max_idle_per_host: MAX_IDLE_PER_HOST,
            idle_timeout: IDLE_TIMEOUT,
            connect_timeout: CONNECT_TIMEOUT,
        }
    }
}

/// The upstream connections every operation forwards through, one set per
/// thread that forwards. With a runtime per core (server.rs) a request,
/// the upstream connection it reuses and that connection's task stay on
/// one thread: no pool lock shared between cores, no cross-thread wake-up
/// per request.
pub struct UpstreamClients {
    settings: PoolSettings,
    http1: http1::Builder,
    plain: ThreadLocal<RefCell<ThreadPool>>,
    tls_builder: hyper_util::client::legacy::Builder,
    tls_connector: hyper_rustls::HttpsConnector<HttpConnector>,
    tls: ThreadLocal<HttpClient>,
}

/// What a call could not get from its upstream.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// The TCP (or TLS) connection failed.
    #[error("cannot connect to the upstream: {0}")]
    Connect(#[source] std::io::Error),
    /// No connection within the connect timeout.
    #[error("no connection to the upstream within {0:?}")]
    ConnectTimeout(Duration),
    /// The HTTP/1.1 exchange on an open connection failed.
    #[error("upstream exchange failed: {0}")]
    Http(#[source] hyper::Error),
    /// The pooled client (HTTP/2 and https upstreams) failed.
    #[error("upstream request failed: {0}")]
    Client(#[source] hyper_util::client::legacy::Error),
}

/// Builds the upstream clients: system roots plus `ca_file` for https.
pub fn build_client(ca_file: Option<&std::path::Path>) -> Result<Arc<UpstreamClients>, String> {
    UpstreamClients::new(ca_file, PoolSettings::default()).map(Arc::new)
}

// === impl UpstreamClients ===

impl UpstreamClients {
    pub(crate) fn new(
        ca_file: Option<&std::path::Path>,
        settings: PoolSettings,
    ) -> Result<Self, String> {
        let mut roots = rustls::RootCertStore::empty();
        let native = rustls_native_certs::load_native_certs();
        for cert in native.certs {
            // A broken system certificate must not stop the gateway; it is skipped.
            let _ = roots.add(cert);
        }
        if let Some(path) = ca_file {
            let pem =
                std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            let mut added = 0;
            for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
                let cert = cert.map_err(|e| format!("{}: {e}", path.display()))?;
                roots
                    .add(cert)
                    .map_err(|e| format!("{}: {e}", path.display()))?;
                added += 1;
            }
            if added == 0 {
                return Err(format!("{} holds no PEM certificate", path.display()));
            }
        }
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();

        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(settings.connect_timeout));
        let tls_connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(http);
        let mut tls_builder = Client::builder(TokioExecutor::new());
        tls_builder
            // With a timer, idle connections are reaped, not only skipped.
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(settings.idle_timeout)
            .pool_max_idle_per_host(settings.max_idle_per_host);
        Ok(UpstreamClients {
            settings,
            http1: http1::Builder::new(),
            plain: ThreadLocal::new(),
            tls_builder,
            tls_connector,
            tls: ThreadLocal::new(),
        })
    }

    /// This thread's hyper-util client (made on first use): what https
    /// upstreams go through, and a full client for other callers (JWKS).
    pub fn get(&self) -> &HttpClient {
        self.tls
            .get_or(|| self.tls_builder.build(self.tls_connector.clone()))
    }

    /// Sends one request to the upstream its absolute URI names: plain
    /// http over this thread's raw HTTP/1.1 pool, anything else through
    /// [`get`](Self::get). Only the time to the response head is spent
    /// here; the body streams afterwards.
    pub async fn send(
        clients: &Arc<Self>,
        req: Request<Body>,
    ) -> Result<Response<UpstreamBody>, UpstreamError> {
        if req.uri().scheme() == Some(&Scheme::HTTP) {
            if let Some(authority) = req.uri().authority().cloned() {
                return Self::send_plain(clients, authority, req).await;
            }
        }
        let response = clients
            .get()
            .request(req)
            .await
            .map_err(UpstreamError::Client)?;
        Ok(response.map(|inner| UpstreamBody { inner, reuse: None }))
    }

    async fn send_plain(
        clients: &Arc<Self>,
        authority: Authority,
        mut req: Request<Body>,
    ) -> Result<Response<UpstreamBody>, UpstreamError> {
        *req.uri_mut() = origin_form(req.uri());
        // These connections speak HTTP/1.1 whatever the caller spoke.
        *req.version_mut() = http::Version::HTTP_11;
        loop {
            let (host, idle) = clients.checkout(&authority)?;
            let reused = idle.is_some();
            let mut conn = match idle {
                Some(conn) => conn,
                // Boxed: dialling is the rare path, and its state would
                // otherwise ride along in every request's future.
                None => Box::pin(clients.connect(&authority)).await?,
            };
            req.headers_mut().insert(header::HOST, host);
            match conn.sender.try_send_request(req).await {
                Ok(response) => {
                    let reuse = Reuse {
                        clients: clients.clone(),
                        authority,
                        conn,
                    };
                    return Ok(response.map(|inner| UpstreamBody::new(inner, reuse)));
                }
                Err(mut err) => match err.take_message() {
                    // The connection closed before the request was written:
                    // nothing of it reached the upstream, so send it again.
                    Some(unsent) if reused => {
                        tracing::debug!(upstream = %authority, error = %err.error(), "pooled upstream connection was closed; retrying");
                        req = unsent;
                    }
                    _ => return Err(UpstreamError::Http(err.into_error())),
                },
            }
        }
    }

    /// The `Host` header for `authority` and, if there is one, a ready idle
    /// connection to it from this thread's pool.
    fn checkout(
        &self,
        authority: &Authority,
    ) -> Result<(HeaderValue, Option<Conn>), UpstreamError> {
        let cell = self.plain.get_or(|| RefCell::new(ThreadPool::default()));
        // Never borrowed across an await, so never busy; if it were, a fresh
        // connection is the safe answer.
        let Ok(mut pool) = cell.try_borrow_mut() else {
            return Ok((host_header(authority)?, None));
        };
        if let Some(host) = pool.hosts.get_mut(authority.as_str()) {
            return Ok((host.header.clone(), host.take_ready()));
        }
        let header = host_header(authority)?;
        pool.hosts.insert(
            authority.as_str().into(),
            HostPool {
                header: header.clone(),
                idle: VecDeque::new(),
            },
        );
        Ok((header, None))
    }

    /// Puts a connection whose exchange is complete back in this thread's
    /// pool, or drops (closes) it when closed or past the idle cap.
    fn give_back(&self, authority: &Authority, conn: Conn) {
        if conn.sender.is_closed() {
            return;
        }
        let cell = self.plain.get_or(|| RefCell::new(ThreadPool::default()));
        let Ok(mut pool) = cell.try_borrow_mut() else {
            return;
        };
        // A response read on another thread than its request (a
        // multi-threaded caller) lands in that thread's pool.
        let host = match pool.hosts.get_mut(authority.as_str()) {
            Some(host) => host,
            None => {
                let Ok(header) = host_header(authority) else {
                    return;
                };
                pool.hosts
                    .entry(authority.as_str().into())
                    .or_insert(HostPool {
                        header,
                        idle: VecDeque::new(),
                    })
            }
        };
        if host.idle.len() >= self.settings.max_idle_per_host {
            host.idle.retain(|c| !c.sender.is_closed());
            if host.idle.len() >= self.settings.max_idle_per_host {
                return;
            }
        }
        conn.clock.mark_idle();
        host.idle.push_back(conn);
    }

    async fn connect(&self, authority: &Authority) -> Result<Conn, UpstreamError> {
        let limit = self.settings.connect_timeout;
        let stream = tokio::time::timeout(limit, tcp_connect(authority, limit))
            .await
            .map_err(|_| UpstreamError::ConnectTimeout(limit))?
            .map_err(UpstreamError::Connect)?;
        let _ = stream.set_nodelay(true);
        let (sender, connection) = self
            .http1
            .handshake(TokioIo::new(stream))
            .await
            .map_err(UpstreamError::Http)?;
        let clock = Arc::new(IdleClock::busy());
        tokio::spawn(run_connection(
            connection,
            clock.clone(),
            self.settings.idle_timeout,
        ));
        Ok(Conn { sender, clock })
    }

    /// Idle connections to `authority` in this thread's pool.
    #[cfg(test)]
    fn idle_count(&self, authority: &str) -> usize {
        self.plain
            .get()
            .and_then(|cell| cell.borrow().hosts.get(authority).map(|h| h.idle.len()))
            .unwrap_or(0)
    }
}

impl std::fmt::Debug for UpstreamClients {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("UpstreamClients")
    }
}

/// `/path?query` of an absolute URI: what an HTTP/1.1 request line to an
/// origin server carries.
fn origin_form(uri: &Uri) -> Uri {
    match uri.path_and_query() {
        Some(pq) => Uri::from(pq.clone()),
        None => Uri::from_static("/"),
    }
}

/// `Host` as hyper-util's client writes it: the authority, without the
/// default port.
fn host_header(authority: &Authority) -> Result<HeaderValue, UpstreamError> {
    let host = match authority.port_u16() {
        Some(80) => authority.host(),
        _ => authority.as_str(),
    };
    HeaderValue::from_str(host).map_err(|_| {
        UpstreamError::Connect(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("`{authority}` cannot be a Host header"),
        ))
    })
}

/// Opens a TCP connection to `authority` (port 80 by default), trying each
/// address its name resolves to with an even share of `limit`.
async fn tcp_connect(authority: &Authority, limit: Duration) -> std::io::Result<TcpStream> {
    let host = authority.host();
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let port = authority.port_u16().unwrap_or(80);
    let addrs: Vec<_> = tokio::net::lookup_host((host, port)).await?.collect();
    let share = limit / u32::try_from(addrs.len().max(1)).unwrap_or(u32::MAX);
    let mut last = None;
    for addr in addrs {
        match tokio::time::timeout(share, TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => return Ok(stream),
            Ok(Err(e)) => last = Some(e),
            Err(_) => last = Some(std::io::ErrorKind::TimedOut.into()),
        }
    }
    Err(last.unwrap_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("{host} has no address"),
        )
    }))
}

/// One connection's task: hyper's connection future, closed early once the
/// connection has sat idle in a pool for `idle_timeout`.
async fn run_connection(
    connection: http1::Connection<TokioIo<TcpStream>, Body>,
    clock: Arc<IdleClock>,
    idle_timeout: Duration,
) {
    let expired = async {
        loop {
            match clock.idle_since() {
                Some(since) if since + idle_timeout <= Instant::now() => return,
                Some(since) => tokio::time::sleep_until(since + idle_timeout).await,
                None => tokio::time::sleep(idle_timeout).await,
            }
        }
    };
    tokio::select! {
        ended = connection => {
            if let Err(e) = ended {
                tracing::debug!(error = %e, "upstream connection ended with an error");
            }
        }
        // Polled only when its timer fired, not on each of the
        // connection's wake-ups.
        () = crate::woken::WhenWoken::new(expired) => tracing::debug!("idle upstream connection closed"),
    }
}

// === ThreadPool ===

/// One thread's idle plain-http connections, by upstream authority.
#[derive(Default)]
struct ThreadPool {
    hosts: HashMap<Box<str>, HostPool, BuildHasherDefault<Fnv1a>>,
}

struct HostPool {
    /// Made once per thread and upstream, cloned per request.
    header: HeaderValue,
    /// Oldest first; taken from the back.
    idle: VecDeque<Conn>,
}

impl HostPool {
    /// The most recently returned connection that is ready for a request.
    /// One not ready yet (its previous request body still streaming while
    /// the response was complete) stays for later.
    fn take_ready(&mut self) -> Option<Conn> {
        while self.idle.back().is_some_and(|c| c.sender.is_closed()) {
            self.idle.pop_back();
        }
        let at = self.idle.iter().rposition(|c| c.sender.is_ready())?;
        let conn = self.idle.remove(at)?;
        conn.clock.mark_busy();
        Some(conn)
    }
}

/// A connection out of the pool or in it.
struct Conn {
    sender: http1::SendRequest<Body>,
    clock: Arc<IdleClock>,
}

/// When a connection went idle, shared by the pool (which sets it) and the
/// connection's task (which closes the connection once it is too old).
struct IdleClock {
    opened: Instant,
    /// Milliseconds after `opened` the connection went idle; [`BUSY`] while
    /// a request has it.
    idle_since_ms: AtomicU64,
}

const BUSY: u64 = u64::MAX;

impl IdleClock {
    fn busy() -> Self {
        IdleClock {
            opened: Instant::now(),
            idle_since_ms: AtomicU64::new(BUSY),
        }
    }

    fn mark_idle(&self) {
        // Rounded up, so that the connection is never closed before it has
        // been idle for the whole timeout.
        let ms = self.opened.elapsed().as_micros().div_ceil(1000);
        let ms = u64::try_from(ms).unwrap_or(BUSY - 1).min(BUSY - 1);
        self.idle_since_ms.store(ms, Ordering::Relaxed);
    }

    fn mark_busy(&self) {
        self.idle_since_ms.store(BUSY, Ordering::Relaxed);
    }

    fn idle_since(&self) -> Option<Instant> {
        match self.idle_since_ms.load(Ordering::Relaxed) {
            BUSY => None,
            ms => Some(self.opened + Duration::from_millis(ms)),
        }
    }
}

/// FNV-1a: the pool's keys are a few short upstream authorities from the
/// config, hashed on every request; SipHash's flood resistance buys nothing.
struct Fnv1a(u64);

impl Default for Fnv1a {
    fn default() -> Self {
        Fnv1a(0xcbf2_9ce4_8422_2325)
    }
}

impl Hasher for Fnv1a {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

// === UpstreamBody ===

/// Where a finished exchange's connection goes back to.
struct Reuse {
    clients: Arc<UpstreamClients>,
    authority: Authority,
    conn: Conn,
}

impl Reuse {
    fn give_back(self) {
        self.clients.give_back(&self.authority, self.conn);
    }
}

pin_project_lite::pin_project! {
    /// An upstream response body. One from the plain-http pool returns its
    /// connection to the pool when read to its end.
    pub struct UpstreamBody {
        #[pin]
        inner: Incoming,
        reuse: Option<Reuse>,
    }
}

impl UpstreamBody {
    fn new(inner: Incoming, reuse: Reuse) -> Self {
        if inner.is_end_stream() {
            // No body to read (204, HEAD, `Content-Length: 0`): done now.
            reuse.give_back();
            return UpstreamBody { inner, reuse: None };
        }
        UpstreamBody {
            inner,
            reuse: Some(reuse),
        }
    }
}

impl HttpBody for UpstreamBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let mut this = self.project();
        let polled = this.inner.as_mut().poll_frame(cx);
        match &polled {
            Poll::Pending => {}
            Poll::Ready(Some(Ok(_))) if !this.inner.is_end_stream() => {}
            // The last frame (a reader may stop asking once
            // `is_end_stream` says so), or the end itself.
            Poll::Ready(Some(Ok(_)) | None) => {
                if let Some(reuse) = this.reuse.take() {
                    reuse.give_back();
                }
            }
            // A broken body leaves its connection unusable: dropped, closed.
            Poll::Ready(Some(Err(_))) => *this.reuse = None,
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use std::sync::atomic::AtomicUsize;
    use tokio::net::TcpListener;
    use tokio::sync::{watch, Barrier};

    /// A plain HTTP/1.1 upstream answering `ok` once `hold` requests have
    /// arrived together; counts the connections it accepted and those
    /// that have closed.
    struct CountingUpstream {
        addr: std::net::SocketAddr,
        accepted: Arc<AtomicUsize>,
        closed: watch::Receiver<usize>,
    }

    impl CountingUpstream {
        async fn start(hold: usize) -> CountingUpstream {
            let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            let addr = listener.local_addr().expect("addr");
            let accepted = Arc::new(AtomicUsize::new(0));
            let (closed_tx, closed) = watch::channel(0);
            let closed_tx = Arc::new(closed_tx);
            let barrier = Arc::new(Barrier::new(hold));
            let count = accepted.clone();
            tokio::spawn(async move {
                while let Ok((stream, _)) = listener.accept().await {
                    count.fetch_add(1, Ordering::SeqCst);
                    let barrier = barrier.clone();
                    let closed_tx = closed_tx.clone();
                    tokio::spawn(async move {
                        let svc = hyper::service::service_fn(move |_req| {
                            let barrier = barrier.clone();
                            async move {
                                barrier.wait().await;
                                Ok::<_, std::convert::Infallible>(Response::new(
                                    http_body_util::Full::new(Bytes::from_static(b"ok")),
                                ))
                            }
                        });
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), svc)
                            .await;
                        closed_tx.send_modify(|n| *n += 1);
                    });
                }
            });
            CountingUpstream {
                addr,
                accepted,
                closed,
            }
        }

        fn accepted(&self) -> usize {
            self.accepted.load(Ordering::SeqCst)
        }

        /// Waits (at most 10 s) until `n` connections have closed.
        async fn closed(&self, n: usize) {
            let mut closed = self.closed.clone();
            tokio::time::timeout(Duration::from_secs(10), closed.wait_for(|c| *c >= n))
                .await
                .expect("connections closed in time")
                .expect("upstream alive");
        }
    }

    fn clients(settings: PoolSettings) -> Arc<UpstreamClients> {
        Arc::new(UpstreamClients::new(None, settings).expect("clients"))
    }

    async fn get_ok(clients: &Arc<UpstreamClients>, addr: std::net::SocketAddr) {
        let req = Request::get(format!("http://{addr}/x"))
            .body(crate::body::empty())
            .expect("request");
        let response = UpstreamClients::send(clients, req).await.expect("answer");
        assert_eq!(response.status(), 200);
        let body = response.into_body().collect().await.expect("body");
        assert_eq!(body.to_bytes(), "ok");
    }

    #[tokio::test]
    async fn idle_connections_past_the_cap_are_closed_and_the_rest_reused() {
        let up = CountingUpstream::start(3).await;
        let clients = clients(PoolSettings {
            max_idle_per_host: 2,
            ..PoolSettings::default()
        });
        // Three calls at once need three connections...
        tokio::join!(
            get_ok(&clients, up.addr),
            get_ok(&clients, up.addr),
            get_ok(&clients, up.addr)
        );
        assert_eq!(up.accepted(), 3);
        // ...of which two are kept idle and the third closed.
        assert_eq!(clients.idle_count(&up.addr.to_string()), 2);
        up.closed(1).await;
        assert_eq!(*up.closed.borrow(), 1);
        // Three more at once: the two kept are reused, one more is opened.
        tokio::join!(
            get_ok(&clients, up.addr),
            get_ok(&clients, up.addr),
            get_ok(&clients, up.addr)
        );
        assert_eq!(up.accepted(), 4);
        assert_eq!(clients.idle_count(&up.addr.to_string()), 2);
    }

    #[tokio::test]
    async fn a_connection_idle_past_the_idle_timeout_is_closed() {
        let up = CountingUpstream::start(1).await;
        let idle_timeout = Duration::from_millis(300);
        let clients = clients(PoolSettings {
            idle_timeout,
            ..PoolSettings::default()
        });
        get_ok(&clients, up.addr).await;
        // Taken before the connection goes idle again, so the bound below
        // holds however long the call takes.
        let idle_from = crate::clock::monotonic();
        get_ok(&clients, up.addr).await;
        assert_eq!(up.accepted(), 1, "the second call reused the connection");
        up.closed(1).await;
        assert!(
            idle_from.elapsed() >= idle_timeout,
            "closed after {:?} idle",
            idle_from.elapsed()
        );
        // The pool noticed: the next call opens a new connection.
        get_ok(&clients, up.addr).await;
        assert_eq!(up.accepted(), 2);
    }

    #[test]
    fn host_header_drops_only_the_default_port() {
        let host = |a: &str| host_header(&a.parse().expect("authority")).expect("host");
        assert_eq!(host("up.example:80"), "up.example");
        assert_eq!(host("up.example:8080"), "up.example:8080");
        assert_eq!(host("up.example"), "up.example");
        assert_eq!(host("[::1]:9090"), "[::1]:9090");
        let uri: Uri = "http://h:1/a/b?c=d".parse().expect("uri");
        assert_eq!(origin_form(&uri), "/a/b?c=d");
    }
}
