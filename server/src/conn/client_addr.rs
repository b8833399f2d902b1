//! The client's address: IP networks (CIDR) and which `X-Forwarded-For`
//! entry to believe, given the proxies trusted to set it. Pure.

use std::net::SocketAddr;

/// An IP network (`10.0.0.0/8`, `::1/128`, or a bare address).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IpNet {
    addr: std::net::IpAddr,
    prefix: u8,
}

impl std::str::FromStr for IpNet {
    type Err = ();

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (
                a.parse::<std::net::IpAddr>().map_err(|_| ())?,
                Some(p.parse::<u8>().map_err(|_| ())?),
            ),
            None => (s.parse::<std::net::IpAddr>().map_err(|_| ())?, None),
        };
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = prefix.unwrap_or(max);
        if prefix > max {
            return Err(());
        }
        Ok(IpNet { addr, prefix })
    }
}

impl IpNet {
    /// Whether `ip` is inside the network.
    pub fn contains(&self, ip: std::net::IpAddr) -> bool {
        let ip = match ip {
            std::net::IpAddr::V6(v6) => v6.to_ipv4_mapped().map(std::net::IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        match (self.addr, ip) {
            (std::net::IpAddr::V4(net), std::net::IpAddr::V4(ip)) => {
                let mask = if self.prefix == 0 {
                    0
                } else {
                    u32::MAX << (32 - self.prefix)
                };
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (std::net::IpAddr::V6(net), std::net::IpAddr::V6(ip)) => {
                let mask = if self.prefix == 0 {
                    0
                } else {
                    u128::MAX << (128 - self.prefix)
                };
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// The client's address for logs: the peer, or, when the peer is a trusted
/// proxy, the right-most `X-Forwarded-For` entry that is not itself a
/// trusted proxy (entries to its left could be forged by the client).
pub fn client_address(peer: SocketAddr, forwarded_for: Option<&str>, trusted: &[IpNet]) -> String {
    let is_trusted = |ip: std::net::IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(peer.ip()) {
        return peer.to_string();
    }
    let Some(list) = forwarded_for else {
        return peer.to_string();
    };
    for entry in list.rsplit(',').map(str::trim) {
        match entry.parse::<std::net::IpAddr>() {
            Ok(ip) if is_trusted(ip) => continue,
            Ok(ip) => return ip.to_string(),
            Err(_) => break,
        }
    }
    peer.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let proxies: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap(), "::1".parse().unwrap()];
        let proxy: SocketAddr = "10.1.2.3:4000".parse().unwrap();
        let stranger: SocketAddr = "203.0.113.9:4000".parse().unwrap();
        assert_eq!(
            client_address(proxy, Some("198.51.100.7"), &proxies),
            "198.51.100.7"
        );
        assert_eq!(
            client_address(proxy, Some("1.1.1.1, 198.51.100.7, 10.0.0.5"), &proxies),
            "198.51.100.7"
        );
        assert_eq!(
            client_address(stranger, Some("198.51.100.7"), &proxies),
            "203.0.113.9:4000"
        );
        assert_eq!(
            client_address(proxy, Some("garbage"), &proxies),
            "10.1.2.3:4000"
        );
        assert_eq!(client_address(proxy, None, &proxies), "10.1.2.3:4000");
        assert!("10.0.0.0/33".parse::<IpNet>().is_err());
        assert!("::ffff:10.9.9.9"
            .parse::<std::net::IpAddr>()
            .map(|ip| proxies[0].contains(ip))
            .unwrap());
    }
}
