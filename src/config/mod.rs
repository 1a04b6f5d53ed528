//! Configuration: TOML text → [`raw`] serde structs → validated [`Config`].
//!
//! Every problem is reported with its key path and line, e.g.
//! `relay[1].upstream (line 7): missing port`, and validation collects all
//! problems instead of stopping at the first.

mod admin;
mod dns;
pub mod duration;
pub mod gateway;
mod proxy;
pub mod raw;
mod relay;
pub mod rewrite;
#[cfg(feature = "sftp")]
pub mod sftp;
mod tls;
mod upstream;

pub use admin::AdminConfig;
pub use dns::DnsConfig;
pub use gateway::{Gateway, PoolSettings, Route, Target, DEFAULT_HEAD_TIMEOUT};
pub use relay::{
    Backup, Forward, HealthPort, Keepalive, Protocol, ProxyProtocol, RelayConfig, Service,
};
pub use upstream::Upstream;

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::Spanned;

use duration::parse_duration;
use raw::{RawConfig, RawRelay};

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
    pub dns: Option<DnsConfig>,
    /// The admin listener (metrics, health), if configured.
    pub admin: Option<AdminConfig>,
    /// How long relays keep accepting after a stop signal, while
    /// `/readyz` already answers 503 (so a load balancer can notice).
    pub drain_grace: Duration,
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
    /// What a log line does when the log buffer is full.
    pub when_full: WhenFull,
}

/// What a log line does when the log buffer (1 MiB) is full because the
/// destination is slower than the relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WhenFull {
    /// Wait for room: nothing is lost, relaying slows down to the speed of
    /// the log destination. The default: access records are audit records.
    #[default]
    Wait,
    /// Drop the line and count it: relaying never waits on the log.
    Drop,
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
        // serde stops at the first unknown key or wrong type. To report
        // every problem in one run, the lines of each one are blanked (so
        // offsets and line numbers stay) and the text is read again, as
        // long as what is left is still TOML.
        let mut scratch = text.to_string();
        let mut problems = Vec::new();
        let raw = loop {
            let deserializer = toml::Deserializer::new(&scratch);
            match serde_path_to_error::deserialize::<_, RawConfig>(deserializer) {
                Ok(raw) => break Some(raw),
                Err(err) => {
                    let path = err.path().to_string();
                    let inner = err.into_inner();
                    let span = inner.span();
                    problems.push(Problem {
                        path: if path == "." {
                            "(top level)".into()
                        } else {
                            path
                        },
                        line: span.as_ref().map(|s| line_of(text, s.start)),
                        message: suggest(inner.message()),
                    });
                    let Some(span) = span else { break None };
                    if problems.len() >= 100 || !blank_lines(&mut scratch, span) {
                        break None;
                    }
                }
            }
        };
        let Some(raw) = raw else {
            return Err(problems);
        };
        let validated = Validator {
            text,
            base,
            problems: Vec::new(),
        }
        .config(raw);
        match validated {
            Ok(config) if problems.is_empty() => Ok(config),
            Ok(_) => Err(problems),
            Err(more) => {
                problems.extend(more);
                Err(problems)
            }
        }
    }
}

/// Blanks the whole lines that `span` touches, keeping every offset; false
/// when the rest is no longer TOML (say a value spanning several lines lost
/// its first one), since reading on would report made-up problems.
fn blank_lines(text: &mut String, span: std::ops::Range<usize>) -> bool {
    let bytes = text.as_bytes();
    let start = bytes[..span.start.min(bytes.len())]
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |p| p + 1);
    let end = bytes[span.end.min(bytes.len())..]
        .iter()
        .position(|&b| b == b'\n')
        .map_or(bytes.len(), |p| span.end + p);
    if start >= end {
        return false;
    }
    // Same length, so spans of later problems still point at their text;
    // spaces are one byte each, so the string stays valid UTF-8 (the range
    // starts and ends at a newline or an end of the text).
    let blank = " ".repeat(text[start..end].chars().count());
    let before = text.len();
    text.replace_range(start..end, &blank);
    if text.len() != before {
        return false;
    }
    toml::from_str::<toml::Table>(text).is_ok()
}

