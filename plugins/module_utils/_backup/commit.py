# -*- coding: utf-8 -*-
# Copyright: (c) 2026, kvm.snapshots contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""The restore's commit: staged files swapped into place and the domain defined, all rolled back on any failure."""

from __future__ import annotations

import os
import secrets

from ansible_collections.kvm.snapshots.plugins.module_utils._libvirt import (
    InvalidInput,
    OperationFailed,
    domain_state,
    libvirt,
    note_undone,
    translate,
)
from ansible_collections.kvm.snapshots.plugins.module_utils._qemu_img import rebase_unsafe
from ansible_collections.kvm.snapshots.plugins.module_utils._snapshot import SnapshotTree, redefine_snapshot

from .disks import create_volume, delete_volume, refresh_pool
from .files import SparseWriter, create_file, fsync_dir, hidden_beside, try_lock, unlink_quietly, write_file
from .names import safe_label
from .pause import pause_point

RESTORING = '.kvmsnap-restore-'     # a staged file: .<file>.kvmsnap-restore-<hex>
REPLACED = '.kvmsnap-replaced-'     # what a restore set aside: .<file>.kvmsnap-replaced-<hex>
UNDEFINE_FLAGS = ('VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA', 'VIR_DOMAIN_UNDEFINE_CHECKPOINTS_METADATA',
                  'VIR_DOMAIN_UNDEFINE_KEEP_NVRAM', 'VIR_DOMAIN_UNDEFINE_KEEP_TPM', 'VIR_DOMAIN_UNDEFINE_MANAGED_SAVE')


def undefine_flags():
    flags = 0
    for name in UNDEFINE_FLAGS:
        flags |= getattr(libvirt, name, 0)
    return flags


def set_aside_leftovers(paths, domain_names=()):
    """Files an interrupted restore set aside beside ``paths``: ``[path]``.

    Those of ``paths`` themselves (previous disks) and of the domains ``domain_names``
    (definition, snapshots); other domains' leftovers in the same directories are theirs.
    They hold the data a restore replaced; nothing ever deletes them but the restore that
    made them, so a killed one leaves them for the user, and the next restore names them.
    """
    bases = {os.path.basename(p) for p in paths} | {'%s.xml' % safe_label(n) for n in domain_names}
    snapshots = tuple('.%s.snapshot-' % safe_label(n) for n in domain_names)
    found = set()
    for directory in sorted({os.path.dirname(p) for p in paths}):
        try:
            names = os.listdir(directory)
        except OSError:
            continue
        found.update(os.path.join(directory, n) for n in names if n.startswith('.') and REPLACED in n
                     and (n.split(REPLACED)[0][1:] in bases or n.startswith(snapshots)))
    return sorted(found)


class StagedFile:
    """A restored file written under a temporary name beside its destination."""

    def __init__(self, final, entry):
        self.final = final
        self.entry = entry
        self.path = hidden_beside(final, RESTORING)
        self.fd = create_file(self.path)
        try_lock(self.fd)
        self.writer = SparseWriter(self.fd)

    def write(self, offset, buf, count):
        self.writer.write(offset, buf, count)

    def finish(self):
        os.ftruncate(self.fd, self.entry.size)
        owner = self.entry.owner()
        if os.geteuid() == 0 and owner:
            os.fchown(self.fd, *owner)
        os.fchmod(self.fd, self.entry.applied_mode())
        os.fsync(self.fd)

    def close(self):
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def discard(self):
        self.close()
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass


