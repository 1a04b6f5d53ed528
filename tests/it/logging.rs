//! The batched log of `ossrelay run`: every access record reaches the log
//! by the time the process exits, and with `when_full = "drop"` a log
//! destination that stops reading slows nothing down, and every line it
//! lost is counted.

use std::io::Read;
use std::net::SocketAddr;
use std::os::fd::{FromRawFd, OwnedFd};
use std::process::{Command, Stdio};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::*;

fn gateway_toml(port: u16, up: SocketAddr, log: &str) -> String {
    format!(
        "{log}\n[[relay]]\nname = \"logged\"\nprotocol = \"http\"\nlisten = \"127.0.0.1:{port}\"\nroutes = [{{ host = \"*.oss.test\", upstream = \"{up}\" }}]\nbuckets = [\"good\"]\n"
    )
}

/// `clients` connections each send `each` keep-alive GETs and read every
/// answer; returns how many were answered 200.
async fn load(port: u16, clients: usize, each: usize) -> usize {
    let tasks: Vec<_> = (0..clients)
        .map(|c| {
            tokio::spawn(async move {
                let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
                let mut ok = 0;
                let mut buf = Vec::new();
                for i in 0..each {
                    let req = format!("GET /c{c}-r{i} HTTP/1.1\r\nHost: good.oss.test\r\n\r\n");
                    s.write_all(req.as_bytes()).await.unwrap();
                    // The upstream's answer is 40 bytes: a head and "ok".
                    let want = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
                    while buf.len() < want.len() {
                        let mut chunk = [0u8; 256];
                        let n = s.read(&mut chunk).await.unwrap();
                        assert!(n > 0, "relay closed after {i} answers");
                        buf.extend_from_slice(&chunk[..n]);
                    }
                    if buf[..want.len()] == want[..] {
                        ok += 1;
                    }
                    buf.drain(..want.len());
                }
                ok
            })
        })
        .collect();
    let mut ok = 0;
    for t in tasks {
        ok += t.await.unwrap();
    }
    ok
}

fn sigterm(run: &Running) {
    // SAFETY: kill(2) on the PID of a child this test spawned and has not
    // reaped (Running reaps only on drop).
    let rc = unsafe { libc::kill(run.child.id() as libc::pid_t, libc::SIGTERM) };
    assert_eq!(rc, 0);
}

fn request_keys(log: &str) -> Vec<String> {
    log.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["event"] == "request")
        .filter_map(|v| v["key"].as_str().map(str::to_string))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_access_record_is_in_the_log_after_sigterm() {
    let (up, _) = recording_upstream(Reply::HttpOk).await;
    let dir = TempDir::new("log-sigterm");
    let log = dir.0.join("access.log");
    let cfg = dir.0.join("relay.toml");
    let stderr = dir.0.join("stderr");
    let log_section = format!(
        "[log]\nformat = \"json\"\nfile = {:?}\n",
        log.display().to_string()
    );
    let (mut run, port) = spawn_on_free_port(
        |port| Ready::Bound { port, udp: false },
        &stderr,
        |port| {
            std::fs::write(&cfg, gateway_toml(port, up, &log_section)).unwrap();
            let mut c = Command::new(bin());
            c.arg("run").arg("--config").arg(&cfg);
            c
        },
    );
    let (clients, each) = (8, 250);
    assert_eq!(load(port, clients, each).await, clients * each);
    // At once: the last records are still in the relaying threads' buffers.
    sigterm(&run);
    let status = run
        .exit_within(Duration::from_secs(30))
        .expect("no exit after SIGTERM");
    assert!(status.success(), "{status}: {}", run.stderr());
    let text = std::fs::read_to_string(&log).unwrap();
    let mut keys = request_keys(&text);
    assert_eq!(keys.len(), clients * each, "request records in the log");
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), clients * each, "one record per request");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_log_with_drop_slows_nothing_and_counts_every_lost_line() {
    let (up, _) = recording_upstream(Reply::HttpOk).await;
    let dir = TempDir::new("log-drop");
    let cfg = dir.0.join("relay.toml");
    let (port, admin) = (free_port(), free_port());
    let log = format!(
        "[log]\nformat = \"json\"\nwhen_full = \"drop\"\n[admin]\nlisten = \"127.0.0.1:{admin}\"\n"
    );
    std::fs::write(&cfg, gateway_toml(port, up, &log)).unwrap();
    // stderr is a pipe that nobody reads until the end.
    let mut fds = [0; 2];
    // Close-on-exec, so children of tests running alongside do not hold
    // the write end open.
    // SAFETY: pipe2(2) fills two descriptors, owned once each below.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: both descriptors were just created and are owned here only.
    let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    let mut cmd = Command::new(bin());
    cmd.arg("run")
        .arg("--config")
        .arg(&cfg)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(w));
    let child = cmd.spawn().unwrap();
    let mut run = Running::adopt(&cmd, child);
    // The command holds the write end until dropped.
    drop(cmd);
    if let Err(why) = run.wait_ready(&[
        Ready::Bound { port, udp: false },
        Ready::Bound {
            port: admin,
            udp: false,
        },
    ]) {
        panic!("relay not ready: {why}");
    }
    // Far more log than the pipe (64 KiB) and the buffers (1 MiB per
    // thread) hold. Each answer arriving is the point: with "wait" the
    // relaying threads would block on the full pipe.
    let (clients, each) = (8, 2_000);
    let answered = tokio::time::timeout(Duration::from_secs(120), load(port, clients, each))
        .await
        .expect("relaying stalled behind the log");
    assert_eq!(answered, clients * each);
    // The drops are a metric too.
    let mut s = std::net::TcpStream::connect(("127.0.0.1", admin)).unwrap();
    std::io::Write::write_all(&mut s, b"GET /metrics HTTP/1.1\r\n\r\n").unwrap();
    let mut metrics = String::new();
    s.read_to_string(&mut metrics).unwrap();
    let counted = sample(&metrics, "ossrelay_log_lines_dropped_total").unwrap_or(0.0);
    assert!(counted > 0.0, "no drops in /metrics:\n{metrics}");
    sigterm(&run);
    // Read the pipe to its end (every holder of the write end is gone).
    let mut r = std::fs::File::from(r);
    let reader = std::thread::spawn(move || {
        let mut all = String::new();
        let _ = r.read_to_string(&mut all);
        all
    });
    let status = run
        .exit_within(Duration::from_secs(30))
        .expect("no exit after SIGTERM");
    assert!(status.success(), "{status}");
    let text = reader.join().unwrap();
    let kept = request_keys(&text).len();
    let dropped: u64 = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| {
            v["message"]
                .as_str()
                .is_some_and(|m| m.contains("log lines dropped"))
        })
        .filter_map(|v| v["dropped"].as_u64())
        .sum();
    assert!(kept < clients * each, "nothing was dropped ({kept} kept)");
    // Every request's record is either in the log or counted as dropped
    // (the count also covers other lines, such as connection records).
    assert!(
        kept as u64 + dropped >= (clients * each) as u64,
        "{kept} records kept and {dropped} lines counted as dropped, for {} requests",
        clients * each
    );
}
