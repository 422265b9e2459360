//! What an entry is stored under (the caller, the call, what the upstream
//! was told of the address), and the entry itself.

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Response, StatusCode};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::body::{self, Body};
use crate::clock::Nanos;
use crate::state::SECOND;

/// Whom an entry is served to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) enum Audience {
    Everyone,
    Client(Arc<str>),
    Address(IpAddr),
}

#[derive(Debug, PartialEq, Eq, Hash)]
pub struct CacheKey {
    pub(super) audience: Audience,
    pub(super) api: Arc<str>,
    pub(super) operation: Arc<str>,
    /// The normalised public path and the query as sent.
    pub(super) target: String,
    pub(super) upstream: String,
    /// What the upstream is told of the address the caller used: the
    /// `X-Forwarded-Host` it will receive (a trusted proxy's, else the
    /// request's `Host` or authority) and `X-Forwarded-Proto`. An upstream
    /// that builds links from them answers each host differently.
    pub(super) forwarded_host: Option<HeaderValue>,
    pub(super) forwarded_proto: ForwardedProto,
    /// The other [`FORWARDING`] headers present (usually none).
    pub(super) forwarding: Vec<(u8, HeaderValue)>,
    /// Each `vary` header's values, in config order (empty: absent).
    pub(super) vary: Vec<Vec<HeaderValue>>,
}

impl CacheKey {
    pub(super) fn bytes(&self) -> u64 {
        let audience = match &self.audience {
            Audience::Everyone => 0,
            Audience::Client(id) => id.len(),
            Audience::Address(_) => 16,
        };
        let vary: usize = self.vary.iter().flatten().map(HeaderValue::len).sum();
        let proto = match &self.forwarded_proto {
            ForwardedProto::Told(v) => v.len(),
            _ => 0,
        };
        (audience
            + self.api.len()
            + self.operation.len()
            + self.target.len()
            + self.upstream.len()
            + self.forwarded_host.as_ref().map_or(0, HeaderValue::len)
            + self
                .forwarding
                .iter()
                .map(|(_, v)| v.len() + 1)
                .sum::<usize>()
            + proto
            + vary) as u64
    }
}

/// The scheme the upstream is told the caller used.
#[derive(Debug, PartialEq, Eq, Hash)]
pub(super) enum ForwardedProto {
    Http,
    Https,
    /// A trusted proxy's `X-Forwarded-Proto`, as it sent it.
    Told(HeaderValue),
}

/// Request headers that make many upstream frameworks answer as another
/// method or URL than the ones the key holds. The gateway removes them on
/// arrival unless the config allows them; when it does, a request carrying
/// one is neither answered from the cache nor stored, so it can never
/// leave an entry other callers are served.
pub(super) const OVERRIDES: [&str; 6] = [
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
    "x-original-method",
    "x-original-url",
    "x-rewrite-url",
];

/// Forwarding headers beyond `X-Forwarded-Host`/`-Proto` that frameworks
/// build links and redirects from (a trusted proxy's, or a caller's where
/// the config allows them): their values are part of the key, so each
/// variant is its own entry.
pub(super) const FORWARDING: [&str; 10] = [
    "forwarded",
    "x-forwarded-port",
    "x-forwarded-prefix",
    "x-forwarded-scheme",
    "x-forwarded-server",
    "x-forwarded-ssl",
    "x-original-host",
    "x-host",
    "x-url-scheme",
    "front-end-https",
];

/// Whether a request asks the upstream, by header or by a `_method` query
/// parameter, to answer as another method or URL.
pub(super) fn overrides_method_or_url(headers: &HeaderMap, uri: &http::Uri) -> bool {
    OVERRIDES.iter().any(|name| headers.contains_key(*name))
        || uri.query().is_some_and(|q| {
            q.split('&').any(|pair| {
                let name = pair.split('=').next().unwrap_or("");
                name.eq_ignore_ascii_case("_method") || name.eq_ignore_ascii_case("%5Fmethod")
            })
        })
}

/// The [`FORWARDING`] headers a request carries: (index, value), in order.
pub(super) fn forwarding_values(headers: &HeaderMap) -> Vec<(u8, HeaderValue)> {
    let mut out = Vec::new();
    for (i, name) in FORWARDING.iter().enumerate() {
        for value in headers.get_all(*name) {
            out.push((i as u8, value.clone()));
        }
    }
    out
}

/// A stored answer.
pub struct Entry {
    pub(super) status: StatusCode,
    /// The answer's headers, less those that belong to one delivery
    /// (`X-Request-Id`, `Age`, `X-Cache`, `Content-Length`).
    pub(super) headers: HeaderMap,
    pub(super) body: Bytes,
    /// When it was stored (injected clock).
    pub(super) stored_at: Nanos,
    /// Its age when stored: the upstream's `Age` plus the time it took to answer.
    pub(super) initial_age: Nanos,
    /// How long it is fresh from age zero.
    pub(super) lifetime: Nanos,
    pub(super) weight: u32,
}

impl Entry {
    pub(super) fn age_at(&self, now: Nanos) -> Nanos {
        self.initial_age
            .saturating_add(now.saturating_sub(self.stored_at))
    }

    pub(super) fn is_fresh_at(&self, now: Nanos) -> bool {
        self.age_at(now) < self.lifetime
    }

    pub(super) fn fresh_for(&self) -> Duration {
        Duration::from_nanos(self.lifetime.saturating_sub(self.initial_age))
    }

    /// The answer to one caller: the stored head and body (none for
    /// `HEAD`), `Age` and `X-Cache: HIT`.
    pub(super) fn respond(&self, head_only: bool, now: Nanos) -> Response<Body> {
        let body = if head_only {
            body::empty()
        } else {
            body::full(self.body.clone())
        };
        let mut response = Response::new(body);
        *response.status_mut() = self.status;
        *response.headers_mut() = self.headers.clone();
        let headers = response.headers_mut();
        if self.status != StatusCode::NO_CONTENT {
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from(self.body.len()));
        }
        headers.insert(header::AGE, HeaderValue::from(self.age_at(now) / SECOND));
        headers.insert(X_CACHE, HeaderValue::from_static("HIT"));
        response.extensions_mut().insert(CacheHit);
        response
    }
}
