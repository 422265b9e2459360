//! Policies: one file per kind, each a config struct (`XxxConfig`, the YAML
//! form) and a compiled runtime that becomes one or more tower layers.
//!
//! A policy compiles into [`Stage`]s, each a layer tagged with the [`Phase`]
//! it runs in; `crate::stack` sorts an operation's stages by phase (whatever
//! order the config lists them in) and wraps the proxy with them.
//!
//! Policies that judge the request alone implement [`Check`] and are run by
//! the shared [`CheckLayer`]; policies that need the response or async state
//! (limits, quotas, abuse, rewrites) write their own layer.
//!
//! Adding a kind: copy `ip.rs`, add a `mod` line below and one arm in
//! [`compile`].

pub mod abuse;
pub mod auth;
pub mod cache;
pub mod credentials;
pub mod headers;
pub mod ip;
pub mod jwks;
pub mod quota;
pub mod rate_limit;
pub mod roles;
pub mod schema;

use futures_util::future::{self, Either};
use http::{HeaderMap, Method, Request, Response, Uri};
use ipnet::Ipv6Net;
use std::convert::Infallible;
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;
use std::task::{Context, Poll};
use tower::Service;

use crate::body::Body;
use crate::clock::SharedClock;
use crate::config::schema::{Config, PolicyDef, PolicyKind};
use crate::context::{RequestContext, RoleSet};
use crate::problem::{Code, Reject};
use crate::state::AnyStore;

/// The per-operation service: what every layer wraps and returns. Shared
/// by reference in the `Gateway`, cloned per request.
pub type OperationService =
    tower::util::BoxCloneSyncService<Request<Body>, Response<Body>, Infallible>;

/// Wraps an inner service with a policy's layer.
pub type BoxLayer = Arc<dyn Fn(OperationService) -> OperationService + Send + Sync>;

/// The order policies run in, whatever order the config lists them in
/// (DESIGN §1). Within one phase, the config order holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Phase {
    /// `ip`, `abuse`: cheap, before any other work.
    Screen,
    /// `auth`.
    Authenticate,
    /// `roles` and the checks of `headers`.
    Authorize,
    /// `rate_limit`.
    RateLimit,
    /// `cache`: a hit has spent its rate-limit token, but takes no quota.
    Cache,
    /// `quota`: consumed only by calls that get this far.
    Quota,
    /// request `schema`.
    Validate,
    /// header rewrites (`headers.request` / `headers.response`).
    Rewrite,
}

/// One layer of a compiled policy and the phase it runs in.
#[derive(Clone)]
pub struct Stage {
    pub phase: Phase,
    pub layer: BoxLayer,
}

/// What every policy knows about itself, whatever its kind.
#[derive(Debug, Clone)]
pub struct PolicyMeta {
    /// The policy's name: its key in `policies:`, or a generated name for an
    /// inline definition. Counters in the state store are keyed by it.
    pub name: Arc<str>,
    pub type_name: &'static str,
    /// Shadow mode: evaluate and count, never reject.
    pub report_only: bool,
}

/// A policy compiled from its config, ready to wrap operations.
#[derive(Clone)]
pub struct CompiledPolicy {
    pub meta: Arc<PolicyMeta>,
    pub stages: Vec<Stage>,
}

/// Declared roles, each given one bit of a [`RoleSet`].
#[derive(Debug, Clone, Default)]
pub struct RoleTable {
    names: Vec<String>,
}

impl RoleTable {
    /// At most 64 roles (a bit each); the caller reports more as a config error.
    pub const MAX: usize = 64;

    pub fn new(names: Vec<String>) -> Self {
        RoleTable { names }
    }

    pub fn bit(&self, name: &str) -> Option<u8> {
        self.names.iter().position(|n| n == name).map(|i| i as u8)
    }

    /// The set for `names`; `Err(name)` names the first undeclared role.
    pub fn set_of<'a>(
        &self,
        names: impl IntoIterator<Item = &'a String>,
    ) -> Result<RoleSet, &'a str> {
        names.into_iter().try_fold(RoleSet::EMPTY, |set, name| {
            self.bit(name).map(|b| set.with(b)).ok_or(name.as_str())
        })
    }

    pub fn names_in(&self, set: RoleSet) -> impl Iterator<Item = &str> {
        self.names
            .iter()
            .enumerate()
            .filter(move |(i, _)| set.0 & (1u64 << i) != 0)
            .map(|(_, n)| n.as_str())
    }
}

