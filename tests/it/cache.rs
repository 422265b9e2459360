//! The `cache` policy end to end: what is stored and for whom, when it
//! expires (injected clock, no sleeps), how it meets rate limits, quotas,
//! usage, metrics and reloads, and that it stays within `max_size`.
//! The upstream numbers its answers (`seq`), so a body tells which call
//! of the upstream made it.

use crate::common::*;
use bytes::Bytes;
use http::{Method, Request};
use http_body_util::Full;
use sha2::{Digest, Sha256};
use std::sync::Arc;
use std::time::Duration;
use tollgate::clock::{ManualClock, SharedClock};

const T0: u64 = 1_706_742_000 * 1_000_000_000;
const HR_KEY: &str = "hr-cache-key";
const FIN_KEY: &str = "fin-cache-key";

fn clock() -> (Arc<ManualClock>, SharedClock) {
    let clock = ManualClock::new(T0);
    let shared: SharedClock = clock.clone();
    (clock, shared)
}

/// `simple_config` with clients `hr` and `fin`, callers' X-Forwarded-For
/// believed (so a test can speak from several addresses), `policies`
/// (YAML mapping lines indented by two) and `apply` gateway-wide.
fn config(upstream: &str, policies: &str, apply: &str) -> String {
    let hash = |key: &str| hex::encode(Sha256::digest(key.as_bytes()));
    simple_config(
        upstream,
        &format!(
            r#"trusted_proxies: [127.0.0.1]
clients:
  - {{ id: hr, api_keys: [{{ sha256: {} }}] }}
  - {{ id: fin, api_keys: [{{ sha256: {} }}] }}
policies:
  key: {{ type: auth, methods: [api_key] }}
{policies}
apply: [{apply}]
"#,
            hash(HR_KEY),
            hash(FIN_KEY)
        ),
    )
}

fn key(key: &'static str) -> [(&'static str, &'static str); 1] {
    [("x-api-key", key)]
}

fn seq(got: &Got) -> u64 {
    got.json()["seq"]
        .as_u64()
        .unwrap_or_else(|| panic!("no seq in {:?}", got.body))
}

#[tokio::test]
async fn a_repeated_get_is_answered_from_the_cache_with_its_age() {
    let up = Upstream::start().await;
    let (clock, shared) = clock();
    let yaml = config(
        &up.url(),
        "  cached: { type: cache, ttl: 60s }",
        "key, cached",
    );
    let gw = gateway_with_clock(&yaml, shared).await;
    let first = gw.get_with("/employees/7", &key(HR_KEY)).await;
    assert_eq!(first.status, 200);
    assert_eq!(first.header("x-cache"), Some("MISS"));
    assert_eq!(first.header("age"), None);
    clock.advance(Duration::from_secs(5));
    let second = gw.get_with("/employees/7", &key(HR_KEY)).await;
    assert_eq!(second.status, 200);
    assert_eq!(second.header("x-cache"), Some("HIT"));
    assert_eq!(second.header("age"), Some("5"));
    assert_eq!(second.body, first.body);
    assert_eq!(second.header("content-type"), Some("application/json"));
    assert_eq!(
        second.header("content-length"),
        Some(first.body.len().to_string().as_str())
    );
    // The hit is this request's answer: its own request id, not the first's.
    let (a, b) = (first.header("x-request-id"), second.header("x-request-id"));
    assert!(a.is_some() && b.is_some() && a != b, "{a:?} {b:?}");
    assert_eq!(up.count(), 1);
    // Another path, another entry.
    assert_eq!(
        gw.get_with("/employees/8", &key(HR_KEY))
            .await
            .header("x-cache"),
        Some("MISS")
    );
    assert_eq!(up.count(), 2);
    gw.shutdown().await;
}

