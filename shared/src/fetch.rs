//! Fetching input images from URLs without becoming a proxy into the network we run in (SSRF).
//!
//! Each hop: only `https` (plus `http` when explicitly allowed for local development); the host
//! is resolved once, every resolved address must be public (private, loopback, link-local —
//! which includes the 169.254.169.254 instance metadata service —, CGNAT, multicast, reserved,
//! and their IPv4-mapped and NAT64 IPv6 forms are refused), and the connection is pinned to
//! the checked address so a second DNS answer cannot swap it (DNS rebinding). Redirects are
//! followed by hand, at most [`MAX_REDIRECTS`], each re-checked. The body is capped while it
//! streams, and the whole fetch has a deadline.

use async_trait::async_trait;
use bytes::Bytes;
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use crate::error::Error;

/// Redirects followed per fetch.
pub const MAX_REDIRECTS: usize = 3;

/// Resolves host names; injectable so tests can map a name to any address without DNS.
#[async_trait]
pub trait Resolver: Send + Sync {
    /// Every address `host` resolves to.
    async fn resolve(&self, host: &str, port: u16) -> std::io::Result<Vec<SocketAddr>>;
}

/// The operating system's resolver.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemResolver;

#[async_trait]
impl Resolver for SystemResolver {
    async fn resolve(&self, host: &str, port: u16) -> std::io::Result<Vec<SocketAddr>> {
        Ok(tokio::net::lookup_host((host, port)).await?.collect())
    }
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

/// What a fetch may reach.
#[derive(Clone)]
pub struct FetchPolicy {
    /// Follow `http://` URLs too (local development only).
    pub allow_http: bool,
    /// Reach non-public addresses (local development only).
    pub allow_private: bool,
    /// Exact socket addresses allowed even though non-public (e.g. a VPC endpoint).
    pub allowed_addresses: Vec<SocketAddr>,
    /// Byte cap of the body.
    pub max_bytes: u64,
    /// Deadline of each hop.
    pub timeout: Duration,
    /// Name resolution.
    pub resolver: Arc<dyn Resolver>,
}

fn refuse(code: &'static str, message: String) -> Error {
    Error::Invalid { code, message }
}

impl FetchPolicy {
    fn check_address(&self, url: &str, addr: SocketAddr) -> Result<(), Error> {
        if is_non_public(addr.ip())
            && !self.allow_private
            && !self.allowed_addresses.contains(&addr)
        {
            return Err(refuse(
                "url_address_not_allowed",
                format!(
                    "'{url}' leads to a non-public address ({}); only public hosts are fetched",
                    addr.ip()
                ),
            ));
        }
        Ok(())
    }

    /// Checks a URL and picks the one address the connection will use.
    async fn pin(&self, url: &reqwest::Url) -> Result<Option<(String, SocketAddr)>, Error> {
        let text = url.as_str();
        match url.scheme() {
            "https" => {}
            "http" if self.allow_http => {}
            other => {
                return Err(refuse(
                    "url_scheme_not_allowed",
                    format!("'{text}': the {other} scheme is not fetched; use https"),
                ));
            }
        }
        let port = url.port_or_known_default().unwrap_or(443);
        match url.host() {
            None => Err(refuse(
                "invalid_input_reference",
                format!("'{text}' has no host"),
            )),
            Some(url::Host::Ipv4(ip)) => self
                .check_address(text, SocketAddr::new(ip.into(), port))
                .map(|_| None),
            Some(url::Host::Ipv6(ip)) => self
                .check_address(text, SocketAddr::new(ip.into(), port))
                .map(|_| None),
            Some(url::Host::Domain(host)) => {
                let addrs = self.resolver.resolve(host, port).await.map_err(|e| {
                    refuse(
                        "input_fetch_failed",
                        format!("could not resolve '{host}': {e}"),
                    )
                })?;
                let first = *addrs.first().ok_or_else(|| {
                    refuse("input_fetch_failed", format!("'{host}' has no address"))
                })?;
                // Every answer must be acceptable: a mixed answer is how rebinding attacks start.
                for addr in &addrs {
                    self.check_address(text, *addr)?;
                }
                Ok(Some((host.to_owned(), first)))
            }
        }
    }

