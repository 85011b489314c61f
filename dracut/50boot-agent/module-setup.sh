#!/bin/bash
# dracut module "boot-agent": runs boot-agent's boot stage in the initramfs, before the
# root is mounted (SPEC §11). dracut sources this file with bash (dracut.modules(7));
# the hooks it installs are POSIX sh. Logic lives in the agent; these files only wire it in.
#
# Build-time inputs (environment, or the same lower-case names in a dracut.conf):
#   BOOT_AGENT_BUNDLE  the agent's entry file (default /usr/lib/boot-agent/boot-agent.mjs);
#                      the chunks/ directory beside it is installed with it
#   BOOT_AGENT_NODE    the Node.js binary to copy (default: the package's own runtime,
#                      /usr/lib/boot-agent/node, else node on PATH)
#   BOOT_AGENT_PUBKEY  manifest-signing public key to trust (optional)
#   BOOT_AGENT_CA      site CA bundle for https head nodes (optional)
#   BOOT_AGENT_TOKEN   this node's bearer token file for the head (default /etc/boot-agent/token,
#                      carried when present; must be mode 0600 and owned by root; docs/security.md)

# The agent bundle to install (a dracut.conf may set bootagent_bundle instead).
_ba_bundle() { echo "${bootagent_bundle:-${BOOT_AGENT_BUNDLE:-/usr/lib/boot-agent/boot-agent.mjs}}"; }
# The chunks the bundle's files import (./chunks/NAME.mjs) or require (./pino.cjs),
# one per line: the entry loads the rest on demand, so a missing one would fail only
# when a boot needs it.
_ba_chunk_refs() {
    local _dir
    _dir=$(dirname "$(_ba_bundle)")
    cat "$(_ba_bundle)" "$_dir"/chunks/*.mjs 2>/dev/null \
        | grep -o '"\./[A-Za-z0-9_./-]*\.[mc]js"' | tr -d '"' | sed 's|^\./||; s|^\([^/]*\)$|chunks/\1|' | sort -u
}
# The Node.js binary to copy into the image: the one the package brings (the distribution's
# may be older than the agent needs: Debian 12 has 18), else node on PATH.
_ba_node() {
    local _pkg=/usr/lib/boot-agent/node
    [[ -x $_pkg ]] || _pkg=$(command -v node)
    echo "${bootagent_node:-${BOOT_AGENT_NODE:-$_pkg}}"
}

# called by dracut: may this module be used on this host?
check() {
    # Everything the agent shells out to must exist on the build host.
    require_binaries unsquashfs blkid mount umount losetup lsblk || return 1
    # Node.js must be there to copy.
    [[ -x "$(_ba_node)" ]] || { derror "boot-agent: no Node.js binary (set BOOT_AGENT_NODE)"; return 1; }
    # So must the bundle (node scripts/bundle.mjs makes it).
    [[ -f "$(_ba_bundle)" ]] || { derror "boot-agent: no agent bundle at $(_ba_bundle) (set BOOT_AGENT_BUNDLE)"; return 1; }
    # and every chunk it loads, next to it.
    local _ref _dir
    _dir=$(dirname "$(_ba_bundle)")
    for _ref in $(_ba_chunk_refs); do
        [[ -f "$_dir/$_ref" ]] || { derror "boot-agent: the bundle at $(_ba_bundle) lacks $_dir/$_ref (install the whole dist/ directory)"; return 1; }
    done
    # 255: only included when asked for (--add boot-agent / -m), never by default.
    return 255
}

# called by dracut: the modules ours needs.
depends() {
    # network: whatever stack this initramfs brings. dracut's 40network picks the
    # handler already included (-m/--add network-legacy, network-manager, ...), else
    # the host's: NetworkManager, then systemd-networkd, then network-legacy. A
    # systemd initramfs thus gets systemd-networkd (Debian 12) or NetworkManager
    # (EL 8/9, Fedora, which no longer ship network-legacy); a shell-init one names
    # network-legacy itself (scripts/build-initramfs.sh --flavour hook).
    # base: dracut-lib.sh, getarg, info/warn/die.
    echo network base
}

# called by dracut: kernel modules to carry (the Debian kernel builds these as modules).
installkernel() {
    # squashfs/loop/overlay: images and roram; ext4/xfs: cache and root partitions;
    # virtio_*: disks, NIC and entropy in VMs (virtio_rng stops node blocking on the
    # random pool at start-up). hostonly='' : install them even on a host that lacks them.
    hostonly='' instmods squashfs loop overlay ext4 xfs \
        virtio_pci virtio_blk virtio_scsi virtio_net virtio_rng
}

# called by dracut: files to put into the initramfs.
install() {
    local _node _tmp
    # Node.js without debug sections (~99 MB -> ~92 MB), copied to a temp file so the
    # host's binary is never touched; inst_binary pulls in its shared libraries.
    _node=$(_ba_node)
    _tmp=$(mktemp "${DRACUT_TMPDIR:-/tmp}/boot-agent-node.XXXXXX") || return 1
    if command -v strip >/dev/null; then
        strip -g -o "$_tmp" "$_node" || cp "$_node" "$_tmp"
    else
        cp "$_node" "$_tmp"
    fi
    chmod 0755 "$_tmp"
    inst_binary "$_tmp" /usr/bin/node
    rm -f -- "$_tmp"
    # The agent, no node_modules: the entry (the path the hooks and units run) and
    # the chunks it loads on demand, from the chunks/ directory beside it.
    local _f
    inst_simple "$(_ba_bundle)" /usr/lib/boot-agent/boot-agent.mjs
    for _f in "$(dirname "$(_ba_bundle)")"/chunks/*.mjs "$(dirname "$(_ba_bundle)")"/chunks/*.cjs; do
        [[ -f $_f ]] && inst_simple "$_f" "/usr/lib/boot-agent/chunks/${_f##*/}"
    done
    # What the agent runs (agent/core/system.ts) and what systeminformation shells out to.
    inst_multiple unsquashfs blkid mount umount losetup lsblk
    inst_multiple -o dmidecode mkfs.ext4 mkfs.xfs sync reboot poweroff
    # fs-verity: seal cache objects and measure them on a hit (agent/cache/seal.ts); absent → fast verify.
    inst_multiple -o fsverity modprobe
    # Trust anchors, only when the site configured them.
    local _pub="${bootagent_pubkey:-$BOOT_AGENT_PUBKEY}" _ca="${bootagent_ca:-$BOOT_AGENT_CA}"
    [[ -n $_pub ]] && inst_simple "$_pub" /etc/boot-agent/manifest.pub
    [[ -n $_ca ]] && inst_simple "$_ca" /etc/boot-agent/ca.pem
    # The node's token for the head, when there is one: root-only here and in the image,
    # never on the kernel command line (docs/security.md). A readable one is refused,
    # as the agent would refuse it at boot.
    local _token="${bootagent_token:-${BOOT_AGENT_TOKEN:-/etc/boot-agent/token}}" _mode
    if [[ -e $_token ]]; then
        _mode=$(stat -L -c %a "$_token")
        if [[ $(stat -L -c %u "$_token") != 0 || $((8#$_mode & 8#077)) != 0 ]]; then
            derror "boot-agent: $_token is mode $_mode or not owned by root; fix: chown root: $_token && chmod 600 $_token"
            return 1
        fi
        inst_simple "$_token" /etc/boot-agent/token
        chmod 0600 "$initdir/etc/boot-agent/token"
    fi
    # cmdline 20: after 99base's parse-root-opts (10) has read root=, before
    # network-legacy's parse-ip-opts (98) reads the ip= we may default.
    inst_hook cmdline 20 "$moddir/parse-boot-agent.sh"
    if dracut_module_included "systemd"; then
        # systemd initramfs: a unit ordered before initrd-root-fs.target runs the stage
        # (systemd/boot-agent-initrd.service, copied next to this file at build time).
        inst_simple "$moddir/boot-agent-initrd.service" "$systemdsystemunitdir/boot-agent-initrd.service"
        $SYSTEMCTL -q --root "$initdir" enable boot-agent-initrd.service
        if dracut_module_included "systemd-networkd"; then
            # dracut's systemd-networkd configures only what ip= asks for (through
            # systemd-network-generator, 70-*.network); without ip= nothing would ask
            # for DHCP. A last-resort .network, matched only when root=bootagent: the
            # generator's and the site's files sort first and win.
            mkdir -p "$initdir$systemdnetwork"
            printf '%s\n' '# boot-agent (dracut/50boot-agent): DHCP on wired links when nothing else configures them.' \
                '[Match]' 'KernelCommandLine=root=bootagent' 'Type=ether' '' \
                '[Network]' 'DHCP=yes' > "$initdir$systemdnetwork/99-boot-agent.network"
        fi
    else
        # shell init: pre-mount 50, when the network is up (initqueue finished) and
        # nothing has mounted $NEWROOT yet; the agent mounts it.
        inst_hook pre-mount 50 "$moddir/boot-agent-root.sh"
    fi
}
