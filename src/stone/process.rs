//! Running a stone command line: logging as stone does, `-N`, `-D`, `-i`,
//! `-c`, and dropping privileges (`-t`, `-g`, `-o`) after the listeners are
//! bound, which is why ports below 1024 keep working.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Arc;

use super::StoneCommand;
use crate::config::{Config, Protocol};
use crate::resolve::{Resolve, SystemResolver};
use crate::server::Server;

/// Exit code for usage and configuration errors.
pub const EXIT_USAGE: u8 = 2;
/// Exit code for runtime failures.
pub const EXIT_RUNTIME: u8 = 1;

/// Runs `words` (stone's argv without the program name). With `print_toml`
/// prints the equivalent run config instead. Returns the process exit code.
pub fn run(words: &[String], print_toml: bool, stop: impl std::future::Future<Output = ()>) -> u8 {
    let cmd = match super::parse(words) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("stone: {e}");
            return EXIT_USAGE;
        }
    };
    let config = match cmd.to_config() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("stone: {e}");
            return EXIT_USAGE;
        }
    };
    if print_toml {
        // A closed stdout (`| head`) is not an error worth a panic.
        let _ = std::io::Write::write_all(
            &mut std::io::stdout(),
            super::toml_out::render(&cmd, &config).as_bytes(),
        );
        return 0;
    }
    let log_file = config.log.file.as_deref();
    if let Err(e) =
        crate::observe::logfmt::init_filter(config.log.format, cmd.log_filter(), log_file)
    {
        eprintln!("stone: {e}");
        return EXIT_RUNTIME;
    }
    tracing::info!(target: "ossrelay::stone", "start (ossrelay {}, stone 2.4 compatible) [{}]", env!("CARGO_PKG_VERSION"), std::process::id());
    if cmd.debug > 0 {
        tracing::info!(target: "ossrelay::stone", "Debug level: {}", cmd.debug);
    }
    for n in cmd.notices() {
        tracing::info!(target: "ossrelay::stone", "{n}");
    }
    if cmd.check_only {
        return check_only(&config);
    }
    if let Some(dir) = &cmd.core_dir {
        if let Err(e) = std::env::set_current_dir(dir) {
            tracing::error!(target: "ossrelay::stone", "-c {}: {e}", dir.display());
            return EXIT_RUNTIME;
        }
    }
    if cmd.daemon {
        if let Err(e) = daemonize() {
            tracing::error!(target: "ossrelay::stone", "-D: {e}");
            return EXIT_RUNTIME;
        }
    }
    if let Some(p) = &cmd.pid_file {
        if let Err(e) = std::fs::write(p, format!("{}\n", std::process::id())) {
            tracing::error!(target: "ossrelay::stone", "-i {}: {e}", p.display());
            return EXIT_RUNTIME;
        }
    }
    // Bound before the runtime exists, so each listener gets the lowest free
    // descriptor, as stone's do and as `-N` prints them: the runtime's own
    // descriptors (epoll, wakers) would otherwise shift every number.
    let opened = match Server::open(&config) {
        Ok(o) => o,
        Err(e) => {
            tracing::error!(target: "ossrelay::stone", "{e}");
            return EXIT_RUNTIME;
        }
    };
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = cmd.workers {
        builder.worker_threads(n);
    }
    let runtime = match builder.enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("stone: cannot start runtime: {e}");
            return EXIT_RUNTIME;
        }
    };
    runtime.block_on(async {
        let resolver: Arc<dyn Resolve> = Arc::new(SystemResolver::new());
        let server = match Server::adopt(&config, opened, resolver) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(target: "ossrelay::stone", "{e}");
                return EXIT_RUNTIME;
            }
        };
        if let Err(e) = drop_privileges(&cmd) {
            tracing::error!(target: "ossrelay::stone", "{e}");
            return EXIT_RUNTIME;
        }
        server.serve(stop).await;
        0
    })
}

/// `-N`: stone creates (but does not bind) each socket and prints the
/// mapping lines, so the numbers match a real run.
fn check_only(config: &Config) -> u8 {
    use socket2::{Domain, Socket, Type};
    use std::os::fd::AsRawFd;
    let mut held = Vec::new();
    for r in &config.relays {
        let ty = if r.protocol() == Protocol::Udp {
            Type::DGRAM
        } else {
            Type::STREAM
        };
        let id = match Socket::new(Domain::for_address(r.listen), ty, None) {
            Ok(s) => {
                let fd = s.as_raw_fd();
                held.push(s);
                fd
            }
            Err(_) => -1,
        };
        let suffix = if r.protocol() == Protocol::Udp {
            "/udp"
        } else {
            ""
        };
        let dest = r.destination_label();
        tracing::info!(target: "ossrelay::stone", "stone {id}: {dest}{suffix} <- {}{suffix}", r.listen);
    }
    0
}

fn daemonize() -> io::Result<()> {
    // SAFETY: daemon(3) forks and exits the parent. It runs before any
    // other thread exists (the tokio runtime is built afterwards), so the
    // child inherits a consistent single-threaded state.
    if unsafe { libc::daemon(1, 0) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // The child has a new process ID; its log lines must say so.
    crate::observe::logfmt::forget_pid();
    Ok(())
}

fn cstring(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains NUL"))
}

/// chroot, then setgid, then setuid, in the order that keeps each step
/// permitted. Resolver configuration was read before, at start-up.
fn drop_privileges(cmd: &StoneCommand) -> Result<(), String> {
    if let Some(dir) = &cmd.chroot {
        let c = cstring(dir).map_err(|e| format!("-t {}: {e}", dir.display()))?;
        // SAFETY: chroot(2) with a valid NUL-terminated path we own.
        if unsafe { libc::chroot(c.as_ptr()) } != 0 {
            return Err(format!(
                "-t {}: {}",
                dir.display(),
                io::Error::last_os_error()
            ));
        }
        std::env::set_current_dir("/").map_err(|e| format!("-t {}: {e}", dir.display()))?;
    }
    if cmd.gid.is_some() || cmd.uid.is_some() {
        // Drop root's supplementary groups too, or they survive setuid.
        let groups: Vec<libc::gid_t> = cmd.gid.into_iter().collect();
        // SAFETY: setgroups(2) reads `groups.len()` gids from a valid slice we own.
        if unsafe { libc::setgroups(groups.len(), groups.as_ptr()) } != 0 {
            return Err(format!(
                "-o/-g: cannot drop supplementary groups: {}",
                io::Error::last_os_error()
            ));
        }
    }
    if let Some(gid) = cmd.gid {
        // SAFETY: setgid(2) takes a plain integer; glibc applies it to all threads.
        if unsafe { libc::setgid(gid) } != 0 {
            return Err(format!("-g {gid}: {}", io::Error::last_os_error()));
        }
    }
    if let Some(uid) = cmd.uid {
        // SAFETY: setuid(2) takes a plain integer; glibc applies it to all threads.
        if unsafe { libc::setuid(uid) } != 0 {
            return Err(format!("-o {uid}: {}", io::Error::last_os_error()));
        }
    }
    Ok(())
}
