//! `protocol = "sftp"` as the config and the CLI see it: every mistake is
//! named with its key, host keys are made only when asked, and
//! `hash-password` makes hashes the relay accepts. (Transfers with
//! OpenSSH's clients and rclone: tests/system/sftp.sh.)

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use crate::helpers::*;

fn check(dir: &Path, config: &str) -> Output {
    let path = dir.join("relay.toml");
    std::fs::write(&path, config).unwrap();
    Command::new(bin())
        .args(["run", "--check", "-c"])
        .arg(&path)
        .env("TEST_OSS_ID", "LTAItestKeyId")
        .env("TEST_OSS_SECRET", "testSecret")
        .env_remove("UNSET_OSS_SECRET")
        .output()
        .unwrap()
}

fn hash(password: &str) -> Output {
    let mut child = Command::new(bin())
        .arg("hash-password")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(password.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

const RELAY: &str = r#"
[[relay]]
name = "ingest"
protocol = "sftp"
listen = "127.0.0.1:0"
upstream = "oss-ap-northeast-1-internal.aliyuncs.com:80"
"#;

#[test]
fn a_generated_host_key_and_a_hashed_password_make_a_valid_relay() {
    let dir = TempDir::new("sftp-ok");
    let out = hash("s3cret pass\n");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let phc = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert!(phc.starts_with("$argon2id$"), "{phc}");
    let cfg = format!(
        "{RELAY}host_keys = [\"host_key\"]\ngenerate_host_key = true\n\
         credentials = {{ access_key_id_env = \"TEST_OSS_ID\", secret_env = \"TEST_OSS_SECRET\" }}\n\
         mount = \"/mnt/ossfs/\"\n\n[[relay.users]]\nname = \"root\"\npassword_hash = \"{phc}\"\nroot = \"aws-alibaba-oss/\"\n"
    );
    let out = check(&dir.0, &cfg);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(
        err.contains("generated SSH host key") && err.contains("SHA256:"),
        "the new key's fingerprint is reported: {err}"
    );
    let key = dir.0.join("host_key");
    let text = std::fs::read_to_string(&key).unwrap();
    assert!(
        text.starts_with("-----BEGIN OPENSSH PRIVATE KEY-----"),
        "{text}"
    );
    let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the host key is readable by its owner only");
    // The key it made is the key it keeps.
    let out = check(&dir.0, &cfg);
    assert_eq!(out.status.code(), Some(0));
    assert!(!String::from_utf8_lossy(&out.stderr).contains("generated"));
    assert_eq!(std::fs::read_to_string(&key).unwrap(), text);
}

#[test]
fn sftp_mistakes_are_named_with_their_keys() {
    let dir = TempDir::new("sftp-bad");
    std::fs::write(dir.0.join("keys"), "ssh-ed25519 not-base64 someone\n").unwrap();
    let cfg = format!(
        "{RELAY}host_keys = [\"missing_key\"]\n\
         credentials = {{ access_key_id_env = \"TEST_OSS_ID\", secret_env = \"UNSET_OSS_SECRET\" }}\n\
         mount = \"mnt/ossfs\"\n\n\
         [[relay.users]]\nname = \"root\"\nroot = \"aws-alibaba-oss/\"\n\n\
         [[relay.users]]\nname = \"keyed\"\nauthorized_keys = \"keys\"\npassword_hash = \"plaintext\"\nroot = \"b\"\n\n\
         [[relay]]\nlisten = \"127.0.0.1:0\"\nupstream = \"127.0.0.1:80\"\nmount = \"/x\"\n"
    );
    let out = check(&dir.0, &cfg);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    for (key, says) in [
        ("relay[0].host_keys[0]", "does not exist"),
        ("relay[0].host_keys[0]", "generate_host_key = true"),
        (
            "relay[0].credentials.secret_env",
            "UNSET_OSS_SECRET is not set",
        ),
        ("relay[0].mount", "must be an absolute path"),
        (
            "relay[0].users[0]",
            "neither authorized_keys nor password_hash",
        ),
        (
            "relay[0].users[1].authorized_keys",
            "line 1: not a public key",
        ),
        ("relay[0].users[1].password_hash", "ossrelay hash-password"),
        ("relay[1].mount", "only applies to protocol = \"sftp\""),
    ] {
        let line = err
            .lines()
            .find(|l| l.contains(key) && l.contains(says))
            .unwrap_or_else(|| panic!("no {key:?} problem saying {says:?} in:\n{err}"));
        assert!(!line.is_empty());
    }
    assert!(
        !dir.0.join("missing_key").exists(),
        "no host key is made unless generate_host_key = true"
    );
}

#[test]
fn hash_password_refuses_an_empty_password() {
    let out = hash("\n");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("empty"));
    let out = hash("");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no password"));
}
