# -*- coding: utf-8 -*-
# Copyright: (c) 2026, kvm.snapshots contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""The live overlay: a running guest writes into overlays while its disks are copied, then they are merged back.

An external disk-only snapshot without metadata puts one qcow2 overlay on top of each
disk in one atomic step; the disks, with every internal snapshot in them, become
read-only backing files that can be copied consistently while the guest runs. An
active block commit then copies the guest's writes back and pivots the domain onto
its disks again (libvirt rewrites the live and the persistent definition both ways).
Overlays have a fixed name beside their disk, so one left by a backup that died is
recognised and merged by the next one.
"""

from __future__ import annotations

import os
import time

from ansible_collections.kvm.snapshots.plugins.module_utils._domain_xml import (
    backup_overlays,
    overlay_disk,
    overlay_path,
    overlays_in,
)
from ansible_collections.kvm.snapshots.plugins.module_utils._libvirt import (
    InvalidInput,
    OperationFailed,
    connect,
    etree,
    libvirt,
    one_line,
    parse_xml,
    translate,
)
from ansible_collections.kvm.snapshots.plugins.module_utils._qemu_img import commit_image

from .errors import human_size
from .files import free_bytes

OVERLAY_ROOM = 64 << 20         # free space asked for beside a disk: the overlay takes the guest's writes
AGENT_CHANNEL = 'org.qemu.guest_agent.0'
MERGE_TIMEOUT = 3600            # one disk's active commit: the guest's writes during the copy, at disk speed
RECONNECT_TIMEOUT = 120         # a libvirt daemon restarted during the copy: wait this long for it to answer
KINDS = dict(block='block device', volume='storage pool volume', network='network disk')
SNAPSHOT_FLAGS = ('VIR_DOMAIN_SNAPSHOT_CREATE_DISK_ONLY', 'VIR_DOMAIN_SNAPSHOT_CREATE_NO_METADATA',
                  'VIR_DOMAIN_SNAPSHOT_CREATE_ATOMIC')


def covered_disks(root, name='domain'):
    """``[(target, path)]``: the disks an overlay covers, every writable one; refuses one that is not a file."""
    disks = []
    for disk in root.iterfind('devices/disk'):
        source = disk.find('source')
        if disk.get('device', 'disk') not in ('disk', 'lun') or disk.find('readonly') is not None \
                or source is None or not (source.attrib or len(source)):
            continue
        target = disk.find('target').get('dev')
        if disk.get('type', 'file') != 'file' or not source.get('file'):
            raise InvalidInput("disk %s of domain '%s' is a %s, and a live backup puts its overlays on file disks "
                               "only: use if_running: suspend (paused for the copy) or shutdown (nothing was changed)"
                               % (target, name, KINDS.get(disk.get('type'), disk.get('type') + ' disk')))
        disks.append((target, source.get('file')))
    return disks


def overlay_xml(root, disks):
    """The disk-only snapshot definition that puts an overlay on ``disks`` and leaves every other disk alone."""
    covered = dict(disks)
    snap = etree.Element('domainsnapshot')
    etree.SubElement(snap, 'description').text = 'kvm.snapshots live backup overlay'
    listed = etree.SubElement(snap, 'disks')
    for disk in root.iterfind('devices/disk'):
        target = disk.find('target').get('dev')
        entry = etree.SubElement(listed, 'disk', name=target, snapshot='external' if target in covered else 'no')
        if target in covered:
            etree.SubElement(entry, 'driver', type='qcow2')
            etree.SubElement(entry, 'source', file=overlay_path(covered[target]))
    return etree.tostring(snap, encoding='unicode')


def has_agent_channel(root):
    return any(target.get('name') == AGENT_CHANNEL for target in root.iterfind('devices/channel/target'))


def snapshot_flags(quiesce):
    flags = 0
    for name in SNAPSHOT_FLAGS + (('VIR_DOMAIN_SNAPSHOT_CREATE_QUIESCE',) if quiesce else ()):
        flags |= getattr(libvirt, name)
    return flags


def check_room(name, disks):
    for target, path in disks:
        directory = os.path.dirname(path)
        try:
            free = free_bytes(directory)
        except OSError:
            continue    # not on this machine's file system (test driver): libvirt has its own say
        if free < OVERLAY_ROOM:
            raise OperationFailed("no room for the live backup overlay of disk %s of domain '%s' in %s (%s free, "
                                  "needs %s for the guest's writes during the copy): free space there, or use "
                                  "if_running: suspend (nothing was changed)"
                                  % (target, name, directory, human_size(free), human_size(OVERLAY_ROOM)))


class LiveOverlay:
    """Overlays on a running domain's disks for the copy, merged back however the copy ends.

    Same shape as ``DomainHold``: ``take()``, then ``give_back()`` in every case.
    ``held`` counts the seconds the guest's disks were frozen (overlay made, pivots).
    """

    def __init__(self, uri, dom, quiesce):
        self.uri = uri
        self.dom = dom
        self.name = dom.name()
        self.uuid = dom.UUIDString()
        self.quiesce = quiesce
        self.disks = []         # (target, disk path) with an overlay on it, once taken
        self.held = 0.0
        self.since = self.until = None

    @property
    def mode(self):
        return 'quiesced' if self.quiesce else 'live'

    def check(self):
        """Refusals before anything is changed."""
        root = parse_xml(self.dom.XMLDesc(0))
        if self.quiesce and not has_agent_channel(root):
            raise InvalidInput("quiesce needs the QEMU guest agent, and domain '%s' has no guest agent channel: "
                               "add one (<channel type='unix'><target type='virtio' name='%s'/></channel>) and run "
                               "qemu-guest-agent in the guest, or drop quiesce for a crash-consistent backup "
                               "(nothing was changed)" % (self.name, AGENT_CHANNEL))
        disks = covered_disks(root, self.name)
        check_room(self.name, disks)
        return root, disks

    def take(self):
        root, disks = self.check()
        for _target, path in disks:
            stale = overlay_path(path)
            if os.path.lexists(stale):   # not in the definition (merge_leftovers ran): merged or never used
                os.unlink(stale)
        started = time.monotonic()
        # Set before the call: a signal taken as it returns still has the overlays merged back.
        self.disks = disks
        try:
            self.dom.snapshotCreateXML(overlay_xml(root, disks), snapshot_flags(self.quiesce))
        except libvirt.libvirtError as exc:
            self.disks = []     # atomic: no overlay was made
            if self.quiesce and 'agent' in str(exc).lower():
                raise OperationFailed("quiesce failed: the QEMU guest agent of domain '%s' did not freeze its file "
                                      "systems (%s): start qemu-guest-agent in the guest, or drop quiesce for a "
                                      "crash-consistent backup (nothing was changed)"
                                      % (self.name, one_line(str(exc)))) from None
            raise OperationFailed("cannot put the live backup overlay on domain '%s': %s: or use if_running: "
                                  "suspend (nothing was changed)" % (self.name, translate(exc))) from None
        self.since = time.monotonic()
        self.held += self.since - started

    def seconds(self):
        """How long the guest's disks had the overlay."""
        return None if self.until is None else round(self.until - self.since, 3)

    def give_back(self):
        """Merge every overlay back: ``(what was done or None, error text or None)``."""
        if not self.disks:
            return None, None
        try:
            self.held += merge_all(self, [(t, overlay_path(p)) for t, p in self.disks])
        except OperationFailed as exc:
            self.disks = []
            return None, str(exc)
        self.until = time.monotonic()
        self.disks = []
        return "the live backup overlays of domain '%s' were merged back" % self.name, None

    def reconnect(self):
        """The domain again, on a new connection: the daemon was restarted while the disks were copied."""
        deadline = time.monotonic() + RECONNECT_TIMEOUT
        while True:
            try:
                self.dom = connect(self.uri).lookupByUUIDString(self.uuid)
                return self.dom
            except Exception:   # pylint: disable=broad-except
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)


