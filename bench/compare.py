#!/usr/bin/env python3
"""Side-by-side relay benchmark on loopback: ossrelay against HAProxy,
nginx (stream), socat, stone and redir, one after another in one run.

    bench/compare.py [--smoke] [--secs N] [--idle N] [--rounds N] [--only A,B] [--out DIR]
    OSSRELAY_BASELINE=/path/to/older/ossrelay bench/compare.py --rounds 5 --only ossrelay,ossrelay-base

Measures, for each relay that is installed:
  * iperf3 throughput, 1 and 4 streams (Gbit/s), and relay CPU seconds
    per GiB moved (utime+stime of the relay's process tree, from /proc);
  * wrk, 50 connections, a 1 KiB file from nginx: keep-alive req/s and
    p99, and `Connection: close` req/s (new connections per second);
  * resident memory per idle relayed connection, with N open pairs, each
    proven live by echoing a byte through the first and the last;
  * UDP datagrams/s (iperf3 -u, 64-byte datagrams) where the relay does UDP;
  * ossrelay's http gateway mode against its own tcp mode (wrk keep-alive).

With --rounds N every relay (and `direct`, no relay at all, the machine's
noise gauge) is measured N times, alternating A B C A B C ..., and each
figure is the median of its rounds, shown with its min-max range. With
OSSRELAY_BASELINE set, a second ossrelay binary runs as the relay
`ossrelay-base`, for A/B comparisons of two builds on one machine; a ratio
whose two ranges overlap is flagged "within noise".

Readiness is waiting for the listening socket in /proc/net, never a probe
connection. Every process started here is stopped by PID. Results go to
<out>/<date>.md and .json (ratios to each peer) and a PNG chart when
matplotlib is available. Not a test: CI runs --smoke to prove it works.
"""

import argparse
import asyncio
import datetime
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target", "release", "ossrelay")
CLK = os.sysconf("SC_CLK_TCK")
procs = []


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def listening(port, udp=False):
    files = ["/proc/net/udp", "/proc/net/udp6"] if udp else ["/proc/net/tcp", "/proc/net/tcp6"]
    needle = ":%04X" % port
    for f in files:
        try:
            for line in open(f).read().splitlines()[1:]:
                cols = line.split()
                if cols[1].endswith(needle) and (udp or cols[3] == "0A"):
                    return True
        except OSError:
            pass
    return False


def start(cmd, port, udp=False, **kw):
    # Its own process group, so stopping it also stops what it forked
    # (socat's per-connection children).
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         start_new_session=True, **kw)
    procs.append(p)
    deadline = time.time() + 10
    while not listening(port, udp):
        if p.poll() is not None or time.time() > deadline:
            raise RuntimeError("%s did not start" % cmd[0])
        time.sleep(0.02)
    return p


