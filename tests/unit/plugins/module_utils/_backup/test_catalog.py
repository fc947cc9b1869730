# -*- coding: utf-8 -*-
# Copyright: (c) 2026, kvm.snapshots contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""_backup/catalog.py (issue 16): which backups belong to a domain (the UUID in their manifest, never the
label in a file name), read from the head of each backup only, and removing one without a half-deleted
backup that looks complete.

Real backups are written (without libvirt) and read back; the integration target proves the
same against libvirtd with two domains whose names share a label.
"""

from __future__ import annotations

import datetime
import os

import pytest

pytest.importorskip('lxml')

from ansible_collections.kvm.snapshots.plugins.module_utils._backup import catalog  # noqa: E402
from ansible_collections.kvm.snapshots.plugins.module_utils._backup.catalog import (  # noqa: E402
    domain_backups,
    read_manifest,
    remove_backup,
)
from ansible_collections.kvm.snapshots.plugins.module_utils._backup.errors import BackupDamaged  # noqa: E402
from ansible_collections.kvm.snapshots.plugins.module_utils._backup.files import remove_stale  # noqa: E402
from ansible_collections.kvm.snapshots.plugins.module_utils._backup.names import (  # noqa: E402
    backup_name,
    free_name,
    partial_pattern,
    safe_label,
)
from ansible_collections.kvm.snapshots.plugins.module_utils._backup.reading import Reading  # noqa: E402
from ansible_collections.kvm.snapshots.plugins.module_utils._backup.request import SUFFIXES  # noqa: E402
from ansible_collections.kvm.snapshots.tests.unit.plugins.module_utils._backup.helpers import write_to_dest  # noqa: E402
from ansible_collections.kvm.snapshots.plugins.module_utils._libvirt import Interrupted  # noqa: E402
from ansible_collections.kvm.snapshots.tests.unit.plugins.module_utils._backup.helpers import (  # noqa: E402
    HAVE_ZSTD,
    KINDS,
    OTHER_UUID,
    UUID,
    WHEN_MS,
    domain_xml,
    old_name,
    one_disk_contents,
    request_for,
)

UUID_A, UUID_B, WHEN = UUID, OTHER_UUID, WHEN_MS


def contents_of(name, uuid, disk):
    """The Contents of a domain with one raw disk and no snapshot, as discovery would find it."""
    return one_disk_contents(disk, name=name, uuid=uuid, xml=domain_xml(disk, name, uuid))


def write_named(tmp_path, dest, name, uuid, when=WHEN, kind='none', name_of_backup=None):
    disk = str(tmp_path / ('%s.raw' % safe_label(name)))
    if not os.path.exists(disk):
        with open(disk, 'wb') as handle:
            handle.write(b'\xaa' * 4096)
    name_of_backup = name_of_backup or free_name(str(dest), name, uuid, when, SUFFIXES[kind])[0]
    return write_to_dest(contents_of(name, uuid, disk), str(dest), name_of_backup, when, 'shutoff',
                         request_for(dest, kind, domain=name))


@pytest.mark.parametrize('kind', KINDS)
def test_domain_backups_go_by_the_manifest_uuid_not_the_label(tmp_path, kind):
    dest = tmp_path / 'dest'
    dest.mkdir()
    a1 = write_named(tmp_path, dest, 'web 1', UUID_A, kind=kind)
    b1 = write_named(tmp_path, dest, 'web_1', UUID_B, kind=kind)
    a2 = write_named(tmp_path, dest, 'web 1', UUID_A, when=WHEN + datetime.timedelta(seconds=1), kind=kind)
    # Backups written before names carried the UUID: old name, same label for both domains.
    old_a = write_named(tmp_path, dest, 'web 1', UUID_A, when=WHEN - datetime.timedelta(days=1), kind=kind,
                        name_of_backup=old_name('web 1', WHEN - datetime.timedelta(days=1)))
    old_b = write_named(tmp_path, dest, 'web_1', UUID_B, when=WHEN - datetime.timedelta(hours=1), kind=kind,
                        name_of_backup=old_name('web_1', WHEN - datetime.timedelta(hours=1)))
    # The domain renamed since: its old backup still has its UUID.
    renamed = write_named(tmp_path, dest, 'db', UUID_A, when=WHEN - datetime.timedelta(days=2), kind=kind,
                          name_of_backup=old_name('db', WHEN - datetime.timedelta(days=2)))
    # Look-alikes that are no backup: never anyone's, so never removed by retention.
    (dest / ('web_1-6f1c5c33-20261128T000000.000Z' + SUFFIXES[kind])).mkdir() if kind == 'directory' else \
        (dest / ('web_1-6f1c5c33-20261128T000000.000Z' + SUFFIXES[kind])).write_bytes(b'junk' * 200)
    (dest / 'web_1-20200101T000000Z.tar.zst').write_bytes(b'not a backup')
    ours = [path for _name, path in domain_backups(str(dest), UUID_A)]
    theirs = [path for _name, path in domain_backups(str(dest), UUID_B)]
    assert ours == [renamed['path'], old_a['path'], a1['path'], a2['path']]
    assert theirs == [old_b['path'], b1['path']]
    # Names written before carry one label for both domains: that was the bug.
    assert os.path.basename(old_a['path']).split('-')[0] == os.path.basename(old_b['path']).split('-')[0] == 'web_1'
    assert domain_backups(str(tmp_path / 'missing'), UUID_A) == []


@pytest.mark.skipif(not HAVE_ZSTD, reason='needs zstd')
def test_reading_the_manifest_stops_at_the_head_of_the_stream(tmp_path):
    dest = tmp_path / 'dest'
    dest.mkdir()
    disk = tmp_path / 'big.raw'
    with open(disk, 'wb') as handle:
        handle.write(os.urandom(4 << 20))
    outcome = write_to_dest(contents_of('big', UUID_A, str(disk)), str(dest), backup_name('big', WHEN, UUID_A), WHEN,
                            'shutoff', request_for(dest, 'zstd', domain='big'))
    # Cut the archive in half: a reader that went past the manifest would fail.
    with open(outcome['path'], 'r+b') as handle:
        handle.truncate(os.path.getsize(outcome['path']) // 2)
    manifest = read_manifest(outcome['path'])
    assert manifest.domain == dict(name='big', uuid=UUID_A, state='shutoff', autostart=False)
    assert domain_backups(str(dest), UUID_A) == [(os.path.basename(outcome['path']), outcome['path'])]
    with pytest.raises(BackupDamaged):
        Reading(outcome['path']).run()


def test_read_manifest_of_something_else_is_none(tmp_path):
    (tmp_path / 'x.tar.zst').write_bytes(b'\x28\xb5\x2f\xfd' + b'garbage' * 100)
    (tmp_path / 'd').mkdir()
    (tmp_path / 'd' / 'manifest.json').write_text('{"format": "something else"}')
    assert read_manifest(str(tmp_path / 'x.tar.zst')) is None
    assert read_manifest(str(tmp_path / 'd')) is None
    assert read_manifest(str(tmp_path / 'nothing')) is None


def test_a_directory_backup_removed_by_keep_never_looks_complete_half_deleted(tmp_path, monkeypatch):
    uuid = '6f1c5c33-8d3e-4a53-b0a4-63e3c4c0e0a1'
    name = backup_name('web1', datetime.datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=datetime.timezone.utc), uuid)
    backup = tmp_path / name
    backup.mkdir()
    for member in ('manifest.json', 'domain.xml', 'vda.qcow2'):
        (backup / member).write_bytes(b'x')
    real = catalog.shutil.rmtree

    def cut_short(path, *args, **kwargs):
        os.unlink(os.path.join(path, 'vda.qcow2'))
        raise Interrupted('SIGTERM')

    monkeypatch.setattr(catalog.shutil, 'rmtree', cut_short)
    with pytest.raises(KeyboardInterrupt):
        remove_backup(str(backup))
    assert not backup.exists()      # not under the name of a complete backup
    monkeypatch.setattr(catalog.shutil, 'rmtree', real)
    assert len(remove_stale(str(tmp_path), partial_pattern('web1', uuid))) == 1
    assert os.listdir(tmp_path) == []
