#!/usr/bin/env bash
# Side-by-side benchmark: ringmq vs mosquitto, same generator run, pinned CPUs.
#
#   scripts/bench.sh [ringmq-load scenario args...]
#   default: pubsub --mode p2p --clients 10 --rate 20000 --qos 0 --size 64 --duration 10s
#
# Env: BROKER_CPU (1) GEN_CPU (0) WORKERS (1) PORT_BASE (18850) BROKERS ("ringmq mosquitto")
#      RINGMQ_BIN LOAD_BIN MOSQUITTO_BIN CARGO_TARGET_DIR RINGMQ_ARGS (extra broker flags)
#      MOSQUITTO_CONF_EXTRA (lines added to a generated mosquitto.conf, e.g. "persistence true")
#      RT ("" ; "chrt -f 50" runs broker and generator under SCHED_FIFO, as root, so that other
#      load on a shared machine does not preempt them; both brokers get the same treatment)
# The broker runs on core BROKER_CPU, the generator on core GEN_CPU (taskset). Broker CPU
# seconds come from /proc/PID/stat (utime+stime, also shown apart) read before and after the run.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
BROKER_CPU=${BROKER_CPU:-1}
GEN_CPU=${GEN_CPU:-0}
WORKERS=${WORKERS:-1}
PORT_BASE=${PORT_BASE:-18850}
BROKERS=${BROKERS:-"ringmq mosquitto"}
RT=${RT:-}
read -r -a RINGMQ_EXTRA <<<"${RINGMQ_ARGS:-}"
TICK=$(getconf CLK_TCK)
OUT=$(mktemp -d /tmp/ringmq-bench.XXXXXX)
if [[ $# -gt 0 ]]; then ARGS=("$@"); else
    ARGS=(pubsub --mode p2p --clients 10 --rate 20000 --qos 0 --size 64 --duration 10s)
fi

LOAD_BIN=${LOAD_BIN:-$TARGET/release/ringmq-load}
if [[ ! -x $LOAD_BIN ]]; then
    echo "building ringmq-load (release)..." >&2
    cargo build --release -p ringmq-load >&2 || { echo "cannot build ringmq-load" >&2; exit 1; }
fi
RINGMQ_BIN=${RINGMQ_BIN:-$TARGET/release/ringmq}
MOSQUITTO_BIN=${MOSQUITTO_BIN:-$(command -v mosquitto || echo /usr/sbin/mosquitto)}

cpu_ticks_pair() { # "utime stime" of a pid, in clock ticks
    sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null | awk '{print $12, $13}'
}

. scripts/lib.sh # free_port, cpu_ticks, wait_port

start_broker() { # name port -> echoes pid, or nothing
    local name=$1 port=$2
    case $name in
        ringmq)
            if [[ ! -x $RINGMQ_BIN ]]; then
                echo "building ringmq (release)..." >&2
                cargo build --release --bin ringmq >&2 || return 1
            fi
            $RT taskset -c "$BROKER_CPU" "$RINGMQ_BIN" --listen "127.0.0.1:$port" --workers "$WORKERS" \
                "${RINGMQ_EXTRA[@]}" >"$OUT/ringmq.log" 2>&1 &
            ;;
        mosquitto)
            [[ -x $MOSQUITTO_BIN ]] || { echo "mosquitto not installed" >&2; return 1; }
            if [[ -n ${MOSQUITTO_CONF_EXTRA:-} ]]; then
                printf 'listener %s 127.0.0.1\nallow_anonymous true\n%b\n' "$port" "$MOSQUITTO_CONF_EXTRA" >"$OUT/mosquitto.conf"
                $RT taskset -c "$BROKER_CPU" "$MOSQUITTO_BIN" -c "$OUT/mosquitto.conf" >"$OUT/mosquitto.log" 2>&1 &
            else
                $RT taskset -c "$BROKER_CPU" "$MOSQUITTO_BIN" -p "$port" >"$OUT/mosquitto.log" 2>&1 &
            fi
            ;;
    esac
    local pid=$!
    if ! wait_port "$port" || ! kill -0 "$pid" 2>/dev/null; then
        echo "$name did not start listening on $port (see $OUT/$name.log)" >&2
        kill "$pid" 2>/dev/null
        return 1
    fi
    echo "$pid"
}

