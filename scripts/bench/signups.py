# Server memory under sign-ups: N sign-ups, then N sign-ins, 64 at a time, with the
# server's RSS (from /proc) before, after each phase, and a minute later.
#   python3 scripts/bench/signups.py http://127.0.0.1:8080 <server pid> 1000
# See docs/benchmarks.md.
import json, sys, time, urllib.request
from concurrent.futures import ThreadPoolExecutor
base, pid, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
tag = str(int(time.time()))
def rss():
    for l in open(f"/proc/{pid}/status"):
        if l.startswith("VmRSS"): return int(l.split()[1]) // 1024
def post(path, body):
    req = urllib.request.Request(base + path, data=json.dumps(body).encode(), headers={"content-type": "application/json"})
    try:
        return urllib.request.urlopen(req, timeout=120).status
    except urllib.error.HTTPError as e:
        return e.code
print("idle rss MiB", rss())
t = time.time()
with ThreadPoolExecutor(64) as pool:
    codes = list(pool.map(lambda i: post("/api/auth/register/", {"username": f"u{tag}x{i}", "password": "testpass123", "full_name": "U", "role": "client"}), range(n)))
print("sign-ups", {c: codes.count(c) for c in set(codes)}, "in %.1fs" % (time.time() - t), "rss MiB", rss())
t = time.time()
with ThreadPoolExecutor(64) as pool:
    codes = list(pool.map(lambda i: post("/api/auth/token/", {"username": f"u{tag}x{i}", "password": "testpass123"}), range(n)))
print("sign-ins", {c: codes.count(c) for c in set(codes)}, "in %.1fs" % (time.time() - t), "rss MiB", rss())
time.sleep(60)
print("a minute later rss MiB", rss())
