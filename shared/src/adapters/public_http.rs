//! The outbound HTTP adapter behind [`UrlFetcher`] and [`WebhookPoster`]: one pooled
//! `reqwest` client per [`FetchPolicy`], whose DNS resolver refuses non-public answers.
//!
//! Where each rule of [`crate::egress`] is enforced:
//! - scheme, and hosts written as IP addresses: before the request and, for every redirect, in
//!   the client's redirect policy (reqwest connects to an IP literal without resolving it);
//! - host names: in [`CheckedResolver`], which the client calls for every new connection. The
//!   connection goes to the addresses it checked, so a second DNS answer cannot swap them (DNS
//!   rebinding), and pooled connections were all checked when they were opened;
//! - the byte cap while the body streams; the deadline over the whole exchange.
//!
//! A [`FetchPolicy::allowed_addresses`] entry is checked exactly (address and port) for IP
//! literals and against the first resolution of a host name; at connection time the resolver
//! sees no port, so there it allows the entry's address on any port.

use async_trait::async_trait;
use bytes::Bytes;
use std::net::SocketAddr;
use std::sync::Arc;

use crate::core::{UrlFetcher, WebhookPoster};
use crate::egress::{FetchPolicy, MAX_REDIRECTS, Resolver};
use crate::error::Error;

/// The operating system's resolver (`getaddrinfo` through tokio).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemResolver;

#[async_trait]
impl Resolver for SystemResolver {
    async fn resolve(&self, host: &str, port: u16) -> std::io::Result<Vec<SocketAddr>> {
        Ok(tokio::net::lookup_host((host, port)).await?.collect())
    }
}

/// A request the policy refused, carried through reqwest's error chain so that the caller gets
/// the stable code back.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
struct Refusal {
    code: &'static str,
    message: String,
}

fn refuse(code: &'static str, message: String) -> Error {
    Error::Invalid { code, message }
}

impl From<Refusal> for Error {
    fn from(r: Refusal) -> Self {
        refuse(r.code, r.message)
    }
}

/// The resolver every connection of the client goes through: every answer must be allowed (a
/// mixed answer is how rebinding attacks start).
struct CheckedResolver {
    inner: Arc<dyn Resolver>,
    policy: Arc<FetchPolicy>,
}

