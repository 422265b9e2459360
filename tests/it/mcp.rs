//! Governed endpoints as MCP tools (DESIGN §9): raw JSON-RPC over HTTP
//! against the real gateway and a real upstream — sessions, both protocol
//! eras, tools filtered by role, calls through the full policy stack
//! (credentials, roles, rate limits, usage), the gateway-wide policies
//! around the endpoint, config errors, `tollgate tools`, and a stock MCP
//! client (the Python SDK) end to end.

use crate::common::*;
use bytes::Bytes;
use http::{Method, Request};
use http_body_util::Full;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::sync::Arc;
use std::time::Duration;
use tollgate::clock::ManualClock;
use tollgate::state::Store;

const READER_KEY: &str = "tk_reader_0123456789";
const OUTSIDER_KEY: &str = "tk_outsider_0123456789";
/// 2027-01-15T08:00:00Z.
const NOW: u64 = 1_800_000_000 * 1_000_000_000;
const HANDSHAKE: &str = "2025-06-18";
const MODERN: &str = "2026-07-28";

fn sha256_hex(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// Two clients (one holding `reader`), key auth gateway-wide, and an API
/// whose tools are: listEmployees (anyone), getEmployee (readers),
/// createEmployee (one call a minute); `internalOnly` is not a tool.
/// `auth` is added to the auth policy, `top` at the top level.
fn config(upstream: &str, auth: &str, top: &str) -> String {
    format!(
        r#"version: 1
listen: 127.0.0.1:0
roles: [reader, agent]
clients:
  - id: reader-bot
    roles: [reader, agent]
    api_keys: [{{ sha256: {reader} }}]
  - id: outsider
    roles: [agent]
    api_keys: [{{ sha256: {outsider} }}]
policies:
  key-required: {{ type: auth, methods: [api_key]{auth} }}
  readers: {{ type: roles, allow: [reader] }}
  one-a-minute: {{ type: rate_limit, limit: 1, window: 1m, key: client }}
apply: [key-required]
agents: {{ mcp_path: /mcp }}
{top}
apis:
  - name: directory
    title: Employee Directory
    description: Who works here.
    base_path: /employees
    upstream: {upstream}
    operations:
      - id: listEmployees
        method: GET
        path: /
        summary: List employees
        agent: true
        query_schema:
          properties:
            department: {{ type: string }}
            limit: {{ type: integer, minimum: 1 }}
      - id: getEmployee
        method: GET
        path: /{{employeeId}}
        summary: Look up one employee
        agent: true
        apply: [readers]
        response_schema: {{ type: object, required: [method] }}
      - id: createEmployee
        method: POST
        path: /
        agent: true
        apply: [one-a-minute]
        request_schema:
          type: object
          required: [name]
          properties: {{ name: {{ type: string }} }}
      - id: internalOnly
        method: GET
        path: /internal
"#,
        reader = sha256_hex(READER_KEY),
        outsider = sha256_hex(OUTSIDER_KEY),
    )
}

async fn start(up: &Upstream, auth: &str, top: &str) -> (TestGateway, Arc<ManualClock>) {
    let clock = ManualClock::new(NOW);
    let gw = gateway_with_clock(&config(&up.url(), auth, top), clock.clone()).await;
    (gw, clock)
}

/// A raw MCP client: one key, headers it always sends, and the session
/// once `initialize` opened one.
struct Mcp<'g> {
    gw: &'g TestGateway,
    key: &'static str,
    headers: Vec<(&'static str, &'static str)>,
    session: Option<String>,
}

impl<'g> Mcp<'g> {
    fn new(gw: &'g TestGateway, key: &'static str) -> Self {
        Mcp {
            gw,
            key,
            headers: Vec::new(),
            session: None,
        }
    }

    /// POSTs `body` with the handshake-era headers (and `extra`).
    async fn post(&self, body: &str, extra: &[(&str, &str)]) -> Got {
        let mut req = Request::post(self.gw.url("/mcp"))
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .header("x-api-key", self.key);
        if let Some(session) = &self.session {
            req = req
                .header("mcp-session-id", session)
                .header("mcp-protocol-version", HANDSHAKE);
        }
        for (k, v) in self.headers.iter().chain(extra) {
            req = req.header(*k, *v);
        }
        self.gw
            .send(
                req.body(Full::new(Bytes::from(body.to_string())))
                    .expect("request"),
            )
            .await
    }

    async fn initialize(&mut self, version: &str) -> Got {
        let got = self
            .post(
                &json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
                    "protocolVersion": version, "capabilities": {},
                    "clientInfo": {"name": "raw-test", "version": "1"}}})
                .to_string(),
                &[],
            )
            .await;
        self.session = got.header("mcp-session-id").map(str::to_string);
        got
    }

    /// A request in the session; returns the whole JSON-RPC response.
    async fn rpc(&self, method: &str, params: Value) -> Value {
        let got = self
            .post(
                &json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}).to_string(),
                &[],
            )
            .await;
        assert_eq!(got.status, 200, "{method}: {:?}", got.body);
        assert_eq!(got.header("content-type"), Some("application/json"));
        got.json()
    }

    async fn call(&self, tool: &str, arguments: Value) -> Value {
        let reply = self
            .rpc("tools/call", json!({"name": tool, "arguments": arguments}))
            .await;
        reply["result"].clone()
    }

    async fn tool_names(&self) -> Vec<String> {
        let reply = self.rpc("tools/list", json!({})).await;
        names(&reply["result"])
    }

    /// A stateless (2026-07-28) request with the headers it requires.
    async fn modern(&self, method: &str, params: Value, name: Option<&str>) -> Got {
        let mut params = params;
        params["_meta"] = json!({ "io.modelcontextprotocol/protocolVersion": MODERN });
        let mut extra = vec![("mcp-protocol-version", MODERN), ("mcp-method", method)];
        if let Some(name) = name {
            extra.push(("mcp-name", name));
        }
        let body = json!({"jsonrpc": "2.0", "id": 9, "method": method, "params": params});
        self.post(&body.to_string(), &extra).await
    }
}

