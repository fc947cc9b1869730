# -*- coding: utf-8 -*-
# Copyright: (c) 2026, kvm.snapshots contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""What one domain's backup holds, found without changing anything, and the manifest that records it."""

from __future__ import annotations

import dataclasses
import os
import stat
from typing import List, Optional, Tuple

from ansible_collections.kvm.snapshots.plugins.module_utils._domain_xml import (
    nvram_path,
    referenced_files,
)
from ansible_collections.kvm.snapshots.plugins.module_utils._libvirt import (
    InvalidInput,
    OperationFailed,
    libvirt,
    parse_xml,
)
from ansible_collections.kvm.snapshots.plugins.module_utils._qemu_img import qemu_img_info
from ansible_collections.kvm.snapshots.plugins.module_utils._snapshot import SnapshotTree

from .digest import digest_bytes
from .disks import is_block, path_size, resolve_volume, source_key
from .files import dense
from .manifest import DISK_ROLES, DirectoryEntry, FileEntry, Manifest
from .names import safe_label

SWTPM_DIR = '/var/lib/libvirt/swtpm'


@dataclasses.dataclass
class Contents:
    """A domain as a backup takes it: definition, snapshots parents first, and the files, in manifest order."""

    name: str
    uuid: str
    xml: str                                    # the inactive definition, secure info included
    files: List[FileEntry]                      # disks and their backing chains, memory files, NVRAM, TPM state
    snapshots: List[Tuple[str, str]] = dataclasses.field(default_factory=list)   # (name, XML)
    current: Optional[str] = None
    autostart: bool = False
    tpm_dirs: List[DirectoryEntry] = dataclasses.field(default_factory=list)
    host: dict = dataclasses.field(default_factory=dict)
    warnings: List[str] = dataclasses.field(default_factory=list)
    allocated: int = 0                          # bytes the files take on disk
    disks: List[dict] = dataclasses.field(default_factory=list)   # the domain's disks as the result reports them

    @property
    def order(self):
        return [name for name, _xml in self.snapshots]

    def space_needed(self):
        """The most a backup of it can take: what its files allocate and its XML."""
        return self.allocated + len(self.xml) + sum(len(xml) for _name, xml in self.snapshots)

    def manifest(self, name, created, state, options, maps=None):
        """The manifest of a backup called ``name`` made at ``created``; ``maps`` are the files' data regions."""
        created = created.replace(microsecond=0)  # the name carries the milliseconds
        raw = self.xml.encode()
        # The XML files' digests are in the manifest too, so that a restore can trust them
        # (and plan where the files go) before the checksum list at the end arrives.
        files = [FileEntry(name='domain.xml', role='domain', size=len(raw), piecewise_sha256=digest_bytes(raw))]
        for index, (snap, data) in enumerate(self.snapshot_files(), 1):
            files.append(FileEntry(name=snap_member(index), role='snapshot', snapshot=snap, size=len(data),
                                   piecewise_sha256=digest_bytes(data)))
        for entry, regions in zip(self.files, maps or [None] * len(self.files)):
            sparse = None if regions is None else regions != dense(entry.size)
            files.append(dataclasses.replace(entry, sparse=sparse,
                                             map=[list(r) for r in regions] if sparse else None))
        return Manifest(name=name, created=created.isoformat().replace('+00:00', 'Z'),
                        created_epoch=int(created.timestamp()),
                        domain=dict(name=self.name, uuid=self.uuid, state=state, autostart=self.autostart),
                        host=self.host, options=options, files=files, order=self.order, current=self.current,
                        tpm_dirs=self.tpm_dirs)

    def snapshot_files(self):
        """``(snapshot name, XML bytes)``, parents first, as the backup stores them."""
        return [(snap, xml.encode()) for snap, xml in self.snapshots]


def snap_member(index):
    return 'snapshots/%04d.xml' % index


