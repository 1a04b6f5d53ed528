//! The UDP repeater. Each client address gets a session with its own
//! connected upstream socket, so replies find their way back to the right
//! client. Sessions end after their idle timeout; when the session limit is
//! reached the least recently used one is evicted (stone's `-u`).

mod batch;

use std::collections::{HashMap, HashSet};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::acl::{canonical, Action};
use crate::config::{Protocol, RelayConfig, Service, Upstream};
use crate::connector::Connector;
use crate::observe::access::{AccessRecord, CloseReason};
use crate::observe::metrics::RelayMetrics;
use crate::pump::copy::{Direction, Meter};
use crate::resolve::Resolve;
use batch::Inbox;

/// Largest UDP payload over IPv4, plus slack so truncation is detectable.
const DATAGRAM_BUF: usize = 65_536;
/// After a stop signal, sessions stay open only this long after their last
/// datagram: no new client datagrams can arrive, but late replies still can.
const STOP_GRACE: Duration = Duration::from_secs(2);
/// Receive buffer requested for the listening socket.
const LISTEN_RCVBUF: usize = 4 << 20;
/// How many refused client addresses to remember, to log each only once.
const REFUSED_MEMORY: usize = 4_096;

/// A bound UDP relay, ready to serve.
pub struct UdpRelay {
    /// Runs of equal-sized datagrams go out as one UDP GSO send, until the
    /// kernel refuses it once.
    gso: std::sync::atomic::AtomicBool,
    cfg: Arc<RelayConfig>,
    /// Where every session's datagrams go.
    upstream: Upstream,
    socket: Arc<UdpSocket>,
    connector: Connector,
    id: i32,
    metrics: Arc<RelayMetrics>,
}

struct Session {
    upstream: Arc<UdpSocket>,
    state: Arc<Meter>,
    generation: u64,
    evict: CancellationToken,
}

type Sessions = Arc<Mutex<HashMap<SocketAddr, Session>>>;

impl UdpRelay {
    /// Wraps a socket the caller bound for `cfg`, a udp relay.
    pub fn new(
        cfg: Arc<RelayConfig>,
        socket: UdpSocket,
        resolver: Arc<dyn Resolve>,
        metrics: Arc<RelayMetrics>,
    ) -> io::Result<UdpRelay> {
        let Service::Udp(upstream) = &cfg.service else {
            return Err(io::Error::other(format!(
                "relay {:?} is not a udp relay",
                cfg.name
            )));
        };
        let upstream = upstream.clone();
        let id = socket.as_raw_fd();
        // Every client's datagrams queue on this one socket, and the default
        // buffer holds only a few hundred small ones: a burst while the relay
        // is not scheduled would be dropped. The kernel caps the request at
        // net.core.rmem_max, and memory is used only while datagrams wait.
        let _ = socket2::SockRef::from(&socket).set_recv_buffer_size(LISTEN_RCVBUF);
        Ok(UdpRelay {
            gso: std::sync::atomic::AtomicBool::new(cfg!(target_os = "linux")),
            connector: Connector::new(cfg.clone(), resolver).counting(metrics.clone()),
            cfg,
            upstream,
            socket: Arc::new(socket),
            id,
            metrics,
        })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// A second descriptor for the bound socket.
    pub fn dup_socket(&self) -> io::Result<std::os::fd::OwnedFd> {
        use std::os::fd::AsFd;
        self.socket.as_fd().try_clone_to_owned()
    }

    /// stone's relay number (the socket descriptor).
    pub fn id(&self) -> i32 {
        self.id
    }

    /// Receives client datagrams until `stop` is cancelled.
    pub async fn serve(
        self,
        stop: CancellationToken,
        force: CancellationToken,
        tracker: TaskTracker,
    ) {
        let sessions: Sessions = Arc::new(Mutex::new(HashMap::new()));
        let mut refused_logged: HashSet<IpAddr> = HashSet::new();
        let mut inbox = Inbox::new();
        let mut generation = 0u64;
        // One waiter for the whole loop, not one registered per batch.
        let stopped = stop.cancelled();
        tokio::pin!(stopped);
        'serve: loop {
            let ready = tokio::select! {
                biased;
                _ = &mut stopped => break,
                r = self.socket.readable() => r,
            };
            let received = ready.and_then(|()| inbox.recv(&self.socket));
            let count = match received {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => {
                    tracing::debug!(relay = %self.cfg.name, "stone {}: UDP receive: {e}", self.id);
                    continue;
                }
            };
            // Consecutive datagrams from one client form a run: one ACL
            // check, one session lookup and one batched send per run.
            let mut i = 0;
            while i < count {
                let Some(from) = inbox.get(i).1 else {
                    i += 1;
                    continue;
                };
                let mut end = i + 1;
                while end < count && inbox.get(end).1 == Some(from) {
                    end += 1;
                }
                let run = i..end;
                i = end;
                let peer = SocketAddr::new(canonical(from.ip()), from.port());
                if self.cfg.acl.check(peer.ip()).0 == Action::Deny {
                    if refused_logged.len() < REFUSED_MEMORY && refused_logged.insert(peer.ip()) {
                        tracing::warn!(relay = %self.cfg.name, reason = "refused-acl", "stone {}: denied UDP from {peer}", self.id);
                    }
                    continue;
                }
                let existing = lock(&sessions)
                    .get(&peer)
                    .map(|s| (s.upstream.clone(), s.state.clone()));
                let (upstream, state) = match existing {
                    Some(pair) => pair,
                    None => {
                        generation += 1;
                        // Session set-up may wait on DNS; a stop signal must not.
                        let opened = tokio::select! {
                            r = self.open_session(peer, generation, &sessions, &stop, &force, &tracker) => r,
                            _ = stop.cancelled() => break 'serve,
                        };
                        match opened {
                            Some(pair) => pair,
                            None => continue,
                        }
                    }
                };
                state.touch();
                let datagrams: Vec<&[u8]> = run.map(|k| inbox.get(k).0).collect();
                let sent = self.forward(&upstream, &datagrams).await;
                state.moved(Direction::Up, sent);
                // The datagrams whose bytes all went out.
                let mut left = sent;
                let whole = datagrams
                    .iter()
                    .take_while(|d| {
                        let fits = left >= d.len() as u64;
                        left = left.saturating_sub(d.len() as u64);
                        fits
                    })
                    .count();
                self.metrics.datagrams(true, whole as u64);
            }
        }
    }

