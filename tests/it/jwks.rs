//! JWT signing keys that rotate: `jwks_file` re-read on reload, and
//! `jwks_url` fetched from a real JWKS server on 127.0.0.1 that rotates its
//! keys, fails on demand and counts fetches — cache lifetime from
//! `Cache-Control`, the unknown-`kid` refetch bound, last good keys kept
//! when a fetch fails, keys kept across a reload. Also `leeway` at its
//! exact boundary. Time is the injected clock's: no sleeps.

use crate::common::*;
use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tollgate::clock::ManualClock;

/// 2027-01-15T08:00:00Z.
const NOW_SECS: u64 = 1_800_000_000;
const SECOND: u64 = 1_000_000_000;

fn fixture(name: &str) -> String {
    format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// The two test keys: (private key file, JWK set file).
const KEY_1: (&str, &str) = ("jwt-rsa-private.pem", "jwt-rsa.jwks.json");
const KEY_2: (&str, &str) = ("jwt-rsa-2-private.pem", "jwt-rsa-2.jwks.json");

/// A JWK set of the given keys, each published under the given `kid`.
fn jwk_set(keys: &[((&str, &str), &str)]) -> String {
    let keys: Vec<serde_json::Value> = keys
        .iter()
        .map(|((_, jwks), kid)| {
            let text = std::fs::read_to_string(fixture(jwks)).expect("fixture");
            let set: serde_json::Value = serde_json::from_str(&text).expect("json");
            let mut key = set["keys"][0].clone();
            key["kid"] = json!(kid);
            key
        })
        .collect();
    json!({ "keys": keys }).to_string()
}

/// A token for `agent-42`, valid around `now_secs`, signed by `key` and
/// naming `kid`.
fn token(key: (&str, &str), kid: &str, now_secs: u64) -> String {
    let pem = std::fs::read(fixture(key.0)).expect("private key");
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(kid.to_string());
    let claims = json!({
        "iss": "https://idp.example.com",
        "sub": "agent-42",
        "iat": now_secs,
        "exp": now_secs + 3600,
    });
    jsonwebtoken::encode(
        &header,
        &claims,
        &EncodingKey::from_rsa_pem(&pem).expect("rsa key"),
    )
    .expect("sign")
}

/// An RS256 token naming `kid` with a signature that verifies under no key.
fn unsigned_token(kid: &str) -> String {
    use base64::Engine as _;
    let b64 = |v: serde_json::Value| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
    };
    let header = b64(json!({ "alg": "RS256", "typ": "JWT", "kid": kid }));
    let claims = b64(json!({ "iss": "https://idp.example.com", "sub": "x", "exp": NOW_SECS + 60 }));
    format!("{header}.{claims}.c2lnbmF0dXJl")
}

fn jwt_config(upstream: &str, source: &str) -> String {
    simple_config(
        upstream,
        &format!(
            "jwt:\n  issuer: https://idp.example.com\n  algorithms: [RS256]\n  {source}\napply: [{{ type: auth, methods: [jwt] }}]"
        ),
    )
}

async fn call(gw: &TestGateway, token: &str) -> Got {
    let bearer = format!("Bearer {token}");
    gw.get_with("/employees/7", &[("authorization", bearer.as_str())])
        .await
}

// === a JWKS server ===

/// What the server answers now.
struct Answer {
    status: u16,
    body: String,
    cache_control: Option<String>,
}

