//! `type: cors` (DESIGN §3): preflights answered by the gateway before ip
//! and auth and never forwarded; actual calls get the CORS headers on the
//! way out, for allowed origins only.

use bytes::Bytes;
use http::{Method, Request};
use http_body_util::Full;

use crate::common::{browser, gateway, Got, TestGateway, Upstream};

/// The demo key's hash (`password`), as in the other suites.
const KEY_SHA: &str = "5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8";

/// An API under key auth and a limit, with the cors policy applied as
/// `scope` says (`gateway` or `api`).
fn config(upstream: &str, cors: &str, scope: &str) -> String {
    let (gateway_apply, api_apply) = match scope {
        "gateway" => ("[browser, key]", "[limit]"),
        _ => ("[key]", "[browser, limit]"),
    };
    format!(
        r#"version: 1
listen: 127.0.0.1:0
clients:
  - id: app
    api_keys: [{{ sha256: {KEY_SHA} }}]
policies:
  key: {{ type: auth, methods: [api_key] }}
  limit: {{ type: rate_limit, limit: 100, window: 1m }}
  lan: {{ type: ip, deny: [0.0.0.0/0, "::/0"] }}
  browser: {cors}
apply: {gateway_apply}
apis:
  - name: directory
    base_path: /employees
    upstream: {upstream}
    apply: {api_apply}
    operations:
      - id: getEmployee
        method: GET
        path: /{{employeeId}}
      - id: deleteEmployee
        method: DELETE
        path: /{{employeeId}}
      - id: createEmployee
        method: POST
        path: /
  - name: closed
    base_path: /closed
    upstream: {upstream}
    operations:
      - id: walled
        method: GET
        path: /x
        apply: [lan]
"#
    )
}

const APP: &str = "https://app.example.com";

const BROWSER: &str = "{ type: cors, origins: [https://app.example.com, 'https://*.partners.example'], credentials: true, max_age: 10m }";

async fn send(gw: &TestGateway, method: Method, path: &str, headers: &[(&str, &str)]) -> Got {
    let mut req = Request::builder().method(method).uri(gw.url(path));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    gw.send(req.body(Full::<Bytes>::default()).expect("request"))
        .await
}

async fn preflight(gw: &TestGateway, path: &str, origin: &str, method: &str) -> Got {
    send(
        gw,
        Method::OPTIONS,
        path,
        &[
            ("origin", origin),
            ("access-control-request-method", method),
            ("access-control-request-headers", "content-type, x-api-key"),
        ],
    )
    .await
}

#[tokio::test]
async fn a_preflight_is_answered_without_credentials_and_never_forwarded() {
    let upstream = Upstream::start().await;
    for scope in ["api", "gateway"] {
        let gw = gateway(&config(&upstream.url(), BROWSER, scope)).await;
        // GET and DELETE are the only operations at this path: OPTIONS is
        // no operation, and the preflight carries no key, yet it is answered.
        for asked in ["DELETE", "GET", "PUT"] {
            let got = preflight(&gw, "/employees/7", APP, asked).await;
            assert_eq!(got.status, 200, "{scope} {asked}: {:?}", got.body);
            assert!(got.body.is_empty());
            assert_eq!(got.header("access-control-allow-origin"), Some(APP));
            assert_eq!(got.header("access-control-allow-credentials"), Some("true"));
            assert_eq!(got.header("access-control-max-age"), Some("600"));
            let methods = got.header("access-control-allow-methods").unwrap_or("");
            assert!(methods.contains("DELETE"), "{methods}");
            let headers = got.header("access-control-allow-headers").unwrap_or("");
            assert!(headers.contains("x-api-key"), "{headers}");
            assert!(got.header("x-request-id").is_some());
            assert!(got.header("www-authenticate").is_none());
        }
        // A pattern origin, at another path of the API.
        let got = preflight(&gw, "/employees/", "https://crm.partners.example", "POST").await;
        assert_eq!(
            got.header("access-control-allow-origin"),
            Some("https://crm.partners.example")
        );
        gw.shutdown().await;
    }
    assert_eq!(upstream.count(), 0, "no preflight reached the upstream");
}

