//! The compiled, immutable `Gateway`: settings, the route table, and one
//! prebuilt service stack per operation. `Gateway::compile` turns a loaded
//! config into it (collecting every mistake as FILE:LINE:COL), and
//! `Gateway::handle` answers one request: identity headers scrubbed, limits
//! checked, path normalised, route looked up, the operation's stack called.
//! A reload compiles a new `Gateway` and swaps it in whole.

use http::header::{self, HeaderValue};
use http::{Method, Request, Response};
use ipnet::IpNet;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tower::ServiceExt;

use crate::agents::{Agents, AgentsSource};
use crate::body::Body;
use crate::clock::SharedClock;
use crate::config::schema::{GraphqlSelector, PolicyDef, PolicyRef, StoreKind};
use crate::config::{ConfigError, LoadedConfig};
use crate::context::{new_request_id, Connection, OperationInfo, RequestContext};
use crate::headers::*;
use crate::metrics::{Metrics, OperationMetrics, Outcome, ANONYMOUS};
use crate::policy::cache::{CacheHit, CacheRegistry};
use crate::policy::credentials::Credentials;
use crate::policy::jwks::JwksRegistry;
use crate::policy::{self, CompileCx, CompiledPolicy, OperationService, PolicyMeta, RoleTable};
use crate::problem::{Code, Reject, RejectedWith};
use crate::proxy::{Proxy, UpstreamClients, UpstreamTarget, UpstreamUri};
use crate::routing::{normalize_path, RouteTable};
use crate::stack;
use crate::state::{AnyStore, RedisStore, Store};
use rustls::sign::CertifiedKey;

/// Resources that outlive one compiled config (so a reload keeps them).
#[derive(Clone)]
pub struct Deps {
    pub clock: SharedClock,
    pub client: Arc<UpstreamClients>,
    /// Rate-limit buckets, quotas and bans: shared by every `Gateway`
    /// compiled with these deps, so a reload keeps the counters.
    pub store: AnyStore,
    /// Prometheus metrics: like the store, they outlive a reload.
    pub metrics: Arc<Metrics>,
    /// JWT keys fetched from a `jwks_url`: a reload that keeps the URL
    /// keeps them.
    pub jwks: Arc<JwksRegistry>,
    /// Response caches, kept by a reload that leaves the config unchanged.
    pub caches: Arc<CacheRegistry>,
    /// MCP handshake sessions: a reload keeps them too.
    pub sessions: Arc<crate::agents::Sessions>,
}

impl Deps {
    /// The real clock and a client trusting the system roots plus the
    /// config's `upstream_tls.ca_file`.
    pub fn for_config(loaded: &LoadedConfig, clock: SharedClock) -> Result<Deps, Vec<ConfigError>> {
        let ca_file = loaded
            .config
            .upstream_tls
            .ca_file
            .as_ref()
            .map(|f| loaded.base_dir.join(f));
        let client = crate::proxy::build_client(ca_file.as_deref())
            .map_err(|message| vec![loaded.error_at(&["upstream_tls", "ca_file"], message)])?;
        let store = match loaded.config.state.store {
            StoreKind::Memory => AnyStore::memory(),
            // Only a malformed URL is an error here: Redis being down at
            // start is not (the store connects on first use, and calls fail
            // per `on_store_error` until it answers).
            StoreKind::Redis => {
                let store = RedisStore::from_config(&loaded.config.state, &loaded.base_dir)
                    .map_err(|(at, message)| vec![loaded.error_at(&at, message)])?;
                AnyStore::Redis(Arc::new(store))
            }
        };
        let metrics = Arc::<Metrics>::default();
        Ok(Deps {
            jwks: JwksRegistry::new(client.clone(), clock.clone()),
            clock,
            client,
            store,
            caches: Arc::new(CacheRegistry::new(metrics.clone())),
            metrics,
            sessions: Arc::default(),
        })
    }
}

/// Listener-level settings from the config.
#[derive(Debug, Clone)]
pub struct Settings {
    pub listen: SocketAddr,
    pub tls: Option<TlsFiles>,
    pub admin_listen: Option<SocketAddr>,
    pub admin_token_env: Option<String>,
    pub trusted_proxies: Vec<IpNet>,
    pub max_body: u64,
    pub max_header_bytes: u64,
    pub header_read_timeout: Duration,
    pub body_read_timeout: Duration,
    pub upstream_timeout: Duration,
    pub max_connections: usize,
    pub drain_timeout: Duration,
    /// Serving threads (≥ 1).
    pub workers: usize,
}

#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

