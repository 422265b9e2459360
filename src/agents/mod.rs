//! Governed endpoints as tools for LLM agents (DESIGN §9).
//!
//! - [`tools`]: one [`tools::Tool`] per operation marked `agent: true`
//!   (or of an API with `agents: expose`): its definition, and how a call
//!   becomes the HTTP request the operation publishes.
//! - [`mcp`]: the Model Context Protocol endpoint at `agents.mcp_path` on
//!   the public listener (Streamable HTTP, the current stateless revision
//!   and the older `initialize` handshake with sessions).
//! - [`sessions`]: the sessions of the handshake era, in the state store.
//! - [`oauth`]: `agents.oauth`, the endpoint as an OAuth 2.1 resource
//!   server (RFC 9728 metadata, audience-bound tokens, scopes).
//!
//! A tool call is not a side door: it is dispatched as an ordinary request
//! for the operation, with the MCP caller's own headers and address,
//! through the [`crate::gateway::GatewayHandle`] the gateway hands the
//! endpoint, so the operation's whole policy stack, the proxy, the
//! metrics, the usage meter and the access log see it like any other call.
//! It reaches the tool's own operation only: never another one the path
//! its arguments make would route to.
//!
//! `tollgate tools` prints the same definitions ([`Agents::document`]) for
//! frameworks that take a static list.

pub mod mcp;
pub mod oauth;
pub mod sessions;
pub mod tools;

use http::HeaderValue;
use serde_json::{json, Value};
use std::sync::Arc;

use crate::clock::SharedClock;
use crate::config::schema::Config;
use crate::context::{OperationInfo, RequestContext};
use crate::gateway::{Deps, Operation};
use crate::metrics::OperationMetrics;
use crate::policy::{CompiledPolicy, OperationService};
use crate::routing::{normalize_path, RouteTable};
use crate::stack;

pub use sessions::{SessionLimits, Sessions};
pub use tools::{is_tool, Tool};

/// The `operation` label (metrics, access log) of MCP endpoint requests.
pub const ENDPOINT_OPERATION: &str = "mcp";

/// The agent side of a compiled gateway: its tools, and the MCP endpoint
/// when `agents.mcp_path` is set.
#[derive(Default)]
pub struct Agents {
    /// The operations offered as tools, in config order.
    pub tools: Vec<Tool>,
    endpoint: Option<McpEndpoint>,
}

/// The MCP endpoint of a compiled gateway.
pub struct McpEndpoint {
    /// The endpoint's public path (`agents.mcp_path`).
    pub path: String,
    /// The gateway-wide ip, abuse and auth stages around [`mcp::terminal`].
    pub(crate) service: OperationService,
    pub(crate) metrics: Arc<OperationMetrics>,
    pub(crate) info: Arc<OperationInfo>,
    /// Lower-cased `scheme://host[:port]` of `allowed_origins`.
    allowed_origins: Vec<String>,
    /// Which `Host` headers the endpoint answers.
    hosts: HostRule,
    max_result: u64,
    instructions: String,
    sessions: Sessions,
    clock: SharedClock,
    /// `agents.oauth`: the endpoint as an OAuth resource server.
    pub(crate) oauth: Option<Arc<oauth::ResourceServer>>,
}

// === impl McpEndpoint ===

impl McpEndpoint {
    /// The answer at the metadata path: the document for GET (and HEAD),
    /// 405 for anything else. Its `Host` passes the endpoint's rule first.
    pub fn metadata(
        &self,
        req: &http::Request<crate::body::Body>,
        cx: &RequestContext,
    ) -> http::Response<crate::body::Body> {
        use crate::problem::{Code, Reject};
        let host_ok = req
            .headers()
            .get(http::header::HOST)
            .and_then(|h| h.to_str().ok())
            .or_else(|| req.uri().authority().map(|a| a.as_str()))
            .is_some_and(|h| self.hosts.allows(h));
        let readable = matches!(*req.method(), http::Method::GET | http::Method::HEAD);
        let refusal = match &self.oauth {
            Some(rs) if host_ok && readable => {
                return rs.metadata(req.headers(), cx);
            }
            Some(_) if host_ok => Reject::new(Code::MethodNotAllowed, "GET the metadata")
                .with_header(http::header::ALLOW, HeaderValue::from_static("GET, HEAD")),
            _ => Reject::new(
                Code::RouteNotFound,
                "no operation is published at this path",
            ),
        };
        refusal.into_response(&cx.request_id)
    }
}

