//! stone's `-q <SSL>` (client side) and `-z <SSL>` (server side) options.
//!
//! Each option word applies to the stones defined after it; `default`
//! forgets the earlier ones. A word is checked when it is given, so a typo
//! fails at once, and turned into a spec when a `/ssl` stone is defined.
//! Options that rustls cannot honour (SSLv2/3, TLS 1.0/1.1, CRLs, PKCS#12,
//! encrypted keys, Windows stores, certificate regexes) are refused with
//! the reason; none is dropped silently.

use std::path::PathBuf;

use super::{ClientAuth, ClientTlsSpec, ServerTlsSpec, Suites};

/// Which of stone's two option sets a word belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// `-q`: stone connects to a TLS upstream.
    Client,
    /// `-z`: clients connect to stone with TLS.
    Server,
}

impl Side {
    fn flag(self) -> &'static str {
        match self {
            Side::Client => "-q",
            Side::Server => "-z",
        }
    }
}

/// One option word's effect.
enum Effect {
    Nothing,
    Verify(ClientAuth, bool),
    Depth(u8),
    Only12,
    No12,
    ServerName(String),
    ServerOrder,
    Key(PathBuf),
    Cert(PathBuf),
    CertKey(PathBuf),
    Ca(PathBuf),
    Ciphers(String),
}

fn refuse(word: &str, why: &str) -> String {
    format!("SSL option {word:?}: not supported: {why}")
}

fn effect(side: Side, word: &str) -> Result<Effect, String> {
    let (name, value) = match word.split_once('=') {
        Some((n, v)) => (n, Some(v)),
        None => (word, None),
    };
    let need = |v: Option<&str>| -> Result<String, String> {
        match v {
            Some(v) if !v.is_empty() => Ok(v.to_string()),
            _ => Err(format!("SSL option {name}= needs a value")),
        }
    };
    Ok(match name {
        "default" | "verbose" | "no_tls1" | "no_tls1.1" | "no_ssl2" | "no_ssl3" | "sni"
        | "bugs" | "sid_ctx" => Effect::Nothing,
        "verify" => Effect::Verify(ClientAuth::Required, true),
        "verify,once" => Effect::Verify(ClientAuth::Required, true),
        "verify,ifany" => Effect::Verify(ClientAuth::Optional, true),
        "verify,none" => Effect::Verify(ClientAuth::None, false),
        "depth" => {
            let v = need(value)?;
            match v.parse::<u8>() {
                Ok(n) if n <= 9 => Effect::Depth(n),
                _ => {
                    return Err(format!(
                        "SSL option depth={v}: expected a number from 0 to 9"
                    ))
                }
            }
        }
        "tls1.2" => Effect::Only12,
        "no_tls1.2" => Effect::No12,
        "tls1" | "tls1.1" | "ssl2" | "ssl3" => {
            return Err(refuse(
                word,
                "rustls speaks only TLS 1.2 and 1.3; older versions are insecure",
            ))
        }
        "servername" => Effect::ServerName(need(value)?),
        "serverpref" => Effect::ServerOrder,
        "shutdown" => match value {
            Some("accurate" | "nowait" | "unclean") => Effect::Nothing,
            _ => {
                return Err(format!(
                    "SSL option {word:?}: expected shutdown=accurate, nowait or unclean"
                ))
            }
        },
        "key" => Effect::Key(need(value)?.into()),
        "cert" => Effect::Cert(need(value)?.into()),
        "certkey" => Effect::CertKey(need(value)?.into()),
        "CAfile" | "CApath" => Effect::Ca(need(value)?.into()),
        "cipher" => Effect::Ciphers(need(value)?),
        "crl_check" | "crl_check_all" => {
            return Err(refuse(word, "certificate revocation lists are not checked"))
        }
        "uniq" => {
            return Err(refuse(
                word,
                "pinning the peer's serial number is not implemented",
            ))
        }
        "passfile" | "passfilepat" => {
            return Err(refuse(
                word,
                "encrypted private keys are not supported; decrypt the key file",
            ))
        }
        "keypat" | "certpat" | "certkeypat" => {
            return Err(refuse(
                word,
                "per-name certificate file patterns are not implemented",
            ))
        }
        "pfx" | "pfxpat" => {
            return Err(refuse(
                word,
                "PKCS#12 bags are not supported; convert to PEM",
            ))
        }
        "store" | "storeCA" => {
            return Err(refuse(
                word,
                "the Windows certificate store does not exist here",
            ))
        }
        n if is_indexed(n, "re") => {
            return Err(refuse(
                word,
                "matching the peer certificate against a regex is not implemented",
            ))
        }
        n if is_indexed(n, "lb") => {
            return Err(refuse(
                word,
                "choosing the destination by the peer certificate is not implemented",
            ))
        }
        _ => {
            return Err(format!(
                "{}: unknown SSL option {word:?} (see `stone -h ssl`)",
                side.flag()
            ))
        }
    })
}

fn is_indexed(name: &str, prefix: &str) -> bool {
    name.strip_prefix(prefix).is_some_and(|n| {
        !n.is_empty()
            && n.trim_start_matches('-')
                .bytes()
                .all(|b| b.is_ascii_digit())
    })
}

