//! The access policies end to end (DESIGN §3–§5): `auth`, `roles`, `ip`,
//! `headers` — what reaches the upstream and what the caller gets.

use crate::common::*;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;
use sha2::{Digest, Sha256};
use std::sync::Arc;
use std::time::Duration;
use tollgate::clock::{ManualClock, SharedClock};

const KEY: &str = "tk_live_hr_portal_0123456789";
const ADMIN_KEY: &str = "tk_live_ops_console_abcdef";
/// 2027-01-15T08:00:00Z: the tests' "now" for tokens and key expiry.
const NOW_SECS: u64 = 1_800_000_000;

fn sha256_hex(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

fn fixture(name: &str) -> String {
    format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))
}

fn clock() -> Arc<ManualClock> {
    ManualClock::new(NOW_SECS * 1_000_000_000)
}

/// Roles, two clients with keys, and `rest` (policies, apply, jwt...).
fn clients(rest: &str) -> String {
    format!(
        r#"roles: [reader, admin, suspended]
clients:
  - id: hr-portal
    roles: [reader]
    api_keys:
      - sha256: {}
        id: hr-2027
  - id: ops-console
    roles: [admin, reader]
    api_keys:
      - sha256: {}
{rest}"#,
        sha256_hex(KEY),
        sha256_hex(ADMIN_KEY)
    )
}

async fn gateway_at(up: &Upstream, extra: &str, clock: SharedClock) -> TestGateway {
    gateway_with_clock(&simple_config(&up.url(), extra), clock).await
}

fn compile_errors(extra: &str) -> String {
    match compile(
        std::path::Path::new("tollgate-test.yaml"),
        &simple_config("http://127.0.0.1:9", extra),
        tollgate::clock::SystemClock::shared(),
    ) {
        Ok(_) => panic!("the config compiled"),
        Err(errors) => errors.join("\n"),
    }
}

// === auth: API keys ===

const KEY_AUTH: &str = "apply: [{ type: auth, methods: [api_key] }]";

#[tokio::test]
async fn a_valid_key_reaches_the_upstream_as_its_client_without_the_key() {
    let up = Upstream::start().await;
    let gw = gateway_at(&up, &clients(KEY_AUTH), clock()).await;
    let got = gw.get_with("/employees/7", &[("X-API-Key", KEY)]).await;
    assert_eq!(got.status, 200, "{:?}", got.body);
    let seen = up.last();
    assert_eq!(seen.headers["x-tollgate-client"], "hr-portal");
    assert!(seen.headers.get("x-api-key").is_none());
    gw.shutdown().await;
}

#[tokio::test]
async fn a_call_without_a_key_gets_401_unauthenticated_with_a_challenge() {
    let up = Upstream::start().await;
    let gw = gateway_at(&up, &clients(KEY_AUTH), clock()).await;
    let got = gw.get("/employees/7").await;
    got.assert_problem(401, "unauthenticated");
    let challenges: Vec<&str> = got
        .headers
        .get_all("www-authenticate")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    assert!(challenges
        .iter()
        .any(|c| c.starts_with("ApiKey") && c.contains("x-api-key")));
    assert!(challenges.iter().any(|c| c.starts_with("Bearer")));
    assert_eq!(up.count(), 0);
    gw.shutdown().await;
}

#[tokio::test]
async fn a_wrong_key_gets_401_invalid_credentials_and_is_not_echoed() {
    let up = Upstream::start().await;
    let gw = gateway_at(&up, &clients(KEY_AUTH), clock()).await;
    let got = gw
        .get_with("/employees/7", &[("X-API-Key", "tk_live_guess")])
        .await;
    got.assert_problem(401, "invalid_credentials");
    assert!(got.headers.contains_key("www-authenticate"));
    assert!(!String::from_utf8_lossy(&got.body).contains("tk_live_guess"));
    assert_eq!(up.count(), 0);
    gw.shutdown().await;
}

