//! Shadow mode (`report_only: true`) end to end: a shadow policy of every
//! kind is evaluated, never refuses, and shows as a would-be refusal in
//! `/metrics` (`mode="report"`) and in the access log (`would_reject`); a
//! shadow limit, quota or ban never touches the caller's real budget.

use crate::common::*;
use sha2::{Digest, Sha256};
use std::sync::Arc;
use tollgate::clock::{ManualClock, SharedClock};

const KEY: &str = "tk_live_shadow_reader_0123";
/// 2027-01-15T08:00:00Z.
const NOW: u64 = 1_800_000_000 * 1_000_000_000;

fn clock() -> SharedClock {
    let clock: Arc<ManualClock> = ManualClock::new(NOW);
    clock
}

/// An app with an admin listener, one client (`hr`, role `reader`), the
/// named `policies` and the gateway-wide `apply` list.
async fn app(up: &Upstream, policies: &str, apply: &str) -> App {
    let extra = format!(
        "admin: {{ listen: 127.0.0.1:0 }}\nroles: [reader, admin]\nclients:\n  - id: hr\n    roles: [reader]\n    api_keys: [{{ sha256: {}, id: hr-2027 }}]\npolicies:\n{policies}\napply: [{apply}]",
        hex::encode(Sha256::digest(KEY.as_bytes()))
    );
    App::start(&simple_config(&up.url(), &extra), clock()).await
}

/// `tollgate_policy_rejections_total` of `policy` and `code` in `mode`.
fn rejections(metrics: &str, policy: &str, code: &str, mode: &str) -> f64 {
    let series = format!(
        r#"tollgate_policy_rejections_total{{policy="{policy}",code="{code}",mode="{mode}"}}"#
    );
    sample(metrics, &series).unwrap_or(0.0)
}

/// Calls once with `headers`, expects the upstream's answer and one
/// would-be refusal `code` by `policy` in the access log and the metrics.
async fn assert_shadowed(
    app: &App,
    up: &Upstream,
    headers: &[(&str, &str)],
    policy: &str,
    code: &str,
) {
    let logs = capture_logs();
    let before = up.count();
    let got = app.get_with("/employees/7", headers).await;
    assert_eq!(got.status, 200, "{:?}", got.body);
    assert_eq!(up.count(), before + 1, "the call reached the upstream");
    let access = logs.access();
    let line = access.last().expect("an access-log line");
    assert_eq!(line["status"], 200, "{line}");
    assert_eq!(line["would_reject"], code, "{line}");
    assert_eq!(line["would_reject_policy"], policy, "{line}");
    assert!(line.get("code").is_none(), "not a refusal: {line}");
    let metrics = app.metrics().await;
    assert_eq!(
        rejections(&metrics, policy, code, "report"),
        1.0,
        "{metrics}"
    );
    assert_eq!(
        rejections(&metrics, policy, code, "enforce"),
        0.0,
        "{metrics}"
    );
}

#[tokio::test]
async fn a_shadow_auth_lets_an_anonymous_call_through_and_reports_it() {
    let up = Upstream::start().await;
    let app = app(
        &up,
        "  trial-auth: { type: auth, methods: [api_key], report_only: true }",
        "trial-auth",
    )
    .await;
    assert_shadowed(&app, &up, &[], "trial-auth", "unauthenticated").await;
    assert!(up.last().headers.get("x-tollgate-client").is_none());
    app.shutdown().await;
}

#[tokio::test]
async fn a_shadow_role_rule_lets_a_reader_through_and_reports_it() {
    let up = Upstream::start().await;
    let app = app(
        &up,
        "  key: { type: auth, methods: [api_key] }\n  admins: { type: roles, allow: [admin], report_only: true }",
        "key, admins",
    )
    .await;
    assert_shadowed(&app, &up, &[("x-api-key", KEY)], "admins", "forbidden_role").await;
    assert_eq!(up.last().headers["x-tollgate-client"], "hr");
    app.shutdown().await;
}

#[tokio::test]
async fn a_shadow_ip_deny_lets_the_caller_through_and_reports_it() {
    let up = Upstream::start().await;
    let app = app(
        &up,
        "  no-loopback: { type: ip, deny: [127.0.0.0/8], report_only: true }",
        "no-loopback",
    )
    .await;
    assert_shadowed(&app, &up, &[], "no-loopback", "ip_denied").await;
    app.shutdown().await;
}

#[tokio::test]
async fn a_shadow_required_header_lets_the_call_through_and_reports_it() {
    let up = Upstream::start().await;
    let app = app(
        &up,
        "  tenant: { type: headers, require: [X-Tenant], report_only: true }",
        "tenant",
    )
    .await;
    assert_shadowed(&app, &up, &[], "tenant", "header_required").await;
    app.shutdown().await;
}

