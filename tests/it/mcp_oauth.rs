//! Agents that sign in (DESIGN §9): the MCP endpoint as an OAuth 2.1
//! resource server against the real gateway and a real upstream — RFC 9728
//! metadata, the 401 challenge, tokens for another audience, expired or
//! from another issuer refused, scopes mapped to roles and tools, the 403
//! step-up, and the token never reaching the upstream. Tokens are signed
//! here with the test key; `tests/oauth/` runs a real authorization server
//! and the Python SDK's OAuth client end to end.

use crate::common::*;
use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use tollgate::clock::ManualClock;

/// 2027-01-15T08:00:00Z.
const NOW_SECS: u64 = 1_800_000_000;
const ISSUER: &str = "https://idp.example.com";
const MODERN: &str = "2026-07-28";
const KEY: &str = "tk_reader_0123456789";

fn fixture(name: &str) -> String {
    format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))
}

fn config(upstream: &str) -> String {
    format!(
        r#"version: 1
listen: 127.0.0.1:0
roles: [reader, writer]
clients:
  - id: key-holder
    roles: [reader, writer]
    api_keys: [{{ sha256: {key} }}]
policies:
  key-required: {{ type: auth, methods: [api_key] }}
  readers: {{ type: roles, allow: [reader] }}
  writers: {{ type: roles, allow: [writer] }}
apply: [key-required]
agents:
  mcp_path: /mcp
  oauth:
    authorization_servers: [{ISSUER}]
    public_key_file: {pem}
    scopes: {{ "directory:read": [reader], "directory:write": [writer] }}
    tool_scopes: {{ createEmployee: ["directory:write"] }}
    initial_scopes: ["directory:read"]
apis:
  - name: directory
    base_path: /employees
    upstream: {upstream}
    operations:
      - id: listEmployees
        method: GET
        path: /
        agent: true
        apply: [readers]
        query_schema: {{ properties: {{ department: {{ type: string }} }} }}
      - id: createEmployee
        method: POST
        path: /
        agent: true
        apply: [writers]
"#,
        key = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(KEY.as_bytes())),
        pem = fixture("jwt-rsa-public.pem"),
    )
}

/// A token signed by the test key, with `claims` over the defaults.
fn token(gw: &TestGateway, claims: Value) -> String {
    let mut all = json!({
        "iss": ISSUER,
        "sub": "agent-7",
        "aud": format!("http://{}/mcp", gw.addr),
        "scope": "directory:read",
        "iat": NOW_SECS,
        "exp": NOW_SECS + 3600,
    });
    if let (Some(all), Some(over)) = (all.as_object_mut(), claims.as_object()) {
        for (k, v) in over {
            if v.is_null() {
                all.remove(k);
            } else {
                all.insert(k.clone(), v.clone());
            }
        }
    }
    let pem = std::fs::read(fixture("jwt-rsa-private.pem")).expect("private key");
    jsonwebtoken::encode(
        &Header::new(Algorithm::RS256),
        &all,
        &EncodingKey::from_rsa_pem(&pem).expect("rsa key"),
    )
    .expect("sign")
}

/// A stateless (2026-07-28) request with `authorization` (if any).
async fn rpc(gw: &TestGateway, auth: Option<&str>, method: &str, params: Value) -> Got {
    let mut params = params;
    params["_meta"] = json!({ "io.modelcontextprotocol/protocolVersion": MODERN });
    let name = params["name"].as_str().map(str::to_string);
    let mut req = Request::post(gw.url("/mcp"))
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", MODERN)
        .header("mcp-method", method);
    if let Some(name) = name {
        req = req.header("mcp-name", name);
    }
    if let Some(auth) = auth {
        req = req.header("authorization", auth);
    }
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
    gw.send(
        req.body(Full::new(Bytes::from(body.to_string())))
            .expect("request"),
    )
    .await
}

async fn start(up: &Upstream) -> TestGateway {
    gateway_with_clock(
        &config(&up.url()),
        ManualClock::new(NOW_SECS * 1_000_000_000),
    )
    .await
}

