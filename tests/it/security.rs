//! The attack suite: hostile requests against a real gateway on loopback.
//! Every case asserts the exact answer (status and problem `code`) and
//! what, if anything, reached the upstream. Raw TCP wherever a client
//! library would tidy the attack away (paths, framing, header case).
//! Upstream faults at the end: an upstream that breaks, hangs or lies.

use crate::common::*;
use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::json;
use sha2::{Digest, Sha256};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const KEY: &str = "tk_sec_ops_console_0123456789";

fn fixture(name: &str) -> String {
    format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// A site with an open tree (`/public/...`), an admin area behind an API
/// key, an upload, and a schema-checked (so buffered) operation.
fn site(upstream: &str, extra: &str) -> String {
    format!(
        r#"version: 1
listen: 127.0.0.1:0
{extra}
roles: [admin]
clients:
  - id: ops
    roles: [admin]
    api_keys: [{{ sha256: {hash} }}]
policies:
  key-required: {{ type: auth, methods: [api_key] }}
apis:
  - name: site
    upstream: {upstream}
    operations:
      - {{ id: publicFiles, method: GET, path: "/public/{{*rest}}" }}
      - {{ id: admin, method: GET, path: /admin, apply: [key-required] }}
      - {{ id: adminTree, method: GET, path: "/admin/{{*rest}}", apply: [key-required] }}
      - {{ id: upload, method: POST, path: /upload }}
      - id: validated
        method: POST
        path: /validated
        request_schema: {{ type: object }}
"#,
        hash = hex::encode(Sha256::digest(KEY.as_bytes())),
    )
}

/// The first answer read from a raw connection, and whether the gateway
/// closed the connection after it.
#[derive(Debug)]
struct Raw {
    status: u16,
    head: String,
    body: String,
    closed: bool,
    /// Everything read, for the message of a failed assertion.
    all: String,
}

impl Raw {
    fn code(&self) -> String {
        serde_json::from_str::<serde_json::Value>(&self.body)
            .map(|j| j["code"].as_str().unwrap_or("").to_string())
            .unwrap_or_default()
    }

    /// Asserts a problem+json answer with this status and code.
    fn assert_problem(&self, status: u16, code: &str) {
        assert_eq!(
            (self.status, self.code().as_str()),
            (status, code),
            "{}",
            self.all
        );
        assert!(
            self.head.contains("application/problem+json"),
            "{}",
            self.all
        );
    }

    fn responses(&self) -> usize {
        self.all.matches("HTTP/1.1 ").count()
    }
}

/// Sends raw bytes and reads until the gateway closes the connection or
/// has been quiet for `quiet`.
async fn raw_with(addr: SocketAddr, request: &[u8], quiet: Duration) -> Raw {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(request).await.expect("write");
    read_reply(&mut stream, quiet).await
}

async fn raw(addr: SocketAddr, request: &str) -> Raw {
    raw_with(addr, request.as_bytes(), Duration::from_secs(2)).await
}

async fn read_reply(stream: &mut TcpStream, quiet: Duration) -> Raw {
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    let mut closed = false;
    loop {
        match tokio::time::timeout(quiet, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                closed = true;
                break;
            }
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            Err(_) => break,
        }
    }
    let all = String::from_utf8_lossy(&out).into_owned();
    let (head, body) = all.split_once("\r\n\r\n").unwrap_or((&all, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    // The first answer's body only (the gateway's own answers carry a
    // Content-Length).
    let len = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse::<usize>().ok())?
        })
        .unwrap_or(body.len())
        .min(body.len());
    Raw {
        status,
        head: head.to_string(),
        body: body[..len].to_string(),
        closed,
        all,
    }
}

fn get(path: &str, headers: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: gw\r\n{headers}Connection: close\r\n\r\n")
}

// === paths ===

#[tokio::test]
async fn path_tricks_are_judged_as_exactly_the_path_the_upstream_receives() {
    let up = Upstream::start().await;
    let gw = gateway(&site(&up.url(), "")).await;
    // Each resolves to the admin area: judged there (401 without the key),
    // and with the key the upstream receives the resolved path.
    for (path, resolved) in [
        ("/public/../admin", "/admin"),
        ("//admin", "/admin"),
        ("/public/%2e%2e/admin", "/admin"),
        ("/public/.%2E/admin", "/admin"),
        ("/public/x/../../admin", "/admin"),
        ("/public/./../admin/./users", "/admin/users"),
        ("/public/%2E%2E/%61dmin/users", "/admin/users"),
        ("/public/../../../../admin/users", "/admin/users"),
        ("/public;x/../admin", "/admin"),
    ] {
        let before = up.count();
        raw(gw.addr, &get(path, ""))
            .await
            .assert_problem(401, "unauthenticated");
        assert_eq!(
            up.count(),
            before,
            "{path} reached the upstream without a key"
        );
        let with_key = raw(gw.addr, &get(path, &format!("X-API-Key: {KEY}\r\n"))).await;
        assert_eq!(with_key.status, 200, "{path}: {}", with_key.all);
        assert_eq!(up.last().uri, resolved, "{path}");
        assert_eq!(up.last().headers["x-tollgate-client"], "ops");
    }
    gw.shutdown().await;
}

