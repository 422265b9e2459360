//! Task units (`cost`, `cost_header`, `quota` with `unit: tasks`): a real
//! gateway in front of a real upstream that reports the units it used in a
//! response header (the harness upstream adds `h-NAME=VALUE` query pairs as
//! response headers). Checked: what the client sees (the header removed, the
//! refusal's problem+json and RateLimit headers), what reached the
//! upstream, `/admin/usage` and `/metrics` — on the memory store and on a
//! real redis-server, one instance and two sharing it.

use crate::common::redis_server::RedisServer;
use crate::common::*;
use sha2::{Digest, Sha256};
use std::sync::Arc;
use tollgate::calendar::days_from_civil;
use tollgate::clock::{ManualClock, SharedClock};

const KEY: &str = "units-test-key";

/// 2026-03-10T12:00:00Z: 21 days and 12 hours before the month ends.
fn clock() -> (Arc<ManualClock>, SharedClock) {
    let secs = days_from_civil(2026, 3, 10) as u64 * 86_400 + 12 * 3600;
    let clock = ManualClock::new(secs * 1_000_000_000);
    let shared: SharedClock = clock.clone();
    (clock, shared)
}

/// Seconds from the clock's start to 2026-04-01T00:00:00Z.
const TO_MONTH_END: u64 = 21 * 86_400 + 12 * 3600;

/// One client; a quota of 20 tasks a month on the `reports` API, whose
/// upstream reports units in `X-Tasks-Used` (`other` uses `X-Units`).
fn config(upstream: &str, state: &str) -> String {
    let hash = hex::encode(Sha256::digest(KEY.as_bytes()));
    format!(
        r#"version: 1
listen: 127.0.0.1:0
admin: {{ listen: 127.0.0.1:0 }}
{state}
clients:
  - id: hr
    api_keys: [{{ sha256: {hash} }}]
policies:
  key-required: {{ type: auth, methods: [api_key] }}
  monthly-tasks: {{ type: quota, limit: 20, period: month, key: client, unit: tasks }}
  cached: {{ type: cache, ttl: 60s }}
apply: [key-required]
apis:
  - name: reports
    base_path: /r
    upstream: {upstream}
    cost_header: X-Tasks-Used
    apply: [monthly-tasks]
    operations:
      - {{ id: runReport, method: GET, path: /run, cost: 5 }}
      - {{ id: lookup, method: GET, path: /lookup, apply: [cached] }}
      - {{ id: other, method: GET, path: /other, cost: 2, cost_header: X-Units }}
"#
    )
}

fn key() -> [(&'static str, &'static str); 1] {
    [("x-api-key", KEY)]
}

/// The client's quota entry and usage from `/admin/usage`.
async fn usage(app: &App) -> serde_json::Value {
    let usage = app.admin_get("/admin/usage").await.json();
    usage["clients"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["client"] == "hr").cloned())
        .unwrap_or_else(|| panic!("hr not in {usage}"))
}

async fn quota_used(app: &App) -> u64 {
    let hr = usage(app).await;
    assert_eq!(hr["quotas"][0]["policy"], "monthly-tasks", "{hr}");
    assert_eq!(hr["quotas"][0]["unit"], "tasks");
    hr["quotas"][0]["used"].as_u64().expect("used")
}

