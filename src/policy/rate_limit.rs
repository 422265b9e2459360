//! GCRA rate limits per client, IP, header or globally.
//!
//! ```yaml
//! per-client-rate:
//!   type: rate_limit
//!   limit: 100          # calls per window, sustained
//!   window: 1m
//!   burst: 20           # bucket size; default = limit
//!   key: client         # client | ip | global | header:X-User
//!   for_roles: [agent]  # optional: only callers holding one of these roles
//! ```
//!
//! A bucket of `burst` calls refills `limit` per `window` (GCRA, one
//! theoretical arrival time per key in the state store). A refused call
//! gets 429 `rate_limited` with `Retry-After` and consumes nothing.
//!
//! Every governed response carries the IETF httpapi draft fields
//! (draft-ietf-httpapi-ratelimit-headers-09, structured-field form) and the
//! de facto `X-RateLimit-*` trio, describing the limit closest to
//! exhaustion:
//!
//! ```text
//! RateLimit-Policy: "per-client-rate";q=100;w=60
//! RateLimit: "per-client-rate";r=42;t=30
//! X-RateLimit-Limit: 100
//! X-RateLimit-Remaining: 42
//! X-RateLimit-Reset: 30
//! ```
//!
//! `r`/`Remaining` is the calls that would still pass now; `t`/`Reset` the
//! whole seconds until the bucket is full again. With several limits on one
//! operation each records its decision in the `RequestContext`
//! (`record_rate_limit` keeps the one with the fewest calls left) and only
//! the outermost rate-limit layer writes the headers, on the way out.
//!
//! **Header keys and anonymous callers.** A `header:NAME` value is the
//! caller's own claim. An authenticated client is accountable for the
//! values it sends (an app passing its end users' ids), so each value has
//! its own bucket. An anonymous caller could invent a fresh value per call,
//! so its calls also pass a second bucket per address (the `ip` key, IPv6
//! grouped by `ipv6_prefix`) shared by every value it sends:
//! `anonymous_per_ip` calls per `window` (default 10 × `limit`, so ten
//! users behind one NAT keep their own rates). Rotating the value then
//! gains at most that.
//!
//! Calls refused by a *later* policy (quota, schema) keep the token they
//! took: the gateway did the work of judging them. `report_only` limits
//! count in their own bucket (keyed by their own name), never refuse, add
//! no headers, and note the would-be refusal in the context.

use http::header::{HeaderName, HeaderValue};
use http::{HeaderMap, Response};
use schemars::JsonSchema;
use serde::Deserialize;
use std::sync::Arc;

use super::registry::PolicyKind;
use super::{CompileCx, LimitKey, PolicyMeta, Saved, Stage, Step};
use crate::body::Body;
use crate::clock::{Nanos, SharedClock};
use crate::config::units::ConfigDuration;
use crate::context::{RateLimitDecision, RequestContext, RoleSet};
use crate::problem::{Code, Reject};
use crate::state::{self, AnyStore, GcraRule, Store, StoreErrorMode, SECOND};

/// `type: rate_limit` — a GCRA rate limit: a bucket of `burst` calls refilled `limit` per
/// `window`; a refused call gets 429 `rate_limited` with `Retry-After`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    /// Calls per `window`, sustained, e.g. `100`.
    pub limit: u64,
    /// The window `limit` refills over, e.g. `1m`.
    pub window: ConfigDuration,
    /// The bucket's size: calls that may pass at once (default: `limit`).
    #[serde(default)]
    pub burst: Option<u64>,
    /// What the limit counts by: `client` (default; the IP when anonymous), `ip`, `global` or
    /// `header:NAME`.
    #[serde(default)]
    pub key: super::LimitKey,
    /// Only callers holding one of these roles are limited, e.g. `[agent]` (default: every caller).
    #[serde(default)]
    pub for_roles: Vec<String>,
    /// IPv6 callers counted by IP are grouped by this prefix.
    #[serde(default = "super::default_ipv6_prefix")]
    pub ipv6_prefix: u8,
    /// With `key: header:NAME`: the calls per `window` one anonymous
    /// address may make whatever values it sends (default 10 × `limit`).
    #[serde(default)]
    pub anonymous_per_ip: Option<u64>,
}

