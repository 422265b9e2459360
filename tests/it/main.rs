//! The black-box suites, one binary: a real gateway and real upstreams on
//! 127.0.0.1 per test. One binary links once, which is most of what a
//! clean `cargo test` spends on integration tests. (`store_memory` stays a
//! binary of its own: it measures this process's memory.)

// Black-box tests and benches measure real elapsed time; the library
// reads time through `tollgate::clock` only (clippy.toml).
#![allow(clippy::disallowed_methods)]

#[path = "../common/mod.rs"]
mod common;

mod access;
mod admin;
mod body_schema;
mod cache;
mod call_log;
mod cli;
mod config_errors;
mod config_schema;
mod cors;
mod fairness;
mod graphql;
mod jwks;
mod keys;
mod mcp;
mod mcp_oauth;
mod openapi;
mod proxy;
mod redis;
mod redis_cluster;
mod resources;
mod security;
mod server;
mod shadow;
mod tracing;
mod traffic;
mod units;
mod usage_charts;
