#!/bin/sh
# pre-mount hook (sourced by dracut's init): run the boot stage, which fetches and
# verifies the image and mounts the new root on $NEWROOT; on failure act on
# rd.bootagent.onfail. Fail closed: no root is mounted unless the agent said so.

# dracut-lib gives getarg/info/warn/die when this runs outside init.
command -v getarg >/dev/null || . /lib/dracut-lib.sh

# Not our root: nothing to do.
[ "$root" = "bootagent" ] || return 0

# A site CA, when installed, is trusted by node for https head nodes.
[ -f /etc/boot-agent/ca.pem ] && export NODE_EXTRA_CA_CERTS=/etc/boot-agent/ca.pem

info "boot-agent: boot stage starting"
# The agent logs its own steps (pino, synchronous) to stderr = the console.
node /usr/lib/boot-agent/boot-agent.mjs boot --sysroot "${NEWROOT:-/sysroot}"
_ba_rc=$?

# Success: the root is mounted; dracut's mount loop finds it and switches root.
if [ "$_ba_rc" -eq 0 ]; then
    info "boot-agent: boot stage finished, root mounted on ${NEWROOT:-/sysroot}"
    unset _ba_rc
    return 0
fi

# Failure: never continue with whatever might be on $NEWROOT.
umount "${NEWROOT:-/sysroot}" 2>/dev/null
_ba_onfail=$(getarg rd.bootagent.onfail=)
warn "boot-agent: boot stage failed (exit $_ba_rc), onfail=${_ba_onfail:-reboot}"
case "${_ba_onfail:-reboot}" in
    emergency)
        # dracut's emergency shell (or halt when rd.shell=0).
        emergency_shell -n boot-agent "boot-agent boot failed (exit $_ba_rc)"
        ;;
    shell)
        # A plain shell on the console, then stop rather than boot a wrong root.
        sh -i </dev/console >/dev/console 2>&1
        die "boot-agent: boot failed (exit $_ba_rc)"
        ;;
    *)
        # Wait so the console can be read and reports leave, then reboot; sysrq when
        # there is no reboot binary (initramfs without systemd).
        _ba_delay=$(getarg rd.bootagent.rebootdelay=)
        sleep "${_ba_delay:-10}"
        warn "boot-agent: rebooting"
        reboot -f 2>/dev/null || echo b > /proc/sysrq-trigger
        ;;
esac
