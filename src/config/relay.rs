//! One `[[relay]]`: the validated [`RelayConfig`] and its [`Service`], and
//! the validation of a raw relay table into them.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use toml::Spanned;

use super::raw::{RawKeepalive, RawRelay};
use super::rewrite::Rewrite;
use super::tls;
use super::{
    Gateway, Upstream, Validator, DEFAULT_BACKLOG, DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_SESSIONS, DEFAULT_TCP_IDLE, DEFAULT_UDP_IDLE,
};
use crate::acl::{Acl, Action, Cidr, Rule};
use crate::policy::dest::DestPolicy;
use crate::wire::proxy_protocol::Version;

/// Transport of a relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// Stream relay.
    Tcp,
    /// Datagram relay with per-client sessions.
    Udp,
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        })
    }
}

/// TCP keep-alive settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Keepalive {
    /// Idle time before the first probe.
    pub time: Duration,
    /// Interval between probes.
    pub interval: Option<Duration>,
    /// Probes before giving up.
    pub retries: Option<u32>,
}

/// A standby destination used while the primary fails its health check
/// (stone's `-b`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backup {
    /// Where connections go while the primary is down.
    pub upstream: Upstream,
    /// What is probed (a TCP connect) to decide the primary is up.
    pub check: Upstream,
    /// Time between probes.
    pub interval: Duration,
    /// stone's `-s`: after connecting, send each text and wait for the
    /// reply to match the regex; empty means the connect alone decides.
    pub script: Vec<(String, String)>,
}

/// Settings of a health port (stone's `health` stone).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HealthPort {
    /// stone's -d level, echoed in replies.
    pub debug: u8,
    /// What CONFIG answers.
    pub config: String,
}

/// One validated relay: where it listens and how, what it does with each
/// connection ([`Service`]), and how it reaches its upstreams.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// Name used in logs.
    pub name: String,
    /// Local address to bind.
    pub listen: SocketAddr,
    /// What the relay does with each connection or datagram.
    pub service: Service,
    /// Per-address connect timeout.
    pub connect_timeout: Duration,
    /// Idle timeout for a connection or UDP session.
    pub idle_timeout: Duration,
    /// TCP connection limit.
    pub max_connections: usize,
    /// UDP session limit.
    pub max_sessions: usize,
    /// Client access control.
    pub acl: Acl,
    /// TCP_NODELAY on both sides.
    pub nodelay: bool,
    /// TCP keep-alive on both sides.
    pub keepalive: Option<Keepalive>,
    /// Listen backlog (TCP).
    pub backlog: u32,
    /// Bind the listening socket to this network interface (SO_BINDTODEVICE).
    pub interface: Option<String>,
    /// For an IPv6 listen address: accept IPv6 only, not IPv4-mapped clients.
    pub v6only: bool,
    /// Local address for upstream connections (stone's `-I`).
    pub source: Option<SocketAddr>,
    /// Append one line per accepted connection to this file (stone's `-a`).
    pub accounting: Option<PathBuf>,
    /// Connect to the upstream's IPv6 addresses only (stone's `/v6` on the destination).
    pub upstream_v6: bool,
    /// stone's `-p` dump mode for connections whose xhost sets none (0: off).
    pub dump: u32,
    /// Terminate TLS from clients (tcp and http relays).
    pub tls: Option<crate::tls::ServerTls>,
    /// Speak TLS to the upstream (tcp and http relays).
    pub upstream_tls: Option<crate::tls::ClientTls>,
    /// PROXY protocol in and out.
    pub proxy_protocol: ProxyProtocol,
}

/// What a relay does with each connection: one variant per mode, holding
/// only that mode's settings. Validation picks it once, so a relay's mode
/// is a value and not a combination of optional fields.
#[derive(Debug, Clone)]
pub enum Service {
    /// Relay each TCP connection to an upstream (stone's repeater).
    Tcp(Forward),
    /// Relay datagrams to the upstream, one session per client.
    Udp(Upstream),
    /// `protocol = "http"`: route and police each request by its Host.
    Http(Gateway),
    /// `protocol = "tls"`: route and police by the ClientHello's server name.
    Sni(Gateway),
    /// `protocol = "proxy"`: an HTTP forward proxy (CONNECT and
    /// absolute-form) limited to these destinations.
    Proxy(DestPolicy),
    /// Answer stone's health protocol.
    Health(HealthPort),
    /// Answer ident (RFC 1413) queries about this process's upstream
    /// connections (stone's `identd` stone).
    Identd,
    /// `protocol = "sftp"`: an SSH server (SFTP and legacy SCP) that stores
    /// files as objects.
    #[cfg(feature = "sftp")]
    Sftp(Box<super::sftp::Sftp>),
}

