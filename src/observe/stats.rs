//! Process-wide counters for stone's `health` port: open pairs, when a
//! connection was last established, and when one last finished.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

static OPEN_PAIRS: AtomicU64 = AtomicU64::new(0);
static RELAYS: AtomicU64 = AtomicU64::new(0);
static LAST_ESTABLISHED: AtomicU64 = AtomicU64::new(0);
static LAST_READWRITE: AtomicU64 = AtomicU64::new(0);
static STARTED: AtomicU64 = AtomicU64::new(0);

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Records the number of relays serving (for `HELO`).
pub fn set_relays(n: usize) {
    RELAYS.store(n as u64, Ordering::Relaxed);
    let _ = STARTED.compare_exchange(0, now(), Ordering::Relaxed, Ordering::Relaxed);
}

/// A relayed pair was established.
pub fn pair_opened() {
    OPEN_PAIRS.fetch_add(1, Ordering::Relaxed);
    LAST_ESTABLISHED.store(now(), Ordering::Relaxed);
}

/// A relayed pair finished (its last bytes moved just now).
pub fn pair_closed() {
    OPEN_PAIRS.fetch_sub(1, Ordering::Relaxed);
    LAST_READWRITE.store(now(), Ordering::Relaxed);
}

/// A snapshot for the health port.
#[derive(Debug, Clone, Copy)]
pub struct Snapshot {
    /// Relays serving.
    pub relays: u64,
    /// Relayed pairs open now.
    pub pairs: u64,
    /// Unix time now.
    pub now: u64,
    /// Seconds since a pair was last established (since start if never).
    pub established: u64,
    /// Seconds since a pair last finished (since start if never).
    pub readwrite: u64,
}

/// Reads the counters.
pub fn snapshot() -> Snapshot {
    let t = now();
    let since = |v: u64| {
        let base = if v == 0 {
            STARTED.load(Ordering::Relaxed)
        } else {
            v
        };
        t.saturating_sub(if base == 0 { t } else { base })
    };
    Snapshot {
        relays: RELAYS.load(Ordering::Relaxed),
        pairs: OPEN_PAIRS.load(Ordering::Relaxed),
        now: t,
        established: since(LAST_ESTABLISHED.load(Ordering::Relaxed)),
        readwrite: since(LAST_READWRITE.load(Ordering::Relaxed)),
    }
}

static MAPPINGS: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

/// Records the relays' start-up lines (`stone 3: host:80 <- 0.0.0.0:80`).
pub fn add_mapping(line: String) {
    if let Ok(mut m) = MAPPINGS.lock() {
        m.push(line);
    }
}

/// Replaces the start-up lines: a reload leaves the relays it lists.
pub fn set_mappings(lines: Vec<String>) {
    if let Ok(mut m) = MAPPINGS.lock() {
        *m = lines;
    }
}

/// The start-up lines, for the health port's STONE command.
pub fn mappings() -> Vec<String> {
    MAPPINGS.lock().map(|m| m.clone()).unwrap_or_default()
}
