//! Log lines off the relaying threads' `write(2)`: each thread appends its
//! formatted lines to a buffer of its own, and one writer thread collects
//! every thread's buffer and writes it to the destination (stderr, a file,
//! or syslog, one datagram per line).
//!
//! Why not one shared buffer: that was measured (a mutex-guarded buffer
//! with a writer thread woken per line, and again on a 20 ms tick) and at
//! best tied writing each line directly, because the relaying threads then
//! contend on one lock per record. A buffer per thread is locked only by
//! its own thread, except for the moment the writer swaps it out, so a
//! record costs a copy; and one write carries a whole batch. Not
//! `tracing-appender`'s non-blocking writer either: it sends each line as
//! its own allocation through one channel, and its lossy mode counts drops
//! without saying so anywhere.
//!
//! The writer wakes every [`TICK`], when a thread's buffer passes
//! [`HIGH`], and at once for warnings and errors. A thread's buffer is
//! bounded by [`CAP`]: when it is full because the destination is slower
//! than the relay, a line either waits for room (`when_full = "wait"`, the
//! default, as access records are audit records) or is dropped and counted
//! (`"drop"`), and the writer reports the count every 10 s while lines are
//! being dropped. [`finish`] writes out everything and stops the writer;
//! the process calls it before it exits.

use std::cell::OnceCell;
use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

pub use crate::config::WhenFull;

/// How long a quiet relay's lines may sit in a buffer.
pub const TICK: Duration = Duration::from_millis(100);
/// A buffer this full wakes the writer before the tick.
pub const HIGH: usize = 32 * 1024;
/// A buffer this full makes a line wait or be dropped.
pub const CAP: usize = 1 << 20;
/// How often a count of dropped lines is reported while lines drop.
const REPORT_EVERY: Duration = Duration::from_secs(10);

/// Where batches go.
pub enum Sink {
    /// Standard error.
    Stderr,
    /// An open file (appending).
    File(std::fs::File),
    /// A connected syslog datagram socket: one datagram per line.
    Syslog(std::os::unix::net::UnixDatagram),
}

impl Sink {
    fn write_batch(&mut self, batch: &[u8]) {
        // A failing log destination must not stop the relay, and there is
        // nowhere left to report it.
        match self {
            Sink::Stderr => {
                let _ = io::stderr().lock().write_all(batch);
            }
            Sink::File(f) => {
                let _ = f.write_all(batch);
            }
            Sink::Syslog(s) => {
                for line in batch.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
                    let _ = s.send(line);
                }
            }
        }
    }
}

/// One thread's buffer.
#[derive(Default)]
struct Slot {
    buf: Mutex<Vec<u8>>,
}

