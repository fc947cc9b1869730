# -*- coding: utf-8 -*-
# Copyright: (c) 2026, kvm.snapshots contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""Writes a backup as one tar stream (POSIX pax, GNU sparse 1.0 for files with holes), through zstd or not."""

from __future__ import annotations

import errno
import hashlib
import os
import tarfile
import threading

from ansible_collections.kvm.snapshots.plugins.module_utils._libvirt import OperationFailed

from .digest import ContentDigest, digest_bytes
from .files import CHUNK, FLUSH_EVERY, Flusher, dense, read_regions, write_all
from .pipeline import Pipeline
from .progress import advance
from .zstd import compressor

BLOCK = tarfile.BLOCKSIZE   # 512


def sparse_map_block(regions, size):
    """The data-area prefix GNU tar's sparse format 1.0 puts before a member's data."""
    entries = list(regions)
    if not entries or entries[-1][0] + entries[-1][1] < size:
        entries.append((size, 0))  # as GNU tar does: the map always reaches the real size
    text = '%d\n' % len(entries) + ''.join('%d\n%d\n' % entry for entry in entries)
    raw = text.encode('ascii')
    return raw + bytes(-len(raw) % BLOCK)


class ArchiveSink:
    """A tar stream into ``fd``, through ``zstd`` at ``level`` when ``compression`` is zstd.

    Every byte that goes into ``fd`` is hashed on its way (``checksums``): the SHA-256
    that ``sha256sum`` prints for the archive, without reading it back. Without zstd the
    writer thread hashes what it writes; with zstd a pump thread moves zstd's output
    into ``fd`` and hashes it.

    With ``reader``, ``fd`` is a pipe to another program (restic) instead of a file of
    ours: nothing is hashed, flushed or synced, and ``reader()`` is the error to raise
    when it stops reading.
    """

    def __init__(self, fd, top, mtime, compression, level, threads, reader=None):
        self.fd = fd
        self.top = top
        self.mtime = int(mtime)
        self.zstd = self.pump = self.pump_error = None
        self.reader = reader
        self.whole = None if reader else hashlib.sha256()
        self.pipe = Pipeline()
        self.flusher = None if reader else Flusher(fd)
        self.written = self.flushed_at = 0
        if compression == 'zstd':
            self.zstd = compressor(level, threads)
            self.out = self.zstd.proc.stdin.fileno()
            self.pump = threading.Thread(target=self._pump, name='kvm-snapshots-zstd-out', daemon=True)
            self.pump.start()
        else:
            self.out = fd

    def _write(self, data):
        self.pipe.submit(self._write_now, (bytes(data),))

    def _write_now(self, data):
        try:
            write_all(self.out, data)
        except BrokenPipeError:
            if self.reader:
                raise self.reader() from None
            raise OperationFailed('zstd stopped: %s' % self._zstd_error()) from None
        if self.reader:
            self.written += len(data)
        elif self.zstd is None:
            self._wrote(data)

    def _wrote(self, data):
        """``data`` went into the archive file: hash it, and start its write-back now and then."""
        self.whole.update(data)
        self.written += len(data)
        if self.written - self.flushed_at >= FLUSH_EVERY:
            self.flushed_at = self.written
            self.flusher.wrote(self.written)

    def _pump(self):
        """zstd's output into the archive file, hashed on the way; an error stops zstd (and so the writes)."""
        out = self.zstd.proc.stdout.fileno()
        buf = bytearray(CHUNK)
        view = memoryview(buf)
        try:
            while True:
                count = os.readv(out, [buf])
                if not count:
                    return
                write_all(self.fd, view[:count])
                self._wrote(view[:count])
        except BaseException as exc:  # handed to the main thread by close() or _zstd_error()
            self.pump_error = exc
            if self.zstd.proc.poll() is None:
                self.zstd.proc.kill()

    def _end_pump(self):
        if self.pump is not None:
            self.pump.join()
            self.pump = None

    def _zstd_error(self):
        if self.pump_error is not None:
            raise self.pump_error
        text = self.zstd.text()
        if 'No space left' in text:
            raise OSError(errno.ENOSPC, 'No space left on device')
        return text or 'exit code %s' % self.zstd.proc.returncode

    def _header(self, name, size, kind=tarfile.REGTYPE, mode=0o600, pax=None):
        info = tarfile.TarInfo(name)
        info.size = size
        info.type = kind
        info.mode = mode
        info.mtime = self.mtime
        info.uid, info.gid = os.getuid(), os.getgid()
        info.uname = info.gname = ''
        if pax:
            info.pax_headers = dict(pax)
        return info.tobuf(tarfile.PAX_FORMAT, 'utf-8', 'surrogateescape')

    def _name(self, rel):
        return '%s/%s' % (self.top, rel) if rel else self.top

    def add_dir(self, rel):
        self._write(self._header(self._name(rel), 0, tarfile.DIRTYPE, 0o700))

    def add_bytes(self, rel, data):
        self._write(self._header(self._name(rel), len(data)))
        self._write(data)
        self._write(bytes(-len(data) % BLOCK))
        return digest_bytes(data)

    def add_file(self, rel, fd, size, regions):
        """Stream the data regions of ``fd``; return the SHA-256 of that data."""
        name = self._name(rel)
        if regions == dense(size):
            self._write(self._header(name, size))
            stored = size
        else:
            head, _sep, base = name.rpartition('/')
            block = sparse_map_block(regions, size)
            stored = len(block) + sum(length for _off, length in regions)
            pax = {'GNU.sparse.major': '1', 'GNU.sparse.minor': '0',
                   'GNU.sparse.name': name, 'GNU.sparse.realsize': str(size)}
            self._write(self._header('%s/GNUSparseFile.0/%s' % (head, base), stored, pax=pax))
            self._write(block)
        digest = ContentDigest(size)
        for pos, buf, count in read_regions(fd, regions, self.pipe.acquire):
            digest.update(pos, buf, count)
            self.pipe.submit(self._write_now, (memoryview(buf)[:count],), buf)
            advance(count)
        self._write(bytes(-stored % BLOCK))
        return digest.hexdigest()

    def close(self):
        """End the archive; wait for zstd; make it durable."""
        self._write(bytes(2 * BLOCK))
        self.pipe.drain()
        self.pipe.close()
        if self.zstd is not None:
            self.zstd.proc.stdin.close()
            code = self.zstd.proc.wait()
            self._end_pump()
            if code != 0 or self.pump_error is not None:
                raise OperationFailed('zstd failed: %s' % self._zstd_error())
            self.zstd.proc.stdout.close()
            self.zstd.close()
        if self.flusher:
            os.fsync(self.fd)

    def checksums(self, base):
        """The archive's line of a ``sha256sum`` file, for the archive file named ``base``."""
        return [(self.whole.hexdigest(), base)]

    def abort(self):
        if self.zstd is not None:
            self.zstd.kill()
        self.pipe.stop(OperationFailed('aborted'))
        if self.zstd is not None:
            self._end_pump()
            self.zstd.proc.stdout.close()
            self.zstd.close()

    def size(self):
        return self.written if self.reader else os.fstat(self.fd).st_size