/// One routable operation.
pub struct Operation {
    pub info: Arc<OperationInfo>,
    pub method: Method,
    /// The public path template (`base_path` + `path`).
    pub template: String,
    pub target: UpstreamTarget,
    /// Effective policies, in config order (for the admin API and OpenAPI).
    pub policies: Vec<Arc<PolicyMeta>>,
    /// The root field this operation publishes at a GraphQL endpoint.
    pub graphql: Option<GraphqlSelector>,
    service: OperationService,
    metrics: Arc<OperationMetrics>,
}

pub struct Gateway {
    pub settings: Settings,
    pub loaded: LoadedConfig,
    pub operations: Vec<Operation>,
    /// The listener's certificate, read at compile so a reload serves a
    /// renewed one to the next connection (and refuses an unreadable one).
    pub tls_key: Option<Arc<CertifiedKey>>,
    /// The operations offered as agent tools, and the MCP endpoint.
    pub agents: Agents,
    routes: RouteTable,
    unrouted: OperationService,
    unrouted_metrics: Arc<OperationMetrics>,
    metrics: Arc<Metrics>,
    /// Where usage is metered (the `Deps` store).
    store: AnyStore,
}

/// Where a request goes when no operation takes it: the route refusal
/// travels in the extensions to the end of the unrouted stack.
#[derive(Debug, Clone)]
struct RouteMiss(Reject);

/// What a request's path and method lead to.
enum Target<'g> {
    Operation(usize),
    /// The MCP endpoint (`agents.mcp_path`).
    Agents(&'g crate::agents::Endpoint),
}

impl Gateway {
    /// Compiles a loaded config. Every mistake found is returned, each with
    /// its file, line and column.
    pub fn compile(loaded: LoadedConfig, deps: &Deps) -> Result<Gateway, Vec<ConfigError>> {
        Compiler::new(&loaded, deps).run().map(
            |(settings, tls_key, operations, routes, unrouted, agents)| Gateway {
                settings,
                loaded,
                operations,
                tls_key,
                agents,
                routes,
                unrouted,
                unrouted_metrics: deps.metrics.unrouted(),
                metrics: deps.metrics.clone(),
                store: deps.store.clone(),
            },
        )
    }

    /// The metrics registry this gateway counts into.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The state store (counters, bans, usage) this gateway uses.
    pub fn store(&self) -> &AnyStore {
        &self.store
    }

    /// Whether `ip` is one of the `trusted_proxies`.
    pub fn is_trusted(&self, ip: IpAddr) -> bool {
        let ip = canonical_ip(ip);
        self.settings
            .trusted_proxies
            .iter()
            .any(|net| net.contains(&ip))
    }

    /// The caller's address (DESIGN §3): the peer, unless the peer is a
    /// trusted proxy; then the rightmost `X-Forwarded-For` hop that is not
    /// itself trusted.
    pub fn client_ip(&self, peer: IpAddr, peer_trusted: bool, headers: &http::HeaderMap) -> IpAddr {
        let mut candidate = canonical_ip(peer);
        if !peer_trusted {
            return candidate;
        }
        let hops = headers
            .get_all(X_FORWARDED_FOR)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .collect::<Vec<_>>();
        for hop in hops.iter().rev() {
            match parse_forwarded_ip(hop) {
                Some(ip) => {
                    candidate = ip;
                    if !self.is_trusted(ip) {
                        return ip;
                    }
                }
                // A hop we cannot read was written by someone we do not
                // trust: stop at the last address we could vouch for.
                None => return candidate,
            }
        }
        candidate
    }

