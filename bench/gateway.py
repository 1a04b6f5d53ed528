#!/usr/bin/env python3
"""The policy gateway against what a user would pick instead, side by side
on loopback: each front allows one bucket (good.oss.test) and answers 403
for another (checked before timing), in front of one nginx origin.

    bench/gateway.py [--smoke] [--secs N] [--rounds N] [--only A,B] [--logs on|off|both] [--out DIR]
    OSSRELAY_BASELINE=/path/to/older/ossrelay bench/gateway.py --only ossrelay,ossrelay-base

Fronts:
  * ossrelay        protocol = "http", buckets = ["good"]
  * ossrelay-policy the same with a 10-statement [[relay.policy]]
  * haproxy         mode http, a Host ACL, http-reuse always
  * nginx           map $host, upstream keepalive 64

Rows: wrk -t2 -c50 keep-alive req/s and p99 for a 1 KiB GET,
`Connection: close` req/s, one-connection GET MiB/s of a 64 MiB file, and
one-connection MiB/s of 64 MiB PUTs (the origin reads and discards them).
With logs on, ossrelay writes its access records to a file, HAProxy
`option httplog` to a local syslog socket (read here), nginx `access_log`
with `buffer=64k`; with logs off none logs per request.

Every front runs once per round, in turn (A B C D A B C D ...), and each
figure is the median of the rounds with its min-max range; a ratio whose
ranges overlap is flagged "within noise". Results go to
<out>/gateway-<date>.md and .json. Not a test: CI runs --smoke.
"""

import argparse
import datetime
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import compare  # noqa: E402  (shares its process handling and helpers)

HOST = "good.oss.test"
# Debian's libnginx-mod-http-echo.
ECHO_MODULE = "/usr/lib/nginx/modules/ngx_http_echo_module.so"


def origin(work):
    port = compare.free_port()
    www = os.path.join(work, "www")
    os.makedirs(www, exist_ok=True)
    with open(os.path.join(www, "1k"), "wb") as f:
        f.write(b"x" * 1024)
    with open(os.path.join(www, "64m"), "wb") as f:
        f.write(os.urandom(1 << 20) * 64)
    conf = os.path.join(work, "origin.conf")
    with open(conf, "w") as f:
        # /sink reads a PUT of any size into memory and then answers, as
        # a store answers once the whole body arrived (nginx's echo
        # module; WebDAV would measure the disk).
        f.write("load_module %s;\n" % ECHO_MODULE + compare.NGINX_BACKEND.replace(
            "root %(w)s/www; }",
            "root %(w)s/www; client_max_body_size 0;\n"
            "    location = /sink { client_body_buffer_size 65m; echo_read_request_body;\n"
            "      echo ok; } }") % dict(w=work, port=port))
    compare.start(["nginx", "-e", os.path.join(work, "nginx-b.err"), "-g", "daemon off;", "-c", conf], port)
    return port


