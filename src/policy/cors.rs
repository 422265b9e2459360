//! CORS for browser apps, on tower-http's CORS layer.
//!
//! ```yaml
//! policies:
//!   browser-apps:
//!     type: cors
//!     origins: [https://app.example.com, "https://*.example.com"]
//!     methods: [GET, POST]              # default GET HEAD POST PUT PATCH DELETE
//!     headers: [Content-Type, X-API-Key] # default Content-Type, Authorization, X-API-Key
//!     expose: [RateLimit, X-Request-Id]  # default the RateLimit headers, Retry-After, X-Request-Id
//!     credentials: true
//!     max_age: 10m
//! ```
//!
//! The config becomes a `tower_http::cors::CorsLayer` once, at compile
//! (origins: exact ones, and `*` patterns compiled into one regex; `*`
//! alone is any origin), wrapped around a service that answers nothing.
//! Per request with an `Origin` the layer (cloned: a few reference-counted
//! header values) is called with the method and the CORS request headers,
//! writes the answer's headers, and this file moves them:
//! - a preflight (`OPTIONS` with `Origin` and
//!   `Access-Control-Request-Method`) is answered in the `Preflight` phase,
//!   before ip, abuse and auth, and never forwarded: `200`, empty, with
//!   the layer's headers;
//! - any other call with an `Origin` goes on, and its answer (the
//!   upstream's, or a refusal the gateway made) gets the layer's headers on
//!   the way out; the upstream's own `Access-Control-*` headers are
//!   replaced, as this policy speaks for the API;
//! - an origin not allowed gets no `Access-Control-*` header at all, so the
//!   browser withholds the answer; a preflight from it is still `200`
//!   (tower-http's behaviour: CORS is enforced by the browser, and a
//!   refusal status would tell a page no more than the missing headers);
//! - every answer carries `Vary: origin, access-control-request-method,
//!   access-control-request-headers`, so a shared cache keeps them apart.
//!
//! `credentials: true` cannot be combined with a `*` origin, method, header
//! or exposed header (the Fetch standard forbids it; tower-http would
//! panic), which is refused at load.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response};
use schemars::JsonSchema;
use serde::Deserialize;
use std::convert::Infallible;
use std::sync::Arc;
use tower::ServiceExt;
use tower_http::cors::{AllowHeaders, AllowMethods, AllowOrigin, CorsLayer, ExposeHeaders, MaxAge};

use super::registry::PolicyKind;
use super::{CompileCx, Phase, PolicyMeta, Saved, Stage, Step, Stop};
use crate::body::{self, Body};
use crate::config::units::ConfigDuration;

/// `type: cors` — CORS for browser apps: preflights answered before auth, `Access-Control-*`
/// headers on the answers to allowed origins.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CorsConfig {
    /// Allowed origins: exact (`https://app.example.com`), patterns where
    /// `*` stands for one or more DNS labels or a port
    /// (`https://*.example.com`, `http://127.0.0.1:*`), or `*` alone (any
    /// origin; not with `credentials`).
    pub origins: Vec<String>,
    /// Methods a preflight may ask for, or `[*]`.
    #[serde(default = "default_methods")]
    pub methods: Vec<String>,
    /// Request headers a preflight may ask for, or `[*]`.
    #[serde(default = "default_headers")]
    pub headers: Vec<String>,
    /// Response headers the page may read.
    #[serde(default = "default_expose")]
    pub expose: Vec<String>,
    /// `Access-Control-Allow-Credentials: true`: the page may send cookies
    /// and read answers to credentialed calls.
    #[serde(default)]
    pub credentials: bool,
    /// How long a browser may keep a preflight's answer.
    #[serde(default)]
    pub max_age: Option<ConfigDuration>,
}

/// Default `methods` of a `cors` policy: GET, HEAD, POST, PUT, PATCH, DELETE.
pub fn default_methods() -> Vec<String> {
    ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]
        .map(String::from)
        .to_vec()
}

/// Default `headers` of a `cors` policy: Content-Type, Authorization, X-API-Key.
pub fn default_headers() -> Vec<String> {
    ["Content-Type", "Authorization", "X-API-Key"]
        .map(String::from)
        .to_vec()
}

