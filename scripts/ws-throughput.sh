#!/usr/bin/env bash
# MQTT over WebSocket throughput: ringmq's --ws-listen against Mosquitto's websockets
# listener, the same client (scripts/ws-load.js, MQTT.js in Node) and the same offered load
# in one run; the same client over plain TCP (mqtt://) against both as a reference.
#
#   scripts/ws-throughput.sh [SECS]        # default 15 s per run; 4 targets x 2 scenarios
#
# Scenarios (PAIRS publisher/subscriber pairs, one connection each, SIZE-byte payloads, open
# loop at a fixed total rate): p2p QoS 0 at RATE0 msg/s and p2p QoS 1 at RATE1 msg/s. Each run
# gets a fresh broker on ports picked just before it starts (loopback only), the broker on
# core BROKER_CPU and Node on core CLIENT_CPU (taskset). Broker CPU-seconds are utime+stime
# from /proc/PID/stat, read right before and right after the client (connects included).
# "msgs per broker CPU-s" = messages received by the subscribers / broker CPU-seconds.
#
# Node runs the client on one thread: keep RATE0/RATE1 where its own CPU stays well below a
# core (the table prints it; above ~80 % the client, not the broker, sets the pace). RT
# applies to the broker only: Node pinned to one core under SCHED_FIFO spun its main thread at
# 95 % of the core even at 1,000 msg/s (its helper threads, same core and priority, could
# not run), so the client gets CLIENT_PREFIX instead.
#
# Mosquitto 2.0.x (Debian's 2.0.11 here) serves websockets through libwebsockets with two
# quirks (eclipse-mosquitto/mosquitto#2284, #3045): it will not start with a websockets
# listener alone (a plain listener must exist too), and a `listener PORT ADDRESS` line binds
# the websockets port on every address; naming the interface (`listener PORT lo`) binds it
# to 127.0.0.1 only. Both are done below.
#
# Env: BROKER_CPU (1) CLIENT_CPU (0) WORKERS (1) PAIRS (100) RATE0 (4000) RATE1 (2000)
#      SIZE (64) DRAIN (5) TARGETS ("ringmq-ws mosquitto-ws ringmq-tcp mosquitto-tcp")
#      RT ("" ; "chrt -f 50" runs the broker under SCHED_FIFO, as scripts/bench.sh; as root)
#      CLIENT_PREFIX ("" ; e.g. "nice -n -10" for Node) RINGMQ_BIN MOSQUITTO_BIN CARGO_TARGET_DIR
#      NO_BUILD (set: do not run cargo build --release)
# Whole run: about 8 x (SECS + 5) s plus the build (2.5 min at 15 s); every client and
# broker is bounded by `timeout`. A row marked CLIENT LAGGED measured the client, not the
# broker (it stalled over 50 ms or sent over 5 % late): run again when the machine is quieter.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
SECS=${1:-15}
BROKER_CPU=${BROKER_CPU:-1}
CLIENT_CPU=${CLIENT_CPU:-0}
WORKERS=${WORKERS:-1}
PAIRS=${PAIRS:-100}
RATE0=${RATE0:-4000}
RATE1=${RATE1:-2000}
SIZE=${SIZE:-64}
DRAIN=${DRAIN:-5}
TARGETS=${TARGETS:-"ringmq-ws mosquitto-ws ringmq-tcp mosquitto-tcp"}
RT=${RT:-}
CLIENT_PREFIX=${CLIENT_PREFIX:-}
TICK=$(getconf CLK_TCK)
OUT=$(mktemp -d /tmp/ringmq-ws-bench.XXXXXX)
RINGMQ_BIN=${RINGMQ_BIN:-$TARGET/release/ringmq}
MOSQUITTO_BIN=${MOSQUITTO_BIN:-$(command -v mosquitto || echo /usr/sbin/mosquitto)}

command -v node >/dev/null || { echo "SKIP: node not installed" >&2; exit 0; }
[[ -d tests/js/node_modules/mqtt ]] || {
    echo "MQTT.js missing: cd tests/js && npm install --no-audit --no-fund --no-package-lock" >&2
    exit 1
}
if [[ -z ${NO_BUILD:-} ]]; then
    echo "== cargo build --release --bin ringmq (nice -n 19)" >&2
    nice -n 19 cargo build --release --bin ringmq >&2 || { echo "build failed" >&2; exit 1; }
fi
[[ -x $RINGMQ_BIN ]] || { echo "no ringmq binary at $RINGMQ_BIN" >&2; exit 1; }
[[ -x $MOSQUITTO_BIN ]] || echo "mosquitto not installed: its rows are skipped" >&2

. scripts/lib.sh # free_port, cpu_ticks, wait_port
stop() { # pid: SIGTERM, then wait up to 10 s for it to go
    kill "$1" 2>/dev/null
    for _ in $(seq 1 200); do kill -0 "$1" 2>/dev/null || return 0; sleep 0.05; done
    kill -9 "$1" 2>/dev/null
}

# Every broker is bounded in time too, and stopped if the script ends early.
BROKER_LIMIT=$((SECS + DRAIN + 120))
PIDS=()
trap 'for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done' EXIT

# start BROKER TCP_PORT WS_PORT LOG -> pid
start() {
    case $1 in
        ringmq)
            timeout "$BROKER_LIMIT" $RT taskset -c "$BROKER_CPU" "$RINGMQ_BIN" --listen "127.0.0.1:$2" \
                --ws-listen "127.0.0.1:$3" --workers "$WORKERS" --no-pin >"$4" 2>&1 &
            ;;
        mosquitto)
            printf 'listener %s 127.0.0.1\nlistener %s lo\nprotocol websockets\nallow_anonymous true\n' \
                "$2" "$3" >"$4.conf"
            timeout "$BROKER_LIMIT" $RT taskset -c "$BROKER_CPU" "$MOSQUITTO_BIN" -c "$4.conf" >"$4" 2>&1 &
            ;;
    esac
    # $! is `timeout`; chrt and taskset exec, so its child is the broker itself.
    local tpid=$! bpid=""
    for _ in $(seq 1 100); do
        bpid=$(pgrep -P "$tpid" | head -1)
        [[ -n $bpid ]] && break
        sleep 0.02
    done
    echo "${bpid:-$tpid}"
}