def connection_broke(exc):
    return exc.get_error_domain() == libvirt.VIR_FROM_RPC or exc.get_error_code() in (
        libvirt.VIR_ERR_SYSTEM_ERROR, libvirt.VIR_ERR_NO_CONNECT, libvirt.VIR_ERR_INVALID_CONN)


def merge_all(holder, overlays):
    """Commit each overlay of ``overlays`` into its disk and pivot; the seconds the pivots froze the guest.

    Every disk is tried; those that could not be merged keep their overlay, in use, and are named.
    """
    frozen, failures, merged = 0.0, [], []
    for target, overlay in overlays:
        for attempt in (1, 2):
            try:
                frozen += merge_disk(holder.dom, target)
                unlink_merged(overlay)
                merged.append(overlay)
                break
            except libvirt.libvirtError as exc:
                if attempt == 1 and connection_broke(exc):
                    holder.reconnect()
                    continue
                failures.append(merge_failed(holder.name, target, overlay, translate(exc)))
                break
            except OperationFailed as exc:
                failures.append(merge_failed(holder.name, target, overlay, exc))
                break
    fix_definition(holder.dom, merged)
    if failures:
        raise OperationFailed('; '.join(failures))
    return frozen


def unlink_merged(overlay):
    try:
        os.unlink(overlay)
    except FileNotFoundError:
        pass


