//! IP allow/deny lists (CIDR); deny wins.
//!
//! ```yaml
//! policies:
//!   internal-network:
//!     type: ip
//!     allow: [10.0.0.0/8, 192.168.0.0/16, "fd00::/8", 127.0.0.1]
//!     deny: [10.66.0.0/16]
//! ```
//!
//! Judges the client IP the gateway computed (the TCP peer, or the
//! rightmost untrusted `X-Forwarded-For` hop behind a trusted proxy), in
//! the `Screen` phase, before any other work. Refusal: 403 `ip_denied`.

use ipnet::IpNet;
use schemars::JsonSchema;
use serde::Deserialize;
use std::sync::Arc;

use super::registry::PolicyKind;
use super::{Check, CompileCx, Phase, PolicyMeta, RequestHead, Stage};
use crate::context::RequestContext;
use crate::gateway::parse_cidr;
use crate::problem::{Code, Reject};

/// `type: ip` — allow and deny lists of client IPs (CIDRs or addresses); deny wins, a refused
/// caller gets 403 `ip_denied`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct IpConfig {
    /// If set, only client IPs in these CIDRs or addresses pass, e.g. `[10.0.0.0/8, 127.0.0.1]`.
    #[serde(default)]
    pub allow: Vec<String>,
    /// Client IPs refused even when `allow` matches, e.g. `[10.66.0.0/16]`.
    #[serde(default)]
    pub deny: Vec<String>,
}

/// A compiled `ip` policy.
#[derive(Debug, Clone)]
pub struct Ip {
    /// Empty: every address not denied passes.
    allow: Vec<IpNet>,
    deny: Vec<IpNet>,
}

impl PolicyKind for IpConfig {
    const TYPE: &'static str = "ip";
    const SCHEMA_NAME: &'static str = "IpPolicy";

    fn compile(&self, meta: &Arc<PolicyMeta>, cx: &mut CompileCx<'_>) -> Option<Vec<Stage>> {
        compile(self, meta, cx)
    }

    fn refusals(&self) -> &'static [Code] {
        &[Code::IpDenied]
    }
}

fn compile(
    config: &IpConfig,
    meta: &Arc<PolicyMeta>,
    cx: &mut CompileCx<'_>,
) -> Option<Vec<Stage>> {
    if config.allow.is_empty() && config.deny.is_empty() {
        cx.error(&[], "give `allow`, `deny` or both");
        return None;
    }
    let mut nets = |field: &str, entries: &[String]| {
        let mut out = Vec::with_capacity(entries.len());
        for (i, entry) in entries.iter().enumerate() {
            match parse_cidr(entry.trim()) {
                Ok(net) => out.push(net),
                Err(message) => cx.error(&[field, &i.to_string()], message),
            }
        }
        out
    };
    let ip = Ip {
        allow: nets("allow", &config.allow),
        deny: nets("deny", &config.deny),
    };
    Some(vec![Stage::check(Phase::Screen, meta, ip)])
}

// === impl Ip ===

impl Ip {
    fn admits(&self, ip: &std::net::IpAddr) -> bool {
        !self.deny.iter().any(|net| net.contains(ip))
            && (self.allow.is_empty() || self.allow.iter().any(|net| net.contains(ip)))
    }
}

