//! The call log's written form: `record:` of an API or an operation (what
//! is recorded of its calls) and the top-level `call_log:` (how much the
//! log holds). Compiled by [`super::Recorder::compile`].

use schemars::JsonSchema;
use serde::Deserialize;

use crate::config::units::{ByteSize, ConfigDuration};

/// `record:` of an API or an operation: its calls go to the call log. An
/// operation's `record:` replaces its API's whole (`record: {enabled:
/// false}` turns an API's recording off for one operation).
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RecordConfig {
    /// `false`: not recorded (to turn off what the API records).
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Record the request and response bodies too (the first
    /// `max_body_bytes` of each); default: metadata and headers only.
    #[serde(default)]
    pub bodies: bool,
    /// The most of each body recorded; the rest passes through unrecorded
    /// and the entry says `truncated`. At most 1MiB.
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: ByteSize,
    /// Headers whose values are recorded as `[redacted]`, in requests and
    /// responses. Credentials (`Authorization`, cookies, every `auth`
    /// policy's key header and query parameter) are always redacted.
    #[serde(default)]
    pub redact_headers: Vec<String>,
    /// JSON pointers (RFC 6901; a `*` segment matches every member or
    /// element) whose values are recorded as `"[redacted]"` in request and
    /// response JSON bodies. With pointers set, a body that is not
    /// complete JSON within `max_body_bytes` is omitted.
    #[serde(default)]
    pub redact_json: Vec<String>,
}

/// `call_log:` — the bounds of the log every `record:` writes to, in the
/// state store (so instances sharing Redis show one log). Read at start (a
/// reload keeps the running bounds).
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct CallLogConfig {
    /// Entries' bytes in all; past it the oldest are evicted.
    pub max_bytes: ByteSize,
    /// Entries in all (at most 100000); past it the oldest are evicted.
    pub max_entries: u64,
    /// How long an entry is kept.
    pub ttl: ConfigDuration,
    /// Entries waiting for the store, at most this many bytes; past it an
    /// entry is dropped and counted (`tollgate_call_log_dropped_total`), so
    /// a request never waits for the log.
    pub queue: ByteSize,
}

impl Default for CallLogConfig {
    fn default() -> Self {
        CallLogConfig {
            max_bytes: ByteSize(8 << 20),
            max_entries: 1000,
            ttl: ConfigDuration(std::time::Duration::from_secs(3600)),
            queue: ByteSize(4 << 20),
        }
    }
}

fn yes() -> bool {
    true
}

fn default_max_body_bytes() -> ByteSize {
    ByteSize(4 << 10)
}
