//! Agent tools: what one governed operation looks like to an LLM, and how
//! a tool call becomes the HTTP request that operation publishes.
//!
//! A tool's name is the operation id; its `inputSchema` is an object with
//! one property per path parameter (a string), one per query parameter
//! (from `query_schema`), and `body` (the `request_schema`, or any JSON for
//! a POST/PUT/PATCH without one). `outputSchema` is the `response_schema`
//! when that describes an object (the handshake-era revisions allow no
//! other root type).
//!
//! ```text
//! GET /employees/{employeeId}   query_schema: { properties: { fields: { type: string } } }
//!   -> { "type": "object",
//!        "properties": { "employeeId": { "type": "string", ... }, "fields": { "type": "string" } },
//!        "required": ["employeeId"], "additionalProperties": false }
//! ```
//!
//! Arguments are checked against the input schema before anything is sent,
//! and path parameters are percent-encoded as one segment each: a value can
//! never change which operation the request reaches (`.` and `..` are
//! refused, `/` only passes in a `{*rest}` parameter, between segments).

use bytes::Bytes;
use http::{Method, StatusCode};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde_json::{json, Map, Value};
use std::sync::Arc;

use crate::body_schema::JsonSchema;
use crate::config::schema::{ApiAgents, ApiConfig, OperationConfig};
use crate::context::OperationInfo;
use crate::path_template::{self, Part};
use crate::policy::OperationService;

/// Everything but the unreserved characters of RFC 3986 is escaped, in a
/// path segment and in a query component alike.
const ESCAPED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// The argument that carries the request body.
pub const BODY: &str = "body";

/// Whether an operation of `api` is an agent tool: its own `agent:`, else
/// the API's `agents:`.
pub fn is_tool(api: &ApiConfig, op: &OperationConfig) -> bool {
    op.agent.unwrap_or(api.agents == ApiAgents::Expose)
}

/// One operation as an agent tool.
pub struct Tool {
    /// The operation id.
    pub name: Arc<str>,
    /// The operation's index in `Gateway::operations`.
    pub operation: usize,
    /// The operation's api and id (for the probe's context).
    pub info: Arc<OperationInfo>,
    /// The tool's title: the operation's `summary`.
    pub title: Option<String>,
    /// What the tool does: the operation's summary and description (or its method and path).
    pub description: String,
    /// The JSON schema of the tool's arguments, as `tools/list` shows it.
    pub input_schema: Value,
    /// The JSON schema of the tool's structured result: the operation's `response_schema`, when an
    /// object.
    pub output_schema: Option<Value>,
    input: JsonSchema,
    output: Option<JsonSchema>,
    method: Method,
    path: Vec<PathPart>,
    query: Vec<String>,
    /// The operation's checks that only judge (see `stack::build_probe`):
    /// whether a caller may call this tool, at no cost.
    pub(crate) probe: OperationService,
}

/// A piece of the public path template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum PathPart {
    Literal(String),
    /// `{name}`: one segment.
    Param(String),
    /// `{*name}`: the rest of the path.
    Rest(String),
}

/// The HTTP request a tool call becomes.
#[derive(Debug)]
pub struct ToolRequest {
    /// The operation's method.
    pub method: Method,
    /// The public path and query, every argument escaped.
    pub path_and_query: String,
    /// The JSON body, when the call has one.
    pub body: Option<Bytes>,
    /// The route parameters (`{name}` -> escaped value): the call goes to
    /// the tool's own operation with these, never routed by its path.
    pub params: Vec<(String, String)>,
}

/// What the gateway answered a tool call, as the result is built from it.
#[derive(Debug)]
pub struct ToolAnswer {
    /// The answer's status.
    pub status: StatusCode,
    /// The answer's body.
    pub body: Bytes,
    /// The answer's `Content-Type`, lower-cased, without parameters.
    pub media_type: Option<String>,
    /// The answer's `X-Request-Id`, for the caller to quote.
    pub request_id: Option<String>,
    /// The answer's `Retry-After`, when it has one.
    pub retry_after: Option<String>,
}

