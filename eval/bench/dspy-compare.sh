#!/usr/bin/env bash
# persona against DSPy's KNNFewShot, on the same machine, in the same session, with the same
# embedding model (all-MiniLM-L6-v2 int8 ONNX, the file persona uses, on the same ONNX Runtime
# version) and the same ONNX Runtime thread count on both sides, over the same examples:
# training_data/conversations.json (462 indexed turns, the default) or, with `--examples N`, N
# real-like examples recombined from it (below). Both sides embed every text for real.
#
#   compile    turns/s to get a program ready to answer: DSPy: KNNFewShot(k, trainset,
#              dspy.Embedder(MiniLM)) + .compile(student), which embeds every example
#              (eval/bench/dspy_knn.py); persona: `persona compile --no-cache --json`, `examples`
#              over its phases but the `learned filter, safety and mood` one (parse, embed, HNSW
#              build, write the artifact), the like-for-like figure; the whole compile, which also
#              trains those classifiers (embedding their labelled texts, the creator's replies and
#              the fan messages: no DSPy counterpart), is printed beside it. Model load excluded
#              on both sides.
#   retrieval  ms per question to pick the demos, for the same held-out fan messages: DSPy's KNN
#              call (query embedding + exact numpy search; the stubbed LLM is excluded and timed
#              apart); persona's `query embedding` + `hnsw search` phases from
#              `PERSONA_TIMINGS=1 persona ask --dry-run`, one process per question (process
#              start, model load and the input filter are not counted). A question persona's
#              safety check hands to a human gets no retrieval; it is counted and left out.
#   fresh process  seconds from launching a new process to its first demos, measured from outside
#              on both sides (the launch time is taken just before the exec):
#              DSPy, cache cold: one `dspy_knn.py --fresh` process with DSPy's default
#                `Embedder(embed)` (caching=True) and an empty disk cache: import, read the
#                examples, load the model, KNNFewShot + compile (embeds the trainset, writing
#                every batch to the disk cache), first KNN call (a question never embedded before);
#              DSPy, cache warm: the same, 3 more processes on the disk cache the cold one left
#                (median; each asks another new question): the trainset vectors come from disk;
#                the run checks that no trainset text was embedded again;
#              persona: `persona ask --dry-run` on the artifact, launch to exit (median over the
#                questions; it also runs the input filter and renders the prompt).
#              Also printed: DSPy's in-process sum without any cache (import + model load +
#              compile + first KNN call, from the main timing run) and persona's own
#              `process start to answer`.
#   peak memory  peak RSS (GNU time's %M) of each process: DSPy's cold and warm fresh processes;
#              `persona compile`; `persona ask` (median). Judged as DSPy ÷ persona for the process
#              that embeds the trainset (DSPy cold, persona compile) and for the process that
#              answers from stored vectors (DSPy warm, persona ask).
#
# and prints persona ÷ DSPy for compile throughput, DSPy ÷ persona for retrieval time, fresh
# process time and peak memory, plus a check that both sides compute the same vectors (DSPy-side
# vectors of persona's own texts scored against the demo scores `persona ask --json` reports).
# The figures are single runs: run it on an idle machine (the load average before and after is
# printed; builds or tests running alongside skew everything).
#
# DSPy's embedding cache (dspy 3.4.1: dspy/clients/embedding.py `_cached_compute_embeddings`,
# wrapped by `request_cache` in dspy/clients/cache.py). `Embedder(f, caching=True)` caches a
# callable's results too, not only litellm models': per call of `f` on one batch (Embedder's
# batch_size, 200 texts), under sha256 of {the callable's source text (`inspect.getsource`), the
# batch's texts in order, the call's kwargs, the wrapped function's name}, in memory (LRU) and on
# disk (diskcache FanoutCache in DSPY_CACHEDIR, default ~/.dspy_cache, or configure_cache's
# disk_cache_dir; 30 GB limit). So a warm cache lets a new process skip embedding the trainset,
# which is what the warm figure measures: DSPy at its best across process starts, the fair
# counterpart of persona opening its artifact (both read from the page cache here). What it does
# not do: the key names no model (changing the model behind the same function source is served
# the old vectors), and it is per batch of 200 in order (inserting or removing an example
# re-embeds every batch after it; persona's cache is per text and keyed by the model). Each
# process here uses a private cache directory under the temporary directory; nothing is written
# to ~/.dspy_cache.
#
# `--examples N`: N real-like examples, made like benches/scale.rs makes its conversations but
# embedded for real: each synthetic conversation is one of the real conversations persona indexes
# (hold-out 0.2, so the held-out questions stay unseen), every fan message joined with another
# real fan message drawn at random, the creator's real replies in their places; the last one is
# cut where the count reaches N (after persona's duplicate rule); fixed seed
# (`dspy_knn.py --make-dataset`). Written to the temporary directory; both sides index all of it
# (`--holdout 0`) and the questions are the real data's held-out fan messages, as by default.
# The texts are about 270 characters against 200 for the real turns (the fan messages are
# doubled), so the turns/s figures of the two modes do not compare; the ratios do.
#
#   bash eval/bench/dspy-compare.sh [--threads N] [--questions N] [--examples N] [--scale N]
#
#   --threads N    ONNX Runtime intra-op threads for both (default: number of cores, persona's default)
#   --questions N  held-out fan messages to time retrieval on (default 50)
#   --examples N   index N real-like examples instead of the 462 real ones (see above); 5,000
#                  takes about 15 minutes on 2 cores (every text is embedded 5 times: DSPy's raw
#                  and compile timings, its parity vectors, its cold process, persona's compile)
#   --scale N      also time DSPy's retrieval with its trainset replicated to N examples (vectors
#                  are the real ones plus noise, not re-embedded; see dspy_knn.py)
#
# Env: PERSONA_BIN     persona binary to measure (default target/release/persona, built with
#                      `cargo build --release --locked` if missing; an existing one is used as
#                      is, so rebuild it first if the sources changed)
#      PERSONA_PYTHON  python >= 3.10 used to create the venv (default python3)
#      PERSONA_CACHE_DIR  as for persona; the venv lives in $CACHE/bench/dspy-venv (never in
#                      the repository), the model in $CACHE/assets (scripts/setup-assets.sh)
# Needs GNU time at /usr/bin/time for the peak memory (Debian: apt-get install time); without it
# the memory rows are left out.
#
# Idempotent: the venv is reused while its pins match, the assets are checked by sha256, and
# every dataset, artifact and DSPy cache is written to a temporary directory removed on exit.
set -euo pipefail
cd "$(dirname "$0")/../.."

