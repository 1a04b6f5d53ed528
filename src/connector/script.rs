//! stone's `-s` health-check scripts: after the check connection is made,
//! send each text and read until what has arrived matches the regex.
//! A mismatch, end of stream or the deadline fails the check.

use std::time::Duration;

use regex::Regex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// stone's escapes in send strings: `\n \r \t \\`; any other `\c` is `c`.
fn unescape(text: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        let c = match c {
            '\\' => match chars.next() {
                Some('n') => '\n',
                Some('r') => '\r',
                Some('t') => '\t',
                Some(o) => o,
                None => '\\',
            },
            c => c,
        };
        let mut b = [0u8; 4];
        out.extend_from_slice(c.encode_utf8(&mut b).as_bytes());
    }
    out
}

/// Runs `script` on `stream`; `Err` says which step failed and how.
pub async fn run(
    mut stream: TcpStream,
    script: &[(String, String)],
    limit: Duration,
) -> Result<(), String> {
    let work = async {
        let mut buf = vec![0u8; 4096];
        for (send, expect) in script {
            let re = Regex::new(expect).map_err(|e| format!("{expect:?}: {e}"))?;
            stream
                .write_all(&unescape(send))
                .await
                .map_err(|e| format!("sending {send:?}: {e}"))?;
            let mut got = Vec::new();
            while !re.is_match(&String::from_utf8_lossy(&got)) {
                let n = stream
                    .read(&mut buf)
                    .await
                    .map_err(|e| format!("waiting for {expect:?}: {e}"))?;
                if n == 0 {
                    return Err(format!("closed before {expect:?} matched"));
                }
                got.extend_from_slice(&buf[..n]);
            }
        }
        Ok(())
    };
    tokio::time::timeout(limit, work)
        .await
        .unwrap_or_else(|_| Err(format!("no match within {limit:?}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn send_strings_use_stones_escapes() {
        assert_eq!(unescape(r"HELO x\r\n\q\\"), b"HELO x\r\nq\\".to_vec());
    }
}
