#!/usr/bin/env bash
# The QoS 0 burst of issue #15, against ringmq (release build) and Mosquitto (Debian):
# `mosquitto_pub -l` pushes N QoS 0 messages (one per line of a file) into `tp/x` while SUBS
# `mosquitto_sub -t 'tp/#'` subscribers count what arrives. Prints, per broker, the messages
# delivered out of N x SUBS (and ringmq's drop counters).
#
# Usage: [BROKERS="ringmq mosquitto"] [WORKERS=2] [RINGMQ=path] [RINGMQ_ARGS="..."] \
#        scripts/slow-consumers.sh [N=200000] [SUBS=4]
# Both brokers listen on 127.0.0.1 on a free port (ringmq: port 0, read back from its log;
# Mosquitto: a port bound and released right before it starts). Traffic stays on loopback.
# Subscribers are ready when each has received a probe on `tp/ready`; the count is taken once
# every subscriber has all N or none received anything for 5 s.
set -euo pipefail
N=${1:-200000}
SUBS=${2:-4}
WORKERS=${WORKERS:-2}
BROKERS=${BROKERS:-"ringmq mosquitto"}
cd "$(dirname "$0")/.."
OUT=${OUT:-${CARGO_TARGET_DIR:-target}/slow-consumers}
mkdir -p "$OUT"
for t in mosquitto mosquitto_pub mosquitto_sub; do
  command -v "$t" >/dev/null || { echo "$t not installed: apt-get install mosquitto mosquitto-clients" >&2; exit 1; }
done
if [ -z "${RINGMQ:-}" ] && [[ " $BROKERS " == *" ringmq "* ]]; then
  cargo build --release -q --bin ringmq -p ringmq
  RINGMQ=${CARGO_TARGET_DIR:-target}/release/ringmq
fi

seq -f "msg-%06g" 1 "$N" > "$OUT/lines.txt"

PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

. scripts/lib.sh # free_port, cpu_ticks, wait_port
count() { grep -c '^msg-' "$1" || true; }

# Wait until broker `$1` on port `$2` delivers a probe to every subscriber.
wait_ready() {
  local port=$1 i k ok
  for i in $(seq 1 100); do
    mosquitto_pub -h 127.0.0.1 -p "$port" -t tp/ready -m ready -q 0 2>/dev/null || true
    ok=1
    for k in $(seq 1 "$SUBS"); do grep -q '^ready$' "$OUT/sub$k.txt" || ok=0; done
    [ "$ok" = 1 ] && return 0
    sleep 0.1
  done
  echo "subscribers not ready on port $port" >&2
  return 1
}

# Run the burst against the broker listening on port `$1`; prints the delivered total.
burst() {
  local port=$1 k subs=() last=-1 same=0 total
  for k in $(seq 1 "$SUBS"); do
    : > "$OUT/sub$k.txt"
    stdbuf -oL mosquitto_sub -h 127.0.0.1 -p "$port" -t 'tp/#' -q 0 > "$OUT/sub$k.txt" &
    subs+=($!)
  done
  PIDS+=("${subs[@]}")
  wait_ready "$port"
  mosquitto_pub -h 127.0.0.1 -p "$port" -t tp/x -q 0 -l < "$OUT/lines.txt"
  # Until everything arrived, or nothing moved for 5 s.
  while :; do
    total=0
    for k in $(seq 1 "$SUBS"); do total=$((total + $(count "$OUT/sub$k.txt"))); done
    [ "$total" -ge $((N * SUBS)) ] && break
    if [ "$total" = "$last" ]; then same=$((same + 1)); else same=0; fi
    [ "$same" -ge 50 ] && break
    last=$total
    sleep 0.1
  done
  kill "${subs[@]}" 2>/dev/null || true
  wait "${subs[@]}" 2>/dev/null || true
  local per=""
  for k in $(seq 1 "$SUBS"); do per="$per $(count "$OUT/sub$k.txt")"; done
  echo "$total ($per )"
}

if [[ " $BROKERS " == *" ringmq "* ]]; then
  # shellcheck disable=SC2086
  "$RINGMQ" --listen 127.0.0.1:0 --workers "$WORKERS" --metrics-listen 127.0.0.1:0 \
    ${RINGMQ_ARGS:-} 2> "$OUT/ringmq.log" &
  RPID=$!
  PIDS+=("$RPID")
  for _ in $(seq 1 100); do
    grep -q 'metrics on' "$OUT/ringmq.log" && break
    sleep 0.1
  done
  port=$(sed -n 's/.*listening on 127\.0\.0\.1:\([0-9]*\).*/\1/p' "$OUT/ringmq.log" | head -1)
  maddr=$(sed -n 's#.*metrics on http://\([0-9.:]*\)/metrics.*#\1#p' "$OUT/ringmq.log" | head -1)
  [ -n "$port" ] || { echo "ringmq did not start:" >&2; cat "$OUT/ringmq.log" >&2; exit 1; }
  got=$(burst "$port")
  drops=$(python3 - "$maddr" <<'PY'
import sys, urllib.request
text = urllib.request.urlopen("http://%s/metrics" % sys.argv[1], timeout=5).read().decode()
out = []
for line in text.splitlines():
    if line.startswith("#"):
        continue
    name, _, value = line.rpartition(" ")
    base = name.split("{")[0].removeprefix("ringmq_")
    if ("drops" in base or base.startswith("qos0_queued")) and float(value) != 0:
        out.append("%s=%d" % (base, float(value)))
print(" ".join(out) or "no drops")
PY
)
  printf 'ringmq     (%s workers) delivered %s of %s to %s subscribers; %s\n' \
    "$WORKERS" "$got" "$((N * SUBS))" "$SUBS" "$drops" | tee "$OUT/ringmq.txt"
  kill -INT "$RPID"; wait "$RPID" 2>/dev/null || true
fi

if [[ " $BROKERS " == *" mosquitto "* ]]; then
  mport=$(free_port)
  printf 'listener %s 127.0.0.1\nallow_anonymous true\n' "$mport" > "$OUT/mosquitto.conf"
  mosquitto -c "$OUT/mosquitto.conf" 2> "$OUT/mosquitto.log" &
  MPID=$!
  PIDS+=("$MPID")
  for _ in $(seq 1 100); do
    mosquitto_pub -h 127.0.0.1 -p "$mport" -t tp/start -m x -q 0 2>/dev/null && break
    sleep 0.1
  done
  got=$(burst "$mport")
  printf 'mosquitto  delivered %s of %s to %s subscribers\n' "$got" "$((N * SUBS))" "$SUBS" \
    | tee "$OUT/mosquitto.txt"
  kill "$MPID"; wait "$MPID" 2>/dev/null || true
fi
