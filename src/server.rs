//! Listeners: accept connections (at most `max_connections` at once),
//! terminate TLS when configured, speak HTTP/1.1 and HTTP/2 (by ALPN, or
//! h2c prior knowledge), and hand each request to the current `Gateway`.
//! The connection guard: no slot is held for ever by one client.
//! - A connection that has not sent a whole first request head within
//!   `header_read_timeout` is closed (hyper times out later heads itself).
//! - One with no request in flight for `idle_timeout` is shut down
//!   gracefully (HTTP/2 GOAWAY); HTTP/2 connections are PINGed every
//!   `http2_ping_interval` of silence and closed if the PING goes unanswered.
//! - A write the client does not take for `send_timeout` (it stopped
//!   reading) fails the connection; so does an HTTP/2 stream left without
//!   flow-control window that long.
//! - A request body that stalls for `body_read_timeout`, or trickles slower
//!   than `min_body_rate` once `body_deadline` is spent, is failed.
//! - At most `max_connections` at once, and `max_connections_per_ip` from
//!   one address (IPv6 by /64; `trusted_proxies` not counted).
//! - Each request names one valid host (Host, HTTP/2 `:authority`, an
//!   absolute-form target), or is refused 400 before any routing.
//!
//! Shutdown stops accepting, lets in-flight requests finish for up to
//! `drain_timeout`, flushes buffered usage to the store, then returns.

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Request, Response, Version};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify, Semaphore};
use tokio_rustls::TlsAcceptor;
use tokio_util::either::Either;

use crate::body::{self, Body, BodyDeadline, IdleTimeout, LimitedBody};
use crate::context::{new_request_id, Connection};
use crate::gateway::{canonical_ip, Gateway, Settings, TlsFiles};
use crate::problem::{Code, Reject};
use crate::state::AnyStore;
use crate::woken::WhenWoken;
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

    /// The address the (first) public listener is bound to (with `:0`, the port the OS chose).
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
        let per_ip = Arc::new(PerIp::default());
        let (stop, stopped) = watch::channel(false);
        // Workers keep their runtimes (and the store connections they
        // made) until buffered usage has been flushed.
        let (exit, may_exit) = watch::channel(false);
        let mut drained = Vec::new();
        let mut finished = Vec::new();
        // Worker threads log where the starting thread logs (tests may set
        // a thread-local subscriber).
        let dispatch = tracing::dispatcher::get_default(|d| d.clone());
        for (i, listener) in self.listeners.into_iter().enumerate() {
            let (done, finished_rx) = tokio::sync::oneshot::channel::<()>();
            finished.push(finished_rx);
            let (worker_drained, drained_rx) = tokio::sync::oneshot::channel::<()>();
            drained.push(drained_rx);
            let mut may_exit = may_exit.clone();
            let worker = Worker {
                gateway: self.gateway.clone(),
                tls: self.tls.clone(),
                connections: connections.clone(),
                per_ip: per_ip.clone(),
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
                        drop(worker_drained);
                        let _ = may_exit.wait_for(|e| *e).await;
                    });
                    drop(done);
                });
            if let Err(e) = spawned {
                tracing::error!(error = %e, "cannot start a worker thread");
            }
        }
        shutdown.await;
        let _ = stop.send(true);
        for worker in drained {
            let _ = worker.await;
        }
        // Every request has been answered (or the drain timed out): what
        // they metered is in the store's buffer; write it out now.
        flush_usage(self.gateway.load().store()).await;
        let _ = exit.send(true);
        for worker in finished {
            // Resolves (with an error) when the worker thread is done.
            let _ = worker.await;
        }
    }
}

/// Writes the store's buffered usage (bounded by the drain timeout, so a
/// dead Redis cannot hold the exit).
async fn flush_usage(store: &AnyStore) {
    match tokio::time::timeout(Duration::from_secs(5), store.flush()).await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => tracing::warn!(%error, "usage not flushed at shutdown"),
        Err(_) => tracing::warn!("usage flush at shutdown timed out"),
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
    /// Shared too: `max_connections_per_ip` counts across workers.
    per_ip: Arc<PerIp>,
    settings: Settings,
}