#[tokio::test]
async fn the_key_header_name_is_case_insensitive() {
    let up = Upstream::start().await;
    let policy = "apply: [{ type: auth, methods: [api_key], api_key: { header: x-Tenant-KEY } }]";
    let gw = gateway_at(&up, &clients(policy), clock()).await;
    let request = format!(
        "GET /employees/7 HTTP/1.1\r\nHost: gw\r\nX-TENANT-KEY: {KEY}\r\nConnection: close\r\n\r\n"
    );
    let answer = raw_exchange(gw.addr, request.as_bytes(), Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let seen = up.last();
    assert_eq!(seen.headers["x-tollgate-client"], "hr-portal");
    assert!(seen.headers.get("x-tenant-key").is_none());
    gw.shutdown().await;
}

#[tokio::test]
async fn a_key_read_from_the_environment_at_load_is_accepted() {
    let var = "TOLLGATE_ACCESS_TEST_ENV_KEY_1";
    std::env::set_var(var, "tk_from_env_777");
    let up = Upstream::start().await;
    let extra = format!(
        "roles: [reader]\nclients:\n  - id: env-client\n    api_keys: [{{ env: {var} }}]\n{KEY_AUTH}"
    );
    let gw = gateway_at(&up, &extra, clock()).await;
    let got = gw
        .get_with("/employees/7", &[("x-api-key", "tk_from_env_777")])
        .await;
    assert_eq!(got.status, 200, "{:?}", got.body);
    assert_eq!(up.last().headers["x-tollgate-client"], "env-client");
    gw.shutdown().await;
}

#[test]
fn a_key_from_an_unset_environment_variable_is_a_config_error_at_its_entry() {
    let extra = "clients:\n  - id: a\n    api_keys: [{ env: TOLLGATE_ACCESS_TEST_UNSET_VAR_9 }]\n";
    let errors = compile_errors(extra);
    assert!(errors.contains("clients[0].api_keys[0].env"), "{errors}");
}

#[tokio::test]
async fn a_bearer_key_is_accepted_and_removed_before_forwarding() {
    let up = Upstream::start().await;
    let gw = gateway_at(&up, &clients(KEY_AUTH), clock()).await;
    let bearer = format!("Bearer {ADMIN_KEY}");
    let got = gw
        .get_with("/employees/7", &[("Authorization", bearer.as_str())])
        .await;
    assert_eq!(got.status, 200, "{:?}", got.body);
    let seen = up.last();
    assert_eq!(seen.headers["x-tollgate-client"], "ops-console");
    assert!(seen.headers.get("authorization").is_none());
    gw.shutdown().await;
}

#[tokio::test]
async fn forward_credentials_keeps_the_bearer_key() {
    let up = Upstream::start().await;
    let policy = "apply: [{ type: auth, methods: [api_key], forward_credentials: true }]";
    let gw = gateway_at(&up, &clients(policy), clock()).await;
    let bearer = format!("Bearer {KEY}");
    let got = gw
        .get_with("/employees/7", &[("Authorization", bearer.as_str())])
        .await;
    assert_eq!(got.status, 200, "{:?}", got.body);
    assert_eq!(up.last().headers["authorization"], bearer.as_str());
    gw.shutdown().await;
}

#[tokio::test]
async fn a_key_in_the_query_is_accepted_and_removed_from_the_forwarded_query() {
    let up = Upstream::start().await;
    let policy = "apply: [{ type: auth, methods: [api_key], api_key: { query: api_key } }]";
    let gw = gateway_at(&up, &clients(policy), clock()).await;
    let got = gw
        .get(&format!("/employees/7?fields=name&api_key={KEY}&x=1"))
        .await;
    assert_eq!(got.status, 200, "{:?}", got.body);
    let seen = up.last();
    assert_eq!(seen.uri, "/7?fields=name&x=1");
    assert_eq!(seen.headers["x-tollgate-client"], "hr-portal");
    gw.shutdown().await;
}

#[tokio::test]
async fn forward_credentials_keeps_the_query_key() {
    let up = Upstream::start().await;
    let policy = "apply: [{ type: auth, methods: [api_key], forward_credentials: true, api_key: { query: api_key } }]";
    let gw = gateway_at(&up, &clients(policy), clock()).await;
    let got = gw.get(&format!("/employees/7?api_key={KEY}")).await;
    assert_eq!(got.status, 200, "{:?}", got.body);
    assert_eq!(up.last().uri, format!("/7?api_key={KEY}"));
    gw.shutdown().await;
}

#[tokio::test]
async fn a_key_is_accepted_up_to_its_expiry_instant_and_refused_after() {
    let up = Upstream::start().await;
    let extra = format!(
        "clients:\n  - id: temp\n    api_keys:\n      - {{ sha256: {}, expires: \"2027-01-15T08:00:00Z\" }}\n{KEY_AUTH}",
        sha256_hex(KEY)
    );
    let clock = clock();
    let gw = gateway_at(&up, &extra, clock.clone()).await;
    let at_expiry = gw.get_with("/employees/7", &[("x-api-key", KEY)]).await;
    assert_eq!(at_expiry.status, 200, "{:?}", at_expiry.body);
    clock.advance(Duration::from_nanos(1));
    let after = gw.get_with("/employees/7", &[("x-api-key", KEY)]).await;
    let problem = after.assert_problem(401, "invalid_credentials");
    assert!(
        problem["detail"].as_str().unwrap_or("").contains("expired"),
        "{problem}"
    );
    assert_eq!(up.count(), 1);
    gw.shutdown().await;
}

#[tokio::test]
async fn a_spoofed_client_header_never_reaches_the_upstream() {
    let up = Upstream::start().await;
    let gw = gateway_at(&up, &clients(""), clock()).await;
    gw.get_with("/employees/7", &[("X-Tollgate-Client", "ops-console")])
        .await;
    assert!(up.last().headers.get("x-tollgate-client").is_none());
    gw.shutdown().await;

    let gw = gateway_at(&up, &clients(KEY_AUTH), clock()).await;
    gw.get_with(
        "/employees/7",
        &[("X-Tollgate-Client", "ops-console"), ("x-api-key", KEY)],
    )
    .await;
    let seen = up.last();
    let clients: Vec<_> = seen.headers.get_all("x-tollgate-client").iter().collect();
    assert_eq!(clients, ["hr-portal"]);
    gw.shutdown().await;
}

#[tokio::test]
async fn a_report_only_auth_lets_an_anonymous_call_through() {
    let up = Upstream::start().await;
    let policy = "apply: [{ type: auth, methods: [api_key], report_only: true }]";
    let gw = gateway_at(&up, &clients(policy), clock()).await;
    let got = gw.get("/employees/7").await;
    assert_eq!(got.status, 200, "{:?}", got.body);
    assert!(up.last().headers.get("x-tollgate-client").is_none());
    gw.shutdown().await;
}

// === auth: JWT ===

fn jwt_section(extra: &str) -> String {
    format!(
        "jwt:\n  issuer: https://idp.example.com\n  audience: tollgate\n  algorithms: [RS256]\n  roles_claim: roles\n{extra}"
    )
}

fn rs256_config(policies: &str) -> String {
    clients(&format!(
        "{}{policies}",
        jwt_section(&format!(
            "  public_key_file: {}\n",
            fixture("jwt-rsa-public.pem")
        ))
    ))
}

const JWT_AUTH: &str = "apply: [{ type: auth, methods: [api_key, jwt] }]";

fn claims() -> serde_json::Value {
    json!({
        "iss": "https://idp.example.com",
        "aud": "tollgate",
        "sub": "agent-42",
        "roles": ["reader", "wizard"],
        "iat": NOW_SECS,
        "exp": NOW_SECS + 300,
    })
}

fn sign_rs256(claims: &serde_json::Value, kid: Option<&str>) -> String {
    let pem = std::fs::read(fixture("jwt-rsa-private.pem")).expect("private key");
    let key = EncodingKey::from_rsa_pem(&pem).expect("rsa key");
    let mut header = Header::new(Algorithm::RS256);
    header.kid = kid.map(str::to_string);
    jsonwebtoken::encode(&header, claims, &key).expect("sign")
}

async fn call_with_token(gw: &TestGateway, token: &str) -> Got {
    let bearer = format!("Bearer {token}");
    gw.get_with("/employees/7", &[("authorization", bearer.as_str())])
        .await
}

#[tokio::test]
async fn a_valid_rs256_token_identifies_its_subject_and_is_not_forwarded() {
    let up = Upstream::start().await;
    let gw = gateway_at(&up, &rs256_config(JWT_AUTH), clock()).await;
    let got = call_with_token(&gw, &sign_rs256(&claims(), None)).await;
    assert_eq!(got.status, 200, "{:?}", got.body);
    let seen = up.last();
    assert_eq!(seen.headers["x-tollgate-client"], "agent-42");
    assert!(seen.headers.get("authorization").is_none());
    gw.shutdown().await;
}

#[tokio::test]
async fn a_token_from_a_jwks_file_is_verified_with_the_key_its_kid_names() {
    let up = Upstream::start().await;
    let extra = clients(&format!(
        "{}{JWT_AUTH}",
        jwt_section(&format!("  jwks_file: {}\n", fixture("jwt-rsa.jwks.json")))
    ));
    let gw = gateway_at(&up, &extra, clock()).await;
    let ok = call_with_token(&gw, &sign_rs256(&claims(), Some("test-rsa"))).await;
    assert_eq!(ok.status, 200, "{:?}", ok.body);
    let unknown = call_with_token(&gw, &sign_rs256(&claims(), Some("other"))).await;
    unknown.assert_problem(401, "invalid_credentials");
    gw.shutdown().await;
}

/// Each way a token can be wrong, refused with 401 invalid_credentials.
#[tokio::test]
async fn expired_early_misissued_misaddressed_and_forged_tokens_are_refused() {
    let up = Upstream::start().await;
    let gw = gateway_at(&up, &rs256_config(JWT_AUTH), clock()).await;
    let with = |key: &str, value: serde_json::Value| {
        let mut c = claims();
        c[key] = value;
        c
    };
    // Past the 60s default leeway, and not yet valid beyond it.
    let expired = sign_rs256(&with("exp", json!(NOW_SECS - 61)), None);
    let early = sign_rs256(&with("nbf", json!(NOW_SECS + 61)), None);
    let wrong_iss = sign_rs256(&with("iss", json!("https://evil.example")), None);
    let wrong_aud = sign_rs256(&with("aud", json!("someone-else")), None);
    let no_exp = {
        let mut c = claims();
        c.as_object_mut().map(|o| o.remove("exp"));
        sign_rs256(&c, None)
    };
    let valid = sign_rs256(&claims(), None);
    let mut segments: Vec<&str> = valid.split('.').collect();
    // A payload swapped under a valid signature.
    let other_payload = sign_rs256(&with("sub", json!("ops-console")), None);
    let forged_payload = other_payload.split('.').nth(1).unwrap_or("");
    segments[1] = forged_payload;
    let bad_signature = segments.join(".");
    // `alg: none`, same claims, no signature.
    let none_header = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0";
    let alg_none = format!("{none_header}.{}.", valid.split('.').nth(1).unwrap_or(""));
    // HS256 "signed" with the RSA public key as the HMAC secret.
    let public_pem = std::fs::read(fixture("jwt-rsa-public.pem")).expect("public key");
    let confused = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims(),
        &EncodingKey::from_secret(&public_pem),
    )
    .expect("sign");

    for (what, token, detail) in [
        ("expired", expired, "expired"),
        ("not yet valid", early, "not valid yet"),
        ("wrong issuer", wrong_iss, "issuer"),
        ("wrong audience", wrong_aud, "audience"),
        ("no exp", no_exp, "exp"),
        ("bad signature", bad_signature, "signature"),
        ("alg none", alg_none, ""),
        ("HS256 against RS256", confused, "algorithm"),
    ] {
        let got = call_with_token(&gw, &token).await;
        let problem = got.assert_problem(401, "invalid_credentials");
        assert!(
            problem["detail"].as_str().unwrap_or("").contains(detail),
            "{what}: {problem}"
        );
    }
    assert_eq!(up.count(), 0);
    gw.shutdown().await;
}

