//! The server: binds every relay (through the listener layer) and the DNS
//! responder, runs them, and drains on shutdown.
//!
//! Binding is separate from serving so that every listen error is reported
//! before anything starts, and so tests can bind port 0 and read back the
//! real address.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::admin::Admin;
use crate::config::{Config, RelayConfig, Service};
use crate::error::Error;
use crate::listener::{Bound, Opened};
use crate::observe::metrics::Metrics;
use crate::resolve::Resolve;

/// Relays whose sockets are bound, not yet serving.
pub struct Server {
    relays: Vec<(Arc<RelayConfig>, Bound)>,
    dns: Option<crate::dns::DnsServer>,
    admin: Option<Admin>,
    metrics: Arc<Metrics>,
    resolver: Arc<dyn Resolve>,
    drain_timeout: Duration,
    drain_grace: Duration,
    /// What `[admin]` and `[dns]` started with, to tell a reload that
    /// changes them takes a restart.
    admin_cfg: Option<crate::config::AdminConfig>,
    dns_cfg: Option<crate::dns::DnsConfig>,
}

impl Server {
    /// Binds every relay in `config`. Must run inside a tokio runtime.
    pub fn bind(config: &Config, resolver: Arc<dyn Resolve>) -> Result<Server, Error> {
        Server::adopt(config, Server::open(config)?, resolver)
    }

    /// Binds every relay's socket in `config`, in order, without a runtime
    /// (see [`Opened`]). The DNS responder is bound by [`Server::adopt`].
    pub fn open(config: &Config) -> Result<Vec<Opened>, Error> {
        config.relays.iter().map(Opened::open).collect()
    }

    /// Makes the sockets [`Server::open`] returned for `config` ready to
    /// serve, and binds the DNS responder. Must run inside a tokio runtime.
    pub fn adopt(
        config: &Config,
        opened: Vec<Opened>,
        resolver: Arc<dyn Resolve>,
    ) -> Result<Server, Error> {
        let metrics = Arc::new(Metrics::new());
        let mut relays = Vec::new();
        for (cfg, opened) in config.relays.iter().zip(opened) {
            let cfg = Arc::new(cfg.clone());
            let bound = Bound::adopt(&cfg, opened, resolver.clone(), metrics.add_relay(&cfg))?;
            relays.push((cfg, bound));
        }
        let dns = match &config.dns {
            None => None,
            Some(d) => Some(
                crate::dns::DnsServer::bind(d.clone(), metrics.clone()).map_err(|source| {
                    Error::Bind {
                        relay: "dns".into(),
                        addr: d.listen,
                        reason: crate::listener::explain(&source),
                        source,
                    }
                })?,
            ),
        };
        let admin = match &config.admin {
            None => None,
            Some(a) => Some(
                Admin::bind(a, metrics.clone()).map_err(|source| Error::Bind {
                    relay: "admin".into(),
                    addr: a.listen,
                    reason: crate::listener::explain(&source),
                    source,
                })?,
            ),
        };
        Ok(Server {
            relays,
            dns,
            admin,
            metrics,
            resolver,
            drain_timeout: config.drain_timeout,
            drain_grace: config.drain_grace,
            admin_cfg: config.admin.clone(),
            dns_cfg: config.dns.clone(),
        })
    }

    /// The counters `/metrics` shows.
    pub fn metrics(&self) -> Arc<Metrics> {
        self.metrics.clone()
    }

    /// Each relay's name and the address it actually bound.
    pub fn local_addrs(&self) -> Vec<(String, SocketAddr)> {
        self.relays
            .iter()
            .filter_map(|(cfg, b)| b.local_addr().ok().map(|a| (cfg.name.clone(), a)))
            .chain(
                self.dns
                    .as_ref()
                    .and_then(|d| d.local_addr().ok())
                    .map(|a| ("dns".to_string(), a)),
            )
            .chain(
                self.admin
                    .as_ref()
                    .and_then(|a| a.local_addr().ok())
                    .map(|a| ("admin".to_string(), a)),
            )
            .collect()
    }

    /// Serves until `shutdown` completes, then drains in the order a load
    /// balancer needs: `/readyz` turns 503 at once, relays keep accepting
    /// for `drain_grace`, then stop accepting; open connections finish
    /// until the drain deadline, and the rest are closed.
    pub async fn serve(self, shutdown: impl Future<Output = ()>) {
        self.serve_reloading(shutdown, None).await
    }

