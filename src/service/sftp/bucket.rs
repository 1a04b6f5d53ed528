//! One bucket as the sftp service uses it: the object operations behind
//! each SFTP and SCP request, over the built-in S3 client (virtual-hosted,
//! Signature V4).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use crate::config::sftp::Sftp;
use crate::resolve::Resolve;
use crate::s3client::{sigv4::Signer, xml, Client, ClientError};

/// A bucket on the relay's storage endpoint.
pub struct Bucket {
    client: Client,
    /// The bucket's name.
    pub name: String,
}

/// An object's size and modification time.
#[derive(Debug, Clone, Copy)]
pub struct Meta {
    /// Bytes.
    pub size: u64,
    /// Seconds since the epoch (0 when the store did not say).
    pub mtime: u32,
}

/// One page of a delimited listing, or all of them.
#[derive(Debug, Default)]
pub struct Listing {
    /// Objects directly under the prefix: key, size, mtime.
    pub objects: Vec<(String, Meta)>,
    /// Common prefixes ("directories"), each ending in `/`.
    pub prefixes: Vec<String>,
}

/// Why an object operation failed, as SFTP can say it.
#[derive(Debug)]
pub enum StoreError {
    /// 404.
    NotFound,
    /// 403: the storage refused the relay's keys for this.
    Denied(String),
    /// Anything else, with the client's words.
    Failed(String),
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreError::NotFound => f.write_str("no such object"),
            StoreError::Denied(m) | StoreError::Failed(m) => f.write_str(m),
        }
    }
}

impl From<ClientError> for StoreError {
    fn from(e: ClientError) -> StoreError {
        match e {
            ClientError::Status { status: 404, .. } => StoreError::NotFound,
            ClientError::Status { status: 403, .. } => StoreError::Denied(e.to_string()),
            other => StoreError::Failed(other.to_string()),
        }
    }
}

