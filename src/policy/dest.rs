//! Where a forward proxy may connect: destination rules by address block,
//! host name pattern and port (stone's `-x`, TOML `proxy_allow`), and the
//! bucket policy for object-storage names reached through the proxy.

use std::net::IpAddr;
use std::ops::RangeInclusive;

use crate::acl::{Acl, Action};
use crate::policy::statement::Policy;

/// One destination rule: ports it covers and which addresses it allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DestRule {
    /// Port ranges this rule applies to.
    pub ports: Vec<RangeInclusive<u16>>,
    /// Addresses allowed on those ports.
    pub hosts: Acl,
    /// Host names (as the client asked for them) allowed on those ports.
    pub names: Vec<crate::pattern::HostPattern>,
}

/// Where a proxy may connect. With no rules every destination is allowed
/// (stone without `-x`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DestPolicy {
    /// Rules in definition order.
    pub rules: Vec<DestRule>,
    /// stone's `-x`: only the last rule whose ports match decides. Otherwise
    /// (TOML `proxy_allow`) any rule covering the port may allow it.
    pub last_match_wins: bool,
    /// stone's `proxy/v4only` (false) and `proxy/v6only` (true): only
    /// destinations of that address family.
    pub only_v6: Option<bool>,
    /// Bucket policy for requests to object-storage names (TOML only).
    pub buckets: Option<Policy>,
}

impl DestPolicy {
    /// The bucket a connection to `host` names by the name alone: the
    /// labels before a `*.suffix` name rule's suffix (CONNECT targets and
    /// TLS server names). The first name rule that matches decides, as in
    /// [`Self::locate`].
    pub fn bucket_of(&self, host: &str) -> Option<String> {
        for n in self.rules.iter().flat_map(|r| &r.names) {
            if let Some(b) = n.prefix_of(host) {
                return Some(b.to_string());
            }
            if n.matches(host) {
                return None;
            }
        }
        None
    }

    /// The bucket and object key (as in the path, still encoded) that a
    /// forwarded request for `host` and origin-form `path` names: from a
    /// `*.suffix` name rule the bucket is in the host and the key is the
    /// path; for an exact name rule both come from the path.
    pub fn locate(&self, host: &str, path: &str) -> (Option<String>, String) {
        let path = path.trim_start_matches('/');
        for n in self.rules.iter().flat_map(|r| &r.names) {
            if let Some(b) = n.prefix_of(host) {
                return (Some(b.to_string()), path.to_string());
            }
            if n.matches(host) {
                let (first, key) = path.split_once('/').unwrap_or((path, ""));
                let bucket = (!first.is_empty()).then(|| first.to_string());
                return (bucket, key.to_string());
            }
        }
        (None, path.to_string())
    }

    /// Whether a rule covering `port` allows the name `host` itself.
    pub fn allows_name(&self, host: &str, port: u16) -> bool {
        self.rules.iter().any(|r| {
            r.ports.iter().any(|p| p.contains(&port)) && r.names.iter().any(|n| n.matches(host))
        })
    }

    /// Whether `ip:port` may be reached.
    pub fn allows(&self, ip: IpAddr, port: u16) -> bool {
        if self.only_v6.is_some_and(|v6| v6 != ip.is_ipv6()) {
            return false;
        }
        if self.rules.is_empty() {
            return true;
        }
        let mut covering = self
            .rules
            .iter()
            .rev()
            .filter(|r| r.ports.iter().any(|p| p.contains(&port)));
        if self.last_match_wins {
            covering
                .next()
                .is_some_and(|rule| rule.hosts.check(ip).0 == Action::Allow)
        } else {
            covering.any(|rule| rule.hosts.check(ip).0 == Action::Allow)
        }
    }
}

/// Parses stone's `-x` port list: `80`, `80,443`, `8000-8080,443`.
pub fn parse_ports(text: &str) -> Result<Vec<RangeInclusive<u16>>, String> {
    text.split(',')
        .map(|part| {
            let (a, b) = part.split_once('-').unwrap_or((part, part));
            let a: u16 = a
                .parse()
                .map_err(|_| format!("{text:?}: {a:?} is not a port number"))?;
            let b: u16 = b
                .parse()
                .map_err(|_| format!("{text:?}: {b:?} is not a port number"))?;
            if a > b {
                return Err(format!("{text:?}: range {a}-{b} is backwards"));
            }
            Ok(a..=b)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::acl::{Cidr, Rule};

    #[test]
    fn policy_last_matching_port_list_wins() {
        let only = |cidr: &str| {
            Acl::new(vec![Rule {
                action: Action::Allow,
                block: Cidr::parse(cidr).unwrap(),
                mode: 0,
            }])
        };
        let p = DestPolicy {
            rules: vec![
                DestRule {
                    ports: parse_ports("1-65535").unwrap(),
                    hosts: only("10.0.0.0/8"),
                    names: vec![],
                },
                DestRule {
                    ports: parse_ports("80,443").unwrap(),
                    hosts: only("192.168.0.0/16"),
                    names: vec![],
                },
            ],
            last_match_wins: true,
            only_v6: None,
            buckets: None,
        };
        assert!(p.allows("10.1.1.1".parse().unwrap(), 22));
        assert!(!p.allows("10.1.1.1".parse().unwrap(), 80));
        assert!(p.allows("192.168.1.1".parse().unwrap(), 443));
        assert!(DestPolicy::default().allows("1.2.3.4".parse().unwrap(), 1));
        assert!(parse_ports("90-80").is_err());
        assert_eq!(
            parse_ports("80,8000-8080").unwrap(),
            vec![80..=80, 8000..=8080]
        );
        let union = DestPolicy {
            last_match_wins: false,
            ..p
        };
        assert!(union.allows("10.1.1.1".parse().unwrap(), 80));
        let v6 = DestPolicy {
            only_v6: Some(true),
            ..DestPolicy::default()
        };
        assert!(!v6.allows("10.1.1.1".parse().unwrap(), 80));
        assert!(v6.allows("::1".parse().unwrap(), 80));
    }
}