class Swap:
    """Puts a verified, staged restore into place: the only step that changes what libvirt and the disks hold."""

    def __init__(self, conn, restorer):
        self.conn = conn
        self.plan = restorer
        self.existing = restorer.existing
        self.old_xml = self.old_snaps = None
        self.moved = []      # (final, aside)
        self.placed = []
        self.saved = []      # the old definition, then its snapshots'
        self.undefined = False
        self.defined = None
        self.volumes = []    # the pool volumes created for the restore

    def run(self):
        """Commit; the defined domain. On any failure everything is put back, or what could not be is named."""
        plan = self.plan
        for member, backing, fmt in plan.rebase:
            staged = plan.staged[member]
            staged.close()
            rebase_unsafe(staged.path, backing, fmt, shown=staged.final)
        if self.existing is not None:
            self.old_xml = self.existing.XMLDesc(libvirt.VIR_DOMAIN_XML_SECURE | libvirt.VIR_DOMAIN_XML_INACTIVE)
            old_tree = SnapshotTree.from_domain(self.existing, secure=True)
            self.old_snaps = [(n, old_tree.by_name[n].xml, old_tree.by_name[n].is_current)
                              for n in old_tree.topological()]
        try:
            self._swap()
        except BaseException as exc:
            self._fail(exc)
            raise
        for _final, aside in self.moved:
            unlink_quietly(aside)
        for path in self.saved:
            unlink_quietly(path)
        for pool in getattr(self.plan, 'pools', ()):
            refresh_pool(pool)      # after the set-aside files are gone: a dir pool lists hidden files too
        return self.defined

    def _swap(self):
        plan = self.plan
        if self.existing is not None:
            if domain_state(self.existing) != 'shutoff':
                raise InvalidInput("domain '%s' was started meanwhile: shut it down and run again"
                                   % self.existing.name())
            # Should this process die from here on, the definition it undefines stays on disk
            # beside the disks it sets aside, and the next restore names them all.
            self.saved = self._save_old_xml()
            self.existing.undefineFlags(undefine_flags())
            self.undefined = True
        for pool, spec, path in getattr(plan, 'new_volumes', ()):
            # through the storage API, so that libvirt knows it; the staged file then takes its place
            self.volumes.append(create_volume(pool, spec, path))
        for staged in plan.staged.values():
            staged.close()
            if os.path.lexists(staged.final):
                aside = hidden_beside(staged.final, REPLACED)
                os.rename(staged.final, aside)
                self.moved.append((staged.final, aside))
                pause_point('restore-commit')
            os.rename(staged.path, staged.final)
            self.placed.append(staged.final)
        for directory in {os.path.dirname(p) for p in self.placed}:
            fsync_dir(directory)
        self.defined = self.conn.defineXML(plan.domain_xml)
        for snap, xml in plan.snapshot_xml:
            redefine_snapshot(self.defined, xml, snap == plan.manifest.current)
        if plan.manifest.domain.get('autostart'):
            self.defined.setAutostart(1)

    def _fail(self, exc):
        """Roll back after ``exc``; turn it into the one error the user sees (raised, or left to re-raise)."""
        left = self._roll_back()
        if None not in left:
            for path in self.saved:
                unlink_quietly(path)
        if left:
            # Not all is back: keep what could not be put back, and say where it is.
            text = 'the restore was only partly rolled back: ' + '; '.join(
                self._left_text(entry) for entry in left)
            note_undone(exc, text)
            if isinstance(exc, (libvirt.libvirtError, OSError)):
                cause = translate(exc) if isinstance(exc, libvirt.libvirtError) else exc
                raise OperationFailed('restore failed (%s), and %s' % (cause, text)) from None
            return
        if self.existing is not None:
            note_undone(exc, "the restore was rolled back: domain '%s' and its files are as they were"
                        % self.existing.name())
        else:
            note_undone(exc, 'the restore was rolled back: its files were removed')
        if isinstance(exc, libvirt.libvirtError):
            raise OperationFailed('restore failed and was rolled back (the previous domain and files, if any, are '
                                  'back): %s' % translate(exc)) from None
        if isinstance(exc, OSError):
            raise OperationFailed('restore failed and was rolled back (the previous domain and files, if any, are '
                                  'back): %s' % exc) from None

    def _left_text(self, entry):
        if entry is not None:
            return '%s could not be renamed back to %s: rename it by hand' % entry
        if not self.saved:
            return "domain '%s' could not be defined again" % self.existing.name()
        return ("domain '%s' could not be defined again: its old definition and snapshots are kept in %s "
                "('virsh define' the first, then 'virsh snapshot-create --redefine' the others in order, "
                "--current for the one marked current)" % (self.existing.name(), ', '.join(self.saved)))

    def _save_old_xml(self):
        """Write the definition about to be undefined, and its snapshots' (numbered parents first, the
        current one marked), beside the disks: the paths, domain first."""
        first = next(iter(self.plan.staged.values()), None)
        if first is None:
            return []
        directory = os.path.dirname(first.final)
        label = safe_label(self.existing.name())
        token = secrets.token_hex(4)
        files = [('.%s.xml%s%s' % (label, REPLACED, token), self.old_xml)]
        for index, (name, xml, is_current) in enumerate(self.old_snaps, 1):
            mark = '-current' if is_current else ''
            files.append(('.%s.snapshot-%03d-%s%s.xml%s%s' % (label, index, safe_label(name), mark, REPLACED, token),
                          xml))
        paths = []
        try:
            for base, text in files:
                paths.append(os.path.join(directory, base))
                write_file(paths[-1], text.encode())
            fsync_dir(directory)
        except BaseException:
            for path in paths:
                unlink_quietly(path)    # nothing was undefined yet: a partial copy is of no use
            raise
        return paths

    def _roll_back(self):
        """Undo a failed commit: what it could not undo, ``None`` first for the old definition, then ``(aside, final)``."""
        left = []
        try:
            if self.defined is not None:
                self.defined.undefineFlags(undefine_flags())
        except libvirt.libvirtError:
            pass
        for path in self.placed:
            unlink_quietly(path)
        for final, aside in self.moved:
            try:
                os.rename(aside, final)
            except OSError:
                left.append((aside, final))
        for staged in self.plan.staged.values():
            staged.discard()
        for vol in self.volumes:
            delete_volume(vol)
        for pool in getattr(self.plan, 'pools', ()):
            refresh_pool(pool)
        if self.undefined:
            try:
                old = self.conn.defineXML(self.old_xml)
                for _name, xml, is_current in self.old_snaps:
                    redefine_snapshot(old, xml, is_current)
            except libvirt.libvirtError:
                left.insert(0, None)
        return left
