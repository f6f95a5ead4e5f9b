#!/usr/bin/env bash
# RSS of a fresh server at rest, at the end of a `pairs` load, and 30 s and 60 s
# after it (docs/benchmarks.md, "memory after load"), with the anonymous part apart
# from the file-backed one (the binary's code pages). A short warm-up load (20 users,
# 3 s) and the trim after it come first, so the idle level is also shown with the
# code of the message path already paged in: a fresh process has never run it.
#   bash scripts/bench/after_load.sh [bin dir] [port]
set -euo pipefail
cd "$(dirname "$0")/../.."
bin=${1:-target/release} port=${2:-9480}
data=$(mktemp -d)
"$bin/confab" serve --listen "127.0.0.1:$port" --data-dir "$data" \
    --rate-limit 1000000 --rate-burst 1000000 --signin-attempts-per-minute 1000000 >"$data.log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true; wait $server 2>/dev/null || true; rm -rf "$data" "$data.log"' EXIT
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.1; done
rss() {
    awk '/^Rss:/{rss=$2} /^Anonymous:/{anon=$2} END{printf "rss %.1f MiB, anonymous %.1f MiB", rss/1024, anon/1024}' \
        "/proc/$server/smaps_rollup"
}
echo "at rest: $(rss)"
"$bin/confab-loadgen" pairs --base "http://127.0.0.1:$port" --users 20 --warmup 1 --seconds 3 --json >/dev/null 2>&1
sleep 15 # the trimmer looks every 5 s and trims after the first quiet look
echo "at rest after a warm-up: $(rss)"
"$bin/confab-loadgen" pairs --base "http://127.0.0.1:$port" --server-pid "$server" --warmup 5 --seconds 15 --json \
    2>/dev/null | python3 -c "import json,sys; d=json.loads(sys.stdin.readlines()[-1]); print(f\"load: {d['acked_per_second']:.0f} msg/s\")"
echo "end of the load: $(rss)"
sleep 30
echo "30 s later: $(rss)"
sleep 30
echo "60 s later: $(rss)"
echo "trims: $(curl -s "http://127.0.0.1:$port/metrics" | awk '/^confab_memory_trims_total/{print $2}')"