/// The whole story of one client's month, on the store `state` names.
async fn a_month_of_tasks(state: &str) {
    let up = Upstream::start().await;
    let (_clock, shared) = clock();
    let app = App::start(&config(&up.url(), state), shared).await;

    // Reported 3: charged 3, and the header never reaches the caller.
    let got = app.get_with("/r/run?h-x-tasks-used=3", &key()).await;
    assert_eq!(got.status, 200);
    assert_eq!(got.header("x-tasks-used"), None);
    assert_eq!(up.count(), 1);
    assert_eq!(quota_used(&app).await, 3);
    // No report: the declared 5.
    assert_eq!(app.get_with("/r/run", &key()).await.status, 200);
    assert_eq!(quota_used(&app).await, 8);
    // A report that is not a number: the declared 5, counted as invalid,
    // and still removed.
    let got = app.get_with("/r/run?h-x-tasks-used=lots", &key()).await;
    assert_eq!(got.status, 200);
    assert_eq!(got.header("x-tasks-used"), None);
    assert_eq!(quota_used(&app).await, 13);
    // The operation's own header: X-Units is read and removed; the API's
    // header name means nothing to this operation and passes.
    let got = app
        .get_with("/r/other?h-x-units=4&h-x-tasks-used=9", &key())
        .await;
    assert_eq!(got.status, 200);
    assert_eq!(got.header("x-units"), None);
    assert_eq!(got.header("x-tasks-used"), Some("9"));
    assert_eq!(quota_used(&app).await, 17);
    // A cached answer costs nothing.
    let miss = app.get_with("/r/lookup", &key()).await;
    assert_eq!(miss.header("x-cache"), Some("MISS"));
    let hit = app.get_with("/r/lookup", &key()).await;
    assert_eq!(hit.header("x-cache"), Some("HIT"));
    assert_eq!(quota_used(&app).await, 18);
    assert_eq!(up.count(), 5);

    // 2 left, 5 declared: refused before the upstream, nothing taken.
    let refused = app.get_with("/r/run", &key()).await;
    refused.assert_problem(429, "quota_exceeded");
    let reset = TO_MONTH_END.to_string();
    assert_eq!(refused.header("retry-after"), Some(reset.as_str()));
    assert_eq!(refused.header("x-ratelimit-limit"), Some("20"));
    assert_eq!(refused.header("x-ratelimit-remaining"), Some("0"));
    assert_eq!(refused.header("x-ratelimit-reset"), Some(reset.as_str()));
    assert_eq!(
        refused.header("ratelimit"),
        Some(format!("\"monthly-tasks\";r=0;t={reset}").as_str())
    );
    assert_eq!(
        refused.header("ratelimit-policy"),
        Some("\"monthly-tasks\";q=20;w=2678400")
    );
    assert_eq!(up.count(), 5);
    assert_eq!(quota_used(&app).await, 18);
    // 1 declared fits in the 2 left; the upstream reports 10: all charged,
    // past the limit, and from then on every call is refused.
    let got = app
        .get_with("/r/lookup?new=1&h-x-tasks-used=10", &key())
        .await;
    assert_eq!(got.status, 200);
    assert_eq!(quota_used(&app).await, 28);
    app.get_with("/r/lookup?new=2", &key())
        .await
        .assert_problem(429, "quota_exceeded");
    assert_eq!(up.count(), 6);

    // Usage: calls and units side by side, refusals and cache hits free.
    let hr = usage(&app).await;
    assert_eq!(hr["calls"], 9, "{hr}");
    assert_eq!(hr["units"], 28);
    assert_eq!(hr["cache_hits"], 1);
    assert_eq!(hr["rejections"]["quota_exceeded"], 2);
    assert_eq!(hr["operations"]["runReport"]["calls"], 4);
    assert_eq!(hr["operations"]["runReport"]["units"], 13);
    assert_eq!(hr["operations"]["other"]["units"], 4);
    assert_eq!(hr["operations"]["lookup"]["calls"], 4);
    assert_eq!(hr["operations"]["lookup"]["units"], 11);
    assert_eq!(hr["quotas"][0]["limit"], 20);
    assert_eq!(hr["quotas"][0]["remaining"], 0);

    let metrics = app.metrics().await;
    let units = |op: &str| {
        sample(
            &metrics,
            &format!(
                "tollgate_task_units_total{{api=\"reports\",operation=\"{op}\",client=\"hr\"}}"
            ),
        )
    };
    assert_eq!(units("runReport"), Some(13.0), "{metrics}");
    assert_eq!(units("other"), Some(4.0));
    assert_eq!(units("lookup"), Some(11.0));
    assert_eq!(
        sample(
            &metrics,
            "tollgate_cost_header_invalid_total{api=\"reports\",operation=\"runReport\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &metrics,
            "tollgate_cost_header_invalid_total{api=\"reports\",operation=\"other\"}"
        ),
        Some(0.0)
    );
    // The status page shows the units beside the calls.
    let page = String::from_utf8(app.admin_get("/").await.body.to_vec()).expect("utf-8");
    assert!(page.contains("<th>Task units</th>"), "{page}");
    assert!(
        page.contains("<td><code>hr</code></td><td>9</td><td>28</td>"),
        "{page}"
    );
    // And the quota, in its unit, past its limit.
    assert!(
        page.contains(
            "<tr><td>monthly-tasks</td><td><code>client hr</code></td><td>28</td><td>20 a month</td><td>tasks</td>"
        ),
        "{page}"
    );
    app.shutdown().await;
}

