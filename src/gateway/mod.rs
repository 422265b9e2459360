//! The compiled, immutable `Gateway`: settings, the route table, and one
//! prebuilt pipeline per operation, and the resources that outlive it
//! (`Deps`). Its two jobs live beside this file:
//! - `compile.rs`: a loaded config becomes a `Gateway` (every mistake
//!   collected as FILE:LINE:COL), and the effective-policies rule;
//! - `entry.rs`: `Gateway::handle`, the per-request chain (context, head
//!   limits, arrival clean-up, route, pipeline, access log, metrics, usage);
//! - `handle.rs`: the [`GatewayHandle`] the MCP endpoint dispatches tool
//!   calls through, to their own operation.
//!
//! A reload compiles a new `Gateway` and swaps it in whole.

use http::Method;
use ipnet::IpNet;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::access_log::AccessLog;
use crate::agents::Agents;
use crate::clock::SharedClock;
use crate::config::schema::{GraphqlSelector, StoreKind};
use crate::config::{ConfigError, LoadedConfig, Reading};
use crate::context::OperationInfo;
use crate::credentials::jwks::JwksRegistry;
use crate::metrics::{Metrics, OperationMetrics};
use crate::policy::cache::CacheRegistry;
use crate::policy::PolicyMeta;
use crate::proxy::{UpstreamClients, UpstreamTarget};
use crate::routing::RouteTable;
use crate::stack::Pipeline;
use crate::state::{AnyStore, RedisStore};
use rustls::sign::CertifiedKey;

mod compile;
mod entry;
mod handle;

pub use crate::address::{canonical_ip, parse_cidr};
pub use compile::effective;
pub(crate) use compile::inline_name;
use compile::Compiler;
pub use handle::{AgentIdentity, DirectCall, GatewayHandle};

/// Resources that outlive one compiled config (so a reload keeps them).
#[derive(Clone)]
pub struct Deps {
    /// The clock limiters, quotas, bans and usage read time from (a fake one in tests).
    pub clock: SharedClock,
    /// The HTTP client upstream calls go through (its pools outlive reloads).
    pub client: Arc<UpstreamClients>,
    /// Rate-limit buckets, quotas and bans: shared by every `Gateway`
    /// compiled with these deps, so a reload keeps the counters.
    pub store: AnyStore,
    /// Prometheus metrics: like the store, they outlive a reload.
    pub metrics: Arc<Metrics>,
    /// JWT keys fetched from a `jwks_url`: a reload that keeps the URL
    /// keeps them.
    pub jwks: Arc<JwksRegistry>,
    /// Response caches, kept by a reload that leaves the config unchanged.
    pub caches: Arc<CacheRegistry>,
    /// The access log's sink (its destination is read at start; a reload
    /// keeps it).
    pub access_log: AccessLog,
    /// The call log's queue and writer (its bounds are read at start).
    pub call_log: crate::call_log::CallLog,
    /// The tracer and its exporter (`tracing:`, read at start; a reload
    /// keeps it).
    pub tracing: crate::trace::Tracing,
}

impl Deps {
    /// The real clock and a client trusting the system roots plus the
    /// config's `upstream_tls.ca_file`.
    pub fn for_config(loaded: &LoadedConfig, clock: SharedClock) -> Result<Deps, Vec<ConfigError>> {
        let ca_file = loaded
            .config
            .upstream_tls
            .ca_file
            .as_ref()
            .map(|f| loaded.base_dir.join(f));
        let client = crate::proxy::build_client(ca_file.as_deref())
            .map_err(|message| vec![loaded.error_at(&["upstream_tls", "ca_file"], message)])?;
        let store = match loaded.config.state.store {
            StoreKind::Memory => AnyStore::memory(),
            // Only a malformed URL is an error here: Redis being down at
            // start is not (the store connects on first use, and calls fail
            // per `on_store_error` until it answers).
            StoreKind::Redis => {
                let store = RedisStore::from_config(&loaded.config.state, &loaded.base_dir)
                    .map_err(|(at, message)| vec![loaded.error_at(&at, message)])?;
                AnyStore::Redis(Arc::new(store))
            }
        };
        let metrics = Arc::<Metrics>::default();
        let access_log = AccessLog::for_config(loaded, metrics.access_log_dropped())?;
        let call_log = crate::call_log::CallLog::new(
            &loaded.config.call_log,
            store.clone(),
            clock.clone(),
            metrics.call_log_dropped(),
        );
        let tracing = crate::trace::Tracing::for_config(loaded, metrics.trace_spans_dropped())?;
        Ok(Deps {
            access_log,
            call_log,
            tracing,
            jwks: JwksRegistry::new(client.clone(), clock.clone()),
            clock,
            client,
            store,
            caches: Arc::new(CacheRegistry::new(metrics.clone())),
            metrics,
        })
    }
}

