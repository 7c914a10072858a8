#!/usr/bin/env bash
# Durability cost: QoS 1 p2p at saturation with persistent subscriber sessions, against
# ringmq in memory, ringmq --durability sync and batched, and Mosquitto with
# `persistence true`, each measured by scripts/bench.sh (broker on one pinned core,
# generator on the other, broker CPU-seconds from /proc). The commit figures (count, mean,
# latency buckets) are the storage threads' "log closed" lines at the end of each run.
#
#   RT="chrt -f 50" scripts/durability.sh [DURATION=10s] [CLIENTS=100] [RATE=200000]
# ONLY_RESTART=1: only the restart comparison; RECOVERY_SESSIONS (100000) sessions for it.
# Recovery time of 1M sessions x 10 subscriptions: cargo run --release --example recovery
set -uo pipefail
cd "$(dirname "$0")/.."
D=${1:-10s}
C=${2:-100}
R=${3:-200000}
DATA=$(mktemp -d /tmp/ringmq-durability.XXXXXX)
ARGS=(pubsub --mode p2p --clients "$C" --rate "$R" --qos 1 --size 64 --clean false --session-expiry 3600 --duration "$D" --ramp 0)
run() { # title, env...
    echo "### $1"
    shift
    env "$@" scripts/bench.sh "${ARGS[@]}" 2>&1 | grep -aE "log closed|^metric|msgs/s|p50 us|p99 us|broker CPU s|msgs / broker CPU s|lost" | grep -v "user CPU"
    echo
}
if [[ -z ${ONLY_RESTART:-} ]]; then
echo "ringmq-load ${ARGS[*]}"
echo
mkdir -p "$DATA/mosq"
chmod 755 "$DATA"; chmod 777 "$DATA/mosq"
run "in memory: ringmq vs Mosquitto (persistence true, autosave_interval 1800)" \
    BROKERS="ringmq mosquitto" MOSQUITTO_CONF_EXTRA="persistence true\npersistence_location $DATA/mosq/" RINGMQ_ARGS=""
run "ringmq --durability sync" BROKERS=ringmq RINGMQ_ARGS="--data-dir $DATA/sync --durability sync"
run "ringmq --durability batched (commit_interval_ms 100)" BROKERS=ringmq RINGMQ_ARGS="--data-dir $DATA/batched --durability batched"
run "ringmq --durability none (snapshots only)" BROKERS=ringmq RINGMQ_ARGS="--data-dir $DATA/none --durability none"
du -sh "$DATA"/* 2>/dev/null
rm -rf "$DATA"
fi

# Restart with N persistent sessions x 10 subscriptions (scripts/persist-sessions.py): the
# time from start until the port accepts connections, ringmq and Mosquitto, and whether the
# session came back (Session Present of dev-00000000).
N=${RECOVERY_SESSIONS:-100000}
MOSQ=$(command -v mosquitto || echo /usr/sbin/mosquitto)
RBIN=${RINGMQ_BIN:-target/release/ringmq}
DATA=$(mktemp -d /tmp/ringmq-durability.XXXXXX)
wait_port() { for _ in $(seq 1 6000); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.01; done; return 1; }
present() { # port -> Session Present of dev-00000000 (3.1.1, clean session 0), retrying the
    # connection until the broker answers (the time to the first CONNACK)
    python3 - "$1" <<'PY'
import socket, struct, sys, time
for _ in range(60000):
    try:
        s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
        break
    except OSError:
        time.sleep(0.001)
cid = b"dev-00000000"
body = struct.pack("!H", 4) + b"MQTT" + bytes([4, 0]) + struct.pack("!H", 60) + struct.pack("!H", len(cid)) + cid
s.sendall(bytes([0x10, len(body)]) + body)
p = s.recv(4)
print("session present" if p[2] & 1 else "session LOST")
PY
}
restart_cmp() { # name start-command...
    local name=$1
    shift
    "$@" >"$DATA/$name.log" 2>&1 &
    local pid=$!
    wait_port 18899 || { echo "$name did not start"; return; }
    python3 scripts/persist-sessions.py 127.0.0.1 18899 "$N" 10 8 | sed "s/^/$name: /"
    local rss
    rss=$(awk '/VmRSS/{print $2}' /proc/$pid/status)
    local t0
    t0=$(date +%s.%N)
    kill "$pid"
    wait "$pid" 2>/dev/null
    local t1
    t1=$(date +%s.%N)
    "$@" >>"$DATA/$name.log" 2>&1 &
    pid=$!
    local p
    p=$(present 18899)
    local t2
    t2=$(date +%s.%N)
    echo "$name: RSS with the sessions ${rss} kB; clean stop $(echo "$t1 - $t0" | bc) s; start to first CONNACK $(echo "$t2 - $t1" | bc) s; $p"
    kill "$pid"
    wait "$pid" 2>/dev/null
}
echo "### restart with $N persistent sessions x 10 subscriptions"
printf 'listener 18899 127.0.0.1\nallow_anonymous true\npersistence true\npersistence_location %s/mosq/\nmax_queued_messages 1000\n' "$DATA" >"$DATA/mosquitto.conf"
mkdir -p "$DATA/mosq"
chmod 755 "$DATA"; chmod 777 "$DATA/mosq" # Mosquitto started as root drops to its own user
restart_cmp mosquitto "$MOSQ" -c "$DATA/mosquitto.conf"
restart_cmp ringmq "$RBIN" --listen 127.0.0.1:18899 --workers 2 --data-dir "$DATA/ringmq" --durability sync
du -sh "$DATA/mosq" "$DATA/ringmq"
rm -rf "$DATA"