#[tokio::test]
async fn paths_that_only_look_like_the_admin_area_are_not_routed_there() {
    let up = Upstream::start().await;
    let gw = gateway(&site(&up.url(), "")).await;
    // Matching is case-sensitive and exact: none of these is `/admin`
    // (`/admin/.` is `/admin/`, which no operation publishes).
    for path in [
        "/ADMIN",
        "/Admin/users",
        "/admin;x",
        "/admin.",
        "/admin%2e",
        "/admin%20",
        "/admin/.",
    ] {
        raw(gw.addr, &get(path, ""))
            .await
            .assert_problem(404, "route_not_found");
    }
    assert_eq!(up.count(), 0);
    gw.shutdown().await;
}

#[tokio::test]
async fn paths_upstreams_would_read_differently_are_refused_as_invalid_path() {
    let up = Upstream::start().await;
    let gw = gateway(&site(&up.url(), "")).await;
    for path in [
        // Encoded separators: a `/` or `\` to some upstreams, not to us.
        "/public/..%2fadmin",
        "/public/%2e%2e%2Fadmin",
        "/public/..%5cadmin",
        "/public/..\\admin",
        // Servlet containers drop `;params` before resolving `..`.
        "/public/..;/admin",
        "/public/.;/admin",
        "/public/%2e%2e;x/admin",
        "/public/..%3B/admin",
        // Overlong UTF-8: `%c0%af` is `/` and `%c0%ae` is `.` to a lax decoder.
        "/public/..%c0%afadmin",
        "/public/%c0%ae%c0%ae/admin",
        "/public/%e0%80%af",
        "/public/%ff",
        // NUL, broken escapes.
        "/public/%00",
        "/public/admin%00.txt",
        "/public/%zz",
        "/public/%4",
    ] {
        let reply = raw(gw.addr, &get(path, "")).await;
        reply.assert_problem(400, "invalid_path");
    }
    assert_eq!(up.count(), 0);
    gw.shutdown().await;
}

#[tokio::test]
async fn double_encoding_is_forwarded_as_sent_and_never_decoded_twice() {
    let up = Upstream::start().await;
    let gw = gateway(&site(&up.url(), "")).await;
    for path in [
        "/public/%252e%252e/admin",
        "/public/a%252Fb",
        "/public/%25c0%25af",
    ] {
        let reply = raw(gw.addr, &get(path, "")).await;
        assert_eq!(reply.status, 200, "{path}: {}", reply.all);
        // `%25` is a `%`, kept encoded: the upstream decodes it once.
        assert_eq!(up.last().uri, path, "{path}");
        assert_eq!(up.last().headers["x-tollgate-operation"], "publicFiles");
    }
    gw.shutdown().await;
}

#[tokio::test]
async fn a_raw_nul_or_control_byte_in_the_request_line_never_reaches_the_upstream() {
    let up = Upstream::start().await;
    let gw = gateway(&site(&up.url(), "")).await;
    for path in ["/public/a\0b", "/public/a\x01b", "/public/a\x7fb"] {
        let reply = raw(gw.addr, &get(path, "")).await;
        assert_eq!(reply.status, 400, "{path:?}: {}", reply.all);
        assert!(reply.closed, "{path:?}");
    }
    assert_eq!(up.count(), 0);
    gw.shutdown().await;
}

// === identity ===

#[tokio::test]
async fn a_caller_cannot_name_itself_whatever_the_header_case_or_count() {
    let up = Upstream::start().await;
    let gw = gateway(&site(&up.url(), "")).await;
    let spoof = "X-TOLLGATE-CLIENT: ops\r\nx-tollgate-client: root\r\n\
                 X-Tollgate-Operation: admin\r\nx-TOLLGATE-operation: adminTree\r\n";
    let anonymous = raw(gw.addr, &get("/public/x", spoof)).await;
    assert_eq!(anonymous.status, 200, "{}", anonymous.all);
    let seen = up.last();
    assert!(seen.headers.get("x-tollgate-client").is_none());
    let ops: Vec<_> = seen
        .headers
        .get_all("x-tollgate-operation")
        .iter()
        .collect();
    assert_eq!(ops, ["publicFiles"]);
    // An identified caller is named by its key, never by its headers.
    let keyed = raw(
        gw.addr,
        &get("/admin", &format!("{spoof}X-API-Key: {KEY}\r\n")),
    )
    .await;
    assert_eq!(keyed.status, 200, "{}", keyed.all);
    let seen = up.last();
    let clients: Vec<_> = seen.headers.get_all("x-tollgate-client").iter().collect();
    assert_eq!(clients, ["ops"]);
    gw.shutdown().await;
}

/// Every header a caller might use to claim an address.
const ADDRESS_CLAIMS: &str = "X-Forwarded-For: 203.0.113.5\r\n\
     Forwarded: for=203.0.113.5;proto=https\r\n\
     X-Real-IP: 203.0.113.5\r\n\
     X-Forwarded-Host: intranet.example\r\n\
     X-Forwarded-Proto: https\r\n\
     X-Request-Id: chosen-by-caller\r\n";