#[tokio::test]
async fn a_token_within_the_leeway_is_accepted() {
    let up = Upstream::start().await;
    let gw = gateway_at(&up, &rs256_config(JWT_AUTH), clock()).await;
    let mut c = claims();
    c["exp"] = json!(NOW_SECS - 59);
    c["nbf"] = json!(NOW_SECS + 59);
    let got = call_with_token(&gw, &sign_rs256(&c, None)).await;
    assert_eq!(got.status, 200, "{:?}", got.body);
    gw.shutdown().await;
}

#[tokio::test]
async fn hs256_tokens_verify_with_the_secret_from_the_environment() {
    let var = "TOLLGATE_ACCESS_TEST_JWT_SECRET_1";
    std::env::set_var(var, "a-test-secret-of-at-least-32-bytes!!");
    let up = Upstream::start().await;
    let extra = clients(&format!(
        "jwt:\n  algorithms: [HS256]\n  secret_env: {var}\n{JWT_AUTH}"
    ));
    let gw = gateway_at(&up, &extra, clock()).await;
    let mut c = claims();
    c.as_object_mut().map(|o| o.remove("aud"));
    let token = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &c,
        &EncodingKey::from_secret(b"a-test-secret-of-at-least-32-bytes!!"),
    )
    .expect("sign");
    let got = call_with_token(&gw, &token).await;
    assert_eq!(got.status, 200, "{:?}", got.body);
    let wrong = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &c,
        &EncodingKey::from_secret(b"another-secret-of-at-least-32-bytes"),
    )
    .expect("sign");
    call_with_token(&gw, &wrong)
        .await
        .assert_problem(401, "invalid_credentials");
    gw.shutdown().await;
}