def stop(p):
    try:
        os.killpg(p.pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    try:
        p.wait(5)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()


def cmdline(pid):
    try:
        return open("/proc/%d/cmdline" % pid, "rb").read()
    except OSError:
        return None


def tree(pid):
    """pid, its descendants, and processes running its exact command line
    (redir double-forks its connection handlers away to init)."""
    kids = {}
    mine = cmdline(pid)
    twins = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                ppid = int(open("/proc/%s/stat" % d).read().rsplit(")", 1)[1].split()[1])
                kids.setdefault(ppid, []).append(int(d))
                if mine and int(d) != pid and ppid == 1 and cmdline(int(d)) == mine:
                    twins.append(int(d))
            except (OSError, IndexError, ValueError):
                pass
    out, todo = [], [pid] + twins
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(kids.get(p, []))
    return out


def cpu_seconds(pid):
    """CPU of the tree, counting reaped children too (socat forks)."""
    total = 0
    for p in tree(pid):
        try:
            f = open("/proc/%d/stat" % p).read().rsplit(")", 1)[1].split()
            total += sum(int(x) for x in f[11:15])
        except (OSError, IndexError, ValueError):
            pass
    return total / CLK


def rss_kib(pid):
    total = 0
    for p in tree(pid):
        try:
            for line in open("/proc/%d/status" % p):
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total


# ---- backends -------------------------------------------------------------

def start_backends(work):
    ports = {"iperf": free_port(), "web": free_port(), "echo": free_port()}
    start(["iperf3", "-s", "-p", str(ports["iperf"])], ports["iperf"])
    os.makedirs(os.path.join(work, "www"), exist_ok=True)
    with open(os.path.join(work, "www", "1k"), "wb") as f:
        f.write(b"x" * 1024)
    conf = os.path.join(work, "backend-nginx.conf")
    with open(conf, "w") as f:
        f.write(NGINX_BACKEND % dict(w=work, port=ports["web"]))
    start(["nginx", "-e", os.path.join(work, "nginx-b.err"), "-g", "daemon off;", "-c", conf], ports["web"])
    threading.Thread(target=echo_server, args=(ports["echo"],), daemon=True).start()
    deadline = time.time() + 5
    while not listening(ports["echo"]) and time.time() < deadline:
        time.sleep(0.02)
    return ports


NGINX_BACKEND = """
pid %(w)s/nginx-b.pid;
error_log %(w)s/nginx-b.err;
worker_processes 1;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path %(w)s; proxy_temp_path %(w)s; fastcgi_temp_path %(w)s;
  uwsgi_temp_path %(w)s; scgi_temp_path %(w)s;
  keepalive_requests 1000000;
  server { listen 127.0.0.1:%(port)d; root %(w)s/www; }
}
"""


def echo_server(port):
    async def handle(r, w):
        try:
            while True:
                data = await r.read(65536)
                if not data:
                    break
                w.write(data)
                await w.drain()
        except OSError:
            pass
        w.close()

    async def main():
        srv = await asyncio.start_server(handle, "127.0.0.1", port, backlog=8192)
        async with srv:
            await srv.serve_forever()

    asyncio.run(main())


# ---- relays ---------------------------------------------------------------

def relay_ossrelay(work, listen, target, udp_target=None, mode="tcp", binary=None):
    cfg = os.path.join(work, "ossrelay-%d.toml" % listen)
    with open(cfg, "w") as f:
        f.write('[log]\nlevel = "error"\n')
        if mode == "http":
            f.write('[[relay]]\nname = "gw"\nprotocol = "http"\nlisten = "127.0.0.1:%d"\n'
                    'default_route = "127.0.0.1:%d"\nmax_connections = 100000\n' % (listen, target))
        else:
            f.write('[[relay]]\nname = "t"\nlisten = "127.0.0.1:%d"\nupstream = "127.0.0.1:%d"\n'
                    'max_connections = 100000\n' % (listen, target))
        if udp_target:
            f.write('[[relay]]\nname = "u"\nprotocol = "udp"\nlisten = "127.0.0.1:%d"\n'
                    'upstream = "127.0.0.1:%d"\nmax_sessions = 100000\n' % (listen, udp_target))
    return start([binary or BIN, "run", "-c", cfg], listen)


def relay_ossrelay_base(work, listen, target, udp_target=None, mode="tcp"):
    return relay_ossrelay(work, listen, target, udp_target, mode,
                          binary=os.environ.get("OSSRELAY_BASELINE"))


def relay_haproxy(work, listen, target, udp_target=None):
    # HAProxy refuses to start if maxconn needs more descriptors than
    # allowed; two per relayed connection plus headroom.
    hard = os.sysconf("SC_OPEN_MAX")
    maxconn = max(1000, min(20000, int((hard - 500) / 2.5)))
    cfg = os.path.join(work, "haproxy-%d.cfg" % listen)
    with open(cfg, "w") as f:
        f.write("global\n  maxconn %d\ndefaults\n  mode tcp\n  timeout connect 10s\n"
                "  timeout client 600s\n  timeout server 600s\n  option splice-auto\n"
                "listen b\n  bind 127.0.0.1:%d\n  maxconn %d\n  server s1 127.0.0.1:%d\n"
                % (maxconn, listen, maxconn, target))
    return start(["haproxy", "-db", "-f", cfg], listen)


def relay_nginx(work, listen, target, udp_target=None):
    mod = "/usr/lib/nginx/modules/ngx_stream_module.so"
    cfg = os.path.join(work, "nginx-s-%d.conf" % listen)
    udp = ("server { listen 127.0.0.1:%d udp; proxy_pass 127.0.0.1:%d; proxy_timeout 10s; }"
           % (listen, udp_target)) if udp_target else ""
    with open(cfg, "w") as f:
        f.write("load_module %s;\npid %s/nginx-s.pid;\nerror_log %s/nginx-s.err;\n"
                "worker_processes 1;\nworker_rlimit_nofile 40000;\n"
                "events { worker_connections 20000; }\n"
                "stream { server { listen 127.0.0.1:%d; proxy_pass 127.0.0.1:%d; } %s }\n"
                % (mod, work, work, listen, target, udp))
    return start(["nginx", "-e", os.path.join(work, "nginx-s.err"), "-g", "daemon off;", "-c", cfg], listen)


def relay_socat(work, listen, target, udp_target=None):
    p = start(["socat", "TCP-LISTEN:%d,bind=127.0.0.1,fork,reuseaddr,backlog=4096" % listen,
               "TCP:127.0.0.1:%d,nodelay" % target], listen)
    if udp_target:
        start(["socat", "UDP-LISTEN:%d,bind=127.0.0.1,fork,reuseaddr" % listen,
               "UDP:127.0.0.1:%d" % udp_target], listen, udp=True)
    return p


def relay_stone(work, listen, target, udp_target=None):
    args = ["stone", "127.0.0.1:%d" % target, "127.0.0.1:%d" % listen]
    if udp_target:
        args += ["--", "127.0.0.1:%d/udp" % udp_target, "127.0.0.1:%d/udp" % listen]
    return start(args, listen)


def relay_redir(work, listen, target, udp_target=None):
    return start(["redir", "-n", "127.0.0.1:%d" % listen, "127.0.0.1:%d" % target], listen)


RELAYS = [
    ("ossrelay", relay_ossrelay, None),
    ("ossrelay-base", relay_ossrelay_base, "OSSRELAY_BASELINE"),
    ("haproxy", relay_haproxy, "haproxy"),
    ("nginx", relay_nginx, "nginx"),
    ("socat", relay_socat, "socat"),
    ("stone", relay_stone, "stone"),
    ("redir", relay_redir, "redir"),
]
UDP_CAPABLE = {"ossrelay", "ossrelay-base", "nginx", "socat", "stone"}
# Relays that also run the http gateway (measured against the same nginx).
GATEWAY_CAPABLE = {"ossrelay", "ossrelay-base"}


# ---- measurements ---------------------------------------------------------

def iperf(port, secs, streams, udp=False):
    args = ["iperf3", "-c", "127.0.0.1", "-p", str(port), "-t", str(secs), "-P", str(streams), "-J"]
    if udp:
        args += ["-u", "-b", "0", "-l", "64"]
    out = subprocess.run(args, capture_output=True, text=True, timeout=secs + 30)
    j = json.loads(out.stdout)
    if "error" in j:
        raise RuntimeError(j["error"])
    end = j["end"]
    if udp:
        s = end["sum"]
        return (s["packets"] - s["lost_packets"]) / s["seconds"]
    return end["sum_received"]["bits_per_second"] / 1e9, end["sum_received"]["bytes"]


def wrk(port, secs, close=False):
    args = ["wrk", "-t2", "-c50", "-d%ds" % secs, "--latency"]
    if close:
        args += ["-H", "Connection: close"]
    out = subprocess.run(args + ["http://127.0.0.1:%d/1k" % port], capture_output=True, text=True,
                         timeout=secs + 30).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    m = re.search(r"99%\s+([\d.]+)(us|ms|s)", out)
    p99 = float(m.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[m.group(2)] if m else None
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if errors and int(errors.group(1)) > 0:
        raise RuntimeError("wrk saw %s error responses" % errors.group(1))
    return rps, p99


def idle_memory(relay_pid, port, n):
    """KiB of relay RSS per idle relayed connection, with n open pairs."""
    before = rss_kib(relay_pid)
    socks = []
    deadline = time.time() + 120
    for _ in range(n):
        if time.time() > deadline:
            raise RuntimeError("opening %d idle pairs took over 120 s" % n)
        # A relay that stops accepting (redir, once it has forked a few
        # thousand handlers) fails here instead of hanging the whole run.
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        socks.append(s)
    for s in (socks[0], socks[-1]):
        s.sendall(b"!")
        s.settimeout(10)
        if s.recv(1) != b"!":
            raise RuntimeError("an idle pair is not live")
    time.sleep(0.5)
    after = rss_kib(relay_pid)
    for s in socks:
        s.close()
    return (after - before) / n


def measure(name, fn, ports, work, a):
    out = {}
    listen = free_port()
    udp = name in UDP_CAPABLE and shutil.which("iperf3")
    p = fn(work, listen, ports["iperf"], ports["iperf"] if udp else None)
    try:
        for streams in (1, 4):
            c0 = cpu_seconds(p.pid)
            gbps, moved = iperf(listen, a.secs, streams)
            time.sleep(0.3)  # let forking relays reap their children
            c1 = cpu_seconds(p.pid)
            out["gbps_%d" % streams] = gbps
            # redir's connection handlers are reaped by init, so their CPU
            # time cannot be read back: leave it out rather than report 0.
            if streams == 1 and name != "redir":
                out["cpu_s_per_gib"] = (c1 - c0) / (moved / 2**30)
        if udp:
            out["udp_dgrams_per_s"] = iperf(listen, a.secs, 1, udp=True)
    finally:
        stop(p)
    listen = free_port()
    p = fn(work, listen, ports["web"])
    try:
        out["ka_rps"], out["ka_p99_ms"] = wrk(listen, a.secs)
        out["close_rps"], _ = wrk(listen, a.secs, close=True)
    finally:
        stop(p)
    listen = free_port()
    p = fn(work, listen, ports["echo"])
    try:
        out["idle_kib_per_conn"] = idle_memory(p.pid, listen, a.idle)
    finally:
        stop(p)
    if name in GATEWAY_CAPABLE:
        listen = free_port()
        p = fn(work, listen, ports["web"], mode="http")
        try:
            out["gw_ka_rps"], _ = wrk(listen, a.secs)
            out["gw_close_rps"], _ = wrk(listen, a.secs, close=True)
        finally:
            stop(p)
    return out


def measure_direct(ports, a):
    direct = {}
    for streams in (1, 4):
        direct["gbps_%d" % streams], _ = iperf(ports["iperf"], a.secs, streams)
    direct["ka_rps"], direct["ka_p99_ms"] = wrk(ports["web"], a.secs)
    direct["close_rps"], _ = wrk(ports["web"], a.secs, close=True)
    return direct


def median(v):
    v = sorted(v)
    n = len(v)
    return v[n // 2] if n % 2 else (v[n // 2 - 1] + v[n // 2]) / 2


def aggregate(runs):
    """Per metric: the median of the rounds, and their (min, max)."""
    keys = {k for r in runs for k in r}
    med, rng = {}, {}
    for k in keys:
        vals = [r[k] for r in runs if r.get(k) is not None]
        if vals:
            med[k], rng[k] = median(vals), (min(vals), max(vals))
    return med, rng


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="1 s runs and 200 idle pairs (CI)")
    ap.add_argument("--secs", type=int, default=5)
    ap.add_argument("--idle", type=int, default=5000)
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "results"))
    ap.add_argument("--rounds", type=int, default=1, help="alternate the relays N times; report medians")
    ap.add_argument("--only", help="comma-separated relay names to run (e.g. ossrelay,ossrelay-base)")
    a = ap.parse_args()
    if a.rounds < 1:
        sys.exit("--rounds must be at least 1")
    if a.smoke:
        a.secs, a.idle = 1, 200
    for tool in ("iperf3", "wrk", "nginx"):
        if not shutil.which(tool):
            sys.exit("needs %s (apt-get install iperf3 wrk nginx-light)" % tool)
    if not os.path.exists(BIN):
        sys.exit("needs %s (cargo build --release)" % BIN)
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    work = tempfile.mkdtemp(prefix="ossrelay-bench.")
    results, ranges, skipped = {}, {}, {}
    gateway_pair = None
    try:
        ports = start_backends(work)
        only = set(a.only.split(",")) if a.only else None
        chosen = []
        for name, fn, binary in RELAYS:
            if only is not None and name not in only:
                continue
            if name == "ossrelay-base":
                base = os.environ.get("OSSRELAY_BASELINE")
                if not base or not os.path.exists(base):
                    skipped[name] = "OSSRELAY_BASELINE not set to an ossrelay binary"
                    continue
            elif binary and not shutil.which(binary):
                skipped[name] = "not installed"
                print("SKIPPED %s: not installed" % name, flush=True)
                continue
            if name == "nginx" and not os.path.exists("/usr/lib/nginx/modules/ngx_stream_module.so"):
                skipped[name] = "no stream module (apt-get install libnginx-mod-stream)"
                print("SKIPPED nginx: %s" % skipped[name], flush=True)
                continue
            chosen.append((name, fn))
        # Rounds alternate the relays (A B C A B C ...), with no relay at all
        # (`direct`) each round as the gauge of the machine's own noise.
        runs = {"direct": []}
        for r in range(a.rounds):
            print("=== round %d/%d" % (r + 1, a.rounds), flush=True)
            runs["direct"].append(measure_direct(ports, a))
            for name, fn in chosen:
                if name in skipped:
                    continue
                print("--- %s" % name, flush=True)
                try:
                    runs.setdefault(name, []).append(measure(name, fn, ports, work, a))
                except Exception as e:  # one broken peer must not hide the others
                    skipped[name] = "failed: %s" % e
                    runs.pop(name, None)
                    print("FAILED %s: %s" % (name, e), flush=True)
        for name, rs in runs.items():
            results[name], ranges[name] = aggregate(rs)
        # The gateway against plain tcp, both ossrelay, alternated back to
        # back so both see the same machine (the numbers above were taken
        # minutes apart, after thousands of peer processes came and went).
        runs = {"tcp": [], "http": []}
        for _ in range(2 if only is None or "ossrelay" in only else 0):
            for mode in ("tcp", "http"):
                listen = free_port()
                p = relay_ossrelay(work, listen, ports["web"], mode=mode)
                try:
                    runs[mode].append(wrk(listen, a.secs)[0])
                finally:
                    stop(p)
        if runs["http"]:
            mean = lambda v: sum(v) / len(v)
            results["ossrelay-http"] = {"ka_rps": mean(runs["http"])}
            gateway_pair = (mean(runs["http"]), mean(runs["tcp"]))
    finally:
        for p in procs:
            stop(p)
        shutil.rmtree(work, ignore_errors=True)
    write(results, skipped, a, gateway_pair, ranges)


