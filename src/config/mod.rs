//! Configuration: TOML text → [`raw`] serde structs → validated [`Config`].
//!
//! Every problem is reported with its key path and line, e.g.
//! `relay[1].upstream (line 7): missing port`, and validation collects all
//! problems instead of stopping at the first.

mod dns;
pub mod duration;
mod gateway;
pub mod raw;
mod tls;

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::Spanned;

use crate::acl::{Acl, Action, Cidr, Rule};
use duration::parse_duration;
use raw::{RawConfig, RawKeepalive, RawRelay};

/// Default TCP idle timeout, as stone's `-T`.
pub const DEFAULT_TCP_IDLE: Duration = Duration::from_secs(600);
/// Default UDP session idle timeout.
pub const DEFAULT_UDP_IDLE: Duration = Duration::from_secs(60);
/// Default per-address connect timeout.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Default drain deadline after SIGTERM.
pub const DEFAULT_DRAIN: Duration = Duration::from_secs(30);
/// Default TCP connection limit per relay. Each relayed connection costs six
/// file descriptors at most (two sockets, two lazily created pipes).
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
/// Default listen backlog: large enough for bursts behind a load balancer.
pub const DEFAULT_BACKLOG: u32 = 4096;
/// Default UDP session limit per relay.
pub const DEFAULT_MAX_SESSIONS: usize = 1_024;

/// A validated run configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Logging.
    pub log: LogConfig,
    /// How long to let connections finish after a stop signal.
    pub drain_timeout: Duration,
    /// The relays to run.
    pub relays: Vec<RelayConfig>,
    /// The DNS responder, if configured.
    pub dns: Option<crate::dns::DnsConfig>,
}

/// Log output settings.
#[derive(Debug, Clone, Default)]
pub struct LogConfig {
    /// Line format.
    pub format: LogFormat,
    /// Append to this file instead of stderr.
    pub file: Option<PathBuf>,
    /// Minimum level (`info` unless set).
    pub level: Option<String>,
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// stone-style text lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
    /// RFC 3164 datagrams to the local syslog socket, /dev/log (stone's `-l`).
    Syslog,
}

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
        let port: u16 = port
            .parse()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| format!("{text:?}: port must be 1..=65535"))?;
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

/// One validated relay.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// Name used in logs.
    pub name: String,
    /// tcp or udp.
    pub protocol: Protocol,
    /// Local address to bind.
    pub listen: SocketAddr,
    /// Destination.
    pub upstream: Upstream,
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
    /// Destinations to share connections between, in rotation, each one
    /// failing over to the next (stone's `-B`). Empty: just `upstream`.
    pub group: Vec<Upstream>,
    /// Standby destination while `upstream` fails its health check.
    pub backup: Option<Backup>,
    /// Local address for upstream connections (stone's `-I`).
    pub source: Option<SocketAddr>,
    /// Append one line per accepted connection to this file (stone's `-a`).
    pub accounting: Option<PathBuf>,
    /// Connect to the upstream's IPv6 addresses only (stone's `/v6` on the destination).
    pub upstream_v6: bool,
    /// stone's `-p` dump mode for connections whose xhost sets none (0: off).
    pub dump: u32,
    /// Answer stone's health protocol instead of relaying.
    pub health: Option<HealthPort>,
    /// Act as an HTTP proxy (CONNECT and absolute-form) limited to these
    /// destinations, instead of forwarding to `upstream`.
    pub proxy: Option<crate::relay::proxy::DestPolicy>,
    /// Terminate TLS from clients.
    pub tls: Option<crate::tls::ServerTls>,
    /// Speak TLS to the upstream.
    pub upstream_tls: Option<crate::tls::ClientTls>,
    /// Connect to this unix-domain socket instead of `upstream`
    /// (`upstream = "unix:/path"`, or a stone destination starting with `/`
    /// or `./`).
    pub upstream_unix: Option<PathBuf>,
    /// stone's stream rewriting (`/http`, `/proxy`, `/mproxy`).
    pub rewrite: Option<crate::relay::rewrite::Rewrite>,
    /// Answer ident (RFC 1413) queries about this process's upstream
    /// connections instead of relaying (stone's `identd` stone).
    pub identd: bool,
    /// `protocol = "http"`: route and police each request.
    pub gateway: Option<crate::gateway::Gateway>,
    /// PROXY protocol in and out.
    pub proxy_protocol: ProxyProtocol,
}

