# -*- coding: utf-8 -*-
# Copyright: (c) 2026, kvm.snapshots contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""_backup/disks.py and its users: pool volumes and block devices, found for a backup and planned for a restore
(libvirt's test:///default driver holds the pools; the real pool, loop device and QEMU are the integration
target vm_backup_disks's)."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

pytest.importorskip('lxml')

from ansible_collections.kvm.snapshots.plugins.module_utils._backup import disks as disks_module  # noqa: E402
from ansible_collections.kvm.snapshots.plugins.module_utils._backup import restore as restore_module  # noqa: E402
from ansible_collections.kvm.snapshots.plugins.module_utils._backup.contents import (  # noqa: E402
    Contents,
    check_disks,
    discover,
)
from ansible_collections.kvm.snapshots.plugins.module_utils._backup.disks import (  # noqa: E402
    DeviceWriter,
    disk_keys,
    entry_key,
    resolve_volume,
    to_file_disks,
    volume_xml,
)
from ansible_collections.kvm.snapshots.plugins.module_utils._backup.errors import BackupDamaged  # noqa: E402
from ansible_collections.kvm.snapshots.plugins.module_utils._backup.manifest import (  # noqa: E402
    FileEntry,
    Manifest,
    check_manifest,
)
from ansible_collections.kvm.snapshots.plugins.module_utils._backup.request import ReadRequest, read_request  # noqa: E402
from ansible_collections.kvm.snapshots.plugins.module_utils._backup.restore import Restorer, restore_backup  # noqa: E402
from ansible_collections.kvm.snapshots.tests.unit.plugins.module_utils._backup.helpers import write_to_dest  # noqa: E402
from ansible_collections.kvm.snapshots.plugins.module_utils._libvirt import InvalidInput, parse_xml  # noqa: E402
from ansible_collections.kvm.snapshots.tests.unit.plugins.module_utils._backup.helpers import (  # noqa: E402
    HOST,
    NAME,
    UUID,
    WHEN,
    manifest_data,
    request_for,
)

VOLUME_DISK = "<disk type='volume' device='disk'><driver name='qemu' type='qcow2'/>" \
              "<source pool='{pool}' volume='{vol}'/><target dev='vda' bus='virtio'/></disk>"
BLOCK_DISK = "<disk type='block' device='disk'><driver name='qemu' type='raw'/>" \
             "<source dev='{dev}'/><target dev='vdb' bus='virtio'/></disk>"
DOMAIN = """<domain type='test'><name>unit1</name><uuid>%s</uuid><memory>65536</memory><os><type>hvm</type></os>
<devices>{disks}</devices></domain>""" % UUID
SNAPSHOT = """<domainsnapshot><name>s1</name><disks><disk name='vda' snapshot='internal'/></disks>
<domain type='test'><name>unit1</name><devices>{disks}</devices></domain></domainsnapshot>"""


@pytest.fixture
def pool(conn, tmp_path):
    """A dir pool of test:///default whose directory is ``tmp_path/pool``; removed afterwards."""
    directory = tmp_path / 'pool'
    directory.mkdir()
    made = conn.storagePoolDefineXML("<pool type='dir'><name>unitpool</name><target><path>%s</path></target></pool>"
                                     % directory)
    made.create()
    yield made
    for vol in made.listAllVolumes():
        vol.delete(0)
    made.destroy()
    made.undefine()


def qcow2_volume(pool, name, size=1 << 20):
    """A volume of ``pool`` whose file really is a qcow2 image (the test driver creates no file)."""
    vol = pool.createXML(volume_xml(dict(name=name, capacity=size, format='qcow2')), 0)
    subprocess.run(['qemu-img', 'create', '-q', '-f', 'qcow2', vol.path(), str(size)], check=True)
    return vol


# ---------------------------------------------------------------- what a definition names

def test_disk_keys_name_files_devices_and_volumes_wherever_a_disk_appears():
    disks = VOLUME_DISK.format(pool='p', vol='v.qcow2') + BLOCK_DISK.format(dev='/dev/vg/lv') + \
        "<disk type='file' device='disk'><source file='/i/a.qcow2'/><target dev='vdc'/></disk>" \
        "<disk type='file' device='cdrom'><target dev='sda'/></disk>"
    assert disk_keys(SNAPSHOT.format(disks=disks)) == {
        ('volume', 'p', 'v.qcow2'), ('block', '/dev/vg/lv'), ('file', '/i/a.qcow2')}
    assert entry_key(FileEntry(name='disks/00-v', role='disk', size=1, path='/x/v.qcow2', source='volume',
                               volume=dict(pool='p', name='v.qcow2'))) == ('volume', 'p', 'v.qcow2')
    assert entry_key(FileEntry(name='disks/00-lv', role='disk', size=1, path='/dev/vg/lv', source='block')) == \
        ('block', '/dev/vg/lv')


def test_block_and_volume_disks_become_file_disks_in_the_domain_and_its_snapshots():
    disks = VOLUME_DISK.format(pool='p', vol='v.qcow2') + BLOCK_DISK.format(dev='/dev/vg/lv')
    mapping = {('volume', 'p', 'v.qcow2'): '/r/v.qcow2', ('block', '/dev/vg/lv'): '/r/lv'}
    for xml in (DOMAIN.format(disks=disks), SNAPSHOT.format(disks=disks)):
        root = parse_xml(to_file_disks(xml, mapping))
        found = [(d.get('type'), dict(d.find('source').attrib), d.find('driver').get('type'))
                 for d in root.iter('disk') if d.find('source') is not None]
        assert found == [('file', {'file': '/r/v.qcow2'}, 'qcow2'), ('file', {'file': '/r/lv'}, 'raw')]
    # a disk the mapping does not name stays as it is
    xml = DOMAIN.format(disks=disks)
    assert to_file_disks(xml, {('block', '/dev/other'): '/r/x'}) == xml


def test_check_disks_lets_block_and_volume_disks_through_and_refuses_the_rest():
    ok = DOMAIN.format(disks=VOLUME_DISK.format(pool='p', vol='v') + BLOCK_DISK.format(dev='/dev/vg/lv'))
    check_disks(parse_xml(ok), 'unit1')
    nvme = "<disk type='nvme' device='disk'><source type='pci' managed='yes' namespace='1'>" \
           "<address domain='0x0000' bus='0x01' slot='0x00' function='0x0'/></source><target dev='vde'/></disk>"
    with pytest.raises(InvalidInput, match="disk vde of domain 'unit1' has type 'nvme'.*type 'volume'"):
        check_disks(parse_xml(DOMAIN.format(disks=nvme)), 'unit1')


# ---------------------------------------------------------------- volumes found through the storage API

def test_a_volume_disk_is_backed_up_as_its_file_with_the_volume_recorded(conn, define, pool):
    vol = qcow2_volume(pool, 'v1.qcow2', 2 << 20)
    dom = define(DOMAIN.format(disks=VOLUME_DISK.format(pool='unitpool', vol='v1.qcow2')))
    found = discover(conn, dom)
    [entry] = found.files
    assert (entry.name, entry.role, entry.path, entry.format, entry.source) == (
        'disks/00-v1.qcow2', 'disk', vol.path(), 'qcow2', 'volume')
    assert entry.volume == dict(pool='unitpool', name='v1.qcow2', pool_type='dir', format='qcow2', capacity=2 << 20)
    assert found.disks == [dict(target='vda', type='volume', path=vol.path(), format='qcow2', internal_snapshots=True,
                                pool='unitpool', volume='v1.qcow2')]
    assert found.warnings == []


@pytest.mark.parametrize('pool_xml, why', [
    ("<pool type='logical'><name>unitlv</name><source><name>vg</name></source><target><path>/dev/vg</path>"
     "</target></pool>", "storage pool 'unitlv' of type 'logical': vm_backup only backs up local file disks, and "
                         "volumes of dir, fs and netfs pools"),
    (None, "storage pool 'nosuchpool', which does not exist"),
])
def test_volumes_of_other_pools_are_refused(conn, pool_xml, why):
    made = conn.storagePoolDefineXML(pool_xml, 0) if pool_xml else None
    name = made.name() if made else 'nosuchpool'
    try:
        with pytest.raises(InvalidInput, match=why):
            resolve_volume(conn, name, 'lv1', "disk vda of domain 'unit1'")
    finally:
        if made is not None:
            made.undefine()


def test_a_missing_volume_is_refused(conn, pool):
    with pytest.raises(InvalidInput, match="has no such volume: refresh the pool"):
        resolve_volume(conn, 'unitpool', 'gone.qcow2', "disk vda of domain 'unit1'")


# ---------------------------------------------------------------- the manifest records them

def test_the_manifest_keeps_a_volume_record_and_old_manifests_still_read():
    files = manifest_data()['files']
    files[2].update(source='volume', volume=dict(pool='p', name='unit1.raw', format='raw', capacity=4096,
                                                 pool_type='dir'))
    manifest = Manifest.from_bytes(json.dumps(manifest_data(files=files)).encode())
    assert manifest.files[2].volume['pool'] == 'p' and manifest.files[2].source == 'volume'
    assert json.loads(manifest.to_bytes())['files'][2]['volume']['capacity'] == 4096
    # a manifest written before volumes and devices were known has neither field
    old = Manifest.from_bytes(json.dumps(manifest_data()).encode())
    assert (old.files[2].source, old.files[2].volume) == (None, None)


@pytest.mark.parametrize('change, why', [
    (dict(source='tape'), 'unknown source'),
    (dict(source='volume'), 'without a valid pool and volume name'),
    (dict(source='volume', volume=dict(pool='p', name='../../etc/x', capacity=1)), 'no file name'),
    (dict(source='volume', volume=dict(pool='p', name='v', capacity=-1)), 'without a valid capacity'),
    (dict(source='block', volume=dict(pool='p', name='v', capacity=1)), 'block device with a volume record'),
])
def test_a_malformed_volume_or_device_record_is_damage(change, why):
    files = manifest_data()['files']
    files[2].update(change)
    with pytest.raises(BackupDamaged, match=why):
        check_manifest(manifest_data(files=files))


# ---------------------------------------------------------------- restore plans

def restorer(conn, disk_dir=None, force=False):
    request = ReadRequest(uri='test:///default', state='restored', src='/b.tar.zst', disk_dir=disk_dir,
                          disk_root=os.path.realpath(disk_dir) if disk_dir else None, force=force)
    return Restorer(conn, request, check_mode=True)


def disk_manifest(entry):
    return Manifest(name='unit1-20261127T020304Z', created='2026-11-27T02:03:04Z', domain=dict(name='unit1', uuid=UUID),
                    files=[FileEntry(name='domain.xml', role='domain', size=1), entry], order=[], current=None)


def volume_entry(pool_name='unitpool', name='v1.qcow2'):
    return FileEntry(name='disks/00-%s' % name, role='disk', size=1 << 20, path='/old/host/%s' % name, format='qcow2',
                     source='volume', volume=dict(pool=pool_name, name=name, format='qcow2', capacity=1 << 20))


def test_a_missing_volume_is_planned_for_creation_in_its_pool(conn, pool, tmp_path):
    xml = DOMAIN.format(disks=VOLUME_DISK.format(pool='unitpool', vol='v1.qcow2'))
    rest = restorer(conn)
    rest.plan_destinations(disk_manifest(volume_entry()), xml, {})
    path = str(tmp_path / 'pool' / 'v1.qcow2')
    assert rest.dest['disks/00-v1.qcow2'] == path
    assert [(p.name(), spec['name'], where) for p, spec, where in rest.new_volumes] == [('unitpool', 'v1.qcow2', path)]
    # an existing volume is restored onto its file where the pool has it now; nothing to create
    vol = qcow2_volume(pool, 'v1.qcow2')
    again = restorer(conn)
    again.plan_destinations(disk_manifest(volume_entry()), xml, {})
    assert (again.dest['disks/00-v1.qcow2'], again.new_volumes) == (vol.path(), [])


def test_a_volume_with_disk_dir_becomes_a_file_disk(conn, pool, tmp_path):
    xml = DOMAIN.format(disks=VOLUME_DISK.format(pool='unitpool', vol='v1.qcow2'))
    rest = restorer(conn, disk_dir=str(tmp_path))
    rest.plan_destinations(disk_manifest(volume_entry()), xml, {})
    assert rest.dest['disks/00-v1.qcow2'] == str(tmp_path / 'v1.qcow2') and rest.new_volumes == []
    assert rest.as_files == {('volume', 'unitpool', 'v1.qcow2'): str(tmp_path / 'v1.qcow2')}


def test_a_volume_of_a_pool_that_is_gone_needs_disk_dir(conn):
    xml = DOMAIN.format(disks=VOLUME_DISK.format(pool='gonepool', vol='v1.qcow2'))
    with pytest.raises(InvalidInput, match="storage pool 'gonepool', which does not exist here: .* disk_dir"):
        restorer(conn).plan_destinations(disk_manifest(volume_entry('gonepool')), xml, {})


def test_a_block_device_is_overwritten_only_with_force(conn, tmp_path):
    xml = DOMAIN.format(disks=BLOCK_DISK.format(dev='/dev/vg/lv'))
    entry = FileEntry(name='disks/00-lv', role='disk', size=1 << 20, path='/dev/vg/lv', format='raw', source='block',
                      target='vdb')
    with pytest.raises(InvalidInput, match='block device /dev/vg/lv .*set force: true .* or restore with disk_dir'):
        restorer(conn).plan_destinations(disk_manifest(entry), xml, {})
    forced = restorer(conn, force=True)
    forced.plan_destinations(disk_manifest(entry), xml, {})
    assert forced.devices == {'disks/00-lv': '/dev/vg/lv'}
    moved = restorer(conn, disk_dir=str(tmp_path), force=True)
    moved.plan_destinations(disk_manifest(entry), xml, {})
    assert (moved.devices, moved.dest['disks/00-lv']) == ({}, str(tmp_path / 'lv'))


# ---------------------------------------------------------------- writing onto a device

def test_the_device_writer_leaves_nothing_of_the_old_content(tmp_path, monkeypatch):
    """Data where the backup has data; zeros where it has a hole or zeros; the tail below size zeroed; beyond kept.

    A regular file stands in for the device: BLKZEROOUT is refused there, so the writer writes the zeros.
    """
    path = tmp_path / 'device'
    size = 1 << 20
    path.write_bytes(b'\xff' * (size + 4096))
    monkeypatch.setattr(disks_module, 'ZERO_RUN', 4096)
    writer = DeviceWriter(str(path), size)
    chunk = bytearray(b'\xaa' * 8192 + bytes(16384) + b'\xbb' * 100)
    writer.write(4096, chunk, len(chunk))               # a hole before it, a run of zeros inside
    writer.write(300000, bytearray(b'\xcc' * 10), 10)   # a hole between, an odd offset
    writer.finish()
    writer.close()
    expected = bytearray(size)
    expected[4096:4096 + len(chunk)] = chunk
    expected[300000:300010] = b'\xcc' * 10
    assert path.read_bytes() == bytes(expected) + b'\xff' * 4096


# ---------------------------------------------------------------- a restore onto a device, end to end

def test_a_restore_writes_a_device_only_with_force_and_only_what_the_backup_holds(conn, tmp_path, monkeypatch):
    """Backup and restore of a block disk on test:///default; a regular file stands in for the device (the real
    loop device is the integration target's): without force nothing is touched, with force it is overwritten."""
    device = tmp_path / 'device'
    original = bytearray(4 << 20)
    original[1 << 20:(1 << 20) + 4096] = b'\x5c' * 4096
    original[-512:] = b'\x7e' * 512
    device.write_bytes(bytes(original))
    xml = DOMAIN.format(disks=BLOCK_DISK.format(dev=device))
    entry = FileEntry(name='disks/00-device', role='disk', path=str(device), size=len(original), format='raw',
                      target='vdb', source='block')
    contents = Contents(name='unit1', uuid=UUID, xml=xml, files=[entry], host=dict(HOST))
    dest = tmp_path / 'dest'
    dest.mkdir()
    backup = write_to_dest(contents, str(dest), NAME, WHEN, 'shutoff', request_for(dest, 'directory'))
    scribbled = b'\xff' * len(original)
    device.write_bytes(scribbled)
    monkeypatch.setattr(restore_module, 'is_block', lambda path: path == str(device))
    params = dict(uri='test:///default', state='restored', src=backup['path'], domain=None, dest=None, keep=None,
                  disk_dir=None, start=False)
    with pytest.raises(InvalidInput, match='set force: true to overwrite that device'):
        restore_backup(read_request(dict(params, force=False)))
    assert device.read_bytes() == scribbled
    result = restore_backup(read_request(dict(params, force=True)))
    assert [(f['path'], f['source']) for f in result['restored']['files']] == [(str(device), 'block')]
    assert device.read_bytes() == bytes(original)
    assert "<source dev='%s'/>" % device in conn.lookupByName('unit1').XMLDesc(0)
