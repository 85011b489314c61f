#!/usr/bin/env bash
# Installs the npm dependencies (from the lock file) when node_modules is missing or stale.
set -euo pipefail
cd "$(dirname "$0")/.."
# A symlinked node_modules is a shared install managed elsewhere (e.g. several git
# worktrees sharing one): `npm ci` would empty the directory it points to under
# everyone using it, so it is never run through a symlink.
if [ -L node_modules ]; then
  exit 0
fi
if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund --loglevel=error
fi
