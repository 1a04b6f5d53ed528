//! stone's stream rewriting: relaying a stream over an HTTP request
//! (`<host>:<port>/http <sport> <request>` on one end, `<sport>/http` on
//! the other) and inserting a header into HTTP requests (`/proxy`,
//! `/mproxy`). The behaviour follows Debian's stone 2.4 as observed on the
//! wire: heads end at the first empty line and are not otherwise parsed,
//! and the response status is not checked.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// What a stone rewrites on its streams.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Rewrite {
    /// `/http` on the destination: send this request first, and drop the
    /// upstream's response head.
    pub http_request: Option<Template>,
    /// `/http` on the sport: drop the client's request head and answer
    /// `HTTP/1.0 200 OK` before relaying.
    pub http_accept: bool,
    /// `/proxy` and `/mproxy`: insert this header line after the request
    /// line.
    pub header: Option<Template>,
    /// `/mproxy`: insert it into every request, not just the first.
    pub header_every: bool,
}

/// One piece of an expanded request or header.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(Vec<u8>),
    /// `\a`: the client's address.
    ClientIp,
    /// `\A`: the client's address and port.
    ClientAddr,
    /// `\d`: the address the client connected to.
    DestIp,
    /// `\D`: that address and port.
    DestAddr,
}

/// A request or header with stone's `\` escapes, parsed once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template(Vec<Piece>);

impl Template {
    /// Parses stone's escapes: `\n \r \t \\ \a \A \d \D`. The escapes that
    /// need unix-domain clients, ident or certificate regexes are refused.
    pub fn parse(text: &str) -> Result<Template, String> {
        let mut pieces = Vec::new();
        let mut lit = Vec::new();
        let mut chars = text.chars();
        while let Some(c) = chars.next() {
            if c != '\\' {
                let mut b = [0u8; 4];
                lit.extend_from_slice(c.encode_utf8(&mut b).as_bytes());
                continue;
            }
            let special = match chars.next() {
                None => {
                    lit.push(b'\\');
                    break;
                }
                Some('n') => {
                    lit.push(b'\n');
                    continue;
                }
                Some('r') => {
                    lit.push(b'\r');
                    continue;
                }
                Some('t') => {
                    lit.push(b'\t');
                    continue;
                }
                Some('a') => Piece::ClientIp,
                Some('A') => Piece::ClientAddr,
                Some('d') => Piece::DestIp,
                Some('D') => Piece::DestAddr,
                Some(e @ ('u' | 'U' | 'g' | 'G' | '0'..='9' | '?')) => {
                    return Err(format!(
                        "{text:?}: the \\{e} escape needs unix-domain clients, ident or SSL certificate regexes, which ossrelay does not implement"
                    ))
                }
                Some(other) => {
                    let mut b = [0u8; 4];
                    lit.extend_from_slice(other.encode_utf8(&mut b).as_bytes());
                    continue;
                }
            };
            if !lit.is_empty() {
                pieces.push(Piece::Text(std::mem::take(&mut lit)));
            }
            pieces.push(special);
        }
        if !lit.is_empty() {
            pieces.push(Piece::Text(lit));
        }
        Ok(Template(pieces))
    }

    /// The bytes for one connection.
    pub fn expand(&self, client: SocketAddr, local: Option<SocketAddr>) -> Vec<u8> {
        let mut out = Vec::new();
        for p in &self.0 {
            match p {
                Piece::Text(t) => out.extend_from_slice(t),
                Piece::ClientIp => out.extend_from_slice(client.ip().to_string().as_bytes()),
                Piece::ClientAddr => out.extend_from_slice(client.to_string().as_bytes()),
                Piece::DestIp => {
                    if let Some(l) = local {
                        out.extend_from_slice(l.ip().to_string().as_bytes())
                    }
                }
                Piece::DestAddr => {
                    if let Some(l) = local {
                        out.extend_from_slice(l.to_string().as_bytes())
                    }
                }
            }
        }
        out
    }
}

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

impl<R: AsyncRead + Unpin> AsyncRead for SkipHead<R> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.pending.is_empty() {
            drain(&mut this.pending, buf);
            return Poll::Ready(Ok(()));
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
        if !this.pending.is_empty() {
            drain(&mut this.pending, buf);
            return Poll::Ready(Ok(()));
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
    fn escapes_expand_like_stone() {
        let t =
            Template::parse(r"POST http://outer:8023/\a/\A/x\ty\\z HTTP/1.0\nHost: h\q\").unwrap();
        let client: SocketAddr = "10.0.0.9:4000".parse().unwrap();
        assert_eq!(
            t.expand(client, None),
            b"POST http://outer:8023/10.0.0.9/10.0.0.9:4000/x\ty\\z HTTP/1.0\nHost: hq\\".to_vec()
        );
        assert!(Template::parse(r"x \U").unwrap_err().contains("\\U"));
    }

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
