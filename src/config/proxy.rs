//! The `protocol = "proxy"` keys of a relay, validated into a
//! [`DestPolicy`].

use super::raw::RawRelay;
use super::Validator;
use crate::acl::{Acl, Action, Cidr, Rule};
use crate::policy::dest::{parse_ports, DestPolicy, DestRule};

impl Validator<'_> {
    pub(super) fn proxy_policy(&mut self, i: usize, r: &RawRelay) -> DestPolicy {
        let mut rules = Vec::new();
        match &r.proxy_allow {
            None => self.missing(
                &format!("relay[{i}].proxy_allow"),
                "a proxy needs an explicit destination list, e.g. proxy_allow = [\"10.0.0.0/8 80,443\"] (\"all 1-65535\" for any)",
            ),
            Some(list) => {
                for (j, e) in list.iter().enumerate() {
                    let path = format!("relay[{i}].proxy_allow[{j}]");
                    let Some((hosts, ports)) = e.get_ref().trim().split_once(char::is_whitespace) else {
                        self.problem(&path, e, format!("{:?}: expected \"<cidr> <ports>\", e.g. \"10.0.0.0/8 80,443\"", e.get_ref()));
                        continue;
                    };
                    // An address block, or a host name pattern matched
                    // against the name the client asked for.
                    let (blocks, names) = match Cidr::parse_list_entry(hosts) {
                        Ok(b) => (b, Vec::new()),
                        Err(cidr_err) => match crate::pattern::HostPattern::parse(hosts) {
                            Ok(p) => (Vec::new(), vec![p]),
                            Err(_) => {
                                self.problem(&path, e, format!("{cidr_err}; nor is it a host name or *.suffix pattern"));
                                continue;
                            }
                        },
                    };
                    match parse_ports(ports.trim()) {
                        Ok(ports) => rules.push(DestRule {
                            ports,
                            // Deny by default: a name-only rule allows no address.
                            hosts: Acl::with_default(blocks.into_iter().map(|block| Rule { action: Action::Allow, block, mode: 0 }).collect(), Action::Deny),
                            names,
                        }),
                        Err(err) => self.problem(&path, e, err),
                    }
                }
            }
        }
        // Each entry is its own rule; a destination passes if any entry
        // covering its port allows its address.
        DestPolicy {
            rules,
            last_match_wins: false,
            only_v6: None,
            buckets: (r.buckets.is_some()
                || r.deny_buckets.is_some()
                || r.allow_service.is_some()
                || r.policy.is_some())
            .then(|| self.endpoint_policy(i, r, false)),
        }
    }
}
