#!/usr/bin/env bash
# How many times each server thread calls glibc's allocator a message, counted by
# uprobes on malloc, calloc, realloc and posix_memalign over 10 s of a `pairs`
# load (docs/benchmarks.md, 2026-12-06, fifth session). A count, unlike a time, is
# the same from run to run on a noisy machine; the probes slow every call, so the
# throughput of this run is not a benchmark figure. Needs root (perf probe).
#   bash scripts/bench/allocs.sh [bin dir] [pairs arguments...]
#   bash scripts/bench/allocs.sh target/release --window 8
# PORT sets the server's port (9730).
set -euo pipefail
cd "$(dirname "$0")/../.."
bin=${1:-target/release}
shift || true
port=${PORT:-9730}
source scripts/bench/probes.sh
libc_probes "$bin" malloc calloc realloc posix_memalign
events=(-e probe_libc:malloc -e probe_libc:calloc -e probe_libc:realloc -e probe_libc:posix_memalign)

# The load: 1,000 users, 5 s of warm-up, 15 s measured; counted from 7 s to 17 s.
source scripts/bench/window.sh
start_window "$bin" "$@"
# Messages committed in the window: the server's own counter, read before and after.
committed() { curl -sf "http://127.0.0.1:$port/metrics" | awk '/^confab_commit_batch_messages_sum/ {print $2}'; }
m0=$(committed)
perf stat -x, --per-thread "${events[@]}" -p "$server" -o "$data.perf" -- sleep 10
m1=$(committed)
wait "$loadgen"
loadgen=
python3 - "$data.perf" "$m0" "$m1" <<'PY'
import collections, sys
path, m0, m1 = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
messages = m1 - m0
calls = collections.Counter()
for line in open(path):
    parts = line.strip().split(",")
    if len(parts) < 4 or not parts[0] or parts[0].startswith("#"):
        continue
    thread, count = parts[0], parts[1]
    if count.isdigit():
        calls[thread.rsplit("-", 1)[0]] += int(count)
print(f"{messages:,.0f} messages committed in the window")
for thread, n in calls.most_common():
    if n:
        print(f"  {thread:28} {n / messages:6.2f} allocations a message")
print(f"  {'all threads':28} {sum(calls.values()) / messages:6.2f} allocations a message")
PY
