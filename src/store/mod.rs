//! `ossrelay store`: a directory served as S3-compatible storage, the
//! stand-in for OSS in the demo and tests. Built on `s3s` + `s3s-fs`; each
//! top-level folder is a bucket. With a domain, virtual-hosted requests
//! (`bucket.<domain>`) work as OSS requires; with keys, SigV4/V2 signatures
//! are verified. Every response carries `x-oss-request-id` so probes can
//! tell an OSS-like endpoint from an arbitrary web server.

pub mod compat;
pub mod oss_auth;

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use hyper::service::service_fn;
use s3s::host::{S3Host, VirtualHost};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How long a client may take to send a request head.
const HEADER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);
/// How long in-flight requests may run after a stop signal.
const DRAIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// How to run the store.
#[derive(Clone)]
pub struct StoreConfig {
    /// The directory whose top-level folders are buckets.
    pub root: PathBuf,
    /// Virtual-hosted-style domain, e.g. `oss-ap-northeast-1-internal.aliyuncs.com`.
    pub domain: Option<String>,
    /// Access key and secret; when set, requests must be signed.
    pub keys: Option<(String, String)>,
}

impl std::fmt::Debug for StoreConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreConfig")
            .field("root", &self.root)
            .field("domain", &self.domain)
            .field("keys", &self.keys.as_ref().map(|(ak, _)| (ak, "********")))
            .finish()
    }
}

/// Why the store could not start.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The root directory is missing or unusable.
    #[error("store root {path}: {reason}")]
    Root {
        /// The path given.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The domain is not a valid DNS name.
    #[error("store domain {0:?} is not a valid domain name")]
    Domain(String),
}

/// Host parsing that strips a port and falls back to path-style for any
/// host that is not `<domain>` or `<bucket>.<domain>` (s3s' built-in
/// parsers would treat `localhost:9000` as a bucket name).
struct OssHost {
    domain: String,
}

impl S3Host for OssHost {
    fn parse_host_header<'a>(&'a self, host: &'a str) -> s3s::S3Result<VirtualHost<'a>> {
        // DNS names are case-insensitive; the suffix is compared that way
        // but the bucket label is kept as sent (S3 then validates its case).
        match bucket_of_host(host, &self.domain) {
            Some(bucket) => Ok(VirtualHost::new(self.domain.as_str()).with_bucket(bucket)),
            None => Ok(VirtualHost::new(host)),
        }
    }
}

/// A built store service, ready to serve connections.
#[derive(Clone)]
pub struct Store {
    service: s3s::service::S3Service,
    requests: Arc<AtomicU64>,
    instance: u64,
    /// For OSS-signed requests: the bucket named by the Host.
    domain: Option<Arc<str>>,
    /// The one access key and its secret, when signatures are required.
    keys: Option<Arc<(String, String)>>,
}