/// serde's "unknown field `x`, expected one of `a`, `b`, ..." becomes
/// "unknown field `x`; did you mean `a`?" when one valid key is close.
fn suggest(message: &str) -> String {
    let Some(rest) = message.strip_prefix("unknown field `") else {
        return message.to_string();
    };
    let Some((field, expected)) = rest.split_once('`') else {
        return message.to_string();
    };
    let candidates: Vec<&str> = expected.split('`').skip(1).step_by(2).collect();
    let best = candidates
        .iter()
        .map(|c| (edit_distance(field, c), *c))
        .min();
    match best {
        Some((d, c)) if d <= 2.max(field.len() / 3) => {
            format!("unknown field `{field}`; did you mean `{c}`?")
        }
        _ => format!(
            "unknown field `{field}`; valid keys here: {}",
            candidates.join(", ")
        ),
    }
}

/// Levenshtein distance, for "did you mean".
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
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

    /// Adds one `action` rule per address block in `list` (addresses and
    /// CIDRs), naming each bad entry as `key[j]`.
    fn address_rules(
        &mut self,
        key: &str,
        action: crate::acl::Action,
        list: &Option<Vec<Spanned<String>>>,
        rules: &mut Vec<crate::acl::Rule>,
    ) {
        for (j, e) in list.iter().flatten().enumerate() {
            match crate::acl::Cidr::parse_list_entry(e.get_ref()) {
                Ok(blocks) => rules.extend(blocks.into_iter().map(|block| crate::acl::Rule {
                    action,
                    block,
                    mode: 0,
                })),
                Err(err) => self.problem(&format!("{key}[{j}]"), e, err),
            }
        }
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
        let when_full = match raw.log.when_full.as_ref() {
            None => WhenFull::Wait,
            Some(v) => match v.get_ref().as_str() {
                "wait" => WhenFull::Wait,
                "drop" => WhenFull::Drop,
                other => {
                    self.problem(
                        "log.when_full",
                        v,
                        format!("{other:?}: expected \"wait\" or \"drop\""),
                    );
                    WhenFull::Wait
                }
            },
        };
        let log = LogConfig {
            format,
            file: raw.log.file.map(PathBuf::from),
            level: raw.log.level.map(Spanned::into_inner),
            when_full,
        };
        let drain_timeout = self
            .duration("server.drain_timeout", &raw.server.drain_timeout)
            .unwrap_or(DEFAULT_DRAIN);
        if raw.relay.is_empty() && raw.dns.is_none() {
            self.missing("relay", "no [[relay]] or [dns] defined; nothing to run");
        }
        let drain_grace = self
            .duration("server.drain_grace", &raw.server.drain_grace)
            .unwrap_or(Duration::ZERO);
        let dns = raw.dns.as_ref().and_then(|d| self.dns(d));
        let admin = raw.admin.as_ref().and_then(|a| self.admin(a));
        let mut relays = Vec::new();
        let mut raw_index = Vec::new();
        for (i, r) in raw.relay.iter().enumerate() {
            if let Some(relay) = self.relay(i, r) {
                relays.push(relay);
                raw_index.push(i);
            }
        }
        self.cross_checks(&raw.relay, &raw_index, &relays, dns.as_ref());
        if let (Some(a), Some(raw_admin)) = (&admin, &raw.admin) {
            for r in relays.iter().filter(|r| r.protocol() != Protocol::Udp) {
                let same_ip = r.listen.ip() == a.listen.ip()
                    || r.listen.ip().is_unspecified()
                    || a.listen.ip().is_unspecified();
                if same_ip && r.listen.port() == a.listen.port() {
                    if let Some(l) = &raw_admin.listen {
                        self.problem(
                            "admin.listen",
                            l,
                            format!("{} is also relay {:?}'s listen address", a.listen, r.name),
                        );
                    }
                }
            }
        }
        if self.problems.is_empty() {
            Ok(Config {
                log,
                drain_timeout,
                relays,
                dns,
                admin,
                drain_grace,
            })
        } else {
            Err(self.problems)
        }
    }

    /// Problems between relays: duplicate names, and listeners that cannot
    /// both bind (the same port and protocol on the same address, or on
    /// an address and the wildcard that covers it).
    fn cross_checks(
        &mut self,
        raw: &[RawRelay],
        raw_index: &[usize],
        relays: &[RelayConfig],
        dns: Option<&DnsConfig>,
    ) {
        for (a_idx, a) in relays.iter().enumerate() {
            let i = raw_index[a_idx];
            for (b_idx, b) in relays[..a_idx].iter().enumerate() {
                let j = raw_index[b_idx];
                if a.name == b.name {
                    let message = format!("duplicate relay name {:?} (also relay[{j}])", a.name);
                    match &raw[i].name {
                        Some(n) => self.problem(&format!("relay[{i}].name"), n, message),
                        None => self.missing(&format!("relay[{i}].name"), &message),
                    }
                }
                if a.protocol() == b.protocol()
                    && listeners_overlap(a.listen, a.v6only, b.listen, b.v6only)
                {
                    let message = if a.listen == b.listen {
                        format!(
                            "{} {} is already used by relay {:?}",
                            a.protocol(),
                            a.listen,
                            b.name
                        )
                    } else {
                        format!(
                            "{} {} overlaps {} of relay {:?}: both cannot bind",
                            a.protocol(),
                            a.listen,
                            b.listen,
                            b.name
                        )
                    };
                    match &raw[i].listen {
                        Some(l) => self.problem(&format!("relay[{i}].listen"), l, message),
                        None => self.missing(&format!("relay[{i}].listen"), &message),
                    }
                }
            }
            // The DNS responder binds its port for UDP and TCP.
            if let Some(d) = dns {
                if listeners_overlap(a.listen, a.v6only, d.listen, false) {
                    let message = format!(
                        "{} {} overlaps the [dns] listen address {}",
                        a.protocol(),
                        a.listen,
                        d.listen
                    );
                    match &raw[i].listen {
                        Some(l) => self.problem(&format!("relay[{i}].listen"), l, message),
                        None => self.missing(&format!("relay[{i}].listen"), &message),
                    }
                }
            }
        }
    }
}

