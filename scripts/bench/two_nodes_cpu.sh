#!/usr/bin/env bash
# The two nodes' CPU a message: one `pairs` closed loop on two nodes with the
# PostgreSQL store and the Redis bus (1,000 users, window 8, users split across
# the nodes as in `ab.sh postgres`), and the CPU both nodes and the load generator
# used over 10 s of its measured window, a message. Unlike two_nodes.sh it needs
# nothing preloaded; run it alternated with another build (docs/benchmarks.md,
# 2026-12-07, twelfth session).
#   bash scripts/bench/two_nodes_cpu.sh <confab binary> [first port, 9760]
# LOADGEN names a load generator binary already built; else this tree's is built.
set -euo pipefail
cd "$(dirname "$0")/../.."
bin=$1 port=${2:-9760}
if [ -z "${LOADGEN:-}" ]; then cargo build --release -p confab-loadgen --locked -q; fi
loadgen=${LOADGEN:-target/release/confab-loadgen}
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
# shellcheck source=two_nodes_start.sh
source scripts/bench/two_nodes_start.sh
start_two_nodes "$bin" "$port" "$work" 2>/dev/null
"$loadgen" pairs --base "${bases[0]},${bases[1]}" --warmup 5 --seconds 15 --json >"$work/load.json" 2>"$work/load.err" &
load=$!
for _ in $(seq 600); do grep -q "signed in 1000/1000" "$work/load.err" 2>/dev/null && break; sleep 0.2; done
sleep 8 # into the measured window (5 s of warm-up)
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
a0=$(ticks "${nodes[0]}") b0=$(ticks "${nodes[1]}") l0=$(ticks "$load")
sleep 10
a1=$(ticks "${nodes[0]}") b1=$(ticks "${nodes[1]}") l1=$(ticks "$load")
wait "$load"
kill "${nodes[@]}"
wait "${nodes[@]}" 2>/dev/null || true
python3 - "$work/load.json" $((a1 - a0 + b1 - b0)) $((l1 - l0)) "$(getconf CLK_TCK)" <<'PY'
import json, sys
run = json.loads(open(sys.argv[1]).read().splitlines()[-1])
nodes, load, hz = int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
rate = run["acked_per_second"]
us = lambda ticks: ticks / hz / 10 / rate * 1e6  # µs of CPU a message
print(f"{rate:,.0f} msg/s, delivery p99 {run['delivery_ms']['p99']} ms, lost {run['lost_undelivered']} undelivered "
      f"and {run['lost_in_store']} missing of {run['verified_messages']} read back; nodes {nodes / hz * 10:.0f}% of a core, "
      f"{us(nodes):.2f} µs a message; load generator {us(load):.2f} µs a message")
PY