/// What a result may carry in the caller's protocol revision.
#[derive(Debug, Clone, Copy)]
pub struct Features {
    /// `title`, `outputSchema` and `structuredContent` (2025-06-18 and later).
    pub structured: bool,
    /// `audio` content (2025-03-26 and later; before, an embedded blob).
    pub audio: bool,
}

impl Features {
    /// Everything: the newest protocol revision.
    pub const ALL: Features = Features {
        structured: true,
        audio: true,
    };
}

// === impl Tool ===

/// Where a tool is written, for building it.
pub struct ToolSource<'a> {
    /// The API the operation belongs to.
    pub api: &'a ApiConfig,
    /// The operation's config.
    pub op: &'a OperationConfig,
    /// The operation's index in `Gateway::operations`.
    pub operation: usize,
    /// The operation's API and id.
    pub info: Arc<OperationInfo>,
    /// The operation's method, parsed.
    pub method: &'a Method,
    /// The public path template (`base_path` + `path`).
    pub template: &'a str,
    /// The operation's checks that only judge, run to see whether a caller may call the tool.
    pub probe: OperationService,
}

impl Tool {
    /// Builds the tool of an operation; errors name the operation field
    /// at fault.
    pub fn build(source: ToolSource<'_>) -> Result<Tool, Vec<(&'static str, String)>> {
        let ToolSource {
            api,
            op,
            operation,
            info,
            method,
            template,
            probe,
        } = source;
        let mut errors = Vec::new();
        if op.graphql.is_some() {
            errors.push((
                "agent",
                "a GraphQL operation cannot be an agent tool (its input is a GraphQL document); \
                 set `agent: false`"
                    .to_string(),
            ));
        }
        if !valid_name(&op.id) {
            errors.push((
                "id",
                format!(
                    "`{}` cannot name an agent tool: use 1 to 64 of A-Z a-z 0-9 _ - \
                     (what MCP and function-calling APIs accept)",
                    op.id
                ),
            ));
        }
        let path = parse_template(template);
        let mut properties = Map::new();
        let mut required = Vec::new();
        for part in &path {
            let (name, schema) = match part {
                PathPart::Literal(_) => continue,
                PathPart::Param(name) => (
                    name,
                    json!({
                        "type": "string",
                        "minLength": 1,
                        "pattern": "^[^/]+$",
                        "description": format!("`{{{name}}}` in the path {method} {template}"),
                    }),
                ),
                PathPart::Rest(name) => (
                    name,
                    json!({
                        "type": "string",
                        "minLength": 1,
                        "description": format!(
                            "The rest of the path at `{{*{name}}}` in {method} {template}; may contain `/`"
                        ),
                    }),
                ),
            };
            properties.insert(name.clone(), schema);
            required.push(Value::from(name.clone()));
        }
        let mut query = Vec::new();
        if let Some(schema) = &op.query_schema {
            match query_params(schema) {
                Ok(params) => {
                    for (name, schema, is_required) in params {
                        if properties.contains_key(&name) || name == BODY {
                            errors.push((
                                "query_schema",
                                format!(
                                    "query parameter `{name}` has the name of a path parameter \
                                     or of `body`: a tool's arguments need distinct names"
                                ),
                            ));
                            continue;
                        }
                        if is_required {
                            required.push(Value::from(name.clone()));
                        }
                        properties.insert(name.clone(), schema);
                        query.push(name);
                    }
                }
                Err(message) => errors.push(("query_schema", message)),
            }
        }
        if properties.contains_key(BODY) {
            errors.push((
                "path",
                "a path parameter named `body` clashes with the tool's `body` argument".to_string(),
            ));
        }
        let mut hoisted = Map::new();
        match &op.request_schema {
            Some(schema) => {
                let (body, defs) = embed_body(schema);
                properties.insert(BODY.into(), body);
                hoisted = defs;
                required.push(Value::from(BODY));
            }
            None if matches!(*method, Method::POST | Method::PUT | Method::PATCH) => {
                properties.insert(
                    BODY.into(),
                    json!({ "description": "The JSON request body." }),
                );
            }
            None => {}
        }
        let mut input_schema = json!({ "type": "object", "properties": properties });
        if !required.is_empty() {
            input_schema["required"] = Value::Array(required);
        }
        input_schema["additionalProperties"] = Value::Bool(false);
        for (key, defs) in hoisted {
            input_schema[key] = defs;
        }
        let output_schema = op
            .response_schema
            .clone()
            .filter(|s| s.get("type").and_then(Value::as_str) == Some("object"));
        let input = JsonSchema::compile(&input_schema).map_err(|e| ("request_schema", e));
        let output = output_schema
            .as_ref()
            .map(JsonSchema::compile)
            .transpose()
            .map_err(|e| ("response_schema", e));
        let (input, output) = match (input, output) {
            (Ok(input), Ok(output)) if errors.is_empty() => (input, output),
            (input, output) => {
                errors.extend(input.err());
                errors.extend(output.err());
                return Err(errors);
            }
        };
        let description = match (&op.summary, &op.description) {
            (Some(s), Some(d)) => format!("{s}\n\n{d}"),
            (Some(s), None) => s.clone(),
            (None, Some(d)) => d.clone(),
            (None, None) => format!("{method} {template} ({})", api.name),
        };
        Ok(Tool {
            name: op.id.as_str().into(),
            operation,
            info,
            title: op.summary.clone(),
            description,
            input_schema,
            output_schema,
            input,
            output,
            method: method.clone(),
            path,
            query,
            probe,
        })
    }

