//! Differential tests: each stone command line runs under Debian's real
//! `stone` and under `ossrelay stone`, the same client script runs against
//! both, and the observable outcomes must match. Rows marked `Differs`
//! record a deliberate difference and assert ossrelay's side of it.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::helpers::{
    bin, free_port, read_line, skip_outside_ci, spawn_on_free_port, NotReady, Ready, Running,
    TempDir,
};

/// What the client script does once the relay is up.
#[derive(Clone, Copy, Debug)]
enum Probe {
    /// TCP echo through listen port #0 from 127.0.0.2, .3 and .4.
    Tcp,
    /// TCP echo through listen ports #0 and #1.
    TcpTwo,
    /// UDP echo from 127.0.0.2, .3 and .4.
    Udp,
    /// TCP echo over IPv6 loopback.
    TcpV6,
    /// Like Tcp, after 2.5 s, so `-b` health checks have run.
    TcpLate,
    /// Like Line, after 2.5 s.
    LineLate,
    /// The command must exit by itself; compare success/failure.
    Exit,
    /// HTTP proxy: CONNECT and absolute-form GET to 127.0.0.1 and 127.0.0.2.
    Proxy,
    /// The health port: the reply code of each command, or "closed".
    Health,
    /// One line through listen port #0 without a half-close (for TLS
    /// destinations, where the echo server answers a line and closes).
    Line,
    /// A TLS client (trusting the test CA) sends a line, once with the
    /// client certificate and once without.
    TlsIn,
    /// Two keep-alive HTTP requests through listen port #0 to a server that
    /// answers with the head it received: was a header inserted into each?
    Headers,
    /// Connect to listen port #0 and report the first head-sized bytes
    /// that arrive unprompted (a `/http` request echoed back).
    Greeting,
    /// Connect through listen port #0 to a server that notes the relay's
    /// ports, then ask the identd on port #1 about them (and about a pair
    /// that is not a relay's, and in a malformed way).
    Ident,
}

