# -*- coding: utf-8 -*-
# Copyright: (c) 2026, kvm.snapshots contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""_backup/reading.py: one pass over a backup finds any flipped byte, refuses a newer manifest first,
and refuses what is not a backup."""

from __future__ import annotations

import io
import json
import os
import subprocess
import tarfile

import pytest

pytest.importorskip('lxml')

from ansible_collections.kvm.snapshots.plugins.module_utils._backup.errors import BackupDamaged  # noqa: E402
from ansible_collections.kvm.snapshots.plugins.module_utils._backup.reading import Reading  # noqa: E402
from ansible_collections.kvm.snapshots.tests.unit.plugins.module_utils._backup.helpers import (  # noqa: E402
    KINDS,
    write,
)


def flip(path, offset):
    with open(path, 'r+b') as handle:
        handle.seek(offset)
        byte = handle.read(1)
        handle.seek(offset)
        handle.write(bytes([byte[0] ^ 0x01]))


@pytest.mark.parametrize('kind', KINDS)
def test_one_flipped_byte_anywhere_is_found(tmp_path, kind):
    _disk, outcome = write(tmp_path, kind)
    path = outcome['path']
    if kind == 'directory':
        targets = [os.path.join(path, 'disks', '00-unit1.raw'), os.path.join(path, 'manifest.json'),
                   os.path.join(path, 'domain.xml'), os.path.join(path, 'checksums.json')]
        for target in targets:
            saved = open(target, 'rb').read()
            flip(target, len(saved) // 2)
            with pytest.raises(BackupDamaged):
                Reading(path).run()
            with open(target, 'wb') as handle:
                handle.write(saved)
        Reading(path).run()
        return
    size = os.path.getsize(path)
    saved = open(path, 'rb').read()
    content = subprocess.run(['zstd', '-dc', path], capture_output=True, check=True).stdout if kind == 'zstd' else None
    step = max(1, size // 97) if kind == 'none' else 1
    for offset in range(0, size, step):
        flip(path, offset)
        try:
            Reading(path).run()
        except BackupDamaged:
            pass
        else:
            # zstd's framing has a little redundancy: a flip there changes no byte of the
            # content, and the backup is as good as before. Anything else must be found.
            assert kind == 'zstd', 'flip at %d not found' % offset
            after = subprocess.run(['zstd', '-dc', path], capture_output=True, check=False)
            assert after.returncode == 0 and after.stdout == content, 'flip at %d not found' % offset
        with open(path, 'wb') as handle:
            handle.write(saved)


def test_a_newer_manifest_is_refused_before_anything_else(tmp_path):
    _disk, outcome = write(tmp_path, 'none')
    bad = str(tmp_path / 'newer.tar')
    with tarfile.open(outcome['path']) as src, tarfile.open(bad, 'w', format=tarfile.PAX_FORMAT) as dst:
        for member in src.getmembers():
            handle = src.extractfile(member) if member.isfile() else None
            if member.name.endswith('/manifest.json'):
                data = json.loads(handle.read())
                data['format_version'] = 99
                raw = json.dumps(data).encode()
                member.size = len(raw)
                handle = io.BytesIO(raw)
            dst.addfile(member, handle)
    with pytest.raises(BackupDamaged, match='format version 99, newer'):
        Reading(bad).run()


def test_not_a_backup_is_refused(tmp_path):
    junk = tmp_path / 'junk.tar.zst'
    junk.write_bytes(b'hello world' * 100)
    with pytest.raises(BackupDamaged, match='neither a zstd-compressed nor a plain tar'):
        Reading(str(junk)).run()
    other = tmp_path / 'other.tar'
    with tarfile.open(str(other), 'w') as archive:
        info = tarfile.TarInfo('stuff/readme')
        info.size = 2
        archive.addfile(info, io.BytesIO(b'hi'))
    with pytest.raises(BackupDamaged, match='not a backup made by vm_backup'):
        Reading(str(other)).run()
