//! The per-request entry: what every call goes through, in order, before
//! and after its operation's pipeline. [`Gateway::handle`] reads top to
//! bottom as the chain:
//!
//! ```text
//!  1 who calls       request id, client address, identity headers scrubbed
//!  2 the head        size, framing and declared body size within the limits
//!  3 on arrival      hop-by-hop and override headers removed, before any
//!                    policy judges the request (so none can remove what a
//!                    policy set or judged, nor change what it judged)
//!  4 route           path normalised, operation (or MCP endpoint) found
//!  5 pipeline        the operation's stages and the proxy (crate::stack),
//!                    a GraphQL endpoint's matched operations, MCP, or the
//!                    unrouted screen
//!  6 after           X-Request-Id, access log, call log, metrics, usage
//! ```

use http::header::{self, HeaderName, HeaderValue};
use http::{Request, Response};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use super::{DirectCall, Gateway};
use crate::access_log::{AccessLog, AccessRecord};
use crate::body::Body;
use crate::context::{new_request_id, Connection, RequestContext};
use crate::header_names::*;
use crate::metrics::{OperationMetrics, Outcome, ANONYMOUS};
use crate::policy::cache::CacheHit;
use crate::policy::OperationService;
use crate::problem::{Code, Reject, RejectedWith};
use crate::routing::normalize_path;
use crate::state::Store;
use crate::trace::in_request;

/// Where a request goes when no operation takes it: the route refusal
/// travels in the extensions to the end of the unrouted stack.
#[derive(Debug, Clone)]
struct RouteMiss(Reject);

