//! The endpoint policy's action mapper: any request head that parses gets
//! an OSS action and its touches, or a reason it cannot be determined, and
//! the policy's judgement of it never panics. A request that names a copy
//! source always touches a second resource.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ossrelay::policy::action::{classify, Request};
use ossrelay::policy::statement::{Effect, Policy, Statement};
use ossrelay::wire::http_head as head;

fuzz_target!(|data: &[u8]| {
    let Some(end) = head::head_end(data) else {
        return;
    };
    let Ok(req) = head::parse_request(&data[..end]) else {
        return;
    };
    // Both addressing styles: the first path segment as the bucket, and a
    // bucket from the host with the whole path as the key.
    let path = req.path.trim_start_matches('/');
    let (first, rest) = path.split_once('/').unwrap_or((path, ""));
    let query = req.target.split_once('?').map_or("", |(_, q)| q);
    for (bucket, key) in [(Some(first), rest), (Some("bkt"), path), (None, "")] {
        let r = Request {
            method: &req.method,
            bucket,
            key,
            query,
            signals: &req.signals,
        };
        match classify(&r) {
            Ok(c) => {
                assert!(!c.touches.is_empty(), "an action for every request");
                assert!(c.touches.iter().all(|t| t.action.starts_with("oss:")));
                if req.signals.copy_source.is_some() {
                    assert!(c.touches.len() >= 2, "a copy touches its source");
                }
            }
            Err(why) => assert!(!why.is_empty(), "a denial names its reason"),
        }
        let policy = Policy {
            statements: vec![Statement {
                effect: Effect::Allow,
                buckets: Some(vec!["b*".into()]),
                actions: Some(vec!["oss:Get*".into()]),
                keys: Some(vec!["k*".into()]),
                access_keys: Some(vec!["anonymous".into(), "LTAI*".into()]),
                sources: None,
                users: None,
                origin: "fuzz".into(),
            }],
        };
        let _ = policy.judge(&r, std::net::IpAddr::from([127, 0, 0, 1]));
    }
});
