//! `s3s-fs` with the few fixes needed to behave like OSS for real clients.
//!
//! An empty `delimiter=` (rclone sends one on every listing) means "no
//! delimiter" on OSS and S3; s3s-fs splits keys on the empty string
//! instead and lists nothing. Everything else is passed straight through.

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
                self.0.list_objects(req).await
            }

            async fn list_objects_v2(&self, mut req: S3Request<ListObjectsV2Input>) -> S3Result<S3Response<ListObjectsV2Output>> {
                no_empty(&mut req.input.delimiter);
                self.0.list_objects_v2(req).await
            }
        }
    };
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