/// What the threads and the writer share.
struct Shared {
    slots: Mutex<Vec<Arc<Slot>>>,
    /// The writer sleeps on this; `true` means "come now".
    wake: Mutex<bool>,
    work: Condvar,
    /// Threads waiting for room sleep on this (with `room_lock`).
    room_lock: Mutex<()>,
    room: Condvar,
    /// Set by [`Batched::finish`]: the writer makes a last sweep and ends;
    /// later lines are written directly.
    stopped: AtomicBool,
    when_full: WhenFull,
    dropped: AtomicU64,
    sink: Mutex<Sink>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

thread_local! {
    /// This thread's buffer, registered with the writer on first use.
    static SLOT: OnceCell<Arc<Slot>> = const { OnceCell::new() };
    /// Set on the writer thread: its own lines (drop reports) never wait.
    static IS_WRITER: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// The batched log: a `MakeWriter` for the log formatter.
#[derive(Clone)]
pub struct Batched {
    shared: Arc<Shared>,
}

/// The process's batched log, once logging is set up with one.
static CURRENT: OnceLock<Batched> = OnceLock::new();

impl Batched {
    /// Starts the writer thread for `sink`.
    pub fn start(sink: Sink, when_full: WhenFull) -> io::Result<Batched> {
        let shared = Arc::new(Shared {
            slots: Mutex::new(Vec::new()),
            wake: Mutex::new(false),
            work: Condvar::new(),
            room_lock: Mutex::new(()),
            room: Condvar::new(),
            stopped: AtomicBool::new(false),
            when_full,
            dropped: AtomicU64::new(0),
            sink: Mutex::new(sink),
            thread: Mutex::new(None),
        });
        let me = shared.clone();
        let handle = std::thread::Builder::new()
            .name("ossrelay-log".into())
            .spawn(move || {
                IS_WRITER.with(|w| w.set(true));
                me.run();
            })?;
        if let Ok(mut t) = shared.thread.lock() {
            *t = Some(handle);
        }
        Ok(Batched { shared })
    }

    /// Makes this the log that [`finish`] flushes.
    pub fn install(&self) {
        let _ = CURRENT.set(self.clone());
    }

    /// How many lines were dropped because a buffer was full.
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }

    /// Appends `line` (one or more whole lines) to this thread's buffer.
    /// `urgent` wakes the writer at once.
    pub fn push(&self, line: &[u8], urgent: bool) {
        let sh = &self.shared;
        if sh.stopped.load(Ordering::Acquire) {
            if let Ok(mut sink) = sh.sink.lock() {
                sink.write_batch(line);
            }
            return;
        }
        let slot = SLOT.with(|s| {
            s.get_or_init(|| {
                let slot = Arc::new(Slot::default());
                if let Ok(mut all) = sh.slots.lock() {
                    all.push(slot.clone());
                }
                slot
            })
            .clone()
        });
        let may_wait = sh.when_full == WhenFull::Wait && !IS_WRITER.with(|w| w.get());
        loop {
            let Ok(mut buf) = slot.buf.lock() else {
                return;
            };
            if buf.is_empty() || buf.len() + line.len() <= CAP {
                let before = buf.len();
                buf.extend_from_slice(line);
                let crossed = before < HIGH && buf.len() >= HIGH;
                drop(buf);
                if crossed || urgent {
                    sh.kick();
                }
                return;
            }
            drop(buf);
            if !may_wait {
                let lines = line.iter().filter(|&&b| b == b'\n').count().max(1);
                sh.dropped.fetch_add(lines as u64, Ordering::Relaxed);
                return;
            }
            // Full: wait until the writer has taken this buffer.
            sh.kick();
            let Ok(g) = sh.room_lock.lock() else {
                return;
            };
            let _ = sh.room.wait_timeout(g, TICK);
            if sh.stopped.load(Ordering::Acquire) {
                if let Ok(mut sink) = sh.sink.lock() {
                    sink.write_batch(line);
                }
                return;
            }
        }
    }

    /// Writes out every buffered line and stops the writer; later lines
    /// are written directly. Waits for a stalled destination at most 5 s.
    pub fn finish(&self) {
        let sh = &self.shared;
        sh.stopped.store(true, Ordering::Release);
        sh.kick();
        let handle = sh.thread.lock().ok().and_then(|mut t| t.take());
        if let Some(h) = handle {
            let deadline = Instant::now() + Duration::from_secs(5);
            while !h.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
            if h.is_finished() {
                let _ = h.join();
                // A line whose thread saw `stopped` unset just before the
                // writer's last sweep is still in its buffer.
                sh.sweep(&mut Vec::new());
            }
        }
    }
}

impl Shared {
    fn kick(&self) {
        if let Ok(mut w) = self.wake.lock() {
            *w = true;
        }
        self.work.notify_one();
    }

    /// The writer thread.
    fn run(&self) {
        let mut spare = Vec::with_capacity(HIGH * 2);
        let mut reported = 0u64;
        let mut last_report = Instant::now();
        loop {
            if let Ok(mut w) = self.wake.lock() {
                if !*w {
                    w = match self.work.wait_timeout(w, TICK) {
                        Ok((w, _)) => w,
                        Err(_) => return,
                    };
                }
                *w = false;
            }
            // Read before the sweep: a line pushed after `stopped` is set
            // is written directly, so this last sweep misses nothing.
            let last = self.stopped.load(Ordering::Acquire);
            self.sweep(&mut spare);
            let dropped = self.dropped.load(Ordering::Relaxed);
            // Every drop is reported by the time the process exits.
            if dropped > reported && (last || last_report.elapsed() >= REPORT_EVERY) {
                tracing::warn!(
                    dropped = dropped - reported,
                    "log lines dropped: the log destination is slower than the relay (log.when_full = \"drop\")"
                );
                reported = dropped;
                last_report = Instant::now();
                self.sweep(&mut spare);
            }
            if last {
                return;
            }
        }
    }