fn names(result: &Value) -> Vec<String> {
    result["tools"]
        .as_array()
        .expect("tools")
        .iter()
        .map(|t| t["name"].as_str().expect("name").to_string())
        .collect()
}

/// The problem JSON a tool error carries.
fn tool_problem(result: &Value) -> Value {
    assert_eq!(result["isError"], true, "{result}");
    let text = result["content"][0]["text"].as_str().expect("text");
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not a problem ({e}): {text}"))
}

// === sessions (the handshake era) ===

#[tokio::test]
async fn initialize_opens_a_session_that_every_later_request_needs() {
    let up = Upstream::start().await;
    let (gw, _clock) = start(&up, "", "").await;
    let mut mcp = Mcp::new(&gw, READER_KEY);
    let got = mcp.initialize(HANDSHAKE).await;
    assert_eq!(got.status, 200, "{:?}", got.body);
    let session = mcp.session.clone().expect("Mcp-Session-Id");
    assert_eq!(session.len(), 32);
    assert!(session.bytes().all(|b| b.is_ascii_hexdigit()));
    let result = &got.json()["result"];
    assert_eq!(result["protocolVersion"], HANDSHAKE);
    assert_eq!(result["capabilities"]["tools"]["listChanged"], false);
    assert_eq!(result["serverInfo"]["name"], "tollgate");
    assert!(result["instructions"]
        .as_str()
        .is_some_and(|i| i.contains("Employee Directory: Who works here.")));

    let note = json!({"jsonrpc": "2.0", "method": "notifications/initialized"}).to_string();
    let got = mcp.post(&note, &[]).await;
    assert_eq!(got.status, 202);
    assert!(got.body.is_empty());
    assert_eq!(mcp.rpc("ping", json!({})).await["result"], json!({}));

    // Without the session: 400; with one the server never issued: 404.
    let list = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"}).to_string();
    let anonymous = Mcp::new(&gw, READER_KEY);
    let got = anonymous.post(&list, &[]).await;
    assert_eq!(got.status, 400);
    assert_eq!(got.json()["error"]["code"], -32600);
    let got = anonymous
        .post(
            &list,
            &[("mcp-session-id", "00000000000000000000000000000000")],
        )
        .await;
    assert_eq!(got.status, 404);

    // GET offers no stream; DELETE ends the session, after which it is 404.
    let got = gw
        .send(
            Request::get(gw.url("/mcp"))
                .header("x-api-key", READER_KEY)
                .header("accept", "text/event-stream")
                .header("mcp-session-id", &session)
                .body(Full::default())
                .expect("request"),
        )
        .await;
    assert_eq!(got.status, 405);
    assert_eq!(got.header("allow"), Some("POST, DELETE"));
    let delete = || {
        Request::delete(gw.url("/mcp"))
            .header("x-api-key", READER_KEY)
            .header("mcp-session-id", &session)
            .body(Full::default())
            .expect("request")
    };
    assert_eq!(gw.send(delete()).await.status, 204);
    assert_eq!(mcp.post(&list, &[]).await.status, 404);
    assert_eq!(gw.send(delete()).await.status, 404);
    gw.shutdown().await;
}

