//! Upstream addresses: `host:port`, `1.2.3.4:port` or `[v6]:port`.

use std::fmt;
use std::net::IpAddr;

/// An upstream `host:port`; the host is resolved per connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    /// A DNS name or a literal address.
    pub host: String,
    /// Destination port.
    pub port: u16,
}

impl Upstream {
    /// Parses `host:port`, `1.2.3.4:port` or `[v6]:port`.
    pub fn parse(text: &str) -> Result<Upstream, String> {
        let text = text.trim();
        let (host, port) = if let Some(rest) = text.strip_prefix('[') {
            let (host, after) = rest
                .split_once(']')
                .ok_or_else(|| format!("{text:?}: missing ']' after IPv6 address"))?;
            let port = after
                .strip_prefix(':')
                .ok_or_else(|| format!("{text:?}: missing port"))?;
            host.parse::<std::net::Ipv6Addr>()
                .map_err(|_| format!("{text:?}: {host:?} is not an IPv6 address"))?;
            (host, port)
        } else {
            match text.rsplit_once(':') {
                None => return Err(format!("{text:?}: missing port")),
                Some((host, _)) if host.contains(':') => {
                    return Err(format!("{text:?}: write IPv6 addresses as [addr]:port"))
                }
                Some((host, port)) => (host, port),
            }
        };
        if host.is_empty() {
            return Err(format!("{text:?}: missing host"));
        }
        if host.parse::<IpAddr>().is_err() && !valid_hostname(host) {
            return Err(format!("{text:?}: {host:?} is not a valid host name"));
        }
        let port: u16 =
            port.parse()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| match port.parse::<u64>() {
                    Ok(n) if n > 65_535 => format!("{text:?}: port {n} is out of range (1-65535)"),
                    _ => format!("{text:?}: port must be 1..=65535"),
                })?;
        Ok(Upstream {
            host: host.to_string(),
            port,
        })
    }
}

impl fmt::Display for Upstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

fn valid_hostname(host: &str) -> bool {
    let host = host.strip_suffix('.').unwrap_or(host);
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}
