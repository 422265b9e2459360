//! The OpenAPI 3.1 document of a config (DESIGN §7), built from the config
//! alone: no policy is compiled, so `tollgate openapi` works wherever
//! `tollgate check` would, and the admin API can serve the same document.
//!
//! Objects are built in a fixed order (serde_json keeps insertion order),
//! following the config's own order for APIs and operations, so the same
//! config always gives the same bytes and the export can be committed and
//! diffed.

use serde_json::{json, Map, Value};

use crate::config::schema::{
    ApiConfig, Config, DocumentedResponse, GraphqlOperationType, OperationConfig, PolicyDef,
    PolicyRef,
};
use crate::path_template::{self, Part};
use crate::policy::auth::{AuthConfig, AuthMethod};
use crate::policy::cors::CorsConfig;
use crate::policy::rate_limit::RateLimitConfig;
use crate::problem::Code;

/// The JSON form of the export.
pub fn export(config: &Config) -> Value {
    Exporter::new(config).document()
}

/// The export as pretty JSON text, ending in a newline.
pub fn to_json(config: &Config) -> String {
    let mut out = serde_json::to_string_pretty(&export(config)).unwrap_or_default();
    out.push('\n');
    out
}

/// The export as YAML text.
pub fn to_yaml(config: &Config) -> String {
    serde_yaml::to_string(&export(config)).unwrap_or_default()
}

/// An operation's effective policies (DESIGN §3: gateway, then API, then
/// operation `apply`, minus `skip`; the compiler's own rule,
/// [`crate::gateway::effective`]), each with the name it runs under.
pub fn effective_policies<'c>(
    config: &'c Config,
    api: &'c ApiConfig,
    op: &'c OperationConfig,
) -> Vec<(String, &'c PolicyDef)> {
    let resolve = |refs: &'c [PolicyRef], scope: &str| -> Vec<(String, &'c PolicyDef)> {
        refs.iter()
            .enumerate()
            .filter_map(|(i, r)| match r {
                PolicyRef::Name(name) => config.policies.get(name).map(|d| (name.clone(), d)),
                PolicyRef::Inline(def) => Some((crate::gateway::inline_name(scope, def, i), def)),
            })
            .collect()
    };
    let levels = [
        resolve(&config.apply, "gateway"),
        resolve(&api.apply, &api.name),
        resolve(&op.apply, &op.id),
    ];
    crate::gateway::effective([&levels[0], &levels[1], &levels[2]], api, op, |(n, _)| n)
        .into_iter()
        .cloned()
        .collect()
}

/// The gateway's own error responses, in status order: component name,
/// status, and the codes it may carry.
const ERRORS: &[(&str, u16, &[Code])] = &[
    (
        "BadRequest",
        400,
        &[
            Code::InvalidPath,
            Code::HeaderRequired,
            Code::HeaderInvalid,
            Code::HeaderForbidden,
            Code::InvalidRequestBody,
            Code::GraphqlOperationNotAllowed,
        ],
    ),
    (
        "Unauthorized",
        401,
        &[Code::Unauthenticated, Code::InvalidCredentials],
    ),
    (
        "Forbidden",
        403,
        &[Code::ForbiddenRole, Code::IpDenied, Code::Banned],
    ),
    ("PayloadTooLarge", 413, &[Code::BodyTooLarge]),
    ("UnsupportedMediaType", 415, &[Code::UnsupportedMediaType]),
    (
        "TooManyRequests",
        429,
        &[Code::RateLimited, Code::QuotaExceeded],
    ),
    (
        "BadGateway",
        502,
        &[Code::UpstreamUnavailable, Code::InvalidUpstreamResponse],
    ),
    ("GatewayTimeout", 504, &[Code::UpstreamTimeout]),
];

struct Exporter<'c> {
    config: &'c Config,
    /// Security schemes used so far, in first-use order.
    schemes: Map<String, Value>,
    /// Error response components used so far.
    errors_used: [bool; ERRORS.len()],
    /// Tags used, with their descriptions, in first-use order.
    tags: Map<String, Value>,
}

// === impl Exporter ===

impl<'c> Exporter<'c> {
    fn new(config: &'c Config) -> Self {
        Exporter {
            config,
            schemes: Map::new(),
            errors_used: [false; ERRORS.len()],
            tags: Map::new(),
        }
    }

