//! Services: what a relay does with each accepted connection, one module
//! per mode ([`crate::config::Service`]): the tcp relay ([`tcp`], and
//! [`wrapped`] when TLS, a unix destination or rewriting sits in the way),
//! the udp relay ([`udp`]), the http gateway ([`http`]), the sni gateway
//! ([`sni`]), the forward proxy ([`proxy`]), and stone's health and identd
//! ports ([`health`], [`identd`]).
//!
//! The listener hands each connection to [`serve`], which picks the mode
//! from the validated config. A service decides (policy), asks the
//! connector for an upstream, and hands the pair to the pump. It never
//! imports the listener; it records each connection or request on
//! `observe` as it ends.

pub mod health;
pub mod http;
pub mod identd;
pub mod proxy;
#[cfg(feature = "sftp")]
pub mod sftp;
pub mod sni;
mod tcp;
pub mod udp;
mod wrapped;

use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use crate::config::{Forward, Protocol, RelayConfig, Service};
use crate::connector::Connector;
use crate::observe::access::{AccessRecord, CloseReason};
use crate::observe::metrics::{Refused, RelayMetrics};
use crate::pump::copy::{self, Meter};
use crate::resolve::Resolve;
use crate::tls::HandshakeError;

/// What every connection of one TCP relay shares.
pub struct Context {
    /// The relay's validated settings.
    pub cfg: Arc<RelayConfig>,
    /// stone's relay number (the listening descriptor), in log lines.
    pub id: i32,
    /// The port the relay listens on (for ident answers).
    pub listen_port: u16,
    /// How the relay reaches its upstreams.
    pub connector: Arc<Connector>,
    /// Cancelled when the relay stops accepting and drains: services that
    /// keep idle connections (the http gateway) close them then.
    pub drain: CancellationToken,
    /// The relay's counters for `/metrics`.
    pub metrics: Arc<RelayMetrics>,
    /// An sftp relay's SSH settings and storage clients.
    #[cfg(feature = "sftp")]
    pub sftp: Option<sftp::Shared>,
}

impl Context {
    /// The shared state of relay `cfg`, bound as listener `id` on
    /// `listen_port`. Call once, when the relay is bound.
    pub fn new(
        cfg: Arc<RelayConfig>,
        resolver: Arc<dyn Resolve>,
        id: i32,
        listen_port: u16,
        metrics: Arc<RelayMetrics>,
    ) -> Context {
        if cfg.upstream_tls.as_ref().is_some_and(|t| t.spec.insecure) {
            tracing::warn!(relay = %cfg.name, "stone {id}: upstream TLS certificates are NOT verified (insecure = true / -q verify,none)");
        }
        if matches!(cfg.service, Service::Identd) {
            crate::connector::ident::enable();
        }
        #[cfg(feature = "sftp")]
        let sftp = match &cfg.service {
            Service::Sftp(s) => Some(sftp::Shared::new(s, resolver.clone(), cfg.idle_timeout)),
            _ => None,
        };
        Context {
            #[cfg(feature = "sftp")]
            sftp,
            connector: Arc::new(Connector::new(cfg.clone(), resolver).counting(metrics.clone())),
            cfg,
            id,
            listen_port,
            drain: CancellationToken::new(),
            metrics,
        }
    }

    /// Starts the relay's background work (the backup's health check),
    /// which runs until `stop`, and ties draining to `stop`.
    pub fn start(&self, stop: CancellationToken) {
        let drain = self.drain.clone();
        let stopped = stop.clone();
        tokio::spawn(async move {
            stopped.cancelled().await;
            drain.cancel();
        });
        if let Service::Tcp(Forward {
            backup: Some(b), ..
        }) = &self.cfg.service
        {
            let monitor = self.connector.clone().monitor(b.clone(), self.id, stop);
            tokio::spawn(monitor);
        }
    }
}

/// One accepted connection, as the listener hands it over: the ACL has
/// passed, and `peer` is the real client (from the PROXY header, behind a
/// load balancer).
pub struct Conn {
    /// The client's socket.
    pub stream: TcpStream,
    /// The client.
    pub peer: SocketAddr,
    /// stone's dump mode for this client (`-p`, or its xhost's `/mode`).
    pub mode: u32,
}