#[tokio::test]
async fn address_claims_from_an_untrusted_peer_decide_nothing_and_are_not_forwarded() {
    let up = Upstream::start().await;
    // The loopback peer is not a trusted proxy; only 203.0.113.0/24 may call.
    let extra = "trusted_proxies: [10.0.0.0/8]\napply: [{ type: ip, allow: [203.0.113.0/24] }]";
    let gw = gateway(&site(&up.url(), extra)).await;
    raw(gw.addr, &get("/public/x", ADDRESS_CLAIMS))
        .await
        .assert_problem(403, "ip_denied");
    assert_eq!(up.count(), 0);
    gw.shutdown().await;

    // Let loopback in: the claims are stripped on the way through.
    let extra = "trusted_proxies: [10.0.0.0/8]\napply: [{ type: ip, allow: [127.0.0.1] }]";
    let gw = gateway(&site(&up.url(), extra)).await;
    let reply = raw(gw.addr, &get("/public/x", ADDRESS_CLAIMS)).await;
    assert_eq!(reply.status, 200, "{}", reply.all);
    let seen = up.last();
    assert_eq!(seen.headers["x-forwarded-for"], "127.0.0.1");
    assert_eq!(seen.headers["x-forwarded-proto"], "http");
    assert_eq!(seen.headers["x-forwarded-host"], "gw");
    assert!(seen.headers.get("forwarded").is_none());
    assert!(seen.headers.get("x-real-ip").is_none());
    assert_ne!(seen.headers["x-request-id"], "chosen-by-caller");
    gw.shutdown().await;
}

#[tokio::test]
async fn a_trusted_proxy_is_believed_only_through_x_forwarded_for() {
    let up = Upstream::start().await;
    let extra = "trusted_proxies: [127.0.0.1]\napply: [{ type: ip, deny: [203.0.113.0/24] }]";
    let gw = gateway(&site(&up.url(), extra)).await;
    // `Forwarded` and `X-Real-IP` are not how the client address is read...
    let other = "Forwarded: for=203.0.113.5\r\nX-Real-IP: 203.0.113.5\r\n";
    let reply = raw(gw.addr, &get("/public/x", other)).await;
    assert_eq!(reply.status, 200, "{}", reply.all);
    // ...X-Forwarded-For is.
    raw(
        gw.addr,
        &get("/public/x", "X-Forwarded-For: 203.0.113.5\r\n"),
    )
    .await
    .assert_problem(403, "ip_denied");
    assert_eq!(up.count(), 1);
    gw.shutdown().await;
}

// === JWT ===

fn jwt_site(upstream: &str, source: &str) -> String {
    site(
        upstream,
        &format!(
            "jwt:\n  issuer: https://idp.example.com\n  audience: tollgate\n  algorithms: [RS256]\n  {source}\napply: [{{ type: auth, methods: [jwt] }}]"
        ),
    )
}

fn claims() -> serde_json::Value {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    json!({
        "iss": "https://idp.example.com",
        "aud": "tollgate",
        "sub": "ops",
        "exp": now + 300,
    })
}

fn b64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// A token with any header JSON, signed as `alg` with `key`.
fn token_with_header(header: &serde_json::Value, key: &EncodingKey, alg: Algorithm) -> String {
    let message = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims().to_string().as_bytes())
    );
    let signature = jsonwebtoken::crypto::sign(message.as_bytes(), key, alg).expect("sign");
    format!("{message}.{signature}")
}

fn real_key() -> EncodingKey {
    let pem = std::fs::read(fixture("jwt-rsa-private.pem")).expect("private key");
    EncodingKey::from_rsa_pem(&pem).expect("rsa key")
}

fn attacker_key() -> EncodingKey {
    let pem = std::fs::read(fixture("jwt-rsa-attacker-private.pem")).expect("attacker key");
    EncodingKey::from_rsa_pem(&pem).expect("rsa key")
}

async fn bearer(gw: &TestGateway, token: &str) -> Got {
    let value = format!("Bearer {token}");
    gw.get_with("/public/x", &[("authorization", value.as_str())])
        .await
}

fn detail(got: &Got) -> String {
    got.json()["detail"].as_str().unwrap_or("").to_string()
}

