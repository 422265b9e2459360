//! The OpenAPI export (DESIGN §7) and `tollgate import`: a golden export of
//! a fixture config, security per operation, stable bytes, an import of
//! a real-world spec whose every operation then routes to an upstream, and
//! the round trip import -> export compared with the source spec.
//! The external validators run in scripts/validate-openapi.sh, not here.

use crate::common::*;
use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn export_of(path: &Path) -> String {
    tollgate::openapi::export_file(path, "json")
        .unwrap_or_else(|e| panic!("export failed: {}", e.join("\n")))
}

fn operations(doc: &Value) -> Vec<(String, String, Value)> {
    let mut out = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().expect("path item") {
            out.push((path.clone(), method.clone(), op.clone()));
        }
    }
    out
}

fn op<'d>(doc: &'d Value, id: &str) -> &'d Value {
    doc["paths"]
        .as_object()
        .expect("paths")
        .values()
        .flat_map(|item| item.as_object().expect("item").values())
        .find(|op| op["operationId"] == id)
        .unwrap_or_else(|| panic!("no operation {id}"))
}

#[test]
fn the_export_of_the_fixture_config_matches_the_committed_golden_file() {
    let actual = export_of(&fixture("openapi-gateway.yaml"));
    let golden = fixture("openapi-gateway.expected.json");
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&golden, &actual).expect("write golden");
    }
    let expected = std::fs::read_to_string(&golden)
        .expect("golden file (run with UPDATE_GOLDEN=1 to create it)");
    assert!(
        actual == expected,
        "the export changed; if on purpose, run `UPDATE_GOLDEN=1 cargo test --test openapi` and commit the diff"
    );
}

#[test]
fn exporting_twice_gives_the_same_bytes_in_json_and_yaml() {
    let path = fixture("openapi-gateway.yaml");
    assert_eq!(export_of(&path), export_of(&path));
    let yaml = |p: &Path| tollgate::openapi::export_file(p, "yaml").expect("yaml");
    assert_eq!(yaml(&path), yaml(&path));
    assert!(tollgate::openapi::export_file(&path, "xml").is_err());
}

#[test]
fn security_schemes_come_from_the_auth_methods_and_skipped_auth_means_no_security() {
    let doc: Value =
        serde_json::from_str(&export_of(&fixture("openapi-gateway.yaml"))).expect("json");
    let schemes = &doc["components"]["securitySchemes"];
    assert_eq!(
        schemes["apiKey"],
        json!({"type": "apiKey", "in": "header", "name": "X-API-Key", "description": "An API key issued to the client (`tollgate key`)."})
    );
    assert_eq!(schemes["apiKeyQuery_api_key"]["in"], "query");
    assert_eq!(schemes["apiKeyQuery_api_key"]["name"], "api_key");
    assert_eq!(schemes["jwt"]["scheme"], "bearer");
    assert_eq!(schemes["jwt"]["bearerFormat"], "JWT");
    assert_eq!(schemes["bearerApiKey"]["scheme"], "bearer");

    let get = op(&doc, "getEmployee");
    assert_eq!(
        get["security"],
        json!([{"apiKey": []}, {"bearerApiKey": []}, {"apiKeyQuery_api_key": []}, {"jwt": []}])
    );
    let names: Vec<&str> = get["x-tollgate-policies"]
        .as_array()
        .expect("policies")
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    assert_eq!(names, ["key-or-token", "per-client-rate", "readers"]);
    assert_eq!(get["x-ratelimit-limit"][0]["limit"], 100);
    assert_eq!(
        get["responses"]["429"]["$ref"],
        "#/components/responses/TooManyRequests"
    );
    assert_eq!(
        get["responses"]["200"]["content"]["application/json"]["schema"]["required"],
        json!(["id", "name"])
    );

    let health = op(&doc, "health");
    assert_eq!(health["security"], json!([]));
    assert_eq!(health["x-tollgate-policies"], json!([]));
    assert!(health["responses"].get("401").is_none());
}

