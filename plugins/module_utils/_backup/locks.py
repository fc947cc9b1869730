# -*- coding: utf-8 -*-
# Copyright: (c) 2026, kvm.snapshots contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""One backup of a domain at a time on this host: a per-UUID lock in a private directory."""

from __future__ import annotations

import fcntl
import os
import stat
import tempfile
import time

from ansible_collections.kvm.snapshots.plugins.module_utils._libvirt import InvalidInput

from .files import try_lock

LOCK_DIR = '/run/kvm.snapshots'    # root's; other users get a private one in the temp directory


def lock_dir():
    """The directory of the backup locks, made 0700 if missing; refused when another user could write in it."""
    if os.access(os.path.dirname(LOCK_DIR), os.W_OK):
        directory = LOCK_DIR
    else:
        directory = os.path.join(tempfile.gettempdir(), 'kvm.snapshots-%d' % os.geteuid())
    try:
        os.mkdir(directory, 0o700)
    except FileExistsError:
        pass
    info = os.lstat(directory)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid() or info.st_mode & 0o022:
        raise InvalidInput('the lock directory %s is not a directory owned by uid %d and writable by it alone '
                           '(another user may have made it to block backups): remove it, then run again '
                           '(nothing was paused or written)' % (directory, os.geteuid()))
    return directory


class DomainLock:
    """One backup of a domain at a time on this host: a later one waits for the earlier one.

    The lock is per domain UUID and host-wide rather than per ``dest``: two backups of one
    domain into two places would otherwise pause and resume the guest under each other.
    It lives in a 0700 directory of the user's own on tmpfs (not world-writable /run/lock,
    where any local user could hold it and make root's backup wait forever), so nothing
    is left in ``dest``; the kernel drops it when the process dies, even by SIGKILL. The
    holder removes the file when done; a waiter that then gets the lock of a removed file
    opens the path afresh.
    """

    def __init__(self, uuid):
        self.path = os.path.join(lock_dir(), 'kvm.snapshots-backup-%s.lock' % uuid.lower())
        self.fd = None
        self.waited = 0.0

    def __enter__(self):
        started = time.monotonic()
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
            try:
                if not try_lock(fd):
                    fcntl.flock(fd, fcntl.LOCK_EX)
                    self.waited = round(time.monotonic() - started, 3)
                try:
                    current = os.stat(self.path, follow_symlinks=False).st_ino
                except FileNotFoundError:
                    current = None
            except BaseException:
                os.close(fd)
                raise
            if current == os.fstat(fd).st_ino:
                self.fd = fd
                return self
            os.close(fd)    # the previous holder removed that file: lock the one at the path now

    def __exit__(self, *exc_info):
        try:
            os.unlink(self.path)
        except OSError:
            pass
        os.close(self.fd)
        self.fd = None