/// The static tool list formats of `tollgate tools`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum ToolsFormat {
    /// OpenAI function calling: `[{"type": "function", "function": {...}}]`.
    #[default]
    Openai,
    /// The MCP `tools/list` result: `{"tools": [...]}`.
    Mcp,
}

/// A config mistake: the path of the key at fault and the message.
pub type AgentsError = (Vec<String>, String);

/// What [`Agents::compile`] reads of the compiled operations.
pub struct AgentsSource<'a> {
    /// The whole config file.
    pub config: &'a Config,
    /// The compiled operations, in config order.
    pub operations: &'a [Operation],
    /// Where each operation is written: `(api index, operation index)`.
    pub written_at: &'a [(usize, usize)],
    /// The probe of each operation that is a tool, by operation index.
    pub probes: Vec<(usize, OperationService)>,
    /// The route table, for the tools' paths.
    pub routes: &'a RouteTable,
    /// The gateway-wide policies, which wrap the endpoint.
    pub gateway_policies: &'a [CompiledPolicy],
    /// What outlives reloads: the store for sessions, the clock, the HTTP client, JWKS.
    pub deps: &'a Deps,
    /// The declared roles (for the OAuth scopes' roles).
    pub roles: &'a crate::policy::RoleTable,
    /// Where the config file lives (relative key files resolve there).
    pub base_dir: &'a std::path::Path,
}

// === impl Agents ===

impl Agents {
    /// Builds the tools and the endpoint; every mistake is returned with
    /// the path of the key at fault.
    pub fn compile(source: AgentsSource<'_>) -> Result<Agents, Vec<AgentsError>> {
        let AgentsSource {
            config,
            operations,
            written_at,
            probes,
            routes,
            gateway_policies,
            deps,
            roles,
            base_dir,
        } = source;
        let mut errors: Vec<AgentsError> = Vec::new();
        let mut tools = Vec::new();
        for (index, probe) in probes {
            let (a, o) = written_at[index];
            let (api, op) = (&config.apis[a], &config.apis[a].operations[o]);
            let operation = &operations[index];
            let built = Tool::build(tools::ToolSource {
                api,
                op,
                operation: index,
                info: operation.info.clone(),
                method: &operation.method,
                template: &operation.template,
                probe,
            });
            match built {
                Ok(tool) => tools.push(tool),
                Err(found) => errors.extend(found.into_iter().map(|(field, message)| {
                    let path = ["apis", &a.to_string(), "operations", &o.to_string(), field];
                    (path.iter().map(|s| s.to_string()).collect(), message)
                })),
            }
        }
        let endpoint = match &config.agents {
            None => None,
            Some(agents) => {
                let at = |key: &str| vec!["agents".to_string(), key.to_string()];
                let path = agents.mcp_path.as_str();
                let normal = path.starts_with('/')
                    && normalize_path(path).is_ok_and(|p| p == path)
                    && !path.contains(['?', '#', '{', '}']);
                if !normal {
                    errors.push((
                        at("mcp_path"),
                        format!("`{path}` is not a normalised absolute path like /mcp"),
                    ));
                } else if let Some(taken) = routed(routes, operations, path) {
                    errors.push((
                        at("mcp_path"),
                        format!("`{path}` is also the path of {taken}"),
                    ));
                }
                let mut allowed_origins = Vec::new();
                for (i, origin) in agents.allowed_origins.iter().enumerate() {
                    match parse_origin(origin) {
                        Some(o) => allowed_origins.push(o),
                        None => errors.push((
                            vec!["agents".into(), "allowed_origins".into(), i.to_string()],
                            format!("`{origin}` is not an origin like https://app.example.com"),
                        )),
                    }
                }
                let hosts = match &agents.allowed_hosts {
                    None if listens_on_loopback(&config.listen) => HostRule::Loopback,
                    None => HostRule::Any,
                    Some(listed) => {
                        let mut hosts = Vec::new();
                        for (i, host) in listed.iter().enumerate() {
                            match parse_host(host) {
                                Some(h) => hosts.push(h),
                                None => errors.push((
                                    vec!["agents".into(), "allowed_hosts".into(), i.to_string()],
                                    format!(
                                        "`{host}` is not a host name like mcp.example.com \
                                         (or mcp.example.com:8443)"
                                    ),
                                )),
                            }
                        }
                        HostRule::Listed(hosts)
                    }
                };
                if agents.max_sessions == 0 {
                    errors.push((at("max_sessions"), "keep at least one session".into()));
                }
                let tool_names: Vec<&str> = tools.iter().map(|t| &*t.name).collect();
                let oauth = agents.oauth.as_ref().and_then(|oauth| {
                    let compiled = oauth::ResourceServer::compile(oauth::OAuthSource {
                        config,
                        oauth,
                        mcp_path: path,
                        roles,
                        base_dir,
                        jwks: &deps.jwks,
                        client: deps.client.clone(),
                        clock: deps.clock.clone(),
                        tools: &tool_names,
                    });
                    match compiled {
                        Ok(rs) => Some(Arc::new(rs)),
                        Err(found) => {
                            errors.extend(found);
                            None
                        }
                    }
                });
                let guard = oauth
                    .clone()
                    .map(|rs| move |inner: OperationService| rs.clone().guard(inner));
                let own_auth = guard
                    .as_ref()
                    .map(|g| g as &dyn Fn(OperationService) -> OperationService);
                let info = Arc::new(OperationInfo {
                    api: "".into(),
                    id: ENDPOINT_OPERATION.into(),
                    header_value: HeaderValue::from_static(ENDPOINT_OPERATION),
                    cost: Default::default(),
                });
                Some(McpEndpoint {
                    path: path.to_string(),
                    service: stack::build_agents_endpoint(
                        gateway_policies,
                        mcp::terminal(),
                        own_auth,
                    ),
                    metrics: deps.metrics.operation(&info.api, &info.id),
                    info,
                    allowed_origins,
                    hosts,

                    max_result: agents.max_result.0,
                    instructions: instructions(config, &tools, written_at),
                    sessions: Sessions::new(
                        deps.store.clone(),
                        SessionLimits {
                            max_sessions: agents.max_sessions,
                            idle: agents.session_idle.0,
                        },
                    ),
                    clock: deps.clock.clone(),
                    oauth,
                })
            }
        };
        if errors.is_empty() {
            Ok(Agents { tools, endpoint })
        } else {
            Err(errors)
        }
    }

