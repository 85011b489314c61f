#!/usr/bin/env bash
# The VM boot tests only (issue 6): real Debian kernel + our dracut initramfs in
# QEMU (TCG), head node on loopback. Installs the Debian packages they need,
# bundles the agent (the initramfs carries dist/: boot-agent.mjs and chunks/), runs test/vm.
# The initramfs is cached by input hash in ${BOOT_AGENT_VM_CACHE:-$TMPDIR/boot-agent-vm-cache}.
# usage: npm run test:vm
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/ensure-packages.sh --vm
bash scripts/ensure-node-modules.sh
node scripts/bundle.mjs
export BOOT_AGENT_TEST_VM=1
exec node scripts/run-tests.mjs test/vm/*.test.ts
