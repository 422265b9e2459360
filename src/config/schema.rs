//! The YAML schema of DESIGN §3, as serde structs. Unknown keys are errors
//! everywhere (`deny_unknown_fields`). These structs are only the *written*
//! form: `crate::gateway` compiles them into the runtime `Gateway`, and each
//! policy kind's config struct lives beside its runtime in `src/policy/`.

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer};
use std::collections::BTreeMap;
use std::sync::Arc;

use super::units::{ByteSize, ConfigDuration};
use crate::policy::registry::{self, AnyPolicyConfig, PolicyKind};

/// The gateway's config file (DESIGN §3), `version: 1`. Unknown keys are errors; every
/// reference (a policy name, a role, a client) is checked at load.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The config format's version; must be `1`.
    pub version: u32,
    /// The public listener's address, `HOST:PORT`, e.g. `127.0.0.1:8080` (`0.0.0.0:8080` for all
    /// interfaces).
    pub listen: String,
    /// The URL callers use, for the OpenAPI `servers` entry; default from `listen`.
    #[serde(default)]
    pub public_url: Option<String>,
    /// Serve HTTPS on `listen`: `{ cert_file, key_file }` (PEM); unset: plain HTTP.
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// The admin listener (metrics, health, reload, usage), on its own address: `{ listen,
    /// token_env }`.
    #[serde(default)]
    pub admin: Option<AdminConfig>,
    /// Peers whose `X-Forwarded-For` is believed, as CIDRs (`10.0.0.0/8`) or addresses; the
    /// client IP is then the rightmost forwarded address that is not itself a trusted proxy.
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
    /// Size limits and timeouts of the public listener and of upstream calls.
    #[serde(default)]
    pub limits: LimitsConfig,
    /// Trust for `https://` upstreams: the system roots, plus `ca_file` if set.
    #[serde(default)]
    pub upstream_tls: UpstreamTlsConfig,
    /// Where counters, bans and sessions live: `memory` (default) or `redis`, and what a store
    /// failure does.
    #[serde(default)]
    pub state: StateConfig,
    /// Every role name clients and tokens may hold (`[admin, reader, agent]`); a role used anywhere
    /// else must be listed here.
    #[serde(default)]
    pub roles: Vec<String>,
    /// The callers known by API key: their ids, roles and keys.
    #[serde(default)]
    pub clients: Vec<ClientConfig>,
    /// How JWT bearer tokens are verified (issuer, audience, algorithms, key source); a valid
    /// token's `sub` is the client id. Unset: no JWT is accepted.
    #[serde(default)]
    pub jwt: Option<JwtConfig>,
    /// Globs of policy files, relative to this file; each file is a mapping
    /// of policy name -> definition.
    #[serde(default)]
    pub include: Vec<String>,
    /// Named policies, inline: policy name -> definition with a `type:` key, e.g.
    /// `key-required: { type: auth, methods: [api_key, jwt] }`.
    #[serde(default)]
    pub policies: BTreeMap<String, PolicyDef>,
    /// Policies applied to every request, before the API's and the operation's: a policy name or an
    /// inline definition.
    #[serde(default)]
    pub apply: Vec<PolicyRef>,
    /// The APIs published: each a name, a `base_path`, an upstream and its operations.
    #[serde(default)]
    pub apis: Vec<ApiConfig>,
    /// Serve the APIs' operations as agent tools on an MCP endpoint, e.g. `{ mcp_path: /mcp }`
    /// (DESIGN §9).
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
    /// Methods other than GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS and
    /// TRACE that operations may use (`PURGE`, `PROPFIND`). Any other
    /// `method:` is refused as a typo.
    #[serde(default)]
    pub extension_methods: Vec<String>,
    /// The access log: one line per answered request. Read at start (a
    /// reload keeps the running destination).
    #[serde(default)]
    pub access_log: AccessLogConfig,
    /// The call log's bounds (`record:` of an API or operation writes to it).
    #[serde(default)]
    pub call_log: crate::call_log::config::CallLogConfig,
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

/// The access log's line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum AccessLogFormat {
    /// One JSON object per line.
    Json,
    /// One line per request in the text log format (time, `INFO tollgate::access:`, `key=value`
    /// fields).
    Text,
}

/// When the config is reloaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ReloadMode {
    /// Reload on SIGHUP or `POST /admin/reload` only.
    #[default]
    Manual,
    /// Also reload when the config file, an included file or the TLS files change (polled every
    /// second).
    Watch,
}

