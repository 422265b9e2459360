//! Token signing keys fetched from the identity provider (`jwt.jwks_url`)
//! and kept fresh while the IdP rotates them.
//!
//! ```yaml
//! jwt:
//!   issuer: https://idp.example.com
//!   algorithms: [RS256]
//!   jwks_url: https://idp.example.com/.well-known/jwks.json
//! ```
//!
//! A [`JwksSource`] holds the last good key set of one URL. It lives in
//! the [`JwksRegistry`] of `Deps`, so a reload that keeps the URL keeps the
//! keys (and fetches nothing). It fetches:
//!
//! - at start (`app::start` calls [`JwksRegistry::prefetch`]) — in the
//!   background: the gateway starts even when the IdP is down, so API-key
//!   traffic never waits for it; until a set arrives tokens are refused
//!   with 401 `invalid_credentials` ("the token signing keys are not
//!   available yet");
//! - when the set is older than the response's `Cache-Control: max-age`
//!   (bounded to [`MIN_REFRESH`]..=[`MAX_REFRESH`], [`DEFAULT_REFRESH`]
//!   without one): the request that notices starts a background refresh
//!   and is judged with the current keys, never waiting;
//! - when a token names a key (`kid`) the set lacks: that request waits for
//!   one fetch, but such fetches happen at most once per
//!   [`UNKNOWN_KID_EVERY`] (and not within that time of any other fetch),
//!   so tokens with random `kid`s cannot turn the gateway into a load
//!   generator against the IdP.
//!
//! Every fetch has a deadline ([`FETCH_TIMEOUT`]) and a size bound
//! ([`MAX_JWKS_BYTES`]); one runs at a time. A failed fetch (error status,
//! timeout, not a JWK set, no usable key) changes nothing: the last good
//! keys stay in use and the next try is [`MIN_REFRESH`] later. Time is the
//! injected clock's, so tests need no sleeps.

use arc_swap::ArcSwap;
use http::header::{ACCEPT, CACHE_CONTROL};
use http::{HeaderValue, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Limited};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use super::{parse_jwk_set, JwtKey};
use crate::clock::{Nanos, SharedClock};
use crate::proxy::UpstreamClients;

/// The shortest time a fetched set is kept before a refresh, whatever the
/// IdP says (also the wait after a failed fetch).
pub const MIN_REFRESH: Duration = Duration::from_secs(30);
/// The longest time a fetched set is kept, whatever the IdP says.
pub const MAX_REFRESH: Duration = Duration::from_secs(24 * 3600);
/// How long a set is kept when the response has no `max-age`.
pub const DEFAULT_REFRESH: Duration = Duration::from_secs(5 * 60);
/// At most one fetch per this interval for tokens naming an unknown key.
pub const UNKNOWN_KID_EVERY: Duration = Duration::from_secs(10);
/// The deadline of one fetch, head and body.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest JWK set accepted.
pub const MAX_JWKS_BYTES: usize = 1024 * 1024;

/// The key sets of every `jwks_url` in use, by URL. Lives in `Deps`: a
/// source stays while any compiled gateway uses its URL.
pub struct JwksRegistry {
    client: Arc<UpstreamClients>,
    clock: SharedClock,
    sources: Mutex<HashMap<String, Weak<JwksSource>>>,
}

/// The last good key set of one URL, and when to fetch it again.
pub struct JwksSource {
    url: Uri,
    client: Arc<UpstreamClients>,
    clock: SharedClock,
    keys: ArcSwap<Vec<JwtKey>>,
    schedule: Mutex<Schedule>,
    /// Held while fetching: one fetch at a time.
    fetching: tokio::sync::Mutex<()>,
    /// Fetches completed (good or not), so a caller that waited for
    /// another's fetch does not repeat it.
    generation: AtomicU64,
}

#[derive(Debug, Default)]
struct Schedule {
    /// When the set is stale (0: no set yet).
    refresh_at: Nanos,
    /// The last fetch made for an unknown `kid`.
    unknown_kid_fetch: Option<Nanos>,
    /// When the last fetch (of any kind, good or not) ended.
    fetched_at: Option<Nanos>,
    /// A background refresh is under way.
    refreshing: bool,
}