#[tokio::test]
async fn a_disallowed_origin_gets_no_cors_headers_on_a_preflight_or_a_call() {
    let upstream = Upstream::start().await;
    let gw = gateway(&config(&upstream.url(), BROWSER, "api")).await;
    let got = preflight(&gw, "/employees/7", "https://evil.example", "DELETE").await;
    // tower-http's answer: the preflight is answered (200) but grants
    // nothing, so the browser refuses to send the call.
    assert_eq!(got.status, 200);
    let granted: Vec<_> = got
        .headers
        .keys()
        .filter(|k| k.as_str().starts_with("access-control-"))
        .collect();
    assert!(granted.is_empty(), "{granted:?}");
    assert_eq!(upstream.count(), 0);

    let got = gw
        .get_with(
            "/employees/7",
            &[
                ("origin", "https://evil.example"),
                ("x-api-key", "password"),
            ],
        )
        .await;
    assert_eq!(got.status, 200);
    assert!(got.header("access-control-allow-origin").is_none());
    assert!(got.header("vary").unwrap_or("").contains("origin"));
    assert_eq!(upstream.count(), 1);
    gw.shutdown().await;
}

#[tokio::test]
async fn an_allowed_call_gets_origin_credentials_and_exposed_headers_even_when_refused() {
    let upstream = Upstream::start().await;
    let gw = gateway(&config(&upstream.url(), BROWSER, "api")).await;
    // The upstream tries to grant every origin itself; the policy speaks
    // for the API.
    let got = gw
        .get_with(
            "/employees/7?h-access-control-allow-origin=*",
            &[("origin", APP), ("x-api-key", "password")],
        )
        .await;
    assert_eq!(got.status, 200);
    assert_eq!(got.header("access-control-allow-origin"), Some(APP));
    assert_eq!(got.header("access-control-allow-credentials"), Some("true"));
    let exposed = got.header("access-control-expose-headers").unwrap_or("");
    for name in [
        "ratelimit",
        "ratelimit-policy",
        "retry-after",
        "x-request-id",
    ] {
        assert!(
            exposed.split(',').any(|e| e.trim() == name),
            "{name} in {exposed}"
        );
    }
    assert!(got.header("ratelimit").is_some());
    let seen = upstream.last();
    assert_eq!(seen.method, Method::GET);

    // A refusal by auth is readable by the page too: it can say why.
    let got = gw.get_with("/employees/7", &[("origin", APP)]).await;
    got.assert_problem(401, "unauthenticated");
    assert_eq!(got.header("access-control-allow-origin"), Some(APP));
    assert_eq!(upstream.count(), 1);

    // No Origin: no CORS headers, only Vary.
    let got = gw
        .get_with("/employees/7", &[("x-api-key", "password")])
        .await;
    assert!(got.header("access-control-allow-origin").is_none());
    assert!(got.header("vary").unwrap_or("").contains("origin"));
    gw.shutdown().await;
}

#[tokio::test]
async fn an_operation_without_cors_treats_options_as_any_call() {
    let upstream = Upstream::start().await;
    let gw = gateway(&config(&upstream.url(), BROWSER, "api")).await;
    // `closed` has no cors policy: its preflight is an OPTIONS call to a
    // GET-only path.
    let got = preflight(&gw, "/closed/x", APP, "GET").await;
    got.assert_problem(405, "method_not_allowed");
    assert!(got.header("access-control-allow-origin").is_none());
    // A bare OPTIONS (no Origin) under cors is no preflight either.
    let got = send(&gw, Method::OPTIONS, "/employees/7", &[]).await;
    got.assert_problem(405, "method_not_allowed");
    assert_eq!(upstream.count(), 0);
    gw.shutdown().await;
}

#[tokio::test]
async fn a_gateway_wide_cors_answers_preflights_before_the_ip_screen() {
    let upstream = Upstream::start().await;
    let gw = gateway(&config(&upstream.url(), BROWSER, "gateway")).await;
    // `walled` denies every address, yet its preflight is answered.
    let got = preflight(&gw, "/closed/x", APP, "GET").await;
    assert_eq!(got.status, 200);
    assert_eq!(got.header("access-control-allow-origin"), Some(APP));
    // The call itself is refused by the screen, readably.
    let got = gw
        .get_with("/closed/x", &[("origin", APP), ("x-api-key", "password")])
        .await;
    got.assert_problem(403, "ip_denied");
    assert_eq!(got.header("access-control-allow-origin"), Some(APP));
    // A path no operation is published at: still a 404, with the headers.
    let got = gw.get_with("/nowhere", &[("origin", APP)]).await;
    got.assert_problem(404, "route_not_found");
    assert_eq!(got.header("access-control-allow-origin"), Some(APP));
    assert_eq!(upstream.count(), 0);
    gw.shutdown().await;
}

