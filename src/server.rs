//! Listeners: accept connections (at most `max_connections` at once),
//! terminate TLS when configured, speak HTTP/1.1 and HTTP/2 (by ALPN, or
//! h2c prior knowledge), and hand each request to the current `Gateway`.
//! A connection that has not sent a whole first request head within
//! `header_read_timeout` is closed (hyper times out later heads itself),
//! and a request body that stalls for `body_read_timeout` is failed.
//! Shutdown stops accepting, lets in-flight requests finish for up to
//! `drain_timeout`, then returns.

use arc_swap::ArcSwap;
use http::Request;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio_rustls::TlsAcceptor;

use crate::body::{self, IdleTimeout, LimitedBody};
use crate::context::Connection;
use crate::gateway::{Gateway, Settings, TlsFiles};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// The gateway currently serving; a reload swaps in a new one while
/// requests in flight finish on the old.
pub type SharedGateway = Arc<ArcSwap<Gateway>>;

/// A bound, not yet running, public listener: one socket per worker
/// thread, all on one address (`SO_REUSEPORT`), so the kernel spreads new
/// connections across the workers and each connection lives on one
/// thread from accept to close.
pub struct Server {
    gateway: SharedGateway,
    listeners: Vec<std::net::TcpListener>,
    tls: Option<TlsAcceptor>,
}

impl Server {
    /// Binds `settings.listen` of the gateway `settings.workers` times (and
    /// loads its TLS files).
    pub async fn bind(gateway: SharedGateway) -> Result<Server, String> {
        let settings = gateway.load().settings.clone();
        let tls = match settings.tls {
            Some(_) => Some(tls_acceptor(&gateway)?),
            None => None,
        };
        let cannot = |e: std::io::Error| format!("cannot listen on {}: {e}", settings.listen);
        // SO_REUSEPORT would let a second gateway (same user) share a busy
        // port without a word: a plain bind first still reports it in use.
        if settings.listen.port() != 0 {
            drop(std::net::TcpListener::bind(settings.listen).map_err(cannot)?);
        }
        let first = reuseport_listener(settings.listen).map_err(cannot)?;
        let addr = first.local_addr().map_err(cannot)?;
        let mut listeners = vec![first];
        for _ in 1..settings.workers.max(1) {
            listeners.push(reuseport_listener(addr).map_err(cannot)?);
        }
        Ok(Server {
            gateway,
            listeners,
            tls,
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        match self.listeners.first() {
            Some(listener) => listener.local_addr(),
            None => Err(std::io::Error::other("no listener")),
        }
    }

    /// Serves until `shutdown` resolves, then drains. Each listener gets a
    /// thread with its own single-threaded runtime; this future only waits.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let settings: Settings = self.gateway.load().settings.clone();
        let connections = Arc::new(Semaphore::new(settings.max_connections));
        let (stop, stopped) = watch::channel(false);
        let mut finished = Vec::new();
        // Worker threads log where the starting thread logs (tests may set
        // a thread-local subscriber).
        let dispatch = tracing::dispatcher::get_default(|d| d.clone());
        for (i, listener) in self.listeners.into_iter().enumerate() {
            let (done, finished_rx) = tokio::sync::oneshot::channel::<()>();
            finished.push(finished_rx);
            let worker = Worker {
                gateway: self.gateway.clone(),
                tls: self.tls.clone(),
                connections: connections.clone(),
                settings: settings.clone(),
            };
            let mut stopped = stopped.clone();
            let dispatch = dispatch.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("tollgate-worker-{i}"))
                .spawn(move || {
                    let _log = tracing::dispatcher::set_default(&dispatch);
                    let runtime = match tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                    {
                        Ok(runtime) => runtime,
                        Err(e) => {
                            tracing::error!(error = %e, "cannot start a worker runtime");
                            return;
                        }
                    };
                    runtime.block_on(async move {
                        match TcpListener::from_std(listener) {
                            Ok(listener) => {
                                let until = async move {
                                    let _ = stopped.wait_for(|s| *s).await;
                                };
                                worker.serve(listener, until).await;
                            }
                            Err(e) => tracing::error!(error = %e, "cannot register a listener"),
                        }
                    });
                    drop(done);
                });
            if let Err(e) = spawned {
                tracing::error!(error = %e, "cannot start a worker thread");
            }
        }
        shutdown.await;
        let _ = stop.send(true);
        for worker in finished {
            // Resolves (with an error) when the worker thread is done.
            let _ = worker.await;
        }
    }
}

