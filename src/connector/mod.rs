//! The connector: everything about reaching an upstream, shared by every
//! service. It resolves names (through the caller's [`Resolve`], which
//! caches by TTL), tries each address in turn with the connect timeout and
//! the configured source address, rotates a `-B` group, fails over to a
//! `-b` backup while the primary's health check fails, writes the PROXY
//! header, and originates TLS or connects to a unix socket.
//!
//! pingora's `connectors` is the model: services say *where*, the
//! connector knows *how*. It may use the pump and the foundation modules,
//! never a service or the listener.

pub mod ident;
pub mod pool;
mod script;

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpStream, UdpSocket, UnixStream};
use tokio_util::sync::CancellationToken;

use crate::config::{Backup, Forward, RelayConfig, Upstream};
use crate::observe::metrics::{ConnectError, RelayMetrics};
use crate::resolve::{lookup_within, Resolve};
use crate::tls::{ClientTls, HandshakeError};

/// How to dial one destination: the relay's settings, or a health probe's.
#[derive(Debug, Clone, Copy)]
struct Dial<'a> {
    timeout: Duration,
    source: Option<SocketAddr>,
    only_v6: bool,
    /// Where connect times and failures are counted (not for probes).
    metrics: Option<&'a RelayMetrics>,
}

/// Reaches the upstreams of one relay. One per relay, shared by its
/// connections (and their threads).
pub struct Connector {
    cfg: Arc<RelayConfig>,
    resolver: Arc<dyn Resolve>,
    /// Next group member to start from.
    rotation: AtomicUsize,
    /// The primary failed its last health check (only with a backup).
    master_down: AtomicBool,
    /// The relay's counters for connect times and failures.
    metrics: Option<Arc<RelayMetrics>>,
}

impl Connector {
    /// A connector with the relay's connect timeout, source address and
    /// upstream settings.
    pub fn new(cfg: Arc<RelayConfig>, resolver: Arc<dyn Resolve>) -> Connector {
        Connector {
            cfg,
            resolver,
            rotation: AtomicUsize::new(0),
            master_down: AtomicBool::new(false),
            metrics: None,
        }
    }

    /// Counts connect times and failures on `metrics`.
    pub fn counting(mut self, metrics: Arc<RelayMetrics>) -> Connector {
        self.metrics = Some(metrics);
        self
    }

    /// The resolver, for services that pick destinations themselves (the
    /// forward proxy checks each resolved address against its policy).
    pub fn resolver(&self) -> &dyn Resolve {
        self.resolver.as_ref()
    }

    /// The relay's connect timeout.
    pub fn timeout(&self) -> Duration {
        self.cfg.connect_timeout
    }

