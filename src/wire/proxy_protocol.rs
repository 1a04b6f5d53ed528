//! PROXY protocol v1 (text) and v2 (binary), as HAProxy specifies it:
//! reading the header a load balancer puts in front of a connection, so
//! logs and ACLs see the real client, and writing one towards an upstream.
//! The header is read with `peek` and consumed exactly, so the bytes after
//! it stay in the socket and the pair can still be spliced.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use tokio::net::TcpStream;

/// The v2 signature.
const SIG: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// The longest v1 header (including CRLF).
const V1_MAX: usize = 107;

/// A PROXY protocol version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// Text: `PROXY TCP4 src dst sport dport\r\n`.
    V1,
    /// Binary.
    V2,
}

impl Version {
    /// Parses `"v1"` or `"v2"`.
    pub fn parse(text: &str) -> Result<Version, String> {
        match text {
            "v1" => Ok(Version::V1),
            "v2" => Ok(Version::V2),
            other => Err(format!("{other:?}: expected \"v1\" or \"v2\"")),
        }
    }
}

/// What a complete header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parsed {
    /// The header is this long and names this original client.
    Proxied(usize, SocketAddr),
    /// The header is this long and carries no address (LOCAL, UNKNOWN):
    /// the connection's own peer is the client.
    Local(usize),
}

/// Parses the start of `buf`: `Ok(None)` means more bytes are needed.
pub fn parse(buf: &[u8], want: Version) -> Result<Option<Parsed>, String> {
    match want {
        Version::V1 => parse_v1(buf),
        Version::V2 => parse_v2(buf),
    }
}

fn parse_v1(buf: &[u8]) -> Result<Option<Parsed>, String> {
    let prefix = b"PROXY ";
    let n = buf.len().min(prefix.len());
    if buf[..n] != prefix[..n] {
        return Err("no PROXY v1 header".into());
    }
    let Some(end) = buf.windows(2).position(|w| w == b"\r\n") else {
        return if buf.len() >= V1_MAX {
            Err("PROXY v1 header longer than 107 bytes".into())
        } else {
            Ok(None)
        };
    };
    let len = end + 2;
    if len > V1_MAX {
        return Err("PROXY v1 header longer than 107 bytes".into());
    }
    let line =
        std::str::from_utf8(&buf[..end]).map_err(|_| "PROXY v1 header is not text".to_string())?;
    let f: Vec<&str> = line.split(' ').collect();
    match f.as_slice() {
        ["PROXY", "UNKNOWN", ..] => Ok(Some(Parsed::Local(len))),
        ["PROXY", fam @ ("TCP4" | "TCP6"), src, _dst, sport, _dport] => {
            let ip: IpAddr = src
                .parse()
                .map_err(|_| format!("PROXY v1: bad source address {src:?}"))?;
            if ip.is_ipv4() != (*fam == "TCP4") {
                return Err(format!("PROXY v1: {src} is not a {fam} address"));
            }
            let port: u16 = sport
                .parse()
                .map_err(|_| format!("PROXY v1: bad source port {sport:?}"))?;
            Ok(Some(Parsed::Proxied(len, SocketAddr::new(ip, port))))
        }
        _ => Err(format!("malformed PROXY v1 header {line:?}")),
    }
}

fn parse_v2(buf: &[u8]) -> Result<Option<Parsed>, String> {
    let n = buf.len().min(SIG.len());
    if buf[..n] != SIG[..n] {
        return Err("no PROXY v2 header".into());
    }
    if buf.len() < 16 {
        return Ok(None);
    }
    let (ver_cmd, fam) = (buf[12], buf[13]);
    if ver_cmd >> 4 != 2 {
        return Err("PROXY v2: bad version".into());
    }
    let len = 16 + usize::from(u16::from_be_bytes([buf[14], buf[15]]));
    if buf.len() < len {
        return Ok(None);
    }
    let body = &buf[16..len];
    match ver_cmd & 0x0F {
        0 => return Ok(Some(Parsed::Local(len))),
        1 => {}
        _ => return Err("PROXY v2: unknown command".into()),
    }
    let addr = match fam {
        0x11 | 0x12 if body.len() >= 12 => SocketAddr::new(
            IpAddr::V4(Ipv4Addr::new(body[0], body[1], body[2], body[3])),
            u16::from_be_bytes([body[8], body[9]]),
        ),
        0x21 | 0x22 if body.len() >= 36 => {
            let mut a = [0u8; 16];
            a.copy_from_slice(&body[..16]);
            SocketAddr::new(
                IpAddr::V6(Ipv6Addr::from(a)),
                u16::from_be_bytes([body[32], body[33]]),
            )
        }
        0x00 => return Ok(Some(Parsed::Local(len))),
        _ => {
            return Err(format!(
                "PROXY v2: unsupported or short address block (family {fam:#04x})"
            ))
        }
    };
    Ok(Some(Parsed::Proxied(len, addr)))
}

