//! OpenTelemetry traces (`tracing:`; DESIGN §10), with the `opentelemetry`
//! SDK and its OTLP/HTTP exporter. What one call records:
//!
//! ```text
//!  <METHOD> <operation>   server span, child of a trusted caller's traceparent
//!  ├─ policy.refused       event: tollgate.policy, tollgate.code
//!  ├─ policy.would_refuse  event: the same, for a report-only policy
//!  ├─ gcra, quota_take, …  client spans of Redis store calls (`store_call`)
//!  └─ upstream             client span; the upstream gets its traceparent
//! ```
//!
//! The server span's attributes: `tollgate.api`, `tollgate.operation`,
//! `tollgate.client`, `tollgate.key_id` (the key's id, never the key),
//! `http.response.status_code`, `tollgate.code` and the rate-limit decision
//! (`tollgate.rate_limit.*`). Its trace id goes in the access log.
//!
//! Without a `tracing:` section every hook is one `None` test (a Redis
//! call: one task-local look-up): no span, no header touched (a
//! `traceparent` passes through as any header). With one, `traceparent` and
//! `tracestate` are read only from `trusted_callers` and always replaced by
//! the gateway's own towards the upstream. Spans are
//! exported in batches from the exporter's own thread (`export.rs`). A
//! Redis call finds its parent in a task-local set around the request's
//! pipeline ([`in_request`]); the memory store makes no span.

mod config;
mod export;

pub use config::TracingConfig;

use http::{HeaderMap, HeaderName, Method};
use ipnet::IpNet;
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{
    Span as _, SpanContext, SpanKind, Status, TraceContextExt, Tracer as _, TracerProvider as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_http::{HeaderExtractor, HeaderInjector};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracer, SdkTracerProvider, Span};
use opentelemetry_sdk::Resource;
use parking_lot::Mutex;
use prometheus_client::metrics::counter::Counter;
use std::sync::Arc;

use crate::config::{ConfigError, LoadedConfig};
use crate::context::{RateLimitDecision, RequestContext};
use crate::problem::Code;

const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
const TRACESTATE: HeaderName = HeaderName::from_static("tracestate");

/// The gateway's tracer, or nothing when the config has no `tracing:`.
/// Cheap to clone; kept by a reload (like the access log's sink).
#[derive(Clone, Default)]
pub struct Tracing(Option<Arc<Tracer>>);

struct Tracer {
    tracer: SdkTracer,
    provider: SdkTracerProvider,
    trusted_callers: Vec<IpNet>,
    propagator: TraceContextPropagator,
}

/// The server span of one request, in its [`RequestContext`] (one
/// pointer there, `None` without `tracing:`).
#[derive(Clone)]
pub struct RequestTrace(Arc<Shared>);

struct Shared {
    span: Mutex<Recording>,
    context: SpanContext,
    method: Method,
    tracer: Arc<Tracer>,
}

impl std::fmt::Debug for RequestTrace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestTrace")
            .field("context", &self.0.context)
            .finish_non_exhaustive()
    }
}

/// The server span, and what it will record when it ends.
struct Recording {
    span: Span,
    /// The rate limit closest to exhaustion, kept before the response
    /// halves take it for the `RateLimit` headers.
    rate_limit: Option<RateLimitDecision>,
}

/// The span of one upstream call, ended when its answer's head arrives.
pub struct UpstreamSpan(Span);

/// A trace id as the access log writes it: 32 lowercase hex digits.
pub struct TraceIdText([u8; 32]);

// === impl Tracing ===