THREADS=""
QUESTIONS=50
SCALE=0
EXAMPLES=0
WARM_RUNS=3
while (($#)); do
  case "$1" in
    --threads) THREADS="${2:?--threads needs a number}"; shift 2 ;;
    --questions) QUESTIONS="${2:?--questions needs a number}"; shift 2 ;;
    --examples) EXAMPLES="${2:?--examples needs a number}"; shift 2 ;;
    --scale) SCALE="${2:?--scale needs a number}"; shift 2 ;;
    -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    *) echo "dspy-compare: unknown argument: $1" >&2; exit 2 ;;
  esac
done
THREADS="${THREADS:-$(nproc)}"
[[ "$THREADS" =~ ^[1-9][0-9]*$ ]] || { echo "dspy-compare: --threads must be a positive whole number" >&2; exit 2; }
[[ "$QUESTIONS" =~ ^[1-9][0-9]*$ ]] || { echo "dspy-compare: --questions must be a positive whole number" >&2; exit 2; }
[[ "$SCALE" =~ ^[0-9]+$ ]] || { echo "dspy-compare: --scale must be a whole number" >&2; exit 2; }
[[ "$EXAMPLES" =~ ^[0-9]+$ ]] || { echo "dspy-compare: --examples must be a whole number (0: the real data)" >&2; exit 2; }
(( QUESTIONS > WARM_RUNS )) || { echo "dspy-compare: --questions must be above $WARM_RUNS (each warm DSPy process asks a new one)" >&2; exit 2; }

