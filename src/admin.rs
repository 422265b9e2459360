//! The admin listener (`admin.listen`, DESIGN §6): health and readiness,
//! Prometheus metrics, the loaded APIs, usage, bans, reload, the OpenAPI
//! export and a read-only HTML status page. It owns the admin token check
//! and the rendering of every admin answer; the data comes from the
//! serving `Gateway`, the `Deps` store and metrics, and reloads go through
//! [`Reloader`](crate::reload::Reloader).
//!
//! ```yaml
//! admin: { listen: 127.0.0.1:9901, token_env: TOLLGATE_ADMIN_TOKEN }
//! ```
//!
//! Every path but `/healthz` and `/readyz` needs the token, as
//! `Authorization: Bearer <token>` (or HTTP Basic with the token as the
//! password, so a browser can open the status page). Without `token_env`
//! the listener binds only a loopback address.
//!
//! A web page the operator happens to open must not drive the admin API:
//! a request with an `Origin` other than the admin listener's own, or that
//! a browser marks `Sec-Fetch-Site: cross-site`/`same-site`, is refused
//! (400 `header_invalid`), whatever its method or `Content-Type`. Without
//! a token the `Host` must also be a loopback name or address (`localhost`,
//! `127.0.0.1`, `[::1]`...), so a DNS-rebound name cannot reach it. Every
//! answer carries `X-Content-Type-Options: nosniff` and `X-Frame-Options:
//! DENY`; a connection that sends no request head within
//! `limits.header_read_timeout` is closed, as on the public listener.

use bytes::Bytes;
use http::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, WWW_AUTHENTICATE};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::fmt::Write as _;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use subtle::ConstantTimeEq;
use tokio::net::TcpListener;

use crate::body::{self, Body};
use crate::calendar::format_rfc3339;
use crate::clock::Nanos;
use crate::config::schema::{PolicyDef, PolicyKind, PolicyRef};
use crate::config::ConfigError;
use crate::context::new_request_id;
use crate::gateway::Gateway;
use crate::metrics;
use crate::policy::quota::{self, QuotaConfig, QuotaPeriod};
use crate::policy::LimitKey;
use crate::problem::{Code, Reject};
use crate::reload::Reloader;
use crate::state::{self, Store, UsageEntry};

/// How long a shutdown waits for admin requests in flight.
const DRAIN: Duration = Duration::from_secs(5);

/// A bound, not yet running, admin listener.
pub struct AdminServer {
    listener: TcpListener,
    admin: Arc<Admin>,
}

/// What every admin request reads.
struct Admin {
    reloader: Arc<Reloader>,
    /// SHA-256 of the token: comparing digests takes the same time
    /// whatever the length of what was sent.
    token: Option<[u8; 32]>,
    /// The configured address: its IP is an accepted `Host` too.
    listen: SocketAddr,
}

