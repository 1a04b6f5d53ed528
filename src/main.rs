//! The `ossrelay` command line: subcommands, logging set-up, signals and
//! exit codes (0 success, 2 bad usage or config, 1 runtime failure).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use ossrelay::config::{Config, LogFormat};
use ossrelay::Error;

const RUN_EXAMPLES: &str = "\
Examples:
  ossrelay run -c examples/oss-tokyo.toml
  ossrelay run -c /etc/ossrelay/relay.toml --check
  ossrelay run -c relay.toml --check --explain    # print each relay's policy statements
  ossrelay run -c relay.toml --log-format json --log-file /var/log/ossrelay.log";

/// A fast, policy-aware relay for private access to Alibaba Cloud OSS
/// intranet endpoints and S3-compatible object storage.
#[derive(Parser, Debug)]
#[command(name = "ossrelay", version, about, after_help = RUN_EXAMPLES)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the relays described by a TOML config file.
    #[command(after_help = RUN_EXAMPLES)]
    Run {
        /// Path of the TOML config.
        #[arg(short = 'c', long = "config", value_name = "FILE")]
        config: PathBuf,
        /// Validate the config, print "ok" or every problem, and exit (0 or 2).
        #[arg(long)]
        check: bool,
        /// With --check: print each relay's endpoint policy as the numbered
        /// statements it is evaluated as (shorthand keys included).
        #[arg(long, requires = "check")]
        explain: bool,
        /// Override the config's log format.
        #[arg(long, value_enum, value_name = "FORMAT")]
        log_format: Option<FormatArg>,
        /// Override the config's log destination (default: stderr).
        #[arg(long, value_name = "PATH")]
        log_file: Option<PathBuf>,
    },
    /// Run the blog's private path to OSS on loopback and check every step.
    #[cfg(feature = "store")]
    #[command(
        after_help = "Examples:\n  ossrelay demo\n  ossrelay demo --keep    # leave store and relay up for aws/s3cmd/rclone"
    )]
    Demo {
        /// Leave the store and relay running afterwards (until Ctrl-C).
        #[arg(long)]
        keep: bool,
    },
    /// Serve a directory as S3-compatible storage (the stand-in for OSS).
    #[cfg(feature = "store")]
    #[command(
        after_help = "Each top-level folder of --root is a bucket.\n\nExamples:\n  ossrelay store --root /srv/oss --listen 127.0.0.1:9000\n  ossrelay store --root /srv/oss --listen 0.0.0.0:80 --domain oss-ap-northeast-1-internal.aliyuncs.com \\\n      --bucket aws-alibaba-oss --access-key AK --secret-key SK"
    )]
    Store {
        /// Directory to serve; must exist.
        #[arg(long, value_name = "DIR")]
        root: PathBuf,
        /// Address to listen on (`IP:PORT` or `HOST:PORT`).
        #[arg(long, value_name = "ADDR", value_parser = listen_addr)]
        listen: std::net::SocketAddr,
        /// Accept virtual-hosted-style requests for <bucket>.<NAME>.
        #[arg(long, value_name = "NAME")]
        domain: Option<String>,
        /// Create this bucket (folder) if missing; repeatable.
        #[arg(long, value_name = "NAME")]
        bucket: Vec<String>,
        /// Require requests signed with this access key.
        #[arg(long, value_name = "K", requires = "secret_key")]
        access_key: Option<String>,
        /// Secret for --access-key.
        #[arg(long, value_name = "S", requires = "access_key")]
        secret_key: Option<String>,
        /// Log format, as `run --log-format`.
        #[arg(long, value_enum, value_name = "FORMAT", default_value = "text")]
        log_format: FormatArg,
    },
    /// Prove the private path from a client: names, relay, OSS answer, keys.
    #[cfg(feature = "store")]
    #[command(after_help = CHECK_HELP)]
    Check {
        /// The endpoint name.
        #[arg(long, value_name = "NAME")]
        endpoint: String,
        /// A bucket to check; repeatable.
        #[arg(long, value_name = "NAME")]
        bucket: Vec<String>,
        /// The relay's address: every name must resolve to it.
        #[arg(long, value_name = "IP")]
        expect_relay: Option<std::net::IpAddr>,
        /// Use HTTPS and check the certificate names.
        #[arg(long)]
        https: bool,
        /// Port (default 80, or 443 with --https).
        #[arg(long)]
        port: Option<u16>,
        /// Access key for the signed ListObjects check.
        #[arg(long, value_name = "K", requires = "secret_key")]
        access_key: Option<String>,
        /// Secret for --access-key.
        #[arg(long, value_name = "S", requires = "access_key")]
        secret_key: Option<String>,
        /// Signing region.
        #[arg(long, value_name = "REGION", default_value = "oss-ap-northeast-1")]
        region: String,
        /// Put, get and delete a temporary object of SIZE bytes (k/M/G suffixes) in the first bucket.
        #[arg(long, value_name = "SIZE")]
        upload_test: Option<String>,
        /// Resolve NAME to IP instead of asking DNS (like curl --resolve); repeatable.
        #[arg(long, value_name = "NAME=IP")]
        resolve: Vec<String>,
        /// Seconds per step.
        #[arg(long, value_name = "SECS", default_value_t = 10)]
        timeout: u64,
        /// Print one JSON object instead of the checklist.
        #[arg(long)]
        json: bool,
    },
    /// Print the /etc/hosts lines that send clients to the relay, or check a hosts file.
    #[command(after_help = HOSTS_HELP)]
    Hosts {
        /// The relay's address, as clients reach it.
        #[arg(long, value_name = "IP")]
        relay: Option<std::net::IpAddr>,
        /// An endpoint name, e.g. oss-ap-northeast-1-internal.aliyuncs.com; repeatable.
        #[arg(long, value_name = "NAME")]
        endpoint: Vec<String>,
        /// A bucket on those endpoints; repeatable.
        #[arg(long, value_name = "NAME")]
        bucket: Vec<String>,
        /// Take the endpoints (and the relay address) from a run config.
        #[arg(long, value_name = "FILE")]
        from_config: Option<PathBuf>,
        /// Report missing or stale lines in this hosts file instead of printing (exit 1 if any).
        #[arg(long, value_name = "FILE")]
        check_file: Option<PathBuf>,
    },
    /// Check a config file, then ask the `ossrelay run` serving it to reload
    /// it (SIGHUP).
    #[command(
        after_help = "Examples:\n  ossrelay reload -c /etc/ossrelay/relay.toml\n  systemctl reload ossrelay    # the unit's ExecReload does the same\n\nAn invalid file is reported here and nothing is sent. The relay logs\nthe outcome (`reload: ...`) and counts it in ossrelay_config_reloads_total."
    )]
    Reload {
        /// Path of the TOML config, as the running relay was given it.
        #[arg(short = 'c', long = "config", value_name = "FILE")]
        config: PathBuf,
    },
    /// Read a password from standard input and print its argon2id hash, for
    /// an sftp relay's `password_hash`.
    #[cfg(feature = "sftp")]
    #[command(
        name = "hash-password",
        after_help = "Examples:\n  ossrelay hash-password            # type the password, then Enter\n  printf '%s\\n' \"$PW\" | ossrelay hash-password\n\nThe first line of standard input is the password (without its newline).\nPut the output in [[relay.users]] password_hash = \"...\"."
    )]
    HashPassword,
    /// Print the ossrelay(1) man page (roff) on standard output.
    #[command(
        after_help = "Examples:\n  ossrelay man | man -l -\n  ossrelay man > /usr/local/share/man/man1/ossrelay.1"
    )]
    Man,
    /// Print shell completions on standard output.
    #[command(
        after_help = "Examples:\n  ossrelay completions bash > /etc/bash_completion.d/ossrelay\n  ossrelay completions zsh > \"${fpath[1]}/_ossrelay\"\n  ossrelay completions fish > ~/.config/fish/completions/ossrelay.fish"
    )]
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Run a stone 2.4 command line (options, <stone>s, `--` separators).
    #[command(after_help = STONE_HELP)]
    Stone {
        /// Print the equivalent `ossrelay run` TOML config and exit.
        #[arg(long)]
        print_toml: bool,
        /// stone's arguments, exactly as given to stone.
        #[arg(
            trailing_var_arg = true,
            allow_hyphen_values = true,
            value_name = "STONE ARGS"
        )]
        args: Vec<String>,
    },
}