/// Reads the header at the start of `stream` within `limit`, consuming it
/// exactly. Returns the original client, or `None` for LOCAL/UNKNOWN.
pub async fn read(
    stream: &TcpStream,
    want: Version,
    limit: Duration,
) -> io::Result<Option<SocketAddr>> {
    let work = async {
        let mut buf = vec![0u8; 536];
        loop {
            let n = stream.peek(&mut buf).await?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "closed before the PROXY header",
                ));
            }
            match parse(&buf[..n], want)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?
            {
                None if n == buf.len() => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "PROXY header too long",
                    ))
                }
                None => {
                    // Wait for more bytes than the peek already saw.
                    stream.readable().await?;
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                Some(p) => {
                    let (len, addr) = match p {
                        Parsed::Proxied(len, a) => (len, Some(a)),
                        Parsed::Local(len) => (len, None),
                    };
                    let mut header = vec![0u8; len];
                    let mut got = 0;
                    while got < len {
                        stream.readable().await?;
                        match stream.try_read(&mut header[got..]) {
                            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                            Ok(k) => got += k,
                            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                            Err(e) => return Err(e),
                        }
                    }
                    return Ok(addr);
                }
            }
        }
    };
    tokio::time::timeout(limit, work).await.unwrap_or_else(|_| {
        Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "no PROXY header in time",
        ))
    })
}

/// The header announcing `client` connecting to `local`.
pub fn header(version: Version, client: SocketAddr, local: SocketAddr) -> Vec<u8> {
    let (client, local) = match (client, local) {
        (SocketAddr::V4(c), SocketAddr::V6(l)) => match l.ip().to_ipv4_mapped() {
            Some(v4) => (SocketAddr::V4(c), SocketAddr::new(IpAddr::V4(v4), l.port())),
            None => (
                SocketAddr::new(IpAddr::V6(c.ip().to_ipv6_mapped()), c.port()),
                SocketAddr::V6(l),
            ),
        },
        (SocketAddr::V6(c), SocketAddr::V4(l)) => (
            SocketAddr::V6(c),
            SocketAddr::new(IpAddr::V6(l.ip().to_ipv6_mapped()), l.port()),
        ),
        pair => pair,
    };
    match version {
        Version::V1 => {
            let fam = if client.is_ipv4() { "TCP4" } else { "TCP6" };
            format!(
                "PROXY {fam} {} {} {} {}\r\n",
                client.ip(),
                local.ip(),
                client.port(),
                local.port()
            )
            .into_bytes()
        }
        Version::V2 => {
            let mut out = SIG.to_vec();
            out.push(0x21);
            match (client.ip(), local.ip()) {
                (IpAddr::V4(c), IpAddr::V4(l)) => {
                    out.push(0x11);
                    out.extend_from_slice(&12u16.to_be_bytes());
                    out.extend_from_slice(&c.octets());
                    out.extend_from_slice(&l.octets());
                }
                (c, l) => {
                    let v6 = |ip: IpAddr| match ip {
                        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
                        IpAddr::V6(v6) => v6,
                    };
                    out.push(0x21);
                    out.extend_from_slice(&36u16.to_be_bytes());
                    out.extend_from_slice(&v6(c).octets());
                    out.extend_from_slice(&v6(l).octets());
                }
            }
            out.extend_from_slice(&client.port().to_be_bytes());
            out.extend_from_slice(&local.port().to_be_bytes());
            out
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_round_trip_and_bad_ones_fail() {
        let c: SocketAddr = "10.0.10.30:37104".parse().unwrap();
        let l: SocketAddr = "172.31.10.171:80".parse().unwrap();
        for v in [Version::V1, Version::V2] {
            let h = header(v, c, l);
            let mut with_data = h.clone();
            with_data.extend_from_slice(b"GET / HTTP/1.1\r\n");
            assert_eq!(
                parse(&with_data, v).unwrap(),
                Some(Parsed::Proxied(h.len(), c))
            );
            assert_eq!(parse(&h[..h.len() - 1], v).unwrap(), None, "incomplete");
        }
        assert_eq!(
            header(Version::V1, c, l),
            b"PROXY TCP4 10.0.10.30 172.31.10.171 37104 80\r\n".to_vec()
        );
        let c6: SocketAddr = "[fd00::1]:5000".parse().unwrap();
        let h = header(Version::V2, c6, l);
        assert_eq!(
            parse(&h, Version::V2).unwrap(),
            Some(Parsed::Proxied(h.len(), c6))
        );
        assert!(parse(b"GET / HTTP/1.1\r\n", Version::V1).is_err());
        assert!(parse(b"PROXY TCP4 1.2.3.4 5.6.7.8 x 80\r\n", Version::V1).is_err());
        assert!(
            parse(&header(Version::V1, c, l), Version::V2).is_err(),
            "v1 where v2 is wanted"
        );
        assert_eq!(
            parse(b"PROXY UNKNOWN\r\n", Version::V1).unwrap(),
            Some(Parsed::Local(15))
        );
    }
}