#[tokio::test]
async fn the_handshake_settles_on_the_clients_revision_or_the_newest() {
    let up = Upstream::start().await;
    let (gw, _clock) = start(&up, "", "").await;
    for (asked, settled) in [
        ("2025-03-26", "2025-03-26"),
        ("2024-11-05", "2024-11-05"),
        ("2025-11-25", "2025-11-25"),
        ("2023-01-01", "2025-11-25"),
    ] {
        let mut mcp = Mcp::new(&gw, READER_KEY);
        let got = mcp.initialize(asked).await;
        assert_eq!(got.json()["result"]["protocolVersion"], settled, "{asked}");
    }
    // Before 2025-06-18 there is no title or output schema to show.
    let mut old = Mcp::new(&gw, READER_KEY);
    old.initialize("2025-03-26").await;
    let tools = old.rpc("tools/list", json!({})).await;
    let get = tools["result"]["tools"]
        .as_array()
        .and_then(|t| t.iter().find(|t| t["name"] == "getEmployee"))
        .cloned()
        .expect("getEmployee");
    assert!(
        get.get("outputSchema").is_none() && get.get("title").is_none(),
        "{get}"
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn sessions_idle_out_on_the_injected_clock_and_the_table_is_capped() {
    let up = Upstream::start().await;
    let yaml = config(&up.url(), "", "").replace(
        "agents: { mcp_path: /mcp }",
        "agents: { mcp_path: /mcp, max_sessions: 2, session_idle: 10m }",
    );
    let clock = ManualClock::new(NOW);
    let gw = gateway_with_clock(&yaml, clock.clone()).await;
    let list = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"}).to_string();

    let mut idle = Mcp::new(&gw, READER_KEY);
    idle.initialize(HANDSHAKE).await;
    let mut busy = Mcp::new(&gw, READER_KEY);
    busy.initialize(HANDSHAKE).await;
    clock.advance(Duration::from_secs(9 * 60));
    assert_eq!(busy.post(&list, &[]).await.status, 200);
    clock.advance(Duration::from_secs(2 * 60));
    assert_eq!(idle.post(&list, &[]).await.status, 404, "idle 11 minutes");
    assert_eq!(
        busy.post(&list, &[]).await.status,
        200,
        "used 2 minutes ago"
    );

    // A third session makes room by dropping the least recently used.
    clock.advance(Duration::from_secs(1));
    let mut a = Mcp::new(&gw, READER_KEY);
    a.initialize(HANDSHAKE).await;
    clock.advance(Duration::from_secs(1));
    let mut b = Mcp::new(&gw, READER_KEY);
    b.initialize(HANDSHAKE).await;
    assert_eq!(busy.post(&list, &[]).await.status, 404);
    assert_eq!(a.post(&list, &[]).await.status, 200);
    assert_eq!(b.post(&list, &[]).await.status, 200);
    gw.shutdown().await;
}

#[tokio::test]
async fn two_gateways_on_one_redis_serve_one_session_alternately() {
    let redis = crate::common::redis_server::RedisServer::start().await;
    let up = Upstream::start().await;
    let top = format!("state: {{ store: redis, redis_url: \"{}\" }}", redis.url());
    let yaml = config(&up.url(), "", &top);
    let clock = ManualClock::new(NOW);
    // Separate deps: as two processes would have, sharing only Redis.
    let a = gateway_with_deps(&yaml, &deps_for(&yaml, clock.clone())).await;
    let b = gateway_with_deps(&yaml, &deps_for(&yaml, clock.clone())).await;
    let mut on_a = Mcp::new(&a, READER_KEY);
    assert_eq!(on_a.initialize(HANDSHAKE).await.status, 200);
    let mut on_b = Mcp::new(&b, READER_KEY);
    on_b.session = on_a.session.clone();
    for turn in 0..2 {
        clock.advance(Duration::from_secs(60));
        let got = on_b.call("listEmployees", json!({"limit": turn + 1})).await;
        assert_eq!(got["isError"], false, "on b: {got}");
        clock.advance(Duration::from_secs(60));
        assert_eq!(on_a.tool_names().await.len(), 3, "on a");
    }
    assert_eq!(up.count(), 2);
    // Ended on one, it is gone on the other; another client never saw it.
    let mut thief = Mcp::new(&b, OUTSIDER_KEY);
    thief.session = on_a.session.clone();
    let list = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"}).to_string();
    assert_eq!(thief.post(&list, &[]).await.status, 404);
    let session = on_a.session.clone().expect("session");
    let delete = Request::delete(b.url("/mcp"))
        .header("x-api-key", READER_KEY)
        .header("mcp-session-id", &session)
        .body(Full::default())
        .expect("request");
    assert_eq!(b.send(delete).await.status, 204);
    assert_eq!(on_a.post(&list, &[]).await.status, 404);
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn a_session_flood_from_one_client_leaves_another_clients_session_working() {
    let up = Upstream::start().await;
    let yaml = config(&up.url(), "", "").replace(
        "agents: { mcp_path: /mcp }",
        "agents: { mcp_path: /mcp, max_sessions: 3 }",
    );
    let clock = ManualClock::new(NOW);
    let gw = gateway_with_clock(&yaml, clock.clone()).await;
    let mut victim = Mcp::new(&gw, READER_KEY);
    assert_eq!(victim.initialize(HANDSHAKE).await.status, 200);
    let list = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"}).to_string();
    let mut first = Mcp::new(&gw, OUTSIDER_KEY);
    first.initialize(HANDSHAKE).await;
    let mut flood = Mcp::new(&gw, OUTSIDER_KEY);
    for _ in 0..50 {
        clock.advance(Duration::from_millis(10));
        assert_eq!(flood.initialize(HANDSHAKE).await.status, 200);
    }
    assert_eq!(
        victim.post(&list, &[]).await.status,
        200,
        "the victim's session"
    );
    assert_eq!(
        flood.post(&list, &[]).await.status,
        200,
        "the flood's newest"
    );
    assert_eq!(
        first.post(&list, &[]).await.status,
        404,
        "the flood's oldest"
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn a_session_answers_only_the_client_that_opened_it() {
    let up = Upstream::start().await;
    let (gw, _clock) = start(&up, "", "").await;
    let mut owner = Mcp::new(&gw, READER_KEY);
    owner.initialize(HANDSHAKE).await;
    let mut thief = Mcp::new(&gw, OUTSIDER_KEY);
    thief.session = owner.session.clone();
    let list = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"}).to_string();
    assert_eq!(thief.post(&list, &[]).await.status, 404);
    assert_eq!(owner.post(&list, &[]).await.status, 200);
    gw.shutdown().await;
}

// === tools ===

#[tokio::test]
async fn tools_list_shows_only_what_the_caller_may_call_and_spends_nothing() {
    let up = Upstream::start().await;
    let (gw, _clock) = start(&up, "", "").await;
    let mut reader = Mcp::new(&gw, READER_KEY);
    reader.initialize(HANDSHAKE).await;
    let mut outsider = Mcp::new(&gw, OUTSIDER_KEY);
    outsider.initialize(HANDSHAKE).await;
    assert_eq!(
        reader.tool_names().await,
        ["listEmployees", "getEmployee", "createEmployee"]
    );
    assert_eq!(
        outsider.tool_names().await,
        ["listEmployees", "createEmployee"]
    );

    let tools = reader.rpc("tools/list", json!({})).await;
    let tools = tools["result"]["tools"].as_array().cloned().expect("tools");
    let list = &tools[0];
    assert_eq!(list["title"], "List employees");
    assert_eq!(
        list["inputSchema"]["properties"],
        json!({ "department": { "type": "string" }, "limit": { "type": "integer", "minimum": 1 } })
    );
    let get = &tools[1];
    assert_eq!(get["inputSchema"]["required"], json!(["employeeId"]));
    assert_eq!(
        get["outputSchema"],
        json!({ "type": "object", "required": ["method"] })
    );
    let create = &tools[2];
    assert_eq!(create["inputSchema"]["required"], json!(["body"]));
    assert_eq!(
        create["inputSchema"]["properties"]["body"]["required"],
        json!(["name"])
    );

    // Listing ran each tool's checks, not its limits: the one call a
    // minute of createEmployee is still there, and nothing reached the upstream.
    for _ in 0..5 {
        reader.tool_names().await;
    }
    assert_eq!(up.count(), 0);
    let created = reader
        .call("createEmployee", json!({"body": {"name": "Ada"}}))
        .await;
    assert_eq!(created["isError"], false, "{created}");
    gw.shutdown().await;
}

#[tokio::test]
async fn header_rules_judge_the_callers_headers_in_the_list_and_on_the_call() {
    let up = Upstream::start().await;
    let yaml = config(&up.url(), "", "").replace(
        "        summary: List employees\n        agent: true\n",
        "        summary: List employees\n        agent: true\n        apply: [{ type: headers, require: [X-Tenant] }]\n",
    );
    let gw = gateway_with_clock(&yaml, ManualClock::new(NOW)).await;
    let mut plain = Mcp::new(&gw, READER_KEY);
    plain.initialize(HANDSHAKE).await;
    assert_eq!(plain.tool_names().await, ["getEmployee", "createEmployee"]);
    let refused = plain.call("listEmployees", json!({})).await;
    assert_eq!(tool_problem(&refused)["code"], "header_required");

    let mut tenant = Mcp::new(&gw, READER_KEY);
    tenant.headers.push(("x-tenant", "acme"));
    tenant.initialize(HANDSHAKE).await;
    assert_eq!(
        tenant.tool_names().await,
        ["listEmployees", "getEmployee", "createEmployee"]
    );
    let listed = tenant.call("listEmployees", json!({})).await;
    assert_eq!(listed["isError"], false, "{listed}");
    assert_eq!(up.last().headers["x-tenant"], "acme");
    assert_eq!(up.count(), 1);
    gw.shutdown().await;
}

#[tokio::test]
async fn a_tool_call_reaches_the_upstream_as_the_operation_with_its_arguments() {
    let up = Upstream::start().await;
    let (gw, _clock) = start(&up, "", "").await;
    let mut mcp = Mcp::new(&gw, READER_KEY);
    mcp.initialize(HANDSHAKE).await;

    let listed = mcp
        .call("listEmployees", json!({"department": "R&D ü", "limit": 5}))
        .await;
    assert_eq!(listed["isError"], false, "{listed}");
    let seen = up.last();
    assert_eq!(seen.method, Method::GET);
    assert_eq!(seen.uri, "/?department=R%26D%20%C3%BC&limit=5");
    assert_eq!(seen.headers["x-tollgate-client"], "reader-bot");
    assert_eq!(seen.headers["x-tollgate-operation"], "listEmployees");
    // The credential is the gateway's to check, not the workflow's; and
    // nothing of the MCP transport reaches the upstream.
    assert!(seen.headers.get("x-api-key").is_none());
    assert!(seen.headers.get("mcp-session-id").is_none());
    assert!(seen.headers.get("mcp-protocol-version").is_none());
    let text = listed["content"][0]["text"].as_str().expect("text");
    let echoed: Value = serde_json::from_str(text).expect("the upstream's JSON");
    assert_eq!(echoed["uri"], seen.uri);
    assert_eq!(listed["_meta"]["dev.tollgate/http"]["status"], 200);

    let got = mcp.call("getEmployee", json!({"employeeId": "7"})).await;
    assert_eq!(up.last().uri, "/7");
    assert_eq!(got["structuredContent"]["method"], "GET", "{got}");

    let created = mcp
        .call("createEmployee", json!({"body": {"name": "Ada"}}))
        .await;
    assert_eq!(created["isError"], false, "{created}");
    let seen = up.last();
    assert_eq!(seen.method, Method::POST);
    assert_eq!(seen.uri, "/");
    assert_eq!(&seen.body[..], br#"{"name":"Ada"}"#);
    assert_eq!(seen.headers["content-type"], "application/json");
    gw.shutdown().await;
}

#[tokio::test]
async fn forward_credentials_lets_the_key_reach_the_upstream_on_a_tool_call() {
    let up = Upstream::start().await;
    let (gw, _clock) = start(&up, ", forward_credentials: true", "").await;
    let mut mcp = Mcp::new(&gw, READER_KEY);
    mcp.initialize(HANDSHAKE).await;
    let got = mcp.call("listEmployees", json!({})).await;
    assert_eq!(got["isError"], false, "{got}");
    assert_eq!(up.last().headers["x-api-key"], READER_KEY);
    gw.shutdown().await;
}

#[tokio::test]
async fn a_caller_without_the_role_gets_a_tool_error_with_the_code_not_the_data() {
    let up = Upstream::start().await;
    let (gw, _clock) = start(&up, "", "").await;
    let mut mcp = Mcp::new(&gw, OUTSIDER_KEY);
    mcp.initialize(HANDSHAKE).await;
    let result = mcp.call("getEmployee", json!({"employeeId": "7"})).await;
    let problem = tool_problem(&result);
    assert_eq!(problem["code"], "forbidden_role");
    assert_eq!(problem["status"], 403);
    assert!(result.get("structuredContent").is_none());
    assert_eq!(up.count(), 0);
    gw.shutdown().await;
}

/// A tool whose path parameter could spell the path of another operation
/// (`GET /employees/export`, not a tool, at its own upstream, for admins).
fn shadowed_config(upstream: &str, export_upstream: &str) -> String {
    format!(
        r#"version: 1
listen: 127.0.0.1:0
roles: [reader, admin]
clients:
  - id: reader-bot
    roles: [reader]
    api_keys: [{{ sha256: {reader} }}]
policies:
  key-required: {{ type: auth, methods: [api_key] }}
  admins: {{ type: roles, allow: [admin] }}
apply: [key-required]
agents: {{ mcp_path: /mcp }}
apis:
  - name: directory
    base_path: /employees
    upstream: {upstream}
    operations:
      - id: exportEmployees
        method: GET
        path: /export
        agent: false
        upstream: {export_upstream}/dump
        apply: [admins]
      - id: getEmployee
        method: GET
        path: /{{id}}
        agent: true
"#,
        reader = sha256_hex(READER_KEY),
    )
}

#[tokio::test]
async fn a_tool_call_reaches_its_own_operation_never_the_one_its_path_spells() {
    let up = Upstream::start().await;
    let export = Upstream::start().await;
    let gw = gateway(&shadowed_config(&up.url(), &export.url())).await;
    let mut mcp = Mcp::new(&gw, READER_KEY);
    mcp.initialize(HANDSHAKE).await;
    let got = mcp.call("getEmployee", json!({"id": "export"})).await;
    assert_eq!(got["isError"], false, "{got}");
    // getEmployee's upstream got it, as getEmployee, with the argument.
    let seen = up.last();
    assert_eq!(seen.uri, "/export");
    assert_eq!(seen.headers["x-tollgate-operation"], "getEmployee");
    // The `agent: false` operation at that path was never reached, nor
    // did its policies judge the call (a 403 `forbidden_role` otherwise).
    assert_eq!(export.count(), 0);
    // Sent over plain HTTP, the same path is the export operation.
    let direct = gw
        .get_with("/employees/export", &[("x-api-key", READER_KEY)])
        .await;
    direct.assert_problem(403, "forbidden_role");
    assert_eq!(export.count(), 0);
    let metrics = gw.server.gateway.load_full().metrics().render(None);
    assert!(metrics.contains(
        r#"tollgate_requests_total{api="directory",operation="getEmployee",client="reader-bot",status="200"} 1"#
    ), "{metrics}");
    gw.shutdown().await;
}

#[tokio::test]
async fn a_rate_limited_call_is_a_tool_error_and_every_call_is_metered() {
    let up = Upstream::start().await;
    let (gw, clock) = start(&up, "", "").await;
    let mut mcp = Mcp::new(&gw, READER_KEY);
    mcp.initialize(HANDSHAKE).await;
    let body = json!({"body": {"name": "Ada"}});
    let first = mcp.call("createEmployee", body.clone()).await;
    assert_eq!(first["isError"], false, "{first}");
    let second = mcp.call("createEmployee", body.clone()).await;
    assert_eq!(tool_problem(&second)["code"], "rate_limited");
    let retry = second["_meta"]["dev.tollgate/http"]["retry_after"]
        .as_u64()
        .expect("retry_after");
    assert!((1..=60).contains(&retry), "{retry}");
    assert_eq!(up.count(), 1);
    clock.advance(Duration::from_secs(60));
    let third = mcp.call("createEmployee", body).await;
    assert_eq!(third["isError"], false, "a minute later: {third}");
    assert_eq!(up.count(), 2);

    // Usage shows the three tool calls, one refused; the MCP requests
    // themselves (initialize, three tools/call) are not governed calls.
    let gateway = gw.server.gateway.load_full();
    let usage = gateway.store().usage_list().await.expect("usage");
    let bot = usage
        .iter()
        .find(|u| u.subject == "reader-bot")
        .expect("reader-bot is metered");
    let count = |field: &str| {
        bot.counts
            .iter()
            .find(|(f, _)| f == field)
            .map_or(0, |(_, n)| *n)
    };
    assert_eq!(count("calls"), 3);
    assert_eq!(count("op:createEmployee:calls"), 3);
    assert_eq!(count("op:createEmployee:rejected:rate_limited"), 1);
    let metrics = gateway.metrics().render(None);
    assert!(metrics.contains(
        r#"tollgate_requests_total{api="directory",operation="createEmployee",client="reader-bot",status="429"} 1"#
    ), "{metrics}");
    assert!(
        metrics.contains(
            r#"tollgate_requests_total{api="",operation="mcp",client="reader-bot",status="200"} 4"#
        ),
        "{metrics}"
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn an_image_answer_is_image_content_and_other_bytes_an_embedded_blob() {
    let up = Upstream::start().await;
    let yaml = format!(
        r#"version: 1
listen: 127.0.0.1:0
agents: {{ mcp_path: /mcp }}
apis:
  - name: files
    base_path: /files
    upstream: {}
    operations:
      - id: getFile
        method: GET
        path: /big/{{n}}
        agent: true
        query_schema:
          properties: {{ h-content-type: {{ type: string }} }}
"#,
        up.url()
    );
    let gw = gateway(&yaml).await;
    let mut mcp = Mcp::new(&gw, READER_KEY);
    mcp.initialize(HANDSHAKE).await;
    // The workflow answers four bytes with the type the call asks for.
    let image = mcp
        .call("getFile", json!({"n": "4", "h-content-type": "image/png"}))
        .await;
    assert_eq!(image["isError"], false, "{image}");
    assert_eq!(
        image["content"],
        json!([{"type": "image", "data": "eHh4eA==", "mimeType": "image/png"}])
    );
    assert_eq!(up.last().uri, "/big/4?h-content-type=image%2Fpng");
    let pdf = mcp
        .call(
            "getFile",
            json!({"n": "3", "h-content-type": "application/pdf; v=1"}),
        )
        .await;
    assert_eq!(pdf["content"][0]["type"], "resource", "{pdf}");
    assert_eq!(pdf["content"][0]["resource"]["blob"], "eHh4");
    assert_eq!(pdf["content"][0]["resource"]["mimeType"], "application/pdf");
    gw.shutdown().await;
}

#[tokio::test]
async fn bad_arguments_are_a_tool_error_the_model_can_fix() {
    let up = Upstream::start().await;
    let (gw, _clock) = start(&up, "", "").await;
    let mut mcp = Mcp::new(&gw, READER_KEY);
    mcp.initialize(HANDSHAKE).await;
    for (tool, args, says) in [
        ("getEmployee", json!({}), "employeeId"),
        ("getEmployee", json!({"employeeId": ".."}), "`..`"),
        ("getEmployee", json!({"employeeId": "a/b"}), "/employeeId"),
        ("listEmployees", json!({"limit": 0}), "/limit"),
        ("createEmployee", json!({"body": {}}), "name"),
    ] {
        let result = mcp.call(tool, args.clone()).await;
        assert_eq!(result["isError"], true, "{tool} {args}");
        let text = result["content"][0]["text"].as_str().expect("text");
        assert!(text.contains(says), "{tool} {args}: {text}");
    }
    assert_eq!(up.count(), 0);
    gw.shutdown().await;
}

// === JSON-RPC errors ===

#[tokio::test]
async fn json_rpc_mistakes_get_their_error_codes() {
    let up = Upstream::start().await;
    let (gw, _clock) = start(&up, "", "").await;
    let mut mcp = Mcp::new(&gw, READER_KEY);
    mcp.initialize(HANDSHAKE).await;
    let error = |got: &Got| (got.status.as_u16(), got.json()["error"]["code"].clone());

    let got = mcp.post("{not json", &[]).await;
    assert_eq!(error(&got), (400, json!(-32700)));
    assert_eq!(got.json()["id"], Value::Null);
    let batch = json!([{"jsonrpc": "2.0", "id": 1, "method": "ping"}]).to_string();
    assert_eq!(error(&mcp.post(&batch, &[]).await), (400, json!(-32600)));
    let no_method = json!({"jsonrpc": "2.0", "id": 3}).to_string();
    assert_eq!(
        error(&mcp.post(&no_method, &[]).await),
        (400, json!(-32600))
    );

    let unknown = mcp.rpc("resources/list", json!({})).await;
    assert_eq!(unknown["error"]["code"], -32601);
    assert_eq!(unknown["id"], 1);
    let nameless = mcp.rpc("tools/call", json!({"arguments": {}})).await;
    assert_eq!(nameless["error"]["code"], -32602);
    let no_such = mcp.rpc("tools/call", json!({"name": "internalOnly"})).await;
    assert_eq!(no_such["error"]["code"], -32602);
    assert!(no_such["error"]["message"]
        .as_str()
        .is_some_and(|m| m.contains("internalOnly")));
    let bad_args = mcp
        .rpc(
            "tools/call",
            json!({"name": "listEmployees", "arguments": [1]}),
        )
        .await;
    assert_eq!(bad_args["error"]["code"], -32602);
    assert_eq!(up.count(), 0);
    gw.shutdown().await;
}

// === the stateless revision (2026-07-28) ===

#[tokio::test]
async fn the_current_revision_is_stateless_and_its_headers_must_match_the_body() {
    let up = Upstream::start().await;
    let (gw, _clock) = start(&up, "", "").await;
    let mcp = Mcp::new(&gw, READER_KEY);

    let got = mcp.modern("server/discover", json!({}), None).await;
    assert_eq!(got.status, 200, "{:?}", got.body);
    assert!(got.header("mcp-session-id").is_none());
    let discover = &got.json()["result"];
    assert_eq!(discover["resultType"], "complete");
    let supported = discover["supportedVersions"].as_array().expect("versions");
    assert!(supported.contains(&json!(MODERN)) && supported.contains(&json!(HANDSHAKE)));
    assert_eq!(
        discover["_meta"]["io.modelcontextprotocol/serverInfo"]["name"],
        "tollgate"
    );

    let got = mcp.modern("tools/list", json!({}), None).await;
    let list = &got.json()["result"];
    assert_eq!(
        names(list),
        ["listEmployees", "getEmployee", "createEmployee"]
    );
    assert_eq!(list["cacheScope"], "private");
    let got = mcp
        .modern(
            "tools/call",
            json!({"name": "getEmployee", "arguments": {"employeeId": "42"}}),
            Some("getEmployee"),
        )
        .await;
    let called = &got.json()["result"];
    assert_eq!(called["isError"], false, "{called}");
    assert_eq!(called["resultType"], "complete");
    assert_eq!(up.last().uri, "/42");

    // Headers that disagree with the body: 400, -32020.
    let got = mcp
        .modern(
            "tools/call",
            json!({"name": "getEmployee", "arguments": {"employeeId": "42"}}),
            Some("listEmployees"),
        )
        .await;
    assert_eq!(
        (got.status.as_u16(), got.json()["error"]["code"].clone()),
        (400, json!(-32020))
    );
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list",
        "params": {"_meta": {"io.modelcontextprotocol/protocolVersion": MODERN}}});
    let got = mcp
        .post(
            &body.to_string(),
            &[
                ("mcp-protocol-version", MODERN),
                ("mcp-method", "tools/call"),
            ],
        )
        .await;
    assert_eq!(got.status, 400);
    assert_eq!(got.json()["error"]["code"], -32020);
    // A revision the server does not speak: 400, -32022, with the list.
    let got = mcp
        .post(
            &body.to_string(),
            &[
                ("mcp-protocol-version", "2099-01-01"),
                ("mcp-method", "tools/list"),
            ],
        )
        .await;
    assert_eq!(got.status, 400);
    let error = &got.json()["error"];
    assert_eq!(error["code"], -32022);
    assert_eq!(error["data"]["requested"], "2099-01-01");
    assert!(error["data"]["supported"]
        .as_array()
        .is_some_and(|s| s.contains(&json!(MODERN))));
    // An unknown method: 404, -32601.
    let got = mcp.modern("prompts/list", json!({}), None).await;
    assert_eq!(got.status, 404);
    assert_eq!(got.json()["error"]["code"], -32601);
    gw.shutdown().await;
}

// === the policies around the endpoint ===

#[tokio::test]
async fn the_endpoint_itself_needs_the_gateway_wide_credential() {
    let up = Upstream::start().await;
    let (gw, _clock) = start(&up, "", "").await;
    let body = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize",
        "params": {"protocolVersion": HANDSHAKE}})
    .to_string();
    let got = gw
        .send(
            Request::post(gw.url("/mcp"))
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from(body)))
                .expect("request"),
        )
        .await;
    got.assert_problem(401, "unauthenticated");
    assert!(got.header("www-authenticate").is_some());
    gw.shutdown().await;
}

#[tokio::test]
async fn gateway_wide_ip_and_abuse_policies_judge_the_endpoint_too() {
    let up = Upstream::start().await;
    let denied = config(&up.url(), "", "").replace(
        "apply: [key-required]",
        "apply: [key-required, { type: ip, deny: [127.0.0.0/8] }]",
    );
    let gw = gateway_with_clock(&denied, ManualClock::new(NOW)).await;
    let mut mcp = Mcp::new(&gw, READER_KEY);
    mcp.initialize(HANDSHAKE)
        .await
        .assert_problem(403, "ip_denied");
    gw.shutdown().await;

    // Guessing session ids is watched like probing paths: the third 404
    // bans the address, and the ban holds for the endpoint as a whole.
    let watched = config(&up.url(), "", "").replace(
        "apply: [key-required]",
        "apply: [{ type: abuse, watch: [404], threshold: 3, window: 1m, ban: 15m }, key-required]",
    );
    let gw = gateway_with_clock(&watched, ManualClock::new(NOW)).await;
    let list = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"}).to_string();
    let mut guesser = Mcp::new(&gw, READER_KEY);
    for i in 0..3 {
        let guess = format!("{i:032x}");
        let got = guesser.post(&list, &[("mcp-session-id", &guess)]).await;
        assert_eq!(got.status, 404);
    }
    guesser
        .initialize(HANDSHAKE)
        .await
        .assert_problem(403, "banned");
    gw.shutdown().await;
}

#[tokio::test]
async fn a_browser_origin_must_be_the_endpoints_own_or_allowed() {
    let up = Upstream::start().await;
    let yaml = config(&up.url(), "", "").replace(
        "agents: { mcp_path: /mcp }",
        "agents: { mcp_path: /mcp, allowed_origins: ['https://console.example.com'] }",
    );
    let gw = gateway_with_clock(&yaml, ManualClock::new(NOW)).await;
    let init = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize",
        "params": {"protocolVersion": HANDSHAKE}})
    .to_string();
    let mcp = Mcp::new(&gw, READER_KEY);
    let own = format!("http://{}", gw.addr);
    for (origin, status) in [
        ("http://evil.example", 403),
        ("null", 403),
        (own.as_str(), 200),
        ("https://console.example.com", 200),
    ] {
        let got = mcp.post(&init, &[("origin", origin)]).await;
        assert_eq!(got.status, status, "{origin}");
    }
    gw.shutdown().await;
}

