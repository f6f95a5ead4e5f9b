#!/usr/bin/env bash
# Before against after: two server binaries under the same load, interleaved
# (before, after, after, before) so the machine's drift falls on both alike. Each
# run gets a fresh server and data directory; prints one JSON line per run.
#   bash scripts/bench/ab.sh BEFORE AFTER closed [users] [window] [seconds]
#   bash scripts/bench/ab.sh BEFORE AFTER open RATE [users] [seconds]
#   bash scripts/bench/ab.sh BEFORE AFTER idle [connections]
#   bash scripts/bench/ab.sh BEFORE AFTER postgres [seconds]
# (postgres: two nodes on a fresh database `bench` of the local PostgreSQL, with the
# local Redis between them; user i connects to node i % 2, so every message
# crosses Redis.)
# BEFORE and AFTER are paths to `confab` release binaries (build the older one from
# a worktree of its commit); the load generator is this tree's release build.
# With RELAY=1, `closed` also runs the load generator's bare relay under the same
# load before, between and after the pairs (relay, before, after, relay, after,
# before, relay): the baseline of the 0.70 target drifts within a session, so it
# is measured beside what it is compared with.
# Last comes a summary: each contender's mean msg/s, its runs' losses, and, with
# the relay, each one's share of the relay's mean.
set -euo pipefail
cd "$(dirname "$0")/../.."
before=$1 after=$2 scenario=$3
shift 3
# LOADGEN names a load generator binary already built; else this tree's is built.
if [ -z "${LOADGEN:-}" ]; then cargo build --release -p confab-loadgen --locked -q; fi
loadgen=${LOADGEN:-target/release/confab-loadgen}
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
port=9600
# shellcheck source=two_nodes_start.sh
source scripts/bench/two_nodes_start.sh

# Two nodes on PostgreSQL and Redis; prints the load's JSON line.
two_nodes() { # binary
    start_two_nodes "$1" $((port + 1)) "$work"
    port=$((port + 2))
    "$loadgen" pairs --base "${bases[0]},${bases[1]}" --warmup 5 --seconds "${ARG1:-20}" --json 2>/dev/null
    kill "${nodes[@]}"
    wait "${nodes[@]}" 2>/dev/null || true
}

# The `closed` scenario's load against BASE, whose process is PID; extra arguments go
# to the load generator. Prints its JSON line.
closed_load() { # base, pid, [arguments...]
    local base=$1 pid=$2
    shift 2
    "$loadgen" pairs --base "$base" --users "${ARG1:-1000}" --window "${ARG2:-8}" --seconds "${ARG3:-15}" \
        --warmup 5 --server-pid "$pid" --json "$@" 2>/dev/null
}

run() { # label, binary (the scenario's arguments are ARG1..ARG3)
    if [ "$scenario" = postgres ]; then
        echo "$1 $(two_nodes "$2")"
        return
    fi
    port=$((port + 1))
    local data="$work/data-$port"
    # Sends and sign-ins are limited by default; a benchmark measures the server, not the limits.
    "$2" serve --listen "127.0.0.1:$port" --data-dir "$data" --rate-limit 1000000 --rate-burst 1000000 \
        --signin-attempts-per-minute 1000000 >"$work/server-$port.log" 2>&1 &
    local server=$! base="http://127.0.0.1:$port"
    for _ in $(seq 100); do curl -sf "$base/healthz" >/dev/null && break; sleep 0.1; done
    local line
    case $scenario in
    closed) line=$(closed_load "$base" "$server") ;;
    open)
        line=$("$loadgen" pairs --base "$base" --rate "$ARG1" --users "${ARG2:-1000}" --seconds "${ARG3:-15}" \
            --warmup 5 --server-pid "$server" --json 2>/dev/null)
        ;;
    idle)
        line=$("$loadgen" idle --base "$base" --connections "${ARG1:-19000}" --server-pid "$server" --json 2>/dev/null)
        ;;
    *)
        echo "unknown scenario $scenario (closed, open RATE, idle, postgres)" >&2
        exit 2
        ;;
    esac
    echo "$1 $line"
    kill "$server"
    wait "$server" 2>/dev/null || true
    rm -rf "$data"
}

# The relay under the `closed` load; prints its JSON line.
relay() {
    port=$((port + 1))
    "$loadgen" relay --listen "127.0.0.1:$port" >"$work/relay-$port.log" 2>&1 &
    local relay=$!
    for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$port/" && break; sleep 0.1; done
    echo "relay $(closed_load "http://127.0.0.1:$port" "$relay" --verify-pairs 0)"
    kill "$relay"
    wait "$relay" 2>/dev/null || true
}

ARG1=${1:-} ARG2=${2:-} ARG3=${3:-}
order=(before after after before)
if [ "${RELAY:-}" = 1 ] && [ "$scenario" = closed ]; then order=(relay before after relay after before relay); fi
for label in "${order[@]}"; do
    case $label in
    relay) relay ;;
    before) run before "$before" ;;
    *) run after "$after" ;;
    esac
done | tee "$work/lines"
python3 - "$work/lines" <<'PY'
import json, sys
runs = {}
for line in open(sys.argv[1]):
    label, _, body = line.partition(" ")
    if body.startswith("{"):
        runs.setdefault(label, []).append(json.loads(body))
relay = [r["acked_per_second"] for r in runs.get("relay", []) if "acked_per_second" in r]
for label, rs in runs.items():
    rates = [r["acked_per_second"] for r in rs if "acked_per_second" in r]
    if not rates:
        continue
    mean = sum(rates) / len(rates)
    lost = sum((r.get("lost_undelivered") or 0) + (r.get("lost_in_store") or 0) for r in rs)
    share = f", {mean / (sum(relay) / len(relay)):.2f} of the relay" if relay and label != "relay" else ""
    print(f"# {label}: mean {mean:,.0f} msg/s over {len(rates)} runs, {lost} lost{share}")
PY
