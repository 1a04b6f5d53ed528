//! The config file exactly as written: serde structs that reject unknown
//! keys. Fields that need validation keep their source span so problems can
//! be reported with a line number.

use serde::Deserialize;
use toml::Spanned;

/// Top level of a run config.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// Application and access log settings.
    #[serde(default)]
    pub log: RawLog,
    /// Process-wide settings.
    #[serde(default)]
    pub server: RawServer,
    /// One entry per relay (`[[relay]]`).
    #[serde(default)]
    pub relay: Vec<RawRelay>,
    /// The DNS responder.
    pub dns: Option<RawDns>,
    /// The admin listener (metrics, health).
    pub admin: Option<RawAdmin>,
}

/// `[admin]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    /// TCP address, e.g. "127.0.0.1:9900".
    pub listen: Option<Spanned<String>>,
    /// Clients allowed (addresses or CIDRs); everyone when absent.
    pub allow: Option<Vec<Spanned<String>>>,
}

/// `[dns]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDns {
    /// UDP and TCP address, e.g. "0.0.0.0:53".
    pub listen: Option<Spanned<String>>,
    /// Names answered with `answer`: exact or "*.suffix".
    pub names: Option<Vec<Spanned<String>>>,
    /// Addresses returned for those names (the relay's).
    pub answer: Option<Vec<Spanned<String>>>,
    /// TTL of the answers (default 60s).
    pub ttl: Option<Spanned<String>>,
    /// Resolver "ip:port" for all other names; without it they are refused.
    pub upstream: Option<Spanned<String>>,
    /// Clients allowed (addresses or CIDRs).
    pub allow: Option<Vec<Spanned<String>>>,
    /// Clients refused.
    pub deny: Option<Vec<Spanned<String>>>,
}

/// `[log]`
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawLog {
    /// `"text"` (stone-style lines) or `"json"` (one object per line).
    pub format: Option<Spanned<String>>,
    /// A file to append to instead of stderr.
    pub file: Option<String>,
    /// `error`, `warn`, `info`, `debug` or `trace`.
    pub level: Option<Spanned<String>>,
    /// `"wait"` or `"drop"`: what a log line does when the buffer is full.
    pub when_full: Option<Spanned<String>>,
}

/// `[server]`
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    /// How long open connections may run after SIGTERM/SIGINT.
    pub drain_timeout: Option<Spanned<String>>,
    /// How long to keep accepting after SIGTERM while `/readyz` says 503.
    pub drain_grace: Option<Spanned<String>>,
}

