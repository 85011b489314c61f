#!/usr/bin/env bash
# Runs one benchmark: npm run bench -- NAME [args]   (NAME = a file bench/NAME.ts)
# Installs what it needs and bundles the agent first; results go to stdout as a
# Markdown table to paste into docs/performance.md with the command.
set -euo pipefail
cd "$(dirname "$0")/.."
name=${1:?usage: npm run bench -- NAME [args] (one of: $(ls bench/*.ts | xargs -n1 basename | sed 's/\.ts$//' | grep -v '^lib$' | tr '\n' ' '))}
shift
[ -f "bench/$name.ts" ] || { echo "no benchmark bench/$name.ts" >&2; exit 2; }
# vm-root boots QEMU: the VM packages too (what npm run test:vm installs).
if [ "$name" = vm-root ]; then bash scripts/ensure-packages.sh --vm; else bash scripts/ensure-packages.sh; fi
bash scripts/ensure-node-modules.sh
node scripts/bundle.mjs
# vm-root boots an image and an initramfs made from the agent's .deb (as scripts/test-vm.sh
# does): this tree's, unless BOOT_AGENT_VM_DEB names one.
if [ "$name" = vm-root ] && [ -z "${BOOT_AGENT_VM_DEB:-}" ]; then
  BOOT_AGENT_VM_DEB=$(bash scripts/package-deb.sh --no-bundle | tail -n 1)
  export BOOT_AGENT_VM_DEB
fi
TS_NODE_TRANSPILE_ONLY=1 exec node --import=@isaacs/ts-node-temp-fork-for-pr-2009/import "bench/$name.ts" "$@"
