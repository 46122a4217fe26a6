#!/usr/bin/env bash
# persona against DSPy's KNNFewShot, on the same machine, in the same session, with the same
# embedding model (all-MiniLM-L6-v2 int8 ONNX, the file persona uses, on the same ONNX Runtime
# version) and the same ONNX Runtime thread count on both sides:
#
#   compile    turns/s to get a program ready to answer from training_data/conversations.json:
#              DSPy: KNNFewShot(k, trainset, dspy.Embedder(MiniLM)) + .compile(student), which
#              embeds every example (eval/bench/dspy_knn.py); persona: `persona compile --no-cache
#              --json` (`examples` / `seconds`: parse, embed, HNSW build, write the artifact;
#              model load excluded on both sides).
#   retrieval  ms per question to pick the demos, for the same held-out fan messages: DSPy's KNN
#              call (query embedding + exact numpy search; the stubbed LLM is excluded and timed
#              apart); persona's `query embedding` + `hnsw search` phases from
#              `PERSONA_TIMINGS=1 persona ask --dry-run`, one process per question (process
#              start, model load and the input filter are not counted).
#   fresh process  seconds from a new process to its first demos: DSPy must rebuild the KNN (embed
#              the whole trainset) each time a process starts (sum of its in-process timings:
#              import, model load, KNNFewShot + compile, first KNN call); persona loads the artifact
#              (`process start to answer` of `persona ask --dry-run`, which also runs the filter).
#
# and prints persona ÷ DSPy for compile throughput and DSPy ÷ persona for retrieval time, plus a
# check that both sides compute the same vectors (DSPy-side scores against the demo scores
# `persona ask --json` reports). The figures are single runs: run it on an idle machine (the
# load average before and after is printed; builds or tests running alongside skew everything).
#
#   bash eval/bench/dspy-compare.sh [--threads N] [--questions N] [--scale N]
#
#   --threads N    ONNX Runtime intra-op threads for both (default: number of cores, persona's default)
#   --questions N  held-out fan messages to time retrieval on (default 50)
#   --scale N      also time DSPy's retrieval with its trainset replicated to N examples (vectors
#                  are the real ones plus noise, not re-embedded; see dspy_knn.py)
#
# Env: PERSONA_BIN     persona binary to measure (default target/release/persona, built with
#                      `cargo build --release --locked` if missing; an existing one is used as
#                      is, so rebuild it first if the sources changed)
#      PERSONA_PYTHON  python >= 3.10 used to create the venv (default python3)
#      PERSONA_CACHE_DIR  as for persona; the venv lives in $CACHE/bench/dspy-venv (never in
#                      the repository), the model in $CACHE/assets (scripts/setup-assets.sh)
#
# Idempotent: the venv is reused while its pins match, the assets are checked by sha256, and
# every artifact is written to a temporary directory that is removed on exit.
set -euo pipefail
cd "$(dirname "$0")/../.."

THREADS=""
QUESTIONS=50
SCALE=0
while (($#)); do
  case "$1" in
    --threads) THREADS="${2:?--threads needs a number}"; shift 2 ;;
    --questions) QUESTIONS="${2:?--questions needs a number}"; shift 2 ;;
    --scale) SCALE="${2:?--scale needs a number}"; shift 2 ;;
    -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    *) echo "dspy-compare: unknown argument: $1" >&2; exit 2 ;;
  esac
done
THREADS="${THREADS:-$(nproc)}"
[[ "$THREADS" =~ ^[1-9][0-9]*$ ]] || { echo "dspy-compare: --threads must be a positive whole number" >&2; exit 2; }
[[ "$QUESTIONS" =~ ^[1-9][0-9]*$ ]] || { echo "dspy-compare: --questions must be a positive whole number" >&2; exit 2; }
[[ "$SCALE" =~ ^[0-9]+$ ]] || { echo "dspy-compare: --scale must be a whole number" >&2; exit 2; }

CACHE="${PERSONA_CACHE_DIR:-${XDG_CACHE_HOME:-${HOME:?HOME is not set}/.cache}/persona}"
export PERSONA_CACHE_DIR="$CACHE"
PYTHON="${PERSONA_PYTHON:-python3}"
DATA=training_data/conversations.json

# ---------------------------------------------------------------- pins ----
# dspy: newest on PyPI when this was written (`pip index versions dspy`). onnxruntime: the same
# version as the libonnxruntime.so persona loads (scripts/setup-assets.sh).
REQS=(dspy==3.4.1 onnxruntime==1.24.4 tokenizers==0.23.3 numpy==2.4.6)
VENV="$CACHE/bench/dspy-venv"
STAMP="$VENV/.persona-bench-pins"