/// `2026-12-04T21:03:21.000Z` (ListObjects) as seconds since the epoch.
fn iso_seconds(s: &str) -> u32 {
    let n = |r: std::ops::Range<usize>| s.get(r).and_then(|x| x.parse::<i64>().ok());
    let (Some(y), Some(mo), Some(d), Some(h), Some(mi), Some(se)) =
        (n(0..4), n(5..7), n(8..10), n(11..13), n(14..16), n(17..19))
    else {
        return 0;
    };
    // Days from civil (Howard Hinnant's algorithm).
    let y = if mo <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if mo > 2 { mo - 3 } else { mo + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    u32::try_from(days * 86_400 + h * 3600 + mi * 60 + se).unwrap_or(0)
}

/// `Last-Modified: Fri, 04 Dec 2026 21:03:21 GMT` as seconds since the epoch.
fn http_date_seconds(s: &str) -> u32 {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let parts: Vec<&str> = s.split_whitespace().collect();
    let (Some(d), Some(m), Some(y), Some(t)) =
        (parts.get(1), parts.get(2), parts.get(3), parts.get(4))
    else {
        return 0;
    };
    let Some(mo) = MONTHS.iter().position(|x| x == m) else {
        return 0;
    };
    iso_seconds(&format!("{y}-{:02}-{d:0>2}T{t}", mo + 1))
}

impl Bucket {
    /// Bucket `name` on the relay's endpoint, signed with its keys.
    pub fn new(cfg: &Sftp, name: &str, resolver: Arc<dyn Resolve>, timeout: Duration) -> Bucket {
        Bucket {
            client: Client {
                endpoint: cfg.upstream.host.clone(),
                port: cfg.upstream.port,
                signer: Some(Signer {
                    access_key: cfg.credentials.access_key_id.clone(),
                    secret_key: cfg.credentials.secret.clone(),
                    region: cfg.region.clone(),
                }),
                resolver,
                timeout,
                tls: None,
                connect_to: Some(cfg.upstream.host.clone()),
            },
            name: name.to_string(),
        }
    }

    async fn call(
        &self,
        method: &str,
        key: &str,
        query: &[(&str, &str)],
        headers: &[(&str, String)],
        body: Bytes,
    ) -> Result<crate::s3client::Response, StoreError> {
        let q: Vec<(String, String)> = query
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let h: Vec<(String, String)> = headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect();
        Ok(self
            .client
            .request_with(method, Some(&self.name), key, &q, &h, body)
            .await?)
    }

    /// HeadObject.
    pub async fn head(&self, key: &str) -> Result<Meta, StoreError> {
        let r = self.call("HEAD", key, &[], &[], Bytes::new()).await?;
        Ok(Meta {
            size: r
                .header("content-length")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0),
            mtime: r.header("last-modified").map_or(0, http_date_seconds),
        })
    }

    /// ListObjectsV2 under `prefix` with delimiter `/`, every page, or
    /// just the first `max` entries.
    pub async fn list(&self, prefix: &str, max: Option<u32>) -> Result<Listing, StoreError> {
        let mut out = Listing::default();
        let mut token: Option<String> = None;
        let max_keys = max.unwrap_or(1000).to_string();
        loop {
            let mut q = vec![
                ("list-type", "2"),
                ("prefix", prefix),
                ("delimiter", "/"),
                ("max-keys", max_keys.as_str()),
            ];
            if let Some(t) = &token {
                q.push(("continuation-token", t.as_str()));
            }
            let r = self.call("GET", "", &q, &[], Bytes::new()).await?;
            let doc = String::from_utf8_lossy(&r.body);
            for o in xml::objects(&doc) {
                out.objects.push((
                    o.key,
                    Meta {
                        size: o.size,
                        mtime: iso_seconds(&o.modified),
                    },
                ));
            }
            for p in xml::all(&doc, "CommonPrefixes") {
                if let Some(p) = xml::first(&p, "Prefix") {
                    out.prefixes.push(p);
                }
            }
            let truncated = xml::first(&doc, "IsTruncated").as_deref() == Some("true");
            token = xml::first(&doc, "NextContinuationToken");
            if max.is_some() || !truncated || token.is_none() {
                return Ok(out);
            }
        }
    }

    /// GetObject of bytes `start..end` (end exclusive, non-empty).
    pub async fn get_range(&self, key: &str, start: u64, end: u64) -> Result<Bytes, StoreError> {
        let range = format!("bytes={start}-{}", end - 1);
        let r = self
            .call("GET", key, &[], &[("range", range)], Bytes::new())
            .await?;
        let want = (end - start) as usize;
        if r.body.len() != want {
            return Err(StoreError::Failed(format!(
                "asked for {want} bytes at {start}, the store sent {}",
                r.body.len()
            )));
        }
        Ok(r.body)
    }

    /// PutObject.
    pub async fn put(&self, key: &str, body: Bytes) -> Result<(), StoreError> {
        self.call("PUT", key, &[], &[], body).await.map(|_| ())
    }

    /// DeleteObject.
    pub async fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.call("DELETE", key, &[], &[], Bytes::new())
            .await
            .map(|_| ())
    }

    /// CopyObject within the bucket.
    pub async fn copy(&self, from: &str, to: &str) -> Result<(), StoreError> {
        let source = format!(
            "/{}/{}",
            self.name,
            crate::s3client::sigv4::uri_encode(from, true)
        );
        self.call(
            "PUT",
            to,
            &[],
            &[("x-amz-copy-source", source)],
            Bytes::new(),
        )
        .await
        .map(|_| ())
    }

    /// UploadPartCopy: bytes `start..=end` of `from` as part `number` of
    /// upload `upload` of `key`; returns the part's ETag.
    pub async fn upload_part_copy(
        &self,
        key: &str,
        upload: &str,
        number: u32,
        from: &str,
        (start, end): (u64, u64),
    ) -> Result<String, StoreError> {
        let n = number.to_string();
        let source = format!(
            "/{}/{}",
            self.name,
            crate::s3client::sigv4::uri_encode(from, true)
        );
        let r = self
            .call(
                "PUT",
                key,
                &[("partNumber", &n), ("uploadId", upload)],
                &[
                    ("x-amz-copy-source", source),
                    ("x-amz-copy-source-range", format!("bytes={start}-{end}")),
                ],
                Bytes::new(),
            )
            .await?;
        xml::first(&String::from_utf8_lossy(&r.body), "ETag")
            .ok_or_else(|| StoreError::Failed(format!("UploadPartCopy of part {number}: no ETag")))
    }

    /// CreateMultipartUpload; returns the upload ID.
    pub async fn create_multipart(&self, key: &str) -> Result<String, StoreError> {
        let r = self
            .call("POST", key, &[("uploads", "")], &[], Bytes::new())
            .await?;
        xml::first(&String::from_utf8_lossy(&r.body), "UploadId")
            .ok_or_else(|| StoreError::Failed("CreateMultipartUpload: no UploadId".into()))
    }

    /// UploadPart; returns the part's ETag.
    pub async fn upload_part(
        &self,
        key: &str,
        upload: &str,
        number: u32,
        body: Bytes,
    ) -> Result<String, StoreError> {
        let n = number.to_string();
        let r = self
            .call(
                "PUT",
                key,
                &[("partNumber", &n), ("uploadId", upload)],
                &[],
                body,
            )
            .await?;
        Ok(r.header("etag").unwrap_or("").to_string())
    }

    /// CompleteMultipartUpload with `parts` (number, ETag) in order.
    pub async fn complete(
        &self,
        key: &str,
        upload: &str,
        parts: &[(u32, String)],
    ) -> Result<(), StoreError> {
        let mut doc = String::from("<CompleteMultipartUpload>");
        for (n, etag) in parts {
            doc.push_str(&format!(
                "<Part><PartNumber>{n}</PartNumber><ETag>{}</ETag></Part>",
                etag.replace('&', "&amp;").replace('"', "&quot;")
            ));
        }
        doc.push_str("</CompleteMultipartUpload>");
        let r = self
            .call("POST", key, &[("uploadId", upload)], &[], Bytes::from(doc))
            .await?;
        // S3 may answer 200 with an error document.
        let text = String::from_utf8_lossy(&r.body);
        if text.contains("<Error>") {
            return Err(StoreError::Failed(format!(
                "CompleteMultipartUpload: {}",
                xml::first(&text, "Message").unwrap_or_default()
            )));
        }
        Ok(())
    }

    /// AbortMultipartUpload.
    pub async fn abort(&self, key: &str, upload: &str) -> Result<(), StoreError> {
        self.call("DELETE", key, &[("uploadId", upload)], &[], Bytes::new())
            .await
            .map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_times_read_as_epoch_seconds() {
        assert_eq!(iso_seconds("1970-01-01T00:00:00.000Z"), 0);
        assert_eq!(iso_seconds("2026-12-04T21:03:21.000Z"), 1_796_418_201);
        assert_eq!(
            http_date_seconds("Fri, 04 Dec 2026 21:03:21 GMT"),
            1_796_418_201
        );
        assert_eq!(iso_seconds("garbage"), 0);
    }
}
