//! stone 2.4's command line: `stone [opt]... <stone> [-- <stone>]...`.
//!
//! [`parse`] turns the words (from argv or a `-C` file) into a
//! [`StoneCommand`]; [`StoneCommand::to_config`] turns that into the
//! engine's [`Config`]. Options ossrelay cannot honour are refused with a
//! message that names the option and says why; none is ignored silently.

pub mod lex;
#[cfg(unix)]
pub mod process;
pub mod services;
pub mod spec;
pub mod toml_out;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use crate::acl::Acl;
use crate::config::{
    Config, Forward, LogConfig, LogFormat, RelayConfig, Service, Upstream, DEFAULT_CONNECT_TIMEOUT,
};
use spec::Stone;

/// stone's default UDP session memory (`-u`).
pub const STONE_UDP_SESSIONS: usize = 100;
/// stone's default listen backlog (`-A`).
pub const STONE_BACKLOG: u32 = 50;

/// Everything a stone command line says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoneCommand {
    /// `-d` count.
    pub debug: u8,
    /// `-n`: numeric addresses in logs (ossrelay never reverse-resolves).
    pub numeric: bool,
    /// `-u <max>`: UDP sessions per stone.
    pub udp_sessions: Option<usize>,
    /// `-f <n>`: stone forks n children; ossrelay runs n worker threads.
    pub workers: Option<usize>,
    /// `-L <file>`: log file.
    pub log_file: Option<PathBuf>,
    /// `-ll`: run under daemontools (log to stderr, stay in foreground).
    pub daemontools: bool,
    /// `-p` count: packet dump mode.
    pub dump: u32,
    /// `-l`: log to syslog.
    pub syslog: bool,
    /// `-i <file>`: pid file.
    pub pid_file: Option<PathBuf>,
    /// `-X <n>`: stone's copy buffer size; only affects the fallback copy.
    pub xfer_buffer: Option<usize>,
    /// `-T <n>`: TCP idle timeout in seconds.
    pub timeout: Option<u64>,
    /// `-A <n>`: listen backlog.
    pub backlog: Option<u32>,
    /// `-r`: SO_REUSEADDR (ossrelay always sets it on TCP listeners).
    pub reuse: bool,
    /// `-N`: check the configuration and exit.
    pub check_only: bool,
    /// `-D`: become a daemon.
    pub daemon: bool,
    /// `-o <uid>`
    pub uid: Option<u32>,
    /// `-g <gid>`
    pub gid: Option<u32>,
    /// `-t <dir>`: chroot after binding.
    pub chroot: Option<PathBuf>,
    /// `-c <dir>`: directory for core dumps (the working directory).
    pub core_dir: Option<PathBuf>,
    /// The stones, in order.
    pub stones: Vec<Stone>,
    /// The words as given, for messages and `--print-toml`.
    pub argv: Vec<String>,
    /// `-a <file>`: accounting file.
    pub accounting: Option<PathBuf>,
    /// `-b`: (master as written, its backup).
    pub backups: Vec<(String, crate::config::Backup)>,
    /// `-B`: (destination as written, the group).
    pub groups: Vec<(String, Vec<Upstream>)>,
}

/// Options stone has that ossrelay refuses, with the reason.
fn refused_option(opt: char) -> Option<&'static str> {
    Some(match opt {
        'M' => "Windows service installation (-M) does not exist on this platform",
        _ => return None,
    })
}

fn number<T: std::str::FromStr>(opt: &str, value: Option<&String>) -> Result<T, String> {
    let v = value.ok_or_else(|| format!("{opt}: missing argument"))?;
    v.parse()
        .map_err(|_| format!("{opt}: {v:?} is not a valid number"))
}

fn id_number(opt: &str, value: Option<&String>) -> Result<u32, String> {
    let v = value.ok_or_else(|| format!("{opt}: missing argument"))?;
    if let Ok(n) = v.parse() {
        return Ok(n);
    }
    let file = if opt == "-o" {
        "/etc/passwd"
    } else {
        "/etc/group"
    };
    std::fs::read_to_string(file)
        .ok()
        .and_then(|t| {
            t.lines().find_map(|l| {
                let f: Vec<&str> = l.split(':').collect();
                (f.first() == Some(&v.as_str())).then(|| f.get(2)?.parse().ok())?
            })
        })
        .ok_or_else(|| {
            format!(
                "{opt}: unknown {} {v:?}",
                if opt == "-o" { "user" } else { "group" }
            )
        })
}

