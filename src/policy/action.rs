//! What a request does, in OSS's own RAM terms: its action (`oss:GetObject`)
//! and every bucket and key it touches, from the method, the sub-resource
//! query parameters and the headers. A server-side copy touches its source
//! too (`oss:GetObject` there), and so does a symlink's target. Where the
//! second bucket or the keys sit in a body the relay does not read
//! (processing with `sys/saveas`, replication, logging, inventory, batch
//! delete, form uploads), the touch says so and the policy treats it as
//! "could be anything". Pure data: nothing here does I/O.

use crate::wire::http_head::{has_dot_segment, percent_decode, Signals};

/// A bucket or key, or why the relay cannot know it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Name {
    /// Named in the host, the path or a header.
    Known(String),
    /// Named in a body the relay streams without reading; says where.
    Unknown(&'static str),
}

impl Name {
    fn known(s: &str) -> Name {
        Name::Known(s.to_string())
    }

    /// The name, or `?` with where it is.
    pub fn label(&self) -> String {
        match self {
            Name::Known(s) => s.clone(),
            Name::Unknown(why) => format!("?({why})"),
        }
    }
}

/// One action on one resource. A request has one touch per resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Touch {
    /// OSS's RAM action name, `oss:GetObject`; `opaque` for a tunnel whose
    /// requests the relay cannot see.
    pub action: &'static str,
    /// `None` for service-level requests (ListBuckets).
    pub bucket: Option<Name>,
    /// `None` for bucket-level actions.
    pub key: Option<Name>,
}

/// The action of a CONNECT tunnel or SNI-routed connection: the relay sees
/// the bucket and nothing of the requests inside.
pub const OPAQUE: &str = "opaque";

/// What the relay could read from one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Classified {
    /// The request's own touch first, then the resources it reads from.
    pub touches: Vec<Touch>,
    /// The access key ID from the signature; `None` when unsigned.
    pub access_key: Option<String>,
}

/// The parts of a request that decide its action.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// The method, as sent.
    pub method: &'a str,
    /// The bucket from the host or the path.
    pub bucket: Option<&'a str>,
    /// The object key as it appears in the path (percent-encoded).
    pub key: &'a str,
    /// The query string, without `?`.
    pub query: &'a str,
    /// The headers that name resources or keys.
    pub signals: &'a Signals,
}

/// Query parameters that are not sub-resources: listing and paging,
/// response overrides, multipart numbering, and the signature's own.
const PLAIN_PARAMS: &[&str] = &[
    "prefix",
    "delimiter",
    "marker",
    "max-keys",
    "encoding-type",
    "list-type",
    "continuation-token",
    "start-after",
    "fetch-owner",
    "key-marker",
    "upload-id-marker",
    "version-id-marker",
    "max-uploads",
    "partNumber",
    "max-parts",
    "part-number-marker",
    "versionId",
    "position",
    "comp",
    "inventoryId",
    "rule-id",
    "wormExtend",
    "x-id",
    "select-type",
    "response-content-type",
    "response-content-language",
    "response-expires",
    "response-cache-control",
    "response-content-disposition",
    "response-content-encoding",
    "OSSAccessKeyId",
    "Expires",
    "Signature",
    "security-token",
    "x-oss-security-token",
    "x-oss-signature-version",
    "x-oss-credential",
    "x-oss-date",
    "x-oss-expires",
    "x-oss-signature",
    "x-oss-additional-headers",
    "x-oss-traffic-limit",
    "AWSAccessKeyId",
    "X-Amz-Algorithm",
    "X-Amz-Credential",
    "X-Amz-Date",
    "X-Amz-Expires",
    "X-Amz-SignedHeaders",
    "X-Amz-Signature",
    "X-Amz-Security-Token",
    "X-Amz-Content-Sha256",
    "x-amz-checksum-mode",
];

/// Bucket-level sub-resources and the action per method: GET (and HEAD),
/// PUT, DELETE, POST. `None`: the method is not an API on it.
type Row = (&'static str, [Option<&'static str>; 4]);

