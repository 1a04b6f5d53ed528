#!/usr/bin/env bash
# The blog's topology in network namespaces, with real S3 clients.
#
#   client (10.0.10.30)  --  router (VPN)  --  relay (172.31.10.171)  --  oss (100.118.0.5)
#
# Only the relay can reach the oss namespace (a 100.64.0.0/10 address, like
# an OSS intranet VIP). The client has exactly the blog's two hosts lines;
# the relay's hosts file maps the endpoint to the store. The namespaces,
# the store and the helpers are topology.sh's, shared with sftp.sh.
#
#   tests/system/blog.sh OSSRELAY_BIN RELAY_KIND
#     RELAY_KIND: ossrelay | stone (Debian's) | symlink (ossrelay named stone)
#                 | dns (ossrelay run with [dns]: the client has NO hosts
#                   lines, its resolv.conf points at the relay, and a bucket
#                   configured nowhere is created and used)
#                 | gateway (as dns, with protocol = "http" and a bucket
#                   allowlist: a bucket outside it gets AccessDenied and the
#                   store never sees the request)
#                 | gateway-tls (as gateway, but clients speak HTTPS to the
#                   relay, which terminates TLS with a CA made here)
#                 | proxy (protocol = "proxy": the client has no hosts lines
#                   and no DNS for OSS names, only HTTP_PROXY settings)
#
# Needs root, ip netns, awscli, s3cmd, rclone (and stone for RELAY_KIND=stone).
# Exit 0: every step passed; 1: a step failed; 77: skipped (reason printed).
set -euo pipefail

bin=${1:?usage: blog.sh OSSRELAY_BIN ossrelay|stone|symlink|dns|gateway|gateway-tls|policy|proxy}
kind=${2:?usage: blog.sh OSSRELAY_BIN ossrelay|stone|symlink|dns|gateway|gateway-tls|policy|proxy}
uses_dns() { [ "$kind" = dns ] || is_gateway; }
is_gateway() { [ "$kind" = gateway ] || [ "$kind" = gateway-tls ] || [ "$kind" = policy ]; }
# `policy`: the http gateway with endpoint policy statements: read/write on
# one bucket for one access key, no deletes.
AK_OTHER=LTAIanotherKey0002
polices() { is_gateway || [ "$kind" = proxy ]; }
scheme=http; [ "$kind" = gateway-tls ] && scheme=https
bin=$(readlink -f "$bin")
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=tests/system/topology.sh
. "$here/topology.sh"

for t in aws s3cmd rclone sha256sum openssl; do command -v "$t" >/dev/null || skip "$t not installed"; done
python3 -c "import oss2, alibabacloud_oss_v2" 2>/dev/null || skip "python3 modules oss2 and alibabacloud-oss-v2 not installed"
[ "$kind" != stone ] || command -v stone >/dev/null || skip "stone not installed"

# --- topology
topology_up
if uses_dns; then
  # No hosts lines at all: names come from the relay's DNS responder.
  printf '127.0.0.1 localhost\n' > "/etc/netns/$ns_c/hosts"
  printf 'nameserver 172.31.10.171\n' > "/etc/netns/$ns_c/resolv.conf"
elif [ "$kind" = proxy ]; then
  # No OSS names at all on the client: the proxy resolves them.
  printf '127.0.0.1 localhost\n172.31.10.171 relay\n' > "/etc/netns/$ns_c/hosts"
  printf 'nameserver 192.0.2.1\n' > "/etc/netns/$ns_c/resolv.conf"
else
  # Exactly the blog's two lines.
  printf '172.31.10.171 %s\n172.31.10.171 %s.%s\n' "$ENDPOINT" "$BUCKET" "$ENDPOINT" > "/etc/netns/$ns_c/hosts"
fi
if [ "$kind" = proxy ]; then
  # OSS's DNS answers every bucket name; the relay's hosts file stands in.
  for b in "$BUCKET" forbidden-bucket new-bucket-123; do
    printf '100.118.0.5 %s.%s\n' "$b" "$ENDPOINT" >> "/etc/netns/$ns_x/hosts"
  done
fi
pass "namespaces: client 10.0.10.30, router, relay 172.31.10.171, oss 100.118.0.5"

# --- the store (OSS stand-in), reachable only from the relay
store_up forbidden-bucket