impl reqwest::dns::Resolve for CheckedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let inner = Arc::clone(&self.inner);
        let policy = Arc::clone(&self.policy);
        Box::pin(async move {
            let host = name.as_str();
            let addrs =
                resolve_checked(&*inner, host, 0, host, |a| policy.allows_ip(a.ip())).await?;
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// Outbound HTTP under a [`FetchPolicy`], over one pooled client (cheap to clone).
#[derive(Clone)]
pub struct PublicHttp {
    client: reqwest::Client,
    policy: Arc<FetchPolicy>,
    resolver: Arc<dyn Resolver>,
}

impl PublicHttp {
    /// A client that follows at most [`MAX_REDIRECTS`] redirects, each checked (input images,
    /// provider outputs).
    ///
    /// # Errors
    /// [`Error::Config`] when the HTTP client cannot be built (TLS roots).
    pub fn new(policy: FetchPolicy) -> Result<Self, Error> {
        Self::build(policy, true)
    }

    /// A client that follows no redirect: a 3xx comes back as its status (webhook deliveries:
    /// a receiver that moved must be reconfigured, not chased).
    ///
    /// # Errors
    /// As [`PublicHttp::new`].
    pub fn without_redirects(policy: FetchPolicy) -> Result<Self, Error> {
        Self::build(policy, false)
    }

    fn build(policy: FetchPolicy, follow: bool) -> Result<Self, Error> {
        let resolver: Arc<dyn Resolver> = policy
            .resolver
            .clone()
            .unwrap_or_else(|| Arc::new(SystemResolver));
        let policy = Arc::new(policy);
        let redirect = if follow {
            let checked = Arc::clone(&policy);
            reqwest::redirect::Policy::custom(move |attempt| {
                if attempt.previous().len() > MAX_REDIRECTS {
                    let first = attempt.previous()[0].to_string();
                    return attempt.error(Refusal {
                        code: "too_many_redirects",
                        message: format!("'{first}' redirects more than {MAX_REDIRECTS} times"),
                    });
                }
                match check_url(&checked, attempt.url()) {
                    Ok(()) => attempt.follow(),
                    Err(refusal) => attempt.error(refusal),
                }
            })
        } else {
            reqwest::redirect::Policy::none()
        };
        let client = reqwest::Client::builder()
            .redirect(redirect)
            .timeout(policy.timeout)
            .no_proxy()
            .dns_resolver(Arc::new(CheckedResolver {
                inner: Arc::clone(&resolver),
                policy: Arc::clone(&policy),
            }))
            .build()
            .map_err(|e| Error::Config(format!("HTTP client: {e}")))?;
        Ok(Self {
            client,
            policy,
            resolver,
        })
    }

    /// Parses `url` and applies every check that needs no connection, resolving a host name
    /// once to check the exact address (port included) against the policy.
    async fn checked_url(&self, url: &str) -> Result<reqwest::Url, Error> {
        let parsed = reqwest::Url::parse(url).map_err(|e| {
            refuse(
                "invalid_input_reference",
                format!("'{url}' is not a valid URL: {e}"),
            )
        })?;
        check_url(&self.policy, &parsed)?;
        if let Some(url::Host::Domain(host)) = parsed.host() {
            let port = parsed.port_or_known_default().unwrap_or(443);
            resolve_checked(&*self.resolver, host, port, url, |a| self.policy.allows(a)).await?;
        }
        Ok(parsed)
    }
}

/// Resolves `host` and checks every answer with `allowed` (a mixed answer is how rebinding
/// attacks start); `subject` names what was asked for in the refusal (the host or the URL).
async fn resolve_checked(
    resolver: &dyn Resolver,
    host: &str,
    port: u16,
    subject: &str,
    allowed: impl Fn(SocketAddr) -> bool,
) -> Result<Vec<SocketAddr>, Refusal> {
    let addrs = resolver.resolve(host, port).await.map_err(|e| Refusal {
        code: "input_fetch_failed",
        message: format!("could not resolve '{host}': {e}"),
    })?;
    if addrs.is_empty() {
        return Err(Refusal {
            code: "input_fetch_failed",
            message: format!("'{host}' has no address"),
        });
    }
    if let Some(bad) = addrs.iter().find(|a| !allowed(**a)) {
        return Err(Refusal {
            code: "url_address_not_allowed",
            message: format!(
                "'{subject}' leads to a non-public address ({}); only public hosts are fetched",
                bad.ip()
            ),
        });
    }
    Ok(addrs)
}

/// The checks on a URL that need no resolution: the scheme, a host, and a host written as an
/// IP address.
fn check_url(policy: &FetchPolicy, url: &reqwest::Url) -> Result<(), Refusal> {
    let text = url.as_str();
    match url.scheme() {
        "https" => {}
        "http" if policy.allow_http => {}
        other => {
            return Err(Refusal {
                code: "url_scheme_not_allowed",
                message: format!("'{text}': the {other} scheme is not fetched; use https"),
            });
        }
    }
    let port = url.port_or_known_default().unwrap_or(443);
    let literal = match url.host() {
        None => {
            return Err(Refusal {
                code: "invalid_input_reference",
                message: format!("'{text}' has no host"),
            });
        }
        Some(url::Host::Ipv4(ip)) => Some(SocketAddr::new(ip.into(), port)),
        Some(url::Host::Ipv6(ip)) => Some(SocketAddr::new(ip.into(), port)),
        Some(url::Host::Domain(_)) => None,
    };
    match literal {
        Some(addr) if !policy.allows(addr) => Err(Refusal {
            code: "url_address_not_allowed",
            message: format!(
                "'{text}' leads to a non-public address ({}); only public hosts are fetched",
                addr.ip()
            ),
        }),
        _ => Ok(()),
    }
}

/// The policy's refusal in `e`'s chain of causes, if that is why the request failed.
fn refusal_in(e: &reqwest::Error) -> Option<Error> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(cause) = source {
        if let Some(r) = cause.downcast_ref::<Refusal>() {
            return Some(refuse(r.code, r.message.clone()));
        }
        source = cause.source();
    }
    None
}

#[async_trait]
impl UrlFetcher for PublicHttp {
    async fn fetch(&self, url: &str) -> Result<Bytes, Error> {
        let target = self.checked_url(url).await?;
        let mut resp = self.client.get(target).send().await.map_err(|e| {
            refusal_in(&e).unwrap_or_else(|| {
                refuse(
                    "input_fetch_failed",
                    format!("fetching '{url}' failed: {}", crate::error::chain(&e)),
                )
            })
        })?;
        if !resp.status().is_success() {
            return Err(refuse(
                "input_fetch_failed",
                format!("fetching '{}' answered HTTP {}", resp.url(), resp.status()),
            ));
        }
        let too_many = |actual: u64| -> Error {
            crate::image_check::ImageRejection::TooManyBytes {
                actual,
                limit: self.policy.max_bytes,
            }
            .into()
        };
        if let Some(len) = resp.content_length()
            && len > self.policy.max_bytes
        {
            return Err(too_many(len));
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| {
            refuse(
                "input_fetch_failed",
                format!("fetching '{url}' failed: {}", crate::error::chain(&e)),
            )
        })? {
            let total = (body.len() + chunk.len()) as u64;
            if total > self.policy.max_bytes {
                return Err(too_many(total));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(Bytes::from(body))
    }
}

#[async_trait]
impl WebhookPoster for PublicHttp {
    async fn post(&self, url: &str, headers: &[(&str, String)], body: Bytes) -> Result<u16, Error> {
        let target = self.checked_url(url).await?;
        let mut request = self.client.post(target).body(body);
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        let resp = request.send().await.map_err(|e| {
            refusal_in(&e).unwrap_or_else(|| Error::unavailable("webhook", crate::error::chain(&e)))
        })?;
        Ok(resp.status().as_u16())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::IpAddr;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    /// A DNS rebinding attack: a public answer for the check, then the metadata service.
    struct Rebinding(AtomicUsize);

    #[async_trait]
    impl Resolver for Rebinding {
        async fn resolve(&self, _host: &str, port: u16) -> std::io::Result<Vec<SocketAddr>> {
            let ip: IpAddr = if self.0.fetch_add(1, Ordering::SeqCst) == 0 {
                "93.184.216.34".parse().unwrap()
            } else {
                "169.254.169.254".parse().unwrap()
            };
            Ok(vec![SocketAddr::new(ip, port)])
        }
    }

    fn policy(resolver: Arc<dyn Resolver>) -> FetchPolicy {
        FetchPolicy {
            allow_http: true,
            allow_private: false,
            allowed_addresses: Vec::new(),
            max_bytes: 1024,
            timeout: Duration::from_secs(5),
            resolver: Some(resolver),
        }
    }

    #[tokio::test]
    async fn a_second_dns_answer_cannot_swap_in_a_private_address() {
        let resolver = Arc::new(Rebinding(AtomicUsize::new(0)));
        let http = PublicHttp::new(policy(resolver.clone())).unwrap();
        let e = http
            .fetch("http://rebind.test/latest/meta-data/")
            .await
            .unwrap_err();
        assert!(
            matches!(e, Error::Invalid { code: "url_address_not_allowed", ref message } if message.contains("169.254.169.254")),
            "{e:?}"
        );
        assert_eq!(
            resolver.0.load(Ordering::SeqCst),
            2,
            "checked once before the request and once by the client's own resolver"
        );
    }

    #[tokio::test]
    async fn literal_addresses_and_schemes_are_refused_before_any_connection() {
        let http = PublicHttp::new(policy(Arc::new(Rebinding(AtomicUsize::new(0))))).unwrap();
        for (url, code) in [
            ("http://127.0.0.1:9/x", "url_address_not_allowed"),
            ("http://[::ffff:10.0.0.1]/x", "url_address_not_allowed"),
            ("ftp://example.com/x", "url_scheme_not_allowed"),
            ("not a url", "invalid_input_reference"),
        ] {
            match http.fetch(url).await.unwrap_err() {
                Error::Invalid { code: got, .. } => assert_eq!(got, code, "{url}"),
                other => panic!("{url}: {other:?}"),
            }
        }
    }
}
