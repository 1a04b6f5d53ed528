//! The stream adapters of stone's rewriting (`/http`, `/proxy`,
//! `/mproxy`; see [`crate::config::rewrite`] for what each does): a reader
//! that drops the first HTTP head, one that inserts a header line, and a
//! writer that reports each write. Heads end at the first empty line and
//! are not otherwise parsed, as in Debian's stone 2.4.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Finds the end of an HTTP head the way stone does: `\r` is ignored, a
/// newline counts, any other byte restarts the count at one, and three
/// means "a line, then an empty line".
#[derive(Debug, Default)]
pub struct HeadEnd(u8);

impl HeadEnd {
    /// Feeds bytes; returns the offset just past the head once it ends.
    pub fn feed(&mut self, data: &[u8]) -> Option<usize> {
        for (i, &b) in data.iter().enumerate() {
            match b {
                b'\r' => {}
                b'\n' => self.0 += 1,
                _ => self.0 = 1,
            }
            if self.0 >= 3 {
                return Some(i + 1);
            }
        }
        None
    }
}

/// A reader that drops everything up to the end of the first HTTP head
/// (the upstream's response to a `/http` request).
pub struct SkipHead<R> {
    inner: R,
    head: Option<HeadEnd>,
    pending: Vec<u8>,
}

impl<R> SkipHead<R> {
    /// Wraps `inner`.
    pub fn new(inner: R) -> SkipHead<R> {
        SkipHead {
            inner,
            head: Some(HeadEnd::default()),
            pending: Vec::new(),
        }
    }
}

/// Copies from `pending` into `buf`, keeping what does not fit.
fn drain(pending: &mut Vec<u8>, buf: &mut ReadBuf<'_>) {
    let n = pending.len().min(buf.remaining());
    buf.put_slice(&pending[..n]);
    pending.drain(..n);
}

/// Bytes held back from an earlier read go out before anything new is
/// read: `Some` when there were any (the read is then complete).
fn serve_pending(pending: &mut Vec<u8>, buf: &mut ReadBuf<'_>) -> Option<Poll<io::Result<()>>> {
    if pending.is_empty() {
        return None;
    }
    drain(pending, buf);
    Some(Poll::Ready(Ok(())))
}

impl<R: AsyncRead + Unpin> AsyncRead for SkipHead<R> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(done) = serve_pending(&mut this.pending, buf) {
            return done;
        }
        let Some(head) = this.head.as_mut() else {
            return Pin::new(&mut this.inner).poll_read(cx, buf);
        };
        loop {
            let mut tmp = [0u8; 4096];
            let mut rb = ReadBuf::new(&mut tmp);
            ready!(Pin::new(&mut this.inner).poll_read(cx, &mut rb))?;
            let got = rb.filled();
            if got.is_empty() {
                // End of stream inside the head: stone relays nothing.
                return Poll::Ready(Ok(()));
            }
            if let Some(end) = head.feed(got) {
                this.head = None;
                this.pending.extend_from_slice(&got[end..]);
                if this.pending.is_empty() {
                    return Pin::new(&mut this.inner).poll_read(cx, buf);
                }
                drain(&mut this.pending, buf);
                return Poll::Ready(Ok(()));
            }
        }
    }
}

/// A reader that inserts `header` + CRLF after the first newline it
/// passes, and again after each re-arm (`/mproxy` re-arms whenever the
/// upstream's bytes have been written to the client).
pub struct InsertHeader<R> {
    inner: R,
    header: Vec<u8>,
    armed: bool,
    rearm: Option<Arc<AtomicBool>>,
    pending: Vec<u8>,
}

impl<R> InsertHeader<R> {
    /// Inserts `header` once, or after every re-arm when `rearm` is given.
    pub fn new(inner: R, mut header: Vec<u8>, rearm: Option<Arc<AtomicBool>>) -> InsertHeader<R> {
        header.extend_from_slice(b"\r\n");
        InsertHeader {
            inner,
            header,
            armed: true,
            rearm,
            pending: Vec::new(),
        }
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for InsertHeader<R> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(done) = serve_pending(&mut this.pending, buf) {
            return done;
        }
        if let Some(flag) = &this.rearm {
            if flag.swap(false, Ordering::AcqRel) {
                this.armed = true;
            }
        }
        if !this.armed {
            return Pin::new(&mut this.inner).poll_read(cx, buf);
        }
        let mut tmp = [0u8; 8192];
        let mut rb = ReadBuf::new(&mut tmp);
        ready!(Pin::new(&mut this.inner).poll_read(cx, &mut rb))?;
        let got = rb.filled();
        match got.iter().position(|&b| b == b'\n') {
            Some(i) => {
                this.armed = false;
                this.pending.extend_from_slice(&got[..=i]);
                this.pending.extend_from_slice(&this.header);
                this.pending.extend_from_slice(&got[i + 1..]);
            }
            None => this.pending.extend_from_slice(got),
        }
        drain(&mut this.pending, buf);
        Poll::Ready(Ok(()))
    }
}

/// A writer that raises `flag` after each write, so `/mproxy` knows a
/// response has gone to the client.
pub struct NotifyWrite<W> {
    inner: W,
    flag: Arc<AtomicBool>,
}

impl<W> NotifyWrite<W> {
    /// Wraps `inner`.
    pub fn new(inner: W, flag: Arc<AtomicBool>) -> NotifyWrite<W> {
        NotifyWrite { inner, flag }
    }
}

impl<W: AsyncWrite + Unpin> AsyncWrite for NotifyWrite<W> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let n = ready!(Pin::new(&mut this.inner).poll_write(cx, data))?;
        this.flag.store(true, Ordering::Release);
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn head_end_needs_a_line_then_an_empty_line() {
        assert_eq!(
            HeadEnd::default().feed(b"HTTP/1.0 200 OK\r\n\r\nDATA"),
            Some(19)
        );
        assert_eq!(HeadEnd::default().feed(b"\n\nX"), None);
        let mut h = HeadEnd::default();
        assert_eq!(h.feed(b"a\r\n"), None);
        assert_eq!(h.feed(b"\r\nrest"), Some(2));
    }
}
