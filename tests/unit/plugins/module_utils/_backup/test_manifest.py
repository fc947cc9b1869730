# -*- coding: utf-8 -*-
# Copyright: (c) 2026, kvm.snapshots contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""_backup/manifest.py: the manifest's checks, its typed value written and read back, the checksum list, sparse maps."""

from __future__ import annotations

import json

import pytest

pytest.importorskip('lxml')

from ansible_collections.kvm.snapshots.plugins.module_utils._backup.errors import BackupDamaged  # noqa: E402
from ansible_collections.kvm.snapshots.plugins.module_utils._backup.manifest import (  # noqa: E402
    FORMAT,
    DirectoryEntry,
    FileEntry,
    Manifest,
    check_checksums,
    check_manifest,
    normalise_regions,
)
from ansible_collections.kvm.snapshots.tests.unit.plugins.module_utils._backup.helpers import (  # noqa: E402
    UUID,
    manifest_data,
    typed_manifest,
)


def test_check_manifest_accepts_a_valid_one():
    assert check_manifest(manifest_data())['name'] == 'unit1-20261127T020304Z'


def test_check_manifest_refuses_a_newer_version_with_advice():
    with pytest.raises(BackupDamaged, match='format version 2, newer .* upgrade the kvm.snapshots collection'):
        check_manifest(manifest_data(format_version=2))


@pytest.mark.parametrize('changes, why', [
    (dict(format='something.else'), 'not a kvm.snapshots.vm_backup manifest'),
    (dict(format_version='1'), 'no valid format_version'),
    (dict(format_version=True), 'no valid format_version'),
    (dict(format_version=0), 'no valid format_version'),
    (dict(domain=dict(name='')), 'no valid domain'),
    (dict(files=[]), 'lists no files'),
    (dict(snapshots=dict(order=['s1', 's2'], current='s1')), 'snapshot order'),
    (dict(snapshots=dict(order=['s1'], current='s9')), 'current snapshot'),
])
def test_check_manifest_refuses_malformed(changes, why):
    with pytest.raises(BackupDamaged, match=why):
        check_manifest(manifest_data(**changes))


def test_check_manifest_requires_its_keys():
    broken = manifest_data()
    del broken['snapshots']
    with pytest.raises(BackupDamaged, match='lacks snapshots'):
        check_manifest(broken)


@pytest.mark.parametrize('entry, why', [
    (dict(name='../x', role='disk', path='/a', size=1), "'..'"),
    (dict(name='/etc/x', role='disk', path='/a', size=1), 'absolute'),
    (dict(name='disks/a', role='wizard', path='/a', size=1), 'unknown role'),
    (dict(name='nvram/a', role='disk', path='/a', size=1), 'does not fit role'),
    (dict(name='disks/a', role='nvram', path='/a', size=1), 'does not fit role'),
    (dict(name='disks/a', role='disk', path='relative/a', size=1), 'absolute path'),
    (dict(name='disks/a', role='disk', path='/var/../etc/a', size=1), 'absolute path'),
    (dict(name='disks/a', role='disk', path='/a', size=-1), 'valid size'),
    (dict(name='disks/a', role='disk', path='/a', size=10, map=[[8, 4]]), 'beyond'),
    (dict(name='disks/a', role='disk', path='/a', size=10, map=[[4, 2], [0, 2]]), 'overlaps'),
    (dict(name='domain.xml', role='domain', size=1), 'listed twice'),
    (dict(name='manifest.json', role='disk', path='/a', size=1), 'reserved name'),
])
def test_check_manifest_refuses_bad_file_entries(entry, why):
    broken = manifest_data()
    broken['files'].append(entry)
    with pytest.raises(BackupDamaged, match=why):
        check_manifest(broken)


def test_check_checksums_wants_exactly_the_manifest_files():
    names = ('manifest.json', 'domain.xml', 'snapshots/0001.xml', 'disks/00-unit1.raw')
    good = dict(format=FORMAT, sha256={name: 'a' * 64 for name in names})
    assert check_checksums(good, typed_manifest()) is good['sha256']
    extra = dict(good, sha256=dict(good['sha256'], **{'disks/zz': 'a' * 64}))
    with pytest.raises(BackupDamaged, match='exactly the files'):
        check_checksums(extra, typed_manifest())
    short = dict(good, sha256=dict(good['sha256'], **{'domain.xml': 'abc'}))
    with pytest.raises(BackupDamaged, match='malformed digest'):
        check_checksums(short, typed_manifest())