#[tokio::test]
async fn the_protected_resource_metadata_names_this_resource_at_both_well_known_paths() {
    let up = Upstream::start().await;
    let gw = start(&up).await;
    for path in [
        "/.well-known/oauth-protected-resource/mcp",
        "/.well-known/oauth-protected-resource",
    ] {
        let got = gw.get(path).await;
        assert_eq!(got.status, 200, "{path}: {:?}", got.body);
        let doc = got.json();
        assert_eq!(doc["resource"], format!("http://{}/mcp", gw.addr));
        assert_eq!(doc["authorization_servers"], json!([ISSUER]));
        assert_eq!(
            doc["scopes_supported"],
            json!(["directory:read", "directory:write"])
        );
        assert_eq!(doc["bearer_methods_supported"], json!(["header"]));
    }
    assert_eq!(
        gw.get("/.well-known/oauth-protected-resource/other")
            .await
            .status,
        404
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn without_a_token_the_401_names_the_metadata_and_the_first_scopes() {
    let up = Upstream::start().await;
    let gw = start(&up).await;
    let got = rpc(&gw, None, "tools/list", json!({})).await;
    got.assert_problem(401, "unauthenticated");
    let challenge = got.header("www-authenticate").expect("challenge");
    assert_eq!(
        challenge,
        format!(
            "Bearer resource_metadata=\"http://{}/.well-known/oauth-protected-resource/mcp\", \
             scope=\"directory:read\"",
            gw.addr
        )
    );
    // An API key is no token here, even a valid one.
    let got = rpc(&gw, Some(&format!("Bearer {KEY}")), "tools/list", json!({})).await;
    got.assert_problem(401, "invalid_credentials");
    assert_eq!(up.count(), 0);
    gw.shutdown().await;
}

#[tokio::test]
async fn tokens_for_another_audience_expired_or_from_another_issuer_are_refused() {
    let up = Upstream::start().await;
    let gw = start(&up).await;
    for (what, claims) in [
        (
            "another audience",
            json!({"aud": "https://other.example.com/mcp"}),
        ),
        ("no audience", json!({"aud": null})),
        ("expired", json!({"exp": NOW_SECS - 120})),
        ("another issuer", json!({"iss": "https://evil.example.com"})),
        ("no issuer", json!({"iss": null})),
    ] {
        let bearer = format!("Bearer {}", token(&gw, claims));
        let got = rpc(&gw, Some(&bearer), "tools/list", json!({})).await;
        got.assert_problem(401, "invalid_credentials");
        let challenge = got.header("www-authenticate").unwrap_or("");
        assert!(
            challenge.starts_with("Bearer error=\"invalid_token\"")
                && challenge.contains("resource_metadata=\"http://"),
            "{what}: {challenge}"
        );
    }
    assert_eq!(up.count(), 0);
    gw.shutdown().await;
}

#[tokio::test]
async fn scopes_decide_the_tools_listed_and_a_missing_one_is_a_403_to_step_up() {
    let up = Upstream::start().await;
    let gw = start(&up).await;
    let read = format!("Bearer {}", token(&gw, json!({})));
    let got = rpc(&gw, Some(&read), "tools/list", json!({})).await;
    assert_eq!(got.status, 200, "{:?}", got.body);
    let listed = got.json();
    let names: Vec<&str> = listed["result"]["tools"]
        .as_array()
        .expect("tools")
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    assert_eq!(names, ["listEmployees"]);

    let got = rpc(
        &gw,
        Some(&read),
        "tools/call",
        json!({"name": "listEmployees"}),
    )
    .await;
    assert_eq!(got.status, 200, "{:?}", got.body);
    assert_eq!(got.json()["result"]["isError"], false, "{:?}", got.body);
    let seen = up.last();
    assert_eq!(seen.headers["x-tollgate-client"], "agent-7");
    assert!(
        seen.headers.get("authorization").is_none(),
        "the token went upstream"
    );

    let got = rpc(
        &gw,
        Some(&read),
        "tools/call",
        json!({"name": "createEmployee", "arguments": {"body": {}}}),
    )
    .await;
    got.assert_problem(403, "insufficient_scope");
    let challenge = got.header("www-authenticate").unwrap_or("");
    assert!(
        challenge.starts_with(
            "Bearer error=\"insufficient_scope\", scope=\"directory:read directory:write\""
        ),
        "{challenge}"
    );
    assert_eq!(up.count(), 1);

    let write = format!(
        "Bearer {}",
        token(&gw, json!({"scope": "directory:read directory:write"}))
    );
    let got = rpc(
        &gw,
        Some(&write),
        "tools/call",
        json!({"name": "createEmployee", "arguments": {"body": {}}}),
    )
    .await;
    assert_eq!(got.json()["result"]["isError"], false, "{:?}", got.body);
    let seen = up.last();
    assert_eq!(seen.method, http::Method::POST);
    assert_eq!(seen.headers["x-tollgate-client"], "agent-7");
    gw.shutdown().await;
}

/// The authorization server of `tests/oauth/server.mjs`, running until
/// dropped.
struct AuthorizationServer {
    child: tokio::process::Child,
    issuer: String,
}

impl AuthorizationServer {
    /// Started, or why not (node or `npm ci` missing).
    async fn start() -> Result<AuthorizationServer, String> {
        use tokio::io::AsyncBufReadExt;
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/oauth");
        if !dir.join("node_modules/oidc-provider").is_dir() {
            return Err("tests/oauth has no node_modules (run `npm ci` there)".into());
        }
        let mut child = tokio::process::Command::new("node")
            .arg("server.mjs")
            .current_dir(&dir)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("node: {e}"))?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        let line = tokio::time::timeout(std::time::Duration::from_secs(30), lines.next_line())
            .await
            .map_err(|_| "the authorization server did not start within 30s".to_string())?
            .map_err(|e| e.to_string())?
            .ok_or("the authorization server exited")?;
        let started: Value = serde_json::from_str(&line).map_err(|e| format!("{e}: {line}"))?;
        let issuer = started["issuer"].as_str().ok_or("no issuer")?.to_string();
        // The provider logs to stdout too: keep reading, or it dies of EPIPE.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(AuthorizationServer { child, issuer })
    }
}

impl Drop for AuthorizationServer {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

#[tokio::test]
async fn a_stock_mcp_client_signs_in_at_a_real_authorization_server_and_steps_up() {
    let required = std::env::var_os("TOLLGATE_REQUIRE_OIDC").is_some();
    let has_node = std::process::Command::new("node")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    let has_sdk = std::process::Command::new("python3")
        .args(["-c", "import mcp.client.auth"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !(has_node && has_sdk) {
        assert!(
            !required,
            "TOLLGATE_REQUIRE_OIDC is set: this test needs node (tests/oauth: npm ci) and python3 \
             with the `mcp` package"
        );
        eprintln!("SKIPPED: node or python3 with the `mcp` package is not installed");
        return;
    }
    let server = match AuthorizationServer::start().await {
        Ok(server) => server,
        Err(why) => {
            assert!(!required, "TOLLGATE_REQUIRE_OIDC is set: {why}");
            eprintln!("SKIPPED: {why}");
            return;
        }
    };
    let up = Upstream::start().await;
    let yaml = config(&up.url()).replace(
        &format!(
            "authorization_servers: [{ISSUER}]\n    public_key_file: {}",
            fixture("jwt-rsa-public.pem")
        ),
        &format!(
            "authorization_servers: [{issuer}]\n    jwks_url: {issuer}/jwks",
            issuer = server.issuer
        ),
    );
    assert!(yaml.contains("jwks_url"), "{yaml}");
    let gw = gateway(&yaml).await;
    let url = gw.url("/mcp");
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/oauth/client_test.py");
    for mode in ["legacy", "auto"] {
        let before = up.count();
        let out = tokio::process::Command::new("python3")
            .arg(&script)
            .args([&url, mode])
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
        // What reached the workflow: the list and, after the step-up, one
        // create, as the token's subject, never with the token.
        let seen = &up.seen()[before..];
        let calls: Vec<(String, String)> = seen
            .iter()
            .map(|s| (s.method.to_string(), s.uri.clone()))
            .collect();
        assert_eq!(
            calls,
            [
                ("GET".to_string(), "/?department=R%26D".to_string()),
                ("POST".to_string(), "/".to_string())
            ],
            "{mode}"
        );
        for s in seen {
            assert_eq!(s.headers["x-tollgate-client"], "agent-7");
            assert!(s.headers.get("authorization").is_none());
        }
    }
    gw.shutdown().await;
    drop(server);
}

/// A real RFC 7662 endpoint on 127.0.0.1: it answers for the tokens it
/// was given (`token` -> its claims, `active: true` added), every other
/// one `{"active": false}`; it records each call's credentials and token.
struct IntrospectionServer {
    addr: std::net::SocketAddr,
    calls: std::sync::Arc<std::sync::Mutex<Vec<(String, String)>>>,
    task: tokio::task::JoinHandle<()>,
}

impl IntrospectionServer {
    async fn start(tokens: Vec<(&'static str, Value)>) -> IntrospectionServer {
        use http_body_util::BodyExt;
        use std::sync::{Arc, Mutex};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let calls = Arc::new(Mutex::new(Vec::new()));
        let (tokens, recorded) = (Arc::new(tokens), calls.clone());
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (tokens, recorded) = (tokens.clone(), recorded.clone());
                tokio::spawn(async move {
                    let svc =
                        hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                            let (tokens, recorded) = (tokens.clone(), recorded.clone());
                            async move {
                                let basic = req
                                    .headers()
                                    .get("authorization")
                                    .and_then(|v| v.to_str().ok())
                                    .unwrap_or("")
                                    .to_string();
                                let form =
                                    req.into_body().collect().await.expect("body").to_bytes();
                                let form = String::from_utf8_lossy(&form).to_string();
                                let token = form
                                    .split('&')
                                    .find_map(|p| p.strip_prefix("token="))
                                    .map(|t| {
                                        percent_encoding::percent_decode_str(t)
                                            .decode_utf8_lossy()
                                            .to_string()
                                    })
                                    .unwrap_or_default();
                                recorded.lock().expect("lock").push((basic, token.clone()));
                                let answer = match tokens.iter().find(|(t, _)| *t == token) {
                                    Some((_, claims)) => {
                                        let mut claims = claims.clone();
                                        claims["active"] = json!(true);
                                        claims
                                    }
                                    None => json!({"active": false}),
                                };
                                let mut r =
                                    http::Response::new(Full::new(Bytes::from(answer.to_string())));
                                r.headers_mut().insert(
                                    "content-type",
                                    http::HeaderValue::from_static("application/json"),
                                );
                                Ok::<_, std::convert::Infallible>(r)
                            }
                        });
                    let _ = hyper_util::server::conn::auto::Builder::new(
                        hyper_util::rt::TokioExecutor::new(),
                    )
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                    .await;
                });
            }
        });
        IntrospectionServer { addr, calls, task }
    }
}

