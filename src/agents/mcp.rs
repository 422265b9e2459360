//! The MCP endpoint: JSON-RPC 2.0 over the Streamable HTTP transport.
//!
//! Two eras are served at the one path (a "dual-era" server, in the words
//! of the specification):
//!
//! - **current** (`2026-07-28`): stateless. Every POST carries its
//!   revision in `MCP-Protocol-Version` and in `params._meta`, its method
//!   in `Mcp-Method` (and a tool's name in `Mcp-Name`); the headers must
//!   match the body (else 400, `-32020`). Methods: `server/discover`,
//!   `tools/list`, `tools/call`; anything else 404, `-32601`.
//! - **handshake** (`2024-11-05` … `2025-11-25`): `initialize` opens a
//!   session whose id comes back in `Mcp-Session-Id`; every later request
//!   must name it (none: 400; unknown or expired: 404), `DELETE` ends it.
//!   Methods: `initialize`, `ping`, `tools/list`, `tools/call`.
//!
//! Every request is answered with one `application/json` object (the
//! server never opens an SSE stream, so `GET` is 405). Batches (allowed
//! only by 2025-03-26) are refused. Against DNS rebinding, the `Host`
//! must be one of `agents.allowed_hosts` (by default, on a loopback
//! listener, a loopback name), and an `Origin` one of
//! `agents.allowed_origins` or the page's own vouched-for host (else 403).
//!
//! This module's own answers are JSON-RPC, as MCP clients expect; refusals
//! of the policies around it (`ip`, `abuse`, `auth`, gateway-wide) are
//! problem+json like everywhere else. `tools/list` lists the tools whose
//! operation's checks (ip, auth, roles, headers) let this caller through,
//! evaluated by each tool's probe without spending any limit;
//! `tools/call` sends the call to the tool's own operation through the
//! gateway's handle (see `super`).

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use serde_json::{json, Map, Value};
use tower::ServiceExt;

use super::oauth::Grant;
use super::sessions::Owner;
use super::tools::{self, Features, Tool, ToolAnswer};
use super::{parse_origin, McpEndpoint};
use crate::body::{self, Body};
use crate::context::{new_request_id, RequestContext};
use crate::gateway::{AgentIdentity, DirectCall, GatewayHandle};
use crate::header_names::X_REQUEST_ID;
use crate::policy::OperationService;

/// The current, stateless revisions.
pub const MODERN_VERSIONS: &[&str] = &["2026-07-28"];
/// The revisions of the `initialize` handshake, newest first.
pub const HANDSHAKE_VERSIONS: &[&str] = &["2025-11-25", "2025-06-18", "2025-03-26", "2024-11-05"];

const PROTOCOL_VERSION: HeaderName = HeaderName::from_static("mcp-protocol-version");
const SESSION_ID: HeaderName = HeaderName::from_static("mcp-session-id");
const MCP_METHOD: HeaderName = HeaderName::from_static("mcp-method");
const MCP_NAME: HeaderName = HeaderName::from_static("mcp-name");

const META_VERSION: &str = "io.modelcontextprotocol/protocolVersion";
const META_SERVER_INFO: &str = "io.modelcontextprotocol/serverInfo";

// JSON-RPC and MCP error codes.
const PARSE_ERROR: i64 = -32700;
const INVALID_REQUEST: i64 = -32600;
const METHOD_NOT_FOUND: i64 = -32601;
const INVALID_PARAMS: i64 = -32602;
const INTERNAL_ERROR: i64 = -32603;
const HEADER_MISMATCH: i64 = -32020;
const UNSUPPORTED_VERSION: i64 = -32022;

/// What the gateway hands the endpoint with each request: a handle (its
/// agents, and tool calls dispatched to their operation) and the
/// request's headers as they arrived (the `auth` stage around the endpoint
/// may remove the credential, which every tool call needs again).
#[derive(Clone)]
pub struct Envelope {
    /// The gateway's agents, and the way tool calls reach their operations.
    pub gateway: GatewayHandle,
    /// The request's headers as they arrived, before `auth` removed the credential.
    pub headers: HeaderMap,
}

