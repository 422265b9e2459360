//! Policies: one file per kind, each a config struct (`XxxConfig`, the YAML
//! form) and a compiled runtime that becomes one or more [`Stage`]s.
//!
//! A stage is a [`Step`] tagged with the [`Phase`] it runs in;
//! `crate::stack` sorts an operation's stages by phase (whatever order
//! the config lists them in) and runs them from one loop: each stage's
//! request half in phase order, the upstream call, then the response halves
//! of the stages that asked for one, in reverse.
//!
//! Policies that judge the request alone implement [`Check`]; policies that
//! need the response or the store (limits, quotas, abuse, cache, schemas,
//! rewrites) have a [`Step`] variant and write its `before` / `after`
//! halves in their own file.
//!
//! Each kind's config struct implements [`registry::PolicyKind`] (its
//! `type:` name, how it compiles, the roles it names, the error codes it
//! can answer), and [`KINDS`] lists every kind. The loader, validation,
//! `tollgate schema`, the OpenAPI export and the compiler read [`KINDS`]
//! and nothing else.
//!
//! Adding a kind: copy `ip.rs` to a new file and rename its config type and
//! `TYPE`/`SCHEMA_NAME`; add its `mod` line below and its line in
//! [`KINDS`]. (A kind whose work is not a [`Check`] also adds a [`Step`]
//! variant and its arms in [`Step::before_now`] / [`Step::after_now`], which
//! decide at once where nothing waits, and in [`Step::before`] /
//! [`Step::after`]; the matches are exhaustive, so the compiler names each.)

pub mod abuse;
pub mod auth;
pub mod cache;
pub mod cors;
pub mod headers;
pub mod ip;
pub mod quota;
pub mod rate_limit;
pub mod registry;
pub mod roles;
#[cfg(test)]
pub(crate) mod testing;

use http::{HeaderMap, Method, Request, Response, Uri};
use ipnet::Ipv6Net;
use std::convert::Infallible;
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use crate::body::Body;
use crate::clock::SharedClock;
use crate::config::schema::{Config, PolicyDef};
use crate::context::{RequestContext, RoleSet};
use crate::problem::{Code, Reject};
use crate::state::AnyStore;

/// A boxed service at the edges of the pipeline: a terminal other than the
/// proxy (the MCP endpoint, a test's stub), or a pipeline handed to code
/// that wants a tower `Service`.
pub type OperationService =
    tower::util::BoxCloneSyncService<Request<Body>, Response<Body>, Infallible>;

/// The order policies run in, whatever order the config lists them in
/// (DESIGN §1). Within one phase, the config order holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Phase {
    /// `cors`: a preflight is answered here, before any other work (and
    /// never forwarded); other calls get their CORS headers on the way out.
    Preflight,
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

/// What every policy knows about itself, whatever its kind.
#[derive(Debug, Clone)]
pub struct PolicyMeta {
    /// The policy's name: its key in `policies:`, or a generated name for an
    /// inline definition. Counters in the state store are keyed by it.
    pub name: Arc<str>,
    /// The kind's `type:` name (`rate_limit`), for logs and metrics.
    pub type_name: &'static str,
    /// Shadow mode: evaluate and count, never reject.
    pub report_only: bool,
}

/// A policy compiled from its config, ready to wrap operations.
#[derive(Clone)]
pub struct CompiledPolicy {
    /// Who the policy is (name, kind, report-only), shared by its stages.
    pub meta: Arc<PolicyMeta>,
    /// The policy's steps, each in the phase it runs in; an operation's pipeline runs them in
    /// phase order.
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

    /// A table of the roles declared in `roles:`, in order (bit `i` is the `i`-th name).
    pub fn new(names: Vec<String>) -> Self {
        RoleTable { names }
    }

    /// The bit of role `name`, or `None` if it is not declared.
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

    /// The one wording of an undeclared role, wherever it is found.
    pub fn undeclared(name: &str) -> String {
        format!("role `{name}` is not declared in `roles`")
    }

    /// The names of the roles in `set`, in declaration order.
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
    /// The whole config file being compiled.
    pub config: &'a Config,
    /// The declared roles, for turning role names into [`RoleSet`]s.
    pub roles: &'a RoleTable,
    /// The clock limiters, quotas and bans read time from.
    pub clock: &'a SharedClock,
    /// Where counters live (rate limits, quotas, bans); outlives reloads.
    pub store: AnyStore,
    /// Where the config file lives: relative file names resolve against it.
    pub base_dir: &'a std::path::Path,
    /// Every client's keys and the JWT verifier, built once per compile and
    /// shared by every `auth` policy.
    pub credentials: Arc<crate::credentials::Credentials>,
    /// Response caches by policy name; outlives reloads.
    pub caches: Arc<cache::CacheRegistry>,
    pub(crate) errors: Vec<(Vec<String>, String)>,
}