impl Tracing {
    /// The tracer of `tracing:`, its mistakes as FILE:LINE:COL errors.
    pub fn for_config(
        loaded: &LoadedConfig,
        dropped: Counter,
    ) -> Result<Tracing, Vec<ConfigError>> {
        let Some(checked) = check(loaded)? else {
            return Ok(Tracing::default());
        };
        let processor = export::processor(&checked, dropped)
            .map_err(|message| vec![loaded.error_at(&["tracing", "endpoint"], message)])?;
        let provider = SdkTracerProvider::builder()
            .with_span_processor(processor)
            .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
                checked.sampling_ratio,
            ))))
            .with_resource(
                Resource::builder()
                    .with_service_name(checked.service_name.clone())
                    .build(),
            )
            .build();
        Ok(Tracing(Some(Arc::new(Tracer {
            tracer: provider.tracer("tollgate"),
            provider,
            trusted_callers: checked.trusted_callers,
            propagator: TraceContextPropagator::new(),
        }))))
    }

    /// Whether a `tracing:` section is configured (spans are made at all).
    pub fn is_enabled(&self) -> bool {
        self.0.is_some()
    }

    /// The server span of a request that just arrived: a child of the
    /// caller's `traceparent` when the caller is trusted, else the root of
    /// a new trace. The trace headers are removed either way (the upstream
    /// gets the gateway's own).
    pub fn start<B>(
        &self,
        req: &mut http::Request<B>,
        cx: &RequestContext,
    ) -> Option<RequestTrace> {
        let tracer = self.0.as_ref()?;
        let method = req.method().clone();
        let headers = req.headers_mut();
        let parent = if crate::address::is_within(&tracer.trusted_callers, cx.peer.ip()) {
            tracer.propagator.extract(&HeaderExtractor(headers))
        } else {
            Context::new()
        };
        headers.remove(TRACEPARENT);
        headers.remove(TRACESTATE);
        let mut attributes = vec![
            KeyValue::new("http.request.method", method.as_str().to_owned()),
            KeyValue::new("client.address", cx.client_ip.to_string()),
        ];
        if let Ok(id) = cx.request_id.to_str() {
            attributes.push(KeyValue::new("tollgate.request_id", id.to_owned()));
        }
        let span = tracer
            .tracer
            .span_builder(method.as_str().to_owned())
            .with_kind(SpanKind::Server)
            .with_attributes(attributes)
            .start_with_context(&tracer.tracer, &parent);
        Some(RequestTrace(Arc::new(Shared {
            context: span.span_context().clone(),
            span: Mutex::new(Recording {
                span,
                rate_limit: None,
            }),
            method,
            tracer: tracer.clone(),
        })))
    }

    /// Exports every span finished so far; returns once the collector
    /// answered (or the export timed out). Off the caller's thread, so a
    /// runtime that also serves the collector keeps running.
    pub async fn flush(&self) {
        if let Some(tracer) = &self.0 {
            let provider = tracer.provider.clone();
            let _ = tokio::task::spawn_blocking(move || provider.force_flush()).await;
        }
    }
}

/// The `tracing:` section's checks, as FILE:LINE:COL errors (a reload
/// runs them too, though it keeps the running tracer).
pub(crate) fn check(loaded: &LoadedConfig) -> Result<Option<config::Checked>, Vec<ConfigError>> {
    let Some(config) = &loaded.config.tracing else {
        return Ok(None);
    };
    config.check().map(Some).map_err(|errors| {
        errors
            .into_iter()
            .map(|(path, message)| {
                let mut at = vec!["tracing".to_string()];
                at.extend(path);
                loaded.error_at(&at, message)
            })
            .collect()
    })
}

/// How long the exit waits for the last spans' export.
const EXIT_EXPORT: std::time::Duration = std::time::Duration::from_secs(5);

impl Tracing {
    /// Exports what is left and stops the exporter (at exit, after the
    /// drain), waiting at most 5 s for the collector.
    pub async fn shutdown(&self) {
        if let Some(tracer) = &self.0 {
            let provider = tracer.provider.clone();
            let _ =
                tokio::task::spawn_blocking(move || provider.shutdown_with_timeout(EXIT_EXPORT))
                    .await;
        }
    }
}

