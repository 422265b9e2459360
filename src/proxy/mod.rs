//! Forwarding: where a call goes upstream ([`UpstreamTarget`]), what the
//! upstream sees (DESIGN §4), and the terminal service of every operation
//! stack ([`Proxy`]), which sends the call over this thread's upstream
//! connections (`pool.rs`) and streams both bodies.

mod pool;

pub use pool::{build_client, HttpClient, UpstreamBody, UpstreamClients, UpstreamError};

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::{Authority, PathAndQuery, Scheme, Uri};
use http::{Request, Response};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use crate::body::{self, Body, IdleTimeout};
use crate::context::RequestContext;
use crate::header_names::*;
use crate::path_template::{self, Part};
use crate::problem::{Code, Reject};

// === UpstreamTarget ===

/// Where an operation's calls go, parsed once at load.
#[derive(Debug, Clone)]
pub struct UpstreamTarget {
    scheme: Scheme,
    authority: Authority,
    kind: TargetKind,
}

#[derive(Debug, Clone)]
enum TargetKind {
    /// The API's `upstream`: its path, then the public path minus `base_path`.
    Base { prefix: String, strip: usize },
    /// The operation's own `upstream`, with `{param}`s filled in.
    Template {
        parts: Vec<TemplatePart>,
        query: Option<String>,
    },
}

#[derive(Debug, Clone)]
enum TemplatePart {
    Literal(String),
    Param(String),
}

fn parse_upstream_url(url: &str) -> Result<(Scheme, Authority, String, Option<String>), String> {
    let uri: Uri = url
        .parse()
        .map_err(|e| format!("`{url}` is not a URL: {e}"))?;
    let scheme = uri
        .scheme()
        .cloned()
        .ok_or_else(|| format!("`{url}` needs a scheme (http:// or https://)"))?;
    if scheme != Scheme::HTTP && scheme != Scheme::HTTPS {
        return Err(format!(
            "`{url}`: only http and https upstreams are supported"
        ));
    }
    let authority = uri
        .authority()
        .cloned()
        .ok_or_else(|| format!("`{url}` needs a host"))?;
    if authority.as_str().contains('@') {
        return Err(format!("`{url}`: credentials in upstream URLs are not supported; use a `headers` policy with ${{env.NAME}}"));
    }
    let path = uri.path().trim_end_matches('/').to_string();
    Ok((scheme, authority, path, uri.query().map(str::to_string)))
}

impl UpstreamTarget {
    /// An API upstream: calls keep their path after `base_path`.
    pub fn base(url: &str, base_path: &str) -> Result<Self, String> {
        let (scheme, authority, prefix, query) = parse_upstream_url(url)?;
        if query.is_some() {
            return Err(format!("`{url}`: an API upstream cannot carry a query"));
        }
        Ok(UpstreamTarget {
            scheme,
            authority,
            kind: TargetKind::Base {
                prefix,
                strip: base_path.len(),
            },
        })
    }

    /// An operation upstream: a full URL whose `{param}`s come from the
    /// operation path; every `{param}` must exist there.
    pub fn template(url: &str, path_params: &[&str]) -> Result<Self, String> {
        // `{` and `}` are not URI characters: take them out before parsing.
        let mut skeleton = String::with_capacity(url.len());
        let mut parts = Vec::new();
        let mut literal = String::new();
        for part in path_template::parts(url) {
            match part {
                Part::Literal(text) if text.contains('{') => {
                    return Err(format!("`{url}`: unclosed `{{`"))
                }
                Part::Literal(text) => {
                    literal.push_str(text);
                    skeleton.push_str(text);
                }
                Part::Param(name) | Part::Rest(name) => {
                    if !path_params.contains(&name) {
                        return Err(format!(
                            "`{url}` uses `{{{name}}}`, which the operation path does not define"
                        ));
                    }
                    skeleton.push('x');
                    parts.push(TemplatePart::Literal(std::mem::take(&mut literal)));
                    parts.push(TemplatePart::Param(name.to_string()));
                }
            }
        }
        let (scheme, authority, _, query) = parse_upstream_url(&skeleton)?;
        // Keep only the path-and-query of the literal pieces.
        let origin_len = scheme.as_str().len() + 3 + authority.as_str().len();
        let mut first = true;
        let mut path_parts = Vec::with_capacity(parts.len() + 1);
        parts.push(TemplatePart::Literal(literal));
        for part in parts {
            match part {
                TemplatePart::Literal(mut s) => {
                    if first {
                        s = s.get(origin_len..).unwrap_or("").to_string();
                        first = false;
                    }
                    if let Some(q) = s.find('?') {
                        s.truncate(q);
                    }
                    path_parts.push(TemplatePart::Literal(s));
                }
                param => {
                    first = false;
                    path_parts.push(param);
                }
            }
        }
        Ok(UpstreamTarget {
            scheme,
            authority,
            kind: TargetKind::Template {
                parts: path_parts,
                query,
            },
        })
    }