#[tokio::test]
async fn a_dns_rebinding_page_is_refused_though_its_origin_equals_the_host() {
    let up = Upstream::start().await;
    let (gw, _clock) = start(&up, "", "").await;
    let init = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize",
        "params": {"protocolVersion": HANDSHAKE}})
    .to_string();
    let mcp = Mcp::new(&gw, READER_KEY);
    let port = gw.addr.port();
    // The page at evil.example, its name rebound to 127.0.0.1: the browser
    // sends its own name as the Host and its own origin.
    let evil_host = format!("evil.example:{port}");
    let evil_origin = format!("http://evil.example:{port}");
    let got = mcp
        .post(&init, &[("host", &evil_host), ("origin", &evil_origin)])
        .await;
    assert_eq!(got.status, 403, "{:?}", got.body);
    assert_eq!(got.json()["error"]["code"], -32600);
    // Even without an Origin, a loopback listener answers loopback names only.
    assert_eq!(mcp.post(&init, &[("host", &evil_host)]).await.status, 403);
    let local = format!("localhost:{port}");
    let local_origin = format!("http://localhost:{port}");
    let got = mcp
        .post(&init, &[("host", &local), ("origin", &local_origin)])
        .await;
    assert_eq!(got.status, 200, "{:?}", got.body);
    assert_eq!(up.count(), 0);
    gw.shutdown().await;

    // Hosts listed: those, and pages on them; nothing else, loopback neither.
    let yaml = config(&up.url(), "", "").replace(
        "agents: { mcp_path: /mcp }",
        "agents: { mcp_path: /mcp, allowed_hosts: [mcp.example.com] }",
    );
    let gw = gateway_with_clock(&yaml, ManualClock::new(NOW)).await;
    let mcp = Mcp::new(&gw, READER_KEY);
    for (host, origin, status) in [
        ("mcp.example.com", Some("https://mcp.example.com"), 200),
        ("mcp.example.com", Some("https://other.example.com"), 403),
        ("mcp.example.com", Some("http://mcp.example.com"), 200),
        ("mcp.example.com", None, 200),
        ("localhost", None, 403),
        ("evil.example", Some("http://evil.example"), 403),
    ] {
        let mut extra = vec![("host", host)];
        extra.extend(origin.map(|o| ("origin", o)));
        let got = mcp.post(&init, &extra).await;
        assert_eq!(got.status, status, "{host} {origin:?}: {:?}", got.body);
    }
    gw.shutdown().await;
}