/// Where in the command line an option group appears: phase A (before
/// the first stone) allows everything; between stones `-h -N -C` are invalid.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    Leading,
    BetweenStones,
}

/// Parses stone's words (argv without the program name).
pub fn parse(words: &[String]) -> Result<StoneCommand, String> {
    let mut cmd = StoneCommand::default();
    let mut per_stone = PerStone::default();
    let mut config_file: Option<String> = None;
    let mut preprocessor: Option<(String, Vec<String>)> = None;
    let mut i = 0;
    // Phase A: option groups up to the first word that is not one.
    while i < words.len() && words[i].starts_with('-') && words[i].len() > 1 {
        if words[i] == "--" {
            i += 1;
            break;
        }
        i = option_group(
            &mut cmd,
            &mut per_stone,
            words,
            i,
            Phase::Leading,
            &mut config_file,
            &mut preprocessor,
        )?;
    }
    let mut stones = Vec::new();
    let mut file_words = Vec::new();
    if let Some(path) = &config_file {
        let text = read_config(path, preprocessor.as_ref())?;
        file_words = lex::split(&text).map_err(|e| format!("-C {path}: {e}"))?;
        // The file's leading options apply before any stone is created.
        let mut j = 0;
        let mut nested = None;
        while j < file_words.len() && file_words[j].starts_with('-') && file_words[j].len() > 1 {
            if file_words[j] == "--" {
                j += 1;
                break;
            }
            j = option_group(
                &mut cmd,
                &mut per_stone,
                &file_words,
                j,
                Phase::Leading,
                &mut nested,
                &mut preprocessor,
            )
            .map_err(|e| format!("-C {path}: {e}"))?;
            if nested.is_some() {
                return Err(format!(
                    "-C {path}: -C may not appear inside a configuration file"
                ));
            }
        }
        file_words.drain(..j);
    }
    stone_list(&mut cmd, &mut per_stone, &words[i..], &mut stones)?;
    if let Some(path) = &config_file {
        stone_list(&mut cmd, &mut per_stone, &file_words, &mut stones)
            .map_err(|e| format!("-C {path}: {e}"))?;
    }
    cmd.stones = stones;
    cmd.argv = words.to_vec();
    if cmd.stones.is_empty() {
        return Err("no <stone> given; usage: stone <opt>... <stone> [-- <stone>]...".into());
    }
    Ok(cmd)
}

/// Options that stone copies into each stone defined after them.
#[derive(Debug, Clone, Default)]
struct PerStone {
    timeout: Option<u64>,
    /// `-I`: local address of upstream connections.
    source: Option<SocketAddr>,
    /// `-x` rules, captured by `proxy` stones defined after them.
    proxy_rules: Vec<crate::policy::dest::DestRule>,
    /// `-s` script for the `-b` checks defined after it.
    script: Vec<(String, String)>,
    /// `-q` words in force (TLS to destinations).
    ssl_client: Vec<String>,
    /// `-z` words in force (TLS from clients).
    ssl_server: Vec<String>,
}

fn stone_list(
    cmd: &mut StoneCommand,
    per: &mut PerStone,
    words: &[String],
    out: &mut Vec<Stone>,
) -> Result<(), String> {
    let mut i = 0;
    let mut none = None;
    let mut no_pre = None;
    while i < words.len() {
        if words[i] == "--" {
            i += 1;
            continue;
        }
        if words[i].starts_with('-') && words[i].len() > 1 {
            i = option_group(
                cmd,
                per,
                words,
                i,
                Phase::BetweenStones,
                &mut none,
                &mut no_pre,
            )?;
            continue;
        }
        let end = words[i..]
            .iter()
            .position(|w| w == "--")
            .map_or(words.len(), |p| i + p);
        let mut stone = parse_stone(&words[i..end], out.len() + 1)?;
        stone.timeout = per.timeout;
        stone.source = per.source;
        if let Some(p) = stone.proxy.as_mut() {
            p.rules = per.proxy_rules.clone();
        }
        let what = |e: String| {
            format!(
                "<stone> #{} ({}): {e}",
                out.len() + 1,
                stone.words.join(" ")
            )
        };
        if stone.listen.ssl {
            stone.tls_server =
                Some(crate::tls::stone_opts::server_spec(&per.ssl_server).map_err(what)?);
        }
        if stone.target.ssl {
            stone.tls_client =
                Some(crate::tls::stone_opts::client_spec(&per.ssl_client).map_err(what)?);
        }
        out.push(stone);
        i = end;
    }
    Ok(())
}

