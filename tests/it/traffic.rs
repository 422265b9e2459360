//! Traffic policies end to end: `rate_limit`, `quota` and `abuse` on a real
//! gateway and upstream, with an injected clock (DESIGN §3, §8).

use crate::common::*;
use std::sync::Arc;
use std::time::Duration;
use tollgate::clock::{ManualClock, SharedClock};

/// 2024-01-31T23:00:00Z: an hour before a month ends.
const JAN_31_23H: u64 = 1_706_742_000 * 1_000_000_000;

fn clock() -> (Arc<ManualClock>, SharedClock) {
    let clock = ManualClock::new(JAN_31_23H);
    let shared: SharedClock = clock.clone();
    (clock, shared)
}

/// A config whose every operation has the policies in `policies` (YAML
/// mapping lines, indented by two) applied gateway-wide.
fn with_policies(upstream: &str, policies: &str, extra: &str) -> String {
    let names: Vec<&str> = policies
        .lines()
        .filter(|l| l.starts_with("  ") && !l.starts_with("   "))
        .filter_map(|l| l.trim().split(':').next())
        .collect();
    simple_config(
        upstream,
        &format!(
            "{extra}\npolicies:\n{policies}\napply: [{}]\n",
            names.join(", ")
        ),
    )
}

fn x_user(user: &str) -> [(&str, &str); 1] {
    [("x-user", user)]
}

#[tokio::test]
async fn five_calls_pass_the_sixth_is_refused_and_the_upstream_saw_exactly_five() {
    let up = Upstream::start().await;
    let (_clock, shared) = clock();
    let yaml = with_policies(
        &up.url(),
        "  per-ip: {type: rate_limit, limit: 5, window: 1m, key: ip}",
        "",
    );
    let gw = gateway_with_clock(&yaml, shared).await;
    for n in 1..=5u64 {
        let got = gw.get("/employees/1").await;
        assert_eq!(got.status, 200, "call {n}");
        assert_eq!(got.header("ratelimit-policy"), Some("\"per-ip\";q=5;w=60"));
        let remaining = (5 - n).to_string();
        // Each call's token takes 12s to come back; the bucket is full
        // again 12s per call taken.
        let reset = (12 * n).to_string();
        assert_eq!(
            got.header("ratelimit"),
            Some(format!("\"per-ip\";r={remaining};t={reset}").as_str())
        );
        assert_eq!(got.header("x-ratelimit-limit"), Some("5"));
        assert_eq!(
            got.header("x-ratelimit-remaining"),
            Some(remaining.as_str())
        );
        assert_eq!(got.header("x-ratelimit-reset"), Some(reset.as_str()));
    }
    let got = gw.get("/employees/1").await;
    got.assert_problem(429, "rate_limited");
    assert_eq!(got.header("retry-after"), Some("12"));
    assert_eq!(got.header("ratelimit"), Some("\"per-ip\";r=0;t=60"));
    assert_eq!(got.header("ratelimit-policy"), Some("\"per-ip\";q=5;w=60"));
    assert_eq!(got.header("x-ratelimit-remaining"), Some("0"));
    assert_eq!(got.header("x-ratelimit-reset"), Some("60"));
    assert_eq!(up.count(), 5);
    gw.shutdown().await;
}

#[tokio::test]
async fn a_burst_lets_that_many_calls_through_at_once_then_refills_one_per_interval() {
    let up = Upstream::start().await;
    let (clock, shared) = clock();
    let yaml = with_policies(
        &up.url(),
        "  bursty: {type: rate_limit, limit: 1, window: 2s, burst: 3, key: global}",
        "",
    );
    let gw = gateway_with_clock(&yaml, shared).await;
    for _ in 0..3 {
        assert_eq!(gw.get("/employees/1").await.status, 200);
    }
    let refused = gw.get("/employees/1").await;
    refused.assert_problem(429, "rate_limited");
    assert_eq!(refused.header("retry-after"), Some("2"));
    assert_eq!(
        refused.header("ratelimit-policy"),
        Some("\"bursty\";q=1;w=2")
    );
    clock.advance(Duration::from_secs(2));
    assert_eq!(gw.get("/employees/1").await.status, 200);
    assert_eq!(gw.get("/employees/1").await.status, 429);
    assert_eq!(up.count(), 4);
    gw.shutdown().await;
}

