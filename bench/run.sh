#!/usr/bin/env bash
# Whole-server benchmark (issue 10): waraka in three profiles against Postfix's
# smtp-sink (accept and discard, no policy: the practical ceiling) and,
# optionally, Haraka, all driven by Postfix's smtp-source over one matrix in
# one run, so the ratios compare like with like.
#
#   bench/run.sh                          # the whole matrix, waraka and smtp-sink
#   HARAKA=1 bench/run.sh                 # also Haraka 3.3.4 (npm), one process and nodes=2
#   SESSIONS="10 100" SIZES=5120 RECIPIENTS=1 REUSE=1 PROFILES=discard bench/run.sh
#   PERF_DATA=/tmp/w.perf PROFILES=discard SESSIONS=10 bench/run.sh   # perf-record waraka
#
# Matrix: SESSIONS (default "1 10 100") x SIZES (bytes, "5120 102400") x
# RECIPIENTS (per message, "1 10") x REUSE (connections reused or not, "1 0").
# Servers: smtp-sink; waraka with PROFILES (default "discard maildir full"):
#   discard  rcpt_to.in_host_list + queue/discard
#   maildir  rcpt_to.in_host_list + queue/maildir (durable: fsync per message)
#   full     the default `waraka init` chain (ten plugins, maildir), with a
#            dnsmasq for its DNS (dns-list zone, sender domain) and limit.ini
#            raised so one benchmarking client is not throttled
# Haraka (HARAKA=1): rcpt_to.in_host_list + queue/discard, nodes=0 and nodes=2.
# storage (with MAILDIR_ROOT and the maildir profile): the maildir copies
# done natively by as many threads as sessions (bench/maildir-native, Rust),
# the storage's own ceiling for the maildir profile's scaling.
#
# Each cell restarts the server, warms it up and sends MESSAGES messages
# (default 5000; a fifth of that for 100 KiB), REPEAT times (default 3) with
# the servers interleaved round by round, so a drift of the machine touches
# them all alike. Results go to OUT (default bench/.cache/matrix.csv, one row
# per round) and are printed by bench/report.py: medians of the rounds, and
# each ratio as the median of the ratios of the same round;
# `bench/report.py --chart FILE.png` draws msg/s against sessions.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
MESSAGES="${MESSAGES:-5000}"
. "$here/lib.sh"
matrix_sessions="${SESSIONS:-1 10 100}"
matrix_sizes="${SIZES:-5120 102400}"
matrix_rcpts="${RECIPIENTS:-1 10}"
matrix_reuse="${REUSE:-1 0}"
profiles="${PROFILES:-discard maildir full}"
out="${OUT:-$here/.cache/matrix.csv}"
base_messages=$MESSAGES
repeat="${REPEAT:-3}"

# The instances, one per profile.
for profile in $profiles; do
    case "$profile" in
    discard) "$waraka" init "$work/discard" --plugins rcpt_to.in_host_list,queue/discard >/dev/null ;;
    maildir) "$waraka" init "$work/maildir" --plugins rcpt_to.in_host_list,queue/maildir >/dev/null ;;
    full) init_full "$work/full" ;;
    *) echo "unknown profile $profile" >&2; exit 2 ;;
    esac
done

# MAILDIR_ROOT: store the maildirs on another file system (e.g. a fresh
# journalled ext4 on a loop device), removed at the end.
trap 'kill $(jobs -p) 2>/dev/null || true; [ -f "$work/stores" ] && xargs rm -rf <"$work/stores"; rm -rf "$work"' EXIT

servers="smtp-sink"
for profile in $profiles; do servers+=" waraka-$profile"; done
[ "${HARAKA:-0}" = 1 ] && servers+=" haraka haraka-nodes2"
if [ -n "${MAILDIR_ROOT:-}" ] && [[ " $profiles " == *" maildir "* ]]; then
    servers+=" storage"
    cargo build --release --quiet --manifest-path "$root/Cargo.toml" -p maildir-native
    storage_bin="$CARGO_TARGET_DIR/release/maildir-native"
fi

# cell_messages SIZE RCPTS -> the messages a cell sends (after its warm-up)
cell_messages() {
    local messages=$base_messages
    [ "$1" -gt 10240 ] && messages=$((messages / 5))
    [ "$2" -gt 1 ] && messages=$((messages / 2))
    echo "$messages"
}

