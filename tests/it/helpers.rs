//! Shared test plumbing: a captured JSON log, an in-process relay and the
//! config it runs, data generation with checksums, upstream servers that
//! record what reaches them, child processes (the built binary and the
//! peers it is compared with) started on free ports and waited on until
//! ready, and skipping a test whose peer is not installed.

use std::fmt;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use ossrelay::config::{Config, LogFormat, RelayConfig, Upstream};
use ossrelay::resolve::{Resolve, SystemResolver};
use ossrelay::server::Server;
use sha2_dev::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

/// Every log line written by in-process relays, shared by all tests. Tests
/// filter on their own relay name, so they can run in parallel.
#[derive(Clone, Default)]
pub struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

pub fn logs() -> &'static Captured {
    static LOGS: OnceLock<Captured> = OnceLock::new();
    LOGS.get_or_init(|| {
        let captured = Captured::default();
        let writer = captured.clone();
        ossrelay::observe::logfmt::init_with_writer(LogFormat::Json, "ossrelay=debug", move || {
            writer.clone()
        });
        captured
    })
}

/// JSON log records of relay `name`.
pub fn records(name: &str) -> Vec<serde_json::Value> {
    let bytes = logs().0.lock().unwrap().clone();
    String::from_utf8_lossy(&bytes)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["relay"] == name)
        .collect()
}

/// Access records of relay `name`.
pub fn access_records(name: &str) -> Vec<serde_json::Value> {
    records(name)
        .into_iter()
        .filter(|v| v["event"] == "access")
        .collect()
}

