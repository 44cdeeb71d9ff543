#!/usr/bin/env bash
# Whole-server benchmark: waraka (rcpt_to.in_host_list + queue/discard) against
# Postfix's smtp-sink (accept and discard, no policy: the practical ceiling),
# both driven by Postfix's smtp-source with the same matrix, in one run.
#
#   bench/run.sh                 # 10 and 100 sessions, 5 KiB messages, reused connections
#   MESSAGES=20000 bench/run.sh  # more messages per run
#
# Prints msg/s, server CPU-µs per message and peak RSS for each server, and the
# ratio waraka / smtp-sink. Numbers are only comparable within one run.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
SESSIONS="${SESSIONS:-10 100}"
. "$here/lib.sh"

"$waraka" init "$work/instance" --plugins rcpt_to.in_host_list,queue/discard >/dev/null

declare -A result
for sessions in $SESSIONS; do
    start_waraka "$work/instance"
    measure "$wpid" "$wport" 10 >/dev/null   # warm-up
    result[waraka,$sessions]=$(measure "$wpid" "$wport" "$sessions")
    result[waraka_rss,$sessions]=$(awk '/VmHWM/{print $2}' "/proc/$wpid/status")
    stop_pid "$wpid"

    start_sink
    measure "$spid" "$sport" 10 >/dev/null
    result[sink,$sessions]=$(measure "$spid" "$sport" "$sessions")
    result[sink_rss,$sessions]=$(awk '/VmHWM/{print $2}' "/proc/$spid/status")
    stop_pid "$spid"
done

printf '\n%d messages of %d bytes per run, connections reused (smtp-source -d)\n' "$MESSAGES" "$SIZE"
printf '%-9s %-10s %10s %14s %10s\n' sessions server msg/s cpu-us/msg rss-KiB
for sessions in $SESSIONS; do
    read -r wr wc <<<"${result[waraka,$sessions]}"
    read -r sr sc <<<"${result[sink,$sessions]}"
    printf '%-9s %-10s %10s %14s %10s\n' "$sessions" waraka "$wr" "$wc" "${result[waraka_rss,$sessions]}"
    printf '%-9s %-10s %10s %14s %10s\n' "$sessions" smtp-sink "$sr" "$sc" "${result[sink_rss,$sessions]}"
    python3 -c "print(f'{\"\":9} ratio      {$wr/$sr:10.2f}x of smtp-sink throughput, {$wc/max($sc,1):.1f}x its CPU per message')"
done
