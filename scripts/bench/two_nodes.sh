#!/usr/bin/env bash
# Where a two-node run (PostgreSQL store, Redis bus) spends its time: one `pairs`
# closed loop (1,000 users, window 8, users split across the nodes as in
# `ab.sh postgres`), then
#   - the load's figures: msg/s, loss, delivery p99;
#   - CPU by process name over 10 s of the measured window (postgres, confab, the
#     load generator, redis-server, ...);
#   - PostgreSQL's statements by total time: ms a call, calls, buffer hits a row
#     (`pg_stat_statements`, reset just before the load);
#   - each node's commit batches, store and publish time, gaps read from the store
#     and bus lag, from its /metrics.
#
#   bash scripts/bench/two_nodes.sh <confab binary> [label] [SQL]
#
# SQL, when given, runs on the `bench` database once both nodes have migrated it:
# a schema change tried without a build (an index dropped, a table's fillfactor).
# LOADGEN names a load generator binary already built; else this tree's is built.
# Needs `pg_stat_statements` preloaded; without it, the script says how and stops.
set -euo pipefail
cd "$(dirname "$0")/../.."
bin=$1 label=${2:-run} sql=${3:-}
psql_test() { psql -h 127.0.0.1 -U postgres -d test "$@"; }
if ! psql_test -Atc "SHOW shared_preload_libraries" | grep -q pg_stat_statements; then
    cat >&2 <<'EOF'
two_nodes.sh needs pg_stat_statements preloaded by the local PostgreSQL:
  psql -h 127.0.0.1 -U postgres -d test -c "ALTER SYSTEM SET shared_preload_libraries = 'pg_stat_statements'"
  pg_ctlcluster 15 main restart
(ALTER SYSTEM RESET shared_preload_libraries and a restart undo it.)
EOF
    exit 1
fi
psql_test -qc "SET client_min_messages = warning" -c "CREATE EXTENSION IF NOT EXISTS pg_stat_statements"
if [ -z "${LOADGEN:-}" ]; then cargo build --release -p confab-loadgen --locked -q; fi
loadgen=${LOADGEN:-target/release/confab-loadgen}
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT

# shellcheck source=two_nodes_start.sh
source scripts/bench/two_nodes_start.sh
start_two_nodes "$bin" 9701 "$work"
if [ -n "$sql" ]; then psql -q -h 127.0.0.1 -U postgres -d bench -c "$sql"; fi
psql_test -qAtc "SELECT pg_stat_statements_reset()" >/dev/null

# CPU by process name over 10 s, starting DELAY s in (past the sign-ups and the warm-up).
python3 - "${DELAY:-27}" >"$work/cpu" <<'PY' &
import os, sys, time
def snap():
    d = {}
    for p in filter(str.isdigit, os.listdir('/proc')):
        try:
            s = open(f'/proc/{p}/stat').read()
        except OSError:
            continue
        comm, f = s[s.index('(') + 1:s.rindex(')')], s[s.rindex(')') + 2:].split()
        d[p] = ('postgres' if comm.startswith('postgres') else comm, int(f[11]) + int(f[12]))
    return d
time.sleep(float(sys.argv[1]))
a, t0 = snap(), time.time()
time.sleep(10)
b, dt = snap(), time.time() - t0
total = {}
for p, (comm, t) in b.items():
    total[comm] = total.get(comm, 0) + t - (a[p][1] if p in a else 0)
hz = os.sysconf('SC_CLK_TCK')
busy = sorted(((v, k) for k, v in total.items() if 100 * v / hz / dt >= 1), reverse=True)
print('cpu: ' + ' '.join(f'{k} {100 * v / hz / dt:.0f}%' for v, k in busy))
PY
line=$("$loadgen" pairs --base "${bases[0]},${bases[1]}" --warmup 5 --seconds "${SECONDS_OF_LOAD:-15}" --json 2>/dev/null)
for base in "${bases[@]}"; do
    echo "node $base: $(curl -s "$base/metrics" | grep -E '^confab_(commit_(store|publish)_seconds_(sum|count)|commit_batch_messages_(sum|count)|ws_gap_fills_total|bus_lag_seconds) ' |
        sed 's/^confab_//' | tr '\n' ' ')"
done >"$work/metrics"
kill "${nodes[@]}"
wait "${nodes[@]}" 2>/dev/null || true
wait
echo "$label $(echo "$line" | python3 -c '
import json, sys
r = json.load(sys.stdin)
lost = r["lost_undelivered"] + r["lost_in_store"]
print("%s msg/s, lost %d, delivery p99 %.0f ms" % (format(round(r["acked_per_second"]), ","), lost, r["delivery_ms"]["p99"]))')"
cat "$work/cpu" "$work/metrics"
psql_test -c "SELECT calls, round((total_exec_time / calls)::numeric, 1) AS ms_a_call,
    round(shared_blks_hit::numeric / greatest(rows, 1), 1) AS hits_a_row, rows,
    left(regexp_replace(query, '\s+', ' ', 'g'), 60) AS statement
    FROM pg_stat_statements ORDER BY total_exec_time DESC LIMIT 6"