    /// Takes each thread's buffer in turn and writes it.
    fn sweep(&self, spare: &mut Vec<u8>) {
        let slots: Vec<Arc<Slot>> = match self.slots.lock() {
            Ok(mut all) => {
                // A thread that ended leaves its slot here only: forget it
                // once it is written out.
                all.retain(|s| {
                    Arc::strong_count(s) > 1 || s.buf.lock().is_ok_and(|b| !b.is_empty())
                });
                all.clone()
            }
            Err(_) => return,
        };
        for slot in slots {
            if let Ok(mut buf) = slot.buf.lock() {
                if buf.is_empty() {
                    continue;
                }
                std::mem::swap(&mut *buf, spare);
            }
            self.room.notify_all();
            if let Ok(mut sink) = self.sink.lock() {
                sink.write_batch(spare);
            }
            spare.clear();
            // Keep one batch's worth, not the largest ever seen.
            spare.shrink_to(HIGH * 2);
        }
    }
}

/// How many log lines the process dropped (`when_full = "drop"`).
pub fn dropped_total() -> u64 {
    CURRENT.get().map_or(0, Batched::dropped)
}

/// Writes out every buffered log line and stops the writer; a no-op
/// without a batched log.
pub fn finish() {
    if let Some(b) = CURRENT.get() {
        b.finish();
    }
}

/// One log event's writer: the formatter writes the whole line at once.
pub struct EventWriter<'a> {
    log: &'a Batched,
    urgent: bool,
}

impl Write for EventWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.log.push(buf, self.urgent);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Batched {
    type Writer = EventWriter<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        EventWriter {
            log: self,
            urgent: false,
        }
    }

    fn make_writer_for(&'a self, meta: &tracing::Metadata<'_>) -> Self::Writer {
        // Warnings and errors are written at once: an operator watching
        // the log for a failure should not wait for a tick.
        EventWriter {
            log: self,
            urgent: *meta.level() <= tracing::Level::WARN,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn pipe() -> (std::fs::File, std::fs::File) {
        let mut fds = [0; 2];
        // SAFETY: pipe2(2) fills two descriptors that we then own.
        let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
        assert_eq!(rc, 0);
        use std::os::fd::FromRawFd;
        // SAFETY: the descriptors were just created and are owned once.
        unsafe {
            (
                std::fs::File::from_raw_fd(fds[0]),
                std::fs::File::from_raw_fd(fds[1]),
            )
        }
    }

    #[test]
    fn a_stalled_destination_drops_and_counts() {
        // The reader never reads: pushing never blocks, and what does not
        // fit is counted, line by line.
        let (_r, w) = pipe();
        let b = Batched::start(Sink::File(w), WhenFull::Drop).unwrap();
        let mut line = vec![b'x'; 1023];
        line.push(b'\n');
        let t = Instant::now();
        for _ in 0..4000 {
            b.push(&line, false);
        }
        assert!(t.elapsed() < Duration::from_secs(10), "pushing waited");
        // 4000 KiB pushed. At most 64 KiB sit in the pipe, 1 MiB in the
        // batch the writer is stuck writing, and 1 MiB in the buffer: at
        // least 1 888 lines are dropped, and counted.
        let dropped = b.dropped();
        assert!((1888..=3950).contains(&dropped), "dropped {dropped}");
    }

    #[test]
    fn a_slow_destination_with_wait_loses_nothing_and_keeps_order() {
        let (mut r, w) = pipe();
        let b = Batched::start(Sink::File(w), WhenFull::Wait).unwrap();
        let n = 40_000;
        let reader = std::thread::spawn(move || {
            let mut all = Vec::new();
            let mut chunk = [0u8; 4096];
            loop {
                // Slower than the pushing threads, so buffers fill.
                std::thread::sleep(Duration::from_micros(100));
                match r.read(&mut chunk) {
                    Ok(0) | Err(_) => return all,
                    Ok(n) => all.extend_from_slice(&chunk[..n]),
                }
            }
        });
        // Two threads push; each thread's lines stay in its order.
        let pushers: Vec<_> = (0..2)
            .map(|t| {
                let b = b.clone();
                std::thread::spawn(move || {
                    for i in 0..n {
                        b.push(
                            format!("t{t} line {i:06} {}\n", "y".repeat(40)).as_bytes(),
                            false,
                        );
                    }
                })
            })
            .collect();
        for p in pushers {
            p.join().unwrap();
        }
        b.finish();
        // The writer is done: closing the write end ends the reader.
        drop(b);
        let all = reader.join().unwrap();
        let text = String::from_utf8(all).unwrap();
        for t in 0..2 {
            let mine: Vec<&str> = text
                .lines()
                .filter(|l| l.starts_with(&format!("t{t} ")))
                .collect();
            assert_eq!(mine.len(), n, "thread {t}");
            for (i, l) in mine.iter().enumerate() {
                assert!(l.starts_with(&format!("t{t} line {i:06} ")), "{l}");
            }
        }
    }
}
