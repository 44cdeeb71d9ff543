#!/usr/bin/env bash
# Idle connections: IDLE (default 10000) connections that take the greeting
# and then say nothing, held against waraka in PROFILE (default "full", the
# chain `waraka init` lays out; or "discard"). Prints the server's RSS per
# idle connection, and the latency of whole transactions on new connections
# (p50/p99 of PROBES, default 300) and smtp-source's msg/s at SESSIONS
# (default 10) with and without the idle connections, in one run.
#
#   bench/idle.sh
#   IDLE=5000 PROFILE=discard bench/idle.sh
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
IDLE="${IDLE:-10000}"
PROFILE="${PROFILE:-full}"
. "$here/lib.sh"

instance="$work/instance"
case "$PROFILE" in
full) init_full "$instance" ;;
discard) "$waraka" init "$instance" --plugins rcpt_to.in_host_list,queue/discard >/dev/null ;;
*) echo "unknown profile $PROFILE" >&2; exit 2 ;;
esac
sed -i -e "s/^max_connections = .*/max_connections = $((IDLE + 1000))/" \
    -e "s/^max_connections_per_ip = .*/max_connections_per_ip = 0/" "$instance/waraka.toml"
# The queue/maildir of the full profile stores into a tmpfs when there is one.
[ -d /dev/shm ] && ln -s "$(mktemp -d -p /dev/shm waraka-idle.XXXXXX)" "$instance/maildir"
start_waraka "$instance"
python3 "$here/idle.py" --port "$wport" --pid "$wpid" --idle "$IDLE" --source "$source_bin" \
    --sessions "${SESSIONS:-10}" --messages "$MESSAGES" --probes "${PROBES:-300}"
stop_pid "$wpid"
[ -L "$instance/maildir" ] && rm -rf "$(readlink "$instance/maildir")"