/// The headers a page needs to pace itself and report a call.
pub fn default_expose() -> Vec<String> {
    [
        "RateLimit",
        "RateLimit-Policy",
        "Retry-After",
        "X-Request-Id",
    ]
    .map(String::from)
    .to_vec()
}

/// A compiled `cors` policy: tower-http's layer around [`Blank`].
#[derive(Clone)]
pub struct Cors {
    service: tower_http::cors::Cors<Blank>,
}

/// The service inside the layer: the layer only writes headers, so what it
/// wraps answers an empty `200` at once.
#[derive(Debug, Clone, Copy)]
pub struct Blank;

/// The headers tower-http's layer varies by (its default), written on
/// answers to calls without an `Origin` too.
const VARY: HeaderValue = HeaderValue::from_static(
    "origin, access-control-request-method, access-control-request-headers",
);

/// What the layer may write, and what an upstream's answer loses.
const CORS_RESPONSE_HEADERS: [HeaderName; 7] = [
    header::ACCESS_CONTROL_ALLOW_ORIGIN,
    header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
    header::ACCESS_CONTROL_ALLOW_METHODS,
    header::ACCESS_CONTROL_ALLOW_HEADERS,
    header::ACCESS_CONTROL_EXPOSE_HEADERS,
    header::ACCESS_CONTROL_MAX_AGE,
    HeaderName::from_static("access-control-allow-private-network"),
];

/// The request headers the layer reads.
const CORS_REQUEST_HEADERS: [HeaderName; 3] = [
    header::ORIGIN,
    header::ACCESS_CONTROL_REQUEST_METHOD,
    header::ACCESS_CONTROL_REQUEST_HEADERS,
];

impl PolicyKind for CorsConfig {
    const TYPE: &'static str = "cors";
    const SCHEMA_NAME: &'static str = "CorsPolicy";

    fn compile(&self, meta: &Arc<PolicyMeta>, cx: &mut CompileCx<'_>) -> Option<Vec<Stage>> {
        compile(self, meta, cx)
    }
}

fn compile(
    config: &CorsConfig,
    meta: &Arc<PolicyMeta>,
    cx: &mut CompileCx<'_>,
) -> Option<Vec<Stage>> {
    let before = cx.errors.len();
    let layer = layer(config, cx);
    if cx.errors.len() != before {
        return None;
    }
    let cors = Cors {
        service: tower::Layer::layer(&layer, Blank),
    };
    Some(vec![Stage::new(
        Phase::Preflight,
        meta,
        Step::Cors(Arc::new(cors)),
    )])
}

/// The config as tower-http's layer; mistakes are recorded in `cx`.
fn layer(config: &CorsConfig, cx: &mut CompileCx<'_>) -> CorsLayer {
    let wildcard = |list: &[String]| list.iter().any(|s| s.trim() == "*");
    if config.origins.is_empty() {
        cx.error(&["origins"], "give at least one origin (or `*` for any)");
    }
    if config.credentials {
        for (field, list) in [
            ("origins", &config.origins),
            ("methods", &config.methods),
            ("headers", &config.headers),
            ("expose", &config.expose),
        ] {
            if wildcard(list) {
                cx.error(
                    &[field],
                    "`*` cannot be combined with `credentials: true` (the Fetch standard forbids it): list them",
                );
            }
        }
    }
    let origin = if wildcard(&config.origins) {
        AllowOrigin::any()
    } else {
        let origins = Origins::compile(&config.origins, cx);
        AllowOrigin::predicate(move |origin, _| origins.admits(origin))
    };
    let methods = if wildcard(&config.methods) {
        AllowMethods::any()
    } else {
        let mut methods = Vec::new();
        for (i, m) in config.methods.iter().enumerate() {
            match Method::from_bytes(m.trim().to_ascii_uppercase().as_bytes()) {
                Ok(method) => methods.push(method),
                Err(_) => cx.error(
                    &["methods", &i.to_string()],
                    format!("`{m}` is not an HTTP method"),
                ),
            }
        }
        AllowMethods::list(methods)
    };
    let mut names = |field: &str, list: &[String]| {
        let mut out = Vec::new();
        for (i, name) in list.iter().enumerate() {
            match HeaderName::from_bytes(name.trim().as_bytes()) {
                Ok(name) => out.push(name),
                Err(_) => cx.error(
                    &[field, &i.to_string()],
                    format!("`{name}` is not a header name"),
                ),
            }
        }
        out
    };
    let headers = if wildcard(&config.headers) {
        AllowHeaders::any()
    } else {
        AllowHeaders::list(names("headers", &config.headers))
    };
    let expose = if wildcard(&config.expose) {
        ExposeHeaders::any()
    } else {
        ExposeHeaders::list(names("expose", &config.expose))
    };
    let mut layer = CorsLayer::new()
        .allow_origin(origin)
        .allow_methods(methods)
        .allow_headers(headers)
        .expose_headers(expose)
        .allow_credentials(config.credentials);
    if let Some(max_age) = config.max_age {
        layer = layer.max_age(MaxAge::exact(max_age.0));
    }
    layer
}

