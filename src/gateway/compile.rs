//! Compiling: a loaded config becomes a [`Gateway`] — its settings, the
//! route table, one pipeline per operation, the GraphQL endpoints, the
//! agents' tools — with every mistake collected as FILE:LINE:COL. Also the
//! rule for an operation's effective policies, which the OpenAPI export
//! and the admin API read too.

use http::header::HeaderValue;
use http::Method;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use super::{Deps, Operation, Settings, TlsFiles};
use crate::address::parse_cidr;
use crate::agents::{Agents, AgentsSource};
use crate::config::schema::{ApiConfig, OperationConfig, PolicyDef, PolicyRef};
use crate::config::{ConfigError, LoadedConfig};
use crate::context::OperationInfo;
use crate::credentials::Credentials;
use crate::policy::{self, CompileCx, CompiledPolicy, OperationService, RoleTable};
use crate::proxy::{Proxy, UpstreamTarget};
use crate::routing::RouteTable;
use crate::stack::{self, Pipeline, Terminal};
use rustls::sign::CertifiedKey;

/// An operation's effective policies (DESIGN §3): the gateway's, then its
/// API's, then its own `apply` lists, minus what the API and the operation
/// `skip` by name (an operation's own list is never skipped). One rule for
/// the compiler (compiled policies), the OpenAPI export and the admin API
/// (definitions): `name` says what an entry is called.
pub fn effective<'p, T>(
    [gateway, api_level, own]: [&'p [T]; 3],
    api: &ApiConfig,
    op: &OperationConfig,
    name: impl Fn(&T) -> &str,
) -> Vec<&'p T> {
    let skipped = |skips: &[&Vec<String>], entry: &T| {
        skips.iter().any(|s| s.iter().any(|n| n == name(entry)))
    };
    gateway
        .iter()
        .filter(|p| !skipped(&[&api.skip, &op.skip], p))
        .chain(api_level.iter().filter(|p| !skipped(&[&op.skip], p)))
        .chain(own.iter())
        .collect()
}

/// A stable name for an inline definition, so its counters survive a
/// reload as long as the config keeps it in the same place.
pub(crate) fn inline_name(scope: &str, def: &PolicyDef, index: usize) -> String {
    format!("{scope}/{}#{index}", def.type_name())
}

/// `{name}` and `{*name}` parameters of a path template.
fn template_params(template: &str) -> Vec<&str> {
    crate::path_template::params(template).collect()
}

/// The methods an operation may use without declaring them (RFC 9110 §9
/// and PATCH; CONNECT is not an operation's).
const STANDARD_METHODS: &[Method] = &[
    Method::GET,
    Method::HEAD,
    Method::POST,
    Method::PUT,
    Method::PATCH,
    Method::DELETE,
    Method::OPTIONS,
    Method::TRACE,
];

fn method_names(methods: &[Method]) -> String {
    methods
        .iter()
        .map(Method::as_str)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Turns a loaded config into the parts of a `Gateway`, collecting errors.
pub(super) struct Compiler<'a> {
    loaded: &'a LoadedConfig,
    deps: &'a Deps,
    errors: Vec<ConfigError>,
}

type Compiled = (
    Settings,
    Option<Arc<CertifiedKey>>,
    Vec<Operation>,
    RouteTable,
    Pipeline,
    Agents,
);

impl<'a> Compiler<'a> {
    pub(super) fn new(loaded: &'a LoadedConfig, deps: &'a Deps) -> Self {
        Compiler {
            loaded,
            deps,
            errors: Vec::new(),
        }
    }

    fn error(&mut self, path: &[&str], message: impl Into<String>) {
        self.errors.push(self.loaded.error_at(path, message));
    }

