//! TCP pairs that cannot be spliced socket to socket: TLS on either side,
//! or a unix-domain destination. Handshake with the client first (a
//! client that fails it never costs an upstream connection), then connect
//! and handshake with the upstream, then relay the decrypted streams.

use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{finish, Context};
use crate::config::{Forward, RelayConfig};
use crate::observe::access::{AccessRecord, CloseReason};
use crate::pump::copy::{Direction, Meter};
use crate::pump::rewrite::{HeadEnd, InsertHeader, NotifyWrite, SkipHead};
use crate::pump::stream::{self, Io, Reader, Writer};
use crate::tls::HandshakeError;

/// How long a client may take over its TLS handshake or `/http` head.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);
/// The longest `/http` request head accepted from a client.
const MAX_HEAD: usize = 64 * 1024;

/// Whether a tcp relay's pairs need this path instead of the splice.
pub(super) fn needed(cfg: &RelayConfig, fwd: &Forward) -> bool {
    cfg.tls.is_some() || cfg.upstream_tls.is_some() || fwd.unix.is_some() || fwd.rewrite.is_some()
}

pub(super) async fn handle(
    ctx: &Context,
    fwd: &Forward,
    client: TcpStream,
    peer: SocketAddr,
    meter: &Meter,
    mut record: AccessRecord<'_>,
    force: &CancellationToken,
) {
    let result = tokio::select! {
        r = pair(ctx, fwd, client, peer, meter, &mut record, force) => r,
        _ = force.cancelled() => Err(CloseReason::Shutdown),
    };
    let reason = match result {
        Ok(reason) => reason,
        Err(reason) => reason,
    };
    finish(record, meter, reason);
}

async fn pair(
    ctx: &Context,
    fwd: &Forward,
    client: TcpStream,
    peer: SocketAddr,
    meter: &Meter,
    record: &mut AccessRecord<'_>,
    force: &CancellationToken,
) -> Result<CloseReason, CloseReason> {
    let cfg = &ctx.cfg;
    let (id, fd) = (ctx.id, client.as_raw_fd());
    let ends = Ends {
        peer,
        local: client.local_addr().ok(),
        fd,
    };
    let mut client: Io = match &cfg.tls {
        None => Box::new(client),
        Some(tls) => match tls.accept_within(client, HANDSHAKE_TIMEOUT).await {
            Ok(s) => Box::new(s),
            Err(e) => {
                super::log_client_handshake(cfg, id, fd, peer, e);
                return Err(CloseReason::TlsFailed);
            }
        },
    };
    // `<sport>/http`: the client's request head is dropped before anything
    // is relayed; what follows it goes upstream.
    let early = match fwd.rewrite.as_ref().filter(|r| r.http_accept) {
        None => Vec::new(),
        Some(_) => {
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, skip_request_head(&mut client)).await {
                Ok(Ok(rest)) => rest,
                Ok(Err(e)) => {
                    tracing::warn!(relay = %cfg.name, "{id} TCP {fd}: HTTP request head from {peer}: {e}");
                    return Err(CloseReason::BadRequest);
                }
                Err(_) => {
                    tracing::warn!(relay = %cfg.name, "{id} TCP {fd}: no HTTP request head from {peer} in time");
                    return Err(CloseReason::BadRequest);
                }
            }
        }
    };
    let (client, ends) = (Accepted { io: client, early }, ends);
    if let Some(path) = &fwd.unix {
        let upstream = ctx.connector.connect_unix(path).await.map_err(|e| {
            tracing::warn!(relay = %cfg.name, "{id} TCP {fd}: connect to {} failed: {e}", path.display());
            CloseReason::ConnectFailed
        })?;
        tracing::debug!(relay = %cfg.name, "{id} TCP {fd}: established to {} {}", upstream.as_raw_fd(), path.display());
        return relay(ctx, fwd, client, ends, Box::new(upstream), meter, force).await;
    }
    let (upstream, addr, host) = ctx.connector.connect(fwd).await.map_err(|why| {
        tracing::warn!(relay = %cfg.name, "{id} TCP {fd}: connect failed: {why}");
        CloseReason::ConnectFailed
    })?;
    record.upstream = Some(addr);
    crate::sockopt::set_options(&upstream, cfg);
    ctx.connector
        .send_proxy_header(&upstream, ends.peer, ends.local)
        .await
        .map_err(|e| {
            tracing::warn!(relay = %cfg.name, "{id} TCP {fd}: sending the PROXY header: {e}");
            CloseReason::Reset
        })?;
    let _ident = crate::connector::ident::register(&upstream, ctx.listen_port);
    let ufd = upstream.as_raw_fd();
    let upstream: Io = match &cfg.upstream_tls {
        None => Box::new(upstream),
        Some(tls) => match ctx.connector.handshake(tls, &host, upstream).await {
            Ok(s) => Box::new(s),
            Err(e) => {
                match e {
                    HandshakeError::Name(e) => {
                        tracing::warn!(relay = %cfg.name, "{id} TCP {fd}: TLS to {addr}: {e}")
                    }
                    HandshakeError::Failed(e) => {
                        tracing::warn!(relay = %cfg.name, "{id} TCP {fd}: TLS handshake with upstream {addr} failed: {e}")
                    }
                    HandshakeError::TimedOut => {
                        tracing::warn!(relay = %cfg.name, "{id} TCP {fd}: TLS handshake with upstream {addr} timed out")
                    }
                }
                return Err(CloseReason::TlsFailed);
            }
        },
    };
    tracing::debug!(relay = %cfg.name, "{id} TCP {fd}: established to {ufd} {addr}");
    relay(ctx, fwd, client, ends, upstream, meter, force).await
}

