# -*- coding: utf-8 -*-
# Copyright: (c) 2026, kvm.snapshots contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Test hook for vm_backup's concurrency test: the first backup holds the lock until the others wait.

Python imports this file at start-up when its directory is on PYTHONPATH. It does
nothing unless KVMSNAP_LOCK_GATE names a directory. Then a blocking
``fcntl.flock(LOCK_EX)`` on a backup lock file writes ``blocked-<pid>`` there just
before it blocks, and the first ``virDomain.suspend`` of a process that never blocked
(the lock's first holder) waits until KVMSNAP_LOCK_COUNT (default 2) processes have
written theirs (at most 60 s), then writes ``held-<pid>``: JSON with the times of
arrival and release and ``timed_out``.

So the three runs certainly overlap: the later two wait on the lock while the first
holds it, whatever the host's load; the records show it.
"""

from __future__ import annotations

import fcntl
import json
import os
import time

GATE = os.environ.get('KVMSNAP_LOCK_GATE')


def _record(name, data):
    path = os.path.join(GATE, '%s-%d' % (name, os.getpid()))
    with open(path + '.tmp', 'w') as handle:
        json.dump(data, handle)
    os.rename(path + '.tmp', path)


def _install():
    import libvirt  # pylint: disable=import-outside-toplevel

    real_flock = fcntl.flock
    real_suspend = libvirt.virDomain.suspend
    count = int(os.environ.get('KVMSNAP_LOCK_COUNT', '2'))
    state = dict(blocked=False, gated=False)

    def flock(fd, operation):
        if operation == fcntl.LOCK_EX:
            try:
                target = os.readlink('/proc/self/fd/%d' % (fd if isinstance(fd, int) else fd.fileno()))
            except OSError:
                target = ''
            if 'kvm.snapshots-backup-' in os.path.basename(target):
                state['blocked'] = True
                _record('blocked', dict(blocked=time.time()))
        return real_flock(fd, operation)

    def suspend(self):
        if not state['blocked'] and not state['gated']:
            state['gated'] = True
            arrived = time.time()
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                if len([n for n in os.listdir(GATE) if n.startswith('blocked-') and not n.endswith('.tmp')]) >= count:
                    break
                time.sleep(0.005)
            _record('held', dict(arrived=arrived, released=time.time(), timed_out=time.monotonic() >= deadline))
        return real_suspend(self)

    fcntl.flock = flock
    libvirt.virDomain.suspend = suspend


if GATE:
    try:
        _install()
    except ImportError:
        pass  # not a process that talks to libvirt