    /// [`Server::serve`], and on each message of `reload` reads the config
    /// file again and applies it (see [`Reload`]).
    pub async fn serve_reloading(
        mut self,
        shutdown: impl Future<Output = ()>,
        mut reload: Option<Reload>,
    ) {
        // Lives as long as this call: the watchdog and the admin listener.
        let life = CancellationToken::new();
        let _life = life.clone().drop_guard();
        let mut run = Running {
            live: Vec::new(),
            force: CancellationToken::new(),
            tracker: TaskTracker::new(),
            accept_loops: TaskTracker::new(),
            admin: None,
            dns: None,
        };
        if let Some(a) = self.admin.take() {
            run.start_admin(a, &life);
        }
        crate::observe::stats::set_relays(self.relays.len());
        for (cfg, bound) in std::mem::take(&mut self.relays) {
            run.start(cfg, bound);
        }
        if let Some(d) = self.dns.take() {
            run.start_dns(d);
        }
        self.metrics.set_serving();
        crate::notify::ready();
        crate::notify::watchdog(life.clone());
        tokio::pin!(shutdown);
        loop {
            let asked = async {
                match reload.as_mut() {
                    Some(r) => r.requests.recv().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = &mut shutdown => break,
                Some(()) = asked => {
                    if let Some(r) = &reload {
                        crate::notify::reloading();
                        self.reload(&r.path, &mut run, &life);
                        crate::notify::ready();
                    }
                }
            }
        }
        self.metrics.set_draining();
        crate::notify::stopping();
        if !self.drain_grace.is_zero() {
            tracing::info!(
                "draining: /readyz answers 503; still accepting for {:?} (drain_grace)",
                self.drain_grace
            );
            tokio::time::sleep(self.drain_grace).await;
        }
        // Dropping each relay's spare descriptor too, so the socket closes
        // once its accept loops end and the kernel refuses new clients.
        for l in run.live.drain(..) {
            l.stop.cancel();
        }
        // Admin connections never hold up a drain: the admin listener
        // answers until the process exits.
        if let Some((stop, _)) = run.dns.take() {
            stop.cancel();
        }
        run.accept_loops.close();
        run.accept_loops.wait().await;
        let tracker = run.tracker;
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
            run.force.cancel();
            tracker.wait().await;
        }
        tracing::info!("all connections closed; exiting");
    }