/// Processes the option group at `words[i]` (e.g. `-dd`, `-ud 5`); returns
/// the index after it and any arguments it consumed.
#[allow(clippy::too_many_arguments)]
fn option_group(
    cmd: &mut StoneCommand,
    per: &mut PerStone,
    words: &[String],
    i: usize,
    phase: Phase,
    config_file: &mut Option<String>,
    pre: &mut Option<(String, Vec<String>)>,
) -> Result<usize, String> {
    let group = &words[i];
    let mut next = i + 1;
    let mut take = |opt: char| -> Result<String, String> {
        let v = words
            .get(next)
            .cloned()
            .ok_or_else(|| format!("-{opt}: missing argument"))?;
        next += 1;
        Ok(v)
    };
    let chars: Vec<char> = group[1..].chars().collect();
    let mut k = 0;
    while k < chars.len() {
        let c = chars[k];
        let opt = format!("-{c}");
        match c {
            'h' | 'N' | 'C' if phase == Phase::BetweenStones => {
                return Err(format!("{opt}: only allowed before the first <stone>"))
            }
            'd' => cmd.debug = cmd.debug.saturating_add(1),
            'n' => cmd.numeric = true,
            'p' => cmd.dump = cmd.dump.saturating_add(1),
            'r' => cmd.reuse = true,
            'N' => cmd.check_only = true,
            'D' => cmd.daemon = true,
            'l' if chars.get(k + 1) == Some(&'l') => {
                cmd.daemontools = true;
                k += 1;
            }
            'l' => cmd.syslog = true,
            'h' => return Err("-h: see `ossrelay stone --help`".into()),
            'C' => {
                if config_file.is_some() {
                    return Err("-C: only one configuration file may be given".into());
                }
                *config_file = Some(take(c)?);
            }
            'P' => pre.get_or_insert_with(|| (String::new(), Vec::new())).0 = take(c)?,
            'Q' => {
                let q = take(c)?;
                pre.get_or_insert_with(|| (String::new(), Vec::new()))
                    .1
                    .extend(q.split_whitespace().map(str::to_string));
            }
            'u' => cmd.udp_sessions = Some(number::<usize>(&opt, Some(&take(c)?))?.max(1)),
            'f' => cmd.workers = Some(number::<usize>(&opt, Some(&take(c)?))?.clamp(1, 256)),
            'L' => cmd.log_file = Some(PathBuf::from(take(c)?)),
            'i' => cmd.pid_file = Some(PathBuf::from(take(c)?)),
            'X' => cmd.xfer_buffer = Some(number(&opt, Some(&take(c)?))?),
            'T' => {
                let t: u64 = number(&opt, Some(&take(c)?))?;
                if t == 0 || t > i32::MAX as u64 {
                    return Err(format!(
                        "-T: timeout must be between 1 and {} seconds",
                        i32::MAX
                    ));
                }
                cmd.timeout = Some(t);
                per.timeout = Some(t);
            }
            'A' => cmd.backlog = Some(number(&opt, Some(&take(c)?))?),
            'a' => cmd.accounting = Some(PathBuf::from(take(c)?)),
            'I' => {
                let w = take(c)?;
                per.source = if w.is_empty() {
                    None
                } else {
                    let (base, v6) = match w.strip_suffix("/v6") {
                        Some(b) => (b, true),
                        None => (w.as_str(), false),
                    };
                    let listen = spec::parse_listen(&format!(
                        "{base}{}",
                        if base.contains(':') && !v6 { "" } else { ":0" }
                    ))
                    .or_else(|_| spec::parse_listen(base))
                    .map_err(|e| format!("-I: {e}"))?;
                    let ip = listen.addr.ok_or_else(|| format!("-I {w}: needs a host"))?;
                    Some(SocketAddr::new(ip, listen.port))
                };
            }
            'b' => {
                let usage =
                    "-b: expected [host=<host>] [port=<port>] <n> <master>:<port> <backup>:<port>";
                let mut word = take(c).map_err(|_| usage.to_string())?;
                let (mut check_host, mut check_port) = (None, None);
                while let Some((var, val)) = word.split_once('=') {
                    match var {
                        "host" => check_host = Some(val.to_string()),
                        "port" => {
                            check_port = Some(number::<u16>("-b port=", Some(&val.to_string()))?)
                        }
                        other => {
                            return Err(format!("-b {other}=: not supported (use host= or port=)"))
                        }
                    }
                    word = take(c).map_err(|_| usage.to_string())?;
                }
                let interval: u64 = number("-b", Some(&word))?;
                if interval == 0 || interval > 86_400 {
                    return Err("-b: the check interval must be 1..=86400 seconds".into());
                }
                let master_word = take(c).map_err(|_| usage.to_string())?;
                let backup_word = take(c).map_err(|_| usage.to_string())?;
                let master =
                    spec::parse_target(&master_word).map_err(|e| format!("-b master: {e}"))?;
                let backup =
                    spec::parse_target(&backup_word).map_err(|e| format!("-b backup: {e}"))?;
                let check = Upstream {
                    host: check_host.unwrap_or_else(|| master.host.clone()),
                    port: check_port.unwrap_or(master.port),
                };
                let key = master_word
                    .split('/')
                    .next()
                    .unwrap_or(&master_word)
                    .to_string();
                cmd.backups.push((
                    key,
                    crate::config::Backup {
                        upstream: Upstream {
                            host: backup.host,
                            port: backup.port,
                        },
                        check,
                        interval: Duration::from_secs(interval),
                        script: per.script.clone(),
                    },
                ));
            }
            'B' => {
                let mut members = Vec::new();
                loop {
                    let w =
                        take(c).map_err(|_| "-B: the host list must end with --".to_string())?;
                    if w == "--" {
                        break;
                    }
                    let t = spec::parse_target(&w).map_err(|e| format!("-B: {e}"))?;
                    members.push((
                        w,
                        Upstream {
                            host: t.host,
                            port: t.port,
                        },
                    ));
                }
                let Some((key, _)) = members.first().cloned() else {
                    return Err("-B: expected <host>:<port> <host1>:<port1>... --".into());
                };
                let key = key.split('/').next().unwrap_or(&key).to_string();
                cmd.groups
                    .push((key, members.into_iter().map(|(_, u)| u).collect()));
            }
            'x' => {
                let ports = take(c).map_err(|_| {
                    "-x: expected <port>[,<port>][-<port>]... <xhost>... --".to_string()
                })?;
                if ports == "--" {
                    // `-x --` forgets the earlier -x rules.
                    per.proxy_rules.clear();
                } else {
                    let ports =
                        crate::policy::dest::parse_ports(&ports).map_err(|e| format!("-x: {e}"))?;
                    let mut hosts = Vec::new();
                    loop {
                        let w = take(c)
                            .map_err(|_| "-x: the xhost list must end with --".to_string())?;
                        if w == "--" {
                            break;
                        }
                        hosts.push(w);
                    }
                    let (rules, default) =
                        spec::parse_xhosts(&hosts).map_err(|e| format!("-x: {e}"))?;
                    per.proxy_rules.push(crate::policy::dest::DestRule {
                        ports,
                        hosts: Acl::with_default(rules, default),
                        names: Vec::new(),
                    });
                }
            }
            's' => {
                let usage = "-s: expected <send> <expect> [<send> <expect>]... --";
                let mut script = Vec::new();
                loop {
                    let send = take(c).map_err(|_| usage.to_string())?;
                    if send == "--" {
                        break;
                    }
                    let expect = take(c).map_err(|_| usage.to_string())?;
                    if expect == "--" {
                        return Err(format!("{usage} (send {send:?} has no expect)"));
                    }
                    regex::Regex::new(&expect)
                        .map_err(|e| format!("-s: expect {expect:?} is not a valid regex: {e}"))?;
                    script.push((send, expect));
                }
                per.script = script;
            }
            'q' | 'z' => {
                use crate::tls::stone_opts::{check, Side};
                let (side, words) = if c == 'q' {
                    (Side::Client, &mut per.ssl_client)
                } else {
                    (Side::Server, &mut per.ssl_server)
                };
                let word = take(c)?;
                if check(side, &word)? {
                    words.clear();
                } else {
                    words.push(word);
                }
            }
            'o' => cmd.uid = Some(id_number(&opt, Some(&take(c)?))?),
            'g' => cmd.gid = Some(id_number(&opt, Some(&take(c)?))?),
            't' => cmd.chroot = Some(PathBuf::from(take(c)?)),
            'c' => cmd.core_dir = Some(PathBuf::from(take(c)?)),
            c => {
                return Err(match refused_option(c) {
                    Some(why) => format!("-{c}: not supported: {why}"),
                    None => format!("{group}: unknown option -{c}"),
                })
            }
        }
        k += 1;
    }
    Ok(next)
}