#[tokio::test]
async fn mcp_requests_are_counted_by_gateway_wide_rate_limits_once_per_call() {
    let up = Upstream::start().await;
    let yaml = config(&up.url(), "", "")
        .replace(
            "policies:\n",
            "policies:\n  three-a-minute: { type: rate_limit, limit: 3, window: 1m, key: client }\n",
        )
        .replace("apply: [key-required]", "apply: [key-required, three-a-minute]");
    let clock = ManualClock::new(NOW);
    let gw = gateway_with_clock(&yaml, clock.clone()).await;
    let mut mcp = Mcp::new(&gw, READER_KEY);
    assert_eq!(mcp.initialize(HANDSHAKE).await.status, 200);
    let listed = mcp.call("listEmployees", json!({})).await;
    assert_eq!(
        listed["isError"], false,
        "one token per tool call: {listed}"
    );
    assert_eq!(mcp.tool_names().await.len(), 3);
    // The fourth MCP request of the minute is refused before it runs.
    let call = json!({"jsonrpc": "2.0", "id": 5, "method": "tools/call",
        "params": {"name": "listEmployees", "arguments": {}}})
    .to_string();
    let got = mcp.post(&call, &[]).await;
    got.assert_problem(429, "rate_limited");
    assert!(got.header("retry-after").is_some());
    assert_eq!(up.count(), 1);
    // Plain HTTP shares the bucket.
    gw.get_with("/employees/", &[("x-api-key", READER_KEY)])
        .await
        .assert_problem(429, "rate_limited");
    clock.advance(Duration::from_secs(20));
    let listed = mcp.call("listEmployees", json!({})).await;
    assert_eq!(listed["isError"], false, "{listed}");
    assert_eq!(up.count(), 2);
    gw.shutdown().await;
}

