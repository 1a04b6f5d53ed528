//! The built-in DNS responder (`[dns]`): it answers A/AAAA queries for the
//! private endpoint names with the relay's own addresses, so clients need
//! no hosts files. Other names go to a configured upstream resolver, or
//! are refused: it is never an open resolver unless the config says so.
//! UDP and TCP on the same address; answers too big for a UDP client are
//! truncated so it retries over TCP.

pub mod answer;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio_util::sync::CancellationToken;

use crate::acl::{canonical, Action};
use answer::Decision;

use crate::observe::metrics::{DnsResult, Metrics};

/// How long the upstream resolver gets to answer.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a TCP client may stay silent between queries.
const TCP_IDLE: Duration = Duration::from_secs(10);

pub use crate::config::DnsConfig;

/// A bound DNS responder.
pub struct DnsServer {
    cfg: Arc<DnsConfig>,
    udp: Arc<UdpSocket>,
    tcp: TcpListener,
    metrics: Arc<Metrics>,
}

impl DnsServer {
    /// Binds UDP and TCP on `cfg.listen` (the same port for both, also
    /// when it is 0). Must run inside a tokio runtime.
    pub fn bind(cfg: DnsConfig, metrics: Arc<Metrics>) -> io::Result<DnsServer> {
        let tcp = std::net::TcpListener::bind(cfg.listen)?;
        let udp = std::net::UdpSocket::bind(tcp.local_addr()?)?;
        DnsServer::adopt(cfg, (tcp, udp), metrics)
    }

    /// Serves `cfg` on sockets bound before (a reload hands over the
    /// running responder's). Must run inside a tokio runtime.
    pub fn adopt(
        cfg: DnsConfig,
        (tcp, udp): (std::net::TcpListener, std::net::UdpSocket),
        metrics: Arc<Metrics>,
    ) -> io::Result<DnsServer> {
        tcp.set_nonblocking(true)?;
        udp.set_nonblocking(true)?;
        let tcp = TcpListener::from_std(tcp)?;
        let udp = UdpSocket::from_std(udp)?;
        Ok(DnsServer {
            cfg: Arc::new(cfg),
            udp: Arc::new(udp),
            tcp,
            metrics,
        })
    }

    /// Second descriptors for both sockets, for a successor at a reload.
    pub fn sockets(&self) -> io::Result<(std::net::TcpListener, std::net::UdpSocket)> {
        use std::os::fd::AsFd;
        Ok((
            std::net::TcpListener::from(self.tcp.as_fd().try_clone_to_owned()?),
            std::net::UdpSocket::from(self.udp.as_fd().try_clone_to_owned()?),
        ))
    }

    /// The bound address (UDP and TCP).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.tcp.local_addr()
    }

    /// Serves until `stop` is cancelled.
    pub async fn serve(self, stop: CancellationToken) {
        let DnsServer {
            cfg,
            udp,
            tcp,
            metrics,
        } = self;
        tracing::info!(target: "ossrelay::dns", "dns: answering {} with {:?} on {}/udp+tcp; other names {}",
            cfg.names.iter().map(|n| n.to_string()).collect::<Vec<_>>().join(", "),
            cfg.answer,
            cfg.listen,
            cfg.upstream.map_or("refused".to_string(), |u| format!("forwarded to {u}")));
        let udp_loop = serve_udp(cfg.clone(), udp, stop.clone(), metrics.clone());
        let tcp_loop = serve_tcp(cfg, tcp, stop, metrics);
        tokio::join!(udp_loop, tcp_loop);
    }
}

fn allowed(cfg: &DnsConfig, peer: SocketAddr) -> bool {
    cfg.acl.check(canonical(peer.ip())).0 == Action::Allow
}

async fn serve_udp(
    cfg: Arc<DnsConfig>,
    sock: Arc<UdpSocket>,
    stop: CancellationToken,
    metrics: Arc<Metrics>,
) {
    let mut buf = vec![0u8; 65_535];
    loop {
        let (n, peer) = tokio::select! {
            _ = stop.cancelled() => return,
            r = sock.recv_from(&mut buf) => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::debug!(target: "ossrelay::dns", "dns: receive failed: {e}");
                    continue;
                }
            },
        };
        let query = buf[..n].to_vec();
        let (cfg, sock, metrics) = (cfg.clone(), sock.clone(), metrics.clone());
        tokio::spawn(async move {
            if let Some(reply) = counted(&metrics, handle(&cfg, &query, peer, false).await) {
                let _ = sock.send_to(&reply, peer).await;
            }
        });
    }
}