impl<'a> CompileCx<'a> {
    /// A context with a private memory store, no credentials and no caches; the
    /// `with_*` methods give it the gateway's.
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
    pub fn with_credentials(mut self, credentials: Arc<crate::credentials::Credentials>) -> Self {
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

    /// The set of the roles listed at `field`; each undeclared one is
    /// recorded (validation reports the same error in the same words, and
    /// the two are merged).
    pub fn role_set(&mut self, field: &str, names: &[String]) -> RoleSet {
        let mut set = RoleSet::EMPTY;
        for (i, name) in names.iter().enumerate() {
            match self.roles.bit(name) {
                Some(bit) => set = set.with(bit),
                None => self.error(&[field, &i.to_string()], RoleTable::undeclared(name)),
            }
        }
        set
    }

    /// The mistakes recorded so far, leaving none.
    pub fn take_errors(&mut self) -> Vec<(Vec<String>, String)> {
        std::mem::take(&mut self.errors)
    }
}

/// Every policy kind, in the order errors and `tollgate schema` list them.
pub const KINDS: &[registry::RegisteredKind] = &[
    registry::kind::<auth::AuthConfig>(),
    registry::kind::<roles::RolesConfig>(),
    registry::kind::<ip::IpConfig>(),
    registry::kind::<headers::HeadersConfig>(),
    registry::kind::<rate_limit::RateLimitConfig>(),
    registry::kind::<quota::QuotaConfig>(),
    registry::kind::<abuse::AbuseConfig>(),
    registry::kind::<cache::CacheConfig>(),
    registry::kind::<cors::CorsConfig>(),
];

/// Compiles one definition. `None` when it had errors (recorded in `cx`).
pub fn compile(def: &PolicyDef, name: &str, cx: &mut CompileCx<'_>) -> Option<CompiledPolicy> {
    let meta = Arc::new(PolicyMeta {
        name: name.into(),
        type_name: def.type_name(),
        report_only: def.report_only,
    });
    let before = cx.errors.len();
    let stages = def.config.compile(&meta, cx);
    match stages {
        Some(stages) if cx.errors.len() == before => Some(CompiledPolicy { meta, stages }),
        _ => None,
    }
}

// === Stages: what an operation's pipeline runs ===

/// The parts of a request a [`Check`] may read, and the headers it may edit
/// (e.g. `auth` removing the credential before forwarding).
pub struct RequestHead<'a> {
    /// The request's method.
    pub method: &'a Method,
    /// The request's URI (its path and query).
    pub uri: &'a Uri,
    /// The request's headers, editable (e.g. to remove a credential before forwarding).
    pub headers: &'a mut HeaderMap,
}

/// A policy that judges the request alone, synchronously: `ip`, `roles`,
/// the checks of `headers`. Its refusal answers the call (or, report-only,
/// is noted by the pipeline and the call goes on).
pub trait Check: Send + Sync + 'static {
    /// Judges the request: `Err` refuses it with that problem (or, report-only, notes it).
    fn check(&self, req: &mut RequestHead<'_>, cx: &mut RequestContext) -> Result<(), Reject>;
}

/// What a stage does, one variant per kind of work, dispatched by `match`
/// in [`Step::before`] and [`Step::after`]: no box, no clone and no future
/// of its own per stage per request. A new policy kind that only judges the
/// request is a [`Check`]; one that needs the response or the store adds a
/// variant here and its two halves in its own file.
#[derive(Clone)]
pub enum Step {
    /// Judges the request alone (`ip`, `roles`, `headers` checks).
    Check(Arc<dyn Check>),
    /// Identifies the caller (`auth`).
    Auth(Arc<auth::Auth>),
    /// Bans and watched answers (`abuse`).
    Abuse(Arc<abuse::Abuse>),
    /// A GCRA decision, and the `RateLimit*` headers on the way out.
    RateLimit(Arc<rate_limit::RateLimit>),
    /// Answers hits; records cacheable misses on the way out.
    Cache(Arc<cache::Cache>),
    /// Takes a unit; gives it back if the gateway answered the call itself.
    Quota(Arc<quota::Quota>),
    /// Request and response body schemas.
    Schema(Arc<crate::body_schema::SchemaValidation>),
    /// Header rewrites, request and response (`headers`).
    Rewrite(Arc<headers::Rewrites>),
    /// Answers preflights; CORS headers on the way out (`cors`).
    Cors(Arc<cors::Cors>),
}

/// One step of a compiled policy, the phase it runs in, and the policy it
/// belongs to (for report-only and for naming the refusing policy).
#[derive(Clone)]
pub struct Stage {
    /// When in the pipeline the step runs (DESIGN §1).
    pub phase: Phase,
    /// The policy the step belongs to.
    pub meta: Arc<PolicyMeta>,
    /// What the step does.
    pub step: Step,
}