    pub(super) fn run(mut self) -> Result<Compiled, Vec<ConfigError>> {
        let config = &self.loaded.config;
        let settings = self.settings();
        let tls_key = match &settings.tls {
            Some(files) => match crate::server::load_certified_key(files) {
                Ok(key) => Some(key),
                Err((field, message)) => {
                    self.error(&["tls", field], message);
                    None
                }
            },
            None => None,
        };
        let roles = RoleTable::new(config.roles.clone());
        let base_dir = self.loaded.base_dir.clone();
        // Keys and the JWT verifier are built once, before any policy, and
        // shared by every `auth` policy.
        let (credentials, credential_errors) =
            Credentials::build(config, &roles, &base_dir, &self.deps.jwks);
        for (path, message) in credential_errors {
            self.error(
                &path.iter().map(String::as_str).collect::<Vec<_>>(),
                message,
            );
        }
        let mut cx = CompileCx::new(config, &roles, &self.deps.clock, &base_dir)
            .with_credentials(Arc::new(credentials))
            .with_store(&self.deps.store)
            .with_caches(&self.deps.caches);

        // Named policies compile once; operations share them (and their counters).
        let mut named: std::collections::BTreeMap<&str, CompiledPolicy> = Default::default();
        for (name, def) in &config.policies {
            let compiled = policy::compile(def, name, &mut cx);
            for (path, message) in cx.take_errors() {
                self.errors
                    .push(self.loaded.policy_error(name, &path, message));
            }
            if let Some(compiled) = compiled {
                named.insert(name, compiled);
            }
        }

        let gateway_policies = self.resolve(&config.apply, &["apply"], "gateway", &named, &mut cx);
        let extensions = self.extension_methods();
        let mut routes = RouteTable::new();
        let mut operations = Vec::new();
        // Where each compiled operation was written (API and operation index).
        let mut written_at: Vec<(usize, usize)> = Vec::new();
        // The probe of each operation that is an agent tool.
        let mut probes: Vec<(usize, OperationService)> = Vec::new();
        for (a, api) in config.apis.iter().enumerate() {
            let a_s = a.to_string();
            let api_policies = self.resolve(
                &api.apply,
                &["apis", &a_s, "apply"],
                &api.name,
                &named,
                &mut cx,
            );
            let api_target = api
                .upstream
                .as_deref()
                .map(|url| UpstreamTarget::base(url, &api.base_path));
            if let Some(Err(message)) = &api_target {
                self.error(&["apis", &a_s, "upstream"], message.clone());
            }
            for (o, op) in api.operations.iter().enumerate() {
                let o_s = o.to_string();
                let at =
                    |field: &'static str| ["apis", a_s.as_str(), "operations", o_s.as_str(), field];
                let method = match Method::from_bytes(op.method.to_ascii_uppercase().as_bytes()) {
                    Ok(m) if STANDARD_METHODS.contains(&m) || extensions.contains(&m) => m,
                    Ok(_) => {
                        self.error(
                            &at("method"),
                            format!(
                                "`{}` is not a standard method ({}); declare an extension method in `extension_methods`",
                                op.method,
                                method_names(STANDARD_METHODS)
                            ),
                        );
                        continue;
                    }
                    Err(_) => {
                        self.error(
                            &at("method"),
                            format!("`{}` is not an HTTP method", op.method),
                        );
                        continue;
                    }
                };
                if !op.path.starts_with('/') {
                    self.error(&at("path"), "a path starts with `/`");
                    continue;
                }
                let template = format!("{}{}", api.base_path, op.path);
                let target = match (&op.upstream, &api_target) {
                    (Some(url), _) => UpstreamTarget::template(url, &template_params(&template)),
                    (None, Some(Ok(base))) => Ok(base.clone()),
                    (None, Some(Err(_))) => continue,
                    (None, None) => Err(format!(
                        "operation `{}` has no `upstream` and its API `{}` has none either",
                        op.id, api.name
                    )),
                };
                let target = match target {
                    Ok(t) => t,
                    Err(message) => {
                        let field = if op.upstream.is_some() {
                            "upstream"
                        } else {
                            "id"
                        };
                        self.error(&at(field), message);
                        continue;
                    }
                };
                let routed = match op.graphql {
                    Some(_) => routes.insert_graphql(method.clone(), &template, operations.len()),
                    None => routes.insert(method.clone(), &template, operations.len()),
                };
                if let Err(e) = routed {
                    let message = match e {
                        crate::routing::RouteError::Duplicate {
                            method,
                            template,
                            existing,
                        } => {
                            let other: &Operation = &operations[existing];
                            format!(
                                "{method} {template} is already operation `{}`",
                                other.info.id
                            )
                        }
                        crate::routing::RouteError::Conflict(m) => format!("`{template}`: {m}"),
                    };
                    self.error(&at("path"), message);
                    continue;
                }
                let path_check = self.documented(
                    op,
                    &template,
                    ["apis", a_s.as_str(), "operations", o_s.as_str()],
                );
                let op_policies = self.resolve(&op.apply, &at("apply"), &op.id, &named, &mut cx);
                let effective: Vec<CompiledPolicy> = effective(
                    [&gateway_policies, &api_policies, &op_policies],
                    api,
                    op,
                    |p| &p.meta.name,
                )
                .into_iter()
                .cloned()
                .collect();
                let timeout = op
                    .upstream_timeout
                    .or(api.upstream_timeout)
                    .map(|d| d.0)
                    .unwrap_or(settings.upstream_timeout);
                let terminal = Terminal::Proxy(Proxy::new(self.deps.client.clone(), timeout));
                // Body schemas compile once, here, and run in phase Validate.
                let mut stack_policies = effective.clone();
                // A form or multipart `request_schema` is documentation: the
                // gateway validates JSON bodies only.
                let json_body = op.request_content_type.as_deref().map_or(true, |media| {
                    let media = media.trim().to_ascii_lowercase();
                    media == "application/json" || media.ends_with("+json")
                });
                let validated = if json_body {
                    std::borrow::Cow::Borrowed(op)
                } else {
                    let mut documented_only = op.clone();
                    documented_only.request_schema = None;
                    std::borrow::Cow::Owned(documented_only)
                };
                match crate::body_schema::compile_for(&validated, settings.max_body) {
                    Ok(schema) => stack_policies.extend(schema),
                    Err(errors) => {
                        for (field, message) in errors {
                            self.error(&at(field), message);
                        }
                    }
                }
                let cost = self.task_cost(api, op, &a_s, &o_s);
                let info = Arc::new(OperationInfo {
                    api: api.name.as_str().into(),
                    id: op.id.as_str().into(),
                    header_value: HeaderValue::from_str(&op.id)
                        .unwrap_or(HeaderValue::from_static("invalid")),
                    cost,
                });
                let metrics = self.deps.metrics.operation(&info.api, &info.id);
                let mut tool_pipeline = None;
                if crate::agents::is_tool(api, op) {
                    let probe =
                        stack::build_probe(&effective, crate::agents::mcp::probe_terminal());
                    probes.push((operations.len(), probe));
                    tool_pipeline = Some(stack::tool_call(
                        &stack_policies,
                        &gateway_policies,
                        terminal.clone(),
                    ));
                }
                operations.push(Operation {
                    metrics,
                    info,
                    method,
                    template,
                    target,
                    policies: effective.iter().map(|p| p.meta.clone()).collect(),
                    graphql: op.graphql.clone(),
                    graphql_endpoint: None,
                    path_check,
                    pipeline: Pipeline::new(&stack_policies, terminal),
                    tool_pipeline,
                });
                written_at.push((a, o));
            }
        }
        self.link_graphql(&mut operations, &written_at);
        let unrouted = stack::unrouted(&gateway_policies, super::entry::unrouted_terminal());
        let agents = Agents::compile(AgentsSource {
            config,
            operations: &operations,
            written_at: &written_at,
            probes,
            routes: &routes,
            gateway_policies: &gateway_policies,
            deps: self.deps,
            roles: cx.roles,
            base_dir: &self.loaded.base_dir,
        });
        let agents = match agents {
            Ok(agents) => agents,
            Err(errors) => {
                for (path, message) in errors {
                    self.error(
                        &path.iter().map(String::as_str).collect::<Vec<_>>(),
                        message,
                    );
                }
                Agents::default()
            }
        };
        if self.errors.is_empty() {
            Ok((settings, tls_key, operations, routes, unrouted, agents))
        } else {
            self.errors
                .sort_by(|a, b| (&a.file, a.line, a.column).cmp(&(&b.file, b.line, b.column)));
            self.errors.dedup();
            Err(self.errors)
        }
    }