#[tokio::test]
async fn unsigned_and_algorithm_confused_tokens_are_refused() {
    let up = Upstream::start().await;
    let public_pem = std::fs::read(fixture("jwt-rsa-public.pem")).expect("public key");
    let jwks = std::fs::read_to_string(fixture("jwt-rsa.jwks.json")).expect("jwks");
    let jwks: serde_json::Value = serde_json::from_str(&jwks).expect("json");
    let n = jwks["keys"][0]["n"].as_str().unwrap_or("").to_string();
    // One upstream for both configs: each lets exactly its valid token through.
    for (calls, source) in [
        format!("public_key_file: {}", fixture("jwt-rsa-public.pem")),
        format!("jwks_file: {}", fixture("jwt-rsa.jwks.json")),
    ]
    .into_iter()
    .enumerate()
    {
        let gw = gateway(&jwt_site(&up.url(), &source)).await;
        // The real key still works here, so each refusal below is the attack's.
        let valid = token_with_header(
            &json!({"alg": "RS256", "kid": "test-rsa"}),
            &real_key(),
            Algorithm::RS256,
        );
        assert_eq!(bearer(&gw, &valid).await.status, 200, "{source}");
        let valid_sig = valid.rsplit('.').next().unwrap_or("").to_string();
        let payload = b64(claims().to_string().as_bytes());
        let mut forged = Vec::new();
        for alg in ["none", "None", "NONE", "nOnE"] {
            let header = b64(json!({ "alg": alg, "typ": "JWT" }).to_string().as_bytes());
            forged.push(format!("{header}.{payload}."));
            forged.push(format!("{header}.{payload}.{valid_sig}"));
        }
        // HS256/384/512 keyed with what the attacker knows of the RSA key.
        for secret in [&public_pem[..], n.as_bytes()] {
            for alg in [Algorithm::HS256, Algorithm::HS384, Algorithm::HS512] {
                let header = json!({ "alg": format!("{alg:?}"), "kid": "test-rsa" });
                forged.push(token_with_header(
                    &header,
                    &EncodingKey::from_secret(secret),
                    alg,
                ));
            }
        }
        for token in forged {
            let got = bearer(&gw, &token).await;
            got.assert_problem(401, "invalid_credentials");
            assert!(
                detail(&got).contains("algorithm") || detail(&got).contains("malformed"),
                "{source}: {}",
                detail(&got)
            );
        }
        assert_eq!(up.count(), calls + 1, "{source}");
        gw.shutdown().await;
    }
}

#[tokio::test]
async fn a_kid_selects_among_configured_keys_and_is_never_a_path_or_a_query() {
    let up = Upstream::start().await;
    let gw = gateway(&jwt_site(
        &up.url(),
        &format!("jwks_file: {}", fixture("jwt-rsa.jwks.json")),
    ))
    .await;
    // Signed with the real key: only the kid is hostile.
    for kid in [
        "../../../../etc/passwd",
        "/dev/null",
        "' OR '1'='1",
        "test-rsa' --",
        "test-rsa\u{0}",
        "TEST-RSA",
        "http://127.0.0.1:1/key.pem",
    ] {
        let token = token_with_header(
            &json!({"alg": "RS256", "kid": kid}),
            &real_key(),
            Algorithm::RS256,
        );
        let got = bearer(&gw, &token).await;
        got.assert_problem(401, "invalid_credentials");
        assert_eq!(detail(&got), "no configured key fits the token", "{kid:?}");
    }
    assert_eq!(up.count(), 0);
    gw.shutdown().await;
}

#[tokio::test]
async fn keys_a_token_points_to_or_carries_are_never_fetched_or_trusted() {
    let up = Upstream::start().await;
    let gw = gateway(&jwt_site(
        &up.url(),
        &format!("public_key_file: {}", fixture("jwt-rsa-public.pem")),
    ))
    .await;
    let jwk: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixture("jwt-rsa-attacker.jwk.json")).expect("jwk"),
    )
    .expect("json");
    let fetch_me = format!("{}/jwks.json", up.url());
    for header in [
        json!({"alg": "RS256", "jwk": jwk}),
        json!({"alg": "RS256", "jku": fetch_me}),
        json!({"alg": "RS256", "x5u": fetch_me}),
        json!({"alg": "RS256", "kid": "attacker", "jku": fetch_me, "jwk": jwk}),
    ] {
        let token = token_with_header(&header, &attacker_key(), Algorithm::RS256);
        let got = bearer(&gw, &token).await;
        got.assert_problem(401, "invalid_credentials");
        assert_eq!(detail(&got), "the token's signature does not verify");
    }
    // Not one request to the URLs the tokens named, nor anything forwarded.
    assert_eq!(up.count(), 0);
    gw.shutdown().await;
}

#[tokio::test]
async fn huge_and_deeply_nested_tokens_are_refused_cheaply() {
    let up = Upstream::start().await;
    let gw = gateway(&jwt_site(
        &up.url(),
        &format!("public_key_file: {}", fixture("jwt-rsa-public.pem")),
    ))
    .await;
    // A header nested far past serde_json's recursion limit.
    let deep = format!(
        "{{\"alg\":\"RS256\",\"x\":{}1{}}}",
        "[".repeat(3000),
        "]".repeat(3000)
    );
    let token = format!(
        "{}.{}.c2ln",
        b64(deep.as_bytes()),
        b64(claims().to_string().as_bytes())
    );
    assert!(token.len() < 12 * 1024);
    bearer(&gw, &token)
        .await
        .assert_problem(401, "invalid_credentials");
    // Past max_header_bytes (16KiB): 431 before any parsing.
    let huge = format!("eyJ{}.{}.{}", "A".repeat(20_000), "B".repeat(100), "C");
    bearer(&gw, &huge)
        .await
        .assert_problem(431, "headers_too_large");
    // Far past it: the connection layer refuses the head and hangs up.
    let request = get(
        "/public/x",
        &format!("Authorization: Bearer eyJ{}.x.y\r\n", "A".repeat(100_000)),
    );
    let reply = raw(gw.addr, &request).await;
    assert_eq!(reply.status, 431, "{}", reply.head);
    assert!(reply.closed);
    assert_eq!(up.count(), 0);
    gw.shutdown().await;
}

