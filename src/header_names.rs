//! Header names the gateway reads or writes, spelled once.

use http::header::HeaderName;

/// The request id: a trusted proxy's is kept, otherwise one is made; sent upstream and echoed to
/// the caller.
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// The forwarding chain: a trusted proxy's is believed (DESIGN §3), and the peer is appended
/// upstream.
pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
/// `http` or `https`, as the caller reached the gateway (sent upstream).
pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
/// The `Host` the caller asked for (sent upstream).
pub const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
/// A client address only a trusted proxy may set; removed from anyone else.
pub const X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
/// The authenticated client id, sent upstream (never believed from the caller).
pub const X_TOLLGATE_CLIENT: HeaderName = HeaderName::from_static("x-tollgate-client");
/// The id of the operation the call was routed to, sent upstream.
pub const X_TOLLGATE_OPERATION: HeaderName = HeaderName::from_static("x-tollgate-operation");
/// The default header an `auth` policy reads API keys from.
pub const X_API_KEY: HeaderName = HeaderName::from_static("x-api-key");
/// A hop-by-hop header (RFC 9112), removed before forwarding.
pub const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
/// A non-standard hop-by-hop header, removed before forwarding.
pub const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// Removes every header `doomed` picks, in one pass over the names
/// present. Most requests carry none of the names a gateway strips, and
/// a glance at a handful of present names is much cheaper than one hashed
/// `remove` per name that might be there.
pub fn remove_where(headers: &mut http::HeaderMap, doomed: impl Fn(&HeaderName) -> bool) {
    let found: smallvec::SmallVec<[HeaderName; 4]> = headers
        .keys()
        .filter(|name| doomed(name))
        .cloned()
        .collect();
    for name in found {
        headers.remove(name);
    }
}
