//! Prometheus metrics: one registry per process (it lives in `Deps`, so a
//! reload keeps every counter), the per-operation handles the request path
//! uses, and the text the admin listener's `GET /metrics` serves.
//!
//! Label cardinality is bounded by the config: `api`, `operation`, `policy`
//! and `client` are names written in it (an anonymous caller is
//! `anonymous`, a request that matched no route is `operation="unrouted"`
//! with `api=""`), `status` and `code` are small fixed sets. Raw paths and
//! addresses never become labels.
//!
//! The request path does no label formatting: each operation gets an
//! [`OperationMetrics`] at compile with its histograms already looked up,
//! and a small per-operation cache of `(client, status)` counters, so the
//! common case is one read lock on that operation's cache and atomic
//! increments; only a first-seen `(client, status)` takes the family lock.

use parking_lot::RwLock;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::collections::HashMap;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use crate::clock::Nanos;
use crate::problem::{Code, RejectedWith};

/// The label value for calls no credential identified.
pub const ANONYMOUS: &str = "anonymous";
/// The `operation` label of requests that matched no route.
pub const UNROUTED: &str = "unrouted";

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    api: Arc<str>,
    operation: Arc<str>,
    client: Arc<str>,
    status: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UnitLabels {
    api: Arc<str>,
    operation: Arc<str>,
    client: Arc<str>,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OperationLabels {
    api: Arc<str>,
    operation: Arc<str>,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RejectionLabels {
    policy: Arc<str>,
    code: &'static str,
    mode: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UpstreamErrorLabels {
    api: Arc<str>,
    operation: Arc<str>,
    code: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CacheLabels {
    policy: Arc<str>,
    result: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PolicyLabels {
    policy: Arc<str>,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReloadLabels {
    result: &'static str,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// Seconds, from 1ms to about 33s.
fn duration_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

/// Every metric the gateway keeps.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    request_duration: HistogramFamily<OperationLabels>,
    upstream_duration: HistogramFamily<OperationLabels>,
    policy_rejections: Family<RejectionLabels, Counter>,
    upstream_errors: Family<UpstreamErrorLabels, Counter>,
    in_flight: Gauge,
    reloads: Family<ReloadLabels, Counter>,
    store_errors: Counter,
    bans_active: Gauge,
    cache_lookups: Family<CacheLabels, Counter>,
    cache_bytes: Family<PolicyLabels, Gauge>,
    access_log_dropped: Counter,
    call_log_dropped: Counter,
    task_units: Family<UnitLabels, Counter>,
    cost_header_invalid: Family<OperationLabels, Counter>,
    /// Usage over time, for the status page's charts.
    series: crate::usage_series::UsageSeries,
    trace_spans_dropped: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// A registry holding every metric, all at zero.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("tollgate");
        let requests = Family::<RequestLabels, Counter>::default();
        let request_duration: HistogramFamily<OperationLabels> =
            Family::new_with_constructor(duration_histogram);
        let upstream_duration: HistogramFamily<OperationLabels> =
            Family::new_with_constructor(duration_histogram);
        let policy_rejections = Family::<RejectionLabels, Counter>::default();
        let upstream_errors = Family::<UpstreamErrorLabels, Counter>::default();
        let in_flight = Gauge::default();
        let reloads = Family::<ReloadLabels, Counter>::default();
        let store_errors = Counter::default();
        let bans_active = Gauge::default();
        let cache_lookups = Family::<CacheLabels, Counter>::default();
        let cache_bytes = Family::<PolicyLabels, Gauge>::default();
        let access_log_dropped = Counter::default();
        let call_log_dropped = Counter::default();
        let task_units = Family::<UnitLabels, Counter>::default();
        let cost_header_invalid = Family::<OperationLabels, Counter>::default();
        let trace_spans_dropped = Counter::default();
        // Counters get `_total` from the registry.
        registry.register(
            "requests",
            "Requests answered, by API, operation, client and status",
            requests.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "Time from request to response head, by API and operation",
            request_duration.clone(),
        );
        registry.register(
            "upstream_duration_seconds",
            "Time the upstream took to answer with its head, by API and operation",
            upstream_duration.clone(),
        );
        registry.register(
            "policy_rejections",
            "Refusals by policy and code; mode=report counts report-only would-rejections",
            policy_rejections.clone(),
        );
        registry.register(
            "upstream_errors",
            "Calls the upstream failed (unreachable, timed out, invalid answer)",
            upstream_errors.clone(),
        );
        registry.register(
            "requests_in_flight",
            "Requests being answered now",
            in_flight.clone(),
        );
        registry.register(
            "config_reloads",
            "Config reloads by result (ok or failed)",
            reloads.clone(),
        );
        registry.register(
            "store_errors",
            "State store calls that failed (seen by metering, readiness and fail_closed refusals)",
            store_errors.clone(),
        );
        registry.register(
            "bans_active",
            "Active bans, counted at scrape",
            bans_active.clone(),
        );
        registry.register(
            "cache_lookups",
            "Response cache lookups by policy and result (hit or miss)",
            cache_lookups.clone(),
        );
        registry.register(
            "cache_bytes",
            "Bytes held by each response cache policy (entries, headers, keys and overhead)",
            cache_bytes.clone(),
        );
        registry.register(
            "access_log_dropped",
            "Access-log lines dropped: the writer was behind (its buffer full) or could not write",
            access_log_dropped.clone(),
        );
        registry.register(
            "call_log_dropped",
            "Call-log entries dropped: the queue to the store was full, or the store failed",
            call_log_dropped.clone(),
        );
        registry.register(
            "task_units",
            "Task units charged for forwarded calls (declared cost, or the upstream's cost header), by API, operation and client",
            task_units.clone(),
        );
        registry.register(
            "cost_header_invalid",
            "Upstream answers whose cost header was not a whole number of units (the declared cost was charged)",
            cost_header_invalid.clone(),
        );
        registry.register(
            "trace_spans_dropped",
            "Finished spans dropped: the export queue (tracing.max_queue) was full",
            trace_spans_dropped.clone(),
        );
        Metrics {
            registry,
            requests,
            request_duration,
            upstream_duration,
            policy_rejections,
            upstream_errors,
            in_flight,
            reloads,
            store_errors,
            bans_active,
            cache_lookups,
            cache_bytes,
            access_log_dropped,
            call_log_dropped,
            task_units,
            cost_header_invalid,
            series: Default::default(),
            trace_spans_dropped,
        }
    }

    /// The `tollgate_cost_header_invalid_total` counter of one operation.
    pub fn cost_header_invalid(&self, api: &str, operation: &str) -> Counter {
        self.cost_header_invalid
            .get_or_create_owned(&OperationLabels {
                api: api.into(),
                operation: operation.into(),
            })
    }

    /// The counter the access log's sink counts dropped lines in.
    pub fn access_log_dropped(&self) -> Counter {
        self.access_log_dropped.clone()
    }

    /// The counter the call log counts dropped entries in.
    pub fn call_log_dropped(&self) -> Counter {
        self.call_log_dropped.clone()
    }

    /// The counter the trace exporter's queue counts dropped spans in.
    pub fn trace_spans_dropped(&self) -> Counter {
        self.trace_spans_dropped.clone()
    }

    /// The handles of one `cache` policy.
    pub fn cache(&self, policy: &Arc<str>) -> CacheMetrics {
        let lookups = |result| {
            self.cache_lookups.get_or_create_owned(&CacheLabels {
                policy: policy.clone(),
                result,
            })
        };
        CacheMetrics {
            hits: lookups("hit"),
            misses: lookups("miss"),
            bytes: self.cache_bytes.get_or_create_owned(&PolicyLabels {
                policy: policy.clone(),
            }),
        }
    }

    /// The handles one operation's requests use; built once per compile.
    pub fn operation(&self, api: &Arc<str>, operation: &Arc<str>) -> Arc<OperationMetrics> {
        let labels = OperationLabels {
            api: api.clone(),
            operation: operation.clone(),
        };
        Arc::new(OperationMetrics {
            request_duration: self.request_duration.get_or_create_owned(&labels),
            upstream_duration: self.upstream_duration.get_or_create_owned(&labels),
            api: api.clone(),
            operation: operation.clone(),
            counters: RwLock::default(),
            unit_counters: RwLock::default(),
            usage: UsageFields::new(operation),
        })
    }

    /// The handles of requests that matched no route.
    pub fn unrouted(&self) -> Arc<OperationMetrics> {
        self.operation(&Arc::from(""), &Arc::from(UNROUTED))
    }

    /// A request is being answered until the guard drops.
    pub fn in_flight(&self) -> InFlight {
        self.in_flight.inc();
        InFlight(self.in_flight.clone())
    }

    /// Usage over time (this process's calls).
    pub fn series(&self) -> &crate::usage_series::UsageSeries {
        &self.series
    }

    /// Counts one metered call in the usage series, at `now`.
    pub fn record_series(&self, op: &OperationMetrics, outcome: &Outcome<'_>, now: Nanos) {
        let client = outcome.client.map_or(ANONYMOUS, |c| &**c);
        self.series.record(
            client,
            &op.operation,
            now,
            crate::usage_series::Sample {
                duration: outcome.duration,
                refused: outcome.rejected.map(|r| r.code),
                units: outcome.units,
            },
        );
    }

    /// Counts one answered request.
    pub fn observe(&self, op: &OperationMetrics, outcome: &Outcome<'_>) {
        op.count(&self.requests, outcome.client, outcome.status);
        op.request_duration.observe(outcome.duration.as_secs_f64());
        if outcome.units > 0 {
            op.count_units(&self.task_units, outcome.client, outcome.units);
        }
        if let Some(upstream) = outcome.upstream {
            op.upstream_duration.observe(upstream.as_secs_f64());
        }
        if let Some(rejected) = outcome.rejected {
            if let Some(policy) = &rejected.policy {
                self.policy_rejections
                    .get_or_create(&RejectionLabels {
                        policy: policy.clone(),
                        code: rejected.code.as_str(),
                        mode: "enforce",
                    })
                    .inc();
            }
            match rejected.code {
                Code::UpstreamUnavailable
                | Code::UpstreamTimeout
                | Code::InvalidUpstreamResponse => {
                    self.upstream_errors
                        .get_or_create(&UpstreamErrorLabels {
                            api: op.api.clone(),
                            operation: op.operation.clone(),
                            code: rejected.code.as_str(),
                        })
                        .inc();
                }
                _ => {}
            }
        }
        for (policy, code) in outcome.would_reject {
            self.policy_rejections
                .get_or_create(&RejectionLabels {
                    policy: policy.clone(),
                    code: code.as_str(),
                    mode: "report",
                })
                .inc();
        }
    }

    /// Counts a config reload, `ok` or failed (`tollgate_config_reloads_total`).
    pub fn record_reload(&self, ok: bool) {
        let result = if ok { "ok" } else { "failed" };
        self.reloads.get_or_create(&ReloadLabels { result }).inc();
    }

    /// Brings `tollgate_store_errors_total` up to the store's own count of
    /// failed calls (every failure, whether a policy failed open or closed,
    /// or the admin API asked). The store's count only grows.
    pub fn sync_store_errors(&self, store_errors_total: u64) {
        let seen = self.store_errors.get();
        if store_errors_total > seen {
            self.store_errors.inc_by(store_errors_total - seen);
        }
    }

    /// The OpenMetrics text of every metric; `bans_active` is what the
    /// caller just counted in the store.
    pub fn render(&self, bans_active: Option<i64>) -> String {
        if let Some(bans) = bans_active {
            self.bans_active.set(bans);
        }
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// The content type of [`Metrics::render`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The content type of [`to_prometheus_text`]'s text.
pub const PROMETHEUS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Whether a scraper's `Accept` asks for the classic Prometheus text
/// format: it names `text/plain` and not OpenMetrics. Anything else (no
/// `Accept`, `*/*`, OpenMetrics) gets OpenMetrics.
pub fn wants_prometheus_text(accept: Option<&str>) -> bool {
    let Some(accept) = accept else {
        return false;
    };
    let accept = accept.to_ascii_lowercase();
    accept.contains("text/plain") && !accept.contains("application/openmetrics-text")
}

/// Rewrites OpenMetrics text (as [`Metrics::render`] writes it) into the
/// Prometheus text format 0.0.4: a counter's `HELP` and `TYPE` name its
/// `_total` series (OpenMetrics names the family without it), `UNIT`
/// lines, exemplars and the `# EOF` marker go, and `unknown` is `untyped`.
pub fn to_prometheus_text(openmetrics: &str) -> String {
    let mut out = String::with_capacity(openmetrics.len());
    // Families whose samples are `NAME_total` in either format.
    let counters: std::collections::HashSet<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" counter"))
        .collect();
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let meta = ["# HELP ", "# TYPE "]
            .into_iter()
            .find_map(|prefix| Some((prefix, line.strip_prefix(prefix)?)));
        match meta {
            Some((prefix, rest)) => {
                let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                out.push_str(prefix);
                out.push_str(name);
                if counters.contains(name) && !name.ends_with("_total") {
                    out.push_str("_total");
                }
                out.push(' ');
                out.push_str(if prefix == "# TYPE " && tail == "unknown" {
                    "untyped"
                } else {
                    tail
                });
            }
            None if line.starts_with('#') => continue,
            // A sample; an exemplar follows ` # ` and is OpenMetrics only.
            None => out.push_str(line.split_once(" # ").map_or(line, |(sample, _)| sample)),
        }
        out.push('\n');
    }
    out
}

/// Decrements the in-flight gauge when the request is answered (or its
/// future is dropped because the caller went away).
pub struct InFlight(Gauge);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// The counters one `cache` policy updates as it answers.
#[derive(Debug, Clone, Default)]
pub struct CacheMetrics {
    /// Calls answered from the cache.
    pub hits: Counter,
    /// Calls the cache could not answer (forwarded).
    pub misses: Counter,
    /// What the policy's entries weigh now.
    pub bytes: Gauge,
}

/// What one request came to, as the metrics and usage meter see it.
pub struct Outcome<'a> {
    /// The authenticated client, if any.
    pub client: Option<&'a Arc<str>>,
    /// The status the caller got.
    pub status: u16,
    /// How long the gateway took to answer, from the request's arrival.
    pub duration: Duration,
    /// The time spent waiting for the upstream's response head, when forwarded.
    pub upstream: Option<Duration>,
    /// The code (and policy) of a refusal, when the gateway answered itself.
    pub rejected: Option<&'a RejectedWith>,
    /// The codes `report_only` policies would have refused with, by policy.
    pub would_reject: &'a [(Arc<str>, Code)],
    /// The request body's bytes (its `Content-Length`, when it has one).
    pub bytes_in: u64,
    /// The response body's bytes.
    pub bytes_out: u64,
    /// Answered by a `cache` policy: no workflow ran.
    pub cache_hit: bool,
    /// Task units the call cost (0 when the gateway answered it).
    pub units: u64,
}

/// One operation's handles.
#[derive(Debug)]
pub struct OperationMetrics {
    api: Arc<str>,
    operation: Arc<str>,
    request_duration: Histogram,
    upstream_duration: Histogram,
    /// `status -> [(client, counter)]`: clients are few per status, so a
    /// scan compares a handful of `&str` and allocates nothing.
    counters: RwLock<HashMap<u16, Vec<ClientCounter>>>,
    /// `tollgate_task_units_total` per client, cached like `counters`.
    unit_counters: RwLock<Vec<ClientCounter>>,
    usage: UsageFields,
}

impl OperationMetrics {
    /// Adds `units` to the client's `tollgate_task_units_total`: a read
    /// lock and an atomic add, once the client's counter is cached.
    fn count_units(
        &self,
        family: &Family<UnitLabels, Counter>,
        client: Option<&Arc<str>>,
        units: u64,
    ) {
        let same = |c: &Option<Arc<str>>| c.as_deref() == client.map(|a| &**a);
        if let Some((_, counter)) = self.unit_counters.read().iter().find(|(c, _)| same(c)) {
            counter.inc_by(units);
            return;
        }
        let counter = family.get_or_create_owned(&UnitLabels {
            api: self.api.clone(),
            operation: self.operation.clone(),
            client: client.cloned().unwrap_or_else(|| ANONYMOUS.into()),
        });
        counter.inc_by(units);
        let mut cache = self.unit_counters.write();
        if !cache.iter().any(|(c, _)| same(c)) {
            cache.push((client.cloned(), counter));
        }
    }

    fn count(
        &self,
        family: &Family<RequestLabels, Counter>,
        client: Option<&Arc<str>>,
        status: u16,
    ) {
        let same = |c: &Option<Arc<str>>| c.as_deref() == client.map(|a| &**a);
        if let Some(counters) = self.counters.read().get(&status) {
            if let Some((_, counter)) = counters.iter().find(|(c, _)| same(c)) {
                counter.inc();
                return;
            }
        }
        let counter = family.get_or_create_owned(&RequestLabels {
            api: self.api.clone(),
            operation: self.operation.clone(),
            client: client.cloned().unwrap_or_else(|| ANONYMOUS.into()),
            status,
        });
        counter.inc();
        let mut cache = self.counters.write();
        let entry = cache.entry(status).or_default();
        if !entry.iter().any(|(c, _)| same(c)) {
            entry.push((client.cloned(), counter));
        }
    }

    /// The usage counters (`Store::usage_add` fields) one call adds to its
    /// client: totals and this operation's share.
    pub fn usage_counts<'a>(&'a self, outcome: &Outcome<'_>, out: &mut Vec<(&'a str, u64)>) {
        let u = &self.usage;
        out.push(("calls", 1));
        out.push(("bytes_in", outcome.bytes_in));
        out.push(("bytes_out", outcome.bytes_out));
        if self.operation.as_ref() != UNROUTED {
            out.push((&u.calls, 1));
            out.push((&u.bytes_in, outcome.bytes_in));
            out.push((&u.bytes_out, outcome.bytes_out));
        }
        if outcome.units > 0 {
            out.push(("units", outcome.units));
            if self.operation.as_ref() != UNROUTED {
                out.push((&u.units, outcome.units));
            }
        }
        if outcome.cache_hit {
            out.push(("cache_hits", 1));
            out.push((&u.cache_hits, 1));
        }
        if let Some(rejected) = outcome.rejected {
            if let Some(i) = Code::ALL.iter().position(|c| *c == rejected.code) {
                out.push((&REJECTED_FIELDS[i], 1));
                if self.operation.as_ref() != UNROUTED {
                    out.push((&u.rejected[i], 1));
                }
            }
        }
    }
}

/// A `tollgate_requests_total` counter of one client (`None`: anonymous).
type ClientCounter = (Option<Arc<str>>, Counter);

/// Usage field names, spelled once per operation at compile.
#[derive(Debug)]
struct UsageFields {
    calls: String,
    bytes_in: String,
    bytes_out: String,
    cache_hits: String,
    units: String,
    /// `op:{id}:rejected:{code}`, indexed like `Code::ALL`.
    rejected: Vec<String>,
}

impl UsageFields {
    fn new(operation: &str) -> UsageFields {
        UsageFields {
            calls: format!("op:{operation}:calls"),
            bytes_in: format!("op:{operation}:bytes_in"),
            bytes_out: format!("op:{operation}:bytes_out"),
            cache_hits: format!("op:{operation}:cache_hits"),
            units: format!("op:{operation}:units"),
            rejected: Code::ALL
                .iter()
                .map(|c| format!("op:{operation}:rejected:{}", c.as_str()))
                .collect(),
        }
    }
}

/// `rejected:{code}`, indexed like `Code::ALL`.
static REJECTED_FIELDS: LazyLock<Vec<String>> = LazyLock::new(|| {
    Code::ALL
        .iter()
        .map(|c| format!("rejected:{}", c.as_str()))
        .collect()
});

#[cfg(test)]
mod tests {

    #[test]
    fn the_classic_text_format_names_counters_by_their_total_series() {
        let metrics = Metrics::default();
        metrics.record_reload(true);
        let open = metrics.render(Some(2));
        assert!(
            open.contains("# TYPE tollgate_config_reloads counter"),
            "{open}"
        );
        let classic = to_prometheus_text(&open);
        assert!(classic.contains("# HELP tollgate_config_reloads_total Config reloads"));
        assert!(classic.contains("# TYPE tollgate_config_reloads_total counter"));
        assert!(classic.contains("tollgate_config_reloads_total{result=\"ok\"} 1"));
        assert!(classic.contains("# TYPE tollgate_bans_active gauge"));
        assert!(!classic.contains("# EOF") && !classic.contains("# UNIT"));
        assert!(wants_prometheus_text(Some(
            "text/plain;version=0.0.4;q=0.3,*/*;q=0.1"
        )));
        assert!(!wants_prometheus_text(Some(
            "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"
        )));
        assert!(!wants_prometheus_text(None));
        assert!(!wants_prometheus_text(Some("*/*")));
    }

    use super::*;

    #[test]
    fn requests_are_counted_by_client_and_status_with_anonymous_named() {
        let metrics = Metrics::new();
        let op = metrics.operation(&"dir".into(), &"getEmployee".into());
        let client: Arc<str> = "hr".into();
        let outcome = |client, status| Outcome {
            client,
            status,
            duration: Duration::from_millis(3),
            upstream: Some(Duration::from_millis(2)),
            rejected: None,
            would_reject: &[],
            bytes_in: 0,
            bytes_out: 10,
            cache_hit: false,
            units: 0,
        };
        metrics.observe(&op, &outcome(Some(&client), 200));
        metrics.observe(&op, &outcome(Some(&client), 200));
        metrics.observe(&op, &outcome(None, 401));
        let text = metrics.render(Some(2));
        assert!(text.contains(
            r#"tollgate_requests_total{api="dir",operation="getEmployee",client="hr",status="200"} 2"#
        ), "{text}");
        assert!(text.contains(
            r#"tollgate_requests_total{api="dir",operation="getEmployee",client="anonymous",status="401"} 1"#
        ));
        assert!(text.contains("tollgate_bans_active 2"));
        assert!(text.contains(
            r#"tollgate_request_duration_seconds_count{api="dir",operation="getEmployee"} 3"#
        ));
    }

    #[test]
    fn task_units_are_counted_per_client_and_in_usage() {
        let metrics = Metrics::new();
        let op = metrics.operation(&"reports".into(), &"run".into());
        let hr: Arc<str> = "hr".into();
        let outcome = |client, units| Outcome {
            client,
            status: 200,
            duration: Duration::ZERO,
            upstream: None,
            rejected: None,
            would_reject: &[],
            bytes_in: 0,
            bytes_out: 0,
            cache_hit: false,
            units,
        };
        metrics.observe(&op, &outcome(Some(&hr), 7));
        metrics.observe(&op, &outcome(Some(&hr), 5));
        metrics.observe(&op, &outcome(None, 2));
        metrics.observe(&op, &outcome(None, 0));
        let text = metrics.render(None);
        assert!(
            text.contains(
                r#"tollgate_task_units_total{api="reports",operation="run",client="hr"} 12"#
            ),
            "{text}"
        );
        assert!(text.contains(
            r#"tollgate_task_units_total{api="reports",operation="run",client="anonymous"} 2"#
        ));
        let mut counts = Vec::new();
        op.usage_counts(&outcome(Some(&hr), 7), &mut counts);
        assert!(counts.contains(&("units", 7)));
        assert!(counts.contains(&("op:run:units", 7)));
        let mut free = Vec::new();
        op.usage_counts(&outcome(Some(&hr), 0), &mut free);
        assert!(!free.iter().any(|(f, _)| f.ends_with("units")));
    }

    #[test]
    fn usage_names_the_operation_and_the_refusal_code() {
        let metrics = Metrics::new();
        let op = metrics.operation(&"dir".into(), &"getEmployee".into());
        let rejected = RejectedWith {
            code: Code::RateLimited,
            policy: Some("per-client".into()),
        };
        let outcome = Outcome {
            client: None,
            status: 429,
            duration: Duration::ZERO,
            upstream: None,
            rejected: Some(&rejected),
            would_reject: &[],
            bytes_in: 5,
            bytes_out: 7,
            cache_hit: false,
            units: 0,
        };
        let mut counts = Vec::new();
        op.usage_counts(&outcome, &mut counts);
        assert!(counts.contains(&("op:getEmployee:calls", 1)));
        assert!(counts.contains(&("rejected:rate_limited", 1)));
        assert!(counts.contains(&("op:getEmployee:rejected:rate_limited", 1)));
        assert!(counts.contains(&("bytes_out", 7)));
    }
}