impl Check for Ip {
    fn check(&self, _req: &mut RequestHead<'_>, cx: &mut RequestContext) -> Result<(), Reject> {
        if self.admits(&cx.client_ip) {
            Ok(())
        } else {
            Err(Reject::new(
                Code::IpDenied,
                "calls from this address are not allowed",
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(allow: &[&str], deny: &[&str]) -> Ip {
        let parse = |l: &[&str]| l.iter().map(|s| parse_cidr(s).expect("cidr")).collect();
        Ip {
            allow: parse(allow),
            deny: parse(deny),
        }
    }

    #[test]
    fn deny_wins_and_an_allow_list_admits_only_its_networks() {
        let policy = ip(&["10.0.0.0/8", "2001:db8::/32"], &["10.66.0.0/16"]);
        let admits = |s: &str| policy.admits(&s.parse().expect("ip"));
        assert!(admits("10.1.2.3"));
        assert!(!admits("10.66.1.1"));
        assert!(!admits("192.168.1.1"));
        assert!(admits("2001:db8::7"));
        assert!(!admits("2001:db9::7"));
    }

    use crate::gateway::canonical_ip;
    use proptest::prelude::*;
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

    /// Bit arithmetic, by hand: `ip` is in `addr/prefix` when their first
    /// `prefix` bits agree. Both sides canonical (IPv4-mapped IPv6 is IPv4,
    /// as the gateway sees a client).
    fn reference_contains(addr: IpAddr, prefix: u8, ip: IpAddr) -> bool {
        let (addr, prefix) = match addr {
            IpAddr::V6(v6) if v6.to_ipv4_mapped().is_some() && prefix >= 96 => {
                (canonical_ip(addr), prefix - 96)
            }
            other => (other, prefix),
        };
        match (addr, canonical_ip(ip)) {
            (IpAddr::V4(a), IpAddr::V4(b)) => {
                prefix == 0 || (u32::from(a) ^ u32::from(b)) >> (32 - u32::from(prefix)) == 0
            }
            (IpAddr::V6(a), IpAddr::V6(b)) => {
                prefix == 0 || (u128::from(a) ^ u128::from(b)) >> (128 - u32::from(prefix)) == 0
            }
            _ => false,
        }
    }

    /// Addresses that often share prefixes (so matches are common), in both
    /// families and IPv4-mapped IPv6.
    fn address() -> impl Strategy<Value = IpAddr> {
        prop_oneof![
            (any::<u8>(), any::<u8>()).prop_map(|(c, d)| IpAddr::V4(Ipv4Addr::new(
                10,
                0,
                c & 3,
                d
            ))),
            any::<u32>().prop_map(|v| IpAddr::V4(Ipv4Addr::from(v))),
            (any::<u16>(), any::<u64>()).prop_map(|(g, low)| {
                IpAddr::V6(Ipv6Addr::from(
                    (0x2001_0db8_u128 << 96) | (u128::from(g & 7) << 64) | u128::from(low & 0xff),
                ))
            }),
            any::<u128>().prop_map(|v| IpAddr::V6(Ipv6Addr::from(v))),
            (any::<u8>(), any::<u8>())
                .prop_map(|(c, d)| IpAddr::V6(Ipv4Addr::new(10, 0, c & 3, d).to_ipv6_mapped())),
        ]
    }

    /// A CIDR as written in a config: any address (host bits set or not)
    /// with a prefix that fits its family.
    fn cidr() -> impl Strategy<Value = (IpAddr, u8)> {
        address().prop_flat_map(|addr| {
            let max: u8 = if addr.is_ipv4() { 32 } else { 128 };
            (Just(addr), 0..=max)
        })
    }

    proptest! {
        #[test]
        fn a_cidr_contains_exactly_the_addresses_sharing_its_prefix(
            (addr, prefix) in cidr(),
            ips in proptest::collection::vec(address(), 1..16),
        ) {
            let net = parse_cidr(&format!("{addr}/{prefix}")).expect("valid cidr");
            let policy = Ip { allow: vec![net], deny: vec![] };
            for ip in ips {
                prop_assert_eq!(
                    policy.admits(&canonical_ip(ip)),
                    reference_contains(addr, prefix, ip),
                    "{}/{} and {}", addr, prefix, ip
                );
            }
        }

        #[test]
        fn deny_wins_and_an_empty_allow_list_admits_all_not_denied(
            allow in proptest::collection::vec(cidr(), 0..4),
            deny in proptest::collection::vec(cidr(), 0..4),
            ip in address(),
        ) {
            let nets = |l: &[(IpAddr, u8)]| -> Vec<IpNet> {
                l.iter().map(|(a, p)| parse_cidr(&format!("{a}/{p}")).expect("cidr")).collect()
            };
            let policy = Ip { allow: nets(&allow), deny: nets(&deny) };
            let denied = deny.iter().any(|(a, p)| reference_contains(*a, *p, ip));
            let allowed = allow.is_empty() || allow.iter().any(|(a, p)| reference_contains(*a, *p, ip));
            prop_assert_eq!(policy.admits(&canonical_ip(ip)), !denied && allowed);
        }
    }

    #[test]
    fn an_ipv4_mapped_cidr_judges_ipv4_callers() {
        let policy = ip(&[], &["::ffff:10.0.0.0/104"]);
        assert!(!policy.admits(&"10.1.2.3".parse().expect("ip")));
        assert!(policy.admits(&"11.1.2.3".parse().expect("ip")));
    }

    #[test]
    fn a_deny_only_list_admits_everyone_else() {
        let policy = ip(&[], &["203.0.113.9"]);
        assert!(policy.admits(&"203.0.113.8".parse().expect("ip")));
        assert!(!policy.admits(&"203.0.113.9".parse().expect("ip")));
    }
}
