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

use super::{Check, CheckLayer, CompileCx, Phase, PolicyMeta, RequestHead, Stage};
use crate::context::RequestContext;
use crate::gateway::parse_cidr;
use crate::problem::{Code, Reject};

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct IpConfig {
    #[serde(default)]
    pub allow: Vec<String>,
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

pub fn compile(
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
    Some(vec![CheckLayer::stage(Phase::Screen, ip, meta)])
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

    #[test]
    fn a_deny_only_list_admits_everyone_else() {
        let policy = ip(&[], &["203.0.113.9"]);
        assert!(policy.admits(&"203.0.113.8".parse().expect("ip")));
        assert!(!policy.admits(&"203.0.113.9".parse().expect("ip")));
    }
}