impl Stage {
    /// A stage of the policy `meta` running `step` in `phase`.
    pub fn new(phase: Phase, meta: &Arc<PolicyMeta>, step: Step) -> Stage {
        Stage {
            phase,
            meta: meta.clone(),
            step,
        }
    }

    /// A stage running `check` in `phase`.
    pub fn check<P: Check>(phase: Phase, meta: &Arc<PolicyMeta>, check: P) -> Stage {
        Stage::new(phase, meta, Step::Check(Arc::new(check)))
    }
}

/// Why a stage stopped the call.
pub enum Stop {
    /// A refusal: answered as problem+json, unless the policy is
    /// report-only (then noted, and the call goes on).
    Refuse(Reject),
    /// An answer the stage made itself (a cache hit).
    Answer(Box<Response<Body>>),
}

impl From<Reject> for Stop {
    fn from(reject: Reject) -> Self {
        Stop::Refuse(reject)
    }
}

/// What a stage's request half leaves for its response half.
#[derive(Default)]
pub enum Saved {
    /// Nothing to do on the way out.
    #[default]
    Nothing,
    /// This rate limit governed the call: the `RateLimit*` headers are
    /// written on the way out (once, by the first to get there).
    RateLimitHeaders,
    /// The quota unit taken, to give back if the gateway answers itself.
    QuotaTaken(quota::Taken),
    /// The abuse key of the caller, to count a watched answer against.
    AbuseKey(String),
    /// A cache miss, to record the answer under.
    CacheMiss(Box<cache::Miss>),
    /// The response must be checked against the response schema.
    CheckResponse,
    /// The response headers are rewritten.
    RewriteResponse,
    /// The CORS headers of the answer (`None`: the call had no `Origin`,
    /// only `Vary` is written).
    Cors(Option<Box<HeaderMap>>),
}

// === impl Step ===

impl Step {
    /// The request half of a stage that must wait, once
    /// [`Step::before_now`] said so: `Ok` to go on, or why the call stops
    /// here. What the response half needs is left in `saved`.
    pub async fn before(
        &self,
        parts: &mut http::request::Parts,
        body: &mut Body,
        cx: &mut RequestContext,
        saved: &mut Saved,
    ) -> Result<(), Stop> {
        match self {
            Step::Auth(auth) => Ok(auth.before(parts, cx).await?),
            Step::Abuse(abuse) => Ok(abuse.before(parts, cx, saved).await?),
            Step::RateLimit(limit) => Ok(limit.before(&parts.headers, cx, saved).await?),
            Step::Quota(quota) => Ok(quota.before(&parts.headers, cx, saved).await?),
            Step::Schema(schema) => Ok(schema.before(parts, body, saved).await?),
            Step::Cors(cors) => cors.before(parts, saved).await,
            // `before_now` always decides these; asked here, refuse rather
            // than let a check pass unjudged.
            Step::Check(_) | Step::Cache(_) | Step::Rewrite(_) => {
                Err(Reject::new(Code::Internal, "a stage that decides at once was awaited").into())
            }
        }
    }

    /// The request half when it needs no waiting (checks, rewrites, a
    /// cache lookup, `auth` with its keys at hand, a memory-store limit):
    /// `None` when it must wait, having done nothing; then
    /// [`Step::before`] runs it.
    pub fn before_now(
        &self,
        parts: &mut http::request::Parts,
        body: &mut Body,
        cx: &mut RequestContext,
        saved: &mut Saved,
    ) -> Option<Result<(), Stop>> {
        match self {
            Step::Check(check) => {
                let mut head = RequestHead {
                    method: &parts.method,
                    uri: &parts.uri,
                    headers: &mut parts.headers,
                };
                Some(check.check(&mut head, cx).map_err(Stop::from))
            }
            Step::Auth(auth) => auth.before_now(parts, cx).map(|r| r.map_err(Stop::from)),
            Step::RateLimit(limit) => limit
                .before_now(&parts.headers, cx, saved)
                .map(|r| r.map_err(Stop::from)),
            Step::Cache(cache) => Some(cache.before(parts, body, cx, saved)),
            Step::Rewrite(rewrites) => {
                rewrites.request.apply(&mut parts.headers, Some(cx));
                if !rewrites.response.is_empty() {
                    *saved = Saved::RewriteResponse;
                }
                Some(Ok(()))
            }
            Step::Abuse(_) | Step::Quota(_) | Step::Schema(_) | Step::Cors(_) => None,
        }
    }

