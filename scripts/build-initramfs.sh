#!/usr/bin/env bash
# Builds an initramfs with boot-agent's dracut module from the installed dracut,
# without touching the system's dracut configuration:
#   - a private copy of /usr/lib/dracut (dracutbasedir=) with dracut/50boot-agent added,
#   - --conf /dev/null --confdir <empty dir>: no host dracut.conf is read,
#   - --no-hostonly: a generic image, not one shaped by this build host,
#   - -m: only base + boot-agent and its network deps, no systemd (this builds the
#     shell-init flavour; systemd/boot-agent-initrd.service is for systemd initramfs);
#     no kernel-modules module (~90 MB of drivers): the module installs what it needs.
# usage: npm run initramfs -- --kver K --out FILE [--bundle dist/boot-agent.mjs]
#        [--node /usr/bin/node] [--compress zstd|lz4|xz] [--pubkey F] [--ca F]
#   (without --compress: as the package's dracut.conf.d/50-boot-agent.conf says, which
#    this script puts into its private dracut tree, as the package installs it)
#        [--deb boot-agent_*.deb] [--flavour hook|systemd] [--test-module DIR]
#   (--bundle names the entry; the chunks/ directory beside it goes in with it)
#        [--token F]  this node's token file for the head (mode 0600, root; docs/security.md);
#   without it the image carries no token, whatever the build host has in /etc/boot-agent/token
#   --deb: take the module, the bundle and the runtime from the package instead,
#     unpacked into a scratch root (dpkg-deb -x): what users install is what is built.
#   --flavour systemd: the distribution's defaults, `dracut --no-hostonly --add
#     boot-agent` (every module dracut picks on its own: systemd, its network stack,
#     kernel-modules' generic drivers); hook (default): the shell-init image above.
#   --test-module DIR: TEST ONLY, a further dracut module directory (test/vm/dracut/…)
#     copied into the private tree and added; the product's module is unchanged.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)

kver="$(uname -r)"
out=""
bundle="$here/dist/boot-agent.mjs"
node_bin="$(command -v node || true)"
compress=""   # the package's dracut.conf.d snippet decides (docs/performance.md, "Initramfs size")
pubkey=""
ca=""
token=""
deb=""
flavour=hook
test_module=""
usage() { sed -n '2,24p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
while [ $# -gt 0 ]; do
  case "$1" in
    --kver) kver="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    --bundle) bundle="$2"; shift 2 ;;
    --node) node_bin="$2"; shift 2 ;;
    --compress) compress="$2"; shift 2 ;;
    --pubkey) pubkey="$2"; shift 2 ;;
    --ca) ca="$2"; shift 2 ;;
    --token) token="$2"; shift 2 ;;
    --deb) deb="$2"; shift 2 ;;
    --flavour) flavour="$2"; shift 2 ;;
    --test-module) test_module="$2"; shift 2 ;;
    -h|--help) usage ;;
    *) echo "build-initramfs: unknown argument: $1" >&2; usage ;;
  esac
done
[ -n "$out" ] || { echo "build-initramfs: --out FILE is required" >&2; exit 2; }
case "$compress" in ""|zstd|lz4|xz|gzip) ;; *) echo "build-initramfs: --compress $compress: not zstd, lz4, xz or gzip" >&2; exit 2 ;; esac
[ -d "/lib/modules/$kver" ] || { echo "build-initramfs: --kver $kver: no /lib/modules/$kver (install linux-image-$kver)" >&2; exit 2; }
case "$flavour" in hook|systemd) ;; *) echo "build-initramfs: --flavour $flavour: not hook or systemd" >&2; exit 2 ;; esac
[ -z "$deb" ] || [ -f "$deb" ] || { echo "build-initramfs: --deb $deb: no such package (run: npm run package)" >&2; exit 2; }
[ -n "$deb" ] || [ -f "$bundle" ] || { echo "build-initramfs: no agent bundle at $bundle (run: node scripts/bundle.mjs)" >&2; exit 2; }
[ -n "$deb" ] || [ -x "$node_bin" ] || { echo "build-initramfs: no Node.js binary (--node)" >&2; exit 2; }
command -v dracut >/dev/null || { echo "build-initramfs: dracut not installed (Debian: dracut-core dracut-network)" >&2; exit 2; }