/// A `jwks_url`: http(s) with a host. Plain http only to a loopback host
/// (a sidecar, a test): keys fetched in the clear could be replaced by
/// anyone on the path, and with them every token.
pub fn parse_url(url: &str) -> Result<Uri, String> {
    let uri: Uri = url
        .parse()
        .map_err(|_| format!("`{url}` is not a URL like https://idp.example.com/jwks.json"))?;
    let host = uri
        .host()
        .ok_or_else(|| format!("`{url}` has no host"))?
        .trim_start_matches('[')
        .trim_end_matches(']');
    match uri.scheme_str() {
        Some("https") => Ok(uri),
        Some("http") => {
            let loopback =
                host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
            if loopback {
                Ok(uri)
            } else {
                Err(format!(
                    "`{url}`: keys are fetched over https (plain http only from a loopback address)"
                ))
            }
        }
        _ => Err(format!("`{url}`: only https (or loopback http) URLs")),
    }
}

// === impl JwksRegistry ===

impl JwksRegistry {
    /// An empty registry fetching JWK sets through `client`, judging freshness by `clock`.
    pub fn new(client: Arc<UpstreamClients>, clock: SharedClock) -> Arc<JwksRegistry> {
        Arc::new(JwksRegistry {
            client,
            clock,
            sources: Mutex::default(),
        })
    }

    /// The source of `url`: the one already in use if a gateway holds it
    /// (a reload keeps its keys), else a new one with no keys yet.
    pub fn source(&self, url: Uri) -> Arc<JwksSource> {
        let mut sources = self.sources.lock();
        sources.retain(|_, source| source.strong_count() > 0);
        let name = url.to_string();
        if let Some(source) = sources.get(&name).and_then(Weak::upgrade) {
            return source;
        }
        let source = Arc::new(JwksSource {
            url,
            client: self.client.clone(),
            clock: self.clock.clone(),
            keys: ArcSwap::from_pointee(Vec::new()),
            schedule: Mutex::default(),
            fetching: tokio::sync::Mutex::new(()),
            generation: AtomicU64::new(0),
        });
        sources.insert(name, Arc::downgrade(&source));
        source
    }

    /// Starts a background fetch for every source that has no keys yet (at
    /// start and after a reload), so the first token need not wait.
    pub fn prefetch(&self) {
        let sources: Vec<Arc<JwksSource>> = self
            .sources
            .lock()
            .values()
            .filter_map(Weak::upgrade)
            .collect();
        for source in sources {
            if source.keys().is_empty() {
                let now = source.clock.now();
                source.refresh_if_due(now);
            }
        }
    }
}

// === impl JwksSource ===

impl JwksSource {
    /// The keys in use now (empty until the first good fetch).
    pub(crate) fn keys(&self) -> Arc<Vec<JwtKey>> {
        self.keys.load_full()
    }