    fn document(mut self) -> Value {
        let several = self.config.apis.len() > 1;
        if several {
            for api in &self.config.apis {
                let description = api
                    .description
                    .clone()
                    .unwrap_or_else(|| format!("Operations of the `{}` API.", api.name));
                self.tags.insert(api_tag(api), Value::String(description));
            }
        }
        let mut paths = Map::new();
        for api in &self.config.apis {
            for op in &api.operations {
                let (key, method, operation) = self.operation(api, op, several);
                let item = paths
                    .entry(key)
                    .or_insert_with(|| Value::Object(Map::new()));
                if let Value::Object(item) = item {
                    item.insert(method, operation);
                }
            }
        }
        let mut doc = Map::new();
        doc.insert("openapi".into(), json!("3.1.0"));
        doc.insert("info".into(), self.info());
        doc.insert(
            "jsonSchemaDialect".into(),
            json!("https://spec.openapis.org/oas/3.1/dialect/base"),
        );
        doc.insert("servers".into(), json!([{ "url": self.server_url() }]));
        if !self.tags.is_empty() {
            let tags: Vec<Value> = self
                .tags
                .iter()
                .map(|(name, description)| json!({ "name": name, "description": description }))
                .collect();
            doc.insert("tags".into(), Value::Array(tags));
        }
        doc.insert("paths".into(), Value::Object(paths));
        doc.insert("components".into(), self.components());
        Value::Object(doc)
    }

    fn info(&self) -> Value {
        let apis = &self.config.apis;
        let mut info = Map::new();
        match apis.as_slice() {
            [api] => {
                info.insert("title".into(), json!(api_tag(api)));
                info.insert(
                    "version".into(),
                    json!(api.version.as_deref().unwrap_or("0.0.0")),
                );
                if let Some(d) = &api.description {
                    info.insert("description".into(), json!(d));
                }
            }
            _ => {
                let titles: Vec<String> = apis.iter().map(api_tag).collect();
                let title = if titles.is_empty() {
                    "Tollgate gateway".to_string()
                } else {
                    titles.join(", ")
                };
                let mut versions: Vec<&str> = apis
                    .iter()
                    .map(|a| a.version.as_deref().unwrap_or("0.0.0"))
                    .collect();
                versions.dedup();
                let version = match versions.as_slice() {
                    [one] => one.to_string(),
                    _ => apis
                        .iter()
                        .map(|a| format!("{} {}", a.name, a.version.as_deref().unwrap_or("0.0.0")))
                        .collect::<Vec<_>>()
                        .join("; "),
                };
                let mut description =
                    String::from("The APIs published by this gateway, one tag each:\n");
                for api in apis {
                    description.push_str(&format!("\n- **{}**", api_tag(api)));
                    if let Some(d) = &api.description {
                        description.push_str(&format!(": {}", d.trim()));
                    }
                }
                info.insert("title".into(), json!(title));
                info.insert("version".into(), json!(version));
                info.insert("description".into(), json!(description));
            }
        }
        Value::Object(info)
    }

    fn server_url(&self) -> String {
        if let Some(url) = &self.config.public_url {
            return url.trim_end_matches('/').to_string();
        }
        let scheme = if self.config.tls.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{}", self.config.listen)
    }