impl Worker {
    async fn serve(self, listener: TcpListener, shutdown: impl Future<Output = ()>) {
        // Each connection holds a receiver: `true` asks it to shut down
        // gracefully, and the drain is over once every receiver is gone.
        let (drain, draining) = watch::channel(false);
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
            // Past the per-address cap: closed at once, before any read.
            let ip_slot = match self.settings.max_connections_per_ip {
                Some(cap) if !self.gateway.load().is_trusted(peer.ip()) => {
                    match self.per_ip.take(peer.ip(), cap) {
                        Some(slot) => Some(slot),
                        None => {
                            tracing::debug!(%peer, "max_connections_per_ip reached: closed");
                            continue;
                        }
                    }
                }
                _ => None,
            };
            let _ = stream.set_nodelay(true);
            let gateway = self.gateway.clone();
            let builder = builder.clone();
            let tls = self.tls.clone();
            let timeouts = ConnectionTimeouts::of(&self.settings);
            let draining = draining.clone();
            tokio::spawn(async move {
                serve_connection(stream, peer, tls, timeouts, gateway, builder, draining).await;
                drop(ip_slot);
                drop(permit);
            });
        }
        drop(listener);
        drop(draining);
        let _ = drain.send(true);
        if tokio::time::timeout(self.settings.drain_timeout, drain.closed())
            .await
            .is_err()
        {
            tracing::warn!("drain timeout passed with requests still in flight");
        }
    }
}

/// The per-connection timeouts, read once per connection.
#[derive(Clone, Copy)]
struct ConnectionTimeouts {
    head: Duration,
    idle: Duration,
    send: Duration,
}

impl ConnectionTimeouts {
    fn of(settings: &Settings) -> Self {
        ConnectionTimeouts {
            head: settings.header_read_timeout,
            idle: settings.idle_timeout,
            send: settings.send_timeout,
        }
    }
}

/// `timeouts.head` bounds the TLS handshake, then the wait for the first
/// request head; `draining` turning `true` shuts the connection down
/// gracefully.
async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    tls: Option<TlsAcceptor>,
    timeouts: ConnectionTimeouts,
    gateway: SharedGateway,
    builder: auto::Builder<TokioExecutor>,
    draining: watch::Receiver<bool>,
) {
    let conn = Connection::new(peer, tls.is_some());
    let activity = Arc::new(Activity::new());
    let seen = activity.clone();
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        seen.first_request.store(true, Ordering::Release);
        let in_flight = InFlight::begin(&seen);
        // HTTP/1.1 stalls show as a write that does not finish; HTTP/2
        // flow control can hold a stream without one.
        let frames = (req.version() == Version::HTTP_2).then(|| HandedFrames::new(&seen));
        let gateway = gateway.load_full();
        let response: Pin<Box<dyn Future<Output = Response<Body>> + Send>> =
            match host_refusal(&req) {
                Some(reject) => {
                    let mut response = reject.into_response(&new_request_id());
                    if req.version() <= Version::HTTP_11 {
                        response
                            .headers_mut()
                            .insert(header::CONNECTION, HeaderValue::from_static("close"));
                    }
                    Box::pin(std::future::ready(response))
                }
                None => {
                    // The body is counted against `max_body` as it streams,
                    // whatever Content-Length claims, and fails if the caller
                    // stalls or trickles.
                    let s = &gateway.settings;
                    let (limit, stall) = (s.max_body, s.body_read_timeout);
                    let (deadline, rate) = (s.body_deadline, s.min_body_rate);
                    let req = req.map(|b| {
                        let paced = BodyDeadline::new(IdleTimeout::new(b, stall), deadline, rate);
                        body::boxed(LimitedBody::new(paced, limit))
                    });
                    gateway.handle(req, &conn)
                }
            };
        async move {
            let response = response.await;
            Ok::<_, Infallible>(response.map(|body| Tracked {
                inner: body,
                _in_flight: in_flight,
                frames,
            }))
        }
    });
    let stream = WriteTimeout::new(stream, timeouts.send);
    // Plain and TLS connections share everything after the handshake.
    let io = match tls {
        None => Either::Left(stream),
        Some(acceptor) => {
            match tokio::time::timeout(timeouts.head, acceptor.accept(stream)).await {
                Ok(Ok(tls_stream)) => Either::Right(tls_stream),
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "TLS handshake timed out");
                    return;
                }
            }
        }
    };
    let conn = builder.serve_connection(TokioIo::new(io), service);
    // The timers beside the connection are polled only when they fire
    // (`WhenWoken`), not on each of its wake-ups.
    let conn = Box::pin(ShutDownWhen::new(
        conn,
        WhenWoken::new(idle_or_draining(activity.clone(), timeouts.idle, draining)),
        |c| c.graceful_shutdown(),
    ));
    let run = first_head_within(conn, &activity.first_request, timeouts.head);
    let Some(result) = unless_stalled(run, &activity, timeouts.send, peer).await else {
        return;
    };
    match result {
        Some(Err(e)) => tracing::debug!(%peer, error = %e, "connection ended with an error"),
        Some(Ok(())) => {}
        None => tracing::debug!(%peer, "no request head within header_read_timeout: closed"),
    }
}