fn read_config(path: &str, pre: Option<&(String, Vec<String>)>) -> Result<String, String> {
    // stone runs config files through `cpp -traditional` unless `-P ''`.
    let default_cpp;
    let pre = match pre {
        Some(p) => Some(p),
        None if std::path::Path::new("/usr/bin/cpp").exists() => {
            let host = hostname();
            let mut opts = vec![
                "-traditional".to_string(),
                format!("-DHOST={host}"),
                format!("-DHOST_{}", host.replace(['.', '-'], "_")),
            ];
            if let Ok(home) = std::env::var("HOME") {
                opts.push(format!("-DHOME={home}"));
            }
            default_cpp = ("/usr/bin/cpp".to_string(), opts);
            Some(&default_cpp)
        }
        None => None,
    };
    match pre {
        Some((command, opts)) if !command.is_empty() => {
            if !std::path::Path::new(path).is_file() {
                return Err(format!("-C {path}: cannot open configuration file"));
            }
            let out = std::process::Command::new(command)
                .args(opts)
                .arg(path)
                .output()
                .map_err(|e| format!("-P {command}: {e}"))?;
            // stone reads whatever the preprocessor wrote and ignores its
            // exit status: cpp fails on a `# comment` line (not a
            // directive) yet still writes the rest of the file. Only a
            // failure that wrote nothing is an error.
            if !out.status.success() && out.stdout.iter().all(u8::is_ascii_whitespace) {
                let err = String::from_utf8_lossy(&out.stderr);
                return Err(format!(
                    "-C {path}: preprocessor {command} failed ({}): {}",
                    out.status,
                    err.trim()
                ));
            }
            String::from_utf8(out.stdout).map_err(|_| format!("-P {command}: output is not UTF-8"))
        }
        _ => std::fs::read_to_string(path).map_err(|e| format!("-C {path}: {e}")),
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "localhost".into())
}

