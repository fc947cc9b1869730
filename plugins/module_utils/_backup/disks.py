# -*- coding: utf-8 -*-
# Copyright: (c) 2026, kvm.snapshots contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""Disks that are not plain files: storage-pool volumes and block devices, found for a backup, put back by a restore.

A ``<disk type='volume'>`` of a ``dir``, ``fs`` or ``netfs`` pool is a file that libvirt
names by pool and volume: it is backed up as that file, and the manifest records the pool,
the volume, its format and capacity so that a restore can create it again through the
storage API. A ``<disk type='block'>`` is read as a device (its size from the device, not
``st_size``); a restore writes it back to the device (``force``) or into a sparse file.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
import struct

from ansible_collections.kvm.snapshots.plugins.module_utils._libvirt import (
    InvalidInput,
    OperationFailed,
    etree,
    libvirt,
    parse_xml,
    translate,
)

from .files import ZERO_RUN, SparseWriter

FILE_POOLS = ('dir', 'fs', 'netfs')     # pools whose volumes are files in the pool's directory
BLKZEROOUT = 0x127f                     # ioctl _IO(0x12, 127): zero a range of a block device
SECTOR = 512


# -- what a definition names ---------------------------------------------------

def source_key(disk):
    """What a ``<disk>`` element points at: ``('file', path)``, ``('block', dev)``, ``('volume', pool, name)``; or None."""
    source = disk.find('source')
    if source is None:
        return None
    kind = disk.get('type', 'file')
    if kind == 'file' and source.get('file'):
        return ('file', source.get('file'))
    if kind == 'block' and source.get('dev'):
        return ('block', source.get('dev'))
    if kind == 'volume' and source.get('pool') and source.get('volume'):
        return ('volume', source.get('pool'), source.get('volume'))
    return None


def entry_key(entry):
    """The source key of a manifest FileEntry (a disk image at the top of its chain)."""
    if entry.source == 'volume' and entry.volume:
        return ('volume', entry.volume['pool'], entry.volume['name'])
    if entry.source == 'block':
        return ('block', entry.path)
    return ('file', entry.path)


def disk_keys(xml):
    """The source keys of every disk a domain or snapshot definition names, nested ones included."""
    root = parse_xml(xml)
    return {key for key in (source_key(disk) for disk in root.iter('disk')) if key is not None}


def to_file_disks(xml, mapping):
    """``xml`` with each block or volume disk whose source key is in ``mapping`` made a file disk at its path.

    Everywhere a ``<disk>`` appears: the domain, a snapshot's embedded definitions.
    """
    if not mapping:
        return xml
    root = parse_xml(xml)
    changed = False
    for disk in root.iter('disk'):
        key = source_key(disk)
        if key is None or key[0] == 'file' or key not in mapping:
            continue
        source = disk.find('source')
        for attr in ('dev', 'pool', 'volume', 'mode'):
            source.attrib.pop(attr, None)
        source.set('file', mapping[key])
        disk.set('type', 'file')
        changed = True
    return etree.tostring(root, encoding='unicode') if changed else xml


# -- storage pools and volumes -------------------------------------------------

def lookup_pool(conn, name):
    try:
        return conn.storagePoolLookupByName(name)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == libvirt.VIR_ERR_NO_STORAGE_POOL:
            return None
        raise OperationFailed('cannot look up storage pool %s: %s' % (name, translate(exc))) from None


def lookup_volume(pool, name):
    try:
        return pool.storageVolLookupByName(name)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == libvirt.VIR_ERR_NO_STORAGE_VOL:
            return None
        raise OperationFailed('cannot look up volume %s in pool %s: %s' % (name, pool.name(), translate(exc))) from None


def pool_type(pool):
    return parse_xml(pool.XMLDesc(0)).get('type')


def pool_dir(pool):
    return parse_xml(pool.XMLDesc(0)).findtext('target/path')


def resolve_volume(conn, pool_name, vol_name, where):
    """The volume a disk names, as the manifest records it: ``dict(path, pool, name, format, capacity, pool_type)``.

    ``where`` says which disk, for the refusals: a missing or inactive pool, a missing
    volume, a pool whose volumes are not files.
    """
    pool = lookup_pool(conn, pool_name)
    if pool is None:
        raise InvalidInput("%s is volume '%s' of storage pool '%s', which does not exist: define the pool, or "
                           "detach the disk" % (where, vol_name, pool_name))
    kind = pool_type(pool)
    if kind not in FILE_POOLS:
        raise InvalidInput("%s is volume '%s' of storage pool '%s' of type '%s': vm_backup only backs up local "
                           "file disks, and volumes of dir, fs and netfs pools; back it up on the storage side, or "
                           "detach it first" % (where, vol_name, pool_name, kind))
    if not pool.isActive():
        raise InvalidInput("%s is volume '%s' of storage pool '%s', which is not active: start it ('virsh "
                           "pool-start %s')" % (where, vol_name, pool_name, pool_name))
    vol = lookup_volume(pool, vol_name)
    if vol is None:
        raise InvalidInput("%s is volume '%s' of storage pool '%s', which has no such volume: refresh the pool "
                           "('virsh pool-refresh %s'), or fix the disk" % (where, vol_name, pool_name, pool_name))
    vol_root = parse_xml(vol.XMLDesc(0))
    fmt = vol_root.find('target/format')
    return dict(path=vol.path(), pool=pool_name, name=vol_name, pool_type=kind,
                format=fmt.get('type') if fmt is not None else None, capacity=vol.info()[1])