async fn serve_tcp(
    cfg: Arc<DnsConfig>,
    listener: TcpListener,
    stop: CancellationToken,
    metrics: Arc<Metrics>,
) {
    loop {
        let (stream, peer) = tokio::select! {
            _ = stop.cancelled() => return,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::debug!(target: "ossrelay::dns", "dns: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let (cfg, stop, metrics) = (cfg.clone(), stop.clone(), metrics.clone());
        tokio::spawn(async move {
            tokio::select! {
                _ = tcp_session(&cfg, stream, peer, &metrics) => {}
                _ = stop.cancelled() => {}
            }
        });
    }
}

/// Length-prefixed queries (RFC 1035 4.2.2) until the client goes quiet.
async fn tcp_session(cfg: &DnsConfig, mut s: TcpStream, peer: SocketAddr, metrics: &Metrics) {
    loop {
        let mut len = [0u8; 2];
        match tokio::time::timeout(TCP_IDLE, s.read_exact(&mut len)).await {
            Ok(Ok(_)) => {}
            _ => return,
        }
        let mut query = vec![0u8; usize::from(u16::from_be_bytes(len))];
        if tokio::time::timeout(TCP_IDLE, s.read_exact(&mut query))
            .await
            .map_or(true, |r| r.is_err())
        {
            return;
        }
        let Some(reply) = counted(metrics, handle(cfg, &query, peer, true).await) else {
            return;
        };
        let Ok(n) = u16::try_from(reply.len()) else {
            return;
        };
        let mut out = n.to_be_bytes().to_vec();
        out.extend_from_slice(&reply);
        if s.write_all(&out).await.is_err() {
            return;
        }
    }
}

/// Counts what a query came to, and passes its reply on.
fn counted(metrics: &Metrics, (reply, result): (Option<Vec<u8>>, DnsResult)) -> Option<Vec<u8>> {
    metrics.dns_query(result);
    reply
}

/// The reply to one query (`None` to stay silent), and what it came to.
async fn handle(
    cfg: &DnsConfig,
    query: &[u8],
    peer: SocketAddr,
    tcp: bool,
) -> (Option<Vec<u8>>, DnsResult) {
    let what = || answer::describe(query);
    if !allowed(cfg, peer) {
        tracing::info!(target: "ossrelay::dns", "dns: {peer} {}: refused by the ACL", what());
        return (refused(cfg, query, tcp), DnsResult::Refused);
    }
    match answer::decide(cfg, query, tcp) {
        Decision::Reply(r) => {
            tracing::debug!(target: "ossrelay::dns", "dns: {peer} {}: answered", what());
            // Our own names, or a REFUSED or FORMERR for the rest.
            let result = if answer::is_no_error(&r) {
                DnsResult::Answered
            } else {
                DnsResult::Refused
            };
            (Some(r), result)
        }
        Decision::Drop => {
            tracing::debug!(target: "ossrelay::dns", "dns: {peer}: dropped {} bytes that are not DNS", query.len());
            (None, DnsResult::Refused)
        }
        Decision::Forward => {
            let Some(upstream) = cfg.upstream else {
                return (None, DnsResult::Refused);
            };
            let r = if tcp {
                forward_tcp(upstream, query).await
            } else {
                forward_udp(upstream, query).await
            };
            match r {
                Ok(reply) => {
                    tracing::debug!(target: "ossrelay::dns", "dns: {peer} {}: forwarded to {upstream}", what());
                    (Some(reply), DnsResult::Forwarded)
                }
                Err(e) => {
                    tracing::warn!(target: "ossrelay::dns", "dns: {peer} {}: upstream {upstream} failed: {e}", what());
                    // SERVFAIL would be more exact; REFUSED also makes
                    // the client try its next resolver.
                    (refused(cfg, query, tcp), DnsResult::Refused)
                }
            }
        }
    }
}

/// A REFUSED reply to `query` (FORMERR if it does not parse).
fn refused(cfg: &DnsConfig, query: &[u8], tcp: bool) -> Option<Vec<u8>> {
    let nothing = DnsConfig {
        names: Vec::new(),
        upstream: None,
        ..cfg.clone()
    };
    match answer::decide(&nothing, query, tcp) {
        Decision::Reply(r) => Some(r),
        _ => None,
    }
}

async fn forward_udp(upstream: SocketAddr, query: &[u8]) -> io::Result<Vec<u8>> {
    let bind: SocketAddr = if upstream.is_ipv4() {
        "0.0.0.0:0".parse().map_err(io::Error::other)?
    } else {
        "[::]:0".parse().map_err(io::Error::other)?
    };
    let s = UdpSocket::bind(bind).await?;
    s.connect(upstream).await?;
    s.send(query).await?;
    let mut buf = vec![0u8; 65_535];
    let work = async {
        loop {
            let n = s.recv(&mut buf).await?;
            // Only the reply to this query (same ID) counts.
            if n >= 2 && query.len() >= 2 && buf[..2] == query[..2] {
                return Ok(buf[..n].to_vec());
            }
        }
    };
    tokio::time::timeout(FORWARD_TIMEOUT, work)
        .await
        .unwrap_or_else(|_| Err(io::ErrorKind::TimedOut.into()))
}

async fn forward_tcp(upstream: SocketAddr, query: &[u8]) -> io::Result<Vec<u8>> {
    let work = async {
        let mut s = TcpStream::connect(upstream).await?;
        let len = u16::try_from(query.len()).map_err(io::Error::other)?;
        let mut out = len.to_be_bytes().to_vec();
        out.extend_from_slice(query);
        s.write_all(&out).await?;
        let mut l = [0u8; 2];
        s.read_exact(&mut l).await?;
        let mut reply = vec![0u8; usize::from(u16::from_be_bytes(l))];
        s.read_exact(&mut reply).await?;
        Ok(reply)
    };
    tokio::time::timeout(FORWARD_TIMEOUT, work)
        .await
        .unwrap_or_else(|_| Err(io::ErrorKind::TimedOut.into()))
}