#[cfg(feature = "store")]
const CHECK_HELP: &str = "\
Exit status: 0 when every check passed, 1 otherwise, 2 for bad usage.

Examples:
  ossrelay check --endpoint oss-ap-northeast-1-internal.aliyuncs.com \\
      --bucket aws-alibaba-oss --expect-relay 172.31.10.171
  ossrelay check --endpoint oss-ap-northeast-1-internal.aliyuncs.com --bucket aws-alibaba-oss \\
      --access-key $AK --secret-key $SK --upload-test 16M
  ossrelay check --endpoint oss-ap-northeast-1-internal.aliyuncs.com --bucket b --json | jq .ok";

const HOSTS_HELP: &str = "\
Hosts files have no wildcards: each bucket needs its own line. The [dns]
section of a run config removes the need for any of them.

Examples:
  ossrelay hosts --relay 172.31.10.171 --endpoint oss-ap-northeast-1-internal.aliyuncs.com \\
      --bucket aws-alibaba-oss >> /etc/hosts
  ossrelay hosts --from-config /etc/ossrelay/relay.toml --bucket aws-alibaba-oss
  ossrelay hosts --relay 172.31.10.171 --endpoint oss-ap-northeast-1-internal.aliyuncs.com \\
      --bucket aws-alibaba-oss --check-file /etc/hosts";

