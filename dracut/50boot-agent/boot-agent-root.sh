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

# onfail=shell retries the stage after the shell exits; bounded, like every loop.
_ba_try=0
while [ "$_ba_try" -lt 3 ]; do
    _ba_try=$((_ba_try + 1))
    info "boot-agent: boot stage starting"
    # The agent logs its own steps (pino JSON, synchronous) to stderr = the console.
    node /usr/lib/boot-agent/boot-agent.mjs boot --sysroot "${NEWROOT:-/sysroot}"
    _ba_rc=$?
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
