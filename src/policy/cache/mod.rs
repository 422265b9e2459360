//! Response cache: answers repeated `GET`/`HEAD` calls from memory, so a
//! workflow runs once per `ttl` instead of once per call.
//!
//! ```yaml
//! directory-cache:
//!   type: cache
//!   ttl: 30s              # how long an answer is served; Cache-Control max-age/s-maxage lower it
//!   vary: [Accept-Language]   # request headers that select a different answer
//!   max_size: 64MiB       # memory for this policy's entries (default 64MiB)
//!   max_entry_size: 1MiB  # larger answers stream through unstored (default min(1MiB, max_size))
//!   shared: false         # true: one entry serves every caller
//! ```
//!
//! It runs after `rate_limit` and before `quota` (phase `Cache`): a hit
//! still spends a rate-limit token, but takes no quota unit and runs no
//! workflow, and nothing inside it (request schema, header rewrites, the
//! proxy) runs for a hit.
//!
//! **Who sees an entry.** By default entries belong to one caller: the key
//! holds the authenticated client id, or the client IP for anonymous
//! calls, so one caller's answer is never served to another. `shared:
//! true` serves one entry to every caller that gets past the policies
//! before the cache (auth, roles, limits judge every call, hits included).
//! The rest of the key: the API and operation, the normalised public path
//! and query (as sent; `?a=1&b=2` and `?b=2&a=1` are two entries), the
//! upstream URL, the values of the `vary` headers, and what the upstream is
//! told of the address the caller used — the `X-Forwarded-Host` it receives
//! (the request's `Host`, or a trusted proxy's `X-Forwarded-Host`) and
//! `X-Forwarded-Proto` — so a caller sending `Host: evil.example` only ever
//! fills the entry of `evil.example`. `HEAD` is answered from a stored
//! `GET`; it is never stored itself.
//!
//! Other forwarding headers frameworks build links from (`Forwarded`,
//! `X-Forwarded-Port/Prefix/Scheme/Server/Ssl`, `X-Original-Host`,
//! `X-Host`, `X-Url-Scheme`, `Front-End-Https`: a trusted proxy's, or a
//! caller's where the config lets them through) are part of the key too.
//!
//! **Overrides bypass it.** Headers that make frameworks answer as another
//! method or URL (`X-HTTP-Method-Override`, `X-HTTP-Method`,
//! `X-Method-Override`, `X-Original-Method`, `X-Original-URL`,
//! `X-Rewrite-URL`) or a `_method` query parameter: the gateway removes
//! the headers on arrival unless the config allows them, and where it lets
//! one through, that request is neither answered from the cache nor stored.
//!
//! **What is stored.** Only answers the upstream gave (never the gateway's
//! own refusals or 502/504s), with a status RFC 9110 §15.1 calls
//! heuristically cacheable (200, 203, 204, 300, 301, 308, 404, 405, 410,
//! 414, 501), and not when the upstream says otherwise:
//! - `Cache-Control: no-store` or `no-cache`: not stored (the cache does no
//!   conditional revalidation, so "revalidate before each reuse" means
//!   "do not reuse");
//! - `private`: stored only when entries are per caller (`shared: false`)
//!   and the caller is an authenticated client — the entry is then only
//!   ever served to that same identity, the one the upstream answered (it
//!   saw it in `X-Tollgate-Client`). Never in a shared cache, and never for
//!   anonymous callers, whose key is an address that many people may share;
//! - `max-age` / `s-maxage` (`s-maxage` first: this is a gateway) lower
//!   the `ttl`, minus any `Age` the upstream reported; `Expires` is not read;
//! - `Vary` naming a header not in this policy's `vary` (or `Vary: *`),
//!   and any `Set-Cookie`: not stored.
//!
//! A caller's `Cache-Control: no-cache` (or `max-age=0`, or `Pragma:
//! no-cache`) skips the lookup and stores the fresh answer; `no-store`
//! keeps its answer out of the cache. `GET`s with a body are passed
//! through untouched. Answers carry `X-Cache: HIT` or `MISS`; hits carry
//! `Age` in seconds.
//!
//! **Memory.** The body streams to the caller as it arrives and is copied
//! aside on the way; once it is complete it is stored, if the entry (body,
//! header names and values, key, and a fixed overhead) fits
//! `max_entry_size` — past that the copy is dropped and the answer just
//! streams on. Entries live in a `moka` cache weighed by those bytes and
//! bounded by `max_size` (admission by frequency, so a crawl of many
//! one-off URLs does not push out the hot entries). Copies in progress
//! share a second budget of `max_size`, so memory stays under twice
//! `max_size` however many misses run at once.
//!
//! **Reloads.** A policy keeps its entries across a reload only when the
//! reloaded config is the same as before (a SIGHUP, a renewed TLS
//! certificate under `reload: watch`); any config change starts it empty,
//! because a stored answer has the upstream, response header rewrites and
//! response schema of the config it was stored under baked in.
//!
//! `report_only: true` looks up and stores as usual and counts hits and
//! misses, but forwards every call and adds no header: the would-be hit
//! ratio, measured on live traffic.

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::{Method, Response};
use http_body::Body as HttpBody;
use http_body_util::BodyExt;