/// Checks one option word as it is given; `Ok(true)` means it is `default`
/// and the caller forgets the words before it.
pub fn check(side: Side, word: &str) -> Result<bool, String> {
    effect(side, word).map_err(|e| format!("{} {e}", side.flag()))?;
    Ok(word == "default")
}

fn suites_and_files(
    side: Side,
    words: &[String],
) -> Result<(Suites, ClientAuth, bool, Files), String> {
    let mut s = Suites::default();
    let mut auth = ClientAuth::None;
    let mut verify = true;
    let mut f = Files::default();
    for w in words {
        match effect(side, w)? {
            Effect::Nothing => {}
            Effect::Verify(a, v) => {
                auth = a;
                verify = v;
            }
            Effect::Depth(d) => s.max_depth = Some(d),
            Effect::Only12 => {
                s.tls12 = true;
                s.tls13 = false;
            }
            Effect::No12 => s.tls12 = false,
            Effect::ServerName(n) => f.server_name = Some(n),
            Effect::ServerOrder => s.server_order = true,
            Effect::Key(k) => f.key = Some(k),
            Effect::Cert(c) => f.cert = Some(c),
            Effect::CertKey(c) => {
                f.cert = Some(c.clone());
                f.key = Some(c);
            }
            Effect::Ca(c) => f.ca.push(c),
            Effect::Ciphers(c) => s.ciphers = Some(c),
        }
    }
    Ok((s, auth, verify, f))
}

#[derive(Default)]
struct Files {
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    ca: Vec<PathBuf>,
    server_name: Option<String>,
}

/// Where Debian's stone looks for its certificate and key when no `-z
/// cert=` is given.
pub const DEFAULT_CERTKEY: &str = "/usr/lib/ssl/certs/stone.pem";

/// The `-z` words in force for a `<sport>/ssl` stone.
pub fn server_spec(words: &[String]) -> Result<ServerTlsSpec, String> {
    server_spec_with_default(words, std::path::Path::new(DEFAULT_CERTKEY))
}

fn server_spec_with_default(
    words: &[String],
    default: &std::path::Path,
) -> Result<ServerTlsSpec, String> {
    let (suites, client_auth, _, f) = suites_and_files(Side::Server, words)?;
    let cert = match f.cert {
        Some(c) => c,
        None if default.is_file() => default.to_path_buf(),
        None => {
            return Err(format!(
                "<sport>/ssl needs a certificate: give -z cert=FILE -z key=FILE or -z certkey=FILE before the stone (stone's default {} does not exist)",
                default.display()
            ))
        }
    };
    let key = f.key.unwrap_or_else(|| cert.clone());
    Ok(ServerTlsSpec {
        cert,
        key,
        client_ca: f.ca,
        client_auth,
        suites,
    })
}

/// The `-q` words in force for a `<host>:<port>/ssl` stone. Unlike stone,
/// the upstream certificate is verified unless `-q verify,none` is given.
pub fn client_spec(words: &[String]) -> Result<ClientTlsSpec, String> {
    let (suites, _, verify, f) = suites_and_files(Side::Client, words)?;
    let cert = match (f.cert, f.key) {
        (Some(c), Some(k)) => Some((c, k)),
        (Some(c), None) => Some((c.clone(), c)),
        (None, Some(_)) => return Err("-q key= without -q cert=".into()),
        (None, None) => None,
    };
    Ok(ClientTlsSpec {
        ca: f.ca,
        insecure: !verify,
        server_name: f.server_name,
        cert,
        suites,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn options_accumulate_into_specs() {
        let s = server_spec(&w(&[
            "certkey=/k.pem",
            "verify,ifany",
            "CAfile=/ca.pem",
            "tls1.2",
        ]))
        .unwrap();
        assert_eq!(s.cert, PathBuf::from("/k.pem"));
        assert_eq!(s.key, PathBuf::from("/k.pem"));
        assert_eq!(s.client_auth, ClientAuth::Optional);
        assert!(!s.suites.tls13);
        let c = client_spec(&w(&["verify,none", "servername=oss.example", "depth=2"])).unwrap();
        assert!(c.insecure);
        assert_eq!(c.server_name.as_deref(), Some("oss.example"));
        assert_eq!(c.suites.max_depth, Some(2));
        assert!(!client_spec(&w(&["CAfile=/ca.pem"])).unwrap().insecure);
    }

    #[test]
    fn refusals_and_typos_name_the_word() {
        for bad in [
            "ssl3",
            "tls1",
            "re0=CN=x",
            "pfx=/a.p12",
            "crl_check",
            "lb0=2",
            "depth=12",
        ] {
            let e = check(Side::Client, bad).unwrap_err();
            assert!(e.contains(bad.split('=').next().unwrap()), "{bad}: {e}");
        }
        assert!(check(Side::Server, "cerf=/x")
            .unwrap_err()
            .contains("unknown SSL option"));
        assert!(check(Side::Client, "default").unwrap());
        let missing = std::path::Path::new("/nonexistent/stone.pem");
        let e = server_spec_with_default(&w(&["verify"]), missing).unwrap_err();
        assert!(
            e.contains("needs a certificate") && e.contains("/nonexistent/stone.pem"),
            "{e}"
        );
        let here = std::env::current_exe().unwrap();
        assert_eq!(server_spec_with_default(&[], &here).unwrap().cert, here);
    }
}