say() { echo "dspy-compare: $*" >&2; }
die() { say "error: $*"; exit 1; }

venv_ok() {
  [[ -x "$VENV/bin/python" ]] &&
    [[ "$(cat "$STAMP" 2>/dev/null)" == "${REQS[*]}" ]] &&
    "$VENV/bin/python" -c 'import dspy, onnxruntime, tokenizers, numpy' >/dev/null 2>&1
}

if venv_ok; then
  say "ok  venv $VENV (${REQS[*]})"
else
  command -v "$PYTHON" >/dev/null || die "$PYTHON not found (set PERSONA_PYTHON to a python >= 3.10 with venv and pip)"
  "$PYTHON" -c 'import sys; sys.exit(not ((3, 10) <= sys.version_info[:2] < (3, 16)))' ||
    die "dspy ${REQS[0]#dspy==} needs python >= 3.10 and < 3.16; $PYTHON is $("$PYTHON" -V 2>&1) (set PERSONA_PYTHON)"
  say "creating $VENV with ${REQS[*]} (PyPI)"
  rm -rf "$VENV"
  mkdir -p "$(dirname "$VENV")"
  "$PYTHON" -m venv "$VENV" || die "cannot create a venv with $PYTHON (Debian: apt-get install python3-venv)"
  log="$VENV/pip-install.log"
  if ! PIP_REQUIRE_VIRTUALENV=0 "$VENV/bin/python" -m pip install --disable-pip-version-check \
      "${REQS[@]}" >"$log" 2>&1; then
    tail -n 20 "$log" >&2
    rm -rf "$VENV"
    die "pip could not install ${REQS[*]}; PyPI must be reachable"
  fi
  "$VENV/bin/python" -m pip freeze --disable-pip-version-check >"$VENV/freeze.txt" 2>/dev/null || true
  echo "${REQS[*]}" >"$STAMP"
  venv_ok || die "the venv at $VENV does not import dspy, onnxruntime, tokenizers and numpy"
fi
PY="$VENV/bin/python"

# --------------------------------------------------------- assets, binary ----
# Only the embedding assets are needed (the LLM is stubbed on DSPy's side and never called by
# `persona ask --dry-run`).
bash scripts/setup-assets.sh --no-llm

PERSONA="${PERSONA_BIN:-${CARGO_TARGET_DIR:-target}/release/persona}"
if [[ -z "${PERSONA_BIN:-}" && ! -x "$PERSONA" ]]; then
  say "building the release binary (cargo build --release --locked)"
  cargo build --release --locked --quiet