def version_text(number):
    """libvirt's packed version number (major * 1000000 + minor * 1000 + micro) as text."""
    return '%d.%d.%d' % (number // 1000000, number // 1000 % 1000, number % 1000)


def host_versions(conn):
    versions = dict(libvirt=version_text(conn.getLibVersion()))
    for key, call in (('qemu', lambda: version_text(conn.getVersion())), ('hostname', conn.getHostname)):
        try:
            versions[key] = call()
        except libvirt.libvirtError:
            versions[key] = None
    return versions


def file_entry(path, role, member, domain, **extra):
    """The entry of the regular file (or, for ``source='block'``, block device) ``path``, and the bytes it allocates.

    Refuses anything else. A device's size is read from the device; it allocates all of it,
    and its mode and owner (the device node's) are not recorded: a restore into a file gives
    it the default ones.
    """
    try:
        info = os.stat(path)
    except OSError as exc:
        raise OperationFailed('cannot read %s (%s of domain %s): %s' % (path, role, domain, exc.strerror)) from None
    if extra.get('source') == 'block':
        if not stat.S_ISBLK(info.st_mode):
            raise InvalidInput("%s (%s of domain %s) is not a block device, though the domain's disk has type "
                               "'block': fix the disk's source" % (path, role, domain))
        try:
            size = path_size(path)
        except OSError as exc:
            raise OperationFailed('cannot read %s (%s of domain %s): %s' % (path, role, domain, exc.strerror)) from None
        return FileEntry(name=member, role=role, path=path, size=size, **extra), size
    if not stat.S_ISREG(info.st_mode):
        raise InvalidInput('%s (%s of domain %s) is not a regular file: vm_backup only backs up local file '
                           'disks' % (path, role, domain))
    return FileEntry(name=member, role=role, path=path, size=info.st_size, mode='%04o' % stat.S_IMODE(info.st_mode),
                     uid=info.st_uid, gid=info.st_gid, **extra), info.st_blocks * 512


def definition_xml(dom):
    """What a backup records as the domain's definition: the persistent one, or a transient domain's own."""
    flags = libvirt.VIR_DOMAIN_XML_INACTIVE if dom.isPersistent() else libvirt.VIR_DOMAIN_XML_MIGRATABLE
    return dom.XMLDesc(libvirt.VIR_DOMAIN_XML_SECURE | flags)


def discover(conn, dom, xml=None):
    """The Contents of ``dom``: read from libvirt, qemu-img and the file system; nothing is changed.

    ``xml``: the definition to record instead of today's (a live backup's, from before its overlay).
    """
    xml = xml or definition_xml(dom)
    tree = SnapshotTree.from_domain(dom, secure=True)
    contents = Contents(name=dom.name(), uuid=dom.UUIDString(), xml=xml, files=[],
                        snapshots=[(name, tree.by_name[name].xml) for name in tree.topological()],
                        current=tree.current, autostart=bool(dom.autostart()), host=host_versions(conn))
    _Finder(contents, conn).collect(parse_xml(xml))
    return contents


class _Finder:
    """Fills a Contents with the files of its domain and snapshots, each once, in manifest order."""

    def __init__(self, contents, conn=None):
        self.contents = contents
        self.conn = conn
        self.by_path = {}

    def collect(self, root):
        check_disks(root, self.contents.name)
        self._nvram(root)
        self._tpm(root)
        for disk in root.iterfind('devices/disk'):
            if disk.get('device', 'disk') in ('disk', 'lun'):
                self._disk(disk)
        for name, xml in self.contents.snapshots:
            snap_root = parse_xml(xml)
            for disk in snap_root.iterfind('disks/disk'):
                source = disk.find('source')
                if disk.get('snapshot') == 'external' and source is not None and source.get('file'):
                    self._chain(source.get('file'), 'snapshot-disk', disk.get('name'), snapshot=name)
            memory = snap_root.find('memory')
            if memory is not None and memory.get('file'):
                self._add(memory.get('file'), 'memory', snapshot=name)
            for path in referenced_files(xml):
                if path not in self.by_path and os.path.realpath(path) not in self.by_path:
                    if os.path.exists(path):
                        self._chain(path, 'snapshot-disk', None, snapshot=name)
                    else:
                        self.contents.warnings.append("snapshot '%s' refers to %s, which does not exist: not in the "
                                                      "backup" % (name, path))

    def _disk(self, disk):
        """One disk of the domain: a file, a block device or a pool volume, with its backing chain."""
        key = source_key(disk)
        if key is None:
            return      # an empty drive
        target = disk.find('target').get('dev')
        where = "disk %s of domain '%s'" % (target, self.contents.name)
        extra = {}
        if key[0] == 'volume':
            volume = resolve_volume(self.conn, key[1], key[2], where)
            path = volume.pop('path')
            extra = dict(source='volume', volume=volume)
        elif key[0] == 'block':
            path = key[1]
            if not is_block(path):
                raise InvalidInput("%s has type 'block', but %s is not a block device: fix the disk's source"
                                   % (where, path))
            extra = dict(source='block')
        else:
            path = key[1]
        top = self._chain(path, 'disk', target, **extra)
        report = dict(target=target, type=key[0], path=path, format=top.format if top else None,
                      internal_snapshots=bool(top and top.format == 'qcow2'))
        if key[0] == 'volume':
            report.update(pool=key[1], volume=key[2])
        self.contents.disks.append(report)
        if key[0] == 'block' and not report['internal_snapshots']:
            self.contents.warnings.append(
                "%s is the %s block device %s: it cannot hold internal snapshots, so the backup holds its current "
                "content only%s" % (where, report['format'] or 'raw', path,
                                    '; the domain\'s snapshots (%d) hold the states of its other disks'
                                    % len(self.contents.snapshots) if self.contents.snapshots else ''))

    def _nvram(self, root):
        path = nvram_path(root, self.contents.name)
        if path is not None and os.path.isfile(path):
            self._add(path, 'nvram', member='nvram/' + safe_label(os.path.basename(path)))

    def _tpm(self, root):
        emulated = [tpm for tpm in root.iterfind('devices/tpm')
                    if tpm.find('backend') is not None and tpm.find('backend').get('type') == 'emulator']
        state = os.path.join(SWTPM_DIR, self.contents.uuid)
        if not emulated or not os.path.isdir(state):
            return
        for base, dirs, files in os.walk(state):
            dirs.sort()
            rel_dir = os.path.relpath(base, state)
            info = os.lstat(base)
            self.contents.tpm_dirs.append(DirectoryEntry(path=base, mode='%04o' % stat.S_IMODE(info.st_mode),
                                                         uid=info.st_uid, gid=info.st_gid))
            for name in sorted(files):
                path = os.path.join(base, name)
                if not stat.S_ISREG(os.lstat(path).st_mode):
                    continue
                rel = name if rel_dir == '.' else os.path.join(rel_dir, name)
                self._add(path, 'tpm', member='tpm/' + '/'.join(safe_label(p) for p in rel.split('/')))

    def _chain(self, path, role, target, snapshot=None, **extra):
        """The entries of ``path`` and its backing chain; the top one (``extra`` applies to it only)."""
        if path in self.by_path:
            return self.by_path[path]
        previous = top = None
        for depth, image in enumerate(qemu_img_info(path, backing_chain=True)):
            filename = image.get('filename') or path
            if ':' in filename.split('/')[0] or filename.startswith('json:') or not filename.startswith('/'):
                raise InvalidInput("image %s (in the chain of %s) is not a local file: vm_backup only backs up "
                                   "local file disks" % (filename, path))
            entry = self.by_path.get(filename)
            if entry is None:
                entry = self._add(filename, role if depth == 0 else 'backing', target=target, snapshot=snapshot,
                                  format=image.get('format'), **(extra if depth == 0 else {}))
            top = top or entry
            if previous is not None:
                previous.backing = entry.name
            if image.get('backing-filename'):
                entry.backing_file = image['backing-filename']
                entry.backing_format = image.get('backing-filename-format')
            previous = entry
        return top

    def _add(self, path, role, member=None, **extra):
        path = os.path.abspath(path)
        if path in self.by_path:
            return self.by_path[path]
        if member is None:
            index = sum(1 for entry in self.contents.files if entry.role in DISK_ROLES)
            member = 'disks/%02d-%s' % (index, safe_label(os.path.basename(path)))
        entry, allocated = file_entry(path, role, member, self.contents.name,
                                      **{k: v for k, v in extra.items() if v})
        self.contents.files.append(entry)
        self.contents.allocated += allocated
        self.by_path[path] = entry
        self.by_path[os.path.realpath(path)] = entry
        return entry


def check_disks(root, name):
    """Refuse a domain with a disk vm_backup cannot copy: network disks, and any type but file, block or volume.

    Volumes of pools whose volumes are not files are refused when they are resolved (``disks.resolve_volume``).
    """
    for disk in root.iterfind('devices/disk'):
        if disk.get('device', 'disk') not in ('disk', 'lun'):
            continue
        kind = disk.get('type', 'file')
        target = disk.find('target').get('dev')
        source = disk.find('source')
        if kind == 'network':
            protocol = source.get('protocol') if source is not None else 'network'
            raise InvalidInput("disk %s of domain '%s' is a network disk (%s): vm_backup only backs up local "
                               "file disks; back it up on the storage side, or detach it first"
                               % (target, name, protocol))
        if kind not in ('file', 'block', 'volume') and source is not None and (source.attrib or len(source)):
            raise InvalidInput("disk %s of domain '%s' has type '%s': vm_backup only backs up local file disks "
                               "(type 'file'), block devices (type 'block') and volumes of dir, fs and netfs pools "
                               "(type 'volume'); convert it or detach it first" % (target, name, kind))