    /// Starts a background refresh if the set is stale and none is under
    /// way. Needs a tokio runtime; without one it does nothing.
    pub fn refresh_if_due(self: &Arc<Self>, now: Nanos) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let generation = self.generation.load(Ordering::Acquire);
        {
            let mut schedule = self.schedule.lock();
            if now < schedule.refresh_at || schedule.refreshing {
                return;
            }
            schedule.refreshing = true;
        }
        let source = self.clone();
        runtime.spawn(async move {
            source.fetch_unless_done_since(generation).await;
            source.schedule.lock().refreshing = false;
        });
    }

    /// For a token naming a key the set lacks: fetches, unless a fetch for
    /// an unknown `kid` was made, or any fetch ended, in the last
    /// [`UNKNOWN_KID_EVERY`] (the set is as fresh as the IdP's); then it
    /// only waits for a fetch already under way. The caller then judges the
    /// token with whatever keys are in use.
    pub async fn fetch_for_unknown_kid(&self) {
        let generation = self.generation.load(Ordering::Acquire);
        let now = self.clock.now();
        let claimed = {
            let mut schedule = self.schedule.lock();
            let every = UNKNOWN_KID_EVERY.as_nanos() as Nanos;
            let quiet_since = |at: Option<Nanos>| match at {
                Some(at) => now >= at.saturating_add(every),
                None => true,
            };
            let allowed =
                quiet_since(schedule.unknown_kid_fetch) && quiet_since(schedule.fetched_at);
            if allowed {
                schedule.unknown_kid_fetch = Some(now);
            }
            allowed
        };
        if claimed {
            self.fetch_unless_done_since(generation).await;
        } else {
            let _wait = self.fetching.lock().await;
        }
    }

    /// Fetches the set, unless a fetch completed since `generation` was
    /// read (the caller waited for it: its result is as fresh).
    async fn fetch_unless_done_since(&self, generation: u64) {
        let _one_at_a_time = self.fetching.lock().await;
        if self.generation.load(Ordering::Acquire) != generation {
            return;
        }
        let result = self.fetch().await;
        let now = self.clock.now();
        let keep_for = match result {
            Ok((keys, keep_for)) => {
                tracing::info!(
                    url = %self.url,
                    keys = keys.len(),
                    refresh_in_s = keep_for.as_secs(),
                    "fetched the JWT signing keys"
                );
                self.keys.store(Arc::new(keys));
                keep_for
            }
            Err(error) => {
                let in_use = self.keys().len();
                tracing::warn!(
                    url = %self.url,
                    %error,
                    keys_in_use = in_use,
                    "cannot fetch the JWT signing keys; keeping the last good ones"
                );
                MIN_REFRESH
            }
        };
        {
            let mut schedule = self.schedule.lock();
            schedule.refresh_at = now.saturating_add(keep_for.as_nanos() as Nanos);
            schedule.fetched_at = Some(now);
        }
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    /// One GET: the usable keys and how long to keep them.
    async fn fetch(&self) -> Result<(Vec<JwtKey>, Duration), String> {
        let request = Request::get(self.url.clone())
            .header(
                ACCEPT,
                HeaderValue::from_static("application/jwk-set+json, application/json"),
            )
            .body(crate::body::empty())
            .map_err(|e| e.to_string())?;
        let response = tokio::time::timeout(FETCH_TIMEOUT, async {
            let response = self
                .client
                .get()
                .request(request)
                .await
                .map_err(|e| format!("request failed: {e}"))?;
            if response.status() != StatusCode::OK {
                return Err(format!("answered {}", response.status()));
            }
            let keep_for = keep_for(response.headers().get(CACHE_CONTROL));
            let body = Limited::new(response.into_body(), MAX_JWKS_BYTES)
                .collect()
                .await
                .map_err(|e| format!("reading the body: {e}"))?
                .to_bytes();
            Ok((body, keep_for))
        })
        .await
        .map_err(|_| format!("no answer within {}s", FETCH_TIMEOUT.as_secs()))?;
        let (body, keep_for) = response?;
        let text = std::str::from_utf8(&body).map_err(|_| "the body is not UTF-8".to_string())?;
        let (keys, problems) = parse_jwk_set(text).map_err(|e| format!("the body {e}"))?;
        for problem in problems {
            tracing::debug!(url = %self.url, problem, "a JWK was skipped");
        }
        if keys.is_empty() {
            return Err("the set holds no usable signing key".into());
        }
        Ok((keys, keep_for))
    }
}

/// How long to keep a set, from its `Cache-Control`: `max-age` bounded to
/// [`MIN_REFRESH`]..=[`MAX_REFRESH`], [`DEFAULT_REFRESH`] without one.
fn keep_for(cache_control: Option<&HeaderValue>) -> Duration {
    let max_age = cache_control
        .and_then(|v| v.to_str().ok())
        .into_iter()
        .flat_map(|v| v.split(','))
        .find_map(|directive| {
            let (name, value) = directive.trim().split_once('=')?;
            name.trim()
                .eq_ignore_ascii_case("max-age")
                .then(|| value.trim().trim_matches('"').parse::<u64>().ok())
                .flatten()
        });
    match max_age {
        Some(secs) => Duration::from_secs(secs).clamp(MIN_REFRESH, MAX_REFRESH),
        None => DEFAULT_REFRESH,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_age_is_honoured_within_bounds() {
        let cc = |s: &'static str| keep_for(Some(&HeaderValue::from_static(s)));
        assert_eq!(cc("public, max-age=600"), Duration::from_secs(600));
        assert_eq!(
            cc("max-age=\"120\", must-revalidate"),
            Duration::from_secs(120)
        );
        assert_eq!(cc("max-age=1"), MIN_REFRESH);
        assert_eq!(cc("no-store, max-age=0"), MIN_REFRESH);
        assert_eq!(cc("max-age=99999999"), MAX_REFRESH);
        assert_eq!(cc("no-cache"), DEFAULT_REFRESH);
        assert_eq!(cc("max-age=soon"), DEFAULT_REFRESH);
        assert_eq!(keep_for(None), DEFAULT_REFRESH);
    }

    #[test]
    fn urls_are_https_or_loopback_http() {
        assert!(parse_url("https://idp.example.com/.well-known/jwks.json").is_ok());
        assert!(parse_url("http://127.0.0.1:8081/jwks").is_ok());
        assert!(parse_url("http://[::1]:8081/jwks").is_ok());
        assert!(parse_url("http://localhost/jwks").is_ok());
        assert!(parse_url("http://idp.example.com/jwks").is_err_and(|e| e.contains("https")));
        assert!(parse_url("ftp://idp.example.com/jwks").is_err());
        assert!(parse_url("/jwks.json").is_err());
        assert!(parse_url("not a url").is_err());
    }
}
