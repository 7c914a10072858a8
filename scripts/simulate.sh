#!/usr/bin/env bash
# Long runs of the deterministic multi-worker simulation (src/sim.rs).
#
#   scripts/simulate.sh SECONDS [SEED] [STEPS_PER_SEED]
#
# Without SEED: consecutive seeds from a time-based start for SECONDS, STEPS_PER_SEED random
# steps each (default 3000), then the totals; the first failing seed is printed with the
# command that replays it. With SEED: that one seed (SECONDS is ignored; pass 0), and
# RINGMQ_SIM_TRACE=1 prints every step of it on stderr.
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-60}"
seed="${2:-}"
steps="${3:-3000}"
cargo build --release --example simulate >&2
RINGMQ_SIM_STEPS="$steps" exec "${CARGO_TARGET_DIR:-target}/release/examples/simulate" "$secs" ${seed:+"$seed"}
