#!/usr/bin/env bash
# The test command: installs the assets (pinned, idempotent), starts the local LLM and a
# throwaway PostgreSQL if they are not already running, runs the whole test suite, and stops
# whatever it started.
#
#   bash scripts/test.sh [cargo test arguments...]
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup-assets.sh
bash scripts/setup-sdk.sh >/dev/null
started=0
if ! bash scripts/llm.sh status >/dev/null 2>&1; then
  bash scripts/llm.sh start >/dev/null
  started=1
fi
pg_started=0
if ! bash scripts/pg.sh status >/dev/null 2>&1; then
  bash scripts/pg.sh start >/dev/null
  pg_started=1
fi
stop_all() {
  if [ "$started" = 1 ]; then bash scripts/llm.sh stop >/dev/null 2>&1 || true; fi
  if [ "$pg_started" = 1 ]; then bash scripts/pg.sh stop >/dev/null 2>&1 || true; fi
}
trap stop_all EXIT
PERSONA_LLM_BASE_URL="$(bash scripts/llm.sh url)"
PERSONA_TEST_POSTGRES_URL="$(bash scripts/pg.sh url)"
export PERSONA_LLM_BASE_URL PERSONA_TEST_POSTGRES_URL
log="$(mktemp)"
trap 'stop_all; rm -f "$log"' EXIT
status=0
cargo test --locked "$@" 2>&1 | tee "$log" || status=$?
# One closing line over every test binary, so the total is not hidden behind the last binary's.
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
exit "$status"
