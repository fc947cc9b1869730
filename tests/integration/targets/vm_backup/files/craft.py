# -*- coding: utf-8 -*-
# Copyright: (c) 2026, kvm.snapshots contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Make damaged and hostile copies of a vm_backup archive for the tests.

    craft.py BACKUP.tar.zst OUTDIR

writes OUTDIR/flipped.tar.zst (one byte flipped in the middle), truncated.tar.zst
(the first half), dotdot.tar.zst (an extra member TOP/../evil), absolute.tar.zst
(/tmp/kvmsnap-it-bk-evil), symlink.tar.zst (TOP/disks/evil -> /etc/shadow) and
newer.tar.zst (manifest format_version 99).
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile


def save(path, data):
    with open(path, 'wb') as handle:
        handle.write(data)


def rewrite(plain, out, after_domain=None, manifest_edit=None):
    buf = io.BytesIO()
    with tarfile.open(fileobj=io.BytesIO(plain)) as src, \
            tarfile.open(fileobj=buf, mode='w', format=tarfile.PAX_FORMAT) as dst:
        for member in src.getmembers():
            handle = src.extractfile(member) if member.isfile() else None
            if manifest_edit and member.name.endswith('/manifest.json'):
                data = json.loads(handle.read())
                manifest_edit(data)
                raw = json.dumps(data).encode()
                member.size = len(raw)
                handle = io.BytesIO(raw)
            dst.addfile(member, handle)
            if after_domain and member.name.endswith('/domain.xml'):
                after_domain(dst, member.name.split('/')[0])
    compressed = subprocess.run(['zstd', '-q', '-c'], input=buf.getvalue(), capture_output=True, check=True).stdout
    save(out, compressed)


def add_file(name):
    def extra(dst, top):
        info = tarfile.TarInfo(name.replace('TOP', top))
        info.size = 5
        dst.addfile(info, io.BytesIO(b'evil\n'))
    return extra


def add_symlink(dst, top):
    info = tarfile.TarInfo(top + '/disks/evil')
    info.type = tarfile.SYMTYPE
    info.linkname = '/etc/shadow'
    dst.addfile(info)


def main():
    src, out = sys.argv[1], sys.argv[2]
    os.makedirs(out, exist_ok=True)
    with open(src, 'rb') as handle:
        raw = handle.read()
    plain = subprocess.run(['zstd', '-q', '-d', '-c', src], capture_output=True, check=True).stdout
    # One flipped bit in the middle; zstd's framing has a little redundancy, so move on
    # until the flip really changes what the archive holds.
    for offset in range(len(raw) // 2, len(raw)):
        flipped = bytearray(raw)
        flipped[offset] ^= 0x01
        check = subprocess.run(['zstd', '-q', '-d', '-c'], input=bytes(flipped), capture_output=True, check=False)
        if check.returncode != 0 or check.stdout != plain:
            break
    save(os.path.join(out, 'flipped.tar.zst'), bytes(flipped))
    save(os.path.join(out, 'truncated.tar.zst'), raw[:len(raw) // 2])
    rewrite(plain, os.path.join(out, 'dotdot.tar.zst'), after_domain=add_file('TOP/../evil'))
    rewrite(plain, os.path.join(out, 'absolute.tar.zst'), after_domain=add_file('/tmp/kvmsnap-it-bk-evil'))
    rewrite(plain, os.path.join(out, 'symlink.tar.zst'), after_domain=add_symlink)
    rewrite(plain, os.path.join(out, 'newer.tar.zst'), manifest_edit=lambda m: m.update(format_version=99))


if __name__ == '__main__':
    main()
