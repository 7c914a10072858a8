#!/usr/bin/env bash
# The cluster's figures on this machine, in one run, against single-node ringmq:
#   1. p2p QoS 1 where every pair crosses nodes (subscriber i on node k, publisher i on node
#      k+1): messages per broker CPU-second (CPU of all three nodes summed) and latency.
#      Publishing starts 1 s after the last SUBACK (--settle): a subscription reaches the
#      other nodes a few ms after its SUBACK, and a QoS 1 PUBLISH on another node before that
#      gets PUBACK 0x10 No matching subscribers (counted by ringmq-load) and reaches nobody;
#   2. a take-over storm of STORM ids, each id's new connection on another node than its old
#      one: take-over latency p50/p99 (CONNECT to CONNACK of the new connection);
#   3. a connect storm of CONNS clients spread over the nodes: CONNACKs per second (every
#      CONNECT is a claim in etcd in the cluster).
# Single-node ringmq (no cluster, the same worker count per process) runs the same loads.
# Brokers and etcd share core 0, the generator has core 1 (taskset), as in scripts/bench.sh.
#
#   scripts/cluster.sh [PAIRS=200] [RATE=20000] [DURATION=10s] [STORM=10000] [CONNS=15000]
# REPEAT (3): connect storms per configuration (their rate varies a lot on a shared VM).
# KEEP=1 keeps the logs and the generator's JSON; ONLY="p2p takeover connect" picks loads.
# Needs etcd (apt-get install etcd-server) and a build with the cluster feature (done here).
set -uo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
PAIRS=${1:-200}
RATE=${2:-20000}
DUR=${3:-10s}
STORM=${4:-10000}
CONNS=${5:-15000}
NODES=3
ONLY=${ONLY:-p2p takeover connect}
BCPU=${BROKER_CPU:-0}
GCPU=${GEN_CPU:-1}
# ETCD_CPU=1: etcd beside the generator instead of beside the brokers.
ECPU=${ETCD_CPU:-$BCPU}
TCK=$(getconf CLK_TCK)
cargo build --release --features ringmq/cluster -p ringmq -p ringmq-load >/dev/null 2>&1 ||
    { echo "build failed (the cluster feature needs protoc: apt-get install protobuf-compiler)"; exit 1; }
BIN=target/release/ringmq
LOAD=target/release/ringmq-load
command -v etcd >/dev/null || { echo "etcd not installed (apt-get install etcd-server)"; exit 1; }
WORK=$(mktemp -d /tmp/ringmq-cluster.XXXXXX)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
    wait 2>/dev/null
    if [[ -n ${KEEP:-} ]]; then echo "logs and JSON kept in $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

start_etcd() {
    EC=$(free_port)
    EP=$(free_port)
    rm -rf "$WORK/etcd"
    taskset -c "$ECPU" etcd --name c --data-dir "$WORK/etcd" \
        --listen-client-urls "http://127.0.0.1:$EC" --advertise-client-urls "http://127.0.0.1:$EC" \
        --listen-peer-urls "http://127.0.0.1:$EP" --initial-advertise-peer-urls "http://127.0.0.1:$EP" \
        --initial-cluster "c=http://127.0.0.1:$EP" >"$WORK/etcd.log" 2>&1 &
    ETCD_PID=$!
    PIDS+=("$ETCD_PID")
    wait_port "$EC" || { echo "etcd did not start"; exit 1; }
}