#[tokio::test]
async fn an_entry_is_served_until_its_ttl_ends_then_fetched_again() {
    let up = Upstream::start().await;
    let (clock, shared) = clock();
    let yaml = config(
        &up.url(),
        "  cached: { type: cache, ttl: 10s }",
        "key, cached",
    );
    let gw = gateway_with_clock(&yaml, shared).await;
    let get = || async { gw.get_with("/employees/7", &key(HR_KEY)).await };
    assert_eq!(seq(&get().await), 1);
    clock.advance(Duration::from_millis(9_999));
    let late = get().await;
    assert_eq!((late.header("x-cache"), seq(&late)), (Some("HIT"), 1));
    assert_eq!(late.header("age"), Some("9"));
    clock.advance(Duration::from_millis(1));
    let expired = get().await;
    assert_eq!(
        (expired.header("x-cache"), seq(&expired)),
        (Some("MISS"), 2)
    );
    let again = get().await;
    assert_eq!((again.header("x-cache"), seq(&again)), (Some("HIT"), 2));
    assert_eq!(again.header("age"), Some("0"));
    assert_eq!(up.count(), 2);
    gw.shutdown().await;
}

#[tokio::test]
async fn one_callers_entry_is_never_served_to_another() {
    let up = Upstream::start().await;
    let (_clock, shared) = clock();
    let yaml = config(
        &up.url(),
        "  cached: { type: cache, ttl: 60s }",
        "key, cached",
    );
    let gw = gateway_with_clock(&yaml, shared).await;
    let hr = gw.get_with("/employees/7", &key(HR_KEY)).await;
    let fin = gw.get_with("/employees/7", &key(FIN_KEY)).await;
    assert_eq!(fin.header("x-cache"), Some("MISS"));
    assert_eq!((seq(&hr), seq(&fin)), (1, 2));
    assert_eq!(
        up.last()
            .headers
            .get("x-tollgate-client")
            .and_then(|v| v.to_str().ok()),
        Some("fin")
    );
    // Each gets its own entry back, never the other's.
    for _ in 0..2 {
        let hr_again = gw.get_with("/employees/7", &key(HR_KEY)).await;
        let fin_again = gw.get_with("/employees/7", &key(FIN_KEY)).await;
        assert_eq!(hr_again.header("x-cache"), Some("HIT"));
        assert_eq!(fin_again.header("x-cache"), Some("HIT"));
        assert_eq!((seq(&hr_again), seq(&fin_again)), (1, 2));
    }
    assert_eq!(up.count(), 2);
    gw.shutdown().await;
}

#[tokio::test]
async fn anonymous_callers_get_one_entry_per_address() {
    let up = Upstream::start().await;
    let (_clock, shared) = clock();
    let yaml = config(&up.url(), "  cached: { type: cache, ttl: 60s }", "cached");
    let gw = gateway_with_clock(&yaml, shared).await;
    let gw_ref = &gw;
    let from = |ip: &'static str| async move {
        gw_ref
            .get_with("/employees/7", &[("x-forwarded-for", ip)])
            .await
    };
    let a = from("192.0.2.1").await;
    let b = from("192.0.2.2").await;
    assert_eq!((seq(&a), seq(&b)), (1, 2));
    assert_eq!(seq(&from("192.0.2.1").await), 1);
    assert_eq!(seq(&from("192.0.2.2").await), 2);
    assert_eq!(up.count(), 2);
    gw.shutdown().await;
}

#[tokio::test]
async fn a_shared_cache_serves_one_entry_to_every_caller_that_passes_auth() {
    let up = Upstream::start().await;
    let (_clock, shared) = clock();
    let yaml = config(
        &up.url(),
        "  cached: { type: cache, ttl: 60s, shared: true }",
        "key, cached",
    );
    let gw = gateway_with_clock(&yaml, shared).await;
    let hr = gw.get_with("/employees/7", &key(HR_KEY)).await;
    let fin = gw.get_with("/employees/7", &key(FIN_KEY)).await;
    assert_eq!(fin.header("x-cache"), Some("HIT"));
    assert_eq!(fin.body, hr.body);
    assert_eq!(up.count(), 1);
    // The policies before the cache still judge every call.
    gw.get("/employees/7")
        .await
        .assert_problem(401, "unauthenticated");
    gw.get_with("/employees/7", &key("wrong"))
        .await
        .assert_problem(401, "invalid_credentials");
    assert_eq!(up.count(), 1);
    gw.shutdown().await;
}

