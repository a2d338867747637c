//! What outbound requests (input images at caller URLs, provider outputs, webhook deliveries)
//! may reach, so that the service never becomes a proxy into the network it runs in (SSRF).
//! Pure: the policy and the address rules; [`crate::adapters::PublicHttp`] enforces them.
//!
//! Only `https` (plus `http` when explicitly allowed for local development); every address a
//! host resolves to must be public: private, loopback, link-local (which includes the
//! 169.254.169.254 instance metadata service), CGNAT, multicast, reserved, and their
//! IPv4-mapped and NAT64 IPv6 forms are refused. At most [`MAX_REDIRECTS`] redirects, each
//! checked again. The body is capped while it streams, and the whole exchange has a deadline.

use async_trait::async_trait;
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

/// Redirects followed per fetch.
pub const MAX_REDIRECTS: usize = 3;

/// Resolves host names; injectable so tests can map a name to any address without DNS.
#[async_trait]
pub trait Resolver: Send + Sync {
    /// Every address `host` resolves to (`port` is copied into each).
    async fn resolve(&self, host: &str, port: u16) -> std::io::Result<Vec<SocketAddr>>;
}

/// A fixed name → addresses table (tests, or pinning known hosts).
#[derive(Debug, Clone, Default)]
pub struct StaticResolver(pub HashMap<String, Vec<IpAddr>>);

#[async_trait]
impl Resolver for StaticResolver {
    async fn resolve(&self, host: &str, port: u16) -> std::io::Result<Vec<SocketAddr>> {
        match self.0.get(host) {
            Some(ips) => Ok(ips.iter().map(|ip| SocketAddr::new(*ip, port)).collect()),
            None => Err(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("no address for {host}"),
            )),
        }
    }
}

/// Whether an address is anything but a public unicast address.
pub fn is_non_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_non_public_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_non_public_v4(v4);
            }
            let s = v6.segments();
            // NAT64 (64:ff9b::/96) embeds an IPv4 address that the gateway would reach.
            if s[0] == 0x64 && s[1] == 0xff9b && s[2..6] == [0, 0, 0, 0] {
                let o = v6.octets();
                return is_non_public_v4(Ipv4Addr::new(o[12], o[13], o[14], o[15]));
            }
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00 // unique local, incl. AWS's fd00:ec2::254 metadata
                || (s[0] & 0xffc0) == 0xfe80 // link-local
                || (s[0] == 0x2001 && s[1] == 0x0db8) // documentation
                || v6 == Ipv6Addr::new(0, 0, 0, 0, 0, 0, 0, 1)
        }
    }
}

fn is_non_public_v4(ip: Ipv4Addr) -> bool {
    let o = ip.octets();
    ip.is_private()
        || ip.is_loopback()
        || ip.is_link_local() // 169.254/16: instance metadata lives here
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || o[0] == 0 // "this network"
        || (o[0] == 100 && (o[1] & 0xc0) == 64) // CGNAT 100.64/10
        || (o[0] == 192 && o[1] == 0 && o[2] == 0) // IETF protocol assignments
        || (o[0] == 198 && (o[1] & 0xfe) == 18) // benchmarking 198.18/15
        || o[0] >= 240 // reserved
}
/// What an outbound request may reach, and how much it may read.
#[derive(Clone)]
pub struct FetchPolicy {
    /// Follow `http://` URLs too (local development only).
    pub allow_http: bool,
    /// Reach non-public addresses (local development only).
    pub allow_private: bool,
    /// Exact socket addresses allowed even though non-public (e.g. a VPC endpoint).
    pub allowed_addresses: Vec<SocketAddr>,
    /// Byte cap of a fetched body.
    pub max_bytes: u64,
    /// Deadline of the whole exchange, redirects included.
    pub timeout: Duration,
    /// Name resolution; `None` is the operating system's resolver.
    pub resolver: Option<Arc<dyn Resolver>>,
}

impl FetchPolicy {
    /// The settings' address rules (`ALLOW_HTTP_URLS`, `ALLOW_PRIVATE_URLS`: development
    /// switches) with this byte cap and deadline, and the system resolver.
    pub fn from_settings(
        settings: &crate::config::Settings,
        max_bytes: u64,
        timeout: Duration,
    ) -> Self {
        Self {
            allow_http: settings.egress.allow_http_urls,
            allow_private: settings.egress.allow_private_urls,
            allowed_addresses: Vec::new(),
            max_bytes,
            timeout,
            resolver: None,
        }
    }

    /// The policy for input images at caller URLs: the settings' address rules, their byte cap,
    /// 20 s.
    pub fn for_inputs(settings: &crate::config::Settings) -> Self {
        Self::from_settings(settings, settings.limits.max_bytes, Duration::from_secs(20))
    }

    /// Whether `addr` may be connected to: public, or private ones allowed, or listed.
    pub fn allows(&self, addr: SocketAddr) -> bool {
        !is_non_public(addr.ip()) || self.allow_private || self.allowed_addresses.contains(&addr)
    }

    /// Whether `ip` may be connected to on some listed port (the connection-time check, where
    /// the port is not known; the exact address was checked before the request).
    pub fn allows_ip(&self, ip: IpAddr) -> bool {
        !is_non_public(ip)
            || self.allow_private
            || self.allowed_addresses.iter().any(|a| a.ip() == ip)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_public_addresses_are_recognised() {
        for ip in [
            "127.0.0.1",
            "10.0.0.1",
            "172.16.5.4",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "224.0.0.1",
            "255.255.255.255",
            "::1",
            "::",
            "fe80::1",
            "fd00:ec2::254",
            "fc00::1",
            "::ffff:127.0.0.1",
            "::ffff:10.1.2.3",
            "64:ff9b::a9fe:a9fe",
            "2001:db8::1",
        ] {
            assert!(is_non_public(ip.parse().unwrap()), "{ip}");
        }
        for ip in [
            "93.184.216.34",
            "1.1.1.1",
            "2606:4700:4700::1111",
            "::ffff:8.8.8.8",
        ] {
            assert!(!is_non_public(ip.parse().unwrap()), "{ip}");
        }
    }
}
