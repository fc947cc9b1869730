# -*- coding: utf-8 -*-
# Copyright: (c) 2026, kvm.snapshots contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""What the _backup unit tests share: definitions and manifests as data, a domain's Contents built from
data, a backup written without libvirt, and file layouts observed without the module's own helpers."""

from __future__ import annotations

import datetime
import errno
import hashlib
import json
import os
import random
import shutil
import subprocess

import pytest

from ansible_collections.kvm.snapshots.plugins.module_utils._backup.contents import Contents, file_entry
from ansible_collections.kvm.snapshots.plugins.module_utils._backup.manifest import FORMAT, Manifest
from ansible_collections.kvm.snapshots.plugins.module_utils._backup.names import safe_label
from ansible_collections.kvm.snapshots.plugins.module_utils._backup.request import SUFFIXES, backup_request
from ansible_collections.kvm.snapshots.plugins.module_utils._backup.write import Partial, write_backup

HAVE_ZSTD = shutil.which('zstd') is not None
HAVE_GNU_TAR = shutil.which('tar') is not None and b'GNU tar' in subprocess.run(
    ['tar', '--version'], capture_output=True, check=False).stdout
KINDS = ['none', 'directory'] + (['zstd'] if HAVE_ZSTD else [])

UUID = '6f1c5c33-8d3e-4a53-b0a4-63e3c4c0e0a1'
OTHER_UUID = '0d9e2a71-1b2c-4d5e-8f90-a1b2c3d4e5f6'   # another domain's
HOST = dict(libvirt='9.0.0', qemu='7.2.0', hostname='unit')
WHEN = datetime.datetime(2026, 11, 27, 2, 3, 4, tzinfo=datetime.timezone.utc)
WHEN_MS = WHEN.replace(microsecond=517000)   # a backup name carries the milliseconds
NAME = 'unit1-20261127T020304Z'

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


def domain_xml(disk, name='unit1', uuid=UUID):
    """DOMAIN_XML for the domain ``name`` with ``uuid`` and the one disk ``disk``."""
    return DOMAIN_XML.format(disk=disk).replace('<name>unit1</name>', '<name>%s</name>' % name).replace(UUID, uuid)


def old_name(domain_name, when):
    """A name as backups were named before issue 16: ``<label>-<UTC stamp>``, built literally."""
    return '%s-%s' % (domain_name.replace(' ', '_'), when.strftime('%Y%m%dT%H%M%SZ'))


# ---------------------------------------------------------------- manifests as data

def manifest_data(**changes):
    """A valid manifest as parsed JSON (what ``check_manifest`` reads), with ``changes`` on top."""
    base = dict(
        format=FORMAT, format_version=1, name='unit1-20261127T020304Z', created='2026-11-27T02:03:04Z',
        domain=dict(name='unit1', uuid=UUID),
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


def typed_manifest(**changes):
    """``manifest_data`` as the Manifest a reader gets."""
    return Manifest.from_bytes(json.dumps(manifest_data(**changes)).encode())


# ---------------------------------------------------------------- a backup written without libvirt

def one_disk_contents(disk, name='unit1', uuid=UUID, xml=None, snapshots=(), current=None):
    """The Contents discovery would find for a domain with the one raw disk ``disk`` and ``snapshots``."""
    entry, allocated = file_entry(disk, 'disk', 'disks/00-%s' % safe_label(os.path.basename(disk)), name,
                                  target='vda', format='raw')
    return Contents(name=name, uuid=uuid, xml=DOMAIN_XML.format(disk=disk) if xml is None else xml, files=[entry],
                    snapshots=list(snapshots), current=current, host=dict(HOST), allocated=allocated)


def request_for(dest, kind, domain='unit1'):
    """The request vm_backup derives for a backup into ``dest`` written as ``kind`` (none, directory, zstd)."""
    return backup_request(dict(uri='test:///default', domain=domain, dest=str(dest),
                               format='directory' if kind == 'directory' else 'archive',
                               compression='none' if kind == 'none' else 'zstd', compression_level=None,
                               threads=0, keep=None, if_running='fail', shutdown_timeout=300))


def sparse_disk(path):
    with open(path, 'wb') as handle:
        handle.truncate(8 << 20)
        handle.seek(0)
        handle.write(b'\xaa' * (1 << 20))
        handle.seek(5 << 20)
        handle.write(b'\xbb' * 4096)


def write(tmp_path, kind):
    """A backup of unit1 (one sparse raw disk, snapshot s1) written as ``kind`` into ``tmp_path/dest``."""
    disk = str(tmp_path / 'unit1.raw')
    sparse_disk(disk)
    dest = tmp_path / 'dest'
    dest.mkdir()
    contents = one_disk_contents(disk, snapshots=[('s1', SNAPSHOT_XML.format(name='s1', disk=disk))], current='s1')
    outcome = write_to_dest(contents, str(dest), NAME, WHEN, 'shutoff', request_for(dest, kind))
    return disk, outcome


def suffix(kind):
    return SUFFIXES[kind]


# ---------------------------------------------------------------- file layouts, seen without the module

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


def write_to_dest(contents, dest, name, when, state, request):
    """write_backup into the directory ``dest`` under ``name``, as vm_backup's dest does."""
    return write_backup(contents, Partial(dest, name, request), when, state, request)
