//! The object-storage gateway: `protocol = "http"` relays that route each
//! request by its Host header and check its bucket against a policy, and
//! the pieces they share (routes, policy, OSS-style error replies).

pub mod head;
pub mod http;
pub mod sni;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::config::Upstream;
use crate::pattern::HostPattern;

/// Default time allowed for a request head to arrive (slowloris guard).
pub const DEFAULT_HEAD_TIMEOUT: Duration = Duration::from_secs(30);

/// A host pattern and where its requests go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// Exact endpoint (path-style buckets) or `*.endpoint` (virtual-hosted).
    pub host: HostPattern,
    /// Destination.
    pub upstream: Upstream,
}

/// Which buckets may pass.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BucketPolicy {
    /// Allowed bucket globs (`*` wildcard); `None` allows every bucket.
    pub allow: Option<Vec<String>>,
    /// Denied bucket globs, checked first.
    pub deny: Vec<String>,
    /// Allow requests with no bucket (ListBuckets).
    pub allow_service: bool,
}

/// What the gateway reads to route a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Each HTTP request's Host (`protocol = "http"`).
    Http,
    /// The TLS ClientHello's server name (`protocol = "tls"`).
    Sni,
}

/// The gateway settings of one relay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gateway {
    /// HTTP or SNI routing.
    pub mode: Mode,
    /// Routes in order; the first match wins.
    pub routes: Vec<Route>,
    /// Where requests for other hosts go; `None` refuses them with 421.
    pub default_route: Option<Upstream>,
    /// The bucket policy.
    pub policy: BucketPolicy,
    /// Time allowed for a request head.
    pub head_timeout: Duration,
}

/// `*` matches any run of characters; everything else literally.
pub fn glob(pattern: &str, name: &str) -> bool {
    let (p, n) = (pattern.as_bytes(), name.as_bytes());
    let (mut pi, mut ni, mut star, mut mark) = (0, 0, None, 0);
    while ni < n.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some(pi);
            pi += 1;
            mark = ni;
        } else if pi < p.len() && p[pi] == n[ni] {
            pi += 1;
            ni += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ni = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&b| b == b'*')
}

/// Where one request goes and which bucket it names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target<'a> {
    /// Index into the routes, or `None` for the default route.
    pub route: Option<usize>,
    /// The destination.
    pub upstream: &'a Upstream,
    /// The bucket, if the request names one.
    pub bucket: Option<String>,
    /// The object key (may be empty).
    pub key: String,
}

impl Gateway {
    /// Routes a request: virtual-hosted (`bucket.endpoint`) takes the
    /// bucket from the host, path-style from the first path segment.
    pub fn target(&self, host: &str, path: &str) -> Option<Target<'_>> {
        let path = path.trim_start_matches('/');
        let (first, rest) = path.split_once('/').unwrap_or((path, ""));
        for (i, r) in self.routes.iter().enumerate() {
            if !r.host.matches(host) {
                continue;
            }
            return Some(match r.host.prefix_of(host) {
                Some(bucket) => Target {
                    route: Some(i),
                    upstream: &r.upstream,
                    bucket: Some(bucket.to_string()),
                    key: path.to_string(),
                },
                None => Target {
                    route: Some(i),
                    upstream: &r.upstream,
                    bucket: (!first.is_empty()).then(|| first.to_string()),
                    key: rest.to_string(),
                },
            });
        }
        self.default_route.as_ref().map(|u| Target {
            route: None,
            upstream: u,
            bucket: (!first.is_empty()).then(|| first.to_string()),
            key: rest.to_string(),
        })
    }

    /// `Err(reason)` when the policy refuses `bucket`.
    pub fn check(&self, bucket: Option<&str>) -> Result<(), String> {
        self.policy.check(bucket)
    }
}

impl BucketPolicy {
    /// `Err(reason)` when this policy refuses `bucket`.
    pub fn check(&self, bucket: Option<&str>) -> Result<(), String> {
        let p = self;
        let Some(b) = bucket else {
            return if p.allow_service {
                Ok(())
            } else {
                Err("requests without a bucket (ListBuckets) are not allowed (allow_service = false)".into())
            };
        };
        if let Some(g) = p.deny.iter().find(|g| glob(g, b)) {
            return Err(format!("bucket {b:?} matches deny_buckets entry {g:?}"));
        }
        match &p.allow {
            Some(list) if !list.iter().any(|g| glob(g, b)) => {
                Err(format!("bucket {b:?} is not in the buckets allowlist"))
            }
            _ => Ok(()),
        }
    }
}

