//! Socket options a relay sets on its listening, accepted and upstream
//! sockets (TCP_NODELAY, keep-alive, inline urgent data), in one place so
//! that the listener and the connector set them the same way.

use tokio::net::{TcpListener, TcpStream};

use crate::config::{Keepalive, RelayConfig};

/// Every per-socket option of `cfg` on a connected stream.
pub fn set_options(stream: &TcpStream, cfg: &RelayConfig) {
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
pub fn set_listener_options(listener: &TcpListener, cfg: &RelayConfig) -> bool {
    let sock = socket2::SockRef::from(listener);
    cfg!(target_os = "linux")
        && sock.set_out_of_band_inline(true).is_ok()
        && (!cfg.nodelay || sock.set_nodelay(true).is_ok())
}

/// TCP keep-alive, when configured (not inherited from a listener).
pub fn set_keepalive(stream: &TcpStream, cfg: &RelayConfig) {
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
