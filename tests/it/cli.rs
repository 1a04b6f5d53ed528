//! The `ossrelay` binary: config checking, exit codes, signals and drain.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

use crate::helpers::*;

fn examples() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    v.sort();
    v
}

#[test]
fn every_example_config_is_valid() {
    let all = examples();
    assert!(all.len() >= 4, "examples/ has the documented configs");
    // The TLS examples name certificates relative to the config file:
    // check copies next to freshly made ones.
    let dir = TempDir::new("examples");
    let certs = dir.0.join("certs");
    std::fs::create_dir_all(&certs).unwrap();
    let pki = crate::pki::Pki::new(&certs);
    for (name, from) in [
        ("relay.pem", &pki.certkey),
        ("relay.key", &pki.certkey),
        ("clients-ca.pem", &pki.ca),
    ] {
        std::fs::copy(from, certs.join(name)).unwrap();
    }
    for original in all {
        let path = dir.0.join(original.file_name().unwrap());
        std::fs::copy(&original, &path).unwrap();
        if let Err(e) = ossrelay::config::Config::load(&path) {
            panic!("{}: {e}", path.display());
        }
        let out = Command::new(bin())
            .args(["run", "--check", "-c"])
            .arg(&path)
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "ok");
    }
}

#[test]
fn bad_config_exits_2_naming_key_and_line() {
    let dir = TempDir::new("badcfg");
    let path = dir.0.join("bad.toml");
    std::fs::write(&path, "[[relay]]\nlisten = \"0.0.0.0:80\"\nupstream = \"oss-ap-northeast-1-internal.aliyuncs.com\"\nidle_timeout = \"10\"\n").unwrap();
    for args in [&["run", "--check", "-c"][..], &["run", "-c"][..]] {
        let out = Command::new(bin()).args(args).arg(&path).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(
            err.contains("relay[0].upstream (line 3):") && err.contains("missing port"),
            "{err}"
        );
        assert!(
            err.contains("relay[0].idle_timeout (line 4):") && err.contains("missing unit"),
            "{err}"
        );
    }
    let missing = Command::new(bin())
        .args(["run", "--check", "-c", "/nonexistent/ossrelay.toml"])
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("/nonexistent/ossrelay.toml"));
    let usage = Command::new(bin()).args(["run"]).output().unwrap();
    assert_eq!(usage.status.code(), Some(2), "missing -c is a usage error");
}

/// A relay process whose stderr lines are forwarded to a channel; killed on drop.
struct Proc {
    run: Running,
    lines: mpsc::Receiver<String>,
    _dir: TempDir,
}

impl Proc {
    fn start(tag: &str, config: &str) -> Proc {
        let dir = TempDir::new(tag);
        let path = dir.0.join("relay.toml");
        std::fs::write(&path, config).unwrap();
        let mut cmd = Command::new(bin());
        cmd.args(["run", "-c"])
            .arg(&path)
            .stderr(Stdio::piped())
            .stdout(Stdio::null());
        let mut child = cmd.spawn().unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Proc {
            run: Running::adopt(&cmd, child),
            lines,
            _dir: dir,
        }
    }

    /// Waits for a stderr line containing `needle`.
    fn wait_line(&self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            match self.lines.try_recv() {
                Ok(l) if l.contains(needle) => return l,
                Ok(l) => eprintln!("relay: {l}"),
                Err(mpsc::TryRecvError::Empty) => std::thread::sleep(Duration::from_millis(5)),
                Err(mpsc::TryRecvError::Disconnected) => break,
            }
        }
        panic!("no log line containing {needle:?} within 20 s");
    }

    /// Waits for the startup mapping line and returns the bound address.
    fn listen_addr(&self) -> SocketAddr {
        let line = self.wait_line(" <- ");
        line.rsplit(" <- ")
            .next()
            .unwrap()
            .split(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap()
    }

    fn signal(&self, sig: libc::c_int) {
        // SAFETY: kill(2) on the PID of a child we spawned and still own.
        let rc = unsafe { libc::kill(self.run.child.id() as libc::pid_t, sig) };
        assert_eq!(rc, 0);
    }

    fn wait_exit(&mut self, within: Duration) -> Option<i32> {
        match self.run.exit_within(within) {
            Some(status) => status.code(),
            None => panic!("relay did not exit within {within:?}"),
        }
    }
}

