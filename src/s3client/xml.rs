//! Just enough XML reading for S3 listings and errors: the responses are
//! flat, machine-generated documents, so tag scanning is sufficient and
//! avoids an XML dependency in the client.

/// The text of every `<tag>…</tag>` in `doc`, in order.
pub fn all(doc: &str, tag: &str) -> Vec<String> {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let mut out = Vec::new();
    let mut rest = doc;
    while let Some(start) = rest.find(&open) {
        let after = &rest[start + open.len()..];
        let Some(end) = after.find(&close) else { break };
        out.push(unescape(&after[..end]));
        rest = &after[end + close.len()..];
    }
    out
}

/// The first `<tag>` text.
pub fn first(doc: &str, tag: &str) -> Option<String> {
    all(doc, tag).into_iter().next()
}

fn unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
}

/// A bucket in ListBuckets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bucket {
    /// Name.
    pub name: String,
    /// CreationDate as sent.
    pub created: String,
}

/// An object in ListObjects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Object {
    /// Key.
    pub key: String,
    /// Size in bytes.
    pub size: u64,
    /// LastModified as sent.
    pub modified: String,
    /// ETag without quotes.
    pub etag: String,
}

/// Buckets from a ListAllMyBucketsResult.
pub fn buckets(doc: &str) -> Vec<Bucket> {
    all(doc, "Bucket")
        .iter()
        .map(|b| Bucket {
            name: first(b, "Name").unwrap_or_default(),
            created: first(b, "CreationDate").unwrap_or_default(),
        })
        .collect()
}

/// Objects from a ListBucketResult.
pub fn objects(doc: &str) -> Vec<Object> {
    all(doc, "Contents")
        .iter()
        .map(|c| Object {
            key: first(c, "Key").unwrap_or_default(),
            size: first(c, "Size").and_then(|s| s.parse().ok()).unwrap_or(0),
            modified: first(c, "LastModified").unwrap_or_default(),
            etag: first(c, "ETag")
                .unwrap_or_default()
                .trim_matches('"')
                .to_string(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listings_and_errors() {
        let doc = "<ListBucketResult><Contents><Key>a&amp;b.txt</Key><Size>12</Size><ETag>&quot;x&quot;</ETag></Contents><Contents><Key>c</Key><Size>3</Size></Contents></ListBucketResult>";
        let o = objects(doc);
        assert_eq!(o.len(), 2);
        assert_eq!(
            (o[0].key.as_str(), o[0].size, o[0].etag.as_str()),
            ("a&b.txt", 12, "x")
        );
        assert_eq!(
            first("<Error><Code>AccessDenied</Code></Error>", "Code").as_deref(),
            Some("AccessDenied")
        );
        let b = buckets(
            "<Buckets><Bucket><CreationDate>2026</CreationDate><Name>x</Name></Bucket></Buckets>",
        );
        assert_eq!(b[0].name, "x");
    }
}
