#!/usr/bin/env python3
"""The client side of scripts/overload-test.sh: drives a running `upsell
serve` (pid PID) past its limits and checks that it stays up.

1. Load: CLIENTS threads send maximum-size POST /v1/recommend requests
   (BATCH users each) back to back for SECONDS. Every answer must be 200
   or 503 (shed, with Retry-After); nothing else, no dropped connection.
   The server's resident memory is sampled every 50 ms and must stay
   under RSS_BOUND MiB.
2. Idle and partial-header connections: IDLE connections that send
   nothing and as many that send half a request header are opened at
   once; each must be closed by the server within the header timeout
   (plus slack), and the health check must answer again after them.

Prints one line per phase with the figures; exits 1 when a check fails.
Standard library only.
"""
import argparse
import csv
import http.client
import json
import socket
import sys
import threading
import time

parser = argparse.ArgumentParser()
parser.add_argument("--addr", required=True)
parser.add_argument("--pid", type=int, required=True)
parser.add_argument("--rows", required=True, help="CSV of users (a checkpoint's rows.csv)")
parser.add_argument("--seconds", type=float, default=60)
parser.add_argument("--clients", type=int, default=64)
parser.add_argument("--batch", type=int, default=4096)
parser.add_argument("--rss-bound", type=float, required=True, help="MiB")
parser.add_argument("--idle", type=int, default=150)
parser.add_argument("--header-timeout", type=float, required=True, help="seconds")
args = parser.parse_args()
host, port = args.addr.rsplit(":", 1)
port = int(port)
failures = []


def rss_mib():
    with open(f"/proc/{args.pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def alive():
    try:
        with open(f"/proc/{args.pid}/status") as f:
            return "zombie" not in f.read()
    except FileNotFoundError:
        return False


def health(timeout=2.0):
    try:
        c = http.client.HTTPConnection(host, port, timeout=timeout)
        c.request("GET", "/v2/health/ready")
        ok = c.getresponse().status == 200
        c.close()
        return ok
    except OSError:
        return False


# The largest request: BATCH users, the stored rows repeated with
# distinct ids.
with open(args.rows) as f:
    rows = list(csv.DictReader(f))
numeric = set()
for key in rows[0]:
    try:
        [float(r[key]) for r in rows if r[key] != ""]
        numeric.add(key)
    except ValueError:
        pass
users = []
for i in range(args.batch):
    row = rows[i % len(rows)]
    user = {k: (None if v == "" else float(v) if k in numeric else v) for k, v in row.items()}
    user["id"] = f"load-{i}"
    users.append(user)
body = json.dumps({"users": users}).encode()

statuses = {}
latencies = []
errors = []
lock = threading.Lock()
stop_at = time.monotonic() + args.seconds


def client():
    conn = None
    while time.monotonic() < stop_at:
        try:
            if conn is None:
                conn = http.client.HTTPConnection(host, port, timeout=60)
            start = time.monotonic()
            conn.request("POST", "/v1/recommend", body, {"Content-Type": "application/json"})
            response = conn.getresponse()
            payload = response.read()
            elapsed = time.monotonic() - start
            with lock:
                statuses[response.status] = statuses.get(response.status, 0) + 1
                if response.status == 200:
                    latencies.append(elapsed)
                elif response.status == 503:
                    if response.getheader("Retry-After") is None:
                        errors.append("503 without Retry-After")
                else:
                    errors.append(f"{response.status}: {payload[:200]!r}")
            if response.status == 503:
                # As a client honouring Retry-After would, briefly.
                time.sleep(0.05)
            if response.getheader("Connection", "").lower() == "close":
                conn.close()
                conn = None
        except OSError as e:
            with lock:
                errors.append(f"connection: {e!r}")
            if conn is not None:
                conn.close()
            conn = None
    if conn is not None:
        conn.close()


peak = rss_mib()
start_rss = peak
threads = [threading.Thread(target=client) for _ in range(args.clients)]
began = time.monotonic()
for t in threads:
    t.start()
while any(t.is_alive() for t in threads):
    if alive():
        peak = max(peak, rss_mib())
    time.sleep(0.05)
wall = time.monotonic() - began
latencies.sort()
done = statuses.get(200, 0)
shed = statuses.get(503, 0)
p99 = latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))] if latencies else float("nan")
p50 = latencies[len(latencies) // 2] if latencies else float("nan")
print(f"load: {args.clients} clients x {args.batch}-user recommend for {wall:.0f} s: "
      f"{done + shed + len(errors)} requests, {done} answered ({done * args.batch / wall:,.0f} users/s), "
      f"{shed} shed (503), {len(errors)} other; p50 {p50:.2f} s, p99 {p99:.2f} s of the answered; "
      f"resident memory {start_rss:.0f} MiB at the start, peak {peak:.0f} MiB (bound {args.rss_bound:.0f})")
if not alive():
    failures.append("the server died under load")
if errors:
    failures.append(f"{len(errors)} answers other than 200 or 503, e.g. {errors[:3]}")
if done == 0:
    failures.append("no request was answered")
if peak > args.rss_bound:
    failures.append(f"peak resident memory {peak:.0f} MiB over the bound {args.rss_bound:.0f} MiB")

# Phase 2: idle and partial-header connections.
sockets = []
opened_at = time.monotonic()
for i in range(2 * args.idle):
    try:
        s = socket.create_connection((host, port), timeout=5)
    except OSError as e:
        failures.append(f"connection {i} could not be opened: {e!r}")
        break
    if i % 2:
        s.sendall(b"POST /v1/recommend HTTP/1.1\r\nHost: x\r\nContent-Type: application/")
    sockets.append(s)
deadline = opened_at + args.header_timeout + 5
closed = 0
closed_by = 0.0
for s in sockets:
    s.settimeout(max(0.01, deadline - time.monotonic()))
    try:
        while s.recv(4096):
            pass
        closed += 1
    except ConnectionResetError:
        closed += 1
    except socket.timeout:
        pass
    closed_by = time.monotonic() - opened_at
    s.close()
recovered = time.monotonic()
while not health() and time.monotonic() - recovered < 10:
    time.sleep(0.1)
healthy_after = time.monotonic() - recovered
print(f"idle: {len(sockets)} connections ({len(sockets) // 2} silent, {(len(sockets) + 1) // 2} mid-header): "
      f"{closed} closed by the server within {closed_by:.1f} s (header timeout {args.header_timeout:.0f} s); "
      f"health check answered {healthy_after:.1f} s after")
if closed != len(sockets):
    failures.append(f"{len(sockets) - closed} idle connections were still open after {args.header_timeout + 5:.0f} s")
if not health():
    failures.append("the health check does not answer after the idle connections")
if not alive():
    failures.append("the server died")

for failure in failures:
    print(f"FAIL: {failure}", file=sys.stderr)
sys.exit(1 if failures else 0)