# --- the relay, with the blog's exact command line
case "$kind" in
  ossrelay) relay=("$bin" stone) ;;
  stone) relay=(stone) ;;
  symlink) ln -s "$bin" "$work/stone"; relay=("$work/stone") ;;
  dns|gateway|gateway-tls|policy|proxy) relay=("$bin" run -c "$work/relay.toml") ;;
  *) echo "unknown relay kind $kind"; exit 2 ;;
esac
if [ "$kind" = gateway-tls ]; then
  # A CA and a certificate for the endpoint and *.endpoint, made here.
  openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=system test CA" \
    -keyout "$work/ca.key" -out "$work/ca.pem" 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -subj "/CN=$ENDPOINT" \
    -keyout "$work/relay.key" -out "$work/relay.csr" 2>/dev/null
  printf 'subjectAltName=DNS:%s,DNS:*.%s\n' "$ENDPOINT" "$ENDPOINT" > "$work/san.ext"
  openssl x509 -req -in "$work/relay.csr" -CA "$work/ca.pem" -CAkey "$work/ca.key" -CAcreateserial \
    -days 2 -extfile "$work/san.ext" -out "$work/relay.pem" 2>/dev/null
fi
if [ "$kind" = proxy ]; then
  cat > "$work/relay.toml" <<CFG
[log]
level = "info"

[[relay]]
name = "oss-proxy"
protocol = "proxy"
listen = "0.0.0.0:3128"
proxy_allow = ["*.$ENDPOINT 80", "$ENDPOINT 80"]
buckets = ["$BUCKET", "new-bucket-*"]
allow_service = true
CFG
fi
if uses_dns; then
  cat > "$work/relay.toml" <<CFG
[log]
level = "info"

[dns]
listen = "172.31.10.171:53"
names = ["$ENDPOINT", "*.$ENDPOINT"]
answer = ["172.31.10.171"]

[[relay]]
name = "oss"
listen = "0.0.0.0:$([ "$kind" = gateway-tls ] && echo 443 || echo 80)"
CFG
  if [ "$kind" = gateway-tls ]; then
    echo "tls = { cert = \"relay.pem\", key = \"relay.key\" }" >> "$work/relay.toml"
  fi
  if [ "$kind" = policy ]; then
    cat >> "$work/relay.toml" <<CFG
protocol = "http"
routes = [
  { host = "*.$ENDPOINT", upstream = "$ENDPOINT:80" },
  { host = "$ENDPOINT", upstream = "$ENDPOINT:80" },
]
allow_service = true

[[relay.policy]]
effect = "allow"
buckets = ["$BUCKET"]
actions = ["oss:GetObject", "oss:PutObject", "oss:ListObjects", "oss:ListParts", "oss:ListMultipartUploads",
           "oss:AbortMultipartUpload", "oss:GetBucketLocation", "oss:GetBucketInfo", "oss:GetBucketAcl"]
access_keys = ["$AK"]

[[relay.policy]]
effect = "deny"
actions = ["oss:DeleteObject"]
CFG
  elif is_gateway; then
    cat >> "$work/relay.toml" <<CFG
protocol = "http"
routes = [
  { host = "*.$ENDPOINT", upstream = "$ENDPOINT:80" },
  { host = "$ENDPOINT", upstream = "$ENDPOINT:80" },
]
buckets = ["$BUCKET", "new-bucket-*"]
allow_service = true
CFG
  else
    echo "upstream = \"$ENDPOINT:80\"" >> "$work/relay.toml"
  fi
fi
if [ -f "$work/relay.toml" ]; then
  (cd "$work" && exec ip netns exec "$ns_x" "${relay[@]}") >"$work/relay.log" 2>&1 &
else
  (cd "$work" && exec ip netns exec "$ns_x" "${relay[@]}" -d -d "$ENDPOINT:80" 80) >"$work/relay.log" 2>&1 &
fi
pids+=($!)
relay_port=80
[ "$kind" = gateway-tls ] && relay_port=443
[ "$kind" = proxy ] && relay_port=3128
wait_port "$ns_x" 0.0.0.0 "$relay_port" || fail "relay did not start"
pass "relay started: ${relay[*]}"