impl Drop for IntrospectionServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[tokio::test]
async fn opaque_tokens_are_introspected_under_the_same_rules_and_the_answer_is_cached() {
    use base64::Engine as _;
    let up = Upstream::start().await;
    // The resource is fixed here: the introspection answers are made
    // before the gateway's port is known.
    let resource = "https://mcp.example.com/mcp";
    let claims = |extra: Value| {
        let mut c = json!({
            "iss": ISSUER, "sub": "agent-9", "aud": resource,
            "scope": "directory:read", "exp": NOW_SECS + 3600,
        });
        if let (Some(c), Some(extra)) = (c.as_object_mut(), extra.as_object()) {
            c.extend(extra.clone());
        }
        c
    };
    let idp = IntrospectionServer::start(vec![
        ("opaque-read", claims(json!({}))),
        (
            "opaque-elsewhere",
            claims(json!({"aud": "https://other.example.com/mcp"})),
        ),
        ("opaque-expired", claims(json!({"exp": NOW_SECS - 1}))),
    ])
    .await;
    std::env::set_var("TOLLGATE_TEST_INTROSPECTION_SECRET", "s3cret-introspection");
    let yaml = config(&up.url()).replace(
        &format!("    public_key_file: {}\n", fixture("jwt-rsa-public.pem")),
        &format!(
            "    resource: {resource}\n    introspection:\n      url: http://{}/introspect\n      \
             client_id: tollgate\n      client_secret_env: TOLLGATE_TEST_INTROSPECTION_SECRET\n      \
             cache: 30s\n",
            idp.addr
        ),
    );
    assert!(yaml.contains("introspection"), "{yaml}");
    let clock = ManualClock::new(NOW_SECS * 1_000_000_000);
    let gw = gateway_with_clock(&yaml, clock.clone()).await;

    let got = rpc(
        &gw,
        Some("Bearer opaque-read"),
        "tools/call",
        json!({"name": "listEmployees"}),
    )
    .await;
    assert_eq!(got.status, 200, "{:?}", got.body);
    assert_eq!(got.json()["result"]["isError"], false, "{:?}", got.body);
    assert_eq!(up.last().headers["x-tollgate-client"], "agent-9");
    // Asked once, as this resource server, for that token; then cached.
    let expected_basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("tollgate:s3cret-introspection")
    );
    let calls = idp.calls.lock().map(|c| c.clone()).unwrap_or_default();
    assert_eq!(calls, [(expected_basic, "opaque-read".to_string())]);
    let got = rpc(&gw, Some("Bearer opaque-read"), "tools/list", json!({})).await;
    assert_eq!(got.status, 200);
    assert_eq!(idp.calls.lock().map(|c| c.len()).unwrap_or(0), 1, "cached");
    clock.advance(std::time::Duration::from_secs(31));
    let got = rpc(&gw, Some("Bearer opaque-read"), "tools/list", json!({})).await;
    assert_eq!(got.status, 200);
    assert_eq!(
        idp.calls.lock().map(|c| c.len()).unwrap_or(0),
        2,
        "asked again after 30s"
    );

    for token in ["opaque-elsewhere", "opaque-expired", "opaque-unknown"] {
        let got = rpc(
            &gw,
            Some(&format!("Bearer {token}")),
            "tools/list",
            json!({}),
        )
        .await;
        got.assert_problem(401, "invalid_credentials");
        let challenge = got.header("www-authenticate").unwrap_or("");
        assert!(
            challenge.contains(
                "resource_metadata=\"https://mcp.example.com/.well-known/oauth-protected-resource/mcp\""
            ),
            "{token}: {challenge}"
        );
    }
    assert_eq!(up.count(), 1);
    gw.shutdown().await;
}