/// Whether two sockets of one protocol cannot both bind: the same port,
/// and the same address or a wildcard that covers the other (`0.0.0.0`
/// covers every IPv4 address; `[::]` also covers IPv4 unless it is
/// IPv6-only). Port 0 picks a free port and never conflicts.
fn listeners_overlap(a: SocketAddr, a_v6only: bool, b: SocketAddr, b_v6only: bool) -> bool {
    if a.port() != b.port() || a.port() == 0 {
        return false;
    }
    let covers = |w: SocketAddr, w_v6only: bool, other: SocketAddr| {
        w.ip().is_unspecified() && (w.is_ipv4() == other.is_ipv4() || (w.is_ipv6() && !w_v6only))
    };
    a.ip() == b.ip() || covers(a, a_v6only, b) || covers(b, b_v6only, a)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::acl::Action;

    #[test]
    fn minimal_relay_gets_defaults() {
        let c = Config::parse("[[relay]]\nlisten = \"0.0.0.0:80\"\nupstream = \"oss-ap-northeast-1-internal.aliyuncs.com:80\"\n").unwrap();
        let r = &c.relays[0];
        assert_eq!(r.name, "relay0");
        assert_eq!(r.protocol(), Protocol::Tcp);
        assert_eq!(r.idle_timeout, DEFAULT_TCP_IDLE);
        assert_eq!(r.connect_timeout, DEFAULT_CONNECT_TIMEOUT);
        assert!(matches!(&r.service, Service::Tcp(f) if f.upstream.port == 80));
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
        let Service::Proxy(p) = &ok.relays[0].service else {
            panic!("not a proxy relay")
        };
        assert!(p.allows("10.1.1.1".parse().unwrap(), 443));
        assert!(p.allows("192.168.1.1".parse().unwrap(), 80));
        assert!(!p.allows("192.168.1.1".parse().unwrap(), 443));
    }

    #[test]
    fn health_relays_have_no_upstream() {
        let c = Config::parse("[[relay]]\nprotocol = \"health\"\nlisten = \"127.0.0.1:8099\"\n")
            .unwrap();
        assert!(matches!(c.relays[0].service, Service::Health(_)));
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
    fn every_type_error_and_unknown_key_is_reported_in_one_run() {
        let text = "[[relay]]\nlisten = \"0.0.0.0:80\"\nupstrem = \"a:1\"\nidle_timeout = 5\nnodelay = \"yes\"\n[log]\nlevle = \"info\"\n";
        let p = Config::parse(text).unwrap_err();
        let shown: Vec<String> = p.iter().map(ToString::to_string).collect();
        let has = |line: usize, needle: &str| {
            p.iter()
                .any(|x| x.line == Some(line) && x.message.contains(needle))
        };
        assert!(has(3, "did you mean `upstream`?"), "{shown:#?}");
        assert!(has(4, "invalid type"), "{shown:#?}");
        assert!(has(5, "invalid type"), "{shown:#?}");
        assert!(has(7, "did you mean `level`?"), "{shown:#?}");
        // With the typo set aside, validation still runs on the rest.
        assert!(
            p.iter().any(|x| x.path == "relay[0].upstream"),
            "{shown:#?}"
        );
        let far =
            Config::parse("[[relay]]\nlisten = \"0.0.0.0:80\"\nupstream = \"a:1\"\nzzzzzzzz = 1\n")
                .unwrap_err();
        assert!(far[0].message.contains("valid keys here:"), "{far:?}");
    }

    #[test]
    fn ports_out_of_range_are_called_that() {
        let p = Config::parse("[[relay]]\nlisten = \"0.0.0.0:70000\"\nupstream = \"a:80000\"\n")
            .unwrap_err();
        assert!(p[0].message.contains("port 70000 is out of range"), "{p:?}");
        assert!(p[1].message.contains("port 80000 is out of range"), "{p:?}");
    }

    #[test]
    fn overlapping_listeners_are_reported_with_their_line() {
        let two = |a: &str, b: &str| {
            format!("[[relay]]\nlisten = \"{a}\"\nupstream = \"a:1\"\n[[relay]]\nlisten = \"{b}\"\nupstream = \"b:1\"\n")
        };
        let p = Config::parse(&two("127.0.0.1:18100", "0.0.0.0:18100")).unwrap_err();
        assert_eq!(
            (p[0].path.as_str(), p[0].line),
            ("relay[1].listen", Some(5))
        );
        assert!(p[0].message.contains("overlaps 127.0.0.1:18100"), "{p:?}");
        assert!(Config::parse(&two("0.0.0.0:18100", "[::]:18100")).is_err());
        assert!(Config::parse(&two("[::1]:18100", "[::]:18100")).is_err());
        assert!(Config::parse(&two("127.0.0.1:18100", "127.0.0.2:18100")).is_ok());
        assert!(Config::parse(&two("0.0.0.0:18100", "0.0.0.0:18101")).is_ok());
        assert!(Config::parse(&two("127.0.0.1:0", "0.0.0.0:0")).is_ok());
        let v6only = "[[relay]]\nlisten = \"0.0.0.0:18100\"\nupstream = \"a:1\"\n[[relay]]\nlisten = \"[::]:18100\"\nv6only = true\nupstream = \"b:1\"\n";
        assert!(Config::parse(v6only).is_ok());
        let udp_and_tcp = "[[relay]]\nlisten = \"0.0.0.0:53\"\nupstream = \"a:1\"\n[[relay]]\nprotocol = \"udp\"\nlisten = \"127.0.0.1:53\"\nupstream = \"b:1\"\n";
        assert!(Config::parse(udp_and_tcp).is_ok());
        let names = "[[relay]]\nname = \"x\"\nlisten = \"127.0.0.1:1\"\nupstream = \"a:1\"\n[[relay]]\nname = \"x\"\nlisten = \"127.0.0.1:2\"\nupstream = \"b:1\"\n";
        let p = Config::parse(names).unwrap_err();
        assert_eq!((p[0].path.as_str(), p[0].line), ("relay[1].name", Some(6)));
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