/// Runs the connection unless the client stalls it (see [`stalled`]);
/// then drops it, which closes the socket.
async fn unless_stalled<O>(
    conn: impl Future<Output = Option<O>>,
    activity: &Arc<Activity>,
    send_timeout: Duration,
    peer: SocketAddr,
) -> Option<Option<O>> {
    tokio::select! {
        out = conn => Some(out),
        _ = WhenWoken::new(stalled(activity.clone(), send_timeout)) => {
            tracing::debug!(%peer, "the client took nothing for send_timeout: closed");
            None
        }
    }
}

/// Runs a connection, dropping (closing) it if no request has arrived by
/// `timeout`. hyper's own `header_read_timeout` only starts once it has
/// chosen HTTP/1 over HTTP/2, which waits for the caller's first bytes: a
/// connection that sends nothing, or part of the HTTP/2 preface, would
/// otherwise hold one of the `max_connections` slots for ever.
/// (The connection comes boxed: a generic future here hides its `Send`
/// from the compiler through hyper's connection types.)
pub(crate) async fn first_head_within<O>(
    mut conn: std::pin::Pin<Box<dyn Future<Output = O> + Send + '_>>,
    first_request: &AtomicBool,
    timeout: Duration,
) -> Option<O> {
    tokio::select! {
        out = &mut conn => return Some(out),
        _ = WhenWoken::new(tokio::time::sleep(timeout)) => {}
    }
    if first_request.load(Ordering::Acquire) {
        Some(conn.await)
    } else {
        None
    }
}

// === connection activity ===

/// What the connection's guard knows of its requests.
struct Activity {
    first_request: AtomicBool,
    /// Requests whose answer has not been fully handed to hyper yet.
    in_flight: AtomicUsize,
    /// When the connection was accepted: `idle_since` counts from here.
    born: tokio::time::Instant,
    /// When `in_flight` last fell to zero, in nanoseconds since `born`
    /// (0: never, so a connection idles from its start). Written, never
    /// notified: the idle timer reads it when it fires, so a request costs
    /// the timer nothing.
    idle_since: AtomicU64,
    /// HTTP/2 streams whose last body frame hyper took and has not asked
    /// for the next one since (it waits for the client's flow-control
    /// window), by stream, with when it took it.
    handed: parking_lot::Mutex<HashMap<u64, tokio::time::Instant>>,
    next_stream: AtomicU64,
    /// Notified when a frame is handed out, and when a graceful shutdown
    /// starts.
    stall_watch: Notify,
    /// Set once the connection was asked to shut down gracefully.
    closing: AtomicBool,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            first_request: AtomicBool::new(false),
            in_flight: AtomicUsize::new(0),
            born: tokio::time::Instant::now(),
            idle_since: AtomicU64::new(0),
            handed: Default::default(),
            next_stream: AtomicU64::new(0),
            stall_watch: Notify::new(),
            closing: AtomicBool::new(false),
        }
    }
}