    /// The response half when it needs no waiting; `Some(saved)` back when
    /// it must wait (then [`Step::after`] runs it).
    pub fn after_now(
        &self,
        response: &mut Response<Body>,
        cx: &mut RequestContext,
        saved: Saved,
    ) -> Option<Saved> {
        match (self, saved) {
            (_, Saved::Nothing) | (Step::Check(_) | Step::Auth(_), _) => None,
            (Step::RateLimit(_), Saved::RateLimitHeaders) => {
                rate_limit::write_headers(response, cx);
                None
            }
            (Step::Cache(cache), Saved::CacheMiss(miss)) => {
                cache.after(response, *miss);
                None
            }
            (Step::Rewrite(rewrites), Saved::RewriteResponse) => {
                rewrites.response.apply(response.headers_mut(), Some(cx));
                None
            }
            (Step::Cors(_), Saved::Cors(headers)) => {
                cors::Cors::after(response, headers);
                None
            }
            (_, saved) => Some(saved),
        }
    }

    /// The response half of a stage that must wait, with what
    /// [`Step::after_now`] handed back (the halves it runs at once never
    /// come here).
    pub async fn after(
        &self,
        response: &mut Response<Body>,
        cx: &mut RequestContext,
        saved: Saved,
    ) {
        match (self, saved) {
            (Step::Abuse(abuse), Saved::AbuseKey(key)) => abuse.after(response, cx, &key).await,
            (Step::Quota(quota), Saved::QuotaTaken(taken)) => {
                quota.after(response, cx, taken).await
            }
            (Step::Schema(schema), Saved::CheckResponse) => schema.after(response, cx).await,
            _ => {}
        }
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
    /// The authenticated client's id (the client IP when anonymous).
    #[default]
    Client,
    /// The client IP, IPv6 grouped by `ipv6_prefix`.
    Ip,
    /// One counter shared by every caller.
    Global,
    /// The value of this request header (`header:X-User`); the client IP when it is missing.
    Header(http::HeaderName),
}

impl LimitKey {
    /// The store key of a `rate_limit` or `quota` call: `{policy}:{kind}:{id}`.
    /// `client` and `header:` fall back to the client IP when the call is
    /// anonymous or the header is missing (or not visible ASCII), so one
    /// unidentified caller cannot use up everybody's budget. Every IP key is
    /// the caller's [`IpGroup`]: rotating through one IPv6 /64 gains nothing.
    ///
    /// Built from its parts with one allocation of the exact size and no
    /// format machinery: this runs on every limited call.
    pub fn store_key(
        &self,
        policy: &str,
        ipv6_prefix: u8,
        headers: &HeaderMap,
        cx: &RequestContext,
    ) -> String {
        let joined = |kind: &str, id: &str| store_key(policy, kind, id);
        let ip = || {
            use std::fmt::Write as _;
            let mut out = joined("ip:", "");
            out.reserve(43);
            let _ = write!(out, "{}", IpGroup::of(cx.client_ip, ipv6_prefix));
            out
        };
        match self {
            LimitKey::Client => match &cx.client {
                Some(client) => LimitKey::client_key(policy, &client.id),
                None => ip(),
            },
            LimitKey::Ip => ip(),
            LimitKey::Global => LimitKey::global_key(policy),
            LimitKey::Header(name) => match headers.get(name).and_then(|v| v.to_str().ok()) {
                // Hashed: the header may be a credential (`header:X-API-Key`),
                // and store keys end up in Redis and in report-only logs.
                // The same value gives the same key on every instance.
                Some(value) if !value.is_empty() => {
                    let digest = <sha2::Sha256 as sha2::Digest>::digest(value.as_bytes());
                    joined("header:", &hex::encode(&digest[..16]))
                }
                _ => ip(),
            },
        }
    }
}

impl LimitKey {
    /// The store key of `policy`'s counter for the authenticated client
    /// `client` (what `key: client` counts by).
    pub fn client_key(policy: &str, client: &str) -> String {
        store_key(policy, "client:", client)
    }

    /// The store key of `policy`'s one counter (`key: global`).
    pub fn global_key(policy: &str) -> String {
        store_key(policy, "global", "")
    }
}

/// `{policy}:{kind}{id}`, with one allocation of the exact size and no
/// format machinery: this runs on every limited call.
fn store_key(policy: &str, kind: &str, id: &str) -> String {
    let mut out = String::with_capacity(policy.len() + 1 + kind.len() + id.len());
    out.push_str(policy);
    out.push(':');
    out.push_str(kind);
    out.push_str(id);
    out
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
    /// An IPv4 address, as is.
    V4(std::net::Ipv4Addr),
    /// An IPv6 address cut to its `ipv6_prefix`.
    V6(Ipv6Net),
}

impl IpGroup {
    /// The group `ip` counts in: IPv4 as is, IPv6 truncated to `ipv6_prefix` bits (at most 128).
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
