#!/usr/bin/env bash
# Fuzzes persona's parsers and readers with cargo-fuzz (libFuzzer) on the nightly toolchain.
#
#   bash scripts/fuzz.sh [SECONDS_PER_TARGET]   # every target for that long (default 60)
#   bash scripts/fuzz.sh --smoke                # every target for 12 s, about a minute in all
#
# Installs the pinned cargo-fuzz if it is missing, builds the targets once, runs each one and
# prints one line per target: seconds, executions and crashes. Exits non-zero when a target
# crashed, after printing the saved crash input's path (reproduce it with
# `cargo +nightly fuzz run --sanitizer none <target> <path>`; then minimize it into
# tests/fuzz_regressions/, see fuzz/README.md).
#
# New corpus entries go to fuzz/scratch/<target>/ (git-ignored); the committed seeds in
# fuzz/corpus/<target>/ are only read. Targets, seeds and the build choice: fuzz/README.md.
set -euo pipefail

CARGO_FUZZ_VERSION=0.13.2
TARGETS=(dataset artifact filter reply_parser serve_bodies)
# No sanitizer: persona's only unsafe code is the read-only artifact map, whose views are
# bounds-checked; AddressSanitizer made the from-scratch build slower and the targets 3 to 6 times
# slower (measurements in fuzz/README.md). Release with debug assertions and overflow checks, so
# an overflow panics here too.
BUILD_FLAGS=(--sanitizer none --release --debug-assertions)

cd "$(dirname "$0")/.."

seconds=60
case "${1:-}" in
  --smoke) seconds=12 ;;
  "") ;;
  *[!0-9]* | 0)
    echo "usage: bash scripts/fuzz.sh [SECONDS_PER_TARGET | --smoke]" >&2
    exit 2
    ;;
  *) seconds=$1 ;;
esac

if ! cargo +nightly --version >/dev/null 2>&1; then
  echo "fuzz: the nightly toolchain is missing; install it with \`rustup toolchain install nightly\`" >&2
  exit 1
fi
if [ "$(cargo fuzz --version 2>/dev/null)" != "cargo-fuzz $CARGO_FUZZ_VERSION" ]; then
  echo "fuzz: installing cargo-fuzz $CARGO_FUZZ_VERSION" >&2
  start=$SECONDS
  cargo install cargo-fuzz --locked --version "$CARGO_FUZZ_VERSION" >&2
  echo "fuzz: installed cargo-fuzz in $((SECONDS - start)) s" >&2
fi

start=$SECONDS
cargo +nightly fuzz build "${BUILD_FLAGS[@]}" >&2
echo "fuzz: built ${#TARGETS[@]} targets in $((SECONDS - start)) s" >&2
bin=fuzz/target/$(rustc +nightly -vV | sed -n 's/^host: //p')/release

logs=fuzz/scratch/logs
mkdir -p "$logs"
failed=()
printf '%-14s %8s %12s %8s\n' target seconds executions crashes
for target in "${TARGETS[@]}"; do
  mkdir -p "fuzz/scratch/$target" "fuzz/artifacts/$target"
  log="$logs/$target.log"
  start=$SECONDS
  status=0
  # The binary built above, run directly: `cargo fuzz run` would rebuild whenever a source file
  # changed since. The scratch dir first: libFuzzer writes new inputs to the first one only.
  "$bin/$target" "fuzz/scratch/$target" "fuzz/corpus/$target" -max_total_time="$seconds" \
    -print_final_stats=1 -timeout=20 -artifact_prefix="fuzz/artifacts/$target/" >"$log" 2>&1 || status=$?
  took=$((SECONDS - start))
  executions=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
  crash=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -n 1)
  crashes=0
  if [ "$status" -ne 0 ] || [ -n "$crash" ]; then
    crashes=1
    failed+=("$target")
  fi
  printf '%-14s %8s %12s %8s\n' "$target" "$took" "${executions:-?}" "$crashes"
  if [ "$crashes" -ne 0 ]; then
    grep -m 1 -E 'panicked at|ERROR: libFuzzer|ERROR: AddressSanitizer' "$log" | sed 's/^/  /' || true
    echo "  crash input: ${crash:-none saved (exit $status)}; log: $log"
  fi
done

if [ "${#failed[@]}" -ne 0 ]; then
  echo "fuzz: ${#failed[@]} target(s) crashed: ${failed[*]}" >&2
  exit 1
fi