#[tokio::test]
async fn vary_headers_select_separate_entries() {
    let up = Upstream::start().await;
    let (_clock, shared) = clock();
    let yaml = config(
        &up.url(),
        "  cached: { type: cache, ttl: 60s, vary: [Accept-Language] }",
        "cached",
    );
    let gw = gateway_with_clock(&yaml, shared).await;
    let path = "/employees/7?h-vary=accept-language";
    let gw_ref = &gw;
    let lang =
        |l: &'static str| async move { gw_ref.get_with(path, &[("accept-language", l)]).await };
    assert_eq!(seq(&lang("en").await), 1);
    assert_eq!(seq(&lang("de").await), 2);
    assert_eq!(seq(&gw.get(path).await), 3);
    let en = lang("en").await;
    assert_eq!((en.header("x-cache"), seq(&en)), (Some("HIT"), 1));
    assert_eq!(seq(&lang("de").await), 2);
    assert_eq!(seq(&gw.get(path).await), 3);
    // An empty value is not the same as no header.
    assert_eq!(seq(&lang("").await), 4);
    assert_eq!(up.count(), 4);
    // An upstream that varies by a header the policy does not key on
    // is never stored: the entry could not tell the variants apart.
    let other = "/employees/7?h-vary=accept-encoding";
    gw.get(other).await;
    let again = gw.get(other).await;
    assert_eq!(again.header("x-cache"), Some("MISS"));
    assert_eq!(up.count(), 6);
    gw.shutdown().await;
}

#[tokio::test]
async fn no_store_no_cache_and_set_cookie_answers_are_not_stored() {
    let up = Upstream::start().await;
    let (_clock, shared) = clock();
    let yaml = config(&up.url(), "  cached: { type: cache, ttl: 60s }", "cached");
    let gw = gateway_with_clock(&yaml, shared).await;
    for path in [
        "/employees/1?h-cache-control=no-store",
        "/employees/2?h-cache-control=max-age%3D60,%20no-cache",
        "/employees/3?h-set-cookie=session%3Dabc",
        "/employees/4?h-cache-control=max-age%3D0",
    ] {
        let before = up.count();
        for _ in 0..2 {
            let got = gw.get(path).await;
            assert_eq!(
                (got.status.as_u16(), got.header("x-cache")),
                (200, Some("MISS")),
                "{path}"
            );
        }
        assert_eq!(up.count(), before + 2, "{path}");
    }
    gw.shutdown().await;
}

#[tokio::test]
async fn private_answers_are_kept_only_for_the_authenticated_client_they_were_for() {
    let up = Upstream::start().await;
    let (_clock, shared) = clock();
    let path = "/employees/7?h-cache-control=private,%20max-age%3D60";
    // Per client, authenticated: the entry only ever goes back to `hr`.
    let yaml = config(
        &up.url(),
        "  cached: { type: cache, ttl: 60s }",
        "key, cached",
    );
    let gw = gateway_with_clock(&yaml, shared.clone()).await;
    gw.get_with(path, &key(HR_KEY)).await;
    assert_eq!(
        gw.get_with(path, &key(HR_KEY)).await.header("x-cache"),
        Some("HIT")
    );
    assert_eq!(
        gw.get_with(path, &key(FIN_KEY)).await.header("x-cache"),
        Some("MISS")
    );
    assert_eq!(up.count(), 2);
    gw.shutdown().await;

    // Shared, or anonymous (an address is not a person): never stored.
    for (policy, apply, who) in [
        (
            "  cached: { type: cache, ttl: 60s, shared: true }",
            "key, cached",
            HR_KEY,
        ),
        ("  cached: { type: cache, ttl: 60s }", "cached", ""),
    ] {
        let gw = gateway_with_clock(&config(&up.url(), policy, apply), shared.clone()).await;
        let before = up.count();
        for _ in 0..2 {
            let got = if who.is_empty() {
                gw.get(path).await
            } else {
                gw.get_with(path, &[("x-api-key", who)]).await
            };
            assert_eq!(got.header("x-cache"), Some("MISS"), "{policy}");
        }
        assert_eq!(up.count(), before + 2, "{policy}");
        gw.shutdown().await;
    }
}

