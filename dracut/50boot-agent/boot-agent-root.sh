#!/bin/sh
# pre-mount hook (sourced by dracut's init): run the boot stage, which fetches and
# verifies the image and mounts the new root on $NEWROOT, then act on its exit
# code (agent/boot/handoff.ts EXIT_CODES). The agent has already spooled why a
# boot failed and waited/rebooted for onfail=reboot; this hook only finishes the job.
# Fail closed: nothing on $NEWROOT is used unless the agent exited 0.

# dracut-lib gives getarg/info/warn/die when this runs outside init.
command -v getarg >/dev/null || . /lib/dracut-lib.sh

# Not our root: nothing to do.
[ "$root" = "bootagent" ] || return 0

# A site CA installed as /etc/boot-agent/ca.pem is read by the agent itself at its
# first https request (agent/transport/trust.ts). Not NODE_EXTRA_CA_CERTS: node 20
# loads that at every start, costing a boot from an http head node ~30 ms.

# Each line of standard input to /dev/kmsg as "<N>boot-agent: text" (N from the
# line's own <N> prefix, else 6 = info), so journald files it under the identifier
# boot-agent at that priority. /dev/kmsg is opened per line: the kernel rate-limits
# writes per open file (printk.devkmsg=ratelimit, 10 lines per 5 s), and a boot
# stage writes more. The kernel cuts a line at ~1 KB. Without /dev/kmsg: stderr.
_ba_to_kmsg() {
    local _l _p
    while IFS= read -r _l; do
        case "$_l" in
            "<"[0-7]">"*) _p=${_l%%>*}; _p=${_p#<}; _l=${_l#<?>} ;;
            *) _p=6 ;;
        esac
        { printf '<%s>boot-agent: %s\n' "$_p" "$_l" > /dev/kmsg; } 2>/dev/null || printf '%s\n' "$_l" >&2
    done
}

# onfail=shell retries the stage after the shell exits; bounded, like every loop.
_ba_try=0
while [ "$_ba_try" -lt 3 ]; do
    _ba_try=$((_ba_try + 1))
    info "boot-agent: boot stage starting"
    # No journald in this flavour: the stage's lines go to the kernel log, which the
    # booted system's journald reads from the start of the boot, so they are in its
    # journal as boot-agent (journalctl -b -t boot-agent) with their priorities; the
    # kernel echoes them to the console too. The agent writes `<N>`-prefixed lines
    # (journal format); the exit code comes back through a file (no pipefail in sh).
    rm -f /run/initramfs/boot-agent-stage.rc
    mkdir -p /run/initramfs
    { BOOT_AGENT_LOG_FORMAT=journal node /usr/lib/boot-agent/boot-agent.mjs boot --sysroot "${NEWROOT:-/sysroot}"
      echo $? > /run/initramfs/boot-agent-stage.rc; } 2>&1 | _ba_to_kmsg
    _ba_rc=$(cat /run/initramfs/boot-agent-stage.rc 2>/dev/null || echo 1)
    # Anything but success: never continue with whatever might be on $NEWROOT.
    [ "$_ba_rc" -eq 0 ] || umount "${NEWROOT:-/sysroot}" 2>/dev/null
    case "$_ba_rc" in
        0)
            # The root is mounted; dracut's mount loop finds it and switches root.
            info "boot-agent: boot stage finished, root mounted on ${NEWROOT:-/sysroot}"
            unset _ba_rc _ba_try
            return 0
            ;;
        3)
            # onfail=shell: a shell to look around, then try the stage again.
            warn "boot-agent: boot stage failed (exit 3, onfail=shell); exit the shell to retry"
            emergency_shell -n boot-agent "boot-agent boot failed"
            ;;
        4)
            # onfail=reboot (or cachefull=clear-reboot): the agent waited and ran
            # reboot; with no init system to ask, force it, or use sysrq.
            warn "boot-agent: boot stage failed (exit 4), rebooting"
            reboot -f 2>/dev/null
            echo b > /proc/sysrq-trigger
            sleep 30
            ;;
        *)
            # 1 (onfail=emergency), 2 (bad configuration) or a crash: stop here.
            die "boot-agent: boot stage failed (exit $_ba_rc); see the messages above"
            ;;
    esac
done
die "boot-agent: boot stage failed $_ba_try times"
