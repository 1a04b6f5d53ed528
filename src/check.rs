//! `ossrelay check`: the client-side probe that proves the private path.
//! From the client, it checks where each name resolves, that the relay
//! accepts connections, that what answers is OSS-like, and (with keys) that
//! signed requests work, printing one ✔/✘ line per check.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::Serialize;

use crate::resolve::{Resolve, ResolveFuture, StaticResolver, SystemResolver};
use crate::s3client::sigv4::Signer;
use crate::s3client::{Client, ClientError, Response};

/// What to check.
#[derive(Debug, Clone)]
pub struct Options {
    /// The endpoint name, e.g. `oss-ap-northeast-1-internal.aliyuncs.com`.
    pub endpoint: String,
    /// Buckets to check (`bucket.endpoint`).
    pub buckets: Vec<String>,
    /// The relay address every name should resolve to.
    pub expect_relay: Option<IpAddr>,
    /// Use HTTPS (and check the certificate names).
    pub https: bool,
    /// Port (default 80, or 443 with HTTPS).
    pub port: Option<u16>,
    /// Keys for the signed check.
    pub signer: Option<Signer>,
    /// Put, get and delete an object of this many bytes.
    pub upload_test: Option<u64>,
    /// `name=ip` overrides, consulted before the system resolver.
    pub resolve: Vec<(String, IpAddr)>,
    /// Per-step timeout.
    pub timeout: Duration,
    /// Draw a progress bar for the upload test.
    pub progress: bool,
}

/// One line of the checklist.
#[derive(Debug, Clone, Serialize)]
pub struct Item {
    /// `resolve`, `connect`, `anonymous`, `signed`, `certificate`, `upload`.
    pub check: &'static str,
    /// The name checked.
    pub target: String,
    /// Passed?
    pub ok: bool,
    /// The one-line diagnosis.
    pub detail: String,
    /// The request id of the answer, when there was one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

impl Item {
    fn new(check: &'static str, target: &str, ok: bool, detail: String) -> Item {
        Item {
            check,
            target: target.to_string(),
            ok,
            detail,
            request_id: None,
        }
    }

    /// The text line: `✔ check  target: detail`.
    pub fn line(&self) -> String {
        format!(
            "{} {:<11} {}: {}",
            if self.ok { "✔" } else { "✘" },
            self.check,
            self.target,
            self.detail
        )
    }
}

/// `--resolve` overrides first, then the system's resolver (/etc/hosts and
/// resolv.conf, as every client on the host sees them).
struct Overlay {
    fixed: StaticResolver,
    system: SystemResolver,
}

impl Resolve for Overlay {
    fn resolve<'a>(&'a self, host: &'a str) -> ResolveFuture<'a> {
        Box::pin(async move {
            match self.fixed.resolve(host).await {
                Ok(ips) => Ok(ips),
                Err(_) => self.system.resolve(host).await,
            }
        })
    }
}

fn is_oss_vip(ip: IpAddr) -> bool {
    matches!(ip, IpAddr::V4(v4) if v4.octets()[0] == 100 && (v4.octets()[1] & 0xC0) == 64)
}

fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_private() || v4.is_loopback() || v4.is_link_local(),
        IpAddr::V6(v6) => v6.is_loopback() || (v6.segments()[0] & 0xfe00) == 0xfc00,
    }
}

/// Where one address leads, and whether that is the private path.
fn classify(ip: IpAddr, relay: Option<IpAddr>) -> (bool, String) {
    if relay == Some(ip) {
        return (true, format!("{ip} (the relay)"));
    }
    let (fine, what) = if is_oss_vip(ip) {
        (false, format!("{ip}, an OSS intranet VIP (100.64.0.0/10): reachable only inside the region's VPC, so a client elsewhere needs the relay"))
    } else if is_private(ip) {
        (true, format!("{ip}, a private address"))
    } else {
        (
            false,
            format!("{ip}, a PUBLIC address: traffic would cross the internet"),
        )
    };
    match relay {
        Some(r) => (
            false,
            format!("{what}; not the relay {r} (hosts line or DNS missing or stale?)"),
        ),
        None => (fine, what),
    }
}