# Every copy stored under MAILDIR_ROOT (maildir and full profiles, storage)
# stays until the end of the run: stop now, not midway, if it cannot hold them.
if [ -n "${MAILDIR_ROOT:-}" ]; then
    inodes=0 kib=0
    for size in $matrix_sizes; do for rcpts in $matrix_rcpts; do for reuse in $matrix_reuse; do
        for sessions in $matrix_sessions; do
            messages=$(cell_messages "$size" "$rcpts")
            storing=0
            for server in $servers; do
                case "$server" in
                waraka-maildir | waraka-full) storing=$((storing + messages / 10 + sessions + messages)) ;;
                storage) [ "$size" = 5120 ] && [ "$rcpts" = 1 ] && storing=$((storing + messages)) ;;
                esac
            done
            copies=$((repeat * storing * rcpts))
            inodes=$((inodes + copies)) kib=$((kib + copies * ((size / 4096 + 1) * 4)))
        done
    done; done; done
    read -r free_inodes free_kib < <(df --output=iavail,avail -k "$MAILDIR_ROOT" | tail -1)
    if [ "$free_inodes" -lt "$inodes" ] || [ "$free_kib" -lt "$kib" ]; then
        echo "MAILDIR_ROOT holds $free_inodes inodes and $free_kib KiB, the run stores about $inodes copies ($kib KiB): see bench/README.md" >&2
        exit 2
    fi
fi

# maildir_store -> a fresh directory under MAILDIR_ROOT, removed at the end
maildir_store() {
    local store
    store=$(mktemp -d -p "$MAILDIR_ROOT" waraka-bench.XXXXXX)
    echo "$store" >>"$work/stores"
    echo "$store"
}

# start SERVER -> sets pid and port
start() {
    case "$1" in
    smtp-sink) start_sink; pid=$spid port=$sport ;;
    waraka-*)
        local instance="$work/${1#waraka-}"
        # Each cell stores into an empty maildir; the old one is deleted at the
        # end, since ext4 scans recently deleted inodes when it allocates new ones
        # for minutes after a mass delete, which would slow the next cells down.
        [ -e "$instance/maildir" ] && mv "$instance/maildir" "$work/maildir.$RANDOM$RANDOM"
        [ -n "${MAILDIR_ROOT:-}" ] && ln -s "$(maildir_store)" "$instance/maildir"
        start_waraka "$instance"; pid=$wpid port=$wport ;;
    haraka) start_haraka 0; pid=$hpid port=$hport ;;
    haraka-nodes2) start_haraka 2; pid=$hpid port=$hport ;;
    esac
}

mkdir -p "$(dirname "$out")"
echo "server,sessions,size,rcpts,reuse,messages,round,msg_per_s,cpu_us_per_msg,peak_rss_kib" >"$out"
for size in $matrix_sizes; do
    for rcpts in $matrix_rcpts; do
        for reuse in $matrix_reuse; do
            for sessions in $matrix_sessions; do
                messages=$(cell_messages "$size" "$rcpts")
                for round in $(seq "$repeat"); do
                    for server in $servers; do
                        if [ "$server" = storage ]; then
                            [ "$size" = 5120 ] && [ "$rcpts" = 1 ] || continue
                            read -r rate cpu < <("$storage_bin" --threads "$sessions" "$(maildir_store)" "$messages")
                            echo "$server,$sessions,$size,$rcpts,$reuse,$messages,$round,$rate,$cpu,0" | tee -a "$out" >&2
                            continue
                        fi
                        start "$server"
                        SIZE=$size MESSAGES=$((messages / 10 + sessions)) measure "$pid" "$port" "$sessions" "" "$rcpts" "$reuse" >/dev/null
                        perf_pid=
                        if [ -n "${PERF_DATA:-}" ] && [ "$round" = 1 ] && [[ $server == waraka-* ]]; then
                            perf record -q -F 999 -g -p "$pid" -o "$PERF_DATA" 2>/dev/null &
                            perf_pid=$!
                        fi
                        figures=$(SIZE=$size MESSAGES=$messages measure "$pid" "$port" "$sessions" "" "$rcpts" "$reuse")
                        read -r rate cpu <<<"$figures"
                        if [ -n "$perf_pid" ]; then kill -INT "$perf_pid"; wait "$perf_pid" 2>/dev/null || true; fi
                        rss=$(peak_rss "$pid")
                        stop_pid "$pid"
                        echo "$server,$sessions,$size,$rcpts,$reuse,$messages,$round,$rate,$cpu,$rss" | tee -a "$out" >&2
                    done
                done
            done
        done
    done
done
python3 "$here/report.py" "$out" ${CHART:+--chart "$CHART"}