// === config ===

fn compile_errors(yaml: &str) -> String {
    match compile(
        std::path::Path::new("tollgate-test.yaml"),
        yaml,
        tollgate::clock::SystemClock::shared(),
    ) {
        Ok(_) => panic!("the config compiled"),
        Err(errors) => errors.join("\n"),
    }
}

#[test]
fn the_mcp_path_may_not_shadow_an_operation_and_tools_need_good_names() {
    let yaml = config("http://127.0.0.1:9", "", "").replace(
        "agents: { mcp_path: /mcp }",
        "agents: { mcp_path: /employees/7 }",
    );
    let errors = compile_errors(&yaml);
    assert!(
        errors.contains(
            "agents.mcp_path: `/employees/7` is also the path of operation `getEmployee`"
        ),
        "{errors}"
    );
    assert!(errors.starts_with("tollgate-test.yaml:"), "{errors}");

    let yaml =
        config("http://127.0.0.1:9", "", "").replace("id: createEmployee", "id: create.employee");
    let errors = compile_errors(&yaml);
    assert!(
        errors.contains("apis[0].operations[2].id: `create.employee` cannot name an agent tool"),
        "{errors}"
    );

    let yaml = config("http://127.0.0.1:9", "", "").replace(
        "department: { type: string }",
        "department: { type: object }",
    );
    let errors = compile_errors(&yaml);
    assert!(
        errors.contains("apis[0].operations[0].query_schema"),
        "{errors}"
    );
}