    /// Sends a run of datagrams to the upstream, batched while the socket
    /// takes them; returns the bytes sent.
    async fn forward(&self, upstream: &UdpSocket, mut datagrams: &[&[u8]]) -> u64 {
        let mut bytes = 0u64;
        #[cfg(target_os = "linux")]
        if let Some(size) =
            batch::segment_size(datagrams).filter(|_| self.gso.load(Ordering::Relaxed))
        {
            match batch::send_segmented(upstream, datagrams, size) {
                Ok(()) => return batch::bytes(datagrams),
                // Full buffer: the loop below waits for room.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                // No UDP GSO here (old kernel, or a route that cannot do
                // it): never try again on this relay.
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::EINVAL | libc::EIO | libc::ENOPROTOOPT | libc::EOPNOTSUPP)
                    ) =>
                {
                    tracing::debug!(relay = %self.cfg.name, "stone {}: UDP GSO refused ({e}); sending datagrams one by one", self.id);
                    self.gso.store(false, Ordering::Relaxed);
                }
                // A pending ICMP error and the like is reported once; the
                // datagrams then go one by one below, none lost to it.
                Err(e) => {
                    tracing::debug!(relay = %self.cfg.name, "stone {}: UDP send to upstream: {e}", self.id);
                }
            }
        }
        while !datagrams.is_empty() {
            let (sent, delivered) = match batch::send_connected(upstream, datagrams) {
                Ok(n) => (n, true),
                // Full socket buffer: wait for room, as a single send would.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    match upstream.send(datagrams[0]).await {
                        Ok(_) => (1, true),
                        Err(e) => {
                            tracing::debug!(relay = %self.cfg.name, "stone {}: UDP send to upstream: {e}", self.id);
                            (1, false)
                        }
                    }
                }
                // ICMP unreachable and the like: that datagram is dropped,
                // as it would be on the wire; go on with the rest.
                Err(e) => {
                    tracing::debug!(relay = %self.cfg.name, "stone {}: UDP send to upstream: {e}", self.id);
                    (1, false)
                }
            };
            if delivered {
                bytes += batch::bytes(&datagrams[..sent]);
            }
            datagrams = &datagrams[sent..];
        }
        bytes
    }

    async fn open_session(
        &self,
        peer: SocketAddr,
        generation: u64,
        sessions: &Sessions,
        stop: &CancellationToken,
        force: &CancellationToken,
        tracker: &TaskTracker,
    ) -> Option<(Arc<UdpSocket>, Arc<Meter>)> {
        // Counts from the first datagram, so a failed set-up has a duration too.
        let meter = Meter::counting(Some(self.metrics.clone()));
        let upstream = match self.connector.connect_udp(&self.upstream).await {
            Ok(pair) => pair,
            Err(why) => {
                tracing::warn!(relay = %self.cfg.name, "stone {}: UDP from {peer}: connect to {} failed: {why}", self.id, self.upstream);
                self.record(
                    peer,
                    None,
                    0,
                    0,
                    meter.elapsed(),
                    CloseReason::ConnectFailed,
                );
                return None;
            }
        };
        let (socket, addr) = upstream;
        let socket = Arc::new(socket);
        let state = Arc::new(meter);
        let evict = CancellationToken::new();
        {
            let mut map = lock(sessions);
            if map.len() >= self.cfg.max_sessions {
                let oldest = map
                    .iter()
                    .min_by_key(|(_, s)| s.state.last_activity())
                    .map(|(a, _)| *a);
                if let Some(old) = oldest.and_then(|a| map.remove(&a)) {
                    old.evict.cancel();
                }
            }
            map.insert(
                peer,
                Session {
                    upstream: socket.clone(),
                    state: state.clone(),
                    generation,
                    evict: evict.clone(),
                },
            );
        }
        self.metrics.udp_session(1);
        tracing::info!(relay = %self.cfg.name, "stone {}: accepted UDP {} from {peer} to {addr}", self.id, socket.as_raw_fd());
        let task = SessionTask {
            cfg: self.cfg.clone(),
            id: self.id,
            listener: self.socket.clone(),
            upstream: socket.clone(),
            upstream_addr: addr,
            peer,
            state: state.clone(),
            generation,
            sessions: sessions.clone(),
        };
        let (stop, force) = (stop.clone(), force.clone());
        tracker.spawn(async move { task.run(evict, stop, force).await });
        Some((socket, state))
    }

    fn record(
        &self,
        peer: SocketAddr,
        upstream: Option<SocketAddr>,
        from: u64,
        to: u64,
        d: Duration,
        reason: CloseReason,
    ) {
        AccessRecord {
            relay: &self.cfg.name,
            protocol: Protocol::Udp,
            service: "udp",
            listener_id: self.id,
            conn_id: 0,
            client: peer,
            upstream,
            bytes_from_client: from,
            bytes_to_client: to,
            duration: d,
            reason,
        }
        .emit();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding this lock cannot leave the map half-updated
    // (every critical section is a single insert/remove), so keep going.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

struct SessionTask {
    cfg: Arc<RelayConfig>,
    id: i32,
    listener: Arc<UdpSocket>,
    upstream: Arc<UdpSocket>,
    upstream_addr: SocketAddr,
    peer: SocketAddr,
    state: Arc<Meter>,
    generation: u64,
    sessions: Sessions,
}

impl SessionTask {
    async fn run(
        self,
        evict: CancellationToken,
        stop: CancellationToken,
        force: CancellationToken,
    ) {
        let mut buf: Option<Box<[u8]>> = None;
        let conn_id = self.upstream.as_raw_fd();
        let reason = loop {
            let idle = if stop.is_cancelled() {
                self.cfg.idle_timeout.min(STOP_GRACE)
            } else {
                self.cfg.idle_timeout
            };
            let deadline = self.state.last_activity() + idle;
            tokio::select! {
                r = self.upstream.readable() => {
                    if r.is_err() { break CloseReason::Reset; }
                    // Allocated on the first reply only, so quiet sessions stay small.
                    let b = buf.get_or_insert_with(|| vec![0u8; DATAGRAM_BUF].into_boxed_slice());
                    match self.upstream.try_recv(b) {
                        Ok(n) => {
                            self.state.touch();
                            match self.listener.send_to(&b[..n], self.peer).await {
                                Ok(sent) => {
                                    self.state.moved(Direction::Down, sent as u64);
                                    if let Some(r) = self.state.relay() {
                                        r.datagrams(false, 1);
                                    }
                                }
                                Err(e) => tracing::debug!(relay = %self.cfg.name, "{} UDP {conn_id}: send to {}: {e}", self.id, self.peer),
                            }
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                        // ICMP unreachable from upstream: transient, keep the session.
                        Err(e) => tracing::debug!(relay = %self.cfg.name, "{} UDP {conn_id}: upstream {}: {e}", self.id, self.upstream_addr),
                    }
                }
                _ = tokio::time::sleep_until(deadline) => {
                    if self.state.last_activity() + idle <= Instant::now() {
                        break CloseReason::IdleTimeout;
                    }
                }
                _ = stop.cancelled(), if !stop.is_cancelled() => {}
                _ = evict.cancelled() => break CloseReason::Evicted,
                _ = force.cancelled() => break CloseReason::Shutdown,
            }
        };
        {
            let mut map = lock(&self.sessions);
            if map
                .get(&self.peer)
                .is_some_and(|s| s.generation == self.generation)
            {
                map.remove(&self.peer);
            }
        }
        if let Some(r) = self.state.relay() {
            r.udp_session(-1);
        }
        AccessRecord {
            relay: &self.cfg.name,
            protocol: Protocol::Udp,
            service: "udp",
            listener_id: self.id,
            conn_id,
            client: self.peer,
            upstream: Some(self.upstream_addr),
            bytes_from_client: self.state.from_client.load(Ordering::Relaxed),
            bytes_to_client: self.state.to_client.load(Ordering::Relaxed),
            duration: self.state.elapsed(),
            reason,
        }
        .emit();
    }
}