#[test]
fn jwt_as_a_method_without_a_jwt_section_is_a_config_error() {
    let errors = compile_errors("apply: [{ type: auth, methods: [api_key, jwt] }]");
    assert!(errors.contains("apply[0].methods[1]"), "{errors}");
}

// === roles ===

const ADMINS_ONLY: &str = "  - { type: roles, allow: [admin], deny: [suspended] }\n";

fn with_roles(policy: &str) -> String {
    format!("apply:\n  - {{ type: auth, methods: [api_key, jwt] }}\n{policy}")
}

#[tokio::test]
async fn roles_from_the_client_config_admit_and_refuse() {
    let up = Upstream::start().await;
    let gw = gateway_at(&up, &rs256_config(&with_roles(ADMINS_ONLY)), clock()).await;
    let admin = gw
        .get_with("/employees/7", &[("x-api-key", ADMIN_KEY)])
        .await;
    assert_eq!(admin.status, 200, "{:?}", admin.body);
    let reader = gw.get_with("/employees/7", &[("x-api-key", KEY)]).await;
    reader.assert_problem(403, "forbidden_role");
    assert_eq!(up.count(), 1);
    gw.shutdown().await;
}

#[tokio::test]
async fn roles_from_a_token_claim_count_and_unknown_names_are_ignored() {
    let up = Upstream::start().await;
    let gw = gateway_at(&up, &rs256_config(&with_roles(ADMINS_ONLY)), clock()).await;
    let mut c = claims();
    c["roles"] = json!(["wizard", "admin"]);
    let got = call_with_token(&gw, &sign_rs256(&c, None)).await;
    assert_eq!(got.status, 200, "{:?}", got.body);
    c["roles"] = json!(["wizard", "reader"]);
    call_with_token(&gw, &sign_rs256(&c, None))
        .await
        .assert_problem(403, "forbidden_role");
    gw.shutdown().await;
}

#[tokio::test]
async fn a_token_naming_a_configured_client_gets_that_clients_roles() {
    let up = Upstream::start().await;
    let gw = gateway_at(&up, &rs256_config(&with_roles(ADMINS_ONLY)), clock()).await;
    let mut c = claims();
    // The claim says admin, but hr-portal is configured as a reader.
    c["sub"] = json!("hr-portal");
    c["roles"] = json!(["admin"]);
    call_with_token(&gw, &sign_rs256(&c, None))
        .await
        .assert_problem(403, "forbidden_role");
    gw.shutdown().await;
}

#[tokio::test]
async fn a_denied_role_wins_over_an_allowed_one() {
    let up = Upstream::start().await;
    let gw = gateway_at(&up, &rs256_config(&with_roles(ADMINS_ONLY)), clock()).await;
    let mut c = claims();
    c["roles"] = json!(["admin", "suspended"]);
    call_with_token(&gw, &sign_rs256(&c, None))
        .await
        .assert_problem(403, "forbidden_role");
    assert_eq!(up.count(), 0);
    gw.shutdown().await;
}

#[tokio::test]
async fn roles_without_a_client_answer_401_unauthenticated() {
    let up = Upstream::start().await;
    let policy = "apply: [{ type: roles, allow: [reader] }]";
    let gw = gateway_at(&up, &clients(policy), clock()).await;
    gw.get("/employees/7")
        .await
        .assert_problem(401, "unauthenticated");
    assert_eq!(up.count(), 0);
    gw.shutdown().await;
}

