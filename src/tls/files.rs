//! Reading PEM certificates, keys and trust anchors, with errors that name
//! the file.

use std::path::{Path, PathBuf};

use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// Where Debian, Fedora and Alpine keep the system CA bundle.
const SYSTEM_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
];

pub fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("{}: {e}", path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "{}: no PEM certificate in the file",
            path.display()
        ));
    }
    Ok(certs)
}

pub fn key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| {
        format!(
            "{}: no usable PEM private key ({e}); encrypted keys are not supported",
            path.display()
        )
    })
}

/// Trust anchors from CA files and directories (stone's `CAfile` and
/// `CApath`). Every certificate must parse: a bad CA file is a config
/// error, not a silently smaller trust store.
pub fn roots(paths: &[PathBuf]) -> Result<RootCertStore, String> {
    let mut store = RootCertStore::empty();
    for p in paths {
        let files: Vec<PathBuf> = if p.is_dir() {
            let mut v: Vec<PathBuf> = std::fs::read_dir(p)
                .map_err(|e| format!("{}: {e}", p.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|f| f.is_file())
                .collect();
            v.sort();
            v
        } else {
            vec![p.clone()]
        };
        for f in files {
            for c in certs(&f)? {
                store
                    .add(c)
                    .map_err(|e| format!("{}: not a usable CA certificate: {e}", f.display()))?;
            }
        }
    }
    if store.is_empty() {
        return Err(format!(
            "no CA certificate found in {}",
            paths
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    Ok(store)
}

/// The system's CA bundle, honouring `SSL_CERT_FILE` as OpenSSL does.
pub fn system_roots() -> Result<RootCertStore, String> {
    let from_env = std::env::var_os("SSL_CERT_FILE").map(PathBuf::from);
    let path = from_env
        .into_iter()
        .chain(SYSTEM_BUNDLES.iter().map(PathBuf::from))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            "no system CA bundle found (install ca-certificates, or give a CA file)".to_string()
        })?;
    let mut store = RootCertStore::empty();
    // System bundles carry a few certificates webpki rejects; skip those.
    let (_, _) = store.add_parsable_certificates(certs(&path)?);
    Ok(store)
}
