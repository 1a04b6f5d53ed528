//! The `tls` and `upstream_tls` tables of a relay, turned into built
//! rustls configurations (files are read here, so `--check` catches a
//! missing key). Relative file names are relative to the config file.

use std::path::Path;

use super::raw::{RawTls, RawUpstreamTls};
use crate::tls::{ClientAuth, ClientTls, ClientTlsSpec, ServerTls, ServerTlsSpec, Suites};

fn suites(min_version: Option<&str>, ciphers: Option<&String>) -> Result<Suites, String> {
    let tls12 = match min_version {
        None | Some("1.2") => true,
        Some("1.3") => false,
        Some(v) => {
            return Err(format!(
                "min_version {v:?}: expected \"1.2\" or \"1.3\" (older versions are insecure and unsupported)"
            ))
        }
    };
    Ok(Suites {
        tls12,
        ciphers: ciphers.cloned(),
        ..Suites::default()
    })
}

pub fn server(raw: &RawTls, base: &Path) -> Result<ServerTls, String> {
    let at = |p: &String| base.join(p);
    let client_auth = match (raw.client_auth.as_deref(), &raw.client_ca) {
        (None, None) | (Some("none"), _) => ClientAuth::None,
        (None, Some(_)) | (Some("required"), _) => ClientAuth::Required,
        (Some("optional"), _) => ClientAuth::Optional,
        (Some(other), _) => {
            return Err(format!(
                "client_auth {other:?}: expected \"none\", \"optional\" or \"required\""
            ))
        }
    };
    ServerTls::build(ServerTlsSpec {
        cert: at(&raw.cert),
        key: at(&raw.key),
        client_ca: raw.client_ca.iter().map(at).collect(),
        client_auth,
        suites: suites(raw.min_version.as_deref(), raw.ciphers.as_ref())?,
    })
}

pub fn upstream(raw: &RawUpstreamTls, base: &Path) -> Result<ClientTls, String> {
    let at = |p: &String| base.join(p);
    let cert = match (&raw.cert, &raw.key) {
        (Some(c), k) => Some((at(c), at(k.as_ref().unwrap_or(c)))),
        (None, Some(_)) => return Err("key without cert".into()),
        (None, None) => None,
    };
    if raw.insecure && raw.ca.is_some() {
        return Err("insecure = true ignores `ca`; set one or the other".into());
    }
    ClientTls::build(ClientTlsSpec {
        ca: raw.ca.iter().map(at).collect(),
        insecure: raw.insecure,
        server_name: raw.server_name.clone(),
        cert,
        suites: suites(raw.min_version.as_deref(), raw.ciphers.as_ref())?,
    })
}
