//! Moving a TCP pair's bytes in both directions until both are done.
//!
//! Each direction is a pump: read from one socket, write to the other, and on
//! end-of-stream shut down the other socket's write side so half-close
//! passes through (a client that sends SHUT_WR still gets its whole reply).
//! An error in either direction ends the pair at once: the caller closes both
//! sockets with a reset. On Linux the pump uses splice(2) through a pipe;
//! elsewhere, or when splice refuses the socket, it copies through a buffer
//! that is only allocated once data has arrived.

use std::io;
use std::net::Shutdown;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::Interest;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::observe::access::CloseReason;

/// Size of the fallback copy buffer, allocated lazily per direction.
const BUF_SIZE: usize = 64 * 1024;

/// Byte counters and the last-activity clock of one pair. Shared by the two
/// pumps and the idle watchdog, which all run inside one task.
pub struct Meter {
    start: Instant,
    last_ms: AtomicU64,
    /// Bytes read from the client (downstream → upstream).
    pub from_client: AtomicU64,
    /// Bytes written to the client (upstream → downstream).
    pub to_client: AtomicU64,
}

impl Meter {
    /// A meter started now.
    pub fn new() -> Meter {
        Meter {
            start: Instant::now(),
            last_ms: AtomicU64::new(0),
            from_client: AtomicU64::new(0),
            to_client: AtomicU64::new(0),
        }
    }

    /// Time since the meter started.
    pub fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }

    /// Records activity now (restarts the idle clock).
    pub fn touch(&self) {
        let ms = self.start.elapsed().as_millis() as u64;
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    /// When bytes last moved (or the meter started).
    pub fn last_activity(&self) -> Instant {
        self.start + Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }
}

impl Default for Meter {
    fn default() -> Self {
        Meter::new()
    }
}

/// Which way bytes flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Client to upstream.
    Up,
    /// Upstream to client.
    Down,
}

/// How a pair ended, with the error when it was not clean.
#[derive(Debug)]
pub struct Outcome {
    /// The close reason for the access record.
    pub reason: CloseReason,
    /// The error that ended the pair, if any.
    pub error: Option<io::Error>,
    /// The direction that failed, and whether the other had already
    /// finished cleanly (then its receiver has everything and must not be
    /// reset).
    pub failed: Option<(Direction, bool)>,
}

/// Relays between `client` and `upstream` until both directions reach EOF,
/// either side fails, nothing moves for `idle`, or `force` is cancelled.
pub async fn relay(
    client: &TcpStream,
    upstream: &TcpStream,
    idle: Duration,
    force: &CancellationToken,
    meter: &Meter,
    dump: Option<(super::dump::Dump, super::dump::Dump)>,
) -> Outcome {
    // Resolving and connecting are not idleness; start the clock here.
    meter.touch();
    let (dump_up, dump_down) = match dump {
        Some((u, d)) => (Some(u), Some(d)),
        None => (None, None),
    };
    let up = pump(client, upstream, &meter.from_client, meter, dump_up);
    let down = pump(upstream, client, &meter.to_client, meter, dump_down);
    drive(up, down, idle, force, meter).await
}

/// Runs the two directions of a pair to completion, watching the idle
/// clock and the forced-stop token; shared by the splice path and the
/// stream path (TLS and rewriting stones).
pub(super) async fn drive(
    up: impl std::future::Future<Output = io::Result<()>>,
    down: impl std::future::Future<Output = io::Result<()>>,
    idle: Duration,
    force: &CancellationToken,
    meter: &Meter,
) -> Outcome {
    tokio::pin!(up, down);
    let (mut up_done, mut down_done) = (false, false);
    loop {
        let deadline = meter.last_activity() + idle;
        tokio::select! {
            r = &mut up, if !up_done => match r {
                Ok(()) => up_done = true,
                Err(e) => return Outcome { reason: CloseReason::Reset, error: Some(e), failed: Some((Direction::Up, down_done)) },
            },
            r = &mut down, if !down_done => match r {
                Ok(()) => down_done = true,
                Err(e) => return Outcome { reason: CloseReason::Reset, error: Some(e), failed: Some((Direction::Down, up_done)) },
            },
            _ = tokio::time::sleep_until(deadline) => {
                // Activity may have happened while we slept; re-arm if so.
                if meter.last_activity() + idle <= Instant::now() {
                    return Outcome { reason: CloseReason::IdleTimeout, error: None, failed: None };
                }
            }
            _ = force.cancelled() => {
                return Outcome { reason: CloseReason::Shutdown, error: None, failed: None };
            }
        }
        if up_done && down_done {
            return Outcome {
                reason: CloseReason::Eof,
                error: None,
                failed: None,
            };
        }
    }
}

/// One direction: `src` → `dst`, then shut down `dst`'s write side.
async fn pump(
    src: &TcpStream,
    dst: &TcpStream,
    count: &AtomicU64,
    meter: &Meter,
    dump: Option<super::dump::Dump>,
) -> io::Result<()> {
    if dump.is_some() {
        return buffered_pump(src, dst, count, meter, dump.as_ref()).await;
    }
    #[cfg(target_os = "linux")]
    match splice_pump(src, dst, count, meter).await {
        SpliceResult::Done(r) => return r,
        SpliceResult::Unsupported => {}
    }
    buffered_pump(src, dst, count, meter, None).await
}

