#!/usr/bin/env bash
# scp and sftp into a bucket: the blog's ECS host (172.31.10.172), where an
# sshd wrote into an ossfs mount, replaced by ossrelay's `protocol = "sftp"`
# relay, with real OpenSSH clients, sshpass and rclone's sftp backend.
#
#   client (10.0.10.30) -- router (VPN) -- relay (172.31.10.171 and .172:22) -- oss (100.118.0.5)
#
# The namespaces and the store are topology.sh's, shared with blog.sh. The
# user sees the bucket at /mnt/ossfs, as under ossfs; every file is compared
# by SHA-256 with the store's copy (its file under $work/root/$BUCKET).
#
#   tests/system/sftp.sh OSSRELAY_BIN
#
# Needs root, ip netns, OpenSSH's ssh, scp, sftp, ssh-keygen and
# ssh-keyscan, sshpass and rclone.
# Exit 0: every step passed; 1: a step failed; 77: skipped (reason printed).
set -euo pipefail

bin=${1:?usage: sftp.sh OSSRELAY_BIN}
bin=$(readlink -f "$bin")
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=tests/system/topology.sh
. "$here/topology.sh"

for t in ssh scp sftp ssh-keygen ssh-keyscan sshpass rclone sha256sum ss timeout pgrep; do
  command -v "$t" >/dev/null || skip "$t not installed"
done

HOST=172.31.10.172
MNT=/mnt/ossfs
PW='blog root password 1'
RPW='reader password 2'

# --- topology: the relay namespace also has the ECS host's address
topology_up
in_ns "$ns_x" ip addr add "$HOST/24" dev "x$id"
printf '127.0.0.1 localhost\n' > "/etc/netns/$ns_c/hosts"
printf '100.118.0.5 %s.%s\n' "$BUCKET" "$ENDPOINT" >> "/etc/netns/$ns_x/hosts"
pass "namespaces: client 10.0.10.30, router, relay 172.31.10.171 and $HOST, oss 100.118.0.5"
# shellcheck disable=SC2119 # no buckets but $BUCKET
store_up

# --- helpers
stored() { echo "$work/root/$BUCKET/$1"; }
sum() { sha256sum < "$1" | cut -d' ' -f1; }
# The store holds KEY with the same SHA-256 as the local FILE.
same() { # file key
  [ -f "$(stored "$2")" ] || fail "the store has no $2"
  [ "$(sum "$1")" = "$(sum "$(stored "$2")")" ] || fail "$2: the store's SHA-256 differs from $1's"
}
# Two local files are identical.
same_local() { [ "$(sum "$1")" = "$(sum "$2")" ] || fail "$2 differs from $1"; }
# How many parts of KEY (an ERE) the store accepted: its UploadPart
# requests. Its log lines too may be written up to 100 ms late.
parts_of() { grep -cE "PUT [^ ]*/$1\?[^ ]*partNumber=[0-9]+[^ ]* 200" "$work/store.log" || true; }
parts_are() { # key-ERE count
  for _ in $(seq 50); do [ "$(parts_of "$1")" = "$2" ] && return 0; sleep 0.1; done
  return 1
}
# Files s3s-fs keeps in its root for an upload in progress: the upload id
# (.upload-<id>.json), each stored part (.upload_id-<id>.part-<n>), the
# object attributes (.bucket-<b>.object-<k>.upload-<id>.metadata.json) and a
# write under way (.tmp.<n>.internal.part, renamed when complete).
upload_files() {
  find "$work/root" -maxdepth 1 -type f \( -name '.upload-*' -o -name '.upload_id-*' \
    -o -name '.bucket-*.upload-*' -o -name '.tmp.*.internal.part' \) -printf '%f\n'
}
# Every file in the store, for "nothing new in the store".
store_files() { (cd "$work/root" && find . -type f | sort); }
# A relay log line (up to 5 s late) that matches every one of the EREs given.
log_line() { # ERE...
  local p
  for _ in $(seq 50); do
    cp "$work/relay.log" "$work/log.sel"
    for p in "$@"; do
      grep -E -- "$p" "$work/log.sel" > "$work/log.tmp" || true
      mv "$work/log.tmp" "$work/log.sel"
    done
    [ -s "$work/log.sel" ] && return 0
    sleep 0.1
  done
  return 1
}
# Clients run in the client namespace, without an agent, with a timeout
# (T seconds, 300 unless set) so that a stuck relay fails the step.
cl() { in_ns "$ns_c" timeout "${T:-300}" env -u SSH_AUTH_SOCK -u AWS_CA_BUNDLE RCLONE_CONFIG=/dev/null "$@" 2>"$work/last.out"; }
# The client namespace has no known_hosts for the relay.
ssh_opts=(-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR)
key=(-i "$work/id_ed25519" -o IdentitiesOnly=yes -o BatchMode=yes)
# The refusal a client reports: OpenSSH's own words.
refused() { grep -qE "Permission denied|No such file" "$work/last.out" || fail "$1: no 'Permission denied' or 'No such file' from the client"; }

