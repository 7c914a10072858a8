#!/usr/bin/env bash
# Profiles a broker (ringmq, or BROKER=mosquitto for the same view of the peer) under one load-generator scenario with `perf record -g` (software
# clock: the development VMs have no hardware counters) and prints where its CPU goes: user
# space against kernel, then the top symbols of each.
#
#   RT="chrt -f 50" scripts/profile.sh SECONDS ringmq-load-args...
#   e.g. RT="chrt -f 50" scripts/profile.sh 10 pubsub --mode p2p --clients 1000 --rate 20000 --qos 0 --size 16
#
# Env: BROKER (ringmq | mosquitto), RT (as scripts/bench.sh), WORKERS (1), PORT (18830), BROKER_CPU (0), GEN_CPU (1),
# RINGMQ_ARGS (extra broker flags), OUT (report directory, default a temp dir).
# The generator runs SECONDS + 5 s with no ramp; perf samples the broker for SECONDS from the
# 3rd second on. Needs perf (linux-perf / linux-tools) and root or perf_event_paranoid <= 1.
set -uo pipefail
cd "$(dirname "$0")/.."
SECS=${1:?usage: scripts/profile.sh SECONDS ringmq-load-args...}
shift
RT=${RT:-}
WORKERS=${WORKERS:-1}
PORT=${PORT:-18830}
BROKER_CPU=${BROKER_CPU:-0}
GEN_CPU=${GEN_CPU:-1}
OUT=${OUT:-$(mktemp -d /tmp/ringmq-profile.XXXXXX)}
mkdir -p "$OUT"
TARGET=${CARGO_TARGET_DIR:-target}
read -r -a RINGMQ_EXTRA <<<"${RINGMQ_ARGS:-}"
command -v perf >/dev/null || { echo "perf not installed" >&2; exit 1; }
cargo build --release --workspace --bins >&2 || exit 1

case ${BROKER:-ringmq} in
    ringmq)
        $RT taskset -c "$BROKER_CPU" "$TARGET/release/ringmq" --listen "127.0.0.1:$PORT" \
            --workers "$WORKERS" "${RINGMQ_EXTRA[@]}" >"$OUT/broker.log" 2>&1 &
        ;;
    mosquitto)
        $RT taskset -c "$BROKER_CPU" "$(command -v mosquitto || echo /usr/sbin/mosquitto)" \
            -p "$PORT" >"$OUT/broker.log" 2>&1 &
        ;;
    *) echo "BROKER must be ringmq or mosquitto" >&2; exit 2 ;;
esac
broker=$!
trap 'kill $broker 2>/dev/null' EXIT
sleep 0.5
$RT taskset -c "$GEN_CPU" "$TARGET/release/ringmq-load" "$@" --host 127.0.0.1 --port "$PORT" \
    --duration "$((SECS + 5))s" --ramp 0 --quiet --json "$OUT/load.json" >"$OUT/load.txt" 2>&1 &
gen=$!
sleep 3
perf record -g -F 2000 -o "$OUT/perf.data" -p "$broker" -- sleep "$SECS" >/dev/null 2>&1
wait $gen
echo "load: $(tail -n 3 "$OUT/load.txt" | tr '\n' ' ')"
echo "== share of broker samples: user space vs kernel"
perf report -i "$OUT/perf.data" --no-children --sort dso --stdio 2>/dev/null |
    grep -E '^ +[0-9]' | head -n 8
echo "== top symbols (self)"
perf report -i "$OUT/perf.data" --no-children --sort sym --stdio 2>/dev/null |
    grep -E '^ +[0-9]' | head -n 40
echo "perf data in $OUT/perf.data"