if uses_dns; then
  wait_port "$ns_x" 172.31.10.171 53 || fail "dns responder did not start"
  in_ns "$ns_c" getent hosts "new-bucket-123.$ENDPOINT" > "$work/out.txt" || fail "client cannot resolve new-bucket-123.$ENDPOINT"
  grep -q '^172\.31\.10\.171 ' "$work/out.txt" || fail "new-bucket-123.$ENDPOINT does not resolve to the relay"
  pass "client (no hosts lines) resolves new-bucket-123.$ENDPOINT to the relay through its DNS"
fi

# --- client files
head -c 100M /dev/urandom > "$work/big.bin"
echo "test2 through the private path ($kind)" > "$work/test2.txt"
big_sum=$(sha256sum < "$work/big.bin" | cut -d' ' -f1)
cd "$work"

# --- awscli, virtual-hosted style
cat > "$work/aws.cfg" <<CFG
[default]
region = oss-ap-northeast-1
s3 =
    addressing_style = virtual
CFG
client_env=(env -u AWS_CA_BUNDLE)
[ "$kind" = gateway-tls ] && client_env=(env AWS_CA_BUNDLE="$work/ca.pem")
[ "$kind" = proxy ] && client_env=(env -u AWS_CA_BUNDLE HTTP_PROXY=http://172.31.10.171:3128 http_proxy=http://172.31.10.171:3128)
# rclone refuses AWS_CA_BUNDLE outright; it takes RCLONE_CA_CERT instead.
rclone_env=(env -u AWS_CA_BUNDLE)
[ "$kind" = proxy ] && rclone_env=("${client_env[@]}")
aws_() {
  in_ns "$ns_c" "${client_env[@]}" AWS_CONFIG_FILE="$work/aws.cfg" AWS_SHARED_CREDENTIALS_FILE=/dev/null \
    AWS_ACCESS_KEY_ID="$AK" AWS_SECRET_ACCESS_KEY="$SK" \
    aws --endpoint-url "$scheme://$ENDPOINT" "$@" 2>"$work/last.out"
}
aws_ s3 ls > out.txt && has "$BUCKET" || fail "aws s3 ls"
pass "aws s3 ls lists $BUCKET"
aws_ s3 ls "s3://$BUCKET" >/dev/null || fail "aws s3 ls s3://$BUCKET"
pass "aws s3 ls s3://$BUCKET"
aws_ s3 cp ./test2.txt "s3://$BUCKET/" >/dev/null || fail "aws s3 cp test2.txt"
aws_ s3 cp "s3://$BUCKET/test2.txt" ./aws-back.txt >/dev/null || fail "aws download test2.txt"
cmp test2.txt aws-back.txt || fail "aws: test2.txt differs"
pass "aws s3 cp ./test2.txt s3://$BUCKET/ and back, identical"
aws_ s3 cp ./big.bin "s3://$BUCKET/aws-big.bin" >/dev/null || fail "aws multipart upload"
aws_ s3 cp "s3://$BUCKET/aws-big.bin" ./aws-big.back >/dev/null || fail "aws download big"
[ "$(sha256sum < aws-big.back | cut -d' ' -f1)" = "$big_sum" ] || fail "aws: 100 MiB SHA-256 differs"
pass "aws 100 MiB multipart upload and download, SHA-256 equal"

# --- s3cmd
cat > "$work/s3cmd.cfg" <<CFG
[default]
access_key = $AK
secret_key = $SK
host_base = $ENDPOINT
host_bucket = %(bucket)s.$ENDPOINT
use_https = $([ "$scheme" = https ] && echo True || echo False)
ca_certs_file = $([ "$scheme" = https ] && echo "$work/ca.pem")
bucket_location = oss-ap-northeast-1
signature_v2 = False
proxy_host = $([ "$kind" = proxy ] && echo 172.31.10.171)
proxy_port = $([ "$kind" = proxy ] && echo 3128 || echo 0)
CFG
s3c() { in_ns "$ns_c" s3cmd -c "$work/s3cmd.cfg" "$@" 2>"$work/last.out"; }
s3c ls > out.txt && has "s3://$BUCKET" || fail "s3cmd ls"
s3c ls "s3://$BUCKET" > out.txt && has test2.txt || fail "s3cmd ls bucket"
pass "s3cmd ls and ls s3://$BUCKET"
s3c put test2.txt "s3://$BUCKET/s3cmd-test2.txt" >/dev/null || fail "s3cmd put"
s3c get --force "s3://$BUCKET/s3cmd-test2.txt" s3cmd-back.txt >/dev/null || fail "s3cmd get"
cmp test2.txt s3cmd-back.txt || fail "s3cmd: test2.txt differs"
s3c put big.bin "s3://$BUCKET/s3cmd-big.bin" >/dev/null || fail "s3cmd multipart put"
s3c get --force "s3://$BUCKET/s3cmd-big.bin" s3cmd-big.back >/dev/null || fail "s3cmd get big"
[ "$(sha256sum < s3cmd-big.back | cut -d' ' -f1)" = "$big_sum" ] || fail "s3cmd: 100 MiB SHA-256 differs"
pass "s3cmd put/get small and 100 MiB multipart, identical"

# --- rclone
rc() {
  # A CA bundle in the environment (AWS_CA_BUNDLE) makes rclone refuse plain HTTP.
  in_ns "$ns_c" "${rclone_env[@]}" RCLONE_CONFIG=/dev/null RCLONE_CONFIG_OSS_TYPE=s3 RCLONE_CONFIG_OSS_PROVIDER=Other \
    RCLONE_CA_CERT="$([ "$scheme" = https ] && echo "$work/ca.pem")" \
    RCLONE_CONFIG_OSS_ACCESS_KEY_ID="$AK" RCLONE_CONFIG_OSS_SECRET_ACCESS_KEY="$SK" \
    RCLONE_CONFIG_OSS_ENDPOINT="$scheme://$ENDPOINT" RCLONE_CONFIG_OSS_FORCE_PATH_STYLE=false \
    RCLONE_CONFIG_OSS_NO_CHECK_BUCKET="$([ "$kind" = policy ] && echo true || echo false)" \
    RCLONE_CONFIG_OSS_REGION=oss-ap-northeast-1 rclone "$@" 2>"$work/last.out"
}
rc lsd oss: > out.txt && has "$BUCKET" || fail "rclone lsd"
rc ls "oss:$BUCKET" > out.txt && has test2.txt || fail "rclone ls"
pass "rclone lsd and ls oss:$BUCKET"
rc copyto test2.txt "oss:$BUCKET/rclone-test2.txt" || fail "rclone upload"
rc copyto "oss:$BUCKET/rclone-test2.txt" rclone-back.txt || fail "rclone download"
cmp test2.txt rclone-back.txt || fail "rclone: test2.txt differs"
rc copyto big.bin "oss:$BUCKET/rclone-big.bin" || fail "rclone big upload"
rc copyto "oss:$BUCKET/rclone-big.bin" rclone-big.back || fail "rclone big download"
[ "$(sha256sum < rclone-big.back | cut -d' ' -f1)" = "$big_sum" ] || fail "rclone: 100 MiB SHA-256 differs"
pass "rclone copy small and 100 MiB, identical"

if polices; then
  # A bucket outside the allowlist: refused at the relay, as awscli sees it.
  if aws_ s3 cp ./test2.txt "s3://forbidden-bucket/test2.txt" >/dev/null; then
    fail "upload to forbidden-bucket was allowed"
  fi
  grep -q "AccessDenied" "$work/last.out" || fail "awscli did not report AccessDenied for forbidden-bucket"
  [ ! -e "$work/root/forbidden-bucket/test2.txt" ] || fail "the store received the denied upload"
  log_has 'bucket=forbidden-bucket -> 403 denied|proxy denied .*forbidden-bucket' || fail "the relay log does not name the denied bucket"
  pass "forbidden-bucket: awscli gets AccessDenied from the relay, the store never sees it"
fi

if polices; then
  # boto3, virtual-hosted and signed: the allowed bucket works, the other
  # one raises AccessDenied as parsed by botocore.
  cat > "$work/boto.py" <<'PY'
import os, sys
import boto3
from botocore.config import Config
from botocore.exceptions import ClientError
endpoint, bucket = sys.argv[1], sys.argv[2]
s3 = boto3.client("s3", endpoint_url=endpoint, region_name="oss-ap-northeast-1",
                  aws_access_key_id=os.environ["AK"], aws_secret_access_key=os.environ["SK"],
                  config=Config(s3={"addressing_style": "virtual"}))
s3.put_object(Bucket=bucket, Key="boto3.txt", Body=b"boto3 through the relay")
assert s3.get_object(Bucket=bucket, Key="boto3.txt")["Body"].read() == b"boto3 through the relay"
try:
    s3.list_objects_v2(Bucket="forbidden-bucket")
    sys.exit("forbidden-bucket was listed")
except ClientError as e:
    assert e.response["Error"]["Code"] == "AccessDenied", e.response
print("boto3 ok")
PY
  in_ns "$ns_c" "${client_env[@]}" AK="$AK" SK="$SK" python3 "$work/boto.py" "$scheme://$ENDPOINT" "$BUCKET" \
    > out.txt 2>"$work/last.out" && has "boto3 ok" || fail "boto3 through the relay"
  pass "boto3 put/get on $BUCKET, AccessDenied on forbidden-bucket"
fi

# --- Alibaba's own SDKs, virtual-hosted as on OSS: oss2 (signatures V1 and
# V4) and alibabacloud-oss-v2 (V4 and V1) list, put/get, upload in parts and
# fetch a presigned URL, comparing every body they read back.
sdk_env=("${client_env[@]}")
[ "$kind" = gateway-tls ] && sdk_env+=(REQUESTS_CA_BUNDLE="$work/ca.pem" SSL_CERT_FILE="$work/ca.pem")
in_ns "$ns_c" "${sdk_env[@]}" python3 "$here/../it/oss_sdks.py" "$scheme://$ENDPOINT" "$BUCKET" \
  "$AK" "$SK" ap-northeast-1 > out.txt 2>"$work/last.out" && has "all SDK steps passed" \
  || { cat out.txt >> "$work/last.out"; fail "Alibaba's SDKs through the relay"; }
pass "oss2 (V1, V4) and alibabacloud-oss-v2 (V4, V1): list, put/get, multipart, presigned GET"

if [ "$kind" = policy ]; then
  # Each refusal comes from the relay (its message says so), as each client
  # reports it, and the store never sees the request.
  denied_by_relay() { grep -q "ossrelay endpoint policy" "$work/last.out" || fail "$1: not refused by the relay's policy"; }
  if aws_ s3 rm "s3://$BUCKET/test2.txt" >/dev/null; then fail "aws s3 rm was allowed"; fi
  denied_by_relay "aws s3 rm"
  [ -e "$work/root/$BUCKET/test2.txt" ] || fail "test2.txt was deleted"
  pass "aws s3 rm: AccessDenied (policy statement 2: no deletes), the object stays"
  if s3c del "s3://$BUCKET/s3cmd-test2.txt" >/dev/null; then fail "s3cmd del was allowed"; fi
  grep -q "AccessDenied" "$work/last.out" || fail "s3cmd del: no AccessDenied"
  [ -e "$work/root/$BUCKET/s3cmd-test2.txt" ] || fail "s3cmd-test2.txt was deleted"
  pass "s3cmd del: AccessDenied, the object stays"
  if rc deletefile "oss:$BUCKET/rclone-test2.txt"; then fail "rclone deletefile was allowed"; fi
  [ -e "$work/root/$BUCKET/rclone-test2.txt" ] || fail "rclone-test2.txt was deleted"
  pass "rclone deletefile: refused, the object stays"
  mkdir -p "$work/root/forbidden-bucket" && echo "secret" > "$work/root/forbidden-bucket/passwords.txt"
  cat > "$work/policy.py" <<'PY'
import os, sys, urllib.request, urllib.error
import boto3, oss2
from botocore.config import Config
from botocore.exceptions import ClientError
endpoint, bucket = sys.argv[1], sys.argv[2]
def client(ak, sk):
    return boto3.client("s3", endpoint_url=endpoint, region_name="oss-ap-northeast-1",
                        aws_access_key_id=ak, aws_secret_access_key=sk,
                        config=Config(s3={"addressing_style": "virtual"}))
s3 = client(os.environ["AK"], os.environ["SK"])
def refused(what, f):
    try:
        f()
    except ClientError as e:
        assert e.response["Error"]["Code"] == "AccessDenied", (what, e.response)
        assert "ossrelay endpoint policy" in e.response["Error"]["Message"], (what, e.response)
        print("refused:", what)
        return
    sys.exit(what + " was allowed")
refused("copy from forbidden-bucket", lambda: s3.copy_object(
    Bucket=bucket, Key="leak.txt", CopySource={"Bucket": "forbidden-bucket", "Key": "passwords.txt"}))
refused("delete_object", lambda: s3.delete_object(Bucket=bucket, Key="test2.txt"))
refused("delete_objects", lambda: s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": "test2.txt"}]}))
other = client(os.environ["AK_OTHER"], os.environ["SK"])
refused("another access key ID", lambda: other.list_objects_v2(Bucket=bucket))
url = other.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "test2.txt"}, ExpiresIn=300)
try:
    urllib.request.urlopen(url, timeout=30)
    sys.exit("a presigned URL of another key was allowed")