/// Allowed origins, compiled: exact values, and the patterns as one regex.
struct Origins {
    exact: Vec<HeaderValue>,
    patterns: Option<regex::Regex>,
}

// === impl Origins ===

impl Origins {
    fn compile(entries: &[String], cx: &mut CompileCx<'_>) -> Origins {
        let mut exact = Vec::new();
        let mut patterns = Vec::new();
        for (i, entry) in entries.iter().enumerate() {
            let entry = entry.trim().to_ascii_lowercase();
            if let Err(message) = check_origin(&entry) {
                cx.error(&["origins", &i.to_string()], message);
                continue;
            }
            if entry.contains('*') {
                // `*` is one or more labels (or a port): letters, digits,
                // `-` and `.`, never `/`, `:` or `@`, so a pattern cannot
                // reach past the host it names.
                let parts: Vec<String> = entry.split('*').map(regex::escape).collect();
                patterns.push(parts.join("[a-z0-9-]+(?:\\.[a-z0-9-]+)*"));
            } else {
                match HeaderValue::from_str(&entry) {
                    Ok(value) => exact.push(value),
                    Err(_) => cx.error(
                        &["origins", &i.to_string()],
                        format!("`{entry}` is not a header value"),
                    ),
                }
            }
        }
        let patterns = (!patterns.is_empty())
            .then(|| regex::Regex::new(&format!("^(?:{})$", patterns.join("|"))))
            .and_then(|compiled| match compiled {
                Ok(regex) => Some(regex),
                Err(e) => {
                    cx.error(&["origins"], format!("the patterns do not compile: {e}"));
                    None
                }
            });
        Origins { exact, patterns }
    }

    /// Browsers send origins in lower case; compared as sent.
    fn admits(&self, origin: &HeaderValue) -> bool {
        self.exact.iter().any(|e| e == origin)
            || match (&self.patterns, origin.to_str()) {
                (Some(patterns), Ok(origin)) => patterns.is_match(origin),
                _ => false,
            }
    }
}

/// An origin is `scheme://host[:port]`: no path, no trailing `/`.
fn check_origin(entry: &str) -> Result<(), String> {
    if entry == "null" {
        return Ok(());
    }
    let Some((scheme, rest)) = entry.split_once("://") else {
        return Err(format!(
            "`{entry}` is not an origin like https://app.example.com"
        ));
    };
    if scheme.is_empty()
        || !scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
    {
        return Err(format!("`{entry}` has no valid scheme"));
    }
    if rest.is_empty() || rest.contains(['/', '?', '#', '@']) {
        return Err(format!(
            "`{entry}` is not an origin: scheme://host[:port], without a path or a trailing `/`"
        ));
    }
    Ok(())
}

// === impl Cors ===