/// What a request's path and method lead to.
enum Target<'g> {
    Operation(usize),
    /// A tool call, dispatched to its operation by the MCP endpoint.
    ToolCall(usize),
    /// A CORS preflight, to the `cors` stage of this operation's pipeline
    /// (it asks about a method, and is never forwarded).
    Preflight(usize),
    /// The MCP endpoint (`agents.mcp_path`).
    Agents(&'g crate::agents::McpEndpoint),
    /// Its OAuth Protected Resource Metadata (RFC 9728).
    ResourceMetadata(&'g crate::agents::McpEndpoint),
}

/// Headers that tell a framework to treat the request as another method or
/// another URL. A policy judged the method and path the gateway saw, so
/// they never reach the upstream unless the config lets one through
/// (`allow_override_headers`).
pub(crate) const OVERRIDE_HEADERS: [&str; 5] = [
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
    "x-original-url",
    "x-rewrite-url",
];

/// The query parameter some frameworks read as the method.
const METHOD_OVERRIDE_PARAM: &str = "_method";

/// Client-address, host and scheme headers that only a trusted proxy may
/// set; from anyone else they are removed, like `X-Forwarded-For`.
const ADDRESS_HEADERS: [HeaderName; 14] = [
    X_FORWARDED_FOR,
    X_FORWARDED_PROTO,
    X_FORWARDED_HOST,
    header::FORWARDED,
    X_REAL_IP,
    HeaderName::from_static("x-forwarded-port"),
    HeaderName::from_static("x-forwarded-prefix"),
    HeaderName::from_static("x-forwarded-scheme"),
    HeaderName::from_static("x-forwarded-server"),
    HeaderName::from_static("true-client-ip"),
    HeaderName::from_static("x-client-ip"),
    HeaderName::from_static("cf-connecting-ip"),
    HeaderName::from_static("x-original-host"),
    HeaderName::from_static("x-host"),
];

// === impl Gateway: the entry ===

impl Gateway {
    /// Answers one request that arrived on `conn`. Boxed at this concrete
    /// site so the future's `Send` bound is proven here, not inferred
    /// through hyper's generic connection types.
    ///
    /// The box is filled by copying the whole future, so its size is a
    /// cost per request: the rare paths (GraphQL, MCP, a stage that
    /// waits) are boxed where they run, and `answer_future_stays_small`
    /// holds the line.
    pub fn handle(
        self: Arc<Self>,
        req: Request<Body>,
        conn: &Connection,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Response<Body>> + Send>> {
        let (peer, tls, peer_ip_header) = (conn.peer, conn.tls, conn.peer_ip_header.clone());
        Box::pin(async move { self.answer(req, peer, tls, peer_ip_header, None).await })
    }

    /// The chain; `direct` names the operation of a tool call (the
    /// [`super::GatewayHandle`]), which is then not routed by its path.
    pub(super) async fn answer(
        self: &Arc<Self>,
        mut req: Request<Body>,
        peer: SocketAddr,
        tls: bool,
        peer_ip_header: HeaderValue,
        direct: Option<DirectCall>,
    ) -> Response<Body> {
        let started = crate::clock::monotonic();
        let _in_flight = self.metrics.in_flight();

        // 1. Who calls: the request id and address a trusted proxy vouches
        //    for, or our own; a caller can never claim an identity.
        let mut cx = self.context(&mut req, peer, tls, peer_ip_header);
        let method = req.method().clone();
        // Copied only when the access log will use it.
        let raw_path = self
            .access_log
            .enabled()
            .then(|| req.uri().path().to_string());
        let bytes_in = content_length(req.headers());

        // 2-4. The head within the limits, cleaned on arrival, routed.
        let target = self
            .check_head(&req, bytes_in)
            .and_then(|()| self.clean_on_arrival(&mut req))
            .and_then(|()| match &direct {
                None => self.route(&mut req, &mut cx),
                Some(call) => self.route_direct(&mut req, &mut cx, call),
            });

        // The call log copies what `record:` asks of a routed call.
        let recording = match &target {
            Ok(Target::Operation(index)) => self.calls.start(*index, &mut req, &cx),
            _ => None,
        };

        // 5. The pipeline. Usage is metered per governed call: an MCP
        //    request is not one (each tool call it makes is, and is
        //    metered as its operation).
        //    Store calls made in it are children of the request's span.
        let parent = cx.trace.clone();
        let (mut response, op_metrics, metered) = match target {
            Ok(Target::Operation(index)) => {
                let op = &self.operations[index];
                let response = match &op.graphql_endpoint {
                    // Boxed, as the rarer, larger future (see `handle`).
                    Some(endpoint) => {
                        Box::pin(in_request(parent, endpoint.call(req, &mut cx))).await
                    }
                    None => in_request(parent, op.pipeline.run(req, &mut cx)).await,
                };
                (response, &op.metrics, true)
            }
            Ok(Target::ToolCall(index)) => {
                let op = &self.operations[index];
                let pipeline = op.tool_pipeline.as_ref().unwrap_or(&op.pipeline);
                (pipeline.run(req, &mut cx).await, &op.metrics, true)
            }
            // Not a call to the workflow: counted in metrics, not in usage.
            Ok(Target::Preflight(index)) => {
                let op = &self.operations[index];
                let response = in_request(parent, op.pipeline.run(req, &mut cx)).await;
                (response, &op.metrics, false)
            }
            Ok(Target::Agents(endpoint)) => {
                cx.operation = Some(endpoint.info.clone());
                let handle = super::GatewayHandle::new(self.clone());
                let envelope = crate::agents::mcp::Envelope::new(handle, &req);
                req.extensions_mut().insert(envelope);
                let call = crate::stack::call_service(&endpoint.service, req, &mut cx);
                let response = Box::pin(in_request(parent, call)).await;
                (response, &endpoint.metrics, false)
            }
            Ok(Target::ResourceMetadata(endpoint)) => {
                let response = endpoint.metadata(&req, &cx);
                (response, &endpoint.metrics, false)
            }
            Err(reject) => {
                req.extensions_mut().insert(RouteMiss(reject));
                let response = in_request(parent, self.unrouted.run(req, &mut cx)).await;
                (response, &self.unrouted_metrics, true)
            }
        };

        // 6. After: the request id on every answer, the access log,
        //    metrics, then usage metering, the last step (DESIGN §1).
        let cx = &cx;
        finish(
            &mut response,
            cx,
            &method,
            raw_path.as_deref().unwrap_or(""),
            started,
            bytes_in,
            &self.access_log,
        );
        let response = crate::call_log::finish(recording, response, cx);
        let (subject, mut counts) =
            self.meter(&response, cx, op_metrics, started, bytes_in, metered);
        let key_field = key_usage_field(cx);
        if let Some(field) = &key_field {
            counts.push((field, 1));
        }
        // The memory store answers at once; a remote one may buffer. A
        // failure is counted by the store itself (tollgate_store_errors_total).
        if metered {
            let subject = subject.as_deref().unwrap_or(ANONYMOUS);
            if let Err(error) = self.store.usage_add(subject, &counts).await {
                tracing::debug!(%error, "usage not metered");
            }
        }
        response
    }

    /// Step 1: the request's context. The request id and the forwarding
    /// headers of a trusted proxy are kept; from anyone else they go, as
    /// do the gateway's own identity headers whoever sent them.
    fn context(
        &self,
        req: &mut Request<Body>,
        peer: SocketAddr,
        tls: bool,
        peer_ip_header: HeaderValue,
    ) -> RequestContext {
        let peer_trusted = self.is_trusted(peer.ip());
        let headers = req.headers_mut();
        let request_id = match headers.get(X_REQUEST_ID) {
            Some(id) if peer_trusted && is_acceptable_request_id(id) => id.clone(),
            _ => new_request_id(),
        };
        let client_ip = self.client_ip(peer.ip(), peer_trusted, headers);
        scrub_identity_headers(headers, peer_trusted);
        let mut cx = RequestContext::new(request_id, peer, client_ip);
        cx.peer_trusted = peer_trusted;
        cx.tls = tls;
        cx.peer_ip_header = Some(peer_ip_header);
        cx.trace = self.tracing.start(req, &cx);
        cx
    }

    /// Step 2: the head within `max_header_bytes`, framed plainly, and its
    /// declared body within `max_body`.
    fn check_head(&self, req: &Request<Body>, declared: Option<u64>) -> Result<(), Reject> {
        if header_bytes(req) > self.settings.max_header_bytes {
            // Closed after the answer: a caller sending heads this size is
            // not one to keep a connection open for.
            return Err(Reject::new(
                Code::HeadersTooLarge,
                "the request headers are larger than the gateway accepts",
            )
            .with_header(header::CONNECTION, HeaderValue::from_static("close")));
        }
        if !plain_transfer_encoding(req.headers()) {
            // hyper reads the last coding if it is `chunked` and leaves the
            // rest; the upstream gets a re-framed body and would never learn
            // of them. A proxy in front might also frame it differently.
            return Err(Reject::new(
                Code::InvalidRequestBody,
                "the only transfer coding accepted is a single `chunked`",
            )
            .with_header(header::CONNECTION, HeaderValue::from_static("close")));
        }
        if declared.is_some_and(|len| len > self.settings.max_body) {
            return Err(Reject::new(
                Code::BodyTooLarge,
                "the request body is larger than the gateway accepts",
            ));
        }
        Ok(())
    }

    /// Step 3: hop-by-hop headers (and those `Connection` names) belong to
    /// this hop and go now, so `Connection: X-Tenant` cannot remove a
    /// header after a policy judged it, nor one a policy sets. Method and
    /// URL overrides go too (unless the config allows one): the method and
    /// path the policies judge are the ones the upstream acts on.
    fn clean_on_arrival(&self, req: &mut Request<Body>) -> Result<(), Reject> {
        crate::proxy::strip_hop_by_hop(req.headers_mut());
        let overrides = &self.settings.removed_override_headers;
        crate::header_names::remove_where(req.headers_mut(), |name| overrides.contains(name));
        if self.settings.remove_method_param {
            remove_query_param(req, METHOD_OVERRIDE_PARAM)?;
        }
        Ok(())
    }

    /// Step 4: normalises the path and finds the operation (or the MCP
    /// endpoint); for an operation the context then knows it and the
    /// upstream URI.
    fn route(
        &self,
        req: &mut Request<Body>,
        cx: &mut RequestContext,
    ) -> Result<Target<'_>, Reject> {
        let path = normalize_path(req.uri().path()).map_err(|e| e.reject())?;
        if let Some(endpoint) = self.agents.serves(&path) {
            return Ok(Target::Agents(endpoint));
        }
        if let Some(endpoint) = self.agents.serves_metadata(&path) {
            cx.operation = Some(endpoint.info.clone());
            return Ok(Target::ResourceMetadata(endpoint));
        }
        if crate::policy::cors::is_preflight(req.method(), req.headers()) {
            if let Some(index) = self.preflight_route(req.headers(), &path) {
                cx.operation = Some(self.operations[index].info.clone());
                return Ok(Target::Preflight(index));
            }
        }
        let found = self.routes.lookup(req.method(), &path)?;
        let operation = &self.operations[found.operation];
        if let Some(check) = &operation.path_check {
            check.check(&found.params)?;
        }
        let upstream = operation
            .target
            .uri_for(&path, req.uri().query(), &found.params)?;
        let index = found.operation;
        if let std::borrow::Cow::Owned(normal) = path {
            let query = req.uri().query().map(str::to_string);
            set_path_and_query(req, &normal, query.as_deref())?;
        }
        cx.upstream = Some(upstream);
        cx.operation = Some(operation.info.clone());
        Ok(Target::Operation(index))
    }

    /// Step 4, for a call that names its operation (a tool call): that
    /// operation, with the parameters the call carries, whatever else the
    /// path would route to.
    fn route_direct(
        &self,
        req: &mut Request<Body>,
        cx: &mut RequestContext,
        call: &DirectCall,
    ) -> Result<Target<'_>, Reject> {
        let operation = self
            .operations
            .get(call.operation)
            .filter(|op| op.tool_pipeline.is_some() && op.method == req.method())
            .ok_or_else(|| Reject::new(Code::Internal, "a direct call to no such operation"))?;
        let params: Vec<(&str, &str)> = call
            .params
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        if let Some(check) = &operation.path_check {
            check.check(&params)?;
        }
        let upstream = operation
            .target
            .uri_for(req.uri().path(), req.uri().query(), &params)?;
        cx.upstream = Some(upstream);
        cx.operation = Some(operation.info.clone());
        if let Some(client) = &call.identity {
            cx.client = Some(client.clone());
            req.extensions_mut()
                .insert(super::AgentIdentity(client.clone()));
        }
        Ok(Target::ToolCall(call.operation))
    }

    /// Step 4, for a CORS preflight: the operation of the method it asks
    /// about, else any at its path, whose pipeline answers preflights. None
    /// has one: the preflight is routed as any `OPTIONS` call.
    fn preflight_route(&self, headers: &http::HeaderMap, path: &str) -> Option<usize> {
        let answers = |index: &usize| self.operations[*index].pipeline.answers_preflight();
        let asked = crate::policy::cors::requested_method(headers)
            .and_then(|method| self.routes.lookup(&method, path).ok())
            .map(|found| found.operation)
            .filter(answers);
        asked.or_else(|| self.routes.operations_at(path).find(answers))
    }

    /// Step 6: counts the answered request in the metrics; returns the
    /// client and the usage counters to add for it. (Synchronous: a
    /// response body is not `Sync`, so no reference to it may live across
    /// the store call.)
    fn meter<'o>(
        &self,
        response: &Response<Body>,
        cx: &RequestContext,
        op: &'o OperationMetrics,
        started: Instant,
        bytes_in: Option<u64>,
        metered: bool,
    ) -> (Option<Arc<str>>, Vec<(&'o str, u64)>) {
        let outcome = Outcome {
            client: cx.client.as_ref().map(|c| &c.id),
            status: response.status().as_u16(),
            duration: started.elapsed(),
            upstream: cx.upstream_duration,
            rejected: response.extensions().get::<RejectedWith>(),
            would_reject: &cx.would_reject,
            bytes_in: bytes_in.unwrap_or(0),
            bytes_out: http_body::Body::size_hint(response.body())
                .exact()
                .unwrap_or(0),
            cache_hit: response.extensions().get::<CacheHit>().is_some(),
            units: crate::cost::units_of(response, cx),
        };
        self.metrics.observe(op, &outcome);
        if metered {
            self.metrics.record_series(op, &outcome, self.clock.now());
        }
        let mut counts = Vec::with_capacity(8);
        op.usage_counts(&outcome, &mut counts);
        (outcome.client.cloned(), counts)
    }
}

