//! `protocol = "tls"`: route and police TLS connections by the server name
//! in the ClientHello, without terminating TLS. The ClientHello is parsed
//! by rustls (it may arrive split across reads or span several records);
//! the bytes read are then replayed to the upstream unchanged and the rest
//! is spliced. Only the name is visible: requests inside the tunnel are
//! not (use `protocol = "http"` with `tls` for per-request policy).

use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;
use std::time::Instant;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use super::Context;
use crate::config::{Gateway, RelayConfig};
use crate::observe::metrics::Refused;
use crate::pump::copy::{self, Direction, Meter};
use crate::wire::client_hello;
use crate::wire::http_head::MAX_HEAD;

/// TLS alert descriptions sent on refusal (RFC 8446 6.2).
pub(crate) const ACCESS_DENIED: u8 = 49;
const UNRECOGNIZED_NAME: u8 = 112;
const DECODE_ERROR: u8 = 50;

/// Sends a fatal TLS alert and closes the write side; returns the bytes
/// written.
pub(crate) async fn alert(client: &mut TcpStream, description: u8) -> u64 {
    // A fatal alert in a TLS 1.2-versioned record, which every client
    // parses before the handshake has picked a version.
    let record = [0x15, 0x03, 0x03, 0x00, 0x02, 0x02, description];
    let sent = client
        .write_all(&record)
        .await
        .map_or(0, |_| record.len() as u64);
    let _ = client.shutdown().await;
    sent
}

/// What the ClientHello said, or why it could not be read.
pub(crate) enum Hello {
    Name(Option<String>),
    Closed,
    Bad(String),
}

/// Reads a ClientHello into `seen` (every byte read, for replaying), giving
/// up after `limit` or 64 KiB.
pub(crate) async fn read_hello(
    client: &mut TcpStream,
    seen: &mut Vec<u8>,
    limit: std::time::Duration,
) -> Hello {
    let mut acceptor = rustls::server::Acceptor::default();
    let deadline = tokio::time::Instant::now() + limit;
    let mut tmp = vec![0u8; 16 * 1024];
    loop {
        let n = match tokio::time::timeout_at(deadline, client.read(&mut tmp)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return Hello::Closed,
            Ok(Ok(n)) => n,
            Err(_) => return Hello::Bad("no ClientHello in time".into()),
        };
        seen.extend_from_slice(&tmp[..n]);
        if seen.len() > MAX_HEAD {
            return Hello::Bad("ClientHello over 64 KiB".into());
        }
        match client_hello::step(&mut acceptor, &tmp[..n]) {
            Ok(None) => continue,
            Ok(Some(name)) => return Hello::Name(name),
            Err(why) => return Hello::Bad(why),
        }
    }
}

