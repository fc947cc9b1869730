#!/usr/bin/env bash
# disk_sums.sh IMAGE: "<snapshot or @current> <sha256 of its raw content>" per line,
# read by qemu-img alone: what a user would compare after a restore.
set -euo pipefail
image=$1
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
sum() { sha256sum "$1" | cut -d' ' -f1; }
qemu-img convert -f qcow2 -O raw "$image" "$tmp/raw"
echo "@current $(sum "$tmp/raw")"
for snap in $(qemu-img snapshot -l "$image" | awk 'NR > 2 {print $2}'); do
    qemu-img convert -f qcow2 -O raw -l "snapshot.name=$snap" "$image" "$tmp/raw"
    echo "$snap $(sum "$tmp/raw")"
done
