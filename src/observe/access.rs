//! One access record per connection (TCP) or session (UDP), written when it
//! ends. The record is a `tracing` event on the `ossrelay::access` target so
//! that the text and JSON formats, and the file/stderr choice, apply to it.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use crate::config::Protocol;

/// Why a connection or session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// Both sides finished normally (FIN both ways).
    Eof,
    /// One side reset or failed; the other was closed promptly.
    Reset,
    /// No bytes moved in either direction for the idle timeout.
    IdleTimeout,
    /// The client matched a deny rule (or no allow rule).
    RefusedAcl,
    /// The relay was at its connection limit.
    RefusedLimit,
    /// No upstream address accepted the connection in time.
    ConnectFailed,
    /// The drain deadline after a stop signal passed.
    Shutdown,
    /// UDP only: the session was the least recently used when the limit was hit.
    Evicted,
    /// Proxy: the request head was malformed, too large or too slow.
    BadRequest,
    /// Proxy: the destination is not in the allowed list.
    RefusedDestination,
    /// A TLS handshake (with the client or the upstream) failed.
    TlsFailed,
}

impl CloseReason {
    /// The stable name used in logs.
    pub fn as_str(self) -> &'static str {
        match self {
            CloseReason::Eof => "eof",
            CloseReason::Reset => "reset",
            CloseReason::IdleTimeout => "idle-timeout",
            CloseReason::RefusedAcl => "refused-acl",
            CloseReason::RefusedLimit => "refused-limit",
            CloseReason::ConnectFailed => "connect-failed",
            CloseReason::Shutdown => "shutdown",
            CloseReason::Evicted => "evicted",
            CloseReason::BadRequest => "bad-request",
            CloseReason::RefusedDestination => "refused-destination",
            CloseReason::TlsFailed => "tls-failed",
        }
    }
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Everything known about a finished connection.
#[derive(Debug, Clone)]
pub struct AccessRecord<'a> {
    /// Relay name from the config.
    pub relay: &'a str,
    /// tcp or udp: the transport, in stone's close line.
    pub protocol: Protocol,
    /// The relay's mode (`tcp`, `udp`, `http`, `tls`, `proxy`, ...): the
    /// record's `protocol` field.
    pub service: &'static str,
    /// stone's relay number: the listening socket's descriptor.
    pub listener_id: i32,
    /// stone's connection number: the accepted socket's descriptor (TCP), 0 for UDP.
    pub conn_id: i32,
    /// Downstream peer.
    pub client: SocketAddr,
    /// The upstream address actually used, if one was connected.
    pub upstream: Option<SocketAddr>,
    /// Bytes received from the client.
    pub bytes_from_client: u64,
    /// Bytes sent to the client.
    pub bytes_to_client: u64,
    /// Time since accept.
    pub duration: Duration,
    /// Why it ended.
    pub reason: CloseReason,
}

impl AccessRecord<'_> {
    /// Writes the record. The message is stone's close line
    /// (`3 TCP 5: close tx:11 rx:11`) so text logs read like stone's.
    pub fn emit(&self) {
        let proto = match self.protocol {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
        };
        // Formatted only if the record is written: no String per
        // connection when access records are filtered out.
        let upstream = Upstream(self.upstream);
        tracing::info!(
            target: "ossrelay::access",
            event = "access",
            relay = self.relay,
            protocol = self.service,
            client = %self.client,
            upstream = %upstream,
            bytes_from_client = self.bytes_from_client,
            bytes_to_client = self.bytes_to_client,
            duration_ms = self.duration.as_secs_f64() * 1000.0,
            reason = self.reason.as_str(),
            "{} {} {}: close tx:{} rx:{}",
            self.listener_id,
            proto,
            self.conn_id,
            self.bytes_to_client,
            self.bytes_from_client,
        );
    }
}

/// An upstream address, or `-` before one was reached.
struct Upstream(Option<SocketAddr>);

impl std::fmt::Display for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(a) => a.fmt(f),
            None => f.write_str("-"),
        }
    }
}