/// `RateLimit-Policy` (IETF httpapi draft): the limit's name, quota and window.
pub const RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
/// `RateLimit` (IETF httpapi draft): the limit's name, remaining calls and reset seconds.
pub const RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");
/// `X-RateLimit-Limit`: the governing limit (the one closest to exhaustion), in calls.
pub const X_RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("x-ratelimit-limit");
/// `X-RateLimit-Remaining`: the calls that would still pass now.
pub const X_RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("x-ratelimit-remaining");
/// `X-RateLimit-Reset`: seconds until the limit is whole again.
pub const X_RATELIMIT_RESET: HeaderName = HeaderName::from_static("x-ratelimit-reset");

/// A compiled `rate_limit` policy.
#[derive(Debug)]
pub struct RateLimit {
    meta: Arc<PolicyMeta>,
    rule: GcraRule,
    limit: u64,
    /// `limit` as a header value, for `X-RateLimit-Limit`.
    limit_header: HeaderValue,
    window_secs: u64,
    /// `"name"`, and the `RateLimit-Policy` value: both fixed per policy.
    quoted_name: Arc<str>,
    policy_header: HeaderValue,
    key: LimitKey,
    ipv6_prefix: u8,
    /// Empty: everyone.
    for_roles: RoleSet,
    /// `key: header:NAME`: the per-address bucket of anonymous callers,
    /// and its limit (for the headers).
    anonymous_per_ip: Option<(GcraRule, u64, HeaderValue)>,
    store: AnyStore,
    clock: SharedClock,
    on_error: StoreErrorMode,
}

impl PolicyKind for RateLimitConfig {
    const TYPE: &'static str = "rate_limit";
    const SCHEMA_NAME: &'static str = "RateLimitPolicy";

    fn compile(&self, meta: &Arc<PolicyMeta>, cx: &mut CompileCx<'_>) -> Option<Vec<Stage>> {
        compile(self, meta, cx)
    }

    fn roles_used(&self) -> Vec<(Vec<String>, &str)> {
        super::registry::listed_roles("for_roles", &self.for_roles).collect()
    }

    fn refusals(&self) -> &'static [Code] {
        &[Code::RateLimited]
    }
}

fn compile(
    config: &RateLimitConfig,
    meta: &Arc<PolicyMeta>,
    cx: &mut CompileCx<'_>,
) -> Option<Vec<Stage>> {
    let mut ok = true;
    if config.limit == 0 {
        cx.error(&["limit"], "a rate limit allows at least 1 call");
        ok = false;
    }
    let window = config.window.0.as_nanos().min(u64::MAX as u128) as Nanos;
    if window == 0 {
        cx.error(&["window"], "the window must be longer than zero");
        ok = false;
    }
    if config.burst == Some(0) {
        cx.error(&["burst"], "a burst of 0 would refuse every call");
        ok = false;
    }
    let errors_before = cx.errors.len();
    let for_roles = cx.role_set("for_roles", &config.for_roles);
    ok &= cx.errors.len() == errors_before;
    ok &= super::check_ipv6_prefix(config.ipv6_prefix, cx);
    ok &= check_anonymous_per_ip(&config.key, config.anonymous_per_ip, cx);
    if !ok {
        return None;
    }
    let anonymous_per_ip = match config.key {
        LimitKey::Header(_) => {
            let n = config
                .anonymous_per_ip
                .unwrap_or(config.limit.saturating_mul(10));
            Some((GcraRule::new(n, window, n), n, n.into()))
        }
        _ => None,
    };
    let burst = config.burst.unwrap_or(config.limit);
    let window_secs = window.div_ceil(SECOND);
    let quoted_name = sf_string(&meta.name);
    // Visible ASCII by construction (sf_string escapes or replaces the rest).
    let policy_header =
        HeaderValue::try_from(format!("{quoted_name};q={};w={window_secs}", config.limit))
            .unwrap_or_else(|_| HeaderValue::from_static("\"?\""));
    let policy = Arc::new(RateLimit {
        meta: meta.clone(),
        rule: GcraRule::new(config.limit, window, burst),
        limit: config.limit,
        limit_header: config.limit.into(),
        window_secs,
        quoted_name: quoted_name.into(),
        policy_header,
        key: config.key.clone(),
        ipv6_prefix: config.ipv6_prefix,
        for_roles,
        anonymous_per_ip,
        store: cx.store.clone(),
        clock: cx.clock.clone(),
        on_error: StoreErrorMode::new(cx.config.state.on_store_error),
    });
    Some(vec![Stage::new(
        super::Phase::RateLimit,
        meta,
        Step::RateLimit(policy),
    )])
}

