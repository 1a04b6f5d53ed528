//! `ossrelay demo`: the blog's private path to OSS, reproduced on loopback
//! in one process. A store stands in for OSS, a relay is started from the
//! blog's exact stone command line (ports moved to free loopback ports),
//! and a built-in S3 client does what the blog does with ossutil, through
//! the relay, with the names mapped the way the blog's hosts file maps them.

use std::io::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use crate::config::LogFormat;

/// println! that ignores a closed stdout (`ossrelay demo | head`): SIGPIPE
/// stays ignored for the relay's sockets, so println! would panic instead.
macro_rules! say {
    () => {{
        let _ = writeln!(std::io::stdout());
    }};
    ($($arg:tt)*) => {{
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}
use crate::resolve::{Resolve, StaticResolver};
use crate::s3client::sigv4::Signer;
use crate::s3client::Client;
use crate::server::Server;
use crate::store::{Store, StoreConfig};

/// The endpoint from the blog.
pub const ENDPOINT: &str = "oss-ap-northeast-1-internal.aliyuncs.com";
/// The bucket from the blog.
pub const BUCKET: &str = "aws-alibaba-oss";
const REGION: &str = "oss-ap-northeast-1";
const ACCESS_KEY: &str = "LTAIdemoAccessKey0001";
const SECRET_KEY: &str = "demoSecretKeyForOssrelayLoopbackOnly";
const BIG_UPLOAD: usize = 16 << 20;

/// Options for the demo.
#[derive(Debug, Clone, Default)]
pub struct DemoOptions {
    /// Leave the store and relay running after the checks.
    pub keep: bool,
}

#[derive(Clone, Default)]
struct LogBuffer(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Ok(mut v) = self.0.lock() {
            v.extend_from_slice(buf);
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs the demo; returns true when every step passed.
pub async fn run(opts: DemoOptions) -> bool {
    let relay_log = LogBuffer::default();
    let writer = relay_log.clone();
    // Relay lines as stone prints them at -d -d; store lines are not the relay's.
    crate::observe::logfmt::init_with_writer(
        LogFormat::Text,
        "warn,ossrelay=info,ossrelay::store=off,s3s=off",
        move || writer.clone(),
    );
    match run_inner(&opts, &relay_log).await {
        Ok(()) => {
            say!("\ndemo: every step passed");
            true
        }
        Err(e) => {
            say!("\n✘ demo failed: {e}");
            print_relay_log(&relay_log);
            false
        }
    }
}

fn print_relay_log(log: &LogBuffer) {
    let text = log
        .0
        .lock()
        .map(|v| String::from_utf8_lossy(&v).to_string())
        .unwrap_or_default();
    say!("\n--- relay log (stone -d -d format) ---");
    for line in text.lines() {
        say!("{line}");
    }
}

fn step(n: usize, total: usize, title: &str) -> Instant {
    say!("\n[{n}/{total}] {title}");
    Instant::now()
}

fn elapsed(t: Instant) {
    say!("\n{:.6}(s) elapsed", t.elapsed().as_secs_f64());
}

fn ok(what: &str) {
    say!("✔ {what}");
}

async fn run_inner(opts: &DemoOptions, relay_log: &LogBuffer) -> Result<(), String> {
    let root = TempDir(std::env::temp_dir().join(format!("ossrelay-demo-{}", std::process::id())));
    let _ = std::fs::remove_dir_all(&root.0);
    crate::store::create_buckets(&root.0, &[BUCKET.to_string()]).map_err(|e| e.to_string())?;

    // 1. The OSS stand-in, with signature checks on.
    let store_cfg = StoreConfig {
        root: root.0.clone(),
        domain: Some(ENDPOINT.to_string()),
        keys: Some((ACCESS_KEY.to_string(), SECRET_KEY.to_string())),
    };
    let store = Store::new(&store_cfg).map_err(|e| e.to_string())?;
    let store_listener = crate::store::bind((Ipv4Addr::LOCALHOST, 0).into())
        .await
        .map_err(|e| e.to_string())?;
    let store_addr = store_listener.local_addr().map_err(|e| e.to_string())?;
    let stop = CancellationToken::new();
    let store_task = tokio::spawn(store.serve(store_listener, stop.clone()));

    // 2. The relay, from the blog's command line with the ports moved.
    let stone_words: Vec<String> = [
        "-d",
        "-d",
        &format!("{ENDPOINT}:{}", store_addr.port()),
        "127.0.0.1:0",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let cmd = crate::stone::parse(&stone_words)?;
    let config = cmd.to_config()?;
    // The relay host's hosts file maps the endpoint to the store.
    let relay_hosts = StaticResolver::new();
    relay_hosts.set(ENDPOINT, vec![IpAddr::V4(Ipv4Addr::LOCALHOST)]);
    let server = Server::bind(&config, Arc::new(relay_hosts)).map_err(|e| e.to_string())?;
    let relay_addr = server.local_addrs()[0].1;
    let relay_stop = stop.clone();
    let relay_task = tokio::spawn(server.serve(async move { relay_stop.cancelled().await }));

    // 3. The client's hosts file: both names point at the relay.
    let client_hosts = StaticResolver::new();
    for name in [ENDPOINT.to_string(), format!("{BUCKET}.{ENDPOINT}")] {
        client_hosts.set(&name, vec![relay_addr.ip()]);
    }
    let client = Client {
        endpoint: ENDPOINT.to_string(),
        port: relay_addr.port(),
        signer: Some(Signer {
            access_key: ACCESS_KEY.to_string(),
            secret_key: SECRET_KEY.to_string(),
            region: REGION.to_string(),
        }),
        resolver: Arc::new(client_hosts) as Arc<dyn Resolve>,
        timeout: Duration::from_secs(60),
        tls: None,
        connect_to: None,
    };

    say!("ossrelay demo: the private path from the blog, on loopback");
    say!("  OSS stand-in : ossrelay store on {store_addr} (domain {ENDPOINT}, bucket {BUCKET}, SigV4 required)");
    say!(
        "  relay (ECS)  : ossrelay stone -d -d {ENDPOINT}:{} {}   <- the blog's line, ports moved",
        store_addr.port(),
        relay_addr
    );
    say!("                 listening on {relay_addr}; relay hosts file: 127.0.0.1 {ENDPOINT}");
    say!("  client (EC2) : hosts file");
    say!("                 {} {ENDPOINT}", relay_addr.ip());
    say!("                 {} {BUCKET}.{ENDPOINT}", relay_addr.ip());
    say!("  client tool  : ossutil is not run; a built-in S3 client makes the same requests,");
    say!("                 and each step's output is modelled on ossutil's");

    let total = 6;
    let result = steps(&client, total).await;
    if result.is_ok() {
        // 6. The relay's log for those connections.
        let _ = step(
            total,
            total,
            "relay log (the lines the blog shows at -d -d)",
        );
        let text = relay_log
            .0
            .lock()
            .map(|v| String::from_utf8_lossy(&v).to_string())
            .unwrap_or_default();
        let accepted = text
            .lines()
            .filter(|l| l.contains(": accepted TCP ") && l.contains("from 127.0.0.1:"))
            .count();
        for line in text.lines() {
            say!("{line}");
        }
        if accepted == 0 {
            stop.cancel();
            return Err("the relay logged no `accepted TCP` line".into());
        }
        ok(&format!(
            "{accepted} connections went through the relay, each logged as stone does"
        ));
    }
    if opts.keep && result.is_ok() {
        print_keep_instructions(store_addr, relay_addr);
        let seen = relay_log.0.lock().map(|v| v.len()).unwrap_or_default();
        let follow = tokio::spawn(follow_relay_log(relay_log.clone(), seen, stop.clone()));
        let _ = tokio::signal::ctrl_c().await;
        stop.cancel();
        let _ = follow.await;
    }
    stop.cancel();
    let _ = relay_task.await;
    let _ = store_task.await;
    result
}

async fn steps(client: &Client, total: usize) -> Result<(), String> {
    let e = |what: &str| {
        let what = what.to_string();
        move |err: crate::s3client::ClientError| format!("{what}: {err}")
    };
    // 1. ossutil ls
    let t = step(
        1,
        total,
        "ossutil ls                              (ListBuckets)",
    );
    let buckets = client.list_buckets().await.map_err(e("list buckets"))?;
    say!(
        "{:<45}{:>20}{:>16}    BucketName",
        "CreationTime",
        "Region",
        "StorageClass"
    );
    for b in &buckets {
        say!(
            "{:<45}{:>20}{:>16}    oss://{}",
            b.created,
            REGION,
            "Standard",
            b.name
        );
    }
    say!("Bucket Number is: {}", buckets.len());
    elapsed(t);
    if !buckets.iter().any(|b| b.name == BUCKET) {
        return Err(format!("bucket {BUCKET} missing from the listing"));
    }
    ok("list buckets");

    // 2. ossutil ls oss://aws-alibaba-oss
    let t = step(
        2,
        total,
        "ossutil ls oss://aws-alibaba-oss        (ListObjects)",
    );
    let before = client
        .list_objects(BUCKET, 1000)
        .await
        .map_err(e("list objects"))?;
    print_objects(&before);
    elapsed(t);
    ok("list bucket");

    // 3. ossutil cp ./test2.txt oss://aws-alibaba-oss, then get it back.
    let t = step(
        3,
        total,
        "ossutil cp ./test2.txt oss://aws-alibaba-oss   (PutObject, GetObject)",
    );
    let text = Bytes::from_static(b"test2: uploaded through the private path by ossrelay demo\n");
    let etag = client
        .put_object(BUCKET, "test2.txt", text.clone(), None)
        .await
        .map_err(e("upload test2.txt"))?;
    say!(
        "Succeed: Total num: 1, size: {}. OK num: 1(upload 1 files). ETag {etag}",
        text.len()
    );
    let back = client
        .get_object(BUCKET, "test2.txt")
        .await
        .map_err(e("download test2.txt"))?;
    if back != text {
        return Err(format!(
            "test2.txt came back different: {} bytes instead of {}",
            back.len(),
            text.len()
        ));
    }
    say!("downloaded test2.txt: {} bytes, identical", back.len());
    let after = client
        .list_objects(BUCKET, 1000)
        .await
        .map_err(e("list objects"))?;
    print_objects(&after);
    elapsed(t);
    if !after
        .iter()
        .any(|o| o.key == "test2.txt" && o.size == text.len() as u64)
    {
        return Err("test2.txt is not in the listing after the upload".into());
    }
    ok("upload, download and compare test2.txt");

    // 4. A multi-MiB upload with a progress bar.
    let t = step(
        4,
        total,
        &format!(
            "ossutil cp big.bin oss://aws-alibaba-oss   ({} MiB, SHA-256 compared)",
            BIG_UPLOAD >> 20
        ),
    );
    let big = pattern(BIG_UPLOAD);
    let want = Sha256::digest(&big);
    let sent = Arc::new(AtomicU64::new(0));
    let bar = tokio::spawn(progress_bar(sent.clone(), BIG_UPLOAD as u64));
    let up = client
        .put_object(BUCKET, "big.bin", big.clone(), Some(sent.clone()))
        .await;
    sent.store(u64::MAX, Ordering::Relaxed);
    let _ = bar.await;
    up.map_err(e("upload big.bin"))?;
    let got = client
        .get_object(BUCKET, "big.bin")
        .await
        .map_err(e("download big.bin"))?;
    let have = Sha256::digest(&got);
    say!("sha256 sent     {}", crate::s3client::sigv4::hex(&want));
    say!("sha256 received {}", crate::s3client::sigv4::hex(&have));
    elapsed(t);
    if want != have || got.len() != BIG_UPLOAD {
        return Err(format!(
            "big.bin differs after the round trip ({} bytes back)",
            got.len()
        ));
    }
    ok("multi-MiB upload and download, SHA-256 equal");

    // 5. Policy sanity: a tampered signature is refused by the store.
    let t = step(
        5,
        total,
        "a request with a wrong secret key      (signature check)",
    );
    let mut bad = client.clone();
    if let Some(s) = bad.signer.as_mut() {
        s.secret_key.push('x');
    }
    match bad.list_objects(BUCKET, 1).await {
        Err(crate::s3client::ClientError::Status {
            status,
            code,
            request_id,
            ..
        }) if status == 403 => {
            say!("refused: HTTP {status} {code} (x-oss-request-id {request_id})");
        }
        other => return Err(format!("a badly signed request was not refused: {other:?}")),
    }
    elapsed(t);
    ok("badly signed request refused with 403");
    Ok(())
}

fn print_objects(objs: &[crate::s3client::xml::Object]) {
    say!(
        "{:<32}{:>12}{:>15}   {:<36}ObjectName",
        "LastModifiedTime",
        "Size(B)",
        "StorageClass",
        "ETAG"
    );
    for o in objs {
        say!(
            "{:<32}{:>12}{:>15}   {:<36}oss://{BUCKET}/{}",
            o.modified,
            o.size,
            "Standard",
            o.etag.to_uppercase(),
            o.key
        );
    }
    say!("Object Number is: {}", objs.len());
}

pub(crate) fn pattern(len: usize) -> Bytes {
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    let mut v = Vec::with_capacity(len);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(len);
    Bytes::from(v)
}

pub(crate) async fn progress_bar(sent: Arc<AtomicU64>, total: u64) {
    use std::io::IsTerminal;
    // Redraw in place on a terminal; print only the final state otherwise.
    let tty = std::io::stdout().is_terminal();
    let start = Instant::now();
    let mut last_pct = u64::MAX;
    loop {
        let s = sent.load(Ordering::Relaxed);
        let done = s == u64::MAX;
        let s = s.min(total);
        let pct = s * 100 / total.max(1);
        if (tty && pct != last_pct) || done {
            let filled = (pct / 4) as usize;
            let secs = start.elapsed().as_secs_f64().max(1e-6);
            let _ = write!(
                std::io::stdout(),
                "\r[{}{}] {:>3}%  {:>6.1} MiB  {:>7.1} MiB/s",
                "#".repeat(filled),
                " ".repeat(25 - filled),
                pct,
                s as f64 / 1048576.0,
                s as f64 / 1048576.0 / secs
            );
            let _ = std::io::stdout().flush();
            last_pct = pct;
        }
        if done {
            say!();
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Prints client command lines that work exactly as printed: path style
/// against the relay's own address, so no hosts file has to change first.
/// `tests/it/store.rs` runs every one of them.
fn print_keep_instructions(store: SocketAddr, relay: SocketAddr) {
    say!("\n--keep: the store and the relay stay up until Ctrl-C.");
    say!("Credentials: access key {ACCESS_KEY}, secret key {SECRET_KEY}");
    say!("Point a real client at the relay; these lines work as printed (path style):");
    say!("\n  aws:");
    say!("    AWS_ACCESS_KEY_ID={ACCESS_KEY} AWS_SECRET_ACCESS_KEY={SECRET_KEY} \\");
    say!("      aws --endpoint-url http://{relay} --region {REGION} s3 ls s3://{BUCKET}");
    say!("  s3cmd:");
    say!("    s3cmd --access_key={ACCESS_KEY} --secret_key={SECRET_KEY} --no-ssl \\");
    say!("      --host={relay} --host-bucket={relay} ls s3://{BUCKET}");
    say!("  rclone:");
    // rclone splits a connection string at ':' unless the value is quoted.
    say!("    rclone lsf \":s3,provider=Other,access_key_id={ACCESS_KEY},secret_access_key={SECRET_KEY},endpoint='http://{relay}',force_path_style=true:{BUCKET}\"");
    say!("\nVirtual-hosted style (what OSS itself requires) needs the names to resolve to the");
    say!(
        "relay, e.g. in /etc/hosts, and then endpoint http://{ENDPOINT}:{}:",
        relay.port()
    );
    say!("    {} {ENDPOINT}", relay.ip());
    say!("    {} {BUCKET}.{ENDPOINT}", relay.ip());
    say!("The store itself (no relay) is at http://{store}.");
    say!("\nRelay log lines for your clients follow as they arrive:");
}

/// Prints what the relay logs after `from` (a byte offset into its log) as
/// it arrives, until `stop`: the user's own clients show up as stone's
/// `-d -d` lines, the way the demo's steps did.
async fn follow_relay_log(log: LogBuffer, mut from: usize, stop: CancellationToken) {
    loop {
        let fresh = log
            .0
            .lock()
            .map(|v| v.get(from..).unwrap_or_default().to_vec())
            .unwrap_or_default();
        // Print whole lines only; a partial line waits for its end.
        if let Some(end) = fresh.iter().rposition(|&b| b == b'\n') {
            let _ = std::io::stdout().write_all(&fresh[..=end]);
            let _ = std::io::stdout().flush();
            from += end + 1;
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
    }
}
