#!/usr/bin/env bash
# Subscription visibility across workers: how often a PUBLISH sent right after another
# client's SUBSCRIBE (before its SUBACK arrives) misses that subscriber, with the subscriber and
# the publisher on one worker (--workers 1) and on two different workers (--workers 2).
# See examples/visibility.rs for one trial; loopback only.
#
#   scripts/visibility.sh [TRIALS] [DELAYS_US] [PUB_VERSIONS] [MODES]
#
# Defaults: 5000 trials per case, delays "0 20 50 100 200" microseconds between the
# SUBSCRIBE write and the PUBLISH write, publisher "v5 v311", subscriptions "keep unsubscribe".
# Prints one line per case. PORT (default 19800) is the first port used.
set -euo pipefail
cd "$(dirname "$0")/.."
trials="${1:-5000}"
delays="${2:-0 20 50 100 200}"
versions="${3:-v5 v311}"
modes="${4:-keep unsubscribe}"
port="${PORT:-19800}"
target="${CARGO_TARGET_DIR:-target}"
cargo build --release --bin ringmq --example visibility >&2
broker=""
stop() { if [ -n "$broker" ]; then kill "$broker" 2>/dev/null || true; wait "$broker" 2>/dev/null || true; broker=""; fi; }
trap stop EXIT
for workers in 1 2; do
  base=$((port + 10))
  "$target/release/ringmq" --listen "127.0.0.1:$port" --workers "$workers" \
    --worker-port-base "$base" --no-pin >/dev/null 2>&1 &
  broker=$!
  for _ in $(seq 50); do
    (exec 3<>"/dev/tcp/127.0.0.1/$base") 2>/dev/null && break
    sleep 0.1
  done
  sub="127.0.0.1:$base"
  if [ "$workers" = 1 ]; then publ="127.0.0.1:$base"; else publ="127.0.0.1:$((base + 1))"; fi
  for mode in $modes; do
    for v in $versions; do
      for d in $delays; do
        printf 'workers=%s mode=%s publisher=%s delay_us=%s ' "$workers" "$mode" "$v" "$d"
        "$target/release/examples/visibility" "$sub" "$publ" "$trials" "$d" "$v" "$mode"
      done
    done
  done
  stop
  port=$((port + 20))
done
