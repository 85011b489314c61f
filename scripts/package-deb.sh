#!/usr/bin/env bash
# Builds the Debian package: dist/pkg/boot-agent_<version>_<arch>.deb (dpkg-deb,
# no debian/ source tree: the agent is bundled by esbuild, nothing is compiled).
#
#   /usr/bin/boot-agent                         sh wrapper: the package's node + the bundle
#   /usr/lib/boot-agent/boot-agent.mjs, chunks/ the bundle (node scripts/bundle.mjs)
#   /usr/lib/boot-agent/node                    the Node.js runtime the package brings
#   /usr/lib/dracut/modules.d/50boot-agent/     the dracut module (+ boot-agent-initrd.service)
#   /usr/lib/dracut/dracut.conf.d/50-boot-agent.conf  the initramfs compressor (size goal)
#   /usr/lib/systemd/system/boot-agent.service  the node daemon (enabled on install)
#   /usr/share/man/man8/boot-agent.8.gz, man7/boot-agent-cmdline.7.gz
#   /usr/share/doc/boot-agent/                  copyright, changelog.Debian.gz, README.md
#
# Runtime: Debian 12's nodejs is 18 and the agent needs >= 20.3, so the package
# carries the build machine's node (stripped of debug sections) under
# /usr/lib/boot-agent/node instead of Depends: nodejs (>= 20.3), which only a third-party
# repository (NodeSource) satisfies on Debian 12. The same binary goes into the
# initramfs (module-setup.sh prefers it), so the stage and the daemon run the node
# that was tested. Depends: for its shared libraries come from dpkg-shlibdeps.
#
# usage: npm run package [-- --out DIR] [--node FILE] [--no-bundle]
#   --out DIR     where the .deb goes (default dist/pkg); the path is printed last
#   --node FILE   the node binary to ship (default: node on PATH); must be >= 20.3
#   --no-bundle   use dist/ as it is (default: run node scripts/bundle.mjs first)
# Cached in ${XDG_CACHE_HOME:-~/.cache}/boot-agent/package (BOOT_AGENT_PKG_CACHE
# overrides), outside the clone: the stripped node by its sha256, the .deb by its
# contents (compressing the runtime takes minutes on a loaded machine).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)

out="$here/dist/pkg"
node_bin="$(command -v node || true)"
bundle=1
usage() { sed -n '2,25p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
while [ $# -gt 0 ]; do
  case "$1" in
    --out) out="$2"; shift 2 ;;
    --node) node_bin="$2"; shift 2 ;;
    --no-bundle) bundle=0; shift ;;
    -h|--help) usage ;;
    *) echo "package-deb: unknown argument: $1" >&2; usage ;;
  esac
done
for t in dpkg-deb dpkg-shlibdeps strip gzip; do
  command -v "$t" >/dev/null || { echo "package-deb: $t not found (Debian: dpkg-dev binutils gzip)" >&2; exit 2; }
done
[ -x "$node_bin" ] || { echo "package-deb: no Node.js binary (--node FILE)" >&2; exit 2; }
node_bin=$(readlink -f "$node_bin")
# The shipped runtime must be one the agent runs on (package.json engines).
node_ver=$("$node_bin" -p 'process.versions.node')
"$node_bin" -e 'const [a,b]=process.versions.node.split(".").map(Number); process.exit(a>20||(a===20&&b>=3)?0:1)' \
  || { echo "package-deb: --node $node_bin is Node.js $node_ver; the agent needs >= 20.3" >&2; exit 2; }

cd "$here"
[ $bundle = 1 ] && node scripts/bundle.mjs
[ -f dist/boot-agent.mjs ] || { echo "package-deb: no dist/boot-agent.mjs (run node scripts/bundle.mjs)" >&2; exit 2; }

# Debian version: upstream from package.json, Debian revision 1 (not a native package:
# the upstream tree has no debian/ directory).
upstream=$(node -p 'require("./package.json").version')
version="${upstream}-1"
arch=$(dpkg --print-architecture)
# Who answers for this build (DEBFULLNAME/DEBEMAIL, as dch reads them); a site
# building its own package puts its own address here.
maintainer="${DEBFULLNAME:-boot-agent maintainers} <${DEBEMAIL:-boot-agent@example.org}>"
# Reproducible dates: the last commit's time unless SOURCE_DATE_EPOCH is given.
export SOURCE_DATE_EPOCH="${SOURCE_DATE_EPOCH:-$(git -C "$here" log -1 --format=%ct 2>/dev/null || date +%s)}"

work=$(mktemp -d "${TMPDIR:-/tmp}/ba-package.XXXXXX")
trap 'rm -rf -- "$work"' EXIT
root="$work/root"
lib="$root/usr/lib/boot-agent"
doc="$root/usr/share/doc/boot-agent"
mkdir -p "$lib/chunks" "$root/usr/bin" "$root/usr/lib/dracut/modules.d/50boot-agent" \
  "$root/usr/lib/systemd/system" "$root/usr/share/man/man8" "$root/usr/share/man/man7" "$doc" "$root/DEBIAN"

