#!/usr/bin/env bash
# The VM boot tests only (issue 6): real Debian kernel + our dracut initramfs in
# QEMU (TCG), head node on loopback; issue 18: a Debian 12 root with systemd as
# PID 1 made from our .deb (scripts/build-vm-image.sh), cached by input hash too. Installs the Debian packages they need,
# bundles the agent (the initramfs carries dist/: boot-agent.mjs and chunks/), runs test/vm.
# The initramfs is cached by input hash in ${BOOT_AGENT_VM_CACHE:-$TMPDIR/boot-agent-vm-cache}.
# usage: npm run test:vm
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/ensure-packages.sh --vm
bash scripts/ensure-node-modules.sh
node scripts/bundle.mjs
# The package the Debian image and the test initramfs are made from (issue 18):
# what is booted is what users install. Its last line is the .deb's path.
BOOT_AGENT_VM_DEB=$(bash scripts/package-deb.sh --no-bundle | tail -n 1)
export BOOT_AGENT_VM_DEB
export BOOT_AGENT_TEST_VM=1
# One file at a time (tap's default runs them in parallel): each boots QEMU on a shared host.
exec node scripts/run-tests.mjs --jobs=1 test/vm/*.test.ts
