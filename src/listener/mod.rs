//! The listener layer: binding a relay's socket (address, interface,
//! IPv6-only, backlog) and accepting on it ([`tcp`]). A bound relay is a
//! [`Bound`]; serving it hands each connection, or for UDP the socket, to
//! the relay's service. The listener knows nothing about modes.

pub mod tcp;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use socket2::{Domain, Protocol as SockProto, Socket, Type};
use tokio::net::{TcpListener, UdpSocket};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{Protocol, RelayConfig};
use crate::error::Error;
use crate::observe::metrics::RelayMetrics;
use crate::resolve::Resolve;
use crate::service::udp::UdpRelay;
use tcp::TcpRelay;

/// A relay whose socket is bound, not yet serving.
pub enum Bound {
    /// A TCP listener and its accept loops.
    Tcp(TcpRelay),
    /// A UDP socket, served by the udp service (datagrams have no accept).
    Udp(UdpRelay),
}

/// A relay's socket, bound (and for TCP listening) but not yet known to
/// any runtime. Opening needs no runtime, so a process can open its
/// listeners before it starts one: stone's relay numbers (the descriptors)
/// then come out the same as `stone -N` prints and as stone itself uses.
pub enum Opened {
    /// A listening TCP socket.
    Tcp(std::net::TcpListener),
    /// A bound UDP socket.
    Udp(std::net::UdpSocket),
}

impl Opened {
    /// Another descriptor for the same socket: a reloaded relay with the
    /// same address takes over the socket itself, so no connection in the
    /// kernel's queue is lost and none is refused.
    pub fn try_clone(&self) -> io::Result<Opened> {
        Ok(match self {
            Opened::Tcp(l) => Opened::Tcp(l.try_clone()?),
            Opened::Udp(s) => Opened::Udp(s.try_clone()?),
        })
    }

    /// Binds relay `cfg`'s socket; the error names the relay and address.
    pub fn open(cfg: &RelayConfig) -> Result<Opened, Error> {
        let bind_err = |source: io::Error| Error::Bind {
            relay: cfg.name.clone(),
            addr: cfg.listen,
            reason: explain(&source),
            source,
        };
        Ok(match cfg.protocol() {
            Protocol::Tcp => Opened::Tcp(bind_tcp(cfg).map_err(bind_err)?),
            Protocol::Udp => Opened::Udp(bind_udp(cfg).map_err(bind_err)?),
        })
    }
}

impl Bound {
    /// Binds relay `cfg`'s socket. Must run inside a tokio runtime.
    pub fn bind(cfg: &Arc<RelayConfig>, resolver: Arc<dyn Resolve>) -> Result<Bound, Error> {
        let metrics = Arc::new(RelayMetrics::new(cfg));
        Bound::adopt(cfg, Opened::open(cfg)?, resolver, metrics)
    }

    /// Makes a socket opened earlier ready to serve relay `cfg`. Must run
    /// inside a tokio runtime.
    pub fn adopt(
        cfg: &Arc<RelayConfig>,
        opened: Opened,
        resolver: Arc<dyn Resolve>,
        metrics: Arc<RelayMetrics>,
    ) -> Result<Bound, Error> {
        let setup_err = |source: io::Error| Error::Bind {
            relay: cfg.name.clone(),
            addr: cfg.listen,
            reason: source.to_string(),
            source,
        };
        Ok(match opened {
            Opened::Tcp(l) => {
                let listener = TcpListener::from_std(l).map_err(setup_err)?;
                Bound::Tcp(
                    TcpRelay::new(cfg.clone(), listener, resolver, metrics).map_err(setup_err)?,
                )
            }
            Opened::Udp(s) => {
                let socket = UdpSocket::from_std(s).map_err(setup_err)?;
                Bound::Udp(
                    UdpRelay::new(cfg.clone(), socket, resolver, metrics).map_err(setup_err)?,
                )
            }
        })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        match self {
            Bound::Tcp(r) => r.local_addr(),
            Bound::Udp(r) => r.local_addr(),
        }
    }

    /// Another descriptor for this relay's socket, kept to hand it to the
    /// relay's successor at a reload (see [`Opened::try_clone`]).
    pub fn socket(&self) -> io::Result<Opened> {
        Ok(match self {
            Bound::Tcp(r) => Opened::Tcp(std::net::TcpListener::from(r.dup_socket()?)),
            Bound::Udp(r) => Opened::Udp(std::net::UdpSocket::from(r.dup_socket()?)),
        })
    }

    /// stone's relay number (the listening descriptor).
    pub fn id(&self) -> i32 {
        match self {
            Bound::Tcp(r) => r.id(),
            Bound::Udp(r) => r.id(),
        }
    }

    /// Serves until `stop`; connections go on `tracker` and end early
    /// only when `force` is cancelled.
    pub async fn serve(
        self,
        stop: CancellationToken,
        force: CancellationToken,
        tracker: TaskTracker,
    ) {
        match self {
            Bound::Tcp(r) => r.serve(stop, force, tracker).await,
            Bound::Udp(r) => r.serve(stop, force, tracker).await,
        }
    }
}

/// A listen error in words, shared with `ossrelay store`.
pub fn explain(e: &io::Error) -> String {
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

fn bind_tcp(cfg: &RelayConfig) -> io::Result<std::net::TcpListener> {
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
    Ok(socket.into())
}

fn bind_udp(cfg: &RelayConfig) -> io::Result<std::net::UdpSocket> {
    let addr = cfg.listen;
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(SockProto::UDP))?;
    prepare(&socket, cfg)?;
    socket.bind(&addr.into())?;
    Ok(socket.into())
}