# --- the relay on the ECS host's address, in place of sshd over ossfs
ssh-keygen -q -t ed25519 -N '' -C root@client -f "$work/id_ed25519"
ssh-keygen -q -t ed25519 -N '' -C stranger@client -f "$work/id_other"
cp "$work/id_ed25519.pub" "$work/root.authorized_keys"
root_hash=$(printf '%s\n' "$PW" | "$bin" hash-password 2>"$work/last.out") || fail "ossrelay hash-password"
reader_hash=$(printf '%s\n' "$RPW" | "$bin" hash-password 2>"$work/last.out") || fail "ossrelay hash-password"
cat > "$work/relay.toml" <<CFG
[log]
level = "info"

[[relay]]
name = "ingest"
protocol = "sftp"
listen = "$HOST:22"
upstream = "$ENDPOINT:80"
host_keys = ["ssh_host_ed25519_key"]
generate_host_key = true
credentials = { access_key_id_env = "OSS_ACCESS_KEY_ID", secret_env = "OSS_ACCESS_KEY_SECRET" }
mount = "$MNT"

[[relay.users]]
name = "root"
authorized_keys = "root.authorized_keys"
password_hash = "$root_hash"
root = "$BUCKET/"

[[relay.users]]
name = "reader"
password_hash = "$reader_hash"
root = "$BUCKET/"
read_only = true
CFG
# `exec` all the way down, so $! is the relay itself (for cleanup and for
# its peak RSS in /proc).
(cd "$work" && OSS_ACCESS_KEY_ID="$AK" OSS_ACCESS_KEY_SECRET="$SK" \
  exec ip netns exec "$ns_x" "$bin" run -c "$work/relay.toml") >"$work/relay.log" 2>&1 &
relay_pid=$!
pids+=("$relay_pid")
wait_port "$ns_x" "$HOST" 22 || fail "relay did not start"
hostkey=$work/ssh_host_ed25519_key
[ -f "$hostkey" ] || fail "the relay did not generate $hostkey"
[ "$(stat -c %a "$hostkey")" = 600 ] || fail "$hostkey has mode $(stat -c %a "$hostkey"), not 600"
# The client is offered that very key.
in_ns "$ns_c" ssh-keyscan -T 10 -t ed25519 "$HOST" > "$work/out.txt" 2>"$work/last.out" || fail "ssh-keyscan $HOST"
[ "$(awk '{print $2, $3}' "$work/out.txt")" = "$(ssh-keygen -y -f "$hostkey" | awk '{print $1, $2}')" ] \
  || fail "the relay's host key is not the one in $hostkey"
pass "relay listens on $HOST:22 with a generated ed25519 host key (mode 600) that ssh-keyscan sees"

# --- client files
cd "$work"
head -c 6000 /dev/urandom > test4.txt
head -c 20M /dev/urandom > big20.bin

# --- the blog's line, verbatim, with a password
cl sshpass -p "$PW" scp -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null ./test4.txt root@172.31.10.172:/mnt/ossfs/ \
  || fail "the blog's scp line with a password"
same test4.txt test4.txt
pass "sshpass -p … scp ./test4.txt root@$HOST:/mnt/ossfs/ (password): the store has $BUCKET/test4.txt, SHA-256 equal"