    /// The operation's method.
    pub fn method(&self) -> &Method {
        &self.method
    }

    /// Whether calls may carry a JSON body (the `body` argument).
    pub fn takes_body(&self) -> bool {
        self.input_schema["properties"].get(BODY).is_some()
    }

    /// The tool as `tools/list` lists it.
    pub fn definition(&self, features: Features) -> Value {
        let mut tool = json!({ "name": &*self.name });
        if let (true, Some(title)) = (features.structured, &self.title) {
            tool["title"] = json!(title);
        }
        tool["description"] = json!(self.description);
        tool["inputSchema"] = self.input_schema.clone();
        if let (true, Some(schema)) = (features.structured, &self.output_schema) {
            tool["outputSchema"] = schema.clone();
        }
        tool
    }

    /// The tool as an OpenAI function-calling definition.
    pub fn openai_function(&self) -> Value {
        json!({
            "type": "function",
            "function": {
                "name": &*self.name,
                "description": self.description,
                "parameters": self.input_schema,
            },
        })
    }

    /// The request a call with `arguments` makes, or why the arguments are
    /// wrong (a message the model can act on).
    pub fn request(&self, arguments: &Value) -> Result<ToolRequest, String> {
        let violations = self.input.violations(arguments);
        if !violations.is_empty() {
            let listed: Vec<String> = violations
                .iter()
                .map(|v| {
                    let at = if v.pointer.is_empty() {
                        "/"
                    } else {
                        &v.pointer
                    };
                    format!("{at}: {}", v.message)
                })
                .collect();
            return Err(format!(
                "invalid arguments for `{}`: {}",
                self.name,
                listed.join("; ")
            ));
        }
        let arg = |name: &str| arguments.get(name).and_then(Value::as_str).unwrap_or("");
        let mut path = String::new();
        let mut params = Vec::new();
        for part in &self.path {
            match part {
                PathPart::Literal(text) => path.push_str(text),
                PathPart::Param(name) => {
                    let value = arg(name);
                    check_segment(name, value)?;
                    let escaped: String = utf8_percent_encode(value, ESCAPED).collect();
                    path.push_str(&escaped);
                    params.push((name.clone(), escaped));
                }
                PathPart::Rest(name) => {
                    let value = arg(name);
                    let mut escaped = String::new();
                    for (i, segment) in value.split('/').enumerate() {
                        check_segment(name, segment)?;
                        if i > 0 {
                            escaped.push('/');
                        }
                        escaped.extend(utf8_percent_encode(segment, ESCAPED));
                    }
                    path.push_str(&escaped);
                    params.push((name.clone(), escaped));
                }
            }
        }
        let mut pairs = Vec::new();
        for name in &self.query {
            match arguments.get(name) {
                None | Some(Value::Null) => {}
                Some(Value::Array(items)) => {
                    pairs.extend(items.iter().map(|item| query_pair(name, item)));
                }
                Some(value) => pairs.push(query_pair(name, value)),
            }
        }
        if !pairs.is_empty() {
            path.push('?');
            path.push_str(&pairs.join("&"));
        }
        let body = arguments
            .get(BODY)
            .map(|value| Bytes::from(value.to_string()));
        Ok(ToolRequest {
            method: self.method.clone(),
            path_and_query: path,
            body,
            params,
        })
    }