    /// Answers one request that arrived from `peer`. Boxed at this concrete
    /// site so the future's `Send` bound is proven here, not inferred
    /// through hyper's generic connection types.
    pub fn handle(
        self: Arc<Self>,
        req: Request<Body>,
        conn: &Connection,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Response<Body>> + Send>> {
        let (peer, tls, peer_ip_header) = (conn.peer, conn.tls, conn.peer_ip_header.clone());
        Box::pin(async move { self.answer(req, peer, tls, peer_ip_header).await })
    }

    async fn answer(
        self: &Arc<Self>,
        mut req: Request<Body>,
        peer: SocketAddr,
        tls: bool,
        peer_ip_header: HeaderValue,
    ) -> Response<Body> {
        let started = Instant::now();
        let _in_flight = self.metrics.in_flight();
        let peer_trusted = self.is_trusted(peer.ip());
        let headers = req.headers_mut();
        let request_id = match headers.get(X_REQUEST_ID) {
            Some(id) if peer_trusted && is_acceptable_request_id(id) => id.clone(),
            _ => new_request_id(),
        };
        let client_ip = self.client_ip(peer.ip(), peer_trusted, headers);
        scrub_identity_headers(headers, peer_trusted);

        let mut cx = RequestContext::new(request_id, peer, client_ip);
        cx.peer_trusted = peer_trusted;
        cx.tls = tls;
        cx.peer_ip_header = Some(peer_ip_header);

        let method = req.method().clone();
        // Copied only when the access log will use it.
        let raw_path = tracing::enabled!(target: "tollgate::access", tracing::Level::INFO)
            .then(|| req.uri().path().to_string());
        // Usage is metered per governed call: an MCP request is not one
        // (each tool call it makes is, and is metered as its operation).
        let mut metered = true;
        let (service, op_metrics, refusal) = match self.route(&mut req, &mut cx) {
            Ok(Target::Operation(index)) => {
                let op = &self.operations[index];
                (op.service.clone(), &op.metrics, None)
            }
            Ok(Target::Agents(endpoint)) => {
                metered = false;
                cx.operation = Some(endpoint.info.clone());
                let envelope = crate::agents::mcp::Envelope::new(self.clone(), &req);
                req.extensions_mut().insert(envelope);
                (endpoint.service.clone(), &endpoint.metrics, None)
            }
            Err(reject) => (self.unrouted.clone(), &self.unrouted_metrics, Some(reject)),
        };
        if let Some(reject) = refusal {
            req.extensions_mut().insert(RouteMiss(reject));
        }
        let bytes_in = content_length(req.headers());
        req.extensions_mut().insert(cx);
        let response = match service.oneshot(req).await {
            Ok(response) => response,
            Err(never) => match never {},
        };
        let response = finish(
            response,
            &method,
            raw_path.as_deref().unwrap_or(""),
            started,
            bytes_in,
        );
        let (subject, mut counts) = self.meter(&response, op_metrics, started, bytes_in);
        let key_field = key_usage_field(&response);
        if let Some(field) = &key_field {
            counts.push((field, 1));
        }
        // Usage metering is the last step (DESIGN §1). The memory store
        // answers at once; a remote one may buffer.
        let subject = subject.as_deref().unwrap_or(ANONYMOUS);
        // A failure is counted by the store itself (tollgate_store_errors_total).
        if metered {
            if let Err(error) = self.store.usage_add(subject, &counts).await {
                tracing::debug!(%error, "usage not metered");
            }
        }
        response
    }

    /// Counts the answered request in the metrics; returns the client and
    /// the usage counters to add for it. (Synchronous: a response body is
    /// not `Sync`, so no reference to it may live across the store call.)
    fn meter<'o>(
        &self,
        response: &Response<Body>,
        op: &'o OperationMetrics,
        started: Instant,
        bytes_in: Option<u64>,
    ) -> (Option<Arc<str>>, Vec<(&'o str, u64)>) {
        let cx = response.extensions().get::<RequestContext>();
        let outcome = Outcome {
            client: cx.and_then(|c| c.client.as_ref()).map(|c| &c.id),
            status: response.status().as_u16(),
            duration: started.elapsed(),
            upstream: cx.and_then(|c| c.upstream_duration),
            rejected: response.extensions().get::<RejectedWith>(),
            would_reject: cx.map_or(&[], |c| &c.would_reject[..]),
            bytes_in: bytes_in.unwrap_or(0),
            bytes_out: http_body::Body::size_hint(response.body())
                .exact()
                .unwrap_or(0),
            cache_hit: response.extensions().get::<CacheHit>().is_some(),
        };
        self.metrics.observe(op, &outcome);
        let mut counts = Vec::with_capacity(8);
        op.usage_counts(&outcome, &mut counts);
        (outcome.client.cloned(), counts)
    }

    /// Checks limits, normalises the path and finds the operation (or the
    /// MCP endpoint); for an operation the context then knows it and the
    /// upstream URI.
    fn route(
        &self,
        req: &mut Request<Body>,
        cx: &mut RequestContext,
    ) -> Result<Target<'_>, Reject> {
        if header_bytes(req) > self.settings.max_header_bytes {
            // Closed after the answer: a caller sending heads this size is
            // not one to keep a connection open for.
            return Err(Reject::new(
                Code::HeadersTooLarge,
                "the request headers are larger than the gateway accepts",
            )
            .with_header(header::CONNECTION, HeaderValue::from_static("close")));
        }
        if !plain_transfer_encoding(req.headers()) {
            // hyper reads the last coding if it is `chunked` and leaves the
            // rest; the upstream gets a re-framed body and would never learn
            // of them. A proxy in front might also frame it differently.
            return Err(Reject::new(
                Code::InvalidRequestBody,
                "the only transfer coding accepted is a single `chunked`",
            )
            .with_header(header::CONNECTION, HeaderValue::from_static("close")));
        }
        if content_length(req.headers()).is_some_and(|len| len > self.settings.max_body) {
            return Err(Reject::new(
                Code::BodyTooLarge,
                "the request body is larger than the gateway accepts",
            ));
        }
        let path = normalize_path(req.uri().path()).map_err(|e| e.reject())?;
        if let Some(endpoint) = self.agents.serves(&path) {
            return Ok(Target::Agents(endpoint));
        }
        let found = self.routes.lookup(req.method(), &path)?;
        let operation = &self.operations[found.operation];
        let upstream = operation
            .target
            .uri_for(&path, req.uri().query(), &found.params)?;
        let index = found.operation;
        if let std::borrow::Cow::Owned(normal) = path {
            set_path(req, &normal)?;
        }
        req.extensions_mut().insert(UpstreamUri(upstream));
        cx.operation = Some(operation.info.clone());
        Ok(Target::Operation(index))
    }
}