    /// The MCP endpoint, when `agents.mcp_path` is set.
    pub fn endpoint(&self) -> Option<&McpEndpoint> {
        self.endpoint.as_ref()
    }

    /// The endpoint, if it is served at this (normalised) path.
    pub fn serves(&self, path: &str) -> Option<&McpEndpoint> {
        self.endpoint.as_ref().filter(|e| e.path == path)
    }

    /// The endpoint whose OAuth Protected Resource Metadata is served at
    /// this path, if any.
    pub fn serves_metadata(&self, path: &str) -> Option<&McpEndpoint> {
        self.endpoint
            .as_ref()
            .filter(|e| e.oauth.as_ref().is_some_and(|rs| rs.serves_metadata(path)))
    }

    /// The tool named `name` (an operation id), if there is one.
    pub fn tool(&self, name: &str) -> Option<&Tool> {
        self.tools.iter().find(|t| &*t.name == name)
    }

    /// Every tool, unfiltered, in `format` (for `tollgate tools`).
    pub fn document(&self, format: ToolsFormat) -> Value {
        match format {
            ToolsFormat::Openai => {
                Value::Array(self.tools.iter().map(Tool::openai_function).collect())
            }
            ToolsFormat::Mcp => json!({
                "tools": self
                    .tools
                    .iter()
                    .map(|t| t.definition(tools::Features::ALL))
                    .collect::<Vec<_>>(),
            }),
        }
    }
}

/// What already answers at `path` (for any method), if anything does.
fn routed(routes: &RouteTable, operations: &[Operation], path: &str) -> Option<String> {
    use http::Method;
    let mut taken = false;
    for method in [
        Method::GET,
        Method::POST,
        Method::PUT,
        Method::PATCH,
        Method::DELETE,
        Method::HEAD,
        Method::OPTIONS,
    ] {
        match routes.lookup(&method, path) {
            Ok(found) => {
                return Some(format!(
                    "operation `{}`",
                    operations[found.operation].info.id
                ))
            }
            Err(reject) if reject.code == crate::problem::Code::MethodNotAllowed => taken = true,
            Err(_) => {}
        }
    }
    taken.then(|| "an operation".to_string())
}

/// Which `Host` headers the endpoint answers (DNS-rebinding defence).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum HostRule {
    /// Unset, listening on loopback: loopback names only.
    Loopback,
    /// Unset, listening elsewhere: any host, but an `Origin` must be listed.
    Any,
    /// `allowed_hosts`: `(name, port)` lower-cased; no port means any.
    Listed(Vec<(String, Option<u16>)>),
}

impl HostRule {
    /// Whether a request whose `Host` is `host` (`name[:port]`) is served.
    pub(crate) fn allows(&self, host: &str) -> bool {
        let Some((name, port)) = parse_host(host) else {
            return false;
        };
        match self {
            HostRule::Any => true,
            HostRule::Loopback => is_loopback_name(&name),
            HostRule::Listed(listed) => listed
                .iter()
                .any(|(n, p)| *n == name && (p.is_none() || *p == port)),
        }
    }