/// A real JWKS endpoint on 127.0.0.1 that counts its fetches. Every answer
/// closes its connection, so `stop()` leaves nothing to reach.
struct JwksServer {
    addr: SocketAddr,
    answer: Arc<Mutex<Answer>>,
    fetches: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl JwksServer {
    async fn start(body: String, cache_control: Option<&str>) -> JwksServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let answer = Arc::new(Mutex::new(Answer {
            status: 200,
            body,
            cache_control: cache_control.map(str::to_string),
        }));
        let fetches = Arc::new(AtomicUsize::new(0));
        let (served, counted) = (answer.clone(), fetches.clone());
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (served, counted) = (served.clone(), counted.clone());
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |_req: Request<Incoming>| {
                        counted.fetch_add(1, Ordering::SeqCst);
                        let answer = served.lock().expect("lock");
                        let mut r = Response::new(Full::new(Bytes::from(answer.body.clone())));
                        *r.status_mut() =
                            http::StatusCode::from_u16(answer.status).expect("status");
                        r.headers_mut()
                            .insert("connection", http::HeaderValue::from_static("close"));
                        if let Some(cc) = &answer.cache_control {
                            r.headers_mut()
                                .insert("cache-control", cc.parse().expect("header value"));
                        }
                        std::future::ready(Ok::<_, Infallible>(r))
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        JwksServer {
            addr,
            answer,
            fetches,
            task,
        }
    }

    fn url(&self) -> String {
        format!("http://{}/.well-known/jwks.json", self.addr)
    }

    fn fetches(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }

    fn serve(&self, status: u16, body: String) {
        let mut answer = self.answer.lock().expect("lock");
        answer.status = status;
        answer.body = body;
    }

    /// Stops listening: fetches fail to connect.
    fn stop(&self) {
        self.task.abort();
    }
}

async fn url_gateway(up: &Upstream, idp: &JwksServer, clock: Arc<ManualClock>) -> TestGateway {
    let yaml = jwt_config(&up.url(), &format!("jwks_url: {}", idp.url()));
    gateway_with_clock(&yaml, clock).await
}

// === jwks_file ===

#[tokio::test]
async fn a_rotated_jwks_file_is_read_again_on_reload() {
    let up = Upstream::start().await;
    let keys = tempfile::tempdir().expect("tempdir");
    let file = keys.path().join("idp.jwks.json");
    std::fs::write(&file, jwk_set(&[(KEY_1, "k1")])).expect("write");
    let clock = ManualClock::new(NOW_SECS * SECOND);
    let yaml = jwt_config(&up.url(), &format!("jwks_file: {}", file.display())).replace(
        "listen: 127.0.0.1:0",
        "listen: 127.0.0.1:0\nadmin: { listen: 127.0.0.1:0 }",
    );
    let app = App::start(&yaml, clock).await;
    let running = &app;
    let call = |t: String| async move {
        let bearer = format!("Bearer {t}");
        running
            .get_with("/employees/7", &[("authorization", &bearer)])
            .await
    };
    assert_eq!(call(token(KEY_1, "k1", NOW_SECS)).await.status, 200);
    call(token(KEY_2, "k2", NOW_SECS))
        .await
        .assert_problem(401, "invalid_credentials");

    // The IdP rotates: k2 in, k1 out. Until the reload, nothing changes.
    std::fs::write(&file, jwk_set(&[(KEY_2, "k2")])).expect("rewrite");
    assert_eq!(call(token(KEY_1, "k1", NOW_SECS)).await.status, 200);
    app.running.reloader.reload().await.expect("reloads");
    let old = call(token(KEY_1, "k1", NOW_SECS)).await;
    let problem = old.assert_problem(401, "invalid_credentials");
    assert_eq!(problem["detail"], "no configured key fits the token");
    assert_eq!(call(token(KEY_2, "k2", NOW_SECS)).await.status, 200);
    app.shutdown().await;
}

// === jwks_url ===

#[tokio::test]
async fn fetched_keys_are_kept_for_max_age_then_refreshed_in_the_background() {
    let up = Upstream::start().await;
    let idp = JwksServer::start(jwk_set(&[(KEY_1, "k1")]), Some("public, max-age=120")).await;
    let clock = ManualClock::new(NOW_SECS * SECOND);
    let gw = url_gateway(&up, &idp, clock.clone()).await;
    let k1 = token(KEY_1, "k1", NOW_SECS);
    let k2 = token(KEY_2, "k2", NOW_SECS);

    // The first token fetches the set; the next ones use it.
    assert_eq!(call(&gw, &k1).await.status, 200);
    assert_eq!(call(&gw, &k1).await.status, 200);
    assert_eq!(idp.fetches(), 1);

    // The IdP rotates to k2. Within max-age the gateway does not ask.
    idp.serve(200, jwk_set(&[(KEY_2, "k2")]));
    clock.advance(Duration::from_secs(119));
    assert_eq!(call(&gw, &k1).await.status, 200);
    assert_eq!(idp.fetches(), 1);

    // Past max-age: this call is judged with the keys in use (no wait),
    // and starts a refresh that the next call finds done or waits for.
    clock.advance(Duration::from_secs(2));
    assert_eq!(call(&gw, &k1).await.status, 200);
    assert_eq!(call(&gw, &k2).await.status, 200);
    call(&gw, &k1)
        .await
        .assert_problem(401, "invalid_credentials");
    assert_eq!(idp.fetches(), 2);
    assert_eq!(up.count(), 5);
    gw.shutdown().await;
}

/// Sends 100 tokens naming kids nobody published (batch `batch`), each
/// refused. They are never verified, so they need no real signature.
async fn random_kids(gw: &TestGateway, batch: u32) {
    for i in 0..100 {
        let token = unsigned_token(&format!("kid-{batch}-{i:02}"));
        call(gw, &token)
            .await
            .assert_problem(401, "invalid_credentials");
    }
}

#[tokio::test]
async fn unknown_kids_refetch_at_most_once_per_ten_seconds() {
    let up = Upstream::start().await;
    let idp = JwksServer::start(jwk_set(&[(KEY_1, "k1")]), None).await;
    let clock = ManualClock::new(NOW_SECS * SECOND);
    let gw = url_gateway(&up, &idp, clock.clone()).await;
    assert_eq!(call(&gw, &token(KEY_1, "k1", NOW_SECS)).await.status, 200);
    assert_eq!(idp.fetches(), 1);

    // 100 tokens naming random kids, at one instant, then every 10 s.
    random_kids(&gw, 0).await;
    // Within 10 s of the last fetch: none.
    assert_eq!(idp.fetches(), 1);
    for round in 1..=3 {
        clock.advance(Duration::from_secs(10));
        random_kids(&gw, round).await;
        assert_eq!(idp.fetches(), 1 + round as usize, "round {round}");
    }
    clock.advance(Duration::from_secs(9));
    random_kids(&gw, 4).await;
    assert_eq!(idp.fetches(), 4);
    // A kid the IdP has started publishing is picked up by the next
    // allowed fetch.
    idp.serve(200, jwk_set(&[(KEY_1, "k1"), (KEY_2, "new-kid")]));
    clock.advance(Duration::from_secs(1));
    assert_eq!(
        call(&gw, &token(KEY_2, "new-kid", NOW_SECS)).await.status,
        200
    );
    assert_eq!(idp.fetches(), 5);
    assert_eq!(up.count(), 2);
    gw.shutdown().await;
}

#[tokio::test]
async fn a_failed_fetch_keeps_the_last_good_keys() {
    let up = Upstream::start().await;
    let idp = JwksServer::start(jwk_set(&[(KEY_1, "k1")]), Some("max-age=60")).await;
    let clock = ManualClock::new(NOW_SECS * SECOND);
    let gw = url_gateway(&up, &idp, clock.clone()).await;
    let logs = capture_logs();
    let k1 = token(KEY_1, "k1", NOW_SECS);
    let k2 = token(KEY_2, "k2", NOW_SECS);
    assert_eq!(call(&gw, &k1).await.status, 200);

    // The IdP fails with a 500, then with a body that is not a key set.
    for (status, body) in [
        (500, "oops".to_string()),
        (200, "{\"keys\": []}".to_string()),
    ] {
        idp.serve(status, body);
        clock.advance(Duration::from_secs(61));
        // Stale: a background refresh starts; the next call waits for it.
        assert_eq!(call(&gw, &k1).await.status, 200);
        call(&gw, &k2)
            .await
            .assert_problem(401, "invalid_credentials");
        assert_eq!(call(&gw, &k1).await.status, 200, "after a {status}");
    }
    assert_eq!(idp.fetches(), 3);

    // The IdP goes away altogether.
    idp.stop();
    clock.advance(Duration::from_secs(61));
    assert_eq!(call(&gw, &k1).await.status, 200);
    call(&gw, &k2)
        .await
        .assert_problem(401, "invalid_credentials");
    assert_eq!(call(&gw, &k1).await.status, 200);
    let warnings = logs
        .text()
        .lines()
        .filter(|l| l.contains("cannot fetch the JWT signing keys"))
        .count();
    assert_eq!(warnings, 3, "{}", logs.text());
    assert_eq!(up.count(), 7);
    gw.shutdown().await;
}

#[tokio::test]
async fn an_idp_down_at_start_refuses_tokens_until_it_answers() {
    let up = Upstream::start().await;
    let idp = JwksServer::start(String::new(), None).await;
    idp.serve(503, "starting".into());
    let clock = ManualClock::new(NOW_SECS * SECOND);
    let gw = url_gateway(&up, &idp, clock.clone()).await;
    let k1 = token(KEY_1, "k1", NOW_SECS);
    let got = call(&gw, &k1).await;
    let problem = got.assert_problem(401, "invalid_credentials");
    assert_eq!(
        problem["detail"],
        "the token signing keys are not available yet"
    );
    assert_eq!(idp.fetches(), 1);

    idp.serve(200, jwk_set(&[(KEY_1, "k1")]));
    // Within 10 s of the failed fetch: still refused, no new fetch.
    clock.advance(Duration::from_secs(9));
    call(&gw, &k1)
        .await
        .assert_problem(401, "invalid_credentials");
    assert_eq!(idp.fetches(), 1);
    clock.advance(Duration::from_secs(1));
    assert_eq!(call(&gw, &k1).await.status, 200);
    assert_eq!(idp.fetches(), 2);
    gw.shutdown().await;
}

#[tokio::test]
async fn fetched_keys_survive_a_reload_that_keeps_the_url() {
    let up = Upstream::start().await;
    let idp = JwksServer::start(jwk_set(&[(KEY_1, "k1")]), None).await;
    let yaml = jwt_config(&up.url(), &format!("jwks_url: {}", idp.url())).replace(
        "listen: 127.0.0.1:0",
        "listen: 127.0.0.1:0\nadmin: { listen: 127.0.0.1:0 }",
    );
    let clock = ManualClock::new(NOW_SECS * SECOND);
    // Started as `serve` starts: the set is fetched at start.
    let app = App::start(&yaml, clock.clone()).await;
    let bearer = format!("Bearer {}", token(KEY_1, "k1", NOW_SECS));
    let auth = [("authorization", bearer.as_str())];
    assert_eq!(app.get_with("/employees/7", &auth).await.status, 200);
    assert_eq!(idp.fetches(), 1);

    // The IdP is down now; a reload keeping the URL keeps the keys.
    idp.serve(500, "down".into());
    app.running.reloader.reload().await.expect("reloads");
    assert_eq!(app.get_with("/employees/7", &auth).await.status, 200);
    assert_eq!(idp.fetches(), 1);

    // A reload to another URL starts afresh (and fetches it at once).
    idp.serve(200, jwk_set(&[(KEY_2, "k2")]));
    let moved = yaml.replace("/.well-known/jwks.json", "/keys");
    std::fs::write(app.dir.path().join("tollgate.yaml"), moved).expect("rewrite");
    app.running.reloader.reload().await.expect("reloads");
    let bearer2 = format!("Bearer {}", token(KEY_2, "k2", NOW_SECS));
    let got = app
        .get_with("/employees/7", &[("authorization", bearer2.as_str())])
        .await;
    assert_eq!(got.status, 200, "{:?}", got.body);
    assert_eq!(idp.fetches(), 2);
    app.get_with("/employees/7", &auth)
        .await
        .assert_problem(401, "invalid_credentials");
    app.shutdown().await;
}

#[test]
fn a_plain_http_jwks_url_off_loopback_is_a_config_error_at_its_place() {
    let yaml = jwt_config(
        "http://127.0.0.1:9",
        "jwks_url: http://idp.example.com/jwks",
    );
    let errors = match compile(
        std::path::Path::new("jwt.yaml"),
        &yaml,
        tollgate::clock::SystemClock::shared(),
    ) {
        Ok(_) => panic!("the config compiled"),
        Err(errors) => errors,
    };
    assert_eq!(
        errors,
        ["jwt.yaml:6:3: jwt.jwks_url: `http://idp.example.com/jwks`: keys are fetched over https (plain http only from a loopback address)"]
    );
}

// === leeway ===

#[tokio::test]
async fn exp_and_nbf_hold_to_the_leeway_and_not_a_nanosecond_more() {
    let up = Upstream::start().await;
    let clock = ManualClock::new(NOW_SECS * SECOND);
    let yaml = jwt_config(
        &up.url(),
        &format!("jwks_file: {}", fixture("jwt-rsa.jwks.json")),
    );
    let gw = gateway_with_clock(&yaml, clock.clone()).await;
    let signed = |claims: serde_json::Value| {
        let pem = std::fs::read(fixture(KEY_1.0)).expect("private key");
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some("test-rsa".into());
        jsonwebtoken::encode(
            &header,
            &claims,
            &EncodingKey::from_rsa_pem(&pem).expect("key"),
        )
        .expect("sign")
    };
    let claims = |exp: u64, nbf: u64| json!({ "iss": "https://idp.example.com", "sub": "a", "exp": exp, "nbf": nbf });
    // Expired 60 s ago: inside the default 60 s leeway, to the nanosecond.
    let expired = signed(claims(NOW_SECS - 60, NOW_SECS - 3600));
    assert_eq!(call(&gw, &expired).await.status, 200);
    clock.advance(Duration::from_nanos(1));
    let problem = call(&gw, &expired)
        .await
        .assert_problem(401, "invalid_credentials");
    assert_eq!(problem["detail"], "the token has expired");

    // Valid from 60 s ahead: accepted now, refused a nanosecond earlier.
    clock.set(NOW_SECS * SECOND);
    let early = signed(claims(NOW_SECS + 3600, NOW_SECS + 60));
    assert_eq!(call(&gw, &early).await.status, 200);
    clock.set(NOW_SECS * SECOND - 1);
    let problem = call(&gw, &early)
        .await
        .assert_problem(401, "invalid_credentials");
    assert_eq!(problem["detail"], "the token is not valid yet");

    // An `exp` that is not a number never passes for "no expiry".
    let mut odd = claims(0, NOW_SECS - 3600);
    odd["exp"] = json!("never");
    let problem = call(&gw, &signed(odd))
        .await
        .assert_problem(401, "invalid_credentials");
    assert!(
        problem["detail"]
            .as_str()
            .is_some_and(|d| d.contains("`exp`")),
        "{problem}"
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn a_configured_leeway_replaces_the_default() {
    let up = Upstream::start().await;
    let clock = ManualClock::new(NOW_SECS * SECOND);
    let yaml = jwt_config(
        &up.url(),
        &format!("jwks_file: {}\n  leeway: 5s", fixture("jwt-rsa.jwks.json")),
    );
    let gw = gateway_with_clock(&yaml, clock.clone()).await;
    let pem = std::fs::read(fixture(KEY_1.0)).expect("private key");
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some("test-rsa".into());
    let token = jsonwebtoken::encode(
        &header,
        &json!({ "iss": "https://idp.example.com", "sub": "a", "exp": NOW_SECS - 5 }),
        &EncodingKey::from_rsa_pem(&pem).expect("key"),
    )
    .expect("sign");
    assert_eq!(call(&gw, &token).await.status, 200);
    clock.advance(Duration::from_nanos(1));
    call(&gw, &token)
        .await
        .assert_problem(401, "invalid_credentials");
    gw.shutdown().await;
}