impl Envelope {
    /// The envelope of `req`: its headers, with `Host` filled in from an HTTP/2 `:authority`.
    pub fn new(gateway: GatewayHandle, req: &Request<Body>) -> Envelope {
        let mut headers = req.headers().clone();
        // HTTP/2 names the host in the request target, not in a header.
        if let (false, Some(authority)) =
            (headers.contains_key(header::HOST), req.uri().authority())
        {
            if let Ok(host) = HeaderValue::from_str(authority.as_str()) {
                headers.insert(header::HOST, host);
            }
        }
        Envelope { gateway, headers }
    }
}

/// The innermost service of the endpoint's stack.
pub fn terminal() -> OperationService {
    OperationService::new(tower::service_fn(|req: Request<Body>| async move {
        Ok(serve(req).await)
    }))
}

/// The innermost service of a tool's probe (`stack::build_probe`):
/// reaching it means every check let the caller through.
pub fn probe_terminal() -> OperationService {
    OperationService::new(tower::service_fn(|_req: Request<Body>| async move {
        let mut response = Response::new(body::empty());
        *response.status_mut() = StatusCode::NO_CONTENT;
        Ok(response)
    }))
}

async fn serve(req: Request<Body>) -> Response<Body> {
    let (mut parts, body) = req.into_parts();
    // `Gateway::answer` puts the envelope there; missing, it is a bug.
    let Some(mut envelope) = parts.extensions.remove::<Envelope>() else {
        return crate::policy::context_missing(parts.extensions);
    };
    // Set by the OAuth guard: the token's scopes. The token itself is this
    // resource's alone, so no tool call carries it on.
    let grant = parts.extensions.remove::<Grant>();
    if grant.is_some() {
        envelope.headers.remove(header::AUTHORIZATION);
    }
    let gateway = &envelope.gateway;
    let Some(endpoint) = gateway.agents().endpoint() else {
        return crate::policy::context_missing(parts.extensions);
    };
    let Some(cx) = parts.extensions.remove::<RequestContext>() else {
        return crate::policy::context_missing(parts.extensions);
    };
    let call = Call {
        gateway,
        endpoint,
        headers: &envelope.headers,
        cx: &cx,
        grant: grant.as_ref(),
    };
    let mut response = if !call.origin_allowed() {
        rpc_error(
            StatusCode::FORBIDDEN,
            Value::Null,
            INVALID_REQUEST,
            "this Host or Origin may not call the MCP endpoint",
            None,
        )
    } else {
        match parts.method {
            Method::POST => call.post(body).await,
            Method::DELETE => call.delete().await,
            _ => {
                let mut r = rpc_error(
                    StatusCode::METHOD_NOT_ALLOWED,
                    Value::Null,
                    INVALID_REQUEST,
                    "POST JSON-RPC messages here; this server opens no SSE stream",
                    None,
                );
                r.headers_mut()
                    .insert(header::ALLOW, HeaderValue::from_static("POST, DELETE"));
                r
            }
        }
    };
    response.extensions_mut().insert(cx);
    response
}

/// One request to the endpoint.
struct Call<'a> {
    gateway: &'a GatewayHandle,
    endpoint: &'a McpEndpoint,
    headers: &'a HeaderMap,
    cx: &'a RequestContext,
    /// The OAuth token's scopes, when the endpoint is a resource server.
    grant: Option<&'a Grant>,
}

/// A JSON-RPC message from the client.
enum Incoming {
    Request {
        id: Value,
        method: String,
        params: Map<String, Value>,
    },
    Notification {
        method: String,
        params: Map<String, Value>,
    },
    /// A response to a server request (this server sends none): accepted.
    Response,
}

/// The protocol revision a request speaks.
#[derive(Debug, Clone, Copy)]
enum Era {
    /// 2026-07-28: stateless.
    Modern,
    /// The revision the session negotiated.
    Handshake(&'static str),
}

impl Era {
    fn features(self) -> Features {
        let version = match self {
            Era::Modern => return Features::ALL,
            Era::Handshake(v) => v,
        };
        // Dates compare as strings; the set is closed (`HANDSHAKE_VERSIONS`).
        Features {
            structured: version >= "2025-06-18",
            audio: version >= "2025-03-26",
        }
    }
}

/// A JSON-RPC error, before it becomes a response (boxed: it travels in
/// every `Result` of the dispatch, which should stay small).
struct RpcError(Box<RpcErrorParts>);

struct RpcErrorParts {
    status: StatusCode,
    id: Value,
    code: i64,
    message: String,
    data: Option<Value>,
}

impl RpcError {
    fn new(status: StatusCode, id: &Value, code: i64, message: impl Into<String>) -> Self {
        RpcError(Box::new(RpcErrorParts {
            status,
            id: id.clone(),
            code,
            message: message.into(),
            data: None,
        }))
    }

