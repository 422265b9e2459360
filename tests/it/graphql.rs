//! GraphQL routing end to end: examples/tray-embedded.yaml (its policies
//! removed until the access-policy branch lands) in front of a real
//! upstream. Which operations a document matched is read from the
//! `X-Tollgate-Operation` header the upstream receives: every matched
//! operation id, comma-separated, in config order.

use crate::common::*;
use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use serde_json::json;
use std::path::Path;

fn manifest(path: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// The example config, pointed at `upstream`, without its policies (the
/// GraphQL matching is what is under test), and with `unmatched`.
fn embedded_config(upstream: &str, unmatched: &str) -> String {
    let text = std::fs::read_to_string(manifest("examples/tray-embedded.yaml")).expect("example");
    let mut v: serde_yaml::Value = serde_yaml::from_str(&text).expect("yaml");
    let root = v.as_mapping_mut().expect("mapping");
    for key in ["policies", "apply", "clients"] {
        root.remove(key);
    }
    root.insert("listen".into(), "127.0.0.1:0".into());
    root.insert("graphql_unmatched".into(), unmatched.into());
    for api in v["apis"].as_sequence_mut().expect("apis") {
        let api = api.as_mapping_mut().expect("api");
        api.remove("apply");
        api.insert("upstream".into(), upstream.into());
        for op in api["operations"].as_sequence_mut().expect("ops") {
            op.as_mapping_mut().expect("op").remove("apply");
        }
    }
    serde_yaml::to_string(&v).expect("yaml")
}

async fn graphql(gw: &TestGateway, body: serde_json::Value) -> Got {
    let req = Request::post(gw.url("/graphql"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .expect("request");
    gw.send(req).await
}

/// Sends a document and returns the operations the upstream was told about.
async fn matched(gw: &TestGateway, up: &Upstream, body: serde_json::Value) -> String {
    let before = up.count();
    let got = graphql(gw, body).await;
    assert_eq!(got.status, 200, "{:?}", got.body);
    assert_eq!(
        up.count(),
        before + 1,
        "the upstream is called exactly once"
    );
    up.last().headers["x-tollgate-operation"]
        .to_str()
        .expect("ascii")
        .to_string()
}

#[tokio::test]
async fn every_example_query_of_the_embedded_fixture_matches_its_operation() {
    let up = Upstream::start().await;
    let gw = gateway(&embedded_config(&up.url(), "reject")).await;
    let fixture: serde_yaml::Value = serde_yaml::from_str(
        &std::fs::read_to_string(manifest("tests/fixtures/tray-embedded-graphql-ops.yaml"))
            .expect("fixture"),
    )
    .expect("yaml");
    let ops = fixture["operations"].as_sequence().expect("operations");
    assert_eq!(ops.len(), 16);
    for op in ops {
        let id = op["operationId"].as_str().expect("id");
        let query = op["example_query"].as_str().expect("query");
        assert_eq!(
            matched(&gw, &up, json!({ "query": query })).await,
            id,
            "{query}"
        );
        let seen = up.last();
        assert_eq!(seen.uri, "/graphql");
        assert_eq!(seen.body, json!({ "query": query }).to_string().as_bytes());
    }
    gw.shutdown().await;
}

#[tokio::test]
async fn a_master_only_mutation_hidden_next_to_a_user_one_is_matched_too() {
    let up = Upstream::start().await;
    let gw = gateway(&embedded_config(&up.url(), "reject")).await;
    let doc = r#"mutation { createSolutionInstance(input: {}) { solutionInstance { id } } removeUser(input: { userId: "u" }) { clientMutationId } }"#;
    assert_eq!(
        matched(&gw, &up, json!({ "query": doc })).await,
        "removeUser,createSolutionInstance"
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn aliases_and_fragments_cannot_hide_a_field() {
    let up = Upstream::start().await;
    let gw = gateway(&embedded_config(&up.url(), "reject")).await;
    let aliased = r#"mutation { harmless: callConnector(input: {}) { output } alsoHarmless: authorize(input: { userId: "u" }) { accessToken } }"#;
    assert_eq!(
        matched(&gw, &up, json!({ "query": aliased })).await,
        "authorize,callConnector"
    );
    let fragments = r#"
        mutation Innocent { ...Sneaky ... on Mutation { callConnector(input: {}) { output } } }
        fragment Sneaky on Mutation { exportWorkflows(input: { workflowIds: [] }) { exportedData } }
    "#;
    assert_eq!(
        matched(&gw, &up, json!({ "query": fragments })).await,
        "exportWorkflows,callConnector"
    );
    // Operations sharing the root field `viewer` are told apart below it.
    let viewer = "query { viewer { solutions { edges { cursor } } ...A } } fragment A on Viewer { authentications { edges { cursor } } }";
    assert_eq!(
        matched(&gw, &up, json!({ "query": viewer })).await,
        "getSolutions,getAuthentications"
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn operation_name_picks_the_operation_and_is_required_among_several() {
    let up = Upstream::start().await;
    let gw = gateway(&embedded_config(&up.url(), "reject")).await;
    let doc = "query Users { users { edges { cursor } } } mutation Remove { removeUser(input: {}) { clientMutationId } }";
    assert_eq!(
        matched(&gw, &up, json!({ "query": doc, "operationName": "Remove" })).await,
        "removeUser"
    );
    assert_eq!(
        matched(&gw, &up, json!({ "query": doc, "operationName": "Users" })).await,
        "getUsers"
    );
    let before = up.count();
    graphql(&gw, json!({ "query": doc }))
        .await
        .assert_problem(400, "invalid_request_body");
    graphql(&gw, json!({ "query": doc, "operationName": "Nope" }))
        .await
        .assert_problem(400, "invalid_request_body");
    graphql(&gw, json!({ "query": "query { users " }))
        .await
        .assert_problem(400, "invalid_request_body");
    assert_eq!(up.count(), before);
    gw.shutdown().await;
}

#[tokio::test]
async fn an_unknown_root_field_is_refused_under_reject() {
    let up = Upstream::start().await;
    let gw = gateway(&embedded_config(&up.url(), "reject")).await;
    let doc = "mutation { callConnector(input: {}) { output } deleteEverything { ok } }";
    let problem = graphql(&gw, json!({ "query": doc }))
        .await
        .assert_problem(400, "graphql_operation_not_allowed");
    assert!(
        problem["detail"]
            .as_str()
            .unwrap_or("")
            .contains("deleteEverything"),
        "{problem}"
    );
    // Introspection is an ordinary field: unpublished, so refused.
    graphql(&gw, json!({ "query": "{ __schema { types { name } } }" }))
        .await
        .assert_problem(400, "graphql_operation_not_allowed");
    // A field under `viewer` that no operation publishes.
    graphql(&gw, json!({ "query": "{ viewer { secrets { id } } }" }))
        .await
        .assert_problem(400, "graphql_operation_not_allowed");
    assert_eq!(up.count(), 0);
    gw.shutdown().await;
}

#[tokio::test]
async fn an_unknown_root_field_is_forwarded_under_the_matched_policies_with_allow() {
    let up = Upstream::start().await;
    let gw = gateway(&embedded_config(&up.url(), "allow")).await;
    let doc = "mutation { __typename callConnector(input: {}) { output } deleteEverything { ok } }";
    assert_eq!(
        matched(&gw, &up, json!({ "query": doc })).await,
        "callConnector"
    );
    // Nothing matched at all: there is no policy to run it under.
    graphql(
        &gw,
        json!({ "query": "mutation { deleteEverything { ok } }" }),
    )
    .await
    .assert_problem(400, "graphql_operation_not_allowed");
    gw.shutdown().await;
}

#[test]
fn a_plain_operation_on_a_graphql_route_and_a_field_published_twice_are_config_errors() {
    let yaml = "version: 1\nlisten: 127.0.0.1:0\napis:\n  - name: g\n    upstream: http://127.0.0.1:9\n    operations:\n      - { id: a, method: POST, path: /graphql, graphql: { operation: query, field: users } }\n      - { id: b, method: POST, path: /graphql }\n      - { id: c, method: POST, path: /graphql, graphql: { operation: query, field: users } }\n";
    let errors = compile(
        Path::new("g.yaml"),
        yaml,
        tollgate::clock::SystemClock::shared(),
    )
    .map(|_| ())
    .expect_err("refused");
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(
        errors[0].contains("operations[1].path: POST /graphql is already operation `a`"),
        "{}",
        errors[0]
    );
    assert!(errors[1].contains("operations[2].graphql.field: the query field `users` is already published by operation `a`"), "{}", errors[1]);
}
