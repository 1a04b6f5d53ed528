//! `protocol = "sftp"`: an SSH server that speaks SFTP ([`fs`]) and legacy
//! SCP ([`scp`]) and stores files as objects in the user's bucket
//! ([`bucket`], [`upload`], [`download`]), with no local disk and no OS
//! accounts. Everything else SSH offers (shells, other commands,
//! forwarding) is refused.

mod account;
mod bucket;
mod download;
mod fs;
mod paths;
mod scp;
mod upload;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use russh::server::{Auth, ChannelOpenHandle, Msg, PublicKeyOffer, Session, VerifiedPublicKey};
use russh::{Channel, ChannelId, MethodKind, MethodSet};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use crate::config::sftp::{Sftp, User};
use crate::observe::access::CloseReason;
use crate::resolve::Resolve;
use account::Account;
use bucket::Bucket;

/// What every session of one sftp relay shares.
pub struct Shared {
    ssh: Arc<russh::server::Config>,
    cfg: Arc<Sftp>,
    buckets: HashMap<String, Arc<Bucket>>,
}

impl Shared {
    /// The SSH settings and storage clients of relay `cfg`.
    pub fn new(cfg: &Sftp, resolver: Arc<dyn Resolve>, timeout: Duration) -> Shared {
        let mut preferred = russh::Preferred::default();
        // No SHA-1 signatures (`ssh-rsa`); the defaults already leave out
        // SHA-1 MACs and CBC ciphers, and speak strict key exchange.
        preferred.key = std::borrow::Cow::Owned(
            preferred
                .key
                .iter()
                .filter(|a| !matches!(a, russh::keys::Algorithm::Rsa { hash: None }))
                .cloned()
                .collect(),
        );
        let ssh = russh::server::Config {
            server_id: russh::SshId::Standard(
                format!("SSH-2.0-ossrelay_{}", env!("CARGO_PKG_VERSION")).into(),
            ),
            methods: MethodSet::from(&[MethodKind::PublicKey, MethodKind::Password][..]),
            auth_rejection_time: Duration::from_millis(300),
            auth_rejection_time_initial: Some(Duration::ZERO),
            keys: cfg.host_keys.clone(),
            max_auth_attempts: cfg.max_auth_attempts,
            inactivity_timeout: Some(Duration::from_secs(600)),
            keepalive_interval: Some(Duration::from_secs(30)),
            nodelay: true,
            preferred,
            // Larger windows and packets than the defaults: bulk copies
            // are this server's whole job.
            window_size: 16 << 20,
            maximum_packet_size: 256 * 1024,
            ..Default::default()
        };
        let mut buckets = HashMap::new();
        for u in &cfg.users {
            buckets.entry(u.bucket.clone()).or_insert_with(|| {
                Arc::new(Bucket::new(cfg, &u.bucket, resolver.clone(), timeout))
            });
        }
        Shared {
            ssh: Arc::new(ssh),
            cfg: Arc::new(cfg.clone()),
            buckets,
        }
    }
}

/// Serves one SSH connection until it ends or `force` fires.
pub async fn serve(
    ctx: &super::Context,
    shared: &Shared,
    client: TcpStream,
    peer: SocketAddr,
    force: &CancellationToken,
) -> CloseReason {
    let handler = Ssh {
        relay: ctx.cfg.name.clone(),
        cfg: shared.cfg.clone(),
        buckets: shared.buckets.clone(),
        metrics: ctx.metrics.clone(),
        peer,
        account: None,
        channels: HashMap::new(),
        sftp_channels: Default::default(),
    };
    let session = match russh::server::run_stream(shared.ssh.clone(), client, handler).await {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(relay = %ctx.cfg.name, "sftp client={peer}: SSH handshake failed: {e}");
            return CloseReason::Reset;
        }
    };
    let handle = session.handle();
    tokio::select! {
        r = session => match r {
            Ok(()) => CloseReason::Eof,
            Err(e) => {
                tracing::info!(relay = %ctx.cfg.name, "sftp client={peer}: session ended: {e}");
                CloseReason::Reset
            }
        },
        _ = force.cancelled() => {
            let _ = handle
                .disconnect(russh::Disconnect::ByApplication, "the server is shutting down".into(), "en".into())
                .await;
            CloseReason::Shutdown
        }
    }
}