    /// The path key, the method key and the Operation Object.
    fn operation(
        &mut self,
        api: &'c ApiConfig,
        op: &'c OperationConfig,
        several_apis: bool,
    ) -> (String, String, Value) {
        let template = format!("{}{}", api.base_path, op.path);
        let public = template.replace("{*", "{");
        // Operations sharing a GraphQL endpoint share a method and path,
        // which OpenAPI cannot express: each gets its own key, the
        // endpoint path with a fragment naming it (the convention GraphQL
        // APIs described in OpenAPI use, and what `tollgate import` reads).
        let key = match &op.graphql {
            Some(_) => format!("{public}#{}", op.id),
            None => public.clone(),
        };
        let policies = effective_policies(self.config, api, op);

        let mut o = Map::new();
        let mut tags: Vec<String> = Vec::new();
        if several_apis {
            tags.push(api_tag(api));
        }
        for tag in &op.tags {
            self.tags
                .entry(tag.clone())
                .or_insert_with(|| json!(format!("Operations tagged `{tag}`.")));
            if !tags.contains(tag) {
                tags.push(tag.clone());
            }
        }
        if !tags.is_empty() {
            o.insert("tags".into(), json!(tags));
        }
        o.insert(
            "summary".into(),
            json!(op.summary.clone().unwrap_or_else(|| op.id.clone())),
        );
        o.insert("description".into(), json!(description(api, op)));
        o.insert("operationId".into(), json!(op.id));
        let mut params = path_params(&template, op.path_schema.as_ref());
        let has_path_params = !params.is_empty();
        params.extend(query_params(op.query_schema.as_ref()));
        if !params.is_empty() {
            o.insert("parameters".into(), Value::Array(params));
        }
        if let Some(body) = request_body(op) {
            o.insert("requestBody".into(), body);
        }
        o.insert(
            "responses".into(),
            self.responses(op, &policies, has_path_params),
        );
        o.insert("security".into(), self.security(&policies));
        o.insert(
            "x-tollgate-policies".into(),
            Value::Array(
                policies
                    .iter()
                    .map(|(name, def)| {
                        let mut p = Map::new();
                        p.insert("name".into(), json!(name));
                        p.insert("type".into(), json!(def.type_name()));
                        if def.report_only {
                            p.insert("report_only".into(), json!(true));
                        }
                        Value::Object(p)
                    })
                    .collect(),
            ),
        );
        let limits: Vec<Value> = policies
            .iter()
            .filter_map(|(name, def)| {
                let r = def.config_of::<RateLimitConfig>()?;
                Some(json!({
                    "policy": name,
                    "limit": r.limit,
                    "window_seconds": r.window.0.as_secs(),
                    "burst": r.burst.unwrap_or(r.limit),
                }))
            })
            .collect();
        if !limits.is_empty() {
            o.insert("x-ratelimit-limit".into(), Value::Array(limits));
        }
        let cors: Vec<Value> = policies
            .iter()
            .filter_map(|(name, def)| Some(cors_extension(name, def.config_of::<CorsConfig>()?)))
            .collect();
        if !cors.is_empty() {
            o.insert("x-tollgate-cors".into(), Value::Array(cors));
        }
        // What a call costs in task units (what quotas with `unit: tasks`
        // count): declared, and where the upstream reports the real cost.
        let cost_header = op.cost_header.as_ref().or(api.cost_header.as_ref());
        if op.cost.is_some() || cost_header.is_some() {
            let mut cost = Map::new();
            cost.insert("units".into(), json!(op.cost.unwrap_or(1)));
            if let Some(header) = cost_header {
                cost.insert("reported_in".into(), json!(header));
            }
            o.insert("x-tollgate-cost".into(), Value::Object(cost));
        }
        if let Some(g) = &op.graphql {
            o.insert(
                "x-tollgate-graphql".into(),
                json!({
                    "operation": match g.operation {
                        GraphqlOperationType::Query => "query",
                        GraphqlOperationType::Mutation => "mutation",
                    },
                    "field": g.field,
                }),
            );
        }
        (key, op.method.to_ascii_lowercase(), Value::Object(o))
    }