use schemars::JsonSchema;
use serde::Deserialize;
use std::sync::Arc;

use super::registry::PolicyKind;
use super::{CompileCx, PolicyMeta, Saved, Stage, Step, Stop};
use crate::body::{self, Body};
use crate::clock::{Nanos, SharedClock};
use crate::config::schema::Config;
use crate::config::units::{ByteSize, ConfigDuration};
use crate::context::RequestContext;
use crate::header_names::{X_FORWARDED_HOST, X_FORWARDED_PROTO, X_REQUEST_ID};
use crate::problem::RejectedWith;
use crate::state::SECOND;

mod cache_control;
mod key;
mod recording;
mod store;

use crate::body::tee::Tee;
use cache_control::{allowed, asked};
use key::{forwarding_values, overrides_method_or_url, Audience, CacheKey, Entry, ForwardedProto};
use recording::{Capture, CopyAside};
pub use store::{CacheRegistry, CacheStore};

/// `type: cache` — serves repeated `GET`/`HEAD` answers from memory for `ttl`, one entry per
/// caller unless `shared`; answers carry `X-Cache: HIT` or `MISS`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CacheConfig {
    /// How long an answer is served from the cache. The upstream's
    /// `Cache-Control: max-age` / `s-maxage` can only lower it.
    pub ttl: ConfigDuration,
    /// Request headers whose values select a different entry.
    #[serde(default)]
    pub vary: Vec<String>,
    /// Memory for this policy's entries (default 64MiB).
    #[serde(default = "default_max_size")]
    pub max_size: ByteSize,
    /// The largest entry stored (default: 1MiB, or `max_size` if smaller).
    #[serde(default)]
    pub max_entry_size: Option<ByteSize>,
    /// One entry for every caller (default: one per client, or per IP for
    /// anonymous callers).
    #[serde(default)]
    pub shared: bool,
}

fn default_max_size() -> ByteSize {
    ByteSize(64 << 20)
}

/// `X-Cache: HIT | MISS` on every answer of an enforcing cache.
pub const X_CACHE: HeaderName = HeaderName::from_static("x-cache");

/// Put in a response's extensions when the cache answered it, so usage
/// metering counts the hit.
#[derive(Debug, Clone, Copy)]
pub struct CacheHit;

/// What an entry weighs beyond its bytes: moka's node, the `HeaderMap`
/// and `Arc`s. An estimate, so that many tiny entries cannot outgrow
/// `max_size` through overheads the bytes do not show.
const ENTRY_OVERHEAD: u64 = 256;