CACHE="${PERSONA_CACHE_DIR:-${XDG_CACHE_HOME:-${HOME:?HOME is not set}/.cache}/persona}"
export PERSONA_CACHE_DIR="$CACHE"
PYTHON="${PERSONA_PYTHON:-python3}"
DATA=training_data/conversations.json
HOLDOUT=0.2 # persona.toml [compile] holdout: the real data's held-out part, where the questions come from

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
# DSPy's default disk cache, should anything reach it, stays in the temporary directory too.
export DSPY_CACHEDIR="$work/dspy-default-cache"

# Peak RSS with GNU time (-o keeps it out of the program's stderr): `run_rss FILE cmd...`
# writes the KiB figure as FILE's last line (empty without GNU time).
TIME_BIN=/usr/bin/time
if ! { [[ -x "$TIME_BIN" ]] && "$TIME_BIN" -f %M -o "$work/rss-probe" true 2>/dev/null; }; then
  say "warning: no GNU time at $TIME_BIN (Debian: apt-get install time): peak memory is not measured"
  TIME_BIN=""
fi
run_rss() {
  local out="$1"
  shift
  if [[ -n "$TIME_BIN" ]]; then
    "$TIME_BIN" -f %M -o "$out" "$@"
  else
    : >"$out"
    "$@"
  fi
}
now() { local t="$EPOCHREALTIME"; echo "${t/,/.}"; } # epoch seconds, microseconds, any locale

load() { cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo "?"; }
LOAD_BEFORE="$(load)"
say "threads $THREADS for ONNX Runtime on both sides; load average before: $LOAD_BEFORE"

# ------------------------------------------------------------------- data ----
# DSPY_DATA: how dspy_knn.py reads the trainset and the questions; PERSONA_DATA and
# PERSONA_HOLDOUT: what persona compiles.
if ((EXAMPLES > 0)); then
  PERSONA_DATA="$work/examples-$EXAMPLES.json"
  say "data: $EXAMPLES real-like examples recombined from $DATA ($PERSONA_DATA)"
  "$PY" eval/bench/dspy_knn.py --make-dataset "$EXAMPLES" "$PERSONA_DATA" --data "$DATA" \
    --questions-holdout "$HOLDOUT" >"$work/dataset.json" 2>"$work/dataset.err" ||
    { cat "$work/dataset.err" >&2; die "dspy_knn.py --make-dataset $EXAMPLES failed"; }
  DSPY_DATA=(--data "$PERSONA_DATA" --holdout 0 --questions-data "$DATA" --questions-holdout "$HOLDOUT")
  PERSONA_HOLDOUT=(--holdout 0)
  NO_CACHED=(--no-cached) # the disk-cache processes below replace the in-memory cache pair
else
  PERSONA_DATA="$DATA"
  echo '{}' >"$work/dataset.json"
  DSPY_DATA=(--data "$DATA" --holdout "$HOLDOUT")
  PERSONA_HOLDOUT=()
  NO_CACHED=()
fi

# -------------------------------------------------------------------- DSPy ----
say "DSPy: KNNFewShot over $PERSONA_DATA ($PY eval/bench/dspy_knn.py)"
run_rss "$work/rss_dspy_main" "$PY" eval/bench/dspy_knn.py "${DSPY_DATA[@]}" --threads "$THREADS" \
  --questions "$QUESTIONS" --questions-out "$work/questions.jsonl" --vectors-out "$work/dspy_vectors.npz" \
  "${NO_CACHED[@]}" >"$work/dspy.out" 2>"$work/dspy.err" || { cat "$work/dspy.err" >&2; die "dspy_knn.py failed"; }