impl Drop for Tracer {
    /// The last spans are exported on a thread of their own: a drop on a
    /// runtime's thread must not wait for the collector.
    fn drop(&mut self) {
        let provider = self.provider.clone();
        let _ = std::thread::Builder::new()
            .name("tollgate-trace-shutdown".into())
            .spawn(move || provider.shutdown());
    }
}

// === the request's hooks ===

/// A policy refused the request: an event on its span.
#[inline]
pub fn refused(cx: &RequestContext, policy: &str, code: Code) {
    if cx.trace.is_some() {
        event(cx, "policy.refused", policy, code);
    }
}

/// A report-only policy would have refused it: an event on its span.
#[inline]
pub fn would_refuse(cx: &RequestContext, policy: &str, code: Code) {
    if cx.trace.is_some() {
        event(cx, "policy.would_refuse", policy, code);
    }
}

fn event(cx: &RequestContext, name: &'static str, policy: &str, code: Code) {
    let Some(trace) = cx.trace.as_ref().filter(|t| t.0.context.is_sampled()) else {
        return;
    };
    trace.0.span.lock().span.add_event(
        name,
        vec![
            KeyValue::new("tollgate.policy", policy.to_owned()),
            KeyValue::new("tollgate.code", code.as_str()),
        ],
    );
}

/// The pipeline's stages have all decided: the rate-limit decision the
/// context holds is kept for the span (the response halves take it).
#[inline]
pub fn keep_rate_limit(cx: &RequestContext) {
    if let (Some(trace), Some(decision)) = (&cx.trace, &cx.rate_limit) {
        if trace.0.context.is_sampled() {
            trace.0.span.lock().rate_limit = Some(decision.clone());
        }
    }
}

/// The span of the upstream call about to be sent, a child of the
/// request's; its `traceparent` (and the caller's `tracestate`, if
/// trusted) goes into the upstream request's headers.
pub fn upstream_start(
    cx: &RequestContext,
    headers: &mut HeaderMap,
    method: &Method,
    uri: &http::Uri,
) -> Option<UpstreamSpan> {
    let trace = cx.trace.as_ref()?;
    let tracer = &trace.0.tracer;
    let parent = Context::new().with_remote_span_context(trace.0.context.clone());
    let mut attributes = vec![KeyValue::new(
        "http.request.method",
        method.as_str().to_owned(),
    )];
    if let Some(host) = uri.host() {
        attributes.push(KeyValue::new("server.address", host.to_owned()));
    }
    if let Some(port) = uri.port_u16() {
        attributes.push(KeyValue::new("server.port", i64::from(port)));
    }
    let span = tracer
        .tracer
        .span_builder("upstream")
        .with_kind(SpanKind::Client)
        .with_attributes(attributes)
        .start_with_context(&tracer.tracer, &parent);
    let sent = Context::new().with_remote_span_context(span.span_context().clone());
    tracer
        .propagator
        .inject_context(&sent, &mut HeaderInjector(headers));
    if headers.get(&TRACESTATE).is_some_and(|v| v.is_empty()) {
        headers.remove(TRACESTATE);
    }
    Some(UpstreamSpan(span))
}

tokio::task_local! {
    /// The span of the request whose pipeline runs in this task: the
    /// parent of its state-store calls.
    static STORE_PARENT: RequestTrace;
}

/// Runs `call` (a request's pipeline) with the request's span as the
/// parent of the state-store calls made in it. Without a sampled span it
/// is `call` itself.
///
/// A plain function returning one of two futures, not an `async fn`: that
/// would hold `call` twice (its argument and what it awaits), and the
/// request's future is moved and boxed by size.
pub fn in_request<F: std::future::Future>(
    trace: Option<RequestTrace>,
    call: F,
) -> futures_util::future::Either<F, tokio::task::futures::TaskLocalFuture<RequestTrace, F>> {
    use futures_util::future::Either;
    match trace {
        Some(trace) if trace.0.context.is_sampled() => {
            Either::Right(STORE_PARENT.scope(trace, call))
        }
        _ => Either::Left(call),
    }
}

