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
root="$here/.."
"$root/scripts/setup"
. "$root/scripts/env"

MESSAGES="${MESSAGES:-10000}"
SIZE="${SIZE:-5120}"
SESSIONS="${SESSIONS:-10 100}"

cache="$here/.cache"
postfix="$cache/postfix"
if [ ! -x "$postfix/usr/sbin/smtp-source" ]; then
    mkdir -p "$cache" && (cd "$cache" && rm -f postfix_*.deb && apt-get download postfix >/dev/null && dpkg -x postfix_*.deb "$postfix")
fi
export LD_LIBRARY_PATH="$postfix/usr/lib/postfix"
source_bin="$postfix/usr/sbin/smtp-source"
sink_bin="$postfix/usr/sbin/smtp-sink"

cargo build --release --quiet --manifest-path "$root/Cargo.toml" -p waraka
waraka="$CARGO_TARGET_DIR/release/waraka"

work="$(mktemp -d)"
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
"$waraka" init "$work/instance" --plugins rcpt_to.in_host_list,queue/discard >/dev/null

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
cpu_ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }
wait_port() { for _ in $(seq 200); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.05; done; return 1; }
hz=$(getconf CLK_TCK)

# measure NAME PID PORT SESSIONS -> "msg/s cpu_us_per_msg"
measure() {
    local pid=$2 port=$3 sessions=$4
    local t0 c0 t1 c1
    c0=$(cpu_ticks "$pid"); t0=$(date +%s.%N)
    "$source_bin" -d -s "$sessions" -m "$MESSAGES" -l "$SIZE" -f bench@sender.test -t rcpt@example.com "127.0.0.1:$port"
    t1=$(date +%s.%N); c1=$(cpu_ticks "$pid")
    python3 -c "m=$MESSAGES; el=$t1-$t0; cpu=($c1-$c0)/$hz; print(f'{m/el:.0f} {cpu/m*1e6:.0f}')"
}

declare -A result
for sessions in $SESSIONS; do
    port=$(free_port)
    RUST_LOG=warn "$waraka" run --config "$work/instance" --listen "127.0.0.1:$port" 2>"$work/waraka.log" &
    wpid=$!
    wait_port "$port"
    measure waraka "$wpid" "$port" 10 >/dev/null   # warm-up
    result[waraka,$sessions]=$(measure waraka "$wpid" "$port" "$sessions")
    result[waraka_rss,$sessions]=$(awk '/VmHWM/{print $2}' "/proc/$wpid/status")
    kill "$wpid"; wait "$wpid" 2>/dev/null || true

    port=$(free_port)
    "$sink_bin" -u nobody "127.0.0.1:$port" 1000 &
    spid=$!
    wait_port "$port"
    measure sink "$spid" "$port" 10 >/dev/null
    result[sink,$sessions]=$(measure sink "$spid" "$port" "$sessions")
    result[sink_rss,$sessions]=$(awk '/VmHWM/{print $2}' "/proc/$spid/status")
    kill "$spid"; wait "$spid" 2>/dev/null || true
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
