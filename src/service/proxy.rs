//! A tiny HTTP proxy (stone's `proxy` stone): `CONNECT host:port` tunnels
//! and absolute-form requests (`GET http://host/path`), each checked
//! against a destination policy before any upstream connection is made.
//! After the first request head the connection is relayed as bytes.

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use super::http::OneRequest;
use super::tcp;
use super::{finish, Context};
use crate::observe::access::{AccessRecord, CloseReason};
use crate::policy::dest::DestPolicy;
use crate::pump::copy::{self, Direction, Meter};
use crate::resolve::lookup;

/// Longest request head accepted.
pub const MAX_HEAD: usize = 64 * 1024;
/// How long a client may take to send its request head.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(30);

/// What the client asked for.
#[derive(Debug, PartialEq, Eq)]
pub struct Target {
    /// Destination host.
    pub host: String,
    /// Destination port.
    pub port: u16,
    /// A CONNECT tunnel (reply 200 first) or a forwarded request.
    pub tunnel: bool,
    /// For forwarded requests: the head rewritten to origin-form.
    pub head: Vec<u8>,
}

fn split_host_port(authority: &str, default_port: Option<u16>) -> Option<(String, u16)> {
    if let Some(rest) = authority.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse().ok()?,
            None => default_port?,
        };
        return Some((host.to_string(), port));
    }
    match authority.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => Some((h.to_string(), p.parse().ok()?)),
        None => Some((authority.to_string(), default_port?)),
        _ => None,
    }
    .filter(|(h, p)| !h.is_empty() && *p != 0)
}

/// Parses a request head (everything up to and including the blank line).
pub fn parse_head(head: &[u8]) -> Result<Target, &'static str> {
    let text = std::str::from_utf8(head).map_err(|_| "request head is not UTF-8")?;
    let (line, rest) = text.split_once("\r\n").ok_or("no request line")?;
    let mut parts = line.split(' ');
    let (method, target, version) = match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(m), Some(t), Some(v), None) if v.starts_with("HTTP/1.") && !m.is_empty() => (m, t, v),
        _ => return Err("malformed request line"),
    };
    if method == "CONNECT" {
        let (host, port) = split_host_port(target, None).ok_or("CONNECT needs host:port")?;
        return Ok(Target {
            host,
            port,
            tunnel: true,
            head: Vec::new(),
        });
    }
    let after = target
        .strip_prefix("http://")
        .ok_or("only absolute http:// targets and CONNECT are proxied")?;
    let (authority, path) = match after.find('/') {
        Some(i) => (&after[..i], &after[i..]),
        None => (after, "/"),
    };
    let (host, port) = split_host_port(authority, Some(80)).ok_or("bad host in request target")?;
    // One request per upstream connection: the destination and bucket were
    // checked for this request only, so a kept-alive connection must not
    // carry the next one (which may name another bucket) past the checks.
    let mut head = format!("{method} {path} {version}\r\n");
    for h in rest.split("\r\n").filter(|l| !l.is_empty()) {
        let name = h
            .split(':')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        if !matches!(
            name.as_str(),
            "connection" | "proxy-connection" | "keep-alive"
        ) {
            head.push_str(h);
            head.push_str("\r\n");
        }
    }
    head.push_str("Connection: close\r\n\r\n");
    let head = head.into_bytes();
    Ok(Target {
        host,
        port,
        tunnel: false,
        head,
    })
}

/// Reads a request head; returns it and any bytes that followed it.
pub async fn read_head(client: &mut TcpStream) -> io::Result<(Vec<u8>, Vec<u8>)> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    loop {
        let n = client.read(&mut chunk).await?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "client closed before a full request head",
            ));
        }
        let scan_from = buf.len().saturating_sub(3);
        buf.extend_from_slice(&chunk[..n]);
        if let Some(pos) = buf[scan_from..].windows(4).position(|w| w == b"\r\n\r\n") {
            let end = scan_from + pos + 4;
            let rest = buf.split_off(end);
            return Ok((buf, rest));
        }
        if buf.len() > MAX_HEAD {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "request head over 64 KiB",
            ));
        }
    }
}

/// The outcome of setting up a proxied connection.
pub enum Setup {
    /// Connected; relay bytes from here on.
    Connected(TcpStream, SocketAddr),
    /// Refused with this status; nothing was connected.
    Refused(u16, String),
}

