#!/usr/bin/env bash
# scp of one large file on loopback, side by side, in interleaved rounds:
#   sshd      OpenSSH's own sshd writing the file to local disk (the limit
#             of SSH on this machine)
#   ossrelay  `protocol = "sftp"` storing it as an object in `ossrelay
#             store` (scp over SFTP, the OpenSSH 9 default)
#   ossrelay -O  the same with legacy SCP (`scp -O`)
# Reports MiB/s per round, the medians and the ratio to sshd, and writes
# bench/results/sftp-<date>.md. Every copy is checked by SHA-256.
#
#   bench/sftp.sh [--rounds N] [--mib M] [OSSRELAY_BIN]
#
# Needs openssh-server (/usr/sbin/sshd) and openssh-client; build with
# `cargo build --release` first. Nothing else should run meanwhile: the
# machine has 2 cores.
set -euo pipefail
rounds=3 mib=1024 bin=target/release/ossrelay
while [ $# -gt 0 ]; do
  case $1 in
    --rounds) rounds=$2; shift 2 ;;
    --mib) mib=$2; shift 2 ;;
    *) bin=$1; shift ;;
  esac
done
[ -x "$bin" ] || { echo "no $bin: cargo build --release first" >&2; exit 2; }
[ -x /usr/sbin/sshd ] || { echo "needs /usr/sbin/sshd (apt-get install openssh-server)" >&2; exit 2; }
bin=$(readlink -f "$bin")
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d /tmp/ossrelay-bench-sftp.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done; echo "port $1 never opened" >&2; exit 1; }

cd "$work"
mkdir root disk
ssh-keygen -q -t ed25519 -N '' -f id -C bench
ssh-keygen -q -t ed25519 -N '' -f sshd_host_key
cp id.pub authorized_keys
head -c "${mib}M" /dev/urandom > big.bin
want=$(sha256sum < big.bin | cut -d' ' -f1)

p_store=$(port); p_relay=$(port); p_sshd=$(port)
"$bin" store --root root --listen "127.0.0.1:$p_store" --domain localhost --bucket bench \
  --access-key AKBENCH --secret-key SKBENCH > store.log 2>&1 &
pids+=($!)
cat > relay.toml <<CFG
[log]
level = "warn"

[[relay]]
name = "ingest"
protocol = "sftp"
listen = "127.0.0.1:$p_relay"
upstream = "localhost:$p_store"
region = "oss-ap-northeast-1"
host_keys = ["relay_host_key"]
generate_host_key = true
credentials = { access_key_id_env = "BENCH_AK", secret_env = "BENCH_SK" }
mount = "/mnt/ossfs"

[[relay.users]]
name = "root"
authorized_keys = "authorized_keys"
root = "bench/"
CFG
BENCH_AK=AKBENCH BENCH_SK=SKBENCH "$bin" run -c relay.toml > relay.log 2>&1 &
pids+=($!)
cat > sshd_config <<CFG
Port $p_sshd
ListenAddress 127.0.0.1
HostKey $work/sshd_host_key
AuthorizedKeysFile $work/authorized_keys
PermitRootLogin yes
PasswordAuthentication no
UsePAM no
StrictModes no
PidFile $work/sshd.pid
Subsystem sftp internal-sftp
CFG
mkdir -p /run/sshd
/usr/sbin/sshd -D -f "$work/sshd_config" -E "$work/sshd.log" &
pids+=($!)
wait_port "$p_store"; wait_port "$p_relay"; wait_port "$p_sshd"

ssh_opts=(-i "$work/id" -o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR)
# MiB/s of one copy, after checking what arrived.
copy() { # name port extra-flag destination stored-file
  local start end
  rm -f "$5"
  start=$(date +%s.%N)
  scp "${ssh_opts[@]}" $3 -P "$2" big.bin "root@127.0.0.1:$4" >/dev/null
  end=$(date +%s.%N)
  [ "$(sha256sum < "$5" | cut -d' ' -f1)" = "$want" ] || { echo "$1: SHA-256 differs" >&2; exit 1; }
  python3 -c "print(f'{$mib / ($end - $start):.1f}')"
}
declare -A got
for r in $(seq "$rounds"); do
  got[sshd]+="$(copy sshd "$p_sshd" "" "$work/disk/big.bin" "$work/disk/big.bin") "
  got[ossrelay]+="$(copy ossrelay "$p_relay" "" /mnt/ossfs/big.bin "$work/root/bench/big.bin") "
  got[ossrelay-O]+="$(copy ossrelay-O "$p_relay" -O /mnt/ossfs/big.bin "$work/root/bench/big.bin") "
  echo "round $r of $rounds done" >&2
done

date=$(date -u +%Y-%m-%d-%H%M)
out="$here/results/sftp-$date.md"
python3 - "$mib" "$rounds" "${got[sshd]}" "${got[ossrelay]}" "${got[ossrelay-O]}" > "$out" <<'PY'
import statistics, sys, platform, os
mib, rounds = sys.argv[1], sys.argv[2]
rows = {"sshd (to local disk)": sys.argv[3], "ossrelay sftp (scp, SFTP)": sys.argv[4],
        "ossrelay sftp (scp -O, legacy)": sys.argv[5]}
vals = {k: [float(x) for x in v.split()] for k, v in rows.items()}
base = statistics.median(vals["sshd (to local disk)"])
print(f"# scp of {mib} MiB on loopback, {rounds} interleaved rounds\n")
print(f"Machine: {os.cpu_count()} CPUs, {platform.release()}. Command: `bench/sftp.sh --rounds {rounds} --mib {mib}`.\n")
print("ossrelay stores into `ossrelay store` (s3s-fs on the same disk), which writes each")
print("multipart upload's parts and then the object: the store's disk work is in its row.\n")
print("| path | MiB/s per round | median | ratio to sshd |")
print("|---|---|---|---|")
for k, v in vals.items():
    m = statistics.median(v)
    print(f"| {k} | {', '.join(f'{x:.0f}' for x in v)} | {m:.0f} | {m / base:.2f} |")
PY
cat "$out"
echo "wrote $out" >&2
