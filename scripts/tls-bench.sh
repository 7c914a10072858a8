#!/usr/bin/env bash
# TLS side by side: ringmq vs mosquitto, same certificates, same clients, one run.
#
#   scripts/tls-bench.sh
#
# 1. Handshake rate: `openssl s_time -new` (a full handshake per connection, no resumption)
#    for HANDSHAKE_SECS seconds against each broker's TLS listener, TLS 1.3 and TLS 1.2.
# 2. Throughput: MSGS QoS 1 messages of 64 bytes from one `mosquitto_pub -l` (stdin lines) to
#    one `mosquitto_sub -C MSGS`, both over TLS; wall time of the subscriber.
# Broker CPU seconds come from /proc/PID/stat (utime+stime) before and after each step.
# Env: BROKER_CPU (1) CLIENT_CPU (0) WORKERS (1) PORT_BASE (18880) HANDSHAKE_SECS (10)
#      MSGS (50000) RINGMQ_BIN MOSQUITTO_BIN CARGO_TARGET_DIR
# Traffic is loopback only; every client is bounded by `timeout`.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
BROKER_CPU=${BROKER_CPU:-1}
CLIENT_CPU=${CLIENT_CPU:-0}
WORKERS=${WORKERS:-1}
PORT_BASE=${PORT_BASE:-18880}
HANDSHAKE_SECS=${HANDSHAKE_SECS:-10}
MSGS=${MSGS:-50000}
TICK=$(getconf CLK_TCK)
OUT=$(mktemp -d /tmp/ringmq-tls-bench.XXXXXX)
RINGMQ_BIN=${RINGMQ_BIN:-$TARGET/release/ringmq}
MOSQUITTO_BIN=${MOSQUITTO_BIN:-$(command -v mosquitto || echo /usr/sbin/mosquitto)}
for tool in openssl mosquitto_pub mosquitto_sub; do
    command -v $tool >/dev/null || { echo "SKIP: $tool not installed" >&2; exit 0; }
done
[[ -x $MOSQUITTO_BIN ]] || { echo "SKIP: mosquitto not installed" >&2; exit 0; }
if [[ ! -x $RINGMQ_BIN ]]; then
    echo "building ringmq (release)..." >&2
    cargo build --release --bin ringmq >&2 || exit 1
fi

# Certificates: a CA and a P-256 server certificate for 127.0.0.1/localhost.
cd "$OUT"
openssl ecparam -name prime256v1 -genkey -noout -out ca.key 2>/dev/null
openssl req -x509 -new -key ca.key -subj "/CN=bench CA" -days 2 -out ca.pem 2>/dev/null
openssl ecparam -name prime256v1 -genkey -noout -out server.key.sec1 2>/dev/null
openssl pkcs8 -topk8 -nocrypt -in server.key.sec1 -out server.key
openssl req -new -key server.key -subj "/CN=localhost" -out server.csr 2>/dev/null
printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' >ext.cnf
openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 \
    -extfile ext.cnf -out server.pem 2>/dev/null