/// `proxy <sport> [<xhost>...]` and `health <sport> [<xhost>...]`: stones
/// that serve a protocol themselves instead of forwarding to a destination.
fn service_stone(kind: &str, group: &[String]) -> Result<Stone, String> {
    if group.len() < 2 {
        return Err(format!("expected {kind} <sport> [<xhost>...]"));
    }
    let listen = spec::parse_listen(&group[1])?;
    if listen.udp {
        return Err(format!("a {kind} stone is TCP only"));
    }
    let (acl, acl_default) = spec::parse_xhosts(&group[2..])?;
    let proxy = (kind == "proxy").then(|| crate::policy::dest::DestPolicy {
        rules: Vec::new(),
        last_match_wins: true,
        only_v6: None,
        buckets: None,
    });
    Ok(Stone {
        target: spec::Target {
            host: kind.into(),
            port: 0,
            udp: false,
            v6: false,
            ssl: false,
            unix: false,
            http: false,
            header_every: None,
            nobackup: false,
        },
        listen,
        acl,
        acl_default,
        words: group.to_vec(),
        timeout: None,
        source: None,
        proxy,
        health: kind == "health",
        identd: kind == "identd",
        tls_server: None,
        tls_client: None,
        rewrite: None,
    })
}

fn parse_stone(group: &[String], n: usize) -> Result<Stone, String> {
    let first = group[0].as_str();
    let what = |e: String| format!("<stone> #{n} ({}): {e}", group.join(" "));
    match first.split('/').next().unwrap_or(first) {
        "proxy" if first != "proxy" => {
            let only_v6 = match first {
                "proxy/v4only" => false,
                "proxy/v6only" => true,
                _ => {
                    return Err(what(format!(
                        "{first}: expected proxy, proxy/v4only or proxy/v6only"
                    )))
                }
            };
            let mut s = service_stone("proxy", group).map_err(what)?;
            if let Some(p) = s.proxy.as_mut() {
                p.only_v6 = Some(only_v6);
            }
            return Ok(s);
        }
        "health" if first != "health" => {
            return Err(what(format!("{first}: the health port is TCP only")))
        }
        "proxy" | "health" => return service_stone(first, group).map_err(what),
        "identd" => return service_stone(first, group).map_err(what),
        _ => {}
    }
    if group.len() < 2 {
        return Err(what("expected <host>:<port> <sport> [<xhost>...]".into()));
    }
    if group[1].starts_with('/') || group[1].starts_with("./") {
        return Err(what(format!(
            "{}: listening on a unix-domain socket is not implemented (unix-domain destinations are)",
            group[1]
        )));
    }
    let target = if first.starts_with('/') || first.starts_with("./") {
        spec::parse_unix_target(first).map_err(what)?
    } else {
        spec::parse_target(first).map_err(what)?
    };
    let listen = spec::parse_listen(&group[1]).map_err(what)?;
    // `/http`, `/proxy` and `/mproxy` destinations take one more word.
    let takes_word = target.http || target.header_every.is_some();
    let xhosts = if takes_word { 3 } else { 2 };
    let word = match group.get(2) {
        Some(w) if takes_word => Some(crate::config::rewrite::Template::parse(w).map_err(what)?),
        None if takes_word => {
            return Err(what(format!(
                "{first} needs a {} after the sport",
                if target.http { "request" } else { "header" }
            )))
        }
        _ => None,
    };
    let rewrite = (takes_word || listen.http).then(|| {
        let mut r = crate::config::rewrite::Rewrite {
            http_accept: listen.http,
            header_every: target.header_every == Some(true),
            ..Default::default()
        };
        if target.http {
            r.http_request = word.clone();
        } else {
            r.header = word.clone();
        }
        r
    });
    let (acl, acl_default) = spec::parse_xhosts(&group[xhosts.min(group.len())..]).map_err(what)?;
    if (target.http || target.header_every.is_some() || listen.http) && (listen.udp || target.udp) {
        return Err(what(
            "/http, /proxy and /mproxy apply to TCP stones only".into(),
        ));
    }
    if target.http && target.header_every.is_some() {
        return Err(what(
            "/http and /proxy cannot be combined on one destination".into(),
        ));
    }
    if target.udp != listen.udp {
        return Err(what(format!(
            "relaying {} to {} is not supported; use /udp on both sides or neither",
            if listen.udp { "UDP" } else { "TCP" },
            if target.udp { "UDP" } else { "TCP" }
        )));
    }
    if listen.udp && (listen.ssl || target.ssl) {
        return Err(what("/ssl applies to TCP stones only".into()));
    }
    Ok(Stone {
        target,
        listen,
        acl,
        acl_default,
        words: group.to_vec(),
        timeout: None,
        source: None,
        proxy: None,
        health: false,
        identd: false,
        tls_server: None,
        tls_client: None,
        rewrite,
    })
}