const BUCKET_SUBS: &[Row] = &[
    (
        "acl",
        [
            Some("oss:GetBucketAcl"),
            Some("oss:PutBucketAcl"),
            None,
            None,
        ],
    ),
    (
        "cors",
        [
            Some("oss:GetBucketCors"),
            Some("oss:PutBucketCors"),
            Some("oss:DeleteBucketCors"),
            None,
        ],
    ),
    (
        "lifecycle",
        [
            Some("oss:GetBucketLifecycle"),
            Some("oss:PutBucketLifecycle"),
            Some("oss:DeleteBucketLifecycle"),
            None,
        ],
    ),
    (
        "policy",
        [
            Some("oss:GetBucketPolicy"),
            Some("oss:PutBucketPolicy"),
            Some("oss:DeleteBucketPolicy"),
            None,
        ],
    ),
    (
        "tagging",
        [
            Some("oss:GetBucketTagging"),
            Some("oss:PutBucketTagging"),
            Some("oss:DeleteBucketTagging"),
            None,
        ],
    ),
    (
        "website",
        [
            Some("oss:GetBucketWebsite"),
            Some("oss:PutBucketWebsite"),
            Some("oss:DeleteBucketWebsite"),
            None,
        ],
    ),
    (
        "logging",
        [
            Some("oss:GetBucketLogging"),
            Some("oss:PutBucketLogging"),
            Some("oss:DeleteBucketLogging"),
            None,
        ],
    ),
    (
        "referer",
        [
            Some("oss:GetBucketReferer"),
            Some("oss:PutBucketReferer"),
            None,
            None,
        ],
    ),
    (
        "encryption",
        [
            Some("oss:GetBucketEncryption"),
            Some("oss:PutBucketEncryption"),
            Some("oss:DeleteBucketEncryption"),
            None,
        ],
    ),
    (
        "versioning",
        [
            Some("oss:GetBucketVersioning"),
            Some("oss:PutBucketVersioning"),
            None,
            None,
        ],
    ),
    (
        "versions",
        [Some("oss:ListObjectVersions"), None, None, None],
    ),
    (
        "location",
        [Some("oss:GetBucketLocation"), None, None, None],
    ),
    ("bucketInfo", [Some("oss:GetBucketInfo"), None, None, None]),
    ("stat", [Some("oss:GetBucketStat"), None, None, None]),
    (
        "uploads",
        [Some("oss:ListMultipartUploads"), None, None, None],
    ),
    ("delete", [None, None, None, Some("oss:DeleteObject")]),
    (
        "replication",
        [Some("oss:GetBucketReplication"), None, None, None],
    ),
    (
        "replicationLocation",
        [Some("oss:GetBucketReplicationLocation"), None, None, None],
    ),
    (
        "replicationProgress",
        [Some("oss:GetBucketReplicationProgress"), None, None, None],
    ),
    (
        "inventory",
        [
            Some("oss:GetBucketInventory"),
            Some("oss:PutBucketInventory"),
            Some("oss:DeleteBucketInventory"),
            None,
        ],
    ),
    (
        "worm",
        [
            Some("oss:GetBucketWorm"),
            None,
            Some("oss:AbortBucketWorm"),
            Some("oss:InitiateBucketWorm"),
        ],
    ),
    ("wormId", [None, None, None, Some("oss:CompleteBucketWorm")]),
    (
        "requestPayment",
        [
            Some("oss:GetBucketRequestPayment"),
            Some("oss:PutBucketRequestPayment"),
            None,
            None,
        ],
    ),
];

/// Object-level sub-resources, as [`BUCKET_SUBS`].
const OBJECT_SUBS: &[Row] = &[
    (
        "acl",
        [
            Some("oss:GetObjectAcl"),
            Some("oss:PutObjectAcl"),
            None,
            None,
        ],
    ),
    (
        "tagging",
        [
            Some("oss:GetObjectTagging"),
            Some("oss:PutObjectTagging"),
            Some("oss:DeleteObjectTagging"),
            None,
        ],
    ),
    (
        "symlink",
        [Some("oss:GetObject"), Some("oss:PutObject"), None, None],
    ),
    ("objectMeta", [Some("oss:GetObject"), None, None, None]),
    ("append", [None, None, None, Some("oss:PutObject")]),
    ("uploads", [None, None, None, Some("oss:PutObject")]),
    (
        "uploadId",
        [
            Some("oss:ListParts"),
            Some("oss:PutObject"),
            Some("oss:AbortMultipartUpload"),
            Some("oss:PutObject"),
        ],
    ),
    ("restore", [None, None, None, Some("oss:RestoreObject")]),
    (
        "x-oss-process",
        [
            Some("oss:GetObject"),
            None,
            None,
            Some("oss:PostProcessTask"),
        ],
    ),
    (
        "x-oss-async-process",
        [None, None, None, Some("oss:PostProcessTask")],
    ),
    ("select", [None, None, None, Some("oss:GetObject")]),
    ("attributes", [Some("oss:GetObject"), None, None, None]),
];

fn method_index(method: &str) -> Option<usize> {
    match method {
        "GET" | "HEAD" => Some(0),
        "PUT" => Some(1),
        "DELETE" => Some(2),
        "POST" => Some(3),
        _ => None,
    }
}

/// A query string's parameter names and values, raw.
fn params(query: &str) -> impl Iterator<Item = (&str, &str)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| p.split_once('=').unwrap_or((p, "")))
}

fn decode(raw: &str) -> String {
    String::from_utf8_lossy(&percent_decode(raw.as_bytes())).into_owned()
}