    /// An operation's task cost: its `cost` (default 1) and the header its
    /// upstream reports units in (the operation's `cost_header`, else the
    /// API's).
    fn task_cost(
        &mut self,
        api: &ApiConfig,
        op: &OperationConfig,
        a_s: &str,
        o_s: &str,
    ) -> crate::cost::TaskCost {
        let header = match (&op.cost_header, &api.cost_header) {
            (Some(name), _) => Some((name, vec!["apis", a_s, "operations", o_s, "cost_header"])),
            (None, Some(name)) => Some((name, vec!["apis", a_s, "cost_header"])),
            (None, None) => None,
        };
        let header = header.and_then(|(name, path)| match crate::cost::parse_header_name(name) {
            Ok(name) => Some(name),
            Err(message) => {
                self.error(&path, message);
                None
            }
        });
        let invalid = self.deps.metrics.cost_header_invalid(&api.name, &op.id);
        crate::cost::TaskCost::new(op.cost.unwrap_or(1), header, invalid)
    }

    /// Joins GraphQL operations that share a method and path into one
    /// endpoint: each of their routes answers through it.
    fn link_graphql(&mut self, operations: &mut [Operation], written_at: &[(usize, usize)]) {
        let mut groups: std::collections::BTreeMap<(String, &str), Vec<usize>> = Default::default();
        for (i, op) in operations.iter().enumerate() {
            if op.graphql.is_some() {
                groups
                    .entry((op.method.to_string(), op.template.as_str()))
                    .or_default()
                    .push(i);
            }
        }
        let groups: Vec<Vec<usize>> = groups.into_values().collect();
        for group in groups {
            let members = group
                .iter()
                .filter_map(|&i| {
                    let op = &operations[i];
                    op.graphql.clone().map(|selector| crate::graphql::Member {
                        selector,
                        info: op.info.clone(),
                        pipeline: op.pipeline.clone(),
                    })
                })
                .collect();
            match crate::graphql::GraphqlEndpoint::new(
                members,
                self.loaded.config.graphql_unmatched,
            ) {
                Ok(endpoint) => {
                    let endpoint = Arc::new(endpoint);
                    for &i in &group {
                        operations[i].graphql_endpoint = Some(endpoint.clone());
                    }
                }
                Err((member, message)) => {
                    let (a, o) = written_at[group[member]];
                    let (a, o) = (a.to_string(), o.to_string());
                    self.error(&["apis", &a, "operations", &o, "graphql", "field"], message);
                }
            }
        }
    }

