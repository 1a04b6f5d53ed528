//! TCP relay behaviour against real sockets on loopback.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ossrelay::acl::{Acl, Action, Cidr, Rule};
use ossrelay::config::{RelayConfig, Upstream};
use ossrelay::resolve::StaticResolver;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::helpers::*;

const BIG: usize = 256 << 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn big_transfer_both_ways_arrives_intact() {
    let server = TcpListener::bind(local()).await.unwrap();
    let server_addr = server.local_addr().unwrap();
    // The upstream receives the client's 256 MiB while sending its own 256 MiB.
    let upstream_task = tokio::spawn(async move {
        let (s, _) = server.accept().await.unwrap();
        let (mut r, mut w) = s.into_split();
        let sender = tokio::spawn(async move {
            let h = send_pattern(&mut w, BIG, 1_000_000).await;
            w.shutdown().await.unwrap();
            h
        });
        let got = recv_all(&mut r).await;
        (got, sender.await.unwrap())
    });
    let relay = Relay::start(
        RelayConfig::tcp("t-big", local(), upstream(server_addr)),
        system(),
    )
    .await;
    let client = TcpStream::connect(relay.addr).await.unwrap();
    let (mut r, mut w) = client.into_split();
    let sender = tokio::spawn(async move {
        let h = send_pattern(&mut w, BIG, 0).await;
        w.shutdown().await.unwrap();
        h
    });
    let (client_got, client_got_hash) = recv_all(&mut r).await;
    let client_sent_hash = sender.await.unwrap();
    let ((up_got, up_got_hash), up_sent_hash) = upstream_task.await.unwrap();
    assert_eq!(client_got, BIG, "client received every byte");
    assert_eq!(up_got, BIG, "upstream received every byte");
    assert_eq!(client_got_hash, up_sent_hash, "downstream SHA-256 matches");
    assert_eq!(up_got_hash, client_sent_hash, "upstream SHA-256 matches");
    let rec = wait_access("t-big", 1).await;
    assert_eq!(rec[0]["reason"], "eof");
    assert_eq!(rec[0]["bytes_from_client"], BIG as u64);
    assert_eq!(rec[0]["bytes_to_client"], BIG as u64);
    assert_eq!(rec[0]["upstream"], server_addr.to_string());
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_close_still_delivers_the_whole_reply() {
    let server = TcpListener::bind(local()).await.unwrap();
    let server_addr = server.local_addr().unwrap();
    // Reads the request to EOF, then answers with 4 MiB: only works if the
    // client's SHUT_WR reached the upstream as a FIN and the reverse path stayed open.
    let up = tokio::spawn(async move {
        let (mut s, _) = server.accept().await.unwrap();
        let mut req = Vec::new();
        s.read_to_end(&mut req).await.unwrap();
        s.write_all(format!("got {} bytes\n", req.len()).as_bytes())
            .await
            .unwrap();
        let h = send_pattern(&mut s, 4 << 20, 7).await;
        s.shutdown().await.unwrap();
        h
    });
    let relay = Relay::start(
        RelayConfig::tcp("t-half", local(), upstream(server_addr)),
        system(),
    )
    .await;
    let mut c = TcpStream::connect(relay.addr).await.unwrap();
    c.write_all(b"GET /object HTTP/1.0\r\n\r\n").await.unwrap();
    c.shutdown().await.unwrap();
    let mut head = [0u8; 13];
    c.read_exact(&mut head).await.unwrap();
    assert_eq!(&head, b"got 24 bytes\n");
    let (n, hash) = recv_all(&mut c).await;
    assert_eq!(n, 4 << 20);
    assert_eq!(hash, up.await.unwrap());
    let rec = wait_access("t-half", 1).await;
    assert_eq!(rec[0]["reason"], "eof");
    assert_eq!(rec[0]["bytes_from_client"], 24);
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_upstream_closes_client_and_logs_connect_failed() {
    let closed = TcpListener::bind(local()).await.unwrap();
    let dead_addr = closed.local_addr().unwrap();
    drop(closed);
    let relay = Relay::start(
        RelayConfig::tcp("t-refused", local(), upstream(dead_addr)),
        system(),
    )
    .await;
    let started = Instant::now();
    let mut c = TcpStream::connect(relay.addr).await.unwrap();
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(5), c.read(&mut buf))
        .await
        .expect("client closed promptly")
        .unwrap_or(0);
    assert_eq!(n, 0, "no bytes, just a close");
    assert!(started.elapsed() < Duration::from_secs(5));
    let rec = wait_access("t-refused", 1).await;
    assert_eq!(rec[0]["reason"], "connect-failed");
    assert_eq!(rec[0]["upstream"], "-");
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acl_denied_client_never_reaches_upstream() {
    let server = std::net::TcpListener::bind(local()).unwrap();
    server.set_nonblocking(true).unwrap();
    let server_addr = server.local_addr().unwrap();
    let mut cfg = RelayConfig::tcp("t-acl", local(), upstream(server_addr));
    cfg.acl = Acl::new(vec![
        Rule {
            action: Action::Deny,
            block: Cidr::parse("127.0.0.1").unwrap(),
            mode: 0,
        },
        Rule {
            action: Action::Allow,
            block: Cidr::parse("127.0.0.0/8").unwrap(),
            mode: 0,
        },
    ]);
    let relay = Relay::start(cfg, system()).await;
    let mut c = TcpStream::connect(relay.addr).await.unwrap();
    let mut buf = [0u8; 4];
    let n = tokio::time::timeout(Duration::from_secs(5), c.read(&mut buf))
        .await
        .unwrap()
        .unwrap_or(0);
    assert_eq!(n, 0);
    let rec = wait_access("t-acl", 1).await;
    assert_eq!(rec[0]["reason"], "refused-acl");
    let warned = records("t-acl").iter().any(|r| {
        r["message"]
            .as_str()
            .unwrap_or("")
            .contains("access denied: from 127.0.0.1:")
    });
    assert!(warned, "the refusal is logged");
    // The decision is logged only after the client is handled; had the relay
    // connected upstream first, that connection would be queued here.
    match server.accept() {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        other => panic!("upstream saw a connection: {other:?}"),
    }
    // A client from another allowed address gets through.
    let allowed = tokio::net::TcpSocket::new_v4().unwrap();
    allowed.bind("127.0.0.2:0".parse().unwrap()).unwrap();
    let _s = allowed.connect(relay.addr).await.unwrap();
    let ok = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match server.accept() {
                Ok(_) => break,
                Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
            }
        }
    })
    .await;
    assert!(ok.is_ok(), "allowed client reached upstream");
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_pair_is_closed_after_idle_timeout() {
    let server = TcpListener::bind(local()).await.unwrap();
    let server_addr = server.local_addr().unwrap();
    let up = tokio::spawn(async move {
        let (mut s, _) = server.accept().await.unwrap();
        let mut buf = Vec::new();
        let _ = s.read_to_end(&mut buf).await;
        buf
    });
    let mut cfg = RelayConfig::tcp("t-idle", local(), upstream(server_addr));
    cfg.idle_timeout = Duration::from_millis(400);
    let relay = Relay::start(cfg, system()).await;
    let mut c = TcpStream::connect(relay.addr).await.unwrap();
    let started = Instant::now();
    // Activity resets the clock: keep it busy for longer than the timeout first.
    for _ in 0..4 {
        c.write_all(b"x").await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut buf = [0u8; 4];
    let n = tokio::time::timeout(Duration::from_secs(10), c.read(&mut buf))
        .await
        .unwrap()
        .unwrap_or(0);
    assert_eq!(n, 0, "closed by the relay");
    assert!(
        started.elapsed() >= Duration::from_millis(1000),
        "not closed while active"
    );
    assert_eq!(up.await.unwrap(), b"xxxx");
    let rec = wait_access("t-idle", 1).await;
    assert_eq!(rec[0]["reason"], "idle-timeout");
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_reset_is_passed_to_client_promptly() {
    let server = TcpListener::bind(local()).await.unwrap();
    let server_addr = server.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut s, _) = server.accept().await.unwrap();
        let mut b = [0u8; 5];
        s.read_exact(&mut b).await.unwrap();
        // SO_LINGER 0 turns close into a RST.
        socket2::SockRef::from(&s)
            .set_linger(Some(Duration::ZERO))
            .unwrap();
        drop(s);
    });
    let relay = Relay::start(
        RelayConfig::tcp("t-reset", local(), upstream(server_addr)),
        system(),
    )
    .await;
    let mut c = TcpStream::connect(relay.addr).await.unwrap();
    c.write_all(b"hello").await.unwrap();
    let mut buf = [0u8; 4];
    let r = tokio::time::timeout(Duration::from_secs(5), c.read(&mut buf))
        .await
        .expect("prompt close");
    match r {
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset),
        Ok(n) => panic!("expected a reset, read {n} bytes"),
    }
    let rec = wait_access("t-reset", 1).await;
    assert_eq!(rec[0]["reason"], "reset");
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_limit_refuses_extra_clients_and_recovers() {
    let server_addr = echo_upstream().await;
    let mut cfg = RelayConfig::tcp("t-limit", local(), upstream(server_addr));
    cfg.max_connections = 1;
    let relay = Relay::start(cfg, system()).await;
    let mut first = TcpStream::connect(relay.addr).await.unwrap();
    first.write_all(b"1").await.unwrap();
    let mut b = [0u8; 1];
    first.read_exact(&mut b).await.unwrap();
    let mut second = TcpStream::connect(relay.addr).await.unwrap();
    let n = tokio::time::timeout(Duration::from_secs(5), second.read(&mut b))
        .await
        .unwrap()
        .unwrap_or(0);
    assert_eq!(n, 0, "over-limit client is closed");
    let rec = wait_access("t-limit", 1).await;
    assert_eq!(rec[0]["reason"], "refused-limit");
    drop(first);
    wait_access("t-limit", 2).await;
    let mut third = TcpStream::connect(relay.addr).await.unwrap();
    third.write_all(b"3").await.unwrap();
    third.read_exact(&mut b).await.unwrap();
    assert_eq!(&b, b"3", "relay recovered after the limit");
    relay.shutdown().await;
}