def merge_failed(name, target, overlay, why):
    return ("merging the live backup overlay of disk %s of domain '%s' back failed (%s): the guest's writes are "
            "safe in %s, which it keeps using: run vm_backup on the domain again, which merges it first, or merge "
            "it by hand ('virsh blockcommit %s %s --active --pivot')" % (target, name, why, overlay, name, target))


def merge_disk(dom, target):
    """Active block commit of ``target``'s overlay, then pivot; the seconds the pivot took."""
    check_backing(dom, target)
    job = dom.blockJobInfo(target, 0)
    if job and job.get('type') == libvirt.VIR_DOMAIN_BLOCK_JOB_TYPE_ACTIVE_COMMIT:
        dom.blockJobAbort(target, 0)    # a merge of a run that died, not pivoted: start over
    elif job:
        raise OperationFailed('another block job runs on the disk (virsh blockjob %s %s --info): wait for it to end'
                              % (dom.name(), target))
    dom.blockCommit(target, None, None, 0, libvirt.VIR_DOMAIN_BLOCK_COMMIT_ACTIVE)
    deadline = time.monotonic() + MERGE_TIMEOUT
    while True:
        info = dom.blockJobInfo(target, 0)
        if info and info['cur'] == info['end']:
            started = time.monotonic()
            try:
                dom.blockJobAbort(target, libvirt.VIR_DOMAIN_BLOCK_JOB_ABORT_PIVOT)
                return time.monotonic() - started
            except libvirt.libvirtError as exc:
                if exc.get_error_code() != libvirt.VIR_ERR_BLOCK_COPY_ACTIVE and 'not ready' not in str(exc):
                    raise   # anything but "not ready for pivot yet"
        elif not info:
            raise OperationFailed('the block commit of disk %s ended before it was ready' % target)
        if time.monotonic() > deadline:
            dom.blockJobAbort(target, 0)
            raise OperationFailed('the block commit of disk %s did not become ready within %d s' % (target, MERGE_TIMEOUT))
        time.sleep(0.02)


def check_backing(dom, target):
    """Refuse to commit an overlay that no longer has the disk under it (a block pull copied the disk into it)."""
    for disk in parse_xml(dom.XMLDesc(0)).iterfind('devices/disk'):
        if disk.find('target').get('dev') == target and disk.find('backingStore/source') is None:
            overlay = disk.find('source').get('file')
            raise OperationFailed(
                "the overlay no longer has the disk under it (a block pull copied the disk into it), so the guest runs "
                "on it alone; copy it back into the disk, which keeps its internal snapshots: 'virsh blockcopy %s %s "
                "%s --reuse-external --format qcow2 --transient-job --wait --pivot', then run vm_backup again"
                % (dom.name(), target, overlay_disk(overlay)))


def undo_overlays(root, overlays):
    """The definition ``root`` with each disk on an overlay of ``overlays`` back on the disk under it."""
    changed = False
    for disk in root.iterfind('devices/disk'):
        source = disk.find('source')
        backing = disk.find('backingStore')
        if source is None or source.get('file') not in overlays or backing is None \
                or backing.find('source') is None:
            continue
        source.set('file', backing.find('source').get('file'))
        driver, fmt = disk.find('driver'), backing.find('format')
        if driver is not None and fmt is not None:
            driver.set('type', fmt.get('type'))
        deeper = backing.find('backingStore')
        disk.replace(backing, deeper) if deeper is not None else disk.remove(backing)
        changed = True
    return changed


def fix_definition(dom, merged):
    """Point the persistent definition back at the disks if libvirt left it on one of the ``merged`` overlays."""
    if not dom.isPersistent() or not merged:
        return
    root = parse_xml(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE | libvirt.VIR_DOMAIN_XML_SECURE))
    if undo_overlays(root, merged):
        dom.connect().defineXML(etree.tostring(root, encoding='unicode'))


def merge_leftovers(holder):
    """Merge the overlays a backup that died left on ``holder.dom``: one warning per disk."""
    dom = holder.dom
    left = backup_overlays(dom)
    if not left:
        return []
    if dom.isActive():
        in_use = overlays_in(parse_xml(dom.XMLDesc(0)))
        merge_all(holder, in_use)
        # Named by the persistent definition only: the running guest writes to its disk, not to them.
        stale = [overlay for target, overlay in left if (target, overlay) not in in_use]
    else:
        for target, overlay in left:
            try:
                commit_image(overlay)
            except OperationFailed as exc:
                raise OperationFailed(merge_failed(holder.name, target, overlay, exc)) from None
        stale = [overlay for _target, overlay in left]
    fix_definition(dom, stale)
    for overlay in stale:
        unlink_merged(overlay)
    return ["domain '%s' had the live backup overlay %s on disk %s, left by a backup that did not finish: its "
            "writes were merged back into the disk first" % (holder.name, overlay, target) for target, overlay in left]
