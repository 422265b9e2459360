//! `tollgate import`: an OpenAPI 3.0/3.1 spec (YAML or JSON) becomes
//! config YAML — a top-level `policies:` with one `auth` policy when the
//! spec has security schemes, and `apis:` with one operation per spec
//! operation. Adding `version: 1` and `listen:` makes it a config.
//!
//! What carries over: operationId (or a generated id), method, the path
//! template, summary/description/tags; path parameters with their types
//! and formats as `path_schema` (checked at the gateway), query parameters
//! as `query_schema`; the request body schema (JSON, else a form or
//! multipart body with its `request_content_type`); the success status
//! (the lowest 2xx, `success_status` unless 200) with its JSON schema, and
//! every other documented answer (`404`, `default`, ...) as `responses`;
//! with every local `$ref` inlined (a recursive one is cut where it recurs, as `{}`), and
//! 3.0 schema quirks (`nullable`, boolean `exclusiveMinimum`) rewritten to
//! JSON Schema 2020-12. Security: HTTP bearer (with `bearerFormat: JWT` or
//! not) becomes an API key accepted as a
//! bearer token; `apiKey` in a header or query becomes `api_key` with that
//! header or query name. The policy is applied to the API when the spec
//! requires security globally (operations with `security: []` skip it), or
//! to each operation that requires it.
//!
//! GraphQL: paths written `/graphql#name` (how GraphQL operations are put
//! into OpenAPI) become `path: /graphql` with `graphql: {operation, field}`,
//! taken from an `x-tollgate-graphql` extension, else from the example
//! query of the request body, else guessed from the name (`get*`, `list*`,
//! ... are queries); every operation at such a path becomes a GraphQL one.
//!
//! What cannot be carried (header and cookie parameters, a second body
//! type, non-JSON response schemas, non-`form` query serialisation) is
//! named in a `# Note:` comment at the top of the output.

use serde_json::{json, Map, Value};
use std::collections::HashSet;

use crate::config::schema::GraphqlOperationType;

/// The command's options.
#[derive(Debug, Clone, Default)]
pub struct ImportOptions {
    /// The upstream URL of the API.
    pub upstream: String,
    /// The API's name (default: from the spec's title).
    pub name: Option<String>,
    /// The API's `base_path` (default: none, the spec's paths as they are).
    pub base_path: Option<String>,
}

/// How deep `$ref`s are followed before the rest is cut: specs are trusted
/// input, but a pathological one must not blow the stack.
const MAX_REF_DEPTH: usize = 32;

const METHODS: &[&str] = &[
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

/// Turns spec text into config YAML text (with a leading comment).
pub fn import(spec_text: &str, options: &ImportOptions) -> Result<String, String> {
    let yaml: serde_yaml::Value =
        serde_yaml::from_str(spec_text).map_err(|e| format!("the spec does not parse: {e}"))?;
    let spec: Value = serde_json::to_value(yaml)
        .map_err(|e| format!("the spec is not a JSON-compatible document: {e}"))?;
    let version = spec
        .get("openapi")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if !(version.starts_with("3.0") || version.starts_with("3.1")) {
        return Err(format!(
            "this reads OpenAPI 3.0 and 3.1 documents; `openapi` is `{version}`"
        ));
    }
    Importer { spec: &spec }.run(options)
}

/// Reads the spec at `path` and imports it.
pub fn import_file(path: &std::path::Path, options: &ImportOptions) -> Result<String, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    import(&text, options)
}

struct Importer<'s> {
    spec: &'s Value,
}

/// The auth policy the spec's schemes call for.
#[derive(Default)]
struct AuthPlan {
    /// The bearer scheme says its tokens are JWTs (noted, not enforced).
    jwt: bool,
    api_key: bool,
    header: Option<String>,
    bearer: bool,
    query: Option<String>,
}

