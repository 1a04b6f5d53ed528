//! The TCP listener of a relay: accept loops on one thread per CPU, the
//! client ACL, the connection limit, stone's accounting file, and the
//! PROXY header in front of a connection. Each accepted connection gets
//! one task, which hands it to the relay's service. Nothing here knows
//! what the service does with it.

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::acl::{canonical, Action};
use crate::config::{Protocol, RelayConfig};
use crate::observe::access::{AccessRecord, CloseReason};
use crate::observe::metrics::{Refused, RelayMetrics};
use crate::resolve::Resolve;
use crate::service;
use crate::sockopt;
use crate::wire::proxy_protocol;

/// A bound TCP relay, ready to serve.
pub struct TcpRelay {
    /// The listener carries SO_OOBINLINE and TCP_NODELAY for its children.
    listener_opts: bool,
    accounting: Option<std::fs::File>,
    ctx: service::Context,
    listener: TcpListener,
    limit: Arc<Semaphore>,
}

/// What every connection task of one relay shares.
struct Shared {
    /// The service's shared state (the config, the connector).
    ctx: service::Context,
    /// stone's `-a` accounting file.
    accounting: Option<std::sync::Mutex<std::fs::File>>,
    /// Accepted sockets already have SO_OOBINLINE and TCP_NODELAY.
    inherited: bool,
    /// Ends connections early. Kept here and borrowed, because cloning a
    /// token per connection takes a lock that every accept would contend on.
    force: CancellationToken,
}

impl TcpRelay {
    /// Wraps a listener the caller bound (so tests can bind port 0).
    pub fn new(
        cfg: Arc<RelayConfig>,
        listener: TcpListener,
        resolver: Arc<dyn Resolve>,
        metrics: Arc<RelayMetrics>,
    ) -> io::Result<TcpRelay> {
        let id = listener.as_raw_fd();
        let listen_port = listener.local_addr().map(|a| a.port()).unwrap_or(0);
        // Accepted sockets inherit these from the listener, which saves two
        // system calls per connection. Set here, at bind time, and not when
        // serving starts: the kernel creates a connection's socket (and
        // copies the options) at the handshake, before accept() runs.
        // If setting them fails, every accepted socket gets them instead.
        let listener_opts = sockopt::set_listener_options(&listener, &cfg);
        let limit = Arc::new(Semaphore::new(cfg.max_connections));
        metrics.track_active(&limit, cfg.max_connections);
        let accounting = match &cfg.accounting {
            None => None,
            Some(p) => Some(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)
                    .map_err(|e| {
                        io::Error::new(e.kind(), format!("accounting file {}: {e}", p.display()))
                    })?,
            ),
        };
        Ok(TcpRelay {
            listener_opts,
            accounting,
            ctx: service::Context::new(cfg, resolver, id, listen_port, metrics),
            listener,
            limit,
        })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// stone's relay number (the listening descriptor).
    pub fn id(&self) -> i32 {
        self.ctx.id
    }

    /// A second descriptor for the listening socket.
    pub fn dup_socket(&self) -> io::Result<std::os::fd::OwnedFd> {
        use std::os::fd::AsFd;
        self.listener.as_fd().try_clone_to_owned()
    }

    /// Accepts until `stop` is cancelled. Connection tasks go on `tracker`
    /// and end early only when `force` is cancelled.
    pub async fn serve(
        mut self,
        stop: CancellationToken,
        force: CancellationToken,
        tracker: TaskTracker,
    ) {
        self.ctx.start(stop.clone());
        let (name, id) = (self.ctx.cfg.name.clone(), self.ctx.id);
        let shared = Arc::new(Shared {
            ctx: self.ctx,
            accounting: self.accounting.take().map(std::sync::Mutex::new),
            inherited: self.listener_opts,
            force,
        });
        let shard = Shard {
            shared,
            limit: self.limit,
            stop,
            tracker,
        };
        let threads = shard_count();
        if threads <= 1 {
            shard.accept(self.listener, TaskTracker::new()).await;
            return;
        }
        // If this future is dropped (its runtime is going away) the shard
        // threads must not go on accepting: stop them, and their connections.
        let guards = (
            shard.stop.clone().drop_guard(),
            shard.shared.force.clone().drop_guard(),
        );
        let listener = match self.listener.into_std() {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(relay = %name, "stone {id}: cannot hand the listener to worker threads: {e}");
                return;
            }
        };
        let mut running = Vec::new();
        for i in 0..threads {
            match listener.try_clone().and_then(|l| shard.clone().start(i, l)) {
                Ok(done) => running.push(done),
                Err(e) => {
                    tracing::error!(relay = %name, "stone {id}: cannot start worker thread {i}: {e}")
                }
            }
        }
        if running.is_empty() {
            // No thread would start: accept here instead.
            match TcpListener::from_std(listener) {
                Ok(l) => shard.accept(l, TaskTracker::new()).await,
                Err(e) => {
                    tracing::error!(relay = %name, "stone {id}: cannot listen: {e}")
                }
            }
        }
        for done in running {
            let _ = done.await;
        }
        let (s, f) = guards;
        s.disarm();
        f.disarm();
    }
}

