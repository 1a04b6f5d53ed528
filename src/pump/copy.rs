//! Moving a TCP pair's bytes in both directions until both are done.
//!
//! Each direction is a pump: read from one socket, write to the other, and on
//! end-of-stream shut down the other socket's write side so half-close
//! passes through (a client that sends SHUT_WR still gets its whole reply).
//! An error in either direction ends the pair at once: the caller closes both
//! sockets with a reset.
//!
//! A pump starts by copying through a pooled 16 KiB buffer, which is cheapest
//! for requests and replies of a few KiB. A read that fills the buffer means
//! the sender is streaming: on Linux the pump then moves bytes with splice(2)
//! through a pipe, never copying them into user space, and goes back to
//! copying when a splice moves less than a page. Idle pairs hold neither
//! buffer nor pipe memory.

use std::io;
use std::net::Shutdown;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::Interest;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::observe::access::CloseReason;
use crate::observe::metrics::RelayMetrics;

/// A splice that moves less than this means the flow has gone back to
/// small messages, which copying handles with fewer kernel round trips.
#[cfg(target_os = "linux")]
const BACK_TO_COPY: usize = 4096;

/// Byte counters and the last-activity clock of one pair. Shared by the two
/// pumps and the idle watchdog, which all run inside one task.
pub struct Meter {
    start: Instant,
    last_ms: AtomicU64,
    /// Bytes read from the client (downstream → upstream).
    pub from_client: AtomicU64,
    /// Bytes written to the client (upstream → downstream).
    pub to_client: AtomicU64,
    /// The relay's totals, which [`Meter::moved`] bumps as bytes move (so
    /// a long transfer shows in the metrics while it runs).
    relay: Option<Arc<RelayMetrics>>,
}

impl Meter {
    /// A meter started now, counting for no relay.
    pub fn new() -> Meter {
        Meter::counting(None)
    }

    /// A meter started now that also counts into `relay`'s totals.
    pub fn counting(relay: Option<Arc<RelayMetrics>>) -> Meter {
        Meter {
            start: Instant::now(),
            last_ms: AtomicU64::new(0),
            from_client: AtomicU64::new(0),
            to_client: AtomicU64::new(0),
            relay,
        }
    }

    /// `n` bytes moved `dir`: the pair's counter and the relay's.
    #[inline]
    pub fn moved(&self, dir: Direction, n: u64) {
        match dir {
            Direction::Up => self.from_client.fetch_add(n, Ordering::Relaxed),
            Direction::Down => self.to_client.fetch_add(n, Ordering::Relaxed),
        };
        self.relay_moved(dir, n);
    }

    /// The relay's counters this meter adds to, if any.
    pub fn relay(&self) -> Option<&RelayMetrics> {
        self.relay.as_deref()
    }