#[test]
fn paths_are_public_templates_with_required_string_parameters() {
    let doc: Value =
        serde_json::from_str(&export_of(&fixture("openapi-gateway.yaml"))).expect("json");
    let keys: Vec<String> = operations(&doc)
        .into_iter()
        .map(|(p, m, _)| format!("{m} {p}"))
        .collect();
    assert_eq!(
        keys,
        [
            "get /employees/{employeeId}",
            "post /employees/new",
            "get /employees/files/{rest}",
            "get /employees/health",
            "post /graphql#getUsers",
            "post /graphql#callConnector",
        ]
    );
    let file = op(&doc, "employeeFile");
    assert_eq!(file["parameters"][0]["name"], "rest");
    assert_eq!(file["parameters"][0]["in"], "path");
    assert_eq!(file["parameters"][0]["required"], true);
    let create = op(&doc, "createEmployee");
    assert_eq!(
        create["requestBody"]["content"]["application/json"]["schema"]["required"],
        json!(["name"])
    );
    assert_eq!(
        create["responses"]["415"]["$ref"],
        "#/components/responses/UnsupportedMediaType"
    );
    assert_eq!(
        op(&doc, "getUsers")["x-tollgate-graphql"],
        json!({"operation": "query", "field": "users"})
    );
    assert_eq!(doc["servers"], json!([{"url": "https://api.example.org"}]));
    assert_eq!(
        doc["components"]["responses"]["BadRequest"]["content"]["application/problem+json"]
            ["schema"]["$ref"],
        "#/components/schemas/Problem"
    );
}

// === import ===

/// The Tray Platform API spec (a copy of shared/fixtures/, 18 operations,
/// bearer auth).
fn platform_spec() -> String {
    std::fs::read_to_string(fixture("tray-platform-api.yaml"))
        .expect("the Tray Platform API fixture")
}

fn imported(upstream: &str) -> String {
    let options = tollgate::openapi::ImportOptions {
        upstream: upstream.to_string(),
        name: Some("platform".into()),
        base_path: Some("/platform".into()),
    };
    let body = tollgate::openapi::import(&platform_spec(), &options).expect("import");
    format!("version: 1\nlisten: 127.0.0.1:0\n{body}")
}

/// The spec's operations as (operationId, method, path).
fn spec_operations() -> Vec<(String, String, String)> {
    let spec: serde_yaml::Value = serde_yaml::from_str(&platform_spec()).expect("spec");
    let mut out = Vec::new();
    for (path, item) in spec["paths"].as_mapping().expect("paths") {
        for (method, op) in item.as_mapping().expect("item") {
            if let Some(id) = op.get("operationId").and_then(|v| v.as_str()) {
                out.push((
                    id.to_string(),
                    method.as_str().unwrap_or("").to_uppercase(),
                    path.as_str().unwrap_or("").to_string(),
                ));
            }
        }
    }
    out
}

/// Removes what the access-policy branch implements (the `auth` policy and
/// its references), so this branch can compile and route the rest.
fn without_auth(yaml: &str) -> String {
    let mut v: serde_yaml::Value = serde_yaml::from_str(yaml).expect("yaml");
    if let Some(m) = v.as_mapping_mut() {
        m.remove("policies");
    }
    for api in v["apis"].as_sequence_mut().expect("apis") {
        let api = api.as_mapping_mut().expect("api");
        api.remove("apply");
        for op in api["operations"].as_sequence_mut().expect("ops") {
            let op = op.as_mapping_mut().expect("op");
            op.remove("apply");
            op.remove("skip");
        }
    }
    serde_yaml::to_string(&v).expect("yaml")
}

fn without_request_schemas(yaml: &str) -> String {
    let mut v: serde_yaml::Value = serde_yaml::from_str(yaml).expect("yaml");
    for api in v["apis"].as_sequence_mut().expect("apis") {
        for op in api["operations"].as_sequence_mut().expect("ops") {
            op.as_mapping_mut().expect("op").remove("request_schema");
        }
    }
    serde_yaml::to_string(&v).expect("yaml")
}