#[tokio::test]
async fn an_api_can_expose_every_operation_and_one_can_opt_out() {
    let up = Upstream::start().await;
    let yaml = config(&up.url(), "", "")
        .replace(
            "    base_path: /employees\n",
            "    base_path: /employees\n    agents: expose\n",
        )
        .replace(
            "        summary: List employees\n        agent: true\n",
            "        summary: List employees\n        agent: false\n",
        );
    let gw = gateway_with_clock(&yaml, ManualClock::new(NOW)).await;
    let mut mcp = Mcp::new(&gw, READER_KEY);
    mcp.initialize(HANDSHAKE).await;
    assert_eq!(
        mcp.tool_names().await,
        ["getEmployee", "createEmployee", "internalOnly"]
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn the_openapi_export_does_not_list_the_mcp_endpoint() {
    let yaml = config("http://127.0.0.1:9", "", "");
    let loaded = tollgate::config::load_str(std::path::Path::new("t.yaml"), &yaml).expect("load");
    let doc = tollgate::openapi::export::export(&loaded.config);
    let paths: Vec<&String> = doc["paths"].as_object().expect("paths").keys().collect();
    assert_eq!(
        paths,
        [
            "/employees/",
            "/employees/{employeeId}",
            "/employees/internal"
        ]
    );
}

// === `tollgate tools` ===

#[test]
fn tollgate_tools_prints_openai_functions_and_the_mcp_list() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("tollgate.yaml");
    std::fs::write(&file, config("http://127.0.0.1:9", "", "")).expect("write");
    let run = |format: &str| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_tollgate"))
            .args([
                "tools",
                "-c",
                &file.display().to_string(),
                "--format",
                format,
            ])
            .output()
            .expect("run tollgate");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<Value>(&out.stdout).expect("JSON on stdout")
    };
    let openai = run("openai");
    let functions = openai.as_array().expect("a list");
    assert_eq!(functions.len(), 3);
    assert_eq!(functions[1]["type"], "function");
    assert_eq!(functions[1]["function"]["name"], "getEmployee");
    assert_eq!(
        functions[1]["function"]["description"],
        "Look up one employee"
    );
    assert_eq!(
        functions[1]["function"]["parameters"]["required"],
        json!(["employeeId"])
    );
    let mcp = run("mcp");
    assert_eq!(
        names(&mcp),
        ["listEmployees", "getEmployee", "createEmployee"]
    );
    assert_eq!(
        mcp["tools"][1]["outputSchema"]["required"],
        json!(["method"])
    );
}

