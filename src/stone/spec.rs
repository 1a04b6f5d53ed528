//! One `<stone>`: `<host>:<port> <sport> [<xhost>...]` and its extensions.

use std::net::{IpAddr, ToSocketAddrs};

use super::services;
use crate::acl::{Action, Cidr, Rule};

/// The upstream side, `<host>:<port>[/<ext>,...]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Host name or literal, resolved per connection.
    pub host: String,
    /// Port number (names are looked up in /etc/services).
    pub port: u16,
    /// `/udp`
    pub udp: bool,
    /// `/v6`: resolve and connect over IPv6.
    pub v6: bool,
    /// `/ssl`: speak TLS to the destination (`-q` options).
    pub ssl: bool,
    /// `host` is the path of a unix-domain socket.
    pub unix: bool,
    /// `/http`: relay the stream over an HTTP request (the word after the
    /// sport).
    pub http: bool,
    /// `/proxy` (false) or `/mproxy` (true): insert the word after the
    /// sport as a header into requests.
    pub header_every: Option<bool>,
    /// `/nobackup`: ignore `-b` for this stone.
    pub nobackup: bool,
}

/// The listening side, `[[<host>][%<intf>]:]<port>[/<ext>,...]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listen {
    /// Local address; unspecified when only a port is given.
    pub addr: Option<IpAddr>,
    /// `%intf`: bind to this interface (SO_BINDTODEVICE).
    pub interface: Option<String>,
    /// Port number.
    pub port: u16,
    /// `/udp`
    pub udp: bool,
    /// `/v6` or `/v6only`
    pub v6: bool,
    /// `/v6only`
    pub v6only: bool,
    /// `/ssl`: clients speak TLS (`-z` options).
    pub ssl: bool,
    /// `/http`: clients send an HTTP request head first.
    pub http: bool,
}

/// A parsed `<stone>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stone {
    /// Where connections go.
    pub target: Target,
    /// Where connections come from.
    pub listen: Listen,
    /// Client rules from the xhost list.
    pub acl: Vec<Rule>,
    /// What happens to clients no xhost matches.
    pub acl_default: Action,
    /// The words this stone was parsed from, for messages.
    pub words: Vec<String>,
    /// `-T` in force when this stone was defined (seconds).
    pub timeout: Option<u64>,
    /// `-I` in force when this stone was defined.
    pub source: Option<std::net::SocketAddr>,
    /// A `health` stone.
    pub health: bool,
    /// An `identd` stone.
    pub identd: bool,
    /// For `proxy` stones: the `-x` destination rules in force.
    pub proxy: Option<crate::policy::dest::DestPolicy>,
    /// `/ssl` on the sport: the `-z` options in force.
    pub tls_server: Option<crate::tls::ServerTlsSpec>,
    /// `/ssl` on the destination: the `-q` options in force.
    pub tls_client: Option<crate::tls::ClientTlsSpec>,
    /// `/http`, `/proxy`, `/mproxy`.
    pub rewrite: Option<crate::config::rewrite::Rewrite>,
}

/// Extensions that stone has and ossrelay does not (yet) implement. Each
/// is refused with this explanation rather than ignored.
fn unsupported_ext(ext: &str, side: &str) -> Option<String> {
    let why = match ext {
        "base" => "MIME base64 encoding of the stream is not implemented",
        "block" => "the blocking I/O mode is not implemented (ossrelay is always non-blocking)",
        "ident" => "ident (RFC 1413) lookups of clients are not implemented",
        "apop" => "APOP authentication rewriting is not implemented",
        _ => return None,
    };
    Some(format!("{side} extension /{ext}: {why}"))
}

fn port_number(text: &str, udp: bool, what: &str) -> Result<u16, String> {
    if let Ok(n) = text.parse::<u16>() {
        return Ok(n);
    }
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("{what}: port {text} is out of range (0-65535)"));
    }
    services::lookup(text, if udp { "udp" } else { "tcp" }).ok_or_else(|| {
        format!("{what}: unknown port {text:?} (not a number or a service in /etc/services)")
    })
}

fn split_exts(text: &str) -> (&str, Vec<&str>) {
    match text.split_once('/') {
        Some((base, exts)) => (base, exts.split(',').collect()),
        None => (text, Vec::new()),
    }
}

