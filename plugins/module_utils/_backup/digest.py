# -*- coding: utf-8 -*-
# Copyright: (c) 2026, kvm.snapshots contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""The content digest of a backed-up file: SHA-256 over its 64 KiB pieces' SHA-256s, hashed on all cores."""

from __future__ import annotations

import collections
import hashlib
import os
import queue
from concurrent.futures import ThreadPoolExecutor, wait

from ansible_collections.kvm.snapshots.plugins.module_utils._libvirt import OperationFailed

from .files import read_regions
from .progress import advance

# A file's digest: SHA-256 over the SHA-256 of each of its PIECE-sized pieces, in order.
PIECE = 64 << 10
PIECE_ZEROS = bytes(PIECE)
ZERO_PIECE_DIGEST = hashlib.sha256(PIECE_ZEROS).digest()
DIGEST = dict(algorithm='sha256', piece_size=PIECE,
              form='SHA-256 of the concatenated SHA-256 digests of the consecutive pieces of the file')
DIGEST_UNIT = 64 * PIECE    # what one job of file_digest reads and hashes: 4 MiB
_HASHERS = []


class ContentDigest:
    """SHA-256 of the list of SHA-256 digests of a file's 64 KiB pieces.

    The digest depends on the file's content only, not on where its holes are:
    a hole and written zeros give the same piece digest, and a piece that is all
    hole costs one table lookup, so a 20 GiB sparse disk with 200 MiB of data
    hashes in the time of its data. Recompute it with::

        top = hashlib.sha256()
        for piece in iter(lambda: handle.read(65536), b''):
            top.update(hashlib.sha256(piece).digest())

    Data is fed with ``update(offset, buf, count)`` in increasing offsets; the
    gaps between are zeros.
    """

    def __init__(self, size):
        self.size = size
        self.top = hashlib.sha256()
        self.pos = 0
        self.part = None   # the piece being filled, when pos is inside one

    def _piece_end(self):
        return min(self.pos - self.pos % PIECE + PIECE, self.size)

    def _close(self):
        self.top.update(self.part.digest())
        self.part = None

    def _zeros_to(self, offset):
        if offset < self.pos or offset > self.size:
            raise OperationFailed('data out of order at offset %d' % offset)
        while self.pos < offset:
            end = self._piece_end()
            if self.part is None and self.pos % PIECE == 0 and offset >= end:
                if end - self.pos == PIECE:
                    count = min((offset - self.pos) // PIECE, 4096)
                    self.top.update(ZERO_PIECE_DIGEST * count)
                    self.pos += count * PIECE
                else:  # the short last piece
                    self.top.update(hashlib.sha256(PIECE_ZEROS[:end - self.pos]).digest())
                    self.pos = end
                continue
            stop = min(offset, end)
            if self.part is None:
                self.part = hashlib.sha256()
            self.part.update(PIECE_ZEROS[:stop - self.pos])
            self.pos = stop
            if self.pos == end:
                self._close()

    def update(self, offset, buf, count):
        """Feed ``buf[:count]`` (a bytearray or bytes) as the data at ``offset``."""
        self._zeros_to(offset)
        if self.pos + count > self.size:
            raise OperationFailed('more data than the file size at offset %d' % offset)
        view = memoryview(buf)
        index = 0
        while index < count:
            end = self._piece_end()
            take = min(end - self.pos, count - index)
            if self.part is None and take == PIECE:
                # A run of whole pieces: hash_pieces spreads a long one over several cores.
                whole = (count - index) // PIECE
                self.top.update(hash_pieces(buf, view, index, whole))
                index += whole * PIECE
                self.pos += whole * PIECE
                continue
            if self.part is None:
                self.part = hashlib.sha256()
            self.part.update(view[index:index + take])
            index += take
            self.pos += take
            if self.pos == end:
                self._close()

    def add_piece_digests(self, first, digests):
        """Feed the digests of whole pieces from piece number ``first`` on (a short last piece included)."""
        self._zeros_to(first * PIECE)
        if self.part is not None:
            raise OperationFailed('piece digests out of order at piece %d' % first)
        self.top.update(digests)
        self.pos = min(self.pos + len(digests) // 32 * PIECE, self.size)

    def hexdigest(self):
        self._zeros_to(self.size)
        return self.top.hexdigest()


def hash_pool():
    """The threads that hash pieces (hashlib releases the GIL): one per core, at most 8."""
    if not _HASHERS:
        workers = min(os.cpu_count() or 1, 8)
        _HASHERS.append((ThreadPoolExecutor(max_workers=workers, thread_name_prefix='kvm-snapshots-hash'), workers))
    return _HASHERS[0]


def _piece_digests(buf, view, start, count):
    out = []
    for index in range(start, start + count * PIECE, PIECE):
        if buf.startswith(PIECE_ZEROS, index):
            out.append(ZERO_PIECE_DIGEST)
        else:
            out.append(hashlib.sha256(view[index:index + PIECE]).digest())
    return b''.join(out)


def hash_pieces(buf, view, start, count):
    """The digests of ``count`` whole pieces from ``start``, computed on up to all cores."""
    pool, workers = hash_pool()
    if workers < 2 or count < 4:
        return _piece_digests(buf, view, start, count)
    parts = min(workers, count)
    share = -(-count // parts)
    futures = []
    for first in range(share, count, share):
        futures.append(pool.submit(_piece_digests, buf, view, start + first * PIECE, min(share, count - first)))
    head = _piece_digests(buf, view, start, min(share, count))
    return head + b''.join(future.result() for future in futures)


def data_pieces(regions):
    """The pieces that hold data, as merged ``[first, end)`` ranges of piece numbers."""
    runs = []
    for offset, length in regions:
        if length <= 0:
            continue
        first, end = offset // PIECE, -(-(offset + length) // PIECE)
        if runs and first <= runs[-1][1]:
            runs[-1][1] = max(runs[-1][1], end)
        else:
            runs.append([first, end])
    return runs


def _digest_unit(fd, size, first, count, buf):
    """Read pieces ``first`` .. ``first + count`` of ``fd`` into ``buf`` and return their digests."""
    start = first * PIECE
    length = min(count * PIECE, size - start)
    view = memoryview(buf)
    got = 0
    # each read fills the buffer on from where the one before stopped
    for _pos, _view, done in read_regions(fd, [(start, length)], lambda: view[got:length]):
        got += done
    whole = length // PIECE
    out = _piece_digests(buf, view, 0, whole)
    if length % PIECE:
        out += hashlib.sha256(view[whole * PIECE:length]).digest()
    return out


class PlainDigest:
    """What ``sha256sum`` prints for a file, fed with its data in order; holes are hashed as the zeros they read as."""

    def __init__(self):
        self.sha = hashlib.sha256()
        self.pos = 0

    def update(self, offset, data):
        self.zeros_to(offset)
        self.sha.update(data)
        self.pos += len(data)

    def zeros_to(self, offset):
        while self.pos < offset:
            count = min(offset - self.pos, DIGEST_UNIT)
            self.sha.update(ZEROS_UNIT[:count])
            self.pos += count

    def hexdigest(self, size):
        self.zeros_to(size)
        return self.sha.hexdigest()


ZEROS_UNIT = memoryview(bytes(DIGEST_UNIT))


def file_digest(fd, size, regions, plain=None):
    """The ContentDigest of the open file ``fd``, its data pieces read and hashed on all cores.

    Every job reads its own 4 MiB with ``pread``, so reading overlaps hashing and
    no core waits for another; pieces outside ``regions`` are not read at all.
    At most two jobs per core are in flight: memory stays bounded. A ``PlainDigest``
    given as ``plain`` is fed the same reads in order (the caller ends it with the size).
    """
    pool, workers = hash_pool()
    buffers = queue.Queue()
    for _count in range(2 * workers):
        buffers.put(bytearray(DIGEST_UNIT))
    digest = ContentDigest(size)
    pending = collections.deque()

    def settle_one():
        first, future, buf = pending.popleft()
        try:
            digests = future.result()
            if plain is not None:
                start = first * PIECE
                plain.update(start, memoryview(buf)[:min(len(digests) // 32 * PIECE, size - start)])
        finally:
            buffers.put(buf)
        digest.add_piece_digests(first, digests)
        advance(len(digests) // 32 * PIECE)

    try:
        for first, end in data_pieces(regions):
            for unit in range(first, end, DIGEST_UNIT // PIECE):
                if buffers.empty():
                    settle_one()
                buf = buffers.get()
                count = min(DIGEST_UNIT // PIECE, end - unit)
                pending.append((unit, pool.submit(_digest_unit, fd, size, unit, count, buf), buf))
        while pending:
            settle_one()
    finally:
        for _first, future, _buf in pending:
            future.cancel()
        wait([future for _first, future, _buf in pending])
    return digest.hexdigest()


def digest_bytes(data):
    digest = ContentDigest(len(data))
    digest.update(0, data, len(data))
    return digest.hexdigest()
