#!/usr/bin/env bash
# Load run of `persona serve` against a stand-in instant LLM (eval/bench/instant_llm.py), so the
# figures measure persona's own work per request: input filter, embedding the query, HNSW search,
# prompt rendering, the output filter (with its semantic check) and two SQLite commits.
# Needs wrk (apt-get install wrk) and a release build; everything runs on 127.0.0.1 and stops
# by itself.
#
#   bash eval/bench/serve-load.sh [seconds] [connections]
set -euo pipefail
cd "$(dirname "$0")/../.."
seconds="${1:-20}"
connections="${2:-8}"
command -v wrk >/dev/null || { echo "serve-load: wrk is not installed (apt-get install wrk)" >&2; exit 1; }
cargo build --release --locked --quiet
persona="${CARGO_TARGET_DIR:-target}/release/persona"
work="$(mktemp -d)"
llm_port=18081
serve_port=18082
python3 eval/bench/instant_llm.py "$llm_port" & llm_pid=$!
cleanup() { kill "$llm_pid" "${serve_pid:-}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
"$persona" compile training_data/conversations.json -o "$work/persona.bin" >/dev/null 2>&1
"$persona" serve --artifact "$work/persona.bin" --addr "127.0.0.1:$serve_port" --history "$work/h.sqlite3" \
  --llm-url "http://127.0.0.1:$llm_port/v1" --rate-per-minute 100000 --max-queue 1024 --llm-concurrency 64 \
  2>"$work/serve.log" & serve_pid=$!
for _ in $(seq 1 100); do curl -fs "http://127.0.0.1:$serve_port/healthz" >/dev/null 2>&1 && break; sleep 0.1; done
echo "wrk: ${seconds}s, ${connections} connections, 2 threads, POST /v1/reply (stand-in LLM answers instantly)"
wrk -t2 -c"$connections" -d"${seconds}s" --latency -s eval/bench/reply.lua "http://127.0.0.1:$serve_port"