#[test]
fn an_undeclared_role_is_a_config_error_at_its_entry() {
    let errors = compile_errors(&clients(
        "policies:\n  admins: { type: roles, allow: [admin, root] }\n",
    ));
    assert!(errors.contains("policies.admins.allow[1]"), "{errors}");
    assert!(errors.contains("`root`"), "{errors}");
}

// === ip ===

fn ip_config(policy: &str, trusted: &str) -> String {
    format!("trusted_proxies: [{trusted}]\napply: [{policy}]\n")
}

#[tokio::test]
async fn an_allowed_address_passes_and_others_get_403_ip_denied() {
    let up = Upstream::start().await;
    let gw = gateway_at(
        &up,
        &ip_config("{ type: ip, allow: [127.0.0.0/8] }", ""),
        clock(),
    )
    .await;
    assert_eq!(gw.get("/employees/7").await.status, 200);
    gw.shutdown().await;
    let gw = gateway_at(
        &up,
        &ip_config("{ type: ip, allow: [10.0.0.0/8] }", ""),
        clock(),
    )
    .await;
    gw.get("/employees/7")
        .await
        .assert_problem(403, "ip_denied");
    assert_eq!(up.count(), 1);
    gw.shutdown().await;
}

#[tokio::test]
async fn forwarded_for_from_a_trusted_proxy_is_judged() {
    let up = Upstream::start().await;
    let policy = "{ type: ip, allow: [0.0.0.0/0], deny: [203.0.113.0/24] }";
    let gw = gateway_at(&up, &ip_config(policy, "127.0.0.1"), clock()).await;
    gw.get_with("/employees/7", &[("x-forwarded-for", "203.0.113.9")])
        .await
        .assert_problem(403, "ip_denied");
    let ok = gw
        .get_with("/employees/7", &[("x-forwarded-for", "198.51.100.9")])
        .await;
    assert_eq!(ok.status, 200, "{:?}", ok.body);
    gw.shutdown().await;
}

#[tokio::test]
async fn forwarded_for_from_an_untrusted_peer_is_ignored() {
    let up = Upstream::start().await;
    // Only 10.0.0.0/8 is trusted, so the loopback peer is judged itself.
    let policy = "{ type: ip, allow: [203.0.113.0/24] }";
    let gw = gateway_at(&up, &ip_config(policy, "10.0.0.0/8"), clock()).await;
    gw.get_with("/employees/7", &[("x-forwarded-for", "203.0.113.9")])
        .await
        .assert_problem(403, "ip_denied");
    assert_eq!(up.count(), 0);
    gw.shutdown().await;
}

#[tokio::test]
async fn the_rightmost_untrusted_hop_of_a_multi_hop_chain_is_judged() {
    let up = Upstream::start().await;
    let policy = "{ type: ip, deny: [198.51.100.7] }";
    let gw = gateway_at(&up, &ip_config(policy, "127.0.0.1, 10.0.0.0/8"), clock()).await;
    // Caller 198.51.100.7 -> proxy 10.0.0.5 -> loopback; the leftmost hop
    // is whatever the caller wrote and is not believed.
    gw.get_with(
        "/employees/7",
        &[("x-forwarded-for", "192.0.2.1, 198.51.100.7, 10.0.0.5")],
    )
    .await
    .assert_problem(403, "ip_denied");
    let ok = gw
        .get_with(
            "/employees/7",
            &[("x-forwarded-for", "198.51.100.7, 192.0.2.1, 10.0.0.5")],
        )
        .await;
    assert_eq!(ok.status, 200, "{:?}", ok.body);
    gw.shutdown().await;
}

#[tokio::test]
async fn ipv6_networks_are_matched() {
    let up = Upstream::start().await;
    let policy = "{ type: ip, allow: [\"2001:db8::/32\"], deny: [\"2001:db8:bad::/48\"] }";
    let gw = gateway_at(&up, &ip_config(policy, "127.0.0.1"), clock()).await;
    let ok = gw
        .get_with("/employees/7", &[("x-forwarded-for", "2001:db8:1::5")])
        .await;
    assert_eq!(ok.status, 200, "{:?}", ok.body);
    for denied in ["2001:db8:bad::5", "2001:db9::1", "[2001:db8:bad::1]:443"] {
        gw.get_with("/employees/7", &[("x-forwarded-for", denied)])
            .await
            .assert_problem(403, "ip_denied");
    }
    assert_eq!(up.count(), 1);
    gw.shutdown().await;
}

#[tokio::test]
async fn an_ip_refusal_comes_before_auth_whatever_the_list_order() {
    let up = Upstream::start().await;
    let policies =
        "apply:\n  - { type: auth, methods: [api_key] }\n  - { type: ip, deny: [127.0.0.1] }\n";
    let gw = gateway_at(&up, &clients(policies), clock()).await;
    gw.get("/employees/7")
        .await
        .assert_problem(403, "ip_denied");
    assert_eq!(up.count(), 0);
    gw.shutdown().await;
}

#[test]
fn a_bad_cidr_is_a_config_error_at_its_entry() {
    let errors = compile_errors("apply: [{ type: ip, allow: [10.0.0.0/8], deny: [10.0.0.0/33] }]");
    assert!(errors.contains("apply[0].deny[0]"), "{errors}");
}

// === headers ===

