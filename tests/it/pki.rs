//! Certificates made fresh for each test run (rcgen), and blocking TLS
//! peers built on rustls: an echo server and a one-shot client.

use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

use crate::helpers::read_line;

/// PEM files under one directory.
pub struct Pki {
    /// The test CA's certificate.
    pub ca: PathBuf,
    /// A leaf for localhost and 127.0.0.1 signed by the CA: cert then key.
    pub certkey: PathBuf,
    /// A leaf for the same names signed by a CA nobody trusts.
    pub rogue_certkey: PathBuf,
    /// A client certificate signed by the CA.
    pub client_certkey: PathBuf,
    /// A leaf for `oss.test` and `*.oss.test` signed by the CA.
    #[cfg_attr(not(feature = "store"), allow(dead_code))]
    pub wildcard_certkey: PathBuf,
}

fn ca(name: &str) -> (CertificateParams, KeyPair, String) {
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name.push(DnType::CommonName, name);
    let pem = p.self_signed(&key).unwrap().pem();
    (p, key, pem)
}

/// The common name is the first name: stone checks it against the host it
/// connects to (rustls looks only at the alternative names).
fn leaf(names: &[&str], issuer: &Issuer<'_, &KeyPair>) -> String {
    let key = KeyPair::generate().unwrap();
    let mut p =
        CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
    p.distinguished_name.push(DnType::CommonName, names[0]);
    let cert = p.signed_by(&key, issuer).unwrap();
    format!("{}{}", cert.pem(), key.serialize_pem())
}

impl Pki {
    pub fn new(dir: &Path) -> Pki {
        let (ca_params, ca_key, ca_pem) = ca("ossrelay test CA");
        let (rogue_params, rogue_key, _) = ca("rogue CA");
        let issuer = Issuer::from_params(&ca_params, &ca_key);
        let rogue = Issuer::from_params(&rogue_params, &rogue_key);
        let write = |name: &str, text: String| {
            let p = dir.join(name);
            std::fs::write(&p, text).unwrap();
            p
        };
        Pki {
            ca: write("ca.pem", ca_pem),
            certkey: write("certkey.pem", leaf(&["127.0.0.1", "localhost"], &issuer)),
            rogue_certkey: write("rogue.pem", leaf(&["127.0.0.1", "localhost"], &rogue)),
            client_certkey: write("client.pem", leaf(&["client.test"], &issuer)),
            wildcard_certkey: write("wildcard.pem", leaf(&["oss.test", "*.oss.test"], &issuer)),
        }
    }
}

fn certs(path: &Path) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_file_iter(path)
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

fn roots(ca: &Path) -> rustls::RootCertStore {
    let mut r = rustls::RootCertStore::empty();
    for c in certs(ca) {
        r.add(c).unwrap();
    }
    r
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A TLS server on 127.0.0.1 that answers each line with the same line and
/// closes. Returns its port; it lives as long as the test process.
pub fn tls_echo_server(certkey: &Path) -> u16 {
    let cfg = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            certs(certkey),
            PrivateKeyDer::from_pem_file(certkey).unwrap(),
        )
        .unwrap();
    let cfg = Arc::new(cfg);
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            let cfg = cfg.clone();
            std::thread::spawn(move || {
                let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
                let conn = rustls::ServerConnection::new(cfg).unwrap();
                let mut tls = rustls::StreamOwned::new(conn, s);
                let line = read_line(&mut tls);
                let _ = tls.write_all(&line);
                tls.conn.send_close_notify();
                let _ = tls.flush();
            });
        }
    });
    port
}

/// Connects with TLS (trusting `ca`, optionally presenting a client
/// certificate), sends `msg` (one line) and reports "tls-echoed", "closed",
/// "connect-refused" or the failure.
pub fn tls_echo(addr: SocketAddr, ca: &Path, client: Option<&Path>, msg: &[u8]) -> String {
    let b = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots(ca));
    let cfg = match client {
        Some(ck) => b
            .with_client_auth_cert(certs(ck), PrivateKeyDer::from_pem_file(ck).unwrap())
            .unwrap(),
        None => b.with_no_client_auth(),
    };
    let Ok(s) = TcpStream::connect_timeout(&addr, Duration::from_secs(2)) else {
        return "connect-refused".into();
    };
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let conn =
        rustls::ClientConnection::new(Arc::new(cfg), ServerName::try_from("localhost").unwrap())
            .unwrap();
    let mut tls = rustls::StreamOwned::new(conn, s);
    if let Err(e) = tls.write_all(msg).and_then(|_| tls.flush()) {
        return format!("tls-failed({:?})", e.kind());
    }
    let got = read_line(&mut tls);
    if got == msg {
        "tls-echoed".into()
    } else if got.is_empty() {
        "closed".into()
    } else {
        format!("garbled({} bytes)", got.len())
    }
}