/// What a policy may consult while it compiles, and where it reports
/// mistakes. Errors carry a path relative to the policy definition
/// (e.g. `["allow", "1"]`); the gateway compiler turns them into
/// FILE:LINE:COL errors.
pub struct CompileCx<'a> {
    pub config: &'a Config,
    pub roles: &'a RoleTable,
    pub clock: &'a SharedClock,
    /// Where counters live (rate limits, quotas, bans); outlives reloads.
    pub store: AnyStore,
    /// Where the config file lives: relative file names resolve against it.
    pub base_dir: &'a std::path::Path,
    /// Every client's keys and the JWT verifier, built once per compile and
    /// shared by every `auth` policy.
    pub credentials: Arc<credentials::Credentials>,
    /// Response caches by policy name; outlives reloads.
    pub caches: Arc<cache::CacheRegistry>,
    pub(crate) errors: Vec<(Vec<String>, String)>,
}

impl<'a> CompileCx<'a> {
    pub fn new(
        config: &'a Config,
        roles: &'a RoleTable,
        clock: &'a SharedClock,
        base_dir: &'a std::path::Path,
    ) -> Self {
        CompileCx {
            config,
            roles,
            clock,
            store: AnyStore::memory(),
            base_dir,
            credentials: Arc::default(),
            caches: Arc::default(),
            errors: Vec::new(),
        }
    }

    /// The credentials `auth` policies identify callers with (default: none).
    pub fn with_credentials(mut self, credentials: Arc<credentials::Credentials>) -> Self {
        self.credentials = credentials;
        self
    }

    /// Uses `store` for counters (the gateway's, from `Deps`). Without it a
    /// context has a private memory store, which suits unit tests.
    pub fn with_store(mut self, store: &AnyStore) -> Self {
        self.store = store.clone();
        self
    }

    /// Uses `caches` for response caches (the gateway's, from `Deps`).
    pub fn with_caches(mut self, caches: &Arc<cache::CacheRegistry>) -> Self {
        self.caches = caches.clone();
        self
    }

    /// Records a mistake at `path` inside the definition being compiled.
    pub fn error(&mut self, path: &[&str], message: impl Into<String>) {
        self.errors
            .push((path.iter().map(|s| s.to_string()).collect(), message.into()));
    }

    pub fn take_errors(&mut self) -> Vec<(Vec<String>, String)> {
        std::mem::take(&mut self.errors)
    }
}

/// Compiles one definition. `None` when it had errors (recorded in `cx`).
pub fn compile(def: &PolicyDef, name: &str, cx: &mut CompileCx<'_>) -> Option<CompiledPolicy> {
    let meta = Arc::new(PolicyMeta {
        name: name.into(),
        type_name: def.type_name(),
        report_only: def.report_only,
    });
    let before = cx.errors.len();
    let stages = match &def.kind {
        PolicyKind::Auth(c) => auth::compile(c, &meta, cx),
        PolicyKind::Roles(c) => roles::compile(c, &meta, cx),
        PolicyKind::Ip(c) => ip::compile(c, &meta, cx),
        PolicyKind::Headers(c) => headers::compile(c, &meta, cx),
        PolicyKind::RateLimit(c) => rate_limit::compile(c, &meta, cx),
        PolicyKind::Quota(c) => quota::compile(c, &meta, cx),
        PolicyKind::Abuse(c) => abuse::compile(c, &meta, cx),
        PolicyKind::Cache(c) => cache::compile(c, &meta, cx),
    };
    match stages {
        Some(stages) if cx.errors.len() == before => Some(CompiledPolicy { meta, stages }),
        _ => None,
    }
}

// === Check: request-only policies ===

/// The parts of a request a [`Check`] may read, and the headers it may edit
/// (e.g. `auth` removing the credential before forwarding).
pub struct RequestHead<'a> {
    pub method: &'a Method,
    pub uri: &'a Uri,
    pub headers: &'a mut HeaderMap,
}

/// A policy that judges the request alone, synchronously.
pub trait Check: Send + Sync + 'static {
    fn check(&self, req: &mut RequestHead<'_>, cx: &mut RequestContext) -> Result<(), Reject>;
}

/// Runs a [`Check`] before the inner service; a refusal answers at once
/// (or, in report-only mode, is noted in the context and the call goes on).
pub struct CheckLayer;

impl CheckLayer {
    /// A stage running `check` in `phase`.
    pub fn stage<P: Check>(phase: Phase, check: P, meta: &Arc<PolicyMeta>) -> Stage {
        let check = Arc::new(check);
        let meta = meta.clone();
        Stage {
            phase,
            layer: Arc::new(move |inner| {
                OperationService::new(CheckService {
                    check: check.clone(),
                    meta: meta.clone(),
                    inner,
                })
            }),
        }
    }
}