const STONE_HELP: &str = "\
Runs a stone 2.4 command line unchanged. The same parser runs when this
binary is invoked through a symlink named `stone`.

Supported: <host>:<port> <sport> [<xhost>...] stones (TCP, /udp on both
sides, /v6, /v6only, /ssl on either side, /http on either side, /proxy,
/mproxy, /nobackup, shost:sport, shost%intf:sport, unix-socket
destinations, service names), xhost lists with /<bits>, /<mask>, p<mode>,
v4/v6 and `!`, the options -d -p -n -u -f -l -L -ll -a -i -X -T -A -r -x
-s -b -B -I -C -P -Q -N -D -o -g -t -c -q -z, and the `proxy` (also
/v4only, /v6only), `health` and `identd` stones. Upstream TLS certificates
are verified unless `-q verify,none` is given (stone never verifies).
Refused with exit 2 and a reason: /base, /block, /ident, /apop, unix-socket
sports, SSL options rustls cannot honour (ssl3, tls1, crl_check, pfx=...),
-b <var>= other than host=/port=, -M. See MIGRATING-FROM-STONE.md.

Examples:
  ossrelay stone -d -d oss-ap-northeast-1-internal.aliyuncs.com:80 80
  ossrelay stone 10.0.0.2:53/udp 53/udp 10.0.0.0/8
  ossrelay stone -N -C /etc/stone.cfg
  ossrelay stone -z certkey=/etc/ssl/relay.pem -q CAfile=/etc/ssl/oss-ca.pem \\
      oss-ap-northeast-1-internal.aliyuncs.com:443/ssl 8443/ssl
  ossrelay stone --print-toml -d oss-ap-northeast-1-internal.aliyuncs.com:80 80 > relay.toml
  ln -s $(command -v ossrelay) /usr/local/bin/stone && stone -d -d host:80 80";

#[derive(ValueEnum, Clone, Copy, Debug)]
enum FormatArg {
    /// stone-style lines.
    Text,
    /// One JSON object per line.
    Json,
    /// RFC 3164 datagrams to /dev/log (stone's `-l`).
    Syslog,
}

impl From<FormatArg> for LogFormat {
    fn from(f: FormatArg) -> LogFormat {
        match f {
            FormatArg::Text => LogFormat::Text,
            FormatArg::Json => LogFormat::Json,
            FormatArg::Syslog => LogFormat::Syslog,
        }
    }
}

fn main() -> ExitCode {
    let code = dispatch();
    // Every buffered log line is written before the process exits.
    ossrelay::observe::batch::finish();
    code
}

