//! Forwarding, end to end: what reaches the upstream and what the client
//! sees (DESIGN §4, §5).

// Imports kept for the proxy tests other branches add here.
#![allow(unused_imports)]

mod common;

use bytes::Bytes;
use common::*;
use http::Request;
use http_body_util::Full;

#[tokio::test]
async fn a_get_reaches_the_upstream_with_path_query_and_forwarding_headers() {
    let up = Upstream::start().await;
    let gw = gateway(&simple_config(&up.url(), "")).await;
    let got = gw.get("/employees/42?fields=name&x=%20y").await;
    assert_eq!(got.status, 200, "{:?}", got.body);
    assert_eq!(got.json()["uri"], "/42?fields=name&x=%20y");
    let seen = up.last();
    assert_eq!(seen.method, "GET");
    assert_eq!(seen.headers["x-forwarded-for"], "127.0.0.1");
    assert_eq!(seen.headers["x-forwarded-proto"], "http");
    assert_eq!(
        seen.headers["x-forwarded-host"],
        gw.addr.to_string().as_str()
    );
    assert_eq!(seen.headers["x-tollgate-operation"], "getEmployee");
    assert_eq!(seen.headers["host"], up.addr.to_string().as_str());
    let id = got.header("x-request-id").expect("request id").to_string();
    assert_eq!(seen.headers["x-request-id"], id.as_str());
    assert_eq!(id.len(), 32);
    // Hop-by-hop headers of the upstream's response do not reach the client.
    assert!(got.headers.get("keep-alive").is_none());
    gw.shutdown().await;
}
