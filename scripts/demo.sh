#!/usr/bin/env bash
# The local demo (README command 1): `npm run demo`.
# Installs what it needs (Debian packages, node modules), bundles the agent, and runs
# `boot-agent demo`: loop-device disks, a local head node, two real disked boots,
# then removes everything it made (also on failure or Ctrl-C; see agent/cli/demo.ts).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/ensure-packages.sh          # squashfs-tools, e2fsprogs, util-linux, ...
bash scripts/ensure-node-modules.sh      # npm ci when node_modules is missing or stale
node scripts/bundle.mjs                  # dist/boot-agent.mjs + dist/chunks/, what the initramfs carries
exec node dist/boot-agent.mjs demo "$@"
