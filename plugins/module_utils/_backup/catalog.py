# -*- coding: utf-8 -*-
# Copyright: (c) 2026, kvm.snapshots contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""The backups in a ``dest``: which are one domain's (by the UUID in their manifest), and removing one."""

from __future__ import annotations

import os
import shutil

from ansible_collections.kvm.snapshots.plugins.module_utils._libvirt import KvmError

from .files import hidden_beside
from .manifest import MANIFEST, SMALL_LIMIT, Manifest
from .names import PARTIAL, SUMS_SUFFIX, candidate
from .reading import open_source, read_small


def read_manifest(path):
    """The Manifest of the backup at ``path``, read from the head of its stream only; None if it has none.

    Cheap whatever the backup's size: an archive is decompressed only as far as
    its first member (zstd is stopped there), a directory's manifest.json is read.
    """
    try:
        source = open_source(path)
    except (KvmError, OSError):
        return None
    try:
        for member in source.members():
            if member.is_dir:
                continue
            if member.name != MANIFEST or member.size > SMALL_LIMIT:
                return None
            return Manifest.from_bytes(read_small(source, member))
    except (KvmError, ValueError, OSError):
        return None
    finally:
        source.close()
    return None


def _complete_kind(entry, match):
    """A name with a tar suffix must be a file, one without a directory; anything else is not ours."""
    if match.group('suffix'):
        return entry.is_file(follow_symlinks=False)
    return entry.is_dir(follow_symlinks=False)


def domain_backups(dest, uuid):
    """Complete backups in ``dest`` of the domain with ``uuid``, oldest first: ``[(entry_name, path)]``.

    The domain is the UUID its manifest records; a name only makes a backup a
    candidate. A backup whose manifest cannot be read belongs to no domain here,
    so retention never removes it.
    """
    found = []
    try:
        entries = list(os.scandir(dest))
    except FileNotFoundError:
        return []
    for entry in entries:
        found_name = candidate(entry.name, uuid)
        if found_name is None or not _complete_kind(entry, found_name[1]):
            continue
        manifest = read_manifest(entry.path)
        if manifest is None or str(manifest.uuid).lower() != uuid.lower():
            continue
        found.append((found_name[0], entry.name, entry.path))
    return [(name, path) for _key, name, path in sorted(found)]


def remove_backup(path):
    """Remove one backup, then its ``sha256sum`` file. A directory first takes a partial's name: cut short,
    it no longer looks complete, and the next backup of the domain removes the rest (``remove_stale``)."""
    if os.path.isdir(path) and not os.path.islink(path):
        doomed = hidden_beside(path, PARTIAL)
        os.rename(path, doomed)
        shutil.rmtree(doomed)
    else:
        os.unlink(path)
    try:
        os.unlink(path + SUMS_SUFFIX)
    except FileNotFoundError:
        pass  # a backup made before there were checksum files