fn dispatch() -> ExitCode {
    // Lossy, so a non-UTF-8 argument becomes an error message, not a panic.
    let argv: Vec<String> = std::env::args_os()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let invoked_as = argv
        .first()
        .and_then(|a| std::path::Path::new(a).file_name())
        .and_then(|n| n.to_str())
        .unwrap_or("");
    if invoked_as == "stone" {
        return stone(argv[1..].to_vec(), false);
    }
    let cli = Cli::parse_from(&argv);
    match cli.command {
        Command::Stone { print_toml, args } => stone(args, print_toml),
        Command::Man => man(),
        #[cfg(feature = "sftp")]
        Command::HashPassword => hash_password(),
        Command::Reload { config } => reload(config),
        Command::Completions { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut cmd, "ossrelay", &mut std::io::stdout());
            ExitCode::SUCCESS
        }
        #[cfg(feature = "store")]
        Command::Check {
            endpoint,
            bucket,
            expect_relay,
            https,
            port,
            access_key,
            secret_key,
            region,
            upload_test,
            resolve,
            timeout,
            json,
        } => {
            let signer = access_key.zip(secret_key).map(|(access_key, secret_key)| {
                ossrelay::s3client::sigv4::Signer {
                    access_key,
                    secret_key,
                    region,
                }
            });
            check(CheckArgs {
                endpoint,
                bucket,
                expect_relay,
                https,
                port,
                signer,
                upload_test,
                resolve,
                timeout,
                json,
            })
        }
        Command::Hosts {
            relay,
            endpoint,
            bucket,
            from_config,
            check_file,
        } => hosts(relay, endpoint, bucket, from_config, check_file),
        #[cfg(feature = "store")]
        Command::Demo { keep } => demo(keep),
        #[cfg(feature = "store")]
        Command::Store {
            root,
            listen,
            domain,
            bucket,
            access_key,
            secret_key,
            log_format,
        } => store(
            root,
            listen,
            domain,
            bucket,
            access_key.zip(secret_key),
            log_format.into(),
        ),
        Command::Run {
            config,
            check,
            explain,
            log_format,
            log_file,
        } => run(config, check, explain, log_format, log_file),
    }
}

/// Checks `path`, then sends SIGHUP to every `ossrelay run` process whose
/// `--config` names the same file.
fn reload(path: PathBuf) -> ExitCode {
    if let Err(e) = Config::load(&path) {
        eprintln!("ossrelay: {e}");
        eprintln!("ossrelay: nothing sent; the running relay keeps its config");
        return ExitCode::from(2);
    }
    let want = match std::fs::canonicalize(&path) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("ossrelay: {}: {e}", path.display());
            return ExitCode::from(2);
        }
    };
    let me = std::process::id();
    let mut sent = 0;
    let entries = match std::fs::read_dir("/proc") {
        Ok(e) => e,
        Err(e) => {
            eprintln!("ossrelay: cannot list processes in /proc: {e}");
            return ExitCode::from(1);
        }
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == me || !serves(pid, &want) {
            continue;
        }
        // SAFETY: kill(2) with a PID read from /proc and a valid signal;
        // it touches no memory of ours.
        if unsafe { libc::kill(pid as libc::pid_t, libc::SIGHUP) } == 0 {
            println!("sent SIGHUP to ossrelay run (PID {pid}); its log says how the reload went");
            sent += 1;
        } else {
            eprintln!(
                "ossrelay: cannot signal PID {pid}: {}",
                std::io::Error::last_os_error()
            );
        }
    }
    if sent == 0 {
        eprintln!(
            "ossrelay: no `ossrelay run --config {}` is running (as this user)",
            want.display()
        );
        return ExitCode::from(1);
    }
    ExitCode::SUCCESS
}