/// Waits (polling the captured log, up to 10 s) for `n` access records.
pub async fn wait_access(name: &str, n: usize) -> Vec<serde_json::Value> {
    for _ in 0..1000 {
        let r = access_records(name);
        if r.len() >= n {
            return r;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!(
        "relay {name}: expected {n} access records, got {:?}",
        access_records(name)
    );
}

/// A relay running in this process, stopped (and drained) on drop.
pub struct Relay {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    done: Option<tokio::task::JoinHandle<()>>,
}

impl Relay {
    pub async fn start(cfg: RelayConfig, resolver: Arc<dyn Resolve>) -> Relay {
        logs();
        let config = Config {
            log: Default::default(),
            drain_timeout: Duration::from_secs(5),
            relays: vec![cfg],
            dns: None,
            admin: None,
            drain_grace: Duration::ZERO,
        };
        let server = Server::bind(&config, resolver).expect("bind relay");
        let addr = server.local_addrs()[0].1;
        let (tx, rx) = oneshot::channel::<()>();
        let done = tokio::spawn(server.serve(async move {
            let _ = rx.await;
        }));
        Relay {
            addr,
            stop: Some(tx),
            done: Some(done),
        }
    }

    /// Stops accepting and waits for the drain to finish.
    pub async fn shutdown(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(done) = self.done.take() {
            done.await.unwrap();
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

/// Where in-process relays listen: a port the kernel picks on loopback, so
/// parallel tests never collide.
pub fn local() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

/// An upstream that is just `addr` (no name to resolve).
pub fn upstream(addr: SocketAddr) -> Upstream {
    Upstream::parse(&addr.to_string()).unwrap()
}

/// The system resolver, for relays whose upstreams are plain addresses.
pub fn system() -> Arc<dyn Resolve> {
    Arc::new(SystemResolver::new())
}

/// The relay of config text that holds one `[[relay]]`. Panics with the
/// text and every problem found, so a mistake in a test's config shows at
/// once rather than as a relay that behaves oddly.
pub fn relay_config(toml: &str) -> RelayConfig {
    relay_config_in(Path::new("."), toml)
}

/// Like [`relay_config`], with relative file names (certificates, keys)
/// taken as relative to `base`, the way a config file's directory is.
pub fn relay_config_in(base: &Path, toml: &str) -> RelayConfig {
    match Config::parse_in(toml, base) {
        Ok(mut c) => c.relays.remove(0),
        Err(p) => panic!("{toml}\n{p:?}"),
    }
}

/// A deterministic pseudo-random block; chunk `i` of a stream is this block
/// with `i` stamped in front, so reordered or repeated chunks change the hash.
pub fn block() -> &'static [u8] {
    static BLOCK: OnceLock<Vec<u8>> = OnceLock::new();
    BLOCK.get_or_init(|| {
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        (0..(1 << 20) / 8)
            .flat_map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x.to_le_bytes()
            })
            .collect()
    })
}

/// Writes `total` bytes of the stamped pattern; returns their SHA-256.
pub async fn send_pattern<W: AsyncWriteExt + Unpin>(
    w: &mut W,
    total: usize,
    seed: u64,
) -> [u8; 32] {
    let mut hash = Sha256::new();
    let mut chunk = block().to_vec();
    let mut sent = 0;
    let mut i = seed;
    while sent < total {
        chunk[..8].copy_from_slice(&i.to_le_bytes());
        let n = chunk.len().min(total - sent);
        w.write_all(&chunk[..n]).await.unwrap();
        hash.update(&chunk[..n]);
        sent += n;
        i += 1;
    }
    hash.finalize().into()
}

/// Reads to EOF; returns the byte count and SHA-256.
pub async fn recv_all<R: AsyncReadExt + Unpin>(r: &mut R) -> (usize, [u8; 32]) {
    let mut hash = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut total = 0;
    loop {
        let n = r.read(&mut buf).await.unwrap();
        if n == 0 {
            break;
        }
        hash.update(&buf[..n]);
        total += n;
    }
    (total, hash.finalize().into())
}

/// The `ossrelay` binary cargo built for these tests.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_ossrelay")
}

/// How an upstream started by [`recording_upstream`] answers.
#[derive(Clone, Copy, Debug)]
pub enum Reply {
    /// Echoes every read straight back; half-closes at the client's EOF.
    Echo,
    /// Answers each complete HTTP/1.1 request (Content-Length or chunked
    /// body) with `200 OK` and the body `ok`, keeping the connection open,
    /// so pipelined and keep-alive requests each get their own answer.
    HttpOk,
}

/// A TCP upstream on 127.0.0.1 that keeps every byte it receives, from all
/// connections in arrival order, so a test can check exactly what the
/// relay forwarded (and that a refused request never went up at all).
/// `reply` says how it answers. It lives as long as the test's runtime.
pub async fn recording_upstream(reply: Reply) -> (SocketAddr, Arc<Mutex<Vec<u8>>>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let log = log.clone();
            tokio::spawn(async move {
                // HttpOk: bytes of requests not yet complete, so not answered.
                let mut pending = Vec::new();
                let mut buf = vec![0u8; 65536];
                loop {
                    let n = match s.read(&mut buf).await {
                        Ok(0) | Err(_) => {
                            let _ = s.shutdown().await;
                            return;
                        }
                        Ok(n) => n,
                    };
                    // Recorded as read, before any answer: what arrived is
                    // what counts, whatever happens to the reply.
                    log.lock().unwrap().extend_from_slice(&buf[..n]);
                    let answer = match reply {
                        Reply::Echo => buf[..n].to_vec(),
                        Reply::HttpOk => {
                            pending.extend_from_slice(&buf[..n]);
                            http_ok_answers(&mut pending)
                        }
                    };
                    if s.write_all(&answer).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, seen)
}

/// A TCP echo upstream on 127.0.0.1 ([`Reply::Echo`]), for tests that do
/// not look at what it received.
pub async fn echo_upstream() -> SocketAddr {
    recording_upstream(Reply::Echo).await.0
}

/// Takes every complete request off the front of `pending` and returns one
/// `200 OK` per request; an incomplete one stays for the next read.
fn http_ok_answers(pending: &mut Vec<u8>) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(end) = pending
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|p| p + 4)
    {
        let head = String::from_utf8_lossy(&pending[..end]).to_ascii_lowercase();
        let body = if head.contains("transfer-encoding: chunked") {
            match pending[end..].windows(5).position(|w| w == b"0\r\n\r\n") {
                Some(p) => p + 5,
                None => break,
            }
        } else {
            head.lines()
                .find_map(|l| {
                    l.strip_prefix("content-length: ")
                        .and_then(|v| v.trim().parse().ok())
                })
                .unwrap_or(0)
        };
        if pending.len() < end + body {
            break;
        }
        pending.drain(..end + body);
        out.extend_from_slice(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
    }
    out
}

/// A TCP port on 127.0.0.1 that was free a moment ago, for a child process
/// that must be told its port on the command line or in a config file.
/// The probe listener is closed on return, so someone else may take the
/// port first: [`spawn_on_free_port`] retries for that reason.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// How long a child gets to become ready.
const READY_WITHIN: Duration = Duration::from_secs(10);

/// How often a child is polled for readiness or exit.
const POLL: Duration = Duration::from_millis(20);

/// Attempts [`spawn_on_free_port`] makes before giving up.
const FREE_PORT_TRIES: usize = 5;

/// When a spawned server counts as ready.
#[derive(Clone, Copy, Debug)]
pub enum Ready {
    /// A TCP connection to 127.0.0.1:port is accepted. The probe is a real
    /// connection, which the server sees (and a relay forwards).
    Connect(u16),
    /// Something listens on TCP `port` (or, with `udp`, is bound to UDP
    /// `port`), read from /proc/net without connecting, so peers that serve
    /// a single client or count their clients are not disturbed.
    Bound { port: u16, udp: bool },
}

impl Ready {
    fn holds(self) -> bool {
        match self {
            Ready::Connect(port) => std::net::TcpStream::connect(("127.0.0.1", port)).is_ok(),
            Ready::Bound { port, udp } => bound(port, udp),
        }
    }
}

/// True when something is bound to `port` (read from /proc, without
/// connecting, so single-client peers are not disturbed).
fn bound(port: u16, udp: bool) -> bool {
    let files: &[&str] = if udp {
        &["/proc/net/udp", "/proc/net/udp6"]
    } else {
        &["/proc/net/tcp", "/proc/net/tcp6"]
    };
    let needle = format!(":{port:04X}");
    files.iter().any(|f| {
        std::fs::read_to_string(f)
            .unwrap_or_default()
            .lines()
            .skip(1)
            .any(|l| {
                let cols: Vec<&str> = l.split_whitespace().collect();
                // local_address ends with the port; state 0A is LISTEN for TCP.
                cols.get(1).is_some_and(|a| a.ends_with(&needle))
                    && (udp || cols.get(3) == Some(&"0A"))
            })
    })
}

/// Why [`Running::wait_ready`] gave up.
#[derive(Debug)]
pub enum NotReady {
    /// The child exited first (it will never be ready).
    Exited(ExitStatus),
    /// The child still runs but was not ready in time.
    TimedOut,
}

impl fmt::Display for NotReady {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NotReady::Exited(status) => write!(f, "exited ({status})"),
            NotReady::TimedOut => write!(f, "was not ready within {READY_WITHIN:?}"),
        }
    }
}