#[tokio::test]
async fn max_age_and_the_upstreams_age_shorten_the_ttl() {
    let up = Upstream::start().await;
    let (clock, shared) = clock();
    let yaml = config(&up.url(), "  cached: { type: cache, ttl: 60s }", "cached");
    let gw = gateway_with_clock(&yaml, shared).await;
    let short = "/employees/7?h-cache-control=max-age%3D5";
    assert_eq!(seq(&gw.get(short).await), 1);
    clock.advance(Duration::from_secs(4));
    assert_eq!(gw.get(short).await.header("x-cache"), Some("HIT"));
    clock.advance(Duration::from_secs(1));
    assert_eq!(gw.get(short).await.header("x-cache"), Some("MISS"));

    // s-maxage wins over max-age: this is a gateway, a shared cache.
    let shared_age = "/employees/8?h-cache-control=max-age%3D50,%20s-maxage%3D3";
    gw.get(shared_age).await;
    clock.advance(Duration::from_secs(3));
    assert_eq!(gw.get(shared_age).await.header("x-cache"), Some("MISS"));

    // An answer already 3s old upstream, fresh for 5: 2s left here, and
    // the Age it is served with counts from the upstream's.
    let aged = "/employees/9?h-cache-control=max-age%3D5&h-age=3";
    gw.get(aged).await;
    clock.advance(Duration::from_secs(1));
    let hit = gw.get(aged).await;
    assert_eq!(
        (hit.header("x-cache"), hit.header("age")),
        (Some("HIT"), Some("4"))
    );
    clock.advance(Duration::from_secs(1));
    assert_eq!(gw.get(aged).await.header("x-cache"), Some("MISS"));

    // A max-age longer than the ttl does not lengthen it.
    let long = "/employees/10?h-cache-control=max-age%3D3600";
    gw.get(long).await;
    clock.advance(Duration::from_secs(60));
    assert_eq!(gw.get(long).await.header("x-cache"), Some("MISS"));
    gw.shutdown().await;
}

#[tokio::test]
async fn a_caller_asking_no_cache_gets_a_fresh_answer_that_replaces_the_entry() {
    let up = Upstream::start().await;
    let (_clock, shared) = clock();
    let yaml = config(&up.url(), "  cached: { type: cache, ttl: 60s }", "cached");
    let gw = gateway_with_clock(&yaml, shared).await;
    assert_eq!(seq(&gw.get("/employees/7").await), 1);
    for (header, value) in [("cache-control", "no-cache"), ("pragma", "no-cache")] {
        let fresh = gw.get_with("/employees/7", &[(header, value)]).await;
        assert_eq!(fresh.header("x-cache"), Some("MISS"), "{header}");
        let after = gw.get("/employees/7").await;
        assert_eq!(after.header("x-cache"), Some("HIT"));
        assert_eq!(seq(&after), seq(&fresh));
    }
    // no-store: answered afresh but not stored.
    let kept = seq(&gw.get("/employees/7").await);
    gw.get_with("/employees/7", &[("cache-control", "no-cache, no-store")])
        .await;
    assert_eq!(seq(&gw.get("/employees/7").await), kept);
    assert_eq!(up.count(), 4);
    gw.shutdown().await;
}

#[tokio::test]
async fn posts_and_gets_with_a_body_are_never_cached() {
    let up = Upstream::start().await;
    let (_clock, shared) = clock();
    let yaml = config(&up.url(), "  cached: { type: cache, ttl: 60s }", "cached");
    let gw = gateway_with_clock(&yaml, shared).await;
    for _ in 0..2 {
        let req = Request::post(gw.url("/employees/"))
            .body(Full::new(Bytes::from_static(b"{}")))
            .expect("request");
        let got = gw.send(req).await;
        assert_eq!(got.status, 200);
        assert_eq!(got.header("x-cache"), None);
    }
    for _ in 0..2 {
        let req = Request::get(gw.url("/employees/7"))
            .body(Full::new(Bytes::from_static(b"{\"q\":1}")))
            .expect("request");
        assert_eq!(gw.send(req).await.header("x-cache"), None);
    }
    assert_eq!(up.count(), 4);
    gw.shutdown().await;
}