/// Whether process `pid` is `ossrelay run` with `--config` naming `want`.
fn serves(pid: u32, want: &std::path::Path) -> bool {
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let args: Vec<String> = cmdline
        .split(|&b| b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    let is_ossrelay = args
        .first()
        .and_then(|a| std::path::Path::new(a).file_name())
        .is_some_and(|n| n == "ossrelay");
    if !is_ossrelay || args.get(1).map(String::as_str) != Some("run") {
        return false;
    }
    let config = args.iter().enumerate().find_map(|(i, a)| {
        if a == "-c" || a == "--config" {
            args.get(i + 1).cloned()
        } else {
            a.strip_prefix("--config=").map(str::to_string)
        }
    });
    let Some(config) = config else {
        return false;
    };
    // A relative path is relative to that process's working directory.
    let cwd = std::fs::read_link(format!("/proc/{pid}/cwd")).unwrap_or_default();
    std::fs::canonicalize(cwd.join(config)).is_ok_and(|p| p == want)
}

/// ossrelay(1): the command, each subcommand's options, and where the
/// guide is.
fn man() -> ExitCode {
    let cmd = <Cli as clap::CommandFactory>::command();
    let mut page = Vec::new();
    let man = clap_mangen::Man::new(cmd.clone());
    let rendered = man.render_title(&mut page).and_then(|()| {
        man.render_name_section(&mut page)?;
        man.render_synopsis_section(&mut page)?;
        man.render_description_section(&mut page)?;
        man.render_subcommands_section(&mut page)?;
        // Each subcommand's own options, as `ossrelay SUB --help` shows them.
        for sub in cmd.get_subcommands() {
            let name = sub.get_name();
            page.extend_from_slice(format!(".SH \"OSSRELAY {}\"\n", name.to_uppercase()).as_bytes());
            let sub_man = clap_mangen::Man::new(sub.clone().bin_name(format!("ossrelay {name}")));
            sub_man.render_synopsis_section(&mut page)?;
            sub_man.render_options_section(&mut page)?;
            if let Some(after) = sub.get_after_help() {
                page.extend_from_slice(b".PP\n.nf\n");
                page.extend_from_slice(after.to_string().replace('\\', "\\\\").as_bytes());
                page.extend_from_slice(b"\n.fi\n");
            }
        }
        page.extend_from_slice(
            b".SH \"SEE ALSO\"\nThe guide: docs/GUIDE.md in the source, /usr/share/doc/ossrelay/GUIDE.md when installed from the package.\n",
        );
        man.render_version_section(&mut page)
    });
    match rendered.and_then(|()| std::io::Write::write_all(&mut std::io::stdout(), &page)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ossrelay: cannot write the man page: {e}");
            ExitCode::from(1)
        }
    }
}

fn runtime() -> Option<tokio::runtime::Runtime> {
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => Some(r),
        Err(e) => {
            eprintln!("ossrelay: cannot start runtime: {e}");
            None
        }
    }
}

#[cfg(feature = "store")]
fn demo(keep: bool) -> ExitCode {
    let Some(rt) = runtime() else {
        return ExitCode::from(1);
    };
    let passed = rt.block_on(ossrelay::demo::run(ossrelay::demo::DemoOptions { keep }));
    if passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

#[cfg(feature = "store")]
fn store(
    root: PathBuf,
    listen: std::net::SocketAddr,
    domain: Option<String>,
    buckets: Vec<String>,
    keys: Option<(String, String)>,
    log_format: LogFormat,
) -> ExitCode {
    use ossrelay::store::{Store, StoreConfig};
    if !root.is_dir() {
        eprintln!(
            "ossrelay store: --root {}: no such directory",
            root.display()
        );
        return ExitCode::from(2);
    }
    if let Err(e) = ossrelay::store::create_buckets(&root, &buckets) {
        eprintln!("ossrelay store: {e}");
        return ExitCode::from(1);
    }
    let cfg = StoreConfig { root, domain, keys };
    let store = match Store::new(&cfg) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("ossrelay store: {e}");
            return ExitCode::from(2);
        }
    };
    let _ = ossrelay::observe::logfmt::init(log_format, "info", None, Default::default());
    let Some(rt) = runtime() else {
        return ExitCode::from(1);
    };
    rt.block_on(async {
        let listener = match ossrelay::store::bind(listen).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("ossrelay store: {e}");
                return ExitCode::from(1);
            }
        };
        let addr = listener
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or_default();
        tracing::info!(
            "store: serving {} on {addr}{}",
            cfg.root.display(),
            cfg.domain
                .as_deref()
                .map(|d| format!(" (virtual hosts *.{d})"))
                .unwrap_or_default()
        );
        let stop = tokio_util::sync::CancellationToken::new();
        let s2 = stop.clone();
        tokio::spawn(async move {
            stop_signal(None).await;
            s2.cancel();
        });
        store.serve(listener, stop).await;
        ExitCode::SUCCESS
    })
}