/// Writes the access-log event and makes sure the response carries the
/// request id.
fn finish(
    mut response: Response<Body>,
    method: &Method,
    path: &str,
    started: Instant,
    bytes_in: Option<u64>,
) -> Response<Body> {
    let cx = response.extensions_mut().remove::<RequestContext>();
    let code = response
        .extensions()
        .get::<RejectedWith>()
        .map(|r| r.code.as_str());
    if let Some(cx) = &cx {
        if !response.headers().contains_key(X_REQUEST_ID) {
            response
                .headers_mut()
                .insert(X_REQUEST_ID, cx.request_id.clone());
        }
    }
    if tracing::enabled!(target: "tollgate::access", tracing::Level::INFO) {
        let (op, api) = cx
            .as_ref()
            .and_then(|c| c.operation.as_ref())
            .map(|o| (&*o.id, &*o.api))
            .unwrap_or(("", ""));
        let caller = cx.as_ref().and_then(|c| c.client.as_ref());
        let client = caller.map(|c| &*c.id).unwrap_or("");
        // The key's configured id, never the key: which of a client's keys
        // is in use shows whether a rotation is done.
        let key_id = caller.and_then(|c| c.key_id.as_deref());
        // What report-only policies would have refused, usually one.
        let shadow = cx.as_ref().map_or(&[][..], |c| &c.would_reject[..]);
        let would_reject =
            (!shadow.is_empty()).then(|| join(shadow.iter().map(|(_, c)| c.as_str())));
        let would_reject_policy =
            (!shadow.is_empty()).then(|| join(shadow.iter().map(|(p, _)| &**p)));
        tracing::info!(
            target: "tollgate::access",
            request_id = cx.as_ref().and_then(|c| c.request_id.to_str().ok()).unwrap_or(""),
            client_ip = %cx.as_ref().map(|c| c.client_ip).unwrap_or(IpAddr::from([0, 0, 0, 0])),
            client,
            key_id,
            api,
            operation = op,
            method = method.as_str(),
            path,
            status = response.status().as_u16(),
            duration_ms = started.elapsed().as_secs_f64() * 1000.0,
            upstream_ms = cx.as_ref().and_then(|c| c.upstream_duration).map(|d| d.as_secs_f64() * 1000.0),
            bytes_in,
            bytes_out = http_body::Body::size_hint(response.body()).exact(),
            code,
            would_reject,
            would_reject_policy,
        );
    }
    if let Some(cx) = cx {
        response.extensions_mut().insert(cx);
    }
    response
}

/// The usage field counting calls made with the key the caller used,
/// `key:{id}:calls`, when that key has an id: during a rotation it shows
/// which keys are still in use.
fn key_usage_field(response: &Response<Body>) -> Option<String> {
    let cx = response.extensions().get::<RequestContext>()?;
    let id = cx.client.as_ref()?.key_id.as_deref()?;
    Some(format!("key:{id}:calls"))
}

fn join<'a>(items: impl Iterator<Item = &'a str>) -> String {
    items.collect::<Vec<_>>().join(",")
}

/// The terminal service of the unrouted stack: answers with the route
/// refusal the entry found.
fn unrouted_terminal() -> OperationService {
    OperationService::new(tower::service_fn(|mut req: Request<Body>| async move {
        let reject = match req.extensions_mut().remove::<RouteMiss>() {
            Some(RouteMiss(reject)) => reject,
            None => Reject::new(
                Code::RouteNotFound,
                "no operation is published at this path",
            ),
        };
        let (parts, _) = req.into_parts();
        Ok(reject.respond(parts.extensions))
    }))
}

// === helpers ===

/// IPv4-mapped IPv6 addresses are IPv4 (so `::ffff:10.0.0.1` meets `10.0.0.0/8`).
pub fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

/// One `X-Forwarded-For` hop: an address, maybe bracketed or with a port.
fn parse_forwarded_ip(hop: &str) -> Option<IpAddr> {
    let hop = hop.trim();
    if let Ok(ip) = hop.parse::<IpAddr>() {
        return Some(canonical_ip(ip));
    }
    if let Ok(sock) = hop.parse::<SocketAddr>() {
        return Some(canonical_ip(sock.ip()));
    }
    hop.strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .and_then(|h| h.parse::<IpAddr>().ok())
        .map(canonical_ip)
}