/// Serves one passthrough connection; returns the upstream address it
/// reached, for the connection's record.
pub(super) async fn serve(
    ctx: &Context,
    gw: &Gateway,
    mut client: TcpStream,
    peer: SocketAddr,
    force: &CancellationToken,
    meter: &Meter,
) -> Option<SocketAddr> {
    let (cfg, id) = (&*ctx.cfg, ctx.id);
    let fd = client.as_raw_fd();
    let started = Instant::now();
    let mut seen = Vec::new();
    let name = match read_hello(&mut client, &mut seen, gw.head_timeout).await {
        Hello::Name(n) => n,
        Hello::Closed => return None,
        Hello::Bad(why) => {
            tracing::warn!(relay = %cfg.name, "{id} TCP {fd}: {peer}: {why}");
            let sent = alert(&mut client, DECODE_ERROR).await;
            meter.moved(Direction::Down, sent);
            record(cfg, peer, None, None, "bad-request", &why, started, meter);
            return None;
        }
    };
    meter.moved(Direction::Up, seen.len() as u64);
    let host = name.clone().unwrap_or_default();
    let target = match gw.target(&host, "/") {
        Some(t) => t,
        None => {
            let why = match &name {
                Some(n) => format!("no route for server name {n:?}"),
                None => "no server name (SNI) and no default_route".into(),
            };
            tracing::warn!(relay = %cfg.name, "{id} TCP {fd}: {peer}: {why}");
            let sent = alert(&mut client, UNRECOGNIZED_NAME).await;
            meter.moved(Direction::Down, sent);
            record(
                cfg,
                peer,
                name.as_deref(),
                None,
                "denied",
                &why,
                started,
                meter,
            );
            return None;
        }
    };
    // Passthrough sees no path: a bucket comes only from a virtual-hosted
    // name; the bare endpoint counts as a request without a bucket.
    let bucket = target.bucket;
    if let Err(why) = gw.check(bucket.as_deref(), peer.ip()) {
        tracing::warn!(relay = %cfg.name, "{id} TCP {fd}: {peer} {host}: {why}");
        let sent = alert(&mut client, ACCESS_DENIED).await;
        meter.moved(Direction::Down, sent);
        record(
            cfg,
            peer,
            name.as_deref(),
            bucket.as_deref(),
            "denied",
            &why,
            started,
            meter,
        );
        return None;
    }
    let (mut upstream, addr) = match ctx.connector.connect_one(target.upstream).await {
        Ok(pair) => pair,
        Err(why) => {
            tracing::warn!(relay = %cfg.name, "{id} TCP {fd}: connect to {} failed: {why}", target.upstream);
            record(
                cfg,
                peer,
                name.as_deref(),
                bucket.as_deref(),
                "allowed",
                &why,
                started,
                meter,
            );
            return None;
        }
    };
    let _ = upstream.set_nodelay(true);
    let _ = client.set_nodelay(true);
    if ctx
        .connector
        .send_proxy_header(&upstream, peer, client.local_addr().ok())
        .await
        .is_err()
    {
        return Some(addr);
    }
    if upstream.write_all(&seen).await.is_err() {
        return Some(addr);
    }
    tracing::debug!(relay = %cfg.name, "{id} TCP {fd}: {host} -> {addr}");
    let outcome = copy::relay(&client, &upstream, cfg.idle_timeout, force, meter, None).await;
    let why = outcome.error.map(|e| e.to_string()).unwrap_or_default();
    record_to(
        cfg,
        peer,
        name.as_deref(),
        bucket.as_deref(),
        Some(addr),
        "allowed",
        &why,
        started,
        meter,
    );
    Some(addr)
}

#[allow(clippy::too_many_arguments)]
fn record(
    cfg: &RelayConfig,
    peer: SocketAddr,
    name: Option<&str>,
    bucket: Option<&str>,
    decision: &str,
    reason: &str,
    started: Instant,
    meter: &Meter,
) {
    record_to(
        cfg, peer, name, bucket, None, decision, reason, started, meter,
    )
}

/// A connection's record, with the upstream it reached.
#[allow(clippy::too_many_arguments)]
fn record_to(
    cfg: &RelayConfig,
    peer: SocketAddr,
    name: Option<&str>,
    bucket: Option<&str>,
    upstream: Option<SocketAddr>,
    decision: &str,
    reason: &str,
    started: Instant,
    meter: &Meter,
) {
    if let Some(m) = meter.relay() {
        match decision {
            "allowed" => m.decided(true),
            "denied" => {
                m.decided(false);
                m.refused(Refused::Policy);
            }
            _ => {}
        }
    }
    let upstream = upstream.map_or_else(|| "-".to_string(), |a| a.to_string());
    tracing::info!(
        target: "ossrelay::access",
        event = "tls",
        relay = %cfg.name,
        client = %peer,
        host = name.unwrap_or("-"),
        bucket = bucket.unwrap_or("-"),
        upstream = %upstream,
        bytes_from_client = meter.from_client.load(Ordering::Relaxed),
        bytes_to_client = meter.to_client.load(Ordering::Relaxed),
        duration_ms = started.elapsed().as_secs_f64() * 1000.0,
        decision,
        reason,
        "{peer} TLS {} bucket={} {decision}",
        name.unwrap_or("-"),
        bucket.unwrap_or("-")
    );
}