// === impl RateLimit ===

impl RateLimit {
    fn governs(&self, cx: &RequestContext) -> bool {
        self.for_roles.is_empty() || cx.roles().intersects(self.for_roles)
    }

    /// The per-address bucket an anonymous call keyed by a header value
    /// also passes (see the module doc): its store key, rule and limit.
    fn anonymous_bucket(
        &self,
        headers: &HeaderMap,
        cx: &RequestContext,
    ) -> Option<(String, GcraRule, (u64, &HeaderValue))> {
        let (rule, limit, limit_header) = self.anonymous_per_ip.as_ref()?;
        let key = anonymous_address_key(&self.key, &self.meta.name, self.ipv6_prefix, headers, cx)?;
        Some((key, *rule, (*limit, limit_header)))
    }

    /// Decides one call: `Ok` to go on (the decision recorded in `cx`), or
    /// the refusal.
    async fn judge(
        &self,
        store: &impl Store,
        headers: &HeaderMap,
        cx: &mut RequestContext,
    ) -> Result<(), Reject> {
        let key = self
            .key
            .store_key(&self.meta.name, self.ipv6_prefix, headers, cx);
        let now = self.clock.now();
        let anonymous = self.anonymous_bucket(headers, cx);
        // The address's bucket is looked at first and taken from last, so
        // a call refused by either takes from neither.
        if let Some((ip_key, rule, limit)) = &anonymous {
            let d = match store.gcra(ip_key, *rule, now, false).await {
                Ok(d) => d,
                Err(error) => return self.on_error.handle(&self.meta.name, &error, now),
            };
            if !d.allowed {
                return self.decided(d, *limit, cx);
            }
        }
        let d = match store.gcra(&key, self.rule, now, true).await {
            Ok(d) => d,
            Err(error) => return self.on_error.handle(&self.meta.name, &error, now),
        };
        if let (true, Some((ip_key, rule, limit))) = (d.allowed, &anonymous) {
            let ip = match store.gcra(ip_key, *rule, now, true).await {
                Ok(ip) => ip,
                Err(error) => return self.on_error.handle(&self.meta.name, &error, now),
            };
            // The headers describe whichever is closer to exhaustion.
            if !ip.allowed || ip.remaining < d.remaining {
                return self.decided(ip, *limit, cx);
            }
        }
        self.decided(d, (self.limit, &self.limit_header), cx)
    }

