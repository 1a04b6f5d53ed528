//! TLS from TOML configs: termination (with and without client
//! certificates), origination with verification, and the explicit
//! `insecure` opt-out. Certificates are made per run with rcgen.

use std::net::SocketAddr;
use std::sync::Arc;

use ossrelay::config::Config;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::*;
use crate::pki::Pki;

const SIZE: usize = 8 << 20;

fn client_config(pki: &Pki, with_cert: bool) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(&pki.ca).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let b = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots);
    Arc::new(if with_cert {
        let certs = CertificateDer::pem_file_iter(&pki.client_certkey)
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        b.with_client_auth_cert(
            certs,
            PrivateKeyDer::from_pem_file(&pki.client_certkey).unwrap(),
        )
        .unwrap()
    } else {
        b.with_no_client_auth()
    })
}

/// Sends SIZE bytes over TLS, half-closes with close_notify, and returns
/// (bytes back, whether their hash matches what was sent), or the error.
async fn tls_round_trip(
    addr: SocketAddr,
    cfg: Arc<rustls::ClientConfig>,
) -> Result<(usize, bool), String> {
    let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let tls = tokio_rustls::TlsConnector::from(cfg)
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    let (mut r, mut w) = tokio::io::split(tls);
    let sender = tokio::spawn(async move {
        let h = send_pattern(&mut w, SIZE, 7).await;
        let _ = w.shutdown().await;
        h
    });
    let (n, got) = recv_all(&mut r).await;
    let sent = sender.await.unwrap();
    Ok((n, got == sent))
}

/// One line over TLS: "echoed", or "failed" however the refusal shows (TLS
/// 1.3 reports a missing client certificate only after the client's side
/// of the handshake has finished).
async fn tls_line(addr: SocketAddr, cfg: Arc<rustls::ClientConfig>) -> &'static str {
    let Ok(tcp) = TcpStream::connect(addr).await else {
        return "failed";
    };
    let connector = tokio_rustls::TlsConnector::from(cfg);
    let Ok(mut tls) = connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
    else {
        return "failed";
    };
    if tls.write_all(b"x\n").await.is_err() || tls.shutdown().await.is_err() {
        return "failed";
    }
    let mut got = Vec::new();
    match tls.read_to_end(&mut got).await {
        Ok(_) if got == b"x\n" => "echoed",
        _ => "failed",
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminated_tls_carries_a_stream_intact_and_half_closes() {
    let dir = TempDir::new("tls-term");
    let pki = Pki::new(&dir.0);
    let up = echo_upstream().await;
    let cfg = relay_config_in(
        &dir.0,
        &format!("[[relay]]\nname = \"t-tls-term\"\nlisten = \"127.0.0.1:0\"\nupstream = \"{up}\"\ntls = {{ cert = \"certkey.pem\", key = \"certkey.pem\" }}\n"),
    );
    let relay = Relay::start(cfg, system()).await;
    let (n, same) = tls_round_trip(relay.addr, client_config(&pki, false))
        .await
        .unwrap();
    assert_eq!(n, SIZE);
    assert!(same, "SHA-256 of the echoed stream matches");
    let rec = wait_access("t-tls-term", 1).await;
    assert_eq!(rec[0]["reason"], "eof");
    assert_eq!(rec[0]["bytes_from_client"], SIZE as u64);
    assert_eq!(rec[0]["bytes_to_client"], SIZE as u64);
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificates_are_required_when_a_client_ca_is_set() {
    let dir = TempDir::new("tls-mtls");
    let pki = Pki::new(&dir.0);
    let up = echo_upstream().await;
    let cfg = relay_config_in(
        &dir.0,
        &format!("[[relay]]\nname = \"t-tls-mtls\"\nlisten = \"127.0.0.1:0\"\nupstream = \"{up}\"\ntls = {{ cert = \"certkey.pem\", key = \"certkey.pem\", client_ca = \"ca.pem\" }}\n"),
    );
    let relay = Relay::start(cfg, system()).await;
    let (n, same) = tls_round_trip(relay.addr, client_config(&pki, true))
        .await
        .unwrap();
    assert!(
        n == SIZE && same,
        "a client with a certificate gets through"
    );
    assert_eq!(
        tls_line(relay.addr, client_config(&pki, false)).await,
        "failed",
        "a client without a certificate gets nothing relayed"
    );
    let rec = wait_access("t-tls-mtls", 2).await;
    assert!(rec.iter().any(|r| r["reason"] == "tls-failed"), "{rec:?}");
    let warned = records("t-tls-mtls").iter().any(|r| {
        r["message"]
            .as_str()
            .is_some_and(|m| m.contains("TLS handshake with"))
    });
    assert!(warned, "the failed handshake is logged");
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_certificates_are_verified_unless_insecure_is_set() {
    let dir = TempDir::new("tls-orig");
    let pki = Pki::new(&dir.0);
    let good = crate::pki::tls_echo_server(&pki.certkey);
    let rogue = crate::pki::tls_echo_server(&pki.rogue_certkey);
    let line = b"through upstream tls\n";
    for (name, port, extra, want) in [
        (
            "t-tls-orig-good",
            good,
            "ca = \"ca.pem\", server_name = \"localhost\"",
            true,
        ),
        ("t-tls-orig-rogue", rogue, "ca = \"ca.pem\"", false),
        ("t-tls-orig-insecure", rogue, "insecure = true", true),
    ] {
        let cfg = relay_config_in(
            &dir.0,
            &format!("[[relay]]\nname = \"{name}\"\nlisten = \"127.0.0.1:0\"\nupstream = \"127.0.0.1:{port}\"\nupstream_tls = {{ {extra} }}\n"),
        );
        let relay = Relay::start(cfg, system()).await;
        let mut s = TcpStream::connect(relay.addr).await.unwrap();
        s.write_all(line).await.unwrap();
        let mut got = Vec::new();
        let _ = s.read_to_end(&mut got).await;
        assert_eq!(got == line, want, "{name}: got {got:?}");
        drop(s);
        let rec = wait_access(name, 1).await;
        assert_eq!(rec[0]["reason"] == "tls-failed", !want, "{name}: {rec:?}");
        if name.ends_with("insecure") {
            let warned = records(name).iter().any(|r| {
                r["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("NOT verified"))
            });
            assert!(warned, "insecure = true is logged as a warning");
        }
        relay.shutdown().await;
    }
}

#[test]
fn bad_tls_settings_are_config_errors_naming_the_key() {
    let dir = TempDir::new("tls-bad");
    let _pki = Pki::new(&dir.0);
    for (toml, needle) in [
        (
            "tls = { cert = \"missing.pem\", key = \"missing.pem\" }",
            "missing.pem",
        ),
        (
            "upstream_tls = { ca = \"ca.pem\", insecure = true }",
            "insecure",
        ),
        ("upstream_tls = { min_version = \"1.0\" }", "1.0"),
        ("upstream_tls = { ciphers = \"RC4-MD5\" }", "RC4-MD5"),
        (
            "tls = { cert = \"certkey.pem\", key = \"certkey.pem\", client_auth = \"maybe\" }",
            "maybe",
        ),
    ] {
        let text =
            format!("[[relay]]\nlisten = \"127.0.0.1:0\"\nupstream = \"127.0.0.1:9\"\n{toml}\n");
        let problems = Config::parse_in(&text, &dir.0).unwrap_err();
        let p = &problems[0];
        assert!(
            p.path.ends_with("tls") && p.line == Some(4),
            "{toml}: {p:?}"
        );
        assert!(p.message.contains(needle), "{toml}: {p:?}");
    }
}