impl Service {
    /// The mode's name, as `protocol` says it in the config and in access
    /// records.
    pub fn label(&self) -> &'static str {
        match self {
            Service::Tcp(_) => "tcp",
            Service::Udp(_) => "udp",
            Service::Http(_) => "http",
            Service::Sni(_) => "tls",
            Service::Proxy(_) => "proxy",
            Service::Health(_) => "health",
            Service::Identd => "identd",
            #[cfg(feature = "sftp")]
            Service::Sftp(_) => "sftp",
        }
    }
}

/// Where a TCP relay sends its connections, and what it rewrites.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forward {
    /// Destination.
    pub upstream: Upstream,
    /// Destinations to share connections between, in rotation, each one
    /// failing over to the next (stone's `-B`). Empty: just `upstream`.
    pub group: Vec<Upstream>,
    /// Standby destination while `upstream` fails its health check.
    pub backup: Option<Backup>,
    /// Connect to this unix-domain socket instead of `upstream`
    /// (`upstream = "unix:/path"`, or a stone destination starting with `/`
    /// or `./`).
    pub unix: Option<PathBuf>,
    /// stone's stream rewriting (`/http`, `/proxy`, `/mproxy`).
    pub rewrite: Option<Rewrite>,
}

impl Forward {
    /// Forwarding to `upstream`, with nothing else set.
    pub fn to(upstream: Upstream) -> Forward {
        Forward {
            upstream,
            group: Vec::new(),
            backup: None,
            unix: None,
            rewrite: None,
        }
    }
}

/// PROXY protocol settings of a relay.
#[derive(Debug, Clone, Default)]
pub struct ProxyProtocol {
    /// Require this header from clients, which must match the ACL (the
    /// load balancers); the relay's own ACL then applies to the client
    /// named in the header.
    pub accept: Option<(Version, Acl)>,
    /// Send this header version to the upstream.
    pub send: Option<Version>,
}

impl RelayConfig {
    /// The transport the relay listens on.
    pub fn protocol(&self) -> Protocol {
        match self.service {
            Service::Udp(_) => Protocol::Udp,
            _ => Protocol::Tcp,
        }
    }

    /// The fixed upstream of a tcp or udp relay; other modes choose
    /// theirs per connection or request.
    pub fn upstream(&self) -> Option<&Upstream> {
        match &self.service {
            Service::Tcp(f) => Some(&f.upstream),
            Service::Udp(u) => Some(u),
            _ => None,
        }
    }

    /// The endpoint policy of an http, tls or proxy relay, if it has one.
    pub fn endpoint_policy(&self) -> Option<&crate::policy::statement::Policy> {
        match &self.service {
            Service::Http(g) | Service::Sni(g) => Some(&g.policy),
            Service::Proxy(d) => d.buckets.as_ref(),
            _ => None,
        }
    }

    /// The forwarding settings of a tcp relay.
    pub fn forward(&self) -> Option<&Forward> {
        match &self.service {
            Service::Tcp(f) => Some(f),
            _ => None,
        }
    }

    /// What the relay forwards to, as stone's mapping line shows it:
    /// `host:port`, `proxy` or `health`.
    pub fn destination_label(&self) -> String {
        match &self.service {
            Service::Health(_) => "health".to_string(),
            Service::Identd => "identd".to_string(),
            Service::Http(_) => "http".to_string(),
            Service::Sni(_) => "tls".to_string(),
            Service::Proxy(_) => "proxy".to_string(),
            Service::Tcp(Forward {
                unix: Some(path), ..
            }) => path.display().to_string(),
            Service::Tcp(f) => f.upstream.to_string(),
            Service::Udp(u) => u.to_string(),
            #[cfg(feature = "sftp")]
            Service::Sftp(s) => format!("sftp {}", s.upstream),
        }
    }

