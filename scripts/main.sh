#!/usr/bin/env bash
# The main job: set up .venv/ and run the whole pipeline on this machine
# (collector on SQLite, agent, a confined command), printing its audit trail.
# Arguments go to `boundary-audit quickstart` (e.g. --serve).
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$REPO/scripts/venv.sh" "" 2> >(grep -v '^WARNING: Location' >&2)
exec "$REPO/.venv/bin/boundary-audit" quickstart "$@"
