//! JSON-schema validation of request and response bodies, end to end:
//! what the caller gets, and whether the upstream was reached.

use crate::common::*;
use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use std::path::Path;

fn config(upstream: &str, response_validation: &str, response_required: &str) -> String {
    format!(
        r#"version: 1
listen: 127.0.0.1:0
apis:
  - name: people
    upstream: {upstream}
    operations:
      - id: createPerson
        method: POST
        path: /people
        request_schema:
          type: object
          required: [name]
          properties:
            name: {{ type: string }}
            tags: {{ type: array, items: {{ type: integer }} }}
      - id: getPerson
        method: GET
        path: /people/{{id}}
        response_validation: {response_validation}
        response_schema:
          type: object
          required: [{response_required}]
"#
    )
}

async fn post(gw: &TestGateway, content_type: &str, body: &'static [u8]) -> Got {
    let req = Request::post(gw.url("/people"))
        .header("content-type", content_type)
        .body(Full::new(Bytes::from_static(body)))
        .expect("request");
    gw.send(req).await
}

#[tokio::test]
async fn a_body_that_breaks_the_schema_is_refused_with_a_pointer_per_violation() {
    let up = Upstream::start().await;
    let gw = gateway(&config(&up.url(), "log", "method")).await;
    let got = post(&gw, "application/json", br#"{"name": 3, "tags": [1, "x"]}"#).await;
    let problem = got.assert_problem(400, "invalid_request_body");
    let pointers: Vec<&str> = problem["errors"]
        .as_array()
        .expect("errors")
        .iter()
        .filter_map(|e| e["pointer"].as_str())
        .collect();
    assert!(pointers.contains(&"/name"), "{problem}");
    assert!(pointers.contains(&"/tags/1"), "{problem}");
    let missing = post(&gw, "application/json", br#"{}"#).await;
    let problem = missing.assert_problem(400, "invalid_request_body");
    assert_eq!(problem["errors"][0]["pointer"], "");
    assert_eq!(up.count(), 0, "nothing invalid reaches the upstream");
    gw.shutdown().await;
}

#[tokio::test]
async fn a_valid_body_reaches_the_upstream_byte_for_byte() {
    let up = Upstream::start().await;
    let gw = gateway(&config(&up.url(), "log", "method")).await;
    let body = br#"{ "name": "Ada",  "tags": [1, 2] }"#;
    let got = post(&gw, "application/json; charset=utf-8", body).await;
    assert_eq!(got.status, 200, "{:?}", got.body);
    assert_eq!(up.last().body, &body[..]);
    gw.shutdown().await;
}

#[tokio::test]
async fn a_body_that_is_not_json_is_415_and_broken_json_is_400() {
    let up = Upstream::start().await;
    let gw = gateway(&config(&up.url(), "log", "method")).await;
    post(&gw, "text/plain", b"name=Ada")
        .await
        .assert_problem(415, "unsupported_media_type");
    let broken = post(&gw, "application/json", b"{\"name\": ").await;
    let problem = broken.assert_problem(400, "invalid_request_body");
    assert_eq!(problem["errors"][0]["pointer"], "");
    assert!(
        problem["errors"][0]["message"]
            .as_str()
            .unwrap_or("")
            .contains("EOF"),
        "{problem}"
    );
    assert_eq!(up.count(), 0);
    gw.shutdown().await;
}

#[tokio::test]
async fn an_invalid_response_is_502_under_enforce() {
    let up = Upstream::start().await;
    let gw = gateway(&config(&up.url(), "enforce", "id")).await;
    let got = gw.get("/people/7").await;
    got.assert_problem(502, "invalid_upstream_response");
    assert_eq!(up.count(), 1);
    // A response that keeps the contract passes untouched.
    let gw2 = gateway(&config(&up.url(), "enforce", "method")).await;
    let ok = gw2.get("/people/7").await;
    assert_eq!(ok.status, 200);
    assert_eq!(ok.json()["uri"], "/people/7");
    gw.shutdown().await;
    gw2.shutdown().await;
}

#[tokio::test]
async fn an_invalid_response_passes_through_under_log_and_off() {
    let up = Upstream::start().await;
    for mode in ["log", "off"] {
        let gw = gateway(&config(&up.url(), mode, "id")).await;
        let got = gw.get("/people/7").await;
        assert_eq!(got.status, 200, "{mode}");
        assert_eq!(got.json()["method"], "GET", "{mode}");
        gw.shutdown().await;
    }
}

#[test]
fn a_broken_schema_is_a_config_error_at_its_line() {
    let yaml = "version: 1\nlisten: 127.0.0.1:0\napis:\n  - name: a\n    upstream: http://127.0.0.1:9\n    operations:\n      - id: x\n        method: POST\n        path: /x\n        request_schema: { type: 12 }\n";
    let errors = compile(
        Path::new("bad.yaml"),
        yaml,
        tollgate::clock::SystemClock::shared(),
    )
    .map(|_| ())
    .expect_err("refused");
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].starts_with(
            "bad.yaml:10:9: apis[0].operations[0].request_schema: not a valid JSON Schema"
        ),
        "{}",
        errors[0]
    );
}