def volume_xml(spec):
    """The ``<volume>`` definition that creates the volume ``spec`` (a manifest's volume record) again."""
    root = etree.Element('volume')
    etree.SubElement(root, 'name').text = spec['name']
    capacity = etree.SubElement(root, 'capacity', unit='bytes')
    capacity.text = str(spec['capacity'])
    if spec.get('format'):
        etree.SubElement(etree.SubElement(root, 'target'), 'format', type=spec['format'])
    return etree.tostring(root, encoding='unicode')


def create_volume(pool, spec, expected_path):
    """Create the volume ``spec`` in ``pool`` through the storage API; it must land on ``expected_path``."""
    try:
        vol = pool.createXML(volume_xml(spec), 0)
    except libvirt.libvirtError as exc:
        raise OperationFailed("cannot create volume '%s' in storage pool '%s': %s"
                              % (spec['name'], pool.name(), translate(exc))) from None
    if vol.path() != expected_path:
        delete_volume(vol)
        raise OperationFailed("volume '%s' of storage pool '%s' was created at %s, not at %s: restore with disk_dir"
                              % (spec['name'], pool.name(), vol.path(), expected_path))
    return vol


def delete_volume(vol):
    try:
        vol.delete(0)
    except libvirt.libvirtError:
        pass


def refresh_pool(pool):
    try:
        pool.refresh(0)
    except libvirt.libvirtError:
        pass  # libvirt sees the volume at its next refresh: only a convenience


# -- block devices -------------------------------------------------------------

def is_block(path):
    try:
        return stat.S_ISBLK(os.stat(path).st_mode)
    except OSError:
        return False


def device_size(fd):
    """The size of an open block device (``st_size`` is 0 for one)."""
    return os.lseek(fd, 0, os.SEEK_END)


def path_size(path):
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return device_size(fd)
    finally:
        os.close(fd)


class DeviceWriter(SparseWriter):
    """Writes a restored disk onto a block device: data where the backup has data, zeros everywhere else.

    A device has no holes: what the backup holds as a hole or a run of zeros is zeroed
    on the device (``BLKZEROOUT``, which the kernel turns into a discard or write-zeroes
    where the device can), so nothing of the device's old content survives below ``size``.
    """

    def __init__(self, path, size):
        self.path = path
        self.size = size
        # O_EXCL on a block device: refused while it is mounted or otherwise held exclusively
        super().__init__(os.open(path, os.O_WRONLY | os.O_EXCL | os.O_CLOEXEC))
        self.pos = 0                # everything below is written, or zeros from zero_from on
        self.zero_from = 0          # start of the pending run of zeros (ends at pos), None when there is none

    def write(self, offset, buf, count):
        if offset > self.pos and self.zero_from is None:
            self.zero_from = self.pos   # a hole in the backup: zeros on the device
        view = memoryview(buf)
        start = None    # index into buf of a pending data run
        index = 0
        while index < count:
            step = min(ZERO_RUN - (offset + index) % ZERO_RUN, count - index)
            if buf.startswith(self.zeros[:step], index):
                if start is not None:
                    self._pwrite(view[start:index], offset + start)
                    start = None
                if self.zero_from is None:
                    self.zero_from = offset + index
            else:
                if self.zero_from is not None:
                    self._zero(self.zero_from, offset + index)
                    self.zero_from = None
                if start is None:
                    start = index
            index += step
        if start is not None:
            self._pwrite(view[start:count], offset + start)
        self.pos = offset + count

    def _zero(self, start, end):
        """Zero ``[start, end)``: whole sectors by ioctl, the odd edges (or all, without the ioctl) by writing."""
        if end <= start:
            return
        first = -(-start // SECTOR) * SECTOR
        last = end // SECTOR * SECTOR
        if last > first:
            try:
                fcntl.ioctl(self.fd, BLKZEROOUT, struct.pack('QQ', first, last - first))
            except OSError as exc:
                if exc.errno not in (errno.EOPNOTSUPP, errno.ENOTTY, errno.EINVAL):
                    raise
                first = last = start
        for lo, hi in ((start, first), (last, end)):
            while lo < hi:
                count = min(hi - lo, len(self.zeros))
                self._pwrite(memoryview(self.zeros)[:count], lo)
                lo += count

    def finish(self):
        self._zero(self.pos if self.zero_from is None else self.zero_from, self.size)
        self.zero_from, self.pos = None, self.size
        os.fsync(self.fd)

    def close(self):
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