# --- key auth, 20 MiB: a multipart upload in 8 MiB parts
cl scp "${ssh_opts[@]}" "${key[@]}" ./big20.bin "root@$HOST:$MNT/big20.bin" || fail "scp -i id_ed25519 big20.bin"
same big20.bin big20.bin
parts_are 'big20\.bin' 3 || fail "big20.bin went to the store in $(parts_of 'big20\.bin') parts, not 3 of 8 MiB"
cl scp "${ssh_opts[@]}" "${key[@]}" "root@$HOST:$MNT/big20.bin" ./big20.back || fail "scp download big20.bin"
same_local big20.bin big20.back
pass "scp -i id_ed25519 (key, BatchMode): 20 MiB up in 3 parts and back down, SHA-256 equal"

# --- legacy SCP (scp -O: `scp -t` / `scp -f` on the relay)
head -c 20M /dev/urandom > legacy.bin
cl scp -O "${ssh_opts[@]}" "${key[@]}" ./legacy.bin "root@$HOST:$MNT/legacy.bin" || fail "scp -O upload"
same legacy.bin legacy.bin
cl scp -O "${ssh_opts[@]}" "${key[@]}" "root@$HOST:$MNT/legacy.bin" ./legacy.back || fail "scp -O download"
same_local legacy.bin legacy.back
touch -d '2021-03-04 05:06:07' test4.txt
cl scp -O -p "${ssh_opts[@]}" "${key[@]}" ./test4.txt "root@$HOST:$MNT/legacy-p.txt" || fail "scp -O -p upload"
[ ! -s "$work/last.out" ] || fail "scp -O -p upload warned"
same test4.txt legacy-p.txt
cl scp -O -p "${ssh_opts[@]}" "${key[@]}" "root@$HOST:$MNT/legacy-p.txt" ./legacy-p.back || fail "scp -O -p download"
[ ! -s "$work/last.out" ] || fail "scp -O -p download warned"
same_local test4.txt legacy-p.back
pass "scp -O: 20 MiB up and down, and -p (times) both ways without a warning, SHA-256 equal"

# --- sftp -b, relative to the login directory
printf 'first sftp file\n' > a.txt
printf 'second sftp file\n' > b.txt
sftp_b() { # batch commands as arguments; output in out.txt
  printf '%s\n' "$@" > "$work/batch"
  cl sftp "${ssh_opts[@]}" "${key[@]}" -b "$work/batch" "root@$HOST" > "$work/out.txt"
}
listed() { grep -qE "(^|/)$1/?\$" "$work/out.txt"; }
sftp_b pwd "put a.txt" "get a.txt a.back" "ls -1" || fail "sftp put/get/ls"
has "Remote working directory: $MNT" || fail "sftp's login directory is not $MNT"
same a.txt a.txt
same_local a.txt a.back
listed 'a\.txt' || fail "sftp ls does not list a.txt"
sftp_b "mkdir dir" "put b.txt dir/b.txt" "ls -1" "ls -1 dir" || fail "sftp mkdir and put into it"
same b.txt dir/b.txt
listed dir || fail "sftp ls does not list dir"
listed 'dir/b\.txt' || fail "sftp ls dir does not list dir/b.txt"
sftp_b "rename a.txt dir/c.txt" "ls -1 dir" || fail "sftp rename"
same a.txt dir/c.txt
[ ! -e "$(stored a.txt)" ] || fail "a.txt is still in the store after its rename"
listed 'dir/c\.txt' || fail "sftp ls dir does not list the renamed dir/c.txt"
sftp_b "rm dir/c.txt" "rm dir/b.txt" "rmdir dir" "ls -1" || fail "sftp rm and rmdir"
if [ -e "$(stored dir/c.txt)" ] || [ -e "$(stored dir/b.txt)" ]; then fail "rm left an object in the store"; fi
! listed dir || fail "sftp ls still lists dir after rmdir"
pass "sftp -b: pwd is $MNT; put, get, ls, mkdir, put into it, rename, rm, rmdir, each as the store shows"

# --- rclone's sftp backend: 200 small files
mkdir many
for i in $(seq 200); do head -c $((RANDOM % 4000 + 1)) /dev/urandom > "many/f$i.bin"; done
rclone_sftp=(--sftp-host "$HOST" --sftp-user root --sftp-pass "$(RCLONE_CONFIG=/dev/null rclone obscure "$PW")"
  --sftp-shell-type none --sftp-disable-hashcheck)