/// How the two implementations are expected to compare.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Expect {
    Same,
    /// ossrelay refuses with exit 2 and a message containing this text,
    /// while stone accepts: a form ossrelay does not implement (yet).
    Differs(&'static str),
    /// A deliberate improvement: ossrelay must produce exactly this outcome;
    /// stone's is printed for the record but not compared.
    Improved(&'static str),
}

struct Case {
    name: &'static str,
    /// `{UP}` TCP echo port, `{UUP}` UDP echo port, `{L}`/`{L2}` listen
    /// ports, `{CFG}` a config file holding `cfg`, `{DIR}` a scratch dir.
    args: &'static str,
    cfg: &'static str,
    probe: Probe,
    expect: Expect,
}

const fn case(name: &'static str, args: &'static str, probe: Probe) -> Case {
    Case {
        name,
        args,
        cfg: "",
        probe,
        expect: Expect::Same,
    }
}

fn cases() -> Vec<Case> {
    use Probe::*;
    vec![
        case("plain tcp", "127.0.0.1:{UP} {L}", Tcp),
        case("shost:sport", "127.0.0.1:{UP} 127.0.0.1:{L}", Tcp),
        case("the blog line, -d -d", "-d -d 127.0.0.1:{UP} {L}", Tcp),
        case("grouped flags", "-dd -n -r 127.0.0.1:{UP} {L}", Tcp),
        case(
            "timeouts, backlog, buffer",
            "-T 30 -A 10 -X 4096 127.0.0.1:{UP} {L}",
            Tcp,
        ),
        case(
            "flag group taking an argument",
            "-Td 30 127.0.0.1:{UP} {L}",
            Tcp,
        ),
        case("xhost single allow", "127.0.0.1:{UP} {L} 127.0.0.2", Tcp),
        case("xhost bits", "127.0.0.1:{UP} {L} 127.0.0.0/30", Tcp),
        case(
            "xhost allow then ! deny",
            "127.0.0.1:{UP} {L} 127.0.0.2 ! 127.0.0.3",
            Tcp,
        ),
        case("xhost deny only", "127.0.0.1:{UP} {L} ! 127.0.0.3", Tcp),
        case(
            "xhost broad allow shadows deny",
            "127.0.0.1:{UP} {L} 127.0.0.0/8 ! 127.0.0.3",
            Tcp,
        ),
        case(
            "xhost deny then toggled allow",
            "127.0.0.1:{UP} {L} ! 127.0.0.3 ! 127.0.0.0/8",
            Tcp,
        ),
        case(
            "xhost extensions",
            "127.0.0.1:{UP} {L} 127.0.0.2/32,v4 127.0.0.4/255.255.255.255",
            Tcp,
        ),
        case(
            "xhost dump mode",
            "127.0.0.1:{UP} {L} 127.0.0.2/p0 127.0.0.3",
            Tcp,
        ),
        case("udp", "127.0.0.1:{UUP}/udp {L}/udp", Udp),
        case(
            "udp with -u",
            "-u 10 127.0.0.1:{UUP}/udp 127.0.0.1:{L}/udp",
            Udp,
        ),
        case(
            "udp with xhost",
            "127.0.0.1:{UUP}/udp {L}/udp 127.0.0.3 127.0.0.4",
            Udp,
        ),
        case(
            "two stones",
            "127.0.0.1:{UP} {L} -- 127.0.0.1:{UP} {L2}",
            TcpTwo,
        ),
        case(
            "options between stones",
            "127.0.0.1:{UP} {L} -- -T 5 127.0.0.1:{UP} {L2}",
            TcpTwo,
        ),
        case("ipv6 /v6", "::1:{UP6}/v6 ::1:{L}/v6", TcpV6),
        case("-N valid", "-N 127.0.0.1:{UP} {L}", Exit),
        case("-N service names", "-N 127.0.0.1:http {L}", Exit),
        case("-N bad port extension", "-N 127.0.0.1:{UP}/bogus {L}", Exit),
        case(
            "-N unknown sport service",
            "-N 127.0.0.1:{UP} nosuchservice",
            Exit,
        ),
        case(
            "-N unresolvable xhost",
            "-N 127.0.0.1:{UP} {L} nonexistent.invalid",
            Exit,
        ),
        case("unknown option", "-Z 127.0.0.1:{UP} {L}", Exit),
        case("no stone", "-d", Exit),
        case(
            "-N is leading-only",
            "127.0.0.1:{UP} {L} -- -N 127.0.0.1:{UP} {L2}",
            Exit,
        ),
        Case {
            name: "-C file, no preprocessor",
            args: "-P '' -C {CFG}",
            cfg: "-d\n127.0.0.1:{UP}\n  {L} 127.0.0.2\n",
            probe: Tcp,
            expect: Expect::Same,
        },
        Case {
            name: "-C file through cpp",
            args: "-C {CFG}",
            cfg: "#define UP 127.0.0.1:{UP}\nUP {L} ! 127.0.0.3\n",
            probe: Tcp,
            expect: Expect::Same,
        },
        Case {
            // cpp exits 1 on a `#` comment line (not a directive) but still
            // writes the rest; stone reads that output and ignores the
            // status.
            name: "-C file with # comments, through cpp",
            args: "-C {CFG}",
            cfg: "# the relay to OSS\n127.0.0.1:{UP} {L}\n# end\n",
            probe: Tcp,
            expect: Expect::Same,
        },
        Case {
            name: "-N -C file",
            args: "-N -P '' -C {CFG}",
            cfg: "127.0.0.1:{UP} {L}\n",
            probe: Exit,
            expect: Expect::Same,
        },
        case("-i pid file", "-i {DIR}/pid 127.0.0.1:{UP} {L}", Tcp),
        case("-L log file", "-L {DIR}/log -d -d 127.0.0.1:{UP} {L}", Tcp),
        case(
            "-a accounting file",
            "-a {DIR}/acct 127.0.0.1:{UP} {L}",
            Tcp,
        ),
        case("-I source address", "-I 127.0.0.1 127.0.0.1:{UP} {L}", Tcp),
        case(
            "/ssl sport, -z certkey=",
            "-z certkey={CERTKEY} 127.0.0.1:{LINE} {L}/ssl",
            TlsIn,
        ),
        case(
            "/ssl sport, -z cert= -z key=",
            "-z cert={CERTKEY} -z key={CERTKEY} 127.0.0.1:{LINE} 127.0.0.1:{L}/ssl",
            TlsIn,
        ),
        case(
            "/ssl sport, client cert required",
            "-z certkey={CERTKEY} -z verify -z CAfile={CA} 127.0.0.1:{LINE} {L}/ssl",
            TlsIn,
        ),
        case(
            "/ssl sport, -z default forgets options",
            "-z verify -z CAfile={CA} -z default -z certkey={CERTKEY} 127.0.0.1:{LINE} {L}/ssl",
            TlsIn,
        ),
        case(
            "/ssl dest, verified against CAfile",
            "-q verify -q CAfile={CA} 127.0.0.1:{TLSUP}/ssl {L}",
            Line,
        ),
        case(
            "/ssl dest, untrusted cert, verify",
            "-q verify -q CAfile={CA} 127.0.0.1:{ROGUEUP}/ssl {L}",
            Line,
        ),
        case(
            "/ssl dest, untrusted cert, verify,none",
            "-q verify,none 127.0.0.1:{ROGUEUP}/ssl {L}",
            Line,
        ),
        // stone does not check the upstream certificate unless told to;
        // ossrelay checks it against the system store unless given
        // `-q verify,none`, so a private CA needs `-q CAfile=`.
        Case {
            name: "/ssl dest, no options (secure default)",
            args: "127.0.0.1:{TLSUP}/ssl {L}",
            cfg: "",
            probe: Line,
            expect: Expect::Improved("closed"),
        },
        case(
            "/ssl on both sides",
            "-z certkey={CERTKEY} -q verify -q CAfile={CA} -q servername=localhost 127.0.0.1:{TLSUP}/ssl {L}/ssl",
            TlsIn,
        ),
        case("-N SSLv3 is refused", "-N -q ssl3 127.0.0.1:{UP}/ssl {L}", Exit),
        Case {
            name: "-N CRL checks are refused",
            args: "-N -q crl_check 127.0.0.1:{UP}/ssl {L}",
            cfg: "",
            probe: Exit,
            expect: Expect::Differs("crl_check"),
        },
        case(
            "-N /ssl sport with a missing certificate",
            "-N -z certkey={DIR}/missing.pem 127.0.0.1:{UP} {L}/ssl",
            Exit,
        ),
        case("proxy, no -x", "proxy {L}", Proxy),
        case("proxy with -x", "-x {LOW} 127.0.0.1 -- proxy {L}", Proxy),
        case(
            "proxy with -x port list miss",
            "-x 1-10,12 127.0.0.1 -- proxy {L}",
            Proxy,
        ),
        case(
            "proxy with -x then -x --",
            "-x 1-10 127.0.0.1 -- -x -- proxy {L}",
            Proxy,
        ),
        case(
            "proxy with -x bits",
            "-x 1-32767 127.0.0.0/31 -- proxy {L}",
            Proxy,
        ),
        case("proxy/v4only", "proxy/v4only {L}", Proxy),
        case("proxy/v6only", "proxy/v6only {L}", Proxy),
        case(
            "identd",
            "127.0.0.1:{IDENTUP} {L} -- identd {L2}",
            Ident,
        ),
        case("health stone", "health {L}", Health),
        case(
            "health stone with -d -d",
            "-d -d health 127.0.0.1:{L}",
            Health,
        ),
        // Both ends of stone's stream-over-HTTP in one process.
        case(
            "/http pair",
            "127.0.0.1:{L2}/http {L} 'POST http://outer:8023 HTTP/1.0' -- 127.0.0.1:{LINE} {L2}/http",
            Line,
        ),
        case(
            "/http request with escapes",
            "-n 127.0.0.1:{L2}/http {L} 'POST http://\\A/x\\ty HTTP/1.0\\r\\nX-From: \\a' -- 127.0.0.1:{LINE} {L2}/http",
            Line,
        ),
        case(
            "/http request bytes on the wire",
            "-n 127.0.0.1:{HEADS}/http {L} 'POST http://outer/\\a/x\\ty\\\\z\\q HTTP/1.0\\r\\nX-A: b'",
            Greeting,
        ),
        case(
            "/proxy header into the first request",
            "127.0.0.1:{HEADS}/proxy {L} 'X-Test: hello'",
            Headers,
        ),
        case(
            "/mproxy header into every request",
            "127.0.0.1:{HEADS}/mproxy {L} 'X-Test: hello'",
            Headers,
        ),
        case(
            "-b with a live master",
            "-b 1 127.0.0.1:{UP} 127.0.0.1:{DEAD} 127.0.0.1:{UP} {L}",
            TcpLate,
        ),
        // stone checks the master only when a client arrives, so the first
        // clients after a failure still go to the dead master; ossrelay
        // probes on its own schedule and fails over before they arrive.
        Case {
            name: "-b with a dead master uses the backup",
            args: "-b 1 127.0.0.1:{DEAD} 127.0.0.1:{UP} 127.0.0.1:{DEAD} {L}",
            cfg: "",
            probe: TcpLate,
            expect: Expect::Improved("127.0.0.2:echoed 127.0.0.3:echoed 127.0.0.4:echoed"),
        },
        case(
            "-b host= port= check elsewhere",
            "-b host=127.0.0.1 port={DEAD} 1 127.0.0.1:{UP} 127.0.0.1:{LOW} 127.0.0.1:{UP} {L}",
            TcpLate,
        ),
        case(
            "-s script that the master passes",
            "-s 'ping\\n' '^pi.g' -- -b 1 127.0.0.1:{LINE} 127.0.0.1:{DEAD} 127.0.0.1:{LINE} {L}",
            LineLate,
        ),
        // stone runs the script only once the master has carried a
        // connection; ossrelay runs it from the start, so it has already
        // moved to the backup (here a dead port) when the client comes.
        Case {
            name: "-s script that the master fails",
            args: "-s 'ping\\n' '^pong' -- -b 1 127.0.0.1:{LINE} 127.0.0.1:{DEAD} 127.0.0.1:{LINE} {L}",
            cfg: "",
            probe: LineLate,
            expect: Expect::Improved("closed"),
        },
        case(
            "/nobackup ignores -b",
            "-b 1 127.0.0.1:{DEAD} 127.0.0.1:{UP} 127.0.0.1:{DEAD}/nobackup {L}",
            TcpLate,
        ),
        case(
            "-B group",
            "-B 127.0.0.1:{UP} 127.0.0.1:{UP} 127.0.0.1:{LOW} -- 127.0.0.1:{UP} {L}",
            Tcp,
        ),
        case("-p packet dump", "-p 127.0.0.1:{UP} {L}", Tcp),
        case(
            "xhost p1 dump mode",
            "127.0.0.1:{UP} {L} 127.0.0.2/p1 127.0.0.3 127.0.0.4",
            Tcp,
        ),
        case("-ppp hex dump", "-ppp 127.0.0.1:{UP} {L}", Tcp),
    ]
}

/// Splits like a shell for the few quoting forms the table uses.
fn shell_words(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut any = false;
    let mut chars = s.chars();
    let mut in_quote = false;
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                in_quote = !in_quote;
                any = true;
            }
            '\\' if !in_quote => {
                if let Some(n) = chars.next() {
                    cur.push(n);
                    any = true;
                }
            }
            ' ' if !in_quote => {
                if any {
                    out.push(std::mem::take(&mut cur));
                    any = false;
                }
            }
            c => {
                cur.push(c);
                any = true;
            }
        }
    }
    if any {
        out.push(cur);
    }
    out
}

