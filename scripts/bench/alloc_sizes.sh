#!/usr/bin/env bash
# Which blocks the server allocates a message, by size: a uprobe on glibc's `malloc`
# and `realloc` that records the size asked for, over 2 s of a `pairs` load, counted
# per thread and size and divided by the messages committed meanwhile
# (docs/benchmarks.md, 2026-12-07, eleventh session). Blocks over 1,032 bytes miss
# glibc's per-thread cache and take its slow paths. With CALLERS=1, each of the
# most frequent sizes of the Tokio worker is also shown with its most common call
# chain (needs a build with frame pointers: RUSTFLAGS="-C force-frame-pointers=yes").
# The probes slow every call, so the run's throughput is not a benchmark figure.
# Needs root (perf probe).
#   bash scripts/bench/alloc_sizes.sh [bin dir] [pairs arguments...]
#   bash scripts/bench/alloc_sizes.sh target/release --rate 16000
# PORT sets the server's port (9740).
set -euo pipefail
cd "$(dirname "$0")/../.."
bin=${1:-target/release}
shift || true
port=${PORT:-9740}
source scripts/bench/probes.sh
libc_probes "$bin" 'mallocsz=malloc bytes=%di:u64' 'reallocsz=realloc bytes=%si:u64'

source scripts/bench/window.sh
start_window "$bin" "$@"
graph=()
[ "${CALLERS:-}" = 1 ] && graph=(--call-graph fp)
# The messages committed are read by the command perf runs for the recording's
# length, so they cover the recording and not perf's own setup.
committed="curl -sf http://127.0.0.1:$port/metrics | awk '/^confab_commit_batch_messages_sum/ {print \$2}'"
perf record -q -e probe_libc:mallocsz -e probe_libc:reallocsz "${graph[@]}" -o "$data.perf" -p "$server" -- \
    sh -c "$committed >$data.m0; sleep 2; $committed >$data.m1" 2>/dev/null
m0=$(cat "$data.m0") m1=$(cat "$data.m1")
wait "$loadgen"
loadgen=
perf script -i "$data.perf" -F comm,event,trace${graph:+,ip,sym} 2>/dev/null >"$data.script"
python3 - "$data.script" "$m0" "$m1" "${CALLERS:-}" <<'PY'
import collections, re, sys
path, m0, m1, callers = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), sys.argv[4] == "1"
messages = m1 - m0
counts, chains = collections.Counter(), collections.defaultdict(collections.Counter)
key, frames = None, []
def done():
    if key:
        counts[key] += 1
        chains[key][tuple(frames[1:6])] += 1
for line in open(path):
    m = re.match(r"\s*(\S+)\s+probe_libc:(\w+)sz:.*bytes=(\d+)", line)
    if m:
        done()
        key, frames = (m.group(1), m.group(2), int(m.group(3))), []
    elif line.strip():
        frames.append(line.split(None, 1)[-1].strip()[:100])
done()
print(f"{messages:,.0f} messages committed while recording (the window is about that of the recording)")
for (thread, call, size), n in counts.most_common(15):
    cache = "" if size <= 1032 else "  (past the per-thread cache)"
    print(f"  {thread:16} {call:8} {size:6} bytes  {n / messages:5.2f} a message{cache}")
    if callers and thread.startswith("tokio"):
        chain, seen = chains[(thread, call, size)].most_common(1)[0]
        for frame in chain:
            print(f"        {frame}")
PY
