//! The YAML schema of DESIGN §3, as serde structs. Unknown keys are errors
//! everywhere (`deny_unknown_fields`). These structs are only the *written*
//! form: `crate::gateway` compiles them into the runtime `Gateway`, and each
//! policy kind's config struct lives beside its runtime in `src/policy/`.

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer};
use std::collections::BTreeMap;

use super::units::{ByteSize, ConfigDuration};
use crate::policy::{
    abuse::AbuseConfig, auth::AuthConfig, cache::CacheConfig, cors::CorsConfig,
    headers::HeadersConfig, ip::IpConfig, quota::QuotaConfig, rate_limit::RateLimitConfig,
    roles::RolesConfig,
};

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub version: u32,
    pub listen: String,
    /// The URL callers use, for the OpenAPI `servers` entry; default from `listen`.
    #[serde(default)]
    pub public_url: Option<String>,
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    #[serde(default)]
    pub admin: Option<AdminConfig>,
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
    #[serde(default)]
    pub limits: LimitsConfig,
    #[serde(default)]
    pub upstream_tls: UpstreamTlsConfig,
    #[serde(default)]
    pub state: StateConfig,
    #[serde(default)]
    pub roles: Vec<String>,
    #[serde(default)]
    pub clients: Vec<ClientConfig>,
    #[serde(default)]
    pub jwt: Option<JwtConfig>,
    /// Globs of policy files, relative to this file; each file is a mapping
    /// of policy name -> definition.
    #[serde(default)]
    pub include: Vec<String>,
    #[serde(default)]
    pub policies: BTreeMap<String, PolicyDef>,
    #[serde(default)]
    pub apply: Vec<PolicyRef>,
    #[serde(default)]
    pub apis: Vec<ApiConfig>,
    #[serde(default)]
    pub agents: Option<AgentsConfig>,
    /// What a GraphQL document selecting a root field that no operation
    /// publishes gets: refused (default) or forwarded under the policies of
    /// the fields that did match.
    #[serde(default)]
    pub graphql_unmatched: GraphqlUnmatched,
    /// `watch`: also reload when the config file, an included file or the
    /// TLS files change (polled every second). SIGHUP and the admin
    /// `POST /admin/reload` always work.
    #[serde(default)]
    pub reload: ReloadMode,
    /// Threads serving the public listener, each with its own runtime and
    /// its own `SO_REUSEPORT` socket; default: one per core. Read at start
    /// (a reload keeps the running count).
    #[serde(default)]
    pub workers: Option<usize>,
    /// Method and URL override headers (`X-HTTP-Method-Override`,
    /// `X-HTTP-Method`, `X-Method-Override`, `X-Original-URL`,
    /// `X-Rewrite-URL`) and the `_method` query parameter are removed on
    /// arrival, since policies judge the method and path the gateway sees;
    /// the ones listed here reach the upstream.
    #[serde(default)]
    pub allow_override_headers: Vec<String>,
    /// The access log: one line per answered request. Read at start (a
    /// reload keeps the running destination).
    #[serde(default)]
    pub access_log: AccessLogConfig,
    /// OpenTelemetry traces over OTLP/HTTP (README, *Tracing*). Read at
    /// start (a reload keeps the running exporter).
    #[serde(default)]
    pub tracing: Option<crate::trace::TracingConfig>,
}

/// Where the access log goes and how its lines look.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AccessLogConfig {
    /// `false` writes no access log (so does a `RUST_LOG` that leaves out
    /// `tollgate::access` at `info`).
    #[serde(default = "enabled_by_default")]
    pub enabled: bool,
    /// A file to append to, relative to this file; reopened on SIGUSR1
    /// (log rotation). Default: stderr.
    #[serde(default)]
    pub path: Option<String>,
    /// `json` (one object per line) or `text`; default: the `--log-format`
    /// flag.
    #[serde(default)]
    pub format: Option<AccessLogFormat>,
    /// Lines waiting for the writer, at most this many bytes; past it a line
    /// is dropped and counted (`tollgate_access_log_dropped_total`), so a
    /// request never waits for the log.
    #[serde(default = "default_access_log_buffer")]
    pub buffer: ByteSize,
}