/// `program` (stone, or ossrelay with `prefix` = `stone`) with `args`, run
/// in `dir`, where relative names from the table land.
fn stone_command(program: &str, prefix: &[&str], args: &[String], dir: &Path) -> Command {
    let mut cmd = Command::new(program);
    cmd.args(prefix).args(args).current_dir(dir);
    cmd
}

fn tcp_echo(addr: SocketAddr, from: Option<Ipv4Addr>, msg: &[u8]) -> String {
    let sock = match addr {
        SocketAddr::V4(_) => {
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
        }
        SocketAddr::V6(_) => {
            socket2::Socket::new(socket2::Domain::IPV6, socket2::Type::STREAM, None)
        }
    }
    .unwrap();
    if let Some(ip) = from {
        sock.bind(&SocketAddr::from((ip, 0)).into()).unwrap();
    }
    if sock
        .connect_timeout(&addr.into(), Duration::from_secs(2))
        .is_err()
    {
        return "connect-refused".into();
    }
    let mut s: TcpStream = sock.into();
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    if s.write_all(msg).is_err() {
        return "closed".into();
    }
    let _ = s.shutdown(std::net::Shutdown::Write);
    let mut got = Vec::new();
    match s.read_to_end(&mut got) {
        Ok(_) if got == msg => "echoed".into(),
        Ok(_) if got.is_empty() => "closed".into(),
        Ok(_) => format!("garbled({} bytes)", got.len()),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => "closed".into(),
        Err(e) => format!("error({:?})", e.kind()),
    }
}

