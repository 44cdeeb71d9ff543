#!/usr/bin/env bash
# Storage benchmark (issue 4): the tutorial's service — rcpt_to.validity
# against PostgreSQL and queue/s3 into an S3-compatible server — against
# waraka with queue/discard and Postfix's smtp-sink, all driven by
# smtp-source at the same settings in one run. Then a counting run that adds
# up the bytes that crossed guest memory per message, queue/s3 (the host
# streams the message) against queue/maildir (the plugin reads it).
#
#   bench/storage.sh                        # 10 sessions, 5000 messages of 5 KiB
#   SESSIONS=20 MESSAGES=20000 bench/storage.sh
#   PERF_DATA=/tmp/storage.perf bench/storage.sh   # also perf-record waraka's storage run
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
SESSIONS="${SESSIONS:-10}"
MESSAGES="${MESSAGES:-5000}"
. "$here/lib.sh"

cargo build --release --quiet --manifest-path "$root/Cargo.toml" -p waraka-e2e --bin s3-test-server
s3_bin="$CARGO_TARGET_DIR/release/s3-test-server"

# PostgreSQL: a throw-away cluster (initdb refuses root: run it as postgres).
pgbin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
as_pg=(); [ "$(id -u)" -eq 0 ] && as_pg=(runuser -u postgres --)
pgdir="$work/pg"; mkdir -p "$pgdir"
if [ "$(id -u)" -eq 0 ]; then chmod 711 "$work"; chown postgres:postgres "$pgdir"; fi
pgport=$(free_port)
"${as_pg[@]}" "$pgbin/initdb" -D "$pgdir/data" -U postgres --auth=trust --no-sync -E UTF8 --locale=C.UTF-8 >/dev/null
"${as_pg[@]}" "$pgbin/pg_ctl" -D "$pgdir/data" -l "$pgdir/pg.log" -w \
    -o "-c listen_addresses=127.0.0.1 -p $pgport -k $pgdir -c fsync=off" start >/dev/null
trap '"${as_pg[@]}" "$pgbin/pg_ctl" -D "$pgdir/data" -m fast -w stop >/dev/null; kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
pgurl="postgresql://postgres@127.0.0.1:$pgport/postgres"
psql "$pgurl" -q -c "CREATE TABLE valid_addresses (address text PRIMARY KEY); INSERT INTO valid_addresses VALUES ('rcpt@example.com')"
pgpid=$(head -1 "$pgdir/data/postmaster.pid")

# S3: s3s-fs on a free port.
s3port=$(free_port)
mkdir -p "$work/s3/mail"
"$s3_bin" "$s3port" "$work/s3" bench bench-secret >/dev/null &
s3pid=$!
wait_port "$s3port"

"$waraka" init "$work/discard" --plugins rcpt_to.in_host_list,queue/discard >/dev/null
"$waraka" init "$work/storage" --plugins rcpt_to.validity,rcpt_to.in_host_list,queue/s3 >/dev/null
python3 - "$work/storage/waraka.toml" "$pgurl" "$s3port" <<'PY'
import sys
path, url, port = sys.argv[1:]
text = open(path).read()
text = text.replace('[blobstore.mail]\nbackend = "dir"\npath = "blobs"\n',
    f'[blobstore.mail]\nbackend = "s3"\nbucket = "mail"\nregion = "us-east-1"\nendpoint = "http://127.0.0.1:{port}"\n'
    'path_style = true\naccess_key_id = "bench"\nsecret_access_key = "bench-secret"\n')
text = text.replace('[sql.users]\nbackend = "sqlite"\npath = "data/users.db"\n',
    f'[sql.users]\nbackend = "postgres"\nurl = "{url}"\n')
open(path, "w").write(text)
PY


declare -A result
start_sink
measure "$spid" "$sport" "$SESSIONS" >/dev/null
result[sink]=$(measure "$spid" "$sport" "$SESSIONS")
stop_pid "$spid"

start_waraka "$work/discard"
measure "$wpid" "$wport" "$SESSIONS" >/dev/null
result[discard]=$(measure "$wpid" "$wport" "$SESSIONS")
stop_pid "$wpid"

start_waraka "$work/storage"
measure "$wpid" "$wport" "$SESSIONS" >/dev/null
objects_before=$(find "$work/s3/mail" -type f -name '*.eml' | wc -l)
s3_c0=$(cpu_ticks "$s3pid")
if [ -n "${PERF_DATA:-}" ]; then
    perf record -q -F 499 -g -p "$wpid" -o "$PERF_DATA" 2>/dev/null &
    perfpid=$!
fi
result[storage]=$(measure "$wpid" "$wport" "$SESSIONS")
s3_c1=$(cpu_ticks "$s3pid")
if [ -n "${PERF_DATA:-}" ]; then kill -INT "$perfpid"; wait "$perfpid" || true; fi
objects=$(( $(find "$work/s3/mail" -type f -name '*.eml' | wc -l) - objects_before ))
stop_pid "$wpid"

# Counting run: bytes between host and guest memory per message.
count_bytes() {
    local instance=$1
    start_waraka "$instance" "warn,waraka::guest_bytes=trace"
    MESSAGES=200 measure "$wpid" "$wport" 1 >/dev/null
    stop_pid "$wpid"
    { grep -o 'bytes=[0-9]*' "$instance.log" || true; } | awk -F= '{s+=$2} END {printf "%.0f", s/200}'
}
"$waraka" init "$work/maildir" --plugins rcpt_to.in_host_list,queue/maildir >/dev/null
s3_bytes=$(count_bytes "$work/storage")
maildir_bytes=$(count_bytes "$work/maildir")

printf '\n%d messages of %d bytes, %d sessions, connections reused (smtp-source -d)\n' "$MESSAGES" "$SIZE" "$SESSIONS"
printf '%-32s %10s %16s\n' server msg/s waraka-cpu-us/msg
read -r kr kc <<<"${result[sink]}"
read -r dr dc <<<"${result[discard]}"
read -r sr sc <<<"${result[storage]}"
printf '%-32s %10s %16s\n' "smtp-sink" "$kr" "($kc)"
printf '%-32s %10s %16s\n' "waraka in_host_list+discard" "$dr" "$dc"
printf '%-32s %10s %16s\n' "waraka validity(pg)+queue/s3" "$sr" "$sc"
python3 -c "print(f'storage / smtp-sink {$sr/$kr:.2f}x, storage / discard {$sr/$dr:.2f}x; s3 server CPU {($s3_c1-$s3_c0)/$hz/$MESSAGES*1e6:.0f} us/msg; {$objects} objects stored for {$MESSAGES} messages')"
printf 'bytes through guest memory per %d-byte message: queue/s3 %s, queue/maildir %s\n' "$SIZE" "$s3_bytes" "$maildir_bytes"
