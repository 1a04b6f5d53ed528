//! The tcp relay (stone's repeater): connect to the upstream, write the
//! PROXY header if configured, and splice the pair until both directions
//! end. [`relay_pair`] is also the tail of the forward proxy once it has
//! connected.

use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use super::{finish, Context};
use crate::config::Forward;
use crate::observe::access::{AccessRecord, CloseReason};
use crate::pump::copy::{self, Meter};

/// Serves one plain TCP connection (no TLS, unix socket or rewriting).
#[allow(clippy::too_many_arguments)]
pub(super) async fn serve(
    ctx: &Context,
    fwd: &Forward,
    client: TcpStream,
    peer: SocketAddr,
    mode: u32,
    meter: &Meter,
    record: AccessRecord<'_>,
    force: &CancellationToken,
) {
    let cfg = &ctx.cfg;
    let fd = client.as_raw_fd();
    let connected = tokio::select! {
        r = ctx.connector.connect(fwd) => r.map(|(s, a, _)| (s, a)).map_err(|why| {
            tracing::warn!(relay = %cfg.name, "{} TCP {fd}: connect failed: {why}", ctx.id);
            CloseReason::ConnectFailed
        }),
        _ = force.cancelled() => Err(CloseReason::Shutdown),
    };
    match connected {
        Ok((upstream, addr)) => {
            relay_pair(
                ctx, client, upstream, addr, peer, mode, meter, record, force,
            )
            .await
        }
        Err(reason) => finish(record, meter, reason),
    }
}

/// Sends the PROXY header and relays a connected pair until it ends, then
/// writes the access record.
#[allow(clippy::too_many_arguments)]
pub(super) async fn relay_pair(
    ctx: &Context,
    client: TcpStream,
    upstream: TcpStream,
    addr: SocketAddr,
    peer: SocketAddr,
    mode: u32,
    meter: &Meter,
    mut record: AccessRecord<'_>,
    force: &CancellationToken,
) {
    let cfg = &ctx.cfg;
    let fd = client.as_raw_fd();
    record.upstream = Some(addr);
    // getsockname only when a header will carry the address.
    let local = cfg
        .proxy_protocol
        .send
        .and_then(|_| client.local_addr().ok());
    if let Err(e) = ctx
        .connector
        .send_proxy_header(&upstream, peer, local)
        .await
    {
        tracing::warn!(relay = %cfg.name, "{} TCP {fd}: sending the PROXY header: {e}", ctx.id);
        return finish(record, meter, CloseReason::Reset);
    }
    let _ident = crate::connector::ident::register(&upstream, ctx.listen_port);
    crate::observe::stats::pair_opened();
    crate::sockopt::set_options(&upstream, cfg);
    tracing::debug!(relay = %cfg.name, "{} TCP {fd}: established to {} {addr}", ctx.id, upstream.as_raw_fd());
    let dump = (mode > 0).then(|| {
        let (c, u) = (client.as_raw_fd(), upstream.as_raw_fd());
        let d = |arrow: String| crate::pump::dump::Dump {
            mode,
            id: ctx.id,
            arrow,
        };
        (d(format!("{c}>{u}")), d(format!("{c}<{u}")))
    });
    let outcome = copy::relay(
        &client,
        &upstream,
        cfg.idle_timeout,
        force,
        meter,
        dump.as_ref(),
    )
    .await;
    if let Some(err) = &outcome.error {
        tracing::debug!(relay = %cfg.name, "{} TCP {fd}: {err}", ctx.id);
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
    drop(client);
    drop(upstream);
    crate::observe::stats::pair_closed();
    finish(record, meter, outcome.reason);
}