#[tokio::test]
async fn a_refused_caller_passes_again_once_retry_after_has_elapsed() {
    let up = Upstream::start().await;
    let (clock, shared) = clock();
    let yaml = with_policies(
        &up.url(),
        "  slow: {type: rate_limit, limit: 2, window: 10s, key: ip}",
        "",
    );
    let gw = gateway_with_clock(&yaml, shared).await;
    assert_eq!(gw.get("/employees/1").await.status, 200);
    assert_eq!(gw.get("/employees/1").await.status, 200);
    let refused = gw.get("/employees/1").await;
    assert_eq!(refused.header("retry-after"), Some("5"));
    clock.advance(Duration::from_millis(4_500));
    let refused = gw.get("/employees/1").await;
    assert_eq!(refused.status, 429);
    // Whole seconds, rounded up: 0.5s left reads 1.
    assert_eq!(refused.header("retry-after"), Some("1"));
    clock.advance(Duration::from_millis(500));
    let got = gw.get("/employees/1").await;
    assert_eq!(got.status, 200);
    assert_eq!(got.header("x-ratelimit-remaining"), Some("0"));
    assert_eq!(gw.get("/employees/1").await.status, 429);
    gw.shutdown().await;
}

#[tokio::test]
async fn each_header_value_has_its_own_bucket_and_a_missing_header_counts_by_ip() {
    let up = Upstream::start().await;
    let (_clock, shared) = clock();
    let yaml = with_policies(
        &up.url(),
        "  per-user: {type: rate_limit, limit: 1, window: 1h, key: 'header:X-User'}",
        "",
    );
    let gw = gateway_with_clock(&yaml, shared).await;
    assert_eq!(
        gw.get_with("/employees/1", &x_user("ann")).await.status,
        200
    );
    assert_eq!(
        gw.get_with("/employees/1", &x_user("ann")).await.status,
        429
    );
    assert_eq!(
        gw.get_with("/employees/1", &x_user("bob")).await.status,
        200
    );
    assert_eq!(gw.get("/employees/1").await.status, 200);
    assert_eq!(gw.get("/employees/1").await.status, 429);
    assert_eq!(gw.get_with("/employees/1", &x_user("cy")).await.status, 200);
    assert_eq!(up.count(), 4);
    gw.shutdown().await;
}