    fn with_data(mut self, data: Value) -> Self {
        self.0.data = Some(data);
        self
    }

    fn respond(self) -> Response<Body> {
        let e = *self.0;
        rpc_error(e.status, e.id, e.code, &e.message, e.data)
    }
}

// === impl Call ===

impl Call<'_> {
    /// The `Host` is one the endpoint answers, and the `Origin` is none
    /// (not a browser), an allowed one, or the page's own host when that
    /// host is vouched for: a DNS-rebinding page sends an `Origin` equal
    /// to the `Host`, but under a name the gateway was never given.
    fn origin_allowed(&self) -> bool {
        let rule = &self.endpoint.hosts;
        let host = self.headers.get(header::HOST).and_then(|h| h.to_str().ok());
        if !host.is_some_and(|h| rule.allows(h)) {
            return false;
        }
        let Some(origin) = self.headers.get(header::ORIGIN) else {
            return true;
        };
        let Some(origin) = origin.to_str().ok().and_then(parse_origin) else {
            return false;
        };
        if self.endpoint.allowed_origins.contains(&origin) {
            return true;
        }
        let host = host.map(str::to_ascii_lowercase);
        let authority = origin.split_once("://").map(|(_, a)| a);
        host.as_deref() == authority && host.is_some_and(|h| rule.vouches_for(&h))
    }

    async fn post(&self, body: Body) -> Response<Body> {
        let bytes = match body::collect_request(body).await {
            Ok(bytes) => bytes,
            Err(reject) => {
                let mut extensions = http::Extensions::new();
                extensions.insert(self.cx.clone());
                return reject.respond(extensions);
            }
        };
        match self.message(&bytes).await {
            Ok(response) => response,
            Err(error) => error.respond(),
        }
    }

    async fn message(&self, bytes: &[u8]) -> Result<Response<Body>, RpcError> {
        let incoming = parse(bytes)?;
        let (id, method, params) = match incoming {
            Incoming::Request { id, method, params } => (Some(id), method, params),
            Incoming::Notification { method, params } => (None, method, params),
            // This server sends no requests, so a response answers nothing.
            Incoming::Response => return Ok(accepted()),
        };
        if method == "initialize" {
            let Some(id) = id else {
                return Err(RpcError::new(
                    StatusCode::BAD_REQUEST,
                    &Value::Null,
                    INVALID_REQUEST,
                    "`initialize` is a request: give it an id",
                ));
            };
            return self.initialize(id, &params).await;
        }
        let era = self.era(id.as_ref(), &method, &params).await?;
        let Some(id) = id else {
            // Notifications (`notifications/initialized`, cancellations):
            // nothing runs in the background, so there is nothing to do.
            return Ok(accepted());
        };
        if let (Some(rs), Some(grant), "tools/call") =
            (&self.endpoint.oauth, self.grant, method.as_str())
        {
            let tool = params.get("name").and_then(Value::as_str).unwrap_or("");
            if !rs.missing_scopes(tool, grant).is_empty() {
                let mut extensions = http::Extensions::new();
                extensions.insert(self.cx.clone());
                return Ok(rs
                    .insufficient_scope(tool, grant, self.headers, self.cx)
                    .respond(extensions));
            }
        }
        let result = match (era, method.as_str()) {
            (Era::Modern, "server/discover") => Ok(self.discover()),
            (Era::Handshake(_), "ping") => Ok(json!({})),
            (_, "tools/list") => self.list(&id, era, &params).await,
            (_, "tools/call") => self.call(&id, era, &params).await,
            (era, other) => Err(RpcError::new(
                match era {
                    // The current revision answers an unknown method 404.
                    Era::Modern => StatusCode::NOT_FOUND,
                    Era::Handshake(_) => StatusCode::OK,
                },
                &id,
                METHOD_NOT_FOUND,
                format!("method `{other}` is not served here"),
            )),
        }?;
        Ok(rpc_result(id, era, result, None))
    }

