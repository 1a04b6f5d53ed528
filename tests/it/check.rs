//! `ossrelay check` from the client side, against `ossrelay store` behind a
//! relay (all checks pass), a plain nginx (not OSS-like), a name that
//! resolves elsewhere, a relay that is down, and HTTPS with a bucket name
//! that a wildcard certificate cannot cover.

use std::path::Path;
use std::process::Command;

use crate::helpers::{bin, free_port, skip_outside_ci, spawn_until_ready, Ready, Running, TempDir};

/// The store on one port and a relay to it on another; returns the relay port.
fn store_behind_relay(dir: &Path) -> (Running, Running, u16) {
    let root = dir.join("root");
    std::fs::create_dir_all(&root).unwrap();
    let store_port = free_port();
    let store = spawn_until_ready(
        Command::new(bin())
            .args(["store", "--root"])
            .arg(&root)
            .args(["--listen", &format!("127.0.0.1:{store_port}")])
            .args(["--domain", "oss.test", "--bucket", "bkt"])
            .args(["--access-key", "AK", "--secret-key", "SK"]),
        &dir.join("store.stderr"),
        Ready::Connect(store_port),
    );
    let relay_port = free_port();
    let relay = spawn_until_ready(
        Command::new(bin()).args([
            "stone",
            &format!("127.0.0.1:{store_port}"),
            &format!("127.0.0.1:{relay_port}"),
        ]),
        &dir.join("relay.stderr"),
        Ready::Connect(relay_port),
    );
    (store, relay, relay_port)
}

fn check(args: &[&str], env: &[(&str, &Path)]) -> (i32, serde_json::Value) {
    let mut cmd = Command::new(bin());
    cmd.args(["check", "--json", "--timeout", "5"]).args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let v: serde_json::Value = serde_json::from_str(text.trim())
        .unwrap_or_else(|e| panic!("{e}: {text} {}", String::from_utf8_lossy(&out.stderr)));
    (out.status.code().unwrap_or(-1), v)
}

fn item<'a>(v: &'a serde_json::Value, check: &str, target: &str) -> &'a serde_json::Value {
    v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["check"] == check && i["target"] == target)
        .unwrap_or_else(|| panic!("no {check} {target} in {v}"))
}

#[test]
fn the_private_path_passes_every_check() {
    let dir = TempDir::new("check-ok");
    let (_s, _r, port) = store_behind_relay(&dir.0);
    let p = port.to_string();
    let (code, v) = check(
        &[
            "--endpoint",
            "oss.test",
            "--bucket",
            "bkt",
            "--port",
            &p,
            "--resolve",
            "oss.test=127.0.0.1",
            "--resolve",
            "bkt.oss.test=127.0.0.1",
            "--expect-relay",
            "127.0.0.1",
            "--access-key",
            "AK",
            "--secret-key",
            "SK",
            "--upload-test",
            "1M",
        ],
        &[],
    );
    assert_eq!((code, &v["ok"]), (0, &serde_json::json!(true)), "{v}");
    let anon = item(&v, "anonymous", "bkt.oss.test");
    assert!(
        anon["detail"]
            .as_str()
            .unwrap()
            .contains("403 AccessDenied"),
        "{anon}"
    );
    assert_eq!(anon["request_id"].as_str().unwrap().len(), 24, "{anon}");
    assert!(item(&v, "upload", "bkt.oss.test")["detail"]
        .as_str()
        .unwrap()
        .contains("read back identical"));
    // Wrong keys: the signed check fails with the S3 error code.
    let (code, v) = check(
        &[
            "--endpoint",
            "oss.test",
            "--bucket",
            "bkt",
            "--port",
            &p,
            "--resolve",
            "oss.test=127.0.0.1",
            "--resolve",
            "bkt.oss.test=127.0.0.1",
            "--access-key",
            "AK",
            "--secret-key",
            "wrong",
        ],
        &[],
    );
    assert_eq!(code, 1);
    let signed = item(&v, "signed", "bkt.oss.test");
    assert!(
        signed["detail"]
            .as_str()
            .unwrap()
            .contains("SignatureDoesNotMatch"),
        "{signed}"
    );
}

