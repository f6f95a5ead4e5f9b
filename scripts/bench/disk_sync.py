#!/usr/bin/env python3
"""How long a small file's sync waits while a checkpoint-sized write is synced
beside it (docs/benchmarks.md, 2026-12-06, seventh session).

A background thread writes 40 MiB into one file once a second; the main loop
writes 16 KiB into another and syncs it, as a commit syncs the WAL, for 5 s.

    python3 scripts/bench/disk_sync.py [DIR] [--every KiB]

--every syncs the big file every that many KiB it writes (default: only at the
end, as SQLite's checkpoint does). Prints the small sync's percentiles.
"""
import argparse
import os
import threading
import time

parser = argparse.ArgumentParser()
parser.add_argument("dir", nargs="?", default=".")
parser.add_argument("--every", type=int, default=0, help="KiB between syncs of the big file (0: at the end only)")
args = parser.parse_args()

small_path = os.path.join(args.dir, "disk_sync.small")
big_path = os.path.join(args.dir, "disk_sync.big")
small = os.open(small_path, os.O_WRONLY | os.O_CREAT)
big = os.open(big_path, os.O_WRONLY | os.O_CREAT)
chunk = (args.every or 40 * 1024) * 1024
total = 40 << 20
stop = threading.Event()


def background():
    buf = b"y" * chunk
    while not stop.is_set():
        started = time.perf_counter()
        for offset in range(0, total, chunk):
            os.pwrite(big, buf, offset)
            if args.every:
                os.fdatasync(big)
        os.fsync(big)
        print(f"big file: 40 MiB written and synced in {(time.perf_counter() - started) * 1000:.1f} ms")
        stop.wait(1)


thread = threading.Thread(target=background)
thread.start()
waits = []
end = time.time() + 5
try:
    while time.time() < end:
        os.pwrite(small, b"x" * 16384, 0)
        started = time.perf_counter()
        os.fdatasync(small)
        waits.append((time.perf_counter() - started) * 1000)
        time.sleep(0.0005)
finally:
    stop.set()
    thread.join()
    os.unlink(small_path)
    os.unlink(big_path)
waits.sort()
n = len(waits)
print(
    f"small sync, {n} of them: p50 {waits[n // 2]:.3f} p90 {waits[n * 9 // 10]:.3f} p99 {waits[n * 99 // 100]:.3f} "
    f"p99.9 {waits[n * 999 // 1000]:.3f} max {waits[-1]:.3f} ms; over 5 ms: {sum(w > 5 for w in waits)}"
)