    /// The upstream's host and port (what `Host` is set to).
    pub fn authority(&self) -> &Authority {
        &self.authority
    }

    /// The upstream URI of one call: `path` is the normalised public path,
    /// `query` the caller's query, `params` the route's parameters.
    pub fn uri_for(
        &self,
        path: &str,
        query: Option<&str>,
        params: &[(&str, &str)],
    ) -> Result<Uri, Reject> {
        let mut pq = String::with_capacity(64 + path.len() + query.map_or(0, str::len));
        let own_query = match &self.kind {
            TargetKind::Base { prefix, strip } => {
                pq.push_str(prefix);
                let rest = path.get(*strip..).unwrap_or("");
                if rest.is_empty() || !rest.starts_with('/') {
                    pq.push('/');
                }
                pq.push_str(rest);
                None
            }
            TargetKind::Template { parts, query } => {
                for part in parts {
                    match part {
                        TemplatePart::Literal(s) => pq.push_str(s),
                        TemplatePart::Param(name) => {
                            let value = params
                                .iter()
                                .find(|(k, _)| k == name)
                                .map_or("", |(_, v)| v);
                            pq.push_str(value);
                        }
                    }
                }
                if pq.is_empty() {
                    pq.push('/');
                }
                query.as_deref()
            }
        };
        match (own_query, query) {
            (Some(a), Some(b)) => {
                pq.push('?');
                pq.push_str(a);
                pq.push('&');
                pq.push_str(b);
            }
            (Some(q), None) | (None, Some(q)) => {
                pq.push('?');
                pq.push_str(q);
            }
            (None, None) => {}
        }
        let path_and_query = PathAndQuery::try_from(pq)
            .map_err(|_| Reject::new(Code::InvalidPath, "the path cannot be forwarded"))?;
        let mut parts = http::uri::Parts::default();
        parts.scheme = Some(self.scheme.clone());
        parts.authority = Some(self.authority.clone());
        parts.path_and_query = Some(path_and_query);
        Uri::from_parts(parts)
            .map_err(|_| Reject::new(Code::InvalidPath, "the path cannot be forwarded"))
    }
}

// === Header hygiene ===

/// Removes hop-by-hop headers: RFC 9110 §7.6.1 and any named in `Connection`.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // `Connection` names further headers of this hop. Its usual tokens
    // name none: `close` is no header, and a `Keep-Alive` header is
    // hop-by-hop anyway.
    let named: smallvec::SmallVec<[HeaderName; 2]> = headers
        .get_all(header::CONNECTION)
        .iter()
        .flat_map(|value| value.to_str().unwrap_or("").split(','))
        .map(str::trim)
        .filter(|token| {
            !token.eq_ignore_ascii_case("keep-alive") && !token.eq_ignore_ascii_case("close")
        })
        .filter_map(|token| HeaderName::from_bytes(token.as_bytes()).ok())
        .collect();
    crate::header_names::remove_where(headers, |name| is_hop_by_hop(name) || named.contains(name));
}

fn is_hop_by_hop(name: &HeaderName) -> bool {
    // By spelling: a match on the name compares lengths first, where
    // building and comparing nine `HeaderName`s did not.
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
    )
}