#[test]
fn the_platform_import_loads_with_a_bearer_auth_policy_and_exports_the_same_operation_ids() {
    let yaml = imported("http://127.0.0.1:9");
    assert!(yaml.starts_with("version: 1\nlisten: 127.0.0.1:0\n# Imported by `tollgate import`"));
    let loaded =
        tollgate::config::load_str(Path::new("imported.yaml"), &yaml).unwrap_or_else(|e| {
            panic!(
                "{}",
                e.iter()
                    .map(|e| e.to_string())
                    .collect::<Vec<_>>()
                    .join("\n")
            )
        });
    let config = &loaded.config;
    assert_eq!(config.apis[0].operations.len(), 18);
    assert_eq!(config.policies["platform-auth"].type_name(), "auth");
    let value: serde_yaml::Value = serde_yaml::from_str(&yaml).expect("yaml");
    // Bearer tokens are accepted as client keys, so the import loads as it
    // is; verifying them as JWTs needs the IdP's key (the output says how).
    assert_eq!(
        value["policies"]["platform-auth"]["methods"],
        serde_yaml::from_str::<serde_yaml::Value>("[api_key]").expect("yaml")
    );
    assert_eq!(
        value["policies"]["platform-auth"]["api_key"]["bearer"],
        true
    );
    assert!(yaml.contains("to verify them as JWTs, add `jwt`"));
    assert_eq!(value["apis"][0]["apply"][0], "platform-auth");

    let doc = tollgate::openapi::export(config);
    let exported: BTreeSet<String> = operations(&doc)
        .into_iter()
        .filter_map(|(_, _, op)| op["operationId"].as_str().map(str::to_string))
        .collect();
    let spec: BTreeSet<String> = spec_operations().into_iter().map(|(id, ..)| id).collect();
    assert_eq!(spec.len(), 18);
    assert_eq!(exported, spec);
    // The spec requires bearer auth everywhere: so does the export.
    for (_, _, op) in operations(&doc) {
        assert_eq!(
            op["security"],
            json!([{"apiKey": []}, {"bearerApiKey": []}]),
            "{}",
            op["operationId"]
        );
    }
}

#[tokio::test]
async fn every_imported_platform_operation_routes_to_a_real_upstream() {
    let up = Upstream::start().await;
    let yaml = without_auth(&imported(&up.url()));
    // The imported request schemas are valid JSON Schema: the full config compiles.
    compile(
        Path::new("imported.yaml"),
        &yaml,
        tollgate::clock::SystemClock::shared(),
    )
    .unwrap_or_else(|e| panic!("{}", e.join("\n")));
    let gw = gateway(&without_request_schemas(&yaml)).await;
    let ops = spec_operations();
    for (id, method, path) in &ops {
        let concrete = path
            .split('/')
            .map(|seg| if seg.starts_with('{') { "p1" } else { seg })
            .collect::<Vec<_>>()
            .join("/");
        let req = Request::builder()
            .method(method.as_str())
            .uri(gw.url(&format!("/platform{concrete}")))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from_static(b"{}")))
            .expect("request");
        let got = gw.send(req).await;
        assert_eq!(got.status, 200, "{id}: {:?}", got.body);
        let seen = up.last();
        assert_eq!(seen.headers["x-tollgate-operation"], id.as_str());
        assert_eq!(seen.uri, concrete, "{id}");
    }
    assert_eq!(up.count(), 18);
    gw.shutdown().await;
}

// === the round trip: import -> export -> the source spec ===

/// `spec` imported over `upstream`, as a config.
fn import_spec(spec: &str, upstream: &str) -> String {
    let options = tollgate::openapi::ImportOptions {
        upstream: upstream.to_string(),
        name: None,
        base_path: None,
    };
    let body = tollgate::openapi::import(spec, &options).expect("import");
    format!("version: 1\nlisten: 127.0.0.1:0\n{body}")
}

