# -*- coding: utf-8 -*-
# Copyright: (c) 2026, kvm.snapshots contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""Members of a backup: the record a reader yields for each, and the path rules every one must pass."""

from __future__ import annotations

import os

from .errors import BackupDamaged, UnsafeMember
from .files import ancestors


class Member:
    """One directory or file of a backup as a reader meets it; ``regions`` are a file's data regions."""

    __slots__ = ('name', 'is_dir', 'size', 'regions')

    def __init__(self, name, is_dir=False, size=0, regions=None):
        self.name = name
        self.is_dir = is_dir
        self.size = size
        self.regions = regions


def check_relative(name, what='member'):
    """A relative path inside a backup: no ``..``, no absolute path, no empty or ``.`` parts."""
    if not isinstance(name, str) or not name:
        raise UnsafeMember('%s with an empty path' % what)
    if '\x00' in name:
        raise UnsafeMember('%s %r holds a NUL byte' % (what, name))
    if name.startswith('/'):
        raise UnsafeMember('%s %r is an absolute path' % (what, name))
    parts = name.split('/')
    if '..' in parts:
        raise UnsafeMember("%s %r climbs out with '..'" % (what, name))
    if any(part in ('', '.') for part in parts):
        raise UnsafeMember('%s %r is not a normalised path' % (what, name))
    return name


def member_path(name, top):
    """The path inside the backup of archive member ``name`` (``''`` for the top directory).

    Refuses anything that would land outside ``top``: absolute paths, ``..``,
    empty or ``.`` parts, another top directory.
    """
    stripped = name[:-1] if name.endswith('/') and len(name) > 1 else name
    check_relative(stripped)
    head, _sep, rest = stripped.partition('/')
    if head != top:
        raise UnsafeMember('member %r lies outside the backup directory %r' % (name, top))
    return rest


def check_absolute(path, what):
    """An absolute, normalised path (a destination written by restore)."""
    if not isinstance(path, str) or not path.startswith('/') or '\x00' in path \
            or os.path.normpath(path) != path or path == '/':
        raise BackupDamaged('%s: %r is not a normalised absolute path' % (what, path))
    return path


def member_dirs(names):
    """The directories the member ``names`` lie in, parents first, in the order the names need them."""
    dirs = []
    for name in names:
        for directory in reversed(list(ancestors(name))):
            if directory not in dirs:
                dirs.append(directory)
    return dirs
