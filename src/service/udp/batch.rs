//! Datagrams in batches: one recvmmsg(2) fills up to [`BATCH`] slots, and
//! one sendmmsg(2) sends a run of them on a connected socket. A busy UDP
//! relay then makes two system calls per batch instead of two per datagram.
//! Elsewhere than Linux a batch holds one datagram.

use std::io;
use std::net::SocketAddr;

use tokio::net::UdpSocket;

/// Datagrams per system call.
#[cfg(target_os = "linux")]
pub const BATCH: usize = 32;
#[cfg(not(target_os = "linux"))]
pub const BATCH: usize = 1;

/// Bytes per slot: any UDP payload fits, so none is ever truncated.
const SLOT: usize = 65_536;

/// Received datagrams and their senders.
pub struct Inbox {
    /// BATCH slots of SLOT bytes. Allocated zeroed, so pages that no
    /// datagram ever reaches are never made resident.
    data: Box<[u8]>,
    lens: [usize; BATCH],
    from: [Option<SocketAddr>; BATCH],
}

impl Inbox {
    /// An empty inbox.
    pub fn new() -> Inbox {
        Inbox {
            data: vec![0u8; BATCH * SLOT].into_boxed_slice(),
            lens: [0; BATCH],
            from: [None; BATCH],
        }
    }

    /// Datagram `i` of the last receive and who sent it (None for an
    /// address family we do not relay).
    pub fn get(&self, i: usize) -> (&[u8], Option<SocketAddr>) {
        let start = i * SLOT;
        (&self.data[start..start + self.lens[i]], self.from[i])
    }

    /// Receives what is waiting, without blocking; returns how many
    /// datagrams arrived (WouldBlock when none).
    pub fn recv(&mut self, sock: &UdpSocket) -> io::Result<usize> {
        #[cfg(target_os = "linux")]
        {
            use std::os::fd::AsRawFd;
            let fd = sock.as_raw_fd();
            sock.try_io(tokio::io::Interest::READABLE, || self.recvmmsg(fd))
        }
        #[cfg(not(target_os = "linux"))]
        {
            let (n, from) = sock.try_recv_from(&mut self.data[..SLOT])?;
            self.lens[0] = n;
            self.from[0] = Some(from);
            Ok(1)
        }
    }

    #[cfg(target_os = "linux")]
    fn recvmmsg(&mut self, fd: std::os::fd::RawFd) -> io::Result<usize> {
        // SAFETY: iovec, sockaddr_storage and mmsghdr are plain C structs
        // for which all-zero bytes are a valid value.
        let (mut iov, mut names, mut hdrs): (
            [libc::iovec; BATCH],
            [libc::sockaddr_storage; BATCH],
            [libc::mmsghdr; BATCH],
        ) = unsafe { std::mem::zeroed() };
        for (i, slot) in self.data.chunks_exact_mut(SLOT).enumerate() {
            iov[i] = libc::iovec {
                iov_base: slot.as_mut_ptr().cast(),
                iov_len: SLOT,
            };
            let h = &mut hdrs[i].msg_hdr;
            h.msg_name = (&mut names[i] as *mut libc::sockaddr_storage).cast();
            h.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            h.msg_iov = &mut iov[i];
            h.msg_iovlen = 1;
        }
        // SAFETY: every header points at a live iovec over its own SLOT-byte
        // slot of `self.data` and at its own sockaddr_storage, all of which
        // outlive the call; the kernel writes at most those lengths.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                hdrs.as_mut_ptr(),
                BATCH as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let n = n as usize;
        for i in 0..n {
            self.lens[i] = hdrs[i].msg_len as usize;
            // SAFETY: the kernel filled names[i] with an address of
            // msg_namelen bytes, which is what SockAddr::new requires.
            let addr = unsafe { socket2::SockAddr::new(names[i], hdrs[i].msg_hdr.msg_namelen) };
            self.from[i] = addr.as_socket();
        }
        Ok(n)
    }
}

impl Default for Inbox {
    fn default() -> Self {
        Inbox::new()
    }
}

