//! stone's `identd` stone: an RFC 1413 responder that knows only the
//! connections this process opened to destinations. A server that a stone
//! connected to can ask "who is on your port A talking to my port B?" and
//! learns which stone (by its listen port) relayed that connection.
//!
//! The wire behaviour follows Debian's stone 2.4: queries are `A,B` (spaces
//! allowed after the comma, not before it), each answered on its own line;
//! `QUIT` or anything unparsable ends the session.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// Outgoing connections: (local port, remote address) → the relaying
/// stone's listen port.
type Table = HashMap<(u16, SocketAddr), u16>;

fn table() -> &'static Mutex<Table> {
    static T: OnceLock<Mutex<Table>> = OnceLock::new();
    T.get_or_init(|| Mutex::new(HashMap::new()))
}

/// Keeps one outgoing connection in the table until dropped.
pub struct Registered(Option<(u16, SocketAddr)>);

impl Drop for Registered {
    fn drop(&mut self) {
        if let Some(k) = self.0.take() {
            if let Ok(mut t) = table().lock() {
                t.remove(&k);
            }
        }
    }
}

/// Whether this process runs an identd stone. Without one nobody can ask,
/// so relays skip the two lookups and the table lock per connection.
static ENABLED: AtomicBool = AtomicBool::new(false);

/// Called when an identd stone is bound, before any relay accepts.
pub fn enable() {
    ENABLED.store(true, Ordering::Relaxed);
}

/// Records that the stone listening on `listen_port` opened `upstream`.
pub fn register(upstream: &TcpStream, listen_port: u16) -> Registered {
    if !ENABLED.load(Ordering::Relaxed) {
        return Registered(None);
    }
    let key = match (upstream.local_addr(), upstream.peer_addr()) {
        (Ok(l), Ok(p)) => (l.port(), p),
        _ => return Registered(None),
    };
    match table().lock() {
        Ok(mut t) => {
            t.insert(key, listen_port);
            Registered(Some(key))
        }
        Err(_) => Registered(None),
    }
}

fn lookup(local_port: u16, peer: IpAddr, peer_port: u16) -> Option<u16> {
    let t = table().lock().ok()?;
    t.get(&(local_port, SocketAddr::new(peer, peer_port)))
        .copied()
}

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