#[tokio::test]
async fn head_is_answered_from_a_cached_get_and_never_stored_itself() {
    let up = Upstream::start().await;
    let (_clock, shared) = clock();
    let yaml = config(&up.url(), "  cached: { type: cache, ttl: 60s }", "cached");
    let gw = gateway_with_clock(&yaml, shared).await;
    let head = |path: &str| {
        gw.send(
            Request::head(gw.url(path))
                .body(Full::default())
                .expect("request"),
        )
    };
    // HEAD first: forwarded as HEAD, nothing stored.
    let miss = head("/employees/1").await;
    assert_eq!(miss.header("x-cache"), Some("MISS"));
    assert_eq!(up.last().method, Method::HEAD);
    assert_eq!(gw.get("/employees/1").await.header("x-cache"), Some("MISS"));
    // A stored GET answers HEAD: same head, no body.
    let got = gw.get("/employees/2").await;
    let before = up.count();
    let hit = head("/employees/2").await;
    assert_eq!(hit.status, 200);
    assert_eq!(hit.header("x-cache"), Some("HIT"));
    assert!(hit.body.is_empty());
    assert_eq!(
        hit.header("content-length"),
        Some(got.body.len().to_string().as_str())
    );
    assert_eq!(up.count(), before);
    gw.shutdown().await;
}

#[tokio::test]
async fn upstream_404s_are_stored_but_errors_and_gateway_answers_are_not() {
    let up = Upstream::start().await;
    let (_clock, shared) = clock();
    let yaml = config(&up.url(), "  cached: { type: cache, ttl: 60s }", "cached");
    let gw = gateway_with_clock(&yaml, shared).await;
    gw.get("/employees/files/status/404").await;
    let hit = gw.get("/employees/files/status/404").await;
    assert_eq!(
        (hit.status.as_u16(), hit.header("x-cache")),
        (404, Some("HIT"))
    );
    for _ in 0..2 {
        let got = gw.get("/employees/files/status/500").await;
        assert_eq!(
            (got.status.as_u16(), got.header("x-cache")),
            (500, Some("MISS"))
        );
    }
    assert_eq!(up.count(), 3);
    // A timeout is the gateway's own answer (504): never stored.
    let yaml = simple_config(
        &up.url(),
        "policies:\n  cached: { type: cache, ttl: 60s }\napply: [cached]\n",
    );
    let gw2 = gateway_with_clock(&yaml, clock().1).await;
    for _ in 0..2 {
        let got = gw2.get("/wf/hang").await;
        got.assert_problem(504, "upstream_timeout");
        assert_eq!(got.header("x-cache"), Some("MISS"));
    }
    gw.shutdown().await;
    gw2.shutdown().await;
}

#[tokio::test]
async fn a_hit_takes_a_rate_limit_token_but_no_quota() {
    let up = Upstream::start().await;
    let (clock, shared) = clock();
    let yaml = config(
        &up.url(),
        "  cached: { type: cache, ttl: 5m }
  rate: { type: rate_limit, limit: 4, window: 1m, key: client }
  daily: { type: quota, limit: 2, period: day, key: client }",
        // Listed in the opposite order of the phases: the order holds anyway.
        "key, daily, cached, rate",
    );
    let gw = gateway_with_clock(&yaml, shared).await;
    let gw_ref = &gw;
    let get = |path: &'static str| async move { gw_ref.get_with(path, &key(HR_KEY)).await };
    let mut remaining = Vec::new();
    for (path, cache) in [
        ("/employees/1", "MISS"),
        ("/employees/1", "HIT"),
        ("/employees/1", "HIT"),
        // Had the hits taken quota, this third unit would be refused.
        ("/employees/2", "MISS"),
    ] {
        let got = get(path).await;
        assert_eq!(
            (got.status.as_u16(), got.header("x-cache")),
            (200, Some(cache))
        );
        remaining.push(got.header("x-ratelimit-remaining").map(str::to_string));
    }
    assert_eq!(
        remaining,
        [Some("3"), Some("2"), Some("1"), Some("0")].map(|r| r.map(String::from))
    );
    // The hits spent tokens: a fifth call within the minute is refused, hit or not.
    get("/employees/1")
        .await
        .assert_problem(429, "rate_limited");
    clock.advance(Duration::from_secs(15));
    get("/employees/3")
        .await
        .assert_problem(429, "quota_exceeded");
    // Past the quota, a stored answer is still served: no workflow runs.
    clock.advance(Duration::from_secs(15));
    let hit = get("/employees/1").await;
    assert_eq!(
        (hit.status.as_u16(), hit.header("x-cache")),
        (200, Some("HIT"))
    );
    assert_eq!(up.count(), 2);
    gw.shutdown().await;
}