#[tokio::test]
async fn a_shadow_rate_limit_never_refuses_and_leaves_the_real_limit_alone() {
    let up = Upstream::start().await;
    // The shadow limit is listed first, so it judges every call, the one
    // the real limit refuses included; the real limit still lets exactly
    // its three calls through, and its headers are the only ones.
    let app = app(
        &up,
        "  key: { type: auth, methods: [api_key] }\n  trial: { type: rate_limit, limit: 1, window: 1h, key: client, report_only: true }\n  real: { type: rate_limit, limit: 3, window: 1h, key: client }",
        "key, trial, real",
    )
    .await;
    let logs = capture_logs();
    let key = [("x-api-key", KEY)];
    for remaining in ["2", "1", "0"] {
        let got = app.get_with("/employees/7", &key).await;
        assert_eq!(got.status, 200, "{:?}", got.body);
        assert_eq!(got.header("ratelimit-policy"), Some("\"real\";q=3;w=3600"));
        assert_eq!(got.header("x-ratelimit-remaining"), Some(remaining));
    }
    let refused = app.get_with("/employees/7", &key).await;
    let problem = refused.assert_problem(429, "rate_limited");
    assert!(problem["detail"].is_string());
    assert_eq!(
        refused.header("ratelimit-policy"),
        Some("\"real\";q=3;w=3600")
    );
    assert_eq!(up.count(), 3);

    let shadowed: Vec<_> = logs
        .access()
        .iter()
        .map(|l| l["would_reject"].clone())
        .collect();
    assert_eq!(
        shadowed,
        [
            serde_json::Value::Null,
            "rate_limited".into(),
            "rate_limited".into(),
            "rate_limited".into()
        ]
    );
    let metrics = app.metrics().await;
    assert_eq!(
        rejections(&metrics, "trial", "rate_limited", "report"),
        3.0,
        "{metrics}"
    );
    assert_eq!(
        rejections(&metrics, "real", "rate_limited", "enforce"),
        1.0,
        "{metrics}"
    );
    app.shutdown().await;
}

#[tokio::test]
async fn a_shadow_quota_never_refuses_and_does_not_eat_the_real_quota() {
    let up = Upstream::start().await;
    let app = app(
        &up,
        "  key: { type: auth, methods: [api_key] }\n  trial-quota: { type: quota, limit: 1, period: day, key: client, report_only: true }\n  daily: { type: quota, limit: 3, period: day, key: client }",
        "key, trial-quota, daily",
    )
    .await;
    let key = [("x-api-key", KEY)];
    for _ in 0..3 {
        assert_eq!(app.get_with("/employees/7", &key).await.status, 200);
    }
    app.get_with("/employees/7", &key)
        .await
        .assert_problem(429, "quota_exceeded");
    assert_eq!(up.count(), 3);

    let usage = app.admin_get("/admin/usage").await.json();
    let hr = usage["clients"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["client"] == "hr"))
        .expect("hr in usage")
        .clone();
    let used = |policy: &str| {
        hr["quotas"]
            .as_array()
            .and_then(|q| q.iter().find(|q| q["policy"] == policy))
            .map(|q| q["used"].clone())
    };
    assert_eq!(used("daily"), Some(3.into()), "{hr}");
    assert_eq!(used("trial-quota"), Some(1.into()), "{hr}");
    let metrics = app.metrics().await;
    assert_eq!(
        rejections(&metrics, "trial-quota", "quota_exceeded", "report"),
        3.0,
        "{metrics}"
    );
    assert_eq!(
        rejections(&metrics, "daily", "quota_exceeded", "enforce"),
        1.0,
        "{metrics}"
    );
    app.shutdown().await;
}

#[tokio::test]
async fn a_shadow_abuse_rule_bans_nobody_and_reports_would_be_bans() {
    let up = Upstream::start().await;
    let app = app(
        &up,
        "  trap: { type: abuse, watch: [404], threshold: 2, ban: 1h, block_paths: ['^/employees/files/\\.env'], report_only: true }",
        "trap",
    )
    .await;
    let logs = capture_logs();
    // A blocked path: answered by the upstream, a would-be ban.
    let blocked = app.get_with("/employees/files/.env", &[]).await;
    assert_eq!(blocked.status, 200, "{:?}", blocked.body);
    // The same caller next: not banned.
    assert_eq!(app.get_with("/employees/7", &[]).await.status, 200);
    // Two watched answers: the second reaches the threshold.
    for _ in 0..2 {
        assert_eq!(
            app.get_with("/employees/files/status/404", &[])
                .await
                .status,
            404
        );
    }
    assert_eq!(app.get_with("/employees/7", &[]).await.status, 200);
    assert_eq!(up.count(), 5);

    let shadowed: Vec<_> = logs
        .access()
        .iter()
        .map(|l| l["would_reject"].clone())
        .collect();
    let null = serde_json::Value::Null;
    assert_eq!(
        shadowed,
        [
            "banned".into(),
            null.clone(),
            null.clone(),
            "banned".into(),
            null
        ]
    );
    let bans = app.admin_get("/admin/bans").await.json();
    assert_eq!(bans["bans"], serde_json::json!([]));
    let metrics = app.metrics().await;
    assert_eq!(sample(&metrics, "tollgate_bans_active"), Some(0.0));
    assert_eq!(
        rejections(&metrics, "trap", "banned", "report"),
        2.0,
        "{metrics}"
    );
    app.shutdown().await;
}

#[tokio::test]
async fn with_a_shadow_and_an_enforcing_abuse_rule_only_the_enforcing_one_bans() {
    let up = Upstream::start().await;
    let app = app(
        &up,
        "  trial-trap: { type: abuse, block_paths: ['^/employees/files/'], report_only: true }\n  trap: { type: abuse, block_paths: ['\\.php$'] }",
        "trial-trap, trap",
    )
    .await;
    assert_eq!(
        app.get_with("/employees/files/a.txt", &[]).await.status,
        200
    );
    assert_eq!(app.get_with("/employees/7", &[]).await.status, 200);
    app.get_with("/employees/files/x.php", &[])
        .await
        .assert_problem(403, "banned");
    app.get_with("/employees/7", &[])
        .await
        .assert_problem(403, "banned");
    let bans = app.admin_get("/admin/bans").await.json();
    let keys: Vec<_> = bans["bans"]
        .as_array()
        .map(|b| b.iter().map(|b| b["key"].clone()).collect())
        .unwrap_or_default();
    assert_eq!(keys, ["trap:127.0.0.1"]);
    app.shutdown().await;
}