#[cfg(feature = "store")]
struct CheckArgs {
    endpoint: String,
    bucket: Vec<String>,
    expect_relay: Option<std::net::IpAddr>,
    https: bool,
    port: Option<u16>,
    signer: Option<ossrelay::s3client::sigv4::Signer>,
    upload_test: Option<String>,
    resolve: Vec<String>,
    timeout: u64,
    json: bool,
}

/// `16M`, `1k`, `1048576` → bytes.
#[cfg(feature = "store")]
fn size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let (num, mult) = match t.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let m = match c.to_ascii_lowercase() {
                'k' => 1 << 10,
                'm' => 1 << 20,
                'g' => 1 << 30,
                _ => return Err(format!("{text:?}: unknown size suffix (use k, M or G)")),
            };
            (&t[..i], m)
        }
        _ => (t, 1),
    };
    num.parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .filter(|n| *n > 0 && *n <= 8 << 30)
        .ok_or_else(|| format!("{text:?}: expected a size from 1 byte to 8G, e.g. 16M"))
}

#[cfg(feature = "store")]
fn check(a: CheckArgs) -> ExitCode {
    let mut overrides = Vec::new();
    for r in &a.resolve {
        match r
            .split_once('=')
            .map(|(n, ip)| (n, ip.parse::<std::net::IpAddr>()))
        {
            Some((name, Ok(ip))) if !name.is_empty() => overrides.push((name.to_string(), ip)),
            _ => {
                eprintln!("ossrelay check: --resolve {r:?}: expected NAME=IP");
                return ExitCode::from(2);
            }
        }
    }
    let upload_test = match a.upload_test.as_deref().map(size).transpose() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("ossrelay check: --upload-test {e}");
            return ExitCode::from(2);
        }
    };
    if upload_test.is_some() && a.bucket.is_empty() {
        eprintln!("ossrelay check: --upload-test needs a --bucket");
        return ExitCode::from(2);
    }
    let opts = ossrelay::check::Options {
        endpoint: a.endpoint.trim_end_matches('.').to_string(),
        buckets: a.bucket,
        expect_relay: a.expect_relay,
        https: a.https,
        port: a.port,
        signer: a.signer,
        upload_test,
        resolve: overrides,
        timeout: std::time::Duration::from_secs(a.timeout.max(1)),
        progress: !a.json,
    };
    let Some(rt) = runtime() else {
        return ExitCode::from(1);
    };
    // Text output prints each line as its check finishes; JSON is one
    // document at the end.
    let json = a.json;
    let mut shown = |i: &ossrelay::check::Item| {
        if !json {
            say(&i.line());
        }
    };
    let items = rt.block_on(ossrelay::check::run(&opts, &mut shown));
    let ok = items.iter().all(|i| i.ok);
    if a.json {
        let v = serde_json::json!({ "ok": ok, "endpoint": opts.endpoint, "checks": items });
        say(&v.to_string());
    } else {
        say(if ok {
            "all checks passed: traffic takes the private path"
        } else {
            "some checks failed"
        });
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

fn hosts(
    relay: Option<std::net::IpAddr>,
    mut endpoints: Vec<String>,
    buckets: Vec<String>,
    from_config: Option<PathBuf>,
    check_file: Option<PathBuf>,
) -> ExitCode {
    use ossrelay::hosts::{check, entries, from_config as derive, Finding};
    // A name OSS would refuse is refused here too, not quietly changed.
    if let Some(why) = buckets
        .iter()
        .find_map(|b| ossrelay::policy::bucket::name_problem(b))
    {
        eprintln!("ossrelay hosts: --bucket {why}");
        return ExitCode::from(2);
    }
    let relay = match (&from_config, relay) {
        (Some(path), relay) => {
            let cfg = match Config::load(path) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("ossrelay hosts: {e}");
                    return ExitCode::from(2);
                }
            };
            match derive(&cfg, relay) {
                Ok((ip, found)) => {
                    for e in found {
                        if !endpoints.contains(&e) {
                            endpoints.push(e);
                        }
                    }
                    ip
                }
                Err(e) => {
                    eprintln!("ossrelay hosts: {}: {e}", path.display());
                    return ExitCode::from(2);
                }
            }
        }
        (None, Some(ip)) => ip,
        (None, None) => {
            eprintln!("ossrelay hosts: give --relay <IP> (or --from-config FILE)");
            return ExitCode::from(2);
        }
    };
    if endpoints.is_empty() {
        eprintln!("ossrelay hosts: give --endpoint <NAME> (or --from-config FILE)");
        return ExitCode::from(2);
    }
    let wanted = entries(relay, &endpoints, &buckets);
    let Some(path) = check_file else {
        for e in &wanted {
            say(&format!("{} {}", e.ip, e.name));
        }
        return ExitCode::SUCCESS;
    };
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("ossrelay hosts: {}: {e}", path.display());
            return ExitCode::from(2);
        }
    };
    let mut all_ok = true;
    for (e, finding) in check(&text, &wanted) {
        let line = match finding {
            Finding::Ok => format!("✔ {} {}", e.ip, e.name),
            Finding::Missing => {
                all_ok = false;
                format!("✘ {}: missing; add \"{} {}\"", e.name, e.ip, e.name)
            }
            Finding::Stale(ips) => {
                all_ok = false;
                let ips: Vec<String> = ips.iter().map(|i| i.to_string()).collect();
                format!(
                    "✘ {}: stale, points to {} instead of the relay {}",
                    e.name,
                    ips.join(", "),
                    e.ip
                )
            }
        };
        say(&line);
    }
    if all_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// `--listen` for the store: an address, or a host name and port
