//! The routing settings of `protocol = "http"` and `protocol = "tls"`
//! relays ([`Gateway`]: routes, default route, bucket policy, head
//! timeout), how a request is routed, and their validation.

use std::time::Duration;

use super::raw::RawRelay;
use super::raw::RawStatement;
use super::{Upstream, Validator};
use crate::acl::Cidr;
use crate::pattern::HostPattern;
use crate::policy::action::action_problem;
use crate::policy::statement::{Decision, Effect, Policy, Statement};

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

/// The gateway settings of one relay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gateway {
    /// Routes in order; the first match wins.
    pub routes: Vec<Route>,
    /// Where requests for other hosts go; `None` refuses them with 421.
    pub default_route: Option<Upstream>,
    /// The endpoint policy.
    pub policy: Policy,
    /// Time allowed for a request head.
    pub head_timeout: Duration,
    /// Idle upstream connections kept for reuse.
    pub pool: PoolSettings,
}

/// `upstream_keepalive`: how many idle upstream connections each worker
/// thread keeps per route, and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolSettings {
    /// 0: every client connection opens its own upstream connection.
    pub max_idle: usize,
    /// An idle connection older than this is closed, not reused.
    pub idle_timeout: Duration,
}

impl Default for PoolSettings {
    fn default() -> Self {
        PoolSettings {
            max_idle: 64,
            idle_timeout: Duration::from_secs(30),
        }
    }
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
    /// The bucket came from the path's first segment, not from the host.
    pub path_style: bool,
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
                    path_style: false,
                },
                None => Target {
                    route: Some(i),
                    upstream: &r.upstream,
                    bucket: (!first.is_empty()).then(|| first.to_string()),
                    key: rest.to_string(),
                    path_style: true,
                },
            });
        }
        self.default_route.as_ref().map(|u| Target {
            route: None,
            upstream: u,
            bucket: (!first.is_empty()).then(|| first.to_string()),
            key: rest.to_string(),
            path_style: true,
        })
    }

    /// `Err(reason)` when the policy refuses a connection that names only
    /// `bucket` (SNI), from `source`.
    pub fn check(&self, bucket: Option<&str>, source: std::net::IpAddr) -> Result<(), String> {
        match self.policy.decide_opaque(bucket, source) {
            Decision::Allowed(_) => Ok(()),
            Decision::Denied { reason, .. } => Err(reason),
        }
    }
}

/// Why `g` is not a bucket name or glob (what S3 and OSS allow, plus `*`).
fn bucket_glob_problem(g: &str) -> Option<String> {
    let ok = !g.is_empty()
        && g.len() <= 63
        && g.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-.*".contains(&b));
    (!ok).then(|| {
        format!("{g:?} is not a bucket name or glob (lower-case letters, digits, '-', '.', '*')")
    })
}