/// A spec as JSON, its `$ref`s followed where a test reads.
fn spec_json(text: &str) -> Value {
    let yaml: serde_yaml::Value = serde_yaml::from_str(text).expect("spec");
    serde_json::to_value(yaml).expect("json")
}

fn deref<'s>(spec: &'s Value, v: &'s Value) -> &'s Value {
    match v.get("$ref").and_then(Value::as_str) {
        Some(r) => spec.pointer(&r[1..]).expect("ref target"),
        None => v,
    }
}

/// Per operation id of a document: method, path, every parameter as
/// (in, name) -> (required, type, format), the response codes, and the
/// request body media types.
type Shape = (
    String,
    String,
    Vec<((String, String), (bool, Value, Value))>,
    BTreeSet<String>,
    BTreeSet<String>,
);

fn shapes(doc: &Value, keep_param: impl Fn(&str) -> bool) -> Vec<(String, Shape)> {
    let mut out = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        let item = deref(doc, item);
        for (method, op) in item.as_object().expect("item") {
            let Some(id) = op.get("operationId").and_then(Value::as_str) else {
                continue;
            };
            let mut params = Vec::new();
            for list in [item.get("parameters"), op.get("parameters")] {
                for p in list.and_then(Value::as_array).into_iter().flatten() {
                    let p = deref(doc, p);
                    let place = p["in"].as_str().unwrap_or("").to_string();
                    if !keep_param(&place) {
                        continue;
                    }
                    let key = (place, p["name"].as_str().unwrap_or("").to_string());
                    params.retain(|(k, _)| *k != key);
                    let schema = &p["schema"];
                    params.push((
                        key,
                        (
                            p["required"] == json!(true),
                            schema["type"].clone(),
                            schema["format"].clone(),
                        ),
                    ));
                }
            }
            params.sort_by(|a, b| a.0.cmp(&b.0));
            let codes = op["responses"]
                .as_object()
                .map(|r| r.keys().cloned().collect())
                .unwrap_or_default();
            let media = deref(doc, &op["requestBody"])["content"]
                .as_object()
                .map(|c| c.keys().cloned().collect())
                .unwrap_or_default();
            out.push((
                id.to_string(),
                (method.clone(), path.clone(), params, codes, media),
            ));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// Imports `spec_text`, exports the result, and checks that the export
/// says what the spec says: operations, methods, paths, path and query
/// parameters with their types and formats, every documented status
/// (success codes as written: a DELETE's 204 stays 204), and the body
/// media types. The export may add the gateway's own answers.
fn assert_round_trip(spec_text: &str) {
    let yaml = import_spec(spec_text, "http://127.0.0.1:9");
    let loaded = tollgate::config::load_str(Path::new("imported.yaml"), &yaml)
        .unwrap_or_else(|e| panic!("{e:?}\n{yaml}"));
    let exported = tollgate::openapi::export(&loaded.config);
    let spec = spec_json(spec_text);
    let source = shapes(&spec, |place| place == "path" || place == "query");
    let ours = shapes(&exported, |_| true);
    assert_eq!(
        source.iter().map(|(id, _)| id).collect::<Vec<_>>(),
        ours.iter().map(|(id, _)| id).collect::<Vec<_>>()
    );
    for ((id, theirs), (_, mine)) in source.iter().zip(&ours) {
        let (method, path, params, codes, media) = theirs;
        assert_eq!((&mine.0, &mine.1), (method, path), "{id}");
        assert_eq!(&mine.2, params, "{id}: parameters");
        assert!(mine.3.is_superset(codes), "{id}: {codes:?} in {:?}", mine.3);
        assert_eq!(&mine.4, media, "{id}: request body");
        // Paths with parameters document the gateway's 400 (`invalid_path`),
        // and anything else the upstream says is `default`.
        if path.contains('{') {
            assert!(mine.3.contains("400"), "{id}");
        }
        assert!(mine.3.contains("default"), "{id}");
    }
}

#[test]
fn import_then_export_keeps_types_query_parameters_statuses_and_form_bodies() {
    let spec = std::fs::read_to_string(fixture("orders-api.yaml")).expect("fixture");
    assert_round_trip(&spec);
    let doc = tollgate::openapi::export(
        &tollgate::config::load_str(
            Path::new("imported.yaml"),
            &import_spec(&spec, "http://127.0.0.1:9"),
        )
        .expect("loads")
        .config,
    );
    let cancel = op(&doc, "cancelOrder");
    assert!(cancel["responses"].get("200").is_none());
    assert!(cancel["responses"]["204"].get("content").is_none());
    assert_eq!(
        cancel["responses"]["404"]["content"]["application/json"]["schema"]["required"],
        json!(["message"])
    );
    let get = op(&doc, "getOrder");
    assert_eq!(get["parameters"][0]["schema"]["minimum"], 1);
    let list = op(&doc, "listOrders");
    assert_eq!(
        list["parameters"][0]["schema"]["enum"],
        json!(["open", "shipped", "cancelled"])
    );
    assert_eq!(
        list["responses"]["default"]["content"]["application/json"]["schema"]["required"],
        json!(["message"])
    );
    // The header parameter cannot be carried: the output says so.
    let yaml = import_spec(&spec, "http://127.0.0.1:9");
    assert!(
        yaml.contains("# Note: operation `listOrders`: header parameter `X-Trace` is not carried"),
        "{yaml}"
    );
}

#[test]
fn the_platform_spec_round_trips_its_statuses() {
    assert_round_trip(&platform_spec());
}

#[tokio::test]
async fn an_integer_path_parameter_is_checked_at_the_gateway_and_a_form_body_passes() {
    let up = Upstream::start().await;
    let spec = std::fs::read_to_string(fixture("orders-api.yaml")).expect("fixture");
    let gw = gateway(&import_spec(&spec, &up.url())).await;
    for bad in [
        "/orders/abc",
        "/orders/0",
        "/orders/1.5",
        "/orders/abc/receipt",
    ] {
        let got = gw.get(bad).await;
        if bad.ends_with("receipt") {
            // GET is not routed there: 405 comes first.
            got.assert_problem(405, "method_not_allowed");
            continue;
        }
        let problem = got.assert_problem(400, "invalid_path");
        assert!(
            problem["detail"].as_str().unwrap_or("").contains("orderId"),
            "{problem}"
        );
    }
    assert_eq!(up.count(), 0);
    let got = gw.get("/orders/42").await;
    assert_eq!(got.status, 200);
    assert_eq!(up.last().uri, "/orders/42");
    // A form body is documented, not validated as JSON: it is forwarded.
    let req = Request::post(gw.url("/orders"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Full::new(Bytes::from_static(b"item=pen&quantity=2")))
        .expect("request");
    let got = gw.send(req).await;
    assert_eq!(got.status, 200, "{:?}", got.body);
    assert_eq!(up.last().body, Bytes::from_static(b"item=pen&quantity=2"));
    gw.shutdown().await;
}

#[test]
fn task_costs_are_documented_per_operation() {
    let yaml = "\
version: 1
listen: 127.0.0.1:8080
apis:
  - name: flows
    upstream: http://127.0.0.1:9
    cost_header: X-Tasks-Used
    operations:
      - { id: run, method: POST, path: /run, cost: 5 }
      - { id: plain, method: GET, path: /plain }
  - name: free
    upstream: http://127.0.0.1:9
    operations:
      - { id: ping, method: GET, path: /ping }
";
    let loaded = tollgate::config::load_str(Path::new("cost.yaml"), yaml).expect("loads");
    let doc = tollgate::openapi::export(&loaded.config);
    assert_eq!(
        op(&doc, "run")["x-tollgate-cost"],
        serde_json::json!({ "units": 5, "reported_in": "X-Tasks-Used" })
    );
    assert_eq!(
        op(&doc, "plain")["x-tollgate-cost"],
        serde_json::json!({ "units": 1, "reported_in": "X-Tasks-Used" })
    );
    assert_eq!(op(&doc, "ping").get("x-tollgate-cost"), None);
}