/// A caller can never claim an identity: the gateway's own headers are
/// always removed, and forwarding headers unless a trusted proxy set them.
fn scrub_identity_headers(headers: &mut http::HeaderMap, peer_trusted: bool) {
    headers.remove(X_TOLLGATE_CLIENT);
    headers.remove(X_TOLLGATE_OPERATION);
    if !peer_trusted {
        headers.remove(X_FORWARDED_FOR);
        headers.remove(X_FORWARDED_PROTO);
        headers.remove(X_FORWARDED_HOST);
        headers.remove(header::FORWARDED);
        // nginx's convention for the client address, believed by many
        // upstreams: only a trusted proxy may say it.
        headers.remove(X_REAL_IP);
        headers.remove(X_REQUEST_ID);
    }
}

fn is_acceptable_request_id(id: &HeaderValue) -> bool {
    (1..=128).contains(&id.len())
        && id
            .as_bytes()
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

fn content_length(headers: &http::HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

/// No `Transfer-Encoding`, or exactly one `chunked`.
fn plain_transfer_encoding(headers: &http::HeaderMap) -> bool {
    let mut values = headers.get_all(header::TRANSFER_ENCODING).iter();
    match (values.next(), values.next()) {
        (None, _) => true,
        (Some(v), None) => v.as_bytes().trim_ascii().eq_ignore_ascii_case(b"chunked"),
        _ => false,
    }
}

/// The size of the request head as counted against `max_header_bytes`.
fn header_bytes(req: &Request<Body>) -> u64 {
    let line = req.uri().path_and_query().map_or(1, |pq| pq.as_str().len()) + 16;
    let fields: usize = req
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum();
    (line + fields) as u64
}

fn set_path(req: &mut Request<Body>, path: &str) -> Result<(), Reject> {
    let pq = match req.uri().query() {
        Some(q) => format!("{path}?{q}"),
        None => path.to_string(),
    };
    let mut parts = req.uri().clone().into_parts();
    parts.path_and_query = Some(
        pq.parse()
            .map_err(|_| Reject::new(Code::InvalidPath, "the path cannot be forwarded"))?,
    );
    *req.uri_mut() = http::Uri::from_parts(parts)
        .map_err(|_| Reject::new(Code::InvalidPath, "the path cannot be forwarded"))?;
    Ok(())
}

/// `{name}` and `{*name}` parameters of a path template.
fn template_params(template: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        let Some(close) = rest[open..].find('}') else {
            break;
        };
        out.push(rest[open + 1..open + close].trim_start_matches('*'));
        rest = &rest[open + close + 1..];
    }
    out
}

// === Compiler ===

/// Turns a loaded config into the parts of a `Gateway`, collecting errors.
struct Compiler<'a> {
    loaded: &'a LoadedConfig,
    deps: &'a Deps,
    errors: Vec<ConfigError>,
}

type Compiled = (
    Settings,
    Option<Arc<CertifiedKey>>,
    Vec<Operation>,
    RouteTable,
    OperationService,
    Agents,
);

impl<'a> Compiler<'a> {
    fn new(loaded: &'a LoadedConfig, deps: &'a Deps) -> Self {
        Compiler {
            loaded,
            deps,
            errors: Vec::new(),
        }
    }

    fn error(&mut self, path: &[&str], message: impl Into<String>) {
        self.errors.push(self.loaded.error_at(path, message));
    }

