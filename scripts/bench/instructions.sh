#!/usr/bin/env bash
# Instructions a message: the server under Callgrind, which counts every
# instruction it runs, through a light `pairs` load. The count is repeatable where
# this machine's clock is not (a change of 1% shows here and is lost in the noise
# of threads.sh), so it measures small changes to the send path. It is not a
# throughput: Valgrind runs one thread at a time, about fifty times slower.
# A fresh server and data directory.
#   bash scripts/bench/instructions.sh [bin dir] [pairs arguments...]
#   bash scripts/bench/instructions.sh target/release                       # 100 users, 1,000 msg/s
#   bash scripts/bench/instructions.sh target/release --users 200 --rate 2000
# Prints the messages the server committed in the 10 s window and, for the whole
# process and for each of its threads, the instructions a message. TOP=n also
# prints the n functions with the most instructions (callgrind_annotate).
# PORT sets the server's port (9790); OUT keeps Callgrind's files in that directory.
set -euo pipefail
cd "$(dirname "$0")/../.."
bin=${1:-target/release}
shift || true
port=${PORT:-9790}
if ! command -v valgrind >/dev/null; then
    command -v apt-get >/dev/null || { echo "error: instructions.sh needs Valgrind (not installed, and no apt-get)" >&2; exit 1; }
    echo "== installing Valgrind (Debian's package)" >&2
    (apt-get install -y -qq --no-install-recommends valgrind >/dev/null 2>&1 ||
        { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq --no-install-recommends valgrind >/dev/null; }) ||
        { echo "error: installing Valgrind failed" >&2; exit 1; }
fi
work=$(mktemp -d)
out=${OUT:-$work}
mkdir -p "$out"
server= loadgen=
trap 'kill $server $loadgen 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT
# Not instrumented until the window: start-up and the sign-ups (Argon2) run at
# Valgrind's lighter speed, and nothing before the window is counted.
valgrind --tool=callgrind --instr-atstart=no --separate-threads=yes --callgrind-out-file="$out/callgrind.out" \
    "$bin/confab" serve --listen "127.0.0.1:$port" --data-dir "$work/data" \
    --rate-limit 1000000 --rate-burst 1000000 --signin-attempts-per-minute 1000000 >"$work/server.log" 2>&1 &
server=$!
for _ in $(seq 300); do curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.2; done
# The load: by default 100 users at 1,000 msg/s in all; 5 s of warm-up, 15 s measured.
[[ " $* " == *" --users "* ]] || set -- --users 100 "$@"
[[ " $* " == *" --rate "* || " $* " == *" --window "* ]] || set -- --rate 1000 "$@"
"$bin/confab-loadgen" pairs --base "http://127.0.0.1:$port" --warmup 5 --seconds 15 --json "$@" \
    >"$work/load.json" 2>"$work/load.err" &
loadgen=$!
for _ in $(seq 3000); do grep -q "signed in" "$work/load.err" 2>/dev/null && grep -qE "signed in ([0-9]+)/\1" "$work/load.err" && break; sleep 0.2; done
sleep 4
committed() { curl -sf "http://127.0.0.1:$port/metrics" | awk '$1 == "confab_commit_batch_messages_sum" {print $2}'; }
callgrind_control -i on "$server" >/dev/null 2>&1
sleep 1
callgrind_control -z "$server" >/dev/null 2>&1
m0=$(committed)
sleep 10
m1=$(committed)
callgrind_control --dump=window "$server" >/dev/null 2>&1
callgrind_control -i off "$server" >/dev/null 2>&1
wait "$loadgen"
loadgen=
python3 - "$out" "$m0" "$m1" "$work/load.json" <<'PY'
import glob, json, re, sys
out, m0, m1, load = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
messages = m1 - m0
run = json.loads(open(load).read().splitlines()[-1])
print(f"committed {messages:,.0f} messages in the window; the load: {run['acked_per_second']:,.0f} msg/s acked, "
      f"delivery p99 {run['delivery_ms']['p99']} ms, lost {run['lost_undelivered']}")
threads = {}
# One file per thread for each dump; the window's say what triggered them.
for path in glob.glob(f"{out}/callgrind.out*"):
    text = open(path, errors="replace").read()
    if not re.search(r"^desc: Trigger: dump window$", text, re.M):
        continue
    total = re.search(r"^(?:summary|totals): (\d+)", text, re.M)
    names = re.findall(r"^fn=\(\d+\) (\S+)", text, re.M)
    thread = re.search(r"^thread: (\d+)", text, re.M)
    if total and int(total.group(1)) > 0:
        kind = ("sqlite" if any(n.startswith("sqlite3") for n in names) else "other")
        threads[(int(thread.group(1)) if thread else 0, kind, path)] = int(total.group(1))
whole = sum(threads.values())
print(f"  the process: {whole / messages:,.0f} instructions a message")
for (tid, kind, path), ir in sorted(threads.items()):
    if ir / whole >= 0.005:
        print(f"  thread {tid:2} ({'runs SQLite' if kind == 'sqlite' else 'no SQLite'}): {ir / messages:,.0f} a message ({100 * ir / whole:.1f}%)")
print("  (Valgrind numbers threads in the order they start; on one worker thread, the one without SQLite is the")
print("  Tokio worker, and of those with SQLite the larger is the message writer, the smaller the checkpointer.)")
PY
if [ -n "${TOP:-}" ]; then
    for f in $(grep -l "^desc: Trigger: dump window$" "$out"/callgrind.out*); do
        echo "== $f"
        callgrind_annotate "$f" 2>/dev/null | sed -n '/^Ir/,$p' | head -n $((TOP + 6))
    done
fi
