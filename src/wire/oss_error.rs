//! OSS-style error replies: the XML body and headers OSS sends with a
//! refusal, so clients and SDKs show the reason as they would for OSS.

use std::sync::atomic::{AtomicU64, Ordering};

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
