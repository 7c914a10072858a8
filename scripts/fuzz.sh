#!/usr/bin/env bash
# Runs a fuzz target for the given number of seconds (default 60).
# Usage: [FUZZ_TARGET=decode|session|simulate] scripts/fuzz.sh [SECONDS] [extra libFuzzer args...]
#   FUZZ_TARGET  fuzz/fuzz_targets/<name>.rs to run (default `decode`, so `scripts/fuzz.sh 600`
#                behaves as it always did); its seed corpus is fuzz/corpus/<name>.
#   decode:  arbitrary bytes through both decoders, re-encode round trip.
#   session: the connection state machine driven by arbitrary packets, time steps and broker
#            calls, with its invariants asserted.
#   simulate: the multi-worker simulation (src/sim.rs) with its scheduler's choices taken
#            from the input.
# Needs cargo-fuzz (`cargo install cargo-fuzz`) and a nightly toolchain; on stable only,
# RUSTC_BOOTSTRAP=1 is used instead.
set -euo pipefail
secs="${1:-60}"
shift || true
target="${FUZZ_TARGET:-decode}"
cd "$(dirname "$0")/.."
if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
    tc=(+nightly)
else
    tc=()
    export RUSTC_BOOTSTRAP=1
fi
# Run on a scratch copy of the seed corpus so the committed corpus stays small.
work="${FUZZ_WORK_CORPUS:-fuzz/target/corpus-$target}"
mkdir -p "$work"
# The codec has no unsafe code: by default no sanitizer (much faster), but optimized with debug
# assertions and overflow checks. FUZZ_SANITIZER=address to turn ASan on.
args=(-O -a -s "${FUZZ_SANITIZER:-none}")
if [ -n "${CARGO_TARGET_DIR:-}" ]; then
    args+=(--target-dir "$CARGO_TARGET_DIR/fuzz")
fi
exec cargo "${tc[@]}" fuzz run "${args[@]}" "$target" "$work" "fuzz/corpus/$target" -- \
    -max_total_time="$secs" -max_len=4096 "$@"