/// A password check waiting for the checker thread.
type Check = (String, String, tokio::sync::oneshot::Sender<bool>);

/// Whether `password` matches the PHC string `hash`. Argon2 takes tens of
/// milliseconds of CPU and ~19 MiB of memory per check by design, so the
/// checks run one at a time on one thread of their own: off the threads
/// that move other clients' bytes, and with one buffer's worth of memory
/// (spread over tokio's blocking threads, each kept its own 19 MiB in its
/// malloc arena, and a few dozen logins held hundreds of MiB).
async fn verify_password(hash: String, password: String) -> bool {
    static CHECKER: std::sync::OnceLock<std::sync::Mutex<std::sync::mpsc::Sender<Check>>> =
        std::sync::OnceLock::new();
    let checker = CHECKER.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel::<Check>();
        let spawned = std::thread::Builder::new()
            .name("ossrelay-passwords".into())
            .spawn(move || {
                use argon2::password_hash::{PasswordHash, PasswordVerifier};
                for (hash, password, reply) in rx {
                    let good = PasswordHash::new(&hash).is_ok_and(|h| {
                        argon2::Argon2::default()
                            .verify_password(password.as_bytes(), &h)
                            .is_ok()
                    });
                    let _ = reply.send(good);
                }
            });
        if let Err(e) = spawned {
            tracing::error!("sftp: cannot start the password checker thread: {e}");
        }
        std::sync::Mutex::new(tx)
    });
    let (reply, answer) = tokio::sync::oneshot::channel();
    let sent = checker
        .lock()
        .map(|tx| tx.send((hash, password, reply)).is_ok())
        .unwrap_or(false);
    // No checker (it could not start): every password is wrong.
    sent && answer.await.unwrap_or(false)
}

/// One SSH connection's state.
struct Ssh {
    relay: String,
    cfg: Arc<Sftp>,
    buckets: HashMap<String, Arc<Bucket>>,
    metrics: Arc<crate::observe::metrics::RelayMetrics>,
    peer: SocketAddr,
    account: Option<Arc<Account>>,
    channels: HashMap<ChannelId, Channel<Msg>>,
    /// Channels running the SFTP subsystem: closed when the client's side
    /// ends (an scp exec channel closes itself after its exit status).
    sftp_channels: std::collections::HashSet<ChannelId>,
}

/// Why a session ended badly, for russh.
#[derive(Debug, thiserror::Error)]
enum SshError {
    #[error(transparent)]
    Ssh(#[from] russh::Error),
}

impl Ssh {
    fn user(&self, name: &str) -> Option<&User> {
        self.cfg.users.iter().find(|u| u.name == name)
    }

    fn reject(&self, user: &str, how: &str) -> Auth {
        tracing::warn!(relay = %self.relay, "sftp client={}: authentication failed for user {user:?} ({how})", self.peer);
        Auth::Reject {
            proceed_with_methods: None,
            partial_success: false,
        }
    }

    fn accept(&mut self, user: &User, how: &str) -> Auth {
        let Some(bucket) = self.buckets.get(&user.bucket).cloned() else {
            return self.reject(&user.name, "no bucket client");
        };
        tracing::info!(relay = %self.relay, "sftp client={}: user {} logged in ({how})", self.peer, user.name);
        self.account = Some(Arc::new(Account {
            relay: self.relay.clone(),
            user: user.clone(),
            cfg: self.cfg.clone(),
            bucket,
            peer: self.peer,
            metrics: self.metrics.clone(),
        }));
        Auth::Accept
    }

    /// The session channel `channel` for a subsystem or exec, answered
    /// with success; `None` (answered with failure) if there is none.
    fn take_channel(
        &mut self,
        channel: ChannelId,
        session: &mut Session,
    ) -> Result<Option<Channel<Msg>>, SshError> {
        match self.channels.remove(&channel) {
            Some(ch) => {
                session.channel_success(channel)?;
                Ok(Some(ch))
            }
            None => {
                session.channel_failure(channel)?;
                Ok(None)
            }
        }
    }

    fn knows_key(&self, user: &str, key: &russh::keys::PublicKey) -> bool {
        let Ok(bytes) = key.to_bytes() else {
            return false;
        };
        self.user(user).is_some_and(|u| u.keys.contains(&bytes))
    }
}

impl russh::server::Handler for Ssh {
    type Error = SshError;

