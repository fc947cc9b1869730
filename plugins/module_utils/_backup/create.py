# -*- coding: utf-8 -*-
# Copyright: (c) 2026, kvm.snapshots contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""vm_backup state=present: refuse early, hold the domain, write the backup, apply retention."""

from __future__ import annotations

import os
import tempfile
import time

from ansible_collections.kvm.snapshots.plugins.module_utils._domain_xml import backup_overlays
from ansible_collections.kvm.snapshots.plugins.module_utils._libvirt import (
    Connection,
    InvalidInput,
    KvmError,
    OperationFailed,
    domain_state,
    lookup_domain,
    note_undone,
)


from .catalog import domain_backups, remove_backup
from .contents import discover
from .errors import human_size, os_error_text
from .files import existing_parent, free_bytes, make_dirs, remove_stale
from .hold import DomainHold, running_action
from .live import LiveOverlay, merge_leftovers
from .locks import DomainLock
from .names import backup_name, free_name, partial_pattern, utcnow_ms
from .pause import pause_point
from .progress import current as progress
from .verify import rate
from .write import write_backup


def make_backup(request, check_mode=False):
    """vm_backup state=present for a BackupRequest."""
    started = time.monotonic()
    with Connection(request.uri) as conn:
        dom = lookup_domain(conn, request.domain)
        check_writable(request.dest)
        if check_mode:
            return plan_backup(conn, dom, request)
        # Everything from the domain's state on is read under the lock: a run that waited sees
        # the domain as the previous backup left it.
        with DomainLock(dom.UUIDString()) as lock:
            result = make_backup_locked(conn, dom, request)
        backup = result['backup']
        if lock.waited:
            backup['waited'] = lock.waited
        backup['duration'] = round(time.monotonic() - started, 3)
        backup['throughput'] = rate(backup['data_size'], backup['duration'])
        return result


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


def started_result(contents):
    return dict(changed=True, warnings=contents.warnings) if contents.warnings else dict(changed=True)


def domain_hold(request, dom, action):
    """What keeps the copy consistent: overlays on a running domain, else a pause or a shutdown (or nothing)."""
    if action == 'live':
        return LiveOverlay(request.uri, dom, request.quiesce)
    return DomainHold(dom, action, request.shutdown_timeout)


def plan_backup(conn, dom, request):
    """Check mode: the backup the real run would write, and what ``keep`` would remove."""
    state = domain_state(dom)
    action = running_action(dom, state, request.if_running)
    hold = domain_hold(request, dom, action)
    if action == 'live':
        hold.check()
    contents = discover(conn, dom)
    contents.warnings += ["domain '%s' has the live backup overlay %s on disk %s, left by a backup that did not "
                          "finish: the backup would merge it back first" % (contents.name, overlay, target)
                          for target, overlay in backup_overlays(dom)]
    needed = check_space(contents, request.dest)
    when = utcnow_ms()
    if os.path.isdir(request.dest):
        name, when = free_name(request.dest, contents.name, contents.uuid, when, request.suffix)
        existing = domain_backups(request.dest, contents.uuid)
    else:
        name, existing = backup_name(contents.name, when, contents.uuid), []
    removed = [path for _n, path in (existing + [(name + request.suffix, None)])[:-request.keep]] if request.keep else []
    manifest = contents.manifest(name, when, state, request.options())
    result = started_result(contents)
    result.update(backup=dict(
        path=os.path.join(request.dest, name + request.suffix), name=name, format=request.format,
        compression=request.compression, domain=contents.name, uuid=contents.uuid, action=action, mode=hold.mode,
        files=[dict(name=e.name, role=e.role, path=e.path, size=e.size) for e in manifest.files],
        snapshots=contents.order, current_snapshot=contents.current, size=None,
        estimated_size=needed), removed=removed)
    return result


# The progress phases around the copy, by what is done about a running domain.
HOLD_PHASES = dict(live=('taking the overlay', 'merging the overlay back'),
                   shutdown=('shutting the domain down', 'starting the domain again'),
                   suspend=('pausing the domain', 'resuming the domain'))


def make_backup_locked(conn, dom, request):
    dest = request.dest
    state = domain_state(dom)
    action = running_action(dom, state, request.if_running)
    hold = domain_hold(request, dom, action)
    merged = merge_leftovers(LiveOverlay(request.uri, dom, False))
    if action == 'live':
        hold.check()
    contents = discover(conn, dom)
    check_space(contents, dest)
    # Only now, after every refusal, is dest touched: a refused backup changes nothing.
    make_dirs(dest)
    probe_writable(dest)
    remove_stale(dest, partial_pattern(contents.name, contents.uuid))
    remove_stale(dest, partial_pattern(contents.name))
    name, when = free_name(dest, contents.name, contents.uuid, utcnow_ms(), request.suffix)
    taking, giving_back = HOLD_PHASES.get(action, (None, None))
    try:
        if taking:
            progress().phase(taking)
        hold.take()
        # Again, now that the disks are still: the definition is the one from before the hold.
        contents = discover(conn, hold.dom, xml=contents.xml)
        pause_point('backup-held')
        backup = write_backup(contents, dest, name, when, state, request)
        # Inside the try: a signal before or during the give-back still brings the domain back.
        if giving_back:
            progress().phase(giving_back)
        _done, restart_error = hold.give_back()
    except BaseException as exc:
        done, restart_error = hold.give_back()
        if done:
            note_undone(exc, done)
        if restart_error:
            note_undone(exc, restart_error)
            if isinstance(exc, KvmError):
                raise OperationFailed('%s; and %s' % (exc, restart_error)) from None
        raise
    backup.update(action=action, mode=hold.mode, held_seconds=round(hold.held, 3), overlay_seconds=hold.seconds())
    result = started_result(contents)
    if merged:
        result['warnings'] = merged + result.get('warnings', [])
    removed = []
    if request.keep:
        progress().phase('removing older backups')
        for _entry, path in domain_backups(dest, contents.uuid)[:-request.keep]:
            remove_backup(path)
            removed.append(path)
    result.update(backup=backup, removed=removed)
    if restart_error:
        raise OperationFailed('backup written to %s, but %s' % (backup['path'], restart_error), **result)
    return result
