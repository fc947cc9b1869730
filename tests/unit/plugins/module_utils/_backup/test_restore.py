# -*- coding: utf-8 -*-
# Copyright: (c) 2026, kvm.snapshots contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""_backup/restore.py: where a restore may write, planned from the manifest before any byte is written."""

from __future__ import annotations

import json
import os
import stat

import pytest

pytest.importorskip('lxml')

from ansible_collections.kvm.snapshots.plugins.module_utils._backup.errors import BackupDamaged  # noqa: E402
from ansible_collections.kvm.snapshots.plugins.module_utils._backup.contents import SWTPM_DIR  # noqa: E402
from ansible_collections.kvm.snapshots.plugins.module_utils._backup.manifest import DirectoryEntry, FileEntry, Manifest  # noqa: E402
from ansible_collections.kvm.snapshots.plugins.module_utils._backup.request import ReadRequest, read_request  # noqa: E402
from ansible_collections.kvm.snapshots.plugins.module_utils._backup.restore import Restorer, restore_backup  # noqa: E402
from ansible_collections.kvm.snapshots.tests.unit.plugins.module_utils._backup.helpers import write_to_dest  # noqa: E402
from ansible_collections.kvm.snapshots.plugins.module_utils._domain_xml import rewrite_paths  # noqa: E402
from ansible_collections.kvm.snapshots.tests.unit.plugins.module_utils._backup.helpers import (  # noqa: E402
    DOMAIN_XML,
    NAME,
    SNAPSHOT_XML,
    UUID,
    WHEN,
    manifest_data,
    one_disk_contents,
    request_for,
    sparse_disk,
)


def restorer(disk_dir=None):
    request = ReadRequest(uri='qemu:///system', state='restored', src='/b.tar.zst', disk_dir=disk_dir,
                          disk_root=os.path.realpath(disk_dir) if disk_dir else None)
    return Restorer(None, request, check_mode=True)


def manifest_of(files):
    return Manifest(name='unit1-20261127T020304Z', created='2026-11-27T02:03:04Z',
                    domain=dict(name='unit1', uuid=UUID), files=files, order=[], current=None)


def plan_manifest(*extra, disk='/var/lib/libvirt/images/unit1.qcow2'):
    files = [FileEntry(name='domain.xml', role='domain', size=1),
             FileEntry(name='disks/00-unit1.qcow2', role='disk', path=disk, size=1, format='qcow2',
                       backing='disks/01-base.qcow2', backing_file='/var/lib/libvirt/images/base.qcow2'),
             FileEntry(name='disks/01-base.qcow2', role='backing', path='/var/lib/libvirt/images/base.qcow2', size=1,
                       format='qcow2')]
    files.extend(extra)
    return manifest_of(files)


def test_restore_destinations_follow_the_domain(tmp_path):
    xml = DOMAIN_XML.format(disk='/var/lib/libvirt/images/unit1.qcow2')
    man = plan_manifest()
    rest = restorer()
    rest.plan_destinations(man, xml, {})
    assert rest.dest['disks/00-unit1.qcow2'] == '/var/lib/libvirt/images/unit1.qcow2'
    assert rest.dest['disks/01-base.qcow2'] == '/var/lib/libvirt/images/base.qcow2'
    assert rest.rebase == []
    moved = restorer(disk_dir=str(tmp_path))
    moved.plan_destinations(man, xml, {})
    assert moved.dest['disks/01-base.qcow2'] == str(tmp_path / 'base.qcow2')
    # the overlay named its backing file by absolute path: it is rebased onto the moved one
    assert moved.rebase == [('disks/00-unit1.qcow2', str(tmp_path / 'base.qcow2'), 'qcow2')]


