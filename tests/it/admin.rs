//! The admin listener of `ossrelay run`: `/metrics` counts what the relay
//! does (bytes as they move, connections, requests by bucket and status),
//! is valid OpenMetrics text by Python's own parser, and a real Prometheus
//! server scrapes it; `/readyz` turns 503 the moment a drain starts.

use std::io::{Read, Write};
use std::process::Command;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::*;

/// One GET to the admin listener: status and body.
fn get(port: u16, path: &str) -> (u16, String) {
    request(
        port,
        &format!("GET {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n"),
    )
}

fn request(port: u16, raw: &str) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("admin connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(raw.as_bytes()).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let status = out
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = out
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string();
    (status, body)
}

struct Running2 {
    run: Running,
    admin: u16,
    relay: u16,
}

/// `ossrelay run` with an admin listener and `relays` (TOML with `{port}`
/// standing for the relay's port).
fn start(dir: &TempDir, relays: &str, server: &str) -> Running2 {
    let cfg = dir.0.join("relay.toml");
    let stderr = dir.0.join("stderr");
    let admin = free_port();
    let (run, relay) = spawn_on_free_port(
        |port| Ready::Bound { port, udp: false },
        &stderr,
        |port| {
            let toml = format!(
                "[server]\n{server}\n[admin]\nlisten = \"127.0.0.1:{admin}\"\n{}",
                relays.replace("{port}", &port.to_string())
            );
            std::fs::write(&cfg, toml).unwrap();
            let mut c = Command::new(bin());
            c.arg("run").arg("--config").arg(&cfg);
            c
        },
    );
    let mut r = Running2 { run, admin, relay };
    if let Err(why) = r.run.wait_ready(&[Ready::Bound {
        port: admin,
        udp: false,
    }]) {
        panic!("admin listener not ready: {why}\n{}", r.run.stderr());
    }
    r
}

