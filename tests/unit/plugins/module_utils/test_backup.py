# -*- coding: utf-8 -*-
# Copyright: (c) 2026, kvm.snapshots contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""vm_backup's pure parts: manifest checks, member path safety, sparse maps, path rewriting,
names and retention, and a whole backup written and read back without libvirt.

The integration target proves the same against real libvirtd and QEMU.
"""

from __future__ import annotations

import datetime
import errno
import hashlib
import io
import json
import os
import random
import shutil
import stat
import subprocess
import tarfile

import pytest

pytest.importorskip('lxml')

from ansible_collections.kvm.snapshots.plugins.module_utils import _backup as bk  # noqa: E402
from ansible_collections.kvm.snapshots.plugins.module_utils._backup import (  # noqa: E402
    BackupDamaged,
    UnsafeMember,
    check_checksums,
    check_manifest,
    check_relative,
    member_path,
    normalise_regions,
)

HAVE_ZSTD = shutil.which('zstd') is not None
HAVE_GNU_TAR = shutil.which('tar') is not None and b'GNU tar' in subprocess.run(
    ['tar', '--version'], capture_output=True, check=False).stdout

DOMAIN_XML = """<domain type='kvm'>
  <name>unit1</name>
  <uuid>6f1c5c33-8d3e-4a53-b0a4-63e3c4c0e0a1</uuid>
  <memory unit='MiB'>64</memory>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='raw'/>
      <source file='{disk}'/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <disk type='file' device='cdrom'>
      <source file='/isos/install.iso'/>
      <target dev='sda' bus='sata'/>
    </disk>
    <graphics type='vnc' passwd='s3cret'/>
  </devices>
</domain>
"""

SNAPSHOT_XML = """<domainsnapshot>
  <name>{name}</name>
  <state>shutoff</state>
  <creationTime>1700000000</creationTime>
  <memory snapshot='no'/>
  <disks><disk name='vda' snapshot='internal'/></disks>
  <domain type='kvm'>
    <name>unit1</name>
    <devices>
      <disk type='file' device='disk'>
        <source file='{disk}'/>
        <backingStore><source file='{disk}'/></backingStore>
        <target dev='vda'/>
      </disk>
    </devices>
  </domain>
