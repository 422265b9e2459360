//! Every error the gateway itself answers with, in one place.
//!
//! Policies, the router and the proxy return a typed [`Reject`]; this module
//! alone turns it into an RFC 9457 `application/problem+json` response with the
//! stable `code` and the `request_id` members of DESIGN §5. Nothing else in the
//! crate writes an error body.

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, CONTENT_TYPE};
use http::{HeaderMap, Response, StatusCode};
use std::borrow::Cow;
use std::fmt::Write as _;
use std::sync::Arc;

use crate::body::{self, Body};
use crate::context::RequestContext;

/// Defines [`Code`] from one table: a line per code with its `code`
/// string, its status, its `title` and who answers with it (`api`: the
/// public listener; `admin`: the admin listener only). Adding a code is one
/// line here.
macro_rules! codes {
    ($( $(#[$doc:meta])* $variant:ident = ($code:literal, $status:ident, $title:literal, $scope:ident), )*) => {
        /// The stable error codes of DESIGN §5. The enum is the contract: a
        /// code is never renamed, only added.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Code {
            $(
                $(#[$doc])*
                #[doc = concat!("\n\n`", $code, "`, ", stringify!($status), ": ", $title, ".")]
                $variant,
            )*
        }

        impl Code {
            /// Every code, for documentation and exhaustive tests.
            pub const ALL: &'static [Code] = &[$(Code::$variant),*];

            /// The snake_case string that appears as `code` in the body.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(Code::$variant => $code,)*
                }
            }

            /// The HTTP status the code is answered with.
            pub const fn status(self) -> StatusCode {
                match self {
                    $(Code::$variant => StatusCode::$status,)*
                }
            }

            /// The short, human `title` member; fixed per code as RFC 9457 asks.
            pub const fn title(self) -> &'static str {
                match self {
                    $(Code::$variant => $title,)*
                }
            }

            /// Codes only the admin listener answers with: the public API (and
            /// so its OpenAPI export) never shows them.
            pub const fn is_admin(self) -> bool {
                match self {
                    $(Code::$variant => codes!(@admin $scope),)*
                }
            }
        }
    };
    (@admin admin) => { true };
    (@admin api) => { false };
}

codes! {
    InvalidPath = ("invalid_path", BAD_REQUEST, "Invalid path", api),
    HeaderRequired = ("header_required", BAD_REQUEST, "Required header missing", api),
    HeaderInvalid = ("header_invalid", BAD_REQUEST, "Header value not allowed", api),
    HeaderForbidden = ("header_forbidden", BAD_REQUEST, "Header not allowed", api),
    InvalidRequestBody = ("invalid_request_body", BAD_REQUEST, "Request body does not match the schema", api),
    UnsupportedMediaType = ("unsupported_media_type", UNSUPPORTED_MEDIA_TYPE, "Unsupported media type", api),
    Unauthenticated = ("unauthenticated", UNAUTHORIZED, "Authentication required", api),
    InvalidCredentials = ("invalid_credentials", UNAUTHORIZED, "Invalid credentials", api),
    ForbiddenRole = ("forbidden_role", FORBIDDEN, "Role not allowed", api),
    /// The MCP endpoint's OAuth token lacks a scope the tool needs.
    InsufficientScope = ("insufficient_scope", FORBIDDEN, "Insufficient scope", api),
    IpDenied = ("ip_denied", FORBIDDEN, "Client address not allowed", api),
    Banned = ("banned", FORBIDDEN, "Client banned", api),
    RouteNotFound = ("route_not_found", NOT_FOUND, "No such route", api),
    MethodNotAllowed = ("method_not_allowed", METHOD_NOT_ALLOWED, "Method not allowed", api),
    BodyTooLarge = ("body_too_large", PAYLOAD_TOO_LARGE, "Request body too large", api),
    RateLimited = ("rate_limited", TOO_MANY_REQUESTS, "Rate limit exceeded", api),
    QuotaExceeded = ("quota_exceeded", TOO_MANY_REQUESTS, "Quota exceeded", api),
    HeadersTooLarge = ("headers_too_large", REQUEST_HEADER_FIELDS_TOO_LARGE, "Request headers too large", api),
    UpstreamUnavailable = ("upstream_unavailable", BAD_GATEWAY, "Upstream unavailable", api),
    InvalidUpstreamResponse = ("invalid_upstream_response", BAD_GATEWAY, "Invalid upstream response", api),
    StateStoreUnavailable = ("state_store_unavailable", SERVICE_UNAVAILABLE, "State store unavailable", api),
    ShuttingDown = ("shutting_down", SERVICE_UNAVAILABLE, "Shutting down", api),
    UpstreamTimeout = ("upstream_timeout", GATEWAY_TIMEOUT, "Upstream timeout", api),
    /// A GraphQL document selects a root field no operation publishes
    /// (with `graphql_unmatched: reject`).
    GraphqlOperationNotAllowed = ("graphql_operation_not_allowed", BAD_REQUEST, "GraphQL operation not allowed", api),
    Internal = ("internal_error", INTERNAL_SERVER_ERROR, "Internal error", api),
    /// Admin listener only: no or a wrong bearer token.
    AdminUnauthorized = ("admin_unauthorized", UNAUTHORIZED, "Admin token required", admin),
    /// Admin listener only: a reload found errors in the config.
    ConfigInvalid = ("config_invalid", BAD_REQUEST, "Config has errors", admin),
    /// Admin listener only: no active ban on that key.
    BanNotFound = ("ban_not_found", NOT_FOUND, "No such ban", admin),
    /// Admin listener only: the call log holds no call with that request id.
    CallNotFound = ("call_not_found", NOT_FOUND, "No such call", admin),
    /// Admin listener only: a query parameter the admin API cannot read.
    InvalidQuery = ("invalid_query", BAD_REQUEST, "Invalid query parameter", admin),
}