fn proxy_exchange(via: SocketAddr, request: &str, body: &[u8]) -> Vec<u8> {
    let Ok(mut s) = TcpStream::connect_timeout(&via, Duration::from_secs(2)) else {
        return b"connect-refused".to_vec();
    };
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let _ = s.write_all(request.as_bytes());
    let mut got = Vec::new();
    if !body.is_empty() {
        // Wait for the tunnel reply before sending tunnelled bytes.
        let mut buf = [0u8; 1];
        while !got.ends_with(b"\r\n\r\n") {
            match s.read(&mut buf) {
                Ok(1) => got.push(buf[0]),
                _ => return got,
            }
        }
        if !got.starts_with(b"HTTP/1.0 200") && !got.starts_with(b"HTTP/1.1 200") {
            return got;
        }
        let _ = s.write_all(body);
    }
    let _ = s.shutdown(std::net::Shutdown::Write);
    let _ = s.read_to_end(&mut got);
    got
}

/// CONNECT through the proxy to the echo server; "tunnel" if bytes echo.
fn proxy_connect(via: SocketAddr, ip: &str, port: u16) -> String {
    let got = proxy_exchange(
        via,
        &format!("CONNECT {ip}:{port} HTTP/1.0\r\n\r\n"),
        b"ping\n",
    );
    let ok = got.starts_with(b"HTTP/1.") && got.ends_with(b"\r\n\r\nping\n");
    format!("{ip}:connect-{}", if ok { "tunnel" } else { "refused" })
}

/// Absolute-form GET; the echo server returns what the proxy sent it.
fn proxy_get(via: SocketAddr, ip: &str, port: u16) -> String {
    let got = proxy_exchange(
        via,
        &format!("GET http://{ip}:{port}/x HTTP/1.0\r\nHost: {ip}:{port}\r\n\r\n"),
        b"",
    );
    let kind = if got.starts_with(b"GET /x HTTP/1.0\r\n") {
        "origin-form"
    } else if got.starts_with(b"GET http://") {
        "absolute-form"
    } else {
        "refused"
    };
    format!("{ip}:get-{kind}")
}

/// Sends one health command; returns the reply's status code or "closed".
fn health_code(port: u16, cmd: &str) -> String {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return "connect-refused".into();
    };
    // Generous: a reply is the normal case, and a loaded CI machine may
    // take a while to schedule a debug build.
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let _ = s.write_all(format!("{cmd}\r\n").as_bytes());
    let got = read_line(&mut s);
    if got.len() >= 3 {
        String::from_utf8_lossy(&got[..3]).into_owned()
    } else {
        "closed".into()
    }
}

fn udp_echo(port: u16, from: Ipv4Addr, msg: &[u8]) -> String {
    let s = UdpSocket::bind((from, 0)).unwrap();
    // Long enough for a loaded machine; "no-reply" (an ACL refusal) waits
    // it out, so not longer.
    s.set_read_timeout(Some(Duration::from_millis(2000)))
        .unwrap();
    s.connect(("127.0.0.1", port)).unwrap();
    s.send(msg).unwrap();
    let mut buf = [0u8; 2048];
    match s.recv(&mut buf) {
        Ok(n) if &buf[..n] == msg => "echoed".into(),
        Ok(n) => format!("garbled({n})"),
        Err(_) => "no-reply".into(),
    }
}

const SOURCES: [Ipv4Addr; 3] = [
    Ipv4Addr::new(127, 0, 0, 2),
    Ipv4Addr::new(127, 0, 0, 3),
    Ipv4Addr::new(127, 0, 0, 4),
];

struct Ports {
    up: u16,
    /// Accepts and holds connections for 3 s, reporting (peer port, own port).
    ident_up: u16,
    ident_seen: std::sync::Mutex<std::sync::mpsc::Receiver<(u16, u16)>>,
    /// HTTP/1.1 keep-alive: answers each request with its own head as the body.
    heads: u16,
    /// Plain TCP: echoes one line, then closes.
    line: u16,
    /// TLS with a certificate from the test CA: echoes one line.
    tls_up: u16,
    /// TLS with a certificate from a CA nobody trusts.
    rogue_up: u16,
    pki: crate::pki::Pki,
    /// A port nothing listens on.
    dead: u16,
    /// An echo port below 32768: Debian's stone mis-handles `-x` ports above
    /// 32767 (a signed 16-bit overflow), which ossrelay deliberately does not copy.
    low: u16,
    up6: u16,
    uup: u16,
}

/// Runs one implementation of one case; returns the observed outcome.
/// A listen port picked as free can still be refused (stone binds without
/// SO_REUSEADDR, and an old client socket in TIME_WAIT may hold the port),
/// so a start-up bind failure is retried with fresh ports.
fn observe(
    c: &Case,
    program: &str,
    prefix: &[&str],
    ports: &Ports,
    dir: &Path,
    tag: &str,
) -> (String, String) {
    let mut last = (String::new(), String::new());
    for _ in 0..5 {
        last = observe_once(c, program, prefix, ports, dir, tag);
        // With -L the bind error goes to the log file, not stderr.
        let log = std::fs::read_to_string(dir.join("log")).unwrap_or_default();
        let said = |what: &str| last.1.contains(what) || log.contains(what);
        let bind_failed = last.0.starts_with("exited early")
            && (said("Can't bind") || said("address already in use"));
        if !bind_failed {
            break;
        }
    }
    last
}