// === a stock MCP client ===

/// The Python MCP SDK (PyPI `mcp`) connects over Streamable HTTP in both
/// eras, lists and calls tools, and sees refusals as tool errors.
#[tokio::test]
async fn the_python_mcp_sdk_lists_and_calls_tools_end_to_end() {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/mcp/client_test.py");
    let has_sdk = std::process::Command::new("python3")
        .args(["-c", "import mcp"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_sdk {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI needs python3 with the `mcp` package (pip install -r tests/mcp/requirements.txt)"
        );
        eprintln!("SKIPPED: python3 with the `mcp` package is not installed");
        return;
    }
    let up = Upstream::start().await;
    let (gw, clock) = start(&up, "", "").await;
    let url = gw.url("/mcp");
    for mode in ["legacy", "auto"] {
        let before = up.count();
        let out = tokio::process::Command::new("python3")
            .arg(&script)
            .args([&url, READER_KEY, OUTSIDER_KEY, mode])
            .output()
            .await
            .expect("run the client");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{mode}:\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout.contains(&format!("ok {mode}")), "{stdout}");
        // The client's calls reached the workflow: getEmployee 42, and one
        // createEmployee (the second was refused before the upstream).
        let seen: Vec<String> = up.seen()[before..].iter().map(|s| s.uri.clone()).collect();
        assert_eq!(seen, ["/42", "/"], "{mode}");
        // The next mode starts with a fresh minute of createEmployee.
        clock.advance(Duration::from_secs(60));
    }
    gw.shutdown().await;
}
