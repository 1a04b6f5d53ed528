//! The bucket allowlist: which buckets a request may name (`buckets`,
//! `deny_buckets`, `allow_service`). Pure data and decisions; the services
//! that read requests ask it, and nothing here does I/O.

/// Which buckets may pass.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BucketPolicy {
    /// Allowed bucket globs (`*` wildcard); `None` allows every bucket.
    pub allow: Option<Vec<String>>,
    /// Denied bucket globs, checked first.
    pub deny: Vec<String>,
    /// Allow requests with no bucket (ListBuckets).
    pub allow_service: bool,
}

/// `*` matches any run of characters; everything else literally.
pub fn glob(pattern: &str, name: &str) -> bool {
    let (p, n) = (pattern.as_bytes(), name.as_bytes());
    let (mut pi, mut ni, mut star, mut mark) = (0, 0, None, 0);
    while ni < n.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some(pi);
            pi += 1;
            mark = ni;
        } else if pi < p.len() && p[pi] == n[ni] {
            pi += 1;
            ni += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ni = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&b| b == b'*')
}

impl BucketPolicy {
    /// `Err(reason)` when this policy refuses `bucket`.
    pub fn check(&self, bucket: Option<&str>) -> Result<(), String> {
        let p = self;
        let Some(b) = bucket else {
            return if p.allow_service {
                Ok(())
            } else {
                Err("requests without a bucket (ListBuckets) are not allowed (allow_service = false)".into())
            };
        };
        if let Some(g) = p.deny.iter().find(|g| glob(g, b)) {
            return Err(format!("bucket {b:?} matches deny_buckets entry {g:?}"));
        }
        match &p.allow {
            Some(list) if !list.iter().any(|g| glob(g, b)) => {
                Err(format!("bucket {b:?} is not in the buckets allowlist"))
            }
            _ => Ok(()),
        }
    }
}