/// (`localhost:9000`) resolved once, to its first address.
#[cfg(feature = "store")]
fn listen_addr(text: &str) -> Result<std::net::SocketAddr, String> {
    use std::net::ToSocketAddrs;
    if let Ok(a) = text.parse() {
        return Ok(a);
    }
    let mut addrs = text
        .to_socket_addrs()
        .map_err(|e| format!("{text:?} is not an address:port or a resolvable host:port ({e})"))?;
    addrs
        .next()
        .ok_or_else(|| format!("{text:?} resolves to no address"))
}

/// Prints a line to stdout; a closed pipe (`| head`) is not an error.
fn say(line: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stdout(), "{line}");
}

fn stone(mut args: Vec<String>, mut print_toml: bool) -> ExitCode {
    // --print-toml is ours, not stone's; accept it anywhere on the line.
    let before = args.len();
    args.retain(|a| a != "--print-toml");
    print_toml |= args.len() != before;
    raise_fd_limit();
    ExitCode::from(ossrelay::stone::process::run(
        &args,
        print_toml,
        stop_signal(None),
    ))
}

/// `run --check --explain`: each relay's statements, numbered as denials
/// and access records number them.
fn explain(config: &Config) -> String {
    let mut out = String::new();
    for r in &config.relays {
        let Some(p) = r.endpoint_policy() else {
            continue;
        };
        out.push_str(&format!(
            "relay {:?} ({}): deny wins, then any allow, else deny\n",
            r.name,
            r.service.label()
        ));
        for (i, s) in p.statements.iter().enumerate() {
            out.push_str(&format!("  {}. {s}    [{}]\n", i + 1, s.origin));
        }
    }
    out
}