#[test]
fn a_plain_web_server_is_not_oss_like() {
    if Command::new("nginx").arg("-v").output().is_err() {
        skip_outside_ci(
            "CI must install nginx",
            format_args!("a_plain_web_server_is_not_oss_like: nginx not installed"),
        );
        return;
    }
    let dir = TempDir::new("check-nginx");
    let port = free_port();
    let conf = dir.0.join("nginx.conf");
    let d = dir.0.display();
    std::fs::write(
        &conf,
        // One process: killing it by PID leaves no orphaned workers.
        format!("master_process off;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\nevents {{}}\nhttp {{\n access_log off;\n client_body_temp_path {d};\n proxy_temp_path {d};\n fastcgi_temp_path {d};\n uwsgi_temp_path {d};\n scgi_temp_path {d};\n server {{ listen 127.0.0.1:{port}; location / {{ return 200 \"hello\\n\"; }} }}\n}}\n"),
    )
    .unwrap();
    let _nginx = spawn_until_ready(
        Command::new("nginx")
            .args(["-e", &format!("{d}/error.log"), "-g", "daemon off;", "-c"])
            .arg(&conf),
        &dir.0.join("nginx.stderr"),
        Ready::Connect(port),
    );
    let (code, v) = check(
        &[
            "--endpoint",
            "oss.test",
            "--bucket",
            "bkt",
            "--port",
            &port.to_string(),
            "--resolve",
            "oss.test=127.0.0.1",
            "--resolve",
            "bkt.oss.test=127.0.0.1",
        ],
        &[],
    );
    assert_eq!(code, 1, "{v}");
    let anon = item(&v, "anonymous", "bkt.oss.test");
    let detail = anon["detail"].as_str().unwrap();
    assert!(
        anon["ok"] == false && detail.contains("not OSS-like") && detail.contains("nginx"),
        "{anon}"
    );
}

#[test]
fn a_refusal_by_the_relays_own_policy_fails_and_says_so() {
    let dir = TempDir::new("check-policy");
    let (_s, _r, store_side) = store_behind_relay(&dir.0);
    // An http gateway in front that allows another bucket only.
    let port = free_port();
    let cfg = dir.0.join("gw.toml");
    std::fs::write(
        &cfg,
        format!("[[relay]]\nprotocol = \"http\"\nlisten = \"127.0.0.1:{port}\"\nroutes = [{{ host = \"*.oss.test\", upstream = \"127.0.0.1:{store_side}\" }}, {{ host = \"oss.test\", upstream = \"127.0.0.1:{store_side}\" }}]\nbuckets = [\"another\"]\n"),
    )
    .unwrap();
    let _gw = spawn_until_ready(
        Command::new(bin()).args(["run", "-c"]).arg(&cfg),
        &dir.0.join("gw.stderr"),
        Ready::Connect(port),
    );
    let p = port.to_string();
    let (code, v) = check(
        &[
            "--endpoint",
            "oss.test",
            "--bucket",
            "bkt",
            "--port",
            &p,
            "--resolve",
            "oss.test=127.0.0.1",
            "--resolve",
            "bkt.oss.test=127.0.0.1",
            "--access-key",
            "AK",
            "--secret-key",
            "SK",
        ],
        &[],
    );
    assert_eq!(code, 1, "{v}");
    for check in ["anonymous", "signed"] {
        let i = item(&v, check, "bkt.oss.test");
        let detail = i["detail"].as_str().unwrap();
        assert!(
            i["ok"] == false && detail.contains("refused by the relay's bucket policy"),
            "{i}"
        );
    }
}