impl Cors {
    /// The request half: answers a preflight; for any other call with an
    /// `Origin`, leaves the headers of its answer in `saved`.
    pub async fn before(
        &self,
        parts: &http::request::Parts,
        saved: &mut Saved,
    ) -> Result<(), Stop> {
        if !parts.headers.contains_key(header::ORIGIN) {
            *saved = Saved::Cors(None);
            return Ok(());
        }
        let preflight = is_preflight(&parts.method, &parts.headers);
        // The layer sees only what it reads: method and CORS headers.
        let mut probe = Request::new(());
        *probe.method_mut() = parts.method.clone();
        for name in CORS_REQUEST_HEADERS {
            for value in parts.headers.get_all(&name) {
                probe.headers_mut().append(name.clone(), value.clone());
            }
        }
        let answered = match self.service.clone().oneshot(probe).await {
            Ok(answered) => answered,
            Err(never) => match never {},
        };
        let mut headers = answered.into_parts().0.headers;
        if !headers.contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN) {
            // Not an allowed origin: nothing that would let the page read.
            for name in &CORS_RESPONSE_HEADERS {
                headers.remove(name);
            }
        }
        if preflight {
            let mut response = Response::new(body::empty());
            *response.headers_mut() = headers;
            response
                .headers_mut()
                .insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
            return Err(Stop::Answer(Box::new(response)));
        }
        *saved = Saved::Cors(Some(Box::new(headers)));
        Ok(())
    }

    /// The response half: the upstream's `Access-Control-*` headers give
    /// way to the layer's.
    pub fn after(response: &mut Response<Body>, headers: Option<Box<HeaderMap>>) {
        let out = response.headers_mut();
        for name in &CORS_RESPONSE_HEADERS {
            out.remove(name);
        }
        let Some(headers) = headers else {
            out.append(header::VARY, VARY);
            return;
        };
        let mut last: Option<HeaderName> = None;
        for (name, value) in *headers {
            let name = match name {
                Some(name) => {
                    last = Some(name.clone());
                    name
                }
                None => match &last {
                    Some(name) => name.clone(),
                    None => continue,
                },
            };
            if name == header::VARY {
                out.append(name, value);
            } else {
                out.insert(name, value);
            }
        }
    }
}

/// `OPTIONS` with `Origin` and `Access-Control-Request-Method`: what a
/// browser sends before a call it may not make unasked. (A bare `OPTIONS`
/// is an ordinary call.)
pub fn is_preflight(method: &Method, headers: &HeaderMap) -> bool {
    method == Method::OPTIONS
        && headers.contains_key(header::ORIGIN)
        && headers.contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
}

/// The method a preflight asks for.
pub fn requested_method(headers: &HeaderMap) -> Option<Method> {
    headers
        .get(header::ACCESS_CONTROL_REQUEST_METHOD)
        .and_then(|v| Method::from_bytes(v.as_bytes()).ok())
}

// === impl Blank ===