except urllib.error.HTTPError as e:
    body = e.read().decode()
    assert e.code == 403 and "ossrelay endpoint policy" in body, (e.code, body)
    print("refused: presigned URL of another key")
host = endpoint.split("://")[1]
b = oss2.Bucket(oss2.Auth(os.environ["AK"], os.environ["SK"]), endpoint, bucket)
try:
    b.delete_object("test2.txt")
    sys.exit("oss2 delete_object was allowed")
except oss2.exceptions.AccessDenied as e:
    assert "ossrelay endpoint policy" in e.message, e.message
    print("refused: oss2 V1 delete_object")
b4 = oss2.Bucket(oss2.AuthV4(os.environ["AK"], os.environ["SK"]), endpoint, bucket, region="ap-northeast-1")
assert b4.get_object("test2.txt").read().startswith(b"test2")
print("policy ok")
PY
  in_ns "$ns_c" "${client_env[@]}" AK="$AK" SK="$SK" AK_OTHER="$AK_OTHER" python3 "$work/policy.py" "$scheme://$ENDPOINT" "$BUCKET" \
    > out.txt 2>"$work/last.out" && has "policy ok" || { cat out.txt >> "$work/last.out"; fail "boto3/oss2 policy refusals"; }
  [ ! -e "$work/root/$BUCKET/leak.txt" ] || fail "the copy from forbidden-bucket reached the store"
  pass "boto3: copy from another bucket, delete, batch delete, another key ID and its presigned URL refused; oss2 V1 delete refused, V4 get allowed"
  log_has 'action=oss:DeleteObject access_key=LTAIsystemTestKey01 statement=2 .*decision=denied' \
    || fail "the relay's access record lacks the denied delete's action, key ID and statement"
  pass "access records name the action, access key ID and deciding statement"
