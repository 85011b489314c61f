#!/bin/sh
# TEST INSTRUMENTATION ONLY (test/vm/dracut/99ba-vmtest): writes the initramfs's
# journal to the report disk (serial "ba-report") in the format test/vm/debian.ts
# readReport() reads: a "BA-STATE ..." line, then one JSON entry per line.
out=/dev/disk/by-id/virtio-ba-report
# udev may not have made the by-id link yet: wait for it, bounded (20 s).
n=0
while [ ! -b "$out" ] && [ $n -lt 20 ]; do
    for d in /sys/block/vd*; do
        [ "$(cat "$d/serial" 2>/dev/null)" = ba-report ] && out=/dev/${d##*/}
    done
    [ -b "$out" ] || { sleep 1; n=$((n + 1)); }
done
{
    echo "BA-STATE where=initramfs target=emergency boot-agent-initrd.service=$(systemctl is-active boot-agent-initrd.service)"
    journalctl -b -o json --no-pager
} > /run/ba-vmtest-report.txt 2>&1
if [ -b "$out" ]; then
    dd if=/run/ba-vmtest-report.txt of="$out" bs=1M conv=fsync status=none
    echo "BA-INITRD-JOURNAL-WRITTEN"
else
    echo "BA-INITRD-JOURNAL-NO-DISK"
fi
