//! The endpoint policy on raw sockets: every API that names a second bucket
//! (copy, part copy, processing that saves elsewhere, replication, logging,
//! inventory) is refused unless every bucket is allowed, and statements
//! limit actions, keys, access keys and client addresses, in http and
//! forward-proxy relays. The upstream records every byte, so "never
//! reaches the upstream" is checked, not assumed.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::*;

async fn gateway(name: &str, up: SocketAddr, policy: &str) -> Relay {
    let toml = format!(
        "[[relay]]\nname = \"{name}\"\nprotocol = \"http\"\nlisten = \"127.0.0.1:0\"\nroutes = [{{ host = \"*.oss.test\", upstream = \"{up}\" }}, {{ host = \"oss.test\", upstream = \"{up}\" }}]\n{policy}\n"
    );
    Relay::start(relay_config(&toml), system()).await
}

/// Sends one request and returns the whole reply (the relay closes after a
/// refusal; an allowed one is followed by our half-close).
async fn exchange(addr: SocketAddr, data: &str) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(data.as_bytes()).await.unwrap();
    let _ = s.shutdown().await;
    let mut got = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut got)).await;
    String::from_utf8_lossy(&got).into_owned()
}

/// The issue's own bypass and every other API that names a second bucket,
/// under `buckets = ["logs-app"]` and `deny_buckets = ["logs-secret"]`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_api_that_names_a_second_bucket_is_checked_on_both() {
    let (up, seen) = recording_upstream(Reply::HttpOk).await;
    let relay = gateway(
        "t-pol-second",
        up,
        "buckets = [\"logs-app\"]\ndeny_buckets = [\"logs-secret\"]",
    )
    .await;
    let h = "Host: logs-app.oss.test\r\n";
    let cases: &[(&str, String, &str)] = &[
        (
            "boto3 copy_object from the denied bucket",
            format!("PUT /leak.txt HTTP/1.1\r\n{h}x-amz-copy-source: logs-secret/passwords.txt\r\nContent-Length: 0\r\n\r\n"),
            "oss:GetObject on logs-secret/passwords.txt is denied by policy statement 1",
        ),
        (
            "OSS CopyObject",
            format!("PUT /leak.txt HTTP/1.1\r\n{h}x-oss-copy-source: /logs-secret/passwords.txt\r\nContent-Length: 0\r\n\r\n"),
            "logs-secret/passwords.txt",
        ),
        (
            "copy with a version",
            format!("PUT /leak.txt HTTP/1.1\r\n{h}x-amz-copy-source: /logs-secret/p%20w.txt?versionId=7\r\nContent-Length: 0\r\n\r\n"),
            "logs-secret/p w.txt",
        ),
        (
            "UploadPartCopy",
            format!("PUT /big?partNumber=1&uploadId=u1 HTTP/1.1\r\n{h}x-oss-copy-source: /logs-secret/big\r\nx-oss-copy-source-range: bytes=0-9\r\nContent-Length: 0\r\n\r\n"),
            "logs-secret/big",
        ),
        (
            "copy from a bucket in no list",
            format!("PUT /x HTTP/1.1\r\n{h}x-oss-copy-source: /elsewhere/x\r\nContent-Length: 0\r\n\r\n"),
            "no policy statement allows oss:GetObject on elsewhere/x",
        ),
        (
            "image processing saved elsewhere (sys/saveas)",
            format!("POST /a.jpg?x-oss-process HTTP/1.1\r\n{h}Content-Length: 57\r\n\r\nx-oss-process=image/resize,w_100|sys/saveas,o_YQ,b_ZXZpbA"),
            "sys/saveas",
        ),
        (
            "asynchronous processing",
            format!("POST /a.doc?x-oss-async-process HTTP/1.1\r\n{h}Content-Length: 0\r\n\r\n"),
            "sys/saveas",
        ),
        (
            "PutBucketReplication",
            format!("POST /?replication&comp=add HTTP/1.1\r\n{h}Content-Length: 0\r\n\r\n"),
            "oss:PutObject on ?(the request body)",
        ),
        (
            "PutBucketLogging",
            format!("PUT /?logging HTTP/1.1\r\n{h}Content-Length: 0\r\n\r\n"),
            "?(the request body)",
        ),
        (
            "PutBucketInventory",
            format!("PUT /?inventory&inventoryId=i1 HTTP/1.1\r\n{h}Content-Length: 0\r\n\r\n"),
            "?(the request body)",
        ),
    ];
    for (what, req, why) in cases {
        let r = exchange(relay.addr, req).await;
        assert!(
            r.starts_with("HTTP/1.1 403") && r.contains("<Code>AccessDenied</Code>"),
            "{what}: {r}"
        );
        assert!(
            r.contains(why) && r.contains("(ossrelay endpoint policy)"),
            "{what}: want {why:?} in {r}"
        );
    }
    // Two copy sources: an upstream could read either one.
    let r = exchange(relay.addr, &format!("PUT /x HTTP/1.1\r\n{h}x-oss-copy-source: /logs-app/a\r\nx-amz-copy-source: logs-secret/a\r\nContent-Length: 0\r\n\r\n")).await;
    assert!(r.starts_with("HTTP/1.1 400"), "{r}");
    assert!(
        seen.lock().unwrap().is_empty(),
        "a refused request reached the upstream: {}",
        String::from_utf8_lossy(&seen.lock().unwrap())
    );
    // A copy inside the allowed bucket goes through byte for byte.
    let ok = format!(
        "PUT /b.txt HTTP/1.1\r\n{h}x-oss-copy-source: /logs-app/a.txt\r\nContent-Length: 0\r\n\r\n"
    );
    let r = exchange(relay.addr, &ok).await;
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    assert_eq!(seen.lock().unwrap().as_slice(), ok.as_bytes());
    relay.shutdown().await;
}

