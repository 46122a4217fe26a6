#!/usr/bin/env bash
# Run the local OpenAI-compatible LLM server (llama.cpp via xllamacpp, one
# thread) in the background, serving the local model $PERSONA_LOCAL_MODEL
# (smollm2-135m or gemma3-270m; default: DEFAULT_MODEL in llm_server.py).
#
#   scripts/llm.sh start    start it (installing the assets if needed), wait
#                           until healthy, print the base URL on stdout
#   scripts/llm.sh stop     SIGTERM, then SIGKILL after 10 s; fine if not running
#   scripts/llm.sh status   "running ..." (exit 0) or "not running" (exit 1)
#   scripts/llm.sh url      print the base URL, http://127.0.0.1:PORT/v1
#
# Env: PERSONA_LLM_PORT (default 8080), PERSONA_CACHE_DIR (see setup-assets.sh),
#      PERSONA_LOCAL_MODEL, PERSONA_LLM_START_TIMEOUT (seconds, default 60).
# Files: $CACHE/llm/server.pid, server.port, server.model, server.log
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CACHE="${PERSONA_CACHE_DIR:-${XDG_CACHE_HOME:-${HOME:?HOME is not set}/.cache}/persona}"
PORT="${PERSONA_LLM_PORT:-8080}"
TIMEOUT="${PERSONA_LLM_START_TIMEOUT:-60}"
LLM_DIR="$CACHE/llm"
VENV_PY="$LLM_DIR/venv/bin/python"
NAME="${PERSONA_LOCAL_MODEL:-$(sed -n 's/^DEFAULT_MODEL = "\(.*\)"$/\1/p' "$HERE/llm_server.py")}"
case "$NAME" in
  smollm2-135m) MODEL="$LLM_DIR/SmolLM2-135M-Instruct.Q4_1.gguf" ;;
  gemma3-270m) MODEL="$LLM_DIR/gemma-3-270m-q4_k_m.gguf" ;;
  *) echo "llm.sh: unknown PERSONA_LOCAL_MODEL '$NAME': choose smollm2-135m or gemma3-270m" >&2; exit 2 ;;
esac
MODELFILE="$LLM_DIR/server.model" # model the running server was started with
PIDFILE="$LLM_DIR/server.pid"
PORTFILE="$LLM_DIR/server.port"  # port the running server was started with
LOG="$LLM_DIR/server.log"
URL="http://127.0.0.1:$PORT/v1"

die() { echo "llm.sh: $*" >&2; exit 1; }

