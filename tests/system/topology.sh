# shellcheck shell=bash
# The blog's topology in network namespaces, shared by the system tests
# (blog.sh, sftp.sh), which source this file after `set -euo pipefail` with
# `bin` set to the ossrelay binary:
#
#   client (10.0.10.30)  --  router (VPN)  --  relay (172.31.10.171)  --  oss (100.118.0.5)
#
# Only the relay can reach the oss namespace (a 100.64.0.0/10 address, like
# an OSS intranet VIP). Sourcing it checks for root and ip netns (exit 77
# with the reason otherwise) and defines the helpers; `topology_up` then
# makes the namespaces and `store_up` starts the store in the oss one.
# Each test writes the client's hosts file itself.
#
# Provides: skip pass fail in_ns log_has has wait_port; ENDPOINT BUCKET AK SK,
# ns_c ns_r ns_x ns_o (namespaces), work (a scratch directory, removed on
# exit), pids (processes to stop on exit: add every one started), step.

skip() { echo "SKIPPED: $*"; exit 77; }
[ "$(id -u)" = 0 ] || skip "needs root for ip netns"
command -v ip >/dev/null || skip "ip (iproute2) not installed"
ip netns list >/dev/null 2>&1 || skip "ip netns unavailable"

ENDPOINT=oss-ap-northeast-1-internal.aliyuncs.com
BUCKET=aws-alibaba-oss
AK=LTAIsystemTestKey01
SK=systemTestSecretKey0123456789
id=$$
ns_c=osr$id-client; ns_r=osr$id-router; ns_x=osr$id-relay; ns_o=osr$id-oss
work=
pids=()

cleanup() {
  set +e
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null; done
  for ns in "$ns_c" "$ns_r" "$ns_x" "$ns_o"; do
    ip netns del "$ns" 2>/dev/null
    rm -rf "/etc/netns/$ns"
  done
  [ -z "$work" ] || rm -rf "$work"
}

step=0
pass() { step=$((step + 1)); echo "ok $step - $*"; }
fail() { echo "not ok - $*"; echo "--- last command output"; tail -30 "$work/last.out" 2>/dev/null; tail -10 "$work/out.txt" 2>/dev/null; echo "--- relay log"; tail -20 "$work/relay.log" 2>/dev/null; echo "--- store log"; tail -20 "$work/store.log" 2>/dev/null; exit 1; }
in_ns() { local ns=$1; shift; ip netns exec "$ns" "$@"; }
# The relay writes its log lines in batches (at most 100 ms late, see
# src/observe/batch.rs), so a line about the request a client just finished
# may not be in the file yet: look for up to 5 s before calling it missing.
log_has() { for _ in $(seq 50); do grep -qE -- "$1" "$work/relay.log" && return 0; sleep 0.1; done; return 1; }
# Outputs go to files before grep: with pipefail, `grep -q` closing the pipe
# early would fail the client with SIGPIPE.
has() { grep -q -- "$1" "$work/out.txt"; }

wait_port() { # ns ip port
  for _ in $(seq 200); do
    if in_ns "$1" ss -Hltn "sport = :$3" | grep -q "$2:$3\|\*:$3\|0.0.0.0:$3"; then return 0; fi
    sleep 0.05
  done
  return 1
}

# The scratch directory, the namespaces, their links and routes, and the
# relay's hosts file (the endpoint is the store). /etc/netns/$ns_c exists
# for the caller's client hosts file.
topology_up() {
  work=$(mktemp -d /tmp/ossrelay-system.XXXXXX)
  trap cleanup EXIT
  for ns in "$ns_c" "$ns_r" "$ns_x" "$ns_o"; do ip netns add "$ns"; in_ns "$ns" ip link set lo up; done
  link() { # nsA ifA addrA nsB ifB addrB
    ip link add "$2" type veth peer name "$5"
    ip link set "$2" netns "$1"; ip link set "$5" netns "$4"
    in_ns "$1" ip addr add "$3" dev "$2"; in_ns "$1" ip link set "$2" up
    in_ns "$4" ip addr add "$6" dev "$5"; in_ns "$4" ip link set "$5" up
  }
  link "$ns_c" "c$id" 10.0.10.30/24 "$ns_r" "rc$id" 10.0.10.1/24
  link "$ns_r" "rx$id" 172.31.10.1/24 "$ns_x" "x$id" 172.31.10.171/24
  link "$ns_x" "xo$id" 100.118.0.1/24 "$ns_o" "o$id" 100.118.0.5/24
  in_ns "$ns_r" sysctl -qw net.ipv4.ip_forward=1
  in_ns "$ns_c" ip route add default via 10.0.10.1
  in_ns "$ns_x" ip route add 10.0.10.0/24 via 172.31.10.1
  mkdir -p "/etc/netns/$ns_c" "/etc/netns/$ns_x"
  printf '127.0.0.1 localhost\n100.118.0.5 %s\n' "$ENDPOINT" > "/etc/netns/$ns_x/hosts"
}

# The store (OSS stand-in) with $BUCKET and any further buckets named,
# reachable only from the relay; two steps pass.
store_up() { # [bucket...]
  local b buckets=(--bucket "$BUCKET")
  for b in "$@"; do buckets+=(--bucket "$b"); done
  mkdir -p "$work/root"
  # `ip netns exec` execs the store, so $! is the store itself and cleanup
  # stops it (a shell function in the background would leave it running).
  # shellcheck disable=SC2154 # bin: the caller's
  ip netns exec "$ns_o" "$bin" store --root "$work/root" --listen 100.118.0.5:80 --domain "$ENDPOINT" \
    "${buckets[@]}" --access-key "$AK" --secret-key "$SK" >"$work/store.log" 2>&1 &
  pids+=($!)
  wait_port "$ns_o" 100.118.0.5 80 || fail "store did not start"
  if in_ns "$ns_c" timeout 3 bash -c "exec 3<>/dev/tcp/100.118.0.5/80" 2>/dev/null; then
    fail "the client can reach the oss namespace directly"
  fi
  pass "client cannot reach 100.118.0.5:80 directly"
  in_ns "$ns_x" timeout 3 bash -c "exec 3<>/dev/tcp/100.118.0.5/80" || fail "relay cannot reach the store"
  pass "relay reaches the store"
}