/// Statuses stored (RFC 9110 §15.1 heuristically cacheable, but 206: a
/// partial answer is one range, not the resource).
const CACHEABLE: [u16; 11] = [200, 203, 204, 300, 301, 308, 404, 405, 410, 414, 501];

/// A compiled `cache` policy.
pub struct Cache {
    meta: Arc<PolicyMeta>,
    ttl: Nanos,
    vary: Vec<HeaderName>,
    shared: bool,
    max_entry: u64,
    store: Arc<CacheStore>,
    clock: SharedClock,
}

impl PolicyKind for CacheConfig {
    const TYPE: &'static str = "cache";
    const SCHEMA_NAME: &'static str = "CachePolicy";

    fn compile(&self, meta: &Arc<PolicyMeta>, cx: &mut CompileCx<'_>) -> Option<Vec<Stage>> {
        compile(self, meta, cx)
    }
}

fn compile(
    config: &CacheConfig,
    meta: &Arc<PolicyMeta>,
    cx: &mut CompileCx<'_>,
) -> Option<Vec<Stage>> {
    let mut ok = true;
    let ttl = config.ttl.0.as_nanos().min(u64::MAX as u128) as Nanos;
    if ttl < SECOND {
        // `Age` and `max-age` count whole seconds.
        cx.error(&["ttl"], "the ttl must be at least 1s");
        ok = false;
    }
    let mut vary = Vec::new();
    for (i, name) in config.vary.iter().enumerate() {
        match HeaderName::from_bytes(name.trim().as_bytes()) {
            Ok(name) => vary.push(name),
            Err(_) => {
                cx.error(
                    &["vary", &i.to_string()],
                    format!("`{name}` is not a header name"),
                );
                ok = false;
            }
        }
    }
    let max_size = config.max_size.0;
    let max_entry = config.max_entry_size.map_or(max_size.min(1 << 20), |s| s.0);
    // Point at the key the user wrote (the default follows `max_size`).
    let at: &[&str] = if config.max_entry_size.is_some() {
        &["max_entry_size"]
    } else {
        &["max_size"]
    };
    if max_entry > max_size {
        cx.error(
            at,
            format!("an entry cannot be larger than `max_size` ({max_size} bytes)"),
        );
        ok = false;
    } else if max_entry > u64::from(u32::MAX) {
        cx.error(at, "an entry can be at most 4GiB");
        ok = false;
    } else if max_entry <= ENTRY_OVERHEAD {
        cx.error(
            at,
            format!("too small to hold an entry: each weighs its bytes plus {ENTRY_OVERHEAD}"),
        );
        ok = false;
    }
    if !ok {
        return None;
    }
    let store = cx
        .caches
        .store(&meta.name, fingerprint(cx.config), max_size);
    let policy = Arc::new(Cache {
        meta: meta.clone(),
        ttl,
        vary,
        shared: config.shared,
        max_entry,
        store,
        clock: cx.clock.clone(),
    });
    Some(vec![Stage::new(
        super::Phase::Cache,
        meta,
        Step::Cache(policy),
    )])
}

/// A hash of the whole config: a reload keeps a policy's entries only
/// when it is unchanged (see the module doc).
fn fingerprint(config: &Config) -> u64 {
    use std::fmt::Write as _;
    use std::hash::Hasher as _;
    struct HashWriter(std::collections::hash_map::DefaultHasher);
    impl std::fmt::Write for HashWriter {
        fn write_str(&mut self, s: &str) -> std::fmt::Result {
            self.0.write(s.as_bytes());
            Ok(())
        }
    }
    let mut w = HashWriter(Default::default());
    let _ = write!(w, "{config:?}");
    w.0.finish()
}

// === impl Cache ===