METRICS = [
    ("gbps_1", "1-stream Gbit/s", True),
    ("gbps_4", "4-stream Gbit/s", True),
    ("cpu_s_per_gib", "relay CPU s/GiB", False),
    ("ka_rps", "keep-alive req/s", True),
    ("ka_p99_ms", "keep-alive p99 ms", False),
    ("close_rps", "new conns/s", True),
    ("idle_kib_per_conn", "KiB per idle conn", False),
    ("udp_dgrams_per_s", "UDP datagrams/s", True),
    ("gw_ka_rps", "gateway keep-alive req/s", True),
    ("gw_close_rps", "gateway new conns/s", True),
]


def fmt(v):
    if v is None:
        return "-"
    return "%.2f" % v if v < 100 else "%.0f" % v


def ab_table(results, ranges, a_name, b_name):
    """Medians of two relays with their ranges, the ratio a/b, and whether
    the ranges overlap (then the difference is within this run's noise)."""
    rows = ["| metric | %s median (min-max) | %s median (min-max) | ratio | |" % (a_name, b_name),
            "|---|---|---|---|---|"]
    ra, rb = results.get(a_name, {}), results.get(b_name, {})
    ga, gb = ranges.get(a_name, {}), ranges.get(b_name, {})
    for k, label, _ in METRICS:
        if ra.get(k) is None or rb.get(k) is None:
            continue
        (alo, ahi), (blo, bhi) = ga[k], gb[k]
        noise = "within noise" if alo <= bhi and blo <= ahi else ""
        rows.append("| %s | %s (%s-%s) | %s (%s-%s) | %s | %s |" % (
            label, fmt(ra[k]), fmt(alo), fmt(ahi), fmt(rb[k]), fmt(blo), fmt(bhi),
            fmt(ra[k] / rb[k]) if rb[k] else "-", noise))
    return rows


