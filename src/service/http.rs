//! One client connection of a `protocol = "http"` relay: read each request
//! head, refuse what is malformed or not allowed, and forward the rest
//! byte for byte to the route's upstream, framing bodies and responses so
//! that every request gets its own access record.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use super::Context;
use crate::config::{Gateway, RelayConfig, Target};
use crate::connector::pool::{self, Pool};
use crate::observe::access::CloseReason;
use crate::observe::metrics::Refused;
use crate::policy::action;
use crate::policy::statement::Verdict;
use crate::pump::copy::{Direction, Meter};
#[cfg(target_os = "linux")]
use crate::pump::exact::{splice_exact, Short};
use crate::pump::stream::{halves, AsTcp, Halvable, Reader, Writer};
use crate::tls::HandshakeError;
use crate::wire::http_head::{self as head, Chunked, Framing, MAX_HEAD};
use crate::wire::oss_error::error_response;

/// Read size for bodies.
const CHUNK: usize = 64 * 1024;

/// What one request ended as, for its access record.
struct Outcome {
    status: u16,
    decision: &'static str,
    reason: String,
}

/// What an access record says the request was.
#[derive(Clone, Copy)]
struct Named<'r> {
    host: Option<&'r str>,
    bucket: Option<&'r str>,
    method: &'r str,
    key: &'r str,
    /// The OSS action the policy saw; `-` before it looked.
    action: &'static str,
    access_key: Option<&'r str>,
    /// The deciding policy statement, numbered from 1.
    statement: Option<usize>,
    /// The upstream connection came from the pool.
    reused: bool,
}

/// A request before its head could be parsed.
const UNNAMED: Named<'static> = Named {
    host: None,
    bucket: None,
    method: "-",
    key: "",
    action: "-",
    access_key: None,
    statement: None,
    reused: false,
};

/// A body with at least this much left after what came with its head is
/// spliced: below it, a pipe and two splices per read cost more than a
/// copy (as for the tcp relay's pump).
#[cfg(target_os = "linux")]
const SPLICE_FROM: u64 = crate::pump::splice::MIN_USEFUL as u64;

/// Why an exchange stopped early.
enum Stop {
    /// The client's body framing is broken.
    BadBody(&'static str),
    /// The upstream's response is broken or it went away.
    BadResponse(String),
    /// A socket error or timeout.
    Io(String),
}

/// One client connection of the gateway: its halves, what has been read
/// and not yet forwarded, and the upstream connection kept between
/// requests.
struct Session<'a> {
    ctx: &'a Context,
    gw: &'a Gateway,
    peer: SocketAddr,
    local: Option<SocketAddr>,
    fd: i32,
    meter: &'a Meter,
    cr: Reader,
    cw: Writer,
    /// Bytes read from the client and not yet forwarded.
    buf: Vec<u8>,
    up: Option<Upstream>,
    /// Cancelled when the relay starts draining.
    drain: CancellationToken,
}

/// A request that passed the policy, and where it goes.
struct Allowed<'a> {
    req: head::Request,
    target: Target<'a>,
    verdict: Verdict,
}