fn observe_once(
    c: &Case,
    program: &str,
    prefix: &[&str],
    ports: &Ports,
    dir: &Path,
    tag: &str,
) -> (String, String) {
    let (l, l2) = (free_port(), free_port());
    let fill = |s: &str| {
        s.replace("{UP6}", &ports.up6.to_string())
            .replace("{UUP}", &ports.uup.to_string())
            .replace("{LOW}", &ports.low.to_string())
            .replace("{DEAD}", &ports.dead.to_string())
            .replace("{UP}", &ports.up.to_string())
            .replace("{LINE}", &ports.line.to_string())
            .replace("{HEADS}", &ports.heads.to_string())
            .replace("{IDENTUP}", &ports.ident_up.to_string())
            .replace("{TLSUP}", &ports.tls_up.to_string())
            .replace("{ROGUEUP}", &ports.rogue_up.to_string())
            .replace("{CA}", &ports.pki.ca.display().to_string())
            .replace("{CERTKEY}", &ports.pki.certkey.display().to_string())
            .replace("{L2}", &l2.to_string())
            .replace("{L}", &l.to_string())
            .replace("{DIR}", &dir.display().to_string())
            .replace("{CFG}", &dir.join("stone.cfg").display().to_string())
    };
    std::fs::write(dir.join("stone.cfg"), fill(c.cfg)).unwrap();
    let args = shell_words(&fill(c.args));
    let mut run = Running::spawn(
        &mut stone_command(program, prefix, &args, dir),
        &dir.join(format!("{tag}.stderr")),
    );
    let outcome = match c.probe {
        Probe::Exit => match run.exit_within(Duration::from_secs(10)) {
            Some(st) => format!("exit-{}", if st.success() { "ok" } else { "fail" }),
            None => "still-running".into(),
        },
        probe => {
            let udp = matches!(probe, Probe::Udp);
            let mut ready = vec![Ready::Bound { port: l, udp }];
            if c.args.contains("{L2}") {
                ready.push(Ready::Bound { port: l2, udp });
            }
            match run.wait_ready(&ready) {
                Ok(()) => {}
                Err(NotReady::Exited(st)) => return (format!("exited early ({st})"), run.stderr()),
                Err(NotReady::TimedOut) => panic!("{tag}: {} never bound {l}", c.name),
            }
            let msg = format!("ping {}\n", c.name);
            if matches!(probe, Probe::TcpLate | Probe::LineLate) {
                std::thread::sleep(Duration::from_millis(2500));
            }
            match probe {
                Probe::Tcp | Probe::TcpLate => SOURCES
                    .iter()
                    .map(|ip| {
                        format!(
                            "{ip}:{}",
                            tcp_echo(
                                SocketAddr::from(([127, 0, 0, 1], l)),
                                Some(*ip),
                                msg.as_bytes()
                            )
                        )
                    })
                    .collect::<Vec<_>>()
                    .join(" "),
                Probe::TcpTwo => [l, l2]
                    .iter()
                    .map(|p| tcp_echo(SocketAddr::from(([127, 0, 0, 1], *p)), None, msg.as_bytes()))
                    .collect::<Vec<_>>()
                    .join(" "),
                Probe::TcpV6 => {
                    tcp_echo(format!("[::1]:{l}").parse().unwrap(), None, msg.as_bytes())
                }
                Probe::Udp => SOURCES
                    .iter()
                    .map(|ip| format!("{ip}:{}", udp_echo(l, *ip, msg.as_bytes())))
                    .collect::<Vec<_>>()
                    .join(" "),
                Probe::Health => [
                    "HELO x",
                    "helo lower",
                    "STAT",
                    "FREE",
                    "CLOCK",
                    "CVS_ID",
                    "LIMIT PAIR 100000",
                    "LIMIT PAIR 0",
                    "LIMIT CONN 5",
                    "LIMIT ASYNC 100",
                    "LIMIT ASYNC 0",
                    "LIMIT BOGUS 1",
                    "BOGUS",
                ]
                .iter()
                .map(|cmd| format!("{}={}", cmd.replace(' ', "_"), health_code(l, cmd)))
                .collect::<Vec<_>>()
                .join(" "),
                Probe::Proxy => {
                    let via = SocketAddr::from(([127, 0, 0, 1], l));
                    ["127.0.0.1", "127.0.0.2"]
                        .iter()
                        .flat_map(|ip| {
                            [
                                proxy_connect(via, ip, ports.low),
                                proxy_get(via, ip, ports.low),
                            ]
                        })
                        .collect::<Vec<_>>()
                        .join(" ")
                }
                Probe::Line | Probe::LineLate => {
                    line_echo(SocketAddr::from(([127, 0, 0, 1], l)), msg.as_bytes())
                }
                Probe::TlsIn => {
                    let addr = SocketAddr::from(([127, 0, 0, 1], l));
                    let with = crate::pki::tls_echo(
                        addr,
                        &ports.pki.ca,
                        Some(&ports.pki.client_certkey),
                        msg.as_bytes(),
                    );
                    let without = crate::pki::tls_echo(addr, &ports.pki.ca, None, msg.as_bytes());
                    format!("with-client-cert:{with} without:{without}")
                }
                Probe::Ident => ident(l, l2, &ports.ident_seen),
                Probe::Greeting => greeting(SocketAddr::from(([127, 0, 0, 1], l))),
                Probe::Headers => headers_twice(SocketAddr::from(([127, 0, 0, 1], l))),
                Probe::Exit => unreachable!(),
            }
        }
    };
    let pid = run.child.id();
    drop(run);
    let mut outcome = outcome;
    let pid_file = dir.join("pid");
    if c.args.contains("{DIR}/pid") {
        let written = std::fs::read_to_string(&pid_file).unwrap_or_default();
        outcome.push_str(if written.trim() == pid.to_string() {
            " pid-file:ok"
        } else {
            " pid-file:wrong"
        });
        let _ = std::fs::remove_file(&pid_file);
    }
    let log_file = dir.join("log");
    if c.args.contains("{DIR}/log") {
        let log = std::fs::read_to_string(&log_file).unwrap_or_default();
        let accepted = log
            .lines()
            .filter(|l| l.contains(": accepted TCP "))
            .count();
        outcome.push_str(&format!(" log-file-accepted:{accepted}"));
        let _ = std::fs::remove_file(&log_file);
    }
    let acct_file = dir.join("acct");
    if c.args.contains("{DIR}/acct") {
        let acct = std::fs::read_to_string(&acct_file).unwrap_or_default();
        // `Mon dd HH:MM:SS <port>[<fd>] <ip>:<port>[<ip>]`, one per client.
        let well_formed = acct
            .lines()
            .filter(|line| line.contains(&format!(" {l}[")) && line.contains("127.0.0."))
            .count();
        outcome.push_str(&format!(" acct-lines:{well_formed}"));
        let _ = std::fs::remove_file(&acct_file);
    }
    let err = std::fs::read_to_string(dir.join(format!("{tag}.stderr"))).unwrap_or_default();
    if c.args.contains("-p") || c.args.contains("/p1") {
        // A dump line is `<relay> <fd>><fd> <data>`: escaped text, or hex.
        let dumped = err.lines().any(|line| {
            let w: Vec<&str> = line.split_whitespace().collect();
            w.windows(2).any(|p| {
                let arrow = p[0]
                    .split_once('>')
                    .is_some_and(|(a, b)| a.parse::<u32>().is_ok() && b.parse::<u32>().is_ok());
                arrow && (p[1] == "ping" || p[1] == "70")
            })
        });
        outcome.push_str(if dumped { " dumped" } else { " not-dumped" });
    }
    (outcome, err)
}

