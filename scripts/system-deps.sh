#!/usr/bin/env bash
# Install the system packages the test suite starts for real, when missing.
# Idempotent and quiet when everything is already there.
set -euo pipefail
missing=()
command -v curl >/dev/null 2>&1 || missing+=(curl)
# Collector tests: a throwaway PostgreSQL server (initdb/pg_ctl) and a real browser.
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || missing+=(postgresql)
[ -x /usr/bin/chromium ] || missing+=(chromium)
# The client matrix's Node.js rows (tests/clients): Debian's Node.js and npm.
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)
# The evidence benchmark's instruction counts (benchmarks/evidence_instructions.py).
command -v callgrind_control >/dev/null 2>&1 || missing+=(valgrind)
if [ "${#missing[@]}" -gt 0 ]; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "missing system packages: ${missing[*]} (install them, or run as root)" >&2
        exit 1
    fi
    echo "installing system packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${missing[@]}" >/dev/null
fi