/// Marks an HTTP/2 response body's frames as handed out until hyper asks
/// for the next one (see [`Activity::handed`]).
struct HandedFrames {
    activity: Arc<Activity>,
    stream: u64,
    handed: bool,
}

impl HandedFrames {
    fn new(activity: &Arc<Activity>) -> HandedFrames {
        HandedFrames {
            activity: activity.clone(),
            stream: activity.next_stream.fetch_add(1, Ordering::Relaxed),
            handed: false,
        }
    }

    fn asked_again(&mut self) {
        if self.handed {
            self.handed = false;
            self.activity.handed.lock().remove(&self.stream);
        }
    }

    fn handed_out(&mut self) {
        self.handed = true;
        self.activity
            .handed
            .lock()
            .insert(self.stream, tokio::time::Instant::now());
        self.activity.stall_watch.notify_one();
    }
}

impl Drop for HandedFrames {
    fn drop(&mut self) {
        self.asked_again();
    }
}

/// Resolves when the client has stopped taking the answer for `timeout`
/// in a way no socket write shows: an HTTP/2 stream waiting that long for
/// window (the client reads and answers PINGs but grants no window), or a
/// connection shutting down with nothing left in flight but bytes the
/// client does not take.
async fn stalled(activity: Arc<Activity>, timeout: Duration) {
    loop {
        let woken = activity.stall_watch.notified();
        let oldest = activity.handed.lock().values().min().copied();
        let closing = activity.closing.load(Ordering::Acquire)
            && activity.in_flight.load(Ordering::Acquire) == 0;
        match (oldest, closing) {
            (_, true) => {
                tokio::time::sleep(timeout).await;
                return;
            }
            (Some(since), false) => {
                tokio::select! {
                    _ = tokio::time::sleep_until(since + timeout) => {}
                    _ = woken => continue,
                }
                let now = tokio::time::Instant::now();
                let still = activity.handed.lock().values().any(|t| now - *t >= timeout);
                if still {
                    return;
                }
            }
            (None, false) => woken.await,
        }
    }
}

/// One request in flight on a connection, until its response body is done
/// (or dropped).
struct InFlight(Arc<Activity>);

impl InFlight {
    fn begin(activity: &Arc<Activity>) -> InFlight {
        activity.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight(activity.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.0.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            let since = self.0.born.elapsed().as_nanos().min(u128::from(u64::MAX)) as u64;
            self.0.idle_since.store(since.max(1), Ordering::Release);
        }
    }
}

pin_project_lite::pin_project! {
    /// A response body that keeps its request counted as in flight (and,
    /// on HTTP/2, says when hyper waits to take its next frame).
    struct Tracked {
        #[pin]
        inner: Body,
        _in_flight: InFlight,
        frames: Option<HandedFrames>,
    }
}

