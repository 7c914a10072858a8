#!/usr/bin/env bash
# The four throughput scenarios of docs/performance.md, each against ringmq and Mosquitto in the same
# run, and (e) ringmq at low load with adaptive batching on and off (same run
# too; scripts/bench.sh: broker on one pinned core, generator on the other, broker CPU-seconds
# from /proc). Offered loads are fixed and below both brokers' saturation, so latency is
# comparable; "msgs / broker CPU s" is the efficiency figure.
#
#   RT="chrt -f 50" scripts/throughput.sh [DURATION=15s]
# Env as scripts/bench.sh (RT, RINGMQ_ARGS, WORKERS, BROKERS ...). Output: one table each.
set -uo pipefail
cd "$(dirname "$0")/.."
D=${1:-15s}
run() { # title, ringmq-load args...
    local title=$1
    shift
    echo "### $title"
    echo "ringmq-load $*"
    scripts/bench.sh "$@" --duration "$D" --ramp 0 2>/dev/null | sed -n '/^metric/,/^raw results/p'
    echo
}
run "(a) p2p QoS 0, 16 B, 1000 pairs, 20k msg/s" \
    pubsub --mode p2p --clients 1000 --rate 20000 --qos 0 --size 16
run "(b) fan-in: 1000 publishers -> one shared group of 10, QoS 0, 16 B, 20k msg/s" \
    pubsub --mode fanin --clients 1000 --subs 10 --rate 20000 --qos 0 --size 16
run "(c) fan-out: 1 publisher -> 1000 subscribers, QoS 0, 16 B, 20 msg/s (20k deliveries/s)" \
    pubsub --mode fanout --clients 1000 --rate 20 --qos 0 --size 16
run "(d) p2p QoS 1, 16 B, 1000 pairs, 10k msg/s" \
    pubsub --mode p2p --clients 1000 --rate 10000 --qos 1 --size 16
# (e) Adaptive batching must not cost latency at low load: the same light p2p load against
# ringmq with batching at its default and with it off (--batch-wait-us 0).
echo "### (e) low load: p2p QoS 0, 16 B, 100 pairs, 200 msg/s; ringmq default batching"
BROKERS=ringmq scripts/bench.sh pubsub --mode p2p --clients 100 --rate 200 --qos 0 --size 16 \
    --duration "$D" --ramp 0 2>/dev/null | sed -n '/^metric/,/^raw results/p'
echo
echo "### (e) low load, the same with batching off (--batch-wait-us 0)"
BROKERS=ringmq RINGMQ_ARGS="${RINGMQ_ARGS:-} --batch-wait-us 0" scripts/bench.sh pubsub --mode p2p \
    --clients 100 --rate 200 --qos 0 --size 16 --duration "$D" --ramp 0 2>/dev/null \
    | sed -n '/^metric/,/^raw results/p'