    /// Reads `path` again and applies it to the running relays. An invalid
    /// file, or a new listen address that cannot be bound, changes nothing.
    fn reload(&mut self, path: &Path, run: &mut Running, life: &CancellationToken) {
        let config = match Config::load(path) {
            Ok(c) => c,
            Err(e) => return self.reload_failed(&e),
        };
        // Same protocol and address: the same relay, perhaps changed.
        let key = |c: &RelayConfig| (c.protocol(), c.listen);
        // Bind every new address first, so a failure leaves all as it was.
        let mut opened = Vec::new();
        for cfg in &config.relays {
            let kept = run.live.iter().find(|l| key(&l.cfg) == key(cfg));
            let socket = match kept {
                Some(l) if format!("{:?}", l.cfg) == format!("{cfg:?}") => None,
                Some(l) => Some(l.socket.as_ref().map_err(|e| e.to_string()).and_then(|s| {
                    s.try_clone()
                        .map_err(|e| format!("relay {:?}: cannot share its socket: {e}", cfg.name))
                })),
                None => Some(Opened::open(cfg).map_err(|e| e.to_string())),
            };
            match socket {
                None => opened.push(None),
                Some(Ok(s)) => opened.push(Some(s)),
                Some(Err(e)) => {
                    return self.reload_failed(&e);
                }
            }
        }
        // The admin listener and the DNS responder: a successor on the
        // same socket when the address stays, a new socket when it moves.
        let admin_next = match self.admin_successor(&config, run) {
            Ok(next) => next,
            Err(e) => return self.reload_failed(&format_args!("admin: {e}")),
        };
        let dns_next = match self.dns_successor(&config, run) {
            Ok(next) => next,
            Err(e) => return self.reload_failed(&format_args!("dns: {e}")),
        };
        let mut bound = Vec::new();
        for (cfg, socket) in config.relays.iter().zip(opened) {
            let Some(socket) = socket else {
                bound.push(None);
                continue;
            };
            let cfg = Arc::new(cfg.clone());
            let metrics = self.metrics.add_relay(&cfg);
            match Bound::adopt(&cfg, socket, self.resolver.clone(), metrics) {
                Ok(b) => bound.push(Some((cfg, b))),
                Err(e) => {
                    return self.reload_failed(&e);
                }
            }
        }
        // Now apply: successors start on the shared sockets before their
        // predecessors stop accepting, so the socket is never without a
        // listener; the predecessors' connections finish with the settings
        // they started with.
        let (mut kept, mut changed, mut added) = (0, 0, 0);
        let mut next = Vec::new();
        for (cfg, b) in config.relays.iter().zip(bound) {
            let pos = run.live.iter().position(|l| key(&l.cfg) == key(cfg));
            match (b, pos) {
                (None, Some(i)) => {
                    kept += 1;
                    next.push(run.live.remove(i));
                }
                (Some((cfg, b)), Some(i)) => {
                    changed += 1;
                    let old = run.live.remove(i);
                    next.push(run.launch(cfg, b));
                    tracing::info!(relay = %old.cfg.name, "reload: relay {:?} on {} changed; its open connections keep the previous settings", old.cfg.name, old.cfg.listen);
                    old.stop.cancel();
                }
                (Some((cfg, b)), None) => {
                    added += 1;
                    next.push(run.launch(cfg, b));
                }
                (None, None) => {}
            }
        }
        let removed = run.live.len();
        for old in run.live.drain(..) {
            tracing::info!(relay = %old.cfg.name, "reload: relay {:?} on {} removed; it stops accepting and drains", old.cfg.name, old.cfg.listen);
            old.stop.cancel();
        }
        run.live = next;
        let names: Vec<&str> = run.live.iter().map(|l| l.cfg.name.as_str()).collect();
        self.metrics.keep_only(&names);
        crate::observe::stats::set_relays(run.live.len());
        crate::observe::stats::set_mappings(run.live.iter().map(|l| l.line.clone()).collect());
        self.drain_timeout = config.drain_timeout;
        self.drain_grace = config.drain_grace;
        if let Some(next) = admin_next {
            if let Some((stop, _)) = run.admin.take() {
                stop.cancel();
            }
            if let Some(a) = next {
                run.start_admin(a, life);
            }
            tracing::info!("reload: [admin] applied");
            self.admin_cfg = config.admin.clone();
        }
        if let Some(next) = dns_next {
            if let Some((stop, _)) = run.dns.take() {
                stop.cancel();
            }
            if let Some(d) = next {
                run.start_dns(d);
            }
            tracing::info!("reload: [dns] applied");
            self.dns_cfg = config.dns.clone();
        }
        tracing::info!(
            "reload: {} relay(s) kept, {changed} changed, {added} added, {removed} removed",
            kept
        );
        self.metrics.reloaded(true);
    }
}

impl Server {
    /// A reload that changed nothing: says why, and counts it.
    fn reload_failed(&self, why: &dyn std::fmt::Display) {
        tracing::error!("reload: {why}; still running the previous config");
        self.metrics.reloaded(false);
    }

    /// `None` when `[admin]` is unchanged; else its successor (or none).
    #[allow(clippy::option_option)]
    fn admin_successor(&self, config: &Config, run: &Running) -> io::Result<Option<Option<Admin>>> {
        if format!("{:?}", config.admin) == format!("{:?}", self.admin_cfg) {
            return Ok(None);
        }
        let Some(a) = &config.admin else {
            return Ok(Some(None));
        };
        let same = self
            .admin_cfg
            .as_ref()
            .is_some_and(|old| old.listen == a.listen);
        let next = match (same, run.admin.as_ref().map(|(_, s)| s)) {
            (true, Some(Ok(socket))) => Admin::adopt(a, socket.try_clone()?, self.metrics.clone())?,
            _ => Admin::bind(a, self.metrics.clone())?,
        };
        Ok(Some(Some(next)))
    }