/// Listener-level settings from the config.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The public listener's address (`listen`).
    pub listen: SocketAddr,
    /// The certificate files, when the public listener serves HTTPS (`tls`).
    pub tls: Option<TlsFiles>,
    /// The admin listener's address (`admin.listen`), if any.
    pub admin_listen: Option<SocketAddr>,
    /// The environment variable holding the admin token (`admin.token_env`), if any.
    pub admin_token_env: Option<String>,
    /// Peers whose `X-Forwarded-For` is believed (`trusted_proxies`).
    pub trusted_proxies: Vec<IpNet>,
    /// The largest request body accepted, in bytes (`limits.max_body`).
    pub max_body: u64,
    /// The most bytes of request headers accepted (`limits.max_header_bytes`).
    pub max_header_bytes: u64,
    /// How long a connection may take to send its first request head
    /// (`limits.header_read_timeout`).
    pub header_read_timeout: Duration,
    /// How long a request body may stall between bytes (`limits.body_read_timeout`).
    pub body_read_timeout: Duration,
    /// The default upstream deadline (`limits.upstream_timeout`); APIs and operations may set their
    /// own.
    pub upstream_timeout: Duration,
    /// Connections at once, at most, across every worker (`limits.max_connections`).
    pub max_connections: usize,
    /// Connections at once from one address (IPv6 by /64), at most
    /// (`limits.max_connections_per_ip`).
    pub max_connections_per_ip: Option<usize>,
    /// A connection with no request in flight this long is closed (`limits.idle_timeout`).
    pub idle_timeout: Duration,
    /// HTTP/2 PING after this much silence, and its answer's deadline
    /// (`limits.http2_ping_interval`).
    pub http2_ping_interval: Duration,
    /// How long a write may wait for the client to read (`limits.send_timeout`).
    pub send_timeout: Duration,
    /// The base of a request body's total time budget (`limits.body_deadline`; see
    /// `min_body_rate`).
    pub body_deadline: Duration,
    /// Bytes per second (0: `body_deadline` is a plain total deadline).
    pub min_body_rate: u64,
    /// How long a graceful shutdown waits for in-flight requests (`limits.drain_timeout`).
    pub drain_timeout: Duration,
    /// Serving threads (≥ 1).
    pub workers: usize,
    /// The override headers removed on arrival: every one the config does
    /// not let reach the upstream (`allow_override_headers`), made once.
    pub removed_override_headers: Vec<http::HeaderName>,
    /// Whether the `_method` query parameter is removed on arrival.
    pub remove_method_param: bool,
}

/// The public listener's certificate chain and key (PEM), resolved against the config's directory.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// The certificate chain's PEM file.
    pub cert_file: PathBuf,
    /// The private key's PEM file.
    pub key_file: PathBuf,
}

/// One routable operation.
pub struct Operation {
    /// The operation's API and id, shared with every request routed to it.
    pub info: Arc<OperationInfo>,
    /// The operation's method.
    pub method: Method,
    /// The public path template (`base_path` + `path`).
    pub template: String,
    /// Where its calls are forwarded: the operation's `upstream`, or the API's base URL plus the
    /// path.
    pub target: UpstreamTarget,
    /// Effective policies, in config order (for the admin API and OpenAPI).
    pub policies: Vec<Arc<PolicyMeta>>,
    /// The root field this operation publishes at a GraphQL endpoint.
    pub graphql: Option<GraphqlSelector>,
    /// The endpoint its calls are answered by, when it is a GraphQL
    /// operation (shared by every operation at that method and path).
    graphql_endpoint: Option<Arc<crate::graphql::GraphqlEndpoint>>,
    /// Its `path_schema`, checked at the route step.
    path_check: Option<crate::routing::PathParamCheck>,
    /// Its stages and the proxy.
    pipeline: Pipeline,
    /// When it is an agent tool: the pipeline of its tool calls (all but
    /// the gateway-wide limits, which the MCP request already counted).
    tool_pipeline: Option<Pipeline>,
    metrics: Arc<OperationMetrics>,
}