/// One JSON-schema violation, for `invalid_request_body`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// A JSON pointer to the offending value (RFC 6901), e.g. `/items/0/name`.
    pub pointer: String,
    /// What is wrong with it.
    pub message: String,
}

/// A refusal: what a policy, the router or the proxy returns instead of a
/// response. Small and cheap to build (`detail` is usually a
/// `&'static str`); the rarer headers and schema errors live behind one box.
#[derive(Debug, Clone)]
pub struct Reject {
    /// The stable `code` of the answer, which also picks its status and title.
    pub code: Code,
    /// The `detail` member: what went wrong, safe to show to the caller.
    pub detail: Cow<'static, str>,
    /// The policy that refused, when one did (for metrics and the log).
    pub policy: Option<Arc<str>>,
    extra: Option<Box<Extra>>,
}

#[derive(Debug, Clone, Default)]
struct Extra {
    /// Headers the refusal carries (`WWW-Authenticate`, `Retry-After`, `Allow`).
    headers: HeaderMap,
    /// Schema violations, rendered as the `errors` member.
    errors: Vec<FieldError>,
}

impl Reject {
    /// A refusal with `code` and `detail`, no headers and no policy named.
    pub fn new(code: Code, detail: impl Into<Cow<'static, str>>) -> Self {
        Reject {
            code,
            detail: detail.into(),
            policy: None,
            extra: None,
        }
    }

    /// Names the policy that refused (an `Arc` clone, no allocation).
    pub fn by_policy(mut self, name: &Arc<str>) -> Self {
        self.policy = Some(name.clone());
        self
    }

    /// Adds a header to the refusal. Values come from the gateway itself, so
    /// a value that is not a valid header is a bug; it is dropped, not panicked on.
    pub fn with_header(mut self, name: HeaderName, value: impl TryInto<HeaderValue>) -> Self {
        if let Ok(value) = value.try_into() {
            self.extra
                .get_or_insert_with(Default::default)
                .headers
                .append(name, value);
        }
        self
    }

    /// The headers the refusal will carry.
    pub fn headers(&self) -> Option<&HeaderMap> {
        self.extra.as_ref().map(|e| &e.headers)
    }

    /// The schema violations the refusal will list.
    pub fn errors(&self) -> &[FieldError] {
        self.extra.as_ref().map_or(&[], |e| &e.errors)
    }

    /// `Retry-After` in whole seconds, at least 1 (RFC 9110 §10.2.3).
    pub fn with_retry_after(self, seconds: u64) -> Self {
        self.with_header(http::header::RETRY_AFTER, seconds.max(1))
    }

    /// Lists schema violations, rendered as the `errors` member.
    pub fn with_errors(mut self, errors: Vec<FieldError>) -> Self {
        self.extra.get_or_insert_with(Default::default).errors = errors;
        self
    }

    /// The HTTP status of the answer (the code's).
    pub fn status(&self) -> StatusCode {
        self.code.status()
    }

    /// Renders the problem+json response. `request_id` is echoed in the body
    /// and in the `X-Request-Id` header.
    pub fn into_response(self, request_id: &HeaderValue) -> Response<Body> {
        let body = self.render_json(request_id.to_str().unwrap_or(""));
        let mut response = Response::new(body::full(Bytes::from(body)));
        *response.status_mut() = self.code.status();
        let headers = response.headers_mut();
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        headers.insert(crate::header_names::X_REQUEST_ID, request_id.clone());
        if let Some(extra) = self.extra {
            headers.extend(extra.headers);
        }
        response.extensions_mut().insert(RejectedWith {
            code: self.code,
            policy: self.policy,
        });
        response
    }

    /// Answers the request whose extensions are given: the request's
    /// [`RequestContext`] moves into the response, so the entry service can
    /// log and meter the refusal like any other response.
    pub fn respond(self, mut request_extensions: http::Extensions) -> Response<Body> {
        let cx = request_extensions.remove::<RequestContext>();
        let request_id = match &cx {
            Some(cx) => cx.request_id.clone(),
            None => HeaderValue::from_static("unknown"),
        };
        let mut response = self.into_response(&request_id);
        if let Some(cx) = cx {
            response.extensions_mut().insert(cx);
        }
        response
    }