/// Resolves and connects to `target` if the policy allows it, then sends
/// the tunnel reply or the rewritten head plus any early body bytes.
pub async fn setup(
    client: &mut TcpStream,
    target: &Target,
    early: &[u8],
    policy: &DestPolicy,
    connector: &crate::connector::Connector,
) -> io::Result<Setup> {
    let connect_timeout = connector.timeout();
    let addrs = match tokio::time::timeout(
        connect_timeout,
        lookup(connector.resolver(), &target.host, target.port),
    )
    .await
    {
        Ok(Ok(a)) => a,
        Ok(Err(e)) => {
            return Ok(Setup::Refused(
                502,
                format!("cannot resolve {}: {e}", target.host),
            ))
        }
        Err(_) => {
            return Ok(Setup::Refused(
                504,
                format!("resolving {} timed out", target.host),
            ))
        }
    };
    let by_name = policy.allows_name(&target.host, target.port);
    let allowed: Vec<SocketAddr> = addrs
        .into_iter()
        .filter(|a| {
            let family_ok = policy.only_v6.is_none_or(|v6| v6 == a.is_ipv6());
            family_ok && (by_name || policy.allows(a.ip(), a.port()))
        })
        .collect();
    if allowed.is_empty() {
        return Ok(Setup::Refused(
            403,
            format!("destination {}:{} is not allowed", target.host, target.port),
        ));
    }
    let mut errors = Vec::new();
    for addr in allowed {
        match connector.connect_addr(addr).await {
            Ok(mut up) => {
                let _ = up.set_nodelay(true);
                if target.tunnel {
                    client
                        .write_all(b"HTTP/1.0 200 Connection established\r\n\r\n")
                        .await?;
                } else {
                    up.write_all(&target.head).await?;
                }
                if !early.is_empty() {
                    up.write_all(early).await?;
                }
                return Ok(Setup::Connected(up, addr));
            }
            Err(e) => errors.push(e),
        }
    }
    Ok(Setup::Refused(
        502,
        format!("cannot connect: {}", errors.join("; ")),
    ))
}

