#!/usr/bin/env bash
# The main job: set up .venv/ and run the end-to-end demonstration.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$REPO/scripts/venv.sh" "" 2> >(grep -v '^WARNING: Location' >&2)
exec "$REPO/.venv/bin/boundary-audit" demo "$@"
