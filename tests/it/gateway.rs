//! `protocol = "http"` on raw sockets: byte-exact forwarding, pipelining
//! across the bucket policy, every hostile framing case, and the head
//! timeout. The upstream records every byte it receives, so "never
//! forwarded" is checked where it matters.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::*;

async fn gateway(name: &str, up: SocketAddr, extra: &str) -> Relay {
    let toml = format!(
        "[[relay]]\nname = \"{name}\"\nprotocol = \"http\"\nlisten = \"127.0.0.1:0\"\nroutes = [{{ host = \"*.oss.test\", upstream = \"{up}\" }}, {{ host = \"oss.test\", upstream = \"{up}\" }}]\nbuckets = [\"good\", \"logs-*\"]\n{extra}\n"
    );
    Relay::start(relay_config(&toml), system()).await
}

/// Sends `data`, half-closes, and returns everything the relay sent back.
async fn exchange(addr: SocketAddr, data: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(data).await.unwrap();
    let _ = s.shutdown().await;
    let mut got = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut got)).await;
    String::from_utf8_lossy(&got).into_owned()
}

async fn requests(name: &str, n: usize) -> Vec<serde_json::Value> {
    for _ in 0..500 {
        let r: Vec<_> = records(name)
            .into_iter()
            .filter(|v| v["event"] == "request")
            .collect();
        if r.len() >= n {
            return r;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{name}: fewer than {n} request records");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allowed_requests_arrive_byte_for_byte_and_denied_ones_never() {
    let (up, seen) = recording_upstream(Reply::HttpOk).await;
    let relay = gateway("t-gw-exact", up, "").await;
    // Odd casing, header order, a signature-like header and a chunked body:
    // all must reach the upstream unchanged.
    let first = b"PUT /dir/k.bin?partNumber=1 HTTP/1.1\r\nhost: good.OSS.test\r\nX-Amz-Date: 20261129T000000Z\r\nauthorization: AWS4-HMAC-SHA256 Credential=AK/x, Signature=abc\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n";
    let second = b"GET /k HTTP/1.1\r\nHost: attacker.oss.test\r\n\r\n";
    let mut both = first.to_vec();
    both.extend_from_slice(second);
    let reply = exchange(relay.addr, &both).await;
    assert!(
        reply.starts_with("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"),
        "{reply}"
    );
    let denied = &reply["HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok".len()..];
    assert!(denied.starts_with("HTTP/1.1 403 Forbidden\r\n"), "{denied}");
    assert!(
        denied.contains("<Code>AccessDenied</Code>")
            && denied.contains("<BucketName>attacker</BucketName>")
    );
    assert!(denied.contains("Connection: close"));
    assert_eq!(
        seen.lock().unwrap().as_slice(),
        first.as_slice(),
        "upstream got exactly the allowed request"
    );
    let rec = requests("t-gw-exact", 2).await;
    assert_eq!(
        (
            rec[0]["bucket"].as_str(),
            rec[0]["status"].as_u64(),
            rec[0]["decision"].as_str()
        ),
        (Some("good"), Some(200), Some("allowed"))
    );
    assert_eq!(rec[0]["method"], "PUT");
    assert_eq!(rec[0]["key"], "dir/k.bin");
    assert_eq!(rec[0]["bytes_from_client"], first.len() as u64);
    assert_eq!(
        (
            rec[1]["bucket"].as_str(),
            rec[1]["status"].as_u64(),
            rec[1]["decision"].as_str()
        ),
        (Some("attacker"), Some(403), Some("denied"))
    );
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn path_style_service_and_unrouted_hosts_are_policed() {
    let (up, seen) = recording_upstream(Reply::HttpOk).await;
    let relay = gateway("t-gw-path", up, "").await;
    let ok = exchange(
        relay.addr,
        b"GET /logs-2026/a HTTP/1.1\r\nHost: oss.test\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
    let svc = exchange(relay.addr, b"GET / HTTP/1.1\r\nHost: oss.test\r\n\r\n").await;
    assert!(
        svc.starts_with("HTTP/1.1 403") && svc.contains("allow_service"),
        "{svc}"
    );
    let other = exchange(relay.addr, b"GET / HTTP/1.1\r\nHost: evil.example\r\n\r\n").await;
    assert!(other.starts_with("HTTP/1.1 421"), "{other}");
    let seen = String::from_utf8_lossy(&seen.lock().unwrap()).into_owned();
    assert_eq!(
        seen.matches("HTTP/1.1\r\n").count(),
        1,
        "only the allowed request went up: {seen}"
    );
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_framing_gets_400_and_is_never_forwarded() {
    let (up, seen) = recording_upstream(Reply::HttpOk).await;
    let relay = gateway("t-gw-hostile", up, "").await;
    let big = format!(
        "GET / HTTP/1.1\r\nHost: good.oss.test\r\nX-Big: {}\r\n\r\n",
        "a".repeat(70 * 1024)
    );
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("CL+TE", b"POST / HTTP/1.1\r\nHost: good.oss.test\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n".to_vec()),
        ("differing CL", b"POST / HTTP/1.1\r\nHost: good.oss.test\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!".to_vec()),
        ("obs-fold", b"GET / HTTP/1.1\r\nHost: good.oss.test\r\nX-A: 1\r\n 2\r\n\r\n".to_vec()),
        ("missing Host", b"GET / HTTP/1.1\r\nX-A: 1\r\n\r\n".to_vec()),
        ("duplicate Host", b"GET / HTTP/1.1\r\nHost: good.oss.test\r\nHost: evil.oss.test\r\n\r\n".to_vec()),
        ("absolute-form mismatch", b"GET http://evil.oss.test/ HTTP/1.1\r\nHost: good.oss.test\r\n\r\n".to_vec()),
        ("head over 64 KiB", big.into_bytes()),
        ("non-HTTP bytes", b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03".to_vec()),
    ];
    for (name, data) in &cases {
        let reply = exchange(relay.addr, data).await;
        assert!(
            reply.starts_with("HTTP/1.1 400 Bad Request\r\n"),
            "{name}: {reply}"
        );
        assert!(reply.contains("Connection: close"), "{name}");
    }
    // A bad chunk size arrives after the head: the upstream sees a partial
    // request it cannot act on, and the client gets 400.
    let reply = exchange(
        relay.addr,
        b"PUT /k HTTP/1.1\r\nHost: good.oss.test\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    )
    .await;
    assert!(reply.starts_with("HTTP/1.1 400"), "bad chunk size: {reply}");
    let seen = seen.lock().unwrap().clone();
    assert!(
        !seen.windows(4).any(|w| w == b"zz\r\n"),
        "the bad chunk was not forwarded"
    );
    let whole_requests = String::from_utf8_lossy(&seen).matches("\r\n\r\n").count();
    assert!(
        whole_requests <= 1,
        "only the chunked head may have gone up: {:?}",
        String::from_utf8_lossy(&seen)
    );
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_heads_are_cut_off() {
    let (up, seen) = recording_upstream(Reply::HttpOk).await;
    let relay = gateway("t-gw-slow", up, "header_timeout = \"1s\"").await;
    let mut s = TcpStream::connect(relay.addr).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: good.oss.test\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    let r = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut got)).await;
    assert!(r.is_ok(), "closed within the timeout");
    assert!(
        String::from_utf8_lossy(&got).starts_with("HTTP/1.1 408"),
        "{}",
        String::from_utf8_lossy(&got)
    );
    assert!(seen.lock().unwrap().is_empty());
    relay.shutdown().await;
}

async fn sni_gateway(name: &str, up: SocketAddr) -> Relay {
    let toml = format!(
        "[[relay]]\nname = \"{name}\"\nprotocol = \"tls\"\nlisten = \"127.0.0.1:0\"\nroutes = [{{ host = \"*.oss.test\", upstream = \"{up}\" }}]\nbuckets = [\"good\"]\n"
    );
    Relay::start(relay_config(&toml), system()).await
}

/// A ClientHello for `name`, as one TLS record.
fn client_hello(name: &str) -> Vec<u8> {
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(rustls::RootCertStore::empty())
    .with_no_client_auth();
    let mut conn = rustls::ClientConnection::new(
        Arc::new(cfg),
        rustls::pki_types::ServerName::try_from(name.to_string()).unwrap(),
    )
    .unwrap();
    let mut out = Vec::new();
    conn.write_tls(&mut out).unwrap();
    out
}

/// The same handshake message re-framed as two TLS records.
fn two_records(hello: &[u8]) -> Vec<u8> {
    let payload = &hello[5..];
    let (a, b) = payload.split_at(payload.len() / 2);
    let mut out = Vec::new();
    for part in [a, b] {
        out.extend_from_slice(&hello[..3]);
        out.extend_from_slice(&(part.len() as u16).to_be_bytes());
        out.extend_from_slice(part);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sni_passthrough_routes_split_and_multi_record_hellos_byte_for_byte() {
    let (up, seen) = recording_upstream(Reply::HttpOk).await;
    let relay = sni_gateway("t-sni-raw", up).await;
    let hello = client_hello("good.oss.test");
    // Split across two reads.
    let mut s = TcpStream::connect(relay.addr).await.unwrap();
    s.write_all(&hello[..7]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    s.write_all(&hello[7..]).await.unwrap();
    for _ in 0..200 {
        if seen.lock().unwrap().len() >= hello.len() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        seen.lock().unwrap().as_slice(),
        hello.as_slice(),
        "replayed unchanged"
    );
    drop(s);
    // One handshake message over two records.
    let framed = two_records(&client_hello("good.oss.test"));
    let (up2, seen2) = recording_upstream(Reply::HttpOk).await;
    let relay2 = sni_gateway("t-sni-raw2", up2).await;
    let mut s = TcpStream::connect(relay2.addr).await.unwrap();
    s.write_all(&framed).await.unwrap();
    for _ in 0..200 {
        if seen2.lock().unwrap().len() >= framed.len() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(seen2.lock().unwrap().as_slice(), framed.as_slice());
    // A denied name gets a fatal access_denied alert and nothing goes up.
    let mut d = TcpStream::connect(relay.addr).await.unwrap();
    d.write_all(&client_hello("attacker.oss.test"))
        .await
        .unwrap();
    let mut got = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), d.read_to_end(&mut got)).await;
    assert_eq!(got, [0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 49]);
    assert_eq!(
        seen.lock().unwrap().len(),
        hello.len(),
        "denied hello not forwarded"
    );
    relay.shutdown().await;
    relay2.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openssl_s_client_through_sni_passthrough() {
    if std::process::Command::new("openssl")
        .arg("version")
        .output()
        .is_err()
    {
        skip_outside_ci(
            "CI must have openssl",
            format_args!("openssl_s_client_through_sni_passthrough: openssl not installed"),
        );
        return;
    }
    let dir = TempDir::new("sni-openssl");
    let pki = crate::pki::Pki::new(&dir.0);
    let up = crate::pki::tls_echo_server(&pki.certkey);
    let relay = sni_gateway("t-sni-openssl", SocketAddr::from(([127, 0, 0, 1], up))).await;
    let addr = relay.addr.to_string();
    let run = |name: Option<&'static str>| {
        let addr = addr.clone();
        tokio::task::spawn_blocking(move || {
            use std::io::Write;
            let mut cmd = std::process::Command::new("openssl");
            cmd.args(["s_client", "-connect", &addr, "-quiet"]);
            match name {
                Some(n) => cmd.args(["-servername", n]),
                None => cmd.arg("-noservername"),
            };
            let mut child = cmd
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            let _ = child.stdin.take().unwrap().write_all(b"through sni\n");
            let out = child.wait_with_output().unwrap();
            (
                String::from_utf8_lossy(&out.stdout).into_owned(),
                String::from_utf8_lossy(&out.stderr).to_lowercase(),
            )
        })
    };
    let (out, _) = run(Some("good.oss.test")).await.unwrap();
    assert!(out.contains("through sni"), "allowed name echoed: {out}");
    let (out, err) = run(Some("attacker.oss.test")).await.unwrap();
    assert!(
        !out.contains("through sni") && err.contains("access denied"),
        "{err}"
    );
    let (out, err) = run(None).await.unwrap();
    assert!(
        !out.contains("through sni") && err.contains("unrecognized name"),
        "{err}"
    );
    let rec: Vec<_> = records("t-sni-openssl")
        .into_iter()
        .filter(|v| v["event"] == "tls")
        .collect();
    assert!(
        rec.iter()
            .any(|r| r["host"] == "attacker.oss.test" && r["decision"] == "denied"),
        "{rec:?}"
    );
    relay.shutdown().await;
}

/// A CONNECT tunnel through the proxy at `proxy` to `target`, past the
/// relay's "established" reply.
async fn tunnel(proxy: std::net::SocketAddr, target: &str) -> TcpStream {
    let mut t = TcpStream::connect(proxy).await.unwrap();
    t.write_all(format!("CONNECT {target} HTTP/1.1\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut head = vec![0u8; "HTTP/1.0 200 Connection established\r\n\r\n".len()];
    t.read_exact(&mut head).await.unwrap();
    assert_eq!(head, b"HTTP/1.0 200 Connection established\r\n\r\n");
    t
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forward_proxy_applies_the_bucket_policy() {
    let (up, seen) = recording_upstream(Reply::HttpOk).await;
    let port = up.port();
    let toml = format!(
        "[[relay]]\nname = \"t-proxy-buckets\"\nprotocol = \"proxy\"\nlisten = \"127.0.0.1:0\"\nproxy_allow = [\"*.oss.test {port}\", \"oss.test {port}\"]\nbuckets = [\"good\"]\n"
    );
    let cfg = relay_config(&toml);
    let names = ossrelay::resolve::StaticResolver::new();
    for n in ["good.oss.test", "attacker.oss.test", "oss.test"] {
        names.set(n, vec!["127.0.0.1".parse().unwrap()]);
    }
    let relay = Relay::start(cfg, Arc::new(names)).await;
    let ok = exchange(
        relay.addr,
        format!("GET http://good.oss.test:{port}/k HTTP/1.1\r\nHost: good.oss.test:{port}\r\n\r\n")
            .as_bytes(),
    )
    .await;
    assert!(ok.contains("200 OK"), "{ok}");
    for target in [
        format!("attacker.oss.test:{port}/k"),
        format!("oss.test:{port}/attacker/k"),
    ] {
        let host = target.split('/').next().unwrap().to_string();
        let r = exchange(
            relay.addr,
            format!("GET http://{target} HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes(),
        )
        .await;
        assert!(
            r.starts_with("HTTP/1.1 403")
                && r.contains("<Code>AccessDenied</Code>")
                && r.contains("<BucketName>attacker</BucketName>"),
            "{target}: {r}"
        );
    }
    // Keep-alive: a second request on the same connection names another
    // bucket. It must not ride along unchecked.
    let two = format!(
        "GET http://good.oss.test:{port}/a HTTP/1.1\r\nHost: good.oss.test:{port}\r\n\r\nGET http://attacker.oss.test:{port}/b HTTP/1.1\r\nHost: attacker.oss.test:{port}\r\n\r\n"
    );
    let r = exchange(relay.addr, two.as_bytes()).await;
    assert!(r.starts_with("HTTP/1.1 200 OK"), "{r}");
    // Plain HTTP inside a tunnel cannot be policed request by request.
    let mut t = tunnel(relay.addr, &format!("good.oss.test:{port}")).await;
    t.write_all(b"GET /k HTTP/1.1\r\nHost: attacker.oss.test\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), t.read_to_end(&mut got))
        .await
        .expect("the relay closes a plain-HTTP tunnel at once")
        .unwrap();
    assert!(got.is_empty(), "{}", String::from_utf8_lossy(&got));
    // A tunnel whose TLS server name names another bucket than CONNECT did.
    let mut s = tunnel(relay.addr, &format!("good.oss.test:{port}")).await;
    s.write_all(&client_hello("attacker.oss.test"))
        .await
        .unwrap();
    let mut got = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut got)).await;
    assert_eq!(
        got,
        [0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 49],
        "access_denied alert"
    );
    let seen = String::from_utf8_lossy(&seen.lock().unwrap()).into_owned();
    assert_eq!(
        seen.matches("GET ").count(),
        2,
        "only the allowed requests went up: {seen}"
    );
    assert!(!seen.contains("attacker"), "{seen}");
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn path_style_dot_segments_are_refused_and_never_forwarded() {
    let (up, seen) = recording_upstream(Reply::HttpOk).await;
    let relay = gateway("t-gw-dots", up, "").await;
    for path in [
        "/good/../attacker/x.txt",
        "/good/%2e%2e/attacker/planted.txt",
        "/good/..%2Fattacker/x.txt",
    ] {
        let req = format!("GET {path} HTTP/1.1\r\nHost: oss.test\r\n\r\n");
        let reply = exchange(relay.addr, req.as_bytes()).await;
        assert!(
            reply.starts_with("HTTP/1.1 400 Bad Request\r\n"),
            "{path}: {reply}"
        );
        assert!(reply.contains("<Code>InvalidRequest</Code>"), "{reply}");
    }
    // A dot-segment inside a virtual-hosted key cannot change the bucket.
    let ok = exchange(
        relay.addr,
        b"GET /a/../b HTTP/1.1\r\nHost: good.oss.test\r\n\r\n",
    )
    .await;
    assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
    assert_eq!(
        seen.lock().unwrap().as_slice(),
        b"GET /a/../b HTTP/1.1\r\nHost: good.oss.test\r\n\r\n".as_slice(),
        "only the virtual-hosted request reached the upstream"
    );
    let rec = requests("t-gw-dots", 4).await;
    assert_eq!(rec[0]["status"], 400);
    assert_eq!(rec[0]["decision"], "bad-request");
    assert_eq!(rec[3]["decision"], "allowed");
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_name_the_mode_the_upstream_and_the_bytes_sent() {
    let (up, _seen) = recording_upstream(Reply::HttpOk).await;
    let relay = gateway("t-gw-records", up, "").await;
    let allowed = exchange(
        relay.addr,
        b"GET /k HTTP/1.1\r\nHost: good.oss.test\r\n\r\nGET /k HTTP/1.1\r\nHost: attacker.oss.test\r\n\r\n",
    )
    .await;
    let denied_len = allowed.len() - "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok".len();
    let rec = requests("t-gw-records", 2).await;
    assert_eq!(rec[0]["upstream"], up.to_string());
    assert_eq!(rec[1]["decision"], "denied");
    assert_eq!(rec[1]["upstream"], "-");
    assert_eq!(
        rec[1]["bytes_to_client"], denied_len as u64,
        "the 403 was sent"
    );
    let conn = wait_access("t-gw-records", 1).await;
    assert_eq!(conn[0]["protocol"], "http");
    assert_eq!(conn[0]["upstream"], up.to_string());
    assert_eq!(conn[0]["bytes_to_client"], allowed.len() as u64);
    relay.shutdown().await;
}

/// A long body of known length is spliced socket to socket: exactly its
/// bytes go up, and the pipelined request behind it stays whole and is
/// policed and answered on its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_bodies_go_up_exactly_and_the_request_behind_one_stays_whole() {
    let (up, seen) = recording_upstream(Reply::HttpOk).await;
    let relay = gateway("t-gw-splice", up, "").await;
    let body: Vec<u8> = (0..3 * 1024 * 1024 + 17u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let put = format!(
        "PUT /big HTTP/1.1\r\nHost: good.oss.test\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let get = b"GET /after HTTP/1.1\r\nHost: good.oss.test\r\n\r\n";
    let denied = b"GET /x HTTP/1.1\r\nHost: evil.oss.test\r\n\r\n";
    let mut s = TcpStream::connect(relay.addr).await.unwrap();
    // The head, a first slice of the body, then the rest with the next
    // two requests right behind it, as a pipelining client sends them.
    s.write_all(put.as_bytes()).await.unwrap();
    s.write_all(&body[..1000]).await.unwrap();
    let mut rest = body[1000..].to_vec();
    rest.extend_from_slice(get);
    rest.extend_from_slice(denied);
    let (mut r, mut w) = s.into_split();
    let writer = tokio::spawn(async move {
        w.write_all(&rest).await.unwrap();
        w
    });
    let mut got = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(20), r.read_to_end(&mut got)).await;
    drop(writer.await.unwrap());
    let got = String::from_utf8_lossy(&got);
    assert_eq!(got.matches("HTTP/1.1 200 OK").count(), 2, "{got}");
    assert!(got.contains("403"), "{got}");
    let mut want = put.into_bytes();
    want.extend_from_slice(&body);
    want.extend_from_slice(get);
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), want.len(), "bytes that reached the upstream");
    assert!(seen == want, "the upstream got other bytes than were sent");
    let reqs = requests("t-gw-splice", 3).await;
    assert_eq!(reqs[0]["key"], "big");
    let put_len = (want.len() - get.len()) as u64;
    assert_eq!(
        reqs[0]["bytes_from_client"].as_u64(),
        Some(put_len),
        "{}",
        reqs[0]
    );
    relay.shutdown().await;
}