/// A child process this test started. Dropping it kills that child through
/// its own handle (the PID it was spawned with, never a name, so nothing
/// else on the machine is touched) and reaps it, so a failing test leaves
/// no server behind. Killing a child that has already been reaped does
/// nothing: its PID may belong to someone else by then.
pub struct Running {
    /// The process, for its PID and `try_wait`.
    pub child: Child,
    /// The command line, to name it in failure messages.
    command: String,
    /// The file its stderr goes to; None when the caller took stderr.
    stderr_path: Option<PathBuf>,
}

impl Running {
    /// Spawns `cmd` with stdin and stdout closed and stderr written to
    /// `stderr_path`. A file rather than a pipe: nobody reads a pipe while
    /// the test runs, and a chatty server (`-d -d`) would block on a full
    /// one. The file is truncated, so it holds this child's output only.
    pub fn spawn(cmd: &mut Command, stderr_path: &Path) -> Running {
        let stderr = std::fs::File::create(stderr_path)
            .unwrap_or_else(|e| panic!("create {}: {e}", stderr_path.display()));
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
        Running {
            child,
            command: format!("{cmd:?}"),
            stderr_path: Some(stderr_path.to_path_buf()),
        }
    }

    /// Guards a `child` that `cmd` spawned with its own stdio (say, stderr
    /// piped to the test).
    pub fn adopt(cmd: &Command, child: Child) -> Running {
        Running {
            child,
            command: format!("{cmd:?}"),
            stderr_path: None,
        }
    }

