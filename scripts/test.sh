#!/usr/bin/env bash
# The test command: set up .venv/ with the dev extra, then lint, type-check
# and run the whole suite. Extra arguments go to pytest.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
bash scripts/venv.sh dev 2> >(grep -v '^WARNING: Location' >&2)
bash scripts/system-deps.sh
bash scripts/node-deps.sh
V="$REPO/.venv/bin"
echo "== protobuf gencode freshness"
"$V/python" scripts/gen_proto.py --check
echo "== ruff"
"$V/ruff" check src tests benchmarks scripts
"$V/ruff" format --check src tests benchmarks scripts
echo "== mypy --strict"
"$V/mypy" --strict
echo "== pytest"
# Two workers: the machines this runs on have two cores, and most tests wait
# on real processes and sockets, so two in parallel nearly halve the wall
# time. BOUNDARY_AUDIT_TEST_WORKERS=0 runs in one process (for debugging).
"$V/pytest" -n "${BOUNDARY_AUDIT_TEST_WORKERS:-2}" "$@"
