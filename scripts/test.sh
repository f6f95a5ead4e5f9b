#!/usr/bin/env bash
# The whole test suite: makes sure PostgreSQL and Redis answer (starting them if
# needed), then runs every test. Ends with one line: "tests: N passed, N failed".
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/services.sh

log=$(mktemp)
trap 'rm -f "$log"' EXIT
cargo test --workspace --locked 2>&1 | tee "$log"

# The web app (web/): its tools from npm, pinned by tests/browser/package-lock.json;
# then type checks over the JSDoc types, the client module's unit tests, and the
# end-to-end tests in Chromium against the server binary cargo just built.
echo "== web app: npm ci, tsc --noEmit --checkJs, unit tests, browser tests"
(cd tests/browser && npm ci --no-audit --no-fund --loglevel=error)
(cd tests/browser && npx --no-install tsc -p tsconfig.json)
node --test web/tests/ 2>&1 | tee -a "$log"
(cd tests/browser && node --test --test-concurrency=1 e2e/) 2>&1 | tee -a "$log"

# cargo's last line is the doc-tests' (often "0 passed"); end with the total
# instead, cargo's and Node's test runners' together.
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($i ~ /^passed/) p += $(i-1); if ($i ~ /^failed/) f += $(i-1) } }
     /^# pass / { p += $3 } /^# fail / { f += $3 }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