/// Sends `datagrams` in order on connected `sock`, as many as go without
/// blocking; returns how many were sent (WouldBlock when none).
pub fn send_connected(sock: &UdpSocket, datagrams: &[&[u8]]) -> io::Result<usize> {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let fd = sock.as_raw_fd();
        sock.try_io(tokio::io::Interest::WRITABLE, || sendmmsg(fd, datagrams))
    }
    #[cfg(not(target_os = "linux"))]
    {
        match datagrams.first() {
            Some(d) => sock.try_send(d).map(|_| 1),
            None => Ok(0),
        }
    }
}

/// An iovec over a datagram to send; the kernel only reads through it.
#[cfg(target_os = "linux")]
fn outgoing(d: &[u8]) -> libc::iovec {
    libc::iovec {
        iov_base: d.as_ptr() as *mut libc::c_void,
        iov_len: d.len(),
    }
}

/// Total payload bytes of `datagrams`.
pub fn bytes(datagrams: &[&[u8]]) -> u64 {
    datagrams.iter().map(|d| d.len() as u64).sum()
}

#[cfg(target_os = "linux")]
fn sendmmsg(fd: std::os::fd::RawFd, datagrams: &[&[u8]]) -> io::Result<usize> {
    let count = datagrams.len().min(BATCH);
    // SAFETY: as in recvmmsg, all-zero is valid for these C structs.
    let (mut iov, mut hdrs): ([libc::iovec; BATCH], [libc::mmsghdr; BATCH]) =
        unsafe { std::mem::zeroed() };
    for (i, d) in datagrams[..count].iter().enumerate() {
        iov[i] = outgoing(d);
        hdrs[i].msg_hdr.msg_iov = &mut iov[i];
        hdrs[i].msg_hdr.msg_iovlen = 1;
    }
    // SAFETY: each header points at a live iovec over a borrowed datagram
    // that outlives the call; no names, as the socket is connected.
    let n = unsafe { libc::sendmmsg(fd, hdrs.as_mut_ptr(), count as libc::c_uint, 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

/// At most this many segments in one UDP GSO send (UDP_MAX_SEGMENTS).
#[cfg(target_os = "linux")]
const GSO_MAX_SEGMENTS: usize = 64;
/// At most this many payload bytes in one UDP GSO send (an IPv4 datagram).
#[cfg(target_os = "linux")]
const GSO_MAX_BYTES: usize = 65_000;
/// From <linux/udp.h>.
#[cfg(target_os = "linux")]
const UDP_SEGMENT: libc::c_int = 103;

/// The segment size when `datagrams` can go out as one UDP GSO send: at
/// least two, all of one non-zero size except a last that may be shorter
/// (the kernel cuts the payload at that size, so the receiver sees the
/// same datagrams).
#[cfg(target_os = "linux")]
pub fn segment_size(datagrams: &[&[u8]]) -> Option<usize> {
    let (last, rest) = datagrams.split_last()?;
    let size = rest.first()?.len();
    let uniform = rest.iter().all(|d| d.len() == size) && (1..=size).contains(&last.len());
    (size > 0
        && uniform
        && datagrams.len() <= GSO_MAX_SEGMENTS
        && bytes(datagrams) <= GSO_MAX_BYTES as u64)
        .then_some(size)
}

/// Sends `datagrams` (see [`segment_size`]) on connected `sock` with one
/// sendmsg(2) carrying UDP_SEGMENT: the stack is walked once for the whole
/// run instead of once per datagram. All or nothing.
#[cfg(target_os = "linux")]
pub fn send_segmented(sock: &UdpSocket, datagrams: &[&[u8]], size: usize) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let fd = sock.as_raw_fd();
    sock.try_io(tokio::io::Interest::WRITABLE, || {
        // SAFETY: all-zero is valid for iovec and msghdr.
        let (mut iov, mut msg): ([libc::iovec; GSO_MAX_SEGMENTS], libc::msghdr) =
            unsafe { std::mem::zeroed() };
        for (i, d) in datagrams.iter().enumerate() {
            iov[i] = outgoing(d);
        }
        // Room for one cmsg with a u16, 8-byte aligned as cmsghdr needs.
        let mut control = [0u64; 4];
        msg.msg_iov = iov.as_mut_ptr();
        msg.msg_iovlen = datagrams.len();
        msg.msg_control = control.as_mut_ptr().cast();
        // SAFETY: CMSG_SPACE only computes a length.
        msg.msg_controllen = unsafe { libc::CMSG_SPACE(2) } as usize;
        // SAFETY: msg_control points at `control`, which is 32 bytes and
        // so holds CMSG_SPACE(2) (24 on 64-bit); CMSG_FIRSTHDR therefore
        // returns a pointer inside it, and CMSG_DATA points 2 writable
        // bytes further in. The header and data are written before use.
        unsafe {
            let c = libc::CMSG_FIRSTHDR(&msg);
            (*c).cmsg_level = libc::SOL_UDP;
            (*c).cmsg_type = UDP_SEGMENT;
            (*c).cmsg_len = libc::CMSG_LEN(2) as usize;
            std::ptr::write_unaligned(libc::CMSG_DATA(c).cast::<u16>(), size as u16);
        }
        // SAFETY: msg points at live iovecs over borrowed datagrams and at
        // the control buffer above, all of which outlive the call.
        let n = unsafe { libc::sendmsg(fd, &msg, 0) };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_batch_keeps_each_datagram_and_its_sender() {
        let relay = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let to = relay.local_addr().unwrap();
        let a = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        a.connect(to).await.unwrap();
        a.writable().await.unwrap();
        let sent = send_connected(&a, &[b"one", b"", b"three"]).unwrap();
        assert_eq!(sent, 3, "one sendmmsg takes all three");
        b.send_to(b"four", to).await.unwrap();
        let mut inbox = Inbox::new();
        let mut got = Vec::new();
        while got.len() < 4 {
            relay.readable().await.unwrap();
            match inbox.recv(&relay) {
                Ok(n) => {
                    for i in 0..n {
                        let (d, from) = inbox.get(i);
                        got.push((d.to_vec(), from.unwrap()));
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("recv: {e}"),
            }
        }
        let (a_addr, b_addr) = (a.local_addr().unwrap(), b.local_addr().unwrap());
        assert_eq!(
            got,
            vec![
                (b"one".to_vec(), a_addr),
                (b"".to_vec(), a_addr),
                (b"three".to_vec(), a_addr),
                (b"four".to_vec(), b_addr),
            ]
        );
    }

    #[test]
    fn only_uniform_runs_are_segmented() {
        assert_eq!(segment_size(&[b"abcd", b"efgh", b"ij"]), Some(4));
        assert_eq!(segment_size(&[b"abcd"]), None, "one datagram needs no GSO");
        assert_eq!(
            segment_size(&[b"ab", b"cdef"]),
            None,
            "the last may not be longer"
        );
        assert_eq!(segment_size(&[b"abcd", b"ef", b"gh"]), None);
        assert_eq!(
            segment_size(&[b"abcd", b""]),
            None,
            "an empty datagram would vanish"
        );
        assert_eq!(segment_size(&[b"", b""]), None);
    }

    #[tokio::test]
    async fn a_segmented_send_arrives_as_the_same_datagrams() {
        let rx = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        tx.connect(rx.local_addr().unwrap()).await.unwrap();
        tx.writable().await.unwrap();
        let run: [&[u8]; 3] = [b"aaaa", b"bbbb", b"cc"];
        let size = segment_size(&run).unwrap();
        match send_segmented(&tx, &run, size) {
            Ok(()) => {}
            // A kernel without UDP GSO: the relay falls back to sendmmsg.
            Err(e)
                if e.raw_os_error() == Some(libc::EINVAL)
                    || e.raw_os_error() == Some(libc::EIO) =>
            {
                // To the stderr handle: libtest would swallow eprintln!.
                use std::io::Write;
                let _ = writeln!(std::io::stderr(), "SKIPPED a_segmented_send_arrives_as_the_same_datagrams: this kernel refuses UDP GSO ({e})");
                return;
            }
            Err(e) => panic!("send: {e}"),
        }
        let mut got = Vec::new();
        let mut b = [0u8; 64];
        for _ in 0..3 {
            let n = rx.recv(&mut b).await.unwrap();
            got.push(b[..n].to_vec());
        }
        assert_eq!(got, [b"aaaa".to_vec(), b"bbbb".to_vec(), b"cc".to_vec()]);
    }
}