/// The results so far, each handed to `shown` as it is decided, so a text
/// checklist grows line by line and the upload test's progress bar appears
/// after the lines that came before it, not above the whole list.
struct Checklist<'a> {
    items: Vec<Item>,
    shown: &'a mut dyn FnMut(&Item),
}

impl Checklist<'_> {
    fn push(&mut self, item: Item) {
        (self.shown)(&item);
        self.items.push(item);
    }
}

/// Runs every check, in order; later checks of a name are skipped when it
/// does not resolve. `shown` sees each result as soon as it is known.
pub async fn run(opts: &Options, shown: &mut dyn FnMut(&Item)) -> Vec<Item> {
    let fixed = StaticResolver::new();
    for (name, ip) in &opts.resolve {
        fixed.set(name, vec![*ip]);
    }
    let resolver: Arc<dyn Resolve> = Arc::new(Overlay {
        fixed,
        system: SystemResolver::new(),
    });
    let port = opts.port.unwrap_or(if opts.https { 443 } else { 80 });
    let mut items = Checklist {
        items: Vec::new(),
        shown,
    };
    let mut names = vec![opts.endpoint.clone()];
    names.extend(
        opts.buckets
            .iter()
            .map(|b| format!("{b}.{}", opts.endpoint)),
    );
    let mut reachable = Vec::new();
    for name in &names {
        let ips = match tokio::time::timeout(opts.timeout, resolver.resolve(name)).await {
            Ok(Ok(ips)) if !ips.is_empty() => ips,
            Ok(Err(e)) => {
                items.push(Item::new("resolve", name, false, format!("does not resolve ({e}); add a hosts line (`ossrelay hosts`) or use the relay's DNS")));
                continue;
            }
            _ => {
                items.push(Item::new(
                    "resolve",
                    name,
                    false,
                    "does not resolve (no answer in time)".into(),
                ));
                continue;
            }
        };
        let verdicts: Vec<(bool, String)> = ips
            .iter()
            .map(|ip| classify(*ip, opts.expect_relay))
            .collect();
        let ok = verdicts.iter().all(|v| v.0);
        let detail = verdicts
            .into_iter()
            .map(|v| v.1)
            .collect::<Vec<_>>()
            .join("; ");
        items.push(Item::new("resolve", name, ok, detail));
        let addr = SocketAddr::new(ips[0], port);
        let start = Instant::now();
        match tokio::time::timeout(opts.timeout, tokio::net::TcpStream::connect(addr)).await {
            Ok(Ok(_)) => {
                let ms = start.elapsed().as_secs_f64() * 1000.0;
                items.push(Item::new(
                    "connect",
                    name,
                    true,
                    format!("{addr} in {ms:.1} ms"),
                ));
                reachable.push(name.clone());
            }
            Ok(Err(e)) => items.push(Item::new(
                "connect",
                name,
                false,
                format!("{addr}: {e} (is the relay running and listening on {port}?)"),
            )),
            Err(_) => items.push(Item::new(
                "connect",
                name,
                false,
                format!(
                    "{addr}: no answer in {:?} (routing or firewall?)",
                    opts.timeout
                ),
            )),
        }
    }
    let tls = if opts.https {
        match crate::tls::ClientTls::build(crate::tls::ClientTlsSpec::default()) {
            Ok(t) => Some(t.connector),
            Err(e) => {
                items.push(Item::new("certificate", &opts.endpoint, false, e));
                return items.items;
            }
        }
    } else {
        None
    };
    let client = |signer: Option<Signer>| Client {
        endpoint: opts.endpoint.clone(),
        port,
        signer,
        resolver: resolver.clone(),
        timeout: opts.timeout,
        tls: tls.clone(),
        connect_to: None,
    };
    let anon = client(None);
    let targets: Vec<Option<&str>> = if opts.buckets.is_empty() {
        vec![None]
    } else {
        opts.buckets.iter().map(|b| Some(b.as_str())).collect()
    };
    for bucket in &targets {
        let host = bucket.map_or(opts.endpoint.clone(), |b| format!("{b}.{}", opts.endpoint));
        if !reachable.contains(&host) {
            continue;
        }
        match anon.send("GET", *bucket, "", &[], Bytes::new(), None).await {
            Ok(r) => {
                if opts.https {
                    items.push(Item::new(
                        "certificate",
                        &host,
                        true,
                        format!("valid for {host}"),
                    ));
                }
                items.push(anonymous(&host, &r));
            }
            Err(e) if opts.https && e.to_string().contains("TLS") => {
                items.push(Item::new(
                    "certificate",
                    &host,
                    false,
                    cert_problem(&host, *bucket, &e),
                ));
            }
            Err(e) => items.push(Item::new("anonymous", &host, false, e.to_string())),
        }
    }
    if let Some(signer) = &opts.signer {
        let signed = client(Some(signer.clone()));
        for b in &opts.buckets {
            let host = format!("{b}.{}", opts.endpoint);
            if !reachable.contains(&host) {
                continue;
            }
            let q = vec![
                ("list-type".to_string(), "2".to_string()),
                ("max-keys".to_string(), "1".to_string()),
            ];
            let item = match signed
                .request("GET", Some(b), "", &q, Bytes::new(), None)
                .await
            {
                Ok(r) => {
                    let n = crate::s3client::xml::objects(&String::from_utf8_lossy(&r.body)).len();
                    let mut i = Item::new(
                        "signed",
                        &host,
                        true,
                        format!("ListObjects (max-keys=1) succeeded, {n} object(s) returned"),
                    );
                    i.request_id = request_id(&r);
                    i
                }
                Err(ClientError::Status {
                    status,
                    code,
                    message,
                    request_id,
                }) => {
                    let why = relay_policy_refusal(status, &message).unwrap_or_else(|| {
                        format!("ListObjects failed: {status} {code} (request id {request_id})")
                    });
                    let mut i = Item::new("signed", &host, false, why);
                    i.request_id = Some(request_id);
                    i
                }
                Err(e) => Item::new("signed", &host, false, format!("ListObjects failed: {e}")),
            };
            items.push(item);
        }
        if let (Some(size), Some(b)) = (opts.upload_test, opts.buckets.first()) {
            items.push(upload(&signed, b, size, opts.progress).await);
        }
    } else if opts.upload_test.is_some() {
        items.push(Item::new(
            "upload",
            &opts.endpoint,
            false,
            "--upload-test needs --access-key and --secret-key".into(),
        ));
    }
    items.items
}