/// `[[relay]]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRelay {
    /// A name for logs; defaults to `relay<N>`.
    pub name: Option<Spanned<String>>,
    /// `tcp` (default) or `udp`.
    pub protocol: Option<Spanned<String>>,
    /// Local address, e.g. `0.0.0.0:80` or `[::]:80`.
    pub listen: Option<Spanned<String>>,
    /// Where connections go, `host:port`.
    pub upstream: Option<Spanned<String>>,
    /// Per-address connect timeout.
    pub connect_timeout: Option<Spanned<String>>,
    /// Close connections (TCP) or sessions (UDP) silent for this long.
    pub idle_timeout: Option<Spanned<String>>,
    /// TCP: concurrent connections before new ones are refused.
    pub max_connections: Option<Spanned<i64>>,
    /// UDP: concurrent client sessions before the least recently used is evicted.
    pub max_sessions: Option<Spanned<i64>>,
    /// Clients allowed (addresses or CIDRs); checked after `deny`.
    pub allow: Option<Vec<Spanned<String>>>,
    /// Clients refused (addresses or CIDRs); checked first.
    pub deny: Option<Vec<Spanned<String>>>,
    /// Ordered rules: `"allow 10.0.0.0/8"`, `"deny 10.0.10.66"`.
    pub acl: Option<Vec<Spanned<String>>>,
    /// Set TCP_NODELAY on both sides (default true).
    pub nodelay: Option<bool>,
    /// TCP keep-alive on both sides.
    pub keepalive: Option<RawKeepalive>,
    /// Listen backlog (TCP).
    pub backlog: Option<Spanned<i64>>,
    /// Bind the listener to this interface, e.g. "eth0" (stone's `%intf`).
    pub interface: Option<String>,
    /// IPv6 listeners: refuse IPv4-mapped clients (stone's `/v6only`).
    pub v6only: Option<bool>,
    /// Local address for upstream connections, e.g. "172.31.10.171" (stone's `-I`).
    pub source: Option<Spanned<String>>,
    /// Share connections between these destinations in rotation (stone's `-B`).
    pub upstream_group: Option<Vec<Spanned<String>>>,
    /// Standby `host:port` used while `upstream` fails its connect check (stone's `-b`).
    pub backup: Option<Spanned<String>>,
    /// How often `upstream` is probed when `backup` is set (default 10s).
    pub backup_check_interval: Option<Spanned<String>>,
    /// `protocol = "proxy"`: allowed destinations, `"<cidr> <ports>"`.
    pub proxy_allow: Option<Vec<Spanned<String>>>,
    /// Terminate TLS from clients on this listener.
    pub tls: Option<Spanned<RawTls>>,
    /// Speak TLS to the upstream.
    pub upstream_tls: Option<Spanned<RawUpstreamTls>>,
    /// `protocol = "http"`: host patterns and their upstreams.
    pub routes: Option<Vec<Spanned<RawRoute>>>,
    /// `protocol = "http"`: where unrouted hosts go (else 421).
    pub default_route: Option<Spanned<String>>,
    /// `protocol = "http"`: allowed bucket globs.
    pub buckets: Option<Vec<Spanned<String>>>,
    /// `protocol = "http"`: denied bucket globs.
    pub deny_buckets: Option<Vec<Spanned<String>>>,
    /// `protocol = "http"`: allow requests without a bucket.
    pub allow_service: Option<bool>,
    /// `[[relay.policy]]`: endpoint policy statements.
    pub policy: Option<Vec<Spanned<RawStatement>>>,
    /// `protocol = "http"`: time allowed for a request head.
    pub header_timeout: Option<Spanned<String>>,
    /// `protocol = "http"`: the pool of idle upstream connections.
    pub upstream_keepalive: Option<Spanned<RawUpstreamKeepalive>>,
    /// PROXY protocol in and out.
    pub proxy_protocol: Option<Spanned<RawProxyProtocol>>,
    /// `protocol = "sftp"`: OpenSSH private host key files.
    pub host_keys: Option<Vec<Spanned<String>>>,
    /// `protocol = "sftp"`: create a missing host key (ed25519).
    pub generate_host_key: Option<bool>,
    /// `protocol = "sftp"`: the storage keys, from the environment.
    pub credentials: Option<Spanned<RawCredentials>>,
    /// `protocol = "sftp"`: the path clients name for a user's root.
    pub mount: Option<Spanned<String>>,
    /// `protocol = "sftp"`: the signing region.
    pub region: Option<Spanned<String>>,
    /// `protocol = "sftp"`: failed authentications per connection.
    pub max_auth_attempts: Option<Spanned<i64>>,
    /// `protocol = "sftp"`: `[[relay.users]]`.
    pub users: Option<Vec<Spanned<RawSftpUser>>>,
}

/// `credentials = { access_key_id_env = "…", secret_env = "…" }`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCredentials {
    /// The environment variable holding the access key ID.
    pub access_key_id_env: Option<String>,
    /// The environment variable holding the secret.
    pub secret_env: Option<String>,
}

/// `[[relay.users]]` of an sftp relay.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSftpUser {
    /// The login name.
    pub name: Option<String>,
    /// An OpenSSH authorized_keys file.
    pub authorized_keys: Option<String>,
    /// An argon2 PHC string.
    pub password_hash: Option<String>,
    /// `bucket[/prefix]`.
    pub root: Option<String>,
    /// Refuse writes.
    pub read_only: Option<bool>,
}

