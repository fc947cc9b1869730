# -*- coding: utf-8 -*-
# Copyright: (c) 2026, kvm.snapshots contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""The backup's own errors, and the text of its messages: an ``OSError`` in one line, sizes for people."""

from __future__ import annotations

import errno

from ansible_collections.kvm.snapshots.plugins.module_utils._libvirt import KvmError


class BackupDamaged(KvmError):
    """The backup is damaged, unsafe or not one of ours; nothing was touched."""


class UnsafeMember(BackupDamaged):
    """An archive member whose path would land outside the backup."""


def human_size(num):
    for unit in ('B', 'KiB', 'MiB', 'GiB', 'TiB'):
        if abs(num) < 1024 or unit == 'TiB':
            return ('%d %s' % (num, unit)) if unit == 'B' else ('%.1f %s' % (num, unit))
        num /= 1024.0
    return str(num)


def no_space(exc):
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)


def os_error_text(exc, doing, dest=None, way_out='choose another place'):
    """One line for an ``OSError``, naming where (``dest``, else the file) and the way out."""
    where = ' in %s' % dest if dest else (' (%s)' % exc.filename if exc.filename else '')
    if no_space(exc):
        return 'no space left%s while %s: free space, or %s, and run again' % (where, doing, way_out)
    if isinstance(exc, PermissionError):
        return 'permission denied%s while %s: run as root (become: true), or %s' % (where, doing, way_out)
    if exc.errno == errno.EROFS:
        return 'Read-only file system%s while %s: %s, or remount it read-write' % (where, doing, way_out)
    return '%s%s while %s: %s' % (exc.strerror or exc, where, doing, way_out)