// === request framing (smuggling) ===

#[tokio::test]
async fn ambiguous_framing_is_refused_and_the_connection_closed() {
    let up = Upstream::start().await;
    let gw = gateway(&site(&up.url(), "")).await;
    let smuggled = "GET /admin HTTP/1.1\r\nHost: gw\r\n\r\n";
    for framing in [
        "Content-Length: 5\r\nContent-Length: 40\r\n",
        "Content-Length: 5, 40\r\n",
        "Content-Length: +5\r\n",
        "Content-Length: -1\r\n",
        "Content-Length: 0x5\r\n",
        "Content-Length: 5 5\r\n",
        "Transfer-Encoding: chunked, identity\r\n",
        "Transfer-Encoding: xchunked\r\n",
        // Chunked twice, or under another coding the upstream would never
        // learn of (the gateway re-frames the body): not what it was sent.
        "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
        "Transfer-Encoding: chunked, chunked\r\n",
        "Transfer-Encoding: gzip, chunked\r\n",
        "Transfer-Encoding : chunked\r\n",
        // obs-fold, hiding a header inside another one's continuation.
        "X-Fold: a\r\n Transfer-Encoding: chunked\r\n",
        "Transfer-Encoding:\r\n chunked\r\n",
        // A bare CR inside the head.
        "X-A: 1\rContent-Length: 40\r\n",
    ] {
        let request = format!(
            "POST /upload HTTP/1.1\r\nHost: gw\r\n{framing}\r\n5\r\nhello\r\n0\r\n\r\n{smuggled}"
        );
        let reply = raw(gw.addr, &request).await;
        assert_eq!(reply.status, 400, "{framing:?}: {}", reply.all);
        assert_eq!(reply.responses(), 1, "{framing:?}: {}", reply.all);
        assert!(reply.closed, "{framing:?}");
    }
    assert_eq!(up.count(), 0, "{:?}", up.seen());
    gw.shutdown().await;
}

#[tokio::test]
async fn chunked_with_content_length_is_read_as_chunked_and_nothing_rides_along() {
    let up = Upstream::start().await;
    let gw = gateway(&site(&up.url(), "")).await;
    // Per Content-Length the body is `0\r\n` and `\r\nGET /admin` would
    // start the next request; per chunked (which wins) the body is empty
    // and `GET /admin` is pipelined. Either way the connection closes
    // after one answer, so it is never read.
    let request = "POST /upload HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: chunked\r\n\
                   Content-Length: 3\r\n\r\n0\r\n\r\nGET /admin HTTP/1.1\r\nHost: gw\r\n\r\n";
    let reply = raw(gw.addr, request).await;
    assert_eq!(reply.status, 200, "{}", reply.all);
    assert_eq!(reply.responses(), 1, "{}", reply.all);
    assert!(reply.closed);
    let seen = up.seen();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].uri, "/upload");
    assert_eq!(seen[0].body, "");
    gw.shutdown().await;
}

#[tokio::test]
async fn bare_lf_line_ends_make_one_request_forwarded_with_clean_framing() {
    let up = Upstream::start().await;
    let gw = gateway(&site(&up.url(), "")).await;
    let request = "POST /upload HTTP/1.1\nHost: gw\nContent-Length: 5\nConnection: close\n\nhello";
    let reply = raw(gw.addr, request).await;
    assert_eq!(reply.status, 200, "{}", reply.all);
    let seen = up.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(
        (seen[0].uri.as_str(), &seen[0].body[..]),
        ("/upload", &b"hello"[..])
    );
    assert_eq!(seen[0].headers["content-length"], "5");
    gw.shutdown().await;
}

#[tokio::test]
async fn broken_chunk_sizes_are_400_and_the_upstream_never_gets_a_whole_body() {
    let up = Upstream::start().await;
    let gw = gateway(&site(&up.url(), "")).await;
    for size in ["zz", "-5", "+5", "0x5", "fffffffffffffffffff", "5 5", ""] {
        let request = format!(
            "POST /upload HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: chunked\r\n\r\n\
             {size}\r\nhello\r\n0\r\n\r\n"
        );
        let reply = raw(gw.addr, &request).await;
        reply.assert_problem(400, "invalid_request_body");
        assert!(reply.closed, "{size:?}");
    }
    // The upstream may have seen a request start; never one that completed.
    let seen = up.seen();
    assert!(seen.iter().all(|s| s.body == "<broken body>"), "{seen:?}");
    gw.shutdown().await;
}