/// Sets what the upstream learns about the call (DESIGN §4). Spoofed
/// identity headers were already removed when the request arrived.
fn add_forwarding_headers(
    headers: &mut HeaderMap,
    uri_authority: Option<&Authority>,
    cx: &RequestContext,
) {
    let xff = match headers.get(X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
        Some(existing) if cx.peer_trusted => {
            HeaderValue::try_from(format!("{existing}, {}", cx.peer.ip())).ok()
        }
        // The common case: the peer's address, formatted once per connection.
        _ => Some(cx.peer_ip_header()),
    };
    if let Some(v) = xff {
        headers.insert(X_FORWARDED_FOR, v);
    }
    if !headers.contains_key(X_FORWARDED_PROTO) {
        headers.insert(
            X_FORWARDED_PROTO,
            HeaderValue::from_static(if cx.tls { "https" } else { "http" }),
        );
    }
    if !headers.contains_key(X_FORWARDED_HOST) {
        let host = headers
            .get(header::HOST)
            .cloned()
            .or_else(|| uri_authority.and_then(|a| HeaderValue::from_str(a.as_str()).ok()));
        if let Some(host) = host {
            headers.insert(X_FORWARDED_HOST, host);
        }
    }
    headers.insert(X_REQUEST_ID, cx.request_id.clone());
    if let Some(client) = &cx.client {
        if let Ok(v) = HeaderValue::from_str(&client.id) {
            headers.insert(X_TOLLGATE_CLIENT, v);
        }
    }
    if let Some(op) = &cx.operation {
        headers.insert(X_TOLLGATE_OPERATION, op.header_value.clone());
    }
    // The upstream's own Host is set by the client from the upstream URI.
    headers.remove(header::HOST);
}

// === Proxy ===

/// The terminal service of an operation: forwards to the URI the router
/// put in the context and answers with the upstream's response.
#[derive(Clone)]
pub struct Proxy {
    clients: Arc<UpstreamClients>,
    timeout: Duration,
}

impl Proxy {
    /// A proxy over `clients`, giving each call `timeout` for the upstream's
    /// response head.
    pub fn new(clients: Arc<UpstreamClients>, timeout: Duration) -> Self {
        Proxy { clients, timeout }
    }

    /// Forwards one call (the pipeline's terminal, without a boxed
    /// future). Not an `async fn`: a wrapper would hold the request twice.
    pub fn forward<'a>(
        &'a self,
        req: Request<Body>,
        cx: &'a mut RequestContext,
    ) -> impl Future<Output = Response<Body>> + Send + 'a {
        forward(&self.clients, self.timeout, req, cx)
    }
}

async fn forward(
    clients: &Arc<UpstreamClients>,
    timeout: Duration,
    req: Request<Body>,
    cx: &mut RequestContext,
) -> Response<Body> {
    let (mut parts, body) = req.into_parts();
    let Some(uri) = cx.upstream.take() else {
        let reject = Reject::new(Code::Internal, "request reached the proxy unrouted");
        return reject.into_response(&cx.request_id);
    };
    strip_hop_by_hop(&mut parts.headers);
    add_forwarding_headers(&mut parts.headers, parts.uri.authority(), cx);
    parts.uri = uri;
    // The upstream connection is HTTP/1.1 or negotiated by ALPN, whatever
    // the caller spoke.
    parts.version = http::Version::HTTP_11;
    let span = crate::trace::upstream_start(cx, &mut parts.headers, &parts.method, &parts.uri);

    let started = crate::clock::monotonic();
    let outcome = tokio::time::timeout(
        timeout,
        UpstreamClients::send(clients, Request::from_parts(parts, body)),
    )
    .await;
    cx.upstream_duration = Some(started.elapsed());
    let reject = match outcome {
        Ok(Ok(response)) => {
            if let Some(span) = span {
                span.end(Ok(response.status().as_u16()));
            }
            let (mut head, incoming) = response.into_parts();
            strip_hop_by_hop(&mut head.headers);
            head.headers.insert(X_REQUEST_ID, cx.request_id.clone());
            head.extensions = http::Extensions::new();
            // The call's task units; the upstream's cost header goes here.
            if let Some(op) = &cx.operation {
                cx.units = Some(op.cost.settle(&mut head.headers).0);
            }
            // An upstream that stops sending mid-body would hold the caller
            // for ever: after `timeout` of silence the body fails, and the
            // caller's connection is aborted (never a clean, short end).
            let body = body::boxed(IdleTimeout::new(incoming, timeout));
            return Response::from_parts(head, body);
        }
        Ok(Err(err)) => failure(&err, cx),
        Err(_) => Reject::new(Code::UpstreamTimeout, "the upstream did not answer in time"),
    };
    if let Some(span) = span {
        span.end(Err(reject.code));
    }
    reject.into_response(&cx.request_id)
}