/// Parses `<host>:<port>[/<ext>,...]`.
pub fn parse_target(text: &str) -> Result<Target, String> {
    // An IPv6 literal contains ':' too; the port is after the last one.
    let (base, exts) = split_exts(text);
    let (host, port) = base
        .rsplit_once(':')
        .ok_or_else(|| format!("{text:?}: expected <host>:<port>"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err(format!("{text:?}: missing host"));
    }
    let mut t = Target {
        host: host.to_string(),
        port: 0,
        udp: false,
        v6: false,
        ssl: false,
        unix: false,
        http: false,
        header_every: None,
        nobackup: false,
    };
    for ext in exts {
        match ext {
            "tcp" => t.udp = false,
            "udp" => t.udp = true,
            "v6" => t.v6 = true,
            "ssl" => t.ssl = true,
            "http" => t.http = true,
            "proxy" => t.header_every = Some(false),
            "mproxy" => t.header_every = Some(true),
            "nobackup" => t.nobackup = true,
            other => {
                return Err(unsupported_ext(other, "port")
                    .unwrap_or_else(|| format!("{text:?}: unknown port extension /{other}")))
            }
        }
    }
    t.port = port_number(port, t.udp, text)?;
    if t.port == 0 {
        return Err(format!("{text:?}: destination port 0 is not allowed"));
    }
    Ok(t)
}

/// Parses a unix-domain destination: a path starting with `/` or `./`,
/// with the same extensions as `<host>:<port>`.
pub fn parse_unix_target(text: &str) -> Result<Target, String> {
    // The extensions follow the last '/', when every word there is one.
    let (path, exts) = match text.rsplit_once('/') {
        Some((p, e))
            if !p.is_empty() && !e.is_empty() && e.split(',').all(|x| x == "ssl" || x == "tcp") =>
        {
            (p, e)
        }
        _ => (text, ""),
    };
    if path.ends_with('/') {
        return Err(format!(
            "{text:?}: a unix-domain socket path must name a file"
        ));
    }
    Ok(Target {
        host: path.to_string(),
        port: 0,
        udp: false,
        v6: false,
        ssl: exts.split(',').any(|x| x == "ssl"),
        unix: true,
        http: false,
        header_every: None,
        nobackup: false,
    })
}

/// Parses `[[<host>][%<intf>]:]<port>[/<ext>,...]`.
pub fn parse_listen(text: &str) -> Result<Listen, String> {
    let (base, exts) = split_exts(text);
    let (host_part, port) = match base.rsplit_once(':') {
        Some((h, p)) => (Some(h), p),
        None => (None, base),
    };
    let mut l = Listen {
        addr: None,
        interface: None,
        port: 0,
        udp: false,
        v6: false,
        v6only: false,
        ssl: false,
        http: false,
    };
    for ext in exts {
        match ext {
            "tcp" => l.udp = false,
            "udp" => l.udp = true,
            "v6" => l.v6 = true,
            "v6only" => {
                l.v6 = true;
                l.v6only = true;
            }
            "ssl" => l.ssl = true,
            "http" => l.http = true,
            other => {
                return Err(unsupported_ext(other, "sport")
                    .unwrap_or_else(|| format!("{text:?}: unknown sport extension /{other}")))
            }
        }
    }
    if let Some(h) = host_part {
        let (host, intf) = match h.split_once('%') {
            Some((host, intf)) => (host, Some(intf)),
            None => (h, None),
        };
        if let Some(intf) = intf {
            if intf.is_empty() {
                return Err(format!("{text:?}: empty interface after %"));
            }
            l.interface = Some(intf.to_string());
        }
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if !host.is_empty() {
            l.addr = Some(resolve_local(host, l.v6).map_err(|e| format!("{text:?}: {e}"))?);
        }
    }
    l.port = port_number(port, l.udp, text)?;
    Ok(l)
}

fn resolve_local(host: &str, v6: bool) -> Result<IpAddr, String> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(ip);
    }
    let addrs = (host, 0)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {host:?}: {e}"))?;
    addrs
        .map(|a| a.ip())
        .find(|ip| ip.is_ipv6() == v6)
        .ok_or_else(|| {
            format!(
                "{host:?} has no {} address",
                if v6 { "IPv6" } else { "IPv4" }
            )
        })
}

