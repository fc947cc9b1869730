# -*- coding: utf-8 -*-
# Copyright: (c) 2026, kvm.snapshots contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""vm_backup state=restored: plan from the manifest, stage every file while verifying, then commit in one go."""

from __future__ import annotations

import os
import re
import stat
import time

from ansible_collections.kvm.snapshots.plugins.module_utils._domain_xml import (
    NVRAM_DIR,
    domain_disks,
    nvram_path,
    referenced_files,
    rewrite_paths,
)
from ansible_collections.kvm.snapshots.plugins.module_utils._libvirt import (
    Connection,
    InvalidInput,
    OperationFailed,
    domain_state,
    etree,
    find_domain,
    libvirt,
    one_line,
    parse_xml,
    translate,
)

from .commit import RESTORING, StagedFile, Swap, set_aside_leftovers
from .contents import SWTPM_DIR
from .disks import (FILE_POOLS, DeviceWriter, disk_keys, entry_key, is_block, lookup_pool, lookup_volume, path_size,
                    pool_dir, pool_type, to_file_disks)
from .errors import BackupDamaged, human_size
from .files import existing_parent, free_bytes, missing_dirs, remove_stale
from .manifest import DISK_ROLES, FILE_ROLES, XML_ROLES, DirectoryEntry
from .progress import current as progress
from .reach import refuse_unreachable, restore_places
from .reading import Reading
from .repository import backup_source
from .verify import check_domain, rate


