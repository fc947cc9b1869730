#!/usr/bin/env bash
# image_digest.sh IMAGE: what a qcow2 image holds, read with qemu-img alone: its
# snapshot table, then the SHA-256 of the raw data of every internal snapshot and
# of the active layer, each converted whole (qemu-img convert -l snapshot.name=...).
set -euo pipefail
image=$1
tmp=$(mktemp /dev/shm/kvmsnap-it-bk-digest.XXXXXX)
trap 'rm -f "$tmp"' EXIT
qemu-img snapshot -U -l "$image" | awk 'NR > 2 {print "table:", $2, $3, $4, $5, $6, $7}'
for snap in $(qemu-img snapshot -U -l "$image" | awk 'NR > 2 {print $2}'); do
    qemu-img convert -U -f qcow2 -O raw -l "snapshot.name=$snap" "$image" "$tmp"
    echo "snapshot $snap $(sha256sum < "$tmp" | cut -d' ' -f1)"
done
qemu-img convert -U -f qcow2 -O raw "$image" "$tmp"
echo "active $(sha256sum < "$tmp" | cut -d' ' -f1)"