impl Importer<'_> {
    fn run(&self, options: &ImportOptions) -> Result<String, String> {
        let info = self.spec.get("info").cloned().unwrap_or(json!({}));
        let title = info.get("title").and_then(Value::as_str).unwrap_or("api");
        let name = options.name.clone().unwrap_or_else(|| slug(title));
        let auth_name = format!("{name}-auth");
        let plan = self.auth_plan();
        let global_security = self
            .spec
            .get("security")
            .and_then(Value::as_array)
            .is_some_and(|s| !s.is_empty());

        let mut notes: Vec<String> = Vec::new();
        let paths = self
            .spec
            .get("paths")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        // Paths written with a fragment mark a GraphQL endpoint.
        let graphql_bases: HashSet<String> = paths
            .keys()
            .filter_map(|p| p.split_once('#').map(|(base, _)| base.to_string()))
            .collect();
        let mut operations = Vec::new();
        let mut ids: HashSet<String> = HashSet::new();
        for (raw_path, item) in &paths {
            let item = self.deref(item);
            let (path, fragment) = match raw_path.split_once('#') {
                Some((p, f)) => (p.to_string(), Some(f.to_string())),
                None => (raw_path.clone(), None),
            };
            for method in METHODS {
                let Some(op) = item.get(*method) else {
                    continue;
                };
                let mut out = Map::new();
                let id = op
                    .get("operationId")
                    .and_then(Value::as_str)
                    .map(str::to_string)
                    .unwrap_or_else(|| generated_id(method, raw_path));
                let id = unique(id, &mut ids);
                out.insert("id".into(), json!(id));
                out.insert("method".into(), json!(method.to_ascii_uppercase()));
                out.insert("path".into(), json!(path));
                if graphql_bases.contains(&path) {
                    let (kind, field, guessed) =
                        self.graphql_selector(op, fragment.as_deref().unwrap_or(&id));
                    if guessed {
                        notes.push(format!(
                            "operation `{id}`: GraphQL field `{field}` ({kind}) was guessed from its name; check it"
                        ));
                    }
                    out.insert(
                        "graphql".into(),
                        json!({ "operation": kind, "field": field }),
                    );
                }
                for key in ["summary", "description"] {
                    if let Some(v) = op.get(key).and_then(Value::as_str) {
                        out.insert(key.into(), json!(v.trim()));
                    }
                }
                if let Some(tags) = op.get("tags").and_then(Value::as_array) {
                    if !tags.is_empty() {
                        out.insert("tags".into(), Value::Array(tags.clone()));
                    }
                }
                if plan.is_some() {
                    let own = op.get("security").and_then(Value::as_array);
                    match (global_security, own.map(|s| s.is_empty())) {
                        (true, Some(true)) => {
                            out.insert("skip".into(), json!([auth_name]));
                        }
                        (false, Some(false)) => {
                            out.insert("apply".into(), json!([auth_name]));
                        }
                        _ => {}
                    }
                }
                let mut note = |what: String| notes.push(format!("operation `{id}`: {what}"));
                self.parameters(&item, op, &mut out, &mut note);
                if let Some((media, schema)) = self.request_body(op, &mut note) {
                    if media != "application/json" {
                        out.insert("request_content_type".into(), json!(media));
                    }
                    out.insert("request_schema".into(), schema);
                }
                self.responses(op, &mut out, &mut note);
                operations.push(Value::Object(out));
            }
        }

        let mut api = Map::new();
        api.insert("name".into(), json!(name));
        api.insert("title".into(), json!(title));
        if let Some(v) = info.get("version").and_then(Value::as_str) {
            api.insert("version".into(), json!(v));
        }
        if let Some(d) = info.get("description").and_then(Value::as_str) {
            api.insert("description".into(), json!(d.trim()));
        }
        api.insert(
            "base_path".into(),
            json!(options
                .base_path
                .clone()
                .unwrap_or_default()
                .trim_end_matches('/')),
        );
        api.insert("upstream".into(), json!(options.upstream));
        if plan.is_some() && global_security {
            api.insert("apply".into(), json!([auth_name]));
        }
        api.insert("operations".into(), Value::Array(operations));

        let mut config = Map::new();
        if let Some(plan) = &plan {
            let mut policy = Map::new();
            policy.insert("type".into(), json!("auth"));
            let mut methods = Vec::new();
            if plan.api_key {
                methods.push("api_key");
            }
            if plan.jwt {
                notes.push(format!(
                    "the spec's bearer tokens are JWTs: policy `{auth_name}` accepts them as API keys of configured clients; to verify them as JWTs, add `jwt` to its `methods` and a top-level `jwt:` section (issuer, audience, key)"
                ));
            }
            policy.insert("methods".into(), json!(methods));
            if plan.api_key {
                let mut source = Map::new();
                source.insert(
                    "header".into(),
                    json!(plan.header.clone().unwrap_or_else(|| "X-API-Key".into())),
                );
                source.insert("bearer".into(), json!(plan.bearer));
                if let Some(q) = &plan.query {
                    source.insert("query".into(), json!(q));
                }
                policy.insert("api_key".into(), Value::Object(source));
            }
            config.insert(
                "policies".into(),
                json!({ auth_name.clone(): Value::Object(policy) }),
            );
        }
        config.insert("apis".into(), json!([Value::Object(api)]));

        let body = serde_yaml::to_string(&Value::Object(config))
            .map_err(|e| format!("cannot write YAML: {e}"))?;
        let mut out = format!(
            "# Imported by `tollgate import` from {title} ({} operations).\n\
             # Add `version: 1` and `listen: ADDRESS` to make this a config.\n",
            paths_count(self.spec)
        );
        for note in notes {
            out.push_str(&format!("# Note: {note}.\n"));
        }
        out.push_str(&body);
        Ok(out)
    }

    /// The auth policy the spec's security schemes call for, if any.
    fn auth_plan(&self) -> Option<AuthPlan> {
        let schemes = self
            .spec
            .pointer("/components/securitySchemes")
            .and_then(Value::as_object)?;
        let mut plan = AuthPlan::default();
        let mut any = false;
        for scheme in schemes.values() {
            let scheme = self.deref(scheme);
            let kind = scheme.get("type").and_then(Value::as_str).unwrap_or("");
            let field = |k: &str| scheme.get(k).and_then(Value::as_str).map(str::to_string);
            match kind {
                "http" if field("scheme").is_some_and(|s| s.eq_ignore_ascii_case("bearer")) => {
                    any = true;
                    // Bearer tokens are accepted as keys of configured
                    // clients, so the output loads as it is (DESIGN §2); a
                    // JWT bearer scheme gets a note on verifying them as JWTs
                    // instead, which needs the identity provider's key.
                    plan.api_key = true;
                    plan.bearer = true;
                    if field("bearerFormat").is_some_and(|f| f.eq_ignore_ascii_case("jwt")) {
                        plan.jwt = true;
                    }
                }
                "apiKey" => match field("in").as_deref() {
                    Some("header") => {
                        any = true;
                        plan.api_key = true;
                        plan.header = field("name");
                    }
                    Some("query") => {
                        any = true;
                        plan.api_key = true;
                        plan.query = field("name");
                    }
                    _ => {}
                },
                _ => {}
            }
        }
        any.then_some(plan)
    }

    /// `(operation, field, guessed)` of a GraphQL operation.
    fn graphql_selector(&self, op: &Value, name: &str) -> (&'static str, String, bool) {
        let kind_str = |t: GraphqlOperationType| match t {
            GraphqlOperationType::Query => "query",
            GraphqlOperationType::Mutation => "mutation",
        };
        if let Some(ext) = op.get("x-tollgate-graphql") {
            let field = ext.get("field").and_then(Value::as_str);
            let kind = ext.get("operation").and_then(Value::as_str);
            if let (Some(field), Some(kind)) = (field, kind) {
                let kind = if kind == "mutation" {
                    "mutation"
                } else {
                    "query"
                };
                return (kind, field.to_string(), false);
            }
        }
        for query in self.example_queries(op) {
            if let Ok(selected) = crate::graphql::select(&query, None) {
                if let (Some(kind), Some(field)) = (selected.operation, selected.fields.first()) {
                    return (kind_str(kind), field.clone(), false);
                }
            }
        }
        let lower = name.to_ascii_lowercase();
        let query = ["get", "list", "search", "find", "query", "fetch"]
            .iter()
            .any(|p| lower.starts_with(p));
        (
            if query { "query" } else { "mutation" },
            name.to_string(),
            true,
        )
    }

    /// The `query` strings of the request body's examples.
    fn example_queries(&self, op: &Value) -> Vec<String> {
        let Some(body) = op.get("requestBody").map(|b| self.deref(b)) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        if let Some(content) = body.get("content").and_then(Value::as_object) {
            for media in content.values() {
                let mut examples: Vec<&Value> = media.get("example").into_iter().collect();
                if let Some(map) = media.get("examples").and_then(Value::as_object) {
                    examples.extend(map.values().filter_map(|e| e.get("value")));
                }
                if let Some(e) = media.pointer("/schema/example") {
                    examples.push(e);
                }
                for e in examples {
                    if let Some(q) = e.get("query").and_then(Value::as_str) {
                        out.push(q.to_string());
                    }
                }
            }
        }
        out
    }

    /// The path item's and the operation's parameters (the operation's
    /// win by name and place): path ones into `path_schema` (when they say
    /// more than "a string"), query ones into `query_schema`; headers and
    /// cookies are noted.
    fn parameters(
        &self,
        item: &Value,
        op: &Value,
        out: &mut Map<String, Value>,
        note: &mut dyn FnMut(String),
    ) {
        let mut params: Vec<Value> = Vec::new();
        for list in [item.get("parameters"), op.get("parameters")] {
            for p in list.and_then(Value::as_array).into_iter().flatten() {
                let p = self.deref(p);
                let key = |v: &Value| (v.get("name").cloned(), v.get("in").cloned());
                params.retain(|q| key(q) != key(&p));
                params.push(p);
            }
        }
        let mut path = Map::new();
        let mut query = Map::new();
        let mut query_required = Vec::new();
        let mut path_says_more = false;
        for p in &params {
            let name = p.get("name").and_then(Value::as_str).unwrap_or("");
            let place = p.get("in").and_then(Value::as_str).unwrap_or("");
            let Some(schema) = p.get("schema") else {
                note(format!(
                    "{place} parameter `{name}` has no `schema` (a `content` form is not carried)"
                ));
                continue;
            };
            let mut schema = self.inline(schema, &mut Vec::new());
            if let (Some(d), Value::Object(map)) = (p.get("description"), &mut schema) {
                map.entry("description")
                    .or_insert(json!(d.as_str().unwrap_or("").trim()));
            }
            match place {
                "path" => {
                    let plain = schema
                        .as_object()
                        .is_some_and(|m| m.keys().all(|k| k == "type" || k == "description"))
                        && schema.get("type").map_or(true, |t| t == "string");
                    path_says_more |= !plain;
                    path.insert(name.to_string(), schema);
                }
                "query" => {
                    let style = p.get("style").and_then(Value::as_str).unwrap_or("form");
                    if style != "form" || p.get("explode") == Some(&json!(false)) {
                        note(format!(
                            "query parameter `{name}` is serialised as `{style}`; the gateway forwards the query as sent"
                        ));
                    }
                    if p.get("required") == Some(&json!(true)) {
                        query_required.push(json!(name));
                    }
                    query.insert(name.to_string(), schema);
                }
                other => note(format!(
                    "{other} parameter `{name}` is not carried (add a `headers` policy to require it)"
                )),
            }
        }
        if path_says_more {
            out.insert(
                "path_schema".into(),
                json!({ "type": "object", "properties": path }),
            );
        }
        if !query.is_empty() {
            let mut schema = Map::new();
            schema.insert("type".into(), json!("object"));
            schema.insert("properties".into(), Value::Object(query));
            if !query_required.is_empty() {
                schema.insert("required".into(), Value::Array(query_required));
            }
            out.insert("query_schema".into(), Value::Object(schema));
        }
    }

    /// The request body's media type and schema: JSON first, else a form
    /// or multipart body (documented, not validated by the gateway).
    fn request_body(&self, op: &Value, note: &mut dyn FnMut(String)) -> Option<(String, Value)> {
        let body = self.deref(op.get("requestBody")?);
        let content = body.get("content")?.as_object()?;
        let essence = |media: &str| {
            media
                .split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        };
        let rank = |media: &str| {
            let m = essence(media);
            if m == "application/json" || m.ends_with("+json") {
                Some(0)
            } else if m == "application/x-www-form-urlencoded" || m == "multipart/form-data" {
                Some(1)
            } else {
                None
            }
        };
        let chosen = content
            .iter()
            .filter_map(|(media, m)| rank(media).map(|r| (r, media, m)))
            .min_by_key(|(r, ..)| *r);
        for media in content.keys() {
            if chosen.map_or(true, |(_, c, _)| c != media) {
                note(format!(
                    "request body `{media}` is not carried (one body type per operation)"
                ));
            }
        }
        let (rank, media, m) = chosen?;
        let schema = self.inline(m.get("schema").unwrap_or(&json!({})), &mut Vec::new());
        let media = if rank == 0 {
            "application/json".to_string()
        } else {
            essence(media)
        };
        Some((media, schema))
    }

    /// The success status (the lowest 2xx) and its JSON schema, and every
    /// other documented answer (`404`, `default`, ...) into `responses`.
    fn responses(&self, op: &Value, out: &mut Map<String, Value>, note: &mut dyn FnMut(String)) {
        let Some(responses) = op.get("responses").and_then(Value::as_object) else {
            return;
        };
        let success = responses
            .keys()
            .filter(|code| code.len() == 3 && code.starts_with('2') && code.parse::<u16>().is_ok())
            .min()
            .cloned();
        let mut documented = Map::new();
        for (code, response) in responses {
            let response = self.deref(response);
            let schema = json_schema_of(&response).map(|s| self.inline(&s, &mut Vec::new()));
            if let Some(content) = response.get("content").and_then(Value::as_object) {
                if schema.is_none() && !content.is_empty() {
                    let media: Vec<&str> = content.keys().map(String::as_str).collect();
                    note(format!(
                        "response `{code}` ({}) is documented without its schema (JSON only)",
                        media.join(", ")
                    ));
                }
            }
            if Some(code) == success.as_ref() {
                if code != "200" {
                    out.insert(
                        "success_status".into(),
                        json!(code.parse::<u16>().unwrap_or(200)),
                    );
                }
                if let Some(schema) = schema {
                    out.insert("response_schema".into(), schema);
                }
                continue;
            }
            let description = response
                .get("description")
                .and_then(Value::as_str)
                .unwrap_or("")
                .trim();
            let mut r = Map::new();
            r.insert("description".into(), json!(description));
            if let Some(schema) = schema {
                r.insert("schema".into(), schema);
            }
            documented.insert(code.to_uppercase(), Value::Object(r));
        }
        if let Some(default) = documented.remove("DEFAULT") {
            documented.insert("default".into(), default);
        }
        if !documented.is_empty() {
            out.insert("responses".into(), Value::Object(documented));
        }
    }

    /// Follows a `$ref` at the top of `value` (for objects that are not
    /// schemas: path items, bodies, responses, schemes).
    fn deref(&self, value: &Value) -> Value {
        let mut current = value.clone();
        for _ in 0..MAX_REF_DEPTH {
            match current.get("$ref").and_then(Value::as_str) {
                Some(r) => match self.lookup(r) {
                    Some(v) => current = v.clone(),
                    None => return Value::Object(Map::new()),
                },
                None => return current,
            }
        }
        Value::Object(Map::new())
    }

    fn lookup(&self, reference: &str) -> Option<&Value> {
        let pointer = reference.strip_prefix('#')?;
        self.spec.pointer(pointer)
    }

    /// A schema with every local `$ref` inlined and 3.0 quirks rewritten.
    /// `stack` holds the refs being expanded: one that recurs is cut.
    fn inline(&self, schema: &Value, stack: &mut Vec<String>) -> Value {
        match schema {
            Value::Object(map) => {
                if let Some(r) = map.get("$ref").and_then(Value::as_str) {
                    if stack.iter().any(|s| s == r) || stack.len() >= MAX_REF_DEPTH {
                        // A recursive structure: accept anything below here.
                        return json!({ "description": format!("(recursive: {r})") });
                    }
                    let Some(target) = self.lookup(r) else {
                        return json!({});
                    };
                    stack.push(r.to_string());
                    let out = self.inline(target, stack);
                    stack.pop();
                    return out;
                }
                let mut out = Map::new();
                for (k, v) in map {
                    out.insert(k.clone(), self.inline(v, stack));
                }
                rewrite_30(&mut out);
                Value::Object(out)
            }
            Value::Array(items) => {
                Value::Array(items.iter().map(|v| self.inline(v, stack)).collect())
            }
            other => other.clone(),
        }
    }
}