# start_brokers single|cluster|cluster1: NODE_PIDS, NODE_PORTS, HOSTS (--host args).
# cluster1: one node of a cluster, with etcd (what a claim in etcd costs one node).
start_brokers() {
    NODE_PIDS=()
    NODE_PORTS=()
    HOSTS=()
    local n=$NODES
    [[ $1 == single || $1 == cluster1 ]] && n=1
    for i in $(seq 1 "$n"); do
        local port
        port=$(free_port)
        local args=(--listen "127.0.0.1:$port" --workers 1 --no-pin)
        if [[ $1 == cluster* ]]; then
            args+=(--cluster-etcd "http://127.0.0.1:$EC" --node-name "n$i"
                --cluster-listen 127.0.0.1:0 --cluster-lease-secs 10)
        fi
        RUST_LOG=info NO_COLOR=1 taskset -c "$BCPU" "$BIN" "${args[@]}" >"$WORK/$1-n$i.log" 2>&1 &
        NODE_PIDS+=($!)
        PIDS+=($!)
        NODE_PORTS+=("$port")
        HOSTS+=(--host "127.0.0.1:$port")
    done
    for p in "${NODE_PORTS[@]}"; do wait_port "$p" || { echo "a broker did not start"; exit 1; }; done
    if [[ $1 == cluster* ]]; then
        for i in $(seq 1 "$n"); do
            for _ in $(seq 1 200); do
                grep -q "cluster: serving" "$WORK/$1-n$i.log" && break
                sleep 0.05
            done
        done
    fi
    if [[ $1 == cluster ]]; then
        # Every node linked to every other.
        for _ in $(seq 1 200); do
            local ok=1
            for i in $(seq 1 "$n"); do
                local up
                up=$(grep -c "peer link up" "$WORK/cluster-n$i.log")
                ((up >= n - 1)) || ok=0
            done
            ((ok)) && break
            sleep 0.05
        done
    fi
}

stop_brokers() {
    for p in "${NODE_PIDS[@]}"; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
}

broker_ticks() {
    local t=0
    for p in "${NODE_PIDS[@]}"; do t=$((t + $(cpu_ticks "$p"))); done
    echo "$t"
}

# run_load NAME scenario args...: the generator on its core; broker (and etcd) CPU over the run.
run_load() {
    local name=$1
    shift
    local b0 e0 b1 e1
    b0=$(broker_ticks)
    e0=$( [[ -n ${ETCD_PID:-} ]] && cpu_ticks "$ETCD_PID" || echo 0)
    taskset -c "$GCPU" "$LOAD" "$@" "${HOSTS[@]}" --quiet --json "$WORK/$name.json" 2>"$WORK/$name.txt"
    b1=$(broker_ticks)
    e1=$( [[ -n ${ETCD_PID:-} ]] && cpu_ticks "$ETCD_PID" || echo 0)
    echo "$(( b1 - b0 )) $(( e1 - e0 ))" >"$WORK/$name.cpu"
}

# The connect storm REPEAT times (the rate varies from run to run on a shared VM), each on
# freshly started brokers; the last run's JSON is "$1-connect".
REPEAT=${REPEAT:-3}
connect_runs() {
    for _ in $(seq 1 "$REPEAT"); do
        start_brokers "$1"
        run_load "$1-connect" "${CONNECT[@]}"
        python3 -c "import json; print(int(json.load(open('$WORK/$1-connect.json'))['connect_rate']))" >>"$WORK/$1-rates"
        cat "$WORK/$1-connect.cpu" >>"$WORK/$1-cpus"
        stop_brokers
    done
}

j() { python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print(d$2)" "$WORK/$1.json"; }

P2P=(pubsub --mode p2p --clients "$PAIRS" --rate "$RATE" --qos 1 --size 64 --duration "$DUR" --ramp 0 --threads 1 --settle 1s)
TAKEOVER=(takeover --clients "$STORM" --ramp 0 --duration 20s --threads 2 --source 127.0.0.2-127.0.0.9)
CONNECT=(conn --clients "$CONNS" --ramp 0 --duration 8s --threads 2 --source 127.0.0.10-127.0.0.17)

for mode in single cluster; do
    ETCD_PID=
    [[ $mode == cluster ]] && start_etcd
    for load in $ONLY; do
        case $load in
        p2p | takeover)
            start_brokers "$mode"
            if [[ $load == p2p ]]; then run_load "$mode-p2p" "${P2P[@]}"; else run_load "$mode-takeover" "${TAKEOVER[@]}"; fi
            stop_brokers
            ;;
        connect)
            connect_runs "$mode"
            # And on one clustered node: every CONNECT still an etcd claim.
            [[ $mode == cluster ]] && connect_runs cluster1
            ;;
        esac
    done
    if [[ $mode == cluster ]]; then kill "$ETCD_PID"; wait "$ETCD_PID" 2>/dev/null; fi
done