grep -v '^{' "$work/dspy.out" || true
tail -n 1 "$work/dspy.out" >"$work/dspy.json"

# One new DSPy process to its first demos; $1 names the run, $2 is the question it asks.
dspy_fresh() {
  local launched
  launched="$(now)"
  run_rss "$work/rss_fresh_$1" "$PY" eval/bench/dspy_knn.py --fresh "${DSPY_DATA[@]}" --threads "$THREADS" \
    --questions "$QUESTIONS" --cache-dir "$work/dspy-disk-cache" --question-index "$2" --launched-at "$launched" \
    >"$work/fresh_$1.json" 2>"$work/fresh_$1.err" ||
    { cat "$work/fresh_$1.err" >&2; die "dspy_knn.py --fresh ($1) failed"; }
}
say "DSPy: a new process with Embedder(caching=True) and an empty disk cache (cold), then $WARM_RUNS on the cache it wrote (warm)"
rm -rf "$work/dspy-disk-cache"
dspy_fresh cold 0
for ((w = 1; w <= WARM_RUNS; w++)); do dspy_fresh "warm$w" "$w"; done

if ((SCALE > 0)); then
  say "DSPy at --scale $SCALE (retrieval; trainset vectors reused with noise, queries embedded for real)"
  "$PY" eval/bench/dspy_knn.py "${DSPY_DATA[@]}" --threads "$THREADS" --questions "$QUESTIONS" \
    --scale "$SCALE" --no-cached --no-forward >"$work/dspy_scale.out" 2>"$work/dspy_scale.err" ||
    { cat "$work/dspy_scale.err" >&2; die "dspy_knn.py --scale $SCALE failed"; }
  grep -v '^{' "$work/dspy_scale.out" || true
  tail -n 1 "$work/dspy_scale.out" >"$work/dspy_scale.json"
fi

# ----------------------------------------------------------------- persona ----
say "persona: compile ($PERSONA compile $PERSONA_DATA${PERSONA_HOLDOUT[*]:+ ${PERSONA_HOLDOUT[*]}} --no-cache --json --threads $THREADS)"
PERSONA_EMBED_THREADS="$THREADS" run_rss "$work/rss_compile" "$PERSONA" compile "$PERSONA_DATA" \
  "${PERSONA_HOLDOUT[@]}" -o "$work/a.bin" --no-cache --json --threads "$THREADS" \
  >"$work/compile.json" 2>"$work/compile.err" ||
  { cat "$work/compile.err" >&2; die "persona compile failed"; }

say "persona: retrieval on the same $(wc -l <"$work/questions.jsonl") questions (one \`persona ask --dry-run\` per question)"
# questions.jsonl holds one JSON string per line; hand them to bash NUL-separated.
"$PY" -c 'import json, sys
for l in open(sys.argv[1], encoding="utf-8"):
    sys.stdout.write(json.loads(l) + "\0")' "$work/questions.jsonl" >"$work/questions.nul"