    /// The `tools/call` result for what the gateway answered: the data, or
    /// a tool error (`isError`) whose text is the refusal's problem JSON
    /// (with its `code`) or the workflow's error answer.
    pub fn result(&self, answer: &ToolAnswer, features: Features) -> Map<String, Value> {
        let text = String::from_utf8_lossy(&answer.body).into_owned();
        let mut http = json!({ "status": answer.status.as_u16() });
        if let Some(id) = &answer.request_id {
            http["request_id"] = json!(id);
        }
        if let Some(after) = answer.retry_after.as_deref() {
            http["retry_after"] = after
                .parse::<u64>()
                .map(Value::from)
                .unwrap_or(json!(after));
        }
        let meta = json!({ "dev.tollgate/http": http });
        if !answer.status.is_success() {
            let text = if text.is_empty() {
                format!("HTTP {}", answer.status)
            } else {
                text
            };
            return error_result(text, Some(meta));
        }
        let mut result = Map::new();
        if let (true, Some(schema)) = (features.structured, &self.output) {
            let parsed: Result<Value, _> = serde_json::from_slice(&answer.body);
            let problems = match &parsed {
                Ok(value) => schema
                    .violations(value)
                    .into_iter()
                    .map(|v| format!("{}: {}", v.pointer, v.message))
                    .collect::<Vec<_>>(),
                Err(e) => vec![format!("not JSON: {e}")],
            };
            if !problems.is_empty() {
                return error_result(
                    format!(
                        "the workflow's answer does not match the output schema of `{}`: {}",
                        self.name,
                        problems.join("; ")
                    ),
                    Some(meta),
                );
            }
            if let Ok(value) = parsed {
                result.insert("structuredContent".into(), value);
            }
        }
        result.insert(
            "content".into(),
            json!([self.content(answer, text, features)]),
        );
        result.insert("isError".into(), Value::Bool(false));
        result.insert("_meta".into(), meta);
        result
    }

    /// The content block of a successful answer: text for textual media
    /// types (and untyped UTF-8), `image` / `audio` content for those, an
    /// embedded resource blob for any other bytes. Never lossy UTF-8.
    fn content(&self, answer: &ToolAnswer, text: String, features: Features) -> Value {
        use base64::Engine as _;
        let media = answer.media_type.as_deref();
        let textual = match media {
            None => std::str::from_utf8(&answer.body).is_ok(),
            Some(m) => is_textual(m) && std::str::from_utf8(&answer.body).is_ok(),
        };
        if textual {
            return json!({ "type": "text", "text": text });
        }
        let data = base64::engine::general_purpose::STANDARD.encode(&answer.body);
        let media = media.unwrap_or("application/octet-stream");
        match media.split('/').next() {
            Some("image") => json!({ "type": "image", "data": data, "mimeType": media }),
            Some("audio") if features.audio => {
                json!({ "type": "audio", "data": data, "mimeType": media })
            }
            _ => json!({
                "type": "resource",
                "resource": {
                    "uri": format!("tollgate://tools/{}/result", self.name),
                    "mimeType": media,
                    "blob": data,
                },
            }),
        }
    }
}

