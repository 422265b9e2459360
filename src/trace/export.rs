//! How finished spans leave: the SDK's batch span processor (its own
//! thread) behind a gate that drops and counts once `max_queue` spans are
//! waiting, feeding the OTLP/HTTP protobuf exporter, whose HTTP client is
//! the hyper-util client over a small runtime of its own on that thread.
//! No request ever waits for a span to be exported.

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use opentelemetry::Context;
use opentelemetry_http::{HttpClient, HttpError, Request, Response};
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, Span, SpanData, SpanExporter, SpanProcessor,
};
use opentelemetry_sdk::Resource;
use prometheus_client::metrics::counter::Counter;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::config::Checked;

/// An export's answer is read up to this size (a collector says little).
const MAX_ANSWER: usize = 64 << 10;

/// The span processor of a `tracing:` config: the gate in front of the
/// batch processor, and the exporter behind it.
pub(super) fn processor(config: &Checked, dropped: Counter) -> Result<Gated, String> {
    let client = ExportClient::new(config.export_timeout)?;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_http_client(client)
        .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
        .with_endpoint(config.endpoint.to_string())
        .with_timeout(config.export_timeout)
        .build()
        .map_err(|e| format!("cannot build the OTLP exporter: {e}"))?;
    let waiting = Arc::new(AtomicUsize::new(0));
    let batch = BatchSpanProcessor::builder(Counted {
        inner: exporter,
        waiting: waiting.clone(),
    })
    .with_batch_config(
        BatchConfigBuilder::default()
            // The gate never lets more than this many in, so the
            // processor's own queue (its drops are not counted where
            // /metrics can see them) never fills.
            .with_max_queue_size(config.max_queue)
            .with_max_export_batch_size(config.max_batch)
            .with_scheduled_delay(config.export_interval)
            .build(),
    )
    .build();
    Ok(Gated {
        inner: batch,
        waiting,
        capacity: config.max_queue,
        dropped,
    })
}

// === Gated: the bounded queue that counts its drops ===

/// Lets a finished span into the batch processor while fewer than
/// `capacity` are waiting for export; otherwise drops it and counts it.
#[derive(Debug)]
pub(super) struct Gated {
    inner: BatchSpanProcessor,
    /// Spans handed to `inner` whose export has not started.
    waiting: Arc<AtomicUsize>,
    capacity: usize,
    dropped: Counter,
}

impl SpanProcessor for Gated {
    fn on_start(&self, span: &mut Span, cx: &Context) {
        self.inner.on_start(span, cx);
    }

    fn on_end(&self, span: SpanData) {
        if !span.span_context.is_sampled() {
            return;
        }
        let admitted = self
            .waiting
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.capacity).then_some(n + 1)
            })
            .is_ok();
        if admitted {
            self.inner.on_end(span);
        } else {
            self.dropped.inc();
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

/// The exporter, telling the gate when spans leave the queue.
#[derive(Debug)]
struct Counted<E> {
    inner: E,
    waiting: Arc<AtomicUsize>,
}

impl<E: SpanExporter> SpanExporter for Counted<E> {
    fn export(
        &self,
        batch: Vec<SpanData>,
    ) -> impl std::future::Future<Output = OTelSdkResult> + Send {
        let len = batch.len();
        // Never below zero, whatever the processor hands over.
        let _ = self
            .waiting
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                Some(n.saturating_sub(len))
            });
        self.inner.export(batch)
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

// === ExportClient: OTLP requests over hyper-util ===

/// The exporter's HTTP client. The batch processor exports from its own
/// thread, outside any tokio runtime, so the client brings a
/// current-thread runtime that runs only while an export is sent.
struct ExportClient {
    runtime: tokio::runtime::Runtime,
    client: Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>,
    timeout: Duration,
}

impl std::fmt::Debug for ExportClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExportClient")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl ExportClient {
    fn new(timeout: Duration) -> Result<ExportClient, String> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the exporter's runtime: {e}"))?;
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls_native_certs::load_native_certs().certs {
            // A broken system certificate is skipped, as for upstreams.
            let _ = roots.add(cert);
        }
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("cannot set up TLS for the exporter: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .build();
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        Ok(ExportClient {
            runtime,
            client,
            timeout,
        })
    }
}

#[async_trait::async_trait]
impl HttpClient for ExportClient {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let (parts, body) = request.into_parts();
        let request = Request::from_parts(parts, Full::new(body));
        // Called on the batch processor's thread, never a runtime's.
        self.runtime.block_on(async {
            let exchange = async {
                let response = self.client.request(request).await?;
                let (head, body) = response.into_parts();
                let body = Limited::new(body, MAX_ANSWER).collect().await?.to_bytes();
                Ok::<_, HttpError>(Response::from_parts(head, body))
            };
            match tokio::time::timeout(self.timeout, exchange).await {
                Ok(answer) => answer,
                Err(_) => Err("the collector did not answer in time".into()),
            }
        })
    }
}
