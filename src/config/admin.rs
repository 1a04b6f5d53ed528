//! `[admin]`: the listener for metrics and health checks.

use std::net::SocketAddr;

use super::raw::RawAdmin;
use super::Validator;
use crate::acl::{Acl, Action};

/// A validated `[admin]` section.
#[derive(Debug, Clone)]
pub struct AdminConfig {
    /// TCP address of `/metrics`, `/livez`, `/readyz` and `/healthz`.
    pub listen: SocketAddr,
    /// Who may connect (everyone when `allow` is not given).
    pub acl: Acl,
}

impl Validator<'_> {
    pub(super) fn admin(&mut self, raw: &RawAdmin) -> Option<AdminConfig> {
        let before = self.problems.len();
        let listen = match &raw.listen {
            None => {
                self.missing("admin.listen", "missing; e.g. listen = \"127.0.0.1:9900\"");
                None
            }
            Some(l) => l
                .get_ref()
                .parse::<SocketAddr>()
                .map_err(|_| {
                    self.problem(
                        "admin.listen",
                        l,
                        format!(
                            "{:?} is not an address:port (e.g. \"127.0.0.1:9900\")",
                            l.get_ref()
                        ),
                    )
                })
                .ok(),
        };
        let mut rules = Vec::new();
        self.address_rules("admin.allow", Action::Allow, &raw.allow, &mut rules);
        if self.problems.len() != before {
            return None;
        }
        Some(AdminConfig {
            listen: listen?,
            acl: Acl::new(rules),
        })
    }
}
