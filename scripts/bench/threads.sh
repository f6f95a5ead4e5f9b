#!/usr/bin/env bash
# Where a `pairs` load's CPU goes: each server thread's and the load generator's
# CPU over 10 s of the measured window, per message, with the machine's idle
# share, and the commits of that window from /metrics: how many, how full, how
# many slow (docs/benchmarks.md, 2026-12-06). A fresh server and data directory.
#   bash scripts/bench/threads.sh [bin dir] [pairs arguments...]
#   bash scripts/bench/threads.sh target/release --rate 24000     # open loop
#   bash scripts/bench/threads.sh target/release --window 8       # closed loop
# PORT sets the server's port (9720).
set -euo pipefail
cd "$(dirname "$0")/../.."
port=${PORT:-9720}
# The load: 1,000 users, 5 s of warm-up, 15 s measured; sampled from 7 s to 17 s.
source scripts/bench/window.sh
start_window "$@"

# Clock ticks of each thread (name and tid), and the ns it waited for a core.
threads() { for t in /proc/"$server"/task/*; do echo "$(tr ' ' _ <"$t/comm")/${t##*/} $(awk '{print $14 + $15}' "$t/stat") $(cut -d' ' -f2 "$t/schedstat")"; done; }
# Clock ticks of the load generator, and of the machine.
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
# The committer's batches: their sizes and store times.
commits() { curl -sf "http://127.0.0.1:$port/metrics" | grep -E '^confab_commit_(batch_messages|store_seconds)_(bucket|count|sum)'; }
before=$(threads) lg0=$(ticks "$loadgen") cpu0=$(head -1 /proc/stat) m0=$(commits)
sleep 10
after=$(threads) lg1=$(ticks "$loadgen") cpu1=$(head -1 /proc/stat) m1=$(commits)
wait "$loadgen"
loadgen=
python3 - "$data.json" "$before" "$after" "$lg0" "$lg1" "$cpu0" "$cpu1" "$(getconf CLK_TCK)" "$m0" "$m1" <<'PY'
import json, sys
path, before, after, lg0, lg1, cpu0, cpu1, hz, m0, m1 = sys.argv[1:]
run = json.loads(open(path).read().splitlines()[-1])
rate = run["delivered_per_second"]
t0 = {name: (ticks, waited) for name, ticks, waited in (line.split() for line in before.splitlines())}
per_message = lambda ticks: ticks / float(hz) / 10 / rate * 1e6  # µs of CPU per message
print(f"reached {rate:,.0f} msg/s; delivery p50 {run['delivery_ms']['p50']} ms, p99 {run['delivery_ms']['p99']} ms")
for line in after.splitlines():
    name, ticks, waited = line.split()
    ticks0, waited0 = t0.get(name, (ticks, waited))
    used = int(ticks) - int(ticks0)
    if used > 0:
        print(f"  {name:28} {used / float(hz) * 10:5.1f}% of a core  {per_message(used):5.1f} µs a message, "
              f"waited for a core {(int(waited) - int(waited0)) / 1e8:4.1f}% of the time")
used = int(lg1) - int(lg0)
print(f"  {'load generator':28} {used / float(hz) * 10:5.1f}% of a core  {per_message(used):5.1f} µs a message")
a, b = [list(map(int, c.split()[1:])) for c in (cpu0, cpu1)]
delta = [y - x for x, y in zip(a, b)]
print(f"  machine idle {100 * delta[3] / sum(delta):.1f}%")
metric = lambda text: {k: float(v) for k, v in (line.rsplit(' ', 1) for line in text.splitlines())}
m0, m1 = metric(m0), metric(m1)
delta = lambda key: m1.get(key, 0) - m0.get(key, 0)
count = delta("confab_commit_batch_messages_count")
if count:
    single = delta('confab_commit_batch_messages_bucket{le="1"}')
    slow = lambda s: count - delta(f'confab_commit_store_seconds_bucket{{le="{s}"}}')
    print(f"  commits {count:,.0f}, {delta('confab_commit_batch_messages_sum') / count:.1f} messages each, "
          f"{100 * single / count:.0f}% of one message; over 5 / 10 / 25 ms: "
          f"{slow('0.005'):.0f} / {slow('0.01'):.0f} / {slow('0.025'):.0f}")
PY
