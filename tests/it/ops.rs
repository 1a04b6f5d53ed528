//! What an operator installs around the relay: the man page and shell
//! completions generated from the CLI definition, and systemd's readiness
//! protocol (READY, STOPPING, WATCHDOG) on a NOTIFY_SOCKET the test binds.

use std::os::unix::net::UnixDatagram;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::helpers::*;

/// Every subcommand `ossrelay --help` lists.
fn subcommands() -> Vec<String> {
    let out = Command::new(bin()).arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout).into_owned();
    help.split("Commands:")
        .nth(1)
        .unwrap_or_default()
        .split("\n\n")
        .next()
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .filter(|c| c != "help")
        .collect()
}

#[test]
fn the_man_page_renders_and_names_every_subcommand() {
    let subs = subcommands();
    assert!(subs.len() >= 5, "subcommands from --help: {subs:?}");
    let page = Command::new(bin()).arg("man").output().unwrap();
    assert!(page.status.success());
    let dir = TempDir::new("man");
    let path = dir.0.join("ossrelay.1");
    std::fs::write(&path, &page.stdout).unwrap();
    let rendered = Command::new("man")
        .arg("-l")
        .arg(&path)
        .env("MANPAGER", "cat")
        .env("MANWIDTH", "100")
        .output();
    let text = match rendered {
        Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout).into_owned(),
        Ok(out) => panic!("man -l failed: {}", String::from_utf8_lossy(&out.stderr)),
        Err(e) => {
            skip_outside_ci("man (man-db) is needed", format_args!("man: {e}"));
            return;
        }
    };
    // Rendered text, with bold and underline overstrikes removed.
    let text: String = text
        .split('\u{8}')
        .enumerate()
        .map(|(i, part)| {
            if i == 0 {
                part
            } else {
                part.get(1..).unwrap_or("")
            }
        })
        .collect();
    for sub in &subs {
        assert!(
            text.contains(&format!("OSSRELAY {}", sub.to_uppercase())),
            "no section for {sub} in the man page:\n{text}"
        );
        assert!(
            text.contains(&format!("ossrelay {sub}")),
            "no synopsis for {sub}"
        );
    }
    assert!(text.contains("--config"), "run's options are missing");
}

#[test]
fn completions_name_every_subcommand_for_each_shell() {
    let subs = subcommands();
    for shell in ["bash", "zsh", "fish"] {
        let out = Command::new(bin())
            .args(["completions", shell])
            .output()
            .unwrap();
        assert!(out.status.success(), "{shell}");
        let text = String::from_utf8_lossy(&out.stdout);
        for sub in &subs {
            assert!(
                text.contains(sub.as_str()),
                "{shell} completions lack {sub}"
            );
        }
    }
    // bash can load what it printed.
    let out = Command::new(bin())
        .args(["completions", "bash"])
        .output()
        .unwrap();
    let dir = TempDir::new("completions");
    let file = dir.0.join("ossrelay.bash");
    std::fs::write(&file, &out.stdout).unwrap();
    let check = Command::new("bash")
        .arg("-c")
        .arg(format!(". {} && complete -p ossrelay", file.display()))
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&check.stdout).contains("ossrelay"),
        "bash did not register the completion: {}",
        String::from_utf8_lossy(&check.stderr)
    );
    let bad = Command::new(bin())
        .args(["completions", "tcsh"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("possible values"));
}

#[test]
fn systemd_hears_ready_watchdog_and_stopping() {
    let dir = TempDir::new("notify");
    let sock_path = dir.0.join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let up = free_port();
    let cfg = dir.0.join("relay.toml");
    let (mut run, _port) = spawn_on_free_port(
        |port| Ready::Bound { port, udp: false },
        &dir.0.join("stderr"),
        |port| {
            std::fs::write(
                &cfg,
                format!(
                    "[[relay]]\nlisten = \"127.0.0.1:{port}\"\nupstream = \"127.0.0.1:{up}\"\n"
                ),
            )
            .unwrap();
            let mut c = Command::new(bin());
            c.args(["run", "--config"])
                .arg(&cfg)
                .env("NOTIFY_SOCKET", &sock_path)
                .env("WATCHDOG_USEC", "200000");
            c
        },
    );
    let mut heard = String::new();
    let wait_for = |what: &str, heard: &mut String| {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut buf = [0u8; 512];
        while !heard.contains(what) {
            assert!(
                Instant::now() < deadline,
                "no {what} from the relay; heard {heard:?}"
            );
            if let Ok(n) = sock.recv(&mut buf) {
                heard.push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        }
    };
    wait_for("READY=1", &mut heard);
    wait_for("WATCHDOG=1", &mut heard);
    // SAFETY: kill(2) on the PID of the child this test spawned.
    assert_eq!(
        unsafe { libc::kill(run.child.id() as libc::pid_t, libc::SIGTERM) },
        0
    );
    wait_for("STOPPING=1", &mut heard);
    let status = run.exit_within(Duration::from_secs(20)).expect("no exit");
    assert!(status.success());
    assert!(heard.find("READY=1") < heard.find("STOPPING=1"), "{heard}");
}

#[test]
fn the_packaged_config_and_unit_are_valid() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new(bin())
        .args(["run", "--check", "--config"])
        .arg(root.join("dist/relay.toml"))
        .output()
        .unwrap();
    assert!(
        out.status.success() && out.stdout == b"ok\n",
        "dist/relay.toml: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The unit's commands name the packaged paths and the config above.
    let unit = std::fs::read_to_string(root.join("dist/systemd/ossrelay.service")).unwrap();
    for line in [
        "Type=notify",
        "ExecStartPre=/usr/bin/ossrelay run -c /etc/ossrelay/relay.toml --check",
        "ExecStart=/usr/bin/ossrelay run -c /etc/ossrelay/relay.toml",
        "AmbientCapabilities=CAP_NET_BIND_SERVICE",
        "SystemCallFilter=@system-service",
    ] {
        assert!(unit.lines().any(|l| l == line), "the unit lacks {line:?}");
    }
}
