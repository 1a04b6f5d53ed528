//! The `[dns]` section, validated into a [`DnsConfig`].

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use super::raw::RawDns;
use super::Validator;
use crate::acl::{Acl, Action};
use crate::pattern::HostPattern;

/// The validated `[dns]` section.
#[derive(Debug, Clone)]
pub struct DnsConfig {
    /// UDP and TCP address to serve.
    pub listen: SocketAddr,
    /// Names answered with `answer`.
    pub names: Vec<HostPattern>,
    /// The addresses returned (A for IPv4, AAAA for IPv6).
    pub answer: Vec<IpAddr>,
    /// TTL of the answers.
    pub ttl: Duration,
    /// Resolver for every other name; `None` refuses them.
    pub upstream: Option<SocketAddr>,
    /// Which clients may ask.
    pub acl: Acl,
}

impl Validator<'_> {
    pub(super) fn dns(&mut self, raw: &RawDns) -> Option<DnsConfig> {
        let before = self.problems.len();
        let listen = match &raw.listen {
            None => {
                self.missing("dns.listen", "missing; e.g. listen = \"0.0.0.0:53\"");
                None
            }
            Some(l) => l
                .get_ref()
                .parse::<SocketAddr>()
                .map_err(|_| {
                    self.problem(
                        "dns.listen",
                        l,
                        format!("{:?} is not an address:port", l.get_ref()),
                    )
                })
                .ok(),
        };
        let mut names = Vec::new();
        match &raw.names {
            None => self.missing(
                "dns.names",
                "missing; e.g. names = [\"*.oss-ap-northeast-1-internal.aliyuncs.com\"]",
            ),
            Some(list) => {
                for (j, n) in list.iter().enumerate() {
                    match HostPattern::parse(n.get_ref()) {
                        Ok(p) => names.push(p),
                        Err(e) => self.problem(&format!("dns.names[{j}]"), n, e),
                    }
                }
            }
        }
        let mut answer = Vec::new();
        match &raw.answer {
            None => self.missing(
                "dns.answer",
                "missing: the relay addresses to answer with, e.g. answer = [\"172.31.10.171\"]",
            ),
            Some(list) => {
                for (j, a) in list.iter().enumerate() {
                    match a.get_ref().parse::<IpAddr>() {
                        Ok(ip) => answer.push(ip),
                        Err(_) => self.problem(
                            &format!("dns.answer[{j}]"),
                            a,
                            format!("{:?} is not an IP address", a.get_ref()),
                        ),
                    }
                }
                if list.is_empty() {
                    self.missing("dns.answer", "needs at least one address");
                }
            }
        }
        let ttl = self
            .duration("dns.ttl", &raw.ttl)
            .unwrap_or(Duration::from_secs(60));
        let upstream = raw.upstream.as_ref().and_then(|u| {
            let text = u.get_ref();
            text.parse::<SocketAddr>()
                .or_else(|_| text.parse::<IpAddr>().map(|ip| SocketAddr::new(ip, 53)))
                .map_err(|_| {
                    self.problem(
                        "dns.upstream",
                        u,
                        format!(
                            "{text:?} is not a resolver address (\"10.0.0.2\" or \"10.0.0.2:53\")"
                        ),
                    )
                })
                .ok()
        });
        let mut rules = Vec::new();
        self.address_rules("dns.deny", Action::Deny, &raw.deny, &mut rules);
        self.address_rules("dns.allow", Action::Allow, &raw.allow, &mut rules);
        if self.problems.len() != before {
            return None;
        }
        Some(DnsConfig {
            listen: listen?,
            names,
            answer,
            ttl,
            upstream,
            acl: Acl::new(rules),
        })
    }
}