#[test]
fn address_in_use_exits_1_naming_the_address() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let mut p = Proc::start(
        "inuse",
        &format!("[[relay]]\nlisten = \"{addr}\"\nupstream = \"127.0.0.1:9\"\n"),
    );
    let line = p.wait_line("cannot listen");
    assert!(
        line.contains(&addr.to_string()) && line.contains("address already in use"),
        "{line}"
    );
    assert_eq!(p.wait_exit(Duration::from_secs(10)), Some(1));
    // Once: the log goes to stderr, so no second copy of the message.
    let mut again = Vec::new();
    while let Ok(l) = p.lines.recv_timeout(Duration::from_secs(5)) {
        if l.contains("cannot listen") {
            again.push(l);
        }
    }
    assert!(again.is_empty(), "the error was printed twice: {again:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_inflight_transfer_finish_then_exits_0() {
    let server = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server_addr = server.local_addr().unwrap();
    const TOTAL: usize = 16 << 20;
    // The upstream sends 16 MiB in paced chunks so the transfer is still
    // running when the signal arrives.
    let up = tokio::spawn(async move {
        let (mut s, _) = server.accept().await.unwrap();
        let mut hash = sha2_dev::Sha256::new();
        use sha2_dev::Digest;
        let chunk = &block()[..256 * 1024];
        for _ in 0..TOTAL / chunk.len() {
            s.write_all(chunk).await.unwrap();
            hash.update(chunk);
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
        s.shutdown().await.unwrap();
        let out: [u8; 32] = hash.finalize().into();
        out
    });
    let mut p = Proc::start(
        "drain",
        &format!("[server]\ndrain_timeout = \"30s\"\n[[relay]]\nname = \"drain\"\nlisten = \"127.0.0.1:0\"\nupstream = \"{server_addr}\"\n"),
    );
    let addr = p.listen_addr();
    let mut c = TcpStream::connect(addr).await.unwrap();
    let mut first = [0u8; 1];
    tokio::io::AsyncReadExt::read_exact(&mut c, &mut first)
        .await
        .unwrap();
    p.signal(libc::SIGTERM);
    p.wait_line("no longer accepting");
    // New clients are no longer accepted...
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "listener closed after SIGTERM"
    );
    // ...but the in-flight transfer completes intact.
    let (n, _) = recv_all(&mut c).await;
    assert_eq!(n + 1, TOTAL);
    // The relay passes half-close through, so the pair ends when we close too.
    drop(c);
    up.await.unwrap();
    let close = p.wait_line("close tx:");
    assert!(
        close.contains(&format!("tx:{TOTAL}")) && close.contains("reason=eof"),
        "{close}"
    );
    assert_eq!(p.wait_exit(Duration::from_secs(10)), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_deadline_closes_stuck_connections_and_exits_0() {
    let server = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server_addr = server.local_addr().unwrap();
    let _held = tokio::spawn(async move {
        let (s, _) = server.accept().await.unwrap();
        tokio::time::sleep(Duration::from_secs(60)).await;
        drop(s);
    });
    let mut p = Proc::start(
        "deadline",
        &format!("[server]\ndrain_timeout = \"300ms\"\n[[relay]]\nname = \"stuck\"\nlisten = \"127.0.0.1:0\"\nupstream = \"{server_addr}\"\n"),
    );
    let addr = p.listen_addr();
    let _c = TcpStream::connect(addr).await.unwrap();
    p.wait_line("accepted TCP");
    p.signal(libc::SIGINT);
    p.wait_line("drain deadline passed");
    let close = p.wait_line("close tx:");
    assert!(close.contains("reason=shutdown"), "{close}");
    assert_eq!(p.wait_exit(Duration::from_secs(10)), Some(0));
}

#[test]
fn hosts_prints_the_blogs_lines_and_checks_a_file() {
    let out = Command::new(bin())
        .args([
            "hosts",
            "--relay",
            "172.31.10.171",
            "--endpoint",
            "oss-ap-northeast-1-internal.aliyuncs.com",
            "--bucket",
            "aws-alibaba-oss",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "172.31.10.171 oss-ap-northeast-1-internal.aliyuncs.com\n172.31.10.171 aws-alibaba-oss.oss-ap-northeast-1-internal.aliyuncs.com\n"
    );
    let dir = TempDir::new("hosts");
    let file = dir.0.join("hosts");
    std::fs::write(&file, &out.stdout).unwrap();
    let cfg = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/dns-responder.toml");
    let check = |extra: &[&str]| {
        let o = Command::new(bin())
            .args(["hosts", "--from-config"])
            .arg(&cfg)
            .args(extra)
            .arg("--check-file")
            .arg(&file)
            .output()
            .unwrap();
        (
            o.status.code(),
            String::from_utf8_lossy(&o.stdout).into_owned(),
        )
    };
    let (code, text) = check(&["--bucket", "aws-alibaba-oss"]);
    assert_eq!(code, Some(0), "{text}");
    assert_eq!(text.matches('✔').count(), 2, "{text}");
    let (code, text) = check(&["--bucket", "new-bucket-123"]);
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains("✘ new-bucket-123.oss-ap-northeast-1-internal.aliyuncs.com: missing"),
        "{text}"
    );
    std::fs::write(&file, "10.0.0.9 oss-ap-northeast-1-internal.aliyuncs.com\n").unwrap();
    let (code, text) = check(&[]);
    assert_eq!(code, Some(1));
    assert!(
        text.contains("stale, points to 10.0.0.9 instead of the relay 172.31.10.171"),
        "{text}"
    );
    // A gateway config's routes name the endpoints.
    let gw = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/gateway-http.toml");
    let out = Command::new(bin())
        .args(["hosts", "--relay", "172.31.10.171", "--from-config"])
        .arg(&gw)
        .args(["--bucket", "aws-alibaba-oss"])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "172.31.10.171 oss-ap-northeast-1-internal.aliyuncs.com\n172.31.10.171 aws-alibaba-oss.oss-ap-northeast-1-internal.aliyuncs.com\n"
    );
    let bad = Command::new(bin())
        .args(["hosts", "--endpoint", "x"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--relay"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn draining_closes_idle_gateway_connections_and_finishes_requests_in_flight() {
    use tokio::io::AsyncReadExt;
    let (up, seen) = recording_upstream(Reply::HttpOk).await;
    let mut p = Proc::start(
        "drain-gw",
        &format!("[server]\ndrain_timeout = \"120s\"\n[[relay]]\nname = \"drain-gw\"\nprotocol = \"http\"\nlisten = \"127.0.0.1:0\"\ndefault_route = \"{up}\"\n"),
    );
    let addr = p.listen_addr();
    // A kept-alive connection, idle after one request.
    let mut idle = TcpStream::connect(addr).await.unwrap();
    idle.write_all(b"GET /b/k HTTP/1.1\r\nHost: oss.test\r\n\r\n")
        .await
        .unwrap();
    let mut first = vec![0u8; "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok".len()];
    idle.read_exact(&mut first).await.unwrap();
    // A request whose body is still arriving when the drain starts.
    let mut busy = TcpStream::connect(addr).await.unwrap();
    busy.write_all(b"PUT /b/up HTTP/1.1\r\nHost: oss.test\r\nContent-Length: 4\r\n\r\nab")
        .await
        .unwrap();
    for _ in 0..1000 {
        if seen.lock().unwrap().ends_with(b"\r\n\r\nab") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        seen.lock().unwrap().ends_with(b"\r\n\r\nab"),
        "the PUT is in flight"
    );
    p.signal(libc::SIGINT);
    // The idle connection is closed at once, not after the 120 s deadline.
    let idle_close = p.wait_line("close tx:");
    assert!(idle_close.contains("reason=shutdown"), "{idle_close}");
    let mut rest = Vec::new();
    let n = tokio::time::timeout(Duration::from_secs(20), idle.read_to_end(&mut rest))
        .await
        .expect("idle keep-alive connection closed by the drain")
        .unwrap();
    assert_eq!(n, 0, "{rest:?}");
    // The request in flight completes, told that the connection closes.
    busy.write_all(b"cd").await.unwrap();
    let mut resp = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), busy.read_to_end(&mut resp))
        .await
        .expect("the in-flight request finished")
        .unwrap();
    let resp = String::from_utf8_lossy(&resp);
    assert!(resp.starts_with("HTTP/1.1 200 OK\r\n"), "{resp}");
    assert!(resp.contains("Connection: close\r\n"), "{resp}");
    assert!(resp.ends_with("\r\n\r\nok"), "{resp}");
    let busy_close = p.wait_line("close tx:");
    assert!(busy_close.contains("reason=shutdown"), "{busy_close}");
    assert_eq!(p.wait_exit(Duration::from_secs(20)), Some(0));
}

#[test]
fn the_cli_takes_what_the_config_takes_and_refuses_bad_bucket_names() {
    // `--log-format syslog`, as `[log] format = "syslog"`.
    let dir = TempDir::new("cli-syslog");
    let cfg = dir.0.join("relay.toml");
    std::fs::write(
        &cfg,
        "[[relay]]\nlisten = \"127.0.0.1:0\"\nupstream = \"127.0.0.1:9\"\n",
    )
    .unwrap();
    let out = Command::new(bin())
        .args(["run", "--log-format", "syslog", "--check", "-c"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A bucket name OSS would refuse is refused, not lower-cased.
    let out = Command::new(bin())
        .args([
            "hosts",
            "--relay",
            "172.31.10.171",
            "--endpoint",
            "oss.example",
            "--bucket",
            "Bad_Bucket",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("\"Bad_Bucket\" is not a bucket name"), "{err}");
    assert!(out.stdout.is_empty(), "nothing printed for a refused name");
}

#[cfg(feature = "store")]
#[test]
fn the_store_listens_on_a_host_name() {
    // The name is resolved; the store then fails on the missing root, not
    // on the address.
    let out = Command::new(bin())
        .args([
            "store",
            "--root",
            "/nonexistent/oss-root",
            "--listen",
            "localhost:0",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("--listen"), "{err}");
    assert!(err.contains("/nonexistent/oss-root"), "{err}");
    assert_eq!(out.status.code(), Some(2), "{err}");
}

/// `--check --explain` numbers the statements as denials do, shorthand
/// included; a policy mistake is reported with its key and line, and a
/// tls (SNI) relay refuses what it cannot see.
#[test]
fn check_explains_the_policy_and_names_policy_mistakes() {
    let dir = TempDir::new("policy-check");
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/endpoint-policy.toml");
    let out = Command::new(bin())
        .args(["run", "--check", "--explain", "-c"])
        .arg(&example)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(
        text.contains("  2. deny oss:DeleteObject,oss:DeleteBucket on any bucket")
            && text.contains("  4. deny * on logs-secret")
            && text.contains("  5. allow oss:ListBuckets on any bucket    [allow_service]")
            && text.ends_with("ok\n"),
        "{text}"
    );
    let bad = dir.0.join("bad.toml");
    std::fs::write(
        &bad,
        "[[relay]]\nname = \"gw\"\nprotocol = \"http\"\nlisten = \"127.0.0.1:18080\"\ndefault_route = \"oss.test:80\"\n\n[[relay.policy]]\neffect = \"permit\"\nactions = [\"s3:GetObject\", \"oss:getobject\", \"oss:Get*\"]\nsources = [\"10.0.0.0/33\"]\n\n[[relay]]\nname = \"sni\"\nprotocol = \"tls\"\nlisten = \"127.0.0.1:18443\"\ndefault_route = \"oss.test:443\"\n\n[[relay.policy]]\neffect = \"allow\"\nbuckets = [\"logs-*\"]\nkeys = [\"uploads/*\"]\n",
    )
    .unwrap();
    let out = Command::new(bin())
        .args(["run", "--check", "-c"])
        .arg(&bad)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    for want in [
        "relay[0].policy[0].effect (line 8): \"permit\": expected \"allow\" or \"deny\"",
        "relay[0].policy[0].actions[0] (line 9): \"s3:GetObject\" is not an OSS RAM action; did you mean \"oss:GetObject\"?",
        "relay[0].policy[0].actions[1] (line 9): \"oss:getobject\" is not an OSS RAM action; did you mean \"oss:GetObject\"?",
        "relay[0].policy[0].sources[0] (line 10):",
        "relay[1].policy[0] (line 18): a protocol = \"tls\" relay sees only the bucket name",
    ] {
        assert!(err.contains(want), "want {want:?} in:\n{err}");
    }
    assert!(
        !err.contains("oss:Get*"),
        "a glob that matches actions is fine: {err}"
    );
}