/// Writes the access-log line and makes sure the response carries the
/// request id.
fn finish(
    response: &mut Response<Body>,
    cx: &RequestContext,
    method: &http::Method,
    path: &str,
    started: Instant,
    bytes_in: Option<u64>,
    access_log: &AccessLog,
) {
    let code = response
        .extensions()
        .get::<RejectedWith>()
        .map(|r| r.code.as_str());
    let trace_id = crate::trace::finish(cx, response.status().as_u16(), code);
    if !response.headers().contains_key(X_REQUEST_ID) {
        response
            .headers_mut()
            .insert(X_REQUEST_ID, cx.request_id.clone());
    }
    if access_log.enabled() {
        let (op, api) = cx
            .operation
            .as_ref()
            .map(|o| (&*o.id, &*o.api))
            .unwrap_or(("", ""));
        let caller = cx.client.as_ref();
        // What report-only policies would have refused, usually one.
        let shadow = &cx.would_reject;
        let would_reject =
            (!shadow.is_empty()).then(|| join(shadow.iter().map(|(_, c)| c.as_str())));
        let would_reject_policy =
            (!shadow.is_empty()).then(|| join(shadow.iter().map(|(p, _)| &**p)));
        access_log.record(&AccessRecord {
            time: crate::clock::wall(),
            request_id: cx.request_id.to_str().unwrap_or(""),
            client_ip: cx.client_ip,
            client: caller.map_or("", |c| &*c.id),
            // The key's configured id, never the key: which of a client's
            // keys is in use shows whether a rotation is done.
            key_id: caller.and_then(|c| c.key_id.as_deref()),
            api,
            operation: op,
            method: method.as_str(),
            path,
            status: response.status().as_u16(),
            duration: started.elapsed(),
            upstream: cx.upstream_duration,
            bytes_in,
            bytes_out: http_body::Body::size_hint(response.body()).exact(),
            code,
            would_reject: would_reject.as_deref(),
            would_reject_policy: would_reject_policy.as_deref(),
            trace_id: trace_id.as_ref().map(|t| t.as_str()),
        });
    }
}

