# Sourced by ab.sh and two_nodes.sh: starts two Confab nodes on a fresh database
# `bench` of the local PostgreSQL, with the local Redis between them.
#   start_two_nodes <confab binary> <first port> <work dir>
# Sets `nodes` (their pids) and `bases` (their URLs); each answers /healthz on return.
start_two_nodes() {
    local bin=$1 port=$2 work=$3
    psql -q -h 127.0.0.1 -U postgres -d test -c "DROP DATABASE IF EXISTS bench" -c "CREATE DATABASE bench"
    nodes=() bases=()
    for port in "$port" "$((port + 1))"; do
        # Two nodes share the machine's cores: one worker thread each.
        CONFAB_WORKER_THREADS=1 "$bin" serve --listen "127.0.0.1:$port" --data-dir "$work/data-$port" \
            --database-url postgres://postgres@127.0.0.1:5432/bench --redis-url redis://127.0.0.1:6379 \
            --redis-prefix bench --jwt-secret 0123456789abcdef0123456789abcdef0123 \
            --rate-limit 1000000 --rate-burst 1000000 --signin-attempts-per-minute 1000000 \
            >"$work/server-$port.log" 2>&1 &
        nodes+=($!) bases+=("http://127.0.0.1:$port")
        for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.1; done
    done
}