    async fn auth_none(&mut self, _user: &str) -> Result<Auth, Self::Error> {
        Ok(Auth::Reject {
            proceed_with_methods: None,
            partial_success: false,
        })
    }

    async fn auth_password(&mut self, user: &str, password: &str) -> Result<Auth, Self::Error> {
        let Some(hash) = self.user(user).and_then(|u| u.password_hash.clone()) else {
            return Ok(self.reject(user, "password"));
        };
        let good = verify_password(hash, password.to_string()).await;
        match (good, self.user(user).cloned()) {
            (true, Some(u)) => Ok(self.accept(&u, "password")),
            _ => Ok(self.reject(user, "password")),
        }
    }

    async fn auth_publickey_offered(
        &mut self,
        user: &str,
        offer: PublicKeyOffer<'_>,
    ) -> Result<Auth, Self::Error> {
        if self.knows_key(user, offer.public_key) {
            Ok(Auth::Accept)
        } else {
            Ok(self.reject(user, "public key not authorized"))
        }
    }

    async fn auth_publickey(
        &mut self,
        user: &str,
        key: VerifiedPublicKey<'_>,
    ) -> Result<Auth, Self::Error> {
        match (
            self.knows_key(user, key.public_key),
            self.user(user).cloned(),
        ) {
            (true, Some(u)) => Ok(self.accept(&u, "public key")),
            _ => Ok(self.reject(user, "public key not authorized")),
        }
    }

    async fn channel_open_session(
        &mut self,
        channel: Channel<Msg>,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.channels.insert(channel.id(), channel);
        reply.accept().await;
        Ok(())
    }

    async fn subsystem_request(
        &mut self,
        channel: ChannelId,
        name: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let (Some(account), true) = (self.account.clone(), name == "sftp") else {
            tracing::warn!(relay = %self.relay, "sftp client={}: refused subsystem {name:?}", self.peer);
            session.channel_failure(channel)?;
            return Ok(());
        };
        let Some(ch) = self.take_channel(channel, session)? else {
            return Ok(());
        };
        self.sftp_channels.insert(channel);
        russh_sftp::server::run(ch.into_stream(), fs::Fs::new(account)).await;
        Ok(())
    }

    async fn exec_request(
        &mut self,
        channel: ChannelId,
        data: &[u8],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let line = String::from_utf8_lossy(data).to_string();
        let (Some(account), cmd) = (self.account.clone(), scp::parse(&line)) else {
            session.channel_failure(channel)?;
            return Ok(());
        };
        let cmd = match cmd {
            Ok(cmd) => cmd,
            Err(why) => {
                tracing::warn!(relay = %self.relay, "sftp client={}: refused exec {line:?}: {why}", self.peer);
                session.channel_failure(channel)?;
                return Ok(());
            }
        };
        let Some(ch) = self.take_channel(channel, session)? else {
            return Ok(());
        };
        let handle = session.handle();
        tokio::spawn(async move {
            let status = scp::run(account, cmd, ch.into_stream()).await;
            let _ = handle.exit_status_request(channel, status).await;
            let _ = handle.eof(channel).await;
            let _ = handle.close(channel).await;
        });
        Ok(())
    }

    async fn shell_request(
        &mut self,
        channel: ChannelId,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        tracing::warn!(relay = %self.relay, "sftp client={}: refused a shell", self.peer);
        session.channel_failure(channel)?;
        Ok(())
    }

    async fn pty_request(
        &mut self,
        channel: ChannelId,
        _term: &str,
        _col_width: u32,
        _row_height: u32,
        _pix_width: u32,
        _pix_height: u32,
        _modes: &[(russh::Pty, u32)],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_failure(channel)?;
        Ok(())
    }

    async fn channel_eof(
        &mut self,
        channel: ChannelId,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        // A session channel nobody took (no subsystem or exec) ends here.
        if self.sftp_channels.remove(&channel) {
            // As sshd reports sftp-server's exit: scp and sftp treat a
            // missing status as a failure.
            session.exit_status_request(channel, 0)?;
            session.eof(channel)?;
            session.close(channel)?;
        } else if self.channels.remove(&channel).is_some() {
            session.close(channel)?;
        }
        Ok(())
    }
}