pub struct CheckService<P> {
    check: Arc<P>,
    meta: Arc<PolicyMeta>,
    inner: OperationService,
}

impl<P> Clone for CheckService<P> {
    fn clone(&self) -> Self {
        CheckService {
            check: self.check.clone(),
            meta: self.meta.clone(),
            inner: self.inner.clone(),
        }
    }
}

type CheckFuture = Either<
    future::Ready<Result<Response<Body>, Infallible>>,
    <OperationService as Service<Request<Body>>>::Future,
>;

impl<P: Check> Service<Request<Body>> for CheckService<P> {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = CheckFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        let (mut parts, body) = req.into_parts();
        let verdict = match parts.extensions.get_mut::<RequestContext>() {
            Some(cx) => {
                let mut head = RequestHead {
                    method: &parts.method,
                    uri: &parts.uri,
                    headers: &mut parts.headers,
                };
                match self.check.check(&mut head, cx) {
                    Err(reject) if self.meta.report_only => {
                        tracing::info!(
                            policy = &*self.meta.name,
                            code = reject.code.as_str(),
                            "report-only policy would reject"
                        );
                        cx.would_reject.push((self.meta.name.clone(), reject.code));
                        Ok(())
                    }
                    other => other,
                }
            }
            None => Err(Reject::new(Code::Internal, "request context missing")),
        };
        match verdict {
            Ok(()) => Either::Right(self.inner.call(Request::from_parts(parts, body))),
            Err(reject) => Either::Left(future::ready(Ok(reject
                .by_policy(&self.meta.name)
                .respond(parts.extensions)))),
        }
    }
}

// === Around: policies that wrap the rest of the call ===

/// A policy that runs around the rest of the stack: it may answer at once,
/// or call `next` and then look at the response (rate limits write headers,
/// quotas give back units, abuse counts watched statuses). The async
/// counterpart of [`Check`], run by [`AroundService`].
pub trait Around: Send + Sync + 'static {
    /// Answers `req`; `next` is the rest of the stack, already polled ready.
    fn around(
        self: Arc<Self>,
        req: Request<Body>,
        next: OperationService,
    ) -> impl std::future::Future<Output = Response<Body>> + Send;
}

/// A stage running an [`Around`] policy in `phase`.
pub fn around_stage<P: Around>(phase: Phase, policy: Arc<P>) -> Stage {
    Stage {
        phase,
        layer: Arc::new(move |inner| {
            OperationService::new(AroundService {
                policy: policy.clone(),
                inner,
            })
        }),
    }
}

pub struct AroundService<P> {
    policy: Arc<P>,
    inner: OperationService,
}

impl<P> Clone for AroundService<P> {
    fn clone(&self) -> Self {
        AroundService {
            policy: self.policy.clone(),
            inner: self.inner.clone(),
        }
    }
}

impl<P: Around> Service<Request<Body>> for AroundService<P> {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = futures_util::future::BoxFuture<'static, Result<Response<Body>, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        // The inner service was polled ready: take it, leave a clone.
        let fresh = self.inner.clone();
        let next = std::mem::replace(&mut self.inner, fresh);
        let policy = self.policy.clone();
        Box::pin(async move { Ok(policy.around(req, next).await) })
    }
}

/// Calls the rest of the stack (which cannot fail: errors are responses).
pub async fn call_next(next: OperationService, req: Request<Body>) -> Response<Body> {
    match tower::ServiceExt::oneshot(next, req).await {
        Ok(response) => response,
        Err(never) => match never {},
    }
}

/// The answer when a request has lost its context (a bug, never input).
pub fn context_missing(extensions: http::Extensions) -> Response<Body> {
    Reject::new(Code::Internal, "request context missing").respond(extensions)
}

// === LimitKey: what a limit or quota counts by ===

/// `key:` of `rate_limit` and `quota`: `client` (falls back to the IP when
/// the call is anonymous), `ip`, `global`, or `header:NAME`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum LimitKey {
    #[default]
    Client,
    Ip,
    Global,
    Header(http::HeaderName),
}

