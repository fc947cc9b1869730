# -*- coding: utf-8 -*-
# Copyright: (c) 2026, kvm.snapshots contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""_backup/write.py: a whole backup written from a domain's Contents without libvirt, and read back by the
module and without it (tar, zstd, Python's tarfile); never over an existing backup; removed when interrupted.

The integration target proves the same against real libvirtd and QEMU.
"""

from __future__ import annotations

import datetime
import io
import json
import os
import signal
import stat
import subprocess
import tarfile

import pytest

pytest.importorskip('lxml')

from ansible_collections.kvm.snapshots.plugins.module_utils._backup import digest  # noqa: E402
from ansible_collections.kvm.snapshots.plugins.module_utils._backup.names import backup_name  # noqa: E402
from ansible_collections.kvm.snapshots.plugins.module_utils._backup.reading import Reading  # noqa: E402
from ansible_collections.kvm.snapshots.tests.unit.plugins.module_utils._backup.helpers import write_to_dest  # noqa: E402
from ansible_collections.kvm.snapshots.plugins.module_utils._libvirt import OperationFailed  # noqa: E402
from ansible_collections.kvm.snapshots.tests.unit.plugins.module_utils._backup.helpers import (  # noqa: E402
    HAVE_GNU_TAR,
    HAVE_ZSTD,
    KINDS,
    UUID,
    allocated,
    holes_here,
    one_disk_contents,
    reference_digest,
    request_for,
    write,
)

WHEN = datetime.datetime(2026, 11, 27, 2, 3, 4, 517000, tzinfo=datetime.timezone.utc)


@pytest.mark.parametrize('kind', KINDS)
def test_backup_round_trip_without_libvirt(tmp_path, kind):
    disk, outcome = write(tmp_path, kind)
    assert os.path.exists(outcome['path'])
    assert not [n for n in os.listdir(tmp_path / 'dest') if n.startswith('.')]
    disk_entry = outcome['files'][-1]
    assert disk_entry['sparse'] is True
    assert disk_entry['sha256'] == reference_digest(disk)
    reading = Reading(outcome['path']).run()
    summary = reading.summary()
    assert summary['domain'] == 'unit1' and summary['snapshots'] == ['s1']
    assert reading.data_size == (1 << 20) + 4096
    # what the backup holds, read without the module
    top = 'unit1-20261127T020304Z/'
    disk_member = 'disks/00-unit1.raw'
    if kind == 'directory':
        members = {}
        for base, _dirs, names in os.walk(outcome['path']):
            for name in names:
                full = os.path.join(base, name)
                members[os.path.relpath(full, outcome['path'])] = full
        with open(members['manifest.json'], 'rb') as handle:
            written = json.loads(handle.read())
        with open(members[disk_member], 'rb') as copy, open(disk, 'rb') as original:
            assert copy.read() == original.read()
        if holes_here(tmp_path):
            assert allocated(members[disk_member]) == allocated(disk)
    else:
        raw = open(outcome['path'], 'rb').read()
        if kind == 'zstd':
            raw = subprocess.run(['zstd', '-dc', outcome['path']], capture_output=True, check=True).stdout
        with tarfile.open(fileobj=io.BytesIO(raw)) as archive:
            members = {m.name[len(top):]: m for m in archive.getmembers() if m.isfile()}
            written = json.loads(archive.extractfile(members['manifest.json']).read())
            with open(disk, 'rb') as original:
                assert archive.extractfile(members[disk_member]).read() == original.read()
    assert sorted(members) == ['checksums.json', disk_member, 'domain.xml', 'manifest.json', 'snapshots/0001.xml']
    entry = [e for e in written['files'] if e['name'] == disk_member][0]
    assert entry['map'] == [[0, 1 << 20], [5 << 20, 4096]] and entry['size'] == 8 << 20


@pytest.mark.skipif(not (HAVE_ZSTD and HAVE_GNU_TAR), reason='needs zstd and GNU tar')
def test_plain_tar_and_python_tarfile_read_the_archive(tmp_path):
    disk, outcome = write(tmp_path, 'zstd')
    out = tmp_path / 'x'
    out.mkdir()
    subprocess.run(['tar', '-I', 'zstd', '-xpSf', outcome['path'], '-C', str(out)], check=True)
    restored = out / 'unit1-20261127T020304Z' / 'disks' / '00-unit1.raw'
    with open(disk, 'rb') as a, open(restored, 'rb') as b:
        assert a.read() == b.read()
    if holes_here(tmp_path):
        assert allocated(restored) == [(0, 1 << 20), (5 << 20, 4096)]  # still sparse, holes where the source had
    assert stat.S_IMODE(os.stat(restored).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(restored.parent).st_mode) == 0o700
    data = subprocess.run(['zstd', '-dc', outcome['path']], capture_output=True, check=True).stdout
    with tarfile.open(fileobj=io.BytesIO(data)) as archive:
        member = archive.getmember('unit1-20261127T020304Z/disks/00-unit1.raw')
        with open(disk, 'rb') as a:
            assert archive.extractfile(member).read() == a.read()


def test_write_never_replaces_an_existing_backup(tmp_path):
    dest = tmp_path / 'dest'
    dest.mkdir()
    name = backup_name('web1', WHEN, UUID)
    (dest / (name + '.tar')).write_bytes(b'someone else')
    disk = tmp_path / 'web1.raw'
    disk.write_bytes(b'\xaa' * 4096)
    with pytest.raises(OperationFailed, match='appeared while the backup was written'):
        write_to_dest(one_disk_contents(str(disk), name='web1'), str(dest), name, WHEN, 'shutoff',
                      request_for(dest, 'none', domain='web1'))
    assert (dest / (name + '.tar')).read_bytes() == b'someone else'
    assert sorted(os.listdir(dest)) == [name + '.tar']


def test_a_signal_in_the_middle_of_writing_removes_the_partial_backup(tmp_path, run_module, monkeypatch):
    disk = tmp_path / 'unit1.raw'
    disk.write_bytes(b'\xaa' * (2 << 20))
    dest = tmp_path / 'dest'
    dest.mkdir()
    contents = one_disk_contents(str(disk), xml="<domain><name>unit1</name><uuid>%s</uuid></domain>" % UUID)
    real_update = digest.ContentDigest.update
    partials = []

    def hash_then_signal(self, *args):
        # The first piece of the disk: the partial backup exists by then (the XML is hashed before).
        if not partials and self.size == 2 << 20:
            partials.extend(n for n in os.listdir(dest) if '.partial-' in n)
            os.kill(os.getpid(), signal.SIGTERM)
        return real_update(self, *args)

    monkeypatch.setattr(digest.ContentDigest, 'update', hash_then_signal)
    when = datetime.datetime(2026, 11, 27, 2, 3, 4, tzinfo=datetime.timezone.utc)
    name = backup_name('unit1', when, UUID)
    result = run_module(lambda: write_to_dest(contents, str(dest), name, when, 'shutoff', request_for(dest, 'none')))
    assert len(partials) == 1
    assert os.listdir(dest) == []
    assert result['interrupted'] == dict(signal='SIGTERM',
                                         done=['the partial backup %s was removed' % (dest / partials[0])])