def syslog_sink(path):
    """A unix datagram socket that reads and counts what HAProxy logs."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(path)
    count = [0]

    def run():
        while True:
            try:
                s.recv(65536)
                count[0] += 1
            except OSError:
                return
    threading.Thread(target=run, daemon=True).start()
    return count


POLICY = "".join(
    '[[relay.policy]]\neffect = "allow"\nbuckets = ["team-%d-*"]\nactions = ["oss:GetObject", "oss:PutObject"]\n'
    'access_keys = ["LTAI%d*"]\nsources = ["10.%d.0.0/16"]\n\n' % (i, i, i)
    for i in range(8)
) + (
    '[[relay.policy]]\neffect = "deny"\nactions = ["oss:DeleteObject"]\n\n'
    '[[relay.policy]]\neffect = "allow"\nbuckets = ["good"]\nactions = ["oss:GetObject", "oss:PutObject", "oss:ListObjects"]\n'
)


def front_ossrelay(work, listen, up, logs, policy=False):
    cfg = os.path.join(work, "gw-%d.toml" % listen)
    with open(cfg, "w") as f:
        if logs:
            f.write('[log]\nlevel = "info"\nfile = "%s/ossrelay-access.log"\n' % work)
        else:
            f.write('[log]\nlevel = "warn"\n')
        f.write('[[relay]]\nname = "gw"\nprotocol = "http"\nlisten = "127.0.0.1:%d"\n'
                'routes = [{ host = "*.oss.test", upstream = "127.0.0.1:%d" }]\n'
                'max_connections = 100000\n' % (listen, up))
        f.write(POLICY if policy else 'buckets = ["good"]\n')
    return compare.start([compare.BIN, "run", "-c", cfg], listen)


def front_policy(work, listen, up, logs):
    return front_ossrelay(work, listen, up, logs, policy=True)


def front_base(work, listen, up, logs):
    """OSSRELAY_BASELINE: another ossrelay build, for A/B of one change."""
    saved = compare.BIN
    compare.BIN = os.environ["OSSRELAY_BASELINE"]
    try:
        return front_ossrelay(work, listen, up, logs)
    finally:
        compare.BIN = saved


def front_haproxy(work, listen, up, logs):
    cfg = os.path.join(work, "haproxy-gw-%d.cfg" % listen)
    sock = os.path.join(work, "haproxy-log.sock")
    with open(cfg, "w") as f:
        # HAProxy refuses a maxconn that needs more descriptors than allowed.
        maxconn = max(1000, min(20000, int((os.sysconf("SC_OPEN_MAX") - 500) / 2.5)))
        f.write("global\n  maxconn %d\n" % maxconn)
        if logs:
            f.write("  log %s local0\n" % sock)
        f.write("defaults\n  mode http\n  timeout connect 10s\n  timeout client 60s\n  timeout server 60s\n")
        if logs:
            f.write("  log global\n  option httplog\n")
        f.write("frontend f\n  bind 127.0.0.1:%d\n  acl good hdr(host) -i %s\n"
                "  http-request deny deny_status 403 unless good\n  default_backend b\n"
                "backend b\n  http-reuse always\n  server s1 127.0.0.1:%d\n" % (listen, HOST, up))
    return compare.start(["haproxy", "-db", "-f", cfg], listen)


def front_nginx(work, listen, up, logs):
    cfg = os.path.join(work, "nginx-gw-%d.conf" % listen)
    log = ("access_log %s/nginx-access.log combined buffer=64k;" % work) if logs else "access_log off;"
    with open(cfg, "w") as f:
        f.write("pid %s/nginx-gw.pid;\nerror_log %s/nginx-gw.err;\nworker_processes 1;\n"
                "worker_rlimit_nofile 40000;\nevents { worker_connections 20000; }\n"
                "http {\n  %s\n  client_body_temp_path %s; proxy_temp_path %s;\n"
                "  fastcgi_temp_path %s; uwsgi_temp_path %s; scgi_temp_path %s;\n"
                "  keepalive_requests 1000000; client_max_body_size 0;\n"
                "  map $host $allowed { %s 1; default 0; }\n"
                "  upstream o { server 127.0.0.1:%d; keepalive 64; }\n"
                "  server { listen 127.0.0.1:%d;\n"
                "    location / { if ($allowed = 0) { return 403; }\n"
                "      proxy_pass http://o; proxy_http_version 1.1; proxy_set_header Connection \"\";\n"
                "      proxy_set_header Host $host; proxy_buffering off;\n"
                "      proxy_request_buffering off; } }\n}\n"
                % (work, work, log, work, work, work, work, work, HOST, up, listen))
    return compare.start(["nginx", "-e", os.path.join(work, "nginx-gw.err"), "-g", "daemon off;", "-c", cfg], listen)


FRONTS = [
    ("ossrelay", front_ossrelay, None),
    ("ossrelay-policy", front_policy, None),
    ("ossrelay-base", front_base, None),
    ("haproxy", front_haproxy, "haproxy"),
    ("nginx", front_nginx, "nginx"),
]


def status(port, host, path="/1k"):
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(("GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n" % (path, host)).encode())
        head = s.recv(64).decode(errors="replace")
    m = re.match(r"HTTP/1\.[01] (\d+)", head)
    return int(m.group(1)) if m else None


def wrk(port, secs, path="/1k", close=False, conns=50, threads=2):
    args = ["wrk", "-t%d" % threads, "-c%d" % conns, "-d%ds" % secs, "--latency", "-H", "Host: " + HOST]
    if close:
        args += ["-H", "Connection: close"]
    out = subprocess.run(args + ["http://127.0.0.1:%d%s" % (port, path)], capture_output=True,
                         text=True, timeout=secs + 60).stdout
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if errors and int(errors.group(1)) > 0:
        raise RuntimeError("wrk saw %s error responses" % errors.group(1))
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    m = re.search(r"99%\s+([\d.]+)(us|ms|s)", out)
    p99 = float(m.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[m.group(2)] if m else None
    t = re.search(r"Transfer/sec:\s+([\d.]+)(B|KB|MB|GB)", out)
    mib = float(t.group(1)) * {"B": 1 / 2**20, "KB": 1 / 1024, "MB": 1.0, "GB": 1024.0}[t.group(2)] if t else None
    return rps, p99, mib


PUT_SIZE = 64 << 20


def whole_response(resp):
    """Whether `resp` holds one whole response (Content-Length or chunked)."""
    end = resp.find(b"\r\n\r\n")
    if end < 0:
        return False
    head = resp[:end].lower()
    if b"transfer-encoding: chunked" in head:
        return resp.endswith(b"0\r\n\r\n")
    m = re.search(rb"content-length: (\d+)", head)
    return len(resp) - end - 4 >= (int(m.group(1)) if m else 0)


def put(port, secs):
    """MiB/s of 64 MiB PUTs, one after another on one keep-alive
    connection, for `secs` seconds (at least one PUT)."""
    body = memoryview(os.urandom(1 << 20) * 64)
    head = ("PUT /sink HTTP/1.1\r\nHost: %s\r\nContent-Length: %d\r\n\r\n" % (HOST, PUT_SIZE)).encode()
    done, start = 0, time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        while done == 0 or time.monotonic() - start < secs:
            s.sendall(head)
            s.sendall(body)
            resp = b""
            while not whole_response(resp):
                chunk = s.recv(4096)
                if not chunk:
                    raise RuntimeError("front closed during a PUT (after %d PUTs; got %r)" % (done, resp[:200]))
                resp += chunk
            if not resp.startswith(b"HTTP/1.1 200 "):
                raise RuntimeError("PUT answered %r" % resp[:40])
            done += 1
    return done * PUT_SIZE / (1 << 20) / (time.monotonic() - start)


def measure(fn, work, up, logs, a):
    listen = compare.free_port()
    p = fn(work, listen, up, logs)
    try:
        # The policy works before anything is timed: allowed, and refused.
        ok, bad = status(listen, HOST), status(listen, "evil.oss.test")
        if ok != 200 or bad != 403:
            raise RuntimeError("policy check failed: good -> %s, evil -> %s" % (ok, bad))
        out = {}
        out["ka_rps"], out["ka_p99_ms"], _ = wrk(listen, a.secs)
        out["close_rps"], _, _ = wrk(listen, a.secs, close=True)
        _, _, out["get64_mib_s"] = wrk(listen, a.secs, path="/64m", conns=1, threads=1)
        out["put64_mib_s"] = put(listen, a.secs)
        return out
    finally:
        compare.stop(p)


ROWS = [
    ("ka_rps", "keep-alive req/s", True),
    ("ka_p99_ms", "keep-alive p99 ms", False),
    ("close_rps", "Connection: close req/s", True),
    ("get64_mib_s", "GET 64 MiB, MiB/s", True),
    ("put64_mib_s", "PUT 64 MiB, MiB/s", True),
]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="1 s runs, one round (CI)")
    ap.add_argument("--secs", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--only", help="comma-separated fronts")
    ap.add_argument("--logs", choices=["on", "off", "both"], default="both")
    ap.add_argument("--out", default=os.path.join(compare.ROOT, "bench", "results"))
    a = ap.parse_args()
    if a.smoke:
        a.secs, a.rounds = 1, 1
    for tool in ("wrk", "nginx"):
        if not shutil.which(tool):
            sys.exit("needs %s (apt-get install wrk nginx-light)" % tool)
    if not os.path.exists(compare.BIN):
        sys.exit("needs %s (cargo build --release)" % compare.BIN)
    import resource
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    work = tempfile.mkdtemp(prefix="ossrelay-gwbench.")
    only = set(a.only.split(",")) if a.only else None
    skipped, results = {}, {}
    try:
        up = origin(work)
        syslog_sink(os.path.join(work, "haproxy-log.sock"))
        chosen = []
        for name, fn, tool in FRONTS:
            if only is not None and name not in only:
                continue
            if name == "ossrelay-base" and not os.path.exists(os.environ.get("OSSRELAY_BASELINE", "")):
                skipped[name] = "OSSRELAY_BASELINE not set to an ossrelay binary"
                continue
            if tool and not shutil.which(tool):
                skipped[name] = "not installed"
                print("SKIPPED %s: not installed" % name, flush=True)
                continue
            chosen.append((name, fn))
        for logs in ([True, False] if a.logs == "both" else [a.logs == "on"]):
            label = "logs on" if logs else "logs off"
            runs = {}
            for r in range(a.rounds):
                print("=== %s, round %d/%d" % (label, r + 1, a.rounds), flush=True)
                for name, fn in chosen:
                    if name in skipped:
                        continue
                    print("--- %s" % name, flush=True)
                    try:
                        runs.setdefault(name, []).append(measure(fn, work, up, logs, a))
                    except Exception as e:  # one broken peer must not hide the others
                        skipped[name] = "failed: %s" % e
                        runs.pop(name, None)
                        print("FAILED %s: %s" % (name, e), flush=True)
            results[label] = {n: compare.aggregate(rs) for n, rs in runs.items()}
    finally:
        for p in compare.procs:
            compare.stop(p)
        shutil.rmtree(work, ignore_errors=True)
    write(results, skipped, a)


def write(results, skipped, a):
    os.makedirs(a.out, exist_ok=True)
    stamp = datetime.datetime.now().strftime("%Y-%m-%d-%H%M")
    md = ["# Policy gateway vs HAProxy mode http and nginx map, %s" % stamp, "",
          "%d interleaved rounds of %d s; medians, [min-max]. `bench/gateway.py`." % (a.rounds, a.secs), ""]
    ratios = {}
    for label, fronts in results.items():
        names = list(fronts)
        md += ["## %s" % label, "", "| row | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
        for key, title, _ in ROWS:
            cells = []
            for n in names:
                med, rng = fronts[n][0].get(key), fronts[n][1].get(key)
                cells.append("-" if med is None else "%.1f [%.1f-%.1f]" % (med, rng[0], rng[1]) if rng else "%.1f" % med)
            md.append("| %s | %s |" % (title, " | ".join(cells)))
        md.append("")
        if "ossrelay" in fronts:
            for peer in [n for n in names if n != "ossrelay"]:
                for key, title, higher in ROWS:
                    o, p = fronts["ossrelay"][0].get(key), fronts[peer][0].get(key)
                    if not o or not p:
                        continue
                    ro, rp = fronts["ossrelay"][1].get(key), fronts[peer][1].get(key)
                    noise = bool(ro and rp and ro[0] <= rp[1] and rp[0] <= ro[1])
                    ratio = o / p if higher else p / o
                    ratios.setdefault(label, {}).setdefault(peer, {})[key] = {"ratio": ratio, "within_noise": noise}
                    md.append("- ossrelay / %s, %s: %.2f%s" % (peer, title, ratio, " (within noise)" if noise else ""))
            md.append("")
    if skipped:
        md += ["Skipped: " + ", ".join("%s (%s)" % kv for kv in skipped.items()), ""]
    text = "\n".join(md)
    print(text)
    if a.smoke:
        return
    with open(os.path.join(a.out, "gateway-%s.md" % stamp), "w") as f:
        f.write(text + "\n")
    with open(os.path.join(a.out, "gateway-%s.json" % stamp), "w") as f:
        json.dump({"results": results, "ratios": ratios, "skipped": skipped}, f, indent=2)


if __name__ == "__main__":
    main()