impl Store {
    /// Checks the root and builds the service.
    pub fn new(cfg: &StoreConfig) -> Result<Store, StoreError> {
        let root_err = |reason: String| StoreError::Root {
            path: cfg.root.clone(),
            reason,
        };
        let meta = std::fs::metadata(&cfg.root).map_err(|e| root_err(e.to_string()))?;
        if !meta.is_dir() {
            return Err(root_err("not a directory".into()));
        }
        let fs = s3s_fs::FileSystem::new(&cfg.root).map_err(|e| root_err(format!("{e:?}")))?;
        let mut builder = s3s::service::S3ServiceBuilder::new(compat::OssFs(fs));
        if let Some((ak, sk)) = &cfg.keys {
            builder.set_auth(s3s::auth::SimpleAuth::from_single(ak.clone(), sk.clone()));
        }
        if let Some(domain) = &cfg.domain {
            if crate::config::Upstream::parse(&format!("{domain}:1")).is_err()
                || domain.parse::<std::net::IpAddr>().is_ok()
            {
                return Err(StoreError::Domain(domain.clone()));
            }
            builder.set_host(OssHost {
                domain: domain.to_ascii_lowercase(),
            });
        }
        let instance = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0)
            ^ u64::from(std::process::id());
        Ok(Store {
            service: builder.build(),
            requests: Arc::new(AtomicU64::new(0)),
            instance,
            domain: cfg
                .domain
                .as_deref()
                .map(|d| Arc::from(d.to_ascii_lowercase())),
            keys: cfg.keys.clone().map(Arc::new),
        })
    }

    /// OSS request ids are 24 upper-case hex characters.
    fn next_request_id(&self) -> String {
        let n = self.requests.fetch_add(1, Ordering::Relaxed);
        format!("{:016X}{:08X}", self.instance, n as u32)
    }

    /// Serves HTTP/1.1 on `listener` until `shutdown` is cancelled, then
    /// lets in-flight requests finish.
    pub async fn serve(self, listener: TcpListener, shutdown: CancellationToken) {
        let tracker = TaskTracker::new();
        loop {
            let (sock, peer) = tokio::select! {
                _ = shutdown.cancelled() => break,
                r = listener.accept() => match r {
                    Ok(pair) => pair,
                    Err(e) => {
                        tracing::warn!("store: accept: {e}");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let store = self.clone();
            let stop = shutdown.clone();
            tracker.spawn(async move {
                let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let store = store.clone();
                    async move { Ok::<_, Infallible>(store.handle(req, peer).await) }
                });
                // A client that never finishes its request head must not
                // hold a connection (or a shutdown) forever.
                let conn = hyper::server::conn::http1::Builder::new()
                    .timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(HEADER_TIMEOUT)
                    .serve_connection(hyper_util::rt::TokioIo::new(sock), svc);
                tokio::pin!(conn);
                tokio::select! {
                    r = conn.as_mut() => { if let Err(e) = r { tracing::debug!("store: {peer}: {e}"); } }
                    _ = stop.cancelled() => {
                        conn.as_mut().graceful_shutdown();
                        let _ = tokio::time::timeout(DRAIN_TIMEOUT, conn).await;
                    }
                }
            });
        }
        tracker.close();
        tracker.wait().await;
    }

    async fn handle(
        &self,
        req: hyper::Request<hyper::body::Incoming>,
        peer: SocketAddr,
    ) -> s3s::HttpResponse {
        let id = self.next_request_id();
        let method = req.method().clone();
        let uri = req.uri().clone();
        let host = req
            .headers()
            .get(hyper::header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("-")
            .to_string();
        // Keys stay inside their bucket: a dot-segment in the path or in a
        // copy source would be resolved by the filesystem under s3s-fs, so
        // it is refused, never resolved.
        let copy_source = ["x-amz-copy-source", "x-oss-copy-source"]
            .iter()
            .filter_map(|h| req.headers().get(*h))
            .filter_map(|v| v.to_str().ok())
            .any(|v| crate::wire::http_head::has_dot_segment(&format!("/{v}")));
        let refused = if crate::wire::http_head::has_dot_segment(uri.path()) {
            Some("the path has a '.' or '..' segment; ossrelay store refuses such keys rather than resolve them")
        } else if copy_source {
            Some("the copy source has a '.' or '..' segment; ossrelay store refuses such keys rather than resolve them")
        } else {
            None
        };
        let call = async {
            if let Some(why) = refused {
                return Ok(error_reply(400, "InvalidArgument", why, &id));
            }
            match self.oss_signed(req) {
                Ok(req) => self.service.call(req.map(s3s::Body::from)).await,
                Err(rejection) => Ok(error_reply(
                    403,
                    rejection.code,
                    &xml_text(&rejection.message),
                    &id,
                )),
            }
        };
        let mut resp = match call.await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!("store: {method} {uri}: internal error {e:?}");
                let mut r = hyper::Response::new(s3s::Body::from(
                    "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>InternalError</Code></Error>".to_string(),
                ));
                *r.status_mut() = hyper::StatusCode::INTERNAL_SERVER_ERROR;
                r
            }
        };
        if let Ok(v) = hyper::header::HeaderValue::from_str(&id) {
            resp.headers_mut().insert("x-oss-request-id", v);
        }
        as_oss_xml(&mut resp, self.domain.as_deref());
        resp.headers_mut().insert(
            hyper::header::SERVER,
            hyper::header::HeaderValue::from_static("ossrelay-store"),
        );
        tracing::info!(
            target: "ossrelay::store",
            event = "store",
            client = %peer,
            host = %host,
            method = %method,
            status = resp.status().as_u16(),
            request_id = %id,
            "{method} {uri} {}", resp.status().as_u16()
        );
        resp
    }
}

/// Query parameters that carry an OSS signature, not part of the request.
const OSS_AUTH_PARAMS: &[&str] = &[
    "OSSAccessKeyId",
    "Expires",
    "Signature",
    "x-oss-signature-version",
    "x-oss-credential",
    "x-oss-date",
    "x-oss-expires",
    "x-oss-signature",
    "x-oss-additional-headers",
];

