#!/usr/bin/env bash
# The fault tests at full size: the crash and shutdown tests of tests/api/crash.rs
# with 500 pairs (1,000 users sending, 8 unacknowledged messages each), release
# build. The README's test command runs the same tests with 20 pairs.
# See docs/reliability.md.
#   bash scripts/faults.sh [pairs]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/services.sh
CONFAB_FAULT_PAIRS="${1:-500}" cargo test --release --locked --test api -- crash:: faults:: \
    --test-threads 1 --nocapture 2>&1 | grep -E "^test |SIG|PostgreSQL|test result|panicked"
