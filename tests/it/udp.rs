//! UDP relay behaviour: per-client sessions and large datagrams.

use std::net::SocketAddr;
use std::time::Duration;

use ossrelay::config::RelayConfig;
use sha2_dev::{Digest, Sha256};
use tokio::net::UdpSocket;

use crate::helpers::*;

async fn echo_server() -> SocketAddr {
    let s = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = s.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 65_536];
        while let Ok((n, from)) = s.recv_from(&mut buf).await {
            let _ = s.send_to(&buf[..n], from).await;
        }
    });
    addr
}

async fn recv(s: &UdpSocket) -> Vec<u8> {
    let mut buf = vec![0u8; 65_536];
    let n = tokio::time::timeout(Duration::from_secs(5), s.recv(&mut buf))
        .await
        .expect("reply")
        .unwrap();
    buf.truncate(n);
    buf
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interleaved_clients_each_get_only_their_replies() {
    let echo = echo_server().await;
    let cfg = RelayConfig::udp("u-sessions", local(), upstream(echo));
    let relay = Relay::start(cfg, system()).await;
    let mut clients = Vec::new();
    for _ in 0..3 {
        let c = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        c.connect(relay.addr).await.unwrap();
        clients.push(c);
    }
    // Send round-robin so the sessions interleave, then read each client's replies.
    for round in 0..20 {
        for (i, c) in clients.iter().enumerate() {
            c.send(format!("client{i}-msg{round}").as_bytes())
                .await
                .unwrap();
        }
    }
    for (i, c) in clients.iter().enumerate() {
        for round in 0..20 {
            let got = recv(c).await;
            assert_eq!(
                String::from_utf8(got).unwrap(),
                format!("client{i}-msg{round}")
            );
        }
    }
    let sessions = records("u-sessions")
        .iter()
        .filter(|r| r["message"].as_str().unwrap_or("").contains("accepted UDP"))
        .count();
    assert_eq!(sessions, 3, "one session per client address");
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn largest_datagram_passes_intact() {
    let echo = echo_server().await;
    let cfg = RelayConfig::udp("u-big", local(), upstream(echo));
    let relay = Relay::start(cfg, system()).await;
    let c = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    c.connect(relay.addr).await.unwrap();
    let payload: Vec<u8> = block()[..65_507].to_vec();
    c.send(&payload).await.unwrap();
    let got = recv(&c).await;
    assert_eq!(got.len(), 65_507);
    assert_eq!(Sha256::digest(&got), Sha256::digest(&payload));
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_limit_evicts_least_recently_used_and_idle_sessions_end() {
    let echo = echo_server().await;
    let mut cfg = RelayConfig::udp("u-lru", local(), upstream(echo));
    cfg.max_sessions = 2;
    cfg.idle_timeout = Duration::from_millis(500);
    let relay = Relay::start(cfg, system()).await;
    let mut cs = Vec::new();
    for i in 0..3u8 {
        let c = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        c.connect(relay.addr).await.unwrap();
        c.send(&[i]).await.unwrap();
        assert_eq!(recv(&c).await, [i]);
        cs.push(c);
    }
    // The third session pushed out the first (least recently used).
    let recs = wait_access("u-lru", 1).await;
    assert_eq!(recs[0]["reason"], "evicted");
    assert_eq!(recs[0]["client"], cs[0].local_addr().unwrap().to_string());
    // The remaining two end on their own once idle.
    let recs = wait_access("u-lru", 3).await;
    assert!(
        recs[1..].iter().all(|r| r["reason"] == "idle-timeout"),
        "{recs:?}"
    );
    relay.shutdown().await;
}
