#!/usr/bin/env bash
# The test command: installs the assets (pinned, idempotent), starts the local LLM if it is not
# already running, runs the whole test suite, and stops the LLM again if it started it.
#
#   bash scripts/test.sh [cargo test arguments...]
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup-assets.sh
started=0
if ! bash scripts/llm.sh status >/dev/null 2>&1; then
  bash scripts/llm.sh start >/dev/null
  started=1
fi
stop_llm() { if [ "$started" = 1 ]; then bash scripts/llm.sh stop >/dev/null 2>&1 || true; fi; }
trap stop_llm EXIT
PERSONA_LLM_BASE_URL="$(bash scripts/llm.sh url)"
export PERSONA_LLM_BASE_URL
log="$(mktemp)"
trap 'stop_llm; rm -f "$log"' EXIT
status=0
cargo test --locked "$@" 2>&1 | tee "$log" || status=$?
# One closing line over every test binary, so the total is not hidden behind the last binary's.
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
exit "$status"