#[tokio::test]
async fn a_wildcard_origin_with_credentials_is_a_config_error() {
    let yaml = config(
        "http://127.0.0.1:9",
        "{ type: cors, origins: ['*'], credentials: true }",
        "api",
    );
    let errors = crate::common::compile(
        std::path::Path::new("cors.yaml"),
        &yaml,
        tollgate::clock::SystemClock::shared(),
    )
    .err()
    .unwrap_or_default();
    assert!(
        errors.iter().any(|e| e.starts_with("cors.yaml:")
            && e.contains("origins")
            && e.contains("credentials")),
        "{errors:?}"
    );
}

// === a real browser ===

/// Serves `page` (HTML) at every path of 127.0.0.1:0.
async fn page_server(page: String) -> std::net::SocketAddr {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind page server");
    let addr = listener.local_addr().expect("addr");
    let page = bytes::Bytes::from(page);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let page = page.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |_req| {
                    let page = page.clone();
                    async move {
                        Ok::<_, std::convert::Infallible>(
                            http::Response::builder()
                                .header("content-type", "text/html; charset=utf-8")
                                .body(Full::new(page))
                                .expect("response"),
                        )
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

/// Loads `url` in headless Chromium and returns the DOM once the page's
/// fetch settled; `None` when no Chromium is installed (outside CI).
async fn browser_dom(url: &str) -> Option<String> {
    let browser = browser::chromium("the browser CORS test")?;
    let flags = [
        // Virtual time waits for the page's fetch to settle.
        "--virtual-time-budget=20000".to_string(),
        "--dump-dom".to_string(),
    ];
    let output = browser::headless(&browser, &flags, url).await;
    Some(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// What the page's `fetch` saw, as it wrote it into `#result`.
fn result_of(dom: &str) -> String {
    dom.split("<pre id=\"result\">")
        .nth(1)
        .and_then(|rest| rest.split("</pre>").next())
        .unwrap_or("")
        .to_string()
}

/// The page: calls the gateway named in its query (`?gw=URL`) with a
/// method and a header that need a preflight, then writes what it read.
const PAGE: &str = r#"<!doctype html><html><body><pre id="result">pending</pre><script>
const gw = new URLSearchParams(location.search).get("gw");
fetch(gw + "/employees/7", { method: "DELETE", headers: { "X-API-Key": "password" } })
  .then(r => r.text().then(() => {
    document.getElementById("result").textContent =
      "status=" + r.status + " ratelimit=" + (r.headers.get("RateLimit") !== null) +
      " request-id=" + (r.headers.get("X-Request-Id") !== null);
  }))
  .catch(() => { document.getElementById("result").textContent = "blocked"; });
</script></body></html>"#;

#[tokio::test]
async fn a_browser_page_on_another_origin_passes_the_preflight_and_reads_exposed_headers() {
    let upstream = Upstream::start().await;
    let page = page_server(PAGE.to_string()).await;
    let allowed = format!("http://127.0.0.1:{}", page.port());
    let gw = gateway(&config(
        &upstream.url(),
        &format!("{{ type: cors, origins: ['{allowed}'] }}"),
        "api",
    ))
    .await;
    let gw_url = format!("http://{}", gw.addr);
    let Some(dom) = browser_dom(&format!("{allowed}/?gw={gw_url}")).await else {
        gw.shutdown().await;
        return;
    };
    // The preflight passed (answered by the gateway), the DELETE was sent,
    // and the page could read the exposed headers.
    assert_eq!(
        result_of(&dom),
        "status=200 ratelimit=true request-id=true",
        "{dom}"
    );
    let seen = upstream.seen();
    assert_eq!(seen.len(), 1, "only the DELETE reached the upstream");
    assert_eq!(seen[0].method, Method::DELETE);

    // The same page from another origin (`localhost` is not `127.0.0.1`):
    // the preflight grants nothing, so the browser never sends the call.
    let other = format!("http://localhost:{}", page.port());
    let dom = browser_dom(&format!("{other}/?gw={gw_url}"))
        .await
        .unwrap_or_default();
    assert_eq!(result_of(&dom), "blocked", "{dom}");
    assert_eq!(upstream.count(), 1);
    gw.shutdown().await;
}