impl tower::Service<Request<()>> for Blank {
    type Response = Response<()>;
    type Error = Infallible;
    type Future = std::future::Ready<Result<Response<()>, Infallible>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Infallible>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Request<()>) -> Self::Future {
        std::future::ready(Ok(Response::new(())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::SystemClock;
    use crate::config::schema::Config;
    use crate::policy::RoleTable;

    fn compiled(yaml: &str) -> Result<Cors, Vec<(Vec<String>, String)>> {
        let config: CorsConfig = serde_yaml::from_str(yaml).expect("config");
        let full: Config = serde_yaml::from_str("version: 1\nlisten: 127.0.0.1:0").expect("cfg");
        let roles = RoleTable::default();
        let clock = SystemClock::shared();
        let mut cx = CompileCx::new(&full, &roles, &clock, std::path::Path::new("."));
        let meta = Arc::new(PolicyMeta {
            name: "cors".into(),
            type_name: "cors",
            report_only: false,
        });
        match compile(&config, &meta, &mut cx) {
            Some(mut stages) => match stages.pop().map(|s| s.step) {
                Some(Step::Cors(cors)) => Ok((*cors).clone()),
                _ => Err(vec![]),
            },
            None => Err(cx.take_errors()),
        }
    }

    fn head(method: Method, headers: &[(&str, &str)]) -> http::request::Parts {
        let mut req = Request::builder().method(method).uri("/x");
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        req.body(()).expect("request").into_parts().0
    }

    async fn preflight(cors: &Cors, origin: &str) -> Response<Body> {
        let parts = head(
            Method::OPTIONS,
            &[
                ("origin", origin),
                ("access-control-request-method", "POST"),
            ],
        );
        match cors.before(&parts, &mut Saved::Nothing).await {
            Err(Stop::Answer(response)) => *response,
            _ => panic!("a preflight is answered"),
        }
    }

    #[tokio::test]
    async fn patterns_admit_subdomains_and_nothing_past_the_host() {
        let cors = compiled(
            "origins: [https://app.example.org, 'https://*.example.com', 'http://127.0.0.1:*']",
        )
        .unwrap_or_else(|_| panic!("compiles"));
        for (origin, allowed) in [
            ("https://app.example.org", true),
            ("https://a.example.com", true),
            ("https://a.b.example.com", true),
            ("http://127.0.0.1:5173", true),
            ("https://example.com", false),
            ("https://a.example.com.evil.net", false),
            ("https://evil.net/.example.com", false),
            ("http://a.example.com", false),
            ("https://app.example.org.evil.net", false),
        ] {
            let response = preflight(&cors, origin).await;
            assert_eq!(response.status(), 200, "{origin}");
            let got = response.headers().get(header::ACCESS_CONTROL_ALLOW_ORIGIN);
            assert_eq!(got.is_some(), allowed, "{origin}");
            if allowed {
                assert_eq!(got.and_then(|v| v.to_str().ok()), Some(origin));
            } else {
                assert!(
                    !response
                        .headers()
                        .contains_key(header::ACCESS_CONTROL_ALLOW_METHODS),
                    "{origin}: no CORS header at all"
                );
            }
        }
    }

    #[test]
    fn credentials_with_a_wildcard_and_malformed_origins_are_refused() {
        let errors = compiled("origins: ['*']\ncredentials: true")
            .err()
            .unwrap_or_default();
        assert_eq!(
            errors.first().map(|(p, _)| p.clone()),
            Some(vec!["origins".to_string()])
        );
        let errors = compiled("origins: [https://app.example.com/]")
            .err()
            .unwrap_or_default();
        assert_eq!(
            errors.first().map(|(p, _)| p.clone()),
            Some(vec!["origins".to_string(), "0".to_string()])
        );
        let errors = compiled("origins: [https://a.example.com]\nmethods: [GET, 'NOT A METHOD']")
            .err()
            .unwrap_or_default();
        assert_eq!(
            errors.first().map(|(p, _)| p.clone()),
            Some(vec!["methods".to_string(), "1".to_string()])
        );
    }

    #[tokio::test]
    async fn an_actual_call_gets_origin_credentials_and_exposed_headers_on_the_way_out() {
        let cors = compiled("origins: [https://app.example.com]\ncredentials: true")
            .unwrap_or_else(|_| panic!("compiles"));
        let parts = head(Method::GET, &[("origin", "https://app.example.com")]);
        let mut saved = Saved::Nothing;
        assert!(cors.before(&parts, &mut saved).await.is_ok());
        let Saved::Cors(headers) = saved else {
            panic!("headers saved for the way out")
        };
        let mut response = Response::new(body::empty());
        response.headers_mut().insert(
            header::ACCESS_CONTROL_ALLOW_ORIGIN,
            HeaderValue::from_static("*"),
        );
        Cors::after(&mut response, headers);
        let h = response.headers();
        assert_eq!(
            h[header::ACCESS_CONTROL_ALLOW_ORIGIN],
            "https://app.example.com"
        );
        assert_eq!(h[header::ACCESS_CONTROL_ALLOW_CREDENTIALS], "true");
        let exposed = h[header::ACCESS_CONTROL_EXPOSE_HEADERS]
            .to_str()
            .unwrap_or("");
        assert!(
            exposed.contains("ratelimit") && exposed.contains("x-request-id"),
            "{exposed}"
        );
        assert!(h.get(header::VARY).is_some());
    }
}
