//! A tiny HTTP proxy (stone's `proxy` stone): `CONNECT host:port` tunnels
//! and absolute-form requests (`GET http://host/path`), each checked
//! against a destination policy before any upstream connection is made.
//! After the first request head the connection is relayed as bytes.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::acl::{Acl, Action};
use crate::resolve::{lookup, Resolve};

/// Longest request head accepted.
pub const MAX_HEAD: usize = 64 * 1024;
/// How long a client may take to send its request head.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(30);

/// One destination rule: ports it covers and which addresses it allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DestRule {
    /// Port ranges this rule applies to.
    pub ports: Vec<RangeInclusive<u16>>,
    /// Addresses allowed on those ports.
    pub hosts: Acl,
    /// Host names (as the client asked for them) allowed on those ports.
    pub names: Vec<crate::pattern::HostPattern>,
}

/// Where a proxy may connect. With no rules every destination is allowed
/// (stone without `-x`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DestPolicy {
    /// Rules in definition order.
    pub rules: Vec<DestRule>,
    /// stone's `-x`: only the last rule whose ports match decides. Otherwise
    /// (TOML `proxy_allow`) any rule covering the port may allow it.
    pub last_match_wins: bool,
    /// stone's `proxy/v4only` (false) and `proxy/v6only` (true): only
    /// destinations of that address family.
    pub only_v6: Option<bool>,
    /// Bucket policy for requests to object-storage names (TOML only).
    pub buckets: Option<crate::gateway::BucketPolicy>,
}

impl DestPolicy {
    /// The bucket a request through the proxy names: the labels before a
    /// `*.suffix` name rule's suffix, or for a forwarded request to an
    /// exact name, the first path segment.
    pub fn bucket_of(&self, host: &str, path: Option<&str>) -> Option<String> {
        let names = self.rules.iter().flat_map(|r| &r.names);
        for n in names {
            if let Some(b) = n.prefix_of(host) {
                return Some(b.to_string());
            }
            if n.matches(host) {
                let first = path?.trim_start_matches('/').split(['/', '?']).next()?;
                return (!first.is_empty()).then(|| first.to_string());
            }
        }
        None
    }

    /// Whether a rule covering `port` allows the name `host` itself.
    pub fn allows_name(&self, host: &str, port: u16) -> bool {
        self.rules.iter().any(|r| {
            r.ports.iter().any(|p| p.contains(&port)) && r.names.iter().any(|n| n.matches(host))
        })
    }

    /// Whether `ip:port` may be reached.
    pub fn allows(&self, ip: IpAddr, port: u16) -> bool {
        if self.only_v6.is_some_and(|v6| v6 != ip.is_ipv6()) {
            return false;
        }
        if self.rules.is_empty() {
            return true;
        }
        let mut covering = self
            .rules
            .iter()
            .rev()
            .filter(|r| r.ports.iter().any(|p| p.contains(&port)));
        if self.last_match_wins {
            covering
                .next()
                .is_some_and(|rule| rule.hosts.check(ip).0 == Action::Allow)
        } else {
            covering.any(|rule| rule.hosts.check(ip).0 == Action::Allow)
        }
    }
}

/// Parses stone's `-x` port list: `80`, `80,443`, `8000-8080,443`.
pub fn parse_ports(text: &str) -> Result<Vec<RangeInclusive<u16>>, String> {
    text.split(',')
        .map(|part| {
            let (a, b) = part.split_once('-').unwrap_or((part, part));
            let a: u16 = a
                .parse()
                .map_err(|_| format!("{text:?}: {a:?} is not a port number"))?;
            let b: u16 = b
                .parse()
                .map_err(|_| format!("{text:?}: {b:?} is not a port number"))?;
            if a > b {
                return Err(format!("{text:?}: range {a}-{b} is backwards"));
            }
            Ok(a..=b)
        })
        .collect()
}

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
    resolver: &dyn Resolve,
    connect_timeout: Duration,
) -> io::Result<Setup> {
    let addrs =
        match tokio::time::timeout(connect_timeout, lookup(resolver, &target.host, target.port))
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
        match tokio::time::timeout(connect_timeout, TcpStream::connect(addr)).await {
            Ok(Ok(mut up)) => {
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
            Ok(Err(e)) => errors.push(format!("{addr}: {e}")),
            Err(_) => errors.push(format!("{addr}: timed out")),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::acl::{Cidr, Rule};

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

    #[test]
    fn policy_last_matching_port_list_wins() {
        let only = |cidr: &str| {
            Acl::new(vec![Rule {
                action: Action::Allow,
                block: Cidr::parse(cidr).unwrap(),
                mode: 0,
            }])
        };
        let p = DestPolicy {
            rules: vec![
                DestRule {
                    ports: parse_ports("1-65535").unwrap(),
                    hosts: only("10.0.0.0/8"),
                    names: vec![],
                },
                DestRule {
                    ports: parse_ports("80,443").unwrap(),
                    hosts: only("192.168.0.0/16"),
                    names: vec![],
                },
            ],
            last_match_wins: true,
            only_v6: None,
            buckets: None,
        };
        assert!(p.allows("10.1.1.1".parse().unwrap(), 22));
        assert!(!p.allows("10.1.1.1".parse().unwrap(), 80));
        assert!(p.allows("192.168.1.1".parse().unwrap(), 443));
        assert!(DestPolicy::default().allows("1.2.3.4".parse().unwrap(), 1));
        assert!(parse_ports("90-80").is_err());
        assert_eq!(
            parse_ports("80,8000-8080").unwrap(),
            vec![80..=80, 8000..=8080]
        );
        let union = DestPolicy {
            last_match_wins: false,
            ..p
        };
        assert!(union.allows("10.1.1.1".parse().unwrap(), 80));
        let v6 = DestPolicy {
            only_v6: Some(true),
            ..DestPolicy::default()
        };
        assert!(!v6.allows("10.1.1.1".parse().unwrap(), 80));
        assert!(v6.allows("::1".parse().unwrap(), 80));
    }
}
