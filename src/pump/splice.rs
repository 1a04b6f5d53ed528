//! Thin, safe wrappers over pipe2(2) and splice(2).
//!
//! A relayed byte goes socket → pipe → socket inside the kernel; it is never
//! copied into user space. Each direction of a connection owns one pipe,
//! created the first time data arrives, so idle connections hold no pipe.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// The most we ask splice to move per call. Larger requests only help when
/// the pipe is larger than the default 64 KiB.
pub const CHUNK: usize = 1 << 20;

/// Requested pipe capacity. A larger pipe moves more per splice pair: on
/// loopback 1 MiB took a fifth less CPU per GiB than 256 KiB. Its pages
/// are only references to the socket's, held while data waits.
const PIPE_SIZE: libc::c_int = 1024 * 1024;

/// Below this a pipe is not worth splicing through: an unprivileged user
/// past `/proc/sys/fs/pipe-user-pages-soft` gets pipes of two pages, and
/// a 16 KiB buffer copy beats splicing 8 KiB at a time.
pub const MIN_USEFUL: usize = 64 * 1024;

/// A non-blocking pipe; both ends close on drop.
pub struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
}

impl Pipe {
    /// Creates a pipe with O_NONBLOCK and O_CLOEXEC.
    pub fn new() -> io::Result<Pipe> {
        let mut fds: [libc::c_int; 2] = [-1, -1];
        // SAFETY: `fds` is a valid, writable array of two c_ints, which is
        // exactly what pipe2 requires; it writes both only on success.
        let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: pipe2 succeeded, so both descriptors are open and owned by
        // nobody else; OwnedFd takes sole ownership and closes them on drop.
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        // A larger pipe moves more per syscall pair. Failure (e.g. over
        // /proc/sys/fs/pipe-user-pages-soft) just leaves the default 64 KiB.
        // SAFETY: fcntl on a descriptor we own; F_SETPIPE_SZ takes an int.
        unsafe { libc::fcntl(write.as_raw_fd(), libc::F_SETPIPE_SZ, PIPE_SIZE) };
        Ok(Pipe { read, write })
    }

    /// The pipe's capacity in bytes (0 if it cannot be read).
    pub fn capacity(&self) -> usize {
        // SAFETY: fcntl on a descriptor we own; F_GETPIPE_SZ takes no
        // argument and returns the size or -1.
        let n = unsafe { libc::fcntl(self.write.as_raw_fd(), libc::F_GETPIPE_SZ) };
        usize::try_from(n).unwrap_or(0)
    }

    /// Moves up to `len` bytes from socket `from` into the pipe.
    pub fn fill_from(&self, from: RawFd, len: usize) -> io::Result<usize> {
        splice(from, self.write.as_raw_fd(), len)
    }

    /// Moves up to `len` bytes from the pipe into socket `to`.
    pub fn drain_to(&self, to: RawFd, len: usize) -> io::Result<usize> {
        splice(self.read.as_raw_fd(), to, len)
    }
}

fn splice(from: RawFd, to: RawFd, len: usize) -> io::Result<usize> {
    // SAFETY: both descriptors are open for the duration of the call (the
    // caller borrows the socket and we borrow the pipe); null offsets are
    // required for pipes and sockets. SPLICE_F_NONBLOCK keeps the pipe side
    // from blocking; the sockets are already non-blocking under tokio.
    let n = unsafe {
        libc::splice(
            from,
            std::ptr::null_mut(),
            to,
            std::ptr::null_mut(),
            len,
            libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK,
        )
    };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}
