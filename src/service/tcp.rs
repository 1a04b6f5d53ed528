//! The tcp relay (stone's repeater): connect to the upstream, write the
//! PROXY header if configured, and splice the pair until both directions
//! end. The forward proxy ends the same way once it has connected.
//!
//! The pair is opened ([`open`]), pumped and closed ([`close`]) by the
//! caller, so that the pump's future sits directly in the connection's
//! task: each level of `async fn` between them would add its arguments to
//! every idle pair's memory.

use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::time::Duration;

use tokio::net::TcpStream;

use super::Context;
use crate::connector::ident::Registered;
use crate::observe::access::{AccessRecord, CloseReason};
use crate::pump::copy::{self, Outcome};
use crate::pump::dump::Dump;

/// A pair ready to pump: what must live as long as it does.
pub(super) struct Opened {
    /// The ident table entry of the upstream connection.
    _ident: Registered,
    /// stone's `-p` dumps, one per direction.
    pub(super) dump: Option<(Dump, Dump)>,
}

/// Sends the PROXY header and gets a connected pair ready to pump.
pub(super) async fn open(
    ctx: &Context,
    client: &TcpStream,
    upstream: &TcpStream,
    addr: SocketAddr,
    peer: SocketAddr,
    mode: u32,
) -> Result<Opened, CloseReason> {
    let cfg = &ctx.cfg;
    let fd = client.as_raw_fd();
    // getsockname only when a header will carry the address.
    let local = cfg
        .proxy_protocol
        .send
        .and_then(|_| client.local_addr().ok());
    if let Err(e) = ctx.connector.send_proxy_header(upstream, peer, local).await {
        tracing::warn!(relay = %cfg.name, "{} TCP {fd}: sending the PROXY header: {e}", ctx.id);
        return Err(CloseReason::Reset);
    }
    let ident = crate::connector::ident::register(upstream, ctx.listen_port);
    crate::observe::stats::pair_opened();
    crate::sockopt::set_options(upstream, cfg);
    tracing::debug!(relay = %cfg.name, "{} TCP {fd}: established to {} {addr}", ctx.id, upstream.as_raw_fd());
    let dump = (mode > 0).then(|| {
        let (c, u) = (client.as_raw_fd(), upstream.as_raw_fd());
        let d = |arrow: String| Dump {
            mode,
            id: ctx.id,
            arrow,
        };
        (d(format!("{c}>{u}")), d(format!("{c}<{u}")))
    });
    Ok(Opened {
        _ident: ident,
        dump,
    })
}

/// Closes a pumped pair: a failure on one side is passed to the other as
/// a reset, both sockets close, and the record gets the close reason.
pub(super) fn close(
    ctx: &Context,
    client: TcpStream,
    upstream: TcpStream,
    opened: Opened,
    outcome: Outcome,
    record: &mut AccessRecord<'_>,
) {
    if let Some(err) = &outcome.error {
        tracing::debug!(relay = %ctx.cfg.name, "{} TCP {}: {err}", ctx.id, client.as_raw_fd());
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
    drop(opened);
    crate::observe::stats::pair_closed();
    record.reason = outcome.reason;
}