/// OpenAPI 3.0 schema keywords that JSON Schema 2020-12 spells otherwise.
fn rewrite_30(schema: &mut Map<String, Value>) {
    if schema.remove("nullable") == Some(Value::Bool(true)) {
        match schema.get("type").cloned() {
            Some(Value::String(t)) => {
                schema.insert("type".into(), json!([t, "null"]));
            }
            Some(Value::Array(mut ts)) if !ts.contains(&json!("null")) => {
                ts.push(json!("null"));
                schema.insert("type".into(), Value::Array(ts));
            }
            _ => {}
        }
    }
    for (exclusive, bound) in [
        ("exclusiveMinimum", "minimum"),
        ("exclusiveMaximum", "maximum"),
    ] {
        match schema.get(exclusive) {
            Some(Value::Bool(true)) => {
                if let Some(b) = schema.remove(bound) {
                    schema.insert(exclusive.into(), b);
                } else {
                    schema.remove(exclusive);
                }
            }
            Some(Value::Bool(false)) => {
                schema.remove(exclusive);
            }
            _ => {}
        }
    }
    if let Some(example) = schema.remove("example") {
        schema.entry("examples").or_insert(json!([example]));
    }
}

/// The schema of the JSON content of a request body or response.
fn json_schema_of(body: &Value) -> Option<Value> {
    let content = body.get("content")?.as_object()?;
    content
        .iter()
        .find(|(media, _)| {
            let m = media.split(';').next().unwrap_or("").trim();
            m == "application/json" || m.ends_with("+json")
        })
        .and_then(|(_, media)| media.get("schema").cloned())
}

