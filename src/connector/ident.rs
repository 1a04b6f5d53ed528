//! The table behind stone's `identd` stone: every upstream connection this
//! process opens is registered here (while it lives) with the listen port
//! of the relay that opened it, so the ident responder (`service::identd`)
//! can say which stone relayed a connection.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};
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

/// Which stone's listen port relays the connection from our `local_port`
/// to `peer:peer_port`.
pub fn lookup(local_port: u16, peer: IpAddr, peer_port: u16) -> Option<u16> {
    let t = table().lock().ok()?;
    t.get(&(local_port, SocketAddr::new(peer, peer_port)))
        .copied()
}
