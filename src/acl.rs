//! Client access control: an ordered list of allow/deny rules over
//! addresses and CIDR blocks, first match wins.

use std::fmt;
use std::net::IpAddr;

/// What a rule does with a matching client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Let the client through.
    Allow,
    /// Close the client before any upstream connection is attempted.
    Deny,
}

/// An address block such as `10.0.0.0/8`, `fd00::/8` or a single address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Parses `ip`, `ip/bits`, or the words `all`/`any` (every v4 and v6 address).
    pub fn parse_list_entry(text: &str) -> Result<Vec<Cidr>, String> {
        match text.trim() {
            "all" | "any" => Ok(vec![
                Cidr {
                    addr: IpAddr::from([0, 0, 0, 0]),
                    prefix: 0,
                },
                Cidr {
                    addr: IpAddr::from([0u16; 8]),
                    prefix: 0,
                },
            ]),
            other => Cidr::parse(other).map(|c| vec![c]),
        }
    }

    /// Parses `ip` or `ip/bits`.
    pub fn parse(text: &str) -> Result<Cidr, String> {
        let (ip_text, bits_text) = match text.split_once('/') {
            Some((ip, bits)) => (ip, Some(bits)),
            None => (text, None),
        };
        let addr: IpAddr = ip_text
            .parse()
            .map_err(|_| format!("{text:?} is not an IP address or CIDR block"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match bits_text {
            None => max,
            Some(bits) => bits
                .parse::<u8>()
                .ok()
                .filter(|b| *b <= max)
                .ok_or_else(|| format!("{text:?}: prefix length must be 0..={max}"))?,
        };
        // Clients are matched as IPv4 when they are IPv4-mapped, so a
        // mapped block must become the IPv4 block it stands for.
        if let IpAddr::V6(v6) = addr {
            if let Some(v4) = v6.to_ipv4_mapped() {
                if prefix < 96 {
                    return Err(format!(
                        "{text:?}: an IPv4-mapped block needs a prefix of at least 96"
                    ));
                }
                return Ok(Cidr {
                    addr: IpAddr::V4(v4),
                    prefix: prefix - 96,
                });
            }
        }
        Ok(Cidr { addr, prefix })
    }

    /// Whether `ip` lies inside this block. IPv4-mapped IPv6 clients (what a
    /// dual-stack `[::]` listener reports for v4 peers) match v4 blocks.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                prefix_eq(u32::from(net).into(), u32::from(ip).into(), self.prefix, 32)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                prefix_eq(u128::from(net), u128::from(ip), self.prefix, 128)
            }
            _ => false,
        }
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// Maps `::ffff:a.b.c.d` to `a.b.c.d` so v4 rules apply on dual-stack sockets.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        v4 => v4,
    }
}

fn prefix_eq(a: u128, b: u128, prefix: u8, width: u32) -> bool {
    if prefix == 0 {
        return true;
    }
    let shift = width - u32::from(prefix);
    (a >> shift) == (b >> shift)
}

/// One ordered rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// What happens on a match.
    pub action: Action,
    /// Which clients match.
    pub block: Cidr,
    /// stone's `p<mode>` number, shown as `mode=` in the accepted line.
    pub mode: u32,
}

/// An ordered rule list with a default for clients that match nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Acl {
    rules: Vec<Rule>,
    default: Action,
}

impl Default for Acl {
    fn default() -> Self {
        Acl {
            rules: Vec::new(),
            default: Action::Allow,
        }
    }
}

impl Acl {
    /// Builds an ACL. With any allow rule present, unmatched clients are
    /// denied; otherwise they are allowed.
    pub fn new(rules: Vec<Rule>) -> Acl {
        let default = if rules.iter().any(|r| r.action == Action::Allow) {
            Action::Deny
        } else {
            Action::Allow
        };
        Acl { rules, default }
    }

    /// An ACL with an explicit default (stone's xhost lists choose it by
    /// the allow/deny mode in force at the end of the list).
    pub fn with_default(rules: Vec<Rule>, default: Action) -> Acl {
        Acl { rules, default }
    }

    /// What happens to clients that match no rule.
    pub fn default_action(&self) -> Action {
        self.default
    }

    /// The decision for `ip`, and the rule that made it (None = default).
    pub fn check(&self, ip: IpAddr) -> (Action, Option<&Rule>) {
        match self.rules.iter().find(|r| r.block.contains(ip)) {
            Some(rule) => (rule.action, Some(rule)),
            None => (self.default, None),
        }
    }

    /// The rules, in order.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// Whether everyone is allowed without any rule.
    pub fn is_open(&self) -> bool {
        self.rules.is_empty() && self.default == Action::Allow
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn rule(action: Action, s: &str) -> Rule {
        Rule {
            action,
            block: Cidr::parse(s).unwrap(),
            mode: 0,
        }
    }

    #[test]
    fn cidr_matching_v4_v6_and_mapped() {
        let net = Cidr::parse("10.0.0.0/8").unwrap();
        assert!(net.contains(ip("10.200.1.1")));
        assert!(!net.contains(ip("11.0.0.1")));
        assert!(net.contains(ip("::ffff:10.1.2.3")));
        let v6 = Cidr::parse("fd00::/8").unwrap();
        assert!(v6.contains(ip("fd12::1")));
        assert!(!v6.contains(ip("fe80::1")));
        assert!(!v6.contains(ip("10.0.0.1")));
        assert!(Cidr::parse("0.0.0.0/0").unwrap().contains(ip("1.2.3.4")));
        assert!(Cidr::parse("::ffff:10.0.0.0/104")
            .unwrap()
            .contains(ip("10.9.9.9")));
        assert!(Cidr::parse("::ffff:10.0.0.0/104")
            .unwrap()
            .contains(ip("::ffff:10.9.9.9")));
        assert!(Cidr::parse("::ffff:10.0.0.0/64").is_err());
        assert!(Cidr::parse("10.0.0.1").unwrap().contains(ip("10.0.0.1")));
        assert!(!Cidr::parse("10.0.0.1").unwrap().contains(ip("10.0.0.2")));
    }

    #[test]
    fn cidr_parse_errors_name_the_input() {
        assert!(Cidr::parse("10.0.0.0/33")
            .unwrap_err()
            .contains("10.0.0.0/33"));
        assert!(Cidr::parse("bogus").unwrap_err().contains("bogus"));
    }

    #[test]
    fn first_match_wins_and_defaults() {
        let acl = Acl::new(vec![
            rule(Action::Deny, "10.0.10.66"),
            rule(Action::Allow, "10.0.0.0/8"),
        ]);
        assert_eq!(acl.check(ip("10.0.10.66")).0, Action::Deny);
        assert_eq!(acl.check(ip("10.0.10.30")).0, Action::Allow);
        assert_eq!(acl.check(ip("192.168.1.1")).0, Action::Deny);
        let deny_only = Acl::new(vec![rule(Action::Deny, "192.168.0.0/16")]);
        assert_eq!(deny_only.check(ip("192.168.1.1")).0, Action::Deny);
        assert_eq!(deny_only.check(ip("10.1.1.1")).0, Action::Allow);
        assert_eq!(Acl::default().check(ip("1.1.1.1")).0, Action::Allow);
    }
}