impl LimitKey {
    /// The store key of a `rate_limit` or `quota` call: `{policy}:{kind}:{id}`.
    /// `client` and `header:` fall back to the client IP when the call is
    /// anonymous or the header is missing (or not visible ASCII), so one
    /// unidentified caller cannot use up everybody's budget. Every IP key is
    /// the caller's [`IpGroup`]: rotating through one IPv6 /64 gains nothing.
    pub fn store_key(
        &self,
        policy: &str,
        ipv6_prefix: u8,
        headers: &HeaderMap,
        cx: &RequestContext,
    ) -> String {
        let ip = || {
            let group = IpGroup::of(cx.client_ip, ipv6_prefix);
            crate::state::key(policy, format_args!("ip:{group}"))
        };
        match self {
            LimitKey::Client => match &cx.client {
                Some(client) => crate::state::key(policy, format_args!("client:{}", client.id)),
                None => ip(),
            },
            LimitKey::Ip => ip(),
            LimitKey::Global => crate::state::key(policy, format_args!("global")),
            LimitKey::Header(name) => match headers.get(name).and_then(|v| v.to_str().ok()) {
                // Hashed: the header may be a credential (`header:X-API-Key`),
                // and store keys end up in Redis and in report-only logs.
                // The same value gives the same key on every instance.
                Some(value) if !value.is_empty() => {
                    let digest = <sha2::Sha256 as sha2::Digest>::digest(value.as_bytes());
                    let id = hex::encode(&digest[..16]);
                    crate::state::key(policy, format_args!("header:{id}"))
                }
                _ => ip(),
            },
        }
    }
}

impl schemars::JsonSchema for LimitKey {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "LimitKey".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "What calls are counted by: `client` (the IP when anonymous), `ip`, `global`, or `header:NAME`.",
            "type": "string",
            "pattern": "^(client|ip|global|header:.+)$",
            "default": "client",
        })
    }
}

impl<'de> serde::Deserialize<'de> for LimitKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        match s.as_str() {
            "client" => Ok(LimitKey::Client),
            "ip" => Ok(LimitKey::Ip),
            "global" => Ok(LimitKey::Global),
            other => match other.strip_prefix("header:") {
                Some(name) => http::HeaderName::from_bytes(name.trim().as_bytes())
                    .map(LimitKey::Header)
                    .map_err(|_| {
                        serde::de::Error::custom(format!("`{name}` is not a header name"))
                    }),
                None => Err(serde::de::Error::custom(format!(
                    "unknown key `{other}`, expected client, ip, global or header:NAME"
                ))),
            },
        }
    }
}

// === IpGroup: how callers are counted by address ===

/// What `abuse`, and `rate_limit`/`quota` keyed by IP, count an address
/// as: IPv4 as is, IPv6 cut to its `ipv6_prefix` (`2001:db8:1:2::/64`), since
/// one subscriber usually holds a whole /64 and could otherwise rotate
/// through it to get a fresh budget per address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IpGroup {
    V4(std::net::Ipv4Addr),
    V6(Ipv6Net),
}

impl IpGroup {
    pub fn of(ip: IpAddr, ipv6_prefix: u8) -> IpGroup {
        match crate::gateway::canonical_ip(ip) {
            IpAddr::V4(v4) => IpGroup::V4(v4),
            IpAddr::V6(v6) => match Ipv6Net::new(v6, ipv6_prefix.min(128)) {
                Ok(net) => IpGroup::V6(net.trunc()),
                Err(_) => IpGroup::V6(Ipv6Net::from(v6)),
            },
        }
    }
}

impl fmt::Display for IpGroup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IpGroup::V4(v4) => v4.fmt(f),
            IpGroup::V6(net) => net.fmt(f),
        }
    }
}

/// The default `ipv6_prefix` of the policies that count by address.
pub fn default_ipv6_prefix() -> u8 {
    64
}

/// Checks an `ipv6_prefix` field; a mistake is recorded in `cx`.
pub fn check_ipv6_prefix(prefix: u8, cx: &mut CompileCx<'_>) -> bool {
    let ok = prefix <= 128;
    if !ok {
        cx.error(
            &["ipv6_prefix"],
            format!("{prefix} is not an IPv6 prefix length (0 to 128)"),
        );
    }
    ok
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_callers_are_grouped_by_prefix_and_ipv4_stands_alone() {
        let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
        assert_eq!(
            IpGroup::of(ip("2001:db8:1:2:aaaa::1"), 64).to_string(),
            "2001:db8:1:2::/64"
        );
        assert_eq!(
            IpGroup::of(ip("2001:db8:1:2:aaaa::1"), 64),
            IpGroup::of(ip("2001:db8:1:2:bbbb::9"), 64)
        );
        assert_ne!(
            IpGroup::of(ip("2001:db8:1:2::1"), 64),
            IpGroup::of(ip("2001:db8:1:3::1"), 64)
        );
        assert_eq!(
            IpGroup::of(ip("2001:db8::1"), 128).to_string(),
            "2001:db8::1/128"
        );
        assert_eq!(IpGroup::of(ip("2001:db8::1"), 0).to_string(), "::/0");
        assert_eq!(
            IpGroup::of(ip("::ffff:10.0.0.1"), 64).to_string(),
            "10.0.0.1"
        );
    }
}