/// Classifies one request; `Err` names what could not be determined, and
/// the policy then denies the request.
pub fn classify(r: &Request<'_>) -> Result<Classified, String> {
    let access_key = access_key(r)?;
    let Some(m) = method_index(r.method) else {
        return Err(format!("method {} is not an OSS API", r.method));
    };
    let mut sub: Option<(&str, &str)> = None;
    for (name, value) in params(r.query) {
        let name_text = decode(name);
        if PLAIN_PARAMS
            .iter()
            .any(|p| p.eq_ignore_ascii_case(&name_text))
        {
            continue;
        }
        // The sub-resource names above, found by their decoded name.
        let known = BUCKET_SUBS
            .iter()
            .chain(OBJECT_SUBS)
            .map(|(n, _)| *n)
            .find(|n| *n == name_text);
        let Some(known) = known else {
            return Err(format!("unknown query parameter {name_text:?}"));
        };
        if let Some((first, _)) = sub {
            if first != known {
                return Err(format!("two sub-resources, {first:?} and {known:?}"));
            }
        }
        sub = Some((known, value));
    }
    let signals = r.signals;
    let mut touches = Vec::with_capacity(2);
    let Some(bucket) = r.bucket else {
        if m == 0 && sub.is_none() && r.key.is_empty() {
            touches.push(Touch {
                action: "oss:ListBuckets",
                bucket: None,
                key: None,
            });
            return Ok(Classified {
                touches,
                access_key,
            });
        }
        return Err("a request without a bucket other than ListBuckets".into());
    };
    let b = || Some(Name::known(bucket));
    if r.key.is_empty() {
        let action = match sub {
            None => match (r.method, signals.form_upload) {
                ("GET" | "HEAD", _) => "oss:ListObjects",
                ("PUT", _) => "oss:PutBucket",
                ("DELETE", _) => "oss:DeleteBucket",
                // PostObject: the key is a form field.
                ("POST", true) => {
                    touches.push(Touch {
                        action: "oss:PutObject",
                        bucket: b(),
                        key: Some(Name::Unknown("a form field")),
                    });
                    return Ok(Classified {
                        touches,
                        access_key,
                    });
                }
                _ => return Err(format!("{} on a bucket is not an OSS API", r.method)),
            },
            Some(("replication", _)) if r.method == "POST" => {
                let comp = params(r.query).find(|(n, _)| *n == "comp").map(|(_, v)| v);
                match comp {
                    Some("add") => "oss:PutBucketReplication",
                    Some("delete") => "oss:DeleteBucketReplication",
                    _ => return Err("POST ?replication without comp=add or comp=delete".into()),
                }
            }
            Some(("wormId", _)) if r.method == "POST" && has_param(r.query, "wormExtend") => {
                "oss:ExtendBucketWorm"
            }
            Some((name, _)) => lookup(BUCKET_SUBS, name, m, r.method, "bucket")?,
        };
        let key = (action == "oss:DeleteObject").then_some(Name::Unknown("the request body"));
        touches.push(Touch {
            action,
            bucket: b(),
            key,
        });
        // These name a destination bucket in their XML body.
        if matches!(
            action,
            "oss:PutBucketReplication" | "oss:PutBucketLogging" | "oss:PutBucketInventory"
        ) {
            touches.push(Touch {
                action: "oss:PutObject",
                bucket: Some(Name::Unknown("the request body")),
                key: Some(Name::Unknown("the request body")),
            });
        }
        return Ok(Classified {
            touches,
            access_key,
        });
    }
    let key = decode(r.key);
    let action = match sub {
        None => match r.method {
            "GET" | "HEAD" => "oss:GetObject",
            "PUT" => "oss:PutObject",
            "DELETE" => "oss:DeleteObject",
            _ => return Err(format!("{} on an object is not an OSS API", r.method)),
        },
        // A select reads; any other processing by POST may save.
        Some(("x-oss-process", v)) if r.method == "POST" && is_select(v) => "oss:GetObject",
        Some((name, _)) => lookup(OBJECT_SUBS, name, m, r.method, "object")?,
    };
    // A version of an object is its own resource in RAM: OSS checks the
    // version action as well as the plain one.
    let version = has_param(r.query, "versionId")
        .then(|| version_action(action))
        .flatten();
    touches.push(Touch {
        action,
        bucket: b(),
        key: Some(Name::Known(key.clone())),
    });
    if let Some(v) = version {
        touches.push(Touch {
            action: v,
            bucket: b(),
            key: Some(Name::Known(key.clone())),
        });
    }
    // A write that sets tags (`x-oss-tagging`) needs the tagging action
    // too, as on OSS.
    if signals.tagging && action == "oss:PutObject" {
        touches.push(Touch {
            action: "oss:PutObjectTagging",
            bucket: b(),
            key: Some(Name::Known(key)),
        });
    }
    // A copy (object or part) reads its source.
    if let Some(src) = &signals.copy_source {
        if r.method != "PUT" {
            return Err("a copy source header on a request other than PUT".into());
        }
        let (source, versioned) = copy_source(src)?;
        let version = versioned.then(|| Touch {
            action: "oss:GetObjectVersion",
            ..source.clone()
        });
        touches.push(source);
        touches.extend(version);
    }
    match sub {
        // A symlink reads its target (in the same bucket) when fetched.
        Some(("symlink", _)) if r.method == "PUT" => {
            let target = signals
                .symlink_target
                .as_deref()
                .ok_or("PUT ?symlink without x-oss-symlink-target")?;
            touches.push(Touch {
                action: "oss:GetObject",
                bucket: b(),
                key: Some(Name::Known(decode(target))),
            });
        }
        // Processing that is not a select may save its output anywhere
        // (`sys/saveas,b_…`), and asynchronous processing always does.
        Some(("x-oss-process", v)) if r.method == "POST" && !is_select(v) => {
            touches.push(saveas());
        }
        Some(("x-oss-async-process", _)) => {
            touches.push(Touch {
                action: "oss:GetObject",
                bucket: b(),
                key: Some(Name::known(&decode(r.key))),
            });
            touches.push(saveas());
        }
        _ => {}
    }
    Ok(Classified {
        touches,
        access_key,
    })
}