impl StoneCommand {
    /// The engine config this command line describes.
    pub fn to_config(&self) -> Result<Config, String> {
        let mut relays = Vec::new();
        for (i, s) in self.stones.iter().enumerate() {
            let ip = match (s.listen.addr, s.listen.v6) {
                (Some(ip), _) => ip,
                (None, true) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
                (None, false) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            };
            let listen = SocketAddr::new(ip, s.listen.port);
            let upstream = Upstream {
                host: s.target.host.clone(),
                port: s.target.port,
            };
            let name = format!("stone{i}");
            let dest = s.words[0].split('/').next().unwrap_or(&s.words[0]);
            let service = if s.listen.udp {
                Service::Udp(upstream)
            } else if let Some(p) = &s.proxy {
                Service::Proxy(p.clone())
            } else if s.health {
                Service::Health(crate::config::HealthPort {
                    debug: self.debug,
                    config: self.argv.join(" "),
                })
            } else if s.identd {
                Service::Identd
            } else {
                let group = self.groups.iter().rev().find(|(k, _)| k == dest);
                let backup = self
                    .backups
                    .iter()
                    .rev()
                    .find(|(k, _)| k == dest && !s.target.nobackup);
                Service::Tcp(Forward {
                    upstream,
                    group: group.map(|(_, g)| g.clone()).unwrap_or_default(),
                    backup: backup.map(|(_, b)| b.clone()),
                    unix: s.target.unix.then(|| PathBuf::from(&s.target.host)),
                    rewrite: s.rewrite.clone(),
                })
            };
            let mut r = RelayConfig::new(&name, listen, service);
            if s.listen.udp {
                r.idle_timeout = crate::config::DEFAULT_UDP_IDLE;
            } else if let Some(t) = s.timeout {
                r.idle_timeout = Duration::from_secs(t);
            }
            r.max_sessions = self.udp_sessions.unwrap_or(STONE_UDP_SESSIONS);
            r.acl = Acl::with_default(s.acl.clone(), s.acl_default);
            r.connect_timeout = DEFAULT_CONNECT_TIMEOUT;
            r.backlog = self.backlog.unwrap_or(STONE_BACKLOG);
            r.interface = s.listen.interface.clone();
            r.v6only = s.listen.v6only;
            r.upstream_v6 = s.target.v6;
            r.source = s.source;
            r.dump = self.dump;
            r.accounting = self.accounting.clone();
            let what = |e: String| format!("<stone> #{} ({}): {e}", i + 1, s.words.join(" "));
            if s.listen.ssl && (s.proxy.is_some() || s.health || s.identd) {
                return Err(what(
                    "/ssl on proxy and health stones is not implemented".into(),
                ));
            }
            if let Some(spec) = &s.tls_server {
                r.tls = Some(
                    crate::tls::ServerTls::build(spec.clone())
                        .map_err(|e| what(format!("-z: {e}")))?,
                );
            }
            if let Some(spec) = &s.tls_client {
                r.upstream_tls = Some(
                    crate::tls::ClientTls::build(spec.clone())
                        .map_err(|e| what(format!("-q: {e}")))?,
                );
            }
            if let Some(other) = relays
                .iter()
                .position(|o: &RelayConfig| o.listen == r.listen && o.protocol() == r.protocol())
            {
                return Err(format!(
                    "<stone> #{} ({}): {} {} is already used by <stone> #{}; ossrelay does not share one listener between stones",
                    i + 1,
                    s.words.join(" "),
                    r.protocol(),
                    r.listen,
                    other + 1
                ));
            }
            relays.push(r);
        }
        Ok(Config {
            log: LogConfig {
                format: if self.syslog && !self.daemontools {
                    LogFormat::Syslog
                } else {
                    LogFormat::Text
                },
                file: if self.daemontools {
                    None
                } else {
                    self.log_file.clone()
                },
                level: None,
                when_full: Default::default(),
            },
            drain_timeout: crate::config::DEFAULT_DRAIN,
            relays,
            dns: None,
            admin: None,
            drain_grace: std::time::Duration::ZERO,
        })
    }

