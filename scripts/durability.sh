#!/usr/bin/env bash
# Durability cost: QoS 1 p2p at saturation with persistent subscriber sessions, against
# ringmq in memory, ringmq --durability sync and batched, and Mosquitto with
# `persistence true`, each measured by scripts/bench.sh (broker on one pinned core,
# generator on the other, broker CPU-seconds from /proc). The commit figures (count, mean,
# latency buckets) are the storage threads' "log closed" lines at the end of each run.
#
#   RT="chrt -f 50" scripts/durability.sh [DURATION=10s] [CLIENTS=100] [RATE=200000]
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
echo "ringmq-load ${ARGS[*]}"
echo
mkdir -p "$DATA/mosq"
run "in memory: ringmq vs Mosquitto (persistence true, autosave_interval 1800)" \
    BROKERS="ringmq mosquitto" MOSQUITTO_CONF_EXTRA="persistence true\npersistence_location $DATA/mosq/" RINGMQ_ARGS=""
run "ringmq --durability sync" BROKERS=ringmq RINGMQ_ARGS="--data-dir $DATA/sync --durability sync"
run "ringmq --durability batched (commit_interval_ms 100)" BROKERS=ringmq RINGMQ_ARGS="--data-dir $DATA/batched --durability batched"
run "ringmq --durability none (snapshots only)" BROKERS=ringmq RINGMQ_ARGS="--data-dir $DATA/none --durability none"
du -sh "$DATA"/* 2>/dev/null
rm -rf "$DATA"
