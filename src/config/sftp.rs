//! `protocol = "sftp"`: the SSH server's host keys, its users and the
//! credentials it signs storage requests with, validated into [`Sftp`].
//! Files (host keys, authorized_keys) are read here, when the config is
//! loaded, so `ossrelay reload -c` and a reload catch a bad one before any
//! client does.

use std::io::{Read, Write};
use std::path::Path;

use toml::Spanned;

use super::raw::{RawRelay, RawSftpUser};
use super::{Upstream, Validator};
use crate::policy::statement::Policy;

/// Uploads above this go as multipart uploads, in parts of at least this.
pub const DEFAULT_PART_SIZE: usize = 8 << 20;
const DEFAULT_AUTH_ATTEMPTS: usize = 6;

/// An sftp relay's settings.
#[derive(Clone)]
pub struct Sftp {
    /// The storage endpoint; requests go to `bucket.host`.
    pub upstream: Upstream,
    /// The host keys, loaded.
    pub host_keys: Vec<russh::keys::PrivateKey>,
    /// The keys storage requests are signed with.
    pub credentials: Credentials,
    /// The signing region (`oss-ap-northeast-1`).
    pub region: String,
    /// The path clients name for the user's root: "/" or "/mnt/ossfs".
    pub mount: String,
    /// Failed authentications before the connection is closed.
    pub max_auth_attempts: usize,
    /// Who may log in.
    pub users: Vec<User>,
    /// The endpoint policy every operation passes.
    pub policy: Policy,
}

impl std::fmt::Debug for Sftp {
    // Keys and secrets stay out of debug output.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sftp")
            .field("upstream", &self.upstream)
            .field("host_keys", &self.host_keys.len())
            .field("access_key_id", &self.credentials.access_key_id)
            .field("region", &self.region)
            .field("mount", &self.mount)
            .field("users", &self.users.len())
            .finish()
    }
}

impl PartialEq for Sftp {
    // A reload compares configs: two sftp relays are the same when every
    // file they read says the same thing.
    fn eq(&self, o: &Sftp) -> bool {
        let keys = |k: &[russh::keys::PrivateKey]| -> Vec<Vec<u8>> {
            k.iter()
                .map(|k| k.public_key().to_bytes().unwrap_or_default())
                .collect()
        };
        self.upstream == o.upstream
            && keys(&self.host_keys) == keys(&o.host_keys)
            && self.credentials == o.credentials
            && self.region == o.region
            && self.mount == o.mount
            && self.max_auth_attempts == o.max_auth_attempts
            && self.users == o.users
            && self.policy == o.policy
    }
}

impl Eq for Sftp {}

/// An access key pair, read from the environment.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The access key ID.
    pub access_key_id: String,
    /// Its secret.
    pub secret: String,
}

/// One `[[relay.users]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// The SSH login name.
    pub name: String,
    /// Public keys that log in as this user (OpenSSH encoding).
    pub keys: Vec<Vec<u8>>,
    /// An argon2 PHC string (`$argon2id$...`).
    pub password_hash: Option<String>,
    /// The bucket the user sees at the mount.
    pub bucket: String,
    /// A key prefix inside it, empty or ending in `/`.
    pub prefix: String,
    /// Refuse every write.
    pub read_only: bool,
}

/// The signing region OSS's endpoint names imply: `oss-<region>` for
/// `oss-<region>[-internal].aliyuncs.com`.
fn region_of(endpoint: &str) -> Option<String> {
    let first = endpoint.split('.').next()?;
    let rest = &endpoint[first.len()..];
    if rest != ".aliyuncs.com" || !first.starts_with("oss-") {
        return None;
    }
    Some(first.strip_suffix("-internal").unwrap_or(first).to_string())
}

/// 32 bytes from the kernel, for key seeds and salts.
pub fn random_bytes<const N: usize>() -> std::io::Result<[u8; N]> {
    let mut b = [0u8; N];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut b)?;
    Ok(b)
}

/// Makes an argon2id PHC string for `password` (`ossrelay hash-password`).
pub fn hash_password(password: &str) -> Result<String, String> {
    use argon2::password_hash::{PasswordHasher, SaltString};
    let salt = random_bytes::<16>().map_err(|e| format!("reading /dev/urandom: {e}"))?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| e.to_string())?;
    argon2::Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