    /// Which revision a non-`initialize` message speaks, after checking
    /// what that revision requires of it (headers, session). `id` is
    /// `None` for a notification, whose headers the current revision
    /// leaves undefined.
    async fn era(
        &self,
        id: Option<&Value>,
        method: &str,
        params: &Map<String, Value>,
    ) -> Result<Era, RpcError> {
        let is_request = id.is_some();
        let id = id.unwrap_or(&Value::Null);
        let bad = |code, message: String| RpcError::new(StatusCode::BAD_REQUEST, id, code, message);
        let header = self
            .headers
            .get(PROTOCOL_VERSION)
            .map(|v| v.to_str().unwrap_or(""));
        let in_meta = params
            .get("_meta")
            .and_then(|m| m.get(META_VERSION))
            .and_then(Value::as_str);
        let Some(version) = header else {
            if in_meta.is_some() {
                return Err(bad(
                    HEADER_MISMATCH,
                    "the MCP-Protocol-Version header is missing".into(),
                ));
            }
            // Before 2025-06-18 clients sent no version header: the
            // session knows the revision.
            return self.session(id).await.map(Era::Handshake);
        };
        if MODERN_VERSIONS.contains(&version) {
            if in_meta != Some(version) {
                return Err(bad(
                    HEADER_MISMATCH,
                    format!(
                        "MCP-Protocol-Version `{version}` does not match `_meta.{META_VERSION}`"
                    ),
                ));
            }
            let sent = self.headers.get(MCP_METHOD).and_then(decode_header);
            if is_request && sent.as_deref() != Some(method) {
                return Err(bad(
                    HEADER_MISMATCH,
                    format!("the Mcp-Method header does not match the body's method `{method}`"),
                ));
            }
            if is_request && method == "tools/call" {
                let name = params.get("name").and_then(Value::as_str);
                let sent = self.headers.get(MCP_NAME).and_then(decode_header);
                if name.is_none() || sent.as_deref() != name {
                    return Err(bad(
                        HEADER_MISMATCH,
                        "the Mcp-Name header does not match the body's `params.name`".into(),
                    ));
                }
            }
            return Ok(Era::Modern);
        }
        if HANDSHAKE_VERSIONS.contains(&version) {
            return self.session(id).await.map(Era::Handshake);
        }
        Err(bad(
            UNSUPPORTED_VERSION,
            format!("unsupported protocol version `{version}`"),
        )
        .with_data(json!({ "supported": supported_versions(), "requested": version })))
    }