echo "== results in $OUT; $(nproc) CPUs; $("$MOSQUITTO_BIN" -h 2>/dev/null | head -1); node $(node --version); load average $(cut -d' ' -f1-3 /proc/loadavg)" >&2
for scenario in qos0 qos1; do
    case $scenario in qos0) qos=0 rate=$RATE0 ;; qos1) qos=1 rate=$RATE1 ;; esac
    for t in $TARGETS; do
        broker=${t%-*} transport=${t#*-}
        [[ $broker == mosquitto && ! -x $MOSQUITTO_BIN ]] && continue
        tcp=$(free_port) ws=$(free_port)
        while [[ $ws == "$tcp" ]]; do ws=$(free_port); done
        log=$OUT/$scenario-$t.log
        pid=$(start "$broker" "$tcp" "$ws" "$log")
        PIDS+=("$pid")
        port=$tcp url=mqtt://127.0.0.1:$tcp
        [[ $transport == ws ]] && port=$ws url=ws://127.0.0.1:$ws/mqtt
        if ! wait_port "$port" || ! kill -0 "$pid" 2>/dev/null; then
            echo "$t did not start (log: $log)" >&2
            stop "$pid"
            continue
        fi
        echo "== $scenario $t (pid $pid): $url, $PAIRS pairs, $rate msg/s, ${SECS}s" >&2
        c0=$(cpu_ticks "$pid")
        timeout $((SECS + DRAIN + 40)) $CLIENT_PREFIX taskset -c "$CLIENT_CPU" node scripts/ws-load.js \
            --url "$url" --pairs "$PAIRS" --rate "$rate" --duration "$SECS" --qos "$qos" \
            --size "$SIZE" --drain "$DRAIN" --json "$OUT/$scenario-$t.json" >/dev/null 2>"$OUT/$scenario-$t.err"
        rc=$?
        c1=$(cpu_ticks "$pid")
        alive=yes
        kill -0 "$pid" 2>/dev/null || alive=no
        stop "$pid"
        awk -v a="$c0" -v b="$c1" -v t="$TICK" -v rc="$rc" -v alive="$alive" \
            'BEGIN { printf "{\"broker_cpu_s\": %.3f, \"rc\": %d, \"alive\": \"%s\"}\n", (b - a) / t, rc, alive }' \
            >"$OUT/$scenario-$t.cpu.json"
        [[ -s $OUT/$scenario-$t.err ]] && sed 's/^/   /' "$OUT/$scenario-$t.err" >&2
    done
done

python3 - "$OUT" "$TARGETS" <<'PY'
import json, os, sys
out, targets = sys.argv[1], sys.argv[2].split()
print(f"\n{'scenario':9} {'broker':14} {'offered/s':>9} {'delivered':>17} {'lost':>5} "
      f"{'p50 ms':>7} {'p99 ms':>7} {'CPU-s':>6} {'msgs/CPU-s':>10} {'ratio':>6} {'client CPU':>10} {'late':>6}")
for sc in ("qos0", "qos1"):
    rows = {}
    for t in targets:
        try:
            j = json.load(open(os.path.join(out, f"{sc}-{t}.json")))
            j.update(json.load(open(os.path.join(out, f"{sc}-{t}.cpu.json"))))
            rows[t] = j
        except Exception:
            pass
    eff = {t: (j["received"] / j["broker_cpu_s"] if j["broker_cpu_s"] > 0 else 0) for t, j in rows.items()}
    for t, j in rows.items():
        broker, transport = t.rsplit("-", 1)
        peer = f"mosquitto-{transport}"
        ratio = f"{eff[t] / eff[peer]:.2f}" if broker == "ringmq" and eff.get(peer) else ""
        name = f"{broker} {transport}"
        note = "" if j.get("alive") == "yes" and j.get("rc") in (0, 2) else f"  (rc {j.get('rc')}, alive {j.get('alive')})"
        if j["max_lag_ms"] > 50 or j["late_sends"] > 0.05 * max(1, j["sent"]):
            # The client fell behind its schedule: the row measures the client, not the broker.
            note += f"  CLIENT LAGGED (max {j['max_lag_ms']:.0f} ms)"
        print(f"{sc:9} {name:14} {j['rate']:>9,} {j['received']:>8,} of {j['sent']:>6,} {j['lost']:>5,} "
              f"{j['latency_p50_us'] / 1000:>7.2f} {j['latency_p99_us'] / 1000:>7.2f} {j['broker_cpu_s']:>6.2f} "
              f"{eff[t]:>10,.0f} {ratio:>6} {j['client_cpu_pct']:>9.0f}% {j['late_sends']:>6,}{note}")
print("\nratio = ringmq / Mosquitto messages per broker CPU-second, same transport; client CPU ="
      " Node's own use of its core over the run;\nlate = messages the client sent more than 5 ms"
      " after their intended time (its own lag, counted in the latency);\nCLIENT LAGGED: the client stalled over 50 ms or sent over 5 % late,"
      " the client (not the broker) set the pace of that row: run again on a quieter machine.")
print("raw results in", out)
PY
echo "load average at the end: $(cut -d" " -f1-3 /proc/loadavg)"