#[test]
fn oauth_mistakes_are_reported_at_their_file_line_and_column() {
    let yaml = config("http://127.0.0.1:9")
        .replace(
            &format!("authorization_servers: [{ISSUER}]"),
            "authorization_servers: [http://idp.example.com]",
        )
        .replace(
            r#""directory:write": [writer]"#,
            r#""directory:write": [admin]"#,
        )
        .replace(
            "tool_scopes: { createEmployee:",
            "tool_scopes: { deleteEverything:",
        );
    let errors = match compile(
        std::path::Path::new("tollgate-test.yaml"),
        &yaml,
        tollgate::clock::SystemClock::shared(),
    ) {
        Ok(_) => panic!("the config compiled"),
        Err(errors) => errors.join("\n"),
    };
    let line = |needle: &str| {
        yaml.lines()
            .position(|l| l.contains(needle))
            .map(|i| i + 1)
            .unwrap_or_else(|| panic!("{needle} not in the config"))
    };
    for (needle, says) in [
        (
            "authorization_servers:",
            "plain http only from a loopback address",
        ),
        (
            "\"directory:write\": [admin]",
            "role `admin` is not declared",
        ),
        ("tool_scopes:", "`deleteEverything` is not an agent tool"),
    ] {
        let at = format!("tollgate-test.yaml:{}:", line(needle));
        assert!(
            errors
                .lines()
                .any(|e| e.starts_with(&at) && e.contains(says)),
            "{at} {says}:\n{errors}"
        );
    }
    let no_keys = config("http://127.0.0.1:9").replace(
        &format!("    public_key_file: {}\n", fixture("jwt-rsa-public.pem")),
        "",
    );
    let errors = match compile(
        std::path::Path::new("tollgate-test.yaml"),
        &no_keys,
        tollgate::clock::SystemClock::shared(),
    ) {
        Ok(_) => panic!("the config compiled"),
        Err(errors) => errors.join("\n"),
    };
    assert!(
        errors.contains("agents.oauth") || errors.contains("oauth"),
        "{errors}"
    );
    assert!(errors.contains("introspection"), "{errors}");
}