/// A compiled config: the listener settings, the routable operations with their policy
/// pipelines, and what serves the agents; swapped whole on reload.
pub struct Gateway {
    /// The listener-level settings.
    pub settings: Settings,
    /// The config it was compiled from, with its source positions.
    pub loaded: LoadedConfig,
    /// The routable operations, in config order.
    pub operations: Vec<Operation>,
    /// The listener's certificate, read at compile so a reload serves a
    /// renewed one to the next connection (and refuses an unreadable one).
    pub tls_key: Option<Arc<CertifiedKey>>,
    /// The operations offered as agent tools, and the MCP endpoint.
    pub agents: Agents,
    routes: RouteTable,
    unrouted: Pipeline,
    unrouted_metrics: Arc<OperationMetrics>,
    metrics: Arc<Metrics>,
    /// Where usage is metered (the `Deps` store).
    store: AnyStore,
    /// Where each answered request is logged (the `Deps` sink).
    access_log: AccessLog,
    /// The operations' `record:` rules and the call log (`Deps`).
    calls: crate::call_log::Recorder,
    /// The `Deps` clock: when a call is counted in the usage series.
    clock: crate::clock::SharedClock,
    /// The request spans' tracer (the `Deps` one).
    tracing: crate::trace::Tracing,
}

impl Gateway {
    /// Compiles a loaded config. Every mistake found is returned, each with
    /// its file, line and column.
    pub fn compile(loaded: LoadedConfig, deps: &Deps) -> Result<Gateway, Vec<ConfigError>> {
        let compiled = Compiler::new(&loaded, deps).run();
        let ops = compiled.iter().flat_map(|c| c.2.iter());
        let ops = ops.map(|op| (&*op.info.api, &*op.info.id));
        let calls = crate::call_log::Recorder::compile(&loaded, ops, &deps.call_log);
        // Read at start (`Deps`), but a reload still refuses a bad one.
        let traced = crate::trace::check(&loaded);
        let ((settings, tls_key, operations, routes, unrouted, agents), calls) =
            match (compiled, calls, traced) {
                (Ok(compiled), Ok(calls), Ok(_)) => (compiled, calls),
                (compiled, calls, traced) => {
                    let mut errors = Vec::new();
                    errors.extend(compiled.err().into_iter().flatten());
                    errors.extend(calls.err().into_iter().flatten());
                    errors.extend(traced.err().into_iter().flatten());
                    return Err(errors);
                }
            };
        Ok(Gateway {
            settings,
            loaded,
            operations,
            tls_key,
            agents,
            routes,
            unrouted,
            unrouted_metrics: deps.metrics.unrouted(),
            metrics: deps.metrics.clone(),
            store: deps.store.clone(),
            access_log: deps.access_log.clone(),
            calls,
            clock: deps.clock.clone(),
            tracing: deps.tracing.clone(),
        })
    }

    /// Compiles what `reading` could read, adding the compiler's findings
    /// to the reader's: one run reports every mistake of a file.
    pub fn compile_all(mut reading: Reading, deps: &Deps) -> Result<Gateway, Vec<ConfigError>> {
        let Some(loaded) = reading.loaded.take() else {
            return Err(reading.errors);
        };
        match Gateway::compile(loaded, deps) {
            Ok(gateway) if reading.errors.is_empty() => Ok(gateway),
            Ok(_) => Err(reading.errors),
            Err(errors) => {
                reading.add_later(errors);
                Err(reading.errors)
            }
        }
    }

    /// One line: how many APIs, operations and named policies it serves.
    pub fn summary(&self) -> String {
        let apis = self.loaded.config.apis.len();
        format!(
            "{} API{}, {} operation{}, {} named polic{}",
            apis,
            if apis == 1 { "" } else { "s" },
            self.operations.len(),
            if self.operations.len() == 1 { "" } else { "s" },
            self.loaded.config.policies.len(),
            if self.loaded.config.policies.len() == 1 {
                "y"
            } else {
                "ies"
            },
        )
    }

    /// The metrics registry this gateway counts into.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The state store (counters, bans, usage) this gateway uses.
    pub fn store(&self) -> &AnyStore {
        &self.store
    }

    /// Whether `ip` is one of the `trusted_proxies`.
    pub fn is_trusted(&self, ip: IpAddr) -> bool {
        crate::address::is_within(&self.settings.trusted_proxies, ip)
    }

    /// The caller's address (DESIGN §3): see [`crate::address::client_ip`].
    pub fn client_ip(&self, peer: IpAddr, peer_trusted: bool, headers: &http::HeaderMap) -> IpAddr {
        crate::address::client_ip(&self.settings.trusted_proxies, peer, peer_trusted, headers)
    }
}
