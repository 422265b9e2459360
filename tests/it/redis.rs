//! Several gateway instances on one Redis (DESIGN §8): each test starts its
//! own redis-server and gateways with separate `Deps` (as separate
//! processes would have), then checks what they share and what happens
//! when Redis dies, comes back, or is slow.

use crate::common::redis_server::RedisServer;
use crate::common::*;
use futures_util::future::join_all;
use std::time::{Duration, Instant};
use tollgate::clock::{Clock, SystemClock};
use tollgate::gateway::Deps;
use tollgate::state::{Store, UsageEntry};

/// A config on `redis` with the policies (YAML mapping lines indented by
/// two) applied gateway-wide, and `state` settings besides the store.
fn config(upstream: &str, redis: &RedisServer, state: &str, policies: &str) -> String {
    let names: Vec<&str> = policies
        .lines()
        .filter_map(|l| l.trim().split(':').next())
        .collect();
    simple_config(
        upstream,
        &format!(
            "trusted_proxies: [127.0.0.1]\n\
             state: {{store: redis, redis_url: \"{}\", {state}}}\n\
             policies:\n{policies}\napply: [{}]\n",
            redis.url(),
            names.join(", ")
        ),
    )
}

/// `n` instances: each its own deps (store, connection), one Redis.
async fn instances(yaml: &str, n: usize) -> Vec<(Deps, TestGateway)> {
    let mut out = Vec::new();
    for _ in 0..n {
        let deps = deps_for(yaml, SystemClock::shared());
        let gw = gateway_with_deps(yaml, &deps).await;
        out.push((deps, gw));
    }
    out
}