#[tokio::test]
async fn required_matched_and_forbidden_headers_are_enforced() {
    let up = Upstream::start().await;
    let policy = r#"apply: [{ type: headers, require: [X-Tenant], match: { X-Tenant: "[a-z]+" }, forbid: [X-Debug] }]"#;
    let gw = gateway_at(&up, policy, clock()).await;
    gw.get("/employees/7")
        .await
        .assert_problem(400, "header_required");
    gw.get_with("/employees/7", &[("x-tenant", "acme1")])
        .await
        .assert_problem(400, "header_invalid");
    gw.get_with("/employees/7", &[("x-tenant", "acme"), ("x-debug", "1")])
        .await
        .assert_problem(400, "header_forbidden");
    assert_eq!(up.count(), 0);
    let ok = gw.get_with("/employees/7", &[("X-TENANT", "acme")]).await;
    assert_eq!(ok.status, 200, "{:?}", ok.body);
    assert_eq!(up.count(), 1);
    gw.shutdown().await;
}

#[tokio::test]
async fn request_headers_are_set_from_placeholders_and_removed() {
    let var = "TOLLGATE_ACCESS_TEST_WORKFLOW_TOKEN";
    std::env::set_var(var, "wf-secret-123");
    let up = Upstream::start().await;
    let policy = format!(
        r#"trusted_proxies: [127.0.0.1]
apply:
  - {{ type: auth, methods: [api_key] }}
  - type: headers
    request:
      remove: [Cookie]
      set:
        X-Caller: "${{client.id}}"
        X-Trace: "req=${{request.id}}"
        X-Caller-Ip: "${{client.ip}}"
        X-Workflow-Token: "Bearer ${{env.{var}}}"
"#
    );
    let gw = gateway_at(&up, &clients(&policy), clock()).await;
    let got = gw
        .get_with(
            "/employees/7",
            &[
                ("x-api-key", KEY),
                ("cookie", "session=1"),
                ("x-workflow-token", "caller-supplied"),
                ("x-forwarded-for", "198.51.100.20"),
            ],
        )
        .await;
    assert_eq!(got.status, 200, "{:?}", got.body);
    let seen = up.last();
    let request_id = got.header("x-request-id").expect("request id");
    assert_eq!(seen.headers["x-caller"], "hr-portal");
    assert_eq!(
        seen.headers["x-trace"],
        format!("req={request_id}").as_str()
    );
    assert_eq!(seen.headers["x-caller-ip"], "198.51.100.20");
    assert_eq!(seen.headers["x-workflow-token"], "Bearer wf-secret-123");
    assert!(seen.headers.get("cookie").is_none());
    gw.shutdown().await;
}

#[tokio::test]
async fn an_anonymous_client_placeholder_removes_the_callers_own_header() {
    let up = Upstream::start().await;
    let policy = r#"apply: [{ type: headers, request: { set: { X-Caller: "${client.id}" } } }]"#;
    let gw = gateway_at(&up, policy, clock()).await;
    gw.get_with("/employees/7", &[("x-caller", "ops-console")])
        .await;
    assert!(up.last().headers.get("x-caller").is_none());
    gw.shutdown().await;
}

#[tokio::test]
async fn response_headers_are_set_and_removed_on_the_way_back() {
    let up = Upstream::start().await;
    let policy = r#"apply: [{ type: headers, response: { remove: [Content-Type], set: { X-Served-By: "tollgate ${request.id}" } } }]"#;
    let gw = gateway_at(&up, policy, clock()).await;
    let got = gw.get("/employees/7").await;
    assert_eq!(got.status, 200, "{:?}", got.body);
    assert!(got.header("content-type").is_none());
    let id = got.header("x-request-id").expect("request id");
    assert_eq!(
        got.header("x-served-by"),
        Some(format!("tollgate {id}").as_str())
    );
    gw.shutdown().await;
}

#[test]
fn a_missing_env_variable_in_a_set_value_is_a_config_error() {
    let errors = compile_errors(
        "policies:\n  h: { type: headers, request: { set: { X-T: \"${env.TOLLGATE_ACCESS_TEST_UNSET_2}\" } } }\n",
    );
    assert!(errors.contains("policies.h.request.set.X-T"), "{errors}");
}

#[test]
fn bad_header_names_and_regexes_are_config_errors() {
    let errors = compile_errors(
        "policies:\n  h: { type: headers, require: [\"bad name\"], match: { X-A: \"(\" } }\n",
    );
    assert!(errors.contains("policies.h.require[0]"), "{errors}");
    assert!(errors.contains("policies.h.match.X-A"), "{errors}");
}

// === the policy library ===

#[test]
fn the_access_policy_files_compile() {
    let dir = format!("{}/policies", env!("CARGO_MANIFEST_DIR"));
    for file in [
        "require-api-key",
        "internal-network",
        "admins-only",
        "strip-internal-headers",
    ] {
        let text = std::fs::read_to_string(format!("{dir}/{file}.yaml")).expect("policy file");
        let indented: String = text.lines().map(|l| format!("  {l}\n")).collect();
        let extra = clients(&format!(
            "jwt:\n  algorithms: [RS256]\n  public_key_file: {}\npolicies:\n{indented}apply: [{file}]\n",
            fixture("jwt-rsa-public.pem")
        ));
        let compiled = compile(
            std::path::Path::new("tollgate-test.yaml"),
            &simple_config("http://127.0.0.1:9", &extra),
            tollgate::clock::SystemClock::shared(),
        );
        assert!(compiled.is_ok(), "{file}: {:?}", compiled.err());
    }
}

