//! The memory store's footprint under a flood of distinct keys (DESIGN §8:
//! bounded memory), at the store and through a whole gateway. Each test
//! runs in a fresh process of this binary, so the RSS it reads is its own
//! (memory a previous test freed would hide a new test's growth).

// Black-box tests and benches measure real elapsed time; the library
// reads time through `tollgate::clock` only (clippy.toml).
#![allow(clippy::disallowed_methods)]

use bytes::Bytes;
use http::{Request, StatusCode};
use std::net::SocketAddr;
use std::sync::Arc;
use tollgate::context::Connection;
use tollgate::gateway::{Deps, Gateway};
use tollgate::state::{AnyStore, GcraRule, MemoryStore, SECOND};

/// In the test harness: runs `test` in a child process of this binary and
/// returns true (the caller then returns). In that child: returns false,
/// and the caller measures.
fn in_own_process(test: &str) -> bool {
    const CHILD: &str = "TOLLGATE_STORE_MEMORY_CHILD";
    if std::env::var_os(CHILD).is_some() {
        return false;
    }
    let exe = std::env::current_exe().expect("test binary");
    let status = std::process::Command::new(exe)
        .args([test, "--exact", "--nocapture", "--include-ignored"])
        .env(CHILD, "1")
        .status()
        .expect("run the test in its own process");
    assert!(status.success(), "{test} failed in its own process");
    true
}

/// Resident set size in KiB, from /proc (Linux); `None` elsewhere.
fn rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// The `i`-th of 2^24 distinct addresses in 10.0.0.0/8.
fn address(i: u32) -> [u8; 4] {
    (0x0a00_0000 + i).to_be_bytes()
}

#[test]
fn a_flood_of_a_million_distinct_ips_stays_under_200_mib() {
    if in_own_process("a_flood_of_a_million_distinct_ips_stays_under_200_mib") {
        return;
    }
    let Some(before) = rss_kib() else {
        eprintln!("no /proc/self/status: skipped");
        return;
    };
    let store = MemoryStore::new();
    let rule = GcraRule::new(100, 60 * SECOND, 100);
    let now = 1_700_000_000 * SECOND;
    let mut key = String::with_capacity(64);
    for i in 0u32..1_000_000 {
        let [a, b, c, d] = address(i);
        key.clear();
        use std::fmt::Write as _;
        let _ = write!(key, "per-ip:ip:{a}.{b}.{c}.{d}");
        assert!(store.gcra_now(&key, rule, now, true).allowed);
    }
    assert_eq!(store.len(), 1_000_000);
    let after = rss_kib().unwrap_or(before);
    let grown_mib = after.saturating_sub(before) as f64 / 1024.0;
    println!("1M live rate-limit keys: RSS {before} KiB -> {after} KiB (+{grown_mib:.1} MiB)");
    assert!(grown_mib < 200.0, "grew {grown_mib:.1} MiB");

    // Once idle (a minute later every bucket is full again), a sweep gives
    // the entries back.
    store.sweep(now + 61 * SECOND);
    assert!(store.is_empty());
}

/// The same flood as requests: `callers` callers, each from its own
/// address, through the whole per-request path (client IP, routing, an
/// `ip`-keyed rate limit) of a compiled gateway. The schema check after
/// the limit refuses every body, so the limit keeps each caller's bucket
/// and nothing needs an upstream. Returns the RSS growth in MiB.
async fn flood_through_a_rate_limit(callers: u32) -> Option<f64> {
    let before = rss_kib()?;
    let yaml = "version: 1\nlisten: 127.0.0.1:0\napis:\n  - name: api\n    upstream: http://127.0.0.1:9\n    operations:\n      - id: submit\n        method: POST\n        path: /submit\n        apply: [{ type: rate_limit, limit: 2, window: 1m, key: ip }]\n        request_schema: { type: object }\n";
    let path = std::path::Path::new("flood.yaml");
    let loaded = tollgate::config::load_str(path, yaml).expect("config");
    // A clock that stands still: every bucket stays live for the count.
    let clock = tollgate::clock::ManualClock::new(1_700_000_000 * SECOND);
    let deps = Deps::for_config(&loaded, clock).expect("deps");
    let gateway = Arc::new(Gateway::compile(loaded, &deps).expect("compile"));
    let AnyStore::Memory(store) = gateway.store().clone() else {
        panic!("the memory store")
    };
    let call = |gateway: Arc<Gateway>, i: u32| async move {
        let request = Request::post("/submit")
            .header("content-type", "application/json")
            .body(tollgate::body::full(Bytes::from_static(b"[]")))
            .expect("request");
        let conn = Connection::new(SocketAddr::from((address(i), 40_000)), false);
        gateway.handle(request, &conn).await.status()
    };
    let started = std::time::Instant::now();
    // Two workers, each half the callers.
    let halves: Vec<_> = (0..2u32)
        .map(|half| {
            let gateway = gateway.clone();
            tokio::spawn(async move {
                for i in (half..callers).step_by(2) {
                    let status = call(gateway.clone(), i).await;
                    assert_eq!(status, StatusCode::BAD_REQUEST, "caller {i}");
                }
            })
        })
        .collect();
    for half in halves {
        half.await.expect("worker");
    }
    let took = started.elapsed();
    assert_eq!(store.len(), callers as usize);
    // The limit still holds for any one of them: its second call passes,
    // its third is refused.
    assert_eq!(call(gateway.clone(), 7).await, StatusCode::BAD_REQUEST);
    assert_eq!(
        call(gateway.clone(), 7).await,
        StatusCode::TOO_MANY_REQUESTS
    );
    let after = rss_kib().unwrap_or(before);
    let grown_mib = after.saturating_sub(before) as f64 / 1024.0;
    println!(
        "{callers} callers through a rate limit in {took:?} ({:.0}/s): RSS {before} KiB -> {after} KiB (+{grown_mib:.1} MiB)",
        f64::from(callers) / took.as_secs_f64()
    );
    Some(grown_mib)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_thousand_callers_through_a_rate_limit_stay_under_64_mib() {
    if in_own_process("a_hundred_thousand_callers_through_a_rate_limit_stay_under_64_mib") {
        return;
    }
    match flood_through_a_rate_limit(100_000).await {
        Some(grown) => assert!(grown < 64.0, "grew {grown:.1} MiB"),
        None => eprintln!("no /proc/self/status: skipped"),
    }
}

/// A million takes minutes in a debug build: run it on purpose with
/// `cargo test --release --test store_memory -- --ignored`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "heavy: a million requests through a debug build take minutes"]
async fn a_million_callers_through_a_rate_limit_stay_under_300_mib() {
    if in_own_process("a_million_callers_through_a_rate_limit_stay_under_300_mib") {
        return;
    }
    match flood_through_a_rate_limit(1_000_000).await {
        Some(grown) => assert!(grown < 300.0, "grew {grown:.1} MiB"),
        None => eprintln!("no /proc/self/status: skipped"),
    }
}