    /// Fetches `url` under this policy.
    ///
    /// # Errors
    /// `url_scheme_not_allowed`, `url_address_not_allowed`, `too_many_redirects`,
    /// `payload_too_large`, `input_fetch_failed` (DNS, connection, HTTP status, timeout).
    pub async fn fetch(&self, url: &str) -> Result<Bytes, Error> {
        let mut current = reqwest::Url::parse(url).map_err(|e| {
            refuse(
                "invalid_input_reference",
                format!("'{url}' is not a valid URL: {e}"),
            )
        })?;
        for hop in 0..=MAX_REDIRECTS {
            let pinned = self.pin(&current).await?;
            let mut builder = reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .timeout(self.timeout)
                .no_proxy();
            if let Some((host, addr)) = &pinned {
                builder = builder.resolve(host, *addr);
            }
            let client = builder
                .build()
                .map_err(|e| Error::Config(format!("HTTP client: {e}")))?;
            let failed = |e: reqwest::Error| {
                refuse(
                    "input_fetch_failed",
                    format!("fetching '{current}' failed: {e}"),
                )
            };
            let mut resp = client.get(current.clone()).send().await.map_err(failed)?;
            if resp.status().is_redirection() {
                let location = resp
                    .headers()
                    .get(reqwest::header::LOCATION)
                    .and_then(|v| v.to_str().ok())
                    .ok_or_else(|| {
                        refuse(
                            "input_fetch_failed",
                            format!("'{current}' redirects without a Location"),
                        )
                    })?;
                let next = current.join(location).map_err(|e| {
                    refuse(
                        "input_fetch_failed",
                        format!("bad redirect from '{current}': {e}"),
                    )
                })?;
                if hop == MAX_REDIRECTS {
                    return Err(refuse(
                        "too_many_redirects",
                        format!("'{url}' redirects more than {MAX_REDIRECTS} times"),
                    ));
                }
                current = next;
                continue;
            }
            if !resp.status().is_success() {
                return Err(refuse(
                    "input_fetch_failed",
                    format!("fetching '{current}' answered HTTP {}", resp.status()),
                ));
            }
            if let Some(len) = resp.content_length()
                && len > self.max_bytes
            {
                return Err(crate::imaging::ImageRejection::TooManyBytes {
                    actual: len,
                    limit: self.max_bytes,
                }
                .into());
            }
            let mut body = Vec::new();
            while let Some(chunk) = resp.chunk().await.map_err(failed)? {
                if (body.len() + chunk.len()) as u64 > self.max_bytes {
                    return Err(crate::imaging::ImageRejection::TooManyBytes {
                        actual: (body.len() + chunk.len()) as u64,
                        limit: self.max_bytes,
                    }
                    .into());
                }
                body.extend_from_slice(&chunk);
            }
            return Ok(Bytes::from(body));
        }
        unreachable!("the loop returns on its last hop")
    }

    /// POSTs `body` to `url` under this policy (webhook deliveries): the same scheme and
    /// address checks as [`FetchPolicy::fetch`], the connection pinned to the checked address,
    /// the policy's timeout for the whole exchange, and no redirect followed (a 3xx comes back
    /// as its status: a receiver that moved must be reconfigured, not chased). The answer's
    /// body is not read. Returns the HTTP status.
    ///
    /// # Errors
    /// `url_scheme_not_allowed`, `url_address_not_allowed`, `invalid_input_reference` (not a
    /// URL), `input_fetch_failed` (DNS), and [`Error::Unavailable`] (`webhook`) for connection
    /// failures and timeouts.
    pub async fn post(
        &self,
        url: &str,
        headers: &[(&str, String)],
        body: Bytes,
    ) -> Result<u16, Error> {
        let target = reqwest::Url::parse(url).map_err(|e| {
            refuse(
                "invalid_input_reference",
                format!("'{url}' is not a valid URL: {e}"),
            )
        })?;
        let pinned = self.pin(&target).await?;
        let mut builder = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(self.timeout)
            .no_proxy();
        if let Some((host, addr)) = &pinned {
            builder = builder.resolve(host, *addr);
        }
        let client = builder
            .build()
            .map_err(|e| Error::Config(format!("HTTP client: {e}")))?;
        let mut request = client.post(target).body(body);
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        let resp = request
            .send()
            .await
            .map_err(|e| Error::unavailable("webhook", e))?;
        Ok(resp.status().as_u16())
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
