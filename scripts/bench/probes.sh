# Sourced by allocs.sh and alloc_sizes.sh: `libc_probes BIN SPEC...` puts uprobes on
# the glibc that BIN/confab links (`perf probe` specs: `malloc`, or
# `mallocsz=malloc bytes=%di:u64` for one named `mallocsz` that records the size),
# mounting tracefs first if the container lacks it, and fails clearly unless every
# probe is there. Needs root.
libc_probes() {
    local bin=$1 spec libc probes
    shift
    libc=$(ldd "$bin/confab" | awk '/libc.so.6/ {print $3}')
    [ -e /sys/kernel/tracing/README ] || mount -t tracefs nodev /sys/kernel/tracing
    for spec in "$@"; do
        perf probe -q -x "$libc" --add "$spec" 2>/dev/null || true # already there is fine
    done
    probes=$(perf list 2>/dev/null)
    for spec in "$@"; do
        [[ $probes == *"probe_libc:${spec%%=*} "* ]] || { echo "perf probe on ${spec%%=*} failed (root? tracefs?)" >&2; return 1; }
    done
}