/// Calls `path` until the answer has `status`, for at most `within`.
async fn until_status(gw: &TestGateway, path: &str, status: u16, within: Duration) -> Got {
    let deadline = Instant::now() + within;
    loop {
        let got = gw.get(path).await;
        if got.status.as_u16() == status || Instant::now() >= deadline {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test]
async fn a_limit_of_ten_admits_exactly_ten_across_three_instances_under_concurrent_load() {
    let redis = RedisServer::start().await;
    let up = Upstream::start().await;
    let yaml = config(
        &up.url(),
        &redis,
        "timeout: 2s",
        "  shared: {type: rate_limit, limit: 10, window: 1h, key: global}",
    );
    let gws = instances(&yaml, 3).await;
    let calls = (0..60).map(|i| gws[i % 3].1.get("/employees/1"));
    let statuses: Vec<u16> = join_all(calls)
        .await
        .iter()
        .map(|g| g.status.as_u16())
        .collect();
    let ok = statuses.iter().filter(|&&s| s == 200).count();
    let limited = statuses.iter().filter(|&&s| s == 429).count();
    assert_eq!((ok, limited), (10, 50), "{statuses:?}");
    assert_eq!(up.count(), 10);
    for (_, gw) in gws {
        gw.shutdown().await;
    }
}

#[tokio::test]
async fn two_instances_share_one_quota() {
    let redis = RedisServer::start().await;
    let up = Upstream::start().await;
    let yaml = config(
        &up.url(),
        &redis,
        "timeout: 2s",
        "  daily: {type: quota, limit: 3, period: day, key: global}",
    );
    let gws = instances(&yaml, 2).await;
    let (a, b) = (&gws[0].1, &gws[1].1);
    assert_eq!(a.get("/employees/1").await.status, 200);
    assert_eq!(b.get("/employees/1").await.status, 200);
    assert_eq!(a.get("/employees/1").await.status, 200);
    b.get("/employees/1")
        .await
        .assert_problem(429, "quota_exceeded");
    a.get("/employees/1")
        .await
        .assert_problem(429, "quota_exceeded");
    assert_eq!(up.count(), 3);
}

#[tokio::test]
async fn a_ban_made_by_one_instance_is_enforced_by_the_other() {
    let redis = RedisServer::start().await;
    let up = Upstream::start().await;
    let yaml = config(
        &up.url(),
        &redis,
        "timeout: 2s",
        "  trap: {type: abuse, watch: [404], threshold: 2, window: 1m, ban: 10m}",
    );
    let gws = instances(&yaml, 2).await;
    let (a, b) = (&gws[0].1, &gws[1].1);
    let bad = [("x-forwarded-for", "203.0.113.7")];
    // One watched answer on each instance: together they reach the threshold.
    let path = "/employees/files/status/404";
    assert_eq!(a.get_with(path, &bad).await.status, 404);
    assert_eq!(b.get_with(path, &bad).await.status, 404);
    let banned = a.get_with("/employees/1", &bad).await;
    banned.assert_problem(403, "banned");
    b.get_with("/employees/1", &bad)
        .await
        .assert_problem(403, "banned");
    let good = [("x-forwarded-for", "203.0.113.8")];
    assert_eq!(b.get_with("/employees/1", &good).await.status, 200);
    let bans = gws[1]
        .0
        .store
        .ban_list(SystemClock::new().now())
        .await
        .expect("store");
    assert_eq!(bans.len(), 1, "{bans:?}");
    assert!(bans[0].0.starts_with("trap:"), "{bans:?}");
}

#[tokio::test]
async fn usage_counted_by_both_instances_shows_in_usage_list() {
    let redis = RedisServer::start().await;
    let yaml = config(
        "http://127.0.0.1:9",
        &redis,
        "timeout: 2s",
        "  open: {type: rate_limit, limit: 1000, window: 1s, key: global}",
    );
    let a = deps_for(&yaml, SystemClock::shared());
    let b = deps_for(&yaml, SystemClock::shared());
    let add = |deps: &Deps, n: u64| {
        let store = deps.store.clone();
        async move {
            store
                .usage_add("hr-portal", &[("getEmployee:calls", n)])
                .await
                .expect("usage_add");
        }
    };
    add(&a, 1).await;
    add(&b, 2).await;
    add(&a, 4).await;
    // `a` flushes its own buffer when listing; `b`'s arrives within its
    // flush interval (a second).
    let want = vec![UsageEntry {
        subject: "hr-portal".into(),
        counts: vec![("getEmployee:calls".into(), 7)],
    }];
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut got = a.store.usage_list().await.expect("usage_list");
    while got != want && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        got = a.store.usage_list().await.expect("usage_list");
    }
    assert_eq!(got, want);
}

#[tokio::test]
async fn when_redis_dies_fail_closed_answers_503_and_recovers_after_a_restart() {
    let mut redis = RedisServer::start().await;
    let up = Upstream::start().await;
    let yaml = config(
        &up.url(),
        &redis,
        "timeout: 2s, on_store_error: fail_closed",
        "  per-ip: {type: rate_limit, limit: 1000, window: 1s, key: ip}",
    );
    let gws = instances(&yaml, 2).await;
    for (_, gw) in &gws {
        assert_eq!(gw.get("/employees/1").await.status, 200);
    }
    redis.stop().await;
    for (deps, gw) in &gws {
        for _ in 0..8 {
            gw.get("/employees/1")
                .await
                .assert_problem(503, "state_store_unavailable");
        }
        // Eight failures in a row trip the breaker: `/readyz` can say so.
        assert!(deps.store.is_degraded());
        assert!(deps.store.errors_total() >= 8);
    }
    redis.restart().await;
    for (deps, gw) in &gws {
        let got = until_status(gw, "/employees/1", 200, Duration::from_secs(10)).await;
        assert_eq!(got.status, 200, "no recovery: {:?}", got.body);
        assert!(!deps.store.is_degraded());
    }
}

#[tokio::test]
async fn when_redis_dies_fail_open_lets_calls_through_and_limits_resume_after_a_restart() {
    let mut redis = RedisServer::start().await;
    let up = Upstream::start().await;
    let yaml = config(
        &up.url(),
        &redis,
        "timeout: 2s, on_store_error: fail_open",
        "  shared: {type: rate_limit, limit: 2, window: 1h, key: global}",
    );
    let gws = instances(&yaml, 2).await;
    let (a, b) = (&gws[0].1, &gws[1].1);
    assert_eq!(a.get("/employees/1").await.status, 200);
    assert_eq!(b.get("/employees/1").await.status, 200);
    a.get("/employees/1")
        .await
        .assert_problem(429, "rate_limited");
    redis.stop().await;
    for gw in [a, b, a, b, a, b] {
        assert_eq!(gw.get("/employees/1").await.status, 200);
    }
    // The restarted Redis is empty: the limit starts over, and a 429 on
    // each instance shows it decides again.
    redis.restart().await;
    for gw in [a, b] {
        let got = until_status(gw, "/employees/1", 429, Duration::from_secs(10)).await;
        got.assert_problem(429, "rate_limited");
    }
}

#[tokio::test]
async fn a_paused_redis_does_not_stall_a_call_past_the_deadline() {
    let redis = RedisServer::start().await;
    let up = Upstream::start().await;
    let yaml = config(
        &up.url(),
        &redis,
        "timeout: 100ms, on_store_error: fail_closed",
        "  per-ip: {type: rate_limit, limit: 1000, window: 1s, key: ip}",
    );
    let gws = instances(&yaml, 1).await;
    let gw = &gws[0].1;
    assert_eq!(gw.get("/employees/1").await.status, 200);
    // Redis holds every command for two seconds.
    let paused = redis.command("CLIENT PAUSE 2000 ALL").await;
    assert!(paused.starts_with("+OK"), "{paused}");
    let started = Instant::now();
    let calls = (0..5).map(|_| gw.get("/employees/1"));
    for got in join_all(calls).await {
        got.assert_problem(503, "state_store_unavailable");
    }
    let took = started.elapsed();
    assert!(took < Duration::from_secs(1), "stalled for {took:?}");
    // Once the pause ends, calls pass again.
    let got = until_status(gw, "/employees/1", 200, Duration::from_secs(10)).await;
    assert_eq!(got.status, 200);
}
