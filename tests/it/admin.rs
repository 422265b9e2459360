//! The admin listener and what an operator relies on: the token, every
//! endpoint, metrics after real traffic, usage and quotas, bans, reload
//! (under load, refused, watched), certificate renewal, graceful shutdown,
//! h2c and TLS+h2 through the policies, and the status page in a browser.

use crate::common::*;
use bytes::Bytes;
use http::{Method, Request};
use http_body_util::Full;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use sha2::{Digest, Sha256};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

const KEY: &str = "hr-secret-key";

/// The config the admin tests run: one client, auth on the API, a rate
/// limit and a quota on `getEmployee`, a report-only IP rule and an abuse
/// rule that bans scanners of `/wp-admin` at once.
fn config(upstream: &str, admin_extra: &str, extra_ops: &str, top: &str) -> String {
    let hash = hex::encode(Sha256::digest(KEY.as_bytes()));
    format!(
        r#"version: 1
listen: 127.0.0.1:0
admin: {{ listen: 127.0.0.1:0{admin_extra} }}
{top}
clients:
  - id: hr
    api_keys: [{{ sha256: {hash} }}]
policies:
  key-required: {{ type: auth, methods: [api_key] }}
  two-per-minute: {{ type: rate_limit, limit: 2, window: 1m, key: client }}
  daily: {{ type: quota, limit: 5, period: day, key: client }}
  shadow-deny: {{ type: ip, deny: [127.0.0.0/8], report_only: true }}
  scanners: {{ type: abuse, block_paths: ['^/wp-admin'], threshold: 1000, ban: 15m }}
apply: [shadow-deny, scanners]
apis:
  - name: directory
    title: Employee Directory
    base_path: /employees
    upstream: {upstream}
    apply: [key-required]
    operations:
      - {{ id: getEmployee, method: GET, path: '/{{id}}', apply: [two-per-minute, daily] }}
      - {{ id: listEmployees, method: GET, path: '/' }}
      - {{ id: gated, method: GET, path: '/gate/wait', upstream: '{upstream}/gate' }}
{extra_ops}"#
    )
}

#[tokio::test]
async fn admin_paths_need_the_token_and_health_does_not() {
    let up = Upstream::start().await;
    std::env::set_var("TOLLGATE_TEST_ADMIN_TOKEN_1", "s3cret-admin");
    let yaml = config(
        &up.url(),
        ", token_env: TOLLGATE_TEST_ADMIN_TOKEN_1",
        "",
        "",
    );
    let ops = App::with_token(&yaml, Some("s3cret-admin")).await;

    let health = ops.bare_admin("/healthz", None).await;
    assert_eq!(
        (health.status.as_u16(), &health.body[..]),
        (200, &b"ok\n"[..])
    );
    assert_eq!(ops.bare_admin("/readyz", None).await.status, 200);
    for path in [
        "/metrics",
        "/admin/apis",
        "/admin/usage",
        "/admin/bans",
        "/",
        "/openapi.json",
    ] {
        let got = ops.bare_admin(path, None).await;
        got.assert_problem(401, "admin_unauthorized");
        let wrong = ops.bare_admin(path, Some("Bearer s3cret-admiN")).await;
        wrong.assert_problem(401, "admin_unauthorized");
        assert_eq!(ops.admin_get(path).await.status, 200, "{path}");
    }
    // A browser can open the status page with the token as a Basic password.
    let basic = ops
        .bare_admin("/", Some("Basic b3BlcmF0b3I6czNjcmV0LWFkbWlu"))
        .await;
    assert_eq!(basic.status, 200);
    ops.shutdown().await;
}

#[tokio::test]
async fn without_a_token_the_admin_listener_refuses_a_public_address() {
    let up = Upstream::start().await;
    let yaml = config(&up.url(), "", "", "").replace(
        "admin: { listen: 127.0.0.1:0 }",
        "admin: { listen: 0.0.0.0:0 }",
    );
    let error = App::try_start(&yaml, tollgate::clock::SystemClock::shared(), None)
        .await
        .err()
        .expect("refused");
    assert!(error.contains("loopback"), "{error}");

    // A token_env naming an unset variable is refused too, not ignored.
    let yaml = config(&up.url(), ", token_env: TOLLGATE_TEST_UNSET_TOKEN", "", "");
    let error = App::try_start(&yaml, tollgate::clock::SystemClock::shared(), None)
        .await
        .err()
        .expect("refused");
    assert!(error.contains("TOLLGATE_TEST_UNSET_TOKEN"), "{error}");
}

