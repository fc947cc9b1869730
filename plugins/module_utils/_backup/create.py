# -*- coding: utf-8 -*-
# Copyright: (c) 2026, kvm.snapshots contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""vm_backup state=present: refuse early, hold the domain, write the backup to its place, apply retention."""

from __future__ import annotations

import time

from ansible_collections.kvm.snapshots.plugins.module_utils._domain_xml import backup_overlays
from ansible_collections.kvm.snapshots.plugins.module_utils._libvirt import (
    Connection,
    KvmError,
    OperationFailed,
    domain_state,
    lookup_domain,
    note_undone,
)


from .contents import discover
from .hold import DomainHold, running_action
from .live import LiveOverlay, merge_leftovers
from .locks import DomainLock
from .names import utcnow_ms
from .pause import pause_point
from .places import backup_place
from .progress import current as progress
from .verify import rate
from .write import write_backup


def make_backup(request, check_mode=False):
    """vm_backup state=present for a BackupRequest."""
    started = time.monotonic()
    with Connection(request.uri) as conn:
        dom = lookup_domain(conn, request.domain)
        place = backup_place(request)
        made = place.check(check_mode)
        if check_mode:
            return dict(plan_backup(conn, dom, request, place), **made)
        # Everything from the domain's state on is read under the lock: a run that waited sees
        # the domain as the previous backup left it.
        with DomainLock(dom.UUIDString()) as lock:
            result = dict(make_backup_locked(conn, dom, request, place), **made)
        backup = result['backup']
        if lock.waited:
            backup['waited'] = lock.waited
        backup['duration'] = round(time.monotonic() - started, 3)
        backup['throughput'] = rate(backup['data_size'], backup['duration'])
        return result


def started_result(contents):
    return dict(changed=True, warnings=contents.warnings) if contents.warnings else dict(changed=True)


def domain_hold(request, dom, action):
    """What keeps the copy consistent: overlays on a running domain, else a pause or a shutdown (or nothing)."""
    if action == 'live':
        return LiveOverlay(request.uri, dom, request.quiesce)
    return DomainHold(dom, action, request.shutdown_timeout)


def plan_backup(conn, dom, request, place):
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
    name, when, where, removed = place.plan(contents, utcnow_ms())
    manifest = contents.manifest(name, when, state, request.options())
    result = started_result(contents)
    result.update(backup=dict(
        where, name=name, format=request.format,
        compression=request.compression, domain=contents.name, uuid=contents.uuid, action=action, mode=hold.mode,
        files=[dict(name=e.name, role=e.role, path=e.path, size=e.size) for e in manifest.files],
        snapshots=contents.order, current_snapshot=contents.current), removed=removed)
    return result


# The progress phases around the copy, by what is done about a running domain.
HOLD_PHASES = dict(live=('taking the overlay', 'merging the overlay back'),
                   shutdown=('shutting the domain down', 'starting the domain again'),
                   suspend=('pausing the domain', 'resuming the domain'))


def make_backup_locked(conn, dom, request, place):
    state = domain_state(dom)
    action = running_action(dom, state, request.if_running)
    hold = domain_hold(request, dom, action)
    merged = merge_leftovers(LiveOverlay(request.uri, dom, False))
    if action == 'live':
        hold.check()
    contents = discover(conn, dom)
    name, when = place.prepare(contents, utcnow_ms())
    taking, giving_back = HOLD_PHASES.get(action, (None, None))
    try:
        if taking:
            progress().phase(taking)
        hold.take()
        # Again, now that the disks are still: the definition is the one from before the hold.
        contents = discover(conn, hold.dom, xml=contents.xml)
        pause_point('backup-held')
        backup = write_backup(contents, place.target(name, contents), when, state, request)
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
    if request.keep or request.retention:
        progress().phase('removing older backups')
    removed = place.retain(contents)
    result.update(backup=backup, removed=removed)
    if restart_error:
        raise OperationFailed('backup written to %s, but %s' % (backup['path'] or backup['repository'], restart_error),
                              **result)
    return result