#[test]
fn wrong_resolution_missing_names_and_a_dead_relay_fail_with_reasons() {
    let dead = free_port().to_string();
    let (code, v) = check(
        &[
            "--endpoint",
            "oss.test",
            "--bucket",
            "bkt",
            "--bucket",
            "gone",
            "--port",
            &dead,
            "--expect-relay",
            "127.0.0.1",
            "--resolve",
            "oss.test=127.0.0.1",
            "--resolve",
            "bkt.oss.test=127.0.0.2",
        ],
        &[],
    );
    assert_eq!(code, 1);
    assert!(item(&v, "resolve", "bkt.oss.test")["detail"]
        .as_str()
        .unwrap()
        .contains("not the relay 127.0.0.1"));
    let gone = item(&v, "resolve", "gone.oss.test");
    assert!(
        gone["ok"] == false
            && gone["detail"]
                .as_str()
                .unwrap()
                .contains("does not resolve"),
        "{gone}"
    );
    // In words, not the resolver's internals.
    assert!(
        !gone["detail"].as_str().unwrap().contains("Query {"),
        "{gone}"
    );
    let conn = item(&v, "connect", "oss.test");
    assert!(
        conn["ok"] == false && conn["detail"].as_str().unwrap().contains("refused"),
        "{conn}"
    );
}

#[test]
fn https_certificates_are_checked_and_dotted_buckets_explained() {
    let dir = TempDir::new("check-https");
    let pki = crate::pki::Pki::new(&dir.0);
    let (_s, _r, plain) = store_behind_relay(&dir.0);
    let port = free_port();
    let cfg = dir.0.join("tls.toml");
    std::fs::write(
        &cfg,
        format!("[[relay]]\nlisten = \"127.0.0.1:{port}\"\nupstream = \"127.0.0.1:{plain}\"\ntls = {{ cert = \"{w}\", key = \"{w}\" }}\n", w = pki.wildcard_certkey.display()),
    )
    .unwrap();
    let _tls = spawn_until_ready(
        Command::new(bin()).args(["run", "-c"]).arg(&cfg),
        &dir.0.join("tls.stderr"),
        Ready::Connect(port),
    );
    let (code, v) = check(
        &[
            "--endpoint",
            "oss.test",
            "--bucket",
            "bkt",
            "--bucket",
            "my.dotted",
            "--https",
            "--port",
            &port.to_string(),
            "--resolve",
            "oss.test=127.0.0.1",
            "--resolve",
            "bkt.oss.test=127.0.0.1",
            "--resolve",
            "my.dotted.oss.test=127.0.0.1",
        ],
        &[("SSL_CERT_FILE", &pki.ca)],
    );
    assert_eq!(code, 1, "{v}");
    assert_eq!(item(&v, "certificate", "bkt.oss.test")["ok"], true, "{v}");
    assert_eq!(item(&v, "anonymous", "bkt.oss.test")["ok"], true, "{v}");
    let dotted = item(&v, "certificate", "my.dotted.oss.test");
    assert!(
        dotted["ok"] == false
            && dotted["detail"]
                .as_str()
                .unwrap()
                .contains("exactly one label"),
        "{dotted}"
    );
}

/// In text mode the checklist is printed line by line as each check ends, so
/// the upload test's progress bar comes after the checks that ran before it
/// and just before its own `upload` line, not above the whole list.
#[test]
fn the_upload_progress_bar_comes_after_the_earlier_checks() {
    let dir = TempDir::new("check-order");
    let (_s, _r, port) = store_behind_relay(&dir.0);
    let p = port.to_string();
    let out = Command::new(bin())
        .args(["check", "--timeout", "5", "--endpoint", "oss.test"])
        .args(["--bucket", "bkt", "--port", &p])
        .args(["--resolve", "oss.test=127.0.0.1"])
        .args(["--resolve", "bkt.oss.test=127.0.0.1"])
        .args(["--access-key", "AK", "--secret-key", "SK"])
        .args(["--upload-test", "1M"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    let at = |needle: &str| {
        text.find(needle)
            .unwrap_or_else(|| panic!("no {needle:?} in:\n{text}"))
    };
    let signed = at("✔ signed");
    let bar = at("100%");
    let upload = at("✔ upload");
    assert!(
        signed < bar && bar < upload,
        "expected the signed check, then the bar, then the upload line:\n{text}"
    );
}