/// A non-blocking listening socket with `SO_REUSEPORT` set.
fn reuseport_listener(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    Ok(socket.into())
}

/// What one serving thread needs.
struct Worker {
    gateway: SharedGateway,
    tls: Option<TlsAcceptor>,
    /// Shared by every worker: `max_connections` is for the whole gateway.
    connections: Arc<Semaphore>,
    settings: Settings,
}

impl Worker {
    async fn serve(self, listener: TcpListener, shutdown: impl Future<Output = ()>) {
        let graceful = GracefulShutdown::new();
        let builder = http_builder(&self.settings);
        tokio::pin!(shutdown);
        loop {
            let (stream, peer) = tokio::select! {
                _ = &mut shutdown => break,
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of file descriptors and the like: keep serving
                        // the connections we have.
                        tracing::warn!(error = %e, "accept failed");
                        continue;
                    }
                },
            };
            // Accept, then wait for a slot: the slots are shared by every
            // worker, and a worker holding a free slot must never sit in
            // accept() while the waiting connection is in another worker's
            // queue. A worker that waits here accepts nothing more, so at
            // most one connection per worker is held past the limit.
            let permit = tokio::select! {
                _ = &mut shutdown => break,
                permit = self.connections.clone().acquire_owned() => match permit {
                    Ok(p) => p,
                    Err(_) => break,
                },
            };
            let _ = stream.set_nodelay(true);
            let gateway = self.gateway.clone();
            let builder = builder.clone();
            let tls = self.tls.clone();
            let watcher = graceful.watcher();
            let head_timeout = self.settings.header_read_timeout;
            tokio::spawn(async move {
                serve_connection(stream, peer, tls, head_timeout, gateway, builder, watcher).await;
                drop(permit);
            });
        }
        drop(listener);
        if tokio::time::timeout(self.settings.drain_timeout, graceful.shutdown())
            .await
            .is_err()
        {
            tracing::warn!("drain timeout passed with requests still in flight");
        }
    }
}

/// `head_timeout` bounds the TLS handshake, then the wait for the first
/// request head.
async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    tls: Option<TlsAcceptor>,
    head_timeout: Duration,
    gateway: SharedGateway,
    builder: auto::Builder<TokioExecutor>,
    watcher: hyper_util::server::graceful::Watcher,
) {
    let conn = Connection::new(peer, tls.is_some());
    let first_request = Arc::new(AtomicBool::new(false));
    let seen = first_request.clone();
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        seen.store(true, Ordering::Release);
        let gateway = gateway.load_full();
        // The body is counted against `max_body` as it streams, whatever
        // Content-Length claims, and fails if the caller stalls.
        let limit = gateway.settings.max_body;
        let stall = gateway.settings.body_read_timeout;
        let req = req.map(|b| body::boxed(LimitedBody::new(IdleTimeout::new(b, stall), limit)));
        let response = gateway.handle(req, &conn);
        async move { Ok::<_, Infallible>(response.await) }
    });
    let result = match tls {
        Some(acceptor) => match tokio::time::timeout(head_timeout, acceptor.accept(stream)).await {
            Ok(Ok(tls_stream)) => {
                let conn = builder.serve_connection(TokioIo::new(tls_stream), service);
                let conn = Box::pin(watcher.watch(conn));
                first_head_within(conn, &first_request, head_timeout).await
            }
            Ok(Err(e)) => {
                tracing::debug!(%peer, error = %e, "TLS handshake failed");
                return;
            }
            Err(_) => {
                tracing::debug!(%peer, "TLS handshake timed out");
                return;
            }
        },
        None => {
            let conn = builder.serve_connection(TokioIo::new(stream), service);
            let conn = Box::pin(watcher.watch(conn));
            first_head_within(conn, &first_request, head_timeout).await
        }
    };
    match result {
        Some(Err(e)) => tracing::debug!(%peer, error = %e, "connection ended with an error"),
        Some(Ok(())) => {}
        None => tracing::debug!(%peer, "no request head within header_read_timeout: closed"),
    }
}