/// What a GraphQL document selecting a root field that no operation publishes gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum GraphqlUnmatched {
    /// Refused with 400 `graphql_operation_not_allowed` (default).
    #[default]
    Reject,
    /// Forwarded under the policies of the fields that did match.
    Allow,
}

/// `tls:` — the certificate the public listener serves HTTPS with.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM file of the certificate chain, relative to this file.
    pub cert_file: String,
    /// PEM file of the private key, relative to this file.
    pub key_file: String,
}

/// `admin:` — the admin listener (DESIGN §6): metrics, health, reload, usage, status page.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// The admin listener's address, `HOST:PORT`, e.g. `127.0.0.1:9901`; never the public one.
    /// Without `token_env` it must be a loopback address.
    pub listen: String,
    /// Environment variable holding the admin bearer token, e.g. `TOLLGATE_ADMIN_TOKEN`; every path
    /// but `/healthz` and `/readyz` then needs it. `tollgate serve` refuses to start if it is
    /// unset.
    #[serde(default)]
    pub token_env: Option<String>,
}

/// `limits:` — size limits and timeouts; each key has a default.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// The largest request body accepted (default `1MiB`); a larger one gets 413.
    pub max_body: ByteSize,
    /// The most bytes of request headers accepted (default `16KiB`); more gets 431
    /// `headers_too_large`.
    pub max_header_bytes: ByteSize,
    /// How long a client may take to send a request's headers (default `10s`): a connection
    /// without a whole first request head by then is closed, and so is an idle HTTP/1.1 keep-alive
    /// one.
    pub header_read_timeout: ConfigDuration,
    /// How long a request body may go without sending a byte while the
    /// gateway waits for it (a slow-body client is cut off after this).
    pub body_read_timeout: ConfigDuration,
    /// How long an upstream may take to answer (default `30s`; an API or operation may set its
    /// own); past it the caller gets 504.
    pub upstream_timeout: ConfigDuration,
    /// At most this many client connections at once (default `10000`); more wait to be accepted.
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
    /// PEM file of an extra CA trusted for `https://` upstreams, relative to this file.
    #[serde(default)]
    pub ca_file: Option<String>,
}

/// Which state store holds counters, bans and sessions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum StoreKind {
    /// In this process's memory (default): one gateway only, lost on restart.
    #[default]
    Memory,
    /// Redis (`state.redis_url` or `state.redis`): shared by every gateway instance.
    Redis,
}

/// What a policy does when the state store cannot be reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OnStoreError {
    /// Refuse the call with 503 `state_store_unavailable` (default).
    #[default]
    FailClosed,
    /// Let the call through unlimited (and warn, at most once in a while).
    FailOpen,
}

