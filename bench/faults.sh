#!/usr/bin/env bash
# Plugin faults under load: 10 healthy smtp-source sessions send through
# test/faulty + rcpt_to.in_host_list + queue/discard while bench/faults.py
# makes the fault fixture trap, spin, exhaust its memory, panic and storm the
# host with calls FAULTS times (default 1000). Prints the healthy msg/s with
# and without the faults, measured in one run from the server's own
# waraka_transactions_total counter over the same kind of window.
#
#   bench/faults.sh                       # 1000 faults from 1 connection
#   INJECTORS=4 FAULT_FUEL=50000000 bench/faults.sh
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
FAULTS="${FAULTS:-1000}"
INJECTORS="${INJECTORS:-1}"
FAULT_FUEL="${FAULT_FUEL:-5000000}"
SESSIONS="${SESSIONS:-10}"
. "$here/lib.sh"

# The fault fixture, as the test build makes it.
(cd "$root/tests/fixtures" && cargo build --release --quiet --target wasm32-wasip2 -p fixture-faulty \
    --target-dir "$CARGO_TARGET_DIR/wasm-guests")
fixture="$CARGO_TARGET_DIR/wasm-guests/wasm32-wasip2/release/fixture_faulty.wasm"

instance="$work/instance"
"$waraka" init "$instance" --plugins rcpt_to.in_host_list,queue/discard >/dev/null
mkdir -p "$instance/plugins/test" && cp "$fixture" "$instance/plugins/test/faulty.wasm"
metrics_port=$(free_port)
sed -i 's|^plugins = \["|plugins = ["test/faulty", "|' "$instance/waraka.toml"
cat >>"$instance/waraka.toml" <<TOML

[metrics]
listen = "127.0.0.1:$metrics_port"

# Every fault is a real one: no circuit breaker to short-cut them.
[plugin."test/faulty"]
fuel = $FAULT_FUEL
timeout = "2s"
memory = 16777216
breaker_faults = 0
TOML

accepted() {
    curl -s "http://127.0.0.1:$metrics_port/metrics" |
        awk '/^waraka_transactions_total\{outcome="accepted"\}/{print $2}'
}
# window SECONDS|COMMAND... -> healthy msg/s while smtp-source runs in the
# background, over SECONDS or while COMMAND runs; COMMAND's output is kept.
window() {
    "$source_bin" -d -s "$SESSIONS" -m 100000000 -l "$SIZE" -f bench@sender.test -t rcpt@example.com \
        "127.0.0.1:$wport" &
    local feeder=$! a0 a1 t0 t1
    sleep 2
    a0=$(accepted); t0=$(date +%s.%N)
    if [ "$1" -eq "$1" ] 2>/dev/null; then sleep "$1"; else "$@" >"$work/window.out"; fi
    a1=$(accepted); t1=$(date +%s.%N)
    kill "$feeder"; wait "$feeder" 2>/dev/null || true
    python3 -c "print(f'{($a1-$a0)/($t1-$t0):.0f} {$t1-$t0:.1f}')"
}

start_waraka "$instance"
for _ in $(seq 50); do [ -n "$(accepted)" ] && break; sleep 0.1; done
c0=$(cpu_ticks "$wpid")
read -r alone took_alone < <(window 10)
read -r faulted took_faulted < <(window python3 "$here/faults.py" "$wport" "$FAULTS" "$INJECTORS")
read -r made fault_seconds wrong <"$work/window.out"
c1=$(cpu_ticks "$wpid")
alive=yes; kill -0 "$wpid" 2>/dev/null || alive=no
stop_pid "$wpid"

printf '\n%s healthy sessions, %d-byte messages; %d faults (trap, loop, oom, panic, storm in turn) from %d connection(s), fuel %s per call\n' \
    "$SESSIONS" "$SIZE" "$made" "$INJECTORS" "$FAULT_FUEL"
printf 'healthy msg/s alone:        %8s  (%s s window)\n' "$alone" "$took_alone"
printf 'healthy msg/s under faults: %8s  (%s s window, faults at %s/s)\n' "$faulted" "$took_faulted" \
    "$(python3 -c "print(f'{$made/$fault_seconds:.0f}')")"
python3 -c "print(f'ratio: {$faulted/$alone:.2f} (healthy throughput drop {1-$faulted/$alone:.0%})')"
printf 'server alive after the run: %s; fault replies other than 451 4.3.0: %s; server CPU %s s\n' \
    "$alive" "$wrong" "$(python3 -c "print(($c1-$c0)/$hz)")"