    /// `n` bytes moved `dir`, for the relay's totals only: for callers
    /// that keep the pair's count themselves (the http gateway counts per
    /// request).
    #[inline]
    pub fn relay_moved(&self, dir: Direction, n: u64) {
        if let Some(r) = &self.relay {
            match dir {
                Direction::Up => r.from_client(n),
                Direction::Down => r.to_client(n),
            }
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
    dump: Option<&(super::dump::Dump, super::dump::Dump)>,
) -> Outcome {
    // Resolving and connecting are not idleness; start the clock here.
    meter.touch();
    let (dump_up, dump_down) = match dump {
        Some((u, d)) => (Some(u), Some(d)),
        None => (None, None),
    };
    // Pinned where they are made: moving them into `drive` would keep a
    // second, dead copy of each in this future's state, for every pair.
    let up = std::pin::pin!(pump(client, upstream, Direction::Up, meter, dump_up));
    let down = std::pin::pin!(pump(upstream, client, Direction::Down, meter, dump_down));
    drive(up, down, idle, force, meter).await
}

/// Runs the two directions of a pair to completion, watching the idle
/// clock and the forced-stop token; shared by the splice path and the
/// stream path (TLS and rewriting stones).
pub(super) async fn drive(
    mut up: std::pin::Pin<&mut impl std::future::Future<Output = io::Result<()>>>,
    mut down: std::pin::Pin<&mut impl std::future::Future<Output = io::Result<()>>>,
    idle: Duration,
    force: &CancellationToken,
    meter: &Meter,
) -> Outcome {
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
    dir: Direction,
    meter: &Meter,
    dump: Option<&super::dump::Dump>,
) -> io::Result<()> {
    #[cfg(target_os = "linux")]
    let mut splicer = Splicer {
        pipe: None,
        // The dump shows the bytes, so they must pass through user space.
        usable: dump.is_none(),
        active: false,
    };
    loop {
        // Give other connections a turn when both sockets stay ready.
        tokio::task::consume_budget().await;
        read_ready(src).await?;
        #[allow(unused_mut)]
        let mut urgent = false;
        #[cfg(target_os = "linux")]
        if splicer.active {
            match splicer.step(src, dst, dir, meter).await? {
                Step::Moved => continue,
                Step::Read => {}
                Step::ReadPastMark => urgent = true,
            }
        }
        let mut buf = super::pool::Buf::take();
        let read = if urgent {
            // Readiness was used up by the splice that stopped at the mark;
            // read past it directly, or no new readiness would ever come.
            use std::io::Read;
            (&*socket2::SockRef::from(src)).read(&mut buf)
        } else {
            src.try_read(&mut buf)
        };
        let n = match read {
            Ok(0) => return shutdown_write(dst),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        };
        meter.touch();
        if let Some(d) = dump {
            d.log(&buf[..n]);
        }
        write_all(dst, &buf[..n], dir, meter).await?;
        #[cfg(target_os = "linux")]
        if n == buf.len() && splicer.usable {
            splicer.active = true;
        }
    }
}

/// Waits until `s` may be readable. Unlike `readable()`, this keeps no
/// waiter in the future: the waker sits in the socket's single reader slot
/// (each socket has one reading pump), so a parked pair's task state stays
/// small and waiting takes no list insert and removal.
async fn read_ready(s: &TcpStream) -> io::Result<()> {
    std::future::poll_fn(|cx| s.poll_read_ready(cx)).await
}

/// The writing counterpart of [`read_ready`] (each socket has one writer).
async fn write_ready(s: &TcpStream) -> io::Result<()> {
    std::future::poll_fn(|cx| s.poll_write_ready(cx)).await
}

fn shutdown_write(dst: &TcpStream) -> io::Result<()> {
    match socket2::SockRef::from(dst).shutdown(Shutdown::Write) {
        // The peer may already be gone; its own direction reports that.
        Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(()),
        other => other,
    }
}

/// One direction's splice state. The pipe is created the first time the
/// direction streams and kept for the life of the pair.
#[cfg(target_os = "linux")]
struct Splicer {
    pipe: Option<super::splice::Pipe>,
    /// False once splice refused these sockets (or for dumped pairs).
    usable: bool,
    /// Streaming: the next read is a splice.
    active: bool,
}

#[cfg(target_os = "linux")]
impl Splicer {
    /// One splice from `src` through the pipe into `dst`, or what the
    /// caller should do instead: recv() at end of stream (recv tells a real
    /// EOF from a stop) and when splicing is not possible, and recv() past a
    /// TCP urgent mark (splice cannot read past one; recv can, and
    /// SO_OOBINLINE keeps the byte in the stream).
    async fn step(
        &mut self,
        src: &TcpStream,
        dst: &TcpStream,
        dir: Direction,
        meter: &Meter,
    ) -> io::Result<Step> {
        use super::splice::{Pipe, CHUNK, MIN_USEFUL};
        use std::os::fd::AsRawFd;

        let p = match &self.pipe {
            Some(p) => p,
            None => match Pipe::new() {
                Ok(p) if p.capacity() >= MIN_USEFUL => self.pipe.insert(p),
                // Out of descriptors for a pipe, or only a tiny one: a
                // buffer copy works, and better.
                _ => return Ok(self.give_up()),
            },
        };
        let (src_fd, dst_fd) = (src.as_raw_fd(), dst.as_raw_fd());
        let n = match src.try_io(Interest::READABLE, || p.fill_from(src_fd, CHUNK)) {
            Ok(0) => return Ok(self.pause()),
            Ok(n) => n,
            // Nothing to read, or stopped at an urgent mark with bytes
            // waiting; in the second case no new readiness will come.
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if at_urgent_mark(src_fd) {
                    self.pause();
                    return Ok(Step::ReadPastMark);
                }
                return Ok(Step::Moved);
            }
            // The pipe is always empty here, so nothing is lost by copying.
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => return Ok(self.give_up()),
            Err(e) => return Err(e),
        };
        meter.touch();
        let mut left = n;
        while left > 0 {
            write_ready(dst).await?;
            match dst.try_io(Interest::WRITABLE, || p.drain_to(dst_fd, left)) {
                Ok(m) => {
                    left -= m;
                    meter.moved(dir, m as u64);
                    meter.touch();
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
        }
        if n < BACK_TO_COPY {
            self.active = false;
        }
        Ok(Step::Moved)
    }

    /// Back to copying, starting with this read.
    fn pause(&mut self) -> Step {
        self.active = false;
        Step::Read
    }

    /// Copy from now on.
    fn give_up(&mut self) -> Step {
        self.usable = false;
        self.pause()
    }
}

/// What a pump does after [`Splicer::step`].
#[cfg(target_os = "linux")]
enum Step {
    /// Bytes moved, or there were none to move: wait for readiness again.
    Moved,
    /// Read this time with recv() through tokio (readiness is still set).
    Read,
    /// Read now, directly, past an urgent mark.
    ReadPastMark,
}

/// From <asm/sockios.h>; the libc crate does not export it.
#[cfg(target_os = "linux")]
const SIOCATMARK: libc::c_ulong = 0x8905;

/// Whether the next byte to read on `fd` is at the TCP urgent mark.
#[cfg(target_os = "linux")]
pub(super) fn at_urgent_mark(fd: std::os::fd::RawFd) -> bool {
    let mut at: libc::c_int = 0;
    // SAFETY: SIOCATMARK writes one int through the pointer, which points to
    // a live local; `fd` is a socket the caller borrows for the call.
    let rc = unsafe { libc::ioctl(fd, SIOCATMARK, &mut at) };
    rc == 0 && at != 0
}

async fn write_all(dst: &TcpStream, buf: &[u8], dir: Direction, meter: &Meter) -> io::Result<()> {
    let mut off = 0;
    while off < buf.len() {
        write_ready(dst).await?;
        match dst.try_write(&buf[off..]) {
            Ok(m) => {
                off += m;
                meter.moved(dir, m as u64);
                meter.touch();
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