impl AdminServer {
    /// Binds `listen`, reading the token from the variable `admin.token_env`
    /// names. Without a token only a loopback address is accepted.
    pub async fn bind(listen: SocketAddr, reloader: Arc<Reloader>) -> Result<AdminServer, String> {
        let token_env = reloader.shared().load().settings.admin_token_env.clone();
        let token = match token_env {
            Some(name) => match std::env::var(&name) {
                Ok(token) if !token.is_empty() => Some(Sha256::digest(token.as_bytes()).into()),
                _ => {
                    return Err(format!(
                        "admin.token_env names `{name}`, but that variable is not set"
                    ))
                }
            },
            None => None,
        };
        if token.is_none() {
            if !listen.ip().is_loopback() {
                return Err(format!(
                    "the admin listener has no token (admin.token_env), so it binds only \
                     a loopback address, not {listen}"
                ));
            }
            tracing::warn!(
                %listen,
                "admin listener has no token: open to anyone on this host (loopback only)"
            );
        }
        let listener = TcpListener::bind(listen)
            .await
            .map_err(|e| format!("cannot listen on {listen} (admin): {e}"))?;
        Ok(AdminServer {
            listener,
            admin: Arc::new(Admin {
                reloader,
                token,
                listen,
            }),
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` resolves, then drains briefly.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let graceful = GracefulShutdown::new();
        let head_timeout = self
            .admin
            .reloader
            .shared()
            .load()
            .settings
            .header_read_timeout;
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(head_timeout);
        tokio::pin!(shutdown);
        loop {
            let (stream, peer) = tokio::select! {
                _ = &mut shutdown => break,
                accepted = self.listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!(error = %e, "admin accept failed");
                        continue;
                    }
                },
            };
            let admin = self.admin.clone();
            let first_request = Arc::new(AtomicBool::new(false));
            let seen = first_request.clone();
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                seen.store(true, Ordering::Release);
                let admin = admin.clone();
                async move { Ok::<_, Infallible>(admin.answer(req).await) }
            });
            let connection = builder
                .serve_connection(TokioIo::new(stream), service)
                .into_owned();
            let watched = Box::pin(graceful.watch(connection));
            tokio::spawn(async move {
                match crate::server::first_head_within(watched, &first_request, head_timeout).await
                {
                    Some(Err(e)) => {
                        tracing::debug!(%peer, error = %e, "admin connection ended with an error")
                    }
                    Some(Ok(())) => {}
                    None => tracing::debug!(%peer, "no admin request head in time: closed"),
                }
            });
        }
        drop(self.listener);
        let _ = tokio::time::timeout(DRAIN, graceful.shutdown()).await;
    }
}

// === impl Admin ===

impl Admin {
    async fn answer(&self, req: Request<Incoming>) -> Response<Body> {
        let method = req.method().clone();
        let path = req.uri().path().to_string();
        match (&method, path.as_str()) {
            (&Method::GET, "/healthz") => return text(StatusCode::OK, "text/plain", "ok\n"),
            (&Method::GET, "/readyz") => return self.readyz().await,
            _ => {}
        }
        if let Some(refusal) = self.cross_site_refusal(&req) {
            return problem(Code::HeaderInvalid, refusal);
        }
        if !self.authorized(&req) {
            let mut response = problem(
                Code::AdminUnauthorized,
                "send the admin token as `Authorization: Bearer <token>`",
            );
            response.headers_mut().insert(
                WWW_AUTHENTICATE,
                HeaderValue::from_static(
                    "Bearer realm=\"tollgate admin\", Basic realm=\"tollgate admin\"",
                ),
            );
            return response;
        }
        if let Some(key) = path.strip_prefix("/admin/bans/") {
            return match method {
                Method::DELETE => self.lift_ban(key).await,
                _ => method_not_allowed("DELETE"),
            };
        }
        let allowed = match path.as_str() {
            "/" | "/metrics" | "/admin/apis" | "/admin/usage" | "/admin/bans" | "/openapi.json"
            | "/openapi.yaml" => "GET",
            "/admin/reload" => "POST",
            _ => {
                return problem(
                    Code::RouteNotFound,
                    "the admin API has no such path; see DESIGN §6",
                )
            }
        };
        if method.as_str() != allowed {
            return method_not_allowed(allowed);
        }
        let gateway = self.reloader.shared().load_full();
        match path.as_str() {
            "/" => self.status_page(&gateway).await,
            "/metrics" => {
                let accept = req
                    .headers()
                    .get(http::header::ACCEPT)
                    .and_then(|v| v.to_str().ok());
                self.metrics(metrics::wants_prometheus_text(accept)).await
            }
            "/admin/apis" => json_response(StatusCode::OK, &apis(&gateway)),
            "/admin/usage" => match self.usage(&gateway).await {
                Ok(usage) => json_response(StatusCode::OK, &usage),
                Err(response) => response,
            },
            "/admin/bans" => match self.bans().await {
                Ok(bans) => json_response(StatusCode::OK, &json!({ "bans": bans })),
                Err(response) => response,
            },
            "/admin/reload" => self.reload().await,
            "/openapi.json" => text(
                StatusCode::OK,
                "application/json",
                crate::openapi::to_json(&gateway.loaded.config),
            ),
            _ => text(
                StatusCode::OK,
                "application/yaml",
                crate::openapi::to_yaml(&gateway.loaded.config),
            ),
        }
    }

    /// Why a request may come from a web page rather than the operator:
    /// another `Origin`, a browser's cross-site mark, or (without a token) a
    /// `Host` that is not a loopback name, as after DNS rebinding.
    fn cross_site_refusal<B>(&self, req: &Request<B>) -> Option<&'static str> {
        let headers = req.headers();
        let host = headers
            .get(http::header::HOST)
            .and_then(|v| v.to_str().ok())
            .or_else(|| req.uri().authority().map(|a| a.as_str()));
        if self.token.is_none() {
            match host {
                Some(host) if self.is_own_host(host) => {}
                Some(_) => {
                    return Some(
                        "the admin listener has no token, so it answers only requests \
                         addressed to a loopback name or address",
                    )
                }
                None => {}
            }
        }
        if let Some(origin) = headers.get(http::header::ORIGIN) {
            let own = host.is_some_and(|host| {
                origin
                    .to_str()
                    .ok()
                    .and_then(|o| o.strip_prefix("http://"))
                    .is_some_and(|o| o.eq_ignore_ascii_case(host))
            });
            if !own {
                return Some("cross-site requests to the admin API are refused");
            }
        }
        let fetch_site = headers
            .get("sec-fetch-site")
            .map(|v| v.as_bytes().to_ascii_lowercase());
        if matches!(fetch_site.as_deref(), Some(b"cross-site" | b"same-site")) {
            return Some("cross-site requests to the admin API are refused");
        }
        None
    }

    /// `localhost` (or a name under it), a loopback address, or the
    /// configured listen address, with any port.
    fn is_own_host(&self, host: &str) -> bool {
        let Ok(authority) = host.parse::<http::uri::Authority>() else {
            return false;
        };
        let name = authority.host();
        let name = name
            .strip_prefix('[')
            .and_then(|n| n.strip_suffix(']'))
            .unwrap_or(name);
        if name.eq_ignore_ascii_case("localhost")
            || name.to_ascii_lowercase().ends_with(".localhost")
        {
            return true;
        }
        match name.parse::<IpAddr>() {
            Ok(ip) => crate::gateway::canonical_ip(ip).is_loopback() || ip == self.listen.ip(),
            Err(_) => false,
        }
    }

    fn authorized<B>(&self, req: &Request<B>) -> bool {
        let Some(expected) = &self.token else {
            return true;
        };
        let Some(presented) = req
            .headers()
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(presented_token)
        else {
            return false;
        };
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        digest.ct_eq(expected).into()
    }

    fn now(&self) -> Nanos {
        self.reloader.deps().clock.now()
    }

    fn store(&self) -> &crate::state::AnyStore {
        &self.reloader.deps().store
    }

    async fn readyz(&self) -> Response<Body> {
        let store = self.store();
        match store.ping().await {
            Ok(()) => json_response(
                StatusCode::OK,
                &json!({ "status": "ready", "store": store.kind() }),
            ),
            Err(error) => json_response(
                StatusCode::SERVICE_UNAVAILABLE,
                &json!({ "status": "degraded", "store": store.kind(), "reason": error.to_string() }),
            ),
        }
    }

    /// OpenMetrics, or the classic Prometheus text when `classic`.
    async fn metrics(&self, classic: bool) -> Response<Body> {
        let metrics = &self.reloader.deps().metrics;
        let bans = match self.store().ban_list(self.now()).await {
            Ok(bans) => Some(bans.len() as i64),
            Err(error) => {
                tracing::warn!(%error, "cannot count bans for /metrics");
                None
            }
        };
        metrics.sync_store_errors(self.store().errors_total());
        let open = metrics.render(bans);
        if classic {
            let classic = metrics::to_prometheus_text(&open);
            text(StatusCode::OK, metrics::PROMETHEUS_CONTENT_TYPE, classic)
        } else {
            text(StatusCode::OK, metrics::CONTENT_TYPE, open)
        }
    }

    async fn bans(&self) -> Result<Vec<Value>, Response<Body>> {
        let bans = self
            .store()
            .ban_list(self.now())
            .await
            .map_err(|e| self.store_failed(e))?;
        Ok(bans
            .into_iter()
            .map(|(key, ban)| json!({ "key": key, "reason": ban.reason, "until": format_rfc3339(ban.until) }))
            .collect())
    }

    async fn lift_ban(&self, encoded: &str) -> Response<Body> {
        // Keys hold `:` and `/` (`abuse:2001:db8::/64`): the caller sends
        // them percent-encoded, as one path segment.
        let key = match percent_encoding::percent_decode_str(encoded).decode_utf8() {
            Ok(key) => key.into_owned(),
            Err(_) => return problem(Code::InvalidPath, "the ban key is not UTF-8"),
        };
        match self.store().ban_remove(&key, self.now()).await {
            Ok(true) => {
                tracing::info!(key, "ban lifted through the admin API");
                json_response(StatusCode::OK, &json!({ "lifted": key }))
            }
            Ok(false) => problem(Code::BanNotFound, format!("no active ban on `{key}`")),
            Err(error) => self.store_failed(error),
        }
    }

    async fn reload(&self) -> Response<Body> {
        match self.reloader.reload().await {
            Ok(done) => json_response(
                StatusCode::OK,
                &json!({
                    "status": "reloaded",
                    "summary": done.summary,
                    "restart_needed": done.restart_needed,
                    "message": done.message(),
                }),
            ),
            Err(errors) => config_errors(&errors),
        }
    }

    fn store_failed(&self, error: state::StoreError) -> Response<Body> {
        problem(Code::StateStoreUnavailable, error.to_string())
    }

    /// Per client: calls, bytes, refusals by code, each operation's share,
    /// and what is used and left of every quota counted per client.
    async fn usage(&self, gateway: &Gateway) -> Result<Value, Response<Body>> {
        let entries = self
            .store()
            .usage_list()
            .await
            .map_err(|e| self.store_failed(e))?;
        let mut clients: BTreeMap<String, ClientUsage> = BTreeMap::new();
        for client in &gateway.loaded.config.clients {
            clients.entry(client.id.clone()).or_default();
        }
        for entry in entries {
            let UsageEntry { subject, counts } = entry;
            clients.entry(subject).or_default().add(counts);
        }
        let now = self.now();
        let quotas = quota_policies(gateway);
        let mut global = Vec::new();
        for q in &quotas {
            match q.config.key {
                LimitKey::Global => {
                    let key = state::key(&q.name, format_args!("global"));
                    global.push(self.quota_state(q, &key, now).await?);
                }
                LimitKey::Client => {}
                LimitKey::Ip | LimitKey::Header(_) => global.push(json!({
                    "policy": q.name,
                    "key": if q.config.key == LimitKey::Ip { "ip".to_string() } else { "header".to_string() },
                    "limit": q.config.limit,
                    "period": period_name(q.config.period),
                    "note": "counted per address or header value; not listed",
                })),
            }
        }
        let mut out = Vec::new();
        for (client, usage) in clients {
            let mut client_quotas = Vec::new();
            if client != metrics::ANONYMOUS {
                for q in quotas.iter().filter(|q| q.config.key == LimitKey::Client) {
                    let key = state::key(&q.name, format_args!("client:{client}"));
                    client_quotas.push(self.quota_state(q, &key, now).await?);
                }
            }
            out.push(json!({
                "client": client,
                "calls": usage.calls,
                "bytes_in": usage.bytes_in,
                "bytes_out": usage.bytes_out,
                "cache_hits": usage.cache_hits,
                "rejections": usage.rejections,
                "keys": usage.keys,
                "operations": usage.operations.iter().map(|(op, u)| (op.clone(), json!({
                    "calls": u.calls,
                    "bytes_in": u.bytes_in,
                    "bytes_out": u.bytes_out,
                    "cache_hits": u.cache_hits,
                    "rejections": u.rejections,
                }))).collect::<serde_json::Map<_, _>>(),
                "quotas": client_quotas,
            }));
        }
        Ok(json!({ "clients": out, "quotas": global }))
    }

    async fn quota_state(
        &self,
        q: &QuotaPolicy,
        key: &str,
        now: Nanos,
    ) -> Result<Value, Response<Body>> {
        let end = quota::period_end(q.config.period, now);
        let used = self
            .store()
            .quota_peek(key, end, now)
            .await
            .map_err(|e| self.store_failed(e))?;
        Ok(json!({
            "policy": q.name,
            "period": period_name(q.config.period),
            "limit": q.config.limit,
            "used": used,
            "remaining": q.config.limit.saturating_sub(used),
            "resets_at": format_rfc3339(end),
        }))
    }

    async fn status_page(&self, gateway: &Gateway) -> Response<Body> {
        let usage = self.usage(gateway).await.ok();
        let bans = self.bans().await.ok();
        let html = status_html(gateway, usage.as_ref(), bans.as_deref());
        let mut response = text(StatusCode::OK, "text/html; charset=utf-8", html);
        // Read-only and self-contained: nothing to load, and never framed
        // (no clickjacking of the admin API through it).
        response.headers_mut().insert(
            http::header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(
                "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'",
            ),
        );
        response
    }
}

/// The token of `Bearer <token>`, or the password of `Basic <user:token>`.
fn presented_token(header: &str) -> Option<String> {
    use base64::Engine as _;
    let (scheme, value) = header.trim().split_once(' ')?;
    if scheme.eq_ignore_ascii_case("bearer") {
        return Some(value.trim().to_string());
    }
    if scheme.eq_ignore_ascii_case("basic") {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(value.trim())
            .ok()?;
        let decoded = String::from_utf8(decoded).ok()?;
        return decoded
            .split_once(':')
            .map(|(_, password)| password.to_string());
    }
    None
}

// === usage ===

/// A client's usage, parsed back from the store's fields (written by
/// `OperationMetrics::usage_counts`).
#[derive(Default)]
struct ClientUsage {
    calls: u64,
    bytes_in: u64,
    bytes_out: u64,
    /// Calls a `cache` policy answered (counted in `calls` too).
    cache_hits: u64,
    rejections: BTreeMap<String, u64>,
    operations: BTreeMap<String, OperationUsage>,
    /// Calls per key id (keys configured with an `id`): shows which of a
    /// client's keys is still in use during a rotation.
    keys: BTreeMap<String, u64>,
}

#[derive(Default)]
struct OperationUsage {
    calls: u64,
    bytes_in: u64,
    bytes_out: u64,
    cache_hits: u64,
    rejections: BTreeMap<String, u64>,
}

impl ClientUsage {
    fn add(&mut self, counts: Vec<(String, u64)>) {
        for (field, n) in counts {
            if let Some(rest) = field.strip_prefix("op:") {
                if let Some((op, code)) = rest.rsplit_once(":rejected:") {
                    let op = self.operations.entry(op.to_string()).or_default();
                    *op.rejections.entry(code.to_string()).or_default() += n;
                } else if let Some((op, what)) = rest.rsplit_once(':') {
                    let op = self.operations.entry(op.to_string()).or_default();
                    match what {
                        "calls" => op.calls += n,
                        "bytes_in" => op.bytes_in += n,
                        "bytes_out" => op.bytes_out += n,
                        "cache_hits" => op.cache_hits += n,
                        _ => {}
                    }
                }
            } else if let Some(code) = field.strip_prefix("rejected:") {
                *self.rejections.entry(code.to_string()).or_default() += n;
            } else if let Some(id) = field
                .strip_prefix("key:")
                .and_then(|rest| rest.strip_suffix(":calls"))
            {
                *self.keys.entry(id.to_string()).or_default() += n;
            } else {
                match field.as_str() {
                    "calls" => self.calls += n,
                    "bytes_in" => self.bytes_in += n,
                    "bytes_out" => self.bytes_out += n,
                    "cache_hits" => self.cache_hits += n,
                    _ => {}
                }
            }
        }
    }
}

/// A `quota` policy of the config, by the name its counters are kept under.
struct QuotaPolicy {
    name: String,
    config: QuotaConfig,
}

/// Every quota policy: named ones, then inline ones in `apply` lists (named
/// as the compiler names them, so their counters are found).
fn quota_policies(gateway: &Gateway) -> Vec<QuotaPolicy> {
    let config = &gateway.loaded.config;
    let mut out = Vec::new();
    let mut push = |name: String, def: &PolicyDef| {
        if let PolicyKind::Quota(q) = &def.kind {
            out.push(QuotaPolicy {
                name,
                config: q.clone(),
            });
        }
    };
    for (name, def) in &config.policies {
        push(name.clone(), def);
    }
    let mut inline = |scope: &str, refs: &[PolicyRef]| {
        for (i, r) in refs.iter().enumerate() {
            if let PolicyRef::Inline(def) = r {
                push(crate::gateway::inline_name(scope, def, i), def);
            }
        }
    };
    inline("gateway", &config.apply);
    for api in &config.apis {
        inline(&api.name, &api.apply);
        for op in &api.operations {
            inline(&op.id, &op.apply);
        }
    }
    out
}

fn period_name(period: QuotaPeriod) -> &'static str {
    match period {
        QuotaPeriod::Hour => "hour",
        QuotaPeriod::Day => "day",
        QuotaPeriod::Month => "month",
    }
}

// === apis ===

/// The loaded APIs and their operations with effective policies.
fn apis(gateway: &Gateway) -> Value {
    let apis: Vec<Value> = gateway
        .loaded
        .config
        .apis
        .iter()
        .map(|api| {
            let operations: Vec<Value> = gateway
                .operations
                .iter()
                .filter(|op| *op.info.api == *api.name)
                .map(|op| {
                    json!({
                        "id": &*op.info.id,
                        "method": op.method.as_str(),
                        "path": op.template,
                        "graphql_field": op.graphql.as_ref().map(|g| g.field.clone()),
                        "policies": op.policies.iter().map(|p| json!({
                            "name": &*p.name,
                            "type": p.type_name,
                            "report_only": p.report_only,
                        })).collect::<Vec<_>>(),
                    })
                })
                .collect();
            json!({
                "name": api.name,
                "title": api.title,
                "version": api.version,
                "base_path": api.base_path,
                "operations": operations,
            })
        })
        .collect();
    json!({ "apis": apis, "summary": gateway.summary() })
}

// === status page ===

/// The status page: plain server-rendered HTML, inline style, no scripts.
fn status_html(gateway: &Gateway, usage: Option<&Value>, bans: Option<&[Value]>) -> String {
    let mut h = String::with_capacity(8192);
    h.push_str(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>Tollgate status</title><style>\
         body{font:14px/1.4 system-ui,sans-serif;margin:2em;color:#222}\
         h1{font-size:1.6em}h2{font-size:1.2em;margin-top:1.6em}\
         table{border-collapse:collapse;margin:.5em 0}\
         th,td{border:1px solid #ccc;padding:.3em .7em;text-align:left}\
         th{background:#f0f0f0}code{font-size:.95em}.muted{color:#777}\
         .policy{display:inline-block;background:#eef;border-radius:3px;padding:0 .4em;margin:1px}\
         .report{background:#ffe9c4}\
         </style></head><body><h1>Tollgate</h1>",
    );
    let _ = write!(
        h,
        "<p class=\"muted\">{} &middot; config <code>{}</code></p>",
        esc(&gateway.summary()),
        esc(&gateway.loaded.file.display().to_string())
    );

    h.push_str("<h2>APIs and operations</h2><table><tr><th>API</th><th>Operation</th><th>Method</th><th>Path</th><th>Policies</th></tr>");
    for op in &gateway.operations {
        let _ = write!(
            h,
            "<tr><td>{}</td><td><code>{}</code></td><td>{}</td><td><code>{}</code></td><td>",
            esc(&op.info.api),
            esc(&op.info.id),
            esc(op.method.as_str()),
            esc(&op.template)
        );
        for p in &op.policies {
            let _ = write!(
                h,
                "<span class=\"policy{}\" title=\"{}\">{}</span> ",
                if p.report_only { " report" } else { "" },
                esc(p.type_name),
                esc(&p.name)
            );
        }
        h.push_str("</td></tr>");
    }
    h.push_str("</table>");

    h.push_str("<h2>Top clients by calls</h2>");
    let mut clients: Vec<&Value> = usage
        .and_then(|u| u["clients"].as_array())
        .map(|c| {
            c.iter()
                .filter(|c| c["calls"].as_u64().unwrap_or(0) > 0)
                .collect()
        })
        .unwrap_or_default();
    clients.sort_by_key(|c| std::cmp::Reverse(c["calls"].as_u64().unwrap_or(0)));
    if clients.is_empty() {
        h.push_str("<p class=\"muted\">No calls yet.</p>");
    } else {
        h.push_str("<table><tr><th>Client</th><th>Calls</th><th>Rejected</th><th>Bytes in</th><th>Bytes out</th></tr>");
        for c in clients.iter().take(20) {
            let rejected: u64 = c["rejections"]
                .as_object()
                .map(|r| r.values().filter_map(Value::as_u64).sum())
                .unwrap_or(0);
            let _ = write!(
                h,
                "<tr><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(c["client"].as_str().unwrap_or("")),
                c["calls"].as_u64().unwrap_or(0),
                rejected,
                c["bytes_in"].as_u64().unwrap_or(0),
                c["bytes_out"].as_u64().unwrap_or(0)
            );
        }
        h.push_str("</table>");
    }

    h.push_str("<h2>Rejections by code</h2>");
    let mut by_code: BTreeMap<String, u64> = BTreeMap::new();
    for c in usage
        .and_then(|u| u["clients"].as_array())
        .into_iter()
        .flatten()
    {
        for (code, n) in c["rejections"].as_object().into_iter().flatten() {
            *by_code.entry(code.clone()).or_default() += n.as_u64().unwrap_or(0);
        }
    }
    if by_code.is_empty() {
        h.push_str("<p class=\"muted\">None.</p>");
    } else {
        h.push_str("<table><tr><th>Code</th><th>Count</th></tr>");
        for (code, n) in &by_code {
            let _ = write!(
                h,
                "<tr><td><code>{}</code></td><td>{n}</td></tr>",
                esc(code)
            );
        }
        h.push_str("</table>");
    }

    h.push_str("<h2>Active bans</h2>");
    match bans {
        None => h.push_str("<p class=\"muted\">The state store did not answer.</p>"),
        Some([]) => h.push_str("<p class=\"muted\">None.</p>"),
        Some(bans) => {
            h.push_str("<table><tr><th>Key</th><th>Reason</th><th>Until</th></tr>");
            for b in bans {
                let _ = write!(
                    h,
                    "<tr><td><code>{}</code></td><td>{}</td><td>{}</td></tr>",
                    esc(b["key"].as_str().unwrap_or("")),
                    esc(b["reason"].as_str().unwrap_or("")),
                    esc(b["until"].as_str().unwrap_or(""))
                );
            }
            h.push_str("</table>");
        }
    }
    h.push_str("</body></html>\n");
    h
}

/// Escapes text for HTML element content and quoted attributes.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

// === responses ===

fn text(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Response<Body> {
    let mut response = Response::new(body::full(body.into()));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response.headers_mut().insert(
        http::header::CACHE_CONTROL,
        HeaderValue::from_static("no-store"),
    );
    nosniff(&mut response);
    response
}

/// No admin answer is read as another type, or shown inside a frame.
fn nosniff(response: &mut Response<Body>) {
    let headers = response.headers_mut();
    headers.insert(
        http::header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        http::header::X_FRAME_OPTIONS,
        HeaderValue::from_static("DENY"),
    );
}

fn json_response(status: StatusCode, value: &Value) -> Response<Body> {
    let mut body = serde_json::to_string_pretty(value).unwrap_or_default();
    body.push('\n');
    text(status, "application/json", body)
}

fn problem(code: Code, detail: impl Into<std::borrow::Cow<'static, str>>) -> Response<Body> {
    let mut response = Reject::new(code, detail).into_response(&new_request_id());
    nosniff(&mut response);
    response
}

fn method_not_allowed(allow: &'static str) -> Response<Body> {
    let mut response = problem(
        Code::MethodNotAllowed,
        "this admin path does not take that method",
    );
    response
        .headers_mut()
        .insert(http::header::ALLOW, HeaderValue::from_static(allow));
    response
}

/// 400 `config_invalid`: the problem members, plus `errors` with each
/// mistake's file, line, column and the `FILE:LINE:COL: message` text.
fn config_errors(errors: &[ConfigError]) -> Response<Body> {
    let value = json!({
        "type": format!("https://tollgate.dev/problems/{}", Code::ConfigInvalid.as_str()),
        "title": Code::ConfigInvalid.title(),
        "status": 400,
        "detail": format!(
            "the config has {} error{}; the previous config keeps serving",
            errors.len(),
            if errors.len() == 1 { "" } else { "s" }
        ),
        "code": Code::ConfigInvalid.as_str(),
        "request_id": new_request_id().to_str().unwrap_or(""),
        "errors": errors.iter().map(|e| json!({
            "file": e.file.display().to_string(),
            "line": e.line,
            "column": e.column,
            "path": e.path,
            "message": e.message,
            "text": e.to_string(),
        })).collect::<Vec<_>>(),
    });
    let mut response = json_response(StatusCode::BAD_REQUEST, &value);
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_and_basic_credentials_yield_the_token() {
        assert_eq!(presented_token("Bearer abc").as_deref(), Some("abc"));
        // "admin:s3cret"
        assert_eq!(
            presented_token("Basic YWRtaW46czNjcmV0").as_deref(),
            Some("s3cret")
        );
        assert_eq!(presented_token("Digest x"), None);
    }

    #[test]
    fn usage_fields_group_by_operation_and_code() {
        let mut usage = ClientUsage::default();
        usage.add(vec![
            ("calls".into(), 3),
            ("rejected:rate_limited".into(), 1),
            ("op:get:emp:calls".into(), 3),
            ("op:get:emp:rejected:rate_limited".into(), 1),
            ("key:hr:2027:calls".into(), 2),
            ("cache_hits".into(), 2),
            ("op:get:emp:cache_hits".into(), 2),
        ]);
        assert_eq!(usage.calls, 3);
        assert_eq!(usage.keys["hr:2027"], 2);
        assert_eq!(usage.cache_hits, 2);
        assert_eq!(usage.operations["get:emp"].cache_hits, 2);
        assert_eq!(usage.rejections["rate_limited"], 1);
        assert_eq!(usage.operations["get:emp"].calls, 3);
        assert_eq!(usage.operations["get:emp"].rejections["rate_limited"], 1);
    }

    #[test]
    fn html_is_escaped() {
        assert_eq!(
            esc("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
    }
}
