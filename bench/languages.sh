#!/usr/bin/env bash
# Plugins in JavaScript, Python and C against their Rust counterparts, in one
# run, on a release waraka: size, build time, compile time when loaded, and
# the mean time of a hook call. See bench/languages.py.
#
#   bench/languages.sh              # 500 hook calls per plugin
#   CALLS=2000 bench/languages.sh
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
"$here/../scripts/setup"
. "$here/../scripts/env"
cargo build --release --quiet --manifest-path "$here/../Cargo.toml" -p waraka
WARAKA_BIN="$CARGO_TARGET_DIR/release/waraka" RUST_LOG=info exec python3 "$here/languages.py"