#[tokio::test]
async fn metrics_count_requests_refusals_by_policy_and_report_only_would_refusals() {
    let up = Upstream::start().await;
    let ops = App::with_token(&config(&up.url(), "", "", ""), None).await;
    assert_eq!(ops.call("/employees/1", Some(KEY)).await.status, 200);
    assert_eq!(ops.call("/employees/1", Some(KEY)).await.status, 200);
    ops.call("/employees/1", Some(KEY))
        .await
        .assert_problem(429, "rate_limited");
    ops.call("/employees/1", None)
        .await
        .assert_problem(401, "unauthenticated");
    ops.call("/nowhere", None)
        .await
        .assert_problem(404, "route_not_found");

    let text = ops.metrics().await;
    let get = |series: &str| sample(&text, series).unwrap_or_else(|| panic!("{series} in\n{text}"));
    assert_eq!(
        get(
            r#"tollgate_requests_total{api="directory",operation="getEmployee",client="hr",status="200"}"#
        ),
        2.0
    );
    assert_eq!(
        get(
            r#"tollgate_requests_total{api="directory",operation="getEmployee",client="hr",status="429"}"#
        ),
        1.0
    );
    assert_eq!(
        get(
            r#"tollgate_requests_total{api="directory",operation="getEmployee",client="anonymous",status="401"}"#
        ),
        1.0
    );
    assert_eq!(
        get(
            r#"tollgate_requests_total{api="",operation="unrouted",client="anonymous",status="404"}"#
        ),
        1.0
    );
    assert_eq!(
        get(
            r#"tollgate_policy_rejections_total{policy="two-per-minute",code="rate_limited",mode="enforce"}"#
        ),
        1.0
    );
    assert_eq!(
        get(
            r#"tollgate_policy_rejections_total{policy="key-required",code="unauthenticated",mode="enforce"}"#
        ),
        1.0
    );
    // The report-only rule judged all five calls, routed or not.
    assert_eq!(
        get(
            r#"tollgate_policy_rejections_total{policy="shadow-deny",code="ip_denied",mode="report"}"#
        ),
        5.0
    );
    assert_eq!(
        get(r#"tollgate_request_duration_seconds_count{api="directory",operation="getEmployee"}"#),
        4.0
    );
    assert_eq!(
        get(r#"tollgate_upstream_duration_seconds_count{api="directory",operation="getEmployee"}"#),
        2.0
    );
    assert_eq!(get("tollgate_requests_in_flight"), 0.0);
    assert_eq!(get("tollgate_bans_active"), 0.0);
    // Never a raw path or an address as a label.
    assert!(!text.contains("/nowhere") && !text.contains("127.0.0.1"));
    ops.shutdown().await;
}

#[tokio::test]
async fn usage_reports_calls_refusals_and_quota_left_per_client() {
    let up = Upstream::start().await;
    let ops = App::with_token(&config(&up.url(), "", "", ""), None).await;
    for _ in 0..3 {
        ops.call("/employees/7", Some(KEY)).await;
    }
    ops.call("/employees/", Some(KEY)).await;
    ops.call("/employees/7", None).await;

    let usage = ops.admin_get("/admin/usage").await.json();
    let clients = usage["clients"].as_array().expect("clients");
    let hr = clients
        .iter()
        .find(|c| c["client"] == "hr")
        .expect("hr listed");
    assert_eq!(hr["calls"], 4);
    assert_eq!(hr["rejections"]["rate_limited"], 1);
    assert_eq!(hr["operations"]["getEmployee"]["calls"], 3);
    assert_eq!(
        hr["operations"]["getEmployee"]["rejections"]["rate_limited"],
        1
    );
    assert_eq!(hr["operations"]["listEmployees"]["calls"], 1);
    assert!(hr["bytes_out"].as_u64().unwrap_or(0) > 0, "{hr}");
    // The rate-limited call consumed no quota: two of five used.
    let daily = &hr["quotas"][0];
    assert_eq!(
        (
            &daily["policy"],
            &daily["used"],
            &daily["remaining"],
            &daily["limit"]
        ),
        (&"daily".into(), &2.into(), &3.into(), &5.into())
    );
    assert!(daily["resets_at"]
        .as_str()
        .unwrap_or("")
        .ends_with("T00:00:00Z"));
    let anonymous = clients
        .iter()
        .find(|c| c["client"] == "anonymous")
        .expect("anonymous listed");
    assert_eq!(anonymous["calls"], 1);
    assert_eq!(anonymous["rejections"]["unauthenticated"], 1);
    ops.shutdown().await;
}

#[tokio::test]
async fn apis_readiness_and_openapi_describe_the_loaded_config() {
    let up = Upstream::start().await;
    let ops = App::with_token(&config(&up.url(), "", "", ""), None).await;
    let apis = ops.admin_get("/admin/apis").await.json();
    let directory = &apis["apis"][0];
    assert_eq!(directory["name"], "directory");
    assert_eq!(directory["title"], "Employee Directory");
    let get = &directory["operations"][0];
    assert_eq!(
        (&get["id"], &get["method"], &get["path"]),
        (
            &"getEmployee".into(),
            &"GET".into(),
            &"/employees/{id}".into()
        )
    );
    let names: Vec<&str> = get["policies"]
        .as_array()
        .expect("policies")
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    assert_eq!(
        names,
        [
            "shadow-deny",
            "scanners",
            "key-required",
            "two-per-minute",
            "daily"
        ]
    );
    assert_eq!(get["policies"][0]["report_only"], true);

    let ready = ops.admin_get("/readyz").await;
    assert_eq!(
        (ready.status.as_u16(), &ready.json()["status"]),
        (200, &"ready".into())
    );

    let json = ops.admin_get("/openapi.json").await;
    assert_eq!(json.json()["openapi"], "3.1.0");
    assert!(json.json()["paths"]["/employees/{id}"]["get"]["operationId"] == "getEmployee");
    let yaml = ops.admin_get("/openapi.yaml").await;
    let doc: serde_yaml::Value = serde_yaml::from_slice(&yaml.body).expect("yaml");
    assert_eq!(doc["openapi"], serde_yaml::Value::from("3.1.0"));

    ops.admin(Method::POST, "/admin/apis")
        .await
        .assert_problem(405, "method_not_allowed");
    ops.admin_get("/admin/nothing")
        .await
        .assert_problem(404, "route_not_found");
    ops.shutdown().await;
}

#[tokio::test]
async fn bans_are_listed_and_lifted_through_the_api() {
    let up = Upstream::start().await;
    let ops = App::with_token(&config(&up.url(), "", "", ""), None).await;
    ops.call("/wp-admin/setup.php", None)
        .await
        .assert_problem(403, "banned");
    ops.call("/employees/1", Some(KEY))
        .await
        .assert_problem(403, "banned");

    let bans = ops.admin_get("/admin/bans").await.json();
    let ban = &bans["bans"][0];
    assert_eq!(ban["key"], "scanners:127.0.0.1");
    assert!(
        ban["reason"]
            .as_str()
            .unwrap_or("")
            .contains("blocked path"),
        "{ban}"
    );
    let until = ban["until"].as_str().unwrap_or("");
    assert!(
        until.len() == 20 && until.ends_with('Z') && until.as_bytes()[10] == b'T',
        "{until}"
    );
    assert!(sample(&ops.metrics().await, "tollgate_bans_active") == Some(1.0));

    // The key holds a `:`; it travels percent-encoded.
    let lifted = ops
        .admin(Method::DELETE, "/admin/bans/scanners%3A127.0.0.1")
        .await;
    assert_eq!(lifted.status, 200, "{:?}", lifted.body);
    assert_eq!(lifted.json()["lifted"], "scanners:127.0.0.1");
    assert_eq!(ops.call("/employees/1", Some(KEY)).await.status, 200);
    assert_eq!(
        ops.admin_get("/admin/bans").await.json()["bans"],
        serde_json::json!([])
    );
    ops.admin(Method::DELETE, "/admin/bans/scanners%3A127.0.0.1")
        .await
        .assert_problem(404, "ban_not_found");
    ops.shutdown().await;
}

#[tokio::test]
async fn reloads_under_load_fail_no_request_and_keep_rate_limit_counters() {
    let up = Upstream::start().await;
    let base = config(&up.url(), "", "", "");
    let extra_op = "      - { id: extraOp, method: GET, path: '/extra/{n}' }\n";
    let with_extra = config(&up.url(), "", extra_op, "");
    let ops = Arc::new(App::with_token(&base, None).await);

    // Two of the two calls a minute are used before any reload.
    for _ in 0..2 {
        assert_eq!(ops.call("/employees/9", Some(KEY)).await.status, 200);
    }

    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut load = Vec::new();
    for _ in 0..4 {
        let (ops, stop, ok, failed) = (ops.clone(), stop.clone(), ok.clone(), failed.clone());
        load.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let got = ops.call("/employees/", Some(KEY)).await;
                let counter = if got.status == 200 { &ok } else { &failed };
                counter.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    for i in 0..20 {
        if i % 3 == 0 {
            ops.rewrite(if i % 2 == 0 { &with_extra } else { &base });
        }
        let got = ops.admin(Method::POST, "/admin/reload").await;
        assert_eq!(got.status, 200, "reload {i}: {:?}", got.body);
        assert_eq!(got.json()["status"], "reloaded");
        // Let some traffic through between reloads (bounded, no sleep).
        let before = ok.load(Ordering::Relaxed);
        for _ in 0..1000 {
            if ok.load(Ordering::Relaxed) > before {
                break;
            }
            tokio::task::yield_now().await;
        }
    }
    stop.store(true, Ordering::Relaxed);
    for task in load {
        task.await.expect("load task");
    }
    assert_eq!(failed.load(Ordering::Relaxed), 0);
    assert!(ok.load(Ordering::Relaxed) > 20);
    // The last rewrite (i = 18) kept the extra operation.
    assert_eq!(ops.call("/employees/extra/1", Some(KEY)).await.status, 200);
    // The limit counted across every reload: the third call is refused.
    ops.call("/employees/9", Some(KEY))
        .await
        .assert_problem(429, "rate_limited");
    let text = ops.metrics().await;
    assert_eq!(
        sample(&text, r#"tollgate_config_reloads_total{result="ok"}"#),
        Some(20.0)
    );
    match Arc::try_unwrap(ops) {
        Ok(ops) => ops.shutdown().await,
        Err(_) => panic!("load tasks still hold the gateway"),
    }
}

#[tokio::test]
async fn a_bad_reload_keeps_the_old_routes_and_returns_the_errors() {
    let up = Upstream::start().await;
    let good = config(&up.url(), "", "", "");
    let ops = App::with_token(&good, None).await;
    ops.rewrite(&good.replace("limit: 2, window", "limit: 2, windw"));
    let got = ops.admin(Method::POST, "/admin/reload").await;
    assert_eq!(got.status, 400);
    assert_eq!(got.header("content-type"), Some("application/problem+json"));
    let body = got.json();
    assert_eq!(body["code"], "config_invalid");
    let error = &body["errors"][0];
    let text = error["text"].as_str().unwrap_or("");
    let file = ops.file().display().to_string();
    assert!(text.starts_with(&format!("{file}:10:")), "{text}");
    assert!(
        error["message"].as_str().unwrap_or("").contains("windw"),
        "{error}"
    );
    assert_eq!(error["line"], 10);

    assert_eq!(ops.call("/employees/1", Some(KEY)).await.status, 200);
    let metrics = ops.metrics().await;
    assert_eq!(
        sample(
            &metrics,
            r#"tollgate_config_reloads_total{result="failed"}"#
        ),
        Some(1.0)
    );

    // A listener change applies the rest and says it needs a restart.
    ops.rewrite(&good.replace("listen: 127.0.0.1:0\nadmin", "listen: 127.0.0.1:1\nadmin"));
    let got = ops.admin(Method::POST, "/admin/reload").await;
    assert_eq!(got.status, 200, "{:?}", got.body);
    assert_eq!(got.json()["restart_needed"], serde_json::json!(["listen"]));
    assert!(got.json()["message"]
        .as_str()
        .unwrap_or("")
        .contains("restart"));
    assert_eq!(ops.call("/employees/1", Some(KEY)).await.status, 200);
    ops.shutdown().await;
}

#[tokio::test]
async fn reload_watch_applies_a_changed_config_file() {
    let up = Upstream::start().await;
    let yaml = |ops: &str| config(&up.url(), "", ops, "reload: watch");
    let ops = App::with_token(&yaml(""), None).await;
    ops.call("/employees/extra/1", Some(KEY))
        .await
        .assert_problem(404, "route_not_found");
    ops.rewrite(&yaml(
        "      - { id: extraOp, method: GET, path: '/extra/{n}' }\n",
    ));
    let mut status = 0;
    for _ in 0..100 {
        status = ops
            .call("/employees/extra/1", Some(KEY))
            .await
            .status
            .as_u16();
        if status == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status, 200, "the watcher reloaded within 10s");
    ops.shutdown().await;
}

#[tokio::test]
async fn shutdown_still_drains_a_request_in_flight() {
    let up = Upstream::start().await;
    let ops = App::with_token(&config(&up.url(), "", "", ""), None).await;
    let addr = ops.running.addr;
    let client = ops.client.clone();
    let in_flight = tokio::spawn(async move {
        let req = Request::get(format!("http://{addr}/employees/gate/wait"))
            .header("x-api-key", KEY)
            .body(Full::default())
            .expect("request");
        client.request(req).await.map(|r| r.status())
    });
    up.arrived().await;
    let stopping = tokio::spawn(ops.running.shutdown());
    // Bounded: wait until the listener has closed, then let the call end.
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(addr).await.is_err() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    up.release();
    let status = in_flight.await.expect("task").expect("answered");
    assert_eq!(status, 200);
    stopping.await.expect("shutdown");
}

#[tokio::test]
async fn h2c_requests_pass_through_the_policies() {
    let up = Upstream::start().await;
    let ops = App::with_token(&config(&up.url(), "", "", ""), None).await;
    let h2c: Client<HttpConnector, Full<Bytes>> = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http();
    let url = format!("http://{}/employees/3", ops.running.addr);
    let refused = h2c
        .request(Request::get(&url).body(Full::default()).expect("request"))
        .await
        .expect("answer");
    assert_eq!(
        (refused.version(), refused.status().as_u16()),
        (http::Version::HTTP_2, 401)
    );
    for expected in [200, 200, 429] {
        let got = h2c
            .request(
                Request::get(&url)
                    .header("x-api-key", KEY)
                    .body(Full::default())
                    .expect("request"),
            )
            .await
            .expect("answer");
        assert_eq!(got.status().as_u16(), expected);
    }
    ops.shutdown().await;
}

/// A self-signed certificate for 127.0.0.1, as PEM.
fn new_cert() -> (String, String) {
    let ck = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into()]).expect("cert");
    (ck.cert.pem(), ck.key_pair.serialize_pem())
}

fn client_trusting(pems: &[&str]) -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    for pem in pems {
        for cert in rustls_pemfile::certs(&mut pem.as_bytes()) {
            roots.add(cert.expect("pem")).expect("root");
        }
    }
    rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth()
}

/// The DER of the certificate a new TLS connection to `addr` is shown.
async fn served_cert(addr: std::net::SocketAddr, config: &rustls::ClientConfig) -> Vec<u8> {
    // A fresh handshake each time: a resumed TLS 1.3 session would show
    // the certificate of the session it resumes.
    let mut config = config.clone();
    config.resumption = rustls::client::Resumption::disabled();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").expect("name");
    let tls = connector.connect(name, tcp).await.expect("handshake");
    let (_, session) = tls.get_ref();
    session.peer_certificates().expect("certificates")[0].to_vec()
}

fn der(pem: &str) -> Vec<u8> {
    rustls_pemfile::certs(&mut pem.as_bytes())
        .next()
        .expect("one cert")
        .expect("pem")
        .to_vec()
}

#[tokio::test]
async fn a_renewed_certificate_is_served_to_the_next_connection_after_reload() {
    let up = Upstream::start().await;
    let certs = tempfile::tempdir().expect("tempdir");
    let (cert_file, key_file) = (certs.path().join("gw.pem"), certs.path().join("gw.key"));
    let (old_cert, old_key) = new_cert();
    std::fs::write(&cert_file, &old_cert).expect("cert");
    std::fs::write(&key_file, &old_key).expect("key");
    let tls = format!(
        "tls: {{ cert_file: {}, key_file: {} }}",
        cert_file.display(),
        key_file.display()
    );
    let ops = App::with_token(&config(&up.url(), "", "", &tls), None).await;
    let (new_cert_pem, new_key) = new_cert();
    let trust = client_trusting(&[&old_cert, &new_cert_pem]);
    assert_eq!(served_cert(ops.running.addr, &trust).await, der(&old_cert));

    // TLS + h2 through the policies.
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(trust.clone())
        .https_only()
        .enable_http2()
        .build();
    let h2: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build(https);
    let url = format!("https://127.0.0.1:{}/employees/4", ops.running.addr.port());
    let call = |key: bool| {
        let mut req = Request::get(&url);
        if key {
            req = req.header("x-api-key", KEY);
        }
        h2.request(req.body(Full::default()).expect("request"))
    };
    let refused = call(false).await.expect("answer");
    assert_eq!(
        (refused.version(), refused.status().as_u16()),
        (http::Version::HTTP_2, 401)
    );
    assert_eq!(call(true).await.expect("answer").status(), 200);

    std::fs::write(&cert_file, &new_cert_pem).expect("cert");
    std::fs::write(&key_file, &new_key).expect("key");
    let got = ops.admin(Method::POST, "/admin/reload").await;
    assert_eq!(got.status, 200, "{:?}", got.body);
    assert_eq!(
        served_cert(ops.running.addr, &trust).await,
        der(&new_cert_pem)
    );

    // An unreadable certificate is refused; the renewed one keeps serving.
    std::fs::write(&key_file, "not a key").expect("key");
    let got = ops.admin(Method::POST, "/admin/reload").await;
    assert_eq!(got.status, 400);
    assert!(
        got.json()["errors"][0]["path"] == "tls.key_file",
        "{:?}",
        got.body
    );
    assert_eq!(
        served_cert(ops.running.addr, &trust).await,
        der(&new_cert_pem)
    );
    ops.shutdown().await;
}

#[tokio::test]
async fn the_status_page_renders_operations_clients_and_bans_in_a_browser() {
    let up = Upstream::start().await;
    let ops = App::with_token(&config(&up.url(), "", "", ""), None).await;
    for _ in 0..3 {
        ops.call("/employees/2", Some(KEY)).await;
    }
    ops.call("/wp-admin/", None).await;

    // The HTML itself, checked directly.
    let page = ops.admin_get("/").await;
    assert_eq!(
        page.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    let html = String::from_utf8(page.body.to_vec()).expect("utf-8");
    for expected in [
        "getEmployee",
        "listEmployees",
        "/employees/{id}",
        "two-per-minute",
        "scanners:127.0.0.1",
        "blocked path",
        "rate_limited",
        "<code>hr</code>",
    ] {
        assert!(html.contains(expected), "{expected} missing from the page");
    }
    assert!(!html.contains("<script"));

    let Some(browser) = browser::chromium("the browser half") else {
        ops.shutdown().await;
        return;
    };
    let png = browser::artifact("status.png");
    let flags = [
        "--window-size=1200,900".to_string(),
        format!("--screenshot={}", png.display()),
    ];
    let output = browser::headless(&browser, &flags, &ops.admin_url("/")).await;
    let size = std::fs::metadata(&png).map(|m| m.len()).unwrap_or(0);
    assert!(
        size > 10_000,
        "screenshot {} is {size} bytes; chromium said: {}",
        png.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    let bytes = std::fs::read(&png).expect("png");
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
    ops.shutdown().await;
}

/// `promtool check metrics` on `text` (the classic format: promtool reads
/// no other), when promtool is installed (CI installs it and sets
/// `TOLLGATE_REQUIRE_PROMTOOL=1`, so there it must be).
fn promtool_accepts(text: &str) {
    use std::io::Write as _;
    let spawned = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn();
    let mut child = match spawned {
        Ok(child) => child,
        Err(e) => {
            assert!(
                std::env::var_os("TOLLGATE_REQUIRE_PROMTOOL").is_none(),
                "promtool is required here: {e}"
            );
            eprintln!("promtool not installed; `promtool check metrics` skipped");
            return;
        }
    };
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write to promtool");
    let out = child.wait_with_output().expect("promtool ran");
    assert!(
        out.status.success(),
        "promtool check metrics:\n{}{}\n--- text ---\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn metrics_answer_the_classic_text_format_to_a_text_plain_scraper_and_openmetrics_otherwise()
{
    let up = Upstream::start().await;
    let ops = App::with_token(&config(&up.url(), "", "", ""), None).await;
    let call = ops
        .send(
            Request::get(format!("http://{}/employees/1", ops.running.addr))
                .header("x-api-key", KEY)
                .body(Full::default())
                .expect("request"),
        )
        .await;
    assert_eq!(call.status, 200);
    let scrape = |accept: Option<&'static str>| {
        let mut req = Request::get(ops.admin_url("/metrics"));
        if let Some(accept) = accept {
            req = req.header("accept", accept);
        }
        ops.send(req.body(Full::default()).expect("request"))
    };
    // What Prometheus sends when it prefers the classic format.
    let classic = scrape(Some("text/plain;version=0.0.4;q=1,*/*;q=0.1")).await;
    assert_eq!(classic.status, 200);
    assert_eq!(
        classic.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let classic = String::from_utf8(classic.body.to_vec()).expect("utf-8");
    // OpenMetrics for an OpenMetrics scraper, and for one that names none.
    for accept in [
        Some("application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"),
        None,
    ] {
        let open = scrape(accept).await;
        assert_eq!(
            open.header("content-type"),
            Some("application/openmetrics-text; version=1.0.0; charset=utf-8"),
            "{accept:?}"
        );
        let open = String::from_utf8(open.body.to_vec()).expect("utf-8");
        assert!(open.ends_with("# EOF\n"));
        assert!(open.contains("# HELP tollgate_requests Requests answered"));
        assert!(open.contains("# TYPE tollgate_requests counter"));
        // promtool reads only the classic format (below); here: every
        // family has HELP before TYPE, and a counter's samples are `_total`.
        let lines: Vec<&str> = open.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            let Some(rest) = line.strip_prefix("# TYPE ") else {
                continue;
            };
            let (family, kind) = rest.split_once(' ').expect("TYPE NAME KIND");
            let help = format!("# HELP {family} ");
            assert!(i > 0 && lines[i - 1].starts_with(&help), "{family}: {open}");
            if kind == "counter" {
                let samples = lines[i + 1..].iter().take_while(|l| !l.starts_with('#'));
                for sample in samples {
                    assert!(sample.starts_with(&format!("{family}_total")), "{sample}");
                }
            }
        }
    }
    assert!(!classic.contains("# EOF"), "{classic}");
    // Every counter has its HELP and TYPE under its `_total` name.
    for counter in ["tollgate_requests_total", "tollgate_store_errors_total"] {
        assert!(
            classic.contains(&format!("# HELP {counter} ")),
            "{counter}: {classic}"
        );
        assert!(
            classic.contains(&format!("# TYPE {counter} counter")),
            "{counter}: {classic}"
        );
    }
    let series = r#"tollgate_requests_total{api="directory",operation="getEmployee",client="hr",status="200"}"#;
    assert_eq!(sample(&classic, series), Some(1.0), "{classic}");
    promtool_accepts(&classic);
    ops.running.shutdown().await;
}