def write(results, skipped, a, gateway_pair=None, ranges=None):
    ranges = ranges or {}
    os.makedirs(a.out, exist_ok=True)
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d")
    if a.smoke:
        stamp += "-smoke"
    rows = ["| relay | " + " | ".join(m[1] for m in METRICS) + " |",
            "|---|" + "---|" * len(METRICS)]
    for name, r in results.items():
        rows.append("| %s | " % name + " | ".join(fmt(r.get(k)) for k, _, _ in METRICS) + " |")
    ours = results.get("ossrelay", {})
    ratios = {}
    lines = []
    for peer in results:
        if peer in ("ossrelay", "direct", "ossrelay-http", "ossrelay-base"):
            continue
        ratios[peer] = {}
        for k, label, _ in METRICS:
            if ours.get(k) and results[peer].get(k):
                ratios[peer][k] = ours[k] / results[peer][k]
        lines.append("| ossrelay / %s | " % peer + " | ".join(fmt(ratios[peer].get(k)) for k, _, _ in METRICS) + " |")
    gw, tcp = gateway_pair or (None, None)
    gw_ratio = gw / tcp if gw and tcp else None
    md = ["# Relay benchmark, %s" % stamp, "",
          "Loopback, one relay at a time, %d s per run%s, %s idle pairs. Machine: %d cores. "
          "Lower is better for CPU, p99 and memory." % (a.secs, " (smoke)" if a.smoke else "", a.idle, os.cpu_count()),
          ""] + rows + ["", "Ratios (ossrelay / peer):", "", rows[0].replace("| relay |", "| ratio |"), rows[1]] + lines
    md += ["", "http gateway keep-alive req/s / ossrelay tcp mode: %s (two alternating runs each, "
           "back to back: http %s, tcp %s req/s)" % (fmt(gw_ratio), fmt(gw), fmt(tcp))]
    if a.rounds > 1:
        md[2] = md[2].replace("one relay at a time,", "one relay at a time, medians of %d alternating rounds," % a.rounds)
    if "ossrelay-base" in results:
        md += ["", "A/B, this build against OSSRELAY_BASELINE (%d rounds):" % a.rounds, ""]
        md += ab_table(results, ranges, "ossrelay", "ossrelay-base")
    if a.rounds > 1 and "direct" in ranges:
        md += ["", "Noise gauge, no relay (min-max over the rounds): " + ", ".join(
            "%s %s-%s" % (label, fmt(ranges["direct"][k][0]), fmt(ranges["direct"][k][1]))
            for k, label, _ in METRICS if k in ranges["direct"])]
    if skipped:
        md += ["", "Not measured: " + "; ".join("%s (%s)" % kv for kv in skipped.items())]
    path = os.path.join(a.out, stamp)
    with open(path + ".md", "w") as f:
        f.write("\n".join(md) + "\n")
    with open(path + ".json", "w") as f:
        json.dump({"date": stamp, "secs": a.secs, "idle": a.idle, "rounds": a.rounds,
                   "results": results, "ranges": ranges,
                   "ratios": ratios, "gateway_vs_tcp": gw_ratio,
                   "gateway_runs_mean_rps": {"http": gw, "tcp": tcp}, "skipped": skipped}, f, indent=2)
    print("\n".join(md))
    chart(results, path + ".png")


def chart(results, path):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("no chart: matplotlib not installed (apt-get install python3-matplotlib)")
        return
    keys = [("gbps_1", "1-stream Gbit/s"), ("gbps_4", "4-stream Gbit/s"),
            ("ka_rps", "keep-alive req/s"), ("close_rps", "new conns/s")]
    names = [n for n in results if n != "ossrelay-http"]
    fig, axes = plt.subplots(1, len(keys), figsize=(4 * len(keys), 3.5))
    for ax, (k, label) in zip(axes, keys):
        vals = [results[n].get(k) or 0 for n in names]
        ax.bar(names, vals, color=["#d62728" if n == "ossrelay" else "#7f7f7f" for n in names])
        ax.set_title(label)
        ax.tick_params(axis="x", rotation=60)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    print("chart: %s" % path)


if __name__ == "__main__":
    main()