/// A `request_schema` as the `body` property of an input schema. Its
/// `$defs` (and `definitions`) move to the input schema's root, where its
/// `#/$defs/…` references then resolve; a reference to any other part of
/// it (`#`, `#/properties/…`) is re-pointed under `/properties/body`.
fn embed_body(schema: &Value) -> (Value, Map<String, Value>) {
    let mut body = schema.clone();
    let mut hoisted = Map::new();
    if let Some(object) = body.as_object_mut() {
        for key in ["$defs", "definitions"] {
            if let Some(defs) = object.remove(key) {
                hoisted.insert(key.to_string(), defs);
            }
        }
        // A dialect is the document's, not a subschema's.
        object.remove("$schema");
    }
    repoint_refs(&mut body);
    hoisted.values_mut().for_each(repoint_refs);
    (body, hoisted)
}

fn repoint_refs(value: &mut Value) {
    match value {
        Value::Object(object) => {
            for (key, item) in object.iter_mut() {
                match (key.as_str(), item) {
                    ("$ref", Value::String(target)) => {
                        if let Some(pointer) = target.strip_prefix('#') {
                            let hoisted = pointer.starts_with("/$defs/")
                                || pointer.starts_with("/definitions/");
                            if !hoisted {
                                *target = format!("#/properties/{BODY}{pointer}");
                            }
                        }
                    }
                    (_, item) => repoint_refs(item),
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(repoint_refs),
        _ => {}
    }
}

/// Media types whose bodies are text: `text/*`, JSON, XML, and a few
/// textual `application/` ones.
fn is_textual(media: &str) -> bool {
    media.starts_with("text/")
        || media.ends_with("+json")
        || media.ends_with("+xml")
        || matches!(
            media,
            "application/json"
                | "application/xml"
                | "application/javascript"
                | "application/x-www-form-urlencoded"
                | "application/yaml"
                | "application/x-ndjson"
                | "application/graphql-response+json"
        )
}

/// A tool error result: one text block, `isError: true`.
pub fn error_result(text: String, meta: Option<Value>) -> Map<String, Value> {
    let mut result = Map::new();
    result.insert("content".into(), json!([{ "type": "text", "text": text }]));
    result.insert("isError".into(), Value::Bool(true));
    if let Some(meta) = meta {
        result.insert("_meta".into(), meta);
    }
    result
}

/// Names every MCP client and function-calling API accepts.
fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// A path argument that would change the path's shape once normalised.
fn check_segment(name: &str, value: &str) -> Result<(), String> {
    match value {
        "" => Err(format!(
            "invalid arguments: `{name}` has an empty path segment"
        )),
        "." | ".." => Err(format!(
            "invalid arguments: `{name}` cannot be a `.` or `..` path segment"
        )),
        _ => Ok(()),
    }
}

fn query_pair(name: &str, value: &Value) -> String {
    let text = match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    format!(
        "{}={}",
        utf8_percent_encode(name, ESCAPED),
        utf8_percent_encode(&text, ESCAPED)
    )
}

/// Splits `/a/{id}/b/{*rest}` into literals and parameters.
fn parse_template(template: &str) -> Vec<PathPart> {
    path_template::parts(template)
        .map(|part| match part {
            Part::Literal(text) => PathPart::Literal(text.to_string()),
            Part::Param(name) => PathPart::Param(name.to_string()),
            Part::Rest(name) => PathPart::Rest(name.to_string()),
        })
        .collect()
}

/// The parameters of a `query_schema`: name, schema, required.
fn query_params(schema: &Value) -> Result<Vec<(String, Value, bool)>, String> {
    let Some(object) = schema.as_object() else {
        return Err("a query schema is an object schema with `properties`".into());
    };
    if let Some(t) = object.get("type") {
        if t != "object" {
            return Err("a query schema has `type: object` (one property per parameter)".into());
        }
    }
    let empty = Map::new();
    let properties = match object.get("properties") {
        None => &empty,
        Some(Value::Object(p)) => p,
        Some(_) => return Err("`properties` maps each query parameter to its schema".into()),
    };
    let required: Vec<&str> = match object.get("required") {
        None => Vec::new(),
        Some(Value::Array(names)) => names.iter().filter_map(Value::as_str).collect(),
        Some(_) => return Err("`required` is a list of parameter names".into()),
    };
    for name in &required {
        if !properties.contains_key(*name) {
            return Err(format!(
                "`required` names `{name}`, which is not in `properties`"
            ));
        }
    }
    let mut out = Vec::new();
    for (name, schema) in properties {
        if !schema.is_object() {
            return Err(format!(
                "the schema of query parameter `{name}` is not an object"
            ));
        }
        let kind = schema.get("type").and_then(Value::as_str);
        if kind == Some("object") {
            return Err(format!(
                "query parameter `{name}` cannot be an object: a query string holds \
                 strings, numbers, booleans and lists of them"
            ));
        }
        out.push((
            name.clone(),
            schema.clone(),
            required.contains(&name.as_str()),
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::body::{self, Body};
    use http::{Request, Response};

    fn op(yaml: &str) -> OperationConfig {
        serde_yaml::from_str(yaml).expect("operation yaml")
    }

    fn api() -> ApiConfig {
        serde_yaml::from_str("{ name: directory, operations: [] }").expect("api yaml")
    }

    fn tool(yaml: &str, template: &str) -> Result<Tool, Vec<(&'static str, String)>> {
        let op = op(yaml);
        let method = Method::from_bytes(op.method.as_bytes()).expect("method");
        let probe = OperationService::new(tower::service_fn(|_req: Request<Body>| async {
            Ok(Response::new(body::empty()))
        }));
        Tool::build(ToolSource {
            api: &api(),
            op: &op,
            operation: 0,
            info: Arc::new(OperationInfo {
                api: "directory".into(),
                id: op.id.as_str().into(),
                header_value: http::HeaderValue::from_static("t"),
                cost: Default::default(),
            }),
            method: &method,
            template,
            probe,
        })
    }

    #[test]
    fn templates_split_into_literals_and_parameters() {
        assert_eq!(
            parse_template("/a/{id}/b/{*rest}"),
            [
                PathPart::Literal("/a/".into()),
                PathPart::Param("id".into()),
                PathPart::Literal("/b/".into()),
                PathPart::Rest("rest".into()),
            ]
        );
        assert_eq!(parse_template("/"), [PathPart::Literal("/".into())]);
    }

    #[test]
    fn the_input_schema_has_path_query_and_body_arguments() {
        let t = tool(
            r#"{ id: findEmployee, method: POST, path: '/{dept}/search',
                 query_schema: { properties: { limit: { type: integer } }, required: [limit] },
                 request_schema: { type: object, required: [name] } }"#,
            "/employees/{dept}/search",
        )
        .unwrap_or_else(|e| panic!("{e:?}"));
        let s = &t.input_schema;
        assert_eq!(s["type"], "object");
        assert_eq!(s["properties"]["dept"]["type"], "string");
        assert_eq!(s["properties"]["limit"], json!({ "type": "integer" }));
        assert_eq!(s["properties"]["body"]["required"], json!(["name"]));
        assert_eq!(s["required"], json!(["dept", "limit", "body"]));
        assert_eq!(s["additionalProperties"], false);
    }

    #[test]
    fn a_call_becomes_an_escaped_path_a_query_and_a_json_body() {
        let t = tool(
            r#"{ id: search, method: POST, path: '/{dept}/files/{*rest}',
                 query_schema: { properties: { q: { type: string }, tag: { type: array }, n: { type: integer } } } }"#,
            "/d/{dept}/files/{*rest}",
        )
        .unwrap_or_else(|e| panic!("{e:?}"));
        let req = t
            .request(&json!({
                "dept": "R&D ü", "rest": "a b/c.txt", "q": "x=1&y",
                "tag": ["p", "q"], "n": 5, "body": {"k": [1]}
            }))
            .expect("valid call");
        assert_eq!(req.method, Method::POST);
        assert_eq!(
            req.path_and_query,
            "/d/R%26D%20%C3%BC/files/a%20b/c.txt?q=x%3D1%26y&tag=p&tag=q&n=5"
        );
        assert_eq!(req.body.as_deref(), Some(&b"{\"k\":[1]}"[..]));
        assert_eq!(
            req.params,
            [
                ("dept".to_string(), "R%26D%20%C3%BC".to_string()),
                ("rest".to_string(), "a%20b/c.txt".to_string()),
            ]
        );
    }

    #[test]
    fn arguments_that_could_change_the_route_are_refused() {
        let t = tool("{ id: get, method: GET, path: '/{id}' }", "/e/{id}")
            .unwrap_or_else(|e| panic!("{e:?}"));
        for bad in [
            json!({"id": ".."}),
            json!({"id": "."}),
            json!({"id": "a/b"}),
            json!({"id": ""}),
        ] {
            assert!(t.request(&bad).is_err(), "{bad}");
        }
        assert!(t.request(&json!({})).is_err(), "missing parameter");
        assert!(t.request(&json!({"id": "7", "extra": 1})).is_err());
        assert_eq!(
            t.request(&json!({"id": "7"}))
                .expect("valid")
                .path_and_query,
            "/e/7"
        );
        let rest = tool("{ id: files, method: GET, path: '/{*p}' }", "/f/{*p}")
            .unwrap_or_else(|e| panic!("{e:?}"));
        assert!(rest.request(&json!({"p": "a/../b"})).is_err());
        assert!(rest.request(&json!({"p": "a//b"})).is_err());
    }

    #[test]
    fn names_and_query_schemas_are_checked_at_load() {
        let errors = tool("{ id: 'has space', method: GET, path: / }", "/")
            .err()
            .unwrap_or_default();
        assert!(errors.iter().any(|(f, _)| *f == "id"), "{errors:?}");
        let errors = tool(
            "{ id: a, method: GET, path: '/{id}', query_schema: { properties: { id: { type: string } } } }",
            "/{id}",
        )
        .err()
        .unwrap_or_default();
        assert!(
            errors.iter().any(|(f, _)| *f == "query_schema"),
            "{errors:?}"
        );
        let errors = tool(
            "{ id: a, method: GET, path: /, query_schema: { properties: { f: { type: object } } } }",
            "/",
        )
        .err()
        .unwrap_or_default();
        assert!(
            errors.iter().any(|(f, _)| *f == "query_schema"),
            "{errors:?}"
        );
    }

    #[test]
    fn an_object_response_schema_becomes_the_output_schema_and_is_enforced() {
        let t = tool(
            "{ id: get, method: GET, path: /, response_schema: { type: object, required: [id] } }",
            "/",
        )
        .unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(
            t.definition(Features::ALL)["outputSchema"]["required"],
            json!(["id"])
        );
        let answer = |body: &'static str| ToolAnswer {
            status: StatusCode::OK,
            body: Bytes::from_static(body.as_bytes()),
            media_type: Some("application/json".into()),
            request_id: Some("r1".into()),
            retry_after: None,
        };
        let ok = t.result(&answer(r#"{"id":"7"}"#), Features::ALL);
        assert_eq!(ok["structuredContent"], json!({"id": "7"}));
        assert_eq!(ok["isError"], false);
        assert_eq!(ok["_meta"]["dev.tollgate/http"]["request_id"], "r1");
        let bad = t.result(&answer(r#"{"name":"x"}"#), Features::ALL);
        assert_eq!(bad["isError"], true);
        let old = t.result(
            &answer(r#"{"name":"x"}"#),
            Features {
                structured: false,
                audio: false,
            },
        );
        assert_eq!(old["isError"], false, "no output schema before 2025-06-18");
        let arrays = tool(
            "{ id: list, method: GET, path: /, response_schema: { type: array } }",
            "/",
        )
        .unwrap_or_else(|e| panic!("{e:?}"));
        assert!(arrays.output_schema.is_none());
    }

    #[test]
    fn a_request_schema_with_defs_and_refs_still_validates_inside_the_input_schema() {
        let t = tool(
            r##"{ id: create, method: POST, path: /, request_schema: {
                   $schema: "https://json-schema.org/draft/2020-12/schema",
                   type: object, required: [name, manager],
                   properties: { name: { $ref: "#/$defs/name" },
                                 manager: { $ref: "#/properties/name" },
                                 reports: { type: array, items: { $ref: "#/$defs/name" } } },
                   $defs: { name: { type: string, minLength: 1 } } } }"##,
            "/",
        )
        .unwrap_or_else(|e| panic!("{e:?}"));
        let s = &t.input_schema;
        assert_eq!(s["$defs"]["name"]["minLength"], 1);
        assert!(s["properties"]["body"].get("$defs").is_none());
        assert_eq!(
            s["properties"]["body"]["properties"]["name"]["$ref"],
            "#/$defs/name"
        );
        assert_eq!(
            s["properties"]["body"]["properties"]["manager"]["$ref"],
            "#/properties/body/properties/name"
        );
        let ok = json!({"body": {"name": "Ada", "manager": "Grace", "reports": ["Lin"]}});
        assert!(t.request(&ok).is_ok());
        for bad in [
            json!({"body": {"name": "", "manager": "Grace"}}),
            json!({"body": {"name": "Ada", "manager": ""}}),
            json!({"body": {"name": "Ada", "manager": "G", "reports": [""]}}),
        ] {
            assert!(t.request(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn images_audio_and_other_bytes_become_their_own_content_never_lossy_text() {
        use base64::Engine as _;
        let t = tool("{ id: get, method: GET, path: / }", "/").unwrap_or_else(|e| panic!("{e:?}"));
        let png: &[u8] = b"\x89PNG\r\n\x1a\n\x00\xff";
        let answer = |media: Option<&str>, body: &'static [u8]| ToolAnswer {
            status: StatusCode::OK,
            body: Bytes::from_static(body),
            media_type: media.map(str::to_string),
            request_id: None,
            retry_after: None,
        };
        let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
        let image = t.result(&answer(Some("image/png"), png), Features::ALL);
        assert_eq!(
            image["content"][0],
            json!({"type": "image", "data": b64(png), "mimeType": "image/png"})
        );
        let wav: &[u8] = b"RIFF\x00\xffWAVE";
        let audio = t.result(&answer(Some("audio/wav"), wav), Features::ALL);
        assert_eq!(audio["content"][0]["type"], "audio");
        assert_eq!(audio["content"][0]["data"], b64(wav));
        let old = Features {
            structured: false,
            audio: false,
        };
        let blob = t.result(&answer(Some("audio/wav"), wav), old);
        assert_eq!(blob["content"][0]["type"], "resource");
        assert_eq!(blob["content"][0]["resource"]["blob"], b64(wav));
        let pdf = t.result(
            &answer(Some("application/pdf"), b"%PDF-\xff"),
            Features::ALL,
        );
        assert_eq!(pdf["content"][0]["resource"]["mimeType"], "application/pdf");
        assert_eq!(
            pdf["content"][0]["resource"]["uri"],
            "tollgate://tools/get/result"
        );
        let untyped = t.result(&answer(None, b"\xff\xfe"), Features::ALL);
        assert_eq!(
            untyped["content"][0]["resource"]["mimeType"],
            "application/octet-stream"
        );
        let text = t.result(&answer(Some("text/plain"), b"hello"), Features::ALL);
        assert_eq!(text["content"][0], json!({"type": "text", "text": "hello"}));
    }

    #[test]
    fn a_refusal_is_a_tool_error_carrying_the_problem() {
        let t = tool("{ id: get, method: GET, path: / }", "/").unwrap_or_else(|e| panic!("{e:?}"));
        let refused = t.result(
            &ToolAnswer {
                status: StatusCode::TOO_MANY_REQUESTS,
                body: Bytes::from_static(br#"{"code":"rate_limited"}"#),
                media_type: Some("application/problem+json".into()),
                request_id: None,
                retry_after: Some("30".into()),
            },
            Features::ALL,
        );
        assert_eq!(refused["isError"], true);
        assert_eq!(refused["content"][0]["text"], r#"{"code":"rate_limited"}"#);
        assert_eq!(refused["_meta"]["dev.tollgate/http"]["retry_after"], 30);
        assert_eq!(refused["_meta"]["dev.tollgate/http"]["status"], 429);
    }
}