/// Binds the same port on two loopback addresses, so one name can move
/// between them the way an OSS VIP moves.
async fn twin_servers() -> (TcpListener, TcpListener) {
    for _ in 0..20 {
        let a = TcpListener::bind(local()).await.unwrap();
        let port = a.local_addr().unwrap().port();
        if let Ok(b) = TcpListener::bind(("127.0.0.2", port)).await {
            return (a, b);
        }
    }
    panic!("no port free on both 127.0.0.1 and 127.0.0.2");
}

fn serve_name(l: TcpListener, name: &'static [u8]) {
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let _ = s.write_all(name).await;
        }
    });
}

async fn ask(addr: SocketAddr) -> Vec<u8> {
    let mut c = TcpStream::connect(addr).await.unwrap();
    let mut v = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), c.read_to_end(&mut v))
        .await
        .unwrap()
        .unwrap();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_connections_follow_a_changed_address() {
    let (a, b) = twin_servers().await;
    let port = a.local_addr().unwrap().port();
    serve_name(a, b"A");
    serve_name(b, b"B");
    let resolver = StaticResolver::new();
    resolver.set(
        "oss-test-internal.example",
        vec!["127.0.0.1".parse().unwrap()],
    );
    let up = Upstream::parse(&format!("oss-test-internal.example:{port}")).unwrap();
    let relay = Relay::start(
        RelayConfig::tcp("t-resolve", local(), up),
        Arc::new(resolver.clone()),
    )
    .await;
    assert_eq!(ask(relay.addr).await, b"A");
    resolver.set(
        "oss-test-internal.example",
        vec!["127.0.0.2".parse().unwrap()],
    );
    assert_eq!(ask(relay.addr).await, b"B");
    // Every address is tried in turn: a dead first address is skipped.
    resolver.set(
        "oss-test-internal.example",
        vec!["127.0.0.3".parse().unwrap(), "127.0.0.1".parse().unwrap()],
    );
    assert_eq!(ask(relay.addr).await, b"A");
    let recs = wait_access("t-resolve", 3).await;
    // Records are written as connections end, which need not be in order.
    let mut used: Vec<String> = recs
        .iter()
        .map(|r| r["upstream"].as_str().unwrap().to_string())
        .collect();
    used.sort();
    assert_eq!(
        used,
        [
            format!("127.0.0.1:{port}"),
            format!("127.0.0.1:{port}"),
            format!("127.0.0.2:{port}")
        ]
    );
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accepted_line_matches_stone_format() {
    let server = TcpListener::bind(local()).await.unwrap();
    let server_addr = server.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut s, _) = server.accept().await.unwrap();
        s.write_all(b"hi").await.unwrap();
    });
    let relay = Relay::start(
        RelayConfig::tcp("t-stone-line", local(), upstream(server_addr)),
        system(),
    )
    .await;
    let mut c = TcpStream::connect(relay.addr).await.unwrap();
    let local_port = c.local_addr().unwrap().port();
    let mut v = Vec::new();
    c.read_to_end(&mut v).await.unwrap();
    drop(c);
    wait_access("t-stone-line", 1).await;
    let msgs: Vec<String> = records("t-stone-line")
        .iter()
        .map(|r| r["message"].as_str().unwrap().to_string())
        .collect();
    let accepted = msgs
        .iter()
        .find(|m| m.contains("accepted TCP"))
        .expect("accepted line");
    let words: Vec<&str> = accepted.split(' ').collect();
    assert_eq!(words[0], "stone");
    assert!(
        words[1].trim_end_matches(':').parse::<u32>().is_ok(),
        "{accepted}"
    );
    assert_eq!(words[2..4], ["accepted", "TCP"]);
    assert!(words[4].parse::<u32>().is_ok(), "{accepted}");
    assert_eq!(words[5..7], ["from", &format!("127.0.0.1:{local_port}")]);
    assert_eq!(words[7], "mode=0");
    assert!(
        msgs.iter().any(|m| m.ends_with("close tx:2 rx:0")),
        "{msgs:?}"
    );
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_relay_enforces_its_destination_list() {
    let server = TcpListener::bind(local()).await.unwrap();
    let server_addr = server.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = server.accept().await {
            tokio::spawn(async move {
                let mut v = Vec::new();
                let _ = s.read_to_end(&mut v).await;
                let _ = s.write_all(&v).await;
            });
        }
    });
    let text = format!(
        "[[relay]]\nname = \"t-proxy\"\nprotocol = \"proxy\"\nlisten = \"127.0.0.1:0\"\nproxy_allow = [\"127.0.0.1 {}\"]\n",
        server_addr.port()
    );
    let relay = Relay::start(relay_config(&text), system()).await;
    // Allowed: the tunnel carries bytes both ways.
    let mut c = TcpStream::connect(relay.addr).await.unwrap();
    c.write_all(
        format!("CONNECT {server_addr} HTTP/1.1\r\nHost: {server_addr}\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut head = vec![0u8; "HTTP/1.0 200 Connection established\r\n\r\n".len()];
    c.read_exact(&mut head).await.unwrap();
    assert!(
        head.starts_with(b"HTTP/1.0 200"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    c.write_all(b"through the tunnel").await.unwrap();
    c.shutdown().await.unwrap();
    let mut back = Vec::new();
    c.read_to_end(&mut back).await.unwrap();
    assert_eq!(back, b"through the tunnel");
    // Another port on the same host: 403, and nothing connected.
    let mut c = TcpStream::connect(relay.addr).await.unwrap();
    c.write_all(b"CONNECT 127.0.0.1:9 HTTP/1.1\r\n\r\n")
        .await
        .unwrap();
    let mut resp = String::new();
    c.read_to_string(&mut resp).await.unwrap();
    assert!(resp.starts_with("HTTP/1.0 403"), "{resp}");
    // Not HTTP at all: 400.
    let mut c = TcpStream::connect(relay.addr).await.unwrap();
    c.write_all(b"\x16\x03\x01 not http\r\n\r\n").await.unwrap();
    let mut resp = String::new();
    c.read_to_string(&mut resp).await.unwrap();
    assert!(resp.starts_with("HTTP/1.0 400"), "{resp}");
    let recs = wait_access("t-proxy", 3).await;
    // Records are written as connections end, which need not be in order.
    let mut reasons: Vec<&str> = recs.iter().map(|r| r["reason"].as_str().unwrap()).collect();
    reasons.sort();
    assert_eq!(reasons, ["bad-request", "eof", "refused-destination"]);
    let tunnel = recs.iter().find(|r| r["reason"] == "eof").unwrap();
    assert_eq!(tunnel["upstream"], server_addr.to_string());
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn urgent_data_does_not_stall_the_pair() {
    let server = TcpListener::bind(local()).await.unwrap();
    let server_addr = server.local_addr().unwrap();
    let up = tokio::spawn(async move {
        let (mut s, _) = server.accept().await.unwrap();
        let mut v = Vec::new();
        s.read_to_end(&mut v).await.unwrap();
        v
    });
    let relay = Relay::start(
        RelayConfig::tcp("t-oob", local(), upstream(server_addr)),
        system(),
    )
    .await;
    let c = std::net::TcpStream::connect(relay.addr).unwrap();
    let sock = socket2::Socket::from(c);
    use std::io::Write;
    (&sock).write_all(b"abc").unwrap();
    sock.send_out_of_band(b"!").unwrap();
    (&sock).write_all(b"def").unwrap();
    sock.shutdown(std::net::Shutdown::Write).unwrap();
    let got = tokio::time::timeout(Duration::from_secs(10), up)
        .await
        .expect("pair not stalled")
        .unwrap();
    assert_eq!(got, b"abc!def", "the urgent byte is relayed inline");
    relay.shutdown().await;
}

/// The same inside a stream: bulk data first makes the pump splice, and the
/// urgent byte then arrives with the connection still open, so only reading
/// past the mark (not an end of stream) gets "def" through. The upstream
/// reads late, so the bulk and the mark queue up at the relay together and
/// one large splice stops exactly at the mark.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn urgent_data_mid_stream_is_relayed_without_eof() {
    const BULK: usize = 256 * 1024;
    let server = TcpListener::bind(local()).await.unwrap();
    let server_addr = server.local_addr().unwrap();
    let up = tokio::spawn(async move {
        let (mut s, _) = server.accept().await.unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
        let mut v = vec![0u8; BULK + 7];
        s.read_exact(&mut v).await.unwrap();
        v
    });
    let relay = Relay::start(
        RelayConfig::tcp("t-oob2", local(), upstream(server_addr)),
        system(),
    )
    .await;
    let c = std::net::TcpStream::connect(relay.addr).unwrap();
    let sock = socket2::Socket::from(c);
    use std::io::Write;
    let bulk: Vec<u8> = (0..BULK).map(|i| (i % 251) as u8).collect();
    (&sock).write_all(&bulk).unwrap();
    (&sock).write_all(b"abc").unwrap();
    sock.send_out_of_band(b"!").unwrap();
    (&sock).write_all(b"def").unwrap();
    let got = tokio::time::timeout(Duration::from_secs(10), up)
        .await
        .expect("pair stalled at the urgent mark")
        .unwrap();
    assert!(got[..BULK] == bulk[..], "bulk bytes intact");
    assert_eq!(
        &got[BULK..],
        b"abc!def",
        "the urgent byte is relayed inline"
    );
    drop(sock);
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_takes_over_when_the_master_dies_and_groups_rotate() {
    let master = TcpListener::bind(local()).await.unwrap();
    let master_addr = master.local_addr().unwrap();
    let backup = TcpListener::bind(local()).await.unwrap();
    let backup_addr = backup.local_addr().unwrap();
    let master_task = tokio::spawn(async move {
        while let Ok((mut s, _)) = master.accept().await {
            let _ = s.write_all(b"M").await;
        }
    });
    serve_name(backup, b"B");
    let text = format!(
        "[[relay]]\nname = \"t-backup\"\nlisten = \"127.0.0.1:0\"\nupstream = \"{master_addr}\"\nbackup = \"{backup_addr}\"\nbackup_check_interval = \"1s\"\n"
    );
    let relay = Relay::start(relay_config(&text), system()).await;
    assert_eq!(ask(relay.addr).await, b"M");
    // The master dies: its listener closes, connections are refused.
    master_task.abort();
    let _ = master_task.await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !records("t-backup")
        .iter()
        .any(|r| r["message"].as_str().unwrap_or("").contains("is unhealthy"))
    {
        assert!(
            Instant::now() < deadline,
            "the health check never noticed the dead master"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(ask(relay.addr).await, b"B");
    relay.shutdown().await;

    // A group shares connections between its members.
    let (a, b) = (
        TcpListener::bind(local()).await.unwrap(),
        TcpListener::bind(local()).await.unwrap(),
    );
    let (aa, ba) = (a.local_addr().unwrap(), b.local_addr().unwrap());
    serve_name(a, b"A");
    serve_name(b, b"B");
    let text = format!("[[relay]]\nname = \"t-group\"\nlisten = \"127.0.0.1:0\"\nupstream = \"{aa}\"\nupstream_group = [\"{aa}\", \"{ba}\"]\n");
    let relay = Relay::start(relay_config(&text), system()).await;
    let mut seen = Vec::new();
    for _ in 0..4 {
        seen.push(ask(relay.addr).await);
    }
    assert!(
        seen.contains(&b"A".to_vec()) && seen.contains(&b"B".to_vec()),
        "{seen:?}"
    );
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_connections_use_the_configured_source_address() {
    let server = TcpListener::bind(local()).await.unwrap();
    let server_addr = server.local_addr().unwrap();
    let seen = tokio::spawn(async move {
        let (mut s, peer) = server.accept().await.unwrap();
        s.write_all(b"x").await.unwrap();
        peer.ip()
    });
    let text = format!("[[relay]]\nname = \"t-source\"\nlisten = \"127.0.0.1:0\"\nupstream = \"{server_addr}\"\nsource = \"127.0.0.5\"\n");
    let relay = Relay::start(relay_config(&text), system()).await;
    assert_eq!(ask(relay.addr).await, b"x");
    assert_eq!(
        seen.await.unwrap(),
        "127.0.0.5".parse::<std::net::IpAddr>().unwrap()
    );
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_allows_names_and_refuses_cloud_metadata() {
    let server = TcpListener::bind(local()).await.unwrap();
    let port = server.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = server.accept().await {
            tokio::spawn(async move {
                let mut v = vec![0u8; 1024];
                let n = s.read(&mut v).await.unwrap_or(0);
                let _ = s.write_all(&v[..n]).await;
            });
        }
    });
    let text = format!(
        "[[relay]]\nname = \"t-proxy-names\"\nprotocol = \"proxy\"\nlisten = \"127.0.0.1:0\"\nproxy_allow = [\"localhost {port}\", \"10.0.0.0/8 80,443\"]\n"
    );
    let relay = Relay::start(relay_config(&text), system()).await;
    let ask = |req: String| async move {
        let mut c = TcpStream::connect(relay.addr).await.unwrap();
        c.write_all(req.as_bytes()).await.unwrap();
        let mut head = vec![0u8; 12];
        let _ = tokio::time::timeout(Duration::from_secs(5), c.read_exact(&mut head)).await;
        String::from_utf8_lossy(&head).into_owned()
    };
    let by_name = ask(format!(
        "CONNECT localhost:{port} HTTP/1.1\r\nHost: localhost:{port}\r\n\r\n"
    ))
    .await;
    assert!(
        by_name.starts_with("HTTP/1.0 200"),
        "allowed by name: {by_name}"
    );
    let by_ip = ask(format!("CONNECT 127.0.0.1:{port} HTTP/1.1\r\n\r\n")).await;
    assert!(
        by_ip.starts_with("HTTP/1.0 403"),
        "the address itself is not listed: {by_ip}"
    );
    for meta in ["169.254.169.254:80", "100.100.100.200:80"] {
        let r = ask(format!("CONNECT {meta} HTTP/1.1\r\n\r\n")).await;
        assert!(r.starts_with("HTTP/1.0 403"), "{meta}: {r}");
        let host = meta.split(':').next().unwrap();
        let r = ask(format!(
            "GET http://{host}/latest/meta-data/ HTTP/1.1\r\nHost: {host}\r\n\r\n"
        ))
        .await;
        assert!(r.starts_with("HTTP/1.0 403"), "{meta} absolute-form: {r}");
    }
    relay.shutdown().await;
}

/// The forward proxy dials through the connector, so `source` applies to
/// its upstream connections as to a tcp relay's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_relay_dials_from_its_source_address() {
    let server = TcpListener::bind(local()).await.unwrap();
    let server_addr = server.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        if let Ok((mut s, peer)) = server.accept().await {
            let _ = tx.send(peer);
            let _ = s.write_all(b"hi").await;
        }
    });
    let text = format!(
        "[[relay]]\nname = \"t-proxy-src\"\nprotocol = \"proxy\"\nlisten = \"127.0.0.1:0\"\nsource = \"127.0.0.2\"\nproxy_allow = [\"127.0.0.1 {}\"]\n",
        server_addr.port()
    );
    let relay = Relay::start(relay_config(&text), system()).await;
    let mut c = TcpStream::connect(relay.addr).await.unwrap();
    c.write_all(
        format!("CONNECT {server_addr} HTTP/1.1\r\nHost: {server_addr}\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let peer = tokio::time::timeout(Duration::from_secs(10), rx)
        .await
        .expect("the proxy connected")
        .unwrap();
    assert_eq!(
        peer.ip().to_string(),
        "127.0.0.2",
        "the upstream saw {peer}"
    );
    relay.shutdown().await;
}