/// A request id in OSS's shape (24 upper-case hex digits), unique per
/// process: time at start-up, then a counter.
pub fn request_id() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    static BASE: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    let base = *BASE.get_or_init(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64)
    });
    format!(
        "{base:016X}{:08X}",
        NEXT.fetch_add(1, Ordering::Relaxed) as u32
    )
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A complete OSS-style error response that closes the connection.
pub fn error_response(
    status: u16,
    code: &str,
    message: &str,
    bucket: Option<&str>,
    host: &str,
) -> Vec<u8> {
    let id = request_id();
    let reason = match status {
        400 => "Bad Request",
        403 => "Forbidden",
        408 => "Request Timeout",
        421 => "Misdirected Request",
        502 => "Bad Gateway",
        _ => "Error",
    };
    let bucket_xml = bucket.map_or(String::new(), |b| {
        format!("  <BucketName>{}</BucketName>\n", xml_escape(b))
    });
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error>\n  <Code>{code}</Code>\n  <Message>{}</Message>\n  <RequestId>{id}</RequestId>\n  <HostId>{}</HostId>\n{bucket_xml}</Error>\n",
        xml_escape(message),
        xml_escape(host)
    );
    format!(
        "HTTP/1.1 {status} {reason}\r\nServer: ossrelay\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nx-oss-request-id: {id}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gw() -> Gateway {
        let up = Upstream {
            host: "oss.test".into(),
            port: 80,
        };
        Gateway {
            mode: Mode::Http,
            routes: vec![
                Route {
                    host: HostPattern::parse("*.oss.test").unwrap(),
                    upstream: up.clone(),
                },
                Route {
                    host: HostPattern::parse("oss.test").unwrap(),
                    upstream: up,
                },
            ],
            default_route: None,
            policy: BucketPolicy {
                allow: Some(vec!["aws-alibaba-oss".into(), "logs-*".into()]),
                deny: vec!["logs-secret".into()],
                allow_service: false,
            },
            head_timeout: DEFAULT_HEAD_TIMEOUT,
        }
    }

    #[test]
    fn buckets_come_from_host_or_path_and_the_policy_decides() {
        let g = gw();
        let t = g.target("aws-alibaba-oss.oss.test", "/dir/k.txt").unwrap();
        assert_eq!(
            (t.bucket.as_deref(), t.key.as_str()),
            (Some("aws-alibaba-oss"), "dir/k.txt")
        );
        let t = g.target("oss.test", "/logs-2026/a").unwrap();
        assert_eq!(
            (t.bucket.as_deref(), t.key.as_str()),
            (Some("logs-2026"), "a")
        );
        assert_eq!(g.target("oss.test", "/").unwrap().bucket, None);
        assert!(g.target("evil.example", "/").is_none());
        assert!(g.check(Some("aws-alibaba-oss")).is_ok());
        assert!(g.check(Some("logs-2026")).is_ok());
        assert!(g
            .check(Some("logs-secret"))
            .unwrap_err()
            .contains("deny_buckets"));
        assert!(g.check(Some("attacker")).unwrap_err().contains("allowlist"));
        assert!(g.check(None).unwrap_err().contains("allow_service"));
        assert!(glob("a*b*c", "axxbyyc") && !glob("a*b", "ab-c") && glob("*", ""));
    }

    #[test]
    fn denials_are_oss_style_xml() {
        let r =
            String::from_utf8(error_response(403, "AccessDenied", "no", Some("b<1"), "h")).unwrap();
        assert!(r.starts_with("HTTP/1.1 403 Forbidden\r\n"));
        assert!(r.contains("Connection: close\r\n") && r.contains("x-oss-request-id: "));
        assert!(
            r.contains("<Code>AccessDenied</Code>")
                && r.contains("<BucketName>b&lt;1</BucketName>")
        );
        let (head, body) = r.split_once("\r\n\r\n").unwrap();
        assert!(head.contains(&format!("Content-Length: {}", body.len())));
    }
}
