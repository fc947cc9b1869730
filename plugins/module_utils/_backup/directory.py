# -*- coding: utf-8 -*-
# Copyright: (c) 2026, kvm.snapshots contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""Writes and reads a backup kept as plain files in a directory (format directory)."""

from __future__ import annotations

import fcntl
import hashlib
import os
import stat
from concurrent.futures import ThreadPoolExecutor

from .digest import PlainDigest, digest_bytes, file_digest
from .errors import BackupDamaged, UnsafeMember
from .files import (CHUNK, copy_regions, create_file, data_regions_from, dense, fsync_dir, make_dir, read_chunks,
                    read_regions, write_file)
from .manifest import CHECKSUMS, MANIFEST
from .members import Member, member_dirs

FICLONE = 0x40049409        # ioctl: reflink a whole file (XFS, Btrfs, ...)


def tree_size(root):
    """Bytes on disk of the files under ``root`` (allocated blocks: a hole costs nothing)."""
    total = 0
    for base, _dirs, files in os.walk(root):
        for name in files:
            total += os.lstat(os.path.join(base, name)).st_blocks * 512
    return total


class DirectorySink:
    """The backup as plain files: reflink copies where the file system can, sparse copies otherwise.

    Each file's SHA-256 as ``sha256sum`` prints it is computed from the reads that make
    its digest (``checksums``); a hole costs the hashing of its zeros, as for ``sha256sum``.
    """

    def __init__(self, root):
        self.root = root
        self.dirs = [root]
        self.plain = []     # (sha256sum's digest, member name), in the order written

    def _path(self, rel):
        return os.path.join(self.root, rel) if rel else self.root

    def add_dir(self, rel):
        if rel:
            make_dir(self._path(rel))
            self.dirs.append(self._path(rel))

    def add_bytes(self, rel, data):
        write_file(self._path(rel), data)
        self.plain.append((hashlib.sha256(data).hexdigest(), rel))
        return digest_bytes(data)

    def add_file(self, rel, src, size, regions):
        plain = PlainDigest()
        fd = create_file(self._path(rel))
        try:
            try:
                fcntl.ioctl(fd, FICLONE, src)
                cloned = True
            except OSError:
                cloned = False  # no reflinks here (or across file systems)
            if cloned:
                digest = file_digest(src, size, regions, plain)
            else:
                # the kernel copies on one thread while the others read and hash
                with ThreadPoolExecutor(max_workers=1, thread_name_prefix='kvm-snapshots-copy') as copier:
                    copied = copier.submit(copy_regions, src, fd, regions)
                    digest = file_digest(src, size, regions, plain)
                copied.result()
                os.ftruncate(fd, size)
            os.fsync(fd)
        finally:
            os.close(fd)
        self.plain.append((plain.hexdigest(size), rel))
        return digest

    def checksums(self, base):
        """The lines of a ``sha256sum`` file for every file of the backup, the directory being ``base``."""
        return [(digest, '%s/%s' % (base, rel)) for digest, rel in self.plain]

    def close(self):
        for directory in self.dirs:
            fsync_dir(directory)

    def abort(self):
        pass

    def size(self):
        return tree_size(self.root)


class DirectorySource:
    """Members of a backup kept as a directory, checked file by file.

    Its manifest is read first (as the first member); the reader hands it back in
    ``manifest`` so that the other members are listed from it.
    """

    kind = 'directory'

    def __init__(self, path):
        self.path = path
        self.buf = bytearray(CHUNK)
        self.manifest = None

    def _file(self, rel):
        return os.path.join(self.path, rel)

    def _small(self, rel, missing):
        path = self._file(rel)
        if not os.path.isfile(path) or os.path.islink(path):
            raise BackupDamaged(missing)
        size = os.lstat(path).st_size
        return Member(rel, size=size, regions=dense(size))

    def members(self):
        yield Member('', is_dir=True)
        yield self._small(MANIFEST, 'it has no %s: not a backup made by vm_backup' % MANIFEST)
        if self.manifest is None:
            return
        expected = {entry.name for entry in self.manifest.files}
        dirs = member_dirs(sorted(expected))
        self._check_tree(expected, set(dirs))
        for directory in sorted(dirs):
            yield Member(directory, is_dir=True)
        for entry in self.manifest.files:
            yield Member(entry.name, size=entry.size, regions=entry.regions)
        yield self._small(CHECKSUMS, 'it has no %s: incomplete' % CHECKSUMS)

    def _check_tree(self, expected, dirs):
        """Nothing in the directory but what the manifest lists: no links, devices or strays."""
        for base, subdirs, files in os.walk(self.path):
            rel_base = os.path.relpath(base, self.path)
            rel_base = '' if rel_base == '.' else rel_base
            for name in subdirs + files:
                rel = os.path.join(rel_base, name) if rel_base else name
                info = os.lstat(os.path.join(base, name))
                if stat.S_ISLNK(info.st_mode):
                    raise UnsafeMember('%s is a symbolic link: vm_backup never writes one' % rel)
                if stat.S_ISDIR(info.st_mode):
                    if rel not in dirs:
                        raise BackupDamaged('unexpected directory %s: not made by vm_backup, or changed since' % rel)
                elif not stat.S_ISREG(info.st_mode):
                    raise UnsafeMember('%s is a device, FIFO or socket: vm_backup never writes one' % rel)
                elif rel not in expected and rel not in (MANIFEST, CHECKSUMS):
                    raise BackupDamaged('unexpected file %s: not made by vm_backup, or changed since' % rel)
                elif info.st_nlink > 1:
                    raise UnsafeMember('%s is a hard link: vm_backup never writes one' % rel)

    def read(self, member, acquire):
        try:
            fd = os.open(self._file(member.name), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            raise BackupDamaged('%s is missing' % member.name) from None
        except OSError as exc:
            raise BackupDamaged('cannot open %s: %s' % (member.name, exc.strerror)) from None
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode) or info.st_nlink > 1:
                raise UnsafeMember('%s is not a plain file' % member.name)
            if info.st_size != member.size:
                raise BackupDamaged('%s has %d bytes, the manifest says %d: truncated or changed'
                                    % (member.name, info.st_size, member.size))
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)
            yield from read_regions(fd, member.regions, acquire,
                                    short=lambda _pos: BackupDamaged('%s changed while being read' % member.name))
            self._check_holes(fd, member)
        finally:
            os.close(fd)

    def _check_holes(self, fd, member):
        """Outside the recorded data regions the file must read as zeros."""
        gaps = []
        pos = 0
        for offset, length in member.regions + [(member.size, 0)]:
            if offset > pos:
                gaps.append((pos, offset - pos))
            pos = offset + length
        for offset, length in gaps:
            for data in data_regions_from(fd, offset, offset + length):
                for _pos, count in read_chunks(fd, [data], self.buf):
                    if self.buf.count(0, 0, count) != count:
                        raise BackupDamaged('%s holds data where the manifest records a hole' % member.name)

    def close(self):
        pass
