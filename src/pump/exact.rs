//! Moving exactly `len` bytes from one TCP socket to another with
//! splice(2): an HTTP body of known length, once the gateway has parsed
//! its head and the policy has decided. Never more than `len` is taken
//! from the source, so whatever follows the body (the next pipelined
//! request) stays in the socket for the head parser.

use std::io;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::Interest;
use tokio::net::TcpStream;

use super::copy::{at_urgent_mark, Direction, Meter};
use super::splice::{Pipe, CHUNK, MIN_USEFUL};

/// Why [`splice_exact`] stopped short.
#[derive(Debug)]
pub enum Short {
    /// Splicing is not possible here (no pipe, a tiny pipe, or sockets
    /// splice refuses) and nothing has moved: copy instead.
    Unsupported,
    /// The source ended before `len` bytes.
    Ended,
    /// Nothing moved for the idle time.
    Idle(Duration),
    /// A socket error, or TCP urgent data (which splice cannot pass).
    Io(io::Error),
}

/// Moves exactly `len` bytes from `src` to `dst` through a pipe, counting
/// what was written on `written`, and on `meter` as the http gateway
/// counts (`dir` says which way the body goes).
pub async fn splice_exact(
    src: &TcpStream,
    dst: &TcpStream,
    len: u64,
    idle: Duration,
    dir: Direction,
    written: &AtomicU64,
    meter: &Meter,
) -> Result<(), Short> {
    let pipe = match Pipe::new() {
        Ok(p) if p.capacity() >= MIN_USEFUL => p,
        _ => return Err(Short::Unsupported),
    };
    let (src_fd, dst_fd) = (src.as_raw_fd(), dst.as_raw_fd());
    let mut left = len;
    let mut moved_any = false;
    while left > 0 {
        let want = usize::try_from(left).unwrap_or(usize::MAX).min(CHUNK);
        ready(src, Interest::READABLE, idle).await?;
        let n = match src.try_io(Interest::READABLE, || pipe.fill_from(src_fd, want)) {
            Ok(0) => return Err(Short::Ended),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                // splice stops at a TCP urgent mark and then reports
                // nothing to read, for ever. No HTTP client sends urgent
                // data; refuse it rather than hang.
                if at_urgent_mark(src_fd) {
                    return Err(Short::Io(io::Error::other("TCP urgent data inside a body")));
                }
                continue;
            }
            // The pipe is empty, so nothing is lost by copying instead.
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) && !moved_any => {
                return Err(Short::Unsupported)
            }
            Err(e) => return Err(Short::Io(e)),
        };
        moved_any = true;
        // As forward_body counts: reads from a client for the pair and
        // the relay, writes to a client for the relay.
        if dir == Direction::Up {
            meter.moved(dir, n as u64);
        }
        meter.touch();
        let mut inside = n;
        while inside > 0 {
            ready(dst, Interest::WRITABLE, idle).await?;
            match dst.try_io(Interest::WRITABLE, || pipe.drain_to(dst_fd, inside)) {
                Ok(m) => {
                    inside -= m;
                    written.fetch_add(m as u64, Ordering::Relaxed);
                    if dir == Direction::Down {
                        meter.relay_moved(dir, m as u64);
                    }
                    meter.touch();
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(Short::Io(e)),
            }
        }
        left -= n as u64;
    }
    Ok(())
}

/// Waits for `interest` on `s`, for at most `idle`.
async fn ready(s: &TcpStream, interest: Interest, idle: Duration) -> Result<(), Short> {
    match tokio::time::timeout(idle, s.ready(interest)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(Short::Io(e)),
        Err(_) => Err(Short::Idle(idle)),
    }
}