    fn run(mut self) -> Result<Compiled, Vec<ConfigError>> {
        let config = &self.loaded.config;
        let settings = self.settings();
        let tls_key = match &settings.tls {
            Some(files) => match crate::server::load_certified_key(files) {
                Ok(key) => Some(key),
                Err((field, message)) => {
                    self.error(&["tls", field], message);
                    None
                }
            },
            None => None,
        };
        let roles = RoleTable::new(config.roles.clone());
        let base_dir = self.loaded.base_dir.clone();
        // Keys and the JWT verifier are built once, before any policy, and
        // shared by every `auth` policy.
        let (credentials, credential_errors) =
            Credentials::build(config, &roles, &base_dir, &self.deps.jwks);
        for (path, message) in credential_errors {
            self.error(
                &path.iter().map(String::as_str).collect::<Vec<_>>(),
                message,
            );
        }
        let mut cx = CompileCx::new(config, &roles, &self.deps.clock, &base_dir)
            .with_credentials(Arc::new(credentials))
            .with_store(&self.deps.store)
            .with_caches(&self.deps.caches);

        // Named policies compile once; operations share them (and their counters).
        let mut named: std::collections::BTreeMap<&str, CompiledPolicy> = Default::default();
        for (name, def) in &config.policies {
            let compiled = policy::compile(def, name, &mut cx);
            for (path, message) in cx.take_errors() {
                self.errors
                    .push(self.loaded.policy_error(name, &path, message));
            }
            if let Some(compiled) = compiled {
                named.insert(name, compiled);
            }
        }

        let gateway_policies = self.resolve(&config.apply, &["apply"], "gateway", &named, &mut cx);
        let mut routes = RouteTable::new();
        let mut operations = Vec::new();
        // Where each compiled operation was written (API and operation index).
        let mut written_at: Vec<(usize, usize)> = Vec::new();
        // The probe of each operation that is an agent tool.
        let mut probes: Vec<(usize, OperationService)> = Vec::new();
        for (a, api) in config.apis.iter().enumerate() {
            let a_s = a.to_string();
            let api_policies = self.resolve(
                &api.apply,
                &["apis", &a_s, "apply"],
                &api.name,
                &named,
                &mut cx,
            );
            let api_target = api
                .upstream
                .as_deref()
                .map(|url| UpstreamTarget::base(url, &api.base_path));
            if let Some(Err(message)) = &api_target {
                self.error(&["apis", &a_s, "upstream"], message.clone());
            }
            for (o, op) in api.operations.iter().enumerate() {
                let o_s = o.to_string();
                let at =
                    |field: &'static str| ["apis", a_s.as_str(), "operations", o_s.as_str(), field];
                let method = match Method::from_bytes(op.method.to_ascii_uppercase().as_bytes()) {
                    Ok(m) => m,
                    Err(_) => {
                        self.error(
                            &at("method"),
                            format!("`{}` is not an HTTP method", op.method),
                        );
                        continue;
                    }
                };
                if !op.path.starts_with('/') {
                    self.error(&at("path"), "a path starts with `/`");
                    continue;
                }
                let template = format!("{}{}", api.base_path, op.path);
                let target = match (&op.upstream, &api_target) {
                    (Some(url), _) => UpstreamTarget::template(url, &template_params(&template)),
                    (None, Some(Ok(base))) => Ok(base.clone()),
                    (None, Some(Err(_))) => continue,
                    (None, None) => Err(format!(
                        "operation `{}` has no `upstream` and its API `{}` has none either",
                        op.id, api.name
                    )),
                };
                let target = match target {
                    Ok(t) => t,
                    Err(message) => {
                        let field = if op.upstream.is_some() {
                            "upstream"
                        } else {
                            "id"
                        };
                        self.error(&at(field), message);
                        continue;
                    }
                };
                let routed = match op.graphql {
                    Some(_) => routes.insert_graphql(method.clone(), &template, operations.len()),
                    None => routes.insert(method.clone(), &template, operations.len()),
                };
                if let Err(e) = routed {
                    let message = match e {
                        crate::routing::RouteError::Duplicate {
                            method,
                            template,
                            existing,
                        } => {
                            let other: &Operation = &operations[existing];
                            format!(
                                "{method} {template} is already operation `{}`",
                                other.info.id
                            )
                        }
                        crate::routing::RouteError::Conflict(m) => format!("`{template}`: {m}"),
                    };
                    self.error(&at("path"), message);
                    continue;
                }
                let op_policies = self.resolve(&op.apply, &at("apply"), &op.id, &named, &mut cx);
                // Effective policies: gateway, API, operation; minus skips.
                let effective: Vec<CompiledPolicy> = gateway_policies
                    .iter()
                    .filter(|p| !api.skip.iter().chain(&op.skip).any(|s| **s == *p.meta.name))
                    .chain(
                        api_policies
                            .iter()
                            .filter(|p| !op.skip.iter().any(|s| **s == *p.meta.name)),
                    )
                    .chain(op_policies.iter())
                    .cloned()
                    .collect();
                let timeout = op
                    .upstream_timeout
                    .or(api.upstream_timeout)
                    .map(|d| d.0)
                    .unwrap_or(settings.upstream_timeout);
                let mut terminal =
                    OperationService::new(Proxy::new(self.deps.client.clone(), timeout));
                if op.graphql.is_some() {
                    // Passes the call on to the next matched GraphQL operation.
                    terminal = crate::graphql::continue_to(terminal);
                }
                // Body schemas compile once, here, and run in phase Validate.
                let mut stack_policies = effective.clone();
                match policy::schema::compile_for(op, settings.max_body) {
                    Ok(schema) => stack_policies.extend(schema),
                    Err(errors) => {
                        for (field, message) in errors {
                            self.error(&at(field), message);
                        }
                    }
                }
                let info = Arc::new(OperationInfo {
                    api: api.name.as_str().into(),
                    id: op.id.as_str().into(),
                    header_value: HeaderValue::from_str(&op.id)
                        .unwrap_or(HeaderValue::from_static("invalid")),
                });
                let metrics = self.deps.metrics.operation(&info.api, &info.id);
                if crate::agents::is_tool(api, op) {
                    let probe =
                        stack::build_probe(&effective, crate::agents::mcp::probe_terminal());
                    probes.push((operations.len(), probe));
                }
                operations.push(Operation {
                    metrics,
                    info,
                    method,
                    template,
                    target,
                    policies: effective.iter().map(|p| p.meta.clone()).collect(),
                    graphql: op.graphql.clone(),
                    service: stack::build(&stack_policies, terminal),
                });
                written_at.push((a, o));
            }
        }
        self.link_graphql(&mut operations, &written_at);
        let unrouted = stack::build_unrouted(&gateway_policies, unrouted_terminal());
        let agents = Agents::compile(AgentsSource {
            config,
            operations: &operations,
            written_at: &written_at,
            probes,
            routes: &routes,
            gateway_policies: &gateway_policies,
            deps: self.deps,
        });
        let agents = match agents {
            Ok(agents) => agents,
            Err(errors) => {
                for (path, message) in errors {
                    self.error(
                        &path.iter().map(String::as_str).collect::<Vec<_>>(),
                        message,
                    );
                }
                Agents::default()
            }
        };
        if self.errors.is_empty() {
            Ok((settings, tls_key, operations, routes, unrouted, agents))
        } else {
            self.errors
                .sort_by(|a, b| (&a.file, a.line, a.column).cmp(&(&b.file, b.line, b.column)));
            self.errors.dedup();
            Err(self.errors)
        }
    }