    fn dial(&self) -> Dial<'_> {
        Dial {
            metrics: self.metrics.as_deref(),
            timeout: self.cfg.connect_timeout,
            source: self.cfg.source,
            only_v6: self.cfg.upstream_v6,
        }
    }

    /// Picks the destinations for one connection: the backup while the
    /// primary is down, else the group in rotation, else the upstream; then
    /// tries each (every resolved address of each) in turn. Returns the
    /// stream, the address reached and the host name it was reached by.
    pub async fn connect(&self, fwd: &Forward) -> Result<(TcpStream, SocketAddr, String), String> {
        let mut targets: Vec<&Upstream> = Vec::new();
        match &fwd.backup {
            Some(b) if self.master_down.load(Ordering::Relaxed) => targets.push(&b.upstream),
            _ if !fwd.group.is_empty() => {
                let start = self.rotation.fetch_add(1, Ordering::Relaxed) % fwd.group.len();
                targets.extend(fwd.group[start..].iter().chain(&fwd.group[..start]));
            }
            _ => targets.push(&fwd.upstream),
        }
        let mut errors = Vec::new();
        for t in targets {
            match self.connect_one(t).await {
                Ok((stream, addr)) => return Ok((stream, addr, t.host.clone())),
                Err(e) => errors.push(e),
            }
        }
        Err(errors.join("; "))
    }

    /// Tries every resolved address of `target` in turn, each with the
    /// connect timeout.
    pub async fn connect_one(&self, target: &Upstream) -> Result<(TcpStream, SocketAddr), String> {
        connect_one(self.resolver.as_ref(), target, self.dial()).await
    }

    /// One connection to an address the caller chose (the forward proxy,
    /// after checking it against its destination list), with the relay's
    /// source address and connect timeout.
    pub async fn connect_addr(&self, addr: SocketAddr) -> Result<TcpStream, String> {
        dial_addr(addr, &self.dial()).await
    }

    /// A UDP socket connected to the first address of `up` that takes it.
    pub async fn connect_udp(&self, up: &Upstream) -> Result<(UdpSocket, SocketAddr), String> {
        let addrs = lookup_within(
            self.resolver.as_ref(),
            &up.host,
            up.port,
            self.cfg.connect_timeout,
        )
        .await?;
        let mut errors = Vec::new();
        for addr in addrs {
            let local: SocketAddr = match addr {
                SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
                SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
            };
            let attempt = async {
                let s = UdpSocket::bind(local).await?;
                s.connect(addr).await?;
                Ok::<_, io::Error>(s)
            };
            match attempt.await {
                Ok(s) => return Ok((s, addr)),
                Err(e) => errors.push(format!("{addr}: {e}")),
            }
        }
        Err(errors.join("; "))
    }

    /// Connects to a unix-domain socket within the connect timeout.
    pub async fn connect_unix(&self, path: &Path) -> io::Result<UnixStream> {
        tokio::time::timeout(self.cfg.connect_timeout, UnixStream::connect(path))
            .await
            .unwrap_or_else(|_| Err(io::ErrorKind::TimedOut.into()))
    }

    /// Writes the configured PROXY header (client `peer`, destination the
    /// address it reached) to a freshly connected upstream.
    pub async fn send_proxy_header(
        &self,
        upstream: &TcpStream,
        peer: SocketAddr,
        local: Option<SocketAddr>,
    ) -> io::Result<()> {
        let Some(v) = self.cfg.proxy_protocol.send else {
            return Ok(());
        };
        let local = local.ok_or_else(|| io::Error::other("local address unknown"))?;
        let h = crate::wire::proxy_protocol::header(v, peer, local);
        let mut sent = 0;
        while sent < h.len() {
            upstream.writable().await?;
            match upstream.try_write(&h[sent..]) {
                Ok(n) => sent += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// The TLS handshake with an upstream reached as `host`, within the
    /// connect timeout (the relay's `upstream_tls`).
    pub async fn handshake(
        &self,
        tls: &ClientTls,
        host: &str,
        tcp: TcpStream,
    ) -> Result<tokio_rustls::client::TlsStream<TcpStream>, HandshakeError> {
        tls.connect_within(host, tcp, self.cfg.connect_timeout)
            .await
    }

    /// Probes the primary every interval and flips the failover switch,
    /// logging each change, until `stop`. `id` is stone's relay number.
    pub async fn monitor(self: Arc<Self>, backup: Backup, id: i32, stop: CancellationToken) {
        let cfg = &self.cfg;
        let probe = Dial {
            timeout: backup.interval.min(cfg.connect_timeout),
            metrics: None,
            ..self.dial()
        };
        loop {
            let up = match connect_one(self.resolver.as_ref(), &backup.check, probe).await {
                Ok(_) if backup.script.is_empty() => true,
                Ok((stream, _)) => match script::run(stream, &backup.script, backup.interval).await
                {
                    Ok(()) => true,
                    Err(why) => {
                        tracing::debug!(relay = %cfg.name, "stone {id}: health check {} fail: {why}", backup.check);
                        false
                    }
                },
                Err(_) => false,
            };
            let was_down = self.master_down.swap(!up, Ordering::Relaxed);
            if was_down == up {
                if up {
                    tracing::warn!(relay = %cfg.name, "stone {id}: master {} is healthy again; leaving backup {}", backup.check, backup.upstream);
                } else {
                    tracing::warn!(relay = %cfg.name, "stone {id}: master {} is unhealthy; using backup {}", backup.check, backup.upstream);
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(backup.interval) => {}
                _ = stop.cancelled() => return,
            }
        }
    }
}

/// Tries every resolved address of `target` in turn, each with the dial's
/// timeout.
async fn connect_one(
    resolver: &dyn Resolve,
    target: &Upstream,
    dial: Dial<'_>,
) -> Result<(TcpStream, SocketAddr), String> {
    let addrs = lookup_within(resolver, &target.host, target.port, dial.timeout)
        .await
        .inspect_err(|_| {
            if let Some(m) = dial.metrics {
                m.connect_failed(ConnectError::Dns);
            }
        })?;
    let addrs: Vec<SocketAddr> = addrs
        .into_iter()
        .filter(|a| !dial.only_v6 || a.is_ipv6())
        .collect();
    if addrs.is_empty() {
        return Err(format!(
            "{target}: no IPv6 address (the destination is marked /v6)"
        ));
    }
    let mut errors = Vec::new();
    for addr in addrs {
        match dial_addr(addr, &dial).await {
            Ok(stream) => return Ok((stream, addr)),
            Err(e) => errors.push(e),
        }
    }
    Err(errors.join("; "))
}

/// One TCP connection to `addr` from the relay's source address (if set),
/// within the connect timeout; the error names the address.
async fn dial_addr(addr: SocketAddr, dial: &Dial<'_>) -> Result<TcpStream, String> {
    if dial.source.is_some_and(|s| s.is_ipv4() != addr.is_ipv4()) {
        return Err(format!(
            "{addr}: not the address family of the source address"
        ));
    }
    let attempt = async {
        let socket = if addr.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        if let Some(src) = dial.source {
            socket.bind(src)?;
        }
        socket.connect(addr).await
    };
    let started = std::time::Instant::now();
    let result = tokio::time::timeout(dial.timeout, attempt).await;
    if let Some(m) = dial.metrics {
        match &result {
            Ok(Ok(_)) => m.connected(started.elapsed()),
            Ok(Err(e)) if e.kind() == io::ErrorKind::ConnectionRefused => {
                m.connect_failed(ConnectError::Refused)
            }
            Ok(Err(_)) => m.connect_failed(ConnectError::Reset),
            Err(_) => m.connect_failed(ConnectError::Timeout),
        }
    }
    match result {
        Ok(Ok(stream)) => Ok(stream),
        Ok(Err(e)) => Err(format!("{addr}: {e}")),
        Err(_) => Err(format!("{addr}: timed out after {:?}", dial.timeout)),
    }
}
