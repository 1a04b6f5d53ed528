//! The endpoint policy: statements that allow or deny actions on buckets
//! and keys, for access key IDs and client addresses, evaluated as IAM
//! does. An explicit deny wins; otherwise a matching allow allows;
//! otherwise the request is denied. A request is allowed only if every
//! resource it touches is (a copy's source as well as its target).
//!
//! Where the relay cannot know a bucket or key (it is in a body), an allow
//! statement matches it only if it covers every bucket or key (`*`), and a
//! deny statement always matches it: the unknown could be the denied one.

use std::fmt;
use std::net::IpAddr;

use super::action::{Classified, Name, Touch, OPAQUE};
use super::bucket::glob;
use crate::acl::Cidr;

/// Allow or deny.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    /// Allows what it matches, unless a deny matches too.
    Allow,
    /// Denies what it matches.
    Deny,
}

/// One statement. A missing condition (`None`) matches everything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statement {
    /// Allow or deny.
    pub effect: Effect,
    /// Bucket globs; `None` also matches requests without a bucket.
    pub buckets: Option<Vec<String>>,
    /// Action globs (`oss:Get*`, `*`); `None` for every action.
    pub actions: Option<Vec<String>>,
    /// Object-key globs; a statement with keys matches object actions only.
    pub keys: Option<Vec<String>>,
    /// Access key ID globs; `anonymous` matches unsigned requests.
    pub access_keys: Option<Vec<String>>,
    /// Client address blocks (after PROXY protocol).
    pub sources: Option<Vec<Cidr>>,
    /// SSH user name globs: a statement with users matches only the
    /// sessions of an sftp relay.
    pub users: Option<Vec<String>>,
    /// Where it came from: `policy[1]`, or the shorthand key it stands for.
    pub origin: String,
}

/// The statements of one relay, in order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Policy {
    /// In the order written; numbered from 1 in messages.
    pub statements: Vec<Statement>,
}

/// Who is asking: the access key from the signature and the client.
#[derive(Debug, Clone, Copy)]
pub struct Principal<'a> {
    /// The access key ID, `None` when unsigned.
    pub access_key: Option<&'a str>,
    /// The client's address.
    pub source: IpAddr,
    /// The SSH user of an sftp session; `None` for http requests.
    pub user: Option<&'a str>,
}

/// Why a request was allowed or denied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Allowed; the statement (0-based) that allowed the request's own touch.
    Allowed(usize),
    /// Denied by a statement (0-based), or by none allowing it.
    Denied {
        /// The deciding deny statement, if one matched.
        statement: Option<usize>,
        /// For the client's 403 and the access record.
        reason: String,
    },
}

fn any_glob(globs: &[String], name: &str) -> bool {
    globs.iter().any(|g| glob(g, name))
}

fn covers_all(globs: &[String]) -> bool {
    globs.iter().any(|g| g == "*")
}

impl Statement {
    fn matches(&self, t: &Touch, who: &Principal<'_>) -> bool {
        let deny = self.effect == Effect::Deny;
        // An unknown name: an allow must cover everything, a deny matches.
        let name_ok = |globs: &[String], name: &Name| match name {
            Name::Known(n) => any_glob(globs, n),
            Name::Unknown(_) => deny || covers_all(globs),
        };
        if let Some(actions) = &self.actions {
            // A tunnel's requests are unseen: it is only covered by a
            // statement for every action, and caught by any deny.
            // A bucketless one (the bare endpoint) is nominally ListBuckets.
            let ok = if t.action == OPAQUE {
                deny || actions.iter().any(|a| a == "*" || a == "oss:*")
                    || (t.bucket.is_none() && any_glob(actions, "oss:ListBuckets"))
            } else {
                any_glob(actions, t.action)
            };
            if !ok {
                return false;
            }
        }
        if let Some(buckets) = &self.buckets {
            match &t.bucket {
                None => return false,
                Some(b) if !name_ok(buckets, b) => return false,
                Some(_) => {}
            }
        }
        if let Some(keys) = &self.keys {
            match &t.key {
                // A tunnel might touch any key.
                None if t.action == OPAQUE => {
                    if !(deny || covers_all(keys)) {
                        return false;
                    }
                }
                None => return false,
                Some(k) if !name_ok(keys, k) => return false,
                Some(_) => {}
            }
        }
        if let Some(aks) = &self.access_keys {
            let ok = match who.access_key {
                None => aks.iter().any(|a| a == "anonymous"),
                Some(ak) => any_glob(aks, ak),
            };
            // In a tunnel the signature is unseen too.
            let ok = ok || (t.action == OPAQUE && deny);
            if !ok {
                return false;
            }
        }
        if let Some(sources) = &self.sources {
            if !sources.iter().any(|c| c.contains(who.source)) {
                return false;
            }
        }
        if let Some(users) = &self.users {
            if !who.user.is_some_and(|u| any_glob(users, u)) {
                return false;
            }
        }
        true
    }
}

