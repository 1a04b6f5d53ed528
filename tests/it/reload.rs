//! Reloading `ossrelay run` (SIGHUP, through `ossrelay reload`) while it
//! carries transfers: a relay is added, one removed, a third's ACL changed;
//! the transfers finish intact, a connect loop on an unchanged relay is
//! never refused, and an invalid file changes nothing and is counted.

use std::net::SocketAddr;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sha2_dev::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::helpers::*;

const MIB: usize = 1 << 20;
/// Each transfer's size; the first `BEFORE` MiB go before the reload.
const TRANSFER: usize = 256 * MIB;
const BEFORE: usize = 16;

fn relay(name: &str, port: u16, up: SocketAddr, extra: &str) -> String {
    format!("[[relay]]\nname = \"{name}\"\nlisten = \"127.0.0.1:{port}\"\nupstream = \"{up}\"\n{extra}\n")
}

/// Sends chunks `from..to` (1 MiB each, stamped) into `w`, hashing them.
async fn send_chunks<W: AsyncWriteExt + Unpin>(
    w: &mut W,
    hash: &mut Sha256,
    from: usize,
    to: usize,
) {
    let mut chunk = block().to_vec();
    for i in from..to {
        chunk[..8].copy_from_slice(&(i as u64).to_le_bytes());
        w.write_all(&chunk).await.unwrap();
        hash.update(&chunk);
    }
}

/// Connects from `from` (a loopback address) to `port`; whether an echo
/// comes back.
async fn echoes(from: &str, port: u16) -> bool {
    let sock = TcpSocket::new_v4().unwrap();
    sock.bind(format!("{from}:0").parse().unwrap()).unwrap();
    let Ok(mut s) = sock.connect(([127, 0, 0, 1], port).into()).await else {
        return false;
    };
    if s.write_all(b"ping").await.is_err() {
        return false;
    }
    let mut back = [0u8; 4];
    matches!(
        tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut back)).await,
        Ok(Ok(_)) if &back == b"ping"
    )
}