/// Serves one client connection until it closes, a request is refused, or
/// `force` is cancelled. Returns the upstream last used and why the
/// connection ended, for its record. While the relay drains, an idle
/// connection closes at once and a request in flight finishes with
/// `Connection: close`. Each request goes through the same steps: read
/// its head, decide, reach the upstream, exchange, record.
pub(super) async fn serve(
    ctx: &Context,
    gw: &Gateway,
    client: TcpStream,
    peer: SocketAddr,
    force: &CancellationToken,
    meter: &Meter,
) -> (Option<SocketAddr>, CloseReason) {
    let cfg = &ctx.cfg;
    let fd = client.as_raw_fd();
    let local = client.local_addr().ok();
    let client = match &cfg.tls {
        None => Halvable::Tcp(client),
        Some(tls) => match tls.accept_within(client, gw.head_timeout).await {
            Ok(s) => Halvable::Other(Box::new(s)),
            Err(e) => {
                super::log_client_handshake(cfg, ctx.id, fd, peer, e);
                return (None, CloseReason::TlsFailed);
            }
        },
    };
    let (cr, cw) = halves(client);
    let mut s = Session {
        ctx,
        gw,
        peer,
        local,
        fd,
        meter,
        cr,
        cw,
        buf: Vec::new(),
        up: None,
        drain: ctx.drain.child_token(),
    };
    let mut served = 0u64;
    let mut last = None;
    // One waiter on the stop token for the whole connection: a fresh one
    // per request would take the token's lock twice per request.
    let cancelled = force.cancelled();
    tokio::pin!(cancelled);
    let draining = s.drain.clone().cancelled_owned();
    tokio::pin!(draining);
    let mut drained = false;
    loop {
        let wait = if served == 0 {
            gw.head_timeout
        } else {
            cfg.idle_timeout
        };
        let got = tokio::select! {
            r = s.read_head(wait) => r,
            _ = &mut cancelled => return (last, CloseReason::Shutdown),
            _ = &mut draining, if !drained => {
                drained = true;
                if s.buf.is_empty() {
                    // Idle between requests: nothing is lost by closing
                    // now, and the drain need not wait for it.
                    let _ = s.cw.shutdown().await;
                    return (last, CloseReason::Shutdown);
                }
                // A request is arriving: let it finish; its response
                // closes the connection.
                s.read_head(wait).await
            }
        };
        let Some(end) = got else {
            return (last, s.ended());
        };
        let started = Instant::now();
        served += 1;
        let Some(allowed) = s.decide(end, started).await else {
            return (last, s.ended());
        };
        if !s.reach(&allowed, started, true).await {
            return (last, s.ended());
        }
        last = s.up.as_ref().map(|u| u.addr);
        // A pooled connection the upstream closed just as it was taken
        // must not fail the request: one whose body (if any) has already
        // arrived whole is sent again on a new connection if nothing of a
        // response came back.
        let whole = match allowed.req.framing {
            Framing::None => Some(end),
            Framing::Length(n) => usize::try_from(n)
                .ok()
                .map(|n| end + n)
                .filter(|&all| all <= s.buf.len()),
            _ => None,
        };
        let mut replay = whole
            .filter(|_| s.up.as_ref().is_some_and(|u| u.just_taken))
            .map(|all| s.buf[..all].to_vec());
        // Per request: bytes forwarded each way (head included).
        let (sent_up, sent_down) = (AtomicU64::new(0), AtomicU64::new(0));
        let result = loop {
            let r = tokio::select! {
                r = s.exchange(end, &allowed.req, &sent_up, &sent_down) => r,
                _ = &mut cancelled => Err(Stop::Io("shutting down".into())),
            };
            let again = match (replay.take(), &r) {
                (Some(again), Err(Stop::Io(_) | Stop::BadResponse(_)))
                    if sent_down.load(Ordering::Relaxed) == 0 =>
                {
                    again
                }
                _ => break r,
            };
            tracing::debug!(relay = %cfg.name, "{} TCP {}: a pooled upstream connection failed before any response; sending the request again on a new one", ctx.id, s.fd);
            drop(s.up.take());
            // `sent_up` counts this request's bytes gone from `buf` (sent,
            // or stripped); the rest of it is still at the front, and
            // anything after it (a pipelined request) follows.
            let sent = usize::try_from(sent_up.load(Ordering::Relaxed)).unwrap_or(usize::MAX);
            let pending = again.len().saturating_sub(sent).min(s.buf.len());
            let rest = s.buf.split_off(pending);
            s.buf = again;
            s.buf.extend_from_slice(&rest);
            if !s.reach(&allowed, started, false).await {
                return (last, s.ended());
            }
            last = s.up.as_ref().map(|u| u.addr);
            sent_up.store(0, Ordering::Relaxed);
        };
        let sent = (
            sent_up.load(Ordering::Relaxed),
            sent_down.load(Ordering::Relaxed),
        );
        if !s.conclude(&allowed, result, sent, started).await {
            return (last, s.ended());
        }
    }
}

impl Drop for Session<'_> {
    fn drop(&mut self) {
        self.release();
    }
}

impl<'a> Session<'a> {
    /// Puts the upstream connection back in this thread's pool if its last
    /// response completed and kept it alive; closes it otherwise.
    fn release(&mut self) {
        let Some(u) = self.up.take() else {
            return;
        };
        if u.reusable && u.buf.is_empty() && self.gw.pool.max_idle > 0 {
            let (key, fd) = (u.key, u.fd);
            POOL.with(|p| p.borrow_mut().put(key, fd, u, &self.gw.pool));
        }
    }