fn run(
    path: PathBuf,
    check: bool,
    explain_policy: bool,
    format: Option<FormatArg>,
    file: Option<PathBuf>,
) -> ExitCode {
    let mut config = match Config::load(&path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("ossrelay: {e}");
            // Unreadable or invalid, the config is the user's to fix.
            return ExitCode::from(2);
        }
    };
    if check {
        if explain_policy {
            let _ = std::io::Write::write_all(&mut std::io::stdout(), explain(&config).as_bytes());
        }
        let _ = std::io::Write::write_all(&mut std::io::stdout(), b"ok\n");
        return ExitCode::SUCCESS;
    }
    if let Some(f) = format {
        config.log.format = f.into();
    }
    if let Some(f) = file {
        config.log.file = Some(f);
    }
    let level = config.log.level.clone().unwrap_or_else(|| "info".into());
    if let Err(e) = ossrelay::observe::logfmt::init(
        config.log.format,
        &level,
        config.log.file.as_deref(),
        config.log.when_full,
    ) {
        eprintln!("ossrelay: {e}");
        return ExitCode::from(1);
    }
    raise_fd_limit();
    let Some(runtime) = runtime() else {
        return ExitCode::from(1);
    };
    // The log already goes to stderr unless it goes to a file or syslog;
    // print the error there once, not twice.
    let logs_to_stderr = config.log.file.is_none() && config.log.format != LogFormat::Syslog;
    let (hup, requests) = tokio::sync::mpsc::unbounded_channel();
    let reload = ossrelay::server::Reload {
        path: path.clone(),
        requests,
    };
    let serving = ossrelay::run_reloading(config, stop_signal(Some(hup)), Some(reload));
    match runtime.block_on(serving) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            if !logs_to_stderr {
                eprintln!("ossrelay: {e}");
            }
            ExitCode::from(exit_code(&e))
        }
    }
}

fn exit_code(e: &Error) -> u8 {
    e.exit_code().clamp(1, 255) as u8
}

/// Resolves on the first SIGINT or SIGTERM. Each SIGHUP is passed to
/// `hup` (a reload request), or logged and ignored without one.
async fn stop_signal(hup_to: Option<tokio::sync::mpsc::UnboundedSender<()>>) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        // SIGHUP's default action would kill the relay without a drain.
        let mut hup = signal(SignalKind::hangup()).ok();
        match signal(SignalKind::terminate()) {
            Ok(mut term) => loop {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => break tracing::info!("SIGINT received"),
                    _ = term.recv() => break tracing::info!("SIGTERM received"),
                    Some(()) = async { match hup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => {
                        match &hup_to {
                            Some(tx) => {
                                tracing::info!("SIGHUP received: reloading the config");
                                let _ = tx.send(());
                            }
                            None => tracing::warn!("SIGHUP received: this command does not reload; ignored"),
                        }
                    }
                }
            },
            Err(e) => {
                tracing::warn!("cannot watch SIGTERM ({e}); only SIGINT stops the relay");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Each relayed TCP connection can use six descriptors (two sockets, two
/// pipes), so the common soft limit of 1024 would cap a relay at ~170
/// connections. Raise the soft limit to the hard limit.
fn raise_fd_limit() {
    #[cfg(unix)]
    {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes into the rlimit struct we own and pass by
        // valid pointer; RLIMIT_NOFILE is a valid resource.
        if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0
            && lim.rlim_cur < lim.rlim_max
        {
            lim.rlim_cur = lim.rlim_max;
            // SAFETY: setrlimit only reads the struct; raising the soft limit
            // up to the hard limit needs no privilege.
            if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
                tracing::warn!(
                    "cannot raise the open-file limit: {}",
                    std::io::Error::last_os_error()
                );
            }
        }
    }
}

/// `ossrelay hash-password`: one line of stdin in, one PHC string out.
#[cfg(feature = "sftp")]
fn hash_password() -> ExitCode {
    let mut line = String::new();
    match std::io::stdin().read_line(&mut line) {
        Ok(0) => {
            eprintln!("ossrelay hash-password: no password on standard input");
            return ExitCode::from(2);
        }
        Err(e) => {
            eprintln!("ossrelay hash-password: reading standard input: {e}");
            return ExitCode::from(2);
        }
        Ok(_) => {}
    }
    let password = line.strip_suffix('\n').unwrap_or(&line);
    let password = password.strip_suffix('\r').unwrap_or(password);
    if password.is_empty() {
        eprintln!("ossrelay hash-password: the password is empty");
        return ExitCode::from(2);
    }
    match ossrelay::config::sftp::hash_password(password) {
        Ok(h) => {
            println!("{h}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("ossrelay hash-password: {e}");
            ExitCode::FAILURE
        }
    }
}
