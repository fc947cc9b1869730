# -*- coding: utf-8 -*-
# Copyright: (c) 2026, kvm.snapshots contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""_backup/directory.py: a backup kept as plain files holds what its manifest lists and nothing else."""

from __future__ import annotations

import os

import pytest

pytest.importorskip('lxml')

from ansible_collections.kvm.snapshots.plugins.module_utils._backup.errors import (  # noqa: E402
    BackupDamaged,
    UnsafeMember,
)
from ansible_collections.kvm.snapshots.plugins.module_utils._backup.reading import Reading  # noqa: E402
from ansible_collections.kvm.snapshots.tests.unit.plugins.module_utils._backup.helpers import write  # noqa: E402


def test_directory_backup_refuses_links_and_strangers(tmp_path):
    _disk, outcome = write(tmp_path, 'directory')
    path = outcome['path']
    Reading(path).run()
    os.symlink('/etc/shadow', os.path.join(path, 'disks', 'evil'))
    with pytest.raises(UnsafeMember, match='symbolic link'):
        Reading(path).run()
    os.unlink(os.path.join(path, 'disks', 'evil'))
    os.link(os.path.join(path, 'domain.xml'), str(tmp_path / 'outside-link'))
    with pytest.raises(UnsafeMember, match='hard link'):
        Reading(path).run()
    os.unlink(str(tmp_path / 'outside-link'))
    (tmp_path / 'dest' / 'unit1-20261127T020304Z' / 'stranger').write_bytes(b'x')
    with pytest.raises(BackupDamaged, match='unexpected file'):
        Reading(path).run()


def test_directory_backup_finds_data_written_into_a_hole(tmp_path):
    _disk, outcome = write(tmp_path, 'directory')
    target = os.path.join(outcome['path'], 'disks', '00-unit1.raw')
    with open(target, 'r+b') as handle:
        handle.seek(7 << 20)
        handle.write(b'\x01')
    with pytest.raises(BackupDamaged, match='data where the manifest records a hole'):
        Reading(outcome['path']).run()