/// Reads up to and including the blank line after a head.
fn read_head(s: &mut impl Read) -> Option<Vec<u8>> {
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match s.read(&mut b) {
            Ok(1) => head.push(b[0]),
            _ => return None,
        }
    }
    Some(head)
}

fn start_head_echo() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            std::thread::spawn(move || {
                let mut s = s;
                let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
                while let Some(head) = read_head(&mut s) {
                    let reply =
                        format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", head.len());
                    if s.write_all(reply.as_bytes())
                        .and_then(|_| s.write_all(&head))
                        .is_err()
                    {
                        break;
                    }
                }
            });
        }
    });
    port
}

/// Sends two requests on one connection, each after the previous reply,
/// and reports whether `X-Test: hello` arrived right after the request line.
fn headers_twice(addr: SocketAddr) -> String {
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(2)) else {
        return "connect-refused".into();
    };
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let mut out = Vec::new();
    for path in ["/one", "/two"] {
        let req = format!("GET {path} HTTP/1.1\r\nHost: a\r\n\r\n");
        if s.write_all(req.as_bytes()).is_err() {
            out.push(format!("{path}:closed"));
            break;
        }
        let Some(head) = read_head(&mut s) else {
            out.push(format!("{path}:closed"));
            break;
        };
        let len: usize = String::from_utf8_lossy(&head)
            .lines()
            .find_map(|l| {
                l.strip_prefix("Content-Length: ")
                    .and_then(|v| v.trim().parse().ok())
            })
            .unwrap_or(0);
        let mut body = vec![0u8; len];
        if s.read_exact(&mut body).is_err() {
            out.push(format!("{path}:short"));
            break;
        }
        let inserted = format!("GET {path} HTTP/1.1\r\nX-Test: hello\r\nHost: a\r\n\r\n");
        out.push(if body == inserted.as_bytes() {
            format!("{path}:inserted")
        } else if body == req.as_bytes() {
            format!("{path}:plain")
        } else {
            format!(
                "{path}:other({})",
                String::from_utf8_lossy(&body).escape_debug()
            )
        });
    }
    out.join(" ")
}

fn start_ident_target() -> (u16, std::sync::mpsc::Receiver<(u16, u16)>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            let peer = s.peer_addr().unwrap().port();
            let _ = tx.send((peer, port));
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_secs(3));
                drop(s);
            });
        }
    });
    (port, rx)
}

/// One identd session: a real pair, an unknown pair, then a malformed query.
fn ident(
    l: u16,
    identd: u16,
    seen: &std::sync::Mutex<std::sync::mpsc::Receiver<(u16, u16)>>,
) -> String {
    let seen = seen.lock().unwrap();
    while seen.try_recv().is_ok() {}
    let Ok(_client) = TcpStream::connect(("127.0.0.1", l)) else {
        return "connect-refused".into();
    };
    let Ok((a, b)) = seen.recv_timeout(Duration::from_secs(3)) else {
        return "not-relayed".into();
    };
    // The upstream sees the connection as soon as the kernel completes it,
    // a moment before the relay has it in its table: poll until the pair is
    // known (or 2 s pass) before the session that is compared.
    for _ in 0..40 {
        let Ok(mut probe) = TcpStream::connect(("127.0.0.1", identd)) else {
            break;
        };
        let _ = probe.set_read_timeout(Some(Duration::from_secs(3)));
        let _ = probe.write_all(format!("{a},{b}\r\n").as_bytes());
        if !String::from_utf8_lossy(&read_line(&mut probe)).contains("NO-USER") {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let Ok(mut q) = TcpStream::connect(("127.0.0.1", identd)) else {
        return "identd-refused".into();
    };
    q.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let mut out = Vec::new();
    for query in [
        format!("{a},{b}\r\n"),
        "1,2\r\n".to_string(),
        format!("{a} , {b}\r\n"),
    ] {
        let _ = q.write_all(query.as_bytes());
        let got = read_line(&mut q);
        let text = String::from_utf8_lossy(&got)
            .replace(&format!("{a} , {b}"), "A , B")
            .replace(&l.to_string(), "L");
        out.push(if text.is_empty() {
            "closed".into()
        } else {
            text.trim_end().to_string()
        });
    }
    out.join(" | ")
}

fn greeting(addr: SocketAddr) -> String {
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(2)) else {
        return "connect-refused".into();
    };
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    match read_head(&mut s) {
        Some(h) => String::from_utf8_lossy(&h).escape_debug().to_string(),
        None => "nothing".into(),
    }
}

/// Sends one line and reads one line back, without half-closing.
fn line_echo(addr: SocketAddr, msg: &[u8]) -> String {
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(2)) else {
        return "connect-refused".into();
    };
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let _ = s.write_all(msg);
    let got = read_line(&mut s);
    if got == msg {
        "echoed".into()
    } else if got.is_empty() {
        "closed".into()
    } else {
        format!("garbled({} bytes)", got.len())
    }
}