impl Cache {
    fn key(&self, req: &http::request::Parts, cx: &RequestContext) -> Option<CacheKey> {
        let upstream = cx.upstream.as_ref()?;
        let op = cx.operation.as_ref()?;
        let audience = match (&cx.client, self.shared) {
            (_, true) => Audience::Everyone,
            (Some(client), false) => Audience::Client(client.id.clone()),
            (None, false) => Audience::Address(cx.client_ip),
        };
        if overrides_method_or_url(&req.headers, &req.uri) {
            return None;
        }
        // The same choice the proxy makes when it sets the headers:
        // forwarding headers still present came from a trusted proxy
        // (others were removed on arrival).
        let headers = &req.headers;
        let forwarded_host = headers
            .get(X_FORWARDED_HOST)
            .or_else(|| headers.get(header::HOST))
            .cloned()
            .or_else(|| {
                req.uri
                    .authority()
                    .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
            });
        let forwarded_proto = match headers.get(X_FORWARDED_PROTO) {
            Some(told) => ForwardedProto::Told(told.clone()),
            None if cx.tls => ForwardedProto::Https,
            None => ForwardedProto::Http,
        };
        Some(CacheKey {
            audience,
            api: op.api.clone(),
            operation: op.id.clone(),
            target: req
                .uri
                .path_and_query()
                .map_or_else(|| req.uri.path().to_string(), |pq| pq.as_str().to_string()),
            upstream: upstream.to_string(),
            forwarded_host,
            forwarded_proto,
            forwarding: forwarding_values(headers),
            vary: self
                .vary
                .iter()
                .map(|name| req.headers.get_all(name).iter().cloned().collect())
                .collect(),
        })
    }

    /// Whether `response` may be stored under `key`, and if so the entry
    /// to fill once its body is complete. `Err` says why not (for the log).
    fn plan(
        &self,
        key: &CacheKey,
        response: &Response<Body>,
        requested_at: Nanos,
        received_at: Nanos,
    ) -> Result<Entry, &'static str> {
        if response.extensions().get::<RejectedWith>().is_some() {
            return Err("answered by the gateway, not the upstream");
        }
        if !CACHEABLE.contains(&response.status().as_u16()) {
            return Err("status is not cacheable");
        }
        let headers = response.headers();
        let allowed = allowed(headers);
        if allowed.no_store || allowed.no_cache {
            return Err("Cache-Control: no-store or no-cache");
        }
        if allowed.private && !matches!(key.audience, Audience::Client(_)) {
            return Err("Cache-Control: private, and the entry is not one client's");
        }
        if headers.contains_key(header::SET_COOKIE) {
            return Err("Set-Cookie");
        }
        let varies_by_more = headers
            .get_all(header::VARY)
            .iter()
            .filter_map(|v| v.to_str().ok().or(Some("*")))
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|name| !name.is_empty())
            .any(|name| {
                name == "*"
                    || !self
                        .vary
                        .iter()
                        .any(|v| v.as_str().eq_ignore_ascii_case(name))
            });
        if varies_by_more {
            return Err("Vary names a header the policy's `vary` does not list");
        }
        let upstream_age = headers
            .get(header::AGE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(0);
        let initial_age = upstream_age
            .saturating_mul(SECOND)
            .saturating_add(received_at.saturating_sub(requested_at));
        let lifetime = match allowed.max_age {
            Some(secs) => self.ttl.min(secs.saturating_mul(SECOND)),
            None => self.ttl,
        };
        if initial_age >= lifetime {
            return Err("already stale when received");
        }
        let mut stored = headers.clone();
        for name in [X_REQUEST_ID, header::AGE, X_CACHE, header::CONTENT_LENGTH] {
            stored.remove(name);
        }
        let header_bytes: usize = stored
            .iter()
            .map(|(name, value)| name.as_str().len() + value.len())
            .sum();
        let fixed = ENTRY_OVERHEAD + key.bytes() + header_bytes as u64;
        let declared = http_body::Body::size_hint(response.body()).lower();
        if fixed.saturating_add(declared) > self.max_entry {
            return Err("larger than max_entry_size");
        }
        Ok(Entry {
            status: response.status(),
            headers: stored,
            body: Bytes::new(),
            stored_at: received_at,
            initial_age,
            lifetime,
            weight: fixed as u32,
        })
    }

    /// Wraps a storable answer's body so it is copied aside as it streams
    /// and stored once complete.
    fn record(
        &self,
        key: CacheKey,
        response: Response<Body>,
        requested_at: Nanos,
        received_at: Nanos,
    ) -> Response<Body> {
        let entry = match self.plan(&key, &response, requested_at, received_at) {
            Ok(entry) => entry,
            Err(reason) => {
                tracing::debug!(policy = &*self.meta.name, reason, "answer not cached");
                return response;
            }
        };
        let room = self.max_entry - u64::from(entry.weight);
        let (head, inner) = response.into_parts();
        let expected = inner.size_hint().lower().min(room) as usize;
        let copy = CopyAside(Some(Capture {
            store: self.store.clone(),
            key: Arc::new(key),
            entry,
            buf: Vec::with_capacity(0),
            expected,
            room,
            reserved: 0,
        }));
        Response::from_parts(head, Tee::new(inner, copy).boxed_unsync())
    }
}