fn has_param(query: &str, name: &str) -> bool {
    params(query).any(|(n, _)| n == name)
}

/// The RAM action for the same operation on a given version.
fn version_action(action: &str) -> Option<&'static str> {
    Some(match action {
        "oss:GetObject" => "oss:GetObjectVersion",
        "oss:DeleteObject" => "oss:DeleteObjectVersion",
        "oss:GetObjectAcl" => "oss:GetObjectVersionAcl",
        "oss:PutObjectAcl" => "oss:PutObjectVersionAcl",
        "oss:GetObjectTagging" => "oss:GetObjectVersionTagging",
        "oss:PutObjectTagging" => "oss:PutObjectVersionTagging",
        "oss:DeleteObjectTagging" => "oss:DeleteObjectVersionTagging",
        "oss:RestoreObject" => "oss:RestoreObjectVersion",
        _ => return None,
    })
}

/// Every action the mapper can produce, for config validation.
fn all_actions() -> impl Iterator<Item = &'static str> {
    const EXTRA: &[&str] = &[
        "oss:ListBuckets",
        "oss:ListObjects",
        "oss:PutBucket",
        "oss:DeleteBucket",
        "oss:GetObject",
        "oss:PutObject",
        "oss:DeleteObject",
        "oss:PutBucketReplication",
        "oss:DeleteBucketReplication",
        "oss:ExtendBucketWorm",
        "oss:GetObjectVersion",
        "oss:DeleteObjectVersion",
        "oss:GetObjectVersionAcl",
        "oss:PutObjectVersionAcl",
        "oss:GetObjectVersionTagging",
        "oss:PutObjectVersionTagging",
        "oss:DeleteObjectVersionTagging",
        "oss:RestoreObjectVersion",
    ];
    BUCKET_SUBS
        .iter()
        .chain(OBJECT_SUBS)
        .flat_map(|(_, a)| a.iter().flatten().copied())
        .chain(EXTRA.iter().copied())
}

/// Why `action` (from a config) matches no action the relay can see:
/// `*`, `oss:*` and globs that match at least one are fine.
pub fn action_problem(action: &str) -> Option<String> {
    if action == "*" || all_actions().any(|a| super::bucket::glob(action, a)) {
        return None;
    }
    let lower = action.to_ascii_lowercase();
    let near = all_actions().find(|a| {
        let a = a.to_ascii_lowercase();
        a == lower || a.trim_start_matches("oss:") == lower.trim_start_matches("s3:")
    });
    Some(match near {
        Some(n) => format!("{action:?} is not an OSS RAM action; did you mean {n:?}?"),
        None if action.starts_with("s3:") => format!(
            "{action:?} is an AWS action; use OSS's RAM names, e.g. \"oss:GetObject\" (docs/GUIDE.md has the table)"
        ),
        None => format!(
            "{action:?} is not an OSS RAM action the relay can tell apart, e.g. \"oss:GetObject\" (docs/GUIDE.md has the table)"
        ),
    })
}

fn is_select(v: &str) -> bool {
    let v = decode(v);
    v.starts_with("csv/select")
        || v.starts_with("json/select")
        || v.starts_with("csv/meta")
        || v.starts_with("json/meta")
}

/// Where processing output may be saved: a bucket and key in the body.
fn saveas() -> Touch {
    Touch {
        action: "oss:PutObject",
        bucket: Some(Name::Unknown("the processing body (sys/saveas)")),
        key: Some(Name::Unknown("the processing body (sys/saveas)")),
    }
}

fn lookup(
    table: &[Row],
    name: &str,
    m: usize,
    method: &str,
    level: &str,
) -> Result<&'static str, String> {
    table
        .iter()
        .find(|(n, _)| *n == name)
        .and_then(|(_, actions)| actions[m])
        .ok_or_else(|| format!("{method} ?{name} on an {level} is not an OSS API"))
}

/// `x-oss-copy-source: /bucket/key` or `x-amz-copy-source: bucket/key`
/// (either with an optional `?versionId=`), percent-encoded.
/// Returns the source's touch and whether it names a version.
fn copy_source(raw: &str) -> Result<(Touch, bool), String> {
    let src = raw.trim();
    let (src, versioned) = match src.split_once('?') {
        Some((s, v)) if v.starts_with("versionId=") => (s, true),
        Some(_) => return Err(format!("copy source {raw:?} has an unknown query")),
        None => (src, false),
    };
    if src.starts_with("arn:") {
        let touch = Touch {
            action: "oss:GetObject",
            bucket: Some(Name::Unknown("an access point ARN")),
            key: Some(Name::Unknown("an access point ARN")),
        };
        return Ok((touch, versioned));
    }
    let path = src.strip_prefix('/').unwrap_or(src);
    if has_dot_segment(&format!("/{path}")) {
        return Err(format!("copy source {raw:?} has '.' or '..' segments"));
    }
    let (bucket, key) = path
        .split_once('/')
        .filter(|(b, k)| !b.is_empty() && !k.is_empty())
        .ok_or_else(|| format!("copy source {raw:?} is not /bucket/key"))?;
    let touch = Touch {
        action: "oss:GetObject",
        bucket: Some(Name::Known(decode(bucket))),
        key: Some(Name::Known(decode(key))),
    };
    Ok((touch, versioned))
}

