//! `ossrelay hosts`: the /etc/hosts lines that send a client's OSS traffic
//! to the relay (the blog's two lines, one per bucket), derived from the
//! command line or a run config, and a check of an existing hosts file.

use std::net::IpAddr;

use crate::config::{Config, Forward, Service};
use crate::pattern::HostPattern;

/// One wanted hosts entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The relay address.
    pub ip: IpAddr,
    /// The name that must resolve to it.
    pub name: String,
}

/// Entries for `endpoints` and every `bucket.endpoint`.
pub fn entries(relay: IpAddr, endpoints: &[String], buckets: &[String]) -> Vec<Entry> {
    let mut out = Vec::new();
    for e in endpoints {
        let e = e.trim_end_matches('.').to_ascii_lowercase();
        out.push(Entry {
            ip: relay,
            name: e.clone(),
        });
        for b in buckets {
            out.push(Entry {
                ip: relay,
                name: format!("{}.{e}", b.to_ascii_lowercase()),
            });
        }
    }
    out
}

/// The endpoints a run config serves: the `[dns]` names and gateway
/// routes (a `*.suffix` contributes its suffix, which buckets are put in
/// front of) and every other relay upstream that is a host name. Also the relay address from
/// `[dns] answer` when `relay` is not given.
pub fn from_config(cfg: &Config, relay: Option<IpAddr>) -> Result<(IpAddr, Vec<String>), String> {
    let mut endpoints: Vec<String> = Vec::new();
    let mut add = |name: &str| {
        let n = name.trim_end_matches('.').to_ascii_lowercase();
        if !endpoints.contains(&n) {
            endpoints.push(n);
        }
    };
    if let Some(d) = &cfg.dns {
        for p in &d.names {
            match p {
                HostPattern::Exact(n) | HostPattern::Below(n) => add(n),
            }
        }
    }
    for r in &cfg.relays {
        let upstream = match &r.service {
            // A gateway's routes name the endpoints clients use.
            Service::Http(g) | Service::Sni(g) => {
                for route in &g.routes {
                    match &route.host {
                        HostPattern::Exact(n) | HostPattern::Below(n) => add(n),
                    }
                }
                continue;
            }
            Service::Tcp(Forward {
                upstream,
                unix: None,
                ..
            })
            | Service::Udp(upstream) => upstream,
            _ => continue,
        };
        if upstream.host.parse::<IpAddr>().is_err() {
            add(&upstream.host);
        }
    }
    if endpoints.is_empty() {
        return Err(
            "the config names no endpoint (no [dns] names and no relay upstream host name)".into(),
        );
    }
    let relay =
        match relay.or_else(|| cfg.dns.as_ref().and_then(|d| d.answer.first().copied())) {
            Some(ip) => ip,
            None => return Err(
                "give --relay <IP>: the config has no [dns] answer to take the relay address from"
                    .into(),
            ),
        };
    Ok((relay, endpoints))
}

/// What a hosts file says about one wanted entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finding {
    /// Present with the right address.
    Ok,
    /// The name is not in the file.
    Missing,
    /// The name maps to other addresses.
    Stale(Vec<IpAddr>),
}

/// Checks `text` (a hosts file) against `wanted`. As in glibc, the first
/// line that names a host decides its IPv4 address.
pub fn check(text: &str, wanted: &[Entry]) -> Vec<(Entry, Finding)> {
    let mut seen: Vec<(String, IpAddr)> = Vec::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("");
        let mut f = line.split_whitespace();
        let Some(Ok(ip)) = f.next().map(str::parse::<IpAddr>) else {
            continue;
        };
        for name in f {
            seen.push((name.trim_end_matches('.').to_ascii_lowercase(), ip));
        }
    }
    wanted
        .iter()
        .map(|e| {
            let first = seen
                .iter()
                .find(|(n, ip)| *n == e.name && ip.is_ipv4() == e.ip.is_ipv4());
            let finding = match first {
                Some((_, ip)) if *ip == e.ip => Finding::Ok,
                Some(_) => Finding::Stale(
                    seen.iter()
                        .filter(|(n, _)| *n == e.name)
                        .map(|(_, ip)| *ip)
                        .collect(),
                ),
                None => Finding::Missing,
            };
            (e.clone(), finding)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_blogs_lines_and_a_check() {
        let relay: IpAddr = "172.31.10.171".parse().unwrap();
        let e = entries(
            relay,
            &["oss-ap-northeast-1-internal.aliyuncs.com".into()],
            &["aws-alibaba-oss".into(), "logs".into()],
        );
        let text: Vec<String> = e.iter().map(|e| format!("{} {}", e.ip, e.name)).collect();
        assert_eq!(
            text,
            [
                "172.31.10.171 oss-ap-northeast-1-internal.aliyuncs.com",
                "172.31.10.171 aws-alibaba-oss.oss-ap-northeast-1-internal.aliyuncs.com",
                "172.31.10.171 logs.oss-ap-northeast-1-internal.aliyuncs.com"
            ]
        );
        let file = "127.0.0.1 localhost\n172.31.10.171 oss-ap-northeast-1-internal.aliyuncs.com # relay\n10.9.9.9 aws-alibaba-oss.oss-ap-northeast-1-internal.aliyuncs.com\n";
        let got: Vec<Finding> = check(file, &e).into_iter().map(|(_, f)| f).collect();
        assert_eq!(
            got,
            [
                Finding::Ok,
                Finding::Stale(vec!["10.9.9.9".parse().unwrap()]),
                Finding::Missing
            ]
        );
    }
}