    /// What an operation documents of its requests and answers
    /// (`path_schema`, `success_status`, `responses`), checked; the
    /// compiled path check, if it has one.
    fn documented(
        &mut self,
        op: &OperationConfig,
        template: &str,
        op_at: [&str; 4],
    ) -> Option<crate::routing::PathParamCheck> {
        let at = |field: &'static str| {
            let mut path = op_at.to_vec();
            path.push(field);
            path
        };
        if let Some(status) = op.success_status {
            if !(200..=299).contains(&status) {
                self.error(
                    &at("success_status"),
                    format!("{status} is not a success status (200 to 299)"),
                );
            }
        }
        for key in op.responses.keys() {
            let status_like = key.len() == 3
                && key.as_bytes()[0].is_ascii_digit()
                && (key[1..].bytes().all(|b| b.is_ascii_digit()) || &key[1..] == "XX");
            if !(status_like && ('1'..='5').contains(&key.chars().next().unwrap_or('0')))
                && key != "default"
            {
                let mut path = at("responses");
                path.push(key);
                self.error(
                    &path,
                    format!("`{key}` is not a status (`404`), a range (`4XX`) or `default`"),
                );
            }
        }
        let schema = op.path_schema.as_ref()?;
        match crate::routing::PathParamCheck::compile(schema, &template_params(template)) {
            Ok(check) => Some(check),
            Err(message) => {
                self.error(&at("path_schema"), message);
                None
            }
        }
    }

    /// Compiles an `apply` list: names resolve to the shared compiled
    /// policy, inline definitions compile here under a generated name.
    fn resolve(
        &mut self,
        refs: &[PolicyRef],
        at: &[&str],
        scope: &str,
        named: &std::collections::BTreeMap<&str, CompiledPolicy>,
        cx: &mut CompileCx<'_>,
    ) -> Vec<CompiledPolicy> {
        let mut out = Vec::new();
        for (i, r) in refs.iter().enumerate() {
            let i_s = i.to_string();
            let mut path: Vec<&str> = at.to_vec();
            path.push(&i_s);
            match r {
                // Unknown names never get here (the loader refuses them); a
                // named policy missing from `named` failed to compile and was
                // reported already.
                PolicyRef::Name(name) => out.extend(named.get(name.as_str()).cloned()),
                PolicyRef::Inline(def) => {
                    let name = inline_name(scope, def, i);
                    let compiled = policy::compile(def, &name, cx);
                    for (sub, message) in cx.take_errors() {
                        let mut full: Vec<&str> = path.clone();
                        full.extend(sub.iter().map(String::as_str));
                        self.error(&full, message);
                    }
                    out.extend(compiled);
                }
            }
        }
        out
    }

    /// `extension_methods`: tokens, and none a standard method.
    fn extension_methods(&mut self) -> Vec<Method> {
        let mut out = Vec::new();
        for (i, name) in self.loaded.config.extension_methods.iter().enumerate() {
            let at = ["extension_methods", &i.to_string()];
            match Method::from_bytes(name.as_bytes()) {
                Ok(m) if STANDARD_METHODS.contains(&m) => self.error(
                    &at,
                    format!("`{name}` is a standard method: list only others"),
                ),
                Ok(m) if name.bytes().all(|b| !b.is_ascii_lowercase()) => out.push(m),
                Ok(_) => self.error(&at, format!("write `{name}` in capitals")),
                Err(_) => self.error(&at, format!("`{name}` is not an HTTP method")),
            }
        }
        out
    }

    fn settings(&mut self) -> Settings {
        let config = &self.loaded.config;
        let listen = match config.listen.parse::<SocketAddr>() {
            Ok(a) => a,
            Err(_) => {
                self.error(
                    &["listen"],
                    format!("`{}` is not an address like 127.0.0.1:8080", config.listen),
                );
                SocketAddr::from(([127, 0, 0, 1], 0))
            }
        };
        let admin_listen = config
            .admin
            .as_ref()
            .and_then(|admin| match admin.listen.parse() {
                Ok(a) => Some(a),
                Err(_) => {
                    self.error(
                        &["admin", "listen"],
                        format!("`{}` is not an address like 127.0.0.1:9901", admin.listen),
                    );
                    None
                }
            });
        let mut trusted_proxies = Vec::new();
        for (i, entry) in config.trusted_proxies.iter().enumerate() {
            match parse_cidr(entry) {
                Ok(net) => trusted_proxies.push(net),
                Err(message) => self.error(&["trusted_proxies", &i.to_string()], message),
            }
        }
        let mut allow_override_headers = Vec::new();
        for (i, name) in config.allow_override_headers.iter().enumerate() {
            let lower = name.trim().to_ascii_lowercase();
            let known =
                super::entry::OVERRIDE_HEADERS.contains(&lower.as_str()) || lower == "_method";
            if known {
                allow_override_headers.push(lower);
            } else {
                self.error(
                    &["allow_override_headers", &i.to_string()],
                    format!(
                        "`{name}` is not an override header (one of {}, or `_method`)",
                        super::entry::OVERRIDE_HEADERS.join(", ")
                    ),
                );
            }
        }
        let resolve = |f: &str| {
            let p = PathBuf::from(f);
            if p.is_absolute() {
                p
            } else {
                self.loaded.base_dir.join(p)
            }
        };
        let limits = &config.limits;
        Settings {
            listen,
            tls: config.tls.as_ref().map(|t| TlsFiles {
                cert_file: resolve(&t.cert_file),
                key_file: resolve(&t.key_file),
            }),
            admin_listen,
            admin_token_env: config.admin.as_ref().and_then(|a| a.token_env.clone()),
            trusted_proxies,
            max_body: limits.max_body.0,
            max_header_bytes: limits.max_header_bytes.0,
            header_read_timeout: limits.header_read_timeout.0,
            body_read_timeout: limits.body_read_timeout.0,
            upstream_timeout: limits.upstream_timeout.0,
            max_connections: limits.max_connections.max(1),
            max_connections_per_ip: limits.max_connections_per_ip,
            idle_timeout: limits.idle_timeout.0,
            http2_ping_interval: limits.http2_ping_interval.0,
            send_timeout: limits.send_timeout.0,
            body_deadline: limits.body_deadline.0,
            min_body_rate: limits.min_body_rate.0,
            drain_timeout: limits.drain_timeout.0,
            workers: config
                .workers
                .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())),
            removed_override_headers: super::entry::OVERRIDE_HEADERS
                .iter()
                .filter(|name| !allow_override_headers.contains(&name.to_string()))
                .map(|name| http::HeaderName::from_static(name))
                .collect(),
            remove_method_param: !allow_override_headers.iter().any(|a| a == "_method"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn template_params_include_catch_alls() {
        assert_eq!(template_params("/a/{id}/b/{*rest}"), ["id", "rest"]);
        assert!(template_params("/plain").is_empty());
    }
}
