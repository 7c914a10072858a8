#!/usr/bin/env bash
# A million idle MQTT connections on this machine, end to end (not part of cargo test).
#
#   scripts/million.sh [N=1000000] [HOLD=120]
#
# 1. tunes the host (scripts/tune-host.sh: ephemeral ports, somaxconn, ...; needs root),
# 2. starts `ringmq --listen 127.0.0.1:PORT --workers 2` (no other flag: the engine opens as
#    many io_uring fixed-file tables as RLIMIT_NOFILE requires, by itself),
# 3. opens N connections (keep-alive 60 s, clean session; the generator sends PINGREQ every
#    30 s) with `ringmq-load conn` from 40 source addresses 127.0.0.2-127.0.0.41, in GENS
#    generator processes,
# 4. holds them HOLD seconds, then prints: connections held at the start and end of the hold,
#    connect errors and closes seen by the generators (a broker-side close shows up there),
#    broker RSS empty and loaded, bytes per connection = (loaded - empty) / N, kernel slab
#    memory before and loaded (and per connection), broker CPU while idle, and CONNACKs per
#    second during the ramp;
# 5. does the same for Mosquitto as far as its one-fd-per-connection cap lets it (MOSQ_N,
#    default 19,000: the open-file limit here is 20,000 and cannot be raised). MOSQ_N=0 skips.
#
# Bounded: every wait has a deadline; the generators stop by themselves (--duration).
# Afterwards the host keeps scripts/tune-host.sh's settings: its ephemeral port range
# (1024-65535) lets outgoing connections take ports that fixed-port scripts such as
# scripts/bench.sh listen on; `sysctl -w net.ipv4.ip_local_port_range="32768 60999"` restores it.
set -euo pipefail
N=${1:-1000000}
HOLD=${2:-120}
GENS=${GENS:-2}
# Generator threads per process (one io_uring engine each).
THREADS=${THREADS:-2}
MOSQ_N=${MOSQ_N:-19000}
# Connections per second offered by all generators together (0 = as fast as they can: a
# burst that overflows any accept queue and shows up as SYN retries).
RAMP=${RAMP:-15000}
KEEPALIVE=60
cd "$(dirname "$0")/.."
OUT=${OUT:-target/million}
mkdir -p "$OUT"
rm -f "$OUT"/*.json "$OUT"/*.log
: > "$OUT/summary.txt"

if [ "$(id -u)" = 0 ]; then
  scripts/tune-host.sh > "$OUT/tune-host.log" 2>&1 || true
else
  echo "not root: host not tuned (see scripts/tune-host.sh)" | tee -a "$OUT/summary.txt"
fi
cargo build --release -q --bin ringmq -p ringmq
cargo build --release -q -p ringmq-load
RINGMQ=target/release/ringmq
LOAD=target/release/ringmq-load

rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
. scripts/lib.sh # free_port, cpu_ticks, wait_port
slab_kib() { awk '/^Slab:/ {print $2}' /proc/meminfo; }
established() { ss -Htn state established "( sport = :$1 )" | wc -l; }
# Connections the broker holds: its own gauge for ringmq (ss over a million sockets costs a
# core for seconds), ss for Mosquitto.
current() { # name port
  if [ "$1" = ringmq ]; then
    curl -s "http://$METRICS/metrics" | awk '$1 == "ringmq_connections_current" {print $2; f=1} END {if (!f) print 0}'
  else
    established "$2"
  fi
}
TCK=$(getconf CLK_TCK)

# Source address ranges: 40 addresses split between the generator processes.
src_range() { # k of GENS
  local per=$((40 / GENS)) a b
  a=$((2 + $1 * per)); b=$((a + per - 1))
  echo "127.0.0.$a-127.0.0.$b"
}

run_one() { # name port pid n
  local name=$1 port=$2 pid=$3 n=$4
  sleep 1
  local rss0 slab0; rss0=$(rss_kib "$pid"); slab0=$(slab_kib)
  local lpids=() k per=$((n / GENS))
  for ((k = 0; k < GENS; k++)); do
    local cnt=$per; [ "$k" = $((GENS - 1)) ] && cnt=$((n - per * (GENS - 1)))
    "$LOAD" conn --host 127.0.0.1 --port "$port" --clients "$cnt" --ramp "$((RAMP / GENS))" --keepalive "$KEEPALIVE" \
      --source "$(src_range "$k")" --prefix "m$k-" --threads "$THREADS" \
      --duration "$((HOLD + 600))s" --json "$OUT/$name-conn$k.json" 2> "$OUT/$name-load$k.log" &
    lpids+=($!)
  done
  # Wait (at most 600 s) until all N are established on the broker's port, or until the
  # count has not moved for 20 s.
  local now_up=0 last=0 still=0
  for _ in $(seq 1 300); do
    sleep 2
    now_up=$(current "$name" "$port")
    [ "$now_up" -ge "$n" ] && break
    if [ "$now_up" = "$last" ]; then still=$((still + 1)); else still=0; last=$now_up; fi
    [ "$still" -ge 10 ] && break
    for p in "${lpids[@]}"; do kill -0 "$p" 2>/dev/null || { echo "generator $p exited early" >&2; break 2; }; done
  done
  local up; up=$(established "$port")
  sleep 5
  local c0 r1 slab1; c0=$(cpu_ticks "$pid"); r1=$(rss_kib "$pid"); slab1=$(slab_kib)
  sleep "$HOLD"
  local c1 r2 up2; c1=$(cpu_ticks "$pid"); r2=$(rss_kib "$pid"); up2=$(established "$port")
  if [ -n "${METRICS:-}" ] && [ "$name" = ringmq ]; then
    # Broker-side closes and refusals, summed over workers (Prometheus text format).
    curl -s "http://$METRICS/metrics" 2>/dev/null | awk '/^ringmq_(connections_current|connections_refused|keepalive_expired|connect_timeouts|protocol_errors|accept_errors|io_rings)[{ ]/ {split($1,a,"{"); v[a[1]]+=$2} END {for (k in v) printf "  %s=%d\n", k, v[k]}' | sort | tee -a "$OUT/summary.txt"
  fi
  kill -INT "${lpids[@]}" 2>/dev/null || true
  wait "${lpids[@]}" 2>/dev/null || true
  local errs closed gen_rate
  errs=$(python3 -c "import json,sys; print(sum(json.load(open(f)).get('connect_errors',0) for f in sys.argv[1:]))" "$OUT/$name"-conn*.json 2>/dev/null || echo '?')
  closed=$(python3 -c "import json,sys; print(sum(json.load(open(f)).get('closed',0) for f in sys.argv[1:]))" "$OUT/$name"-conn*.json 2>/dev/null || echo '?')
  # The generators start together: CONNACKs per second = connections / the longest window
  # from a generator's first connect to its last CONNACK.
  gen_rate=$(python3 -c "
import json,sys
d=[json.load(open(f)) for f in sys.argv[1:]]
print('%.0f' % (sum(x.get('connects',0) for x in d)/max(x.get('connect_window_s',0) for x in d)))" "$OUT/$name"-conn*.json 2>/dev/null || echo '?')
  local per_conn; per_conn=$(( (r2 - rss0) * 1024 / (up > 0 ? up : 1) ))
  local slab_per; slab_per=$(( (slab1 - slab0) * 1024 / (up > 0 ? up : 1) ))
  local cpu; cpu=$(awk -v a="$c0" -v b="$c1" -v t="$TCK" -v h="$HOLD" 'BEGIN {printf "%.2f", (b-a)/t/h*100}')
  printf '%-10s planned=%s held=%s held_after_%ss=%s connect_errors=%s closed=%s rss_empty=%sKiB rss_loaded=%sKiB bytes/conn=%s slab_before=%sKiB slab_loaded=%sKiB slab/conn=%sB idle_cpu=%s%% connacks/s=%s\n' \
    "$name" "$n" "$up" "$HOLD" "$up2" "$errs" "$closed" "$rss0" "$r2" "$per_conn" "$slab0" "$slab1" "$slab_per" "$cpu" "$gen_rate" \
    | tee -a "$OUT/summary.txt"
}

echo "N=$N HOLD=${HOLD}s generators=${GENS}x${THREADS} ramp=$RAMP/s keepalive=$KEEPALIVE $(uname -r) $(nproc) cores" | tee -a "$OUT/summary.txt"
trap 'kill ${RPID:-0} ${MPID:-0} 2>/dev/null || true' EXIT

PORT=$(free_port)
# --metrics-listen only lets the script read the broker's own counters (closes, refusals,
# rings); it changes nothing else.
METRICS=127.0.0.1:$(free_port)
"$RINGMQ" --listen "127.0.0.1:$PORT" --workers 2 --metrics-listen "$METRICS" 2> "$OUT/ringmq.log" &
RPID=$!
run_one ringmq "$PORT" "$RPID" "$N"
kill -INT $RPID; wait $RPID 2>/dev/null || true

if [ "$MOSQ_N" -gt 0 ] && command -v mosquitto >/dev/null; then
  PORT=$(free_port)
  cat > "$OUT/mosquitto.conf" <<CONF
listener $PORT 127.0.0.1
allow_anonymous true
max_keepalive 65535
CONF
  mosquitto -c "$OUT/mosquitto.conf" 2> "$OUT/mosquitto.log" &
  MPID=$!
  run_one mosquitto "$PORT" "$MPID" "$MOSQ_N"
  kill $MPID; wait $MPID 2>/dev/null || true
fi
echo "summary in $OUT/summary.txt"
