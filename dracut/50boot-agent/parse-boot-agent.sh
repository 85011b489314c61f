#!/bin/sh
# cmdline hook (sourced by dracut's init): claim root=bootagent and check the
# rd.bootagent.* values a shell can check. The agent validates everything again.

# dracut-lib gives getarg/info/warn/die when this runs outside init.
command -v getarg >/dev/null || . /lib/dracut-lib.sh

# Not our root: leave it to the other modules.
[ "$root" = "bootagent" ] || return 0

# The head node is required: without it there is nothing to boot.
[ -n "$(getarg rd.bootagent.server=)" ] || die "boot-agent: rd.bootagent.server= is required with root=bootagent"

# A token on the command line is readable by every user (/proc/cmdline): the agent
# refuses it too; it belongs in /etc/boot-agent/token (docs/security.md). Never echo it.
[ -z "$(getarg rd.bootagent.token=)" ] \
    || die "boot-agent: rd.bootagent.token on the kernel command line is refused (every user can read /proc/cmdline); use /etc/boot-agent/token and rotate it"

# style, when given, must be one the agent knows (SPEC §2).
case "$(getarg rd.bootagent.style=)" in
    "" | disked | rwram | roram) ;;
    *) die "boot-agent: rd.bootagent.style=$(getarg rd.bootagent.style=) is not disked, rwram or roram" ;;
esac

# onfail, when given, must be an action the pre-mount hook can take (SPEC §7).
case "$(getarg rd.bootagent.onfail=)" in
    "" | reboot | emergency | shell) ;;
    *) die "boot-agent: rd.bootagent.onfail=$(getarg rd.bootagent.onfail=) is not reboot, emergency or shell" ;;
esac

# The agent needs the network before pre-mount: make network-legacy wait for it,
# and ask for DHCP when the operator gave no ip= (dracut.cmdline(7)).
mkdir -p /etc/cmdline.d
{
    echo "rd.neednet=1"
    [ -n "$(getarg ip=)" ] || echo "ip=dhcp"
    # A manifest key built into the image is used unless the command line names one
    # (the agent reads /etc/cmdline.d too).
    [ -f /etc/boot-agent/manifest.pub ] && [ -z "$(getarg rd.bootagent.pubkey=)" ] \
        && echo "rd.bootagent.pubkey=/etc/boot-agent/manifest.pub"
} > /etc/cmdline.d/50-boot-agent.conf

# Tell init the root is handled: no block device to wait for.
rootok=1
info "boot-agent: root=bootagent claimed, server $(getarg rd.bootagent.server=)"
