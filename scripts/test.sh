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
cargo test --locked "$@"