impl Store {
    /// Alibaba's SDKs sign with OSS V1 or V4, which s3s does not know.
    /// Such a request is verified here; s3s then gets it re-signed with
    /// AWS SigV4 by the same key (or, on a store without keys, unsigned),
    /// so its own checks and everything after them stay as they are.
    fn oss_signed(
        &self,
        req: hyper::Request<hyper::body::Incoming>,
    ) -> Result<hyper::Request<hyper::body::Incoming>, oss_auth::Rejection> {
        let headers: Vec<(String, String)> = req
            .headers()
            .iter()
            .filter_map(|(k, v)| {
                Some((
                    k.as_str().to_ascii_lowercase(),
                    v.to_str().ok()?.to_string(),
                ))
            })
            .collect();
        let host = req
            .headers()
            .get(hyper::header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("")
            .to_string();
        let bucket = self
            .domain
            .as_deref()
            .and_then(|d| bucket_of_host(&host, d));
        let verdict = oss_auth::verify(
            &oss_auth::Request {
                method: req.method().as_str(),
                path: req.uri().path(),
                query: req.uri().query(),
                headers: &headers,
                bucket_from_host: bucket,
            },
            |ak| {
                self.keys
                    .as_deref()
                    .filter(|(k, _)| k == ak)
                    .map(|(_, s)| s.clone())
            },
            std::time::SystemTime::now(),
        );
        match verdict {
            oss_auth::OssAuth::None => Ok(req),
            oss_auth::OssAuth::Invalid(r) => Err(r),
            oss_auth::OssAuth::Valid { .. } => Ok(self.resign(req, &host)),
        }
    }

    /// The request without its OSS signature, with a SigV4 one by the
    /// store's key when it has one. Path and query are re-encoded from their
    /// decoded form, so what is signed is exactly what s3s reads.
    fn resign(
        &self,
        req: hyper::Request<hyper::body::Incoming>,
        host: &str,
    ) -> hyper::Request<hyper::body::Incoming> {
        use crate::s3client::sigv4::{uri_encode, Signer};
        use crate::wire::http_head::percent_decode;
        let (mut parts, body) = req.into_parts();
        let decode = |s: &str| String::from_utf8_lossy(&percent_decode(s.as_bytes())).into_owned();
        let path = decode(parts.uri.path());
        // Form encoding: a `+` in a query is a space (oss2 sends them so).
        let query: Vec<(String, String)> = parts
            .uri
            .query()
            .unwrap_or("")
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|p| {
                let (k, v) = p.split_once('=').unwrap_or((p, ""));
                (decode(&k.replace('+', " ")), decode(&v.replace('+', " ")))
            })
            .filter(|(k, _)| !OSS_AUTH_PARAMS.contains(&k.as_str()))
            .collect();
        let mut target = uri_encode(&path, true);
        if !query.is_empty() {
            let q: Vec<String> = query
                .iter()
                .map(|(k, v)| format!("{}={}", uri_encode(k, false), uri_encode(v, false)))
                .collect();
            target = format!("{target}?{}", q.join("&"));
        }
        if let Ok(uri) = target.parse() {
            parts.uri = uri;
        }
        parts.headers.remove(hyper::header::AUTHORIZATION);
        if let Some((ak, sk)) = self.keys.as_deref() {
            let signer = Signer {
                access_key: ak.clone(),
                secret_key: sk.clone(),
                region: "oss".into(),
            };
            let method = parts.method.as_str().to_string();
            let signed = signer.sign(
                &method,
                host,
                &path,
                &query,
                "UNSIGNED-PAYLOAD",
                crate::observe::time::Civil::now(),
            );
            for (name, value) in [
                ("x-amz-date", signed.amz_date),
                ("x-amz-content-sha256", signed.content_sha256),
                ("authorization", signed.authorization),
            ] {
                if let Ok(v) = hyper::header::HeaderValue::from_str(&value) {
                    parts.headers.insert(name, v);
                }
            }
        }
        hyper::Request::from_parts(parts, body)
    }
}

/// `<bucket>.<domain>` (any port, any case) names a bucket.
fn bucket_of_host<'h>(host: &'h str, domain: &str) -> Option<&'h str> {
    let name = match host.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') && p.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    };
    let (n, d) = (name.len(), domain.len());
    (n > d + 1
        && name.is_char_boundary(n - d)
        && name[n - d..].eq_ignore_ascii_case(domain)
        && name.as_bytes()[n - d - 1] == b'.')
        .then(|| &name[..n - d - 1])
}

