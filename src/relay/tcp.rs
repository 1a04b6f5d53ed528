//! The TCP repeater: an accept loop that checks the ACL and the connection
//! limit, and one task per connection that resolves, connects and relays.

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::copy::{self, Meter};
use super::proxy;
use crate::acl::{canonical, Action};
use crate::config::{Backup, Keepalive, Protocol, RelayConfig, Upstream};
use crate::observe::access::{AccessRecord, CloseReason};
use crate::resolve::{lookup_within, Resolve};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// A bound TCP relay, ready to serve.
pub struct TcpRelay {
    /// The listener carries SO_OOBINLINE and TCP_NODELAY for its children.
    listener_opts: bool,
    accounting: Option<std::fs::File>,
    cfg: Arc<RelayConfig>,
    listener: TcpListener,
    resolver: Arc<dyn Resolve>,
    limit: Arc<Semaphore>,
    id: i32,
}

/// What every connection task of one relay shares.
pub(super) struct Shared {
    pub(super) cfg: Arc<RelayConfig>,
    resolver: Arc<dyn Resolve>,
    pub(super) id: i32,
    /// The port this relay listens on (for ident answers).
    pub(super) listen_port: u16,
    /// Next group member to start from.
    rotation: AtomicUsize,
    /// The primary failed its last health check (only with a backup).
    master_down: AtomicBool,
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
    ) -> io::Result<TcpRelay> {
        let id = listener.as_raw_fd();
        if cfg.upstream_tls.as_ref().is_some_and(|t| t.spec.insecure) {
            tracing::warn!(relay = %cfg.name, "stone {id}: upstream TLS certificates are NOT verified (insecure = true / -q verify,none)");
        }
        if cfg.identd {
            super::ident::enable();
        }
        // Accepted sockets inherit these from the listener, which saves two
        // system calls per connection. Set here, at bind time, and not when
        // serving starts: the kernel creates a connection's socket (and
        // copies the options) at the handshake, before accept() runs.
        // If setting them fails, every accepted socket gets them instead.
        let listener_opts = set_listener_options(&listener, &cfg);
        let limit = Arc::new(Semaphore::new(cfg.max_connections));
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
            cfg,
            listener,
            resolver,
            limit,
            id,
        })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// stone's relay number (the listening descriptor).
    pub fn id(&self) -> i32 {
        self.id
    }

    /// Accepts until `stop` is cancelled. Connection tasks go on `tracker`
    /// and end early only when `force` is cancelled.
    pub async fn serve(
        mut self,
        stop: CancellationToken,
        force: CancellationToken,
        tracker: TaskTracker,
    ) {
        let shared = Arc::new(Shared {
            cfg: self.cfg.clone(),
            resolver: self.resolver.clone(),
            id: self.id,
            listen_port: self.local_addr().map(|a| a.port()).unwrap_or(0),
            rotation: AtomicUsize::new(0),
            master_down: AtomicBool::new(false),
            accounting: self.accounting.take().map(std::sync::Mutex::new),
            inherited: self.listener_opts,
            force,
        });
        if let Some(b) = self.cfg.backup.clone() {
            tokio::spawn(monitor(shared.clone(), b, stop.clone()));
        }
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
                tracing::error!(relay = %self.cfg.name, "stone {}: cannot hand the listener to worker threads: {e}", self.id);
                return;
            }
        };
        let mut running = Vec::new();
        for i in 0..threads {
            match listener.try_clone().and_then(|l| shard.clone().start(i, l)) {
                Ok(done) => running.push(done),
                Err(e) => {
                    tracing::error!(relay = %self.cfg.name, "stone {}: cannot start worker thread {i}: {e}", self.id)
                }
            }
        }
        if running.is_empty() {
            // No thread would start: accept here instead.
            match TcpListener::from_std(listener) {
                Ok(l) => shard.accept(l, TaskTracker::new()).await,
                Err(e) => {
                    tracing::error!(relay = %self.cfg.name, "stone {}: cannot listen: {e}", self.id)
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
                            let (name, id) = (&self.shared.cfg.name, self.shared.id);
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
                    tracing::error!(relay = %shared.cfg.name, "stone {}: accept failed: {e}", shared.id);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let peer = SocketAddr::new(canonical(peer.ip()), peer.port());
            // Behind a load balancer the peer is the balancer: check it
            // against accept_from here, and the real client after the
            // PROXY header.
            if let Some((_, from)) = &shared.cfg.proxy_protocol.accept {
                if from.check(peer.ip()).0 == Action::Deny {
                    tracing::warn!(relay = %shared.cfg.name, "stone {}: PROXY protocol violation: {peer} is not in accept_from", shared.id);
                    refuse(shared, &stream, peer, CloseReason::BadRequest);
                    continue;
                }
            }
            let (action, rule) = match shared.cfg.proxy_protocol.accept {
                Some(_) => (Action::Allow, None),
                None => shared.cfg.acl.check(peer.ip()),
            };
            if action == Action::Deny {
                let why = rule.map_or_else(
                    || "no allow rule matched".to_string(),
                    |r| format!("deny {}", r.block),
                );
                tracing::warn!(relay = %shared.cfg.name, "stone {}: access denied: from {peer} ({why})", shared.id);
                refuse(shared, &stream, peer, CloseReason::RefusedAcl);
                continue;
            }
            let mode = rule
                .map(|r| r.mode)
                .filter(|m| *m > 0)
                .unwrap_or(shared.cfg.dump);
            if let Some(acct) = &shared.accounting {
                account(acct, shared.listen_port, shared.id, peer);
            }
            let Ok(permit) = self.limit.clone().try_acquire_owned() else {
                tracing::warn!(
                    relay = %shared.cfg.name,
                    "stone {}: connection limit {} reached, refusing TCP {} from {peer}",
                    shared.id, shared.cfg.max_connections, stream.as_raw_fd()
                );
                refuse(shared, &stream, peer, CloseReason::RefusedLimit);
                continue;
            };
            let shared = shared.clone();
            let conn = self.tracker.track_future(async move {
                handle(&shared, stream, peer, mode).await;
                drop(permit);
            });
            tokio::spawn(local.track_future(conn));
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
    AccessRecord {
        relay: &shared.cfg.name,
        protocol: Protocol::Tcp,
        listener_id: shared.id,
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

async fn handle(shared: &Shared, mut client: TcpStream, peer: SocketAddr, mode: u32) {
    // The pair's own token: every wake-up of this task polls it, and
    // polling a token takes its lock. On the relay-wide token that lock
    // would be shared by every connection; a child's is this task's alone.
    let force = &shared.force.child_token();
    let cfg = &shared.cfg;
    let meter = Meter::new();
    let fd = client.as_raw_fd();
    let (peer, mode) = match &cfg.proxy_protocol.accept {
        None => (peer, mode),
        Some((version, _)) => {
            let limit = cfg.connect_timeout.min(Duration::from_secs(10));
            let original = match super::proxy_protocol::read(&client, *version, limit).await {
                Ok(o) => o.unwrap_or(peer),
                Err(e) => {
                    tracing::warn!(relay = %cfg.name, "stone {}: PROXY protocol violation from {peer}: {e}", shared.id);
                    refuse(shared, &client, peer, CloseReason::BadRequest);
                    return;
                }
            };
            let original = SocketAddr::new(canonical(original.ip()), original.port());
            let (action, rule) = cfg.acl.check(original.ip());
            if action == Action::Deny {
                tracing::warn!(relay = %cfg.name, "stone {}: access denied: from {original} via {peer}", shared.id);
                refuse(shared, &client, original, CloseReason::RefusedAcl);
                return;
            }
            let mode = rule.map(|r| r.mode).filter(|m| *m > 0).unwrap_or(cfg.dump);
            (original, mode)
        }
    };
    tracing::info!(relay = %cfg.name, "stone {}: accepted TCP {fd} from {peer} mode={mode:x}", shared.id);
    if shared.inherited {
        set_keepalive(&client, cfg);
    } else {
        set_options(&client, cfg);
    }
    let mut record = AccessRecord {
        relay: &cfg.name,
        protocol: Protocol::Tcp,
        listener_id: shared.id,
        conn_id: fd,
        client: peer,
        upstream: None,
        bytes_from_client: 0,
        bytes_to_client: 0,
        duration: Duration::ZERO,
        reason: CloseReason::ConnectFailed,
    };
    if let Some(h) = &cfg.health {
        // Rare modes run boxed: their state (read buffers and all) would
        // otherwise sit inline in every connection's task, idle or not.
        Box::pin(super::health::serve(
            client,
            &crate::observe::stats::mappings(),
            &h.config,
            h.debug,
        ))
        .await;
        record.reason = CloseReason::Eof;
        record.duration = meter.elapsed();
        record.emit();
        return;
    }
    if let Some(gw) = &cfg.gateway {
        let resolver = shared.resolver.as_ref();
        let id = shared.id;
        match gw.mode {
            crate::gateway::Mode::Http => {
                Box::pin(crate::gateway::http::serve(
                    gw, cfg, id, client, peer, resolver, force, &meter,
                ))
                .await
            }
            crate::gateway::Mode::Sni => {
                Box::pin(crate::gateway::sni::serve(
                    gw, cfg, id, client, peer, resolver, force, &meter,
                ))
                .await
            }
        }
        record.reason = CloseReason::Eof;
        record.bytes_from_client = meter.from_client.load(std::sync::atomic::Ordering::Relaxed);
        record.bytes_to_client = meter.to_client.load(std::sync::atomic::Ordering::Relaxed);
        record.duration = meter.elapsed();
        record.emit();
        return;
    }
    if cfg.identd {
        Box::pin(super::ident::serve(client, peer.ip())).await;
        record.reason = CloseReason::Eof;
        record.duration = meter.elapsed();
        record.emit();
        return;
    }
    if cfg.tls.is_some()
        || cfg.upstream_tls.is_some()
        || cfg.upstream_unix.is_some()
        || cfg.rewrite.is_some()
    {
        Box::pin(super::wrapped::handle(
            shared, client, peer, &meter, record, force,
        ))
        .await;
        return;
    }
    // Set by proxy_connect for an absolute-form request: relay just it.
    let mut one_request = None;
    let connected = match &cfg.proxy {
        None => tokio::select! {
            r = connect(shared) => r.map(|(s, a, _)| (s, a)).map_err(|why| {
                tracing::warn!(relay = %cfg.name, "{} TCP {fd}: connect failed: {why}", shared.id);
                CloseReason::ConnectFailed
            }),
            _ = force.cancelled() => Err(CloseReason::Shutdown),
        },
        Some(policy) => tokio::select! {
            r = Box::pin(proxy_connect(shared, &mut client, policy, &meter, &mut one_request)) => r,
            _ = force.cancelled() => Err(CloseReason::Shutdown),
        },
    };
    let (mut upstream, addr) = match connected {
        Ok(pair) => pair,
        Err(reason) => {
            record.reason = reason;
            record.bytes_from_client = meter.from_client.load(std::sync::atomic::Ordering::Relaxed);
            record.duration = meter.elapsed();
            record.emit();
            return;
        }
    };
    record.upstream = Some(addr);
    // getsockname only when a header will carry the address.
    let local = cfg
        .proxy_protocol
        .send
        .and_then(|_| client.local_addr().ok());
    if let Err(e) = send_proxy_header(cfg, &upstream, peer, local).await {
        tracing::warn!(relay = %cfg.name, "{} TCP {fd}: sending the PROXY header: {e}", shared.id);
        record.reason = CloseReason::Reset;
        record.duration = meter.elapsed();
        record.emit();
        return;
    }
    let _ident = super::ident::register(&upstream, shared.listen_port);
    if let Some(one) = one_request {
        set_options(&upstream, cfg);
        let r = tokio::select! {
            r = Box::pin(crate::gateway::http::exchange_once(&mut client, &mut upstream, one, cfg.idle_timeout, &meter)) => r,
            _ = force.cancelled() => Err("shutting down".into()),
        };
        record.reason = match r {
            Ok(_) => CloseReason::Eof,
            Err(why) => {
                tracing::debug!(relay = %cfg.name, "{} TCP {fd}: proxied request: {why}", shared.id);
                CloseReason::Reset
            }
        };
        record.bytes_from_client = meter.from_client.load(std::sync::atomic::Ordering::Relaxed);
        record.bytes_to_client = meter.to_client.load(std::sync::atomic::Ordering::Relaxed);
        record.duration = meter.elapsed();
        record.emit();
        return;
    }
    crate::observe::stats::pair_opened();
    set_options(&upstream, cfg);
    tracing::debug!(relay = %cfg.name, "{} TCP {fd}: established to {} {addr}", shared.id, upstream.as_raw_fd());
    let dump = (mode > 0).then(|| {
        let (c, u) = (client.as_raw_fd(), upstream.as_raw_fd());
        let d = |arrow: String| super::dump::Dump {
            mode,
            id: shared.id,
            arrow,
        };
        (d(format!("{c}>{u}")), d(format!("{c}<{u}")))
    });
    let outcome = copy::relay(
        &client,
        &upstream,
        cfg.idle_timeout,
        force,
        &meter,
        dump.as_ref(),
    )
    .await;
    if let Some(err) = &outcome.error {
        tracing::debug!(relay = %cfg.name, "{} TCP {fd}: {err}", shared.id);
        // Pass the failure on: a reset on one side becomes a reset on the
        // other instead of a clean FIN that would look like a whole reply.
        // A side whose incoming direction already finished has everything
        // (say a 413 sent while the client was still uploading): it gets a
        // normal close so its unread bytes are not thrown away.
        let spare = match outcome.failed {
            Some((copy::Direction::Up, true)) => Some(&client),
            Some((copy::Direction::Down, true)) => Some(&upstream),
            _ => None,
        };
        for s in [&client, &upstream] {
            if spare.is_some_and(|k| std::ptr::eq(k, s)) {
                continue;
            }
            let _ = socket2::SockRef::from(s).set_linger(Some(Duration::ZERO));
        }
    }
    record.bytes_from_client = meter.from_client.load(std::sync::atomic::Ordering::Relaxed);
    record.bytes_to_client = meter.to_client.load(std::sync::atomic::Ordering::Relaxed);
    record.duration = meter.elapsed();
    record.reason = outcome.reason;
    drop(client);
    drop(upstream);
    crate::observe::stats::pair_closed();
    record.emit();
}

/// Writes the configured PROXY header (client `peer`, destination the
/// address it reached) to a freshly connected upstream.
pub(crate) async fn send_proxy_header(
    cfg: &RelayConfig,
    upstream: &TcpStream,
    peer: SocketAddr,
    local: Option<SocketAddr>,
) -> io::Result<()> {
    let Some(v) = cfg.proxy_protocol.send else {
        return Ok(());
    };
    let local = local.ok_or_else(|| io::Error::other("local address unknown"))?;
    let h = super::proxy_protocol::header(v, peer, local);
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

/// Proxy mode: read the request head, check the destination, connect.
/// Refusals are answered with an HTTP status before the close.
async fn proxy_connect(
    shared: &Shared,
    client: &mut TcpStream,
    policy: &proxy::DestPolicy,
    meter: &Meter,
    one_request: &mut Option<crate::gateway::http::OneRequest>,
) -> Result<(TcpStream, SocketAddr), CloseReason> {
    let cfg = &shared.cfg;
    let fd = client.as_raw_fd();
    let (head, early) =
        match tokio::time::timeout(proxy::HEAD_TIMEOUT, proxy::read_head(client)).await {
            Ok(Ok(pair)) => pair,
            Ok(Err(e)) => {
                tracing::warn!(relay = %cfg.name, "{} TCP {fd}: proxy request: {e}", shared.id);
                proxy::refuse(client, 400, &e.to_string()).await;
                return Err(CloseReason::BadRequest);
            }
            Err(_) => {
                proxy::refuse(client, 400, "request head not received in time").await;
                return Err(CloseReason::BadRequest);
            }
        };
    meter.from_client.fetch_add(
        (head.len() + early.len()) as u64,
        std::sync::atomic::Ordering::Relaxed,
    );
    let target = match proxy::parse_head(&head) {
        Ok(t) => t,
        Err(why) => {
            tracing::warn!(relay = %cfg.name, "{} TCP {fd}: proxy request: {why}", shared.id);
            proxy::refuse(client, 400, why).await;
            return Err(CloseReason::BadRequest);
        }
    };
    tracing::info!(relay = %cfg.name, "proxy {fd} -> http://{}:{}", target.host, target.port);
    // With a bucket policy, an absolute-form request is relayed on its own
    // (see exchange_once), framed by its original head, which must be
    // unambiguous. Without one (stone's proxy) the pair is spliced as
    // stone does: later requests go to the same, already checked,
    // destination.
    let early = if target.tunnel || policy.buckets.is_none() {
        early
    } else {
        let req = match crate::gateway::head::parse_request(&head) {
            Ok(r) => r,
            Err(why) => {
                tracing::warn!(relay = %cfg.name, "{} TCP {fd}: proxy request: {why}", shared.id);
                proxy::refuse(client, 400, why).await;
                return Err(CloseReason::BadRequest);
            }
        };
        *one_request = Some(crate::gateway::http::OneRequest {
            early,
            framing: req.framing,
            head_request: req.method == "HEAD",
        });
        Vec::new()
    };
    if let Some(bp) = &policy.buckets {
        let path = (!target.tunnel)
            .then(|| {
                String::from_utf8_lossy(&target.head)
                    .split(' ')
                    .nth(1)
                    .map(str::to_string)
            })
            .flatten();
        let bucket = policy.bucket_of(&target.host, path.as_deref());
        if let Err(why) = bp.check(bucket.as_deref()) {
            tracing::warn!(relay = %cfg.name, "{} TCP {fd}: proxy denied {}:{}: {why}", shared.id, target.host, target.port);
            if target.tunnel {
                proxy::refuse(client, 403, &why).await;
            } else {
                let reply = crate::gateway::error_response(
                    403,
                    "AccessDenied",
                    &format!("{why} (ossrelay bucket policy)"),
                    bucket.as_deref(),
                    &target.host,
                );
                let _ = client.write_all(&reply).await;
                let _ = client.shutdown().await;
            }
            return Err(CloseReason::RefusedDestination);
        }
    }
    let connected = match proxy::setup(
        client,
        &target,
        &early,
        policy,
        shared.resolver.as_ref(),
        cfg.connect_timeout,
    )
    .await
    {
        Ok(proxy::Setup::Connected(up, addr)) => Ok((up, addr)),
        Ok(proxy::Setup::Refused(status, why)) => {
            tracing::warn!(relay = %cfg.name, "{} TCP {fd}: proxy {status}: {why}", shared.id);
            proxy::refuse(client, status, &why).await;
            Err(if status == 403 {
                CloseReason::RefusedDestination
            } else {
                CloseReason::ConnectFailed
            })
        }
        Err(e) => {
            tracing::debug!(relay = %cfg.name, "{} TCP {fd}: proxy: {e}", shared.id);
            Err(CloseReason::Reset)
        }
    };
    // A tunnel that carries TLS: police its server name too, since it
    // need not match the CONNECT target.
    let (mut up, addr) = connected?;
    if let (Some(bp), true) = (&policy.buckets, target.tunnel) {
        use crate::gateway::sni::{self, Hello};
        let mut hello = Vec::new();
        let name = match sni::read_hello(client, &mut hello, proxy::HEAD_TIMEOUT).await {
            Hello::Name(name) => name,
            // Plain HTTP inside a tunnel could name any bucket in request
            // after request; with a bucket policy only TLS (checked by its
            // server name) or absolute-form requests (checked one by one)
            // may pass.
            Hello::Bad(_) if hello.first().is_some_and(|&b| b != 0x16) => {
                tracing::warn!(relay = %cfg.name, "{} TCP {fd}: proxy tunnel to {} carries no TLS; refused under the bucket policy (send plain HTTP as absolute-form requests)", shared.id, target.host);
                let _ = client.shutdown().await;
                return Err(CloseReason::RefusedDestination);
            }
            Hello::Bad(_) | Hello::Closed => return Err(CloseReason::BadRequest),
        };
        let bucket = name.as_deref().and_then(|n| policy.bucket_of(n, None));
        if let Err(why) = bp.check(bucket.as_deref()) {
            tracing::warn!(relay = %cfg.name, "{} TCP {fd}: proxy tunnel to {}: server name {name:?}: {why}", shared.id, target.host);
            sni::alert(client, sni::ACCESS_DENIED).await;
            return Err(CloseReason::RefusedDestination);
        }
        meter
            .from_client
            .fetch_add(hello.len() as u64, std::sync::atomic::Ordering::Relaxed);
        up.write_all(&hello).await.map_err(|_| CloseReason::Reset)?;
    }
    Ok((up, addr))
}

/// Picks the destinations for one connection: the backup while the
/// primary is down, else the group in rotation, else the upstream; then
/// tries each (every resolved address of each) in turn.
pub(super) async fn connect(shared: &Shared) -> Result<(TcpStream, SocketAddr, String), String> {
    let cfg = &shared.cfg;
    let mut targets: Vec<&Upstream> = Vec::new();
    match &cfg.backup {
        Some(b) if shared.master_down.load(Ordering::Relaxed) => targets.push(&b.upstream),
        _ if !cfg.group.is_empty() => {
            let start = shared.rotation.fetch_add(1, Ordering::Relaxed) % cfg.group.len();
            targets.extend(cfg.group[start..].iter().chain(&cfg.group[..start]));
        }
        _ => targets.push(&cfg.upstream),
    }
    let mut errors = Vec::new();
    for t in targets {
        match connect_one(cfg, t, shared.resolver.as_ref()).await {
            Ok((stream, addr)) => return Ok((stream, addr, t.host.clone())),
            Err(e) => errors.push(e),
        }
    }
    Err(errors.join("; "))
}

/// Tries every resolved address of `target` in turn, each with the
/// connect timeout.
pub(crate) async fn connect_one(
    cfg: &RelayConfig,
    target: &Upstream,
    resolver: &dyn Resolve,
) -> Result<(TcpStream, SocketAddr), String> {
    let addrs = lookup_within(resolver, &target.host, target.port, cfg.connect_timeout).await?;
    let addrs: Vec<SocketAddr> = addrs
        .into_iter()
        .filter(|a| !cfg.upstream_v6 || a.is_ipv6())
        .collect();
    if addrs.is_empty() {
        return Err(format!(
            "{target}: no IPv6 address (the destination is marked /v6)"
        ));
    }
    let mut errors = Vec::new();
    for addr in addrs {
        if cfg.source.is_some_and(|s| s.is_ipv4() != addr.is_ipv4()) {
            errors.push(format!(
                "{addr}: not the address family of the source address"
            ));
            continue;
        }
        let attempt = async {
            let socket = if addr.is_ipv4() {
                tokio::net::TcpSocket::new_v4()?
            } else {
                tokio::net::TcpSocket::new_v6()?
            };
            if let Some(src) = cfg.source {
                socket.bind(src)?;
            }
            socket.connect(addr).await
        };
        match tokio::time::timeout(cfg.connect_timeout, attempt).await {
            Ok(Ok(stream)) => return Ok((stream, addr)),
            Ok(Err(e)) => errors.push(format!("{addr}: {e}")),
            Err(_) => errors.push(format!("{addr}: timed out after {:?}", cfg.connect_timeout)),
        }
    }
    Err(errors.join("; "))
}

/// Probes the primary every interval and flips `master_down`, logging each
/// change, until `stop`.
async fn monitor(shared: Arc<Shared>, backup: Backup, stop: CancellationToken) {
    let cfg = &shared.cfg;
    let timeout = backup.interval.min(cfg.connect_timeout);
    loop {
        let probe = RelayConfig {
            connect_timeout: timeout,
            ..(**cfg).clone()
        };
        let up = match connect_one(&probe, &backup.check, shared.resolver.as_ref()).await {
            Ok(_) if backup.script.is_empty() => true,
            Ok((stream, _)) => {
                match super::script::run(stream, &backup.script, backup.interval).await {
                    Ok(()) => true,
                    Err(why) => {
                        tracing::debug!(relay = %cfg.name, "stone {}: health check {} fail: {why}", shared.id, backup.check);
                        false
                    }
                }
            }
            Err(_) => false,
        };
        let was_down = shared.master_down.swap(!up, Ordering::Relaxed);
        if was_down == up {
            if up {
                tracing::warn!(relay = %cfg.name, "stone {}: master {} is healthy again; leaving backup {}", shared.id, backup.check, backup.upstream);
            } else {
                tracing::warn!(relay = %cfg.name, "stone {}: master {} is unhealthy; using backup {}", shared.id, backup.check, backup.upstream);
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(backup.interval) => {}
            _ = stop.cancelled() => return,
        }
    }
}

pub(super) fn set_options(stream: &TcpStream, cfg: &RelayConfig) {
    // Urgent (MSG_OOB) data would stop splice at the urgent mark and stall
    // the direction; inline it so it is relayed as ordinary bytes.
    let _ = socket2::SockRef::from(stream).set_out_of_band_inline(true);
    if cfg.nodelay {
        let _ = stream.set_nodelay(true);
    }
    set_keepalive(stream, cfg);
}

/// SO_OOBINLINE and TCP_NODELAY on a listener, for its accepted sockets to
/// inherit (Linux copies both on accept). True when both took.
fn set_listener_options(listener: &TcpListener, cfg: &RelayConfig) -> bool {
    let sock = socket2::SockRef::from(listener);
    cfg!(target_os = "linux")
        && sock.set_out_of_band_inline(true).is_ok()
        && (!cfg.nodelay || sock.set_nodelay(true).is_ok())
}

fn set_keepalive(stream: &TcpStream, cfg: &RelayConfig) {
    if let Some(k) = cfg.keepalive {
        let _ = socket2::SockRef::from(stream).set_tcp_keepalive(&keepalive(k));
    }
}

fn keepalive(k: Keepalive) -> socket2::TcpKeepalive {
    let mut ka = socket2::TcpKeepalive::new().with_time(k.time);
    if let Some(i) = k.interval {
        ka = ka.with_interval(i);
    }
    #[cfg(any(target_os = "linux", target_os = "macos", target_os = "freebsd"))]
    if let Some(r) = k.retries {
        ka = ka.with_retries(r);
    }
    ka
}
