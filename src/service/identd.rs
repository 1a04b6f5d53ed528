//! stone's `identd` stone: an RFC 1413 responder that knows only the
//! connections this process opened to destinations. A server that a stone
//! connected to can ask "who is on your port A talking to my port B?" and
//! learns which stone (by its listen port) relayed that connection.
//!
//! The wire behaviour follows Debian's stone 2.4: queries are `A,B` (spaces
//! allowed after the comma, not before it), each answered on its own line;
//! `QUIT` or anything unparsable ends the session.

use std::net::IpAddr;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::connector::ident::lookup;

/// Parses `A,B` with optional spaces before A and after the comma.
fn parse_query(line: &str) -> Option<(u16, u16)> {
    let (a, b) = line.trim_start().split_once(',')?;
    let b = b.trim_start().trim_end_matches(['\r', '\n']);
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|c| c.is_ascii_digit());
    if !digits(a) || !digits(b) {
        return None;
    }
    Some((a.parse().ok()?, b.parse().ok()?))
}

/// Serves one querier until it quits, sends garbage or goes quiet.
pub async fn serve(client: TcpStream, querier: IpAddr) {
    let (r, mut w) = client.into_split();
    let mut lines = BufReader::new(r).lines();
    loop {
        let line = match tokio::time::timeout(Duration::from_secs(60), lines.next_line()).await {
            Ok(Ok(Some(l))) => l,
            _ => return,
        };
        if line.trim().eq_ignore_ascii_case("quit") {
            return;
        }
        let Some((a, b)) = parse_query(&line) else {
            return;
        };
        let reply = match lookup(a, querier, b) {
            Some(port) => format!("{a} , {b} : USERID : STONE : {port}\r\n"),
            None => format!("{a} , {b} : ERROR : NO-USER\r\n"),
        };
        if w.write_all(reply.as_bytes()).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_parse_like_stone() {
        assert_eq!(parse_query("34978,21006\r"), Some((34978, 21006)));
        assert_eq!(parse_query(" 34978, 21006"), Some((34978, 21006)));
        assert_eq!(parse_query("34978 , 21006"), None);
        assert_eq!(parse_query("garbage"), None);
        assert_eq!(parse_query("1,99999"), None);
    }
}
