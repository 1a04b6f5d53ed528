//! Host name patterns: an exact name, or `*.suffix` for every name below
//! `suffix` (any depth, so bucket names with dots match too). Matching is
//! ASCII case-insensitive and ignores a trailing dot.

use std::fmt;

/// A parsed host pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPattern {
    /// This name only.
    Exact(String),
    /// Names ending in `.suffix` (the suffix itself does not match).
    Below(String),
}

fn normal(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

impl HostPattern {
    /// Parses `name` or `*.suffix`.
    pub fn parse(text: &str) -> Result<HostPattern, String> {
        let t = normal(text.trim());
        let (wild, name) = match t.strip_prefix("*.") {
            Some(rest) => (true, rest.to_string()),
            None => (false, t),
        };
        let label_ok = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        };
        if name.is_empty() || name.len() > 253 || !name.split('.').all(label_ok) {
            return Err(format!("{text:?} is not a host name or a *.suffix pattern"));
        }
        Ok(if wild {
            HostPattern::Below(name)
        } else {
            HostPattern::Exact(name)
        })
    }

    /// Whether `name` matches.
    pub fn matches(&self, name: &str) -> bool {
        let n = normal(name);
        match self {
            HostPattern::Exact(e) => n == *e,
            HostPattern::Below(s) => {
                n.len() > s.len() + 1
                    && n.ends_with(s.as_str())
                    && n.as_bytes()[n.len() - s.len() - 1] == b'.'
            }
        }
    }

    /// For `*.suffix`: the label(s) in front of the suffix (a bucket name).
    pub fn prefix_of<'a>(&self, name: &'a str) -> Option<&'a str> {
        match self {
            HostPattern::Below(s) if self.matches(name) => {
                let n = name.trim_end_matches('.');
                Some(&n[..n.len() - s.len() - 1])
            }
            _ => None,
        }
    }
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostPattern::Exact(e) => f.write_str(e),
            HostPattern::Below(s) => write!(f, "*.{s}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_and_wildcard() {
        let e = HostPattern::parse("OSS-ap-northeast-1-internal.aliyuncs.com.").unwrap();
        assert!(e.matches("oss-ap-northeast-1-internal.aliyuncs.com"));
        assert!(!e.matches("x.oss-ap-northeast-1-internal.aliyuncs.com"));
        let w = HostPattern::parse("*.oss-ap-northeast-1-internal.aliyuncs.com").unwrap();
        assert!(w.matches("aws-alibaba-oss.oss-ap-northeast-1-internal.aliyuncs.com."));
        assert!(w.matches("a.b.oss-ap-northeast-1-internal.aliyuncs.com"));
        assert!(!w.matches("oss-ap-northeast-1-internal.aliyuncs.com"));
        assert!(!w.matches("xoss-ap-northeast-1-internal.aliyuncs.com"));
        assert_eq!(
            w.prefix_of("new-bucket-123.oss-ap-northeast-1-internal.aliyuncs.com"),
            Some("new-bucket-123")
        );
        assert!(HostPattern::parse("*.").is_err());
        assert!(HostPattern::parse("a b.com").is_err());
    }
}