fn shutdown_write(dst: &TcpStream) -> io::Result<()> {
    match socket2::SockRef::from(dst).shutdown(Shutdown::Write) {
        // The peer may already be gone; its own direction reports that.
        Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(()),
        other => other,
    }
}

#[cfg(target_os = "linux")]
enum SpliceResult {
    Done(io::Result<()>),
    /// splice cannot be used before any byte moved; fall back to copying.
    Unsupported,
}

#[cfg(target_os = "linux")]
async fn splice_pump(
    src: &TcpStream,
    dst: &TcpStream,
    count: &AtomicU64,
    meter: &Meter,
) -> SpliceResult {
    use super::splice::{Pipe, CHUNK};
    use std::os::fd::AsRawFd;

    let (src_fd, dst_fd) = (src.as_raw_fd(), dst.as_raw_fd());
    let mut pipe: Option<Pipe> = None;
    let mut moved_any = false;
    loop {
        // Give other connections a turn when both sockets stay ready.
        tokio::task::consume_budget().await;
        if let Err(e) = src.readable().await {
            return SpliceResult::Done(Err(e));
        }
        let p = match &pipe {
            Some(p) => p,
            None => match Pipe::new() {
                Ok(p) => pipe.insert(p),
                // Out of descriptors for a pipe: a buffer copy still works.
                Err(_) if !moved_any => return SpliceResult::Unsupported,
                Err(e) => return SpliceResult::Done(Err(e)),
            },
        };
        let n = match src.try_io(Interest::READABLE, || p.fill_from(src_fd, CHUNK)) {
            Ok(n) if n > 0 => n,
            // splice cannot read past TCP urgent data: at the mark it returns
            // 0 (if the peer also shut down) or EAGAIN although bytes wait.
            // recv() reads past it (SO_OOBINLINE keeps the byte in the stream),
            // and tells a real EOF from a stop at the mark.
            Ok(_) => match read_past_mark(src, dst, count, meter).await {
                Ok(true) => continue,
                Ok(false) => return SpliceResult::Done(shutdown_write(dst)),
                Err(e) => return SpliceResult::Done(Err(e)),
            },
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                match read_past_mark(src, dst, count, meter).await {
                    Ok(_) => continue,
                    Err(e) => return SpliceResult::Done(Err(e)),
                }
            }
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) && !moved_any => {
                return SpliceResult::Unsupported
            }
            Err(e) => return SpliceResult::Done(Err(e)),
        };
        moved_any = true;
        meter.touch();
        let mut left = n;
        while left > 0 {
            if let Err(e) = dst.writable().await {
                return SpliceResult::Done(Err(e));
            }
            match dst.try_io(Interest::WRITABLE, || p.drain_to(dst_fd, left)) {
                Ok(m) => {
                    left -= m;
                    count.fetch_add(m as u64, Ordering::Relaxed);
                    meter.touch();
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return SpliceResult::Done(Err(e)),
            }
        }
    }
}

/// One recv() into a small stack buffer, forwarded with write_all. Returns
/// Ok(false) at EOF, Ok(true) otherwise (including "nothing to read").
#[cfg(target_os = "linux")]
async fn read_past_mark(
    src: &TcpStream,
    dst: &TcpStream,
    count: &AtomicU64,
    meter: &Meter,
) -> io::Result<bool> {
    // On the heap: an inline array would sit in every pair's task state,
    // idle or not, for a path that runs only at urgent marks.
    let mut b = vec![0u8; 4096];
    match src.try_read(&mut b) {
        Ok(0) => Ok(false),
        Ok(n) => {
            meter.touch();
            write_all(dst, &b[..n], count, meter).await?;
            Ok(true)
        }
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(true),
        Err(e) => Err(e),
    }
}

async fn write_all(
    dst: &TcpStream,
    buf: &[u8],
    count: &AtomicU64,
    meter: &Meter,
) -> io::Result<()> {
    let mut off = 0;
    while off < buf.len() {
        dst.writable().await?;
        match dst.try_write(&buf[off..]) {
            Ok(m) => {
                off += m;
                count.fetch_add(m as u64, Ordering::Relaxed);
                meter.touch();
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

async fn buffered_pump(
    src: &TcpStream,
    dst: &TcpStream,
    count: &AtomicU64,
    meter: &Meter,
    dump: Option<&super::dump::Dump>,
) -> io::Result<()> {
    let mut buf: Option<Box<[u8]>> = None;
    loop {
        tokio::task::consume_budget().await;
        src.readable().await?;
        let b = buf.get_or_insert_with(|| vec![0u8; BUF_SIZE].into_boxed_slice());
        let n = match src.try_read(b) {
            Ok(0) => return shutdown_write(dst),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        };
        meter.touch();
        if let Some(d) = dump {
            d.log(&b[..n]);
        }
        write_all(dst, &b[..n], count, meter).await?;
    }
}