# The bundle: the entry and every chunk it loads (the directory is installed whole).
# Without its #!/usr/bin/env node line, which would find Debian's node 18: the entry is
# a module that /usr/bin/boot-agent (and the initramfs) run with the package's node,
# not a script (lintian holds a script with a node #! to Depends: nodejs).
sed '1{/^#!/d}' dist/boot-agent.mjs > "$lib/boot-agent.mjs"
chmod 0644 "$lib/boot-agent.mjs"
for f in dist/chunks/*; do install -m 0644 "$f" "$lib/chunks/"; done

# The runtime, stripped the way dh_strip strips executables, cached by the input's hash.
cache="${BOOT_AGENT_PKG_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/boot-agent/package}"
mkdir -p "$cache"
node_sum=$(sha256sum "$node_bin" | cut -c1-64)
stripped="$cache/node-$node_sum"
if [ ! -f "$stripped" ]; then
  strip --remove-section=.comment --remove-section=.note --strip-unneeded -o "$stripped.tmp.$$" "$node_bin"
  mv "$stripped.tmp.$$" "$stripped"
fi
install -m 0755 "$stripped" "$lib/node"
# Keep the cache to the last few runtimes.
ls -t "$cache"/node-* 2>/dev/null | tail -n +4 | xargs -r rm -f --

# The command: a wrapper, not a symlink to the entry, whose #!/usr/bin/env node would
# pick whatever node is on PATH (Debian 12's 18).
cat > "$root/usr/bin/boot-agent" <<'EOF'
#!/bin/sh
# boot-agent: runs the agent's bundle on the Node.js the package brings (Debian's is too old).
exec /usr/lib/boot-agent/node /usr/lib/boot-agent/boot-agent.mjs "$@"
EOF
chmod 0755 "$root/usr/bin/boot-agent"

# The dracut module, with the systemd-initramfs unit it installs from its own directory.
mod="$root/usr/lib/dracut/modules.d/50boot-agent"
install -m 0755 dracut/50boot-agent/module-setup.sh "$mod/"
for f in dracut/50boot-agent/*.sh; do
  [ "${f##*/}" = module-setup.sh ] || install -m 0755 "$f" "$mod/"
done
install -m 0644 systemd/boot-agent-initrd.service "$mod/"
# The compressor for images with the module (docs/performance.md, "Initramfs size"): dracut reads
# /usr/lib/dracut/dracut.conf.d/ before /etc/dracut.conf.d/, where a site overrides it.
install -D -m 0644 dracut/dracut.conf.d/50-boot-agent.conf "$root/usr/lib/dracut/dracut.conf.d/50-boot-agent.conf"
install -m 0644 systemd/boot-agent.service "$root/usr/lib/systemd/system/"

# Man pages (scripts/package-man.mjs writes them from the CLI's own --help and man/).
node scripts/package-man.mjs --out "$work/man" --bundle "$here/dist/boot-agent.mjs"
for p in "$work"/man/*.[0-9]; do
  sec=${p##*.}
  gzip -9n < "$p" > "$root/usr/share/man/man$sec/${p##*/}.gz"
  chmod 0644 "$root/usr/share/man/man$sec/${p##*/}.gz"
done

# Docs: copyright (DEP-5), the Debian changelog, the README.
install -m 0644 contrib/debian/copyright "$doc/copyright"
install -m 0644 README.md "$doc/README.md"
# lintian overrides, each with its reason (contrib/debian/lintian-overrides).
mkdir -p "$root/usr/share/lintian/overrides"
install -m 0644 contrib/debian/lintian-overrides "$root/usr/share/lintian/overrides/boot-agent"
date_r=$(date -u -R -d "@$SOURCE_DATE_EPOCH")
{
  echo "boot-agent ($version) unstable; urgency=medium"
  echo
  echo "  * Package built from the boot-agent tree at $(git -C "$here" rev-parse --short HEAD 2>/dev/null || echo unknown)."
  echo
  echo " -- $maintainer  $date_r"
} | gzip -9n > "$doc/changelog.Debian.gz"
chmod 0644 "$doc/changelog.Debian.gz"

# Depends: the runtime's shared libraries (dpkg-shlibdeps reads a debian/control),
# the tools the agent runs (agent/core/system.ts), and what its unit needs.
mkdir -p "$work/src/debian"
printf 'Source: boot-agent\n\nPackage: boot-agent\nArchitecture: any\n' > "$work/src/debian/control"
shlibs=$(cd "$work/src" && dpkg-shlibdeps -O -e"$lib/node" 2>/dev/null | sed -n 's/^shlibs:Depends=//p')
[ -n "$shlibs" ] || { echo "package-deb: dpkg-shlibdeps found no libraries for $lib/node" >&2; exit 1; }

