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

# WARAKA_BIN: benchmark this binary (e.g. a copy of an earlier build, for an
# A/B comparison in one run) instead of building the release.
if [ -n "${WARAKA_BIN:-}" ]; then
    waraka="$WARAKA_BIN"
else
    cargo build --release --quiet --manifest-path "$root/Cargo.toml" -p waraka
    waraka="$CARGO_TARGET_DIR/release/waraka"
fi

work="$(mktemp -d)"
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
# The process and its descendants (Haraka's cluster workers), one per line.
tree_pids() { echo "$1"; local child; for child in $(cat /proc/"$1"/task/*/children 2>/dev/null); do tree_pids "$child"; done; }
# CPU ticks (user + system) used so far by PID and its descendants.
cpu_ticks() { local pid total=0; for pid in $(tree_pids "$1"); do total=$((total + $(awk '{print $14+$15}' "/proc/$pid/stat" 2>/dev/null || echo 0))); done; echo "$total"; }
# Peak resident set (KiB) of PID and its descendants, summed.
peak_rss() { local pid total=0; for pid in $(tree_pids "$1"); do total=$((total + $(awk '/VmHWM/{print $2}' "/proc/$pid/status" 2>/dev/null || echo 0))); done; echo "$total"; }
wait_port() { for _ in $(seq 200); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.05; done; return 1; }
hz=$(getconf CLK_TCK)

# measure PID PORT SESSIONS [RECIPIENT [RCPTS [REUSE]]] -> "msg/s cpu_us_per_msg"
# (CPU of PID and its descendants): MESSAGES of SIZE bytes with RCPTS recipients
# each (default 1; smtp-source numbers them: 1rcpt@…, 2rcpt@…), over reused
# connections unless REUSE is 0.
measure() {
    local pid=$1 port=$2 sessions=$3 rcpt=${4:-rcpt@example.com} rcpts=${5:-1} reuse=-d
    local t0 c0 t1 c1
    [ "${6:-1}" = 1 ] || reuse=
    c0=$(cpu_ticks "$pid"); t0=$(date +%s.%N)
    "$source_bin" $reuse -M client.bench.test -s "$sessions" -m "$MESSAGES" -l "$SIZE" -r "$rcpts" \
        -f bench@sender.test -t "$rcpt" "127.0.0.1:$port" || {
        echo "smtp-source failed against port $port" >&2
        # waraka's last words say why (a full disk, a plugin's error).
        [ "$pid" = "${wpid:-}" ] && tail -n 20 "$wlog" >&2
        return 1
    }
    t1=$(date +%s.%N); c1=$(cpu_ticks "$pid")
    python3 -c "m=$MESSAGES; el=$t1-$t0; cpu=($c1-$c0)/$hz; print(f'{m/el:.0f} {cpu/m*1e6:.0f}')"
}

# start_waraka INSTANCE_DIR [RUST_LOG] -> sets wpid, wport and wlog (its log)
start_waraka() {
    wport=$(free_port)
    wlog="$1.log"
    RUST_LOG="${2:-warn}" NO_COLOR=1 "$waraka" run --config "$1" --listen "127.0.0.1:$wport" 2>"$wlog" &
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

# start_haraka NODES -> sets hpid and hport: Haraka 3.3.4 (npm, in
# ~/.local/haraka, where scripts/setup puts it) with rcpt_to.in_host_list + queue/discard, logging at
# warn; NODES=0 is one process, NODES=2 a cluster of two workers.
start_haraka() {
    local haraka="$HOME/.local/haraka" inst="$work/haraka"
    if [ ! -x "$haraka/node_modules/.bin/haraka" ]; then
        mkdir -p "$haraka" && (cd "$haraka" && npm install --silent --no-audit --no-fund Haraka@3.3.4 >/dev/null)
    fi
    rm -rf "$inst" && "$haraka/node_modules/.bin/haraka" -i "$inst" >/dev/null
    hport=$(free_port)
    printf 'rcpt_to.in_host_list\nqueue/discard\n' >"$inst/config/plugins"
    printf 'example.com\n' >"$inst/config/host_list"
    printf '[main]\nlevel=warn\n' >"$inst/config/log.ini"
    printf 'listen=127.0.0.1:%s\nnodes=%s\n' "$hport" "$1" >"$inst/config/smtp.ini"
    YES_REALLY_DO_DISCARD=1 "$haraka/node_modules/.bin/haraka" -c "$inst" >"$inst.log" 2>&1 &
    hpid=$!
    wait_port "$hport"
}

# init_full DIR: the instance `waraka init` lays out (the full chain), with a
# dnsmasq (stopped with the script's jobs) answering its DNS: sender.test's MX,
# client.bench.test, and NXDOMAIN for the DNS list zone bl.bench.test; and
# limit.ini raised so that one benchmarking address is not throttled.
init_full() {
    "$waraka" init "$1" >/dev/null
    dnsport=$(free_port)
    /usr/sbin/dnsmasq --keep-in-foreground --conf-file=/dev/null --no-resolv --no-hosts --no-poll \
        --port="$dnsport" --listen-address=127.0.0.1 --bind-interfaces --pid-file="$work/dnsmasq.pid" \
        --user=root --mx-host=sender.test,mx.sender.test,10 --host-record=mx.sender.test,192.0.2.25 \
        --host-record=client.bench.test,127.0.0.1 --address=/bl.bench.test/ &
    python3 - "$1" "$dnsport" <<'PY'
import pathlib, re, sys
root, port = pathlib.Path(sys.argv[1]), sys.argv[2]
toml = root / "waraka.toml"
toml.write_text(toml.read_text() + f'\n[dns]\nservers = ["127.0.0.1:{port}"]\n')
ini = root / "config/dns-list.ini"
ini.write_text(re.sub(r"(?m)^zones =.*$", "zones = bl.bench.test", ini.read_text()))
limit = root / "config/limit.ini"
text = limit.read_text()
for key, value in {"concurrency": "1000000", "connection_rate": "1000000/60s", "recipient_rate": "100000000/60s"}.items():
    text = re.sub(rf"(?m)^{key} =.*$", f"{key} = {value}", text)
limit.write_text(text)
PY
}