/// How many threads accept and serve each TCP relay's connections: one
/// per CPU this process may use.
fn shard_count() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// What an accept loop needs. With several CPUs each worker thread runs one
/// on a duplicate of the listening socket (the kernel hands each new
/// connection to one waiting thread) and serves those connections on its
/// own single-threaded runtime. A connection then never moves between
/// threads, and no thread wakes another to run it, which is where a
/// work-stealing runtime spends its time on short connections.
#[derive(Clone)]
struct Shard {
    shared: Arc<Shared>,
    limit: Arc<Semaphore>,
    stop: CancellationToken,
    tracker: TaskTracker,
}

impl Shard {
    /// Starts worker thread `i`; the receiver completes when it stops
    /// accepting.
    fn start(
        self,
        i: usize,
        listener: std::net::TcpListener,
    ) -> io::Result<tokio::sync::oneshot::Receiver<()>> {
        let (done_tx, done_rx) = tokio::sync::oneshot::channel();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        std::thread::Builder::new()
            .name(format!("ossrelay-{i}"))
            .spawn(move || {
                runtime.block_on(async move {
                    let local = TaskTracker::new();
                    match TcpListener::from_std(listener) {
                        Ok(l) => self.accept(l, local.clone()).await,
                        Err(e) => {
                            let (name, id) = (&self.shared.ctx.cfg.name, self.shared.ctx.id);
                            tracing::error!(relay = %name, "stone {id}: worker thread {i} cannot listen: {e}")
                        }
                    }
                    let _ = done_tx.send(());
                    // Drive this thread's connections until they end.
                    local.close();
                    local.wait().await;
                });
            })?;
        Ok(done_rx)
    }

    /// Accepts until `stop` is cancelled. Each connection is tracked on
    /// `tracker` (the relay's drain) and on `local` (this thread's own).
    async fn accept(&self, listener: TcpListener, local: TaskTracker) {
        let shared = &self.shared;
        let (cfg, id) = (&shared.ctx.cfg, shared.ctx.id);
        // One waiter for the whole loop, not one registered per accept.
        let stopped = self.stop.cancelled();
        tokio::pin!(stopped);
        loop {
            let accepted = tokio::select! {
                biased;
                _ = &mut stopped => break,
                r = listener.accept() => r,
            };
            let (stream, peer) = match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning, the
                    // process stays up and recovers when descriptors free up.
                    tracing::error!(relay = %cfg.name, "stone {}: accept failed: {e}", id);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            shared.ctx.metrics.accepted();
            let peer = SocketAddr::new(canonical(peer.ip()), peer.port());
            // Behind a load balancer the peer is the balancer: check it
            // against accept_from here, and the real client after the
            // PROXY header.
            if let Some((_, from)) = &cfg.proxy_protocol.accept {
                if from.check(peer.ip()).0 == Action::Deny {
                    tracing::warn!(relay = %cfg.name, "stone {}: PROXY protocol violation: {peer} is not in accept_from", id);
                    refuse(shared, &stream, peer, CloseReason::BadRequest);
                    continue;
                }
            }
            let (action, rule) = match cfg.proxy_protocol.accept {
                Some(_) => (Action::Allow, None),
                None => cfg.acl.check(peer.ip()),
            };
            if action == Action::Deny {
                let why = rule.map_or_else(
                    || "no allow rule matched".to_string(),
                    |r| format!("deny {}", r.block),
                );
                tracing::warn!(relay = %cfg.name, "stone {}: access denied: from {peer} ({why})", id);
                refuse(shared, &stream, peer, CloseReason::RefusedAcl);
                continue;
            }
            let mode = rule.map(|r| r.mode).filter(|m| *m > 0).unwrap_or(cfg.dump);
            if let Some(acct) = &shared.accounting {
                account(acct, shared.ctx.listen_port, id, peer);
            }
            let Ok(permit) = self.limit.clone().try_acquire_owned() else {
                tracing::warn!(
                    relay = %cfg.name,
                    "stone {}: connection limit {} reached, refusing TCP {} from {peer}",
                    id, cfg.max_connections, stream.as_raw_fd()
                );
                refuse(shared, &stream, peer, CloseReason::RefusedLimit);
                continue;
            };
            let conn = connection(shared.clone(), stream, peer, mode, permit);
            tokio::spawn(local.track_future(self.tracker.track_future(conn)));
        }
    }
}

/// stone's accounting line: `Nov 29 13:02:07 18150[5] 127.0.0.1:48848[127.0.0.1]`.
fn account(file: &std::sync::Mutex<std::fs::File>, port: u16, id: i32, peer: SocketAddr) {
    use std::io::Write;
    let t = crate::observe::time::Civil::now().stone();
    let line = format!("{} {port}[{id}] {peer}[{}]\n", &t[..15], peer.ip());
    if let Ok(mut f) = file.lock() {
        let _ = f.write_all(line.as_bytes());
    }
}