def test_normalise_regions_drops_empty_and_checks_bounds():
    assert normalise_regions([[0, 10], [20, 0], [30, 5]], 40) == [(0, 10), (30, 5)]
    assert normalise_regions([(40, 0)], 40) == []
    with pytest.raises(BackupDamaged):
        normalise_regions([[0, 10], [5, 10]], 40)
    with pytest.raises(BackupDamaged):
        normalise_regions([['0', 10]], 40)


# ---------------------------------------------------------------- the typed value

def full_manifest():
    """A Manifest with every kind of field set, built from data."""
    return Manifest(
        name='unit1-6f1c5c33-20261127T020304.517Z', created='2026-11-27T02:03:04Z', created_epoch=1795744984,
        domain=dict(name='unit1', uuid=UUID, state='running', autostart=True),
        host=dict(libvirt='9.0.0', qemu='7.2.0', hostname='unit'),
        options=dict(format='archive', compression='zstd', compression_level=3, if_running='suspend'),
        files=[
            FileEntry(name='domain.xml', role='domain', size=10, piecewise_sha256='a' * 64),
            FileEntry(name='snapshots/0001.xml', role='snapshot', snapshot='s1', size=20, piecewise_sha256='b' * 64),
            FileEntry(name='disks/00-top.qcow2', role='disk', size=8192, path='/img/top.qcow2', mode='0600',
                      uid=0, gid=0, target='vda', format='qcow2', backing='disks/01-base.qcow2',
                      backing_file='base.qcow2', backing_format='qcow2', map=[[0, 512], [4096, 512]], sparse=True),
            FileEntry(name='disks/01-base.qcow2', role='backing', size=4096, path='/img/base.qcow2', mode='0644',
                      uid=64055, gid=64055, format='qcow2', sparse=False),
            FileEntry(name='tpm/tpm2/tpm2-00.permall', role='tpm', size=3,
                      path='/var/lib/libvirt/swtpm/%s/tpm2/tpm2-00.permall' % UUID),
        ],
        order=['s1'], current='s1',
        tpm_dirs=[DirectoryEntry(path='/var/lib/libvirt/swtpm/%s' % UUID, mode='0711', uid=0, gid=0),
                  DirectoryEntry(path='/var/lib/libvirt/swtpm/%s/tpm2' % UUID, mode='0700', uid=59, gid=59)])


def test_to_bytes_and_from_bytes_give_back_the_same_manifest():
    original = full_manifest()
    data = original.to_bytes()
    assert Manifest.from_bytes(data) == original
    assert Manifest.from_bytes(data).to_bytes() == data
    # and it is a manifest the checks accept, as a reader meets it
    assert check_manifest(json.loads(data))['files'][2]['map'] == [[0, 512], [4096, 512]]


def test_a_manifest_written_before_the_typed_value_still_parses():
    """Explicit nulls, no ``sparse``, and keys this version does not know: read, the unknown ones ignored."""
    raw = manifest_data()
    raw['files'][2].update(backing_format=None, backing=None, something_newer='x')
    raw['files'][2].pop('sparse', None)
    raw['tpm_dirs'] = [dict(path='/var/lib/libvirt/swtpm/x', mode='0711'), 'not a dict']
    raw['future_key'] = {'anything': 1}
    parsed = Manifest.from_bytes(json.dumps(raw).encode())
    disk = parsed.entry('disks/00-unit1.raw')
    assert disk.backing_format is None and disk.backing is None and disk.sparse is None
    assert disk.regions == [(0, 512), (2048, 512)]
    assert 'something_newer' not in disk.to_dict() and 'backing_format' not in disk.to_dict()
    assert parsed.tpm_dirs == [DirectoryEntry(path='/var/lib/libvirt/swtpm/x', mode='0711')]
    assert (parsed.domain_name, parsed.uuid, parsed.order, parsed.current) == ('unit1', UUID, ['s1'], 's1')
    assert parsed.host == {} and parsed.options == {} and parsed.created_epoch is None


@pytest.mark.parametrize('tpm_dirs', [5, True, {'path': '/var/lib/libvirt/swtpm/x'}, 'tpm', None])
def test_malformed_tpm_dirs_that_the_checks_let_through_are_ignored_not_a_crash(tpm_dirs):
    """check_manifest does not look at tpm_dirs (a restore creates the directories 0711 without them): the
    typed value must not fail where the checks passed, or listing a dest and verifying would crash on it."""
    raw = manifest_data(tpm_dirs=tpm_dirs)
    assert check_manifest(raw) is raw
    assert Manifest.from_bytes(json.dumps(raw).encode()).tpm_dirs == []


def test_from_bytes_refuses_what_is_not_json():
    with pytest.raises(BackupDamaged, match=r'its manifest.json is damaged \(not valid JSON\)'):
        Manifest.from_bytes(b'{"format": ')
