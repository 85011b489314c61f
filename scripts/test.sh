#!/usr/bin/env bash
# The whole test suite (README command 2; .ci/run calls exactly `npm test`).
# Installs what it needs, type-checks, bundles, runs every tap test (root / loop /
# QEMU tests included; under CI=true a missing capability fails instead of skipping),
# and ends with the plain line `N passed, N failed`.
# usage: npm test [-- --no-vm] [-- test/some.test.ts ...]
set -euo pipefail
cd "$(dirname "$0")/.."

vm=1
files=()
for a in "$@"; do
  case "$a" in
    --no-vm) vm=0 ;;
    *) files+=("$a") ;;
  esac
done

bash scripts/ensure-packages.sh $([ $vm = 1 ] && echo --vm)
bash scripts/ensure-node-modules.sh
npx tsc --noEmit -p .
node scripts/bundle.mjs

export BOOT_AGENT_TEST_VM=$vm
if [ $vm = 1 ]; then
  # The Debian VM image and its initramfs are made from our .deb (issue 18), as in
  # npm run test:vm: what is booted is what users install. Cached by content.
  BOOT_AGENT_VM_DEB=$(bash scripts/package-deb.sh --no-bundle | tail -n 1)
  export BOOT_AGENT_VM_DEB
fi
# The tests talk to loopback only, and the agent reads its own site CA
# (agent/transport/trust.ts). A NODE_EXTRA_CA_CERTS inherited from a
# developer's shell (npm above may need it) would make node 20 parse that
# file at the start of each of the suite's node processes (~70 ms each here).
unset NODE_EXTRA_CA_CERTS
exec node scripts/run-tests.mjs "${files[@]}"
