# -*- coding: utf-8 -*-
# Copyright: (c) 2026, kvm.snapshots contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""How far a long backup, verify or restore is: a small JSON file rewritten atomically, at most once a second.

vm_backup's action plugin passes ``progress_file``, reads the file between its polls of
the asynchronous module and prints one line every ``progress_interval`` seconds. The copy
loops call ``advance(count)`` once per chunk read (1 MiB or more): an addition and a
clock read (no system call) until a second has passed, then one small file written
beside the target and renamed over it, so a reader never sees half a file.
"""

from __future__ import annotations

import contextlib
import json
import os
import time

from ansible_collections.kvm.snapshots.plugins.module_utils._libvirt import InvalidInput

from .pause import pause_point

EVERY = 1.0     # seconds between two writes of the file (a phase change writes at once)


class Progress:
    """The progress of one module run, written to ``path`` (nothing at all when ``path`` is None)."""

    def __init__(self, path=None, state=None, domain=None, every=EVERY, clock=time.monotonic):
        self.path = path
        self.clock = clock
        self.every = every
        self.info = dict(pid=os.getpid(), state=state, domain=domain, phase='starting', done=0, total=None,
                         disk=None, file=None, phase_seconds=0.0, seconds=0.0)
        self.started = self.phase_started = clock()
        self.written_at = self.started
        self.half = None    # done at which the test-only pause point 'progress-half' is passed

    def phase(self, phase, total=None, file=None, disk=None):
        """A new phase: ``total`` bytes to go through (None: unknown), ``file`` being written, written at once."""
        self.info.update(phase=phase, total=total, done=0, file=file, disk=disk)
        self.phase_started = self.clock()
        self.half = total // 2 if total else None
        self.write()

    def set(self, **fields):
        """Name what is being worked on (``disk``, ``file``, ``domain``) without starting a new phase."""
        self.info.update(fields)

    def advance(self, count):
        """``count`` more bytes done: cheap, and the file is rewritten once ``every`` seconds have passed."""
        self.info['done'] += count
        if self.path is not None and self.clock() - self.written_at >= self.every:
            self.write()
        if self.half is not None and self.info['done'] >= self.half:
            self.half = None
            self.write()
            pause_point('progress-half')

    def write(self):
        if self.path is None:
            return
        now = self.clock()
        info = self.info
        if info['total'] is not None and info['done'] > info['total']:
            info['done'] = info['total']   # digests count whole 64 KiB pieces: never more than all
        info.update(seconds=round(now - self.started, 3), phase_seconds=round(now - self.phase_started, 3))
        self.written_at = now
        temp = '%s.%d.tmp' % (self.path, os.getpid())
        try:
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
            try:
                os.write(fd, json.dumps(info, sort_keys=True).encode())
            finally:
                os.close(fd)
            os.replace(temp, self.path)
        except OSError:
            # Progress is a courtesy: a full or read-only directory must not fail the backup.
            self.path = None
            with contextlib.suppress(OSError):
                os.unlink(temp)

    def close(self):
        """The run is over: the file goes away (the module's result says the rest)."""
        if self.path is not None:
            with contextlib.suppress(OSError):
                os.unlink(self.path)
        self.path = None


_CURRENT = [Progress()]


def current():
    """The reporter of this module run (an inert one outside ``reporting``)."""
    return _CURRENT[-1]


def phase(name, total=None, file=None, disk=None):
    current().phase(name, total, file, disk)


def advance(count):
    current().advance(count)


def check_interval(value):
    if value is not None and value < 0:
        raise InvalidInput('progress_interval must be 0 (no progress lines) or a number of seconds, got %d' % value)


@contextlib.contextmanager
def reporting(path, state=None, domain=None):
    """Report this run's progress into ``path`` (None: nowhere) until the block ends, however it ends."""
    if path is not None and not os.path.isabs(path):
        raise InvalidInput('progress_file must be an absolute path, got %r' % path)
    reporter = Progress(path, state, domain)
    _CURRENT.append(reporter)
    try:
        reporter.write()
        yield reporter
    finally:
        _CURRENT.remove(reporter)
        reporter.close()
