#!/usr/bin/env bash
# Start-up time with PLUGINS (default 20) plugins whose compiled code is in
# the instance's cache (queue/cache): every core plugin, plus copies of
# rcpt_to.in_host_list under other names up to PLUGINS. Prints the first
# (compiling) start and the median of RUNS (default 7) cached starts, each
# from exec to the greeting on a first connection.
#
#   bench/startup.sh
#   PLUGINS=40 RUNS=11 bench/startup.sh
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
PLUGINS="${PLUGINS:-20}"
. "$here/lib.sh"

instance="$work/instance"
core=$({ "$waraka" init "$work/probe" --plugins none 2>&1 || true; } | sed -n 's/.*(known: \(.*\))$/\1/p' | tr -d ' ')
"$waraka" init "$instance" --plugins "$core" >/dev/null
count=$(tr ',' '\n' <<<"$core" | wc -l)
mkdir -p "$instance/plugins/copy"
for i in $(seq $((count + 1)) "$PLUGINS"); do
    cp "$instance/plugins/rcpt_to.in_host_list.wasm" "$instance/plugins/copy/in_host_list_$i.wasm"
done
python3 "$here/startup.py" --waraka "$waraka" --instance "$instance" --runs "${RUNS:-7}"
