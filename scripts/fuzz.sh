#!/usr/bin/env bash
# Runs the `decode` fuzz target for the given number of seconds (default 60).
# Usage: scripts/fuzz.sh [SECONDS] [extra libFuzzer args...]
# Needs cargo-fuzz (`cargo install cargo-fuzz`) and a nightly toolchain; on stable only,
# RUSTC_BOOTSTRAP=1 is used instead.
set -euo pipefail
secs="${1:-60}"
shift || true
cd "$(dirname "$0")/.."
if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
    tc=(+nightly)
else
    tc=()
    export RUSTC_BOOTSTRAP=1
fi
# Run on a scratch copy of the seed corpus so the committed corpus stays small.
work="${FUZZ_WORK_CORPUS:-fuzz/target/corpus-decode}"
mkdir -p "$work"
# The codec has no unsafe code: by default no sanitizer (much faster), but optimized with debug
# assertions and overflow checks. FUZZ_SANITIZER=address to turn ASan on.
args=(-O -a -s "${FUZZ_SANITIZER:-none}")
if [ -n "${CARGO_TARGET_DIR:-}" ]; then
    args+=(--target-dir "$CARGO_TARGET_DIR/fuzz")
fi
exec cargo "${tc[@]}" fuzz run "${args[@]}" decode "$work" fuzz/corpus/decode -- \
    -max_total_time="$secs" -max_len=4096 "$@"