/// One Redis call, a child span of the request's when it runs in one's
/// pipeline ([`in_request`]); otherwise (or with tracing off) just `call`.
pub async fn store_call<T, E, F>(operation: &'static str, call: F) -> Result<T, E>
where
    F: std::future::Future<Output = Result<T, E>>,
{
    let Ok(mut span) = STORE_PARENT.try_with(|trace| {
        let parent = Context::new().with_remote_span_context(trace.0.context.clone());
        let tracer = &trace.0.tracer.tracer;
        tracer
            .span_builder(operation)
            .with_kind(SpanKind::Client)
            .with_attributes([
                KeyValue::new("db.system.name", "redis"),
                KeyValue::new("db.operation.name", operation),
            ])
            .start_with_context(tracer, &parent)
    }) else {
        return call.await;
    };
    let result = call.await;
    if result.is_err() {
        span.set_status(Status::error("the store call failed"));
    }
    span.end();
    result
}

impl UpstreamSpan {
    /// The upstream answered with `status`, or failed with `code`.
    pub fn end(mut self, outcome: Result<u16, Code>) {
        match outcome {
            Ok(status) => {
                self.0.set_attribute(KeyValue::new(
                    "http.response.status_code",
                    i64::from(status),
                ));
                if status >= 500 {
                    self.0.set_status(Status::error(""));
                }
            }
            Err(code) => {
                self.0
                    .set_attribute(KeyValue::new("tollgate.code", code.as_str()));
                self.0.set_status(Status::error(code.as_str()));
            }
        }
        self.0.end();
    }
}

/// Ends the request's span with what the call came to; the trace id for
/// the access log.
pub fn finish(cx: &RequestContext, status: u16, code: Option<&str>) -> Option<TraceIdText> {
    let trace = cx.trace.as_ref()?;
    let mut id = TraceIdText([b'0'; 32]);
    // 16 bytes always fill the 32 digits.
    let _ = hex::encode_to_slice(trace.0.context.trace_id().to_bytes(), &mut id.0);
    if !trace.0.context.is_sampled() {
        return Some(id);
    }
    let mut recording = trace.0.span.lock();
    let Recording { span, rate_limit } = &mut *recording;
    let mut attributes = Vec::with_capacity(10);
    attributes.push(KeyValue::new(
        "http.response.status_code",
        i64::from(status),
    ));
    if let Some(op) = &cx.operation {
        span.update_name(format!("{} {}", trace.0.method, op.id));
        attributes.push(KeyValue::new("tollgate.api", op.api.to_string()));
        attributes.push(KeyValue::new("tollgate.operation", op.id.to_string()));
    }
    if let Some(client) = &cx.client {
        attributes.push(KeyValue::new("tollgate.client", client.id.to_string()));
        if let Some(key_id) = &client.key_id {
            attributes.push(KeyValue::new("tollgate.key_id", key_id.to_string()));
        }
    }
    if let Some(code) = code {
        attributes.push(KeyValue::new("tollgate.code", code.to_owned()));
    }
    if let Some(limit) = rate_limit.as_ref().or(cx.rate_limit.as_ref()) {
        let decision = if code == Some(Code::RateLimited.as_str()) {
            "limited"
        } else {
            "allowed"
        };
        attributes.push(KeyValue::new("tollgate.rate_limit.decision", decision));
        attributes.push(KeyValue::new(
            "tollgate.rate_limit.policy",
            limit.policy.to_string(),
        ));
        attributes.push(KeyValue::new(
            "tollgate.rate_limit.limit",
            limit.limit as i64,
        ));
        attributes.push(KeyValue::new(
            "tollgate.rate_limit.remaining",
            limit.remaining as i64,
        ));
    }
    span.set_attributes(attributes);
    if status >= 500 {
        span.set_status(Status::error(code.unwrap_or("").to_owned()));
    }
    span.end();
    Some(id)
}

impl TraceIdText {
    /// The 32 lowercase hex digits.
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).unwrap_or("")
    }
}