    /// Joins GraphQL operations that share a method and path into one
    /// endpoint: each of their routes answers through it.
    fn link_graphql(&mut self, operations: &mut [Operation], written_at: &[(usize, usize)]) {
        let mut groups: std::collections::BTreeMap<(String, &str), Vec<usize>> = Default::default();
        for (i, op) in operations.iter().enumerate() {
            if op.graphql.is_some() {
                groups
                    .entry((op.method.to_string(), op.template.as_str()))
                    .or_default()
                    .push(i);
            }
        }
        let groups: Vec<Vec<usize>> = groups.into_values().collect();
        for group in groups {
            let members = group
                .iter()
                .filter_map(|&i| {
                    let op = &operations[i];
                    op.graphql.clone().map(|selector| crate::graphql::Member {
                        selector,
                        info: op.info.clone(),
                        service: op.service.clone(),
                    })
                })
                .collect();
            match crate::graphql::Endpoint::new(members, self.loaded.config.graphql_unmatched) {
                Ok(endpoint) => {
                    for &i in &group {
                        operations[i].service = endpoint.service();
                    }
                }
                Err((member, message)) => {
                    let (a, o) = written_at[group[member]];
                    let (a, o) = (a.to_string(), o.to_string());
                    self.error(&["apis", &a, "operations", &o, "graphql", "field"], message);
                }
            }
        }
    }

    /// Compiles an `apply` list: names resolve to the shared compiled
    /// policy, inline definitions compile here under a generated name.
    fn resolve(
        &mut self,
        refs: &[PolicyRef],
        at: &[&str],
        scope: &str,
        named: &std::collections::BTreeMap<&str, CompiledPolicy>,
        cx: &mut CompileCx<'_>,
    ) -> Vec<CompiledPolicy> {
        let mut out = Vec::new();
        for (i, r) in refs.iter().enumerate() {
            let i_s = i.to_string();
            let mut path: Vec<&str> = at.to_vec();
            path.push(&i_s);
            match r {
                // Unknown names never get here (the loader refuses them); a
                // named policy missing from `named` failed to compile and was
                // reported already.
                PolicyRef::Name(name) => out.extend(named.get(name.as_str()).cloned()),
                PolicyRef::Inline(def) => {
                    let name = inline_name(scope, def, i);
                    let compiled = policy::compile(def, &name, cx);
                    for (sub, message) in cx.take_errors() {
                        let mut full: Vec<&str> = path.clone();
                        full.extend(sub.iter().map(String::as_str));
                        self.error(&full, message);
                    }
                    out.extend(compiled);
                }
            }
        }
        out
    }

