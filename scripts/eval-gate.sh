#!/usr/bin/env bash
# The eval gate CI runs: compile the training data; gate the retrieval on every held-out turn
# with no LLM (`persona eval --retrieval --gate`: knn must beat random_k); start the local LLM if
# needed, and run `persona eval --gate` on a fixed subset small enough for 2 cores. The report goes to
# ${PERSONA_EVAL_REPORT:-a temporary directory}; eval/report/ holds the last one committed.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-assets.sh >/dev/null
cargo build --locked --quiet
persona="${CARGO_TARGET_DIR:-target}/debug/persona"
work="$(mktemp -d)"
started=0
if ! bash scripts/llm.sh status >/dev/null 2>&1; then
  bash scripts/llm.sh start >/dev/null
  started=1
fi
cleanup() { if [ "$started" = 1 ]; then bash scripts/llm.sh stop >/dev/null 2>&1 || true; fi; rm -rf "$work"; }
trap cleanup EXIT
PERSONA_LLM_BASE_URL="$(bash scripts/llm.sh url)"
export PERSONA_LLM_BASE_URL
"$persona" compile training_data/conversations.json -o "$work/persona.bin" >&2
"$persona" eval --artifact "$work/persona.bin" --retrieval --gate
"$persona" eval --artifact "$work/persona.bin" --limit 12 --systems "${PERSONA_EVAL_SYSTEMS:-zero_shot,knn}" \
  --gate --report "${PERSONA_EVAL_REPORT:-$work/report}"