/// The usage field counting calls made with the key the caller used,
/// `key:{id}:calls`, when that key has an id: during a rotation it shows
/// which keys are still in use.
fn key_usage_field(cx: &RequestContext) -> Option<String> {
    let id = cx.client.as_ref()?.key_id.as_deref()?;
    Some(format!("key:{id}:calls"))
}

fn join<'a>(items: impl Iterator<Item = &'a str>) -> String {
    items.collect::<Vec<_>>().join(",")
}

/// The terminal of the unrouted pipeline: answers with the route refusal
/// the entry found.
pub(super) fn unrouted_terminal() -> OperationService {
    OperationService::new(tower::service_fn(|mut req: Request<Body>| async move {
        let reject = match req.extensions_mut().remove::<RouteMiss>() {
            Some(RouteMiss(reject)) => reject,
            None => Reject::new(
                Code::RouteNotFound,
                "no operation is published at this path",
            ),
        };
        let (parts, _) = req.into_parts();
        Ok(reject.respond(parts.extensions))
    }))
}

// === helpers ===

/// A caller can never claim an identity: the gateway's own headers are
/// always removed, and forwarding and client-address headers unless a
/// trusted proxy set them.
fn scrub_identity_headers(headers: &mut http::HeaderMap, peer_trusted: bool) {
    crate::header_names::remove_where(headers, |name| {
        *name == X_TOLLGATE_CLIENT
            || *name == X_TOLLGATE_OPERATION
            || (!peer_trusted && (*name == X_REQUEST_ID || ADDRESS_HEADERS.contains(name)))
    });
}