#[tokio::test]
async fn too_many_or_too_large_headers_are_431_and_the_connection_closed() {
    let up = Upstream::start().await;
    let gw = gateway(&site(&up.url(), "limits: { max_header_bytes: 4KiB }")).await;
    let many: String = (0..200).map(|i| format!("X-H{i}: v\r\n")).collect();
    let reply = raw(gw.addr, &get("/public/x", &many)).await;
    assert_eq!(reply.status, 431, "{}", reply.head);
    assert!(reply.closed);
    // Over the limit but within what the connection layer buffers: the
    // gateway's own problem answer, then the connection closes.
    let large = format!("X-Big: {}\r\n", "v".repeat(5000));
    let request = format!("GET /public/x HTTP/1.1\r\nHost: gw\r\n{large}\r\n");
    let reply = raw(gw.addr, &request).await;
    reply.assert_problem(431, "headers_too_large");
    assert!(reply.closed);
    // Far over it.
    let huge = format!("X-Huge: {}\r\n", "v".repeat(256 * 1024));
    let reply = raw(gw.addr, &get("/public/x", &huge)).await;
    assert_eq!(reply.status, 431, "{}", reply.head);
    assert!(reply.closed);
    assert_eq!(up.count(), 0);
    gw.shutdown().await;
}

// === slow and idle clients ===

const SHORT_TIMEOUTS: &str = "limits: { header_read_timeout: 300ms, body_read_timeout: 300ms }";

/// Waits for the gateway to close `stream`; returns how long it took.
async fn closed_after(stream: &mut TcpStream) -> Duration {
    let started = Instant::now();
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut buf))
        .await
        .expect("the gateway closed the connection")
        .ok();
    started.elapsed()
}

