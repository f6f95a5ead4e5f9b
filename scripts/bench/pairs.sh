#!/usr/bin/env bash
# The pairs benchmark: the bare relay (baseline) and Confab (SQLite, release build),
# each on this machine with the same load, one after the other, in one session.
#   bash scripts/bench/pairs.sh [users] [window] [seconds]
# Prints each run's JSON line (see docs/benchmarks.md).
set -euo pipefail
cd "$(dirname "$0")/../.."
users=${1:-1000} window=${2:-8} seconds=${3:-20}
cargo build --release --workspace --locked -q
bin=target/release
data=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$data"' EXIT

run() { # name, base, pid
    "$bin/confab-loadgen" pairs --base "$2" --users "$users" --window "$window" --seconds "$seconds" \
        --warmup 5 --server-pid "$3" --prefix "bench-$1" --json | sed "s/^/$1 /"
}

"$bin/confab-loadgen" relay --listen 127.0.0.1:9190 2>/dev/null &
relay=$!
sleep 0.5
run relay http://127.0.0.1:9190 "$relay"
kill "$relay"

# Sends and sign-ins are limited by default; a benchmark measures the server, not the limits.
"$bin/confab" serve --listen 127.0.0.1:9191 --data-dir "$data" --rate-limit 1000000 --rate-burst 1000000 --signin-attempts-per-minute 1000000 \
    >"$data/server.log" 2>&1 &
server=$!
for _ in $(seq 50); do curl -sf http://127.0.0.1:9191/healthz >/dev/null && break; sleep 0.1; done
run confab http://127.0.0.1:9191 "$server"