#[tokio::test]
async fn each_client_ip_behind_a_trusted_proxy_has_its_own_bucket() {
    let up = Upstream::start().await;
    let (_clock, shared) = clock();
    let yaml = with_policies(
        &up.url(),
        "  per-ip: {type: rate_limit, limit: 2, window: 1h, key: ip}",
        "trusted_proxies: [127.0.0.1]",
    );
    let gw = gateway_with_clock(&yaml, shared).await;
    let from = |ip: &'static str| [("x-forwarded-for", ip)];
    for ip in ["203.0.113.1", "203.0.113.2"] {
        assert_eq!(gw.get_with("/employees/1", &from(ip)).await.status, 200);
        assert_eq!(gw.get_with("/employees/1", &from(ip)).await.status, 200);
        assert_eq!(gw.get_with("/employees/1", &from(ip)).await.status, 429);
    }
    assert_eq!(
        gw.get_with("/employees/1", &from("203.0.113.3"))
            .await
            .status,
        200
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn report_only_limits_never_refuse_and_add_no_headers() {
    let up = Upstream::start().await;
    let (_clock, shared) = clock();
    let yaml = with_policies(
        &up.url(),
        "  trial: {type: rate_limit, limit: 1, window: 1h, key: global, report_only: true}",
        "",
    );
    let gw = gateway_with_clock(&yaml, shared).await;
    for _ in 0..5 {
        let got = gw.get("/employees/1").await;
        assert_eq!(got.status, 200);
        assert_eq!(got.header("ratelimit"), None);
    }
    assert_eq!(up.count(), 5);
    gw.shutdown().await;
}

#[tokio::test]
async fn sixty_four_concurrent_clients_never_get_more_than_the_limit_through() {
    let up = Upstream::start().await;
    let (_clock, shared) = clock();
    let yaml = with_policies(
        &up.url(),
        "  shared: {type: rate_limit, limit: 20, window: 1h, key: global}",
        "",
    );
    let gw = Arc::new(gateway_with_clock(&yaml, shared).await);
    let tasks: Vec<_> = (0..64)
        .map(|_| {
            let gw = gw.clone();
            tokio::spawn(async move {
                let mut passed = 0;
                for _ in 0..4 {
                    let got = gw.get("/employees/1").await;
                    assert!(got.status == 200 || got.status == 429, "{:?}", got.status);
                    passed += usize::from(got.status == 200);
                }
                passed
            })
        })
        .collect();
    let mut passed = 0;
    for task in tasks {
        passed += task.await.expect("task");
    }
    assert_eq!(passed, 20);
    assert_eq!(up.count(), 20);
}

#[tokio::test]
async fn counters_survive_a_reload_compiled_with_the_same_deps() {
    let up = Upstream::start().await;
    let (_clock, shared) = clock();
    let yaml = with_policies(
        &up.url(),
        "  per-ip: {type: rate_limit, limit: 2, window: 1h, key: ip}\n  \
         daily: {type: quota, limit: 3, period: day, key: ip}",
        "",
    );
    let deps = deps_for(&yaml, shared);
    let gw = gateway_with_deps(&yaml, &deps).await;
    assert_eq!(gw.get("/employees/1").await.status, 200);
    assert_eq!(gw.get("/employees/1").await.status, 200);
    let reloaded = compile_with_deps(&yaml, &deps).expect("compiles");
    gw.server.gateway.store(Arc::new(reloaded));
    let got = gw.get("/employees/1").await;
    got.assert_problem(429, "rate_limited");
    assert_eq!(up.count(), 2);
    gw.shutdown().await;
}

#[tokio::test]
async fn a_quota_refuses_past_its_limit_until_the_period_ends_then_starts_over() {
    let up = Upstream::start().await;
    let (clock, shared) = clock();
    let yaml = with_policies(
        &up.url(),
        "  monthly: {type: quota, limit: 2, period: month, key: 'header:X-User'}",
        "",
    );
    let gw = gateway_with_clock(&yaml, shared).await;
    clock.advance(Duration::from_secs(30 * 60));
    assert_eq!(
        gw.get_with("/employees/1", &x_user("ann")).await.status,
        200
    );
    assert_eq!(
        gw.get_with("/employees/1", &x_user("ann")).await.status,
        200
    );
    let refused = gw.get_with("/employees/1", &x_user("ann")).await;
    refused.assert_problem(429, "quota_exceeded");
    // 23:30 on January 31st: the month ends in 30 minutes.
    assert_eq!(refused.header("retry-after"), Some("1800"));
    assert_eq!(
        gw.get_with("/employees/1", &x_user("bob")).await.status,
        200
    );
    clock.advance(Duration::from_secs(1799));
    let refused = gw.get_with("/employees/1", &x_user("ann")).await;
    assert_eq!(refused.header("retry-after"), Some("1"));
    clock.advance(Duration::from_secs(1));
    assert_eq!(
        gw.get_with("/employees/1", &x_user("ann")).await.status,
        200
    );
    assert_eq!(up.count(), 4);
    gw.shutdown().await;
}

#[tokio::test]
async fn a_quota_counts_only_calls_the_upstream_answered() {
    let up = Upstream::start().await;
    let dead = closed_port().await;
    let (_clock, shared) = clock();
    let yaml = format!(
        r#"version: 1
listen: 127.0.0.1:0
policies:
  one-call: {{type: quota, limit: 1, period: hour, key: global}}
apply: [one-call]
apis:
  - name: live
    base_path: /live
    upstream: {}
    operations:
      - {{id: live, method: GET, path: '/{{*rest}}'}}
  - name: dead
    base_path: /dead
    upstream: http://{dead}
    operations:
      - {{id: dead, method: GET, path: /x}}
"#,
        up.url()
    );
    let gw = gateway_with_clock(&yaml, shared).await;
    for _ in 0..3 {
        gw.get("/dead/x")
            .await
            .assert_problem(502, "upstream_unavailable");
    }
    // An upstream error is still an answer: it counts.
    assert_eq!(gw.get("/live/status/500").await.status, 500);
    gw.get("/live/a")
        .await
        .assert_problem(429, "quota_exceeded");
    assert_eq!(up.count(), 1);
    gw.shutdown().await;
}

fn abuse_config(upstream: &str, abuse: &str) -> String {
    with_policies(
        upstream,
        &format!("  trap: {{type: abuse, {abuse}}}"),
        "trusted_proxies: [127.0.0.1]",
    )
}

#[tokio::test]
async fn the_threshold_th_watched_answer_bans_the_caller_until_the_ban_expires() {
    let up = Upstream::start().await;
    let (clock, shared) = clock();
    let yaml = abuse_config(
        &up.url(),
        "watch: [404], threshold: 3, window: 1m, ban: 10m",
    );
    let gw = gateway_with_clock(&yaml, shared).await;
    let from = |ip: &'static str| [("x-forwarded-for", ip)];
    let bad = "203.0.113.7";
    for _ in 0..3 {
        let got = gw.get_with("/employees/files/status/404", &from(bad)).await;
        assert_eq!(got.status, 404);
    }
    let banned = gw.get_with("/employees/1", &from(bad)).await;
    banned.assert_problem(403, "banned");
    assert_eq!(banned.header("retry-after"), Some("600"));
    assert_eq!(up.count(), 3);
    // Others are not affected.
    assert_eq!(
        gw.get_with("/employees/1", &from("203.0.113.8"))
            .await
            .status,
        200
    );
    clock.advance(Duration::from_secs(599));
    let banned = gw.get_with("/employees/1", &from(bad)).await;
    assert_eq!(banned.header("retry-after"), Some("1"));
    clock.advance(Duration::from_secs(1));
    assert_eq!(gw.get_with("/employees/1", &from(bad)).await.status, 200);
    gw.shutdown().await;
}

#[tokio::test]
async fn watched_answers_outside_the_window_do_not_add_up_to_a_ban() {
    let up = Upstream::start().await;
    let (clock, shared) = clock();
    let yaml = abuse_config(
        &up.url(),
        "watch: [404], threshold: 2, window: 1m, ban: 10m",
    );
    let gw = gateway_with_clock(&yaml, shared).await;
    for _ in 0..3 {
        assert_eq!(gw.get("/employees/files/status/404").await.status, 404);
        clock.advance(Duration::from_secs(61));
    }
    assert_eq!(gw.get("/employees/1").await.status, 200);
    gw.shutdown().await;
}

#[tokio::test]
async fn a_scanner_probing_unrouted_paths_is_banned_by_its_404s() {
    let up = Upstream::start().await;
    let (_clock, shared) = clock();
    let yaml = abuse_config(&up.url(), "threshold: 3, ban: 15m");
    let gw = gateway_with_clock(&yaml, shared).await;
    for path in ["/admin", "/.git/config", "/backup.zip"] {
        gw.get(path).await.assert_problem(404, "route_not_found");
    }
    let banned = gw.get("/employees/1").await;
    banned.assert_problem(403, "banned");
    assert_eq!(banned.header("retry-after"), Some("900"));
    gw.get("/anything").await.assert_problem(403, "banned");
    assert_eq!(up.count(), 0);
    gw.shutdown().await;
}

#[tokio::test]
async fn a_blocked_path_bans_at_once_and_never_reaches_the_upstream() {
    let up = Upstream::start().await;
    let (_clock, shared) = clock();
    let yaml = abuse_config(&up.url(), r#"block_paths: ['\.php$'], ban: 1h"#);
    let gw = gateway_with_clock(&yaml, shared).await;
    let got = gw.get("/employees/files/wp-login.php").await;
    got.assert_problem(403, "banned");
    assert_eq!(got.header("retry-after"), Some("3600"));
    gw.get("/employees/1").await.assert_problem(403, "banned");
    assert_eq!(up.count(), 0);
    gw.shutdown().await;
}

#[tokio::test]
async fn a_blocked_user_agent_bans_at_once() {
    let up = Upstream::start().await;
    let (_clock, shared) = clock();
    let yaml = abuse_config(&up.url(), r#"block_user_agents: ['(?i)sqlmap']"#);
    let gw = gateway_with_clock(&yaml, shared).await;
    gw.get_with("/employees/1", &[("user-agent", "SQLMap/1.7")])
        .await
        .assert_problem(403, "banned");
    gw.get_with("/employees/1", &[("user-agent", "curl/8")])
        .await
        .assert_problem(403, "banned");
    assert_eq!(up.count(), 0);
    gw.shutdown().await;
}

#[tokio::test]
async fn ipv6_callers_in_one_slash_64_share_a_ban() {
    let up = Upstream::start().await;
    let (_clock, shared) = clock();
    let yaml = abuse_config(&up.url(), r#"block_paths: ['^/employees/files/\.env']"#);
    let gw = gateway_with_clock(&yaml, shared).await;
    let from = |ip: &'static str| [("x-forwarded-for", ip)];
    gw.get_with("/employees/files/.env", &from("2001:db8:1:2::1"))
        .await
        .assert_problem(403, "banned");
    gw.get_with("/employees/1", &from("2001:db8:1:2:ffff::9"))
        .await
        .assert_problem(403, "banned");
    assert_eq!(
        gw.get_with("/employees/1", &from("2001:db8:1:3::1"))
            .await
            .status,
        200
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn bans_survive_a_reload_compiled_with_the_same_deps() {
    let up = Upstream::start().await;
    let (_clock, shared) = clock();
    let yaml = abuse_config(&up.url(), r#"block_paths: ['\.php$']"#);
    let deps = deps_for(&yaml, shared);
    let gw = gateway_with_deps(&yaml, &deps).await;
    gw.get("/employees/files/x.php")
        .await
        .assert_problem(403, "banned");
    let reloaded = compile_with_deps(&yaml, &deps).expect("compiles");
    gw.server.gateway.store(Arc::new(reloaded));
    gw.get("/employees/1").await.assert_problem(403, "banned");
    gw.shutdown().await;
}

#[tokio::test]
async fn a_malformed_redis_url_is_a_config_error_at_its_line() {
    let yaml = simple_config(
        "http://127.0.0.1:9",
        "state: {store: redis, redis_url: \"not-a-url\"}",
    );
    let loaded = tollgate::config::load_str(std::path::Path::new("t.yaml"), &yaml).expect("loads");
    let clock: SharedClock = ManualClock::new(0);
    let errors = match tollgate::gateway::Deps::for_config(&loaded, clock) {
        Ok(_) => panic!("a malformed redis_url was accepted"),
        Err(errors) => errors,
    };
    let text = errors[0].to_string();
    assert!(text.starts_with("t.yaml:3:"), "{text}");
    assert!(text.contains("redis_url"), "{text}");
}

#[tokio::test]
async fn a_redis_store_that_is_down_at_start_is_not_a_config_error() {
    let nothing = closed_port().await;
    let yaml = simple_config(
        "http://127.0.0.1:9",
        &format!("state: {{store: redis, redis_url: \"redis://{nothing}\"}}"),
    );
    let loaded = tollgate::config::load_str(std::path::Path::new("t.yaml"), &yaml).expect("loads");
    let clock: SharedClock = ManualClock::new(0);
    let deps = tollgate::gateway::Deps::for_config(&loaded, clock).expect("deps");
    assert_eq!(deps.store.kind(), "redis");
}

/// The example files' policies, inlined under `policies:` (the loader's
/// `include:` is tested with the config loader; this checks the contents).
fn example_policies() -> String {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
    let mut out = String::from("policies:\n");
    for file in [
        "per-client-rate.yaml",
        "daily-quota.yaml",
        "scanner-trap.yaml",
    ] {
        let text = std::fs::read_to_string(dir.join(file)).expect("example file");
        for line in text.lines() {
            out.push_str("  ");
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

#[tokio::test]
async fn the_example_policy_files_compile_and_trap_a_scanner() {
    let up = Upstream::start().await;
    let (_clock, shared) = clock();
    let extra = format!(
        "roles: [agent]\n{}apply: [scanner-trap, per-client-rate, agent-rate, daily-quota]",
        example_policies()
    );
    let gw = gateway_with_clock(&simple_config(&up.url(), &extra), shared).await;
    let got = gw.get("/employees/1").await;
    assert_eq!(got.status, 200);
    assert_eq!(
        got.header("ratelimit-policy"),
        Some("\"per-client-rate\";q=600;w=60")
    );
    assert_eq!(got.header("x-ratelimit-remaining"), Some("49"));
    gw.get("/wp-login.php").await.assert_problem(403, "banned");
    gw.get("/employees/1").await.assert_problem(403, "banned");
    gw.shutdown().await;
}
