#!/usr/bin/env bash
# The browser test of the persona console: builds persona, serves the shipped training data with
# --review --console against the real local LLM, and drives the page in headless Chromium
# (tests/browser/console.test.mjs: log in, try it as a fan, a refused edit, an approved edit,
# no console error or CSP violation).
#
#   bash tests/browser/run.sh [--screenshots DIR | --install-only]
#
#   --screenshots DIR  save console-draft.png, console-refused.png and console-approved.png in DIR
#   --install-only     only install chromium and playwright-core, then exit (CI runs this in the
#                      background while the other tests run)
#
# Installs what it needs: Debian's chromium when /usr/bin/chromium is missing (apt-get, as root or
# via sudo) and playwright-core (npm ci in tests/browser). Needs node >= 20 and npm. The local LLM
# is started if it is not running, and stopped at the end only if this script started it; the
# server and its work directory are always removed at exit.
# Env: CHROMIUM (default /usr/bin/chromium), CARGO_TARGET_DIR, PERSONA_LLM_PORT (see scripts/llm.sh).
set -euo pipefail

die() { echo "tests/browser/run.sh: $*" >&2; exit 1; }
usage() { awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "$0" >&2; }

shots=""
install_only=0
while (($#)); do
  case "$1" in
    --install-only) install_only=1; shift ;;
    --screenshots)
      [[ $# -ge 2 && -n "$2" ]] || die "--screenshots needs a directory"
      mkdir -p "$2" || die "cannot create the screenshots directory $2"
      shots="$(cd "$2" && pwd)"
      shift 2
      ;;
    -h | --help) usage; exit 0 ;;
    *) usage; die "unknown argument: $1" ;;
  esac
done

cd "$(dirname "${BASH_SOURCE[0]}")/../.."

chromium="${CHROMIUM:-/usr/bin/chromium}"
command -v node >/dev/null && command -v npm >/dev/null || die "node (>= 20) and npm are needed"
node -e 'process.exit(Number(process.versions.node.split(".")[0]) >= 20 ? 0 : 1)' ||
  die "node >= 20 is needed, found $(node --version)"

# as_root CMD...: runs CMD as root, through sudo when this script is not root.
as_root() {
  if [[ "$(id -u)" -eq 0 ]]; then
    "$@"
  elif command -v sudo >/dev/null; then
    sudo "$@"
  else
    die "not root and no sudo: cannot run $*"
  fi
}

apt_install_chromium() {
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium >/dev/null
}

if [[ ! -x "$chromium" ]]; then
  [[ "$chromium" == /usr/bin/chromium ]] || die "CHROMIUM=$chromium is not an executable"
  echo "==> installing Debian's chromium" >&2
  if ! apt_install_chromium; then
    echo "==> apt-get update, then installing chromium again" >&2
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update >/dev/null || die "apt-get update failed"
    apt_install_chromium || die "could not install chromium with apt-get"
  fi
  [[ -x "$chromium" ]] || die "chromium was installed but $chromium is missing"
fi

if [[ ! -f tests/browser/node_modules/playwright-core/package.json ]]; then
  echo "==> npm ci (tests/browser: playwright-core)" >&2
  (cd tests/browser && npm ci --no-audit --no-fund >/dev/null) || die "npm ci failed in tests/browser"
fi
((install_only == 0)) || exit 0

echo "==> building persona" >&2
cargo build --locked --quiet || die "cargo build failed"
persona="${CARGO_TARGET_DIR:-target}/debug/persona"
[[ -x "$persona" ]] || die "no persona binary at $persona"

echo "==> installing assets" >&2
bash scripts/setup-assets.sh >/dev/null || die "scripts/setup-assets.sh failed"

work="$(mktemp -d "${TMPDIR:-/tmp}/persona-browser.XXXXXX")"
server_pid=""
llm_started=0

cleanup() {
  local status=$?
  if [[ -n "$server_pid" ]] && kill -0 "$server_pid" 2>/dev/null; then
    kill "$server_pid" 2>/dev/null || true
    for _ in $(seq 50); do
      kill -0 "$server_pid" 2>/dev/null || break
      sleep 0.2
    done
    kill -9 "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
  fi
  if [[ "$status" -ne 0 && -s "$work/serve.log" ]]; then
    echo "--- last lines of the persona serve log ---" >&2
    tail -n 40 "$work/serve.log" >&2
  fi
  if [[ "$llm_started" == 1 ]]; then bash scripts/llm.sh stop >/dev/null 2>&1 || true; fi
  rm -rf "$work"
  exit "$status"
}
trap cleanup EXIT

echo "==> persona compile training_data/conversations.json" >&2
"$persona" compile training_data/conversations.json -o "$work/persona.bin" >/dev/null ||
  die "persona compile failed"

if ! bash scripts/llm.sh status >/dev/null 2>&1; then
  echo "==> starting the local LLM" >&2
  llm_started=1
  bash scripts/llm.sh start >/dev/null || die "could not start the local LLM (scripts/llm.sh start)"
fi
llm_url="$(bash scripts/llm.sh url)"

port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')" ||
  die "could not pick a free port"
PERSONA_TOKEN="$(od -An -tx1 -N16 /dev/urandom | tr -d ' \n')"
export PERSONA_TOKEN
url="http://127.0.0.1:$port"

echo "==> persona serve --review --console on $url" >&2
"$persona" serve --artifact "$work/persona.bin" --token-env PERSONA_TOKEN \
  --history "$work/history.sqlite3" --addr "127.0.0.1:$port" --review --console \
  --llm-url "$llm_url" >"$work/serve.log" 2>&1 &
server_pid=$!

deadline=$((SECONDS + 60))
until curl --silent --fail --noproxy '*' --max-time 2 "$url/healthz" >/dev/null; do
  kill -0 "$server_pid" 2>/dev/null || die "persona serve exited before answering /healthz"
  ((SECONDS < deadline)) || die "persona serve did not answer $url/healthz within 60 s"
  sleep 0.5
done

echo "==> node tests/browser/console.test.mjs" >&2
PERSONA_URL="$url" CHROMIUM="$chromium" SCREENSHOTS_DIR="$shots" node tests/browser/console.test.mjs