fn start_echo_servers(dir: &Path) -> Ports {
    let pki = crate::pki::Pki::new(dir);
    let line = TcpListener::bind("127.0.0.1:0").unwrap();
    let line_port = line.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for s in line.incoming().flatten() {
            std::thread::spawn(move || {
                let mut s = s;
                let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
                let got = read_line(&mut s);
                let _ = s.write_all(&got);
            });
        }
    });
    // All of 127/8, so proxy tests can aim at 127.0.0.2 as a second host.
    let tcp = TcpListener::bind("0.0.0.0:0").unwrap();
    let tcp6 = TcpListener::bind("[::1]:0").unwrap();
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let low = (20000..32000)
        .step_by(97)
        .find_map(|p| TcpListener::bind(("0.0.0.0", p)).ok())
        .expect("a free port below 32768");
    let (ident_up, ident_seen) = start_ident_target();
    let ports = Ports {
        ident_up,
        ident_seen: std::sync::Mutex::new(ident_seen),
        heads: start_head_echo(),
        line: line_port,
        tls_up: crate::pki::tls_echo_server(&pki.certkey),
        rogue_up: crate::pki::tls_echo_server(&pki.rogue_certkey),
        pki,
        dead: free_port(),
        low: low.local_addr().unwrap().port(),
        up: tcp.local_addr().unwrap().port(),
        up6: tcp6.local_addr().unwrap().port(),
        uup: udp.local_addr().unwrap().port(),
    };
    for l in [tcp, tcp6, low] {
        std::thread::spawn(move || {
            for s in l.incoming().flatten() {
                std::thread::spawn(move || {
                    let mut s = s;
                    let mut buf = Vec::new();
                    let _ = s.read_to_end(&mut buf);
                    let _ = s.write_all(&buf);
                });
            }
        });
    }
    std::thread::spawn(move || {
        let mut buf = [0u8; 65536];
        while let Ok((n, from)) = udp.recv_from(&mut buf) {
            let _ = udp.send_to(&buf[..n], from);
        }
    });
    ports
}

fn stone_path() -> Option<&'static str> {
    Path::new("/usr/bin/stone")
        .exists()
        .then_some("/usr/bin/stone")
}

