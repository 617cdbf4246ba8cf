#!/usr/bin/env bash
# The npm packages the Node.js rows of the client matrix use (tests/clients):
# `ws`, `https-proxy-agent` (ws through an HTTP proxy) and `undici` (its
# ProxyAgent / EnvHttpProxyAgent, which Node 20's built-in fetch does not
# expose). Installed once, at set-up time, into a cache directory the tests
# read; the tests never reach the network. Idempotent and quiet: a second
# run with the same pins does nothing. Without Node.js or npm it says so
# and exits 0 (the Node tests then skip).
#
#   BOUNDARY_AUDIT_NODE_DEPS  the directory (default
#                             ${XDG_CACHE_HOME:-~/.cache}/boundary-audit-node)
set -euo pipefail

DIR="${BOUNDARY_AUDIT_NODE_DEPS:-${XDG_CACHE_HOME:-$HOME/.cache}/boundary-audit-node}"
# Pinned: ws 8 (CommonJS, Node >= 10); https-proxy-agent 7, the last
# CommonJS major (8+ is ESM-only); undici 6, the major Node 20 bundles
# (EnvHttpProxyAgent since 6.11).
PINS='{"ws": "8.23.0", "https-proxy-agent": "7.0.6", "undici": "6.29.1"}'

if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    echo "node-deps: Node.js or npm absent, nothing to install" >&2
    exit 0
fi

manifest="{\"name\": \"boundary-audit-node-deps\", \"private\": true, \"dependencies\": $PINS}"
stamp="$DIR/.installed"
if [[ -f "$stamp" && "$(cat "$stamp")" == "$manifest" && -d "$DIR/node_modules/ws" ]]; then
    exit 0
fi
mkdir -p "$DIR"
printf '%s\n' "$manifest" >"$DIR/package.json"
npm install --prefix "$DIR" --no-audit --no-fund --loglevel=error >/dev/null
printf '%s' "$manifest" >"$stamp"
