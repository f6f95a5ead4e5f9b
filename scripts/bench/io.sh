#!/usr/bin/env bash
# Bytes each server thread writes a message (`wchar` of /proc/<pid>/task/<tid>/io,
# read and write calls on files; sockets are not counted) over 10 s of a `pairs`
# load: the SQLite writer's are its WAL frames, the checkpointer's the pages it
# copies into the database (docs/benchmarks.md, 2026-12-06, sixth session). A
# fresh server and data directory.
#   bash scripts/bench/io.sh [bin dir] [pairs arguments...]
#   bash scripts/bench/io.sh target/release --window 8
#   bash scripts/bench/io.sh target/release --window 8 --random-keys
# PORT sets the server's port (9740).
set -euo pipefail
cd "$(dirname "$0")/../.."
port=${PORT:-9740}
source scripts/bench/window.sh
start_window "$@"

# Bytes written and write calls so far, of each thread (name and tid).
written() { for t in /proc/"$server"/task/*; do echo "$(tr ' ' _ <"$t/comm")/${t##*/} $(awk '/^wchar/ {w = $2} /^syscw/ {s = $2} END {print w, s}' "$t/io")"; done; }
before=$(written)
sleep 10
after=$(written)
wait "$loadgen"
loadgen=
python3 - "$data.json" "$before" "$after" <<'PY'
import json, sys
path, before, after = sys.argv[1:]
run = json.loads(open(path).read().splitlines()[-1])
rate = run["delivered_per_second"]
t0 = {line.split()[0]: line.split()[1:] for line in before.splitlines()}
print(f"reached {rate:,.0f} msg/s; delivery p99 {run['delivery_ms']['p99']} ms")
for line in after.splitlines():
    name, wrote, calls = line.split()
    if name in t0 and int(wrote) > int(t0[name][0]):
        per = lambda now, then: (int(now) - int(then)) / 10 / rate
        print(f"  {name:28} {per(wrote, t0[name][0]):7,.0f} bytes a message  {per(calls, t0[name][1]):6.3f} writes a message")
PY
