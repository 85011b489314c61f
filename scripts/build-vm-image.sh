#!/usr/bin/env bash
# Builds the OS image the VM tests boot (issue 18): a minimal Debian 12 root made
# with mmdebstrap, systemd as PID 1, boot-agent installed FROM ITS PACKAGE (the .deb
# that `npm run package` makes, so what is booted is what users install) with
# boot-agent.service enabled by the package's own postinst, squashed with mksquashfs.
#
#   --variant=essential + systemd-sysv udev: no apt, no recommends; docs, man pages
#   and locales are not unpacked (dpkg path-exclude), so the image stays small.
#   systemd-networkd does DHCP on every en*/eth* link (the booted daemon reports to
#   the head node); systemd-firstboot is masked (no prompt on a serial console).
#
# With --test-probe the image also carries a test-only unit, ba-vm-report.service,
# which acts only when the kernel command line has ba.vmtest.report: once
# boot-agent.service is active and has reported, it writes the unit states and
# `journalctl -b -o json` to the virtio disk with serial "ba-report", then powers off.
# It is the tests' window into the guest; nothing else in the image knows of it.
#
# usage: scripts/build-vm-image.sh --deb boot-agent_*.deb --out IMAGE.squashfs
#        [--suite bookworm] [--mirror URL] [--tree DIR] [--test-probe]
#   --tree DIR   keep the unpacked root there (default: a temp dir, removed)
#   --mirror URL Debian mirror (default: the machine's apt sources)
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)

deb=""
out=""
suite=bookworm
mirror=""
tree=""
probe=0
usage() { sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
while [ $# -gt 0 ]; do
  case "$1" in
    --deb) deb="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    --suite) suite="$2"; shift 2 ;;
    --mirror) mirror="$2"; shift 2 ;;
    --tree) tree="$2"; shift 2 ;;
    --test-probe) probe=1; shift ;;
    -h|--help) usage ;;
    *) echo "build-vm-image: unknown argument: $1" >&2; usage ;;
  esac
done
[ -n "$out" ] || { echo "build-vm-image: --out IMAGE.squashfs is required" >&2; exit 2; }
[ -f "$deb" ] || { echo "build-vm-image: --deb ${deb:-(none)}: no such package (run: npm run package)" >&2; exit 2; }
for t in mmdebstrap mksquashfs; do
  command -v "$t" >/dev/null || { echo "build-vm-image: $t not found (Debian: mmdebstrap squashfs-tools)" >&2; exit 2; }
done
[ "$(id -u)" = 0 ] || { echo "build-vm-image: must run as root (mmdebstrap --mode=root, device nodes in the tree)" >&2; exit 2; }
deb=$(readlink -f "$deb")

work=$(mktemp -d "${TMPDIR:-/tmp}/ba-vm-image.XXXXXX")
trap 'rm -rf -- "$work"' EXIT
[ -n "$tree" ] || tree="$work/root"
rm -rf -- "$tree"

# The package's Depends (first of each alternative, versions dropped), so that
# mmdebstrap fetches them; a local .deb given to --include is not reachable from
# the chroot's dpkg in --mode=root.
deps=$(dpkg-deb -f "$deb" Depends | tr ',' '\n' | sed 's/|.*//; s/(.*)//; s/[[:space:]]//g' | grep -v '^$' | paste -sd, -)

# Customisation run by mmdebstrap on the host with the root as $1.
cat > "$work/customize.sh" <<'EOF'
#!/bin/sh
set -eu
root="$1"
echo ba-vm > "$root/etc/hostname"
# DHCP on the NIC the initramfs already brought up (the lease is renewed here).
mkdir -p "$root/etc/systemd/network"
cat > "$root/etc/systemd/network/80-dhcp.network" <<'NET'
[Match]
Name=en* eth*

[Network]
DHCP=ipv4
NET
systemctl --root "$root" enable systemd-networkd.service >/dev/null 2>&1
# A first boot must not stop at an interactive prompt on the serial console.
systemctl --root "$root" mask systemd-firstboot.service >/dev/null 2>&1
# The package's postinst enabled the daemon; fail the build if it did not.
systemctl --root "$root" is-enabled boot-agent.service >/dev/null
EOF

cat > "$work/probe.sh" <<'EOF'
#!/bin/sh
set -eu
root="$1"
mkdir -p "$root/usr/local/lib/ba-vmtest"
cat > "$root/usr/local/lib/ba-vmtest/report" <<'SH'
#!/bin/sh
# Test probe (ba-vm-report.service): waits, bounded, for boot-agent.service to be
# active and to have reported, then writes the state and the journal to the report
# disk and powers off. Lines on the console mark progress for the test's log.
out=/dev/disk/by-id/virtio-ba-report
# A wall-clock deadline (a loaded TCG guest makes each round slow): 90 s.
start=$(date +%s)
while [ $(($(date +%s) - start)) -lt 90 ]; do
    systemctl is-active -q boot-agent.service && \
        journalctl -b -u boot-agent.service -o cat | grep -q 'events delivered' && break
    sleep 1
