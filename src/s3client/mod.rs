//! A small S3 client for the demo and `check`: signed (SigV4) or anonymous
//! requests, virtual-hosted style, over HTTP/1.1. Every request resolves its
//! own host name (`bucket.endpoint`) through the given resolver and opens a
//! fresh connection, as a client behind a hosts file would.

pub mod sigv4;
pub mod xml;

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame};
use http_body_util::BodyExt;

use crate::observe::time::Civil;
use crate::resolve::{lookup, Resolve};
use sigv4::{sha256_hex, Signer};

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Name resolution failed.
    #[error("resolve {host}: {source}")]
    Resolve {
        /// The name.
        host: String,
        /// Why.
        source: std::io::Error,
    },
    /// TCP or HTTP failure.
    #[error("{addr}: {message}")]
    Transport {
        /// Where we connected.
        addr: SocketAddr,
        /// What went wrong.
        message: String,
    },
    /// The server answered with an error status.
    #[error("HTTP {status}: {code} {message} (request id {request_id})")]
    Status {
        /// HTTP status.
        status: u16,
        /// S3 error code from the XML body.
        code: String,
        /// S3 error message.
        message: String,
        /// `x-oss-request-id` or `x-amz-request-id`.
        request_id: String,
    },
}

/// A response.
#[derive(Debug)]
pub struct Response {
    /// HTTP status.
    pub status: u16,
    /// Headers, lower-case names.
    pub headers: Vec<(String, String)>,
    /// The whole body.
    pub body: Bytes,
    /// The address the request went to.
    pub peer: SocketAddr,
}

impl Response {
    /// First header value by lower-case name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Client settings.
#[derive(Clone)]
pub struct Client {
    /// Endpoint host name, e.g. `oss-ap-northeast-1-internal.aliyuncs.com`.
    pub endpoint: String,
    /// Port (80 for OSS over HTTP).
    pub port: u16,
    /// Keys, or anonymous.
    pub signer: Option<Signer>,
    /// Name resolution (the system's, or a hosts-file stand-in).
    pub resolver: Arc<dyn Resolve>,
    /// Per-request timeout.
    pub timeout: Duration,
    /// HTTPS: the connector (it verifies the server certificate).
    pub tls: Option<tokio_rustls::TlsConnector>,
    /// Connect to this host for every bucket (the endpoint's name),
    /// instead of resolving `bucket.endpoint`.
    pub connect_to: Option<String>,
}

/// A 3xx-5xx response as the S3 error it carries.
fn error_status(resp: Response) -> Result<Response, ClientError> {
    if resp.status >= 300 {
        let text = String::from_utf8_lossy(&resp.body);
        return Err(ClientError::Status {
            status: resp.status,
            code: xml::first(&text, "Code").unwrap_or_default(),
            message: xml::first(&text, "Message").unwrap_or_default(),
            request_id: resp
                .header("x-oss-request-id")
                .or(resp.header("x-amz-request-id"))
                .unwrap_or("-")
                .to_string(),
        });
    }
    Ok(resp)
}

/// A request body that counts bytes as hyper takes them, for progress bars.
struct CountingBody {
    data: Bytes,
    sent: Arc<AtomicU64>,
}

impl Body for CountingBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if self.data.is_empty() {
            return Poll::Ready(None);
        }
        let n = self.data.len().min(256 * 1024);
        let chunk = self.data.split_to(n);
        self.sent.fetch_add(n as u64, Ordering::Relaxed);
        Poll::Ready(Some(Ok(Frame::data(chunk))))
    }

    fn is_end_stream(&self) -> bool {
        self.data.is_empty()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::with_exact(self.data.len() as u64)
    }
}

impl Client {
    fn host_for(&self, bucket: Option<&str>) -> String {
        match bucket {
            Some(b) => format!("{b}.{}", self.endpoint),
            None => self.endpoint.clone(),
        }
    }

    /// Sends one request; a 3xx-5xx status is an error carrying the S3
    /// error code. `progress` counts body bytes handed to the socket.
    pub async fn request(
        &self,
        method: &str,
        bucket: Option<&str>,
        key: &str,
        query: &[(String, String)],
        body: Bytes,
        progress: Option<Arc<AtomicU64>>,
    ) -> Result<Response, ClientError> {
        let resp = self
            .send(method, bucket, key, query, body, progress)
            .await?;
        error_status(resp)
    }

    /// Sends one request and returns the response whatever its status.
    pub async fn send(
        &self,
        method: &str,
        bucket: Option<&str>,
        key: &str,
        query: &[(String, String)],
        body: Bytes,
        progress: Option<Arc<AtomicU64>>,
    ) -> Result<Response, ClientError> {
        self.send_with(method, bucket, key, query, &[], body, progress)
            .await
    }

    /// [`Client::request`] with extra headers (lower-case names; signed).
    pub async fn request_with(
        &self,
        method: &str,
        bucket: Option<&str>,
        key: &str,
        query: &[(String, String)],
        headers: &[(String, String)],
        body: Bytes,
    ) -> Result<Response, ClientError> {
        let resp = self
            .send_with(method, bucket, key, query, headers, body, None)
            .await?;
        error_status(resp)
    }