    fn responses(
        &mut self,
        op: &OperationConfig,
        policies: &[(String, &PolicyDef)],
        has_path_params: bool,
    ) -> Value {
        let mut responses = Map::new();
        let mut ok = Map::new();
        let status = op.success_status.unwrap_or(200);
        ok.insert("description".into(), json!("The upstream's answer."));
        // 204 and 205 have no body to describe.
        if let (Some(schema), false) = (&op.response_schema, matches!(status, 204 | 205)) {
            ok.insert(
                "content".into(),
                json!({ "application/json": { "schema": schema } }),
            );
        }
        responses.insert(status.to_string(), Value::Object(ok));

        // What can refuse this call: the gateway's own checks of the
        // operation, then each policy's refusals as its kind declares them.
        let mut refusals = vec![
            Code::BodyTooLarge,
            Code::UpstreamUnavailable,
            Code::UpstreamTimeout,
        ];
        if has_path_params {
            refusals.push(Code::InvalidPath);
        }
        if op.request_schema.is_some() {
            refusals.extend([Code::InvalidRequestBody, Code::UnsupportedMediaType]);
        }
        if op.graphql.is_some() {
            refusals.extend([Code::InvalidRequestBody, Code::GraphqlOperationNotAllowed]);
        }
        for (_, def) in policies {
            refusals.extend_from_slice(def.config.refusals());
        }
        for (i, (name, status, codes)) in ERRORS.iter().enumerate() {
            if codes.iter().any(|c| refusals.contains(c)) {
                let key = status.to_string();
                let response = match op.responses.get(&key) {
                    // The upstream documents this status too: either body.
                    Some(upstream) => {
                        let mut content = upstream_content(upstream);
                        content.insert(
                            "application/problem+json".into(),
                            json!({ "schema": { "$ref": "#/components/schemas/Problem" } }),
                        );
                        json!({
                            "description": format!(
                                "{} Or the gateway refused the call (problem+json, see `{name}`).",
                                upstream.description.trim()
                            ),
                            "content": content,
                        })
                    }
                    None => {
                        self.errors_used[i] = true;
                        json!({ "$ref": format!("#/components/responses/{name}") })
                    }
                };
                responses.insert(key, response);
            }
        }
        // The upstream's other documented answers, then any other answer
        // it may make: passed through as it came.
        for (key, upstream) in &op.responses {
            if responses.contains_key(key) {
                continue;
            }
            let mut r = Map::new();
            r.insert("description".into(), json!(upstream.description.trim()));
            let content = upstream_content(upstream);
            if !content.is_empty() {
                r.insert("content".into(), Value::Object(content));
            }
            responses.insert(key.clone(), Value::Object(r));
        }
        if !responses.contains_key("default") {
            responses.insert(
                "default".into(),
                json!({ "description": "Any other answer of the upstream, passed through as it came." }),
            );
        }
        // In status order (ranges after their statuses), `default` last.
        let mut sorted: Vec<(String, Value)> = responses.into_iter().collect();
        sorted.sort_by(|(a, _), (b, _)| (a == "default", a).cmp(&(b == "default", b)));
        Value::Object(sorted.into_iter().collect())
    }

    /// Alternatives a caller may satisfy: one per way each auth policy
    /// accepts a credential; several auth policies must all pass, so their
    /// alternatives combine. `[]` when no auth runs.
    fn security(&mut self, policies: &[(String, &PolicyDef)]) -> Value {
        let mut alternatives: Vec<Map<String, Value>> = vec![Map::new()];
        let mut any = false;
        for (_, def) in policies {
            let Some(auth) = def.config_of::<AuthConfig>() else {
                continue;
            };
            any = true;
            let mut ways = self.schemes_of(auth);
            if def.report_only {
                // A report-only auth never refuses: anonymous calls pass.
                ways.push(String::new());
            }
            alternatives = alternatives
                .iter()
                .flat_map(|alt| {
                    ways.iter().map(move |way| {
                        let mut alt = alt.clone();
                        if !way.is_empty() {
                            alt.insert(way.clone(), json!([]));
                        }
                        alt
                    })
                })
                .collect();
        }
        if !any {
            return json!([]);
        }
        let mut seen: Vec<Map<String, Value>> = Vec::new();
        for alt in alternatives {
            if !seen.contains(&alt) {
                seen.push(alt);
            }
        }
        Value::Array(seen.into_iter().map(Value::Object).collect())
    }

    /// The security schemes an auth policy accepts, registered as components.
    fn schemes_of(&mut self, auth: &AuthConfig) -> Vec<String> {
        let mut names = Vec::new();
        for method in &auth.methods {
            match method {
                AuthMethod::ApiKey => {
                    let key = &auth.api_key;
                    let header_name = if key.header.eq_ignore_ascii_case("X-API-Key") {
                        "apiKey".to_string()
                    } else {
                        format!("apiKey_{}", component_safe(&key.header))
                    };
                    names.push(self.scheme(
                        header_name,
                        json!({
                            "type": "apiKey",
                            "in": "header",
                            "name": key.header,
                            "description": "An API key issued to the client (`tollgate key`).",
                        }),
                    ));
                    if key.bearer {
                        names.push(self.scheme(
                            "bearerApiKey".into(),
                            json!({
                                "type": "http",
                                "scheme": "bearer",
                                "description": "The API key, sent as `Authorization: Bearer <key>`.",
                            }),
                        ));
                    }
                    if let Some(q) = &key.query {
                        names.push(self.scheme(
                            format!("apiKeyQuery_{}", component_safe(q)),
                            json!({
                                "type": "apiKey",
                                "in": "query",
                                "name": q,
                                "description": "The API key, as a query parameter.",
                            }),
                        ));
                    }
                }
                AuthMethod::Jwt => names.push(self.scheme(
                    "jwt".into(),
                    json!({
                        "type": "http",
                        "scheme": "bearer",
                        "bearerFormat": "JWT",
                        "description": "A JWT from the configured issuer; its `sub` is the client id.",
                    }),
                )),
            }
        }
        names.dedup();
        names
    }

