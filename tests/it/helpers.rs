//! Shared test plumbing: a captured JSON log, an in-process relay, data
//! generation with checksums, and the path of the built binary.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use ossrelay::config::{Config, LogFormat, RelayConfig};
use ossrelay::resolve::Resolve;
use ossrelay::server::Server;
use sha2_dev::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
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
