//! PROXY protocol: Debian's HAProxy (`send-proxy-v2`) in front of ossrelay,
//! ossrelay sending v1 to an upstream that records it, and spoofed or
//! missing headers refused.

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::*;

fn relay_cfg(name: &str, up: SocketAddr, pp: &str) -> ossrelay::config::RelayConfig {
    relay_config(&format!("[[relay]]\nname = \"{name}\"\nlisten = \"127.0.0.1:0\"\nupstream = \"{up}\"\nproxy_protocol = {{ {pp} }}\n"))
}

async fn echo_once(addr: SocketAddr, msg: &[u8]) -> (u16, Vec<u8>) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let port = s.local_addr().unwrap().port();
    s.write_all(msg).await.unwrap();
    s.shutdown().await.unwrap();
    let mut got = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut got)).await;
    (port, got)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn haproxy_send_proxy_v2_gives_the_real_client() {
    if Command::new("haproxy").arg("-v").output().is_err() {
        skip_outside_ci(
            "CI must install haproxy",
            format_args!("haproxy_send_proxy_v2_gives_the_real_client: haproxy not installed"),
        );
        return;
    }
    let up = echo_upstream().await;
    let relay = Relay::start(
        relay_cfg(
            "t-pp-haproxy",
            up,
            "accept = \"v2\", accept_from = [\"127.0.0.1\"]",
        ),
        system(),
    )
    .await;
    let dir = TempDir::new("pp-haproxy");
    let port = free_port();
    let cfg = dir.0.join("haproxy.cfg");
    std::fs::write(
        &cfg,
        format!("global\n  maxconn 100\ndefaults\n  mode tcp\n  timeout connect 5s\n  timeout client 30s\n  timeout server 30s\nlisten t\n  bind 127.0.0.1:{port}\n  server s1 {} send-proxy-v2\n", relay.addr),
    )
    .unwrap();
    let _h = spawn_until_ready(
        Command::new("haproxy").args(["-db", "-f"]).arg(&cfg),
        &dir.0.join("haproxy.stderr"),
        Ready::Connect(port),
    );
    // The readiness probe above also went through; find our own record.
    let (client_port, got) =
        echo_once(SocketAddr::from(([127, 0, 0, 1], port)), b"via haproxy\n").await;
    assert_eq!(got, b"via haproxy\n");
    let want = format!("127.0.0.1:{client_port}");
    let mut found = false;
    for _ in 0..300 {
        if access_records("t-pp-haproxy")
            .iter()
            .any(|r| r["client"] == want.as_str() && r["bytes_from_client"] == 12)
        {
            found = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        found,
        "the record names the client behind haproxy ({want}): {:?}",
        access_records("t-pp-haproxy")
    );
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ossrelay_sends_v1_and_refuses_spoofed_or_missing_headers() {
    let (up, seen) = recording_upstream(Reply::Echo).await;
    let sender = Relay::start(relay_cfg("t-pp-send", up, "send = \"v1\""), system()).await;
    let (port, got) = echo_once(sender.addr, b"data").await;
    let header = format!(
        "PROXY TCP4 127.0.0.1 127.0.0.1 {port} {}\r\n",
        sender.addr.port()
    );
    assert_eq!(
        String::from_utf8_lossy(&seen.lock().unwrap()),
        format!("{header}data")
    );
    assert_eq!(
        &got[header.len()..],
        b"data",
        "the echo carries the header back too"
    );
    sender.shutdown().await;

    // Only 10.0.0.0/8 may send headers; this client is 127.0.0.1.
    let (up2, seen2) = recording_upstream(Reply::Echo).await;
    let strict = Relay::start(
        relay_cfg(
            "t-pp-spoof",
            up2,
            "accept = \"v1\", accept_from = [\"10.0.0.0/8\"]",
        ),
        system(),
    )
    .await;
    let (_, got) = echo_once(
        strict.addr,
        b"PROXY TCP4 1.2.3.4 127.0.0.1 1111 80\r\nspoofed",
    )
    .await;
    assert!(got.is_empty(), "spoofed header relayed: {got:?}");
    strict.shutdown().await;
    // A listed source without a header is a violation too.
    let listed = Relay::start(
        relay_cfg(
            "t-pp-missing",
            up2,
            "accept = \"v1\", accept_from = [\"127.0.0.1\"]",
        ),
        system(),
    )
    .await;
    let (_, got) = echo_once(listed.addr, b"GET / HTTP/1.1\r\n\r\n").await;
    assert!(got.is_empty());
    assert!(
        seen2.lock().unwrap().is_empty(),
        "nothing reached the upstream"
    );
    let rec = wait_access("t-pp-missing", 1).await;
    assert_eq!(rec[0]["reason"], "bad-request");
    listed.shutdown().await;
}
