//! TCP pairs with TLS on either side: handshake with the client first (a
//! client that fails it never costs an upstream connection), then connect
//! and handshake with the upstream, then relay the decrypted streams.

use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use super::copy::Meter;
use super::stream::{self, Io};
use super::tcp::{connect, Shared};
use crate::observe::access::{AccessRecord, CloseReason};

/// How long a client may take over its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);

pub(super) async fn handle(
    shared: &Shared,
    client: TcpStream,
    peer: SocketAddr,
    meter: &Meter,
    mut record: AccessRecord<'_>,
    force: &CancellationToken,
) {
    let result = tokio::select! {
        r = pair(shared, client, peer, meter, &mut record, force) => r,
        _ = force.cancelled() => Err(CloseReason::Shutdown),
    };
    if let Err(reason) = result {
        record.reason = reason;
    }
    record.bytes_from_client = meter.from_client.load(Ordering::Relaxed);
    record.bytes_to_client = meter.to_client.load(Ordering::Relaxed);
    record.duration = meter.elapsed();
    record.emit();
}

async fn pair(
    shared: &Shared,
    client: TcpStream,
    peer: SocketAddr,
    meter: &Meter,
    record: &mut AccessRecord<'_>,
    force: &CancellationToken,
) -> Result<(), CloseReason> {
    let cfg = &shared.cfg;
    let (id, fd) = (shared.id, client.as_raw_fd());
    let client: Io = match &cfg.tls {
        None => Box::new(client),
        Some(tls) => {
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.acceptor.accept(client)).await {
                Ok(Ok(s)) => Box::new(s),
                Ok(Err(e)) => {
                    tracing::warn!(relay = %cfg.name, "{id} TCP {fd}: TLS handshake with {peer} failed: {e}");
                    return Err(CloseReason::TlsFailed);
                }
                Err(_) => {
                    tracing::warn!(relay = %cfg.name, "{id} TCP {fd}: TLS handshake with {peer} timed out");
                    return Err(CloseReason::TlsFailed);
                }
            }
        }
    };
    let (upstream, addr, host) = connect(shared).await.map_err(|why| {
        tracing::warn!(relay = %cfg.name, "{id} TCP {fd}: connect failed: {why}");
        CloseReason::ConnectFailed
    })?;
    record.upstream = Some(addr);
    super::tcp::set_options(&upstream, cfg);
    let ufd = upstream.as_raw_fd();
    let upstream: Io = match &cfg.upstream_tls {
        None => Box::new(upstream),
        Some(tls) => {
            let name = tls.name_for(&host).map_err(|e| {
                tracing::warn!(relay = %cfg.name, "{id} TCP {fd}: TLS to {addr}: {e}");
                CloseReason::TlsFailed
            })?;
            match tokio::time::timeout(cfg.connect_timeout, tls.connector.connect(name, upstream))
                .await
            {
                Ok(Ok(s)) => Box::new(s),
                Ok(Err(e)) => {
                    tracing::warn!(relay = %cfg.name, "{id} TCP {fd}: TLS handshake with upstream {addr} failed: {e}");
                    return Err(CloseReason::TlsFailed);
                }
                Err(_) => {
                    tracing::warn!(relay = %cfg.name, "{id} TCP {fd}: TLS handshake with upstream {addr} timed out");
                    return Err(CloseReason::TlsFailed);
                }
            }
        }
    };
    crate::observe::stats::pair_opened();
    tracing::debug!(relay = %cfg.name, "{id} TCP {fd}: established to {ufd} {addr}");
    let outcome = stream::relay(client, upstream, cfg.idle_timeout, force, meter).await;
    crate::observe::stats::pair_closed();
    if let Some(err) = &outcome.error {
        tracing::debug!(relay = %cfg.name, "{id} TCP {fd}: {err}");
    }
    record.reason = outcome.reason;
    Ok(())
}