fn refuse(shared: &Shared, stream: &TcpStream, peer: SocketAddr, reason: CloseReason) {
    shared.ctx.metrics.refused(match reason {
        CloseReason::RefusedAcl => Refused::Acl,
        CloseReason::RefusedLimit => Refused::Limit,
        // The listener refuses nothing else but bad or unwanted PROXY
        // headers.
        _ => Refused::ProxyProtocol,
    });
    AccessRecord {
        relay: &shared.ctx.cfg.name,
        protocol: Protocol::Tcp,
        service: shared.ctx.cfg.service.label(),
        listener_id: shared.ctx.id,
        conn_id: stream.as_raw_fd(),
        client: peer,
        upstream: None,
        bytes_from_client: 0,
        bytes_to_client: 0,
        duration: Duration::ZERO,
        reason,
    }
    .emit();
}

/// One connection's task: admit it, then let the service serve it. The
/// permit is the connection's place under the limit. Idle pairs are this
/// future; keep it flat (see the size test below).
// Not an `async fn`: that form moves each argument into a second local,
// which can cost the future their size twice.
#[allow(clippy::manual_async_fn)]
fn connection(
    shared: Arc<Shared>,
    stream: TcpStream,
    peer: SocketAddr,
    mode: u32,
    permit: tokio::sync::OwnedSemaphorePermit,
) -> impl std::future::Future<Output = ()> + Send {
    async move {
        // The pair's own token: every wake-up of this task polls it, and
        // polling a token takes its lock. On the relay-wide token that lock
        // would be shared by every connection; a child's is this task's
        // alone.
        let force = shared.force.child_token();
        if let Some(conn) = admit(&shared, stream, peer, mode).await {
            service::serve(&shared.ctx, conn, &force).await;
        }
        drop(permit);
    }
}

/// The listener's part of one connection: the PROXY header (and the ACL on
/// the client it names), the `accepted` line and the client's socket
/// options. `None` when the connection was refused (and recorded).
async fn admit(
    shared: &Shared,
    client: TcpStream,
    peer: SocketAddr,
    mode: u32,
) -> Option<service::Conn> {
    let ctx = &shared.ctx;
    let cfg = &ctx.cfg;
    let fd = client.as_raw_fd();
    let (peer, mode) = match &cfg.proxy_protocol.accept {
        None => (peer, mode),
        Some((version, _)) => {
            let limit = cfg.connect_timeout.min(Duration::from_secs(10));
            let original = match proxy_protocol::read(&client, *version, limit).await {
                Ok(o) => o.unwrap_or(peer),
                Err(e) => {
                    tracing::warn!(relay = %cfg.name, "stone {}: PROXY protocol violation from {peer}: {e}", ctx.id);
                    refuse(shared, &client, peer, CloseReason::BadRequest);
                    return None;
                }
            };
            let original = SocketAddr::new(canonical(original.ip()), original.port());
            let (action, rule) = cfg.acl.check(original.ip());
            if action == Action::Deny {
                tracing::warn!(relay = %cfg.name, "stone {}: access denied: from {original} via {peer}", ctx.id);
                refuse(shared, &client, original, CloseReason::RefusedAcl);
                return None;
            }
            let mode = rule.map(|r| r.mode).filter(|m| *m > 0).unwrap_or(cfg.dump);
            (original, mode)
        }
    };
    tracing::info!(relay = %cfg.name, "stone {}: accepted TCP {fd} from {peer} mode={mode:x}", ctx.id);
    if shared.inherited {
        sockopt::set_keepalive(&client, cfg);
    } else {
        sockopt::set_options(&client, cfg);
    }
    Some(service::Conn {
        stream: client,
        peer,
        mode,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every idle pair holds one connection task; its future's size is most
    /// of the idle memory per pair, so a change that grows it must be a
    /// choice. Release builds: 1 656 bytes before the layers were split
    /// apart (the same future, measured the same way), and no larger
    /// after. Debug builds lay futures out larger.
    #[tokio::test]
    async fn the_connection_future_stays_small() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("address");
        let cfg = Arc::new(RelayConfig::tcp(
            "size",
            addr,
            crate::config::Upstream {
                host: "127.0.0.1".into(),
                port: 9,
            },
        ));
        let _client = TcpStream::connect(addr).await.expect("connect");
        let (stream, peer) = listener.accept().await.expect("accept");
        let resolver: Arc<dyn Resolve> = Arc::new(crate::resolve::StaticResolver::new());
        let shared = Arc::new(Shared {
            ctx: service::Context::new(
                cfg.clone(),
                resolver,
                0,
                addr.port(),
                Arc::new(RelayMetrics::new(&cfg)),
            ),
            accounting: None,
            inherited: true,
            force: CancellationToken::new(),
        });
        let permit = Arc::new(Semaphore::new(1))
            .try_acquire_owned()
            .expect("permit");
        let future = connection(shared, stream, peer, 0, permit);
        let size = std::mem::size_of_val(&future);
        eprintln!("connection future: {size} bytes");
        let limit = if cfg!(debug_assertions) { 8192 } else { 1656 };
        assert!(
            size <= limit,
            "connection future grew to {size} bytes (limit {limit})"
        );
    }
}