impl fmt::Display for Statement {
    /// `deny oss:DeleteObject on logs-*`, for messages.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list = |v: &Option<Vec<String>>, all: &str| match v {
            None => all.to_string(),
            Some(v) => v.join(","),
        };
        let effect = match self.effect {
            Effect::Allow => "allow",
            Effect::Deny => "deny",
        };
        write!(
            f,
            "{effect} {} on {}",
            list(&self.actions, "*"),
            list(&self.buckets, "any bucket")
        )?;
        if let Some(k) = &self.keys {
            write!(f, "/{}", k.join(","))?;
        }
        if let Some(a) = &self.access_keys {
            write!(f, " for {}", a.join(","))?;
        }
        if let Some(s) = &self.sources {
            let s: Vec<String> = s.iter().map(|c| c.to_string()).collect();
            write!(f, " from {}", s.join(","))?;
        }
        if let Some(u) = &self.users {
            write!(f, " as user {}", u.join(","))?;
        }
        Ok(())
    }
}

fn describe(t: &Touch) -> String {
    let mut s = t.action.to_string();
    match (&t.bucket, &t.key) {
        (None, _) => s.push_str(" (no bucket)"),
        (Some(b), None) => s.push_str(&format!(" on {}", b.label())),
        (Some(b), Some(k)) => s.push_str(&format!(" on {}/{}", b.label(), k.label())),
    }
    s
}

impl Policy {
    /// The bucket names the statements spell out (no globs), in order and
    /// once each: the bucket label values of the request metrics.
    pub fn named_buckets(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for b in self
            .statements
            .iter()
            .flat_map(|s| s.buckets.iter().flatten())
        {
            if !b.contains(['*', '?']) && !out.contains(b) {
                out.push(b.clone());
            }
        }
        out
    }

    /// Decides a classified request from `who`.
    pub fn decide(&self, c: &Classified, source: IpAddr) -> Decision {
        let who = Principal {
            access_key: c.access_key.as_deref(),
            source,
            user: None,
        };
        self.decide_as(c, &who)
    }

    /// Decides a classified request from `who` (an sftp session names its
    /// user).
    pub fn decide_as(&self, c: &Classified, who: &Principal<'_>) -> Decision {
        let mut first_allow = None;
        for t in &c.touches {
            match self.decide_touch(t, who) {
                Ok(i) => {
                    first_allow.get_or_insert(i);
                }
                Err(d) => return d,
            }
        }
        match first_allow {
            Some(i) => Decision::Allowed(i),
            None => Decision::Denied {
                statement: None,
                reason: "the request touches nothing".into(),
            },
        }
    }

    fn decide_touch(&self, t: &Touch, who: &Principal<'_>) -> Result<usize, Decision> {
        let mut allow = None;
        for (i, s) in self.statements.iter().enumerate() {
            if !s.matches(t, who) {
                continue;
            }
            match s.effect {
                Effect::Deny => {
                    return Err(Decision::Denied {
                        statement: Some(i),
                        reason: format!(
                            "{} is denied by policy statement {} ({s}; {})",
                            describe(t),
                            i + 1,
                            s.origin
                        ),
                    })
                }
                Effect::Allow => {
                    allow.get_or_insert(i);
                }
            }
        }
        allow.ok_or_else(|| {
            let ak = match who.user {
                Some(u) => format!("user {u}"),
                None => format!("access key {}", who.access_key.unwrap_or("anonymous")),
            };
            let hint = if t.bucket.is_none() {
                " (requests without a bucket need allow_service = true)"
            } else {
                ""
            };
            Decision::Denied {
                statement: None,
                reason: format!(
                    "no policy statement allows {} for {ak} from {}{hint}",
                    describe(t),
                    who.source
                ),
            }
        })
    }

    /// Decides a connection that names only a bucket (SNI, a CONNECT
    /// tunnel): its requests are unseen.
    pub fn decide_opaque(&self, bucket: Option<&str>, source: IpAddr) -> Decision {
        let c = Classified {
            touches: vec![Touch {
                action: OPAQUE,
                bucket: bucket.map(|b| Name::Known(b.to_string())),
                key: None,
            }],
            access_key: None,
        };
        self.decide(&c, source)
    }