/// Writes a new ed25519 host key to `path`, readable by its owner only.
fn generate_key(path: &Path) -> Result<russh::keys::PrivateKey, String> {
    use russh::keys::ssh_key::private::{Ed25519Keypair, KeypairData};
    let seed = random_bytes::<32>().map_err(|e| format!("reading /dev/urandom: {e}"))?;
    let pair = KeypairData::from(Ed25519Keypair::from_seed(&seed));
    let key = russh::keys::PrivateKey::new(pair, "ossrelay host key").map_err(|e| e.to_string())?;
    let text = key
        .to_openssh(russh::keys::ssh_key::LineEnding::LF)
        .map_err(|e| e.to_string())?;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| format!("creating {}: {e}", path.display()))?;
    f.write_all(text.as_bytes())
        .map_err(|e| format!("writing {}: {e}", path.display()))?;
    // The config is loaded before logging starts: say it on stderr, where
    // the service manager keeps it, so the fingerprint clients will be
    // shown can be checked.
    eprintln!(
        "ossrelay: generated SSH host key {} ({})",
        path.display(),
        key.fingerprint(Default::default())
    );
    Ok(key)
}

impl Validator<'_> {
    /// The sftp settings of relay `i`; `None` after recording problems.
    pub(super) fn sftp(&mut self, i: usize, r: &RawRelay) -> Option<Sftp> {
        let key = |f: &str| format!("relay[{i}].{f}");
        let before = self.problems.len();
        let generate = r.generate_host_key.unwrap_or(false);
        let mut host_keys = Vec::new();
        match &r.host_keys {
            None => self.missing(
                &key("host_keys"),
                "missing: OpenSSH private key files, e.g. host_keys = [\"/etc/ossrelay/ssh_host_ed25519_key\"] (with generate_host_key = true to create one)",
            ),
            Some(list) => {
                for (j, p) in list.iter().enumerate() {
                    let path = self.base.join(p.get_ref());
                    let loaded = if generate && !path.exists() {
                        generate_key(&path)
                    } else if !path.exists() {
                        Err(format!(
                            "{} does not exist; create it with ssh-keygen -t ed25519 -N '' -f {}, or set generate_host_key = true",
                            path.display(),
                            path.display()
                        ))
                    } else {
                        russh::keys::load_secret_key(&path, None)
                            .map_err(|e| format!("{}: not a readable unencrypted OpenSSH private key: {e}", path.display()))
                    };
                    match loaded {
                        Ok(k) => host_keys.push(k),
                        Err(e) => self.problem(&format!("relay[{i}].host_keys[{j}]"), p, e),
                    }
                }
            }
        }
        let credentials = match &r.credentials {
            None => {
                self.missing(&key("credentials"), "missing: credentials = { access_key_id_env = \"OSS_ACCESS_KEY_ID\", secret_env = \"OSS_ACCESS_KEY_SECRET\" }");
                None
            }
            Some(c) => {
                let raw = c.get_ref();
                let mut env = |field: &str, name: &Option<String>| -> Option<String> {
                    let Some(name) = name else {
                        self.problem(
                            &format!("relay[{i}].credentials.{field}"),
                            c,
                            "missing: the name of an environment variable".into(),
                        );
                        return None;
                    };
                    match std::env::var(name) {
                        Ok(v) if !v.is_empty() => Some(v),
                        _ => {
                            self.problem(
                                &format!("relay[{i}].credentials.{field}"),
                                c,
                                format!("the environment variable {name} is not set"),
                            );
                            None
                        }
                    }
                };
                let id = env("access_key_id_env", &raw.access_key_id_env);
                let secret = env("secret_env", &raw.secret_env);
                id.zip(secret).map(|(access_key_id, secret)| Credentials {
                    access_key_id,
                    secret,
                })
            }
        };
        // The generic relay code parses and reports `upstream`; the
        // region only needs its host name.
        let upstream = r
            .upstream
            .as_ref()
            .and_then(|u| Upstream::parse(u.get_ref()).ok())
            .unwrap_or(Upstream {
                host: String::new(),
                port: 0,
            });
        let region = match &r.region {
            Some(rg) => rg.get_ref().clone(),
            None => region_of(&upstream.host).unwrap_or_else(|| "us-east-1".into()),
        };
        let mount = match &r.mount {
            None => "/".to_string(),
            Some(m) => {
                let t = m.get_ref().trim_end_matches('/');
                if !m.get_ref().starts_with('/') || t.split('/').any(|c| c == "." || c == "..") {
                    self.problem(
                        &key("mount"),
                        m,
                        "must be an absolute path without . or .. components, e.g. \"/mnt/ossfs\""
                            .into(),
                    );
                }
                if t.is_empty() {
                    "/".into()
                } else {
                    t.to_string()
                }
            }
        };
        let max_auth_attempts = self
            .count(&key("max_auth_attempts"), &r.max_auth_attempts, 100)
            .unwrap_or(DEFAULT_AUTH_ATTEMPTS);
        let mut users: Vec<User> = Vec::new();
        if r.users.as_ref().is_none_or(|u| u.is_empty()) {
            self.missing(&key("users"), "an sftp relay needs at least one [[relay.users]] with a name, a root and authorized_keys or password_hash");
        }
        for (j, u) in r.users.iter().flatten().enumerate() {
            if let Some(user) = self.sftp_user(&format!("relay[{i}].users[{j}]"), u) {
                if users.iter().any(|x| x.name == user.name) {
                    self.problem(
                        &format!("relay[{i}].users[{j}].name"),
                        u,
                        format!("user {:?} is defined twice", user.name),
                    );
                }
                users.push(user);
            }
        }
        let policy = self.endpoint_policy(i, r, false);
        for (field, set) in [
            ("tls", r.tls.is_some()),
            ("upstream_tls", r.upstream_tls.is_some()),
            ("upstream_group", r.upstream_group.is_some()),
            ("backup", r.backup.is_some()),
        ] {
            if set {
                self.missing(&key(field), "does not apply to protocol = \"sftp\"");
            }
        }
        if self.problems.len() != before {
            return None;
        }
        Some(Sftp {
            upstream,
            host_keys,
            credentials: credentials?,
            region,
            mount,
            max_auth_attempts,
            users,
            policy,
        })
    }

    fn sftp_user(&mut self, path: &str, u: &Spanned<RawSftpUser>) -> Option<User> {
        let raw = u.get_ref();
        let before = self.problems.len();
        let name = raw.name.clone().unwrap_or_default();
        if name.is_empty() || name.chars().any(|c| c.is_whitespace() || c == ':') {
            self.problem(
                &format!("{path}.name"),
                u,
                format!("{name:?} is not a user name"),
            );
        }
        let root = raw.root.clone().unwrap_or_default();
        let (bucket, prefix) = match root.split_once('/') {
            Some((b, p)) => (b.to_string(), p.trim_matches('/').to_string()),
            None => (root.clone(), String::new()),
        };
        let prefix = if prefix.is_empty() {
            prefix
        } else {
            format!("{prefix}/")
        };
        if bucket.is_empty() || prefix.split('/').any(|c| c == "." || c == "..") {
            self.problem(
                &format!("{path}.root"),
                u,
                format!(
                    "{root:?}: expected bucket or bucket/prefix, e.g. root = \"aws-alibaba-oss/\""
                ),
            );
        }
        let mut keys = Vec::new();
        if let Some(file) = &raw.authorized_keys {
            let file = self.base.join(file);
            match std::fs::read_to_string(&file) {
                Err(e) => self.problem(
                    &format!("{path}.authorized_keys"),
                    u,
                    format!("{}: {e}", file.display()),
                ),
                Ok(text) => {
                    for (n, line) in text.lines().enumerate() {
                        let line = line.trim();
                        if line.is_empty() || line.starts_with('#') {
                            continue;
                        }
                        match russh::keys::ssh_key::PublicKey::from_openssh(line) {
                            Ok(k) => keys.push(k.to_bytes().unwrap_or_default()),
                            Err(e) => self.problem(
                                &format!("{path}.authorized_keys"),
                                u,
                                format!("{} line {}: not a public key ({e}); options such as from=\"…\" are not supported", file.display(), n + 1),
                            ),
                        }
                    }
                }
            }
        }
        if let Some(h) = &raw.password_hash {
            if let Err(e) = argon2::password_hash::PasswordHash::new(h) {
                self.problem(
                    &format!("{path}.password_hash"),
                    u,
                    format!(
                        "not a PHC password hash ({e}); make one with `ossrelay hash-password`"
                    ),
                );
            }
        }
        if raw.authorized_keys.is_none() && raw.password_hash.is_none() {
            self.problem(
                path,
                u,
                format!("user {name:?} has neither authorized_keys nor password_hash, so nobody could log in as it"),
            );
        }
        (self.problems.len() == before).then(|| User {
            name,
            keys,
            password_hash: raw.password_hash.clone(),
            bucket,
            prefix,
            read_only: raw.read_only.unwrap_or(false),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn region_comes_from_oss_endpoint_names() {
        assert_eq!(
            region_of("oss-ap-northeast-1-internal.aliyuncs.com").as_deref(),
            Some("oss-ap-northeast-1")
        );
        assert_eq!(
            region_of("oss-cn-hangzhou.aliyuncs.com").as_deref(),
            Some("oss-cn-hangzhou")
        );
        assert_eq!(region_of("s3.example.com"), None);
    }

    #[test]
    fn a_password_hash_verifies_its_password_only() {
        use argon2::password_hash::{PasswordHash, PasswordVerifier};
        let h = hash_password("correct horse").unwrap();
        assert!(h.starts_with("$argon2id$"), "{h}");
        let parsed = PasswordHash::new(&h).unwrap();
        let a = argon2::Argon2::default();
        assert!(a.verify_password(b"correct horse", &parsed).is_ok());
        assert!(a.verify_password(b"wrong", &parsed).is_err());
    }
}
