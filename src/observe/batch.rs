//! Log lines off the relaying threads: a line is appended to a shared
//! buffer and a writer thread writes whole batches to the destination
//! (stderr, a file, or syslog, one datagram per line). A relaying thread
//! then pays a short lock and a copy per access record instead of a
//! write(2), and under load one write carries many records.
//!
//! Not `tracing-appender`'s non-blocking writer: it sends each line as its
//! own allocation through a channel and writes it on its own, and its
//! lossy mode counts drops without saying so anywhere. Here the buffer is
//! bounded (1 MiB); when it is full a line either waits for room
//! (`when_full = "wait"`, the default: access records are audit records)
//! or is dropped and counted (`"drop"`), and the count is reported in the
//! log every 10 s while lines are being dropped. [`flush`] writes out what
//! is buffered; the process calls it before it exits and before it forks.
//!
//! The writer sleeps until a line arrives in an empty buffer, so a line
//! is written at once when the relay is quiet; only a busy relay batches.

use std::io::{self, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Lines wait (or are dropped) once this much is buffered.
const CAP: usize = 1 << 20;

pub use crate::config::WhenFull;

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
        // A failing log destination must not stop the relay; there is
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

struct State {
    buf: Vec<u8>,
    /// The writer holds a batch it has not finished writing.
    writing: bool,
    /// The writer thread is gone (or never started): write directly.
    stopped: bool,
}

/// The shared buffer between relaying threads and the writer thread.
pub struct Batched {
    state: Mutex<State>,
    /// Wakes the writer: a line arrived in an empty buffer, or a flush.
    work: Condvar,
    /// Wakes waiters: the writer made room or finished a batch.
    room: Condvar,
    when_full: WhenFull,
    dropped: AtomicU64,
    sink: Mutex<Sink>,
    /// The writer thread, joined by [`Batched::pause`].
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

/// The process's batched log, once logging is set up with one.
static CURRENT: OnceLock<Arc<Batched>> = OnceLock::new();

impl Batched {
    /// Starts the writer thread for `sink`; the result is the `Write` that
    /// the log formatter writes each line to.
    pub fn start(sink: Sink, when_full: WhenFull) -> io::Result<Arc<Batched>> {
        let b = Arc::new(Batched {
            state: Mutex::new(State {
                buf: Vec::with_capacity(64 * 1024),
                writing: false,
                stopped: false,
            }),
            work: Condvar::new(),
            room: Condvar::new(),
            when_full,
            dropped: AtomicU64::new(0),
            sink: Mutex::new(sink),
            thread: Mutex::new(None),
        });
        b.spawn_writer()?;
        let _ = CURRENT.set(b.clone());
        Ok(b)
    }

    fn spawn_writer(self: &Arc<Batched>) -> io::Result<()> {
        let me = self.clone();
        let handle = std::thread::Builder::new()
            .name("ossrelay-log".into())
            .spawn(move || me.run())?;
        if let Ok(mut t) = self.thread.lock() {
            *t = Some(handle);
        }
        Ok(())
    }

    /// How many lines were dropped because the buffer was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    fn run(&self) {
        let mut batch = Vec::with_capacity(64 * 1024);
        let mut reported = 0u64;
        let mut last_report = Instant::now();
        loop {
            {
                let Ok(mut st) = self.state.lock() else {
                    return;
                };
                while st.buf.is_empty() {
                    if st.stopped {
                        return;
                    }
                    // Wake now and then to report drops.
                    match self.work.wait_timeout(st, Duration::from_secs(1)) {
                        Ok((s, _)) => st = s,
                        Err(_) => return,
                    }
                    if st.buf.is_empty() && last_report.elapsed() >= Duration::from_secs(10) {
                        break;
                    }
                }
                std::mem::swap(&mut st.buf, &mut batch);
                st.writing = true;
            }
            self.room.notify_all();
            let dropped = self.dropped();
            if dropped > reported && last_report.elapsed() >= Duration::from_secs(10) {
                let line = format!(
                    "ossrelay: {} log line(s) dropped: the log destination is slower than the relay (log.when_full = \"drop\")\n",
                    dropped - reported
                );
                batch.extend_from_slice(line.as_bytes());
                reported = dropped;
                last_report = Instant::now();
            } else if last_report.elapsed() >= Duration::from_secs(10) {
                last_report = Instant::now();
            }
            if !batch.is_empty() {
                if let Ok(mut sink) = self.sink.lock() {
                    sink.write_batch(&batch);
                }
            }
            batch.clear();
            if let Ok(mut st) = self.state.lock() {
                st.writing = false;
            }
            self.room.notify_all();
        }
    }

    /// Appends one formatted line (or several).
    pub fn push(&self, line: &[u8]) {
        let Ok(mut st) = self.state.lock() else {
            return;
        };
        if st.stopped {
            drop(st);
            if let Ok(mut sink) = self.sink.lock() {
                sink.write_batch(line);
            }
            return;
        }
        while st.buf.len() + line.len() > CAP && !st.buf.is_empty() {
            match self.when_full {
                WhenFull::Drop => {
                    self.dropped.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                WhenFull::Wait => {
                    self.work.notify_one();
                    st = match self.room.wait(st) {
                        Ok(s) => s,
                        Err(_) => return,
                    };
                }
            }
        }
        let was_empty = st.buf.is_empty();
        st.buf.extend_from_slice(line);
        drop(st);
        if was_empty {
            self.work.notify_one();
        }
    }

    /// Waits until everything pushed so far has been written (or 5 s).
    pub fn flush(&self) {
        let deadline = Instant::now() + Duration::from_secs(5);
        let Ok(mut st) = self.state.lock() else {
            return;
        };
        while (!st.buf.is_empty() || st.writing) && Instant::now() < deadline {
            self.work.notify_one();
            st = match self.room.wait_timeout(st, Duration::from_millis(50)) {
                Ok((s, _)) => s,
                Err(_) => return,
            };
        }
    }

    /// Flushes, then writes every later line directly: for `daemon(3)`,
    /// whose child has no writer thread. [`Batched::resume`] in the child
    /// starts a new one.
    pub fn pause(&self) {
        self.flush();
        if let Ok(mut st) = self.state.lock() {
            st.stopped = true;
        }
        self.work.notify_all();
        // Joined, so no thread of ours can hold a lock across a fork.
        let handle = self.thread.lock().ok().and_then(|mut t| t.take());
        if let Some(h) = handle {
            let _ = h.join();
        }
    }

    /// Starts a writer thread again after [`Batched::pause`].
    pub fn resume(self: &Arc<Batched>) {
        if let Ok(mut st) = self.state.lock() {
            st.stopped = false;
            st.writing = false;
        }
        if self.spawn_writer().is_err() {
            if let Ok(mut st) = self.state.lock() {
                st.stopped = true;
            }
        }
    }
}

/// Writes out every buffered log line; a no-op without a batched log.
pub fn flush() {
    if let Some(b) = CURRENT.get() {
        b.flush();
    }
}

/// See [`Batched::pause`].
pub fn pause() {
    if let Some(b) = CURRENT.get() {
        b.pause();
    }
}

/// See [`Batched::resume`].
pub fn resume() {
    if let Some(b) = CURRENT.get() {
        b.resume();
    }
}

/// The formatter writes each line here (through the `Arc`).
impl Write for &Batched {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.push(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn pipe() -> (std::fs::File, std::fs::File) {
        let mut fds = [0; 2];
        // SAFETY: pipe(2) fills two descriptors that we then own.
        let rc = unsafe { libc::pipe(fds.as_mut_ptr()) };
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
    fn a_stalled_destination_drops_and_counts_or_waits_and_loses_nothing() {
        // "drop": the reader never reads; pushing never blocks, and what
        // does not fit is counted.
        let (_r, w) = pipe();
        let b = Batched::start(Sink::File(w), WhenFull::Drop).unwrap();
        let line = [b'x'; 1023];
        let mut line = line.to_vec();
        line.push(b'\n');
        let t = Instant::now();
        for _ in 0..4000 {
            b.push(&line);
        }
        assert!(t.elapsed() < Duration::from_secs(10), "pushing waited");
        assert!(b.dropped() > 1000, "dropped {}", b.dropped());
        // "wait": a slow reader gets every line, in order.
        let (mut r, w) = pipe();
        let b = Batched::start(Sink::File(w), WhenFull::Wait).unwrap();
        let reader = std::thread::spawn(move || {
            let mut all = Vec::new();
            let mut chunk = [0u8; 4096];
            loop {
                std::thread::sleep(Duration::from_micros(200));
                match r.read(&mut chunk) {
                    Ok(0) | Err(_) => return all,
                    Ok(n) => all.extend_from_slice(&chunk[..n]),
                }
                if all.len() >= 4000 * 12 {
                    return all;
                }
            }
        });
        for i in 0..4000 {
            b.push(format!("line {i:06}\n").as_bytes());
        }
        b.flush();
        let all = reader.join().unwrap();
        assert_eq!(b.dropped(), 0);
        let text = String::from_utf8(all).unwrap();
        let lines: Vec<_> = text.lines().collect();
        assert_eq!(lines.len(), 4000);
        assert!(lines
            .iter()
            .enumerate()
            .all(|(i, l)| *l == format!("line {i:06}")));
    }
}