/// Text for an XML element.
fn xml_text(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// XML bodies as OSS writes them. OSS's XML has no namespace; S3's root
/// elements carry `xmlns="http://s3.amazonaws.com/doc/2006-03-01/"`.
/// Alibaba's SDKs look elements up by bare name and find nothing under the
/// namespace (listing and multipart failed in oss2), while S3 clients
/// ignore namespaces. oss2 also requires each listed bucket's location,
/// endpoints and storage class. Only buffered XML bodies are touched.
fn as_oss_xml(resp: &mut s3s::HttpResponse, domain: Option<&str>) {
    const NS: &str = " xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"";
    let xml = resp
        .headers()
        .get(hyper::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.contains("xml"));
    let Some(body) = resp.body().bytes().filter(|_| xml) else {
        return;
    };
    let Ok(text) = std::str::from_utf8(&body) else {
        return;
    };
    // The namespace sits on the root element, near the start.
    let head = text.len().min(512);
    let mut out = match text[..head].find(NS) {
        Some(at) => format!("{}{}", &text[..at], &text[at + NS.len()..]),
        None => text.to_string(),
    };
    if out.contains("<ListAllMyBucketsResult") {
        out = with_bucket_locations(&out, domain.unwrap_or("oss-local"));
    }
    if out.contains("<ListBucketResult") {
        out = with_object_types(&out);
    }
    out = whole_second_times(&out);
    if out.len() == body.len() {
        return;
    }
    let len = out.len();
    *resp.body_mut() = s3s::Body::from(out);
    if resp.headers().contains_key(hyper::header::CONTENT_LENGTH) {
        resp.headers_mut().insert(
            hyper::header::CONTENT_LENGTH,
            hyper::header::HeaderValue::from(len),
        );
    }
}

/// OSS writes times as `2012-02-24T06:07:48.000Z`, and oss2 accepts
/// nothing else; s3s-fs writes the real milliseconds.
fn whole_second_times(xml: &str) -> String {
    let mut out = xml.to_string();
    for tag in ["<LastModified>", "<CreationDate>", "<Initiated>"] {
        let mut fixed = String::with_capacity(out.len());
        let mut text = out.as_str();
        while let Some(at) = text.find(tag) {
            let start = at + tag.len();
            fixed.push_str(&text[..start]);
            text = &text[start..];
            // `YYYY-MM-DDTHH:MM:SS.fffZ`: the fraction is bytes 20..23.
            let b = text.as_bytes();
            let fraction = b.len() > 23
                && b[19] == b'.'
                && b[23] == b'Z'
                && b[20..23].iter().all(u8::is_ascii_digit);
            if fraction {
                fixed.push_str(&text[..20]);
                fixed.push_str("000");
                text = &text[23..];
            }
        }
        fixed.push_str(text);
        out = fixed;
    }
    out
}

/// ListObjects as OSS answers it: each object with its `Type` (`Normal`
/// for a plain upload) and storage class, which oss2 requires.
fn with_object_types(xml: &str) -> String {
    let mut out = String::with_capacity(xml.len() + 64);
    let mut text = xml;
    while let Some(end) = text.find("</Contents>") {
        let block = &text[..end];
        out.push_str(block);
        let start = block.rfind("<Contents>").unwrap_or(0);
        if !block[start..].contains("<Type>") {
            out.push_str("<Type>Normal</Type>");
        }
        if !block[start..].contains("<StorageClass>") {
            out.push_str("<StorageClass>Standard</StorageClass>");
        }
        out.push_str("</Contents>");
        text = &text[end + "</Contents>".len()..];
    }
    out.push_str(text);
    out
}

/// ListBuckets as OSS answers it: each bucket with its `Location` (the
/// region part of the endpoint, e.g. `oss-ap-northeast-1`), its extranet
/// and intranet endpoints, and a storage class.
fn with_bucket_locations(xml: &str, domain: &str) -> String {
    let intranet = domain.to_string();
    let extranet = domain.replacen("-internal", "", 1);
    let location = extranet
        .split('.')
        .next()
        .unwrap_or("oss-local")
        .to_string();
    let extra = format!(
        "<Location>{location}</Location><ExtranetEndpoint>{extranet}</ExtranetEndpoint><IntranetEndpoint>{intranet}</IntranetEndpoint><StorageClass>Standard</StorageClass>"
    );
    xml.replace("</Name></Bucket>", &format!("</Name>{extra}</Bucket>"))
        .replace(
            "</CreationDate></Bucket>",
            &format!("</CreationDate>{extra}</Bucket>"),
        )
}

/// An OSS-style error response from the store itself.
fn error_reply(status: u16, code: &str, message: &str, id: &str) -> s3s::HttpResponse {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error>\n  <Code>{code}</Code>\n  <Message>{message}</Message>\n  <RequestId>{id}</RequestId>\n</Error>\n"
    );
    let mut r = hyper::Response::new(s3s::Body::from(body));
    *r.status_mut() = hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::BAD_REQUEST);
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/xml"),
    );
    r
}

/// Binds `listen`; errors name the address.
pub async fn bind(listen: SocketAddr) -> Result<TcpListener, io::Error> {
    TcpListener::bind(listen).await.map_err(|e| {
        io::Error::new(
            e.kind(),
            format!(
                "cannot listen on {listen}: {}",
                crate::listener::explain(&e)
            ),
        )
    })
}

/// Creates `root/<bucket>` for each bucket name.
pub fn create_buckets(root: &Path, buckets: &[String]) -> io::Result<()> {
    for b in buckets {
        std::fs::create_dir_all(root.join(b))
            .map_err(|e| io::Error::new(e.kind(), format!("cannot create bucket {b}: {e}")))?;
    }
    Ok(())
}
