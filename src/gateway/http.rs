//! One client connection of a `protocol = "http"` relay: read each request
//! head, refuse what is malformed or not allowed, and forward the rest
//! byte for byte to the route's upstream, framing bodies and responses so
//! that every request gets its own access record.

use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use super::head::{self, Chunked, Framing, MAX_HEAD};
use super::{error_response, Gateway};
use crate::config::RelayConfig;
use crate::relay::copy::Meter;
use crate::relay::stream::{halves, Halvable, Reader, Writer};
use crate::resolve::Resolve;

/// Read size for bodies.
const CHUNK: usize = 64 * 1024;

/// What one request ended as, for its access record.
struct Outcome {
    status: u16,
    decision: &'static str,
    reason: String,
}

/// Why an exchange stopped early.
enum Stop {
    /// The client's body framing is broken.
    BadBody(&'static str),
    /// The upstream's response is broken or it went away.
    BadResponse(String),
    /// A socket error or timeout.
    Io(String),
}

/// Serves one client connection until it closes, a request is refused, or
/// `force` is cancelled.
#[allow(clippy::too_many_arguments)]
pub async fn serve(
    gw: &Gateway,
    cfg: &RelayConfig,
    id: i32,
    client: TcpStream,
    peer: SocketAddr,
    resolver: &dyn Resolve,
    force: &CancellationToken,
    meter: &Meter,
) {
    let fd = client.as_raw_fd();
    let local = client.local_addr().ok();
    let client = match &cfg.tls {
        None => Halvable::Tcp(client),
        Some(tls) => match tokio::time::timeout(gw.head_timeout, tls.acceptor.accept(client)).await
        {
            Ok(Ok(s)) => Halvable::Other(Box::new(s)),
            Ok(Err(e)) => {
                tracing::warn!(relay = %cfg.name, "{id} TCP {fd}: TLS handshake with {peer} failed: {e}");
                return;
            }
            Err(_) => {
                tracing::warn!(relay = %cfg.name, "{id} TCP {fd}: TLS handshake with {peer} timed out");
                return;
            }
        },
    };
    let (mut cr, mut cw) = halves(client);
    let mut buf: Vec<u8> = Vec::new();
    let mut up: Option<Upstream> = None;
    let mut served = 0u64;
    // One waiter on the stop token for the whole connection: a fresh one
    // per request would take the token's lock twice per request.
    let cancelled = force.cancelled();
    tokio::pin!(cancelled);
    loop {
        let wait = if served == 0 {
            gw.head_timeout
        } else {
            cfg.idle_timeout
        };
        let got = tokio::select! {
            r = read_head(&mut cr, &mut buf, wait, gw.head_timeout, meter) => r,
            _ = &mut cancelled => return,
        };
        let end = match got {
            HeadRead::Head(n) => n,
            HeadRead::Closed => return,
            HeadRead::Refuse(status, why) => {
                let host = "-";
                let _ = cw
                    .write_all(&error_response(status, "InvalidRequest", why, None, host))
                    .await;
                let _ = cw.shutdown().await;
                record(
                    cfg,
                    peer,
                    None,
                    None,
                    "-",
                    "",
                    Outcome {
                        status,
                        decision: "bad-request",
                        reason: why.into(),
                    },
                    Instant::now(),
                    0,
                    0,
                );
                return;
            }
        };
        let started = Instant::now();
        served += 1;
        // Per request: bytes forwarded each way (head included).
        let (sent_up, sent_down) = (AtomicU64::new(0), AtomicU64::new(0));
        let req = match head::parse_request(&buf[..end]) {
            Ok(r) => r,
            Err(why) => {
                let _ = cw
                    .write_all(&error_response(400, "InvalidRequest", why, None, "-"))
                    .await;
                let _ = cw.shutdown().await;
                tracing::warn!(relay = %cfg.name, "{id} TCP {fd}: bad request from {peer}: {why}");
                record(
                    cfg,
                    peer,
                    None,
                    None,
                    "-",
                    "",
                    Outcome {
                        status: 400,
                        decision: "bad-request",
                        reason: why.into(),
                    },
                    started,
                    0,
                    0,
                );
                return;
            }
        };
        let Some(target) = gw.target(&req.host, &req.path) else {
            let why = format!("no route for host {:?}", req.host);
            let _ = cw
                .write_all(&error_response(
                    421,
                    "MisdirectedRequest",
                    &why,
                    None,
                    &req.host,
                ))
                .await;
            let _ = cw.shutdown().await;
            record(
                cfg,
                peer,
                Some(&req.host),
                None,
                &req.method,
                &req.path,
                Outcome {
                    status: 421,
                    decision: "denied",
                    reason: why,
                },
                started,
                0,
                0,
            );
            return;
        };
        if let Err(why) = gw.check(target.bucket.as_deref()) {
            let _ = cw
                .write_all(&error_response(
                    403,
                    "AccessDenied",
                    &format!("{why} (ossrelay bucket policy)"),
                    target.bucket.as_deref(),
                    &req.host,
                ))
                .await;
            let _ = cw.shutdown().await;
            tracing::warn!(relay = %cfg.name, "{id} TCP {fd}: denied {} {}{} from {peer}: {why}", req.method, req.host, req.path);
            record(
                cfg,
                peer,
                Some(&req.host),
                target.bucket.as_deref(),
                &req.method,
                &target.key,
                Outcome {
                    status: 403,
                    decision: "denied",
                    reason: why,
                },
                started,
                0,
                0,
            );
            return;
        }
        if up.as_ref().is_none_or(|u| u.route != target.route) {
            // A different route needs a different upstream connection.
            drop(up.take());
            match connect(cfg, target.upstream, resolver, peer, local).await {
                Ok(u) => {
                    up = Some(Upstream {
                        route: target.route,
                        ..u
                    })
                }
                Err(why) => {
                    tracing::warn!(relay = %cfg.name, "{id} TCP {fd}: connect to {} failed: {why}", target.upstream);
                    let _ = cw
                        .write_all(&error_response(
                            502,
                            "BadGateway",
                            "the upstream cannot be reached",
                            target.bucket.as_deref(),
                            &req.host,
                        ))
                        .await;
                    let _ = cw.shutdown().await;
                    record(
                        cfg,
                        peer,
                        Some(&req.host),
                        target.bucket.as_deref(),
                        &req.method,
                        &target.key,
                        Outcome {
                            status: 502,
                            decision: "allowed",
                            reason: why,
                        },
                        started,
                        0,
                        0,
                    );
                    return;
                }
            }
        }
        let Some(u) = up.as_mut() else { return };
        let exchange = async {
            let body = forward_body(
                &mut cr,
                &mut buf,
                end,
                &mut u.w,
                req.framing,
                cfg.idle_timeout,
                Some(&meter.from_client),
                &sent_up,
                meter,
            );
            let resp = relay_response(
                &mut u.r,
                &mut u.buf,
                &mut cw,
                req.method == "HEAD",
                cfg.idle_timeout,
                &sent_down,
                meter,
            );
            let ((), (status, close)) = tokio::try_join!(body, resp)?;
            Ok::<_, Stop>((status, close))
        };
        let result = tokio::select! {
            r = exchange => r,
            _ = &mut cancelled => Err(Stop::Io("shutting down".into())),
        };
        let (from, to) = (
            sent_up.load(Ordering::Relaxed),
            sent_down.load(Ordering::Relaxed),
        );
        meter.to_client.fetch_add(to, Ordering::Relaxed);
        match result {
            Ok((status, close)) => {
                record(
                    cfg,
                    peer,
                    Some(&req.host),
                    target.bucket.as_deref(),
                    &req.method,
                    &target.key,
                    Outcome {
                        status,
                        decision: "allowed",
                        reason: String::new(),
                    },
                    started,
                    from,
                    to,
                );
                if close || req.close {
                    let _ = cw.shutdown().await;
                    return;
                }
            }
            Err(stop) => {
                let (status, why) = match stop {
                    Stop::BadBody(why) => (400, why.to_string()),
                    Stop::BadResponse(why) => (502, why),
                    Stop::Io(why) => (0, why),
                };
                // Only a client that has seen nothing of the response can
                // still be told why.
                if to == 0 && status != 0 {
                    let _ = cw
                        .write_all(&error_response(
                            status,
                            if status == 400 {
                                "InvalidRequest"
                            } else {
                                "BadGateway"
                            },
                            &why,
                            target.bucket.as_deref(),
                            &req.host,
                        ))
                        .await;
                }
                let _ = cw.shutdown().await;
                tracing::warn!(relay = %cfg.name, "{id} TCP {fd}: {} {}{}: {why}", req.method, req.host, req.path);
                record(
                    cfg,
                    peer,
                    Some(&req.host),
                    target.bucket.as_deref(),
                    &req.method,
                    &target.key,
                    Outcome {
                        status,
                        decision: "allowed",
                        reason: why,
                    },
                    started,
                    from,
                    to,
                );
                return;
            }
        }
    }
}

/// What a forward proxy needs to relay one absolute-form request.
pub struct OneRequest {
    /// Bytes the client sent after the head.
    pub early: Vec<u8>,
    /// The request body's framing.
    pub framing: Framing,
    /// HEAD: the response has no body.
    pub head_request: bool,
}

/// Relays the body of one request (its head already sent) and its
/// response, then stops: anything the client sends after that request is
/// never forwarded, so a kept-alive proxy connection cannot carry a
/// second, unchecked request. Returns the response status.
pub async fn exchange_once(
    client: &mut TcpStream,
    upstream: &mut TcpStream,
    one: OneRequest,
    idle: Duration,
    meter: &Meter,
) -> Result<u16, String> {
    let (mut cr, mut cw) = client.split();
    let (mut ur, mut uw) = upstream.split();
    let mut buf = one.early;
    let mut ubuf = Vec::new();
    let (up, down) = (AtomicU64::new(0), AtomicU64::new(0));
    let body = forward_body(
        &mut cr,
        &mut buf,
        0,
        &mut uw,
        one.framing,
        idle,
        Some(&meter.from_client),
        &up,
        meter,
    );
    let resp = relay_response(
        &mut ur,
        &mut ubuf,
        &mut cw,
        one.head_request,
        idle,
        &down,
        meter,
    );
    let result = tokio::try_join!(body, resp);
    meter
        .to_client
        .fetch_add(down.load(Ordering::Relaxed), Ordering::Relaxed);
    let _ = cw.shutdown().await;
    match result {
        Ok(((), (status, _))) => Ok(status),
        Err(Stop::BadBody(why)) => Err(why.to_string()),
        Err(Stop::BadResponse(why) | Stop::Io(why)) => Err(why),
    }
}

struct Upstream {
    route: Option<usize>,
    r: Reader,
    w: Writer,
    buf: Vec<u8>,
}

async fn connect(
    cfg: &RelayConfig,
    target: &crate::config::Upstream,
    resolver: &dyn Resolve,
    peer: SocketAddr,
    local: Option<SocketAddr>,
) -> Result<Upstream, String> {
    let (tcp, addr) = crate::relay::tcp::connect_one(cfg, target, resolver).await?;
    let _ = tcp.set_nodelay(true);
    crate::relay::tcp::send_proxy_header(cfg, &tcp, peer, local)
        .await
        .map_err(|e| format!("sending the PROXY header to {addr}: {e}"))?;
    let io = match &cfg.upstream_tls {
        None => Halvable::Tcp(tcp),
        Some(tls) => {
            let name = tls.name_for(&target.host)?;
            match tokio::time::timeout(cfg.connect_timeout, tls.connector.connect(name, tcp)).await
            {
                Ok(Ok(s)) => Halvable::Other(Box::new(s)),
                Ok(Err(e)) => return Err(format!("TLS handshake with {addr}: {e}")),
                Err(_) => return Err(format!("TLS handshake with {addr} timed out")),
            }
        }
    };
    let (r, w) = halves(io);
    Ok(Upstream {
        route: None,
        r,
        w,
        buf: Vec::new(),
    })
}

enum HeadRead {
    Head(usize),
    Closed,
    Refuse(u16, &'static str),
}

/// Reads until `buf` holds a whole head. `first` bounds the wait for the
/// first byte (idle keep-alive), `whole` the time from then to the end of
/// the head (slow heads are cut off).
async fn read_head<R: AsyncRead + Unpin>(
    r: &mut R,
    buf: &mut Vec<u8>,
    first: Duration,
    whole: Duration,
    meter: &Meter,
) -> HeadRead {
    let mut deadline = if buf.is_empty() {
        None
    } else {
        Some(tokio::time::Instant::now() + whole)
    };
    loop {
        if let Some(n) = head::head_end(buf) {
            return HeadRead::Head(n);
        }
        if let Some(&b) = buf.first() {
            if !b.is_ascii_uppercase() {
                return HeadRead::Refuse(400, "not an HTTP request");
            }
        }
        if buf.len() >= MAX_HEAD {
            return HeadRead::Refuse(400, "request head over 64 KiB");
        }
        let limit = deadline.unwrap_or_else(|| tokio::time::Instant::now() + first);
        buf.reserve(8192);
        let n = match tokio::time::timeout_at(limit, r.read_buf(buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return HeadRead::Closed,
            Ok(Ok(n)) => n,
            Err(_) if buf.is_empty() => return HeadRead::Closed,
            Err(_) => return HeadRead::Refuse(408, "request head not received in time"),
        };
        meter.touch();
        meter.from_client.fetch_add(n as u64, Ordering::Relaxed);
        deadline.get_or_insert_with(|| tokio::time::Instant::now() + whole);
    }
}

/// Reads more into `buf`; `Ok(0)` is end of stream.
async fn fill<R: AsyncRead + Unpin>(
    r: &mut R,
    buf: &mut Vec<u8>,
    idle: Duration,
) -> Result<usize, Stop> {
    // Into spare capacity: no zero-filling a chunk on every read.
    buf.reserve(CHUNK);
    match tokio::time::timeout(idle, r.read_buf(buf)).await {
        Ok(Ok(n)) => Ok(n),
        Ok(Err(e)) => Err(Stop::Io(e.to_string())),
        Err(_) => Err(Stop::Io(format!("idle for {idle:?}"))),
    }
}

/// Moves one body from `r` (starting with what is in `buf`) to `w`,
/// leaving any bytes after it in `buf`. The first `head` bytes of `buf` are
/// the message's head: they go out in one write with whatever part of the
/// body is already buffered, so a small message costs one send, not two.
#[allow(clippy::too_many_arguments)]
async fn forward_body<R, W>(
    r: &mut R,
    buf: &mut Vec<u8>,
    mut head: usize,
    w: &mut W,
    framing: Framing,
    idle: Duration,
    read: Option<&AtomicU64>,
    written: &AtomicU64,
    meter: &Meter,
) -> Result<(), Stop>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut chunked = Chunked::default();
    let mut left = match framing {
        Framing::None => 0,
        Framing::Length(n) => n,
        Framing::Chunked | Framing::UntilClose => u64::MAX,
    };
    loop {
        let (take, done) = match framing {
            Framing::Chunked => chunked.scan(&buf[head..]).map_err(Stop::BadBody)?,
            _ => {
                let t = (left.min((buf.len() - head) as u64)) as usize;
                left -= t as u64;
                (t, left == 0)
            }
        };
        let take = head + take;
        head = 0;
        if take > 0 {
            w.write_all(&buf[..take])
                .await
                .map_err(|e| Stop::Io(e.to_string()))?;
            written.fetch_add(take as u64, Ordering::Relaxed);
            buf.drain(..take);
        }
        if done {
            return w.flush().await.map_err(|e| Stop::Io(e.to_string()));
        }
        let n = fill(r, buf, idle).await?;
        if n == 0 {
            return if framing == Framing::UntilClose {
                w.flush().await.map_err(|e| Stop::Io(e.to_string()))
            } else {
                Err(Stop::Io("stream ended inside a body".into()))
            };
        }
        if let Some(c) = read {
            c.fetch_add(n as u64, Ordering::Relaxed);
        }
        meter.touch();
    }
}

/// Relays the upstream's response (any 1xx, then the final one) to the
/// client; returns the final status and whether the connection must close.
#[allow(clippy::too_many_arguments)]
async fn relay_response<R, W>(
    r: &mut R,
    buf: &mut Vec<u8>,
    w: &mut W,
    head_request: bool,
    idle: Duration,
    written: &AtomicU64,
    meter: &Meter,
) -> Result<(u16, bool), Stop>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    loop {
        let end = loop {
            if let Some(n) = head::head_end(buf) {
                break n;
            }
            if buf.len() >= MAX_HEAD {
                return Err(Stop::BadResponse("response head over 64 KiB".into()));
            }
            if fill(r, buf, idle).await? == 0 {
                return Err(Stop::BadResponse(
                    "upstream closed before a complete response".into(),
                ));
            }
        };
        let resp = head::parse_response(&buf[..end], head_request)
            .map_err(|e| Stop::BadResponse(format!("bad response from upstream: {e}")))?;
        if (100..200).contains(&resp.status) && resp.status != 101 {
            w.write_all(&buf[..end])
                .await
                .map_err(|e| Stop::Io(e.to_string()))?;
            written.fetch_add(end as u64, Ordering::Relaxed);
            buf.drain(..end);
            w.flush().await.map_err(|e| Stop::Io(e.to_string()))?;
            continue;
        }
        forward_body(r, buf, end, w, resp.framing, idle, None, written, meter).await?;
        return Ok((resp.status, resp.close));
    }
}

/// One access record per request.
#[allow(clippy::too_many_arguments)]
fn record(
    cfg: &RelayConfig,
    peer: SocketAddr,
    host: Option<&str>,
    bucket: Option<&str>,
    method: &str,
    key: &str,
    o: Outcome,
    started: Instant,
    from: u64,
    to: u64,
) {
    tracing::info!(
        target: "ossrelay::access",
        event = "request",
        relay = %cfg.name,
        client = %peer,
        host = host.unwrap_or("-"),
        bucket = bucket.unwrap_or("-"),
        method,
        key,
        status = o.status,
        bytes_from_client = from,
        bytes_to_client = to,
        duration_ms = started.elapsed().as_secs_f64() * 1000.0,
        decision = o.decision,
        reason = %o.reason,
        "{peer} {method} {}/{key} bucket={} -> {} {}",
        host.unwrap_or("-"),
        bucket.unwrap_or("-"),
        o.status,
        o.decision
    );
}
