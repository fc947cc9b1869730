# -*- coding: utf-8 -*-
# Copyright: (c) 2026, kvm.snapshots contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""Whether a new snapshot fits on the file systems it writes to, checked before libvirt starts.

Private to kvm.snapshots: no stable API for other collections.

An internal snapshot of an active (running or paused) domain saves the guest's memory
state into one qcow2 image: QEMU's ``savevm`` picks the first writable image that can
hold snapshots, in the order of the domain's disks (libvirt keeps them sorted by bus
and target, so: the first writable qcow2 disk of the definition). Its size is at most
all of the guest's RAM: its memory and its video memory, plus the device state. A file
system that runs full halfway fails the snapshot only once it is full, and the guest's
next write to a disk there pauses it (QEMU's default on ENOSPC). A shut-off domain's internal snapshot and an external (disk_only) one
write metadata only: a small margin is all they need.
"""

from __future__ import annotations

import os

from ansible_collections.kvm.snapshots.plugins.module_utils._libvirt import InvalidInput, is_local_uri, parse_xml

MIB = 1024 * 1024
VMSTATE_MARGIN = 64 * MIB   # device state, qcow2 metadata for the state's clusters, the snapshot table
VMSTATE_SHARE = 20          # ... or 5 % of the RAM, whichever is more
SMALL_MARGIN = 1 * MIB      # a snapshot table entry, a copied L1 table, an overlay's header
UNITS = {'b': 1, 'bytes': 1, 'kb': 1000, 'k': 1024, 'kib': 1024, 'mb': 1000 ** 2, 'm': MIB, 'mib': MIB,
         'gb': 1000 ** 3, 'g': 1024 ** 3, 'gib': 1024 ** 3, 'tb': 1000 ** 4, 't': 1024 ** 4, 'tib': 1024 ** 4}
VIDEO_MEMORY = ('ram', 'vram', 'vram64', 'vgamem')   # KiB each, as libvirt fills them in


def size_of(node):
    """Bytes of a libvirt scaled integer element (``<memory unit='KiB'>65536</memory>``); KiB when no unit."""
    if node is None or not (node.text or '').strip():
        return 0
    return int(node.text.strip()) * UNITS.get((node.get('unit') or 'KiB').lower(), 1024)


def guest_ram(domain_xml):
    """``(memory, video)`` in bytes: the guest's memory (``<memory>``, all QEMU holds) and its video memory."""
    video = 0
    for model in domain_xml.iterfind('devices/video/model'):
        video += sum(int(model.get(attr)) * 1024 for attr in VIDEO_MEMORY if (model.get(attr) or '').isdigit())
    return size_of(domain_xml.find('memory')), video


def vmstate_need(memory, video):
    """What the memory state of a guest with ``memory`` and ``video`` bytes of RAM may take, margin included."""
    ram = memory + video
    return ram + max(VMSTATE_MARGIN, ram // VMSTATE_SHARE)


def _file_disks(domain_xml):
    """``[(target, path, format, readonly)]`` of the disks backed by a local file, in the definition's order."""
    found = []
    for disk in domain_xml.iterfind('devices/disk'):
        if disk.get('device', 'disk') not in ('disk', 'lun') or disk.get('type', 'file') != 'file':
            continue
        source, driver, target = disk.find('source'), disk.find('driver'), disk.find('target')
        if source is None or not source.get('file') or target is None:
            continue
        found.append((target.get('dev'), source.get('file'), driver.get('type') if driver is not None else None,
                      disk.find('readonly') is not None))
    return found


def vmstate_disk(domain_xml):
    """``(target, path)`` of the image an active domain's internal snapshot saves its memory into, or None."""
    return next(((target, path) for target, path, fmt, readonly in _file_disks(domain_xml)
                 if fmt == 'qcow2' and not readonly), None)


def snapshot_writes(domain_xml, active, disk_only):
    """``[(directory, bytes, what)]``: what a new snapshot writes where (before the file systems are asked).

    Internal: each writable qcow2 image gets a snapshot table entry; an active domain's
    memory state goes to the first one. External (disk_only): each disk gets an overlay
    beside it.
    """
    writes = []
    vmstate = None if disk_only or not active else vmstate_disk(domain_xml)
    for target, path, fmt, readonly in _file_disks(domain_xml):
        if readonly or (not disk_only and fmt != 'qcow2'):
            continue
        if vmstate is not None and (target, path) == vmstate:
            memory, video = guest_ram(domain_xml)
            what = ('the memory state of the guest (%s of memory%s, %s with the margin) into the image of %s, %s'
                    % (_mib(memory), ' and %s of video memory' % _mib(video) if video else '',
                       _mib(vmstate_need(memory, video)), target, path))
            writes.append((os.path.dirname(path), vmstate_need(memory, video), what))
        else:
            what = ('an overlay beside %s of %s' % (path, target) if disk_only
                    else 'snapshot metadata into the image of %s, %s' % (target, path))
            writes.append((os.path.dirname(path), SMALL_MARGIN, what))
    return writes


def _mib(num):
    return '%d MiB' % -(-num // MIB)


def shortfalls(writes, stat=None, statvfs=None):
    """``[(directory, needed, free, [what])]`` for each file system ``writes`` would not fit on."""
    stat, statvfs = stat or os.stat, statvfs or os.statvfs
    by_fs = {}
    for directory, need, what in writes:
        try:
            device = stat(directory).st_dev
        except OSError:
            continue    # not here to look at: libvirt will say what it thinks
        entry = by_fs.setdefault(device, [directory, 0, []])
        entry[1] += need
        entry[2].append(what)
    found = []
    for directory, need, whats in by_fs.values():
        info = statvfs(directory)
        free = info.f_bavail * info.f_frsize
        if free < need:
            found.append((directory, need, free, whats))
    return found


def refuse_short_of_space(domain_xml, active, label, params):
    """Refuse a new snapshot that would not fit, naming the file system, the sizes and the ways out."""
    missing = shortfalls(snapshot_writes(domain_xml, active, params['disk_only']))
    if not missing:
        return
    directory, need, free, whats = missing[0]
    if any(what.startswith('the memory state') for what in whats):
        way_out = ('free space there, shut the domain down first (a snapshot of a shut-off domain holds no memory), '
                   'or set disk_only=true')
    else:
        way_out = 'free space there'
    raise InvalidInput("cannot create snapshot '%s' of domain '%s': it writes %s, and the file system of %s has "
                       "%s free of the %s it needs: %s (nothing was changed)"
                       % (params['name'], label, '; '.join(whats), directory, _mib_down(free), _mib(need), way_out))


def _mib_down(num):
    return '%d MiB' % (num // MIB) if num >= MIB else '%d bytes' % num


def check_snapshot_space(dom, label, params):
    """vm_snapshot state=present, before a new snapshot: refuse one that would not fit (only where the images are
    this machine's: against a remote hypervisor, libvirt reports a full disk itself)."""
    if not is_local_uri(dom.connect().getURI()):
        return
    refuse_short_of_space(parse_xml(dom.XMLDesc(0)), dom.isActive(), label, params)