    /// Why the connection ended when the loop stops on its own.
    fn ended(&self) -> CloseReason {
        if self.drain.is_cancelled() {
            CloseReason::Shutdown
        } else {
            CloseReason::Eof
        }
    }

    /// Step 1: reads a request head into `buf`. `None` ends the connection
    /// (closed, or refused as malformed).
    async fn read_head(&mut self, wait: Duration) -> Option<usize> {
        let got = read_head(
            &mut self.cr,
            &mut self.buf,
            wait,
            self.gw.head_timeout,
            self.meter,
        )
        .await;
        match got {
            HeadRead::Head(n) => Some(n),
            HeadRead::Closed => None,
            HeadRead::Refuse(status, why) => {
                let sent = self
                    .reply_error(status, "InvalidRequest", why, None, "-")
                    .await;
                let outcome = Outcome {
                    status,
                    decision: "bad-request",
                    reason: why.into(),
                };
                self.record(UNNAMED, outcome, Instant::now(), (0, sent), None);
                None
            }
        }
    }

    /// Step 2: parses the head, routes it and checks the policy. Refusals
    /// are answered and recorded here: a denied request never reaches a
    /// connector.
    async fn decide(&mut self, end: usize, started: Instant) -> Option<Allowed<'a>> {
        let ctx = self.ctx;
        let (cfg, id, fd, peer) = (&ctx.cfg, ctx.id, self.fd, self.peer);
        let req = match head::parse_request(&self.buf[..end]) {
            Ok(r) => r,
            Err(why) => {
                let sent = self
                    .reply_error(400, "InvalidRequest", why, None, "-")
                    .await;
                tracing::warn!(relay = %cfg.name, "{id} TCP {fd}: bad request from {peer}: {why}");
                let outcome = Outcome {
                    status: 400,
                    decision: "bad-request",
                    reason: why.into(),
                };
                self.record(UNNAMED, outcome, started, (0, sent), None);
                return None;
            }
        };
        let gw = self.gw;
        let Some(target) = gw.target(&req.host, &req.path) else {
            let why = format!("no route for host {:?}", req.host);
            let sent = self
                .reply_error(421, "MisdirectedRequest", &why, None, &req.host)
                .await;
            let named = Named {
                host: Some(&req.host),
                bucket: None,
                method: &req.method,
                key: &req.path,
                ..UNNAMED
            };
            self.record(named, denied(421, why), started, (0, sent), None);
            return None;
        };
        if target.path_style && head::has_dot_segment(&req.path) {
            // The upstream might resolve the segment and serve another
            // bucket than the one checked below.
            let why = "a path-style request path may not have '.' or '..' segments";
            let sent = self
                .reply_error(400, "InvalidRequest", why, None, &req.host)
                .await;
            tracing::warn!(relay = %cfg.name, "{id} TCP {fd}: bad request from {peer}: {} {}{}: {why}", req.method, req.host, req.path);
            let outcome = Outcome {
                status: 400,
                decision: "bad-request",
                reason: why.into(),
            };
            let named = Named {
                host: Some(&req.host),
                bucket: target.bucket.as_deref(),
                method: &req.method,
                key: &target.key,
                ..UNNAMED
            };
            self.record(named, outcome, started, (0, sent), None);
            return None;
        }
        let query = req.target.split_once('?').map_or("", |(_, q)| q);
        let asked = action::Request {
            method: &req.method,
            bucket: target.bucket.as_deref(),
            key: &target.key,
            query,
            signals: &req.signals,
        };
        let verdict = gw.policy.judge(&asked, peer.ip());
        if let Err((_, why)) = &verdict.outcome {
            let message = format!("{why} (ossrelay endpoint policy)");
            let bucket = target.bucket.as_deref();
            let sent = self
                .reply_error(403, "AccessDenied", &message, bucket, &req.host)
                .await;
            tracing::warn!(relay = %cfg.name, "{id} TCP {fd}: denied {} {}{} from {peer}: {why}", req.method, req.host, req.path);
            let named = named(&req, &target, &verdict);
            let outcome = denied(403, why.clone());
            self.record(named, outcome, started, (0, sent), None);
            return None;
        }
        Some(Allowed {
            req,
            target,
            verdict,
        })
    }

    /// Step 3: makes sure an upstream connection to the request's route is
    /// open. False (after a 502) when it cannot be reached.
    /// `pooled`: an idle connection from the pool may serve.
    async fn reach(&mut self, a: &Allowed<'_>, started: Instant, pooled: bool) -> bool {
        if let Some(u) = self.up.as_mut().filter(|u| u.route == a.target.route) {
            u.reusable = false;
            u.just_taken = false;
            return true;
        }
        // A different route needs a different upstream connection: this
        // one goes back to the pool, and the route's comes from it.
        self.release();
        let pool = &self.gw.pool;
        let key = pool::key(self.ctx.id, a.target.route, a.target.upstream);
        let route = a.target.route;
        if let Some(mut u) = pooled
            .then(|| POOL.with(|p| p.borrow_mut().take(key, pool)))
            .flatten()
        {
            u.reusable = false;
            u.reused = true;
            u.just_taken = true;
            self.up = Some(u);
            return true;
        }
        match connect(
            self.ctx,
            a.target.upstream,
            (route, key),
            self.peer,
            self.local,
        )
        .await
        {
            Ok(u) => {
                self.up = Some(u);
                true
            }
            Err(why) => {
                let ctx = self.ctx;
                let (cfg, id, fd) = (&ctx.cfg, ctx.id, self.fd);
                tracing::warn!(relay = %cfg.name, "{id} TCP {fd}: connect to {} failed: {why}", a.target.upstream);
                let bucket = a.target.bucket.as_deref();
                let message = "the upstream cannot be reached";
                let sent = self
                    .reply_error(502, "BadGateway", message, bucket, &a.req.host)
                    .await;
                let outcome = Outcome {
                    status: 502,
                    decision: "allowed",
                    reason: why,
                };
                self.record(
                    named(&a.req, &a.target, &a.verdict),
                    outcome,
                    started,
                    (0, sent),
                    None,
                );
                false
            }
        }
    }

    /// Step 4: forwards the request's body and relays the response, both
    /// at once. Returns the response status and whether the upstream
    /// closes.
    async fn exchange(
        &mut self,
        end: usize,
        req: &head::Request,
        sent_up: &AtomicU64,
        sent_down: &AtomicU64,
    ) -> Result<(u16, bool), Stop> {
        let (idle, meter) = (self.ctx.cfg.idle_timeout, self.meter);
        let Some(u) = self.up.as_mut() else {
            return Err(Stop::Io("no upstream connection".into()));
        };
        // With pooling, the client's `Connection: close` is the client's:
        // the upstream connection stays open for the next client.
        let stripped = if req.close && self.gw.pool.max_idle > 0 {
            head::strip_connection_close(&mut self.buf, end)
        } else {
            0
        };
        // Counted as read from the client, though not forwarded.
        sent_up.fetch_add(stripped as u64, Ordering::Relaxed);
        let body = forward_body(
            &mut self.cr,
            &mut self.buf,
            end - stripped,
            &mut u.w,
            req.framing,
            idle,
            Direction::Up,
            sent_up,
            meter,
        );
        let resp = relay_response(
            &mut u.r,
            &mut u.buf,
            &mut self.cw,
            req.method == "HEAD",
            idle,
            sent_down,
            meter,
            Some(&self.drain),
        );
        let ((), (status, close)) = tokio::try_join!(body, resp)?;
        Ok((status, close))
    }

    /// Step 5: records the exchange and says whether the connection goes
    /// on to another request.
    async fn conclude(
        &mut self,
        a: &Allowed<'_>,
        result: Result<(u16, bool), Stop>,
        (from, to): (u64, u64),
        started: Instant,
    ) -> bool {
        self.meter.to_client.fetch_add(to, Ordering::Relaxed);
        let mut named = named(&a.req, &a.target, &a.verdict);
        named.reused = self.up.as_ref().is_some_and(|u| u.reused);
        let upstream = self.up.as_ref().map(|u| u.addr);
        match result {
            Ok((status, close)) => {
                if let Some(u) = self.up.as_mut() {
                    u.reusable = !close;
                }
                let outcome = Outcome {
                    status,
                    decision: "allowed",
                    reason: String::new(),
                };
                self.record(named, outcome, started, (from, to), upstream);
                if close || a.req.close {
                    let _ = self.cw.shutdown().await;
                    return false;
                }
                true
            }
            Err(stop) => {
                let (status, why) = match stop {
                    Stop::BadBody(why) => (400, why.to_string()),
                    Stop::BadResponse(why) => (502, why),
                    Stop::Io(why) => (0, why),
                };
                // Only a client that has seen nothing of the response can
                // still be told why.
                let mut to = to;
                if to == 0 && status != 0 {
                    let code = if status == 400 {
                        "InvalidRequest"
                    } else {
                        "BadGateway"
                    };
                    let reply = error_response(status, code, &why, named.bucket, &a.req.host);
                    if self.cw.write_all(&reply).await.is_ok() {
                        to = reply.len() as u64;
                        self.meter.to_client.fetch_add(to, Ordering::Relaxed);
                    }
                }
                let _ = self.cw.shutdown().await;
                let ctx = self.ctx;
                let (cfg, id, fd) = (&ctx.cfg, ctx.id, self.fd);
                tracing::warn!(relay = %cfg.name, "{id} TCP {fd}: {} {}{}: {why}", a.req.method, a.req.host, a.req.path);
                let outcome = Outcome {
                    status,
                    decision: "allowed",
                    reason: why,
                };
                self.record(named, outcome, started, (from, to), upstream);
                false
            }
        }
    }

    /// Answers with an OSS-style error and closes the client's side;
    /// returns the bytes written (counted on the meter too).
    async fn reply_error(
        &mut self,
        status: u16,
        code: &str,
        message: &str,
        bucket: Option<&str>,
        host: &str,
    ) -> u64 {
        let reply = error_response(status, code, message, bucket, host);
        let sent = match self.cw.write_all(&reply).await {
            Ok(()) => reply.len() as u64,
            Err(_) => 0,
        };
        let _ = self.cw.shutdown().await;
        self.meter.moved(Direction::Down, sent);
        sent
    }

    fn record(
        &self,
        named: Named<'_>,
        o: Outcome,
        started: Instant,
        sent: (u64, u64),
        upstream: Option<SocketAddr>,
    ) {
        let m = &self.ctx.metrics;
        m.request(named.bucket, o.status);
        match o.decision {
            "allowed" => m.decided(true),
            "denied" => {
                m.decided(false);
                m.refused(Refused::Policy);
            }
            _ => {}
        }
        record(&self.ctx.cfg, self.peer, named, o, started, sent, upstream);
    }
}