    /// A TCP relay with every default, for tests and programmatic use.
    pub fn tcp(name: &str, listen: SocketAddr, upstream: Upstream) -> RelayConfig {
        RelayConfig::new(name, listen, Service::Tcp(Forward::to(upstream)))
    }

    /// A UDP relay with every default.
    pub fn udp(name: &str, listen: SocketAddr, upstream: Upstream) -> RelayConfig {
        RelayConfig {
            idle_timeout: DEFAULT_UDP_IDLE,
            ..RelayConfig::new(name, listen, Service::Udp(upstream))
        }
    }

    /// A relay of any service with every default (the TCP idle timeout).
    pub fn new(name: &str, listen: SocketAddr, service: Service) -> RelayConfig {
        RelayConfig {
            name: name.to_string(),
            listen,
            service,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            idle_timeout: DEFAULT_TCP_IDLE,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_sessions: DEFAULT_MAX_SESSIONS,
            acl: Acl::default(),
            nodelay: true,
            keepalive: None,
            backlog: DEFAULT_BACKLOG,
            interface: None,
            v6only: false,
            source: None,
            accounting: None,
            upstream_v6: false,
            dump: 0,
            tls: None,
            upstream_tls: None,
            proxy_protocol: ProxyProtocol::default(),
        }
    }
}

/// Why a `listen` value is not an address:port, in the user's terms.
fn listen_problem(text: &str) -> String {
    let port = text.trim().rsplit_once(':').map(|(_, p)| p);
    match port {
        Some(p)
            if !p.is_empty()
                && p.bytes().all(|b| b.is_ascii_digit())
                && p.parse::<u16>().is_err() =>
        {
            format!("{text:?}: port {p} is out of range (0-65535)")
        }
        _ => format!("{text:?} is not an address:port (use \"0.0.0.0:80\" or \"[::]:80\")"),
    }
}