    /// The session this request names: its negotiated revision.
    async fn session(&self, id: &Value) -> Result<&'static str, RpcError> {
        let Some(session) = self.headers.get(SESSION_ID).and_then(|v| v.to_str().ok()) else {
            return Err(RpcError::new(
                StatusCode::BAD_REQUEST,
                id,
                INVALID_REQUEST,
                "send `initialize` first, then the Mcp-Session-Id it returns with every request \
                 (or use protocol version 2026-07-28, which needs no session)",
            ));
        };
        let e = self.endpoint;
        let found = e
            .sessions
            .touch(session, e.clock.now(), &self.owner(), HANDSHAKE_VERSIONS)
            .await
            .map_err(|error| store_failed(id, &error))?;
        found.ok_or_else(|| {
            RpcError::new(
                StatusCode::NOT_FOUND,
                id,
                INVALID_REQUEST,
                "no such session (it ended or expired): send `initialize` again",
            )
        })
    }

    /// The caller the OAuth resource server authenticated, which tool
    /// calls carry to their operation.
    fn identity(&self) -> Option<crate::context::Client> {
        self.grant.and(self.cx.client.clone())
    }

    /// Who the sessions of this request belong to.
    fn owner(&self) -> Owner {
        let client = self.cx.client.as_ref().map(|c| &*c.id);
        Owner::of(client, self.cx.client_ip)
    }

    /// The handshake: the revision both sides speak, and a new session.
    async fn initialize(
        &self,
        id: Value,
        params: &Map<String, Value>,
    ) -> Result<Response<Body>, RpcError> {
        let Some(requested) = params.get("protocolVersion").and_then(Value::as_str) else {
            return Err(RpcError::new(
                StatusCode::OK,
                &id,
                INVALID_PARAMS,
                "`initialize` needs `params.protocolVersion`",
            ));
        };
        // The client's revision if this server speaks it, else the newest.
        let version = HANDSHAKE_VERSIONS
            .iter()
            .find(|v| **v == requested)
            .copied()
            .unwrap_or(HANDSHAKE_VERSIONS[0]);
        let e = self.endpoint;
        let session = e
            .sessions
            .open(e.clock.now(), version, &self.owner())
            .await
            .map_err(|error| {
                tracing::error!(%error, "no MCP session could be opened");
                RpcError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    &id,
                    INTERNAL_ERROR,
                    "no session could be opened: use protocol version 2026-07-28, which needs none",
                )
            })?;
        let result = json!({
            "protocolVersion": version,
            "capabilities": { "tools": { "listChanged": false } },
            "serverInfo": server_info(),
            "instructions": e.instructions,
        });
        Ok(rpc_result(
            id,
            Era::Handshake(version),
            result,
            Some(&session),
        ))
    }

    fn discover(&self) -> Value {
        json!({
            "supportedVersions": supported_versions(),
            "capabilities": { "tools": { "listChanged": false } },
            "instructions": self.endpoint.instructions,
            "ttlMs": 0,
            "cacheScope": "public",
        })
    }

    /// The tools this caller may call.
    async fn list(
        &self,
        id: &Value,
        era: Era,
        params: &Map<String, Value>,
    ) -> Result<Value, RpcError> {
        if params.get("cursor").is_some_and(|c| !c.is_null()) {
            return Err(RpcError::new(
                StatusCode::OK,
                id,
                INVALID_PARAMS,
                "unknown cursor: every tool is listed on the first page",
            ));
        }
        let mut listed = Vec::new();
        for tool in &self.gateway.agents().tools {
            if self.may_call(tool).await {
                listed.push(tool.definition(era.features()));
            }
        }
        let mut result = json!({ "tools": listed });
        if let Era::Modern = era {
            // The list depends on who asks: no shared cache may keep it.
            result["ttlMs"] = json!(0);
            result["cacheScope"] = json!("private");
        }
        Ok(result)
    }

    /// Runs the tool's probe for this caller: its ip, auth, roles and
    /// header checks, nothing that counts.
    async fn may_call(&self, tool: &Tool) -> bool {
        if let (Some(rs), Some(grant)) = (&self.endpoint.oauth, self.grant) {
            if !rs.missing_scopes(&tool.name, grant).is_empty() {
                return false;
            }
        }
        let mut req = Request::new(body::empty());
        *req.method_mut() = tool.method().clone();
        *req.headers_mut() = call_headers(self.headers, tool.takes_body());
        let mut cx = RequestContext::new(new_request_id(), self.cx.peer, self.cx.client_ip);
        cx.peer_trusted = self.cx.peer_trusted;
        cx.tls = self.cx.tls;
        cx.operation = Some(tool.info.clone());
        if let Some(client) = self.identity() {
            cx.client = Some(client.clone());
            req.extensions_mut().insert(AgentIdentity(client));
        }
        req.extensions_mut().insert(cx);
        match tool.probe.clone().oneshot(req).await {
            Ok(response) => response.status().is_success(),
            Err(never) => match never {},
        }
    }

    /// Calls a tool: its operation, through the gateway, as this caller.
    async fn call(
        &self,
        id: &Value,
        era: Era,
        params: &Map<String, Value>,
    ) -> Result<Value, RpcError> {
        let invalid = |message: String| RpcError::new(StatusCode::OK, id, INVALID_PARAMS, message);
        let Some(name) = params.get("name").and_then(Value::as_str) else {
            return Err(invalid("`tools/call` needs `params.name`".into()));
        };
        let Some(tool) = self.gateway.agents().tool(name) else {
            return Err(invalid(format!("Unknown tool: {name}")));
        };
        let arguments = match params.get("arguments") {
            None | Some(Value::Null) => Value::Object(Map::new()),
            Some(Value::Object(args)) => Value::Object(args.clone()),
            Some(_) => return Err(invalid("`arguments` must be an object".into())),
        };
        let request = match tool.request(&arguments) {
            Ok(request) => request,
            Err(message) => return Ok(Value::Object(tools::error_result(message, None))),
        };
        let answer = self.dispatch(tool, request).await;
        Ok(Value::Object(tool.result(&answer, era.features())))
    }

    /// Sends a tool's request to its own operation, through the gateway's
    /// handle, with this caller's headers and address, and reads the
    /// answer (up to `max_result`).
    async fn dispatch(&self, tool: &Tool, request: tools::ToolRequest) -> ToolAnswer {
        let mut req = Request::new(match &request.body {
            Some(bytes) => body::full(bytes.clone()),
            None => body::empty(),
        });
        *req.method_mut() = request.method;
        match request.path_and_query.parse() {
            Ok(uri) => *req.uri_mut() = uri,
            Err(_) => {
                return ToolAnswer {
                    media_type: None,
                    status: StatusCode::BAD_REQUEST,
                    body: Bytes::from_static(b"the arguments do not make a valid request path"),
                    request_id: None,
                    retry_after: None,
                }
            }
        }
        *req.headers_mut() = call_headers(self.headers, request.body.is_some());
        if let Some(bytes) = &request.body {
            req.headers_mut()
                .insert(header::CONTENT_LENGTH, HeaderValue::from(bytes.len()));
        }
        // The tool call arrives as if on the MCP request's own connection.
        let conn = crate::context::Connection {
            peer: self.cx.peer,
            tls: self.cx.tls,
            peer_ip_header: self.cx.peer_ip_header(),
        };
        let direct = DirectCall {
            operation: tool.operation,
            params: request.params,
            identity: self.identity(),
        };
        let response = self.gateway.call(direct, req, &conn).await;
        let (parts, body) = response.into_parts();
        let text = |h: &HeaderName| {
            parts
                .headers
                .get(h)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let request_id = text(&X_REQUEST_ID);
        let retry_after = text(&header::RETRY_AFTER);
        let media_type = text(&header::CONTENT_TYPE).map(|ct| {
            let media = ct.split(';').next().unwrap_or("");
            media.trim().to_ascii_lowercase()
        });
        match Limited::new(body, self.endpoint.max_result as usize)
            .collect()
            .await
        {
            Ok(collected) => ToolAnswer {
                media_type,
                status: parts.status,
                body: collected.to_bytes(),
                request_id,
                retry_after,
            },
            Err(_) => ToolAnswer {
                media_type: None,
                status: StatusCode::BAD_GATEWAY,
                body: Bytes::from(format!(
                    "the workflow's answer broke off or is larger than agents.max_result \
                     ({} bytes)",
                    self.endpoint.max_result
                )),
                request_id,
                retry_after: None,
            },
        }
    }

    /// Ends a handshake session.
    async fn delete(&self) -> Response<Body> {
        let Some(session) = self.headers.get(SESSION_ID).and_then(|v| v.to_str().ok()) else {
            return rpc_error(
                StatusCode::BAD_REQUEST,
                Value::Null,
                INVALID_REQUEST,
                "name the session to end in Mcp-Session-Id",
                None,
            );
        };
        let e = self.endpoint;
        let closed = e
            .sessions
            .close(session, e.clock.now(), &self.owner())
            .await;
        if let Err(error) = &closed {
            return store_failed(&Value::Null, error).respond();
        }
        if closed.is_ok_and(|c| c) {
            let mut response = Response::new(body::empty());
            *response.status_mut() = StatusCode::NO_CONTENT;
            response
        } else {
            rpc_error(
                StatusCode::NOT_FOUND,
                Value::Null,
                INVALID_REQUEST,
                "no such session",
                None,
            )
        }
    }
}