/// PROXY protocol settings of a relay.
#[derive(Debug, Clone, Default)]
pub struct ProxyProtocol {
    /// Require this header from clients, which must match the ACL (the
    /// load balancers); the relay's own ACL then applies to the client
    /// named in the header.
    pub accept: Option<(crate::relay::proxy_protocol::Version, Acl)>,
    /// Send this header version to the upstream.
    pub send: Option<crate::relay::proxy_protocol::Version>,
}

impl RelayConfig {
    /// What the relay forwards to, as stone's mapping line shows it:
    /// `host:port`, `proxy` or `health`.
    pub fn destination_label(&self) -> String {
        if self.health.is_some() {
            "health".to_string()
        } else if self.identd {
            "identd".to_string()
        } else if let Some(g) = &self.gateway {
            match g.mode {
                crate::gateway::Mode::Http => "http".to_string(),
                crate::gateway::Mode::Sni => "tls".to_string(),
            }
        } else if self.proxy.is_some() {
            "proxy".to_string()
        } else if let Some(p) = &self.upstream_unix {
            p.display().to_string()
        } else {
            self.upstream.to_string()
        }
    }

    /// A TCP relay with every default, for tests and programmatic use.
    pub fn tcp(name: &str, listen: SocketAddr, upstream: Upstream) -> RelayConfig {
        RelayConfig {
            name: name.to_string(),
            protocol: Protocol::Tcp,
            listen,
            upstream,
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
            group: Vec::new(),
            backup: None,
            source: None,
            accounting: None,
            upstream_v6: false,
            dump: 0,
            health: None,
            proxy: None,
            tls: None,
            upstream_tls: None,
            upstream_unix: None,
            rewrite: None,
            identd: false,
            gateway: None,
            proxy_protocol: ProxyProtocol::default(),
        }
    }

    /// A UDP relay with every default.
    pub fn udp(name: &str, listen: SocketAddr, upstream: Upstream) -> RelayConfig {
        RelayConfig {
            protocol: Protocol::Udp,
            idle_timeout: DEFAULT_UDP_IDLE,
            ..RelayConfig::tcp(name, listen, upstream)
        }
    }
}

/// One problem found in a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Key path such as `relay[1].upstream`.
    pub path: String,
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{} (line {}): {}", self.path, line, self.message),
            None => write!(f, "{}: {}", self.path, self.message),
        }
    }
}

/// Why a config could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file was read but is not valid.
    #[error("{}", format_problems(.path, .problems))]
    Invalid {
        /// The file (or `<string>`).
        path: PathBuf,
        /// Every problem found.
        problems: Vec<Problem>,
    },
}

fn format_problems(path: &Path, problems: &[Problem]) -> String {
    let mut out = format!("invalid config {}:", path.display());
    for p in problems {
        out.push_str("\n  ");
        out.push_str(&p.to_string());
    }
    out
}

impl Config {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        Config::parse_in(&text, base).map_err(|problems| ConfigError::Invalid {
            path: path.to_path_buf(),
            problems,
        })
    }

    /// Parses and validates config text, returning every problem on failure.
    pub fn parse(text: &str) -> Result<Config, Vec<Problem>> {
        Config::parse_in(text, Path::new("."))
    }

    /// Parses a config whose relative file names (certificates, keys)
    /// are relative to `base`, the directory of the config file.
    pub fn parse_in(text: &str, base: &Path) -> Result<Config, Vec<Problem>> {
        let deserializer = toml::Deserializer::new(text);
        let raw: RawConfig = serde_path_to_error::deserialize(deserializer).map_err(|err| {
            let path = err.path().to_string();
            let inner = err.into_inner();
            let line = inner.span().map(|s| line_of(text, s.start));
            vec![Problem {
                path: if path == "." {
                    "(top level)".into()
                } else {
                    path
                },
                line,
                message: inner.message().to_string(),
            }]
        })?;
        Validator {
            text,
            base,
            problems: Vec::new(),
        }
        .config(raw)
    }
}

fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|b| **b == b'\n')
        .count()
        + 1
}

struct Validator<'t> {
    text: &'t str,
    /// Where relative file names in the config are looked up.
    base: &'t Path,
    problems: Vec<Problem>,
}

impl Validator<'_> {
    fn problem<T>(&mut self, path: &str, value: &Spanned<T>, message: String) {
        self.problems.push(Problem {
            path: path.to_string(),
            line: Some(line_of(self.text, value.span().start)),
            message,
        });
    }

    fn missing(&mut self, path: &str, message: &str) {
        self.problems.push(Problem {
            path: path.to_string(),
            line: None,
            message: message.to_string(),
        });
    }

    fn duration(&mut self, path: &str, value: &Option<Spanned<String>>) -> Option<Duration> {
        let value = value.as_ref()?;
        match parse_duration(value.get_ref()) {
            Ok(d) => Some(d),
            Err(e) => {
                self.problem(path, value, e);
                None
            }
        }
    }

    fn count(&mut self, path: &str, value: &Option<Spanned<i64>>, max: i64) -> Option<usize> {
        let value = value.as_ref()?;
        let n = *value.get_ref();
        if n < 1 || n > max {
            self.problem(path, value, format!("must be between 1 and {max}, got {n}"));
            return None;
        }
        usize::try_from(n).ok()
    }

    fn config(mut self, raw: RawConfig) -> Result<Config, Vec<Problem>> {
        let format = match raw.log.format.as_ref() {
            None => LogFormat::Text,
            Some(f) => match f.get_ref().as_str() {
                "text" | "stone" => LogFormat::Text,
                "json" => LogFormat::Json,
                "syslog" => LogFormat::Syslog,
                other => {
                    self.problem(
                        "log.format",
                        f,
                        format!("unknown format {other:?}; use \"text\", \"json\" or \"syslog\""),
                    );
                    LogFormat::Text
                }
            },
        };
        if let Some(level) = raw.log.level.as_ref() {
            if !["error", "warn", "info", "debug", "trace"].contains(&level.get_ref().as_str()) {
                self.problem(
                    "log.level",
                    level,
                    format!(
                        "unknown level {:?}; use error, warn, info, debug or trace",
                        level.get_ref()
                    ),
                );
            }
        }
        let log = LogConfig {
            format,
            file: raw.log.file.map(PathBuf::from),
            level: raw.log.level.map(Spanned::into_inner),
        };
        let drain_timeout = self
            .duration("server.drain_timeout", &raw.server.drain_timeout)
            .unwrap_or(DEFAULT_DRAIN);
        if raw.relay.is_empty() && raw.dns.is_none() {
            self.missing("relay", "no [[relay]] or [dns] defined; nothing to run");
        }
        let dns = raw.dns.as_ref().and_then(|d| self.dns(d));
        let mut relays = Vec::new();
        for (i, r) in raw.relay.iter().enumerate() {
            if let Some(relay) = self.relay(i, r) {
                relays.push(relay);
            }
        }
        self.cross_checks(&raw.relay, &relays);
        if self.problems.is_empty() {
            Ok(Config {
                log,
                drain_timeout,
                relays,
                dns,
            })
        } else {
            Err(self.problems)
        }
    }

    fn relay(&mut self, i: usize, r: &RawRelay) -> Option<RelayConfig> {
        let key = |field: &str| format!("relay[{i}].{field}");
        let before = self.problems.len();
        let protocol = match r.protocol.as_ref() {
            None => Protocol::Tcp,
            Some(p) => match p.get_ref().as_str() {
                "tcp" => Protocol::Tcp,
                "udp" => Protocol::Udp,
                "proxy" | "health" | "http" | "tls" => Protocol::Tcp,
                other => {
                    self.problem(
                        &key("protocol"),
                        p,
                        format!("unknown protocol {other:?}; use \"tcp\", \"udp\", \"http\", \"tls\", \"proxy\" or \"health\""),
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
                    self.problem(
                        &key("listen"),
                        l,
                        format!(
                            "{:?} is not an address:port (use \"0.0.0.0:80\" or \"[::]:80\")",
                            l.get_ref()
                        ),
                    );
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
        let gw_mode = match r.protocol.as_ref().map(|p| p.get_ref().as_str()) {
            Some("http") => Some(crate::gateway::Mode::Http),
            Some("tls") => Some(crate::gateway::Mode::Sni),
            _ => None,
        };
        let is_http = gw_mode.is_some();
        let gateway = if let Some(mode) = gw_mode {
            self.gateway(i, r, mode)
        } else {
            self.not_gateway(i, r);
            None
        };
        let upstream = match r.upstream.as_ref() {
            None if is_proxy => Some(Upstream {
                host: "proxy".into(),
                port: 0,
            }),
            None if is_http => Some(Upstream {
                host: "http".into(),
                port: 0,
            }),
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
        Some(RelayConfig {
            name,
            protocol,
            listen: listen?,
            upstream: upstream?,
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
            group,
            backup,
            source,
            accounting: None,
            upstream_v6: false,
            dump: 0,
            health: is_health.then(HealthPort::default),
            proxy,
            tls,
            upstream_tls,
            upstream_unix: r
                .upstream
                .as_ref()
                .and_then(|u| u.get_ref().strip_prefix("unix:"))
                .map(PathBuf::from),
            rewrite: None,
            identd: false,
            gateway,
            proxy_protocol,
        })
    }

    fn proxy_protocol(&mut self, i: usize, r: &RawRelay, protocol: Protocol) -> ProxyProtocol {
        use crate::relay::proxy_protocol::Version;
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

    fn proxy_policy(&mut self, i: usize, r: &RawRelay) -> crate::relay::proxy::DestPolicy {
        use crate::relay::proxy::{parse_ports, DestPolicy, DestRule};
        let mut rules = Vec::new();
        match &r.proxy_allow {
            None => self.missing(
                &format!("relay[{i}].proxy_allow"),
                "a proxy needs an explicit destination list, e.g. proxy_allow = [\"10.0.0.0/8 80,443\"] (\"all 1-65535\" for any)",
            ),
            Some(list) => {
                for (j, e) in list.iter().enumerate() {
                    let path = format!("relay[{i}].proxy_allow[{j}]");
                    let Some((hosts, ports)) = e.get_ref().trim().split_once(char::is_whitespace) else {
                        self.problem(&path, e, format!("{:?}: expected \"<cidr> <ports>\", e.g. \"10.0.0.0/8 80,443\"", e.get_ref()));
                        continue;
                    };
                    // An address block, or a host name pattern matched
                    // against the name the client asked for.
                    let (blocks, names) = match Cidr::parse_list_entry(hosts) {
                        Ok(b) => (b, Vec::new()),
                        Err(cidr_err) => match crate::pattern::HostPattern::parse(hosts) {
                            Ok(p) => (Vec::new(), vec![p]),
                            Err(_) => {
                                self.problem(&path, e, format!("{cidr_err}; nor is it a host name or *.suffix pattern"));
                                continue;
                            }
                        },
                    };
                    match parse_ports(ports.trim()) {
                        Ok(ports) => rules.push(DestRule {
                            ports,
                            // Deny by default: a name-only rule allows no address.
                            hosts: Acl::with_default(blocks.into_iter().map(|block| Rule { action: Action::Allow, block, mode: 0 }).collect(), Action::Deny),
                            names,
                        }),
                        Err(err) => self.problem(&path, e, err),
                    }
                }
            }
        }
        // Each entry is its own rule; a destination passes if any entry
        // covering its port allows its address.
        DestPolicy {
            rules,
            last_match_wins: false,
            only_v6: None,
            buckets: (r.buckets.is_some() || r.deny_buckets.is_some() || r.allow_service.is_some())
                .then(|| self.bucket_policy(i, r)),
        }
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

    fn cross_checks(&mut self, raw: &[RawRelay], relays: &[RelayConfig]) {
        for (a_idx, a) in relays.iter().enumerate() {
            for b in &relays[..a_idx] {
                let i = raw
                    .iter()
                    .position(|r| r.name.as_ref().map(|n| n.get_ref()) == Some(&a.name))
                    .unwrap_or(a_idx);
                if a.name == b.name {
                    self.missing(
                        &format!("relay[{i}].name"),
                        &format!("duplicate relay name {:?}", a.name),
                    );
                }
                if a.listen == b.listen && a.protocol == b.protocol {
                    self.missing(
                        &format!("relay[{a_idx}].listen"),
                        &format!(
                            "{} {} is already used by relay {:?}",
                            a.protocol, a.listen, b.name
                        ),
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minimal_relay_gets_defaults() {
        let c = Config::parse("[[relay]]\nlisten = \"0.0.0.0:80\"\nupstream = \"oss-ap-northeast-1-internal.aliyuncs.com:80\"\n").unwrap();
        let r = &c.relays[0];
        assert_eq!(r.name, "relay0");
        assert_eq!(r.protocol, Protocol::Tcp);
        assert_eq!(r.idle_timeout, DEFAULT_TCP_IDLE);
        assert_eq!(r.connect_timeout, DEFAULT_CONNECT_TIMEOUT);
        assert_eq!(r.upstream.port, 80);
        assert_eq!(c.drain_timeout, DEFAULT_DRAIN);
    }

    #[test]
    fn upstream_forms() {
        let v6 = Upstream::parse("[::1]:53").unwrap();
        assert_eq!(
            (v6.host.as_str(), v6.port, v6.to_string()),
            ("::1", 53, "[::1]:53".to_string())
        );
        assert_eq!(
            Upstream::parse("10.0.0.1:80").unwrap().to_string(),
            "10.0.0.1:80"
        );
        assert!(Upstream::parse("example.com")
            .unwrap_err()
            .contains("missing port"));
        assert!(Upstream::parse("example.com:0")
            .unwrap_err()
            .contains("port"));
        assert!(Upstream::parse("::1:80")
            .unwrap_err()
            .contains("[addr]:port"));
        assert!(Upstream::parse("bad host:80")
            .unwrap_err()
            .contains("valid host"));
    }

    #[test]
    fn every_problem_has_path_and_line() {
        let text = "[[relay]]\nlisten = \"0.0.0.0:80\"\nupstream = \"a:1\"\n\n[[relay]]\nlisten = \"nope\"\nupstream = \"oss.example\"\nidle_timeout = \"5\"\n";
        let problems = Config::parse(text).unwrap_err();
        let shown: Vec<String> = problems.iter().map(ToString::to_string).collect();
        assert!(shown.contains(&"relay[1].listen (line 6): \"nope\" is not an address:port (use \"0.0.0.0:80\" or \"[::]:80\")".to_string()), "{shown:?}");
        assert!(shown.iter().any(|s| s.starts_with("relay[1].upstream (line 7):") && s.contains("missing port")), "{shown:?}");
        assert!(
            shown
                .iter()
                .any(|s| s.starts_with("relay[1].idle_timeout (line 8):")),
            "{shown:?}"
        );
    }

    #[test]
    fn unknown_keys_are_rejected_with_path() {
        let problems = Config::parse(
            "[[relay]]\nlisten = \"0.0.0.0:80\"\nupstream = \"a:1\"\nupstrem = \"b:2\"\n",
        )
        .unwrap_err();
        assert_eq!(problems.len(), 1);
        assert!(
            problems[0].message.contains("unknown field `upstrem`"),
            "{:?}",
            problems[0]
        );
        assert_eq!(problems[0].line, Some(4));
        assert!(
            problems[0].path.starts_with("relay[0]"),
            "{:?}",
            problems[0]
        );
    }

    #[test]
    fn proxy_relays_need_a_destination_list_and_no_upstream() {
        let bad = Config::parse("[[relay]]\nprotocol = \"proxy\"\nlisten = \"0.0.0.0:3128\"\n")
            .unwrap_err();
        assert_eq!(bad[0].path, "relay[0].proxy_allow");
        let bad = Config::parse("[[relay]]\nprotocol = \"proxy\"\nlisten = \"0.0.0.0:3128\"\nupstream = \"a:1\"\nproxy_allow = [\"all 443\"]\n").unwrap_err();
        assert_eq!(bad[0].path, "relay[0].upstream");
        let bad = Config::parse("[[relay]]\nprotocol = \"proxy\"\nlisten = \"0.0.0.0:3128\"\nproxy_allow = [\"10.0.0.0/8\"]\n").unwrap_err();
        assert_eq!(
            (bad[0].path.as_str(), bad[0].line),
            ("relay[0].proxy_allow[0]", Some(4))
        );
        let ok = Config::parse("[[relay]]\nprotocol = \"proxy\"\nlisten = \"0.0.0.0:3128\"\nproxy_allow = [\"10.0.0.0/8 80,443\", \"192.168.0.0/16 80\"]\n").unwrap();
        let p = ok.relays[0].proxy.as_ref().unwrap();
        assert!(p.allows("10.1.1.1".parse().unwrap(), 443));
        assert!(p.allows("192.168.1.1".parse().unwrap(), 80));
        assert!(!p.allows("192.168.1.1".parse().unwrap(), 443));
    }

    #[test]
    fn health_relays_have_no_upstream() {
        let c = Config::parse("[[relay]]\nprotocol = \"health\"\nlisten = \"127.0.0.1:8099\"\n")
            .unwrap();
        assert!(c.relays[0].health.is_some() && c.relays[0].proxy.is_none());
        let bad = Config::parse(
            "[[relay]]\nprotocol = \"health\"\nlisten = \"127.0.0.1:8099\"\nupstream = \"a:1\"\n",
        )
        .unwrap_err();
        assert_eq!(bad[0].path, "relay[0].upstream");
    }

    #[test]
    fn duplicate_listen_is_reported() {
        let problems = Config::parse("[[relay]]\nlisten = \"0.0.0.0:80\"\nupstream = \"a:1\"\n[[relay]]\nlisten = \"0.0.0.0:80\"\nupstream = \"b:1\"\n").unwrap_err();
        assert!(
            problems[0].to_string().contains("already used"),
            "{problems:?}"
        );
    }

    #[test]
    fn ordered_acl_and_shorthand() {
        let c = Config::parse("[[relay]]\nlisten = \"0.0.0.0:80\"\nupstream = \"a:1\"\nallow = [\"10.0.0.0/8\"]\ndeny = [\"10.0.10.66\"]\n").unwrap();
        let acl = &c.relays[0].acl;
        assert_eq!(acl.check("10.0.10.66".parse().unwrap()).0, Action::Deny);
        assert_eq!(acl.check("10.0.10.30".parse().unwrap()).0, Action::Allow);
        assert_eq!(acl.check("192.0.2.1".parse().unwrap()).0, Action::Deny);
        let bad = Config::parse("[[relay]]\nlisten = \"0.0.0.0:80\"\nupstream = \"a:1\"\nacl = [\"permit 10.0.0.0/8\"]\n").unwrap_err();
        assert_eq!(bad[0].path, "relay[0].acl[0]");
        assert_eq!(bad[0].line, Some(4));
    }
}