const STATEMENTS: &str = r#"allow_service = true

[[relay.policy]]
effect = "allow"
buckets = ["logs-*"]
actions = ["oss:GetObject", "oss:PutObject", "oss:ListObjects"]
access_keys = ["LTAIgood*", "STS.*"]

[[relay.policy]]
effect = "deny"
buckets = ["logs-*"]
actions = ["oss:DeleteObject"]

[[relay.policy]]
effect = "allow"
buckets = ["drop"]
actions = ["oss:PutObject"]
keys = ["uploads/*"]
access_keys = ["anonymous"]
sources = ["127.0.0.0/8"]

[[relay.policy]]
effect = "allow"
buckets = ["drop"]
actions = ["oss:GetObject"]
sources = ["192.0.2.0/24"]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statements_limit_actions_keys_access_keys_and_sources() {
    let (up, seen) = recording_upstream(Reply::HttpOk).await;
    let relay = gateway("t-pol-stmts", up, STATEMENTS).await;
    let v4 = |ak: &str| {
        format!("Authorization: OSS4-HMAC-SHA256 Credential={ak}/20261204/cn-hangzhou/oss/aliyun_v4_request,Signature=00\r\n")
    };
    let cases: Vec<(String, u16, &str)> = vec![
        (format!("GET /a HTTP/1.1\r\nHost: logs-app.oss.test\r\n{}\r\n", v4("LTAIgood1")), 200, ""),
        ("PUT /a HTTP/1.1\r\nHost: logs-app.oss.test\r\nAuthorization: OSS LTAIgood1:c2ln\r\nContent-Length: 1\r\n\r\nx".to_string(), 200, ""),
        ("GET /a HTTP/1.1\r\nHost: logs-app.oss.test\r\nAuthorization: AWS4-HMAC-SHA256 Credential=STS.tmp/20261204/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=00\r\n\r\n".to_string(), 200, ""),
        (format!("GET /a HTTP/1.1\r\nHost: logs-app.oss.test\r\n{}\r\n", v4("LTAIevil")), 403, "for access key LTAIevil"),
        ("GET /a?OSSAccessKeyId=LTAIevil&Expires=9&Signature=s HTTP/1.1\r\nHost: logs-app.oss.test\r\n\r\n".into(), 403, "LTAIevil"),
        ("GET /a?x-oss-credential=LTAIevil%2F20261204%2Fcn%2Foss%2Faliyun_v4_request&x-oss-signature=s HTTP/1.1\r\nHost: logs-app.oss.test\r\n\r\n".into(), 403, "LTAIevil"),
        ("GET /a HTTP/1.1\r\nHost: logs-app.oss.test\r\n\r\n".into(), 403, "access key anonymous"),
        (format!("DELETE /a HTTP/1.1\r\nHost: logs-app.oss.test\r\n{}\r\n", v4("LTAIgood1")), 403, "policy statement 2 (deny oss:DeleteObject on logs-*"),
        (format!("PUT /a?acl HTTP/1.1\r\nHost: logs-app.oss.test\r\n{}Content-Length: 0\r\n\r\n", v4("LTAIgood1")), 403, "oss:PutObjectAcl"),
        ("PUT /uploads/x HTTP/1.1\r\nHost: drop.oss.test\r\nContent-Length: 0\r\n\r\n".into(), 200, ""),
        ("PUT /elsewhere/x HTTP/1.1\r\nHost: drop.oss.test\r\nContent-Length: 0\r\n\r\n".into(), 403, "oss:PutObject on drop/elsewhere/x"),
        ("GET /uploads/x HTTP/1.1\r\nHost: drop.oss.test\r\n\r\n".into(), 403, "from 127.0.0.1"),
        ("GET /a?cname HTTP/1.1\r\nHost: logs-app.oss.test\r\n\r\n".into(), 403, "cannot be determined: unknown query parameter"),
        ("GET / HTTP/1.1\r\nHost: oss.test\r\n\r\n".into(), 200, ""),
    ];
    let mut forwarded = 0;
    for (req, status, why) in &cases {
        let r = exchange(relay.addr, req).await;
        assert!(
            r.starts_with(&format!("HTTP/1.1 {status}")) && r.contains(why),
            "{req}\n=> {r}"
        );
        if *status == 200 {
            forwarded += req.len();
        }
    }
    assert_eq!(
        seen.lock().unwrap().len(),
        forwarded,
        "only allowed requests went up"
    );
    // The record of a denial names the action, key ID, bucket, key and
    // the deciding statement.
    let denied = records("t-pol-stmts")
        .into_iter()
        .find(|r| r["event"] == "request" && r["method"] == "DELETE")
        .expect("a record of the denied DELETE");
    assert_eq!(
        (
            denied["action"].as_str(),
            denied["access_key"].as_str(),
            denied["bucket"].as_str(),
            denied["key"].as_str(),
            denied["statement"].as_u64(),
            denied["status"].as_u64()
        ),
        (
            Some("oss:DeleteObject"),
            Some("LTAIgood1"),
            Some("logs-app"),
            Some("a"),
            Some(2),
            Some(403)
        ),
        "{denied}"
    );
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forward_proxy_applies_the_statements_per_request() {
    let (up, seen) = recording_upstream(Reply::HttpOk).await;
    let port = up.port();
    let toml = format!(
        "[[relay]]\nname = \"t-pol-proxy\"\nprotocol = \"proxy\"\nlisten = \"127.0.0.1:0\"\nproxy_allow = [\"*.oss.test {port}\"]\n{STATEMENTS}"
    );
    let names = ossrelay::resolve::StaticResolver::new();
    for n in ["logs-app.oss.test", "logs-secret.oss.test"] {
        names.set(n, vec!["127.0.0.1".parse().unwrap()]);
    }
    let relay = Relay::start(relay_config(&toml), Arc::new(names)).await;
    let url = |b: &str, rest: &str| format!("http://{b}.oss.test:{port}/{rest}");
    let auth = "Authorization: OSS LTAIgood1:c2ln\r\n";
    let ok = format!(
        "GET {} HTTP/1.1\r\nHost: logs-app.oss.test:{port}\r\n{auth}\r\n",
        url("logs-app", "a")
    );
    let r = exchange(relay.addr, &ok).await;
    assert!(r.contains("200 OK"), "{r}");
    for (req, why) in [
        (
            format!("DELETE {} HTTP/1.1\r\nHost: logs-app.oss.test:{port}\r\n{auth}\r\n", url("logs-app", "a")),
            "policy statement 2",
        ),
        (
            format!("PUT {} HTTP/1.1\r\nHost: logs-app.oss.test:{port}\r\n{auth}x-oss-copy-source: /drop/uploads/x\r\nContent-Length: 0\r\n\r\n", url("logs-app", "b")),
            "oss:GetObject on drop/uploads/x",
        ),
        (
            format!("GET {} HTTP/1.1\r\nHost: logs-app.oss.test:{port}\r\nAuthorization: OSS LTAIevil:c2ln\r\n\r\n", url("logs-app", "a")),
            "LTAIevil",
        ),
    ] {
        let r = exchange(relay.addr, &req).await;
        assert!(
            r.starts_with("HTTP/1.1 403") && r.contains(why) && r.contains("ossrelay endpoint policy"),
            "{req}\n=> {r}"
        );
    }
    // A CONNECT tunnel hides its requests: an action-limited allow cannot
    // cover it, so it is refused before anything is dialled.
    let r = exchange(
        relay.addr,
        &format!(
            "CONNECT logs-app.oss.test:{port} HTTP/1.1\r\nHost: logs-app.oss.test:{port}\r\n\r\n"
        ),
    )
    .await;
    assert!(
        r.starts_with("HTTP/1.1 403") || r.starts_with("HTTP/1.0 403"),
        "{r}"
    );
    let up = String::from_utf8_lossy(&seen.lock().unwrap()).into_owned();
    assert!(
        up.starts_with("GET ") && up.matches(" HTTP/1.1\r\n").count() == 1,
        "only the allowed GET went up: {up}"
    );
    relay.shutdown().await;
}