    /// [`Client::send`] with extra headers (lower-case names; signed).
    #[allow(clippy::too_many_arguments)]
    pub async fn send_with(
        &self,
        method: &str,
        bucket: Option<&str>,
        key: &str,
        query: &[(String, String)],
        headers: &[(String, String)],
        body: Bytes,
        progress: Option<Arc<AtomicU64>>,
    ) -> Result<Response, ClientError> {
        let name = self.host_for(bucket);
        // Through a relay's storage endpoint, every bucket's name leads to
        // the endpoint's address (as OSS's own DNS answers).
        let dial = match &self.connect_to {
            Some(host) => host.as_str(),
            None => name.as_str(),
        };
        let addrs = lookup(self.resolver.as_ref(), dial, self.port)
            .await
            .map_err(|source| ClientError::Resolve {
                host: name.clone(),
                source,
            })?;
        let addr = addrs[0];
        let default_port = if self.tls.is_some() { 443 } else { 80 };
        let host_header = if self.port == default_port {
            name.clone()
        } else {
            format!("{name}:{}", self.port)
        };
        let path = format!("/{key}");
        let mut uri = sigv4::uri_encode(&path, true);
        if !query.is_empty() {
            let q: Vec<String> = query
                .iter()
                .map(|(k, v)| {
                    if v.is_empty() {
                        sigv4::uri_encode(k, false)
                    } else {
                        format!(
                            "{}={}",
                            sigv4::uri_encode(k, false),
                            sigv4::uri_encode(v, false)
                        )
                    }
                })
                .collect();
            uri = format!("{uri}?{}", q.join("&"));
        }
        let mut builder = hyper::Request::builder()
            .method(method)
            .uri(&uri)
            .header(hyper::header::HOST, &host_header)
            .header(hyper::header::CONTENT_LENGTH, body.len());
        for (k, v) in headers {
            builder = builder.header(k.as_str(), v.as_str());
        }
        if let Some(signer) = &self.signer {
            let payload = sha256_hex(&body);
            let s = signer.sign_with(
                method,
                &host_header,
                &path,
                query,
                headers,
                &payload,
                Civil::now(),
            );
            builder = builder
                .header("x-amz-date", s.amz_date)
                .header("x-amz-content-sha256", s.content_sha256)
                .header(hyper::header::AUTHORIZATION, s.authorization);
        }
        let transport = |message: String| ClientError::Transport { addr, message };
        let req = builder
            .body(CountingBody {
                data: body,
                sent: progress.unwrap_or_default(),
            })
            .map_err(|e| transport(e.to_string()))?;
        let exchange = async {
            let tcp = tokio::net::TcpStream::connect(addr)
                .await
                .map_err(|e| transport(format!("connect: {e}")))?;
            let _ = tcp.set_nodelay(true);
            let io: crate::pump::stream::Io = match &self.tls {
                None => Box::new(tcp),
                Some(c) => {
                    let sni = rustls_pki_types::ServerName::try_from(name.clone())
                        .map_err(|e| transport(format!("TLS name {name:?}: {e}")))?;
                    Box::new(
                        c.connect(sni, tcp)
                            .await
                            .map_err(|e| transport(format!("TLS: {e}")))?,
                    )
                }
            };
            let (mut sender, conn) =
                hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(io))
                    .await
                    .map_err(|e| transport(e.to_string()))?;
            let driver = tokio::spawn(conn);
            let resp = sender
                .send_request(req)
                .await
                .map_err(|e| transport(e.to_string()))?;
            let status = resp.status().as_u16();
            let headers = resp
                .headers()
                .iter()
                .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or("").to_string()))
                .collect();
            let body = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| transport(format!("reading body: {e}")))?
                .to_bytes();
            drop(sender);
            let _ = driver.await;
            Ok::<_, ClientError>(Response {
                status,
                headers,
                body,
                peer: addr,
            })
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| transport(format!("no response within {:?}", self.timeout)))?
    }

    /// ListBuckets.
    pub async fn list_buckets(&self) -> Result<Vec<xml::Bucket>, ClientError> {
        let r = self
            .request("GET", None, "", &[], Bytes::new(), None)
            .await?;
        Ok(xml::buckets(&String::from_utf8_lossy(&r.body)))
    }

    /// ListObjectsV2 (first page of up to `max_keys`).
    pub async fn list_objects(
        &self,
        bucket: &str,
        max_keys: u32,
    ) -> Result<Vec<xml::Object>, ClientError> {
        let q = vec![
            ("list-type".to_string(), "2".to_string()),
            ("max-keys".to_string(), max_keys.to_string()),
        ];
        let r = self
            .request("GET", Some(bucket), "", &q, Bytes::new(), None)
            .await?;
        Ok(xml::objects(&String::from_utf8_lossy(&r.body)))
    }

    /// PutObject; returns the ETag.
    pub async fn put_object(
        &self,
        bucket: &str,
        key: &str,
        body: Bytes,
        progress: Option<Arc<AtomicU64>>,
    ) -> Result<String, ClientError> {
        let r = self
            .request("PUT", Some(bucket), key, &[], body, progress)
            .await?;
        Ok(r.header("etag").unwrap_or("").trim_matches('"').to_string())
    }

    /// GetObject.
    pub async fn get_object(&self, bucket: &str, key: &str) -> Result<Bytes, ClientError> {
        Ok(self
            .request("GET", Some(bucket), key, &[], Bytes::new(), None)
            .await?
            .body)
    }

    /// DeleteObject.
    pub async fn delete_object(&self, bucket: &str, key: &str) -> Result<(), ClientError> {
        self.request("DELETE", Some(bucket), key, &[], Bytes::new(), None)
            .await
            .map(|_| ())
    }
}