/// The client's address and the local address it reached, for `\a \A \d \D`.
struct Ends {
    peer: SocketAddr,
    local: Option<SocketAddr>,
    /// The client's descriptor, in log lines.
    fd: i32,
}

/// The client stream, and bytes read past a `/http` request head.
struct Accepted {
    io: Io,
    early: Vec<u8>,
}

/// Reads and drops the client's request head; returns what came after it.
async fn skip_request_head(client: &mut Io) -> std::io::Result<Vec<u8>> {
    let mut head = HeadEnd::default();
    let mut buf = vec![0u8; 4096];
    let mut seen = 0usize;
    loop {
        let n = client.read(&mut buf).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        if let Some(end) = head.feed(&buf[..n]) {
            return Ok(buf[end..n].to_vec());
        }
        seen += n;
        if seen > MAX_HEAD {
            return Err(std::io::Error::other("request head over 64 KiB"));
        }
    }
}

async fn relay(
    ctx: &Context,
    fwd: &Forward,
    client: Accepted,
    ends: Ends,
    upstream: Io,
    meter: &Meter,
    force: &CancellationToken,
) -> Result<CloseReason, CloseReason> {
    let cfg = &ctx.cfg;
    let (cr, cw) = tokio::io::split(client.io);
    let (ur, uw) = tokio::io::split(upstream);
    let (mut cr, mut cw) = (Reader::boxed(cr), Writer::boxed(cw));
    let (mut ur, mut uw) = (Reader::boxed(ur), Writer::boxed(uw));
    if let Some(rw) = &fwd.rewrite {
        let mut first = Vec::new();
        if let Some(req) = &rw.http_request {
            first = req.expand(ends.peer, ends.local);
            first.extend_from_slice(b"\r\n\r\n");
            ur = Reader::boxed(SkipHead::new(ur));
        }
        if rw.http_accept {
            let ok = cw.write_all(b"HTTP/1.0 200 OK\r\n\r\n").await;
            ok.and(cw.flush().await).map_err(|_| CloseReason::Reset)?;
        }
        first.extend_from_slice(&client.early);
        meter.moved(Direction::Up, client.early.len() as u64);
        if !first.is_empty() {
            uw.write_all(&first).await.map_err(|_| CloseReason::Reset)?;
        }
        if let Some(h) = &rw.header {
            let flag = rw.header_every.then(|| Arc::new(AtomicBool::new(false)));
            if let Some(f) = &flag {
                cw = Writer::boxed(NotifyWrite::new(cw, f.clone()));
            }
            cr = Reader::boxed(InsertHeader::new(cr, h.expand(ends.peer, ends.local), flag));
        }
    }
    crate::observe::stats::pair_opened();
    let outcome = stream::relay_halves((cr, cw), (ur, uw), cfg.idle_timeout, force, meter).await;
    crate::observe::stats::pair_closed();
    if let Some(err) = &outcome.error {
        tracing::debug!(relay = %cfg.name, "{} TCP {}: {err}", ctx.id, ends.fd);
    }
    Ok(outcome.reason)
}
