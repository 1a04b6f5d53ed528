//! stone's `health` port: a line protocol that load balancers and scripts
//! use to ask whether the relay is healthy. Replies start with 2xx when
//! normal and 5xx when not; an unknown command closes the connection, as
//! in stone.

use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::observe::stats;

/// How long a health client may stay silent between commands.
const IDLE: Duration = Duration::from_secs(60);

/// Answers commands on `client` until it closes, goes quiet, or sends an
/// unknown command. `mappings` are the relays' start-up lines (for STONE),
/// `debug` is stone's -d level.
pub async fn serve(client: TcpStream, mappings: &[String], config: &str, debug: u8) {
    let (read, mut write) = client.into_split();
    let mut lines = BufReader::new(read.take(4096)).lines();
    loop {
        let line = match tokio::time::timeout(IDLE, lines.next_line()).await {
            Ok(Ok(Some(l))) => l,
            _ => return,
        };
        let Some(reply) = answer(line.trim(), mappings, config, debug) else {
            return;
        };
        if write.write_all(reply.as_bytes()).await.is_err() {
            return;
        }
    }
}

use tokio::io::AsyncReadExt as _;

/// The reply to one command line, or None to close.
pub fn answer(line: &str, mappings: &[String], config: &str, debug: u8) -> Option<String> {
    let mut words = line.split_whitespace();
    let cmd = words.next()?.to_ascii_uppercase();
    let s = stats::snapshot();
    let head = format!("250 stone:2.4 debug={debug}");
    Some(match cmd.as_str() {
        "HELO" => format!(
            "{head} stone={} pair={} trash=0 conn=0 origin=0\r\n",
            s.relays,
            s.pairs * 2
        ),
        "STAT" => format!("{head} async=0 mutex=0\r\n"),
        "FREE" => format!("{head} fpair=0 nfexbuf=0 nfexbot=0 nfpktbuf=0\r\n"),
        "CLOCK" => format!(
            "{head} now={} established={} readwrite={}\r\n",
            s.now, s.established, s.readwrite
        ),
        "CVS_ID" => format!(
            "200 ossrelay {} (stone 2.4 compatible)\r\n",
            env!("CARGO_PKG_VERSION")
        ),
        "CONFIG" => format!("200 {config}\r\n"),
        "STONE" => mappings.iter().map(|m| format!("200 {m}\n")).collect(),
        "LIMIT" => {
            let (var, limit) = (
                words.next().map(str::to_ascii_uppercase),
                words.next().and_then(|n| n.parse::<u64>().ok()),
            );
            let value = match var.as_deref() {
                Some("PAIR") => Some(s.pairs * 2),
                Some("CONN") => Some(0),
                Some("ESTABLISHED") => Some(s.established),
                Some("READWRITE") => Some(s.readwrite),
                Some("ASYNC") => Some(0),
                _ => None,
            };
            match (var, value, limit) {
                (Some(var), Some(v), Some(n)) => {
                    let name = var.to_ascii_lowercase();
                    if v < n {
                        format!("200 {name}={v} is less than {n}\r\n")
                    } else {
                        format!("500 {name}={v} is not less than {n}\r\n")
                    }
                }
                _ => "500 Illegal LIMIT\r\n".to_string(),
            }
        }
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::answer;

    #[test]
    fn commands_and_codes() {
        let m = vec!["stone 3: health <- 127.0.0.1:18700".to_string()];
        assert!(answer("HELO x", &m, "", 0)
            .unwrap()
            .starts_with("250 stone:2.4 debug=0 stone="));
        assert!(answer("helo", &m, "", 2)
            .unwrap()
            .starts_with("250 stone:2.4 debug=2 "));
        assert!(answer("LIMIT PAIR 1000000", &m, "", 0)
            .unwrap()
            .starts_with("200 pair="));
        assert!(answer("LIMIT ASYNC 0", &m, "", 0)
            .unwrap()
            .starts_with("500 async=0 is not less than 0"));
        assert_eq!(
            answer("LIMIT BOGUS 1", &m, "", 0).unwrap(),
            "500 Illegal LIMIT\r\n"
        );
        assert_eq!(
            answer("LIMIT PAIR", &m, "", 0).unwrap(),
            "500 Illegal LIMIT\r\n"
        );
        assert_eq!(
            answer("STONE", &m, "", 0).unwrap(),
            "200 stone 3: health <- 127.0.0.1:18700\n"
        );
        assert!(answer("BOGUS", &m, "", 0).is_none());
        assert!(answer("", &m, "", 0).is_none());
    }
}