fn paths_count(spec: &Value) -> usize {
    spec.get("paths")
        .and_then(Value::as_object)
        .map(|paths| {
            paths
                .values()
                .map(|item| METHODS.iter().filter(|m| item.get(**m).is_some()).count())
                .sum()
        })
        .unwrap_or(0)
}

/// A config-friendly name: lower case, words joined by `-`.
fn slug(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('-') && !out.is_empty() {
            out.push('-');
        }
    }
    let out = out.trim_end_matches('-').to_string();
    if out.is_empty() {
        "api".into()
    } else {
        out
    }
}

/// `get /users/{id}` -> `get_users_id`.
fn generated_id(method: &str, path: &str) -> String {
    let mut id = method.to_string();
    for part in path.split(|c: char| !c.is_ascii_alphanumeric()) {
        if !part.is_empty() {
            id.push('_');
            id.push_str(part);
        }
    }
    id
}

fn unique(id: String, seen: &mut HashSet<String>) -> String {
    let mut candidate = id.clone();
    let mut n = 2;
    while !seen.insert(candidate.clone()) {
        candidate = format!("{id}_{n}");
        n += 1;
    }
    candidate
}

#[cfg(test)]
mod tests {
    use super::*;

    fn import_yaml(spec: &str) -> Value {
        let out = import(
            spec,
            &ImportOptions {
                upstream: "http://up".into(),
                ..Default::default()
            },
        )
        .expect("imports");
        let yaml: serde_yaml::Value = serde_yaml::from_str(&out).expect("yaml");
        serde_json::to_value(yaml).expect("json")
    }

