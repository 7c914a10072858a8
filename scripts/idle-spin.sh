#!/usr/bin/env bash
# Reproduces an idle worker burning a core after a connect burst (docs/limits.md, #15): RUNS
# times, a fresh `ringmq --workers 1` on core 0 takes CLIENTS connections at once from
# ringmq-load on core 1, which holds them for HOLD; the broker's CPU over each run is printed
# (clock ticks) and runs above SPIN ticks are counted. A normal run is about 0.4 s of CPU.
#
#   scripts/idle-spin.sh [RUNS=30] [CLIENTS=15000] [HOLD=3s]   (RINGMQ_ARGS: more broker flags)
set -uo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
RUNS=${1:-30}
CLIENTS=${2:-15000}
HOLD=${3:-3s}
SPIN=${SPIN:-150}
cargo build --release -p ringmq -p ringmq-load >/dev/null 2>&1 || { echo "build failed"; exit 1; }
n=0
for i in $(seq 1 "$RUNS"); do
    port=$(free_port)
    # shellcheck disable=SC2086
    taskset -c 0 target/release/ringmq --listen "127.0.0.1:$port" --workers 1 --no-pin ${RINGMQ_ARGS:-} >/dev/null 2>&1 &
    pid=$!
    wait_port "$port" || { echo "the broker did not start"; exit 1; }
    t0=$(cpu_ticks "$pid")
    taskset -c 1 target/release/ringmq-load conn --clients "$CLIENTS" --ramp 0 --duration "$HOLD" --threads 2 \
        --source 127.0.0.10-127.0.0.17 --host "127.0.0.1:$port" --quiet 2>/dev/null
    t1=$(cpu_ticks "$pid")
    echo -n "$((t1 - t0)) "
    ((t1 - t0 > SPIN)) && n=$((n + 1))
    kill "$pid"
    wait "$pid" 2>/dev/null
done
echo
echo "runs above $SPIN ticks ($(getconf CLK_TCK)/s): $n of $RUNS"
