//! The `protocol = "http"` keys of a relay, validated into a [`Gateway`].

use super::raw::RawRelay;
use super::{Upstream, Validator};
use crate::gateway::{BucketPolicy, Gateway, Mode, Route, DEFAULT_HEAD_TIMEOUT};
use crate::pattern::HostPattern;

/// Bucket names and globs: what S3 and OSS allow, plus `*`.
fn bucket_glob_ok(g: &str) -> bool {
    !g.is_empty()
        && g.len() <= 63
        && g.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-.*".contains(&b))
}

impl Validator<'_> {
    pub(super) fn gateway(&mut self, i: usize, r: &RawRelay, mode: Mode) -> Option<Gateway> {
        let key = |f: &str| format!("relay[{i}].{f}");
        let before = self.problems.len();
        if mode == Mode::Sni && r.tls.is_some() {
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
        let policy = self.bucket_policy(i, r);
        let head_timeout = self
            .duration(&key("header_timeout"), &r.header_timeout)
            .unwrap_or(DEFAULT_HEAD_TIMEOUT);
        if self.problems.len() != before {
            return None;
        }
        Some(Gateway {
            mode,
            routes,
            default_route,
            policy,
            head_timeout,
        })
    }

    /// `buckets`, `deny_buckets` and `allow_service`.
    pub(super) fn bucket_policy(&mut self, i: usize, r: &RawRelay) -> BucketPolicy {
        let mut globs = |field: &str, list: &Option<Vec<toml::Spanned<String>>>| -> Vec<String> {
            let mut out = Vec::new();
            for (j, g) in list.iter().flatten().enumerate() {
                if bucket_glob_ok(g.get_ref()) {
                    out.push(g.get_ref().clone());
                } else {
                    self.problem(
                        &format!("relay[{i}].{field}[{j}]"),
                        g,
                        format!("{:?} is not a bucket name or glob (lower-case letters, digits, '-', '.', '*')", g.get_ref()),
                    );
                }
            }
            out
        };
        let allow = r.buckets.as_ref().map(|_| globs("buckets", &r.buckets));
        let deny = globs("deny_buckets", &r.deny_buckets);
        BucketPolicy {
            allow,
            deny,
            allow_service: r.allow_service.unwrap_or(false),
        }
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
