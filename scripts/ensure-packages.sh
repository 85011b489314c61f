#!/usr/bin/env bash
# Installs the Debian packages the demo and the tests use, when any is missing.
# usage: scripts/ensure-packages.sh [--vm]   (--vm adds what the QEMU boot tests need)
# We run as root on Debian (the README contract); apt is only called when needed.
set -euo pipefail

pkgs=(
  nginx-light      # the image origin in tests (Range, access log)
                   # (and the rack cache, contrib/nginx/rack-cache.conf: Debian 12's nginx-light has
                   # --with-http_slice_module, and proxy_cache; checked by test/transport/rack-cache.test.ts)
  apache2          # image origin we did not write: Range, If-Range, multi-range (test/transport/origins.test.ts)
  lighttpd         # image origin we did not write (test/transport/origins.test.ts)
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
  slurmctld        # Slurm drain/resume test: a real one-node cluster (test/helpers/slurm.ts)
  slurmd           #   its node daemon
  slurm-client     #   scontrol and sinfo (the daemon drains with scontrol)
  munge            #   Slurm's authentication (munged, mungekey)
  prometheus-node-exporter  # textfile-collector test: node_exporter serves boot-agent.prom
  prometheus       # promtool check metrics (in the package itself: --no-install-recommends keeps it)
  dpkg-dev         # dpkg-shlibdeps: the .deb's Depends (npm run package)
  binutils         # strip: the runtime the .deb carries
  lintian          # the .deb's checks (test/package)
  rpm              # rpmbuild: the EL9 spec (test/package)
  man-db           # man --warnings: the man pages (test/package)
  systemd          # systemd-notify (the daemon's Type=notify), systemd-analyze
  python3          # the stand-in notify socket (test/daemon/notify.test.ts)
  fsverity         # fsverity digest: the reference the manifest's fsverityDigest is tested against
)
if [ "${1:-}" = "--vm" ]; then
  pkgs+=(qemu-system-x86 linux-image-amd64 dracut-core dracut-network busybox-static
         cpio udev lz4 xz-utils zstd binutils isc-dhcp-client iproute2)
  # issue 18: the Debian image (mmdebstrap), the systemd-flavour initramfs (dracut's
  # systemd modules copy the host's systemd, networkd, dbus), the package (dpkg-dev)
  pkgs+=(mmdebstrap systemd dbus dpkg-dev)
  # issue 19: the fsverity tool the dracut module carries into the initramfs (seal, measure)
  pkgs+=(fsverity)
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
