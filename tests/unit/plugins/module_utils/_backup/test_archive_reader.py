# -*- coding: utf-8 -*-
# Copyright: (c) 2026, kvm.snapshots contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""_backup/archive_reader.py: pax headers parsed strictly, members that do not belong refused, a cut archive found."""

from __future__ import annotations

import io
import os
import tarfile

import pytest

pytest.importorskip('lxml')

from ansible_collections.kvm.snapshots.plugins.module_utils._backup.archive_reader import parse_pax  # noqa: E402
from ansible_collections.kvm.snapshots.plugins.module_utils._backup.errors import (  # noqa: E402
    BackupDamaged,
    UnsafeMember,
)
from ansible_collections.kvm.snapshots.plugins.module_utils._backup.reading import Reading  # noqa: E402
from ansible_collections.kvm.snapshots.tests.unit.plugins.module_utils._backup.helpers import (  # noqa: E402
    KINDS,
    write,
)


def test_parse_pax_is_strict():
    record = b'30 GNU.sparse.realsize=123456\n'
    assert len(record) == 30
    assert parse_pax(record + bytes(10)) == {'GNU.sparse.realsize': '123456'}
    for bad in (b'31 GNU.sparse.realsize=123456\n', b'x path=a\n', b'9 pathxa\n'):
        with pytest.raises(BackupDamaged):
            parse_pax(bad)


@pytest.mark.parametrize('kind', [k for k in KINDS if k != 'directory'])
def test_a_truncated_archive_is_found(tmp_path, kind):
    _disk, outcome = write(tmp_path, kind)
    path = outcome['path']
    for keep in (os.path.getsize(path) // 2, os.path.getsize(path) - 700, 100):
        with open(path, 'r+b') as handle:
            handle.truncate(keep)
        with pytest.raises(BackupDamaged, match='truncated'):
            Reading(path).run()


def rewrite_archive(path, extra, out):
    """Copy the plain tar ``path`` to ``out`` with ``extra(tar)`` called after domain.xml."""
    with tarfile.open(path) as src, tarfile.open(out, 'w', format=tarfile.PAX_FORMAT) as dst:
        for member in src.getmembers():
            dst.addfile(member, src.extractfile(member) if member.isfile() else None)
            if member.name.endswith('/domain.xml'):
                extra(dst, member.name.split('/')[0])


@pytest.mark.parametrize('what, why', [
    ('dotdot', "'..'"), ('absolute', 'absolute'), ('symlink', 'symbolic link'), ('hardlink', 'hard link'),
    ('device', 'device'), ('unlisted', 'not listed in the manifest'),
])
def test_members_that_do_not_belong_are_refused(tmp_path, what, why):
    _disk, outcome = write(tmp_path, 'none')

    def extra(dst, top):
        info = tarfile.TarInfo({'dotdot': top + '/../evil', 'absolute': '/tmp/evil'}.get(what, top + '/evil'))
        if what == 'symlink':
            info.type, info.linkname = tarfile.SYMTYPE, '/etc/shadow'
        elif what == 'hardlink':
            info.type, info.linkname = tarfile.LNKTYPE, '/etc/shadow'
        elif what == 'device':
            info.type, info.devmajor, info.devminor = tarfile.BLKTYPE, 8, 0
        else:
            info.size = 4
            dst.addfile(info, io.BytesIO(b'evil'))
            return
        dst.addfile(info)

    bad = str(tmp_path / 'bad.tar')
    rewrite_archive(outcome['path'], extra, bad)
    with pytest.raises(UnsafeMember, match=why):
        Reading(bad).run()
