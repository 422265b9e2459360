//! Client addresses: CIDR parsing, the canonical form addresses are
//! compared in, and the `X-Forwarded-For` walk that finds the caller
//! behind trusted proxies (DESIGN §3). Used by the entry, the `ip`, `abuse`
//! and limit policies, and the config compiler.

use ipnet::IpNet;
use std::net::{IpAddr, SocketAddr};

use crate::header_names::X_FORWARDED_FOR;

/// Whether `ip` is in one of `nets` (compared in canonical form).
pub fn is_within(nets: &[IpNet], ip: IpAddr) -> bool {
    let ip = canonical_ip(ip);
    nets.iter().any(|net| net.contains(&ip))
}

/// The caller's address (DESIGN §3): the peer, unless the peer is a
/// trusted proxy; then the rightmost `X-Forwarded-For` hop that is not
/// itself trusted.
pub fn client_ip(
    trusted: &[IpNet],
    peer: IpAddr,
    peer_trusted: bool,
    headers: &http::HeaderMap,
) -> IpAddr {
    let mut candidate = canonical_ip(peer);
    if !peer_trusted {
        return candidate;
    }
    let hops = headers
        .get_all(X_FORWARDED_FOR)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .collect::<Vec<_>>();
    for hop in hops.iter().rev() {
        match parse_forwarded_ip(hop) {
            Some(ip) => {
                candidate = ip;
                if !is_within(trusted, ip) {
                    return ip;
                }
            }
            // A hop we cannot read was written by someone we do not
            // trust: stop at the last address we could vouch for.
            None => return candidate,
        }
    }
    candidate
}

/// IPv4-mapped IPv6 addresses are IPv4 (so `::ffff:10.0.0.1` meets `10.0.0.0/8`).
pub fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

/// One `X-Forwarded-For` hop: an address, maybe bracketed or with a port.
fn parse_forwarded_ip(hop: &str) -> Option<IpAddr> {
    let hop = hop.trim();
    if let Ok(ip) = hop.parse::<IpAddr>() {
        return Some(canonical_ip(ip));
    }
    if let Ok(sock) = hop.parse::<SocketAddr>() {
        return Some(canonical_ip(sock.ip()));
    }
    hop.strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .and_then(|h| h.parse::<IpAddr>().ok())
        .map(canonical_ip)
}

/// A CIDR (`10.0.0.0/8`, `2001:db8::/32`) or a single address. An
/// IPv4-mapped IPv6 network (`::ffff:10.0.0.0/104`) becomes the IPv4 one:
/// client addresses are compared in that form (see [`canonical_ip`]), so
/// as written it would never match anyone.
pub fn parse_cidr(s: &str) -> Result<IpNet, String> {
    let net = match s.parse::<IpNet>() {
        Ok(net) => net.trunc(),
        Err(_) => s
            .parse::<IpAddr>()
            .map(IpNet::from)
            .map_err(|_| format!("`{s}` is not a CIDR (like 10.0.0.0/8) or an IP address"))?,
    };
    Ok(match net {
        IpNet::V6(v6) if v6.prefix_len() >= 96 => match v6.addr().to_ipv4_mapped() {
            Some(v4) => ipnet::Ipv4Net::new(v4, v6.prefix_len() - 96)
                .map(IpNet::V4)
                .unwrap_or(net),
            None => net,
        },
        other => other,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwarded_hops_parse_with_brackets_and_ports() {
        assert_eq!(
            parse_forwarded_ip(" 10.0.0.1 "),
            Some("10.0.0.1".parse().expect("ip"))
        );
        assert_eq!(
            parse_forwarded_ip("[2001:db8::1]"),
            Some("2001:db8::1".parse().expect("ip"))
        );
        assert_eq!(
            parse_forwarded_ip("10.0.0.1:443"),
            Some("10.0.0.1".parse().expect("ip"))
        );
        assert_eq!(
            parse_forwarded_ip("::ffff:10.0.0.1"),
            Some("10.0.0.1".parse().expect("ip"))
        );
        assert_eq!(parse_forwarded_ip("unknown"), None);
    }

    #[test]
    fn cidrs_and_single_addresses_are_accepted() {
        assert_eq!(
            parse_cidr("10.1.2.3/8").map(|n| n.to_string()),
            Ok("10.0.0.0/8".into())
        );
        assert_eq!(
            parse_cidr("::1").map(|n| n.to_string()),
            Ok("::1/128".into())
        );
        assert_eq!(
            parse_cidr("::ffff:10.1.0.0/104").map(|n| n.to_string()),
            Ok("10.0.0.0/8".into())
        );
        assert_eq!(
            parse_cidr("::ffff:10.1.2.3").map(|n| n.to_string()),
            Ok("10.1.2.3/32".into())
        );
        assert!(parse_cidr("10.0.0.0/33").is_err());
        assert!(parse_cidr("nope").is_err());
    }
}