class Restorer:
    """Plans a restore once the manifest is in (before any byte is written) and stages every file."""

    def __init__(self, conn, request, check_mode):
        self.conn = conn
        self.request = request
        self.check_mode = check_mode
        self.staged = {}
        self.dest = {}           # member name -> destination path
        self.created_dirs = []
        self.existing = None     # the domain being replaced (force)
        self.others = {}         # path -> the other domain that uses it
        self.domain_xml = None
        self.snapshot_xml = []   # (name, xml) in topological order
        self.rebase = []         # (staged member name, new backing path, backing format)
        self.manifest = None
        self.devices = {}        # member name -> block device it is written onto (force, no disk_dir)
        self.new_volumes = []    # (pool, volume record, path): volumes the commit creates before placing their file
        self.pools = []          # the pools whose volumes are restored, refreshed after the commit
        self.as_files = {}       # source key of a block or volume disk -> the file it becomes (disk_dir)

    def prepare(self, manifest, small):
        self.manifest = manifest
        check_domain(self.request, manifest)
        name, uuid = manifest.domain_name, manifest.uuid
        domain_entry = next(e for e in manifest.files if e.role == 'domain')
        try:
            xml = small[domain_entry.name].decode('utf-8', 'strict')
            root = parse_xml(xml)
            snapshots = {}
            for entry in manifest.files:
                if entry.role == 'snapshot':
                    snapshots[entry.snapshot] = small[entry.name].decode('utf-8', 'strict')
                    parse_xml(snapshots[entry.snapshot])
        except (UnicodeDecodeError, etree.XMLSyntaxError) as exc:
            raise BackupDamaged('an XML file in it is damaged (%s)' % one_line(exc)) from None
        if root.findtext('name') != name or (root.findtext('uuid') or '').lower() != uuid.lower():
            raise BackupDamaged('its domain.xml does not describe the domain the manifest names')
        self.plan_destinations(manifest, xml, snapshots)
        mapping = {entry.path: self.dest[entry.name] for entry in manifest.files
                   if entry.role in DISK_ROLES and self.dest[entry.name] != entry.path}
        self.domain_xml = to_file_disks(rewrite_paths(xml, mapping), self.as_files)
        self.snapshot_xml = [(snap, to_file_disks(rewrite_paths(snapshots[snap], mapping), self.as_files))
                             for snap in manifest.order]
        self._check_libvirt(name, uuid)
        self._check_files(manifest)
        refuse_unreachable(self.request.uri, restore_places(manifest, self.dest))
        if self.check_mode:
            return {}
        try:
            self._make_parent_dirs(manifest)
            for entry in manifest.files:
                if entry.role in FILE_ROLES and entry.name not in self.devices:
                    final = self.dest[entry.name]
                    remove_stale(os.path.dirname(final),
                                 re.compile(r'^\.%s%s[0-9a-f]+$' % (re.escape(os.path.basename(final)),
                                                                    re.escape(RESTORING))))
                    self.staged[entry.name] = StagedFile(final, entry)
        except OSError as exc:
            self.discard()
            where = exc.filename or 'the destination'
            raise OperationFailed('cannot write next to %s: %s' % (where, exc.strerror)) from None
        return self.staged

    def plan_destinations(self, manifest, xml, snapshots):
        """Where each file goes: its recorded path, or ``disk_dir`` for disks; refuses a path the XML does not use."""
        disk_root = self.request.disk_root
        referenced = set(referenced_files(xml)) | disk_keys(xml)
        for snap_xml in snapshots.values():
            referenced.update(referenced_files(snap_xml))
            referenced.update(disk_keys(snap_xml))
        backing_targets = {entry.backing for entry in manifest.files if entry.backing}
        used = set()
        nvram = nvram_path(parse_xml(xml), manifest.domain_name)
        tpm_dir = os.path.join(SWTPM_DIR, manifest.uuid)
        for entry in manifest.files:
            if entry.role in XML_ROLES:
                continue
            path = entry.path
            if entry.role in DISK_ROLES:
                known = entry_key(entry) in referenced if entry.source else path in referenced
                if not known and entry.name not in backing_targets:
                    raise BackupDamaged('%s would be restored to %s, which neither the domain nor a snapshot uses'
                                        % (entry.name, path))
                if disk_root is not None:
                    base = entry.volume['name'] if entry.source == 'volume' else os.path.basename(path)
                    path = free_path(disk_root, base, used)
                    if entry.source:
                        self.as_files[entry_key(entry)] = path
                elif entry.source == 'block':
                    self._plan_device(entry)
                elif entry.source == 'volume':
                    path = self._plan_volume(entry)
            elif entry.role == 'nvram':
                if path != nvram:
                    raise BackupDamaged('its NVRAM would go to %s, but the domain uses %s' % (path, nvram or 'none'))
                if os.path.dirname(os.path.normpath(path)) != NVRAM_DIR:
                    # the path comes from the backup's own XML: never let it write a file anywhere
                    raise BackupDamaged("its NVRAM would go to %s, outside libvirt's NVRAM directory %s: restore "
                                        "only backups made by vm_backup of domains whose NVRAM lives there"
                                        % (path, NVRAM_DIR))
            elif entry.role == 'tpm':
                if not path.startswith(tpm_dir + '/'):
                    raise BackupDamaged('its TPM state would go to %s, outside %s' % (path, tpm_dir))
            if path in used:
                raise BackupDamaged('two files would be restored to %s' % path)
            used.add(path)
            self.dest[entry.name] = path
        self._plan_rebase(manifest)

    def _plan_rebase(self, manifest):
        """Backing files that move: each image must find its backing at the new place."""
        for entry in manifest.files:
            if not entry.backing or entry.format != 'qcow2':
                continue
            new_backing = self.dest[entry.backing]
            old_ref = entry.backing_file or ''
            resolved = old_ref if old_ref.startswith('/') else \
                os.path.normpath(os.path.join(os.path.dirname(self.dest[entry.name]), old_ref))
            if resolved != new_backing:
                self.rebase.append((entry.name, new_backing, manifest.entry(entry.backing).format or 'raw'))

    def _plan_device(self, entry):
        """A block device is overwritten only with force; without it the way out is disk_dir."""
        if not self.request.force:
            raise InvalidInput('%s of the backup is the block device %s (disk %s): set force: true to overwrite that '
                               'device, or restore with disk_dir to put it into a file'
                               % (entry.name, entry.path, entry.target))
        self.devices[entry.name] = entry.path

    def _plan_volume(self, entry):
        """The path of a volume in its pool now: the existing volume's, or where the commit creates it."""
        spec = entry.volume
        where = "%s of the backup is volume '%s' of storage pool '%s'" % (entry.name, spec['name'], spec['pool'])
        pool = lookup_pool(self.conn, spec['pool'])
        if pool is None:
            raise InvalidInput('%s, which does not exist here: define and start the pool, or restore with disk_dir'
                               % where)
        kind = pool_type(pool)
        if kind not in FILE_POOLS:
            raise InvalidInput("%s, which is of type '%s' here: restore with disk_dir" % (where, kind))
        if not pool.isActive():
            raise InvalidInput("%s, which is not active: start it ('virsh pool-start %s'), or restore with disk_dir"
                               % (where, spec['pool']))
        if pool.name() not in [p.name() for p in self.pools]:
            self.pools.append(pool)
        vol = lookup_volume(pool, spec['name'])
        if vol is not None:
            return vol.path()
        directory = pool_dir(pool)
        path = os.path.join(directory or '', spec['name'])
        if not directory or os.path.dirname(path) != directory:
            raise BackupDamaged('%s, whose file would not lie in the pool directory %s' % (where, directory))
        self.new_volumes.append((pool, spec, path))
        return path

    def _check_device(self, entry, final):
        if not is_block(final):
            raise InvalidInput('%s (disk %s) is not a block device here: restore with disk_dir to put it into a file'
                               % (final, entry.target))
        try:
            size = path_size(final)
            os.close(os.open(final, os.O_WRONLY | os.O_EXCL | os.O_CLOEXEC))
        except OSError as exc:
            raise InvalidInput('cannot open the block device %s (disk %s) for writing: %s: release it, or restore '
                               'with disk_dir' % (final, entry.target, exc.strerror)) from None
        if size < entry.size:
            raise InvalidInput('the block device %s (disk %s) has %s, the backup holds %s: use a device at least that '
                               'large, or restore with disk_dir'
                               % (final, entry.target, human_size(size), human_size(entry.size)))

    def device_writers(self):
        """A writer per block device the restore overwrites; opened only once every byte has been verified."""
        return {name: DeviceWriter(path, self.manifest.entry(name).size) for name, path in self.devices.items()}

    def _check_libvirt(self, name, uuid):
        existing = find_domain(self.conn, name=name)
        same_uuid = find_domain(self.conn, uuid=uuid)
        if same_uuid is not None and same_uuid.name() != name:
            raise InvalidInput("domain '%s' already has the UUID %s of the backed-up domain '%s': undefine it "
                               "first, or restore on another host" % (same_uuid.name(), uuid, name))
        if existing is not None:
            state = domain_state(existing)
            if state != 'shutoff':
                raise InvalidInput("domain '%s' exists and is %s: shut it down first; force never replaces a "
                                   "running domain" % (name, state))
            if not self.request.force:
                raise InvalidInput("domain '%s' already exists: set force: true to replace it (it must be shut off), "
                                   "or undefine it first" % name)
            self.existing = existing
        for dom in self.conn.listAllDomains(0):
            if dom.name() == name:
                continue
            try:
                other_root = parse_xml(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
            except libvirt.libvirtError:
                continue
            for disk in domain_disks(other_root):
                if disk['path']:
                    self.others[disk['path']] = dom.name()
            nvram = other_root.find('os/nvram')
            if nvram is not None and nvram.text:
                self.others[nvram.text.strip()] = dom.name()

    def _check_files(self, manifest):
        needs = {}
        for entry in manifest.files:
            if entry.role not in FILE_ROLES:
                continue
            final = self.dest[entry.name]
            if final in self.others:
                raise InvalidInput("%s belongs to domain '%s': restore with disk_dir to put the disks elsewhere"
                                   % (final, self.others[final]))
            if entry.name in self.devices:
                self._check_device(entry, final)
                continue
            if os.path.lexists(final):
                if not stat.S_ISREG(os.lstat(final).st_mode):
                    raise InvalidInput('%s exists and is not a regular file: move it away first' % final)
                if not self.request.force:
                    raise InvalidInput('%s already exists: set force: true to replace it, restore with disk_dir, '
                                       'or move it away first' % final)
            parent = os.path.dirname(final)
            if entry.role in DISK_ROLES and not os.path.isdir(parent):
                raise InvalidInput('directory %s for %s does not exist: create it, or restore with disk_dir'
                                   % (parent, entry.name))
            anchor = existing_parent(parent)
            needs.setdefault(os.stat(anchor).st_dev, [anchor, 0])[1] += sum(length for _off, length in entry.regions)
        for anchor, data in needs.values():
            free = free_bytes(anchor)
            if free < data:
                raise OperationFailed('not enough space in %s to restore: needs %s, %s free: free space or restore '
                                      'with disk_dir elsewhere' % (anchor, human_size(data), human_size(free)))

    def _make_parent_dirs(self, manifest):
        specs = {d.path: d for d in manifest.tpm_dirs}
        for entry in manifest.files:
            if entry.role not in ('nvram', 'tpm'):
                continue
            for directory in missing_dirs(os.path.dirname(self.dest[entry.name])):
                if entry.role == 'tpm' and not directory.startswith(SWTPM_DIR):
                    raise BackupDamaged('its TPM state would create %s' % directory)
                spec = specs.get(directory) or DirectoryEntry(path=directory)
                os.mkdir(directory, spec.applied_mode())
                os.chmod(directory, spec.applied_mode())
                if os.geteuid() == 0 and spec.owner():
                    os.chown(directory, *spec.owner())
                self.created_dirs.append(directory)

    def discard(self):
        for staged in self.staged.values():
            staged.discard()
        for directory in reversed(self.created_dirs):
            try:
                os.rmdir(directory)
            except OSError:
                pass


def free_path(directory, base, used):
    """``directory/base``, or ``directory/N-base`` for the first N that no other restored file takes."""
    target = os.path.join(directory, base)
    counter = 1
    while target in used:
        target = os.path.join(directory, '%d-%s' % (counter, base))
        counter += 1
    return target


def what_is_written(manifest, dest, digests):
    """What a restore writes, as the backup holds it: enough for the restore role to place the files itself.

    Each file with its destination, mode and owner; the TPM state directories (only the
    domain's own, normalised); the members holding the definition and each snapshot.
    """
    tpm_state = os.path.join(SWTPM_DIR, manifest.uuid)
    by_snapshot = {e.snapshot: e.name for e in manifest.files if e.role == 'snapshot'}
    return dict(
        files=[dict(name=e.name, role=e.role, path=dest.get(e.name), size=e.size, sha256=digests[e.name],
                    source=e.source or 'file', **e.mode_owner())
               for e in manifest.files if e.role in FILE_ROLES],
        directories=[dict(path=d.path, **d.mode_owner()) for d in manifest.tpm_dirs
                     if os.path.normpath(d.path) == d.path and (d.path + '/').startswith(tpm_state + '/')],
        definition_file=next(e.name for e in manifest.files if e.role == 'domain'),
        snapshot_files=[dict(name=by_snapshot[snap], snapshot=snap, current=snap == manifest.current)
                        for snap in manifest.order],
        autostart=bool(manifest.domain.get('autostart')),
    )


class _DeviceHandler:
    """The second pass of a restore onto block devices: only the devices' members are written."""

    def __init__(self, restorer):
        self.restorer = restorer
        self.writers = {}

    def prepare(self, manifest, _small):
        if manifest.to_bytes() != self.restorer.manifest.to_bytes():
            raise BackupDamaged('it changed since it was verified')
        self.writers = self.restorer.device_writers()
        return self.writers

    def close(self):
        for writer in self.writers.values():
            writer.close()


def write_devices(src, restorer):
    """Write the block devices, once the first pass verified every byte and staged every file.

    A device cannot be staged beside itself and set aside like a file, so the backup is read
    a second time, now writing the devices' members onto them (checked again as they go).
    """
    handler = _DeviceHandler(restorer)
    try:
        Reading(src, handler, phase='writing the block devices').run()
    except OSError as exc:
        raise OperationFailed('writing the block device(s) %s failed: %s: they hold part of the backup; fix that '
                              'and restore again (nothing else was changed)'
                              % (', '.join(sorted(restorer.devices.values())), exc.strerror or exc)) from None
    except BackupDamaged as exc:
        raise OperationFailed('the backup could not be read again to write the block device(s) %s: %s; they may '
                              'hold part of it (nothing else was changed)'
                              % (', '.join(sorted(restorer.devices.values())),
                                 str(exc).replace(': use another backup (nothing was changed)', ''))) from None
    finally:
        handler.close()


LEFTOVER_WARNING = ("found %d file(s) that an interrupted restore set aside and never put back: %s: they hold what "
                    "it replaced (disk images; the .xml is the domain definition it undefined, 'virsh define' takes "
                    "it; the .snapshot-NNN-*.xml are its snapshots, parents first, for 'virsh snapshot-create "
                    "--redefine', --current for the one marked -current): keep what you need, then delete them")


def restore_backup(request, check_mode=False):
    """vm_backup state=restored for a ReadRequest: verify all, stage all, then swap in and define."""
    started = time.monotonic()
    with Connection(request.uri) as conn:
        restorer = Restorer(conn, request, check_mode)
        src = backup_source(request)
        reading = Reading(src, restorer, phase='verifying' if check_mode else 'restoring')
        try:
            reading.run()
        except BaseException:
            restorer.discard()
            raise
        summary = reading.summary()
        restored = dict(src=request.src, id=summary.get('id'), domain=summary['domain'], uuid=summary['uuid'],
                        backup_created=summary['created'], **what_is_written(reading.manifest, restorer.dest, reading.checksums),
                        snapshots=summary['snapshots'], current_snapshot=summary['current_snapshot'],
                        replaced=restorer.existing is not None, disk_dir=request.disk_dir, started=False,
                        data_size=reading.data_size)
        result = dict(changed=True)
        names = {restorer.manifest.domain_name} | ({restorer.existing.name()} if restorer.existing else set())
        leftovers = set_aside_leftovers(restorer.dest.values(), names)
        if leftovers:
            restored['set_aside'] = leftovers
            result['warnings'] = [LEFTOVER_WARNING % (len(leftovers), ', '.join(leftovers))]
        if check_mode:
            restored.update(duration=round(time.monotonic() - started, 3))
            result.update(restored=restored)
            return result
        try:
            if restorer.devices:
                write_devices(src, restorer)
            progress().phase('putting the restored files in place')
            dom = Swap(conn, restorer).run()
        except BaseException:
            restorer.discard()
            raise
        if request.start:
            try:
                dom.create()
            except libvirt.libvirtError as exc:
                restored.update(duration=round(time.monotonic() - started, 3))
                raise OperationFailed("domain '%s' was restored, but starting it failed: %s: fix that and start it "
                                      "('virsh start %s')" % (summary['domain'], translate(exc), summary['domain']),
                                      changed=True, restored=restored) from None
            restored['started'] = True
        duration = time.monotonic() - started
        restored.update(duration=round(duration, 3), throughput=rate(reading.data_size, duration))
        result.update(restored=restored)
        return result