</domainsnapshot>
"""


def manifest(**changes):
    base = dict(
        format=bk.FORMAT, format_version=1, name='unit1-20261127T020304Z', created='2026-11-27T02:03:04Z',
        domain=dict(name='unit1', uuid='6f1c5c33-8d3e-4a53-b0a4-63e3c4c0e0a1'),
        files=[
            dict(name='domain.xml', role='domain', size=10),
            dict(name='snapshots/0001.xml', role='snapshot', snapshot='s1', size=10),
            dict(name='disks/00-unit1.raw', role='disk', path='/var/lib/libvirt/images/unit1.raw', size=4096,
                 map=[[0, 512], [2048, 512]]),
        ],
        snapshots=dict(order=['s1'], current='s1'),
    )
    base.update(changes)
    return base


# ---------------------------------------------------------------- member paths

@pytest.mark.parametrize('name', ['top/manifest.json', 'top/disks/00-a.qcow2', 'top/', 'top'])
def test_member_path_accepts_members_of_the_backup(name):
    assert member_path(name, 'top') == name.rstrip('/').partition('/')[2]


@pytest.mark.parametrize('name, why', [
    ('top/../evil', "'..'"),
    ('../top/x', "'..'"),
    ('top/disks/../../etc/passwd', "'..'"),
    ('/etc/passwd', 'absolute'),
    ('/top/x', 'absolute'),
    ('top//x', 'normalised'),
    ('top/./x', 'normalised'),
    ('other/x', 'outside'),
    ('top\x00/x', 'NUL'),
    ('', 'empty'),
])
def test_member_path_refuses_escapes(name, why):
    with pytest.raises(UnsafeMember, match=why):
        member_path(name, 'top')


def test_check_relative_is_strict():
    assert check_relative('disks/00-a.qcow2') == 'disks/00-a.qcow2'
    for bad in ('..', 'a/..', '/a', 'a/', 'a//b', './a', None, 7):
        with pytest.raises(UnsafeMember):
            check_relative(bad)


# ---------------------------------------------------------------- manifest

def test_check_manifest_accepts_a_valid_one():
    assert check_manifest(manifest())['name'] == 'unit1-20261127T020304Z'


def test_check_manifest_refuses_a_newer_version_with_advice():
    with pytest.raises(BackupDamaged, match='format version 2, newer .* upgrade the kvm.snapshots collection'):
        check_manifest(manifest(format_version=2))


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
        check_manifest(manifest(**changes))


def test_check_manifest_requires_its_keys():
    broken = manifest()
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
    broken = manifest()
    broken['files'].append(entry)
    with pytest.raises(BackupDamaged, match=why):
        check_manifest(broken)


def test_check_checksums_wants_exactly_the_manifest_files():
    names = ('manifest.json', 'domain.xml', 'snapshots/0001.xml', 'disks/00-unit1.raw')
    good = dict(format=bk.FORMAT, sha256={name: 'a' * 64 for name in names})
    assert check_checksums(good, manifest()) is good['sha256']
    extra = dict(good, sha256=dict(good['sha256'], **{'disks/zz': 'a' * 64}))
    with pytest.raises(BackupDamaged, match='exactly the files'):
        check_checksums(extra, manifest())
    short = dict(good, sha256=dict(good['sha256'], **{'domain.xml': 'abc'}))
    with pytest.raises(BackupDamaged, match='malformed digest'):
        check_checksums(short, manifest())


def test_normalise_regions_drops_empty_and_checks_bounds():
    assert normalise_regions([[0, 10], [20, 0], [30, 5]], 40) == [(0, 10), (30, 5)]
    assert normalise_regions([(40, 0)], 40) == []
    with pytest.raises(BackupDamaged):
        normalise_regions([[0, 10], [5, 10]], 40)
    with pytest.raises(BackupDamaged):
        normalise_regions([['0', 10]], 40)


# ---------------------------------------------------------------- small parts

def test_parse_pax_is_strict():
    record = b'30 GNU.sparse.realsize=123456\n'
    assert len(record) == 30
    assert bk.parse_pax(record + bytes(10)) == {'GNU.sparse.realsize': '123456'}
    for bad in (b'31 GNU.sparse.realsize=123456\n', b'x path=a\n', b'9 pathxa\n'):
        with pytest.raises(BackupDamaged):
            bk.parse_pax(bad)


def test_sparse_map_block_reaches_the_real_size():
    block = bk.sparse_map_block([(0, 512)], 4096)
    assert len(block) % 512 == 0
    assert block.rstrip(b'\x00') == b'2\n0\n512\n4096\n0\n'
    assert bk.sparse_map_block([], 0).rstrip(b'\x00') == b'1\n0\n0\n'


def test_rewrite_paths_covers_domain_snapshot_and_backing_store():
    snap = SNAPSHOT_XML.format(name='s1', disk='/old/a.qcow2').replace(
        "<memory snapshot='no'/>", "<memory snapshot='external' file='/old/mem'/>")
    out = bk.rewrite_paths(snap, {'/old/a.qcow2': '/new/a.qcow2', '/old/mem': '/new/mem'})
    assert '/old/' not in out
    assert out.count('/new/a.qcow2') == 2 and '/new/mem' in out
    same = DOMAIN_XML.format(disk='/x/a.raw')
    assert bk.rewrite_paths(same, {'/y': '/z'}) is same


def test_referenced_files_skips_cdroms():
    assert bk.referenced_files(DOMAIN_XML.format(disk='/x/a.raw')) == ['/x/a.raw']


def test_old_style_names_and_their_partials(tmp_path):
    """Names written before issue 16 (``<label>-<UTC stamp>``, built literally here); ``domain_backups`` reads them."""
    assert bk.OLD_NAME_PATTERN.match('web1-20261127T020304Z')
    assert bk.OLD_NAME_PATTERN.match('_odd_name-20261127T020304Z')
    assert bk.OLD_NAME_PATTERN.match('web1-20261127T020304Z.tar.zst')
    assert not bk.OLD_NAME_PATTERN.match('web1-20261130T000000Z.tar.zst.bak')
    assert bk.partial_pattern('web1').match('.web1-20261129T000000Z.tar.zst.partial-ab12')
    assert not bk.partial_pattern('web1').match('.web1-2-20261129T000000Z.tar.zst.partial-ab12')


def allocated(path):
    """Where the file system holds data for ``path``, walked with SEEK_DATA/SEEK_HOLE (not the module's helper)."""
    fd = os.open(str(path), os.O_RDONLY)
    try:
        size, pos, found = os.fstat(fd).st_size, 0, []
        while pos < size:
            try:
                start = os.lseek(fd, pos, os.SEEK_DATA)
            except OSError as exc:
                if exc.errno == errno.ENXIO:
                    break
                raise
            end = os.lseek(fd, start, os.SEEK_HOLE)
            found.append((start, end - start))
            pos = end
        return found
    finally:
        os.close(fd)


def holes_here(directory):
    """Whether the file system of ``directory`` reports holes (SEEK_HOLE) at 4 KiB granularity."""
    probe = directory / 'hole-probe'
    with open(probe, 'wb') as handle:
        handle.truncate(1 << 20)
        handle.seek(512 << 10)
        handle.write(b'x' * 4096)
    layout = allocated(probe)
    probe.unlink()
    return layout == [(512 << 10, 4096)]


def needs_holes(directory):
    """Skip where the file system cannot show a hole: there a dense file is all the module can make."""
    if not holes_here(directory):
        pytest.skip('the file system of %s does not report holes' % directory)


def test_sparse_writer_leaves_zero_runs_as_holes(tmp_path):
    needs_holes(tmp_path)
    run = bk.ZERO_RUN
    path = tmp_path / 'out'
    fd = os.open(str(path), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        writer = bk.SparseWriter(fd)
        buf = bytearray(bk.CHUNK)
        buf[run * 3:run * 3 + 10] = b'x' * 10                 # a few bytes inside one run
        buf[run * 5 + 100:run * 6 + 200] = b'y' * (run + 100)  # across a run boundary: two runs
        buf[-1] = 1                                            # the last byte
        writer.write(0, buf, len(buf))
        # a second call at an offset that is not on a run boundary: the runs are the file's, not the buffer's
        tail = bytearray(2 * run)
        tail[run - 4096 - 7] = 0x5a                            # in the run the call starts inside
        tail[2 * run - 1] = 0x5b                               # in the run after
        writer.write(16 * run + 4096, tail, len(tail))
        size = 16 * run + 4096 + len(tail)
        os.ftruncate(fd, size)
    finally:
        os.close(fd)
    expected = bytearray(size)
    expected[:len(buf)] = buf
    expected[16 * run + 4096:] = tail
    assert path.read_bytes() == bytes(expected)
    # the non-zero runs are data, every other run is a hole
    assert allocated(path) == [(3 * run, run), (5 * run, 2 * run), (15 * run, run),
                               (16 * run + 4096, run - 4096), (18 * run, 4096)]
    assert os.stat(path).st_blocks * 512 < 6 * run


def reference_digest(path):
    """The digest as the module documents it, the slow obvious way."""
    top = hashlib.sha256()
    with open(path, 'rb') as handle:
        for piece in iter(lambda: handle.read(65536), b''):
            top.update(hashlib.sha256(piece).digest())
    return top.hexdigest()


def random_layout(seed):
    """A file's content and its data regions, the gaps between them zeros."""
    rng = random.Random(seed)
    size = rng.choice([0, 1, 4095, 65536, 65537, 3 * 65536 + 17, 5 << 20, (9 << 20) + 123])
    data = bytearray(size)
    regions = []
    pos = 0
    while size and pos < size:
        pos += rng.choice([0, 1, 512, 4096, 65536, 300000, 1 << 20])
        length = min(rng.choice([1, 100, 4096, 65536, 70000, 1 << 20]), size - pos)
        if length <= 0:
            break
        fill = rng.choice([b'\x00', b'\x01', b'z'])
        data[pos:pos + length] = fill * length
        regions.append((pos, length))
        pos += length
    return rng, data, regions


def write_sparse(path, data, regions):
    """Write only ``regions`` of ``data``: the gaps stay holes."""
    fd = os.open(str(path), os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for offset, length in regions:
            os.pwrite(fd, bytes(data[offset:offset + length]), offset)
        os.ftruncate(fd, len(data))
    finally:
        os.close(fd)


@pytest.mark.parametrize('seed', range(12))
def test_content_digest_matches_the_reference_whatever_the_layout(tmp_path, seed):
    rng, data, regions = random_layout(seed)
    size = len(data)
    path = tmp_path / 'f'
    path.write_bytes(bytes(data))
    expected = reference_digest(str(path))
    # fed region by region, in pieces of odd sizes, with the gaps left as holes
    digest = bk.ContentDigest(size)
    for offset, length in regions:
        done = 0
        while done < length:
            step = min(rng.choice([1, 777, 65536, 1 << 20]), length - done)
            chunk = bytearray(data[offset + done:offset + done + step])
            digest.update(offset + done, chunk, step)
            done += step
    assert digest.hexdigest() == expected
    # fed densely
    assert bk.digest_bytes(bytes(data)) == expected


@pytest.mark.parametrize('seed', range(12))
def test_file_digest_and_copy_regions_match_the_reference(tmp_path, seed):
    _rng, data, regions = random_layout(seed)
    src_path, dst_path = tmp_path / 'src', tmp_path / 'dst'
    write_sparse(src_path, data, regions)
    expected = reference_digest(str(src_path))
    src = os.open(str(src_path), os.O_RDONLY)
    dst = os.open(str(dst_path), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        # what the file system reports and what the module was told give the same digest
        assert bk.file_digest(src, len(data), bk.data_regions(src, len(data))) == expected
        assert bk.file_digest(src, len(data), regions) == expected
        found = bk.data_regions(src, len(data))
        bk.copy_regions(src, dst, regions)
        os.ftruncate(dst, len(data))
    finally:
        os.close(src)
        os.close(dst)
    assert dst_path.read_bytes() == bytes(data)
    if not holes_here(tmp_path):
        return
    # the module's map is the file system's, and the copy has data exactly where the source has
    assert found == allocated(src_path)
    assert allocated(dst_path) == allocated(src_path)


def within(inner, outer):
    """Whether every region of ``inner`` lies inside one region of ``outer``."""
    return all(any(o <= i and i + n <= o + m for o, m in outer) for i, n in inner)


def test_copy_regions_falls_back_to_read_and_write(tmp_path, monkeypatch):
    """Where the kernel cannot copy between the two files (other file systems, old kernels)."""
    def refuse(*_args):
        raise OSError(errno.EXDEV, 'Invalid cross-device link')
    monkeypatch.setattr(bk.os, 'copy_file_range', refuse)
    _rng, data, regions = random_layout(7)
    write_sparse(tmp_path / 'src', data, regions)
    src = os.open(str(tmp_path / 'src'), os.O_RDONLY)
    dst = os.open(str(tmp_path / 'dst'), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        bk.copy_regions(src, dst, regions)
        os.ftruncate(dst, len(data))
    finally:
        os.close(src)
        os.close(dst)
    assert (tmp_path / 'dst').read_bytes() == bytes(data)
    if holes_here(tmp_path):
        # no data where the source has a hole (zeros it holds may become holes)
        assert within(allocated(tmp_path / 'dst'), allocated(tmp_path / 'src'))


def test_file_digest_reports_a_file_that_shrank(tmp_path):
    path = tmp_path / 'f'
    path.write_bytes(b'x' * 100000)
    fd = os.open(str(path), os.O_RDONLY)
    try:
        with pytest.raises(bk.OperationFailed, match='shrank'):
            bk.file_digest(fd, 200000, [(0, 200000)])
    finally:
        os.close(fd)


def sparse_reference_digest(size, data):
    """The documented digest of a file of ``size`` bytes, zeros but for ``data`` ({offset: bytes}), built piece by
    piece: SHA-256 over the SHA-256 of each 64 KiB piece (the last one shorter), runs of zero pieces in bulk."""
    piece = 65536
    zero_digest = hashlib.sha256(bytes(piece)).digest()
    touched = {}
    for offset, blob in data.items():
        for number in range(offset // piece, (offset + len(blob) - 1) // piece + 1):
            start = number * piece
            content = touched.setdefault(number, bytearray(min(piece, size - start)))
            lo, hi = max(offset, start), min(offset + len(blob), start + len(content))
            content[lo - start:hi - start] = blob[lo - offset:hi - offset]
    count = -(-size // piece)
    top = hashlib.sha256()
    number = 0
    while number < count:
        if number in touched:
            top.update(hashlib.sha256(bytes(touched.pop(number))).digest())
            number += 1
            continue
        if number == count - 1 and size % piece:
            top.update(hashlib.sha256(bytes(size % piece)).digest())
            number += 1
            continue
        stop = min([n for n in touched if n > number] + [count - 1 if size % piece else count])
        stop = min(stop, number + 65536)
        top.update(zero_digest * (stop - number))
        number = stop
    return top.hexdigest()


def test_sparse_reference_digest_is_the_dense_one(tmp_path):
    """The reference for huge files agrees with the obvious one where both can run."""
    size = 5 * 65536 + 123
    data = {0: b'a', 65530: b'across a piece boundary', 5 * 65536 + 100: b'the short last piece'}
    content = bytearray(size)
    for offset, blob in data.items():
        content[offset:offset + len(blob)] = blob
    (tmp_path / 'f').write_bytes(bytes(content))
    assert sparse_reference_digest(size, data) == reference_digest(str(tmp_path / 'f'))
    assert sparse_reference_digest(size, {}) == hashlib.sha256(b''.join(
        hashlib.sha256(bytes(n)).digest() for n in (65536,) * 5 + (123,))).hexdigest()


@pytest.mark.parametrize('size, data', [
    (1 << 40, {(1 << 40) - 3: b'end'}),                                 # 1 TiB of nothing, then 3 bytes
    ((1 << 32) + 100, {0: b'a', (1 << 31) + 65530: b'across pieces'}),  # a hole for a short last piece
    ((1 << 33) + 1, {}),                                                # all hole, a last piece of 1 byte
], ids=['1TiB-end', '4GiB-short-last', '8GiB-empty'])
def test_content_digest_of_a_huge_hole_is_cheap_and_right(size, data):
    digest = bk.ContentDigest(size)
    for offset in sorted(data):
        digest.update(offset, data[offset], len(data[offset]))
    assert digest.hexdigest() == sparse_reference_digest(size, data)


def test_create_file_and_dirs_ignore_the_umask(tmp_path):
    old = os.umask(0)
    try:
        fd = bk.create_file(str(tmp_path / 'f'))
        os.close(fd)
        bk.make_dirs(str(tmp_path / 'a' / 'b'))
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(tmp_path / 'f').st_mode) == 0o600
    assert stat.S_IMODE(os.stat(tmp_path / 'a').st_mode) == 0o700
    assert stat.S_IMODE(os.stat(tmp_path / 'a' / 'b').st_mode) == 0o700


# ---------------------------------------------------------------- a whole backup, no libvirt

def sparse_disk(path):
    with open(path, 'wb') as handle:
        handle.truncate(8 << 20)
        handle.seek(0)
        handle.write(b'\xaa' * (1 << 20))
        handle.seek(5 << 20)
        handle.write(b'\xbb' * 4096)


def fake_plan(disk):
    """A ``Plan`` as libvirt would have filled it, for a domain with one raw disk and one snapshot."""
    class Snap:
        xml = SNAPSHOT_XML.format(name='s1', disk=disk)

    class Tree:
        by_name = {'s1': Snap()}

    plan = bk.Plan.__new__(bk.Plan)
    plan.name, plan.uuid = 'unit1', '6f1c5c33-8d3e-4a53-b0a4-63e3c4c0e0a1'
    plan.xml = DOMAIN_XML.format(disk=disk)
    plan.tree, plan.order, plan.current, plan.autostart = Tree(), ['s1'], 's1', False
    plan.files, plan.by_path, plan.warnings, plan.tpm_dirs = [], {}, [], []
    plan.versions = dict(libvirt='9.0.0', qemu='7.2.0', hostname='unit')
    plan._add_plain(disk, 'disk', target='vda', fmt='raw')
    return plan


PARAMS = dict(format='archive', compression='zstd', compression_level=None, threads=0, if_running='fail')


def write(tmp_path, kind):
    disk = str(tmp_path / 'unit1.raw')
    sparse_disk(disk)
    dest = tmp_path / 'dest'
    dest.mkdir()
    when = datetime.datetime(2026, 11, 27, 2, 3, 4, tzinfo=datetime.timezone.utc)
    params = dict(PARAMS, format='directory' if kind == 'directory' else 'archive',
                  compression='none' if kind == 'none' else 'zstd')
    outcome = bk._write_backup(fake_plan(disk), str(dest), 'unit1-20261127T020304Z', bk.SUFFIXES[kind], kind, 3,
                               params, when, 'shutoff')
    return disk, outcome


KINDS = ['none', 'directory'] + (['zstd'] if HAVE_ZSTD else [])


@pytest.mark.parametrize('kind', KINDS)
def test_backup_round_trip_without_libvirt(tmp_path, kind):
    disk, outcome = write(tmp_path, kind)
    assert os.path.exists(outcome['path'])
    assert not [n for n in os.listdir(tmp_path / 'dest') if n.startswith('.')]
    disk_entry = outcome['files'][-1]
    assert disk_entry['sparse'] is True
    assert disk_entry['sha256'] == reference_digest(disk)
    reading = bk.Reading(outcome['path']).run()
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


def test_restore_result_names_what_the_restore_writes(tmp_path, conn):
    """state=restored (check mode) returns each file's mode and owner, the TPM directories, the backup's
    definition and snapshot files and autostart: what the restore role's files method needs."""
    disk = str(tmp_path / 'unit1.raw')
    sparse_disk(disk)
    os.chmod(disk, 0o640)
    plan = fake_plan(disk)
    state = os.path.join(bk.SWTPM_DIR, plan.uuid)
    plan.autostart = True
    plan.tpm_dirs = [dict(path=state, mode='0711', uid=0, gid=0),
                     dict(path=state + '/tpm2', mode='0700', uid=102, gid=106),
                     dict(path=state + '/../other', mode='0777', uid=0, gid=0),  # not the domain's: dropped
                     dict(path='/etc/evil', mode='0777', uid=0, gid=0),
                     dict(path=state + '/nomode')]
    (tmp_path / 'dest').mkdir()
    when = datetime.datetime(2026, 11, 27, 2, 3, 4, tzinfo=datetime.timezone.utc)
    outcome = bk._write_backup(plan, str(tmp_path / 'dest'), 'unit1-20261127T020304Z', '', 'directory', 3,
                               dict(PARAMS, format='directory'), when, 'shutoff')
    result = bk.restore_backup(dict(uri='test:///default', state='restored', src=outcome['path'], domain=None,
                                    dest=None, keep=None, disk_dir=None, force=True, start=False), check_mode=True)
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
    assert stat.S_IMODE(os.stat(disk).st_mode) == 0o640  # check mode: nothing written


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
                bk.Reading(path).run()
            with open(target, 'wb') as handle:
                handle.write(saved)
        bk.Reading(path).run()
        return
    size = os.path.getsize(path)
    saved = open(path, 'rb').read()
    content = subprocess.run(['zstd', '-dc', path], capture_output=True, check=True).stdout if kind == 'zstd' else None
    step = max(1, size // 97) if kind == 'none' else 1
    for offset in range(0, size, step):
        flip(path, offset)
        try:
            bk.Reading(path).run()
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


@pytest.mark.parametrize('kind', [k for k in KINDS if k != 'directory'])
def test_a_truncated_archive_is_found(tmp_path, kind):
    _disk, outcome = write(tmp_path, kind)
    path = outcome['path']
    for keep in (os.path.getsize(path) // 2, os.path.getsize(path) - 700, 100):
        with open(path, 'r+b') as handle:
            handle.truncate(keep)
        with pytest.raises(BackupDamaged, match='truncated'):
            bk.Reading(path).run()


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
        bk.Reading(bad).run()


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
        bk.Reading(bad).run()


def test_directory_backup_refuses_links_and_strangers(tmp_path):
    _disk, outcome = write(tmp_path, 'directory')
    path = outcome['path']
    bk.Reading(path).run()
    os.symlink('/etc/shadow', os.path.join(path, 'disks', 'evil'))
    with pytest.raises(UnsafeMember, match='symbolic link'):
        bk.Reading(path).run()
    os.unlink(os.path.join(path, 'disks', 'evil'))
    os.link(os.path.join(path, 'domain.xml'), str(tmp_path / 'outside-link'))
    with pytest.raises(UnsafeMember, match='hard link'):
        bk.Reading(path).run()
    os.unlink(str(tmp_path / 'outside-link'))
    (tmp_path / 'dest' / 'unit1-20261127T020304Z' / 'stranger').write_bytes(b'x')
    with pytest.raises(BackupDamaged, match='unexpected file'):
        bk.Reading(path).run()


def test_directory_backup_finds_data_written_into_a_hole(tmp_path):
    _disk, outcome = write(tmp_path, 'directory')
    target = os.path.join(outcome['path'], 'disks', '00-unit1.raw')
    with open(target, 'r+b') as handle:
        handle.seek(7 << 20)
        handle.write(b'\x01')
    with pytest.raises(BackupDamaged, match='data where the manifest records a hole'):
        bk.Reading(outcome['path']).run()


def test_not_a_backup_is_refused(tmp_path):
    junk = tmp_path / 'junk.tar.zst'
    junk.write_bytes(b'hello world' * 100)
    with pytest.raises(BackupDamaged, match='neither a zstd-compressed nor a plain tar'):
        bk.Reading(str(junk)).run()
    other = tmp_path / 'other.tar'
    with tarfile.open(str(other), 'w') as archive:
        info = tarfile.TarInfo('stuff/readme')
        info.size = 2
        archive.addfile(info, io.BytesIO(b'hi'))
    with pytest.raises(BackupDamaged, match='not a backup made by vm_backup'):
        bk.Reading(str(other)).run()


# ---------------------------------------------------------------- where a restore may write

def restorer(disk_dir=None):
    return bk.Restorer(None, dict(disk_dir=disk_dir, force=False, domain=None, src='/b.tar.zst'), check_mode=True)


def plan_manifest(*extra, disk='/var/lib/libvirt/images/unit1.qcow2'):
    files = [dict(name='domain.xml', role='domain', size=1),
             dict(name='disks/00-unit1.qcow2', role='disk', path=disk, size=1, format='qcow2',
                  backing='disks/01-base.qcow2', backing_file='/var/lib/libvirt/images/base.qcow2'),
             dict(name='disks/01-base.qcow2', role='backing', path='/var/lib/libvirt/images/base.qcow2', size=1,
                  format='qcow2')]
    files.extend(extra)
    return manifest(files=files, snapshots=dict(order=[], current=None))


def test_restore_destinations_follow_the_domain(tmp_path):
    xml = DOMAIN_XML.format(disk='/var/lib/libvirt/images/unit1.qcow2')
    man = plan_manifest()
    rest = restorer()
    rest._plan_destinations(man, {e['name']: e for e in man['files']}, xml, {})
    assert rest.dest['disks/00-unit1.qcow2'] == '/var/lib/libvirt/images/unit1.qcow2'
    assert rest.dest['disks/01-base.qcow2'] == '/var/lib/libvirt/images/base.qcow2'
    assert rest.rebase == []
    moved = restorer(disk_dir=str(tmp_path))
    moved._plan_destinations(man, {e['name']: e for e in man['files']}, xml, {})
    assert moved.dest['disks/01-base.qcow2'] == str(tmp_path / 'base.qcow2')
    # the overlay named its backing file by absolute path: it is rebased onto the moved one
    assert moved.rebase == [('disks/00-unit1.qcow2', str(tmp_path / 'base.qcow2'), 'qcow2')]


def test_restore_destinations_with_the_same_name_get_apart(tmp_path):
    xml = DOMAIN_XML.format(disk='/a/disk.qcow2').replace(
        '</devices>', "<disk type='file' device='disk'><source file='/b/disk.qcow2'/><target dev='vdb'/></disk></devices>")
    files = [dict(name='domain.xml', role='domain', size=1),
             dict(name='disks/00-disk.qcow2', role='disk', path='/a/disk.qcow2', size=1),
             dict(name='disks/01-disk.qcow2', role='disk', path='/b/disk.qcow2', size=1)]
    man = manifest(files=files, snapshots=dict(order=[], current=None))
    rest = restorer(disk_dir=str(tmp_path))
    rest._plan_destinations(man, {e['name']: e for e in man['files']}, xml, {})
    assert sorted(rest.dest.values()) == [str(tmp_path / '1-disk.qcow2'), str(tmp_path / 'disk.qcow2')]
    out = bk.rewrite_paths(xml, {'/a/disk.qcow2': rest.dest['disks/00-disk.qcow2'],
                                 '/b/disk.qcow2': rest.dest['disks/01-disk.qcow2']})
    assert '/a/' not in out and '/b/' not in out


@pytest.mark.parametrize('entry, why', [
    (dict(name='disks/09-evil', role='disk', path='/etc/shadow', size=1), 'neither the domain nor a snapshot uses'),
    (dict(name='nvram/evil', role='nvram', path='/etc/shadow', size=1), 'its NVRAM would go to /etc/shadow'),
    (dict(name='tpm/evil', role='tpm', path='/var/lib/libvirt/swtpm/other/x', size=1), 'outside'),
])
def test_restore_refuses_destinations_the_domain_does_not_use(entry, why):
    xml = DOMAIN_XML.format(disk='/var/lib/libvirt/images/unit1.qcow2')
    man = plan_manifest(entry)
    with pytest.raises(BackupDamaged, match=why):
        restorer()._plan_destinations(man, {e['name']: e for e in man['files']}, xml, {})


def test_restore_needs_an_existing_disk_dir(tmp_path):
    xml = DOMAIN_XML.format(disk='/var/lib/libvirt/images/unit1.qcow2')
    man = plan_manifest()
    with pytest.raises(bk.InvalidInput, match='does not exist: create it first'):
        restorer(disk_dir=str(tmp_path / 'missing'))._plan_destinations(man, {}, xml, {})


def test_tpm_state_is_collected_with_its_directories(tmp_path, monkeypatch):
    uuid = '6f1c5c33-8d3e-4a53-b0a4-63e3c4c0e0a1'
    state = tmp_path / uuid / 'tpm2'
    state.mkdir(parents=True)
    (state / 'tpm2-00.permall').write_bytes(b'tpm state')
    monkeypatch.setattr(bk, 'SWTPM_DIR', str(tmp_path))
    plan = bk.Plan.__new__(bk.Plan)
    plan.name, plan.uuid = 'unit1', uuid
    plan.files, plan.by_path, plan.tpm_dirs = [], {}, []
    xml = DOMAIN_XML.format(disk='/x').replace(
        '</devices>', "<tpm model='tpm-crb'><backend type='emulator' version='2.0'/></tpm></devices>")
    plan.root = bk.etree.fromstring(xml.encode())
    plan._tpm()
    assert [(e['name'], e['role'], e['path']) for e in plan.files] == [
        ('tpm/tpm2/tpm2-00.permall', 'tpm', str(state / 'tpm2-00.permall'))]
    assert [d['path'] for d in plan.tpm_dirs] == [str(tmp_path / uuid), str(state)]
    # without an emulated TPM in the definition, nothing is taken
    plan.files, plan.tpm_dirs = [], []
    plan.root = bk.etree.fromstring(DOMAIN_XML.format(disk='/x').encode())
    plan._tpm()
    assert plan.files == []