port=$PORT_BASE
for b in $BROKERS; do
    port=$((port + 1))
    pid=$(start_broker "$b" "$port") || { echo "$b: skipped" >&2; continue; }
    echo "== $b (pid $pid, cpu $BROKER_CPU) :: ringmq-load ${ARGS[*]} (cpu $GEN_CPU)" >&2
    t0=$(cpu_ticks_pair "$pid")
    $RT taskset -c "$GEN_CPU" "$LOAD_BIN" "${ARGS[@]}" --host 127.0.0.1 --port "$port" --quiet \
        --json "$OUT/$b.json" 2>"$OUT/$b.txt"
    echo "   exit code $?" >&2
    t1=$(cpu_ticks_pair "$pid")
    kill "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
    # Not our child (started in a subshell): wait for the clean stop to finish.
    for _ in $(seq 1 200); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
    if [[ $b == ringmq ]]; then grep -a "log closed" "$OUT/ringmq.log" | sed 's/\x1b\[[0-9;]*m//g; s/^/   /' >&2; fi
    awk -v a="$t0" -v b="$t1" -v t="$TICK" 'BEGIN{split(a, x, " "); split(b, y, " ");
        u = (y[1] - x[1]) / t; s = (y[2] - x[2]) / t;
        printf "{\"cpu_s\": %s, \"user_cpu_s\": %s, \"sys_cpu_s\": %s}\n", u + s, u, s}' >"$OUT/$b.cpu.json"
    tail -n 8 "$OUT/$b.txt" | sed 's/^/   /' >&2
done

python3 - "$OUT" $BROKERS <<'PY'
import json, os, sys
out, names = sys.argv[1], sys.argv[2:]
rows = {}
for n in names:
    try:
        j = json.load(open(os.path.join(out, n + ".json")))
        j.update(json.load(open(os.path.join(out, n + ".cpu.json"))))
        rows[n] = j
    except Exception:
        pass
if not rows:
    print("no results"); sys.exit(1)
def val(j, k):
    if k == "msgs_per_cpu_s" and j.get("sent", 0) == 0 and j.get("received", 0) == 0:
        return (j.get("connects", 0)) / j["cpu_s"] if j["cpu_s"] > 0 else 0
    if k == "msgs_per_cpu_s":
        return (j["received"] or j["sent"]) / j["cpu_s"] if j["cpu_s"] > 0 else 0
    if k == "msgs_per_user_cpu_s":
        u = j.get("user_cpu_s", 0)
        return (j["received"] or j["sent"]) / u if u > 0 else 0
    return j.get(k, 0)
metrics = [("sent_rate", "sent msgs/s"), ("recv_rate", "recv msgs/s"), ("latency_p50_us", "p50 us"),
           ("latency_p99_us", "p99 us"), ("latency_p999_us", "p999 us"), ("latency_max_us", "max us"),
           ("lost", "lost"), ("late_sends", "late sends"), ("cpu_s", "broker CPU s"),
           ("user_cpu_s", "  of which user s"), ("sys_cpu_s", "  of which kernel s"),
           ("msgs_per_cpu_s", "msgs / broker CPU s"), ("msgs_per_user_cpu_s", "msgs / user CPU s"), ("conns_peak", "conns peak"),
           ("conns_end", "conns at end"), ("connect_rate", "CONNACKs/s"),
           ("connect_p50_us", "connect p50 us"), ("connect_p99_us", "connect p99 us"),
           ("takeover_p50_us", "takeover p50 us"), ("takeover_p99_us", "takeover p99 us"),
           ("takeover_max_us", "takeover max us"), ("old_disconnect_0x8e", "old got 0x8E"),
           ("old_eof_without_disconnect", "old EOF only"), ("closed", "closed by broker")]
cols = list(rows)
# Rows a scenario does not produce (e.g. take-over figures of a pubsub run) are left out.
metrics = [(k, l) for k, l in metrics if k in ("msgs_per_cpu_s", "cpu_s")
           or (k == "msgs_per_user_cpu_s" and any(rows[c].get("received") or rows[c].get("sent") for c in cols))
           or any(k in rows[c] for c in cols)]
print("\n%-22s" % "metric" + "".join("%16s" % c for c in cols) + ("%12s" % "ratio" if len(cols) == 2 else ""))
for k, label in metrics:
    vs = [val(rows[c], k) for c in cols]
    line = "%-22s" % label + "".join("%16.1f" % v if isinstance(v, float) else "%16s" % v for v in vs)
    if len(cols) == 2:
        line += "%12s" % ("%.2f" % (vs[0] / vs[1]) if vs[1] else "-")
    print(line)
print("\nraw results in", out)
PY
