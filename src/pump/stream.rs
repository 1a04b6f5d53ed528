//! The byte-stream path for pairs that cannot use splice: a TLS side, or a
//! stone that rewrites the stream (`/http`, `/proxy`). Each direction reads
//! into a buffer and writes it out; end-of-stream becomes a shutdown of the
//! other side's write half (a TLS close_notify, then FIN), so half-close
//! still passes through.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use super::copy::{drive, Direction, Meter, Outcome};

/// A TCP or TLS stream, boxed so one code path serves every combination.
pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// A boxed [`Stream`].
pub type Io = Box<dyn Stream>;
/// One direction's source: a plain TCP half (which a body can be spliced
/// from) or anything else, possibly rewriting.
pub enum Reader {
    /// The read half of a plain TCP stream.
    Tcp(OwnedReadHalf),
    /// TLS, a rewriting reader, or another stream.
    Other(Box<dyn AsyncRead + Unpin + Send>),
}

/// One direction's sink: a plain TCP half (which a body can be spliced
/// into) or anything else.
pub enum Writer {
    /// The write half of a plain TCP stream.
    Tcp(OwnedWriteHalf),
    /// TLS or another stream.
    Other(Box<dyn AsyncWrite + Unpin + Send>),
}

impl Reader {
    /// Any other reader.
    pub fn boxed(r: impl AsyncRead + Unpin + Send + 'static) -> Reader {
        Reader::Other(Box::new(r))
    }
}

impl Writer {
    /// Any other writer.
    pub fn boxed(w: impl AsyncWrite + Unpin + Send + 'static) -> Writer {
        Writer::Other(Box::new(w))
    }
}

/// The TCP socket under a stream half, when it is plain TCP: what splice
/// needs.
pub trait AsTcp {
    /// The socket, or None for TLS and other wrapped streams.
    fn as_tcp(&self) -> Option<&TcpStream>;
}

impl AsTcp for Reader {
    fn as_tcp(&self) -> Option<&TcpStream> {
        match self {
            Reader::Tcp(r) => Some(r.as_ref()),
            Reader::Other(_) => None,
        }
    }
}

impl AsTcp for Writer {
    fn as_tcp(&self) -> Option<&TcpStream> {
        match self {
            Writer::Tcp(w) => Some(w.as_ref()),
            Writer::Other(_) => None,
        }
    }
}

impl AsTcp for tokio::net::tcp::ReadHalf<'_> {
    fn as_tcp(&self) -> Option<&TcpStream> {
        Some(self.as_ref())
    }
}

impl AsTcp for tokio::net::tcp::WriteHalf<'_> {
    fn as_tcp(&self) -> Option<&TcpStream> {
        Some(self.as_ref())
    }
}

impl AsyncRead for Reader {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Reader::Tcp(r) => Pin::new(r).poll_read(cx, buf),
            Reader::Other(r) => Pin::new(r).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Writer {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Writer::Tcp(w) => Pin::new(w).poll_write(cx, buf),
            Writer::Other(w) => Pin::new(w).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Writer::Tcp(w) => Pin::new(w).poll_flush(cx),
            Writer::Other(w) => Pin::new(w).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Writer::Tcp(w) => Pin::new(w).poll_shutdown(cx),
            Writer::Other(w) => Pin::new(w).poll_shutdown(cx),
        }
    }
}

/// Read and write halves of `io` that two futures of one task can use at
/// once. A plain TCP stream splits without a lock; anything else (TLS)
/// goes through tokio's locked split.
pub fn halves(io: Halvable) -> (Reader, Writer) {
    match io {
        Halvable::Tcp(t) => {
            let (r, w) = t.into_split();
            (Reader::Tcp(r), Writer::Tcp(w))
        }
        Halvable::Other(io) => {
            let (r, w) = tokio::io::split(io);
            (Reader::boxed(r), Writer::boxed(w))
        }
    }
}

/// A stream to split with [`halves`].
pub enum Halvable {
    /// Plain TCP.
    Tcp(tokio::net::TcpStream),
    /// TLS or another wrapped stream.
    Other(Io),
}

/// Stream buffer per direction; TLS records are at most 16 KiB.
const BUF_SIZE: usize = 16 * 1024;

/// Relays between `client` and `upstream` until both directions end, one
/// fails, the pair is idle for `idle`, or `force` is cancelled.
pub async fn relay(
    client: Io,
    upstream: Io,
    idle: Duration,
    force: &CancellationToken,
    meter: &Meter,
) -> Outcome {
    let (cr, cw) = tokio::io::split(client);
    let (ur, uw) = tokio::io::split(upstream);
    relay_halves(
        (Reader::boxed(cr), Writer::boxed(cw)),
        (Reader::boxed(ur), Writer::boxed(uw)),
        idle,
        force,
        meter,
    )
    .await
}

/// [`relay`] over halves the caller may have wrapped.
pub async fn relay_halves(
    client: (Reader, Writer),
    upstream: (Reader, Writer),
    idle: Duration,
    force: &CancellationToken,
    meter: &Meter,
) -> Outcome {
    meter.touch();
    let ((mut cr, mut cw), (mut ur, mut uw)) = (client, upstream);
    let up = std::pin::pin!(pump(&mut cr, &mut uw, Direction::Up, meter));
    let down = std::pin::pin!(pump(&mut ur, &mut cw, Direction::Down, meter));
    drive(up, down, idle, force, meter).await
}

async fn pump<R, W>(src: &mut R, dst: &mut W, dir: Direction, meter: &Meter) -> io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; BUF_SIZE];
    loop {
        let n = match src.read(&mut buf).await {
            Ok(0) => return dst.shutdown().await,
            Ok(n) => n,
            // A peer that closes without TLS close_notify still ends its
            // stream; stone and most servers do this, so it is not an error.
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return dst.shutdown().await,
            Err(e) => return Err(e),
        };
        meter.touch();
        dst.write_all(&buf[..n]).await?;
        dst.flush().await?;
        meter.moved(dir, n as u64);
        meter.touch();
    }
}
