# Sourced by threads.sh, allocs.sh, io.sh and slow_syscalls.sh: starts a fresh server (on $port,
# data in $data) and a `pairs` load of 1,000 users against it (5 s of warm-up,
# 15 s measured; extra arguments go to the load generator), and returns 7 s into
# the load, the start of the 10 s window the scripts look at. Sets $server,
# $loadgen and $data, and sets the caller's EXIT trap to `stop_window`, which
# stops them and removes $data and the files beside it.
server= loadgen= data=
stop_window() {
    kill $server $loadgen 2>/dev/null || true
    wait 2>/dev/null || true
    [ -z "$data" ] || rm -rf "$data" "$data".*
}
start_window() { # [bin dir, by default target/release] [pairs arguments...]
    local bin=${1:-target/release}
    shift || true
    trap stop_window EXIT
    data=$(mktemp -d)
    "$bin/confab" serve --listen "127.0.0.1:$port" --data-dir "$data" \
        --rate-limit 1000000 --rate-burst 1000000 --signin-attempts-per-minute 1000000 >"$data.log" 2>&1 &
    server=$!
    for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.1; done
    "$bin/confab-loadgen" pairs --base "http://127.0.0.1:$port" --users 1000 --warmup 5 --seconds 15 \
        --server-pid "$server" --json "$@" 2>"$data.err" >"$data.json" &
    loadgen=$!
    for _ in $(seq 600); do grep -q "signed in 1000/1000" "$data.err" 2>/dev/null && break; sleep 0.1; done
    sleep 7
}