#[tokio::test]
async fn the_resource_comes_from_forwarded_headers_only_through_a_trusted_proxy() {
    let up = Upstream::start().await;
    let forwarded = [
        ("x-forwarded-host", "mcp.example.com"),
        ("x-forwarded-proto", "https"),
    ];
    let untrusted = start(&up).await;
    let got = untrusted
        .get_with("/.well-known/oauth-protected-resource/mcp", &forwarded)
        .await;
    assert_eq!(
        got.json()["resource"],
        format!("http://{}/mcp", untrusted.addr),
        "a caller cannot name the resource"
    );
    untrusted.shutdown().await;
    let yaml = config(&up.url()).replace(
        "listen: 127.0.0.1:0\n",
        "listen: 127.0.0.1:0\ntrusted_proxies: [127.0.0.1/32]\n",
    );
    let behind_proxy = gateway(&yaml).await;
    let got = behind_proxy
        .get_with("/.well-known/oauth-protected-resource/mcp", &forwarded)
        .await;
    assert_eq!(got.json()["resource"], "https://mcp.example.com/mcp");
    let got = rpc(&behind_proxy, None, "tools/list", json!({})).await;
    assert_eq!(got.status, 401);
    // Without the proxy's headers, the 401 names the gateway's own address.
    assert!(got
        .header("www-authenticate")
        .is_some_and(|c| c.contains(&format!("\"http://{}/.well-known", behind_proxy.addr))));
    behind_proxy.shutdown().await;
}