#[tokio::test]
async fn connections_that_never_send_a_whole_head_are_closed_after_header_read_timeout() {
    let up = Upstream::start().await;
    let gw = gateway(&site(&up.url(), SHORT_TIMEOUTS)).await;
    // Nothing at all; part of the HTTP/2 preface; part of an HTTP/1 head.
    for opening in [
        &b""[..],
        b"PRI * HTTP/2.0\r\n",
        b"GET /public/x HTTP/1.1\r\nHost:",
    ] {
        let mut stream = TcpStream::connect(gw.addr).await.expect("connect");
        stream.write_all(opening).await.expect("write");
        let waited = closed_after(&mut stream).await;
        assert!(
            waited >= Duration::from_millis(250),
            "{opening:?} closed after {waited:?}"
        );
    }
    assert_eq!(up.count(), 0);
    gw.shutdown().await;
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_header_read_timeout() {
    let up = Upstream::start().await;
    let gw = gateway(&site(&up.url(), SHORT_TIMEOUTS)).await;
    let mut stream = TcpStream::connect(gw.addr).await.expect("connect");
    stream
        .write_all(b"GET /public/x HTTP/1.1\r\nHost: gw\r\n\r\n")
        .await
        .expect("write");
    let mut buf = [0u8; 4096];
    let n = stream.read(&mut buf).await.expect("answer");
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    closed_after(&mut stream).await;
    assert_eq!(up.count(), 1);
    gw.shutdown().await;
}

#[tokio::test]
async fn a_stalled_request_body_is_cut_off_after_body_read_timeout() {
    let up = Upstream::start().await;
    let gw = gateway(&site(&up.url(), SHORT_TIMEOUTS)).await;
    // Streamed to the upstream, and buffered for a schema check.
    for path in ["/upload", "/validated"] {
        let mut stream = TcpStream::connect(gw.addr).await.expect("connect");
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\n\
             Content-Length: 100\r\n\r\n{{\"a\":"
        );
        stream.write_all(head.as_bytes()).await.expect("write");
        let started = Instant::now();
        let reply = read_reply(&mut stream, Duration::from_secs(5)).await;
        reply.assert_problem(400, "invalid_request_body");
        assert!(started.elapsed() >= Duration::from_millis(250));
        assert!(reply.closed, "{path}");
    }
    let seen = up.seen();
    assert!(seen.iter().all(|s| s.body == "<broken body>"), "{seen:?}");
    gw.shutdown().await;
}

#[tokio::test]
async fn a_slow_but_steady_body_is_not_cut_off() {
    let up = Upstream::start().await;
    let gw = gateway(&site(&up.url(), SHORT_TIMEOUTS)).await;
    let mut stream = TcpStream::connect(gw.addr).await.expect("connect");
    stream
        .write_all(
            b"POST /upload HTTP/1.1\r\nHost: gw\r\nContent-Length: 5\r\nConnection: close\r\n\r\n",
        )
        .await
        .expect("write");
    // Five bytes, one every 100ms: 500ms in all, each gap under 300ms.
    for b in b"hello" {
        tokio::time::sleep(Duration::from_millis(100)).await;
        stream.write_all(&[*b]).await.expect("write");
    }
    let reply = read_reply(&mut stream, Duration::from_secs(5)).await;
    assert_eq!(reply.status, 200, "{}", reply.all);
    assert_eq!(up.last().body, "hello");
    gw.shutdown().await;
}

// === rate-limit evasion ===

#[tokio::test]
async fn the_key_header_name_case_does_not_open_a_fresh_bucket() {
    let up = Upstream::start().await;
    let extra =
        "apply:\n  - key-required\n  - { type: rate_limit, limit: 2, window: 1m, key: client }";
    let gw = gateway(&site(&up.url(), extra)).await;
    let mut statuses = Vec::new();
    for name in ["x-api-key", "X-API-KEY", "X-Api-Key", "x-API-key"] {
        let reply = raw(gw.addr, &get("/public/x", &format!("{name}: {KEY}\r\n"))).await;
        statuses.push((reply.status, reply.code()));
    }
    let ok = (200, String::new());
    let limited = (429, "rate_limited".to_string());
    assert_eq!(statuses, [ok.clone(), ok, limited.clone(), limited]);
    assert_eq!(up.count(), 2);
    gw.shutdown().await;
}

#[tokio::test]
async fn a_limit_keyed_by_header_ignores_the_header_name_case() {
    let up = Upstream::start().await;
    let extra = "apply: [{ type: rate_limit, limit: 2, window: 1m, key: \"header:X-User\" }]";
    let gw = gateway(&site(&up.url(), extra)).await;
    let mut statuses = Vec::new();
    for name in ["X-USER", "x-user", "X-User"] {
        let reply = raw(gw.addr, &get("/public/x", &format!("{name}: alice\r\n"))).await;
        statuses.push(reply.status);
    }
    assert_eq!(statuses, [200, 200, 429]);
    assert_eq!(up.count(), 2);
    gw.shutdown().await;
}

#[tokio::test]
async fn rotating_x_forwarded_for_from_an_untrusted_peer_gets_no_fresh_bucket() {
    let up = Upstream::start().await;
    let extra = "trusted_proxies: [10.0.0.0/8]\n\
                 apply: [{ type: rate_limit, limit: 2, window: 1m, key: ip }]";
    let gw = gateway(&site(&up.url(), extra)).await;
    let mut statuses = Vec::new();
    for i in 1..=5 {
        let claims = format!("X-Forwarded-For: 198.51.100.{i}\r\nX-Real-IP: 198.51.100.{i}\r\n");
        let reply = raw(gw.addr, &get("/public/x", &claims)).await;
        statuses.push(reply.status);
    }
    assert_eq!(statuses, [200, 200, 429, 429, 429]);
    assert_eq!(up.count(), 2);
    gw.shutdown().await;
}

#[tokio::test]
async fn rotating_ipv6_addresses_inside_one_slash_64_does_not_escape_an_abuse_ban() {
    let up = Upstream::start().await;
    // The caller sits behind a trusted proxy (loopback) that reports it.
    let extra = "trusted_proxies: [127.0.0.1]\n\
                 apply: [{ type: abuse, watch: [404], threshold: 3, window: 1m, ban: 15m, ipv6_prefix: 64 }]";
    let gw = gateway(&site(&up.url(), extra)).await;
    let from = |ip: &str| format!("X-Forwarded-For: {ip}\r\n");
    // Three probes, each from a new address in 2001:db8:1:2::/64.
    for i in 1..=3 {
        raw(
            gw.addr,
            &get("/nope", &from(&format!("2001:db8:1:2::{i:x}"))),
        )
        .await
        .assert_problem(404, "route_not_found");
    }
    // The whole /64 is banned, whichever address it comes from next.
    for ip in ["2001:db8:1:2::99", "2001:db8:1:2:ffff:ffff:ffff:ffff"] {
        raw(gw.addr, &get("/public/x", &from(ip)))
            .await
            .assert_problem(403, "banned");
    }
    // The neighbouring /64 is someone else.
    let reply = raw(gw.addr, &get("/public/x", &from("2001:db8:1:3::1"))).await;
    assert_eq!(reply.status, 200, "{}", reply.all);
    assert_eq!(up.count(), 1);
    gw.shutdown().await;
}

// === upstream faults ===

/// A hand-written upstream, one behaviour per path:
/// - `/garbage`: answers with bytes that are not HTTP;
/// - `/reset-length`: 200 with `Content-Length: 1000`, 100 bytes, then a reset;
/// - `/reset-chunked`: 200 chunked, one chunk, then a reset;
/// - `/stall`: 200 with `Content-Length: 1000`, 10 bytes, then silence;
/// - `/bad-chunk`: 200 chunked whose second chunk size is not hex;
/// - anything else: 200 `ok`, keep-alive implied, then the connection is
///   closed anyway (an upstream that drops idle connections at once).
struct FaultyUpstream {
    addr: SocketAddr,
    connections: Arc<AtomicUsize>,
}

impl FaultyUpstream {
    async fn start() -> FaultyUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let connections = Arc::new(AtomicUsize::new(0));
        let count = connections.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(misbehave(stream));
            }
        });
        FaultyUpstream { addr, connections }
    }
}

async fn misbehave(mut stream: TcpStream) {
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let head = String::from_utf8_lossy(&head);
    let path = head.split(' ').nth(1).unwrap_or("/").to_string();
    let reset = |stream: TcpStream| {
        // Linger 0: close with a RST, as a crashed process would.
        let _ = stream.set_zero_linger();
        drop(stream);
    };
    match path.as_str() {
        "/garbage" => {
            let _ = stream.write_all(b"SURPRISE\r\n\r\n").await;
        }
        "/reset-length" => {
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n")
                .await;
            let _ = stream.write_all(&[b'x'; 100]).await;
            let _ = stream.flush().await;
            reset(stream);
        }
        "/reset-chunked" => {
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
                .await;
            let _ = stream.flush().await;
            reset(stream);
        }
        "/stall" => {
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n0123456789")
                .await;
            // Hold the connection open, silent, until the gateway gives up.
            let _ = stream.read(&mut buf).await;
        }
        "/bad-chunk" => {
            let _ = stream
                .write_all(
                    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\nmore\r\n0\r\n\r\n",
                )
                .await;
            let _ = stream.read(&mut buf).await;
        }
        _ => {
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                .await;
            let _ = stream.flush().await;
        }
    }
}

