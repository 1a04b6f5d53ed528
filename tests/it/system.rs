//! The blog's topology in network namespaces with awscli, s3cmd and rclone
//! (tests/system/blog.sh), once each with ossrelay, Debian's stone,
//! ossrelay through a symlink named `stone`, and ossrelay with its DNS
//! responder instead of any hosts lines, that again in http gateway mode
//! with a bucket allowlist (plain and TLS-terminating), and the forward
//! proxy with only proxy settings on the client. Needs root; skips with the
//! reason printed otherwise, and never skips under CI.

use std::path::Path;
use std::process::Command;

fn run(kind: &str) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/system/blog.sh");
    let out = Command::new("bash")
        .arg(&script)
        .arg(crate::helpers::bin())
        .arg(kind)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    match out.status.code() {
        Some(0) => {
            assert!(
                stdout.contains(&format!("steps passed ({kind})")),
                "{stdout}"
            );
            eprintln!("{stdout}");
        }
        Some(77) => crate::helpers::skip_outside_ci(
            &format!("system test skipped under CI: {stdout}"),
            format_args!("system test ({kind}): {}", stdout.trim()),
        ),
        code => panic!("system test ({kind}) failed with {code:?}:\n{stdout}\n{stderr}"),
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
        run(kind);
    }
}