/// What the caller is told when a call could not be forwarded: whose fault
/// it was decides the code.
fn failure(err: &UpstreamError, cx: &RequestContext) -> Reject {
    if body::is_body_too_large(err) {
        return Reject::new(
            Code::BodyTooLarge,
            "the request body is larger than the gateway accepts",
        );
    }
    // The caller's own body failed (it broke off, stalled, or its chunked
    // framing was broken): not the upstream's fault.
    if body::is_request_body_error(err) {
        tracing::debug!(request_id = ?cx.request_id, error = %err, "request body failed");
        return Reject::new(
            Code::InvalidRequestBody,
            "the request body broke off, stalled or was malformed",
        );
    }
    tracing::warn!(request_id = ?cx.request_id, error = %err, "upstream request failed");
    if body::source_chain(err).any(|e| {
        e.downcast_ref::<hyper::Error>()
            .is_some_and(|h| h.is_parse() || h.is_parse_status())
    }) {
        return Reject::new(
            Code::InvalidUpstreamResponse,
            "the upstream's answer was not valid HTTP",
        );
    }
    Reject::new(
        Code::UpstreamUnavailable,
        "the upstream could not be reached",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_upstream_appends_the_path_after_base_path() {
        let t = UpstreamTarget::base("http://127.0.0.1:9090/api/", "/employees").expect("url");
        let uri = t.uri_for("/employees/42", Some("a=1&b"), &[]).expect("uri");
        assert_eq!(uri.to_string(), "http://127.0.0.1:9090/api/42?a=1&b");
        let root = t.uri_for("/employees", None, &[]).expect("uri");
        assert_eq!(root.to_string(), "http://127.0.0.1:9090/api/");
        let bare = UpstreamTarget::base("http://h:1", "").expect("url");
        assert_eq!(
            bare.uri_for("/x/y", None, &[]).expect("uri").to_string(),
            "http://h:1/x/y"
        );
    }

    #[test]
    fn template_upstream_fills_params_and_merges_queries() {
        let t = UpstreamTarget::template(
            "https://wf.example/workflows/get-employee/{employeeId}/x?token=abc",
            &["employeeId"],
        )
        .expect("template");
        let uri = t
            .uri_for("/employees/7", Some("full=1"), &[("employeeId", "7")])
            .expect("uri");
        assert_eq!(
            uri.to_string(),
            "https://wf.example/workflows/get-employee/7/x?token=abc&full=1"
        );
    }

    #[test]
    fn template_params_must_exist_in_the_path() {
        let err = UpstreamTarget::template("http://h/{nope}", &["id"]).expect_err("unknown param");
        assert!(err.contains("{nope}"), "{err}");
        assert!(UpstreamTarget::template("http://h/{id", &["id"]).is_err());
        assert!(UpstreamTarget::base("ftp://h", "").is_err());
        assert!(UpstreamTarget::base("/relative", "").is_err());
        assert!(UpstreamTarget::base("http://user:pw@h", "").is_err());
    }

    #[test]
    fn hop_by_hop_headers_and_those_named_in_connection_are_removed() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("close, x-secret"),
        );
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert(header::TE, HeaderValue::from_static("trailers"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-kept"));
    }
}