#[tokio::test]
async fn the_entries_stay_within_max_size_and_oversized_answers_just_stream() {
    let up = Upstream::start().await;
    let (_clock, shared) = clock();
    let deps = deps_for(&config(&up.url(), "", ""), shared);
    let yaml = config(
        &up.url(),
        "  cached: { type: cache, ttl: 60s, max_size: 4KiB, max_entry_size: 2KiB }",
        "cached",
    );
    let gw = gateway_with_deps(&yaml, &deps).await;
    let big = |i: usize| format!("/employees/files/big/500?i={i}");
    // Each entry weighs ~900 bytes (500 of body, key, headers, overhead):
    // one fits, four at most fit together.
    gw.get(&big(0)).await;
    assert_eq!(gw.get(&big(0)).await.header("x-cache"), Some("HIT"));
    for i in 1..20 {
        assert_eq!(gw.get(&big(i)).await.body.len(), 500);
    }
    let text = deps.metrics.render(None);
    let held = metric(&text, r#"tollgate_cache_bytes{policy="cached"}"#);
    assert!(held > 0.0 && held <= 4096.0, "{held}\n{text}");
    let before = up.count();
    let mut hits = 0;
    for i in 0..20 {
        let got = gw.get(&big(i)).await;
        assert_eq!(got.body.len(), 500);
        hits += usize::from(got.header("x-cache") == Some("HIT"));
    }
    assert!(hits <= 4, "{hits} entries of ~900 bytes held in 4KiB");
    assert_eq!(up.count(), before + 20 - hits);
    // Larger than max_entry_size: served whole, every time from upstream.
    let before = up.count();
    for _ in 0..2 {
        let got = gw.get("/employees/files/big/3000").await;
        assert_eq!(
            (got.body.len(), got.header("x-cache")),
            (3000, Some("MISS"))
        );
    }
    assert_eq!(up.count(), before + 2);
    let text = deps.metrics.render(None);
    assert!(metric(&text, r#"tollgate_cache_bytes{policy="cached"}"#) <= 4096.0);
    gw.shutdown().await;
}

#[tokio::test]
async fn report_only_counts_would_be_hits_but_forwards_every_call() {
    let up = Upstream::start().await;
    let (_clock, shared) = clock();
    let deps = deps_for(&config(&up.url(), "", ""), shared);
    let yaml = config(
        &up.url(),
        "  trial: { type: cache, ttl: 60s, report_only: true }",
        "trial",
    );
    let gw = gateway_with_deps(&yaml, &deps).await;
    for n in 1..=3 {
        let got = gw.get("/employees/7").await;
        assert_eq!((seq(&got), got.header("x-cache")), (n, None));
    }
    let text = deps.metrics.render(None);
    assert_eq!(
        metric(
            &text,
            r#"tollgate_cache_lookups_total{policy="trial",result="miss"}"#
        ),
        1.0
    );
    assert_eq!(
        metric(
            &text,
            r#"tollgate_cache_lookups_total{policy="trial",result="hit"}"#
        ),
        2.0
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn a_config_error_in_a_cache_policy_points_at_its_line() {
    let up = Upstream::start().await;
    for (policy, line, expected) in [
        ("  cached: { type: cache, ttl: 0s }", "ttl", "at least 1s"),
        (
            "  cached: { type: cache, ttl: 1m, max_size: 1KiB, max_entry_size: 2KiB }",
            "max_entry_size",
            "cannot be larger than `max_size`",
        ),
        (
            "  cached: { type: cache, ttl: 1m, max_size: 100 }",
            "max_size",
            "too small to hold an entry",
        ),
        (
            "  cached: { type: cache, ttl: 1m, vary: [\"bad header\"] }",
            "vary",
            "is not a header name",
        ),
        (
            "  cached: { type: cache, ttl: 1m, max_size: lots }",
            "max_size",
            "is not a size",
        ),
    ] {
        let yaml = config(&up.url(), policy, "cached");
        let errors = compile(std::path::Path::new("tollgate-test.yaml"), &yaml, clock().1)
            .err()
            .unwrap_or_else(|| panic!("{policy} compiled"));
        let at = yaml
            .lines()
            .position(|l| l.starts_with("  cached:"))
            .map(|i| i + 1)
            .expect("policy line");
        assert!(
            errors
                .iter()
                .any(|e| e.starts_with(&format!("tollgate-test.yaml:{at}:"))
                    && e.contains(line)
                    && e.contains(expected)),
            "{policy}: {errors:?}"
        );
    }
}

fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {series} in\n{text}"))
}

fn with_admin(yaml: &str) -> String {
    yaml.replacen(
        "listen: 127.0.0.1:0\n",
        "listen: 127.0.0.1:0\nadmin: { listen: 127.0.0.1:0 }\n",
        1,
    )
}

#[tokio::test]
async fn usage_and_metrics_show_the_hits_per_client_and_operation() {
    let up = Upstream::start().await;
    let (_clock, shared) = clock();
    let yaml = with_admin(&config(
        &up.url(),
        "  cached: { type: cache, ttl: 60s }",
        "key, cached",
    ));
    let served = App::start(&yaml, shared).await;
    for _ in 0..3 {
        assert_eq!(served.call("/employees/7", Some(HR_KEY)).await.status, 200);
    }
    served.call("/employees/7", Some(FIN_KEY)).await;

    let usage = served.admin(Method::GET, "/admin/usage").await.json();
    let client = |id: &str| {
        usage["clients"]
            .as_array()
            .and_then(|cs| cs.iter().find(|c| c["client"] == id))
            .cloned()
            .unwrap_or_else(|| panic!("{id} not in {usage}"))
    };
    let hr = client("hr");
    assert_eq!(
        (&hr["calls"], &hr["cache_hits"]),
        (&3.into(), &2.into()),
        "{hr}"
    );
    assert_eq!(hr["operations"]["getEmployee"]["cache_hits"], 2, "{hr}");
    assert_eq!(hr["operations"]["getEmployee"]["calls"], 3, "{hr}");
    let fin = client("fin");
    assert_eq!(
        (&fin["calls"], &fin["cache_hits"]),
        (&1.into(), &0.into()),
        "{fin}"
    );

    let text = String::from_utf8(served.admin(Method::GET, "/metrics").await.body.to_vec())
        .expect("utf-8");
    assert_eq!(
        metric(
            &text,
            r#"tollgate_cache_lookups_total{policy="cached",result="hit"}"#
        ),
        2.0
    );
    assert_eq!(
        metric(
            &text,
            r#"tollgate_cache_lookups_total{policy="cached",result="miss"}"#
        ),
        2.0
    );
    assert!(metric(&text, r#"tollgate_cache_bytes{policy="cached"}"#) > 0.0);
    // Hits are answered requests like any other.
    assert_eq!(
        metric(
            &text,
            r#"tollgate_requests_total{api="directory",operation="getEmployee",client="hr",status="200"}"#
        ),
        3.0
    );
    served.running.shutdown().await;
}

#[tokio::test]
async fn a_reload_keeps_the_entries_of_an_unchanged_config_and_drops_them_on_a_change() {
    let up = Upstream::start().await;
    let (_clock, shared) = clock();
    let yaml = with_admin(&config(
        &up.url(),
        "  cached: { type: cache, ttl: 60s }",
        "key, cached",
    ));
    let served = App::start(&yaml, shared).await;
    assert_eq!(seq(&served.call("/employees/7", Some(HR_KEY)).await), 1);

    let reloaded = served.admin(Method::POST, "/admin/reload").await;
    assert_eq!(reloaded.status, 200, "{:?}", reloaded.body);
    let kept = served.call("/employees/7", Some(HR_KEY)).await;
    assert_eq!((kept.header("x-cache"), seq(&kept)), (Some("HIT"), 1));

    // Any change may change what the upstream's answer becomes on its way
    // out (here: a response header removed), so the entries go.
    served.rewrite(&yaml.replace(
        "  cached: { type: cache, ttl: 60s }",
        "  cached: { type: cache, ttl: 60s }\n  quiet: { type: headers, response: { remove: [Content-Type] } }",
    ).replace("apply: [key, cached]", "apply: [key, cached, quiet]"));
    let reloaded = served.admin(Method::POST, "/admin/reload").await;
    assert_eq!(reloaded.status, 200, "{:?}", reloaded.body);
    let fresh = served.call("/employees/7", Some(HR_KEY)).await;
    assert_eq!((fresh.header("x-cache"), seq(&fresh)), (Some("MISS"), 2));
    assert_eq!(fresh.header("content-type"), None);
    served.running.shutdown().await;
}