#[test]
fn stone_command_lines_behave_like_real_stone() {
    let Some(stone) = stone_path() else {
        skip_outside_ci(
            "CI must install Debian's stone for the differential test",
            format_args!("stone_command_lines_behave_like_real_stone: /usr/bin/stone not installed (apt-get install stone)"),
        );
        return;
    };
    let dir = TempDir::new("stone-diff");
    let ports = start_echo_servers(&dir.0);
    let all = cases();
    assert!(all.len() >= 25);
    let mut failures = Vec::new();
    // STONE_DIFF_ONLY=<text> runs the rows whose name contains it.
    let only = std::env::var("STONE_DIFF_ONLY").unwrap_or_default();
    for (i, c) in all
        .iter()
        .enumerate()
        .filter(|(_, c)| c.name.contains(&only))
    {
        let (theirs, their_log) = observe(c, stone, &[], &ports, &dir.0, &format!("stone{i}"));
        let (ours, our_log) = observe(
            c,
            bin(),
            &["stone"],
            &ports,
            &dir.0,
            &format!("ossrelay{i}"),
        );
        match c.expect {
            Expect::Same if theirs == ours => {}
            Expect::Same => failures.push(format!("{}: stone {theirs:?} vs ossrelay {ours:?}\n  stone log: {their_log}\n  ossrelay log: {our_log}", c.name)),
            Expect::Improved(want) => {
                if ours != want {
                    failures.push(format!("{}: expected ossrelay {want:?}, got {ours:?}: {our_log}", c.name));
                }
            }
            Expect::Differs(needle) => {
                if theirs != "exit-ok" {
                    failures.push(format!("{}: expected stone to accept, got {theirs:?}: {their_log}", c.name));
                }
                if ours != "exit-fail" || !our_log.contains(needle) {
                    failures.push(format!("{}: expected ossrelay to refuse naming {needle:?}, got {ours:?}: {our_log}", c.name));
                }
            }
        }
        eprintln!("{:40} stone={theirs:<50} ossrelay={ours}", c.name);
    }
    assert!(
        failures.is_empty(),
        "{} differences:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// At -d -d every connection logs stone's accepted line, in both.
#[test]
fn accepted_line_regex_matches_for_every_connection() {
    let Some(stone) = stone_path() else {
        skip_outside_ci(
            "CI must install Debian's stone",
            format_args!(
                "accepted_line_regex_matches_for_every_connection: /usr/bin/stone not installed"
            ),
        );
        return;
    };
    let dir = TempDir::new("stone-regex");
    let ports = start_echo_servers(&dir.0);
    for (program, prefix) in [(stone, &[][..]), (bin(), &["stone"][..])] {
        let (run, l) = start_bound(program, prefix, &dir.0, |l| {
            format!("-d -d 127.0.0.1:{} {l}", ports.up)
        });
        let mut client_ports = Vec::new();
        for _ in 0..3 {
            let s = TcpStream::connect(("127.0.0.1", l)).unwrap();
            client_ports.push(s.local_addr().unwrap().port());
            let mut s = s;
            s.write_all(b"x").unwrap();
            s.shutdown(std::net::Shutdown::Write).unwrap();
            let mut v = Vec::new();
            s.read_to_end(&mut v).unwrap();
            assert_eq!(v, b"x");
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let log = run.stderr();
            let matched: Vec<u16> = log.lines().filter_map(accepted_port).collect();
            if client_ports.iter().all(|p| matched.contains(p)) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{program}: accepted lines missing for {client_ports:?} in:\n{log}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Starts `program` on a fresh listen port until it binds (stone does not
/// set SO_REUSEADDR, so a port in TIME_WAIT can refuse it; retry then).
fn start_bound(
    program: &str,
    prefix: &[&str],
    dir: &Path,
    args: impl Fn(u16) -> String,
) -> (Running, u16) {
    spawn_on_free_port(
        |port| Ready::Bound { port, udp: false },
        &dir.join("regex.stderr"),
        |l| stone_command(program, prefix, &shell_words(&args(l)), dir),
    )
}

/// Each end of a `/http` pair under one implementation, the other end
/// under the other: the wire formats must match.
#[test]
fn http_pairs_interoperate_with_real_stone() {
    let Some(stone) = stone_path() else {
        skip_outside_ci(
            "CI must install Debian's stone",
            format_args!("http_pairs_interoperate_with_real_stone: /usr/bin/stone not installed"),
        );
        return;
    };
    let dir = TempDir::new("stone-http-pair");
    let ports = start_echo_servers(&dir.0);
    let ours = (bin(), &["stone"][..]);
    let theirs = (stone, &[][..]);
    for (outer, inner) in [(theirs, ours), (ours, theirs)] {
        let (_o, l2) = start_bound(outer.0, outer.1, &dir.0, |l| {
            format!("127.0.0.1:{} {l}/http", ports.line)
        });
        let (_i, l) = start_bound(inner.0, inner.1, &dir.0, |l| {
            format!("127.0.0.1:{l2}/http {l} 'POST http://outer:{l2} HTTP/1.0'")
        });
        let got = line_echo(SocketAddr::from(([127, 0, 0, 1], l)), b"over http\n");
        assert_eq!(
            got, "echoed",
            "client side {}, server side {}",
            inner.0, outer.0
        );
    }
}

/// Matches `stone \d+: accepted TCP \d+ from <ip>:<port> mode=\d+` and
/// returns the port.
fn accepted_port(line: &str) -> Option<u16> {
    let at = line.find("stone ")?;
    let rest = &line[at + 6..];
    let (n, rest) = rest.split_once(": accepted TCP ")?;
    n.parse::<u32>().ok()?;
    let (fd, rest) = rest.split_once(" from ")?;
    fd.parse::<u32>().ok()?;
    let (addr, rest) = rest.split_once(" mode=")?;
    rest.split_whitespace().next()?.parse::<u32>().ok()?;
    let (ip, port) = addr.rsplit_once(':')?;
    ip.parse::<std::net::IpAddr>().ok()?;
    port.parse().ok()
}

#[test]
fn symlink_named_stone_runs_the_stone_parser() {
    let dir = TempDir::new("stone-link");
    let link = dir.0.join("stone");
    std::os::unix::fs::symlink(bin(), &link).unwrap();
    let via_link = Command::new(&link)
        .args(["-N", "127.0.0.1:9", "18099"])
        .output()
        .unwrap();
    let via_sub = Command::new(bin())
        .args(["stone", "-N", "127.0.0.1:9", "18099"])
        .output()
        .unwrap();
    assert_eq!(via_link.status.code(), Some(0));
    assert_eq!(via_sub.status.code(), Some(0));
    let strip = |o: &[u8]| -> Vec<String> {
        String::from_utf8_lossy(o)
            .lines()
            .filter(|l| l.contains(" <- "))
            .filter_map(|l| l.split_once(" stone ").map(|(_, r)| r.to_string()))
            .collect()
    };
    assert_eq!(strip(&via_link.stderr), strip(&via_sub.stderr));
    assert!(
        strip(&via_link.stderr)
            .iter()
            .any(|l| l.ends_with(": 127.0.0.1:9 <- 0.0.0.0:18099")),
        "{:?}",
        strip(&via_link.stderr)
    );
    let bad = Command::new(&link)
        .args(["-q", "ssl3", "h:1/ssl", "2"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("\"ssl3\": not supported"));
}

/// The numbers in `stone N: dest <- src` lines of `text`, in order.
fn relay_numbers(text: &str) -> Vec<u32> {
    text.lines()
        .filter(|l| l.contains(" <- "))
        .filter_map(|l| {
            let rest = &l[l.find(" stone ")? + 7..];
            rest.split_once(':')?.0.parse().ok()
        })
        .collect()
}

/// Runs `program` with stone `args` until it has printed one mapping line
/// per relay, then stops it; returns the relay numbers.
fn running_relay_numbers(program: &str, prefix: &[&str], args: &[&str], dir: &Path) -> Vec<u32> {
    let log = dir.join(format!("{}.stderr", prefix.len()));
    let mut cmd = Command::new(program);
    cmd.args(prefix).args(args);
    let run = Running::spawn(&mut cmd, &log);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let seen = relay_numbers(&run.stderr());
        if seen.len() == 2 || Instant::now() > deadline {
            return seen;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `stone -N` prints the relay numbers a real run uses (the listening
/// descriptors), as stone does: both 3 and 4 here, as in stone itself.
#[test]
fn check_only_and_a_real_run_print_the_same_relay_numbers() {
    let dir = TempDir::new("stone-numbers");
    let (p1, p2) = (free_port().to_string(), free_port().to_string());
    let args = [
        "127.0.0.1:9",
        p1.as_str(),
        "--",
        "127.0.0.1:9/udp",
        &format!("{p2}/udp"),
    ];
    let mut check = vec!["stone", "-N"];
    check.extend(args);
    let out = Command::new(bin()).args(&check).output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let checked = relay_numbers(&String::from_utf8_lossy(&out.stderr));
    let ran = running_relay_numbers(bin(), &["stone"], &args, &dir.0);
    assert_eq!(checked.len(), 2, "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(checked, ran, "-N against a real run");
    match stone_path() {
        Some(stone) => {
            let real = running_relay_numbers(stone, &[], &args, &dir.0);
            assert_eq!(ran, real, "ossrelay against real stone");
        }
        None => skip_outside_ci(
            "relay numbers: /usr/bin/stone is missing",
            format_args!("relay numbers against real stone: /usr/bin/stone not installed"),
        ),
    }
}