    /// Records decision `d` of a bucket of `limit` calls and turns it into
    /// the verdict.
    fn decided(
        &self,
        d: state::RateDecision,
        (limit, limit_header): (u64, &HeaderValue),
        cx: &mut RequestContext,
    ) -> Result<(), Reject> {
        if self.meta.report_only {
            if !d.allowed {
                tracing::info!(
                    policy = &*self.meta.name,
                    limit,
                    "report-only rate limit would refuse"
                );
                cx.would_reject
                    .push((self.meta.name.clone(), Code::RateLimited));
            }
            return Ok(());
        }
        cx.record_rate_limit(RateLimitDecision {
            policy: self.meta.name.clone(),
            quoted_name: self.quoted_name.clone(),
            policy_header: self.policy_header.clone(),
            limit,
            limit_header: limit_header.clone(),
            remaining: d.remaining,
            reset_secs: state::ceil_secs(d.reset_after),
            window_secs: self.window_secs,
        });
        if d.allowed {
            Ok(())
        } else {
            Err(Reject::new(
                Code::RateLimited,
                "too many calls; retry after the time in Retry-After",
            )
            .with_retry_after(state::ceil_secs(d.retry_after)))
        }
    }
}

/// The store key of the per-address count an anonymous call keyed by a
/// `header:NAME` value also passes (`rate_limit` and `quota`): `None` when
/// the key is not a header, the caller is a client, or the header is
/// missing (the call is then counted by address already).
pub(crate) fn anonymous_address_key(
    key: &LimitKey,
    policy: &str,
    ipv6_prefix: u8,
    headers: &HeaderMap,
    cx: &RequestContext,
) -> Option<String> {
    let LimitKey::Header(name) = key else {
        return None;
    };
    let valued = headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| !v.is_empty());
    if cx.client.is_some() || !valued {
        return None;
    }
    let group = super::IpGroup::of(cx.client_ip, ipv6_prefix);
    Some(state::key(policy, format_args!("anonymous-ip:{group}")))
}

/// Checks `anonymous_per_ip` of a `rate_limit` or `quota`: at least 1, and
/// only with `key: header:NAME`. A mistake is recorded in `cx`.
pub(crate) fn check_anonymous_per_ip(
    key: &LimitKey,
    anonymous_per_ip: Option<u64>,
    cx: &mut CompileCx<'_>,
) -> bool {
    match (key, anonymous_per_ip) {
        (_, Some(0)) => {
            cx.error(&["anonymous_per_ip"], "allow at least 1 call per address");
            false
        }
        (LimitKey::Header(_), _) | (_, None) => true,
        (_, Some(_)) => {
            cx.error(
                &["anonymous_per_ip"],
                "only a limit with `key: header:NAME` has a per-address bound",
            );
            false
        }
    }
}

/// Writes the `RateLimit*` headers of the decision the context kept.
pub(crate) fn write_headers(response: &mut Response<Body>, cx: &mut RequestContext) {
    // Taken, not cloned: the headers are written once, by the first
    // governing limit on the way out; every decision was recorded before.
    let Some(d) = cx.rate_limit.take() else {
        return;
    };
    // Per call only the numbers change; no format machinery on this path.
    // Sized exactly, so the value keeps the string's one allocation.
    let (mut r, mut t) = (itoa::Buffer::new(), itoa::Buffer::new());
    let (r, t) = (r.format(d.remaining), t.format(d.reset_secs));
    let mut value = String::with_capacity(d.quoted_name.len() + 6 + r.len() + t.len());
    value.push_str(&d.quoted_name);
    value.push_str(";r=");
    value.push_str(r);
    value.push_str(";t=");
    value.push_str(t);
    let headers = response.headers_mut();
    headers.insert(RATELIMIT_POLICY, d.policy_header);
    if let Ok(value) = HeaderValue::try_from(value) {
        headers.insert(RATELIMIT, value);
    }
    headers.insert(X_RATELIMIT_LIMIT, d.limit_header);
    headers.insert(X_RATELIMIT_REMAINING, d.remaining.into());
    headers.insert(X_RATELIMIT_RESET, d.reset_secs.into());
}

/// A structured-field String (RFC 8941 §3.3.3): quoted, `"` and `\`
/// escaped; characters it cannot carry become `?`.
pub(crate) fn sf_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            ' '..='~' => out.push(c),
            _ => out.push('?'),
        }
    }
    out.push('"');
    out
}

// === the stage ===