work=$(mktemp -d "${TMPDIR:-/tmp}/ba-initramfs.XXXXXX")
trap 'rm -rf -- "$work"' EXIT
# Private dracut tree: the system's /usr/lib/dracut stays as it is.
cp -a /usr/lib/dracut "$work/dracut"
if [ -n "$deb" ]; then
  # The package, unpacked: its module (with the unit beside it), bundle and runtime.
  dpkg-deb -x "$deb" "$work/pkgroot"
  cp -a "$work/pkgroot/usr/lib/dracut/modules.d/50boot-agent" "$work/dracut/modules.d/50boot-agent"
  # and its compressor settings, where dracut reads the distribution's (dracutbasedir/dracut.conf.d).
  mkdir -p "$work/dracut/dracut.conf.d"
  cp "$work/pkgroot/usr/lib/dracut/dracut.conf.d/50-boot-agent.conf" "$work/dracut/dracut.conf.d/"
  bundle="$work/pkgroot/usr/lib/boot-agent/boot-agent.mjs"
  node_bin="$work/pkgroot/usr/lib/boot-agent/node"
  [ -f "$bundle" ] && [ -x "$node_bin" ] || { echo "build-initramfs: $deb lacks /usr/lib/boot-agent/{boot-agent.mjs,node}" >&2; exit 2; }
else
  cp -a "$here/dracut/50boot-agent" "$work/dracut/modules.d/50boot-agent"
  # The unit for systemd-based images lives in systemd/; the module installs it from its own dir.
  cp "$here/systemd/boot-agent-initrd.service" "$work/dracut/modules.d/50boot-agent/"
  mkdir -p "$work/dracut/dracut.conf.d"
  cp "$here/dracut/dracut.conf.d/50-boot-agent.conf" "$work/dracut/dracut.conf.d/"
fi
mkdir -p "$work/confdir" "$work/tmp"
if [ -n "$test_module" ]; then
  [ -f "$test_module/module-setup.sh" ] || { echo "build-initramfs: --test-module $test_module: no module-setup.sh there" >&2; exit 2; }
  cp -a "$test_module" "$work/dracut/modules.d/${test_module##*/}"
fi

export BOOT_AGENT_BUNDLE="$(readlink -f "$bundle")"
export BOOT_AGENT_NODE="$(readlink -f "$node_bin")"
[ -n "$pubkey" ] && export BOOT_AGENT_PUBKEY="$(readlink -f "$pubkey")"
[ -n "$ca" ] && export BOOT_AGENT_CA="$(readlink -f "$ca")"
# A generic image never picks up the build host's own token: only the one asked for.
export BOOT_AGENT_TOKEN="${token:+$(readlink -f "$token")}"
export BOOT_AGENT_TOKEN="${BOOT_AGENT_TOKEN:-$work/no-token}"

if [ "$flavour" = systemd ]; then
  # The distribution's defaults: no module list, not host-only.
  modules=(--add boot-agent)
else
  # -m: only base + boot-agent and its network deps, no systemd.
  modules=(-m "base network-legacy network boot-agent" -o "systemd systemd-networkd")
fi
# The test module's name is its directory's without the order number (99ba-vmtest: ba-vmtest).
[ -z "$test_module" ] || modules+=(--add "$(basename "$test_module" | sed 's/^[0-9]*//')")
dracutbasedir="$work/dracut" dracut \
  --conf /dev/null --confdir "$work/confdir" --tmpdir "$work/tmp" \
  --no-hostonly --no-hostonly-cmdline --no-early-microcode \
  "${modules[@]}" \
  ${compress:+--"$compress"} --force --quiet \
  --kver "$kver" "$out"
echo "build-initramfs: $out ($(du -h "$out" | cut -f1), $flavour, ${compress:-compressor of dracut.conf.d/50-boot-agent.conf}, kernel $kver${deb:+, from ${deb##*/}})" >&2
