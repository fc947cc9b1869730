# -*- coding: utf-8 -*-
# Copyright: (c) 2026, kvm.snapshots contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""Where a new backup goes, a dest directory or a restic repository: each checks, names, writes and retains."""

from __future__ import annotations

import os
import tempfile

from ansible_collections.kvm.snapshots.plugins.module_utils._libvirt import InvalidInput, OperationFailed

from .catalog import domain_backups, remove_backup
from .errors import human_size, os_error_text
from .files import existing_parent, free_bytes, make_dirs, remove_stale
from .names import SUMS_SUFFIX, backup_name, free_name, partial_pattern
from .repository import Repository, check_taggable
from .write import Partial


class DestPlace:
    """A directory of backup files; ``keep`` removes the domain's oldest."""

    def __init__(self, request):
        self.request = request
        self.dest = request.dest

    def check(self, _check_mode):
        check_writable(self.dest)
        return {}

    def plan(self, contents, when):
        """Check mode: the new backup's path and size bound, and the backups ``keep`` would remove."""
        request, dest = self.request, self.dest
        needed = check_space(contents, dest)
        if os.path.isdir(dest):
            name, when = free_name(dest, contents.name, contents.uuid, when, request.suffix)
            existing = domain_backups(dest, contents.uuid)
        else:
            name, existing = backup_name(contents.name, when, contents.uuid), []
        removed = [path for _n, path in (existing + [(name + request.suffix, None)])[:-request.keep]] if request.keep else []
        path = os.path.join(dest, name + request.suffix)
        return name, when, dict(path=path, checksum_file=path + SUMS_SUFFIX, size=None, estimated_size=needed), removed

    def prepare(self, contents, when):
        """Only now, after every refusal, is dest touched: a refused backup changes nothing. The new name."""
        dest = self.dest
        check_space(contents, dest)
        make_dirs(dest)
        probe_writable(dest)
        remove_stale(dest, partial_pattern(contents.name, contents.uuid))
        remove_stale(dest, partial_pattern(contents.name))
        return free_name(dest, contents.name, contents.uuid, when, self.request.suffix)

    def target(self, name, _contents):
        return Partial(self.dest, name, self.request)

    def retain(self, contents):
        removed = []
        if self.request.keep:
            for _entry, path in domain_backups(self.dest, contents.uuid)[:-self.request.keep]:
                remove_backup(path)
                removed.append(path)
        return removed


class RepositoryPlace:
    """A restic repository; ``keep`` and ``keep_daily``... are a restic forget policy for the domain, then a prune."""

    def __init__(self, request):
        self.request = request
        self.repository = Repository(request.repository)

    def check(self, check_mode):
        created = self.repository.ensure(self.request.repository.init, check_mode)
        return dict(repository_created=True) if created else {}

    def plan(self, contents, when):
        name = backup_name(contents.name, when, contents.uuid)
        check_taggable(contents.name)
        return name, when, dict(path=None, id=None, repository=self.repository.location, size=None), self._plan_removal(contents)

    def _plan_removal(self, contents):
        """The backups the policy would remove, the new one counted among those ``keep`` keeps.

        keep_daily, keep_weekly and keep_monthly are judged on the backups there now.
        """
        if not self.request.retention or not self.repository.exists():
            return []
        policy = [(option, count - 1 if option == 'keep-last' else count) for option, count in self.request.retention]
        policy = [(option, count) for option, count in policy if count > 0]
        if not policy:   # keep: 1 alone: the new backup is the one kept
            return [snap['id'] for snap in self.repository.snapshots(contents.uuid)]
        return self.repository.forget(contents.uuid, policy, check_mode=True)

    def prepare(self, contents, when):
        return backup_name(contents.name, when, contents.uuid), when

    def target(self, name, contents):
        return self.repository.upload(name, contents.name, contents.uuid, len(contents.order))

    def retain(self, contents):
        if not self.request.retention:
            return []
        return self.repository.forget(contents.uuid, self.request.retention, check_mode=False)


def backup_place(request):
    return RepositoryPlace(request) if request.repository else DestPlace(request)


def check_writable(dest):
    """Refuse a ``dest`` (or, when missing, its nearest existing parent) this run cannot write into.

    Checked before free space (a read-only file system may report 0 bytes free) and
    before the domain is paused or shut down; in check mode too.
    """
    anchor = existing_parent(dest)
    where = dest if anchor == dest else '%s (its nearest existing parent is %s)' % (dest, anchor)
    if os.statvfs(anchor).f_flag & os.ST_RDONLY:
        raise InvalidInput('cannot write a backup into %s: Read-only file system: remount it read-write, or choose '
                           'another dest (nothing was paused or written)' % where)
    if not os.access(anchor, os.W_OK | os.X_OK):
        raise InvalidInput('cannot write a backup into %s: Permission denied for uid %d: run as root (become: true), '
                           'fix its permissions, or choose another dest (nothing was paused or written)'
                           % (where, os.geteuid()))


def probe_writable(dest):
    """Create and remove one file in ``dest``: what an ACL, an immutable flag or a quota would refuse."""
    try:
        fd, path = tempfile.mkstemp(prefix='.kvmsnap-probe-', dir=dest)
    except OSError as exc:
        # dest (and missing parents) may have been created just before: only that was done.
        raise OperationFailed(os_error_text(exc, 'creating a file', dest=dest, way_out='choose another dest')
                              + ' (nothing was paused and no backup was written)') from None
    os.close(fd)
    os.unlink(path)


def check_space(contents, dest):
    """The most the backup can take; refused when ``dest`` has not that much free."""
    needed = contents.space_needed() + (1 << 20)
    free_at = existing_parent(dest)
    free = free_bytes(free_at)
    if free < needed:
        raise OperationFailed('not enough space in %s for the backup of %s: needs up to %s (allocated size '
                              'of its files), %s free: free space or choose another dest'
                              % (free_at, contents.name, human_size(needed), human_size(free)))
    return needed