// === the access log ===

/// Every field DESIGN §2 names, in one line: a client with a key id, a
/// report-only refusal, and a real one.
#[tokio::test]
async fn a_json_access_line_parses_and_names_every_field() {
    let up = Upstream::start().await;
    let policies = "apply:\n  - { type: auth, methods: [api_key] }\n  - { type: roles, allow: [admin], report_only: true }\n  - { type: headers, require: [X-Tenant] }\n";
    let logs = capture_logs();
    let gw = gateway_at(&up, &clients(policies), clock()).await;
    let got = gw.get_with("/employees/7", &[("x-api-key", KEY)]).await;
    got.assert_problem(400, "header_required");
    let access = logs.access();
    let [line] = &access[..] else {
        panic!("one access line: {access:?}");
    };
    for field in [
        "time",
        "request_id",
        "client_ip",
        "client",
        "key_id",
        "api",
        "operation",
        "method",
        "path",
        "status",
        "duration_ms",
        "bytes_out",
        "code",
        "would_reject",
        "would_reject_policy",
    ] {
        assert!(line.get(field).is_some(), "{field} missing in {line}");
    }
    assert_eq!(line["request_id"], got.header("x-request-id").expect("id"));
    assert_eq!(line["client_ip"], "127.0.0.1");
    assert_eq!(line["client"], "hr-portal");
    assert_eq!(line["key_id"], "hr-2027");
    assert_eq!(line["api"], "directory");
    assert_eq!(line["operation"], "getEmployee");
    assert_eq!(line["method"], "GET");
    assert_eq!(line["path"], "/employees/7");
    assert_eq!(line["status"], 400);
    assert_eq!(line["code"], "header_required");
    assert_eq!(line["would_reject"], "forbidden_role");
    assert!(line["duration_ms"].as_f64().is_some_and(|ms| ms >= 0.0));
    assert_eq!(
        line["bytes_out"].as_u64(),
        Some(got.body.len() as u64),
        "{line}"
    );
    // Not refused and forwarded: the upstream's share and the sizes.
    let ok = gw
        .get_with("/employees/7", &[("x-api-key", KEY), ("x-tenant", "acme")])
        .await;
    assert_eq!(ok.status, 200);
    let line = logs.access().pop().expect("a second line");
    assert!(line["upstream_ms"].as_f64().is_some(), "{line}");
    assert!(line.get("code").is_none(), "{line}");
    assert!(line["time"].as_str().is_some_and(|t| t.ends_with('Z')));
    gw.shutdown().await;
}

#[tokio::test]
async fn quotes_and_backslashes_in_a_path_are_escaped_in_the_json_line() {
    let up = Upstream::start().await;
    let logs = capture_logs();
    let gw = gateway_at(&up, "", clock()).await;
    let request = b"GET /employees/a\"b\\c HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n";
    let answer = raw_exchange(gw.addr, request, Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 "), "{answer}");
    let line = logs.access().pop().expect("an access line");
    assert_eq!(line["path"], "/employees/a\"b\\c", "{line}");
    gw.shutdown().await;
}

/// A writer that blocks in `write` until the test lets it go, and says when
/// it got there.
struct BlockedWriter {
    entered: std::sync::mpsc::Sender<()>,
    release: std::sync::mpsc::Receiver<()>,
    out: Arc<std::sync::Mutex<Vec<u8>>>,
}

impl std::io::Write for BlockedWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let _ = self.entered.send(());
        let _ = self.release.recv();
        self.out.lock().expect("lock").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn sample_record(path: &str) -> tollgate::access_log::AccessRecord<'_> {
    tollgate::access_log::AccessRecord {
        time: std::time::SystemTime::now(),
        request_id: "r1",
        client_ip: [127, 0, 0, 1].into(),
        client: "",
        key_id: None,
        api: "directory",
        operation: "getEmployee",
        method: "GET",
        path,
        status: 200,
        duration: Duration::from_millis(1),
        upstream: None,
        bytes_in: None,
        bytes_out: None,
        code: None,
        would_reject: None,
        would_reject_policy: None,
        trace_id: None,
    }
}

#[test]
fn a_full_queue_drops_and_counts_lines_instead_of_waiting() {
    use tollgate::access_log::{AccessLog, Destination, Format};
    let (entered_tx, entered) = std::sync::mpsc::channel();
    let (release, release_rx) = std::sync::mpsc::channel();
    let out = Arc::new(std::sync::Mutex::new(Vec::new()));
    let dropped = prometheus_client::metrics::counter::Counter::<u64>::default();
    let writer = BlockedWriter {
        entered: entered_tx,
        release: release_rx,
        out: out.clone(),
    };
    // Room for one waiting line at a time.
    let log = AccessLog::new(
        Destination::Writer(Box::new(writer)),
        Format::Json,
        1,
        dropped.clone(),
    );
    log.record(&sample_record("/1"));
    // The writer holds line 1 and is stuck writing it.
    entered.recv().expect("the writer wrote");
    log.record(&sample_record("/2"));
    for i in 3..=10 {
        log.record(&sample_record(&format!("/{i}")));
    }
    assert_eq!(dropped.get(), 8);
    assert_eq!(log.dropped(), 8);
    // Unstuck, it writes what it kept: lines 1 and 2.
    for _ in 0..2 {
        release.send(()).expect("release");
    }
    drop(entered);
    assert!(log.flush(Duration::from_secs(10)), "flushed");
    let text = String::from_utf8(out.lock().expect("lock").clone()).expect("utf-8");
    let paths: Vec<String> = text
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("json")["path"].to_string())
        .collect();
    assert_eq!(paths, ["\"/1\"", "\"/2\""]);
}

