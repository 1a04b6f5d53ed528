//! The http gateway's pool of idle upstream connections: no response ever
//! reaches the wrong client, an upstream that closes idle connections at
//! random fails no request, and a connection that carried one client's
//! PROXY header is never given to another.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::helpers::*;

async fn gateway(name: &str, up: SocketAddr, extra: &str) -> Relay {
    let toml = format!(
        "[[relay]]\nname = \"{name}\"\nprotocol = \"http\"\nlisten = \"127.0.0.1:0\"\nroutes = [{{ host = \"oss.test\", upstream = \"{up}\" }}]\n{extra}\n"
    );
    Relay::start(relay_config(&toml), system()).await
}

/// One request on its own connection (`Connection: close`); returns the
/// status and the body.
async fn once(relay: SocketAddr, method: &str, path: &str, body: &[u8]) -> (u16, Vec<u8>) {
    let mut s = TcpStream::connect(relay).await.unwrap();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: oss.test\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(body).await.unwrap();
    let mut got = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), s.read_to_end(&mut got))
        .await
        .expect("a response within 30 s")
        .unwrap();
    let end = got
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no head in {:?}", String::from_utf8_lossy(&got)));
    let status = std::str::from_utf8(&got[9..12]).unwrap().parse().unwrap();
    (status, got[end + 4..].to_vec())
}

/// Deterministic per-client bytes.
#[cfg(feature = "store")]
fn body(i: usize, len: usize) -> Vec<u8> {
    let mut x = 0x9E37_79B9_7F4A_7C15u64 ^ i as u64;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

#[cfg(feature = "store")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_clients_each_get_their_own_bodies_back() {
    use sha2_dev::{Digest, Sha256};
    let store = crate::store::start_store("pool-store", false).await;
    let relay = gateway("t-pool-sha", store.addr, "").await;
    let mut tasks = Vec::new();
    for i in 0..100 {
        let addr = relay.addr;
        tasks.push(tokio::spawn(async move {
            // Every tenth body is long enough to be spliced.
            let len = if i % 10 == 0 {
                512 * 1024 + i
            } else {
                48 * 1024 + i
            };
            let mine = body(i, len);
            let path = format!("/aws-alibaba-oss/client-{i}.bin");
            for round in 0..3 {
                let (st, _) = once(addr, "PUT", &path, &mine).await;
                assert_eq!(st, 200, "client {i} PUT {round}");
                let (st, got) = once(addr, "GET", &path, b"").await;
                assert_eq!(st, 200, "client {i} GET {round}");
                assert_eq!(
                    Sha256::digest(&got),
                    Sha256::digest(&mine),
                    "client {i} got another body in round {round}"
                );
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let reused = records("t-pool-sha")
        .iter()
        .filter(|r| r["event"] == "request" && r["upstream_reused"] == true)
        .count();
    assert!(reused > 100, "the pool served {reused} of 600 requests");
    relay.shutdown().await;
}

/// An upstream that answers each request with `ok` and, after a third of
/// its responses, waits 0-2 ms and closes the connection: idle pooled
/// connections die at random, as behind a short keep-alive timeout.
async fn flaky_upstream() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        let mut seed = 0x2545_F491_4F6C_DD1Du64;
        while let Ok((mut s, _)) = l.accept().await {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let mut x = seed;
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                        match s.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let end = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
                    buf.drain(..end);
                    if s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                        .await
                        .is_err()
                    {
                        return;
                    }
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    if x.is_multiple_of(3) {
                        tokio::time::sleep(Duration::from_micros(x % 2000)).await;
                        return;
                    }
                }
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_closing_idle_connections_at_random_fails_no_request() {
    let up = flaky_upstream().await;
    let relay = gateway("t-pool-flaky", up, "").await;
    let mut tasks = Vec::new();
    for w in 0..8 {
        let addr = relay.addr;
        tasks.push(tokio::spawn(async move {
            let mut failed = Vec::new();
            for i in 0..1250 {
                let (st, got) = once(addr, "GET", &format!("/b/{w}-{i}"), b"").await;
                if st != 200 || got != b"ok" {
                    failed.push((i, st));
                }
            }
            failed
        }));
    }
    let mut failed = Vec::new();
    for t in tasks {
        failed.extend(t.await.unwrap());
    }
    assert!(
        failed.is_empty(),
        "{} of 10 000 failed: {:?}",
        failed.len(),
        &failed[..failed.len().min(10)]
    );
    let reused = records("t-pool-flaky")
        .iter()
        .filter(|r| r["event"] == "request" && r["upstream_reused"] == true)
        .count();
    assert!(reused > 1000, "the pool served only {reused} requests");
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_protocol_upstream_never_gets_a_reused_connection() {
    let (up, seen) = recording_upstream(Reply::HttpOk).await;
    let relay = gateway("t-pool-pp", up, "proxy_protocol = { send = \"v1\" }").await;
    for i in 0..20 {
        let (st, _) = once(relay.addr, "GET", &format!("/b/{i}"), b"").await;
        assert_eq!(st, 200);
    }
    let seen = String::from_utf8_lossy(&seen.lock().unwrap()).into_owned();
    assert_eq!(
        seen.matches("PROXY TCP4 127.0.0.1 ").count(),
        20,
        "one PROXY header (one connection) per client connection: {seen}"
    );
    assert!(
        seen.contains("Connection: close"),
        "not pooled, so not rewritten"
    );
    relay.shutdown().await;
}