// === helpers ===

/// Reads one JSON-RPC message.
fn parse(bytes: &[u8]) -> Result<Incoming, RpcError> {
    let bad =
        |id: &Value, code, message: &str| RpcError::new(StatusCode::BAD_REQUEST, id, code, message);
    let value: Value = serde_json::from_slice(bytes)
        .map_err(|_| bad(&Value::Null, PARSE_ERROR, "the body is not JSON"))?;
    let Value::Object(mut message) = value else {
        let detail = if value.is_array() {
            "batches are not accepted: send one JSON-RPC message per POST"
        } else {
            "a JSON-RPC message is an object"
        };
        return Err(bad(&Value::Null, INVALID_REQUEST, detail));
    };
    let id = match message.remove("id") {
        None => None,
        Some(id @ Value::String(_)) => Some(id),
        Some(Value::Number(n)) if n.is_i64() || n.is_u64() => Some(Value::Number(n)),
        Some(_) => {
            return Err(bad(
                &Value::Null,
                INVALID_REQUEST,
                "`id` is a string or an integer",
            ))
        }
    };
    let id_or_null = id.clone().unwrap_or(Value::Null);
    if message.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return Err(bad(
            &id_or_null,
            INVALID_REQUEST,
            "`jsonrpc` must be \"2.0\"",
        ));
    }
    let method = match message.remove("method") {
        Some(Value::String(m)) => m,
        Some(_) => return Err(bad(&id_or_null, INVALID_REQUEST, "`method` is a string")),
        None if id.is_some()
            && (message.contains_key("result") || message.contains_key("error")) =>
        {
            return Ok(Incoming::Response)
        }
        None => return Err(bad(&id_or_null, INVALID_REQUEST, "`method` is missing")),
    };
    let params = match message.remove("params") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(p)) => p,
        Some(_) => {
            return Err(RpcError::new(
                StatusCode::OK,
                &id_or_null,
                INVALID_PARAMS,
                "`params` is an object",
            ))
        }
    };
    Ok(match id {
        Some(id) => Incoming::Request { id, method, params },
        None => Incoming::Notification { method, params },
    })
}