#[tokio::test]
async fn dropped_access_lines_are_a_metric() {
    let app = App::start(
        &simple_config("http://127.0.0.1:9", "admin: { listen: 127.0.0.1:0 }"),
        clock(),
    )
    .await;
    let metrics = app.metrics().await;
    assert_eq!(
        sample(&metrics, "tollgate_access_log_dropped_total"),
        Some(0.0),
        "{metrics}"
    );
    app.shutdown().await;
}

/// The lines of a file, as JSON.
fn json_lines(path: &std::path::Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

#[tokio::test]
async fn the_access_log_goes_to_a_file_and_is_reopened_after_a_rotation() {
    let up = Upstream::start().await;
    let _logs = capture_logs();
    let extra = "admin: { listen: 127.0.0.1:0 }\naccess_log: { path: access.log, format: json }";
    let app = App::start(&simple_config(&up.url(), extra), clock()).await;
    let file = app.dir.path().join("access.log");
    let log = app.running.reloader.deps().access_log.clone();
    assert_eq!(app.get_with("/employees/1", &[]).await.status, 200);
    assert!(log.flush(Duration::from_secs(10)));
    let before = json_lines(&file);
    assert_eq!(before.len(), 1, "{before:?}");
    assert_eq!(before[0]["path"], "/employees/1");

    // logrotate: move the file, then ask for a reopen.
    let rotated = app.dir.path().join("access.log.1");
    std::fs::rename(&file, &rotated).expect("rotate");
    log.reopen();
    assert!(log.flush(Duration::from_secs(10)));
    assert_eq!(app.get_with("/employees/2", &[]).await.status, 200);
    assert!(log.flush(Duration::from_secs(10)));
    let after = json_lines(&file);
    assert_eq!(after.len(), 1, "{after:?}");
    assert_eq!(after[0]["path"], "/employees/2");
    assert_eq!(json_lines(&rotated).len(), 1);
    app.shutdown().await;
}

#[test]
fn an_access_log_file_that_cannot_be_opened_is_a_config_error_at_its_key() {
    let errors = compile_errors("access_log: { path: /nonexistent-dir/tollgate/access.log }");
    assert!(errors.contains("access_log.path"), "{errors}");
    assert!(errors.contains("cannot open the access log"), "{errors}");
}

/// Polls until `check` holds, for at most 20 s.
async fn until(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !check() {
        assert!(tokio::time::Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// `tollgate serve` as an operator runs it: the JSON access log to a file,
/// SIGUSR1 after a rotation, SIGTERM; no line is lost at exit.
#[cfg(unix)]
#[tokio::test]
async fn serve_reopens_its_access_log_on_sigusr1_and_writes_every_line_before_exit() {
    use rustix::process::{kill_process, Pid, Signal};
    let up = Upstream::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let port = closed_port().await.port();
    let config = simple_config(&up.url(), "access_log: { path: access.log }")
        .replace("listen: 127.0.0.1:0", &format!("listen: 127.0.0.1:{port}"));
    let config_file = dir.path().join("tollgate.yaml");
    std::fs::write(&config_file, config).expect("write config");
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(["--log-format", "json", "serve", "-c"])
        .arg(&config_file)
        .env("RUST_LOG", "warn,tollgate::access=info")
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn tollgate");
    let pid = child
        .id()
        .and_then(|id| Pid::from_raw(id as i32))
        .expect("pid");
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Full<bytes::Bytes>>();
    let call = |n: usize| {
        let req = http::Request::get(format!("http://127.0.0.1:{port}/employees/{n}"))
            .body(http_body_util::Full::default())
            .expect("request");
        exchange(&client, req)
    };
    let file = dir.path().join("access.log");
    let rotated = dir.path().join("access.log.1");
    let lines = || json_lines(&rotated).len() + json_lines(&file).len();
    until("the gateway came up", || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    })
    .await;
    assert_eq!(call(1).await.status, 200);
    until("a line in the file", || json_lines(&file).len() == 1).await;

    std::fs::rename(&file, &rotated).expect("rotate");
    kill_process(pid, Signal::USR1).expect("SIGUSR1");
    // Until the signal is handled, lines still land in the moved file.
    let mut n = 1;
    while json_lines(&file).is_empty() {
        n += 1;
        assert_eq!(call(n).await.status, 200);
        until("the line was written", || lines() == n).await;
    }
    // One more, then stop at once: it is written before the exit.
    n += 1;
    assert_eq!(call(n).await.status, 200);
    kill_process(pid, Signal::TERM).expect("SIGTERM");
    let status = tokio::time::timeout(Duration::from_secs(20), child.wait())
        .await
        .expect("exited")
        .expect("status");
    assert!(status.success(), "{status}");
    let (old, new) = (json_lines(&rotated), json_lines(&file));
    assert_eq!(old.len() + new.len(), n, "{old:?} {new:?}");
    assert_eq!(old[0]["path"], "/employees/1");
    assert_eq!(
        new.last().map(|l| l["path"].clone()),
        Some(format!("/employees/{n}").into())
    );
}