/// `state:` — the store that rate limits, quotas, bans, cache and sessions keep their state in
/// (DESIGN §8).
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct StateConfig {
    /// `memory` (default) or `redis`.
    pub store: StoreKind,
    /// One Redis: `redis://HOST:PORT` or `rediss://HOST:PORT` (TLS).
    pub redis_url: Option<String>,
    /// Redis Cluster or Sentinel instead of `redis_url`, and how to
    /// reach Redis (CA file, ACL credentials).
    pub redis: Option<RedisConfig>,
    /// `fail_closed` (default: 503 `state_store_unavailable`) or `fail_open` (let calls through)
    /// when the store fails.
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
    /// A master watched by Redis Sentinel: `{ master, nodes }`.
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

/// A caller known to the gateway by its API keys (and the client id JWTs name in `sub`).
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ClientConfig {
    /// The client's id, shown in logs and usage and used as the rate-limit key, e.g. `hr-portal`.
    pub id: String,
    /// The roles the client holds (each listed in the top-level `roles:`).
    #[serde(default)]
    pub roles: Vec<String>,
    /// The client's API keys; several let a key be rotated without downtime.
    #[serde(default)]
    pub api_keys: Vec<ApiKeyConfig>,
}

/// One key of a client: exactly one of `sha256` (hex of the key's SHA-256)
/// or `env` (the plain key, read from the environment at load and hashed).
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyConfig {
    /// Hex of the key's SHA-256 (`echo -n KEY | sha256sum`); the plain key is never in the file.
    #[serde(default)]
    pub sha256: Option<String>,
    /// Environment variable holding the plain key, read at load and hashed, e.g. `HR_PORTAL_KEY`.
    #[serde(default)]
    pub env: Option<String>,
    /// A short non-secret name for the key, shown in logs instead of the key.
    #[serde(default)]
    pub id: Option<String>,
    /// RFC 3339 instant after which the key is refused.
    #[serde(default)]
    pub expires: Option<String>,
}

/// `jwt:` — how bearer JWTs are verified: one key source of `public_key_file`, `secret_env`,
/// `jwks_file` or `jwks_url`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct JwtConfig {
    /// The `iss` every token must carry, e.g. `https://idp.example.com`; unset: not checked.
    #[serde(default)]
    pub issuer: Option<String>,
    /// The `aud` every token must name, e.g. `tollgate`; unset: not checked.
    #[serde(default)]
    pub audience: Option<String>,
    /// Accepted signing algorithms, e.g. `[RS256]`; a token signed otherwise is refused.
    pub algorithms: Vec<String>,
    /// PEM file of the identity provider's public key (RS*, ES*, PS*, EdDSA), relative to this
    /// file.
    #[serde(default)]
    pub public_key_file: Option<String>,
    /// Environment variable holding the shared secret of HS256/384/512 tokens (read at load, never
    /// logged).
    #[serde(default)]
    pub secret_env: Option<String>,
    /// A JWK set file (`{"keys": [...]}`), relative to this file; read again at every reload.
    #[serde(default)]
    pub jwks_file: Option<String>,
    /// The identity provider's JWK set, fetched and kept fresh at run time.
    #[serde(default)]
    pub jwks_url: Option<String>,
    /// The claim whose string array gives the roles of a token whose `sub` is no configured client,
    /// e.g. `roles`.
    #[serde(default)]
    pub roles_claim: Option<String>,
    /// Allowed clock skew for `exp` and `nbf` (default `60s`).
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
    /// The `Host` names (`mcp.example.com`, or `name:port`) the endpoint
    /// answers to, against DNS rebinding. Unset: a gateway listening on a
    /// loopback address answers only `localhost`, `127.0.0.1` and `[::1]`;
    /// one listening elsewhere any host (and an `Origin` equal to the
    /// `Host` is then not enough: list it in `allowed_origins`).
    #[serde(default)]
    pub allowed_hosts: Option<Vec<String>>,
    /// At most this many handshake sessions per client (its client id, or
    /// its address when anonymous); its least recently used one is dropped
    /// to make room, never another client's.
    #[serde(default = "default_max_sessions")]
    pub max_sessions: usize,
    /// A session unused this long is forgotten (its client re-initializes).
    #[serde(default = "default_session_idle")]
    pub session_idle: ConfigDuration,
    /// The most of a workflow's answer one tool result carries.
    #[serde(default = "default_max_result")]
    pub max_result: ByteSize,
    /// Agents sign in with OAuth 2.1: the endpoint is a resource server
    /// (`crate::agents::oauth`).
    #[serde(default)]
    pub oauth: Option<AgentsOAuthConfig>,
}

/// `agents.oauth:` — the MCP endpoint as an OAuth 2.1 resource server.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AgentsOAuthConfig {
    /// This resource's URL, the audience its tokens must name. Default:
    /// `public_url` + `mcp_path`, else from the request (its `Host`, or a
    /// trusted proxy's `X-Forwarded-Host`/`-Proto`).
    #[serde(default)]
    pub resource: Option<String>,
    /// The authorization servers (issuer URLs) clients get tokens from.
    pub authorization_servers: Vec<String>,
    /// The `iss` every token must carry. Default: the first authorization server.
    #[serde(default)]
    pub issuer: Option<String>,
    /// JWT access tokens: accepted algorithms (default RS256) and one key
    /// source, as in `jwt:`.
    #[serde(default = "default_oauth_algorithms")]
    pub algorithms: Vec<String>,
    /// The authorization server's JWK set URL, fetched and kept fresh at run time.
    #[serde(default)]
    pub jwks_url: Option<String>,
    /// A JWK set file, relative to this file.
    #[serde(default)]
    pub jwks_file: Option<String>,
    /// PEM file of the token signer's public key, relative to this file.
    #[serde(default)]
    pub public_key_file: Option<String>,
    /// Allowed clock skew for `exp` and `nbf` (default 60s).
    #[serde(default)]
    pub leeway: Option<ConfigDuration>,
    /// Opaque access tokens: RFC 7662 token introspection.
    #[serde(default)]
    pub introspection: Option<IntrospectionConfig>,
    /// Each scope and the roles a token holding it gets.
    #[serde(default)]
    pub scopes: std::collections::BTreeMap<String, Vec<String>>,
    /// Tools and the scopes a call needs (every one); `tools/list` shows a
    /// tool only to tokens holding them.
    #[serde(default)]
    pub tool_scopes: std::collections::BTreeMap<String, Vec<String>>,
    /// The scopes a 401 asks a client to request first. Default: every
    /// scope of `scopes`.
    #[serde(default)]
    pub initial_scopes: Option<Vec<String>>,
}

