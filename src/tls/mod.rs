//! TLS on either side of a relay, through rustls.
//!
//! A relay may terminate TLS from its clients ([`ServerTls`]) and may speak
//! TLS to its upstream ([`ClientTls`]). Both are described by a spec (plain
//! data that the TOML config and stone's `-z`/`-q` options produce) and
//! built once at start-up, so a missing or unreadable certificate stops
//! `--check` and `-N` instead of the first connection.

mod files;
pub mod stone_opts;
mod verify;

use std::path::PathBuf;
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, ServerConfig, SupportedCipherSuite};
use rustls_pki_types::ServerName;

/// Whether a TLS-terminating listener asks clients for a certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ClientAuth {
    /// Never ask (stone's default, `verify,none`).
    #[default]
    None,
    /// Ask, and check one if it is sent (`verify,ifany`).
    Optional,
    /// Ask and insist (`verify`, `verify,once`).
    Required,
}

/// Protocol versions and cipher suites both sides share.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Suites {
    /// Offer TLS 1.2.
    pub tls12: bool,
    /// Offer TLS 1.3.
    pub tls13: bool,
    /// A colon-separated cipher list (OpenSSL or IANA names); `None` is
    /// rustls's safe default.
    pub ciphers: Option<String>,
    /// Prefer the server's cipher order (server side only).
    pub server_order: bool,
    /// The longest certificate chain accepted from the peer, counting
    /// intermediates (stone's `depth=`).
    pub max_depth: Option<u8>,
}

impl Default for Suites {
    fn default() -> Self {
        Suites {
            tls12: true,
            tls13: true,
            ciphers: None,
            server_order: false,
            max_depth: None,
        }
    }
}

/// TLS offered to clients on a listener.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ServerTlsSpec {
    /// PEM certificate chain.
    pub cert: PathBuf,
    /// PEM private key (may be the same file as `cert`).
    pub key: PathBuf,
    /// CA certificates that sign acceptable client certificates.
    pub client_ca: Vec<PathBuf>,
    /// Whether to ask clients for certificates.
    pub client_auth: ClientAuth,
    /// Versions and ciphers.
    pub suites: Suites,
}

/// TLS spoken to an upstream.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ClientTlsSpec {
    /// Trusted CA files or directories; empty means the system store.
    pub ca: Vec<PathBuf>,
    /// Skip certificate verification. Only an explicit opt-in sets this.
    pub insecure: bool,
    /// The name to verify and send as SNI; default: the upstream host.
    pub server_name: Option<String>,
    /// Client certificate and key for mTLS to the upstream.
    pub cert: Option<(PathBuf, PathBuf)>,
    /// Versions and ciphers.
    pub suites: Suites,
}

/// A built server-side TLS configuration.
#[derive(Clone)]
pub struct ServerTls {
    /// What it was built from (for `--print-toml` and messages).
    pub spec: ServerTlsSpec,
    /// The acceptor used per connection.
    pub acceptor: tokio_rustls::TlsAcceptor,
}

/// A built client-side TLS configuration.
#[derive(Clone)]
pub struct ClientTls {
    /// What it was built from.
    pub spec: ClientTlsSpec,
    /// The connector used per connection.
    pub connector: tokio_rustls::TlsConnector,
}

/// Why a TLS handshake did not complete.
#[derive(Debug)]
pub enum HandshakeError {
    /// The upstream's host is not a name the certificate check can use.
    Name(String),
    /// The handshake failed.
    Failed(std::io::Error),
    /// The peer did not finish it in time.
    TimedOut,
}

impl ServerTls {
    /// The server side of a handshake with a client, within `limit`: every
    /// await on a peer is bounded.
    pub async fn accept_within(
        &self,
        tcp: tokio::net::TcpStream,
        limit: std::time::Duration,
    ) -> Result<tokio_rustls::server::TlsStream<tokio::net::TcpStream>, HandshakeError> {
        match tokio::time::timeout(limit, self.acceptor.accept(tcp)).await {
            Ok(Ok(s)) => Ok(s),
            Ok(Err(e)) => Err(HandshakeError::Failed(e)),
            Err(_) => Err(HandshakeError::TimedOut),
        }
    }
}

