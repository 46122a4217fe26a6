#!/usr/bin/env bash
# The reliability runs: the kill-and-restart soak (eval/reliability/soak.py) on SQLite and on
# PostgreSQL, with the instant stand-in LLM and the faulty one (stalls, 500s, garbage, dropped
# connections), then the overload run (eval/reliability/overload.py). Builds the debug binary,
# compiles the training data into a temporary artifact, starts a throwaway PostgreSQL cluster if
# none is running (scripts/pg.sh) and stops whatever it started. Loopback only.
#
#   bash eval/reliability/run.sh           # the full runs (about 10 minutes)
#   bash eval/reliability/run.sh --short   # what CI runs (about 1 minute)
set -euo pipefail
cd "$(dirname "$0")/../.."
short=0
[ "${1:-}" = "--short" ] && short=1
bash scripts/setup-assets.sh >/dev/null
cargo build --locked --quiet
persona="${CARGO_TARGET_DIR:-target}/debug/persona"
work="$(mktemp -d)"
pg_started=0
cleanup() {
  if [ "$pg_started" = 1 ]; then bash scripts/pg.sh stop >/dev/null 2>&1 || true; fi
  rm -rf "$work"
}
trap cleanup EXIT
if ! bash scripts/pg.sh status >/dev/null 2>&1; then
  bash scripts/pg.sh start >/dev/null
  pg_started=1
fi
pg_url="$(bash scripts/pg.sh url)"
"$persona" compile training_data/conversations.json -o "$work/persona.bin" >/dev/null 2>&1 \
  || { echo "reliability: compiling the training data failed" >&2; exit 1; }
python3 eval/reliability/soak.py --self-test
soak() { python3 eval/reliability/soak.py --persona "$persona" --artifact "$work/persona.bin" "$@"; }
if [ "$short" = 1 ]; then
  soak --history "$work/short.sqlite3" --llm faulty --fans 6 --messages 10 --seconds 25 --kill-every 1 3
  soak --history "$pg_url" --llm faulty --fans 6 --messages 10 --seconds 25 --kill-every 1 3
  python3 eval/reliability/overload.py --persona "$persona" --artifact "$work/persona.bin" --levels 100 --seconds 5
else
  for llm in instant faulty; do
    soak --history "$work/$llm.sqlite3" --llm "$llm" --fans 9 --messages 30 --seconds 150 --kill-every 1.5 5
    soak --history "$pg_url" --llm "$llm" --fans 9 --messages 30 --seconds 150 --kill-every 1.5 5
  done
  python3 eval/reliability/overload.py --persona "$persona" --artifact "$work/persona.bin" --levels 50 200 800 --seconds 15
fi