/// The access key ID from whichever signature the request carries: the
/// Authorization header (OSS V1 and V4, AWS V2 and V4) or a presigned URL's
/// query. Two different keys in one request are refused.
fn access_key(r: &Request<'_>) -> Result<Option<String>, String> {
    let mut found: Option<String> = None;
    let mut note = |ak: String| -> Result<(), String> {
        if ak.is_empty() {
            return Err("an empty access key ID".into());
        }
        match &found {
            Some(prev) if *prev != ak => Err(format!("two access key IDs, {prev:?} and {ak:?}")),
            _ => {
                found = Some(ak);
                Ok(())
            }
        }
    };
    if let Some(auth) = &r.signals.authorization {
        let auth = auth.trim();
        let (scheme, rest) = auth.split_once(' ').unwrap_or((auth, ""));
        let rest = rest.trim();
        let ak = match scheme {
            "OSS" | "AWS" => rest.split_once(':').map(|(ak, _)| ak.to_string()),
            "OSS4-HMAC-SHA256" | "AWS4-HMAC-SHA256" => rest
                .split(',')
                .find_map(|p| p.trim().strip_prefix("Credential="))
                .and_then(|c| c.split('/').next())
                .map(str::to_string),
            _ => return Err(format!("unknown Authorization scheme {scheme:?}")),
        };
        note(ak.ok_or("an Authorization header without an access key ID")?)?;
    }
    for (name, value) in params(r.query) {
        let v = decode(value);
        match name {
            "OSSAccessKeyId" | "AWSAccessKeyId" => note(v)?,
            "x-oss-credential" | "X-Amz-Credential" => {
                note(v.split('/').next().unwrap_or_default().to_string())?
            }
            _ => {}
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sig(auth: Option<&str>, copy: Option<&str>) -> Signals {
        Signals {
            authorization: auth.map(str::to_string),
            copy_source: copy.map(str::to_string),
            ..Signals::default()
        }
    }

    #[test]
    fn access_keys_come_from_every_signature_form() {
        let cases = [
            (Some("OSS LTAIa:c2ln"), "", Some("LTAIa")),
            (Some("AWS AKIAb:c2ln"), "", Some("AKIAb")),
            (
                Some("OSS4-HMAC-SHA256 Credential=LTAIc/20260101/cn-hangzhou/oss/aliyun_v4_request,Signature=ab"),
                "",
                Some("LTAIc"),
            ),
            (
                Some("AWS4-HMAC-SHA256 Credential=STS.d/20260101/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=ab"),
                "",
                Some("STS.d"),
            ),
            (None, "OSSAccessKeyId=LTAIe&Expires=1&Signature=x", Some("LTAIe")),
            (None, "x-oss-credential=LTAIf%2F20260101%2Fcn%2Foss%2Faliyun_v4_request", Some("LTAIf")),
            (None, "X-Amz-Credential=AKIAg%2F20260101%2Fus%2Fs3%2Faws4_request", Some("AKIAg")),
            (None, "AWSAccessKeyId=AKIAh&Expires=1&Signature=x", Some("AKIAh")),
            (None, "", None),
        ];
        for (auth, query, want) in cases {
            let s = sig(auth, None);
            let r = Request {
                method: "GET",
                bucket: Some("b"),
                key: "k",
                query,
                signals: &s,
            };
            let got = classify(&r).unwrap().access_key;
            assert_eq!(got.as_deref(), want, "{auth:?} {query}");
        }
        let s = sig(Some("OSS LTAIa:x"), None);
        let two = Request {
            method: "GET",
            bucket: Some("b"),
            key: "k",
            query: "OSSAccessKeyId=LTAIb",
            signals: &s,
        };
        assert!(classify(&two).unwrap_err().contains("two access key IDs"));
        let s = sig(Some("Bearer x"), None);
        let odd = Request {
            query: "",
            signals: &s,
            ..two
        };
        assert!(classify(&odd).unwrap_err().contains("Authorization scheme"));
    }

    #[test]
    fn copy_sources_parse_in_both_dialects() {
        for raw in [
            "/src-bucket/a%2Fb.txt",
            "src-bucket/a%2Fb.txt",
            "/src-bucket/a/b.txt?versionId=3",
        ] {
            let (t, _) = copy_source(raw).unwrap();
            assert_eq!(t.bucket, Some(Name::known("src-bucket")), "{raw}");
            assert_eq!(t.key, Some(Name::known("a/b.txt")), "{raw}");
        }
        for bad in ["/only-bucket", "/", "/b/../other/x", "/b/x?acl"] {
            assert!(copy_source(bad).is_err(), "{bad}");
        }
    }
}

/// One request shape per row: method, bucket, key, query and a copy source
/// or symlink target, with the expected touches as `action bucket/key`.
#[cfg(test)]
mod shapes {
    use super::*;

    fn touches(
        method: &str,
        bucket: Option<&str>,
        key: &str,
        query: &str,
        hdr: &[(&str, &str)],
    ) -> Result<Vec<String>, String> {
        let mut s = Signals::default();
        for (h, v) in hdr {
            match *h {
                "copy" => s.copy_source = Some(v.to_string()),
                "symlink" => s.symlink_target = Some(v.to_string()),
                "form" => s.form_upload = true,
                "tagging" => s.tagging = true,
                _ => unreachable!(),
            }
        }
        let r = Request {
            method,
            bucket,
            key,
            query,
            signals: &s,
        };
        classify(&r).map(|c| {
            c.touches
                .iter()
                .map(|t| {
                    let b = t.bucket.as_ref().map_or("-".to_string(), Name::label);
                    match &t.key {
                        None => format!("{} {b}", t.action),
                        Some(k) => format!("{} {b}/{}", t.action, k.label()),
                    }
                })
                .collect()
        })
    }

    /// method, bucket, key, query, headers, and the expected touches.
    type Shape<'a, T> = (
        &'a str,
        Option<&'a str>,
        &'a str,
        &'a str,
        &'a [(&'a str, &'a str)],
        T,
    );

    #[test]
    fn every_mapped_action_from_its_request_shape() {
        let b = Some("bkt");
        #[rustfmt::skip]
        let rows: &[Shape<&[&str]>] = &[
            ("GET", None, "", "", &[], &["oss:ListBuckets -"]),
            ("PUT", b, "", "", &[], &["oss:PutBucket bkt"]),
            ("DELETE", b, "", "", &[], &["oss:DeleteBucket bkt"]),
            ("GET", b, "", "prefix=a%2F&delimiter=%2F", &[], &["oss:ListObjects bkt"]),
            ("GET", b, "", "list-type=2&continuation-token=x", &[], &["oss:ListObjects bkt"]),
            ("HEAD", b, "", "", &[], &["oss:ListObjects bkt"]),
            ("GET", b, "", "bucketInfo", &[], &["oss:GetBucketInfo bkt"]),
            ("GET", b, "", "location", &[], &["oss:GetBucketLocation bkt"]),
            ("GET", b, "", "stat", &[], &["oss:GetBucketStat bkt"]),
            ("GET", b, "", "acl", &[], &["oss:GetBucketAcl bkt"]),
            ("PUT", b, "", "acl", &[], &["oss:PutBucketAcl bkt"]),
            ("GET", b, "", "cors", &[], &["oss:GetBucketCors bkt"]),
            ("PUT", b, "", "cors", &[], &["oss:PutBucketCors bkt"]),
            ("DELETE", b, "", "cors", &[], &["oss:DeleteBucketCors bkt"]),
            ("PUT", b, "", "lifecycle", &[], &["oss:PutBucketLifecycle bkt"]),
            ("DELETE", b, "", "lifecycle", &[], &["oss:DeleteBucketLifecycle bkt"]),
            ("GET", b, "", "policy", &[], &["oss:GetBucketPolicy bkt"]),
            ("PUT", b, "", "policy", &[], &["oss:PutBucketPolicy bkt"]),
            ("DELETE", b, "", "tagging", &[], &["oss:DeleteBucketTagging bkt"]),
            ("PUT", b, "", "website", &[], &["oss:PutBucketWebsite bkt"]),
            ("GET", b, "", "versioning", &[], &["oss:GetBucketVersioning bkt"]),
            ("PUT", b, "", "versioning", &[], &["oss:PutBucketVersioning bkt"]),
            ("GET", b, "", "versions", &[], &["oss:ListObjectVersions bkt"]),
            ("GET", b, "", "uploads", &[], &["oss:ListMultipartUploads bkt"]),
            ("PUT", b, "", "encryption", &[], &["oss:PutBucketEncryption bkt"]),
            ("PUT", b, "", "referer", &[], &["oss:PutBucketReferer bkt"]),
            ("POST", b, "", "worm", &[], &["oss:InitiateBucketWorm bkt"]),
            ("POST", b, "", "wormId=1", &[], &["oss:CompleteBucketWorm bkt"]),
            ("POST", b, "", "wormId=1&wormExtend", &[], &["oss:ExtendBucketWorm bkt"]),
            ("DELETE", b, "", "worm", &[], &["oss:AbortBucketWorm bkt"]),
            ("POST", b, "", "delete", &[], &["oss:DeleteObject bkt/?(the request body)"]),
            ("POST", b, "", "", &[("form", "")], &["oss:PutObject bkt/?(a form field)"]),
            ("PUT", b, "", "logging", &[], &["oss:PutBucketLogging bkt", "oss:PutObject ?(the request body)/?(the request body)"]),
            ("POST", b, "", "replication&comp=add", &[], &["oss:PutBucketReplication bkt", "oss:PutObject ?(the request body)/?(the request body)"]),
            ("POST", b, "", "replication&comp=delete", &[], &["oss:DeleteBucketReplication bkt"]),
            ("PUT", b, "", "inventory&inventoryId=a", &[], &["oss:PutBucketInventory bkt", "oss:PutObject ?(the request body)/?(the request body)"]),
            ("GET", b, "", "tagging", &[], &["oss:GetBucketTagging bkt"]),
            ("PUT", b, "", "tagging", &[], &["oss:PutBucketTagging bkt"]),
            ("GET", b, "", "website", &[], &["oss:GetBucketWebsite bkt"]),
            ("DELETE", b, "", "website", &[], &["oss:DeleteBucketWebsite bkt"]),
            ("GET", b, "", "lifecycle", &[], &["oss:GetBucketLifecycle bkt"]),
            ("DELETE", b, "", "policy", &[], &["oss:DeleteBucketPolicy bkt"]),
            ("GET", b, "", "logging", &[], &["oss:GetBucketLogging bkt"]),
            ("DELETE", b, "", "logging", &[], &["oss:DeleteBucketLogging bkt"]),
            ("GET", b, "", "referer", &[], &["oss:GetBucketReferer bkt"]),
            ("GET", b, "", "encryption", &[], &["oss:GetBucketEncryption bkt"]),
            ("DELETE", b, "", "encryption", &[], &["oss:DeleteBucketEncryption bkt"]),
            ("GET", b, "", "replication", &[], &["oss:GetBucketReplication bkt"]),
            ("GET", b, "", "replicationLocation", &[], &["oss:GetBucketReplicationLocation bkt"]),
            ("GET", b, "", "replicationProgress&rule-id=r1", &[], &["oss:GetBucketReplicationProgress bkt"]),
            ("GET", b, "", "inventory&inventoryId=i", &[], &["oss:GetBucketInventory bkt"]),
            ("DELETE", b, "", "inventory&inventoryId=i", &[], &["oss:DeleteBucketInventory bkt"]),
            ("GET", b, "", "worm", &[], &["oss:GetBucketWorm bkt"]),
            ("GET", b, "", "requestPayment", &[], &["oss:GetBucketRequestPayment bkt"]),
            ("PUT", b, "", "requestPayment", &[], &["oss:PutBucketRequestPayment bkt"]),
            ("GET", b, "k", "acl&versionId=v", &[], &["oss:GetObjectAcl bkt/k", "oss:GetObjectVersionAcl bkt/k"]),
            ("PUT", b, "k", "acl&versionId=v", &[], &["oss:PutObjectAcl bkt/k", "oss:PutObjectVersionAcl bkt/k"]),
            ("GET", b, "k", "tagging&versionId=v", &[], &["oss:GetObjectTagging bkt/k", "oss:GetObjectVersionTagging bkt/k"]),
            ("PUT", b, "k", "tagging&versionId=v", &[], &["oss:PutObjectTagging bkt/k", "oss:PutObjectVersionTagging bkt/k"]),
            ("DELETE", b, "k", "tagging&versionId=v", &[], &["oss:DeleteObjectTagging bkt/k", "oss:DeleteObjectVersionTagging bkt/k"]),
            ("POST", b, "k", "restore&versionId=v", &[], &["oss:RestoreObject bkt/k", "oss:RestoreObjectVersion bkt/k"]),
            ("POST", b, "k.csv", "select&select-type=2", &[], &["oss:GetObject bkt/k.csv"]),
            ("GET", b, "k", "attributes", &[], &["oss:GetObject bkt/k"]),
            ("GET", b, "a%20b.txt", "", &[], &["oss:GetObject bkt/a b.txt"]),
            ("HEAD", b, "k", "", &[], &["oss:GetObject bkt/k"]),
            ("GET", b, "k", "versionId=v1", &[], &["oss:GetObject bkt/k", "oss:GetObjectVersion bkt/k"]),
            ("GET", b, "k", "response-content-type=text%2Fplain&x-oss-traffic-limit=100", &[], &["oss:GetObject bkt/k"]),
            ("GET", b, "k", "OSSAccessKeyId=a&Expires=1&Signature=s", &[], &["oss:GetObject bkt/k"]),
            ("GET", b, "k", "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=a%2Fb&X-Amz-Date=d&X-Amz-Expires=1&X-Amz-SignedHeaders=host&X-Amz-Signature=s", &[], &["oss:GetObject bkt/k"]),
            ("PUT", b, "k", "", &[], &["oss:PutObject bkt/k"]),
            ("PUT", b, "k", "", &[("tagging", "")], &["oss:PutObject bkt/k", "oss:PutObjectTagging bkt/k"]),
            ("POST", b, "k", "uploads", &[("tagging", "")], &["oss:PutObject bkt/k", "oss:PutObjectTagging bkt/k"]),
            ("DELETE", b, "k", "", &[], &["oss:DeleteObject bkt/k"]),
            ("DELETE", b, "k", "versionId=v", &[], &["oss:DeleteObject bkt/k", "oss:DeleteObjectVersion bkt/k"]),
            ("POST", b, "k", "uploads", &[], &["oss:PutObject bkt/k"]),
            ("PUT", b, "k", "partNumber=1&uploadId=u", &[], &["oss:PutObject bkt/k"]),
            ("POST", b, "k", "uploadId=u", &[], &["oss:PutObject bkt/k"]),
            ("DELETE", b, "k", "uploadId=u", &[], &["oss:AbortMultipartUpload bkt/k"]),
            ("GET", b, "k", "uploadId=u&max-parts=10", &[], &["oss:ListParts bkt/k"]),
            ("POST", b, "k", "append&position=0", &[], &["oss:PutObject bkt/k"]),
            ("GET", b, "k", "acl", &[], &["oss:GetObjectAcl bkt/k"]),
            ("PUT", b, "k", "acl", &[], &["oss:PutObjectAcl bkt/k"]),
            ("GET", b, "k", "tagging", &[], &["oss:GetObjectTagging bkt/k"]),
            ("PUT", b, "k", "tagging", &[], &["oss:PutObjectTagging bkt/k"]),
            ("DELETE", b, "k", "tagging", &[], &["oss:DeleteObjectTagging bkt/k"]),
            ("HEAD", b, "k", "objectMeta", &[], &["oss:GetObject bkt/k"]),
            ("POST", b, "k", "restore", &[], &["oss:RestoreObject bkt/k"]),
            ("GET", b, "k", "symlink", &[], &["oss:GetObject bkt/k"]),
            ("PUT", b, "link", "symlink", &[("symlink", "secret%2Fx")], &["oss:PutObject bkt/link", "oss:GetObject bkt/secret/x"]),
            ("GET", b, "k.jpg", "x-oss-process=image%2Fresize%2Cw_100", &[], &["oss:GetObject bkt/k.jpg"]),
            ("POST", b, "k.csv", "x-oss-process=csv%2Fselect", &[], &["oss:GetObject bkt/k.csv"]),
            ("POST", b, "k.jpg", "x-oss-process", &[], &["oss:PostProcessTask bkt/k.jpg", "oss:PutObject ?(the processing body (sys/saveas))/?(the processing body (sys/saveas))"]),
            ("POST", b, "k.doc", "x-oss-async-process", &[], &["oss:PostProcessTask bkt/k.doc", "oss:GetObject bkt/k.doc", "oss:PutObject ?(the processing body (sys/saveas))/?(the processing body (sys/saveas))"]),
            ("PUT", b, "leak.txt", "", &[("copy", "/logs-secret/passwords.txt")], &["oss:PutObject bkt/leak.txt", "oss:GetObject logs-secret/passwords.txt"]),
            ("PUT", b, "leak.txt", "", &[("copy", "logs-secret/pass%20words.txt?versionId=3")], &["oss:PutObject bkt/leak.txt", "oss:GetObject logs-secret/pass words.txt", "oss:GetObjectVersion logs-secret/pass words.txt"]),
            ("PUT", b, "big", "partNumber=2&uploadId=u", &[("copy", "/other/src")], &["oss:PutObject bkt/big", "oss:GetObject other/src"]),
            ("PUT", b, "x", "x-id=CopyObject", &[("copy", "arn:aws:s3:us-east-1:1:accesspoint/ap/object/k")], &["oss:PutObject bkt/x", "oss:GetObject ?(an access point ARN)/?(an access point ARN)"]),
        ];
        assert!(rows.len() >= 40);
        for (method, bucket, key, query, hdr, want) in rows {
            let got = touches(method, *bucket, key, query, hdr)
                .unwrap_or_else(|e| panic!("{method} {bucket:?} {key} ?{query}: {e}"));
            assert_eq!(&got, want, "{method} {bucket:?} {key} ?{query}");
        }
        // Every action the mapper can produce has a row.
        let covered: std::collections::HashSet<&str> = rows
            .iter()
            .flat_map(|r| r.5.iter())
            .filter_map(|t| t.split(' ').next())
            .collect();
        let missing: Vec<_> = all_actions().filter(|a| !covered.contains(a)).collect();
        assert!(missing.is_empty(), "no request shape for {missing:?}");
    }

    #[test]
    fn what_cannot_be_determined_is_an_error_that_names_it() {
        let b = Some("bkt");
        #[rustfmt::skip]
        let rows: &[Shape<&str>] = &[
            ("PATCH", b, "k", "", &[], "method PATCH"),
            ("GET", b, "k", "cname", &[], "unknown query parameter \"cname\""),
            ("GET", b, "k", "acl&tagging", &[], "two sub-resources"),
            ("PUT", b, "k", "restore", &[], "PUT ?restore on an object"),
            ("GET", None, "k", "", &[], "without a bucket"),
            ("POST", b, "", "", &[], "POST on a bucket"),
            ("POST", b, "", "replication", &[], "comp=add"),
            ("PUT", b, "k", "", &[("copy", "/only-bucket")], "is not /bucket/key"),
            ("PUT", b, "k", "", &[("copy", "/b/../secret/x")], "'..' segments"),
            ("GET", b, "k", "", &[("copy", "/b/x")], "other than PUT"),
            ("PUT", b, "k", "symlink", &[], "x-oss-symlink-target"),
        ];
        for (method, bucket, key, query, hdr, want) in rows {
            let err = touches(method, *bucket, key, query, hdr).unwrap_err();
            assert!(err.contains(want), "{method} ?{query}: {err}");
        }
    }
}
