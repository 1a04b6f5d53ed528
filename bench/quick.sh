#!/usr/bin/env bash
# Quick side-by-side throughput check: iperf3 direct, through ossrelay,
# through HAProxy (mode tcp, splice-auto) and through Debian's stone (when
# installed), one after another on loopback.
# Prints Gbit/s and the ratio ossrelay/HAProxy. Not a timed test; the full
# harness is issue 7's bench/.
#
#   bench/quick.sh [seconds-per-run] [streams]
#
# Needs: iperf3, haproxy (apt-get install iperf3 haproxy) and
# target/release/ossrelay (cargo build --release).
set -euo pipefail
secs=${1:-5}
streams=${2:-1}
root=$(cd "$(dirname "$0")/.." && pwd)
bin=$root/target/release/ossrelay
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_listen() { # port
  for _ in $(seq 200); do
    if ss -Hltn "sport = :$1" | grep -q LISTEN; then return 0; fi
    sleep 0.05
  done
  echo "nothing listening on $1 (see logs below)" >&2; cat "$work"/*.log >&2; return 1
}

[ -x "$bin" ] || { echo "build first: cargo build --release" >&2; exit 2; }
command -v iperf3 >/dev/null && command -v haproxy >/dev/null || { echo "needs iperf3 and haproxy" >&2; exit 2; }

# HAProxy refuses to start if maxconn needs more descriptors than allowed.
hard=$(ulimit -Hn); if [ "$hard" = unlimited ]; then hard=1048576; fi
maxconn=$(( (hard - 200) / 4 )); if [ "$maxconn" -gt 4000 ]; then maxconn=4000; fi

srv=$(free_port); relay=$(free_port); hap=$(free_port); stn=$(free_port)
iperf3 -s -p "$srv" >/dev/null 2>&1 & pids+=($!)
cat >"$work/relay.toml" <<CFG
[log]
level = "warn"
[[relay]]
name = "bench"
listen = "127.0.0.1:$relay"
upstream = "127.0.0.1:$srv"
CFG
"$bin" run -c "$work/relay.toml" 2>"$work/relay.log" & pids+=($!)
cat >"$work/haproxy.cfg" <<CFG
global
  maxconn $maxconn
defaults
  mode tcp
  timeout connect 10s
  timeout client 600s
  timeout server 600s
  option splice-auto
listen bench
  bind 127.0.0.1:$hap
  server s1 127.0.0.1:$srv
CFG
haproxy -f "$work/haproxy.cfg" -db >"$work/haproxy.log" 2>&1 & pids+=($!)
if command -v stone >/dev/null; then
  stone "127.0.0.1:$srv" "127.0.0.1:$stn" >"$work/stone.log" 2>&1 & pids+=($!)
  wait_listen "$stn"
fi
wait_listen "$srv"; wait_listen "$relay"; wait_listen "$hap"

run() { # port -> Gbit/s
  iperf3 -c 127.0.0.1 -p "$1" -t "$secs" -P "$streams" -J \
    | python3 -c 'import json,sys; print("%.2f" % (json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"]/1e9))'
}
direct=$(run "$srv"); ours=$(run "$relay"); theirs=$(run "$hap")
printf '| path | %s-stream Gbit/s |\n|---|---|\n' "$streams"
printf '| direct | %s |\n| ossrelay | %s |\n| haproxy | %s |\n' "$direct" "$ours" "$theirs"
if command -v stone >/dev/null; then
  st=$(run "$stn")
  printf '| stone | %s |\n' "$st"
  python3 -c "print('ossrelay/stone ratio: %.2f' % ($ours/$st))"
fi
python3 -c "print('ossrelay/haproxy ratio: %.2f' % ($ours/$theirs))"
