//! The admin listener (`admin.listen`, DESIGN §6): health and readiness,
//! Prometheus metrics, the loaded APIs, usage, bans, the call log, reload, the OpenAPI
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
use std::convert::Infallible;
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
use crate::config::ConfigError;
use crate::context::new_request_id;
use crate::gateway::Gateway;
use crate::metrics;

mod calls;
mod status_page;
mod usage;
use crate::problem::{Code, Reject};
use crate::reload::Reloader;
use crate::state::{self, Store};

/// How long a shutdown waits for admin requests in flight.
const DRAIN: Duration = Duration::from_secs(5);

/// A bound, not yet running, admin listener.
pub struct AdminServer {
    listener: TcpListener,
    admin: Arc<Admin>,
}

/// What every admin request reads.
pub(crate) struct Admin {
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

    /// The address the admin listener is bound to (with `:0`, the port the OS chose).
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
        if let Some(id) = path.strip_prefix("/admin/calls/") {
            return match method {
                Method::GET => self.call(id).await,
                _ => method_not_allowed("GET"),
            };
        }
        if let Some(key) = path.strip_prefix("/admin/bans/") {
            return match method {
                Method::DELETE => self.lift_ban(key).await,
                _ => method_not_allowed("DELETE"),
            };
        }
        let allowed = match path.as_str() {
            "/"
            | "/metrics"
            | "/admin/apis"
            | "/admin/usage"
            | "/admin/usage/series"
            | "/admin/bans"
            | "/admin/calls"
            | "/openapi.json"
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
            "/admin/usage/series" => self.usage_series(req.uri().query()),
            "/admin/bans" => match self.bans().await {
                Ok(bans) => json_response(StatusCode::OK, &json!({ "bans": bans })),
                Err(response) => response,
            },
            "/admin/calls" => self.calls(req.uri().query()).await,
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

    pub(super) fn now(&self) -> Nanos {
        self.reloader.deps().clock.now()
    }

    pub(super) fn store(&self) -> &crate::state::AnyStore {
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

    pub(super) async fn bans(&self) -> Result<Vec<Value>, Response<Body>> {
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

    pub(super) fn store_failed(&self, error: state::StoreError) -> Response<Body> {
        problem(Code::StateStoreUnavailable, error.to_string())
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

// === responses ===

pub(super) fn text(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Body> {
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

pub(super) fn json_response(status: StatusCode, value: &Value) -> Response<Body> {
    let mut body = serde_json::to_string_pretty(value).unwrap_or_default();
    body.push('\n');
    text(status, "application/json", body)
}

pub(super) fn problem(
    code: Code,
    detail: impl Into<std::borrow::Cow<'static, str>>,
) -> Response<Body> {
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

/// 400 `config_invalid`, its body written by `crate::problem` like every
/// other problem.
fn config_errors(errors: &[ConfigError]) -> Response<Body> {
    let body = crate::problem::config_invalid_json(errors, &new_request_id());
    text(StatusCode::BAD_REQUEST, "application/problem+json", body)
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
}