    /// `None` when `[dns]` is unchanged; else its successor (or none).
    #[allow(clippy::option_option)]
    fn dns_successor(
        &self,
        config: &Config,
        run: &Running,
    ) -> io::Result<Option<Option<crate::dns::DnsServer>>> {
        if format!("{:?}", config.dns) == format!("{:?}", self.dns_cfg) {
            return Ok(None);
        }
        let Some(d) = &config.dns else {
            return Ok(Some(None));
        };
        let same = self
            .dns_cfg
            .as_ref()
            .is_some_and(|old| old.listen == d.listen);
        let next = match (same, run.dns.as_ref().map(|(_, s)| s)) {
            (true, Some(Ok((tcp, udp)))) => crate::dns::DnsServer::adopt(
                d.clone(),
                (tcp.try_clone()?, udp.try_clone()?),
                self.metrics.clone(),
            )?,
            _ => crate::dns::DnsServer::bind(d.clone(), self.metrics.clone())?,
        };
        Ok(Some(Some(next)))
    }
}

/// Reload requests (SIGHUP) and the config file they re-read. Relays are
/// matched by protocol and listen address: an unchanged relay runs on; a
/// changed one gets a successor on the same socket (nothing in the
/// kernel's queue is lost) while its open connections finish with the
/// settings they started with; a new one binds; a removed one stops
/// accepting and drains. `[admin]` and `[dns]` are replaced the same way;
/// `[log]` keeps the settings it started with.
pub struct Reload {
    /// The config file to read again.
    pub path: PathBuf,
    /// One message per reload request.
    pub requests: tokio::sync::mpsc::UnboundedReceiver<()>,
}

/// The relays being served.
struct Running {
    live: Vec<Live>,
    force: CancellationToken,
    tracker: TaskTracker,
    accept_loops: TaskTracker,
    /// The admin listener: its stop and its socket (for a successor).
    admin: Option<(CancellationToken, io::Result<std::net::TcpListener>)>,
    /// The DNS responder, likewise.
    dns: Option<(
        CancellationToken,
        io::Result<(std::net::TcpListener, std::net::UdpSocket)>,
    )>,
}

/// One serving relay.
struct Live {
    cfg: Arc<RelayConfig>,
    /// Stops its accepting (and starts its drain).
    stop: CancellationToken,
    /// Its socket, for a successor at a reload.
    socket: io::Result<Opened>,
    /// Its start-up line (`stone 3: host:80 <- 0.0.0.0:80`).
    line: String,
}

impl Running {
    /// Starts the admin listener; it stops with `life` or its successor.
    fn start_admin(&mut self, a: Admin, life: &CancellationToken) {
        if let Ok(addr) = a.local_addr() {
            tracing::info!("admin: /metrics, /livez, /readyz and /healthz on http://{addr}");
        }
        let stop = life.child_token();
        let socket = a.socket();
        // Not on the trackers: admin connections never hold up a drain.
        tokio::spawn(a.serve(stop.clone()));
        self.admin = Some((stop, socket));
    }

    /// Starts the DNS responder.
    fn start_dns(&mut self, d: crate::dns::DnsServer) {
        let stop = CancellationToken::new();
        let sockets = d.sockets();
        self.accept_loops.spawn(d.serve(stop.clone()));
        self.dns = Some((stop, sockets));
    }

    fn start(&mut self, cfg: Arc<RelayConfig>, bound: Bound) {
        let live = self.launch(cfg, bound);
        self.live.push(live);
    }

    /// Starts `bound` accepting; its connections go on the shared tracker.
    fn launch(&mut self, cfg: Arc<RelayConfig>, bound: Bound) -> Live {
        let stop = CancellationToken::new();
        let (id, local) = (bound.id(), show(bound.local_addr(), cfg.listen));
        let line = match &cfg.service {
            Service::Udp(upstream) => format!("stone {id}: {upstream}/udp <- {local}/udp"),
            _ => format!("stone {id}: {} <- {local}", cfg.destination_label()),
        };
        tracing::info!(relay = %cfg.name, "{line}");
        crate::observe::stats::add_mapping(line.clone());
        let socket = bound.socket();
        self.accept_loops.spawn(bound.serve(
            stop.clone(),
            self.force.clone(),
            self.tracker.clone(),
        ));
        Live {
            cfg,
            stop,
            socket,
            line,
        }
    }
}

fn show(actual: io::Result<SocketAddr>, configured: SocketAddr) -> SocketAddr {
    actual.unwrap_or(configured)
}