    #[test]
    fn recursive_refs_are_cut_and_nullable_becomes_a_type_union() {
        let config = import_yaml(
            r##"
openapi: 3.0.3
info: { title: Tree API, version: "1" }
paths:
  /nodes:
    post:
      requestBody:
        content:
          application/json:
            schema: { $ref: "#/components/schemas/Node" }
      responses:
        "200": { description: ok }
components:
  schemas:
    Node:
      type: object
      properties:
        name: { type: string, nullable: true }
        children: { type: array, items: { $ref: "#/components/schemas/Node" } }
"##,
        );
        let op = &config["apis"][0]["operations"][0];
        assert_eq!(op["id"], "post_nodes");
        let schema = &op["request_schema"];
        assert_eq!(
            schema["properties"]["name"]["type"],
            json!(["string", "null"])
        );
        assert_eq!(
            schema["properties"]["children"]["items"]["description"],
            "(recursive: #/components/schemas/Node)"
        );
        assert_eq!(config["apis"][0]["name"], "tree-api");
        assert!(config.get("policies").is_none());
    }

    #[test]
    fn security_becomes_an_auth_policy_skipped_where_the_spec_says_none() {
        let config = import_yaml(
            r#"
openapi: 3.1.0
info: { title: Keys, version: "1" }
security: [{ key: [] }]
paths:
  /a: { get: { operationId: a, responses: { "200": { description: ok } } } }
  /health: { get: { operationId: health, security: [], responses: { "200": { description: ok } } } }
components:
  securitySchemes:
    key: { type: apiKey, in: header, name: X-Token }
"#,
        );
        let policy = &config["policies"]["keys-auth"];
        assert_eq!(policy["methods"], json!(["api_key"]));
        assert_eq!(policy["api_key"]["header"], "X-Token");
        assert_eq!(config["apis"][0]["apply"], json!(["keys-auth"]));
        assert_eq!(
            config["apis"][0]["operations"][1]["skip"],
            json!(["keys-auth"])
        );
    }

    #[test]
    fn graphql_fragments_take_their_field_from_the_example_query() {
        let config = import_yaml(
            r##"
openapi: 3.1.0
info: { title: G, version: "1" }
paths:
  /graphql#getUsers:
    post:
      operationId: getUsers
      requestBody:
        content:
          application/json:
            example: { query: "query { users { id } }" }
      responses: { "200": { description: ok } }
  /graphql#removeUser:
    post:
      operationId: removeUser
      responses: { "200": { description: ok } }
"##,
        );
        let ops = &config["apis"][0]["operations"];
        assert_eq!(ops[0]["path"], "/graphql");
        assert_eq!(
            ops[0]["graphql"],
            json!({"operation": "query", "field": "users"})
        );
        assert_eq!(
            ops[1]["graphql"],
            json!({"operation": "mutation", "field": "removeUser"})
        );
    }
}
