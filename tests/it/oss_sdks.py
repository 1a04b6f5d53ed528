#!/usr/bin/env python3
"""Alibaba's own SDKs against an OSS endpoint: oss2 (signature V1 and V4)
and alibabacloud-oss-v2 (V4 and V1). Each one lists buckets, puts, gets,
lists the bucket, uploads in parts, and fetches a presigned URL, and
compares every body it reads back.

    oss_sdks.py ENDPOINT BUCKET ACCESS_KEY SECRET_KEY REGION [MODES]

MODES is a comma-separated subset of oss2-v1,oss2-v4,oss-v2-v4,oss-v2-v1
(all by default).

ENDPOINT is http(s)://IP:PORT, which both SDKs address path-style, or
http(s)://NAME, which they address virtual-hosted (BUCKET.NAME), as on OSS.
Prints one line per step; exits 1 at the first failure, naming it.
"""

import hashlib
import ipaddress
import sys
import urllib.parse
import urllib.request

import alibabacloud_oss_v2 as oss
import oss2

endpoint, bucket, ak, sk, region = sys.argv[1:6]
modes = sys.argv[6].split(",") if len(sys.argv) > 6 else ["oss2-v1", "oss2-v4", "oss-v2-v4", "oss-v2-v1"]
try:
    ipaddress.ip_address(urllib.parse.urlsplit(endpoint).hostname or "")
    path_style = True
except ValueError:
    path_style = False
# One part only: every part but the last must be 5 MiB on S3 (100 KiB on
# OSS), and one part still takes initiate, upload part and complete.
PART = 256 * 1024 + 3


def step(name, ok, detail=""):
    print("%s %s %s" % ("ok" if ok else "FAIL", name, detail), flush=True)
    if not ok:
        sys.exit(1)


def presigned_get(url, want, name):
    with urllib.request.urlopen(url, timeout=30) as r:
        step(name, r.read() == want, url.split("?")[0])


def oss2_run(label, auth, **kw):
    svc = oss2.Service(auth, endpoint, **kw)
    names = [b.name for b in svc.list_buckets().buckets]
    step(label + " list buckets", bucket in names, str(names))
    b = oss2.Bucket(auth, endpoint, bucket, **kw)
    key = "sdk/%s/hello world+1.txt" % label
    body = ("hello from %s\n" % label).encode()
    b.put_object(key, body, headers={"Content-Type": "text/plain", "x-oss-meta-author": "alice"})
    got = b.get_object(key)
    step(label + " put/get", got.read() == body, key)
    keys = [o.key for o in oss2.ObjectIterator(b, prefix="sdk/%s/" % label)]
    step(label + " list objects", key in keys, str(keys))
    big = bytes(range(256)) * (PART // 256) + b"tail"
    up = b.init_multipart_upload("sdk/%s/big.bin" % label).upload_id
    parts = [oss2.models.PartInfo(1, b.upload_part("sdk/%s/big.bin" % label, up, 1, big).etag)]
    b.complete_multipart_upload("sdk/%s/big.bin" % label, up, parts)
    whole = b.get_object("sdk/%s/big.bin" % label).read()
    step(label + " multipart", hashlib.sha256(whole).digest() == hashlib.sha256(big).digest(),
         "%d bytes" % len(whole))
    presigned_get(b.sign_url("GET", key, 300), body, label + " presigned GET")


def v2_run(label, version):
    cfg = oss.config.load_default()
    cfg.credentials_provider = oss.credentials.StaticCredentialsProvider(ak, sk)
    cfg.region = region
    cfg.endpoint = endpoint
    cfg.use_path_style = path_style
    cfg.signature_version = version
    cfg.retry_max_attempts = 1
    c = oss.Client(cfg)
    names = [b.name for b in c.list_buckets(oss.ListBucketsRequest()).buckets or []]
    step(label + " list buckets", bucket in names, str(names))
    key = "sdk/%s/hello world+1.txt" % label
    body = ("hello from %s\n" % label).encode()
    c.put_object(oss.PutObjectRequest(bucket=bucket, key=key, body=body, content_type="text/plain"))
    got = c.get_object(oss.GetObjectRequest(bucket=bucket, key=key)).body.read()
    step(label + " put/get", got == body, key)
    listed = c.list_objects_v2(oss.ListObjectsV2Request(bucket=bucket, prefix="sdk/%s/" % label))
    keys = [o.key for o in listed.contents or []]
    step(label + " list objects", key in keys, str(keys))
    big = bytes(range(256)) * (PART // 256) + b"tail"
    name = "sdk/%s/big.bin" % label
    up = c.initiate_multipart_upload(oss.InitiateMultipartUploadRequest(bucket=bucket, key=name)).upload_id
    parts = []
    for n, chunk in ((1, big),):
        r = c.upload_part(oss.UploadPartRequest(bucket=bucket, key=name, upload_id=up, part_number=n, body=chunk))
        parts.append(oss.UploadPart(part_number=n, etag=r.etag))
    c.complete_multipart_upload(oss.CompleteMultipartUploadRequest(
        bucket=bucket, key=name, upload_id=up,
        complete_multipart_upload=oss.CompleteMultipartUpload(parts=parts)))
    whole = c.get_object(oss.GetObjectRequest(bucket=bucket, key=name)).body.read()
    step(label + " multipart", hashlib.sha256(whole).digest() == hashlib.sha256(big).digest(),
         "%d bytes" % len(whole))
    url = c.presign(oss.GetObjectRequest(bucket=bucket, key=key)).url
    presigned_get(url, body, label + " presigned GET")


if "oss2-v1" in modes:
    oss2_run("oss2-v1", oss2.Auth(ak, sk))
if "oss2-v4" in modes:
    oss2_run("oss2-v4", oss2.AuthV4(ak, sk), region=region)
if "oss-v2-v4" in modes:
    v2_run("oss-v2-v4", "v4")
if "oss-v2-v1" in modes:
    v2_run("oss-v2-v1", "v1")
print("all SDK steps passed")