/// Serves one connection until it ends, then writes its access record.
/// `force` ends it early (the drain deadline).
pub async fn serve(ctx: &Context, conn: Conn, force: &CancellationToken) {
    let Conn {
        stream: client,
        peer,
        mode,
    } = conn;
    let cfg = &ctx.cfg;
    let meter = Meter::counting(Some(ctx.metrics.clone()));
    let mut record = AccessRecord {
        relay: &cfg.name,
        protocol: Protocol::Tcp,
        service: cfg.service.label(),
        listener_id: ctx.id,
        conn_id: client.as_raw_fd(),
        client: peer,
        upstream: None,
        bytes_from_client: 0,
        bytes_to_client: 0,
        duration: Duration::ZERO,
        reason: CloseReason::ConnectFailed,
    };
    // Rare modes run boxed: their state (read buffers and all) would
    // otherwise sit inline in every connection's task, idle or not.
    match &cfg.service {
        Service::Tcp(fwd) if wrapped::needed(cfg, fwd) => {
            Box::pin(wrapped::handle(
                ctx, fwd, client, peer, &meter, record, force,
            ))
            .await;
            return;
        }
        Service::Tcp(fwd) => {
            // The plain pair, the common case, runs inline: see `tcp`.
            let fd = record.conn_id;
            let connected = tokio::select! {
                r = ctx.connector.connect(fwd) => r.map_err(|why| {
                    tracing::warn!(relay = %cfg.name, "{} TCP {fd}: connect failed: {why}", ctx.id);
                    CloseReason::ConnectFailed
                }),
                _ = force.cancelled() => Err(CloseReason::Shutdown),
            };
            let (upstream, addr, _) = match connected {
                Ok(c) => c,
                Err(reason) => return finish(record, &meter, reason),
            };
            record.upstream = Some(addr);
            let opened = match tcp::open(ctx, &client, &upstream, addr, peer, mode).await {
                Ok(o) => o,
                Err(reason) => return finish(record, &meter, reason),
            };
            let idle = cfg.idle_timeout;
            let dump = opened.dump.as_ref();
            let outcome = copy::relay(&client, &upstream, idle, force, &meter, dump).await;
            tcp::close(ctx, client, upstream, opened, outcome, &mut record);
            let reason = record.reason;
            return finish(record, &meter, reason);
        }
        Service::Proxy(policy) => {
            Box::pin(proxy::serve(
                ctx, policy, client, peer, mode, &meter, record, force,
            ))
            .await;
            return;
        }
        Service::Health(h) => {
            Box::pin(health::serve(
                client,
                &crate::observe::stats::mappings(),
                &h.config,
                h.debug,
            ))
            .await;
        }
        Service::Identd => Box::pin(identd::serve(client, peer.ip())).await,
        Service::Http(gw) => {
            let (upstream, reason) =
                Box::pin(http::serve(ctx, gw, client, peer, force, &meter)).await;
            record.upstream = upstream;
            return finish(record, &meter, reason);
        }
        Service::Sni(gw) => {
            record.upstream = Box::pin(sni::serve(ctx, gw, client, peer, force, &meter)).await;
        }
        #[cfg(feature = "sftp")]
        Service::Sftp(_) => {
            let Some(shared) = &ctx.sftp else {
                return finish(record, &meter, CloseReason::ConnectFailed);
            };
            let reason = Box::pin(sftp::serve(ctx, shared, client, peer, force)).await;
            return finish(record, &meter, reason);
        }
        Service::Udp(_) => {
            // The listener binds UDP relays to the udp service; a TCP
            // connection cannot reach one.
            tracing::error!(relay = %cfg.name, "stone {}: a TCP connection reached a udp relay", ctx.id);
        }
    }
    finish(record, &meter, CloseReason::Eof);
}

/// Logs a client's failed TLS handshake, in the same words for every
/// service that terminates TLS.
fn log_client_handshake(cfg: &RelayConfig, id: i32, fd: i32, peer: SocketAddr, e: HandshakeError) {
    match e {
        HandshakeError::TimedOut => {
            tracing::warn!(relay = %cfg.name, "{id} TCP {fd}: TLS handshake with {peer} timed out")
        }
        HandshakeError::Failed(e) => {
            tracing::warn!(relay = %cfg.name, "{id} TCP {fd}: TLS handshake with {peer} failed: {e}")
        }
        HandshakeError::Name(e) => {
            tracing::warn!(relay = %cfg.name, "{id} TCP {fd}: TLS handshake with {peer} failed: {e}")
        }
    }
}

/// Completes a connection's access record from its meter and writes it.
fn finish(mut record: AccessRecord<'_>, meter: &Meter, reason: CloseReason) {
    use std::sync::atomic::Ordering::Relaxed;
    if let Some(m) = meter.relay() {
        match reason {
            CloseReason::TlsFailed => m.refused(Refused::Tls),
            // Only the forward proxy ends a connection for its policy; the
            // gateways count each request or server name as they decide.
            CloseReason::RefusedDestination => {
                m.decided(false);
                m.refused(Refused::Policy);
            }
            _ if matches!(record.service, "proxy") && record.upstream.is_some() => m.decided(true),
            _ => {}
        }
    }
    record.reason = reason;
    record.bytes_from_client = meter.from_client.load(Relaxed);
    record.bytes_to_client = meter.to_client.load(Relaxed);
    record.duration = meter.elapsed();
    record.emit();
}
