#!/usr/bin/env bash
# Which local model should the demo and CI use? Runs `persona eval --systems knn` on every
# held-out turn (or the first --limit) once per local model and sampling setting, each against
# its own llama.cpp server (scripts/llm_server.py, one thread, started and stopped here on a
# free port), and prints one row per run: voice fidelity with its interval, style, semantic,
# copy rate, violations of the first draft (before the filter) and of the final reply, and
# LLM seconds per reply: llama.cpp's own prompt and generation timings from the server log,
# summed over the run (filter redrafts included) and divided by the turns.
#
#   bash eval/bench/models.sh [--limit N] [--out DIR]
#
#   --limit N  score only the first N held-out turns (default: all)
#   --out DIR  also keep each run's eval JSON there (default: a temp dir, removed)
#
# Env: PERSONA_BENCH_MODELS     models (default "smollm2-135m gemma3-270m")
#      PERSONA_BENCH_TEMPS      temperatures (default "0 0.5": eval's greedy default and the
#                               sampled setting `ask`/`serve` use, top_p 0.7, repeat penalty 1.3)
#      PERSONA_BENCH_TEMPLATES  extra "model:template" runs at the first temperature, to compare
#                               chat templates (default "gemma3-270m:gemma")
# A benchmark, not a test: about 25 minutes for both models on all 124 turns on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/../.."

limit=() out=""
while (($#)); do
  case "$1" in
    --limit) limit=(--limit "${2:?--limit needs N}"); shift 2 ;;
    --out) out="${2:?--out needs DIR}"; shift 2 ;;
    -h | --help) sed -n '2,21p' "$0"; exit 0 ;;
    *) echo "models.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
models="${PERSONA_BENCH_MODELS:-smollm2-135m gemma3-270m}"
temps="${PERSONA_BENCH_TEMPS:-0 0.5}"
templates="${PERSONA_BENCH_TEMPLATES-gemma3-270m:gemma}"

setup=()
for m in $models; do setup+=(--model "$m"); done
bash scripts/setup-assets.sh "${setup[@]}" >/dev/null
cache="${PERSONA_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/persona}"
py="$cache/llm/venv/bin/python"
cargo build --locked --quiet
work="$(mktemp -d)"
# A copy, so a rebuild during the long run does not swap the binary under it.
cp "${CARGO_TARGET_DIR:-target}/debug/persona" "$work/persona"
persona="$work/persona"
server=""
cleanup() {
  if [[ -n "$server" ]]; then kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT
[[ -n "$out" ]] && mkdir -p "$out"
"$persona" compile training_data/conversations.json -o "$work/persona.bin" >&2

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# run MODEL TEMPERATURE [TEMPLATE]: one eval against a fresh server; appends a row to $work/rows
run() {
  local model="$1" temp="$2" template="${3:-}" port json
  port="$(free_port)"
  PERSONA_LLM_PORT="$port" PERSONA_LOCAL_MODEL="$model" PERSONA_LLM_TEMPLATE="$template" \
    "$py" scripts/llm_server.py >"$work/server.log" 2>&1 &
  server=$!
  for _ in $(seq 240); do
    if curl -sf "http://127.0.0.1:$port/health" >/dev/null 2>&1; then break; fi
    kill -0 "$server" 2>/dev/null || { cat "$work/server.log" >&2; exit 1; }
    sleep 0.25
  done
  json="$work/$model-t$temp${template:+-$template}.json"
  "$persona" eval --artifact "$work/persona.bin" --systems knn "${limit[@]}" --json \
    --llm-url "http://127.0.0.1:$port/v1" --llm-model "$model" --temperature "$temp" >"$json"
  kill "$server"
  wait "$server" 2>/dev/null || true
  server=""
  [[ -n "$out" ]] && cp "$json" "$out/"
  python3 - "$json" "$model" "$temp" "${template:-default}" "$work/server.log" >>"$work/rows" <<'PY'
import json, re, sys
path, model, temp, template, log = sys.argv[1:]
d = json.load(open(path))
k = d["systems"]["knn"]
vf = k["voice_fidelity"]
# "prompt eval time =  5616.12 ms /  956 tokens" and "eval time =  1325.09 ms /  36 tokens"
ms = sum(float(m) for m in re.findall(r"eval time =\s+([0-9.]+) ms", open(log, errors="replace").read()))
secs = ms / 1000 / d["turns"]
print(f"| {model} | {template} | {temp} | {d['turns']} | {vf['mean']:.3f} [{vf['low']:.3f}, {vf['high']:.3f}] "
      f"| {k['style']['mean']:.3f} | {k['semantic']['mean']:.3f} | {k['copy_rate']:.3f} "
      f"| {k['violations']['draft']:.3f} | {k['violations']['final']:.3f} | {secs:.1f} |")
PY
  tail -n 1 "$work/rows" >&2
}

for m in $models; do
  for t in $temps; do run "$m" "$t"; done
done
first_temp="${temps%% *}"
for mt in $templates; do
  case " $models " in *" ${mt%%:*} "*) run "${mt%%:*}" "$first_temp" "${mt#*:}" ;; esac
done

echo "| model | chat template | temperature | turns | voice fidelity [95% CI] | style | semantic | copy rate | draft violations | final violations | s/reply |"
echo "|---|---|---|---|---|---|---|---|---|---|---|"
cat "$work/rows"