// === the stage ===

/// A miss on its way to the upstream: what its answer is recorded under.
pub struct Miss {
    key: CacheKey,
    requested_at: Nanos,
    head_only: bool,
    no_store: bool,
    enforce: bool,
}

impl Cache {
    /// The request half: a fresh entry answers the call (report-only: it
    /// is counted as a hit and the call goes on, so the would-be hit ratio
    /// is the real one); a miss is kept in `saved` to record the answer.
    /// Only reads without a body are cacheable; everything else passes.
    pub(crate) fn before(
        &self,
        parts: &http::request::Parts,
        body: &Body,
        cx: &RequestContext,
        saved: &mut Saved,
    ) -> Result<(), Stop> {
        let head_only = parts.method == Method::HEAD;
        if !(head_only || parts.method == Method::GET) || !body.is_end_stream() {
            return Ok(());
        }
        let Some(key) = self.key(parts, cx) else {
            return Ok(());
        };
        let asked = asked(&parts.headers);
        let enforce = !self.meta.report_only;
        let now = self.clock.now();
        if !asked.revalidate {
            if let Some(entry) = self.store.entries.get(&key) {
                if entry.is_fresh_at(now) {
                    self.store.metrics.hits.inc();
                    if !enforce {
                        return Ok(());
                    }
                    return Err(Stop::Answer(Box::new(entry.respond(head_only, now))));
                }
                self.store.remove(&key);
            }
        }
        self.store.metrics.misses.inc();
        *saved = Saved::CacheMiss(Box::new(Miss {
            key,
            requested_at: now,
            head_only,
            no_store: asked.no_store,
            enforce,
        }));
        Ok(())
    }