impl http_body::Body for Tracked {
    type Data = Bytes;
    type Error = body::BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        let this = self.project();
        let Some(frames) = this.frames else {
            return this.inner.poll_frame(cx);
        };
        frames.asked_again();
        let polled = this.inner.poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled {
            if frame.is_data() {
                frames.handed_out();
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// Resolves once the connection has had no request in flight for `idle`,
/// or the server starts draining.
async fn idle_or_draining(
    activity: Arc<Activity>,
    idle: Duration,
    mut draining: watch::Receiver<bool>,
) -> watch::Receiver<bool> {
    // One timer, re-armed only when it fires: busy, it checks again an
    // `idle` later; quiet, it sleeps until `idle` after the last request
    // ended, and returns once that has passed.
    let idle_for = async {
        let mut wake_at = activity.born + idle;
        loop {
            tokio::time::sleep_until(wake_at).await;
            let now = tokio::time::Instant::now();
            if activity.in_flight.load(Ordering::Acquire) > 0 {
                wake_at = now + idle;
                continue;
            }
            let since = Duration::from_nanos(activity.idle_since.load(Ordering::Acquire));
            let quiet_until = activity.born + since + idle;
            if quiet_until <= now {
                return;
            }
            wake_at = quiet_until;
        }
    };
    tokio::select! {
        _ = idle_for => {}
        _ = draining.wait_for(|d| *d) => {}
    }
    activity.closing.store(true, Ordering::Release);
    activity.stall_watch.notify_one();
    // Held until the connection is done: the drain waits for it.
    draining
}

pin_project_lite::pin_project! {
    /// Runs a connection; once `signal` resolves, asks it to shut down
    /// gracefully (`shut_down`) and keeps running it until it is done,
    /// holding what the signal returned until then.
    struct ShutDownWhen<C, S: Future, F> {
        #[pin]
        conn: C,
        #[pin]
        signal: S,
        fired: Option<S::Output>,
        shut_down: F,
    }
}

impl<C, S: Future, F> ShutDownWhen<C, S, F> {
    fn new(conn: C, signal: S, shut_down: F) -> Self
    where
        F: FnMut(Pin<&mut C>),
    {
        ShutDownWhen {
            conn,
            signal,
            fired: None,
            shut_down,
        }
    }
}

impl<C, S, F> Future for ShutDownWhen<C, S, F>
where
    C: Future,
    S: Future,
    F: FnMut(Pin<&mut C>),
{
    type Output = C::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<C::Output> {
        let mut this = self.project();
        if this.fired.is_none() {
            if let Poll::Ready(out) = this.signal.poll(cx) {
                *this.fired = Some(out);
                (this.shut_down)(this.conn.as_mut());
            }
        }
        this.conn.poll(cx)
    }
}

// === write timeout ===

pin_project_lite::pin_project! {
    /// Fails the connection once a write (or flush) has waited `timeout`
    /// for the client to take bytes: a client that stops reading a large
    /// answer is cut off, and its slot, its upstream connection and the
    /// buffered answer are freed.
    struct WriteTimeout<S> {
        #[pin]
        inner: S,
        timeout: Duration,
        timer: Option<Pin<Box<tokio::time::Sleep>>>,
        waiting: bool,
    }
}

impl<S> WriteTimeout<S> {
    fn new(inner: S, timeout: Duration) -> Self {
        WriteTimeout {
            inner,
            timeout,
            timer: None,
            waiting: false,
        }
    }
}

/// Passes a finished write through; on a pending one, starts (or keeps)
/// the clock and fails once it runs out.
fn timed<T>(
    polled: Poll<std::io::Result<T>>,
    timeout: Duration,
    timer: &mut Option<Pin<Box<tokio::time::Sleep>>>,
    waiting: &mut bool,
    cx: &mut Context<'_>,
) -> Poll<std::io::Result<T>> {
    match polled {
        Poll::Ready(result) => {
            *waiting = false;
            Poll::Ready(result)
        }
        Poll::Pending => {
            let deadline = tokio::time::Instant::now() + timeout;
            let timer = match timer {
                Some(timer) => {
                    if !*waiting {
                        timer.as_mut().reset(deadline);
                    }
                    timer
                }
                None => timer.insert(Box::pin(tokio::time::sleep_until(deadline))),
            };
            *waiting = true;
            if timer.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "the client took nothing for send_timeout",
                )));
            }
            Poll::Pending
        }
    }
}

impl<S: AsyncRead> AsyncRead for WriteTimeout<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        self.project().inner.poll_read(cx, buf)
    }
}