# mosquitto started as root drops to the `mosquitto` user before reading them.
chmod 755 "$OUT" && chmod 644 ./*.pem server.key
cd "$ROOT"

. scripts/lib.sh # free_port, cpu_ticks, wait_port
cpu_secs() { echo "scale=2; ($2 - $1) / $TICK" | bc; }

start() { # name port -> pid
    case $1 in
        ringmq)
            # Queue limits high enough that a lagging subscriber loses no QoS 1 message.
            printf 'max_queued_messages = 1000000\nmax_queued_bytes = 268435456\n' >"$OUT/ringmq.toml"
            taskset -c "$BROKER_CPU" "$RINGMQ_BIN" --listen "127.0.0.1:$(($2 + 100))" \
                --tls-listen "127.0.0.1:$2" --tls-cert "$OUT/server.pem" --tls-key "$OUT/server.key" \
                --workers "$WORKERS" --no-pin --config "$OUT/ringmq.toml" >"$OUT/ringmq.log" 2>&1 &
            ;;
        mosquitto)
            printf 'listener %s 127.0.0.1\ncafile %s\ncertfile %s\nkeyfile %s\nallow_anonymous true\nmax_queued_messages 1000000\n' \
                "$2" "$OUT/ca.pem" "$OUT/server.pem" "$OUT/server.key" >"$OUT/mosquitto.conf"
            taskset -c "$BROKER_CPU" "$MOSQUITTO_BIN" -c "$OUT/mosquitto.conf" >"$OUT/mosquitto.log" 2>&1 &
            ;;
    esac
    echo $!
}

printf '%-10s %-8s %12s %14s %16s\n' broker test "result" "broker CPU s" "per CPU-second"
port=$PORT_BASE
for b in ringmq mosquitto; do
    pid=$(start $b $port)
    wait_port $port || { echo "$b did not start (log: $OUT/$b.log)" >&2; kill "$pid"; continue; }
    for v in tls1_3 tls1_2; do
        c0=$(cpu_ticks "$pid")
        n=$(timeout $((HANDSHAKE_SECS + 20)) taskset -c "$CLIENT_CPU" openssl s_time \
            -connect "127.0.0.1:$port" -new -"$v" -CAfile "$OUT/ca.pem" -time "$HANDSHAKE_SECS" 2>/dev/null |
            awk '/connections in [0-9.]+ real seconds/ {print $1; exit}')
        c1=$(cpu_ticks "$pid")
        cs=$(cpu_secs "$c0" "$c1")
        rate=$(echo "scale=0; ${n:-0} / $HANDSHAKE_SECS" | bc)
        per=$( [[ $(echo "$cs > 0" | bc) == 1 ]] && echo "scale=0; ${n:-0} / $cs" | bc || echo -)
        printf '%-10s %-8s %9s hs/s %14s %12s hs\n' $b "$v" "$rate" "$cs" "$per"
    done
    # Throughput over TLS, QoS 1, 64-byte payloads. A retained marker published first tells
    # when the subscriber is subscribed (it is delivered right after SUBACK).
    tls_c=(-h 127.0.0.1 -p $port --cafile "$OUT/ca.pem")
    timeout 60 mosquitto_pub "${tls_c[@]}" -t tlsbench -r -q 1 -m start
    timeout 120 taskset -c "$CLIENT_CPU" mosquitto_sub "${tls_c[@]}" \
        -t tlsbench -q 1 -C $((MSGS + 1)) -i sub-$b >"$OUT/$b.sub" &
    spid=$!
    for _ in $(seq 1 400); do
        [[ -s $OUT/$b.sub ]] && break
        sleep 0.05
    done
    c0=$(cpu_ticks "$pid")
    t0=$(date +%s.%N)
    head -c $((MSGS * 65)) /dev/zero | tr '\0' 'x' | fold -w 64 | head -n "$MSGS" |
        timeout 120 taskset -c "$CLIENT_CPU" mosquitto_pub "${tls_c[@]}" -t tlsbench -q 1 -l -i pub-$b
    wait $spid
    t1=$(date +%s.%N)
    c1=$(cpu_ticks "$pid")
    got=$(($(wc -l <"$OUT/$b.sub") - 1))
    secs=$(echo "$t1 - $t0" | bc)
    cs=$(cpu_secs "$c0" "$c1")
    rate=$(echo "scale=0; $got / $secs" | bc)
    per=$( [[ $(echo "$cs > 0" | bc) == 1 ]] && echo "scale=0; $got / $cs" | bc || echo -)
    printf '%-10s %-8s %9s msg/s %13s %12s msg   (%s of %s received)\n' $b qos1 "$rate" "$cs" "$per" "$got" "$MSGS"
    kill "$pid"
    wait "$pid" 2>/dev/null
    port=$((port + 1))
done
echo "(logs and certificates: $OUT)"
