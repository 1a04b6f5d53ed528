//! The admin listener (`[admin]`): `GET /metrics` (Prometheus text),
//! `/livez` (the process answers), `/readyz` and its alias `/healthz` (every
//! relay is bound and serving, and the process is not draining).
//!
//! One short request per connection, answered and closed: a scraper or a
//! load balancer's health check needs nothing more, and a connection
//! cannot linger. Admin connections are not relayed connections: they are
//! not counted, and a drain never waits for them.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use crate::acl::{canonical, Action};
use crate::config::AdminConfig;
use crate::observe::metrics::Metrics;

/// How long a client has to send its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest request head read.
const MAX_REQUEST: usize = 8 * 1024;

/// A bound admin listener.
pub struct Admin {
    cfg: AdminConfig,
    listener: TcpListener,
    metrics: Arc<Metrics>,
}

impl Admin {
    /// Binds `cfg.listen`. Must run inside a tokio runtime.
    pub fn bind(cfg: &AdminConfig, metrics: Arc<Metrics>) -> io::Result<Admin> {
        let socket = socket2::Socket::new(
            socket2::Domain::for_address(cfg.listen),
            socket2::Type::STREAM,
            Some(socket2::Protocol::TCP),
        )?;
        socket.set_reuse_address(true)?;
        socket.bind(&cfg.listen.into())?;
        socket.listen(128)?;
        Admin::adopt(cfg, socket.into(), metrics)
    }

    /// Serves `cfg` on a socket bound before (a reload hands over the
    /// running listener's). Must run inside a tokio runtime.
    pub fn adopt(
        cfg: &AdminConfig,
        listener: std::net::TcpListener,
        metrics: Arc<Metrics>,
    ) -> io::Result<Admin> {
        listener.set_nonblocking(true)?;
        Ok(Admin {
            cfg: cfg.clone(),
            listener: TcpListener::from_std(listener)?,
            metrics,
        })
    }

    /// A second descriptor for the listening socket.
    pub fn socket(&self) -> io::Result<std::net::TcpListener> {
        use std::os::fd::AsFd;
        Ok(std::net::TcpListener::from(
            self.listener.as_fd().try_clone_to_owned()?,
        ))
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Answers until `stop` is cancelled.
    pub async fn serve(self, stop: CancellationToken) {
        loop {
            let (stream, peer) = tokio::select! {
                _ = stop.cancelled() => return,
                r = self.listener.accept() => match r {
                    Ok(pair) => pair,
                    Err(e) => {
                        tracing::error!("admin: accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            if self.cfg.acl.check(canonical(peer.ip())).0 == Action::Deny {
                tracing::warn!("admin: access denied: from {peer}");
                continue;
            }
            let metrics = self.metrics.clone();
            tokio::spawn(async move {
                if let Err(e) = answer(stream, &metrics).await {
                    tracing::debug!("admin: {peer}: {e}");
                }
            });
        }
    }
}

/// Reads one request head and answers it.
async fn answer(mut s: TcpStream, metrics: &Arc<Metrics>) -> io::Result<()> {
    let mut head = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    let read = async {
        while !head.windows(4).any(|w| w == b"\r\n\r\n") && !head.windows(2).any(|w| w == b"\n\n") {
            if head.len() > MAX_REQUEST {
                return Err(io::Error::other("request head over 8 KiB"));
            }
            let n = s.read(&mut chunk).await?;
            if n == 0 {
                return Err(io::Error::other("closed before a whole request"));
            }
            head.extend_from_slice(&chunk[..n]);
        }
        Ok(())
    };
    tokio::time::timeout(REQUEST_TIMEOUT, read)
        .await
        .map_err(|_| io::Error::other("no request within 5 s"))??;
    let line = head.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut words = line.split_ascii_whitespace();
    let (method, target) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    let (status, content_type, body) = match (method, path) {
        ("GET" | "HEAD", "/metrics") => (
            "200 OK",
            // prometheus-client writes OpenMetrics text (`# EOF` at the end).
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            metrics.encode(),
        ),
        ("GET" | "HEAD", "/livez") => ("200 OK", "text/plain", "ok\n".to_string()),
        ("GET" | "HEAD", "/readyz" | "/healthz") => {
            if metrics.ready() {
                ("200 OK", "text/plain", "ready\n".to_string())
            } else {
                (
                    "503 Service Unavailable",
                    "text/plain",
                    "not ready: starting or draining\n".to_string(),
                )
            }
        }
        (_, "/metrics" | "/livez" | "/readyz" | "/healthz") => (
            "405 Method Not Allowed",
            "text/plain",
            format!("{method} is not allowed here; use GET\n"),
        ),
        _ => (
            "404 Not Found",
            "text/plain",
            "not found; try /metrics, /livez, /readyz or /healthz\n".to_string(),
        ),
    };
    let mut out = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n{}\r\n",
        body.len(),
        if status.starts_with("405") {
            "Allow: GET, HEAD\r\n"
        } else {
            ""
        }
    )
    .into_bytes();
    if method != "HEAD" {
        out.extend_from_slice(body.as_bytes());
    }
    s.write_all(&out).await?;
    s.shutdown().await
}
