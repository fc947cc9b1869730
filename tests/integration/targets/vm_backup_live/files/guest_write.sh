#!/usr/bin/env bash
# Write to a running domain's disk as its guest would (no guest OS needed):
#   guest_write.sh DOMAIN DISK_INDEX PATTERN OFFSET LENGTH
# DISK_INDEX 0 is the first virtio disk (vda), 1 the second (vdb). QEMU's own
# qemu-io, through the monitor, writes through the device, so the write goes
# where the guest's would: into a backup overlay while there is one. Its output
# goes to QEMU's log, not here: read the pattern back with qemu-io once the
# domain is shut off.
set -euo pipefail
dom=$1 index=$2 pattern=$3 offset=$4 length=$5
virsh qemu-monitor-command "$dom" --hmp \
  "qemu-io -d /machine/peripheral/virtio-disk$index/virtio-backend \"write -P $pattern $offset $length\""
virsh qemu-monitor-command "$dom" --hmp \
  "qemu-io -d /machine/peripheral/virtio-disk$index/virtio-backend \"flush\""