    /// Whether any statement looks inside requests (actions, keys or
    /// access keys), which a relay that sees only names cannot enforce.
    pub fn needs_requests(&self) -> Option<&Statement> {
        self.statements
            .iter()
            .find(|s| s.actions.is_some() || s.keys.is_some() || s.access_keys.is_some())
    }
}

/// What the policy made of one request, for the reply and the record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// The request's own action; `unknown` when it could not be classified.
    pub action: &'static str,
    /// The access key ID from the signature.
    pub access_key: Option<String>,
    /// Allowed by a statement (0-based), or denied by one or by none, with
    /// the reason.
    pub outcome: Result<usize, (Option<usize>, String)>,
}

impl Policy {
    /// Classifies request `r` from `source` and decides it.
    pub fn judge(&self, r: &super::action::Request<'_>, source: IpAddr) -> Verdict {
        let c = match super::action::classify(r) {
            Ok(c) => c,
            Err(why) => {
                return Verdict {
                    action: "unknown",
                    access_key: None,
                    outcome: Err((
                        None,
                        format!("the request's action cannot be determined: {why}"),
                    )),
                }
            }
        };
        let action = c.touches.first().map_or("unknown", |t| t.action);
        let outcome = match self.decide(&c, source) {
            Decision::Allowed(i) => Ok(i),
            Decision::Denied { statement, reason } => Err((statement, reason)),
        };
        Verdict {
            action,
            access_key: c.access_key,
            outcome,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::action::Request;
    use crate::wire::http_head::Signals;

    fn st(
        effect: Effect,
        buckets: &[&str],
        actions: &[&str],
        keys: &[&str],
        aks: &[&str],
        src: &[&str],
    ) -> Statement {
        let v = |x: &[&str]| (!x.is_empty()).then(|| x.iter().map(|s| s.to_string()).collect());
        Statement {
            effect,
            buckets: v(buckets),
            actions: v(actions),
            keys: v(keys),
            access_keys: v(aks),
            sources: (!src.is_empty())
                .then(|| src.iter().map(|c| Cidr::parse(c).unwrap()).collect()),
            users: None,
            origin: "test".into(),
        }
    }

    /// Read/write on logs-app for one key, no deletes, uploads only under
    /// uploads/ from 10.0.1.0/24.
    fn policy() -> Policy {
        Policy {
            statements: vec![
                st(
                    Effect::Allow,
                    &["logs-app"],
                    &["oss:GetObject", "oss:PutObject", "oss:ListObjects"],
                    &[],
                    &["LTAIgood*"],
                    &[],
                ),
                st(
                    Effect::Deny,
                    &["logs-*"],
                    &["oss:DeleteObject"],
                    &[],
                    &[],
                    &[],
                ),
                st(
                    Effect::Allow,
                    &["drop"],
                    &["oss:PutObject"],
                    &["uploads/*"],
                    &[],
                    &["10.0.1.0/24"],
                ),
                st(Effect::Deny, &["logs-secret"], &[], &[], &[], &[]),
            ],
        }
    }

    fn judge(
        method: &str,
        bucket: &str,
        key: &str,
        query: &str,
        auth: Option<&str>,
        copy: Option<&str>,
        from: &str,
    ) -> Result<usize, String> {
        let signals = Signals {
            authorization: auth.map(str::to_string),
            copy_source: copy.map(str::to_string),
            ..Signals::default()
        };
        let r = Request {
            method,
            bucket: Some(bucket),
            key,
            query,
            signals: &signals,
        };
        policy()
            .judge(&r, from.parse().unwrap())
            .outcome
            .map_err(|(_, why)| why)
    }

    #[test]
    fn statements_decide_as_iam_does() {
        let good = Some("OSS LTAIgood1:sig");
        let c = "10.0.0.9";
        assert_eq!(judge("GET", "logs-app", "a", "", good, None, c), Ok(0));
        assert_eq!(judge("PUT", "logs-app", "a", "", good, None, c), Ok(0));
        // Another key ID, and unsigned.
        let other = judge(
            "GET",
            "logs-app",
            "a",
            "",
            Some("OSS LTAIevil:sig"),
            None,
            c,
        )
        .unwrap_err();
        assert!(
            other.contains(
                "no policy statement allows oss:GetObject on logs-app/a for access key LTAIevil"
            ),
            "{other}"
        );
        assert!(judge("GET", "logs-app", "a", "", None, None, c)
            .unwrap_err()
            .contains("access key anonymous"));
        // A presigned URL of another key.
        assert!(judge(
            "GET",
            "logs-app",
            "a",
            "OSSAccessKeyId=LTAIevil&Expires=1&Signature=s",
            None,
            None,
            c
        )
        .is_err());
        // The explicit deny names itself.
        let del = judge("DELETE", "logs-app", "a", "", good, None, c).unwrap_err();
        assert!(
            del.contains("policy statement 2 (deny oss:DeleteObject on logs-*"),
            "{del}"
        );
        // A batch delete names its keys in the body: still denied.
        assert!(judge("POST", "logs-app", "", "delete", good, None, c)
            .unwrap_err()
            .contains("statement 2"));
        // Copy from a denied bucket into an allowed one.
        let copy = judge(
            "PUT",
            "logs-app",
            "leak.txt",
            "",
            good,
            Some("/logs-secret/passwords.txt"),
            c,
        )
        .unwrap_err();
        assert!(
            copy.contains("oss:GetObject on logs-secret/passwords.txt")
                && copy.contains("statement 4"),
            "{copy}"
        );
        // Copy within the allowed bucket.
        assert_eq!(
            judge("PUT", "logs-app", "b", "", good, Some("/logs-app/a"), c),
            Ok(0)
        );
        // Processing may save anywhere: not covered by an allowlist.
        assert!(judge("POST", "logs-app", "a.jpg", "x-oss-process", good, None, c).is_err());
        // Keys and sources.
        assert_eq!(
            judge("PUT", "drop", "uploads/x", "", None, None, "10.0.1.5"),
            Ok(2)
        );
        assert!(judge("PUT", "drop", "other/x", "", None, None, "10.0.1.5").is_err());
        assert!(judge("PUT", "drop", "uploads/x", "", None, None, "10.0.2.5").is_err());
        assert!(judge("GET", "drop", "uploads/x", "", None, None, "10.0.1.5").is_err());
    }

    #[test]
    fn opaque_connections_are_judged_on_the_bucket_alone() {
        let p = Policy {
            statements: vec![
                st(Effect::Allow, &["open"], &[], &[], &[], &[]),
                st(Effect::Allow, &["reads"], &["oss:GetObject"], &[], &[], &[]),
                st(
                    Effect::Deny,
                    &["open"],
                    &["oss:DeleteObject"],
                    &[],
                    &[],
                    &["192.0.2.0/24"],
                ),
            ],
        };
        let ip = |s: &str| s.parse().unwrap();
        assert_eq!(
            p.decide_opaque(Some("open"), ip("10.0.0.1")),
            Decision::Allowed(0)
        );
        // An action-limited allow cannot cover requests it cannot see, and a
        // deny for some action catches the tunnel.
        assert!(matches!(
            p.decide_opaque(Some("reads"), ip("10.0.0.1")),
            Decision::Denied { .. }
        ));
        assert!(matches!(
            p.decide_opaque(Some("open"), ip("192.0.2.7")),
            Decision::Denied {
                statement: Some(2),
                ..
            }
        ));
    }

    /// A statement with `users` matches only the named SSH users, and
    /// never a request that names none (an http request).
    #[test]
    fn users_match_sftp_sessions_by_name_only() {
        let mut allow = st(
            Effect::Allow,
            &["logs-app"],
            &["oss:PutObject"],
            &[],
            &[],
            &[],
        );
        allow.users = Some(vec!["ingest-*".into()]);
        let p = Policy {
            statements: vec![allow],
        };
        let c = Classified {
            touches: vec![Touch {
                action: "oss:PutObject",
                bucket: Some(Name::Known("logs-app".into())),
                key: Some(Name::Known("a.txt".into())),
            }],
            access_key: None,
        };
        let ip: IpAddr = "10.0.10.30".parse().unwrap();
        let who = |user| Principal {
            access_key: None,
            source: ip,
            user,
        };
        assert_eq!(
            p.decide_as(&c, &who(Some("ingest-7"))),
            Decision::Allowed(0)
        );
        match p.decide_as(&c, &who(Some("root"))) {
            Decision::Denied { reason, .. } => {
                assert!(reason.contains("for user root"), "{reason}")
            }
            d => panic!("{d:?}"),
        }
        assert!(matches!(p.decide(&c, ip), Decision::Denied { .. }));
    }
}