fn faulty_site(addr: SocketAddr) -> String {
    format!(
        "version: 1\nlisten: 127.0.0.1:0\napis:\n  - name: faulty\n    upstream: http://{addr}\n    \
         upstream_timeout: 300ms\n    operations:\n      - {{ id: any, method: GET, path: \"/{{*rest}}\" }}\n"
    )
}

/// Status and the body as the client read it: `Err` when the stream broke.
async fn fetch(gw: &TestGateway, path: &str) -> (u16, Result<Bytes, String>) {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let request = Request::get(gw.url(path))
        .body(Full::default())
        .expect("request");
    let response = tokio::time::timeout(Duration::from_secs(5), client.request(request))
        .await
        .expect("the gateway answered in time")
        .expect("an answer");
    let status = response.status().as_u16();
    let body = tokio::time::timeout(Duration::from_secs(5), response.into_body().collect())
        .await
        .expect("the body ended in time, one way or the other")
        .map(|c| c.to_bytes())
        .map_err(|e| e.to_string());
    (status, body)
}

#[tokio::test]
async fn an_upstream_answering_garbage_is_502_invalid_upstream_response() {
    let up = FaultyUpstream::start().await;
    let gw = gateway(&faulty_site(up.addr)).await;
    gw.get("/garbage")
        .await
        .assert_problem(502, "invalid_upstream_response");
    assert_eq!(
        fetch(&gw, "/ok").await,
        (200, Ok(Bytes::from_static(b"ok")))
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn a_body_the_upstream_breaks_off_reaches_the_client_as_a_broken_stream() {
    let up = FaultyUpstream::start().await;
    let gw = gateway(&faulty_site(up.addr)).await;
    for path in ["/reset-length", "/reset-chunked", "/bad-chunk", "/stall"] {
        let (status, body) = fetch(&gw, path).await;
        // The head was already on its way: the status stays, the body must
        // end in an error, never as a short body that looks complete.
        assert_eq!(status, 200, "{path}");
        assert!(
            body.is_err(),
            "{path}: a broken body looked complete: {body:?}"
        );
        // And the pool recovers: the next call succeeds.
        assert_eq!(
            fetch(&gw, "/ok").await,
            (200, Ok(Bytes::from_static(b"ok"))),
            "after {path}"
        );
    }
    gw.shutdown().await;
}

#[tokio::test]
async fn an_upstream_that_closes_every_kept_alive_connection_is_no_trouble() {
    let up = FaultyUpstream::start().await;
    let gw = gateway(&faulty_site(up.addr)).await;
    for i in 0..30 {
        assert_eq!(
            fetch(&gw, "/ok").await,
            (200, Ok(Bytes::from_static(b"ok"))),
            "call {i}"
        );
    }
    // Each call needed a new connection: none was reused after its close.
    assert_eq!(up.connections.load(Ordering::SeqCst), 30);
    gw.shutdown().await;
}

// === GraphQL documents ===

/// `{...f0} fragment f0 on Query {...f1} … fragment fN on Query { users { id } }`
fn fragment_chain(n: usize) -> String {
    let mut doc = String::from("query { ...f0 }");
    for i in 0..n {
        doc.push_str(&format!(" fragment f{i} on Query {{ ...f{} }}", i + 1));
    }
    doc.push_str(&format!(" fragment f{n} on Query {{ users {{ id }} }}"));
    doc
}

#[tokio::test]
async fn a_chain_of_twelve_thousand_fragments_is_refused_and_the_gateway_lives_on() {
    let up = Upstream::start().await;
    let gw = gateway(&format!(
        r#"version: 1
listen: 127.0.0.1:0
apis:
  - name: embedded
    upstream: {}
    operations:
      - {{ id: getUsers, method: POST, path: /graphql, graphql: {{ operation: query, field: users }} }}
"#,
        up.url()
    ))
    .await;
    let post = |doc: String| {
        Request::post(gw.url("/graphql"))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(json!({ "query": doc }).to_string())))
            .expect("request")
    };
    // ~350 KiB, under the default body limit: this overflowed a worker's
    // stack and aborted the whole process.
    let attack = fragment_chain(12_000);
    assert!(attack.len() > 300_000 && attack.len() < 1 << 20);
    let started = Instant::now();
    gw.send(post(attack)).await.assert_problem(400, "invalid_request_body");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "refused in bounded work, took {:?}",
        started.elapsed()
    );
    assert_eq!(up.count(), 0, "nothing reached the upstream");
    // The process is alive and routes an honest document.
    let got = gw.send(post("query { users { id } }".into())).await;
    assert_eq!(got.status, 200, "{:?}", got.body);
    assert_eq!(up.count(), 1);
}
