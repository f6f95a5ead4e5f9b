#!/usr/bin/env bash
# The whole benchmark set of docs/benchmarks.md, in one session, release build:
#   1. pairs, closed loop: the bare relay (baseline), then Confab on SQLite;
#   2. pairs, open loop at half of Confab's closed-loop rate (latency under load);
#   3. idle: 19,000 authenticated connections held (accept rate, RSS per connection);
#   4. sign-ups and sign-ins (RSS under Argon2);
#   5. history: sends and history pages with [preload] messages stored;
#   6. memory after load: RSS at rest, after a pairs load, and a minute later.
# Each run gets a fresh server and data directory. About eight minutes.
#   bash scripts/bench/all.sh [users] [window] [seconds] [idle connections] [preload]
set -euo pipefail
cd "$(dirname "$0")/../.."
users=${1:-1000} window=${2:-8} seconds=${3:-20} idle=${4:-19000} preload=${5:-1000000}
cargo build --release --workspace --locked -q
bin=target/release
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
port=9400

# Starts a fresh Confab server; sets $server (pid) and $base.
start_confab() {
    port=$((port + 1))
    local data="$work/data-$port"
    # Sends and sign-ins are limited by default; a benchmark measures the server, not the limits.
    "$bin/confab" serve --listen "127.0.0.1:$port" --data-dir "$data" --rate-limit 1000000 --rate-burst 1000000 --signin-attempts-per-minute 1000000 "$@" \
        >"$work/server-$port.log" 2>&1 &
    server=$! base="http://127.0.0.1:$port"
    for _ in $(seq 100); do curl -sf "$base/healthz" >/dev/null && return; sleep 0.1; done
    echo "the server did not start; see $work/server-$port.log" >&2
    exit 1
}
stop() { kill "$1"; wait "$1" 2>/dev/null || true; }
field() { python3 -c "import json,sys; print(json.loads(sys.argv[1])['$2'])" "$1"; }

pairs() { # label, base, pid, extra args
    "$bin/confab-loadgen" pairs --base "$2" --users "$users" --window "$window" --seconds "$seconds" \
        --warmup 5 --server-pid "$3" --prefix "bench-$1" --json "${@:4}" 2>/dev/null
}

"$bin/confab-loadgen" relay --listen 127.0.0.1:9390 2>/dev/null &
relay=$!
sleep 0.5
relay_line=$(pairs relay http://127.0.0.1:9390 "$relay")
echo "relay $relay_line"
stop "$relay"

start_confab
closed=$(pairs confab "$base" "$server")
echo "confab-closed $closed"
stop "$server"

half=$(python3 -c "print(round($(field "$closed" acked_per_second) / 2))")
start_confab
open=$(pairs confab-open "$base" "$server" --rate "$half")
echo "confab-open-$half $open"
stop "$server"

start_confab
idle_line=$("$bin/confab-loadgen" idle --base "$base" --connections "$idle" --server-pid "$server" --json 2>/dev/null)
echo "confab-idle $idle_line"
stop "$server"

start_confab
echo "confab-signups $(python3 scripts/bench/signups.py "$base" "$server" 1200 | tr '\n' ';')"
stop "$server"

start_confab
history_line=$("$bin/confab-loadgen" history --base "$base" --server-pid "$server" --users "$users" --window "$window" \
    --seconds "$seconds" --preload "$preload" --prefix bench-history --json 2>/dev/null)
echo "confab-history $history_line"
stop "$server"

echo "confab-after-load $(bash scripts/bench/after_load.sh "$bin" $((port + 1)) | tr '\n' ';')"

python3 - "$relay_line" "$closed" "$open" "$idle_line" "$history_line" <<'PY'
import json, sys
relay, closed, open_, idle, history = (json.loads(a) for a in sys.argv[1:])
print(f"closed loop: {closed['acked_per_second']:.0f} msg/s = {closed['acked_per_second'] / relay['acked_per_second']:.2f} of the relay's {relay['acked_per_second']:.0f}")
print(f"open loop at {open_['offered_per_second']:.0f} msg/s: delivery p99 {open_['delivery_ms']['p99']:.1f} ms, lost {open_['lost_undelivered']}")
print(f"idle: {idle['opened']} connections at {idle['connections_per_second']:.0f}/s, {idle['server_rss_per_connection_kib']:.1f} KiB each")
print(f"history: {history['preloaded']} stored, then {history['send']['acked_per_second']:.0f} msg/s "
      f"({history['send']['acked_per_second'] / closed['acked_per_second']:.2f} of the empty store); "
      f"pages p99 {history['page_ms']['p99']:.2f} ms")
PY
