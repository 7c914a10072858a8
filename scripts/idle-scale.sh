#!/usr/bin/env bash
# Idle-connection scale test (not part of cargo test).
#
# Opens N idle MQTT connections with keep-alive from many 127.0.0.x source addresses using the
# bundled generator, holds them for HOLD seconds, and reports for each broker:
#   - CONNECT+CONNACK rate (from the generator's JSON),
#   - broker RSS per idle connection: average ((RSS loaded - RSS empty) / N) and marginal
#     ((RSS at N - RSS at N/2) / (N/2)),
#   - broker CPU while idle (CPU-seconds over the hold period, from /proc/PID/stat).
# Brokers: ringmq (release build) and Mosquitto from Debian's package, same N, same run.
#
# Usage: [RAMP=conns/s, 0 = burst] [THREADS=2] [BROKERS="ringmq mosquitto"] \
#        scripts/idle-scale.sh [N=19000] [HOLD=120] [WORKERS=2]
# 100k against ringmq alone: BROKERS=ringmq THREADS=4 scripts/idle-scale.sh 100000 60 8
# connect_rate = connections / (first connect attempt .. last CONNACK), capped by RAMP;
# connect_cpu_s = broker CPU-seconds spent while the connections were being opened.
# The open-file limit here is 20,000 and cannot be raised: Mosquitto needs one fd per
# connection, so N stays below that for the comparison; ringmq uses io_uring direct descriptors
# (not in the fd table) and can go further with more workers (see docs/performance.md).
set -euo pipefail
N=${1:-19000}
HOLD=${2:-120}
WORKERS=${3:-2}
KEEPALIVE=60
RAMP=${RAMP:-0}
# Generator threads (one io_uring each) per generator process; each ring's fixed-file table is
# capped by the 20,000 open-file limit, so N/2/THREADS must stay below it.
THREADS=${THREADS:-2}
BROKERS=${BROKERS:-"ringmq mosquitto"}
PORT_R=18831
PORT_M=18832
SOURCES=127.0.0.2-127.0.0.41
cd "$(dirname "$0")/.."
OUT=${OUT:-target/idle-scale}
mkdir -p "$OUT"

cargo build --release -q --bin ringmq -p ringmq
cargo build --release -q -p ringmq-load
RINGMQ=target/release/ringmq
LOAD=target/release/ringmq-load
command -v mosquitto >/dev/null || { echo "mosquitto not installed: apt-get install mosquitto" >&2; exit 1; }

rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
. scripts/lib.sh # free_port, cpu_ticks, wait_port
established() { ss -Htn state established "( sport = :$1 )" | wc -l; }
TCK=$(getconf CLK_TCK)

run_one() { # name port pid
  local name=$1 port=$2 pid=$3
  sleep 1
  local rss0 cs0; rss0=$(rss_kib "$pid"); cs0=$(cpu_ticks "$pid")
  # Two generator processes of N/2 each (own client ids and source addresses), so the RSS
  # slope between N/2 and N gives the marginal cost of one more idle connection, free of
  # start-up and allocator warm-up. Each runs until interrupted (SIGINT writes its JSON).
  local half=$((N / 2)) lpids=() k
  for k in 0 1; do
    local cnt=$half src=127.0.0.2-127.0.0.21
    [ "$k" = 1 ] && cnt=$((N - half)) && src=127.0.0.22-127.0.0.41
    "$LOAD" conn --host 127.0.0.1 --port "$port" --clients "$cnt" --ramp "$RAMP" --keepalive "$KEEPALIVE" \
      --source "$src" --prefix "idle$k-" --threads "$THREADS" --duration "$((HOLD + 900))s" \
      --json "$OUT/$name-conn$k.json" 2> "$OUT/$name-load$k.log" &
    lpids+=($!)
    # Wait until this batch is established (bounded: 180 s).
    local want=$half; [ "$k" = 1 ] && want=$N
    for _ in $(seq 1 1800); do
      [ "$(established "$port")" -ge "$want" ] && break
      sleep 0.1
    done
    if [ "$k" = 0 ]; then
      sleep 2
      local rh uh; rh=$(rss_kib "$pid"); uh=$(established "$port")
    fi
  done
  local up; up=$(established "$port")
  local cs1; cs1=$(cpu_ticks "$pid")
  sleep 2
  local c0 r1; c0=$(cpu_ticks "$pid"); r1=$(rss_kib "$pid")
  sleep "$HOLD"
  local c1 r2 up2; c1=$(cpu_ticks "$pid"); r2=$(rss_kib "$pid"); up2=$(established "$port")
  kill -INT "${lpids[@]}" 2>/dev/null || true
  wait "${lpids[@]}" 2>/dev/null || true
  local per; per=$(( (r2 - rss0) * 1024 / (up > 0 ? up : 1) ))
  local marg; marg=$(( (r1 - rh) * 1024 / (up - uh > 0 ? up - uh : 1) ))
  local cpu; cpu=$(awk -v a="$c0" -v b="$c1" -v t="$TCK" -v h="$HOLD" 'BEGIN {printf "%.3f", (b-a)/t/h*100}')
  local ccpu; ccpu=$(awk -v a="$cs0" -v b="$cs1" -v t="$TCK" 'BEGIN {printf "%.2f", (b-a)/t}')
  # Connect rate and latency of the first batch (the broker was otherwise idle).
  local rate; rate=$(python3 -c "import json; d=json.load(open('$OUT/$name-conn0.json')); print('%.0f' % d['connect_rate'], '%.0f' % d['connect_p50_us'], '%.0f' % d['connect_p99_us'])" 2>/dev/null || echo '? ? ?')
  set -- $rate
  printf '%-10s conns=%-6s after_hold=%-6s rss_empty=%sKiB rss_half=%sKiB rss_loaded=%sKiB bytes/conn(avg)=%-5s bytes/conn(marginal)=%-5s idle_cpu=%s%% connect_rate=%s/s connect_p50=%sus connect_p99=%sus connect_cpu_s=%s\n' \
    "$name" "$up" "$up2" "$rss0" "$rh" "$r2" "$per" "$marg" "$cpu" "$1" "$2" "$3" "$ccpu" | tee -a "$OUT/summary.txt"
}

: > "$OUT/summary.txt"
echo "N=$N HOLD=${HOLD}s WORKERS=$WORKERS keepalive=$KEEPALIVE ramp=$RAMP sources=$SOURCES" | tee -a "$OUT/summary.txt"

trap 'kill ${RPID:-0} 2>/dev/null || true; kill ${MPID:-0} 2>/dev/null || true' EXIT
if [[ " $BROKERS " == *" ringmq "* ]]; then
"$RINGMQ" --listen 127.0.0.1:$PORT_R --workers "$WORKERS" --max-connections-per-worker 19000 \
  2> "$OUT/ringmq.log" &
RPID=$!
run_one ringmq $PORT_R $RPID
kill -INT $RPID; wait $RPID 2>/dev/null || true
fi
if [[ " $BROKERS " == *" mosquitto "* ]]; then

cat > "$OUT/mosquitto.conf" <<CONF
listener $PORT_M 127.0.0.1
allow_anonymous true
max_keepalive 65535
CONF
mosquitto -c "$OUT/mosquitto.conf" 2> "$OUT/mosquitto.log" &
MPID=$!
run_one mosquitto $PORT_M $MPID
kill $MPID; wait $MPID 2>/dev/null || true
fi
echo "summary in $OUT/summary.txt"
