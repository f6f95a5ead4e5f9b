#!/usr/bin/env bash
# Before against after: two server binaries under the same load, interleaved
# (before, after, after, before) so the machine's drift falls on both alike. Each
# run gets a fresh server and data directory; prints one JSON line per run.
#   bash scripts/bench/ab.sh BEFORE AFTER closed [users] [window] [seconds]
#   bash scripts/bench/ab.sh BEFORE AFTER open RATE [users] [seconds]
#   bash scripts/bench/ab.sh BEFORE AFTER idle [connections]
# BEFORE and AFTER are paths to `confab` release binaries (build the older one from
# a worktree of its commit); the load generator is this tree's release build.
set -euo pipefail
cd "$(dirname "$0")/../.."
before=$1 after=$2 scenario=$3
shift 3
cargo build --release -p confab-loadgen --locked -q
loadgen=target/release/confab-loadgen
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
port=9600

run() { # label, binary (the scenario's arguments are ARG1..ARG3)
    port=$((port + 1))
    local data="$work/data-$port"
    # Sends and sign-ins are limited by default; a benchmark measures the server, not the limits.
    "$2" serve --listen "127.0.0.1:$port" --data-dir "$data" --rate-limit 1000000 --rate-burst 1000000 \
        --signin-attempts-per-minute 1000000 >"$work/server-$port.log" 2>&1 &
    local server=$! base="http://127.0.0.1:$port"
    for _ in $(seq 100); do curl -sf "$base/healthz" >/dev/null && break; sleep 0.1; done
    local line
    case $scenario in
    closed)
        line=$("$loadgen" pairs --base "$base" --users "${ARG1:-1000}" --window "${ARG2:-8}" --seconds "${ARG3:-15}" \
            --warmup 5 --server-pid "$server" --json 2>/dev/null)
        ;;
    open)
        line=$("$loadgen" pairs --base "$base" --rate "$ARG1" --users "${ARG2:-1000}" --seconds "${ARG3:-15}" \
            --warmup 5 --server-pid "$server" --json 2>/dev/null)
        ;;
    idle)
        line=$("$loadgen" idle --base "$base" --connections "${ARG1:-19000}" --server-pid "$server" --json 2>/dev/null)
        ;;
    *)
        echo "unknown scenario $scenario (closed, open RATE, idle)" >&2
        exit 2
        ;;
    esac
    echo "$1 $line"
    kill "$server"
    wait "$server" 2>/dev/null || true
    rm -rf "$data"
}

ARG1=${1:-} ARG2=${2:-} ARG3=${3:-}
for label in before after after before; do
    if [ "$label" = before ]; then bin=$before; else bin=$after; fi
    run "$label" "$bin"
done
