# -*- coding: utf-8 -*-
# Copyright: (c) 2026, kvm.snapshots contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""Writes one backup: manifest, XML and files into an archive or directory under a partial name, then into place;
or into a repository ``Upload``."""

from __future__ import annotations

import os
import shutil
import stat

from ansible_collections.kvm.snapshots.plugins.module_utils._libvirt import KvmError, OperationFailed, note_undone

from .archive_writer import ArchiveSink
from .directory import DirectorySink
from .disks import device_size
from .errors import os_error_text
from .files import create_file, data_regions, dense, fsync_dir, hidden_beside, make_dir, try_lock, write_file
from .manifest import CHECKSUMS, MANIFEST, checksums_bytes
from .members import member_dirs
from .names import PARTIAL, SUMS_SUFFIX
from .pause import pause_point
from .progress import current as progress


def open_source_file(entry):
    """The backed-up file of ``entry``, open for reading; refused if its size changed since discovery."""
    try:
        src = os.open(entry.path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise OperationFailed('cannot read %s: %s' % (entry.path, exc.strerror)) from None
    info = os.fstat(src)
    if (device_size(src) if stat.S_ISBLK(info.st_mode) else info.st_size) != entry.size:
        os.close(src)
        raise OperationFailed('%s changed size during the backup: is something else writing to it?' % entry.path)
    return src


def sums_line(digest, name):
    """One line as ``sha256sum`` writes it (a name with a backslash or newline escaped, as it does)."""
    if '\\' in name or '\n' in name or '\r' in name:
        return '\\%s  %s\n' % (digest, name.replace('\\', '\\\\').replace('\n', '\\n').replace('\r', '\\r'))
    return '%s  %s\n' % (digest, name)


def file_layout(entry):
    """The data regions of ``entry``'s file now (read once the domain is held).

    A block device has no holes to ask for: all of it is data here, and its runs of zeros
    cost no space in the backup all the same (zstd and the directory format's sparse copy
    take them as they are read).
    """
    src = open_source_file(entry)
    if entry.source == 'block':
        os.close(src)
        return dense(entry.size)
    try:
        return data_regions(src, entry.size)
    finally:
        os.close(src)


class Partial:
    """The backup being written, under a name no reader takes for a backup, locked against ``remove_stale``."""

    undone = 'the partial backup was removed'

    def __init__(self, dest, name, request):
        self.name = name
        self.request = request
        self.place = dest
        self.final = os.path.join(dest, name + request.suffix)
        self.path = hidden_beside(self.final, PARTIAL)
        self.sums = self.final + SUMS_SUFFIX
        self.sums_partial = hidden_beside(self.sums, PARTIAL)
        self.fd = self.lock = self.sink = None

    def open(self, mtime):
        """Create it and its sink."""
        request = self.request
        if request.writer == 'directory':
            make_dir(self.path)
            self.lock = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            try_lock(self.lock)
            self.sink = DirectorySink(self.path)
        else:
            self.fd = create_file(self.path)
            try_lock(self.fd)
            self.sink = ArchiveSink(self.fd, self.name, mtime, request.compression, request.level, request.threads)
        return self.sink

    def commit(self):
        """End the sink and rename the backup into place, then its ``sha256sum`` file beside it; its size.

        The backup's rename is the moment it is complete; its checksum file follows at once.
        """
        self.sink.close()
        size = self.sink.size()
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
        lines = self.sink.checksums(os.path.basename(self.final))
        write_file(self.sums_partial, ''.join(sums_line(digest, name) for digest, name in lines).encode())
        if os.path.lexists(self.final):  # names are chosen under the domain's lock: only a foreign file gets here
            raise OperationFailed('%s appeared while the backup was written: move it away and run again' % self.final)
        os.rename(self.path, self.final)
        os.rename(self.sums_partial, self.sums)
        fsync_dir(os.path.dirname(self.final))
        return size

    def remove(self, exc):
        """Remove whatever was written, and say so in ``exc``."""
        if self.sink is not None:
            self.sink.abort()
        if self.fd is not None:
            os.close(self.fd)
        if os.path.isdir(self.path) and not os.path.islink(self.path):
            shutil.rmtree(self.path, ignore_errors=True)
            note_undone(exc, 'the partial backup %s was removed' % self.path)
        elif os.path.lexists(self.path):
            os.unlink(self.path)
            note_undone(exc, 'the partial backup %s was removed' % self.path)
        if os.path.lexists(self.sums_partial):
            os.unlink(self.sums_partial)

    def close(self):
        if self.lock is not None:
            os.close(self.lock)

    def result(self):
        return dict(path=self.final, checksum_file=self.sums)


def write_backup(contents, target, when, state, request):
    """Write the backup of ``contents`` through ``target`` (a ``Partial`` in dest, or a repository ``Upload``):
    the ``backup`` result, less timings."""
    name = target.name
    maps = [file_layout(entry) for entry in contents.files]
    manifest = contents.manifest(name, when, state, request.options(), maps)
    data_size = 0
    try:
        sink = target.open(when.timestamp())
        progress().phase('copying', total=sum(length for regions in maps for _off, length in regions),
                         file=target.path)
        sink.add_dir('')
        digests = {MANIFEST: sink.add_bytes(MANIFEST, manifest.to_bytes())}
        digests['domain.xml'] = sink.add_bytes('domain.xml', contents.xml.encode())
        for directory in member_dirs(entry.name for entry in manifest.files):
            sink.add_dir(directory)
        snapshot_entries = [entry for entry in manifest.files if entry.role == 'snapshot']
        for entry, (_snap, data) in zip(snapshot_entries, contents.snapshot_files()):
            digests[entry.name] = sink.add_bytes(entry.name, data)
        pause_point('backup-writing')
        for entry, regions in zip(manifest.files[1 + len(contents.snapshots):], maps):
            src = open_source_file(entry)
            progress().set(disk=entry.target or entry.name)
            try:
                os.posix_fadvise(src, 0, 0, os.POSIX_FADV_SEQUENTIAL)
                digests[entry.name] = sink.add_file(entry.name, src, entry.size, regions)
                data_size += sum(length for _off, length in regions)
            finally:
                os.close(src)
        progress().phase('finishing the backup (restic storing the last data)' if target.path is None
                         else 'finishing the backup (the last data compressed and synced to disk)'
                         if request.compression == 'zstd' else 'finishing the backup (synced to disk)',
                         file=target.path)
        sink.add_bytes(CHECKSUMS, checksums_bytes(digests))
        size = target.commit()
    except BaseException as exc:
        target.remove(exc)
        if isinstance(exc, OSError) and not isinstance(exc, KvmError):
            raise OperationFailed(os_error_text(exc, 'writing the backup of %s' % contents.name, dest=target.place,
                                                way_out='choose another dest') + ' (%s)' % target.undone) from None
        raise
    finally:
        target.close()
    files = [dict(name=e.name, role=e.role, path=e.path, size=e.size, sparse=bool(e.sparse), sha256=digests[e.name])
             for e in manifest.files]
    return dict(target.result(), name=name, format=request.format, compression=request.compression,
                compression_level=request.level, domain=contents.name, uuid=contents.uuid, created=manifest.created,
                size=size, data_size=data_size, files=files, snapshots=contents.order,
                current_snapshot=contents.current, manifest_sha256=digests[MANIFEST], disks=contents.disks)
