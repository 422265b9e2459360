//! The one per-request record, [`RequestContext`]: created by the entry
//! when a request arrives and owned by it to the end, so it can log and
//! meter the call. Every stage and the proxy borrow it (`&mut`); only a
//! tower edge (the MCP endpoint, a test's stub) gets it in the request's
//! extensions, lent with [`lend`] and handed back in the response's
//! ([`take_back`]).

use http::HeaderValue;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use crate::problem::Code;

/// The set of roles a caller holds. Roles are declared in config, so each
/// gets one bit at load and role checks are a mask test.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct RoleSet(pub u64);

impl RoleSet {
    /// No role.
    pub const EMPTY: RoleSet = RoleSet(0);

    /// This set plus the role of bit `bit` (see [`crate::policy::RoleTable`]).
    pub fn with(self, bit: u8) -> RoleSet {
        RoleSet(self.0 | (1u64 << bit))
    }

    /// Whether the two sets share a role.
    pub fn intersects(self, other: RoleSet) -> bool {
        self.0 & other.0 != 0
    }

    /// Whether the set holds no role.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
}

/// The caller, once a credential proved who it is.
#[derive(Debug, Clone)]
pub struct Client {
    /// The client id: `clients[].id`, or a JWT's `sub`.
    pub id: Arc<str>,
    /// The roles the client holds.
    pub roles: RoleSet,
    /// The non-secret id of the key used, when a key has one (for logs).
    pub key_id: Option<Arc<str>>,
}

/// Which API and operation the request was routed to.
#[derive(Debug)]
pub struct OperationInfo {
    /// The API's `name`.
    pub api: Arc<str>,
    /// The operation's `id`.
    pub id: Arc<str>,
    /// The operation id as a header value, for `X-Tollgate-Operation`.
    pub header_value: HeaderValue,
    /// What a call costs in task units (`cost`, `cost_header`).
    pub cost: crate::cost::TaskCost,
}

/// What a rate limit decided, kept so the response can carry the
/// `RateLimit*` headers of the limit closest to exhaustion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimitDecision {
    /// The policy's name.
    pub policy: Arc<str>,
    /// The name as a structured-field string (`"name"`), the start of the
    /// `RateLimit` header; made once when the policy compiles.
    pub quoted_name: Arc<str>,
    /// The whole `RateLimit-Policy` value, which never changes per call.
    pub policy_header: HeaderValue,
    /// The limit, in calls per window (or units per period, for a quota).
    pub limit: u64,
    /// `limit` as a header value (`X-RateLimit-Limit`), made once per
    /// policy.
    pub limit_header: HeaderValue,
    /// Calls that would still pass now.
    pub remaining: u64,
    /// Seconds until the quota is whole again.
    pub reset_secs: u64,
    /// The window, for `RateLimit-Policy: ...;w=`.
    pub window_secs: u64,
}

/// The per-request record (see the module doc): who is calling, where the request was routed,
/// what the limits decided.
#[derive(Debug, Clone)]
pub struct RequestContext {
    /// The request id (`X-Request-Id`): a trusted proxy's, when valid, else a new one.
    pub request_id: HeaderValue,
    /// See [`RequestContext::peer_ip_header`].
    pub peer_ip_header: Option<HeaderValue>,
    /// The TCP peer.
    pub peer: SocketAddr,
    /// The caller's address: the peer, or the rightmost untrusted hop of
    /// `X-Forwarded-For` when the peer is a trusted proxy (DESIGN §3).
    pub client_ip: IpAddr,
    /// Whether the TCP peer is one of `trusted_proxies`.
    pub peer_trusted: bool,
    /// Whether the request came in over TLS (for `X-Forwarded-Proto`).
    pub tls: bool,
    /// Set by the router; `None` for requests that matched no route.
    pub operation: Option<Arc<OperationInfo>>,
    /// Where the proxy sends the call: set by the router with the
    /// operation, rewritten by `auth` when it strips a query credential,
    /// taken by the proxy. (Here rather than in the request's extensions:
    /// that would build a map per request.)
    pub upstream: Option<http::Uri>,
    /// Set by `auth` once a credential is accepted.
    pub client: Option<Client>,
    /// The decision of the rate limit closest to exhaustion, if any.
    pub rate_limit: Option<RateLimitDecision>,
    /// Codes that `report_only` policies would have answered with.
    pub would_reject: Vec<(Arc<str>, Code)>,
    /// Time spent waiting for the upstream's response head.
    pub upstream_duration: Option<std::time::Duration>,
    /// The task units the upstream's answer cost, settled by the proxy
    /// ([`crate::cost`]); `None` when no answer came from the upstream.
    pub units: Option<u64>,
    /// The request's server span, when `tracing:` is on.
    pub trace: Option<crate::trace::RequestTrace>,
}

impl RequestContext {
    /// A context for a request just arrived; everything else is filled in along the way.
    pub fn new(request_id: HeaderValue, peer: SocketAddr, client_ip: IpAddr) -> Self {
        RequestContext {
            request_id,
            peer,
            client_ip,
            peer_trusted: false,
            tls: false,
            operation: None,
            upstream: None,
            client: None,
            rate_limit: None,
            would_reject: Vec::new(),
            upstream_duration: None,
            units: None,
            peer_ip_header: None,
            trace: None,
        }
    }

