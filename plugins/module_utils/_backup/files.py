# -*- coding: utf-8 -*-
# Copyright: (c) 2026, kvm.snapshots contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""File primitives: private files and directories, locks, data regions, the read loop, sparse and kernel copies."""

from __future__ import annotations

import errno
import fcntl
import itertools
import os
import secrets
import shutil

from ansible_collections.kvm.snapshots.plugins.module_utils._libvirt import InvalidInput, OperationFailed

CHUNK = 1 << 20             # read/write unit; the only buffer that scales with data
FLUSH_EVERY = 64 << 20      # start writing back to disk every this many bytes, so the final fsync is short
ZERO_RUN = 64 << 10         # a restored block of this many zero bytes becomes a hole
PIPE_SIZE = 8 << 20         # room for zstd to run ahead while we hash


# -- paths -------------------------------------------------------------------

def ancestors(path):
    """The directories above ``path``, nearest first: up to ``/`` for an absolute path, to the top part for a relative one."""
    while True:
        parent = os.path.dirname(path)
        if not parent or parent == path:
            return
        yield parent
        path = parent


def hidden_beside(path, tag):
    """A fresh hidden name beside ``path`` for work in progress or set aside: ``.<base><tag><hex>``."""
    directory, base = os.path.split(path)
    return os.path.join(directory, '.%s%s%s' % (base, tag, secrets.token_hex(4)))


def missing_dirs(path):
    """``path`` and those of its parents that are not directories yet, top first."""
    return list(itertools.takewhile(lambda p: not os.path.isdir(p), itertools.chain([path], ancestors(path))))[::-1]


def existing_parent(path):
    """``path`` if it is a directory, else its nearest parent that is one."""
    return next(p for p in itertools.chain([path], ancestors(path)) if os.path.isdir(p))


def free_bytes(path):
    info = os.statvfs(path)
    return info.f_bavail * info.f_frsize


# -- created 0600 / 0700 whatever the umask ------------------------------------

def create_file(path, mode=0o600):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    try:
        os.fchmod(fd, mode)
    except OSError:
        os.close(fd)
        raise
    return fd


def write_all(fd, data):
    """``os.write`` until all of ``data`` is written (a pipe takes it piece by piece)."""
    view = memoryview(data)
    while len(view):
        view = view[os.write(fd, view):]


