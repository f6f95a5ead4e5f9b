#!/usr/bin/env bash
# Where a `pairs` load's CPU goes: each server thread's and the load generator's
# CPU over 10 s of the measured window, per message, with the machine's idle
# share (docs/benchmarks.md, 2026-12-06). A fresh server and data directory.
#   bash scripts/bench/threads.sh [bin dir] [pairs arguments...]
#   bash scripts/bench/threads.sh target/release --rate 24000     # open loop
#   bash scripts/bench/threads.sh target/release --window 8       # closed loop
# PORT sets the server's port (9720).
set -euo pipefail
cd "$(dirname "$0")/../.."
bin=${1:-target/release}
shift || true
port=${PORT:-9720}
# The load: 1,000 users, 5 s of warm-up, 15 s measured; sampled from 7 s to 17 s.
source scripts/bench/window.sh
start_window "$bin" "$@"

# Clock ticks of each thread (name and tid), of the load generator, and of the machine.
threads() { for t in /proc/"$server"/task/*; do echo "$(tr ' ' _ <"$t/comm")/${t##*/} $(awk '{print $14 + $15}' "$t/stat")"; done; }
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
before=$(threads) lg0=$(ticks "$loadgen") cpu0=$(head -1 /proc/stat)
sleep 10
after=$(threads) lg1=$(ticks "$loadgen") cpu1=$(head -1 /proc/stat)
wait "$loadgen"
loadgen=
python3 - "$data.json" "$before" "$after" "$lg0" "$lg1" "$cpu0" "$cpu1" "$(getconf CLK_TCK)" <<'PY'
import json, sys
path, before, after, lg0, lg1, cpu0, cpu1, hz = sys.argv[1:]
run = json.loads(open(path).read().splitlines()[-1])
rate = run["delivered_per_second"]
t0 = dict(line.split() for line in before.splitlines())
per_message = lambda ticks: ticks / float(hz) / 10 / rate * 1e6  # µs of CPU per message
print(f"reached {rate:,.0f} msg/s; delivery p50 {run['delivery_ms']['p50']} ms, p99 {run['delivery_ms']['p99']} ms")
for line in after.splitlines():
    name, ticks = line.split()
    used = int(ticks) - int(t0.get(name, ticks))
    if used > 0:
        print(f"  {name:28} {used / float(hz) * 10:5.1f}% of a core  {per_message(used):5.1f} µs a message")
used = int(lg1) - int(lg0)
print(f"  {'load generator':28} {used / float(hz) * 10:5.1f}% of a core  {per_message(used):5.1f} µs a message")
a, b = [list(map(int, c.split()[1:])) for c in (cpu0, cpu1)]
delta = [y - x for x, y in zip(a, b)]
print(f"  machine idle {100 * delta[3] / sum(delta):.1f}%")
PY