    fn scheme(&mut self, name: String, scheme: Value) -> String {
        self.schemes.entry(name.clone()).or_insert(scheme);
        name
    }

    fn components(&self) -> Value {
        let mut responses = Map::new();
        for (i, (name, status, codes)) in ERRORS.iter().enumerate() {
            if !self.errors_used[i] {
                continue;
            }
            let list = codes
                .iter()
                .map(|c| format!("`{}`", c.as_str()))
                .collect::<Vec<_>>()
                .join(", ");
            let mut r = Map::new();
            r.insert(
                "description".into(),
                json!(format!(
                    "The gateway refused or could not complete the call ({status}); `code` is one of {list}."
                )),
            );
            let mut headers = Map::new();
            headers.insert(
                "X-Request-Id".into(),
                json!({ "description": "The request's id, also in the body.", "schema": { "type": "string" } }),
            );
            match status {
                401 => {
                    headers.insert(
                        "WWW-Authenticate".into(),
                        json!({ "description": "The accepted schemes (when no credential was sent).", "schema": { "type": "string" } }),
                    );
                }
                429 => {
                    headers.insert(
                        "Retry-After".into(),
                        json!({ "description": "Seconds until a call may succeed.", "schema": { "type": "integer" } }),
                    );
                }
                _ => {}
            }
            r.insert("headers".into(), Value::Object(headers));
            r.insert(
                "content".into(),
                json!({ "application/problem+json": { "schema": { "$ref": "#/components/schemas/Problem" } } }),
            );
            responses.insert(name.to_string(), Value::Object(r));
        }
        let mut components = Map::new();
        components.insert("schemas".into(), json!({ "Problem": problem_schema() }));
        if !responses.is_empty() {
            components.insert("responses".into(), Value::Object(responses));
        }
        if !self.schemes.is_empty() {
            components.insert(
                "securitySchemes".into(),
                Value::Object(self.schemes.clone()),
            );
        }
        Value::Object(components)
    }
}

/// RFC 9457 problem details with Tollgate's `code` and `request_id`.
fn problem_schema() -> Value {
    let codes: Vec<&str> = Code::ALL
        .iter()
        .filter(|c| !c.is_admin())
        .map(|c| c.as_str())
        .collect();
    json!({
        "type": "object",
        "description": "An error the gateway itself produced (RFC 9457 problem details).",
        "required": ["type", "title", "status", "code", "request_id"],
        "properties": {
            "type": { "type": "string", "format": "uri" },
            "title": { "type": "string" },
            "status": { "type": "integer" },
            "detail": { "type": "string" },
            "code": { "type": "string", "enum": codes },
            "request_id": { "type": "string" },
            "errors": {
                "type": "array",
                "description": "Schema violations (`invalid_request_body`).",
                "items": {
                    "type": "object",
                    "required": ["pointer", "message"],
                    "properties": {
                        "pointer": { "type": "string", "description": "JSON pointer into the request body." },
                        "message": { "type": "string" }
                    }
                }
            }
        }
    })
}

fn api_tag(api: &ApiConfig) -> String {
    api.title.clone().unwrap_or_else(|| api.name.clone())
}

fn description(api: &ApiConfig, op: &OperationConfig) -> String {
    if let Some(d) = &op.description {
        return d.clone();
    }
    let what = op.summary.as_deref().unwrap_or(&op.id);
    let mut d = format!("{what}. Operation `{}` of the `{}` API", op.id, api.name);
    if let Some(g) = &op.graphql {
        let kind = match g.operation {
            GraphqlOperationType::Query => "query",
            GraphqlOperationType::Mutation => "mutation",
        };
        d.push_str(&format!(
            ": a GraphQL request selecting the {kind} field `{}` at `{} {}{}`",
            g.field,
            op.method.to_ascii_uppercase(),
            api.base_path,
            op.path
        ));
    }
    d.push('.');
    d
}

/// The content of an upstream answer documented in `responses:`.
fn upstream_content(response: &DocumentedResponse) -> Map<String, Value> {
    let mut content = Map::new();
    if let Some(schema) = &response.schema {
        content.insert("application/json".into(), json!({ "schema": schema }));
    }
    content
}

