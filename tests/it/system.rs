//! The blog's topology in network namespaces with real clients.
//!
//! tests/system/blog.sh runs awscli, s3cmd and rclone once each with
//! ossrelay, Debian's stone, ossrelay through a symlink named `stone`, and
//! ossrelay with its DNS responder instead of any hosts lines, that again in
//! http gateway mode with a bucket allowlist (plain and TLS-terminating),
//! and the forward proxy with only proxy settings on the client.
//! tests/system/sftp.sh puts the sftp relay on the blog's ECS host and runs
//! OpenSSH's scp (SFTP and legacy) and sftp, sshpass and rclone's sftp
//! backend against it. Both need root; they skip with the reason printed
//! otherwise, and never skip under CI.

use std::path::Path;
use std::process::Command;

/// Runs `tests/system/<script> OSSRELAY_BIN <args>`, which must end with
/// `steps passed (<label>)`.
fn run(script: &str, args: &[&str], label: &str) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/system")
        .join(script);
    let out = Command::new("bash")
        .arg(&script)
        .arg(crate::helpers::bin())
        .args(args)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    match out.status.code() {
        Some(0) => {
            assert!(
                stdout.contains(&format!("steps passed ({label})")),
                "{stdout}"
            );
            eprintln!("{stdout}");
        }
        Some(77) => crate::helpers::skip_outside_ci(
            &format!("system test skipped under CI: {stdout}"),
            format_args!("system test ({label}): {}", stdout.trim()),
        ),
        code => panic!("system test ({label}) failed with {code:?}:\n{stdout}\n{stderr}"),
    }
}

#[test]
fn blog_topology_with_real_clients() {
    for kind in [
        "ossrelay",
        "stone",
        "symlink",
        "dns",
        "gateway",
        "gateway-tls",
        "policy",
        "proxy",
    ] {
        run("blog.sh", &[kind], kind);
    }
}

#[test]
fn sftp_and_scp_into_a_bucket_with_openssh_clients() {
    run("sftp.sh", &[], "sftp");
}