#[tokio::test]
async fn a_month_of_tasks_is_charged_as_reported_on_the_memory_store() {
    a_month_of_tasks("").await;
}

#[tokio::test]
async fn a_month_of_tasks_is_charged_as_reported_on_redis() {
    let redis = RedisServer::start().await;
    a_month_of_tasks(&format!(
        "state: {{ store: redis, redis_url: \"{}\", timeout: 2s }}",
        redis.url()
    ))
    .await;
}

#[tokio::test]
async fn two_instances_on_one_redis_share_one_task_quota() {
    let redis = RedisServer::start().await;
    let up = Upstream::start().await;
    let yaml = config(
        &up.url(),
        &format!(
            "state: {{ store: redis, redis_url: \"{}\", timeout: 2s }}",
            redis.url()
        ),
    );
    let (_clock, shared) = clock();
    let a = App::start(&yaml, shared.clone()).await;
    let b = App::start(&yaml, shared).await;
    // 18 of 20 spent through A, in reports of 9.
    for _ in 0..2 {
        let got = a.get_with("/r/run?h-x-tasks-used=9", &key()).await;
        assert_eq!(got.status, 200);
    }
    // B sees them: 5 declared do not fit in the 2 left.
    b.get_with("/r/run", &key())
        .await
        .assert_problem(429, "quota_exceeded");
    assert_eq!(up.count(), 2);
    // 2 declared fit; the report of 1 gives one back, for A to use.
    assert_eq!(b.get_with("/r/other?h-x-units=1", &key()).await.status, 200);
    assert_eq!(quota_used(&a).await, 19);
    assert_eq!(a.get_with("/r/lookup", &key()).await.status, 200);
    assert_eq!(quota_used(&b).await, 20);
    a.get_with("/r/lookup?again=1", &key())
        .await
        .assert_problem(429, "quota_exceeded");
    a.shutdown().await;
    b.shutdown().await;
}

/// The FILE:LINE:COL errors of a config, from loading and compiling it.
fn config_errors(yaml: &str) -> Vec<String> {
    let (_clock, shared) = clock();
    match compile(std::path::Path::new("gw.yaml"), yaml, shared) {
        Ok(_) => Vec::new(),
        Err(errors) => errors,
    }
}

#[test]
fn a_negative_cost_and_bad_cost_headers_are_reported_where_written() {
    let yaml = config("http://127.0.0.1:9", "");
    let negative = yaml.replace("cost: 5", "cost: -5");
    assert_eq!(
        config_errors(&negative),
        ["gw.yaml:20:51: apis[0].operations[0].cost: invalid value: integer `-5`, expected u64"]
    );
    let bad = yaml
        .replace("cost_header: X-Tasks-Used", "cost_header: \"X Tasks\"")
        .replace("cost_header: X-Units", "cost_header: \"X-Units:\"");
    assert_eq!(
        config_errors(&bad),
        [
            "gw.yaml:17:5: apis[0].cost_header: `X Tasks` is not a valid HTTP header name",
            "gw.yaml:22:58: apis[0].operations[2].cost_header: `X-Units:` is not a valid HTTP header name",
        ]
    );
    let bad_unit = yaml.replace("unit: tasks", "unit: dollars");
    assert_eq!(
        config_errors(&bad_unit),
        ["gw.yaml:10:72: policies.monthly-tasks.unit: unknown variant `dollars`, expected `calls` or `tasks`"]
    );
}
