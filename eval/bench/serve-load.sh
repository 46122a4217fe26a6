#!/usr/bin/env bash
# Load run of `persona serve` against a stand-in instant LLM (eval/reliability/standin_llm.py), so the
# figures measure persona's own work per request: safety, mood and input checks, embedding the
# query, HNSW search, prompt rendering, the output filter and the history commit.
# Then the ceiling in the same run: raw batched embeddings/s (benches/embed.rs) divided by the
# texts the model embedded per request (the server's /healthz counters), and the ratio of the
# measured requests/s to it. Needs wrk (apt-get install wrk) and a release build; everything
# runs on 127.0.0.1 and stops by itself.
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
python3 eval/reliability/standin_llm.py "$llm_port" --mode instant & llm_pid=$!
cleanup() { kill "$llm_pid" "${serve_pid:-}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
"$persona" compile training_data/conversations.json -o "$work/persona.bin" >/dev/null 2>&1
"$persona" serve --artifact "$work/persona.bin" --addr "127.0.0.1:$serve_port" --history "$work/h.sqlite3" \
  --llm-url "http://127.0.0.1:$llm_port/v1" --rate-per-minute 100000 --client-rate-per-minute 100000000 \
  --max-queue 1024 --llm-concurrency 64 2>"$work/serve.log" & serve_pid=$!
for _ in $(seq 1 100); do curl -fs "http://127.0.0.1:$serve_port/healthz" >/dev/null 2>&1 && break; sleep 0.1; done
embedded() { curl -fs "http://127.0.0.1:$serve_port/healthz" | python3 -c 'import json,sys; print(json.load(sys.stdin)["creators"][0]["embedding_counters"]["texts_embedded"])'; }
before="$(embedded)"
echo "wrk: ${seconds}s, ${connections} connections, 2 threads, POST /v1/reply (stand-in LLM answers instantly)"
wrk -t2 -c"$connections" -d"${seconds}s" --latency -s eval/bench/reply.lua "http://127.0.0.1:$serve_port" | tee "$work/wrk.txt"
after="$(embedded)"
kill "$serve_pid"; wait "$serve_pid" 2>/dev/null || true; serve_pid=
echo "raw embedding rate (cargo bench --bench embed), same machine, same run:"
cargo bench --locked --quiet --bench embed 2>/dev/null | tee "$work/embed.txt"
python3 - "$work/wrk.txt" "$work/embed.txt" "$before" "$after" <<'PY'
import re, sys
wrk, embed, before, after = open(sys.argv[1]).read(), open(sys.argv[2]).read(), int(sys.argv[3]), int(sys.argv[4])
requests = int(re.search(r"(\d+) requests in", wrk).group(1))
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", wrk).group(1))
errors = re.search(r"Non-2xx or 3xx responses: (\d+)", wrk)
batched = float(re.search(r"batched_per_s=([\d.]+)", embed).group(1))
per_request = (after - before) / max(requests, 1)
ceiling = batched / per_request if per_request else float("inf")
print(f"requests/s {rps:.1f} ({requests} requests, {errors.group(1) if errors else 0} non-2xx)")
print(f"texts embedded per request {per_request:.2f}; raw batched embeddings/s {batched:.1f}")
print(f"embedding-bound ceiling {ceiling:.1f} requests/s; measured/ceiling {rps / ceiling:.2f}")
PY