fn default_oauth_algorithms() -> Vec<String> {
    vec!["RS256".into()]
}

/// `agents.oauth.introspection:` — RFC 7662.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct IntrospectionConfig {
    /// The introspection endpoint.
    pub url: String,
    /// This resource server's client id at the authorization server.
    pub client_id: String,
    /// The environment variable holding its client secret (HTTP Basic).
    pub client_secret_env: String,
    /// An answer is reused at most this long (and never past the token's `exp`).
    #[serde(default = "default_introspection_cache")]
    pub cache: ConfigDuration,
    /// At most this many answers are cached.
    #[serde(default = "default_introspection_entries")]
    pub max_cached: usize,
}

fn default_introspection_cache() -> ConfigDuration {
    ConfigDuration(std::time::Duration::from_secs(60))
}

fn default_introspection_entries() -> usize {
    10_000
}

fn default_max_sessions() -> usize {
    100
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

/// One API: one project's operations under a `base_path`, with their upstream and policies.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    /// The API's unique name (`employee-directory`), used in logs, metrics and the export.
    pub name: String,
    /// The API's title in the OpenAPI export; default: its `name`.
    #[serde(default)]
    pub title: Option<String>,
    /// The API's version in the OpenAPI export, e.g. `1.0.0` (default `0.0.0`).
    #[serde(default)]
    pub version: Option<String>,
    /// The API's description in the OpenAPI export (Markdown).
    #[serde(default)]
    pub description: Option<String>,
    /// The path prefix of every operation of this API, e.g. `/employees`; default: none.
    #[serde(default)]
    pub base_path: String,
    /// The default upstream base URL of this API's operations, e.g. `http://127.0.0.1:9090`.
    #[serde(default)]
    pub upstream: Option<String>,
    /// How long this API's upstream may take to answer; overrides `limits.upstream_timeout`.
    #[serde(default)]
    pub upstream_timeout: Option<ConfigDuration>,
    /// The response header in which this API's upstream reports the task
    /// units a call used (removed before the caller sees the answer).
    #[serde(default)]
    pub cost_header: Option<String>,
    /// Policies applied to every operation of this API, after the gateway-wide ones: names or
    /// inline definitions.
    #[serde(default)]
    pub apply: Vec<PolicyRef>,
    /// Names of inherited (gateway-wide) policies this API opts out of.
    #[serde(default)]
    pub skip: Vec<String>,
    /// `expose`: every operation is an agent tool unless it says `agent: false`.
    #[serde(default)]
    pub agents: ApiAgents,
    /// Record this API's calls in the call log (`GET /admin/calls`).
    #[serde(default)]
    pub record: Option<crate::call_log::config::RecordConfig>,
    /// The API's operations: one method and path each.
    pub operations: Vec<OperationConfig>,
}