/// Sends a short error response and closes.
pub async fn refuse(client: &mut TcpStream, status: u16, why: &str) {
    let reason = match status {
        400 => "Bad Request",
        403 => "Forbidden",
        502 => "Bad Gateway",
        504 => "Gateway Timeout",
        _ => "Error",
    };
    let body = format!("{why}\n");
    let resp = format!(
        "HTTP/1.0 {status} {reason}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = client.write_all(resp.as_bytes()).await;
    let _ = client.shutdown().await;
}

/// Serves one proxy connection: check and connect its first request, then
/// relay that one request (under a bucket policy) or the whole pair.
#[allow(clippy::too_many_arguments)]
pub(super) async fn serve(
    ctx: &Context,
    policy: &DestPolicy,
    mut client: TcpStream,
    peer: SocketAddr,
    mode: u32,
    meter: &Meter,
    mut record: AccessRecord<'_>,
    force: &CancellationToken,
) {
    let cfg = &ctx.cfg;
    let fd = client.as_raw_fd();
    // Set by connect for an absolute-form request: relay just it.
    let mut one_request = None;
    let connected = tokio::select! {
        r = connect(ctx, &mut client, peer, policy, meter, &mut one_request) => r,
        _ = force.cancelled() => Err(CloseReason::Shutdown),
    };
    let (mut upstream, addr) = match connected {
        Ok(pair) => pair,
        Err(reason) => return finish(record, meter, reason),
    };
    let Some(one) = one_request else {
        record.upstream = Some(addr);
        let opened = match tcp::open(ctx, &client, &upstream, addr, peer, mode).await {
            Ok(o) => o,
            Err(reason) => return finish(record, meter, reason),
        };
        let dump = opened.dump.as_ref();
        let outcome = copy::relay(&client, &upstream, cfg.idle_timeout, force, meter, dump).await;
        tcp::close(ctx, client, upstream, opened, outcome, &mut record);
        let reason = record.reason;
        return finish(record, meter, reason);
    };
    // Proxy relays send no PROXY header (validation refuses `send`).
    record.upstream = Some(addr);
    let _ident = crate::connector::ident::register(&upstream, ctx.listen_port);
    crate::sockopt::set_options(&upstream, cfg);
    let r = tokio::select! {
        r = super::http::exchange_once(&mut client, &mut upstream, one, cfg.idle_timeout, meter) => r,
        _ = force.cancelled() => Err("shutting down".into()),
    };
    let reason = match r {
        Ok(_) => CloseReason::Eof,
        Err(why) => {
            tracing::debug!(relay = %cfg.name, "{} TCP {fd}: proxied request: {why}", ctx.id);
            CloseReason::Reset
        }
    };
    finish(record, meter, reason);
}

/// Proxy mode: read the request head, check the destination, connect.
/// Refusals are answered with an HTTP status before the close.
async fn connect(
    ctx: &Context,
    client: &mut TcpStream,
    peer: SocketAddr,
    policy: &DestPolicy,
    meter: &Meter,
    one_request: &mut Option<OneRequest>,
) -> Result<(TcpStream, SocketAddr), CloseReason> {
    let cfg = &ctx.cfg;
    let fd = client.as_raw_fd();
    let (head, early) = match tokio::time::timeout(HEAD_TIMEOUT, read_head(client)).await {
        Ok(Ok(pair)) => pair,
        Ok(Err(e)) => {
            tracing::warn!(relay = %cfg.name, "{} TCP {fd}: proxy request: {e}", ctx.id);
            refuse(client, 400, &e.to_string()).await;
            return Err(CloseReason::BadRequest);
        }
        Err(_) => {
            refuse(client, 400, "request head not received in time").await;
            return Err(CloseReason::BadRequest);
        }
    };
    meter.moved(Direction::Up, (head.len() + early.len()) as u64);
    let target = match parse_head(&head) {
        Ok(t) => t,
        Err(why) => {
            tracing::warn!(relay = %cfg.name, "{} TCP {fd}: proxy request: {why}", ctx.id);
            refuse(client, 400, why).await;
            return Err(CloseReason::BadRequest);
        }
    };
    tracing::info!(relay = %cfg.name, "proxy {fd} -> http://{}:{}", target.host, target.port);
    // With a bucket policy, an absolute-form request is relayed on its own
    // (see exchange_once), framed by its original head, which must be
    // unambiguous. Without one (stone's proxy) the pair is spliced as
    // stone does: later requests go to the same, already checked,
    // destination.
    // Under a bucket policy an absolute-form request is parsed in full: the
    // policy reads its method, query and signature headers.
    let req = if target.tunnel || policy.buckets.is_none() {
        None
    } else {
        match crate::wire::http_head::parse_request(&head) {
            Ok(r) => Some(r),
            Err(why) => {
                tracing::warn!(relay = %cfg.name, "{} TCP {fd}: proxy request: {why}", ctx.id);
                refuse(client, 400, why).await;
                return Err(CloseReason::BadRequest);
            }
        }
    };
    let early = match &req {
        None => early,
        Some(req) => {
            *one_request = Some(OneRequest {
                early,
                framing: req.framing,
                head_request: req.method == "HEAD",
            });
            Vec::new()
        }
    };
    if let (Some(bp), Some(req)) = (&policy.buckets, &req) {
        if crate::wire::http_head::has_dot_segment(&req.path) {
            // A path-style bucket could change under an upstream that
            // resolves the segment.
            let why = "a request path may not have '.' or '..' segments under a bucket policy";
            tracing::warn!(relay = %cfg.name, "{} TCP {fd}: proxy request: {why}", ctx.id);
            refuse(client, 400, why).await;
            return Err(CloseReason::BadRequest);
        }
        let (bucket, key) = policy.locate(&target.host, &req.path);
        let asked = crate::policy::action::Request {
            method: &req.method,
            bucket: bucket.as_deref(),
            key: &key,
            query: req.target.split_once('?').map_or("", |(_, q)| q),
            signals: &req.signals,
        };
        let verdict = bp.judge(&asked, peer.ip());
        if let Err((statement, why)) = &verdict.outcome {
            tracing::warn!(
                relay = %cfg.name,
                action = verdict.action,
                access_key = verdict.access_key.as_deref().unwrap_or("-"),
                bucket = bucket.as_deref().unwrap_or("-"),
                key = %key,
                statement = statement.map_or(0, |i| i + 1),
                "{} TCP {fd}: proxy denied {} http://{}{}: {why}", ctx.id, req.method, target.host, req.path
            );
            let reply = crate::wire::oss_error::error_response(
                403,
                "AccessDenied",
                &format!("{why} (ossrelay endpoint policy)"),
                bucket.as_deref(),
                &target.host,
            );
            let _ = client.write_all(&reply).await;
            let _ = client.shutdown().await;
            return Err(CloseReason::RefusedDestination);
        }
    }
    if let (Some(bp), true) = (&policy.buckets, target.tunnel) {
        let bucket = policy.bucket_of(&target.host);
        if let crate::policy::statement::Decision::Denied { reason: why, .. } =
            bp.decide_opaque(bucket.as_deref(), peer.ip())
        {
            tracing::warn!(relay = %cfg.name, "{} TCP {fd}: proxy denied {}:{}: {why}", ctx.id, target.host, target.port);
            refuse(client, 403, &why).await;
            return Err(CloseReason::RefusedDestination);
        }
    }
    let connected = match setup(client, &target, &early, policy, &ctx.connector).await {
        Ok(Setup::Connected(up, addr)) => Ok((up, addr)),
        Ok(Setup::Refused(status, why)) => {
            tracing::warn!(relay = %cfg.name, "{} TCP {fd}: proxy {status}: {why}", ctx.id);
            refuse(client, status, &why).await;
            Err(if status == 403 {
                CloseReason::RefusedDestination
            } else {
                CloseReason::ConnectFailed
            })
        }
        Err(e) => {
            tracing::debug!(relay = %cfg.name, "{} TCP {fd}: proxy: {e}", ctx.id);
            Err(CloseReason::Reset)
        }
    };
    // A tunnel that carries TLS: police its server name too, since it
    // need not match the CONNECT target.
    let (mut up, addr) = connected?;
    if let (Some(bp), true) = (&policy.buckets, target.tunnel) {
        use super::sni::{self, Hello};
        let mut hello = Vec::new();
        let name = match sni::read_hello(client, &mut hello, HEAD_TIMEOUT).await {
            Hello::Name(name) => name,
            // Plain HTTP inside a tunnel could name any bucket in request
            // after request; with a bucket policy only TLS (checked by its
            // server name) or absolute-form requests (checked one by one)
            // may pass.
            Hello::Bad(_) if hello.first().is_some_and(|&b| b != 0x16) => {
                tracing::warn!(relay = %cfg.name, "{} TCP {fd}: proxy tunnel to {} carries no TLS; refused under the bucket policy (send plain HTTP as absolute-form requests)", ctx.id, target.host);
                let _ = client.shutdown().await;
                return Err(CloseReason::RefusedDestination);
            }
            Hello::Bad(_) | Hello::Closed => return Err(CloseReason::BadRequest),
        };
        let bucket = name.as_deref().and_then(|n| policy.bucket_of(n));
        if let crate::policy::statement::Decision::Denied { reason: why, .. } =
            bp.decide_opaque(bucket.as_deref(), peer.ip())
        {
            tracing::warn!(relay = %cfg.name, "{} TCP {fd}: proxy tunnel to {}: server name {name:?}: {why}", ctx.id, target.host);
            let sent = sni::alert(client, sni::ACCESS_DENIED).await;
            meter.moved(Direction::Down, sent);
            return Err(CloseReason::RefusedDestination);
        }
        meter.moved(Direction::Up, hello.len() as u64);
        up.write_all(&hello).await.map_err(|_| CloseReason::Reset)?;
    }
    Ok((up, addr))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads() {
        let t = parse_head(b"CONNECT oss.example:443 HTTP/1.1\r\nHost: oss.example:443\r\n\r\n")
            .unwrap();
        assert_eq!(
            (t.host.as_str(), t.port, t.tunnel),
            ("oss.example", 443, true)
        );
        let t = parse_head(
            b"GET http://10.0.0.1:8080/a/b?c HTTP/1.1\r\nHost: 10.0.0.1:8080\r\nProxy-Connection: keep-alive\r\nConnection: keep-alive\r\n\r\n",
        )
        .unwrap();
        assert_eq!(
            (t.host.as_str(), t.port, t.tunnel),
            ("10.0.0.1", 8080, false)
        );
        assert_eq!(
            t.head, b"GET /a/b?c HTTP/1.1\r\nHost: 10.0.0.1:8080\r\nConnection: close\r\n\r\n",
            "one request per connection"
        );
        let t = parse_head(b"GET http://[::1]/ HTTP/1.0\r\n\r\n").unwrap();
        assert_eq!((t.host.as_str(), t.port), ("::1", 80));
        assert!(parse_head(b"GET /local HTTP/1.1\r\n\r\n").is_err());
        assert!(parse_head(b"CONNECT nohost HTTP/1.1\r\n\r\n").is_err());
        assert!(parse_head(b"garbage\r\n\r\n").is_err());
    }
}