/// What the record of an allowed or denied request names.
fn named<'r>(req: &'r head::Request, target: &'r Target<'_>, v: &'r Verdict) -> Named<'r> {
    Named {
        host: Some(&req.host),
        bucket: target.bucket.as_deref(),
        method: &req.method,
        key: &target.key,
        action: v.action,
        access_key: v.access_key.as_deref(),
        statement: match &v.outcome {
            Ok(i) | Err((Some(i), _)) => Some(i + 1),
            Err((None, _)) => None,
        },
        reused: false,
    }
}

fn denied(status: u16, reason: String) -> Outcome {
    Outcome {
        status,
        decision: "denied",
        reason,
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
        Direction::Up,
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
        None,
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
    /// The address reached, for the records.
    addr: SocketAddr,
    r: Reader,
    w: Writer,
    buf: Vec<u8>,
    /// The socket, to check a pooled connection before reuse.
    fd: RawFd,
    /// Its pool key.
    key: pool::Key,
    /// The last response was complete and kept the connection alive.
    reusable: bool,
    /// It came from the pool.
    reused: bool,
    /// It came from the pool for the request now in flight, so it may have
    /// been closed by the upstream just before the request went out.
    just_taken: bool,
}

thread_local! {
    /// This worker thread's idle upstream connections (see
    /// `connector::pool`: a socket belongs to one thread's runtime).
    static POOL: RefCell<Pool<Upstream>> = RefCell::new(Pool::default());
}

/// A new upstream connection for `route` (whose pool key is `key`).
async fn connect(
    ctx: &Context,
    target: &crate::config::Upstream,
    (route, key): (Option<usize>, pool::Key),
    peer: SocketAddr,
    local: Option<SocketAddr>,
) -> Result<Upstream, String> {
    let connector = &ctx.connector;
    let (tcp, addr) = connector.connect_one(target).await?;
    let _ = tcp.set_nodelay(true);
    let fd = tcp.as_raw_fd();
    connector
        .send_proxy_header(&tcp, peer, local)
        .await
        .map_err(|e| format!("sending the PROXY header to {addr}: {e}"))?;
    let io = match &ctx.cfg.upstream_tls {
        None => Halvable::Tcp(tcp),
        Some(tls) => match connector.handshake(tls, &target.host, tcp).await {
            Ok(s) => Halvable::Other(Box::new(s)),
            Err(HandshakeError::Name(e)) => return Err(e),
            Err(HandshakeError::Failed(e)) => {
                return Err(format!("TLS handshake with {addr}: {e}"))
            }
            Err(HandshakeError::TimedOut) => {
                return Err(format!("TLS handshake with {addr} timed out"))
            }
        },
    };
    let (r, w) = halves(io);
    Ok(Upstream {
        route,
        addr,
        r,
        w,
        buf: Vec::new(),
        fd,
        key,
        reusable: false,
        reused: false,
        just_taken: false,
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
        meter.moved(Direction::Up, n as u64);
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
    dir: Direction,
    written: &AtomicU64,
    meter: &Meter,
) -> Result<(), Stop>
where
    R: AsyncRead + Unpin + AsTcp,
    W: AsyncWrite + Unpin + AsTcp,
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
            if dir == Direction::Down {
                meter.relay_moved(dir, take as u64);
            }
            buf.drain(..take);
        }
        if done {
            return w.flush().await.map_err(|e| Stop::Io(e.to_string()));
        }
        // The rest of a long body of known length goes socket to socket by
        // splice, as the tcp relay moves bytes; TLS on either side copies.
        #[cfg(target_os = "linux")]
        if matches!(framing, Framing::Length(_)) && left >= SPLICE_FROM && buf.is_empty() {
            if let (Some(src), Some(dst)) = (r.as_tcp(), w.as_tcp()) {
                match splice_exact(src, dst, left, idle, dir, written, meter).await {
                    Ok(()) => return Ok(()),
                    // Nothing moved: copy it all.
                    Err(Short::Unsupported) => {}
                    Err(Short::Ended) => return Err(Stop::Io("stream ended inside a body".into())),
                    Err(Short::Idle(d)) => return Err(Stop::Io(format!("idle for {d:?}"))),
                    Err(Short::Io(e)) => return Err(Stop::Io(e.to_string())),
                }
            }
        }
        let n = fill(r, buf, idle).await?;
        if n == 0 {
            return if framing == Framing::UntilClose {
                w.flush().await.map_err(|e| Stop::Io(e.to_string()))
            } else {
                Err(Stop::Io("stream ended inside a body".into()))
            };
        }
        // Reads from the client count for the pair and the relay as they
        // happen; responses count per request (the caller adds them to the
        // pair) and for the relay as they are written.
        if dir == Direction::Up {
            meter.moved(dir, n as u64);
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
    drain: Option<&CancellationToken>,
) -> Result<(u16, bool), Stop>
where
    R: AsyncRead + Unpin + AsTcp,
    W: AsyncWrite + Unpin + AsTcp,
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
            meter.relay_moved(Direction::Down, end as u64);
            buf.drain(..end);
            w.flush().await.map_err(|e| Stop::Io(e.to_string()))?;
            continue;
        }
        let mut end = end;
        let mut close = resp.close;
        if !close && drain.is_some_and(CancellationToken::is_cancelled) {
            // Draining: this is the connection's last response; say so,
            // so the client does not send another request into a close.
            const CLOSE: &[u8] = b"Connection: close\r\n";
            buf.splice(end - 2..end - 2, CLOSE.iter().copied());
            end += CLOSE.len();
            close = true;
        }
        forward_body(
            r,
            buf,
            end,
            w,
            resp.framing,
            idle,
            Direction::Down,
            written,
            meter,
        )
        .await?;
        return Ok((resp.status, close));
    }
}

/// One access record per request.
fn record(
    cfg: &RelayConfig,
    peer: SocketAddr,
    n: Named<'_>,
    o: Outcome,
    started: Instant,
    (from, to): (u64, u64),
    upstream: Option<SocketAddr>,
) {
    let (host, bucket, method, key) = (n.host, n.bucket, n.method, n.key);
    let upstream = upstream.map_or_else(|| "-".to_string(), |a| a.to_string());
    tracing::info!(
        target: "ossrelay::access",
        event = "request",
        relay = %cfg.name,
        client = %peer,
        host = host.unwrap_or("-"),
        bucket = bucket.unwrap_or("-"),
        method,
        key,
        action = n.action,
        access_key = n.access_key.unwrap_or("-"),
        statement = n.statement.unwrap_or(0),
        upstream_reused = n.reused,
        upstream = %upstream,
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