/// One operation: a method and path of an API, the upstream workflow it calls and its policies.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OperationConfig {
    /// The operation's id, unique in the file; the OpenAPI `operationId` and the agent tool name,
    /// e.g. `getEmployee`.
    pub id: String,
    /// The HTTP method, e.g. `GET`; methods other than the standard ones must be listed in
    /// `extension_methods`.
    pub method: String,
    /// The path below the API's `base_path`, with `{param}` segments, e.g. `/{employeeId}`.
    pub path: String,
    /// Full workflow URL; `{param}`s of `path` are filled in.
    #[serde(default)]
    pub upstream: Option<String>,
    /// How long this operation's upstream may take to answer; overrides the API's and
    /// `limits.upstream_timeout`.
    #[serde(default)]
    pub upstream_timeout: Option<ConfigDuration>,
    /// Task units a call costs (default 1): what usage and quotas counted
    /// in units charge, unless the upstream reports otherwise in
    /// `cost_header`.
    #[serde(default)]
    pub cost: Option<u64>,
    /// Overrides the API's `cost_header` for this operation.
    #[serde(default)]
    pub cost_header: Option<String>,
    /// A one-line summary, in the OpenAPI export and the agent tool's title.
    #[serde(default)]
    pub summary: Option<String>,
    /// A longer description (Markdown), in the OpenAPI export and the agent tool's description.
    #[serde(default)]
    pub description: Option<String>,
    /// OpenAPI tags grouping the operation in the export.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Policies of this operation, after the gateway's and the API's: names or inline definitions.
    #[serde(default)]
    pub apply: Vec<PolicyRef>,
    /// Names of inherited (gateway or API) policies this operation opts out of, e.g.
    /// `[key-required]`.
    #[serde(default)]
    pub skip: Vec<String>,
    /// The JSON schema a request body must match (else 400 `invalid_request_body`); also the
    /// export's request body.
    #[serde(default)]
    pub request_schema: Option<serde_json::Value>,
    /// The query parameters, as an object schema (`properties`, `required`):
    /// what an agent tool's arguments may put in the query string.
    #[serde(default)]
    pub query_schema: Option<serde_json::Value>,
    /// The JSON schema of the success response body: documented in the export and checked per
    /// `response_validation`.
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
    /// Record this operation's calls in the call log; replaces the API's
    /// `record:` whole.
    #[serde(default)]
    pub record: Option<crate::call_log::config::RecordConfig>,
}

/// An upstream answer documented in the export (`responses:` of an operation).
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DocumentedResponse {
    /// What the answer means, in the export.
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
    /// Do not check responses.
    Off,
}

/// `graphql:` of an operation: the root field it publishes.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GraphqlSelector {
    /// `query` or `mutation`: the root operation type the field belongs to.
    pub operation: GraphqlOperationType,
    /// The root field's name, e.g. `employee`.
    pub field: String,
}

/// A GraphQL root operation type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum GraphqlOperationType {
    /// A `query` root field.
    Query,
    /// A `mutation` root field.
    Mutation,
}

/// An `apply` entry: a policy's name, or a definition written in place.
#[derive(Debug, Clone)]
pub enum PolicyRef {
    /// The name of a policy defined in `policies:` or an included file.
    Name(String),
    /// A definition written in place (`{ type: roles, allow: [reader] }`).
    Inline(PolicyDef),
}

/// A policy definition: its kind's config (picked by the `type:` key from
/// the registry, `crate::policy::KINDS`) and the options every kind shares.
#[derive(Debug, Clone)]
pub struct PolicyDef {
    /// Evaluate and count, never reject (DESIGN §3, shadow mode).
    pub report_only: bool,
    /// The kind's own config, parsed by the registry entry its `type:` names.
    pub config: Arc<dyn AnyPolicyConfig>,
}

/// Why a policy definition did not parse: the path inside the definition
/// (e.g. `["allow", "0"]`) and the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyDefError {
    /// The keys from the definition's root to the bad value.
    pub path: Vec<String>,
    /// What is wrong there.
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
        let known = || registry::type_names().collect::<Vec<_>>().join(", ");
        let type_name = match map.remove("type") {
            Some(serde_yaml::Value::String(s)) => s,
            Some(_) => return Err(err(vec!["type".into()], "`type` must be a string".into())),
            None => {
                return Err(err(
                    vec![],
                    format!("missing field `type` (one of {})", known()),
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
        let Some(kind) = registry::find(&type_name) else {
            return Err(err(
                vec!["type".into()],
                format!(
                    "unknown policy type `{type_name}`, expected one of {}",
                    known()
                ),
            ));
        };
        let config = (kind.parse)(serde_yaml::Value::Mapping(map))
            .map_err(|(path, message)| err(path, message))?;
        Ok(PolicyDef {
            report_only,
            config,
        })
    }

    /// The kind's `type:` name.
    pub fn type_name(&self) -> &'static str {
        self.config.type_name()
    }

    /// The config, if the definition is of kind `K`.
    pub fn config_of<K: PolicyKind>(&self) -> Option<&K> {
        self.config.as_any().downcast_ref::<K>()
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