echo "ringmq cluster figures ($(nproc) cores; brokers on core $BCPU, etcd on core $ECPU, generator on core $GCPU)"
echo "single = one ringmq --workers 1; cluster = $NODES nodes --workers 1 + etcd $(etcd --version | head -1 | awk '{print $3}')"
echo
if [[ " $ONLY " == *" p2p "* ]]; then
echo "1. ringmq-load ${P2P[*]} (cluster: every pair crosses nodes)"
for mode in single cluster; do
    read -r bt et <"$WORK/$mode-p2p.cpu"
    recv=$(j "$mode-p2p" "['received']")
    lost=$(j "$mode-p2p" "['lost']")
    dup=$(j "$mode-p2p" "['duplicates']")
    nosub=$(j "$mode-p2p" "['acked_no_subscribers']")
    awk -v m="$mode" -v r="$recv" -v b="$bt" -v e="$et" -v t="$TCK" -v l="$lost" -v d="$dup" -v n="$nosub" \
        -v p50="$(j "$mode-p2p" "['latency_p50_us']")" -v p99="$(j "$mode-p2p" "['latency_p99_us']")" \
        'BEGIN { printf "   %-8s received %d (lost %d, dup %d, PUBACK 0x10 %d)  broker CPU %.2f s  etcd CPU %.2f s  %.0f msgs / broker CPU s  latency p50 %d us p99 %d us\n", m, r, l, d, n, b/t, e/t, (b > 0 ? r / (b/t) : 0), p50, p99 }'
done
awk -v a="$(j single-p2p "['received']")" -v ab="$(cut -d' ' -f1 "$WORK/single-p2p.cpu")" \
    -v c="$(j cluster-p2p "['received']")" -v cb="$(cut -d' ' -f1 "$WORK/cluster-p2p.cpu")" \
    'BEGIN { if (ab > 0 && cb > 0) printf "   cluster / single msgs per broker CPU s: %.2f\n", (c/cb) / (a/ab) }'
echo
fi
if [[ " $ONLY " == *" takeover "* ]]; then
echo "2. ringmq-load ${TAKEOVER[*]} (cluster: each new connection on another node)"
for mode in single cluster; do
    read -r bt et <"$WORK/$mode-takeover.cpu"
    echo "   $mode: take-over p50 $(j "$mode-takeover" "['takeover_p50_us']") us p99 $(j "$mode-takeover" "['takeover_p99_us']") us max $(j "$mode-takeover" "['takeover_max_us']") us; new connections $(j "$mode-takeover" "['takeover_count']") of $STORM; old got 0x8E $(j "$mode-takeover" "['old_disconnect_0x8e']"); connack errors $(j "$mode-takeover" "['connack_errors']"); broker CPU $(awk -v b="$bt" -v t="$TCK" 'BEGIN{printf "%.2f", b/t}') s, etcd CPU $(awk -v b="$et" -v t="$TCK" 'BEGIN{printf "%.2f", b/t}') s"
done
echo
fi
if [[ " $ONLY " == *" connect "* ]]; then
echo "3. ringmq-load ${CONNECT[*]} (cluster1: one node of a cluster, with etcd)"
for mode in single cluster1 cluster; do
    read -r bt et <"$WORK/$mode-connect.cpu"
    rates=$(sort -n "$WORK/$mode-rates" | tr '\n' ' ')
    median=$(sort -n "$WORK/$mode-rates" | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
    echo "   $mode: CONNACKs/s of $REPEAT runs: $rates(median $median); last run: $(j "$mode-connect" "['connects']") of $CONNS connected, $(j "$mode-connect" "['connect_rate']" | cut -d. -f1) CONNACKs/s, connect p99 $(j "$mode-connect" "['connect_p99_us']") us, errors $(j "$mode-connect" "['connect_errors']")+$(j "$mode-connect" "['connack_errors']"); broker CPU $(awk -v b="$bt" -v t="$TCK" 'BEGIN{printf "%.2f", b/t}') s, etcd CPU $(awk -v b="$et" -v t="$TCK" 'BEGIN{printf "%.2f", b/t}') s"
done
echo "   per node (cluster):"
python3 - "$WORK/cluster-connect.json" <<'PY'
import json, sys
for h in json.load(open(sys.argv[1]))["hosts"]:
    print(f"     {h['host']}: {h['connects']} connects, {h['connect_rate']:.0f} CONNACKs/s, connect p99 {h['connect_p99_us']} us")
PY
fi
