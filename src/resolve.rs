//! Upstream name resolution, done per connection.
//!
//! OSS intranet VIPs move between published ranges, so an address resolved
//! once at start-up becomes an outage later. [`SystemResolver`] asks DNS
//! (through hickory, whose cache honours each record's TTL) every time a
//! connection is made. Tests inject a [`StaticResolver`] whose answers can be
//! changed while the relay runs.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, RwLock};

use hickory_resolver::TokioResolver;

/// A boxed resolution future.
pub type ResolveFuture<'a> = Pin<Box<dyn Future<Output = io::Result<Vec<IpAddr>>> + Send + 'a>>;

/// Turns a host name into addresses. Implementations must be cheap to call
/// repeatedly; they are asked on every new connection.
pub trait Resolve: Send + Sync {
    /// All addresses for `host`, in the order they should be tried.
    fn resolve<'a>(&'a self, host: &'a str) -> ResolveFuture<'a>;
}

/// Resolves `host:port` to socket addresses, skipping DNS for literals.
pub async fn lookup(resolver: &dyn Resolve, host: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    let ips = resolver.resolve(host).await?;
    if ips.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("{host}: no addresses"),
        ));
    }
    Ok(ips
        .into_iter()
        .map(|ip| SocketAddr::new(ip, port))
        .collect())
}

/// [`lookup`] bounded by `timeout`, with errors as text for logs.
pub async fn lookup_within(
    resolver: &dyn Resolve,
    host: &str,
    port: u16,
    timeout: std::time::Duration,
) -> Result<Vec<SocketAddr>, String> {
    match tokio::time::timeout(timeout, lookup(resolver, host, port)).await {
        Ok(Ok(addrs)) => Ok(addrs),
        Ok(Err(e)) => Err(format!("resolve: {e}")),
        Err(_) => Err(format!("resolve {host}: timed out after {timeout:?}")),
    }
}

/// The system's resolver configuration (/etc/resolv.conf and /etc/hosts).
pub struct SystemResolver {
    inner: Option<TokioResolver>,
}

impl SystemResolver {
    /// Reads the system configuration. When /etc/resolv.conf is unusable the
    /// resolver falls back to getaddrinfo, which has no TTL cache but still
    /// re-resolves per connection.
    pub fn new() -> SystemResolver {
        match TokioResolver::builder_tokio() {
            Ok(builder) => SystemResolver {
                inner: Some(builder.build()),
            },
            Err(err) => {
                tracing::warn!(%err, "cannot read system DNS configuration; falling back to getaddrinfo");
                SystemResolver { inner: None }
            }
        }
    }
}

impl Default for SystemResolver {
    fn default() -> Self {
        SystemResolver::new()
    }
}

impl Resolve for SystemResolver {
    fn resolve<'a>(&'a self, host: &'a str) -> ResolveFuture<'a> {
        Box::pin(async move {
            match &self.inner {
                Some(resolver) => {
                    let answer = resolver.lookup_ip(host).await.map_err(|e| {
                        // The resolver's own text names its internal query
                        // structs; say what it means.
                        let why = if e.is_nx_domain() {
                            format!("{host}: no such name (NXDOMAIN)")
                        } else if e.is_no_records_found() {
                            format!("no A or AAAA record for {host}")
                        } else {
                            format!("{host}: {e}")
                        };
                        io::Error::new(io::ErrorKind::NotFound, why)
                    })?;
                    Ok(answer.iter().collect())
                }
                None => {
                    let addrs = tokio::net::lookup_host((host, 0)).await?;
                    Ok(addrs.map(|a| a.ip()).collect())
                }
            }
        })
    }
}

/// A resolver with a fixed, changeable table. Used by tests and by the demo
/// to stand in for /etc/hosts without touching the system.
#[derive(Clone, Default)]
pub struct StaticResolver {
    table: Arc<RwLock<HashMap<String, Vec<IpAddr>>>>,
}

impl StaticResolver {
    /// An empty table.
    pub fn new() -> StaticResolver {
        StaticResolver::default()
    }

    /// Sets (or replaces) the addresses for `host`.
    pub fn set(&self, host: &str, ips: Vec<IpAddr>) {
        if let Ok(mut table) = self.table.write() {
            table.insert(host.to_ascii_lowercase(), ips);
        }
    }
}

impl Resolve for StaticResolver {
    fn resolve<'a>(&'a self, host: &'a str) -> ResolveFuture<'a> {
        let answer = self
            .table
            .read()
            .ok()
            .and_then(|t| t.get(&host.to_ascii_lowercase()).cloned());
        Box::pin(async move {
            answer.ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("{host}: not in static table"),
                )
            })
        })
    }
}