def test_restore_destinations_with_the_same_name_get_apart(tmp_path):
    xml = DOMAIN_XML.format(disk='/a/disk.qcow2').replace(
        '</devices>', "<disk type='file' device='disk'><source file='/b/disk.qcow2'/><target dev='vdb'/></disk></devices>")
    files = [FileEntry(name='domain.xml', role='domain', size=1),
             FileEntry(name='disks/00-disk.qcow2', role='disk', path='/a/disk.qcow2', size=1),
             FileEntry(name='disks/01-disk.qcow2', role='disk', path='/b/disk.qcow2', size=1)]
    man = manifest_of(files)
    rest = restorer(disk_dir=str(tmp_path))
    rest.plan_destinations(man, xml, {})
    assert sorted(rest.dest.values()) == [str(tmp_path / '1-disk.qcow2'), str(tmp_path / 'disk.qcow2')]
    out = rewrite_paths(xml, {'/a/disk.qcow2': rest.dest['disks/00-disk.qcow2'],
                              '/b/disk.qcow2': rest.dest['disks/01-disk.qcow2']})
    assert '/a/' not in out and '/b/' not in out


@pytest.mark.parametrize('entry, why', [
    (FileEntry(name='disks/09-evil', role='disk', path='/etc/shadow', size=1), 'neither the domain nor a snapshot uses'),
    (FileEntry(name='nvram/evil', role='nvram', path='/etc/shadow', size=1), 'its NVRAM would go to /etc/shadow'),
    (FileEntry(name='tpm/evil', role='tpm', path='/var/lib/libvirt/swtpm/other/x', size=1), 'outside'),
])
def test_restore_refuses_destinations_the_domain_does_not_use(entry, why):
    xml = DOMAIN_XML.format(disk='/var/lib/libvirt/images/unit1.qcow2')
    man = plan_manifest(entry)
    with pytest.raises(BackupDamaged, match=why):
        restorer().plan_destinations(man, xml, {})


def test_restore_result_names_what_the_restore_writes(tmp_path, conn):
    """state=restored (check mode) returns each file's mode and owner, the TPM directories, the backup's
    definition and snapshot files and autostart: what the restore role's files method needs."""
    disk = str(tmp_path / 'unit1.raw')
    sparse_disk(disk)
    os.chmod(disk, 0o640)
    contents = one_disk_contents(disk, snapshots=[('s1', SNAPSHOT_XML.format(name='s1', disk=disk))], current='s1')
    state = os.path.join(SWTPM_DIR, contents.uuid)
    contents.autostart = True
    contents.tpm_dirs = [DirectoryEntry(path=state, mode='0711', uid=0, gid=0),
                         DirectoryEntry(path=state + '/tpm2', mode='0700', uid=102, gid=106),
                         DirectoryEntry(path=state + '/../other', mode='0777', uid=0, gid=0),  # not the domain's
                         DirectoryEntry(path='/etc/evil', mode='0777', uid=0, gid=0),
                         DirectoryEntry(path=state + '/nomode')]
    dest = tmp_path / 'dest'
    dest.mkdir()
    outcome = write_to_dest(contents, str(dest), NAME, WHEN, 'shutoff', request_for(dest, 'directory'))
    result = restore_backup(read_request(dict(uri='test:///default', state='restored', src=outcome['path'],
                                              domain=None, dest=None, keep=None, disk_dir=None, force=True,
                                              start=False)), check_mode=True)
    restored = result['restored']
    info = os.stat(disk)
    assert [(f['name'], f['path'], f['mode'], f['uid'], f['gid']) for f in restored['files']] == [
        ('disks/00-unit1.raw', disk, '0640', info.st_uid, info.st_gid)]
    assert restored['directories'] == [dict(path=state, mode='0711', uid=0, gid=0),
                                       dict(path=state + '/tpm2', mode='0700', uid=102, gid=106),
                                       dict(path=state + '/nomode', mode='0711', uid=None, gid=None)]
    assert restored['definition_file'] == 'domain.xml'
    assert restored['snapshot_files'] == [dict(name='snapshots/0001.xml', snapshot='s1', current=True)]
    assert restored['autostart'] is True
    assert restored['files'][0]['sha256'] == outcome['files'][-1]['sha256']
    assert stat.S_IMODE(os.stat(disk).st_mode) == 0o640  # check mode: nothing written


@pytest.mark.parametrize('field, value', [('mode', 'rw-r--r--'), ('mode', '99'), ('uid', -1), ('gid', True)])
def test_a_malformed_mode_or_owner_is_refused_as_damage(field, value):
    data = manifest_data()
    data['files'][2][field] = value
    with pytest.raises(BackupDamaged, match='malformed %s' % field):
        Manifest.from_bytes(json.dumps(data).encode())