    /// The response half of a miss: `HEAD` answers have no body to store;
    /// `GET` ones may be, as their body streams to the caller.
    pub(crate) fn after(&self, response: &mut Response<Body>, miss: Miss) {
        if !miss.head_only && !miss.no_store {
            let received_at = self.clock.now();
            let taken = std::mem::replace(response, Response::new(body::empty()));
            *response = self.record(miss.key, taken, miss.requested_at, received_at);
        }
        if miss.enforce {
            response
                .headers_mut()
                .insert(X_CACHE, HeaderValue::from_static("MISS"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::cache_control::Allowed;
    use super::recording::empty_entry;
    use super::*;
    use crate::body::BodyError;
    use crate::clock::ManualClock;
    use crate::context::OperationInfo;
    use crate::metrics::CacheMetrics;
    use crate::policy::testing::{compile_policies, request};
    use crate::policy::OperationService;
    use crate::state::AnyStore;
    use http::HeaderMap;
    use http::Request;
    use http_body::Frame;
    use std::sync::atomic::AtomicUsize;
    use std::sync::atomic::Ordering;
    use std::time::Duration;
    use tower::ServiceExt;

    /// An operation stack with one `cache` policy (`options` are its YAML
    /// fields) over a terminal that streams `chunks` bytes, frame by frame
    /// with no declared length, counting the calls it answers.
    fn streaming_stack(
        options: &str,
        chunks: Vec<&'static [u8]>,
    ) -> (OperationService, Arc<AtomicUsize>) {
        let clock: SharedClock = ManualClock::new(1_000 * SECOND);
        let policies = compile_policies(
            "version: 1\nlisten: 127.0.0.1:0\n",
            &format!("c: {{type: cache, {options}}}"),
            &AnyStore::memory(),
            &clock,
        )
        .expect("compiles");
        let calls = Arc::new(AtomicUsize::new(0));
        let counted = calls.clone();
        let terminal = OperationService::new(tower::service_fn(move |req: Request<Body>| {
            counted.fetch_add(1, Ordering::SeqCst);
            let chunks = chunks.clone();
            async move {
                let frames = futures_util::stream::iter(
                    chunks
                        .into_iter()
                        .map(|c| Ok::<_, BodyError>(Frame::data(Bytes::from_static(c)))),
                );
                let mut response =
                    Response::new(http_body_util::StreamBody::new(frames).boxed_unsync());
                let (mut parts, _) = req.into_parts();
                if let Some(cx) = parts.extensions.remove::<RequestContext>() {
                    response.extensions_mut().insert(cx);
                }
                Ok(response)
            }
        }));
        (crate::stack::build(&policies, terminal), calls)
    }

    fn get() -> Request<Body> {
        let mut req = request(None);
        *req.uri_mut() = http::Uri::from_static("/things/1");
        if let Some(cx) = req.extensions_mut().get_mut::<RequestContext>() {
            cx.operation = Some(Arc::new(OperationInfo {
                api: "a".into(),
                id: "getThing".into(),
                header_value: HeaderValue::from_static("getThing"),
                cost: Default::default(),
            }));
            cx.upstream = Some(http::Uri::from_static("http://upstream.test/things/1"));
        }
        req
    }

    async fn call(svc: &OperationService) -> Response<Body> {
        svc.clone().oneshot(get()).await.expect("infallible")
    }

    fn x_cache(r: &Response<Body>) -> Option<&str> {
        r.headers().get(X_CACHE).and_then(|v| v.to_str().ok())
    }

    #[tokio::test]
    async fn a_streamed_answer_is_stored_once_complete_and_not_before() {
        let (svc, calls) = streaming_stack("ttl: 1m", vec![b"abc", b"def", b"ghi"]);
        let first = call(&svc).await;
        assert_eq!(x_cache(&first), Some("MISS"));
        // Still streaming: nothing stored yet.
        assert_eq!(x_cache(&call(&svc).await), Some("MISS"));
        let body = first.into_body().collect().await.expect("body").to_bytes();
        assert_eq!(body, "abcdefghi");
        let hit = call(&svc).await;
        assert_eq!(x_cache(&hit), Some("HIT"));
        let body = hit.into_body().collect().await.expect("body").to_bytes();
        assert_eq!(body, "abcdefghi");
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_streamed_answer_growing_past_max_entry_size_passes_whole_and_is_not_stored() {
        let chunk: &'static [u8] = &[b'x'; 400];
        let (svc, calls) = streaming_stack(
            "ttl: 1m, max_size: 4KiB, max_entry_size: 1KiB",
            vec![chunk; 5],
        );
        for _ in 0..2 {
            let r = call(&svc).await;
            assert_eq!(x_cache(&r), Some("MISS"));
            let body = r.into_body().collect().await.expect("body").to_bytes();
            assert_eq!(body.len(), 2000);
        }
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn an_answer_the_caller_leaves_half_read_is_not_stored() {
        let (svc, calls) = streaming_stack("ttl: 1m", vec![b"abc", b"def"]);
        let mut first = call(&svc).await;
        let frame = first.body_mut().frame().await;
        assert!(matches!(frame, Some(Ok(_))));
        drop(first);
        assert_eq!(x_cache(&call(&svc).await), Some("MISS"));
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                HeaderName::from_static(name),
                HeaderValue::from_static(value),
            );
        }
        map
    }

    #[test]
    fn upstream_directives_are_read_from_every_cache_control_field() {
        let a = allowed(&headers(&[
            ("cache-control", "public, max-age=60"),
            ("cache-control", "S-MaxAge=\"20\""),
        ]));
        assert_eq!(
            a,
            Allowed {
                max_age: Some(20),
                ..Allowed::default()
            }
        );
        let a = allowed(&headers(&[("cache-control", "private=\"x\", no-cache")]));
        assert!(a.private && a.no_cache && !a.no_store);
        // A max-age that does not parse makes the answer stale at once.
        let a = allowed(&headers(&[("cache-control", "max-age=soon")]));
        assert_eq!(a.max_age, Some(0));
    }

    #[test]
    fn callers_ask_to_revalidate_with_no_cache_max_age_zero_or_pragma() {
        let revalidate = |pairs| asked(&headers(pairs)).revalidate;
        assert!(revalidate(&[("cache-control", "no-cache")]));
        assert!(revalidate(&[("cache-control", "max-age=0")]));
        assert!(revalidate(&[("pragma", "no-cache")]));
        // Pragma is ignored when Cache-Control is present.
        assert!(!revalidate(&[
            ("cache-control", "max-age=5"),
            ("pragma", "no-cache")
        ]));
        assert!(!revalidate(&[]));
        assert!(asked(&headers(&[("cache-control", "no-store")])).no_store);
    }

    #[test]
    fn an_entry_is_fresh_until_its_age_reaches_its_lifetime() {
        let entry = Entry {
            stored_at: 100 * SECOND,
            initial_age: 5 * SECOND,
            lifetime: 30 * SECOND,
            ..empty_entry()
        };
        assert!(entry.is_fresh_at(100 * SECOND));
        assert_eq!(entry.age_at(110 * SECOND), 15 * SECOND);
        assert!(entry.is_fresh_at(124 * SECOND));
        assert!(!entry.is_fresh_at(125 * SECOND));
        assert_eq!(entry.fresh_for(), Duration::from_secs(25));
    }

    #[test]
    fn method_and_url_overrides_are_spotted_by_header_or_query() {
        let with = |uri: &'static str, pairs: &[(&'static str, &'static str)]| {
            let mut req = Request::new(body::empty());
            *req.uri_mut() = http::Uri::from_static(uri);
            *req.headers_mut() = headers(pairs);
            overrides_method_or_url(req.headers(), req.uri())
        };
        assert!(!with("/a?b=1", &[("accept", "*/*")]));
        assert!(with("/a", &[("x-http-method-override", "DELETE")]));
        assert!(with("/a", &[("x-original-url", "/admin")]));
        assert!(with("/a?x=1&_method=DELETE", &[]));
        assert!(with("/a?%5fmethod=DELETE", &[]));
        assert!(!with("/a?not_method=1", &[]));
    }

    #[test]
    fn forwarding_headers_are_keyed_in_a_fixed_order() {
        let a = forwarding_values(&headers(&[
            ("x-forwarded-prefix", "/p"),
            ("forwarded", "host=a"),
        ]));
        let b = forwarding_values(&headers(&[
            ("forwarded", "host=a"),
            ("x-forwarded-prefix", "/p"),
        ]));
        assert_eq!(a, b);
        assert_eq!(a.len(), 2);
        assert!(forwarding_values(&headers(&[("accept", "*/*")])).is_empty());
    }

    #[test]
    fn copies_in_progress_share_one_budget() {
        let store = CacheStore::new(10, CacheMetrics::default());
        assert!(store.reserve(6));
        assert!(!store.reserve(5));
        store.release(6);
        assert!(store.reserve(10));
    }
}
