#!/usr/bin/env bash
# The load generator's own ceiling: one generator thread pinned to one core publishes open-loop
# to `ringmq-load sink` (a discard broker on another core) at rising rates, so nobody mistakes a
# generator limit for a broker limit. A rate counts as sustained when the generator achieved
# it with under 1% of sends more than 1 ms late.
#
#   scripts/gen-ceiling.sh [QOS=0] [SIZE=16] [RATES="50000 100000 200000 400000 800000"]
# Env: GEN_CPU (0) SINK_CPU (1) CLIENTS (10) PORT (18899)
set -uo pipefail
cd "$(dirname "$0")/.."
QOS=${1:-0}
SIZE=${2:-16}
RATES=${3:-"50000 100000 200000 400000 800000"}
GEN_CPU=${GEN_CPU:-0}
SINK_CPU=${SINK_CPU:-1}
CLIENTS=${CLIENTS:-10}
PORT=${PORT:-18899}
# RT="chrt -f 50" runs both under SCHED_FIFO (as root), shielding them from other load.
RT=${RT:-}
cargo build --release -q -p ringmq-load || exit 1
LOAD=target/release/ringmq-load
OUT=$(mktemp -d /tmp/gen-ceiling.XXXXXX)
$RT taskset -c "$SINK_CPU" "$LOAD" sink --listen "127.0.0.1:$PORT" --duration 600s >"$OUT/sink.log" 2>&1 &
SINK=$!
trap 'kill $SINK 2>/dev/null' EXIT
sleep 0.5
printf '%-10s %12s %12s %10s %12s\n' target sent/s late% max_lag_us sustained
for r in $RATES; do
    $RT taskset -c "$GEN_CPU" "$LOAD" pub --host 127.0.0.1 --port "$PORT" --clients "$CLIENTS" --threads 1 \
        --rate "$r" --qos "$QOS" --size "$SIZE" --duration 5s --quiet --json "$OUT/$r.json" 2>/dev/null
    python3 - "$OUT/$r.json" "$r" <<'PY'
import json, sys
d = json.load(open(sys.argv[1])); r = float(sys.argv[2])
late = 100.0 * d["late_sends"] / max(d["sent"], 1)
ok = late < 1.0 and d["sent_rate"] >= 0.99 * r
print("%-10d %12.0f %12.2f %10d %12s" % (r, d["sent_rate"], late, d["max_send_lag_us"], "yes" if ok else "no"))
PY
done