fn request_id(r: &Response) -> Option<String> {
    r.header("x-oss-request-id")
        .or(r.header("x-amz-request-id"))
        .map(str::to_string)
}

/// A 403 that ossrelay's own bucket policy gave (its message says so), in
/// words: the relay refused the bucket, OSS never saw the request.
fn relay_policy_refusal(status: u16, message: &str) -> Option<String> {
    (status == 403
        && (message.contains("(ossrelay endpoint policy)")
            || message.contains("(ossrelay bucket policy)")))
    .then(|| format!("refused by the relay's bucket policy, not by OSS: {message}"))
}

/// Classifies an anonymous answer: OSS (and our stand-in) answers with a
/// request id and an S3-style XML error; a plain web server does not.
fn anonymous(host: &str, r: &Response) -> Item {
    let text = String::from_utf8_lossy(&r.body);
    let code = crate::s3client::xml::first(&text, "Code");
    let server = r.header("server").unwrap_or("-").to_string();
    let rid = request_id(r);
    let oss_like = r.header("x-oss-request-id").is_some() || server.contains("AliyunOSS");
    let s3_xml = code.is_some() && text.contains("<Error>");
    let message = crate::s3client::xml::first(&text, "Message").unwrap_or_default();
    let mut item = if let Some(why) = relay_policy_refusal(r.status, &message) {
        Item::new("anonymous", host, false, why)
    } else if oss_like && (s3_xml || r.status < 300) {
        Item::new(
            "anonymous",
            host,
            true,
            format!(
                "OSS-like answer: {} {} (request id {})",
                r.status,
                code.unwrap_or_else(|| "OK".into()),
                rid.as_deref().unwrap_or("-")
            ),
        )
    } else {
        Item::new(
            "anonymous",
            host,
            false,
            format!(
                "not OSS-like: {} from Server: {server}, {} x-oss-request-id, {} S3 XML error (something else answers on this address)",
                r.status,
                if oss_like { "with" } else { "no" },
                if s3_xml { "an" } else { "no" }
            ),
        )
    };
    item.request_id = rid;
    item
}