/// `x-tollgate-cors`: what a browser page is allowed by a `cors` policy.
fn cors_extension(name: &str, c: &CorsConfig) -> Value {
    let mut out = Map::new();
    out.insert("policy".into(), json!(name));
    out.insert("origins".into(), json!(c.origins));
    out.insert("methods".into(), json!(c.methods));
    out.insert("headers".into(), json!(c.headers));
    out.insert("expose".into(), json!(c.expose));
    out.insert("credentials".into(), json!(c.credentials));
    if let Some(max_age) = c.max_age {
        out.insert("max_age_seconds".into(), json!(max_age.0.as_secs()));
    }
    Value::Object(out)
}

/// The properties of a `query_schema`, as query parameters.
fn query_params(schema: Option<&Value>) -> Vec<Value> {
    let Some(schema) = schema else {
        return Vec::new();
    };
    let required: Vec<&str> = schema
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let Some(props) = schema.get("properties").and_then(Value::as_object) else {
        return Vec::new();
    };
    props
        .iter()
        .map(|(name, prop)| {
            let mut p = Map::new();
            p.insert("name".into(), json!(name));
            p.insert("in".into(), json!("query"));
            p.insert("required".into(), json!(required.contains(&name.as_str())));
            if let Some(d) = prop.get("description") {
                p.insert("description".into(), d.clone());
            }
            p.insert("schema".into(), prop.clone());
            Value::Object(p)
        })
        .collect()
}

/// `{name}` and `{*rest}` of a template, as required parameters: strings,
/// unless `path_schema` gives one a schema.
fn path_params(template: &str, path_schema: Option<&Value>) -> Vec<Value> {
    let mut out = Vec::new();
    for part in path_template::parts(template) {
        let (name, rest) = match part {
            Part::Param(name) => (name, false),
            Part::Rest(name) => (name, true),
            Part::Literal(_) => continue,
        };
        let mut p = Map::new();
        p.insert("name".into(), json!(name));
        p.insert("in".into(), json!("path"));
        p.insert("required".into(), json!(true));
        if rest {
            p.insert(
                "description".into(),
                json!("The rest of the path; may contain `/`."),
            );
        }
        let declared = path_schema
            .and_then(|s| s.get("properties"))
            .and_then(|props| props.get(name));
        p.insert("schema".into(), path_param_schema(declared));
        out.push(Value::Object(p));
    }
    out
}

/// What the gateway accepts in a path segment, for string parameters: not
/// empty, and no `/`, `\` or NUL, which it refuses encoded (DESIGN §5).
const PATH_SEGMENT_PATTERN: &str = r"^[^/\\\u0000]+$";

/// A path parameter's schema: the declared one (a string by default),
/// with the gateway's own limit on a segment when it is a string.
fn path_param_schema(declared: Option<&Value>) -> Value {
    let mut schema = declared
        .cloned()
        .unwrap_or_else(|| json!({ "type": "string" }));
    let stringly = match schema.get("type") {
        None => true,
        Some(Value::String(t)) => t == "string",
        Some(Value::Array(ts)) => ts.iter().any(|t| t == "string"),
        Some(_) => false,
    };
    if !stringly {
        return schema;
    }
    match schema.as_object_mut() {
        Some(map) if !map.contains_key("pattern") => {
            map.insert("pattern".into(), json!(PATH_SEGMENT_PATTERN));
            schema
        }
        _ => json!({ "allOf": [schema, { "pattern": PATH_SEGMENT_PATTERN }] }),
    }
}

fn request_body(op: &OperationConfig) -> Option<Value> {
    if let Some(schema) = &op.request_schema {
        let media = op
            .request_content_type
            .as_deref()
            .unwrap_or("application/json");
        let mut content = Map::new();
        content.insert(media.into(), json!({ "schema": schema }));
        return Some(json!({ "required": true, "content": content }));
    }
    op.graphql.as_ref().map(|g| {
        json!({
            "required": true,
            "description": format!("A GraphQL request whose operation selects `{}`.", g.field),
            "content": {
                "application/json": {
                    "schema": {
                        "type": "object",
                        "required": ["query"],
                        "properties": {
                            "query": { "type": "string" },
                            "operationName": { "type": "string" },
                            "variables": { "type": "object" }
                        }
                    }
                }
            }
        })
    })
}

/// A name usable in a component key (`^[a-zA-Z0-9._-]+$`).
fn component_safe(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                c
            } else {
                '_'
            }
        })
        .collect()
}