async fn poll_metric(admin: u16, series: &str, at_least: f64) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, text) = tokio::task::spawn_blocking(move || get(admin, "/metrics"))
            .await
            .unwrap();
        let v = sample(&text, series).unwrap_or(-1.0);
        if v >= at_least || Instant::now() > deadline {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_bytes_as_they_move_and_connections_exactly() {
    let up = echo_upstream().await;
    let dir = TempDir::new("admin-bytes");
    let r = start(
        &dir,
        &format!(
            "[[relay]]\nname = \"r1\"\nlisten = \"127.0.0.1:{{port}}\"\nupstream = \"{up}\"\n"
        ),
        "",
    );
    let (admin, relay) = (r.admin, r.relay);
    // Every series is there from the start, at 0.
    let (status, text) = get(admin, "/metrics");
    assert_eq!(status, 200);
    for series in [
        "ossrelay_connections_total{relay=\"r1\"} 0",
        "ossrelay_connections_active{relay=\"r1\"} 0",
        "ossrelay_connections_refused_total{relay=\"r1\",reason=\"acl\"} 0",
        "ossrelay_bytes_total{relay=\"r1\",direction=\"from_client\"} 0",
        "ossrelay_upstream_connect_errors_total{relay=\"r1\",reason=\"refused\"} 0",
        "ossrelay_policy_decisions_total{relay=\"r1\",decision=\"deny\"} 0",
        "ossrelay_udp_sessions_active{relay=\"r1\"} 0",
        "ossrelay_dns_queries_total{result=\"answered\"} 0",
        "ossrelay_config_reloads_total{result=\"error\"} 0",
        "ossrelay_log_lines_dropped_total 0",
        "ossrelay_draining 0",
    ] {
        assert!(
            text.lines().any(|l| l == series),
            "no {series:?} in:\n{text}"
        );
    }
    assert!(text.contains("ossrelay_build_info{version=\""), "{text}");
    assert!(text.trim_end().ends_with("# EOF"), "{text}");

    // 1 GiB up and back, throttled by this client: it holds the rest back
    // until the counter shows the first 64 MiB, so the count moves while
    // the transfer runs, not at its end.
    const MIB: usize = 1 << 20;
    const TOTAL: usize = 1024 * MIB;
    const FIRST: usize = 64;
    let s = TcpStream::connect(("127.0.0.1", relay)).await.unwrap();
    let (mut rd, mut wr) = s.into_split();
    let reader = tokio::spawn(async move { recv_all(&mut rd).await });
    let mut sent = <sha2_dev::Sha256 as sha2_dev::Digest>::new();
    let mut chunk = block().to_vec();
    for i in 0..TOTAL / MIB {
        if i == FIRST {
            let moving = poll_metric(
                admin,
                "ossrelay_bytes_total{relay=\"r1\",direction=\"from_client\"}",
                (FIRST * MIB) as f64,
            )
            .await;
            assert_eq!(
                moving,
                (FIRST * MIB) as f64,
                "bytes counted while the transfer runs"
            );
            assert_eq!(
                poll_metric(admin, "ossrelay_connections_active{relay=\"r1\"}", 1.0).await,
                1.0
            );
        }
        chunk[..8].copy_from_slice(&(i as u64).to_le_bytes());
        wr.write_all(&chunk).await.unwrap();
        sha2_dev::Digest::update(&mut sent, &chunk);
    }
    wr.shutdown().await.unwrap();
    let (n, got) = reader.await.unwrap();
    let sent: [u8; 32] = sha2_dev::Digest::finalize(sent).into();
    assert!(n == TOTAL && got == sent, "echo differs ({n} bytes back)");
    let data_len = TOTAL;
    let to = poll_metric(
        admin,
        "ossrelay_bytes_total{relay=\"r1\",direction=\"to_client\"}",
        data_len as f64,
    )
    .await;
    assert_eq!(to, data_len as f64);
    let (_, text) = get(admin, "/metrics");
    assert_eq!(
        sample(
            &text,
            "ossrelay_bytes_total{relay=\"r1\",direction=\"from_client\"}"
        ),
        Some(data_len as f64)
    );
    assert_eq!(
        sample(&text, "ossrelay_connections_total{relay=\"r1\"}"),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &text,
            "ossrelay_upstream_connect_duration_seconds_count{relay=\"r1\"}"
        ),
        Some(1.0)
    );
    // Strictly valid OpenMetrics, by the Python client's own parser.
    let parsed = Command::new("python3")
        .arg("-c")
        .arg(
            "import sys\n\
             from prometheus_client.openmetrics.parser import text_string_to_metric_families as p\n\
             fams = list(p(sys.stdin.read()))\n\
             print(len(fams), sum(len(f.samples) for f in fams))",
        )
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn();
    match parsed {
        Ok(mut child) => {
            child
                .stdin
                .take()
                .unwrap()
                .write_all(text.as_bytes())
                .unwrap();
            let out = child.wait_with_output().unwrap();
            if String::from_utf8_lossy(&out.stderr).contains("No module named 'prometheus_client'")
            {
                skip_outside_ci(
                    "prometheus_client (pip) is needed to check /metrics",
                    format_args!(
                        "prometheus_client is not installed (pip install prometheus_client)"
                    ),
                );
            } else {
                assert!(
                    out.status.success(),
                    "the OpenMetrics parser refused /metrics: {}\n{text}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
        Err(e) => skip_outside_ci("python3 is needed", format_args!("python3: {e}")),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_are_counted_by_policy_bucket_and_status_class() {
    let (up, _) = recording_upstream(Reply::HttpOk).await;
    let dir = TempDir::new("admin-requests");
    let r = start(
        &dir,
        &format!(
            "[[relay]]\nname = \"gw\"\nprotocol = \"http\"\nlisten = \"127.0.0.1:{{port}}\"\n\
             routes = [{{ host = \"*.oss.test\", upstream = \"{up}\" }}]\nbuckets = [\"good\", \"logs-*\"]\n"
        ),
        "",
    );
    let mut s = TcpStream::connect(("127.0.0.1", r.relay)).await.unwrap();
    let reqs = "GET /a HTTP/1.1\r\nHost: good.oss.test\r\n\r\n\
                GET /b HTTP/1.1\r\nHost: good.oss.test\r\n\r\n\
                GET /c HTTP/1.1\r\nHost: logs-1.oss.test\r\n\r\n\
                GET /d HTTP/1.1\r\nHost: evil.oss.test\r\n\r\n";
    s.write_all(reqs.as_bytes()).await.unwrap();
    let mut got = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut got)).await;
    let got = String::from_utf8_lossy(&got);
    assert_eq!(got.matches("200 OK").count(), 3, "{got}");
    let m = |series: &str| {
        let (_, text) = get(r.admin, "/metrics");
        sample(&text, series)
    };
    let base = "ossrelay_requests_total{relay=\"gw\",";
    assert_eq!(
        m(&format!("{base}bucket=\"good\",status_class=\"2xx\"}}")),
        Some(2.0)
    );
    // A glob is not a label value: logs-1 counts as other, as does evil.
    assert_eq!(
        m(&format!("{base}bucket=\"other\",status_class=\"2xx\"}}")),
        Some(1.0)
    );
    assert_eq!(
        m(&format!("{base}bucket=\"other\",status_class=\"4xx\"}}")),
        Some(1.0)
    );
    assert_eq!(
        m(&format!("{base}bucket=\"logs-*\",status_class=\"2xx\"}}")),
        None
    );
    assert_eq!(
        m("ossrelay_policy_decisions_total{relay=\"gw\",decision=\"allow\"}"),
        Some(3.0)
    );
    assert_eq!(
        m("ossrelay_policy_decisions_total{relay=\"gw\",decision=\"deny\"}"),
        Some(1.0)
    );
    assert_eq!(
        m("ossrelay_connections_refused_total{relay=\"gw\",reason=\"policy\"}"),
        Some(1.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_turns_503_at_once_on_sigterm_and_paths_are_checked() {
    let up = echo_upstream().await;
    let (web, _) = recording_upstream(Reply::HttpOk).await;
    let dir = TempDir::new("admin-drain");
    let gw_port = free_port();
    let mut r = start(
        &dir,
        &format!(
            "[[relay]]\nname = \"r1\"\nlisten = \"127.0.0.1:{{port}}\"\nupstream = \"{up}\"\n\
             [[relay]]\nname = \"gw\"\nprotocol = \"http\"\nlisten = \"127.0.0.1:{gw_port}\"\ndefault_route = \"{web}\"\n"
        ),
        "drain_grace = \"2s\"",
    );
    let admin = r.admin;
    assert_eq!(get(admin, "/livez"), (200, "ok\n".into()));
    assert_eq!(get(admin, "/readyz").0, 200);
    assert_eq!(get(admin, "/healthz").0, 200);
    assert_eq!(get(admin, "/nope").0, 404);
    assert_eq!(
        request(admin, "POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n").0,
        405
    );
    // A transfer in flight, half sent, and an idle keep-alive connection.
    const MIB: usize = 1 << 20;
    let s = TcpStream::connect(("127.0.0.1", r.relay)).await.unwrap();
    let (mut rd, mut wr) = s.into_split();
    let reader = tokio::spawn(async move { recv_all(&mut rd).await });
    let mut sent = <sha2_dev::Sha256 as sha2_dev::Digest>::new();
    let mut chunk = block().to_vec();
    for i in 0..8u64 {
        chunk[..8].copy_from_slice(&i.to_le_bytes());
        wr.write_all(&chunk).await.unwrap();
        sha2_dev::Digest::update(&mut sent, &chunk);
    }
    let mut idle = TcpStream::connect(("127.0.0.1", gw_port)).await.unwrap();
    idle.write_all(b"GET /b/k HTTP/1.1\r\nHost: oss.test\r\n\r\n")
        .await
        .unwrap();
    let mut first = vec![0u8; "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok".len()];
    idle.read_exact(&mut first).await.unwrap();

    // SAFETY: kill(2) on the PID of the child this test spawned.
    assert_eq!(
        unsafe { libc::kill(r.run.child.id() as libc::pid_t, libc::SIGTERM) },
        0
    );
    let t = Instant::now();
    loop {
        let (status, _) = get(admin, "/readyz");
        if status == 503 {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(1),
            "/readyz still {status} after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let (_, text) = get(admin, "/metrics");
    assert_eq!(sample(&text, "ossrelay_draining"), Some(1.0));
    // drain_grace: the relay still accepts, and relays, while /readyz is 503.
    let mut s = TcpStream::connect(("127.0.0.1", r.relay)).await.unwrap();
    s.write_all(b"still here").await.unwrap();
    let mut back = [0u8; 10];
    s.read_exact(&mut back).await.unwrap();
    assert_eq!(&back, b"still here");
    drop(s);
    // Once the grace is over the idle keep-alive connection is closed
    // within a second.
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(20), idle.read_to_end(&mut rest))
        .await
        .expect("the idle keep-alive connection was not closed")
        .unwrap();
    assert_eq!(closed, 0);
    let after = t.elapsed();
    assert!(
        after < Duration::from_secs(3),
        "idle connection closed {after:?} after SIGTERM (grace 2 s)"
    );
    // The transfer in flight finishes intact.
    for i in 8..16u64 {
        chunk[..8].copy_from_slice(&i.to_le_bytes());
        wr.write_all(&chunk).await.unwrap();
        sha2_dev::Digest::update(&mut sent, &chunk);
    }
    wr.shutdown().await.unwrap();
    let (n, got) = reader.await.unwrap();
    let sent: [u8; 32] = sha2_dev::Digest::finalize(sent).into();
    assert!(
        n == 16 * MIB && got == sent,
        "the transfer in flight came back different ({n} bytes)"
    );
    let status = r
        .run
        .exit_within(Duration::from_secs(20))
        .expect("no exit after SIGTERM");
    assert!(status.success(), "{status}");
    assert!(
        r.run
            .stderr()
            .contains("still accepting for 2s (drain_grace)"),
        "{}",
        r.run.stderr()
    );
}

/// A value from Prometheus's query API, when the query has one result.
fn prom_query(port: u16, query: &str) -> Option<f64> {
    let q: String = query
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'_' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect();
    let (status, body) = get(port, &format!("/api/v1/query?query={q}"));
    if status != 200 {
        return None;
    }
    // Chunked or not, the JSON object is the body's one {...}.
    let json = &body[body.find('{')?..=body.rfind('}')?];
    let v: serde_json::Value = serde_json::from_str(json).ok()?;
    let result = v["data"]["result"].as_array()?;
    match result.as_slice() {
        [one] => one["value"][1].as_str()?.parse().ok(),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_prometheus_scrapes_the_exact_bytes_of_a_64_mib_transfer() {
    if Command::new("prometheus")
        .arg("--version")
        .output()
        .is_err()
    {
        skip_outside_ci(
            "prometheus (Debian) is needed to scrape /metrics",
            format_args!("prometheus is not installed (apt-get install prometheus)"),
        );
        return;
    }
    let up = echo_upstream().await;
    let dir = TempDir::new("admin-prometheus");
    let r = start(
        &dir,
        &format!(
            "[[relay]]\nname = \"r1\"\nlisten = \"127.0.0.1:{{port}}\"\nupstream = \"{up}\"\n"
        ),
        "",
    );
    let admin = r.admin;
    let prom_cfg = dir.0.join("prometheus.yml");
    std::fs::write(
        &prom_cfg,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: ossrelay\n    static_configs:\n      - targets: ['127.0.0.1:{admin}']\n"
        ),
    )
    .unwrap();
    let data_dir = dir.0.join("tsdb");
    let (_prom, prom) = spawn_on_free_port(
        |port| Ready::Bound { port, udp: false },
        &dir.0.join("prometheus.err"),
        |port| {
            let mut c = Command::new("prometheus");
            c.arg(format!("--config.file={}", prom_cfg.display()))
                .arg(format!("--storage.tsdb.path={}", data_dir.display()))
                .arg(format!("--web.listen-address=127.0.0.1:{port}"));
            c
        },
    );
    // Three connections; one carries 64 MiB each way.
    const LEN: usize = 64 << 20;
    let data: Vec<u8> = (0..LEN).map(|i| (i % 253) as u8).collect();
    for n in [LEN, 10, 10] {
        let s = TcpStream::connect(("127.0.0.1", r.relay)).await.unwrap();
        let (mut rd, mut wr) = s.into_split();
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            rd.read_to_end(&mut got).await.unwrap();
            got.len()
        });
        wr.write_all(&data[..n]).await.unwrap();
        wr.shutdown().await.unwrap();
        assert_eq!(reader.await.unwrap(), n);
    }
    let want_up = (LEN + 20) as f64;
    let mut last = (None, None);
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        last = (
            prom_query(
                prom,
                "ossrelay_bytes_total{relay=\"r1\",direction=\"from_client\"}",
            ),
            prom_query(prom, "ossrelay_connections_total{relay=\"r1\"}"),
        );
        if last == (Some(want_up), Some(3.0)) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(last, (Some(want_up), Some(3.0)), "what Prometheus scraped");
    assert_eq!(
        prom_query(
            prom,
            "ossrelay_bytes_total{relay=\"r1\",direction=\"to_client\"}"
        ),
        Some(want_up)
    );
    assert_eq!(prom_query(prom, "up{job=\"ossrelay\"}"), Some(1.0));
}