impl Default for AccessLogConfig {
    fn default() -> Self {
        AccessLogConfig {
            enabled: true,
            path: None,
            format: None,
            buffer: default_access_log_buffer(),
        }
    }
}

fn enabled_by_default() -> bool {
    true
}

fn default_access_log_buffer() -> ByteSize {
    ByteSize(1 << 20)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum AccessLogFormat {
    Json,
    Text,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ReloadMode {
    /// Reload on SIGHUP or `POST /admin/reload` only.
    #[default]
    Manual,
    Watch,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum GraphqlUnmatched {
    #[default]
    Reject,
    Allow,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    pub cert_file: String,
    pub key_file: String,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    pub listen: String,
    #[serde(default)]
    pub token_env: Option<String>,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    pub max_body: ByteSize,
    pub max_header_bytes: ByteSize,
    pub header_read_timeout: ConfigDuration,
    /// How long a request body may go without sending a byte while the
    /// gateway waits for it (a slow-body client is cut off after this).
    pub body_read_timeout: ConfigDuration,
    pub upstream_timeout: ConfigDuration,
    pub max_connections: usize,
    /// At most this many connections at once from one client address (an
    /// IPv6 address counts by its /64); a connection past it is closed at
    /// once. Peers in `trusted_proxies` are not capped. Default: no cap.
    pub max_connections_per_ip: Option<usize>,
    /// A connection with no request in flight for this long is closed
    /// (HTTP/2: GOAWAY, then close; HTTP/1.1 idle keep-alive connections
    /// are also closed after `header_read_timeout`).
    pub idle_timeout: ConfigDuration,
    /// HTTP/2 keep-alive: a PING is sent after this long without a frame
    /// from the client, and the connection is closed if the PING is not
    /// answered within the same time.
    pub http2_ping_interval: ConfigDuration,
    /// How long a write to the client may wait for the client to read (on
    /// HTTP/2 also: a stream may wait for flow-control window): a client
    /// that stops reading a response is cut off after this.
    pub send_timeout: ConfigDuration,
    /// With `min_body_rate`, bounds the total time a request body may take:
    /// the time spent waiting for the body's bytes may not pass
    /// `body_deadline` plus one second per `min_body_rate` bytes received.
    /// A body trickled slower than the rate is cut off (400
    /// `invalid_request_body`) about `body_deadline` after it started.
    pub body_deadline: ConfigDuration,
    /// Bytes per second a request body earns beyond `body_deadline` (see
    /// there); `0`: the body must arrive within `body_deadline` in all.
    pub min_body_rate: ByteSize,
    /// How long a graceful shutdown waits for in-flight requests.
    pub drain_timeout: ConfigDuration,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        use std::time::Duration;
        LimitsConfig {
            max_body: ByteSize(1 << 20),
            max_header_bytes: ByteSize(16 << 10),
            header_read_timeout: ConfigDuration(Duration::from_secs(10)),
            body_read_timeout: ConfigDuration(Duration::from_secs(30)),
            upstream_timeout: ConfigDuration(Duration::from_secs(30)),
            max_connections: 10_000,
            max_connections_per_ip: None,
            idle_timeout: ConfigDuration(Duration::from_secs(60)),
            http2_ping_interval: ConfigDuration(Duration::from_secs(30)),
            send_timeout: ConfigDuration(Duration::from_secs(30)),
            body_deadline: ConfigDuration(Duration::from_secs(60)),
            min_body_rate: ByteSize(1 << 10),
            drain_timeout: ConfigDuration(Duration::from_secs(30)),
        }
    }
}

/// Trust for `https://` upstreams: the system roots, plus `ca_file` if set.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UpstreamTlsConfig {
    #[serde(default)]
    pub ca_file: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum StoreKind {
    #[default]
    Memory,
    Redis,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OnStoreError {
    #[default]
    FailClosed,
    FailOpen,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct StateConfig {
    pub store: StoreKind,
    /// One Redis: `redis://HOST:PORT` or `rediss://HOST:PORT` (TLS).
    pub redis_url: Option<String>,
    /// Redis Cluster or Sentinel instead of `redis_url`, and how to
    /// reach Redis (CA file, ACL credentials).
    pub redis: Option<RedisConfig>,
    pub on_store_error: OnStoreError,
    /// Every store call's deadline.
    pub timeout: ConfigDuration,
}

/// `state.redis`: where Redis is (`cluster` or `sentinel`, when not
/// `redis_url`) and how to reach it.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RedisConfig {
    /// Seed nodes of a Redis Cluster (`redis://` or `rediss://` URLs); the
    /// rest of the cluster is learnt from them.
    #[serde(default)]
    pub cluster: Vec<String>,
    #[serde(default)]
    pub sentinel: Option<SentinelConfig>,
    /// PEM file of the CA that signed the Redis servers' certificates, for
    /// `rediss://` URLs (relative to this file); default: the system roots.
    #[serde(default)]
    pub ca_file: Option<String>,
    /// Environment variable holding the ACL user name (read at load).
    #[serde(default)]
    pub username_env: Option<String>,
    /// Environment variable holding the password (read at load, never logged).
    #[serde(default)]
    pub password_env: Option<String>,
}

/// `state.redis.sentinel`: a master watched by Redis Sentinel.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SentinelConfig {
    /// The master's name in the sentinels' config (`sentinel monitor NAME ...`).
    pub master: String,
    /// The sentinels, as `redis://HOST:PORT` (or `rediss://`) URLs.
    pub nodes: Vec<String>,
}

impl Default for StateConfig {
    fn default() -> Self {
        StateConfig {
            store: StoreKind::Memory,
            redis_url: None,
            redis: None,
            on_store_error: OnStoreError::FailClosed,
            timeout: ConfigDuration(std::time::Duration::from_millis(50)),
        }
    }
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ClientConfig {
    pub id: String,
    #[serde(default)]
    pub roles: Vec<String>,
    #[serde(default)]
    pub api_keys: Vec<ApiKeyConfig>,
}

/// One key of a client: exactly one of `sha256` (hex of the key's SHA-256)
/// or `env` (the plain key, read from the environment at load and hashed).
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyConfig {
    #[serde(default)]
    pub sha256: Option<String>,
    #[serde(default)]
    pub env: Option<String>,
    /// A short non-secret name for the key, shown in logs instead of the key.
    #[serde(default)]
    pub id: Option<String>,
    /// RFC 3339 instant after which the key is refused.
    #[serde(default)]
    pub expires: Option<String>,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct JwtConfig {
    #[serde(default)]
    pub issuer: Option<String>,
    #[serde(default)]
    pub audience: Option<String>,
    pub algorithms: Vec<String>,
    #[serde(default)]
    pub public_key_file: Option<String>,
    #[serde(default)]
    pub secret_env: Option<String>,
    #[serde(default)]
    pub jwks_file: Option<String>,
    /// The identity provider's JWK set, fetched and kept fresh at run time.
    #[serde(default)]
    pub jwks_url: Option<String>,
    #[serde(default)]
    pub roles_claim: Option<String>,
    #[serde(default)]
    pub leeway: Option<ConfigDuration>,
}

/// `agents:` — the MCP endpoint that serves agent tools (`crate::agents`).
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AgentsConfig {
    /// The public path of the MCP endpoint, e.g. `/mcp`.
    pub mcp_path: String,
    /// Browser origins (`https://app.example.com`) allowed to call the
    /// endpoint besides the endpoint's own; any other `Origin` gets 403.
    #[serde(default)]
    pub allowed_origins: Vec<String>,
    /// At most this many handshake sessions are kept; the least recently
    /// used one is dropped to make room.
    #[serde(default = "default_max_sessions")]
    pub max_sessions: usize,
    /// A session unused this long is forgotten (its client re-initializes).
    #[serde(default = "default_session_idle")]
    pub session_idle: ConfigDuration,
    /// The most of a workflow's answer one tool result carries.
    #[serde(default = "default_max_result")]
    pub max_result: ByteSize,
}

fn default_max_sessions() -> usize {
    10_000
}

fn default_session_idle() -> ConfigDuration {
    ConfigDuration(std::time::Duration::from_secs(30 * 60))
}

fn default_max_result() -> ByteSize {
    ByteSize(1 << 20)
}

/// `agents:` of an API: which of its operations are agent tools.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ApiAgents {
    /// Only operations marked `agent: true`.
    #[default]
    OptIn,
    /// Every operation, unless it says `agent: false`.
    Expose,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    pub name: String,
    #[serde(default)]
    pub title: Option<String>,
    #[serde(default)]
    pub version: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub base_path: String,
    #[serde(default)]
    pub upstream: Option<String>,
    #[serde(default)]
    pub upstream_timeout: Option<ConfigDuration>,
    #[serde(default)]
    pub apply: Vec<PolicyRef>,
    #[serde(default)]
    pub skip: Vec<String>,
    /// `expose`: every operation is an agent tool unless it says `agent: false`.
    #[serde(default)]
    pub agents: ApiAgents,
    pub operations: Vec<OperationConfig>,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OperationConfig {
    pub id: String,
    pub method: String,
    pub path: String,
    /// Full workflow URL; `{param}`s of `path` are filled in.
    #[serde(default)]
    pub upstream: Option<String>,
    #[serde(default)]
    pub upstream_timeout: Option<ConfigDuration>,
    #[serde(default)]
    pub summary: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub apply: Vec<PolicyRef>,
    #[serde(default)]
    pub skip: Vec<String>,
    #[serde(default)]
    pub request_schema: Option<serde_json::Value>,
    /// The query parameters, as an object schema (`properties`, `required`):
    /// what an agent tool's arguments may put in the query string.
    #[serde(default)]
    pub query_schema: Option<serde_json::Value>,
    #[serde(default)]
    pub response_schema: Option<serde_json::Value>,
    /// What a response that breaks `response_schema` gets.
    #[serde(default)]
    pub response_validation: ResponseValidation,
    /// Makes this operation one root field of a GraphQL endpoint: several
    /// operations then share one method and path.
    #[serde(default)]
    pub graphql: Option<GraphqlSelector>,
    /// Whether this operation is an agent tool (MCP); unset follows the
    /// API's `agents:` (default: not a tool).
    #[serde(default)]
    pub agent: Option<bool>,
    /// The path parameters, as an object schema (`properties`): checked at
    /// the gateway, so `/{id}` declared `{ type: integer }` refuses `abc`
    /// with 400 `invalid_path` before any policy runs.
    #[serde(default)]
    pub path_schema: Option<serde_json::Value>,
    /// The media type of the request body `request_schema` describes
    /// (default `application/json`). Any other type (a form, multipart) is
    /// documented in the export, not validated by the gateway.
    #[serde(default)]
    pub request_content_type: Option<String>,
    /// The status of the upstream's success answer, as documented in the
    /// export (default 200; e.g. 201, or 204 for a DELETE).
    #[serde(default)]
    pub success_status: Option<u16>,
    /// Other answers of the upstream, documented in the export by status
    /// (`"404"`, `"4XX"`, `default`): `{ description, schema }`.
    #[serde(default)]
    pub responses: BTreeMap<String, DocumentedResponse>,
}

/// An upstream answer documented in the export (`responses:` of an operation).
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DocumentedResponse {
    pub description: String,
    /// The JSON schema of its body, if it has one.
    #[serde(default)]
    pub schema: Option<serde_json::Value>,
}

/// `response_validation:` of an operation with a `response_schema`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ResponseValidation {
    /// A response that breaks the schema becomes 502 `invalid_upstream_response`.
    Enforce,
    /// Warn and pass the response through.
    #[default]
    Log,
    Off,
}

/// `graphql:` of an operation: the root field it publishes.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GraphqlSelector {
    pub operation: GraphqlOperationType,
    pub field: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum GraphqlOperationType {
    Query,
    Mutation,
}

/// An `apply` entry: a policy's name, or a definition written in place.
#[derive(Debug, Clone)]
pub enum PolicyRef {
    Name(String),
    Inline(PolicyDef),
}

/// A policy definition: its kind (the `type:` key) and the options every
/// kind shares.
#[derive(Debug, Clone)]
pub struct PolicyDef {
    /// Evaluate and count, never reject (DESIGN §3, shadow mode).
    pub report_only: bool,
    pub kind: PolicyKind,
}

#[derive(Debug, Clone)]
pub enum PolicyKind {
    Auth(AuthConfig),
    Roles(RolesConfig),
    Ip(IpConfig),
    Headers(HeadersConfig),
    RateLimit(RateLimitConfig),
    Quota(QuotaConfig),
    Abuse(AbuseConfig),
    Cache(CacheConfig),
    Cors(CorsConfig),
}

/// The `type:` names, in the order they are listed in errors.
pub const POLICY_TYPES: &[&str] = &[
    "auth",
    "roles",
    "ip",
    "headers",
    "rate_limit",
    "quota",
    "abuse",
    "cache",
    "cors",
];

/// Why a policy definition did not parse: the path inside the definition
/// (e.g. `["allow", "0"]`) and the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyDefError {
    pub path: Vec<String>,
    pub message: String,
}

impl PolicyDef {
    /// Parses a definition from its YAML value, keeping the path of the
    /// first error inside it so the loader can point at the exact line.
    pub fn from_value(value: serde_yaml::Value) -> Result<PolicyDef, PolicyDefError> {
        let err = |path: Vec<String>, message: String| PolicyDefError { path, message };
        let serde_yaml::Value::Mapping(mut map) = value else {
            return Err(err(
                vec![],
                "a policy is a mapping with a `type:` key (or, in `apply`, a policy name)".into(),
            ));
        };
        let type_name = match map.remove("type") {
            Some(serde_yaml::Value::String(s)) => s,
            Some(_) => return Err(err(vec!["type".into()], "`type` must be a string".into())),
            None => {
                return Err(err(
                    vec![],
                    format!("missing field `type` (one of {})", POLICY_TYPES.join(", ")),
                ))
            }
        };
        let report_only = match map.remove("report_only") {
            None => false,
            Some(serde_yaml::Value::Bool(b)) => b,
            Some(_) => {
                return Err(err(
                    vec!["report_only".into()],
                    "`report_only` must be true or false".into(),
                ))
            }
        };
        let rest = serde_yaml::Value::Mapping(map);
        fn parse<T: serde::de::DeserializeOwned>(
            v: serde_yaml::Value,
        ) -> Result<T, PolicyDefError> {
            serde_path_to_error::deserialize(v).map_err(|e| PolicyDefError {
                path: super::path_segments(e.path()),
                message: e.into_inner().to_string(),
            })
        }
        let kind = match type_name.as_str() {
            "auth" => PolicyKind::Auth(parse(rest)?),
            "roles" => PolicyKind::Roles(parse(rest)?),
            "ip" => PolicyKind::Ip(parse(rest)?),
            "headers" => PolicyKind::Headers(parse(rest)?),
            "rate_limit" => PolicyKind::RateLimit(parse(rest)?),
            "quota" => PolicyKind::Quota(parse(rest)?),
            "abuse" => PolicyKind::Abuse(parse(rest)?),
            "cache" => PolicyKind::Cache(parse(rest)?),
            "cors" => PolicyKind::Cors(parse(rest)?),
            other => {
                return Err(err(
                    vec!["type".into()],
                    format!(
                        "unknown policy type `{other}`, expected one of {}",
                        POLICY_TYPES.join(", ")
                    ),
                ))
            }
        };
        Ok(PolicyDef { report_only, kind })
    }

    pub fn type_name(&self) -> &'static str {
        match self.kind {
            PolicyKind::Auth(_) => "auth",
            PolicyKind::Roles(_) => "roles",
            PolicyKind::Ip(_) => "ip",
            PolicyKind::Headers(_) => "headers",
            PolicyKind::RateLimit(_) => "rate_limit",
            PolicyKind::Quota(_) => "quota",
            PolicyKind::Abuse(_) => "abuse",
            PolicyKind::Cache(_) => "cache",
            PolicyKind::Cors(_) => "cors",
        }
    }
}

impl std::fmt::Display for PolicyDefError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "at `{}`: {}", self.path.join("."), self.message)
        }
    }
}

impl<'de> Deserialize<'de> for PolicyDef {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let value = serde_yaml::Value::deserialize(d)?;
        PolicyDef::from_value(value).map_err(serde::de::Error::custom)
    }
}

impl<'de> Deserialize<'de> for PolicyRef {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match serde_yaml::Value::deserialize(d)? {
            serde_yaml::Value::String(name) => Ok(PolicyRef::Name(name)),
            other => PolicyDef::from_value(other)
                .map(PolicyRef::Inline)
                .map_err(serde::de::Error::custom),
        }
    }
}