/// Parses an xhost list. Entries are checked in order; `!` flips allow and
/// deny for the entries after it; a client matching none gets the opposite
/// of the mode in force at the end (deny after allow entries, allow after
/// `! host`), which is what stone 2.4 does.
pub fn parse_xhosts(words: &[String]) -> Result<(Vec<Rule>, Action), String> {
    let mut rules = Vec::new();
    let mut action = Action::Allow;
    for w in words {
        if w == "!" {
            action = match action {
                Action::Allow => Action::Deny,
                Action::Deny => Action::Allow,
            };
            continue;
        }
        let (host, exts) = split_exts(w);
        let mut bits: Option<u8> = None;
        let mut mode = 0u32;
        let mut v6 = false;
        for ext in exts {
            if ext == "v6" {
                v6 = true;
            } else if ext == "v4" {
                v6 = false;
            } else if let Some(m) = ext.strip_prefix('p') {
                mode = m
                    .parse()
                    .map_err(|_| format!("xhost {w:?}: p<mode> needs a number, got {m:?}"))?;
            } else if let Ok(b) = ext.parse::<u8>() {
                bits = Some(b);
            } else if let Ok(std::net::IpAddr::V4(mask)) = ext.parse::<IpAddr>() {
                let m = u32::from(mask);
                if m.leading_ones() + m.trailing_zeros() != 32 {
                    return Err(format!("xhost {w:?}: {ext} is not a contiguous netmask"));
                }
                bits = Some(m.leading_ones() as u8);
            } else {
                return Err(format!(
                    "xhost {w:?}: unknown extension /{ext} (use <bits>, p<mode>, v4 or v6)"
                ));
            }
        }
        let ip = resolve_local(host, v6 || host.contains(':'))
            .map_err(|e| format!("xhost {w:?}: {e}"))?;
        let text = match bits {
            Some(b) => format!("{ip}/{b}"),
            None => ip.to_string(),
        };
        let block = Cidr::parse(&text).map_err(|e| format!("xhost {w:?}: {e}"))?;
        rules.push(Rule {
            action,
            block,
            mode,
        });
    }
    let default = if words.is_empty() {
        Action::Allow
    } else {
        match action {
            Action::Allow => Action::Deny,
            Action::Deny => Action::Allow,
        }
    };
    Ok((rules, default))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        let t = parse_target("oss-ap-northeast-1-internal.aliyuncs.com:80").unwrap();
        assert_eq!(
            (t.host.as_str(), t.port, t.udp),
            ("oss-ap-northeast-1-internal.aliyuncs.com", 80, false)
        );
        let u = parse_target("10.0.0.1:53/udp").unwrap();
        assert!(u.udp);
        assert_eq!(parse_target("::1:80/v6").unwrap().host, "::1");
        assert!(parse_target("h:80/ssl").unwrap().ssl);
        let u = parse_unix_target("/run/app.sock/ssl").unwrap();
        assert_eq!(
            (u.host.as_str(), u.ssl, u.unix),
            ("/run/app.sock", true, true)
        );
        assert_eq!(parse_unix_target("./a/b").unwrap().host, "./a/b");
        assert!(parse_target("h:80/base").unwrap_err().contains("/base"));
        assert!(parse_target("h:80/bogus")
            .unwrap_err()
            .contains("unknown port extension"));
        assert!(parse_target("h").is_err());
    }

    #[test]
    fn ports_out_of_range_are_called_that() {
        let e = parse_target("h:70000").unwrap_err();
        assert!(e.contains("port 70000 is out of range"), "{e}");
        let e = parse_listen("70000").unwrap_err();
        assert!(e.contains("port 70000 is out of range"), "{e}");
        assert!(parse_target("h:nosuchservice")
            .unwrap_err()
            .contains("unknown port"));
    }

    #[test]
    fn listens() {
        let l = parse_listen("80").unwrap();
        assert_eq!((l.addr, l.port), (None, 80));
        let l = parse_listen("127.0.0.1:8080/udp").unwrap();
        assert_eq!(
            (l.addr, l.port, l.udp),
            (Some("127.0.0.1".parse().unwrap()), 8080, true)
        );
        let l = parse_listen("%lo:80").unwrap();
        assert_eq!(l.interface.as_deref(), Some("lo"));
        let l = parse_listen("::1:80/v6only").unwrap();
        assert!(l.v6only && l.addr == Some("::1".parse().unwrap()));
        assert!(parse_listen("80/http").unwrap().http);
        assert!(parse_listen("80/apop").unwrap_err().contains("/apop"));
    }

    #[test]
    fn xhosts_with_masks_modes_and_deny() {
        let words: Vec<String> = [
            "10.0.0.0/8",
            "192.168.1.0/255.255.255.0,p2",
            "!",
            "10.0.0.66",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let (rules, default) = parse_xhosts(&words).unwrap();
        assert_eq!(rules.len(), 3);
        assert_eq!(default, Action::Allow);
        assert_eq!(rules[1].block.to_string(), "192.168.1.0/24");
        assert_eq!(rules[1].mode, 2);
        assert_eq!(rules[2].action, Action::Deny);
        assert!(parse_xhosts(&["1.2.3.4/255.0.255.0".to_string()]).is_err());
    }
}
