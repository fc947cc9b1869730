# -*- coding: utf-8 -*-
# Copyright: (c) 2026, kvm.snapshots contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""Writes a backup as one tar stream (POSIX pax, GNU sparse 1.0 for files with holes), through zstd or not."""

from __future__ import annotations

import errno
import os
import tarfile

from ansible_collections.kvm.snapshots.plugins.module_utils._libvirt import OperationFailed

from .digest import ContentDigest, digest_bytes
from .files import FLUSH_EVERY, Flusher, dense, read_regions, write_all
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
    """A tar stream into ``fd``, through ``zstd`` at ``level`` when ``compression`` is zstd."""

    def __init__(self, fd, top, mtime, compression, level, threads):
        self.fd = fd
        self.top = top
        self.mtime = int(mtime)
        self.zstd = None
        self.pipe = Pipeline()
        self.flusher = Flusher(fd)
        self.written = self.flushed_at = 0
        if compression == 'zstd':
            self.zstd = compressor(fd, level, threads)
            self.out = self.zstd.proc.stdin.fileno()
        else:
            self.out = fd

    def _write(self, data):
        self.pipe.submit(self._write_now, (bytes(data),))

    def _write_now(self, data):
        try:
            write_all(self.out, data)
        except BrokenPipeError:
            raise OperationFailed('zstd stopped: %s' % self._zstd_error()) from None
        self.written += len(data)
        if self.written - self.flushed_at >= FLUSH_EVERY:
            self.flushed_at = self.written
            self.flusher.wrote(os.fstat(self.fd).st_size)

    def _zstd_error(self):
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
            if self.zstd.proc.wait() != 0:
                raise OperationFailed('zstd failed: %s' % self._zstd_error())
            self.zstd.close()
        os.fsync(self.fd)

    def abort(self):
        if self.zstd is not None:
            self.zstd.kill()
        self.pipe.stop(OperationFailed('aborted'))
        if self.zstd is not None:
            self.zstd.close()

    def size(self):
        return os.fstat(self.fd).st_size