    /// The tracing filter for stone's `-d` levels: the mapping lines and
    /// errors always; close lines from -d; accepted lines from -d -d (as in
    /// the blog); connection details from -d -d -d.
    pub fn log_filter(&self) -> &'static str {
        match self.debug {
            0 => "warn,ossrelay::server=info,ossrelay::stone=info,ossrelay::dump=info",
            1 => "warn,ossrelay::server=info,ossrelay::stone=info,ossrelay::dump=info,ossrelay::access=info",
            2 => "info,ossrelay=info",
            _ => "info,ossrelay=debug",
        }
    }

    /// Messages about options accepted with a different meaning.
    pub fn notices(&self) -> Vec<String> {
        let mut v = Vec::new();
        if let Some(n) = self.workers {
            v.push(format!(
                "-f {n}: running {n} worker threads instead of {n} child processes"
            ));
        }
        if let Some(x) = self.xfer_buffer {
            v.push(format!("-X {x}: not used: bytes move with splice(2), and the fallback copy uses a fixed 64 KiB buffer"));
        }
        if self.reuse {
            v.push("-r: SO_REUSEADDR is always set on TCP listeners".into());
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_string).collect()
    }

    #[test]
    fn the_blog_line() {
        let c = parse(&words(
            "-d -d oss-ap-northeast-1-internal.aliyuncs.com:80 80",
        ))
        .unwrap();
        assert_eq!(c.debug, 2);
        let cfg = c.to_config().unwrap();
        let r = &cfg.relays[0];
        assert_eq!(r.listen, "0.0.0.0:80".parse().unwrap());
        assert_eq!(
            r.upstream().unwrap().to_string(),
            "oss-ap-northeast-1-internal.aliyuncs.com:80"
        );
        assert_eq!(r.idle_timeout, Duration::from_secs(600));
    }

    #[test]
    fn several_stones_options_and_groups() {
        let c = parse(&words("-dd -n -T 30 -u 5 -A 128 10.0.0.1:53/udp 5353/udp -- 10.0.0.2:80 127.0.0.1:8080 ! 10.0.0.66 ! 10.0.0.0/8")).unwrap();
        assert_eq!(
            (c.debug, c.numeric, c.timeout, c.udp_sessions, c.backlog),
            (2, true, Some(30), Some(5), Some(128))
        );
        let cfg = c.to_config().unwrap();
        assert_eq!(cfg.relays.len(), 2);
        assert_eq!(cfg.relays[0].protocol(), crate::config::Protocol::Udp);
        assert_eq!(cfg.relays[0].max_sessions, 5);
        assert_eq!(cfg.relays[1].idle_timeout, Duration::from_secs(30));
        let acl = &cfg.relays[1].acl;
        assert_eq!(
            acl.check("10.0.0.66".parse().unwrap()).0,
            crate::acl::Action::Deny
        );
        assert_eq!(
            acl.check("10.1.2.3".parse().unwrap()).0,
            crate::acl::Action::Allow
        );
        assert_eq!(
            acl.check("192.0.2.1".parse().unwrap()).0,
            crate::acl::Action::Deny
        );
    }

    #[test]
    fn refusals_name_the_option() {
        for (line, needle) in [
            ("-b 5 h:80 h:81", "no <stone> given"),
            ("-b x h:80 h:81 h:80 80", "-b: \"x\" is not a valid number"),
            ("-B h:80 h:81 h:80", "must end with --"),
            (
                "-q ssl3 h:80/ssl 80",
                "-q SSL option \"ssl3\": not supported",
            ),
            ("-z bogus h:80 80/ssl", "unknown SSL option"),
            ("-M install x h:80 80", "-M: not supported"),
            ("proxy/v5only 8080", "proxy/v4only or proxy/v6only"),
            ("-x 80 10.0.0.1 proxy 8080", "must end with --"),
            ("h:53/udp,ssl 53/udp", "TCP stones only"),
            ("h:80/http 80", "needs a request"),
            ("h:80/proxy 80", "needs a header"),
            ("h:80/http 80 x\\U", "\\U"),
            ("h:53/udp 53", "use /udp on both sides"),
            ("-T x h:80 80", "-T: \"x\" is not a valid number"),
            ("-k h:80 80", "unknown option -k"),
            ("-d", "no <stone> given"),
            ("h:80 80 -- -N h:81 81", "only allowed before"),
        ] {
            let err = parse(&words(line)).unwrap_err();
            assert!(err.contains(needle), "{line}: {err}");
        }
    }

    #[test]
    fn backup_and_group_attach_to_their_destination() {
        let c = parse(&words(
            "-b host=h port=81 5 m:80/v6 b:80 -B m:80 n:80 o:80 -- m:80 8080 -- o:80 8081",
        ))
        .unwrap();
        let cfg = c.to_config().unwrap();
        let b = cfg.relays[0].forward().unwrap().backup.as_ref().unwrap();
        assert_eq!(
            (
                b.upstream.to_string(),
                b.check.to_string(),
                b.interval.as_secs()
            ),
            ("b:80".into(), "h:81".into(), 5)
        );
        assert_eq!(cfg.relays[0].forward().unwrap().group.len(), 3);
        let other = cfg.relays[1].forward().unwrap();
        assert!(other.backup.is_none() && other.group.is_empty());
    }

    #[test]
    fn duplicate_listen_is_refused() {
        let c = parse(&words("h:80 8080 10.0.0.1 -- h:81 8080 10.0.0.2")).unwrap();
        assert!(c.to_config().unwrap_err().contains("already used"));
    }

    #[test]
    fn grouped_flags_take_following_words() {
        let c = parse(&words("-ud 5 -Ndnr h:80 80")).unwrap();
        assert_eq!(
            (c.udp_sessions, c.debug, c.check_only, c.numeric, c.reuse),
            (Some(5), 2, true, true, true)
        );
        // -T applies to stones defined after it.
        let c = parse(&words("h:80 80 -- -T 5 h:81 81")).unwrap();
        assert_eq!((c.stones[0].timeout, c.stones[1].timeout), (None, Some(5)));
    }
}
