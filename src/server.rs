//! The server: binds every relay (through the listener layer) and the DNS
//! responder, runs them, and drains on shutdown.
//!
//! Binding is separate from serving so that every listen error is reported
//! before anything starts, and so tests can bind port 0 and read back the
//! real address.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
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
    drain_timeout: Duration,
    drain_grace: Duration,
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
            drain_timeout: config.drain_timeout,
            drain_grace: config.drain_grace,
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
        let admin_stop = CancellationToken::new();
        // Not tracked with the relays: admin connections never hold up a
        // drain, and the admin listener answers until the process exits.
        let _admin_stop = admin_stop.clone().drop_guard();
        if let Some(a) = self.admin {
            if let Ok(addr) = a.local_addr() {
                tracing::info!("admin: /metrics, /livez, /readyz and /healthz on http://{addr}");
            }
            tokio::spawn(a.serve(admin_stop.clone()));
        }
        let stop = CancellationToken::new();
        let force = CancellationToken::new();
        let tracker = TaskTracker::new();
        let accept_loops = TaskTracker::new();
        crate::observe::stats::set_relays(self.relays.len());
        for (cfg, bound) in self.relays {
            let (stop, force, conns) = (stop.clone(), force.clone(), tracker.clone());
            let (id, local) = (bound.id(), show(bound.local_addr(), cfg.listen));
            let line = match &cfg.service {
                Service::Udp(upstream) => format!("stone {id}: {upstream}/udp <- {local}/udp"),
                _ => format!("stone {id}: {} <- {local}", cfg.destination_label()),
            };
            tracing::info!(relay = %cfg.name, "{line}");
            crate::observe::stats::add_mapping(line);
            accept_loops.spawn(bound.serve(stop, force, conns));
        }
        if let Some(d) = self.dns {
            accept_loops.spawn(d.serve(stop.clone()));
        }
        accept_loops.close();
        self.metrics.set_serving();
        crate::notify::ready();
        crate::notify::watchdog(admin_stop.clone());
        shutdown.await;
        self.metrics.set_draining();
        crate::notify::stopping();
        if !self.drain_grace.is_zero() {
            tracing::info!(
                "draining: /readyz answers 503; still accepting for {:?} (drain_grace)",
                self.drain_grace
            );
            tokio::time::sleep(self.drain_grace).await;
        }
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
