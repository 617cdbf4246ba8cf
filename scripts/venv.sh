#!/usr/bin/env bash
# Create or refresh .venv/ in the repo root and install the project into it.
# Sourced by main.sh and test.sh; the extra to install is $1 ("" or "dev").
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
if ! "$PYTHON" -c 'import sys; raise SystemExit(sys.version_info < (3, 11))'; then
    echo "boundary-audit needs Python >= 3.11; $PYTHON is $("$PYTHON" --version 2>&1)" >&2
    exit 1
fi
if [ ! -x "$REPO/.venv/bin/python" ]; then
    "$PYTHON" -m venv "$REPO/.venv"
fi
VENV_PY="$REPO/.venv/bin/python"
"$VENV_PY" -m pip install --quiet --disable-pip-version-check --upgrade pip
extra="${1:-}"
if [ -n "$extra" ]; then
    "$VENV_PY" -m pip install --quiet --disable-pip-version-check -e "$REPO[$extra]"
else
    "$VENV_PY" -m pip install --quiet --disable-pip-version-check -e "$REPO"
fi