impl ClientTls {
    /// The client side of a handshake with an upstream reached as `host`,
    /// within `limit`.
    pub async fn connect_within(
        &self,
        host: &str,
        tcp: tokio::net::TcpStream,
        limit: std::time::Duration,
    ) -> Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>, HandshakeError> {
        let name = self.name_for(host).map_err(HandshakeError::Name)?;
        match tokio::time::timeout(limit, self.connector.connect(name, tcp)).await {
            Ok(Ok(s)) => Ok(s),
            Ok(Err(e)) => Err(HandshakeError::Failed(e)),
            Err(_) => Err(HandshakeError::TimedOut),
        }
    }
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.spec.fmt(f)
    }
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.spec.fmt(f)
    }
}

fn provider(s: &Suites) -> Result<Arc<CryptoProvider>, String> {
    let mut p = rustls::crypto::ring::default_provider();
    if let Some(list) = &s.ciphers {
        p.cipher_suites = select_ciphers(list, &p.cipher_suites)?;
    }
    p.cipher_suites.retain(|c| match c {
        SupportedCipherSuite::Tls12(_) => s.tls12,
        SupportedCipherSuite::Tls13(_) => s.tls13,
    });
    if p.cipher_suites.is_empty() {
        return Err("no cipher suite is left for the allowed TLS versions".into());
    }
    Ok(Arc::new(p))
}

/// Maps an OpenSSL-style cipher list onto rustls's suites. As in OpenSSL,
/// a list that names no TLS 1.3 suite leaves TLS 1.3's defaults alone.
fn select_ciphers(
    list: &str,
    all: &[SupportedCipherSuite],
) -> Result<Vec<SupportedCipherSuite>, String> {
    let name_of = |c: &SupportedCipherSuite| format!("{:?}", c.suite());
    let mut chosen = Vec::new();
    for want in list.split([':', ',', ' ']).filter(|w| !w.is_empty()) {
        let iana = openssl_to_iana(want).unwrap_or_else(|| want.to_ascii_uppercase());
        let found = all.iter().find(|c| {
            let n = name_of(c);
            n == iana || n.replace("TLS13_", "TLS_") == iana
        });
        match found {
            Some(c)
                if !chosen
                    .iter()
                    .any(|x: &SupportedCipherSuite| x.suite() == c.suite()) =>
            {
                chosen.push(*c)
            }
            Some(_) => {}
            None => {
                let names: Vec<String> = all.iter().map(name_of).collect();
                return Err(format!(
                    "cipher {want:?} is not available; rustls offers only: {}",
                    names.join(", ")
                ));
            }
        }
    }
    if !chosen
        .iter()
        .any(|c| matches!(c, SupportedCipherSuite::Tls13(_)))
    {
        chosen.extend(
            all.iter()
                .filter(|c| matches!(c, SupportedCipherSuite::Tls13(_))),
        );
    }
    Ok(chosen)
}

fn openssl_to_iana(name: &str) -> Option<String> {
    let (kx, rest) = if let Some(r) = name.strip_prefix("ECDHE-RSA-") {
        ("ECDHE_RSA", r)
    } else if let Some(r) = name.strip_prefix("ECDHE-ECDSA-") {
        ("ECDHE_ECDSA", r)
    } else {
        return None;
    };
    let bulk = match rest {
        "AES128-GCM-SHA256" => "AES_128_GCM_SHA256",
        "AES256-GCM-SHA384" => "AES_256_GCM_SHA384",
        "CHACHA20-POLY1305" => "CHACHA20_POLY1305_SHA256",
        _ => return None,
    };
    Some(format!("TLS_{kx}_WITH_{bulk}"))
}

fn versions(s: &Suites) -> Vec<&'static rustls::SupportedProtocolVersion> {
    let mut v = Vec::new();
    if s.tls13 {
        v.push(&rustls::version::TLS13);
    }
    if s.tls12 {
        v.push(&rustls::version::TLS12);
    }
    v
}

