//! Idle upstream connections kept for the next request, pingora's and
//! nginx's `keepalive` model. A pool belongs to one worker thread (each
//! thread runs its own runtime, and a socket is registered with one), so
//! it needs no lock; callers keep one per thread. Connections are keyed
//! by everything that makes them differ for one relay: its id and the
//! route (address, TLS settings and source address follow from those).
//!
//! A connection is put back only after a complete response that keeps it
//! alive; before it is handed out again it must still be open and silent,
//! so one the upstream closed while idle never carries a request.

use std::collections::HashMap;
use std::os::fd::RawFd;
use std::time::Instant;

use crate::config::PoolSettings;

/// A pooled connection's key: the relay's id, its route, and a hash of the
/// route's upstream `host:port`, so a relay that reuses a closed one's
/// descriptor number never gets that relay's connections.
pub type Key = (i32, Option<usize>, u64);

/// The key for relay `id`'s route `route` to `upstream`.
pub fn key(id: i32, route: Option<usize>, upstream: &crate::config::Upstream) -> Key {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (&upstream.host, upstream.port).hash(&mut h);
    (id, route, h.finish())
}

/// Idle connections of type `T`, newest last per key.
pub struct Pool<T> {
    idle: HashMap<Key, Vec<(Instant, RawFd, T)>>,
}

impl<T> Default for Pool<T> {
    fn default() -> Self {
        Pool {
            idle: HashMap::new(),
        }
    }
}

impl<T> Pool<T> {
    /// The newest idle connection for `key` that is still open and has
    /// sent nothing, younger than `settings.idle_timeout`. Others found on
    /// the way are closed (dropped).
    pub fn take(&mut self, key: Key, settings: &PoolSettings) -> Option<T> {
        let list = self.idle.get_mut(&key)?;
        while let Some((since, fd, conn)) = list.pop() {
            if since.elapsed() <= settings.idle_timeout && quiet(fd) {
                return Some(conn);
            }
        }
        None
    }

    /// Keeps `conn` (whose socket is `fd`) for reuse, unless the pool for
    /// `key` is full; the oldest is closed to make room.
    pub fn put(&mut self, key: Key, fd: RawFd, conn: T, settings: &PoolSettings) {
        if settings.max_idle == 0 {
            return;
        }
        let list = self.idle.entry(key).or_default();
        // Expired connections go first, so they never crowd out live ones.
        list.retain(|(since, _, _)| since.elapsed() <= settings.idle_timeout);
        if list.len() >= settings.max_idle {
            list.remove(0);
        }
        list.push((Instant::now(), fd, conn));
    }

    /// How many idle connections `key` has.
    pub fn idle(&self, key: Key) -> usize {
        self.idle.get(&key).map_or(0, Vec::len)
    }
}

/// Whether the socket `fd` is open with nothing to read: a peek that
/// would block. End of stream (the upstream closed it while idle), stray
/// bytes (which no request asked for) or an error all mean "do not use".
fn quiet(fd: RawFd) -> bool {
    let mut b = 0u8;
    // SAFETY: recv(2) into one valid byte on a socket descriptor this
    // process owns (the pooled connection keeps it open); MSG_PEEK leaves
    // the data, MSG_DONTWAIT never blocks.
    let n = unsafe {
        libc::recv(
            fd,
            (&mut b as *mut u8).cast(),
            1,
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    n < 0 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::WouldBlock
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::fd::AsRawFd;
    use std::time::Duration;

    #[test]
    fn closed_and_chatty_connections_are_never_handed_out() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let settings = PoolSettings {
            max_idle: 2,
            idle_timeout: Duration::from_secs(30),
        };
        let mut pool = Pool::default();
        let key = (3, Some(0), 0);
        let mut conns = Vec::new();
        for _ in 0..3 {
            let c = std::net::TcpStream::connect(addr).unwrap();
            let (s, _) = l.accept().unwrap();
            conns.push(s);
            pool.put(key, c.as_raw_fd(), c, &settings);
        }
        assert_eq!(pool.idle(key), 2, "max_idle bounds the pool");
        // The newest: its server side sends a stray byte. The next: closed.
        conns[2].write_all(b"x").unwrap();
        drop(conns.remove(1));
        std::thread::sleep(Duration::from_millis(50));
        assert!(pool.take(key, &settings).is_none());
        assert_eq!(pool.idle(key), 0);
        // A quiet one is handed out.
        let c = std::net::TcpStream::connect(addr).unwrap();
        let _server = l.accept().unwrap();
        pool.put(key, c.as_raw_fd(), c, &settings);
        assert!(pool.take(key, &settings).is_some());
        let off = PoolSettings {
            max_idle: 0,
            ..settings
        };
        let c = std::net::TcpStream::connect(addr).unwrap();
        pool.put(key, c.as_raw_fd(), c, &off);
        assert_eq!(pool.idle(key), 0, "max_idle = 0 keeps nothing");
    }
}