/// `dig +short` for a name the responder serves.
fn dig_short(port: u16) -> String {
    let out = Command::new("dig")
        .args([
            "@127.0.0.1",
            "-p",
            &port.to_string(),
            "+short",
            "+tries=1",
            "+time=2",
            "b.oss.test",
        ])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn metric(admin: u16, series: &str) -> Option<f64> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", admin)).ok()?;
    s.write_all(b"GET /metrics HTTP/1.1\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    sample(&text, series)
}

fn ossrelay_reload(cfg: &std::path::Path) -> std::process::Output {
    Command::new(bin())
        .args(["reload", "--config"])
        .arg(cfg)
        .output()
        .unwrap()
}

async fn wait_log(run: &Running, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !run.stderr().contains(what) {
        assert!(
            Instant::now() < deadline,
            "no {what:?} in the log:\n{}",
            run.stderr()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_adds_removes_and_changes_relays_without_losing_a_transfer() {
    let up = echo_upstream().await;
    let dir = TempDir::new("reload");
    let cfg = dir.0.join("relay.toml");
    let (keep, change, gone, added, admin, dns) = (
        free_port(),
        free_port(),
        free_port(),
        free_port(),
        free_port(),
        free_port(),
    );
    let head = format!("[admin]\nlisten = \"127.0.0.1:{admin}\"\n");
    let dns_section = |answer: &str| {
        format!("[dns]\nlisten = \"127.0.0.1:{dns}\"\nnames = [\"*.oss.test\"]\nanswer = [\"{answer}\"]\n")
    };
    let before = format!(
        "{head}{}{}{}{}",
        dns_section("10.0.0.1"),
        relay("keep", keep, up, ""),
        relay("change", change, up, ""),
        relay("gone", gone, up, "")
    );
    let after = format!(
        "{head}{}{}{}{}",
        dns_section("10.0.0.2"),
        relay("keep", keep, up, ""),
        relay("change", change, up, "allow = [\"127.0.0.1\"]"),
        relay("added", added, up, "")
    );
    std::fs::write(&cfg, &before).unwrap();
    let mut cmd = Command::new(bin());
    cmd.args(["run", "--config"]).arg(&cfg);
    let mut run = spawn_until_ready(
        &mut cmd,
        &dir.0.join("stderr"),
        Ready::Bound {
            port: keep,
            udp: false,
        },
    );
    if let Err(why) = run.wait_ready(&[
        Ready::Bound {
            port: change,
            udp: false,
        },
        Ready::Bound {
            port: gone,
            udp: false,
        },
        Ready::Bound {
            port: admin,
            udp: false,
        },
    ]) {
        panic!("not ready: {why}\n{}", run.stderr());
    }
    assert!(
        echoes("127.0.0.2", change).await,
        "before the reload anyone may use 'change'"
    );
    let has_dig = Command::new("dig").arg("-v").output().is_ok();
    if has_dig {
        assert_eq!(dig_short(dns), "10.0.0.1");
    } else {
        skip_outside_ci(
            "dig (dnsutils) is needed to check the DNS responder's reload",
            format_args!("dig is not installed"),
        );
    }

    // A connect loop on the unchanged relay, through the whole reload.
    let stop_loop = Arc::new(AtomicBool::new(false));
    let (ok, refused) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let connect_loop = {
        let (stop, ok, refused) = (stop_loop.clone(), ok.clone(), refused.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                if echoes("127.0.0.1", keep).await {
                    ok.fetch_add(1, Ordering::Relaxed);
                } else {
                    refused.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
    };

    // Eight transfers through the relay whose settings change: the first
    // 16 MiB before the reload, the rest after it.
    let reloaded = Arc::new(tokio::sync::Notify::new());
    let started = Arc::new(tokio::sync::Semaphore::new(0));
    let transfers: Vec<_> = (0..8)
        .map(|t| {
            let (reloaded, started) = (reloaded.clone(), started.clone());
            tokio::spawn(async move {
                let s = TcpStream::connect(("127.0.0.1", change)).await.unwrap();
                let (mut r, mut w) = s.into_split();
                let reader = tokio::spawn(async move { recv_all(&mut r).await });
                let mut hash = Sha256::new();
                let base = t * 1000;
                let waiting = reloaded.notified();
                tokio::pin!(waiting);
                waiting.as_mut().enable();
                send_chunks(&mut w, &mut hash, base, base + BEFORE).await;
                started.add_permits(1);
                waiting.await;
                send_chunks(&mut w, &mut hash, base + BEFORE, base + TRANSFER / MIB).await;
                w.shutdown().await.unwrap();
                let sent: [u8; 32] = hash.finalize().into();
                let (n, got) = reader.await.unwrap();
                (n, got == sent)
            })
        })
        .collect();
    let _all_started = started.acquire_many(8).await.unwrap();

    // An invalid file: refused by the command, and by the relay itself.
    std::fs::write(&cfg, "[[relay]]\nname = 1\n").unwrap();
    let out = ossrelay_reload(&cfg);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("nothing sent"));
    // SAFETY: kill(2) on the PID of the child this test spawned.
    assert_eq!(
        unsafe { libc::kill(run.child.id() as libc::pid_t, libc::SIGHUP) },
        0
    );
    wait_log(&run, "still running the previous config").await;
    assert_eq!(
        metric(admin, "ossrelay_config_reloads_total{result=\"error\"}"),
        Some(1.0)
    );
    assert!(
        echoes("127.0.0.2", change).await,
        "the invalid file changed something"
    );

    // The real reload, through `ossrelay reload`.
    std::fs::write(&cfg, &after).unwrap();
    let out = ossrelay_reload(&cfg);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains(&format!("PID {}", run.child.id())));
    wait_log(
        &run,
        "reload: 1 relay(s) kept, 1 changed, 1 added, 1 removed",
    )
    .await;
    assert!(
        run.stderr().contains("reload: [dns] applied"),
        "{}",
        run.stderr()
    );
    assert_eq!(
        metric(admin, "ossrelay_config_reloads_total{result=\"success\"}"),
        Some(1.0)
    );
    reloaded.notify_waiters();

    for (t, h) in transfers.into_iter().enumerate() {
        let (n, same) = h.await.unwrap();
        assert_eq!(n, TRANSFER, "transfer {t} came back short");
        assert!(same, "transfer {t} came back different");
    }
    stop_loop.store(true, Ordering::Relaxed);
    connect_loop.await.unwrap();
    assert_eq!(
        refused.load(Ordering::Relaxed),
        0,
        "connections refused on the unchanged relay"
    );
    assert!(ok.load(Ordering::Relaxed) > 0);

    // The new settings and relays, and the DNS responder's new answer on
    // the same socket.
    if has_dig {
        assert_eq!(dig_short(dns), "10.0.0.2");
    }
    assert!(
        echoes("127.0.0.1", change).await,
        "'change' still serves 127.0.0.1"
    );
    assert!(
        !echoes("127.0.0.2", change).await,
        "'change' has its new ACL"
    );
    assert!(echoes("127.0.0.1", added).await, "the added relay serves");
    assert!(
        TcpStream::connect(("127.0.0.1", gone)).await.is_err(),
        "the removed relay still accepts"
    );
    let _ = run.child.kill();
}
