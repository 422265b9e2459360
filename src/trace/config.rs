//! The `tracing:` section, as written, and its checks (compiled once into
//! [`super::Tracing`]).
//!
//! ```yaml
//! tracing:
//!   endpoint: http://127.0.0.1:4318       # OTLP/HTTP; /v1/traces added when no path
//!   service_name: tollgate
//!   sampling_ratio: 0.1                   # new traces; a sampled trusted parent is followed
//!   trusted_callers: [10.0.0.0/8]         # who may send traceparent / tracestate
//!   max_queue: 2048                       # finished spans waiting; past it dropped and counted
//!   max_batch: 512
//!   export_interval: 5s
//!   export_timeout: 10s
//! ```

use ipnet::IpNet;
use schemars::JsonSchema;
use serde::Deserialize;
use std::time::Duration;

use crate::config::units::ConfigDuration;

/// OpenTelemetry traces, exported over OTLP/HTTP (protobuf). Read at start
/// (a reload keeps the running exporter).
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TracingConfig {
    /// The collector's OTLP/HTTP URL (`http://` or `https://`). With no path
    /// (`http://collector:4318`) spans are posted to `/v1/traces`; a path is
    /// used as written.
    pub endpoint: String,
    /// The `service.name` resource attribute.
    #[serde(default = "default_service_name")]
    pub service_name: String,
    /// The share of new traces recorded, 0 to 1. A request whose trusted
    /// caller sent a `traceparent` follows that parent's sampled flag.
    #[serde(default = "default_sampling_ratio")]
    pub sampling_ratio: f64,
    /// Callers (CIDRs of the TCP peer) whose `traceparent` and `tracestate`
    /// continue their trace. From anyone else the headers are removed and a
    /// new trace starts.
    #[serde(default)]
    pub trusted_callers: Vec<String>,
    /// Finished spans waiting for export, at most; past it a span is dropped
    /// and counted (`tollgate_trace_spans_dropped_total`), never waited for.
    #[serde(default = "default_max_queue")]
    pub max_queue: usize,
    /// Spans per export request, at most (at most `max_queue`).
    #[serde(default = "default_max_batch")]
    pub max_batch: usize,
    /// How often waiting spans are exported when no batch fills first.
    #[serde(default = "default_export_interval")]
    pub export_interval: ConfigDuration,
    /// How long one export (with its retries) may take.
    #[serde(default = "default_export_timeout")]
    pub export_timeout: ConfigDuration,
}

fn default_service_name() -> String {
    "tollgate".into()
}

fn default_sampling_ratio() -> f64 {
    1.0
}

fn default_max_queue() -> usize {
    2048
}

fn default_max_batch() -> usize {
    512
}

fn default_export_interval() -> ConfigDuration {
    ConfigDuration(Duration::from_secs(5))
}

fn default_export_timeout() -> ConfigDuration {
    ConfigDuration(Duration::from_secs(10))
}

/// A `tracing:` section that passed its checks.
#[derive(Debug, Clone)]
pub struct Checked {
    pub endpoint: http::Uri,
    pub service_name: String,
    pub sampling_ratio: f64,
    pub trusted_callers: Vec<IpNet>,
    pub max_queue: usize,
    pub max_batch: usize,
    pub export_interval: Duration,
    pub export_timeout: Duration,
}

impl TracingConfig {
    /// Every mistake, each as (key under `tracing`, message).
    pub fn check(&self) -> Result<Checked, Vec<(Vec<String>, String)>> {
        let mut errors = Vec::new();
        let mut error = |path: &[&str], message: String| {
            errors.push((path.iter().map(|s| s.to_string()).collect(), message));
        };
        let endpoint = match endpoint_uri(&self.endpoint) {
            Ok(uri) => Some(uri),
            Err(message) => {
                error(&["endpoint"], message);
                None
            }
        };
        if self.service_name.trim().is_empty() {
            error(&["service_name"], "the service name is empty".into());
        }
        if !(0.0..=1.0).contains(&self.sampling_ratio) {
            error(
                &["sampling_ratio"],
                format!(
                    "the sampling ratio is a share from 0 to 1, not {}",
                    self.sampling_ratio
                ),
            );
        }
        let mut trusted_callers = Vec::new();
        for (i, entry) in self.trusted_callers.iter().enumerate() {
            match crate::address::parse_cidr(entry) {
                Ok(net) => trusted_callers.push(net),
                Err(message) => error(&["trusted_callers", &i.to_string()], message),
            }
        }
        if self.max_queue == 0 {
            error(
                &["max_queue"],
                "the queue must hold at least one span".into(),
            );
        }
        if self.max_batch == 0 || self.max_batch > self.max_queue.max(1) {
            error(
                &["max_batch"],
                format!(
                    "a batch holds from 1 to max_queue ({}) spans, not {}",
                    self.max_queue, self.max_batch
                ),
            );
        }
        if self.export_interval.0.is_zero() {
            error(
                &["export_interval"],
                "the interval must be above zero".into(),
            );
        }
        if self.export_timeout.0.is_zero() {
            error(&["export_timeout"], "the timeout must be above zero".into());
        }
        match endpoint {
            Some(endpoint) if errors.is_empty() => Ok(Checked {
                endpoint,
                service_name: self.service_name.clone(),
                sampling_ratio: self.sampling_ratio,
                trusted_callers,
                max_queue: self.max_queue,
                max_batch: self.max_batch,
                export_interval: self.export_interval.0,
                export_timeout: self.export_timeout.0,
            }),
            _ => Err(errors),
        }
    }
}

/// The URL spans are posted to: `endpoint` itself, or with `/v1/traces`
/// when it names no path.
fn endpoint_uri(endpoint: &str) -> Result<http::Uri, String> {
    let uri: http::Uri = endpoint
        .parse()
        .map_err(|e| format!("`{endpoint}` is not a URL: {e}"))?;
    match uri.scheme_str() {
        Some("http") | Some("https") => {}
        _ => return Err(format!("`{endpoint}` is not an http:// or https:// URL")),
    }
    if uri.authority().is_none() {
        return Err(format!("`{endpoint}` names no host"));
    }
    if matches!(uri.path(), "" | "/") && uri.query().is_none() {
        let base = endpoint.trim_end_matches('/');
        return format!("{base}/v1/traces")
            .parse()
            .map_err(|e| format!("`{endpoint}` is not a URL: {e}"));
    }
    Ok(uri)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(yaml: &str) -> TracingConfig {
        serde_yaml::from_str(yaml).expect("parses")
    }

    #[test]
    fn an_endpoint_without_a_path_posts_to_v1_traces() {
        let checked = config("endpoint: http://127.0.0.1:4318")
            .check()
            .expect("valid");
        assert_eq!(
            checked.endpoint.to_string(),
            "http://127.0.0.1:4318/v1/traces"
        );
        let checked = config("endpoint: https://c.example/otlp/v1/traces")
            .check()
            .expect("valid");
        assert_eq!(checked.endpoint.path(), "/otlp/v1/traces");
    }

    #[test]
    fn every_mistake_is_named_by_its_key() {
        let errors = config(
            "endpoint: grpc://x\nsampling_ratio: 1.5\ntrusted_callers: [10.0.0.0/8, nope]\n\
             max_queue: 4\nmax_batch: 8\nservice_name: ' '",
        )
        .check()
        .expect_err("invalid");
        let keys: Vec<String> = errors.iter().map(|(k, _)| k.join(".")).collect();
        assert_eq!(
            keys,
            [
                "endpoint",
                "service_name",
                "sampling_ratio",
                "trusted_callers.1",
                "max_batch"
            ]
        );
    }
}