impl Validator<'_> {
    pub(super) fn gateway(&mut self, i: usize, r: &RawRelay, sni: bool) -> Option<Gateway> {
        let key = |f: &str| format!("relay[{i}].{f}");
        let before = self.problems.len();
        if sni && r.tls.is_some() {
            self.missing(
                &key("tls"),
                "protocol = \"tls\" passes TLS through untouched; to terminate TLS use protocol = \"http\" with tls = {...}",
            );
        }
        let mut routes = Vec::new();
        for (j, route) in r.routes.iter().flatten().enumerate() {
            let path = format!("relay[{i}].routes[{j}]");
            let raw = route.get_ref();
            let host = HostPattern::parse(&raw.host).map_err(|e| self.problem(&path, route, e));
            let upstream =
                Upstream::parse(&raw.upstream).map_err(|e| self.problem(&path, route, e));
            if let (Ok(host), Ok(upstream)) = (host, upstream) {
                routes.push(Route { host, upstream });
            }
        }
        let default_route = r.default_route.as_ref().and_then(|d| {
            Upstream::parse(d.get_ref())
                .map_err(|e| self.problem(&key("default_route"), d, e))
                .ok()
        });
        if r.routes.as_ref().is_none_or(|v| v.is_empty()) && r.default_route.is_none() {
            self.missing(
                &key("routes"),
                "an http or tls relay needs routes, e.g. routes = [{ host = \"*.oss-ap-northeast-1-internal.aliyuncs.com\", upstream = \"oss-ap-northeast-1-internal.aliyuncs.com:80\" }], or a default_route",
            );
        }
        let policy = self.endpoint_policy(i, r, sni);
        let head_timeout = self
            .duration(&key("header_timeout"), &r.header_timeout)
            .unwrap_or(DEFAULT_HEAD_TIMEOUT);
        let mut pool = PoolSettings::default();
        if let Some(k) = &r.upstream_keepalive {
            if sni {
                self.problem(&key("upstream_keepalive"), k, "a tls relay passes each connection through whole; pooling applies to protocol = \"http\" only".into());
            }
            let k = k.get_ref();
            if let Some(n) = k.max_idle {
                pool.max_idle = n;
            }
            if let Some(t) = self.duration(&key("upstream_keepalive.idle_timeout"), &k.idle_timeout)
            {
                pool.idle_timeout = t;
            }
        }
        // A PROXY header belongs to one client: its connection is never
        // handed to another.
        let sends_proxy = r
            .proxy_protocol
            .as_ref()
            .is_some_and(|p| p.get_ref().send.is_some());
        if sni || sends_proxy {
            pool.max_idle = 0;
        }
        if self.problems.len() != before {
            return None;
        }
        Some(Gateway {
            routes,
            default_route,
            policy,
            head_timeout,
            pool,
        })
    }

    /// The endpoint policy: the `[[relay.policy]]` statements in order,
    /// then the shorthand keys as statements (`deny_buckets`, `buckets`,
    /// `allow_service`). Without statements or `buckets`, every bucket is
    /// allowed, as before statements existed. `names_only`: the relay sees
    /// bucket names only (SNI), so actions, keys and access keys are refused.
    pub(super) fn endpoint_policy(&mut self, i: usize, r: &RawRelay, names_only: bool) -> Policy {
        let mut statements = Vec::new();
        for (j, st) in r.policy.iter().flatten().enumerate() {
            let path = format!("relay[{i}].policy[{j}]");
            if let Some(s) = self.statement(&path, st, names_only) {
                statements.push(s);
            }
        }
        let mut globs = |field: &str, list: &Option<Vec<toml::Spanned<String>>>| -> Vec<String> {
            let mut out = Vec::new();
            for (j, g) in list.iter().flatten().enumerate() {
                match bucket_glob_problem(g.get_ref()) {
                    None => out.push(g.get_ref().clone()),
                    Some(why) => self.problem(&format!("relay[{i}].{field}[{j}]"), g, why),
                }
            }
            out
        };
        let shorthand = |effect, buckets, actions: Option<&str>, origin: &str| Statement {
            effect,
            buckets,
            actions: actions.map(|a| vec![a.to_string()]),
            keys: None,
            access_keys: None,
            sources: None,
            users: None,
            origin: origin.to_string(),
        };
        if r.deny_buckets.is_some() {
            let deny = globs("deny_buckets", &r.deny_buckets);
            statements.push(shorthand(Effect::Deny, Some(deny), None, "deny_buckets"));
        }
        match &r.buckets {
            Some(_) => {
                let allow = globs("buckets", &r.buckets);
                statements.push(shorthand(Effect::Allow, Some(allow), None, "buckets"));
            }
            None if r.policy.is_none() => statements.push(shorthand(
                Effect::Allow,
                Some(vec!["*".into()]),
                None,
                "buckets not set: every bucket",
            )),
            None => {}
        }
        if r.allow_service == Some(true) {
            statements.push(shorthand(
                Effect::Allow,
                None,
                Some("oss:ListBuckets"),
                "allow_service",
            ));
        }
        Policy { statements }
    }

    fn statement(
        &mut self,
        path: &str,
        raw: &toml::Spanned<RawStatement>,
        names_only: bool,
    ) -> Option<Statement> {
        let st = raw.get_ref();
        let before = self.problems.len();
        let effect = match st.effect.get_ref().as_str() {
            "allow" => Effect::Allow,
            "deny" => Effect::Deny,
            other => {
                self.problem(
                    &format!("{path}.effect"),
                    &st.effect,
                    format!("{other:?}: expected \"allow\" or \"deny\""),
                );
                Effect::Deny
            }
        };
        let mut list = |field: &str,
                        v: &Option<Vec<toml::Spanned<String>>>,
                        check: &dyn Fn(&str) -> Option<String>|
         -> Option<Vec<String>> {
            let v = v.as_ref()?;
            if v.is_empty() {
                self.missing(&format!("{path}.{field}"), "is empty, so the statement would match nothing; leave it out to match everything");
            }
            for (k, item) in v.iter().enumerate() {
                if let Some(why) = check(item.get_ref()) {
                    self.problem(&format!("{path}.{field}[{k}]"), item, why);
                }
            }
            Some(v.iter().map(|x| x.get_ref().clone()).collect())
        };
        let buckets = list("buckets", &st.buckets, &bucket_glob_problem);
        let actions = list("actions", &st.actions, &|a| action_problem(a));
        let keys = list("keys", &st.keys, &|k| {
            k.is_empty()
                .then(|| "an empty key glob matches nothing".to_string())
        });
        let access_keys = list("access_keys", &st.access_keys, &|k| {
            (k.is_empty() || k.chars().any(|c| c.is_whitespace() || c == '/'))
                .then(|| format!("{k:?} is not an access key ID or glob"))
        });
        let users = list("users", &st.users, &|u| {
            (u.is_empty() || u.chars().any(|c| c.is_whitespace()))
                .then(|| format!("{u:?} is not a user name or glob"))
        });
        let mut sources = None;
        if let Some(v) = &st.sources {
            let mut blocks = Vec::new();
            for (k, item) in v.iter().enumerate() {
                match Cidr::parse(item.get_ref()) {
                    Ok(c) => blocks.push(c),
                    Err(e) => self.problem(&format!("{path}.sources[{k}]"), item, e),
                }
            }
            sources = Some(blocks);
        }
        if names_only && (actions.is_some() || keys.is_some() || access_keys.is_some()) {
            self.problem(path, raw, "a protocol = \"tls\" relay sees only the bucket name in the TLS handshake, never the requests, so it cannot enforce actions, keys or access_keys; terminate TLS with protocol = \"http\" and tls = { cert, key } to enforce them".into());
        }
        (self.problems.len() == before).then(|| Statement {
            effect,
            buckets,
            actions,
            keys,
            access_keys,
            sources,
            users,
            origin: format!(
                "{path} at line {}",
                super::line_of(self.text, raw.span().start)
            ),
        })
    }

    /// The http keys on a relay of another protocol are mistakes.
    pub(super) fn not_gateway(&mut self, i: usize, r: &RawRelay) {
        let proxy = r.protocol.as_ref().is_some_and(|p| p.get_ref() == "proxy");
        let set = [
            ("routes", r.routes.is_some()),
            ("default_route", r.default_route.is_some()),
            ("buckets", r.buckets.is_some() && !proxy),
            ("deny_buckets", r.deny_buckets.is_some() && !proxy),
            ("allow_service", r.allow_service.is_some() && !proxy),
            ("header_timeout", r.header_timeout.is_some()),
            ("upstream_keepalive", r.upstream_keepalive.is_some()),
        ];
        for (k, present) in set {
            if present {
                self.missing(
                    &format!("relay[{i}].{k}"),
                    "only applies to protocol = \"http\"",
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pattern::HostPattern;
    use crate::policy::bucket::glob;

    fn gw() -> Gateway {
        let up = Upstream {
            host: "oss.test".into(),
            port: 80,
        };
        Gateway {
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
            policy: Policy {
                statements: vec![
                    Statement {
                        effect: Effect::Deny,
                        buckets: Some(vec!["logs-secret".into()]),
                        actions: None,
                        keys: None,
                        access_keys: None,
                        sources: None,
                        users: None,
                        origin: "deny_buckets".into(),
                    },
                    Statement {
                        effect: Effect::Allow,
                        buckets: Some(vec!["aws-alibaba-oss".into(), "logs-*".into()]),
                        actions: None,
                        keys: None,
                        access_keys: None,
                        sources: None,
                        users: None,
                        origin: "buckets".into(),
                    },
                ],
            },
            head_timeout: DEFAULT_HEAD_TIMEOUT,
            pool: PoolSettings::default(),
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
        let ip = std::net::IpAddr::from([10, 0, 0, 1]);
        assert!(g.check(Some("aws-alibaba-oss"), ip).is_ok());
        assert!(g.check(Some("logs-2026"), ip).is_ok());
        let secret = g.check(Some("logs-secret"), ip).unwrap_err();
        assert!(
            secret.contains("statement 1") && secret.contains("deny_buckets"),
            "{secret}"
        );
        let other = g.check(Some("attacker"), ip).unwrap_err();
        assert!(other.contains("no policy statement allows"), "{other}");
        assert!(g.check(None, ip).unwrap_err().contains("allow_service"));
        assert!(glob("a*b*c", "axxbyyc") && !glob("a*b", "ab-c") && glob("*", ""));
    }
}
