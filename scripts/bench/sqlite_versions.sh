#!/usr/bin/env bash
# The message writer's workload (`sqlite_writer_load.rs`) on the bundled SQLite of
# the rusqlite the server uses and of a newer one, alternated (old, new, new, old)
# at a small and a large batch: whether upgrading SQLite (which takes sqlx and
# rusqlite together, one `libsqlite3-sys`) would make the writer cheaper.
#   bash scripts/bench/sqlite_versions.sh [newer rusqlite version] [messages]
# PAGE=1024 sets the page size; SYNC=FULL syncs each commit (the default is OFF:
# CPU only). Builds in a temporary directory, outside the workspace.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
old=$(sed -n 's/^rusqlite = { version = "\([^"]*\)".*/\1/p' "$here/../../Cargo.toml")
new=${1:-0.43}
messages=${2:-400000}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for version in "$old" "$new"; do
    mkdir -p "$work/$version"
    cat >"$work/$version/Cargo.toml" <<TOML
[package]
name = "sqlite-writer-load"
version = "0.1.0"
edition = "2024"
[[bin]]
name = "sqlite-writer-load"
path = "$here/sqlite_writer_load.rs"
[dependencies]
rusqlite = { version = "$version", features = ["bundled"] }
[workspace]
TOML
    echo "== building against rusqlite $version" >&2
    cargo build --quiet --release --manifest-path "$work/$version/Cargo.toml"
done
for batch in 12 2500; do
    for version in "$old" "$new" "$new" "$old"; do
        "$work/$version/target/release/sqlite-writer-load" "$work/db" "$batch" "$messages" "${SYNC:-OFF}"
    done
done