done
# Issue 19's runtime-error scenarios (test/vm/overlay.test.ts), only when asked:
# ba.vmtest.corrupt=OFFSET damages the mounted cache object at OFFSET after the boot
# verified it (a disk going bad under a running root); ba.vmtest.canary reads the
# canary (its second, compressed block is what the test damaged), then waits for the
# daemon's self-check and gives the sender time to deliver its events.
for arg in $(cat /proc/cmdline); do
    case "$arg" in
    ba.vmtest.corrupt=*)
        obj=$(find /run/boot-agent/cache/objects -type f -name '[0-9a-f]*[0-9a-f]' | head -n 1)
        printf 'boot-agent-vm-test-damage' | dd of="$obj" bs=1 seek="${arg#*=}" conv=notrunc status=none
        echo "BA-CORRUPTED $obj at ${arg#*=} rc=$?" > /dev/console
        sync; echo 3 > /proc/sys/vm/drop_caches ;;
    ba.vmtest.canary)
        echo "BA-CANARY-START" > /dev/console
        cat /usr/local/lib/ba-vmtest/canary > /dev/null 2>&1 && rc=0 || rc=$?
        echo "BA-CANARY-READ rc=$rc" > /dev/console
        t=$(date +%s)
        while [ $(($(date +%s) - t)) -lt 180 ]; do
            journalctl -b -u boot-agent.service -o cat | grep -q 'finished.*self-check\|self-check.*finished\|failed.*self-check' && break
            sleep 2
        done
        echo "BA-SELF-CHECK waited=$(($(date +%s) - t))s" > /dev/console
        sleep 20 ;;
    esac
done
{
    echo "BA-STATE boot-agent.service=$(systemctl is-active boot-agent.service) system=$(systemctl is-system-running) pid1=$(cat /proc/1/comm) waited=$(($(date +%s) - start))s"
    journalctl -b -o json --no-pager
} > /run/ba-report.txt 2>&1
echo "BA-REPORT $(wc -c < /run/ba-report.txt) bytes" > /dev/console
if [ -b "$out" ]; then
    dd if=/run/ba-report.txt of="$out" bs=1M conv=fsync status=none
    echo "BA-REPORT-WRITTEN" > /dev/console
else
    echo "BA-REPORT-NO-DISK" > /dev/console
fi
systemctl poweroff --no-block
SH
chmod 0755 "$root/usr/local/lib/ba-vmtest/report"
# The canary: three squashfs blocks (128 KiB each, no fragment): random bytes, stored
# uncompressed so the test finds the file in the image by them; text, stored compressed
# (a few dozen bytes) right after: damaging it makes squashfs's decompression fail; random
# again, so that the 4 KiB page around the damage (fs-verity refuses whole pages) holds
# nothing but the canary (other files' data there would fail too: the probe's own script).
head -c 131072 /dev/urandom > "$root/usr/local/lib/ba-vmtest/canary"
yes 'boot-agent canary: a compressible block' | head -c 131072 >> "$root/usr/local/lib/ba-vmtest/canary"
head -c 131072 /dev/urandom >> "$root/usr/local/lib/ba-vmtest/canary"
cat > "$root/etc/systemd/system/ba-vm-report.service" <<'UNIT'
[Unit]
Description=boot-agent VM test probe (journal to the report disk, then power off)
ConditionKernelCommandLine=ba.vmtest.report
After=boot-agent.service network-online.target

[Service]
Type=oneshot
ExecStart=/usr/local/lib/ba-vmtest/report
TimeoutStartSec=300

[Install]
WantedBy=multi-user.target
UNIT
systemctl --root "$root" enable ba-vm-report.service >/dev/null 2>&1
EOF

args=(
  --variant=essential --mode=root --format=directory
  --include=systemd-sysv,udev
  --include="$deps"
  # Recommended by the package: seals and measures cache objects (fs-verity, issue #19).
  --include=fsverity
  --dpkgopt='path-exclude=/usr/share/man/*'
  --dpkgopt='path-exclude=/usr/share/locale/*'
  --dpkgopt='path-exclude=/usr/share/info/*'
  --dpkgopt='path-exclude=/usr/share/doc/*'
  --dpkgopt='path-include=/usr/share/doc/*/copyright'
  --dpkgopt='path-include=/usr/share/doc/boot-agent/*'
  --dpkgopt='path-exclude=/usr/share/lintian/*'
  # The package itself, the way `apt-get install ./boot-agent_*.deb` would: its
  # Depends come from the mirror above, then dpkg installs it and runs its postinst.
  --customize-hook="copy-in $deb /tmp"
  --customize-hook="chroot \"\$1\" dpkg -i /tmp/${deb##*/}"
  --customize-hook="rm -f \"\$1/tmp/${deb##*/}\""
  --customize-hook="sh $work/customize.sh \"\$1\""
)
[ $probe = 1 ] && args+=(--customize-hook="sh $work/probe.sh \"\$1\"")
t0=$(date +%s)
mmdebstrap "${args[@]}" "$suite" "$tree" ${mirror:+"$mirror"}
# No package cache or lists in the image.
rm -rf -- "$tree"/var/cache/apt/archives/*.deb "$tree"/var/lib/apt/lists/* 2>/dev/null || true
mkdir -p "$(dirname "$out")"
rm -f -- "$out"
mksquashfs "$tree" "$out" -comp zstd -noappend -no-progress -quiet -no-xattrs
t1=$(date +%s)
echo "build-vm-image: $out ($(du -h "$out" | cut -f1) squashfs, $(du -sh "$tree" | cut -f1) unpacked, $((t1 - t0)) s, $suite)" >&2
