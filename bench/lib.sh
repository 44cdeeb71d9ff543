# Shared by the whole-server benchmarks: set-up, Postfix's smtp-source and
# smtp-sink, and a measure function. Source it after setting `here`.
root="$here/.."
"$root/scripts/setup"
. "$root/scripts/env"

MESSAGES="${MESSAGES:-10000}"
SIZE="${SIZE:-5120}"

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

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
cpu_ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }
wait_port() { for _ in $(seq 200); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.05; done; return 1; }
hz=$(getconf CLK_TCK)

# measure PID PORT SESSIONS [RECIPIENT] -> "msg/s cpu_us_per_msg" (CPU of PID only)
measure() {
    local pid=$1 port=$2 sessions=$3 rcpt=${4:-rcpt@example.com}
    local t0 c0 t1 c1
    c0=$(cpu_ticks "$pid"); t0=$(date +%s.%N)
    "$source_bin" -d -s "$sessions" -m "$MESSAGES" -l "$SIZE" -f bench@sender.test -t "$rcpt" "127.0.0.1:$port"
    t1=$(date +%s.%N); c1=$(cpu_ticks "$pid")
    python3 -c "m=$MESSAGES; el=$t1-$t0; cpu=($c1-$c0)/$hz; print(f'{m/el:.0f} {cpu/m*1e6:.0f}')"
}

# start_waraka INSTANCE_DIR [RUST_LOG] -> sets wpid and wport
start_waraka() {
    wport=$(free_port)
    RUST_LOG="${2:-warn}" NO_COLOR=1 "$waraka" run --config "$1" --listen "127.0.0.1:$wport" 2>"$1.log" &
    wpid=$!
    wait_port "$wport"
}

# start_sink -> sets spid and sport
start_sink() {
    sport=$(free_port)
    "$sink_bin" -u nobody "127.0.0.1:$sport" 1000 &
    spid=$!
    wait_port "$sport"
}

stop_pid() { kill "$1"; wait "$1" 2>/dev/null || true; }
