//! `ossrelay store`: a directory served as S3-compatible storage, the
//! stand-in for OSS in the demo and tests. Built on `s3s` + `s3s-fs`; each
//! top-level folder is a bucket. With a domain, virtual-hosted requests
//! (`bucket.<domain>`) work as OSS requires; with keys, SigV4/V2 signatures
//! are verified. Every response carries `x-oss-request-id` so probes can
//! tell an OSS-like endpoint from an arbitrary web server.

pub mod compat;

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
        let name = match host.rsplit_once(':') {
            Some((h, p)) if !h.contains(':') && p.bytes().all(|b| b.is_ascii_digit()) => h,
            _ => host,
        };
        // DNS names are case-insensitive; compare the suffix that way but
        // keep the bucket label as sent (S3 then validates its case).
        let n = name.len();
        let d = self.domain.len();
        if n > d + 1
            && name.is_char_boundary(n - d)
            && name[n - d..].eq_ignore_ascii_case(&self.domain)
            && name.as_bytes()[n - d - 1] == b'.'
        {
            let bucket = &name[..n - d - 1];
            return Ok(VirtualHost::new(self.domain.as_str()).with_bucket(bucket));
        }
        Ok(VirtualHost::new(host))
    }
}

/// A built store service, ready to serve connections.
#[derive(Clone)]
pub struct Store {
    service: s3s::service::S3Service,
    requests: Arc<AtomicU64>,
    instance: u64,
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
            match refused {
                Some(why) => Ok(error_reply(400, "InvalidArgument", why, &id)),
                None => self.service.call(req.map(s3s::Body::from)).await,
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
