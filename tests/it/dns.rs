//! The `[dns]` responder, queried with the real `dig` (Debian dnsutils):
//! wildcard names, AAAA, NODATA, forwarding, refusal, TCP, truncation, and
//! malformed packets. The upstream resolver for forwarding is a second
//! responder with its own names.

use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::helpers::{bin, skip_outside_ci, spawn_on_free_port, Ready, Running, TempDir};

/// Starts `ossrelay run` with a `[dns]` section on a free port; returns
/// once it answers.
fn start(dir: &Path, name: &str, body: &str) -> (Running, u16) {
    let path = dir.join(format!("{name}.toml"));
    spawn_on_free_port(
        Ready::Connect,
        &dir.join(format!("{name}.stderr")),
        |port| {
            std::fs::write(
                &path,
                format!("[dns]\nlisten = \"127.0.0.1:{port}\"\n{body}\n"),
            )
            .unwrap();
            let mut cmd = Command::new(bin());
            cmd.args(["run", "-c"]).arg(&path);
            cmd
        },
    )
}

/// `dig` output for `args`, against 127.0.0.1:`port`.
fn dig(port: u16, args: &str) -> String {
    let out = Command::new("dig")
        .arg("@127.0.0.1")
        .args(["-p", &port.to_string(), "+time=2", "+tries=1"])
        .args(args.split_whitespace())
        .output()
        .expect("run dig");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn status(out: &str) -> &str {
    out.split("status: ")
        .nth(1)
        .and_then(|s| s.split(',').next())
        .unwrap_or("none")
}

fn answers(out: &str, kind: &str) -> Vec<String> {
    out.lines()
        .filter(|l| !l.starts_with(';'))
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() == 5 && f[3] == kind).then(|| f[4].to_string())
        })
        .collect()
}

#[test]
fn dig_sees_private_names_forwarding_refusal_and_truncation() {
    if Command::new("dig").arg("-v").output().is_err() {
        skip_outside_ci(
            "CI must install dnsutils (dig)",
            format_args!("dig_sees_private_names_forwarding_refusal_and_truncation: dig not installed (apt-get install dnsutils)"),
        );
        return;
    }
    let dir = TempDir::new("dns");
    let (_up, up_port) = start(
        &dir.0,
        "upstream",
        "names = [\"forwarded.test\"]\nanswer = [\"192.0.2.53\"]\n",
    );
    let names = "names = [\"oss.test\", \"*.oss.test\"]";
    let (_dns, port) = start(
        &dir.0,
        "relay",
        &format!("{names}\nanswer = [\"172.31.10.171\", \"fd00::171\"]\nttl = \"30s\"\nupstream = \"127.0.0.1:{up_port}\"\n"),
    );
    let (_closed, closed_port) = start(
        &dir.0,
        "closed",
        &format!("{names}\nanswer = [\"172.31.10.171\"]\n"),
    );

    let a = dig(port, "new-bucket-123.oss.test A");
    assert_eq!(status(&a), "NOERROR", "{a}");
    assert_eq!(answers(&a, "A"), ["172.31.10.171"], "{a}");
    assert!(
        a.contains("\t30\tIN\tA") || a.contains(" 30 IN A") || a.contains("30\tIN"),
        "TTL 30: {a}"
    );
    assert!(a.contains(" aa"), "authoritative: {a}");

    let aaaa = dig(port, "oss.test AAAA");
    assert_eq!(answers(&aaaa, "AAAA"), ["fd00::171"], "{aaaa}");

    let mx = dig(port, "bucket.oss.test MX");
    assert_eq!(status(&mx), "NOERROR", "NODATA, not NXDOMAIN: {mx}");
    assert!(answers(&mx, "MX").is_empty(), "{mx}");

    let fwd = dig(port, "forwarded.test A");
    assert_eq!(answers(&fwd, "A"), ["192.0.2.53"], "forwarded: {fwd}");

    let refused = dig(closed_port, "example.com A");
    assert_eq!(
        status(&refused),
        "REFUSED",
        "no upstream, not an open resolver: {refused}"
    );

    let tcp = dig(port, "+tcp x.oss.test A");
    assert_eq!(answers(&tcp, "A"), ["172.31.10.171"], "over TCP: {tcp}");

    // Malformed datagrams: FORMERR or silence, and the responder lives on.
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let to: SocketAddr = ([127, 0, 0, 1], port).into();
    let mut junk = vec![0xAB, 0xCD, 0x01, 0x00, 0x00, 0x01];
    junk.extend_from_slice(&[0xFF; 30]);
    sock.send_to(&junk, to).unwrap();
    let mut buf = [0u8; 512];
    if let Ok((n, _)) = sock.recv_from(&mut buf) {
        assert!(n >= 12 && buf[..2] == [0xAB, 0xCD], "reply keeps the id");
        assert_eq!(buf[3] & 0x0F, 1, "FORMERR");
    }
    sock.send_to(b"\x01", to).unwrap();
    assert!(
        sock.recv_from(&mut buf).is_err(),
        "a 1-byte packet gets no answer"
    );
    let again = dig(port, "still.oss.test A");
    assert_eq!(answers(&again, "A"), ["172.31.10.171"], "{again}");

    // 60 addresses do not fit 512 bytes: TC over UDP, then dig retries over TCP.
    let many: Vec<String> = (1..=60).map(|i| format!("\"10.0.1.{i}\"")).collect();
    let (_big, big_port) = start(
        &dir.0,
        "big",
        &format!("{names}\nanswer = [{}]\n", many.join(", ")),
    );
    let tc = dig(big_port, "+noedns +ignore oss.test A");
    assert!(tc.contains(" tc"), "truncated over UDP: {tc}");
    let full = dig(big_port, "+noedns oss.test A");
    assert_eq!(answers(&full, "A").len(), 60, "{full}");
}