if ! [[ "$PORT" =~ ^[0-9]{1,5}$ ]] || ((10#$PORT < 1 || 10#$PORT > 65535)); then
  die "bad PERSONA_LLM_PORT: $PORT"
fi

# alive PID: the process exists and is not a zombie (a detached server is
# reaped by init, which may take a while after it has exited)
alive() {
  local st
  kill -0 "$1" 2>/dev/null || return 1
  st="$(ps -o stat= -p "$1" 2>/dev/null || true)"
  [[ "$st" != Z* ]]
}

# pid from the pid file if that process is alive and is our server, else nothing
server_pid() {
  local pid
  [[ -f "$PIDFILE" ]] || return 0
  pid="$(tr -dc '0-9' <"$PIDFILE")"
  [[ -n "$pid" ]] || return 0
  if alive "$pid" && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q 'llm_server\.py'; then
    echo "$pid"
  fi
}

# GET /health answers 200 (it says 503 while the model is loading)
healthy() {
  local py=python3
  [[ -x "$VENV_PY" ]] && py="$VENV_PY"
  "$py" - "http://127.0.0.1:$PORT/health" <<'PY' >/dev/null 2>&1
import sys, urllib.request
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # ignore *_proxy
try:
    with opener.open(sys.argv[1], timeout=2) as r:
        sys.exit(0 if r.status == 200 else 1)
except Exception:
    sys.exit(1)
PY
}

# wait_healthy PID: 0 when healthy, 1 if the process died or the timeout passed
wait_healthy() {
  local pid="$1" deadline=$((SECONDS + TIMEOUT))
  while ((SECONDS < deadline)); do
    alive "$pid" || return 1
    if healthy; then return 0; fi
    sleep 0.25
  done
  return 1
}

show_log() {
  echo "---- last 20 lines of $LOG ----" >&2
  tail -n 20 "$LOG" >&2 2>/dev/null || true
}

stop_pid() {
  local pid="$1" i
  kill -TERM "$pid" 2>/dev/null || return 0
  for ((i = 0; i < 100; i++)); do
    alive "$pid" || return 0
    sleep 0.1
  done
  echo "llm.sh: pid $pid still alive after 10 s, sending SIGKILL" >&2
  kill -KILL "$pid" 2>/dev/null || true
  for ((i = 0; i < 50; i++)); do
    alive "$pid" || return 0
    sleep 0.1
  done
}

cmd_start() {
  local pid
  pid="$(server_pid)"
  if [[ -n "$pid" ]]; then
    local running_port
    running_port="$(cat "$PORTFILE" 2>/dev/null || true)"
    if [[ -n "$running_port" && "$running_port" != "$PORT" ]]; then
      die "a server is already running (pid $pid) on port $running_port, not $PORT; stop it first: $0 stop"
    fi
    local running_model
    running_model="$(cat "$MODELFILE" 2>/dev/null || true)"
    if [[ -n "$running_model" && "$running_model" != "$NAME" ]]; then
      die "a server is already running (pid $pid) with $running_model, not $NAME; stop it first: $0 stop"
    fi
    if wait_healthy "$pid"; then
      echo "$URL"
      return 0
    fi
    show_log
    die "a server is running (pid $pid) but does not answer on port $PORT; try: $0 stop"
  fi
  rm -f "$PIDFILE" "$PORTFILE" "$MODELFILE"

  if [[ ! -x "$VENV_PY" || ! -f "$LLM_DIR/venv/.persona-xllamacpp" || ! -f "$MODEL" ]]; then
    echo "llm.sh: LLM venv or model missing, running setup-assets.sh" >&2
    "$HERE/setup-assets.sh" --llm --model "$NAME" >&2 || die "setup-assets.sh failed"
  fi

  if healthy; then
    die "something else already answers on 127.0.0.1:$PORT (not started by this script); set PERSONA_LLM_PORT"
  fi

  mkdir -p "$LLM_DIR"
  # Detached from our session and with no inherited stdio, so a caller that
  # reads our stdout to EOF is not held open by the server.
  local -a detach=()
  if command -v setsid >/dev/null; then detach=(setsid); fi
  PERSONA_LLM_PORT="$PORT" PERSONA_LOCAL_MODEL="$NAME" PERSONA_LLM_MODEL="$MODEL" \
    "${detach[@]}" nohup "$VENV_PY" "$HERE/llm_server.py" </dev/null >"$LOG" 2>&1 &
  pid=$!
  echo "$pid" >"$PIDFILE"
  echo "$PORT" >"$PORTFILE"
  echo "$NAME" >"$MODELFILE"

  if wait_healthy "$pid"; then
    echo "$URL"
    return 0
  fi
  if alive "$pid"; then
    echo "llm.sh: server (pid $pid) not healthy on port $PORT after ${TIMEOUT} s; stopping it" >&2
    stop_pid "$pid"
  else
    echo "llm.sh: server exited during start-up" >&2
  fi
  rm -f "$PIDFILE" "$PORTFILE" "$MODELFILE"
  show_log
  exit 1
}

cmd_stop() {
  local pid
  pid="$(server_pid)"
  if [[ -n "$pid" ]]; then
    stop_pid "$pid"
    echo "llm.sh: stopped (pid $pid)" >&2
  else
    echo "llm.sh: not running" >&2
  fi
  rm -f "$PIDFILE" "$PORTFILE" "$MODELFILE"
}

cmd_status() {
  local pid
  pid="$(server_pid)"
  if [[ -z "$pid" ]]; then
    echo "not running"
    return 1
  fi
  if healthy; then
    echo "running (pid $pid) at $URL"
  else
    echo "running (pid $pid) but not healthy on port $PORT (starting, or another port)"
  fi
}

case "${1:-}" in
  start) cmd_start ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  url) echo "$URL" ;;
  *) echo "usage: $0 start|stop|status|url" >&2; exit 2 ;;
esac