/// Explains a failed TLS handshake, calling out the wildcard-depth trap.
fn cert_problem(host: &str, bucket: Option<&str>, e: &ClientError) -> String {
    let mut s = format!("TLS failed for {host}: {e}");
    if bucket.is_some_and(|b| b.contains('.')) && e.to_string().to_lowercase().contains("name") {
        s.push_str("; the bucket name has dots, and a *.endpoint certificate covers exactly one label, so virtual-hosted HTTPS cannot match: use a bucket name without dots or path-style requests");
    }
    s
}

async fn upload(client: &Client, bucket: &str, size: u64, progress: bool) -> Item {
    let host = format!("{bucket}.{}", client.endpoint);
    let key = format!(
        "ossrelay-check-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    );
    let Ok(len) = usize::try_from(size) else {
        return Item::new("upload", &host, false, format!("{size} bytes is too large"));
    };
    let data = crate::demo::pattern(len);
    let sent = Arc::new(AtomicU64::new(0));
    let bar = progress.then(|| tokio::spawn(crate::demo::progress_bar(sent.clone(), size)));
    let start = Instant::now();
    let put = client
        .put_object(bucket, &key, data.clone(), Some(sent.clone()))
        .await;
    let put_secs = start.elapsed().as_secs_f64();
    sent.store(u64::MAX, Ordering::Relaxed);
    if let Some(b) = bar {
        let _ = b.await;
    }
    if let Err(e) = put {
        return Item::new("upload", &host, false, format!("put {key}: {e}"));
    }
    let start = Instant::now();
    let got = client.get_object(bucket, &key).await;
    let get_secs = start.elapsed().as_secs_f64();
    let deleted = client.delete_object(bucket, &key).await;
    let mib = size as f64 / 1048576.0;
    match (got, deleted) {
        (Ok(body), Ok(())) if body == data => Item::new(
            "upload",
            &host,
            true,
            format!(
                "{mib:.1} MiB put at {:.1} MiB/s, read back identical at {:.1} MiB/s, deleted",
                mib / put_secs.max(1e-6),
                mib / get_secs.max(1e-6)
            ),
        ),
        (Ok(_), Ok(())) => Item::new(
            "upload",
            &host,
            false,
            format!("{key} read back different from what was put"),
        ),
        (Err(e), _) => Item::new("upload", &host, false, format!("get {key}: {e}")),
        (_, Err(e)) => Item::new(
            "upload",
            &host,
            false,
            format!("delete {key}: {e} (remove it by hand)"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_classified() {
        let relay: IpAddr = "172.31.10.171".parse().unwrap();
        assert!(classify(relay, Some(relay)).0);
        let (ok, why) = classify("100.118.0.5".parse().unwrap(), None);
        assert!(!ok && why.contains("VIP"));
        let (ok, why) = classify("47.74.0.1".parse().unwrap(), None);
        assert!(!ok && why.contains("PUBLIC"));
        let (ok, why) = classify("10.0.0.9".parse().unwrap(), Some(relay));
        assert!(!ok && why.contains("not the relay"));
        assert!(classify("10.0.0.9".parse().unwrap(), None).0);
    }
}