    /// The peer's address as a header value (`X-Forwarded-For`): the
    /// connection's copy when the server made one, else formatted now.
    pub fn peer_ip_header(&self) -> HeaderValue {
        match &self.peer_ip_header {
            Some(value) => value.clone(),
            None => ip_header(self.peer.ip()),
        }
    }

    /// The caller's roles; empty when anonymous.
    pub fn roles(&self) -> RoleSet {
        self.client.as_ref().map(|c| c.roles).unwrap_or_default()
    }

    /// Keeps the decision with the fewest calls left, so the headers
    /// describe the limit closest to exhaustion.
    pub fn record_rate_limit(&mut self, decision: RateLimitDecision) {
        let closer = match &self.rate_limit {
            None => true,
            Some(current) => decision.remaining < current.remaining,
        };
        if closer {
            self.rate_limit = Some(decision);
        }
    }
}

/// What the server knows of a connection: made once when it is accepted,
/// shared by every request it carries.
#[derive(Debug, Clone)]
pub struct Connection {
    /// The TCP peer.
    pub peer: SocketAddr,
    /// Whether the connection is TLS.
    pub tls: bool,
    /// The peer's address as a header value, formatted once per connection.
    pub peer_ip_header: HeaderValue,
}

impl Connection {
    /// The record of a connection just accepted from `peer`.
    pub fn new(peer: SocketAddr, tls: bool) -> Self {
        Connection {
            peer,
            tls,
            peer_ip_header: ip_header(peer.ip()),
        }
    }
}

fn ip_header(ip: IpAddr) -> HeaderValue {
    // An address's text is always a valid header value.
    HeaderValue::try_from(ip.to_string()).unwrap_or_else(|_| HeaderValue::from_static("unknown"))
}

/// Moves the context out to a tower edge (MCP, a test's stub), where it
/// travels in the request's extensions. What stays behind is a stand-in
/// with the request id and addresses until [`take_back`] returns it.
pub fn lend(cx: &mut RequestContext) -> RequestContext {
    let stand_in = RequestContext::new(cx.request_id.clone(), cx.peer, cx.client_ip);
    std::mem::replace(cx, stand_in)
}

/// Takes the context back from a tower edge's response. A service that
/// lost it is a bug: the stand-in stays, so the rest of the request still
/// has its id and addresses.
pub fn take_back(cx: &mut RequestContext, extensions: &mut http::Extensions) {
    match extensions.remove::<RequestContext>() {
        Some(back) => *cx = back,
        None => tracing::warn!("a service did not hand the request context back"),
    }
}

/// A new request id: 32 hex digits of a per-thread random stream, seeded
/// from the OS once per thread. Unique, not a secret.
pub fn new_request_id() -> HeaderValue {
    use std::cell::Cell;
    thread_local! {
        static STATE: Cell<u64> = Cell::new({
            let mut seed = [0u8; 8];
            // If the OS cannot give randomness, the address of this
            // thread's state still keeps ids apart between threads.
            if getrandom::getrandom(&mut seed).is_err() {
                seed = (&seed as *const _ as u64 ^ 0x9e37_79b9_7f4a_7c15).to_le_bytes();
            }
            u64::from_le_bytes(seed) | 1
        });
    }
    // wyrand: fast, and good enough for identifiers.
    let next = || {
        STATE.with(|s| {
            let v = s.get().wrapping_add(0xa076_1d64_78bd_642f);
            s.set(v);
            let t = (v as u128).wrapping_mul((v ^ 0xe703_7ed1_a0b4_28db) as u128);
            ((t >> 64) ^ t) as u64
        })
    };
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut buf = [0u8; 32];
    for (i, word) in [next(), next()].into_iter().enumerate() {
        for j in 0..16 {
            buf[i * 16 + j] = HEX[((word >> (60 - 4 * j)) & 0xf) as usize];
        }
    }
    HeaderValue::from_bytes(&buf).unwrap_or(HeaderValue::from_static("0"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn request_ids_are_32_hex_digits_and_distinct() {
        let a = new_request_id();
        let b = new_request_id();
        assert_ne!(a, b);
        assert_eq!(a.len(), 32);
        assert!(a
            .to_str()
            .map(|s| s.bytes().all(|c| c.is_ascii_hexdigit()))
            .unwrap_or(false));
    }

    use super::*;

    #[test]
    fn role_sets_are_bit_masks() {
        let reader = RoleSet::EMPTY.with(0);
        let admin = RoleSet::EMPTY.with(5);
        assert!(reader.with(5).intersects(admin));
        assert!(!reader.intersects(admin));
        assert!(RoleSet::EMPTY.is_empty());
    }

    #[test]
    fn the_limit_closest_to_exhaustion_wins() {
        let mut cx = RequestContext::new(
            HeaderValue::from_static("r"),
            "127.0.0.1:1".parse().expect("addr"),
            "127.0.0.1".parse().expect("ip"),
        );
        let d = |name: &str, remaining| RateLimitDecision {
            policy: name.into(),
            quoted_name: format!("\"{name}\"").into(),
            policy_header: HeaderValue::from_static("p"),
            limit: 10,
            limit_header: HeaderValue::from_static("10"),
            remaining,
            reset_secs: 1,
            window_secs: 60,
        };
        cx.record_rate_limit(d("a", 5));
        cx.record_rate_limit(d("b", 7));
        cx.record_rate_limit(d("c", 2));
        assert_eq!(cx.rate_limit.as_ref().map(|d| &*d.policy), Some("c"));
    }
}