/// `proxy_protocol = { accept = "v2", accept_from = ["10.0.0.0/8"], send = "v1" }`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawProxyProtocol {
    /// Require this header version from clients.
    pub accept: Option<String>,
    /// The load balancers allowed to send it (CIDRs); required with `accept`.
    pub accept_from: Option<Vec<String>>,
    /// Send this header version to the upstream.
    pub send: Option<String>,
}

/// `upstream_keepalive = { max_idle = 64, idle_timeout = "30s" }`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstreamKeepalive {
    /// Idle connections kept per upstream and worker thread; 0 turns
    /// pooling off.
    pub max_idle: Option<usize>,
    /// How long an idle connection is kept.
    pub idle_timeout: Option<Spanned<String>>,
}

/// One `[[relay.policy]]` statement.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStatement {
    /// `allow` or `deny`.
    pub effect: Spanned<String>,
    /// Bucket globs.
    pub buckets: Option<Vec<Spanned<String>>>,
    /// OSS RAM action names or globs (`oss:Get*`, `*`).
    pub actions: Option<Vec<Spanned<String>>>,
    /// Object-key globs.
    pub keys: Option<Vec<Spanned<String>>>,
    /// Access key ID globs; `anonymous` for unsigned requests.
    pub access_keys: Option<Vec<Spanned<String>>>,
    /// Client address blocks.
    pub sources: Option<Vec<Spanned<String>>>,
    /// SSH user name globs (sftp relays).
    pub users: Option<Vec<Spanned<String>>>,
}

/// `{ host = "*.oss-…aliyuncs.com", upstream = "oss-…aliyuncs.com:80" }`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    /// Exact host or `*.suffix`.
    pub host: String,
    /// `host:port`.
    pub upstream: String,
}

/// `tls = { cert = "...", key = "...", client_ca = "...", client_auth = "required" }`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    /// PEM certificate chain.
    pub cert: String,
    /// PEM private key.
    pub key: String,
    /// CA file or directory for client certificates (mTLS).
    pub client_ca: Option<String>,
    /// `none`, `optional` or `required` (default: `required` with a client_ca).
    pub client_auth: Option<String>,
    /// `"1.2"` (default) or `"1.3"`.
    pub min_version: Option<String>,
    /// Colon-separated cipher suites (OpenSSL or IANA names).
    pub ciphers: Option<String>,
}

/// `upstream_tls = { server_name = "...", ca = "...", insecure = false }`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstreamTls {
    /// Name to verify and send as SNI (default: the upstream host).
    pub server_name: Option<String>,
    /// CA file or directory (default: the system store).
    pub ca: Option<String>,
    /// Accept any certificate. Logged as a warning.
    #[serde(default)]
    pub insecure: bool,
    /// Client certificate for mTLS to the upstream.
    pub cert: Option<String>,
    /// Its key (default: the cert file).
    pub key: Option<String>,
    /// `"1.2"` (default) or `"1.3"`.
    pub min_version: Option<String>,
    /// Colon-separated cipher suites.
    pub ciphers: Option<String>,
}

/// `keepalive = { time = "60s", interval = "10s", retries = 3 }`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawKeepalive {
    /// Idle time before the first probe.
    pub time: Option<Spanned<String>>,
    /// Time between probes.
    pub interval: Option<Spanned<String>>,
    /// Unanswered probes before the connection is dropped.
    pub retries: Option<Spanned<i64>>,
}

/// The sftp keys on a relay of another protocol are mistakes.
pub(super) fn sftp_keys(r: &RawRelay) -> Vec<&'static str> {
    [
        ("host_keys", r.host_keys.is_some()),
        ("generate_host_key", r.generate_host_key.is_some()),
        ("credentials", r.credentials.is_some()),
        ("mount", r.mount.is_some()),
        ("region", r.region.is_some()),
        ("max_auth_attempts", r.max_auth_attempts.is_some()),
        ("users", r.users.is_some()),
    ]
    .into_iter()
    .filter_map(|(k, set)| set.then_some(k))
    .collect()
}
