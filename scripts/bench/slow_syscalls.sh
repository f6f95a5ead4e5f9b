#!/usr/bin/env bash
# The message writer's slow file syscalls under a `pairs` load: `perf trace` on the
# writer's thread for 8 s of the measured window, counting each call on each file
# that took over 3 ms (the database file, its WAL). Tracing slows the server
# (the run's own latencies are not comparable with untraced runs): use it to see
# which call stalls, not how long a message waits. Needs root (perf).
# A fresh server and data directory (docs/benchmarks.md, 2026-12-06, eighth session).
# With ALL=1 every call is traced, and each of the writer's own checkpoints is
# listed too: the pages it copied into the database file since the file's last
# sync, and how long that sync then took (the stall every sender waits for).
#   bash scripts/bench/slow_syscalls.sh [bin dir] [pairs arguments...]
#   bash scripts/bench/slow_syscalls.sh target/release --rate 24000
#   ALL=1 bash scripts/bench/slow_syscalls.sh target/release --rate 24000
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
over=(--duration 3)
[ -z "${ALL:-}" ] || over=()
timeout -s INT 8 perf trace -t "$writer" "${over[@]}" -e fsync,fdatasync,pwrite64,pread64 -o "$data.trace" || true
wait "$loadgen" || true
loadgen=
python3 - "$data.trace" "$data.json" "$data.fds" <<'PY'
import json, re, sys
from collections import defaultdict
run = json.loads(open(sys.argv[2]).read().splitlines()[-1])
files = dict(line.split() for line in open(sys.argv[3]))
slow = defaultdict(list)
# The writer's checkpoints: its writes to the database file, then that file's sync.
copied, checkpoints = [0, 0], []
for line in open(sys.argv[1]):
    m = re.match(r'\s*[\d.]+ \(\s*([\d.]+) ms\): (\w+)\(fd: (\d+)(?:.*count: (\d+))?', line)
    if not m:
        continue
    took, call, fd = float(m.group(1)), m.group(2), m.group(3)
    if took > 3:
        slow[(call, fd)].append(took)
    if not files.get(fd, '').endswith('.db'):
        continue
    if call == 'pwrite64' and m.group(4):
        copied = [copied[0] + 1, copied[1] + int(m.group(4))]
    elif call in ('fsync', 'fdatasync') and copied[0]:
        checkpoints.append((copied[0], copied[1], took))
        copied = [0, 0]
print(f"reached {run['delivered_per_second']:,.0f} msg/s (traced); the writer's calls over 3 ms in 8 s:")
for (call, fd), took in sorted(slow.items()):
    took.sort()
    print(f"  {call}({files.get(fd, f'fd {fd}')}): {len(took)}, median {took[len(took) // 2]:.1f} ms, max {took[-1]:.1f} ms, "
          f"over 10 ms {sum(t > 10 for t in took)}, over 25 ms {sum(t > 25 for t in took)}")
if checkpoints:
    print(f"the writer's own checkpoints in 8 s: {len(checkpoints)} (the first may have begun before the trace)")
    for writes, size, took in checkpoints:
        print(f"  copied {writes:,} pages ({size / 2**20:.2f} MiB), then synced the database file in {took:.1f} ms")
PY
