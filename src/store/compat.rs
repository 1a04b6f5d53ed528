//! `s3s-fs` with the few fixes needed to behave like OSS for real clients.
//!
//! An empty `delimiter=` (rclone sends one on every listing) means "no
//! delimiter" on OSS and S3; s3s-fs splits keys on the empty string
//! instead and lists nothing. With `encoding-type=url`, S3 and OSS
//! percent-encode every key, prefix, delimiter and marker in a listing
//! (clients then decode them, `+` included); s3s-fs says `url` but leaves
//! them raw, so `a+b.txt` came back as `a b.txt`. Everything else is passed
//! straight through.

use s3s::dto::*;
use s3s::{S3Request, S3Response, S3Result, S3};
use s3s_fs::FileSystem;

/// The stand-in's storage: s3s-fs plus OSS-compatible listing.
pub struct OssFs(pub FileSystem);

// The whole impl is generated so that `async_trait` sees the expanded
// methods (it cannot see into a macro call inside an impl block).
macro_rules! oss_fs_impl {
    ($($name:ident: $input:ty => $output:ty;)*) => {
        #[async_trait::async_trait]
        impl S3 for OssFs {
            $(
                async fn $name(&self, req: S3Request<$input>) -> S3Result<S3Response<$output>> {
                    self.0.$name(req).await
                }
            )*

            async fn list_objects(&self, mut req: S3Request<ListObjectsInput>) -> S3Result<S3Response<ListObjectsOutput>> {
                no_empty(&mut req.input.delimiter);
                let url = wants_url(&req.input.encoding_type);
                let meta = req.clone();
                let mut resp = self.0.list_objects(req).await?;
                self.fill_e_tags(&meta, &mut resp.output.contents).await;
                if url {
                    let o = &mut resp.output;
                    encode_listing(&mut o.contents, &mut o.common_prefixes);
                    for field in [&mut o.prefix, &mut o.delimiter, &mut o.marker, &mut o.next_marker] {
                        encode_opt(field);
                    }
                    o.encoding_type = Some(EncodingType::from_static(EncodingType::URL));
                }
                Ok(resp)
            }

            async fn list_objects_v2(&self, mut req: S3Request<ListObjectsV2Input>) -> S3Result<S3Response<ListObjectsV2Output>> {
                no_empty(&mut req.input.delimiter);
                let url = wants_url(&req.input.encoding_type);
                let meta = req.clone();
                let mut resp = self.0.list_objects_v2(req).await?;
                self.fill_e_tags(&meta, &mut resp.output.contents).await;
                if url {
                    let o = &mut resp.output;
                    encode_listing(&mut o.contents, &mut o.common_prefixes);
                    for field in [&mut o.prefix, &mut o.delimiter, &mut o.start_after] {
                        encode_opt(field);
                    }
                    o.encoding_type = Some(EncodingType::from_static(EncodingType::URL));
                }
                Ok(resp)
            }
        }
    };
}

/// The bucket a listing request names.
trait Listing {
    fn bucket(&self) -> &str;
}

impl Listing for ListObjectsInput {
    fn bucket(&self) -> &str {
        &self.bucket
    }
}

impl Listing for ListObjectsV2Input {
    fn bucket(&self) -> &str {
        &self.bucket
    }
}

impl OssFs {
    /// s3s-fs lists objects without their ETag; OSS (and S3) list it, and
    /// oss2 requires it. Each is the one HeadObject gives, so a listing
    /// and a HEAD agree (multipart ETags included).
    async fn fill_e_tags<T: Listing>(
        &self,
        meta: &S3Request<T>,
        contents: &mut Option<Vec<Object>>,
    ) {
        for o in contents.iter_mut().flatten() {
            if o.e_tag.is_some() {
                continue;
            }
            let Some(key) = o.key.clone() else { continue };
            let input = HeadObjectInput::builder()
                .bucket(meta.input.bucket().to_string())
                .key(key)
                .build();
            let Ok(input) = input else { continue };
            let head = S3Request {
                input,
                method: hyper::Method::HEAD,
                uri: meta.uri.clone(),
                headers: meta.headers.clone(),
                extensions: Default::default(),
                credentials: meta.credentials.clone(),
                region: meta.region.clone(),
                service: meta.service.clone(),
                trailing_headers: None,
            };
            if let Ok(r) = self.0.head_object(head).await {
                o.e_tag = r.output.e_tag;
            }
        }
    }
}

fn wants_url(e: &Option<EncodingType>) -> bool {
    e.as_ref().is_some_and(|e| e.as_str() == EncodingType::URL)
}

/// S3's `encoding-type=url`: every byte but the unreserved ones and `/` as
/// `%XX` (a space too, so decoders that read `+` as a space agree).
fn url_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for &b in text.as_bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~/".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn encode_opt(field: &mut Option<String>) {
    if let Some(v) = field.as_mut() {
        *v = url_encode(v);
    }
}

fn encode_listing(contents: &mut Option<Vec<Object>>, prefixes: &mut Option<Vec<CommonPrefix>>) {
    for o in contents.iter_mut().flatten() {
        encode_opt(&mut o.key);
    }
    for p in prefixes.iter_mut().flatten() {
        encode_opt(&mut p.prefix);
    }
}

fn no_empty(d: &mut Option<Delimiter>) {
    if d.as_deref() == Some("") {
        *d = None;
    }
}

oss_fs_impl! {
    create_bucket: CreateBucketInput => CreateBucketOutput;
    copy_object: CopyObjectInput => CopyObjectOutput;
    delete_bucket: DeleteBucketInput => DeleteBucketOutput;
    delete_object: DeleteObjectInput => DeleteObjectOutput;
    delete_objects: DeleteObjectsInput => DeleteObjectsOutput;
    get_bucket_location: GetBucketLocationInput => GetBucketLocationOutput;
    get_object: GetObjectInput => GetObjectOutput;
    head_bucket: HeadBucketInput => HeadBucketOutput;
    head_object: HeadObjectInput => HeadObjectOutput;
    list_buckets: ListBucketsInput => ListBucketsOutput;
    put_object: PutObjectInput => PutObjectOutput;
    create_multipart_upload: CreateMultipartUploadInput => CreateMultipartUploadOutput;
    upload_part: UploadPartInput => UploadPartOutput;
    upload_part_copy: UploadPartCopyInput => UploadPartCopyOutput;
    list_parts: ListPartsInput => ListPartsOutput;
    complete_multipart_upload: CompleteMultipartUploadInput => CompleteMultipartUploadOutput;
    abort_multipart_upload: AbortMultipartUploadInput => AbortMultipartUploadOutput;
}

#[cfg(test)]
mod tests {
    use super::url_encode;

    #[test]
    fn keys_are_encoded_as_s3_does() {
        assert_eq!(url_encode("a+b.txt"), "a%2Bb.txt");
        assert_eq!(url_encode("x%41.txt"), "x%2541.txt");
        assert_eq!(
            url_encode("dir/with space/é.txt"),
            "dir/with%20space/%C3%A9.txt"
        );
        assert_eq!(url_encode("plain-_.~"), "plain-_.~");
    }
}
