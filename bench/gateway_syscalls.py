#!/usr/bin/env python3
"""System calls per request of the http gateway, and where its CPU goes.

    bench/gateway_syscalls.py [--logs on|off] [--secs N] [--perf] [BINARY ...]

For each ossrelay binary (default: target/release/ossrelay), runs the
bench/gateway.py set-up (nginx origin, `protocol = "http"` front allowing
one bucket), attaches `strace -f -c` to the relay while wrk sends 1 KiB
keep-alive GETs, and prints each system call's count per request. With
--perf it also records `perf record -e cpu-clock -g` in a second run and
prints the kernel/user split and the top user-space symbols.

Compare two builds: bench/gateway_syscalls.py /tmp/ossrelay-old target/release/ossrelay
Not a test, and the request rates under strace and perf mean nothing.
"""

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import compare  # noqa: E402
import gateway  # noqa: E402


def wrk_requests(port, secs):
    args = ["wrk", "-t2", "-c50", "-d%ds" % secs, "-H", "Host: " + gateway.HOST,
            "http://127.0.0.1:%d/1k" % port]
    out = subprocess.run(args, capture_output=True, text=True, timeout=secs + 60).stdout
    return int(re.search(r"(\d+) requests in", out).group(1))


def under(tool, binary, logs, secs, work, up):
    """Runs the front from `binary` with `tool(pid)` attached during wrk."""
    compare.BIN = binary
    listen = compare.free_port()
    p = gateway.front_ossrelay(work, listen, up, logs)
    try:
        time.sleep(0.3)
        t = subprocess.Popen(tool(p.pid), stderr=subprocess.DEVNULL)
        time.sleep(1)
        n = wrk_requests(listen, secs)
        t.send_signal(2)
        t.wait(timeout=60)
        return n
    finally:
        compare.stop(p)


def syscalls(binary, logs, secs, work, up):
    out = os.path.join(work, "strace.out")
    n = under(lambda pid: ["strace", "-f", "-c", "-o", out, "-p", str(pid)], binary, logs, secs, work, up)
    rows = []
    with open(out) as f:
        for line in f:
            cols = line.split()
            if len(cols) >= 5 and cols[0][0].isdigit() and cols[-1] != "total":
                calls = int(cols[3])
                rows.append((calls / n, cols[-1]))
    rows.sort(reverse=True)
    print("%s, logs %s: %d requests" % (binary, "on" if logs else "off", n))
    for per, name in rows:
        if per >= 0.001:
            print("  %-16s %8.3f per request" % (name, per))
    print("  %-16s %8.3f per request" % ("(all)", sum(r[0] for r in rows)))


def profile(binary, logs, secs, work, up):
    data = os.path.join(work, "perf.data")
    under(lambda pid: ["perf", "record", "-e", "cpu-clock", "-g", "-o", data, "-p", str(pid)],
          binary, logs, secs, work, up)
    report = subprocess.run(["perf", "report", "-i", data, "--no-children", "--sort", "dso,symbol",
                             "--stdio", "-g", "none"], capture_output=True, text=True).stdout
    kernel = sum(float(m.group(1)) for m in re.finditer(r"^\s+([\d.]+)%\s+\[kernel", report, re.M))
    print("  perf: %.1f%% of the relay's CPU in the kernel" % kernel)
    user = [line.strip() for line in report.splitlines() if "[.]" in line][:12]
    for line in user:
        print("   ", re.sub(r"\s{2,}", " ", line)[:110])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--logs", choices=["on", "off"], default="on")
    ap.add_argument("--secs", type=int, default=5)
    ap.add_argument("--perf", action="store_true")
    ap.add_argument("binaries", nargs="*", default=[compare.BIN])
    a = ap.parse_args()
    for tool in ("strace", "wrk", "nginx") + (("perf",) if a.perf else ()):
        if not shutil.which(tool):
            sys.exit("gateway_syscalls: %s is not installed" % tool)
    with tempfile.TemporaryDirectory(prefix="ossrelay-sys-") as work:
        up = gateway.origin(work)
        try:
            for b in a.binaries:
                syscalls(b, a.logs == "on", a.secs, work, up)
                if a.perf:
                    profile(b, a.logs == "on", a.secs, work, up)
        finally:
            for p in compare.procs:
                compare.stop(p)


if __name__ == "__main__":
    main()