impl<S: AsyncWrite> AsyncWrite for WriteTimeout<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.project();
        let polled = this.inner.poll_write(cx, buf);
        timed(polled, *this.timeout, this.timer, this.waiting, cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.project();
        let polled = this.inner.poll_write_vectored(cx, bufs);
        timed(polled, *this.timeout, this.timer, this.waiting, cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = self.project();
        let polled = this.inner.poll_flush(cx);
        timed(polled, *this.timeout, this.timer, this.waiting, cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = self.project();
        let polled = this.inner.poll_shutdown(cx);
        timed(polled, *this.timeout, this.timer, this.waiting, cx)
    }
}

// === per-address cap ===

/// Open connections per client address (IPv6 by /64), across workers.
#[derive(Default)]
struct PerIp(parking_lot::Mutex<HashMap<IpAddr, usize>>);

/// One connection counted against its address; uncounted on drop.
struct IpSlot {
    per_ip: Arc<PerIp>,
    key: IpAddr,
}

impl PerIp {
    /// A slot for `ip`, unless it already holds `cap` connections.
    fn take(self: &Arc<Self>, ip: IpAddr, cap: usize) -> Option<IpSlot> {
        let key = match canonical_ip(ip) {
            IpAddr::V6(v6) => {
                let bits = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(bits.into())
            }
            v4 => v4,
        };
        let mut open = self.0.lock();
        let count = open.entry(key).or_insert(0);
        if *count >= cap {
            return None;
        }
        *count += 1;
        Some(IpSlot {
            per_ip: self.clone(),
            key,
        })
    }
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut open = self.per_ip.0.lock();
        if let Some(count) = open.get_mut(&self.key) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                open.remove(&self.key);
            }
        }
    }
}

// === host ===

/// Why a request does not name exactly one valid host, if it does not
/// (RFC 9112 §3.2, RFC 9113 §8.3.1): HTTP/1.1 needs one Host; a Host must be
/// an authority (`name[:port]`); an absolute-form target or an HTTP/2
/// `:authority` must agree with a Host sent beside it; HTTP/2 needs one of
/// them. Upstreams and caches that read the other one would judge a
/// different site.
fn host_refusal<B>(req: &Request<B>) -> Option<Reject> {
    let mut hosts = req.headers().get_all(header::HOST).iter();
    let host = match (hosts.next(), hosts.next()) {
        (_, Some(_)) => {
            return Some(Reject::new(
                Code::HeaderInvalid,
                "the request has more than one Host header",
            ))
        }
        (Some(value), None) => match parse_host(value) {
            Some(host) => Some(host),
            None => {
                return Some(Reject::new(
                    Code::HeaderInvalid,
                    "the Host header is not a host name or address with an optional port",
                ))
            }
        },
        (None, None) => None,
    };
    let target = req.uri().authority().map(|a| a.as_str());
    match (host, target) {
        (Some(host), Some(target)) if !host.eq_ignore_ascii_case(target) => Some(Reject::new(
            Code::HeaderInvalid,
            "the Host header and the request's authority name different hosts",
        )),
        (None, None) if req.version() == Version::HTTP_2 => Some(Reject::new(
            Code::HeaderRequired,
            "an HTTP/2 request needs an :authority or a Host header",
        )),
        (None, _) if req.version() == Version::HTTP_11 => Some(Reject::new(
            Code::HeaderRequired,
            "an HTTP/1.1 request needs a Host header",
        )),
        _ => None,
    }
}

/// The Host value if it is an authority without user info.
fn parse_host(value: &HeaderValue) -> Option<&str> {
    let text = value.to_str().ok()?;
    if text.is_empty() || text.bytes().any(|b| b <= b' ' || b == b'@') {
        return None;
    }
    let authority: http::uri::Authority = text.parse().ok()?;
    (authority.as_str() == text && !authority.host().is_empty()).then_some(text)
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
        .keep_alive_interval(Some(settings.http2_ping_interval))
        .keep_alive_timeout(settings.http2_ping_interval);
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
    /// The public listener's address.
    pub addr: SocketAddr,
    /// The serving gateway, replaceable (a reload swaps it).
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
