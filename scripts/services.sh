#!/usr/bin/env bash
# Makes sure the services the tests need answer on 127.0.0.1: PostgreSQL (5432,
# database `test`) and Redis (6379). Starts one that is installed but stopped, with
# the machine's own start commands; fails loudly when one cannot be had. Sourced by
# scripts/test.sh.
set -euo pipefail

wait_for() { # name, attempts, command...
    local name=$1 tries=$2
    shift 2
    for _ in $(seq "$tries"); do
        if "$@" >/dev/null 2>&1; then return 0; fi
        sleep 0.5
    done
    echo "error: $name does not answer on 127.0.0.1 after starting it" >&2
    return 1
}

ensure_postgres() {
    if ! command -v pg_isready >/dev/null; then
        echo "error: PostgreSQL is not installed (the tests need it on 127.0.0.1:5432 with a database 'test');" >&2
        echo "       on Debian: apt-get install postgresql, then create the database 'test' with trust auth for 127.0.0.1" >&2
        return 1
    fi
    if ! pg_isready -q -h 127.0.0.1 -p 5432; then
        echo "== starting PostgreSQL"
        pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n 1)" main start
        wait_for PostgreSQL 60 pg_isready -q -h 127.0.0.1 -p 5432
    fi
    if ! psql -h 127.0.0.1 -U postgres -d test -Atc 'select 1' >/dev/null 2>&1; then
        echo "error: PostgreSQL answers, but the database 'test' is not reachable as user postgres" >&2
        return 1
    fi
}

ensure_redis() {
    if ! command -v redis-server >/dev/null; then
        echo "error: Redis is not installed (the tests need it on 127.0.0.1:6379); on Debian: apt-get install redis-server" >&2
        return 1
    fi
    if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
        echo "== starting Redis"
        mkdir -p /var/lib/redis /var/log/redis
        redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
            --dir /var/lib/redis --logfile /var/log/redis/ci.log
        wait_for Redis 40 redis-cli -h 127.0.0.1 -p 6379 ping
    fi
}

# nginx is not a service the tests share: the load-balancer test starts its own, from
# the binary of Debian's package, with deploy/nginx.conf.
ensure_nginx() {
    if command -v nginx >/dev/null || [ -x /usr/sbin/nginx ]; then return 0; fi
    if ! command -v apt-get >/dev/null; then
        echo "error: nginx is not installed (the load-balancer test needs it); install Debian's package nginx" >&2
        return 1
    fi
    echo "== installing nginx (Debian's package) for the load-balancer test"
    # Install the binary only: keep the package from starting a system nginx on port 80.
    local policy=/usr/sbin/policy-rc.d created=0
    if [ ! -e "$policy" ]; then printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy" && created=1; fi
    (apt-get install -y -qq --no-install-recommends nginx >/dev/null 2>&1 ||
        { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq --no-install-recommends nginx >/dev/null; })
    local status=$?
    if [ "$created" = 1 ]; then rm -f "$policy"; fi
    if [ "$status" != 0 ] || [ ! -x /usr/sbin/nginx ]; then
        echo "error: installing nginx failed; install Debian's package nginx by hand" >&2
        return 1
    fi
}

# The host-integration tests make key pairs with openssl, and run the documented demo
# (examples/integration: python3 and curl).
ensure_cli_tools() {
    local missing=()
    for tool in openssl python3 curl; do command -v "$tool" >/dev/null || missing+=("$tool"); done
    [ "${#missing[@]}" = 0 ] && return 0
    if ! command -v apt-get >/dev/null; then
        echo "error: the tests need ${missing[*]}; install them" >&2
        return 1
    fi
    echo "== installing ${missing[*]} (Debian's packages) for the host-integration tests"
    (apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null 2>&1 ||
        { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; }) ||
        { echo "error: installing ${missing[*]} failed; install them by hand" >&2; return 1; }
}

# The browser tests drive Debian's Chromium with the npm package playwright-core
# (whose own browser download cannot work here), and need Node.js with npm.
ensure_browser_tools() {
    if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
        echo "== installing Node.js and npm (Debian's packages) for the web app's checks"
        (apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null 2>&1 ||
            { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null; }) ||
            { echo "error: installing Node.js failed; install Debian's nodejs and npm by hand" >&2; return 1; }
    fi
    if [ ! -x /usr/bin/chromium ]; then
        echo "== installing Chromium (Debian's package) for the browser tests"
        (apt-get install -y -qq chromium >/dev/null 2>&1 ||
            { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq chromium >/dev/null; }) ||
            { echo "error: installing chromium failed; install Debian's package chromium by hand" >&2; return 1; }
    fi
}

ensure_postgres
ensure_redis
ensure_nginx
ensure_cli_tools
ensure_browser_tools
echo "== services: PostgreSQL and Redis answer; nginx, openssl, python3, curl, Node.js and Chromium are installed"
