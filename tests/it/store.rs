//! The OSS stand-in (`ossrelay store`) and the demo.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use ossrelay::resolve::StaticResolver;
use ossrelay::s3client::sigv4::{sha256_hex, Signer};
use ossrelay::s3client::{Client, ClientError};
use ossrelay::store::{Store, StoreConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

use crate::helpers::{bin, TempDir};

const DOMAIN: &str = "oss-ap-northeast-1-internal.aliyuncs.com";

/// A store served by a task of this test (not a child process, so not a
/// `helpers::Running`): it binds 127.0.0.1:0 itself, so it is ready as soon
/// as it exists. Stopped on drop, then its root is removed.
pub(crate) struct InProcessStore {
    pub(crate) addr: SocketAddr,
    stop: CancellationToken,
    _dir: TempDir,
}

impl Drop for InProcessStore {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

pub(crate) async fn start_store(tag: &str, keys: bool) -> InProcessStore {
    let dir = TempDir::new(tag);
    ossrelay::store::create_buckets(&dir.0, &["aws-alibaba-oss".to_string()]).unwrap();
    let store = Store::new(&StoreConfig {
        root: dir.0.clone(),
        domain: Some(DOMAIN.into()),
        keys: keys.then(|| ("AKTEST".to_string(), "SKTEST".to_string())),
    })
    .unwrap();
    let listener = ossrelay::store::bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    tokio::spawn(store.serve(listener, stop.clone()));
    InProcessStore {
        addr,
        stop,
        _dir: dir,
    }
}

fn client(addr: SocketAddr, signed: bool) -> Client {
    let hosts = StaticResolver::new();
    for n in [
        DOMAIN.to_string(),
        format!("aws-alibaba-oss.{DOMAIN}"),
        format!("other.{DOMAIN}"),
    ] {
        hosts.set(&n, vec![IpAddr::V4(Ipv4Addr::LOCALHOST)]);
    }
    Client {
        endpoint: DOMAIN.into(),
        port: addr.port(),
        signer: signed.then(|| Signer {
            access_key: "AKTEST".into(),
            secret_key: "SKTEST".into(),
            region: "oss-ap-northeast-1".into(),
        }),
        resolver: Arc::new(hosts),
        timeout: Duration::from_secs(30),
        tls: None,
        connect_to: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_virtual_hosted_requests_work_and_carry_a_request_id() {
    let s = start_store("store-signed", true).await;
    let c = client(s.addr, true);
    let body = Bytes::from_static(b"hello oss\n");
    c.put_object("aws-alibaba-oss", "dir/a b.txt", body.clone(), None)
        .await
        .unwrap();
    assert_eq!(
        c.get_object("aws-alibaba-oss", "dir/a b.txt")
            .await
            .unwrap(),
        body
    );
    let objs = c.list_objects("aws-alibaba-oss", 10).await.unwrap();
    assert_eq!(
        objs.iter().map(|o| o.key.as_str()).collect::<Vec<_>>(),
        ["dir/a b.txt"]
    );
    let r = c
        .request(
            "GET",
            Some("aws-alibaba-oss"),
            "dir/a b.txt",
            &[],
            Bytes::new(),
            None,
        )
        .await
        .unwrap();
    let id = r.header("x-oss-request-id").expect("x-oss-request-id");
    assert_eq!(id.len(), 24);
    assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));
    // Unsigned requests are refused when keys are set, with an OSS-style id.
    match client(s.addr, false)
        .list_objects("aws-alibaba-oss", 1)
        .await
    {
        Err(ClientError::Status {
            status: 403,
            code,
            request_id,
            ..
        }) => {
            assert_eq!(code, "AccessDenied");
            assert_eq!(request_id.len(), 24);
        }
        other => panic!("anonymous request not refused: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_altered_in_transit_is_rejected_and_not_stored() {
    let s = start_store("store-tamper", true).await;
    let signer = Signer {
        access_key: "AKTEST".into(),
        secret_key: "SKTEST".into(),
        region: "oss-ap-northeast-1".into(),
    };
    let host = format!("aws-alibaba-oss.{DOMAIN}:{}", s.addr.port());
    let signed_body = b"the original body";
    let sent_body = b"the altered! body";
    let sig = signer.sign(
        "PUT",
        &host,
        "/tampered.txt",
        &[],
        &sha256_hex(signed_body),
        ossrelay::observe::time::Civil::now(),
    );
    let req = format!(
        "PUT /tampered.txt HTTP/1.1\r\nHost: {host}\r\nx-amz-date: {}\r\nx-amz-content-sha256: {}\r\nAuthorization: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        sig.amz_date, sig.content_sha256, sig.authorization, sent_body.len()
    );
    let mut tcp = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    tcp.write_all(req.as_bytes()).await.unwrap();
    tcp.write_all(sent_body).await.unwrap();
    let mut resp = String::new();
    tcp.read_to_string(&mut resp).await.unwrap();
    let status: u16 = resp.split_whitespace().nth(1).unwrap().parse().unwrap();
    assert!(status >= 400, "altered body accepted: {resp}");
    match client(s.addr, true)
        .get_object("aws-alibaba-oss", "tampered.txt")
        .await
    {
        Err(ClientError::Status { status: 404, .. }) => {}
        other => panic!("altered object was stored: {other:?}"),
    }
    // The same request with the body it was signed for is accepted.
    let mut tcp = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    tcp.write_all(req.as_bytes()).await.unwrap();
    tcp.write_all(signed_body).await.unwrap();
    let mut resp = String::new();
    tcp.read_to_string(&mut resp).await.unwrap();
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn path_style_and_anonymous_access_without_keys() {
    let s = start_store("store-anon", false).await;
    let mut tcp = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    let req = format!("GET /aws-alibaba-oss?list-type=2 HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nConnection: close\r\n\r\n", s.addr.port());
    tcp.write_all(req.as_bytes()).await.unwrap();
    let mut resp = String::new();
    tcp.read_to_string(&mut resp).await.unwrap();
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(resp.contains("<Name>aws-alibaba-oss</Name>"), "{resp}");
    assert!(resp.to_ascii_lowercase().contains("x-oss-request-id:"));
    // OSS's XML has no namespace (Alibaba's SDKs find nothing under one).
    assert!(!resp.contains("xmlns="), "{resp}");
    let (head, body) = resp.split_once("\r\n\r\n").unwrap();
    let length = head.lines().find_map(|l| {
        l.to_ascii_lowercase()
            .strip_prefix("content-length: ")
            .map(str::to_string)
    });
    if let Some(n) = length {
        assert_eq!(n.trim().parse::<usize>().unwrap(), body.len(), "{resp}");
    }
}

/// One raw request with `Connection: close`; the whole response.
async fn raw(addr: SocketAddr, head: &str, body: &[u8]) -> String {
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(head.as_bytes()).await.unwrap();
    tcp.write_all(body).await.unwrap();
    let mut resp = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut resp)).await;
    String::from_utf8_lossy(&resp).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_never_leave_their_bucket() {
    let s = start_store("store-dots", false).await;
    let root = s._dir.0.clone();
    std::fs::create_dir_all(root.join("attacker")).unwrap();
    std::fs::write(root.join("attacker/x.txt"), b"secret of another bucket").unwrap();
    let host = format!("Host: {DOMAIN}\r\nConnection: close");
    let got = raw(
        s.addr,
        &format!("GET /aws-alibaba-oss/../attacker/x.txt HTTP/1.1\r\n{host}\r\n\r\n"),
        b"",
    )
    .await;
    assert!(got.starts_with("HTTP/1.1 400"), "{got}");
    assert!(!got.contains("secret of another bucket"), "{got}");
    let put = raw(
        s.addr,
        &format!("PUT /aws-alibaba-oss/%2e%2e/attacker/planted.txt HTTP/1.1\r\n{host}\r\nContent-Length: 5\r\n\r\n"),
        b"owned",
    )
    .await;
    assert!(put.starts_with("HTTP/1.1 400"), "{put}");
    assert!(put.contains("<Code>InvalidArgument</Code>"), "{put}");
    let vhost = raw(
        s.addr,
        &format!("GET /../attacker/x.txt HTTP/1.1\r\nHost: aws-alibaba-oss.{DOMAIN}\r\nConnection: close\r\n\r\n"),
        b"",
    )
    .await;
    assert!(vhost.starts_with("HTTP/1.1 400"), "{vhost}");
    let copy = raw(
        s.addr,
        &format!("PUT /aws-alibaba-oss/copied.txt HTTP/1.1\r\n{host}\r\nx-amz-copy-source: aws-alibaba-oss/../attacker/x.txt\r\nContent-Length: 0\r\n\r\n"),
        b"",
    )
    .await;
    assert!(copy.starts_with("HTTP/1.1 400"), "{copy}");
    assert!(
        !root.join("attacker/planted.txt").exists(),
        "a key escaped its bucket"
    );
    assert!(!root.join("aws-alibaba-oss/copied.txt").exists());
    // Dots inside a name are an ordinary key.
    let ok = raw(
        s.addr,
        &format!("PUT /aws-alibaba-oss/a..b.txt HTTP/1.1\r\n{host}\r\nContent-Length: 2\r\n\r\n"),
        b"ok",
    )
    .await;
    assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
    assert_eq!(
        std::fs::read(root.join("aws-alibaba-oss/a..b.txt")).unwrap(),
        b"ok"
    );
}

/// Runs `aws` against `endpoint` with the store's test keys and no user
/// config; its exit code and everything it printed.
fn aws(endpoint: &str, args: &[String]) -> (Option<i32>, String) {
    let out = Command::new("aws")
        .args(["--endpoint-url", endpoint, "--region", "oss-ap-northeast-1"])
        .args(args)
        .env("AWS_ACCESS_KEY_ID", "AKTEST")
        .env("AWS_SECRET_ACCESS_KEY", "SKTEST")
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aws_s3_sync_gets_every_key_back_with_url_encoded_listings() {
    if Command::new("aws").arg("--version").output().is_err() {
        crate::helpers::skip_outside_ci(
            "CI must have awscli",
            format_args!("SKIPPED url-encoded listings: aws (awscli) not installed"),
        );
        return;
    }
    let s = start_store("store-sync", true).await;
    let work = TempDir::new("store-sync-local");
    let keys = [
        "a+b.txt",
        "x%41.txt",
        "with space.txt",
        "dir/é-ü.txt",
        "dir/plus+and%25 both.txt",
    ];
    let endpoint = format!("http://127.0.0.1:{}", s.addr.port());
    let (src, dst) = (work.0.join("src"), work.0.join("dst"));
    std::fs::create_dir_all(src.join("dir")).unwrap();
    for k in keys {
        std::fs::write(src.join(k), format!("body of {k}")).unwrap();
    }
    let sync = |from: &std::path::Path, to: &std::path::Path, up: bool| {
        let (from, to) = (from.display().to_string(), to.display().to_string());
        let bucket = "s3://aws-alibaba-oss".to_string();
        let args = if up {
            vec!["s3".into(), "sync".into(), from, bucket]
        } else {
            vec!["s3".into(), "sync".into(), bucket, to]
        };
        let endpoint = endpoint.clone();
        tokio::task::spawn_blocking(move || aws(&endpoint, &args))
    };
    let (code, out) = sync(&src, &dst, true).await.unwrap();
    assert_eq!(code, Some(0), "upload: {out}");
    let (code, out) = sync(&src, &dst, false).await.unwrap();
    assert_eq!(code, Some(0), "download: {out}");
    for k in keys {
        assert_eq!(
            std::fs::read_to_string(dst.join(k)).unwrap_or_default(),
            format!("body of {k}"),
            "{k} came back under its own name: {out}"
        );
    }
}

/// Runs tests/it/oss_sdks.py (oss2 with signatures V1 and V4,
/// alibabacloud-oss-v2 with V4 and V1: the `modes` listed) against
/// `endpoint`.
fn oss_sdks(endpoint: &str, secret: &str, modes: &str) -> (Option<i32>, String) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/it/oss_sdks.py");
    let out = Command::new("python3")
        .args([
            script,
            endpoint,
            "aws-alibaba-oss",
            "AKTEST",
            secret,
            "ap-northeast-1",
            modes,
        ])
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alibabas_sdks_work_against_the_store_directly_and_through_the_relay() {
    let have = Command::new("python3")
        .args(["-c", "import oss2, alibabacloud_oss_v2"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !have {
        crate::helpers::skip_outside_ci(
            "CI must have oss2 and alibabacloud-oss-v2",
            format_args!("SKIPPED Alibaba SDKs: pip install oss2 alibabacloud-oss-v2"),
        );
        return;
    }
    let s = start_store("store-sdks", true).await;
    let direct = format!("http://127.0.0.1:{}", s.addr.port());
    let relay = crate::helpers::Relay::start(
        crate::helpers::relay_config(&format!(
            "[[relay]]\nname = \"sdk-relay\"\nlisten = \"127.0.0.1:0\"\nupstream = \"{}\"\n",
            s.addr
        )),
        crate::helpers::system(),
    )
    .await;
    let via_relay = format!("http://127.0.0.1:{}", relay.addr.port());
    // Every SDK and signature directly; through the relay one V4 and one
    // V1 client (the relay passes bytes, so the rest add only time).
    let all = "oss2-v1,oss2-v4,oss-v2-v4,oss-v2-v1";
    for (endpoint, modes) in [(direct.clone(), all), (via_relay, "oss2-v4,oss-v2-v1")] {
        let (code, out) = tokio::task::spawn_blocking(move || oss_sdks(&endpoint, "SKTEST", modes))
            .await
            .unwrap();
        assert_eq!(code, Some(0), "{out}");
        assert!(out.contains("all SDK steps passed"), "{out}");
    }
    // A wrong secret is refused, with OSS's error code.
    let (code, out) = tokio::task::spawn_blocking(move || oss_sdks(&direct, "WRONG", "oss2-v1"))
        .await
        .unwrap();
    assert_ne!(code, Some(0), "{out}");
    assert!(out.contains("SignatureDoesNotMatch"), "{out}");
    relay.shutdown().await;
}

#[test]
fn store_cli_errors_name_the_path_and_address() {
    let out = Command::new(bin())
        .args([
            "store",
            "--root",
            "/nonexistent/oss-root",
            "--listen",
            "127.0.0.1:0",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/oss-root"));
    let dir = TempDir::new("store-inuse");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = Command::new(bin())
        .args(["store", "--listen", &addr, "--root"])
        .arg(&dir.0)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&addr) && err.contains("address already in use"),
        "{err}"
    );
}

#[test]
fn demo_passes_every_step() {
    let out = Command::new(bin()).arg("demo").output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("demo: every step passed"), "{stdout}");
    // The steps are named after ossutil's commands, and the demo says
    // plainly that ossutil itself is not run.
    assert!(stdout.contains("ossutil is not run"), "{stdout}");
    assert!(
        stdout.contains("oss://aws-alibaba-oss/test2.txt"),
        "{stdout}"
    );
    let accepted = stdout
        .lines()
        .filter(|l| {
            l.contains(": accepted TCP ") && l.contains(" from 127.0.0.1:") && l.contains(" mode=0")
        })
        .count();
    assert!(accepted >= 6, "{stdout}");
    let sent = stdout
        .lines()
        .find_map(|l| l.strip_prefix("sha256 sent     "))
        .unwrap();
    let got = stdout
        .lines()
        .find_map(|l| l.strip_prefix("sha256 received "))
        .unwrap();
    assert_eq!(sent, got);
}

#[test]
fn the_store_logs_json_when_asked() {
    use std::io::{BufRead, BufReader};
    let dir = TempDir::new("store-json");
    let mut child = Command::new(bin())
        .args(["store", "--root"])
        .arg(&dir.0)
        .args(["--listen", "127.0.0.1:0", "--log-format", "json"])
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    let read = child
        .stderr
        .take()
        .map(|e| BufReader::new(e).read_line(&mut line));
    let _ = child.kill();
    let _ = child.wait();
    assert!(matches!(read, Some(Ok(n)) if n > 0), "no log line");
    let v: serde_json::Value =
        serde_json::from_str(line.trim()).unwrap_or_else(|e| panic!("{e}: {line}"));
    assert!(
        v["message"]
            .as_str()
            .unwrap_or("")
            .contains("store: serving"),
        "{line}"
    );
}

/// Whether `tool` is on PATH.
fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
        .unwrap_or(false)
}

/// `demo --keep` prints client command lines for aws, s3cmd and rclone.
/// Each is run exactly as printed (continuation lines joined, as a shell
/// would) and must list the demo's object; the relay's log lines for those
/// clients must then appear on the demo's stdout, and Ctrl-C ends it.
#[test]
fn demo_keep_prints_client_lines_that_work_and_follows_the_log() {
    use std::io::BufRead;
    let missing: Vec<_> = ["aws", "s3cmd", "rclone"]
        .into_iter()
        .filter(|t| !on_path(t))
        .collect();
    if !missing.is_empty() {
        crate::helpers::skip_outside_ci(
            "demo --keep client lines: a client is missing",
            format_args!("demo --keep client lines: {missing:?} not installed"),
        );
        return;
    }
    let mut cmd = Command::new(bin());
    cmd.args(["demo", "--keep"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null());
    let child = cmd.spawn().unwrap();
    let mut demo = crate::helpers::Running::adopt(&cmd, child);
    let stdout = demo.child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let next = |what: &str| {
        rx.recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|e| panic!("demo --keep: no line while waiting for {what}: {e}"))
    };
    // Everything up to the instructions' last line.
    let mut printed = Vec::new();
    loop {
        let line = next("the client lines");
        if line.starts_with("Relay log lines for your clients follow") {
            break;
        }
        printed.push(line);
    }
    let start = printed
        .iter()
        .position(|l| l.starts_with("--keep:"))
        .expect("no --keep section");
    // The command lines: indented, starting with a client or its env, with
    // `\` continuations joined.
    let mut commands: Vec<String> = Vec::new();
    let mut open = false;
    for line in &printed[start..] {
        let text = line.trim();
        if open {
            let last = commands.last_mut().unwrap();
            last.push(' ');
            last.push_str(text.trim_end_matches('\\'));
        } else if line.starts_with("    ")
            && ["aws ", "s3cmd ", "rclone ", "AWS_ACCESS_KEY_ID="]
                .iter()
                .any(|p| text.starts_with(p))
        {
            commands.push(text.trim_end_matches('\\').to_string());
        } else {
            continue;
        }
        open = text.ends_with('\\');
    }
    assert_eq!(commands.len(), 3, "{commands:#?}\n{}", printed.join("\n"));
    for c in &commands {
        // AWS_CA_BUNDLE (set on this machine for HTTPS) breaks rclone's
        // plain-http transport; a user's shell does not have it.
        let out = Command::new("sh")
            .args(["-c", c])
            .env_remove("AWS_CA_BUNDLE")
            .env("HOME", std::env::temp_dir())
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && text.contains("test2.txt"),
            "{c}\nexit {:?}\n{text}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // The relay's lines for those clients follow on stdout.
    let mut accepted = 0;
    while accepted < commands.len() {
        if next("the clients' relay log lines").contains(": accepted TCP ") {
            accepted += 1;
        }
    }
    // SAFETY: kill(2) on the PID of a child we spawned and still own.
    let rc = unsafe { libc::kill(demo.child.id() as libc::pid_t, libc::SIGINT) };
    assert_eq!(rc, 0);
    let status = demo
        .exit_within(Duration::from_secs(10))
        .expect("demo --keep did not stop on SIGINT");
    assert!(status.success(), "{status:?}");
}
