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
#   FAULT_DELAY=1s INJECTORS=100 FAULT_SECONDS=20 bench/faults.sh
#                                  # with the fault tarpit (default off here,
#                                  # to measure what each fault costs)
#   FAULT_DELAY=1s INJECTORS=250 FAULT_SOURCES=250 bench/faults.sh
#                                  # 1,000 faults from 250 client addresses
#   FAULT_KINDS="trap panic" bench/faults.sh      # only these faults
#   PERF_DATA=/tmp/faults.perf bench/faults.sh    # perf-record the fault window
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
FAULTS="${FAULTS:-1000}"
INJECTORS="${INJECTORS:-1}"
FAULT_FUEL="${FAULT_FUEL:-5000000}"
FAULT_DELAY="${FAULT_DELAY:-0s}"
FAULT_SECONDS="${FAULT_SECONDS:-1000000}"
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

[runtime]
fault_delay = "$FAULT_DELAY"

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
# background, over SECONDS or while COMMAND runs; COMMAND's output is kept in
# window.out and the server's CPU ticks over the window in cpu.out.
window() {
    "$source_bin" -d -s "$SESSIONS" -m 100000000 -l "$SIZE" -f bench@sender.test -t rcpt@example.com \
        "127.0.0.1:$wport" &
    local feeder=$! a0 a1 t0 t1 c0 c1
    sleep 2
    a0=$(accepted); t0=$(date +%s.%N); c0=$(cpu_ticks "$wpid")
    if [ "$1" -eq "$1" ] 2>/dev/null; then sleep "$1"; else "$@" >"$work/window.out"; fi
    a1=$(accepted); t1=$(date +%s.%N); c1=$(cpu_ticks "$wpid")
    echo "$(( c1 - c0 ))" >"$work/cpu.out"
    kill "$feeder"; wait "$feeder" 2>/dev/null || true
    python3 -c "print(f'{($a1-$a0)/($t1-$t0):.0f} {$t1-$t0:.1f}')"
}

start_waraka "$instance"
for _ in $(seq 50); do [ -n "$(accepted)" ] && break; sleep 0.1; done
# healthy msg/s and server CPU per healthy message, alone
window 10 >"$work/alone.out"
read -r alone took_alone <"$work/alone.out"
cpu_per_msg=$(python3 -c "print($(cat "$work/cpu.out")/$hz/($alone*$took_alone))")
# run_injector KINDS -> "healthy msg/s, window s, requests, request s, wrong replies, server CPU µs per request"
run_injector() {
    if [ -n "${PERF_DATA:-}" ] && [ "$1" != healthy ]; then
        perf record -q -F 999 -g -p "$wpid" -o "$PERF_DATA" 2>/dev/null &
        perfpid=$!
    fi
    local count=$FAULTS
    # The control's requests are cheap: ten times as many make a window as long.
    [ "$1" = healthy ] && count=$(( FAULTS * 10 ))
    FAULT_KINDS="$1" window python3 "$here/faults.py" "$wport" "$count" "$INJECTORS" "$FAULT_SECONDS" >"$work/rate.out"
    if [ -n "${PERF_DATA:-}" ] && [ "$1" != healthy ]; then kill -INT "$perfpid"; wait "$perfpid" 2>/dev/null || true; fi
    local rate took made seconds wrong cpu
    read -r rate took <"$work/rate.out"
    read -r made seconds wrong <"$work/window.out"
    cpu=$(cat "$work/cpu.out")
    # Server CPU left after the healthy messages of the window, per request.
    python3 -c "print($rate, $took, $made, $seconds, $wrong, round(max(0, $cpu/$hz - $cpu_per_msg*$rate*$took)/$made*1e6))"
}
read -r control took_control requests request_seconds _ control_cpu < <(run_injector healthy)
read -r faulted took_faulted made fault_seconds wrong fault_cpu < <(run_injector "${FAULT_KINDS:-trap loop oom panic storm}")
alive=yes; kill -0 "$wpid" 2>/dev/null || alive=no
stop_pid "$wpid"

printf '\n%s healthy sessions, %d-byte messages; injector: %d connection(s), fuel %s per fault call, fault tarpit %s\n' \
    "$SESSIONS" "$SIZE" "$INJECTORS" "$FAULT_FUEL" "$FAULT_DELAY"
printf '%-34s %8s msg/s  (%s s window; %.0f µs server CPU per message)\n' "healthy alone:" "$alone" "$took_alone" \
    "$(python3 -c "print($cpu_per_msg*1e6)")"
printf '%-34s %8s msg/s  (%s s; %s healthy RCPTs at %s/s, %s µs server CPU each)\n' "healthy + control injector:" \
    "$control" "$took_control" "$requests" "$(python3 -c "print(round($requests/$request_seconds))")" "$control_cpu"
printf '%-34s %8s msg/s  (%s s; %s faults at %s/s, %s µs server CPU each)\n' "healthy + fault injector:" \
    "$faulted" "$took_faulted" "$made" "$(python3 -c "print(round($made/$fault_seconds))")" "$fault_cpu"
python3 -c "print(f'healthy throughput under faults: {$faulted/$alone:.2f} of alone (drop {1-$faulted/$alone:.0%}), {$faulted/$control:.2f} of the control (drop {1-$faulted/$control:.0%})')"
printf 'server alive after the run: %s; fault replies other than 451 4.3.0: %s\n' "$alive" "$wrong"