/// The store holding the sessions failed: 503, and a way on.
fn store_failed(id: &Value, error: &crate::state::StoreError) -> RpcError {
    tracing::warn!(%error, "the MCP session store failed");
    RpcError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        id,
        INTERNAL_ERROR,
        "the session store is unavailable: retry, or use protocol version 2026-07-28, \
         which needs no session",
    )
}

/// `Mcp-Name` / `Mcp-Method` values, with the `=?base64?...?=` form decoded.
fn decode_header(value: &HeaderValue) -> Option<String> {
    use base64::Engine as _;
    let text = value.to_str().ok()?;
    match text
        .strip_prefix("=?base64?")
        .and_then(|t| t.strip_suffix("?="))
    {
        Some(encoded) => base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .ok()
            .and_then(|bytes| String::from_utf8(bytes).ok()),
        None => Some(text.to_string()),
    }
}

/// The caller's headers a tool call carries: its credentials and whatever
/// else the operation's policies may judge, without the MCP transport's
/// own headers, the body's framing, or an encoding the result could not
/// be read in.
fn forwarded_headers(headers: &HeaderMap) -> HeaderMap {
    let mut out = HeaderMap::with_capacity(headers.len());
    for (name, value) in headers {
        let n = name.as_str();
        let transport = n.starts_with("mcp-")
            || matches!(
                n,
                "content-length"
                    | "content-type"
                    | "content-encoding"
                    | "transfer-encoding"
                    | "accept"
                    | "accept-encoding"
                    | "last-event-id"
                    | "origin"
                    | "expect"
                    | "x-request-id"
            );
        if !transport {
            out.append(name.clone(), value.clone());
        }
    }
    out
}

/// The headers of a tool call (and of its probe, so `tools/list` judges
/// exactly what a call would send): the caller's, plus what says the call
/// speaks JSON.
fn call_headers(caller: &HeaderMap, json_body: bool) -> HeaderMap {
    let mut headers = forwarded_headers(caller);
    headers.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
    if json_body {
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
    }
    headers
}

fn supported_versions() -> Vec<&'static str> {
    MODERN_VERSIONS
        .iter()
        .chain(HANDSHAKE_VERSIONS)
        .copied()
        .collect()
}

fn server_info() -> Value {
    json!({
        "name": "tollgate",
        "title": "Tollgate API gateway",
        "version": env!("CARGO_PKG_VERSION"),
    })
}