mkdir -p "$work/ask"
: >"$work/persona_timings.tsv"
i=0
handoffs=0
while IFS= read -r -d '' q; do
  i=$((i + 1))
  out="$work/ask/$(printf '%04d' "$i").json"
  launched="$(now)"
  if ! PERSONA_TIMINGS=1 PERSONA_EMBED_THREADS="$THREADS" run_rss "$work/rss_ask" "$PERSONA" ask \
      --artifact "$work/a.bin" --dry-run --json -- "$q" >"$out" 2>"$work/ask.err"; then
    cat "$work/ask.err" >&2
    die "persona ask failed on question $i"
  fi
  ended="$(now)"
  embed_ms="$(awk '/^timing query embedding /{print $(NF-1)}' "$work/ask.err")"
  search_ms="$(awk '/^timing hnsw search /{print $(NF-1)}' "$work/ask.err")"
  start_ms="$(awk '/^timing process start to answer /{print $(NF-1)}' "$work/ask.err")"
  if [[ -z "$start_ms" ]] || { [[ -z "$embed_ms" || -z "$search_ms" ]] && ! grep -q '"handoff": *{' "$out"; }; then
    grep '^timing' "$work/ask.err" >&2 || true
    die "PERSONA_TIMINGS printed no 'query embedding' / 'hnsw search' / 'process start to answer' phase (phases above); update this script"
  fi
  if [[ -z "$embed_ms" ]]; then
    # The safety check handed this message to a human: no retrieval, so no figure to compare.
    handoffs=$((handoffs + 1))
    continue
  fi
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$embed_ms" "$search_ms" "$start_ms" "$launched" "$ended" \
    "$(tail -n 1 "$work/rss_ask")" "$i" >>"$work/persona_timings.tsv"
done <"$work/questions.nul"
[[ -s "$work/persona_timings.tsv" ]] || die "persona handed every question off to a human (safety check): no retrieval to time"
LOAD_AFTER="$(load)"

