#!/usr/bin/env bash
# Installs the Debian packages the demo and the tests use, when any is missing.
# usage: scripts/ensure-packages.sh [--vm]   (--vm adds what the QEMU boot tests need)
# We run as root on Debian (the README contract); apt is only called when needed.
set -euo pipefail

pkgs=(
  nginx-light      # the image origin in tests (Range, access log)
  squashfs-tools   # mksquashfs / unsquashfs
  xxhash           # xxhsum, the benchmark baseline for fast re-verify
  casync           # the delta benchmark's reference
  e2fsprogs        # mkfs.ext4, e2label, debugfs
  xfsprogs         # mkfs.xfs (xfs partitions)
  util-linux       # mount, losetup, blkid, lsblk
  fdisk            # sfdisk, partx (partitioned disk images)
  dmidecode        # systeminformation's DMI source
  kmod             # modprobe
  curl             # benchmark baseline
  openssl          # benchmark baseline; test certificates (site CA)
  time             # GNU time: peak RSS in benchmarks
  dpkg-dev         # dpkg-shlibdeps: the .deb's Depends (npm run package)
  binutils         # strip: the runtime the .deb carries
  lintian          # the .deb's checks (test/package)
  rpm              # rpmbuild: the EL9 spec (test/package)
  man-db           # man --warnings: the man pages (test/package)
  systemd          # systemd-notify (the daemon's Type=notify), systemd-analyze
  python3          # the stand-in notify socket (test/daemon/notify.test.ts)
)
if [ "${1:-}" = "--vm" ]; then
  pkgs+=(qemu-system-x86 linux-image-amd64 dracut-core dracut-network busybox-static
         cpio udev lz4 xz-utils zstd binutils isc-dhcp-client iproute2)
  # issue 18: the Debian image (mmdebstrap), the systemd-flavour initramfs (dracut's
  # systemd modules copy the host's systemd, networkd, dbus), the package (dpkg-dev)
  pkgs+=(mmdebstrap systemd dbus dpkg-dev)
fi

missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" != 0 ]; then
  echo "ensure-packages: missing Debian packages: ${missing[*]} (run as root to install them)" >&2
  exit 1
fi
echo "ensure-packages: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