cl rclone sync ./many ":sftp:$MNT/many" "${rclone_sftp[@]}" || fail "rclone sync ./many"
for f in many/*; do same "$f" "$f"; done
cl rclone lsf ":sftp:$MNT/many" "${rclone_sftp[@]}" > "$work/out.txt" || fail "rclone lsf"
[ "$(grep -c '^f[0-9]*\.bin$' "$work/out.txt")" = 200 ] || fail "rclone lsf lists $(wc -l < "$work/out.txt") files, not 200"
pass "rclone sync of 200 files over sftp: all 200 in the store with equal SHA-256, rclone lsf lists 200"

# --- refusals: the client gets OpenSSH's usual answer, the store nothing
store_files > "$work/before.txt"
if cl sshpass -p 'not the password' scp "${ssh_opts[@]}" ./test4.txt "root@$HOST:$MNT/wrong-pw.txt"; then
  fail "a wrong password was accepted"
fi
grep -q "Permission denied" "$work/last.out" || fail "wrong password: no 'Permission denied' from scp"
log_line "authentication failed" "root" || fail "the relay log has no 'authentication failed' line for root"
if cl scp "${ssh_opts[@]}" -i "$work/id_other" -o IdentitiesOnly=yes -o BatchMode=yes ./test4.txt "root@$HOST:$MNT/stranger.txt"; then
  fail "an unknown key was accepted"
fi
grep -q "Permission denied (publickey" "$work/last.out" || fail "unknown key: no 'Permission denied (publickey…)' from scp"
pass "wrong password and unknown key: Permission denied, the relay logs the failure"
if cl sshpass -p "$RPW" scp "${ssh_opts[@]}" ./test4.txt "reader@$HOST:$MNT/reader.txt"; then
  fail "the read-only user uploaded"
fi
refused "reader's scp upload"
for cmd in "put b.txt reader.txt" "rm test4.txt" "mkdir rdir" "rename test4.txt moved.txt"; do
  printf '%s\n' "$cmd" > "$work/batch"
  # sftp -b turns on BatchMode, which sshpass needs off: the first -o wins.
  if cl sshpass -p "$RPW" sftp -o BatchMode=no "${ssh_opts[@]}" -b "$work/batch" "reader@$HOST" > "$work/out.txt"; then
    fail "the read-only user's sftp '$cmd' succeeded"
  fi
  grep -q "Permission denied" "$work/last.out" || fail "reader's sftp '$cmd': no 'Permission denied'"
done
cl sshpass -p "$RPW" scp "${ssh_opts[@]}" "reader@$HOST:$MNT/test4.txt" ./reader-back.txt || fail "the read-only user's download"
same_local test4.txt reader-back.txt
same test4.txt test4.txt
pass "read-only user: scp upload, sftp put, rm, mkdir, rename: Permission denied; downloads work"
for target in "/etc/ossrelay-sftp-test-$id" "$MNT/../ossrelay-sftp-test-$id" "/mnt/other/ossrelay-sftp-test-$id"; do
  if cl scp "${ssh_opts[@]}" "${key[@]}" ./test4.txt "root@$HOST:$target"; then
    fail "root uploaded to $target, outside its root"
  fi
  refused "upload to $target"
done
if cl scp "${ssh_opts[@]}" "${key[@]}" "root@$HOST:/etc/passwd" ./passwd; then
  fail "root downloaded /etc/passwd"
fi
refused "download of /etc/passwd"
[ ! -e "/etc/ossrelay-sftp-test-$id" ] || fail "a file was written to the relay's /etc"
sleep 0.5  # a store log line is written at most 100 ms late
! grep -E "ossrelay-sftp-test|passwd" "$work/store.log" > "$work/last.out" || fail "a request for a path outside the root reached the store"
store_files > "$work/after.txt"
diff "$work/before.txt" "$work/after.txt" > "$work/last.out" || fail "the refused requests changed the store"
pass "outside the root (/etc, $MNT/.., /mnt/other, /etc/passwd): refused, nothing reached the store"

# --- 1 GiB by scp: the relay streams it (peak RSS) in 128 parts
head -c 1G /dev/urandom > huge.bin
hwm_before=$(awk '/^VmHWM:/ {print int($2 / 1024)}' "/proc/$relay_pid/status")
T=1200 cl scp "${ssh_opts[@]}" "${key[@]}" ./huge.bin "root@$HOST:$MNT/huge.bin" || fail "scp of 1 GiB"
[ "$(sum huge.bin)" = "$(sum "$(stored huge.bin)")" ] || fail "huge.bin: the store's SHA-256 differs"
parts_are 'huge\.bin' 128 || fail "huge.bin went to the store in $(parts_of 'huge\.bin') parts, not 128"
hwm_kib=$(awk '/^VmHWM:/ {print $2}' "/proc/$relay_pid/status")
[ -n "$hwm_kib" ] || fail "no VmHWM for the relay (pid $relay_pid)"
[ "$hwm_kib" -lt $((300 * 1024)) ] || fail "the relay's peak RSS is $((hwm_kib / 1024)) MiB, not below 300 MiB"
huge_sum=$(sum huge.bin)
rm -f huge.bin
[ -z "$(upload_files)" ] || fail "completed uploads left files behind in the store: $(upload_files | tr '\n' ' ')"
pass "scp of 1 GiB in 128 parts, SHA-256 equal; relay peak RSS (VmHWM) $((hwm_kib / 1024)) MiB < 300 MiB (${hwm_before:-?} MiB before it); no upload files left"

# --- renaming an object over OSS's 1 GB CopyObject limit: UploadPartCopy
T=600 sftp_b "rename huge.bin huge-renamed.bin" || fail "sftp rename of 1 GiB"
[ ! -e "$(stored huge.bin)" ] || fail "huge.bin is still in the store after its rename"
[ "$(sum "$(stored huge-renamed.bin)")" = "$huge_sum" ] || fail "huge-renamed.bin: the store's SHA-256 differs"
log_has 'op=rename .*huge\.bin -> huge-renamed\.bin \(3 ranges by UploadPartCopy\).*result=ok' \
  || fail "the relay's rename record does not say the 1 GiB object went in 3 UploadPartCopy ranges"
[ -z "$(upload_files)" ] || fail "the rename left upload files behind in the store: $(upload_files | tr '\n' ' ')"
pass "sftp rename of the 1 GiB object: copied in ranges (UploadPartCopy) at the store, SHA-256 equal, the old name gone"

# --- a session killed mid-upload leaves no object and no multipart upload
head -c 512M /dev/urandom > half.bin
# `ip netns exec` execs scp, so $! is the scp client itself.
ip netns exec "$ns_c" env -u SSH_AUTH_SOCK scp "${ssh_opts[@]}" "${key[@]}" ./half.bin "root@$HOST:$MNT/half.bin" \
  >/dev/null 2>"$work/last.out" &
scp_pid=$!
pids+=("$scp_pid")
disown "$scp_pid"  # (or bash reports "Killed" on stderr, at a time of its choosing)
part_stored() { upload_files > "$work/uploads.txt"; grep -q '^\.upload_id-.*\.part-1$' "$work/uploads.txt"; }
for _ in $(seq 600); do
  part_stored && break
  kill -0 "$scp_pid" 2>/dev/null || fail "the 512 MiB scp ended before its first part was stored"
  sleep 0.1
done
part_stored || fail "no part of half.bin reached the store within 60 s"
kill -0 "$scp_pid" 2>/dev/null || fail "the 512 MiB scp ended before it could be killed"
# scp's own ssh, to stop as well should it outlive scp.
ssh_pid=$(pgrep -P "$scp_pid" || true)
[ -z "$ssh_pid" ] || pids+=("$ssh_pid")
kill -9 "$scp_pid"
for _ in $(seq 100); do
  [ ! -e "$(stored half.bin)" ] || fail "half.bin appeared in the store after its scp was killed"
  [ -n "$(upload_files)" ] || break
  sleep 0.1
done
[ -z "$(upload_files)" ] || fail "10 s after the kill the store still has upload files: $(upload_files | tr '\n' ' ')"
[ ! -e "$(stored half.bin)" ] || fail "half.bin appeared in the store after its scp was killed"
pass "scp of 512 MiB killed (kill -9) after its first part: no object, the multipart upload aborted within 10 s"

# --- access records
log_line 'user=root( |$)' 'op=put( |$)' 'result=' 'test4\.txt' || fail "no access record with user=root op=put for test4.txt"
for op in get ls mkdir rename rm rmdir; do
  log_line 'user=root( |$)' "op=$op( |\$)" 'result=' || fail "no access record with user=root op=$op"
done
pass "access records: user=root op=put for test4.txt, and op=get, ls, mkdir, rename, rm, rmdir"

echo "all $step steps passed (sftp)"
