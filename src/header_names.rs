//! Header names the gateway reads or writes, spelled once.

use http::header::HeaderName;

pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
pub const X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
pub const X_TOLLGATE_CLIENT: HeaderName = HeaderName::from_static("x-tollgate-client");
pub const X_TOLLGATE_OPERATION: HeaderName = HeaderName::from_static("x-tollgate-operation");
pub const X_API_KEY: HeaderName = HeaderName::from_static("x-api-key");
pub const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
pub const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");