fi

if [ "$kind" != policy ] && { uses_dns || [ "$kind" = proxy ]; }; then
  # A bucket that is configured nowhere: create it, use it, prove the path.
  aws_ s3 mb "s3://new-bucket-123" >/dev/null || fail "aws s3 mb s3://new-bucket-123"
  aws_ s3 cp ./test2.txt "s3://new-bucket-123/" >/dev/null || fail "aws s3 cp to new-bucket-123"
  aws_ s3 cp "s3://new-bucket-123/test2.txt" ./new-back.txt >/dev/null || fail "aws download from new-bucket-123"
  cmp test2.txt new-back.txt || fail "new-bucket-123: test2.txt differs"
  pass "awscli creates and uses new-bucket-123, a name configured nowhere on the client"
fi
if uses_dns && [ "$kind" != policy ]; then
  https=(); [ "$kind" = gateway-tls ] && https=(--https)
  in_ns "$ns_c" env SSL_CERT_FILE="$work/ca.pem" "$bin" check --endpoint "$ENDPOINT" --bucket new-bucket-123 \
    --expect-relay 172.31.10.171 "${https[@]}" \
    --access-key "$AK" --secret-key "$SK" --upload-test 1M > "$work/check.txt" 2>"$work/last.out" \
    || { cat "$work/check.txt"; fail "ossrelay check from the client"; }
  grep -q "all checks passed" "$work/check.txt" || fail "ossrelay check did not pass"
  pass "ossrelay check from the client: $(grep -c '^✔' "$work/check.txt") checks passed"
  sed 's/^/    /' "$work/check.txt"
fi

# --- the relay's log shows the client's connections
n=$(grep -cE "stone [0-9]+: accepted TCP [0-9]+ from 10\.0\.10\.30:[0-9]+ mode=[0-9]+" "$work/relay.log" || true)
[ "$n" -gt 0 ] || fail "relay log has no 'accepted TCP ... from 10.0.10.30' line"
pass "relay log: $n 'accepted TCP ... from 10.0.10.30:...' lines"
echo "all $step steps passed ($kind)"
