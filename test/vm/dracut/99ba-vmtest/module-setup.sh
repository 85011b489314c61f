#!/bin/bash
# TEST INSTRUMENTATION ONLY, never in the package: dracut module "ba-vmtest", added
# to the VM tests' systemd-flavour initramfs (scripts/build-initramfs.sh --test-module).
# When the initramfs reaches emergency.target and the command line has
# ba.vmtest.report, ba-vmtest-emergency.service writes the initramfs's own journal
# (`journalctl -b -o json`) to the virtio disk with serial "ba-report" before dracut's
# emergency.service runs (rd.emergency=poweroff then powers off). The test reads the
# journal's PRIORITY fields from there instead of trusting the console (issue 18,
# scenario 2). The product's module (dracut/50boot-agent) is unchanged by this.

check() {
    # Only when asked for (--add ba-vmtest).
    return 255
}

depends() {
    echo systemd
}

install() {
    inst_multiple dd journalctl
    inst_simple "$moddir/ba-vmtest-emergency.sh" /usr/lib/ba-vmtest/emergency-report
    inst_simple "$moddir/ba-vmtest-emergency.service" "$systemdsystemunitdir/ba-vmtest-emergency.service"
    $SYSTEMCTL -q --root "$initdir" enable ba-vmtest-emergency.service
}
