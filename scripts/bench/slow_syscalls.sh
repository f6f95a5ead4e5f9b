#!/usr/bin/env bash
# The message writer's slow file syscalls under a `pairs` load: `perf trace` on the
# writer's thread for 8 s of the measured window, counting each call on each file
# that took over 3 ms (the database file, its WAL). Tracing slows the server
# (the run's own latencies are not comparable with untraced runs): use it to see
# which call stalls, not how long a message waits. Needs root (perf).
# A fresh server and data directory (docs/benchmarks.md, 2026-12-06, eighth session).
#   bash scripts/bench/slow_syscalls.sh [bin dir] [pairs arguments...]
#   bash scripts/bench/slow_syscalls.sh target/release --rate 24000
# PORT sets the server's port (9720).
set -euo pipefail
cd "$(dirname "$0")/../.."
port=${PORT:-9720}
source scripts/bench/window.sh
start_window "$@"
writer=$(grep -l '^sqlite-writer' /proc/"$server"/task/*/comm | head -1 | cut -d/ -f5)
for fd in /proc/"$server"/fd/*; do
    case $(readlink "$fd") in "$data"/*) echo "${fd##*/} $(basename "$(readlink "$fd")")" ;; esac
done >"$data.fds"
timeout -s INT 8 perf trace -t "$writer" --duration 3 -e fsync,fdatasync,pwrite64,pread64 -o "$data.trace" || true
wait "$loadgen" || true
loadgen=
python3 - "$data.trace" "$data.json" "$data.fds" <<'PY'
import json, re, sys
from collections import defaultdict
slow = defaultdict(list)
for line in open(sys.argv[1]):
    m = re.match(r'\s*[\d.]+ \(\s*([\d.]+) ms\): (\w+)\(fd: (\d+)', line)
    if m:
        slow[(m.group(2), int(m.group(3)))].append(float(m.group(1)))
run = json.loads(open(sys.argv[2]).read().splitlines()[-1])
files = dict(line.split() for line in open(sys.argv[3]))
print(f"reached {run['delivered_per_second']:,.0f} msg/s (traced); the writer's calls over 3 ms in 8 s:")
for (call, fd), took in sorted(slow.items()):
    took.sort()
    print(f"  {call}({files.get(str(fd), f'fd {fd}')}): {len(took)}, median {took[len(took) // 2]:.1f} ms, max {took[-1]:.1f} ms, "
          f"over 10 ms {sum(t > 10 for t in took)}, over 25 ms {sum(t > 25 for t in took)}")
PY