impl ServerTls {
    /// Loads the certificate, key and client CAs and builds the acceptor.
    pub fn build(spec: ServerTlsSpec) -> Result<ServerTls, String> {
        let provider = provider(&spec.suites)?;
        let chain = files::certs(&spec.cert)?;
        let key = files::key(&spec.key)?;
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&versions(&spec.suites))
            .map_err(|e| format!("TLS versions: {e}"))?;
        let builder = if spec.client_auth == ClientAuth::None {
            builder.with_no_client_auth()
        } else {
            if spec.client_ca.is_empty() {
                return Err(
                    "client certificates are requested but no CA to check them is given".into(),
                );
            }
            let roots = files::roots(&spec.client_ca)?;
            let mut v = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            if spec.client_auth == ClientAuth::Optional {
                v = v.allow_unauthenticated();
            }
            let inner = v.build().map_err(|e| format!("client CA: {e}"))?;
            builder.with_client_cert_verifier(Arc::new(verify::DepthLimitedClient {
                inner,
                max_depth: spec.suites.max_depth,
            }))
        };
        let mut cfg = builder
            .with_single_cert(chain, key)
            .map_err(|e| format!("{} and {}: {e}", spec.cert.display(), spec.key.display()))?;
        cfg.ignore_client_order = spec.suites.server_order;
        Ok(ServerTls {
            spec,
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(cfg)),
        })
    }
}

impl ClientTls {
    /// Loads the trust anchors (or the system store) and builds the connector.
    pub fn build(spec: ClientTlsSpec) -> Result<ClientTls, String> {
        let provider = provider(&spec.suites)?;
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&versions(&spec.suites))
            .map_err(|e| format!("TLS versions: {e}"))?;
        let verifier: Arc<dyn rustls::client::danger::ServerCertVerifier> = if spec.insecure {
            Arc::new(verify::NoVerification { provider })
        } else {
            let roots = if spec.ca.is_empty() {
                files::system_roots()?
            } else {
                files::roots(&spec.ca)?
            };
            let inner = rustls::client::WebPkiServerVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()
            .map_err(|e| format!("CA: {e}"))?;
            Arc::new(verify::DepthLimitedServer {
                inner,
                max_depth: spec.suites.max_depth,
            })
        };
        let builder = builder
            .dangerous()
            .with_custom_certificate_verifier(verifier);
        let cfg = match &spec.cert {
            Some((cert, key)) => builder
                .with_client_auth_cert(files::certs(cert)?, files::key(key)?)
                .map_err(|e| format!("{} and {}: {e}", cert.display(), key.display()))?,
            None => builder.with_no_client_auth(),
        };
        if let Some(name) = &spec.server_name {
            ServerName::try_from(name.as_str())
                .map_err(|_| format!("server name {name:?} is not a valid DNS name or address"))?;
        }
        Ok(ClientTls {
            spec,
            connector: tokio_rustls::TlsConnector::from(Arc::new(cfg)),
        })
    }

    /// The name to verify for an upstream host: the configured one, or the
    /// host itself.
    pub fn name_for(&self, host: &str) -> Result<ServerName<'static>, String> {
        let name = self.spec.server_name.as_deref().unwrap_or(host);
        ServerName::try_from(name.to_string())
            .map_err(|_| format!("{name:?} is not a valid TLS server name"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cipher_lists_map_openssl_names_and_keep_tls13() {
        let all = rustls::crypto::ring::default_provider().cipher_suites;
        let got = select_ciphers("ECDHE-RSA-AES128-GCM-SHA256", &all).unwrap();
        let names: Vec<String> = got.iter().map(|c| format!("{:?}", c.suite())).collect();
        assert!(names.contains(&"TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256".to_string()));
        assert!(!names.contains(&"TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384".to_string()));
        assert!(names.iter().any(|n| n.starts_with("TLS13_")));
        let err = select_ciphers("RC4-MD5", &all).unwrap_err();
        assert!(err.contains("RC4-MD5"), "{err}");
    }
}