fn is_acceptable_request_id(id: &HeaderValue) -> bool {
    (1..=128).contains(&id.len())
        && id
            .as_bytes()
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

fn content_length(headers: &http::HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

/// No `Transfer-Encoding`, or exactly one `chunked`.
fn plain_transfer_encoding(headers: &http::HeaderMap) -> bool {
    let mut values = headers.get_all(header::TRANSFER_ENCODING).iter();
    match (values.next(), values.next()) {
        (None, _) => true,
        (Some(v), None) => v.as_bytes().trim_ascii().eq_ignore_ascii_case(b"chunked"),
        _ => false,
    }
}

/// The size of the request head as counted against `max_header_bytes`.
fn header_bytes(req: &Request<Body>) -> u64 {
    let line = req.uri().path_and_query().map_or(1, |pq| pq.as_str().len()) + 16;
    let fields: usize = req
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum();
    (line + fields) as u64
}

/// Removes every `name=` (or bare `name`) pair from the query, leaving the
/// rest as sent. Nothing is rebuilt when the query has no such pair.
fn remove_query_param(req: &mut Request<Body>, name: &str) -> Result<(), Reject> {
    let Some(query) = req.uri().query() else {
        return Ok(());
    };
    // Compared as a framework reads it: percent-decoded, any case
    // (`%5Fmethod`, `_METHOD`).
    let is_param = |pair: &str| {
        let key = pair.split('=').next().unwrap_or("");
        percent_encoding::percent_decode_str(key)
            .decode_utf8()
            .is_ok_and(|k| k.eq_ignore_ascii_case(name))
    };
    if !query.split('&').any(is_param) {
        return Ok(());
    }
    let kept: Vec<&str> = query.split('&').filter(|p| !is_param(p)).collect();
    let kept = (!kept.is_empty()).then(|| kept.join("&"));
    let path = req.uri().path().to_string();
    set_path_and_query(req, &path, kept.as_deref())
}

fn set_path_and_query(
    req: &mut Request<Body>,
    path: &str,
    query: Option<&str>,
) -> Result<(), Reject> {
    let pq = match query {
        Some(q) => format!("{path}?{q}"),
        None => path.to_string(),
    };
    let mut parts = req.uri().clone().into_parts();
    parts.path_and_query = Some(
        pq.parse()
            .map_err(|_| Reject::new(Code::InvalidPath, "the path cannot be forwarded"))?,
    );
    *req.uri_mut() = http::Uri::from_parts(parts)
        .map_err(|_| Reject::new(Code::InvalidPath, "the path cannot be forwarded"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every request's future is copied whole into its box (`handle`),
    /// and the pipeline's into the request's: a kilobyte more is a
    /// kilobyte more `memcpy` per request. Measured 16 KiB before the
    /// rare paths were boxed where they run, 4.8 KiB with the proxy's
    /// future inline, 2.9 KiB (the pipeline's 1.5 KiB) with it boxed, in
    /// debug and release builds alike; the bounds leave room to grow a
    /// little, not to inline a waiting path again.
    #[tokio::test]
    async fn answer_future_stays_small() {
        let yaml = "version: 1\nlisten: 127.0.0.1:0\napis:\n  - name: a\n    upstream: http://127.0.0.1:9\n    operations: [{ id: o, method: GET, path: /o }]\n";
        let loaded = crate::config::load_str(std::path::Path::new("t.yaml"), yaml).expect("config");
        let deps = super::super::Deps::for_config(&loaded, crate::clock::SystemClock::shared())
            .expect("deps");
        let gateway = Arc::new(Gateway::compile(loaded, &deps).expect("gateway"));
        let peer: SocketAddr = ([127, 0, 0, 1], 1).into();
        let header = HeaderValue::from_static("127.0.0.1");
        let req = Request::new(crate::body::empty());
        let answer = gateway.answer(req, peer, false, header, None);
        let size = std::mem::size_of_val(&answer);
        assert!(
            size <= 4 * 1024,
            "the request's future grew to {size} bytes"
        );
        let mut cx = RequestContext::new(new_request_id(), peer, peer.ip());
        let run = gateway.operations[0]
            .pipeline
            .run(Request::new(crate::body::empty()), &mut cx);
        let size = std::mem::size_of_val(&run);
        assert!(
            size <= 2 * 1024,
            "the pipeline's future grew to {size} bytes"
        );
    }

    #[test]
    fn only_well_formed_request_ids_are_kept() {
        assert!(is_acceptable_request_id(&HeaderValue::from_static(
            "abc-123_x.y:z"
        )));
        assert!(!is_acceptable_request_id(&HeaderValue::from_static(
            "has space"
        )));
        assert!(!is_acceptable_request_id(&HeaderValue::from_static("")));
    }

    #[test]
    fn the_method_override_parameter_is_removed_and_the_rest_kept() {
        let mut req = Request::new(crate::body::empty());
        *req.uri_mut() = "/p?a=1&_method=DELETE&b=2&_method".parse().expect("uri");
        remove_query_param(&mut req, "_method").expect("removed");
        assert_eq!(req.uri().to_string(), "/p?a=1&b=2");
        *req.uri_mut() = "/p?%5Fmethod=PUT&x=1&_METHOD=GET".parse().expect("uri");
        remove_query_param(&mut req, "_method").expect("removed");
        assert_eq!(req.uri().to_string(), "/p?x=1");
        *req.uri_mut() = "/p?_methods=1".parse().expect("uri");
        remove_query_param(&mut req, "_method").expect("kept");
        assert_eq!(req.uri().to_string(), "/p?_methods=1");
    }
}