/// Runs a connection, dropping (closing) it if no request has arrived by
/// `timeout`. hyper's own `header_read_timeout` only starts once it has
/// chosen HTTP/1 over HTTP/2, which waits for the caller's first bytes: a
/// connection that sends nothing, or part of the HTTP/2 preface, would
/// otherwise hold one of the `max_connections` slots for ever.
/// (The connection comes boxed: a generic future here hides its `Send`
/// from the compiler through hyper's connection types.)
async fn first_head_within<O>(
    mut conn: std::pin::Pin<Box<dyn Future<Output = O> + Send + '_>>,
    first_request: &AtomicBool,
    timeout: Duration,
) -> Option<O> {
    tokio::select! {
        out = &mut conn => return Some(out),
        _ = tokio::time::sleep(timeout) => {}
    }
    if first_request.load(Ordering::Acquire) {
        Some(conn.await)
    } else {
        None
    }
}

fn http_builder(settings: &Settings) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // hyper answers a head larger than its buffer with a bare 431; keep the
    // buffer above `max_header_bytes` so the gateway's own check (with a
    // problem+json body) sees every head up to twice the limit.
    let buf = (settings.max_header_bytes.saturating_mul(2) as usize).clamp(8192, 1 << 20);
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(settings.header_read_timeout)
        .max_buf_size(buf)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(256)
        .max_header_list_size(buf as u32)
        .keep_alive_interval(Some(std::time::Duration::from_secs(30)));
    builder
}

/// Reads the listener's certificate chain and private key. The error names
/// the config field (`cert_file` or `key_file`) it is about.
pub fn load_certified_key(files: &TlsFiles) -> Result<Arc<CertifiedKey>, (&'static str, String)> {
    let cert_pem = std::fs::read(&files.cert_file).map_err(|e| {
        (
            "cert_file",
            format!("cannot read {}: {e}", files.cert_file.display()),
        )
    })?;
    let key_pem = std::fs::read(&files.key_file).map_err(|e| {
        (
            "key_file",
            format!("cannot read {}: {e}", files.key_file.display()),
        )
    })?;
    let certs = rustls_pemfile::certs(&mut cert_pem.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ("cert_file", format!("{}: {e}", files.cert_file.display())))?;
    if certs.is_empty() {
        return Err((
            "cert_file",
            format!("{} holds no PEM certificate", files.cert_file.display()),
        ));
    }
    let key = rustls_pemfile::private_key(&mut key_pem.as_slice())
        .map_err(|e| ("key_file", format!("{}: {e}", files.key_file.display())))?
        .ok_or_else(|| {
            (
                "key_file",
                format!("{} holds no PEM private key", files.key_file.display()),
            )
        })?;
    let signing = rustls::crypto::ring::sign::any_supported_type(&key)
        .map_err(|e| ("key_file", format!("{}: {e}", files.key_file.display())))?;
    let certified = CertifiedKey::new(certs, signing);
    certified.keys_match().map_err(|e| {
        (
            "key_file",
            format!(
                "{} does not match {}: {e}",
                files.key_file.display(),
                files.cert_file.display()
            ),
        )
    })?;
    Ok(Arc::new(certified))
}

/// Hands each TLS handshake the certificate of the gateway serving now, so
/// a reload that read a renewed certificate takes effect on the next
/// connection without a restart.
struct CurrentCert(SharedGateway);

impl std::fmt::Debug for CurrentCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CurrentCert")
    }
}

impl ResolvesServerCert for CurrentCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.0.load().tls_key.clone()
    }
}

fn tls_acceptor(gateway: &SharedGateway) -> Result<TlsAcceptor, String> {
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_no_client_auth()
    .with_cert_resolver(Arc::new(CurrentCert(gateway.clone())));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// A server running in the background: its address and a way to stop it.
pub struct RunningServer {
    pub addr: SocketAddr,
    pub gateway: SharedGateway,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl RunningServer {
    /// Binds and starts serving `gateway` on a background task.
    pub async fn start(gateway: Gateway) -> Result<RunningServer, String> {
        let shared: SharedGateway = Arc::new(ArcSwap::from_pointee(gateway));
        let server = Server::bind(shared.clone()).await?;
        let addr = server.local_addr().map_err(|e| e.to_string())?;
        let (stop, mut stopped) = watch::channel(false);
        let task = tokio::spawn(server.run(async move {
            let _ = stopped.wait_for(|s| *s).await;
        }));
        Ok(RunningServer {
            addr,
            gateway: shared,
            stop,
            task,
        })
    }

    /// Stops accepting and waits for in-flight requests to drain.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}