    /// What the child has written to stderr so far ("" if it went elsewhere).
    pub fn stderr(&self) -> String {
        self.stderr_path
            .as_ref()
            .and_then(|p| std::fs::read_to_string(p).ok())
            .unwrap_or_default()
    }

    /// Polls until every condition in `ready` holds. Gives up when the
    /// child exits (it never will be ready then) or after 10 s; a server
    /// that is slow to start makes the test slower, never flaky.
    pub fn wait_ready(&mut self, ready: &[Ready]) -> Result<(), NotReady> {
        let deadline = Instant::now() + READY_WITHIN;
        loop {
            if ready.iter().all(|r| r.holds()) {
                return Ok(());
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                return Err(NotReady::Exited(status));
            }
            if Instant::now() >= deadline {
                return Err(NotReady::TimedOut);
            }
            std::thread::sleep(POLL);
        }
    }

    /// Waits up to `within` for the child to exit by itself; None while it
    /// still runs.
    pub fn exit_within(&mut self, within: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(POLL);
        }
    }

    /// Fails the test naming the command, `why`, and what it said on stderr.
    fn fail(&self, why: impl fmt::Display) -> ! {
        panic!("{}: {why}\nstderr:\n{}", self.command, self.stderr())
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Spawns `cmd` (see [`Running::spawn`]) and returns once it is `ready`.
/// Fails the test, naming the command and its stderr, if it exits first
/// or is not ready within 10 s.
pub fn spawn_until_ready(cmd: &mut Command, stderr_path: &Path, ready: Ready) -> Running {
    let mut run = Running::spawn(cmd, stderr_path);
    if let Err(why) = run.wait_ready(&[ready]) {
        run.fail(format_args!("{why} (waiting for {ready:?})"));
    }
    run
}

/// Spawns `command(port)` for a [`free_port`] and returns it with the port
/// once `ready(port)` holds. A port can be taken between `free_port` and
/// the child's bind (and stone, which binds without SO_REUSEADDR, is
/// refused one in TIME_WAIT), so a child that exits or is not ready is
/// killed and the whole start is retried on a fresh port, up to 5 times.
/// Then the test fails, naming the last command and its stderr.
pub fn spawn_on_free_port(
    ready: impl Fn(u16) -> Ready,
    stderr_path: &Path,
    mut command: impl FnMut(u16) -> Command,
) -> (Running, u16) {
    let mut last = String::new();
    for _ in 0..FREE_PORT_TRIES {
        let port = free_port();
        let mut run = Running::spawn(&mut command(port), stderr_path);
        match run.wait_ready(&[ready(port)]) {
            Ok(()) => return (run, port),
            Err(why) => {
                last = format!(
                    "{}: {why} (waiting for {:?})\nstderr:\n{}",
                    run.command,
                    ready(port),
                    run.stderr()
                );
            }
        }
    }
    panic!("no free port worked in {FREE_PORT_TRIES} tries; the last: {last}");
}

/// Reads one line (up to and including `\n`) a byte at a time, so nothing
/// after it is consumed; stops early at EOF, an error or a read timeout.
pub fn read_line(r: &mut impl std::io::Read) -> Vec<u8> {
    let mut got = Vec::new();
    let mut b = [0u8; 1];
    while !got.ends_with(b"\n") {
        match r.read(&mut b) {
            Ok(1) => got.push(b[0]),
            _ => break,
        }
    }
    got
}

/// A temporary directory removed on drop.
pub struct TempDir(pub std::path::PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!("ossrelay-test-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Says on the real stderr that a test did not run, and why. libtest
/// captures `eprintln!` from passing tests, which would hide the skip;
/// writing to the stderr handle itself is not captured.
pub fn skipped(why: std::fmt::Arguments) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "SKIPPED {why}");
}

/// Skips a test whose peer (a tool, root) is missing here, saying why with
/// [`skipped`]; under CI (`CI` set) the same gap fails the test with
/// `ci_failure` instead, so CI never passes by skipping.
pub fn skip_outside_ci(ci_failure: &str, why: fmt::Arguments) {
    assert!(std::env::var("CI").is_err(), "{ci_failure}");
    skipped(why);
}

/// The value of the sample `series` (`name{labels}`, labels as written)
/// in Prometheus text.
pub fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}