# persona's answers, one JSON per line, for the parity check
for f in "$work"/ask/*.json; do tr -d '\n' <"$f"; echo; done >"$work/persona_answers.jsonl"
"$PY" eval/bench/dspy_knn.py --parity "$work/dspy_vectors.npz" "$work/persona_answers.jsonl" >"$work/parity.json"

# ------------------------------------------------------------------ report ----
"$PY" - "$work" "$PERSONA" "$THREADS" "$LOAD_BEFORE" "$LOAD_AFTER" "$BUILD_NOTE" "$WARM_RUNS" "$DATA" "$handoffs" <<'PY'
import json, os, sys
import numpy as np

work, persona_bin, threads, load_before, load_after, build_note, warm_runs, real_data, handoffs = sys.argv[1:10]
warm_runs, handoffs = int(warm_runs), int(handoffs)


def load(name):
    return json.load(open(os.path.join(work, name)))


def rss_mb(name):
    """Peak RSS in MB from GNU time's %M (KiB) in FILE's last line; None without it."""
    try:
        lines = open(os.path.join(work, name)).read().split()
        return int(lines[-1]) / 1024.0 if lines and lines[-1].isdigit() else None
    except OSError:
        return None


dspy = load("dspy.json")
dataset = load("dataset.json")
scale = load("dspy_scale.json") if os.path.exists(os.path.join(work, "dspy_scale.json")) else None
comp = load("compile.json")
parity = load("parity.json")
cold = load("fresh_cold.json")
warm = [load(f"fresh_warm{w}.json") for w in range(1, warm_runs + 1)]
rows = [l.split("\t") for l in open(os.path.join(work, "persona_timings.tsv")).read().splitlines() if l]
embed = np.array([float(row[0]) for row in rows])
search = np.array([float(row[1]) for row in rows])
start = np.array([float(row[2]) for row in rows])
wall = np.array([(float(row[4]) - float(row[3])) for row in rows])  # seconds, launch to exit
ask_rss = [int(row[5]) / 1024.0 for row in rows if len(row) > 5 and row[5].isdigit()]
total = embed + search


def q(a, p):
    return float(np.percentile(a, p))


def f(x, nd=1):
    return "n/a" if x is None else f"{x:,.{nd}f}"


def ratio(a, b, nd=2):
    return None if a is None or b is None or b == 0 else round(a / b, 3)


# persona compile also trains its learned filter, safety and mood classifiers (embedding their
# labelled texts, the creator's replies and the fan messages, with --no-cache every time), which
# DSPy has no counterpart of: the like-for-like figure leaves that phase out.
extra_s = sum(ph["seconds"] for ph in comp.get("phases", []) if ph["phase"].startswith("learned"))
p_tps = comp["examples"] / (comp["seconds"] - extra_s)
p_tps_whole = comp["examples"] / comp["seconds"]
d_tps = dspy["compile"]["turns_per_s"]
p_med, p_p90 = q(total, 50), q(total, 90)
d_med, d_p90 = dspy["knn"]["median_ms"], dspy["knn"]["p90_ms"]
if handoffs:
    # DSPy over the same questions persona retrieved for (not the ones its safety check handed off).
    kept = [int(row[6]) - 1 for row in rows]
    d_knn = np.array([dspy["knn"]["per_question_ms"][i] for i in kept])
    d_med, d_p90 = q(d_knn, 50), q(d_knn, 90)
p_wall = q(wall, 50)
d_cold = cold["launch_to_first_demos_seconds"]
d_warm = float(np.median([w["launch_to_first_demos_seconds"] for w in warm]))
d_sum = dspy["fresh_process_to_first_demos_seconds"]


def median_or_none(values):
    values = [v for v in values if v is not None]
    return float(np.median(values)) if values else None


mem = {
    "dspy_cold_mb": rss_mb("rss_fresh_cold"),
    "dspy_warm_mb": median_or_none([rss_mb(f"rss_fresh_warm{w}") for w in range(1, warm_runs + 1)]),
    "dspy_timing_run_mb": rss_mb("rss_dspy_main"),
    "persona_compile_mb": rss_mb("rss_compile"),
    "persona_ask_mb": median_or_none(ask_rss),
    "persona_ask_max_mb": max(ask_rss) if ask_rss else None,
}
ratios = {
    "compile_persona_over_dspy": round(p_tps / d_tps, 3),
    "compile_whole_persona_over_dspy": round(p_tps_whole / d_tps, 3),
    "retrieval_median_dspy_over_persona": round(d_med / p_med, 3),
    "retrieval_p90_dspy_over_persona": round(d_p90 / p_p90, 3),
    "fresh_process_cold_dspy_over_persona": ratio(d_cold, p_wall),
    "fresh_process_warm_dspy_over_persona": ratio(d_warm, p_wall),
    "fresh_process_in_process_sum_dspy_over_persona_start_to_answer": round(d_sum * 1000 / q(start, 50), 3),
    "peak_rss_embedding_dspy_cold_over_persona_compile": ratio(mem["dspy_cold_mb"], mem["persona_compile_mb"]),
    "peak_rss_answering_dspy_warm_over_persona_ask": ratio(mem["dspy_warm_mb"], mem["persona_ask_mb"]),
}

notes = []
if build_note:
    notes.append(build_note)
if not (comp["examples"] == dspy["examples"] == cold["examples"]):
    notes.append(f"persona indexed {comp['examples']} examples, DSPy {dspy['examples']} (fresh processes "
                 f"{cold['examples']}): the two sides differ")
if parity["parity_max_abs_score_diff"] > 0.01:
    notes.append(f"vectors differ between the two sides (max score difference {parity['parity_max_abs_score_diff']})")
if cold["trainset_texts_embedded"] != cold["examples"]:
    notes.append(f"the cold DSPy process embedded {cold['trainset_texts_embedded']} of {cold['examples']} trainset "
                 "texts: its cache was not empty")
missed = [w["trainset_texts_embedded"] for w in warm if w["trainset_texts_embedded"]]
if missed:
    notes.append(f"warm DSPy processes re-embedded {missed} trainset texts: the disk cache missed")
notes.append("DSPy's Embedder(caching=True) does cache a callable vectorizer's vectors, in memory and on disk, keyed "
             "by the callable's source text and each batch of 200 texts (not by the model): the warm figure is "
             "the best a new DSPy process does with this setup")
notes.append("persona's timing lines have 0.1 ms resolution; each persona question is a fresh process "
             "(the query embedding follows one embedding call by the input filter), DSPy's are warm calls in one process")
notes.append("persona compile also builds the HNSW index and writes the artifact (in the like-for-like figure), and "
             "trains its learned filter, safety and mood classifiers, embedding their labelled texts, the creator's "
             "replies and the fan messages (only in the whole figure); DSPy's compile embeds the trainset and wraps forward()")
if not any(ph["phase"].startswith("learned") for ph in comp.get("phases", [])):
    notes.append("persona compile reported no `learned ...` phase (`compile --json` phases): the like-for-like "
                 "compile figure is the whole compile; update this script if the phase was renamed")
if handoffs:
    notes.append(f"persona's safety check handed {handoffs} of the {handoffs + len(rows)} questions to a human (no "
                 "retrieval): they are left out of both sides' retrieval figures and of persona's fresh-process and "
                 "memory figures")
notes.append("fresh-process times are from launch, taken just before the exec, to DSPy's first demos and to persona's "
             "exit with the rendered prompt (it also runs the input filter); DSPy's are single processes (warm: median "
             f"of {warm_runs}), persona's the median over its {len(rows)} questions; artifact and DSPy cache are in the "
             "page cache")

if dataset:
    source = (f"{dataset['examples']:,} real-like examples in {dataset['conversations']:,} conversations recombined "
              f"from {real_data} ({dataset['source_conversations']} indexed conversations, "
              f"{dataset['fan_messages_pool']} fan messages, seed {dataset['seed']}), embedded for real on both sides")
else:
    source = f"{real_data}, the real data"
print()
print(f"## persona vs DSPy {dspy['versions']['dspy']} KNNFewShot ({threads} ONNX Runtime threads on both sides)")
print()
print(f"data: {source}; questions: {len(rows) + handoffs} held-out fan messages of {real_data}"
      + (f" ({len(rows)} retrieved for by persona)" if handoffs else ""))
print()
print("| figure | DSPy | persona | ratio |")
print("|---|---:|---:|---:|")
print(f"| examples indexed | {dspy['examples']:,} | {comp['examples']:,} | |")
print(f"| compile, turns/s (no embedding cache; persona: parse, embed, HNSW, write) | {f(d_tps)} "
      f"({f(dspy['compile']['seconds'], 2)} s) | {f(p_tps)} ({f(comp['seconds'] - extra_s, 2)} s) | "
      f"persona {f(p_tps / d_tps, 2)}x |")
print(f"| - persona's whole compile, with its filter, safety and mood training | | {f(p_tps_whole)} "
      f"({f(comp['seconds'], 2)} s, of which training {f(extra_s, 2)} s) | persona {f(p_tps_whole / d_tps, 2)}x |")
print(f"| raw vectorizer, turns/s (Python onnxruntime) | {f(dspy['raw']['turns_per_s'])} | | |")
print(f"| retrieval per question, median ms | {f(d_med, 2)} | {f(p_med, 2)} | DSPy/persona {f(d_med / p_med, 2)}x |")
print(f"| retrieval per question, p90 ms | {f(d_p90, 2)} | {f(p_p90, 2)} | DSPy/persona {f(d_p90 / p_p90, 2)}x |")
d_embed_med = (q(np.array([dspy["knn"]["embed_per_question_ms"][int(row[6]) - 1] for row in rows]), 50)
               if handoffs else dspy["knn"]["embed_median_ms"])
print(f"| - query embedding, median ms | {f(d_embed_med, 2)} | {f(q(embed, 50), 2)} | |")
print(f"| - search, median ms | {f(dspy['knn']['rest_median_ms'], 3)} (exact, numpy) | {f(q(search, 50), 2)} (HNSW) | |")
print(f"| fresh process to first demos, s: DSPy cache cold | {f(d_cold, 2)} (embeds the trainset, fills its disk cache) | "
      f"{f(p_wall, 2)} (`ask --dry-run`, launch to exit, median) | DSPy/persona {f(ratios['fresh_process_cold_dspy_over_persona'], 1)}x |")
print(f"| fresh process to first demos, s: DSPy cache warm on disk | {f(d_warm, 2)} (median of {warm_runs}; "
      f"{warm[0]['trainset_texts_embedded']} trainset texts embedded) | {f(p_wall, 2)} | "
      f"DSPy/persona {f(ratios['fresh_process_warm_dspy_over_persona'], 1)}x |")
wi = warm[0]["in_process_seconds"]
print(f"| - warm DSPy process, in-process parts, s | import {f(wi['import'], 2)}, data {f(wi['data'], 2)}, model "
      f"{f(wi['model_load'], 2)}, KNN from cache {f(wi['knn_build_and_compile'], 2)}, first KNN call "
      f"{f(wi['first_knn_call'], 3)} (first warm run) | process start to answer {f(q(start, 50) / 1000, 2)} (median) | |")
print(f"| fresh process, in-process sum without cache, s (as before) | {f(d_sum, 2)} (import + model + compile + first KNN call) | "
      f"{f(q(start, 50) / 1000, 2)} (`process start to answer`, median) | "
      f"DSPy/persona {f(ratios['fresh_process_in_process_sum_dspy_over_persona_start_to_answer'], 1)}x |")
print(f"| peak RSS, MB: process that embeds the trainset | {f(mem['dspy_cold_mb'], 0)} (cold process) | "
      f"{f(mem['persona_compile_mb'], 0)} (`compile`) | DSPy/persona {f(ratios['peak_rss_embedding_dspy_cold_over_persona_compile'], 2)}x |")
print(f"| peak RSS, MB: process that answers from stored vectors | {f(mem['dspy_warm_mb'], 0)} (warm process, median) | "
      f"{f(mem['persona_ask_mb'], 0)} (`ask --dry-run`, median; max {f(mem['persona_ask_max_mb'], 0)}) | "
      f"DSPy/persona {f(ratios['peak_rss_answering_dspy_warm_over_persona_ask'], 2)}x |")
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
print(f"DSPy disk cache after the runs: {warm[-1]['disk_cache_entries']} entries (one per batch of 200 texts, plus one "
      f"per query), {f(warm[-1]['disk_cache_bytes'] / 1e6, 1)} MB; the DSPy timing process peaked at "
      f"{f(mem['dspy_timing_run_mb'], 0)} MB (all its timings in one process, not a figure to compare)")
print(f"vectors: {parity['parity_demos_checked']} persona demo scores checked against DSPy-side vectors, "
      f"max difference {parity['parity_max_abs_score_diff']}")
print(f"load average before / after: {load_before} / {load_after}; persona binary: {persona_bin}")
for n in notes:
    print(f"note: {n}")
print(json.dumps({
    "threads": int(threads),
    "persona_bin": persona_bin,
    "load_before": load_before, "load_after": load_after,
    "dataset": dataset or {"path": real_data},
    "dspy": dspy, "dspy_scale": scale,
    "dspy_fresh": {"cold": cold, "warm": warm, "warm_median_seconds": round(d_warm, 3)},
    "persona": {"compile": comp, "compile_turns_per_s": round(p_tps, 1),
                "compile_whole_turns_per_s": round(p_tps_whole, 1), "compile_training_seconds": round(extra_s, 3),
                "questions_handed_off": handoffs,
                "retrieval": {"n": int(len(total)), "median_ms": round(p_med, 3), "p90_ms": round(p_p90, 3),
                              "embed_median_ms": round(q(embed, 50), 3), "search_median_ms": round(q(search, 50), 3)},
                "process_start_to_answer_median_ms": round(q(start, 50), 3),
                "ask_launch_to_exit_median_ms": round(p_wall * 1000, 3)},
    "peak_rss_mb": {k: None if v is None else round(v, 1) for k, v in mem.items()},
    "parity": parity,
    "ratios": ratios,
    "notes": notes,
}, ensure_ascii=False))
PY