impl Validator<'_> {
    pub(super) fn relay(&mut self, i: usize, r: &RawRelay) -> Option<RelayConfig> {
        let key = |field: &str| format!("relay[{i}].{field}");
        let before = self.problems.len();
        let protocol = match r.protocol.as_ref() {
            None => Protocol::Tcp,
            Some(p) => match p.get_ref().as_str() {
                "tcp" => Protocol::Tcp,
                "udp" => Protocol::Udp,
                "proxy" | "health" | "http" | "tls" => Protocol::Tcp,
                #[cfg(feature = "sftp")]
                "sftp" => Protocol::Tcp,
                #[cfg(not(feature = "sftp"))]
                "sftp" => {
                    self.problem(
                        &key("protocol"),
                        p,
                        "this ossrelay was built without sftp support (cargo feature `sftp`)"
                            .into(),
                    );
                    Protocol::Tcp
                }
                other => {
                    self.problem(
                        &key("protocol"),
                        p,
                        format!("unknown protocol {other:?}; use \"tcp\", \"udp\", \"http\", \"tls\", \"proxy\", \"sftp\" or \"health\""),
                    );
                    Protocol::Tcp
                }
            },
        };
        let listen = match r.listen.as_ref() {
            None => {
                self.missing(&key("listen"), "missing; e.g. listen = \"0.0.0.0:80\"");
                None
            }
            Some(l) => match l.get_ref().trim().parse::<SocketAddr>() {
                Ok(a) => Some(a),
                Err(_) => {
                    self.problem(&key("listen"), l, listen_problem(l.get_ref()));
                    None
                }
            },
        };
        let is_health = r.protocol.as_ref().is_some_and(|p| p.get_ref() == "health");
        let is_proxy = r.protocol.as_ref().is_some_and(|p| p.get_ref() == "proxy") || is_health;
        let proxy = if is_proxy && !is_health {
            Some(self.proxy_policy(i, r))
        } else {
            None
        };
        if !is_proxy && r.proxy_allow.is_some() {
            self.missing(&key("proxy_allow"), "only applies to protocol = \"proxy\"");
        }
        let kind = r.protocol.as_ref().map_or("tcp", |p| p.get_ref().as_str());
        #[cfg(feature = "sftp")]
        let sftp = (kind == "sftp").then(|| self.sftp(i, r)).flatten();
        if kind != "sftp" {
            for k in super::raw::sftp_keys(r) {
                self.missing(&key(k), "only applies to protocol = \"sftp\"");
            }
        }
        let is_http = matches!(kind, "http" | "tls");
        let gateway = if is_http {
            self.gateway(i, r, kind == "tls")
        } else {
            self.not_gateway(i, r);
            None
        };
        let upstream = match r.upstream.as_ref() {
            // These modes pick their destinations per connection or request.
            None if is_proxy || is_http => None,
            Some(u) if is_http => {
                self.problem(
                    &key("upstream"),
                    u,
                    "http and tls relays route with `routes` (and `default_route`), not `upstream`"
                        .into(),
                );
                None
            }
            Some(u) if is_proxy => {
                self.problem(
                    &key("upstream"),
                    u,
                    "proxy and health relays have no upstream".into(),
                );
                None
            }
            None => {
                self.missing(&key("upstream"), "missing; e.g. upstream = \"host:80\"");
                None
            }
            Some(u) if u.get_ref().starts_with("unix:") => {
                let path = &u.get_ref()["unix:".len()..];
                if path.is_empty() || protocol != Protocol::Tcp {
                    self.problem(
                        &key("upstream"),
                        u,
                        "unix:<path> needs a path and protocol = \"tcp\"".into(),
                    );
                }
                Some(Upstream {
                    host: path.to_string(),
                    port: 0,
                })
            }
            Some(u) => match Upstream::parse(u.get_ref()) {
                Ok(u) => Some(u),
                Err(e) => {
                    self.problem(&key("upstream"), u, e);
                    None
                }
            },
        };
        let connect_timeout = self
            .duration(&key("connect_timeout"), &r.connect_timeout)
            .unwrap_or(DEFAULT_CONNECT_TIMEOUT);
        let idle_default = match protocol {
            Protocol::Tcp => DEFAULT_TCP_IDLE,
            Protocol::Udp => DEFAULT_UDP_IDLE,
        };
        let idle_timeout = self
            .duration(&key("idle_timeout"), &r.idle_timeout)
            .unwrap_or(idle_default);
        for (name, d) in [
            ("connect_timeout", connect_timeout),
            ("idle_timeout", idle_timeout),
        ] {
            if d.is_zero() {
                self.missing(&key(name), "must be greater than zero");
            }
        }
        let max_connections = self
            .count(&key("max_connections"), &r.max_connections, 1_000_000)
            .unwrap_or(DEFAULT_MAX_CONNECTIONS);
        let max_sessions = self
            .count(&key("max_sessions"), &r.max_sessions, 1_000_000)
            .unwrap_or(DEFAULT_MAX_SESSIONS);
        if protocol == Protocol::Udp {
            if r.max_connections.is_some() {
                self.missing(
                    &key("max_connections"),
                    "applies to tcp relays; use max_sessions for udp",
                );
            }
            if r.keepalive.is_some() {
                self.missing(&key("keepalive"), "applies to tcp relays only");
            }
        } else if r.max_sessions.is_some() {
            self.missing(
                &key("max_sessions"),
                "applies to udp relays; use max_connections for tcp",
            );
        }
        let backlog = self
            .count(&key("backlog"), &r.backlog, 65_535)
            .map_or(DEFAULT_BACKLOG, |n| n as u32);
        if let Some(intf) = &r.interface {
            if intf.is_empty() || intf.len() > 15 {
                self.missing(
                    &key("interface"),
                    "must be an interface name of 1 to 15 bytes",
                );
            }
        }
        let acl = self.acl(i, r);
        let source = r.source.as_ref().and_then(|s| {
            let text = s.get_ref().trim();
            let parsed = text
                .parse::<SocketAddr>()
                .or_else(|_| text.parse::<IpAddr>().map(|ip| SocketAddr::new(ip, 0)));
            match parsed {
                Ok(a) => Some(a),
                Err(_) => {
                    self.problem(
                        &key("source"),
                        s,
                        format!("{text:?} is not an address (\"10.0.0.5\" or \"10.0.0.5:0\")"),
                    );
                    None
                }
            }
        });
        let mut group = Vec::new();
        for (j, g) in r.upstream_group.iter().flatten().enumerate() {
            match Upstream::parse(g.get_ref()) {
                Ok(u) => group.push(u),
                Err(e) => self.problem(&format!("relay[{i}].upstream_group[{j}]"), g, e),
            }
        }
        let backup = match &r.backup {
            None => {
                if let Some(iv) = &r.backup_check_interval {
                    self.problem(&key("backup_check_interval"), iv, "needs `backup`".into());
                }
                None
            }
            Some(b) => match Upstream::parse(b.get_ref()) {
                Err(e) => {
                    self.problem(&key("backup"), b, e);
                    None
                }
                Ok(bu) => {
                    let interval = self
                        .duration(&key("backup_check_interval"), &r.backup_check_interval)
                        .unwrap_or(Duration::from_secs(10));
                    if interval < Duration::from_secs(1) {
                        self.missing(&key("backup_check_interval"), "must be at least 1s");
                    }
                    r.upstream
                        .as_ref()
                        .and_then(|u| Upstream::parse(u.get_ref()).ok())
                        .map(|check| Backup {
                            upstream: bu,
                            check,
                            interval,
                            script: Vec::new(),
                        })
                }
            },
        };
        if protocol == Protocol::Udp && (r.backup.is_some() || r.upstream_group.is_some()) {
            self.missing(
                &key("backup"),
                "backup and upstream_group apply to tcp relays only",
            );
        }
        let keepalive = r.keepalive.as_ref().and_then(|k| self.keepalive(i, k));
        let name = match r.name.as_ref() {
            Some(n) if n.get_ref().trim().is_empty() => {
                self.problem(&key("name"), n, "must not be empty".into());
                String::new()
            }
            Some(n) => n.get_ref().clone(),
            None => format!("relay{i}"),
        };
        let tls = r.tls.as_ref().and_then(|t| {
            tls::server(t.get_ref(), self.base)
                .map_err(|e| self.problem(&key("tls"), t, e))
                .ok()
        });
        let upstream_tls = r.upstream_tls.as_ref().and_then(|t| {
            tls::upstream(t.get_ref(), self.base)
                .map_err(|e| self.problem(&key("upstream_tls"), t, e))
                .ok()
        });
        if protocol == Protocol::Udp && (r.tls.is_some() || r.upstream_tls.is_some()) {
            self.missing(&key("tls"), "TLS applies to tcp relays only");
        }
        if is_proxy && (r.tls.is_some() || r.upstream_tls.is_some()) {
            self.missing(
                &key("tls"),
                "TLS is not available on proxy and health relays yet",
            );
        }
        let proxy_protocol = self.proxy_protocol(i, r, protocol);
        if self.problems.len() != before {
            return None;
        }
        let unix = r
            .upstream
            .as_ref()
            .and_then(|u| u.get_ref().strip_prefix("unix:"))
            .map(PathBuf::from);
        let service = match kind {
            "udp" => Service::Udp(upstream?),
            "http" => Service::Http(gateway?),
            "tls" => Service::Sni(gateway?),
            "proxy" => Service::Proxy(proxy?),
            "health" => Service::Health(HealthPort::default()),
            #[cfg(feature = "sftp")]
            "sftp" => {
                let mut sftp = sftp?;
                sftp.upstream = upstream?;
                Service::Sftp(Box::new(sftp))
            }
            _ => Service::Tcp(Forward {
                upstream: upstream?,
                group,
                backup,
                unix,
                rewrite: None,
            }),
        };
        Some(RelayConfig {
            name,
            listen: listen?,
            service,
            connect_timeout,
            idle_timeout,
            max_connections,
            max_sessions,
            acl,
            nodelay: r.nodelay.unwrap_or(true),
            keepalive,
            backlog,
            interface: r.interface.clone(),
            v6only: r.v6only.unwrap_or(false),
            source,
            accounting: None,
            upstream_v6: false,
            dump: 0,
            tls,
            upstream_tls,
            proxy_protocol,
        })
    }

    fn proxy_protocol(&mut self, i: usize, r: &RawRelay, protocol: Protocol) -> ProxyProtocol {
        let Some(pp) = &r.proxy_protocol else {
            return ProxyProtocol::default();
        };
        let path = format!("relay[{i}].proxy_protocol");
        if protocol == Protocol::Udp {
            self.problem(&path, pp, "PROXY protocol applies to tcp relays".into());
        }
        let raw = pp.get_ref();
        let mut out = ProxyProtocol::default();
        let is_proxy = r.protocol.as_ref().is_some_and(|p| p.get_ref() == "proxy");
        if raw.send.is_some() && is_proxy {
            self.problem(
                &path,
                pp,
                "send is not available on proxy relays (the destination is chosen per request)"
                    .into(),
            );
        }
        if let Some(s) = &raw.send {
            match Version::parse(s) {
                Ok(v) => out.send = Some(v),
                Err(e) => self.problem(&path, pp, format!("send: {e}")),
            }
        }
        let no_sources = raw.accept_from.as_ref().is_none_or(|f| f.is_empty());
        match (&raw.accept, &raw.accept_from) {
            (None, None) => {}
            (Some(_), _) if no_sources => self.problem(
                &path,
                pp,
                "accept needs accept_from: the load balancers' addresses (anyone else could spoof a client address)".into(),
            ),
            (None, Some(_)) => self.problem(&path, pp, "accept_from needs accept = \"v1\" or \"v2\"".into()),
            (Some(v), from) => {
                let from = from.iter().flatten();
                let mut rules = Vec::new();
                for f in from {
                    match Cidr::parse_list_entry(f) {
                        Ok(blocks) => rules.extend(blocks.into_iter().map(|block| Rule {
                            action: Action::Allow,
                            block,
                            mode: 0,
                        })),
                        Err(e) => self.problem(&path, pp, format!("accept_from: {e}")),
                    }
                }
                match Version::parse(v) {
                    Ok(v) => out.accept = Some((v, Acl::new(rules))),
                    Err(e) => self.problem(&path, pp, format!("accept: {e}")),
                }
            }
        }
        out
    }

    fn acl(&mut self, i: usize, r: &RawRelay) -> Acl {
        let mut rules = Vec::new();
        if r.acl.is_some() && (r.allow.is_some() || r.deny.is_some()) {
            self.missing(
                &format!("relay[{i}].acl"),
                "use either the ordered `acl` list or `allow`/`deny`, not both",
            );
        }
        let mut push =
            |v: &mut Self, path: String, action: Action, entry: &Spanned<String>, text: &str| {
                match Cidr::parse_list_entry(text) {
                    Ok(blocks) => rules.extend(blocks.into_iter().map(|block| Rule {
                        action,
                        block,
                        mode: 0,
                    })),
                    Err(e) => v.problem(&path, entry, e),
                }
            };
        // Exclusions are listed before the broad allow on purpose: that is
        // how people read "allow 10/8 except 10.0.10.66".
        for (j, e) in r.deny.iter().flatten().enumerate() {
            push(
                self,
                format!("relay[{i}].deny[{j}]"),
                Action::Deny,
                e,
                e.get_ref(),
            );
        }
        for (j, e) in r.allow.iter().flatten().enumerate() {
            push(
                self,
                format!("relay[{i}].allow[{j}]"),
                Action::Allow,
                e,
                e.get_ref(),
            );
        }
        for (j, e) in r.acl.iter().flatten().enumerate() {
            let path = format!("relay[{i}].acl[{j}]");
            let text = e.get_ref().trim();
            match text.split_once(char::is_whitespace) {
                Some(("allow", rest)) => push(self, path, Action::Allow, e, rest.trim()),
                Some(("deny", rest)) => push(self, path, Action::Deny, e, rest.trim()),
                _ => self.problem(
                    &path,
                    e,
                    format!("{text:?}: expected \"allow <cidr>\" or \"deny <cidr>\""),
                ),
            }
        }
        Acl::new(rules)
    }

    fn keepalive(&mut self, i: usize, k: &RawKeepalive) -> Option<Keepalive> {
        let key = |f: &str| format!("relay[{i}].keepalive.{f}");
        let time = self.duration(&key("time"), &k.time);
        let interval = self.duration(&key("interval"), &k.interval);
        // Linux takes whole seconds in 1..=32767 for both.
        for (name, d, raw) in [("time", time, &k.time), ("interval", interval, &k.interval)] {
            if let (Some(d), Some(raw)) = (d, raw) {
                if d.subsec_nanos() != 0 || d.as_secs() < 1 || d.as_secs() > 32_767 {
                    self.problem(
                        &key(name),
                        raw,
                        "must be whole seconds between 1s and 32767s".into(),
                    );
                }
            }
        }
        let retries = self
            .count(&key("retries"), &k.retries, 127)
            .map(|n| n as u32);
        Some(Keepalive {
            time: time.unwrap_or(Duration::from_secs(60)),
            interval,
            retries,
        })
    }
}