    /// Whether a page served from this `Host` may call the endpoint just
    /// because its `Origin` names the same host: only when the host is one
    /// vouched for (listed, or loopback by default).
    pub(crate) fn vouches_for(&self, host: &str) -> bool {
        !matches!(self, HostRule::Any) && self.allows(host)
    }
}

/// Whether `listen` (an address, checked elsewhere) is a loopback one.
fn listens_on_loopback(listen: &str) -> bool {
    match listen.parse::<std::net::SocketAddr>() {
        Ok(addr) => addr.ip().is_loopback(),
        Err(_) => listen
            .rsplit_once(':')
            .is_some_and(|(h, _)| is_loopback_name(h)),
    }
}

/// `localhost`, `127.0.0.0/8`, `[::1]`.
fn is_loopback_name(name: &str) -> bool {
    let bare = name.trim_start_matches('[').trim_end_matches(']');
    name == "localhost"
        || name.ends_with(".localhost")
        || bare
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// `name[:port]` (a `[v6]` literal keeps its brackets), lower-cased.
pub(crate) fn parse_host(host: &str) -> Option<(String, Option<u16>)> {
    let authority: http::uri::Authority = host.parse().ok()?;
    if authority.as_str().contains('@') {
        return None;
    }
    let name = authority.host().to_ascii_lowercase();
    (!name.is_empty()).then(|| (name, authority.port_u16()))
}

/// `scheme://host[:port]`, lower-cased, or `None` if `origin` is not one.
pub(crate) fn parse_origin(origin: &str) -> Option<String> {
    let uri: http::Uri = origin.parse().ok()?;
    let scheme = uri.scheme_str()?;
    let authority = uri.authority()?;
    let bare = uri.path_and_query().map_or(true, |pq| pq.as_str() == "/");
    (matches!(scheme, "http" | "https") && bare)
        .then(|| format!("{scheme}://{authority}").to_ascii_lowercase())
}

/// What `initialize` and `server/discover` tell the model about the tools.
fn instructions(config: &Config, tools: &[Tool], written_at: &[(usize, usize)]) -> String {
    let mut out = String::from(
        "Each tool calls one governed workflow endpoint. A refusal (a missing role, a rate \
         limit, a quota, an invalid argument) comes back as a tool error whose text is a \
         problem JSON object with a stable `code`; `rate_limited` and `quota_exceeded` \
         say when to retry (`_meta.\"dev.tollgate/http\".retry_after`, seconds).",
    );
    let mut listed = Vec::new();
    for tool in tools {
        let (a, _) = written_at[tool.operation];
        if listed.contains(&a) {
            continue;
        }
        listed.push(a);
        let api = &config.apis[a];
        out.push_str("\n- ");
        out.push_str(api.title.as_deref().unwrap_or(&api.name));
        if let Some(d) = &api.description {
            out.push_str(": ");
            out.push_str(d);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_are_scheme_host_and_port_only() {
        assert_eq!(
            parse_origin("https://App.example.com"),
            Some("https://app.example.com".into())
        );
        assert_eq!(
            parse_origin("http://localhost:5173/"),
            Some("http://localhost:5173".into())
        );
        assert_eq!(parse_origin("https://a.example/path"), None);
        assert_eq!(parse_origin("app.example.com"), None);
        assert_eq!(parse_origin("ftp://a.example"), None);
    }

    #[test]
    fn hosts_are_judged_by_name_and_optional_port() {
        assert!(HostRule::Loopback.allows("127.0.0.1:8080"));
        assert!(HostRule::Loopback.allows("LOCALHOST"));
        assert!(HostRule::Loopback.allows("[::1]:9"));
        assert!(!HostRule::Loopback.allows("evil.example:8080"));
        assert!(!HostRule::Loopback.allows("user@127.0.0.1"));
        let listed = HostRule::Listed(vec![
            ("mcp.example.com".into(), None),
            ("a.example".into(), Some(8443)),
        ]);
        assert!(listed.allows("MCP.example.com:1"));
        assert!(listed.allows("a.example:8443"));
        assert!(!listed.allows("a.example"));
        assert!(!listed.allows("localhost"));
        assert!(HostRule::Any.allows("anything.example"));
        assert!(!HostRule::Any.vouches_for("anything.example"));
        assert!(HostRule::Loopback.vouches_for("localhost:3000"));
    }
}