fn json_response(status: StatusCode, value: &Value) -> Response<Body> {
    let mut response = Response::new(body::full(value.to_string()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// A result response; the current revision's results also say they are
/// complete and who answered.
fn rpc_result(id: Value, era: Era, mut result: Value, session: Option<&str>) -> Response<Body> {
    if let (Era::Modern, Some(fields)) = (era, result.as_object_mut()) {
        fields.insert("resultType".into(), json!("complete"));
        let meta = fields
            .entry("_meta")
            .or_insert_with(|| Value::Object(Map::new()));
        if let Some(meta) = meta.as_object_mut() {
            meta.insert(META_SERVER_INFO.into(), server_info());
        }
    }
    let mut response = json_response(
        StatusCode::OK,
        &json!({ "jsonrpc": "2.0", "id": id, "result": result }),
    );
    if let Some(session) = session.and_then(|s| HeaderValue::from_str(s).ok()) {
        response.headers_mut().insert(SESSION_ID, session);
    }
    response
}

fn rpc_error(
    status: StatusCode,
    id: Value,
    code: i64,
    message: &str,
    data: Option<Value>,
) -> Response<Body> {
    let mut error = json!({ "code": code, "message": message });
    if let Some(data) = data {
        error["data"] = data;
    }
    json_response(
        status,
        &json!({ "jsonrpc": "2.0", "id": id, "error": error }),
    )
}

/// 202: a notification or response, taken.
fn accepted() -> Response<Body> {
    let mut response = Response::new(body::empty());
    *response.status_mut() = StatusCode::ACCEPTED;
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_requests_notifications_or_responses() {
        let req = parse(br#"{"jsonrpc":"2.0","id":7,"method":"tools/list"}"#);
        assert!(matches!(req, Ok(Incoming::Request { ref method, .. }) if method == "tools/list"));
        let note = parse(br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#);
        assert!(matches!(note, Ok(Incoming::Notification { .. })));
        let resp = parse(br#"{"jsonrpc":"2.0","id":"s1","result":{}}"#);
        assert!(matches!(resp, Ok(Incoming::Response)));
    }

    #[test]
    fn malformed_messages_get_the_json_rpc_codes() {
        let code = |body: &[u8]| parse(body).err().map(|e| (e.0.status.as_u16(), e.0.code));
        assert_eq!(code(b"{nope"), Some((400, PARSE_ERROR)));
        assert_eq!(code(b"[]"), Some((400, INVALID_REQUEST)));
        assert_eq!(
            code(br#"{"jsonrpc":"1.0","id":1,"method":"ping"}"#),
            Some((400, INVALID_REQUEST))
        );
        assert_eq!(
            code(br#"{"jsonrpc":"2.0","id":null,"method":"ping"}"#),
            Some((400, INVALID_REQUEST))
        );
        assert_eq!(
            code(br#"{"jsonrpc":"2.0","id":1.5,"method":"ping"}"#),
            Some((400, INVALID_REQUEST))
        );
        assert_eq!(
            code(br#"{"jsonrpc":"2.0","id":1}"#),
            Some((400, INVALID_REQUEST))
        );
        assert_eq!(
            code(br#"{"jsonrpc":"2.0","id":1,"method":"x","params":[1]}"#),
            Some((200, INVALID_PARAMS))
        );
    }

    #[test]
    fn base64_header_values_are_decoded() {
        let plain = HeaderValue::from_static("getEmployee");
        assert_eq!(decode_header(&plain).as_deref(), Some("getEmployee"));
        let encoded = HeaderValue::from_static("=?base64?Z2V0RW1wbG95ZWU=?=");
        assert_eq!(decode_header(&encoded).as_deref(), Some("getEmployee"));
    }

    #[test]
    fn transport_headers_stay_behind_and_credentials_go_on() {
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("x-api-key", "k"),
            ("authorization", "Bearer t"),
            ("mcp-session-id", "s"),
            ("mcp-protocol-version", "2025-06-18"),
            ("accept", "application/json, text/event-stream"),
            ("accept-encoding", "gzip"),
            ("content-type", "application/json"),
            ("content-length", "10"),
            ("x-tenant", "acme"),
        ] {
            h.insert(HeaderName::from_static(k), HeaderValue::from_static(v));
        }
        let out = forwarded_headers(&h);
        let mut names: Vec<&str> = out.keys().map(|k| k.as_str()).collect();
        names.sort();
        assert_eq!(names, ["authorization", "x-api-key", "x-tenant"]);
    }

    #[test]
    fn structured_output_starts_with_2025_06_18() {
        assert!(!Era::Handshake("2025-03-26").features().structured);
        assert!(Era::Handshake("2025-06-18").features().structured);
        assert!(Era::Modern.features().structured);
    }
}
