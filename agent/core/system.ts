/**
 * Every absolute system path and external command name the agent uses, in one
 * place (after coreos/ignition's `internal/distro`), so tests can point them
 * elsewhere and a packager can see at a glance what the agent touches.
 *
 * Each value can be overridden by an environment variable named after it
 * (`BOOT_AGENT_<NAME>`), which is how tests and the demo relocate state.
 */

const env = (name: string, fallback: string): string => process.env[`BOOT_AGENT_${name}`] ?? fallback

export const system = {
  /** Kernel command line, read last (wins), as dracut does. */
  procCmdline: env('PROC_CMDLINE', '/proc/cmdline'),
  /** dracut's extra command-line sources, read before /proc/cmdline. */
  etcCmdline: env('ETC_CMDLINE', '/etc/cmdline'),
  etcCmdlineDir: env('ETC_CMDLINE_DIR', '/etc/cmdline.d'),
  /** Survives switch_root (a tmpfs that systemd moves into the real root). */
  runDir: env('RUN_DIR', '/run/boot-agent'),
  /** Daemon state on the real root (kmsg position, spool when no cache). */
  stateDir: env('STATE_DIR', '/var/lib/boot-agent'),
  /** Present only inside an initramfs (systemd's and dracut's marker). */
  initrdRelease: env('INITRD_RELEASE', '/etc/initrd-release'),
  /** Where dracut expects the new root. */
  sysroot: env('SYSROOT', '/sysroot'),
  /** Mount point of the cache partition inside the initramfs. */
  cacheMount: env('CACHE_MOUNT', '/run/boot-agent/cache'),
  devKmsg: env('DEV_KMSG', '/dev/kmsg'),
  /** Changes every boot; stale-lock detection in the cache (which outlives reboots) and the daemon's kmsg position (seq restarts at 0) use it. */
  bootId: env('BOOT_ID', '/proc/sys/kernel/random/boot_id'),
  /** Seconds since boot, to turn kmsg timestamps into wall-clock times. */
  procUptime: env('PROC_UPTIME', '/proc/uptime'),
  /** Which squashfs is mounted from which loop device (squashfs errors name no device). */
  procMountinfo: env('PROC_MOUNTINFO', '/proc/self/mountinfo'),
  /** Every block device including partitions (links into /sys/devices). */
  sysClassBlock: env('SYS_CLASS_BLOCK', '/sys/class/block'),
  /** MAJ:MIN → device symlinks, to name the device of a kmsg DEVICE=b7:0 dictionary entry. */
  sysDevBlock: env('SYS_DEV_BLOCK', '/sys/dev/block'),
  sysBlock: env('SYS_BLOCK', '/sys/block'),
  dmiProductUuid: env('DMI_PRODUCT_UUID', '/sys/class/dmi/id/product_uuid'),
  sysClassNet: env('SYS_CLASS_NET', '/sys/class/net'),
  /** node_exporter's textfile-collector directory (Debian's prometheus-node-exporter default); the daemon writes boot-agent.prom there. */
  promTextfileDir: env('PROM_TEXTFILE_DIR', '/var/lib/prometheus/node-exporter'),
  /** This node's bearer token for the head (root-only; carried in the initramfs by the dracut module; docs/security.md). */
  tokenFile: env('TOKEN_FILE', '/etc/boot-agent/token'),
  /** ext4's optional features this kernel has (`verity`: fs-verity on ext4). */
  sysFsExt4Features: env('SYS_FS_EXT4_FEATURES', '/sys/fs/ext4/features'),
} as const

export const commands = {
  mount: env('CMD_MOUNT', 'mount'),
  umount: env('CMD_UMOUNT', 'umount'),
  blkid: env('CMD_BLKID', 'blkid'),
  losetup: env('CMD_LOSETUP', 'losetup'),
  unsquashfs: env('CMD_UNSQUASHFS', 'unsquashfs'),
  mksquashfs: env('CMD_MKSQUASHFS', 'mksquashfs'),
  mkfsExt4: env('CMD_MKFS_EXT4', 'mkfs.ext4'),
  lsblk: env('CMD_LSBLK', 'lsblk'),
  reboot: env('CMD_REBOOT', 'reboot'),
  findmnt: env('CMD_FINDMNT', 'findmnt'),
  /** Slurm's client: the daemon drains and resumes this node with it (agent/daemon/slurm.ts). */
  scontrol: env('CMD_SCONTROL', 'scontrol'),
  /** sd_notify(3) for the daemon (agent/daemon/notify.ts). */
  systemdNotify: env('CMD_SYSTEMD_NOTIFY', 'systemd-notify'),
  /** Runs the trash deletion in the idle I/O class (util-linux). */
  ionice: env('CMD_IONICE', 'ionice'),
  rm: env('CMD_RM', 'rm'),
  /** fs-verity's tool (Debian package fsverity): seals cache objects and measures them on a hit (agent/cache/seal.ts). */
  fsverity: env('CMD_FSVERITY', 'fsverity'),
  /** Loads ext4 before asking whether it has fs-verity (agent/boot/partitions.ts). */
  modprobe: env('CMD_MODPROBE', 'modprobe'),
} as const
