//! IPv6 fairness: `rate_limit` and `quota` counting by IP (`key: ip`, and
//! `key: client` for anonymous callers) group IPv6 callers by
//! `ipv6_prefix` (default 64), so rotating addresses inside one /64 gains
//! nothing. Callers present IPv6 addresses through a trusted proxy
//! (`X-Forwarded-For` from 127.0.0.1), since loopback IPv6 is only ::1.

use crate::common::*;
use tollgate::clock::{ManualClock, SharedClock};

fn clock() -> SharedClock {
    // 2027-01-15T08:00:00Z: far from a UTC day boundary.
    ManualClock::new(1_800_000_000 * 1_000_000_000)
}

async fn gateway_with(up: &Upstream, policy: &str) -> TestGateway {
    let extra = format!("trusted_proxies: [127.0.0.1]\napply:\n  - {policy}");
    gateway_with_clock(&simple_config(&up.url(), &extra), clock()).await
}

async fn status_from(gw: &TestGateway, ip: &str) -> u16 {
    gw.get_with("/employees/1", &[("x-forwarded-for", ip)])
        .await
        .status
        .as_u16()
}

#[tokio::test]
async fn rotating_addresses_inside_one_slash_64_gains_nothing() {
    for (policy, refusal) in [
        ("{ type: rate_limit, limit: 2, window: 1h, key: ip }", 429),
        (
            "{ type: rate_limit, limit: 2, window: 1h, key: client }",
            429,
        ),
        ("{ type: quota, limit: 2, period: day, key: ip }", 429),
        ("{ type: quota, limit: 2, period: day }", 429),
    ] {
        let up = Upstream::start().await;
        let gw = gateway_with(&up, policy).await;
        assert_eq!(status_from(&gw, "2001:db8:1:2::1").await, 200, "{policy}");
        assert_eq!(
            status_from(&gw, "2001:db8:1:2:ffff::2").await,
            200,
            "{policy}"
        );
        // A third address in the same /64: the same budget, used up.
        let got = gw
            .get_with(
                "/employees/1",
                &[("x-forwarded-for", "2001:db8:1:2:abcd::3")],
            )
            .await;
        let code = if policy.contains("quota") {
            "quota_exceeded"
        } else {
            "rate_limited"
        };
        got.assert_problem(refusal, code);
        // Another /64 has its own; an IPv4 caller too.
        assert_eq!(status_from(&gw, "2001:db8:1:3::1").await, 200, "{policy}");
        assert_eq!(status_from(&gw, "192.0.2.7").await, 200, "{policy}");
        assert_eq!(up.count(), 4, "{policy}");
        gw.shutdown().await;
    }
}

#[tokio::test]
async fn ipv6_prefix_128_counts_each_address_and_48_a_whole_site() {
    let up = Upstream::start().await;
    let gw = gateway_with(
        &up,
        "{ type: rate_limit, limit: 1, window: 1h, key: ip, ipv6_prefix: 128 }",
    )
    .await;
    for ip in ["2001:db8:1:2::1", "2001:db8:1:2::2", "2001:db8:1:2::3"] {
        assert_eq!(status_from(&gw, ip).await, 200, "{ip}");
    }
    assert_eq!(status_from(&gw, "2001:db8:1:2::1").await, 429);
    gw.shutdown().await;

    let gw = gateway_with(
        &up,
        "{ type: quota, limit: 1, period: day, key: ip, ipv6_prefix: 48 }",
    )
    .await;
    assert_eq!(status_from(&gw, "2001:db8:1:2::1").await, 200);
    assert_eq!(status_from(&gw, "2001:db8:1:3::1").await, 429);
    assert_eq!(status_from(&gw, "2001:db8:2::1").await, 200);
    gw.shutdown().await;
}

#[test]
fn an_ipv6_prefix_out_of_range_is_a_config_error_at_its_place() {
    let yaml = simple_config(
        "http://127.0.0.1:9",
        "policies:\n  per-ip: { type: rate_limit, limit: 1, window: 1m, key: ip, ipv6_prefix: 129 }\n  daily: { type: quota, limit: 1, period: day, ipv6_prefix: 200 }",
    );
    let errors = match compile(std::path::Path::new("v6.yaml"), &yaml, clock()) {
        Ok(_) => panic!("the config compiled"),
        Err(errors) => errors,
    };
    assert_eq!(
        errors,
        [
            "v6.yaml:4:62: policies.per-ip.ipv6_prefix: 129 is not an IPv6 prefix length (0 to 128)",
            "v6.yaml:5:48: policies.daily.ipv6_prefix: 200 is not an IPv6 prefix length (0 to 128)",
        ]
    );
}