installed_kb=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
cat > "$root/DEBIAN/control" <<EOF
Package: boot-agent
Version: $version
Architecture: $arch
Maintainer: $maintainer
Installed-Size: $installed_kb
Depends: $shlibs, mount, squashfs-tools
Recommends: dracut-core, dracut-network, e2fsprogs, fsverity
Suggests: xfsprogs, dmidecode
Section: admin
Priority: optional
Homepage: https://github.com/boot-agent/boot-agent
Description: boot HPC compute nodes from a verified image cache
 boot-agent runs in the initramfs (a dracut module, both the shell-init and the
 systemd flavour): it fetches the node's image by content digest into a local
 cache partition, verifies every byte against a signed or TLS-fetched manifest,
 and mounts it as the root. After switch_root its daemon (boot-agent.service)
 watches the kernel log for squashfs and I/O errors, ties them to the cached
 image, re-verifies it and reports to the head node.
 .
 The package carries its own Node.js runtime (/usr/lib/boot-agent/node), which
 the dracut module also installs into the initramfs: run
 "dracut --add boot-agent" to build one.
EOF

# Enable the daemon on install and stop/disable it on removal: debhelper's
# autoscripts (/usr/share/debhelper/autoscripts/*-systemd-*) for one unit. The unit's
# ConditionPathExists= keeps it from starting on a machine not booted by boot-agent.
cat > "$root/DEBIAN/postinst" <<'EOF'
#!/bin/sh
set -e
if [ "$1" = "configure" ] || [ "$1" = "abort-upgrade" ] || [ "$1" = "abort-deconfigure" ] || [ "$1" = "abort-remove" ] ; then
	if deb-systemd-helper --quiet was-enabled 'boot-agent.service'; then
		deb-systemd-helper enable 'boot-agent.service' >/dev/null || true
	else
		deb-systemd-helper update-state 'boot-agent.service' >/dev/null || true
	fi
	if [ -d /run/systemd/system ]; then
		systemctl --system daemon-reload >/dev/null || true
		if [ -n "$2" ]; then
			deb-systemd-invoke try-restart 'boot-agent.service' >/dev/null || true
		fi
	fi
fi
EOF
cat > "$root/DEBIAN/prerm" <<'EOF'
#!/bin/sh
set -e
if [ -z "${DPKG_ROOT:-}" ] && [ "$1" = remove ] && [ -d /run/systemd/system ] ; then
	deb-systemd-invoke stop 'boot-agent.service' >/dev/null || true
fi
EOF
cat > "$root/DEBIAN/postrm" <<'EOF'
#!/bin/sh
set -e
if [ -d /run/systemd/system ] && [ "$1" = remove ]; then
	systemctl --system daemon-reload >/dev/null || true
fi
if [ "$1" = "purge" ]; then
	if [ -x "/usr/bin/deb-systemd-helper" ]; then
		deb-systemd-helper purge 'boot-agent.service' >/dev/null || true
	fi
	rm -rf /var/lib/boot-agent
fi
EOF
chmod 0755 "$root/DEBIAN/postinst" "$root/DEBIAN/prerm" "$root/DEBIAN/postrm"
(cd "$root" && find . -path ./DEBIAN -prune -o -type f -print0 | sort -z | xargs -0 md5sum | sed 's| \./| |') > "$root/DEBIAN/md5sums"
chmod 0644 "$root/DEBIAN/md5sums" "$root/DEBIAN/control"

# Every file's time is SOURCE_DATE_EPOCH, so the same inputs give the same .deb.
find "$root" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
mkdir -p "$out"
deb="$out/boot-agent_${version}_${arch}.deb"
# xz of the 95 MB runtime takes minutes on a loaded 2-core machine: a .deb built
# from the same contents (every file's md5 but the dated changelog's, the control
# file, the maintainer scripts) is reused from the cache. A reused .deb may carry
# an older changelog date and file times; its files are the same bytes.
key=$( { grep -v ' usr/share/doc/boot-agent/changelog.Debian.gz$' "$root/DEBIAN/md5sums"
         cat "$root/DEBIAN/control" "$root/DEBIAN/postinst" "$root/DEBIAN/prerm" "$root/DEBIAN/postrm"; } | sha256sum | cut -c1-64)
cached="$cache/deb-$key.deb"
if [ -f "$cached" ]; then
  echo "package-deb: same contents as a cached build ($cached)" >&2
else
  dpkg-deb --root-owner-group -Zxz -z6 --build "$root" "$cached.tmp.$$" >/dev/null
  mv "$cached.tmp.$$" "$cached"
  ls -t "$cache"/deb-*.deb 2>/dev/null | tail -n +4 | xargs -r rm -f --
fi
cp "$cached" "$deb.tmp"
mv "$deb.tmp" "$deb"
echo "package-deb: $(du -h "$deb" | cut -f1) node $node_ver" >&2
echo "$deb"
