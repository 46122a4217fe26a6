#!/usr/bin/env bash
# Install the official OpenAI Python SDK into a venv for the tests that use `persona serve` as
# a real client would (tests/sdk/openai_client.py). Idempotent: an existing venv with the pinned
# version is left alone, so a second run does no network access.
#
#   scripts/setup-sdk.sh        prints the venv's python on stdout
#
#   $CACHE/sdk/venv    CACHE = ${PERSONA_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/persona}
#
# Env: PERSONA_PYTHON  python used for the venv (default python3, >= 3.9)
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE="${PERSONA_CACHE_DIR:-${XDG_CACHE_HOME:-${HOME:?HOME is not set}/.cache}/persona}"
PYTHON="${PERSONA_PYTHON:-python3}"
VENV="$CACHE/sdk/venv"
REQ=tests/sdk/requirements.txt
WANT="$(sed -n 's/^openai==//p' "$REQ")"

have="$("$VENV/bin/python" -c 'import openai; print(openai.__version__)' 2>/dev/null || true)"
if [ "$have" != "$WANT" ]; then
  echo "setup-sdk: installing openai $WANT into $VENV" >&2
  rm -rf "$VENV"
  mkdir -p "$(dirname "$VENV")"
  "$PYTHON" -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r "$REQ" >&2
  have="$("$VENV/bin/python" -c 'import openai; print(openai.__version__)')"
  [ "$have" = "$WANT" ] || { echo "setup-sdk: installed openai $have, wanted $WANT" >&2; exit 1; }
fi
echo "$VENV/bin/python"
