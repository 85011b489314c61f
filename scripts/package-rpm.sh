#!/usr/bin/env bash
# Builds the EL9 RPM from contrib/rpm/boot-agent.spec with rpmbuild -bb (on Debian:
# the rpm package) into dist/pkg/boot-agent-<version>-1.noarch.rpm. NOT boot-tested:
# it proves the spec builds and what it holds, not that an EL9 node boots from it.
# usage: bash scripts/package-rpm.sh [--out DIR] [--no-bundle]
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
out="$here/dist/pkg"
bundle=1
while [ $# -gt 0 ]; do
  case "$1" in
    --out) out="$2"; shift 2 ;;
    --no-bundle) bundle=0; shift ;;
    *) echo "package-rpm: unknown argument: $1 (usage: --out DIR, --no-bundle)" >&2; exit 2 ;;
  esac
done
command -v rpmbuild >/dev/null || { echo "package-rpm: rpmbuild not found (Debian: apt-get install rpm)" >&2; exit 2; }
cd "$here"
[ $bundle = 1 ] && node scripts/bundle.mjs
version=$(node -p 'require("./package.json").version')
export SOURCE_DATE_EPOCH="${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}"

top=$(mktemp -d "${TMPDIR:-/tmp}/ba-rpm.XXXXXX")
trap 'rm -rf -- "$top"' EXIT
src="$top/boot-agent-$version"
mkdir -p "$src/dist" "$src/man" "$top/SOURCES"
cp -r dist/boot-agent.mjs dist/chunks "$src/dist/"
cp -r dracut systemd README.md "$src/"
cp contrib/debian/copyright "$src/copyright"
node scripts/package-man.mjs --out "$src/man" --bundle "$here/dist/boot-agent.mjs"
tar -C "$top" -czf "$top/SOURCES/boot-agent-$version.tar.gz" "boot-agent-$version"
# --nodeps: the build host is Debian, whose rpm database knows none of EL9's packages.
rpmbuild -bb --nodeps --define "_topdir $top" --define "ba_version $version" \
  --define "_build_id_links none" contrib/rpm/boot-agent.spec >"$top/rpmbuild.log" 2>&1 \
  || { cat "$top/rpmbuild.log" >&2; exit 1; }
mkdir -p "$out"
rpm=$(find "$top/RPMS" -name '*.rpm' | head -n 1)
cp "$rpm" "$out/"
echo "$out/${rpm##*/}"