    /// The body, written by hand: the members are fixed and this runs on
    /// every refusal, so it avoids building a `serde_json::Value`.
    fn render_json(&self, request_id: &str) -> String {
        let mut out = String::with_capacity(192 + self.detail.len());
        out.push_str("{\"type\":\"https://tollgate.dev/problems/");
        out.push_str(self.code.as_str());
        out.push_str("\",\"title\":");
        push_json_str(&mut out, self.code.title());
        let _ = write!(out, ",\"status\":{}", self.code.status().as_u16());
        out.push_str(",\"detail\":");
        push_json_str(&mut out, &self.detail);
        out.push_str(",\"code\":\"");
        out.push_str(self.code.as_str());
        out.push_str("\",\"request_id\":");
        push_json_str(&mut out, request_id);
        if !self.errors().is_empty() {
            out.push_str(",\"errors\":[");
            for (i, e) in self.errors().iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str("{\"pointer\":");
                push_json_str(&mut out, &e.pointer);
                out.push_str(",\"message\":");
                push_json_str(&mut out, &e.message);
                out.push('}');
            }
            out.push(']');
        }
        out.push('}');
        out
    }
}

/// The body of 400 `config_invalid` (a reload refused): the problem
/// members, plus `errors` with each mistake's file, line, column, key path,
/// message and its `FILE:LINE:COL: message` text.
pub fn config_invalid_json(
    errors: &[crate::config::ConfigError],
    request_id: &HeaderValue,
) -> String {
    let code = Code::ConfigInvalid;
    let value = serde_json::json!({
        "type": format!("https://tollgate.dev/problems/{}", code.as_str()),
        "title": code.title(),
        "status": code.status().as_u16(),
        "detail": format!(
            "the config has {} error{}; the previous config keeps serving",
            errors.len(),
            if errors.len() == 1 { "" } else { "s" }
        ),
        "code": code.as_str(),
        "request_id": request_id.to_str().unwrap_or(""),
        "errors": errors.iter().map(|e| serde_json::json!({
            "file": e.file.display().to_string(),
            "line": e.line,
            "column": e.column,
            "path": e.path,
            "message": e.message,
            "text": e.to_string(),
        })).collect::<Vec<_>>(),
    });
    let mut body = serde_json::to_string_pretty(&value).unwrap_or_default();
    body.push('\n');
    body
}

/// Marks a response the gateway produced itself, so that the access log,
/// metrics and the `abuse` policy can tell which code refused the call,
/// and which policy (if a policy did).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RejectedWith {
    /// The code the gateway answered with.
    pub code: Code,
    /// The policy that refused, when one did.
    pub policy: Option<Arc<str>>,
}

/// Appends `s` as a JSON string literal (RFC 8259 §7 escaping).
pub fn push_json_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    async fn body_json(response: Response<Body>) -> serde_json::Value {
        let bytes = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        serde_json::from_slice(&bytes).expect("json")
    }

    #[tokio::test]
    async fn problem_has_the_rfc9457_members_and_the_code() {
        let id = HeaderValue::from_static("req-1");
        let response = Reject::new(Code::RateLimited, "slow \"down\"\n")
            .with_retry_after(0)
            .into_response(&id);
        assert_eq!(response.status(), 429);
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json"
        );
        assert_eq!(response.headers()["retry-after"], "1");
        assert_eq!(response.headers()["x-request-id"], "req-1");
        let json = body_json(response).await;
        assert_eq!(json["status"], 429);
        assert_eq!(json["code"], "rate_limited");
        assert_eq!(json["request_id"], "req-1");
        assert_eq!(json["detail"], "slow \"down\"\n");
        assert_eq!(json["title"], "Rate limit exceeded");
        assert!(json["type"]
            .as_str()
            .unwrap_or("")
            .ends_with("/rate_limited"));
        assert!(json.get("errors").is_none());
    }

    #[tokio::test]
    async fn schema_errors_are_listed_with_pointers() {
        let id = HeaderValue::from_static("r");
        let response = Reject::new(Code::InvalidRequestBody, "bad")
            .with_errors(vec![FieldError {
                pointer: "/name".into(),
                message: "\u{1} is not a string".into(),
            }])
            .into_response(&id);
        let json = body_json(response).await;
        assert_eq!(json["errors"][0]["pointer"], "/name");
        assert_eq!(json["errors"][0]["message"], "\u{1} is not a string");
    }

    #[test]
    fn every_code_has_a_distinct_snake_case_name_and_an_error_status() {
        let mut seen = std::collections::HashSet::new();
        for code in Code::ALL {
            let name = code.as_str();
            assert!(seen.insert(name), "{name} twice");
            assert!(name.chars().all(|c| c.is_ascii_lowercase() || c == '_'));
            assert!(code.status().is_client_error() || code.status().is_server_error());
        }
    }
}