impl RateLimit {
    /// The request half: decides the call if this limit governs it. The
    /// first enforcing limit to govern the call writes the `RateLimit*`
    /// headers on the way out (of the decision closest to exhaustion);
    /// the others only record their decision.
    pub(crate) async fn before(
        &self,
        headers: &HeaderMap,
        cx: &mut RequestContext,
        saved: &mut Saved,
    ) -> Result<(), Reject> {
        if !self.governs(cx) {
            return Ok(());
        }
        if !self.meta.report_only {
            *saved = Saved::RateLimitHeaders;
        }
        match &self.store {
            AnyStore::Memory(memory) => self.judge(&**memory, headers, cx).await,
            // Through `AnyStore`, which wraps each Redis call in its span.
            AnyStore::Redis(_) => self.judge(&self.store, headers, cx).await,
        }
    }

    /// The request half, decided at once when the store is in memory (its
    /// decisions never wait); `None`, having done nothing, otherwise.
    pub(crate) fn before_now(
        &self,
        headers: &HeaderMap,
        cx: &mut RequestContext,
        saved: &mut Saved,
    ) -> Option<Result<(), Reject>> {
        use futures_util::FutureExt as _;
        let AnyStore::Memory(memory) = &self.store else {
            return None;
        };
        if !self.governs(cx) {
            return Some(Ok(()));
        }
        if !self.meta.report_only {
            *saved = Saved::RateLimitHeaders;
        }
        // The memory store answers with ready futures: this completes on
        // its first poll.
        Some(
            self.judge(&**memory, headers, cx)
                .now_or_never()
                .unwrap_or_else(|| {
                    Err(Reject::new(
                        Code::Internal,
                        "the memory store did not decide at once",
                    ))
                }),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::policy::OperationService;
    use http::Request;
    use tower::ServiceExt;

    use crate::policy::testing::{compile_policies, echo_terminal, request};

    const CONFIG: &str = "version: 1\nlisten: 127.0.0.1:0\nroles: [reader, agent]\n";

    fn stack(defs: &str) -> (OperationService, Arc<ManualClock>) {
        let clock = ManualClock::new(1_000 * SECOND);
        let shared: SharedClock = clock.clone();
        let policies =
            compile_policies(CONFIG, defs, &AnyStore::memory(), &shared).expect("compiles");
        (crate::stack::build(&policies, echo_terminal(200)), clock)
    }

    async fn call(svc: &OperationService, req: Request<Body>) -> Response<Body> {
        svc.clone().oneshot(req).await.expect("infallible")
    }

    #[tokio::test]
    async fn for_roles_limits_only_callers_holding_one_of_the_roles() {
        let (svc, _) = stack(
            "agents: {type: rate_limit, limit: 1, window: 1m, key: client, for_roles: [agent]}",
        );
        let agent = RoleSet::EMPTY.with(1);
        let reader = RoleSet::EMPTY.with(0);
        assert_eq!(
            call(&svc, request(Some(("bot", agent)))).await.status(),
            200
        );
        assert_eq!(
            call(&svc, request(Some(("bot", agent)))).await.status(),
            429
        );
        for _ in 0..3 {
            let r = call(&svc, request(Some(("human", reader)))).await;
            assert_eq!(r.status(), 200);
            assert!(r.headers().get("ratelimit").is_none());
        }
        // Anonymous callers hold no role: untouched too.
        assert_eq!(call(&svc, request(None)).await.status(), 200);
    }

    #[tokio::test]
    async fn client_keys_count_per_client_and_fall_back_to_the_ip() {
        let (svc, _) = stack("per-client: {type: rate_limit, limit: 1, window: 1m}");
        let none = RoleSet::EMPTY;
        assert_eq!(call(&svc, request(Some(("a", none)))).await.status(), 200);
        assert_eq!(call(&svc, request(Some(("b", none)))).await.status(), 200);
        assert_eq!(call(&svc, request(Some(("a", none)))).await.status(), 429);
        assert_eq!(call(&svc, request(None)).await.status(), 200);
        assert_eq!(call(&svc, request(None)).await.status(), 429);
    }

    #[tokio::test]
    async fn with_two_limits_the_headers_describe_the_one_closest_to_exhaustion() {
        let (svc, _) = stack(
            "wide: {type: rate_limit, limit: 100, window: 1m, key: global}\n\
             narrow: {type: rate_limit, limit: 3, window: 1m, key: ip}",
        );
        let r = call(&svc, request(None)).await;
        assert_eq!(r.headers()["ratelimit-policy"], "\"narrow\";q=3;w=60");
        assert_eq!(r.headers()["ratelimit"], "\"narrow\";r=2;t=20");
        assert_eq!(r.headers().get_all("ratelimit").iter().count(), 1);
        assert_eq!(r.headers()["x-ratelimit-remaining"], "2");
    }

    #[tokio::test]
    async fn report_only_limits_never_refuse_and_note_the_would_be_refusal() {
        let (svc, _) = stack("trial: {type: rate_limit, limit: 1, window: 1m, report_only: true}");
        for i in 0..3 {
            let r = call(&svc, request(None)).await;
            assert_eq!(r.status(), 200);
            assert!(r.headers().get("ratelimit").is_none());
            let cx = r.extensions().get::<RequestContext>().expect("cx");
            assert_eq!(cx.would_reject.len(), usize::from(i > 0));
        }
    }

    #[test]
    fn bad_limits_and_unknown_roles_are_config_errors() {
        let clock: SharedClock = ManualClock::new(0);
        let errors = compile_policies(
            CONFIG,
            "a: {type: rate_limit, limit: 0, window: 0s, burst: 0, for_roles: [nobody]}",
            &AnyStore::memory(),
            &clock,
        )
        .err()
        .expect("errors");
        assert_eq!(errors.len(), 4, "{errors:?}");
        assert!(errors
            .iter()
            .any(|e| e.starts_with("for_roles.0: role `nobody` is not declared")));
    }

    #[test]
    fn header_keys_fall_back_to_the_ip_when_the_header_is_missing() {
        let req = request(None);
        let cx = req.extensions().get::<RequestContext>().expect("cx");
        let key = LimitKey::Header(HeaderName::from_static("x-user"));
        let mut headers = HeaderMap::new();
        let of = |key: &LimitKey, headers: &HeaderMap| key.store_key("p", 64, headers, cx);
        assert_eq!(of(&key, &headers), "p:ip:192.0.2.1");
        headers.insert("x-user", HeaderValue::from_static("ann"));
        // The value is hashed (it may be a credential), stably.
        let ann = of(&key, &headers);
        assert_eq!(ann, "p:header:49915e0d7d4b402e3017d010bc1c0e83");
        headers.insert("x-user", HeaderValue::from_static("bob"));
        assert_ne!(of(&key, &headers), ann);
        assert_eq!(of(&LimitKey::Global, &headers), "p:global");
    }

    #[test]
    fn ip_keys_group_ipv6_callers_by_the_prefix() {
        let mut req = request(None);
        let cx = req
            .extensions_mut()
            .get_mut::<RequestContext>()
            .expect("cx");
        cx.client_ip = "2001:db8:1:2:aaaa::1".parse().expect("ip");
        let none = HeaderMap::new();
        for key in [LimitKey::Ip, LimitKey::Client] {
            assert_eq!(key.store_key("p", 64, &none, cx), "p:ip:2001:db8:1:2::/64");
            assert_eq!(key.store_key("p", 48, &none, cx), "p:ip:2001:db8:1::/48");
            assert_eq!(
                key.store_key("p", 128, &none, cx),
                "p:ip:2001:db8:1:2:aaaa::1/128"
            );
        }
    }

    #[test]
    fn policy_names_are_quoted_as_structured_field_strings() {
        assert_eq!(sf_string("a\"b\\c"), "\"a\\\"b\\\\c\"");
        assert_eq!(sf_string("é"), "\"?\"");
    }
}