def write_file(path, data):
    """A new private file holding ``data``, made durable."""
    fd = create_file(path)
    try:
        write_all(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def make_dir(path, mode=0o700):
    os.mkdir(path, mode)
    os.chmod(path, mode)


def make_dirs(path, mode=0o700):
    """Create ``path`` and missing parents, each with ``mode`` exactly; whether any was missing."""
    missing = missing_dirs(path)
    for directory in missing:
        if os.path.lexists(directory):
            raise InvalidInput('%s exists and is not a directory: choose a directory' % directory)
    for directory in missing:
        try:
            make_dir(directory, mode)
        except FileExistsError:
            if not os.path.isdir(directory):
                raise
            # another run (a backup of another domain into the same dest) made it meanwhile
    return bool(missing)


def fsync_dir(path):
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def unlink_quietly(path):
    try:
        os.unlink(path)
    except OSError:
        pass


# -- locks of files being written ------------------------------------------------

def try_lock(fd):
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError:
        return False


def remove_stale(directory, pattern):
    """Remove leftovers of killed runs: entries matching ``pattern`` whose lock nobody holds."""
    removed = []
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return removed
    for entry in entries:
        if not pattern.match(entry.name):
            continue
        try:
            fd = os.open(entry.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            if not try_lock(fd):
                continue  # another run is writing it
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path, ignore_errors=True)
            else:
                os.unlink(entry.path)
            removed.append(entry.path)
        except OSError:
            pass
        finally:
            os.close(fd)
    return removed


# -- data regions and reading ----------------------------------------------------

def dense(size):
    """The regions of a file without holes."""
    return [(0, size)] if size else []


def data_regions_from(fd, pos, end):
    """Yield the data regions of ``fd`` between ``pos`` and ``end``; all of it where holes are unknown."""
    while pos < end:
        try:
            start = os.lseek(fd, pos, os.SEEK_DATA)
        except OSError as exc:
            if exc.errno == errno.ENXIO:
                return
            if exc.errno in (errno.EINVAL, errno.EOPNOTSUPP):
                yield pos, end - pos
                return
            raise
        if start >= end:
            return
        stop = min(os.lseek(fd, start, os.SEEK_HOLE), end)
        yield start, stop - start
        pos = stop


def data_regions(fd, size):
    """Data regions of an open file as ``[(offset, length)]`` via ``SEEK_DATA``/``SEEK_HOLE``."""
    return list(data_regions_from(fd, 0, size))


def shrank(pos):
    return OperationFailed('file shrank while being read at offset %d' % pos)


def read_regions(fd, regions, acquire, short=shrank):
    """Yield ``(offset, buf, count)``: the data of ``regions`` read with ``pread`` into ``buf[:count]``, in order.

    ``buf`` is what ``acquire()`` gives for each read (the same buffer again, or one
    from a pool); ``short(offset)`` is the error for a file that ends too early.
    """
    for offset, length in regions:
        pos, end = offset, offset + length
        while pos < end:
            buf = acquire()
            count = os.preadv(fd, [memoryview(buf)[:min(len(buf), end - pos)]], pos)
            if count <= 0:
                raise short(pos)
            yield pos, buf, count
            pos += count


def read_chunks(fd, regions, buf):
    """Yield ``(offset, n)`` for each piece of ``regions`` read into ``buf[:n]``, in order."""
    for pos, _buf, count in read_regions(fd, regions, lambda: buf):
        yield pos, count


# -- writing ---------------------------------------------------------------------

class Flusher:
    """Starts the kernel's write-back of a growing file every FLUSH_EVERY bytes.

    Without it every dirty page waits for the final fsync; with it the disk writes
    while we still read and compress, and written pages leave the page cache
    instead of pushing out the host's working set.
    """

    def __init__(self, fd):
        self.fd = fd
        self.done = 0

    def wrote(self, end):
        if end - self.done >= FLUSH_EVERY:
            try:
                os.posix_fadvise(self.fd, self.done, end - self.done, os.POSIX_FADV_DONTNEED)
            except OSError:
                pass  # only an optimisation
            self.done = end


class SparseWriter:
    """Writes data at offsets into an open file, leaving runs of zeros as holes."""

    def __init__(self, fd):
        self.fd = fd
        self.zeros = bytes(ZERO_RUN)
        self.flusher = Flusher(fd)

    def write(self, offset, buf, count):
        view = memoryview(buf)
        start = None  # start (index into buf) of a pending non-zero run
        pos = 0
        while pos < count:
            step = min(ZERO_RUN - (offset + pos) % ZERO_RUN, count - pos)
            is_zero = buf.startswith(self.zeros[:step], pos)
            if is_zero:
                if start is not None:
                    self._pwrite(view[start:pos], offset + start)
                    start = None
            elif start is None:
                start = pos
            pos += step
        if start is not None:
            self._pwrite(view[start:count], offset + start)

    def _pwrite(self, view, offset):
        while len(view):
            done = os.pwrite(self.fd, view, offset)
            view = view[done:]
            offset += done
        self.flusher.wrote(offset)


def copy_regions(src, dst, regions):
    """Copy the data regions of ``src`` into ``dst`` at the same offsets, in the kernel where it can."""
    flusher = Flusher(dst)
    for index, (offset, length) in enumerate(regions):
        pos, end = offset, offset + length
        while pos < end:
            try:
                done = os.copy_file_range(src, dst, min(FLUSH_EVERY, end - pos), pos, pos)
            except OSError as exc:
                if exc.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
                    raise
                # the kernel cannot copy between these two files: read and write the rest
                writer, buf = SparseWriter(dst), bytearray(CHUNK)
                for at, count in read_chunks(src, [(pos, end - pos)] + regions[index + 1:], buf):
                    writer.write(at, buf, count)
                return
            if done <= 0:
                raise shrank(pos)
            pos += done
            flusher.wrote(pos)


def set_pipe_size(fd):
    """A large pipe lets zstd and this process work at the same time instead of by turns."""
    for size in (PIPE_SIZE, CHUNK):
        try:
            fcntl.fcntl(fd, getattr(fcntl, 'F_SETPIPE_SZ', 1031), size)
            return
        except OSError:
            continue  # above /proc/sys/fs/pipe-max-size without CAP_SYS_RESOURCE: try smaller
