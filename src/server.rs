//! Binding every relay's socket, running them, and draining on shutdown.
//!
//! Binding is separate from serving so that every listen error is reported
//! before anything starts, and so tests can bind port 0 and read back the
//! real address.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use socket2::{Domain, Protocol as SockProto, Socket, Type};
use tokio::net::{TcpListener, UdpSocket};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{Config, Protocol, RelayConfig};
use crate::error::Error;
use crate::relay::tcp::TcpRelay;
use crate::relay::udp::UdpRelay;
use crate::resolve::Resolve;

enum Bound {
    Tcp(TcpRelay),
    Udp(UdpRelay),
}

/// Relays whose sockets are bound, not yet serving.
pub struct Server {
    relays: Vec<(Arc<RelayConfig>, Bound)>,
    dns: Option<crate::dns::DnsServer>,
    drain_timeout: Duration,
}

impl Server {
    /// Binds every relay in `config`. Must run inside a tokio runtime.
    pub fn bind(config: &Config, resolver: Arc<dyn Resolve>) -> Result<Server, Error> {
        let mut relays = Vec::new();
        for cfg in &config.relays {
            let cfg = Arc::new(cfg.clone());
            let bind_err = |source: io::Error| Error::Bind {
                relay: cfg.name.clone(),
                addr: cfg.listen,
                reason: explain(&source),
                source,
            };
            let bound = match cfg.protocol {
                Protocol::Tcp => {
                    let listener = bind_tcp(&cfg).map_err(bind_err)?;
                    Bound::Tcp(
                        TcpRelay::new(cfg.clone(), listener, resolver.clone()).map_err(
                            |source| Error::Bind {
                                relay: cfg.name.clone(),
                                addr: cfg.listen,
                                reason: source.to_string(),
                                source,
                            },
                        )?,
                    )
                }
                Protocol::Udp => {
                    let socket = bind_udp(&cfg).map_err(bind_err)?;
                    Bound::Udp(UdpRelay::new(cfg.clone(), socket, resolver.clone()))
                }
            };
            relays.push((cfg, bound));
        }
        let dns = match &config.dns {
            None => None,
            Some(d) => {
                Some(
                    crate::dns::DnsServer::bind(d.clone()).map_err(|source| Error::Bind {
                        relay: "dns".into(),
                        addr: d.listen,
                        reason: explain(&source),
                        source,
                    })?,
                )
            }
        };
        Ok(Server {
            relays,
            dns,
            drain_timeout: config.drain_timeout,
        })
    }

    /// Each relay's name and the address it actually bound.
    pub fn local_addrs(&self) -> Vec<(String, SocketAddr)> {
        self.relays
            .iter()
            .filter_map(|(cfg, b)| {
                let addr = match b {
                    Bound::Tcp(r) => r.local_addr(),
                    Bound::Udp(r) => r.local_addr(),
                };
                addr.ok().map(|a| (cfg.name.clone(), a))
            })
            .chain(
                self.dns
                    .as_ref()
                    .and_then(|d| d.local_addr().ok())
                    .map(|a| ("dns".to_string(), a)),
            )
            .collect()
    }

    /// Serves until `shutdown` completes, then stops accepting, lets open
    /// connections finish until the drain deadline, and closes the rest.
    pub async fn serve(self, shutdown: impl Future<Output = ()>) {
        let stop = CancellationToken::new();
        let force = CancellationToken::new();
        let tracker = TaskTracker::new();
        let accept_loops = TaskTracker::new();
        crate::observe::stats::set_relays(self.relays.len());
        for (cfg, bound) in self.relays {
            let (stop, force, conns) = (stop.clone(), force.clone(), tracker.clone());
            let line = match &bound {
                Bound::Tcp(r) => {
                    let dest = cfg.destination_label();
                    format!(
                        "stone {}: {dest} <- {}",
                        r.id(),
                        show(r.local_addr(), cfg.listen)
                    )
                }
                Bound::Udp(r) => {
                    format!(
                        "stone {}: {}/udp <- {}/udp",
                        r.id(),
                        cfg.upstream,
                        show(r.local_addr(), cfg.listen)
                    )
                }
            };
            tracing::info!(relay = %cfg.name, "{line}");
            crate::observe::stats::add_mapping(line);
            match bound {
                Bound::Tcp(r) => accept_loops.spawn(r.serve(stop, force, conns)),
                Bound::Udp(r) => accept_loops.spawn(r.serve(stop, force, conns)),
            };
        }
        if let Some(d) = self.dns {
            accept_loops.spawn(d.serve(stop.clone()));
        }
        accept_loops.close();
        shutdown.await;
        stop.cancel();
        accept_loops.wait().await;
        tracker.close();
        tracing::info!(
            open = tracker.len(),
            "stopping: no longer accepting; draining {} open connection(s) for up to {:?}",
            tracker.len(),
            self.drain_timeout
        );
        if tokio::time::timeout(self.drain_timeout, tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                open = tracker.len(),
                "drain deadline passed; closing {} connection(s)",
                tracker.len()
            );
            force.cancel();
            tracker.wait().await;
        }
        tracing::info!("all connections closed; exiting");
    }
}

fn show(actual: io::Result<SocketAddr>, configured: SocketAddr) -> SocketAddr {
    actual.unwrap_or(configured)
}

/// A listen error in words, shared with `ossrelay store`.
pub(crate) fn explain(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::AddrInUse => "address already in use".into(),
        io::ErrorKind::PermissionDenied => {
            "permission denied (ports below 1024 need root or CAP_NET_BIND_SERVICE)".into()
        }
        io::ErrorKind::AddrNotAvailable => "address not available on this host".into(),
        _ => e.to_string(),
    }
}

fn prepare(socket: &Socket, cfg: &RelayConfig) -> io::Result<()> {
    if cfg.listen.is_ipv6() {
        // Explicit both ways: hosts with net.ipv6.bindv6only=1 would
        // otherwise make `[::]` refuse IPv4 clients.
        socket.set_only_v6(cfg.v6only)?;
    }
    if let Some(intf) = &cfg.interface {
        #[cfg(any(target_os = "linux", target_os = "android"))]
        socket.bind_device(Some(intf.as_bytes())).map_err(|e| {
            io::Error::new(e.kind(), format!("cannot bind to interface {intf:?}: {e}"))
        })?;
        #[cfg(not(any(target_os = "linux", target_os = "android")))]
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            format!("binding to interface {intf:?} is only supported on Linux"),
        ));
    }
    socket.set_nonblocking(true)
}

fn bind_tcp(cfg: &RelayConfig) -> io::Result<TcpListener> {
    let addr = cfg.listen;
    let socket = Socket::new(
        Domain::for_address(addr),
        Type::STREAM,
        Some(SockProto::TCP),
    )?;
    // Lets a restarted relay bind while old connections sit in TIME_WAIT.
    socket.set_reuse_address(true)?;
    prepare(&socket, cfg)?;
    socket.bind(&addr.into())?;
    socket.listen(cfg.backlog.min(i32::MAX as u32) as i32)?;
    TcpListener::from_std(socket.into())
}

fn bind_udp(cfg: &RelayConfig) -> io::Result<UdpSocket> {
    let addr = cfg.listen;
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(SockProto::UDP))?;
    prepare(&socket, cfg)?;
    socket.bind(&addr.into())?;
    UdpSocket::from_std(socket.into())
}