fi
[[ -x "$PERSONA" ]] || die "no persona binary at $PERSONA"
BUILD_NOTE=""
case "$PERSONA" in
  */debug/*) BUILD_NOTE="persona is a DEBUG build ($PERSONA): its tokenizer, index and glue code are unoptimized, so its figures understate a release build" ;;
esac

work="$(mktemp -d "${TMPDIR:-/tmp}/dspy-compare.XXXXXX")"
trap 'rm -rf "$work"' EXIT

load() { cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo "?"; }
LOAD_BEFORE="$(load)"
say "threads $THREADS for ONNX Runtime on both sides; load average before: $LOAD_BEFORE"

# -------------------------------------------------------------------- DSPy ----
say "DSPy: KNNFewShot over $DATA ($PY eval/bench/dspy_knn.py)"
"$PY" eval/bench/dspy_knn.py --data "$DATA" --threads "$THREADS" --questions "$QUESTIONS" \
  --questions-out "$work/questions.jsonl" --vectors-out "$work/dspy_vectors.npz" \
  >"$work/dspy.out" 2>"$work/dspy.err" || { cat "$work/dspy.err" >&2; die "dspy_knn.py failed"; }
grep -v '^{' "$work/dspy.out" || true
tail -n 1 "$work/dspy.out" >"$work/dspy.json"

if ((SCALE > 0)); then
  say "DSPy at --scale $SCALE (retrieval; trainset vectors reused with noise, queries embedded for real)"
  "$PY" eval/bench/dspy_knn.py --data "$DATA" --threads "$THREADS" --questions "$QUESTIONS" \
    --scale "$SCALE" --no-cached --no-forward >"$work/dspy_scale.out" 2>"$work/dspy_scale.err" ||
    { cat "$work/dspy_scale.err" >&2; die "dspy_knn.py --scale $SCALE failed"; }
  grep -v '^{' "$work/dspy_scale.out" || true
  tail -n 1 "$work/dspy_scale.out" >"$work/dspy_scale.json"
fi

# ----------------------------------------------------------------- persona ----
say "persona: compile ($PERSONA compile $DATA --no-cache --json --threads $THREADS)"
PERSONA_EMBED_THREADS="$THREADS" "$PERSONA" compile "$DATA" -o "$work/a.bin" --no-cache --json \
  --threads "$THREADS" >"$work/compile.json" 2>"$work/compile.err" ||
  { cat "$work/compile.err" >&2; die "persona compile failed"; }

say "persona: retrieval on the same $(wc -l <"$work/questions.jsonl") questions (one \`persona ask --dry-run\` per question)"
# questions.jsonl holds one JSON string per line; hand them to bash NUL-separated.
"$PY" -c 'import json, sys
for l in open(sys.argv[1], encoding="utf-8"):
    sys.stdout.write(json.loads(l) + "\0")' "$work/questions.jsonl" >"$work/questions.nul"
mkdir -p "$work/ask"
: >"$work/persona_timings.tsv"
i=0
while IFS= read -r -d '' q; do
  i=$((i + 1))
  out="$work/ask/$(printf '%04d' "$i").json"
  if ! PERSONA_TIMINGS=1 PERSONA_EMBED_THREADS="$THREADS" "$PERSONA" ask --artifact "$work/a.bin" \
      --dry-run --json -- "$q" >"$out" 2>"$work/ask.err"; then
    cat "$work/ask.err" >&2
    die "persona ask failed on question $i"
  fi
  embed_ms="$(awk '/^timing query embedding /{print $(NF-1)}' "$work/ask.err")"
  search_ms="$(awk '/^timing hnsw search /{print $(NF-1)}' "$work/ask.err")"
  start_ms="$(awk '/^timing process start to answer /{print $(NF-1)}' "$work/ask.err")"
  if [[ -z "$embed_ms" || -z "$search_ms" || -z "$start_ms" ]]; then
    grep '^timing' "$work/ask.err" >&2 || true
    die "PERSONA_TIMINGS printed no 'query embedding' / 'hnsw search' / 'process start to answer' phase (phases above); update this script"
  fi
  printf '%s\t%s\t%s\n' "$embed_ms" "$search_ms" "$start_ms" >>"$work/persona_timings.tsv"
done <"$work/questions.nul"
LOAD_AFTER="$(load)"

# persona's answers, one JSON per line, for the parity check
for f in "$work"/ask/*.json; do tr -d '\n' <"$f"; echo; done >"$work/persona_answers.jsonl"
"$PY" eval/bench/dspy_knn.py --parity "$work/dspy_vectors.npz" "$work/persona_answers.jsonl" >"$work/parity.json"

# ------------------------------------------------------------------ report ----
"$PY" - "$work" "$PERSONA" "$THREADS" "$LOAD_BEFORE" "$LOAD_AFTER" "$BUILD_NOTE" <<'PY'
import json, os, sys
import numpy as np

work, persona_bin, threads, load_before, load_after, build_note = sys.argv[1:7]
dspy = json.load(open(os.path.join(work, "dspy.json")))
scale_path = os.path.join(work, "dspy_scale.json")
scale = json.load(open(scale_path)) if os.path.exists(scale_path) else None
comp = json.load(open(os.path.join(work, "compile.json")))
parity = json.load(open(os.path.join(work, "parity.json")))
rows = [l.split("\t") for l in open(os.path.join(work, "persona_timings.tsv")).read().splitlines() if l]
embed = np.array([float(row[0]) for row in rows])
search = np.array([float(row[1]) for row in rows])
start = np.array([float(row[2]) for row in rows])
total = embed + search

def q(a, p):
    return float(np.percentile(a, p))

p_tps = comp["examples"] / comp["seconds"]
d_tps = dspy["compile"]["turns_per_s"]
p_med, p_p90 = q(total, 50), q(total, 90)
d_med, d_p90 = dspy["knn"]["median_ms"], dspy["knn"]["p90_ms"]
notes = []
if build_note:
    notes.append(build_note)
if comp["examples"] != dspy["examples"]:
    notes.append(f"persona indexed {comp['examples']} examples, DSPy {dspy['examples']}: the two sides differ")
if parity["parity_max_abs_score_diff"] > 0.01:
    notes.append(f"vectors differ between the two sides (max score difference {parity['parity_max_abs_score_diff']})")
notes.append("persona's timing lines have 0.1 ms resolution; each persona question is a fresh process "
             "(the query embedding follows one embedding call by the input filter), DSPy's are warm calls in one process")
notes.append("persona compile also embeds the filter's example phrases, builds the HNSW index and writes the artifact; "
             "DSPy's compile embeds the trainset and wraps forward()")

def f(x, nd=1):
    return f"{x:.{nd}f}"

print()
print(f"## persona vs DSPy {dspy['versions']['dspy']} KNNFewShot ({threads} ONNX Runtime threads on both sides)")
print()
print("| figure | DSPy | persona | ratio |")
print("|---|---:|---:|---:|")
print(f"| examples indexed | {dspy['examples']} | {comp['examples']} | |")
print(f"| compile, turns/s (no embedding cache) | {f(d_tps)} ({f(dspy['compile']['seconds'], 2)} s) | "
      f"{f(p_tps)} ({f(comp['seconds'], 2)} s) | persona {f(p_tps / d_tps, 2)}x |")
print(f"| raw vectorizer, turns/s (Python onnxruntime) | {f(dspy['raw']['turns_per_s'])} | | |")
print(f"| retrieval per question, median ms | {f(d_med, 2)} | {f(p_med, 2)} | DSPy/persona {f(d_med / p_med, 2)}x |")
print(f"| retrieval per question, p90 ms | {f(d_p90, 2)} | {f(p_p90, 2)} | DSPy/persona {f(d_p90 / p_p90, 2)}x |")
print(f"| - query embedding, median ms | {f(dspy['knn']['embed_median_ms'], 2)} | {f(q(embed, 50), 2)} | |")
print(f"| - search, median ms | {f(dspy['knn']['rest_median_ms'], 3)} (exact, numpy) | {f(q(search, 50), 2)} (HNSW) | |")
print(f"| fresh process to first demos, s | {f(dspy['fresh_process_to_first_demos_seconds'], 2)} (re-embeds the trainset) | "
      f"{f(q(start, 50) / 1000, 2)} (loads the artifact; `process start to answer`, median) | "
      f"DSPy/persona {f(dspy['fresh_process_to_first_demos_seconds'] * 1000 / q(start, 50), 1)}x |")
if dspy.get("forward_dummy_lm"):
    fw = dspy["forward_dummy_lm"]
    print(f"| DSPy forward with DummyLM, median ms | {f(fw['median_ms'], 2)} ({fw['lm_calls_per_question']:g} LM calls, "
          f"{f(fw['without_lm_median_ms'], 2)} ms outside the LM; demos are LM outputs) | | |")
if dspy.get("forward_dummy_lm_gold_demos"):
    fw = dspy["forward_dummy_lm_gold_demos"]
    print(f"| same with max_bootstrapped_demos=0, median ms | {f(fw['median_ms'], 2)} ({fw['lm_calls_per_question']:g} LM call, "
          f"{f(fw['without_lm_median_ms'], 2)} ms outside the LM; gold demos) | | |")
if scale:
    print(f"| DSPy retrieval at {scale['examples']} examples, median / p90 ms | "
          f"{f(scale['knn']['median_ms'], 2)} / {f(scale['knn']['p90_ms'], 2)} "
          f"(search + DSPy {f(scale['knn']['rest_median_ms'], 3)}, numpy alone {f(scale['knn']['numpy_search_median_ms'], 3)}) | | |")
print()
print(f"vectors: {parity['parity_demos_checked']} persona demo scores checked against DSPy-side vectors, "
      f"max difference {parity['parity_max_abs_score_diff']}")
print(f"load average before / after: {load_before} / {load_after}; persona binary: {persona_bin}")
for n in notes:
    print(f"note: {n}")
print(json.dumps({
    "threads": int(threads),
    "persona_bin": persona_bin,
    "load_before": load_before, "load_after": load_after,
    "dspy": dspy, "dspy_scale": scale,
    "persona": {"compile": comp, "compile_turns_per_s": round(p_tps, 1),
                "retrieval": {"n": int(len(total)), "median_ms": round(p_med, 3), "p90_ms": round(p_p90, 3),
                              "embed_median_ms": round(q(embed, 50), 3), "search_median_ms": round(q(search, 50), 3)},
                "process_start_to_answer_median_ms": round(q(start, 50), 3)},
    "parity": parity,
    "ratios": {"compile_persona_over_dspy": round(p_tps / d_tps, 3),
               "retrieval_median_dspy_over_persona": round(d_med / p_med, 3),
               "retrieval_p90_dspy_over_persona": round(d_p90 / p_p90, 3),
               "fresh_process_dspy_over_persona": round(dspy["fresh_process_to_first_demos_seconds"] * 1000 / q(start, 50), 3)},
    "notes": notes,
}, ensure_ascii=False))
PY