    fn settings(&mut self) -> Settings {
        let config = &self.loaded.config;
        let listen = match config.listen.parse::<SocketAddr>() {
            Ok(a) => a,
            Err(_) => {
                self.error(
                    &["listen"],
                    format!("`{}` is not an address like 127.0.0.1:8080", config.listen),
                );
                SocketAddr::from(([127, 0, 0, 1], 0))
            }
        };
        let admin_listen = config
            .admin
            .as_ref()
            .and_then(|admin| match admin.listen.parse() {
                Ok(a) => Some(a),
                Err(_) => {
                    self.error(
                        &["admin", "listen"],
                        format!("`{}` is not an address like 127.0.0.1:9901", admin.listen),
                    );
                    None
                }
            });
        let mut trusted_proxies = Vec::new();
        for (i, entry) in config.trusted_proxies.iter().enumerate() {
            match parse_cidr(entry) {
                Ok(net) => trusted_proxies.push(net),
                Err(message) => self.error(&["trusted_proxies", &i.to_string()], message),
            }
        }
        let resolve = |f: &str| {
            let p = PathBuf::from(f);
            if p.is_absolute() {
                p
            } else {
                self.loaded.base_dir.join(p)
            }
        };
        let limits = &config.limits;
        Settings {
            listen,
            tls: config.tls.as_ref().map(|t| TlsFiles {
                cert_file: resolve(&t.cert_file),
                key_file: resolve(&t.key_file),
            }),
            admin_listen,
            admin_token_env: config.admin.as_ref().and_then(|a| a.token_env.clone()),
            trusted_proxies,
            max_body: limits.max_body.0,
            max_header_bytes: limits.max_header_bytes.0,
            header_read_timeout: limits.header_read_timeout.0,
            body_read_timeout: limits.body_read_timeout.0,
            upstream_timeout: limits.upstream_timeout.0,
            max_connections: limits.max_connections.max(1),
            drain_timeout: limits.drain_timeout.0,
            workers: config
                .workers
                .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())),
        }
    }
}

/// A CIDR (`10.0.0.0/8`, `2001:db8::/32`) or a single address. An
/// IPv4-mapped IPv6 network (`::ffff:10.0.0.0/104`) becomes the IPv4 one:
/// client addresses are compared in that form (see [`canonical_ip`]), so
/// as written it would never match anyone.
pub fn parse_cidr(s: &str) -> Result<IpNet, String> {
    let net = match s.parse::<IpNet>() {
        Ok(net) => net.trunc(),
        Err(_) => s
            .parse::<IpAddr>()
            .map(IpNet::from)
            .map_err(|_| format!("`{s}` is not a CIDR (like 10.0.0.0/8) or an IP address"))?,
    };
    Ok(match net {
        IpNet::V6(v6) if v6.prefix_len() >= 96 => match v6.addr().to_ipv4_mapped() {
            Some(v4) => ipnet::Ipv4Net::new(v4, v6.prefix_len() - 96)
                .map(IpNet::V4)
                .unwrap_or(net),
            None => net,
        },
        other => other,
    })
}

/// A stable name for an inline definition, so its counters survive a
/// reload as long as the config keeps it in the same place.
pub(crate) fn inline_name(scope: &str, def: &PolicyDef, index: usize) -> String {
    format!("{scope}/{}#{index}", def.type_name())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn template_params_include_catch_alls() {
        assert_eq!(template_params("/a/{id}/b/{*rest}"), ["id", "rest"]);
        assert!(template_params("/plain").is_empty());
    }

    #[test]
    fn forwarded_hops_parse_with_brackets_and_ports() {
        assert_eq!(
            parse_forwarded_ip(" 10.0.0.1 "),
            Some("10.0.0.1".parse().expect("ip"))
        );
        assert_eq!(
            parse_forwarded_ip("[2001:db8::1]"),
            Some("2001:db8::1".parse().expect("ip"))
        );
        assert_eq!(
            parse_forwarded_ip("10.0.0.1:443"),
            Some("10.0.0.1".parse().expect("ip"))
        );
        assert_eq!(
            parse_forwarded_ip("::ffff:10.0.0.1"),
            Some("10.0.0.1".parse().expect("ip"))
        );
        assert_eq!(parse_forwarded_ip("unknown"), None);
    }

    #[test]
    fn cidrs_and_single_addresses_are_accepted() {
        assert_eq!(
            parse_cidr("10.1.2.3/8").map(|n| n.to_string()),
            Ok("10.0.0.0/8".into())
        );
        assert_eq!(
            parse_cidr("::1").map(|n| n.to_string()),
            Ok("::1/128".into())
        );
        assert_eq!(
            parse_cidr("::ffff:10.1.0.0/104").map(|n| n.to_string()),
            Ok("10.0.0.0/8".into())
        );
        assert_eq!(
            parse_cidr("::ffff:10.1.2.3").map(|n| n.to_string()),
            Ok("10.1.2.3/32".into())
        );
        assert!(parse_cidr("10.0.0.0/33").is_err());
        assert!(parse_cidr("nope").is_err());
    }

    #[test]
    fn only_well_formed_request_ids_are_kept() {
        assert!(is_acceptable_request_id(&HeaderValue::from_static(
            "abc-123_x.y:z"
        )));
        assert!(!is_acceptable_request_id(&HeaderValue::from_static(
            "has space"
        )));
        assert!(!is_acceptable_request_id(&HeaderValue::from_static("")));
    }
}
